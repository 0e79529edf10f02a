/*
 * s3.c - the S3 storage driver: objects under a bucket and prefix on AWS S3 or any
 * S3-compatible server (path style), signed with SigV4, over the shared HTTP client. Large
 * objects go up in multipart uploads; exclusive puts use If-None-Match: * where the server
 * honours it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "coffer/sys/storage.h"
#include "storage/http/http.h"
#include "storage/http/listing.h"
#include "storage/http/xml.h"
#include "storage/s3/s3.h"
#include "storage/s3/sigv4.h"
#include "util/util.h"

#define MB ((uint64_t)1 << 20)
#define MP_THRESHOLD_DEFAULT (64 * MB)
#define PART_SIZE_DEFAULT (8 * MB)
#define PART_SIZE_MIN MB           /* AWS needs 5 MiB for all but the last part */
#define PART_SIZE_MAX (5120 * MB)  /* the S3 limit */
#define PARTS_MAX 10000u           /* the S3 limit */
#define VERIFY_MAX (64 * MB)       /* largest object compared byte for byte after a retry */
#define LIST_BODY_MAX ((size_t)16 << 20)
#define MAX_HDR 12
#define MAX_QUERY 4

/* Error codes S3 answers that are worth another attempt whatever their status. */
static const char *const s3_retry_codes[] = {
    "SlowDown",      "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted",
    "ConditionalRequestConflict", "RequestTimeoutException", NULL,
};

typedef struct {
    cf_s3_location loc;
    cf_s3_creds creds;
    cf_http *http;
    char *display;  /* "s3:" + the location as given (never holds credentials) */
    char *endpoint; /* "https://host[:port]" */
    uint64_t mp_threshold;
    uint64_t part_size;
    pthread_mutex_t cond_lock;
    cf_s3_cond cond; /* YES or NO once known */
} s3;

/* Exclusive puts on servers that ignore If-None-Match are serialised in this process. */
static pthread_mutex_t g_excl_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- requests ---- */

typedef struct {
    s3 *s;
    const char *method;
    char *path; /* canonical, encoded */
    cf_sigv4_pair query[MAX_QUERY];
    size_t n_query;
    cf_sigv4_pair hdr[MAX_HDR]; /* sent and signed, besides host and the x-amz-* set */
    char hdr_store[MAX_HDR][256];
    size_t n_hdr;
    char payload_hash[65];
} s3_req;

static void req_init(s3_req *r, s3 *s, const char *method)
{
    memset(r, 0, sizeof(*r));
    r->s = s;
    r->method = method;
}

static void req_free(s3_req *r)
{
    free(r->path);
    r->path = NULL;
}

static void req_query(s3_req *r, const char *name, const char *value)
{
    if (r->n_query < MAX_QUERY)
        r->query[r->n_query++] = (cf_sigv4_pair){name, value};
}

/* Add a header; the value is copied. */
static void req_header(s3_req *r, const char *name, const char *value)
{
    if (r->n_hdr >= MAX_HDR)
        return;
    snprintf(r->hdr_store[r->n_hdr], sizeof(r->hdr_store[0]), "%s", value);
    r->hdr[r->n_hdr] = (cf_sigv4_pair){name, r->hdr_store[r->n_hdr]};
    r->n_hdr++;
}

/* The path of the bucket ("/bucket" in path style, "/" on a virtual host), or of an object
 * (name relative to the prefix; NULL for the bucket). */
static int req_path(s3_req *r, const char *name)
{
    const s3 *s = r->s;
    cf_buf b;
    cf_buf_init(&b, 0);
    int rc = 0;
    if (s->loc.path_style) {
        rc = cf_buf_append(&b, "/", 1) || cf_http_encode(&b, s->loc.bucket, strlen(s->loc.bucket), false);
    }
    if (!rc && name) {
        rc = cf_buf_append(&b, "/", 1) ||
             cf_http_encode(&b, s->loc.prefix, strlen(s->loc.prefix), true) ||
             cf_http_encode(&b, name, strlen(name), true);
    } else if (!rc && !s->loc.path_style) {
        rc = cf_buf_append(&b, "/", 1);
    }
    if (rc) {
        cf_buf_free(&b);
        return CF_ENOMEM;
    }
    r->path = (char *)cf_buf_steal(&b, NULL);
    return 0;
}

