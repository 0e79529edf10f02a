/*
 * cmd_restore.c - commands that read snapshots back: restore, dump, ls, find.
 */
#include <fnmatch.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void on_error(const char *path, const char *msg, void *payload)
{
    (void)payload;
    if (g.json) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "message_type", "error", "path", path ? path : "",
                              "error", msg);
        char *t = json_dumps(o, JSON_COMPACT);
        if (t)
            fprintf(stderr, "%s\n", t);
        free(t);
        json_decref(o);
    } else {
        fprintf(stderr, "coffer: error: %s: %s\n", path ? path : "", msg);
    }
}

static double t0;

static void on_progress(const cf_progress *p, void *payload)
{
    (void)payload;
    double el = cf_mono_seconds() - t0;
    if (g.json) {
        cli_print_json(json_pack("{s:s, s:I, s:I, s:I, s:f}", "message_type", "status",
                                 "files_done", (json_int_t)p->files_done, "bytes_done",
                                 (json_int_t)p->bytes_done, "bytes_total", (json_int_t)p->bytes_total,
                                 "seconds_elapsed", el));
        fflush(stdout);
    } else if (g.tty && !g.quiet) {
        double pct = p->bytes_total ? 100.0 * (double)p->bytes_done / (double)p->bytes_total : 0;
        fprintf(stderr, "\r\033[K[%.0fs] %llu files, %.1f MiB (%.0f%%)", el,
                (unsigned long long)p->files_done, (double)p->bytes_done / 1048576.0, pct);
    }
}

/* Resolve SNAPSHOT or SNAPSHOT:PATH. *subpath points into spec (or NULL). */
static int resolve(cf_repo *repo, char *spec, cf_snapshot **out, const char **subpath,
                   const cf_snapshot_filter *f)
{
    char *colon = strchr(spec, ':');
    if (subpath)
        *subpath = NULL;
    if (colon && subpath) {
        *colon = '\0';
        *subpath = colon + 1;
    }
    int rc = cf_snapshot_find(out, repo, spec, f);
    return rc ? cli_fail(rc) : 0;
}

int cmd_restore(int argc, char **argv)
{
    enum { O_TARGET = OPT_FIRST_LOCAL, O_INCL, O_EXCL, O_OVER, O_VERIFY, O_HOST, O_NOOWNER, O_THREADS };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"target", required_argument, NULL, O_TARGET},
        {"include", required_argument, NULL, O_INCL},
        {"exclude", required_argument, NULL, O_EXCL},
        {"overwrite", no_argument, NULL, O_OVER},
        {"verify", no_argument, NULL, O_VERIFY},
        {"host", required_argument, NULL, O_HOST},
        {"no-owner", no_argument, NULL, O_NOOWNER},
        {"threads", required_argument, NULL, O_THREADS},
        {NULL, 0, NULL, 0},
    };
    cf_restore_opts o;
    cli_strs inc = {0}, exc = {0};
    cf_snapshot_filter f = {NULL, NULL, NULL};
    int c, rc = 0;
    memset(&o, 0, sizeof(o));
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "t:i:e:r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case 't':
        case O_TARGET: o.target = optarg; break;
        case 'i':
        case O_INCL: cli_strs_push(&inc, optarg); break;
        case 'e':
        case O_EXCL: cli_strs_push(&exc, optarg); break;
        case O_OVER: o.overwrite = true; break;
        case O_VERIFY: o.verify = true; break;
        case O_HOST: f.host = optarg; break;
        case O_NOOWNER: o.no_owner = true; break;
        case O_THREADS:
            if ((rc = cli_threads(&o.threads, optarg, "restore")))
                goto out;
            break;
        default:
            rc = cli_usage("restore: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind + 1 != argc) {
        rc = cli_usage("restore: give exactly one SNAPSHOT[:PATH] (or 'latest')");
        goto out;
    }
    if (!o.target) {
        rc = cli_usage("restore: --target DIR is required");
        goto out;
    }
    o.includes = inc.v;
    o.excludes = exc.v;
    o.on_error = on_error;
    if ((g.tty && !g.quiet) || g.json)
        o.progress = on_progress;
    t0 = cf_mono_seconds();
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_snapshot *snap = NULL;
    char *spec = argv[optind];
    if ((rc = resolve(repo, spec, &snap, &o.subpath, &f)) == 0) {
        cf_restore_stats st;
        cli_cancel_on_signals();
        int rrc = cf_restore(repo, snap, &o, &st);
        if (g.tty && !g.quiet && !g.json)
            fputs("\r\033[K", stderr);
        if (rrc && rrc != CF_EPARTIAL && rrc != CF_ECORRUPT && rrc != CF_EVERIFY) {
            rc = cli_fail(rrc);
        } else {
            if (g.json)
                cli_print_json(json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                                         "message_type", "summary", "snapshot_id", cf_snapshot_id(snap),
                                         "files", (json_int_t)st.files, "dirs", (json_int_t)st.dirs,
                                         "others", (json_int_t)st.others, "bytes", (json_int_t)st.bytes,
                                         "verified", (json_int_t)st.verified, "errors",
                                         (json_int_t)st.errors, "duration_seconds", st.seconds));
            else if (!g.quiet)
                printf("restored snapshot %.8s to %s: %llu files, %llu directories, %llu others, "
                       "%.1f MiB in %.2f s%s\n",
                       cf_snapshot_id(snap), o.target, (unsigned long long)st.files,
                       (unsigned long long)st.dirs, (unsigned long long)st.others,
                       (double)st.bytes / 1048576.0, st.seconds,
                       o.verify ? ", all verified" : "");
            if (rrc == CF_EPARTIAL || rrc == CF_ECORRUPT || rrc == CF_EVERIFY)
                rc = cli_fail(rrc);
        }
        cf_snapshot_free(snap);
    }
    cf_repo_close(repo);
