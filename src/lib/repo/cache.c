/*
 * cache.c - a local cache of immutable metadata objects (index files, snapshot documents) of
 * remote repositories, under $COFFER_CACHE_DIR or ~/.cache/coffer/<repository id>/, so that
 * listing snapshots and starting a backup do not download them again, and of tree packs
 * ("packs/"), so that a backup reads its parent's trees and a restore walks a snapshot
 * without a request per directory. Objects are stored as they are in the repository (sealed)
 * and named by their hash, which is checked on every read: a damaged cache entry is ignored
 * and replaced. What a repository holds is always learnt by listing it; the cache only
 * saves downloading what a listing names. Safe to delete at any time.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "repo/repo.h"

bool cf_repo__remote(const cf_repo *r)
{
    const char *scheme = cf_storage_scheme(r->st);
    return strcmp(scheme, "local") != 0 && strcmp(scheme, "mem") != 0;
}

/* The cache directory for this repository, or false when caching is off (local storage, no
 * home, COFFER_NO_CACHE set). */
static bool cache_dir(const cf_repo *r, char out[4096])
{
    /* local (and in-process) repositories are their own cache; check bypasses the cache so
     * that it sees what storage holds */
    if (r->cache_off || getenv("COFFER_NO_CACHE") || !cf_repo__remote(r))
        return false;
    const char *base = getenv("COFFER_CACHE_DIR");
    char home_cache[4096];
    if (!base || !*base) {
        const char *xdg = getenv("XDG_CACHE_HOME");
        const char *home = getenv("HOME");
        if (xdg && *xdg)
            snprintf(home_cache, sizeof(home_cache), "%.4000s/coffer", xdg);
        else if (home && *home)
            snprintf(home_cache, sizeof(home_cache), "%.4000s/.cache/coffer", home);
        else
            return false;
        base = home_cache;
    }
    int n = snprintf(out, 4096, "%.3900s/%s", base, r->cfg.id);
    return n > 0 && n < 4096;
}

static void mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    }
    mkdir(path, 0700);
}

/* Read dir/name from the cache into *data when present and intact. */
bool cf_cache__get(const cf_repo *r, const char *dir, const char *name, uint8_t **data, size_t *len)
{
    char root[4096], path[4300];
    if (strlen(name) != 64 || !cache_dir(r, root))
        return false;
    snprintf(path, sizeof(path), "%s/%s/%s", root, dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool ok = false;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < (1 << 30) &&
        (buf = malloc((size_t)st.st_size))) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        if (got == (size_t)st.st_size) {
            uint8_t h[32];
            char hex[65];
            cf_sha256(h, buf, got);
            cf_hex_encode(hex, h, 32);
            ok = strcmp(hex, name) == 0;
        }
    }
    close(fd);
    if (!ok) {
        free(buf);
        unlink(path); /* damaged or partial: fetch again */
        return false;
    }
    *data = buf;
    *len = (size_t)st.st_size;
    return true;
}

/* Store dir/name in the cache (best effort: failures only cost a later download). */
void cf_cache__put(const cf_repo *r, const char *dir, const char *name, const uint8_t *data,
                   size_t len)
{
    char root[4096], path[4300], tmp[4400];
    if (strlen(name) != 64 || !cache_dir(r, root))
        return;
    snprintf(path, sizeof(path), "%s/%s", root, dir);
    mkdirs(path);
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s-%ld", path, name, (long)getpid());
    snprintf(path, sizeof(path), "%s/%s/%s", root, dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    size_t done = 0;
    while (done < len) {
        ssize_t k = write(fd, data + done, len - done);
        if (k <= 0)
            break;
        done += (size_t)k;
    }
    close(fd);
    if (done != len || rename(tmp, path) != 0)
        unlink(tmp);
}

/* Forget cached objects of dir that are no longer in the repository. keep(name) says whether
 * a name still exists. */
void cf_cache__prune(const cf_repo *r, const char *dir, bool (*exists)(const char *name, void *p),
                     void *payload)
{
    char root[4096], path[4300];
    if (!cache_dir(r, root))
        return;
    snprintf(path, sizeof(path), "%s/%s", root, dir);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strlen(de->d_name) != 64)
            continue;
        if (!exists(de->d_name, payload)) {
            char f[4400];
            snprintf(f, sizeof(f), "%.4300s/%.64s", path, de->d_name);
            unlink(f);
        }
    }
    closedir(d);
}

static bool pack_listed(const char *name, void *payload)
{
    const cf_repo *r = payload;
    cf_id id;
    if (cf_hex_decode(id.b, 32, name) != 0)
        return true; /* not a pack name: leave it */
    return cf_index__has_pack(&r->index, &id);
}

void cf_cache__prune_packs(cf_repo *r)
{
    pthread_mutex_lock(&r->mu);
    /* an index with damaged or unreadable files does not list every pack */
    if (r->nwarnings == 0 && !r->index_unloaded)
        cf_cache__prune(r, "packs", pack_listed, r);
    pthread_mutex_unlock(&r->mu);
}
