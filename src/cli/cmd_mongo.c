/*
 * cmd_mongo.c - `coffer mongo backup|restore|list`: options, where the password and the tool
 * come from, and output. The work is done by include/coffer/mongo.h.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "coffer/mongo.h"

static const char *mongo_usage =
    "usage: coffer mongo COMMAND [connection options] [options]\n"
    "\n"
    "  backup [--db D [--collection C]] [--no-oplog] [--tag T]...\n"
    "                              mongodump --archive (--oplog for the whole server) into a\n"
    "                              snapshot\n"
    "  restore [SNAPSHOT|latest] [--drop] [--ns-include PATTERN]... [--ns-from X --ns-to Y]\n"
    "          [--no-oplog-replay] mongorestore --archive (--oplogReplay for an --oplog dump)\n"
    "  list                        MongoDB dumps in the repository\n"
    "\n"
    "connection options (passed to the tools):\n"
    "  --uri URI (or COFFER_MONGO_URI)  --host H  --port P  --username U\n"
    "  --authentication-database DB\n"
    "  the password from COFFER_MONGO_PASSWORD or MONGODB_PASSWORD, given to the tool in a\n"
    "  0600 temporary --config file, never on its command line (so is a URI holding one)\n"
    "tools: --mongodump PATH (or COFFER_MONGODUMP), --mongorestore PATH (or COFFER_MONGORESTORE)\n"
    "more: --oplog (the default without --db), --host-name H (snapshot host), --threads N,\n"
    "--snapshot ID. See docs/databases/mongodb.md.\n";

enum {
    G_URI = OPT_FIRST_LOCAL, G_HOST, G_PORT, G_USER, G_AUTHDB, G_DB, G_COLL, G_OPLOG, G_NOOPLOG,
    G_TAG, G_SNAPHOST, G_THREADS, G_DUMP, G_RESTORE, G_DROP, G_NSINC, G_NSFROM, G_NSTO,
    G_NOREPLAY, G_SNAP
};

static const struct option mongo_opts[] = {
    CLI_COMMON_OPTIONS,
    {"uri", required_argument, NULL, G_URI},
    {"host", required_argument, NULL, G_HOST},
    {"port", required_argument, NULL, G_PORT},
    {"username", required_argument, NULL, G_USER},
    {"authentication-database", required_argument, NULL, G_AUTHDB},
    {"db", required_argument, NULL, G_DB},
    {"collection", required_argument, NULL, G_COLL},
    {"oplog", no_argument, NULL, G_OPLOG},
    {"no-oplog", no_argument, NULL, G_NOOPLOG},
    {"tag", required_argument, NULL, G_TAG},
    {"host-name", required_argument, NULL, G_SNAPHOST},
    {"threads", required_argument, NULL, G_THREADS},
    {"mongodump", required_argument, NULL, G_DUMP},
    {"mongorestore", required_argument, NULL, G_RESTORE},
    {"drop", no_argument, NULL, G_DROP},
    {"ns-include", required_argument, NULL, G_NSINC},
    {"ns-from", required_argument, NULL, G_NSFROM},
    {"ns-to", required_argument, NULL, G_NSTO},
    {"no-oplog-replay", no_argument, NULL, G_NOREPLAY},
    {"snapshot", required_argument, NULL, G_SNAP},
    {NULL, 0, NULL, 0},
};

typedef struct {
    cf_mongo_conn conn;
    const char *db, *collection, *snap_host, *mongodump, *mongorestore, *ns_from, *ns_to;
    const char *snapshot;
    int oplog; /* -1 default, 0 --no-oplog, 1 --oplog */
    bool drop, no_replay;
    cli_strs tags, ns_include;
    unsigned threads;
} mongo_args;

