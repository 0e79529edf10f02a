/*
 * replicate.c - continuous shipping of an SQLite WAL: each step reads the frames committed
 * since the last shipped one (under the write lock for an instant, so the end is stable)
 * and stores them as one archive object; base copies start generations.
 *
 * Continuity argument (see docs/databases/sqlite.md): between steps, connection `rd` holds a
 * read transaction begun while the write lock was held and everything up to the end of the
 * WAL had been collected. While it is held, no checkpoint can back-fill past its mark, so
 * the WAL cannot be restarted (overwritten) with frames not yet collected. A restart seen
 * between two steps of one process therefore follows frames already shipped: it continues
 * the generation as a new "epoch". Anything else that changed the WAL (another process,
 * a restart seen after resuming) starts a new generation with a fresh base copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source/sqlite/sqlite_src.h"

#define MAX_SHIP ((size_t)1 << 30) /* frames kept in memory for one object */
#define CHECKPOINT_BYTES ((uint64_t)4 << 20) /* checkpoint a WAL longer than this */

struct cf_sqlite_replicator {
    cf_repo *repo;
    cf_sqlite_replicate_opts o;
    char *abs, *wal_path;
    char db_id[96];
    sqlite3 *rd, *wr;
    bool rd_txn;
    /* the generation being continued */
    bool have_gen;
    bool in_process;         /* rd has been held since the state was last verified */
    char generation[17];
    char base_id[65];
    int64_t base_time_ns;
    uint64_t seq;            /* last sequence stored */
    uint32_t epoch;
    bool hdr_present;        /* the WAL had a header at the last shipped position */
    uint32_t salt1, salt2, ckpt_seq;
    uint32_t last_frame;
    uint32_t cksum[2];
    int64_t last_step_ns;
    char need_new[128];      /* non-empty: the next step starts a new generation */
};

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

static int rd_refresh(cf_sqlite_replicator *r)
{
    if (r->rd_txn) {
        sqlite3_exec(r->rd, "commit", NULL, NULL, NULL);
        r->rd_txn = false;
    }
    int rc = cf_sq__exec(r->rd, "begin; select count(*) from sqlite_master;", r->abs);
    if (rc == 0)
        r->rd_txn = true;
    return rc;
}

/* Take the write lock: no commit can happen until wr_unlock. CF_ELOCKED when busy. */
static int wr_lock(cf_sqlite_replicator *r)
{
    int s = sqlite3_exec(r->wr, "begin immediate", NULL, NULL, NULL);
    if (s == SQLITE_OK)
        return 0;
    return cf_sq__err(r->wr, s, "take the write lock of", r->abs);
}

static void wr_unlock(cf_sqlite_replicator *r)
{
    sqlite3_exec(r->wr, "rollback", NULL, NULL, NULL);
}

static int open_wal(int *fd, const char *path)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0 && errno != ENOENT)
        return cf_error_set(CF_EIO, errno, "unable to open WAL file '%s': %s", path,
                            strerror(errno));
    return 0;
}

