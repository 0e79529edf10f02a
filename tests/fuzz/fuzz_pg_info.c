/*
 * fuzz_pg_info.c - cf_pg__info_from_json of hostile snapshot documents (the "postgres"
 * object of a base backup, read back to choose a backup for recovery). Failures must be
 * CF_ENOTFOUND (not a base backup) or CF_ECORRUPT; accepted fields must be usable, and
 * numbers must be taken as written (never wrapped from a negative or too large value).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "source/postgres/pg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The field as written in the document (an integer or decimal text) equals v. */
static void same_number(const char *doc, const char *key, uint64_t v)
{
    json_t *root = json_loads(doc, 0, NULL);
    json_t *f = json_object_get(json_object_get(root, "postgres"), key);
    char want[24], got[24];
    snprintf(want, sizeof(want), "%llu", (unsigned long long)v);
    if (json_is_integer(f))
        snprintf(got, sizeof(got), "%lld", (long long)json_integer_value(f));
    else if (json_is_string(f)) {
        const char *t = json_string_value(f);
        while (t[0] == '0' && t[1] != '\0') /* leading zeros are allowed */
            t++;
        snprintf(got, sizeof(got), "%s", t);
    }
    else
        snprintf(got, sizeof(got), "0");
    if (root && strcmp(want, got) != 0)
        abort();
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    cf_pg_base_info info;
    int rc = cf_pg__info_from_json(&info, s);
    if (rc != 0 && rc != CF_ENOTFOUND && rc != CF_ECORRUPT)
        abort();
    if (rc == 0) {
        if (info.timeline == 0 || strlen(info.start_wal) != 24 || strlen(info.stop_wal) != 24 ||
            !cf_pg__valid_segsize(info.wal_segment_size))
            abort();
        if (strnlen(info.cluster, sizeof(info.cluster)) == sizeof(info.cluster) ||
            strnlen(info.label, sizeof(info.label)) == sizeof(info.label) ||
            strnlen(info.snapshot_id, sizeof(info.snapshot_id)) == sizeof(info.snapshot_id))
            abort();
        same_number(s, "timeline", info.timeline);
        same_number(s, "system_identifier", info.system_identifier);
        same_number(s, "server_version", info.server_version);
        same_number(s, "next_xid", info.next_xid);
    }
    cf_error_clear();
    free(s);
    return 0;
}
