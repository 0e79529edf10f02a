/*
 * crypto.h - the cryptographic primitives coffer uses, over OpenSSL's libcrypto:
 * random bytes, SHA-256, HMAC-SHA-256, key derivation, AES-256-GCM sealing and scrypt.
 */
#ifndef CF_CRYPTO_H
#define CF_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CF_KEY_LEN 32
#define CF_ID_LEN 32
#define CF_NONCE_LEN 12
#define CF_TAG_LEN 16
/* Bytes a sealed message adds to its plaintext: nonce in front, tag behind. */
#define CF_SEAL_OVERHEAD (CF_NONCE_LEN + CF_TAG_LEN)

/* A 32-byte identifier: blob ids (keyed hash of plaintext) and storage object names. */
typedef struct {
    uint8_t b[CF_ID_LEN];
} cf_id;

static inline int cf_id_cmp(const cf_id *a, const cf_id *b)
{
    for (int i = 0; i < CF_ID_LEN; i++)
        if (a->b[i] != b->b[i])
            return a->b[i] < b->b[i] ? -1 : 1;
    return 0;
}
static inline bool cf_id_eq(const cf_id *a, const cf_id *b) { return cf_id_cmp(a, b) == 0; }

/* Fill out with n cryptographically secure random bytes. 0 or CF_EGENERIC. */
int cf_random_bytes(void *out, size_t n);

/* SHA-256 of data. */
void cf_sha256(uint8_t out[32], const void *data, size_t len);

/* Incremental SHA-256 (for data written in pieces). new returns NULL on failure. */
typedef struct cf_sha256_ctx cf_sha256_ctx;
cf_sha256_ctx *cf_sha256_new(void);
void cf_sha256_update(cf_sha256_ctx *c, const void *data, size_t len);
void cf_sha256_final(cf_sha256_ctx *c, uint8_t out[32]); /* the context can be reused after */
void cf_sha256_free(cf_sha256_ctx *c);
/* A copy of the state so far (NULL on failure). */
cf_sha256_ctx *cf_sha256_dup(const cf_sha256_ctx *c);

/* HMAC-SHA-256 with a 32-byte key. */
void cf_hmac_sha256(uint8_t out[32], const uint8_t key[CF_KEY_LEN], const void *data, size_t len);

/*
 * Derive a 32-byte subkey: HMAC-SHA-256(key, label || 0x00 || ctx). Labels are ASCII
 * constants naming the purpose ("coffer pack key"); ctx is a salt or number.
 */
void cf_kdf(uint8_t out[CF_KEY_LEN], const uint8_t key[CF_KEY_LEN], const char *label,
            const void *ctx, size_t ctx_len);

/*
 * AES-256-GCM seal with a fresh random 96-bit nonce. Writes nonce || ciphertext || tag to out,
 * which must hold pt_len + CF_SEAL_OVERHEAD bytes. aad may be NULL when aad_len is 0.
 * Returns 0 or CF_EGENERIC.
 */
int cf_aead_seal(uint8_t *out, const uint8_t key[CF_KEY_LEN], const void *aad, size_t aad_len,
                 const void *pt, size_t pt_len);

/*
 * cf_aead_seal with a caller-chosen nonce, for known-answer tests only: a nonce must never be
 * used twice with the same key. Same output layout and return codes as cf_aead_seal.
 */
int cf_aead_seal_nonce(uint8_t *out, const uint8_t key[CF_KEY_LEN],
                       const uint8_t nonce[CF_NONCE_LEN], const void *aad, size_t aad_len,
                       const void *pt, size_t pt_len);

/*
 * AES-256-GCM open of nonce || ciphertext || tag (ct_len >= CF_SEAL_OVERHEAD). Writes
 * ct_len - CF_SEAL_OVERHEAD bytes of plaintext to out. Returns 0, or CF_EAUTH when the tag
 * does not verify (wrong key, or the bytes or aad were altered), or CF_ECORRUPT when ct_len
 * is too short. No plaintext is left in out on failure (it is wiped).
 */
int cf_aead_open(uint8_t *out, const uint8_t key[CF_KEY_LEN], const void *aad, size_t aad_len,
                 const void *ct, size_t ct_len);

/* scrypt (RFC 7914) of a password; N a power of two. Returns 0, CF_EINVAL or CF_ENOMEM. */
int cf_scrypt(uint8_t out[CF_KEY_LEN], const char *password, size_t password_len,
              const uint8_t *salt, size_t salt_len, uint64_t n, uint32_t r, uint32_t p);

/* X25519: a new key pair, and the shared secret of a private key and a peer's public key.
 * 0 or CF_EGENERIC. */
int cf_x25519_keypair(uint8_t priv[32], uint8_t pub[32]);
int cf_x25519_shared(uint8_t out[32], const uint8_t priv[32], const uint8_t peer_pub[32]);

/* A 32-byte key sealed to a public key ("box"): an ephemeral X25519 key pair, the shared
 * secret stretched with cf_kdf, and AES-256-GCM. CF_BOX_LEN bytes. */
#define CF_BOX_LEN (32 + CF_KEY_LEN + CF_SEAL_OVERHEAD)
int cf_box_seal(uint8_t out[CF_BOX_LEN], const uint8_t recipient_pub[32], const uint8_t key[32]);
/* CF_EAUTH when the box was not sealed to this private key or was altered. */
int cf_box_open(uint8_t key[32], const uint8_t priv[32], const uint8_t pub[32],
                const uint8_t box[CF_BOX_LEN]);

/* Constant-time comparison: true when equal. */
bool cf_ct_equal(const void *a, const void *b, size_t n);

#endif
