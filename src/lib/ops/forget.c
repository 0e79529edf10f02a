/*
 * forget.c - retention policies: group snapshots, keep the newest of each period per rule
 * (last, hourly, daily, weekly, monthly, yearly), those within a duration and those carrying
 * a tag; the union of the rules is kept and every other snapshot document is removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/ops.h"

static char *group_of(const cf_snapshot *s, unsigned by)
{
    cf_buf b;
    cf_buf_init(&b, 1 << 20);
    if (by & CF_GROUP_HOST)
        cf_buf_printf(&b, "host %s", s->host);
    if (by & CF_GROUP_PATHS) {
        cf_buf_printf(&b, "%spaths ", b.len ? ", " : "");
        for (size_t i = 0; i < s->npaths; i++)
            cf_buf_printf(&b, "%s%s", i ? ":" : "", s->paths[i]);
    }
    if (by & CF_GROUP_TAGS) {
        /* tags sorted so that the order they were given in does not matter */
        char **t = cf_calloc(s->ntags ? s->ntags : 1, sizeof(char *));
        if (t) {
            if (s->ntags)
                memcpy(t, s->tags, s->ntags * sizeof(char *));
            for (size_t i = 1; i < s->ntags; i++)
                for (size_t j = i; j > 0 && strcmp(t[j - 1], t[j]) > 0; j--) {
                    char *x = t[j];
                    t[j] = t[j - 1];
                    t[j - 1] = x;
                }
            cf_buf_printf(&b, "%stags ", b.len ? ", " : "");
            for (size_t i = 0; i < s->ntags; i++)
                cf_buf_printf(&b, "%s%s", i ? "," : "", t[i]);
            free(t);
        }
    }
    if (by & CF_GROUP_SOURCE)
        cf_buf_printf(&b, "%ssource %s", b.len ? ", " : "", s->source_kind);
    if (!b.len)
        cf_buf_append_str(&b, "all");
    return (char *)cf_buf_steal(&b, NULL);
}

/* The period a snapshot falls in for a rule, as a comparable number (local time). */
static long long bucket(int rule, int64_t ns)
{
    time_t t = (time_t)(ns / 1000000000LL);
    struct tm tm;
    localtime_r(&t, &tm);
    long long y = tm.tm_year + 1900;
    switch (rule) {
    case 1: /* hourly */
        return ((y * 1000 + tm.tm_yday) * 100) + tm.tm_hour;
    case 2: /* daily */
        return y * 1000 + tm.tm_yday;
    case 3: { /* weekly: ISO 8601 week */
        char buf[16];
        strftime(buf, sizeof(buf), "%G%V", &tm);
        return strtoll(buf, NULL, 10);
    }
    case 4: /* monthly */
        return y * 100 + tm.tm_mon;
    default: /* yearly */
        return y;
    }
}

static void add_reason(cf_forget_item *it, const char *r)
{
    size_t n = strlen(it->reasons);
    snprintf(it->reasons + n, sizeof(it->reasons) - n, "%s%s", n ? ", " : "", r);
    it->keep = true;
}

static int cmp_items(const void *a, const void *b)
{
    const cf_forget_item *x = a, *y = b;
    int g = strcmp(x->group, y->group);
    if (g)
        return g;
    if (x->snap->time != y->snap->time)
        return x->snap->time > y->snap->time ? -1 : 1; /* newest first */
    return strcmp(x->snap->id, y->snap->id);
}

