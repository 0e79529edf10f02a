/*
 * crypto.c - coffer's cryptographic primitives over OpenSSL 3 libcrypto: random bytes,
 * SHA-256, HMAC-SHA-256, the label KDF, AES-256-GCM sealing and scrypt.
 *
 * Algorithms are fetched once per process; each thread keeps its own digest, MAC and cipher
 * contexts (freed when the thread exits), so the hot paths never re-fetch or re-allocate.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "crypto/crypto.h"
#include "util/util.h"

/* EVP update calls take an int length: feed large buffers in pieces of this size. */
#define CF_EVP_STEP ((size_t)1 << 30)

/* ---- process-wide fetched algorithms ---- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_tl_key;
static EVP_MD *g_sha256;
static EVP_MAC *g_hmac;
static EVP_CIPHER *g_aes_gcm;

/* ---- per-thread contexts ---- */

typedef struct {
    EVP_MD_CTX *md;
    EVP_MAC_CTX *mac;
    EVP_CIPHER_CTX *cipher;
    bool registered; /* destructor armed with pthread_setspecific */
} cf_crypto_tl;

static _Thread_local cf_crypto_tl tl_ctx;

static void tl_destroy(void *arg)
{
    cf_crypto_tl *t = arg;
    EVP_MD_CTX_free(t->md);
    EVP_MAC_CTX_free(t->mac);
    EVP_CIPHER_CTX_free(t->cipher);
    t->md = NULL;
    t->mac = NULL;
    t->cipher = NULL;
    t->registered = false;
}

static void global_init(void)
{
    /* OpenSSL's secure heap: key copies OpenSSL makes (an HMAC's key while it runs, private
     * keys) go to pages it marks MADV_DONTDUMP (and locks when allowed), so a core dump taken
     * in the middle of a computation does not hold them. Without it they are ordinary heap. */
    if (!CRYPTO_secure_malloc_initialized())
        (void)CRYPTO_secure_malloc_init((size_t)1 << 20, 16);
    g_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    g_aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (pthread_key_create(&g_tl_key, tl_destroy) != 0) {
        fprintf(stderr, "coffer: unable to create crypto thread key\n");
        abort();
    }
}

/* Arm the thread-exit destructor the first time this thread uses a context. */
static cf_crypto_tl *tl_get(void)
{
    pthread_once(&g_once, global_init);
    cf_crypto_tl *t = &tl_ctx;
    if (!t->registered) {
        if (pthread_setspecific(g_tl_key, t) == 0)
            t->registered = true;
    }
    return t;
}

/*
 * The digest and MAC functions have no error return: they fail only when OpenSSL cannot
 * allocate a context or its default provider is missing, and coffer cannot continue without
 * them, so that is fatal.
 */
static void crypto_fatal(const char *what)
{
    fprintf(stderr, "coffer: fatal: %s failed (out of memory or OpenSSL provider missing)\n",
            what);
    abort();
}

static EVP_MAC_CTX *tl_mac(void)
{
    cf_crypto_tl *t = tl_get();
    if (t->mac == NULL) {
        if (g_hmac == NULL || (t->mac = EVP_MAC_CTX_new(g_hmac)) == NULL)
            crypto_fatal("hmac context");
        char digest[] = "SHA2-256";
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
            OSSL_PARAM_construct_end(),
        };
        if (EVP_MAC_CTX_set_params(t->mac, params) != 1)
            crypto_fatal("hmac digest selection");
    }
    return t->mac;
}

static EVP_CIPHER_CTX *tl_cipher(void)
{
    cf_crypto_tl *t = tl_get();
    if (t->cipher == NULL && g_aes_gcm != NULL)
        t->cipher = EVP_CIPHER_CTX_new();
    return t->cipher;
}

/* ---- random ---- */

int cf_random_bytes(void *out, size_t n)
{
    uint8_t *p = out;
    while (n > 0) {
        size_t step = n < CF_EVP_STEP ? n : CF_EVP_STEP;
        if (RAND_bytes(p, (int)step) != 1)
            return cf_error_set(CF_EGENERIC, 0, "unable to get %zu random bytes: %s", step,
                                ERR_reason_error_string(ERR_get_error()));
        p += step;
        n -= step;
    }
    return 0;
}

