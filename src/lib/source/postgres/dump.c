/*
 * dump.c - logical dumps: pg_dump -Fc of one database piped into a snapshot (published only
 * when pg_dump succeeded), and a dump snapshot fed back to pg_restore.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "source/postgres/pg.h"

static int conninfo_quote(cf_buf *b, const char *s);

typedef struct {
    cf_pg__proc proc;
    bool waited;
    const char *dbname;
} dump_ctx;

static int dump_finish(char **out_json, void *payload)
{
    dump_ctx *c = payload;
    int code = 0;
    cf_pg__wait(&c->proc, &code);
    c->waited = true;
    if (code != 0)
        return cf_pg__proc_error(&c->proc, code);
    json_t *doc = json_pack("{s:{s:i, s:s, s:s}}", "postgres_dump", "version", 1, "dbname",
                            c->dbname, "format", "custom");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return CF_ENOMEM;
    *out_json = text;
    return 0;
}

static void on_line(cf_pg_msg_level level, const char *line, void *payload)
{
    const cf_pg_dump_opts *o = payload;
    if (strstr(line, "error:") || strstr(line, "warning:"))
        level = CF_PG_MSG_WARNING;
    if (o->on_message)
        o->on_message(level, line, o->payload);
}

int cf_pg_dump(cf_repo *repo, const cf_pg_dump_opts *o, char out_id[65],
               cf_backup_stats *out_stats)
{
    cf_pg__target t;
    cf_argv a = {0};
    dump_ctx c;
    char bin[PATH_MAX], name[128];
    bool spawned = false;
    int rc;
    memset(&c, 0, sizeof(c));
    if (out_id)
        out_id[0] = '\0';
    if (!o->conn.dbname || !*o->conn.dbname)
        return cf_error_set(CF_EINVAL, 0, "no database to dump: give its name");
    if ((rc = cf_pg__resolve(&t, &o->conn)))
        return rc;
    /* the file name in the snapshot: the database name made safe */
    size_t k = 0;
    for (const char *p = o->conn.dbname; *p && k < sizeof(name) - 6; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || (ch == '.' && k > 0);
        name[k++] = ok ? ch : '_';
    }
    snprintf(name + k, sizeof(name) - k, ".dump");
    c.dbname = o->conn.dbname;
    if ((rc = cf_pg__find_bin(bin, sizeof(bin), t.bindir, "pg_dump", NULL)))
        goto out;
    if ((rc = cf_argv_add(&a, bin)) || (rc = cf_argv_add(&a, "-Fc")) ||
        (rc = cf_argv_add(&a, "-w")) || (rc = cf_pg__argv_conn(&a, &t, false)))
        goto out;
    for (const char *const *x = o->pg_dump_args; x && *x; x++)
        if ((rc = cf_argv_add(&a, *x)))
            goto out;
    /* the name as a connection string: a database name beginning with '-' stays one */
    cf_buf cs;
    cf_buf_init(&cs, 4096);
    rc = cf_buf_append_str(&cs, "dbname=");
    if (rc == 0)
        rc = conninfo_quote(&cs, o->conn.dbname);
    if (rc == 0)
        rc = cf_buf_append(&cs, "", 1);
    if (rc == 0 && ((rc = cf_argv_add(&a, "-d")) == 0))
        rc = cf_argv_add(&a, (const char *)cs.data);
    cf_buf_free(&cs);
    if (rc)
        goto out;
    if ((rc = cf_pg__spawn(&c.proc, a.v, &t.os, CF_PG_FD_NULL, CF_PG_FD_PIPE, NULL, on_line,
                           CF_PG_MSG_DETAIL, (void *)(uintptr_t)o)))
        goto out;
    spawned = true;
    cf_backup_opts bo;
    memset(&bo, 0, sizeof(bo));
    bo.type = CF_BACKUP_INCREMENTAL;
    bo.tags = o->tags;
    bo.host = o->host;
    bo.stdin_name = name;
    bo.stdin_fd = c.proc.out_fd;
    bo.source_kind = CF_PG_SOURCE_DUMP;
    bo.threads = o->threads;
    bo.finish = dump_finish;
    bo.finish_payload = &c;
    rc = cf_backup(repo, &bo, out_id, out_stats);
