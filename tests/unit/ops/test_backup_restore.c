/*
 * test_backup_restore.c - the backup, restore, dump and check verbs end to end through the
 * library, on a generated directory and an in-memory repository: exact restores, incremental
 * backups, storage failures during backup (nothing published, nothing lost) and restore.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops/ops.h"
#include "unit/repo/repo_helpers.h"

#define STORE "br"
#define URL "mem:" STORE
#define NFILES 11 /* regular files make_tree creates */

static char g_tmp[64];      /* per-test temporary directory */
static char g_src[128];     /* the source tree, inside g_tmp */
static cf_repo *g_repo;

/* ------------------------------------------------------------------ files */

static char *join(const char *a, const char *b)
{
    char *p = cf_asprintf("%s/%s", a, b);
    assert_non_null(p);
    return p;
}

static void write_file(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char *p = join(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        fail_msg("open %s: %s", p, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t k = write(fd, data + done, len - done);
        assert_true(k > 0);
        done += (size_t)k;
    }
    assert_int_equal(close(fd), 0);
    free(p);
}

static void write_random(const char *dir, const char *name, size_t len, uint64_t seed)
{
    uint8_t *b = malloc(len ? len : 1);
    assert_non_null(b);
    th_fill_random(b, len, seed);
    write_file(dir, name, b, len);
    free(b);
}

static void mkdir_in(const char *dir, const char *name)
{
    char *p = join(dir, name);
    assert_int_equal(mkdir(p, 0750), 0);
    free(p);
}

/* The source tree: files of many sizes (empty to multi-chunk), a sparse file, hard links,
 * symlinks (one dangling), a FIFO, an empty directory, nested directories and odd names. */
static void make_tree(const char *src)
{
    assert_int_equal(mkdir(src, 0755), 0);
    write_file(src, "empty", NULL, 0);
    write_file(src, "one", (const uint8_t *)"x", 1);
    uint8_t text[1000];
    th_fill_text(text, sizeof(text), 1);
    write_file(src, "small.txt", text, sizeof(text));
    write_random(src, "medium.bin", 300000, 2);
    /* 1.5 MB with its first half repeated: chunks dedup within the file */
    uint8_t *big = malloc(1500000);
    assert_non_null(big);
    th_fill_random(big, 750000, 3);
    memcpy(big + 750000, big, 750000);
    write_file(src, "big.bin", big, 1500000);
    free(big);
    uint8_t *zeros = calloc(1, 200000);
    assert_non_null(zeros);
    write_file(src, "zeros", zeros, 200000);
    free(zeros);
    /* sparse: 4 KiB of data in the middle of 1 MiB of holes */
    char *sp = join(src, "sparse");
    int fd = open(sp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    uint8_t blk[4096];
    th_fill_random(blk, sizeof(blk), 4);
    assert_int_equal(pwrite(fd, blk, sizeof(blk), 512 * 1024), (ssize_t)sizeof(blk));
    close(fd);
    free(sp);
    mkdir_in(src, "sub");
    char *sub = join(src, "sub");
    mkdir_in(sub, "deeper");
    char *deeper = join(sub, "deeper");
    write_file(deeper, "x.txt", text, 500);
    write_random(sub, "\xff odd\tname \xc3\xa9", 777, 5);
    write_random(sub, "hard1", 5000, 6);
    char *h1 = join(sub, "hard1"), *h2 = join(sub, "hard2");
    assert_int_equal(link(h1, h2), 0);
    mkdir_in(src, "emptydir");
    char *l = join(src, "link");
    assert_int_equal(symlink("small.txt", l), 0);
    char *d = join(src, "dangling");
    assert_int_equal(symlink("/nonexistent/target", d), 0);
    char *f = join(src, "fifo");
    assert_int_equal(mkfifo(f, 0600), 0);
    free(h1);
    free(h2);
    free(l);
    free(d);
    free(f);
    free(deeper);
    free(sub);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    *len = (size_t)st.st_size;
    uint8_t *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    size_t done = 0;
    while (done < *len) {
        ssize_t k = read(fd, b + done, *len - done);
        assert_true(k > 0);
        done += (size_t)k;
    }
    close(fd);
    return b;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Compare a restored tree with its source: same entries, types, contents, link targets, modes
 * and file mtimes. Returns the number of regular files compared. */
static size_t compare_trees(const char *src, const char *dst)
{
    size_t files = 0;
    assert_int_equal(count_entries(dst), count_entries(src));
    DIR *d = opendir(src);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *a = join(src, e->d_name), *b = join(dst, e->d_name);
        struct stat sa, sb;
        assert_int_equal(lstat(a, &sa), 0);
        if (lstat(b, &sb) != 0)
            fail_msg("'%s' was not restored", b);
        assert_int_equal(sa.st_mode & S_IFMT, sb.st_mode & S_IFMT);
        if (S_ISREG(sa.st_mode)) {
            size_t la, lb;
            uint8_t *ca = read_all(a, &la), *cb = read_all(b, &lb);
            if (la != lb || (la && memcmp(ca, cb, la) != 0))
                fail_msg("'%s' differs from '%s' (%zu vs %zu bytes)", b, a, lb, la);
            free(ca);
            free(cb);
            assert_int_equal(sa.st_mode & 07777, sb.st_mode & 07777);
            assert_true(sa.st_mtim.tv_sec == sb.st_mtim.tv_sec);
            assert_true(sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec);
            files++;
        } else if (S_ISLNK(sa.st_mode)) {
            char ta[4096], tb[4096];
            ssize_t na = readlink(a, ta, sizeof(ta)), nb = readlink(b, tb, sizeof(tb));
            assert_true(na > 0);
            assert_int_equal(na, nb);
            assert_memory_equal(ta, tb, (size_t)na);
        } else if (S_ISDIR(sa.st_mode)) {
            assert_int_equal(sa.st_mode & 07777, sb.st_mode & 07777);
            files += compare_trees(a, b);
        } else if (S_ISFIFO(sa.st_mode)) {
            assert_int_equal(sa.st_mode & 07777, sb.st_mode & 07777);
        }
        free(a);
        free(b);
    }
    closedir(d);
    return files;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    chmod(p, 0700);
    return remove(p);
}

static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* ------------------------------------------------------------------ fixtures */

static int setup(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/coffer-br-XXXXXX");
    assert_non_null(mkdtemp(g_tmp));
    snprintf(g_src, sizeof(g_src), "%s/src", g_tmp);
    make_tree(g_src);
    cf_init_opts o = th_opts();
    o.chunk_min = 8192;
    o.chunk_avg = 32768;
    o.chunk_max = 131072;
    o.pack_size = 1u << 16;
    g_repo = th_repo_new_opts(URL, &o);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_repo_close(g_repo);
    g_repo = NULL;
    cf_storage_mem_reset();
    rm_rf(g_tmp);
    return 0;
}

typedef struct {
    size_t errors, progress;
    char last_error[512];
} cb_log;

static void on_error(const char *path, const char *msg, void *payload)
{
    cb_log *l = payload;
    l->errors++;
    snprintf(l->last_error, sizeof(l->last_error), "%s: %s", path ? path : "-", msg);
}

static void on_progress(const cf_progress *p, void *payload)
{
    (void)p;
    cb_log *l = payload;
    l->progress++;
}

static cf_backup_opts backup_opts(const char *const *paths, cb_log *log, unsigned threads)
{
    cf_backup_opts o;
    memset(&o, 0, sizeof(o));
    o.type = CF_BACKUP_INCREMENTAL;
    o.paths = paths;
    o.on_error = on_error;
    o.progress = on_progress;
    o.progress_interval = 0.001;
    o.payload = log;
    o.threads = threads;
    return o;
}

static int backup(cf_repo *r, unsigned threads, char id[65], cf_backup_stats *st)
{
    const char *paths[] = {g_src, NULL};
    cb_log log;
    memset(&log, 0, sizeof(log));
    cf_backup_opts o = backup_opts(paths, &log, threads);
    int rc = cf_backup(r, &o, id, st);
    if (rc == 0)
        assert_int_equal(log.errors, 0);
    return rc;
}

static size_t nsnapshots(cf_repo *r)
{
    cf_snapshot **l = NULL;
    size_t n = 0;
    th_ok(cf_snapshot_list(&l, &n, r, NULL));
    cf_snapshot_list_free(l, n);
    return n;
}

/* Restore snapshot id into a fresh directory under g_tmp and compare it with the source. */
static void restore_and_compare_opts(cf_repo *r, const char *id, const char *dirname, bool verify)
{
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, r, id, NULL));
    char *dst = join(g_tmp, dirname);
    cf_restore_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.target = dst;
    ro.verify = verify;
    cb_log log;
    memset(&log, 0, sizeof(log));
    ro.on_error = on_error;
    ro.payload = &log;
    cf_restore_stats rs;
    int rc = cf_restore(r, s, &ro, &rs);
    if (rc != 0)
        fail_msg("restore: %s: %s (last: %s)", cf_error_name(rc), cf_error_last()->message,
                 log.last_error);
    assert_int_equal(rs.errors, 0);
    assert_int_equal(rs.files, NFILES);
    if (verify) /* the second hard link is a link, not written */
        assert_int_equal(rs.verified, NFILES - 1);
    char *restored = cf_asprintf("%s%s", dst, g_src); /* snapshots keep absolute paths */
    assert_non_null(restored);
    assert_int_equal(compare_trees(g_src, restored), NFILES);
    free(restored);
    free(dst);
    cf_snapshot_free(s);
}