/* ---- SHA-256 and HMAC ---- */

struct cf_sha256_ctx {
    EVP_MD_CTX *md;
};

cf_sha256_ctx *cf_sha256_new(void)
{
    cf_sha256_ctx *c = calloc(1, sizeof(*c));
    tl_get();
    if (!c || g_sha256 == NULL || !(c->md = EVP_MD_CTX_new()) ||
        EVP_DigestInit_ex2(c->md, g_sha256, NULL) != 1) {
        if (c)
            EVP_MD_CTX_free(c->md);
        free(c);
        return NULL;
    }
    return c;
}

void cf_sha256_update(cf_sha256_ctx *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        size_t step = len < CF_EVP_STEP ? len : CF_EVP_STEP;
        if (EVP_DigestUpdate(c->md, p, step) != 1)
            crypto_fatal("sha-256 update");
        p += step;
        len -= step;
    }
}

void cf_sha256_final(cf_sha256_ctx *c, uint8_t out[32])
{
    unsigned int outlen = 0;
    if (EVP_DigestFinal_ex(c->md, out, &outlen) != 1 || outlen != 32 ||
        EVP_DigestInit_ex2(c->md, g_sha256, NULL) != 1)
        crypto_fatal("sha-256 final");
}

cf_sha256_ctx *cf_sha256_dup(const cf_sha256_ctx *c)
{
    cf_sha256_ctx *d = calloc(1, sizeof(*d));
    if (!d || !(d->md = EVP_MD_CTX_new()) || EVP_MD_CTX_copy_ex(d->md, c->md) != 1) {
        if (d)
            EVP_MD_CTX_free(d->md);
        free(d);
        return NULL;
    }
    return d;
}

void cf_sha256_free(cf_sha256_ctx *c)
{
    if (!c)
        return;
    EVP_MD_CTX_free(c->md);
    free(c);
}

void cf_sha256(uint8_t out[32], const void *data, size_t len)
{
    cf_crypto_tl *t = tl_get();
    if (t->md == NULL && (g_sha256 == NULL || (t->md = EVP_MD_CTX_new()) == NULL))
        crypto_fatal("sha-256 context");
    const uint8_t *p = data;
    unsigned int outlen = 0;
    if (EVP_DigestInit_ex2(t->md, g_sha256, NULL) != 1)
        crypto_fatal("sha-256 init");
    while (len > 0) {
        size_t step = len < CF_EVP_STEP ? len : CF_EVP_STEP;
        if (EVP_DigestUpdate(t->md, p, step) != 1)
            crypto_fatal("sha-256 update");
        p += step;
        len -= step;
    }
    if (EVP_DigestFinal_ex(t->md, out, &outlen) != 1 || outlen != 32)
        crypto_fatal("sha-256 final");
}

typedef struct {
    const void *p;
    size_t len;
} cf_part;

/* Wipe the stack just below the caller, where the library's frames were: OpenSSL leaves a
 * copy of an HMAC key there (seen in core dumps of a running backup), and the stack is in
 * every core dump. */
static void __attribute__((noinline)) scrub_stack(void)
{
    uint8_t area[8192];
    OPENSSL_cleanse(area, sizeof(area));
}

/* HMAC-SHA-256 over the concatenation of parts. */
static void hmac_parts(uint8_t out[32], const uint8_t key[CF_KEY_LEN], const cf_part *parts,
                       size_t nparts)
{
    EVP_MAC_CTX *m = tl_mac();
    size_t outlen = 0;
    if (EVP_MAC_init(m, key, CF_KEY_LEN, NULL) != 1)
        crypto_fatal("hmac init");
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len > 0 && EVP_MAC_update(m, parts[i].p, parts[i].len) != 1)
            crypto_fatal("hmac update");
    }
    if (EVP_MAC_final(m, out, &outlen, 32) != 1 || outlen != 32)
        crypto_fatal("hmac final");
    /* the context is kept for the next call: leave no key in it (it is ordinary heap, which
     * a core dump holds) */
    static const uint8_t zero_key[CF_KEY_LEN];
    if (EVP_MAC_init(m, zero_key, CF_KEY_LEN, NULL) != 1)
        crypto_fatal("hmac reset");
    scrub_stack();
}

