/*
 * test_forget.c - retention policies (cf_forget_plan / cf_forget_apply) on synthetic timelines
 * in an in-memory repository: every rule alone and in combination, exact kept sets and reason
 * strings computed independently (explicit date lists), grouping, filters, refusal of an empty
 * policy, and apply removing exactly what the plan does not keep.
 *
 * Semantics (restic's): each period rule keeps the newest snapshot of each period, counting
 * periods that hold a snapshot from newest to oldest, in local time (weekly: ISO 8601 weeks);
 * the rules combine as a union; within keeps snapshots strictly newer than the group's latest
 * snapshot minus the duration. Times are given in UTC and TZ=UTC unless a test says otherwise.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops/ops.h"
#include "unit/repo/repo_helpers.h"

#define URL "mem:forget"
#define NS 1000000000LL
#define MAX_SNAPS 1200

/* ------------------------------------------------------------------ timelines */

typedef struct {
    char label[64]; /* how the tests name the snapshot, e.g. "2025-12-31 22:00" */
    char id[65];
} snap_ref;

typedef struct {
    cf_repo *r;
    snap_ref v[MAX_SNAPS];
    size_t n;
} timeline;

static timeline *g_t;

static void set_tz(const char *tz)
{
    assert_int_equal(setenv("TZ", tz, 1), 0);
    tzset();
}

/* "YYYY-MM-DD HH:MM[:SS]" in UTC -> unix ns (independent of the TZ the test runs in). */
static int64_t utc_ns(const char *when)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int sec = 0;
    int n = sscanf(when, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &sec);
    if (n < 5)
        fail_msg("bad test time '%s'", when);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_sec = sec;
    return (int64_t)timegm(&tm) * NS;
}

static void fmt_utc(char *out, size_t cap, int64_t ns)
{
    time_t t = (time_t)(ns / NS);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M", &tm);
}

/* Write a snapshot document directly (no data: forget only reads the documents). */
static void add_snap_at(timeline *t, const char *label, int64_t time_ns, const char *host,
                        const char *path, const char *const *tags)
{
    assert_true(t->n < MAX_SNAPS);
    cf_snapshot s;
    memset(&s, 0, sizeof(s));
    s.time = time_ns;
    s.host = (char *)(uintptr_t)host;
    s.username = (char *)(uintptr_t)"tester";
    char *paths[1] = {(char *)(uintptr_t)path};
    s.paths = paths;
    s.npaths = 1;
    size_t ntags = 0;
    for (const char *const *p = tags; p && *p; p++)
        ntags++;
    s.tags = (char **)(uintptr_t)tags;
    s.ntags = ntags;
    s.type = CF_BACKUP_FULL;
    th_id(&s.tree, (uint64_t)t->n + 1);
    cf_hex_encode(s.tree_hex, s.tree.b, 32);
    s.source_kind = (char *)(uintptr_t)"files";
    s.source_name = (char *)(uintptr_t)"";
    cf_buf doc;
    cf_buf_init(&doc, 0);
    th_ok(cf_snapshot__encode(&doc, &s));
    snap_ref *ref = &t->v[t->n];
    th_ok(cf_repo__put_object(t->r, "snapshots", CF_OBJ_SNAPSHOT, doc.data, doc.len, ref->id));
    cf_buf_free(&doc);
    snprintf(ref->label, sizeof(ref->label), "%s", label);
    t->n++;
}

/* The common case: label = time, host "h1", path "/data", no tags. */
static void add_snap(timeline *t, const char *when)
{
    add_snap_at(t, when, utc_ns(when), "h1", "/data", NULL);
}

static void add_snap_tags(timeline *t, const char *when, const char *const *tags)
{
    add_snap_at(t, when, utc_ns(when), "h1", "/data", tags);
}

/* Every `step_s` seconds from first (inclusive) to last (inclusive), labelled by time. */
static void add_series(timeline *t, const char *first, const char *last, int64_t step_s)
{
    for (int64_t ns = utc_ns(first); ns <= utc_ns(last); ns += step_s * NS) {
        char label[32];
        fmt_utc(label, sizeof(label), ns);
        add_snap_at(t, label, ns, "h1", "/data", NULL);
    }
}

static const char *label_of(const timeline *t, const char *id)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].id, id) == 0)
            return t->v[i].label;
    return NULL;
}

static const char *id_of(const timeline *t, const char *label)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].label, label) == 0)
            return t->v[i].id;
    fail_msg("no snapshot labelled '%s' in the timeline", label);
    return NULL;
}

/* ------------------------------------------------------------------ expectations */

typedef struct {
    const char *label;
    const char *reasons;
} kept;

