/*
 * test_local_faults.c - edge cases of the local storage driver that the conformance suite
 * cannot express portably: files where folders should be, damaged objects, stray temporaries.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

static char g_base[256]; /* a fresh temporary directory per test */

static char *path_in(const char *rel)
{
    char *p = cf_asprintf("%s/%s", g_base, rel);
    assert_non_null(p);
    return p;
}

static void write_file(const char *rel, const char *content)
{
    char *p = path_in(rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    free(p);
}

static size_t count_tmp(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (strncmp(e->d_name, ".tmp-", 5) == 0)
            n++;
        char *sub = cf_asprintf("%s/%s", dir, e->d_name);
        assert_non_null(sub);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            n += count_tmp(sub);
        free(sub);
    }
    closedir(d);
    return n;
}

static void expect_error(int rc, int code, const char *needle)
{
    if (rc != code)
        fail_msg("expected %s, got %s: %s", cf_error_name(code), cf_error_name(rc),
                 cf_error_last()->message);
    const char *msg = cf_error_last()->message;
    if (needle && !strstr(msg, needle))
        fail_msg("error message '%s' does not mention '%s'", msg, needle);
}

/* A listing as sorted "name=size;" text (list order is unspecified). */
typedef struct {
    char *items[32];
    size_t n;
    char text[1024];
} listing;

