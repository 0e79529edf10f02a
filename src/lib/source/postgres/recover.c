/*
 * recover.c - point-in-time recovery: choose the base backup that precedes the target,
 * extract it into a new data directory, write the recovery settings and signal file, check
 * the restore_command once, and optionally start the server and wait until it reached the
 * target.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "source/postgres/pg.h"

/* ------------------------------------------------------------------ time */

static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int cf_pg_time_parse(int64_t *out_ns, const char *s)
{
    const char *p = s;
    struct tm tm;
    int y, mo, d, h = 0, mi = 0, se = 0;
    long frac = 0;
    memset(&tm, 0, sizeof(tm));
    while (*p == ' ')
        p++;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        goto bad;
    if (*p == ' ' || *p == 'T') {
        if ((p[1] < '0' || p[1] > '9'))
            goto zone;
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
            goto bad;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &se))
                goto bad;
            if (*p == '.') {
                p++;
                int nd = 0;
                while (*p >= '0' && *p <= '9') {
                    if (nd < 9) {
                        frac = frac * 10 + (*p - '0');
                        nd++;
                    }
                    p++;
                }
                if (nd == 0)
                    goto bad;
                for (; nd < 9; nd++)
                    frac *= 10;
            }
        }
    }
zone:;
    bool utc = false;
    long off = 0;
    while (*p == ' ')
        p++;
    if (*p == 'Z' || *p == 'z') {
        utc = true;
        p++;
    } else if (strncmp(p, "UTC", 3) == 0 || strncmp(p, "GMT", 3) == 0) {
        utc = true;
        p += 3;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om = 0;
        p++;
        if (!digits(&p, 2, &oh))
            goto bad;
        if (*p == ':')
            p++;
        if (*p >= '0' && *p <= '9' && !digits(&p, 2, &om))
            goto bad;
        utc = true;
        off = sign * (oh * 3600L + om * 60L);
    }
    while (*p == ' ')
        p++;
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        goto bad;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    tm.tm_isdst = -1;
    time_t t = utc ? timegm(&tm) - off : mktime(&tm);
    *out_ns = (int64_t)t * 1000000000LL + frac;
    return 0;
bad:
    return cf_error_set(CF_EINVAL, 0,
                        "invalid time '%s': expected 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]'", s);
}

/* The instant as PostgreSQL reads it unambiguously: UTC, microseconds. */
static void pg_time_format(char out[48], int64_t ns)
{
    time_t t = (time_t)(ns / 1000000000LL);
    long us = (long)((ns % 1000000000LL) / 1000);
    if (us < 0) {
        us += 1000000;
        t--;
    }
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 48, "%04d-%02d-%02d %02d:%02d:%02d.%06ld+00", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

/* ------------------------------------------------------------------ files as the owner */

static int put_file(const char *path, const char *text, bool append, const cf_pg__user *u,
                    mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (append ? O_APPEND : O_TRUNC),
                  mode);
    if (fd < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to write '%s': %s", path,
                            strerror(errno));
    int rc = 0;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to write '%s': %s", path,
                              strerror(errno));
            break;
        }
        done += (size_t)n;
    }
    if (rc == 0 && u->change && fchown(fd, u->uid, u->gid) != 0)
        rc = cf_error_set(CF_EPERM, errno, "unable to give '%s' to user '%s': %s", path, u->name,
                          strerror(errno));
    if (rc == 0 && fsync(fd) != 0)
        rc = cf_error_set(CF_EIO, errno, "unable to write '%s': %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = cf_error_set(CF_EIO, errno, "unable to write '%s': %s", path, strerror(errno));
    return rc;
}

