/*
 * mem.c - the in-process storage driver for tests: a process-global, mutex-protected table of
 * named stores, each a sorted array of objects, plus failure injection.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

enum { OP_PUT, OP_GET, OP_LIST, OP_REMOVE, OP_STAT, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"put", "get", "list", "remove", "stat"};

typedef struct {
    char *name;
    uint8_t *data;
    size_t len;
} mem_obj;

typedef struct {
    int every; /* 0: off */
    int code;
    unsigned long calls;
} mem_inject;

typedef struct mem_store {
    struct mem_store *next;
    char *name;
    mem_obj *objs; /* sorted by name (strcmp) */
    size_t n, cap;
    mem_inject inject[OP_COUNT];
} mem_store;

/* A handle names its store and looks it up on every call, so cf_storage_mem_reset cannot leave
 * it dangling. */
typedef struct {
    char *name;
} mem_handle;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_store *g_stores;

/* ---- store table (call with g_lock held) ---- */

static mem_store *store_find(const char *name)
{
    for (mem_store *s = g_stores; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void store_free(mem_store *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->objs[i].name);
        free(s->objs[i].data);
    }
    free(s->objs);
    free(s->name);
    free(s);
}

/* The store behind a handle, or NULL with CF_ENOREPO set. */
static mem_store *store_get(const mem_handle *h)
{
    mem_store *s = store_find(h->name);
    if (!s)
        cf_error_set(CF_ENOREPO, 0, "repository 'mem:%s' no longer exists", h->name);
    return s;
}

/* Count a call of op; returns the injected code if this call must fail, else 0. */
static int injected(mem_store *s, int op, const char *name)
{
    mem_inject *in = &s->inject[op];
    if (in->every <= 0)
        return 0;
    in->calls++;
    if (in->calls % (unsigned long)in->every != 0)
        return 0;
    return cf_error_set(in->code, 0, "injected failure: %s of '%s' in 'mem:%s'", op_names[op],
                        name, s->name);
}

/* Index of the first object whose name is >= key. */
static size_t lower_bound(const mem_store *s, const char *key)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(s->objs[mid].name, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static mem_obj *obj_find(const mem_store *s, const char *name)
{
    size_t i = lower_bound(s, name);
    return i < s->n && strcmp(s->objs[i].name, name) == 0 ? &s->objs[i] : NULL;
}

/*
 * Behave like a file system, where "a" cannot be both an object and a folder: a name whose
 * folder part is an object, or a name that is a folder of other objects, cannot be written.
 * (Object stores would allow both; the repository never relies on it, and this catches it.)
 */
static int check_shape(const mem_store *s, const char *name, unsigned flags)
{
    int rc = 0;
    size_t len = strlen(name);
    char *key = cf_malloc(len + 2);
    if (!key)
        return CF_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        if (name[i] != '/')
            continue;
        memcpy(key, name, i);
        key[i] = '\0';
        if (obj_find(s, key)) {
            rc = cf_error_set(CF_EIO, 0, "unable to write '%s' in 'mem:%s': '%s' is an object",
                              name, s->name, key);
            goto out;
        }
    }
    memcpy(key, name, len);
    key[len] = '/';
    key[len + 1] = '\0';
    size_t i = lower_bound(s, key);
    if (i < s->n && strncmp(s->objs[i].name, key, len + 1) == 0) {
        /* As on disk, where link() onto a directory fails with EEXIST. */
        if (flags & CF_PUT_EXCLUSIVE)
            rc = cf_error_set(CF_EEXISTS, 0, "object '%s' already exists in 'mem:%s'", name,
                              s->name);
        else
            rc = cf_error_set(CF_EIO, 0, "unable to write '%s' in 'mem:%s': it is a folder",
                              name, s->name);
    }
out:
    free(key);
    return rc;
}

static int not_found(const mem_store *s, const char *name)
{
    return cf_error_set(CF_ENOTFOUND, 0, "object '%s' not found in 'mem:%s'", name, s->name);
}

/* ---- open / close ---- */

