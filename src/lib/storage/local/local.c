/*
 * local.c - the local disk storage driver: one file per object under a root directory, written
 * to a temporary file, fsynced, then published with rename (or link for exclusive puts).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

#define TMP_PREFIX ".tmp-"
#define WRITE_CHUNK ((size_t)1 << 30)
#define LIST_MAX_DEPTH 64

typedef struct {
    char *root; /* as given, for messages */
    int fd;     /* the root directory, O_RDONLY|O_DIRECTORY */
} local;

static atomic_ulong tmp_counter;

static uint32_t host_tag(void);

/* strerror that is thread-safe (GNU strerror_r may return a static string or use buf). */
static const char *errstr(int err, char *buf, size_t n)
{
    return strerror_r(err, buf, n);
}

/* Map an errno from a write-side call (mkdir, open, write, rename, fsync). */
static int write_code(int err)
{
    switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return CF_ENOSPACE;
    case EACCES:
    case EPERM:
    case EROFS:
        return CF_EPERM;
    case ENOMEM:
        return CF_ENOMEM;
    case EINTR:
    case EAGAIN:
        return CF_ERETRYABLE;
    default:
        return CF_EIO;
    }
}

/* Map an errno from a read-side call (open, stat, unlink): missing -> CF_ENOTFOUND. */
static int read_code(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR:
        return CF_ENOTFOUND;
    case EACCES:
    case EPERM:
        return CF_EPERM;
    case ENOMEM:
        return CF_ENOMEM;
    case EINTR:
    case EAGAIN:
        return CF_ERETRYABLE;
    default:
        return CF_EIO;
    }
}

static int fail_write(const local *l, const char *name, int err)
{
    char eb[128];
    return cf_error_set(write_code(err), err, "unable to write '%s' in '%s': %s", name, l->root,
                        errstr(err, eb, sizeof(eb)));
}

static int not_found(const local *l, const char *name)
{
    return cf_error_set(CF_ENOTFOUND, ENOENT, "object '%s' not found in '%s'", name, l->root);
}

/* ---- open / close ---- */

/* fsync the directory containing path (the first len bytes of it), so a new entry in it is
 * durable. Best effort: a repository that is created but not yet durable is harmless. */
static void fsync_parent(const char *path, size_t len)
{
    while (len > 0 && path[len - 1] != '/')
        len--;
    char *parent = len ? cf_strndup(path, len) : cf_strdup(".");
    if (!parent)
        return;
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(parent);
}

/* mkdir -p path with mode 0700 (relative to the cwd, like the path itself). */
static int mkdir_p(const char *path)
{
    int rc = 0;
    char eb[128];
    char *copy = cf_strdup(path);
    if (!copy)
        return CF_ENOMEM;
    size_t len = strlen(copy);
    for (size_t i = 1; i <= len; i++) {
        if (copy[i] != '/' && copy[i] != '\0')
            continue;
        if (copy[i - 1] == '/')
            continue; /* "a//b" or a trailing slash */
        char saved = copy[i];
        copy[i] = '\0';
        if (mkdir(copy, 0700) == 0) {
            fsync_parent(copy, i);
        } else if (errno != EEXIST) {
            int err = errno;
            int code = write_code(err);
            if (err == ENOTDIR)
                code = CF_EINVAL;
            rc = cf_error_set(code, err, "unable to create repository directory '%s': %s", copy,
                              errstr(err, eb, sizeof(eb)));
            goto out;
        }
        copy[i] = saved;
    }
out:
    free(copy);
    return rc;
}

