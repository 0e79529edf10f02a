/*
 * test_index.c - the in-memory index (hash table of blob locations, pack numbering) and the
 * index file encoding of repo/index.c, including hostile index files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit/repo/repo_helpers.h"

#define IX_HEADER 16
#define IX_ENTRY 50

static cf_index_entry mk_entry(uint64_t seed, uint32_t pack)
{
    cf_index_entry e;
    uint64_t s = seed ^ 0x5eed;
    memset(&e, 0, sizeof(e));
    th_id(&e.id, seed);
    e.pack = pack;
    e.offset = (uint32_t)(24 + th_next(&s) % 1000000);
    e.length = (uint32_t)(CF_SEAL_OVERHEAD + th_next(&s) % 100000);
    e.raw_len = (uint32_t)(th_next(&s) % 200000);
    e.type = (uint8_t)(th_next(&s) & 1);
    e.comp = (uint8_t)(th_next(&s) & 1);
    return e;
}

static void assert_entry_eq(const cf_index_entry *got, const cf_index_entry *want)
{
    assert_non_null(got);
    assert_memory_equal(got->id.b, want->id.b, 32);
    assert_int_equal(got->offset, want->offset);
    assert_int_equal(got->length, want->length);
    assert_int_equal(got->raw_len, want->raw_len);
    assert_int_equal(got->type, want->type);
    assert_int_equal(got->comp, want->comp);
}

/* An index with npacks packs and n entries spread over them. */
static void build(cf_index *ix, size_t npacks, size_t n, uint64_t seed)
{
    cf_index__init(ix);
    for (size_t p = 0; p < npacks; p++) {
        cf_id pid;
        uint32_t no = 99;
        th_id(&pid, seed * 1000003u + 7777u + p);
        th_ok(cf_index__pack_no(ix, &pid, &no));
        assert_int_equal(no, p);
    }
    for (size_t i = 0; i < n; i++) {
        cf_index_entry e = mk_entry(seed * 1000003u + i, (uint32_t)(i % npacks));
        th_ok(cf_index__add(ix, &e));
    }
    assert_int_equal(cf_index__count(ix), n);
}

static void encode(cf_buf *out, cf_index *ix, const cf_id *only, size_t n_only)
{
    cf_buf_init(out, 0);
    th_ok(cf_index__encode(out, ix, only, n_only));
}

/* ------------------------------------------------------------------ table */

static void test_add_get(void **state)
{
    (void)state;
    cf_index ix;
    cf_index__init(&ix);
    cf_id absent;
    th_id(&absent, 424242);
    assert_null(cf_index__get(&ix, &absent)); /* empty table */
    cf_id pid;
    uint32_t no;
    th_id(&pid, 1);
    th_ok(cf_index__pack_no(&ix, &pid, &no));
    for (uint64_t i = 0; i < 1000; i++) {
        cf_index_entry e = mk_entry(i, no);
        th_ok(cf_index__add(&ix, &e));
    }
    assert_int_equal(cf_index__count(&ix), 1000);
    for (uint64_t i = 0; i < 1000; i++) {
        cf_index_entry e = mk_entry(i, no);
        const cf_index_entry *g = cf_index__get(&ix, &e.id);
        assert_entry_eq(g, &e);
        assert_int_equal(g->pack, no);
        assert_true(g->used);
    }
    assert_null(cf_index__get(&ix, &absent));
    cf_index__free(&ix);
    assert_int_equal(cf_index__count(&ix), 0);
    assert_null(cf_index__get(&ix, &absent)); /* freed table is empty, not dangling */
}

