/*
 * spool.c - the WAL prefetch spool: a fetch that opened the repository also fetches the
 * segments that follow into a directory, and later fetches take them from there without
 * opening the repository (no credential, no key derivation).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "source/postgres/pg.h"

#define SPOOL_DEFAULT_BYTES ((uint64_t)256 << 20)
#define SPOOL_MAX_COUNT 4096u
#define SPOOL_TMP_PREFIX ".tmp-"
#define HASH_HEX 64

/* A spooled file's name is "<segment>.<64 lowercase hex>": true with the segment parsed. */
static bool spooled_name(const char *ent, cf_pg__wal_name *w, char seg[25])
{
    if (strlen(ent) != 24 + 1 + HASH_HEX || ent[24] != '.')
        return false;
    for (const char *p = ent + 25; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    memcpy(seg, ent, 24);
    seg[24] = '\0';
    return cf_pg__wal_parse(w, seg) == CF_PG_WAL_SEGMENT;
}

static uint64_t seg_key(const cf_pg__wal_name *w)
{
    return (uint64_t)w->log << 32 | w->seg;
}

/* Remove what PostgreSQL has moved past once it took segment cur: lower segments on any
 * timeline and segments of lower timelines. */
static void spool_trim(int dfd, const cf_pg__wal_name *cur)
{
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        cf_pg__wal_name w;
        char seg[25];
        if (spooled_name(e->d_name, &w, seg) &&
            (seg_key(&w) < seg_key(cur) || w.tli < cur->tli))
            unlinkat(dfd, e->d_name, 0);
    }
    closedir(d);
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* Read a whole spooled file (at most max bytes) opened relative to dfd. */
static int read_at(int dfd, const char *ent, size_t max, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    int fd = openat(dfd, ent, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    struct stat st;
    uint8_t *data = NULL;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uint64_t)st.st_size > max)
        goto out;
    size_t len = (size_t)st.st_size, got = 0;
    if (!(data = malloc(len)))
        goto out;
    while (got < len) {
        ssize_t n = read(fd, data + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto out;
        got += (size_t)n;
    }
    *out = data;
    *out_len = len;
    data = NULL;
    rc = 0;
out:
    free(data);
    close(fd);
    return rc;
}

/* Write data to path (created or truncated, mode 0600). */
static int write_file(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    bool ok = write_all(fd, data, len) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok)
        unlink(path);
    return ok ? 0 : -1;
}

/* Spool a checked segment under dfd: a temporary name, renamed to "<name>.<sha256>" once
 * complete. 0, or -1 when the spool cannot be written (nothing is left under a real name). */
static int spool_write(int dfd, const char *name, const uint8_t *data, size_t len)
{
    char sum_hex[HASH_HEX + 1], tmp[64], final[128], rnd_hex[13];
    uint8_t sum[32], rnd[6];
    cf_sha256(sum, data, len);
    cf_hex_encode(sum_hex, sum, 32);
    if (cf_random_bytes(rnd, sizeof(rnd)))
        return -1;
    cf_hex_encode(rnd_hex, rnd, sizeof(rnd));
    snprintf(tmp, sizeof(tmp), SPOOL_TMP_PREFIX "%s-%s", name, rnd_hex);
    snprintf(final, sizeof(final), "%s.%s", name, sum_hex);
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    bool ok = write_all(fd, data, len) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || renameat(dfd, tmp, dfd, final) != 0) {
        unlinkat(dfd, tmp, 0);
        return -1;
    }
    return 0;
}

