/*
 * restore.c - the restore verb: recreate a snapshot's tree under a target directory through
 * directory file descriptors (never following a symlink out of the target), write file
 * contents at their offsets leaving holes sparse, and apply metadata, directories last.
 * A file is written under a temporary name and renamed over its own once complete, so a
 * failed or interrupted restore leaves no half-written file under a real name and, with
 * --overwrite, the file it replaces stays intact until then. Also dump (one file to a
 * descriptor).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "ops/ops.h"

typedef struct {
    uint64_t dev, inode;
    char *rel; /* path relative to the target root */
} link_rec;

/* A further name of a hard-linked file, made once the workers have written the first. */
typedef struct {
    char *rel;    /* the new name, relative to the target root */
    char *target; /* the first name (links[].rel) */
    char *path;   /* for messages */
} pending_link;

typedef struct fjob {
    int dirfd;    /* its directory */
    char tmp[64]; /* the name the worker writes it under, renamed to its own once complete */
    cf_node node; /* a copy: the tree it came from is freed before the job runs */
    char *path;   /* for messages */
} fjob;

/* A restored directory: its metadata (times, mode, owner) is applied once every file in it
 * exists, since workers create files after the walk has left the directory. */
typedef struct {
    char *rel; /* relative to the target root */
    char *path; /* for messages */
    cf_node node;
} dir_meta;

typedef struct {
    cf_repo *r;
    const cf_restore_opts *o;
    cf_restore_stats st;
    pthread_mutex_t mu; /* guards st, prog, damaged, fatal and the queue */
    pthread_cond_t not_empty, not_full, idle;
    fjob *q;
    size_t qcap, qhead, qcount, busy;
    bool stop;
    pthread_t *threads;
    unsigned nthreads;
    int rootfd;
    bool root;
    cf_buf blob;
    cf_pack_window win; /* read-ahead over packs, shared by the workers */
    link_rec *links;
    size_t nlinks, links_cap;
    pending_link *plinks;
    size_t nplinks, plinks_cap;
    cf_progress prog;
    double last_progress;
    int fatal;
    uint64_t damaged; /* files not restored because repository data is damaged or missing */
    uint64_t unverified; /* files that did not read back as written */
    dir_meta *dirs;      /* directories whose metadata is applied at the end */
    size_t ndirs, dirs_cap;
} rctx;

static void rreport(rctx *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rreport(rctx *c, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->mu);
    c->st.errors++;
    if (c->o->on_error)
        c->o->on_error(path, msg, c->o->payload);
    pthread_mutex_unlock(&c->mu);
}

/* Called with c->mu held. */
static void rprogress(rctx *c, const char *path)
{
    if (!c->o->progress)
        return;
    double now = cf_mono_seconds();
    if (now - c->last_progress < 1.0)
        return;
    c->last_progress = now;
    c->prog.current = path;
    c->o->progress(&c->prog, c->o->payload);
}

static struct timespec to_ts(int64_t ns)
{
    struct timespec t;
    t.tv_sec = (time_t)(ns / 1000000000LL);
    t.tv_nsec = (long)(ns % 1000000000LL);
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000L;
        t.tv_sec--;
    }
    return t;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t zero[4096];
    while (n >= sizeof(zero)) {
        if (memcmp(p, zero, sizeof(zero)) != 0)
            return false;
        p += sizeof(zero);
        n -= sizeof(zero);
    }
    return memcmp(p, zero, n) == 0;
}

/* Is path selected by the include/exclude patterns? inside_included: below a directory an
 * include pattern selected, where everything is included. */
static bool selected(const rctx *c, const char *path, bool inside_included)
{
    if (cf_ops__match_any(c->o->excludes, path))
        return false;
    if (inside_included || !c->o->includes || !c->o->includes[0])
        return true;
    return cf_ops__match_any(c->o->includes, path);
}

static void apply_xattrs_fd(rctx *c, int fd, const cf_node *n, const char *path)
{
    for (uint16_t i = 0; i < n->nxattrs; i++) {
        if (fsetxattr(fd, n->xattrs[i].name, n->xattrs[i].value, n->xattrs[i].value_len, 0) != 0 &&
            errno != ENOTSUP && !(errno == EPERM && !c->root))
            rreport(c, path, "unable to set extended attribute '%s': %s", n->xattrs[i].name,
                    strerror(errno));
    }
}