static void apply_group(cf_forget_item *v, size_t n, const cf_forget_policy *p)
{
    static const char *names[] = {"last", "hourly", "daily", "weekly", "monthly", "yearly"};
    int counts[6] = {p->last, p->hourly, p->daily, p->weekly, p->monthly, p->yearly};
    long long last_bucket[6] = {0};
    bool have[6] = {false};
    int64_t newest = n ? v[0].snap->time : 0;
    for (size_t i = 0; i < n; i++) {
        cf_forget_item *it = &v[i];
        if (counts[0] != 0) {
            add_reason(it, names[0]);
            if (counts[0] > 0)
                counts[0]--;
        }
        for (int r = 1; r < 6; r++) {
            if (counts[r] == 0)
                continue;
            long long bk = bucket(r, it->snap->time);
            if (have[r] && bk == last_bucket[r])
                continue; /* a newer snapshot already represents this period */
            have[r] = true;
            last_bucket[r] = bk;
            add_reason(it, names[r]);
            if (counts[r] > 0)
                counts[r]--;
        }
        if (p->within_ns > 0 && it->snap->time > newest - p->within_ns)
            add_reason(it, "within");
        for (const char *const *t = p->keep_tags; t && *t; t++) {
            bool hit = false;
            for (size_t k = 0; k < it->snap->ntags && !hit; k++)
                hit = strcmp(it->snap->tags[k], *t) == 0;
            if (hit) {
                add_reason(it, "tag");
                break;
            }
        }
    }
}

int cf_forget_plan(cf_forget_item **out, size_t *out_count, cf_repo *repo,
                   const cf_forget_policy *p, const cf_snapshot_filter *filter)
{
    *out = NULL;
    *out_count = 0;
    bool any = p->last || p->hourly || p->daily || p->weekly || p->monthly || p->yearly ||
               p->within_ns > 0 || (p->keep_tags && p->keep_tags[0]);
    if (!any) {
        cf_error_set(CF_EINVAL, 0, "no retention rule given: refusing to forget every snapshot");
        cf_error_hint("give at least one --keep-* option");
        return CF_EINVAL;
    }
    cf_snapshot **list = NULL;
    size_t n = 0;
    int rc = cf_snapshot_list(&list, &n, repo, filter);
    if (rc)
        return rc;
    cf_forget_item *v = cf_calloc(n ? n : 1, sizeof(*v));
    if (!v) {
        cf_snapshot_list_free(list, n);
        return CF_ENOMEM;
    }
    unsigned by = p->group_by ? p->group_by : (CF_GROUP_HOST | CF_GROUP_PATHS);
    for (size_t i = 0; i < n; i++) {
        v[i].snap = list[i];
        list[i] = NULL;
        if (!(v[i].group = group_of(v[i].snap, by))) {
            cf_forget_items_free(v, n);
            free(list);
            return CF_ENOMEM;
        }
    }
    free(list);
    qsort(v, n, sizeof(*v), cmp_items);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(v[j].group, v[i].group) == 0)
            j++;
        apply_group(v + i, j - i, p);
        i = j;
    }
    *out = v;
    *out_count = n;
    return 0;
}

int cf_forget_apply(cf_repo *repo, const cf_forget_item *items, size_t count, size_t *out_removed)
{
    if (cf_repo__require_admin(repo, "forget"))
        return CF_EPERM;
    *out_removed = 0;
    int rc = cf_repo_lock(repo, CF_LOCK_EXCLUSIVE);
    if (rc)
        return rc;
    size_t refused = 0;
    char first[65] = "", why[512] = "";
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (items[i].keep)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "snapshots/%s", items[i].snap->id);
        rc = cf_storage_remove(repo->st, name);
        if (rc == CF_ENOTFOUND) {
            rc = 0; /* already gone */
        } else if (rc == 0) {
            (*out_removed)++;
        } else if (rc == CF_EPERM || rc == CF_EAUTH) {
            /* under retention (S3 Object Lock): the snapshot stays, the others go */
            if (!refused++) {
                snprintf(first, sizeof(first), "%s", items[i].snap->id);
                snprintf(why, sizeof(why), "%s", cf_error_last()->message);
            }
            rc = 0;
        }
    }
    cf_repo_unlock(repo);
    if (rc == 0 && refused) {
        rc = cf_error_set(CF_EPARTIAL, 0, "%zu snapshots were kept: the storage refuses to delete "
                          "them (snapshot %.8s: %s)", refused, first, why);
        cf_error_hint("they can be forgotten once their retention period has passed");
    }
    return rc;
}

void cf_forget_items_free(cf_forget_item *items, size_t count)
{
    if (!items)
        return;
    for (size_t i = 0; i < count; i++) {
        cf_snapshot_free(items[i].snap);
        free(items[i].group);
    }
    free(items);
}
