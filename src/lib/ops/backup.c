/*
 * backup.c - the backup verb: walk the sources, skip unchanged files against the parent
 * snapshot, chunk and store changed data, save trees bottom-up, then publish the snapshot.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "ops/ops.h"

typedef struct {
    cf_repo *r;
    const cf_backup_opts *o;
    cf_backup_stats st;
    uint8_t *buf;
    size_t cap;
    dev_t root_dev;
    bool have_root_dev;
    double last_progress;
    cf_progress prog;
    uid_t cached_uid;
    gid_t cached_gid;
    char cached_user[64], cached_group[64];
    bool have_user, have_group;
    int read_errno; /* set by chunk_stream when the source, not the repository, failed */
    int depth;      /* directories open below the backup paths */
} bctx;

/* Returned (positive) by save_file and save_dir when the entry was reported and skipped. */
#define SKIPPED 1

static int64_t ts_ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec; }

static void report(bctx *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(bctx *c, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->st.errors++;
    if (c->o->on_error)
        c->o->on_error(path, msg, c->o->payload);
}

static void progress(bctx *c, const char *path, bool force)
{
    if (!c->o->progress)
        return;
    double now = cf_mono_seconds();
    double iv = c->o->progress_interval > 0 ? c->o->progress_interval : 1.0;
    if (!force && now - c->last_progress < iv)
        return;
    c->last_progress = now;
    c->prog.current = path;
    c->o->progress(&c->prog, c->o->payload);
}

static const char *user_name(bctx *c, uid_t uid)
{
    if (!c->have_user || c->cached_uid != uid) {
        struct passwd *pw = getpwuid(uid);
        snprintf(c->cached_user, sizeof(c->cached_user), "%s", pw ? pw->pw_name : "");
        c->cached_uid = uid;
        c->have_user = true;
    }
    return c->cached_user;
}

static const char *group_name(bctx *c, gid_t gid)
{
    if (!c->have_group || c->cached_gid != gid) {
        struct group *gr = getgrgid(gid);
        snprintf(c->cached_group, sizeof(c->cached_group), "%s", gr ? gr->gr_name : "");
        c->cached_gid = gid;
        c->have_group = true;
    }
    return c->cached_group;
}

static uint8_t node_type(mode_t m)
{
    if (S_ISREG(m)) return CF_NODE_FILE;
    if (S_ISDIR(m)) return CF_NODE_DIR;
    if (S_ISLNK(m)) return CF_NODE_SYMLINK;
    if (S_ISFIFO(m)) return CF_NODE_FIFO;
    if (S_ISCHR(m)) return CF_NODE_CHARDEV;
    if (S_ISBLK(m)) return CF_NODE_BLOCKDEV;
    return CF_NODE_SOCKET;
}

/* Fill metadata of n from st (name set by caller). */
static int fill_meta(bctx *c, cf_node *n, const struct stat *st)
{
    n->type = node_type(st->st_mode);
    n->mode = st->st_mode & 07777;
    n->uid = st->st_uid;
    n->gid = st->st_gid;
    n->mtime = ts_ns(&st->st_mtim);
    n->atime = 0; /* not recorded: reading changes it, and trees would never dedup */
    n->ctime = ts_ns(&st->st_ctim);
    n->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
    n->inode = st->st_ino;
    n->dev = st->st_dev;
    n->rdev = (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) ? st->st_rdev : 0;
    n->nlink = (uint32_t)st->st_nlink;
    if (!(n->user = cf_strdup(user_name(c, st->st_uid))) ||
        !(n->group = cf_strdup(group_name(c, st->st_gid))))
        return CF_ENOMEM;
    return 0;
}

static int read_xattrs(bctx *c, cf_node *n, const char *path)
{
    char list[65536];
    ssize_t len = llistxattr(path, list, sizeof(list));
    if (len <= 0)
        return 0; /* none, or not supported here */
    size_t count = 0;
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1)
        count++;
    if (count > 65535)
        count = 65535;
    n->xattrs = cf_calloc(count, sizeof(cf_xattr));
    if (!n->xattrs)
        return CF_ENOMEM;
    for (ssize_t i = 0; i < len && n->nxattrs < count; i += (ssize_t)strlen(list + i) + 1) {
        const char *name = list + i;
        if (strlen(name) > 255)
            continue;
        ssize_t vl = lgetxattr(path, name, NULL, 0);
        if (vl < 0 || vl > (1 << 24))
            continue;
        uint8_t *v = cf_malloc((size_t)vl + 1);
        if (!v)
            return CF_ENOMEM;
        vl = lgetxattr(path, name, v, (size_t)vl);
        if (vl < 0) {
            free(v);
            report(c, path, "unable to read extended attribute '%s': %s", name, strerror(errno));
            continue;
        }
        cf_xattr *x = &n->xattrs[n->nxattrs];
        if (!(x->name = cf_strdup(name))) {
            free(v);
            return CF_ENOMEM;
        }
        x->value = v;
        x->value_len = (uint32_t)vl;
        n->nxattrs++;
    }
    return 0;
}