int cf_pg_spool_take(const char *spool_dir, const char *name, const char *dest)
{
    cf_pg__wal_name w;
    int rc = CF_ENOTFOUND, dfd = -1;
    DIR *d = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    char ent[256] = "";
    bool newer = false;
    if (!spool_dir || !name || !dest || cf_pg__wal_parse(&w, name) != CF_PG_WAL_SEGMENT)
        goto out;
    if ((dfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        goto out;
    int fd2 = dup(dfd);
    if (fd2 < 0 || !(d = fdopendir(fd2))) {
        if (fd2 >= 0)
            close(fd2);
        goto out;
    }
    /* the segment, and whether anything PostgreSQL asks for later is spooled */
    struct dirent *e;
    while ((e = readdir(d))) {
        cf_pg__wal_name sw;
        char seg[25];
        if (!spooled_name(e->d_name, &sw, seg))
            continue;
        if (strcmp(seg, name) == 0 && !ent[0])
            snprintf(ent, sizeof(ent), "%s", e->d_name);
        else if (sw.tli > w.tli || (sw.tli == w.tli && seg_key(&sw) > seg_key(&w)))
            newer = true;
    }
    if (!ent[0])
        goto out;
    /* checked again: a damaged or truncated file is removed, never handed out */
    uint8_t sum[32];
    char hex[HASH_HEX + 1];
    bool good = read_at(dfd, ent, (size_t)1 << 30, &data, &len) == 0;
    if (good) {
        cf_sha256(sum, data, len);
        cf_hex_encode(hex, sum, 32);
        good = strcmp(hex, ent + 25) == 0 && cf_pg__check_segment(&w, name, data, len) == 0;
    }
    if (!good) {
        unlinkat(dfd, ent, 0);
        goto out;
    }
    if (!newer) {
        /* the newest spooled segment: PostgreSQL reads the last segment of the archive once
         * more at the end of recovery, so it stays spooled and the server gets a copy (its
         * own file, which it may write into) */
        if (write_file(dest, data, len) != 0)
            goto out;
    } else if (renameat(dfd, ent, AT_FDCWD, dest) != 0) {
        /* another file system: write the checked bytes */
        if (errno != EXDEV || write_file(dest, data, len) != 0)
            goto out;
        unlinkat(dfd, ent, 0);
    }
    rc = 0;
    spool_trim(dfd, &w);
out:
    if (d)
        closedir(d);
    if (dfd >= 0)
        close(dfd);
    free(data);
    cf_error_clear();
    return rc;
}

int cf_pg_spool_put(const char *spool_dir, const char *name, const char *path, bool move)
{
    cf_pg__wal_name w;
    int rc = 0, dfd = -1;
    uint8_t *data = NULL, sum[32];
    size_t len = 0;
    char hex[HASH_HEX + 1], final[128];
    if (cf_pg__wal_parse(&w, name) != CF_PG_WAL_SEGMENT)
        return cf_error_set(CF_EINVAL, 0, "'%s' is not a WAL segment name: only segments are "
                                          "spooled", name);
    if (mkdir(spool_dir, 0700) != 0 && errno != EEXIST)
        return cf_error_set(cf_error_from_errno(errno), errno,
                            "unable to create WAL spool '%s': %s", spool_dir, strerror(errno));
    if ((dfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to open WAL spool '%s': %s",
                            spool_dir, strerror(errno));
    errno = 0;
    if (read_at(AT_FDCWD, path, (size_t)1 << 30, &data, &len) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to read WAL segment '%s'%s%s", path,
                          errno ? ": " : "", errno ? strerror(errno) : "");
        goto out;
    }
    /* a whole segment (its header gives the size) that names itself */
    if ((rc = cf_pg__check_segment(&w, name, data, len)))
        goto out;
    cf_sha256(sum, data, len);
    cf_hex_encode(hex, sum, 32);
    snprintf(final, sizeof(final), "%s.%s", name, hex);
    if (move && renameat(AT_FDCWD, path, dfd, final) == 0)
        goto out;
    if (spool_write(dfd, name, data, len) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to write into WAL spool '%s': %s", spool_dir,
                          strerror(errno));
        goto out;
    }
    if (move)
        unlink(path);
out:
    if (dfd >= 0)
        close(dfd);
    free(data);
    return rc;
}

/* ------------------------------------------------------------------ prefetch */

typedef struct {
    cf_repo *repo;
    const char *cluster;
    const char *spool_dir;
    int dfd;
    uint32_t segsize;
    char (*names)[25];       /* candidates, in order */
    size_t n;
    pthread_mutex_t mu;
    size_t next;             /* the next candidate to take */
    size_t stop;             /* no candidate at or after this one is started */
    unsigned spooled;
    bool at_end;             /* the first candidate is not archived */
} prefetch_job;

/* Fetch, check and spool one segment. 1 when it is not archived, -1 when the spool is not
 * writable (stop), 0 otherwise (spooled, or skipped after an error the real fetch will
 * report). */
static int prefetch_one(prefetch_job *j, const char *name)
{
    cf_pg__wal_name w;
    char full[256];
    uint8_t *data = NULL;
    size_t len = 0;
    int ret = 0;
    if (cf_pg__wal_parse(&w, name) != CF_PG_WAL_SEGMENT ||
        cf_pg__archive_name(full, j->cluster, name))
        goto out;
    int rc = cf_archive_get(j->repo, CF_PG_ARCHIVE_KIND, full, &data, &len);
    if (rc == CF_ENOTFOUND) {
        ret = 1;
        goto out;
    }
    /* only a complete, authenticated segment of the expected size and address is spooled */
    if (rc || len != j->segsize || cf_pg__check_segment(&w, name, data, len))
        goto out;
    if (spool_write(j->dfd, name, data, len) != 0) {
        ret = -1;
        goto out;
    }
    pthread_mutex_lock(&j->mu);
    j->spooled++;
    pthread_mutex_unlock(&j->mu);
out:
    free(data);
    cf_error_clear();
    return ret;
}

static void *prefetch_worker(void *arg)
{
    prefetch_job *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next < j->stop ? j->next++ : SIZE_MAX;
        pthread_mutex_unlock(&j->mu);
        if (i == SIZE_MAX)
            break;
        int r = prefetch_one(j, j->names[i]);
        if (r != 0) {
            /* the end of the archive (a standby polls for what does not exist yet), or a
             * spool that cannot be written: nothing after it is started */
            pthread_mutex_lock(&j->mu);
            if (i < j->stop)
                j->stop = r > 0 ? i : 0;
            if (r > 0 && i == 0)
                j->at_end = true;
            pthread_mutex_unlock(&j->mu);
        }
    }
    return NULL;
}