static void test_duplicate_keeps_first(void **state)
{
    (void)state;
    cf_index ix;
    cf_index__init(&ix);
    cf_index_entry a = mk_entry(5, 0), b = mk_entry(6, 1);
    b.id = a.id;
    th_ok(cf_index__add(&ix, &a));
    th_ok(cf_index__add(&ix, &b));
    assert_int_equal(cf_index__count(&ix), 1);
    const cf_index_entry *g = cf_index__get(&ix, &a.id);
    assert_entry_eq(g, &a);
    assert_int_equal(g->pack, 0);
    /* also after the table has grown around it */
    for (uint64_t i = 100; i < 5000; i++) {
        cf_index_entry e = mk_entry(i, 0);
        th_ok(cf_index__add(&ix, &e));
    }
    th_ok(cf_index__add(&ix, &b));
    assert_int_equal(cf_index__count(&ix), 1 + 4900);
    assert_entry_eq(cf_index__get(&ix, &a.id), &a);
    cf_index__free(&ix);
}

static void test_growth(void **state)
{
    (void)state;
    const size_t n = 200000;
    cf_index ix;
    cf_index__init(&ix);
    size_t resizes = 0, cap = 0;
    for (size_t i = 0; i < n; i++) {
        cf_index_entry e = mk_entry(1000000 + i, 0);
        th_ok(cf_index__add(&ix, &e));
        if (ix.cap != cap) {
            resizes++;
            cap = ix.cap;
        }
    }
    assert_int_equal(cf_index__count(&ix), n);
    assert_true(resizes >= 8);
    assert_int_equal(ix.cap & (ix.cap - 1), 0); /* power of two */
    assert_true(ix.count * 10 <= ix.cap * 7);    /* load factor kept */
    size_t used = 0;
    for (size_t i = 0; i < ix.cap; i++)
        used += ix.slots[i].used;
    assert_int_equal(used, n);
    for (size_t i = 0; i < n; i++) {
        cf_index_entry e = mk_entry(1000000 + i, 0);
        assert_entry_eq(cf_index__get(&ix, &e.id), &e);
    }
    for (size_t i = 0; i < 1000; i++) {
        cf_index_entry e = mk_entry(9000000 + i, 0);
        assert_null(cf_index__get(&ix, &e.id));
    }
    cf_index__free(&ix);
}

static void test_pack_numbering(void **state)
{
    (void)state;
    cf_index ix;
    cf_index__init(&ix);
    cf_id p;
    th_id(&p, 1);
    assert_false(cf_index__has_pack(&ix, &p));
    /* 1000 packs: crosses the growth of both the pack table and its hash slots */
    for (uint32_t i = 0; i < 1000; i++) {
        uint32_t no = UINT32_MAX;
        th_id(&p, 50000 + i);
        th_ok(cf_index__pack_no(&ix, &p, &no));
        assert_int_equal(no, i);
    }
    assert_int_equal(ix.npacks, 1000);
    for (uint32_t i = 0; i < 1000; i++) {
        uint32_t no = UINT32_MAX;
        th_id(&p, 50000 + i);
        assert_true(cf_index__has_pack(&ix, &p));
        th_ok(cf_index__pack_no(&ix, &p, &no)); /* known pack: same number, nothing added */
        assert_int_equal(no, i);
        assert_memory_equal(ix.packs[i].b, p.b, 32);
    }
    assert_int_equal(ix.npacks, 1000);
    th_id(&p, 1);
    assert_false(cf_index__has_pack(&ix, &p));
    cf_index__free(&ix);
}

static void test_resolve_pending(void **state)
{
    (void)state;
    cf_index ix;
    cf_index__init(&ix);
    cf_id unknown;
    th_id(&unknown, 77);
    cf_index__resolve_pending(&ix, &unknown, 3); /* empty index: no effect, no crash */
    cf_index_entry a = mk_entry(1, CF_INDEX_PENDING), b = mk_entry(2, 0);
    th_ok(cf_index__add(&ix, &a));
    th_ok(cf_index__add(&ix, &b));
    cf_index__resolve_pending(&ix, &a.id, 4);
    cf_index__resolve_pending(&ix, &b.id, 9); /* not pending: keeps its pack */
    cf_index__resolve_pending(&ix, &unknown, 3);
    assert_int_equal(cf_index__get(&ix, &a.id)->pack, 4);
    assert_int_equal(cf_index__get(&ix, &b.id)->pack, 0);
    assert_int_equal(cf_index__count(&ix), 2);
    cf_index__free(&ix);
}

