/*
 * test_pack.c - blobs in packs (repo/pack.c) through a repository on mem storage: storing and
 * reading back, deduplication, packs filling up, damaged, missing and foreign packs, and
 * cf_pack__read_header on valid, truncated and hostile packs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compress/compress.h"
#include "unit/repo/repo_helpers.h"

#define PACK_PREFIX CF_PACK_PREFIX /* "CFPK", version, 3 reserved, generation u32, salt (16) */
#define PACK_GEN 8
#define PACK_SALT 12
#define PACK_TRAILER 8
#define PACK_ENTRY 48

static cf_repo *g_repo;
static cf_storage *g_st; /* raw access to the same store */

static int setup(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    cf_init_opts o = th_opts();
    o.pack_size = 1u << 16; /* the smallest: packs fill up quickly */
    g_repo = th_repo_new_opts("mem:packs", &o);
    g_st = th_storage("mem:packs");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_repo_close(g_repo);
    cf_storage_close(g_st);
    g_repo = NULL;
    g_st = NULL;
    cf_storage_mem_reset();
    return 0;
}

typedef struct {
    uint8_t *data;
    size_t len;
    uint8_t type;
    cf_id id;
} blob;

/* kind 0: compressible text, 1: random, 2: empty */
static blob mk_blob(int kind, size_t len, uint8_t type, uint64_t seed)
{
    blob b;
    b.len = kind == 2 ? 0 : len;
    b.type = type;
    b.data = malloc(b.len ? b.len : 1);
    assert_non_null(b.data);
    if (kind == 0)
        th_fill_text(b.data, b.len, seed);
    else if (kind == 1)
        th_fill_random(b.data, b.len, seed);
    cf_repo__blob_id(g_repo, &b.id, b.data, b.len);
    return b;
}

static uint64_t add(cf_repo *r, const blob *b)
{
    uint64_t added = 12345;
    th_ok(cf_repo__add_blob(r, b->type, &b->id, b->data, b->len, &added));
    return added;
}

static void assert_reads_back(cf_repo *r, const blob *b)
{
    cf_buf out;
    cf_buf_init(&out, 0);
    th_ok(cf_buf_append(&out, "prefix", 6)); /* read_blob appends */
    th_ok(cf_repo__read_blob(&out, r, &b->id, b->type));
    assert_int_equal(out.len, 6 + b->len);
    assert_memory_equal(out.data, "prefix", 6);
    if (b->len)
        assert_memory_equal(out.data + 6, b->data, b->len);
    cf_buf_free(&out);
}

static void free_blob(blob *b) { free(b->data); }

/* Path and bytes of the pack holding id. */
static void pack_of(char path[80], const cf_id *id)
{
    const cf_index_entry *e = cf_index__get(&g_repo->index, id);
    assert_non_null(e);
    assert_true(e->pack < g_repo->index.npacks);
    cf_pack__path(path, &g_repo->index.packs[e->pack]);
}

static uint8_t *get_all(const char *path, size_t *len)
{
    uint8_t *data = NULL;
    th_ok(cf_storage_get(g_st, path, 0, 0, &data, len));
    return data;
}

/* ------------------------------------------------------------------ store and read */