int cf_storage_local_new(void **out_self, const char *path, unsigned flags)
{
    int rc = 0;
    char eb[128];
    local *l = NULL;
    struct stat st;

    if (!out_self || !path || !*path)
        return cf_error_set(CF_EINVAL, 0, "local storage: a path is required");
    *out_self = NULL;

    if (stat(path, &st) != 0) {
        int err = errno;
        if ((err == ENOENT || err == ENOTDIR) && !(flags & CF_STORAGE_CREATE)) {
            rc = cf_error_set(CF_ENOREPO, err, "repository '%s' does not exist", path);
            cf_error_hint("check the path, or create a repository there first");
            goto out;
        }
        if (err != ENOENT) {
            rc = cf_error_set(err == ENOTDIR ? CF_EINVAL : read_code(err), err,
                              "unable to open repository '%s': %s", path,
                              errstr(err, eb, sizeof(eb)));
            goto out;
        }
        rc = mkdir_p(path);
        if (rc < 0)
            goto out;
    } else if (!S_ISDIR(st.st_mode)) {
        rc = cf_error_set(CF_EINVAL, ENOTDIR, "repository '%s' is not a directory", path);
        goto out;
    }

    l = cf_calloc(1, sizeof(*l));
    if (!l) {
        rc = CF_ENOMEM;
        goto out;
    }
    l->fd = -1;
    l->root = cf_strdup(path);
    if (!l->root) {
        rc = CF_ENOMEM;
        goto out;
    }
    l->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->fd < 0) {
        int err = errno;
        rc = cf_error_set(err == ENOTDIR ? CF_EINVAL : read_code(err), err,
                          "unable to open repository '%s': %s", path,
                          errstr(err, eb, sizeof(eb)));
        if (rc == CF_ENOTFOUND)
            rc = cf_error_set(CF_ENOREPO, err, "repository '%s' does not exist", path);
        goto out;
    }
    *out_self = l;
    l = NULL;
out:
    if (l) {
        if (l->fd >= 0)
            close(l->fd);
        free(l->root);
        free(l);
    }
    return rc;
}

static void local_close(void *self)
{
    local *l = self;
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l->root);
    free(l);
}

/* ---- helpers ---- */

/* Split "a/b/c" into the directory "a/b" (malloc'd, "." when none) and the base "c". */
static int split_name(const char *name, char **dir, const char **base)
{
    const char *slash = strrchr(name, '/');
    *dir = slash ? cf_strndup(name, (size_t)(slash - name)) : cf_strdup(".");
    *base = slash ? slash + 1 : name;
    return *dir ? 0 : CF_ENOMEM;
}

/* fsync a directory; filesystems that cannot sync directories (EINVAL) are tolerated. */
static int fsync_dir(int dfd)
{
    if (fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP)
        return -1;
    return 0;
}

/* Open the directory dir (relative to the root), creating it and any missing parents with mode
 * 0700; each newly created directory's parent is fsynced so the new entry is durable. Returns
 * the fd or -1 with errno set. */
static int open_dir_create(const local *l, const char *dir)
{
    int fd = openat(l->fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd;

    /* Walk down from the root, creating what is missing. */
    int parent = openat(l->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0)
        return -1;
    const char *p = dir;
    char comp[256];
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t clen = slash ? (size_t)(slash - p) : strlen(p);
        if (clen >= sizeof(comp)) {
            close(parent);
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(comp, p, clen);
        comp[clen] = '\0';
        if (mkdirat(parent, comp, 0700) == 0) {
            if (fsync_dir(parent) != 0) {
                int err = errno;
                close(parent);
                errno = err;
                return -1;
            }
        } else if (errno != EEXIST) {
            int err = errno;
            close(parent);
            errno = err;
            return -1;
        }
        int child = openat(parent, comp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int err = errno;
        close(parent);
        if (child < 0) {
            errno = err;
            return -1;
        }
        parent = child;
        if (!slash)
            break;
        p = slash + 1;
    }
    return parent;
}

/* Write all of data to fd, looping on short writes and EINTR. Returns 0 or -1 with errno. */
static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* ---- operations ---- */

static int local_put(void *self, const char *name, const void *data, size_t len, unsigned flags)
{
    local *l = self;
    int rc = 0;
    char *dir = NULL;
    const char *base;
    int dfd = -1, fd = -1;
    bool tmp_exists = false;
    char tmp[96];

    rc = split_name(name, &dir, &base);
    if (rc < 0)
        goto out;
    dfd = open_dir_create(l, dir);
    if (dfd < 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }

    for (int attempt = 0; fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        unsigned long n = atomic_fetch_add(&tmp_counter, 1);
        snprintf(tmp, sizeof(tmp), TMP_PREFIX "%ld-h%08x-%lu-%lx", (long)getpid(), host_tag(),
                 n, (unsigned long)ts.tv_nsec ^ (unsigned long)ts.tv_sec);
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && (errno != EEXIST || attempt >= 16)) {
            rc = fail_write(l, name, errno);
            goto out;
        }
    }
    tmp_exists = true;

    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }

    if (flags & CF_PUT_EXCLUSIVE) {
        if (linkat(dfd, tmp, dfd, base, 0) != 0) {
            int err = errno;
            if (err == EEXIST)
                rc = cf_error_set(CF_EEXISTS, err, "object '%s' already exists in '%s'", name,
                                  l->root);
            else
                rc = fail_write(l, name, err);
            goto out;
        }
        /* Published; the temporary name is now just a second link. */
        if (unlinkat(dfd, tmp, 0) == 0)
            tmp_exists = false;
    } else {
        if (renameat(dfd, tmp, dfd, base) != 0) {
            rc = fail_write(l, name, errno);
            goto out;
        }
        tmp_exists = false;
    }
    if (fsync_dir(dfd) != 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }
out:
    if (fd >= 0)
        close(fd);
    if (tmp_exists)
        unlinkat(dfd, tmp, 0);
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return rc;
}