static int add_item(cf_node *n, uint32_t *cap, uint8_t kind, uint64_t len, const cf_id *id)
{
    if (n->ncontent == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 4;
        cf_content_item *p = cf_realloc(n->content, ncap * sizeof(*p));
        if (!p)
            return CF_ENOMEM;
        n->content = p;
        *cap = ncap;
    }
    cf_content_item *it = &n->content[n->ncontent++];
    memset(it, 0, sizeof(*it));
    it->kind = kind;
    it->len = len;
    if (id)
        it->id = *id;
    return 0;
}

/* A stop was asked for (cf_cancel: SIGINT, SIGTERM): end the backup without a snapshot. */
static int cancelled(void)
{
    if (!cf_cancel_requested())
        return 0;
    return cf_error_set(CF_ECANCELLED, 0, "backup interrupted: no snapshot was saved (the data "
                        "stored so far is reused by the next backup)");
}

static int store_chunk(bctx *c, cf_node *n, uint32_t *cap, const uint8_t *data, size_t len)
{
    cf_id id;
    uint64_t added = 0;
    int crc = cancelled();
    if (crc)
        return crc;
    cf_repo__blob_id(c->r, &id, data, len);
    int rc = cf_repo__add_blob(c->r, CF_BLOB_DATA, &id, data, len, &added);
    if (rc)
        return rc;
    (void)added; /* accounted from the repository's counters at the end */
    if ((rc = cf_repo__maybe_checkpoint(c->r)) || (rc = cf_repo__refresh_lock(c->r)))
        return rc;
    return add_item(n, cap, 0, len, &id);
}

/*
 * Read fd from off for at most limit bytes (UINT64_MAX: to EOF) and chunk it into n's
 * content. Returns bytes read through *out_read. Read errors return CF_EIO (the caller
 * reports the file); storage errors are fatal.
 */
static int chunk_stream(bctx *c, int fd, uint64_t off, uint64_t limit, cf_node *n, uint32_t *cap,
                        uint64_t *out_read, bool use_pread)
{
    const cf_chunk_params *p = cf_chunker_params(c->r->chunker);
    size_t s = 0, e = 0;
    bool eof = false;
    uint64_t got = 0;
    int rc = 0;
    /* most chunks end before twice the average: look that far first, and fill up to the
     * maximum only when no cut point was found (keeps the buffer small) */
    const size_t quick = 2 * (size_t)p->avg < p->max ? 2 * (size_t)p->avg : p->max;
    size_t need = quick;
    while (!eof || e > s) {
        while (!eof && e - s < need) {
            if (c->cap - s < need) {
                memmove(c->buf, c->buf + s, e - s);
                e -= s;
                s = 0;
            }
            size_t want = c->cap - e;
            if (limit != UINT64_MAX && want > limit - got)
                want = (size_t)(limit - got);
            if (want == 0) {
                eof = true;
                break;
            }
            ssize_t k = use_pread ? pread(fd, c->buf + e, want, (off_t)(off + got))
                                  : read(fd, c->buf + e, want);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                c->read_errno = errno;
                return cf_error_set(CF_EIO, errno, "%s", strerror(errno));
            }
            if (k == 0) {
                eof = true;
                break;
            }
            e += (size_t)k;
            got += (uint64_t)k;
            c->st.bytes_read += (uint64_t)k;
            c->prog.bytes_done += (uint64_t)k;
        }
        if (e == s)
            break;
        size_t cut = cf_chunker_cut(c->r->chunker, c->buf + s, e - s, eof);
        if (cut == 0) {
            if (need < p->max) {
                need = p->max; /* no cut point yet: read up to a whole maximal chunk */
                continue;
            }
            cut = e - s; /* cannot happen: we filled to max or eof */
        }
        if ((rc = store_chunk(c, n, cap, c->buf + s, cut)))
            return rc;
        s += cut;
        need = quick;
        progress(c, NULL, false);
    }
    *out_read = got;
    return 0;
}

