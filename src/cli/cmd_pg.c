/*
 * cmd_pg.c - `coffer pg backup|restore|check|list|expire|dump|restore-dump` and the
 * PostgreSQL archive and restore commands `coffer wal-push` / `coffer wal-fetch`: options,
 * the environment file they read, output. The work is done by include/coffer/postgres.h.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "coffer/postgres.h"

/* ------------------------------------------------------------------ shared options */

enum {
    P_PGDATA = OPT_FIRST_LOCAL, P_HOST, P_PORT, P_USER, P_DBNAME, P_RUNAS, P_BINDIR, P_CLUSTER,
    P_CONFIG, P_FIRST_SUB
};
#define PG_COMMON_OPTIONS                                       \
    CLI_COMMON_OPTIONS,                                         \
    {"pgdata", required_argument, NULL, P_PGDATA},              \
    {"host", required_argument, NULL, P_HOST},                  \
    {"port", required_argument, NULL, P_PORT},                  \
    {"user", required_argument, NULL, P_USER},                  \
    {"dbname", required_argument, NULL, P_DBNAME},              \
    {"run-as", required_argument, NULL, P_RUNAS},               \
    {"pg-bindir", required_argument, NULL, P_BINDIR},           \
    {"cluster", required_argument, NULL, P_CLUSTER},            \
    {"config", required_argument, NULL, P_CONFIG}

typedef struct {
    cf_pg_conn conn;
    const char *cluster;
} pg_common;

static const char *const cred_vars[] = {"COFFER_PASSWORD", "COFFER_PASSWORD_FILE",
                                        "COFFER_PASSWORD_COMMAND", "COFFER_KEY",
                                        "COFFER_KEY_FILE", "COFFER_KEY_COMMAND", NULL};

/* Parse one shell-like value: 'single', "double" (\\ \" \$ \`), bare words with \x. */
static bool parse_value(const char *in, char *out, size_t outlen)
{
    size_t k = 0;
    const char *p = in;
    while (*p && *p != '#') {
        if (*p == '\'') {
            const char *end = strchr(p + 1, '\'');
            if (!end)
                return false;
            for (const char *q = p + 1; q < end; q++)
                if (k + 1 < outlen)
                    out[k++] = *q;
            p = end + 1;
        } else if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1] && strchr("\\\"$`", p[1]))
                    p++;
                if (k + 1 < outlen)
                    out[k++] = *p;
                p++;
            }
            if (*p != '"')
                return false;
            p++;
        } else if (*p == ' ' || *p == '\t') {
            break;
        } else {
            if (*p == '\\' && p[1])
                p++;
            if (k + 1 < outlen)
                out[k++] = *p;
            p++;
        }
    }
    out[k] = '\0';
    return k + 1 < outlen;
}

/* --config FILE: NAME=value lines (COFFER_* and PG*) put into the environment. A credential
 * in the file replaces every credential from the environment. */
static int load_config(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return cli_error(CF_EIO, NULL, "unable to read config file '%s': %s", path,
                         strerror(errno));
    }
    const char *env_repo = getenv("COFFER_REPO");
    bool repo_from_env = g.repo && env_repo && g.repo == env_repo;
    bool creds_cleared = false, secret = false;
    char line[8192], val[8192];
    int rc = 0, lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = line;
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
            s[--n] = '\0';
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        if (strncmp(s, "export ", 7) == 0)
            s += 7;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            rc = cli_error(CF_EINVAL, NULL, "config file '%s', line %d: expected NAME=value",
                           path, lineno);
            break;
        }
        *eq = '\0';
        if (!parse_value(eq + 1, val, sizeof(val))) {
            rc = cli_error(CF_EINVAL, NULL, "config file '%s', line %d: unterminated quote",
                           path, lineno);
            break;
        }
        if (strncmp(s, "COFFER_", 7) != 0 && strncmp(s, "PG", 2) != 0) {
            fprintf(stderr, "coffer: warning: config file '%s', line %d: '%s' ignored (only "
                            "COFFER_* and PG* variables)\n", path, lineno, s);
            continue;
        }
        bool is_cred = false;
        for (const char *const *c = cred_vars; *c; c++)
            is_cred |= strcmp(s, *c) == 0;
        if (is_cred && !creds_cleared) {
            for (const char *const *c = cred_vars; *c; c++)
                unsetenv(*c);
            creds_cleared = true;
        }
        secret |= strcmp(s, "COFFER_PASSWORD") == 0 || strcmp(s, "COFFER_KEY") == 0;
        setenv(s, val, 1);
    }
    OPENSSL_cleanse(line, sizeof(line));
    OPENSSL_cleanse(val, sizeof(val));
    struct stat st;
    if (rc == 0 && secret && fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "coffer: warning: config file '%s' holds a secret but others may read "
                        "it (chmod 600)\n", path);
    fclose(f);
    if (rc == 0 && (repo_from_env || !g.repo))
        g.repo = getenv("COFFER_REPO");
    return rc;
}

/* Handle a connection option; returns 1 if c was one, 0 if not, or -(exit code). */
static int pg_common_option(pg_common *pc, int c, const char *arg)
{
    switch (c) {
    case P_PGDATA: pc->conn.pgdata = arg; return 1;
    case P_HOST: pc->conn.host = arg; return 1;
    case P_PORT: pc->conn.port = arg; return 1;
    case P_USER: pc->conn.user = arg; return 1;
    case P_DBNAME: pc->conn.dbname = arg; return 1;
    case P_RUNAS: pc->conn.run_as = arg; return 1;
    case P_BINDIR: pc->conn.bindir = arg; return 1;
    case P_CLUSTER: pc->cluster = arg; return 1;
    case P_CONFIG: {
        int rc = load_config(arg);
        return rc ? -rc : 1;
    }
    default: return 0;
    }
}

static void pg_common_init(pg_common *pc)
{
    memset(pc, 0, sizeof(*pc));
    const char *cl = getenv("COFFER_PG_CLUSTER");
    pc->cluster = cl && *cl ? cl : NULL;
}

