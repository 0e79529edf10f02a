/*
 * repo_helpers.h - shared helpers for the repo and ops unit tests: a deterministic PRNG,
 * error assertions, and fast in-memory repositories (scrypt 2^10).
 *
 * Include after <cmocka.h> and after every system header. Everything is static inline so a
 * test that uses only part of it does not trip -Wunused-function.
 */
#ifndef CF_TEST_REPO_HELPERS_H
#define CF_TEST_REPO_HELPERS_H

#include "coffer/coffer.h"
#include "coffer/sys/storage.h"
#include "repo/repo.h"
#include "util/util.h"

#define TEST_PASSWORD "correct horse battery staple"

/* ---- deterministic test data ---- */

static inline uint64_t th_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void th_fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        cf_le64_put(p + i, th_next(&s));
    uint64_t last = th_next(&s);
    for (; i < n; i++, last >>= 8)
        p[i] = (uint8_t)last;
}

/* Compressible text-like bytes. */
static inline void th_fill_text(uint8_t *p, size_t n, uint64_t seed)
{
    static const char *const words[] = {"alpha ", "bravo ", "charlie ", "delta ", "echo\n",
                                        "foxtrot ", "golf ", "hotel ", "india ", "juliet\n"};
    uint64_t s = seed;
    size_t i = 0;
    while (i < n) {
        const char *w = words[th_next(&s) % 10];
        size_t l = strlen(w);
        if (l > n - i)
            l = n - i;
        memcpy(p + i, w, l);
        i += l;
    }
}

static inline void th_id(cf_id *id, uint64_t seed)
{
    th_fill_random(id->b, sizeof(id->b), seed);
}

/* ---- assertions ---- */

/* Fail with the library's message when rc is not code; optionally require needle in it. */
#define th_expect(rc_expr, code, needle)                                                          \
    do {                                                                                          \
        int th_rc_ = (rc_expr);                                                                   \
        int th_code_ = (code);                                                                    \
        if (th_rc_ != th_code_)                                                                   \
            fail_msg("%s: expected %s, got %s (%d): %s", #rc_expr, cf_error_name(th_code_),       \
                     cf_error_name(th_rc_), th_rc_, cf_error_last()->message);                    \
        const char *th_needle_ = (needle);                                                        \
        if (th_needle_ && !strstr(cf_error_last()->message, th_needle_))                          \
            fail_msg("%s: message '%s' does not mention '%s'", #rc_expr,                          \
                     cf_error_last()->message, th_needle_);                                       \
    } while (0)

#define th_ok(rc_expr) th_expect((rc_expr), 0, NULL)

/* ---- repositories ---- */

static inline cf_init_opts th_opts(void)
{
    cf_init_opts o;
    memset(&o, 0, sizeof(o));
    o.compression_level = -1;
    o.kdf_log_n = 10;
    return o;
}

/* Create and open a repository at url with the given options (NULL: th_opts()). */
static inline cf_repo *th_repo_new_opts(const char *url, const cf_init_opts *opts)
{
    cf_init_opts def = th_opts();
    cf_repo *r = NULL;
    th_ok(cf_repo_init(url, TEST_PASSWORD, opts ? opts : &def));
    th_ok(cf_repo_open(&r, url, TEST_PASSWORD));
    assert_non_null(r);
    return r;
}

static inline cf_repo *th_repo_new(const char *url) { return th_repo_new_opts(url, NULL); }

/* A second handle on a store, for reading and writing raw objects. */
static inline cf_storage *th_storage(const char *url)
{
    cf_storage *st = NULL;
    th_ok(cf_storage_open(&st, url, 0));
    return st;
}

/* ---- listing storage ---- */

typedef struct {
    char **names;
    size_t n;
} th_names;

static inline int th_collect_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    th_names *l = payload;
    char **p = realloc(l->names, (l->n + 1) * sizeof(*p));
    if (!p)
        return CF_ENOMEM;
    l->names = p;
    l->names[l->n] = cf_strdup(name);
    if (!l->names[l->n])
        return CF_ENOMEM;
    l->n++;
    return 0;
}

static inline int th_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names under prefix in st, sorted. */
static inline th_names th_list(cf_storage *st, const char *prefix)
{
    th_names l = {NULL, 0};
    th_ok(cf_storage_list(st, prefix, th_collect_cb, &l));
    if (l.n > 1)
        qsort(l.names, l.n, sizeof(char *), th_name_cmp);
    return l;
}

static inline void th_names_free(th_names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}

static inline size_t th_count(cf_storage *st, const char *prefix)
{
    th_names l = th_list(st, prefix);
    size_t n = l.n;
    th_names_free(&l);
    return n;
}

#endif
