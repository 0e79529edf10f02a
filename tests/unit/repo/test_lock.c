/*
 * test_lock.c - repository locks (repo/lock.c): shared locks coexist, exclusive locks exclude,
 * conflicts name their holder, unlock releases, and stale locks (dead process on this host,
 * or too old) are ignored and removed by cf_repo_unlock_stale.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit/repo/repo_helpers.h"

#define URL "mem:locks"

static cf_repo *g_a, *g_b;
static cf_storage *g_st;

static int setup(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    g_a = th_repo_new(URL);
    th_ok(cf_repo_open(&g_b, URL, TEST_PASSWORD));
    g_st = th_storage(URL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_repo_close(g_a);
    cf_repo_close(g_b);
    cf_storage_close(g_st);
    g_a = g_b = NULL;
    g_st = NULL;
    cf_storage_mem_reset();
    return 0;
}

static size_t nlocks(void) { return th_count(g_st, "locks/"); }

static cf_repo *open_c(void)
{
    cf_repo *r = NULL;
    th_ok(cf_repo_open(&r, URL, TEST_PASSWORD));
    return r;
}

static void hostname(char out[256])
{
    if (gethostname(out, 256) != 0)
        snprintf(out, 256, "unknown");
    out[255] = '\0';
}

/* Write a lock document as another process would have. Returns its storage name. */
static void put_lock(char name[80], const char *host, long long pid, int64_t time_ns, bool excl)
{
    json_t *doc = json_pack("{s:s, s:I, s:I, s:b}", "host", host, "pid", (json_int_t)pid, "time",
                            (json_int_t)time_ns, "exclusive", excl);
    assert_non_null(doc);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    assert_non_null(text);
    char hex[65];
    th_ok(cf_repo__put_object(g_a, "locks", CF_OBJ_LOCK, text, strlen(text), hex));
    free(text);
    snprintf(name, 80, "locks/%s", hex);
}

/* A pid that is certainly not running: a child that has exited and been reaped. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return pid;
}

/* ------------------------------------------------------------------ live locks */

static void test_shared_coexist(void **state)
{
    (void)state;
    th_ok(cf_repo_lock(g_a, CF_LOCK_SHARED));
    th_ok(cf_repo_lock(g_b, CF_LOCK_SHARED));
    assert_int_equal(nlocks(), 2);
    cf_repo *c = open_c();
    th_ok(cf_repo_lock(c, CF_LOCK_SHARED));
    assert_int_equal(nlocks(), 3);
    th_ok(cf_repo_unlock(c));
    cf_repo_close(c);
    th_ok(cf_repo_unlock(g_a));
    th_ok(cf_repo_unlock(g_b));
    assert_int_equal(nlocks(), 0);
    th_ok(cf_repo_unlock(g_a)); /* unlocking twice is harmless */
}

static void test_shared_blocks_exclusive(void **state)
{
    (void)state;
    char pid[32];
    snprintf(pid, sizeof(pid), "pid %lld", (long long)getpid());
    th_ok(cf_repo_lock(g_a, CF_LOCK_SHARED));
    th_expect(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE), CF_ELOCKED, pid);
    assert_non_null(strstr(cf_error_last()->message, URL));
    assert_non_null(cf_error_last()->hint);
    assert_int_equal(nlocks(), 1); /* the loser left nothing behind */
    th_ok(cf_repo_unlock(g_a));
    th_ok(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE));
    assert_int_equal(nlocks(), 1);
}

static void test_exclusive_blocks_all(void **state)
{
    (void)state;
    th_ok(cf_repo_lock(g_a, CF_LOCK_EXCLUSIVE));
    th_expect(cf_repo_lock(g_b, CF_LOCK_SHARED), CF_ELOCKED, "exclusively");
    th_expect(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE), CF_ELOCKED, "exclusively");
    assert_int_equal(nlocks(), 1);
    /* closing the handle releases its lock */
    cf_repo_close(g_a);
    g_a = open_c();
    assert_int_equal(nlocks(), 0);
    th_ok(cf_repo_lock(g_b, CF_LOCK_SHARED));
}

