/*
 * azure.c - the Azure Blob storage driver: objects as block blobs under a container and
 * prefix, on Azure Storage or an emulator (Azurite, path style), authorised with SharedKey or
 * a SAS token, over the shared HTTP client. Large objects go up as blocks plus a block list;
 * exclusive puts use If-None-Match: *, which Azure applies atomically.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "coffer/sys/storage.h"
#include "storage/azure/azure.h"
#include "storage/http/http.h"
#include "storage/http/listing.h"
#include "storage/http/xml.h"
#include "util/util.h"

#define MB ((uint64_t)1 << 20)
#define BLOCK_THRESHOLD_DEFAULT (64 * MB)
#define BLOCK_SIZE_DEFAULT (8 * MB)
#define BLOCK_SIZE_MIN MB
#define BLOCK_SIZE_MAX (4000 * MB) /* the Azure limit per block */
#define BLOCKS_MAX 50000u          /* the Azure limit per blob */
#define VERIFY_MAX (64 * MB)       /* largest object compared byte for byte after a retry */
#define LIST_MAX_DEFAULT 5000u     /* maxresults: the Azure maximum */
#define LIST_BODY_MAX ((size_t)32 << 20)
#define MAX_HDR 10
#define MAX_QUERY 6
#define SAS_MAX 4096

/* Error codes Azure answers that are worth another attempt whatever their status. */
static const char *const azure_retry_codes[] = {
    "ServerBusy", "OperationTimedOut", "InternalError", NULL,
};

typedef struct {
    cf_azure_location loc;
    cf_http *http;
    char *display;   /* "azure:" + the location as given (never holds credentials) */
    char *endpoint;  /* "https://host[:port]" */
    char *base_path; /* "/container" or, path style, "/account/container" */
    uint8_t *key;    /* the decoded SharedKey, wiped when freed; NULL with a SAS token */
    size_t key_len;
    char *sas;       /* the SAS token without '?', wiped when freed; NULL with a key */
    uint64_t block_threshold;
    uint64_t block_size;
    unsigned list_max;
} az;

/* ---- requests ---- */

typedef struct {
    az *a;
    const char *method;
    char *path; /* encoded, as sent and signed */
    cf_azure_pair query[MAX_QUERY]; /* decoded; values borrowed */
    size_t n_query;
    cf_azure_pair hdr[MAX_HDR]; /* sent and signed, besides x-ms-date and Authorization */
    char hdr_store[MAX_HDR][256];
    size_t n_hdr;
    uint64_t content_length;
} az_req;

/* Add a header; the value is copied. */
static void req_header(az_req *r, const char *name, const char *value)
{
    if (r->n_hdr >= MAX_HDR)
        return;
    snprintf(r->hdr_store[r->n_hdr], sizeof(r->hdr_store[0]), "%s", value);
    r->hdr[r->n_hdr] = (cf_azure_pair){name, r->hdr_store[r->n_hdr]};
    r->n_hdr++;
}

static void req_query(az_req *r, const char *name, const char *value)
{
    if (r->n_query < MAX_QUERY)
        r->query[r->n_query++] = (cf_azure_pair){name, value};
}

static void req_free(az_req *r)
{
    free(r->path);
    r->path = NULL;
}

/* A request for the container (name NULL) or for the blob called name (relative to the
 * prefix). Returns 0 or CF_ENOMEM. */
static int req_init(az_req *r, az *a, const char *method, const char *name)
{
    memset(r, 0, sizeof(*r));
    r->a = a;
    r->method = method;
    req_header(r, "x-ms-version", CF_AZURE_API_VERSION);
    cf_buf b;
    cf_buf_init(&b, 0);
    int rc = cf_buf_append_str(&b, a->base_path);
    if (!rc && name)
        rc = cf_buf_append(&b, "/", 1) ||
             cf_http_encode(&b, a->loc.prefix, strlen(a->loc.prefix), true) ||
             cf_http_encode(&b, name, strlen(name), true);
    if (!rc)
        rc = cf_buf_append(&b, "", 1);
    if (rc) {
        cf_buf_free(&b);
        return CF_ENOMEM;
    }
    r->path = (char *)cf_buf_steal(&b, NULL);
    return 0;
}

