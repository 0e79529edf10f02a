/*
 * expire.c - WAL retention: remove archived WAL files that no kept base backup of a cluster
 * needs (everything before the start of the oldest one), keeping timeline history files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/postgres/pg.h"

typedef struct {
    char *name;     /* archive object name, with the cluster prefix */
    uint64_t order; /* segment number, for removing oldest first */
    cf_pg__wal_kind kind;
} expire_item;

typedef struct {
    const char *prefix; /* "cluster/" or "" */
    size_t plen;
    uint32_t segsize;
    uint64_t keep_lsn;  /* the oldest kept base backup's start */
    expire_item *items;
    size_t n, cap;
    cf_pg_expire_result *res;
    int rc;
} expire_ctx;

static int add_item(expire_ctx *c, const char *name, uint64_t order, cf_pg__wal_kind kind)
{
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 256;
        expire_item *p = cf_realloc(c->items, ncap * sizeof(*p));
        if (!p)
            return CF_ENOMEM;
        c->items = p;
        c->cap = ncap;
    }
    char *s = cf_strdup(name);
    if (!s)
        return CF_ENOMEM;
    c->items[c->n].name = s;
    c->items[c->n].order = order;
    c->items[c->n++].kind = kind;
    return 0;
}

static int scan_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    expire_ctx *c = payload;
    if (c->plen ? strncmp(name, c->prefix, c->plen) != 0 : strchr(name, '/') != NULL)
        return 0;
    cf_pg__wal_name w;
    cf_pg__wal_kind kind = cf_pg__wal_parse(&w, name + c->plen);
    uint64_t segno = 0;
    bool old = false;
    switch (kind) {
    case CF_PG_WAL_SEGMENT:
    case CF_PG_WAL_PARTIAL:
        /* wholly before the oldest kept start: segment end <= keep_lsn */
        segno = cf_pg__segno(&w, c->segsize);
        old = segno < c->keep_lsn / c->segsize;
        break;
    case CF_PG_WAL_BACKUP:
        /* the history file of a base backup that started before the oldest kept one */
        segno = cf_pg__segno(&w, c->segsize);
        old = segno * c->segsize + w.offset < c->keep_lsn;
        break;
    case CF_PG_WAL_HISTORY:
        c->res->history_kept++; /* timeline history files are small and always kept */
        return 0;
    default:
        c->res->other_kept++;
        return 0;
    }
    if (!old) {
        if (kind == CF_PG_WAL_SEGMENT)
            c->res->segments_kept++;
        return 0;
    }
    if ((c->rc = add_item(c, name, segno, kind)))
        return c->rc;
    return 0;
}

static int cmp_item(const void *a, const void *b)
{
    const expire_item *x = a, *y = b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return strcmp(x->name, y->name);
}