/* The cluster after --config may have set COFFER_PG_CLUSTER. */
static void pg_common_done(pg_common *pc, bool cluster_given)
{
    if (!cluster_given) {
        const char *cl = getenv("COFFER_PG_CLUSTER");
        pc->cluster = cl && *cl ? cl : NULL;
    }
}

static void pg_msg(cf_pg_msg_level level, const char *line, void *payload)
{
    (void)payload;
    if (level == CF_PG_MSG_DETAIL && !g.verbose)
        return;
    if (level == CF_PG_MSG_INFO && g.quiet)
        return;
    /* lines of the PostgreSQL programs carry their own name */
    bool tool = strncmp(line, "pg_", 3) == 0 || strncmp(line, "psql", 4) == 0;
    if (level == CF_PG_MSG_WARNING)
        fprintf(stderr, "%s%s\n", tool ? "" : "coffer: warning: ", line);
    else
        fprintf(g.json ? stderr : stdout, "%s\n", line);
    fflush(stdout);
}

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

#define PARSE_LOOP_HEAD(opts)                                                         \
    optind = 0;                                                                       \
    opterr = 0;                                                                       \
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {                 \
        if (cli_common_option(c, optarg))                                             \
            continue;                                                                 \
        if (c == 'r') {                                                               \
            g.repo = optarg;                                                          \
            continue;                                                                 \
        }                                                                             \
        if (c == 'q') {                                                               \
            g.quiet = true;                                                           \
            continue;                                                                 \
        }                                                                             \
        if (c == 'v') {                                                               \
            g.verbose++;                                                              \
            continue;                                                                 \
        }                                                                             \
        if (c == P_CLUSTER)                                                           \
            cluster_given = true;                                                     \
        int pcr = pg_common_option(&pc, c, optarg);                                   \
        if (pcr < 0) {                                                                \
            rc = -pcr;                                                                \
            goto out;                                                                 \
        }                                                                             \
        if (pcr > 0)                                                                  \
            continue;

static void backup_json_summary(const char *id, const cf_backup_stats *st, json_t *extra)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f}", "message_type", "summary",
                          "snapshot_id", id, "bytes_total", (json_int_t)st->bytes_total,
                          "bytes_read", (json_int_t)st->bytes_read, "bytes_added",
                          (json_int_t)st->bytes_added, "duration_seconds", st->seconds);
    if (o && extra)
        json_object_update(o, extra);
    json_decref(extra);
    cli_print_json(o);
}

/* ------------------------------------------------------------------ pg backup */

static int pg_backup(int argc, char **argv)
{
    enum { O_TYPE = P_FIRST_SUB, O_TAG, O_SNAPHOST, O_CHECKPOINT, O_NOARCH, O_ARCHTMO, O_THREADS };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"type", required_argument, NULL, O_TYPE},
        {"tag", required_argument, NULL, O_TAG},
        {"snapshot-host", required_argument, NULL, O_SNAPHOST},
        {"checkpoint", required_argument, NULL, O_CHECKPOINT},
        {"no-archive-check", no_argument, NULL, O_NOARCH},
        {"archive-timeout", required_argument, NULL, O_ARCHTMO},
        {"threads", required_argument, NULL, O_THREADS},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_backup_opts o;
    cli_strs tags = {0};
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    memset(&o, 0, sizeof(o));
    o.type = CF_BACKUP_INCREMENTAL;
    PARSE_LOOP_HEAD(opts)
        switch (c) {
        case O_TYPE:
            if (strcmp(optarg, "full") == 0)
                o.type = CF_BACKUP_FULL;
            else if (strcmp(optarg, "incremental") == 0 || strcmp(optarg, "incr") == 0)
                o.type = CF_BACKUP_INCREMENTAL;
            else {
                rc = cli_usage("pg backup: unknown --type '%s' (full, incremental)", optarg);
                goto out;
            }
            break;
        case O_TAG: cli_strs_push(&tags, optarg); break;
        case O_SNAPHOST: o.host = optarg; break;
        case O_CHECKPOINT:
            if (strcmp(optarg, "spread") != 0 && strcmp(optarg, "fast") != 0) {
                rc = cli_usage("pg backup: --checkpoint is fast or spread");
                goto out;
            }
            o.spread_checkpoint = strcmp(optarg, "spread") == 0;
            break;
        case O_NOARCH: o.no_archive_check = true; break;
        case O_ARCHTMO: {
            char *end;
            double v = strtod(optarg, &end);
            if (end == optarg || *end || v <= 0) {
                rc = cli_usage("pg backup: --archive-timeout takes seconds");
                goto out;
            }
            o.archive_timeout = v;
            break;
        }
        case O_THREADS:
            if ((rc = cli_threads(&o.threads, optarg, "pg backup")))
                goto out;
            break;
        default:
            rc = cli_usage("pg backup: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind != argc) {
        rc = cli_usage("pg backup: unexpected argument '%s'", argv[optind]);
        goto out;
    }
    pg_common_done(&pc, cluster_given);
    o.conn = pc.conn;
    o.cluster = pc.cluster;
    o.tags = tags.v;
    o.on_message = pg_msg;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_pg_base_info in;
    cf_backup_stats st;
    int brc = cf_pg_backup(repo, &o, &in, &st);
    if (brc) {
        rc = cli_fail(brc);
        cf_repo_close(repo);
        goto out;
    }
    char start[20], stop[20];
    cf_pg_lsn_format(start, in.start_lsn);
    cf_pg_lsn_format(stop, in.stop_lsn);
    if (g.json) {
        backup_json_summary(in.snapshot_id, &st,
                            json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "timeline",
                                      (json_int_t)in.timeline, "start_lsn", start, "stop_lsn",
                                      stop, "start_wal", in.start_wal, "stop_wal", in.stop_wal,
                                      "server_version", (json_int_t)in.server_version));
    } else if (!g.quiet) {
        char total[32], added[32];
        fmt_size(total, st.bytes_total);
        fmt_size(added, st.bytes_added);
        printf("base backup of PostgreSQL %u.%u, timeline %u: start %s (%s), stop %s (%s)\n",
               in.server_version / 10000, in.server_version % 100, in.timeline, start,
               in.start_wal, stop, in.stop_wal);
        printf("processed %s, added %s to the repository in %.2f s\n", total, added, st.seconds);
        printf("snapshot %.8s saved\n", in.snapshot_id);
    }
    cf_repo_close(repo);