static void restore_and_compare(cf_repo *r, const char *id, const char *dirname)
{
    restore_and_compare_opts(r, id, dirname, false);
}

static void check_clean(cf_repo *r)
{
    cf_check_opts co;
    memset(&co, 0, sizeof(co));
    co.read_data = true;
    cb_log log;
    memset(&log, 0, sizeof(log));
    co.on_problem = on_error;
    co.payload = &log;
    cf_check_stats cs;
    int rc = cf_check(r, &co, &cs);
    if (rc != 0 || cs.problems != 0)
        fail_msg("check: %s, %llu problems (last: %s)", cf_error_name(rc),
                 (unsigned long long)cs.problems, log.last_error);
    assert_true(cs.packs_read == cs.packs);
    assert_true(cs.snapshots > 0);
}

/* ------------------------------------------------------------------ tests */

static void test_backup_restore(void **state)
{
    (void)state;
    char id[65];
    cf_backup_stats st;
    const char *paths[] = {g_src, NULL};
    cb_log log;
    memset(&log, 0, sizeof(log));
    cf_backup_opts o = backup_opts(paths, &log, 2);
    th_ok(cf_backup(g_repo, &o, id, &st));
    assert_int_equal(strlen(id), 64);
    assert_int_equal(log.errors, 0);
    assert_true(log.progress > 0);
    assert_int_equal(st.files_new, NFILES);
    assert_int_equal(st.files_changed, 0);
    assert_int_equal(st.files_unchanged, 0);
    assert_int_equal(st.dirs, 4);   /* src, sub, sub/deeper, emptydir */
    assert_int_equal(st.others, 3); /* two symlinks and a FIFO */
    assert_int_equal(st.errors, 0);
    const uint64_t total = 0 + 1 + 1000 + 300000 + 1500000 + 200000 + (1 << 20) + 500 + 777 +
                           5000 + 5000;
    assert_true(st.bytes_total == total);
    assert_true(st.bytes_added > 0);
    /* dedup and compression: much less stored than the source holds */
    assert_true(st.bytes_added < total - 750000);
    assert_true(st.blobs_added > 0);

    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, g_repo, "latest", NULL));
    assert_string_equal(cf_snapshot_id(s), id);
    assert_int_equal(cf_snapshot_path_count(s), 1);
    assert_string_equal(cf_snapshot_path(s, 0), g_src);
    assert_int_equal(cf_snapshot_type(s), CF_BACKUP_FULL); /* first: no parent */
    assert_null(cf_snapshot_parent(s));
    assert_string_equal(cf_snapshot_source_kind(s), "files");
    assert_true(cf_snapshot_stats(s)->bytes_total == total);
    cf_snapshot_free(s);

    restore_and_compare(g_repo, id, "dst");
    check_clean(g_repo);

    /* another handle (index from storage) restores the same */
    cf_repo *r2 = NULL;
    th_ok(cf_repo_open(&r2, URL, TEST_PASSWORD));
    restore_and_compare(r2, id, "dst2");
    cf_repo_close(r2);

    /* dump of single files */
    char *out = join(g_tmp, "dumped");
    const char *names[] = {"big.bin", "sparse", "empty", "sub/deeper/x.txt"};
    for (size_t i = 0; i < 4; i++) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        char *sp = cf_asprintf("%s/%s", g_src, names[i]);
        th_ok(cf_snapshot_find(&s, g_repo, id, NULL));
        th_ok(cf_dump(g_repo, s, sp, fd));
        cf_snapshot_free(s);
        close(fd);
        size_t la, lb;
        uint8_t *a = read_all(sp, &la), *b = read_all(out, &lb);
        assert_int_equal(la, lb);
        if (la)
            assert_memory_equal(a, b, la);
        free(a);
        free(b);
        free(sp);
    }
    free(out);
}

