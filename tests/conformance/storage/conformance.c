/*
 * conformance.c - the storage conformance suite: one set of tests every storage driver must
 * pass. Run as `conformance_storage URL` (mem:NAME, local:PATH, later s3:..., sftp:...).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

static const char *g_url;        /* argv[1] */
static const char *g_local_root; /* the directory when the url is local, else NULL */
static const char *g_mem_store;  /* the store name when the url is mem:, else NULL */
static cf_storage *g_st;

/* ---- helpers ---- */

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static uint8_t *pattern(size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    fill(p, n, seed);
    return p;
}

static void put_ok(const char *name, const void *data, size_t len)
{
    int rc = cf_storage_put(g_st, name, data, len, 0);
    if (rc != 0)
        fail_msg("put '%s': %s", name, cf_error_last()->message);
}

static void put_pattern(const char *name, size_t len, uint32_t seed)
{
    uint8_t *p = pattern(len, seed);
    put_ok(name, p, len);
    free(p);
}

/* Get the whole object and compare it with expected. */
static void expect_content(const char *name, const uint8_t *expected, size_t len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = cf_storage_get(g_st, name, 0, 0, &out, &out_len);
    if (rc != 0)
        fail_msg("get '%s': %s", name, cf_error_last()->message);
    assert_int_equal(out_len, len);
    if (len)
        assert_memory_equal(out, expected, len);
    free(out);
    uint64_t size = 0;
    assert_int_equal(cf_storage_stat(g_st, name, &size), 0);
    assert_int_equal(size, len);
}

static void expect_pattern(const char *name, size_t len, uint32_t seed)
{
    uint8_t *p = pattern(len, seed);
    expect_content(name, p, len);
    free(p);
}

/* rc must be code, and the error message must name needle (usually the object). */
static void expect_error(int rc, int code, const char *needle)
{
    if (rc != code)
        fail_msg("expected %s, got %d (%s): %s", cf_error_name(code), rc, cf_error_name(rc),
                 cf_error_last()->message);
    const char *msg = cf_error_last()->message;
    assert_non_null(msg);
    assert_true(msg[0] != '\0');
    if (needle && !strstr(msg, needle))
        fail_msg("error message '%s' does not name '%s'", msg, needle);
}

static void expect_get_error(const char *name, uint64_t off, uint64_t len, int code)
{
    uint8_t *out = (uint8_t *)&out; /* must be reset to NULL */
    size_t out_len = 99;
    int rc = cf_storage_get(g_st, name, off, len, &out, &out_len);
    expect_error(rc, code, code == CF_EINVAL ? NULL : name);
    assert_null(out);
    assert_int_equal(out_len, 0);
}

static void expect_range(const char *name, const uint8_t *whole, uint64_t off, uint64_t len,
                         size_t expect_len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = cf_storage_get(g_st, name, off, len, &out, &out_len);
    if (rc != 0)
        fail_msg("get '%s' [%llu,+%llu]: %s", name, (unsigned long long)off,
                 (unsigned long long)len, cf_error_last()->message);
    assert_int_equal(out_len, expect_len);
    if (expect_len)
        assert_memory_equal(out, whole + off, expect_len);
    free(out);
}

/* A list result: names and sizes in the order reported. */
typedef struct {
    size_t n, cap;
    char **names;
    uint64_t *sizes;
    int stop_after; /* return stop_rc after this many calls; 0: never */
    int stop_rc;
} coll;

static int coll_cb(const char *name, uint64_t size, void *payload)
{
    coll *c = payload;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->names = realloc(c->names, c->cap * sizeof(*c->names));
        c->sizes = realloc(c->sizes, c->cap * sizeof(*c->sizes));
        assert_non_null(c->names);
        assert_non_null(c->sizes);
    }
    c->names[c->n] = strdup(name);
    assert_non_null(c->names[c->n]);
    c->sizes[c->n] = size;
    c->n++;
    if (c->stop_after && c->n >= (size_t)c->stop_after)
        return c->stop_rc;
    return 0;
}

static void coll_free(coll *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->names[i]);
    free(c->names);
    free(c->sizes);
    memset(c, 0, sizeof(*c));
}

static size_t coll_count(const coll *c, const char *name, uint64_t *size)
{
    size_t found = 0;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->names[i], name) == 0) {
            found++;
            if (size)
                *size = c->sizes[i];
        }
    return found;
}