static int sign_cb(cf_http_headers *out, void *payload)
{
    s3_req *r = payload;
    s3 *s = r->s;
    char date[17];
    cf_sigv4_amz_date(date, (long long)time(NULL));
    cf_sigv4_pair h[MAX_HDR + 4];
    size_t n = 0;
    h[n++] = (cf_sigv4_pair){"host", s->loc.host};
    h[n++] = (cf_sigv4_pair){"x-amz-content-sha256", r->payload_hash};
    h[n++] = (cf_sigv4_pair){"x-amz-date", date};
    if (s->creds.session_token)
        h[n++] = (cf_sigv4_pair){"x-amz-security-token", s->creds.session_token};
    for (size_t i = 0; i < r->n_hdr; i++)
        h[n++] = r->hdr[i];
    cf_sigv4_input in = {
        .method = r->method,
        .path = r->path,
        .query = r->query,
        .n_query = r->n_query,
        .headers = h,
        .n_headers = n,
        .payload_hash = r->payload_hash,
        .amz_date = date,
        .region = s->creds.region,
        .service = "s3",
        .access_key = s->creds.access_key,
        .secret_key = s->creds.secret_key,
    };
    cf_sigv4_output o;
    int rc = cf_sigv4_sign(&o, &in);
    if (rc < 0)
        return rc;
    if ((rc = cf_http_headers_add(out, "x-amz-content-sha256", r->payload_hash)) == 0 &&
        (rc = cf_http_headers_add(out, "x-amz-date", date)) == 0 &&
        (!s->creds.session_token ||
         (rc = cf_http_headers_add(out, "x-amz-security-token", s->creds.session_token)) == 0))
        rc = cf_http_headers_add(out, "Authorization", o.authorization);
    cf_sigv4_output_free(&o);
    return rc;
}

static void digest(const EVP_MD *md, const void *data, size_t len, uint8_t *out)
{
    unsigned int n = 0;
    EVP_Digest(data, len, out, &n, md, NULL);
}

/* Base64 of the MD5 of data, for Content-MD5. */
static void content_md5(char out[32], const void *data, size_t len)
{
    uint8_t md[16];
    digest(EVP_md5(), data, len, md);
    EVP_EncodeBlock((unsigned char *)out, md, 16);
}

/* Perform r with the given body. op and object name the request in messages. */
static int req_do(s3_req *r, const char *op, const char *object, const void *body, size_t len,
                  bool has_body, size_t max_body, cf_http_response *resp)
{
    s3 *s = r->s;
    int rc = 0;
    cf_buf url;
    cf_buf_init(&url, 0);
    cf_http_headers fixed;
    cf_http_headers_init(&fixed);

    uint8_t md[32];
    digest(EVP_sha256(), body ? body : "", len, md);
    cf_hex_encode(r->payload_hash, md, sizeof(md));

    if (cf_buf_append_str(&url, s->endpoint) || cf_buf_append_str(&url, r->path)) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (r->n_query && (cf_buf_append(&url, "?", 1) ||
                       cf_sigv4_canonical_query(&url, r->query, r->n_query))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = cf_http_headers_add(&fixed, "Host", s->loc.host)) < 0)
        goto out;
    for (size_t i = 0; i < r->n_hdr; i++)
        if ((rc = cf_http_headers_add(&fixed, r->hdr[i].name, r->hdr[i].value)) < 0)
            goto out;
    cf_http_request req = {
        .method = r->method,
        .url = (const char *)url.data,
        .headers = &fixed,
        .sign = sign_cb,
        .sign_payload = r,
        .body = body,
        .body_len = len,
        .has_body = has_body,
        .max_body = max_body,
        .op = op,
        .object = object,
        .location = s->display,
    };
    rc = cf_http_perform(s->http, &req, resp);
out:
    cf_buf_free(&url);
    cf_http_headers_free(&fixed);
    return rc;
}

typedef struct {
    int code, sys;
    char msg[1024];
    char hint[1024];
    bool has_hint;
} saved_err;

static void err_save(saved_err *e)
{
    const cf_error *x = cf_error_last();
    e->code = x->code;
    e->sys = x->sys;
    snprintf(e->msg, sizeof(e->msg), "%s", x->message ? x->message : "");
    e->has_hint = x->hint != NULL;
    snprintf(e->hint, sizeof(e->hint), "%s", x->hint ? x->hint : "");
}

static int err_restore(const saved_err *e)
{
    cf_error_set(e->code, e->sys, "%s", e->msg);
    if (e->has_hint)
        cf_error_hint("%s", e->hint);
    return e->code;
}

/* Keep the current error's message and hint, with another code. */
static int recode(int code)
{
    saved_err e;
    err_save(&e);
    e.code = code;
    return err_restore(&e);
}

/* The error for a failed response: NoSuchBucket -> CF_ENOREPO, a few S3 codes get hints,
 * the rest as cf_http_fail. */
static int s3_fail(const s3 *s, const char *op, const char *object, const cf_http_response *resp)
{
    cf_http_request req = {.op = op, .object = object, .location = s->display};
    const char *code = resp->err_code ? resp->err_code : "";
    if (strcmp(code, "NoSuchBucket") == 0) {
        int rc = cf_error_set(CF_ENOREPO, (int)resp->status,
                              "repository '%s' does not exist: bucket '%s' not found", s->display,
                              s->loc.bucket);
        cf_error_hint("check the bucket name and region, or create the repository with "
                      "'coffer init'");
        return rc;
    }
    int rc = cf_http_fail(&req, resp);
    if (strcmp(code, "RequestTimeTooSkewed") == 0) {
        cf_error_hint("the system clock is too far from the server's: fix the clock (NTP)");
    } else if (strcmp(code, "InvalidObjectState") == 0) {
        rc = recode(CF_EIO);
        cf_error_hint("the object is in an archive storage class: restore it in S3 first, and "
                      "use a storage class that can be read directly for repositories");
    } else if (rc == CF_ESTORAGE_AUTH) {
        cf_error_hint("the server refused the request: check AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY (keys from %s), the bucket's permissions and the "
                      "system clock",
                      s->creds.source ? s->creds.source : "?");
    }
    return rc;
}