/* --verify re-reads every restored file and compares it with the snapshot's ids. */
static void test_restore_verify(void **state)
{
    (void)state;
    char id[65];
    cf_backup_stats st;
    th_ok(backup(g_repo, 2, id, &st));
    restore_and_compare_opts(g_repo, id, "dst", true);
}

static void test_restore_refuses_non_empty_target(void **state)
{
    (void)state;
    char id[65];
    cf_backup_stats st;
    th_ok(backup(g_repo, 1, id, &st));
    restore_and_compare(g_repo, id, "dst");
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, g_repo, id, NULL));
    cf_restore_opts ro;
    memset(&ro, 0, sizeof(ro));
    char *dst = join(g_tmp, "dst");
    ro.target = dst;
    cf_restore_stats rs;
    th_expect(cf_restore(g_repo, s, &ro, &rs), CF_EEXISTS, NULL);
    /* with overwrite: the same tree again */
    ro.overwrite = true;
    th_ok(cf_restore(g_repo, s, &ro, &rs));
    char *restored = cf_asprintf("%s%s", dst, g_src);
    assert_int_equal(compare_trees(g_src, restored), NFILES);
    free(restored);
    free(dst);
    cf_snapshot_free(s);
}

static void test_incremental_unchanged(void **state)
{
    (void)state;
    char id1[65], id2[65], id3[65];
    cf_backup_stats st;
    th_ok(backup(g_repo, 2, id1, &st));
    th_ok(backup(g_repo, 2, id2, &st));
    assert_string_not_equal(id1, id2);
    assert_int_equal(st.files_unchanged, NFILES);
    assert_int_equal(st.files_new, 0);
    assert_int_equal(st.files_changed, 0);
    assert_true(st.bytes_read == 0);
    assert_int_equal(st.errors, 0);
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, g_repo, id2, NULL));
    assert_string_equal(cf_snapshot_parent(s), id1);
    assert_int_equal(cf_snapshot_type(s), CF_BACKUP_INCREMENTAL);
    cf_snapshot_free(s);
    assert_int_equal(nsnapshots(g_repo), 2);

    /* one file changed (content and mtime), one added */
    char *p = join(g_src, "small.txt");
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
    write_random(g_src, "small.txt", 1000, 99);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    free(p);
    write_random(g_src, "new.bin", 4000, 100);
    /* a fresh handle: the parent is found from storage */
    cf_repo *r2 = NULL;
    th_ok(cf_repo_open(&r2, URL, TEST_PASSWORD));
    cb_log log;
    memset(&log, 0, sizeof(log));
    const char *paths[] = {g_src, NULL};
    cf_backup_opts o = backup_opts(paths, &log, 1);
    th_ok(cf_backup(r2, &o, id3, &st));
    assert_int_equal(st.files_changed, 1);
    assert_int_equal(st.files_new, 1);
    assert_int_equal(st.files_unchanged, NFILES - 1);
    assert_true(st.bytes_read == 1000 + 4000);
    check_clean(r2); /* g_repo's index predates r2's blobs: check through r2 */
    cf_repo_close(r2);

    /* a full backup reads everything again, but stores no new data */
    o.type = CF_BACKUP_FULL;
    th_ok(cf_backup(g_repo, &o, id3, &st));
    assert_int_equal(st.files_new + st.files_changed, NFILES + 1);
    assert_int_equal(st.files_unchanged, 0);
    assert_true(st.bytes_read > 1500000);
}

