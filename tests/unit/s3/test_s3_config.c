/*
 * test_s3_config.c - S3 location parsing (endpoints, buckets, prefixes, options), credential
 * and region lookup (environment, profiles, INI files), and the retry policy's backoff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/retry/backoff.h"
#include "storage/s3/s3.h"
#include "util/util.h"

static void clear_env(void)
{
    const char *vars[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                          "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                          "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                          "COFFER_S3_STORAGE_CLASS", "COFFER_S3_CONDITIONAL_PUT", "COFFER_RETRIES"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("HOME", "/nonexistent-coffer-test-home", 1);
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static void test_path_style(void **state)
{
    (void)state;
    cf_s3_location l;
    assert_int_equal(cf_s3_location_parse(&l, "http://127.0.0.1:9000/bucket/a/b/"), 0);
    assert_string_equal(l.scheme, "http");
    assert_string_equal(l.host, "127.0.0.1:9000");
    assert_string_equal(l.bucket, "bucket");
    assert_string_equal(l.prefix, "a/b/");
    assert_true(l.path_style);
    assert_false(l.aws);
    assert_int_equal(l.cond, CF_S3_COND_AUTO);
    /* set_region leaves custom endpoints alone */
    assert_int_equal(cf_s3_location_set_region(&l, "eu-west-1"), 0);
    assert_string_equal(l.host, "127.0.0.1:9000");
    cf_s3_location_free(&l);

    assert_int_equal(cf_s3_location_parse(&l, "https://storage.googleapis.com/my_bucket"), 0);
    assert_string_equal(l.scheme, "https");
    assert_string_equal(l.prefix, "");
    assert_string_equal(l.bucket, "my_bucket");
    cf_s3_location_free(&l);

    /* AWS's own endpoints are known to honour conditional writes */
    assert_int_equal(cf_s3_location_parse(&l, "https://s3.eu-west-1.amazonaws.com/b-1/x"), 0);
    assert_int_equal(l.cond, CF_S3_COND_YES);
    cf_s3_location_free(&l);
}

static void test_aws_form(void **state)
{
    (void)state;
    cf_s3_location l;
    assert_int_equal(cf_s3_location_parse(&l, "my-bucket/backups/host1"), 0);
    assert_true(l.aws);
    assert_string_equal(l.bucket, "my-bucket");
    assert_string_equal(l.prefix, "backups/host1/");
    assert_int_equal(l.cond, CF_S3_COND_YES);
    assert_int_equal(cf_s3_location_set_region(&l, "eu-central-1"), 0);
    assert_string_equal(l.host, "my-bucket.s3.eu-central-1.amazonaws.com");
    assert_false(l.path_style);
    cf_s3_location_free(&l);

    /* dots in the name: path style on the regional endpoint */
    assert_int_equal(cf_s3_location_parse(&l, "my.dotted.bucket"), 0);
    assert_int_equal(cf_s3_location_set_region(&l, "us-east-1"), 0);
    assert_string_equal(l.host, "s3.us-east-1.amazonaws.com");
    assert_true(l.path_style);
    cf_s3_location_free(&l);
}

static void test_options(void **state)
{
    (void)state;
    cf_s3_location l;
    assert_int_equal(cf_s3_location_parse(&l, "b-1/p?storage_class=STANDARD_IA&sse=aws%3Akms&"
                                              "sse_kms_key_id=alias/backup&object_lock=COMPLIANCE&"
                                              "retain_days=30&region=eu-west-2&conditional_put=no"),
                     0);
    assert_string_equal(l.storage_class, "STANDARD_IA");
    assert_string_equal(l.sse, "aws:kms");
    assert_string_equal(l.sse_kms_key_id, "alias/backup");
    assert_string_equal(l.object_lock, "COMPLIANCE");
    assert_int_equal(l.retain_days, 30);
    assert_string_equal(l.lock_exclude, "locks/"); /* lock files must stay deletable */
    assert_string_equal(l.region, "eu-west-2");
    assert_int_equal(l.cond, CF_S3_COND_NO);
    assert_string_equal(l.prefix, "p/");
    cf_s3_location_free(&l);

    setenv("COFFER_S3_STORAGE_CLASS", "GLACIER_IR", 1);
    setenv("COFFER_S3_CONDITIONAL_PUT", "yes", 1);
    assert_int_equal(cf_s3_location_parse(&l, "http://h:1/b"), 0);
    assert_string_equal(l.storage_class, "GLACIER_IR");
    assert_int_equal(l.cond, CF_S3_COND_YES);
    cf_s3_location_free(&l);
    /* the url wins over the environment */
    assert_int_equal(cf_s3_location_parse(&l, "http://h:1/b?storage_class=STANDARD&conditional_put=auto"), 0);
    assert_string_equal(l.storage_class, "STANDARD");
    assert_int_equal(l.cond, CF_S3_COND_AUTO);
    cf_s3_location_free(&l);
    clear_env();
}

