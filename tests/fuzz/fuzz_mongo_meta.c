/*
 * fuzz_mongo_meta.c - what the MongoDB source parses or rewrites: the "mongodb" object of
 * snapshot documents (which must survive a write and re-read), URIs (redaction is idempotent
 * and changes nothing in a URI without secrets), the --config YAML quoting (decodes back to
 * the input) and the tools' --version text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/mongo/mongo_src.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_info(const cf_mongo_info *a, const cf_mongo_info *b)
{
    if (strcmp(a->tool_version, b->tool_version) || strcmp(a->uri, b->uri) ||
        strcmp(a->host, b->host) || strcmp(a->port, b->port) ||
        strcmp(a->username, b->username) || strcmp(a->auth_db, b->auth_db) ||
        strcmp(a->db, b->db) || strcmp(a->collection, b->collection) ||
        a->oplog != b->oplog || a->time_ns != b->time_ns)
        abort();
}

static void info(const char *s)
{
    cf_mongo_info i, j;
    int rc = cf_mongo__info_from_json(&i, s);
    if (rc != 0 && rc != CF_ENOTFOUND)
        abort();
    if (rc != 0)
        return;
    char *text = cf_mongo__info_to_json(&i);
    if (!text) {
        /* jansson refuses strings that are not UTF-8; only then may writing fail */
        return;
    }
    if (cf_mongo__info_from_json(&j, text) != 0)
        abort();
    same_info(&i, &j);
    free(text);
}

static void uri(const char *s)
{
    char a[1024], b[1024];
    bool r = cf_mongo_uri_redact(a, sizeof(a), s);
    if (strlen(s) >= sizeof(a))
        return; /* truncated */
    if (!r && strcmp(a, s) != 0)
        abort();
    cf_mongo_uri_redact(b, sizeof(b), a);
    if (strcmp(a, b) != 0)
        abort();
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void yaml(const char *s)
{
    cf_buf b;
    cf_buf_init(&b, 0);
    if (cf_mongo__yaml_quote(&b, s) != 0)
        abort();
    /* decode the double-quoted scalar */
    const char *q = (const char *)b.data;
    size_t n = b.len, k = 0;
    char *out = malloc(n + 1);
    if (!out)
        abort();
    if (n < 2 || q[0] != '"' || q[n - 1] != '"')
        abort();
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)q[i];
        if (c < 0x20 || c == 0x7f || c == '"')
            abort();
        if (c != '\\') {
            out[k++] = (char)c;
            continue;
        }
        if (i + 2 >= n)
            abort();
        char e = q[++i];
        if (e == '"' || e == '\\') {
            out[k++] = e;
        } else if (e == 'x' && i + 3 < n && hexval(q[i + 1]) >= 0 && hexval(q[i + 2]) >= 0) {
            out[k++] = (char)(hexval(q[i + 1]) << 4 | hexval(q[i + 2]));
            i += 2;
        } else {
            abort();
        }
    }
    out[k] = '\0';
    if (strcmp(out, s) != 0)
        abort();
    free(out);
    cf_buf_free(&b);
}

static void version(const char *s)
{
    char v[128];
    cf_mongo__version_from_text(v, sizeof(v), s);
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    info(s);
    uri(s);
    yaml(s);
    version(s);
    cf_error_clear();
    free(s);
    return 0;
}