static void list_all(const char *prefix, coll *c)
{
    memset(c, 0, sizeof(*c));
    int rc = cf_storage_list(g_st, prefix, coll_cb, c);
    if (rc != 0)
        fail_msg("list '%s': %s", prefix, cf_error_last()->message);
}

/* Listing prefix returns exactly the n given names, once each, with the given sizes. */
static void expect_list(const char *prefix, const char *const *names, const uint64_t *sizes,
                        size_t n)
{
    coll c;
    list_all(prefix, &c);
    for (size_t i = 0; i < c.n; i++) {
        bool wanted = false;
        for (size_t j = 0; j < n; j++)
            wanted = wanted || strcmp(c.names[i], names[j]) == 0;
        if (!wanted)
            fail_msg("list '%s' returned unexpected '%s'", prefix, c.names[i]);
    }
    for (size_t j = 0; j < n; j++) {
        uint64_t size = 0;
        size_t times = coll_count(&c, names[j], &size);
        if (times != 1)
            fail_msg("list '%s' returned '%s' %zu times", prefix, names[j], times);
        assert_int_equal(size, sizes[j]);
    }
    assert_int_equal(c.n, n);
    coll_free(&c);
}

static void remove_ok(const char *name)
{
    int rc = cf_storage_remove(g_st, name);
    if (rc != 0)
        fail_msg("remove '%s': %s", name, cf_error_last()->message);
}

/* Remove every object under prefix. */
static int remove_all(const char *prefix)
{
    coll c = {0};
    int rc = cf_storage_list(g_st, prefix, coll_cb, &c);
    for (size_t i = 0; rc == 0 && i < c.n; i++) {
        rc = cf_storage_remove(g_st, c.names[i]);
        if (rc == CF_ENOTFOUND)
            rc = 0;
    }
    coll_free(&c);
    return rc;
}

/* Count files under dir whose name starts with ".tmp-", and check modes (no group/other bits
 * on anything the driver created). */
static void scan_local(const char *dir, size_t *tmp_files, size_t *loose_modes)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *path = cf_asprintf("%s/%s", dir, e->d_name);
        assert_non_null(path);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        if (strncmp(e->d_name, ".tmp-", 5) == 0)
            (*tmp_files)++;
        if (st.st_mode & 077)
            (*loose_modes)++;
        if (S_ISDIR(st.st_mode))
            scan_local(path, tmp_files, loose_modes);
        free(path);
    }
    closedir(d);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    if (cf_storage_open(&g_st, g_url, CF_STORAGE_CREATE) != 0) {
        fprintf(stderr, "cannot open '%s': %s\n", g_url, cf_error_last()->message);
        return -1;
    }
    /* Start from an empty location: remove whatever an earlier run left. */
    if (remove_all("") != 0) {
        fprintf(stderr, "cannot clean '%s': %s\n", g_url, cf_error_last()->message);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_st)
        remove_all(""); /* best effort; after the mem reset test the store is gone */
    cf_storage_close(g_st);
    g_st = NULL;
    return 0;
}

/* ---- tests every driver must pass ---- */

static void test_open_handle(void **state)
{
    (void)state;
    assert_non_null(g_st);
    assert_non_null(cf_storage_display(g_st));
    assert_true(cf_storage_display(g_st)[0] != '\0');
    /* Opening an existing location with CREATE again is fine. */
    cf_storage *again = NULL;
    assert_int_equal(cf_storage_open(&again, g_url, CF_STORAGE_CREATE), 0);
    cf_storage_close(again);
    cf_storage_close(NULL);
}

static void test_roundtrip(void **state)
{
    (void)state;
    put_ok("rt/empty", "", 0);
    expect_content("rt/empty", NULL, 0);

    put_ok("rt/one", "x", 1);
    expect_content("rt/one", (const uint8_t *)"x", 1);

    size_t big = 3u << 20;
    put_pattern("rt/big", big, 7);
    expect_pattern("rt/big", big, 7);

    /* A name at the top level, and a deep one. */
    put_pattern("toplevel", 100, 8);
    expect_pattern("toplevel", 100, 8);
    put_pattern("rt/a/b/c/d/e/f", 10, 9);
    expect_pattern("rt/a/b/c/d/e/f", 10, 9);
    remove_ok("toplevel");
}

