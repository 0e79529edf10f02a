/*
 * test_object.c - sealed objects (repo/object.c): round trips for each object type, and
 * damage anywhere (type, any byte, truncation, key, name) detected as CF_ECORRUPT.
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

#define OBJ_HEADER 32
#define OBJ_GEN 12 /* generation u32 at 12..15 */

static cf_repo *g_repo;

static int setup(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    g_repo = th_repo_new("mem:objects");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_repo_close(g_repo);
    g_repo = NULL;
    cf_storage_mem_reset();
    return 0;
}

static const uint8_t types[] = {CF_OBJ_INDEX, CF_OBJ_SNAPSHOT, CF_OBJ_LOCK};

/* Payloads: empty, short, compressible, incompressible. */
static uint8_t *payload(size_t which, size_t *len)
{
    static const size_t sizes[] = {0, 17, 200000, 70000};
    *len = sizes[which];
    uint8_t *p = malloc(*len ? *len : 1);
    assert_non_null(p);
    if (which == 2)
        th_fill_text(p, *len, 3);
    else
        th_fill_random(p, *len, 100 + which);
    return p;
}

static void seal(cf_buf *out, const cf_repo *r, uint8_t type, const void *p, size_t len)
{
    cf_buf_init(out, 0);
    th_ok(cf_repo__seal_object(out, r, type, p, len));
}

/* open_object on a copy of exactly len bytes. */
static int open_copy(cf_buf *out, const cf_repo *r, uint8_t type, const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    if (len)
        memcpy(c, p, len);
    cf_buf_reset(out);
    int rc = cf_repo__open_object(out, r, type, c, len, "test/object");
    free(c);
    return rc;
}

static void test_roundtrip(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(types); t++) {
        for (size_t w = 0; w < 4; w++) {
            size_t len;
            uint8_t *p = payload(w, &len);
            cf_buf sealed, back;
            seal(&sealed, g_repo, types[t], p, len);
            assert_memory_equal(sealed.data, "CFOB", 4);
            assert_int_equal(sealed.data[5], types[t]);
            if (w == 2) /* compressible: stored compressed */
                assert_true(sealed.len < len / 2);
            else /* incompressible: stored as is, plus header and seal */
                assert_true(sealed.len <= len + OBJ_HEADER + CF_SEAL_OVERHEAD);
            cf_buf_init(&back, 0);
            th_ok(open_copy(&back, g_repo, types[t], sealed.data, sealed.len));
            assert_int_equal(back.len, len);
            if (len)
                assert_memory_equal(back.data, p, len);
            /* sealing twice gives different bytes (fresh salt and nonce) */
            cf_buf again;
            seal(&again, g_repo, types[t], p, len);
            assert_int_equal(again.len, sealed.len);
            assert_memory_not_equal(again.data + 16, sealed.data + 16, again.len - 16);
            cf_buf_free(&again);
            cf_buf_free(&sealed);
            cf_buf_free(&back);
            free(p);
        }
    }
}

static void test_wrong_type(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(types); t++) {
        cf_buf sealed, back;
        seal(&sealed, g_repo, types[t], "{\"x\":1}", 7);
        cf_buf_init(&back, 0);
        for (size_t u = 0; u < sizeof(types); u++) {
            if (u == t)
                continue;
            th_expect(open_copy(&back, g_repo, types[u], sealed.data, sealed.len), CF_ECORRUPT,
                      "test/object");
            assert_int_equal(back.len, 0);
        }
        th_expect(open_copy(&back, g_repo, 0, sealed.data, sealed.len), CF_ECORRUPT, NULL);
        th_expect(open_copy(&back, g_repo, 99, sealed.data, sealed.len), CF_ECORRUPT, NULL);
        cf_buf_free(&sealed);
        cf_buf_free(&back);
    }
}

static void test_flipped_byte_anywhere(void **state)
{
    (void)state;
    for (size_t w = 0; w < 3; w++) {
        size_t len;
        uint8_t *p = payload(w == 2 ? 1 : w, &len);
        if (w == 2) { /* a small compressible payload, so the compressed path is covered */
            free(p);
            len = 3000;
            p = malloc(len);
            assert_non_null(p);
            th_fill_text(p, len, 9);
        }
        cf_buf sealed, back;
        seal(&sealed, g_repo, CF_OBJ_SNAPSHOT, p, len);
        cf_buf_init(&back, 0);
        uint8_t *c = malloc(sealed.len);
        assert_non_null(c);
        for (size_t i = 0; i < sealed.len; i++) {
            if (i >= OBJ_GEN && i < OBJ_GEN + 4)
                continue; /* test_flipped_generation */
            for (int bit = 0; bit < 8; bit += 3) {
                memcpy(c, sealed.data, sealed.len);
                c[i] ^= (uint8_t)(1u << bit);
                th_expect(open_copy(&back, g_repo, CF_OBJ_SNAPSHOT, c, sealed.len), CF_ECORRUPT,
                          "test/object");
                assert_int_equal(back.len, 0); /* nothing of a damaged object is returned */
            }
        }
        free(c);
        cf_buf_free(&sealed);
        cf_buf_free(&back);
        free(p);
    }
}