static int mkdir_owned(const char *path, const cf_pg__user *u)
{
    if (mkdir(path, 0700) != 0) {
        if (errno != EEXIST)
            return cf_error_set(cf_error_from_errno(errno), errno, "unable to create '%s': %s",
                                path, strerror(errno));
        return 0;
    }
    if (u->change && chown(path, u->uid, u->gid) != 0)
        return cf_error_set(CF_EPERM, errno, "unable to give '%s' to user '%s': %s", path,
                            u->name, strerror(errno));
    return 0;
}

static int prepare_dir(const char *dir, const cf_pg__user *u)
{
    struct stat st;
    if (lstat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return cf_error_set(CF_EEXISTS, 0, "restore target '%s' exists and is not a directory",
                                dir);
        DIR *d = opendir(dir);
        if (!d)
            return cf_error_set(cf_error_from_errno(errno), errno, "unable to read '%s': %s", dir,
                                strerror(errno));
        struct dirent *de;
        bool empty = true;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                empty = false;
        closedir(d);
        if (!empty) {
            int rc = cf_error_set(CF_EEXISTS, 0, "restore target '%s' is not empty", dir);
            cf_error_hint("restore into a new or empty directory (stop the server and move its "
                          "old data directory aside first)");
            return rc;
        }
    } else if (mkdir(dir, 0700) != 0) {
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to create '%s': %s", dir,
                            strerror(errno));
    }
    if (u->change && chown(dir, u->uid, u->gid) != 0)
        return cf_error_set(CF_EPERM, errno, "unable to give '%s' to user '%s': %s", dir, u->name,
                            strerror(errno));
    if (chmod(dir, 0700) != 0)
        return cf_error_set(CF_EPERM, errno, "unable to set the mode of '%s': %s", dir,
                            strerror(errno));
    return 0;
}

/* ------------------------------------------------------------------ choosing */

/* When a base backup ended: by the server's clock (what recovery_target_time compares
 * with), else by the snapshot's time. */
static int64_t stop_time(const cf_pg_base_info *in)
{
    return in->stop_time_ns ? in->stop_time_ns : in->time_ns;
}

static int choose(cf_snapshot **out_snap, cf_pg_base_info *out_info, cf_repo *repo,
                  const cf_pg_restore_opts *o, int64_t t_ns, uint64_t lsn, uint64_t xid)
{
    cf_snapshot **list = NULL;
    cf_pg_base_info *infos = NULL;
    size_t n = 0;
    int rc;
    *out_snap = NULL;
    if (o->snapshot) {
        cf_snapshot *s = NULL;
        if ((rc = cf_snapshot_find(&s, repo, o->snapshot, NULL)))
            return rc;
        if ((rc = cf_pg_base_info_get(out_info, s))) {
            cf_snapshot_free(s);
            return rc;
        }
        const char *why = NULL;
        if (o->target == CF_PG_TARGET_TIME && stop_time(out_info) > t_ns)
            why = "it ends after the target time";
        else if (o->target == CF_PG_TARGET_LSN && out_info->stop_lsn > lsn)
            why = "it ends after the target LSN";
        if (why) {
            rc = cf_error_set(CF_EINVAL, 0, "base backup %.8s cannot reach the target: %s",
                              cf_snapshot_id(s), why);
            cf_error_hint("choose an older base backup, or leave out --snapshot");
            cf_snapshot_free(s);
            return rc;
        }
        *out_snap = s;
        return 0;
    }
    if ((rc = cf_pg_base_list(&list, &infos, &n, repo, o->cluster)))
        return rc;
    if (n == 0) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "no PostgreSQL base backup%s%s in the repository",
                          o->cluster && *o->cluster ? " of cluster " : "",
                          o->cluster && *o->cluster ? o->cluster : "");
        goto out;
    }
    size_t pick = n;
    for (size_t i = 0; i < n; i++) {
        bool ok;
        switch (o->target) {
        case CF_PG_TARGET_TIME: ok = stop_time(&infos[i]) <= t_ns; break;
        case CF_PG_TARGET_LSN: ok = infos[i].stop_lsn <= lsn; break;
        case CF_PG_TARGET_XID: ok = infos[i].next_xid != 0 && infos[i].next_xid <= xid; break;
        default: ok = true; break;
        }
        if (ok)
            pick = i;
    }
    if (pick == n) {
        char when[40];
        cf_time_format(when, infos[0].time_ns);
        rc = cf_error_set(CF_ENOTFOUND, 0,
                          "no base backup precedes the target: the oldest one (%.8s) was taken "
                          "at %s",
                          cf_snapshot_id(list[0]), when);
        goto out;
    }
    *out_snap = list[pick];
    *out_info = infos[pick];
    list[pick] = NULL;