static void test_range(void **state)
{
    (void)state;
    uint8_t *whole = pattern(1000, 11);
    put_ok("range/obj", whole, 1000);

    expect_range("range/obj", whole, 10, 20, 20);
    expect_range("range/obj", whole, 0, 1000, 1000);
    expect_range("range/obj", whole, 0, 0, 1000);   /* length 0: to the end */
    expect_range("range/obj", whole, 990, 0, 10);   /* offset to the end */
    expect_range("range/obj", whole, 999, 1, 1);    /* the last byte */
    expect_range("range/obj", whole, 500, 500, 500);

    /* Past the end is damage, not a short read. */
    expect_get_error("range/obj", 995, 10, CF_ECORRUPT);
    expect_get_error("range/obj", 1000, 1, CF_ECORRUPT);
    expect_get_error("range/obj", 1001, 0, CF_ECORRUPT);
    expect_get_error("range/obj", 5000, 5, CF_ECORRUPT);
    expect_get_error("range/obj", UINT64_MAX, 2, CF_ECORRUPT); /* offset+length overflows */
    expect_get_error("range/obj", 2, UINT64_MAX - 1, CF_EINVAL); /* over the get limit */
    expect_get_error("range/obj", 0, CF_STORAGE_GET_MAX + 1, CF_EINVAL);
    free(whole);

    /* Ranges inside a multi-MiB object. */
    size_t big = 3u << 20;
    uint8_t *b = pattern(big, 12);
    put_ok("range/big", b, big);
    expect_range("range/big", b, (1u << 20) + 7, 1u << 20, 1u << 20);
    expect_range("range/big", b, big - 4096, 0, 4096);
    free(b);
}

static void test_missing(void **state)
{
    (void)state;
    uint64_t size = 0;
    expect_get_error("missing/nothing", 0, 0, CF_ENOTFOUND);
    expect_get_error("nothing", 0, 0, CF_ENOTFOUND);
    expect_get_error("missing/nothing", 5, 10, CF_ENOTFOUND);
    expect_error(cf_storage_stat(g_st, "missing/nothing", &size), CF_ENOTFOUND, "missing/nothing");
    expect_error(cf_storage_remove(g_st, "missing/nothing"), CF_ENOTFOUND, "missing/nothing");

    /* A folder holding objects is not an object itself. */
    put_ok("folder/obj", "abc", 3);
    expect_get_error("folder", 0, 0, CF_ENOTFOUND);
    expect_error(cf_storage_stat(g_st, "folder", &size), CF_ENOTFOUND, "folder");
    expect_error(cf_storage_remove(g_st, "folder"), CF_ENOTFOUND, "folder");
    /* A name below an object cannot exist either. */
    expect_get_error("folder/obj/below", 0, 0, CF_ENOTFOUND);
    expect_error(cf_storage_stat(g_st, "folder/obj/below", &size), CF_ENOTFOUND, NULL);
    expect_error(cf_storage_remove(g_st, "folder/obj/below"), CF_ENOTFOUND, NULL);
    expect_content("folder/obj", (const uint8_t *)"abc", 3);
    remove_ok("folder/obj");
}

static void test_overwrite(void **state)
{
    (void)state;
    put_pattern("ow/x", 1000, 21);
    put_pattern("ow/x", 50, 22); /* shorter: no stale tail may remain */
    expect_pattern("ow/x", 50, 22);
    put_pattern("ow/x", 5000, 23); /* longer */
    expect_pattern("ow/x", 5000, 23);
    put_ok("ow/x", "", 0); /* empty */
    expect_content("ow/x", NULL, 0);
}

static void test_exclusive(void **state)
{
    (void)state;
    uint8_t *a = pattern(300, 31);
    uint8_t *b = pattern(200, 32);

    assert_int_equal(cf_storage_put(g_st, "ex/x", a, 300, CF_PUT_EXCLUSIVE), 0);
    expect_content("ex/x", a, 300);
    expect_error(cf_storage_put(g_st, "ex/x", b, 200, CF_PUT_EXCLUSIVE), CF_EEXISTS, "ex/x");
    expect_content("ex/x", a, 300); /* unchanged */
    expect_error(cf_storage_put(g_st, "ex/x", "", 0, CF_PUT_EXCLUSIVE), CF_EEXISTS, "ex/x");
    expect_content("ex/x", a, 300);

    /* A plain put still replaces it; after a remove, exclusive put works again. */
    put_ok("ex/x", b, 200);
    expect_content("ex/x", b, 200);
    remove_ok("ex/x");
    assert_int_equal(cf_storage_put(g_st, "ex/x", a, 300, CF_PUT_EXCLUSIVE), 0);
    expect_content("ex/x", a, 300);
    free(a);
    free(b);

    /* Unknown flags are refused rather than ignored. */
    expect_error(cf_storage_put(g_st, "ex/y", "a", 1, 1u << 7), CF_EINVAL, "ex/y");
}