/* The cipher context is kept for the next call: replace the key schedule (whose first round
 * key is the key itself) and the GHASH key by those of an all-zero key. */
static void cipher_forget(EVP_CIPHER_CTX *c, bool enc)
{
    static const uint8_t zero_key[CF_KEY_LEN];
    if (EVP_CIPHER_CTX_get0_cipher(c) == NULL)
        return; /* never keyed */
    int ok = enc ? EVP_EncryptInit_ex2(c, NULL, zero_key, NULL, NULL)
                 : EVP_DecryptInit_ex2(c, NULL, zero_key, NULL, NULL);
    if (ok != 1) {
        ERR_clear_error();
        EVP_CIPHER_CTX_reset(c); /* frees (and cleanses) what it held */
    }
}

void cf_hmac_sha256(uint8_t out[32], const uint8_t key[CF_KEY_LEN], const void *data, size_t len)
{
    cf_part part = {data, len};
    hmac_parts(out, key, &part, 1);
}

void cf_kdf(uint8_t out[CF_KEY_LEN], const uint8_t key[CF_KEY_LEN], const char *label,
            const void *ctx, size_t ctx_len)
{
    static const uint8_t zero = 0;
    cf_part parts[3] = {
        {label, label ? strlen(label) : 0},
        {&zero, 1},
        {ctx, ctx_len},
    };
    hmac_parts(out, key, parts, 3);
}

/* ---- AES-256-GCM ---- */

/* Run data through an initialised cipher context, out may be NULL for aad. */
static int cipher_update(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in, size_t len)
{
    while (len > 0) {
        size_t step = len < CF_EVP_STEP ? len : CF_EVP_STEP;
        int outl = 0;
        if (EVP_CipherUpdate(c, out, &outl, in, (int)step) != 1)
            return -1;
        if (out != NULL) {
            if ((size_t)outl != step)
                return -1;
            out += step;
        }
        in += step;
        len -= step;
    }
    return 0;
}

int cf_aead_seal_nonce(uint8_t *out, const uint8_t key[CF_KEY_LEN],
                       const uint8_t nonce[CF_NONCE_LEN], const void *aad, size_t aad_len,
                       const void *pt, size_t pt_len)
{
    int rc = CF_EGENERIC;
    int outl = 0;
    uint8_t *ct = out + CF_NONCE_LEN;
    EVP_CIPHER_CTX *c = tl_cipher();
    if (c == NULL) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to create aes-256-gcm context");
        goto out;
    }
    if (out == NULL || (pt == NULL && pt_len > 0) || (aad == NULL && aad_len > 0)) {
        rc = cf_error_set(CF_EINVAL, 0, "unable to seal: missing buffer");
        goto out;
    }
    if (out != nonce)
        memmove(out, nonce, CF_NONCE_LEN);
    if (EVP_EncryptInit_ex2(c, g_aes_gcm, key, out, NULL) != 1)
        goto fail;
    if (aad_len > 0 && cipher_update(c, NULL, aad, aad_len) != 0)
        goto fail;
    if (cipher_update(c, ct, pt, pt_len) != 0)
        goto fail;
    if (EVP_EncryptFinal_ex(c, ct + pt_len, &outl) != 1 || outl != 0)
        goto fail;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, CF_TAG_LEN, ct + pt_len) != 1)
        goto fail;
    rc = 0;
    goto out;
fail:
    rc = cf_error_set(CF_EGENERIC, 0, "unable to seal with aes-256-gcm: %s",
                      ERR_reason_error_string(ERR_get_error()));
out:
    if (c)
        cipher_forget(c, true);
    scrub_stack();
    return rc;
}

