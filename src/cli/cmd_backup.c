/*
 * cmd_backup.c - `coffer backup`: options, progress line, summary.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
    double t0;
    bool shown;
} prog_state;

static void fmt_size(char out[32], uint64_t n)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int k = 0;
    while (v >= 1024 && k < 4) {
        v /= 1024;
        k++;
    }
    snprintf(out, 32, k ? "%.1f %s" : "%.0f %s", v, u[k]);
}

static void on_progress(const cf_progress *p, void *payload)
{
    prog_state *s = payload;
    double el = cf_mono_seconds() - s->t0;
    double rate = el > 0 ? (double)p->bytes_done / el : 0;
    if (g.json) {
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:f}", "message_type", "status",
                              "files_done", (json_int_t)p->files_done, "files_total",
                              (json_int_t)p->files_total, "bytes_done", (json_int_t)p->bytes_done,
                              "bytes_total", (json_int_t)p->bytes_total, "seconds_elapsed", el);
        cli_print_json(o);
        fflush(stdout);
        return;
    }
    if (!g.tty || g.quiet)
        return;
    char done[32], total[32], r[32], eta[32] = "?", elapsed[32];
    fmt_size(done, p->bytes_done);
    fmt_size(total, p->bytes_total);
    fmt_size(r, (uint64_t)rate);
    cli_fmt_duration(elapsed, el);
    if (rate > 0 && p->bytes_total > p->bytes_done)
        cli_fmt_duration(eta, (double)(p->bytes_total - p->bytes_done) / rate);
    fprintf(stderr, "\r\033[K[%s] %llu/%llu files, %s/%s, %s/s, ETA %s", elapsed,
            (unsigned long long)p->files_done, (unsigned long long)p->files_total, done, total, r,
            eta);
    s->shown = true;
}

static void on_error(const char *path, const char *msg, void *payload)
{
    prog_state *s = payload;
    if (s->shown && !g.json) {
        fputs("\r\033[K", stderr);
    }
    if (g.json) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "message_type", "error", "path", path ? path : "",
                              "error", msg);
        char *t = json_dumps(o, JSON_COMPACT);
        if (t)
            fprintf(stderr, "%s\n", t);
        free(t);
        json_decref(o);
    } else {
        fprintf(stderr, "coffer: warning: %s: %s\n", path ? path : "", msg);
    }
}

static int read_exclude_file(cli_strs *ex, const char *file, char ***keep, size_t *nkeep)
{
    FILE *f = fopen(file, "re");
    if (!f) {
        return cli_error(CF_EIO, NULL, "unable to read exclude file '%s': %s", file,
                         strerror(errno));
    }
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        char **p = realloc(*keep, (*nkeep + 1) * sizeof(char *));
        if (!p)
            break;
        *keep = p;
        p[*nkeep] = strdup(s);
        if (p[*nkeep])
            cli_strs_push(ex, p[(*nkeep)++]);
    }
    fclose(f);
    return 0;
}

int cmd_backup(int argc, char **argv)
{
    enum { O_TYPE = OPT_FIRST_LOCAL, O_TAG, O_HOST, O_EXCL, O_EXCLF, O_ONEFS, O_STDIN, O_STDIN_NAME, O_PARENT, O_TIME, O_THREADS };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"type", required_argument, NULL, O_TYPE},
        {"tag", required_argument, NULL, O_TAG},
        {"host", required_argument, NULL, O_HOST},
        {"exclude", required_argument, NULL, O_EXCL},
        {"exclude-file", required_argument, NULL, O_EXCLF},
        {"one-file-system", no_argument, NULL, O_ONEFS},
        {"stdin", no_argument, NULL, O_STDIN},
        {"stdin-name", required_argument, NULL, O_STDIN_NAME},
        {"parent", required_argument, NULL, O_PARENT},
        {"time", required_argument, NULL, O_TIME},
        {"threads", required_argument, NULL, O_THREADS},
        {NULL, 0, NULL, 0},
    };
    cf_backup_opts o;
    cli_strs tags = {0}, ex = {0}, paths = {0};
    char **owned = NULL;
    size_t nowned = 0;
    bool use_stdin = false;
    const char *stdin_name = NULL;
    int rc = 0, c;
    memset(&o, 0, sizeof(o));
    o.type = CF_BACKUP_INCREMENTAL;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "e:r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r':
            g.repo = optarg;
            break;
        case 'q':
            g.quiet = true;
            break;
        case 'v':
            g.verbose++;
            break;
        case O_TYPE:
            if (strcmp(optarg, "full") == 0)
                o.type = CF_BACKUP_FULL;
            else if (strcmp(optarg, "incremental") == 0 || strcmp(optarg, "incr") == 0)
                o.type = CF_BACKUP_INCREMENTAL;
            else if (strcmp(optarg, "differential") == 0 || strcmp(optarg, "diff") == 0)
                o.type = CF_BACKUP_DIFFERENTIAL;
            else {
                rc = cli_usage("unknown backup type '%s' (full, incremental, differential)", optarg);
                goto out;
            }
            break;
        case O_TAG:
            cli_strs_push(&tags, optarg);
            break;
        case O_HOST:
            o.host = optarg;
            break;
        case 'e':
        case O_EXCL:
            cli_strs_push(&ex, optarg);
            break;
        case O_EXCLF:
            if ((rc = read_exclude_file(&ex, optarg, &owned, &nowned)))
                goto out;
            break;
        case O_ONEFS:
            o.one_file_system = true;
            break;
        case O_STDIN:
            use_stdin = true;
            break;
        case O_STDIN_NAME:
            stdin_name = optarg;
            break;
        case O_PARENT:
            o.parent = optarg;
            break;
        case O_THREADS:
            if ((rc = cli_threads(&o.threads, optarg, "backup")))
                goto out;
            break;
        case O_TIME: {
            int64_t t;
            if (cf_time_parse(&t, optarg)) {
                rc = cli_usage("invalid --time '%s'", optarg);
                goto out;
            }
            o.time_ns = t;
            break;
        }
        default:
            rc = cli_usage("backup: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    for (int i = optind; i < argc; i++)
        cli_strs_push(&paths, argv[i]);
    if (use_stdin || stdin_name) {
        if (paths.n) {
            rc = cli_usage("backup --stdin takes no paths");
            goto out;
        }
        o.stdin_name = stdin_name ? stdin_name : "stdin";
        o.stdin_fd = STDIN_FILENO;
    } else if (!paths.n) {
        rc = cli_usage("backup: give at least one path, or --stdin");
        goto out;
    }
    o.paths = paths.v;
    o.tags = tags.v;
    o.excludes = ex.v;
    prog_state ps = {cf_mono_seconds(), false};
    if ((g.tty && !g.quiet) || g.json)
        o.progress = on_progress;
    o.on_error = on_error;
    o.payload = &ps;
    o.progress_interval = g.json ? 1.0 : 0.25;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    char id[65];
    cf_backup_stats st;
    cli_cancel_on_signals();
    int brc = cf_backup(repo, &o, id, &st);
    if (ps.shown)
        fputs("\r\033[K", stderr);
    if (brc && brc != CF_EPARTIAL) {
        rc = cli_fail(brc);
        cf_repo_close(repo);
        goto out;
    }
    if (g.json) {
        cli_print_json(json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "message_type",
            "summary", "snapshot_id", id, "files_new", (json_int_t)st.files_new, "files_changed",
            (json_int_t)st.files_changed, "files_unchanged", (json_int_t)st.files_unchanged,
            "dirs", (json_int_t)st.dirs, "bytes_total", (json_int_t)st.bytes_total, "bytes_read",
            (json_int_t)st.bytes_read, "bytes_added", (json_int_t)st.bytes_added, "blobs_added",
            (json_int_t)st.blobs_added, "errors", (json_int_t)st.errors, "duration_seconds",
            st.seconds));
    } else if (!g.quiet) {
        char total[32], read[32], added[32], dur[32];
        fmt_size(total, st.bytes_total);
        fmt_size(read, st.bytes_read);
        fmt_size(added, st.bytes_added);
        cli_fmt_duration(dur, st.seconds);
        printf("files: %llu new, %llu changed, %llu unchanged; %llu directories\n",
               (unsigned long long)st.files_new, (unsigned long long)st.files_changed,
               (unsigned long long)st.files_unchanged, (unsigned long long)st.dirs);
        printf("processed %s, read %s, added %s to the repository in %s (%.2f s)\n", total, read,
               added, dur, st.seconds);
        printf("snapshot %.8s saved\n", id);
    }
    if (brc == CF_EPARTIAL) {
        fprintf(stderr, "coffer: warning: %llu files or directories could not be read (listed above)\n",
                (unsigned long long)st.errors);
        rc = cf_error_exit_code(CF_EPARTIAL);
    }
    cf_repo_close(repo);
out:
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    cli_strs_free(&tags);
    cli_strs_free(&ex);
    cli_strs_free(&paths);
    return rc;
}
