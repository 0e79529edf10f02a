/*
 * fuzz_mariadb_meta.c - what the MariaDB source parses: the binlog position in a dump's
 * header (mariadb-dump's output), binlog file names listed from the archive, and the
 * "mariadb" object of snapshot documents. Nothing may crash; what is accepted must be usable.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/mariadb/my.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void bounded(const char *s, size_t cap)
{
    if (strnlen(s, cap) == cap)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_mariadb_info info;
    memset(&info, 0, sizeof(info));
    if (cf_my__parse_position(&info, data, size)) {
        if (!info.binlog_file[0] || strchr(info.binlog_file, '/'))
            abort();
        /* the position is the header's decimal digits: never a wrapped "-1" or a saturated
         * overflow */
        char *text = strndup((const char *)data, size);
        const char *p = text ? strstr(text, "MASTER_LOG_POS=") : NULL;
        if (!p)
            abort();
        p += strlen("MASTER_LOG_POS=");
        while (*p == '0' && p[1] >= '0' && p[1] <= '9')
            p++;
        size_t nd = strspn(p, "0123456789");
        char want[32];
        snprintf(want, sizeof(want), "%llu", (unsigned long long)info.binlog_pos);
        bool same = nd == strlen(want) && strncmp(p, want, nd) == 0;
        free(text);
        if (!same)
            abort();
    }
    bounded(info.binlog_file, sizeof(info.binlog_file));
    bounded(info.gtid, sizeof(info.gtid));

    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t base = 0;
    uint64_t index = 0;
    if (cf_my__split_binlog_name(s, &base, &index)) {
        if (base == 0 || base >= strlen(s) || s[base] != '.')
            abort();
    }
    int rc = cf_my__info_from_json(&info, s);
    if (rc != 0 && rc != CF_ENOTFOUND)
        abort();
    if (rc == 0) {
        bounded(info.server, sizeof(info.server));
        bounded(info.databases, sizeof(info.databases));
        bounded(info.snapshot_id, sizeof(info.snapshot_id));
        if (info.has_binlog && (!info.binlog_file[0] || strchr(info.binlog_file, '/')))
            abort();
    }
    cf_error_clear();
    free(s);
    return 0;
}