out:
    for (size_t i = 0; i < n; i++)
        cf_snapshot_free(list[i]);
    free(list);
    free(infos);
    return rc;
}

/* ------------------------------------------------------------------ extracting */

static int extract(cf_repo *repo, const cf_snapshot *snap, const char *dir,
                   const cf_pg__user *u)
{
    char tar[PATH_MAX];
    if (access("/usr/bin/tar", X_OK) == 0)
        snprintf(tar, sizeof(tar), "/usr/bin/tar");
    else if (access("/bin/tar", X_OK) == 0)
        snprintf(tar, sizeof(tar), "/bin/tar");
    else
        return cf_error_set(CF_ENOTFOUND, 0, "tar not found (/usr/bin/tar, /bin/tar)");
    char *const argv[] = {tar, CF_PG_STR("-x"), CF_PG_STR("-p"), CF_PG_STR("--no-same-owner"),
                          CF_PG_STR("-f"), CF_PG_STR("-"), CF_PG_STR("-C"), CF_PG_STR(dir), NULL};
    cf_pg__proc p;
    int rc = cf_pg__spawn(&p, argv, u, CF_PG_FD_PIPE, CF_PG_FD_NULL, NULL, NULL, 0, NULL);
    if (rc)
        return rc;
    const char *path = cf_snapshot_path_count(snap) ? cf_snapshot_path(snap, 0) : "/base.tar";
    cf_pg__sigpipe sp;
    cf_pg__sigpipe_block(&sp);
    int drc = cf_dump(repo, snap, path, p.in_fd);
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", drc ? cf_error_last()->message : "");
    close(p.in_fd);
    p.in_fd = -1;
    int code = 0;
    cf_pg__wait(&p, &code);
    cf_pg__sigpipe_restore(&sp);
    if (code != 0)
        rc = cf_pg__proc_error(&p, code);
    else if (drc)
        rc = cf_error_set(drc, 0, "%s", msg);
    cf_pg__proc_free(&p);
    return rc;
}

/* ------------------------------------------------------------------ settings */

static bool valid_setting_name(const char *s, size_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.'))
            return false;
    }
    return true;
}

static int add_setting(cf_buf *b, const char *name, const char *value)
{
    int rc = cf_buf_printf(b, "%s = ", name);
    if (rc == 0)
        rc = cf_pg__conf_quote(b, value);
    return rc ? rc : cf_buf_append_str(b, "\n");
}

