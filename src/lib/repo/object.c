/*
 * object.c - sealed objects: index files, snapshot documents and locks. Each is compressed,
 * then sealed with AES-256-GCM under a key derived from the data key and a random salt; the
 * header (magic, type, compression, length, salt) is the associated data. Objects are stored
 * under the SHA-256 of their sealed bytes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "compress/compress.h"
#include "repo/repo.h"

#define OBJ_MAGIC "CFOB"
#define OBJ_HEADER 32
#define OBJ_MAX ((size_t)1 << 30)

int cf_repo__seal_object(cf_buf *out, const cf_repo *r, uint8_t type, const void *pt, size_t len)
{
    int rc = 0, algo = CF_COMP_NONE;
    uint8_t hdr[OBJ_HEADER], key[CF_KEY_LEN];
    uint8_t *tmp = NULL;
    size_t clen = 0;
    if (len > OBJ_MAX)
        return cf_error_set(CF_EINVAL, 0, "object of %zu bytes is too large", len);
    size_t bound = cf_compress_bound(len);
    tmp = cf_malloc(bound);
    if (!tmp)
        return CF_ENOMEM;
    if ((rc = cf_compress(&algo, &clen, tmp, bound, pt, len, CF_COMP_LEVEL_META)))
        goto out;
    const void *payload = algo == CF_COMP_NONE ? pt : tmp;
    size_t plen = algo == CF_COMP_NONE ? len : clen;
    memcpy(hdr, OBJ_MAGIC, 4);
    hdr[4] = 1;
    hdr[5] = type;
    hdr[6] = (uint8_t)algo;
    hdr[7] = 0;
    cf_le32_put(hdr + 8, (uint32_t)len);
    if ((rc = cf_random_bytes(hdr + 16, 16)))
        goto out;
    /* index files and locks: the index key, which write-only keys hold too; everything else:
     * the data key, or for a write-only key a random key boxed to the repository's public key */
    uint8_t box[CF_BOX_LEN];
    size_t boxlen = 0;
    if ((type == CF_OBJ_INDEX || type == CF_OBJ_LOCK) && r->mk.has_index) {
        cf_le32_put(hdr + 12, CF_GEN_INDEX);
        cf_kdf(key, r->mk.index, "coffer object key", hdr + 16, 16);
    } else if (cf_master__can_read(&r->mk)) {
        cf_le32_put(hdr + 12, r->mk.gen);
        cf_kdf(key, r->mk.data, "coffer object key", hdr + 16, 16);
    } else {
        cf_le32_put(hdr + 12, CF_GEN_BOX);
        if ((rc = cf_random_bytes(key, sizeof(key))) || (rc = cf_box_seal(box, r->mk.pub, key)))
            goto out;
        boxlen = CF_BOX_LEN;
    }
    if ((rc = cf_buf_reserve(out, OBJ_HEADER + boxlen + plen + CF_SEAL_OVERHEAD)))
        goto out;
    uint8_t *dst = out->data + out->len;
    memcpy(dst, hdr, OBJ_HEADER);
    if (boxlen)
        memcpy(dst + OBJ_HEADER, box, boxlen);
    /* the header and the box are the associated data */
    rc = cf_aead_seal(dst + OBJ_HEADER + boxlen, key, dst, OBJ_HEADER + boxlen, payload, plen);
    if (rc)
        goto out;
    out->len += OBJ_HEADER + boxlen + plen + CF_SEAL_OVERHEAD;
out:
    cf_wipe(key, sizeof(key));
    free(tmp);
    return rc;
}