/* Scan the spool under its lock: remove leftover temporary files (an earlier fetch was
 * killed) and what PostgreSQL moved past; count the bytes kept. */
static void spool_scan(int dfd, const cf_pg__wal_name *cur, uint64_t *bytes)
{
    *bytes = 0;
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        cf_pg__wal_name w;
        char seg[25];
        struct stat st;
        if (strncmp(e->d_name, SPOOL_TMP_PREFIX, strlen(SPOOL_TMP_PREFIX)) == 0) {
            unlinkat(dfd, e->d_name, 0);
        } else if (spooled_name(e->d_name, &w, seg)) {
            if (seg_key(&w) < seg_key(cur) || w.tli < cur->tli)
                unlinkat(dfd, e->d_name, 0);
            else if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
}

static bool spool_has(int dfd, const char *seg)
{
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        found = strncmp(e->d_name, seg, 24) == 0 && e->d_name[24] == '.' &&
                strlen(e->d_name) == 24 + 1 + HASH_HEX;
    closedir(d);
    return found;
}

static void prefetch(cf_repo *repo, const char *cluster, const char *name, const char *dest,
                     const cf_pg__wal_name *cur, uint32_t segsize, const cf_pg_prefetch_opts *o,
                     cf_pg_prefetch_result *res)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int dfd = -1;
    prefetch_job j;
    memset(&j, 0, sizeof(j));
    bool mu_init = false;
    res->skipped = true;
    if (mkdir(o->spool_dir, 0700) != 0 && errno != EEXIST)
        goto out;
    if ((dfd = open(o->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        goto out;
    /* one prefetch at a time per spool; a busy spool is left alone */
    if (flock(dfd, LOCK_EX | LOCK_NB) != 0)
        goto out;
    uint64_t bytes = 0, max = o->max_bytes ? o->max_bytes : SPOOL_DEFAULT_BYTES;
    spool_scan(dfd, cur, &bytes);
    uint64_t held = bytes;
    unsigned count = o->count < SPOOL_MAX_COUNT ? o->count : SPOOL_MAX_COUNT;
    if (!(j.names = calloc(count ? count : 1, sizeof(*j.names))))
        goto out;
    uint64_t segno = cf_pg__segno(cur, segsize);
    for (unsigned k = 1; k <= count; k++) {
        char seg[25];
        cf_pg__seg_name(seg, cur->tli, segno + k, segsize);
        if (spool_has(dfd, seg)) {
            res->present++;
            continue;
        }
        if (bytes + segsize > max)
            break;
        bytes += segsize;
        memcpy(j.names[j.n++], seg, 25);
    }
    res->skipped = false;
    if (j.n == 0)
        goto out;
    j.repo = repo;
    j.cluster = cluster;
    j.spool_dir = o->spool_dir;
    j.dfd = dfd;
    j.segsize = segsize;
    j.stop = j.n;
    pthread_mutex_init(&j.mu, NULL);
    mu_init = true;
    unsigned nt = o->threads ? o->threads : 2;
    if (nt > 8)
        nt = 8;
    if (nt > j.n)
        nt = (unsigned)j.n;
    pthread_t th[8];
    unsigned started = 0;
    for (unsigned t = 1; t < nt; t++) {
        if (pthread_create(&th[started], NULL, prefetch_worker, &j) != 0)
            break;
        started++;
    }
    prefetch_worker(&j);
    for (unsigned t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    res->spooled = j.spooled;
    res->skipped = j.stop == 0 && j.spooled == 0 && !j.at_end;
    /* nothing after it is archived: PostgreSQL reads this segment once more at the end of
     * recovery, so a copy of it is spooled as well (cf_pg_spool_take keeps the newest) */
    if (j.at_end && res->present == 0 && held + segsize <= max &&
        read_at(AT_FDCWD, dest, segsize, &data, &len) == 0 && len == segsize &&
        cf_pg__check_segment(cur, name, data, len) == 0 && spool_write(dfd, name, data, len) == 0)
        res->kept = true;
out:
    free(data);
    if (mu_init)
        pthread_mutex_destroy(&j.mu);
    free(j.names);
    if (dfd >= 0)
        close(dfd); /* releases the lock */
    cf_error_clear();
}

int cf_pg_wal_fetch_ahead(cf_repo *repo, const char *cluster, const char *name, const char *dest,
                          const cf_pg_prefetch_opts *opts, cf_pg_prefetch_result *out)
{
    cf_pg_prefetch_result res;
    memset(&res, 0, sizeof(res));
    int rc = cf_pg_wal_fetch(repo, cluster, name, dest);
    cf_pg__wal_name w;
    struct stat st;
    if (rc == 0 && opts && opts->spool_dir && opts->count > 0 &&
        cf_pg__wal_parse(&w, name) == CF_PG_WAL_SEGMENT && stat(dest, &st) == 0 &&
        cf_pg__valid_segsize((uint64_t)st.st_size))
        prefetch(repo, cluster, name, dest, &w, (uint32_t)st.st_size, opts, &res);
    if (out)
        *out = res;
    return rc;
}

int cf_pg_spool_remove(const char *spool_dir)
{
    int dfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        if (errno == ENOENT)
            return 0;
        return cf_error_set(cf_error_from_errno(errno), errno,
                            "unable to open WAL spool '%s': %s", spool_dir, strerror(errno));
    }
    int fd = dup(dfd), rc = 0;
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        rc = cf_error_set(CF_EIO, errno, "unable to read WAL spool '%s': %s", spool_dir,
                          strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        cf_pg__wal_name w;
        char seg[25];
        if ((strncmp(e->d_name, SPOOL_TMP_PREFIX, strlen(SPOOL_TMP_PREFIX)) == 0 ||
             spooled_name(e->d_name, &w, seg)) &&
            unlinkat(dfd, e->d_name, 0) != 0 && errno != ENOENT && rc == 0)
            rc = cf_error_set(cf_error_from_errno(errno), errno,
                              "unable to remove '%s/%s': %s", spool_dir, e->d_name,
                              strerror(errno));
    }
    closedir(d);
    /* a directory holding anything else is left in place */
    if (rc == 0 && rmdir(spool_dir) != 0 && errno != ENOTEMPTY && errno != EEXIST &&
        errno != ENOENT)
        rc = cf_error_set(cf_error_from_errno(errno), errno,
                          "unable to remove WAL spool '%s': %s", spool_dir, strerror(errno));
out:
    close(dfd);
    return rc;
}