/* The latest replicated generation of this database in the repository, if any. */
static int resume(cf_sqlite_replicator *r)
{
    cf_snapshot **snaps = NULL;
    cf_sqlite_base_info *infos = NULL;
    size_t n = 0;
    uint64_t *seqs = NULL;
    size_t nseq = 0;
    uint8_t *owned = NULL;
    int rc = cf_sq__bases(&snaps, &infos, &n, r->repo, r->db_id);
    if (rc)
        return rc;
    size_t i = n;
    while (i > 0 && !infos[i - 1].has_position)
        i--;
    if (i == 0)
        goto out;
    const cf_sqlite_base_info *b = &infos[i - 1];
    /* a one-off copy newer than the generation does not stop it: it has frames of its own */
    if ((rc = cf_sq__sequences(&seqs, &nseq, r->repo, r->db_id, b->generation)))
        goto out;
    snprintf(r->generation, sizeof(r->generation), "%s", b->generation);
    snprintf(r->base_id, sizeof(r->base_id), "%s", b->snapshot_id);
    r->base_time_ns = b->time_ns;
    r->last_step_ns = b->time_ns;
    if (nseq == 0) {
        r->seq = 0;
        r->epoch = 0;
        r->hdr_present = b->salt1 || b->salt2 || b->frame;
        r->salt1 = b->salt1;
        r->salt2 = b->salt2;
        r->ckpt_seq = b->ckpt_seq;
        r->last_frame = b->frame;
        r->cksum[0] = b->cksum1;
        r->cksum[1] = b->cksum2;
    } else {
        cf_sq__obj ob;
        uint64_t last = seqs[nseq - 1];
        if (nseq != last) {
            snprintf(r->need_new, sizeof(r->need_new), "generation %s has gaps in its "
                     "sequence numbers", b->generation);
        } else if ((rc = cf_sq__obj_get(&ob, &owned, r->repo, r->db_id, b->generation, last))) {
            /* an unreadable last object: start afresh rather than build on it */
            cf_sq__msg(r->o.on_message, r->o.payload, "warning: %s", cf_error_last()->message);
            snprintf(r->need_new, sizeof(r->need_new), "the last shipped object is unreadable");
            rc = 0;
        } else {
            r->seq = last;
            r->epoch = ob.epoch;
            r->hdr_present = true;
            r->salt1 = ob.salt1;
            r->salt2 = ob.salt2;
            r->ckpt_seq = ob.ckpt_seq;
            r->last_frame = ob.last;
            r->cksum[0] = ob.cksum_out[0];
            r->cksum[1] = ob.cksum_out[1];
            r->last_step_ns = ob.time_ns;
        }
    }
    r->have_gen = true;
    r->in_process = false;
out:
    free(owned);
    free(seqs);
    free(infos);
    cf_snapshot_list_free(snaps, n);
    return rc;
}

