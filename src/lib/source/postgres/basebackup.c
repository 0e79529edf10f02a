/*
 * basebackup.c - physical base backups: pg_basebackup's tar stream piped into a snapshot,
 * published only once pg_basebackup succeeded and the backup's WAL is in the archive; and
 * reading the "postgres" fields of base backup snapshots back.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "source/postgres/pg.h"

/* ------------------------------------------------------------------ the tar relay */

/*
 * pg_basebackup's tar stream passes through a thread on its way to cf_backup, which reads it
 * with cf_pg__tar (tar.c) to pick out backup_label and the backup manifest's tail.
 */
typedef struct {
    int in_fd, out_fd;
    pthread_t th;
    bool started;
    cf_pg__tar tar;
    uint64_t bytes;
    int err; /* errno of a failed read or write */
} relay;

static void *relay_main(void *arg)
{
    relay *r = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* a failed write is an EPIPE, not a signal */
    size_t cap = 256 * 1024;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        r->err = ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = read(r->in_fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r->err = errno;
            break;
        }
        if (n == 0)
            break;
        cf_pg__tar_feed(&r->tar, buf, (size_t)n);
        r->bytes += (uint64_t)n;
        size_t done = 0;
        while (done < (size_t)n) {
            ssize_t w = write(r->out_fd, buf + done, (size_t)n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                r->err = errno;
                goto out;
            }
            done += (size_t)w;
        }
    }
out:
    free(buf);
    close(r->out_fd);
    r->out_fd = -1;
    return NULL;
}

typedef struct {
    const cf_pg_backup_opts *o;
    cf_repo *repo;
    cf_pg__target t;
    cf_pg__proc proc;
    relay rl;
    bool spawned, waited;
    uint32_t server_version, segsize;
    uint64_t sysid;
    bool in_recovery;
    char label[128];
    cf_pg_base_info info;
} bb_ctx;

/* ------------------------------------------------------------------ preflight */

static const char *setting(const char *text, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t ll = end ? (size_t)(end - line) : strlen(line);
        if (ll > nl && strncmp(line, name, nl) == 0 && line[nl] == '|') {
            size_t vl = ll - nl - 1 < len - 1 ? ll - nl - 1 : len - 1;
            memcpy(buf, line + nl + 1, vl);
            buf[vl] = '\0';
            return buf;
        }
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/* A whole setting as a number up to max (anything else: unknown). */
static bool setting_num(uint64_t *out, const char *v, uint64_t max)
{
    const char *end = NULL;
    return cf_pg__dec(out, v, &end, max) && *end == '\0';
}

static int preflight(bb_ctx *c)
{
    const cf_pg_backup_opts *o = c->o;
    char *out = NULL;
    int rc = cf_pg__psql(&out, &c->t,
                         "select name, setting from pg_settings where name in ("
                         "'server_version_num', 'archive_mode', 'wal_segment_size', "
                         "'wal_level', 'archive_command') "
                         "union all select 'in_recovery', pg_is_in_recovery()::text "
                         "union all select 'system_identifier', system_identifier::text "
                         "from pg_control_system()");
    if (rc)
        return cf_error_wrap(rc, "unable to query the server");
    char v[1024];
    uint64_t num = 0;
    if (setting(out, "server_version_num", v, sizeof(v)) && setting_num(&num, v, UINT32_MAX))
        c->server_version = (uint32_t)num;
    if (setting(out, "wal_segment_size", v, sizeof(v)) && setting_num(&num, v, UINT32_MAX))
        c->segsize = (uint32_t)num;
    if (setting(out, "system_identifier", v, sizeof(v)) && setting_num(&num, v, UINT64_MAX))
        c->sysid = num;
    c->in_recovery = setting(out, "in_recovery", v, sizeof(v)) && strcmp(v, "true") == 0;
    if (c->server_version && c->server_version < 100000) {
        rc = cf_error_set(CF_EUNSUPPORTED, 0, "PostgreSQL %u is not supported (10 or newer)",
                          c->server_version);
        goto out;
    }
    if (c->segsize && c->segsize < (1u << 20))
        c->segsize *= 8192; /* PostgreSQL 10 counts it in 8 kB pages */
    if (!cf_pg__valid_segsize(c->segsize))
        c->segsize = CF_PG_SEG_DEFAULT;
    const char *mode = setting(out, "archive_mode", v, sizeof(v));
    bool archiving = mode && (strcmp(mode, "on") == 0 || strcmp(mode, "always") == 0);
    if (!o->no_archive_check) {
        if (!archiving) {
            rc = cf_error_set(CF_EINVAL, 0, "WAL archiving is off on the server (archive_mode = "
                                            "%s): a base backup without its WAL cannot be restored",
                              mode ? mode : "?");
            cf_error_hint("set archive_mode = on and archive_command = 'coffer wal-push %%p' "
                          "(docs/databases/postgres.md), or pass --no-archive-check");
            goto out;
        }
        if (c->in_recovery && strcmp(mode, "always") != 0) {
            rc = cf_error_set(CF_EINVAL, 0, "backing up a standby needs archive_mode = always "
                                            "there (it is '%s')", mode);
            cf_error_hint("or pass --no-archive-check when the primary archives to this "
                          "repository");
            goto out;
        }
        const char *cmd = setting(out, "archive_command", v, sizeof(v));
        if (cmd && *cmd && !strstr(cmd, "wal-push") && !strstr(cmd, "coffer"))
            cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_WARNING,
                       "archive_command does not look like 'coffer wal-push %%p': '%s'", cmd);
    }
out:
    free(out);
    return rc;
}

