/*
 * url.c - parsing of S3 repository locations: endpoint, bucket, prefix, and the per-object
 * options given as a query string.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "storage/s3/s3.h"
#include "util/util.h"

#define USAGE_HINT                                                                             \
    "use 's3:BUCKET[/PREFIX]' (AWS) or 's3:https://HOST[:PORT]/BUCKET[/PREFIX]', optionally "  \
    "followed by '?option=value&...'"

void cf_s3_location_free(cf_s3_location *l)
{
    if (!l)
        return;
    free(l->scheme);
    free(l->host);
    free(l->bucket);
    free(l->prefix);
    free(l->region);
    free(l->storage_class);
    free(l->sse);
    free(l->sse_kms_key_id);
    free(l->object_lock);
    free(l->lock_exclude);
    memset(l, 0, sizeof(*l));
}

static int bad(const char *what)
{
    int rc = cf_error_set(CF_EINVAL, 0, "invalid s3 repository url: %s", what);
    cf_error_hint(USAGE_HINT);
    return rc;
}

static bool all_chars(const char *s, size_t n, const char *extra)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (c && strchr(extra, c))
            continue;
        return false;
    }
    return true;
}

static int check_bucket(const char *b, bool aws)
{
    size_t n = strlen(b);
    if (aws) {
        /* AWS rules: 3-63 characters of a-z 0-9 . -, starting and ending with a letter or
         * digit. */
        if (n < 3 || n > 63)
            return bad("an AWS bucket name has 3 to 63 characters");
        for (size_t i = 0; i < n; i++)
            if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '.' ||
                  b[i] == '-'))
                return bad("an AWS bucket name has only lower-case letters, digits, '.' and '-'");
        if (b[0] == '.' || b[0] == '-' || b[n - 1] == '.' || b[n - 1] == '-')
            return bad("an AWS bucket name starts and ends with a letter or digit");
        return 0;
    }
    if (n == 0)
        return bad("the bucket name is missing");
    if (n > 255 || !all_chars(b, n, "._-"))
        return bad("a bucket name has at most 255 letters, digits, '.', '_' and '-'");
    return 0;
}

/* Normalise the prefix: no leading or trailing '/', valid components, then one '/'. */
static int make_prefix(char **out, const char *p, size_t n)
{
    while (n > 0 && p[0] == '/') {
        p++;
        n--;
    }
    while (n > 0 && p[n - 1] == '/')
        n--;
    if (n == 0) {
        *out = cf_strdup("");
        return *out ? 0 : CF_ENOMEM;
    }
    if (n > 512)
        return bad("the prefix is longer than 512 bytes");
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t cl = j - i;
        if (cl == 0)
            return bad("the prefix contains '//'");
        if ((cl == 1 && p[i] == '.') || (cl == 2 && p[i] == '.' && p[i + 1] == '.'))
            return bad("the prefix contains a '.' or '..' component");
        if (cl >= 5 && memcmp(p + i, ".tmp-", 5) == 0)
            return bad("the prefix has a component starting with '.tmp-' (reserved)");
        for (size_t k = i; k < j; k++)
            if ((unsigned char)p[k] < 0x20 || p[k] == 0x7f || p[k] == '\\')
                return bad("the prefix contains a control character or '\\'");
        i = j + 1;
    }
    *out = cf_malloc(n + 2);
    if (!*out)
        return CF_ENOMEM;
    memcpy(*out, p, n);
    (*out)[n] = '/';
    (*out)[n + 1] = '\0';
    return 0;
}

/* Percent-decode an option value; only characters safe in header values survive. */
static int decode_value(char **out, const char *s, size_t n)
{
    char *o = cf_malloc(n + 1);
    if (!o)
        return CF_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 1 < n ? cf_hex_digit(s[i + 1]) : -1;
            int lo = i + 2 < n ? cf_hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(o);
                return bad("an option value has a malformed %-escape");
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        o[k++] = c;
    }
    o[k] = '\0';
    if (!all_chars(o, k, "_.:/-")) {
        free(o);
        return bad("an option value may only contain letters, digits, '_', '.', ':', '/' and "
                   "'-'");
    }
    *out = o;
    return 0;
}

static int set_opt(char **field, const char *name, const char *v, size_t n)
{
    if (*field) {
        char msg[96];
        snprintf(msg, sizeof(msg), "option '%s' is given twice", name);
        return bad(msg);
    }
    return decode_value(field, v, n);
}

