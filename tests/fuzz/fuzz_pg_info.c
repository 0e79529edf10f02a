/*
 * fuzz_pg_info.c - cf_pg__info_from_json of hostile snapshot documents (the "postgres"
 * object of a base backup, read back to choose a backup for recovery). Failures must be
 * CF_ENOTFOUND (not a base backup) or CF_ECORRUPT; accepted fields must be usable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "source/postgres/pg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    }
    cf_error_clear();
    free(s);
    return 0;
}
