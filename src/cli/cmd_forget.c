/*
 * cmd_forget.c - `coffer forget` (retention policies) and `coffer prune` (space reclamation).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static bool parse_count(const char *s, int *out)
{
    if (strcmp(s, "unlimited") == 0 || strcmp(s, "-1") == 0) {
        *out = -1;
        return true;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > 1000000)
        return false;
    *out = (int)v;
    return true;
}

/* "1y2m3d4h" (y=365d, m=30d, w=7d) or a plain number of days. */
static bool parse_duration(const char *s, int64_t *out_ns)
{
    int64_t total = 0;
    const char *p = s;
    if (!*p)
        return false;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0)
            return false;
        int64_t unit;
        switch (*end) {
        case 'y': unit = 365LL * 86400; break;
        case 'm': unit = 30LL * 86400; break;
        case 'w': unit = 7LL * 86400; break;
        case 'd': case '\0': unit = 86400; break;
        case 'h': unit = 3600; break;
        default: return false;
        }
        total += v * unit;
        p = *end ? end + 1 : end;
    }
    *out_ns = total * 1000000000LL;
    return true;
}

static unsigned parse_group(const char *s, bool *ok)
{
    unsigned bits = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    *ok = true;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "host") == 0) bits |= CF_GROUP_HOST;
        else if (strcmp(t, "paths") == 0) bits |= CF_GROUP_PATHS;
        else if (strcmp(t, "tags") == 0) bits |= CF_GROUP_TAGS;
        else if (strcmp(t, "source") == 0) bits |= CF_GROUP_SOURCE;
        else *ok = false;
    }
    return bits;
}

static void on_message(const char *path, const char *m, void *payload)
{
    (void)path;
    (void)payload;
    if (g.json)
        return;
    if (!g.quiet)
        printf("%s\n", m);
}

static int run_prune(cf_repo *repo, const cf_prune_opts *po)
{
    cf_prune_stats st;
    int rc = cf_prune(repo, po, &st);
    if (rc)
        return cli_fail(rc);
    if (g.json) {
        cli_print_json(json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                                 "message_type", "prune", "dry_run", po->dry_run, "packs",
                                 (json_int_t)st.packs, "packs_deleted", (json_int_t)st.packs_deleted,
                                 "packs_repacked", (json_int_t)st.packs_repacked, "blobs_removed",
                                 (json_int_t)st.blobs_removed, "bytes_total", (json_int_t)st.bytes_total,
                                 "bytes_freed", (json_int_t)st.bytes_freed, "bytes_repacked",
                                 (json_int_t)st.bytes_repacked, "packs_locked",
                                 (json_int_t)st.packs_locked, "index_files_written",
                                 (json_int_t)st.index_files_written, "seconds", st.seconds));
    } else if (!g.quiet) {
        printf("%s %.1f MiB of %.1f MiB (%llu packs deleted, %llu repacked) in %.2f s\n",
               po->dry_run ? "would free" : "freed", (double)st.bytes_freed / 1048576.0,
               (double)st.bytes_total / 1048576.0, (unsigned long long)st.packs_deleted,
               (unsigned long long)st.packs_repacked, st.seconds);
        if (st.packs_locked)
            printf("%llu packs are under retention and were kept; a later prune removes them\n",
                   (unsigned long long)st.packs_locked);
    }
    return 0;
}

static bool parse_prune_opt(int c, const char *arg, cf_prune_opts *po, int *err)
{
    enum { O_UNUSED = OPT_FIRST_LOCAL + 40, O_REPACK };
    if (c == O_UNUSED) {
        char *end;
        double v = strtod(arg, &end);
        if (end == arg || (*end && strcmp(end, "%") != 0) || v < 0 || v > 100)
            *err = cli_usage("--max-unused takes a percentage, not '%s'", arg);
        po->max_unused_percent = v;
        return true;
    }
    if (c == O_REPACK) {
        /* sizes like 10G */
        char *end;
        double v = strtod(arg, &end);
        double mul = 1;
        switch (*end) {
        case 'k': case 'K': mul = 1024; end++; break;
        case 'm': case 'M': mul = 1048576; end++; break;
        case 'g': case 'G': mul = 1073741824.0; end++; break;
        case 't': case 'T': mul = 1099511627776.0; end++; break;
        default: break;
        }
        if (end == arg || *end || v < 0)
            *err = cli_usage("--max-repack-size takes a size such as 10G, not '%s'", arg);
        po->max_repack_bytes = (uint64_t)(v * mul);
        return true;
    }
    return false;
}

