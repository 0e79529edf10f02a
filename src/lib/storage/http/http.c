/*
 * http.c - the shared HTTP client: libcurl handle pool, one attempt (headers, upload from
 * memory, bounded capture), the retry loop with backoff, and error classification.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "storage/http/http.h"
#include "storage/http/xml.h"

#define POOL_IDLE_MAX 32
#define HEADERS_MAX ((size_t)64 * 1024)   /* all headers of one response */
#define ERROR_BODY_MAX ((size_t)64 * 1024) /* kept of a non-2xx body */
#define ERR_TEXT_MAX 300                  /* server Code/Message kept for messages */
#define CONNECT_TIMEOUT_S 10L
#define LOW_SPEED_LIMIT 1024L /* bytes per second */
#define LOW_SPEED_TIME_DEFAULT 30L

struct cf_http {
    pthread_mutex_t lock;
    CURL *idle[POOL_IDLE_MAX];
    size_t n_idle;
    cf_retry_policy policy;
    const char *const *retry_codes;
    bool insecure;
    bool debug;
    long low_speed_time;
    char *ca_bundle;
    char *secrets[CF_HTTP_SECRETS_MAX]; /* wiped when freed */
};

/* ---- headers ---- */

void cf_http_headers_init(cf_http_headers *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void cf_http_headers_free(cf_http_headers *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->v[i]);
    free(h->v);
    cf_http_headers_init(h);
}

static int headers_push(cf_http_headers *h, char *line)
{
    if (h->n == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 16;
        char **v = cf_realloc(h->v, ncap * sizeof(*v));
        if (!v) {
            free(line);
            return CF_ENOMEM;
        }
        h->v = v;
        h->cap = ncap;
    }
    h->v[h->n++] = line;
    return 0;
}

int cf_http_headers_add(cf_http_headers *h, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return cf_error_set(CF_EINVAL, 0, "invalid http header '%s'", name);
    char *line = cf_asprintf("%s: %s", name, value);
    if (!line)
        return CF_ENOMEM;
    return headers_push(h, line);
}

const char *cf_http_headers_get(const cf_http_headers *h, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->n; i++) {
        const char *l = h->v[i];
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            return v;
        }
    }
    return NULL;
}

/* ---- responses ---- */

void cf_http_response_init(cf_http_response *r)
{
    memset(r, 0, sizeof(*r));
    cf_buf_init(&r->body, CF_HTTP_SMALL_MAX);
    cf_http_headers_init(&r->headers);
}

void cf_http_response_free(cf_http_response *r)
{
    cf_buf_free(&r->body);
    cf_http_headers_free(&r->headers);
    free(r->err_code);
    free(r->err_message);
    r->err_code = r->err_message = NULL;
    r->status = 0;
}

const char *cf_http_response_header(const cf_http_response *r, const char *name)
{
    return cf_http_headers_get(&r->headers, name);
}

/* ---- the client ---- */

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;

static void curl_init_once(void)
{
    g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0);
}

int cf_http_new(cf_http **out, const cf_http_config *cfg)
{
    *out = NULL;
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return cf_error_set(CF_EIO, 0, "unable to initialise libcurl: %s",
                            curl_easy_strerror(g_curl_init_rc));
    cf_http *h = cf_calloc(1, sizeof(*h));
    if (!h)
        return CF_ENOMEM;
    pthread_mutex_init(&h->lock, NULL);
    cf_retry_policy_from_env(&h->policy);
    h->retry_codes = cfg ? cfg->retry_codes : NULL;
    for (size_t i = 0; cfg && i < CF_HTTP_SECRETS_MAX; i++) {
        const char *sec = cfg->secrets[i];
        if (sec && strlen(sec) >= 4 && !(h->secrets[i] = cf_strdup(sec))) {
            cf_http_free(h);
            return CF_ENOMEM;
        }
    }
    h->insecure = env_true("COFFER_INSECURE_TLS");
    h->debug = env_true("COFFER_HTTP_DEBUG");
    h->low_speed_time = LOW_SPEED_TIME_DEFAULT;
    const char *ls = getenv("COFFER_HTTP_LOW_SPEED_TIME");
    if (ls && *ls) {
        char *end = NULL;
        long v = strtol(ls, &end, 10);
        if (end && *end == '\0' && v >= 1 && v <= 3600)
            h->low_speed_time = v;
    }
    const char *ca = getenv("COFFER_CA_BUNDLE");
    if (ca && *ca && !(h->ca_bundle = cf_strdup(ca))) {
        cf_http_free(h);
        return CF_ENOMEM;
    }
    *out = h;
    return 0;
}