/*
 * The generation field is not authenticated before use (the key is chosen by it): a damaged
 * generation must still be reported as damage (CF_ECORRUPT), like any other byte, and not as
 * a credential problem.
 */
static void test_flipped_generation(void **state)
{
    (void)state;
    cf_buf sealed, back;
    seal(&sealed, g_repo, CF_OBJ_INDEX, "payload", 7);
    cf_buf_init(&back, 0);
    uint8_t *c = malloc(sealed.len);
    assert_non_null(c);
    for (size_t i = OBJ_GEN; i < OBJ_GEN + 4; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            memcpy(c, sealed.data, sealed.len);
            c[i] ^= (uint8_t)(1u << bit);
            int rc = open_copy(&back, g_repo, CF_OBJ_INDEX, c, sealed.len);
            if (rc != CF_ECORRUPT)
                fail_msg("generation byte %zu changed: expected CORRUPT, got %s: %s", i,
                         cf_error_name(rc), cf_error_last()->message);
            assert_int_equal(back.len, 0);
        }
    }
    free(c);
    cf_buf_free(&sealed);
    cf_buf_free(&back);
}

static void test_truncated(void **state)
{
    (void)state;
    size_t len;
    uint8_t *p = payload(1, &len);
    cf_buf sealed, back;
    seal(&sealed, g_repo, CF_OBJ_INDEX, p, len);
    cf_buf_init(&back, 0);
    for (size_t l = 0; l < sealed.len; l++)
        th_expect(open_copy(&back, g_repo, CF_OBJ_INDEX, sealed.data, l), CF_ECORRUPT,
                  "test/object");
    /* extended: an extra byte also fails authentication */
    uint8_t *c = malloc(sealed.len + 1);
    assert_non_null(c);
    memcpy(c, sealed.data, sealed.len);
    c[sealed.len] = 0;
    th_expect(open_copy(&back, g_repo, CF_OBJ_INDEX, c, sealed.len + 1), CF_ECORRUPT, NULL);
    free(c);
    th_ok(open_copy(&back, g_repo, CF_OBJ_INDEX, sealed.data, sealed.len));
    cf_buf_free(&sealed);
    cf_buf_free(&back);
    free(p);
}

static void test_wrong_key(void **state)
{
    (void)state;
    cf_repo *other = th_repo_new("mem:objects-other");
    cf_buf sealed, back;
    seal(&sealed, g_repo, CF_OBJ_SNAPSHOT, "{}", 2);
    cf_buf_init(&back, 0);
    th_expect(open_copy(&back, other, CF_OBJ_SNAPSHOT, sealed.data, sealed.len), CF_ECORRUPT,
              "authentication");
    th_ok(open_copy(&back, g_repo, CF_OBJ_SNAPSHOT, sealed.data, sealed.len));
    cf_buf_free(&sealed);
    cf_buf_free(&back);
    cf_repo_close(other);
}

/* Seal with a chosen header, as a buggy or malicious writer holding the key could. */
static void seal_raw(cf_buf *out, const cf_repo *r, uint8_t type, uint8_t comp, uint32_t raw_len,
                     const void *p, size_t plen)
{
    uint8_t hdr[OBJ_HEADER], key[CF_KEY_LEN];
    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, "CFOB", 4);
    hdr[4] = 1;
    hdr[5] = type;
    hdr[6] = comp;
    cf_le32_put(hdr + 8, raw_len);
    cf_le32_put(hdr + 12, r->mk.gen);
    th_fill_random(hdr + 16, 16, raw_len ^ plen);
    const uint8_t *dk = cf_master__data_key(&r->mk, r->mk.gen);
    assert_non_null(dk);
    cf_kdf(key, dk, "coffer object key", hdr + 16, 16);
    cf_buf_init(out, 0);
    th_ok(cf_buf_reserve(out, OBJ_HEADER + plen + CF_SEAL_OVERHEAD));
    memcpy(out->data, hdr, OBJ_HEADER);
    th_ok(cf_aead_seal(out->data + OBJ_HEADER, key, hdr, OBJ_HEADER, p, plen));
    out->len = OBJ_HEADER + plen + CF_SEAL_OVERHEAD;
}