int cf_aead_seal(uint8_t *out, const uint8_t key[CF_KEY_LEN], const void *aad, size_t aad_len,
                 const void *pt, size_t pt_len)
{
    uint8_t nonce[CF_NONCE_LEN];
    int rc = cf_random_bytes(nonce, sizeof(nonce));
    if (rc == 0)
        rc = cf_aead_seal_nonce(out, key, nonce, aad, aad_len, pt, pt_len);
    return rc;
}

int cf_aead_open(uint8_t *out, const uint8_t key[CF_KEY_LEN], const void *aad, size_t aad_len,
                 const void *ct, size_t ct_len)
{
    int rc = CF_EGENERIC;
    int outl = 0;
    size_t pt_len = 0;
    const uint8_t *in = ct;
    uint8_t tag[CF_TAG_LEN];
    EVP_CIPHER_CTX *c = NULL;

    if (ct == NULL || ct_len < CF_SEAL_OVERHEAD) {
        rc = cf_error_set(CF_ECORRUPT, 0,
                          "unable to open sealed data: %zu bytes is shorter than nonce and tag",
                          ct_len);
        goto out;
    }
    pt_len = ct_len - CF_SEAL_OVERHEAD;
    if ((out == NULL && pt_len > 0) || (aad == NULL && aad_len > 0)) {
        rc = cf_error_set(CF_EINVAL, 0, "unable to open sealed data: missing buffer");
        goto out;
    }
    c = tl_cipher();
    if (c == NULL) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to create aes-256-gcm context");
        goto out;
    }
    memcpy(tag, in + CF_NONCE_LEN + pt_len, CF_TAG_LEN); /* out may overlap ct */
    if (EVP_DecryptInit_ex2(c, g_aes_gcm, key, in, NULL) != 1)
        goto fail;
    if (aad_len > 0 && cipher_update(c, NULL, aad, aad_len) != 0)
        goto fail;
    if (cipher_update(c, out, in + CF_NONCE_LEN, pt_len) != 0)
        goto fail;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, CF_TAG_LEN, tag) != 1)
        goto fail;
    if (EVP_DecryptFinal_ex(c, pt_len > 0 ? out + pt_len : tag, &outl) != 1) {
        ERR_clear_error();
        rc = cf_error_set(CF_EAUTH, 0,
                          "unable to open sealed data: authentication failed (wrong key or "
                          "altered data)");
        goto wipe;
    }
    rc = 0;
    goto out;
fail:
    rc = cf_error_set(CF_EGENERIC, 0, "unable to open with aes-256-gcm: %s",
                      ERR_reason_error_string(ERR_get_error()));
wipe:
    if (pt_len > 0)
        OPENSSL_cleanse(out, pt_len);
out:
    if (c)
        cipher_forget(c, false);
    scrub_stack();
    return rc;
}

/* ---- scrypt ---- */

/* Bytes scrypt needs (OpenSSL's accounting: 128*r*(N+2) for V plus 128*r*p for B). */
static bool scrypt_mem(uint64_t n, uint32_t r, uint32_t p, uint64_t *out)
{
    uint64_t v, b;
    if (__builtin_mul_overflow((uint64_t)128 * r, n + 2, &v))
        return false;
    if (__builtin_mul_overflow((uint64_t)128 * r, (uint64_t)p, &b))
        return false;
    return !__builtin_add_overflow(v, b, out);
}

#define CF_SCRYPT_MAXMEM ((uint64_t)1 << 32) /* 4 GiB: far above any parameters coffer uses */

