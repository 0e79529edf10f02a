/*
 * check.c - the check verb: structure (every snapshot's trees and blobs indexed, every
 * indexed pack present) and, with read-data, every pack downloaded, authenticated,
 * decompressed and re-hashed. Each problem names the damaged object and what it affects.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "compress/compress.h"
#include "ops/ops.h"

/* Trees met while reading packs, kept (up to STASH_MAX bytes) so that the walk of the
 * snapshots that follows does not read them from storage a second time. */
#define STASH_MAX ((size_t)256 << 20)

typedef struct {
    cf_id id;
    uint8_t *data; /* NULL: empty slot */
    size_t len;
} stash_slot;

typedef struct {
    stash_slot *slots;
    size_t cap, count, bytes;
    bool full;
} tree_stash;

typedef struct {
    cf_repo *r;
    const cf_check_opts *o;
    tree_stash stash;
    cf_check_stats st;
    cf_idset present;    /* packs in storage */
    cf_idset damaged;    /* packs found damaged by read-data */
    cf_idset good_trees; /* trees checked without problems */
    const char *snap_id;
    pthread_mutex_t mu; /* problem reporting, stats and the damaged set, during read-data */
    const cf_id **todo; /* packs to read */
    size_t ntodo, next;
    int err;
} cctx;

static void problem(cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(cctx *c, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->mu);
    c->st.problems++;
    if (c->o->on_problem)
        c->o->on_problem(NULL, msg, c->o->payload);
    pthread_mutex_unlock(&c->mu);
}

static int list_pack(const char *name, uint64_t size, void *payload)
{
    (void)size;
    cctx *c = payload;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    cf_id id;
    if (strlen(base) != 64 || cf_hex_decode(id.b, 32, base)) {
        problem(c, "unexpected file '%s' in the data folder", name);
        return 0;
    }
    int rc = cf_idset_add(&c->present, &id);
    return rc < 0 ? rc : 0;
}

static size_t stash_pos(const tree_stash *t, const cf_id *id)
{
    size_t i = (size_t)cf_le64_get(id->b) & (t->cap - 1);
    while (t->slots[i].data && !cf_id_eq(&t->slots[i].id, id))
        i = (i + 1) & (t->cap - 1);
    return i;
}

/* Keep a verified tree's plaintext; takes data (freed on failure or when the stash is full).
 * Called with c->mu held. */
static void stash_put(tree_stash *t, const cf_id *id, uint8_t *data, size_t len)
{
    if (t->full || t->bytes + len > STASH_MAX) {
        t->full = true;
        free(data);
        return;
    }
    if ((t->count + 1) * 2 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 1024;
        stash_slot *ns = cf_calloc(ncap, sizeof(*ns));
        if (!ns) {
            t->full = true;
            free(data);
            return;
        }
        tree_stash old = *t;
        t->slots = ns;
        t->cap = ncap;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].data)
                t->slots[stash_pos(t, &old.slots[i].id)] = old.slots[i];
        free(old.slots);
    }
    size_t i = stash_pos(t, id);
    if (t->slots[i].data) { /* the same tree in two packs */
        free(data);
        return;
    }
    t->slots[i] = (stash_slot){*id, data, len};
    t->count++;
    t->bytes += len;
}

static const stash_slot *stash_get(const tree_stash *t, const cf_id *id)
{
    if (!t->cap)
        return NULL;
    const stash_slot *s = &t->slots[stash_pos(t, id)];
    return s->data ? s : NULL;
}

static void stash_free(tree_stash *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->slots[i].data);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* A tree, from the stash when read-data met it, else from storage. */
static int load_tree(cctx *c, cf_tree *t, const cf_id *id)
{
    const stash_slot *s = stash_get(&c->stash, id);
    if (!s)
        return cf_repo__load_tree(t, c->r, id);
    cf_tree__init(t);
    int rc = cf_tree__decode(t, s->data, s->len);
    if (rc) {
        char hex[65];
        cf_hex_encode(hex, id->b, 32);
        cf_error_wrap(rc, "tree %.16s", hex);
    }
    return rc;
}

/* Check one blob reference; returns true when it is usable. */
static bool blob_ok(cctx *c, const cf_id *id, uint8_t type, const char *path)
{
    char hex[65], pp[80];
    const cf_index_entry *e = cf_index__get(&c->r->index, id);
    cf_hex_encode(hex, id->b, 32);
    if (!e) {
        c->st.missing_blobs++;
        problem(c, "snapshot %.8s: %s: %s blob %.16s is missing from the index", c->snap_id, path,
                type == CF_BLOB_TREE ? "tree" : "data", hex);
        return false;
    }
    if (e->pack >= c->r->index.npacks) {
        problem(c, "snapshot %.8s: %s: %s blob %.16s is not stored in any pack", c->snap_id, path,
                type == CF_BLOB_TREE ? "tree" : "data", hex);
        return false;
    }
    const cf_id *pack = &c->r->index.packs[e->pack];
    cf_pack__path(pp, pack);
    if (!cf_idset_has(&c->present, pack)) {
        problem(c, "snapshot %.8s: %s: pack '%s' is missing", c->snap_id, path, pp);
        return false;
    }
    if (cf_idset_has(&c->damaged, pack)) {
        problem(c, "snapshot %.8s: %s: pack '%s' is damaged", c->snap_id, path, pp);
        return false;
    }
    return true;
}