/* ------------------------------------------------------------------ the archive check */

typedef struct {
    char (*names)[256];
    bool *found;
    size_t n;
} need_ctx;

static int need_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    need_ctx *c = payload;
    for (size_t i = 0; i < c->n; i++)
        if (!c->found[i] && strcmp(name, c->names[i]) == 0)
            c->found[i] = true;
    return 0;
}

/* Wait until every segment from start to stop (and the backup history file) is archived. */
static int wait_archived(bb_ctx *c, const char *history)
{
    const cf_pg_backup_opts *o = c->o;
    uint32_t ss = c->segsize;
    uint64_t first = c->info.start_lsn / ss, last = c->info.stop_lsn / ss;
    /* a stop point at a segment boundary needs nothing from the segment it starts */
    if (c->info.stop_lsn % ss == 0 && last > first)
        last--;
    if (last - first > 4096)
        return cf_error_set(CF_EINVAL, 0, "the backup spans %llu WAL segments: too many to check",
                            (unsigned long long)(last - first + 1));
    size_t n = (size_t)(last - first + 1) + (history ? 1 : 0);
    need_ctx nc = {cf_calloc(n, 256), cf_calloc(n, sizeof(bool)), n};
    int rc = 0;
    if (!nc.names || !nc.found) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (uint64_t s = first, i = 0; s <= last; s++, i++) {
        char seg[25];
        cf_pg__seg_name(seg, c->info.timeline, s, ss);
        if ((rc = cf_pg__archive_name(nc.names[i], o->cluster, seg)))
            goto out;
    }
    if (history && (rc = cf_pg__archive_name(nc.names[n - 1], o->cluster, history)))
        goto out;
    double timeout = o->archive_timeout > 0 ? o->archive_timeout : 60;
    double t0 = cf_mono_seconds();
    bool said = false;
    for (;;) {
        if ((rc = cf_archive_list(c->repo, CF_PG_ARCHIVE_KIND, need_cb, &nc)))
            goto out;
        size_t missing = 0, first_missing = 0;
        for (size_t i = n; i-- > 0;)
            if (!nc.found[i]) {
                missing++;
                first_missing = i;
            }
        if (missing == 0)
            break;
        if (cf_mono_seconds() - t0 > timeout) {
            rc = cf_error_set(CF_ENOTFOUND, 0,
                              "the backup's WAL is not in this repository: 'archive/%s/%s' "
                              "did not appear within %.0f s",
                              CF_PG_ARCHIVE_KIND, nc.names[first_missing], timeout);
            cf_error_hint("set archive_command = 'coffer wal-push %%p' with this repository on "
                          "the server (docs/databases/postgres.md), or pass --no-archive-check");
            goto out;
        }
        if (!said) {
            cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_DETAIL,
                       "waiting for WAL '%s' to be archived", nc.names[first_missing]);
            said = true;
        }
        cf_pg__sleep(0.25);
    }