/* In folders written without the repository lock (purge_tmp's unlocked), a temporary may
 * belong to a live process on another host: unless it names this host it is only removed once
 * it is this old. */
#define UNLOCKED_TMP_AGE (60 * 60)

/* This host, as 8 hex digits in temporary names (".tmp-PID-hXXXXXXXX-..."), so that a purge
 * can tell its own host's writers, whose liveness it can check, from other hosts'. */
static uint32_t host_tag(void)
{
    static atomic_uint tag; /* 0: not computed yet */
    uint32_t t = atomic_load(&tag);
    if (t)
        return t;
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    t = 2166136261u; /* FNV-1a */
    for (const char *p = host; *p; p++)
        t = (t ^ (uint8_t)*p) * 16777619u;
    t = t ? t : 1;
    atomic_store(&tag, t);
    return t;
}

/* A temporary ".tmp-[pack-]PID-[hTAG-]..." that a live writer may still publish: one of this
 * host whose process runs; in an unlocked area also any young one of another (or an unnamed)
 * host. */
static bool tmp_in_use(const char *name, bool unlocked, time_t age)
{
    const char *p = name + strlen(TMP_PREFIX);
    if (strncmp(p, "pack-", 5) == 0)
        p += 5;
    char *end;
    errno = 0;
    long pid = strtol(p, &end, 10);
    bool has_pid = !errno && end != p && *end == '-' && pid > 0 && pid <= 0x7fffffffL;
    bool here = false;
    if (has_pid && end[1] == 'h') {
        char *tend;
        unsigned long tag = strtoul(end + 2, &tend, 16);
        here = tend == end + 10 && *tend == '-' && tag == host_tag();
    }
    bool alive = has_pid && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
    if (here)
        return alive;
    if (unlocked)
        return age <= UNLOCKED_TMP_AGE;
    return alive;
}

/* Remove ".tmp-*" files below dfd (recursively, bounded depth) that no live writer owns. */
static void purge_dir(int dfd, int depth, bool unlocked, const char *const *unlocked_dirs,
                      uint64_t *removed, uint64_t *bytes)
{
    if (depth > LIST_MAX_DEPTH)
        return;
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                bool unl = unlocked;
                for (size_t i = 0; depth == 0 && unlocked_dirs && unlocked_dirs[i]; i++)
                    unl = unl || strcmp(de->d_name, unlocked_dirs[i]) == 0;
                purge_dir(sub, depth + 1, unl, unlocked_dirs, removed, bytes);
                close(sub);
            }
        } else if (S_ISREG(st.st_mode) &&
                   strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0 &&
                   !tmp_in_use(de->d_name, unlocked, now - st.st_mtime) &&
                   unlinkat(dfd, de->d_name, 0) == 0) {
            (*removed)++;
            *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
}

static int local_purge_tmp(void *self, const char *const *unlocked, uint64_t *out_removed,
                           uint64_t *out_bytes)
{
    local *l = self;
    purge_dir(l->fd, 0, false, unlocked, out_removed, out_bytes);
    return 0;
}

