/*
 * sigv4.c - AWS Signature Version 4: canonical request, string to sign, signing key and the
 * Authorization header value.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "storage/http/http.h"
#include "storage/s3/sigv4.h"

#define ALGORITHM "AWS4-HMAC-SHA256"

void cf_sigv4_sha256_hex(char out[65], const void *data, size_t len)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    cf_hex_encode(out, md, sizeof(md));
}

void cf_sigv4_amz_date(char out[17], long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static int hmac(uint8_t out[32], const void *key, size_t key_len, const void *data, size_t len)
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &n) || n != 32)
        return cf_error_set(CF_EIO, 0, "hmac-sha256 failed");
    return 0;
}

/* ---- query ---- */

typedef struct {
    char *name; /* encoded */
    char *value;
} enc_pair;

static int cmp_enc_pair(const void *a, const void *b)
{
    const enc_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static char *encode_str(const char *s)
{
    cf_buf b;
    cf_buf_init(&b, 0);
    if (cf_http_encode(&b, s, strlen(s), false) != 0) {
        cf_buf_free(&b);
        return NULL;
    }
    return b.data ? (char *)cf_buf_steal(&b, NULL) : cf_strdup("");
}

int cf_sigv4_canonical_query(cf_buf *out, const cf_sigv4_pair *query, size_t n)
{
    int rc = 0;
    if (n == 0)
        return 0;
    enc_pair *v = cf_calloc(n, sizeof(*v));
    if (!v)
        return CF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i].name = encode_str(query[i].name);
        v[i].value = encode_str(query[i].value ? query[i].value : "");
        if (!v[i].name || !v[i].value) {
            rc = CF_ENOMEM;
            goto out;
        }
    }
    qsort(v, n, sizeof(*v), cmp_enc_pair);
    for (size_t i = 0; i < n; i++) {
        if ((i && cf_buf_append(out, "&", 1)) || cf_buf_append_str(out, v[i].name) ||
            cf_buf_append(out, "=", 1) || cf_buf_append_str(out, v[i].value)) {
            rc = CF_ENOMEM;
            goto out;
        }
    }
out:
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
    return rc;
}

/* ---- headers ---- */

typedef struct {
    char *name; /* lower case */
    char *value; /* trimmed, spaces collapsed */
    size_t order;
} hdr;

static int cmp_hdr(const void *a, const void *b)
{
    const hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static char *lower(const char *s)
{
    char *o = cf_strdup(s);
    if (o)
        for (char *p = o; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return o;
}

/* Trim leading and trailing whitespace and collapse inner runs of spaces to one. */
static char *trim_value(const char *s)
{
    size_t n = strlen(s);
    char *o = cf_malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ' ' || c == '\t') {
            space = k > 0;
            continue;
        }
        if (space)
            o[k++] = ' ';
        space = false;
        o[k++] = c;
    }
    o[k] = '\0';
    return o;
}

void cf_sigv4_output_free(cf_sigv4_output *out)
{
    free(out->canonical_request);
    free(out->string_to_sign);
    free(out->signed_headers);
    free(out->authorization);
    memset(out, 0, sizeof(*out));
}

