/*
 * cmd_mariadb.c - `coffer mariadb backup|binlog-push|restore|list`: options and output. The
 * work is done by include/coffer/mariadb.h.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "coffer/mariadb.h"

static const char *mariadb_usage =
    "usage: coffer mariadb COMMAND [connection options] [options]\n"
    "\n"
    "  backup [--databases DB...] [--tag T]...   mariadb-dump --single-transaction into a\n"
    "                                            snapshot, tagged binlog=FILE:POS\n"
    "  binlog-push [--binlog-dir DIR]            archive closed binlogs (idempotent)\n"
    "  restore [--snapshot ID] [--time T] [--dump-only]\n"
    "                                            load a dump into the server, replay binlogs\n"
    "                                            up to T ('YYYY-MM-DD HH:MM:SS' local time, or\n"
    "                                            RFC 3339)\n"
    "  list                                      dumps and archived binlogs\n"
    "\n"
    "connection options (passed to the client programs; --defaults-file goes first):\n"
    "  --defaults-file F  --host H  --port P  --user U  --socket S  --mariadb-bindir DIR\n"
    "  (a password: in the defaults file, or MYSQL_PWD)\n"
    "more: --server NAME (binlog archive namespace, default 'default'), --no-binlog,\n"
    "--dump-arg ARG (repeatable), --host-name H (snapshot host), --threads N.\n"
    "See docs/databases/mariadb.md.\n";

enum {
    M_DEFAULTS = OPT_FIRST_LOCAL, M_HOST, M_PORT, M_USER, M_SOCKET, M_BINDIR, M_DATABASES,
    M_TAG, M_SERVER, M_NOBINLOG, M_DUMPARG, M_SNAPHOST, M_THREADS, M_BINLOGDIR, M_SNAP, M_TIME,
    M_DUMPONLY, M_TMP
};

static const struct option my_opts[] = {
    CLI_COMMON_OPTIONS,
    {"defaults-file", required_argument, NULL, M_DEFAULTS},
    {"host", required_argument, NULL, M_HOST},
    {"port", required_argument, NULL, M_PORT},
    {"user", required_argument, NULL, M_USER},
    {"socket", required_argument, NULL, M_SOCKET},
    {"mariadb-bindir", required_argument, NULL, M_BINDIR},
    {"databases", no_argument, NULL, M_DATABASES},
    {"database", required_argument, NULL, M_DATABASES},
    {"tag", required_argument, NULL, M_TAG},
    {"server", required_argument, NULL, M_SERVER},
    {"no-binlog", no_argument, NULL, M_NOBINLOG},
    {"dump-arg", required_argument, NULL, M_DUMPARG},
    {"host-name", required_argument, NULL, M_SNAPHOST},
    {"threads", required_argument, NULL, M_THREADS},
    {"binlog-dir", required_argument, NULL, M_BINLOGDIR},
    {"snapshot", required_argument, NULL, M_SNAP},
    {"time", required_argument, NULL, M_TIME},
    {"dump-only", no_argument, NULL, M_DUMPONLY},
    {"tmp-dir", required_argument, NULL, M_TMP},
    {NULL, 0, NULL, 0},
};

typedef struct {
    cf_mariadb_conn conn;
    cli_strs dbs, tags, dump_args;
    bool databases_flag, no_binlog, dump_only;
    const char *server, *snap_host, *binlog_dir, *snapshot, *tmp_dir;
    unsigned threads;
    int64_t time_ns;
} my_args;

static void args_free(my_args *a)
{
    cli_strs_free(&a->dbs);
    cli_strs_free(&a->tags);
    cli_strs_free(&a->dump_args);
}

static int parse(int argc, char **argv, const char *sub, my_args *a)
{
    int c;
    memset(a, 0, sizeof(*a));
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", my_opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case M_DEFAULTS: a->conn.defaults_file = optarg; break;
        case M_HOST: a->conn.host = optarg; break;
        case M_PORT: a->conn.port = optarg; break;
        case M_USER: a->conn.user = optarg; break;
        case M_SOCKET: a->conn.socket = optarg; break;
        case M_BINDIR: a->conn.bindir = optarg; break;
        case M_DATABASES:
            if (optarg)
                cli_strs_push(&a->dbs, optarg);
            else
                a->databases_flag = true;
            break;
        case M_TAG: cli_strs_push(&a->tags, optarg); break;
        case M_SERVER: a->server = optarg; break;
        case M_NOBINLOG: a->no_binlog = true; break;
        case M_DUMPARG: cli_strs_push(&a->dump_args, optarg); break;
        case M_SNAPHOST: a->snap_host = optarg; break;
        case M_BINLOGDIR: a->binlog_dir = optarg; break;
        case M_SNAP: a->snapshot = optarg; break;
        case M_DUMPONLY: a->dump_only = true; break;
        case M_TMP: a->tmp_dir = optarg; break;
        case M_THREADS: {
            char what[32];
            snprintf(what, sizeof(what), "mariadb %s", sub);
            if (cli_threads(&a->threads, optarg, what))
                return EXIT_USAGE;
            break;
        }
        case M_TIME:
            if (cf_time_parse(&a->time_ns, optarg))
                return cli_usage("mariadb %s: invalid --time '%s' ('YYYY-MM-DD HH:MM:SS' in "
                                 "local time, or RFC 3339)", sub, optarg);
            break;
        default:
            return cli_usage("mariadb %s: unknown or incomplete option '%s'", sub,
                             argv[optind - 1]);
        }
    }
    /* --databases A B C: the words after the options */
    for (int i = optind; i < argc; i++) {
        if (!a->databases_flag)
            return cli_usage("mariadb %s: unexpected argument '%s'", sub, argv[i]);
        cli_strs_push(&a->dbs, argv[i]);
    }
    if (a->databases_flag && !a->dbs.n)
        return cli_usage("mariadb %s: --databases needs at least one name", sub);
    return 0;
}

