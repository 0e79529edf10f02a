/*
 * pack.c - pack files: many sealed blobs followed by a sealed header listing them and an
 * 8-byte trailer. Each pack has a random salt from which its key is derived, so no AES-GCM
 * key seals more than the few thousand blobs of one pack.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

#include "compress/compress.h"
#include "repo/repo.h"

#define PACK_MAGIC "CFPK"
#define PACK_END_MAGIC "CFPE"
#define PACK_PREFIX CF_PACK_PREFIX
#define PACK_TRAILER 8
#define PACK_ENTRY 48
#define BLOB_AAD 38
#define PACK_PENDING CF_INDEX_PENDING

void cf_pack__path(char out[80], const cf_id *id)
{
    char hex[65];
    cf_hex_encode(hex, id->b, 32);
    snprintf(out, 80, "data/%.2s/%s", hex, hex);
}

static void blob_aad(uint8_t aad[BLOB_AAD], const cf_id *id, uint8_t type, uint8_t comp,
                     uint32_t raw_len)
{
    memcpy(aad, id->b, 32);
    aad[32] = type;
    aad[33] = comp;
    cf_le32_put(aad + 34, raw_len);
}

size_t cf_pack__prefix_len(const uint8_t *prefix)
{
    return cf_le32_get(prefix + 8) == CF_GEN_BOX ? CF_PACK_PREFIX_MAX : PACK_PREFIX;
}

/* The key of a pack from its prefix (generation and salt, and the key box of packs written
 * by a write-only key). */
static int pack_key(uint8_t key[CF_KEY_LEN], const cf_repo *r, const uint8_t *prefix,
                    const char *name)
{
    uint32_t gen = cf_le32_get(prefix + 8);
    if (gen == CF_GEN_BOX) {
        if (!r->mk.has_priv)
            return cf_error_set(CF_EPERM, 0, "pack '%s' can only be read with an admin key: this "
                                "key is write-only", name);
        if (cf_box_open(key, r->mk.priv, r->mk.pub, prefix + PACK_PREFIX))
            return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: its key box does not open",
                                name);
        return 0;
    }
    if (!cf_master__can_read(&r->mk))
        return cf_error_set(CF_EPERM, 0, "pack '%s' can only be read with an admin key: this key "
                            "is write-only", name);
    const uint8_t *dk = cf_master__data_key(&r->mk, gen);
    if (!dk) {
        cf_repo__note_unknown_generation((cf_repo *)(uintptr_t)r, gen);
        return cf_error_set(CF_ECORRUPT, 0,
                            "pack '%s' names data key generation %u, which this key does not "
                            "hold (damaged, or sealed by a newer key)", name, gen);
    }
    cf_kdf(key, dk, "coffer pack key", prefix + 12, 16);
    return 0;
}

void cf_pack__writer_init(cf_pack_writer *w)
{
    memset(w, 0, sizeof(*w));
    cf_buf_init(&w->buf, 0);
    cf_buf_init(&w->header, 0);
    cf_buf_init(&w->scratch, 0);
    w->fd = -1;
}

void cf_pack__writer_abort(cf_pack_writer *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
        w->fd = -1;
    }
    cf_buf_reset(&w->buf);
    cf_buf_reset(&w->header);
    w->count = 0;
    w->len = 0;
}

void cf_pack__writer_free(cf_pack_writer *w)
{
    cf_pack__writer_abort(w);
    cf_buf_free(&w->buf);
    cf_buf_free(&w->header);
    cf_buf_free(&w->scratch);
    cf_sha256_free(w->hash);
    w->hash = NULL;
    cf_wipe(w->key, sizeof(w->key));
}

static size_t writer_len(const cf_pack_writer *w) { return w->fd >= 0 ? (size_t)w->len : w->buf.len; }

/* Append bytes to a spooled pack: write them and hash them. */
static int spool_write(cf_pack_writer *w, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(w->fd, p + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return cf_error_set(cf_error_from_errno(errno) == CF_ENOSPACE ? CF_ENOSPACE : CF_EIO,
                                errno, "unable to write pack spool file '%s': %s", w->tmp,
                                strerror(errno));
        done += (size_t)k;
    }
    cf_sha256_update(w->hash, p, n);
    w->len += n;
    return 0;
}