typedef struct {
    char *text;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t k = (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1;
    if (b->len + k + 1 > b->cap) {
        size_t ncap = (b->cap + k + 1) * 2;
        char *p = realloc(b->text, ncap);
        assert_non_null(p);
        b->text = p;
        b->cap = ncap;
    }
    memcpy(b->text + b->len, tmp, k);
    b->len += k;
    b->text[b->len] = '\0';
}

/* Plan with policy p (and filter f), and require exactly the kept set `want` (with reasons)
 * among `total` planned items; every other planned snapshot must be marked for removal.
 * Items must be grouped contiguously, newest first within a group. Returns the number of
 * distinct groups seen. */
static size_t expect_plan_f(timeline *t, const cf_forget_policy *p, const cf_snapshot_filter *f,
                            const kept *want, size_t nwant, size_t total)
{
    cf_forget_item *items = NULL;
    size_t n = 0;
    th_ok(cf_forget_plan(&items, &n, t->r, p, f));
    strbuf err = {NULL, 0, 0};
    if (n != total)
        sb_printf(&err, "planned %zu snapshots, expected %zu\n", n, total);
    bool *seen = calloc(nwant ? nwant : 1, sizeof(bool));
    assert_non_null(seen);
    size_t groups = 0;
    for (size_t i = 0; i < n; i++) {
        const cf_forget_item *it = &items[i];
        const char *label = label_of(t, cf_snapshot_id(it->snap));
        if (!label) {
            sb_printf(&err, "planned an unknown snapshot %.12s\n", cf_snapshot_id(it->snap));
            continue;
        }
        /* grouping and order */
        if (i == 0 || strcmp(items[i - 1].group, it->group) != 0) {
            groups++;
            for (size_t k = 0; k + 1 < i; k++)
                if (strcmp(items[k].group, it->group) == 0) {
                    sb_printf(&err, "group '%s' is not contiguous\n", it->group);
                    break;
                }
        } else if (cf_snapshot_time(items[i - 1].snap) < cf_snapshot_time(it->snap)) {
            sb_printf(&err, "group '%s' not newest first at '%s'\n", it->group, label);
        }
        const kept *w = NULL;
        for (size_t k = 0; k < nwant; k++)
            if (strcmp(want[k].label, label) == 0) {
                w = &want[k];
                seen[k] = true;
            }
        if (w && !it->keep)
            sb_printf(&err, "'%s' should be kept (%s) but is removed\n", label, w->reasons);
        else if (w && strcmp(it->reasons, w->reasons) != 0)
            sb_printf(&err, "'%s' kept for '%s', expected '%s'\n", label, it->reasons, w->reasons);
        else if (!w && it->keep)
            sb_printf(&err, "'%s' should be removed but is kept (%s)\n", label, it->reasons);
        else if (!w && it->reasons[0])
            sb_printf(&err, "'%s' is removed but has reasons '%s'\n", label, it->reasons);
    }
    for (size_t k = 0; k < nwant; k++)
        if (!seen[k])
            sb_printf(&err, "'%s' was expected in the plan but is not planned at all\n",
                      want[k].label);
    free(seen);
    if (err.len) {
        sb_printf(&err, "the plan keeps:\n");
        for (size_t i = 0; i < n; i++)
            if (items[i].keep)
                sb_printf(&err, "  %s [%s] (%s)\n", label_of(t, cf_snapshot_id(items[i].snap)),
                          items[i].reasons, items[i].group);
    }
    cf_forget_items_free(items, n);
    if (err.len) {
        print_error("%s", err.text);
        free(err.text);
        fail_msg("forget plan differs from the expected kept set");
    }
    free(err.text);
    return groups;
}

static size_t expect_plan(timeline *t, const cf_forget_policy *p, const kept *want, size_t nwant)
{
    return expect_plan_f(t, p, NULL, want, nwant, t->n);
}

#define NKEPT(a) (sizeof(a) / sizeof((a)[0]))

static cf_forget_policy policy(void)
{
    cf_forget_policy p;
    memset(&p, 0, sizeof(p));
    return p;
}

/* ------------------------------------------------------------------ fixtures */

static int setup(void **state)
{
    (void)state;
    set_tz("UTC");
    cf_storage_mem_reset();
    g_t = calloc(1, sizeof(*g_t));
    assert_non_null(g_t);
    g_t->r = th_repo_new(URL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_repo_close(g_t->r);
    free(g_t);
    g_t = NULL;
    cf_storage_mem_reset();
    set_tz("UTC");
    return 0;
}

/* ------------------------------------------------------------------ single rules */

static void test_last(void **state)
{
    (void)state;
    add_series(g_t, "2025-05-01 12:00", "2025-05-10 12:00", 86400);
    cf_forget_policy p = policy();
    p.last = 3;
    static const kept want[] = {
        {"2025-05-10 12:00", "last"}, {"2025-05-09 12:00", "last"}, {"2025-05-08 12:00", "last"}};
    assert_int_equal(expect_plan(g_t, &p, want, NKEPT(want)), 1);

    /* more than there are: everything is kept */
    p.last = 50;
    kept all[10];
    for (size_t i = 0; i < 10; i++)
        all[i] = (kept){g_t->v[i].label, "last"};
    expect_plan(g_t, &p, all, 10);
    p.last = -1; /* unlimited */
    expect_plan(g_t, &p, all, 10);
}

/* A year of daily snapshots at 10:00, with extra snapshots earlier on two days and a later one
 * on the last day: each rule keeps the newest of its periods. */
static void year_of_days(timeline *t)
{
    add_series(t, "2025-01-01 10:00", "2025-12-31 10:00", 86400);
    add_snap(t, "2025-11-30 08:00");
    add_snap(t, "2025-12-28 08:00");
    add_snap(t, "2025-12-31 22:00");
    assert_int_equal(t->n, 368);
}

static void test_daily(void **state)
{
    (void)state;
    year_of_days(g_t);
    cf_forget_policy p = policy();
    p.daily = 7;
    static const kept want[] = {
        {"2025-12-31 22:00", "daily"}, {"2025-12-30 10:00", "daily"}, {"2025-12-29 10:00", "daily"},
        {"2025-12-28 10:00", "daily"}, {"2025-12-27 10:00", "daily"}, {"2025-12-26 10:00", "daily"},
        {"2025-12-25 10:00", "daily"},
    };
    expect_plan(g_t, &p, want, NKEPT(want));
}

static void test_weekly(void **state)
{
    (void)state;
    year_of_days(g_t);
    cf_forget_policy p = policy();
    p.weekly = 4;
    /* 2025-12-31 is a Wednesday of ISO week 2026-W01; the Sundays close W52, W51, W50 */
    static const kept want[] = {
        {"2025-12-31 22:00", "weekly"},
        {"2025-12-28 10:00", "weekly"},
        {"2025-12-21 10:00", "weekly"},
        {"2025-12-14 10:00", "weekly"},
    };
    expect_plan(g_t, &p, want, NKEPT(want));
}

static void test_monthly(void **state)
{
    (void)state;
    year_of_days(g_t);
    cf_forget_policy p = policy();
    p.monthly = 12;
    static const kept want[] = {
        {"2025-12-31 22:00", "monthly"}, {"2025-11-30 10:00", "monthly"},
        {"2025-10-31 10:00", "monthly"}, {"2025-09-30 10:00", "monthly"},
        {"2025-08-31 10:00", "monthly"}, {"2025-07-31 10:00", "monthly"},
        {"2025-06-30 10:00", "monthly"}, {"2025-05-31 10:00", "monthly"},
        {"2025-04-30 10:00", "monthly"}, {"2025-03-31 10:00", "monthly"},
        {"2025-02-28 10:00", "monthly"}, {"2025-01-31 10:00", "monthly"},
    };
    expect_plan(g_t, &p, want, NKEPT(want));
}

static void test_daily_weekly_monthly(void **state)
{
    (void)state;
    year_of_days(g_t);
    cf_forget_policy p = policy();
    p.daily = 7;
    p.weekly = 4;
    p.monthly = 12;
    static const kept want[] = {
        {"2025-12-31 22:00", "daily, weekly, monthly"},
        {"2025-12-30 10:00", "daily"},
        {"2025-12-29 10:00", "daily"},
        {"2025-12-28 10:00", "daily, weekly"},
        {"2025-12-27 10:00", "daily"},
        {"2025-12-26 10:00", "daily"},
        {"2025-12-25 10:00", "daily"},
        {"2025-12-21 10:00", "weekly"},
        {"2025-12-14 10:00", "weekly"},
        {"2025-11-30 10:00", "monthly"},
        {"2025-10-31 10:00", "monthly"},
        {"2025-09-30 10:00", "monthly"},
        {"2025-08-31 10:00", "monthly"},
        {"2025-07-31 10:00", "monthly"},
        {"2025-06-30 10:00", "monthly"},
        {"2025-05-31 10:00", "monthly"},
        {"2025-04-30 10:00", "monthly"},
        {"2025-03-31 10:00", "monthly"},
        {"2025-02-28 10:00", "monthly"},
        {"2025-01-31 10:00", "monthly"},
    };
    expect_plan(g_t, &p, want, NKEPT(want));
}

/* Three days of snapshots every 20 minutes. */
static void three_days(timeline *t)
{
    add_series(t, "2025-03-01 00:00", "2025-03-03 23:40", 20 * 60);
    assert_int_equal(t->n, 216);
}

static void test_hourly(void **state)
{
    (void)state;
    three_days(g_t);
    cf_forget_policy p = policy();
    p.hourly = 10;
    static const kept want[] = {
        {"2025-03-03 23:40", "hourly"}, {"2025-03-03 22:40", "hourly"},
        {"2025-03-03 21:40", "hourly"}, {"2025-03-03 20:40", "hourly"},
        {"2025-03-03 19:40", "hourly"}, {"2025-03-03 18:40", "hourly"},
        {"2025-03-03 17:40", "hourly"}, {"2025-03-03 16:40", "hourly"},
        {"2025-03-03 15:40", "hourly"}, {"2025-03-03 14:40", "hourly"},
    };
    expect_plan(g_t, &p, want, NKEPT(want));
}

static void test_hourly_unlimited_and_daily(void **state)
{
    (void)state;
    three_days(g_t);
    cf_forget_policy p = policy();
    p.hourly = -1;
    p.daily = 2;
    kept want[72];
    static char labels[72][32];
    for (int d = 0; d < 3; d++)
        for (int h = 0; h < 24; h++) {
            int k = d * 24 + h;
            snprintf(labels[k], sizeof(labels[k]), "2025-03-%02d %02d:40", 1 + d, h);
            want[k].label = labels[k];
            /* the last hour of the two newest days is also their daily */
            want[k].reasons = (h == 23 && d >= 1) ? "hourly, daily" : "hourly";
        }
    expect_plan(g_t, &p, want, 72);
}

static void test_yearly(void **state)
{
    (void)state;
    /* the 15th of every month for three years, and one late on New Year's Eve 2024 */
    for (int y = 2023; y <= 2025; y++)
        for (int m = 1; m <= 12; m++) {
            char when[32];
            snprintf(when, sizeof(when), "%04d-%02d-15 12:00", y, m);
            add_snap(g_t, when);
        }
    add_snap(g_t, "2024-12-31 23:30");
    cf_forget_policy p = policy();
    p.yearly = 2;
    static const kept two[] = {{"2025-12-15 12:00", "yearly"}, {"2024-12-31 23:30", "yearly"}};
    expect_plan(g_t, &p, two, NKEPT(two));
    p.yearly = 5; /* more years asked than exist */
    static const kept all[] = {{"2025-12-15 12:00", "yearly"},
                               {"2024-12-31 23:30", "yearly"},
                               {"2023-12-15 12:00", "yearly"}};
    expect_plan(g_t, &p, all, NKEPT(all));
    p.yearly = 3;
    p.monthly = 2;
    static const kept mix[] = {{"2025-12-15 12:00", "monthly, yearly"},
                               {"2025-11-15 12:00", "monthly"},
                               {"2024-12-31 23:30", "yearly"},
                               {"2023-12-15 12:00", "yearly"}};
    expect_plan(g_t, &p, mix, NKEPT(mix));
}

/* Periods are counted over the periods that hold snapshots, not calendar periods. */
static void test_monthly_with_gaps(void **state)
{
    (void)state;
    static const char *const when[] = {"2025-01-05 09:00", "2025-01-20 09:00", "2025-02-05 09:00",
                                       "2025-02-20 09:00", "2025-05-05 09:00", "2025-05-20 09:00",
                                       "2025-06-05 09:00", "2025-06-20 09:00"};
    for (size_t i = 0; i < 8; i++)
        add_snap(g_t, when[i]);
    cf_forget_policy p = policy();
    p.monthly = 3;
    static const kept want[] = {{"2025-06-20 09:00", "monthly"},
                                {"2025-05-20 09:00", "monthly"},
                                {"2025-02-20 09:00", "monthly"}};
    expect_plan(g_t, &p, want, NKEPT(want));
}

/* ISO weeks cross the calendar year: Thu 2020-12-31, Fri 2021-01-01 and Sun 2021-01-03 are all
 * in 2020-W53; Mon 2021-01-04 starts 2021-W01. Likewise Mon 2024-12-30 is in 2025-W01. */
static void test_weekly_iso_year_boundary(void **state)
{
    (void)state;
    add_snap(g_t, "2020-12-24 12:00"); /* 2020-W52 */
    add_snap(g_t, "2020-12-31 12:00");
    add_snap(g_t, "2021-01-01 12:00");
    add_snap(g_t, "2021-01-03 12:00");
    add_snap(g_t, "2021-01-04 12:00");
    cf_forget_policy p = policy();
    p.weekly = 3;
    static const kept want[] = {{"2021-01-04 12:00", "weekly"},
                                {"2021-01-03 12:00", "weekly"},
                                {"2020-12-24 12:00", "weekly"}};
    expect_plan(g_t, &p, want, NKEPT(want));
}

static void test_weekly_iso_year_boundary_2024(void **state)
{
    (void)state;
    add_snap(g_t, "2024-12-27 12:00"); /* Fri, 2024-W52 */
    add_snap(g_t, "2024-12-29 12:00"); /* Sun, 2024-W52 */
    add_snap(g_t, "2024-12-30 12:00"); /* Mon, 2025-W01 */
    add_snap(g_t, "2025-01-02 12:00"); /* Thu, 2025-W01 */
    cf_forget_policy p = policy();
    p.weekly = 2;
    static const kept want[] = {{"2025-01-02 12:00", "weekly"}, {"2024-12-29 12:00", "weekly"}};
    expect_plan(g_t, &p, want, NKEPT(want));
}

static void test_daily_unlimited(void **state)
{
    (void)state;
    add_series(g_t, "2025-07-01 06:00", "2025-07-05 06:00", 86400);
    add_series(g_t, "2025-07-01 18:00", "2025-07-05 18:00", 86400);
    cf_forget_policy p = policy();
    p.daily = -1;
    static const kept want[] = {{"2025-07-05 18:00", "daily"}, {"2025-07-04 18:00", "daily"},
                                {"2025-07-03 18:00", "daily"}, {"2025-07-02 18:00", "daily"},
                                {"2025-07-01 18:00", "daily"}};
    expect_plan(g_t, &p, want, NKEPT(want));
}

/* ------------------------------------------------------------------ within, tags */

static void test_within(void **state)
{
    (void)state;
    add_series(g_t, "2025-06-01 12:00", "2025-06-29 12:00", 86400);
    add_snap(g_t, "2025-06-30 18:00");
    cf_forget_policy p = policy();
    p.within_ns = 10LL * 86400 * NS; /* newer than 2025-06-20 18:00 */
    static const kept want[] = {
        {"2025-06-30 18:00", "within"}, {"2025-06-29 12:00", "within"},
        {"2025-06-28 12:00", "within"}, {"2025-06-27 12:00", "within"},
        {"2025-06-26 12:00", "within"}, {"2025-06-25 12:00", "within"},
        {"2025-06-24 12:00", "within"}, {"2025-06-23 12:00", "within"},
        {"2025-06-22 12:00", "within"}, {"2025-06-21 12:00", "within"},
    };
    expect_plan(g_t, &p, want, NKEPT(want));
}

/* "Newer than latest - duration": a snapshot exactly at the limit is not kept (restic keeps
 * cur.Time.After(limit)); one a second later is. */
static void test_within_boundary_exclusive(void **state)
{
    (void)state;
    add_snap(g_t, "2025-06-10 12:00:00");
    add_snap(g_t, "2025-06-20 12:00:00");
    add_snap(g_t, "2025-06-20 12:00:01");
    add_snap(g_t, "2025-06-30 12:00:00");
    cf_forget_policy p = policy();
    p.within_ns = 10LL * 86400 * NS;
    static const kept want[] = {{"2025-06-30 12:00:00", "within"},
                                {"2025-06-20 12:00:01", "within"}};
    expect_plan(g_t, &p, want, NKEPT(want));
}

/* within counts from each group's own latest snapshot, not from now or the global latest */
static void test_within_per_group(void **state)
{
    (void)state;
    for (int d = 1; d <= 10; d++) {
        char when[32], label[48];
        snprintf(when, sizeof(when), "2025-06-%02d 12:00", 20 + d);
        snprintf(label, sizeof(label), "alpha %s", when);
        add_snap_at(g_t, label, utc_ns(when), "alpha", "/data", NULL);
        snprintf(when, sizeof(when), "2025-03-%02d 12:00", d);
        snprintf(label, sizeof(label), "beta %s", when);
        add_snap_at(g_t, label, utc_ns(when), "beta", "/data", NULL);
    }
    cf_forget_policy p = policy();
    p.within_ns = 108LL * 3600 * NS; /* 4.5 days */
    /* alpha: newest 06-30 12:00, limit 06-26 00:00; beta: newest 03-10 12:00, limit 03-06 00:00 */
    static const kept want[] = {
        {"alpha 2025-06-30 12:00", "within"}, {"alpha 2025-06-29 12:00", "within"},
        {"alpha 2025-06-28 12:00", "within"}, {"alpha 2025-06-27 12:00", "within"},
        {"alpha 2025-06-26 12:00", "within"}, {"beta 2025-03-10 12:00", "within"},
        {"beta 2025-03-09 12:00", "within"},  {"beta 2025-03-08 12:00", "within"},
        {"beta 2025-03-07 12:00", "within"},  {"beta 2025-03-06 12:00", "within"},
    };
    assert_int_equal(expect_plan(g_t, &p, want, NKEPT(want)), 2);
}

static void test_last_and_tag(void **state)
{
    (void)state;
    static const char *const important[] = {"important", NULL};
    static const char *const other[] = {"other", NULL};
    static const char *const both[] = {"x", "important", NULL};
    for (int d = 1; d <= 10; d++) {
        char when[32];
        snprintf(when, sizeof(when), "2025-05-%02d 12:00", d);
        add_snap_tags(g_t, when, d == 2 ? important : d == 9 ? both : d == 5 ? other : NULL);
    }
    cf_forget_policy p = policy();
    p.last = 3;
    static const char *const keep_imp[] = {"important", NULL};
    p.keep_tags = keep_imp;
    static const kept want[] = {{"2025-05-10 12:00", "last"},
                                {"2025-05-09 12:00", "last, tag"},
                                {"2025-05-08 12:00", "last"},
                                {"2025-05-02 12:00", "tag"}};
    assert_int_equal(expect_plan(g_t, &p, want, NKEPT(want)), 1);

    /* several --keep-tag: any of them keeps a snapshot */
    static const char *const keep_two[] = {"important", "other", NULL};
    p.keep_tags = keep_two;
    static const kept want2[] = {{"2025-05-10 12:00", "last"},
                                 {"2025-05-09 12:00", "last, tag"},
                                 {"2025-05-08 12:00", "last"},
                                 {"2025-05-05 12:00", "tag"},
                                 {"2025-05-02 12:00", "tag"}};
    expect_plan(g_t, &p, want2, NKEPT(want2));

    /* the tag rule alone */
    p.last = 0;
    p.keep_tags = keep_imp;
    static const kept want3[] = {{"2025-05-09 12:00", "tag"}, {"2025-05-02 12:00", "tag"}};
    expect_plan(g_t, &p, want3, NKEPT(want3));

    /* a tag nobody carries keeps nothing (and is still a rule, not an empty policy) */
    static const char *const keep_none[] = {"absent", NULL};
    p.keep_tags = keep_none;
    expect_plan(g_t, &p, NULL, 0);
}

static void test_all_rules_reason_order(void **state)
{
    (void)state;
    static const char *const tagged[] = {"keep", NULL};
    add_snap(g_t, "2025-01-01 10:00");
    add_snap_tags(g_t, "2025-01-02 10:00", tagged);
    cf_forget_policy p = policy();
    p.last = 1;
    p.hourly = 1;
    p.daily = 1;
    p.weekly = 1;
    p.monthly = 1;
    p.yearly = 1;
    p.within_ns = 3600LL * NS;
    static const char *const kt[] = {"keep", NULL};
    p.keep_tags = kt;
    static const kept want[] = {
        {"2025-01-02 10:00", "last, hourly, daily, weekly, monthly, yearly, within, tag"}};
    expect_plan(g_t, &p, want, NKEPT(want));
}

/* ------------------------------------------------------------------ local time */

/* Periods are local time: in UTC+5 (POSIX TZ "XXX-5"), 2024-12-31 20:00 UTC is already
 * 2025-01-01 01:00, a different day and year from 2024-12-31 18:00 UTC (23:00 local). */
static void test_local_time(void **state)
{
    (void)state;
    add_snap(g_t, "2024-06-01 12:00");
    add_snap(g_t, "2024-12-31 18:00");
    add_snap(g_t, "2024-12-31 20:00");
    cf_forget_policy p = policy();
    p.yearly = 2;
    static const kept utc[] = {{"2024-12-31 20:00", "yearly"}};
    expect_plan(g_t, &p, utc, NKEPT(utc));
    set_tz("XXX-5");
    static const kept plus5[] = {{"2024-12-31 20:00", "yearly"}, {"2024-12-31 18:00", "yearly"}};
    expect_plan(g_t, &p, plus5, NKEPT(plus5));
    p.yearly = 0;
    p.daily = 2;
    static const kept daily5[] = {{"2024-12-31 20:00", "daily"}, {"2024-12-31 18:00", "daily"}};
    expect_plan(g_t, &p, daily5, NKEPT(daily5));
    set_tz("UTC");
    static const kept dailyutc[] = {{"2024-12-31 20:00", "daily"}, {"2024-06-01 12:00", "daily"}};
    expect_plan(g_t, &p, dailyutc, NKEPT(dailyutc));
}

/* ------------------------------------------------------------------ grouping */

static void two_hosts(timeline *t)
{
    for (int d = 1; d <= 10; d++) {
        char when[32], label[48];
        snprintf(when, sizeof(when), "2025-04-%02d 12:00", d);
        const char *host = d % 2 ? "alpha" : "beta";
        snprintf(label, sizeof(label), "%s %s", host, when);
        add_snap_at(t, label, utc_ns(when), host, "/data", NULL);
    }
}

static void test_two_hosts_grouped_separately(void **state)
{
    (void)state;
    two_hosts(g_t);
    cf_forget_policy p = policy();
    p.last = 2;
    static const kept want[] = {{"alpha 2025-04-09 12:00", "last"},
                                {"alpha 2025-04-07 12:00", "last"},
                                {"beta 2025-04-10 12:00", "last"},
                                {"beta 2025-04-08 12:00", "last"}};
    assert_int_equal(expect_plan(g_t, &p, want, NKEPT(want)), 2);

    /* the groups are described by host and paths */
    cf_forget_item *items = NULL;
    size_t n = 0;
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, NULL));
    bool alpha = false, beta = false;
    for (size_t i = 0; i < n; i++) {
        const char *host = cf_snapshot_host(items[i].snap);
        assert_non_null(strstr(items[i].group, host));
        assert_non_null(strstr(items[i].group, "/data"));
        alpha |= strcmp(host, "alpha") == 0;
        beta |= strcmp(host, "beta") == 0;
    }
    assert_true(alpha && beta);
    cf_forget_items_free(items, n);

    /* grouped by paths only, the two hosts form one group */
    p.group_by = CF_GROUP_PATHS;
    static const kept merged[] = {{"beta 2025-04-10 12:00", "last"},
                                  {"alpha 2025-04-09 12:00", "last"}};
    assert_int_equal(expect_plan(g_t, &p, merged, NKEPT(merged)), 1);
}