static void test_backup_bad_args(void **state)
{
    (void)state;
    char id[65] = "x";
    cf_backup_stats st;
    cb_log log;
    memset(&log, 0, sizeof(log));
    const char *none[] = {NULL};
    cf_backup_opts o = backup_opts(none, &log, 1);
    th_expect(cf_backup(g_repo, &o, id, &st), CF_EINVAL, NULL);
    char *missing = join(g_tmp, "does-not-exist");
    const char *paths[] = {missing, NULL};
    o.paths = paths;
    th_expect(cf_backup(g_repo, &o, id, &st), CF_ENOTFOUND, "does-not-exist");
    assert_string_equal(id, "");
    free(missing);
    assert_int_equal(nsnapshots(g_repo), 0);
    cf_storage *st2 = th_storage(URL);
    assert_int_equal(th_count(st2, "locks/"), 0); /* nothing left locked */
    cf_storage_close(st2);
}

/* A file the backup cannot read: reported, skipped, and the snapshot is still written. */
static void test_backup_unreadable_file(void **state)
{
    (void)state;
    if (geteuid() == 0)
        skip(); /* root reads anything */
    char *p = join(g_src, "secret");
    write_random(g_src, "secret", 100, 7);
    assert_int_equal(chmod(p, 0), 0);
    char id[65];
    cf_backup_stats st;
    const char *paths[] = {g_src, NULL};
    cb_log log;
    memset(&log, 0, sizeof(log));
    cf_backup_opts o = backup_opts(paths, &log, 2);
    th_expect(cf_backup(g_repo, &o, id, &st), CF_EPARTIAL, NULL);
    assert_int_equal(st.errors, 1);
    assert_int_equal(log.errors, 1);
    assert_non_null(strstr(log.last_error, "secret"));
    assert_int_equal(strlen(id), 64);
    assert_int_equal(nsnapshots(g_repo), 1);
    assert_int_equal(chmod(p, 0600), 0);
    assert_int_equal(unlink(p), 0);
    free(p);
    restore_and_compare(g_repo, id, "dst");
}

