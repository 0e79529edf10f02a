/*
 * test_snapshot.c - snapshot documents (repo/snapshot.c): encoding round trips, damaged
 * documents, listing order and filters, and resolving "latest", ids and prefixes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit/repo/repo_helpers.h"

static cf_repo *g_repo;

static int setup(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    g_repo = th_repo_new("mem:snaps");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_repo_close(g_repo);
    g_repo = NULL;
    cf_storage_mem_reset();
    return 0;
}

/* A snapshot on the stack, its strings borrowed (as cf_backup builds it). */
typedef struct {
    cf_snapshot s;
    char *paths[3];
    char *tags[3];
} snap_doc;

static void mk_doc(snap_doc *d, int64_t time, const char *host, const char *tag)
{
    memset(d, 0, sizeof(*d));
    d->s.time = time;
    d->s.host = (char *)(uintptr_t)host;
    d->s.username = (char *)(uintptr_t)"alice";
    d->paths[0] = (char *)(uintptr_t)"/home/alice";
    d->paths[1] = (char *)(uintptr_t)"/etc";
    d->s.paths = d->paths;
    d->s.npaths = 2;
    if (tag) {
        d->tags[0] = (char *)(uintptr_t)tag;
        d->s.tags = d->tags;
        d->s.ntags = 1;
    }
    d->s.type = CF_BACKUP_FULL;
    th_id(&d->s.tree, (uint64_t)time);
    cf_hex_encode(d->s.tree_hex, d->s.tree.b, 32);
    d->s.source_kind = (char *)(uintptr_t)"files";
    d->s.source_name = (char *)(uintptr_t)"";
}

/* Store a snapshot document; returns its id in id. */
static void put_doc(const snap_doc *d, char id[65])
{
    cf_buf b;
    cf_buf_init(&b, 0);
    th_ok(cf_snapshot__encode(&b, &d->s));
    th_ok(cf_repo__put_object(g_repo, "snapshots", CF_OBJ_SNAPSHOT, b.data, b.len, id));
    cf_buf_free(&b);
}

static void put_snap(int64_t time, const char *host, const char *tag, char id[65])
{
    snap_doc d;
    mk_doc(&d, time, host, tag);
    put_doc(&d, id);
}

static int decode_str(cf_snapshot **out, const char *json)
{
    /* a copy without a terminating NUL: the decoder must honour the length */
    size_t len = strlen(json);
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    memcpy(c, json, len);
    *out = (cf_snapshot *)(uintptr_t)1;
    int rc = cf_snapshot__decode(out, c, len, "0123456789abcdef");
    free(c);
    if (rc)
        assert_null(*out);
    return rc;
}

#define TREE "\"tree\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\""
#define BASE "\"version\":1,\"time\":\"2024-05-06T07:08:09.123456789Z\",\"host\":\"h\",\"type\":\"full\""

/* ------------------------------------------------------------------ encoding */

