/*
 * test_keys.c - creating and opening repositories (repo/repo.c, keys.c, config.c): passwords,
 * key slots (extra, damaged, missing), the authenticated config, and init's argument checks.
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
#include "compress/compress.h"

#define URL "mem:keys"

static cf_storage *g_st;

static int setup(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    cf_init_opts o = th_opts();
    th_ok(cf_repo_init(URL, TEST_PASSWORD, &o));
    g_st = th_storage(URL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_storage_close(g_st);
    g_st = NULL;
    cf_storage_mem_reset();
    return 0;
}

static int try_open(const char *password)
{
    cf_repo *r = (cf_repo *)(uintptr_t)1;
    int rc = cf_repo_open(&r, URL, password);
    if (rc == 0) {
        assert_non_null(r);
        cf_repo_close(r);
    } else {
        assert_null(r);
    }
    return rc;
}

static char *get_text(const char *name)
{
    uint8_t *data = NULL;
    size_t len = 0;
    th_ok(cf_storage_get(g_st, name, 0, 0, &data, &len));
    char *s = malloc(len + 1);
    assert_non_null(s);
    memcpy(s, data, len);
    s[len] = '\0';
    free(data);
    return s;
}

static void put_text(const char *name, const char *text)
{
    th_ok(cf_storage_put(g_st, name, text, strlen(text), 0));
}

/* The only key slot's name. */
static char *key_name(void)
{
    th_names l = th_list(g_st, "keys/");
    assert_int_equal(l.n, 1);
    char *n = cf_strdup(l.names[0]);
    th_names_free(&l);
    return n;
}

/* ------------------------------------------------------------------ passwords */

static void test_open_right_and_wrong_password(void **state)
{
    (void)state;
    cf_repo *r = NULL;
    th_ok(cf_repo_open(&r, URL, TEST_PASSWORD));
    assert_int_equal(r->cfg.version, 1);
    assert_int_equal(strlen(r->cfg.id), 64);
    assert_int_equal(r->cfg.pack_size, CF_PACK_SIZE_DEFAULT);
    assert_int_equal(r->cfg.compression_level, CF_COMP_LEVEL_DEFAULT);
    assert_int_equal(cf_repo_warning_count(r), 0);
    assert_string_equal(cf_repo_display(r), URL);
    cf_repo_close(r);
    th_expect(try_open("wrong password"), CF_EAUTH, NULL);
    th_expect(try_open(""), CF_EAUTH, NULL);
    th_expect(try_open(NULL), CF_EAUTH, NULL);
    th_expect(try_open(TEST_PASSWORD " "), CF_EAUTH, NULL);
    /* a password is bytes: a prefix is not enough */
    th_expect(try_open("correct horse battery stapl"), CF_EAUTH, NULL);
    th_ok(try_open(TEST_PASSWORD));
}

static void test_second_key_slot(void **state)
{
    (void)state;
    cf_repo *r = NULL;
    th_ok(cf_repo_open(&r, URL, TEST_PASSWORD));
    char id[65];
    cf_credential cred;
    memset(&cred, 0, sizeof(cred));
    cred.password = "second \xc3\xa9 password";
    cred.kdf_log_n = 10;
    th_ok(cf_key_add(r, &cred, CF_ROLE_ADMIN, id));
    assert_int_equal(strlen(id), 64);
    cred.kdf_log_n = 9; /* below the minimum scrypt cost */
    assert_true(cf_key_add(r, &cred, CF_ROLE_ADMIN, id) < 0);
    cred.kdf_log_n = 25;
    assert_true(cf_key_add(r, &cred, CF_ROLE_ADMIN, id) < 0);
    cf_repo_close(r);
    assert_int_equal(th_count(g_st, "keys/"), 2);
    th_ok(try_open("second \xc3\xa9 password"));
    th_ok(try_open(TEST_PASSWORD));
    th_expect(try_open("third"), CF_EAUTH, NULL);
    /* both open the same keys: data written through one is read through the other */
    cf_repo *a = NULL, *b = NULL;
    th_ok(cf_repo_open(&a, URL, TEST_PASSWORD));
    th_ok(cf_repo_open(&b, URL, "second \xc3\xa9 password"));
    assert_memory_equal(a->mk.mac, b->mk.mac, sizeof(a->mk.mac));
    assert_memory_equal(a->mk.data, b->mk.data, sizeof(a->mk.data));
    char name[65];
    th_ok(cf_repo__put_object(a, "snapshots", CF_OBJ_SNAPSHOT, "{}", 2, name));
    cf_buf buf;
    cf_buf_init(&buf, 0);
    th_ok(cf_repo__get_object(&buf, b, "snapshots", CF_OBJ_SNAPSHOT, name));
    assert_int_equal(buf.len, 2);
    cf_buf_free(&buf);
    cf_repo_close(a);
    cf_repo_close(b);
}