/* ------------------------------------------------------------------ storage failures */

/*
 * Every n-th put fails during a backup: the backup fails, no snapshot is published, and the
 * same handle recovers: the next backup succeeds and everything it references is stored
 * (checked through a fresh handle and by restoring).
 */
static void backup_put_failures(unsigned threads)
{
    char id[65];
    cf_backup_stats st;
    th_ok(backup(g_repo, threads, id, &st));
    const int every[] = {1, 2, 3, 5, 8};
    for (size_t i = 0; i < sizeof(every) / sizeof(every[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "new-%zu.bin", i);
        write_random(g_src, name, 400000, 1000 + i); /* new data: packs to write */
        size_t before = nsnapshots(g_repo);
        th_ok(cf_storage_mem_inject(STORE, "put", every[i], CF_EIO));
        memset(id, 'x', sizeof(id));
        int rc = backup(g_repo, threads, id, &st);
        th_ok(cf_storage_mem_inject(STORE, "put", 0, 0));
        if (rc == 0 || rc == CF_EPARTIAL)
            fail_msg("backup with every %d-th put failing returned %s", every[i],
                     cf_error_name(rc));
        assert_string_equal(id, ""); /* no id for a snapshot that does not exist */
        assert_int_equal(nsnapshots(g_repo), before);
        /* the failed backup released its lock */
        cf_storage *raw = th_storage(URL);
        assert_int_equal(th_count(raw, "locks/"), 0);
        cf_storage_close(raw);
    }
    /* the same handle: a clean backup now */
    th_ok(backup(g_repo, threads, id, &st));
    cf_repo *r2 = NULL;
    th_ok(cf_repo_open(&r2, URL, TEST_PASSWORD));
    check_clean(r2);
    /* restore through the fresh handle: every blob the snapshot needs is there */
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, r2, id, NULL));
    char *dst = join(g_tmp, "after-failures");
    cf_restore_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.target = dst;
    cf_restore_stats rs;
    cb_log log;
    memset(&log, 0, sizeof(log));
    ro.on_error = on_error;
    ro.payload = &log;
    int rc = cf_restore(r2, s, &ro, &rs);
    if (rc != 0)
        fail_msg("restore after failed backups: %s (%s)", cf_error_name(rc), log.last_error);
    char *restored = cf_asprintf("%s%s", dst, g_src);
    assert_int_equal(compare_trees(g_src, restored), NFILES + 5);
    free(restored);
    free(dst);
    cf_snapshot_free(s);
    cf_repo_close(r2);
    /* and check through the handle that saw the failures */
    check_clean(g_repo);
}