static void test_roundtrip(void **state)
{
    (void)state;
    snap_doc d;
    mk_doc(&d, 1714979289123456789LL, "host.example", "daily");
    d.tags[1] = (char *)(uintptr_t)"important \xc3\xa9";
    d.s.ntags = 2;
    d.paths[2] = (char *)(uintptr_t)"/with \"quotes\" and \\ backslash";
    d.s.npaths = 3;
    d.s.type = CF_BACKUP_DIFFERENTIAL;
    d.s.parent = (char *)(uintptr_t)"aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999";
    d.s.source_kind = (char *)(uintptr_t)"stdin";
    d.s.source_name = (char *)(uintptr_t)"db.sql";
    d.s.stats = (cf_backup_stats){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1.5};
    d.s.stats.bytes_total = (uint64_t)1 << 50;
    cf_buf b;
    cf_buf_init(&b, 0);
    th_ok(cf_snapshot__encode(&b, &d.s));
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot__decode(&s, b.data, b.len, "feedface"));
    assert_string_equal(cf_snapshot_id(s), "feedface");
    assert_true(cf_snapshot_time(s) == d.s.time);
    assert_string_equal(cf_snapshot_host(s), "host.example");
    assert_string_equal(cf_snapshot_username(s), "alice");
    assert_int_equal(cf_snapshot_path_count(s), 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(cf_snapshot_path(s, i), d.paths[i]);
    assert_null(cf_snapshot_path(s, 3));
    assert_int_equal(cf_snapshot_tag_count(s), 2);
    assert_string_equal(cf_snapshot_tag(s, 0), "daily");
    assert_string_equal(cf_snapshot_tag(s, 1), d.tags[1]);
    assert_null(cf_snapshot_tag(s, 2));
    assert_int_equal(cf_snapshot_type(s), CF_BACKUP_DIFFERENTIAL);
    assert_string_equal(cf_snapshot_parent(s), d.s.parent);
    assert_string_equal(cf_snapshot_tree(s), d.s.tree_hex);
    assert_memory_equal(s->tree.b, d.s.tree.b, 32);
    assert_string_equal(cf_snapshot_source_kind(s), "stdin");
    assert_string_equal(s->source_name, "db.sql");
    const cf_backup_stats *st = cf_snapshot_stats(s);
    assert_int_equal(st->files_new, 1);
    assert_int_equal(st->files_changed, 2);
    assert_int_equal(st->files_unchanged, 3);
    assert_int_equal(st->dirs, 4);
    assert_int_equal(st->others, 5);
    assert_true(st->bytes_total == (uint64_t)1 << 50);
    assert_int_equal(st->bytes_read, 7);
    assert_int_equal(st->bytes_added, 8);
    assert_int_equal(st->blobs_added, 9);
    assert_int_equal(st->errors, 10);
    assert_true(st->seconds == 1.5);
    /* re-encoding the decoded snapshot gives the same document */
    cf_buf b2;
    cf_buf_init(&b2, 0);
    th_ok(cf_snapshot__encode(&b2, s));
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    /* JSON view carries the id */
    char *json = cf_snapshot_to_json(s);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"id\": \"feedface\""));
    free(json);
    cf_snapshot_free(s);
    cf_buf_free(&b);
    cf_buf_free(&b2);
}

static void test_no_parent_no_tags(void **state)
{
    (void)state;
    snap_doc d;
    mk_doc(&d, -5, "h", NULL); /* before 1970 */
    d.s.username = NULL;
    cf_buf b;
    cf_buf_init(&b, 0);
    th_ok(cf_snapshot__encode(&b, &d.s));
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot__decode(&s, b.data, b.len, "x"));
    assert_null(cf_snapshot_parent(s));
    assert_int_equal(cf_snapshot_tag_count(s), 0);
    assert_string_equal(cf_snapshot_username(s), "");
    assert_true(cf_snapshot_time(s) == -5);
    cf_snapshot_free(s);
    cf_buf_free(&b);
}

static void test_extra_fields_preserved(void **state)
{
    (void)state;
    const char *doc = "{" BASE "," TREE ",\"paths\":[\"/a\"],"
                      "\"x-custom\":{\"nested\":[1,2,{\"k\":\"v\"}]},\"zz\":null,\"num\":42,"
                      "\"source\":{\"kind\":\"postgres\",\"name\":\"main\",\"lsn\":\"0/16B3748\"}}";
    cf_snapshot *s = NULL;
    th_ok(decode_str(&s, doc));
    assert_string_equal(cf_snapshot_source_kind(s), "postgres");
    assert_string_equal(s->source_name, "main");
    assert_int_equal(cf_snapshot_type(s), CF_BACKUP_FULL);
    cf_buf b;
    cf_buf_init(&b, 0);
    th_ok(cf_snapshot__encode(&b, s));
    th_ok(cf_buf_put_u8(&b, 0));
    const char *text = (const char *)b.data;
    assert_non_null(strstr(text, "\"x-custom\":{\"nested\":[1,2,{\"k\":\"v\"}]}"));
    assert_non_null(strstr(text, "\"zz\":null"));
    assert_non_null(strstr(text, "\"num\":42"));
    /* decoded again: still there, once */
    cf_snapshot *s2 = NULL;
    th_ok(cf_snapshot__decode(&s2, b.data, b.len - 1, "y"));
    assert_non_null(s2->extra);
    assert_int_equal(json_object_size(s2->extra), 3);
    assert_int_equal(json_integer_value(json_object_get(s2->extra, "num")), 42);
    /* unknown fields never override known ones */
    cf_buf b2;
    cf_buf_init(&b2, 0);
    json_object_set_new(s2->extra, "host", json_string("evil"));
    th_ok(cf_snapshot__encode(&b2, s2));
    th_ok(cf_buf_put_u8(&b2, 0));
    assert_null(strstr((const char *)b2.data, "evil"));
    cf_snapshot_free(s);
    cf_snapshot_free(s2);
    cf_buf_free(&b);
    cf_buf_free(&b2);
}