#define PRUNE_OPTIONS                                                           \
    {"max-unused", required_argument, NULL, OPT_FIRST_LOCAL + 40},              \
    {"max-repack-size", required_argument, NULL, OPT_FIRST_LOCAL + 41}

int cmd_forget(int argc, char **argv)
{
    enum { O_LAST = OPT_FIRST_LOCAL, O_HOURLY, O_DAILY, O_WEEKLY, O_MONTHLY, O_YEARLY, O_WITHIN,
           O_KTAG, O_GROUP, O_DRY, O_PRUNE, O_HOST, O_TAG, O_PATH };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        PRUNE_OPTIONS,
        {"keep-last", required_argument, NULL, O_LAST},
        {"keep-hourly", required_argument, NULL, O_HOURLY},
        {"keep-daily", required_argument, NULL, O_DAILY},
        {"keep-weekly", required_argument, NULL, O_WEEKLY},
        {"keep-monthly", required_argument, NULL, O_MONTHLY},
        {"keep-yearly", required_argument, NULL, O_YEARLY},
        {"keep-within", required_argument, NULL, O_WITHIN},
        {"keep-tag", required_argument, NULL, O_KTAG},
        {"group-by", required_argument, NULL, O_GROUP},
        {"dry-run", no_argument, NULL, O_DRY},
        {"prune", no_argument, NULL, O_PRUNE},
        {"host", required_argument, NULL, O_HOST},
        {"tag", required_argument, NULL, O_TAG},
        {"path", required_argument, NULL, O_PATH},
        {NULL, 0, NULL, 0},
    };
    cf_forget_policy p;
    cf_prune_opts po;
    cf_snapshot_filter f = {NULL, NULL, NULL};
    cli_strs ktags = {0}, tags = {0}, paths = {0};
    bool dry = false, prune = false;
    int c, rc = 0;
    memset(&p, 0, sizeof(p));
    memset(&po, 0, sizeof(po));
    po.max_unused_percent = -1; /* the default unless --max-unused is given */
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qvn", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        int err = 0;
        if (parse_prune_opt(c, optarg, &po, &err)) {
            if (err) {
                rc = err;
                goto out;
            }
            continue;
        }
        bool ok = true;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case O_LAST: ok = parse_count(optarg, &p.last); break;
        case O_HOURLY: ok = parse_count(optarg, &p.hourly); break;
        case O_DAILY: ok = parse_count(optarg, &p.daily); break;
        case O_WEEKLY: ok = parse_count(optarg, &p.weekly); break;
        case O_MONTHLY: ok = parse_count(optarg, &p.monthly); break;
        case O_YEARLY: ok = parse_count(optarg, &p.yearly); break;
        case O_WITHIN: ok = parse_duration(optarg, &p.within_ns); break;
        case O_KTAG: cli_strs_push(&ktags, optarg); break;
        case O_GROUP: p.group_by = parse_group(optarg, &ok); break;
        case 'n':
        case O_DRY: dry = true; break;
        case O_PRUNE: prune = true; break;
        case O_HOST: f.host = optarg; break;
        case O_TAG: cli_strs_push(&tags, optarg); break;
        case O_PATH: cli_strs_push(&paths, optarg); break;
        default:
            rc = cli_usage("forget: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
        if (!ok) {
            rc = cli_usage("forget: invalid value '%s' for %s", optarg, argv[optind - 1]);
            goto out;
        }
    }
    if (optind < argc) {
        rc = cli_usage("forget takes no arguments (snapshot ids: not supported yet; use a policy)");
        goto out;
    }
    p.keep_tags = ktags.v;
    f.tags = tags.v;
    f.paths = paths.v;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_forget_item *items = NULL;
    size_t n = 0;
    int frc = cf_forget_plan(&items, &n, repo, &p, &f);
    if (frc) {
        rc = cli_fail(frc);
        cf_repo_close(repo);
        goto out;
    }
    size_t nremove = 0;
    json_t *groups = g.json ? json_array() : NULL;
    const char *cur = NULL;
    json_t *gj = NULL;
    for (size_t i = 0; i < n; i++) {
        cf_forget_item *it = &items[i];
        if (!it->keep)
            nremove++;
        char when[40];
        cf_time_format(when, cf_snapshot_time(it->snap));
        if (!cur || strcmp(cur, it->group) != 0) {
            cur = it->group;
            if (g.json) {
                gj = json_pack("{s:s, s:[], s:[]}", "group", cur, "keep", "remove");
                json_array_append_new(groups, gj);
            } else if (!g.quiet) {
                printf("%s:\n", cur);
            }
        }
        if (g.json) {
            json_t *o = json_pack("{s:s, s:s}", "id", cf_snapshot_id(it->snap), "time", when);
            if (it->keep)
                json_object_set_new(o, "reasons", json_string(it->reasons));
            json_array_append_new(json_object_get(gj, it->keep ? "keep" : "remove"), o);
        } else if (!g.quiet) {
            printf("  %s %.8s  %.19s  %s\n", it->keep ? "keep  " : "remove", cf_snapshot_id(it->snap),
                   when, it->keep ? it->reasons : "");
        }
    }
    size_t removed = 0;
    bool partial = false;
    if (!dry && nremove) {
        frc = cf_forget_apply(repo, items, n, &removed);
        if (frc)
            rc = cli_fail(frc);
        partial = frc == CF_EPARTIAL; /* some stay under retention: the rest may be pruned */
    }
    if (g.json)
        cli_print_json(json_pack("{s:s, s:b, s:o, s:I, s:I}", "message_type", "forget", "dry_run",
                                 dry, "groups", groups, "would_remove", (json_int_t)nremove,
                                 "removed", (json_int_t)removed));
    else if (!g.quiet)
        printf("%s %zu of %zu snapshots\n", dry ? "would remove" : "removed", dry ? nremove : removed, n);
    cf_forget_items_free(items, n);
    if ((rc == 0 || partial) && prune) {
        po.dry_run = dry;
        po.on_message = on_message;
        int prc = run_prune(repo, &po);
        if (prc)
            rc = prc;
    }
    cf_repo_close(repo);
out:
    cli_strs_free(&ktags);
    cli_strs_free(&tags);
    cli_strs_free(&paths);
    return rc;
}

int cmd_prune(int argc, char **argv)
{
    enum { O_DRY = OPT_FIRST_LOCAL };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS, PRUNE_OPTIONS, {"dry-run", no_argument, NULL, O_DRY}, {NULL, 0, NULL, 0}};
    cf_prune_opts po;
    int c;
    memset(&po, 0, sizeof(po));
    po.max_unused_percent = -1; /* the default unless --max-unused is given */
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qvn", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        int err = 0;
        if (parse_prune_opt(c, optarg, &po, &err)) {
            if (err)
                return err;
            continue;
        }
        if (c == 'r')
            g.repo = optarg;
        else if (c == 'q')
            g.quiet = true;
        else if (c == 'n' || c == O_DRY)
            po.dry_run = true;
        else
            return cli_usage("prune: unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        return cli_usage("prune takes no arguments");
    cf_repo *repo = NULL;
    int rc = cli_open(&repo);
    if (rc)
        return rc;
    po.on_message = on_message;
    rc = run_prune(repo, &po);
    cf_repo_close(repo);
    return rc;
}