static void test_add_flush_read(void **state)
{
    (void)state;
    blob b[6] = {
        mk_blob(0, 20000, CF_BLOB_DATA, 1), mk_blob(1, 20000, CF_BLOB_DATA, 2),
        mk_blob(2, 0, CF_BLOB_DATA, 3),     mk_blob(0, 3000, CF_BLOB_TREE, 4),
        mk_blob(1, 100, CF_BLOB_TREE, 5),   mk_blob(1, 1, CF_BLOB_DATA, 6),
    };
    for (size_t i = 0; i < 6; i++) {
        uint64_t added = add(g_repo, &b[i]);
        assert_true(added >= CF_SEAL_OVERHEAD);
        if (i == 0) /* compressible: stored smaller than it is */
            assert_true(added < b[i].len / 2);
        if (i == 1) /* random: stored as is plus the seal */
            assert_int_equal(added, b[i].len + CF_SEAL_OVERHEAD);
    }
    /* not readable before the pack is written */
    cf_buf out;
    cf_buf_init(&out, 0);
    th_expect(cf_repo__read_blob(&out, g_repo, &b[0].id, CF_BLOB_DATA), CF_ENOTFOUND, NULL);
    assert_int_equal(th_count(g_st, "data/"), 0);
    th_ok(cf_repo__flush(g_repo));
    /* one pack per blob type, and one index file */
    assert_int_equal(th_count(g_st, "data/"), 2);
    assert_int_equal(th_count(g_st, "index/"), 1);
    for (size_t i = 0; i < 6; i++)
        assert_reads_back(g_repo, &b[i]);
    /* flushing again with nothing new writes nothing */
    th_ok(cf_repo__flush(g_repo));
    assert_int_equal(th_count(g_st, "data/"), 2);
    assert_int_equal(th_count(g_st, "index/"), 1);

    /* a new handle finds everything through the index file */
    cf_repo *r2 = NULL;
    th_ok(cf_repo_open(&r2, "mem:packs", TEST_PASSWORD));
    assert_int_equal(cf_repo_warning_count(r2), 0);
    assert_int_equal(r2->index.count, 6);
    for (size_t i = 0; i < 6; i++)
        assert_reads_back(r2, &b[i]);
    /* wrong type requested */
    th_expect(cf_repo__read_blob(&out, r2, &b[0].id, CF_BLOB_TREE), CF_ECORRUPT, NULL);
    th_expect(cf_repo__read_blob(&out, r2, &b[3].id, CF_BLOB_DATA), CF_ECORRUPT, NULL);
    /* unknown id */
    cf_id unknown;
    th_id(&unknown, 999);
    th_expect(cf_repo__read_blob(&out, r2, &unknown, CF_BLOB_DATA), CF_ENOTFOUND, NULL);
    assert_int_equal(out.len, 0);
    cf_repo_close(r2);
    cf_buf_free(&out);
    for (size_t i = 0; i < 6; i++)
        free_blob(&b[i]);
}

static void test_dedup(void **state)
{
    (void)state;
    blob a = mk_blob(1, 5000, CF_BLOB_DATA, 10);
    assert_true(add(g_repo, &a) > 0);
    assert_int_equal(add(g_repo, &a), 0); /* pending in the open pack */
    th_ok(cf_repo__flush(g_repo));
    assert_int_equal(add(g_repo, &a), 0); /* stored */
    th_ok(cf_repo__flush(g_repo));
    assert_int_equal(th_count(g_st, "data/"), 1);
    assert_int_equal(th_count(g_st, "index/"), 1);
    /* the pack holds the blob once */
    char path[80];
    pack_of(path, &a.id);
    size_t len;
    uint8_t *p = get_all(path, &len);
    cf_pack_entry *es = NULL;
    size_t n = 0;
    th_ok(cf_pack__read_header(&es, &n, g_repo, p, len, path));
    assert_int_equal(n, 1);
    free(es);
    free(p);
    /* another handle knows it from the index */
    cf_repo *r2 = NULL;
    th_ok(cf_repo_open(&r2, "mem:packs", TEST_PASSWORD));
    assert_int_equal(add(r2, &a), 0);
    th_ok(cf_repo__flush(r2));
    cf_repo_close(r2);
    assert_int_equal(th_count(g_st, "data/"), 1);
    free_blob(&a);
}

