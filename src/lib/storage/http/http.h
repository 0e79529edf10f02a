/*
 * http.h - the HTTP client shared by object-store drivers (S3 now, Azure later): a pool of
 * reusable libcurl handles, request building, bounded response capture, timeouts, TLS, and
 * retry with exponential backoff and full jitter. It knows nothing of any one store's API:
 * signing is a callback run before every attempt, and store-specific retryable error codes
 * are configuration.
 *
 * Environment: COFFER_RETRIES (attempts, default 6), COFFER_INSECURE_TLS=1 (do not verify
 * TLS certificates), COFFER_CA_BUNDLE (a CA file to trust), COFFER_HTTP_LOW_SPEED_TIME
 * (seconds below 1 KiB/s before a transfer is abandoned and retried, default 30),
 * COFFER_HTTP_DEBUG=1 (one line per attempt on stderr: method, url, status, time; never
 * headers or credentials).
 */
#ifndef CF_STORAGE_HTTP_H
#define CF_STORAGE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/retry/backoff.h"
#include "util/util.h"

/* Ceiling for error bodies and other small responses. */
#define CF_HTTP_SMALL_MAX ((size_t)1 << 20)

/* ---- header lists: "Name: value" lines ---- */
typedef struct {
    char **v;
    size_t n, cap;
} cf_http_headers;

void cf_http_headers_init(cf_http_headers *h);
void cf_http_headers_free(cf_http_headers *h);
/* Append "name: value". Returns 0 or CF_ENOMEM / CF_EINVAL (CR or LF in name or value). */
int cf_http_headers_add(cf_http_headers *h, const char *name, const char *value);
/* The value of the first header called name (case-insensitive), borrowed; NULL if absent. */
const char *cf_http_headers_get(const cf_http_headers *h, const char *name);

/* ---- the client ---- */
#define CF_HTTP_SECRETS_MAX 4

typedef struct cf_http cf_http;

typedef struct {
    /* Codes found in an error body's <Error><Code> that are retried whatever the status
     * ("SlowDown", "RequestTimeout" for S3); NULL-terminated, may be NULL. Borrowed for the
     * client's lifetime. */
    const char *const *retry_codes;
    /* Credentials (a secret key, a session token, a SAS token) that must never reach a
     * message: any occurrence in a server's error Code or Message is replaced by
     * "<redacted>", as is the value of any "sig=" parameter. Copied (and wiped when the client
     * is freed); NULL entries and strings under 4 bytes are ignored. */
    const char *secrets[CF_HTTP_SECRETS_MAX];
} cf_http_config;

/* A client: a pool of libcurl handles (one per concurrent request, reused so connections
 * are kept alive), safe to use from several threads. Free with cf_http_free. */
int cf_http_new(cf_http **out, const cf_http_config *cfg);
void cf_http_free(cf_http *h);
/* The retry policy in force (from COFFER_RETRIES at creation). */
const cf_retry_policy *cf_http_policy(const cf_http *h);

/* Called before every attempt to add the headers that change per attempt (a date and a
 * signature). Returns 0 or a negative CF_E* code, which ends the request. */
typedef int (*cf_http_sign_cb)(cf_http_headers *out, void *payload);

typedef struct {
    const char *method;             /* "GET", "HEAD", "PUT", "POST", "DELETE" */
    const char *url;                /* complete and already encoded */
    /* What COFFER_HTTP_DEBUG shows instead of url when url carries a credential (an Azure
     * SAS token in the query); NULL: url. */
    const char *log_url;
    const cf_http_headers *headers; /* sent with every attempt; may be NULL */
    cf_http_sign_cb sign;           /* may be NULL */
    void *sign_payload;
    const void *body; /* request body (PUT, POST); sent again on each attempt */
    size_t body_len;
    bool has_body;   /* send a body (and Content-Length) even when body_len is 0 */
    size_t max_body; /* ceiling for a successful response body; 0: CF_HTTP_SMALL_MAX */
    /* For messages: "unable to OP 'OBJECT' in 'LOCATION': ..." (OBJECT may be NULL). */
    const char *op;
    const char *object;
    const char *location;
} cf_http_request;