static int local_spool_dir(void *self, char *out, size_t out_size)
{
    local *l = self;
    /* the data folder: on the repository's filesystem, so publishing is a rename */
    int dfd = open_dir_create(l, "data");
    if (dfd < 0)
        return fail_write(l, "data/", errno);
    /* spool files of killed processes: untouched for a day, nobody is writing them */
    int sfd = dup(dfd);
    DIR *d = sfd >= 0 ? fdopendir(sfd) : NULL;
    if (d) {
        struct dirent *de;
        time_t now = time(NULL);
        while ((de = readdir(d))) {
            struct stat st;
            if (strncmp(de->d_name, TMP_PREFIX "pack-", strlen(TMP_PREFIX "pack-")) == 0 &&
                fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                now - st.st_mtime > 24 * 3600)
                unlinkat(dfd, de->d_name, 0);
        }
        closedir(d);
    } else if (sfd >= 0) {
        close(sfd);
    }
    close(dfd);
    int n = snprintf(out, out_size, "%s/data", l->root);
    if (n < 0 || (size_t)n >= out_size)
        return cf_error_set(CF_EINVAL, 0, "repository path '%s' is too long", l->root);
    return 0;
}

static int local_put_file(void *self, const char *name, const char *tmp_path, int fd,
                          unsigned flags)
{
    local *l = self;
    char *dir = NULL;
    const char *base;
    int dfd = -1;
    int rc = split_name(name, &dir, &base);
    if (rc < 0)
        return rc;
    if (fsync(fd) != 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }
    dfd = open_dir_create(l, dir);
    if (dfd < 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }
    if (flags & CF_PUT_EXCLUSIVE) {
        if (linkat(AT_FDCWD, tmp_path, dfd, base, 0) != 0) {
            int err = errno;
            rc = err == EEXIST ? cf_error_set(CF_EEXISTS, err, "object '%s' already exists in '%s'",
                                              name, l->root)
                               : fail_write(l, name, err);
            goto out;
        }
        unlink(tmp_path);
    } else if (renameat(AT_FDCWD, tmp_path, dfd, base) != 0) {
        rc = fail_write(l, name, errno);
        goto out;
    }
    if (fsync_dir(dfd) != 0)
        rc = fail_write(l, name, errno);
out:
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return rc;
}