static void test_decode_damaged(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "   ",
        "{",
        "null",
        "[]",
        "\"string\"",
        "{}",
        "{" BASE "}",                                           /* no tree */
        "{" BASE "," TREE ",}",                                 /* trailing comma */
        "{\"time\":\"2024-05-06T07:08:09Z\",\"host\":\"h\",\"type\":\"full\"," TREE "}", /* no version */
        "{\"version\":1,\"host\":\"h\",\"type\":\"full\"," TREE "}",          /* no time */
        "{\"version\":1,\"time\":\"2024-05-06T07:08:09Z\",\"type\":\"full\"," TREE "}", /* no host */
        "{\"version\":1,\"time\":\"2024-05-06T07:08:09Z\",\"host\":\"h\"," TREE "}",    /* no type */
        "{\"version\":2,\"time\":\"2024-05-06T07:08:09Z\",\"host\":\"h\",\"type\":\"full\"," TREE "}",
        "{\"version\":\"1\",\"time\":\"2024-05-06T07:08:09Z\",\"host\":\"h\",\"type\":\"full\"," TREE "}",
        "{\"version\":1,\"time\":\"yesterday\",\"host\":\"h\",\"type\":\"full\"," TREE "}",
        "{\"version\":1,\"time\":12345,\"host\":\"h\",\"type\":\"full\"," TREE "}",
        "{\"version\":1,\"time\":\"2024-05-06T07:08:09Z\",\"host\":7,\"type\":\"full\"," TREE "}",
        "{" BASE ",\"tree\":\"0011\"}",
        "{" BASE ",\"tree\":\"\"}",
        "{" BASE ",\"tree\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\"}",
        "{" BASE ",\"tree\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0\"}",
        "{" BASE ",\"tree\":\"g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}",
        "{" BASE ",\"tree\":\"0011223344556677 899aabbccddeeff00112233445566778899aabbccddeeff\"}",
        "{" BASE ",\"tree\":null}",
        "{" BASE ",\"tree\":[]}",
        "{" BASE "," TREE ",\"paths\":\"/a\"}",
        "{" BASE "," TREE ",\"paths\":[\"/a\",3]}",
        "{" BASE "," TREE ",\"paths\":[null]}",
        "{" BASE "," TREE ",\"tags\":{\"a\":1}}",
        "{" BASE "," TREE ",\"tags\":[\"ok\",[\"nested\"]]}",
        "{" BASE "," TREE ",\"source\":\"files\"}",
        "{" BASE "," TREE ",\"source\":{\"kind\":3}}",
        "{" BASE "," TREE ",\"parent\":5}",
        "{" BASE "," TREE ",\"username\":false}",
        "{" BASE "," TREE "} trailing",
        "{" BASE "," TREE ",\"host\":\"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cf_snapshot *s = NULL;
        int rc = decode_str(&s, bad[i]);
        if (rc != CF_ECORRUPT)
            fail_msg("document %zu (%s): expected CORRUPT, got %s", i, bad[i], cf_error_name(rc));
        assert_non_null(strstr(cf_error_last()->message, "0123456789abcdef"));
    }
    /* the minimal valid document, for reference */
    cf_snapshot *s = NULL;
    th_ok(decode_str(&s, "{" BASE "," TREE "}"));
    assert_int_equal(cf_snapshot_path_count(s), 0);
    assert_string_equal(cf_snapshot_source_kind(s), "files");
    cf_snapshot_free(s);
    /* bytes that are not text at all */
    uint8_t junk[256];
    for (int i = 0; i < 256; i++)
        junk[i] = (uint8_t)i;
    th_expect(cf_snapshot__decode(&s, junk, sizeof(junk), "junk"), CF_ECORRUPT, "junk");
    th_expect(cf_snapshot__decode(&s, junk, 0, "junk"), CF_ECORRUPT, NULL);
}

static void test_stats_lenient(void **state)
{
    (void)state;
    /* stats are informative: wrong types and negative numbers read as 0 */
    cf_snapshot *s = NULL;
    th_ok(decode_str(&s, "{" BASE "," TREE ",\"stats\":{\"files_new\":-3,\"dirs\":\"many\","
                         "\"bytes_total\":12,\"seconds\":2}}"));
    assert_int_equal(cf_snapshot_stats(s)->files_new, 0);
    assert_int_equal(cf_snapshot_stats(s)->dirs, 0);
    assert_int_equal(cf_snapshot_stats(s)->bytes_total, 12);
    assert_true(cf_snapshot_stats(s)->seconds == 2.0);
    cf_snapshot_free(s);
}