static void args_free(mongo_args *a)
{
    cli_strs_free(&a->tags);
    cli_strs_free(&a->ns_include);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int parse(int argc, char **argv, const char *sub, mongo_args *a)
{
    int c;
    memset(a, 0, sizeof(*a));
    a->oplog = -1;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", mongo_opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case G_URI: a->conn.uri = optarg; break;
        case G_HOST: a->conn.host = optarg; break;
        case G_PORT: a->conn.port = optarg; break;
        case G_USER: a->conn.username = optarg; break;
        case G_AUTHDB: a->conn.auth_db = optarg; break;
        case G_DB: a->db = optarg; break;
        case G_COLL: a->collection = optarg; break;
        case G_OPLOG: a->oplog = 1; break;
        case G_NOOPLOG: a->oplog = 0; break;
        case G_TAG: cli_strs_push(&a->tags, optarg); break;
        case G_SNAPHOST: a->snap_host = optarg; break;
        case G_DUMP: a->mongodump = optarg; break;
        case G_RESTORE: a->mongorestore = optarg; break;
        case G_DROP: a->drop = true; break;
        case G_NSINC: cli_strs_push(&a->ns_include, optarg); break;
        case G_NSFROM: a->ns_from = optarg; break;
        case G_NSTO: a->ns_to = optarg; break;
        case G_NOREPLAY: a->no_replay = true; break;
        case G_SNAP: a->snapshot = optarg; break;
        case G_THREADS: {
            char what[32];
            snprintf(what, sizeof(what), "mongo %s", sub);
            if (cli_threads(&a->threads, optarg, what))
                return EXIT_USAGE;
            break;
        }
        default:
            return cli_usage("mongo %s: unknown or incomplete option '%s'", sub,
                             argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (strcmp(sub, "restore") != 0 || a->snapshot)
            return cli_usage("mongo %s: unexpected argument '%s'", sub, argv[i]);
        a->snapshot = argv[i];
    }
    if (!a->conn.uri)
        a->conn.uri = env_nonempty("COFFER_MONGO_URI");
    a->conn.password = env_nonempty("COFFER_MONGO_PASSWORD");
    if (!a->conn.password)
        a->conn.password = env_nonempty("MONGODB_PASSWORD");
    if (a->conn.uri && (a->conn.host || a->conn.port))
        return cli_usage("mongo %s: --uri (or COFFER_MONGO_URI) and --host/--port exclude each "
                         "other", sub);
    if (a->collection && !a->db)
        return cli_usage("mongo %s: --collection needs --db", sub);
    if (a->oplog == 1 && a->db)
        return cli_usage("mongo %s: --oplog is only possible for a dump of the whole server, "
                         "not with --db (use --no-oplog)", sub);
    if ((a->ns_from == NULL) != (a->ns_to == NULL))
        return cli_usage("mongo %s: --ns-from and --ns-to go together", sub);
    return 0;
}

static json_t *info_json(const cf_mongo_info *m)
{
    char when[40];
    cf_time_format(when, m->time_ns);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I}", "snapshot_id",
                     m->snapshot_id, "time", when, "tool_version", m->tool_version, "uri",
                     m->uri, "host", m->host, "db", m->db, "collection", m->collection, "oplog",
                     m->oplog, "bytes", (json_int_t)m->bytes);
}

static int mg_backup(int argc, char **argv)
{
    mongo_args a;
    int rc = parse(argc, argv, "backup", &a);
    if (rc)
        goto out;
    cf_mongo_backup_opts o;
    memset(&o, 0, sizeof(o));
    o.conn = a.conn;
    o.conn.tool = a.mongodump ? a.mongodump : env_nonempty("COFFER_MONGODUMP");
    o.db = a.db;
    o.collection = a.collection;
    o.oplog = a.oplog == -1 ? a.db == NULL : a.oplog == 1;
    o.tags = a.tags.v;
    o.host = a.snap_host;
    o.threads = a.threads;
    o.on_message = g.quiet ? NULL : cli_message;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_mongo_info info;
    cf_backup_stats st;
    int brc = cf_mongo_backup(repo, &o, &info, &st);
    cf_repo_close(repo);
    if (brc) {
        rc = cli_fail(brc);
        goto out;
    }
    if (g.json) {
        json_t *j = info_json(&info);
        if (j) {
            json_object_set_new(j, "message_type", json_string("summary"));
            json_object_set_new(j, "bytes_total", json_integer((json_int_t)st.bytes_total));
            json_object_set_new(j, "bytes_added", json_integer((json_int_t)st.bytes_added));
            json_object_set_new(j, "duration_seconds", json_real(st.seconds));
        }
        cli_print_json(j);
    } else if (!g.quiet) {
        printf("dumped %llu bytes (added %llu) in %.2f s with mongodump %s%s\n",
               (unsigned long long)st.bytes_total, (unsigned long long)st.bytes_added,
               st.seconds, info.tool_version, info.oplog ? " --oplog" : "");
        printf("snapshot %.8s saved\n", info.snapshot_id);
    }
out:
    args_free(&a);
    return rc;
}