static int my_backup(int argc, char **argv)
{
    my_args a;
    int rc = parse(argc, argv, "backup", &a);
    if (rc)
        goto out;
    cf_mariadb_backup_opts o;
    memset(&o, 0, sizeof(o));
    o.conn = a.conn;
    o.databases = a.dbs.v;
    o.dump_args = a.dump_args.v;
    o.tags = a.tags.v;
    o.host = a.snap_host;
    o.server = a.server;
    o.no_binlog = a.no_binlog;
    o.threads = a.threads;
    o.on_message = g.verbose ? cli_message : NULL;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_mariadb_info info;
    cf_backup_stats st;
    int brc = cf_mariadb_backup(repo, &o, &info, &st);
    cf_repo_close(repo);
    if (brc) {
        rc = cli_fail(brc);
        goto out;
    }
    if (g.json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f}", "message_type", "summary",
                              "snapshot_id", info.snapshot_id, "server", info.server,
                              "bytes_total", (json_int_t)st.bytes_total, "bytes_added",
                              (json_int_t)st.bytes_added, "duration_seconds", st.seconds);
        if (j && info.has_binlog) {
            json_object_set_new(j, "binlog_file", json_string(info.binlog_file));
            json_object_set_new(j, "binlog_pos", json_integer((json_int_t)info.binlog_pos));
        }
        cli_print_json(j);
    } else if (!g.quiet) {
        printf("dumped %llu bytes (added %llu) in %.2f s; binlog position %s:%llu\n",
               (unsigned long long)st.bytes_total, (unsigned long long)st.bytes_added,
               st.seconds, info.has_binlog ? info.binlog_file : "-",
               (unsigned long long)info.binlog_pos);
        printf("snapshot %.8s saved\n", info.snapshot_id);
    }
out:
    args_free(&a);
    return rc;
}

static int my_binlog_push(int argc, char **argv)
{
    my_args a;
    int rc = parse(argc, argv, "binlog-push", &a);
    if (rc)
        goto out;
    cf_mariadb_binlog_push_opts o;
    memset(&o, 0, sizeof(o));
    o.conn = a.conn;
    o.binlog_dir = a.binlog_dir;
    o.server = a.server;
    o.on_message = g.verbose ? cli_message : NULL;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_mariadb_binlog_push_result r;
    int prc = cf_mariadb_binlog_push(repo, &o, &r);
    cf_repo_close(repo);
    if (prc) {
        rc = cli_fail(prc);
        goto out;
    }
    if (g.json)
        cli_print_json(json_pack("{s:s, s:i, s:i, s:i, s:I, s:s}", "message_type", "summary",
                                 "closed", (int)r.closed, "stored", (int)r.stored, "already",
                                 (int)r.already, "bytes", (json_int_t)r.bytes, "active",
                                 r.active));
    else if (!g.quiet)
        printf("archived %u binlogs (%llu bytes), %u already archived; %s is active\n",
               r.stored, (unsigned long long)r.bytes, r.already, r.active);
out:
    args_free(&a);
    return rc;
}