#define RACE_THREADS 8
#define RACE_NAMES 16

static atomic_int race_wins[RACE_NAMES];
static atomic_int race_other_errors;

static void *race_thread(void *arg)
{
    uint8_t id = (uint8_t)(uintptr_t)arg;
    uint8_t data[256];
    memset(data, id, sizeof(data));
    for (int k = 0; k < RACE_NAMES; k++) {
        char name[32];
        snprintf(name, sizeof(name), "race/%02d", k);
        int rc = cf_storage_put(g_st, name, data, sizeof(data), CF_PUT_EXCLUSIVE);
        if (rc == 0)
            atomic_fetch_add(&race_wins[k], 1);
        else if (rc != CF_EEXISTS)
            atomic_fetch_add(&race_other_errors, 1);
    }
    return NULL;
}

/* With CF_STORAGE_FEAT_EXCLUSIVE_PUT, exactly one of several racing exclusive puts wins and
 * the object holds the winner's bytes, never a mix. */
static void test_exclusive_race(void **state)
{
    (void)state;
    if (!(cf_storage_features(g_st) & CF_STORAGE_FEAT_EXCLUSIVE_PUT))
        skip();
    pthread_t t[RACE_THREADS];
    for (uintptr_t i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, (void *)(i + 1)), 0);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&race_other_errors), 0);
    for (int k = 0; k < RACE_NAMES; k++) {
        char name[32];
        snprintf(name, sizeof(name), "race/%02d", k);
        assert_int_equal(atomic_load(&race_wins[k]), 1);
        uint8_t *out = NULL;
        size_t len = 0;
        assert_int_equal(cf_storage_get(g_st, name, 0, 0, &out, &len), 0);
        assert_int_equal(len, 256);
        for (size_t i = 1; i < len; i++)
            assert_int_equal(out[i], out[0]);
        free(out);
    }
    assert_int_equal(remove_all("race/"), 0);
}

static void test_list_prefix(void **state)
{
    (void)state;
    static const char *const names[] = {"data/ab/abcd", "data/ab/abce", "data/cd/cdef",
                                        "database/y",   "index/x",      "datafile"};
    static const uint64_t sizes[] = {10, 11, 12, 13, 14, 15};
    for (size_t i = 0; i < 6; i++)
        put_pattern(names[i], (size_t)sizes[i], (uint32_t)i);

    expect_list("data/", names, sizes, 3);
    expect_list("data/ab/", names, sizes, 2);
    expect_list("data/ab/abc", names, sizes, 2);
    expect_list("data/ab/abcd", names, sizes, 1);
    expect_list("data/c", (const char *const[]){"data/cd/cdef"}, (const uint64_t[]){12}, 1);

    /* A prefix without a slash matches across folders and files. */
    static const char *const all5[] = {"data/ab/abcd", "data/ab/abce", "data/cd/cdef",
                                       "database/y", "datafile"};
    static const uint64_t sizes5[] = {10, 11, 12, 13, 15};
    expect_list("data", all5, sizes5, 5);
    expect_list("dat", all5, sizes5, 5);
    expect_list("index/", (const char *const[]){"index/x"}, (const uint64_t[]){14}, 1);
    expect_list("index", (const char *const[]){"index/x"}, (const uint64_t[]){14}, 1);
    expect_list("index/x", (const char *const[]){"index/x"}, (const uint64_t[]){14}, 1);

    /* Nothing there: no error, no calls. */
    expect_list("data/zz/", NULL, NULL, 0);
    expect_list("nope/deeper/", NULL, NULL, 0);
    expect_list("datafile/", NULL, NULL, 0); /* below an object */
    expect_list("index/x/", NULL, NULL, 0);
    expect_list("zzz", NULL, NULL, 0);

    /* The empty prefix lists everything, with well-formed names. */
    coll c;
    list_all("", &c);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(coll_count(&c, all5[i], NULL), 1);
    assert_int_equal(coll_count(&c, "index/x", NULL), 1);
    for (size_t i = 0; i < c.n; i++) {
        const char *n = c.names[i];
        assert_true(n[0] != '\0' && n[0] != '/');
        assert_null(strstr(n, "//"));
        assert_null(strstr(n, ".tmp-"));
        assert_true(n[strlen(n) - 1] != '/');
    }
    coll_free(&c);

    for (size_t i = 0; i < 5; i++)
        remove_ok(all5[i]);
    remove_ok("index/x");
    expect_list("data", NULL, NULL, 0);
    expect_list("index/", NULL, NULL, 0);
}

