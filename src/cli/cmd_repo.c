/*
 * cmd_repo.c - repository-level commands: init, snapshots, check, stats, cat, unlock.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Parse only the common options; positional arguments are left from optind. */
static int parse_common(int argc, char **argv, const char *cmd)
{
    static const struct option opts[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        if (c == 'r')
            g.repo = optarg;
        else if (c == 'q')
            g.quiet = true;
        else if (c == 'v')
            g.verbose++;
        else
            return cli_usage("%s: unknown or incomplete option '%s'", cmd, argv[optind - 1]);
    }
    return 0;
}

static bool parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    char *end;
    v = strtoull(s, &end, 10);
    if (end == s || *end || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

int cmd_init(int argc, char **argv)
{
    enum { O_CMIN = OPT_FIRST_LOCAL, O_CAVG, O_CMAX, O_PACK, O_LEVEL, O_KDF };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"chunk-min", required_argument, NULL, O_CMIN},
        {"chunk-avg", required_argument, NULL, O_CAVG},
        {"chunk-max", required_argument, NULL, O_CMAX},
        {"pack-size", required_argument, NULL, O_PACK},
        {"compression-level", required_argument, NULL, O_LEVEL},
        {"kdf-log-n", required_argument, NULL, O_KDF},
        {NULL, 0, NULL, 0},
    };
    cf_init_opts io = {0, 0, 0, 0, -1, 0};
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        uint32_t v = 0;
        bool ok = true;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case O_CMIN: ok = parse_u32(optarg, &io.chunk_min); break;
        case O_CAVG: ok = parse_u32(optarg, &io.chunk_avg); break;
        case O_CMAX: ok = parse_u32(optarg, &io.chunk_max); break;
        case O_PACK: ok = parse_u32(optarg, &io.pack_size); break;
        case O_LEVEL: ok = parse_u32(optarg, &v); io.compression_level = (int)v; break;
        case O_KDF: ok = parse_u32(optarg, &io.kdf_log_n); break;
        default:
            return cli_usage("init: unknown or incomplete option '%s'", argv[optind - 1]);
        }
        if (!ok)
            return cli_usage("init: invalid number '%s'", optarg);
    }
    if (optind < argc)
        return cli_usage("init takes no arguments");
    if (!g.repo)
        return cli_usage("no repository given: use --repo or set COFFER_REPO");
    cli_cred cred;
    int rc = cli_cred_get(&cred, true, false);
    if (rc)
        return rc;
    cred.c.kdf_log_n = io.kdf_log_n;
    rc = cf_repo_init_cred(g.repo, &cred.c, &io);
    cli_cred_free(&cred);
    if (rc)
        return cli_fail(rc);
    if (g.json)
        cli_print_json(json_pack("{s:s, s:s}", "message_type", "initialized", "repository", g.repo));
    else if (!g.quiet)
        printf("created coffer repository at %s\n"
               "keep the password safe: without it the data cannot be recovered\n",
               g.repo);
    return 0;
}

static const char *type_name(cf_backup_type t)
{
    return t == CF_BACKUP_FULL ? "full" : t == CF_BACKUP_DIFFERENTIAL ? "differential" : "incremental";
}

json_t *cli_snapshot_json(const cf_snapshot *s)
{
    char when[40];
    cf_time_format(when, cf_snapshot_time(s));
    json_t *paths = json_array(), *tags = json_array();
    for (size_t i = 0; i < cf_snapshot_path_count(s); i++)
        json_array_append_new(paths, json_string(cf_snapshot_path(s, i)));
    for (size_t i = 0; i < cf_snapshot_tag_count(s); i++)
        json_array_append_new(tags, json_string(cf_snapshot_tag(s, i)));
    const cf_backup_stats *st = cf_snapshot_stats(s);
    json_t *o = json_pack("{s:s, s:s%, s:s, s:s, s:s, s:o, s:o, s:s, s:s, s:s, s:{s:I, s:I, s:I, s:I}}",
                          "id", cf_snapshot_id(s), "short_id", cf_snapshot_id(s), (size_t)8, "time",
                          when, "host", cf_snapshot_host(s), "username", cf_snapshot_username(s),
                          "paths", paths, "tags", tags, "type", type_name(cf_snapshot_type(s)),
                          "tree", cf_snapshot_tree(s), "source", cf_snapshot_source_kind(s), "summary",
                          "files", (json_int_t)(st->files_new + st->files_changed + st->files_unchanged),
                          "bytes_total", (json_int_t)st->bytes_total, "bytes_added",
                          (json_int_t)st->bytes_added, "errors", (json_int_t)st->errors);
    if (o && cf_snapshot_parent(s))
        json_object_set_new(o, "parent", json_string(cf_snapshot_parent(s)));
    return o;
}

