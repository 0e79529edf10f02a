/*
 * cmd_sqlite.c - `coffer sqlite backup|replicate|restore|list`: options and output. The work
 * is done by include/coffer/sqlite.h.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "coffer/sqlite.h"

static const char *sqlite_usage =
    "usage: coffer sqlite COMMAND [options]\n"
    "\n"
    "  backup DB [--tag T]... [--db-id ID]      a consistent copy of a live database\n"
    "  replicate DB [--interval S] [--snapshot-every S] [--once]\n"
    "                                           ship committed WAL frames continuously\n"
    "  restore --target FILE [--time T] [--snapshot ID] [--db PATH | --db-id ID]\n"
    "          [--overwrite] [--no-frames]      rebuild the database as of T (default: latest)\n"
    "  list [--db PATH | --db-id ID]            base copies and their shipped frames\n"
    "\n"
    "more options: --host H (snapshot host, part of the default db id), --tmp-dir DIR,\n"
    "--busy-timeout S, --threads N. See docs/databases/sqlite.md.\n";

enum {
    S_TAG = OPT_FIRST_LOCAL, S_HOST, S_DBID, S_TMP, S_BUSY, S_THREADS, S_INTERVAL, S_SNAPEVERY,
    S_ONCE, S_TARGET, S_TIME, S_SNAP, S_DB, S_OVER, S_NOFRAMES
};

static const struct option sq_opts[] = {
    CLI_COMMON_OPTIONS,
    {"tag", required_argument, NULL, S_TAG},
    {"host", required_argument, NULL, S_HOST},
    {"db-id", required_argument, NULL, S_DBID},
    {"tmp-dir", required_argument, NULL, S_TMP},
    {"busy-timeout", required_argument, NULL, S_BUSY},
    {"threads", required_argument, NULL, S_THREADS},
    {"interval", required_argument, NULL, S_INTERVAL},
    {"snapshot-every", required_argument, NULL, S_SNAPEVERY},
    {"once", no_argument, NULL, S_ONCE},
    {"target", required_argument, NULL, S_TARGET},
    {"time", required_argument, NULL, S_TIME},
    {"snapshot", required_argument, NULL, S_SNAP},
    {"db", required_argument, NULL, S_DB},
    {"overwrite", no_argument, NULL, S_OVER},
    {"no-frames", no_argument, NULL, S_NOFRAMES},
    {NULL, 0, NULL, 0},
};

typedef struct {
    cli_strs tags;
    const char *host, *db_id, *tmp_dir, *target, *snapshot, *db;
    double busy, interval, snapshot_every;
    bool snapshot_every_set;
    unsigned threads;
    bool once, overwrite, no_frames;
    int64_t time_ns;
} sq_args;

static bool parse_seconds(double *out, const char *s, bool allow_negative)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || v != v || (!allow_negative && v < 0))
        return false;
    *out = v;
    return true;
}

/* Parse the options of `coffer sqlite SUB`; returns 0 or an exit code. */
static int parse(int argc, char **argv, const char *sub, sq_args *a)
{
    int c;
    memset(a, 0, sizeof(*a));
    a->interval = 1;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", sq_opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case S_TAG: cli_strs_push(&a->tags, optarg); break;
        case S_HOST: a->host = optarg; break;
        case S_DBID: a->db_id = optarg; break;
        case S_TMP: a->tmp_dir = optarg; break;
        case S_TARGET: a->target = optarg; break;
        case S_SNAP: a->snapshot = optarg; break;
        case S_DB: a->db = optarg; break;
        case S_ONCE: a->once = true; break;
        case S_OVER: a->overwrite = true; break;
        case S_NOFRAMES: a->no_frames = true; break;
        case S_BUSY:
            if (!parse_seconds(&a->busy, optarg, false))
                return cli_usage("sqlite %s: --busy-timeout takes seconds", sub);
            break;
        case S_INTERVAL:
            if (!parse_seconds(&a->interval, optarg, false) || a->interval < 0.01)
                return cli_usage("sqlite %s: --interval takes seconds (at least 0.01)", sub);
            break;
        case S_SNAPEVERY:
            if (!parse_seconds(&a->snapshot_every, optarg, true))
                return cli_usage("sqlite %s: --snapshot-every takes seconds (negative: only "
                                 "when needed)", sub);
            a->snapshot_every_set = true;
            break;
        case S_THREADS: {
            char what[32];
            snprintf(what, sizeof(what), "sqlite %s", sub);
            if (cli_threads(&a->threads, optarg, what))
                return EXIT_USAGE;
            break;
        }
        case S_TIME:
            if (cf_time_parse(&a->time_ns, optarg))
                return cli_usage("sqlite %s: invalid --time '%s' (RFC 3339, or "
                                 "'YYYY-MM-DD HH:MM:SS' in local time)", sub, optarg);
            break;
        default:
            return cli_usage("sqlite %s: unknown or incomplete option '%s'", sub,
                             argv[optind - 1]);
        }
    }
    return 0;
}