/* Back up a regular file's content into n (metadata already filled). */
static int save_file(bctx *c, cf_node *n, int dfd, const char *rel, const char *path,
                     const cf_node *old)
{
    int rc = 0;
    uint32_t cap = 0;
    c->prog.files_done++;
    if (old && old->type == CF_NODE_FILE && c->o->type != CF_BACKUP_FULL && old->size == n->size &&
        old->mtime == n->mtime && old->ctime == n->ctime && old->inode == n->inode) {
        /* the parent snapshot's blobs are in the repository: prune never removes what a
         * snapshot references, and check reports it if storage lost them */
        if (old->ncontent) {
            n->content = cf_malloc(old->ncontent * sizeof(cf_content_item));
            if (!n->content)
                return CF_ENOMEM;
            memcpy(n->content, old->content, old->ncontent * sizeof(cf_content_item));
            n->ncontent = old->ncontent;
        }
        c->st.files_unchanged++;
        c->prog.bytes_done += n->size;
        return 0;
    }
    int fd = openat(dfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(dfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        report(c, path, "unable to open: %s", strerror(errno));
        return SKIPPED;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        report(c, path, "changed type while being read");
        close(fd);
        return SKIPPED;
    }
    c->read_errno = 0;
    uint64_t total = 0;
    bool sparse = (uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size && st.st_size > 0;
    if (sparse) {
        off_t pos = 0;
        while (rc == 0) {
            off_t data = lseek(fd, pos, SEEK_DATA);
            if (data < 0) {
                if (errno == ENXIO) {
                    /* hole to the end of the file */
                    if (pos < st.st_size)
                        rc = add_item(n, &cap, 1, (uint64_t)(st.st_size - pos), NULL);
                    total = (uint64_t)st.st_size;
                    break;
                }
                sparse = false; /* SEEK_DATA unsupported: read it all */
                break;
            }
            if (data > pos && (rc = add_item(n, &cap, 1, (uint64_t)(data - pos), NULL)))
                break;
            off_t hole = lseek(fd, data, SEEK_HOLE);
            if (hole < 0)
                hole = st.st_size;
            uint64_t got = 0;
            rc = chunk_stream(c, fd, (uint64_t)data, (uint64_t)(hole - data), n, &cap, &got, true);
            pos = data + (off_t)got;
            total = (uint64_t)pos;
            if (rc == 0 && (off_t)got < hole - data)
                break; /* shrank while reading */
            if (pos >= st.st_size)
                break;
        }
        if (!sparse && rc == 0) {
            free(n->content);
            n->content = NULL;
            n->ncontent = 0;
            cap = 0;
        }
    }
    if (!sparse && rc == 0)
        rc = chunk_stream(c, fd, 0, UINT64_MAX, n, &cap, &total, false);
    close(fd);
    if (rc && c->read_errno) {
        report(c, path, "unable to read: %s", strerror(c->read_errno));
        c->read_errno = 0;
        return SKIPPED;
    }
    if (rc)
        return rc;
    n->size = total; /* what was read, consistent with the content even if it changed */
    if (old && old->type == CF_NODE_FILE)
        c->st.files_changed++;
    else
        c->st.files_new++;
    return 0;
}

static int save_dir(bctx *c, const char *path, const cf_id *old_tree, cf_id *out_id);

/* Copy metadata that only changes together with ctime from the parent's node. */
static int copy_unchanged(cf_node *n, const cf_node *old)
{
    if (old->nxattrs) {
        cf_node tmp;
        if (cf_node__copy(&tmp, old))
            return CF_ENOMEM;
        n->xattrs = tmp.xattrs;
        n->nxattrs = tmp.nxattrs;
        n->target = tmp.target;
        tmp.xattrs = NULL;
        tmp.nxattrs = 0;
        tmp.target = NULL;
        cf_node__free(&tmp);
    } else if (old->target && !(n->target = cf_strdup(old->target))) {
        return CF_ENOMEM;
    }
    return 0;
}

/* Build the node for one filesystem entry, found as name in the directory open as dfd
 * (AT_FDCWD: use the full path). Returns 0 with *keep true when the node is to be added;
 * non-fatal errors are reported and leave *keep false. */
static int save_entry(bctx *c, cf_node *n, int dfd, const char *path, const char *name,
                      size_t name_len, const cf_node *old, bool *keep)
{
    struct stat st;
    int rc = cancelled();
    const char *rel = dfd == AT_FDCWD ? path : name;
    *keep = false;
    if (rc)
        return rc;
    if (fstatat(dfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return 0; /* vanished since the directory was read */
        report(c, path, "unable to stat: %s", strerror(errno));
        return 0;
    }
    if (name_len > 65535) {
        report(c, path, "name too long");
        return 0;
    }
    if (!(n->name = cf_strndup(name, name_len)))
        return CF_ENOMEM;
    n->name_len = (uint16_t)name_len;
    if ((rc = fill_meta(c, n, &st)))
        return rc;
    /* xattrs and link targets change the ctime: unchanged metadata need not be read again */
    bool same = old && c->o->type != CF_BACKUP_FULL && old->type == n->type &&
                old->ctime == n->ctime && old->mtime == n->mtime && old->inode == n->inode &&
                old->size == n->size && old->dev == n->dev;
    if (same)
        rc = copy_unchanged(n, old);
    else
        rc = read_xattrs(c, n, path);
    if (rc)
        return rc;
    switch (n->type) {
    case CF_NODE_FILE:
        rc = save_file(c, n, dfd, rel, path, old);
        if (rc == SKIPPED)
            return 0; /* reported */
        if (rc)
            return rc;
        c->st.bytes_total += n->size;
        break;
    case CF_NODE_DIR:
        if (c->o->one_file_system && c->have_root_dev && st.st_dev != c->root_dev) {
            cf_tree empty;
            cf_tree__init(&empty);
            uint64_t added = 0;
            rc = cf_repo__save_tree(c->r, &empty, &n->subtree, &added);
            if (rc)
                return rc;
        } else {
            rc = save_dir(c, path, old && old->type == CF_NODE_DIR ? &old->subtree : NULL,
                          &n->subtree);
            if (rc == SKIPPED)
                return 0;
            if (rc)
                return rc;
        }
        c->st.dirs++;
        break;
    case CF_NODE_SYMLINK: {
        if (same && n->target) {
            c->st.others++;
            break;
        }
        char target[PATH_MAX + 1];
        ssize_t tl = readlinkat(dfd, rel, target, PATH_MAX);
        if (tl < 0) {
            report(c, path, "unable to read link: %s", strerror(errno));
            return 0;
        }
        if (!(n->target = cf_strndup(target, (size_t)tl)))
            return CF_ENOMEM;
        c->st.others++;
        break;
    }
    default:
        c->st.others++;
        break;
    }
    *keep = true;
    return 0;
}

typedef struct {
    char *name;
    size_t len;
} dent;

static int cmp_dent(const void *a, const void *b)
{
    const dent *x = a, *y = b;
    int r = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    return r ? r : (x->len < y->len ? -1 : x->len > y->len);
}

static int save_dir(bctx *c, const char *path, const cf_id *old_tree, cf_id *out_id)
{
    int rc = 0;
    cf_tree t, old;
    dent *ents = NULL;
    size_t n = 0, cap = 0;
    bool have_old = false, counted = false;
    cf_tree__init(&t);
    cf_tree__init(&old);
    DIR *d = opendir(path);
    if (!d) {
        report(c, path, "unable to read directory: %s", strerror(errno));
        return SKIPPED;
    }
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            dent *p = cf_realloc(ents, ncap * sizeof(*p));
            if (!p) {
                rc = CF_ENOMEM;
                goto out;
            }
            ents = p;
            cap = ncap;
        }
        ents[n].len = strlen(de->d_name);
        if (!(ents[n].name = cf_strndup(de->d_name, ents[n].len))) {
            rc = CF_ENOMEM;
            goto out;
        }
        n++;
        errno = 0;
    }
    if (errno)
        report(c, path, "error reading directory: %s", strerror(errno));
    /* children are opened relative to this directory (no path walks), except very deep down
     * where holding one descriptor per level could exhaust them */
    int dfd = AT_FDCWD;
    if (c->depth < 128) {
        dfd = dirfd(d);
    } else {
        closedir(d);
        d = NULL;
    }
    c->depth++;
    counted = true;
    if (n > 1)
        qsort(ents, n, sizeof(*ents), cmp_dent);
    if (old_tree) {
        if (cf_repo__load_tree(&old, c->r, old_tree) == 0)
            have_old = true;
        else
            cf_tree__init(&old); /* parent damaged: compare against nothing */
    }
    for (size_t i = 0; i < n; i++) {
        char *child = cf_ops__join(path, ents[i].name, ents[i].len);
        if (!child) {
            rc = CF_ENOMEM;
            goto out;
        }
        if (cf_ops__match_any(c->o->excludes, child)) {
            free(child);
            continue;
        }
        const cf_node *prev = have_old ? cf_tree__find(&old, ents[i].name) : NULL;
        cf_node node;
        bool keep = false;
        memset(&node, 0, sizeof(node));
        rc = save_entry(c, &node, dfd, child, ents[i].name, ents[i].len, prev, &keep);
        progress(c, child, false);
        free(child);
        if (rc == 0 && keep)
            rc = cf_tree__add(&t, &node);
        cf_node__free(&node);
        if (rc)
            goto out;
        if ((rc = cf_repo__refresh_lock(c->r)))
            goto out;
    }
    if (have_old && cf_tree__equal(&t, &old)) {
        *out_id = *old_tree; /* unchanged directory: no encoding, hashing or lookup */
        goto out;
    }
    uint64_t added = 0;
    rc = cf_repo__save_tree(c->r, &t, out_id, &added);
out:
    if (counted)
        c->depth--;
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++)
        free(ents[i].name);
    free(ents);
    cf_tree__free(&t);
    cf_tree__free(&old);
    return rc;
}