static void test_group_by_host_merges_paths(void **state)
{
    (void)state;
    add_snap_at(g_t, "p1 old", utc_ns("2025-04-01 12:00"), "alpha", "/p1", NULL);
    add_snap_at(g_t, "p2 mid", utc_ns("2025-04-02 12:00"), "alpha", "/p2", NULL);
    add_snap_at(g_t, "p1 new", utc_ns("2025-04-03 12:00"), "alpha", "/p1", NULL);
    cf_forget_policy p = policy();
    p.last = 1;
    static const kept by_default[] = {{"p1 new", "last"}, {"p2 mid", "last"}};
    assert_int_equal(expect_plan(g_t, &p, by_default, NKEPT(by_default)), 2);
    p.group_by = CF_GROUP_HOST;
    static const kept by_host[] = {{"p1 new", "last"}};
    assert_int_equal(expect_plan(g_t, &p, by_host, NKEPT(by_host)), 1);
}

static void test_group_by_tags(void **state)
{
    (void)state;
    static const char *const a[] = {"a", NULL};
    static const char *const b[] = {"b", NULL};
    static const char *const ab[] = {"a", "b", NULL};
    static const char *const ba[] = {"b", "a", NULL};
    add_snap_tags(g_t, "2025-04-01 12:00", a);
    add_snap_tags(g_t, "2025-04-02 12:00", b);
    add_snap_tags(g_t, "2025-04-03 12:00", ab);
    add_snap_tags(g_t, "2025-04-04 12:00", ba); /* same set as a,b: same group */
    add_snap_tags(g_t, "2025-04-05 12:00", a);
    add_snap_tags(g_t, "2025-04-06 12:00", NULL);
    add_snap_tags(g_t, "2025-04-07 12:00", NULL);
    cf_forget_policy p = policy();
    p.last = 1;
    p.group_by = CF_GROUP_TAGS;
    static const kept want[] = {{"2025-04-05 12:00", "last"},
                                {"2025-04-02 12:00", "last"},
                                {"2025-04-04 12:00", "last"},
                                {"2025-04-07 12:00", "last"}};
    assert_int_equal(expect_plan(g_t, &p, want, NKEPT(want)), 4);
    /* default grouping ignores tags */
    p.group_by = 0;
    static const kept one[] = {{"2025-04-07 12:00", "last"}};
    assert_int_equal(expect_plan(g_t, &p, one, NKEPT(one)), 1);
}