out:
    cli_strs_free(&inc);
    cli_strs_free(&exc);
    return rc;
}

static int parse_simple(int argc, char **argv, const char *cmd, cf_snapshot_filter *f,
                        bool *recursive, const char **snapshot, int *newest)
{
    enum { O_HOST = OPT_FIRST_LOCAL, O_REC, O_SNAP, O_NEWEST };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"host", required_argument, NULL, O_HOST},
        {"recursive", no_argument, NULL, O_REC},
        {"snapshot", required_argument, NULL, O_SNAP},
        {"newest", required_argument, NULL, O_NEWEST},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qvR", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case 'R':
        case O_REC:
            if (recursive)
                *recursive = true;
            break;
        case O_HOST: f->host = optarg; break;
        case O_SNAP:
            if (!snapshot)
                return cli_usage("%s: --snapshot is not an option of this command", cmd);
            *snapshot = optarg;
            break;
        case O_NEWEST: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!newest || end == optarg || *end || v < 1)
                return cli_usage("%s: --newest takes a positive number", cmd);
            *newest = (int)v;
            break;
        }
        default:
            return cli_usage("%s: unknown or incomplete option '%s'", cmd, argv[optind - 1]);
        }
    }
    return 0;
}

static const char *type_char(cf_node_type t)
{
    switch (t) {
    case CF_NODE_DIR: return "d";
    case CF_NODE_SYMLINK: return "l";
    case CF_NODE_FIFO: return "p";
    case CF_NODE_CHARDEV: return "c";
    case CF_NODE_BLOCKDEV: return "b";
    case CF_NODE_SOCKET: return "s";
    default: return "-";
    }
}

static const char *type_word(cf_node_type t)
{
    switch (t) {
    case CF_NODE_DIR: return "dir";
    case CF_NODE_SYMLINK: return "symlink";
    case CF_NODE_FIFO: return "fifo";
    case CF_NODE_CHARDEV: return "chardev";
    case CF_NODE_BLOCKDEV: return "blockdev";
    case CF_NODE_SOCKET: return "socket";
    default: return "file";
    }
}

static json_t *entry_json(const cf_entry *e)
{
    char when[40];
    cf_time_format(when, e->mtime_ns);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:I, s:s}", "path", e->path, "type",
                          type_word(e->type), "mode", (int)e->mode, "uid", (int)e->uid, "gid",
                          (int)e->gid, "size", (json_int_t)e->size, "mtime", when);
    if (o && e->link_target)
        json_object_set_new(o, "target", json_string(e->link_target));
    return o;
}

static void print_entry(const cf_entry *e, const char *prefix)
{
    if (g.json) {
        json_t *o = entry_json(e);
        if (prefix)
            json_object_set_new(o, "snapshot", json_string(prefix));
        cli_print_json(o);
        return;
    }
    if (!g.verbose && !prefix) {
        printf("%s\n", e->path);
        return;
    }
    char mode[11];
    static const char rwx[] = "rwxrwxrwx";
    mode[0] = type_char(e->type)[0];
    for (int i = 0; i < 9; i++)
        mode[i + 1] = (e->mode & (1u << (8 - i))) ? rwx[i] : '-';
    mode[10] = '\0';
    char when[40];
    cf_time_format(when, e->mtime_ns);
    printf("%s%s%s %5u %5u %12llu %.19s %s%s%s\n", prefix ? prefix : "", prefix ? "  " : "", mode,
           e->uid, e->gid, (unsigned long long)e->size, when, e->path,
           e->link_target ? " -> " : "", e->link_target ? e->link_target : "");
}

