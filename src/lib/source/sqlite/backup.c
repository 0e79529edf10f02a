/*
 * backup.c - a consistent copy of a live SQLite database (online backup API in one read
 * transaction, into a temporary file), checked with PRAGMA integrity_check, stored as a
 * snapshot of one file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source/sqlite/sqlite_src.h"

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

int cf_sqlite_backup(cf_repo *repo, const cf_sqlite_backup_opts *o, cf_sqlite_backup_result *out)
{
    cf_sqlite_backup_result res;
    sqlite3 *db = NULL;
    char *abs = NULL, *tmp = NULL;
    bool in_txn = false;
    double timeout = o->busy_timeout > 0 ? o->busy_timeout : 10;
    int rc = 0;
    memset(&res, 0, sizeof(res));
    if (!o->db_path || !*o->db_path)
        return cf_error_set(CF_EINVAL, 0, "no SQLite database given");
    struct stat st;
    if (stat(o->db_path, &st) != 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to back up SQLite "
                            "database '%s': %s", o->db_path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return cf_error_set(CF_EINVAL, 0, "'%s' is not a database file", o->db_path);
    if (!(abs = cf_sq__abspath(o->db_path)))
        return CF_ENOMEM;
    cf_sqlite_base_info *info = &res.info;
    snprintf(info->db_path, sizeof(info->db_path), "%s", abs);
    if (o->db_id)
        snprintf(info->db_id, sizeof(info->db_id), "%s", o->db_id);
    else if ((rc = cf_sqlite_db_id(info->db_id, abs, o->host)))
        goto out;
    /* read-write when allowed (a WAL database's readers need its -shm), else read-only */
    if (cf_sq__open(&db, abs, SQLITE_OPEN_READWRITE, timeout) != 0 &&
        (rc = cf_sq__open(&db, abs, SQLITE_OPEN_READONLY, timeout)))
        goto out;
    /* one read transaction: the copy is the database as of its start */
    if ((rc = cf_sq__exec(db, "begin; select count(*) from sqlite_master;", abs)))
        goto out;
    in_txn = true;
    info->time_ns = cf_now_ns();
    {
        sqlite3_stmt *stm = NULL;
        if (sqlite3_prepare_v2(db, "pragma journal_mode", -1, &stm, NULL) == SQLITE_OK &&
            sqlite3_step(stm) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(stm, 0);
            info->wal = m && strcmp(m, "wal") == 0;
        }
        sqlite3_finalize(stm);
    }
    if (!(tmp = cf_sq__tmpfile(o->tmp_dir, "sqlite"))) {
        rc = cf_error_last()->code ? cf_error_last()->code : CF_ENOMEM;
        goto out;
    }
    double t0 = cf_mono_seconds();
    if ((rc = cf_sq__copy(db, tmp, abs, timeout, &info->pages, &info->page_size)))
        goto out;
    res.copy_seconds = cf_mono_seconds() - t0;
    cf_sq__exec(db, "commit", abs);
    in_txn = false;
    sqlite3_close(db);
    db = NULL;
    cf_sq__msg(o->on_message, o->payload, "copied %u pages of %u bytes in %.3f s", info->pages,
               info->page_size, res.copy_seconds);
    t0 = cf_mono_seconds();
    if ((rc = cf_sq__integrity(tmp)))
        goto out;
    res.check_seconds = cf_mono_seconds() - t0;
    cf_sq__new_generation(info->generation);
    rc = cf_sq__store_base(repo, tmp, info, o->tags, o->host, o->threads, &res.stats);
out:
    if (in_txn)
        sqlite3_exec(db, "rollback", NULL, NULL, NULL);
    sqlite3_close(db);
    if (tmp) {
        cf_error_saved es;
        cf_error_save(&es);
        remove_db_files(tmp);
        cf_error_restore(&es);
    }
    free(tmp);
    free(abs);
    if (out)
        *out = res;
    return rc;
}