static void test_packs_fill_up(void **state)
{
    (void)state;
    /* 40 random blobs of 10 KB in 64 KiB packs: several packs, written as they fill */
    blob b[40];
    for (size_t i = 0; i < 40; i++) {
        b[i] = mk_blob(1, 10000, i % 5 == 0 ? CF_BLOB_TREE : CF_BLOB_DATA, 100 + i);
        add(g_repo, &b[i]);
    }
    size_t before_flush = th_count(g_st, "data/");
    assert_true(before_flush >= 4);
    th_ok(cf_repo__flush(g_repo));
    size_t packs = th_count(g_st, "data/");
    assert_true(packs >= 6 && packs <= 9);
    /* every pack respects the size target, up to one blob over */
    th_names l = th_list(g_st, "data/");
    size_t total = 0;
    for (size_t i = 0; i < l.n; i++) {
        uint64_t size = 0;
        th_ok(cf_storage_stat(g_st, l.names[i], &size));
        assert_true(size < (1u << 16) + 10000 + 1000);
        size_t len;
        uint8_t *p = get_all(l.names[i], &len);
        cf_pack_entry *es = NULL;
        size_t n = 0;
        th_ok(cf_pack__read_header(&es, &n, g_repo, p, len, l.names[i]));
        for (size_t k = 0; k < n; k++) {
            /* a pack holds one blob type */
            assert_int_equal(es[k].type, es[0].type);
            /* its name is the SHA-256 of its bytes */
            uint8_t h[32];
            char hex[65];
            cf_sha256(h, p, len);
            cf_hex_encode(hex, h, 32);
            assert_non_null(strstr(l.names[i], hex));
        }
        total += n;
        free(es);
        free(p);
    }
    assert_int_equal(total, 40);
    th_names_free(&l);
    for (size_t i = 0; i < 40; i++) {
        assert_reads_back(g_repo, &b[i]);
        free_blob(&b[i]);
    }
}

/* A blob stored under an id that is not its content's: the read notices. */
static void test_id_mismatch(void **state)
{
    (void)state;
    blob a = mk_blob(0, 1000, CF_BLOB_DATA, 20);
    cf_id wrong;
    th_id(&wrong, 4242);
    uint64_t added;
    th_ok(cf_repo__add_blob(g_repo, CF_BLOB_DATA, &wrong, a.data, a.len, &added));
    th_ok(cf_repo__flush(g_repo));
    cf_buf out;
    cf_buf_init(&out, 0);
    th_expect(cf_repo__read_blob(&out, g_repo, &wrong, CF_BLOB_DATA), CF_ECORRUPT,
              "does not match its id");
    assert_int_equal(out.len, 0);
    cf_buf_free(&out);
    free_blob(&a);
}

static void test_blob_too_large(void **state)
{
    (void)state;
    cf_id id;
    th_id(&id, 1);
    uint64_t added = 7;
    uint8_t byte = 0;
    /* the length is checked before the data is touched */
    th_expect(cf_repo__add_blob(g_repo, CF_BLOB_DATA, &id, &byte, (size_t)UINT32_MAX, &added),
              CF_EINVAL, NULL);
    assert_int_equal(added, 0);
    assert_null(cf_index__get(&g_repo->index, &id));
}

/* ------------------------------------------------------------------ damage */