out:
    cli_strs_free(&tags);
    return rc;
}

/* ------------------------------------------------------------------ pg restore */

/* Segments a restore_command fetches ahead into its spool (see wal_fetch). */
#define PREFETCH_DEFAULT 16u
/* The spool of a restore_command without --spool: inside the data directory PostgreSQL runs
 * it in; none elsewhere (the working directory is not a data directory). */
#define SPOOL_DEFAULT "pg_wal/coffer-prefetch"

static char *self_exe(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0)
        return strdup("coffer");
    buf[n] = '\0';
    return strdup(buf);
}

static char *abs_path(const char *p)
{
    if (p[0] == '/')
        return strdup(p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return strdup(p);
    size_t n = strlen(cwd) + strlen(p) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", cwd, p);
    return s;
}

/* A shell-quoted "NAME='value'" line (malloc'd). */
static char *env_line(const char *name, const char *value)
{
    size_t n = strlen(name) + 4 * strlen(value) + 4;
    char *s = malloc(n);
    if (!s)
        return NULL;
    size_t k = (size_t)snprintf(s, n, "%s='", name);
    for (const char *p = value; *p; p++) {
        if (*p == '\'') {
            memcpy(s + k, "'\\''", 4);
            k += 4;
        } else {
            s[k++] = *p;
        }
    }
    s[k++] = '\'';
    s[k] = '\0';
    return s;
}

static void sh_append(char *out, size_t len, const char *s)
{
    size_t k = strlen(out);
    if (k + 1 < len)
        out[k++] = '\'';
    for (const char *p = s; *p && k + 5 < len; p++) {
        if (*p == '\'') {
            memcpy(out + k, "'\\''", 4);
            k += 4;
        } else {
            out[k++] = *p;
        }
    }
    if (k + 1 < len)
        out[k++] = '\'';
    out[k] = '\0';
}

/* The environment lines restore_command needs: the repository and the credential used now
 * (a file or command by reference, a secret from the environment or terminal by value). */
static int restore_env(cli_strs *lines, char ***owned, size_t *nowned, const cli_cred *cred,
                       const char *cluster)
{
    const char *kfile = g.key_file ? g.key_file : getenv("COFFER_KEY_FILE");
    const char *kcmd = g.key_command ? g.key_command : getenv("COFFER_KEY_COMMAND");
    const char *pfile = g.password_file ? g.password_file : getenv("COFFER_PASSWORD_FILE");
    const char *pcmd = g.password_command ? g.password_command : getenv("COFFER_PASSWORD_COMMAND");
    char *repo = strchr(g.repo, ':') || g.repo[0] == '/' ? strdup(g.repo) : abs_path(g.repo);
    char *items[4] = {NULL, NULL, NULL, NULL};
    items[0] = repo ? env_line("COFFER_REPO", repo) : NULL;
    free(repo);
    if (kfile) {
        char *a = abs_path(kfile);
        items[1] = a ? env_line("COFFER_KEY_FILE", a) : NULL;
        free(a);
    } else if (kcmd) {
        items[1] = env_line("COFFER_KEY_COMMAND", kcmd);
    } else if (cred->c.key) {
        char hex[65];
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", cred->key[i]);
        items[1] = env_line("COFFER_KEY", hex);
        OPENSSL_cleanse(hex, sizeof(hex));
    } else if (pfile) {
        char *a = abs_path(pfile);
        items[1] = a ? env_line("COFFER_PASSWORD_FILE", a) : NULL;
        free(a);
    } else if (pcmd) {
        items[1] = env_line("COFFER_PASSWORD_COMMAND", pcmd);
    } else if (cred->password) {
        items[1] = env_line("COFFER_PASSWORD", cred->password);
    }
    if (cluster)
        items[2] = env_line("COFFER_PG_CLUSTER", cluster);
    /* all or nothing: a line missing would leave restore_command without a credential */
    bool complete = items[0] && items[1] && (items[2] || !cluster);
    char **p = complete ? realloc(*owned, (*nowned + 3) * sizeof(char *)) : NULL;
    if (!p) {
        for (int j = 0; j < 3; j++)
            free(items[j]);
        return cli_error(CF_ENOMEM, NULL, "out of memory");
    }
    *owned = p;
    for (int i = 0; i < 3; i++) {
        if (!items[i])
            continue;
        p[(*nowned)++] = items[i];
        cli_strs_push(lines, items[i]);
    }
    return 0;
}

static int pg_restore_cmd(int argc, char **argv)
{
    enum { O_TARGET = P_FIRST_SUB, O_SNAP, O_TIME, O_LSN, O_XID, O_NAME, O_LATEST, O_IMMEDIATE,
           O_EXCL, O_TIMELINE, O_STANDBY, O_ACTION, O_START, O_SET, O_OWNER, O_ARCHMODE,
           O_ENVFILE, O_LOG, O_WAIT, O_NOVERIFY, O_RESTCMD, O_PREFETCH };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"target", required_argument, NULL, O_TARGET},
        {"snapshot", required_argument, NULL, O_SNAP},
        {"time", required_argument, NULL, O_TIME},
        {"lsn", required_argument, NULL, O_LSN},
        {"xid", required_argument, NULL, O_XID},
        {"name", required_argument, NULL, O_NAME},
        {"latest", no_argument, NULL, O_LATEST},
        {"immediate", no_argument, NULL, O_IMMEDIATE},
        {"exclusive", no_argument, NULL, O_EXCL},
        {"timeline", required_argument, NULL, O_TIMELINE},
        {"standby", no_argument, NULL, O_STANDBY},
        {"target-action", required_argument, NULL, O_ACTION},
        {"start", no_argument, NULL, O_START},
        {"set", required_argument, NULL, O_SET},
        {"owner", required_argument, NULL, O_OWNER},
        {"archive-mode", required_argument, NULL, O_ARCHMODE},
        {"env-file", required_argument, NULL, O_ENVFILE},
        {"log", required_argument, NULL, O_LOG},
        {"wait-timeout", required_argument, NULL, O_WAIT},
        {"no-verify", no_argument, NULL, O_NOVERIFY},
        {"restore-command", required_argument, NULL, O_RESTCMD},
        {"prefetch", required_argument, NULL, O_PREFETCH},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_restore_opts o;
    cli_strs sets = {0}, envl = {0}, allsets = {0};
    char **owned = NULL;
    size_t nowned = 0;
    char *envfile = NULL, *exe = NULL, *cmd = NULL, *spool = NULL, *endcmd = NULL;
    unsigned prefetch = PREFETCH_DEFAULT;
    bool cluster_given = false;
    int ntargets = 0, c, rc = 0;
    cli_cred cred;
    memset(&cred, 0, sizeof(cred));
    pg_common_init(&pc);
    memset(&o, 0, sizeof(o));
    PARSE_LOOP_HEAD(opts)
        switch (c) {
        case O_TARGET: o.target_dir = optarg; break;
        case O_SNAP: o.snapshot = optarg; break;
        case O_TIME: o.target = CF_PG_TARGET_TIME; o.target_value = optarg; ntargets++; break;
        case O_LSN: o.target = CF_PG_TARGET_LSN; o.target_value = optarg; ntargets++; break;
        case O_XID: o.target = CF_PG_TARGET_XID; o.target_value = optarg; ntargets++; break;
        case O_NAME: o.target = CF_PG_TARGET_NAME; o.target_value = optarg; ntargets++; break;
        case O_LATEST: o.target = CF_PG_TARGET_END; ntargets++; break;
        case O_IMMEDIATE: o.target = CF_PG_TARGET_IMMEDIATE; ntargets++; break;
        case O_EXCL: o.target_exclusive = true; break;
        case O_TIMELINE: o.target_timeline = optarg; break;
        case O_STANDBY: o.standby = true; break;
        case O_ACTION: o.target_action = optarg; break;
        case O_START: o.start = true; break;
        case O_SET: cli_strs_push(&sets, optarg); break;
        case O_OWNER: o.owner = optarg; break;
        case O_ARCHMODE:
            if (strcmp(optarg, "off") == 0)
                o.archiving = CF_PG_ARCHIVING_OFF;
            else if (strcmp(optarg, "keep") == 0)
                o.archiving = CF_PG_ARCHIVING_KEEP;
            else {
                rc = cli_usage("pg restore: --archive-mode is off or keep");
                goto out;
            }
            break;
        case O_ENVFILE: o.env_file = optarg; break;
        case O_LOG: o.log_file = optarg; break;
        case O_WAIT: {
            char *end;
            double v = strtod(optarg, &end);
            if (end == optarg || *end || v <= 0) {
                rc = cli_usage("pg restore: --wait-timeout takes seconds");
                goto out;
            }
            o.wait_timeout = v;
            break;
        }
        case O_NOVERIFY: o.no_verify = true; break;
        case O_RESTCMD: o.restore_command = optarg; break;
        case O_PREFETCH: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (end == optarg || *end || v > 1024) {
                rc = cli_usage("pg restore: --prefetch takes a number of segments from 0 to 1024");
                goto out;
            }
            prefetch = (unsigned)v;
            break;
        }
        default:
            rc = cli_usage("pg restore: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind != argc) {
        rc = cli_usage("pg restore: unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!o.target_dir) {
        rc = cli_usage("pg restore: --target DIR (the new data directory) is required");
        goto out;
    }
    if (ntargets > 1) {
        rc = cli_usage("pg restore: give one of --time, --lsn, --xid, --name, --immediate, "
                       "--latest");
        goto out;
    }
    if (o.target_action && o.target == CF_PG_TARGET_END) {
        rc = cli_usage("pg restore: --target-action needs a recovery target (--time, --lsn, "
                       "--xid, --name, --immediate)");
        goto out;
    }
    pg_common_done(&pc, cluster_given);
    o.cluster = pc.cluster;
    o.bindir = pc.conn.bindir;
    o.on_message = pg_msg;
    if (!g.repo) {
        rc = cli_usage("no repository given: use --repo or set COFFER_REPO");
        goto out;
    }
    if ((rc = cli_cred_get(&cred, false, false)))
        goto out;
    cf_repo *repo = NULL;
    int orc = cf_repo_open_cred(&repo, g.repo, &cred.c);
    if (orc) {
        rc = cli_fail(orc);
        goto out;
    }
    cli_set_notice(repo);
    cli_print_warnings(repo);
    /* restore_command: this coffer, reading the repository and credential from a 0600 file
     * beside the data directory (outside it: base backups would copy it) */
    if (!o.restore_command) {
        char *dir = abs_path(o.target_dir);
        if (dir) {
            size_t dl = strlen(dir);
            while (dl > 1 && dir[dl - 1] == '/')
                dir[--dl] = '\0';
        }
        if (o.env_file)
            envfile = abs_path(o.env_file);
        else if (dir && (envfile = malloc(strlen(dir) + 16)))
            snprintf(envfile, strlen(dir) + 16, "%s.coffer.env", dir);
        /* segments prefetched into a spool inside the new data directory (pg_wal is not
         * part of base backups), removed when recovery ends */
        if (dir && (spool = malloc(strlen(dir) + 32)))
            snprintf(spool, strlen(dir) + 32, "%s/pg_wal/coffer-prefetch", dir);
        free(dir);
        exe = self_exe();
        size_t n = ((envfile ? strlen(envfile) : 0) + (spool ? strlen(spool) : 0) +
                    (exe ? strlen(exe) : 0)) * 4 + 160;
        cmd = calloc(1, n);
        endcmd = calloc(1, n);
        if (!envfile || !spool || !exe || !cmd || !endcmd ||
            (rc = restore_env(&envl, &owned, &nowned, &cred, pc.cluster))) {
            rc = rc ? rc : cli_fail(CF_ENOMEM);
            cf_repo_close(repo);
            goto out;
        }
        sh_append(cmd, n, exe);
        strncat(cmd, " wal-fetch --config ", n - strlen(cmd) - 1);
        sh_append(cmd, n, envfile);
        if (!o.standby)
            strncat(cmd, " --abort-on-error", n - strlen(cmd) - 1);
        snprintf(cmd + strlen(cmd), n - strlen(cmd), " --prefetch %u --spool ", prefetch);
        sh_append(cmd, n, spool);
        strncat(cmd, " %f %p", n - strlen(cmd) - 1);
        o.restore_command = cmd;
        o.env_file = envfile;
        o.env_lines = envl.v;
        if (prefetch > 0) {
            /* the check run's segment goes there: the server's first call takes it */
            o.spool_dir = spool;
            strncat(endcmd, "recovery_end_command=", n - 1);
            sh_append(endcmd, n, exe);
            strncat(endcmd, " wal-fetch --remove-spool --spool ", n - strlen(endcmd) - 1);
            sh_append(endcmd, n, spool);
            /* first: a --set recovery_end_command given by the user comes later and wins */
            cli_strs_push(&allsets, endcmd);
        }
    }
    for (size_t i = 0; i < sets.n; i++)
        cli_strs_push(&allsets, sets.v[i]);
    o.settings = allsets.v;
    cf_pg_restore_result res;
    int rrc = cf_pg_restore(repo, &o, &res);
    cf_repo_close(repo);
    if (rrc) {
        rc = cli_fail(rrc);
        goto out;
    }
    if (g.json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:f, s:b}", "message_type", "summary",
                              "snapshot_id", res.base.snapshot_id, "target", o.target_dir,
                              "timeline", (json_int_t)res.base.timeline, "extract_seconds",
                              res.extract_seconds, "started", res.started);
        if (j && res.started) {
            json_object_set_new(j, "state", json_string(res.state));
            json_object_set_new(j, "recovery_seconds", json_real(res.recovery_seconds));
        }
        cli_print_json(j);
    } else if (!g.quiet) {
        printf("restored base backup %.8s into %s in %.2f s\n", res.base.snapshot_id,
               o.target_dir, res.extract_seconds);
        if (res.started)
            printf("PostgreSQL reached the recovery target and is %s (%.2f s after start)\n",
                   res.state, res.recovery_seconds);
        else
            printf("start PostgreSQL on it to recover%s\n",
                   o.standby ? " as a standby" : " (it promotes when it reaches the target)");
    }
