/*
 * fuzz_tree.c - cf_tree__decode on hostile input. Anything else than success must be
 * CF_ECORRUPT; whatever decodes must re-encode to exactly the input (the encoding is
 * canonical: one byte string per tree), and every name must be a valid file name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_tree t;
    cf_tree__init(&t);
    int rc = cf_tree__decode(&t, data, size);
    if (rc != 0) {
        if (rc != CF_ECORRUPT || t.count != 0 || t.nodes != NULL)
            abort();
        return 0;
    }
    for (size_t i = 0; i < t.count; i++) {
        const cf_node *n = &t.nodes[i];
        if (n->name_len == 0 || memchr(n->name, '/', n->name_len) || memchr(n->name, 0, n->name_len))
            abort();
        if ((n->name_len == 1 && n->name[0] == '.') ||
            (n->name_len == 2 && n->name[0] == '.' && n->name[1] == '.'))
            abort();
        if (n->type < CF_NODE_FILE || n->type > CF_NODE_SOCKET)
            abort();
        /* sorted, no duplicates: find returns this very node */
        if (n->name[n->name_len] == '\0' && cf_tree__find(&t, n->name) != n)
            abort();
    }
    cf_buf b;
    cf_buf_init(&b, 0);
    if (cf_tree__encode(&b, &t) != 0)
        abort();
    if (b.len != size || memcmp(b.data, data, size) != 0)
        abort(); /* decode accepted bytes that do not describe the tree it returned */
    cf_buf_free(&b);
    cf_tree__free(&t);
    return 0;
}