/* ------------------------------------------------------------------ damaged key slots */

static void test_damaged_slot_alongside(void **state)
{
    (void)state;
    put_text("keys/0000000000000000000000000000000000000000000000000000000000000000",
             "{this is not json");
    put_text("keys/1111111111111111111111111111111111111111111111111111111111111111",
             "{\"version\":1,\"kdf\":\"scrypt\",\"n\":1024,\"r\":8,\"p\":1,\"salt\":\"!!\","
             "\"data\":\"!!\"}");
    put_text("keys/2222222222222222222222222222222222222222222222222222222222222222",
             "{\"version\":7,\"kdf\":\"argon9\",\"n\":1024,\"r\":8,\"p\":1,\"salt\":\"\","
             "\"data\":\"\"}");
    put_text("keys/3333333333333333333333333333333333333333333333333333333333333333", "");
    th_ok(try_open(TEST_PASSWORD));
    /* with a wrong password: still a wrong password, not damage */
    th_expect(try_open("nope"), CF_EAUTH, "wrong password");
}

static void test_all_slots_damaged(void **state)
{
    (void)state;
    char *name = key_name();
    put_text(name, "[1,2,3]");
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, name);
    put_text("keys/extra", "\x01\x02\x03");
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, NULL);
    free(name);
}

/* Store the key slot doc under name with one field replaced (value is taken). */
static void put_edited(const char *name, const json_t *doc, const char *key, json_t *value)
{
    json_t *copy = json_deep_copy(doc);
    json_object_set_new(copy, key, value);
    char *text = json_dumps(copy, JSON_COMPACT);
    put_text(name, text);
    free(text);
    json_decref(copy);
}

static void test_slot_fields_damaged(void **state)
{
    (void)state;
    char *name = key_name();
    char *orig = get_text(name);
    json_error_t jerr;
    json_t *doc = json_loads(orig, 0, &jerr);
    assert_non_null(doc);
    /* each change makes the only slot unreadable (CORRUPT/UNSUPPORTED) or unopenable (AUTH) */
    struct {
        const char *key;
        json_t *value;
        int expect;
    } edits[] = {
        {"n", json_integer(1000), CF_ECORRUPT},          /* not a power of two */
        {"n", json_integer(1), CF_ECORRUPT},
        {"n", json_integer((json_int_t)1 << 30), CF_ECORRUPT},
        {"n", json_string("1024"), CF_ECORRUPT},
        {"r", json_integer(0), CF_ECORRUPT},
        {"r", json_integer(1000), CF_ECORRUPT},
        {"p", json_integer(0), CF_ECORRUPT},
        {"salt", json_string("c2hvcnQ="), CF_ECORRUPT}, /* 5 bytes: too short */
        {"salt", json_string("***"), CF_ECORRUPT},
        {"data", json_string("AAAA"), CF_ECORRUPT},
        {"kdf", json_string("pbkdf2"), CF_EUNSUPPORTED},
        {"version", json_integer(2), CF_EUNSUPPORTED},
        {"n", json_integer(2048), CF_EAUTH},                       /* another key derived */
        {"salt", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), CF_EAUTH},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        put_edited(name, doc, edits[i].key, edits[i].value);
        int rc = try_open(TEST_PASSWORD);
        /* a single slot that cannot be read at all makes the repository unreadable */
        int want = edits[i].expect == CF_EAUTH ? CF_EAUTH : CF_ECORRUPT;
        if (rc != want)
            fail_msg("edit %zu (%s): expected %s, got %s: %s", i, edits[i].key,
                     cf_error_name(want), cf_error_name(rc), cf_error_last()->message);
    }
    /* the encrypted key itself, one bit changed */
    char *d = cf_strdup(json_string_value(json_object_get(doc, "data")));
    d[10] = d[10] == 'A' ? 'B' : 'A';
    put_edited(name, doc, "data", json_string(d));
    th_expect(try_open(TEST_PASSWORD), CF_EAUTH, NULL);
    free(d);
    /* restored */
    put_text(name, orig);
    th_ok(try_open(TEST_PASSWORD));
    json_decref(doc);
    free(orig);
    free(name);
}