static int not_found(const s3 *s, const char *name)
{
    return cf_error_set(CF_ENOTFOUND, 404, "object '%s' not found in '%s'", name, s->display);
}

/* ---- per-object headers ---- */

static bool lock_applies(const s3 *s, const char *name)
{
    /* the probe of conditional writes (".tmp-…") is removed at once: no retention for it */
    return s->loc.object_lock && !cf_str_has_prefix(name, s->loc.lock_exclude) &&
           !cf_str_has_prefix(name, ".tmp-");
}

static void object_headers(s3_req *r, const char *name)
{
    const s3 *s = r->s;
    if (s->loc.storage_class)
        req_header(r, "x-amz-storage-class", s->loc.storage_class);
    if (s->loc.sse)
        req_header(r, "x-amz-server-side-encryption", s->loc.sse);
    if (s->loc.sse_kms_key_id)
        req_header(r, "x-amz-server-side-encryption-aws-kms-key-id", s->loc.sse_kms_key_id);
    if (lock_applies(s, name)) {
        char until[32];
        time_t t = time(NULL) + (time_t)s->loc.retain_days * 86400;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
        req_header(r, "x-amz-object-lock-mode", s->loc.object_lock);
        req_header(r, "x-amz-object-lock-retain-until-date", until);
    }
}

/* ---- stat ---- */

static int head_object(s3 *s, const char *name, uint64_t *out_size, const char *op)
{
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "HEAD");
    int rc = req_path(&r, name);
    if (rc == 0)
        rc = req_do(&r, op, name, NULL, 0, false, 0, &resp);
    if (rc < 0)
        goto out;
    if (resp.status == 404) {
        rc = not_found(s, name);
    } else if (resp.status == 200) {
        const char *cl = cf_http_response_header(&resp, "content-length");
        char *end = NULL;
        errno = 0;
        unsigned long long v = cl ? strtoull(cl, &end, 10) : 0;
        if (!cl || errno || end == cl || (*end && *end != ' ' && *end != '\r'))
            rc = cf_error_set(CF_EIO, 0, "unable to %s '%s' in '%s': no valid Content-Length",
                              op, name, s->display);
        else
            *out_size = v;
    } else {
        rc = s3_fail(s, op, name, &resp);
    }
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

static int s3_stat(void *self, const char *name, uint64_t *out_size)
{
    return head_object(self, name, out_size, "stat");
}

/* ---- get ---- */

static int s3_get(void *self, const char *name, uint64_t offset, uint64_t length, uint8_t **out,
                  size_t *out_len)
{
    s3 *s = self;
    int rc = 0;
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "GET");
    uint64_t end, size = 0;

    if (__builtin_add_overflow(offset, length, &end)) {
        /* Cannot be satisfied; report a missing object as such. */
        if ((rc = head_object(s, name, &size, "read")) == 0)
            rc = cf_http_short_read(name, s->display, offset, length);
        goto out;
    }
    if ((rc = req_path(&r, name)) < 0)
        goto out;
    if (offset || length) {
        char range[64];
        cf_http_range(range, offset, length);
        req_header(&r, "Range", range);
    }
    rc = req_do(&r, "read", name, NULL, 0, false,
                (size_t)(length ? length : CF_STORAGE_GET_MAX), &resp);
    if (rc < 0) {
        if (resp.too_large && !length)
            rc = cf_error_set(CF_EINVAL, 0,
                              "read of '%s' in '%s' exceeds the 1 GiB limit (read it in ranges)",
                              name, s->display);
        goto out;
    }

    rc = cf_http_take_range(&resp, offset, length, name, s->display, out, out_len);
    if (rc <= 0)
        goto out; /* the data, or what was wrong with it */
    rc = 0;
    if (resp.status == 416) {
        if (length == 0 && (rc = head_object(s, name, &size, "read")) == 0 && size == offset) {
            rc = cf_http_take_body(&resp, 0, 0, out, out_len); /* offset at the very end: empty */
            goto out;
        }
        if (rc == 0)
            rc = cf_http_short_read(name, s->display, offset, length);
    } else if (resp.status == 404 && !(resp.err_code && strcmp(resp.err_code, "NoSuchBucket") == 0)) {
        rc = not_found(s, name);
    } else {
        rc = s3_fail(s, "read", name, &resp);
    }
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

/* Does the stored object hold exactly data? (After a retried write answered "exists": the
 * earlier attempt may have been ours.) */