/* ------------------------------------------------------------------ filters, refusals */

static void test_filter_host(void **state)
{
    (void)state;
    two_hosts(g_t);
    cf_forget_policy p = policy();
    p.last = 1;
    cf_snapshot_filter f = {"beta", NULL, NULL};
    static const kept want[] = {{"beta 2025-04-10 12:00", "last"}};
    expect_plan_f(g_t, &p, &f, want, NKEPT(want), 5);

    cf_forget_item *items = NULL;
    size_t n = 0, removed = 0;
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, &f));
    th_ok(cf_forget_apply(g_t->r, items, n, &removed));
    cf_forget_items_free(items, n);
    assert_int_equal(removed, 4);
    /* alpha's five snapshots are untouched */
    cf_snapshot **list = NULL;
    size_t nl = 0;
    th_ok(cf_snapshot_list(&list, &nl, g_t->r, NULL));
    assert_int_equal(nl, 6);
    size_t nalpha = 0;
    for (size_t i = 0; i < nl; i++)
        nalpha += strcmp(cf_snapshot_host(list[i]), "alpha") == 0;
    assert_int_equal(nalpha, 5);
    cf_snapshot_list_free(list, nl);
}

static void test_empty_policy_refused(void **state)
{
    (void)state;
    add_series(g_t, "2025-05-01 12:00", "2025-05-03 12:00", 86400);
    cf_storage *st = th_storage(URL);
    size_t before = th_count(st, "snapshots/");
    cf_forget_item *items = (cf_forget_item *)(uintptr_t)1;
    size_t n = 99;
    cf_forget_policy p = policy();
    th_expect(cf_forget_plan(&items, &n, g_t->r, &p, NULL), CF_EINVAL, NULL);
    assert_null(items);
    assert_int_equal(n, 0);
    /* an empty tag list is no rule either; a group-by alone is no rule */
    static const char *const none[] = {NULL};
    p.keep_tags = none;
    p.group_by = CF_GROUP_TAGS;
    th_expect(cf_forget_plan(&items, &n, g_t->r, &p, NULL), CF_EINVAL, NULL);
    assert_int_equal(th_count(st, "snapshots/"), before);
    cf_storage_close(st);
}

