/*
 * test_sftp.c - the SFTP driver beyond the conformance suite. Without a server: url parsing,
 * refused connections, a peer that is not an ssh server, a handshake that times out. With the
 * server started by tests/conformance/remote/sftp.sh (COFFER_SFTP_TEST_URL set): reconnection
 * after a dropped connection, concurrent use of one handle from several threads, a full
 * filesystem (COFFER_SFTP_TEST_SMALL_URL) and a server that went away
 * (COFFER_SFTP_TEST_SSHD_PID: then only that test runs, and it kills the server).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

static const char *g_url; /* COFFER_SFTP_TEST_URL, or NULL: the server tests skip */

static void expect_open_error(const char *url, int code, const char *needle, const char *absent)
{
    cf_storage *st = (cf_storage *)&st;
    int rc = cf_storage_open(&st, url, CF_STORAGE_CREATE);
    if (rc != code)
        fail_msg("open '%s': expected %s, got %s: %s", url, cf_error_name(code),
                 cf_error_name(rc), cf_error_last()->message);
    assert_null(st);
    const char *msg = cf_error_last()->message;
    if (needle && !strstr(msg, needle))
        fail_msg("open '%s': message '%s' does not mention '%s'", url, msg, needle);
    if (absent && strstr(msg, absent))
        fail_msg("open '%s': message '%s' shows '%s'", url, msg, absent);
    if (absent && cf_error_last()->hint && strstr(cf_error_last()->hint, absent))
        fail_msg("open '%s': hint shows '%s'", url, absent);
}

/* A TCP port on 127.0.0.1 that nothing listens on (bound, then released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t l = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A listening socket on 127.0.0.1; *port receives its port. */
static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t l = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- without a server ---- */

static void test_bad_urls(void **state)
{
    (void)state;
    expect_open_error("sftp:", CF_EINVAL, NULL, NULL);
    expect_open_error("sftp:host-without-path", CF_EINVAL, "USER@HOST:PATH", NULL);
    expect_open_error("sftp:user@host:", CF_EINVAL, "path is empty", NULL);
    expect_open_error("sftp://user@host", CF_EINVAL, "no path", NULL);
    expect_open_error("sftp://user@host:0/x", CF_EINVAL, "port", NULL);
    expect_open_error("sftp://user@host:65536/x", CF_EINVAL, "port", NULL);
    expect_open_error("sftp://user@host:22x/x", CF_EINVAL, "port", NULL);
    expect_open_error("sftp://user@:22/x", CF_EINVAL, "host", NULL);
    expect_open_error("sftp://@host/x", CF_EINVAL, "user", NULL);
    expect_open_error("sftp:user@[::1:/x", CF_EINVAL, "'['", NULL);
    expect_open_error("sftp:user@host:/a\nb", CF_EINVAL, "control character", NULL);
    /* a password is refused, and never repeated back */
    expect_open_error("sftp://user:hunter2@host:22/x", CF_EINVAL, "password", "hunter2");
    expect_open_error("sftp:user:hunter2@host:/x", CF_EINVAL, "password", "hunter2");
    /* the registry hint names the sftp forms */
    cf_storage *st = NULL;
    assert_int_equal(cf_storage_open(&st, "nosuch:x", 0), CF_EUNSUPPORTED);
    assert_non_null(strstr(cf_error_last()->hint, "sftp:"));
}