void cf_http_free(cf_http *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_idle; i++)
        curl_easy_cleanup(h->idle[i]);
    pthread_mutex_destroy(&h->lock);
    free(h->ca_bundle);
    for (size_t i = 0; i < CF_HTTP_SECRETS_MAX; i++) {
        if (h->secrets[i]) {
            cf_wipe(h->secrets[i], strlen(h->secrets[i]));
            free(h->secrets[i]);
        }
    }
    free(h);
}

const cf_retry_policy *cf_http_policy(const cf_http *h)
{
    return &h->policy;
}

static CURL *handle_acquire(cf_http *h)
{
    CURL *c = NULL;
    pthread_mutex_lock(&h->lock);
    if (h->n_idle > 0)
        c = h->idle[--h->n_idle];
    pthread_mutex_unlock(&h->lock);
    if (!c)
        c = curl_easy_init();
    return c;
}

static void handle_release(cf_http *h, CURL *c)
{
    pthread_mutex_lock(&h->lock);
    if (h->n_idle < POOL_IDLE_MAX) {
        h->idle[h->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->lock);
    if (c)
        curl_easy_cleanup(c);
}

/* ---- one attempt ---- */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
} upload_ctx;

static size_t read_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    upload_ctx *u = userdata;
    size_t room = size * nitems;
    size_t n = u->len - u->pos;
    if (n > room)
        n = room;
    if (n)
        memcpy(buf, u->data + u->pos, n);
    u->pos += n;
    return n;
}

static int seek_cb(void *userdata, curl_off_t offset, int origin)
{
    upload_ctx *u = userdata;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > u->len)
        return CURL_SEEKFUNC_CANTSEEK;
    u->pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

typedef struct {
    cf_http_response *resp;
    size_t max_body;     /* ceiling for a 2xx body */
    size_t header_bytes; /* of the current response */
    bool too_large;      /* a 2xx body went over max_body */
    bool headers_overflow;
    bool head;           /* a HEAD request: Content-Length describes no body */
} capture_ctx;

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    capture_ctx *c = userdata;
    size_t n = size * nitems;
    /* A new status line (after "100 Continue" or a redirect) starts a new header set. */
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        cf_http_headers_free(&c->resp->headers);
        c->header_bytes = 0;
        const char *sp = memchr(buf, ' ', n);
        long st = 0;
        if (sp)
            for (const char *p = sp + 1; p < buf + n && *p >= '0' && *p <= '9'; p++)
                st = st * 10 + (*p - '0');
        c->resp->status = st;
        return n;
    }
    c->header_bytes += n;
    if (c->header_bytes > HEADERS_MAX) {
        c->headers_overflow = true;
        return 0;
    }
    size_t len = n;
    while (len > 0 && (buf[len - 1] == '\r' || buf[len - 1] == '\n'))
        len--;
    if (len == 0 || !memchr(buf, ':', len))
        return n;
    char *line = cf_strndup(buf, len);
    if (!line || headers_push(&c->resp->headers, line) != 0)
        return 0;
    /* Pre-size the body buffer for a successful response of known length. */
    if (!c->head && c->resp->status >= 200 && c->resp->status < 300 && len > 15 &&
        strncasecmp(line, "content-length:", 15) == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long long cl = strtoull(line + 15, &end, 10);
        if (errno == 0 && cl <= c->max_body)
            (void)cf_buf_reserve(&c->resp->body, (size_t)cl + 1);
    }
    return n;
}