static void modified_pack(const size_t *where_extra, size_t n_extra, bool only_extra)
{
    blob a = mk_blob(1, 3000, CF_BLOB_DATA, 30), b = mk_blob(0, 3000, CF_BLOB_DATA, 31);
    add(g_repo, &a);
    add(g_repo, &b);
    th_ok(cf_repo__flush(g_repo));
    char path[80];
    pack_of(path, &a.id);
    size_t len;
    uint8_t *orig = get_all(path, &len);
    uint8_t *p = malloc(len);
    assert_non_null(p);
    const cf_index_entry *ea = cf_index__get(&g_repo->index, &a.id);
    const cf_index_entry *eb = cf_index__get(&g_repo->index, &b.id);
    /* positions: in a's nonce, ciphertext and tag; in b's; the pack's magic, version,
     * reserved bytes, generation and salt */
    size_t where[16];
    size_t nwhere = 0;
    if (!only_extra) {
        const size_t base[] = {ea->offset, ea->offset + 20, ea->offset + ea->length - 1,
                               eb->offset + 13, 0, 4, 5, PACK_SALT, PACK_PREFIX - 1};
        for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
            where[nwhere++] = base[i];
    }
    for (size_t i = 0; i < n_extra; i++)
        where[nwhere++] = where_extra[i];
    for (size_t i = 0; i < nwhere; i++) {
        memcpy(p, orig, len);
        p[where[i]] ^= 0x40;
        th_ok(cf_storage_put(g_st, path, p, len, 0));
        /* a fresh handle: nothing of the pack cached */
        cf_repo *r2 = NULL;
        th_ok(cf_repo_open(&r2, "mem:packs", TEST_PASSWORD));
        cf_buf out;
        cf_buf_init(&out, 0);
        /* the blobs' keys come from the generation and salt; the magic and version are
         * checked; the reserved bytes only matter to the header */
        bool prefix = where[i] < 5 || (where[i] >= PACK_GEN && where[i] < PACK_PREFIX);
        bool hits_a = prefix || (where[i] >= ea->offset && where[i] < (size_t)ea->offset + ea->length);
        bool hits_b = prefix || (where[i] >= eb->offset && where[i] < (size_t)eb->offset + eb->length);
        int rc = cf_repo__read_blob(&out, r2, &a.id, CF_BLOB_DATA);
        if (hits_a && rc != CF_ECORRUPT)
            fail_msg("byte %zu of the pack changed: reading blob a gave %s, not CORRUPT: %s",
                     where[i], cf_error_name(rc), cf_error_last()->message);
        if (hits_a)
            assert_non_null(strstr(cf_error_last()->message, path));
        if (!hits_a)
            th_ok(rc);
        cf_buf_reset(&out);
        rc = cf_repo__read_blob(&out, r2, &b.id, CF_BLOB_DATA);
        if (hits_b && rc != CF_ECORRUPT)
            fail_msg("byte %zu of the pack changed: reading blob b gave %s, not CORRUPT: %s",
                     where[i], cf_error_name(rc), cf_error_last()->message);
        if (!hits_b)
            th_ok(rc);
        cf_buf_free(&out);
        /* the header is sealed with the whole prefix as associated data */
        cf_pack_entry *es = NULL;
        size_t n = 0;
        if (where[i] < PACK_PREFIX) {
            rc = cf_pack__read_header(&es, &n, r2, p, len, path);
            if (where[i] == 4) /* version: refused as unknown, before anything else */
                assert_int_equal(rc, CF_EUNSUPPORTED);
            else if (rc != CF_ECORRUPT)
                fail_msg("byte %zu of the pack changed: read_header gave %s, not CORRUPT: %s",
                         where[i], cf_error_name(rc), cf_error_last()->message);
        }
        free(es);
        cf_repo_close(r2);
    }
    /* restored: readable again */
    th_ok(cf_storage_put(g_st, path, orig, len, 0));
    assert_reads_back(g_repo, &a);
    assert_reads_back(g_repo, &b);
    free(p);
    free(orig);
    free_blob(&a);
    free_blob(&b);
}

static void test_modified_pack(void **state)
{
    (void)state;
    modified_pack(NULL, 0, false);
}

/* The generation field selects the key, so it is not authenticated before use: a damaged
 * generation must still be reported as damage (CF_ECORRUPT), not as a credential problem. */
static void test_modified_pack_generation(void **state)
{
    (void)state;
    const size_t gen[] = {PACK_GEN, PACK_GEN + 3};
    modified_pack(gen, 2, true);
}

static void test_deleted_pack(void **state)
{
    (void)state;
    blob a = mk_blob(1, 3000, CF_BLOB_DATA, 40);
    add(g_repo, &a);
    th_ok(cf_repo__flush(g_repo));
    char path[80];
    pack_of(path, &a.id);
    th_ok(cf_storage_remove(g_st, path));
    cf_buf out;
    cf_buf_init(&out, 0);
    int rc = cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA);
    assert_true(rc < 0);
    if (!strstr(cf_error_last()->message, path))
        fail_msg("error '%s' does not name pack '%s'", cf_error_last()->message, path);
    assert_int_equal(out.len, 0);
    cf_buf_free(&out);
    free_blob(&a);
}

