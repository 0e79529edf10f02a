/*
 * test_chunker.c - FastCDC chunker: parameter checks, determinism, size bounds, average size,
 * keying, resynchronisation after an insertion, zero runs and the need-more-data contract.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chunk/chunker.h"
#include "crypto/crypto.h"
#include "util/util.h"

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint8_t *random_buf(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n);
    assert_non_null(p);
    uint64_t s = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        cf_le64_put(p + i, splitmix64(&s));
    for (; i < n; i++)
        p[i] = (uint8_t)splitmix64(&s);
    return p;
}

static const uint8_t key_a[32] = {0x6b, 0x65, 0x79, 0x20, 0x61, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const uint8_t key_b[32] = {0x6b, 0x65, 0x79, 0x20, 0x62, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

static const cf_chunk_params small_params = {16u * 1024u, 64u * 1024u, 256u * 1024u};
static const cf_chunk_params default_params = {CF_CHUNK_MIN_DEFAULT, CF_CHUNK_AVG_DEFAULT,
                                               CF_CHUNK_MAX_DEFAULT};

static cf_chunker *chunker(const cf_chunk_params *p, const uint8_t *key)
{
    cf_chunker *c = NULL;
    assert_int_equal(cf_chunker_new(&c, p, key), 0);
    assert_non_null(c);
    return c;
}

/* Chunk lengths of a whole buffer (everything available, eof true). */
typedef struct {
    size_t *len;
    size_t n;
} cuts;

static cuts chunk_all(const cf_chunker *c, const uint8_t *data, size_t n)
{
    cuts r = {NULL, 0};
    size_t cap = 0, pos = 0;
    while (pos < n) {
        size_t len = cf_chunker_cut(c, data + pos, n - pos, true);
        assert_true(len > 0 && len <= n - pos);
        if (r.n == cap) {
            cap = cap ? cap * 2 : 64;
            r.len = realloc(r.len, cap * sizeof(*r.len));
            assert_non_null(r.len);
        }
        r.len[r.n++] = len;
        pos += len;
    }
    return r;
}

/* Check bounds and total; returns the total. */
static size_t check_bounds(const cuts *r, const cf_chunk_params *p, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (i + 1 < r->n)
            assert_true(r->len[i] >= p->min);
        assert_true(r->len[i] >= 1);
        assert_true(r->len[i] <= p->max);
        total += r->len[i];
    }
    assert_int_equal(total, n);
    return total;
}

static bool cuts_equal(const cuts *a, const cuts *b)
{
    return a->n == b->n && memcmp(a->len, b->len, a->n * sizeof(*a->len)) == 0;
}

/* ---- tests ---- */

static void test_params(void **state)
{
    (void)state;
    cf_chunk_params p = default_params;
    assert_int_equal(cf_chunk_params_validate(&p), 0);
    assert_int_equal(cf_chunk_params_validate(&small_params), 0);
    cf_chunk_params tiny = {64, 128, 256};
    assert_int_equal(cf_chunk_params_validate(&tiny), 0);
    cf_chunk_params big = {16u << 20, 32u << 20, 64u << 20}; /* the largest allowed */
    assert_int_equal(cf_chunk_params_validate(&big), 0);

    const cf_chunk_params bad[] = {
        {63, 128, 256},               /* min too small */
        {0, 128, 256},                /* min zero */
        {128, 128, 256},              /* min == avg */
        {200, 128, 256},              /* min > avg */
        {64, 256, 256},               /* avg == max */
        {64, 512, 256},               /* avg > max */
        {64, 96, 256},                /* avg not a power of two */
        {1024, 4096, (64u << 20) + 1}, /* max over 64 MiB */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cf_chunk_params_validate(&bad[i]), CF_EINVAL);
        assert_int_equal(cf_error_last()->code, CF_EINVAL);
        cf_chunker *c = (cf_chunker *)(uintptr_t)1;
        assert_int_equal(cf_chunker_new(&c, &bad[i], key_a), CF_EINVAL);
        assert_null(c);
    }
    assert_int_equal(cf_chunk_params_validate(NULL), CF_EINVAL);
    cf_chunker *c = NULL;
    assert_int_equal(cf_chunker_new(&c, NULL, key_a), CF_EINVAL);
    assert_int_equal(cf_chunker_new(&c, &p, NULL), CF_EINVAL);
    assert_int_equal(cf_chunker_new(NULL, &p, key_a), CF_EINVAL);

    c = chunker(&small_params, key_a);
    const cf_chunk_params *got = cf_chunker_params(c);
    assert_int_equal(got->min, small_params.min);
    assert_int_equal(got->avg, small_params.avg);
    assert_int_equal(got->max, small_params.max);
    cf_chunker_free(c);
    cf_chunker_free(NULL);
}