static int ls_cb(const cf_entry *e, void *payload)
{
    (void)payload;
    print_entry(e, NULL);
    return 0;
}

int cmd_ls(int argc, char **argv)
{
    cf_snapshot_filter f = {NULL, NULL, NULL};
    bool recursive = false;
    int rc = parse_simple(argc, argv, "ls", &f, &recursive, NULL, NULL);
    if (rc)
        return rc;
    if (optind >= argc || argc - optind > 2)
        return cli_usage("ls: give SNAPSHOT [PATH]");
    char *spec = argv[optind];
    const char *path = optind + 1 < argc ? argv[optind + 1] : "/";
    /* like restic: listing a snapshot without a path lists everything */
    if (optind + 1 >= argc)
        recursive = true;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    cf_snapshot *snap = NULL;
    const char *sub = NULL;
    if ((rc = resolve(repo, spec, &snap, &sub, &f)) == 0) {
        int wrc = cf_walk(repo, snap, sub && *sub ? sub : path, recursive, ls_cb, NULL);
        if (wrc)
            rc = cli_fail(wrc);
        cf_snapshot_free(snap);
    }
    cf_repo_close(repo);
    return rc;
}

typedef struct {
    const char *pattern;
    const char *snap;
    uint64_t matches;
} find_ctx;

static int find_cb(const cf_entry *e, void *payload)
{
    find_ctx *c = payload;
    const char *base = strrchr(e->path, '/');
    base = base ? base + 1 : e->path;
    bool hit = strchr(c->pattern, '/') ? fnmatch(c->pattern, e->path, 0) == 0
                                       : fnmatch(c->pattern, base, 0) == 0;
    if (hit) {
        char prefix[16];
        snprintf(prefix, sizeof(prefix), "%.8s", c->snap);
        print_entry(e, prefix);
        c->matches++;
    }
    return 0;
}

int cmd_find(int argc, char **argv)
{
    cf_snapshot_filter f = {NULL, NULL, NULL};
    const char *only = NULL;
    int newest = 0;
    int rc = parse_simple(argc, argv, "find", &f, NULL, &only, &newest);
    if (rc)
        return rc;
    if (optind + 1 != argc)
        return cli_usage("find: give one PATTERN (a glob such as '*.sql' or '/etc/*.conf')");
    find_ctx fc = {argv[optind], NULL, 0};
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    cf_snapshot **list = NULL;
    size_t n = 0;
    int lrc;
    if (only) {
        cf_snapshot *s = NULL;
        lrc = cf_snapshot_find(&s, repo, only, &f);
        if (lrc == 0) {
            list = malloc(sizeof(*list));
            if (list) {
                list[0] = s;
                n = 1;
            }
        }
    } else {
        lrc = cf_snapshot_list(&list, &n, repo, &f);
    }
    if (lrc) {
        rc = cli_fail(lrc);
    } else {
        size_t start = newest > 0 && (size_t)newest < n ? n - (size_t)newest : 0;
        for (size_t i = n; i-- > start && rc == 0;) {
            fc.snap = cf_snapshot_id(list[i]);
            int wrc = cf_walk(repo, list[i], "/", true, find_cb, &fc);
            if (wrc)
                rc = cli_fail(wrc);
        }
        if (!g.json && !g.quiet)
            fprintf(stderr, "%llu matches\n", (unsigned long long)fc.matches);
    }
    cf_snapshot_list_free(list, n);
    cf_repo_close(repo);
    return rc;
}

int cmd_dump(int argc, char **argv)
{
    cf_snapshot_filter f = {NULL, NULL, NULL};
    int rc = parse_simple(argc, argv, "dump", &f, NULL, NULL, NULL);
    if (rc)
        return rc;
    if (optind + 2 != argc)
        return cli_usage("dump: give SNAPSHOT PATH");
    if (isatty(STDOUT_FILENO) && !g.quiet)
        fprintf(stderr, "coffer: note: writing file contents to the terminal\n");
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    cf_snapshot *snap = NULL;
    if ((rc = resolve(repo, argv[optind], &snap, NULL, &f)) == 0) {
        int drc = cf_dump(repo, snap, argv[optind + 1], STDOUT_FILENO);
        if (drc)
            rc = cli_fail(drc);
        cf_snapshot_free(snap);
    }
    cf_repo_close(repo);
    return rc;
}