static int writer_start(cf_pack_writer *w, const cf_repo *r)
{
    uint8_t *prefix = w->prefix;
    memcpy(prefix, PACK_MAGIC, 4);
    prefix[4] = 1;
    prefix[5] = prefix[6] = prefix[7] = 0;
    int rc = cf_random_bytes(prefix + 12, 16);
    if (rc)
        return rc;
    if (cf_master__can_read(&r->mk)) {
        cf_le32_put(prefix + 8, r->mk.gen);
        w->prefix_len = PACK_PREFIX;
        if ((rc = pack_key(w->key, r, prefix, "new pack")))
            return rc;
    } else {
        /* write-only: a random pack key, readable only with the repository's private key */
        cf_le32_put(prefix + 8, CF_GEN_BOX);
        w->prefix_len = CF_PACK_PREFIX_MAX;
        if ((rc = cf_random_bytes(w->key, CF_KEY_LEN)) ||
            (rc = cf_box_seal(prefix + PACK_PREFIX, r->mk.pub, w->key)))
            return rc;
    }
    cf_buf_reset(&w->buf);
    cf_buf_reset(&w->header);
    w->count = 0;
    if (r->spool[0]) {
        static atomic_ulong counter;
        if (!w->hash && !(w->hash = cf_sha256_new()))
            return cf_error_set(CF_ENOMEM, 0, "unable to create a hash context");
        unsigned long n = atomic_fetch_add(&counter, 1);
        int k = snprintf(w->tmp, sizeof(w->tmp), "%.3900s/.tmp-pack-%ld-%lu-%lx", r->spool,
                         (long)getpid(), n, (unsigned long)cf_now_ns());
        if (k < 0 || (size_t)k >= sizeof(w->tmp))
            return cf_error_set(CF_EINVAL, 0, "repository path too long for a spool file");
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (w->fd < 0)
            return cf_error_set(cf_error_from_errno(errno), errno,
                                "unable to create pack spool file '%s': %s", w->tmp,
                                strerror(errno));
        w->len = 0;
        return spool_write(w, prefix, w->prefix_len);
    }
    /* room for a full pack and the blob that overflows it, reserved once: growing by
     * doubling would copy the pack and leave twice its size allocated */
    if (w->buf.cap == 0 && (rc = cf_buf_reserve(&w->buf, (size_t)r->cfg.pack_size +
                                                             r->cfg.chunk.max + 65536)))
        return rc;
    return cf_buf_append(&w->buf, prefix, w->prefix_len);
}

/* Seal the header and store the pack (no lock held), then register it and point its blobs'
 * index entries at it. */
/* Whether tree blobs are read a whole pack at a time (CF_TREE_PACK_SLOTS). */
static bool tree_packs_whole(const cf_repo *r)
{
    return cf_repo__remote(r) && r->cfg.pack_size <= CF_TREE_PACK_WHOLE_MAX;
}

int cf_pack__writer_finish(cf_repo *r, cf_pack_writer *w)
{
    int rc = 0;
    cf_buf hdr;
    cf_buf_init(&hdr, 0);
    if (w->count == 0) {
        cf_pack__writer_abort(w);
        return 0;
    }
    if ((rc = cf_buf_put_u32(&hdr, w->count)) ||
        (rc = cf_buf_append(&hdr, w->header.data, w->header.len)))
        goto out;
    size_t sealed_len = hdr.len + CF_SEAL_OVERHEAD;
    uint64_t total = 0;
    cf_id pid;
    char path[80];
    /* on failure the pack goes back to how it was before its header, so that a later flush
     * retries it: its blobs are claimed in the index and must not be lost */
    if (w->fd >= 0) {
        uint8_t trailer[PACK_TRAILER];
        uint64_t before = w->len;
        cf_sha256_ctx *keep = cf_sha256_dup(w->hash);
        if (!keep) {
            rc = cf_error_set(CF_ENOMEM, 0, "unable to copy a hash context");
            goto out;
        }
        cf_buf_reset(&w->buf);
        cf_le32_put(trailer, (uint32_t)sealed_len);
        memcpy(trailer + 4, PACK_END_MAGIC, 4);
        if ((rc = cf_buf_reserve(&w->buf, sealed_len)) ||
            (rc = cf_aead_seal(w->buf.data, w->key, w->prefix, w->prefix_len, hdr.data, hdr.len)) ||
            (rc = spool_write(w, w->buf.data, sealed_len)) ||
            (rc = spool_write(w, trailer, sizeof(trailer)))) {
            cf_sha256_free(keep);
            goto spool_undo;
        }
        cf_sha256_final(w->hash, pid.b);
        cf_pack__path(path, &pid);
        total = w->len;
        if ((rc = cf_storage_put_file(r->st, path, w->tmp, w->fd, 0))) {
            cf_sha256_free(w->hash);
            w->hash = keep;
            goto spool_undo;
        }
        cf_sha256_free(keep);
        close(w->fd);
        w->fd = -1; /* the spool file is now the pack */
        goto stored;
    spool_undo:
        if (w->hash != keep && keep) {
            cf_sha256_free(w->hash);
            w->hash = keep;
        }
        if (ftruncate(w->fd, (off_t)before) != 0 || lseek(w->fd, (off_t)before, SEEK_SET) < 0) {
            /* cannot restore the spool file: give the pack up (its blobs are unclaimed by the
             * caller's failure handling) */
            cf_pack__writer_abort(w);
        }
        w->len = before;
        goto out;
    } else {
        size_t before = w->buf.len;
        if ((rc = cf_buf_reserve(&w->buf, sealed_len + PACK_TRAILER)))
            goto out;
        rc = cf_aead_seal(w->buf.data + w->buf.len, w->key, w->buf.data, w->prefix_len, hdr.data,
                          hdr.len);
        if (rc)
            goto out;
        w->buf.len += sealed_len;
        cf_buf_put_u32(&w->buf, (uint32_t)sealed_len);
        cf_buf_append(&w->buf, PACK_END_MAGIC, 4);
        cf_sha256(pid.b, w->buf.data, w->buf.len);
        cf_pack__path(path, &pid);
        total = w->buf.len;
        if ((rc = cf_storage_put(r->st, path, w->buf.data, w->buf.len, 0))) {
            w->buf.len = before;
            goto out;
        }
        /* a tree pack is what the next backup and a restore read first: keep it locally */
        if (w->header.len >= PACK_ENTRY && w->header.data[0] == CF_BLOB_TREE &&
            tree_packs_whole(r)) {
            char hex[65];
            cf_hex_encode(hex, pid.b, 32);
            cf_cache__put(r, "packs", hex, w->buf.data, w->buf.len);
        }
    }
stored:
    pthread_mutex_lock(&r->mu);
    r->bytes_written += total;
    uint32_t no;
    if ((rc = cf_index__pack_no(&r->index, &pid, &no)))
        goto unlock;
    cf_rd rd;
    cf_rd_init(&rd, w->header.data, w->header.len);
    for (uint32_t i = 0; i < w->count; i++) {
        const uint8_t *e = cf_rd_bytes(&rd, PACK_ENTRY);
        cf_id id;
        memcpy(id.b, e + 16, 32);
        cf_index__resolve_pending(&r->index, &id, no);
    }
    if (r->n_new_packs == r->new_packs_cap) {
        size_t ncap = r->new_packs_cap ? r->new_packs_cap * 2 : 64;
        cf_id *np = cf_realloc(r->new_packs, ncap * sizeof(*np));
        if (!np) {
            rc = CF_ENOMEM;
            goto unlock;
        }
        r->new_packs = np;
        r->new_packs_cap = ncap;
    }
    r->new_packs[r->n_new_packs++] = pid;
unlock:
    pthread_mutex_unlock(&r->mu);
    cf_buf_reset(&w->buf);
    cf_buf_reset(&w->header);
    w->count = 0;
    w->len = 0;
out:
    cf_buf_free(&hdr);
    return rc;
}