int cf_storage_mem_new(void **out_self, const char *name, unsigned flags)
{
    int rc = 0;
    mem_handle *h = NULL;
    mem_store *created = NULL;

    if (!out_self || !name || !*name)
        return cf_error_set(CF_EINVAL, 0, "mem storage: a store name is required");
    *out_self = NULL;

    h = cf_calloc(1, sizeof(*h));
    if (!h || !(h->name = cf_strdup(name))) {
        rc = CF_ENOMEM;
        goto out;
    }

    pthread_mutex_lock(&g_lock);
    if (!store_find(name)) {
        if (!(flags & CF_STORAGE_CREATE)) {
            rc = cf_error_set(CF_ENOREPO, 0, "repository 'mem:%s' does not exist", name);
        } else if (!(created = cf_calloc(1, sizeof(*created))) ||
                   !(created->name = cf_strdup(name))) {
            rc = CF_ENOMEM;
        } else {
            created->next = g_stores;
            g_stores = created;
            created = NULL;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (rc < 0)
        goto out;

    *out_self = h;
    h = NULL;
out:
    if (created)
        store_free(created);
    if (h) {
        free(h->name);
        free(h);
    }
    return rc;
}

static void mem_close(void *self)
{
    mem_handle *h = self;
    if (!h)
        return;
    free(h->name);
    free(h);
}

/* ---- operations ---- */

static int mem_put(void *self, const char *name, const void *data, size_t len, unsigned flags)
{
    mem_handle *h = self;
    int rc = 0;
    uint8_t *copy = NULL;
    char *name_copy = NULL;

    pthread_mutex_lock(&g_lock);
    mem_store *s = store_get(h);
    if (!s) {
        rc = CF_ENOREPO;
        goto out;
    }
    if ((rc = injected(s, OP_PUT, name)) < 0)
        goto out;
    if ((rc = check_shape(s, name, flags)) < 0)
        goto out;
    size_t i = lower_bound(s, name);
    bool exists = i < s->n && strcmp(s->objs[i].name, name) == 0;
    if (exists && (flags & CF_PUT_EXCLUSIVE)) {
        rc = cf_error_set(CF_EEXISTS, 0, "object '%s' already exists in 'mem:%s'", name, s->name);
        goto out;
    }
    copy = cf_malloc(len);
    if (!copy) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (len)
        memcpy(copy, data, len);
    if (exists) {
        free(s->objs[i].data);
        s->objs[i].data = copy;
        s->objs[i].len = len;
        copy = NULL;
        goto out;
    }
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        mem_obj *objs = cf_realloc(s->objs, ncap * sizeof(*objs));
        if (!objs) {
            rc = CF_ENOMEM;
            goto out;
        }
        s->objs = objs;
        s->cap = ncap;
    }
    name_copy = cf_strdup(name);
    if (!name_copy) {
        rc = CF_ENOMEM;
        goto out;
    }
    memmove(&s->objs[i + 1], &s->objs[i], (s->n - i) * sizeof(*s->objs));
    s->objs[i] = (mem_obj){.name = name_copy, .data = copy, .len = len};
    s->n++;
    name_copy = NULL;
    copy = NULL;
out:
    pthread_mutex_unlock(&g_lock);
    free(copy);
    free(name_copy);
    return rc;
}

static int mem_get(void *self, const char *name, uint64_t offset, uint64_t length, uint8_t **out,
                   size_t *out_len)
{
    mem_handle *h = self;
    int rc = 0;

    pthread_mutex_lock(&g_lock);
    mem_store *s = store_get(h);
    if (!s) {
        rc = CF_ENOREPO;
        goto out;
    }
    if ((rc = injected(s, OP_GET, name)) < 0)
        goto out;
    const mem_obj *o = obj_find(s, name);
    if (!o) {
        rc = not_found(s, name);
        goto out;
    }
    uint64_t size = o->len, end;
    if (offset > size || __builtin_add_overflow(offset, length, &end) || end > size) {
        rc = cf_error_set(CF_ECORRUPT, 0,
                          "object '%s' is shorter than expected (size %llu, wanted %llu bytes "
                          "at offset %llu) in 'mem:%s'",
                          name, (unsigned long long)size, (unsigned long long)length,
                          (unsigned long long)offset, s->name);
        goto out;
    }
    uint64_t want = length ? length : size - offset;
    if (want > CF_STORAGE_GET_MAX) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "read of %llu bytes from '%s' in 'mem:%s' exceeds the 1 GiB limit",
                          (unsigned long long)want, name, s->name);
        goto out;
    }
    uint8_t *buf = cf_malloc((size_t)want);
    if (!buf) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (want)
        memcpy(buf, o->data + offset, (size_t)want);
    *out = buf;
    *out_len = (size_t)want;
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

