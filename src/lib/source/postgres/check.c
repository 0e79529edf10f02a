/*
 * check.c - is the WAL archive complete? Every segment from the oldest base backup's start
 * to the newest archived segment, following the newest timeline's history, must be there.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/postgres/pg.h"

typedef struct {
    uint32_t tli;
    uint64_t segno;
} seg_ref;

typedef struct {
    const char *prefix; /* "cluster/" or "" */
    size_t plen;
    uint32_t segsize;
    seg_ref *segs;
    size_t nsegs, cap;
    uint32_t *hist;
    size_t nhist;
    uint32_t max_tli;
    cf_pg_check_result *res;
    int rc;
} scan_ctx;

static int scan_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    scan_ctx *c = payload;
    if (c->plen ? strncmp(name, c->prefix, c->plen) != 0 : strchr(name, '/') != NULL)
        return 0;
    const char *file = name + c->plen;
    cf_pg__wal_name w;
    switch (cf_pg__wal_parse(&w, file)) {
    case CF_PG_WAL_SEGMENT:
        if (c->nsegs == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 1024;
            seg_ref *p = cf_realloc(c->segs, ncap * sizeof(*p));
            if (!p)
                return c->rc = CF_ENOMEM;
            c->segs = p;
            c->cap = ncap;
        }
        c->segs[c->nsegs].tli = w.tli;
        c->segs[c->nsegs++].segno = cf_pg__segno(&w, c->segsize);
        c->res->segments++;
        if (w.tli > c->max_tli)
            c->max_tli = w.tli;
        break;
    case CF_PG_WAL_HISTORY: {
        uint32_t *p = cf_realloc(c->hist, (c->nhist + 1) * sizeof(*p));
        if (!p)
            return c->rc = CF_ENOMEM;
        c->hist = p;
        c->hist[c->nhist++] = w.tli;
        c->res->history_files++;
        if (w.tli > c->max_tli)
            c->max_tli = w.tli;
        break;
    }
    case CF_PG_WAL_BACKUP: c->res->backup_files++; break;
    case CF_PG_WAL_PARTIAL: c->res->partial_files++; break;
    default: c->res->other_files++; break;
    }
    return 0;
}

static int cmp_seg(const void *a, const void *b)
{
    const seg_ref *x = a, *y = b;
    if (x->tli != y->tli)
        return x->tli < y->tli ? -1 : 1;
    return x->segno < y->segno ? -1 : x->segno > y->segno;
}

static bool have(const scan_ctx *c, uint32_t tli, uint64_t segno)
{
    seg_ref key = {tli, segno};
    return bsearch(&key, c->segs, c->nsegs, sizeof(seg_ref), cmp_seg) != NULL;
}

typedef cf_pg__hist_entry hist_entry;

int cf_pg__parse_history(cf_pg__hist_entry **out, size_t *out_n, char *text)
{
    cf_pg__hist_entry *e = NULL;
    size_t n = 0, lineno = 0;
    int rc = 0;
    *out = NULL;
    *out_n = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        /* as PostgreSQL reads it: "<timeline> <switch LSN> [reason]", blank lines and
         * comments skipped */
        const char *p = line + strspn(line, " \t\r");
        if (*p == '\0' || *p == '#') {
            line = nl ? nl + 1 : NULL;
            continue;
        }
        uint64_t t = 0, end = 0;
        const char *q = NULL;
        char lsn[32];
        size_t ll = 0;
        bool ok = cf_pg__dec(&t, p, &q, UINT32_MAX) && t > 0 && (*q == ' ' || *q == '\t');
        if (ok) {
            q += strspn(q, " \t");
            ll = strcspn(q, " \t\r");
            ok = ll > 0 && ll < sizeof(lsn);
        }
        if (ok) {
            memcpy(lsn, q, ll);
            lsn[ll] = '\0';
            ok = cf_pg_lsn_parse(&end, lsn) == 0;
        }
        if (!ok) {
            rc = cf_error_set(CF_ECORRUPT, 0, "timeline history line %zu is not valid: expected "
                                              "a timeline (1 to 4294967295) and an LSN",
                              lineno);
            break;
        }
        if (n > 0 && t <= e[n - 1].tli) {
            rc = cf_error_set(CF_ECORRUPT, 0, "timeline history line %zu: timeline %llu does "
                                              "not follow %u",
                              lineno, (unsigned long long)t, e[n - 1].tli);
            break;
        }
        cf_pg__hist_entry *np = cf_realloc(e, (n + 1) * sizeof(*np));
        if (!np) {
            rc = CF_ENOMEM;
            break;
        }
        e = np;
        e[n].tli = (uint32_t)t;
        e[n++].end = end;
        line = nl ? nl + 1 : NULL;
    }
    if (rc) {
        free(e);
        return rc;
    }
    cf_error_clear();
    *out = e;
    *out_n = n;
    return 0;
}