static int sq_backup(int argc, char **argv)
{
    sq_args a;
    int rc = parse(argc, argv, "backup", &a);
    if (rc)
        goto out;
    if (optind + 1 != argc) {
        rc = cli_usage("sqlite backup: give one database file");
        goto out;
    }
    cf_sqlite_backup_opts o;
    memset(&o, 0, sizeof(o));
    o.db_path = argv[optind];
    o.db_id = a.db_id;
    o.tags = a.tags.v;
    o.host = a.host;
    o.tmp_dir = a.tmp_dir;
    o.busy_timeout = a.busy;
    o.threads = a.threads;
    o.on_message = g.verbose ? cli_message : NULL;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_sqlite_backup_result r;
    int brc = cf_sqlite_backup(repo, &o, &r);
    cf_repo_close(repo);
    if (brc) {
        rc = cli_fail(brc);
        goto out;
    }
    if (g.json) {
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:f}",
                                 "message_type", "summary", "snapshot_id", r.info.snapshot_id,
                                 "db_id", r.info.db_id, "generation", r.info.generation,
                                 "pages", (json_int_t)r.info.pages, "page_size",
                                 (json_int_t)r.info.page_size, "bytes_total",
                                 (json_int_t)r.stats.bytes_total, "bytes_added",
                                 (json_int_t)r.stats.bytes_added, "copy_seconds", r.copy_seconds,
                                 "check_seconds", r.check_seconds, "duration_seconds",
                                 r.stats.seconds));
    } else if (!g.quiet) {
        printf("copied %u pages of %u bytes in %.3f s, integrity ok (%.3f s), stored in %.3f s\n",
               r.info.pages, r.info.page_size, r.copy_seconds, r.check_seconds, r.stats.seconds);
        printf("snapshot %.8s saved (database %s)\n", r.info.snapshot_id, r.info.db_id);
    }
out:
    cli_strs_free(&a.tags);
    return rc;
}

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_interruptible(double seconds)
{
    double until = cf_mono_seconds() + seconds;
    while (!stop_requested) {
        double left = until - cf_mono_seconds();
        if (left <= 0)
            break;
        if (left > 0.1)
            left = 0.1;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static int sq_replicate(int argc, char **argv)
{
    sq_args a;
    int rc = parse(argc, argv, "replicate", &a);
    if (rc)
        goto out;
    if (optind + 1 != argc) {
        rc = cli_usage("sqlite replicate: give one database file (in WAL mode)");
        goto out;
    }
    cf_sqlite_replicate_opts o;
    memset(&o, 0, sizeof(o));
    o.db_path = argv[optind];
    o.db_id = a.db_id;
    o.tags = a.tags.v;
    o.host = a.host;
    o.tmp_dir = a.tmp_dir;
    o.busy_timeout = a.busy;
    o.threads = a.threads;
    o.snapshot_every = a.snapshot_every_set ? (a.snapshot_every == 0 ? -1 : a.snapshot_every) : 0;
    o.on_message = cli_message;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_sqlite_replicator *r = NULL;
    int orc = cf_sqlite_replicator_open(&r, repo, &o);
    if (orc) {
        rc = cli_fail(orc);
        cf_repo_close(repo);
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    uint64_t objects = 0, frames = 0, commits = 0, gens = 0;
    int failures = 0;
    while (!stop_requested) {
        double t0 = cf_mono_seconds();
        cf_sqlite_step_result s;
        int src = cf_sqlite_replicator_step(r, &s);
        if (src) {
            if (a.once) {
                rc = cli_fail(src);
                break;
            }
            /* keep going: the next step starts a new generation */
            const cf_error *e = cf_error_last();
            fprintf(stderr, "coffer: warning: %s\n", e->message ? e->message : "step failed");
            rc = cf_error_exit_code(src);
            failures++;
        } else {
            rc = 0;
            failures = 0;
            objects += s.objects;
            frames += s.frames;
            commits += s.commits;
            gens += s.new_generation;
            if (g.json && (s.objects || s.new_generation || a.once))
                cli_print_json(json_pack(
                    "{s:s, s:s, s:s, s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:f}", "message_type",
                    "step", "generation", s.generation, "base_id", s.base_id, "new_generation",
                    s.new_generation ? 1 : 0, "reason", s.reason, "objects",
                    (json_int_t)s.objects, "frames", (json_int_t)s.frames, "commits",
                    (json_int_t)s.commits, "bytes", (json_int_t)s.bytes, "sequence",
                    (json_int_t)s.sequence, "lag_seconds", s.lag_seconds));
            fflush(stdout);
        }
        if (a.once)
            break;
        /* back off after repeated failures, up to a minute */
        int shift = failures > 6 ? 6 : failures;
        double wait = a.interval * (failures > 0 ? (double)(1 << shift) : 1);
        if (wait > 60 && a.interval <= 60)
            wait = 60;
        sleep_interruptible(wait - (cf_mono_seconds() - t0));
    }
    if (!g.json && !g.quiet)
        printf("shipped %llu objects (%llu frames, %llu commits), %llu new generations\n",
               (unsigned long long)objects, (unsigned long long)frames,
               (unsigned long long)commits, (unsigned long long)gens);
    cf_sqlite_replicator_close(r);
    cf_repo_close(repo);
    if (stop_requested && rc != 0 && !a.once)
        rc = 0;
out:
    cli_strs_free(&a.tags);
    return rc;
}

static int sq_restore(int argc, char **argv)
{
    sq_args a;
    int rc = parse(argc, argv, "restore", &a);
    if (rc)
        goto out;
    if (optind != argc) {
        rc = cli_usage("sqlite restore: unexpected argument '%s' (use --target FILE)",
                       argv[optind]);
        goto out;
    }
    if (!a.target) {
        rc = cli_usage("sqlite restore: --target FILE is required");
        goto out;
    }
    cf_sqlite_restore_opts o;
    memset(&o, 0, sizeof(o));
    o.target = a.target;
    o.db_id = a.db_id;
    o.db_path = a.db;
    o.host = a.host;
    o.snapshot = a.snapshot;
    o.time_ns = a.time_ns;
    o.overwrite = a.overwrite;
    o.no_frames = a.no_frames;
    o.on_message = g.verbose ? cli_message : NULL;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_sqlite_restore_result r;
    int rrc = cf_sqlite_restore(repo, &o, &r);
    cf_repo_close(repo);
    if (rrc) {
        rc = cli_fail(rrc);
        goto out;
    }
    char when[40];
    cf_time_format(when, r.restored_to_ns);
    if (g.json) {
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:f}",
                                 "message_type", "summary", "base_id", r.base.snapshot_id,
                                 "db_id", r.base.db_id, "generation", r.base.generation,
                                 "objects", (json_int_t)r.objects, "frames",
                                 (json_int_t)r.frames, "commits", (json_int_t)r.commits,
                                 "pages", (json_int_t)r.pages, "restored_to", when,
                                 "duration_seconds", r.seconds));
    } else if (!g.quiet) {
        printf("restored %s from base %.8s + %llu commits (%llu frames); state as of %s; "
               "integrity ok; %.3f s\n", a.target, r.base.snapshot_id,
               (unsigned long long)r.commits, (unsigned long long)r.frames, when, r.seconds);
    }
out:
    cli_strs_free(&a.tags);
    return rc;
}