/* An empty repository: a plan of nothing, and nothing to apply. */
static void test_empty_repository(void **state)
{
    (void)state;
    cf_forget_policy p = policy();
    p.daily = 7;
    cf_forget_item *items = NULL;
    size_t n = 1, removed = 1;
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, NULL));
    assert_int_equal(n, 0);
    th_ok(cf_forget_apply(g_t->r, items, n, &removed));
    assert_int_equal(removed, 0);
    cf_forget_items_free(items, n);
}

/* ------------------------------------------------------------------ apply */

/* Snapshots made by real backups (stdin source, chosen times). */
static void backup_at(timeline *t, const char *when, const char *content)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    size_t len = strlen(content);
    assert_int_equal(write(fds[1], content, len), (ssize_t)len);
    close(fds[1]);
    cf_backup_opts o;
    memset(&o, 0, sizeof(o));
    o.stdin_name = "note.txt";
    o.stdin_fd = fds[0];
    o.host = "h1";
    o.time_ns = utc_ns(when);
    o.threads = 1;
    snap_ref *ref = &t->v[t->n];
    th_ok(cf_backup(t->r, &o, ref->id, NULL));
    close(fds[0]);
    snprintf(ref->label, sizeof(ref->label), "%s", when);
    t->n++;
}

static void test_apply_removes_exactly_the_others(void **state)
{
    (void)state;
    for (int d = 1; d <= 10; d++) {
        char when[32], content[32];
        snprintf(when, sizeof(when), "2025-08-%02d 12:00", d);
        snprintf(content, sizeof(content), "day %d\n", d);
        backup_at(g_t, when, content);
    }
    /* a document-only snapshot: its path (/data) differs from the stdin backups' (/note.txt),
     * so it forms a group of its own */
    add_snap(g_t, "2025-08-10 18:00");
    cf_storage *st = th_storage(URL);
    th_names before = th_list(st, "snapshots/");
    assert_int_equal(before.n, 11);

    cf_forget_policy p = policy();
    p.last = 2;
    p.weekly = 2;
    /* 2025-08-10 is a Sunday (W32), 08-03 a Sunday (W31) */
    static const kept want[] = {{"2025-08-10 12:00", "last, weekly"},
                                {"2025-08-09 12:00", "last"},
                                {"2025-08-03 12:00", "weekly"},
                                {"2025-08-10 18:00", "last, weekly"}};
    expect_plan(g_t, &p, want, NKEPT(want));

    /* planning alone (the dry run) changes nothing */
    th_names mid = th_list(st, "snapshots/");
    assert_int_equal(mid.n, before.n);
    for (size_t i = 0; i < mid.n; i++)
        assert_string_equal(mid.names[i], before.names[i]);
    th_names_free(&mid);

    cf_forget_item *items = NULL;
    size_t n = 0, removed = 0;
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, NULL));
    th_ok(cf_forget_apply(g_t->r, items, n, &removed));
    assert_int_equal(removed, 7);
    /* the exclusive lock is released again */
    assert_int_equal(th_count(st, "locks/"), 0);

    th_names after = th_list(st, "snapshots/");
    assert_int_equal(after.n, NKEPT(want));
    for (size_t k = 0; k < NKEPT(want); k++) {
        char name[128];
        snprintf(name, sizeof(name), "snapshots/%s", id_of(g_t, want[k].label));
        bool found = false;
        for (size_t i = 0; i < after.n; i++)
            found |= strcmp(after.names[i], name) == 0;
        if (!found)
            fail_msg("kept snapshot '%s' is gone after apply", want[k].label);
    }
    th_names_free(&after);

    /* applying the same (now stale) plan again is harmless */
    th_ok(cf_forget_apply(g_t->r, items, n, &removed));
    assert_int_equal(removed, 0);
    assert_int_equal(th_count(st, "snapshots/"), NKEPT(want));
    cf_forget_items_free(items, n);

    /* the kept backups still read back */
    cf_snapshot *s = NULL;
    th_ok(cf_snapshot_find(&s, g_t->r, id_of(g_t, "2025-08-03 12:00"), NULL));
    char path[] = "/tmp/coffer-forget-dump-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    th_ok(cf_dump(g_t->r, s, "/note.txt", fd));
    char buf[32] = {0};
    assert_int_equal(pread(fd, buf, sizeof(buf) - 1, 0), 6);
    assert_string_equal(buf, "day 3\n");
    close(fd);
    unlink(path);
    cf_snapshot_free(s);

    th_names_free(&before);
    cf_storage_close(st);
}