static void test_relock_same_handle(void **state)
{
    (void)state;
    th_ok(cf_repo_lock(g_a, CF_LOCK_SHARED));
    /* a handle does not conflict with itself; its lock is replaced, not added */
    th_ok(cf_repo_lock(g_a, CF_LOCK_EXCLUSIVE));
    assert_int_equal(nlocks(), 1);
    th_expect(cf_repo_lock(g_b, CF_LOCK_SHARED), CF_ELOCKED, NULL);
    th_ok(cf_repo_lock(g_a, CF_LOCK_SHARED));
    assert_int_equal(nlocks(), 1);
    th_ok(cf_repo_lock(g_b, CF_LOCK_SHARED));
    assert_int_equal(nlocks(), 2);
    /* unlock_stale never removes the caller's own lock, nor live ones */
    size_t removed = 99;
    th_ok(cf_repo_unlock_stale(g_a, false, &removed));
    assert_int_equal(removed, 0);
    assert_int_equal(nlocks(), 2);
    th_ok(cf_repo_unlock_stale(g_a, true, &removed));
    assert_int_equal(removed, 1); /* g_b's */
    assert_int_equal(nlocks(), 1);
    th_ok(cf_repo_unlock(g_b)); /* its lock was removed under it: still fine */
}

/* ------------------------------------------------------------------ other holders */

static void test_other_host_is_live(void **state)
{
    (void)state;
    char name[80];
    /* a pid that does not exist here says nothing about a process on another machine */
    put_lock(name, "some-other-host.example", (long long)dead_pid(), cf_now_ns(), false);
    th_expect(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE), CF_ELOCKED, "some-other-host.example");
    th_ok(cf_repo_lock(g_b, CF_LOCK_SHARED));
    size_t removed = 99;
    th_ok(cf_repo_unlock_stale(g_a, false, &removed));
    assert_int_equal(removed, 0);
    th_ok(cf_repo_unlock_stale(g_a, true, &removed));
    assert_int_equal(removed, 2); /* the foreign lock and g_b's */
    assert_int_equal(nlocks(), 0);
}

static void test_dead_pid_is_stale(void **state)
{
    (void)state;
    char host[256], name[80];
    hostname(host);
    pid_t dead = dead_pid();
    put_lock(name, host, (long long)dead, cf_now_ns(), true);
    /* stale: ignored by both kinds of lock */
    th_ok(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE));
    th_ok(cf_repo_unlock(g_b));
    th_ok(cf_repo_lock(g_b, CF_LOCK_SHARED));
    assert_int_equal(nlocks(), 2);
    size_t removed = 0;
    th_ok(cf_repo_unlock_stale(g_a, false, &removed));
    assert_int_equal(removed, 1);
    assert_int_equal(nlocks(), 1);
    uint64_t size;
    th_expect(cf_storage_stat(g_st, name, &size), CF_ENOTFOUND, NULL);
}

static void test_old_lock_is_stale(void **state)
{
    (void)state;
    char host[256], name[80];
    hostname(host);
    /* a live process (this one) that has not refreshed its lock for 31 minutes */
    put_lock(name, "elsewhere", (long long)getpid(),
             cf_now_ns() - (int64_t)(CF_LOCK_STALE_SECONDS + 60) * 1000000000LL, true);
    th_ok(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE));
    th_ok(cf_repo_unlock(g_b));
    size_t removed = 0;
    th_ok(cf_repo_unlock_stale(g_a, false, &removed));
    assert_int_equal(removed, 1);
    /* a recent one from this live process is not stale */
    put_lock(name, host, (long long)getpid(), cf_now_ns() - 60 * 1000000000LL, true);
    th_expect(cf_repo_lock(g_b, CF_LOCK_SHARED), CF_ELOCKED, NULL);
    th_ok(cf_repo_unlock_stale(g_a, false, &removed));
    assert_int_equal(removed, 0);
}