static void test_backup_put_failures_sync(void **state)
{
    (void)state;
    backup_put_failures(1);
}

static void test_backup_put_failures_threads(void **state)
{
    (void)state;
    backup_put_failures(4);
}

static void test_restore_get_failures(void **state)
{
    (void)state;
    char id[65];
    cf_backup_stats st;
    th_ok(backup(g_repo, 2, id, &st));
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, g_repo, id, NULL));
    const int every[] = {1, 2, 5, 17};
    const int codes[] = {CF_EIO, CF_ERETRYABLE, CF_EIO, CF_ECORRUPT};
    for (size_t i = 0; i < sizeof(every) / sizeof(every[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "dst-%zu", i);
        char *dst = join(g_tmp, name);
        cf_restore_opts ro;
        memset(&ro, 0, sizeof(ro));
        ro.target = dst;
        cb_log log;
        memset(&log, 0, sizeof(log));
        ro.on_error = on_error;
        ro.payload = &log;
        cf_restore_stats rs;
        memset(&rs, 0, sizeof(rs));
        th_ok(cf_storage_mem_inject(STORE, "get", every[i], codes[i]));
        int rc = cf_restore(g_repo, s, &ro, &rs);
        th_ok(cf_storage_mem_inject(STORE, "get", 0, 0));
        if (rc == 0)
            fail_msg("restore with every %d-th get failing succeeded", every[i]);
        /* every file the restore reported as done is complete and correct */
        if (rc == CF_EPARTIAL) {
            assert_true(rs.errors > 0);
            assert_true(log.errors > 0);
        }
        free(dst);
    }
    cf_snapshot_free(s);
    /* and without failures it works */
    restore_and_compare(g_repo, id, "dst-ok");
}

/* Files restored despite get failures are never partial: a file present has the right bytes. */
static void test_restore_get_failures_no_partial_files(void **state)
{
    (void)state;
    char id[65];
    cf_backup_stats st;
    th_ok(backup(g_repo, 2, id, &st));
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, g_repo, id, NULL));
    char *dst = join(g_tmp, "dst");
    cf_restore_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.target = dst;
    cb_log log;
    memset(&log, 0, sizeof(log));
    ro.on_error = on_error;
    ro.payload = &log;
    cf_restore_stats rs;
    th_ok(cf_storage_mem_inject(STORE, "get", 7, CF_EIO));
    int rc = cf_restore(g_repo, s, &ro, &rs);
    th_ok(cf_storage_mem_inject(STORE, "get", 0, 0));
    assert_true(rc < 0);
    /* walk what was restored */
    const char *files[] = {"empty", "one", "small.txt", "medium.bin", "big.bin", "zeros",
                           "sparse", "sub/deeper/x.txt", "sub/hard1", "sub/hard2"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *a = cf_asprintf("%s/%s", g_src, files[i]);
        char *b = cf_asprintf("%s%s/%s", dst, g_src, files[i]);
        struct stat sb;
        if (lstat(b, &sb) == 0) {
            size_t la, lb;
            uint8_t *ca = read_all(a, &la), *cb = read_all(b, &lb);
            if (la != lb || (la && memcmp(ca, cb, la) != 0))
                fail_msg("'%s' was left incomplete after a failed restore", b);
            free(ca);
            free(cb);
        }
        free(a);
        free(b);
    }
    free(dst);
    cf_snapshot_free(s);
}

/*
 * cf_check through the very handle whose earlier backup failed: blobs it claimed for the
 * failed backup must not be mistaken for stored ones (nor crash the check). Last in the
 * list: a crash here must not hide the other results.
 */