static int my_restore(int argc, char **argv)
{
    my_args a;
    int rc = parse(argc, argv, "restore", &a);
    if (rc)
        goto out;
    cf_mariadb_restore_opts o;
    memset(&o, 0, sizeof(o));
    o.conn = a.conn;
    o.snapshot = a.snapshot;
    o.server = a.server;
    o.time_ns = a.time_ns;
    o.dump_only = a.dump_only;
    o.tmp_dir = a.tmp_dir;
    o.on_message = g.quiet ? NULL : cli_message;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_mariadb_restore_result r;
    int rrc = cf_mariadb_restore(repo, &o, &r);
    cf_repo_close(repo);
    if (rrc) {
        rc = cli_fail(rrc);
        goto out;
    }
    if (g.json)
        cli_print_json(json_pack("{s:s, s:s, s:i, s:s, s:f, s:f}", "message_type", "summary",
                                 "snapshot_id", r.base.snapshot_id, "binlogs", (int)r.binlogs,
                                 "stop_datetime", r.stop_datetime, "load_seconds",
                                 r.load_seconds, "replay_seconds", r.replay_seconds));
    else if (!g.quiet)
        printf("restored dump %.8s (%.2f s) and replayed %u binlogs%s%s%s (%.2f s)\n",
               r.base.snapshot_id, r.load_seconds, r.binlogs,
               r.stop_datetime[0] ? " up to " : "", r.stop_datetime,
               r.stop_datetime[0] ? " UTC" : "", r.replay_seconds);
out:
    args_free(&a);
    return rc;
}

static int list_cb(const char *name, uint64_t size, void *payload)
{
    json_t *arr = payload;
    if (arr)
        json_array_append_new(arr, json_pack("{s:s, s:I}", "name", name, "size", (json_int_t)size));
    else
        printf("  binlog %s (%llu bytes stored)\n", name, (unsigned long long)size);
    return 0;
}

static int my_list(int argc, char **argv)
{
    my_args a;
    int rc = parse(argc, argv, "list", &a);
    if (rc)
        goto out;
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
    json_t *dumps = g.json ? json_array() : NULL, *logs = g.json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        cf_mariadb_info m;
        if (cf_mariadb_info_get(&m, list[i]) != 0)
            continue;
        if (a.server && strcmp(a.server, m.server) != 0)
            continue;
        char when[40];
        cf_time_format(when, m.time_ns);
        if (dumps)
            json_array_append_new(dumps, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "snapshot_id",
                                                   m.snapshot_id, "time", when, "server",
                                                   m.server, "databases", m.databases,
                                                   "binlog_file", m.binlog_file, "binlog_pos",
                                                   (json_int_t)m.binlog_pos));
        else
            printf("%.8s  %.19s  server %s  binlog %s:%llu  %s\n", m.snapshot_id, when,
                   m.server, m.has_binlog ? m.binlog_file : "-",
                   (unsigned long long)m.binlog_pos, m.databases[0] ? m.databases : "(all)");
    }
    cf_error_clear();
    int arc = cf_archive_list(repo, CF_MARIADB_ARCHIVE_KIND, list_cb, logs);
    if (arc)
        rc = cli_fail(arc);
    if (g.json)
        cli_print_json(json_pack("{s:o, s:o}", "dumps", dumps, "binlogs", logs));
    cf_snapshot_list_free(list, n);
    cf_repo_close(repo);
out:
    args_free(&a);
    return rc;
}

int cmd_mariadb(int argc, char **argv)
{
    static const cli_sub subs[] = {
        {"backup", my_backup},
        {"binlog-push", my_binlog_push},
        {"restore", my_restore},
        {"list", my_list},
        {NULL, NULL},
    };
    return cli_dispatch("mariadb", mariadb_usage, subs, argc, argv);
}