/* ------------------------------------------------------------------ listing */

static const int64_t T0 = 1700000000000000000LL;

static void test_list_order_and_filter(void **state)
{
    (void)state;
    char ids[6][65];
    /* stored out of order */
    put_snap(T0 + 3, "alpha", "daily", ids[3]);
    put_snap(T0 + 1, "beta", "weekly", ids[1]);
    put_snap(T0 + 5, "alpha", NULL, ids[5]);
    put_snap(T0 + 2, "alpha", "weekly", ids[2]);
    put_snap(T0 + 4, "beta", "daily", ids[4]);
    put_snap(T0 + 0, "alpha", "daily", ids[0]);
    cf_snapshot **l = NULL;
    size_t n = 0;
    th_ok(cf_snapshot_list(&l, &n, g_repo, NULL));
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_true(cf_snapshot_time(l[i]) == T0 + (int64_t)i);
        assert_string_equal(cf_snapshot_id(l[i]), ids[i]);
    }
    cf_snapshot_list_free(l, n);

    cf_snapshot_filter f = {"alpha", NULL, NULL};
    th_ok(cf_snapshot_list(&l, &n, g_repo, &f));
    assert_int_equal(n, 4);
    assert_string_equal(cf_snapshot_id(l[0]), ids[0]);
    assert_string_equal(cf_snapshot_id(l[3]), ids[5]);
    cf_snapshot_list_free(l, n);

    const char *daily[] = {"daily", NULL};
    f.tags = daily;
    th_ok(cf_snapshot_list(&l, &n, g_repo, &f));
    assert_int_equal(n, 2);
    assert_string_equal(cf_snapshot_id(l[0]), ids[0]);
    assert_string_equal(cf_snapshot_id(l[1]), ids[3]);
    cf_snapshot_list_free(l, n);

    const char *two[] = {"daily", "weekly", NULL};
    f.host = NULL;
    f.tags = two; /* all must be present: none has both */
    th_ok(cf_snapshot_list(&l, &n, g_repo, &f));
    assert_int_equal(n, 0);
    cf_snapshot_list_free(l, n);

    const char *paths[] = {"/etc", NULL};
    const char *nopath[] = {"/var", NULL};
    f.tags = NULL;
    f.paths = paths;
    th_ok(cf_snapshot_list(&l, &n, g_repo, &f));
    assert_int_equal(n, 6);
    cf_snapshot_list_free(l, n);
    f.paths = nopath;
    th_ok(cf_snapshot_list(&l, &n, g_repo, &f));
    assert_int_equal(n, 0);
    cf_snapshot_list_free(l, n);
}

static void test_list_same_time(void **state)
{
    (void)state;
    char a[65], b[65], c[65];
    put_snap(T0, "h", NULL, a);
    put_snap(T0, "h", NULL, b);
    put_snap(T0, "h", NULL, c);
    cf_snapshot **l = NULL;
    size_t n = 0;
    th_ok(cf_snapshot_list(&l, &n, g_repo, NULL));
    assert_int_equal(n, 3);
    /* ties broken by id: a stable order */
    assert_true(strcmp(cf_snapshot_id(l[0]), cf_snapshot_id(l[1])) < 0);
    assert_true(strcmp(cf_snapshot_id(l[1]), cf_snapshot_id(l[2])) < 0);
    cf_snapshot_list_free(l, n);
}

