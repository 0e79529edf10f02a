/*
 * dump.c - logical backups: mariadb-dump streamed into a snapshot through a relay that
 * reads the binlog position from the dump's header first (so it can tag the snapshot) and
 * keeps the dump's last bytes (so a dump without its "-- Dump completed" trailer, or one
 * whose program failed, is never published).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "source/mariadb/my.h"

#define HEADER_MAX ((size_t)4 << 20) /* the binlog position comes within this */
#define TAIL 512

typedef struct {
    cf_my__proc proc;
    int dump_fd;        /* the dump's stdout */
    int relay_w;        /* write end of the pipe cf_backup reads */
    cf_buf head;        /* the dump's first bytes, read before the backup starts */
    bool dump_eof;      /* the whole dump is in head */
    pthread_t thread;
    bool thread_started, joined;
    int relay_err;      /* errno of a failed read or write */
    char tail[TAIL];
    size_t tail_len;
    uint64_t bytes;
    cf_mariadb_info *info;
    const char *databases;
} dump_ctx;

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return errno ? errno : EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *relay_main(void *arg)
{
    dump_ctx *c = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* a reader gone is EPIPE, not a signal */
    int err = write_all(c->relay_w, c->head.data, c->head.len);
    cf_tail_keep(c->tail, &c->tail_len, TAIL, c->head.data, c->head.len);
    c->bytes = c->head.len;
    uint8_t buf[65536];
    while (!err && !c->dump_eof) {
        ssize_t n = read(c->dump_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            break;
        }
        if (n == 0)
            break;
        cf_tail_keep(c->tail, &c->tail_len, TAIL, buf, (size_t)n);
        c->bytes += (uint64_t)n;
        err = write_all(c->relay_w, buf, (size_t)n);
    }
    c->relay_err = err;
    close(c->relay_w);
    c->relay_w = -1;
    close(c->dump_fd); /* the dump gets SIGPIPE if it is still writing */
    c->dump_fd = -1;
    return NULL;
}

