/*
 * lock.c - repository locks: sealed documents under locks/ naming host, pid and time. Shared
 * locks (backup, restore, check) coexist; an exclusive lock (prune, key removal) excludes all
 * others. A lock is stale when its process is gone (same host) or it was not refreshed for
 * CF_LOCK_STALE_SECONDS. Readers go on without a lock where the storage refuses writes.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "repo/repo.h"

typedef struct {
    char name[80];
    char host[256];
    long long pid;
    int64_t time;
    bool exclusive;
    bool readable;
} lock_info;

typedef struct {
    lock_info *v;
    size_t n, cap;
    cf_repo *r;
} lock_list;

static int read_lock(cf_repo *r, const char *name, lock_info *out)
{
    cf_buf b;
    cf_buf_init(&b, 1 << 20);
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", name);
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    int rc = cf_repo__get_object(&b, r, "locks", CF_OBJ_LOCK, base);
    if (rc == 0) {
        json_error_t jerr;
        json_t *doc = json_loadb((const char *)b.data, b.len, 0, &jerr);
        const char *host = NULL;
        json_int_t pid = 0, t = 0;
        int excl = 0;
        if (doc && json_unpack(doc, "{s:s, s:I, s:I, s:b}", "host", &host, "pid", &pid, "time", &t,
                               "exclusive", &excl) == 0) {
            snprintf(out->host, sizeof(out->host), "%s", host);
            out->pid = pid;
            out->time = t;
            out->exclusive = excl;
            out->readable = true;
        }
        json_decref(doc);
    }
    cf_buf_free(&b);
    return rc;
}

static int collect(const char *name, uint64_t size, void *payload)
{
    (void)size;
    lock_list *l = payload;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        lock_info *p = cf_realloc(l->v, ncap * sizeof(*p));
        if (!p)
            return CF_ENOMEM;
        l->v = p;
        l->cap = ncap;
    }
    int rc = read_lock(l->r, name, &l->v[l->n]);
    if (rc == CF_ENOTFOUND)
        return 0; /* released while listing */
    if (rc == CF_ENOMEM)
        return rc;
    l->n++; /* unreadable locks are kept with readable=false */
    return 0;
}

static bool is_stale(const lock_info *l)
{
    char host[256];
    if (!l->readable)
        return false;
    int64_t age = (cf_now_ns() - l->time) / 1000000000LL;
    if (age > CF_LOCK_STALE_SECONDS)
        return true;
    if (gethostname(host, sizeof(host)) == 0 && strcmp(host, l->host) == 0 && l->pid > 0) {
        if (kill((pid_t)l->pid, 0) != 0 && errno == ESRCH)
            return true;
    }
    return false;
}

static int write_lock(cf_repo *r, cf_lock_mode mode)
{
    char host[256], hex[65], name[80];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    json_t *doc = json_pack("{s:s, s:I, s:I, s:b}", "host", host, "pid", (json_int_t)getpid(),
                            "time", (json_int_t)cf_now_ns(), "exclusive", mode == CF_LOCK_EXCLUSIVE);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return CF_ENOMEM;
    cf_buf sealed;
    cf_buf_init(&sealed, 0);
    int rc = cf_repo__seal_object(&sealed, r, CF_OBJ_LOCK, text, strlen(text));
    free(text);
    if (rc)
        goto out;
    /* lock names are the hash of their content, like every other object */
    uint8_t h[32];
    cf_sha256(h, sealed.data, sealed.len);
    cf_hex_encode(hex, h, 32);
    snprintf(name, sizeof(name), "locks/%s", hex);
    if ((rc = cf_storage_put(r->st, name, sealed.data, sealed.len, CF_PUT_EXCLUSIVE)))
        goto out;
    if (r->lock_name[0] && strcmp(r->lock_name, name) != 0)
        cf_storage_remove(r->st, r->lock_name);
    snprintf(r->lock_name, sizeof(r->lock_name), "%s", name);
    r->lock_mode = mode;
    r->lock_refreshed = cf_mono_seconds();
out:
    cf_buf_free(&sealed);
    return rc;
}