/* ------------------------------------------------------------------ encoding */

static void assert_same_entries(cf_index *got, cf_index *want, bool only_some,
                                const cf_id *packs, size_t npacks)
{
    size_t expected = 0;
    size_t npos = cf_index__positions(want);
    for (size_t i = 0; i < npos; i++) {
        cf_index_entry ent;
        const cf_index_entry *e = &ent;
        if (!cf_index__at(want, i, &ent) || e->pack >= want->npacks)
            continue;
        bool included = !only_some;
        for (size_t k = 0; k < npacks && !included; k++)
            included = cf_id_eq(&packs[k], &want->packs[e->pack]);
        const cf_index_entry *g = cf_index__get(got, &e->id);
        if (!included) {
            assert_null(g);
            continue;
        }
        expected++;
        assert_entry_eq(g, e);
        assert_true(g->pack < got->npacks);
        assert_memory_equal(got->packs[g->pack].b, want->packs[e->pack].b, 32);
    }
    assert_int_equal(cf_index__count(got), expected);
}

static void test_roundtrip_all(void **state)
{
    (void)state;
    cf_index ix, back;
    build(&ix, 7, 3000, 11);
    /* a pending entry is not in any pack yet and must not be written */
    cf_index_entry pend = mk_entry(999999, CF_INDEX_PENDING);
    th_ok(cf_index__add(&ix, &pend));
    cf_buf b;
    encode(&b, &ix, NULL, 0);
    assert_int_equal(b.len, IX_HEADER + 7 * 32 + 3000 * IX_ENTRY);
    assert_memory_equal(b.data, "CFIX", 4);
    cf_index__init(&back);
    th_ok(cf_index__decode(&back, b.data, b.len, "index/test"));
    assert_int_equal(back.npacks, 7);
    assert_null(cf_index__get(&back, &pend.id));
    assert_same_entries(&back, &ix, false, NULL, 0);
    /* re-encoding the decoded index gives the same bytes (entries are sorted by id) */
    cf_buf b2;
    encode(&b2, &back, NULL, 0);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    /* decoding into a non-empty index merges; duplicates keep their first location */
    th_ok(cf_index__decode(&back, b.data, b.len, "index/test"));
    assert_int_equal(cf_index__count(&back), 3000);
    assert_int_equal(back.npacks, 7);
    cf_buf_free(&b);
    cf_buf_free(&b2);
    cf_index__free(&ix);
    cf_index__free(&back);
}

static void test_roundtrip_filter(void **state)
{
    (void)state;
    cf_index ix, back;
    build(&ix, 5, 2000, 23);
    cf_id only[4];
    only[0] = ix.packs[3];
    only[1] = ix.packs[1];
    only[2] = ix.packs[3]; /* listed twice: written once */
    th_id(&only[3], 31337); /* not in the index: ignored */
    cf_buf b;
    encode(&b, &ix, only, 4);
    assert_int_equal(b.len, IX_HEADER + 2 * 32 + 800 * IX_ENTRY);
    cf_index__init(&back);
    th_ok(cf_index__decode(&back, b.data, b.len, "index/filtered"));
    assert_int_equal(back.npacks, 2);
    assert_true(cf_index__has_pack(&back, &ix.packs[3]));
    assert_true(cf_index__has_pack(&back, &ix.packs[1]));
    assert_false(cf_index__has_pack(&back, &ix.packs[0]));
    assert_same_entries(&back, &ix, true, only, 2);
    cf_buf_free(&b);
    cf_index__free(&back);

    /* a filter matching nothing gives an empty but valid index file */
    encode(&b, &ix, &only[3], 1);
    assert_int_equal(b.len, IX_HEADER);
    cf_index__init(&back);
    th_ok(cf_index__decode(&back, b.data, b.len, "index/none"));
    assert_int_equal(cf_index__count(&back), 0);
    assert_int_equal(back.npacks, 0);
    cf_buf_free(&b);
    cf_index__free(&back);
    cf_index__free(&ix);
}