static int parse_cond(cf_s3_cond *out, const char *v)
{
    if (strcasecmp(v, "auto") == 0)
        *out = CF_S3_COND_AUTO;
    else if (strcasecmp(v, "yes") == 0 || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0)
        *out = CF_S3_COND_YES;
    else if (strcasecmp(v, "no") == 0 || strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0)
        *out = CF_S3_COND_NO;
    else
        return bad("conditional_put is 'auto', 'yes' or 'no'");
    return 0;
}

static int parse_options(cf_s3_location *l, const char *q)
{
    int rc = 0;
    char *retain = NULL, *cond = NULL;
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (n == 0) {
            p += 1;
            continue;
        }
        if (!eq) {
            rc = bad("options are written 'name=value'");
            goto out;
        }
        size_t kl = (size_t)(eq - p);
        const char *v = eq + 1;
        size_t vl = n - kl - 1;
#define OPT(str, field)                                                                        \
    if (kl == strlen(str) && memcmp(p, str, kl) == 0) {                                        \
        if ((rc = set_opt(&(field), str, v, vl)) < 0)                                          \
            goto out;                                                                          \
    } else
        OPT("region", l->region)
        OPT("storage_class", l->storage_class)
        OPT("sse", l->sse)
        OPT("sse_kms_key_id", l->sse_kms_key_id)
        OPT("object_lock", l->object_lock)
        OPT("object_lock_exclude", l->lock_exclude)
        OPT("retain_days", retain)
        OPT("conditional_put", cond)
        {
            rc = bad("unknown option (known: region, storage_class, sse, sse_kms_key_id, "
                     "object_lock, retain_days, object_lock_exclude, conditional_put)");
            goto out;
        }
#undef OPT
        p += n;
        if (*p == '&')
            p++;
    }

    if (l->region && (!*l->region || !all_chars(l->region, strlen(l->region), "-")))
        rc = bad("region has only letters, digits and '-'");
    else if (l->storage_class && (!*l->storage_class ||
                                  !all_chars(l->storage_class, strlen(l->storage_class), "_")))
        rc = bad("storage_class is a name such as STANDARD_IA");
    else if (l->sse && strcmp(l->sse, "AES256") != 0 && strcmp(l->sse, "aws:kms") != 0 &&
             strcmp(l->sse, "aws:kms:dsse") != 0)
        rc = bad("sse is 'AES256', 'aws:kms' or 'aws:kms:dsse'");
    else if (l->sse_kms_key_id && strlen(l->sse_kms_key_id) > 200)
        rc = bad("sse_kms_key_id is longer than 200 characters");
    else if (l->sse_kms_key_id && (!l->sse || strncmp(l->sse, "aws:kms", 7) != 0))
        rc = bad("sse_kms_key_id needs sse=aws:kms");
    else if (l->object_lock && strcmp(l->object_lock, "COMPLIANCE") != 0 &&
             strcmp(l->object_lock, "GOVERNANCE") != 0)
        rc = bad("object_lock is 'COMPLIANCE' or 'GOVERNANCE'");
    else if (l->object_lock && !retain)
        rc = bad("object_lock needs retain_days=N");
    else if (retain && !l->object_lock)
        rc = bad("retain_days needs object_lock=COMPLIANCE|GOVERNANCE");
    else if (l->lock_exclude && !l->object_lock)
        rc = bad("object_lock_exclude needs object_lock");
    if (rc < 0)
        goto out;
    if (retain) {
        char *end = NULL;
        errno = 0;
        unsigned long d = strtoul(retain, &end, 10);
        if (errno || !end || *end || d < 1 || d > 36500) {
            rc = bad("retain_days is a number of days from 1 to 36500");
            goto out;
        }
        l->retain_days = (unsigned)d;
    }
    if (l->object_lock && !l->lock_exclude && !(l->lock_exclude = cf_strdup("locks/"))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (cond && (rc = parse_cond(&l->cond, cond)) < 0)
        goto out;
out:
    free(retain);
    free(cond);
    return rc;
}

