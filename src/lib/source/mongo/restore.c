/*
 * restore.c - MongoDB restores: a dump snapshot streamed into `mongorestore --archive`
 * (with --oplogReplay for a dump taken with --oplog), its exit status checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "source/mongo/mongo_src.h"

static int find_dump(cf_snapshot **out, cf_mongo_info *info, cf_repo *repo, const char *spec)
{
    *out = NULL;
    if (spec && strcmp(spec, "latest") != 0) {
        int rc = cf_snapshot_find(out, repo, spec, NULL);
        if (rc == 0 && (rc = cf_mongo_info_get(info, *out)) != 0) {
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
    for (size_t i = n; i-- > 0;) { /* oldest first: the newest is last */
        cf_mongo_info inf;
        if (cf_mongo_info_get(&inf, list[i]) != 0)
            continue;
        *out = list[i];
        list[i] = NULL;
        *info = inf;
        break;
    }
    cf_error_clear();
    cf_snapshot_list_free(list, n);
    if (!*out)
        return cf_error_set(CF_ENOTFOUND, 0, "no MongoDB dump in the repository");
    return 0;
}

int cf_mongo_restore(cf_repo *repo, const cf_mongo_restore_opts *o, cf_mongo_restore_result *out)
{
    cf_mongo_restore_result res;
    cf_snapshot *snap = NULL;
    cf_argv a = {0};
    cf_mongo__proc p;
    char prog[PATH_MAX], config[PATH_MAX] = "";
    int fds[2] = {-1, -1};
    bool spawned = false;
    int rc;
    memset(&res, 0, sizeof(res));
    if ((o->ns_from == NULL) != (o->ns_to == NULL)) {
        rc = cf_error_set(CF_EINVAL, 0, "--ns-from and --ns-to go together");
        goto out;
    }
    if (o->conn.uri && (o->conn.host || o->conn.port)) {
        rc = cf_error_set(CF_EINVAL, 0, "a MongoDB URI cannot be combined with --host or "
                          "--port");
        goto out;
    }
    if ((rc = find_dump(&snap, &res.base, repo, o->snapshot)))
        goto out;
    if ((rc = cf_mongo__find(prog, sizeof(prog), o->conn.tool, "mongorestore")))
        goto out;
    res.oplog_replay = res.base.oplog && !o->no_oplog_replay;
    if ((rc = cf_mongo__config_write(config, sizeof(config), &o->conn)) ||
        (rc = cf_mongo__argv_start(&a, prog, config, &o->conn)))
        goto out;
    if (o->drop && (rc = cf_argv_add(&a, "--drop")))
        goto out;
    for (const char *const *x = o->ns_include; x && *x; x++)
        if ((rc = cf_argv_addf(&a, "--nsInclude=%s", *x)))
            goto out;
    if (o->ns_from && ((rc = cf_argv_addf(&a, "--nsFrom=%s", o->ns_from)) ||
                       (rc = cf_argv_addf(&a, "--nsTo=%s", o->ns_to))))
        goto out;
    if (res.oplog_replay && (rc = cf_argv_add(&a, "--oplogReplay")))
        goto out;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to create a pipe: %s", strerror(errno));
        goto out;
    }
    double t0 = cf_mono_seconds();
    if ((rc = cf_mongo__spawn(&p, a.v, fds[0], CF_MONGO_FD_NULL)))
        goto out;
    spawned = true;
    close(fds[0]);
    fds[0] = -1;
    cf_mongo__msg(o->on_message, o->payload, "restoring %.8s (%llu bytes) into %s%s",
                  res.base.snapshot_id, (unsigned long long)res.base.bytes, prog,
                  res.oplog_replay ? " with --oplogReplay" : "");
    /* a mongorestore that stops reading is an EPIPE here, not a signal that kills coffer */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    const char *path = cf_snapshot_path_count(snap) ? cf_snapshot_path(snap, 0)
                                                    : "/" CF_MONGO_FILE_NAME;
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
    cf_mongo__wait(&p, &code);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    res.seconds = cf_mono_seconds() - t0;
    if (code != 0) {
        rc = cf_error_wrap(cf_mongo__fail(&p, code, o->on_message, o->payload),
                           "restoring snapshot %.8s failed", res.base.snapshot_id);
    } else if (drc) {
        cf_error_restore(&es);
        if (es.sys == EPIPE)
            rc = cf_error_set(CF_EGENERIC, EPIPE, "%s exited 0 before reading the whole archive "
                              "of snapshot %.8s", p.prog, res.base.snapshot_id);
        else
            rc = drc;
    }
out:
    if (spawned) {
        cf_error_saved es2;
        cf_error_save(&es2);
        cf_mongo__kill(&p);
        cf_mongo__proc_free(&p);
        cf_error_restore(&es2);
    }
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    cf_mongo__config_remove(config);
    cf_argv_free(&a);
    cf_snapshot_free(snap);
    if (out)
        *out = res;
    return rc;
}