static bool same_content(s3 *s, const char *name, const void *data, size_t len)
{
    saved_err e;
    err_save(&e);
    bool same = false;
    uint8_t *got = NULL;
    size_t got_len = 0;
    if (len <= VERIFY_MAX && s3_get(s, name, 0, 0, &got, &got_len) == 0)
        same = got_len == len && (len == 0 || memcmp(got, data, len) == 0);
    free(got);
    err_restore(&e);
    return same;
}

static int exists_error(const s3 *s, const char *name)
{
    return cf_error_set(CF_EEXISTS, 412, "object '%s' already exists in '%s'", name, s->display);
}

/* ---- put ---- */

static int put_single(s3 *s, const char *name, const void *data, size_t len, bool if_none_match)
{
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "PUT");
    int rc = req_path(&r, name);
    if (rc < 0)
        goto out;
    char md5[32];
    content_md5(md5, data, len);
    req_header(&r, "Content-MD5", md5);
    object_headers(&r, name);
    if (if_none_match)
        req_header(&r, "If-None-Match", "*");
    if ((rc = req_do(&r, "write", name, data, len, true, 0, &resp)) < 0)
        goto out;
    if (resp.status == 200) {
        rc = 0;
    } else if (if_none_match && resp.status == 412) {
        rc = resp.attempts > 1 && same_content(s, name, data, len) ? 0 : exists_error(s, name);
    } else {
        rc = s3_fail(s, "write", name, &resp);
    }
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

static void abort_upload(s3 *s, const char *name, const char *upload_id)
{
    saved_err e;
    err_save(&e);
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "DELETE");
    if (req_path(&r, name) == 0) {
        req_query(&r, "uploadId", upload_id);
        /* Best effort: some servers answer 405, and a bucket lifecycle rule can clean up
         * what is left. */
        (void)req_do(&r, "abort the upload of", name, NULL, 0, false, 0, &resp);
    }
    req_free(&r);
    cf_http_response_free(&resp);
    err_restore(&e);
}

typedef struct {
    char etag[128];
    uint8_t md5[16];
} part_info;

/* After a completion whose answer was lost (its retry then fails: AWS says NoSuchUpload,
 * s3rver InternalError): is the stored object the one we uploaded? Same size, and an ETag
 * that is either the multipart form (MD5 of the parts' MD5s, "-N") or the whole MD5
 * (s3rver); failing that (SSE-KMS ETags are opaque), the bytes themselves. */
static bool upload_landed(s3 *s, const char *name, const void *data, size_t len,
                          const part_info *parts, size_t n_parts)
{
    saved_err e;
    err_save(&e);
    bool ok = false;
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "HEAD");
    if (req_path(&r, name) != 0 || req_do(&r, "write", name, NULL, 0, false, 0, &resp) != 0 ||
        resp.status != 200)
        goto out;
    const char *cl = cf_http_response_header(&resp, "content-length");
    const char *etag = cf_http_response_header(&resp, "etag");
    if (!cl || strtoull(cl, NULL, 10) != (unsigned long long)len)
        goto out;
    if (etag) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t md[16];
        unsigned int mdn = 0;
        char want[64], hex[33];
        if (ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL)) {
            for (size_t i = 0; i < n_parts; i++)
                EVP_DigestUpdate(ctx, parts[i].md5, 16);
            if (EVP_DigestFinal_ex(ctx, md, &mdn)) {
                cf_hex_encode(hex, md, 16);
                snprintf(want, sizeof(want), "\"%s-%zu\"", hex, n_parts);
                ok = strcmp(etag, want) == 0;
            }
        }
        EVP_MD_CTX_free(ctx);
        if (!ok) {
            digest(EVP_md5(), data, len, md);
            cf_hex_encode(hex, md, 16);
            snprintf(want, sizeof(want), "\"%s\"", hex);
            ok = strcmp(etag, want) == 0;
        }
    }
    if (!ok)
        ok = same_content(s, name, data, len);
out:
    req_free(&r);
    cf_http_response_free(&resp);
    err_restore(&e);
    return ok;
}