/* The listing reads the slots' plain fields: numbers out of range mark the slot damaged. */
#define SPARE "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
static void test_slot_list_generations(void **state)
{
    (void)state;
    char *name = key_name();
    char *orig = get_text(name);
    json_error_t jerr;
    json_t *doc = json_loads(orig, 0, &jerr);
    assert_non_null(doc);
    struct {
        const char *key;
        json_t *value;
        bool damaged;
    } edits[] = {
        {"generations", json_pack("[i,i]", 0, 7), false},
        {"generations", json_pack("[i]", -1), true},
        {"generations", json_pack("[I]", (json_int_t)UINT32_MAX + 1), true},
        {"generations", json_pack("[s]", "3"), true},
        {"current", json_integer(-2), true},
        {"current", json_integer((json_int_t)1 << 40), true},
        {"current", json_string("1"), true},
        {"current", json_integer((json_int_t)UINT32_MAX), false},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        put_edited(name, doc, edits[i].key, edits[i].value);
        cf_repo *r = NULL;
        put_text("keys/" SPARE, orig); /* an intact slot to open the repository with */
        th_ok(cf_repo_open(&r, URL, TEST_PASSWORD));
        cf_key_info *k = NULL;
        size_t n = 0;
        th_ok(cf_key_list(&k, &n, r));
        assert_int_equal(n, 2);
        const cf_key_info *e = strcmp(k[0].id, SPARE) == 0 ? &k[1] : &k[0];
        if ((strcmp(e->kdf, "damaged") == 0) != edits[i].damaged)
            fail_msg("edit %zu (%s): kdf '%s'", i, edits[i].key, e->kdf);
        if (!edits[i].damaged && strcmp(edits[i].key, "generations") == 0)
            assert_true(e->ngenerations == 2 && e->generations[1] == 7);
        if (!edits[i].damaged && strcmp(edits[i].key, "current") == 0)
            assert_int_equal(e->current_generation, UINT32_MAX);
        free(k);
        cf_repo_close(r);
    }
    json_decref(doc);
    free(orig);
    free(name);
}

static void test_no_key_slots(void **state)
{
    (void)state;
    char *name = key_name();
    th_ok(cf_storage_remove(g_st, name));
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, "no key slots");
    free(name);
}

/* ------------------------------------------------------------------ config */

