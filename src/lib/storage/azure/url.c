/*
 * url.c - parsing of Azure Blob repository locations: endpoint, account, container, prefix,
 * and the access tier option.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "storage/azure/azure.h"
#include "util/util.h"

#define USAGE_HINT                                                                             \
    "use 'azure:ACCOUNT/CONTAINER[/PREFIX]' or, for an emulator such as Azurite, "             \
    "'azure:http://HOST:PORT/ACCOUNT/CONTAINER[/PREFIX]', optionally followed by "            \
    "'?tier=Hot|Cool|Cold|Archive'"

void cf_azure_location_free(cf_azure_location *l)
{
    if (!l)
        return;
    free(l->scheme);
    free(l->host);
    free(l->account);
    free(l->container);
    free(l->prefix);
    free(l->tier);
    memset(l, 0, sizeof(*l));
}

static int bad(const char *what)
{
    int rc = cf_error_set(CF_EINVAL, 0, "invalid azure repository url: %s", what);
    cf_error_hint(USAGE_HINT);
    return rc;
}

static bool is_lower_digit(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
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

/* Storage account names: 3 to 24 lower-case letters and digits. */
static int check_account(const char *a)
{
    size_t n = strlen(a);
    if (n == 0)
        return bad("the storage account name is missing");
    if (n < 3 || n > 24)
        return bad("a storage account name has 3 to 24 characters");
    for (size_t i = 0; i < n; i++)
        if (!is_lower_digit(a[i]))
            return bad("a storage account name has only lower-case letters and digits");
    return 0;
}

/* Container names: 3 to 63 lower-case letters, digits and '-', starting and ending with a
 * letter or digit, no "--". */
static int check_container(const char *c)
{
    size_t n = strlen(c);
    if (n == 0)
        return bad("the container name is missing");
    if (n < 3 || n > 63)
        return bad("a container name has 3 to 63 characters");
    for (size_t i = 0; i < n; i++)
        if (!is_lower_digit(c[i]) && c[i] != '-')
            return bad("a container name has only lower-case letters, digits and '-'");
    if (c[0] == '-' || c[n - 1] == '-' || strstr(c, "--"))
        return bad("a container name starts and ends with a letter or digit and has no '--'");
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

/* The canonical spelling of an access tier, or NULL. */
static const char *tier_name(const char *v, size_t n)
{
    static const char *const tiers[] = {"Hot", "Cool", "Cold", "Archive"};
    for (size_t i = 0; i < sizeof(tiers) / sizeof(tiers[0]); i++)
        if (strlen(tiers[i]) == n && strncasecmp(tiers[i], v, n) == 0)
            return tiers[i];
    return NULL;
}

static int set_tier(cf_azure_location *l, const char *v, size_t n, const char *from)
{
    const char *t = tier_name(v, n);
    if (!t) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s is 'Hot', 'Cool', 'Cold' or 'Archive'", from);
        return bad(msg);
    }
    free(l->tier);
    l->tier = cf_strdup(t);
    return l->tier ? 0 : CF_ENOMEM;
}

static int parse_options(cf_azure_location *l, const char *q)
{
    bool tier_seen = false;
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n == 0) {
            p++;
            continue;
        }
        const char *eq = memchr(p, '=', n);
        if (!eq)
            return bad("options are written 'name=value'");
        size_t kl = (size_t)(eq - p);
        if (kl == 4 && memcmp(p, "tier", 4) == 0) {
            if (tier_seen)
                return bad("option 'tier' is given twice");
            tier_seen = true;
            int rc = set_tier(l, eq + 1, n - kl - 1, "tier");
            if (rc < 0)
                return rc;
        } else if ((kl == 3 && memcmp(p, "sig", 3) == 0) || (kl == 2 && memcmp(p, "sv", 2) == 0)) {
            /* A SAS token pasted into the url: refuse, and do not repeat it. */
            int rc = cf_error_set(CF_EINVAL, 0, "invalid azure repository url: a SAS token "
                                                "does not belong in the url");
            cf_error_hint("give it in AZURE_STORAGE_SAS_TOKEN (the url is shown in messages "
                          "and logs)");
            return rc;
        } else {
            return bad("unknown option (known: tier)");
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

int cf_azure_location_parse(cf_azure_location *l, const char *location)
{
    int rc = 0;
    char *path = NULL;
    memset(l, 0, sizeof(*l));

    if (!location || !*location)
        return bad("nothing after 'azure:'");
    if (strchr(location, '@')) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "invalid azure repository url: credentials in the url are not "
                          "supported");
        cf_error_hint("give them in AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN");
        return rc;
    }
    for (const char *c = location; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '#')
            return bad("the url contains a space, control character or '#'");

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
            rc = bad("the storage account is missing after the host (emulator urls are "
                     "http://HOST:PORT/ACCOUNT/CONTAINER)");
            goto out;
        }
        rest = slash + 1;
    } else if (strstr(path, "://")) {
        rc = bad("only http:// and https:// endpoints are supported");
        goto out;
    } else if (!(l->scheme = cf_strdup("https"))) {
        rc = CF_ENOMEM;
        goto out;
    }

    /* ACCOUNT/CONTAINER[/PREFIX] */
    const char *as = strchr(rest, '/');
    if (!(l->account = cf_strndup(rest, as ? (size_t)(as - rest) : strlen(rest)))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = check_account(l->account)) < 0)
        goto out;
    if (!as) {
        rc = bad("the container name is missing after the account");
        goto out;
    }
    const char *cont = as + 1;
    const char *cs = strchr(cont, '/');
    if (!(l->container = cf_strndup(cont, cs ? (size_t)(cs - cont) : strlen(cont)))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = check_container(l->container)) < 0)
        goto out;
    const char *pfx = cs ? cs + 1 : "";
    if ((rc = make_prefix(&l->prefix, pfx, strlen(pfx))) < 0)
        goto out;

    if (!l->path_style) {
        const char *suffix = getenv("COFFER_AZURE_ENDPOINT_SUFFIX");
        if (!suffix || !*suffix)
            suffix = CF_AZURE_DEFAULT_SUFFIX;
        if (strlen(suffix) > 200 || !all_chars(suffix, strlen(suffix), ".-") ||
            suffix[0] == '.' || suffix[0] == '-') {
            rc = bad("COFFER_AZURE_ENDPOINT_SUFFIX is a domain such as core.windows.net");
            goto out;
        }
        if (!(l->host = cf_asprintf("%s.blob.%s", l->account, suffix))) {
            rc = CF_ENOMEM;
            goto out;
        }
    }

    if (q && (rc = parse_options(l, q + 1)) < 0)
        goto out;
    if (!l->tier) {
        const char *t = getenv("COFFER_AZURE_TIER");
        if (t && *t && (rc = set_tier(l, t, strlen(t), "COFFER_AZURE_TIER")) < 0)
            goto out;
    }
out:
    free(path);
    if (rc < 0)
        cf_azure_location_free(l);
    return rc;
}