out:
    cli_cred_free(&cred);
    for (size_t i = 0; i < nowned; i++) {
        OPENSSL_cleanse(owned[i], strlen(owned[i]));
        free(owned[i]);
    }
    free(owned);
    free(envfile);
    free(exe);
    free(cmd);
    free(spool);
    free(endcmd);
    cli_strs_free(&sets);
    cli_strs_free(&allsets);
    cli_strs_free(&envl);
    return rc;
}

/* ------------------------------------------------------------------ pg check */

static void check_problem(cf_pg_msg_level level, const char *line, void *payload)
{
    (void)level;
    (void)payload;
    cli_stderr_line("problem", "problem: ", line);
}

static int pg_check_cmd(int argc, char **argv)
{
    enum { O_READ = P_FIRST_SUB };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"read-data", no_argument, NULL, O_READ},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_check_opts o;
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    memset(&o, 0, sizeof(o));
    PARSE_LOOP_HEAD(opts)
        switch (c) {
        case O_READ: o.read_data = true; break;
        default: return cli_usage("pg check: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return cli_usage("pg check: unexpected argument '%s'", argv[optind]);
    pg_common_done(&pc, cluster_given);
    o.cluster = pc.cluster;
    o.on_problem = check_problem;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    cf_pg_check_result r;
    int crc = cf_pg_check(repo, &o, &r);
    cf_repo_close(repo);
    if (crc && crc != CF_ECORRUPT)
        return cli_fail(crc);
    char first[40] = "", latest[40] = "";
    if (r.earliest_backup_ns)
        cf_time_format(first, r.earliest_backup_ns);
    if (r.latest_backup_ns)
        cf_time_format(latest, r.latest_backup_ns);
    if (g.json) {
        json_t *j = json_pack(
            "{s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "message_type",
            "summary", "base_backups", (json_int_t)r.backups, "first_wal", r.first_wal,
            "last_wal", r.last_wal, "latest_backup", latest, "timeline", (json_int_t)r.timeline,
            "segments", (json_int_t)r.segments, "segments_checked",
            (json_int_t)r.segments_checked, "history_files", (json_int_t)r.history_files,
            "backup_history_files", (json_int_t)r.backup_files, "missing",
            (json_int_t)r.missing, "problems", (json_int_t)r.problems, "complete", crc == 0);
        if (j && first[0]) {
            json_object_set_new(j, "window_start", json_string(first));
            json_object_set_new(j, "window_start_snapshot", json_string(r.earliest_backup_id));
        }
        cli_print_json(j);
    } else if (!g.quiet) {
        printf("base backups: %zu, newest %.19sZ\n", r.backups, latest);
        printf("WAL archive: %llu segments, %llu history files, %llu backup history files, "
               "newest timeline %u\n",
               (unsigned long long)r.segments, (unsigned long long)r.history_files,
               (unsigned long long)r.backup_files, r.timeline);
        printf("checked %s .. %s: %llu segments present, %llu missing\n", r.first_wal,
               r.last_wal, (unsigned long long)r.segments_checked,
               (unsigned long long)r.missing);
        if (first[0])
            printf("recoverable: from %.19sZ (end of base backup %.8s) to the end of WAL %s\n",
                   first, r.earliest_backup_id, r.last_wal);
        else
            printf("recoverable: no base backup is followed by complete WAL up to %s\n",
                   r.last_wal);
    }
    return crc ? cli_fail(crc) : 0;
out:
    return rc;
}

/* ------------------------------------------------------------------ pg expire */

typedef struct {
    bool dry_run;
    json_t *files;
} expire_out;

static void expire_removed(const char *file, void *payload)
{
    expire_out *eo = payload;
    if (eo->files)
        json_array_append_new(eo->files, json_string(file));
    else if (!g.quiet)
        printf("%s %s\n", eo->dry_run ? "would remove" : "removed", file);
}

static int pg_expire_cmd(int argc, char **argv)
{
    enum { O_DRY = P_FIRST_SUB };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"dry-run", no_argument, NULL, O_DRY},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_expire_opts o;
    expire_out eo = {false, NULL};
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    memset(&o, 0, sizeof(o));
    PARSE_LOOP_HEAD(opts)
        switch (c) {
        case O_DRY: o.dry_run = true; break;
        default:
            rc = cli_usage("pg expire: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind != argc) {
        rc = cli_usage("pg expire: unexpected argument '%s'", argv[optind]);
        goto out;
    }
    pg_common_done(&pc, cluster_given);
    eo.dry_run = o.dry_run;
    eo.files = g.json ? json_array() : NULL;
    o.cluster = pc.cluster;
    o.on_removed = expire_removed;
    o.payload = &eo;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    cf_pg_expire_result r;
    int erc = cf_pg_expire(repo, &o, &r);
    cf_repo_close(repo);
    if (erc) {
        rc = cli_fail(erc);
        goto out;
    }
    uint64_t files = r.segments_removed + r.partial_removed + r.backup_files_removed;
    if (g.json) {
        json_t *j = json_pack("{s:s, s:b, s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:O}",
                              "message_type", "summary", "dry_run", o.dry_run, "base_backups",
                              (json_int_t)r.backups, "oldest_backup", r.oldest_backup_id,
                              "keep_from", r.keep_from, "segments_removed",
                              (json_int_t)r.segments_removed, "partial_removed",
                              (json_int_t)r.partial_removed, "backup_files_removed",
                              (json_int_t)r.backup_files_removed, "segments_kept",
                              (json_int_t)r.segments_kept, "history_kept",
                              (json_int_t)r.history_kept, "files", eo.files);
        cli_print_json(j);
    } else if (!g.quiet) {
        printf("%s %llu WAL file%s (%llu segments, %llu partial, %llu backup history) before "
               "%s, the start of base backup %.8s, the oldest of %zu\n",
               o.dry_run ? "would remove" : "removed", (unsigned long long)files,
               files == 1 ? "" : "s", (unsigned long long)r.segments_removed,
               (unsigned long long)r.partial_removed, (unsigned long long)r.backup_files_removed,
               r.keep_from, r.oldest_backup_id, r.backups);
        printf("kept %llu segments and %llu timeline history files\n",
               (unsigned long long)r.segments_kept, (unsigned long long)r.history_kept);
    }
out:
    json_decref(eo.files);
    return rc;
}

/* ------------------------------------------------------------------ pg list */

static int pg_list_cmd(int argc, char **argv)
{
    static const struct option opts[] = {PG_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
    pg_common pc;
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    PARSE_LOOP_HEAD(opts)
        return cli_usage("pg list: unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind != argc)
        return cli_usage("pg list: unexpected argument '%s'", argv[optind]);
    pg_common_done(&pc, cluster_given);
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    cf_snapshot **list = NULL;
    cf_pg_base_info *in = NULL;
    size_t n = 0;
    int lrc = cf_pg_base_list(&list, &in, &n, repo, pc.cluster);
    if (lrc) {
        cf_repo_close(repo);
        return cli_fail(lrc);
    }
    json_t *arr = g.json ? json_array() : NULL;
    if (!g.json)
        printf("%-8s  %-20s  %-3s  %-12s  %-12s  %-24s  %s\n", "ID", "TIME", "TL", "START LSN",
               "STOP LSN", "START WAL", "SIZE");
    for (size_t i = 0; i < n; i++) {
        char when[40], a[20], b[20], sz[32];
        cf_time_format(when, in[i].time_ns);
        cf_pg_lsn_format(a, in[i].start_lsn);
        cf_pg_lsn_format(b, in[i].stop_lsn);
        const cf_backup_stats *st = cf_snapshot_stats(list[i]);
        fmt_size(sz, st->bytes_total);
        if (g.json)
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:I, s:I}", "id",
                               in[i].snapshot_id, "time", when, "timeline",
                               (json_int_t)in[i].timeline, "start_lsn", a, "stop_lsn", b,
                               "start_wal", in[i].start_wal, "stop_wal", in[i].stop_wal,
                               "next_xid", (json_int_t)in[i].next_xid, "bytes",
                               (json_int_t)st->bytes_total));
        else
            printf("%.8s  %.19sZ  %-3u  %-12s  %-12s  %-24s  %s\n", in[i].snapshot_id, when,
                   in[i].timeline, a, b, in[i].start_wal, sz);
    }
    if (g.json)
        cli_print_json(arr);
    cf_snapshot_list_free(list, n);
    free(in);
    cf_repo_close(repo);
    return 0;
out:
    return rc;
}

