/*
 * repo.c - creating, opening and closing a repository: config, key slots, index loading,
 * warnings, statistics and the debugging `cat`.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "compress/compress.h"
#include "repo/repo.h"

int cf_repo_init(const char *url, const char *password, const cf_init_opts *opts)
{
    cf_credential cred = {password, NULL, opts ? opts->kdf_log_n : 0};
    if (!password || !*password)
        return cf_error_set(CF_EINVAL, 0, "an empty password is not allowed");
    return cf_repo_init_cred(url, &cred, opts);
}

int cf_repo_init_cred(const char *url, const cf_credential *cred, const cf_init_opts *opts)
{
    cf_init_opts def = {0, 0, 0, 0, -1, 0};
    cf_storage *st = NULL;
    cf_master_key mk;
    cf_config cfg;
    char key_id[65];
    uint64_t dummy;
    int rc;
    if (!opts)
        opts = &def;
    if (!cred || (!cred->key && (!cred->password || !*cred->password)))
        return cf_error_set(CF_EINVAL, 0, "an empty password is not allowed");
    memset(&cfg, 0, sizeof(cfg));
    cfg.version = CF_FORMAT_VERSION;
    cfg.chunk.min = opts->chunk_min ? opts->chunk_min : CF_CHUNK_MIN_DEFAULT;
    cfg.chunk.avg = opts->chunk_avg ? opts->chunk_avg : CF_CHUNK_AVG_DEFAULT;
    cfg.chunk.max = opts->chunk_max ? opts->chunk_max : CF_CHUNK_MAX_DEFAULT;
    cfg.pack_size = opts->pack_size ? opts->pack_size : CF_PACK_SIZE_DEFAULT;
    cfg.compression_level = opts->compression_level < 0 ? CF_COMP_LEVEL_DEFAULT
                                                         : opts->compression_level;
    if ((rc = cf_chunk_params_validate(&cfg.chunk)))
        return rc;
    if (cfg.pack_size < (1u << 16) || cfg.pack_size > CF_PACK_SIZE_MAX)
        return cf_error_set(CF_EINVAL, 0, "pack size %u out of range (64 KiB..512 MiB)", cfg.pack_size);
    if (cfg.compression_level > 22)
        return cf_error_set(CF_EINVAL, 0, "compression level %d out of range (0..22)",
                            cfg.compression_level);
    if ((rc = cf_storage_open(&st, url, CF_STORAGE_CREATE)))
        return rc;
    if (cf_storage_stat(st, "config", &dummy) == 0) {
        rc = cf_error_set(CF_EEXISTS, 0, "a repository already exists at '%s'", url);
        goto out;
    }
    uint8_t idb[32];
    if ((rc = cf_master__generate(&mk)) || (rc = cf_random_bytes(idb, sizeof(idb))))
        goto out;
    cf_hex_encode(cfg.id, idb, sizeof(idb));
    /* key slot first: a config without a key would be a repository nobody can open */
    if ((rc = cf_keys__create(st, &mk, cred, CF_ROLE_ADMIN, key_id)))
        goto out;
    if ((rc = cf_config__write(st, &cfg, &mk))) {
        /* a slot without a config would open nothing: remove it so a retry starts clean */
        char name[80];
        snprintf(name, sizeof(name), "keys/%s", key_id);
        int saved = rc;
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cf_error_last()->message);
        cf_storage_remove(st, name);
        rc = cf_error_set(saved, 0, "%s", msg);
    }
out:
    cf_wipe(&mk, sizeof(mk));
    cf_storage_close(st);
    return rc;
}

void cf_repo__warn(cf_repo *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char **p = realloc(r->warnings, (r->nwarnings + 1) * sizeof(*p));
    if (!p)
        return;
    r->warnings = p;
    if ((p[r->nwarnings] = strdup(msg)))
        r->nwarnings++;
}

