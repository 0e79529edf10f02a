/*
 * restore.c - point-in-time restore of MariaDB/MySQL: the dump at or before the target time
 * loaded into a server through the mariadb client, then the archived binlogs from the
 * dump's position replayed with mariadb-binlog (--stop-datetime in UTC) into the client.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "source/mariadb/my.h"

static const char *const clients[] = {"mariadb", "mysql", NULL};
static const char *const binlog_tools[] = {"mariadb-binlog", "mysqlbinlog", NULL};

typedef struct {
    char *name;
    uint64_t index;
} binlog_ent;

bool cf_my__split_binlog_name(const char *name, size_t *base_len, uint64_t *index)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || !dot[1])
        return false;
    uint64_t v = 0;
    for (const char *p = dot + 1; *p; p++) {
        if (*p < '0' || *p > '9' || v > UINT64_MAX / 10 - 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *base_len = (size_t)(dot - name);
    *index = v;
    return true;
}

static int cmp_ent(const void *a, const void *b)
{
    const binlog_ent *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int find_dump(cf_snapshot **out, cf_mariadb_info *info, cf_repo *repo,
                     const cf_mariadb_restore_opts *o, int64_t t)
{
    *out = NULL;
    if (o->snapshot) {
        int rc = cf_snapshot_find(out, repo, o->snapshot, NULL);
        if (rc == 0 && (rc = cf_mariadb_info_get(info, *out)) != 0) {
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
    int64_t best_t = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        cf_mariadb_info inf;
        if (cf_mariadb_info_get(&inf, list[i]) != 0)
            continue;
        if (o->server && strcmp(inf.server, o->server) != 0)
            continue;
        if (inf.time_ns > t || inf.time_ns < best_t)
            continue;
        cf_snapshot_free(*out);
        *out = list[i];
        list[i] = NULL;
        *info = inf;
        best_t = inf.time_ns;
    }
    cf_error_clear();
    cf_snapshot_list_free(list, n);
    if (!*out) {
        char when[40] = "";
        if (o->time_ns)
            cf_time_format(when, o->time_ns);
        return cf_error_set(CF_ENOTFOUND, 0, "no MariaDB dump%s%s%s%s in the repository",
                            o->server ? " of server " : "", o->server ? o->server : "",
                            o->time_ns ? " at or before " : "", when);
    }
    return 0;
}

static int load_dump(cf_repo *repo, const cf_snapshot *snap, const cf_mariadb_conn *conn)
{
    cf_argv a = {0};
    cf_my__proc p;
    int fds[2] = {-1, -1};
    int rc;
    if ((rc = cf_my__argv_start(&a, conn, clients)) || (rc = cf_my__pipe(fds)))
        goto out;
    rc = cf_my__spawn(&p, a.v, fds[0], CF_MY_FD_NULL, conn, NULL);
    close(fds[0]);
    fds[0] = -1;
    if (rc)
        goto out;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    const char *path = cf_snapshot_path_count(snap) ? cf_snapshot_path(snap, 0) : "/dump.sql";
    int drc = cf_repo_lock(repo, CF_LOCK_READ);
    if (drc == 0) {
        drc = cf_dump(repo, snap, path, fds[1]);
        cf_repo_unlock(repo);
    }
    cf_error_saved es;
    cf_error_save(&es);
    close(fds[1]);
    fds[1] = -1;
    int code = 0;
    cf_my__wait(&p, &code);
    /* drop a SIGPIPE raised while the client was gone */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (code != 0)
        rc = cf_error_wrap(cf_my__fail(&p, code), "loading the dump failed");
    else if (drc) {
        cf_error_restore(&es);
        rc = drc;
    }
    cf_my__proc_free(&p);
out:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    cf_argv_free(&a);
    return rc;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to create '%s': %s", path,
                            strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return cf_error_set(cf_error_from_errno(e), e, "unable to write '%s': %s", path,
                                strerror(e));
        }
        done += (size_t)w;
    }
    close(fd);
    return 0;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *p = cf_asprintf("%s/%s", dir, e->d_name);
            if (p)
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int replay(cf_repo *repo, const cf_mariadb_restore_opts *o, const cf_mariadb_info *info,
                  const char *server, cf_mariadb_restore_result *res)
{
    char **names = NULL, *dir = NULL;
    size_t nnames = 0, nb = 0;
    binlog_ent *bl = NULL;
    cf_argv ab = {0}, ac = {0};
    int fds[2] = {-1, -1};
    int rc;
    size_t want_base;
    uint64_t want_index;
    if (!cf_my__split_binlog_name(info->binlog_file, &want_base, &want_index))
        return cf_error_set(CF_EINVAL, 0, "unexpected binlog file name '%s'", info->binlog_file);
    if ((rc = cf_my__archived(&names, &nnames, repo, server)))
        return rc;
    if (!(bl = cf_calloc(nnames ? nnames : 1, sizeof(*bl)))) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nnames; i++) {
        size_t bl_len;
        uint64_t idx;
        if (!cf_my__split_binlog_name(names[i], &bl_len, &idx) || bl_len != want_base ||
            strncmp(names[i], info->binlog_file, want_base) != 0 || idx < want_index)
            continue;
        bl[nb].name = names[i];
        bl[nb++].index = idx;
    }
    qsort(bl, nb, sizeof(*bl), cmp_ent);
    if (nb == 0 || bl[0].index != want_index) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "binlog '%s' (the dump's position) is not archived "
                          "for server '%s'", info->binlog_file, server);
        cf_error_hint("run FLUSH BINARY LOGS and 'coffer mariadb binlog-push' on the source, or "
                      "restore the dump alone with --dump-only");
        goto out;
    }
    for (size_t i = 1; i < nb; i++)
        if (bl[i].index != bl[i - 1].index + 1) {
            rc = cf_error_set(CF_ECORRUPT, 0, "archived binlogs of server '%s' have a gap: "
                              "the one after '%s' is missing", server, bl[i - 1].name);
            goto out;
        }
    const char *td = o->tmp_dir ? o->tmp_dir : getenv("TMPDIR");
    if (!(dir = cf_asprintf("%s/coffer-binlog.XXXXXX", td && *td ? td : "/tmp"))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (!mkdtemp(dir)) {
        rc = cf_error_set(CF_EIO, errno, "unable to create a directory in '%s': %s",
                          td && *td ? td : "/tmp", strerror(errno));
        free(dir);
        dir = NULL;
        goto out;
    }
    if ((rc = cf_my__argv_start(&ab, &(cf_mariadb_conn){.bindir = o->conn.bindir}, binlog_tools)))
        goto out;
    /* the first option: not the client option files of this machine */
    if ((rc = cf_argv_add(&ab, "--no-defaults")) ||
        (rc = cf_argv_addf(&ab, "--start-position=%llu",
                               (unsigned long long)info->binlog_pos)))
        goto out;
    if (o->time_ns) {
        time_t secs = (time_t)(o->time_ns / 1000000000LL);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(res->stop_datetime, sizeof(res->stop_datetime), "%Y-%m-%d %H:%M:%S", &tm);
        if ((rc = cf_argv_addf(&ab, "--stop-datetime=%s", res->stop_datetime)))
            goto out;
    }
    for (size_t i = 0; i < nb; i++) {
        uint8_t *data = NULL;
        size_t len = 0;
        char objname[512];
        snprintf(objname, sizeof(objname), "%s/%s", server, bl[i].name);
        if ((rc = cf_archive_get(repo, CF_MARIADB_ARCHIVE_KIND, objname, &data, &len))) {
            rc = cf_error_wrap(rc, "unable to fetch binlog '%s'", bl[i].name);
            goto out;
        }
        char *path = cf_asprintf("%s/%s", dir, bl[i].name);
        rc = path ? write_file(path, data, len) : CF_ENOMEM;
        free(data);
        if (rc == 0)
            rc = cf_argv_add(&ab, path);
        free(path);
        if (rc)
            goto out;
    }
    if ((rc = cf_my__argv_start(&ac, &o->conn, clients)) || (rc = cf_my__pipe(fds)))
        goto out;
    cf_my__proc pc, pb;
    if ((rc = cf_my__spawn(&pc, ac.v, fds[0], CF_MY_FD_NULL, &o->conn, NULL)))
        goto out;
    static const char *const utc[] = {"TZ=UTC", NULL};
    rc = cf_my__spawn(&pb, ab.v, CF_MY_FD_NULL, fds[1], NULL, utc);
    close(fds[0]);
    close(fds[1]);
    fds[0] = fds[1] = -1;
    int cb = 0, cc = 0;
    if (rc == 0)
        cf_my__wait(&pb, &cb);
    cf_my__wait(&pc, &cc);
    if (rc == 0 && cb != 0)
        rc = cf_error_wrap(cf_my__fail(&pb, cb), "replaying binlogs failed");
    else if (rc == 0 && cc != 0)
        rc = cf_error_wrap(cf_my__fail(&pc, cc), "replaying binlogs failed");
    cf_my__proc_free(&pb);
    cf_my__proc_free(&pc);
    if (rc == 0)
        res->binlogs = (uint32_t)nb;
out:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (dir) {
        remove_dir(dir);
        free(dir);
    }
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    free(bl);
    cf_argv_free(&ab);
    cf_argv_free(&ac);
    return rc;
}

int cf_mariadb_restore(cf_repo *repo, const cf_mariadb_restore_opts *o,
                       cf_mariadb_restore_result *out)
{
    cf_mariadb_restore_result res;
    cf_snapshot *snap = NULL;
    int rc;
    memset(&res, 0, sizeof(res));
    int64_t t = o->time_ns ? o->time_ns : INT64_MAX;
    if ((rc = find_dump(&snap, &res.base, repo, o, t)))
        goto out;
    const char *server = o->server ? o->server : res.base.server;
    if (!cf_my__valid_server(server)) {
        rc = cf_error_set(CF_EINVAL, 0, "invalid server name '%s'", server);
        goto out;
    }
    if (!o->dump_only && !res.base.has_binlog && o->time_ns) {
        rc = cf_error_set(CF_EUNSUPPORTED, 0, "dump %.8s has no binlog position: it cannot "
                          "start a point-in-time restore", res.base.snapshot_id);
        cf_error_hint("restore it alone with --dump-only");
        goto out;
    }
    cf_my__msg(o->on_message, o->payload, "loading dump %.8s (binlog %s:%llu)",
               res.base.snapshot_id, res.base.has_binlog ? res.base.binlog_file : "-",
               (unsigned long long)res.base.binlog_pos);
    double t0 = cf_mono_seconds();
    if ((rc = load_dump(repo, snap, &o->conn)))
        goto out;
    res.load_seconds = cf_mono_seconds() - t0;
    if (o->dump_only || !res.base.has_binlog)
        goto out;
    t0 = cf_mono_seconds();
    rc = replay(repo, o, &res.base, server, &res);
    res.replay_seconds = cf_mono_seconds() - t0;
    if (rc == 0)
        cf_my__msg(o->on_message, o->payload, "replayed %u binlogs from %s:%llu%s%s",
                   res.binlogs, res.base.binlog_file, (unsigned long long)res.base.binlog_pos,
                   res.stop_datetime[0] ? " up to " : " to the end", res.stop_datetime);
out:
    cf_snapshot_free(snap);
    if (out)
        *out = res;
    return rc;
}