/* ------------------------------------------------------------ the virtual root */

/* Make a path absolute and clean ("." and ".." removed, no trailing slash), without
 * resolving symlinks. */
static char *clean_path(const char *p)
{
    char cwd[PATH_MAX];
    cf_buf b;
    cf_buf_init(&b, PATH_MAX * 4);
    if (p[0] != '/') {
        if (!getcwd(cwd, sizeof(cwd)))
            return NULL;
        cf_buf_append_str(&b, cwd);
        cf_buf_append_str(&b, "/");
    }
    cf_buf_append_str(&b, p);
    char *in = (char *)b.data;
    char *out = cf_malloc(b.len + 2);
    if (!out || !in) {
        cf_buf_free(&b);
        free(out);
        return NULL;
    }
    size_t o = 0;
    const char *s = in;
    while (*s) {
        while (*s == '/')
            s++;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0)
            break;
        if (len == 1 && s[0] == '.') {
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        s += len;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    cf_buf_free(&b);
    return out;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Save the virtual directory at prefix ("" is the root): its children are the next
 * components of the backup paths under it. A path equal to a child is backed up in full.
 */
static int save_virtual(bctx *c, char **paths, size_t npaths, const char *prefix, const cf_id *old_tree,
                        cf_id *out_id)
{
    int rc = 0;
    cf_tree t, old;
    bool have_old = false;
    size_t plen = strlen(prefix);
    cf_tree__init(&t);
    cf_tree__init(&old);
    if (old_tree && cf_repo__load_tree(&old, c->r, old_tree) == 0)
        have_old = true;
    for (size_t i = 0; i < npaths;) {
        const char *rest = paths[i] + plen + 1; /* after prefix and '/' */
        const char *slash = strchr(rest, '/');
        size_t clen = slash ? (size_t)(slash - rest) : strlen(rest);
        /* group all paths sharing this component */
        size_t j = i;
        bool whole = false;
        while (j < npaths && strncmp(paths[j] + plen + 1, rest, clen) == 0 &&
               (paths[j][plen + 1 + clen] == '/' || paths[j][plen + 1 + clen] == '\0')) {
            if (paths[j][plen + 1 + clen] == '\0')
                whole = true;
            j++;
        }
        char *child = cf_strndup(paths[i], plen + 1 + clen);
        if (!child) {
            rc = CF_ENOMEM;
            goto out;
        }
        char *name = cf_strndup(rest, clen);
        const cf_node *prev = have_old && name ? cf_tree__find(&old, name) : NULL;
        cf_node node;
        memset(&node, 0, sizeof(node));
        bool keep = false;
        if (!name) {
            rc = CF_ENOMEM;
        } else if (whole) {
            struct stat st;
            if (lstat(child, &st) == 0 && !c->have_root_dev) {
                c->root_dev = st.st_dev;
                c->have_root_dev = true;
            }
            rc = save_entry(c, &node, AT_FDCWD, child, name, clen, prev, &keep);
        } else {
            struct stat st;
            if (lstat(child, &st) != 0) {
                report(c, child, "unable to stat: %s", strerror(errno));
            } else if ((node.name = cf_strndup(name, clen)) == NULL) {
                rc = CF_ENOMEM;
            } else {
                node.name_len = (uint16_t)clen;
                rc = fill_meta(c, &node, &st);
                node.type = CF_NODE_DIR;
                if (rc == 0)
                    rc = save_virtual(c, paths + i, j - i, child,
                                      prev && prev->type == CF_NODE_DIR ? &prev->subtree : NULL,
                                      &node.subtree);
                keep = rc == 0;
            }
        }
        free(child);
        free(name);
        if (rc == 0 && keep)
            rc = cf_tree__add(&t, &node);
        cf_node__free(&node);
        if (rc)
            goto out;
        i = j;
    }
    uint64_t added = 0;
    rc = cf_repo__save_tree(c->r, &t, out_id, &added);
out:
    cf_tree__free(&t);
    cf_tree__free(&old);
    return rc;
}

static int save_stdin(bctx *c, cf_id *out_id)
{
    cf_tree t;
    cf_node n;
    uint32_t cap = 0;
    uint64_t total = 0, added = 0;
    int rc = 0;
    cf_tree__init(&t);
    memset(&n, 0, sizeof(n));
    const char *name = c->o->stdin_name;
    if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return cf_error_set(CF_EINVAL, 0, "invalid --stdin-name '%s': a file name without '/'", name);
    n.type = CF_NODE_FILE;
    n.name = cf_strdup(name);
    n.name_len = (uint16_t)strlen(name);
    n.mode = 0644;
    n.uid = getuid();
    n.gid = getgid();
    n.user = cf_strdup(user_name(c, n.uid));
    n.group = cf_strdup(group_name(c, n.gid));
    n.mtime = n.atime = n.ctime = cf_now_ns();
    n.nlink = 1;
    if (!n.name || !n.user || !n.group) {
        rc = CF_ENOMEM;
        goto out;
    }
    rc = chunk_stream(c, c->o->stdin_fd, 0, UINT64_MAX, &n, &cap, &total, false);
    if (rc && c->read_errno)
        rc = cf_error_wrap(CF_EIO, "unable to read standard input");
    if (rc)
        goto out;
    n.size = total;
    c->st.bytes_total = total;
    c->st.files_new = 1;
    if ((rc = cf_tree__add(&t, &n)))
        goto out;
    rc = cf_repo__save_tree(c->r, &t, out_id, &added);
out:
    cf_node__free(&n);
    cf_tree__free(&t);
    return rc;
}

typedef struct {
    bctx *c;
    uint64_t files, bytes;
} scan_ctx;

static void scan(bctx *c, const char *path, int depth)
{
    struct stat st;
    if (depth > 4096 || lstat(path, &st) != 0)
        return;
    if (S_ISREG(st.st_mode)) {
        c->prog.files_total++;
        c->prog.bytes_total += (uint64_t)st.st_size;
        return;
    }
    if (!S_ISDIR(st.st_mode))
        return;
    if (c->o->one_file_system && c->have_root_dev && st.st_dev != c->root_dev)
        return;
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *child = cf_ops__join(path, de->d_name, strlen(de->d_name));
        if (!child)
            break;
        if (!cf_ops__match_any(c->o->excludes, child))
            scan(c, child, depth + 1);
        free(child);
    }
    closedir(d);
}

int cf_backup(cf_repo *r, const cf_backup_opts *o, char out_id[65], cf_backup_stats *out_stats)
{
    int rc = 0;
    bctx c;
    char host[256];
    char **paths = NULL;
    size_t npaths = 0;
    cf_snapshot *parent = NULL;
    cf_snapshot snap;
    cf_buf doc;
    json_t *extra = NULL; /* fields from o->finish */
    double t0 = cf_mono_seconds();
    memset(&c, 0, sizeof(c));
    memset(&snap, 0, sizeof(snap));
    cf_buf_init(&doc, 0);
    c.r = r;
    c.o = o;
    if (out_id)
        out_id[0] = '\0';
    if (o->host) {
        snprintf(host, sizeof(host), "%s", o->host);
    } else if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "unknown");
    }
    host[sizeof(host) - 1] = '\0';

    if (o->stdin_name) {
        paths = cf_calloc(1, sizeof(char *));
        if (!paths || !(paths[0] = cf_asprintf("/%s", o->stdin_name))) {
            rc = CF_ENOMEM;
            goto out;
        }
        npaths = 1;
    } else {
        for (const char *const *p = o->paths; p && *p; p++)
            npaths++;
        if (npaths == 0)
            return cf_error_set(CF_EINVAL, 0, "nothing to back up: give at least one path");
        paths = cf_calloc(npaths, sizeof(char *));
        if (!paths) {
            rc = CF_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < npaths; i++) {
            struct stat st;
            if (!(paths[i] = clean_path(o->paths[i]))) {
                rc = cf_error_set(CF_EINVAL, errno, "invalid path '%s'", o->paths[i]);
                goto out;
            }
            if (lstat(paths[i], &st) != 0) {
                rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to back up '%s': %s",
                                  o->paths[i], strerror(errno));
                goto out;
            }
            if (strcmp(paths[i], "/") == 0) {
                rc = cf_error_set(CF_EUNSUPPORTED, 0, "backing up '/' as a whole is not supported yet");
                cf_error_hint("list the top-level directories to back up instead");
                goto out;
            }
        }
        qsort(paths, npaths, sizeof(char *), cmp_str);
        /* drop duplicates and paths inside another path */
        size_t k = 0;
        for (size_t i = 0; i < npaths; i++) {
            if (k > 0) {
                size_t pl = strlen(paths[k - 1]);
                if (strcmp(paths[i], paths[k - 1]) == 0 ||
                    (strncmp(paths[i], paths[k - 1], pl) == 0 && paths[i][pl] == '/')) {
                    free(paths[i]);
                    continue;
                }
            }
            paths[k++] = paths[i];
        }
        npaths = k;
    }

    if ((rc = cf_repo_lock(r, CF_LOCK_SHARED)))
        goto out;
    uint64_t written0 = r->bytes_written, claimed0 = r->blobs_claimed;
    unsigned threads = o->threads;
    if (threads == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu > 0 ? (unsigned)ncpu : 2;
    }
    if ((rc = cf_pipeline__start(r, threads)))
        goto out;
    const char *kind = o->source_kind ? o->source_kind : (o->stdin_name ? "stdin" : "files");
    cf_backup_opts po = *o;
    po.source_kind = kind;
    /* a write-only key reads no snapshot: every backup reads all files, and deduplication
     * against the index keeps it from storing what is there already */
    if (cf_master__can_read(&r->mk) && (rc = cf_ops__find_parent(&parent, r, &po, paths, npaths, host)))
        goto out;
    {
        const cf_chunk_params *cp = cf_chunker_params(r->chunker);
        size_t quick = 2 * (size_t)cp->avg < cp->max ? 2 * (size_t)cp->avg : cp->max;
        c.cap = (size_t)cp->max + quick;
    }
    if (!(c.buf = cf_malloc(c.cap))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (o->progress && !o->stdin_name)
        for (size_t i = 0; i < npaths; i++)
            scan(&c, paths[i], 0);

    cf_id root;
    if (o->stdin_name)
        rc = save_stdin(&c, &root);
    else
        rc = save_virtual(&c, paths, npaths, "", parent ? &parent->tree : NULL, &root);
    if (rc)
        goto out;
    if ((rc = cf_repo__flush(r)))
        goto out;
    if ((rc = cf_pipeline__stop(r)))
        goto out;
    c.st.bytes_added = r->bytes_written - written0;
    c.st.blobs_added = r->blobs_claimed - claimed0;
    /* source-specific fields (cf_backup_opts.finish), known only now the source has ended */
    if (o->finish) {
        char *extra_text = NULL;
        rc = o->finish(&extra_text, o->finish_payload);
        if (rc == 0 && extra_text) {
            extra = json_loads(extra_text, 0, NULL);
            if (!json_is_object(extra))
                rc = cf_error_set(CF_EINVAL, 0, "the source's snapshot fields are not a JSON object");
        }
        free(extra_text);
        if (rc)
            goto out;
        snap.extra = extra;
    }

    snap.time = o->time_ns ? o->time_ns : cf_now_ns();
    snap.host = host;
    snap.username = (char *)(uintptr_t)user_name(&c, getuid());
    snap.paths = paths;
    snap.npaths = npaths;
    size_t ntags = 0;
    for (const char *const *t = o->tags; t && *t; t++)
        ntags++;
    snap.tags = (char **)(uintptr_t)o->tags;
    snap.ntags = ntags;
    snap.type = parent ? o->type : CF_BACKUP_FULL;
    snap.parent = parent ? parent->id : NULL;
    snap.tree = root;
    cf_hex_encode(snap.tree_hex, root.b, 32);
    snap.source_kind = (char *)(uintptr_t)kind;
    snap.source_name = (char *)(uintptr_t)(o->stdin_name ? o->stdin_name : "");
    c.st.seconds = cf_mono_seconds() - t0;
    snap.stats = c.st;
    if ((rc = cf_snapshot__encode(&doc, &snap)))
        goto out;
    /* the snapshot is written last: everything it references is durable by now */
    char id[65];
    if ((rc = cf_repo__put_object(r, "snapshots", CF_OBJ_SNAPSHOT, doc.data, doc.len, id)))
        goto out;
    if (out_id)
        memcpy(out_id, id, 65);
    progress(&c, NULL, true);
    if (c.st.errors)
        rc = cf_error_set(CF_EPARTIAL, 0, "snapshot %.8s saved, but %llu files could not be read",
                          id, (unsigned long long)c.st.errors);
out:
    if (r->pipe) {
        int prc = cf_pipeline__stop(r);
        (void)prc; /* the first error is already being returned */
    }
    if (rc && rc != CF_EPARTIAL) {
        /* blobs claimed by this backup but never stored must not satisfy later dedup
         * lookups of this handle; packs already stored stay, listed for the next index */
        pthread_mutex_lock(&r->mu);
        cf_index__drop_pending(&r->index);
        pthread_mutex_unlock(&r->mu);
        for (int i = 0; i < 2; i++)
            cf_pack__writer_abort(&r->packs[i]);
        /* interrupted on purpose: index the packs stored so far, so the next backup reuses
         * them rather than prune removing them */
        if (rc == CF_ECANCELLED) {
            cf_error_saved saved;
            cf_error_save(&saved);
            int crc = cf_repo__checkpoint(r);
            (void)crc; /* the next backup re-stores what this could not index */
            cf_error_restore(&saved);
        }
    }
    c.st.seconds = cf_mono_seconds() - t0;
    if (out_stats)
        *out_stats = c.st;
    cf_repo_unlock(r);
    cf_snapshot_free(parent);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    free(c.buf);
    cf_buf_free(&doc);
    json_decref(extra);
    return rc;
}
