/*
 * test_compress.c - round trips, the NONE decisions, the worthwhile estimate and hostile
 * input for compress/compress.c.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compress/compress.h"
#include "util/util.h"

/* ---- deterministic test data ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        cf_le64_put(p + i, splitmix64(&s));
    uint64_t last = splitmix64(&s);
    for (; i < n; i++, last >>= 8)
        p[i] = (uint8_t)last;
}

/* SQL-dump-like text: repetitive structure, varying numbers and words. */
static void fill_text(uint8_t *p, size_t n, uint64_t seed)
{
    static const char *const words[] = {"alpha", "bravo", "charlie", "delta", "echo",
                                        "foxtrot", "golf", "hotel", "india", "juliet"};
    uint64_t s = seed;
    size_t i = 0;
    char line[160];
    while (i < n) {
        uint64_t r = splitmix64(&s);
        int len = snprintf(line, sizeof(line),
                           "INSERT INTO accounts VALUES (%llu, '%s %s', %u.%02u, '2024-%02u-%02u');\n",
                           (unsigned long long)(r % 1000000), words[r % 10], words[(r >> 8) % 10],
                           (unsigned)((r >> 16) % 10000), (unsigned)((r >> 32) % 100),
                           (unsigned)((r >> 40) % 12 + 1), (unsigned)((r >> 48) % 28 + 1));
        size_t l = (size_t)len;
        if (l > n - i)
            l = n - i;
        memcpy(p + i, line, l);
        i += l;
    }
}

typedef struct {
    uint8_t *src, *dst, *back;
    size_t n, cap;
} bufs;

static void bufs_new(bufs *b, size_t n)
{
    b->n = n;
    b->cap = cf_compress_bound(n);
    b->src = malloc(n ? n : 1);
    b->dst = malloc(b->cap);
    b->back = malloc(n ? n : 1);
    assert_non_null(b->src);
    assert_non_null(b->dst);
    assert_non_null(b->back);
}

static void bufs_free(bufs *b)
{
    free(b->src);
    free(b->dst);
    free(b->back);
}

/* Compress b->src, check the algorithm, decompress whatever is to be stored, compare. */
static size_t roundtrip(bufs *b, int level, int want_algo)
{
    int algo = -1;
    size_t len = 0;
    assert_int_equal(cf_compress(&algo, &len, b->dst, b->cap, b->src, b->n, level), 0);
    assert_int_equal(algo, want_algo);
    const uint8_t *stored = algo == CF_COMP_NONE ? b->src : b->dst;
    size_t stored_len = algo == CF_COMP_NONE ? b->n : len;
    if (algo == CF_COMP_ZSTD)
        assert_true(len <= b->n - b->n / 32);
    memset(b->back, 0x5A, b->n ? b->n : 1);
    assert_int_equal(cf_decompress(b->back, b->n, stored, stored_len, algo), 0);
    if (b->n)
        assert_memory_equal(b->back, b->src, b->n);
    return stored_len;
}

static void test_roundtrip_text(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 1u << 20);
    fill_text(b.src, b.n, 1);
    size_t len = roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_ZSTD);
    assert_true(len < b.n / 3);
    /* Odd sizes, other levels, including a fast negative one. */
    b.n = 12345;
    roundtrip(&b, 1, CF_COMP_ZSTD);
    roundtrip(&b, 19, CF_COMP_ZSTD);
    roundtrip(&b, -5, CF_COMP_ZSTD);
    bufs_free(&b);
}

static void test_roundtrip_zeros(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 4u << 20);
    memset(b.src, 0, b.n);
    size_t len = roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_ZSTD);
    assert_true(len < 4096);
    bufs_free(&b);
}

static void test_roundtrip_random(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 1u << 20);
    fill_random(b.src, b.n, 2);
    roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_NONE);
    roundtrip(&b, 19, CF_COMP_NONE);
    b.n = 100; /* small random: frame overhead alone rules it out */
    roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_NONE);
    bufs_free(&b);
}