static int put_multipart(s3 *s, const char *name, const void *data, size_t len, bool if_none_match)
{
    int rc = 0;
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    char *upload_id = NULL;
    part_info *parts = NULL;
    cf_buf xml;
    cf_buf_init(&xml, 0);
    const uint8_t *bytes = data;

    uint64_t part = s->part_size;
    if ((len + part - 1) / part > PARTS_MAX)
        part = (len + PARTS_MAX - 1) / PARTS_MAX;
    size_t n_parts = (size_t)((len + part - 1) / part);

    /* 1. create */
    req_init(&r, s, "POST");
    if ((rc = req_path(&r, name)) < 0)
        goto out;
    req_query(&r, "uploads", "");
    object_headers(&r, name);
    if ((rc = req_do(&r, "write", name, NULL, 0, true, 0, &resp)) < 0)
        goto out;
    if (resp.status != 200) {
        rc = s3_fail(s, "write", name, &resp);
        goto out;
    }
    if (cf_xml_text(&upload_id, (const char *)resp.body.data, resp.body.len,
                    "InitiateMultipartUploadResult/UploadId", 1024) != 0 ||
        !*upload_id) {
        rc = cf_error_set(CF_EIO, 0, "unable to write '%s' in '%s': no UploadId in the answer "
                          "to a multipart upload", name, s->display);
        goto out;
    }
    req_free(&r);

    /* 2. parts */
    if (!(parts = cf_calloc(n_parts, sizeof(*parts)))) {
        rc = CF_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n_parts; i++) {
        size_t off = (size_t)(i * part);
        size_t n = len - off < part ? len - off : (size_t)part;
        char num[24], md5[32];
        snprintf(num, sizeof(num), "%zu", i + 1);
        req_init(&r, s, "PUT");
        if ((rc = req_path(&r, name)) < 0)
            goto fail;
        req_query(&r, "partNumber", num);
        req_query(&r, "uploadId", upload_id);
        digest(EVP_md5(), bytes + off, n, parts[i].md5);
        EVP_EncodeBlock((unsigned char *)md5, parts[i].md5, 16);
        req_header(&r, "Content-MD5", md5);
        if ((rc = req_do(&r, "write", name, bytes + off, n, true, 0, &resp)) < 0)
            goto fail;
        if (resp.status != 200) {
            rc = s3_fail(s, "write", name, &resp);
            goto fail;
        }
        const char *etag = cf_http_response_header(&resp, "etag");
        if (!etag || !*etag || strlen(etag) >= sizeof(parts[i].etag)) {
            rc = cf_error_set(CF_EIO, 0, "unable to write '%s' in '%s': no ETag for part %zu",
                              name, s->display, i + 1);
            goto fail;
        }
        snprintf(parts[i].etag, sizeof(parts[i].etag), "%s", etag);
        req_free(&r);
    }

    /* 3. complete */
    if (cf_buf_append_str(&xml, "<CompleteMultipartUpload>")) {
        rc = CF_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n_parts; i++)
        if (cf_buf_printf(&xml, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1) ||
            cf_xml_escape(&xml, parts[i].etag) || cf_buf_append_str(&xml, "</ETag></Part>")) {
            rc = CF_ENOMEM;
            goto fail;
        }
    if (cf_buf_append_str(&xml, "</CompleteMultipartUpload>")) {
        rc = CF_ENOMEM;
        goto fail;
    }
    const cf_retry_policy *pol = cf_http_policy(s->http);
    bool ambiguous = false;
    for (unsigned attempt = 1;; attempt++) {
        req_init(&r, s, "POST");
        if ((rc = req_path(&r, name)) < 0)
            goto fail;
        req_query(&r, "uploadId", upload_id);
        req_header(&r, "Content-Type", "application/xml");
        if (if_none_match)
            req_header(&r, "If-None-Match", "*");
        rc = req_do(&r, "write", name, xml.data, xml.len, true, 0, &resp);
        req_free(&r);
        ambiguous = ambiguous || resp.attempts > 1;
        if (rc == CF_ERETRYABLE && ambiguous && upload_landed(s, name, data, len, parts, n_parts)) {
            rc = 0;
            goto out;
        }
        if (rc < 0)
            goto fail;
        if (resp.status == 200) {
            /* S3 may answer 200 and report a failure in the body. */
            char *code = NULL;
            if (cf_xml_text(&code, (const char *)resp.body.data, resp.body.len, "Error/Code",
                            256) != 0) {
                rc = 0;
                goto out; /* completed */
            }
            bool retry = false;
            for (const char *const *c = s3_retry_codes; *c; c++)
                retry = retry || strcmp(*c, code) == 0;
            free(code);
            if (!retry || attempt >= pol->attempts) {
                free(resp.err_code);
                free(resp.err_message);
                resp.err_code = resp.err_message = NULL;
                char *m = NULL;
                (void)cf_xml_text(&resp.err_code, (const char *)resp.body.data, resp.body.len,
                                  "Error/Code", 256);
                (void)cf_xml_text(&m, (const char *)resp.body.data, resp.body.len,
                                  "Error/Message", 300);
                resp.err_message = m;
                resp.status = 500;
                rc = s3_fail(s, "write", name, &resp);
                if (rc != CF_ESTORAGE_AUTH)
                    rc = recode(retry ? CF_ERETRYABLE : CF_EIO);
                goto fail;
            }
            ambiguous = true;
            cf_retry_sleep_ms(cf_retry_delay_ms(pol, attempt, 0));
            continue;
        }
        if (resp.status == 404 && ambiguous && upload_landed(s, name, data, len, parts, n_parts)) {
            rc = 0; /* NoSuchUpload after an attempt whose answer was lost: it completed */
            goto out;
        }
        if (if_none_match && resp.status == 412) {
            rc = ambiguous && upload_landed(s, name, data, len, parts, n_parts)
                     ? 0
                     : exists_error(s, name);
            if (rc == 0)
                goto out;
            goto fail;
        }
        rc = s3_fail(s, "write", name, &resp);
        goto fail;
    }

fail:
    req_free(&r);
    if (upload_id)
        abort_upload(s, name, upload_id);
out:
    req_free(&r);
    cf_http_response_free(&resp);
    free(upload_id);
    free(parts);
    cf_buf_free(&xml);
    return rc;
}