static void test_roundtrip_empty(void **state)
{
    (void)state;
    cf_index ix, back;
    cf_index__init(&ix);
    cf_buf b;
    encode(&b, &ix, NULL, 0);
    assert_int_equal(b.len, IX_HEADER);
    cf_index__init(&back);
    th_ok(cf_index__decode(&back, b.data, b.len, "index/empty"));
    assert_int_equal(cf_index__count(&back), 0);
    cf_buf_free(&b);
    cf_index__free(&back);
}

/* ------------------------------------------------------------------ hostile input */

static int decode_fresh(const uint8_t *p, size_t len)
{
    cf_index ix;
    cf_index__init(&ix);
    int rc = cf_index__decode(&ix, p, len, "index/hostile");
    cf_index__free(&ix);
    return rc;
}

/* A copy of exactly len bytes, so the sanitizers see reads past the end. */
static int decode_copy(const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    if (len)
        memcpy(c, p, len);
    int rc = decode_fresh(c, len);
    free(c);
    return rc;
}

static void test_decode_truncated(void **state)
{
    (void)state;
    cf_index ix;
    build(&ix, 3, 20, 5);
    cf_buf b;
    encode(&b, &ix, NULL, 0);
    for (size_t len = 0; len < b.len; len++)
        th_expect(decode_copy(b.data, len), CF_ECORRUPT, "index/hostile");
    th_ok(decode_copy(b.data, b.len));
    /* a trailing byte is damage too */
    th_ok(cf_buf_put_u8(&b, 0));
    th_expect(decode_copy(b.data, b.len), CF_ECORRUPT, NULL);
    cf_buf_free(&b);
    cf_index__free(&ix);
}

static void test_decode_bad_header(void **state)
{
    (void)state;
    cf_index ix;
    build(&ix, 2, 10, 9);
    cf_buf b;
    encode(&b, &ix, NULL, 0);
    uint8_t *c = malloc(b.len);
    assert_non_null(c);

    memcpy(c, b.data, b.len);
    c[0] = 'X'; /* wrong magic */
    th_expect(decode_fresh(c, b.len), CF_ECORRUPT, "bad header");

    memcpy(c, b.data, b.len);
    c[4] = 2; /* a version this code does not know */
    th_expect(decode_fresh(c, b.len), CF_EUNSUPPORTED, NULL);

    const uint32_t bad_counts[][2] = {{3, 10}, {1, 10}, {2, 11}, {2, 9}, {0, 0},
                                      {UINT32_MAX, 10}, {2, UINT32_MAX}, {UINT32_MAX, UINT32_MAX},
                                      {0x08000000u, 0}, {0, 0x05000000u}};
    for (size_t i = 0; i < sizeof(bad_counts) / sizeof(bad_counts[0]); i++) {
        memcpy(c, b.data, b.len);
        cf_le32_put(c + 8, bad_counts[i][0]);
        cf_le32_put(c + 12, bad_counts[i][1]);
        th_expect(decode_fresh(c, b.len), CF_ECORRUPT, "counts");
    }
    /* counts that trade packs for entries but keep the total size: 25 packs (800 bytes) or
     * 16 entries (800 bytes) over the same body */
    {
        cf_buf z;
        cf_buf_init(&z, 0);
        th_ok(cf_buf_append(&z, "CFIX\1\0\0\0", 8));
        th_ok(cf_buf_put_u32(&z, 0));
        th_ok(cf_buf_put_u32(&z, 16));
        uint8_t junk[800];
        memset(junk, 0, sizeof(junk));
        th_ok(cf_buf_append(&z, junk, sizeof(junk)));
        /* 16 entries, all referencing pack 0 of an empty pack table */
        th_expect(decode_fresh(z.data, z.len), CF_ECORRUPT, "entry 0");
        cf_le32_put(z.data + 8, 25);
        cf_le32_put(z.data + 12, 0);
        th_ok(decode_fresh(z.data, z.len)); /* 25 all-zero pack ids: legal, if odd */
        cf_buf_free(&z);
    }
    free(c);
    cf_buf_free(&b);
    cf_index__free(&ix);
}

