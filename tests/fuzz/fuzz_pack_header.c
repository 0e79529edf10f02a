/*
 * fuzz_pack_header.c - cf_pack__read_header (and cf_pack__open_blob on what it returns) on
 * hostile packs. The repository is opened once, on first use, and given a fixed master key
 * so that saved corpus files stay valid across runs.
 *
 * Input, first byte even: the rest is a pack as stored.
 * First byte odd: a header is forged: bytes 1-2 (little endian) give the blob area size, the
 * rest is the header plaintext (u32 count, 48-byte entries), sealed with the right key, so
 * the fuzzer reaches the checks behind the authentication.
 * Results other than success must be CF_ECORRUPT or CF_EUNSUPPORTED (or CF_EAUTH for a
 * generation the key does not hold); entries returned must lie inside the blob area.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

#define PREFIX CF_PACK_PREFIX
#define TRAILER 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cf_repo *g_repo;

static cf_repo *repo(void)
{
    if (g_repo)
        return g_repo;
    cf_init_opts o;
    memset(&o, 0, sizeof(o));
    o.compression_level = -1;
    o.kdf_log_n = 10;
    if (cf_repo_init("mem:fuzz-pack", "fuzz", &o) != 0 ||
        cf_repo_open(&g_repo, "mem:fuzz-pack", "fuzz") != 0)
        abort();
    /* a fixed key bundle: generation 0 only */
    cf_master_key *mk = &g_repo->mk;
    memset(mk, 0, sizeof(*mk));
    memset(mk->mac, 0x24, sizeof(mk->mac));
    memset(mk->data, 0x42, sizeof(mk->data));
    mk->gen = 0;
    mk->ngens = 1;
    mk->gen_ids[0] = 0;
    memcpy(mk->gen_keys[0], mk->data, CF_KEY_LEN);
    return g_repo;
}

/* Build a pack whose header plaintext is hdr (sealed with the repository's key). */
static uint8_t *forge(size_t *out_len, size_t body, const uint8_t *hdr, size_t hlen)
{
    size_t sealed = hlen + CF_SEAL_OVERHEAD;
    size_t len = PREFIX + body + sealed + TRAILER;
    uint8_t *p = calloc(1, len);
    if (!p)
        abort();
    memcpy(p, "CFPK\1\0\0\0", 8);
    cf_le32_put(p + 8, 0);    /* generation */
    memset(p + 12, 0x5a, 16); /* salt */
    for (size_t i = 0; i < body; i++)
        p[PREFIX + i] = (uint8_t)(i * 131u);
    uint8_t key[CF_KEY_LEN];
    cf_kdf(key, repo()->mk.data, "coffer pack key", p + 12, 16);
    if (cf_aead_seal(p + PREFIX + body, key, p, PREFIX, hdr, hlen) != 0)
        abort();
    cf_le32_put(p + len - 8, (uint32_t)sealed);
    memcpy(p + len - 4, "CFPE", 4);
    *out_len = len;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_repo *r = repo();
    if (size < 1)
        return 0;
    uint8_t *pack;
    size_t len;
    if (data[0] & 1) {
        if (size < 3)
            return 0;
        size_t body = (size_t)data[1] | (size_t)data[2] << 8;
        pack = forge(&len, body, data + 3, size - 3);
    } else {
        len = size - 1;
        pack = malloc(len ? len : 1); /* exactly len bytes: over-reads are caught */
        if (!pack)
            abort();
        if (len)
            memcpy(pack, data + 1, len);
    }
    cf_pack_entry *es = NULL;
    size_t n = 0;
    int rc = cf_pack__read_header(&es, &n, r, pack, len, "data/fuzz");
    if (rc != 0) {
        if ((rc != CF_ECORRUPT && rc != CF_EUNSUPPORTED && rc != CF_EAUTH) || es != NULL || n != 0)
            abort();
        free(pack);
        return 0;
    }
    size_t hstart = len - TRAILER - cf_le32_get(pack + len - 8);
    cf_buf out;
    cf_buf_init(&out, 0);
    for (size_t i = 0; i < n; i++) {
        if (es[i].offset < PREFIX || es[i].length < CF_SEAL_OVERHEAD ||
            (uint64_t)es[i].offset + es[i].length > hstart)
            abort();
        cf_buf_reset(&out);
        int r2 = cf_pack__open_blob(&out, r, pack, &es[i], pack + es[i].offset, "data/fuzz");
        if (r2 != 0 && r2 != CF_ECORRUPT && r2 != CF_EUNSUPPORTED)
            abort();
        if (r2 == 0 && out.len != es[i].raw_len)
            abort();
    }
    cf_buf_free(&out);
    free(es);
    free(pack);
    return 0;
}
