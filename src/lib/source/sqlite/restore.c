/*
 * restore.c - point-in-time restore of an SQLite database: a base copy written beside the
 * target, the shipped frames of its generation committed up to the target time applied in
 * order (each page at (page_no-1)*page_size, the file cut to each commit's size, as a
 * checkpoint does), PRAGMA integrity_check, then renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source/sqlite/sqlite_src.h"

typedef struct {
    cf_sq__obj o;
    uint8_t *owned;
} obj_ent;

typedef struct {
    size_t base;             /* index into the bases */
    obj_ent *objs;
    size_t n;
    int64_t reach_ns;        /* the last commit time applied */
} plan;

static void plan_free(plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->objs[i].owned);
    free(p->objs);
    memset(p, 0, sizeof(*p));
}

/* The objects of a base's generation committed at or before t, checked for continuity. */
static int make_plan(plan *p, cf_repo *repo, const cf_sqlite_base_info *b, size_t bi, int64_t t,
                     bool no_frames)
{
    uint64_t *seqs = NULL;
    size_t nseq = 0;
    int rc = 0;
    memset(p, 0, sizeof(*p));
    p->base = bi;
    p->reach_ns = b->time_ns;
    if (no_frames || !b->has_position)
        return 0;
    if ((rc = cf_sq__sequences(&seqs, &nseq, repo, b->db_id, b->generation)))
        return rc;
    if (nseq && !(p->objs = cf_calloc(nseq, sizeof(*p->objs)))) {
        free(seqs);
        return CF_ENOMEM;
    }
    /* continuity from the base's position */
    bool hdr = b->salt1 || b->salt2 || b->frame;
    uint32_t epoch = 0, salt1 = b->salt1, salt2 = b->salt2, last = b->frame;
    uint32_t ck[2] = {b->cksum1, b->cksum2};
    for (size_t i = 0; i < nseq; i++) {
        char name[256];
        snprintf(name, sizeof(name), "%s/%s/" CF_SQ_SEQ_FMT, b->db_id, b->generation,
                 (unsigned long long)(i + 1));
        if (seqs[i] != i + 1) {
            rc = cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are missing from the "
                              "archive", name);
            break;
        }
        obj_ent *e = &p->objs[p->n];
        if ((rc = cf_sq__obj_get(&e->o, &e->owned, repo, b->db_id, b->generation, i + 1)))
            break;
        if (e->o.time_ns > t) {
            free(e->owned);
            e->owned = NULL;
            break;
        }
        p->n++;
        const cf_sq__obj *o = &e->o;
        bool ok;
        if (o->epoch == epoch && hdr)
            ok = o->salt1 == salt1 && o->salt2 == salt2 && o->first == last + 1 &&
                 o->cksum_in[0] == ck[0] && o->cksum_in[1] == ck[1];
        else /* the WAL restarted; restarts with nothing committed ship no object */
            ok = o->epoch > epoch && o->first == 1;
        if (!ok || memcmp(o->base_id, b->snapshot_id, 64) != 0 ||
            (b->page_size && o->page_size != b->page_size)) {
            rc = cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' do not follow the "
                              "frames before them (base %.8s)", name, b->snapshot_id);
            break;
        }
        hdr = true;
        epoch = o->epoch;
        salt1 = o->salt1;
        salt2 = o->salt2;
        last = o->last;
        ck[0] = o->cksum_out[0];
        ck[1] = o->cksum_out[1];
        p->reach_ns = o->time_ns;
    }
    free(seqs);
    if (rc)
        plan_free(p);
    return rc;
}

static int pwrite_full(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, p + done, n - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -errno;
        done += (size_t)w;
    }
    return 0;
}