static void test_authentic_but_inconsistent(void **state)
{
    (void)state;
    cf_buf s, back;
    cf_buf_init(&back, 0);
    /* the reference: a hand-sealed object opens, so the layout above is the real one */
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_NONE, 5, "hello", 5);
    th_ok(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len));
    assert_int_equal(back.len, 5);
    assert_memory_equal(back.data, "hello", 5);
    cf_buf_free(&s);
    /* uncompressed with a length that does not match */
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_NONE, 6, "hello", 5);
    th_expect(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len), CF_ECORRUPT, "length");
    cf_buf_free(&s);
    /* a huge claimed length */
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_ZSTD, UINT32_MAX, "hello", 5);
    th_expect(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len), CF_ECORRUPT, NULL);
    cf_buf_free(&s);
    /* "compressed" bytes that are not zstd */
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_ZSTD, 5, "hello", 5);
    th_expect(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len), CF_ECORRUPT, "decompress");
    cf_buf_free(&s);
    /* an unknown compression algorithm */
    seal_raw(&s, g_repo, CF_OBJ_LOCK, 0x7f, 5, "hello", 5);
    th_expect(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len), CF_ECORRUPT, NULL);
    cf_buf_free(&s);
    /* real zstd with the wrong raw length, both ways */
    uint8_t text[4000], z[8000];
    th_fill_text(text, sizeof(text), 4);
    int algo = 0;
    size_t zlen = 0;
    th_ok(cf_compress(&algo, &zlen, z, sizeof(z), text, sizeof(text), 3));
    assert_int_equal(algo, CF_COMP_ZSTD);
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_ZSTD, (uint32_t)sizeof(text), z, zlen);
    th_ok(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len));
    assert_int_equal(back.len, sizeof(text));
    assert_memory_equal(back.data, text, sizeof(text));
    cf_buf_free(&s);
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_ZSTD, (uint32_t)sizeof(text) - 1, z, zlen);
    th_expect(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len), CF_ECORRUPT, NULL);
    cf_buf_free(&s);
    seal_raw(&s, g_repo, CF_OBJ_LOCK, CF_COMP_ZSTD, (uint32_t)sizeof(text) + 1, z, zlen);
    th_expect(open_copy(&back, g_repo, CF_OBJ_LOCK, s.data, s.len), CF_ECORRUPT, NULL);
    cf_buf_free(&s);
    cf_buf_free(&back);
}

static void test_put_get(void **state)
{
    (void)state;
    char name[65], name2[65];
    const char *doc = "{\"hello\":\"world\"}";
    th_ok(cf_repo__put_object(g_repo, "snapshots", CF_OBJ_SNAPSHOT, doc, strlen(doc), name));
    assert_int_equal(strlen(name), 64);
    th_ok(cf_repo__put_object(g_repo, "snapshots", CF_OBJ_SNAPSHOT, doc, strlen(doc), name2));
    assert_string_not_equal(name, name2); /* same content, fresh salt: another object */
    th_ok(cf_repo__put_object(g_repo, "index", CF_OBJ_INDEX, "x", 1, NULL));

    cf_buf b;
    cf_buf_init(&b, 0);
    th_ok(cf_repo__get_object(&b, g_repo, "snapshots", CF_OBJ_SNAPSHOT, name));
    assert_int_equal(b.len, strlen(doc));
    assert_memory_equal(b.data, doc, b.len);
    cf_buf_reset(&b);
    th_expect(cf_repo__get_object(&b, g_repo, "snapshots", CF_OBJ_LOCK, name), CF_ECORRUPT,
              name);

    /* the stored name is the SHA-256 of the bytes */
    cf_storage *st = th_storage("mem:objects");
    char path[128];
    uint8_t *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "snapshots/%s", name);
    th_ok(cf_storage_get(st, path, 0, 0, &data, &len));
    uint8_t h[32];
    char hex[65];
    cf_sha256(h, data, len);
    cf_hex_encode(hex, h, 32);
    assert_string_equal(hex, name);

    /* content that does not match its name: another valid object put under this name */
    uint8_t *other = NULL;
    size_t olen = 0;
    char path2[128];
    snprintf(path2, sizeof(path2), "snapshots/%s", name2);
    th_ok(cf_storage_get(st, path2, 0, 0, &other, &olen));
    th_ok(cf_storage_put(st, path, other, olen, 0));
    cf_buf_reset(&b);
    th_expect(cf_repo__get_object(&b, g_repo, "snapshots", CF_OBJ_SNAPSHOT, name), CF_ECORRUPT,
              "does not match its name");
    assert_int_equal(b.len, 0);

    /* a flipped byte under the right name */
    data[len - 1] ^= 1;
    th_ok(cf_storage_put(st, path, data, len, 0));
    cf_buf_reset(&b);
    th_expect(cf_repo__get_object(&b, g_repo, "snapshots", CF_OBJ_SNAPSHOT, name), CF_ECORRUPT,
              path);

    /* missing */
    th_ok(cf_storage_remove(st, path));
    cf_buf_reset(&b);
    th_expect(cf_repo__get_object(&b, g_repo, "snapshots", CF_OBJ_SNAPSHOT, name), CF_ENOTFOUND,
              NULL);
    free(data);
    free(other);
    cf_storage_close(st);
    cf_buf_free(&b);
}

static void test_put_failure(void **state)
{
    (void)state;
    char name[65] = "untouched";
    th_ok(cf_storage_mem_inject("objects", "put", 1, CF_EIO));
    th_expect(cf_repo__put_object(g_repo, "index", CF_OBJ_INDEX, "x", 1, name), CF_EIO, NULL);
    assert_string_equal(name, "untouched");
    th_ok(cf_storage_mem_inject("objects", "put", 0, 0));
    cf_storage *st = th_storage("mem:objects");
    assert_int_equal(th_count(st, "index/"), 0);
    cf_storage_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_anywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authentic_but_inconsistent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
