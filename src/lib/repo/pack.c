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

void cf_pack_window_init(cf_pack_window *w)
{
    memset(w, 0, sizeof(*w));
    for (unsigned i = 0; i < CF_PACK_WINDOW_SLOTS; i++)
        cf_buf_init(&w->slot[i].buf, 0);
}

void cf_pack_window_free(cf_pack_window *w)
{
    if (!w)
        return;
    for (unsigned i = 0; i < CF_PACK_WINDOW_SLOTS; i++) {
        cf_buf_free(&w->slot[i].buf);
        w->slot[i].valid = false;
    }
}

/* The size of a pack, remembered in the window. */
static int window_pack_size(cf_pack_window *w, cf_repo *r, const cf_id *pack, const char *path,
                            uint64_t *out)
{
    for (unsigned i = 0; i < CF_PACK_WINDOW_SIZES; i++) {
        if (w->sizes[i].known && cf_id_eq(&w->sizes[i].pack, pack)) {
            *out = w->sizes[i].size;
            return 0;
        }
    }
    int rc = cf_storage_stat(r->st, path, out);
    if (rc)
        return rc;
    unsigned k = w->next_size++ % CF_PACK_WINDOW_SIZES;
    w->sizes[k].pack = *pack;
    w->sizes[k].size = *out;
    w->sizes[k].known = true;
    return 0;
}

/* The sealed bytes [off, off + len) of a pack: from the window when it holds them, else by
 * moving the window there (or, without a window, by a plain ranged get into *owned). */
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
    unsigned victim = 0;
    w->tick++;
    for (unsigned i = 0; i < CF_PACK_WINDOW_SLOTS; i++) {
        cf_pack_window_slot *sl = &w->slot[i];
        if (sl->valid && cf_id_eq(&sl->pack, pack) && off >= sl->off &&
            off - sl->off <= sl->buf.len && len <= sl->buf.len - (off - sl->off)) {
            sl->used = w->tick;
            *out = sl->buf.data + (off - sl->off);
            return 0;
        }
        if (!sl->valid || (w->slot[victim].valid && sl->used < w->slot[victim].used))
            victim = i;
    }
    /* a slot already on this pack is moved forward rather than another one evicted */
    for (unsigned i = 0; i < CF_PACK_WINDOW_SLOTS; i++)
        if (w->slot[i].valid && cf_id_eq(&w->slot[i].pack, pack))
            victim = i;
    cf_pack_window_slot *sl = &w->slot[victim];
    sl->valid = false;
    uint64_t size = 0;
    int rc = window_pack_size(w, r, pack, path, &size);
    if (rc)
        return rc;
    if (off > size || len > size - off)
        return cf_error_set(CF_ECORRUPT, 0,
                            "pack '%s' is damaged: a blob at %llu+%llu lies beyond its %llu bytes",
                            path, (unsigned long long)off, (unsigned long long)len,
                            (unsigned long long)size);
    uint64_t want = len > CF_PACK_WINDOW ? len : CF_PACK_WINDOW;
    if (want > size - off)
        want = size - off;
    uint8_t *data = NULL;
    size_t n = 0;
    if ((rc = cf_storage_get(r->st, path, off, want, &data, &n)))
        return rc;
    if (n < len) {
        free(data);
        return cf_error_set(CF_ECORRUPT, 0, "pack '%s' is damaged: short read", path);
    }
    cf_buf_reset(&sl->buf);
    rc = cf_buf_append(&sl->buf, data, n);
    free(data);
    if (rc)
        return CF_ENOMEM;
    sl->pack = *pack;
    sl->off = off;
    sl->used = w->tick;
    sl->valid = true;
    *out = sl->buf.data;
    return 0;
}

int cf_repo__read_blob(cf_buf *out, cf_repo *r, const cf_id *id, uint8_t type)
{
    return cf_repo__read_blob_window(out, r, id, type, NULL);
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
    int rc = pack_prefix(r, e.pack, path, prefix);
    if (rc == 0)
        rc = window_get(w, r, &pack, path, e.offset, e.length, &sealed, &owned);
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
