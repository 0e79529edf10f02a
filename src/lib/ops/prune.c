/*
 * prune.c - remove data no snapshot references. Under an exclusive lock: mark every blob
 * reachable from a snapshot (reading only trees), classify packs by the index, delete packs
 * with no used blob, repack partly used ones (copying their used blobs into new packs), write
 * one index covering every remaining pack, then delete the old index files, then the packs.
 * Every step leaves a repository that check passes: see docs/internals/prune.md.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ops/ops.h"

typedef struct {
    cf_id id;
    uint64_t size;        /* bytes in storage (0 when missing) */
    uint64_t used_bytes, unused_bytes;
    uint32_t used, unused;
    bool indexed, present, repack, remove, old_gen;
    bool pinned;          /* listed by an old index file the storage refused to delete */
} pack_info;

typedef struct {
    cf_repo *r;
    const cf_prune_opts *o;
    cf_prune_stats st;
    cf_idset used;
    cf_idset seen_trees;
    pack_info *packs;
    size_t npacks, cap;
    char **index_names;
    size_t nindex, index_cap;
} pctx;

static void msg(pctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg(pctx *c, const char *fmt, ...)
{
    if (!c->o->on_message)
        return;
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof(m), fmt, ap);
    va_end(ap);
    c->o->on_message(NULL, m, c->o->payload);
}

static int mark_tree(pctx *c, const cf_id *id, int depth)
{
    if (depth > 10000)
        return cf_error_set(CF_ECORRUPT, 0, "trees nested too deep");
    int added = cf_idset_add(&c->seen_trees, id);
    if (added <= 0)
        return added; /* seen, or error */
    if (cf_idset_add(&c->used, id) < 0)
        return CF_ENOMEM;
    cf_tree t;
    int rc = cf_repo__load_tree(&t, c->r, id);
    if (rc) {
        char hex[65];
        cf_hex_encode(hex, id->b, 32);
        return cf_error_wrap(rc, "prune cannot continue: tree %.16s is unreadable; run 'coffer check'", hex);
    }
    for (size_t i = 0; i < t.count && rc == 0; i++) {
        const cf_node *n = &t.nodes[i];
        if (n->type == CF_NODE_DIR) {
            rc = mark_tree(c, &n->subtree, depth + 1);
        } else if (n->type == CF_NODE_FILE) {
            for (uint32_t k = 0; k < n->ncontent && rc == 0; k++)
                if (n->content[k].kind == 0 && cf_idset_add(&c->used, &n->content[k].id) < 0)
                    rc = CF_ENOMEM;
        }
    }
    cf_tree__free(&t);
    return rc;
}

/* Is this the location lookups use for its blob? Another copy of a blob stored twice is
 * waste, counted and reclaimed like an unused blob. */
static bool is_canonical(cf_repo *r, const cf_index_entry *e)
{
    const cf_index_entry *g = cf_index__get(&r->index, &e->id);
    return g && g->pack == e->pack && g->offset == e->offset;
}

static pack_info *pack_get(pctx *c, const cf_id *id, bool create)
{
    /* linear probing would be faster; packs are few (16 MiB each) so a sorted search is
     * enough: keep the array sorted by id */
    size_t lo = 0, hi = c->npacks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = cf_id_cmp(&c->packs[mid].id, id);
        if (cmp == 0)
            return &c->packs[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!create)
        return NULL;
    if (c->npacks == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 256;
        pack_info *p = cf_realloc(c->packs, ncap * sizeof(*p));
        if (!p)
            return NULL;
        c->packs = p;
        c->cap = ncap;
    }
    memmove(&c->packs[lo + 1], &c->packs[lo], (c->npacks - lo) * sizeof(pack_info));
    memset(&c->packs[lo], 0, sizeof(pack_info));
    c->packs[lo].id = *id;
    c->npacks++;
    return &c->packs[lo];
}

static int list_pack(const char *name, uint64_t size, void *payload)
{
    pctx *c = payload;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    cf_id id;
    if (strlen(base) != 64 || cf_hex_decode(id.b, 32, base))
        return 0;
    pack_info *p = pack_get(c, &id, true);
    if (!p)
        return CF_ENOMEM;
    p->present = true;
    p->size = size;
    return 0;
}