/* Read the dump until its header has the binlog position (or it ended). */
static int read_header(dump_ctx *c, bool want_pos)
{
    uint8_t buf[65536];
    for (;;) {
        if (want_pos && c->head.len && memmem(c->head.data, c->head.len, "MASTER_LOG_POS=", 15)) {
            const uint8_t *m = memmem(c->head.data, c->head.len, "MASTER_LOG_POS=", 15);
            const uint8_t *nl = memchr(m, '\n', c->head.len - (size_t)(m - c->head.data));
            if (nl)
                return 0;
        }
        if (!want_pos && c->head.len >= 4096)
            return 0;
        if (c->head.len >= HEADER_MAX)
            return 0;
        ssize_t n = read(c->dump_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return cf_error_set(CF_EIO, errno, "unable to read from %s: %s", c->proc.prog,
                                strerror(errno));
        if (n == 0) {
            c->dump_eof = true;
            return 0;
        }
        if (cf_buf_append(&c->head, buf, (size_t)n))
            return CF_ENOMEM;
    }
}

/* "-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;" */
bool cf_my__parse_position(cf_mariadb_info *info, const uint8_t *head, size_t len)
{
    if (len == 0)
        return false;
    char *text = cf_strndup((const char *)head, len);
    bool ok = false;
    if (!text)
        return false;
    const char *f = strstr(text, "MASTER_LOG_FILE='");
    const char *p = strstr(text, "MASTER_LOG_POS=");
    if (f && p) {
        f += strlen("MASTER_LOG_FILE='");
        const char *e = strchr(f, '\'');
        char *end = NULL;
        errno = 0;
        unsigned long long pos = strtoull(p + strlen("MASTER_LOG_POS="), &end, 10);
        char d = p[strlen("MASTER_LOG_POS=")];
        /* strtoull would accept "-1" (and wrap it) or leading blanks: digits only */
        if (e && (size_t)(e - f) < sizeof(info->binlog_file) && end && d >= '0' && d <= '9' &&
            errno != ERANGE && end != p + strlen("MASTER_LOG_POS=")) {
            snprintf(info->binlog_file, sizeof(info->binlog_file), "%.*s", (int)(e - f), f);
            info->binlog_pos = pos;
            ok = info->binlog_file[0] && !strchr(info->binlog_file, '/');
        }
    }
    const char *g = strstr(text, "gtid_slave_pos='");
    if (g) {
        g += strlen("gtid_slave_pos='");
        const char *e = strchr(g, '\'');
        if (e && (size_t)(e - g) < sizeof(info->gtid))
            snprintf(info->gtid, sizeof(info->gtid), "%.*s", (int)(e - g), g);
    }
    free(text);
    return ok;
}

static bool parse_position(dump_ctx *c)
{
    return cf_my__parse_position(c->info, c->head.data, c->head.len);
}

static int dump_finish(char **out_json, void *payload)
{
    dump_ctx *c = payload;
    if (c->thread_started && !c->joined) {
        pthread_join(c->thread, NULL);
        c->joined = true;
    }
    int code = 0;
    cf_my__wait(&c->proc, &code);
    if (code != 0)
        return cf_my__fail(&c->proc, code);
    if (c->relay_err)
        return cf_error_set(CF_EIO, c->relay_err, "unable to relay the dump: %s",
                            strerror(c->relay_err));
    if (!memmem(c->tail, c->tail_len, "-- Dump completed", 17))
        return cf_error_set(CF_EGENERIC, 0, "%s exited 0 but its output does not end with "
                            "'-- Dump completed': the dump is incomplete", c->proc.prog);
    const cf_mariadb_info *i = c->info;
    json_t *o = json_pack("{s:i, s:s, s:I, s:s}", "version", 1, "server", i->server, "time_ns",
                          (json_int_t)i->time_ns, "databases", c->databases);
    if (o && i->has_binlog) {
        json_object_set_new(o, "binlog_file", json_string(i->binlog_file));
        json_object_set_new(o, "binlog_pos", json_integer((json_int_t)i->binlog_pos));
        if (i->gtid[0])
            json_object_set_new(o, "gtid", json_string(i->gtid));
    }
    json_t *doc = o ? json_pack("{s:o}", "mariadb", o) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return CF_ENOMEM;
    *out_json = text;
    return 0;
}

/* Does the dump program know --master-data (MariaDB, MySQL < 8.0.26) or --source-data? */
static const char *position_option(const char *prog)
{
    char *argv[] = {CF_MY_STR(prog), CF_MY_STR("--help"), NULL};
    char *out = NULL;
    const char *opt = "--master-data=2";
    if (cf_my__capture(&out, argv, NULL, (size_t)1 << 20) == 0 && out &&
        !strstr(out, "--master-data") && strstr(out, "--source-data"))
        opt = "--source-data=2";
    free(out);
    cf_error_clear();
    return opt;
}

int cf_mariadb_backup(cf_repo *repo, const cf_mariadb_backup_opts *o, cf_mariadb_info *out,
                      cf_backup_stats *out_stats)
{
    static const char *const dumpers[] = {"mariadb-dump", "mysqldump", NULL};
    cf_mariadb_info info;
    cf_argv a = {0};
    dump_ctx c;
    cf_buf dbs;
    char **tags = NULL;
    int fds[2] = {-1, -1}, rfds[2] = {-1, -1};
    bool spawned = false;
    int rc = 0;
    memset(&info, 0, sizeof(info));
    memset(&c, 0, sizeof(c));
    c.dump_fd = c.relay_w = -1;
    cf_buf_init(&c.head, HEADER_MAX + 65536);
    cf_buf_init(&dbs, 4096);
    c.info = &info;
    const char *server = o->server ? o->server : CF_MARIADB_DEFAULT_SERVER;
    if (!cf_my__valid_server(server))
        return cf_error_set(CF_EINVAL, 0, "invalid server name '%s' (letters, digits, '.', "
                            "'_', '-')", server);
    snprintf(info.server, sizeof(info.server), "%s", server);
    if ((rc = cf_my__argv_start(&a, &o->conn, dumpers)))
        goto out;
    if ((rc = cf_argv_add(&a, "--single-transaction")) ||
        (rc = cf_argv_add(&a, "--routines")) || (rc = cf_argv_add(&a, "--events")) ||
        (rc = cf_argv_add(&a, "--triggers")))
        goto out;
    if (!o->no_binlog && (rc = cf_argv_add(&a, position_option(a.v[0]))))
        goto out;
    for (const char *const *x = o->dump_args; x && *x; x++)
        if ((rc = cf_argv_add(&a, *x)))
            goto out;
    if (o->databases && o->databases[0]) {
        if ((rc = cf_argv_add(&a, "--databases")))
            goto out;
        for (const char *const *d = o->databases; *d; d++) {
            if ((rc = cf_argv_add(&a, *d)) ||
                (rc = cf_buf_printf(&dbs, "%s%s", dbs.len ? " " : "", *d)))
                goto out;
        }
    } else if ((rc = cf_argv_add(&a, "--all-databases"))) {
        goto out;
    }
    if ((rc = cf_buf_append(&dbs, "", 1)))
        goto out;
    c.databases = (const char *)dbs.data;
    snprintf(info.databases, sizeof(info.databases), "%s", c.databases);
    if ((rc = cf_my__pipe(fds)))
        goto out;
    info.time_ns = cf_now_ns();
    if ((rc = cf_my__spawn(&c.proc, a.v, CF_MY_FD_NULL, fds[1], &o->conn, NULL)))
        goto out;
    spawned = true;
    close(fds[1]);
    fds[1] = -1;
    c.dump_fd = fds[0];
    fds[0] = -1;
    cf_my__msg(o->on_message, o->payload, "running %s", a.v[0]);
    if ((rc = read_header(&c, !o->no_binlog)))
        goto out;
    if (!o->no_binlog) {
        if (!parse_position(&c)) {
            int code = 0;
            if (c.dump_eof) {
                cf_my__wait(&c.proc, &code);
                if (code != 0) {
                    rc = cf_my__fail(&c.proc, code);
                    goto out;
                }
            }
            rc = cf_error_set(CF_EGENERIC, 0, "the dump of %s has no binlog position",
                              c.databases[0] ? c.databases : "all databases");
            cf_error_hint("enable log-bin on the server for point-in-time recovery, or back "
                          "up without it (--no-binlog)");
            goto out;
        }
        info.has_binlog = true;
        cf_my__msg(o->on_message, o->payload, "binlog position %s:%llu", info.binlog_file,
                   (unsigned long long)info.binlog_pos);
    }
    /* tags: the caller's plus binlog=FILE:POS */
    size_t nt = 0;
    for (const char *const *t = o->tags; t && *t; t++)
        nt++;
    if (!(tags = cf_calloc(nt + 2, sizeof(char *)))) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nt; i++)
        tags[i] = (char *)(uintptr_t)o->tags[i];
    char *btag = NULL;
    if (info.has_binlog) {
        if (!(btag = cf_asprintf("binlog=%s:%llu", info.binlog_file,
                                 (unsigned long long)info.binlog_pos))) {
            rc = CF_ENOMEM;
            goto out;
        }
        tags[nt] = btag;
    }
    if ((rc = cf_my__pipe(rfds))) {
        free(btag);
        goto out;
    }
    c.relay_w = rfds[1];
    rfds[1] = -1;
    if (pthread_create(&c.thread, NULL, relay_main, &c) != 0) {
        free(btag);
        rc = cf_error_set(CF_EGENERIC, errno, "unable to start a thread");
        goto out;
    }
    c.thread_started = true;
    cf_backup_opts bo;
    memset(&bo, 0, sizeof(bo));
    bo.type = CF_BACKUP_INCREMENTAL;
    bo.tags = (const char *const *)tags;
    bo.host = o->host;
    bo.stdin_name = "dump.sql";
    bo.stdin_fd = rfds[0];
    bo.source_kind = CF_MARIADB_SOURCE_KIND;
    bo.time_ns = info.time_ns;
    bo.threads = o->threads;
    bo.finish = dump_finish;
    bo.finish_payload = &c;
    rc = cf_backup(repo, &bo, info.snapshot_id, out_stats);
    free(btag);
    tags[nt] = NULL;
out:
    if (rfds[0] >= 0)
        close(rfds[0]); /* the relay sees EPIPE if the backup stopped reading */
    if (c.thread_started && !c.joined) {
        pthread_join(c.thread, NULL);
        c.joined = true;
    }
    if (spawned) {
        cf_error_saved es;
        cf_error_save(&es);
        cf_my__kill(&c.proc);
        cf_my__proc_free(&c.proc);
        cf_error_restore(&es);
    }
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (rfds[1] >= 0)
        close(rfds[1]);
    if (c.dump_fd >= 0)
        close(c.dump_fd);
    if (c.relay_w >= 0)
        close(c.relay_w);
    free(tags);
    cf_buf_free(&c.head);
    cf_buf_free(&dbs);
    cf_argv_free(&a);
    if (rc)
        info.snapshot_id[0] = '\0';
    if (out)
        *out = info;
    return rc;
}