static int apply(int fd, const char *path, const cf_sq__obj *o, uint64_t *frames,
                 uint64_t *commits, uint32_t *pages)
{
    size_t fsz = CF_SQ_FRAME_HDR + (size_t)o->page_size;
    for (uint32_t i = 0; i < o->nframes; i++) {
        const uint8_t *f = o->frames + (size_t)i * fsz;
        uint32_t pgno = cf_sq__be32(f), dbsize = cf_sq__be32(f + 4);
        int e = pwrite_full(fd, f + CF_SQ_FRAME_HDR, o->page_size,
                            (uint64_t)(pgno - 1) * o->page_size);
        if (e)
            return cf_error_set(cf_error_from_errno(-e), -e, "unable to write '%s': %s", path,
                                strerror(-e));
        (*frames)++;
        if (dbsize) {
            if (ftruncate(fd, (off_t)((uint64_t)dbsize * o->page_size)) != 0)
                return cf_error_set(cf_error_from_errno(errno), errno, "unable to truncate "
                                    "'%s': %s", path, strerror(errno));
            (*commits)++;
            *pages = dbsize;
        }
    }
    return 0;
}

static void remove_db_files(const char *path)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        char *p = cf_asprintf("%s%s", path, sfx[i]);
        if (p)
            unlink(p);
        free(p);
    }
}

static bool exists(const char *path, const char *sfx)
{
    char *p = cf_asprintf("%s%s", path, sfx);
    struct stat st;
    bool e = p && lstat(p, &st) == 0;
    free(p);
    return e;
}

