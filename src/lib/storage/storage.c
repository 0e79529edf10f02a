/*
 * storage.c - the storage registry (URL scheme -> driver) and the cf_storage handle, whose
 * wrappers validate object names and arguments before calling the driver.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

struct cf_storage {
    const cf_storage_ops *ops;
    void *self;
    char *display;
};

/* The registry: one line per driver. */
typedef int (*storage_ctor)(void **out_self, const char *location, unsigned flags);

static const struct {
    const char *scheme;
    const cf_storage_ops *ops;
    storage_ctor ctor;
} registry[] = {
    {"local", &cf_storage_local_ops, cf_storage_local_new},
    {"mem", &cf_storage_mem_ops, cf_storage_mem_new},
    {"sftp", &cf_storage_sftp_ops, cf_storage_sftp_new},
    {"s3", &cf_storage_s3_ops, cf_storage_s3_new},
    {"azure", &cf_storage_azure_ops, cf_storage_azure_new},
};

#define REGISTRY_LEN (sizeof(registry) / sizeof(registry[0]))
#define SCHEMES_HINT                                                                           \
    "use a path, 'local:PATH', 'mem:NAME', 'sftp:USER@HOST:PATH', "                            \
    "'sftp://USER@HOST:PORT/PATH', 's3:BUCKET[/PREFIX]', "                                     \
    "'s3:https://HOST[:PORT]/BUCKET[/PREFIX]', 'azure:ACCOUNT/CONTAINER[/PREFIX]' or "         \
    "'azure:http://HOST:PORT/ACCOUNT/CONTAINER[/PREFIX]'"

/*
 * Split a URL into scheme and location. A URL whose text before the first '/' contains a ':'
 * has a scheme ("local:/x", "s3:bucket/p"); anything else is a plain local path ("/x", "./x",
 * "repo"). A relative path containing ':' can be written as "./a:b" or "local:a:b".
 */
static bool url_split(const char *url, const char **scheme, size_t *scheme_len,
                      const char **location)
{
    const char *colon = strchr(url, ':');
    const char *slash = strchr(url, '/');
    if (!colon || (slash && slash < colon))
        return false;
    *scheme = url;
    *scheme_len = (size_t)(colon - url);
    *location = colon + 1;
    return true;
}

int cf_storage_open(cf_storage **out, const char *url, unsigned flags)
{
    int rc;
    const char *scheme = "local";
    size_t scheme_len = 5;
    const char *location = url;
    void *self = NULL;
    char *display = NULL;

    if (!out)
        return cf_error_set(CF_EINVAL, 0, "cf_storage_open: out is NULL");
    *out = NULL;
    if (!url || !*url) {
        rc = cf_error_set(CF_EINVAL, 0, "empty repository url");
        cf_error_hint(SCHEMES_HINT);
        return rc;
    }
    url_split(url, &scheme, &scheme_len, &location);

    for (size_t i = 0; i < REGISTRY_LEN; i++) {
        const char *s = registry[i].scheme;
        if (strlen(s) != scheme_len || memcmp(s, scheme, scheme_len) != 0)
            continue;
        if (!*location) {
            rc = cf_error_set(CF_EINVAL, 0, "repository url '%s' has no %s", url,
                              strcmp(s, "mem") == 0 ? "store name" : "path");
            cf_error_hint(SCHEMES_HINT);
            return rc;
        }
        /* What users see: the path for local, the whole url otherwise. */
        display = strcmp(s, "local") == 0 ? cf_strdup(location) : cf_asprintf("%s:%s", s, location);
        if (!display)
            return CF_ENOMEM;
        rc = registry[i].ctor(&self, location, flags);
        if (rc < 0) {
            free(display);
            return rc;
        }
        rc = cf_storage_wrap(out, registry[i].ops, self, display);
        free(display);
        return rc;
    }

    rc = cf_error_set(CF_EUNSUPPORTED, 0, "unsupported repository url '%s'", url);
    cf_error_hint(SCHEMES_HINT);
    return rc;
}

