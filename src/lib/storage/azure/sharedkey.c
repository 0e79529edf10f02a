/*
 * sharedkey.c - Azure Storage SharedKey signing: the string to sign (standard headers,
 * canonicalized x-ms-* headers, canonicalized resource), its HMAC-SHA256, the x-ms-date
 * format, and block ids.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "storage/azure/azure.h"
#include "util/util.h"

/* The standard headers of the string to sign, in order (Content-Length is handled apart). */
static const char *const std_headers[] = {
    "content-encoding", "content-language", NULL /* content-length */, "content-md5",
    "content-type",     "date",             "if-modified-since",      "if-match",
    "if-none-match",    "if-unmodified-since", "range",
};

typedef struct {
    char *name;  /* lower-case */
    char *value; /* trimmed, white space folded */
} norm_pair;

static int cmp_pair(const void *a, const void *b)
{
    const norm_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static char *lower_dup(const char *s)
{
    char *o = cf_strdup(s);
    if (o)
        for (char *p = o; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return o;
}

/* Trim, and fold runs of spaces and tabs into one space. */
static char *fold_dup(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *o = cf_malloc(strlen(s) + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    bool space = false;
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '\t') {
            space = true;
            continue;
        }
        if (space && k)
            o[k++] = ' ';
        space = false;
        o[k++] = *p;
    }
    o[k] = '\0';
    return o;
}

static void pairs_free(norm_pair *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
}

static const char *find_header(const cf_azure_sign_input *in, const char *name)
{
    for (size_t i = 0; i < in->n_headers; i++)
        if (strcasecmp(in->headers[i].name, name) == 0)
            return in->headers[i].value;
    return NULL;
}

int cf_azure_string_to_sign(char **out, const cf_azure_sign_input *in)
{
    int rc = 0;
    cf_buf b;
    cf_buf_init(&b, 0);
    norm_pair *h = NULL, *q = NULL;
    size_t nh = 0, nq = 0;
    *out = NULL;

    for (size_t i = 0; i < in->n_headers; i++)
        if (strpbrk(in->headers[i].value, "\r\n") || strpbrk(in->headers[i].name, "\r\n:"))
            return cf_error_set(CF_EINVAL, 0, "invalid http header '%s'", in->headers[i].name);

    /* verb and the standard headers */
    if (cf_buf_append_str(&b, in->method) || cf_buf_append(&b, "\n", 1))
        goto nomem;
    for (size_t i = 0; i < sizeof(std_headers) / sizeof(std_headers[0]); i++) {
        if (!std_headers[i]) {
            if (in->content_length &&
                cf_buf_printf(&b, "%llu", (unsigned long long)in->content_length))
                goto nomem;
        } else {
            const char *v = find_header(in, std_headers[i]);
            if (v && cf_buf_append_str(&b, v))
                goto nomem;
        }
        if (cf_buf_append(&b, "\n", 1))
            goto nomem;
    }

    /* canonicalized headers */
    if (in->n_headers && !(h = cf_calloc(in->n_headers, sizeof(*h))))
        goto nomem;
    for (size_t i = 0; i < in->n_headers; i++) {
        if (strncasecmp(in->headers[i].name, "x-ms-", 5) != 0)
            continue;
        h[nh].name = lower_dup(in->headers[i].name);
        h[nh].value = fold_dup(in->headers[i].value);
        nh++;
        if (!h[nh - 1].name || !h[nh - 1].value)
            goto nomem;
    }
    if (nh > 1)
        qsort(h, nh, sizeof(*h), cmp_pair);
    for (size_t i = 0; i < nh; i++)
        if (cf_buf_printf(&b, "%s:%s\n", h[i].name, h[i].value))
            goto nomem;

    /* canonicalized resource */
    if (cf_buf_printf(&b, "/%s%s", in->account, in->path))
        goto nomem;
    if (in->n_query && !(q = cf_calloc(in->n_query, sizeof(*q))))
        goto nomem;
    for (size_t i = 0; i < in->n_query; i++) {
        q[nq].name = lower_dup(in->query[i].name);
        q[nq].value = cf_strdup(in->query[i].value);
        nq++;
        if (!q[nq - 1].name || !q[nq - 1].value)
            goto nomem;
    }
    if (nq > 1)
        qsort(q, nq, sizeof(*q), cmp_pair);
    for (size_t i = 0; i < nq; i++) {
        bool same = i > 0 && strcmp(q[i].name, q[i - 1].name) == 0;
        if (same ? cf_buf_printf(&b, ",%s", q[i].value)
                 : cf_buf_printf(&b, "\n%s:%s", q[i].name, q[i].value))
            goto nomem;
    }
    if (cf_buf_append(&b, "", 1)) /* NUL */
        goto nomem;
    *out = (char *)cf_buf_steal(&b, NULL);
    goto out;
nomem:
    rc = CF_ENOMEM;
out:
    cf_buf_free(&b);
    pairs_free(h, nh);
    pairs_free(q, nq);
    return rc;
}

int cf_azure_signature(char out[45], const uint8_t *key, size_t key_len, const char *sts)
{
    uint8_t md[32];
    unsigned int n = 0;
    out[0] = '\0';
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)sts, strlen(sts), md, &n) ||
        n != 32)
        return cf_error_set(CF_EIO, 0, "hmac-sha256 failed");
    EVP_EncodeBlock((unsigned char *)out, md, 32);
    cf_wipe(md, sizeof(md));
    return 0;
}

void cf_azure_date(char out[30], long long t)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char buf[64];
    snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
             tm.tm_mday % 100, months[tm.tm_mon % 12], (tm.tm_year + 1900) % 10000,
             tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
    memcpy(out, buf, 29);
    out[29] = '\0';
}

void cf_azure_block_id(char out[33], uint64_t nonce, size_t index)
{
    char raw[25];
    snprintf(raw, sizeof(raw), "%016llx-%07zu", (unsigned long long)nonce, index % 10000000u);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)raw, 24);
}