static void apply_meta_fd(rctx *c, int fd, const cf_node *n, const char *path)
{
    if (c->root && !c->o->no_owner && fchown(fd, n->uid, n->gid) != 0)
        rreport(c, path, "unable to set owner: %s", strerror(errno));
    if (fchmod(fd, (mode_t)n->mode & 07777) != 0)
        rreport(c, path, "unable to set mode: %s", strerror(errno));
    apply_xattrs_fd(c, fd, n, path);
    struct timespec ts[2] = {to_ts(n->atime ? n->atime : n->mtime), to_ts(n->mtime)};
    if (futimens(fd, ts) != 0)
        rreport(c, path, "unable to set times: %s", strerror(errno));
}

static atomic_ulong tmp_counter;

/* Record a fatal error (the first one wins); the walk and the workers stop. */
static void set_fatal(rctx *c, int code)
{
    pthread_mutex_lock(&c->mu);
    if (!c->fatal)
        c->fatal = code;
    pthread_mutex_unlock(&c->mu);
}

/* Make room for name in dirfd when overwriting; fail when it exists otherwise. replaced: a
 * file written elsewhere will be renamed over name, so an existing non-directory stays until
 * then. */
static int clear_slot(rctx *c, int dirfd, const char *name, const char *path, bool want_dir,
                      bool replaced)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    if (want_dir && S_ISDIR(st.st_mode))
        return 0;
    if (!c->o->overwrite) {
        rreport(c, path, "already exists (use --overwrite to replace it)");
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        rreport(c, path, "a directory is in the way of a file");
        return -1;
    }
    if (replaced)
        return 0;
    if (unlinkat(dirfd, name, 0) != 0) {
        rreport(c, path, "unable to replace: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static bool pread_full(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t k = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        done += (size_t)k;
    }
    return true;
}

/* A hole of len bytes at off reads back as zeros (data regions within it are checked in
 * bounded pieces; true holes are skipped with SEEK_DATA). */
static bool hole_is_zero(int fd, uint8_t *buf, size_t bufsize, uint64_t off, uint64_t len)
{
    uint64_t end = off + len;
    uint64_t pos = off;
    while (pos < end) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO; /* nothing but hole to the end of the file */
        if ((uint64_t)data >= end)
            return true;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        uint64_t stop = hole < 0 || (uint64_t)hole > end ? end : (uint64_t)hole;
        for (uint64_t p = (uint64_t)data; p < stop;) {
            size_t n = stop - p > bufsize ? bufsize : (size_t)(stop - p);
            if (!pread_full(fd, buf, n, p) || !all_zero(buf, n))
                return false;
            p += n;
        }
        pos = stop;
    }
    return true;
}