static void test_config_altered(void **state)
{
    (void)state;
    char *orig = get_text("config");
    char *nl = strchr(orig, '\n');
    assert_non_null(nl);
    size_t body = (size_t)(nl - orig);
    /* change each digit of the JSON line (to another digit): all fail authentication or
     * validation */
    size_t changed = 0;
    for (size_t i = 0; i < body; i++) {
        if (orig[i] < '0' || orig[i] > '9')
            continue;
        char *c = cf_strdup(orig);
        c[i] = c[i] == '9' ? '0' : (char)(c[i] + 1);
        put_text("config", c);
        int rc = try_open(TEST_PASSWORD);
        if (rc != CF_ECORRUPT && rc != CF_EUNSUPPORTED)
            fail_msg("config with byte %zu changed ('%c'): expected CORRUPT, got %s", i, c[i],
                     cf_error_name(rc));
        free(c);
        changed++;
    }
    assert_true(changed > 20);
    /* a change in the MAC line */
    char *c = cf_strdup(orig);
    char *mac = nl + 1 + strlen("hmac-sha256:");
    c[mac - orig + 5] = mac[5] == 'a' ? 'b' : 'a';
    put_text("config", c);
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, "altered");
    free(c);
    /* the MAC line cut short, missing, or the whole config without its MAC */
    c = cf_strdup(orig);
    c[strlen(c) - 10] = '\0';
    put_text("config", c);
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, NULL);
    c[body + 1] = '\0';
    put_text("config", c);
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, NULL);
    c[body] = '\0';
    put_text("config", c);
    th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, NULL);
    free(c);
    /* not a config at all */
    const char *garbage[] = {"", "\n", "garbage", "{}\nhmac-sha256:00", "null\n",
                             "{\"version\":1}\nhmac-sha256:"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        put_text("config", garbage[i]);
        th_expect(try_open(TEST_PASSWORD), CF_ECORRUPT, NULL);
    }
    /* the original again */
    put_text("config", orig);
    th_ok(try_open(TEST_PASSWORD));
    free(orig);
}

static void test_config_from_future(void **state)
{
    (void)state;
    char *orig = get_text("config");
    char *v = strstr(orig, "\"version\":1");
    assert_non_null(v);
    v[10] = '2';
    put_text("config", orig);
    th_expect(try_open(TEST_PASSWORD), CF_EUNSUPPORTED, NULL);
    free(orig);
}

static void test_missing_config(void **state)
{
    (void)state;
    th_ok(cf_storage_remove(g_st, "config"));
    th_expect(try_open(TEST_PASSWORD), CF_ENOREPO, NULL);
    cf_repo *r = (cf_repo *)(uintptr_t)1;
    th_expect(cf_repo_open(&r, "mem:never-created", TEST_PASSWORD), CF_ENOREPO, NULL);
    assert_null(r);
}

/* ------------------------------------------------------------------ init */

static void test_init_twice(void **state)
{
    (void)state;
    cf_init_opts o = th_opts();
    th_expect(cf_repo_init(URL, TEST_PASSWORD, &o), CF_EEXISTS, NULL);
    th_expect(cf_repo_init(URL, "another", &o), CF_EEXISTS, NULL);
    /* nothing was added or replaced */
    assert_int_equal(th_count(g_st, "keys/"), 1);
    th_ok(try_open(TEST_PASSWORD));
    th_expect(try_open("another"), CF_EAUTH, NULL);
}

static void test_init_invalid(void **state)
{
    (void)state;
    cf_init_opts o = th_opts();
    th_expect(cf_repo_init("mem:fresh", "", &o), CF_EINVAL, NULL);
    th_expect(cf_repo_init("mem:fresh", NULL, &o), CF_EINVAL, NULL);
    cf_init_opts bad;
    bad = o;
    bad.kdf_log_n = 9;
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    bad = o;
    bad.kdf_log_n = 25;
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    bad = o;
    bad.pack_size = 1000;
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    bad = o;
    bad.pack_size = CF_PACK_SIZE_MAX + 1;
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    bad = o;
    bad.compression_level = 23;
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    bad = o;
    bad.chunk_min = 1 << 20;
    bad.chunk_avg = 1 << 19;
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    bad = o;
    bad.chunk_avg = 3 << 19; /* not a power of two */
    th_expect(cf_repo_init("mem:fresh", "pw", &bad), CF_EINVAL, NULL);
    /* none of these left a repository behind */
    cf_repo *r = NULL;
    int rc = cf_repo_open(&r, "mem:fresh", "pw");
    assert_true(rc == CF_ENOREPO);
    /* and a valid init there now works, with custom parameters kept */
    o.chunk_min = 4096;
    o.chunk_avg = 16384;
    o.chunk_max = 65536;
    o.pack_size = 1 << 20;
    o.compression_level = 0;
    th_ok(cf_repo_init("mem:fresh", "pw", &o));
    th_ok(cf_repo_open(&r, "mem:fresh", "pw"));
    assert_int_equal(r->cfg.chunk.min, 4096);
    assert_int_equal(r->cfg.chunk.avg, 16384);
    assert_int_equal(r->cfg.chunk.max, 65536);
    assert_int_equal(r->cfg.pack_size, 1 << 20);
    assert_int_equal(r->cfg.compression_level, 0);
    cf_repo_close(r);
}