int cf_storage_wrap(cf_storage **out, const cf_storage_ops *ops, void *self, const char *display)
{
    int rc = 0;
    cf_storage *st = NULL;

    if (!out || !ops) {
        rc = cf_error_set(CF_EINVAL, 0, "cf_storage_wrap: out and ops are required");
        goto out;
    }
    *out = NULL;
    if (ops->version != CF_STORAGE_OPS_VERSION) {
        rc = cf_error_set(CF_EUNSUPPORTED, 0,
                          "storage driver '%s' has interface version %u, expected %u",
                          ops->scheme ? ops->scheme : "?", ops->version, CF_STORAGE_OPS_VERSION);
        goto out;
    }
    if (!ops->put || !ops->get || !ops->stat || !ops->list || !ops->remove || !ops->close) {
        rc = cf_error_set(CF_EINVAL, 0, "storage driver '%s' lacks a required operation",
                          ops->scheme ? ops->scheme : "?");
        goto out;
    }
    st = cf_calloc(1, sizeof(*st));
    if (!st) {
        rc = CF_ENOMEM;
        goto out;
    }
    st->display = cf_strdup(display ? display : (ops->scheme ? ops->scheme : "storage"));
    if (!st->display) {
        rc = CF_ENOMEM;
        goto out;
    }
    st->ops = ops;
    st->self = self;
    *out = st;
    st = NULL;
    self = NULL;
out:
    /* We own self from the moment we are called, so free it on failure. */
    if (self && ops && ops->close)
        ops->close(self);
    if (st) {
        free(st->display);
        free(st);
    }
    return rc;
}

void cf_storage_close(cf_storage *st)
{
    if (!st)
        return;
    st->ops->close(st->self);
    free(st->display);
    free(st);
}

const char *cf_storage_scheme(const cf_storage *st)
{
    return st && st->ops->scheme ? st->ops->scheme : "";
}

const char *cf_storage_display(const cf_storage *st)
{
    return st ? st->display : "";
}

unsigned cf_storage_features(const cf_storage *st)
{
    return st ? st->ops->features : 0;
}

/* Returns why name is not a valid object name (or prefix, which may be empty and end in '/'),
 * or NULL if it is fine. */
static const char *name_problem(const char *name, bool is_prefix)
{
    size_t len = strnlen(name, CF_STORAGE_NAME_MAX + 1);
    if (len > CF_STORAGE_NAME_MAX)
        return "longer than 1024 bytes";
    if (len == 0)
        return is_prefix ? NULL : "empty";
    if (name[0] == '/')
        return "starts with '/'";
    if (strstr(name, ".."))
        return "contains '..'";
    if (strstr(name, "//"))
        return "contains '//'";
    if (!is_prefix && name[len - 1] == '/')
        return "ends with '/'";
    /* Component checks: "." components, and the ".tmp-" prefix drivers use for temporaries.
     * For a prefix the last component may be partial, so only whole components count. */
    const char *p = name;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t clen = slash ? (size_t)(slash - p) : strlen(p);
        bool whole = slash || !is_prefix;
        if (whole && clen == 1 && p[0] == '.')
            return "contains a '.' component";
        if (clen >= 5 && memcmp(p, ".tmp-", 5) == 0)
            return "has a component starting with '.tmp-' (reserved)";
        if (!slash)
            break;
        p = slash + 1;
    }
    return NULL;
}

bool cf_storage_name_valid(const char *name)
{
    return name && name_problem(name, false) == NULL;
}

static int check_name(const cf_storage *st, const char *name, bool is_prefix)
{
    if (!name)
        return cf_error_set(CF_EINVAL, 0, "object name is NULL in '%s'", st->display);
    const char *why = name_problem(name, is_prefix);
    if (why) {
        size_t len = strnlen(name, CF_STORAGE_NAME_MAX + 1);
        return cf_error_set(CF_EINVAL, 0, "invalid object %s '%.*s%s' in '%s': %s",
                            is_prefix ? "prefix" : "name", (int)(len > 200 ? 200 : len), name,
                            len > 200 ? "..." : "", st->display, why);
    }
    return 0;
}

#define CHECK_HANDLE(st)                                                                       \
    do {                                                                                       \
        if (!(st))                                                                             \
            return cf_error_set(CF_EINVAL, 0, "%s: storage handle is NULL", __func__);         \
    } while (0)