/* The newest timeline's ancestry: entries (tli, end LSN) from its history file. */
static int read_history(hist_entry **out, size_t *out_n, cf_repo *repo, const char *cluster,
                        uint32_t tli)
{
    char file[32], full[256];
    uint8_t *data = NULL;
    size_t len = 0;
    *out = NULL;
    *out_n = 0;
    snprintf(file, sizeof(file), "%08X.history", tli);
    int rc = cf_pg__archive_name(full, cluster, file);
    if (rc || (rc = cf_archive_get(repo, CF_PG_ARCHIVE_KIND, full, &data, &len)))
        return rc;
    char *text = cf_malloc(len + 1);
    if (!text) {
        free(data);
        return CF_ENOMEM;
    }
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    rc = cf_pg__parse_history(out, out_n, text);
    free(text);
    return rc;
}

/* The timeline segment segno is read from when recovering along hist to newest. */
static uint32_t tli_for(const hist_entry *h, size_t n, uint32_t newest, uint64_t segno,
                        uint32_t ss)
{
    for (size_t i = 0; i < n; i++)
        if ((segno + 1) * (uint64_t)ss <= h[i].end)
            return h[i].tli;
    return newest;
}

static bool on_chain(const hist_entry *h, size_t n, uint32_t newest, uint32_t tli)
{
    if (tli == newest)
        return true;
    for (size_t i = 0; i < n; i++)
        if (h[i].tli == tli)
            return true;
    return false;
}

/* A base backup begun at lsn on timeline tli lies on the chain if that timeline had not yet
 * ended (been left for the next one) by then. */
static bool backup_on_chain(const hist_entry *h, size_t n, uint32_t newest, uint32_t tli,
                            uint64_t lsn)
{
    if (tli == newest)
        return true;
    for (size_t i = 0; i < n; i++)
        if (h[i].tli == tli)
            return lsn < h[i].end;
    return false;
}