typedef struct {
    long status;
    cf_buf body;             /* the final response's body */
    cf_http_headers headers; /* the final response's headers */
    unsigned attempts;       /* how many attempts were made (>1: an earlier one may have
                              * reached the server) */
    bool too_large;          /* cf_http_perform failed: a success body exceeded max_body */
    char *err_code;          /* <Error><Code> of a non-2xx body, or NULL */
    char *err_message;       /* <Error><Message>, sanitised, or NULL */
} cf_http_response;

void cf_http_response_init(cf_http_response *r);
void cf_http_response_free(cf_http_response *r);
const char *cf_http_response_header(const cf_http_response *r, const char *name);

/*
 * Perform a request, retrying connection failures, resets, timeouts, partial responses,
 * HTTP 408/429/500/502/503/504 and the configured error codes, with backoff between
 * attempts. Returns 0 when a final response arrived, whatever its status (look at
 * resp->status; cf_http_fail turns a failure status into an error); CF_ERETRYABLE when the
 * attempts are exhausted (the message gives the last cause); other codes for faults that
 * retrying cannot fix (TLS certificate refused, malformed URL, response over max_body,
 * out of memory). resp is reset first; free it with cf_http_response_free in every case.
 */
int cf_http_perform(cf_http *h, const cf_http_request *req, cf_http_response *resp);

/*
 * Record the error for a final response whose status is not a success, and return its code:
 * 404 -> CF_ENOTFOUND, 401 and 403 -> CF_ESTORAGE_AUTH (the storage refused the credentials),
 * anything else -> CF_EIO (permanent). The message names the object and location (which names
 * the server) and carries the status and the server's error Code and Message.
 */
int cf_http_fail(const cf_http_request *req, const cf_http_response *resp);

/* Scrub a server-provided text (malloc'd; replaced, or freed and set to NULL when memory runs
 * out) before it can reach a message: every occurrence of the client's secrets, and the value
 * of every "sig=" parameter (a SAS signature echoed with a URL), become "<redacted>". Error
 * bodies are scrubbed this way by cf_http_perform. */
void cf_http_redact(const cf_http *h, char **text);

/* Short text for a status: "403 SignatureDoesNotMatch: <message>" or "404 not found". */
void cf_http_describe(char *out, size_t n, const cf_http_response *resp);

/* ---- ranged reads (the drivers' get) ---- */

/* The Range header's value for bytes [offset, offset + length); length 0: to the end. */
void cf_http_range(char out[64], uint64_t offset, uint64_t length);

/* CF_ECORRUPT: the object name at location is shorter than a read of length bytes at
 * offset needs. */
int cf_http_short_read(const char *name, const char *location, uint64_t offset,
                       uint64_t length);

/* Hand bytes [from, from + n) of resp's body to the caller as *out (malloc'd; a 1-byte
 * allocation when n is 0). */
int cf_http_take_body(cf_http_response *resp, size_t from, size_t n, uint8_t **out,
                      size_t *out_len);

/* The data of a ranged GET (offset + length must not overflow) from its final response: a 200
 * (the whole object, the range cut out of it) or a 206 whose Content-Range is the range
 * asked for. 0 with *out set; CF_ECORRUPT when the object is shorter than asked; CF_EIO when
 * the server answered another range; 1 for any other status, for the driver to judge. */
int cf_http_take_range(cf_http_response *resp, uint64_t offset, uint64_t length,
                       const char *name, const char *location, uint8_t **out, size_t *out_len);

/* Append s[0..len) percent-encoded per RFC 3986: everything but A-Z a-z 0-9 - _ . ~ (and
 * '/' when keep_slash) becomes %XX with upper-case hex. Returns 0 or CF_ENOMEM. */
int cf_http_encode(cf_buf *out, const char *s, size_t len, bool keep_slash);

#endif