void cf_repo__blob_id(const cf_repo *r, cf_id *out, const void *data, size_t len)
{
    cf_hmac_sha256(out->b, r->mk.mac, data, len);
}

/* Reserve id in the index; false when it is already there (stored or in flight). */
bool cf_repo__claim_blob(cf_repo *r, uint8_t type, const cf_id *id, size_t len)
{
    bool claimed = false;
    pthread_mutex_lock(&r->mu);
    if (!cf_index__get(&r->index, id)) {
        cf_index_entry ie;
        memset(&ie, 0, sizeof(ie));
        ie.id = *id;
        ie.pack = PACK_PENDING;
        ie.raw_len = (uint32_t)len;
        ie.type = type;
        claimed = cf_index__add(&r->index, &ie) == 0;
        if (claimed)
            r->blobs_claimed++;
    }
    pthread_mutex_unlock(&r->mu);
    return claimed;
}

int cf_pack__writer_add(cf_repo *r, cf_pack_writer *w, uint8_t type, const cf_id *id,
                        const void *data, size_t len, uint64_t *out_added)
{
    int rc = 0, algo = CF_COMP_NONE;
    size_t clen = 0;
    *out_added = 0;
    if (w->count == 0 && w->fd < 0 && w->buf.len == 0 && (rc = writer_start(w, r)))
        return rc;
    const void *payload = data;
    size_t plen = len;
    int level = r->cfg.compression_level;
    if (level > 0 && len > 0) {
        size_t bound = cf_compress_bound(len);
        if ((rc = cf_buf_reserve(&w->scratch, bound)))
            return rc;
        if ((rc = cf_compress(&algo, &clen, w->scratch.data, bound, data, len, level)))
            return rc;
        if (algo != CF_COMP_NONE) {
            payload = w->scratch.data;
            plen = clen;
        }
    }
    uint8_t aad[BLOB_AAD];
    blob_aad(aad, id, type, (uint8_t)algo, (uint32_t)len);
    size_t sealed = plen + CF_SEAL_OVERHEAD;
    uint32_t offset = (uint32_t)writer_len(w);
    if (w->fd >= 0) {
        cf_buf_reset(&w->buf);
        if ((rc = cf_buf_reserve(&w->buf, sealed)) ||
            (rc = cf_aead_seal(w->buf.data, w->key, aad, sizeof(aad), payload, plen)) ||
            (rc = spool_write(w, w->buf.data, sealed)))
            return rc;
    } else {
        if ((rc = cf_buf_reserve(&w->buf, sealed)))
            return rc;
        if ((rc = cf_aead_seal(w->buf.data + w->buf.len, w->key, aad, sizeof(aad), payload, plen)))
            return rc;
        w->buf.len += sealed;
    }
    uint8_t e[PACK_ENTRY];
    e[0] = type;
    e[1] = (uint8_t)algo;
    e[2] = e[3] = 0;
    cf_le32_put(e + 4, offset);
    cf_le32_put(e + 8, (uint32_t)sealed);
    cf_le32_put(e + 12, (uint32_t)len);
    memcpy(e + 16, id->b, 32);
    if ((rc = cf_buf_append(&w->header, e, sizeof(e))))
        return rc;
    w->count++;
    pthread_mutex_lock(&r->mu);
    cf_index__fill_pending(&r->index, id, offset, (uint32_t)sealed, (uint8_t)algo);
    pthread_mutex_unlock(&r->mu);
    *out_added = sealed;
    if (writer_len(w) >= r->cfg.pack_size)
        rc = cf_pack__writer_finish(r, w);
    return rc;
}

