/*
 * fuzz_index.c - cf_index__decode of hostile index files into a fresh index. Failures must be
 * CF_ECORRUPT or CF_EUNSUPPORTED; a decoded index must be self-consistent (every entry in a
 * known pack, retrievable by id) and survive an encode/decode round trip unchanged.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every location in a is in b (same blob, pack id, offset and fields), and the counts match:
 * a blob stored in two places has two locations. Inputs are small, so a plain scan will do. */
static void check_same(cf_index *a, cf_index *b)
{
    if (cf_index__count(a) != cf_index__count(b))
        abort();
    size_t na = cf_index__positions(a), nb = cf_index__positions(b);
    for (size_t i = 0; i < na; i++) {
        cf_index_entry e;
        if (!cf_index__at(a, i, &e))
            continue;
        bool found = false;
        for (size_t j = 0; j < nb && !found; j++) {
            cf_index_entry f;
            if (!cf_index__at(b, j, &f))
                continue;
            found = cf_id_eq(&e.id, &f.id) && f.offset == e.offset && f.length == e.length &&
                    f.raw_len == e.raw_len && f.type == e.type && f.comp == e.comp &&
                    cf_id_eq(&a->packs[e.pack], &b->packs[f.pack]);
        }
        if (!found)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_index ix;
    cf_index__init(&ix);
    int rc = cf_index__decode(&ix, data, size, "index/fuzz");
    if (rc != 0) {
        if (rc != CF_ECORRUPT && rc != CF_EUNSUPPORTED)
            abort();
        cf_index__free(&ix);
        return 0;
    }
    size_t n = 0;
    size_t npos = cf_index__positions(&ix);
    for (size_t i = 0; i < npos; i++) {
        cf_index_entry e;
        if (!cf_index__at(&ix, i, &e))
            continue;
        n++;
        if (e.pack >= ix.npacks || e.type > CF_BLOB_TREE || e.length < CF_SEAL_OVERHEAD)
            abort();
        /* lookups find the blob (maybe at another of its locations) */
        const cf_index_entry *f = cf_index__get(&ix, &e.id);
        if (!f || !cf_id_eq(&f->id, &e.id))
            abort();
    }
    if (n != cf_index__count(&ix))
        abort();
    cf_buf b;
    cf_buf_init(&b, 0);
    if (cf_index__encode(&b, &ix, NULL, 0) != 0)
        abort();
    cf_index back;
    cf_index__init(&back);
    if (cf_index__decode(&back, b.data, b.len, "index/fuzz-again") != 0)
        abort();
    check_same(&ix, &back);
    cf_index__free(&back);
    cf_buf_free(&b);
    cf_index__free(&ix);
    return 0;
}