static int verify_file(rctx *c, int fd, const cf_node *n, const char *path)
{
    uint64_t off = 0;
    cf_buf b;
    cf_buf_init(&b, 0);
    int bad = 0;
    const size_t piece = 1u << 20;
    if (cf_buf_reserve(&b, piece))
        bad = 1;
    for (uint32_t i = 0; i < n->ncontent && !bad; i++) {
        const cf_content_item *it = &n->content[i];
        if (it->kind == 1) {
            bad = !hole_is_zero(fd, b.data, b.cap, off, it->len);
        } else {
            /* a blob is at most one chunk: read it whole and check its keyed hash */
            if (it->len > b.cap && cf_buf_reserve(&b, (size_t)it->len)) {
                bad = 1;
                break;
            }
            cf_id id;
            bad = !pread_full(fd, b.data, (size_t)it->len, off);
            if (!bad) {
                cf_repo__blob_id(c->r, &id, b.data, (size_t)it->len);
                bad = !cf_id_eq(&id, &it->id);
            }
        }
        off += it->len;
    }
    cf_buf_free(&b);
    if (bad) {
        rreport(c, path, "verification failed: the file on disk differs from the snapshot");
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    c->st.verified++;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* Write a created file's content, check it, apply its metadata; on failure remove it.
 * Runs in a worker thread (or inline without workers). */
static void fill_file(rctx *c, cf_buf *blob, cf_pack_window *win, fjob *j)
{
    const cf_node *n = &j->node;
    const char *path = j->path;
    /* created here rather than by the walk: creating files is much of a restore's system
     * time, and this way the workers share it */
    snprintf(j->tmp, sizeof(j->tmp), ".coffer-restore-%ld-%lu", (long)getpid(),
             atomic_fetch_add(&tmp_counter, 1));
    int fd = openat(j->dirfd, j->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rreport(c, path, "unable to create: %s", strerror(errno));
        return;
    }
    uint64_t off = 0;
    bool failed = false;
    for (uint32_t i = 0; i < n->ncontent && !failed; i++) {
        const cf_content_item *it = &n->content[i];
        if (it->kind == 1) {
            off += it->len;
            continue;
        }
        if (cf_cancel_requested()) {
            set_fatal(c, CF_ECANCELLED);
            failed = true;
            break;
        }
        cf_buf_reset(blob);
        int rc = cf_repo__read_blob_window(blob, c->r, &it->id, CF_BLOB_DATA, win);
        if (rc == CF_ENOMEM) {
            set_fatal(c, rc);
            failed = true;
            break;
        }
        if (rc) {
            rreport(c, path, "%s", cf_error_last()->message);
            pthread_mutex_lock(&c->mu);
            c->damaged++;
            pthread_mutex_unlock(&c->mu);
            failed = true;
            break;
        }
        if (blob->len != it->len) {
            rreport(c, path, "blob length %zu differs from the tree's %llu", blob->len,
                    (unsigned long long)it->len);
            failed = true;
            break;
        }
        if (!(blob->len >= 4096 && all_zero(blob->data, blob->len))) {
            size_t done = 0;
            while (done < blob->len) {
                ssize_t k = pwrite(fd, blob->data + done, blob->len - done, (off_t)(off + done));
                if (k < 0 && errno == EINTR)
                    continue;
                if (k < 0) {
                    int e = errno;
                    rreport(c, path, "unable to write: %s", strerror(e));
                    if (e == ENOSPC || e == EDQUOT)
                        set_fatal(c, cf_error_set(CF_ENOSPACE, e, "unable to write '%s': %s",
                                                  path, strerror(e)));
                    failed = true;
                    break;
                }
                done += (size_t)k;
            }
        }
        off += it->len;
        pthread_mutex_lock(&c->mu);
        c->st.bytes += it->len;
        c->prog.bytes_done += it->len;
        rprogress(c, path);
        pthread_mutex_unlock(&c->mu);
    }
    if (!failed && ftruncate(fd, (off_t)off) != 0) {
        rreport(c, path, "unable to set size: %s", strerror(errno));
        failed = true;
    }
    if (!failed && c->o->verify && verify_file(c, fd, n, path)) {
        pthread_mutex_lock(&c->mu);
        c->unverified++;
        pthread_mutex_unlock(&c->mu);
        failed = true;
    }
    if (failed) {
        close(fd);
        unlinkat(j->dirfd, j->tmp, 0); /* never under its own name: nothing half-written shows */
        return;
    }
    apply_meta_fd(c, fd, n, path);
    close(fd);
    /* complete: now it takes its name (replacing the file there with --overwrite) */
    if (renameat(j->dirfd, j->tmp, j->dirfd, n->name) != 0) {
        rreport(c, path, "unable to rename the restored file into place: %s", strerror(errno));
        unlinkat(j->dirfd, j->tmp, 0);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->st.files++;
    c->prog.files_done++;
    pthread_mutex_unlock(&c->mu);
}

static int get_fatal(rctx *c)
{
    pthread_mutex_lock(&c->mu);
    int f = c->fatal;
    pthread_mutex_unlock(&c->mu);
    return f;
}

static void job_free(fjob *j)
{
    if (j->dirfd >= 0)
        close(j->dirfd);
    cf_node__free(&j->node);
    free(j->path);
}

static void *restore_worker(void *arg)
{
    rctx *c = arg;
    cf_buf blob;
    cf_buf_init(&blob, 0);
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (!c->stop && c->qcount == 0)
            pthread_cond_wait(&c->not_empty, &c->mu);
        if (c->qcount == 0) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        fjob j = c->q[c->qhead];
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qcount--;
        c->busy++;
        bool skip = c->fatal != 0;
        pthread_cond_signal(&c->not_full);
        pthread_mutex_unlock(&c->mu);
        if (!skip)
            fill_file(c, &blob, &c->win, &j);
        job_free(&j);
        pthread_mutex_lock(&c->mu);
        c->busy--;
        if (c->qcount == 0 && c->busy == 0)
            pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->mu);
    }
    cf_buf_free(&blob);
    return NULL;
}

/* Hand a file to the workers, which create and fill it (or do so here when there are none). */
static int submit_file(rctx *c, int dirfd, const cf_node *n, const char *path)
{
    fjob j;
    memset(&j, 0, sizeof(j));
    j.dirfd = dup(dirfd);
    j.path = cf_strdup(path);
    if (j.dirfd < 0 || !j.path || cf_node__copy(&j.node, n)) {
        job_free(&j);
        return cf_error_set(CF_ENOMEM, errno, "unable to queue '%s'", path);
    }
    if (c->nthreads == 0) {
        fill_file(c, &c->blob, &c->win, &j);
        job_free(&j);
        return 0;
    }
    pthread_mutex_lock(&c->mu);
    while (c->qcount == c->qcap)
        pthread_cond_wait(&c->not_full, &c->mu);
    c->q[(c->qhead + c->qcount) % c->qcap] = j;
    c->qcount++;
    pthread_cond_signal(&c->not_empty);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int defer_link(rctx *c, const char *rel, const char *target, const char *path)
{
    if (cf_array_grow(&c->plinks, &c->plinks_cap, c->nplinks, sizeof(*c->plinks)))
        return CF_ENOMEM;
    pending_link *l = &c->plinks[c->nplinks];
    l->rel = cf_strdup(rel);
    l->target = cf_strdup(target);
    l->path = cf_strdup(path);
    if (!l->rel || !l->target || !l->path) {
        free(l->rel);
        free(l->target);
        free(l->path);
        return cf_error_set(CF_ENOMEM, 0, "out of memory remembering hard link '%s'", path);
    }
    c->nplinks++;
    return 0;
}

static int restore_file(rctx *c, int dirfd, const cf_node *n, const char *rel, const char *path)
{
    if (clear_slot(c, dirfd, n->name, path, false, true))
        return 0;
    if (n->nlink > 1) {
        /* hard links: a further name for an inode already restored is linked at the end */
        for (size_t i = 0; i < c->nlinks; i++)
            if (c->links[i].dev == n->dev && c->links[i].inode == n->inode)
                return defer_link(c, rel, c->links[i].rel, path);
        if (cf_array_grow(&c->links, &c->links_cap, c->nlinks, sizeof(*c->links)))
            return CF_ENOMEM;
        if (!(c->links[c->nlinks].rel = cf_strdup(rel)))
            return CF_ENOMEM;
        c->links[c->nlinks].dev = n->dev;
        c->links[c->nlinks].inode = n->inode;
        c->nlinks++;
    }
    return submit_file(c, dirfd, n, path);
}

/* Make the further names of hard-linked files, once the workers have written the first ones:
 * each is linked under a temporary name and renamed into place, like a file. */
static void make_pending_links(rctx *c)
{
    for (size_t i = 0; i < c->nplinks; i++) {
        pending_link *l = &c->plinks[i];
        if (get_fatal(c) == 0) {
            const char *slash = strrchr(l->rel, '/');
            const char *name = slash ? slash + 1 : l->rel;
            char *dir = slash ? cf_strndup(l->rel, (size_t)(slash - l->rel)) : NULL;
            int dfd = slash ? (dir ? openat(c->rootfd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                                O_CLOEXEC)
                                   : -1)
                            : dup(c->rootfd);
            char tmp[64];
            snprintf(tmp, sizeof(tmp), ".coffer-restore-%ld-%lu", (long)getpid(),
                     atomic_fetch_add(&tmp_counter, 1));
            if (dfd < 0) {
                rreport(c, l->path, "unable to open its directory: %s", strerror(errno));
            } else if (linkat(c->rootfd, l->target, dfd, tmp, 0) != 0) {
                rreport(c, l->path, "unable to link to '%s': %s", l->target,
                        errno == ENOENT ? "that file was not restored" : strerror(errno));
            } else if (renameat(dfd, tmp, dfd, name) != 0) {
                rreport(c, l->path, "unable to rename the link into place: %s", strerror(errno));
                unlinkat(dfd, tmp, 0);
            } else {
                c->st.files++;
            }
            if (dfd >= 0)
                close(dfd);
            free(dir);
        }
        free(l->rel);
        free(l->target);
        free(l->path);
    }
    free(c->plinks);
    c->plinks = NULL;
    c->nplinks = c->plinks_cap = 0;
}

static int start_workers(rctx *c, unsigned n)
{
    c->qcap = (size_t)n * 4;
    if (n == 0)
        return 0;
    c->q = cf_calloc(c->qcap, sizeof(fjob));
    c->threads = cf_calloc(n, sizeof(pthread_t));
    if (!c->q || !c->threads)
        return CF_ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&c->threads[i], NULL, restore_worker, c) != 0)
            break;
        c->nthreads++;
    }
    return 0;
}