static int mg_restore(int argc, char **argv)
{
    mongo_args a;
    int rc = parse(argc, argv, "restore", &a);
    if (rc)
        goto out;
    cf_mongo_restore_opts o;
    memset(&o, 0, sizeof(o));
    o.conn = a.conn;
    o.conn.tool = a.mongorestore ? a.mongorestore : env_nonempty("COFFER_MONGORESTORE");
    o.snapshot = a.snapshot;
    o.drop = a.drop;
    o.ns_include = a.ns_include.v;
    o.ns_from = a.ns_from;
    o.ns_to = a.ns_to;
    o.no_oplog_replay = a.no_replay;
    o.on_message = g.quiet ? NULL : cli_message;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_mongo_restore_result r;
    int rrc = cf_mongo_restore(repo, &o, &r);
    cf_repo_close(repo);
    if (rrc) {
        rc = cli_fail(rrc);
        goto out;
    }
    if (g.json)
        cli_print_json(json_pack("{s:s, s:s, s:I, s:b, s:f}", "message_type", "summary",
                                 "snapshot_id", r.base.snapshot_id, "bytes",
                                 (json_int_t)r.base.bytes, "oplog_replay", r.oplog_replay,
                                 "duration_seconds", r.seconds));
    else if (!g.quiet)
        printf("restored dump %.8s (%llu bytes)%s in %.2f s\n", r.base.snapshot_id,
               (unsigned long long)r.base.bytes, r.oplog_replay ? " with --oplogReplay" : "",
               r.seconds);
out:
    args_free(&a);
    return rc;
}

static int mg_list(int argc, char **argv)
{
    mongo_args a;
    int rc = parse(argc, argv, "list", &a);
    if (rc)
        goto out;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_snapshot **list = NULL;
    size_t n = 0;
    int lrc = cf_snapshot_list(&list, &n, repo, NULL);
    cf_repo_close(repo);
    if (lrc) {
        rc = cli_fail(lrc);
        goto out;
    }
    json_t *arr = g.json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        cf_mongo_info m;
        if (cf_mongo_info_get(&m, list[i]) != 0)
            continue;
        if (arr) {
            json_array_append_new(arr, info_json(&m));
        } else {
            char when[40];
            cf_time_format(when, m.time_ns);
            printf("%.8s  %.19s  %s%s%s  %s  %llu bytes  mongodump %s  %s\n", m.snapshot_id,
                   when, m.db[0] ? m.db : "(all)", m.collection[0] ? "." : "", m.collection,
                   m.oplog ? "oplog" : "no-oplog", (unsigned long long)m.bytes,
                   m.tool_version[0] ? m.tool_version : "?", m.uri[0] ? m.uri : m.host);
        }
    }
    cf_error_clear();
    if (arr)
        cli_print_json(arr);
    cf_snapshot_list_free(list, n);
out:
    args_free(&a);
    return rc;
}

int cmd_mongo(int argc, char **argv)
{
    static const cli_sub subs[] = {
        {"backup", mg_backup},
        {"restore", mg_restore},
        {"list", mg_list},
        {NULL, NULL},
    };
    return cli_dispatch("mongo", mongo_usage, subs, argc, argv);
}