size_t cf_repo_warning_count(const cf_repo *repo) { return repo->nwarnings; }
const char *cf_repo_warning(const cf_repo *repo, size_t i)
{
    return i < repo->nwarnings ? repo->warnings[i] : NULL;
}
const char *cf_repo_display(const cf_repo *repo) { return cf_storage_display(repo->st); }

typedef struct {
    cf_repo *r;
    cf_buf b;
    int rc;
    uint64_t count;
    bool only_new; /* skip files already loaded */
} load_ctx;

static bool index_known(const cf_repo *r, const char *base)
{
    for (size_t i = 0; i < r->nindex_names; i++)
        if (strcmp(r->index_names[i], base) == 0)
            return true;
    return false;
}

static int remember_index(cf_repo *r, const char *base)
{
    char (*p)[65] = realloc(r->index_names, (r->nindex_names + 1) * sizeof(*p));
    if (!p)
        return cf_error_set(CF_ENOMEM, 0, "out of memory");
    r->index_names = p;
    snprintf(p[r->nindex_names++], 65, "%s", base);
    return 0;
}

static int load_one(const char *name, uint64_t size, void *payload)
{
    (void)size;
    load_ctx *c = payload;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strlen(base) != 64)
        return 0;
    if (c->only_new && index_known(c->r, base))
        return 0;
    if (remember_index(c->r, base))
        return CF_ENOMEM;
    cf_buf_reset(&c->b);
    int rc = cf_repo__get_object(&c->b, c->r, "index", CF_OBJ_INDEX, base);
    if (rc == 0)
        rc = cf_index__decode(&c->r->index, c->b.data, c->b.len, name);
    if (rc == CF_ENOMEM || rc == CF_ERETRYABLE || rc == CF_EIO || rc == CF_EAUTH ||
        rc == CF_ESTORAGE_AUTH)
        return rc;
    if (rc)
        cf_repo__warn(c->r, "%s", cf_error_last()->message);
    else
        c->count++;
    return 0;
}

void cf_repo__note_unknown_generation(cf_repo *r, uint32_t gen)
{
    uint32_t newest = 0;
    for (uint32_t i = 0; i < r->mk.ngens; i++)
        if (r->mk.gen_ids[i] > newest)
            newest = r->mk.gen_ids[i];
    if (gen <= newest)
        return; /* a retired generation, or damage */
    pthread_mutex_lock(&r->mu);
    r->unknown_gens++;
    if (gen > r->unknown_gen_max)
        r->unknown_gen_max = gen;
    pthread_mutex_unlock(&r->mu);
}

typedef struct {
    cf_repo *r;
    size_t seen;      /* listed names that were loaded before */
    bool added;       /* a name not loaded before */
} scan_ctx;

static int scan_one(const char *name, uint64_t size, void *payload)
{
    (void)size;
    scan_ctx *c = payload;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strlen(base) != 64)
        return 0;
    if (index_known(c->r, base))
        c->seen++;
    else
        c->added = true;
    return 0;
}