int cf_repo__open_object(cf_buf *out, const cf_repo *r, uint8_t type, const uint8_t *data,
                         size_t len, const char *name)
{
    int rc = 0;
    uint8_t key[CF_KEY_LEN];
    uint8_t *plain = NULL;
    if (len < OBJ_HEADER + CF_SEAL_OVERHEAD || memcmp(data, OBJ_MAGIC, 4) != 0 || data[4] != 1)
        return cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: not a coffer object (%zu bytes)",
                            name, len);
    if (data[5] != type)
        return cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: object type %u, expected %u", name,
                            data[5], type);
    uint64_t raw_len = cf_le32_get(data + 8);
    uint32_t gen = cf_le32_get(data + 12);
    size_t head = OBJ_HEADER;
    if (raw_len > OBJ_MAX)
        return cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: length %llu out of range", name,
                            (unsigned long long)raw_len);
    if (gen == CF_GEN_INDEX) {
        if (!r->mk.has_index)
            return cf_error_set(CF_ECORRUPT, 0, "'%s' is sealed with an index key this key does "
                                "not hold", name);
        cf_kdf(key, r->mk.index, "coffer object key", data + 16, 16);
    } else if (gen == CF_GEN_BOX) {
        if (!r->mk.has_priv)
            return cf_error_set(CF_EPERM, 0, "'%s' can only be read with an admin key: this key "
                                "is write-only", name);
        if (len < OBJ_HEADER + CF_BOX_LEN + CF_SEAL_OVERHEAD ||
            cf_box_open(key, r->mk.priv, r->mk.pub, data + OBJ_HEADER))
            return cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: its key box does not open", name);
        head += CF_BOX_LEN;
    } else {
        const uint8_t *dk = cf_master__data_key(&r->mk, gen);
        if (!dk && !cf_master__can_read(&r->mk))
            return cf_error_set(CF_EPERM, 0, "'%s' can only be read with an admin key: this key "
                                "is write-only", name);
        if (!dk) {
            cf_repo__note_unknown_generation((cf_repo *)(uintptr_t)r, gen);
            return cf_error_set(CF_ECORRUPT, 0,
                                "'%s' names data key generation %u, which this key does not hold "
                                "(damaged, or sealed by a newer key)",
                                name, gen);
        }
        cf_kdf(key, dk, "coffer object key", data + 16, 16);
    }
    size_t plen = len - head - CF_SEAL_OVERHEAD;
    plain = cf_malloc(plen);
    if (!plain) {
        rc = CF_ENOMEM;
        goto out;
    }
    rc = cf_aead_open(plain, key, data, head, data + head, len - head);
    if (rc) {
        rc = cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: authentication failed", name);
        goto out;
    }
    if (data[6] == CF_COMP_NONE) {
        if (plen != raw_len) {
            rc = cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: length mismatch", name);
            goto out;
        }
        rc = cf_buf_append(out, plain, plen);
    } else {
        if ((rc = cf_buf_reserve(out, (size_t)raw_len + 1)))
            goto out;
        rc = cf_decompress(out->data + out->len, (size_t)raw_len, plain, plen, data[6]);
        if (rc) {
            rc = cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: does not decompress", name);
            goto out;
        }
        out->len += (size_t)raw_len;
        out->data[out->len] = 0;
    }
out:
    cf_wipe(key, sizeof(key));
    free(plain);
    return rc;
}

int cf_repo__put_object(cf_repo *r, const char *dir, uint8_t type, const void *pt, size_t len,
                        char out_name[65])
{
    cf_buf sealed;
    cf_buf_init(&sealed, 0);
    uint8_t h[32];
    char hex[65], path[128];
    int rc = cf_repo__seal_object(&sealed, r, type, pt, len);
    if (rc)
        goto out;
    cf_sha256(h, sealed.data, sealed.len);
    cf_hex_encode(hex, h, sizeof(h));
    snprintf(path, sizeof(path), "%s/%s", dir, hex);
    if ((rc = cf_storage_put(r->st, path, sealed.data, sealed.len, 0)))
        goto out;
    /* what this host writes it need not download again (cf_repo__get_object) */
    if (strcmp(dir, "index") == 0 || strcmp(dir, "snapshots") == 0)
        cf_cache__put(r, dir, hex, sealed.data, sealed.len);
    pthread_mutex_lock(&r->mu);
    r->bytes_written += sealed.len;
    pthread_mutex_unlock(&r->mu);
    if (out_name)
        memcpy(out_name, hex, 65);
out:
    cf_buf_free(&sealed);
    return rc;
}

int cf_repo__get_object(cf_buf *out, cf_repo *r, const char *dir, uint8_t type, const char *name)
{
    char path[128];
    uint8_t *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    /* index files and snapshot documents never change: a remote repository's are cached */
    bool cacheable = strcmp(dir, "index") == 0 || strcmp(dir, "snapshots") == 0;
    bool cached = cacheable && cf_cache__get(r, dir, name, &data, &len);
    int rc = cached ? 0 : cf_storage_get(r->st, path, 0, 0, &data, &len);
    if (rc)
        return rc;
    uint8_t h[32];
    char hex[65];
    cf_sha256(h, data, len);
    cf_hex_encode(hex, h, sizeof(h));
    if (strlen(name) == 64 && strcmp(hex, name) != 0)
        rc = cf_error_set(CF_ECORRUPT, 0, "'%s' is damaged: its content does not match its name",
                          path);
    else
        rc = cf_repo__open_object(out, r, type, data, len, path);
    if (rc == 0 && cacheable && !cached)
        cf_cache__put(r, dir, name, data, len);
    free(data);
    return rc;
}