/* Wait for every queued file, then stop the workers. */
static void stop_workers(rctx *c)
{
    if (!c->threads)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->not_empty);
    pthread_mutex_unlock(&c->mu);
    for (unsigned i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    free(c->threads);
    free(c->q);
    c->threads = NULL;
    c->q = NULL;
}

static void restore_special(rctx *c, int dirfd, const cf_node *n, const char *path)
{
    int r = 0;
    if (clear_slot(c, dirfd, n->name, path, false, false))
        return;
    switch (n->type) {
    case CF_NODE_SYMLINK:
        r = symlinkat(n->target ? n->target : "", dirfd, n->name);
        break;
    case CF_NODE_FIFO:
        r = mkfifoat(dirfd, n->name, (mode_t)n->mode & 07777);
        break;
    case CF_NODE_CHARDEV:
    case CF_NODE_BLOCKDEV:
        if (!c->root) {
            rreport(c, path, "device files can only be restored as root");
            return;
        }
        r = mknodat(dirfd, n->name,
                    (n->type == CF_NODE_CHARDEV ? S_IFCHR : S_IFBLK) | ((mode_t)n->mode & 07777),
                    (dev_t)n->rdev);
        break;
    default:
        return; /* sockets are not restored */
    }
    if (r != 0) {
        rreport(c, path, "unable to create: %s", strerror(errno));
        return;
    }
    if (c->root && !c->o->no_owner &&
        fchownat(dirfd, n->name, n->uid, n->gid, AT_SYMLINK_NOFOLLOW) != 0)
        rreport(c, path, "unable to set owner: %s", strerror(errno));
    if (n->type != CF_NODE_SYMLINK && fchmodat(dirfd, n->name, (mode_t)n->mode & 07777, 0) != 0)
        rreport(c, path, "unable to set mode: %s", strerror(errno));
    struct timespec ts[2] = {to_ts(n->atime ? n->atime : n->mtime), to_ts(n->mtime)};
    utimensat(dirfd, n->name, ts, AT_SYMLINK_NOFOLLOW);
    pthread_mutex_lock(&c->mu);
    c->st.others++;
    pthread_mutex_unlock(&c->mu);
}