out:
    free(nc.names);
    free(nc.found);
    return rc;
}

/* ------------------------------------------------------------------ the finish hook */

/* Start point and timeline from backup_label, stop point from the manifest's WAL range. */
int cf_pg__parse_label(cf_pg_base_info *info, const char *label, const char *mtail,
                       bool *have_stop)
{
    const char *l = label;
    const char *sw = strstr(l, "START WAL LOCATION: ");
    const char *tl = strstr(l, "START TIMELINE: ");
    const char *from = strstr(l, "BACKUP FROM: ");
    char lsn[32], file[32];
    unsigned tli = 0;
    uint64_t t64 = 0;
    const char *tend = NULL;
    *have_stop = false;
    if (!sw || sscanf(sw + 20, "%31s (file %24[0-9A-F])", lsn, file) != 2 ||
        cf_pg_lsn_parse(&info->start_lsn, lsn) || strlen(file) != 24)
        return cf_error_set(CF_EGENERIC, 0, "pg_basebackup's stream has no valid backup_label");
    if (tl && cf_pg__dec(&t64, tl + 16, &tend, UINT32_MAX) && t64 > 0 &&
        (*tend == '\n' || *tend == '\r' || *tend == '\0'))
        info->timeline = (uint32_t)t64;
    else if (tl)
        return cf_error_set(CF_EGENERIC, 0, "backup_label has an invalid START TIMELINE");
    else if (sscanf(file, "%8X", &tli) == 1 && tli > 0)
        info->timeline = tli;
    else
        return cf_error_set(CF_EGENERIC, 0, "backup_label names no timeline");
    snprintf(info->start_wal, sizeof(info->start_wal), "%.24s", file);
    info->from_standby = from && strncmp(from + 13, "standby", 7) == 0;
    const char *ranges = mtail ? strstr(mtail, "\"WAL-Ranges\"") : NULL;
    if (ranges) {
        const char *last = NULL;
        for (const char *p = ranges; (p = strstr(p, "\"End-LSN\"")); p++)
            last = p;
        const char *q = last ? strchr(last + 9, '"') : NULL;
        if (q && sscanf(q + 1, "%31[0-9A-Fa-f/]", lsn) == 1 &&
            cf_pg_lsn_parse(&info->stop_lsn, lsn) == 0)
            *have_stop = true;
    }
    cf_error_clear();
    return 0;
}

int cf_pg__parse_backup_history(uint64_t *stop_lsn, const char *text)
{
    const char *sp = strstr(text, "STOP WAL LOCATION: ");
    char lsn[32];
    if (!sp || sscanf(sp + 19, "%31s", lsn) != 1 || cf_pg_lsn_parse(stop_lsn, lsn))
        return cf_error_set(CF_EGENERIC, 0, "no stop point");
    return 0;
}

/* Without a manifest (before PostgreSQL 13): the stop point from the backup history file. */
static int stop_from_history(bb_ctx *c, const char *history)
{
    const cf_pg_backup_opts *o = c->o;
    char full[256];
    int rc = cf_pg__archive_name(full, o->cluster, history);
    if (rc)
        return rc;
    double timeout = o->archive_timeout > 0 ? o->archive_timeout : 60;
    double t0 = cf_mono_seconds();
    uint8_t *data = NULL;
    size_t len = 0;
    while ((rc = cf_archive_get(c->repo, CF_PG_ARCHIVE_KIND, full, &data, &len)) == CF_ENOTFOUND &&
           cf_mono_seconds() - t0 < timeout)
        cf_pg__sleep(0.25);
    if (rc) {
        rc = cf_error_wrap(rc, "unable to learn the backup's stop point from '%s'", history);
        cf_error_hint("is archive_command = 'coffer wal-push %%p' set to this repository?");
        return rc;
    }
    char *text = cf_malloc(len + 1);
    if (!text) {
        free(data);
        return CF_ENOMEM;
    }
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    if (cf_pg__parse_backup_history(&c->info.stop_lsn, text))
        rc = cf_error_set(CF_EGENERIC, 0, "backup history file '%s' has no stop point", history);
    free(text);
    return rc;
}