static int put_any(s3 *s, const char *name, const void *data, size_t len, bool if_none_match)
{
    if ((uint64_t)len > s->mp_threshold)
        return put_multipart(s, name, data, len, if_none_match);
    return put_single(s, name, data, len, if_none_match);
}

/* Learn once whether the server honours If-None-Match: * on writes: write a probe object
 * twice; the second write must be refused. */
static int cond_mode(s3 *s, cf_s3_cond *out)
{
    int rc = 0;
    pthread_mutex_lock(&s->cond_lock);
    if (s->cond != CF_S3_COND_AUTO) {
        *out = s->cond;
        goto out;
    }
    uint64_t rnd[2] = {(uint64_t)cf_now_ns(), (uint64_t)(uintptr_t)s ^ (uint64_t)pthread_self()};
    uint8_t md[32];
    digest(EVP_sha256(), rnd, sizeof(rnd), md);
    char hex[17], name[64];
    cf_hex_encode(hex, md, 8);
    snprintf(name, sizeof(name), ".tmp-coffer-probe-%s", hex);
    if ((rc = put_single(s, name, "probe", 5, true)) < 0) {
        /* Servers that do not implement the header may refuse it outright. */
        if (rc == CF_EIO && (cf_error_last()->sys == 501 || cf_error_last()->sys == 400)) {
            s->cond = CF_S3_COND_NO;
            rc = 0;
            *out = s->cond;
        }
        goto out;
    }
    rc = put_single(s, name, "probe", 5, true);
    if (rc == CF_EEXISTS)
        s->cond = CF_S3_COND_YES;
    else if (rc == 0)
        s->cond = CF_S3_COND_NO;
    /* remove the probe, best effort */
    saved_err e;
    err_save(&e);
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "DELETE");
    if (req_path(&r, name) == 0)
        (void)req_do(&r, "remove", name, NULL, 0, false, 0, &resp);
    req_free(&r);
    cf_http_response_free(&resp);
    err_restore(&e);
    if (s->cond != CF_S3_COND_AUTO) {
        rc = 0;
        *out = s->cond;
    }
out:
    pthread_mutex_unlock(&s->cond_lock);
    return rc;
}

static int s3_put(void *self, const char *name, const void *data, size_t len, unsigned flags)
{
    s3 *s = self;
    if (!(flags & CF_PUT_EXCLUSIVE))
        return put_any(s, name, data, len, false);
    cf_s3_cond mode;
    int rc = cond_mode(s, &mode);
    if (rc < 0)
        return rc;
    if (mode == CF_S3_COND_YES)
        return put_any(s, name, data, len, true);
    /* HEAD, then write: atomic within this process only (documented). */
    pthread_mutex_lock(&g_excl_lock);
    uint64_t size;
    rc = head_object(s, name, &size, "write");
    if (rc == 0)
        rc = exists_error(s, name);
    else if (rc == CF_ENOTFOUND)
        rc = put_any(s, name, data, len, false);
    pthread_mutex_unlock(&g_excl_lock);
    return rc;
}

/* ---- remove ---- */