int cf_sigv4_sign(cf_sigv4_output *out, const cf_sigv4_input *in)
{
    int rc = 0;
    hdr *h = NULL;
    cf_buf creq, sh, sts;
    cf_buf_init(&creq, 0);
    cf_buf_init(&sh, 0);
    cf_buf_init(&sts, 0);
    uint8_t k[32], k2[32];
    char *secret = NULL;
    size_t secret_len = 0;

    memset(out, 0, sizeof(*out));
    if (!in->method || !in->path || !in->payload_hash || !in->amz_date || !in->region ||
        !in->service || !in->access_key || !in->secret_key || strlen(in->amz_date) != 16) {
        rc = cf_error_set(CF_EINVAL, 0, "sigv4: incomplete request");
        goto out;
    }

    /* 1. canonical request */
    if (cf_buf_printf(&creq, "%s\n%s\n", in->method, in->path) ||
        cf_sigv4_canonical_query(&creq, in->query, in->n_query) || cf_buf_append(&creq, "\n", 1)) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (in->n_headers) {
        h = cf_calloc(in->n_headers, sizeof(*h));
        if (!h) {
            rc = CF_ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < in->n_headers; i++) {
        h[i].name = lower(in->headers[i].name);
        h[i].value = trim_value(in->headers[i].value ? in->headers[i].value : "");
        h[i].order = i;
        if (!h[i].name || !h[i].value) {
            rc = CF_ENOMEM;
            goto out;
        }
    }
    if (in->n_headers)
        qsort(h, in->n_headers, sizeof(*h), cmp_hdr);
    for (size_t i = 0; i < in->n_headers; i++) {
        bool same_as_prev = i > 0 && strcmp(h[i].name, h[i - 1].name) == 0;
        int e = 0;
        if (same_as_prev) {
            /* replace the previous line's newline with ",value\n" */
            creq.len--;
            e = cf_buf_printf(&creq, ",%s\n", h[i].value);
        } else {
            e = cf_buf_printf(&creq, "%s:%s\n", h[i].name, h[i].value);
            if (!e && sh.len)
                e = cf_buf_append(&sh, ";", 1);
            if (!e)
                e = cf_buf_append_str(&sh, h[i].name);
        }
        if (e) {
            rc = CF_ENOMEM;
            goto out;
        }
    }
    if (cf_buf_printf(&creq, "\n%s\n%s", sh.data ? (const char *)sh.data : "", in->payload_hash)) {
        rc = CF_ENOMEM;
        goto out;
    }

    /* 2. string to sign */
    char creq_hash[65];
    cf_sigv4_sha256_hex(creq_hash, creq.data, creq.len);
    char date8[9];
    memcpy(date8, in->amz_date, 8);
    date8[8] = '\0';
    if (cf_buf_printf(&sts, ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", in->amz_date, date8,
                      in->region, in->service, creq_hash)) {
        rc = CF_ENOMEM;
        goto out;
    }

    /* 3. signing key and signature */
    secret_len = 4 + strlen(in->secret_key);
    secret = cf_malloc(secret_len + 1);
    if (!secret) {
        rc = CF_ENOMEM;
        goto out;
    }
    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, in->secret_key, secret_len - 4 + 1);
    if ((rc = hmac(k, secret, secret_len, date8, 8)) ||
        (rc = hmac(k2, k, 32, in->region, strlen(in->region))) ||
        (rc = hmac(k, k2, 32, in->service, strlen(in->service))) ||
        (rc = hmac(k2, k, 32, "aws4_request", 12)))
        goto out;
    uint8_t sig[32];
    if ((rc = hmac(sig, k2, 32, sts.data, sts.len)))
        goto out;
    cf_hex_encode(out->signature, sig, sizeof(sig));

    out->authorization =
        cf_asprintf(ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                    "Signature=%s",
                    in->access_key, date8, in->region, in->service,
                    sh.data ? (const char *)sh.data : "", out->signature);
    out->signed_headers = sh.data ? (char *)cf_buf_steal(&sh, NULL) : cf_strdup("");
    out->canonical_request = (char *)cf_buf_steal(&creq, NULL);
    out->string_to_sign = (char *)cf_buf_steal(&sts, NULL);
    if (!out->authorization || !out->signed_headers) {
        rc = CF_ENOMEM;
        goto out;
    }
out:
    if (rc)
        cf_sigv4_output_free(out);
    if (h) {
        for (size_t i = 0; i < in->n_headers; i++) {
            free(h[i].name);
            free(h[i].value);
        }
        free(h);
    }
    if (secret) {
        cf_wipe(secret, secret_len);
        free(secret);
    }
    cf_wipe(k, sizeof(k));
    cf_wipe(k2, sizeof(k2));
    cf_buf_free(&creq);
    cf_buf_free(&sh);
    cf_buf_free(&sts);
    return rc;
}