static int bb_finish(char **out_json, void *payload)
{
    bb_ctx *c = payload;
    const cf_pg_backup_opts *o = c->o;
    int code = 0;
    if (c->rl.started) {
        pthread_join(c->rl.th, NULL);
        c->rl.started = false;
    }
    cf_pg__wait(&c->proc, &code);
    c->waited = true;
    if (code != 0)
        return cf_pg__proc_error(&c->proc, code);
    if (c->rl.err)
        return cf_error_set(CF_EIO, c->rl.err, "unable to pass on pg_basebackup's output: %s",
                            strerror(c->rl.err));
    int rc = cf_pg__tar_end(&c->rl.tar);
    if (rc) /* a failure of pg_basebackup's, not damage in the repository */
        return cf_error_wrap(CF_EGENERIC, "pg_basebackup's output (%llu bytes)",
                             (unsigned long long)c->rl.bytes);
    bool have_stop = false;
    rc = cf_pg__parse_label(&c->info, c->rl.tar.label, c->rl.tar.mtail, &have_stop);
    if (rc)
        return rc;
    cf_pg_base_info *in = &c->info;
    uint32_t ss = c->segsize;
    in->wal_segment_size = ss;
    in->system_identifier = c->sysid;
    in->server_version = c->server_version;
    snprintf(in->label, sizeof(in->label), "%s", c->label);
    snprintf(in->cluster, sizeof(in->cluster), "%s", o->cluster ? o->cluster : "");
    char history[64] = "";
    if (!in->from_standby)
        snprintf(history, sizeof(history), "%s.%08X.backup", in->start_wal,
                 (uint32_t)(in->start_lsn % ss));
    if (!have_stop) {
        if (!history[0])
            return cf_error_set(CF_EUNSUPPORTED, 0, "the backup's stop point is unknown (no "
                                                    "backup manifest from this standby)");
        if ((rc = stop_from_history(c, history)))
            return rc;
    }
    uint64_t stopseg = in->stop_lsn / ss;
    if (in->stop_lsn % ss == 0 && stopseg > in->start_lsn / ss)
        stopseg--;
    cf_pg__seg_name(in->stop_wal, in->timeline, stopseg, ss);
    if (!o->no_archive_check && (rc = wait_archived(c, history[0] ? history : NULL)))
        return rc;
    /* the first transaction id after the backup: recovery to an xid from here on works */
    /* and the server's clock now, after the stop point: recovery to a time (by that clock)
     * can start from this backup when the time is later */
    char *ans = NULL;
    if (cf_pg__psql(&ans, &c->t,
                    c->server_version >= 130000
                        ? "select pg_snapshot_xmax(pg_current_snapshot()), "
                          "(extract(epoch from clock_timestamp()) * 1000000)::bigint"
                        : "select txid_snapshot_xmax(txid_current_snapshot()), "
                          "(extract(epoch from clock_timestamp()) * 1000000)::bigint") == 0) {
        const char *end = NULL;
        uint64_t xid = 0, us = 0;
        if (cf_pg__dec(&xid, ans, &end, UINT64_MAX) && *end == '|') {
            in->next_xid = xid;
            /* microseconds since 1970, as nanoseconds: positive and within int64 */
            if (cf_pg__dec(&us, end + 1, &end, (uint64_t)INT64_MAX / 1000) &&
                (*end == '\0' || *end == '\n'))
                in->stop_time_ns = (int64_t)(us * 1000);
        }
    }
    free(ans);
    cf_error_clear();
    char stop_time[40] = "";
    if (in->stop_time_ns > 0)
        cf_time_format(stop_time, in->stop_time_ns);
    char start[20], stop[20], sysid[24], nxid[24];
    cf_pg_lsn_format(start, in->start_lsn);
    cf_pg_lsn_format(stop, in->stop_lsn);
    snprintf(sysid, sizeof(sysid), "%llu", (unsigned long long)in->system_identifier);
    snprintf(nxid, sizeof(nxid), "%llu", (unsigned long long)in->next_xid);
    json_t *pg = json_pack("{s:i, s:I, s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:s, s:b}",
                           "version", 1, "timeline", (json_int_t)in->timeline, "start_lsn", start,
                           "stop_lsn", stop, "start_wal", in->start_wal, "stop_wal", in->stop_wal,
                           "wal_segment_size", (json_int_t)ss, "system_identifier", sysid,
                           "server_version", (json_int_t)in->server_version, "next_xid", nxid,
                           "cluster", in->cluster, "label", in->label, "from_standby",
                           in->from_standby);
    if (pg && history[0])
        json_object_set_new(pg, "backup_history", json_string(history));
    if (pg && stop_time[0])
        json_object_set_new(pg, "stop_time", json_string(stop_time));
    json_t *doc = pg ? json_pack("{s:o}", "postgres", pg) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return CF_ENOMEM;
    *out_json = text;
    return 0;
}

