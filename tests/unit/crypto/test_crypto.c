/*
 * test_crypto.c - known answers and failure paths for crypto/crypto.c: SHA-256, HMAC, the
 * KDF, scrypt, AES-256-GCM sealing (tampering, wrong keys, short input) and per-thread state.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "util/util.h"

static void unhex(uint8_t *out, size_t len, const char *hex)
{
    assert_int_equal(strlen(hex), 2 * len);
    assert_int_equal(cf_hex_decode(out, len, hex), 0);
}

static void assert_hex(const uint8_t *got, size_t len, const char *hex)
{
    char buf[1024];
    assert_true(2 * len < sizeof(buf));
    cf_hex_encode(buf, got, len);
    assert_string_equal(buf, hex);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static const uint8_t seq_key[CF_KEY_LEN] = {
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
};

/* ---- SHA-256 ---- */

static void test_sha256_known(void **state)
{
    (void)state;
    uint8_t d[32];
    cf_sha256(d, "abc", 3);
    assert_hex(d, 32, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cf_sha256(d, NULL, 0);
    assert_hex(d, 32, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    uint8_t *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    cf_sha256(d, a, 1000000);
    assert_hex(d, 32, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* ---- HMAC-SHA-256 ---- */

static void test_hmac_known(void **state)
{
    (void)state;
    uint8_t key[CF_KEY_LEN];
    uint8_t mac[32];

    /*
     * RFC 4231 test case 2 uses the 4-byte key "Jefe". HMAC zero-pads keys to the block
     * size, so "Jefe" followed by 28 zero bytes is the same key and gives the RFC's answer.
     */
    memset(key, 0, sizeof(key));
    memcpy(key, "Jefe", 4);
    const char *msg = "what do ya want for nothing?";
    cf_hmac_sha256(mac, key, msg, strlen(msg));
    assert_hex(mac, 32, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    /* RFC 4231 test case 1: key 20 x 0x0b, zero-padded to 32 bytes. */
    memset(key, 0, sizeof(key));
    memset(key, 0x0b, 20);
    cf_hmac_sha256(mac, key, "Hi There", 8);
    assert_hex(mac, 32, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    /* A full 32-byte key (checked with openssl dgst -sha256 -mac HMAC). */
    cf_hmac_sha256(mac, seq_key, "coffer hmac test", 16);
    assert_hex(mac, 32, "28a4bf24db0d2aee079d39c852f4224807f51d77849b62694c9052edff1675d8");
}

/* ---- KDF ---- */

static void test_kdf(void **state)
{
    (void)state;
    uint8_t a[CF_KEY_LEN], b[CF_KEY_LEN], c[CF_KEY_LEN];
    const uint8_t ctx[2] = {1, 2};

    /* Defined as HMAC-SHA-256(key, label || 0x00 || ctx). */
    cf_kdf(a, seq_key, "coffer pack key", ctx, sizeof(ctx));
    assert_hex(a, 32, "f30760977e7a2fc63e3bdbe4ad6e80a0bd3018dbdc3658ee4148810ea286eb70");
    uint8_t msg[] = "coffer pack key\0\x01\x02";
    cf_hmac_sha256(b, seq_key, msg, sizeof(msg) - 1);
    assert_memory_equal(a, b, 32);

    /* Labels separate: different label, same ctx -> different key. */
    cf_kdf(b, seq_key, "coffer index key", ctx, sizeof(ctx));
    assert_memory_not_equal(a, b, 32);
    /* The 0x00 separator keeps label and ctx apart: "ab"+"c" differs from "a"+"bc". */
    cf_kdf(b, seq_key, "ab", "c", 1);
    cf_kdf(c, seq_key, "a", "bc", 2);
    assert_memory_not_equal(b, c, 32);
    /* Context separates. */
    cf_kdf(b, seq_key, "coffer pack key", "\x01\x03", 2);
    assert_memory_not_equal(a, b, 32);
    /* Empty context is allowed and deterministic. */
    cf_kdf(b, seq_key, "coffer pack key", NULL, 0);
    cf_kdf(c, seq_key, "coffer pack key", NULL, 0);
    assert_memory_equal(b, c, 32);
}

/* ---- scrypt ---- */

static void test_scrypt_rfc7914(void **state)
{
    (void)state;
    uint8_t out[CF_KEY_LEN];
    assert_int_equal(cf_scrypt(out, "password", 8, (const uint8_t *)"NaCl", 4, 1024, 8, 16), 0);
    assert_hex(out, 32, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162");
}

static void test_scrypt_default_cost(void **state)
{
    (void)state;
    uint8_t salt[16];
    uint8_t out[CF_KEY_LEN];
    for (int i = 0; i < 16; i++)
        salt[i] = (uint8_t)i;
    /* The repository's cost, N=2^17 r=8 p=1 (128 MiB): checked with Python hashlib.scrypt. */
    const char *pw = "correct horse battery staple";
    assert_int_equal(cf_scrypt(out, pw, strlen(pw), salt, sizeof(salt), 1u << 17, 8, 1), 0);
    assert_hex(out, 32, "1b2946da71f41179e83b99dc33842d15741b87c4121c8c7f3781c1df864fb58b");
}

static void test_scrypt_invalid(void **state)
{
    (void)state;
    uint8_t out[CF_KEY_LEN];
    const uint8_t salt[4] = {1, 2, 3, 4};
    assert_int_equal(cf_scrypt(out, "pw", 2, salt, 4, 1000, 8, 1), CF_EINVAL);
    assert_int_equal(cf_error_last()->code, CF_EINVAL);
    assert_int_equal(cf_scrypt(out, "pw", 2, salt, 4, 1, 8, 1), CF_EINVAL);
    assert_int_equal(cf_scrypt(out, "pw", 2, salt, 4, 0, 8, 1), CF_EINVAL);
    assert_int_equal(cf_scrypt(out, "pw", 2, salt, 4, 1024, 0, 1), CF_EINVAL);
    assert_int_equal(cf_scrypt(out, "pw", 2, salt, 4, 1024, 8, 0), CF_EINVAL);
    assert_int_equal(cf_scrypt(out, NULL, 2, salt, 4, 1024, 8, 1), CF_EINVAL);
    /* 2^40 * 1 KiB: far beyond the memory ceiling. */
    assert_int_equal(cf_scrypt(out, "pw", 2, salt, 4, (uint64_t)1 << 40, 8, 1), CF_EINVAL);
    /* Empty password and salt are legal. */
    uint8_t a[CF_KEY_LEN], b[CF_KEY_LEN];
    assert_int_equal(cf_scrypt(a, NULL, 0, NULL, 0, 16, 1, 1), 0);
    assert_int_equal(cf_scrypt(b, "", 0, (const uint8_t *)"", 0, 16, 1, 1), 0);
    assert_memory_equal(a, b, 32);
    /* RFC 7914 section 12, first vector: empty password and salt, N=16 r=1 p=1. */
    assert_hex(a, 32, "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442");
}

/* ---- AES-256-GCM ---- */

static void test_aead_known(void **state)
{
    (void)state;
    /* McGrew & Viega GCM spec, test case 16 (AES-256, with AAD). */
    uint8_t key[32], iv[12], pt[60], aad[20], want[60 + 16];
    unhex(key, 32, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    unhex(iv, 12, "cafebabefacedbaddecaf888");
    unhex(pt, 60,
          "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532f"
          "cf0e2449a6b525b16aedf5aa0de657ba637b39");
    unhex(aad, 20, "feedfacedeadbeeffeedfacedeadbeefabaddad2");
    unhex(want, 76,
          "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7"
          "b08b1056828838c5f61e6393ba7a0abcc9f662"
          "76fc6ece0f4e1768cddf8853bb2d551b");
    uint8_t sealed[60 + CF_SEAL_OVERHEAD];
    assert_int_equal(cf_aead_seal_nonce(sealed, key, iv, aad, sizeof(aad), pt, sizeof(pt)), 0);
    assert_memory_equal(sealed, iv, 12);
    assert_memory_equal(sealed + 12, want, sizeof(want));

    uint8_t back[60];
    assert_int_equal(cf_aead_open(back, key, aad, sizeof(aad), sealed, sizeof(sealed)), 0);
    assert_memory_equal(back, pt, sizeof(pt));

    /* Test case 13: zero key, zero nonce, empty plaintext, no AAD: tag only. */
    uint8_t zk[32] = {0}, zn[12] = {0}, tagonly[CF_SEAL_OVERHEAD];
    assert_int_equal(cf_aead_seal_nonce(tagonly, zk, zn, NULL, 0, NULL, 0), 0);
    assert_hex(tagonly + 12, 16, "530f8afbc74536b9a963b4f1c4cb738b");
    assert_int_equal(cf_aead_open(NULL, zk, NULL, 0, tagonly, sizeof(tagonly)), 0);
}

static void test_aead_roundtrip(void **state)
{
    (void)state;
    uint8_t key[CF_KEY_LEN];
    assert_int_equal(cf_random_bytes(key, sizeof(key)), 0);

    /* Sizes around the AES block and the int-length step; aad on and off. */
    const size_t sizes[] = {0, 1, 15, 16, 17, 4096, 1000003};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        uint8_t *pt = malloc(n + 1), *ct = malloc(n + CF_SEAL_OVERHEAD), *back = malloc(n + 1);
        assert_non_null(pt);
        assert_non_null(ct);
        assert_non_null(back);
        for (size_t i = 0; i < n; i++)
            pt[i] = (uint8_t)(i * 31u + 7u);
        const char *aad = (s & 1) ? "blob 42" : NULL;
        size_t aad_len = aad ? strlen(aad) : 0;
        assert_int_equal(cf_aead_seal(ct, key, aad, aad_len, pt, n), 0);
        if (n >= 16)
            assert_memory_not_equal(ct + CF_NONCE_LEN, pt, 16);
        assert_int_equal(cf_aead_open(back, key, aad, aad_len, ct, n + CF_SEAL_OVERHEAD), 0);
        if (n > 0)
            assert_memory_equal(back, pt, n);
        free(pt);
        free(ct);
        free(back);
    }
}

static void test_aead_nonce_random(void **state)
{
    (void)state;
    uint8_t key[CF_KEY_LEN] = {7};
    const char *pt = "same plaintext, twice";
    size_t n = strlen(pt);
    uint8_t a[64], b[64];
    assert_int_equal(cf_aead_seal(a, key, NULL, 0, pt, n), 0);
    assert_int_equal(cf_aead_seal(b, key, NULL, 0, pt, n), 0);
    assert_memory_not_equal(a, b, CF_NONCE_LEN);
    assert_memory_not_equal(a + CF_NONCE_LEN, b + CF_NONCE_LEN, n + CF_TAG_LEN);
}

/* Open must fail with CF_EAUTH and leave no plaintext behind. */
static void expect_auth_fail(const uint8_t *key, const void *aad, size_t aad_len,
                             const uint8_t *ct, size_t ct_len)
{
    uint8_t out[256];
    size_t pt_len = ct_len - CF_SEAL_OVERHEAD;
    assert_true(pt_len <= sizeof(out));
    memset(out, 0xAA, sizeof(out));
    assert_int_equal(cf_aead_open(out, key, aad, aad_len, ct, ct_len), CF_EAUTH);
    assert_int_equal(cf_error_last()->code, CF_EAUTH);
    assert_true(all_zero(out, pt_len));
    assert_int_equal(out[pt_len], 0xAA); /* nothing written past the plaintext */
}

static void test_aead_tamper(void **state)
{
    (void)state;
    uint8_t key[CF_KEY_LEN];
    uint8_t ct[100 + CF_SEAL_OVERHEAD], bad[sizeof(ct)];
    uint8_t pt[100];
    const char aad[] = "pack header";
    for (size_t i = 0; i < sizeof(pt); i++)
        pt[i] = (uint8_t)i;
    assert_int_equal(cf_random_bytes(key, sizeof(key)), 0);
    assert_int_equal(cf_aead_seal(ct, key, aad, sizeof(aad), pt, sizeof(pt)), 0);

    /* Flip one bit in the nonce, in the ciphertext (first, middle, last byte), in the tag. */
    const size_t spots[] = {0, 11, 12, 60, 111, 112, 127};
    for (size_t s = 0; s < sizeof(spots) / sizeof(spots[0]); s++) {
        memcpy(bad, ct, sizeof(ct));
        bad[spots[s]] ^= 0x04;
        expect_auth_fail(key, aad, sizeof(aad), bad, sizeof(bad));
    }
    /* Altered aad, missing aad, extra aad. */
    char aad2[sizeof(aad)];
    memcpy(aad2, aad, sizeof(aad));
    aad2[3] ^= 1;
    expect_auth_fail(key, aad2, sizeof(aad2), ct, sizeof(ct));
    expect_auth_fail(key, NULL, 0, ct, sizeof(ct));
    expect_auth_fail(key, aad, sizeof(aad) - 1, ct, sizeof(ct));
    /* Truncated (still long enough): the tag moves, so it fails. */
    expect_auth_fail(key, aad, sizeof(aad), ct, sizeof(ct) - 1);

    /* Wrong key. */
    uint8_t key2[CF_KEY_LEN];
    memcpy(key2, key, sizeof(key));
    key2[31] ^= 0x80;
    expect_auth_fail(key2, aad, sizeof(aad), ct, sizeof(ct));

    /* The untouched message still opens. */
    uint8_t back[100];
    assert_int_equal(cf_aead_open(back, key, aad, sizeof(aad), ct, sizeof(ct)), 0);
    assert_memory_equal(back, pt, sizeof(pt));
}

static void test_aead_short(void **state)
{
    (void)state;
    uint8_t key[CF_KEY_LEN] = {1};
    uint8_t ct[CF_SEAL_OVERHEAD] = {0};
    uint8_t out[8];
    assert_int_equal(cf_aead_open(out, key, NULL, 0, ct, 0), CF_ECORRUPT);
    assert_int_equal(cf_aead_open(out, key, NULL, 0, ct, CF_SEAL_OVERHEAD - 1), CF_ECORRUPT);
    assert_int_equal(cf_error_last()->code, CF_ECORRUPT);
    assert_int_equal(cf_aead_open(out, key, NULL, 0, NULL, 0), CF_ECORRUPT);
    /* Missing buffers are caller errors. */
    uint8_t big[64] = {0};
    assert_int_equal(cf_aead_open(NULL, key, NULL, 0, big, sizeof(big)), CF_EINVAL);
    assert_int_equal(cf_aead_open(out, key, NULL, 3, big, CF_SEAL_OVERHEAD + 1), CF_EINVAL);
    assert_int_equal(cf_aead_seal(NULL, key, NULL, 0, big, 1), CF_EINVAL);
    assert_int_equal(cf_aead_seal(big, key, NULL, 0, NULL, 1), CF_EINVAL);
    assert_int_equal(cf_aead_seal(big, key, NULL, 2, big + 32, 1), CF_EINVAL);
    /* Exactly the overhead with a bogus tag is an authentication failure, not corruption. */
    assert_int_equal(cf_aead_open(out, key, NULL, 0, ct, CF_SEAL_OVERHEAD), CF_EAUTH);
}

/* ---- misc ---- */

static void test_random_and_ct_equal(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    assert_int_equal(cf_random_bytes(a, sizeof(a)), 0);
    assert_int_equal(cf_random_bytes(b, sizeof(b)), 0);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(cf_random_bytes(a, 0), 0);

    assert_true(cf_ct_equal(a, a, sizeof(a)));
    memcpy(b, a, sizeof(a));
    assert_true(cf_ct_equal(a, b, sizeof(a)));
    b[31] ^= 1;
    assert_false(cf_ct_equal(a, b, sizeof(a)));
    b[31] ^= 1;
    b[0] ^= 0x80;
    assert_false(cf_ct_equal(a, b, sizeof(a)));
    assert_true(cf_ct_equal(a, b, 0));
}

static void test_id_cmp(void **state)
{
    (void)state;
    cf_id a, b;
    memset(&a, 0x11, sizeof(a));
    memset(&b, 0x11, sizeof(b));
    assert_true(cf_id_eq(&a, &b));
    b.b[5] = 0x12;
    assert_int_equal(cf_id_cmp(&a, &b), -1);
    assert_int_equal(cf_id_cmp(&b, &a), 1);
    assert_false(cf_id_eq(&a, &b));
}

/* Several threads use their own contexts at once; each checks a known answer. */
static void *thread_main(void *arg)
{
    (void)arg;
    uint8_t key[CF_KEY_LEN] = {0}, nonce[CF_NONCE_LEN] = {0}, out[CF_SEAL_OVERHEAD], d[32];
    for (int i = 0; i < 200; i++) {
        cf_sha256(d, "abc", 3);
        if (d[0] != 0xba || d[31] != 0xad)
            return (void *)1;
        if (cf_aead_seal_nonce(out, key, nonce, NULL, 0, NULL, 0) != 0 || out[12] != 0x53)
            return (void *)1;
        if (cf_aead_open(NULL, key, NULL, 0, out, sizeof(out)) != 0)
            return (void *)1;
        cf_hmac_sha256(d, seq_key, "coffer hmac test", 16);
        if (d[0] != 0x28)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = (void *)1;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known),
        cmocka_unit_test(test_hmac_known),
        cmocka_unit_test(test_kdf),
        cmocka_unit_test(test_scrypt_rfc7914),
        cmocka_unit_test(test_scrypt_default_cost),
        cmocka_unit_test(test_scrypt_invalid),
        cmocka_unit_test(test_aead_known),
        cmocka_unit_test(test_aead_roundtrip),
        cmocka_unit_test(test_aead_nonce_random),
        cmocka_unit_test(test_aead_tamper),
        cmocka_unit_test(test_aead_short),
        cmocka_unit_test(test_random_and_ct_equal),
        cmocka_unit_test(test_id_cmp),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