static void test_list_stop(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "stop/%d", i);
        put_ok(name, "s", 1);
    }
    coll c = {.stop_after = 2, .stop_rc = 42};
    assert_int_equal(cf_storage_list(g_st, "stop/", coll_cb, &c), 42);
    assert_int_equal(c.n, 2);
    coll_free(&c);

    c = (coll){.stop_after = 1, .stop_rc = CF_ECANCELLED};
    assert_int_equal(cf_storage_list(g_st, "stop/", coll_cb, &c), CF_ECANCELLED);
    assert_int_equal(c.n, 1);
    coll_free(&c);

    c = (coll){.stop_after = 5, .stop_rc = -1000};
    assert_int_equal(cf_storage_list(g_st, "stop/", coll_cb, &c), -1000);
    assert_int_equal(c.n, 5);
    coll_free(&c);

    assert_int_equal(remove_all("stop/"), 0);
}

static void test_remove_then_list(void **state)
{
    (void)state;
    put_ok("rm/a", "aa", 2);
    put_ok("rm/b", "bbb", 3);
    put_ok("rm/sub/c", "c", 1);
    remove_ok("rm/b");
    expect_list("rm/", (const char *const[]){"rm/a", "rm/sub/c"}, (const uint64_t[]){2, 1}, 2);
    uint64_t size;
    expect_error(cf_storage_stat(g_st, "rm/b", &size), CF_ENOTFOUND, "rm/b");
    expect_get_error("rm/b", 0, 0, CF_ENOTFOUND);
    expect_error(cf_storage_remove(g_st, "rm/b"), CF_ENOTFOUND, "rm/b");

    remove_ok("rm/sub/c");
    expect_list("rm/", (const char *const[]){"rm/a"}, (const uint64_t[]){2}, 1);
    /* The folder is now empty: putting into it again works. */
    put_ok("rm/sub/d", "d", 1);
    expect_content("rm/sub/d", (const uint8_t *)"d", 1);
    remove_ok("rm/sub/d");
    remove_ok("rm/a");
    expect_list("rm/", NULL, NULL, 0);
    expect_list("rm", NULL, NULL, 0);
}

static void test_invalid_names(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "../x", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a/./b", "x/.tmp-1",
        "../conformance-escape",
    };
    uint64_t size;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *n = bad[i];
        uint8_t *out = NULL;
        size_t out_len = 0;
        expect_error(cf_storage_put(g_st, n, "x", 1, 0), CF_EINVAL, NULL);
        expect_error(cf_storage_put(g_st, n, "x", 1, CF_PUT_EXCLUSIVE), CF_EINVAL, NULL);
        expect_error(cf_storage_get(g_st, n, 0, 0, &out, &out_len), CF_EINVAL, NULL);
        assert_null(out);
        expect_error(cf_storage_stat(g_st, n, &size), CF_EINVAL, NULL);
        expect_error(cf_storage_remove(g_st, n), CF_EINVAL, NULL);
    }
    static const char *const bad_prefix[] = {"/abs", "../", "a//", "x/../y", ".."};
    for (size_t i = 0; i < sizeof(bad_prefix) / sizeof(bad_prefix[0]); i++) {
        coll c = {0};
        expect_error(cf_storage_list(g_st, bad_prefix[i], coll_cb, &c), CF_EINVAL, NULL);
        assert_int_equal(c.n, 0);
    }
    /* Nothing was written anywhere, in particular not outside the location. */
    coll c;
    list_all("", &c);
    assert_int_equal(coll_count(&c, "x", NULL), 0);
    assert_int_equal(coll_count(&c, "abs", NULL), 0);
    coll_free(&c);
    if (g_local_root) {
        char *outside = cf_asprintf("%s/../conformance-escape", g_local_root);
        assert_non_null(outside);
        assert_int_equal(access(outside, F_OK), -1);
        free(outside);
    }

    /* Length: 1024 bytes is the most a name may have (the S3 and Azure limit). */
    char name[CF_STORAGE_NAME_MAX + 2];
    memset(name, 'n', sizeof(name));
    for (size_t i = 200; i < sizeof(name); i += 200)
        name[i] = '/';
    name[CF_STORAGE_NAME_MAX] = '\0';
    name[CF_STORAGE_NAME_MAX - 1] = 'z';
    put_ok(name, "long", 4);
    expect_content(name, (const uint8_t *)"long", 4);
    remove_ok(name);
    name[CF_STORAGE_NAME_MAX] = 'q';
    name[CF_STORAGE_NAME_MAX + 1] = '\0';
    expect_error(cf_storage_put(g_st, name, "x", 1, 0), CF_EINVAL, NULL);
    expect_error(cf_storage_stat(g_st, name, &size), CF_EINVAL, NULL);

    /* Names with dots and dashes inside components are fine. */
    put_ok("dots/.hidden", "h", 1);
    put_ok("dots/a.b-c_d", "i", 1);
    expect_list("dots/", (const char *const[]){"dots/.hidden", "dots/a.b-c_d"},
                (const uint64_t[]){1, 1}, 2);
    assert_int_equal(remove_all("dots/"), 0);
}