int cf_repo__refresh_index(cf_repo *r)
{
    scan_ctx sc = {r, 0, false};
    int rc = cf_storage_list(r->st, "index/", scan_one, &sc);
    if (rc)
        return rc;
    if (sc.seen == r->nindex_names && !sc.added && !r->reload_index)
        return 0; /* unchanged since it was loaded */
    pthread_mutex_lock(&r->mu);
    if (sc.seen == r->nindex_names && !r->reload_index) {
        /* only additions (another backup finished): load the new files */
        load_ctx c = {r, {0}, 0, 0, true};
        cf_buf_init(&c.b, 0);
        rc = cf_storage_list(r->st, "index/", load_one, &c);
        cf_buf_free(&c.b);
    } else {
        /* files went away (a prune rewrote the index): start again from storage, keeping
         * nothing this handle has not stored */
        cf_index__drop_pending(&r->index);
        cf_index__free(&r->index);
        cf_index__init(&r->index);
        r->nindex_names = 0;
        free(r->salts);
        r->salts = NULL;
        r->nsalts = 0;
        for (size_t i = 0; i < r->nwarnings; i++)
            free(r->warnings[i]);
        r->nwarnings = 0;
        load_ctx c = {r, {0}, 0, 0, false};
        cf_buf_init(&c.b, 0);
        rc = cf_storage_list(r->st, "index/", load_one, &c);
        cf_buf_free(&c.b);
        r->reload_index = false;
    }
    if (rc == 0)
        rc = cf_index__seal(&r->index);
    if (rc == 0)
        r->index_unloaded = false;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int cf_repo__load_index(cf_repo *r)
{
    load_ctx c = {r, {0}, 0, 0, false};
    cf_buf_init(&c.b, 0);
    int rc = cf_storage_list(r->st, "index/", load_one, &c);
    cf_buf_free(&c.b);
    return rc;
}

int cf_repo_open(cf_repo **out, const char *url, const char *password)
{
    cf_credential cred = {password ? password : "", NULL, 0};
    return cf_repo_open_cred(out, url, &cred);
}

/* The handle holds the key bundle: it lives in pages of its own, left out of core dumps
 * (MADV_DONTDUMP) and wiped before they are returned. */
static cf_repo *repo_alloc(void) { return cf_secret_alloc(sizeof(cf_repo)); }

static void repo_free(cf_repo *r) { cf_secret_free(r, sizeof(*r)); }

struct accept_ctx {
    cf_repo *r;
    const char *url;
};

/* A key is the repository's when it authenticates the config. */
static int accept_config(const cf_master_key *mk, void *payload)
{
    struct accept_ctx *a = payload;
    return cf_config__read(&a->r->cfg, a->r->st, mk, a->url);
}

int cf_repo_open_cred(cf_repo **out, const char *url, const cf_credential *cred)
{
    return cf_repo_open_flags(out, url, cred, 0);
}

int cf_repo_open_flags(cf_repo **out, const char *url, const cf_credential *cred, unsigned flags)
{
    int rc;
    cf_buf raw;
    cf_repo *r = repo_alloc();
    *out = NULL;
    if (!r)
        return CF_ENOMEM;
    cf_buf_init(&raw, 1 << 20);
    pthread_mutex_init(&r->mu, NULL);
    cf_index__init(&r->index);
    for (int i = 0; i < 2; i++)
        cf_pack__writer_init(&r->packs[i]);
    if (!(r->url = cf_strdup(url))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = cf_storage_open(&r->st, url, 0)))
        goto out;
    if ((rc = cf_config__read_unverified(&r->cfg, &raw, r->st, url)))
        goto out;
    /* packs are built in files next to where they are published when the storage allows */
    if (cf_storage_spool_dir(r->st, r->spool, sizeof(r->spool)) != 0)
        r->spool[0] = '\0';
    struct accept_ctx ac = {r, url};
    if ((rc = cf_keys__open(&r->mk, r->slot_id, &r->role, r->st, cred, url, accept_config, &ac)))
        goto out;
    uint8_t ck[CF_KEY_LEN];
    cf_kdf(ck, r->mk.mac, "coffer chunker", NULL, 0);
    rc = cf_chunker_new(&r->chunker, &r->cfg.chunk, ck);
    cf_wipe(ck, sizeof(ck));
    if (rc)
        goto out;
    if (flags & CF_OPEN_NO_INDEX) {
        r->index_unloaded = true;
        goto out;
    }
    if ((rc = cf_repo__load_index(r)) || (rc = cf_index__seal(&r->index)))
        goto out;
    /* index files sealed by a newer key generation than this key holds: the key was rotated
     * out, which is a credential problem rather than damage */
    if (r->unknown_gens && r->unknown_gens == r->nwarnings) {
        rc = cf_error_set(CF_EAUTH, 0,
                          "this key of repository '%s' does not hold data key generation %u, "
                          "used since a key rotation",
                          url, r->unknown_gen_max);
        cf_error_hint("open the repository with the key that did the rotation, or a key added "
                      "after it");
    }
out:
    cf_buf_free(&raw);
    if (rc) {
        cf_repo_close(r);
        r = NULL;
    }
    *out = r;
    return rc;
}

