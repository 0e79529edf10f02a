/*
 * test_http_redact.c - the scrubbing of server text before it reaches a message: secrets
 * replaced wherever and however often they occur, SAS signatures replaced, secrets too short
 * to scrub safely ignored, and a secret that occurs in the mark itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "storage/http/http.h"
#include "util/util.h"

static char *scrub(const char *const secrets[CF_HTTP_SECRETS_MAX], const char *text)
{
    cf_http_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    for (int i = 0; i < CF_HTTP_SECRETS_MAX; i++)
        cfg.secrets[i] = secrets[i];
    cf_http *h = NULL;
    assert_int_equal(cf_http_new(&h, &cfg), 0);
    char *t = cf_strdup(text);
    assert_non_null(t);
    cf_http_redact(h, &t);
    cf_http_free(h);
    assert_non_null(t);
    return t;
}

static void expect(const char *const secrets[CF_HTTP_SECRETS_MAX], const char *text,
                   const char *want)
{
    char *got = scrub(secrets, text);
    if (strcmp(got, want) != 0)
        fail_msg("scrubbing '%s' gave '%s', want '%s'", text, got, want);
    free(got);
}

static void test_secrets_replaced(void **state)
{
    (void)state;
    const char *const s[CF_HTTP_SECRETS_MAX] = {"wJalrXUtnFEMI/K7MDENG", "FwoGZXIvYXdzEJr", NULL,
                                                NULL};
    expect(s, "The key wJalrXUtnFEMI/K7MDENG is wrong", "The key <redacted> is wrong");
    expect(s, "wJalrXUtnFEMI/K7MDENGwJalrXUtnFEMI/K7MDENG and FwoGZXIvYXdzEJr.",
           "<redacted><redacted> and <redacted>.");
    expect(s, "nothing secret here", "nothing secret here");
    expect(s, "", "");
}

static void test_sas_signature_replaced(void **state)
{
    (void)state;
    const char *const s[CF_HTTP_SECRETS_MAX] = {NULL, NULL, NULL, NULL};
    expect(s, "GET /c/b?sv=2021-08-06&sig=AbC%2Bd3f%3D&se=2026 failed",
           "GET /c/b?sv=2021-08-06&sig=<redacted>&se=2026 failed");
    expect(s, "sig=one sig=two", "sig=<redacted> sig=<redacted>");
    expect(s, "a sig= with no value", "a sig= with no value");
}

static void test_short_and_overlapping_secrets(void **state)
{
    (void)state;
    /* under 4 bytes: not scrubbed (it would mangle ordinary words) */
    const char *const short_s[CF_HTTP_SECRETS_MAX] = {"abc", NULL, NULL, NULL};
    expect(short_s, "abc abc", "abc abc");
    /* a secret that occurs in the mark: replaced once per occurrence, no endless loop */
    const char *const mark_s[CF_HTTP_SECRETS_MAX] = {"edac", "<redacted>", NULL, NULL};
    expect(mark_s, "xedacx", "x<redacted>x");
    /* a secret containing another one */
    const char *const nested[CF_HTTP_SECRETS_MAX] = {"SECRETKEY", "KEY1", NULL, NULL};
    expect(nested, "SECRETKEY1", "<redacted>1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secrets_replaced),
        cmocka_unit_test(test_sas_signature_replaced),
        cmocka_unit_test(test_short_and_overlapping_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