int cf_repo__add_blob(cf_repo *r, uint8_t type, const cf_id *id, const void *data, size_t len,
                      uint64_t *out_added)
{
    *out_added = 0;
    if (len > UINT32_MAX - 1024)
        return cf_error_set(CF_EINVAL, 0, "blob of %zu bytes is too large", len);
    if (!cf_repo__claim_blob(r, type, id, len))
        return 0;
    if (r->pipe)
        return cf_pipeline__submit(r, type, id, data, len, out_added);
    return cf_pack__writer_add(r, &r->packs[type == CF_BLOB_TREE ? 1 : 0], type, id, data, len,
                               out_added);
}

/* Write an index file for the packs finished since the last one. */
static int write_index(cf_repo *r)
{
    int rc = 0;
    cf_buf plain;
    cf_buf_init(&plain, 0);
    size_t n = 0;
    cf_id *packs = NULL;
    pthread_mutex_lock(&r->mu);
    n = r->n_new_packs;
    if (n) {
        rc = cf_index__encode(&plain, &r->index, r->new_packs, n);
        packs = r->new_packs;
        /* the list is handed over; new packs start a fresh one */
        r->new_packs = NULL;
        r->n_new_packs = 0;
        r->new_packs_cap = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (n == 0 || rc)
        goto out;
    char name[65];
    if ((rc = cf_repo__put_object(r, "index", CF_OBJ_INDEX, plain.data, plain.len, name))) {
        /* give the packs back so a later attempt indexes them */
        pthread_mutex_lock(&r->mu);
        for (size_t i = 0; i < n; i++) {
            if (r->n_new_packs == r->new_packs_cap) {
                size_t ncap = r->new_packs_cap ? r->new_packs_cap * 2 : 64;
                cf_id *np = realloc(r->new_packs, ncap * sizeof(*np));
                if (!np)
                    break;
                r->new_packs = np;
                r->new_packs_cap = ncap;
            }
            r->new_packs[r->n_new_packs++] = packs[i];
        }
        pthread_mutex_unlock(&r->mu);
        goto out;
    }
    pthread_mutex_lock(&r->mu);
    char (*w)[65] = realloc(r->written_indexes, (r->n_written_indexes + 1) * sizeof(*w));
    if (w) {
        r->written_indexes = w;
        memcpy(w[r->n_written_indexes++], name, 65);
    }
    r->last_checkpoint = cf_mono_seconds();
    pthread_mutex_unlock(&r->mu);
out:
    free(packs);
    cf_buf_free(&plain);
    return rc;
}

int cf_repo__flush(cf_repo *r)
{
    int rc = 0;
    if (r->pipe && (rc = cf_pipeline__drain(r)))
        return rc;
    for (int i = 0; i < 2; i++)
        if ((rc = cf_pack__writer_finish(r, &r->packs[i])))
            return rc;
    return write_index(r);
}

#define CHECKPOINT_PACKS 4
#define CHECKPOINT_SECONDS 30.0

int cf_repo__maybe_checkpoint(cf_repo *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->last_checkpoint == 0)
        r->last_checkpoint = cf_mono_seconds();
    bool due = r->n_new_packs >= CHECKPOINT_PACKS ||
               (r->n_new_packs > 0 && cf_mono_seconds() - r->last_checkpoint >= CHECKPOINT_SECONDS);
    pthread_mutex_unlock(&r->mu);
    return due ? write_index(r) : 0;
}

int cf_repo__checkpoint(cf_repo *r)
{
    return write_index(r);
}

int cf_repo__remove_flushed_indexes(cf_repo *r, const char *keep, uint64_t *count)
{
    int rc = 0;
    for (size_t i = 0; i < r->n_written_indexes && rc == 0; i++) {
        if (keep && strcmp(r->written_indexes[i], keep) == 0)
            continue;
        char path[80];
        snprintf(path, sizeof(path), "index/%s", r->written_indexes[i]);
        rc = cf_storage_remove(r->st, path);
        if (rc == CF_ENOTFOUND || rc == CF_EPERM || rc == CF_EAUTH)
            rc = 0; /* refused under retention: it stays, listing packs that stay too */
        else if (rc == 0)
            (*count)++;
    }
    r->n_written_indexes = 0;
    return rc;
}