int cf_scrypt(uint8_t out[CF_KEY_LEN], const char *password, size_t password_len,
              const uint8_t *salt, size_t salt_len, uint64_t n, uint32_t r, uint32_t p)
{
    static const char empty[1] = "";
    uint64_t mem = 0;
    int rc = 0;

    if (n < 2 || (n & (n - 1)) != 0 || r == 0 || p == 0) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "invalid scrypt parameters n=%llu r=%u p=%u: n must be a power of two "
                          "above 1, r and p positive",
                          (unsigned long long)n, r, p);
        goto out;
    }
    if ((password == NULL && password_len > 0) || (salt == NULL && salt_len > 0)) {
        rc = cf_error_set(CF_EINVAL, 0, "invalid scrypt input: missing password or salt");
        goto out;
    }
    if (!scrypt_mem(n, r, p, &mem) || mem > CF_SCRYPT_MAXMEM) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "invalid scrypt parameters n=%llu r=%u p=%u: need more than 4 GiB",
                          (unsigned long long)n, r, p);
        goto out;
    }
    /* A NULL password or salt makes OpenSSL only check parameters: pass "" instead. */
    if (EVP_PBE_scrypt(password ? password : empty, password_len,
                       salt ? salt : (const uint8_t *)empty, salt_len, n, r, p, mem + 4096,
                       out, CF_KEY_LEN) != 1) {
        unsigned long e = ERR_get_error();
        rc = cf_error_set(CF_ENOMEM, 0, "unable to run scrypt n=%llu r=%u p=%u: %s",
                          (unsigned long long)n, r, p,
                          e ? ERR_reason_error_string(e) : "unknown error");
        ERR_clear_error();
        goto out;
    }
out:
    return rc;
}

bool cf_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

/* ------------------------------------------------------------------ X25519 and boxes */

int cf_x25519_keypair(uint8_t priv[32], uint8_t pub[32])
{
    int rc = CF_EGENERIC;
    EVP_PKEY *k = NULL;
    if (cf_random_bytes(priv, 32))
        return CF_EGENERIC;
    k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
    size_t n = 32;
    if (k && EVP_PKEY_get_raw_public_key(k, pub, &n) == 1 && n == 32)
        rc = 0;
    EVP_PKEY_free(k);
    if (rc)
        cf_error_set(rc, 0, "unable to create an X25519 key pair");
    return rc;
}

int cf_x25519_shared(uint8_t out[32], const uint8_t priv[32], const uint8_t peer_pub[32])
{
    int rc = CF_EGENERIC;
    EVP_PKEY *mine = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
    EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pub, 32);
    EVP_PKEY_CTX *ctx = mine ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
    size_t n = 32;
    if (ctx && peer && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
        EVP_PKEY_derive(ctx, out, &n) == 1 && n == 32)
        rc = 0;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(mine);
    EVP_PKEY_free(peer);
    if (rc)
        cf_error_set(rc, 0, "X25519 key agreement failed");
    return rc;
}

static void box_kek(uint8_t kek[32], const uint8_t shared[32], const uint8_t eph_pub[32],
                    const uint8_t recipient_pub[32])
{
    uint8_t ctx[64];
    memcpy(ctx, eph_pub, 32);
    memcpy(ctx + 32, recipient_pub, 32);
    cf_kdf(kek, shared, "coffer box", ctx, sizeof(ctx));
}

int cf_box_seal(uint8_t out[CF_BOX_LEN], const uint8_t recipient_pub[32], const uint8_t key[32])
{
    uint8_t eph[32], shared[32], kek[32];
    int rc = cf_x25519_keypair(eph, out);
    if (rc == 0)
        rc = cf_x25519_shared(shared, eph, recipient_pub);
    if (rc == 0) {
        box_kek(kek, shared, out, recipient_pub);
        rc = cf_aead_seal(out + 32, kek, "coffer box v1", 13, key, 32);
    }
    cf_wipe(eph, sizeof(eph));
    cf_wipe(shared, sizeof(shared));
    cf_wipe(kek, sizeof(kek));
    return rc;
}

int cf_box_open(uint8_t key[32], const uint8_t priv[32], const uint8_t pub[32],
                const uint8_t box[CF_BOX_LEN])
{
    uint8_t shared[32], kek[32];
    int rc = cf_x25519_shared(shared, priv, box);
    if (rc == 0) {
        box_kek(kek, shared, box, pub);
        rc = cf_aead_open(key, kek, "coffer box v1", 13, box + 32, CF_BOX_LEN - 32);
    }
    cf_wipe(shared, sizeof(shared));
    cf_wipe(kek, sizeof(kek));
    return rc;
}