static void test_open_missing(void **state)
{
    (void)state;
    char *url = cf_asprintf("%s-missing-%ld%s", g_url, (long)getpid(), g_local_root ? "/sub" : "");
    assert_non_null(url);
    cf_storage *st = (cf_storage *)&st;
    int rc = cf_storage_open(&st, url, 0);
    expect_error(rc, CF_ENOREPO, NULL);
    assert_null(st);
    /* ... and nothing was created by trying. */
    rc = cf_storage_open(&st, url, 0);
    expect_error(rc, CF_ENOREPO, NULL);
    if (g_local_root) {
        char *path = cf_asprintf("%s-missing-%ld", g_local_root, (long)getpid());
        assert_non_null(path);
        assert_int_equal(access(path, F_OK), -1);
        free(path);
    }
    free(url);

    /* Unknown schemes are refused with a hint listing the known ones. */
    rc = cf_storage_open(&st, "nosuchscheme:somewhere", CF_STORAGE_CREATE);
    expect_error(rc, CF_EUNSUPPORTED, "nosuchscheme:somewhere");
    assert_non_null(cf_error_last()->hint);
    assert_non_null(strstr(cf_error_last()->hint, "mem:"));
    assert_null(st);
}

static void test_two_handles(void **state)
{
    (void)state;
    cf_storage *other = NULL;
    if (cf_storage_open(&other, g_url, 0) != 0)
        fail_msg("reopen '%s': %s", g_url, cf_error_last()->message);
    put_ok("shared/a", "one", 3);
    uint64_t size = 0;
    assert_int_equal(cf_storage_stat(other, "shared/a", &size), 0);
    assert_int_equal(size, 3);
    assert_int_equal(cf_storage_put(other, "shared/b", "two", 3, 0), 0);
    expect_content("shared/b", (const uint8_t *)"two", 3);
    assert_int_equal(cf_storage_remove(other, "shared/a"), 0);
    expect_get_error("shared/a", 0, 0, CF_ENOTFOUND);
    cf_storage_close(other);
    remove_ok("shared/b");
}

#define MANY 500

static void test_many(void **state)
{
    (void)state;
    char name[64];
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "many/%02x/obj-%d", i % 16, i);
        put_pattern(name, (size_t)(i % 37), (uint32_t)i);
    }
    coll c;
    list_all("many/", &c);
    assert_int_equal(c.n, MANY);
    int seen[MANY] = {0};
    for (size_t k = 0; k < c.n; k++) {
        unsigned dir = 0;
        int i = -1;
        assert_int_equal(sscanf(c.names[k], "many/%2x/obj-%d", &dir, &i), 2);
        assert_true(i >= 0 && i < MANY);
        assert_int_equal(dir, (unsigned)(i % 16));
        assert_int_equal(c.sizes[k], (uint64_t)(i % 37));
        seen[i]++;
    }
    for (int i = 0; i < MANY; i++)
        if (seen[i] != 1)
            fail_msg("object %d listed %d times", i, seen[i]);
    coll_free(&c);

    /* One folder of the many. */
    list_all("many/0a/", &c);
    assert_int_equal(c.n, (MANY + 15 - 10) / 16);
    coll_free(&c);

    assert_int_equal(remove_all("many/"), 0);
    expect_list("many/", NULL, NULL, 0);
}

static void test_space(void **state)
{
    (void)state;
    uint64_t free_bytes = 0;
    int rc = cf_storage_space(g_st, &free_bytes);
    if (rc == CF_EUNSUPPORTED)
        return;
    assert_int_equal(rc, 0);
    assert_true(free_bytes > 0);
}