int cf_pack__open_blob(cf_buf *out, const cf_repo *r, const uint8_t *prefix,
                       const cf_pack_entry *e, const uint8_t *sealed, const char *name)
{
    int rc = 0;
    uint8_t key[CF_KEY_LEN], aad[BLOB_AAD];
    uint8_t *plain = NULL;
    char hex[65];
    if (e->length < CF_SEAL_OVERHEAD)
        return cf_error_set(CF_ECORRUPT, 0, "blob in pack '%s' has an invalid length", name);
    size_t plen = e->length - CF_SEAL_OVERHEAD;
    if ((rc = pack_key(key, r, prefix, name)))
        return rc;
    blob_aad(aad, &e->id, e->type, e->comp, e->raw_len);
    plain = cf_malloc(plen);
    if (!plain) {
        rc = CF_ENOMEM;
        goto out;
    }
    cf_hex_encode(hex, e->id.b, 32);
    if (cf_aead_open(plain, key, aad, sizeof(aad), sealed, e->length)) {
        rc = cf_error_set(CF_ECORRUPT, 0, "blob %.16s in pack '%s' is damaged: authentication failed",
                          hex, name);
        goto out;
    }
    if (e->comp == CF_COMP_NONE) {
        if (plen != e->raw_len) {
            rc = cf_error_set(CF_ECORRUPT, 0, "blob %.16s in pack '%s' has a wrong length", hex, name);
            goto out;
        }
        rc = cf_buf_append(out, plain, plen);
    } else {
        if ((rc = cf_buf_reserve(out, (size_t)e->raw_len + 1)))
            goto out;
        if (cf_decompress(out->data + out->len, e->raw_len, plain, plen, e->comp)) {
            rc = cf_error_set(CF_ECORRUPT, 0, "blob %.16s in pack '%s' does not decompress", hex, name);
            goto out;
        }
        out->len += e->raw_len;
    }
out:
    cf_wipe(key, sizeof(key));
    free(plain);
    return rc;
}

/* The prefix (magic, version, generation, salt) of pack number no, from the cache or
 * storage. */