static void on_bb_line(cf_pg_msg_level level, const char *line, void *payload)
{
    const cf_pg_backup_opts *o = payload;
    if (strstr(line, "error:") || strstr(line, "warning:") || strstr(line, "WARNING"))
        level = CF_PG_MSG_WARNING;
    if (o->on_message)
        o->on_message(level, line, o->payload);
}

int cf_pg_backup(cf_repo *repo, const cf_pg_backup_opts *o, cf_pg_base_info *out_info,
                 cf_backup_stats *out_stats)
{
    bb_ctx c;
    cf_argv a = {0};
    char bin[PATH_MAX];
    char *mtail = NULL;
    int rc;
    memset(&c, 0, sizeof(c));
    c.o = o;
    c.repo = repo;
    if (out_info)
        memset(out_info, 0, sizeof(*out_info));
    if (o->cluster && *o->cluster && !cf_pg__valid_cluster(o->cluster))
        return cf_error_set(CF_EINVAL, 0, "invalid cluster name '%s'", o->cluster);
    if ((rc = cf_pg__resolve(&c.t, &o->conn)))
        return rc;
    if ((rc = preflight(&c)))
        goto out;
    if ((rc = cf_pg__find_bin(bin, sizeof(bin), c.t.bindir, "pg_basebackup", NULL)))
        goto out;
    char when[40];
    cf_time_format(when, cf_now_ns());
    snprintf(c.label, sizeof(c.label), "coffer %.19s", when);
    /* tar to stdout; no WAL in it (-X none): it comes from the archive at restore */
    if ((rc = cf_argv_add(&a, bin)) || (rc = cf_argv_add(&a, "-D")) ||
        (rc = cf_argv_add(&a, "-")) || (rc = cf_argv_add(&a, "-F")) ||
        (rc = cf_argv_add(&a, "tar")) || (rc = cf_argv_add(&a, "-X")) ||
        (rc = cf_argv_add(&a, "none")) || (rc = cf_argv_add(&a, "-c")) ||
        (rc = cf_argv_add(&a, o->spread_checkpoint ? "spread" : "fast")) ||
        (rc = cf_argv_add(&a, "--verbose")) || (rc = cf_argv_add(&a, "-l")) ||
        (rc = cf_argv_add(&a, c.label)) || (rc = cf_argv_add(&a, "-w")) ||
        (rc = cf_pg__argv_conn(&a, &c.t, false))) /* a replication connection: no dbname */
        goto out;
    if ((rc = cf_pg__spawn(&c.proc, a.v, &c.t.os, CF_PG_FD_NULL, CF_PG_FD_PIPE, NULL, on_bb_line,
                           CF_PG_MSG_DETAIL, (void *)(uintptr_t)o)))
        goto out;
    c.spawned = true;
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to create a pipe: %s", strerror(errno));
        goto out;
    }
    c.rl.in_fd = c.proc.out_fd;
    c.rl.out_fd = rp[1];
    mtail = cf_malloc(CF_PG_MTAIL_MAX + 1);
    if (mtail)
        cf_pg__tar_init(&c.rl.tar, mtail);
    if (!mtail || pthread_create(&c.rl.th, NULL, relay_main, &c.rl) != 0) {
        close(rp[0]);
        close(rp[1]);
        rc = mtail ? cf_error_set(CF_EIO, 0, "unable to start a thread") : CF_ENOMEM;
        goto out;
    }
    c.rl.started = true;
    cf_backup_opts bo;
    memset(&bo, 0, sizeof(bo));
    bo.type = o->type;
    bo.tags = o->tags;
    bo.host = o->host;
    bo.stdin_name = "base.tar";
    bo.stdin_fd = rp[0];
    bo.source_kind = CF_PG_SOURCE_BASE;
    bo.progress = o->progress;
    bo.payload = o->payload;
    bo.threads = o->threads;
    bo.finish = bb_finish;
    bo.finish_payload = &c;
    char id[65];
    rc = cf_backup(repo, &bo, id, out_stats);
    close(rp[0]); /* a relay still writing gets EPIPE and ends */
    if (rc == 0) {
        memcpy(c.info.snapshot_id, id, 65);
        if (out_info)
            *out_info = c.info;
    }