out:
    if (spawned) {
        if (!c.waited) {
            int saved = rc;
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s", cf_error_last()->message);
            cf_pg__kill(&c.proc);
            cf_error_set(saved, 0, "%s", msg);
        }
        cf_pg__proc_free(&c.proc);
    }
    cf_argv_free(&a);
    cf_pg__target_free(&t);
    return rc;
}

/* The dbname recorded in a dump snapshot ("" if none). */
static void dump_dbname(char *out, size_t len, const cf_snapshot *s)
{
    out[0] = '\0';
    char *text = cf_snapshot_to_json(s);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    json_t *pd = json_object_get(doc, "postgres_dump");
    const char *db = json_string_value(json_object_get(pd, "dbname"));
    if (db)
        snprintf(out, len, "%s", db);
    json_decref(doc);
    free(text);
}

static int find_dump(cf_snapshot **out, cf_repo *repo, const char *spec, const char *from_db)
{
    *out = NULL;
    if (spec && strcmp(spec, "latest") != 0) {
        int rc = cf_snapshot_find(out, repo, spec, NULL);
        if (rc)
            return rc;
        const char *kind = cf_snapshot_source_kind(*out);
        if (!kind || strcmp(kind, CF_PG_SOURCE_DUMP) != 0) {
            rc = cf_error_set(CF_EINVAL, 0, "snapshot %.8s is not a PostgreSQL dump",
                              cf_snapshot_id(*out));
            cf_snapshot_free(*out);
            *out = NULL;
        }
        return rc;
    }
    cf_snapshot **list = NULL;
    size_t n = 0;
    int rc = cf_snapshot_list(&list, &n, repo, NULL);
    if (rc)
        return rc;
    for (size_t i = n; i-- > 0;) {
        const char *kind = cf_snapshot_source_kind(list[i]);
        if (!kind || strcmp(kind, CF_PG_SOURCE_DUMP) != 0)
            continue;
        if (from_db) {
            char db[256];
            dump_dbname(db, sizeof(db), list[i]);
            if (strcmp(db, from_db) != 0)
                continue;
        }
        *out = list[i];
        list[i] = NULL;
        break;
    }
    for (size_t i = 0; i < n; i++)
        cf_snapshot_free(list[i]);
    free(list);
    if (!*out)
        return cf_error_set(CF_ENOTFOUND, 0, "no PostgreSQL dump%s%s in the repository",
                            from_db ? " of database " : "", from_db ? from_db : "");
    return 0;
}

/* A value in a libpq connection string: '...' with \' and \\. */
static int conninfo_quote(cf_buf *b, const char *s)
{
    int rc = cf_buf_append(b, "'", 1);
    for (const char *p = s; rc == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            rc = cf_buf_append(b, "\\", 1);
        if (rc == 0)
            rc = cf_buf_append(b, p, 1);
    }
    return rc ? rc : cf_buf_append(b, "'", 1);
}

static int quote_ident(cf_buf *b, const char *s)
{
    int rc = cf_buf_append(b, "\"", 1);
    for (const char *p = s; rc == 0 && *p; p++)
        rc = *p == '"' ? cf_buf_append(b, "\"\"", 2) : cf_buf_append(b, p, 1);
    return rc ? rc : cf_buf_append(b, "\"", 1);
}