static void test_list_skips_damaged(void **state)
{
    (void)state;
    char id[65];
    put_snap(T0, "h", NULL, id);
    cf_storage *st = th_storage("mem:snaps");
    char name[128];
    /* garbage under a 64-hex name, a non-snapshot object, a foreign file name */
    snprintf(name, sizeof(name), "snapshots/%064d", 0);
    th_ok(cf_storage_put(st, name, "garbage", 7, 0));
    char idx[65];
    th_ok(cf_repo__put_object(g_repo, "index", CF_OBJ_INDEX, "{}", 2, idx));
    snprintf(name, sizeof(name), "snapshots/%s", idx);
    uint8_t *data = NULL;
    size_t len = 0;
    char from[128];
    snprintf(from, sizeof(from), "index/%s", idx);
    th_ok(cf_storage_get(st, from, 0, 0, &data, &len));
    th_ok(cf_storage_put(st, name, data, len, 0));
    free(data);
    th_ok(cf_storage_put(st, "snapshots/README", "hello", 5, 0));
    /* a sealed snapshot object whose JSON is damaged */
    char badjson[65];
    th_ok(cf_repo__put_object(g_repo, "snapshots", CF_OBJ_SNAPSHOT, "{\"version\":1", 12, badjson));
    size_t warn0 = cf_repo_warning_count(g_repo);
    cf_snapshot **l = NULL;
    size_t n = 0;
    th_ok(cf_snapshot_list(&l, &n, g_repo, NULL));
    assert_int_equal(n, 1);
    assert_string_equal(cf_snapshot_id(l[0]), id);
    cf_snapshot_list_free(l, n);
    assert_int_equal(cf_repo_warning_count(g_repo), warn0 + 3);
    bool named = false;
    for (size_t i = warn0; i < cf_repo_warning_count(g_repo); i++)
        named |= strstr(cf_repo_warning(g_repo, i), badjson) != NULL;
    assert_true(named);
    /* a storage failure is an error, not a warning */
    th_ok(cf_storage_mem_inject("snaps", "get", 1, CF_EIO));
    th_expect(cf_snapshot_list(&l, &n, g_repo, NULL), CF_EIO, NULL);
    assert_null(l);
    assert_int_equal(n, 0);
    th_ok(cf_storage_mem_inject("snaps", "get", 0, 0));
    th_ok(cf_storage_mem_inject("snaps", "list", 1, CF_EIO));
    th_expect(cf_snapshot_list(&l, &n, g_repo, NULL), CF_EIO, NULL);
    th_ok(cf_storage_mem_inject("snaps", "list", 0, 0));
    cf_storage_close(st);
}

/* ------------------------------------------------------------------ find */

static void test_find(void **state)
{
    (void)state;
    cf_snapshot *s = (cf_snapshot *)(uintptr_t)1;
    th_expect(cf_snapshot_find(&s, g_repo, "latest", NULL), CF_ENOTFOUND, NULL);
    assert_null(s);
    char ids[3][65];
    put_snap(T0 + 20, "alpha", "daily", ids[2]);
    put_snap(T0 + 10, "beta", NULL, ids[1]);
    put_snap(T0 + 0, "alpha", NULL, ids[0]);

    th_ok(cf_snapshot_find(&s, g_repo, "latest", NULL));
    assert_string_equal(cf_snapshot_id(s), ids[2]);
    cf_snapshot_free(s);
    cf_snapshot_filter f = {"beta", NULL, NULL};
    th_ok(cf_snapshot_find(&s, g_repo, "latest", &f));
    assert_string_equal(cf_snapshot_id(s), ids[1]);
    cf_snapshot_free(s);
    f.host = "gamma";
    th_expect(cf_snapshot_find(&s, g_repo, "latest", &f), CF_ENOTFOUND, NULL);

    for (int i = 0; i < 3; i++) {
        th_ok(cf_snapshot_find(&s, g_repo, ids[i], NULL));
        assert_string_equal(cf_snapshot_id(s), ids[i]);
        assert_true(cf_snapshot_time(s) == T0 + 10 * i);
        cf_snapshot_free(s);
        char prefix[9];
        memcpy(prefix, ids[i], 8);
        prefix[8] = '\0';
        th_ok(cf_snapshot_find(&s, g_repo, prefix, NULL));
        assert_string_equal(cf_snapshot_id(s), ids[i]);
        cf_snapshot_free(s);
    }
    /* the filter applies to "latest" only: an id outside it is still found */
    f.host = "beta";
    th_ok(cf_snapshot_find(&s, g_repo, ids[0], &f));
    cf_snapshot_free(s);

    /* an id of no snapshot */
    char none[65];
    memcpy(none, ids[0], 65);
    none[63] = none[63] == '0' ? '1' : '0';
    th_expect(cf_snapshot_find(&s, g_repo, none, NULL), CF_ENOTFOUND, NULL);
    assert_null(s);
    char prefix[9];
    for (int c = 0; c < 16; c++) { /* a prefix that matches none of the three */
        snprintf(prefix, sizeof(prefix), "%x%x%x%x%x%x%x%x", c, c, c, c, c, c, c, c);
        bool any = false;
        for (int i = 0; i < 3; i++)
            any |= strncmp(ids[i], prefix, 8) == 0;
        if (!any)
            break;
    }
    th_expect(cf_snapshot_find(&s, g_repo, prefix, NULL), CF_ENOTFOUND, NULL);

    /* malformed specs */
    const char *invalid[] = {"", "a", "abc", "ABCD", "zzzz", "12 4", "latest!", "Latest",
                             "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
                             "../../etc/passwd"};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        s = (cf_snapshot *)(uintptr_t)1;
        int rc = cf_snapshot_find(&s, g_repo, invalid[i], NULL);
        if (rc != CF_EINVAL)
            fail_msg("spec '%s': expected INVAL, got %s", invalid[i], cf_error_name(rc));
        assert_null(s);
    }
}