static int mem_stat(void *self, const char *name, uint64_t *out_size)
{
    mem_handle *h = self;
    int rc = 0;

    pthread_mutex_lock(&g_lock);
    mem_store *s = store_get(h);
    if (!s) {
        rc = CF_ENOREPO;
        goto out;
    }
    if ((rc = injected(s, OP_STAT, name)) < 0)
        goto out;
    const mem_obj *o = obj_find(s, name);
    if (!o) {
        rc = not_found(s, name);
        goto out;
    }
    *out_size = o->len;
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

static int mem_remove(void *self, const char *name)
{
    mem_handle *h = self;
    int rc = 0;

    pthread_mutex_lock(&g_lock);
    mem_store *s = store_get(h);
    if (!s) {
        rc = CF_ENOREPO;
        goto out;
    }
    if ((rc = injected(s, OP_REMOVE, name)) < 0)
        goto out;
    size_t i = lower_bound(s, name);
    if (i >= s->n || strcmp(s->objs[i].name, name) != 0) {
        rc = not_found(s, name);
        goto out;
    }
    free(s->objs[i].name);
    free(s->objs[i].data);
    memmove(&s->objs[i], &s->objs[i + 1], (s->n - i - 1) * sizeof(*s->objs));
    s->n--;
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

typedef struct {
    char *name;
    uint64_t size;
} list_entry;

/* Matching entries are copied under the lock and reported after it is released, so callbacks
 * may call back into the store (remove while listing, as prune does). */
static int mem_list(void *self, const char *prefix, cf_storage_list_cb cb, void *payload)
{
    mem_handle *h = self;
    int rc = 0;
    list_entry *items = NULL;
    size_t count = 0;

    pthread_mutex_lock(&g_lock);
    mem_store *s = store_get(h);
    if (!s) {
        rc = CF_ENOREPO;
        pthread_mutex_unlock(&g_lock);
        goto out;
    }
    if ((rc = injected(s, OP_LIST, prefix)) < 0) {
        pthread_mutex_unlock(&g_lock);
        goto out;
    }
    size_t plen = strlen(prefix);
    size_t lo = lower_bound(s, prefix), hi = lo;
    while (hi < s->n && strncmp(s->objs[hi].name, prefix, plen) == 0)
        hi++;
    if (hi > lo) {
        items = cf_calloc(hi - lo, sizeof(*items));
        if (!items)
            rc = CF_ENOMEM;
        for (size_t i = lo; items && i < hi; i++, count++) {
            items[count].size = s->objs[i].len;
            if (!(items[count].name = cf_strdup(s->objs[i].name))) {
                rc = CF_ENOMEM;
                break;
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (rc < 0)
        goto out;

    for (size_t i = 0; i < count; i++) {
        rc = cb(items[i].name, items[i].size, payload);
        if (rc != 0)
            break;
    }
out:
    for (size_t i = 0; i < count; i++)
        free(items[i].name);
    free(items);
    return rc;
}

const cf_storage_ops cf_storage_mem_ops = {
    .version = CF_STORAGE_OPS_VERSION,
    .scheme = "mem",
    .features = CF_STORAGE_FEAT_EXCLUSIVE_PUT,
    .put = mem_put,
    .get = mem_get,
    .stat = mem_stat,
    .list = mem_list,
    .remove = mem_remove,
    .space = NULL,
    .close = mem_close,
};

/* ---- testing ---- */

int cf_storage_mem_inject(const char *store, const char *op, int every_n, int code)
{
    int rc = 0;
    int which = -1;

    if (!store || !op)
        return cf_error_set(CF_EINVAL, 0, "cf_storage_mem_inject: store and op are required");
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(op, op_names[i]) == 0)
            which = i;
    if (which < 0)
        return cf_error_set(CF_EINVAL, 0,
                            "cf_storage_mem_inject: unknown operation '%s' (put, get, list, "
                            "remove or stat)",
                            op);
    if (every_n < 0 || (every_n > 0 && code >= 0))
        return cf_error_set(CF_EINVAL, 0,
                            "cf_storage_mem_inject: every_n must be >= 0 and code negative");

    pthread_mutex_lock(&g_lock);
    mem_store *s = store_find(store);
    if (!s) {
        rc = cf_error_set(CF_ENOREPO, 0, "repository 'mem:%s' does not exist", store);
    } else {
        s->inject[which].every = every_n;
        s->inject[which].code = every_n > 0 ? code : 0;
        s->inject[which].calls = 0;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void cf_storage_mem_reset(void)
{
    pthread_mutex_lock(&g_lock);
    mem_store *s = g_stores;
    g_stores = NULL;
    pthread_mutex_unlock(&g_lock);
    while (s) {
        mem_store *next = s->next;
        store_free(s);
        s = next;
    }
}