/*
 * A failed init leaves nothing that breaks a later init: the key slot written before the
 * config put failed must not shadow the slot of the repository created by the retry. Slot
 * names are random and tried in listing order, so repeat over several stores.
 */
static void test_init_storage_failure(void **state)
{
    (void)state;
    cf_init_opts o = th_opts();
    for (int i = 0; i < 8; i++) {
        char url[48], store[32];
        snprintf(store, sizeof(store), "failing-%d", i);
        snprintf(url, sizeof(url), "mem:%s", store);
        /* create the store, then make puts fail: init fails, and leaves no config */
        cf_storage *st = NULL;
        th_ok(cf_storage_open(&st, url, CF_STORAGE_CREATE));
        th_ok(cf_storage_mem_inject(store, "put", 1, CF_EIO));
        th_expect(cf_repo_init(url, "pw", &o), CF_EIO, NULL);
        th_ok(cf_storage_mem_inject(store, "put", 2, CF_EIO)); /* key slot ok, config fails */
        th_expect(cf_repo_init(url, "pw", &o), CF_EIO, NULL);
        th_ok(cf_storage_mem_inject(store, "put", 0, 0));
        cf_repo *r = NULL;
        th_expect(cf_repo_open(&r, url, "pw"), CF_ENOREPO, NULL);
        /* the retry succeeds, and the repository it created opens */
        th_ok(cf_repo_init(url, "pw", &o));
        int rc = cf_repo_open(&r, url, "pw");
        if (rc != 0)
            fail_msg("attempt %d: repository created by a retried init does not open: %s (%s); "
                     "%zu key slots",
                     i, cf_error_name(rc), cf_error_last()->message, th_count(st, "keys/"));
        cf_repo_close(r);
        cf_storage_close(st);
    }
}

static void test_open_storage_failure(void **state)
{
    (void)state;
    cf_repo *r = NULL;
    th_ok(cf_storage_mem_inject("keys", "list", 1, CF_EIO));
    th_expect(cf_repo_open(&r, URL, TEST_PASSWORD), CF_EIO, NULL);
    assert_null(r);
    th_ok(cf_storage_mem_inject("keys", "list", 0, 0));
    th_ok(cf_storage_mem_inject("keys", "get", 1, CF_EIO));
    assert_true(cf_repo_open(&r, URL, TEST_PASSWORD) < 0);
    assert_null(r);
    th_ok(cf_storage_mem_inject("keys", "get", 0, 0));
    th_ok(try_open(TEST_PASSWORD));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_right_and_wrong_password),
        T(test_second_key_slot),
        T(test_damaged_slot_alongside),
        T(test_all_slots_damaged),
        T(test_slot_fields_damaged),
        T(test_slot_list_generations),
        T(test_no_key_slots),
        T(test_config_altered),
        T(test_config_from_future),
        T(test_missing_config),
        T(test_init_twice),
        T(test_init_invalid),
        T(test_init_storage_failure),
        T(test_open_storage_failure),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