static int defer_dir_meta(rctx *c, const char *rel, const char *path, const cf_node *n)
{
    if (cf_array_grow(&c->dirs, &c->dirs_cap, c->ndirs, sizeof(*c->dirs)))
        return CF_ENOMEM;
    dir_meta *d = &c->dirs[c->ndirs];
    memset(d, 0, sizeof(*d));
    if (!(d->rel = cf_strdup(rel)) || !(d->path = cf_strdup(path)) || cf_node__copy(&d->node, n)) {
        free(d->rel);
        free(d->path);
        return cf_error_set(CF_ENOMEM, 0, "out of memory remembering directory '%s'", path);
    }
    c->ndirs++;
    return 0;
}

/* Apply the metadata of the restored directories, once the workers have stopped. They were
 * recorded after their content, so each directory comes after everything inside it (a mode
 * without write or search permission takes effect last). */
static void apply_dir_metas(rctx *c)
{
    for (size_t i = 0; i < c->ndirs; i++) {
        dir_meta *d = &c->dirs[i];
        int fd = openat(c->rootfd, d->rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            rreport(c, d->path, "unable to open directory: %s", strerror(errno));
        } else {
            apply_meta_fd(c, fd, &d->node, d->path);
            close(fd);
        }
        free(d->rel);
        free(d->path);
        cf_node__free(&d->node);
    }
    free(c->dirs);
    c->dirs = NULL;
    c->ndirs = c->dirs_cap = 0;
}

