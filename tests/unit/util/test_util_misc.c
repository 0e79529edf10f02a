/*
 * test_util_misc.c - small util helpers shared by the sources: the stream tail window
 * (cf_tail_keep), argv vectors (cf_argv) and array growth (cf_array_grow).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/util.h"

static void test_tail_keep(void **state)
{
    (void)state;
    char tail[9];
    size_t len = 0;
    cf_tail_keep(tail, &len, 8, "abc", 3);
    assert_int_equal(len, 3);
    assert_memory_equal(tail, "abc", 3);
    cf_tail_keep(tail, &len, 8, "defgh", 5); /* exactly full */
    assert_int_equal(len, 8);
    assert_memory_equal(tail, "abcdefgh", 8);
    cf_tail_keep(tail, &len, 8, "ij", 2); /* the oldest two go */
    assert_int_equal(len, 8);
    assert_memory_equal(tail, "cdefghij", 8);
    cf_tail_keep(tail, &len, 8, "0123456789", 10); /* a piece longer than the window */
    assert_int_equal(len, 8);
    assert_memory_equal(tail, "23456789", 8);
    cf_tail_keep(tail, &len, 8, "", 0);
    assert_int_equal(len, 8);
    assert_memory_equal(tail, "23456789", 8);
}

static void test_argv(void **state)
{
    (void)state;
    cf_argv a = {0};
    assert_int_equal(cf_argv_add(&a, "prog"), 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(cf_argv_addf(&a, "--n=%d", i), 0);
    assert_int_equal(a.n, 41);
    assert_string_equal(a.v[0], "prog");
    assert_string_equal(a.v[40], "--n=39");
    assert_null(a.v[41]); /* NULL-terminated for execv */
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(cf_argv_addf(&a, "%s", big), CF_EINVAL);
    assert_int_equal(a.n, 41);
    cf_argv_free(&a);
    assert_int_equal(a.n, 0);
    assert_null(a.v);
}

static void test_array_grow(void **state)
{
    (void)state;
    uint64_t *v = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < 1000; i++) {
        assert_int_equal(cf_array_grow(&v, &cap, i, sizeof(*v)), 0);
        assert_true(cap > i);
        v[i] = i * 3;
    }
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(v[i], i * 3); /* kept across every reallocation */
    size_t before = cap;
    assert_int_equal(cf_array_grow(&v, &cap, 10, sizeof(*v)), 0); /* room already */
    assert_int_equal(cap, before);
    /* a size that cannot be allocated leaves the array as it was */
    assert_int_equal(cf_array_grow(&v, &cap, SIZE_MAX / 4, sizeof(*v)), CF_ENOMEM);
    assert_int_equal(cap, before);
    assert_int_equal(v[999], 999 * 3);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tail_keep),
        cmocka_unit_test(test_argv),
        cmocka_unit_test(test_array_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
