/*
 * fuzz_pg_meta.c - the PostgreSQL texts coffer parses back from the WAL archive or from
 * pg_basebackup's stream: WAL file names, LSNs, timeline history files, backup_label with the
 * tail of backup_manifest, and backup history files. Nothing may crash; what is accepted
 * must be self-consistent (a name re-formats to itself, an LSN to the same value, history
 * timelines are positive and increasing).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/postgres/pg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void names(const char *s)
{
    cf_pg__wal_name w;
    cf_pg__wal_kind k = cf_pg__wal_parse(&w, s);
    if (k != w.kind)
        abort();
    if (k == CF_PG_WAL_SEGMENT && w.seg < cf_pg__segs_per_id(CF_PG_SEG_DEFAULT)) {
        char again[25];
        cf_pg__seg_name(again, w.tli, cf_pg__segno(&w, CF_PG_SEG_DEFAULT), CF_PG_SEG_DEFAULT);
        if (strcmp(again, s) != 0)
            abort();
    }
    if (k == CF_PG_WAL_HISTORY && strlen(s) != 16)
        abort();
    if (k == CF_PG_WAL_BACKUP && strlen(s) != 40)
        abort();
}

static void lsn(const char *s)
{
    uint64_t v = 0, v2 = 0;
    if (cf_pg_lsn_parse(&v, s) != 0)
        return;
    char text[20];
    cf_pg_lsn_format(text, v);
    if (cf_pg_lsn_parse(&v2, text) != 0 || v2 != v)
        abort();
}

static void history(const char *s)
{
    char *copy = strdup(s);
    if (!copy)
        return;
    cf_pg__hist_entry *e = NULL;
    size_t n = 0;
    if (cf_pg__parse_history(&e, &n, copy) == 0) {
        size_t lines = 1;
        for (const char *p = s; *p; p++)
            lines += *p == '\n';
        if (n > lines || (n > 0) != (e != NULL))
            abort();
        for (size_t i = 0; i < n; i++)
            if (e[i].tli == 0 || (i > 0 && e[i].tli <= e[i - 1].tli))
                abort();
    }
    free(e);
    free(copy);
}

static void label(const char *s, const char *mtail)
{
    cf_pg_base_info info;
    memset(&info, 0, sizeof(info));
    bool have_stop = true;
    int rc = cf_pg__parse_label(&info, s, mtail, &have_stop);
    if (rc == 0 && (strlen(info.start_wal) != 24 || info.timeline == 0))
        abort();
    if (rc != 0 && have_stop)
        abort();
    uint64_t stop = 0;
    cf_pg__parse_backup_history(&stop, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* text before the first NUL: the label (and every other text); after it: the manifest */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t n1 = strlen(s);
    const char *mtail = n1 < size ? s + n1 + 1 : NULL;
    names(s);
    lsn(s);
    history(s);
    label(s, mtail);
    cf_error_clear();
    free(s);
    return 0;
}