static void test_storage_get_fails(void **state)
{
    (void)state;
    blob a = mk_blob(1, 3000, CF_BLOB_DATA, 41);
    add(g_repo, &a);
    th_ok(cf_repo__flush(g_repo));
    cf_buf out;
    cf_buf_init(&out, 0);
    th_ok(cf_storage_mem_inject("packs", "get", 1, CF_ERETRYABLE));
    th_expect(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA), CF_ERETRYABLE, NULL);
    th_ok(cf_storage_mem_inject("packs", "get", 2, CF_EIO)); /* the second get: the blob */
    th_expect(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA), CF_EIO, NULL);
    th_ok(cf_storage_mem_inject("packs", "get", 0, 0));
    assert_int_equal(out.len, 0);
    assert_reads_back(g_repo, &a);
    cf_buf_free(&out);
    free_blob(&a);
}

static void test_pack_put_fails_then_retried(void **state)
{
    (void)state;
    blob a = mk_blob(1, 3000, CF_BLOB_DATA, 42);
    add(g_repo, &a);
    th_ok(cf_storage_mem_inject("packs", "put", 1, CF_EIO));
    th_expect(cf_repo__flush(g_repo), CF_EIO, NULL);
    th_ok(cf_storage_mem_inject("packs", "put", 0, 0));
    assert_int_equal(th_count(g_st, "data/"), 0);
    /* the blob is still claimed: adding it again is a no-op, and the next flush stores it */
    assert_int_equal(add(g_repo, &a), 0);
    th_ok(cf_repo__flush(g_repo));
    assert_int_equal(th_count(g_st, "data/"), 1);
    assert_int_equal(th_count(g_st, "index/"), 1);
    assert_reads_back(g_repo, &a);
    cf_repo *r2 = NULL;
    th_ok(cf_repo_open(&r2, "mem:packs", TEST_PASSWORD));
    assert_reads_back(r2, &a);
    cf_repo_close(r2);
    free_blob(&a);
}

/* ------------------------------------------------------------------ read_header */

/* Write a pack of n blobs and return its bytes. */
static uint8_t *one_pack(size_t n, size_t *len, char path[80], blob *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = mk_blob(i == 2 ? 2 : (int)(i % 2), 200 + 37 * i, CF_BLOB_DATA, 500 + i);
        add(g_repo, &out[i]);
    }
    th_ok(cf_repo__flush(g_repo));
    pack_of(path, &out[0].id);
    return get_all(path, len);
}

static void test_read_header_valid(void **state)
{
    (void)state;
    blob b[7];
    char path[80];
    size_t len;
    uint8_t *p = one_pack(7, &len, path, b);
    cf_pack_entry *es = NULL;
    size_t n = 0;
    th_ok(cf_pack__read_header(&es, &n, g_repo, p, len, path));
    assert_int_equal(n, 7);
    for (size_t i = 0; i < 7; i++) {
        size_t k = 0;
        while (k < n && !cf_id_eq(&es[k].id, &b[i].id))
            k++;
        assert_true(k < n);
        const cf_index_entry *e = cf_index__get(&g_repo->index, &b[i].id);
        assert_int_equal(es[k].offset, e->offset);
        assert_int_equal(es[k].length, e->length);
        assert_int_equal(es[k].raw_len, b[i].len);
        assert_int_equal(es[k].type, CF_BLOB_DATA);
        assert_int_equal(es[k].comp, e->comp);
        /* each blob opens on its own */
        cf_buf out;
        cf_buf_init(&out, 0);
        th_ok(cf_pack__open_blob(&out, g_repo, p, &es[k], p + es[k].offset, path));
        assert_int_equal(out.len, b[i].len);
        if (b[i].len)
            assert_memory_equal(out.data, b[i].data, b[i].len);
        /* with another pack's salt it does not */
        uint8_t prefix[PACK_PREFIX];
        memcpy(prefix, p, PACK_PREFIX);
        prefix[PACK_SALT] ^= 1;
        cf_buf_reset(&out);
        th_expect(cf_pack__open_blob(&out, g_repo, prefix, &es[k], p + es[k].offset, path),
                  CF_ECORRUPT, path);
        assert_int_equal(out.len, 0);
        cf_buf_free(&out);
    }
    free(es);
    free(p);
    for (size_t i = 0; i < 7; i++)
        free_blob(&b[i]);
}