int cmd_snapshots(int argc, char **argv)
{
    enum { O_HOST = OPT_FIRST_LOCAL, O_TAG, O_PATH };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"host", required_argument, NULL, O_HOST},
        {"tag", required_argument, NULL, O_TAG},
        {"path", required_argument, NULL, O_PATH},
        {NULL, 0, NULL, 0},
    };
    cf_snapshot_filter f = {NULL, NULL, NULL};
    cli_strs tags = {0}, paths = {0};
    int c, rc = 0;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case O_HOST: f.host = optarg; break;
        case O_TAG: cli_strs_push(&tags, optarg); break;
        case O_PATH: cli_strs_push(&paths, optarg); break;
        default:
            rc = cli_usage("snapshots: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    f.tags = tags.v;
    f.paths = paths.v;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_snapshot **list = NULL;
    size_t n = 0;
    int lrc = cf_snapshot_list(&list, &n, repo, &f);
    cli_print_warnings(repo);
    if (lrc) {
        rc = cli_fail(lrc);
    } else if (g.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, cli_snapshot_json(list[i]));
        cli_print_json(arr);
    } else {
        printf("%-8s  %-19s  %-12s  %-12s  %-10s  %s\n", "ID", "Time", "Host", "Type", "Size", "Paths");
        printf("------------------------------------------------------------------------------\n");
        for (size_t i = 0; i < n; i++) {
            const cf_snapshot *s = list[i];
            char when[40], local[32];
            int64_t t = cf_snapshot_time(s);
            time_t sec = (time_t)(t / 1000000000LL);
            struct tm tm;
            localtime_r(&sec, &tm);
            strftime(local, sizeof(local), "%Y-%m-%d %H:%M:%S", &tm);
            (void)when;
            double sz = (double)cf_snapshot_stats(s)->bytes_total;
            const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
            int k = 0;
            while (sz >= 1024 && k < 4) {
                sz /= 1024;
                k++;
            }
            char size[32];
            snprintf(size, sizeof(size), "%.1f %s", sz, u[k]);
            printf("%.8s  %s  %-12s  %-12s  %-10s  ", cf_snapshot_id(s), local, cf_snapshot_host(s),
                   type_name(cf_snapshot_type(s)), size);
            for (size_t p = 0; p < cf_snapshot_path_count(s); p++)
                printf("%s%s", p ? ", " : "", cf_snapshot_path(s, p));
            if (cf_snapshot_tag_count(s)) {
                printf("  [");
                for (size_t p = 0; p < cf_snapshot_tag_count(s); p++)
                    printf("%s%s", p ? "," : "", cf_snapshot_tag(s, p));
                printf("]");
            }
            printf("\n");
        }
        printf("------------------------------------------------------------------------------\n");
        printf("%zu snapshots\n", n);
    }
    cf_snapshot_list_free(list, n);
    cf_repo_close(repo);
out:
    cli_strs_free(&tags);
    cli_strs_free(&paths);
    return rc;
}

static void on_problem(const char *path, const char *msg, void *payload)
{
    (void)path;
    (void)payload;
    if (g.json) {
        json_t *o = json_pack("{s:s, s:s}", "message_type", "problem", "problem", msg);
        char *t = json_dumps(o, JSON_COMPACT);
        if (t)
            printf("%s\n", t);
        free(t);
        json_decref(o);
    } else {
        printf("error: %s\n", msg);
    }
}