int cf_s3_location_parse(cf_s3_location *l, const char *location)
{
    int rc = 0;
    char *path = NULL;
    memset(l, 0, sizeof(*l));
    l->cond = CF_S3_COND_AUTO;

    if (!location || !*location)
        return bad("nothing after 's3:'");
    /* Credentials do not belong in URLs (they would be shown and logged): refuse, and do not
     * repeat the text. */
    if (strchr(location, '@')) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "invalid s3 repository url: credentials in the url are not supported");
        cf_error_hint("give them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile "
                      "in ~/.aws/credentials (AWS_PROFILE)");
        return rc;
    }
    for (const char *c = location; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return bad("the url contains a space or control character");

    const char *q = strchr(location, '?');
    size_t main_len = q ? (size_t)(q - location) : strlen(location);
    if (!(path = cf_strndup(location, main_len)))
        return CF_ENOMEM;

    const char *rest = path;
    if (strncmp(path, "https://", 8) == 0 || strncmp(path, "http://", 7) == 0) {
        bool tls = path[4] == 's';
        if (!(l->scheme = cf_strdup(tls ? "https" : "http"))) {
            rc = CF_ENOMEM;
            goto out;
        }
        const char *h = path + (tls ? 8 : 7);
        const char *slash = strchr(h, '/');
        size_t hl = slash ? (size_t)(slash - h) : strlen(h);
        if (hl == 0 || hl > 255 || !all_chars(h, hl, ".-:[]_")) {
            rc = bad("the host is missing or has characters other than letters, digits, '.', "
                     "'-', ':' and '[]'");
            goto out;
        }
        if (!(l->host = cf_strndup(h, hl))) {
            rc = CF_ENOMEM;
            goto out;
        }
        l->path_style = true;
        if (!slash) {
            rc = bad("the bucket name is missing after the host");
            goto out;
        }
        rest = slash + 1;
    } else if (strstr(path, "://")) {
        rc = bad("only http:// and https:// endpoints are supported");
        goto out;
    } else {
        l->aws = true;
        if (!(l->scheme = cf_strdup("https"))) {
            rc = CF_ENOMEM;
            goto out;
        }
    }

    const char *bs = strchr(rest, '/');
    size_t bl = bs ? (size_t)(bs - rest) : strlen(rest);
    if (!(l->bucket = cf_strndup(rest, bl))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = check_bucket(l->bucket, l->aws)) < 0)
        goto out;
    const char *pfx = bs ? bs + 1 : "";
    if ((rc = make_prefix(&l->prefix, pfx, strlen(pfx))) < 0)
        goto out;

    if (q && (rc = parse_options(l, q + 1)) < 0)
        goto out;
    if (!l->storage_class) {
        const char *sc = getenv("COFFER_S3_STORAGE_CLASS");
        if (sc && *sc) {
            if (!all_chars(sc, strlen(sc), "_")) {
                rc = bad("COFFER_S3_STORAGE_CLASS is a name such as STANDARD_IA");
                goto out;
            }
            if (!(l->storage_class = cf_strdup(sc))) {
                rc = CF_ENOMEM;
                goto out;
            }
        }
    }
    bool cond_given = q && strstr(q, "conditional_put=");
    const char *ce = getenv("COFFER_S3_CONDITIONAL_PUT");
    if (!cond_given && ce && *ce && (rc = parse_cond(&l->cond, ce)) < 0)
        goto out;
    if (!cond_given && !(ce && *ce)) {
        /* AWS has honoured If-None-Match: * on writes since 2024. */
        size_t hl = l->host ? strlen(l->host) : 0;
        if (l->aws || (hl > 14 && strcmp(l->host + hl - 14, ".amazonaws.com") == 0))
            l->cond = CF_S3_COND_YES;
    }
out:
    free(path);
    if (rc < 0)
        cf_s3_location_free(l);
    return rc;
}

int cf_s3_location_set_region(cf_s3_location *l, const char *region)
{
    if (!region || !*region || strlen(region) > 64 || !all_chars(region, strlen(region), "-"))
        return bad("the region has only letters, digits and '-'");
    if (!l->aws)
        return 0;
    /* Virtual-host style, except for bucket names with dots, which break TLS wildcard
     * certificates: those use the path style on the regional endpoint. */
    char *host = strchr(l->bucket, '.')
                     ? cf_asprintf("s3.%s.amazonaws.com", region)
                     : cf_asprintf("%s.s3.%s.amazonaws.com", l->bucket, region);
    if (!host)
        return CF_ENOMEM;
    free(l->host);
    l->host = host;
    l->path_style = strchr(l->bucket, '.') != NULL;
    return 0;
}