static int list_index(const char *name, uint64_t size, void *payload)
{
    (void)size;
    pctx *c = payload;
    if (cf_array_grow(&c->index_names, &c->index_cap, c->nindex, sizeof(*c->index_names)))
        return CF_ENOMEM;
    if (!(c->index_names[c->nindex] = cf_strdup(name)))
        return CF_ENOMEM;
    c->nindex++;
    return 0;
}

static int cmp_unused(const void *a, const void *b)
{
    const pack_info *x = *(pack_info *const *)a, *y = *(pack_info *const *)b;
    /* most wasted space first */
    return x->unused_bytes < y->unused_bytes ? 1 : x->unused_bytes > y->unused_bytes ? -1 : 0;
}

/* Copy the used blobs of pack p into new packs through the normal write path. */
static int repack(pctx *c, pack_info *p, uint32_t pack_no)
{
    char path[80];
    uint8_t *data = NULL;
    size_t len = 0;
    cf_pack_entry *es = NULL;
    size_t n = 0;
    cf_buf b;
    cf_buf_init(&b, 0);
    cf_pack__path(path, &p->id);
    int rc = cf_storage_get(c->r->st, path, 0, 0, &data, &len);
    if (rc == 0)
        rc = cf_pack__read_header(&es, &n, c->r, data, len, path);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!cf_idset_has(&c->used, &es[i].id))
            continue;
        /* a copy whose canonical location is elsewhere stays there */
        const cf_index_entry *g = cf_index__get(&c->r->index, &es[i].id);
        if (!g || g->pack != pack_no || g->offset != es[i].offset)
            continue;
        cf_buf_reset(&b);
        if ((rc = cf_pack__open_blob(&b, c->r, data, &es[i], data + es[i].offset, path)))
            break;
        cf_id check;
        cf_repo__blob_id(c->r, &check, b.data, b.len);
        if (!cf_id_eq(&check, &es[i].id)) {
            rc = cf_error_set(CF_ECORRUPT, 0, "pack '%s' holds a blob that does not match its id", path);
            break;
        }
        /* the old entry must go so that the blob is stored again */
        pthread_mutex_lock(&c->r->mu);
        cf_index__remove(&c->r->index, &es[i].id);
        pthread_mutex_unlock(&c->r->mu);
        uint64_t added = 0;
        rc = cf_repo__add_blob(c->r, es[i].type, &es[i].id, b.data, b.len, &added);
    }
    if (rc)
        cf_error_wrap(rc, "unable to repack '%s'", path);
    free(es);
    free(data);
    cf_buf_free(&b);
    return rc;
}

/* An old index file stays (the storage refuses to delete it): mark the packs it lists so
 * that they are kept. */
static int pin_index_packs(pctx *c, const char *base)
{
    cf_buf b;
    cf_index ix;
    cf_buf_init(&b, 0);
    cf_index__init(&ix);
    int rc = cf_repo__get_object(&b, c->r, "index", CF_OBJ_INDEX, base);
    if (rc == 0)
        rc = cf_index__decode(&ix, b.data, b.len, base);
    for (size_t i = 0; rc == 0 && i < ix.npacks; i++) {
        pack_info *p = pack_get(c, &ix.packs[i], false);
        if (p)
            p->pinned = true;
    }
    cf_index__free(&ix);
    cf_buf_free(&b);
    return rc;
}

int cf_prune(cf_repo *r, const cf_prune_opts *o, cf_prune_stats *out)
{
    return cf_ops__prune(r, o, out, true);
}