static void test_read_header_truncated(void **state)
{
    (void)state;
    blob b[3];
    char path[80];
    size_t len;
    uint8_t *p = one_pack(3, &len, path, b);
    for (size_t l = 0; l < len; l++) {
        uint8_t *c = malloc(l ? l : 1);
        assert_non_null(c);
        memcpy(c, p, l);
        cf_pack_entry *es = (cf_pack_entry *)(uintptr_t)1;
        size_t n = 99;
        int rc = cf_pack__read_header(&es, &n, g_repo, c, l, path);
        if (rc != CF_ECORRUPT)
            fail_msg("pack truncated to %zu of %zu bytes: %s", l, len, cf_error_name(rc));
        assert_null(es);
        assert_int_equal(n, 0);
        free(c);
    }
    /* a truncated pack in storage: reads fail, none crash */
    th_ok(cf_storage_put(g_st, path, p, len / 2, 0));
    for (size_t i = 0; i < 3; i++) {
        cf_buf out;
        cf_buf_init(&out, 0);
        const cf_index_entry *e = cf_index__get(&g_repo->index, &b[i].id);
        int rc = cf_repo__read_blob(&out, g_repo, &b[i].id, CF_BLOB_DATA);
        if ((size_t)e->offset + e->length <= len / 2)
            th_ok(rc);
        else
            assert_int_equal(rc, CF_ECORRUPT);
        cf_buf_free(&out);
    }
    free(p);
    for (size_t i = 0; i < 3; i++)
        free_blob(&b[i]);
}

static void test_read_header_wrong_key(void **state)
{
    (void)state;
    blob b[2];
    char path[80];
    size_t len;
    uint8_t *p = one_pack(2, &len, path, b);
    cf_repo *other = th_repo_new("mem:packs-other");
    cf_pack_entry *es = NULL;
    size_t n = 0;
    th_expect(cf_pack__read_header(&es, &n, other, p, len, path), CF_ECORRUPT, "authentication");
    assert_null(es);
    /* the other repository's own entries cannot open this pack's blobs either */
    th_ok(cf_pack__read_header(&es, &n, g_repo, p, len, path));
    cf_buf out;
    cf_buf_init(&out, 0);
    th_expect(cf_pack__open_blob(&out, other, p, &es[0], p + es[0].offset, path), CF_ECORRUPT,
              NULL);
    cf_buf_free(&out);
    free(es);
    cf_repo_close(other);
    free(p);
    for (size_t i = 0; i < 2; i++)
        free_blob(&b[i]);
}