typedef struct {
    char prefix[160];
    size_t plen;
    uint64_t count, bytes;
} count_ctx;

static int count_cb(const char *name, uint64_t size, void *payload)
{
    count_ctx *c = payload;
    if (strncmp(name, c->prefix, c->plen) == 0) {
        c->count++;
        c->bytes += size;
    }
    return 0;
}

static int sq_list(int argc, char **argv)
{
    sq_args a;
    int rc = parse(argc, argv, "list", &a);
    if (rc)
        goto out;
    char want[96] = "";
    if (a.db_id)
        snprintf(want, sizeof(want), "%s", a.db_id);
    else if (a.db && cf_sqlite_db_id(want, a.db, a.host) != 0) {
        rc = cli_fail(CF_EINVAL);
        goto out;
    }
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_snapshot **list = NULL;
    size_t n = 0;
    int lrc = cf_snapshot_list(&list, &n, repo, NULL);
    if (lrc) {
        rc = cli_fail(lrc);
        cf_repo_close(repo);
        goto out;
    }
    json_t *arr = g.json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        cf_sqlite_base_info b;
        if (cf_sqlite_base_info_get(&b, list[i]) != 0 || (want[0] && strcmp(b.db_id, want) != 0))
            continue;
        count_ctx cc;
        memset(&cc, 0, sizeof(cc));
        snprintf(cc.prefix, sizeof(cc.prefix), "%s/%s/", b.db_id, b.generation);
        cc.plen = strlen(cc.prefix);
        if (b.has_position)
            cf_archive_list(repo, CF_SQLITE_ARCHIVE_KIND, count_cb, &cc);
        char when[40];
        cf_time_format(when, b.time_ns);
        if (arr) {
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I}",
                                                 "snapshot_id", b.snapshot_id, "db_id", b.db_id,
                                                 "generation", b.generation, "time", when,
                                                 "db_path", b.db_path, "replicated",
                                                 b.has_position ? 1 : 0, "objects",
                                                 (json_int_t)cc.count, "bytes",
                                                 (json_int_t)cc.bytes));
        } else {
            printf("%.8s  %.19s  %-28s  gen %s  %s\n", b.snapshot_id, when, b.db_id,
                   b.generation, b.has_position ? "" : "(one-off copy)");
            if (b.has_position)
                printf("          %llu shipped objects, %llu bytes\n",
                       (unsigned long long)cc.count, (unsigned long long)cc.bytes);
        }
    }
    cf_error_clear();
    if (arr)
        cli_print_json(arr);
    cf_snapshot_list_free(list, n);
    cf_repo_close(repo);
out:
    cli_strs_free(&a.tags);
    return rc;
}

int cmd_sqlite(int argc, char **argv)
{
    static const cli_sub subs[] = {
        {"backup", sq_backup},
        {"replicate", sq_replicate},
        {"restore", sq_restore},
        {"list", sq_list},
        {NULL, NULL},
    };
    return cli_dispatch("sqlite", sqlite_usage, subs, argc, argv);
}