/* apply refuses while another handle holds a lock, and removes nothing */
static void test_apply_respects_locks(void **state)
{
    (void)state;
    add_series(g_t, "2025-05-01 12:00", "2025-05-05 12:00", 86400);
    cf_repo *other = NULL;
    th_ok(cf_repo_open(&other, URL, TEST_PASSWORD));
    th_ok(cf_repo_lock(other, CF_LOCK_SHARED));
    cf_forget_policy p = policy();
    p.last = 1;
    cf_forget_item *items = NULL;
    size_t n = 0, removed = 9;
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, NULL));
    th_expect(cf_forget_apply(g_t->r, items, n, &removed), CF_ELOCKED, NULL);
    assert_int_equal(removed, 0);
    cf_storage *st = th_storage(URL);
    assert_int_equal(th_count(st, "snapshots/"), 5);
    th_ok(cf_repo_unlock(other));
    th_ok(cf_forget_apply(g_t->r, items, n, &removed));
    assert_int_equal(removed, 4);
    assert_int_equal(th_count(st, "snapshots/"), 1);
    cf_forget_items_free(items, n);
    cf_storage_close(st);
    cf_repo_close(other);
}

/* a storage failure part-way through apply: the error is returned, what was removed is
 * counted, the lock is released, and a new plan + apply finishes the job */