int cf_pg_expire(cf_repo *repo, const cf_pg_expire_opts *o, cf_pg_expire_result *out)
{
    cf_pg_expire_result res;
    cf_snapshot **all = NULL;
    size_t n = 0;
    expire_ctx c;
    char prefix[80] = "";
    bool locked = false;
    int rc = 0;
    memset(&res, 0, sizeof(res));
    memset(&c, 0, sizeof(c));
    const char *cluster = o->cluster && *o->cluster ? o->cluster : NULL;
    if (cluster) {
        if (!cf_pg__valid_cluster(cluster)) {
            rc = cf_error_set(CF_EINVAL, 0, "invalid cluster name '%s'", cluster);
            goto out;
        }
        snprintf(prefix, sizeof(prefix), "%s/", cluster);
    }
    /* no snapshot may be forgotten or added while deciding and removing */
    if (!o->dry_run) {
        if (cf_repo_role(repo) != CF_ROLE_ADMIN) {
            rc = cf_error_set(CF_EPERM, 0, "expiring archived WAL needs an admin key");
            cf_error_hint("open the repository with an admin key (an append-only key cannot "
                          "remove anything)");
            goto out;
        }
        if ((rc = cf_repo_lock(repo, CF_LOCK_EXCLUSIVE)))
            goto out;
        locked = true;
    }
    size_t warn0 = cf_repo_warning_count(repo);
    if ((rc = cf_snapshot_list(&all, &n, repo, NULL)))
        goto out;
    if (cf_repo_warning_count(repo) != warn0) {
        /* an unreadable snapshot may be a base backup whose WAL must stay */
        rc = cf_error_set(CF_ECORRUPT, 0, "not expiring WAL: a snapshot document is unreadable "
                                          "(%s)",
                          cf_repo_warning(repo, warn0));
        cf_error_hint("run 'coffer check'; repair or forget the damaged snapshot first");
        goto out;
    }
    bool have = false;
    uint64_t keep_lsn = 0;
    uint32_t ss = 0;
    for (size_t i = 0; i < n; i++) {
        cf_pg_base_info in;
        int irc = cf_pg_base_info_get(&in, all[i]);
        if (irc == CF_ENOTFOUND) {
            cf_error_clear();
            continue; /* not a base backup */
        }
        if (irc) {
            rc = irc; /* a base backup whose WAL range is unknown: remove nothing */
            goto out;
        }
        if (strcmp(in.cluster, cluster ? cluster : "") != 0)
            continue;
        if (ss && in.wal_segment_size != ss) {
            rc = cf_error_set(CF_EUNSUPPORTED, 0,
                              "not expiring WAL: base backups %.8s and %.8s have different WAL "
                              "segment sizes (%u, %u bytes)",
                              res.oldest_backup_id, in.snapshot_id, ss, in.wal_segment_size);
            goto out;
        }
        ss = in.wal_segment_size;
        res.backups++;
        if (!have || in.start_lsn < keep_lsn) {
            keep_lsn = in.start_lsn;
            snprintf(res.oldest_backup_id, sizeof(res.oldest_backup_id), "%s", in.snapshot_id);
            snprintf(res.keep_from, sizeof(res.keep_from), "%s", in.start_wal);
            res.keep_lsn = in.start_lsn;
            have = true;
        }
    }
    if (!have) {
        /* without a base backup, no WAL can be told to be unneeded */
        rc = cf_error_set(CF_ENOTFOUND, 0, "no PostgreSQL base backup%s%s in the repository: "
                                           "not expiring any WAL",
                          cluster ? " of cluster " : "", cluster ? cluster : "");
        cf_error_hint("take one with 'coffer pg backup' first");
        goto out;
    }
    c.prefix = prefix;
    c.plen = strlen(prefix);
    c.segsize = ss;
    c.keep_lsn = keep_lsn;
    c.res = &res;
    if ((rc = cf_archive_list(repo, CF_PG_ARCHIVE_KIND, scan_cb, &c)) || (rc = c.rc))
        goto out;
    if (c.n > 1)
        qsort(c.items, c.n, sizeof(*c.items), cmp_item);
    for (size_t i = 0; i < c.n; i++) {
        const expire_item *it = &c.items[i];
        if (!o->dry_run && (rc = cf_archive_remove(repo, CF_PG_ARCHIVE_KIND, it->name))) {
            if (rc == CF_ENOTFOUND) {
                cf_error_clear(); /* removed meanwhile */
                rc = 0;
                continue;
            }
            rc = cf_error_wrap(rc, "unable to remove archived WAL file '%s'", it->name);
            goto out;
        }
        switch (it->kind) {
        case CF_PG_WAL_SEGMENT: res.segments_removed++; break;
        case CF_PG_WAL_PARTIAL: res.partial_removed++; break;
        default: res.backup_files_removed++; break;
        }
        if (o->on_removed)
            o->on_removed(it->name + c.plen, o->payload);
    }
out:
    if (locked)
        cf_repo_unlock(repo);
    if (out)
        *out = res;
    for (size_t i = 0; i < c.n; i++)
        free(c.items[i].name);
    free(c.items);
    cf_snapshot_list_free(all, n);
    return rc;
}