static int check_tree(cctx *c, const cf_id *id, const char *path, int depth, bool *out_ok)
{
    cf_tree t;
    int rc = 0;
    bool ok = true;
    *out_ok = true;
    if (cf_idset_has(&c->good_trees, id))
        return 0;
    if (depth > 10000) {
        problem(c, "snapshot %.8s: %s: trees nested too deep", c->snap_id, path);
        *out_ok = false;
        return 0;
    }
    if (!blob_ok(c, id, CF_BLOB_TREE, *path ? path : "/")) {
        *out_ok = false;
        return 0;
    }
    rc = load_tree(c, &t, id);
    if (rc == CF_ENOMEM)
        return rc;
    if (rc) {
        problem(c, "snapshot %.8s: %s: %s", c->snap_id, *path ? path : "/", cf_error_last()->message);
        *out_ok = false;
        return 0;
    }
    c->st.trees++;
    for (size_t i = 0; i < t.count && rc == 0; i++) {
        const cf_node *n = &t.nodes[i];
        char *p = cf_ops__join(*path ? path : "/", n->name, n->name_len);
        if (!p) {
            rc = CF_ENOMEM;
            break;
        }
        if (n->type == CF_NODE_DIR) {
            bool sub_ok = true;
            rc = check_tree(c, &n->subtree, p, depth + 1, &sub_ok);
            ok &= sub_ok;
        } else if (n->type == CF_NODE_FILE) {
            uint64_t sum = 0;
            for (uint32_t k = 0; k < n->ncontent; k++) {
                sum += n->content[k].len;
                if (n->content[k].kind != 0)
                    continue;
                c->st.blobs++;
                if (!blob_ok(c, &n->content[k].id, CF_BLOB_DATA, p)) {
                    ok = false;
                    break; /* one line per file */
                }
            }
            if (ok && sum != n->size) {
                problem(c, "snapshot %.8s: %s: content adds up to %llu bytes, size says %llu",
                        c->snap_id, p, (unsigned long long)sum, (unsigned long long)n->size);
                ok = false;
            }
        }
        free(p);
    }
    cf_tree__free(&t);
    if (rc == 0 && ok)
        rc = cf_idset_add(&c->good_trees, id) < 0 ? CF_ENOMEM : 0;
    *out_ok = ok;
    return rc;
}

/* Download one pack, verify its name, header and every blob. */
static int read_pack(cctx *c, const cf_id *pack)
{
    char pp[80], hex[65];
    uint8_t *data = NULL;
    size_t len = 0;
    cf_pack_entry *es = NULL;
    size_t n = 0;
    cf_buf b;
    cf_buf_init(&b, 0);
    cf_pack__path(pp, pack);
    int rc = cf_storage_get(c->r->st, pp, 0, 0, &data, &len);
    bool bad = false;
    if (rc) {
        if (rc == CF_ENOMEM)
            return rc;
        problem(c, "pack '%s' cannot be read: %s", pp, cf_error_last()->message);
        bad = true;
        goto out;
    }
    pthread_mutex_lock(&c->mu);
    c->st.packs_read++;
    pthread_mutex_unlock(&c->mu);
    uint8_t h[32];
    cf_sha256(h, data, len);
    if (memcmp(h, pack->b, 32) != 0) {
        problem(c, "pack '%s' is damaged: its content does not match its name", pp);
        bad = true;
    }
    if (cf_pack__read_header(&es, &n, c->r, data, len, pp)) {
        problem(c, "%s", cf_error_last()->message);
        bad = true;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        cf_buf_reset(&b);
        if (cf_pack__open_blob(&b, c->r, data, &es[i], data + es[i].offset, pp)) {
            problem(c, "%s", cf_error_last()->message);
            bad = true;
            continue;
        }
        cf_id id;
        cf_repo__blob_id(c->r, &id, b.data, b.len);
        if (!cf_id_eq(&id, &es[i].id)) {
            cf_hex_encode(hex, es[i].id.b, 32);
            problem(c, "blob %.16s in pack '%s' does not match its id", hex, pp);
            bad = true;
        } else if (es[i].type == CF_BLOB_TREE) {
            uint8_t *copy = cf_malloc(b.len ? b.len : 1);
            if (copy)
                memcpy(copy, b.data, b.len);
            pthread_mutex_lock(&c->mu);
            if (copy)
                stash_put(&c->stash, &id, copy, b.len);
            pthread_mutex_unlock(&c->mu);
        }
    }
out:
    if (bad) {
        pthread_mutex_lock(&c->mu);
        c->st.damaged_packs++;
        if (cf_idset_add(&c->damaged, pack) < 0)
            rc = CF_ENOMEM;
        else
            rc = 0;
        pthread_mutex_unlock(&c->mu);
    }
    free(es);
    free(data);
    cf_buf_free(&b);
    return rc;
}