static void test_deterministic_and_bounded(void **state)
{
    (void)state;
    const size_t n = 8u << 20;
    uint8_t *data = random_buf(n, 1);
    cf_chunker *c1 = chunker(&small_params, key_a);
    cf_chunker *c2 = chunker(&small_params, key_a);
    cuts a = chunk_all(c1, data, n);
    cuts b = chunk_all(c2, data, n);
    cuts again = chunk_all(c1, data, n);
    assert_true(cuts_equal(&a, &b));
    assert_true(cuts_equal(&a, &again));
    check_bounds(&a, &small_params, n);
    assert_true(a.n > 20);

    /* Tiny parameters exercise the smallest masks. */
    cf_chunk_params tiny = {64, 128, 256};
    cf_chunker *ct = chunker(&tiny, key_a);
    cuts t = chunk_all(ct, data, 1u << 20);
    check_bounds(&t, &tiny, 1u << 20);
    cf_chunker_free(ct);
    free(t.len);

    free(a.len);
    free(b.len);
    free(again.len);
    cf_chunker_free(c1);
    cf_chunker_free(c2);
    free(data);
}

/*
 * The way a reader uses it: a window buffer of max bytes refilled by short reads, the chunk
 * taken from its front and the rest moved down. The chunks are the same as with the whole
 * buffer at once, and concatenated they are the input.
 */
static void test_streaming_reassembly(void **state)
{
    (void)state;
    const size_t n = 4u << 20, max = small_params.max;
    uint8_t *data = random_buf(n, 2);
    uint8_t *win = malloc(max);
    uint8_t *out = malloc(n);
    assert_non_null(win);
    assert_non_null(out);
    cf_chunker *c = chunker(&small_params, key_a);
    cuts whole = chunk_all(c, data, n);

    uint64_t s = 99;
    size_t read_pos = 0, fill = 0, out_len = 0, k = 0;
    for (;;) {
        bool eof = read_pos == n;
        size_t len = cf_chunker_cut(c, win, fill, eof);
        if (len == 0) {
            if (eof)
                break;
            assert_true(fill < max);
            size_t want = (size_t)(splitmix64(&s) % 100000u) + 1;
            if (want > max - fill)
                want = max - fill;
            if (want > n - read_pos)
                want = n - read_pos;
            memcpy(win + fill, data + read_pos, want);
            fill += want;
            read_pos += want;
            continue;
        }
        assert_true(len <= fill);
        assert_true(k < whole.n);
        assert_int_equal(len, whole.len[k]);
        k++;
        memcpy(out + out_len, win, len);
        out_len += len;
        memmove(win, win + len, fill - len);
        fill -= len;
    }
    assert_int_equal(k, whole.n);
    assert_int_equal(out_len, n);
    assert_memory_equal(out, data, n);
    free(whole.len);
    cf_chunker_free(c);
    free(out);
    free(win);
    free(data);
}

static void average_check(const cf_chunk_params *p, size_t n, uint64_t seed)
{
    uint8_t *data = random_buf(n, seed);
    cf_chunker *c = chunker(p, key_a);
    cuts r = chunk_all(c, data, n);
    check_bounds(&r, p, n);
    double avg = (double)n / (double)r.n;
    print_message("params %u/%u/%u on %zu MiB: %zu chunks, average %.0f bytes (%.2f x avg)\n",
                  p->min, p->avg, p->max, n >> 20, r.n, avg, avg / p->avg);
    assert_true(avg >= 0.7 * p->avg);
    assert_true(avg <= 1.3 * p->avg);
    free(r.len);
    cf_chunker_free(c);
    free(data);
}

static void test_average_small(void **state)
{
    (void)state;
    average_check(&small_params, 64u << 20, 3);
}

static void test_average_default(void **state)
{
    (void)state;
    average_check(&default_params, 32u << 20, 4);
}

static void test_key_changes_boundaries(void **state)
{
    (void)state;
    const size_t n = 4u << 20;
    uint8_t *data = random_buf(n, 5);
    cf_chunker *ca = chunker(&small_params, key_a);
    cf_chunker *cb = chunker(&small_params, key_b);
    cuts a = chunk_all(ca, data, n);
    cuts b = chunk_all(cb, data, n);
    check_bounds(&b, &small_params, n);
    assert_false(cuts_equal(&a, &b));
    /* Not merely shifted: the first boundaries already differ. */
    assert_int_not_equal(a.len[0], b.len[0]);
    free(a.len);
    free(b.len);
    cf_chunker_free(ca);
    cf_chunker_free(cb);
    free(data);
}

/* Chunk ids (SHA-256 of each chunk) of a whole buffer, sorted. */
static int id_cmp(const void *a, const void *b)
{
    return cf_id_cmp(a, b);
}