static int collect(const char *name, uint64_t size, void *payload)
{
    listing *l = payload;
    assert_true(l->n < 32);
    l->items[l->n] = cf_asprintf("%s=%llu;", name, (unsigned long long)size);
    assert_non_null(l->items[l->n]);
    l->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* List prefix and return the sorted text. */
static const char *list_text(cf_storage *st, const char *prefix, listing *l)
{
    memset(l, 0, sizeof(*l));
    if (cf_storage_list(st, prefix, collect, l) != 0)
        fail_msg("list '%s': %s", prefix, cf_error_last()->message);
    qsort(l->items, l->n, sizeof(l->items[0]), cmp_str);
    size_t used = 0;
    for (size_t i = 0; i < l->n; i++) {
        size_t len = strlen(l->items[i]);
        assert_true(used + len < sizeof(l->text));
        memcpy(l->text + used, l->items[i], len);
        used += len;
        free(l->items[i]);
    }
    l->text[used] = '\0';
    return l->text;
}

static cf_storage *open_repo(const char *rel)
{
    char *p = path_in(rel);
    cf_storage *st = NULL;
    if (cf_storage_open(&st, p, CF_STORAGE_CREATE) != 0)
        fail_msg("open '%s': %s", p, cf_error_last()->message);
    free(p);
    return st;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_base, sizeof(g_base), "%s/coffer-local-faults-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(g_base) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(g_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- opening ---- */

static void test_open_missing_then_create(void **state)
{
    (void)state;
    char *p = path_in("a/b/repo");
    cf_storage *st = NULL;
    expect_error(cf_storage_open(&st, p, 0), CF_ENOREPO, "does not exist");
    assert_non_null(strstr(cf_error_last()->message, p));
    assert_null(st);
    assert_int_equal(access(p, F_OK), -1); /* not created by looking */

    assert_int_equal(cf_storage_open(&st, p, CF_STORAGE_CREATE), 0);
    assert_string_equal(cf_storage_display(st), p);
    assert_true(cf_storage_features(st) & CF_STORAGE_FEAT_EXCLUSIVE_PUT);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 077, 0); /* 0700 */
    char *mid = path_in("a/b");
    assert_int_equal(stat(mid, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0);
    free(mid);
    cf_storage_close(st);

    /* Now it exists: plain path and local: url open the same place. */
    assert_int_equal(cf_storage_open(&st, p, 0), 0);
    assert_int_equal(cf_storage_put(st, "x", "1", 1, 0), 0);
    cf_storage_close(st);
    char *url = cf_asprintf("local:%s", p);
    assert_non_null(url);
    assert_int_equal(cf_storage_open(&st, url, 0), 0);
    assert_string_equal(cf_storage_display(st), p); /* shown as the path */
    uint64_t size = 0;
    assert_int_equal(cf_storage_stat(st, "x", &size), 0);
    assert_int_equal(size, 1);
    cf_storage_close(st);
    free(url);

    /* A trailing slash is fine too. */
    char *slash = cf_asprintf("%s/", p);
    assert_non_null(slash);
    assert_int_equal(cf_storage_open(&st, slash, 0), 0);
    assert_int_equal(cf_storage_stat(st, "x", &size), 0);
    cf_storage_close(st);
    free(slash);
    free(p);
}

static void test_open_file_not_dir(void **state)
{
    (void)state;
    write_file("file", "not a repository");
    char *p = path_in("file");
    cf_storage *st = NULL;
    expect_error(cf_storage_open(&st, p, 0), CF_EINVAL, "not a directory");
    assert_non_null(strstr(cf_error_last()->message, p));
    assert_null(st);
    expect_error(cf_storage_open(&st, p, CF_STORAGE_CREATE), CF_EINVAL, "not a directory");
    assert_null(st);

    /* A file in the middle of the path. */
    char *below = path_in("file/repo");
    expect_error(cf_storage_open(&st, below, 0), CF_ENOREPO, below);
    expect_error(cf_storage_open(&st, below, CF_STORAGE_CREATE), CF_EINVAL, "file");
    assert_null(st);
    free(below);
    free(p);
}

static void test_open_bad_urls(void **state)
{
    (void)state;
    cf_storage *st = NULL;
    expect_error(cf_storage_open(&st, "", 0), CF_EINVAL, NULL);
    assert_non_null(cf_error_last()->hint);
    expect_error(cf_storage_open(&st, "local:", CF_STORAGE_CREATE), CF_EINVAL, "local:");
    expect_error(cf_storage_open(&st, "mem:", CF_STORAGE_CREATE), CF_EINVAL, "mem:");
    expect_error(cf_storage_open(&st, "ftp:bucket/path", 0), CF_EUNSUPPORTED,
                 "unsupported repository url 'ftp:bucket/path'");
    assert_non_null(cf_error_last()->hint);
    assert_non_null(strstr(cf_error_last()->hint, "local:"));
    assert_null(st);
}

/* ---- puts that cannot succeed ---- */

static void test_put_parent_is_file(void **state)
{
    (void)state;
    cf_storage *st = open_repo("repo");
    assert_int_equal(cf_storage_put(st, "f", "content", 7, 0), 0);

    expect_error(cf_storage_put(st, "f/x", "y", 1, 0), CF_EIO, "'f/x'");
    assert_non_null(strstr(cf_error_last()->message, "Not a directory"));
    expect_error(cf_storage_put(st, "f/x/y", "y", 1, 0), CF_EIO, "'f/x/y'");
    expect_error(cf_storage_put(st, "f/x", "y", 1, CF_PUT_EXCLUSIVE), CF_EIO, "'f/x'");

    /* The object is intact, nothing half-written is left behind. */
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(cf_storage_get(st, "f", 0, 0, &out, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(out, "content", 7);
    free(out);
    char *root = path_in("repo");
    assert_int_equal(count_tmp(root), 0);
    free(root);
    cf_storage_close(st);
}

static void test_put_over_folder(void **state)
{
    (void)state;
    cf_storage *st = open_repo("repo");
    assert_int_equal(cf_storage_put(st, "d/x", "1", 1, 0), 0);
    expect_error(cf_storage_put(st, "d", "2", 1, 0), CF_EIO, "'d'");
    expect_error(cf_storage_put(st, "d", "2", 1, CF_PUT_EXCLUSIVE), CF_EEXISTS, "'d'");
    char *root = path_in("repo");
    assert_int_equal(count_tmp(root), 0);
    free(root);
    uint64_t size = 0;
    assert_int_equal(cf_storage_stat(st, "d/x", &size), 0);
    cf_storage_close(st);
}

/* ---- what is found on disk ---- */

static void test_truncated_object(void **state)
{
    (void)state;
    cf_storage *st = open_repo("repo");
    uint8_t data[100];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)i;
    assert_int_equal(cf_storage_put(st, "data/3f/3fa1", data, sizeof(data), 0), 0);
    char *p = path_in("repo/data/3f/3fa1");
    assert_int_equal(truncate(p, 50), 0);
    free(p);

    uint8_t *out = NULL;
    size_t len = 0;
    expect_error(cf_storage_get(st, "data/3f/3fa1", 0, 100, &out, &len), CF_ECORRUPT,
                 "object 'data/3f/3fa1' is shorter than expected");
    assert_null(out);
    expect_error(cf_storage_get(st, "data/3f/3fa1", 60, 0, &out, &len), CF_ECORRUPT, "3fa1");
    assert_int_equal(cf_storage_get(st, "data/3f/3fa1", 10, 0, &out, &len), 0);
    assert_int_equal(len, 40);
    assert_memory_equal(out, data + 10, 40);
    free(out);
    cf_storage_close(st);
}

static void test_stray_files_ignored(void **state)
{
    (void)state;
    cf_storage *st = open_repo("repo");
    assert_int_equal(cf_storage_put(st, "data/ab/abcd", "x", 1, 0), 0);
    /* A temporary left by a crash, a fifo and a symlink to an object. */
    write_file("repo/data/ab/.tmp-1234-5-6", "partial");
    write_file("repo/.tmp-99", "partial");
    char *fifo = path_in("repo/data/fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    free(fifo);

    char link_target[] = "ab/abcd";
    char *link = path_in("repo/data/link");
    assert_int_equal(symlink(link_target, link), 0);
    free(link);

    listing l;
    assert_string_equal(list_text(st, "", &l), "data/ab/abcd=1;data/link=1;");
    assert_string_equal(list_text(st, "data/ab/", &l), "data/ab/abcd=1;");
    assert_string_equal(list_text(st, "data/", &l), "data/ab/abcd=1;data/link=1;");

    /* Temporary names are reserved: they cannot be addressed as objects. */
    uint64_t size = 0;
    expect_error(cf_storage_stat(st, "data/ab/.tmp-1234-5-6", &size), CF_EINVAL, ".tmp-");
    /* The fifo is not an object. */
    expect_error(cf_storage_stat(st, "data/fifo", &size), CF_ENOTFOUND, "data/fifo");
    cf_storage_close(st);
}

static bool exists(const char *rel)
{
    char *p = path_in(rel);
    struct stat st;
    bool ok = lstat(p, &st) == 0;
    free(p);
    return ok;
}

static void age_file(const char *rel, time_t seconds)
{
    char *p = path_in(rel);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= seconds;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    free(p);
}

/* Purging temporaries removes those of dead writers only: not those of a process still running
 * here (its pid is in the name), and not young ones in locks/ and archive/, where lock takers
 * and archive pushes write without holding the repository lock. */
static void test_purge_spares_live_writers(void **state)
{
    (void)state;
    cf_storage *st = open_repo("repo");
    assert_int_equal(cf_storage_put(st, "data/ab/abcd", "x", 1, 0), 0);
    assert_int_equal(cf_storage_put(st, "locks/l1", "x", 1, 0), 0);
    assert_int_equal(cf_storage_put(st, "archive/pgwal/s1", "x", 1, 0), 0);
    /* a pid that cannot run: above the kernel's pid_max limit */
    write_file("repo/data/ab/.tmp-2147483647-1-2", "dead");
    write_file("repo/data/ab/.tmp-pack-2147483647-1-2", "dead");
    write_file("repo/data/.tmp-garbage", "no pid");
    char *mine = cf_asprintf("repo/data/ab/.tmp-%ld-1-2", (long)getpid());
    char *mine_pack = cf_asprintf("repo/data/.tmp-pack-%ld-1-2", (long)getpid());
    write_file(mine, "live");
    write_file(mine_pack, "live");
    write_file("repo/locks/.tmp-2147483647-3-4", "young lock");
    write_file("repo/archive/pgwal/.tmp-2147483647-3-4", "young push");
    write_file("repo/locks/.tmp-2147483647-5-6", "old lock");
    age_file("repo/locks/.tmp-2147483647-5-6", 2 * 3600);
    /* this host's writers, named by the host tag: a dead one's lock temporary goes at once,
     * a live one's stays, and another host's young one stays */
    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    uint32_t tag = 2166136261u; /* FNV-1a of the host name */
    for (const char *p = host; *p; p++)
        tag = (tag ^ (uint8_t)*p) * 16777619u;
    tag = tag ? tag : 1;
    char *here_dead = cf_asprintf("repo/locks/.tmp-2147483647-h%08x-7-8", tag);
    char *here_live = cf_asprintf("repo/locks/.tmp-%ld-h%08x-7-8", (long)getpid(), tag);
    char *other_dead = cf_asprintf("repo/locks/.tmp-2147483647-h%08x-7-8", tag ^ 1u);
    write_file(here_dead, "dead");
    write_file(here_live, "live");
    write_file(other_dead, "other");

    uint64_t n = 0, bytes = 0;
    static const char *const unlocked[] = {"locks", "archive", NULL};
    assert_int_equal(cf_storage_purge_tmp(st, unlocked, &n, &bytes), 0);
    assert_false(exists("repo/data/ab/.tmp-2147483647-1-2"));
    assert_false(exists("repo/data/ab/.tmp-pack-2147483647-1-2"));
    assert_false(exists("repo/data/.tmp-garbage"));
    assert_false(exists("repo/locks/.tmp-2147483647-5-6"));
    assert_true(exists(mine));
    assert_true(exists(mine_pack));
    assert_true(exists("repo/locks/.tmp-2147483647-3-4"));
    assert_true(exists("repo/archive/pgwal/.tmp-2147483647-3-4"));
    assert_false(exists(here_dead));
    assert_true(exists(here_live));
    assert_true(exists(other_dead));
    assert_int_equal(n, 5);
    assert_int_equal(bytes, 4 + 4 + 6 + 8 + 4);
    free(here_dead);
    free(here_live);
    free(other_dead);
    /* the objects themselves are untouched */
    assert_true(exists("repo/data/ab/abcd"));
    assert_true(exists("repo/locks/l1"));
    assert_true(exists("repo/archive/pgwal/s1"));
    free(mine);
    free(mine_pack);
    cf_storage_close(st);
}

static void test_space(void **state)
{
    (void)state;
    cf_storage *st = open_repo("repo");
    uint64_t n = 0;
    assert_int_equal(cf_storage_space(st, &n), 0);
    assert_true(n > 0);
    cf_storage_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_missing_then_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_file_not_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_parent_is_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_over_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stray_files_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_spares_live_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_space, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