static void expect_bad(const char *loc, const char *needle)
{
    cf_s3_location l;
    int rc = cf_s3_location_parse(&l, loc);
    if (rc != CF_EINVAL)
        fail_msg("'%s': rc %d, expected CF_EINVAL", loc, rc);
    const char *msg = cf_error_last()->message;
    if (needle && !strstr(msg, needle))
        fail_msg("'%s': message '%s' lacks '%s'", loc, msg, needle);
    assert_null(l.bucket);
}

static void test_invalid(void **state)
{
    (void)state;
    expect_bad("", NULL);
    expect_bad("http://127.0.0.1:9000", "bucket");
    expect_bad("http:///b", "host");
    expect_bad("ftp://h/b", "http");
    expect_bad("Upper_Case", "AWS bucket");
    expect_bad("ab", "3 to 63");
    expect_bad("-bucket", "starts and ends");
    expect_bad("http://h/b/a/../c", "'..'");
    expect_bad("http://h/b/a//c", "'//'");
    expect_bad("http://h/b/.tmp-x", ".tmp-");
    expect_bad("http://h/b?colour=red", "unknown option");
    expect_bad("http://h/b?object_lock=COMPLIANCE", "retain_days");
    expect_bad("http://h/b?retain_days=3", "object_lock");
    expect_bad("http://h/b?object_lock=FOREVER&retain_days=3", "COMPLIANCE");
    expect_bad("http://h/b?object_lock=GOVERNANCE&retain_days=0", "1 to 36500");
    expect_bad("http://h/b?sse=rot13", "AES256");
    expect_bad("http://h/b?sse_kms_key_id=k", "aws:kms");
    expect_bad("http://h/b?region=a%0Ab", "option value");
    expect_bad("http://h/b?region=eu&region=us", "twice");
    expect_bad("http://h/b?storage_class", "name=value");
    expect_bad("http://h/b c", "space");

    /* Credentials in the url are refused without being repeated. */
    cf_s3_location l;
    assert_int_equal(cf_s3_location_parse(&l, "https://AKID:SuperSecret123@host/b"), CF_EINVAL);
    assert_null(strstr(cf_error_last()->message, "SuperSecret123"));
    assert_null(strstr(cf_error_last()->message, "AKID"));
    assert_non_null(strstr(cf_error_last()->message, "credentials"));
}

static char *write_temp(const char *text)
{
    char tmpl[] = "/tmp/coffer-s3-test-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return cf_strdup(tmpl);
}

static void test_creds_env(void **state)
{
    (void)state;
    cf_s3_creds c;
    /* nothing anywhere */
    assert_int_equal(cf_s3_creds_load(&c), CF_ESTORAGE_AUTH);
    assert_non_null(strstr(cf_error_last()->message, "AWS_ACCESS_KEY_ID"));

    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    assert_int_equal(cf_s3_creds_load(&c), 0);
    assert_string_equal(c.access_key, "AKIDENV");
    assert_string_equal(c.secret_key, "envsecret");
    assert_null(c.session_token);
    assert_string_equal(c.region, "us-east-1");
    cf_s3_creds_free(&c);

    setenv("AWS_SESSION_TOKEN", "tok", 1);
    setenv("AWS_DEFAULT_REGION", "ap-south-1", 1);
    assert_int_equal(cf_s3_creds_load(&c), 0);
    assert_string_equal(c.session_token, "tok");
    assert_string_equal(c.region, "ap-south-1");
    cf_s3_creds_free(&c);
    setenv("AWS_REGION", "eu-north-1", 1); /* AWS_REGION wins */
    assert_int_equal(cf_s3_creds_load(&c), 0);
    assert_string_equal(c.region, "eu-north-1");
    cf_s3_creds_free(&c);
    clear_env();
}