/*
 * Two snapshots whose ids share a 4-hex prefix: ids are SHA-256 of sealed bytes with a random
 * salt, so seal until two collide on 16 bits (birthday: a few hundred tries).
 */
static void test_find_ambiguous(void **state)
{
    (void)state;
    snap_doc d;
    cf_buf doc;
    cf_buf_init(&doc, 0);
    mk_doc(&d, T0, "h", NULL);
    th_ok(cf_snapshot__encode(&doc, &d.s));
    static uint8_t *sealed[65536];
    static size_t sealed_len[65536];
    char a[65] = "", b[65] = "";
    cf_storage *st = th_storage("mem:snaps");
    for (int tries = 0; tries < 20000 && !a[0]; tries++) {
        cf_buf s;
        cf_buf_init(&s, 0);
        th_ok(cf_repo__seal_object(&s, g_repo, CF_OBJ_SNAPSHOT, doc.data, doc.len));
        uint8_t h[32];
        char hex[65];
        cf_sha256(h, s.data, s.len);
        cf_hex_encode(hex, h, 32);
        unsigned key = (unsigned)h[0] << 8 | h[1];
        if (sealed[key]) {
            /* the earlier one */
            uint8_t h2[32];
            cf_sha256(h2, sealed[key], sealed_len[key]);
            cf_hex_encode(a, h2, 32);
            memcpy(b, hex, 65);
            char name[128];
            snprintf(name, sizeof(name), "snapshots/%s", a);
            th_ok(cf_storage_put(st, name, sealed[key], sealed_len[key], 0));
            snprintf(name, sizeof(name), "snapshots/%s", b);
            th_ok(cf_storage_put(st, name, s.data, s.len, 0));
            cf_buf_free(&s);
        } else {
            size_t n;
            sealed[key] = cf_buf_steal(&s, &n);
            sealed_len[key] = n;
        }
    }
    for (size_t i = 0; i < 65536; i++) {
        free(sealed[i]);
        sealed[i] = NULL;
    }
    assert_true(a[0] != '\0');
    assert_memory_equal(a, b, 4);
    cf_snapshot *s = (cf_snapshot *)(uintptr_t)1;
    char spec[65];
    memcpy(spec, a, 4);
    spec[4] = '\0';
    th_expect(cf_snapshot_find(&s, g_repo, spec, NULL), CF_EINVAL, "ambiguous");
    assert_null(s);
    /* the shortest distinguishing prefixes resolve */
    size_t k = 4;
    while (a[k] == b[k])
        k++;
    memcpy(spec, a, k + 1);
    spec[k + 1] = '\0';
    th_ok(cf_snapshot_find(&s, g_repo, spec, NULL));
    assert_string_equal(cf_snapshot_id(s), a);
    cf_snapshot_free(s);
    memcpy(spec, b, k + 1);
    th_ok(cf_snapshot_find(&s, g_repo, spec, NULL));
    assert_string_equal(cf_snapshot_id(s), b);
    cf_snapshot_free(s);
    th_ok(cf_snapshot_find(&s, g_repo, a, NULL));
    cf_snapshot_free(s);
    cf_storage_close(st);
    cf_buf_free(&doc);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_roundtrip),
        T(test_no_parent_no_tags),
        T(test_extra_fields_preserved),
        T(test_decode_damaged),
        T(test_stats_lenient),
        T(test_list_order_and_filter),
        T(test_list_same_time),
        T(test_list_skips_damaged),
        T(test_find),
        T(test_find_ambiguous),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