/* ------------------------------------------------------------------ dumps */

static int pg_dump_cmd(int argc, char **argv)
{
    enum { O_TAG = P_FIRST_SUB, O_SNAPHOST, O_ARG };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"tag", required_argument, NULL, O_TAG},
        {"snapshot-host", required_argument, NULL, O_SNAPHOST},
        {"pg-dump-arg", required_argument, NULL, O_ARG},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_dump_opts o;
    cli_strs tags = {0}, args = {0};
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    memset(&o, 0, sizeof(o));
    PARSE_LOOP_HEAD(opts)
        switch (c) {
        case O_TAG: cli_strs_push(&tags, optarg); break;
        case O_SNAPHOST: o.host = optarg; break;
        case O_ARG: cli_strs_push(&args, optarg); break;
        default:
            rc = cli_usage("pg dump: unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind != argc) {
        rc = cli_usage("pg dump: unexpected argument '%s'", argv[optind]);
        goto out;
    }
    (void)cluster_given; /* dumps are not in the WAL archive */
    if (!pc.conn.dbname) {
        rc = cli_usage("pg dump: --dbname NAME is required");
        goto out;
    }
    o.conn = pc.conn;
    o.tags = tags.v;
    o.pg_dump_args = args.v;
    o.on_message = pg_msg;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        goto out;
    char id[65];
    cf_backup_stats st;
    int drc = cf_pg_dump(repo, &o, id, &st);
    cf_repo_close(repo);
    if (drc) {
        rc = cli_fail(drc);
        goto out;
    }
    if (g.json) {
        backup_json_summary(id, &st, json_pack("{s:s}", "dbname", pc.conn.dbname));
    } else if (!g.quiet) {
        char total[32], added[32];
        fmt_size(total, st.bytes_total);
        fmt_size(added, st.bytes_added);
        printf("dump of database '%s': %s, added %s to the repository in %.2f s\n",
               pc.conn.dbname, total, added, st.seconds);
        printf("snapshot %.8s saved\n", id);
    }
out:
    cli_strs_free(&tags);
    cli_strs_free(&args);
    return rc;
}