static void test_cleanup_leaves_empty(void **state)
{
    (void)state;
    assert_int_equal(remove_all(""), 0);
    expect_list("", NULL, NULL, 0);
}

/* ---- local driver only ---- */

static void test_local_no_tmp(void **state)
{
    (void)state;
    if (!g_local_root)
        skip();
    /* Puts of every kind, including failing exclusive ones. */
    put_pattern("tmpcheck/a", 10, 1);
    put_pattern("tmpcheck/a", 20, 2);
    assert_int_equal(cf_storage_put(g_st, "tmpcheck/a", "x", 1, CF_PUT_EXCLUSIVE), CF_EEXISTS);
    assert_int_equal(cf_storage_put(g_st, "tmpcheck/b", "x", 1, CF_PUT_EXCLUSIVE), 0);
    put_pattern("tmpcheck/deep/er/c", 1 << 20, 3);
    put_ok("tmpcheck/empty", "", 0);

    size_t tmp_files = 0, loose = 0;
    scan_local(g_local_root, &tmp_files, &loose);
    assert_int_equal(tmp_files, 0);
    assert_int_equal(loose, 0); /* files 0600, folders 0700 */
    assert_int_equal(remove_all("tmpcheck/"), 0);
}

static void test_local_readonly(void **state)
{
    (void)state;
    if (!g_local_root)
        skip();
    if (geteuid() == 0) /* root ignores directory permissions */
        skip();
    put_ok("ro/a", "original", 8);
    char *dir = cf_asprintf("%s/ro", g_local_root);
    assert_non_null(dir);
    assert_int_equal(chmod(dir, 0500), 0);

    expect_error(cf_storage_put(g_st, "ro/b", "new", 3, 0), CF_EPERM, "ro/b");
    expect_error(cf_storage_put(g_st, "ro/b", "new", 3, CF_PUT_EXCLUSIVE), CF_EPERM, "ro/b");
    expect_error(cf_storage_put(g_st, "ro/a", "replaced", 8, 0), CF_EPERM, "ro/a");
    expect_error(cf_storage_put(g_st, "ro/sub/c", "new", 3, 0), CF_EPERM, "ro/sub/c");
    expect_error(cf_storage_remove(g_st, "ro/a"), CF_EPERM, "ro/a");

    /* Nothing partial is visible, and the old object is intact. */
    uint64_t size;
    expect_error(cf_storage_stat(g_st, "ro/b", &size), CF_ENOTFOUND, "ro/b");
    expect_list("ro/", (const char *const[]){"ro/a"}, (const uint64_t[]){8}, 1);
    expect_content("ro/a", (const uint8_t *)"original", 8);
    size_t tmp_files = 0, loose = 0;
    scan_local(dir, &tmp_files, &loose);
    assert_int_equal(tmp_files, 0);

    assert_int_equal(chmod(dir, 0700), 0);
    free(dir);
    remove_ok("ro/a");
}

/* ---- mem driver only (must run last: it drops every mem store) ---- */