int cf_storage_put(cf_storage *st, const char *name, const void *data, size_t len, unsigned flags)
{
    CHECK_HANDLE(st);
    int rc = check_name(st, name, false);
    if (rc < 0)
        return rc;
    if (!data && len > 0)
        return cf_error_set(CF_EINVAL, 0, "put of '%s' in '%s': data is NULL", name, st->display);
    if (flags & ~(unsigned)CF_PUT_EXCLUSIVE)
        return cf_error_set(CF_EINVAL, 0, "put of '%s' in '%s': unknown flags 0x%x", name,
                            st->display, flags);
    return st->ops->put(st->self, name, data, len, flags);
}

int cf_storage_get(cf_storage *st, const char *name, uint64_t offset, uint64_t length,
                   uint8_t **out, size_t *out_len)
{
    CHECK_HANDLE(st);
    if (!out || !out_len)
        return cf_error_set(CF_EINVAL, 0, "cf_storage_get: out and out_len are required");
    *out = NULL;
    *out_len = 0;
    int rc = check_name(st, name, false);
    if (rc < 0)
        return rc;
    if (length > CF_STORAGE_GET_MAX)
        return cf_error_set(CF_EINVAL, 0,
                            "read of %llu bytes from '%s' in '%s' exceeds the 1 GiB limit",
                            (unsigned long long)length, name, st->display);
    rc = st->ops->get(st->self, name, offset, length, out, out_len);
    if (rc < 0 && *out) {
        free(*out);
        *out = NULL;
        *out_len = 0;
    }
    return rc;
}

int cf_storage_stat(cf_storage *st, const char *name, uint64_t *out_size)
{
    CHECK_HANDLE(st);
    uint64_t ignored;
    int rc = check_name(st, name, false);
    if (rc < 0)
        return rc;
    return st->ops->stat(st->self, name, out_size ? out_size : &ignored);
}

int cf_storage_list(cf_storage *st, const char *prefix, cf_storage_list_cb cb, void *payload)
{
    CHECK_HANDLE(st);
    if (!cb)
        return cf_error_set(CF_EINVAL, 0, "cf_storage_list: callback is NULL");
    if (!prefix)
        prefix = "";
    int rc = check_name(st, prefix, true);
    if (rc < 0)
        return rc;
    return st->ops->list(st->self, prefix, cb, payload);
}

int cf_storage_remove(cf_storage *st, const char *name)
{
    CHECK_HANDLE(st);
    int rc = check_name(st, name, false);
    if (rc < 0)
        return rc;
    return st->ops->remove(st->self, name);
}

int cf_storage_purge_tmp(cf_storage *st, const char *const *unlocked, uint64_t *out_removed,
                         uint64_t *out_bytes)
{
    CHECK_HANDLE(st);
    *out_removed = 0;
    *out_bytes = 0;
    if (!st->ops->purge_tmp)
        return 0;
    return st->ops->purge_tmp(st->self, unlocked, out_removed, out_bytes);
}

int cf_storage_spool_dir(cf_storage *st, char *out, size_t out_size)
{
    CHECK_HANDLE(st);
    if (!st->ops->spool_dir || !st->ops->put_file)
        return CF_EUNSUPPORTED; /* not an error worth a message: callers fall back */
    return st->ops->spool_dir(st->self, out, out_size);
}

int cf_storage_put_file(cf_storage *st, const char *name, const char *tmp_path, int fd,
                        unsigned flags)
{
    CHECK_HANDLE(st);
    int rc = check_name(st, name, false);
    if (rc)
        return rc;
    if (!st->ops->put_file)
        return cf_error_set(CF_EUNSUPPORTED, 0, "'%s' cannot publish files", st->display);
    return st->ops->put_file(st->self, name, tmp_path, fd, flags);
}

int cf_storage_space(cf_storage *st, uint64_t *out_free)
{
    CHECK_HANDLE(st);
    if (!out_free)
        return cf_error_set(CF_EINVAL, 0, "cf_storage_space: out_free is NULL");
    if (!st->ops->space)
        return cf_error_set(CF_EUNSUPPORTED, 0, "free space of '%s' is not available",
                            st->display);
    return st->ops->space(st->self, out_free);
}