static int pg_restore_dump_cmd(int argc, char **argv)
{
    enum { O_CREATE = P_FIRST_SUB, O_CLEAN, O_NOOWNER, O_EXITERR, O_FROM };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"create", no_argument, NULL, O_CREATE},
        {"clean", no_argument, NULL, O_CLEAN},
        {"no-owner", no_argument, NULL, O_NOOWNER},
        {"exit-on-error", no_argument, NULL, O_EXITERR},
        {"from-dbname", required_argument, NULL, O_FROM},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_restore_dump_opts o;
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    memset(&o, 0, sizeof(o));
    PARSE_LOOP_HEAD(opts)
        switch (c) {
        case O_CREATE: o.create = true; break;
        case O_CLEAN: o.clean = true; break;
        case O_NOOWNER: o.no_owner = true; break;
        case O_EXITERR: o.exit_on_error = true; break;
        case O_FROM: o.from_dbname = optarg; break;
        default:
            return cli_usage("pg restore-dump: unknown or incomplete option '%s'",
                             argv[optind - 1]);
        }
    }
    (void)cluster_given;
    if (optind + 1 != argc)
        return cli_usage("pg restore-dump: give one SNAPSHOT (or 'latest')");
    if (!pc.conn.dbname)
        return cli_usage("pg restore-dump: --dbname NAME (the database to restore into) is "
                         "required");
    o.conn = pc.conn;
    o.snapshot = argv[optind];
    o.on_message = pg_msg;
    cf_repo *repo = NULL;
    if ((rc = cli_open(&repo)))
        return rc;
    char id[65];
    double t0 = cf_mono_seconds();
    int drc = cf_pg_restore_dump(repo, &o, id);
    cf_repo_close(repo);
    if (drc)
        return cli_fail(drc);
    if (g.json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:f}", "message_type", "summary", "snapshot_id",
                                 id, "dbname", pc.conn.dbname, "duration_seconds",
                                 cf_mono_seconds() - t0));
    else if (!g.quiet)
        printf("restored dump %.8s into database '%s' in %.2f s\n", id, pc.conn.dbname,
               cf_mono_seconds() - t0);
    return 0;
