/*
 * fuzz_snapshot.c - cf_snapshot__decode of hostile snapshot documents. Failures must be
 * CF_ECORRUPT; a decoded snapshot must encode, and decode again to the same snapshot.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_str(const char *a, const char *b)
{
    if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_snapshot *s = NULL;
    int rc = cf_snapshot__decode(&s, data, size, "fuzz");
    if (rc != 0) {
        if (rc != CF_ECORRUPT || s != NULL)
            abort();
        return 0;
    }
    /* accessors on whatever was accepted */
    if (strlen(cf_snapshot_tree(s)) != 64 || !cf_snapshot_host(s) || !cf_snapshot_source_kind(s))
        abort();
    for (size_t i = 0; i < cf_snapshot_path_count(s); i++)
        if (!cf_snapshot_path(s, i))
            abort();
    char *json = cf_snapshot_to_json(s);
    if (!json)
        abort();
    free(json);
    cf_buf b;
    cf_buf_init(&b, 0);
    if (cf_snapshot__encode(&b, s) != 0)
        abort();
    cf_snapshot *t = NULL;
    if (cf_snapshot__decode(&t, b.data, b.len, "fuzz") != 0)
        abort(); /* a snapshot coffer accepted, then wrote, cannot be read back */
    if (t->time != s->time || t->type != s->type || t->npaths != s->npaths ||
        t->ntags != s->ntags || memcmp(t->tree.b, s->tree.b, 32) != 0)
        abort();
    same_str(t->host, s->host);
    same_str(t->username, s->username);
    same_str(t->parent, s->parent);
    same_str(t->source_kind, s->source_kind);
    same_str(t->source_name, s->source_name);
    for (size_t i = 0; i < s->npaths; i++)
        same_str(t->paths[i], s->paths[i]);
    for (size_t i = 0; i < s->ntags; i++)
        same_str(t->tags[i], s->tags[i]);
    if (memcmp(&t->stats, &s->stats, offsetof(cf_backup_stats, seconds)) != 0)
        abort();
    if (!json_equal(t->extra, s->extra))
        abort();
    cf_snapshot_free(t);
    cf_buf_free(&b);
    cf_snapshot_free(s);
    return 0;
}