int cmd_check(int argc, char **argv)
{
    enum { O_READ = OPT_FIRST_LOCAL, O_SUBSET };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"read-data", no_argument, NULL, O_READ},
        {"read-data-subset", required_argument, NULL, O_SUBSET},
        {NULL, 0, NULL, 0},
    };
    cf_check_opts co;
    int c;
    memset(&co, 0, sizeof(co));
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case O_READ:
            co.read_data = true;
            co.read_data_percent = 100;
            break;
        case O_SUBSET: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (end == optarg || (*end && strcmp(end, "%") != 0) || v < 1 || v > 100)
                return cli_usage("check: --read-data-subset takes a percentage 1..100, not '%s'", optarg);
            co.read_data = true;
            co.read_data_percent = (uint32_t)v;
            break;
        }
        default:
            return cli_usage("check: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage("check takes no arguments");
    if (!g.repo)
        return cli_usage("no repository given: use --repo or set COFFER_REPO");
    /* open without printing index warnings: check reports them as problems */
    cli_cred cred;
    int rc = cli_cred_get(&cred, false, false);
    if (rc)
        return rc;
    cf_repo *repo = NULL;
    rc = cf_repo_open_cred(&repo, g.repo, &cred.c);
    cli_cred_free(&cred);
    if (rc)
        return cli_fail(rc);
    cli_set_notice(repo);
    co.on_problem = on_problem;
    cf_check_stats st;
    if (!g.quiet && !g.json)
        printf("checking %s%s\n", cf_repo_display(repo),
               co.read_data ? (co.read_data_percent < 100 ? " (reading a subset of the data)"
                                                          : " (reading all data)")
                            : "");
    rc = cf_check(repo, &co, &st);
    /* a summary when the check ran to its verdict; otherwise only the error says why not */
    bool verdict = rc == 0 || rc == CF_ECORRUPT;
    if (!verdict) {
    } else if (g.json) {
        cli_print_json(json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "message_type",
                                 "summary", "ok", rc == 0, "snapshots", (json_int_t)st.snapshots,
                                 "trees", (json_int_t)st.trees, "packs", (json_int_t)st.packs,
                                 "packs_read", (json_int_t)st.packs_read, "problems",
                                 (json_int_t)st.problems, "damaged_packs", (json_int_t)st.damaged_packs,
                                 "missing_packs", (json_int_t)st.missing_packs, "missing_blobs",
                                 (json_int_t)st.missing_blobs));
    } else if (!g.quiet || rc) {
        printf("%llu snapshots, %llu trees, %llu packs (%llu read): %s\n",
               (unsigned long long)st.snapshots, (unsigned long long)st.trees,
               (unsigned long long)st.packs, (unsigned long long)st.packs_read,
               rc == 0 ? "no problems found" : "problems found");
    }
    int code = rc ? cli_fail(rc) : 0;
    cf_repo_close(repo);
    return code;
}

int cmd_stats(int argc, char **argv)
{
    int rc = parse_common(argc, argv, "stats");
    if (rc)
        return rc;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    cf_repo_stats st;
    int src = cf_repo_stats_get(repo, &st);
    if (src) {
        rc = cli_fail(src);
    } else if (g.json) {
        cli_print_json(json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "snapshots",
                                 (json_int_t)st.snapshots, "packs", (json_int_t)st.packs, "blobs",
                                 (json_int_t)st.blobs, "data_blobs", (json_int_t)st.data_blobs,
                                 "tree_blobs", (json_int_t)st.tree_blobs, "stored_bytes",
                                 (json_int_t)st.stored_bytes, "raw_bytes", (json_int_t)st.raw_bytes,
                                 "index_files", (json_int_t)st.index_files, "restore_size",
                                 (json_int_t)st.restore_size));
    } else {
        printf("snapshots:        %llu\n", (unsigned long long)st.snapshots);
        printf("packs:            %llu (%llu index files)\n", (unsigned long long)st.packs,
               (unsigned long long)st.index_files);
        printf("blobs:            %llu (%llu data, %llu tree)\n", (unsigned long long)st.blobs,
               (unsigned long long)st.data_blobs, (unsigned long long)st.tree_blobs);
        printf("unique raw bytes: %llu\n", (unsigned long long)st.raw_bytes);
        printf("stored bytes:     %llu\n", (unsigned long long)st.stored_bytes);
        printf("restore size:     %llu (all snapshots)\n", (unsigned long long)st.restore_size);
        if (st.stored_bytes)
            printf("dedup+compression ratio: %.2fx\n",
                   (double)st.restore_size / (double)st.stored_bytes);
    }
    cf_repo_close(repo);
    return rc;
}

int cmd_cat(int argc, char **argv)
{
    int rc = parse_common(argc, argv, "cat");
    if (rc)
        return rc;
    if (optind >= argc)
        return cli_usage("cat: what? config, snapshot ID, index ID, tree ID, pack ID");
    const char *what = argv[optind];
    const char *id = optind + 1 < argc ? argv[optind + 1] : NULL;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    char *text = NULL;
    int crc = cf_repo_cat(&text, repo, what, id);
    if (crc)
        rc = cli_fail(crc);
    else
        printf("%s\n", text);
    free(text);
    cf_repo_close(repo);
    return rc;
}

int cmd_unlock(int argc, char **argv)
{
    enum { O_ALL = OPT_FIRST_LOCAL };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS, {"remove-all", no_argument, NULL, O_ALL}, {NULL, 0, NULL, 0}};
    bool all = false;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        if (c == O_ALL)
            all = true;
        else if (c == 'r')
            g.repo = optarg;
        else
            return cli_usage("unlock: unknown or incomplete option '%s'", argv[optind - 1]);
    }
    cf_repo *repo = NULL;
    int rc = cli_open(&repo);
    if (rc)
        return rc;
    size_t n = 0;
    int urc = cf_repo_unlock_stale(repo, all, &n);
    if (urc)
        rc = cli_fail(urc);
    else if (g.json)
        cli_print_json(json_pack("{s:I}", "removed", (json_int_t)n));
    else if (!g.quiet)
        printf("removed %zu %slocks\n", n, all ? "" : "stale ");
    cf_repo_close(repo);
    return rc;
}