static int recovery_conf(cf_buf *b, const cf_pg_restore_opts *o, const cf_pg_base_info *in,
                         const char *restore_command, const char *pgtime)
{
    char when[40];
    cf_time_format(when, cf_now_ns());
    int rc = cf_buf_printf(b,
                           "\n# Recovery settings written by coffer pg restore at %.19sZ from base "
                           "backup %.8s\n# (they apply only while recovery.signal or "
                           "standby.signal exists)\n",
                           when, in->snapshot_id);
    if (rc == 0)
        rc = add_setting(b, "restore_command", restore_command);
    switch (o->target) {
    case CF_PG_TARGET_TIME: rc = rc ? rc : add_setting(b, "recovery_target_time", pgtime); break;
    case CF_PG_TARGET_LSN:
        rc = rc ? rc : add_setting(b, "recovery_target_lsn", o->target_value);
        break;
    case CF_PG_TARGET_XID:
        rc = rc ? rc : add_setting(b, "recovery_target_xid", o->target_value);
        break;
    case CF_PG_TARGET_NAME:
        rc = rc ? rc : add_setting(b, "recovery_target_name", o->target_value);
        break;
    case CF_PG_TARGET_IMMEDIATE:
        rc = rc ? rc : add_setting(b, "recovery_target", "immediate");
        break;
    default: break;
    }
    if (o->target != CF_PG_TARGET_END) {
        if (o->target_exclusive && o->target != CF_PG_TARGET_IMMEDIATE)
            rc = rc ? rc : add_setting(b, "recovery_target_inclusive", "off");
        rc = rc ? rc
                : add_setting(b, "recovery_target_action",
                              o->target_action ? o->target_action : "promote");
    }
    if (o->target_timeline)
        rc = rc ? rc : add_setting(b, "recovery_target_timeline", o->target_timeline);
    cf_pg_archiving ar = o->archiving;
    if (ar == CF_PG_ARCHIVING_AUTO)
        ar = o->standby ? CF_PG_ARCHIVING_KEEP : CF_PG_ARCHIVING_OFF;
    if (ar == CF_PG_ARCHIVING_OFF && rc == 0)
        rc = cf_buf_append_str(b, "# the restored cluster does not archive (its new timeline "
                                  "would go into the same archive):\n# set archive_mode = on "
                                  "once it is to become the primary\narchive_mode = 'off'\n");
    for (const char *const *s = o->settings; rc == 0 && s && *s; s++) {
        const char *eq = strchr(*s, '=');
        if (!eq || !valid_setting_name(*s, (size_t)(eq - *s))) {
            rc = cf_error_set(CF_EINVAL, 0, "invalid setting '%s': expected name=value", *s);
            break;
        }
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - *s), *s);
        rc = add_setting(b, name, eq + 1);
    }
    return rc;
}

/* restore_command with %f, %p, %r and %% replaced (as PostgreSQL does). */
static char *expand_command(const char *cmd, const char *f, const char *path)
{
    cf_buf b;
    cf_buf_init(&b, 1 << 16);
    int rc = 0;
    for (const char *p = cmd; rc == 0 && *p; p++) {
        if (*p == '%' && p[1]) {
            p++;
            if (*p == 'f')
                rc = cf_buf_append_str(&b, f);
            else if (*p == 'p')
                rc = cf_buf_append_str(&b, path);
            else if (*p == 'r')
                rc = cf_buf_append_str(&b, "000000010000000000000001");
            else if (*p == '%')
                rc = cf_buf_append(&b, "%", 1);
            else
                rc = cf_buf_append(&b, p - 1, 2);
        } else {
            rc = cf_buf_append(&b, p, 1);
        }
    }
    if (rc == 0)
        rc = cf_buf_append(&b, "", 1);
    char *s = rc ? NULL : (char *)cf_buf_steal(&b, NULL);
    cf_buf_free(&b);
    return s;
}

/* Run restore_command once, as the server will, for the backup's first segment; the
 * segment it wrote goes into spool_dir (if given), where the server's first call takes it. */