static void test_decode_bad_entries(void **state)
{
    (void)state;
    cf_index ix;
    build(&ix, 2, 10, 13);
    cf_buf b;
    encode(&b, &ix, NULL, 0);
    uint8_t *c = malloc(b.len);
    assert_non_null(c);
    const size_t first = IX_HEADER + 2 * 32;
    for (size_t k = 0; k < 10; k++) {
        uint8_t *e = c + first + k * IX_ENTRY;
        /* pack number out of range (== npacks, and far beyond) */
        memcpy(c, b.data, b.len);
        cf_le32_put(e + 32, 2);
        th_expect(decode_fresh(c, b.len), CF_ECORRUPT, "invalid");
        memcpy(c, b.data, b.len);
        cf_le32_put(e + 32, UINT32_MAX);
        th_expect(decode_fresh(c, b.len), CF_ECORRUPT, "invalid");
        /* sealed length shorter than the seal overhead */
        memcpy(c, b.data, b.len);
        cf_le32_put(e + 40, CF_SEAL_OVERHEAD - 1);
        th_expect(decode_fresh(c, b.len), CF_ECORRUPT, "invalid");
        /* unknown blob type */
        memcpy(c, b.data, b.len);
        e[48] = 2;
        th_expect(decode_fresh(c, b.len), CF_ECORRUPT, "invalid");
    }
    free(c);
    cf_buf_free(&b);
    cf_index__free(&ix);
}

/* Random mutations of a valid index file: decode must fail cleanly or succeed, never crash. */
static void test_decode_garbled(void **state)
{
    (void)state;
    cf_index ix;
    build(&ix, 3, 12, 17);
    cf_buf b;
    encode(&b, &ix, NULL, 0);
    uint8_t *c = malloc(b.len);
    assert_non_null(c);
    uint64_t s = 2024;
    for (int iter = 0; iter < 5000; iter++) {
        memcpy(c, b.data, b.len);
        int flips = 1 + (int)(th_next(&s) % 4);
        for (int f = 0; f < flips; f++)
            c[th_next(&s) % b.len] ^= (uint8_t)(1u << (th_next(&s) % 8));
        size_t len = th_next(&s) % 4 == 0 ? th_next(&s) % (b.len + 1) : b.len;
        int rc = decode_copy(c, len);
        assert_true(rc == 0 || rc == CF_ECORRUPT || rc == CF_EUNSUPPORTED);
    }
    /* pure noise */
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = th_next(&s) % 300;
        th_fill_random(c, len < b.len ? len : b.len, th_next(&s));
        if (iter % 2)
            memcpy(c, "CFIX\1\0\0\0", len < 8 ? len : 8);
        int rc = decode_copy(c, len < b.len ? len : b.len);
        assert_true(rc == 0 || rc == CF_ECORRUPT || rc == CF_EUNSUPPORTED);
    }
    free(c);
    cf_buf_free(&b);
    cf_index__free(&ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_get),
        cmocka_unit_test(test_duplicate_keeps_first),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_pack_numbering),
        cmocka_unit_test(test_resolve_pending),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_roundtrip_filter),
        cmocka_unit_test(test_roundtrip_empty),
        cmocka_unit_test(test_decode_truncated),
        cmocka_unit_test(test_decode_bad_header),
        cmocka_unit_test(test_decode_bad_entries),
        cmocka_unit_test(test_decode_garbled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