static size_t write_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    capture_ctx *c = userdata;
    size_t n = size * nitems;
    cf_buf *b = &c->resp->body;
    if (c->resp->status >= 200 && c->resp->status < 300) {
        if (b->len + n > c->max_body) {
            c->too_large = true;
            return 0; /* abort the transfer */
        }
    } else if (b->len >= ERROR_BODY_MAX) {
        return n; /* keep only the start of an error body */
    } else if (b->len + n > ERROR_BODY_MAX) {
        n = ERROR_BODY_MAX - b->len;
        if (cf_buf_append(b, buf, n) != 0)
            return 0;
        return size * nitems;
    }
    if (cf_buf_append(b, buf, n) != 0)
        return 0;
    return n;
}

/* Copy text for a message: control characters become spaces, at most ERR_TEXT_MAX bytes. */
static char *sanitize(const char *s)
{
    size_t n = strlen(s);
    if (n > ERR_TEXT_MAX)
        n = ERR_TEXT_MAX;
    char *o = cf_strndup(s, n);
    if (!o)
        return NULL;
    for (char *p = o; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    /* trim */
    while (n > 0 && o[n - 1] == ' ')
        o[--n] = '\0';
    return o;
}

/* Replace, in place, every occurrence of secret in *text by "<redacted>". Returns 0 or
 * CF_ENOMEM (then *text is freed and NULL: no text is better than a leaking one). */
static int redact_one(char **text, const char *secret)
{
    static const char mark[] = "<redacted>";
    size_t sl = strlen(secret), from = 0;
    char *hit;
    /* search on after each mark, which could itself contain a (short) secret */
    while ((hit = strstr(*text + from, secret)) != NULL) {
        size_t pre = (size_t)(hit - *text), post = strlen(hit + sl);
        from = pre + sizeof(mark) - 1;
        char *o = cf_malloc(pre + sizeof(mark) - 1 + post + 1);
        if (!o) {
            free(*text);
            *text = NULL;
            return CF_ENOMEM;
        }
        memcpy(o, *text, pre);
        memcpy(o + pre, mark, sizeof(mark) - 1);
        memcpy(o + pre + sizeof(mark) - 1, hit + sl, post + 1);
        free(*text);
        *text = o;
    }
    return 0;
}

void cf_http_redact(const cf_http *h, char **text)
{
    if (!*text)
        return;
    for (size_t i = 0; i < CF_HTTP_SECRETS_MAX && *text; i++)
        if (h->secrets[i] && redact_one(text, h->secrets[i]) != 0)
            return;
    for (char *p = *text; (p = strstr(p, "sig=")) != NULL;) {
        p += 4;
        size_t n = strcspn(p, "& \"'<>");
        if (n == 0)
            continue;
        char save = p[n];
        p[n] = '\0';
        char *val = cf_strdup(p);
        p[n] = save;
        if (!val || redact_one(text, val) != 0) {
            free(val);
            free(*text);
            *text = NULL;
            return;
        }
        free(val);
        p = *text; /* rescan: the text was rebuilt */
    }
}

/* Parse <Error><Code> and <Message> of a failure body (S3 and Azure both use this shape). */
static void parse_error_body(cf_http_response *r)
{
    free(r->err_code);
    free(r->err_message);
    r->err_code = r->err_message = NULL;
    if (!r->body.data || r->body.len == 0)
        return;
    char *t = NULL;
    const char *doc = (const char *)r->body.data;
    if (cf_xml_text(&t, doc, r->body.len, "Error/Code", 256) == 0 && t[0]) {
        r->err_code = sanitize(t);
    }
    free(t);
    t = NULL;
    if (cf_xml_text(&t, doc, r->body.len, "Error/Message", 4096) == 0 && t[0]) {
        r->err_message = sanitize(t);
    }
    free(t);
}

typedef struct {
    CURLcode cc;
    char errbuf[CURL_ERROR_SIZE];
    bool too_large;
    bool headers_overflow;
} attempt_result;

static int attempt(cf_http *h, const cf_http_request *req, cf_http_response *resp,
                   attempt_result *ar)
{
    int rc = 0;
    struct curl_slist *list = NULL;
    cf_http_headers signed_h;
    cf_http_headers_init(&signed_h);
    upload_ctx up = {.data = req->body, .len = req->body_len, .pos = 0};
    capture_ctx cap = {.resp = resp,
                       .max_body = req->max_body ? req->max_body : CF_HTTP_SMALL_MAX,
                       .head = strcmp(req->method, "HEAD") == 0};

    memset(ar, 0, sizeof(*ar));
    cf_buf_free(&resp->body);
    cf_buf_init(&resp->body, (cap.max_body > ERROR_BODY_MAX ? cap.max_body : ERROR_BODY_MAX) + 1);
    cf_http_headers_free(&resp->headers);
    resp->status = 0;
    free(resp->err_code);
    free(resp->err_message);
    resp->err_code = resp->err_message = NULL;

    if (req->sign && (rc = req->sign(&signed_h, req->sign_payload)) < 0)
        goto out;
    const cf_http_headers *sets[2] = {req->headers, &signed_h};
    for (int s = 0; s < 2; s++) {
        if (!sets[s])
            continue;
        for (size_t i = 0; i < sets[s]->n; i++) {
            struct curl_slist *nl = curl_slist_append(list, sets[s]->v[i]);
            if (!nl) {
                rc = cf_error_set(CF_ENOMEM, 0, "out of memory building an http request");
                goto out;
            }
            list = nl;
        }
    }
    /* Drop curl's default Accept header: the stores ignore it. */
    if (!(list = curl_slist_append(list, "Accept:"))) {
        rc = CF_ENOMEM;
        goto out;
    }

    CURL *c = handle_acquire(h);
    if (!c) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to create an http handle");
        goto out;
    }
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ar->errbuf);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "coffer/" COFFER_VERSION);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_LIMIT);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, h->low_speed_time);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, h->insecure ? 0L : 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->insecure ? 0L : 2L);
    if (h->ca_bundle)
        curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_bundle);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &cap);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &cap);

    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (req->has_body || req->body_len > 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, &up);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
        if (strcmp(req->method, "PUT") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    }

    double t0 = cf_mono_seconds();
    ar->cc = curl_easy_perform(c);
    long status = 0;
    if (ar->cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    handle_release(h, c);
    if (ar->cc == CURLE_OK)
        resp->status = status;
    ar->too_large = cap.too_large;
    ar->headers_overflow = cap.headers_overflow;
    if (h->debug)
        fprintf(stderr, "coffer-http: %s %s -> %ld%s%s (%.3f s)\n", req->method,
                req->log_url ? req->log_url : req->url,
                ar->cc == CURLE_OK ? status : 0L, ar->cc == CURLE_OK ? "" : " curl: ",
                ar->cc == CURLE_OK ? "" : curl_easy_strerror(ar->cc), cf_mono_seconds() - t0);
    if (ar->cc == CURLE_OK && (status < 200 || status >= 300)) {
        parse_error_body(resp);
        cf_http_redact(h, &resp->err_code);
        cf_http_redact(h, &resp->err_message);
    }
out:
    curl_slist_free_all(list);
    cf_http_headers_free(&signed_h);
    return rc;
}