static void test_connection_refused(void **state)
{
    (void)state;
    int port = free_port();
    char url[128], where[64];
    snprintf(url, sizeof(url), "sftp://someone@127.0.0.1:%d/tmp/x", port);
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    expect_open_error(url, CF_ERETRYABLE, where, NULL);
    assert_non_null(strstr(cf_error_last()->message, "refused"));
    assert_non_null(cf_error_last()->hint);

    /* IPv6 literals: named in brackets (unreachable or unresolvable where there is no IPv6) */
    cf_storage *st = NULL;
    snprintf(url, sizeof(url), "sftp://someone@[::1]:%d/tmp/x", port);
    snprintf(where, sizeof(where), "[::1]:%d", port);
    int rc = cf_storage_open(&st, url, 0);
    assert_true(rc == CF_ERETRYABLE || rc == CF_EIO);
    if (!strstr(cf_error_last()->message, where))
        fail_msg("message '%s' does not name '%s'", cf_error_last()->message, where);

    /* the short form always means port 22 */
    rc = cf_storage_open(&st, "sftp:someone@127.0.0.1:/tmp/x", 0);
    assert_true(rc < 0);
    if (!strstr(cf_error_last()->message, "127.0.0.1:22"))
        fail_msg("message '%s' does not name port 22", cf_error_last()->message);
    assert_null(st);
}

static void test_unresolvable_host(void **state)
{
    (void)state;
    /* EIO, or RETRYABLE where the resolver itself is unreachable (EAI_AGAIN) */
    cf_storage *st = NULL;
    int rc = cf_storage_open(&st, "sftp://someone@no-such-host.invalid:22/x", 0);
    if (rc != CF_EIO && rc != CF_ERETRYABLE)
        fail_msg("expected EIO or RETRYABLE, got %s: %s", cf_error_name(rc),
                 cf_error_last()->message);
    assert_non_null(strstr(cf_error_last()->message, "no-such-host.invalid:22"));
}

static void *garbage_server(void *arg)
{
    int lfd = *(int *)arg;
    int c = accept(lfd, NULL, NULL);
    if (c >= 0) {
        static const char reply[] = "HTTP/1.0 400 Bad Request\r\n\r\n";
        (void)!write(c, reply, sizeof(reply) - 1);
        usleep(100000);
        close(c);
    }
    return NULL;
}

static void test_not_ssh(void **state)
{
    (void)state;
    int port;
    int lfd = listener(&port);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, garbage_server, &lfd), 0);
    char url[128], where[64];
    snprintf(url, sizeof(url), "sftp://someone@127.0.0.1:%d/x", port);
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    expect_open_error(url, CF_ERETRYABLE, where, NULL);
    assert_non_null(strstr(cf_error_last()->message, "handshake"));
    pthread_join(t, NULL);
    close(lfd);
}

/* A peer that accepts the connection and then says nothing: the 10 s timeout must end it. */
static void test_handshake_timeout(void **state)
{
    (void)state;
    if (g_url)
        skip(); /* takes 10 s; the plain unit run (without a server) covers it */
    int port;
    int lfd = listener(&port); /* the kernel completes the handshake; nobody answers */
    char url[128], where[64];
    snprintf(url, sizeof(url), "sftp://someone@127.0.0.1:%d/x", port);
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    double t0 = cf_mono_seconds();
    expect_open_error(url, CF_ERETRYABLE, where, NULL);
    double took = cf_mono_seconds() - t0;
    if (took < 5 || took > 30)
        fail_msg("handshake timeout took %.1f s (expected about 10 s)", took);
    close(lfd);
}

/* ---- with the server started by sftp.sh ---- */

static cf_storage *open_live(const char *url)
{
    cf_storage *st = NULL;
    if (cf_storage_open(&st, url, CF_STORAGE_CREATE) != 0)
        fail_msg("open '%s': %s", url, cf_error_last()->message);
    return st;
}

static int count_cb(const char *name, uint64_t size, void *payload)
{
    (void)name;
    (void)size;
    (*(size_t *)payload)++;
    return 0;
}

typedef struct {
    cf_storage *st;
    int errors;
} remove_ctx;

static int remove_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    remove_ctx *r = payload;
    /* the driver calls back outside its lock, so using the storage here is fine */
    if (cf_storage_remove(r->st, name) != 0)
        r->errors++;
    return 0;
}