/* Restore the children of tree id into dirfd. rel: path of dirfd relative to the target root
 * ("" at the root); spath: the snapshot path of the tree ("" for the root). Returns the number
 * of entries restored through *out_count. */
static int restore_tree(rctx *c, int dirfd, const char *rel, const char *spath, const cf_id *id,
                        bool inside_included, uint64_t *out_count)
{
    cf_tree t;
    int rc = cf_repo__load_tree(&t, c->r, id);
    *out_count = 0;
    if (rc) {
        if (rc == CF_ENOMEM)
            return rc;
        rreport(c, *spath ? spath : "/", "%s", cf_error_last()->message);
        c->damaged++;
        return 0;
    }
    for (size_t i = 0; i < t.count && rc == 0 && !get_fatal(c); i++) {
        const cf_node *n = &t.nodes[i];
        if (cf_cancel_requested()) {
            set_fatal(c, CF_ECANCELLED);
            break;
        }
        char *sp = cf_ops__join(*spath ? spath : "/", n->name, n->name_len);
        char *rp = *rel ? cf_ops__join(rel, n->name, n->name_len) : cf_strndup(n->name, n->name_len);
        if (!sp || !rp) {
            free(sp);
            free(rp);
            rc = CF_ENOMEM;
            break;
        }
        bool sel = selected(c, sp, inside_included);
        if (n->type == CF_NODE_DIR) {
            if (cf_ops__match_any(c->o->excludes, sp))
                goto next;
            if (clear_slot(c, dirfd, n->name, sp, true, false))
                goto next;
            bool created = mkdirat(dirfd, n->name, 0700) == 0;
            if (!created && errno != EEXIST) {
                rreport(c, sp, "unable to create directory: %s", strerror(errno));
                goto next;
            }
            int fd = openat(dirfd, n->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                rreport(c, sp, "unable to open directory: %s", strerror(errno));
                goto next;
            }
            uint64_t inner = 0;
            /* with includes, a selected directory restores all of its content */
            rc = restore_tree(c, fd, rp, sp, &n->subtree, sel, &inner);
            if (rc == 0 && (inner > 0 || sel)) {
                if ((rc = defer_dir_meta(c, rp, sp, n))) {
                    close(fd);
                    goto next;
                }
                pthread_mutex_lock(&c->mu);
                c->st.dirs++;
                pthread_mutex_unlock(&c->mu);
                (*out_count)++;
            }
            close(fd);
            if (rc == 0 && inner == 0 && !sel && created)
                unlinkat(dirfd, n->name, AT_REMOVEDIR); /* nothing selected inside */
        } else if (sel) {
            if (n->type == CF_NODE_FILE)
                rc = restore_file(c, dirfd, n, rp, sp);
            else
                restore_special(c, dirfd, n, sp);
            (*out_count)++;
        }
    next:
        free(sp);
        free(rp);
    }
    cf_tree__free(&t);
    return rc ? rc : get_fatal(c);
}