static int sign_cb(cf_http_headers *out, void *payload)
{
    az_req *r = payload;
    az *a = r->a;
    char date[30];
    cf_azure_date(date, (long long)time(NULL));
    int rc = cf_http_headers_add(out, "x-ms-date", date);
    if (rc < 0 || !a->key)
        return rc; /* a SAS token in the query authorises the request */

    cf_azure_pair h[MAX_HDR + 1];
    memcpy(h, r->hdr, r->n_hdr * sizeof(h[0]));
    h[r->n_hdr] = (cf_azure_pair){"x-ms-date", date};
    cf_azure_sign_input in = {
        .method = r->method,
        .headers = h,
        .n_headers = r->n_hdr + 1,
        .content_length = r->content_length,
        .account = a->loc.account,
        .path = r->path,
        .query = r->query,
        .n_query = r->n_query,
    };
    char *sts = NULL, sig[45];
    if ((rc = cf_azure_string_to_sign(&sts, &in)) < 0)
        return rc;
    rc = cf_azure_signature(sig, a->key, a->key_len, sts);
    free(sts);
    if (rc < 0)
        return rc;
    char auth[160];
    snprintf(auth, sizeof(auth), "SharedKey %s:%s", a->loc.account, sig);
    rc = cf_http_headers_add(out, "Authorization", auth);
    cf_wipe(auth, sizeof(auth));
    return rc;
}

/* Perform r with the given body; op and object name it in messages. */
static int req_do(az_req *r, const char *op, const char *object, const void *body, size_t len,
                  bool has_body, size_t max_body, cf_http_response *resp)
{
    az *a = r->a;
    int rc = 0;
    cf_buf url, log_url;
    cf_buf_init(&url, 0);
    cf_buf_init(&log_url, 0);
    cf_http_headers fixed;
    cf_http_headers_init(&fixed);

    r->content_length = has_body || len ? (uint64_t)len : 0;
    if (cf_buf_append_str(&url, a->endpoint) || cf_buf_append_str(&url, r->path))
        goto nomem;
    for (size_t i = 0; i < r->n_query; i++)
        if (cf_buf_append(&url, i ? "&" : "?", 1) ||
            cf_http_encode(&url, r->query[i].name, strlen(r->query[i].name), false) ||
            cf_buf_append(&url, "=", 1) ||
            cf_http_encode(&url, r->query[i].value, strlen(r->query[i].value), false))
            goto nomem;
    if (a->sas) {
        if (cf_buf_append(&log_url, url.data, url.len) ||
            cf_buf_append_str(&log_url, r->n_query ? "&<sas>" : "?<sas>") ||
            cf_buf_append(&log_url, "", 1))
            goto nomem;
        if (cf_buf_append(&url, r->n_query ? "&" : "?", 1) || cf_buf_append_str(&url, a->sas))
            goto nomem;
    }
    if (cf_buf_append(&url, "", 1))
        goto nomem;
    for (size_t i = 0; i < r->n_hdr; i++)
        if ((rc = cf_http_headers_add(&fixed, r->hdr[i].name, r->hdr[i].value)) < 0)
            goto out;
    cf_http_request req = {
        .method = r->method,
        .url = (const char *)url.data,
        .log_url = a->sas ? (const char *)log_url.data : NULL,
        .headers = &fixed,
        .sign = sign_cb,
        .sign_payload = r,
        .body = body,
        .body_len = len,
        .has_body = has_body,
        .max_body = max_body,
        .op = op,
        .object = object,
        .location = a->display,
    };
    rc = cf_http_perform(a->http, &req, resp);
    /* HEAD answers carry no body: the error code is in a header. */
    if (rc == 0 && (resp->status < 200 || resp->status >= 300) && !resp->err_code) {
        const char *ec = cf_http_response_header(resp, "x-ms-error-code");
        if (ec && *ec && strlen(ec) < 128 && !(resp->err_code = cf_strdup(ec)))
            rc = CF_ENOMEM;
    }
    goto out;
nomem:
    rc = CF_ENOMEM;
out:
    if (url.data)
        cf_wipe(url.data, url.len); /* may hold the SAS token */
    cf_buf_free(&url);
    cf_buf_free(&log_url);
    cf_http_headers_free(&fixed);
    return rc;
}

static bool code_is(const cf_http_response *resp, const char *code)
{
    return resp->err_code && strcmp(resp->err_code, code) == 0;
}

