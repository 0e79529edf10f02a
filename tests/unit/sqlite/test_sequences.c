/*
 * test_sequences.c - cf_sq__sequences: the shipped WAL frame objects of a generation, read
 * back from archive names; names that are not plain decimal sequence numbers are ignored.
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
#include "source/sqlite/sqlite_src.h"

#define URL "mem:sqseq"

static void test_sequence_names(void **state)
{
    (void)state;
    cf_storage_mem_reset();
    cf_repo *r = th_repo_new(URL);
    const char *names[] = {
        "db/g1/0000000002", "db/g1/0000000001", "db/g1/18446744073709551615",
        "db/g1/-1",         "db/g1/-7",         "db/g1/5x",
        "db/g1/-0",         "db/g2/0000000009", "db/g1/18446744073709551616",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        th_ok(cf_archive_put(r, CF_SQLITE_ARCHIVE_KIND, names[i], "x", 1));
    uint64_t *v = NULL;
    size_t n = 0;
    th_ok(cf_sq__sequences(&v, &n, r, "db", "g1"));
    assert_int_equal(n, 3);
    assert_true(v[0] == 1 && v[1] == 2 && v[2] == UINT64_MAX);
    free(v);
    cf_repo_close(r);
    cf_storage_mem_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