static void test_check_same_handle_after_failed_backup(void **state)
{
    (void)state;
    char id[65];
    cf_backup_stats st;
    th_ok(cf_storage_mem_inject(STORE, "put", 5, CF_EIO));
    assert_true(backup(g_repo, 1, id, &st) < 0);
    th_ok(cf_storage_mem_inject(STORE, "put", 0, 0));
    th_ok(backup(g_repo, 1, id, &st));
    check_clean(g_repo);
}

/* ------------------------------------------------------------------ stdin */

typedef struct {
    int fd;
    size_t len;
    uint64_t seed;
} feeder;

static void *feed(void *arg)
{
    feeder *f = arg;
    uint8_t buf[65536];
    uint64_t s = f->seed;
    size_t left = f->len;
    while (left) {
        size_t k = left < sizeof(buf) ? left : sizeof(buf);
        th_fill_text(buf, k, th_next(&s));
        size_t done = 0;
        while (done < k) {
            ssize_t w = write(f->fd, buf + done, k - done);
            if (w <= 0)
                return (void *)1;
            done += (size_t)w;
        }
        left -= k;
    }
    close(f->fd);
    return NULL;
}

static void test_backup_stdin(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    feeder f = {p[1], 700000, 5};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feed, &f), 0);
    cf_backup_opts o;
    memset(&o, 0, sizeof(o));
    o.stdin_name = "db.sql";
    o.stdin_fd = p[0];
    o.threads = 2;
    o.host = "testhost";
    const char *tags[] = {"stdin-test", NULL};
    o.tags = tags;
    char id[65];
    cf_backup_stats st;
    th_ok(cf_backup(g_repo, &o, id, &st));
    void *ret = (void *)1;
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_null(ret);
    close(p[0]);
    assert_true(st.bytes_total == 700000);
    assert_int_equal(st.files_new, 1);

    cf_snapshot *s = NULL;
    cf_snapshot_filter filt = {"testhost", tags, NULL};
    th_ok(cf_snapshot_find(&s, g_repo, "latest", &filt));
    assert_string_equal(cf_snapshot_id(s), id);
    assert_string_equal(cf_snapshot_source_kind(s), "stdin");
    assert_string_equal(cf_snapshot_path(s, 0), "/db.sql");
    assert_string_equal(cf_snapshot_host(s), "testhost");
    /* dump it back through a pipe-less temp file and compare with the generator */
    char *out = join(g_tmp, "dump");
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    th_ok(cf_dump(g_repo, s, "/db.sql", fd));
    close(fd);
    th_expect(cf_dump(g_repo, s, "/nope", 1), CF_ENOTFOUND, NULL);
    size_t len;
    uint8_t *got = read_all(out, &len);
    assert_int_equal(len, 700000);
    uint8_t *want = malloc(700000);
    assert_non_null(want);
    uint64_t seed = 5;
    for (size_t off = 0; off < 700000; off += 65536) {
        size_t k = 700000 - off < 65536 ? 700000 - off : 65536;
        th_fill_text(want + off, k, th_next(&seed));
    }
    assert_memory_equal(got, want, 700000);
    free(got);
    free(want);
    free(out);
    cf_snapshot_free(s);
    check_clean(g_repo);

    /* invalid names */
    const char *bad[] = {"", "a/b", ".", ".."};
    for (size_t i = 0; i < 4; i++) {
        int q[2];
        assert_int_equal(pipe(q), 0);
        close(q[1]);
        o.stdin_name = bad[i];
        o.stdin_fd = q[0];
        th_expect(cf_backup(g_repo, &o, id, &st), CF_EINVAL, NULL);
        close(q[0]);
    }
    assert_int_equal(nsnapshots(g_repo), 1);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_backup_restore),
        T(test_restore_verify),
        T(test_restore_refuses_non_empty_target),
        T(test_incremental_unchanged),
        T(test_backup_bad_args),
        T(test_backup_unreadable_file),
        T(test_backup_put_failures_sync),
        T(test_backup_put_failures_threads),
        T(test_restore_get_failures),
        T(test_restore_get_failures_no_partial_files),
        T(test_backup_stdin),
        T(test_check_same_handle_after_failed_backup),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