/* Transport failures worth another attempt: the network, the peer, or a cut-off reply. */
static bool curl_retryable(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_SEND_FAIL_REWIND:
    case CURLE_AGAIN:
    /* Our URLs are always http or https, so this can only be curl refusing a reply that is
     * not HTTP/1.x (read as HTTP/0.9): garbage on a reused connection. */
    case CURLE_UNSUPPORTED_PROTOCOL:
        return true;
    default:
        return false;
    }
}

static bool status_retryable(const cf_http *h, const cf_http_response *r)
{
    switch (r->status) {
    case 408:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
        return true;
    default:
        break;
    }
    if (r->err_code && h->retry_codes)
        for (const char *const *c = h->retry_codes; *c; c++)
            if (strcmp(*c, r->err_code) == 0)
                return true;
    return false;
}

static const char *reason(long status)
{
    switch (status) {
    case 400: return "bad request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 408: return "request timeout";
    case 409: return "conflict";
    case 411: return "length required";
    case 412: return "precondition failed";
    case 416: return "range not satisfiable";
    case 429: return "too many requests";
    case 500: return "internal server error";
    case 501: return "not implemented";
    case 502: return "bad gateway";
    case 503: return "service unavailable";
    case 504: return "gateway timeout";
    default: return "unexpected status";
    }
}