out:
    return rc;
}

/* ------------------------------------------------------------------ dispatch */

static const char *pg_usage =
    "usage: coffer pg COMMAND [options]\n"
    "\n"
    "  backup         base backup (pg_basebackup) of a server whose WAL is archived with\n"
    "                 archive_command = 'coffer wal-push %p'\n"
    "  restore        restore a base backup into --target DIR and configure recovery to\n"
    "                 --time, --lsn, --xid, --name, --immediate or --latest; --standby; --start\n"
    "  check          check the WAL archive for gaps (exit 12 when segments are missing)\n"
    "  list           list base backups with their timelines and LSNs\n"
    "  expire         remove archived WAL older than the oldest base backup (--dry-run lists\n"
    "                 it); run it after 'coffer forget'\n"
    "  dump           pg_dump -Fc of one database (--dbname)\n"
    "  restore-dump SNAPSHOT --dbname DB [--create]   feed a dump to pg_restore\n"
    "\n"
    "connection: --pgdata DIR (a local server) or --host, --port, --user, --dbname;\n"
    "  --run-as USER, --pg-bindir DIR, --cluster NAME (or COFFER_PG_CLUSTER),\n"
    "  --config FILE (COFFER_REPO=..., COFFER_PASSWORD_FILE=... lines)\n"
    "see docs/databases/postgres.md\n";

int cmd_pg(int argc, char **argv)
{
    static const cli_sub subs[] = {
        {"backup", pg_backup},
        {"restore", pg_restore_cmd},
        {"check", pg_check_cmd},
        {"list", pg_list_cmd},
        {"expire", pg_expire_cmd},
        {"dump", pg_dump_cmd},
        {"restore-dump", pg_restore_dump_cmd},
        {NULL, NULL},
    };
    return cli_dispatch("pg", pg_usage, subs, argc, argv);
}

/* ------------------------------------------------------------------ wal-push / wal-fetch */

