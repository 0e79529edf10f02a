/*
 * dump.c - MongoDB dumps: `mongodump --archive` streamed straight into a snapshot of one
 * file, published only when mongodump exited 0; and the snapshot's "mongodb" fields.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "source/mongo/mongo_src.h"

typedef struct {
    cf_mongo__proc proc;
    cf_mongo_info *info;
    const cf_mongo_backup_opts *o;
} dump_ctx;

char *cf_mongo__info_to_json(const cf_mongo_info *i)
{
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I}", "version",
                          1, "tool_version", i->tool_version, "uri", i->uri, "host", i->host,
                          "port", i->port, "username", i->username, "auth_db", i->auth_db,
                          "db", i->db, "collection", i->collection, "oplog", i->oplog,
                          "time_ns", (json_int_t)i->time_ns);
    json_t *doc = o ? json_pack("{s:o}", "mongodb", o) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

static void get_str(char *out, size_t len, json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    snprintf(out, len, "%s", s ? s : "");
}

int cf_mongo__info_from_json(cf_mongo_info *out, const char *doc_json)
{
    memset(out, 0, sizeof(*out));
    json_t *doc = json_loads(doc_json, 0, NULL);
    json_t *m = json_is_object(doc) ? json_object_get(doc, "mongodb") : NULL;
    int rc = 0;
    if (!json_is_object(m)) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "not a MongoDB dump");
        goto out;
    }
    get_str(out->snapshot_id, sizeof(out->snapshot_id), doc, "id");
    get_str(out->tool_version, sizeof(out->tool_version), m, "tool_version");
    get_str(out->uri, sizeof(out->uri), m, "uri");
    get_str(out->host, sizeof(out->host), m, "host");
    get_str(out->port, sizeof(out->port), m, "port");
    get_str(out->username, sizeof(out->username), m, "username");
    get_str(out->auth_db, sizeof(out->auth_db), m, "auth_db");
    get_str(out->db, sizeof(out->db), m, "db");
    get_str(out->collection, sizeof(out->collection), m, "collection");
    out->oplog = json_is_true(json_object_get(m, "oplog"));
    json_t *t = json_object_get(m, "time_ns");
    out->time_ns = json_is_integer(t) && json_integer_value(t) > 0 ? json_integer_value(t) : 0;
out:
    json_decref(doc);
    return rc;
}

int cf_mongo_info_get(cf_mongo_info *out, const cf_snapshot *snap)
{
    memset(out, 0, sizeof(*out));
    const char *kind = cf_snapshot_source_kind(snap);
    if (!kind || strcmp(kind, CF_MONGO_SOURCE_KIND) != 0)
        return cf_error_set(CF_ENOTFOUND, 0, "snapshot %.8s is not a MongoDB dump",
                            cf_snapshot_id(snap));
    char *text = cf_snapshot_to_json(snap);
    if (!text)
        return CF_ENOMEM;
    int rc = cf_mongo__info_from_json(out, text);
    free(text);
    if (rc == 0) {
        snprintf(out->snapshot_id, sizeof(out->snapshot_id), "%s", cf_snapshot_id(snap));
        if (!out->time_ns)
            out->time_ns = cf_snapshot_time(snap);
        const cf_backup_stats *st = cf_snapshot_stats(snap);
        out->bytes = st ? st->bytes_total : 0;
    }
    return rc;
}

static int dump_finish(char **out_json, void *payload)
{
    dump_ctx *c = payload;
    int code = 0;
    cf_mongo__wait(&c->proc, &code);
    if (code != 0)
        return cf_mongo__fail(&c->proc, code, c->o->on_message, c->o->payload);
    char *text = cf_mongo__info_to_json(c->info);
    if (!text)
        return CF_ENOMEM;
    *out_json = text;
    return 0;
}

static int tool_version(char *out, size_t len, const char *prog)
{
    char *argv[] = {(char *)(uintptr_t)prog, (char *)(uintptr_t)"--version", NULL};
    char *text = NULL;
    int rc = cf_mongo__capture(&text, argv, 64 * 1024);
    if (rc)
        return cf_error_wrap(rc, "unable to run '%s --version'", prog);
    cf_mongo__version_from_text(out, len, text);
    free(text);
    return 0;
}

static void copy_opt(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s ? s : "");
}

int cf_mongo_backup(cf_repo *repo, const cf_mongo_backup_opts *o, cf_mongo_info *out,
                    cf_backup_stats *out_stats)
{
    cf_mongo_info info;
    cf_argv a = {0};
    dump_ctx c;
    char prog[PATH_MAX], config[PATH_MAX] = "";
    int fds[2] = {-1, -1};
    bool spawned = false;
    int rc = 0;
    memset(&info, 0, sizeof(info));
    memset(&c, 0, sizeof(c));
    c.info = &info;
    c.o = o;
    if (o->collection && !o->db) {
        rc = cf_error_set(CF_EINVAL, 0, "--collection '%s' needs --db", o->collection);
        goto out;
    }
    if (o->oplog && o->db) {
        rc = cf_error_set(CF_EINVAL, 0, "--oplog is only possible for a dump of the whole "
                          "server, not of database '%s'", o->db);
        cf_error_hint("dump one database with --no-oplog, or the whole server with --oplog");
        goto out;
    }
    if (o->conn.uri && (o->conn.host || o->conn.port)) {
        rc = cf_error_set(CF_EINVAL, 0, "a MongoDB URI cannot be combined with --host or "
                          "--port");
        goto out;
    }
    if ((rc = cf_mongo__find(prog, sizeof(prog), o->conn.tool, "mongodump")) ||
        (rc = tool_version(info.tool_version, sizeof(info.tool_version), prog)))
        goto out;
    cf_mongo_uri_redact(info.uri, sizeof(info.uri), o->conn.uri);
    copy_opt(info.host, sizeof(info.host), o->conn.host);
    copy_opt(info.port, sizeof(info.port), o->conn.port);
    copy_opt(info.username, sizeof(info.username), o->conn.username);
    copy_opt(info.auth_db, sizeof(info.auth_db), o->conn.auth_db);
    copy_opt(info.db, sizeof(info.db), o->db);
    copy_opt(info.collection, sizeof(info.collection), o->collection);
    info.oplog = o->oplog;
    if ((rc = cf_mongo__config_write(config, sizeof(config), &o->conn)) ||
        (rc = cf_mongo__argv_start(&a, prog, config, &o->conn)))
        goto out;
    if ((o->db && (rc = cf_argv_addf(&a, "--db=%s", o->db))) ||
        (o->collection && (rc = cf_argv_addf(&a, "--collection=%s", o->collection))) ||
        (o->oplog && (rc = cf_argv_add(&a, "--oplog"))))
        goto out;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to create a pipe: %s", strerror(errno));
        goto out;
    }
    info.time_ns = cf_now_ns();
    if ((rc = cf_mongo__spawn(&c.proc, a.v, CF_MONGO_FD_NULL, fds[1])))
        goto out;
    spawned = true;
    close(fds[1]);
    fds[1] = -1;
    cf_mongo__msg(o->on_message, o->payload, "running %s (version %s)%s", prog,
                  info.tool_version, config[0] ? " with a --config file for the password" : "");
    cf_backup_opts bo;
    memset(&bo, 0, sizeof(bo));
    bo.type = CF_BACKUP_INCREMENTAL;
    bo.tags = o->tags;
    bo.host = o->host;
    bo.stdin_name = CF_MONGO_FILE_NAME;
    bo.stdin_fd = fds[0];
    bo.source_kind = CF_MONGO_SOURCE_KIND;
    bo.time_ns = info.time_ns;
    bo.threads = o->threads;
    bo.finish = dump_finish;
    bo.finish_payload = &c;
    cf_backup_stats st;
    memset(&st, 0, sizeof(st));
    rc = cf_backup(repo, &bo, info.snapshot_id, &st);
    info.bytes = st.bytes_total;
    if (out_stats)
        *out_stats = st;
out:
    if (fds[0] >= 0)
        close(fds[0]); /* a dump still writing gets SIGPIPE */
    if (fds[1] >= 0)
        close(fds[1]);
    if (spawned) {
        cf_error_saved es;
        cf_error_save(&es);
        cf_mongo__kill(&c.proc);
        cf_mongo__proc_free(&c.proc);
        cf_error_restore(&es);
    }
    cf_mongo__config_remove(config);
    cf_argv_free(&a);
    if (rc)
        info.snapshot_id[0] = '\0';
    if (out)
        *out = info;
    return rc;
}