static void problem(const cf_pg_check_opts *o, cf_pg_check_result *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(const cf_pg_check_opts *o, cf_pg_check_result *r, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    r->problems++;
    if (o->on_problem)
        o->on_problem(CF_PG_MSG_WARNING, buf, o->payload);
}

int cf_pg_check(cf_repo *repo, const cf_pg_check_opts *o, cf_pg_check_result *out)
{
    cf_pg_check_result res;
    cf_snapshot **list = NULL;
    cf_pg_base_info *infos = NULL;
    size_t n = 0, nh = 0;
    hist_entry *h = NULL;
    char prefix[80] = "";
    scan_ctx sc;
    int rc;
    memset(&res, 0, sizeof(res));
    memset(&sc, 0, sizeof(sc));
    const char *cluster = o->cluster && *o->cluster ? o->cluster : NULL;
    if (cluster) {
        if (!cf_pg__valid_cluster(cluster)) {
            rc = cf_error_set(CF_EINVAL, 0, "invalid cluster name '%s'", cluster);
            goto out;
        }
        snprintf(prefix, sizeof(prefix), "%s/", cluster);
    }
    if ((rc = cf_pg_base_list(&list, &infos, &n, repo, cluster)))
        goto out;
    res.backups = n;
    if (n == 0) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "no PostgreSQL base backup%s%s in the repository",
                          cluster ? " of cluster " : "", cluster ? cluster : "");
        cf_error_hint("take one with 'coffer pg backup'");
        goto out;
    }
    uint32_t ss = infos[n - 1].wal_segment_size;
    for (size_t i = 0; i < n; i++)
        if (infos[i].wal_segment_size != ss)
            problem(o, &res, "base backup %.8s has WAL segments of %u bytes, the newest %u",
                    infos[i].snapshot_id, infos[i].wal_segment_size, ss);
    sc.prefix = prefix;
    sc.plen = strlen(prefix);
    sc.segsize = ss;
    sc.res = &res;
    if ((rc = cf_archive_list(repo, CF_PG_ARCHIVE_KIND, scan_cb, &sc)) || (rc = sc.rc))
        goto out;
    if (sc.nsegs)
        qsort(sc.segs, sc.nsegs, sizeof(seg_ref), cmp_seg);
    for (size_t i = 0; i < n; i++)
        if (infos[i].timeline > sc.max_tli)
            sc.max_tli = infos[i].timeline;
    uint32_t newest = sc.max_tli;
    res.timeline = newest;
    if (newest > 1) {
        int hrc = read_history(&h, &nh, repo, cluster, newest);
        if (hrc == CF_ENOTFOUND) {
            problem(o, &res, "timeline %u has no history file (%08X.history) in the archive",
                    newest, newest);
        } else if (hrc) {
            problem(o, &res, "the history file of timeline %u is unreadable: %s", newest,
                    cf_error_last()->message);
        }
    }
    /* the oldest base backup on the newest timeline's ancestry */
    size_t first = n;
    for (size_t i = 0; i < n && first == n; i++)
        if (backup_on_chain(h, nh, newest, infos[i].timeline, infos[i].start_lsn))
            first = i;
    if (first == n) {
        problem(o, &res, "no base backup lies on timeline %u or its ancestors", newest);
        rc = cf_error_set(CF_ECORRUPT, 0, "the WAL archive cannot restore timeline %u", newest);
        goto out;
    }
    uint64_t start = infos[first].start_lsn / ss, end = start;
    for (size_t i = 0; i < sc.nsegs; i++)
        if (on_chain(h, nh, newest, sc.segs[i].tli) && sc.segs[i].segno > end &&
            tli_for(h, nh, newest, sc.segs[i].segno, ss) == sc.segs[i].tli)
            end = sc.segs[i].segno;
    for (size_t i = first; i < n; i++) {
        uint64_t stop = infos[i].stop_lsn / ss;
        if (infos[i].stop_lsn % ss == 0 && stop > infos[i].start_lsn / ss)
            stop--;
        if (backup_on_chain(h, nh, newest, infos[i].timeline, infos[i].start_lsn) && stop > end)
            end = stop;
    }
    cf_pg__seg_name(res.first_wal, tli_for(h, nh, newest, start, ss), start, ss);
    cf_pg__seg_name(res.last_wal, tli_for(h, nh, newest, end, ss), end, ss);
    uint64_t gap_from = 0, last_missing = 0;
    bool in_gap = false, any_gap = false;
    for (uint64_t s = start; s <= end + 1; s++) {
        bool missing = false;
        if (s <= end) {
            uint32_t tli = tli_for(h, nh, newest, s, ss);
            missing = !have(&sc, tli, s);
            if (!missing && o->read_data) {
                char seg[25], full[256];
                uint8_t *data = NULL;
                size_t len = 0;
                cf_pg__seg_name(seg, tli, s, ss);
                cf_pg__archive_name(full, cluster, seg);
                int grc = cf_archive_get(repo, CF_PG_ARCHIVE_KIND, full, &data, &len);
                if (grc == CF_ENOMEM) {
                    rc = grc;
                    goto out;
                }
                if (grc || len != ss) {
                    problem(o, &res, "WAL segment %s is damaged: %s", seg,
                            grc ? cf_error_last()->message : "wrong size");
                    missing = true;
                }
                free(data);
                res.segments_checked++;
            } else if (!missing) {
                res.segments_checked++;
            }
        }
        if (missing && !in_gap) {
            gap_from = s;
            in_gap = true;
        } else if (!missing && in_gap) {
            char a[25], b[25];
            cf_pg__seg_name(a, tli_for(h, nh, newest, gap_from, ss), gap_from, ss);
            cf_pg__seg_name(b, tli_for(h, nh, newest, s - 1, ss), s - 1, ss);
            problem(o, &res, "gap in the WAL archive: %s .. %s missing (%llu segment%s)", a, b,
                    (unsigned long long)(s - gap_from), s - gap_from == 1 ? "" : "s");
            res.missing += s - gap_from;
            last_missing = s - 1;
            in_gap = false;
            any_gap = true;
        }
    }
    /* the recoverable window ends at the newest segment; it starts at the oldest base backup
     * after the last gap */
    size_t wfirst = n;
    for (size_t i = first; i < n && wfirst == n; i++)
        if (backup_on_chain(h, nh, newest, infos[i].timeline, infos[i].start_lsn) &&
            (!any_gap || infos[i].start_lsn / ss > last_missing))
            wfirst = i;
    if (wfirst < n) {
        res.earliest_backup_ns = infos[wfirst].time_ns;
        snprintf(res.earliest_backup_id, sizeof(res.earliest_backup_id), "%s",
                 infos[wfirst].snapshot_id);
    }
    res.latest_backup_ns = infos[n - 1].time_ns;
    if (res.problems)
        rc = cf_error_set(CF_ECORRUPT, 0, "the WAL archive is incomplete: %llu problem%s, %llu "
                                          "missing segment%s",
                          (unsigned long long)res.problems, res.problems == 1 ? "" : "s",
                          (unsigned long long)res.missing, res.missing == 1 ? "" : "s");
out:
    if (out)
        *out = res;
    cf_snapshot_list_free(list, n);
    free(infos);
    free(h);
    free(sc.segs);
    free(sc.hist);
    return rc;
}