static int no_container(const az *a, int status)
{
    int rc = cf_error_set(CF_ENOREPO, status,
                          "repository '%s' does not exist: container '%s' not found", a->display,
                          a->loc.container);
    cf_error_hint("check the account and container names, or create the repository with "
                  "'coffer init'");
    return rc;
}

/* The error for a failed response: ContainerNotFound -> CF_ENOREPO, 401/403 -> CF_ESTORAGE_AUTH with
 * a hint about the credentials, the rest as cf_http_fail. */
static int az_fail(const az *a, const char *op, const char *object, const cf_http_response *resp)
{
    if (resp->status == 404 && code_is(resp, "ContainerNotFound"))
        return no_container(a, 404);
    cf_http_request req = {.op = op, .object = object, .location = a->display};
    int rc = cf_http_fail(&req, resp);
    if (rc == CF_ESTORAGE_AUTH) {
        if (a->sas)
            cf_error_hint("the server refused the SAS token in AZURE_STORAGE_SAS_TOKEN: check "
                          "that it is for account '%s', has not expired, and allows read, "
                          "write, delete, list (and create, for init)",
                          a->loc.account);
        else
            cf_error_hint("the server refused the SharedKey signature: check that "
                          "AZURE_STORAGE_KEY is a key of account '%s', and the system clock",
                          a->loc.account);
    } else if (code_is(resp, "BlobArchived") || code_is(resp, "BlobBeingRehydrated")) {
        cf_error_hint("the blob is in the Archive tier: rehydrate it (set its tier to Hot or "
                      "Cool) before reading, and do not use tier=Archive for objects that "
                      "must be read");
    } else if (code_is(resp, "ContainerBeingDeleted")) {
        cf_error_hint("the container is being deleted: wait, then try again");
    }
    return rc;
}

static int not_found(const az *a, const char *name)
{
    return cf_error_set(CF_ENOTFOUND, 404, "object '%s' not found in '%s'", name, a->display);
}

static int exists_error(const az *a, const char *name)
{
    return cf_error_set(CF_EEXISTS, 409, "object '%s' already exists in '%s'", name, a->display);
}

/* Is a 404 about the blob (and not the container, which is CF_ENOREPO)? */
static bool blob_missing(const cf_http_response *resp)
{
    return resp->status == 404 && !code_is(resp, "ContainerNotFound");
}

/* ---- stat ---- */