static int s3_remove(void *self, const char *name)
{
    s3 *s = self;
    uint64_t size;
    /* S3 answers 204 whether or not the key existed; the contract wants CF_ENOTFOUND. */
    int rc = head_object(s, name, &size, "remove");
    if (rc < 0)
        return rc;
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    req_init(&r, s, "DELETE");
    if ((rc = req_path(&r, name)) == 0 &&
        (rc = req_do(&r, "remove", name, NULL, 0, false, 0, &resp)) == 0) {
        if (resp.status == 204 || resp.status == 200)
            rc = 0;
        else if (resp.status == 404 && !(resp.err_code && strcmp(resp.err_code, "NoSuchBucket") == 0))
            rc = not_found(s, name);
        else if (resp.status == 403 && lock_applies(s, name)) {
            /* the read above went through: the refusal is about deleting this object */
            rc = cf_error_set(CF_EPERM, 403, "unable to remove '%s' in '%s': the server refused "
                              "(%s): it is under Object Lock retention", name, s->display,
                              resp.err_code ? resp.err_code : "403");
            cf_error_hint("objects written with object_lock=%s can be deleted once the %u days of "
                          "retention have passed", s->loc.object_lock, s->loc.retain_days);
        } else
            rc = s3_fail(s, "remove", name, &resp);
    }
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

/* ---- list ---- */

/* One ListObjectsV2 request. */
static int list_page(s3 *s, const char *full_prefix, const char *token, const char *max_keys,
                     const char *op, const char *what, cf_http_response *resp)
{
    s3_req r;
    req_init(&r, s, "GET");
    int rc = req_path(&r, NULL);
    if (rc == 0) {
        req_query(&r, "list-type", "2");
        if (*full_prefix)
            req_query(&r, "prefix", full_prefix);
        if (token)
            req_query(&r, "continuation-token", token);
        if (max_keys)
            req_query(&r, "max-keys", max_keys);
        rc = req_do(&r, op, what, NULL, 0, false, LIST_BODY_MAX, resp);
    }
    req_free(&r);
    return rc;
}

static int s3_list(void *self, const char *prefix, cf_storage_list_cb cb, void *payload)
{
    s3 *s = self;
    int rc = 0;
    char *full = cf_asprintf("%s%s", s->loc.prefix, prefix);
    char *token = NULL, *truncated = NULL;
    cf_list_page page = {.prefix = s->loc.prefix, .name_path = "Key", .size_path = "Size"};
    cf_http_response resp;
    cf_http_response_init(&resp);
    if (!full)
        return CF_ENOMEM;
    const char *what = *prefix ? prefix : NULL;

    for (;;) {
        if ((rc = list_page(s, full, token, NULL, "list", what, &resp)) < 0)
            goto out;
        if (resp.status != 200) {
            rc = s3_fail(s, "list", what, &resp);
            goto out;
        }
        const char *doc = (const char *)resp.body.data;
        size_t dl = resp.body.len;
        rc = doc ? cf_list_page_parse(&page, doc, dl, "ListBucketResult/Contents") : 0;
        if (rc != 0) {
            rc = rc == CF_ENOMEM ? CF_ENOMEM
                                 : cf_error_set(CF_EIO, 0,
                                                "unable to list '%s' in '%s': malformed "
                                                "ListObjectsV2 answer",
                                                prefix, s->display);
            goto out;
        }
        if ((rc = cf_list_page_emit(&page, cb, payload)) != 0)
            goto out;

        free(truncated);
        truncated = NULL;
        bool more = doc && cf_xml_text(&truncated, doc, dl, "ListBucketResult/IsTruncated", 16) == 0 &&
                    strcmp(truncated, "true") == 0;
        if (!more)
            break;
        char *next = NULL;
        if (cf_xml_text(&next, doc, dl, "ListBucketResult/NextContinuationToken", 4096) != 0 ||
            !*next || (token && strcmp(token, next) == 0)) {
            free(next);
            rc = cf_error_set(CF_EIO, 0,
                              "unable to list '%s' in '%s': the server said the listing is "
                              "truncated but gave no new continuation token",
                              prefix, s->display);
            goto out;
        }
        free(token);
        token = next;
    }
out:
    cf_list_page_free(&page);
    cf_http_response_free(&resp);
    free(full);
    free(token);
    free(truncated);
    return rc;
}

/* ---- open / close ---- */

static void s3_close(void *self)
{
    s3 *s = self;
    if (!s)
        return;
    cf_http_free(s->http);
    cf_s3_location_free(&s->loc);
    cf_s3_creds_free(&s->creds);
    free(s->display);
    free(s->endpoint);
    pthread_mutex_destroy(&s->cond_lock);
    free(s);
}

static int create_bucket(s3 *s)
{
    int rc = 0;
    s3_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    char *body = NULL;
    req_init(&r, s, "PUT");
    if ((rc = req_path(&r, NULL)) < 0)
        goto out;
    if (strcmp(s->creds.region, "us-east-1") != 0 &&
        !(body = cf_asprintf("<CreateBucketConfiguration "
                             "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                             "<LocationConstraint>%s</LocationConstraint>"
                             "</CreateBucketConfiguration>",
                             s->creds.region))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (s->loc.object_lock)
        req_header(&r, "x-amz-bucket-object-lock-enabled", "true");
    if ((rc = req_do(&r, "create", NULL, body, body ? strlen(body) : 0, true, 0, &resp)) < 0)
        goto out;
    if (resp.status == 200 ||
        (resp.status == 409 && resp.err_code && strcmp(resp.err_code, "BucketAlreadyOwnedByYou") == 0))
        goto out;
    if (resp.status == 409 && resp.err_code && strcmp(resp.err_code, "BucketAlreadyExists") == 0) {
        rc = cf_error_set(CF_EPERM, 409,
                          "unable to create '%s': bucket '%s' belongs to another account", s->display,
                          s->loc.bucket);
        cf_error_hint("bucket names are global on AWS: choose another name");
        goto out;
    }
    rc = s3_fail(s, "create", NULL, &resp);
out:
    req_free(&r);
    cf_http_response_free(&resp);
    free(body);
    return rc;
}

/* Check the bucket (and prefix) exist with one ListObjectsV2 request, which also proves the
 * credentials; create the bucket when asked. Follows a region hint once. */
static int probe(s3 *s, unsigned flags)
{
    int rc = 0;
    cf_http_response resp;
    cf_http_response_init(&resp);
    for (int round = 0;; round++) {
        if ((rc = list_page(s, s->loc.prefix, NULL, "1", "open", NULL, &resp)) < 0)
            goto out;
        const char *hinted = cf_http_response_header(&resp, "x-amz-bucket-region");
        if (round == 0 && hinted && strcmp(hinted, s->creds.region) != 0 &&
            (resp.status == 301 || resp.status == 400 || resp.status == 403)) {
            /* The bucket lives in another region: sign for that one (and use its endpoint). */
            char *reg = cf_strdup(hinted);
            if (!reg) {
                rc = CF_ENOMEM;
                goto out;
            }
            if ((rc = cf_s3_location_set_region(&s->loc, reg)) < 0) {
                free(reg);
                goto out;
            }
            free(s->creds.region);
            s->creds.region = reg;
            free(s->endpoint);
            if (!(s->endpoint = cf_asprintf("%s://%s", s->loc.scheme, s->loc.host))) {
                rc = CF_ENOMEM;
                goto out;
            }
            continue;
        }
        break;
    }
    if (resp.status == 200) {
        if (!(flags & CF_STORAGE_CREATE) && *s->loc.prefix) {
            /* A prefix exists only while something is stored under it. */
            char *kc = NULL;
            bool empty = !resp.body.data ||
                         cf_xml_text(&kc, (const char *)resp.body.data, resp.body.len,
                                     "ListBucketResult/Contents", 8192) == CF_ENOTFOUND;
            free(kc);
            if (empty) {
                rc = cf_error_set(CF_ENOREPO, 0, "repository '%s' does not exist", s->display);
                cf_error_hint("nothing is stored under prefix '%s' of bucket '%s': check the "
                              "url, or create a repository there first",
                              s->loc.prefix, s->loc.bucket);
            }
        }
        goto out;
    }
    if (resp.status == 404 && (!resp.err_code || strcmp(resp.err_code, "NoSuchBucket") == 0)) {
        if (flags & CF_STORAGE_CREATE) {
            rc = create_bucket(s);
            goto out;
        }
        rc = cf_error_set(CF_ENOREPO, 404, "repository '%s' does not exist: bucket '%s' not found",
                          s->display, s->loc.bucket);
        cf_error_hint("check the bucket name and region, or create a repository there first");
        goto out;
    }
    rc = s3_fail(s, "open", NULL, &resp);
out:
    cf_http_response_free(&resp);
    return rc;
}

int cf_storage_s3_new(void **out_self, const char *location, unsigned flags)
{
    int rc = 0;
    s3 *s = NULL;
    if (!out_self || !location)
        return cf_error_set(CF_EINVAL, 0, "s3 storage: a location is required");
    *out_self = NULL;
    if (!(s = cf_calloc(1, sizeof(*s))))
        return CF_ENOMEM;
    pthread_mutex_init(&s->cond_lock, NULL);
    if ((rc = cf_s3_location_parse(&s->loc, location)) < 0)
        goto out;
    s->cond = s->loc.cond;
    if (!(s->display = cf_asprintf("s3:%s", location))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = cf_storage_env_size(&s->mp_threshold, "COFFER_S3_MULTIPART_THRESHOLD",
                                  MP_THRESHOLD_DEFAULT, PART_SIZE_MIN, CF_STORAGE_GET_MAX)) < 0 ||
        (rc = cf_storage_env_size(&s->part_size, "COFFER_S3_PART_SIZE", PART_SIZE_DEFAULT,
                                  PART_SIZE_MIN, PART_SIZE_MAX)) < 0)
        goto out;
    if ((rc = cf_s3_creds_load(&s->creds)) < 0)
        goto out;
    if (s->loc.region) {
        free(s->creds.region);
        if (!(s->creds.region = cf_strdup(s->loc.region))) {
            rc = CF_ENOMEM;
            goto out;
        }
    }
    if ((rc = cf_s3_location_set_region(&s->loc, s->creds.region)) < 0)
        goto out;
    if (!(s->endpoint = cf_asprintf("%s://%s", s->loc.scheme, s->loc.host))) {
        rc = CF_ENOMEM;
        goto out;
    }
    cf_http_config hc = {.retry_codes = s3_retry_codes,
                         .secrets = {s->creds.secret_key, s->creds.session_token}};
    if ((rc = cf_http_new(&s->http, &hc)) < 0)
        goto out;
    if ((rc = probe(s, flags)) < 0)
        goto out;
    *out_self = s;
    s = NULL;
out:
    s3_close(s);
    return rc;
}

const cf_storage_ops cf_storage_s3_ops = {
    .version = CF_STORAGE_OPS_VERSION,
    .scheme = "s3",
    .features = CF_STORAGE_FEAT_EXCLUSIVE_PUT | CF_STORAGE_FEAT_STORAGE_CLASS |
                CF_STORAGE_FEAT_OBJECT_LOCK,
    .put = s3_put,
    .get = s3_get,
    .stat = s3_stat,
    .list = s3_list,
    .remove = s3_remove,
    .space = NULL,
    .close = s3_close,
};