static int verify_restore_command(const char *dir, const char *cmd, const cf_pg_base_info *in,
                                  const cf_pg__user *u, const char *spool_dir, bool *spooled)
{
    *spooled = false;
    char *tmp = cf_asprintf("%s/pg_wal/coffer-verify.tmp", dir);
    char *line = tmp ? expand_command(cmd, in->start_wal, tmp) : NULL;
    char **env = cf_pg__env_for(u);
    int rc = 0;
    if (!tmp || !line || !env) {
        rc = CF_ENOMEM;
        goto out;
    }
    char *const argv[] = {CF_PG_STR("/bin/sh"), CF_PG_STR("-c"), line, NULL};
    cf_pg__proc p;
    if ((rc = cf_pg__spawn(&p, argv, u, CF_PG_FD_NULL, CF_PG_FD_NULL, env, NULL, 0, NULL)))
        goto out;
    int code = 0;
    cf_pg__wait(&p, &code);
    struct stat st;
    if (code != 0) {
        char last[1024];
        cf_pg__last_line(&p, last, sizeof(last));
        rc = cf_error_set(CF_EGENERIC, 0,
                          "the restore_command failed (exit %d) fetching '%s' as OS user '%s'%s%s",
                          code, in->start_wal, u->name, *last ? ": " : "", last);
        cf_error_hint("the server runs it with its own environment: the repository, the "
                      "credential file and the coffer program must be readable by '%s'",
                      u->name);
    } else if (stat(tmp, &st) != 0 || (uint64_t)st.st_size != in->wal_segment_size) {
        rc = cf_error_set(CF_EGENERIC, 0,
                          "the restore_command succeeded but did not write '%s' (%s)",
                          in->start_wal, tmp);
    } else if (spool_dir) {
        /* the file is the server user's (restore_command wrote it): renamed, it stays so */
        *spooled = mkdir_owned(spool_dir, u) == 0 &&
                   cf_pg_spool_put(spool_dir, in->start_wal, tmp, true) == 0;
        cf_error_clear();
    }
    cf_pg__proc_free(&p);
    unlink(tmp);
out:
    cf_pg__env_free(env);
    free(line);
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------ starting */

static void log_tail(char *out, size_t len, const char *log)
{
    out[0] = '\0';
    char *text = NULL;
    if (cf_pg__read_text(&text, log, 8 << 20) != 0) {
        cf_error_clear();
        return;
    }
    /* the last FATAL/PANIC line if any, else the last line */
    const char *best = NULL;
    for (const char *p = text; (p = strstr(p, "FATAL:")); p++)
        best = p;
    if (!best)
        for (const char *p = text; (p = strstr(p, "PANIC:")); p++)
            best = p;
    if (!best) {
        size_t n = strlen(text);
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
            text[--n] = '\0';
        const char *nl = strrchr(text, '\n');
        best = nl ? nl + 1 : text;
    }
    size_t n = strcspn(best, "\n");
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), best);
    free(text);
}

static bool server_running(const char *dir)
{
    char *path = cf_asprintf("%s/postmaster.pid", dir);
    bool yes = path && access(path, F_OK) == 0;
    free(path);
    return yes;
}