int cf_sqlite_replicator_open(cf_sqlite_replicator **out, cf_repo *repo,
                              const cf_sqlite_replicate_opts *o)
{
    *out = NULL;
    if (!o->db_path || !*o->db_path)
        return cf_error_set(CF_EINVAL, 0, "no SQLite database given");
    struct stat st;
    if (stat(o->db_path, &st) != 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to replicate SQLite "
                            "database '%s': %s", o->db_path, strerror(errno));
    cf_sqlite_replicator *r = cf_calloc(1, sizeof(*r));
    if (!r)
        return CF_ENOMEM;
    int rc = 0;
    r->repo = repo;
    r->o = *o;
    if (r->o.busy_timeout <= 0)
        r->o.busy_timeout = 5;
    if (r->o.snapshot_every == 0)
        r->o.snapshot_every = 3600;
    if (!(r->abs = cf_sq__abspath(o->db_path)) || !(r->wal_path = cf_asprintf("%s-wal", r->abs))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (o->db_id)
        snprintf(r->db_id, sizeof(r->db_id), "%s", o->db_id);
    else if ((rc = cf_sqlite_db_id(r->db_id, r->abs, o->host)))
        goto out;
    if ((rc = cf_sq__open(&r->wr, r->abs, SQLITE_OPEN_READWRITE, r->o.busy_timeout)) ||
        (rc = cf_sq__open(&r->rd, r->abs, SQLITE_OPEN_READWRITE, r->o.busy_timeout)))
        goto out;
    /* closing these never checkpoints nor deletes the WAL: the next run may continue it */
    sqlite3_db_config(r->wr, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    sqlite3_db_config(r->rd, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    {
        sqlite3_stmt *stm = NULL;
        bool wal = false;
        if (sqlite3_prepare_v2(r->rd, "pragma journal_mode", -1, &stm, NULL) == SQLITE_OK &&
            sqlite3_step(stm) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(stm, 0);
            wal = m && strcmp(m, "wal") == 0;
        }
        sqlite3_finalize(stm);
        if (!wal) {
            rc = cf_error_set(CF_EUNSUPPORTED, 0, "SQLite database '%s' is not in WAL mode",
                              r->abs);
            cf_error_hint("switch it once with: sqlite3 '%s' 'pragma journal_mode=wal'", r->abs);
            goto out;
        }
    }
    if ((rc = rd_refresh(r)))
        goto out;
    if ((rc = resume(r)))
        goto out;
out:
    if (rc) {
        cf_error_saved es;
        cf_error_save(&es);
        cf_sqlite_replicator_close(r);
        cf_error_restore(&es);
        return rc;
    }
    *out = r;
    return 0;
}

void cf_sqlite_replicator_close(cf_sqlite_replicator *r)
{
    if (!r)
        return;
    if (r->rd_txn)
        sqlite3_exec(r->rd, "commit", NULL, NULL, NULL);
    sqlite3_close(r->rd);
    sqlite3_close(r->wr);
    free(r->abs);
    free(r->wal_path);
    free(r);
}

/* A base copy consistent with the current end of the WAL: a new generation. */
static int new_generation(cf_sqlite_replicator *r, const char *reason, cf_sqlite_step_result *res)
{
    cf_sqlite_base_info info;
    char *tmp = NULL;
    int fd = -1, rc;
    bool locked = false;
    cf_sq__scan sc;
    memset(&sc, 0, sizeof(sc));
    memset(&info, 0, sizeof(info));
    snprintf(info.db_path, sizeof(info.db_path), "%s", r->abs);
    snprintf(info.db_id, sizeof(info.db_id), "%s", r->db_id);
    info.wal = true;
    info.has_position = true;
    if (!(tmp = cf_sq__tmpfile(r->o.tmp_dir, "sqlite"))) {
        rc = cf_error_last()->code ? cf_error_last()->code : CF_ENOMEM;
        goto out;
    }
    if ((rc = wr_lock(r)))
        goto out;
    locked = true;
    if ((rc = open_wal(&fd, r->wal_path)))
        goto out;
    cf_sq__walhdr h;
    bool present = false;
    if (fd >= 0 && (rc = cf_sq__walhdr_read(&h, &present, fd, r->wal_path)))
        goto out;
    if (present) {
        uint32_t ck[2] = {h.cksum1, h.cksum2};
        if ((rc = cf_sq__wal_scan(&sc, fd, r->wal_path, &h, 0, ck, 0)))
            goto out;
        info.salt1 = h.salt1;
        info.salt2 = h.salt2;
        info.ckpt_seq = h.ckpt_seq;
        info.frame = sc.last;
        info.cksum1 = sc.cksum_out[0];
        info.cksum2 = sc.cksum_out[1];
        cf_buf_free(&sc.frames);
    }
    /* the reader's snapshot is exactly this position: nobody can commit meanwhile */
    if ((rc = rd_refresh(r)))
        goto out;
    info.time_ns = cf_now_ns();
    wr_unlock(r);
    locked = false;
    double t0 = cf_mono_seconds();
    if ((rc = cf_sq__copy(r->rd, tmp, r->abs, r->o.busy_timeout, &info.pages, &info.page_size)))
        goto out;
    double copy_s = cf_mono_seconds() - t0;
    if ((rc = cf_sq__integrity(tmp)))
        goto out;
    cf_sq__new_generation(info.generation);
    cf_backup_stats bst;
    if ((rc = cf_sq__store_base(r->repo, tmp, &info, r->o.tags, r->o.host, r->o.threads, &bst)))
        goto out;
    r->have_gen = true;
    r->in_process = true;
    memcpy(r->generation, info.generation, sizeof(r->generation));
    memcpy(r->base_id, info.snapshot_id, sizeof(r->base_id));
    r->base_time_ns = info.time_ns;
    r->last_step_ns = info.time_ns;
    r->seq = 0;
    r->epoch = 0;
    r->hdr_present = present;
    r->salt1 = info.salt1;
    r->salt2 = info.salt2;
    r->ckpt_seq = info.ckpt_seq;
    r->last_frame = info.frame;
    r->cksum[0] = info.cksum1;
    r->cksum[1] = info.cksum2;
    r->need_new[0] = '\0';
    res->new_generation = true;
    snprintf(res->reason, sizeof(res->reason), "%s", reason);
    cf_sq__msg(r->o.on_message, r->o.payload,
               "generation %s: base copy %.8s (%u pages, copied in %.3f s): %s", info.generation,
               info.snapshot_id, info.pages, copy_s, reason);
out:
    if (locked)
        wr_unlock(r);
    if (fd >= 0)
        close(fd);
    if (tmp) {
        cf_error_saved es;
        cf_error_save(&es);
        remove_db_files(tmp);
        cf_error_restore(&es);
        free(tmp);
    }
    return rc;
}

int cf_sqlite_replicator_step(cf_sqlite_replicator *r, cf_sqlite_step_result *out)
{
    cf_sqlite_step_result res;
    cf_sq__scan sc;
    cf_buf obj;
    int fd = -1, rc = 0;
    bool locked = false;
    memset(&res, 0, sizeof(res));
    memset(&sc, 0, sizeof(sc));
    cf_buf_init(&obj, 0);
    int64_t now = cf_now_ns();
    const char *why = NULL;
    if (!r->have_gen)
        why = "no generation of this database yet";
    else if (r->need_new[0])
        why = r->need_new;
    else if (r->o.snapshot_every > 0 &&
             (double)(now - r->base_time_ns) / 1e9 >= r->o.snapshot_every)
        why = "the base copy is older than --snapshot-every";
    if (why) {
        char reason[128];
        snprintf(reason, sizeof(reason), "%s", why);
        rc = new_generation(r, reason, &res);
        goto out;
    }
    if ((rc = wr_lock(r))) {
        if (rc == CF_ELOCKED) {
            cf_sq__msg(r->o.on_message, r->o.payload, "warning: %s; trying again at the next "
                       "step", cf_error_last()->message);
            rc = 0;
        }
        goto out;
    }
    locked = true;
    if ((rc = open_wal(&fd, r->wal_path)))
        goto out;
    cf_sq__walhdr h;
    bool present = false;
    if (fd >= 0 && (rc = cf_sq__walhdr_read(&h, &present, fd, r->wal_path)))
        goto out;
    bool same = present && r->hdr_present && h.salt1 == r->salt1 && h.salt2 == r->salt2;
    uint32_t after = 0, ck[2] = {0, 0};
    bool reset = false;
    if (!present) {
        if (!r->in_process) {
            snprintf(r->need_new, sizeof(r->need_new), "the WAL was checkpointed away since "
                     "the last run");
        }
        /* in this process: emptied only after everything was shipped */
    } else if (same) {
        uint32_t fck[2];
        if (!r->in_process && r->last_frame > 0 &&
            (!cf_sq__frame_cksum(fd, &h, r->last_frame, fck) || fck[0] != r->cksum[0] ||
             fck[1] != r->cksum[1])) {
            snprintf(r->need_new, sizeof(r->need_new), "the WAL no longer holds the last "
                     "shipped frame");
        } else {
            after = r->last_frame;
            ck[0] = r->cksum[0];
            ck[1] = r->cksum[1];
        }
    } else if (r->in_process && (!r->hdr_present || h.salt1 == r->salt1 + 1)) {
        reset = true; /* restarted after everything was shipped: a new epoch */
        ck[0] = h.cksum1;
        ck[1] = h.cksum2;
    } else {
        snprintf(r->need_new, sizeof(r->need_new), "the WAL was reset%s", r->in_process ?
                 " by another process" : " since the last run");
    }
    if (present && !r->need_new[0] &&
        (rc = cf_sq__wal_scan(&sc, fd, r->wal_path, &h, after, ck, MAX_SHIP)))
        goto out;
    /* a long WAL: back-fill it now, while nothing can commit and everything is collected,
     * so the next writer may restart it (a new epoch of this generation) */
    uint32_t end = sc.ncommits ? sc.last : after;
    bool checkpointed = false;
    if (present && !r->need_new[0] &&
        (uint64_t)end * (CF_SQ_FRAME_HDR + h.page_size) >= CHECKPOINT_BYTES) {
        if (r->rd_txn) {
            sqlite3_exec(r->rd, "commit", NULL, NULL, NULL);
            r->rd_txn = false;
        }
        int nlog = 0, nckpt = 0;
        int s = sqlite3_wal_checkpoint_v2(r->rd, "main", SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
        checkpointed = s == SQLITE_OK && nlog == nckpt;
        if (s != SQLITE_OK)
            cf_sq__msg(r->o.on_message, r->o.payload, "warning: checkpoint of '%s' failed: %s",
                       r->abs, sqlite3_errmsg(r->rd));
    }
    /* hold a read transaction at the new end until the next step */
    if ((rc = rd_refresh(r)))
        goto out;
    int64_t t_obs = cf_now_ns();
    wr_unlock(r);
    locked = false;
    if (r->need_new[0]) {
        char reason[128];
        snprintf(reason, sizeof(reason), "%s", r->need_new);
        rc = new_generation(r, reason, &res);
        goto out;
    }
    r->in_process = true;
    if (sc.ncommits == 0) {
        if (reset && sc.last == 0) {
            /* a restarted WAL with nothing committed yet: track the new header */
        }
        goto done;
    }
    cf_sq__obj ob;
    memset(&ob, 0, sizeof(ob));
    ob.page_size = h.page_size;
    memcpy(ob.generation, r->generation, 16);
    memcpy(ob.base_id, r->base_id, 64);
    ob.sequence = r->seq + 1;
    ob.epoch = r->epoch + (reset ? 1 : 0);
    memcpy(ob.walhdr, h.raw, CF_SQ_WAL_HDR);
    ob.first = sc.first;
    ob.last = sc.last;
    ob.cksum_in[0] = sc.cksum_in[0];
    ob.cksum_in[1] = sc.cksum_in[1];
    ob.cksum_out[0] = sc.cksum_out[0];
    ob.cksum_out[1] = sc.cksum_out[1];
    ob.db_pages = sc.db_pages;
    ob.nframes = sc.nframes;
    ob.ncommits = sc.ncommits;
    ob.prev_time_ns = r->last_step_ns;
    ob.time_ns = t_obs;
    if ((rc = cf_sq__obj_encode(&obj, &ob, sc.frames.data, sc.frames.len)))
        goto out;
    char name[256];
    snprintf(name, sizeof(name), "%s/%s/" CF_SQ_SEQ_FMT, r->db_id, r->generation,
             (unsigned long long)ob.sequence);
    if ((rc = cf_archive_put(r->repo, CF_SQLITE_ARCHIVE_KIND, name, obj.data, obj.len))) {
        /* the frames may be gone from the WAL by the next step: start afresh then */
        snprintf(r->need_new, sizeof(r->need_new), "storing frames failed");
        rc = cf_error_wrap(rc, "unable to ship WAL frames of '%s'", r->abs);
        goto out;
    }
    res.objects = 1;
    res.frames = sc.nframes;
    res.commits = sc.ncommits;
    res.bytes = obj.len;
    res.lag_seconds = (double)(cf_now_ns() - t_obs) / 1e9;
    r->seq = ob.sequence;
    r->last_step_ns = t_obs;
    cf_sq__msg(r->o.on_message, r->o.payload, "shipped %s: frames %u-%u, %u commits, %zu bytes%s",
               name, sc.first, sc.last, sc.ncommits, obj.len,
               checkpointed ? " (WAL checkpointed)" : "");
done:
    if (present) {
        if (reset)
            r->epoch++;
        r->hdr_present = true;
        r->salt1 = h.salt1;
        r->salt2 = h.salt2;
        r->ckpt_seq = h.ckpt_seq;
        if (sc.ncommits) {
            r->last_frame = sc.last;
            r->cksum[0] = sc.cksum_out[0];
            r->cksum[1] = sc.cksum_out[1];
        } else if (reset) {
            r->last_frame = 0;
            r->cksum[0] = h.cksum1;
            r->cksum[1] = h.cksum2;
        }
    }
out:
    if (locked)
        wr_unlock(r);
    if (fd >= 0)
        close(fd);
    cf_buf_free(&sc.frames);
    cf_buf_free(&obj);
    if (rc && !r->need_new[0])
        snprintf(r->need_new, sizeof(r->need_new), "the previous step failed");
    snprintf(res.generation, sizeof(res.generation), "%s", r->generation);
    snprintf(res.base_id, sizeof(res.base_id), "%s", r->base_id);
    res.sequence = r->seq;
    if (out)
        *out = res;
    return rc;
}