void cf_http_describe(char *out, size_t n, const cf_http_response *r)
{
    if (r->err_code && r->err_message)
        snprintf(out, n, "%ld %s: %s", r->status, r->err_code, r->err_message);
    else if (r->err_code)
        snprintf(out, n, "%ld %s", r->status, r->err_code);
    else
        snprintf(out, n, "%ld %s", r->status, reason(r->status));
}

/* "unable to OP 'OBJECT' in 'LOCATION'" or "unable to OP 'LOCATION'". */
static void subject(char *out, size_t n, const cf_http_request *req)
{
    const char *op = req->op ? req->op : "access";
    const char *loc = req->location ? req->location : "storage";
    if (req->object)
        snprintf(out, n, "unable to %s '%s' in '%s'", op, req->object, loc);
    else
        snprintf(out, n, "unable to %s '%s'", op, loc);
}

/* Seconds from a Retry-After header (the date form is ignored), as milliseconds. */
static uint32_t retry_after_ms(const cf_http_response *r)
{
    const char *v = cf_http_response_header(r, "retry-after");
    if (!v)
        return 0;
    char *end = NULL;
    long s = strtol(v, &end, 10);
    if (end == v || s <= 0)
        return 0;
    return s > 3600 ? 3600u * 1000u : (uint32_t)s * 1000u;
}

int cf_http_perform(cf_http *h, const cf_http_request *req, cf_http_response *resp)
{
    int rc = 0;
    char subj[512], cause[600];
    attempt_result ar;
    unsigned attempts = h->policy.attempts ? h->policy.attempts : 1;

    cf_http_response_free(resp);
    cf_http_response_init(resp);
    subject(subj, sizeof(subj), req);
    cause[0] = '\0';

    for (unsigned a = 1;; a++) {
        resp->attempts = a;
        if ((rc = attempt(h, req, resp, &ar)) < 0)
            return rc;
        if (ar.cc == CURLE_OK) {
            if (!status_retryable(h, resp))
                return 0;
            cf_http_describe(cause, sizeof(cause), resp);
        } else if (ar.too_large) {
            resp->too_large = true;
            return cf_error_set(CF_EIO, 0, "%s: the response is larger than %zu bytes", subj,
                                req->max_body ? req->max_body : CF_HTTP_SMALL_MAX);
        } else if (ar.headers_overflow) {
            snprintf(cause, sizeof(cause), "response headers larger than %zu bytes",
                     HEADERS_MAX);
        } else if (curl_retryable(ar.cc)) {
            snprintf(cause, sizeof(cause), "%s", ar.errbuf[0] ? ar.errbuf : curl_easy_strerror(ar.cc));
        } else if (ar.cc == CURLE_OUT_OF_MEMORY) {
            return cf_error_set(CF_ENOMEM, 0, "%s: out of memory", subj);
        } else {
            /* TLS verification, bad URLs, unsupported protocols: retrying cannot help. */
            rc = cf_error_set(CF_EIO, 0, "%s: %s", subj,
                              ar.errbuf[0] ? ar.errbuf : curl_easy_strerror(ar.cc));
            if (ar.cc == CURLE_PEER_FAILED_VERIFICATION || ar.cc == CURLE_SSL_CACERT_BADFILE)
                cf_error_hint("set COFFER_CA_BUNDLE to a CA file that signs the server's "
                              "certificate (COFFER_INSECURE_TLS=1 disables verification)");
            return rc;
        }
        if (a >= attempts)
            break;
        uint32_t wait = cf_retry_delay_ms(&h->policy, a, ar.cc == CURLE_OK ? retry_after_ms(resp) : 0);
        if (h->debug)
            fprintf(stderr, "coffer-http: retry %u/%u of %s %s in %u ms: %s\n", a,
                    attempts - 1, req->method, req->log_url ? req->log_url : req->url, wait,
                    cause);
        cf_retry_sleep_ms(wait);
    }
    rc = cf_error_set(CF_ERETRYABLE, (int)resp->status, "%s: gave up after %u attempts: %s",
                      subj, attempts, cause);
    cf_error_hint("the server or the network failed repeatedly; check that the server is "
                  "reachable (COFFER_RETRIES sets the number of attempts)");
    return rc;
}