static int head_blob(az *a, const char *name, uint64_t *out_size, const char *op)
{
    az_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    int rc = req_init(&r, a, "HEAD", name);
    if (rc == 0)
        rc = req_do(&r, op, name, NULL, 0, false, 0, &resp);
    if (rc < 0)
        goto out;
    if (resp.status == 200) {
        const char *cl = cf_http_response_header(&resp, "content-length");
        char *end = NULL;
        errno = 0;
        unsigned long long v = cl ? strtoull(cl, &end, 10) : 0;
        if (!cl || errno || end == cl || cl[0] == '-' || (*end && *end != ' ' && *end != '\r'))
            rc = cf_error_set(CF_EIO, 0, "unable to %s '%s' in '%s': no valid Content-Length",
                              op, name, a->display);
        else
            *out_size = v;
    } else if (blob_missing(&resp)) {
        rc = not_found(a, name);
    } else {
        rc = az_fail(a, op, name, &resp);
    }
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

static int az_stat(void *self, const char *name, uint64_t *out_size)
{
    return head_blob(self, name, out_size, "stat");
}

/* ---- get ---- */

static int az_get(void *self, const char *name, uint64_t offset, uint64_t length, uint8_t **out,
                  size_t *out_len)
{
    az *a = self;
    int rc = 0;
    az_req r = {0};
    cf_http_response resp;
    cf_http_response_init(&resp);
    uint64_t end, size = 0;

    if (__builtin_add_overflow(offset, length, &end)) {
        /* Cannot be satisfied; report a missing object as such. */
        if ((rc = head_blob(a, name, &size, "read")) == 0)
            rc = cf_http_short_read(name, a->display, offset, length);
        goto out;
    }
    if ((rc = req_init(&r, a, "GET", name)) < 0)
        goto out;
    if (offset || length) {
        char range[64];
        cf_http_range(range, offset, length);
        req_header(&r, "x-ms-range", range);
    }
    rc = req_do(&r, "read", name, NULL, 0, false,
                (size_t)(length ? length : CF_STORAGE_GET_MAX), &resp);
    if (rc < 0) {
        if (resp.too_large && !length)
            rc = cf_error_set(CF_EINVAL, 0,
                              "read of '%s' in '%s' exceeds the 1 GiB limit (read it in ranges)",
                              name, a->display);
        goto out;
    }

    rc = cf_http_take_range(&resp, offset, length, name, a->display, out, out_len);
    if (rc <= 0)
        goto out; /* the data, or what was wrong with it */
    rc = 0;
    if (resp.status == 416) {
        /* InvalidRange: the offset is at or past the end. */
        if (length == 0 && (rc = head_blob(a, name, &size, "read")) == 0 && size == offset) {
            rc = cf_http_take_body(&resp, 0, 0, out, out_len); /* offset at the very end: empty */
            goto out;
        }
        if (rc == 0)
            rc = cf_http_short_read(name, a->display, offset, length);
    } else if (blob_missing(&resp)) {
        rc = not_found(a, name);
    } else {
        rc = az_fail(a, "read", name, &resp);
    }
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

/* ---- put ---- */

/* Does the stored blob hold exactly data? (After a retried exclusive write answered
 * "exists": the earlier attempt may have been ours.) */
static bool same_content(az *a, const char *name, const void *data, size_t len)
{
    cf_error_saved e;
    cf_error_save(&e);
    bool same = false;
    uint8_t *got = NULL;
    size_t got_len = 0;
    if (len <= VERIFY_MAX && az_get(a, name, 0, 0, &got, &got_len) == 0)
        same = got_len == len && (len == 0 || memcmp(got, data, len) == 0);
    free(got);
    cf_error_restore(&e);
    return same;
}

static void content_md5(char out[32], const void *data, size_t len)
{
    uint8_t md[16];
    unsigned int n = 0;
    EVP_Digest(data ? data : "", len, md, &n, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, 16);
}

/* Did the exclusive write get "exists" for a blob that another writer created? */
static bool exists_answer(const cf_http_response *resp)
{
    return (resp->status == 409 && code_is(resp, "BlobAlreadyExists")) || resp->status == 412;
}

/* Put Blob: the whole object in one request. */
static int put_single(az *a, const char *name, const void *data, size_t len, bool exclusive)
{
    az_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    int rc = req_init(&r, a, "PUT", name);
    if (rc < 0)
        goto out;
    char md5[32];
    content_md5(md5, data, len);
    req_header(&r, "x-ms-blob-type", "BlockBlob");
    req_header(&r, "Content-Type", "application/octet-stream");
    req_header(&r, "Content-MD5", md5); /* the server refuses a body that does not match */
    if (a->loc.tier)
        req_header(&r, "x-ms-access-tier", a->loc.tier);
    if (exclusive)
        req_header(&r, "If-None-Match", "*");
    if ((rc = req_do(&r, "write", name, data, len, true, 0, &resp)) < 0)
        goto out;
    if (resp.status == 201 || resp.status == 200)
        rc = 0;
    else if (exclusive && exists_answer(&resp))
        rc = resp.attempts > 1 && same_content(a, name, data, len) ? 0 : exists_error(a, name);
    else
        rc = az_fail(a, "write", name, &resp);
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

typedef struct {
    const char (*ids)[33];
    size_t n, seen;
    bool same;
} blocklist_ctx;

static int blocklist_item(const char *inner, size_t inner_len, void *payload)
{
    blocklist_ctx *c = payload;
    char *id = NULL;
    if (cf_xml_text(&id, inner, inner_len, "Name", 128) != 0) {
        c->same = false;
        return 1;
    }
    if (c->seen >= c->n || strcmp(id, c->ids[c->seen]) != 0)
        c->same = false;
    c->seen++;
    free(id);
    return c->same ? 0 : 1;
}

/* After a retried commit answered "exists": is the committed block list the one we sent?
 * Block ids carry a random nonce per upload, so equal ids mean our upload landed. */
static bool blocks_landed(az *a, const char *name, const char (*ids)[33], size_t n)
{
    cf_error_saved e;
    cf_error_save(&e);
    blocklist_ctx c = {.ids = ids, .n = n, .same = true};
    az_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    if (req_init(&r, a, "GET", name) == 0) {
        req_query(&r, "comp", "blocklist");
        req_query(&r, "blocklisttype", "committed");
        if (req_do(&r, "write", name, NULL, 0, false, LIST_BODY_MAX, &resp) == 0 &&
            resp.status == 200 && resp.body.data &&
            cf_xml_each((const char *)resp.body.data, resp.body.len,
                        "BlockList/CommittedBlocks/Block", blocklist_item, &c) >= 0)
            c.same = c.same && c.seen == n;
        else
            c.same = false;
    } else {
        c.same = false;
    }
    req_free(&r);
    cf_http_response_free(&resp);
    cf_error_restore(&e);
    return c.same;
}

static uint64_t upload_nonce(void)
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (uint64_t)cf_now_ns() ^ ((uint64_t)(uintptr_t)&v << 16);
    return v;
}

/* Put Block for each block, then Put Block List. Blocks of a failed upload stay uncommitted
 * (invisible) until Azure collects them (after a week). */
static int put_blocks(az *a, const char *name, const void *data, size_t len, bool exclusive)
{
    int rc = 0;
    az_req r = {0};
    cf_http_response resp;
    cf_http_response_init(&resp);
    cf_buf xml;
    cf_buf_init(&xml, 0);
    const uint8_t *bytes = data;

    uint64_t block = a->block_size;
    if ((len + block - 1) / block > BLOCKS_MAX)
        block = (len + BLOCKS_MAX - 1) / BLOCKS_MAX;
    size_t n = (size_t)((len + block - 1) / block);
    char(*ids)[33] = cf_calloc(n, sizeof(*ids));
    if (!ids)
        return CF_ENOMEM;
    uint64_t nonce = upload_nonce();

    for (size_t i = 0; i < n; i++) {
        size_t off = (size_t)(i * block);
        size_t bl = len - off < block ? len - off : (size_t)block;
        char md5[32];
        cf_azure_block_id(ids[i], nonce, i);
        if ((rc = req_init(&r, a, "PUT", name)) < 0)
            goto out;
        req_query(&r, "comp", "block");
        req_query(&r, "blockid", ids[i]);
        content_md5(md5, bytes + off, bl);
        req_header(&r, "Content-MD5", md5);
        if ((rc = req_do(&r, "write", name, bytes + off, bl, true, 0, &resp)) < 0)
            goto out;
        if (resp.status != 201) {
            rc = az_fail(a, "write", name, &resp);
            goto out;
        }
        req_free(&r);
    }

    if (cf_buf_append_str(&xml, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>"))
        goto nomem;
    for (size_t i = 0; i < n; i++)
        if (cf_buf_printf(&xml, "<Latest>%s</Latest>", ids[i]))
            goto nomem;
    if (cf_buf_append_str(&xml, "</BlockList>"))
        goto nomem;
    if ((rc = req_init(&r, a, "PUT", name)) < 0)
        goto out;
    req_query(&r, "comp", "blocklist");
    req_header(&r, "Content-Type", "application/xml");
    req_header(&r, "x-ms-blob-content-type", "application/octet-stream");
    if (a->loc.tier)
        req_header(&r, "x-ms-access-tier", a->loc.tier);
    if (exclusive)
        req_header(&r, "If-None-Match", "*");
    if ((rc = req_do(&r, "write", name, xml.data, xml.len, true, 0, &resp)) < 0)
        goto out;
    if (resp.status == 201 || resp.status == 200)
        rc = 0;
    else if (exclusive && exists_answer(&resp))
        rc = resp.attempts > 1 && blocks_landed(a, name, (const char(*)[33])ids, n)
                 ? 0
                 : exists_error(a, name);
    else
        rc = az_fail(a, "write", name, &resp);
    goto out;
nomem:
    rc = CF_ENOMEM;
out:
    req_free(&r);
    cf_http_response_free(&resp);
    cf_buf_free(&xml);
    free(ids);
    return rc;
}

static int az_put(void *self, const char *name, const void *data, size_t len, unsigned flags)
{
    az *a = self;
    bool exclusive = (flags & CF_PUT_EXCLUSIVE) != 0;
    if ((uint64_t)len > a->block_threshold)
        return put_blocks(a, name, data, len, exclusive);
    return put_single(a, name, data, len, exclusive);
}

/* ---- remove ---- */

static int az_remove(void *self, const char *name)
{
    az *a = self;
    az_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    int rc = req_init(&r, a, "DELETE", name);
    if (rc == 0 && (rc = req_do(&r, "remove", name, NULL, 0, false, 0, &resp)) == 0) {
        if (resp.status == 202 || resp.status == 200 || resp.status == 204)
            rc = 0;
        else if (blob_missing(&resp) && resp.attempts > 1)
            rc = 0; /* an earlier attempt, whose answer was lost, deleted it */
        else if (blob_missing(&resp))
            rc = not_found(a, name);
        else
            rc = az_fail(a, "remove", name, &resp);
    }
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

/* ---- list ---- */

/* Names that are not valid XML are listed percent-encoded with <Name Encoded="true">. */
static int decode_name(char *s)
{
    size_t k = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '%') {
            int hi = cf_hex_digit(s[i + 1]), lo = hi >= 0 ? cf_hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            s[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            s[k++] = s[i];
        }
    }
    s[k] = '\0';
    return 0;
}

static bool name_encoded(const char *inner, size_t inner_len)
{
    static const char tag[] = "<Name Encoded=\"true\"";
    size_t k = sizeof(tag) - 1;
    for (size_t i = 0; i + k <= inner_len; i++)
        if (memcmp(inner + i, tag, k) == 0)
            return true;
    return false;
}

int cf_azure_list_name(char *name, const char *inner, size_t inner_len)
{
    return name_encoded(inner, inner_len) && decode_name(name) < 0 ? -1 : 0;
}

/* One List Blobs request. */
static int list_page(az *a, const char *full_prefix, const char *marker, unsigned max_results,
                     const char *op, const char *what, cf_http_response *resp)
{
    az_req r;
    char maxr[16];
    snprintf(maxr, sizeof(maxr), "%u", max_results);
    int rc = req_init(&r, a, "GET", NULL);
    if (rc == 0) {
        req_query(&r, "restype", "container");
        req_query(&r, "comp", "list");
        if (*full_prefix)
            req_query(&r, "prefix", full_prefix);
        if (marker)
            req_query(&r, "marker", marker);
        req_query(&r, "maxresults", maxr);
        rc = req_do(&r, op, what, NULL, 0, false, LIST_BODY_MAX, resp);
    }
    req_free(&r);
    return rc;
}

static int az_list(void *self, const char *prefix, cf_storage_list_cb cb, void *payload)
{
    az *a = self;
    int rc = 0;
    char *full = cf_asprintf("%s%s", a->loc.prefix, prefix);
    char *marker = NULL;
    cf_list_page page = {.prefix = a->loc.prefix,
                         .name_path = "Name",
                         .size_path = "Properties/Content-Length",
                         .fix_name = cf_azure_list_name};
    cf_http_response resp;
    cf_http_response_init(&resp);
    if (!full)
        return CF_ENOMEM;
    const char *what = *prefix ? prefix : NULL;

    for (;;) {
        if ((rc = list_page(a, full, marker, a->list_max, "list", what, &resp)) < 0)
            goto out;
        if (resp.status != 200) {
            rc = az_fail(a, "list", what, &resp);
            goto out;
        }
        const char *doc = (const char *)resp.body.data;
        size_t dl = resp.body.len;
        rc = doc ? cf_list_page_parse(&page, doc, dl, "EnumerationResults/Blobs/Blob") : 0;
        if (rc != 0) {
            rc = rc == CF_ENOMEM
                     ? CF_ENOMEM
                     : cf_error_set(CF_EIO, 0,
                                    "unable to list '%s' in '%s': malformed List Blobs answer",
                                    prefix, a->display);
            goto out;
        }
        /* The whole page is parsed before any callback runs, so callbacks may remove. */
        if ((rc = cf_list_page_emit(&page, cb, payload)) != 0)
            goto out;

        char *next = NULL;
        int nrc = doc ? cf_xml_text(&next, doc, dl, "EnumerationResults/NextMarker", 4096)
                      : CF_ENOTFOUND;
        if (nrc == CF_ENOMEM) {
            rc = CF_ENOMEM;
            goto out;
        }
        if (nrc != 0 || !*next) {
            free(next);
            break; /* the last page */
        }
        if (marker && strcmp(marker, next) == 0) {
            free(next);
            rc = cf_error_set(CF_EIO, 0,
                              "unable to list '%s' in '%s': the server answered the same "
                              "NextMarker twice",
                              prefix, a->display);
            goto out;
        }
        free(marker);
        marker = next;
    }
out:
    cf_list_page_free(&page);
    cf_http_response_free(&resp);
    free(full);
    free(marker);
    return rc;
}

/* ---- open / close ---- */

static void az_close(void *self)
{
    az *a = self;
    if (!a)
        return;
    cf_http_free(a->http);
    cf_azure_location_free(&a->loc);
    if (a->key) {
        cf_wipe(a->key, a->key_len);
        free(a->key);
    }
    if (a->sas) {
        cf_wipe(a->sas, strlen(a->sas));
        free(a->sas);
    }
    free(a->display);
    free(a->endpoint);
    free(a->base_path);
    free(a);
}

static int create_container(az *a)
{
    az_req r;
    cf_http_response resp;
    cf_http_response_init(&resp);
    int rc = req_init(&r, a, "PUT", NULL);
    if (rc < 0)
        goto out;
    req_query(&r, "restype", "container");
    if ((rc = req_do(&r, "create", NULL, NULL, 0, true, 0, &resp)) < 0)
        goto out;
    if (resp.status == 201 || (resp.status == 409 && code_is(&resp, "ContainerAlreadyExists")))
        rc = 0;
    else
        rc = az_fail(a, "create", NULL, &resp);
out:
    req_free(&r);
    cf_http_response_free(&resp);
    return rc;
}

/* Check the container (and prefix) exist with one List Blobs request, which also proves the
 * credentials; create the container when asked. */
static int probe(az *a, unsigned flags)
{
    int rc = 0;
    cf_http_response resp;
    cf_http_response_init(&resp);
    if ((rc = list_page(a, a->loc.prefix, NULL, 1, "open", NULL, &resp)) < 0)
        goto out;
    if (resp.status == 200) {
        if (!(flags & CF_STORAGE_CREATE) && *a->loc.prefix) {
            /* A prefix exists only while something is stored under it. */
            char *blob = NULL;
            bool empty = !resp.body.data ||
                         cf_xml_text(&blob, (const char *)resp.body.data, resp.body.len,
                                     "EnumerationResults/Blobs/Blob", 16384) == CF_ENOTFOUND;
            free(blob);
            if (empty) {
                rc = cf_error_set(CF_ENOREPO, 0, "repository '%s' does not exist", a->display);
                cf_error_hint("nothing is stored under prefix '%s' of container '%s': check "
                              "the url, or create a repository there first",
                              a->loc.prefix, a->loc.container);
            }
        }
        goto out;
    }
    if (resp.status == 404 && code_is(&resp, "ContainerNotFound")) {
        rc = flags & CF_STORAGE_CREATE ? create_container(a) : no_container(a, 404);
        goto out;
    }
    rc = az_fail(a, "open", NULL, &resp);
    if (resp.status == 404 && code_is(&resp, "ResourceNotFound"))
        cf_error_hint("check the storage account name '%s'", a->loc.account);
out:
    cf_http_response_free(&resp);
    return rc;
}

static int load_credentials(az *a)
{
    const char *acct = getenv("AZURE_STORAGE_ACCOUNT");
    const char *key = getenv("AZURE_STORAGE_KEY");
    const char *sas = getenv("AZURE_STORAGE_SAS_TOKEN");
    if (acct && *acct && strcmp(acct, a->loc.account) != 0)
        return cf_error_set(CF_EINVAL, 0,
                            "AZURE_STORAGE_ACCOUNT ('%.64s') is not the account of the "
                            "repository url ('%s')",
                            acct, a->loc.account);
    if (key && *key) {
        cf_buf b;
        cf_buf_init(&b, 0);
        size_t kl = strlen(key);
        int rc = kl > 1024 ? CF_EINVAL : cf_base64_decode(&b, key);
        if (rc < 0 || b.len == 0) {
            if (b.data)
                cf_wipe(b.data, b.cap);
            cf_buf_free(&b);
            if (rc == CF_ENOMEM)
                return rc;
            rc = cf_error_set(CF_ESTORAGE_AUTH, 0, "AZURE_STORAGE_KEY is not a valid storage account "
                                           "key (base64)");
            cf_error_hint("copy key1 or key2 from the storage account's access keys");
            return rc;
        }
        a->key_len = b.len;
        a->key = cf_buf_steal(&b, NULL);
        return 0;
    }
    if (sas && *sas) {
        if (*sas == '?')
            sas++;
        size_t n = strlen(sas);
        bool ok = n > 0 && n <= SAS_MAX && strstr(sas, "sig=") != NULL;
        for (size_t i = 0; ok && i < n; i++) {
            char c = sas[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 strchr("%&=-._~:+/,", c) != NULL;
        }
        if (!ok) {
            int rc = cf_error_set(CF_ESTORAGE_AUTH, 0, "AZURE_STORAGE_SAS_TOKEN is not a SAS token "
                                               "(a query string with 'sig=')");
            cf_error_hint("give the token as generated, 'sv=...&sig=...', with or without the "
                          "leading '?'");
            return rc;
        }
        a->sas = cf_strdup(sas);
        return a->sas ? 0 : CF_ENOMEM;
    }
    int rc = cf_error_set(CF_ESTORAGE_AUTH, 0, "no azure credentials for '%s'", a->display);
    cf_error_hint("set AZURE_STORAGE_KEY (a key of account '%s', with AZURE_STORAGE_ACCOUNT) or "
                  "AZURE_STORAGE_SAS_TOKEN",
                  a->loc.account);
    return rc;
}

int cf_storage_azure_new(void **out_self, const char *location, unsigned flags)
{
    int rc = 0;
    az *a = NULL;
    if (!out_self || !location)
        return cf_error_set(CF_EINVAL, 0, "azure storage: a location is required");
    *out_self = NULL;
    if (!(a = cf_calloc(1, sizeof(*a))))
        return CF_ENOMEM;
    if ((rc = cf_azure_location_parse(&a->loc, location)) < 0)
        goto out;
    if (!(a->display = cf_asprintf("azure:%s", location)) ||
        !(a->endpoint = cf_asprintf("%s://%s", a->loc.scheme, a->loc.host)) ||
        !(a->base_path = a->loc.path_style
                             ? cf_asprintf("/%s/%s", a->loc.account, a->loc.container)
                             : cf_asprintf("/%s", a->loc.container))) {
        rc = CF_ENOMEM;
        goto out;
    }
    uint64_t list_max;
    if ((rc = cf_storage_env_size(&a->block_threshold, "COFFER_AZURE_BLOCK_THRESHOLD",
                                  BLOCK_THRESHOLD_DEFAULT, BLOCK_SIZE_MIN, CF_STORAGE_GET_MAX)) < 0 ||
        (rc = cf_storage_env_size(&a->block_size, "COFFER_AZURE_BLOCK_SIZE", BLOCK_SIZE_DEFAULT,
                                  BLOCK_SIZE_MIN, BLOCK_SIZE_MAX)) < 0)
        goto out;
    const char *lm = getenv("COFFER_AZURE_LIST_MAX");
    list_max = LIST_MAX_DEFAULT;
    if (lm && *lm) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(lm, &end, 10);
        if (errno || !end || *end || v < 1 || v > LIST_MAX_DEFAULT) {
            rc = cf_error_set(CF_EINVAL, 0, "COFFER_AZURE_LIST_MAX='%.32s' is not a number "
                                            "from 1 to 5000", lm);
            goto out;
        }
        list_max = v;
    }
    a->list_max = (unsigned)list_max;
    if ((rc = load_credentials(a)) < 0)
        goto out;
    cf_http_config hc = {.retry_codes = azure_retry_codes,
                         .secrets = {a->sas, getenv("AZURE_STORAGE_KEY")}};
    if ((rc = cf_http_new(&a->http, &hc)) < 0)
        goto out;
    if ((rc = probe(a, flags)) < 0)
        goto out;
    *out_self = a;
    a = NULL;
out:
    az_close(a);
    return rc;
}

const cf_storage_ops cf_storage_azure_ops = {
    .version = CF_STORAGE_OPS_VERSION,
    .scheme = "azure",
    .features = CF_STORAGE_FEAT_EXCLUSIVE_PUT | CF_STORAGE_FEAT_STORAGE_CLASS,
    .put = az_put,
    .get = az_get,
    .stat = az_stat,
    .list = az_list,
    .remove = az_remove,
    .space = NULL,
    .close = az_close,
};