static int local_get(void *self, const char *name, uint64_t offset, uint64_t length,
                     uint8_t **out, size_t *out_len)
{
    local *l = self;
    int rc = 0;
    char eb[128];
    uint8_t *buf = NULL;
    struct stat st;

    int fd = openat(l->fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (read_code(err) == CF_ENOTFOUND)
            rc = not_found(l, name);
        else
            rc = cf_error_set(read_code(err), err, "unable to read '%s' in '%s': %s", name,
                              l->root, errstr(err, eb, sizeof(eb)));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        int err = errno;
        rc = cf_error_set(read_code(err), err, "unable to read '%s' in '%s': %s", name, l->root,
                          errstr(err, eb, sizeof(eb)));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = not_found(l, name);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    uint64_t end;
    if (offset > size || __builtin_add_overflow(offset, length, &end) || end > size) {
        rc = cf_error_set(CF_ECORRUPT, 0,
                          "object '%s' is shorter than expected (size %llu, wanted %llu bytes "
                          "at offset %llu) in '%s'",
                          name, (unsigned long long)size, (unsigned long long)length,
                          (unsigned long long)offset, l->root);
        goto out;
    }
    uint64_t want = length ? length : size - offset;
    if (want > CF_STORAGE_GET_MAX) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "read of %llu bytes from '%s' in '%s' exceeds the 1 GiB limit",
                          (unsigned long long)want, name, l->root);
        goto out;
    }
    buf = cf_malloc((size_t)want);
    if (!buf) {
        rc = CF_ENOMEM;
        goto out;
    }
    size_t done = 0;
    while (done < want) {
        ssize_t r = pread(fd, buf + done, (size_t)want - done, (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            rc = cf_error_set(CF_EIO, err, "unable to read '%s' in '%s': %s", name, l->root,
                              errstr(err, eb, sizeof(eb)));
            goto out;
        }
        if (r == 0) {
            rc = cf_error_set(CF_ECORRUPT, 0,
                              "object '%s' is shorter than expected (ended after %llu bytes, "
                              "wanted %llu at offset %llu) in '%s'",
                              name, (unsigned long long)offset + done,
                              (unsigned long long)want, (unsigned long long)offset, l->root);
            goto out;
        }
        done += (size_t)r;
    }
    *out = buf;
    *out_len = (size_t)want;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int local_stat(void *self, const char *name, uint64_t *out_size)
{
    local *l = self;
    char eb[128];
    struct stat st;
    if (fstatat(l->fd, name, &st, 0) != 0) {
        int err = errno;
        if (read_code(err) == CF_ENOTFOUND)
            return not_found(l, name);
        return cf_error_set(read_code(err), err, "unable to stat '%s' in '%s': %s", name,
                            l->root, errstr(err, eb, sizeof(eb)));
    }
    if (!S_ISREG(st.st_mode))
        return not_found(l, name);
    *out_size = (uint64_t)st.st_size;
    return 0;
}

static int local_remove(void *self, const char *name)
{
    local *l = self;
    int rc = 0;
    char eb[128];
    char *dir = NULL;
    const char *base;
    int dfd = -1;

    rc = split_name(name, &dir, &base);
    if (rc < 0)
        goto out;
    dfd = openat(l->fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int err = errno;
        if (read_code(err) == CF_ENOTFOUND)
            rc = not_found(l, name);
        else
            rc = cf_error_set(read_code(err), err, "unable to remove '%s' in '%s': %s", name,
                              l->root, errstr(err, eb, sizeof(eb)));
        goto out;
    }
    if (unlinkat(dfd, base, 0) != 0) {
        int err = errno;
        /* EISDIR: a folder is not an object. */
        if (read_code(err) == CF_ENOTFOUND || err == EISDIR)
            rc = not_found(l, name);
        else
            rc = cf_error_set(write_code(err), err, "unable to remove '%s' in '%s': %s", name,
                              l->root, errstr(err, eb, sizeof(eb)));
        goto out;
    }
    if (fsync_dir(dfd) != 0) {
        int err = errno;
        rc = cf_error_set(write_code(err), err, "unable to remove '%s' in '%s': %s", name,
                          l->root, errstr(err, eb, sizeof(eb)));
        goto out;
    }
out:
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return rc;
}

typedef struct {
    const local *l;
    const char *prefix;
    size_t prefix_len;
    cf_storage_list_cb cb;
    void *payload;
    cf_buf path; /* current directory relative to the root, with a trailing '/' (or empty) */
} list_ctx;

/* Could anything under directory path (ending in '/') match the prefix? */
static bool dir_may_match(const list_ctx *c, const char *path, size_t len)
{
    size_t n = len < c->prefix_len ? len : c->prefix_len;
    return memcmp(path, c->prefix, n) == 0;
}

/* List the directory open as dfd (taken over), whose relative path is c->path. */
static int list_dir(list_ctx *c, int dfd, int depth)
{
    int rc = 0;
    char eb[128];
    size_t base_len = c->path.len;
    DIR *d = fdopendir(dfd);
    if (!d) {
        int err = errno;
        close(dfd);
        return cf_error_set(read_code(err), err, "unable to list '%.*s' in '%s': %s",
                            (int)c->path.len, (const char *)c->path.data, c->l->root,
                            errstr(err, eb, sizeof(eb)));
    }
    if (depth > LIST_MAX_DEPTH) {
        rc = cf_error_set(CF_EIO, ELOOP, "unable to list '%.*s' in '%s': nested too deeply",
                          (int)c->path.len, (const char *)c->path.data, c->l->root);
        goto out;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno != 0) {
                int err = errno;
                rc = cf_error_set(read_code(err), err, "unable to list '%.*s' in '%s': %s",
                                  (int)base_len, (const char *)c->path.data, c->l->root,
                                  errstr(err, eb, sizeof(eb)));
            }
            break;
        }
        const char *n = e->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || cf_str_has_prefix(n, TMP_PREFIX))
            continue;

        c->path.len = base_len;
        if ((rc = cf_buf_append_str(&c->path, n)) < 0)
            break;
        const char *full = (const char *)c->path.data;
        size_t full_len = c->path.len;

        bool is_dir = e->d_type == DT_DIR, is_reg = e->d_type == DT_REG;
        uint64_t size = 0;
        if (e->d_type == DT_REG || e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) {
            /* Files need their size; links and unknown types need a stat to be classified. */
            if (e->d_type == DT_REG && (full_len < c->prefix_len ||
                                        memcmp(full, c->prefix, c->prefix_len) != 0))
                continue;
            struct stat st;
            if (fstatat(dirfd(d), n, &st, 0) != 0) {
                if (errno == ENOENT)
                    continue; /* removed while we listed */
                int err = errno;
                rc = cf_error_set(read_code(err), err, "unable to list '%.*s' in '%s': %s",
                                  (int)full_len, full, c->l->root, errstr(err, eb, sizeof(eb)));
                break;
            }
            is_dir = S_ISDIR(st.st_mode);
            is_reg = S_ISREG(st.st_mode);
            size = (uint64_t)st.st_size;
        }

        if (is_reg) {
            if (full_len >= c->prefix_len && memcmp(full, c->prefix, c->prefix_len) == 0) {
                rc = c->cb(full, size, c->payload);
                if (rc != 0)
                    break;
            }
        } else if (is_dir) {
            if ((rc = cf_buf_append(&c->path, "/", 1)) < 0)
                break;
            if (!dir_may_match(c, (const char *)c->path.data, c->path.len))
                continue;
            int sub = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub < 0) {
                if (errno == ENOENT)
                    continue;
                int err = errno;
                rc = cf_error_set(read_code(err), err, "unable to list '%.*s' in '%s': %s",
                                  (int)c->path.len, (const char *)c->path.data, c->l->root,
                                  errstr(err, eb, sizeof(eb)));
                break;
            }
            rc = list_dir(c, sub, depth + 1);
            if (rc != 0)
                break;
        }
    }