void cf_repo_close(cf_repo *r)
{
    if (!r)
        return;
    if (r->pipe)
        cf_pipeline__stop(r);
    if (r->lock_name[0])
        cf_repo_unlock(r);
    cf_chunker_free(r->chunker);
    cf_index__free(&r->index);
    for (int i = 0; i < 2; i++)
        cf_pack__writer_free(&r->packs[i]);
    free(r->new_packs);
    free(r->written_indexes);
    free(r->index_names);
    free(r->salts);
    for (size_t i = 0; i < r->nwarnings; i++)
        free(r->warnings[i]);
    free(r->warnings);
    cf_repo__free_tree_packs(r);
    cf_storage_close(r->st);
    cf_wipe(&r->mk, sizeof(r->mk));
    pthread_mutex_destroy(&r->mu);
    free(r->url);
    repo_free(r);
}

/* ------------------------------------------------------------------ stats */

typedef struct {
    uint64_t bytes, count;
} sum_ctx;

static int sum_sizes(const char *name, uint64_t size, void *payload)
{
    (void)name;
    sum_ctx *c = payload;
    c->bytes += size;
    c->count++;
    return 0;
}

int cf_repo_stats_get(cf_repo *repo, cf_repo_stats *out)
{
    memset(out, 0, sizeof(*out));
    sum_ctx packs = {0, 0}, idx = {0, 0};
    int rc = cf_storage_list(repo->st, "data/", sum_sizes, &packs);
    if (rc == 0)
        rc = cf_storage_list(repo->st, "index/", sum_sizes, &idx);
    if (rc)
        return rc;
    out->packs = packs.count;
    out->stored_bytes = packs.bytes;
    out->index_files = idx.count;
    size_t npos = cf_index__positions(&repo->index);
    for (size_t i = 0; i < npos; i++) {
        cf_index_entry ent;
        const cf_index_entry *e = &ent;
        if (!cf_index__at(&repo->index, i, &ent))
            continue;
        out->blobs++;
        out->raw_bytes += e->raw_len;
        if (e->type == CF_BLOB_TREE)
            out->tree_blobs++;
        else
            out->data_blobs++;
    }
    cf_snapshot **list = NULL;
    size_t n = 0;
    if ((rc = cf_snapshot_list(&list, &n, repo, NULL)))
        return rc;
    out->snapshots = n;
    for (size_t i = 0; i < n; i++)
        out->restore_size += list[i]->stats.bytes_total;
    cf_snapshot_list_free(list, n);
    return 0;
}

/* ------------------------------------------------------------------ cat */

static char *dump_json(json_t *doc)
{
    char *t = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    return t;
}