/* Random blocks repeated: a flat histogram, yet very compressible. */
static void test_roundtrip_repeated_random(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 1u << 20);
    fill_random(b.src, 1024, 3);
    for (size_t off = 1024; off < b.n; off += 1024)
        memcpy(b.src + off, b.src, 1024);
    assert_true(cf_compress_worthwhile(b.src, b.n));
    size_t len = roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_ZSTD);
    assert_true(len < b.n / 10);
    /* A byte ramp 0..255 repeated: uniform histogram, compresses to nearly nothing. */
    for (size_t i = 0; i < b.n; i++)
        b.src[i] = (uint8_t)i;
    assert_true(cf_compress_worthwhile(b.src, b.n));
    roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_ZSTD);
    bufs_free(&b);
}

static void test_empty_and_level0(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 0);
    roundtrip(&b, CF_COMP_LEVEL_DEFAULT, CF_COMP_NONE);
    assert_int_equal(cf_decompress(NULL, 0, NULL, 0, CF_COMP_NONE), 0);
    bufs_free(&b);

    bufs_new(&b, 65536);
    fill_text(b.src, b.n, 4);
    int algo = -1;
    size_t len = 0;
    assert_int_equal(cf_compress(&algo, &len, b.dst, b.cap, b.src, b.n, 0), 0);
    assert_int_equal(algo, CF_COMP_NONE);
    roundtrip(&b, 0, CF_COMP_NONE);
    bufs_free(&b);
}

static void test_compress_invalid(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 4096);
    fill_text(b.src, b.n, 5);
    int algo = 0;
    size_t len = 0;
    assert_int_equal(cf_compress(&algo, &len, b.dst, b.cap - 1, b.src, b.n, 3), CF_EINVAL);
    assert_int_equal(cf_error_last()->code, CF_EINVAL);
    assert_int_equal(cf_compress(&algo, &len, b.dst, b.cap, b.src, b.n, 99), CF_EINVAL);
    assert_int_equal(cf_compress(&algo, &len, b.dst, b.cap, b.src, b.n, -1000000), CF_EINVAL);
    assert_int_equal(cf_compress(NULL, &len, b.dst, b.cap, b.src, b.n, 3), CF_EINVAL);
    assert_int_equal(cf_compress(&algo, &len, NULL, 0, b.src, b.n, 3), CF_EINVAL);
    bufs_free(&b);
}

static void test_decompress_garbage(void **state)
{
    (void)state;
    uint8_t junk[512], out[4096];
    fill_random(junk, sizeof(junk), 6);
    assert_int_equal(cf_decompress(out, sizeof(out), junk, sizeof(junk), CF_COMP_ZSTD),
                     CF_ECORRUPT);
    assert_int_equal(cf_error_last()->code, CF_ECORRUPT);
    /* A valid magic number followed by junk. */
    junk[0] = 0x28;
    junk[1] = 0xb5;
    junk[2] = 0x2f;
    junk[3] = 0xfd;
    assert_int_equal(cf_decompress(out, sizeof(out), junk, sizeof(junk), CF_COMP_ZSTD),
                     CF_ECORRUPT);
    /* Too short to hold a frame header. */
    assert_int_equal(cf_decompress(out, sizeof(out), junk, 3, CF_COMP_ZSTD), CF_ECORRUPT);
    assert_int_equal(cf_decompress(out, sizeof(out), junk, 0, CF_COMP_ZSTD), CF_ECORRUPT);
    /* Unknown algorithm. */
    assert_int_equal(cf_decompress(out, sizeof(out), junk, sizeof(junk), 7), CF_EUNSUPPORTED);
    /* Missing buffers. */
    assert_int_equal(cf_decompress(NULL, 10, junk, 10, CF_COMP_NONE), CF_EINVAL);
}