static void test_read_header_bad_framing(void **state)
{
    (void)state;
    blob b[2];
    char path[80];
    size_t len;
    uint8_t *p = one_pack(2, &len, path, b);
    uint8_t *c = malloc(len);
    assert_non_null(c);
    cf_pack_entry *es = NULL;
    size_t n = 0;
    /* magic at either end */
    memcpy(c, p, len);
    c[0] = 'X';
    th_expect(cf_pack__read_header(&es, &n, g_repo, c, len, path), CF_ECORRUPT, path);
    memcpy(c, p, len);
    c[len - 1] = 'X';
    th_expect(cf_pack__read_header(&es, &n, g_repo, c, len, path), CF_ECORRUPT, path);
    /* version */
    memcpy(c, p, len);
    c[4] = 2;
    th_expect(cf_pack__read_header(&es, &n, g_repo, c, len, path), CF_EUNSUPPORTED, path);
    /* header lengths: too small, too large, off by one, absurd */
    const uint32_t hl = cf_le32_get(p + len - 8);
    const uint32_t bad[] = {0, 1, CF_SEAL_OVERHEAD + 3, hl - 1, hl + 1, (uint32_t)len,
                            (uint32_t)(len - PACK_PREFIX - PACK_TRAILER + 1), UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(c, p, len);
        cf_le32_put(c + len - 8, bad[i]);
        th_expect(cf_pack__read_header(&es, &n, g_repo, c, len, path), CF_ECORRUPT, path);
        assert_null(es);
    }
    /* any flipped byte of the sealed header */
    for (size_t i = len - PACK_TRAILER - hl; i < len - PACK_TRAILER; i++) {
        memcpy(c, p, len);
        c[i] ^= 0x10;
        th_expect(cf_pack__read_header(&es, &n, g_repo, c, len, path), CF_ECORRUPT, path);
    }
    free(c);
    free(p);
    for (size_t i = 0; i < 2; i++)
        free_blob(&b[i]);
}

/* A pack sealed with the repository's keys but with a header that lies, as a buggy writer
 * could produce: entries outside the blob area, a count that does not match. */
static uint8_t *craft_pack(size_t *out_len, uint32_t count, const uint8_t *entries,
                           size_t entries_len, size_t body_len)
{
    uint8_t key[CF_KEY_LEN];
    cf_buf b, h;
    cf_buf_init(&b, 0);
    cf_buf_init(&h, 0);
    th_ok(cf_buf_append(&b, "CFPK\1\0\0\0", 8));
    th_ok(cf_buf_put_u32(&b, g_repo->mk.gen));
    uint8_t salt[16];
    th_fill_random(salt, 16, count + body_len);
    th_ok(cf_buf_append(&b, salt, 16));
    uint8_t *body = calloc(1, body_len ? body_len : 1);
    assert_non_null(body);
    th_ok(cf_buf_append(&b, body, body_len));
    free(body);
    th_ok(cf_buf_put_u32(&h, count));
    th_ok(cf_buf_append(&h, entries, entries_len));
    const uint8_t *dk = cf_master__data_key(&g_repo->mk, g_repo->mk.gen);
    assert_non_null(dk);
    cf_kdf(key, dk, "coffer pack key", salt, 16);
    th_ok(cf_buf_reserve(&b, h.len + CF_SEAL_OVERHEAD + PACK_TRAILER));
    th_ok(cf_aead_seal(b.data + b.len, key, b.data, PACK_PREFIX, h.data, h.len));
    b.len += h.len + CF_SEAL_OVERHEAD;
    th_ok(cf_buf_put_u32(&b, (uint32_t)(h.len + CF_SEAL_OVERHEAD)));
    th_ok(cf_buf_append(&b, "CFPE", 4));
    cf_buf_free(&h);
    return cf_buf_steal(&b, out_len);
}

static void entry(uint8_t e[PACK_ENTRY], uint32_t offset, uint32_t length)
{
    memset(e, 0, PACK_ENTRY);
    cf_le32_put(e + 4, offset);
    cf_le32_put(e + 8, length);
    cf_le32_put(e + 12, 10);
    th_fill_random(e + 16, 32, offset);
}