static json_t *tree_json(const cf_tree *t)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < t->count; i++) {
        const cf_node *n = &t->nodes[i];
        char hex[65];
        json_t *o = json_pack("{s:s%, s:i, s:I, s:I, s:I, s:I}", "name", n->name, (size_t)n->name_len,
                              "type", n->type, "mode", (json_int_t)n->mode, "uid", (json_int_t)n->uid,
                              "gid", (json_int_t)n->gid, "size", (json_int_t)n->size);
        if (n->type == CF_NODE_DIR) {
            cf_hex_encode(hex, n->subtree.b, 32);
            json_object_set_new(o, "subtree", json_string(hex));
        } else if (n->type == CF_NODE_FILE) {
            json_t *c = json_array();
            for (uint32_t k = 0; k < n->ncontent; k++) {
                if (n->content[k].kind == 1) {
                    json_array_append_new(c, json_pack("{s:I}", "hole", (json_int_t)n->content[k].len));
                } else {
                    cf_hex_encode(hex, n->content[k].id.b, 32);
                    json_array_append_new(c, json_pack("{s:s, s:I}", "blob", hex, "len",
                                                       (json_int_t)n->content[k].len));
                }
            }
            json_object_set_new(o, "content", c);
        } else if (n->target) {
            json_object_set_new(o, "target", json_string(n->target));
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

int cf_repo_cat(char **out, cf_repo *repo, const char *what, const char *id)
{
    int rc = 0;
    cf_buf b;
    cf_buf_init(&b, 0);
    *out = NULL;
    if (strcmp(what, "config") == 0) {
        *out = dump_json(json_pack("{s:i, s:s, s:{s:i, s:i, s:i}, s:i, s:i}", "version",
                                   (int)repo->cfg.version, "id", repo->cfg.id, "chunker", "min",
                                   (int)repo->cfg.chunk.min, "avg", (int)repo->cfg.chunk.avg, "max",
                                   (int)repo->cfg.chunk.max, "pack_size", (int)repo->cfg.pack_size,
                                   "compression_level", repo->cfg.compression_level));
    } else if (!id) {
        rc = cf_error_set(CF_EINVAL, 0, "cat %s needs an id", what);
    } else if (strcmp(what, "snapshot") == 0) {
        cf_snapshot *s = NULL;
        if ((rc = cf_snapshot_find(&s, repo, id, NULL)) == 0) {
            *out = cf_snapshot_to_json(s);
            cf_snapshot_free(s);
        }
    } else if (strcmp(what, "index") == 0) {
        if ((rc = cf_repo__get_object(&b, repo, "index", CF_OBJ_INDEX, id)) == 0) {
            cf_index ix;
            cf_index__init(&ix);
            if ((rc = cf_index__decode(&ix, b.data, b.len, id)) == 0) {
                json_t *packs = json_array();
                for (size_t i = 0; i < ix.npacks; i++) {
                    char hex[65];
                    cf_hex_encode(hex, ix.packs[i].b, 32);
                    json_array_append_new(packs, json_string(hex));
                }
                *out = dump_json(json_pack("{s:o, s:I}", "packs", packs, "blobs", (json_int_t)ix.count));
            }
            cf_index__free(&ix);
        }
    } else if (strcmp(what, "tree") == 0 || strcmp(what, "pack") == 0) {
        cf_id tid;
        if (strlen(id) != 64 || cf_hex_decode(tid.b, 32, id)) {
            rc = cf_error_set(CF_EINVAL, 0, "'%s' is not a full 64-digit id", id);
        } else if (what[0] == 't') {
            cf_tree t;
            if ((rc = cf_repo__load_tree(&t, repo, &tid)) == 0) {
                *out = dump_json(tree_json(&t));
                cf_tree__free(&t);
            }
        } else {
            char path[80];
            uint8_t *data = NULL;
            size_t len = 0;
            cf_pack__path(path, &tid);
            if ((rc = cf_storage_get(repo->st, path, 0, 0, &data, &len)) == 0) {
                cf_pack_entry *es = NULL;
                size_t n = 0;
                if ((rc = cf_pack__read_header(&es, &n, repo, data, len, path)) == 0) {
                    json_t *arr = json_array();
                    for (size_t i = 0; i < n; i++) {
                        char hex[65];
                        cf_hex_encode(hex, es[i].id.b, 32);
                        json_array_append_new(arr, json_pack("{s:s, s:i, s:i, s:I, s:I, s:I}", "id", hex,
                                                             "type", es[i].type, "compression", es[i].comp,
                                                             "offset", (json_int_t)es[i].offset,
                                                             "length", (json_int_t)es[i].length,
                                                             "raw_length", (json_int_t)es[i].raw_len));
                    }
                    *out = dump_json(json_pack("{s:s, s:I, s:o}", "pack", id, "size", (json_int_t)len, "blobs", arr));
                }
                free(es);
                free(data);
            }
        }
    } else {
        rc = cf_error_set(CF_EINVAL, 0, "unknown object kind '%s' (config, snapshot, index, tree, pack)", what);
    }
    if (rc == 0 && !*out)
        rc = cf_error_set(CF_ENOMEM, 0, "unable to format '%s'", what);
    cf_buf_free(&b);
    return rc;
}