int cmd_wal_push(int argc, char **argv)
{
    static const struct option opts[] = {PG_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
    pg_common pc;
    bool cluster_given = false;
    int c, rc = 0;
    pg_common_init(&pc);
    PARSE_LOOP_HEAD(opts)
        return cli_usage("wal-push: unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind + 1 != argc)
        return cli_usage("wal-push: give the WAL file's path (archive_command = 'coffer "
                         "wal-push %%p')");
    pg_common_done(&pc, cluster_given);
    double t0 = cf_mono_seconds();
    cf_repo *repo = NULL;
    if ((rc = cli_open_flags(&repo, CF_OPEN_NO_INDEX)))
        return rc;
    double t1 = cf_mono_seconds();
    int prc = cf_pg_wal_push(repo, pc.cluster, argv[optind]);
    cf_repo_close(repo);
    if (prc)
        return cli_fail(prc);
    if (g.verbose)
        fprintf(stderr, "coffer: archived %s (open %.3f s, store %.3f s)\n", argv[optind],
                t1 - t0, cf_mono_seconds() - t1);
    return 0;
out:
    return rc;
}


static const char *default_spool(void)
{
    struct stat st;
    return stat("pg_wal", &st) == 0 && S_ISDIR(st.st_mode) && access("PG_VERSION", F_OK) == 0
               ? SPOOL_DEFAULT
               : NULL;
}

/* 0 written, -1 not archived, otherwise an exit code */
static int wal_fetch(int argc, char **argv)
{
    enum { O_ABORT = P_FIRST_SUB, O_PREFETCH, O_SPOOL, O_SPOOLSIZE, O_RMSPOOL };
    static const struct option opts[] = {
        PG_COMMON_OPTIONS,
        {"abort-on-error", no_argument, NULL, O_ABORT},
        {"prefetch", required_argument, NULL, O_PREFETCH},
        {"spool", required_argument, NULL, O_SPOOL},
        {"spool-size", required_argument, NULL, O_SPOOLSIZE},
        {"remove-spool", no_argument, NULL, O_RMSPOOL},
        {NULL, 0, NULL, 0},
    };
    pg_common pc;
    cf_pg_prefetch_opts po;
    bool cluster_given = false, remove_spool = false;
    int c, rc = 0;
    pg_common_init(&pc);
    memset(&po, 0, sizeof(po));
    po.count = PREFETCH_DEFAULT;
    PARSE_LOOP_HEAD(opts)
        char *end;
        unsigned long v;
        switch (c) {
        case O_ABORT: break;
        case O_PREFETCH:
            v = strtoul(optarg, &end, 10);
            if (end == optarg || *end || v > 1024)
                return cli_usage("wal-fetch: --prefetch takes a number of segments from 0 to "
                                 "1024");
            po.count = (unsigned)v;
            break;
        case O_SPOOL: po.spool_dir = optarg; break;
        case O_SPOOLSIZE:
            v = strtoul(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > 1048576)
                return cli_usage("wal-fetch: --spool-size takes MiB from 1 to 1048576");
            po.max_bytes = (uint64_t)v << 20;
            break;
        case O_RMSPOOL: remove_spool = true; break;
        default:
            return cli_usage("wal-fetch: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (remove_spool) {
        /* recovery_end_command: the spool is of no use once recovery ended */
        if (optind != argc)
            return cli_usage("wal-fetch --remove-spool takes no file names");
        const char *dir = po.spool_dir ? po.spool_dir : default_spool();
        int src = dir ? cf_pg_spool_remove(dir) : 0;
        return src ? cli_fail(src) : 0;
    }
    if (optind + 2 != argc)
        return cli_usage("wal-fetch: give the WAL file name and the path to write "
                         "(restore_command = 'coffer wal-fetch %%f %%p')");
    pg_common_done(&pc, cluster_given);
    const char *name = argv[optind], *dest = argv[optind + 1];
    if (!po.spool_dir)
        po.spool_dir = default_spool();
    if (po.count == 0)
        po.spool_dir = NULL;
    /* a segment prefetched by an earlier call: no repository, no credential */
    if (po.spool_dir && cf_pg_spool_take(po.spool_dir, name, dest) == 0) {
        if (g.verbose)
            fprintf(stderr, "coffer: %s from the prefetch spool\n", name);
        return 0;
    }
    /* the end of the archive, or a history file that was never written: the storage says
     * so without the key */
    if (cf_pg_wal_absent(g.repo, pc.cluster, name)) {
        if (g.verbose)
            fprintf(stderr, "coffer: %s is not in the archive\n", name);
        return -1;
    }
    double t0 = cf_mono_seconds();
    cf_repo *repo = NULL;
    if ((rc = cli_open_flags(&repo, CF_OPEN_NO_INDEX)))
        return rc;
    double t1 = cf_mono_seconds();
    cf_pg_prefetch_result pr;
    int frc = cf_pg_wal_fetch_ahead(repo, pc.cluster, name, dest, &po, &pr);
    cf_repo_close(repo);
    if (frc == CF_ENOTFOUND) {
        /* the usual answer at the end of the archive: PostgreSQL asks for what may not exist */
        if (g.verbose)
            fprintf(stderr, "coffer: %s is not in the archive (open %.3f s)\n", name, t1 - t0);
        return -1;
    }
    if (frc == 0 && g.verbose)
        fprintf(stderr, "coffer: %s from the repository (open %.3f s, fetch %.3f s), %u "
                        "following segments spooled, %u already spooled%s%s\n",
                name, t1 - t0, cf_mono_seconds() - t1, pr.spooled, pr.present,
                pr.kept ? " (the last archived: kept in the spool)" : "",
                po.spool_dir && pr.skipped ? " (spool not usable)" : "");
    return frc ? cli_fail(frc) : 0;
out:
    return rc;
}

int cmd_wal_fetch(int argc, char **argv)
{
    /* With --abort-on-error every failure but "not archived" exits 255: PostgreSQL then stops
     * recovery (an exit status above 125 is fatal to it) instead of taking the file as
     * missing and ending recovery early, at the wrong point. */
    bool abort_on_error = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        abort_on_error |= strcmp(argv[i], "--abort-on-error") == 0;
    int rc = wal_fetch(argc, argv);
    if (rc == -1)
        return 1; /* not archived */
    return abort_on_error && rc != 0 ? 255 : rc;
}