/* Find the node at path ("/a/b") starting from the snapshot root. On success *out is a copy. */
static int find_node(cf_node *out, cf_repo *r, const cf_snapshot *snap, const char *path)
{
    cf_id cur = snap->tree;
    int rc = 0;
    const char *p = path;
    memset(out, 0, sizeof(*out));
    bool found_any = false;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *name = cf_strndup(p, len);
        if (!name)
            return CF_ENOMEM;
        cf_tree t;
        if ((rc = cf_repo__load_tree(&t, r, &cur))) {
            free(name);
            return rc;
        }
        const cf_node *n = cf_tree__find(&t, name);
        free(name);
        if (!n) {
            cf_tree__free(&t);
            cf_node__free(out);
            return cf_error_set(CF_ENOTFOUND, 0, "path '%s' not found in snapshot %.8s", path, snap->id);
        }
        cf_node__free(out);
        rc = cf_node__copy(out, n);
        cf_tree__free(&t);
        if (rc)
            return rc;
        found_any = true;
        p += len;
        if (*p && out->type != CF_NODE_DIR) {
            cf_node__free(out);
            return cf_error_set(CF_ENOTFOUND, 0, "path '%s' not found in snapshot %.8s", path, snap->id);
        }
        cur = out->subtree;
    }
    if (!found_any) {
        /* the root itself */
        out->type = CF_NODE_DIR;
        out->subtree = snap->tree;
    }
    return 0;
}

static int ensure_target(const cf_restore_opts *o, int *out_fd)
{
    const char *t = o->target;
    if (!t || !*t)
        return cf_error_set(CF_EINVAL, 0, "no restore target given");
    /* mkdir -p */
    char *p = cf_strdup(t);
    if (!p)
        return CF_ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                return cf_error_set(cf_error_from_errno(e), e, "unable to create target '%s': %s", t,
                                    strerror(e));
            }
            *s = '/';
        }
    }
    free(p);
    if (mkdir(t, 0755) != 0 && errno != EEXIST)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to create target '%s': %s", t,
                            strerror(errno));
    int fd = open(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to open target '%s': %s", t,
                            strerror(errno));
    if (faccessat(fd, ".", W_OK, AT_EACCESS) != 0) {
        int e = errno;
        close(fd);
        return cf_error_set(CF_EPERM, e, "target '%s' is not writable: %s", t, strerror(e));
    }
    if (!o->overwrite) {
        int dfd = dup(fd);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        bool empty = true;
        if (d) {
            struct dirent *de;
            while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                    empty = false;
            closedir(d);
        }
        if (!empty) {
            close(fd);
            cf_error_set(CF_EEXISTS, 0, "target '%s' is not empty", t);
            cf_error_hint("restore into an empty directory, or pass --overwrite to replace files");
            return CF_EEXISTS;
        }
    }
    *out_fd = fd;
    return 0;
}