static void test_decompress_wrong_len(void **state)
{
    (void)state;
    bufs b;
    bufs_new(&b, 100000);
    fill_text(b.src, b.n, 7);
    int algo = 0;
    size_t len = 0;
    assert_int_equal(cf_compress(&algo, &len, b.dst, b.cap, b.src, b.n, 3), 0);
    assert_int_equal(algo, CF_COMP_ZSTD);

    uint8_t *big = malloc(b.n + 10);
    assert_non_null(big);
    /* Shorter and longer than the real size: both corrupt, no overflow either way. */
    assert_int_equal(cf_decompress(big, b.n - 1, b.dst, len, CF_COMP_ZSTD), CF_ECORRUPT);
    assert_int_equal(cf_decompress(big, b.n + 10, b.dst, len, CF_COMP_ZSTD), CF_ECORRUPT);
    /* Truncated frame, and a frame with trailing bytes. */
    assert_int_equal(cf_decompress(big, b.n, b.dst, len - 1, CF_COMP_ZSTD), CF_ECORRUPT);
    uint8_t *ext = malloc(len + 4);
    assert_non_null(ext);
    memcpy(ext, b.dst, len);
    memset(ext + len, 0x33, 4);
    assert_int_equal(cf_decompress(big, b.n, ext, len + 4, CF_COMP_ZSTD), CF_ECORRUPT);
    /* A corrupted byte in the middle of the compressed data. */
    memcpy(ext, b.dst, len);
    ext[len / 2] ^= 0xff;
    int rc = cf_decompress(big, b.n, ext, len, CF_COMP_ZSTD);
    if (rc == 0) /* zstd may decode altered literals without noticing: then bytes differ */
        assert_memory_not_equal(big, b.src, b.n);
    else
        assert_int_equal(rc, CF_ECORRUPT);
    /* The intact frame still decodes. */
    assert_int_equal(cf_decompress(big, b.n, b.dst, len, CF_COMP_ZSTD), 0);
    assert_memory_equal(big, b.src, b.n);
    /* NONE with a length mismatch. */
    assert_int_equal(cf_decompress(big, b.n, b.src, b.n - 1, CF_COMP_NONE), CF_ECORRUPT);
    free(ext);
    free(big);
    bufs_free(&b);
}

static void test_worthwhile(void **state)
{
    (void)state;
    const size_t n = 8u << 20;
    uint8_t *p = malloc(n);
    assert_non_null(p);

    fill_random(p, n, 8);
    assert_false(cf_compress_worthwhile(p, n));
    assert_false(cf_compress_worthwhile(p, 10000)); /* below the sampling size */
    assert_false(cf_compress_worthwhile(p, 65536));

    fill_text(p, n, 9);
    assert_true(cf_compress_worthwhile(p, n));
    assert_true(cf_compress_worthwhile(p, 1000));

    memset(p, 0, n);
    assert_true(cf_compress_worthwhile(p, n));
    assert_true(cf_compress_worthwhile(p, 1));

    assert_false(cf_compress_worthwhile(p, 0));
    assert_false(cf_compress_worthwhile(NULL, 0));
    free(p);
}

/* Each thread uses its own contexts; contexts are freed at thread exit (LeakSanitizer).
 * No cmocka assertions off the main thread: failures are returned. */
static void *thread_main(void *arg)
{
    (void)arg;
    void *ret = (void *)1;
    const size_t n = 200000, cap = cf_compress_bound(n);
    uint8_t *src = malloc(n), *dst = malloc(cap), *back = malloc(n);
    if (src == NULL || dst == NULL || back == NULL)
        goto out;
    fill_text(src, n, 15);
    for (int i = 0; i < 5; i++) {
        int algo = 0;
        size_t len = 0;
        if (cf_compress(&algo, &len, dst, cap, src, n, 3) != 0 || algo != CF_COMP_ZSTD)
            goto out;
        if (cf_decompress(back, n, dst, len, algo) != 0 || memcmp(back, src, n) != 0)
            goto out;
    }
    ret = NULL;
out:
    free(src);
    free(dst);
    free(back);
    return ret;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, NULL), 0);
    for (int i = 0; i < 3; i++) {
        void *ret = (void *)1;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_text),
        cmocka_unit_test(test_roundtrip_zeros),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_roundtrip_repeated_random),
        cmocka_unit_test(test_empty_and_level0),
        cmocka_unit_test(test_compress_invalid),
        cmocka_unit_test(test_decompress_garbage),
        cmocka_unit_test(test_decompress_wrong_len),
        cmocka_unit_test(test_worthwhile),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