static int pack_prefix(cf_repo *r, uint32_t no, const char *path,
                       uint8_t out[CF_PACK_PREFIX_MAX])
{
    pthread_mutex_lock(&r->mu);
    if (no < r->nsalts && r->salts[no][CF_PACK_PREFIX_MAX]) {
        memcpy(out, r->salts[no], CF_PACK_PREFIX_MAX);
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    pthread_mutex_unlock(&r->mu);
    uint8_t *pre = NULL;
    size_t n = 0;
    int rc = cf_storage_get(r->st, path, 0, CF_PACK_PREFIX, &pre, &n);
    if (rc)
        return rc;
    if (n != CF_PACK_PREFIX || memcmp(pre, PACK_MAGIC, 4) != 0 || pre[4] != 1) {
        free(pre);
        return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: bad prefix", path);
    }
    memset(out, 0, CF_PACK_PREFIX_MAX);
    memcpy(out, pre, CF_PACK_PREFIX);
    free(pre);
    if (cf_pack__prefix_len(out) > CF_PACK_PREFIX) {
        /* the key box of a pack written by a write-only key */
        if ((rc = cf_storage_get(r->st, path, 0, CF_PACK_PREFIX_MAX, &pre, &n)))
            return rc;
        memcpy(out, pre, n < CF_PACK_PREFIX_MAX ? n : CF_PACK_PREFIX_MAX);
        free(pre);
    }
    pthread_mutex_lock(&r->mu);
    if (no >= r->nsalts) {
        size_t ncap = r->index.npacks > no ? r->index.npacks : (size_t)no + 1;
        uint8_t (*ns)[CF_PACK_PREFIX_MAX + 1] = realloc(r->salts, ncap * sizeof(*ns));
        if (ns) {
            memset(ns + r->nsalts, 0, (ncap - r->nsalts) * sizeof(*ns));
            r->salts = ns;
            r->nsalts = ncap;
        }
    }
    if (no < r->nsalts) {
        memcpy(r->salts[no], out, CF_PACK_PREFIX_MAX);
        r->salts[no][CF_PACK_PREFIX_MAX] = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int cf_repo__pack_generation(cf_repo *r, const cf_id *pack, uint32_t *out)
{
    char path[80];
    cf_pack__path(path, pack);
    uint8_t *pre = NULL;
    size_t n = 0;
    int rc = cf_storage_get(r->st, path, 0, CF_PACK_PREFIX, &pre, &n);
    if (rc == 0 && (n != CF_PACK_PREFIX || memcmp(pre, PACK_MAGIC, 4) != 0))
        rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: bad prefix", path);
    if (rc == 0)
        *out = cf_le32_get(pre + 8);
    free(pre);
    return rc;
}

void cf_pack_window_init(cf_pack_window *w, unsigned nslots)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->nslots = nslots < 2 ? 2 : nslots > CF_PACK_WINDOW_SLOTS_MAX ? CF_PACK_WINDOW_SLOTS_MAX : nslots;
}

void cf_pack_window_free(cf_pack_window *w)
{
    if (!w || !w->nslots)
        return;
    for (unsigned i = 0; i < w->nslots; i++) {
        free(w->slot[i].data);
        w->slot[i].data = NULL;
        w->slot[i].valid = false;
    }
    w->nslots = 0;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

/* The size of a pack, remembered in the window. */
static int window_pack_size(cf_pack_window *w, cf_repo *r, const cf_id *pack, const char *path,
                            uint64_t *out)
{
    pthread_mutex_lock(&w->mu);
    for (unsigned i = 0; i < CF_PACK_WINDOW_SIZES; i++) {
        if (w->sizes[i].known && cf_id_eq(&w->sizes[i].pack, pack)) {
            *out = w->sizes[i].size;
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&w->mu);
    int rc = cf_storage_stat(r->st, path, out);
    if (rc)
        return rc;
    pthread_mutex_lock(&w->mu);
    unsigned k = w->next_size++ % CF_PACK_WINDOW_SIZES;
    w->sizes[k].pack = *pack;
    w->sizes[k].size = *out;
    w->sizes[k].known = true;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* Copy n bytes at pos of the chunk of pack starting at start (span bytes long, aligned to
 * CF_PACK_WINDOW) into dst: from the window, after waiting for another thread that is
 * downloading it, or by downloading it into the least recently used slot. */
static int chunk_copy(cf_pack_window *w, cf_repo *r, const cf_id *pack, const char *path,
                      uint64_t start, uint64_t span, uint64_t pos, uint64_t n, uint8_t *dst)
{
    int rc = 0;
    cf_pack_window_slot *sl = NULL;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        int hit = -1, victim = -1;
        for (unsigned i = 0; i < w->nslots; i++) {
            cf_pack_window_slot *s = &w->slot[i];
            if ((s->valid || s->loading) && s->off == start && cf_id_eq(&s->pack, pack)) {
                hit = (int)i;
                break;
            }
            if (s->loading)
                continue;
            if (victim < 0 || (!s->valid && w->slot[victim].valid) ||
                (s->valid == w->slot[victim].valid && s->used < w->slot[victim].used))
                victim = (int)i;
        }
        if (hit >= 0 && w->slot[hit].valid) {
            sl = &w->slot[hit];
            sl->used = ++w->tick;
            memcpy(dst, sl->data + (pos - start), (size_t)n);
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
        if (hit < 0 && victim >= 0) {
            sl = &w->slot[victim];
            break;
        }
        /* the chunk is on its way, or every slot is being loaded */
        pthread_cond_wait(&w->cv, &w->mu);
    }
    free(sl->data);
    sl->data = NULL;
    sl->valid = false;
    sl->loading = true;
    sl->pack = *pack;
    sl->off = start;
    sl->span = span;
    sl->used = ++w->tick;
    pthread_mutex_unlock(&w->mu);

    uint8_t *data = NULL;
    size_t got = 0;
    rc = cf_storage_get(r->st, path, start, span, &data, &got);
    if (rc == 0 && got != span)
        rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: short read", path);

    pthread_mutex_lock(&w->mu);
    sl->loading = false;
    if (rc == 0) {
        memcpy(dst, data + (pos - start), (size_t)n);
        sl->data = data;
        sl->valid = true;
        data = NULL;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free(data);
    return rc;
}

/* The sealed bytes [off, off + len) of a pack, copied into *owned: from the chunks of the
 * window that hold them (reading those missing), or, without a window, by a plain ranged
 * get. */
static int window_get(cf_pack_window *w, cf_repo *r, const cf_id *pack, const char *path,
                      uint64_t off, uint64_t len, const uint8_t **out, uint8_t **owned)
{
    *out = NULL;
    *owned = NULL;
    if (!w) {
        size_t n = 0;
        int rc = cf_storage_get(r->st, path, off, len, owned, &n);
        if (rc == 0 && n != len) {
            free(*owned);
            *owned = NULL;
            return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: short read", path);
        }
        *out = *owned;
        return rc;
    }
    uint64_t size = 0;
    int rc = window_pack_size(w, r, pack, path, &size);
    if (rc)
        return rc;
    if (off > size || len > size - off)
        return cf_error_set(CF_ECORRUPT, 0,
                            "pack '%s' is damaged: a blob at %llu+%llu lies beyond its %llu bytes",
                            path, (unsigned long long)off, (unsigned long long)len,
                            (unsigned long long)size);
    uint8_t *buf = cf_malloc(len ? (size_t)len : 1);
    if (!buf)
        return CF_ENOMEM;
    /* aligned chunks: threads reading near each other ask for the same ones, and a blob
     * across a boundary is put together from two */
    for (uint64_t pos = off; rc == 0 && pos < off + len;) {
        uint64_t start = pos - pos % CF_PACK_WINDOW;
        uint64_t span = size - start < CF_PACK_WINDOW ? size - start : CF_PACK_WINDOW;
        uint64_t n = start + span - pos;
        if (n > off + len - pos)
            n = off + len - pos;
        rc = chunk_copy(w, r, pack, path, start, span, pos, n, buf + (pos - off));
        pos += n;
    }
    if (rc) {
        free(buf);
        return rc;
    }
    *out = *owned = buf;
    return 0;
}

int cf_repo__read_blob(cf_buf *out, cf_repo *r, const cf_id *id, uint8_t type)
{
    return cf_repo__read_blob_window(out, r, id, type, NULL);
}

/* Copy the prefix and the sealed bytes [off, off + len) out of a whole pack in memory. */
static int whole_pack_slice(const uint8_t *data, size_t n, uint64_t off, uint64_t len,
                            const char *path, uint8_t prefix[CF_PACK_PREFIX_MAX], uint8_t **owned)
{
    if (n < CF_PACK_PREFIX || memcmp(data, PACK_MAGIC, 4) != 0 || data[4] != 1)
        return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: bad prefix", path);
    if (off > n || len > n - off || len == 0)
        return cf_error_set(CF_ECORRUPT, 0,
                            "pack '%s' is damaged: a blob at %llu+%llu lies beyond its %zu bytes",
                            path, (unsigned long long)off, (unsigned long long)len, n);
    memset(prefix, 0, CF_PACK_PREFIX_MAX);
    memcpy(prefix, data, CF_PACK_PREFIX);
    if (cf_pack__prefix_len(prefix) > CF_PACK_PREFIX)
        memcpy(prefix, data, n < CF_PACK_PREFIX_MAX ? n : CF_PACK_PREFIX_MAX);
    if (!(*owned = cf_malloc((size_t)len)))
        return CF_ENOMEM;
    memcpy(*owned, data + off, (size_t)len);
    return 0;
}

/*
 * A tree blob's sealed bytes and its pack's prefix, from a whole tree pack: held in memory,
 * else read from the local cache, else downloaded whole (and then cached). A backup reads
 * every tree of its parent snapshot and a restore every tree of the snapshot, one directory
 * at a time: one request per pack instead of one per directory, and none once cached. The
 * pack's content is checked against its name before it is cached; each blob is still
 * authenticated by the caller.
 */
static int tree_pack_read(cf_repo *r, const cf_id *pack, const char *path, uint64_t off,
                          uint64_t len, uint8_t prefix[CF_PACK_PREFIX_MAX], uint8_t **owned)
{
    int rc = 0;
    uint8_t *data = NULL;
    size_t n = 0;
    *owned = NULL;
    pthread_mutex_lock(&r->mu);
    for (unsigned i = 0; i < CF_TREE_PACK_SLOTS; i++) {
        if (r->tree_packs[i].data && cf_id_eq(&r->tree_packs[i].pack, pack)) {
            r->tree_packs[i].used = ++r->tree_pack_tick;
            rc = whole_pack_slice(r->tree_packs[i].data, r->tree_packs[i].len, off, len, path,
                                  prefix, owned);
            pthread_mutex_unlock(&r->mu);
            return rc;
        }
    }
    pthread_mutex_unlock(&r->mu);
    char hex[65];
    cf_hex_encode(hex, pack->b, 32);
    if (!cf_cache__get(r, "packs", hex, &data, &n)) {
        if ((rc = cf_storage_get(r->st, path, 0, 0, &data, &n)))
            return rc;
        uint8_t h[32];
        cf_sha256(h, data, n);
        if (memcmp(h, pack->b, 32) == 0)
            cf_cache__put(r, "packs", hex, data, n);
    }
    pthread_mutex_lock(&r->mu);
    rc = whole_pack_slice(data, n, off, len, path, prefix, owned);
    unsigned victim = 0;
    bool held = false;
    for (unsigned i = 0; i < CF_TREE_PACK_SLOTS; i++) {
        if (r->tree_packs[i].data && cf_id_eq(&r->tree_packs[i].pack, pack))
            held = true; /* another thread read it meanwhile */
        if (!r->tree_packs[i].data ||
            (r->tree_packs[victim].data && r->tree_packs[i].used < r->tree_packs[victim].used))
            victim = i;
    }
    if (rc == 0 && !held) {
        free(r->tree_packs[victim].data);
        r->tree_packs[victim].pack = *pack;
        r->tree_packs[victim].data = data;
        r->tree_packs[victim].len = n;
        r->tree_packs[victim].used = ++r->tree_pack_tick;
        data = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    free(data);
    return rc;
}

void cf_repo__free_tree_packs(cf_repo *r)
{
    for (unsigned i = 0; i < CF_TREE_PACK_SLOTS; i++) {
        free(r->tree_packs[i].data);
        r->tree_packs[i].data = NULL;
    }
}

int cf_repo__read_blob_window(cf_buf *out, cf_repo *r, const cf_id *id, uint8_t type,
                              cf_pack_window *w)
{
    char hex[65], path[80];
    cf_hex_encode(hex, id->b, 32);
    pthread_mutex_lock(&r->mu);
    const cf_index_entry *ie = cf_index__get(&r->index, id);
    cf_index_entry e;
    cf_id pack;
    bool stored = false;
    if (ie) {
        e = *ie;
        stored = e.pack != PACK_PENDING && e.pack < r->index.npacks;
        if (stored)
            pack = r->index.packs[e.pack];
    }
    pthread_mutex_unlock(&r->mu);
    if (!ie)
        return cf_error_set(CF_ENOTFOUND, 0, "blob %.16s is not in the index", hex);
    if (!stored)
        return cf_error_set(CF_ENOTFOUND, 0, "blob %.16s is not yet stored", hex);
    if (e.type != type)
        return cf_error_set(CF_ECORRUPT, 0, "blob %.16s has type %u, expected %u", hex, e.type, type);
    cf_pack__path(path, &pack);
    uint8_t prefix[CF_PACK_PREFIX_MAX];
    uint8_t *owned = NULL;
    const uint8_t *sealed = NULL;
    int rc;
    if (type == CF_BLOB_TREE && !w && tree_packs_whole(r)) {
        rc = tree_pack_read(r, &pack, path, e.offset, e.length, prefix, &owned);
        sealed = owned;
    } else {
        rc = pack_prefix(r, e.pack, path, prefix);
        if (rc == 0)
            rc = window_get(w, r, &pack, path, e.offset, e.length, &sealed, &owned);
    }
    if (rc == 0) {
        cf_pack_entry pe = {e.id, e.type, e.comp, e.offset, e.length, e.raw_len};
        size_t before = out->len;
        rc = cf_pack__open_blob(out, r, prefix, &pe, sealed, path);
        if (rc == 0) {
            cf_id check;
            cf_repo__blob_id(r, &check, out->data + before, out->len - before);
            if (!cf_id_eq(&check, id)) {
                out->len = before;
                rc = cf_error_set(CF_ECORRUPT, 0, "blob %.16s in pack '%s' does not match its id",
                                  hex, path);
            }
        }
    } else if (rc == CF_ENOTFOUND) {
        rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' holding blob %.16s is missing", path, hex);
    }
    free(owned);
    return rc;
}

int cf_pack__read_header(cf_pack_entry **out, size_t *out_count, const cf_repo *r,
                         const uint8_t *pack, size_t len, const char *name)
{
    int rc = 0;
    uint8_t key[CF_KEY_LEN];
    uint8_t *plain = NULL;
    cf_pack_entry *list = NULL;
    *out = NULL;
    *out_count = 0;
    if (len < PACK_PREFIX + CF_SEAL_OVERHEAD + 4 + PACK_TRAILER ||
        memcmp(pack, PACK_MAGIC, 4) != 0 || memcmp(pack + len - 4, PACK_END_MAGIC, 4) != 0)
        return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: bad magic or truncated", name);
    if (pack[4] != 1)
        return cf_error_set(CF_EUNSUPPORTED, 0, "pack '%s' has unsupported version %u", name, pack[4]);
    uint32_t hlen = cf_le32_get(pack + len - 8);
    size_t plen_pre = cf_pack__prefix_len(pack);
    if (plen_pre > PACK_PREFIX && len < plen_pre + CF_SEAL_OVERHEAD + 4 + PACK_TRAILER)
        return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: truncated", name);
    if (hlen < CF_SEAL_OVERHEAD + 4 || hlen > len - plen_pre - PACK_TRAILER)
        return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: bad header length", name);
    size_t hstart = len - PACK_TRAILER - hlen;
    if ((rc = pack_key(key, r, pack, name)))
        return rc;
    plain = cf_malloc(hlen);
    if (!plain) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (cf_aead_open(plain, key, pack, plen_pre, pack + hstart, hlen)) {
        rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: header authentication failed", name);
        goto out;
    }
    size_t plen = hlen - CF_SEAL_OVERHEAD;
    uint32_t n = cf_le32_get(plain);
    if ((uint64_t)n * PACK_ENTRY != plen - 4) {
        rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: header size mismatch", name);
        goto out;
    }
    list = cf_calloc(n ? n : 1, sizeof(*list));
    if (!list) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = plain + 4 + (size_t)i * PACK_ENTRY;
        list[i].type = e[0];
        list[i].comp = e[1];
        list[i].offset = cf_le32_get(e + 4);
        list[i].length = cf_le32_get(e + 8);
        list[i].raw_len = cf_le32_get(e + 12);
        memcpy(list[i].id.b, e + 16, 32);
        if (list[i].offset < plen_pre || list[i].length < CF_SEAL_OVERHEAD ||
            (uint64_t)list[i].offset + list[i].length > hstart) {
            rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: entry %u out of range", name, i);
            goto out;
        }
    }
    *out = list;
    *out_count = n;
    list = NULL;
out:
    cf_wipe(key, sizeof(key));
    free(plain);
    free(list);
    return rc;
}