int cf_restore(cf_repo *repo, const cf_snapshot *snap, const cf_restore_opts *o,
               cf_restore_stats *out_stats)
{
    rctx c;
    cf_node top;
    double t0 = cf_mono_seconds();
    memset(&c, 0, sizeof(c));
    memset(&top, 0, sizeof(top));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.not_empty, NULL);
    pthread_cond_init(&c.not_full, NULL);
    pthread_cond_init(&c.idle, NULL);
    c.r = repo;
    c.o = o;
    c.rootfd = -1;
    c.root = geteuid() == 0;
    c.prog.bytes_total = snap->stats.bytes_total;
    cf_buf_init(&c.blob, 0);
    int rc = find_node(&top, repo, snap, o->subpath ? o->subpath : "/");
    if (rc)
        goto out;
    if ((rc = ensure_target(o, &c.rootfd)))
        goto out;
    if ((rc = cf_repo_lock(repo, CF_LOCK_READ)))
        goto out;
    uint64_t count = 0;
    unsigned threads = o->threads;
    if (threads == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu > 1 ? (unsigned)ncpu : 2;
    }
    /* a few chunks per worker: files interleave over the packs backup wrote in parallel */
    cf_pack_window_init(&c.win, 4 + 2 * threads);
    if ((rc = start_workers(&c, threads)))
        goto out;
    if (top.type == CF_NODE_DIR) {
        const char *sp = o->subpath && strcmp(o->subpath, "/") != 0 ? o->subpath : "";
        rc = restore_tree(&c, c.rootfd, "", sp, &top.subtree, false, &count);
    } else if (top.type == CF_NODE_FILE) {
        rc = restore_file(&c, c.rootfd, &top, top.name, o->subpath);
    } else {
        restore_special(&c, c.rootfd, &top, o->subpath);
    }
    stop_workers(&c);
    if (rc == 0)
        make_pending_links(&c);
    apply_dir_metas(&c);
    if (rc == 0 && c.fatal)
        rc = c.fatal;
    if (rc == CF_ECANCELLED)
        cf_error_set(CF_ECANCELLED, 0,
                     "restore of snapshot %.8s interrupted: %llu files restored, the unfinished "
                     "ones removed",
                     snap->id, (unsigned long long)c.st.files);
    if (rc == 0 && c.unverified && !c.damaged)
        rc = cf_error_set(CF_EVERIFY, 0,
                          "%llu restored files did not read back as written (snapshot %.8s): "
                          "check the target's disk",
                          (unsigned long long)c.unverified, snap->id);
    else if (rc == 0 && c.damaged)
        rc = cf_error_set(CF_ECORRUPT, 0,
                          "%llu errors while restoring snapshot %.8s: repository data is damaged "
                          "or missing (the other files were restored)",
                          (unsigned long long)c.st.errors, snap->id);
    else if (rc == 0 && c.st.errors)
        rc = cf_error_set(CF_EPARTIAL, 0, "%llu errors while restoring snapshot %.8s",
                          (unsigned long long)c.st.errors, snap->id);
out:
    stop_workers(&c);
    if (c.rootfd >= 0) {
        c.fatal = c.fatal ? c.fatal : CF_EGENERIC; /* only release what was recorded */
        make_pending_links(&c);
        apply_dir_metas(&c);
    }
    cf_repo_unlock(repo);
    c.st.seconds = cf_mono_seconds() - t0;
    if (out_stats)
        *out_stats = c.st;
    if (c.rootfd >= 0)
        close(c.rootfd);
    cf_node__free(&top);
    for (size_t i = 0; i < c.nlinks; i++)
        free(c.links[i].rel);
    free(c.links);
    cf_buf_free(&c.blob);
    cf_pack_window_free(&c.win);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.not_empty);
    pthread_cond_destroy(&c.not_full);
    pthread_cond_destroy(&c.idle);
    return rc;
}

int cf_dump(cf_repo *repo, const cf_snapshot *snap, const char *path, int fd)
{
    cf_node n;
    cf_buf b;
    cf_buf_init(&b, 0);
    int rc = find_node(&n, repo, snap, path);
    if (rc)
        return rc;
    if (n.type != CF_NODE_FILE) {
        rc = cf_error_set(CF_EINVAL, 0, "'%s' is not a file", path);
        goto out;
    }
    for (uint32_t i = 0; i < n.ncontent && rc == 0; i++) {
        cf_buf_reset(&b);
        if (n.content[i].kind == 1) {
            if ((rc = cf_buf_reserve(&b, 65536)))
                break;
            memset(b.data, 0, 65536);
            uint64_t left = n.content[i].len;
            while (left && rc == 0) {
                size_t k = left > 65536 ? 65536 : (size_t)left;
                ssize_t w = write(fd, b.data, k);
                if (w <= 0)
                    rc = cf_error_set(CF_EIO, errno, "unable to write output: %s", strerror(errno));
                else
                    left -= (uint64_t)w;
            }
            continue;
        }
        if ((rc = cf_repo__read_blob(&b, repo, &n.content[i].id, CF_BLOB_DATA)))
            break;
        size_t done = 0;
        while (done < b.len) {
            ssize_t w = write(fd, b.data + done, b.len - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = cf_error_set(CF_EIO, errno, "unable to write output: %s", strerror(errno));
                break;
            }
            done += (size_t)w;
        }
    }
out:
    cf_node__free(&n);
    cf_buf_free(&b);
    return rc;
}