int cf_my__info_from_json(cf_mariadb_info *out, const char *doc_json)
{
    memset(out, 0, sizeof(*out));
    json_t *doc = json_loads(doc_json, 0, NULL);
    json_t *m = doc ? json_object_get(doc, "mariadb") : NULL;
    int rc = 0;
    if (!json_is_object(m)) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "not a MariaDB dump");
        goto out;
    }
    const char *s;
    if ((s = json_string_value(json_object_get(doc, "id"))))
        snprintf(out->snapshot_id, sizeof(out->snapshot_id), "%s", s);
    if ((s = json_string_value(json_object_get(m, "server"))))
        snprintf(out->server, sizeof(out->server), "%s", s);
    if ((s = json_string_value(json_object_get(m, "databases"))))
        snprintf(out->databases, sizeof(out->databases), "%s", s);
    out->time_ns = (int64_t)json_integer_value(json_object_get(m, "time_ns"));
    if ((s = json_string_value(json_object_get(m, "binlog_file"))) && *s && !strchr(s, '/')) {
        snprintf(out->binlog_file, sizeof(out->binlog_file), "%s", s);
        json_int_t pos = json_integer_value(json_object_get(m, "binlog_pos"));
        out->binlog_pos = pos > 0 ? (uint64_t)pos : 0;
        out->has_binlog = true;
    }
    if ((s = json_string_value(json_object_get(m, "gtid"))))
        snprintf(out->gtid, sizeof(out->gtid), "%s", s);
out:
    json_decref(doc);
    return rc;
}

int cf_mariadb_info_get(cf_mariadb_info *out, const cf_snapshot *snap)
{
    const char *kind = cf_snapshot_source_kind(snap);
    if (!kind || strcmp(kind, CF_MARIADB_SOURCE_KIND) != 0)
        return cf_error_set(CF_ENOTFOUND, 0, "snapshot %.8s is not a MariaDB dump",
                            cf_snapshot_id(snap));
    char *text = cf_snapshot_to_json(snap);
    if (!text)
        return CF_ENOMEM;
    int rc = cf_my__info_from_json(out, text);
    free(text);
    if (rc == 0) {
        snprintf(out->snapshot_id, sizeof(out->snapshot_id), "%s", cf_snapshot_id(snap));
        if (!out->time_ns)
            out->time_ns = cf_snapshot_time(snap);
        if (!out->server[0])
            snprintf(out->server, sizeof(out->server), "%s", CF_MARIADB_DEFAULT_SERVER);
    }
    return rc;
}