int cf_pg_restore_dump(cf_repo *repo, const cf_pg_restore_dump_opts *o, char out_id[65])
{
    cf_pg__target t;
    cf_argv a = {0};
    cf_snapshot *snap = NULL;
    cf_buf sql, cs;
    char bin[PATH_MAX];
    int rc;
    cf_buf_init(&sql, 1 << 16);
    cf_buf_init(&cs, 1 << 16);
    if (out_id)
        out_id[0] = '\0';
    if (!o->conn.dbname || !*o->conn.dbname)
        return cf_error_set(CF_EINVAL, 0, "no database to restore into: give its name");
    if ((rc = cf_pg__resolve(&t, &o->conn)))
        return rc;
    if ((rc = find_dump(&snap, repo, o->snapshot, o->from_dbname)))
        goto out;
    if (out_id)
        snprintf(out_id, 65, "%s", cf_snapshot_id(snap));
    if (o->create) {
        /* connect to the maintenance database to create the target */
        char *target_db = t.dbname;
        t.dbname = (char *)(uintptr_t) "postgres";
        char *ans = NULL;
        if ((rc = cf_buf_append_str(&sql, "create database ")) == 0 &&
            (rc = quote_ident(&sql, o->conn.dbname)) == 0 && (rc = cf_buf_append(&sql, "", 1)) == 0)
            rc = cf_pg__psql(&ans, &t, (const char *)sql.data);
        free(ans);
        t.dbname = target_db;
        if (rc) {
            rc = cf_error_wrap(rc, "unable to create database '%s'", o->conn.dbname);
            goto out;
        }
        cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_INFO, "created database '%s'",
                   o->conn.dbname);
    }
    if ((rc = cf_pg__find_bin(bin, sizeof(bin), t.bindir, "pg_restore", NULL)))
        goto out;
    if ((rc = cf_buf_append_str(&cs, "dbname=")) || (rc = conninfo_quote(&cs, o->conn.dbname)) ||
        (rc = cf_buf_append(&cs, "", 1)))
        goto out;
    if ((rc = cf_argv_add(&a, bin)) || (rc = cf_argv_add(&a, "-w")) ||
        (rc = cf_pg__argv_conn(&a, &t, false)) || (rc = cf_argv_add(&a, "-d")) ||
        (rc = cf_argv_add(&a, (const char *)cs.data)))
        goto out;
    if ((o->clean && ((rc = cf_argv_add(&a, "--clean")) ||
                      (rc = cf_argv_add(&a, "--if-exists")))) ||
        (o->no_owner && (rc = cf_argv_add(&a, "--no-owner"))) ||
        (o->exit_on_error && (rc = cf_argv_add(&a, "--exit-on-error"))))
        goto out;
    cf_pg__proc p;
    if ((rc = cf_pg__spawn(&p, a.v, &t.os, CF_PG_FD_PIPE, CF_PG_FD_NULL, NULL, o->on_message,
                           CF_PG_MSG_WARNING, o->payload)))
        goto out;
    const char *path = cf_snapshot_path_count(snap) ? cf_snapshot_path(snap, 0) : "/";
    cf_pg__sigpipe sp;
    cf_pg__sigpipe_block(&sp);
    int drc = cf_repo_lock(repo, CF_LOCK_SHARED); /* prune must wait */
    if (drc == 0) {
        drc = cf_dump(repo, snap, path, p.in_fd);
        cf_repo_unlock(repo);
    }
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", drc ? cf_error_last()->message : "");
    close(p.in_fd);
    p.in_fd = -1;
    int code = 0;
    cf_pg__wait(&p, &code);
    cf_pg__sigpipe_restore(&sp);
    if (drc && drc != CF_EIO)
        rc = cf_error_set(drc, 0, "%s", msg);
    else if (code != 0)
        rc = cf_pg__proc_error(&p, code);
    else if (drc)
        rc = cf_error_set(drc, 0, "%s", msg);
    cf_pg__proc_free(&p);
out:
    cf_snapshot_free(snap);
    cf_buf_free(&sql);
    cf_buf_free(&cs);
    cf_argv_free(&a);
    cf_pg__target_free(&t);
    return rc;
}