/* Look for a lock that conflicts with mode, ignoring our own. */
static int find_conflict(cf_repo *r, cf_lock_mode mode)
{
    lock_list l = {NULL, 0, 0, r};
    int rc = cf_storage_list(r->st, "locks/", collect, &l);
    if (rc)
        goto out;
    for (size_t i = 0; i < l.n; i++) {
        const lock_info *k = &l.v[i];
        if (r->lock_name[0] && strcmp(k->name, r->lock_name) == 0)
            continue;
        if (is_stale(k))
            continue;
        if (mode == CF_LOCK_EXCLUSIVE || k->exclusive || !k->readable) {
            char when[40];
            cf_time_format(when, k->time);
            if (k->readable)
                rc = cf_error_set(CF_ELOCKED, 0,
                                  "repository '%s' is locked %s by pid %lld on '%s' since %.19s",
                                  cf_storage_display(r->st), k->exclusive ? "exclusively" : "",
                                  k->pid, k->host, when);
            else
                rc = cf_error_set(CF_ELOCKED, 0, "repository '%s' has an unreadable lock '%s'",
                                  cf_storage_display(r->st), k->name);
            cf_error_hint(k->readable ? "if that process is gone, run 'coffer unlock'"
                                      : "run 'coffer unlock' to remove it");
            goto out;
        }
    }
out:
    free(l.v);
    return rc;
}

void cf_repo_set_notice(cf_repo *r, cf_notice_cb cb, void *payload)
{
    r->notice = cb;
    r->notice_payload = payload;
}

int cf_repo_lock(cf_repo *r, cf_lock_mode mode)
{
    int rc = find_conflict(r, mode);
    if (rc)
        return rc;
    if ((rc = write_lock(r, mode))) {
        if (mode != CF_LOCK_READ || (rc != CF_EPERM && rc != CF_ESTORAGE_AUTH))
            return rc;
        /* a reader on storage it may not write to (a read-only mount, read-only credentials
         * of a recovery host): read without a lock rather than not at all */
        if (r->notice) {
            char msg[1024];
            snprintf(msg, sizeof(msg),
                     "reading without a lock: %s (a prune running at the same time could "
                     "remove data this needs; it would then fail, never read wrong data)",
                     cf_error_last()->message);
            r->notice(msg, r->notice_payload);
        }
        cf_error_clear();
        r->lock_name[0] = '\0';
        r->lock_mode = mode;
    }
    /* a competitor may have written its lock between our check and our write: check again */
    rc = r->lock_name[0] ? find_conflict(r, mode) : 0;
    if (rc) {
        cf_storage_remove(r->st, r->lock_name);
        r->lock_name[0] = '\0';
        return rc;
    }
    /* the repository may have changed between open and lock (a backup finished, a prune
     * rewrote the index): work from what is there now */
    if ((rc = cf_repo__refresh_index(r))) {
        cf_storage_remove(r->st, r->lock_name);
        r->lock_name[0] = '\0';
        return rc;
    }
    /* tree packs a prune removed need not stay in the local cache */
    cf_cache__prune_packs(r);
    return 0;
}

int cf_repo__refresh_lock(cf_repo *r)
{
    if (!r->lock_name[0] || cf_mono_seconds() - r->lock_refreshed < CF_LOCK_REFRESH_SECONDS)
        return 0;
    return write_lock(r, r->lock_mode);
}

int cf_repo_unlock(cf_repo *r)
{
    if (!r->lock_name[0])
        return 0;
    /* usually called while cleaning up after another failure: that one is the error to keep
     * (a storage outage makes both fail) */
    cf_error_saved before;
    cf_error_save(&before);
    int rc = cf_storage_remove(r->st, r->lock_name);
    r->lock_name[0] = '\0';
    if (rc && rc != CF_ENOTFOUND && before.code != 0)
        cf_error_restore(&before);
    return rc == CF_ENOTFOUND ? 0 : rc;
}

int cf_repo_unlock_stale(cf_repo *r, bool all, size_t *out_removed)
{
    lock_list l = {NULL, 0, 0, r};
    *out_removed = 0;
    int rc = cf_storage_list(r->st, "locks/", collect, &l);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        if (r->lock_name[0] && strcmp(l.v[i].name, r->lock_name) == 0)
            continue;
        /* an unreadable lock was not written by a coffer holding this repository's keys, or
         * is damaged: it cannot be honoured, so unlock removes it */
        if (all || is_stale(&l.v[i]) || !l.v[i].readable) {
            int r2 = cf_storage_remove(r->st, l.v[i].name);
            if (r2 == 0)
                (*out_removed)++;
            else if (r2 != CF_ENOTFOUND)
                rc = r2;
        }
    }
    free(l.v);
    return rc;
}