static void test_unreadable_lock(void **state)
{
    (void)state;
    char name[128];
    snprintf(name, sizeof(name), "locks/%064d", 7);
    th_ok(cf_storage_put(g_st, name, "not a sealed object", 19, 0));
    /* a lock nobody can read blocks (it cannot be honoured or judged stale), and the unlock
     * its message suggests removes it */
    th_expect(cf_repo_lock(g_b, CF_LOCK_SHARED), CF_ELOCKED, "unreadable");
    th_expect(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE), CF_ELOCKED, "unreadable");
    assert_int_equal(nlocks(), 1);
    size_t removed = 99;
    th_ok(cf_repo_unlock_stale(g_a, false, &removed));
    assert_int_equal(removed, 1);
    assert_int_equal(nlocks(), 0);
    th_ok(cf_repo_lock(g_b, CF_LOCK_EXCLUSIVE));
    /* a sealed lock object whose JSON is not a lock document */
    th_ok(cf_repo_unlock(g_b));
    char hex[65];
    th_ok(cf_repo__put_object(g_a, "locks", CF_OBJ_LOCK, "{\"pid\":\"x\"}", 11, hex));
    th_expect(cf_repo_lock(g_b, CF_LOCK_SHARED), CF_ELOCKED, hex);
}

static void test_storage_failures(void **state)
{
    (void)state;
    th_ok(cf_storage_mem_inject("locks", "list", 1, CF_EIO));
    th_expect(cf_repo_lock(g_a, CF_LOCK_SHARED), CF_EIO, NULL);
    th_ok(cf_storage_mem_inject("locks", "list", 0, 0));
    th_ok(cf_storage_mem_inject("locks", "put", 1, CF_EIO));
    th_expect(cf_repo_lock(g_a, CF_LOCK_SHARED), CF_EIO, NULL);
    th_ok(cf_storage_mem_inject("locks", "put", 0, 0));
    assert_int_equal(nlocks(), 0);
    th_ok(cf_repo_lock(g_a, CF_LOCK_SHARED));
    th_ok(cf_storage_mem_inject("locks", "remove", 1, CF_EIO));
    th_expect(cf_repo_unlock(g_a), CF_EIO, NULL);
    th_ok(cf_storage_mem_inject("locks", "remove", 0, 0));
}

/* ------------------------------------------------------------------ a real dead process */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/*
 * On local storage (mem stores are per process): a child process takes an exclusive lock and
 * exits without releasing it. Its lock is stale for the parent.
 */
static void test_child_died_holding_lock(void **state)
{
    (void)state;
    char dir[] = "/tmp/coffer-lock-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char url[64];
    snprintf(url, sizeof(url), "local:%s/repo", dir);
    cf_init_opts o = th_opts();
    th_ok(cf_repo_init(url, TEST_PASSWORD, &o));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cf_repo *r = NULL;
        if (cf_repo_open(&r, url, TEST_PASSWORD) != 0 || cf_repo_lock(r, CF_LOCK_EXCLUSIVE) != 0)
            _exit(1);
        _exit(0); /* no unlock, no close */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    cf_repo *r = NULL;
    th_ok(cf_repo_open(&r, url, TEST_PASSWORD));
    cf_storage *st = NULL;
    th_ok(cf_storage_open(&st, url, 0));
    assert_int_equal(th_count(st, "locks/"), 1);
    th_ok(cf_repo_lock(r, CF_LOCK_EXCLUSIVE));
    assert_int_equal(th_count(st, "locks/"), 2);
    size_t removed = 0;
    th_ok(cf_repo_unlock_stale(r, false, &removed));
    assert_int_equal(removed, 1);
    assert_int_equal(th_count(st, "locks/"), 1); /* ours */
    th_ok(cf_repo_unlock(r));
    assert_int_equal(th_count(st, "locks/"), 0);
    cf_storage_close(st);
    cf_repo_close(r);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_shared_coexist),
        T(test_shared_blocks_exclusive),
        T(test_exclusive_blocks_all),
        T(test_relock_same_handle),
        T(test_other_host_is_live),
        T(test_dead_pid_is_stale),
        T(test_old_lock_is_stale),
        T(test_unreadable_lock),
        T(test_storage_failures),
        T(test_child_died_holding_lock),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