static int start_and_wait(const char *dir, const cf_pg_restore_opts *o, const cf_pg__user *u,
                          cf_pg_restore_result *res)
{
    char ver[16] = "", bin[PATH_MAX], tail[1024];
    char *vpath = cf_asprintf("%s/PG_VERSION", dir), *vtext = NULL;
    char *log = o->log_file ? cf_pg__abspath(o->log_file)
                            : cf_asprintf("%s/coffer-restore.log", dir);
    char **env = cf_pg__env_for(u);
    cf_pg__target t;
    cf_pg__proc p;
    char tmo[16];
    int rc = 0;
    memset(&t, 0, sizeof(t));
    if (!vpath || !log || !env) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (cf_pg__read_text(&vtext, vpath, 64) == 0)
        snprintf(ver, sizeof(ver), "%.*s", (int)strcspn(vtext, "\n "), vtext);
    cf_error_clear();
    if ((rc = cf_pg__find_bin(bin, sizeof(bin), o->bindir, "pg_ctl", ver)))
        goto out;
    if ((rc = put_file(log, "", true, u, 0600)))
        goto out;
    double timeout = o->wait_timeout > 0 ? o->wait_timeout : 600;
    snprintf(tmo, sizeof(tmo), "%.0f", timeout);
    char *const argv[] = {bin, CF_PG_STR("-D"), CF_PG_STR(dir), CF_PG_STR("-l"), log,
                          CF_PG_STR("-w"), CF_PG_STR("-t"), tmo, CF_PG_STR("start"), NULL};
    cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_INFO,
               "starting PostgreSQL %s on '%s' (log: %s)", ver, dir, log);
    double t0 = cf_mono_seconds();
    if ((rc = cf_pg__spawn(&p, argv, u, CF_PG_FD_NULL, CF_PG_FD_NULL, env, o->on_message,
                           CF_PG_MSG_DETAIL, o->payload)))
        goto out;
    int code = 0;
    cf_pg__wait(&p, &code);
    cf_pg__proc_free(&p);
    res->started = true;
    const char *action = o->target_action ? o->target_action : "promote";
    bool want_shutdown = o->target != CF_PG_TARGET_END && strcmp(action, "shutdown") == 0;
    if (code != 0 && !want_shutdown) {
        log_tail(tail, sizeof(tail), log);
        rc = cf_error_set(CF_EGENERIC, 0, "the restored server did not start: %s",
                          *tail ? tail : "see its log");
        cf_error_hint("its log is '%s'", log);
        goto out;
    }
    /* where to ask: the socket directory and port the server wrote */
    char *pidpath = cf_asprintf("%s/postmaster.pid", dir), *pid = NULL;
    if (pidpath && cf_pg__read_text(&pid, pidpath, 64 * 1024) == 0) {
        char *line = pid;
        for (int i = 1; line && i <= 5; i++) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            if (i == 4 && *line)
                t.port = cf_strdup(line);
            if (i == 5 && *line)
                t.host = cf_strdup(line);
            line = nl ? nl + 1 : NULL;
        }
    }
    cf_error_clear();
    free(pidpath);
    free(pid);
    if (!t.host)
        t.host = cf_strdup("127.0.0.1");
    t.dbname = cf_strdup("template1");
    t.bindir = o->bindir ? cf_strdup(o->bindir) : NULL;
    t.os = *u; /* borrowed: its groups are not freed through t */
    const char *query = NULL, *want = NULL;
    if (want_shutdown) {
        snprintf(res->state, sizeof(res->state), "shut down");
    } else if (o->standby && o->target == CF_PG_TARGET_END) {
        snprintf(res->state, sizeof(res->state), "standby");
    } else if (o->target == CF_PG_TARGET_END || strcmp(action, "promote") == 0) {
        query = "select pg_is_in_recovery()";
        want = "f";
        snprintf(res->state, sizeof(res->state), "promoted");
    } else {
        query = "select pg_is_wal_replay_paused()";
        want = "t";
        snprintf(res->state, sizeof(res->state), "paused");
    }
    for (;;) {
        if (want_shutdown) {
            if (!server_running(dir))
                break;
        } else if (query) {
            char *ans = NULL;
            int qrc = cf_pg__psql(&ans, &t, query);
            bool done = qrc == 0 && strncmp(ans, want, 1) == 0;
            free(ans);
            if (done)
                break;
            if (!server_running(dir)) {
                log_tail(tail, sizeof(tail), log);
                rc = cf_error_set(CF_EGENERIC, 0, "the restored server stopped during recovery: %s",
                                  *tail ? tail : "see its log");
                cf_error_hint("its log is '%s'", log);
                goto out;
            }
        } else {
            break;
        }
        if (cf_mono_seconds() - t0 > timeout) {
            rc = cf_error_set(CF_EGENERIC, 0, "the restored server did not reach the recovery "
                                              "target within %.0f s",
                              timeout);
            cf_error_hint("it is still running; its log is '%s'", log);
            goto out;
        }
        cf_pg__sleep(0.1);
    }
    if (want_shutdown) {
        log_tail(tail, sizeof(tail), log);
        if (strstr(tail, "FATAL") || strstr(tail, "PANIC")) {
            rc = cf_error_set(CF_EGENERIC, 0, "recovery failed: %s", tail);
            cf_error_hint("its log is '%s'", log);
            goto out;
        }
    }
    res->recovery_seconds = cf_mono_seconds() - t0;