/* Remove everything under prefix (left by an earlier, interrupted run). */
static void clean(cf_storage *st, const char *prefix)
{
    remove_ctx r = {st, 0};
    assert_int_equal(cf_storage_list(st, prefix, remove_cb, &r), 0);
    assert_int_equal(r.errors, 0);
}

static void test_reconnect(void **state)
{
    (void)state;
    if (!g_url)
        skip();
    cf_storage *st = open_live(g_url);
    clean(st, "rc/");
    assert_int_equal(cf_storage_put(st, "rc/a", "alpha", 5, 0), 0);

    /* every kind of operation survives its connection dropping under it */
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    assert_int_equal(cf_storage_get(st, "rc/a", 0, 0, &out, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "alpha", 5);
    free(out);

    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    if (cf_storage_put(st, "rc/b", "bravo", 5, 0) != 0)
        fail_msg("put after drop: %s", cf_error_last()->message);
    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    assert_int_equal(cf_storage_put(st, "rc/c", "charlie", 7, CF_PUT_EXCLUSIVE), 0);

    uint64_t size = 0;
    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    assert_int_equal(cf_storage_stat(st, "rc/b", &size), 0);
    assert_int_equal(size, 5);

    size_t n = 0;
    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    assert_int_equal(cf_storage_list(st, "rc/", count_cb, &n), 0);
    assert_int_equal(n, 3); /* exactly once each, no temporaries */

    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    assert_int_equal(cf_storage_remove(st, "rc/a"), 0);
    /* a missing object is still reported as missing after a reconnection */
    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    assert_int_equal(cf_storage_stat(st, "rc/a", &size), CF_ENOTFOUND);

    assert_int_equal(cf_storage_sftp_inject_drop(0), 0);
    assert_int_equal(cf_storage_remove(st, "rc/b"), 0);
    assert_int_equal(cf_storage_remove(st, "rc/c"), 0);
    cf_storage_close(st);
}

#define THREADS 4
#define PER_THREAD 40

typedef struct {
    cf_storage *st;
    int id;
    int errors;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    uint8_t buf[70000];
    for (int i = 0; i < PER_THREAD; i++) {
        char name[64];
        snprintf(name, sizeof(name), "mt/%d/%d", w->id, i);
        size_t n = (size_t)(i * 1733) % sizeof(buf);
        memset(buf, w->id * 31 + i, n);
        if (cf_storage_put(w->st, name, buf, n, i % 2 ? CF_PUT_EXCLUSIVE : 0) != 0) {
            w->errors++;
            continue;
        }
        uint8_t *out = NULL;
        size_t len = 0;
        if (cf_storage_get(w->st, name, 0, 0, &out, &len) != 0 || len != n ||
            (n && memcmp(out, buf, n) != 0))
            w->errors++;
        free(out);
        if (i % 3 == 0 && cf_storage_remove(w->st, name) != 0)
            w->errors++;
    }
    return NULL;
}

static void test_threads_share_one_handle(void **state)
{
    (void)state;
    if (!g_url)
        skip();
    cf_storage *st = open_live(g_url);
    clean(st, "mt/");
    pthread_t t[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){st, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(w[i].errors, 0);
    size_t n = 0;
    assert_int_equal(cf_storage_list(st, "mt/", count_cb, &n), 0);
    assert_int_equal(n, THREADS * (PER_THREAD - (PER_THREAD + 2) / 3));
    clean(st, "mt/");
    n = 0;
    assert_int_equal(cf_storage_list(st, "mt/", count_cb, &n), 0);
    assert_int_equal(n, 0);
    cf_storage_close(st);
}

static void test_overwrite_keeps_one_object(void **state)
{
    (void)state;
    if (!g_url)
        skip();
    cf_storage *st = open_live(g_url);
    clean(st, "ow/");
    /* sftp cannot rename over a file: the driver moves the old one aside; nothing may remain */
    for (int i = 0; i < 5; i++) {
        char v[16];
        int n = snprintf(v, sizeof(v), "version-%d", i);
        assert_int_equal(cf_storage_put(st, "ow/obj", v, (size_t)n, 0), 0);
        uint8_t *out = NULL;
        size_t len = 0;
        assert_int_equal(cf_storage_get(st, "ow/obj", 0, 0, &out, &len), 0);
        assert_int_equal(len, (size_t)n);
        assert_memory_equal(out, v, len);
        free(out);
    }
    size_t count = 0;
    assert_int_equal(cf_storage_list(st, "ow/", count_cb, &count), 0);
    assert_int_equal(count, 1);
    assert_int_equal(cf_storage_remove(st, "ow/obj"), 0);
    cf_storage_close(st);
}

static void test_no_space(void **state)
{
    (void)state;
    const char *url = getenv("COFFER_SFTP_TEST_SMALL_URL"); /* a 2 MiB filesystem */
    if (!url)
        skip();
    cf_storage *st = open_live(url);
    size_t n = (size_t)4 << 20;
    uint8_t *big = calloc(1, n);
    assert_non_null(big);
    int rc = cf_storage_put(st, "data/big", big, n, 0);
    if (rc != CF_ENOSPACE)
        fail_msg("put of 4 MiB into 2 MiB: expected NOSPACE, got %s: %s", cf_error_name(rc),
                 cf_error_last()->message);
    assert_non_null(strstr(cf_error_last()->message, "data/big"));
    free(big);
    /* the partial temporary was removed: a small object still fits */
    if (cf_storage_put(st, "data/small", "ok", 2, 0) != 0)
        fail_msg("small put after NOSPACE: %s", cf_error_last()->message);
    assert_int_equal(cf_storage_remove(st, "data/small"), 0);
    cf_storage_close(st);
}

/* Last: kill the server. An open handle then reports a retryable error naming host:port. */
static void test_server_gone(void **state)
{
    (void)state;
    const char *pid = getenv("COFFER_SFTP_TEST_SSHD_PID");
    if (!g_url || !pid)
        skip();
    cf_storage *st = open_live(g_url);
    assert_int_equal(cf_storage_put(st, "gone/a", "x", 1, 0), 0);
    long p = strtol(pid, NULL, 10);
    assert_true(p > 1);
    assert_int_equal(kill((pid_t)p, SIGTERM), 0);
    usleep(300000); /* the listener closes; our session's own process lives on */
    assert_int_equal(cf_storage_sftp_inject_drop(1), 0);
    uint64_t size;
    double t0 = cf_mono_seconds();
    int rc = cf_storage_stat(st, "gone/a", &size);
    if (rc != CF_ERETRYABLE)
        fail_msg("stat with the server gone: expected RETRYABLE, got %s: %s", cf_error_name(rc),
                 cf_error_last()->message);
    assert_true(cf_mono_seconds() - t0 < 15);
    const char *msg = cf_error_last()->message;
    const char *hp = strstr(g_url, "@");
    assert_non_null(hp);
    char where[64];
    snprintf(where, sizeof(where), "%.*s", (int)strcspn(hp + 1, "/"), hp + 1);
    if (!strstr(msg, where))
        fail_msg("message '%s' does not name '%s'", msg, where);
    cf_storage_close(st);
}

int main(void)
{
    g_url = getenv("COFFER_SFTP_TEST_URL");
    if (g_url && !*g_url)
        g_url = NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_unresolvable_host),
        cmocka_unit_test(test_not_ssh),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_threads_share_one_handle),
        cmocka_unit_test(test_overwrite_keeps_one_object),
        cmocka_unit_test(test_no_space),
    };
    /* With the server's pid, only the test that kills it runs. */
    if (getenv("COFFER_SFTP_TEST_SSHD_PID")) {
        const struct CMUnitTest last[] = {cmocka_unit_test(test_server_gone)};
        return cmocka_run_group_tests(last, NULL, NULL);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