out:
    if (c.spawned) {
        if (!c.waited) {
            /* the backup failed before pg_basebackup ended: stop it */
            int saved = rc;
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s", cf_error_last()->message);
            cf_pg__kill(&c.proc);
            if (c.rl.started)
                pthread_join(c.rl.th, NULL);
            cf_error_set(saved, 0, "%s", msg);
        }
        cf_pg__proc_free(&c.proc);
    }
    free(mtail);
    cf_argv_free(&a);
    cf_pg__target_free(&c.t);
    return rc;
}

/* ------------------------------------------------------------------ reading back */

/* A number field written as an integer or as decimal text (64-bit values): absent is 0;
 * negative, not a number, or above max is not valid. */
static bool num_or_text(uint64_t *out, json_t *pg, const char *key, uint64_t max)
{
    json_t *v = json_object_get(pg, key);
    *out = 0;
    if (!v)
        return true;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t)i > max)
            return false;
        *out = (uint64_t)i;
        return true;
    }
    const char *s = json_string_value(v), *end = NULL;
    return s && cf_pg__dec(out, s, &end, max) && *end == '\0';
}

int cf_pg__info_from_json(cf_pg_base_info *out, const char *doc_json)
{
    memset(out, 0, sizeof(*out));
    json_t *doc = json_loads(doc_json, 0, NULL);
    json_t *pg = doc ? json_object_get(doc, "postgres") : NULL;
    int rc = 0;
    if (!json_is_object(pg)) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "not a PostgreSQL base backup");
        goto out;
    }
    const char *s;
    if ((s = json_string_value(json_object_get(doc, "id"))))
        snprintf(out->snapshot_id, sizeof(out->snapshot_id), "%s", s);
    if ((s = json_string_value(json_object_get(doc, "time"))))
        cf_time_parse(&out->time_ns, s);
    uint64_t tli = 0, segsize = 0, version = 0;
    const struct {
        const char *key;
        uint64_t max;
        uint64_t *to;
    } nums[] = {
        {"timeline", UINT32_MAX, &tli},
        {"wal_segment_size", UINT32_MAX, &segsize},
        {"system_identifier", UINT64_MAX, &out->system_identifier},
        {"server_version", UINT32_MAX, &version},
        {"next_xid", UINT64_MAX, &out->next_xid},
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        if (!num_or_text(nums[i].to, pg, nums[i].key, nums[i].max)) {
            rc = cf_error_set(CF_ECORRUPT, 0,
                              "snapshot %.8s: its PostgreSQL field '%s' is not valid",
                              out->snapshot_id, nums[i].key);
            goto out;
        }
    out->timeline = (uint32_t)tli;
    out->wal_segment_size = (uint32_t)segsize;
    out->server_version = (uint32_t)version;
    if ((s = json_string_value(json_object_get(pg, "stop_time"))) &&
        cf_time_parse(&out->stop_time_ns, s) != 0)
        out->stop_time_ns = 0;
    out->from_standby = json_is_true(json_object_get(pg, "from_standby"));
    if (!cf_pg__valid_segsize(out->wal_segment_size))
        out->wal_segment_size = CF_PG_SEG_DEFAULT;
    const char *start = json_string_value(json_object_get(pg, "start_lsn"));
    const char *stop = json_string_value(json_object_get(pg, "stop_lsn"));
    const char *sw = json_string_value(json_object_get(pg, "start_wal"));
    const char *ew = json_string_value(json_object_get(pg, "stop_wal"));
    if (!start || !stop || !sw || !ew || strlen(sw) != 24 || strlen(ew) != 24 ||
        cf_pg_lsn_parse(&out->start_lsn, start) || cf_pg_lsn_parse(&out->stop_lsn, stop) ||
        out->timeline == 0) {
        rc = cf_error_set(CF_ECORRUPT, 0, "snapshot %.8s: its PostgreSQL fields are incomplete",
                          out->snapshot_id);
        goto out;
    }
    snprintf(out->start_wal, sizeof(out->start_wal), "%s", sw);
    snprintf(out->stop_wal, sizeof(out->stop_wal), "%s", ew);
    if ((s = json_string_value(json_object_get(pg, "cluster"))))
        snprintf(out->cluster, sizeof(out->cluster), "%s", s);
    if ((s = json_string_value(json_object_get(pg, "label"))))
        snprintf(out->label, sizeof(out->label), "%s", s);
out:
    json_decref(doc);
    return rc;
}