out:
    t.os.groups = NULL;
    t.os.ngroups = 0;
    cf_pg__target_free(&t);
    cf_pg__env_free(env);
    free(vpath);
    free(vtext);
    free(log);
    return rc;
}

/* ------------------------------------------------------------------ the whole restore */

int cf_pg_restore(cf_repo *repo, const cf_pg_restore_opts *o, cf_pg_restore_result *out)
{
    cf_pg_restore_result res;
    cf_pg__user u;
    cf_snapshot *snap = NULL;
    cf_buf conf, envb;
    char *dir = NULL, *env_file = NULL, *path = NULL;
    int64_t t_ns = 0;
    uint64_t lsn = 0, xid = 0;
    char pgtime[48] = "";
    int rc = 0;
    memset(&res, 0, sizeof(res));
    memset(&u, 0, sizeof(u));
    cf_buf_init(&conf, 1 << 20);
    cf_buf_init(&envb, 1 << 20);
    if (!o->target_dir || !*o->target_dir) {
        rc = cf_error_set(CF_EINVAL, 0, "no target directory given");
        goto out;
    }
    if (o->cluster && *o->cluster && !cf_pg__valid_cluster(o->cluster)) {
        rc = cf_error_set(CF_EINVAL, 0, "invalid cluster name '%s'", o->cluster);
        goto out;
    }
    if (o->target_action && strcmp(o->target_action, "promote") != 0 &&
        strcmp(o->target_action, "pause") != 0 && strcmp(o->target_action, "shutdown") != 0) {
        rc = cf_error_set(CF_EINVAL, 0, "invalid target action '%s' (promote, pause, shutdown)",
                          o->target_action);
        goto out;
    }
    bool needs_value = o->target == CF_PG_TARGET_TIME || o->target == CF_PG_TARGET_LSN ||
                       o->target == CF_PG_TARGET_XID || o->target == CF_PG_TARGET_NAME;
    if (needs_value && (!o->target_value || !*o->target_value)) {
        rc = cf_error_set(CF_EINVAL, 0, "the recovery target needs a value");
        goto out;
    }
    if (o->target == CF_PG_TARGET_TIME) {
        if ((rc = cf_pg_time_parse(&t_ns, o->target_value)))
            goto out;
        pg_time_format(pgtime, t_ns);
    } else if (o->target == CF_PG_TARGET_LSN) {
        if ((rc = cf_pg_lsn_parse(&lsn, o->target_value)))
            goto out;
    } else if (o->target == CF_PG_TARGET_XID) {
        char *end;
        errno = 0;
        xid = strtoull(o->target_value, &end, 10);
        if (end == o->target_value || *end || errno || xid < 3) {
            rc = cf_error_set(CF_EINVAL, 0, "invalid transaction id '%s'", o->target_value);
            goto out;
        }
    }
    if (!(dir = cf_pg__abspath(o->target_dir))) {
        rc = cf_error_last()->code ? cf_error_last()->code : CF_ENOMEM;
        goto out;
    }
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dir[--dl] = '\0';
    const char *owner = o->owner;
    if (!owner && geteuid() == 0)
        owner = "postgres";
    if ((rc = cf_pg__user_lookup(&u, owner)))
        goto out;
    if ((rc = choose(&snap, &res.base, repo, o, t_ns, lsn, xid)))
        goto out;
    if (o->target == CF_PG_TARGET_XID && res.base.next_xid == 0 && !o->snapshot)
        cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_WARNING,
                   "the base backup does not record its last transaction id");
    {
        char when[40], stop[20];
        cf_time_format(when, res.base.time_ns);
        cf_pg_lsn_format(stop, res.base.stop_lsn);
        cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_INFO,
                   "restoring base backup %.8s (%.19sZ, timeline %u, stop LSN %s) into '%s'",
                   res.base.snapshot_id, when, res.base.timeline, stop, dir);
    }
    if ((rc = prepare_dir(dir, &u)))
        goto out;
    double t0 = cf_mono_seconds();
    /* a shared lock while reading, so that prune does not remove what is being restored */
    if ((rc = cf_repo_lock(repo, CF_LOCK_READ)))
        goto out;
    rc = extract(repo, snap, dir, &u);
    cf_repo_unlock(repo);
    if (rc)
        goto out;
    res.extract_seconds = cf_mono_seconds() - t0;
    if (!(path = cf_asprintf("%s/backup_label", dir))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (access(path, F_OK) != 0) {
        rc = cf_error_set(CF_ECORRUPT, 0, "snapshot %.8s is not a base backup: it has no "
                                          "backup_label",
                          res.base.snapshot_id);
        goto out;
    }
    free(path);
    if (!(path = cf_asprintf("%s/pg_wal", dir)) || (rc = mkdir_owned(path, &u)))
        goto out;
    free(path);
    if (!(path = cf_asprintf("%s/pg_wal/archive_status", dir)) || (rc = mkdir_owned(path, &u)))
        goto out;
    /* the environment file restore_command reads (credentials: 0600, the server's user) */
    if (o->env_file) {
        if (!(env_file = cf_pg__abspath(o->env_file))) {
            rc = CF_ENOMEM;
            goto out;
        }
        rc = cf_buf_append_str(&envb, "# written by coffer pg restore: the repository that "
                                      "restore_command reads WAL from\n");
        for (const char *const *l = o->env_lines; rc == 0 && l && *l; l++) {
            if (strchr(*l, '\n') || !strchr(*l, '=')) {
                rc = cf_error_set(CF_EINVAL, 0, "invalid environment line");
                break;
            }
            rc = cf_buf_printf(&envb, "%s\n", *l);
        }
        if (rc == 0)
            rc = cf_buf_append(&envb, "", 1);
        if (rc || (rc = put_file(env_file, (const char *)envb.data, false, &u, 0600)))
            goto out;
        chmod(env_file, 0600);
    }
    const char *cmd = o->restore_command ? o->restore_command : "coffer wal-fetch %f %p";
    if ((rc = recovery_conf(&conf, o, &res.base, cmd, pgtime)) ||
        (rc = cf_buf_append(&conf, "", 1)))
        goto out;
    free(path);
    if (!(path = cf_asprintf("%s/postgresql.auto.conf", dir)) ||
        (rc = put_file(path, (const char *)conf.data, true, &u, 0600)))
        goto out;
    free(path);
    if (!(path = cf_asprintf("%s/%s", dir, o->standby ? "standby.signal" : "recovery.signal")) ||
        (rc = put_file(path, "", false, &u, 0600)))
        goto out;
    cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_INFO,
               "wrote the recovery settings to postgresql.auto.conf and %s",
               o->standby ? "standby.signal" : "recovery.signal");
    if (!o->no_verify) {
        bool spooled = false;
        if ((rc = verify_restore_command(dir, cmd, &res.base, &u, o->spool_dir, &spooled)))
            goto out;
        cf_pg__msg(o->on_message, o->payload, CF_PG_MSG_DETAIL,
                   "restore_command works as OS user '%s' (fetched %s%s)", u.name,
                   res.base.start_wal, spooled ? ", kept in the prefetch spool" : "");
    }
    if (o->start && (rc = start_and_wait(dir, o, &u, &res)))
        goto out;
out:
    if (out)
        *out = res;
    cf_snapshot_free(snap);
    cf_pg__user_free(&u);
    cf_buf_free(&conf);
    if (envb.data)
        cf_wipe(envb.data, envb.len);
    cf_buf_free(&envb);
    free(dir);
    free(env_file);
    free(path);
    return rc;
}