int cf_http_fail(const cf_http_request *req, const cf_http_response *resp)
{
    char subj[512], what[600];
    subject(subj, sizeof(subj), req);
    cf_http_describe(what, sizeof(what), resp);
    int code;
    switch (resp->status) {
    case 404:
        code = CF_ENOTFOUND;
        break;
    case 401:
    case 403:
        code = CF_ESTORAGE_AUTH;
        break;
    default:
        code = CF_EIO;
        break;
    }
    int rc = code == CF_ESTORAGE_AUTH
                 ? cf_error_set(code, (int)resp->status,
                                "%s: the server refused the credentials: %s", subj, what)
                 : cf_error_set(code, (int)resp->status, "%s: %s", subj, what);
    if (code == CF_ESTORAGE_AUTH)
        cf_error_hint("the server refused the credentials: check the access key, the secret "
                      "and the system clock");
    return rc;
}

int cf_http_encode(cf_buf *out, const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            rc = cf_buf_append(out, &c, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = cf_buf_append(out, e, 3);
        }
        if (rc != 0)
            return CF_ENOMEM;
    }
    return 0;
}

/* ---- ranged reads ---- */

void cf_http_range(char out[64], uint64_t offset, uint64_t length)
{
    if (length)
        snprintf(out, 64, "bytes=%" PRIu64 "-%" PRIu64, offset, offset + length - 1);
    else
        snprintf(out, 64, "bytes=%" PRIu64 "-", offset);
}

int cf_http_short_read(const char *name, const char *location, uint64_t offset,
                       uint64_t length)
{
    return cf_error_set(CF_ECORRUPT, 0,
                        "unable to read '%s' in '%s': the object is shorter than expected "
                        "(asked for %" PRIu64 " bytes at offset %" PRIu64 ")",
                        name, location, length, offset);
}

int cf_http_take_body(cf_http_response *resp, size_t from, size_t n, uint8_t **out,
                      size_t *out_len)
{
    if (n == 0 || !resp->body.data) {
        *out = cf_malloc(1);
        *out_len = 0;
        return *out ? 0 : CF_ENOMEM;
    }
    uint8_t *p = cf_buf_steal(&resp->body, NULL);
    if (from)
        memmove(p, p + from, n);
    *out = p;
    *out_len = n;
    return 0;
}

int cf_http_take_range(cf_http_response *resp, uint64_t offset, uint64_t length,
                       const char *name, const char *location, uint8_t **out, size_t *out_len)
{
    uint64_t end = offset + length; /* the caller checked it does not overflow */
    if (resp->status == 200) {
        /* the whole object (no range asked, or the server ignored it) */
        uint64_t size = resp->body.len;
        if (offset > size || (length && end > size))
            return cf_http_short_read(name, location, offset, length);
        return cf_http_take_body(resp, (size_t)offset, (size_t)(length ? length : size - offset),
                                 out, out_len);
    }
    if (resp->status != 206)
        return 1;
    const char *cr = cf_http_response_header(resp, "content-range");
    unsigned long long lo = 0, hi = 0, total = 0;
    bool parsed = cr && sscanf(cr, "bytes %llu-%llu/%llu", &lo, &hi, &total) == 3;
    if (parsed && offset >= total && resp->body.len == 0) {
        /* a range at or past the end answered with an empty 206 ("bytes 1000-999/1000", as
         * Azurite does) where S3 and Azure answer 416 */
        return length == 0 && offset == total ? cf_http_take_body(resp, 0, 0, out, out_len)
                                              : cf_http_short_read(name, location, offset,
                                                                   length);
    }
    if (!parsed || lo != offset || hi < lo || hi - lo + 1 != resp->body.len)
        return cf_error_set(CF_EIO, 0,
                            "unable to read '%s' in '%s': the server answered a different "
                            "range ('%s') than asked",
                            name, location, cr ? cr : "none");
    if (length && resp->body.len != length)
        return cf_http_short_read(name, location, offset, length);
    return cf_http_take_body(resp, 0, resp->body.len, out, out_len);
}