int cf_pg_base_info_get(cf_pg_base_info *out, const cf_snapshot *snap)
{
    memset(out, 0, sizeof(*out));
    const char *kind = cf_snapshot_source_kind(snap);
    if (!kind || strcmp(kind, CF_PG_SOURCE_BASE) != 0)
        return cf_error_set(CF_ENOTFOUND, 0, "snapshot %.8s is not a PostgreSQL base backup",
                            cf_snapshot_id(snap));
    char *text = cf_snapshot_to_json(snap);
    if (!text)
        return CF_ENOMEM;
    int rc = cf_pg__info_from_json(out, text);
    free(text);
    if (rc == 0) {
        snprintf(out->snapshot_id, sizeof(out->snapshot_id), "%s", cf_snapshot_id(snap));
        out->time_ns = cf_snapshot_time(snap);
    }
    return rc;
}

int cf_pg_base_list(cf_snapshot ***out, cf_pg_base_info **out_infos, size_t *out_count,
                    cf_repo *repo, const char *cluster)
{
    cf_snapshot **all = NULL;
    size_t n = 0, k = 0;
    *out = NULL;
    *out_count = 0;
    if (out_infos)
        *out_infos = NULL;
    int rc = cf_snapshot_list(&all, &n, repo, NULL);
    if (rc)
        return rc;
    cf_pg_base_info *infos = cf_calloc(n ? n : 1, sizeof(*infos));
    if (!infos) {
        cf_snapshot_list_free(all, n);
        return CF_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        cf_pg_base_info in;
        if (cf_pg_base_info_get(&in, all[i]) == 0 &&
            strcmp(in.cluster, cluster ? cluster : "") == 0) {
            all[k] = all[i];
            infos[k++] = in;
        } else {
            cf_snapshot_free(all[i]);
        }
    }
    cf_error_clear();
    *out = all;
    *out_count = k;
    if (out_infos)
        *out_infos = infos;
    else
        free(infos);
    return 0;
}