out:
    c->path.len = base_len;
    closedir(d);
    return rc;
}

static int local_list(void *self, const char *prefix, cf_storage_list_cb cb, void *payload)
{
    local *l = self;
    int rc = 0;
    char eb[128];
    list_ctx c = {.l = l, .prefix = prefix, .prefix_len = strlen(prefix), .cb = cb,
                  .payload = payload};
    cf_buf_init(&c.path, (size_t)64 * 1024);

    /* Start at the prefix's directory part: "data/ab/ab" -> "data/ab/". */
    const char *slash = strrchr(prefix, '/');
    size_t dir_len = slash ? (size_t)(slash - prefix) + 1 : 0;
    char *dir = dir_len ? cf_strndup(prefix, dir_len) : cf_strdup(".");
    if (!dir) {
        rc = CF_ENOMEM;
        goto out;
    }
    int dfd = openat(l->fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int err = errno;
        if (err != ENOENT && err != ENOTDIR)
            rc = cf_error_set(read_code(err), err, "unable to list '%s' in '%s': %s", prefix,
                              l->root, errstr(err, eb, sizeof(eb)));
        goto out; /* a missing folder lists nothing */
    }
    if (dir_len && (rc = cf_buf_append(&c.path, prefix, dir_len)) < 0) {
        close(dfd);
        goto out;
    }
    rc = list_dir(&c, dfd, 0);
out:
    free(dir);
    cf_buf_free(&c.path);
    return rc;
}

static int local_space(void *self, uint64_t *out_free)
{
    local *l = self;
    char eb[128];
    struct statvfs sv;
    if (fstatvfs(l->fd, &sv) != 0) {
        int err = errno;
        return cf_error_set(CF_EIO, err, "unable to get free space of '%s': %s", l->root,
                            errstr(err, eb, sizeof(eb)));
    }
    uint64_t n;
    if (__builtin_mul_overflow((uint64_t)sv.f_bavail, (uint64_t)sv.f_frsize, &n))
        n = UINT64_MAX;
    *out_free = n;
    return 0;
}

const cf_storage_ops cf_storage_local_ops = {
    .version = CF_STORAGE_OPS_VERSION,
    .scheme = "local",
    .features = CF_STORAGE_FEAT_EXCLUSIVE_PUT,
    .put = local_put,
    .get = local_get,
    .stat = local_stat,
    .list = local_list,
    .remove = local_remove,
    .space = local_space,
    .close = local_close,
    .spool_dir = local_spool_dir,
    .put_file = local_put_file,
    .purge_tmp = local_purge_tmp,
};