static cf_id *chunk_ids(const cf_chunker *c, const uint8_t *data, size_t n, size_t *count)
{
    cuts r = chunk_all(c, data, n);
    cf_id *ids = malloc(r.n * sizeof(*ids));
    assert_non_null(ids);
    size_t pos = 0;
    for (size_t i = 0; i < r.n; i++) {
        cf_sha256(ids[i].b, data + pos, r.len[i]);
        pos += r.len[i];
    }
    qsort(ids, r.n, sizeof(*ids), id_cmp);
    *count = r.n;
    free(r.len);
    return ids;
}

static void test_insertion_resyncs(void **state)
{
    (void)state;
    const size_t n = 16u << 20, ins = 100;
    uint8_t *a = random_buf(n, 6);
    uint8_t *b = malloc(n + ins);
    assert_non_null(b);
    uint8_t *extra = random_buf(ins, 7);
    memcpy(b, a, n / 2);
    memcpy(b + n / 2, extra, ins);
    memcpy(b + n / 2 + ins, a + n / 2, n - n / 2);

    cf_chunker *c = chunker(&small_params, key_a);
    size_t na = 0, nb = 0;
    cf_id *ia = chunk_ids(c, a, n, &na);
    cf_id *ib = chunk_ids(c, b, n + ins, &nb);
    size_t changed = 0;
    for (size_t i = 0; i < nb; i++)
        if (bsearch(&ib[i], ia, na, sizeof(*ia), id_cmp) == NULL)
            changed++;
    print_message("100-byte insertion into %zu chunks changed %zu\n", na, changed);
    assert_true(changed >= 1);
    assert_true(changed <= 3);
    free(ia);
    free(ib);
    free(extra);
    free(b);
    free(a);
    cf_chunker_free(c);
}

static void test_zeros_cut_at_max(void **state)
{
    (void)state;
    const cf_chunk_params *ps[] = {&small_params, &default_params};
    for (size_t k = 0; k < 2; k++) {
        const cf_chunk_params *p = ps[k];
        size_t n = (size_t)p->max * 3 + 12345;
        uint8_t *z = calloc(1, n);
        assert_non_null(z);
        cf_chunker *c = chunker(p, key_a);
        cuts r = chunk_all(c, z, n);
        assert_int_equal(r.n, 4);
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(r.len[i], p->max);
        assert_int_equal(r.len[3], 12345);
        /* With exactly max bytes and no eof the chunk is still complete. */
        assert_int_equal(cf_chunker_cut(c, z, p->max, false), p->max);
        assert_int_equal(cf_chunker_cut(c, z, n, false), p->max);
        free(r.len);
        cf_chunker_free(c);
        free(z);
    }
}

static void test_need_more_data(void **state)
{
    (void)state;
    cf_chunker *c = chunker(&small_params, key_a);
    uint8_t *z = calloc(1, small_params.max);
    assert_non_null(z);
    const size_t min = small_params.min, max = small_params.max;

    assert_int_equal(cf_chunker_cut(c, z, 0, false), 0);
    assert_int_equal(cf_chunker_cut(c, z, 0, true), 0);
    assert_int_equal(cf_chunker_cut(c, NULL, 0, true), 0);
    /* Up to min: no cut is possible; need more unless at the end. */
    assert_int_equal(cf_chunker_cut(c, z, 1, false), 0);
    assert_int_equal(cf_chunker_cut(c, z, 1, true), 1);
    assert_int_equal(cf_chunker_cut(c, z, min, false), 0);
    assert_int_equal(cf_chunker_cut(c, z, min, true), min);
    /* Zeros never cut (see above): below max it needs more, at eof it takes all. */
    assert_int_equal(cf_chunker_cut(c, z, min + 1, false), 0);
    assert_int_equal(cf_chunker_cut(c, z, max - 1, false), 0);
    assert_int_equal(cf_chunker_cut(c, z, max - 1, true), max - 1);
    assert_int_equal(cf_chunker_cut(c, z, max, false), max);

    /* Random data: a cut found in a short buffer is final even without eof, and matches. */
    uint8_t *r = random_buf(max, 8);
    size_t full = cf_chunker_cut(c, r, max, false);
    assert_true(full > min && full < max);
    assert_int_equal(cf_chunker_cut(c, r, full, false), full);
    assert_int_equal(cf_chunker_cut(c, r, full - 1, false), 0);
    assert_int_equal(cf_chunker_cut(c, r, full - 1, true), full - 1);
    free(r);
    free(z);
    cf_chunker_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_deterministic_and_bounded),
        cmocka_unit_test(test_streaming_reassembly),
        cmocka_unit_test(test_average_small),
        cmocka_unit_test(test_average_default),
        cmocka_unit_test(test_key_changes_boundaries),
        cmocka_unit_test(test_insertion_resyncs),
        cmocka_unit_test(test_zeros_cut_at_max),
        cmocka_unit_test(test_need_more_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