static void *read_worker(void *arg)
{
    cctx *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        if (c->err || c->next >= c->ntodo) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        const cf_id *pack = c->todo[c->next++];
        pthread_mutex_unlock(&c->mu);
        int rc = read_pack(c, pack);
        if (rc) {
            pthread_mutex_lock(&c->mu);
            if (!c->err)
                c->err = rc;
            pthread_mutex_unlock(&c->mu);
        }
    }
    return NULL;
}

/* Read the chosen packs with two workers per CPU, so that one worker's wait for its pack to
 * arrive (disk or network) overlaps another's decryption and hashing. */
static int read_packs(cctx *c)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = ncpu > 1 ? (unsigned)ncpu * 2 : 2;
    if (n > 64)
        n = 64;
    if (n > c->ntodo)
        n = c->ntodo ? (unsigned)c->ntodo : 1;
    pthread_t *t = cf_calloc(n, sizeof(pthread_t));
    if (!t)
        return CF_ENOMEM;
    unsigned started = 0;
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, read_worker, c) == 0)
            started++;
    if (started == 0)
        read_worker(c);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
    return c->err;
}

int cf_check(cf_repo *r, const cf_check_opts *o, cf_check_stats *out_stats)
{
    cctx c;
    cf_snapshot **snaps = NULL;
    size_t nsnaps = 0;
    int rc = 0;
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.o = o;
    cf_idset_init(&c.present);
    cf_idset_init(&c.damaged);
    cf_idset_init(&c.good_trees);
    pthread_mutex_init(&c.mu, NULL);
    /* check what storage holds, not what was cached from it: the lock reloads the index */
    if (!r->cache_off && strcmp(cf_storage_scheme(r->st), "local") != 0 &&
        strcmp(cf_storage_scheme(r->st), "mem") != 0)
        r->reload_index = true;
    r->cache_off = true;
    if ((rc = cf_repo_lock(r, CF_LOCK_READ)))
        goto out;
    /* problems found while opening: damaged index files */
    for (size_t i = 0; i < cf_repo_warning_count(r); i++) {
        const char *w = cf_repo_warning(r, i);
        if (strstr(w, "index/"))
            c.st.damaged_indexes++;
        problem(&c, "%s", w);
    }
    size_t warn_before = cf_repo_warning_count(r);
    if ((rc = cf_storage_list(r->st, "data/", list_pack, &c)))
        goto out;
    c.st.packs = c.present.count;
    /* every pack the index names must exist */
    for (size_t i = 0; i < r->index.npacks; i++) {
        if (!cf_idset_has(&c.present, &r->index.packs[i])) {
            char pp[80];
            cf_pack__path(pp, &r->index.packs[i]);
            c.st.missing_packs++;
            problem(&c, "pack '%s' is in the index but missing from storage", pp);
        }
    }
    if (o->read_data) {
        uint32_t pct = o->read_data_percent ? o->read_data_percent : 100;
        uint64_t seed = 0;
        cf_random_bytes(&seed, sizeof(seed));
        c.todo = cf_calloc(c.present.count ? c.present.count : 1, sizeof(cf_id *));
        if (!c.todo) {
            rc = CF_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < c.present.cap; i++) {
            if (!c.present.used[i])
                continue;
            if (pct < 100) {
                /* a keyed pseudo-random choice per pack, different each run */
                uint64_t v = cf_le64_get(c.present.slots[i].b) ^ seed;
                v *= 0x9e3779b97f4a7c15ULL;
                if ((v >> 32) % 100 >= pct)
                    continue;
            }
            c.todo[c.ntodo++] = &c.present.slots[i];
        }
        if ((rc = read_packs(&c)))
            goto out;
    }
    if ((rc = cf_snapshot_list(&snaps, &nsnaps, r, NULL)))
        goto out;
    for (size_t i = warn_before; i < cf_repo_warning_count(r); i++) {
        c.st.damaged_snapshots++;
        problem(&c, "%s", cf_repo_warning(r, i));
    }
    c.st.snapshots = nsnaps;
    for (size_t i = 0; i < nsnaps && rc == 0; i++) {
        bool ok;
        c.snap_id = snaps[i]->id;
        rc = check_tree(&c, &snaps[i]->tree, "", 0, &ok);
    }
    if (rc)
        goto out;
    if (c.st.problems)
        rc = cf_error_set(CF_ECORRUPT, 0, "check found %llu problems in repository '%s'",
                          (unsigned long long)c.st.problems, cf_storage_display(r->st));
out:
    cf_repo_unlock(r);
    if (out_stats)
        *out_stats = c.st;
    cf_snapshot_list_free(snaps, nsnaps);
    cf_idset_free(&c.present);
    cf_idset_free(&c.damaged);
    cf_idset_free(&c.good_trees);
    stash_free(&c.stash);
    free(c.todo);
    pthread_mutex_destroy(&c.mu);
    return rc;
}