static void test_apply_storage_failure(void **state)
{
    (void)state;
    add_series(g_t, "2025-05-01 12:00", "2025-05-08 12:00", 86400);
    cf_forget_policy p = policy();
    p.last = 2;
    cf_forget_item *items = NULL;
    size_t n = 0, removed = 99;
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, NULL));
    th_ok(cf_storage_mem_inject("forget", "remove", 3, CF_EIO));
    th_expect(cf_forget_apply(g_t->r, items, n, &removed), CF_EIO, "injected");
    th_ok(cf_storage_mem_inject("forget", "remove", 0, 0));
    cf_forget_items_free(items, n);
    assert_int_equal(removed, 2);
    cf_storage *st = th_storage(URL);
    assert_int_equal(th_count(st, "snapshots/"), 6);
    assert_int_equal(th_count(st, "locks/"), 0);
    static const kept want[] = {{"2025-05-08 12:00", "last"}, {"2025-05-07 12:00", "last"}};
    expect_plan_f(g_t, &p, NULL, want, NKEPT(want), 6);
    th_ok(cf_forget_plan(&items, &n, g_t->r, &p, NULL));
    th_ok(cf_forget_apply(g_t->r, items, n, &removed));
    assert_int_equal(removed, 4);
    cf_forget_items_free(items, n);
    assert_int_equal(th_count(st, "snapshots/"), 2);
    cf_storage_close(st);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_last),
        T(test_daily),
        T(test_weekly),
        T(test_monthly),
        T(test_daily_weekly_monthly),
        T(test_hourly),
        T(test_hourly_unlimited_and_daily),
        T(test_yearly),
        T(test_monthly_with_gaps),
        T(test_weekly_iso_year_boundary),
        T(test_weekly_iso_year_boundary_2024),
        T(test_daily_unlimited),
        T(test_within),
        T(test_within_boundary_exclusive),
        T(test_within_per_group),
        T(test_last_and_tag),
        T(test_all_rules_reason_order),
        T(test_local_time),
        T(test_two_hosts_grouped_separately),
        T(test_group_by_host_merges_paths),
        T(test_group_by_tags),
        T(test_filter_host),
        T(test_empty_policy_refused),
        T(test_empty_repository),
        T(test_apply_removes_exactly_the_others),
        T(test_apply_respects_locks),
        T(test_apply_storage_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