int cf_sqlite_restore(cf_repo *repo, const cf_sqlite_restore_opts *o,
                      cf_sqlite_restore_result *out)
{
    cf_sqlite_restore_result res;
    cf_snapshot **snaps = NULL, *chosen_snap = NULL;
    cf_sqlite_base_info *infos = NULL;
    size_t n = 0;
    plan pa, pb, *use = NULL;
    char db_id[96] = "", *tmp = NULL;
    int fd = -1, rc = 0;
    double t0 = cf_mono_seconds();
    int64_t t = o->time_ns ? o->time_ns : INT64_MAX;
    memset(&res, 0, sizeof(res));
    memset(&pa, 0, sizeof(pa));
    memset(&pb, 0, sizeof(pb));
    if (!o->target || !*o->target)
        return cf_error_set(CF_EINVAL, 0, "no target file to restore into");
    if (!o->overwrite) {
        if (exists(o->target, ""))
            return cf_error_set(CF_EEXISTS, 0, "restore target '%s' exists", o->target);
        if (exists(o->target, "-wal") || exists(o->target, "-journal"))
            return cf_error_set(CF_EEXISTS, 0, "a journal of '%s' exists (SQLite would apply "
                                "it to the restored database)", o->target);
    }
    if (o->snapshot) {
        cf_sqlite_base_info bi;
        if ((rc = cf_snapshot_find(&chosen_snap, repo, o->snapshot, NULL)) ||
            (rc = cf_sqlite_base_info_get(&bi, chosen_snap)))
            goto out;
        snprintf(db_id, sizeof(db_id), "%s", bi.db_id);
    } else if (o->db_id) {
        snprintf(db_id, sizeof(db_id), "%s", o->db_id);
    } else if (o->db_path) {
        if ((rc = cf_sqlite_db_id(db_id, o->db_path, o->host)))
            goto out;
    }
    if ((rc = cf_sq__bases(&snaps, &infos, &n, repo, db_id[0] ? db_id : NULL)))
        goto out;
    if (!db_id[0]) {
        /* the database of the latest SQLite backup */
        if (n == 0) {
            rc = cf_error_set(CF_ENOTFOUND, 0, "no SQLite backup in the repository");
            goto out;
        }
        snprintf(db_id, sizeof(db_id), "%s", infos[n - 1].db_id);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(infos[i].db_id, db_id) != 0) {
                cf_snapshot_free(snaps[i]);
                continue;
            }
            infos[k] = infos[i];
            snaps[k++] = snaps[i];
        }
        n = k;
    }
    if (o->snapshot) {
        size_t bi = n;
        for (size_t i = 0; i < n; i++)
            if (strcmp(infos[i].snapshot_id, cf_snapshot_id(chosen_snap)) == 0)
                bi = i;
        if (bi == n) {
            rc = cf_error_set(CF_ENOTFOUND, 0, "snapshot %.8s is not an SQLite backup",
                              cf_snapshot_id(chosen_snap));
            goto out;
        }
        if ((rc = make_plan(&pa, repo, &infos[bi], bi, t, o->no_frames)))
            goto out;
        use = &pa;
    } else {
        /* the latest base at or before t, and the latest replicated one: the one whose
         * generation reaches furthest towards t wins */
        size_t latest = n, latest_rep = n;
        for (size_t i = 0; i < n; i++) {
            if (infos[i].time_ns > t)
                continue;
            latest = i;
            if (infos[i].has_position)
                latest_rep = i;
        }
        if (latest == n) {
            char when[40] = "the latest state";
            if (o->time_ns)
                cf_time_format(when, o->time_ns);
            rc = cf_error_set(CF_ENOTFOUND, 0, "no SQLite backup of '%s' at or before %s", db_id,
                              when);
            goto out;
        }
        if ((rc = make_plan(&pa, repo, &infos[latest], latest, t, o->no_frames)))
            goto out;
        use = &pa;
        if (latest_rep != n && latest_rep != latest) {
            if ((rc = make_plan(&pb, repo, &infos[latest_rep], latest_rep, t, o->no_frames)))
                goto out;
            if (pb.reach_ns > pa.reach_ns)
                use = &pb;
        }
    }
    const cf_sqlite_base_info *b = &infos[use->base];
    res.base = *b;
    cf_sq__msg(o->on_message, o->payload, "base copy %.8s of %s (generation %s), %zu shipped "
               "objects to apply", b->snapshot_id, b->db_id, b->generation, use->n);
    /* build beside the target, so the final rename is atomic */
    {
        char *abs = cf_sq__abspath(o->target);
        if (!abs) {
            rc = CF_ENOMEM;
            goto out;
        }
        tmp = cf_asprintf("%s.coffer-restore.XXXXXX", abs);
        free(abs);
        if (!tmp) {
            rc = CF_ENOMEM;
            goto out;
        }
        fd = mkstemp(tmp);
        if (fd < 0) {
            rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to create '%s': %s",
                              tmp, strerror(errno));
            free(tmp);
            tmp = NULL;
            goto out;
        }
    }
    const cf_snapshot *bs = snaps[use->base];
    const char *path = cf_snapshot_path_count(bs) ? cf_snapshot_path(bs, 0) : "/";
    if ((rc = cf_repo_lock(repo, CF_LOCK_READ)))
        goto out;
    rc = cf_dump(repo, bs, path, fd);
    cf_repo_unlock(repo);
    if (rc) {
        rc = cf_error_wrap(rc, "unable to restore base copy %.8s", b->snapshot_id);
        goto out;
    }
    res.pages = b->pages;
    res.restored_to_ns = b->time_ns;
    for (size_t i = 0; i < use->n; i++) {
        if ((rc = apply(fd, tmp, &use->objs[i].o, &res.frames, &res.commits, &res.pages)))
            goto out;
        res.objects++;
        res.restored_to_ns = use->objs[i].o.time_ns;
    }
    if (fsync(fd) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if ((rc = cf_sq__integrity(tmp))) {
        rc = cf_error_wrap(CF_ECORRUPT, "the restored database is damaged");
        goto out;
    }
    if (o->overwrite) {
        char *w = cf_asprintf("%s-wal", o->target), *s = cf_asprintf("%s-shm", o->target),
             *j = cf_asprintf("%s-journal", o->target);
        if (w)
            unlink(w);
        if (s)
            unlink(s);
        if (j)
            unlink(j);
        free(w);
        free(s);
        free(j);
    }
    if (rename(tmp, o->target) != 0) {
        rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to rename '%s' to '%s': %s",
                          tmp, o->target, strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL;
    res.seconds = cf_mono_seconds() - t0;
out:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        cf_error_saved es;
        cf_error_save(&es);
        remove_db_files(tmp);
        cf_error_restore(&es);
        free(tmp);
    }
    plan_free(&pa);
    plan_free(&pb);
    free(infos);
    cf_snapshot_list_free(snaps, n);
    cf_snapshot_free(chosen_snap);
    res.seconds = cf_mono_seconds() - t0;
    if (out)
        *out = res;
    return rc;
}