static void test_creds_profile(void **state)
{
    (void)state;
    char *cred = write_temp("# comment\n[default]\naws_access_key_id = AKIDDEF\n"
                            "aws_secret_access_key=defsecret\n\n"
                            "[work]\r\n ; another comment\r\n  aws_access_key_id = AKIDWORK \r\n"
                            "aws_secret_access_key = work/secret+key\r\naws_session_token=\r\n"
                            "[empty]\naws_access_key_id =\n");
    char *conf = write_temp("[default]\nregion = eu-west-3\n[profile work]\nregion=sa-east-1\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", cred, 1);
    setenv("AWS_CONFIG_FILE", conf, 1);
    cf_s3_creds c;
    assert_int_equal(cf_s3_creds_load(&c), 0);
    assert_string_equal(c.access_key, "AKIDDEF");
    assert_string_equal(c.secret_key, "defsecret");
    assert_string_equal(c.region, "eu-west-3");
    assert_non_null(strstr(c.source, "profile 'default'"));
    cf_s3_creds_free(&c);

    setenv("AWS_PROFILE", "work", 1);
    assert_int_equal(cf_s3_creds_load(&c), 0);
    assert_string_equal(c.access_key, "AKIDWORK");
    assert_string_equal(c.secret_key, "work/secret+key");
    assert_null(c.session_token);
    assert_string_equal(c.region, "sa-east-1");
    cf_s3_creds_free(&c);

    setenv("AWS_PROFILE", "empty", 1);
    assert_int_equal(cf_s3_creds_load(&c), CF_ESTORAGE_AUTH);
    assert_non_null(strstr(cf_error_last()->message, "'empty'"));
    setenv("AWS_PROFILE", "nosuch", 1);
    assert_int_equal(cf_s3_creds_load(&c), CF_ESTORAGE_AUTH);

    /* environment keys win over a profile */
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    assert_int_equal(cf_s3_creds_load(&c), 0);
    assert_string_equal(c.access_key, "AKIDENV");
    cf_s3_creds_free(&c);

    unlink(cred);
    unlink(conf);
    free(cred);
    free(conf);
    clear_env();

    char *v = cf_s3_ini_get("[a]\nk=1\n[b]\nk = 2 \n", "b", "k");
    assert_string_equal(v, "2");
    free(v);
    assert_null(cf_s3_ini_get("[a]\nk=1\n", "b", "k"));
    assert_null(cf_s3_ini_get("k=1\n", "a", "k"));
}

static void test_backoff(void **state)
{
    (void)state;
    cf_retry_policy p;
    cf_retry_policy_from_env(&p);
    assert_int_equal(p.attempts, 6);
    assert_int_equal(p.base_ms, 100);
    assert_int_equal(p.cap_ms, 10000);
    setenv("COFFER_RETRIES", "3", 1);
    cf_retry_policy_from_env(&p);
    assert_int_equal(p.attempts, 3);
    setenv("COFFER_RETRIES", "zero", 1);
    cf_retry_policy_from_env(&p);
    assert_int_equal(p.attempts, 6);
    setenv("COFFER_RETRIES", "0", 1);
    cf_retry_policy_from_env(&p);
    assert_int_equal(p.attempts, 6);
    unsetenv("COFFER_RETRIES");

    /* Full jitter: uniform in [0, min(cap, base*2^(n-1))]; over many draws both ends of the
     * range are reached and nothing exceeds it. */
    for (unsigned retry = 1; retry <= 12; retry++) {
        uint64_t ceiling = 100u << (retry - 1);
        if (ceiling > 10000)
            ceiling = 10000;
        uint32_t lo = UINT32_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint32_t d = cf_retry_delay_ms(&p, retry, 0);
            assert_true(d <= ceiling);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_true(lo < ceiling / 4);
        assert_true(hi > ceiling * 3 / 4);
    }
    /* A server's Retry-After is honoured, within the cap. */
    assert_true(cf_retry_delay_ms(&p, 1, 2000) >= 2000);
    assert_int_equal(cf_retry_delay_ms(&p, 1, 60000), 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_path_style, setup),
        cmocka_unit_test_setup(test_aws_form, setup),
        cmocka_unit_test_setup(test_options, setup),
        cmocka_unit_test_setup(test_invalid, setup),
        cmocka_unit_test_setup(test_creds_env, setup),
        cmocka_unit_test_setup(test_creds_profile, setup),
        cmocka_unit_test_setup(test_backoff, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