static void test_read_header_lying(void **state)
{
    (void)state;
    uint8_t e[2 * PACK_ENTRY];
    size_t len;
    cf_pack_entry *es = NULL;
    size_t n = 0;
    /* reference: a consistent crafted pack is accepted */
    entry(e, PACK_PREFIX, 100);
    entry(e + PACK_ENTRY, PACK_PREFIX + 100, 28);
    uint8_t *p = craft_pack(&len, 2, e, sizeof(e), 128);
    th_ok(cf_pack__read_header(&es, &n, g_repo, p, len, "crafted"));
    assert_int_equal(n, 2);
    assert_int_equal(es[1].offset, PACK_PREFIX + 100);
    free(es);
    free(p);
    /* empty pack: zero entries */
    p = craft_pack(&len, 0, NULL, 0, 0);
    th_ok(cf_pack__read_header(&es, &n, g_repo, p, len, "crafted"));
    assert_int_equal(n, 0);
    free(es);
    free(p);

    const struct {
        uint32_t count, off1, len1;
        size_t body;
    } lies[] = {
        {3, PACK_PREFIX + 100, 28, 128},          /* count says 3, two entries */
        {1, PACK_PREFIX + 100, 28, 128},          /* count says 1 */
        {UINT32_MAX, PACK_PREFIX + 100, 28, 128}, /* count overflowing the size check */
        {0x05555556u, PACK_PREFIX + 100, 28, 128},/* count * 48 wraps to a small number */
        {2, PACK_PREFIX + 100, 29, 128},          /* second blob runs into the header */
        {2, PACK_PREFIX + 100, 27, 128},          /* shorter than a seal */
        {2, 0, 28, 128},                          /* inside the pack prefix */
        {2, PACK_PREFIX - 1, 28, 128},
        {2, UINT32_MAX - 10, 28, 128},            /* offset + length overflows 32 bits */
        {2, PACK_PREFIX + 100, UINT32_MAX, 128},
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        entry(e, PACK_PREFIX, 100);
        entry(e + PACK_ENTRY, lies[i].off1, lies[i].len1);
        p = craft_pack(&len, lies[i].count, e, sizeof(e), lies[i].body);
        es = (cf_pack_entry *)(uintptr_t)1;
        int rc = cf_pack__read_header(&es, &n, g_repo, p, len, "crafted");
        if (rc != CF_ECORRUPT)
            fail_msg("lie %zu: expected CORRUPT, got %s", i, cf_error_name(rc));
        assert_null(es);
        free(p);
    }
}

/* An index entry pointing past the end of its pack: the read fails cleanly. */
static void test_index_points_outside_pack(void **state)
{
    (void)state;
    blob a = mk_blob(1, 3000, CF_BLOB_DATA, 50);
    add(g_repo, &a);
    th_ok(cf_repo__flush(g_repo));
    cf_index_entry *e = (cf_index_entry *)(uintptr_t)cf_index__get(&g_repo->index, &a.id);
    const cf_index_entry saved = *e;
    cf_buf out;
    cf_buf_init(&out, 0);
    e->offset = 1u << 30;
    assert_true(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA) < 0);
    *e = saved;
    e->length = 1u << 30;
    assert_true(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA) < 0);
    *e = saved;
    e->length = 10; /* shorter than a seal */
    th_expect(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA), CF_ECORRUPT, NULL);
    *e = saved;
    e->raw_len += 1; /* authenticated: a lying raw length fails */
    th_expect(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA), CF_ECORRUPT, NULL);
    *e = saved;
    e->comp ^= 1;
    th_expect(cf_repo__read_blob(&out, g_repo, &a.id, CF_BLOB_DATA), CF_ECORRUPT, NULL);
    *e = saved;
    assert_int_equal(out.len, 0);
    assert_reads_back(g_repo, &a);
    cf_buf_free(&out);
    free_blob(&a);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_add_flush_read),
        T(test_dedup),
        T(test_packs_fill_up),
        T(test_id_mismatch),
        T(test_blob_too_large),
        T(test_modified_pack),
        T(test_modified_pack_generation),
        T(test_deleted_pack),
        T(test_storage_get_fails),
        T(test_pack_put_fails_then_retried),
        T(test_read_header_valid),
        T(test_read_header_truncated),
        T(test_read_header_wrong_key),
        T(test_read_header_bad_framing),
        T(test_read_header_lying),
        T(test_index_points_outside_pack),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