static void test_mem_inject(void **state)
{
    (void)state;
    if (!g_mem_store)
        skip();
    put_ok("inj/a", "abc", 3);
    uint8_t *out = NULL;
    size_t len = 0;
    uint64_t size = 0;

    assert_int_equal(cf_storage_mem_inject(g_mem_store, "get", 3, CF_ERETRYABLE), 0);
    for (int i = 1; i <= 7; i++) {
        int rc = cf_storage_get(g_st, "inj/a", 0, 0, &out, &len);
        if (i % 3 == 0) {
            expect_error(rc, CF_ERETRYABLE, "inj/a");
            assert_null(out);
        } else {
            assert_int_equal(rc, 0);
            free(out);
            out = NULL;
        }
    }
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "get", 0, 0), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cf_storage_get(g_st, "inj/a", 0, 0, &out, &len), 0);
        free(out);
        out = NULL;
    }

    /* A failed put has no effect. */
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "put", 1, CF_ENOSPACE), 0);
    expect_error(cf_storage_put(g_st, "inj/b", "x", 1, 0), CF_ENOSPACE, "inj/b");
    expect_error(cf_storage_put(g_st, "inj/a", "xyz!", 4, 0), CF_ENOSPACE, "inj/a");
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "put", 0, 0), 0);
    expect_error(cf_storage_stat(g_st, "inj/b", &size), CF_ENOTFOUND, "inj/b");
    expect_content("inj/a", (const uint8_t *)"abc", 3);

    assert_int_equal(cf_storage_mem_inject(g_mem_store, "list", 2, CF_EIO), 0);
    coll c = {0};
    assert_int_equal(cf_storage_list(g_st, "inj/", coll_cb, &c), 0);
    assert_int_equal(cf_storage_list(g_st, "inj/", coll_cb, &c), CF_EIO);
    coll_free(&c);
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "list", 0, 0), 0);

    assert_int_equal(cf_storage_mem_inject(g_mem_store, "stat", 1, CF_EAUTH), 0);
    expect_error(cf_storage_stat(g_st, "inj/a", &size), CF_EAUTH, "inj/a");
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "stat", 0, 0), 0);

    assert_int_equal(cf_storage_mem_inject(g_mem_store, "remove", 1, CF_ERETRYABLE), 0);
    expect_error(cf_storage_remove(g_st, "inj/a"), CF_ERETRYABLE, "inj/a");
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "remove", 0, 0), 0);
    remove_ok("inj/a");

    assert_int_equal(cf_storage_mem_inject(g_mem_store, "frobnicate", 1, CF_EIO), CF_EINVAL);
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "get", 1, 0), CF_EINVAL);
    assert_int_equal(cf_storage_mem_inject(g_mem_store, "get", -1, CF_EIO), CF_EINVAL);
    assert_int_equal(cf_storage_mem_inject("no-such-store-ever", "get", 1, CF_EIO), CF_ENOREPO);
}

static void test_mem_shape(void **state)
{
    (void)state;
    if (!g_mem_store)
        skip();
    /* Like a file system: a name cannot be both an object and a folder. */
    put_ok("shape/a", "x", 1);
    assert_int_equal(cf_storage_put(g_st, "shape/a/b", "y", 1, 0), CF_EIO);
    assert_int_equal(cf_storage_put(g_st, "shape", "y", 1, 0), CF_EIO);
    assert_int_equal(cf_storage_put(g_st, "shape", "y", 1, CF_PUT_EXCLUSIVE), CF_EEXISTS);
    expect_content("shape/a", (const uint8_t *)"x", 1);
    assert_int_equal(remove_all("shape/"), 0);
}

static void test_mem_reset(void **state)
{
    (void)state;
    if (!g_mem_store)
        skip();
    put_ok("reset/a", "x", 1);
    cf_storage_mem_reset();
    uint64_t size;
    expect_error(cf_storage_stat(g_st, "reset/a", &size), CF_ENOREPO, g_mem_store);
    expect_error(cf_storage_put(g_st, "reset/a", "x", 1, 0), CF_ENOREPO, g_mem_store);
    coll c = {0};
    expect_error(cf_storage_list(g_st, "", coll_cb, &c), CF_ENOREPO, g_mem_store);
    cf_storage *st = NULL;
    expect_error(cf_storage_open(&st, g_url, 0), CF_ENOREPO, g_mem_store);
    assert_int_equal(cf_storage_open(&st, g_url, CF_STORAGE_CREATE), 0);
    /* The old handle sees the new, empty store of the same name. */
    expect_error(cf_storage_stat(g_st, "reset/a", &size), CF_ENOTFOUND, "reset/a");
    cf_storage_close(st);
    cf_storage_mem_reset();
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL   (mem:NAME, local:PATH, ...)\n", argv[0]);
        return 2;
    }
    g_url = argv[1];
    if (strncmp(g_url, "local:", 6) == 0)
        g_local_root = g_url + 6;
    else if (strncmp(g_url, "mem:", 4) == 0)
        g_mem_store = g_url + 4;
    else if (g_url[0] == '/' || g_url[0] == '.')
        g_local_root = g_url;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_handle),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_overwrite),
        cmocka_unit_test(test_exclusive),
        cmocka_unit_test(test_exclusive_race),
        cmocka_unit_test(test_list_prefix),
        cmocka_unit_test(test_list_stop),
        cmocka_unit_test(test_remove_then_list),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_open_missing),
        cmocka_unit_test(test_two_handles),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_space),
        cmocka_unit_test(test_local_no_tmp),
        cmocka_unit_test(test_local_readonly),
        cmocka_unit_test(test_cleanup_leaves_empty),
        cmocka_unit_test(test_mem_inject),
        cmocka_unit_test(test_mem_shape),
        cmocka_unit_test(test_mem_reset),
    };
    return cmocka_run_group_tests_name(g_url, tests, group_setup, group_teardown);
}