int cf_ops__prune(cf_repo *r, const cf_prune_opts *o, cf_prune_stats *out, bool lock)
{
    pctx c;
    cf_snapshot **snaps = NULL;
    size_t nsnaps = 0;
    cf_buf plain;
    double t0 = cf_mono_seconds();
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.o = o;
    cf_idset_init(&c.used);
    cf_idset_init(&c.seen_trees);
    cf_buf_init(&plain, 0);
    if (cf_repo__require_admin(r, "prune"))
        return CF_EPERM;
    double max_unused = o->max_unused_percent >= 0 ? o->max_unused_percent : 5.0;
    int rc = lock ? cf_repo_lock(r, CF_LOCK_EXCLUSIVE) : 0;
    if (rc)
        goto out;
    /* under the exclusive lock no backup runs: temporary files are leftovers of killed writers
     * (the driver spares those of live processes, and in the folders of lock takers and
     * archive pushes, which write without the lock, those of other hosts until abandoned) */
    if (!o->dry_run) {
        static const char *const unlocked[] = {"locks", "archive", NULL};
        uint64_t nt = 0, bt = 0;
        if ((rc = cf_storage_purge_tmp(r->st, unlocked, &nt, &bt)))
            goto out;
        if (nt)
            msg(&c, "removed %llu temporary files (%.1f MiB) left by interrupted writers",
                (unsigned long long)nt, (double)bt / 1048576.0);
        c.st.bytes_freed += bt;
    }
    if (cf_repo_warning_count(r)) {
        rc = cf_error_set(CF_ECORRUPT, 0, "prune refused: the repository has problems (%s)",
                          cf_repo_warning(r, 0));
        cf_error_hint("run 'coffer check' and repair the repository first");
        goto out;
    }
    /* 1. what is used */
    if ((rc = cf_snapshot_list(&snaps, &nsnaps, r, NULL)))
        goto out;
    if (cf_repo_warning_count(r)) {
        rc = cf_error_set(CF_ECORRUPT, 0, "prune refused: %s", cf_repo_warning(r, 0));
        goto out;
    }
    for (size_t i = 0; i < nsnaps && rc == 0; i++)
        rc = mark_tree(&c, &snaps[i]->tree, 0);
    if (rc)
        goto out;
    msg(&c, "%zu snapshots reference %zu blobs", nsnaps, c.used.count);
    /* 2. packs: in storage and in the index */
    if ((rc = cf_storage_list(r->st, "data/", list_pack, &c)))
        goto out;
    if ((rc = cf_storage_list(r->st, "index/", list_index, &c)))
        goto out;
    size_t npos = cf_index__positions(&r->index);
    for (size_t i = 0; i < npos; i++) {
        cf_index_entry ent;
        const cf_index_entry *e = &ent;
        if (!cf_index__at(&r->index, i, &ent) || e->pack >= r->index.npacks)
            continue;
        pack_info *p = pack_get(&c, &r->index.packs[e->pack], true);
        if (!p) {
            rc = CF_ENOMEM;
            goto out;
        }
        p->indexed = true;
        c.st.blobs++;
        if (cf_idset_has(&c.used, &e->id) && is_canonical(r, e)) {
            p->used++;
            p->used_bytes += e->length;
            c.st.blobs_used++;
        } else {
            p->unused++;
            p->unused_bytes += e->length;
        }
    }
    /* every used blob must be somewhere */
    for (size_t i = 0; i < c.used.cap; i++) {
        if (c.used.used[i] && !cf_index__get(&r->index, &c.used.slots[i])) {
            char hex[65];
            cf_hex_encode(hex, c.used.slots[i].b, 32);
            rc = cf_error_set(CF_ECORRUPT, 0, "prune refused: blob %.16s used by a snapshot is not in the index", hex);
            cf_error_hint("run 'coffer check' to see which snapshots are damaged");
            goto out;
        }
    }
    uint64_t total = 0, unused = 0;
    for (size_t i = 0; i < c.npacks; i++) {
        pack_info *p = &c.packs[i];
        total += p->size;
        if (p->indexed && !p->present) {
            if (p->used) {
                char pp[80];
                cf_pack__path(pp, &p->id);
                rc = cf_error_set(CF_ECORRUPT, 0, "prune refused: pack '%s' holding used data is missing", pp);
                goto out;
            }
            p->remove = true; /* only its index entries go */
        } else if (!p->indexed) {
            p->remove = true; /* written by an interrupted backup, never indexed */
            c.st.packs_unindexed++;
        } else if (p->used == 0) {
            p->remove = true;
        } else if (p->unused) {
            unused += p->unused_bytes;
        }
        if (p->remove)
            c.st.bytes_freed += p->size;
    }
    c.st.packs = c.npacks;
    c.st.bytes_total = total;
    if (o->reencrypt) {
        for (size_t i = 0; i < c.npacks && rc == 0; i++) {
            pack_info *p = &c.packs[i];
            if (p->remove || !p->present)
                continue;
            uint32_t gen = 0;
            if ((rc = cf_repo__pack_generation(r, &p->id, &gen)))
                goto out;
            if (gen != r->mk.gen && (!o->only_generation || gen == o->generation)) {
                p->old_gen = true;
                p->repack = true;
                c.st.bytes_freed += p->unused_bytes;
                c.st.bytes_repacked += p->used_bytes;
                unused -= p->unused_bytes;
            }
        }
    }
    /* 3. choose packs to repack, most waste first, until waste is under the threshold */
    {
        pack_info **cand = cf_calloc(c.npacks ? c.npacks : 1, sizeof(*cand));
        size_t nc = 0;
        if (!cand) {
            rc = CF_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < c.npacks; i++)
            if (!c.packs[i].remove && !c.packs[i].repack && c.packs[i].unused)
                cand[nc++] = &c.packs[i];
        qsort(cand, nc, sizeof(*cand), cmp_unused);
        /* what the repository will hold: packs that stay, less the waste of packs already
         * chosen for repacking; updated as candidates are chosen */
        uint64_t remaining = 0;
        for (size_t i = 0; i < c.npacks; i++) {
            const pack_info *p = &c.packs[i];
            if (p->remove || !p->present)
                continue;
            remaining += p->size;
            if (p->repack)
                remaining -= p->unused_bytes < p->size ? p->unused_bytes : p->size;
        }
        uint64_t repack_bytes = 0;
        for (size_t i = 0; i < nc; i++) {
            double share = remaining ? 100.0 * (double)unused / (double)remaining : 0;
            if (share <= max_unused)
                break;
            if (o->max_repack_bytes && repack_bytes + cand[i]->size > o->max_repack_bytes)
                break;
            cand[i]->repack = true;
            repack_bytes += cand[i]->size;
            unused -= cand[i]->unused_bytes;
            remaining -= cand[i]->unused_bytes < remaining ? cand[i]->unused_bytes : remaining;
            c.st.bytes_freed += cand[i]->unused_bytes;
            c.st.bytes_repacked += cand[i]->used_bytes;
        }
        free(cand);
        c.st.bytes_unused_after = unused;
    }
    for (size_t i = 0; i < c.npacks; i++) {
        if (c.packs[i].remove && c.packs[i].present)
            c.st.packs_deleted++;
        if (c.packs[i].repack)
            c.st.packs_repacked++;
    }
    for (size_t i = 0; i < c.npacks; i++)
        if (c.packs[i].remove || c.packs[i].repack)
            c.st.blobs_removed += c.packs[i].unused;
    msg(&c, "%llu packs: %llu to delete (%llu never indexed), %llu to repack; %.1f MiB to free",
        (unsigned long long)c.st.packs, (unsigned long long)c.st.packs_deleted,
        (unsigned long long)c.st.packs_unindexed, (unsigned long long)c.st.packs_repacked,
        (double)c.st.bytes_freed / 1048576.0);
    if (o->dry_run)
        goto out;
    bool index_gone = false; /* index entries of packs missing from storage */
    for (size_t i = 0; i < c.npacks; i++)
        index_gone |= c.packs[i].remove && c.packs[i].indexed;
    if (c.st.packs_deleted == 0 && c.st.packs_repacked == 0 && !index_gone && c.nindex <= 1 &&
        !o->reencrypt)
        goto out; /* nothing to do */

    /* 4. repack: used blobs of chosen packs go into new packs */
    for (size_t i = 0; i < c.npacks && rc == 0; i++) {
        if (!c.packs[i].repack)
            continue;
        uint32_t no = 0;
        if ((rc = cf_index__pack_no(&r->index, &c.packs[i].id, &no)) == 0)
            rc = repack(&c, &c.packs[i], no);
    }
    if (rc)
        goto out;
    if ((rc = cf_repo__flush(r))) /* writes new packs and an index for them */
        goto out;

    /* 5. one index for every pack that stays, listing everything in them (unused blobs and
     * extra copies too, so a later prune still accounts for them) */
    {
        size_t npos2 = cf_index__positions(&r->index), n = 0;
        cf_index_entry *list = cf_malloc((npos2 ? npos2 : 1) * sizeof(*list));
        if (!list) {
            rc = CF_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < npos2; i++) {
            cf_index_entry e;
            if (!cf_index__at(&r->index, i, &e) || e.pack >= r->index.npacks)
                continue;
            pack_info *p = pack_get(&c, &r->index.packs[e.pack], false);
            if (p && (p->remove || p->repack))
                continue;
            list[n++] = e;
        }
        rc = cf_index__encode_list(&plain, &r->index, list, n);
        free(list);
        if (rc)
            goto out;
        char name[65];
        if ((rc = cf_repo__put_object(r, "index", CF_OBJ_INDEX, plain.data, plain.len, name)))
            goto out;
        c.st.index_files_written++;
        /* 6. old index files (the new one may share a name with none of them) */
        for (size_t i = 0; i < c.nindex && rc == 0; i++) {
            const char *base = strrchr(c.index_names[i], '/');
            if (base && strcmp(base + 1, name) == 0)
                continue; /* identical content: the new index is this file */
            rc = cf_storage_remove(r->st, c.index_names[i]);
            if (rc == CF_ENOTFOUND)
                rc = 0;
            else if (rc == 0)
                c.st.index_files_deleted++;
            else if (rc == CF_EPERM || rc == CF_EAUTH) {
                /* under retention: it stays, so every pack it lists must stay too, or it
                 * would point at missing packs */
                msg(&c, "kept index file '%s': storage refuses to delete it (%s)",
                    c.index_names[i], cf_error_last()->message);
                rc = pin_index_packs(&c, base ? base + 1 : c.index_names[i]);
            }
        }
        /* the index file written by the flush above is one of "old" ones only if listed
         * before; it was not, so remove it too: its entries are all in the new index */
        if (rc == 0)
            rc = cf_repo__remove_flushed_indexes(r, name, &c.st.index_files_deleted);
        if (rc)
            goto out;
    }
    /* 7. packs no index refers to any more */
    for (size_t i = 0; i < c.npacks && rc == 0; i++) {
        pack_info *p = &c.packs[i];
        if (!(p->remove || p->repack) || !p->present)
            continue;
        char pp[80];
        cf_pack__path(pp, &p->id);
        if (p->pinned) {
            msg(&c, "kept pack '%s': an index file under retention lists it", pp);
            c.st.packs_locked++;
            c.st.bytes_freed -= p->size <= c.st.bytes_freed ? p->size : c.st.bytes_freed;
            continue;
        }
        rc = cf_storage_remove(r->st, pp);
        if (rc == CF_ENOTFOUND)
            rc = 0;
        if (rc == CF_EPERM || rc == CF_EAUTH || rc == CF_ESTORAGE_AUTH) {
            /* under retention (S3 Object Lock, an immutable file): it stays, unindexed, and a
             * later prune removes it once the storage allows */
            msg(&c, "kept pack '%s': storage refuses to delete it (%s)", pp, cf_error_last()->message);
            c.st.packs_locked++;
            c.st.bytes_freed -= p->size <= c.st.bytes_freed ? p->size : c.st.bytes_freed;
            rc = 0;
        }
    }
out:
    if (lock)
        cf_repo_unlock(r);
    c.st.seconds = cf_mono_seconds() - t0;
    if (out)
        *out = c.st;
    cf_snapshot_list_free(snaps, nsnaps);
    cf_idset_free(&c.used);
    cf_idset_free(&c.seen_trees);
    free(c.packs);
    for (size_t i = 0; i < c.nindex; i++)
        free(c.index_names[i]);
    free(c.index_names);
    cf_buf_free(&plain);
    return rc;
}
