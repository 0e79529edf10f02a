/*
 * main.c - the coffer command: global options, password sources, dispatch to subcommands.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

cli_globals g;

static const char *usage_text =
    "usage: coffer [global options] COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  init                      create a repository\n"
    "  backup PATH...            back up files and directories (or --stdin)\n"
    "  snapshots                 list snapshots\n"
    "  ls SNAPSHOT [PATH]        list files in a snapshot\n"
    "  find PATTERN              find files by name across snapshots\n"
    "  restore SNAPSHOT[:PATH]   restore a snapshot into --target\n"
    "  dump SNAPSHOT PATH        write one file of a snapshot to stdout\n"
    "  check                     verify the repository (--read-data: every byte)\n"
    "  forget --keep-*           remove snapshots by a retention policy (--prune: and their data)\n"
    "  prune                     remove data no snapshot references\n"
    "  stats                     repository statistics\n"
    "  cat config|snapshot|index|tree|pack ID   show an object (debugging)\n"
    "  unlock [--remove-all]     remove stale and unreadable locks (or every lock)\n"
    "  key list|add|remove ID|passwd|rotate|retire-generation G\n"
    "                            manage key slots and data key generations\n"
    "  rewrite --reencrypt [--generation G]\n"
    "                            re-seal data (of generation G) under the current generation\n"
    "  pg backup|restore|check|list|expire|dump|restore-dump   PostgreSQL backups, recovery\n"
    "  wal-push PATH             PostgreSQL archive_command: store a WAL file\n"
    "  wal-fetch NAME PATH       PostgreSQL restore_command: fetch a WAL file (1: absent)\n"
    "  sqlite backup|replicate|restore|list   SQLite copies, WAL shipping, point-in-time restore\n"
    "  mariadb backup|binlog-push|restore|list   MariaDB/MySQL dumps, binlog archive, PITR\n"
    "  mongo backup|restore|list mongodump --archive --oplog into snapshots, mongorestore\n"
    "  version                   print the version\n"
    "\n"
    "global options:\n"
    "  -r, --repo URL            repository (or COFFER_REPO)\n"
    "  --password-file FILE      read the password from FILE (or COFFER_PASSWORD_FILE)\n"
    "  --password-command CMD    run CMD and use its output (or COFFER_PASSWORD_COMMAND)\n"
    "                            (or COFFER_PASSWORD; otherwise asked on the terminal)\n"
    "  --key-file FILE           open with a 32-byte key instead (raw, hex or base64)\n"
    "  --key-command CMD         run CMD for the key, e.g. a KMS client (or COFFER_KEY)\n"
    "  --json                    machine-readable output\n"
    "  -q, --quiet               no progress, less output\n"
    "  -v, --verbose             more output\n"
    "\n"
    "exit codes: 0 ok, 1 error, 2 usage, 3 some files unreadable, 10 no repository,\n"
    "11 wrong password, 12 damaged repository, 13 locked, 14 no space,\n"
    "15 storage refused the credentials (docs/EXIT-CODES.md)\n";

static void json_to_stderr(json_t *o);

int cli_usage(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (g.json)
        json_to_stderr(json_pack("{s:s, s:s, s:s, s:i}", "error", msg, "code",
                                 cf_error_name(CF_EINVAL), "hint", "run 'coffer help' for usage",
                                 "exit_code", EXIT_USAGE));
    else
        fprintf(stderr, "coffer: %s\nrun 'coffer help' for usage\n", msg);
    return EXIT_USAGE;
}

int cli_error(int code, const char *hint, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cf_error_set(code, 0, "%s", msg);
    if (hint)
        cf_error_hint("%s", hint);
    return cli_fail(code);
}

/* Print o compactly on stderr, one line, and release it. */
static void json_to_stderr(json_t *o)
{
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (t)
        fprintf(stderr, "%s\n", t);
    free(t);
    json_decref(o);
}

int cli_fail(int rc)
{
    const cf_error *e = cf_error_last();
    const char *msg = e->message && *e->message ? e->message : cf_error_desc(rc);
    if (g.json) {
        json_to_stderr(json_pack("{s:s, s:s, s:s?, s:i}", "error", msg, "code",
                                 cf_error_name(rc), "hint", e->hint, "exit_code",
                                 cf_error_exit_code(rc)));
    } else {
        fprintf(stderr, "coffer: error: %s\n", msg);
        if (e->hint)
            fprintf(stderr, "hint: %s\n", e->hint);
    }
    return cf_error_exit_code(rc);
}

int cli_open(cf_repo **out) { return cli_open_flags(out, 0); }

int cli_open_flags(cf_repo **out, unsigned flags)
{
    *out = NULL;
    if (!g.repo)
        return cli_usage("no repository given: use --repo or set COFFER_REPO");
    cli_cred cred;
    int rc = cli_cred_get(&cred, false, false);
    if (rc)
        return rc;
    rc = cf_repo_open_flags(out, g.repo, &cred.c, flags);
    cli_cred_free(&cred);
    if (rc)
        return cli_fail(rc);
    cli_set_notice(*out);
    cli_print_warnings(*out);
    return 0;
}

static void print_notice(const char *message, void *payload)
{
    (void)payload;
    fprintf(stderr, "coffer: warning: %s\n", message);
}

void cli_set_notice(cf_repo *r)
{
    cf_repo_set_notice(r, print_notice, NULL);
}

void cli_print_warnings(cf_repo *r)
{
    for (size_t i = 0; i < cf_repo_warning_count(r); i++)
        fprintf(stderr, "coffer: warning: %s\n", cf_repo_warning(r, i));
}

void cli_print_json(json_t *v)
{
    char *t = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (t)
        printf("%s\n", t);
    free(t);
    json_decref(v);
}

void cli_fmt_duration(char out[32], double s)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, 32, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(out, 32, "%ld:%02ld", t / 60, t % 60);
}

void cli_strs_push(cli_strs *l, const char *s)
{
    if (l->n + 2 > l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        const char **p = realloc(l->v, ncap * sizeof(*p));
        if (!p) {
            fprintf(stderr, "coffer: out of memory\n");
            exit(1);
        }
        l->v = p;
        l->cap = ncap;
    }
    l->v[l->n++] = s;
    l->v[l->n] = NULL;
}

void cli_strs_free(cli_strs *l)
{
    free(l->v);
    memset(l, 0, sizeof(*l));
}

int cli_dispatch(const char *group, const char *usage, const cli_sub *subs, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    char names[256] = "";
    for (const cli_sub *s = subs; s->name; s++) {
        if (strcmp(argv[1], s->name) == 0)
            return s->fn(argc - 1, argv + 1);
        size_t k = strlen(names);
        snprintf(names + k, sizeof(names) - k, "%s%s", k ? ", " : "", s->name);
    }
    return cli_usage("%s: unknown command '%s' (%s)", group, argv[1], names);
}

int cli_threads(unsigned *out, const char *arg, const char *cmd)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || v < 1 || v > 256)
        return cli_usage("%s: --threads takes a number from 1 to 256", cmd);
    *out = (unsigned)v;
    return 0;
}

void cli_stderr_line(const char *type, const char *prefix, const char *line)
{
    if (g.json) {
        json_to_stderr(json_pack("{s:s, s:s}", "message_type", type, "message", line));
    } else {
        fprintf(stderr, "coffer: %s%s\n", prefix, line);
    }
}

void cli_message(const char *line, void *payload)
{
    (void)payload;
    if (g.json || !g.quiet || strncmp(line, "warning:", 8) == 0)
        cli_stderr_line("message", "", line);
}

static void on_cancel_signal(int sig)
{
    (void)sig;
    cf_cancel();
}

void cli_cancel_on_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue; /* ignored on purpose (nohup, a background job): keep it so */
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_cancel_signal;
        sa.sa_flags = SA_RESETHAND; /* a second signal ends the process at once */
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (g.json)
        cli_print_json(json_pack("{s:s}", "version", COFFER_VERSION));
    else
        printf("coffer %s\n", COFFER_VERSION);
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
} commands[] = {
    {"init", cmd_init},       {"backup", cmd_backup},   {"snapshots", cmd_snapshots},
    {"ls", cmd_ls},           {"find", cmd_find},       {"restore", cmd_restore},
    {"dump", cmd_dump},       {"check", cmd_check},     {"stats", cmd_stats},
    {"cat", cmd_cat},         {"unlock", cmd_unlock},   {"version", cmd_version},
    {"forget", cmd_forget},   {"prune", cmd_prune},     {"key", cmd_key},
    {"rewrite", cmd_rewrite},
    {"pg", cmd_pg},           {"wal-push", cmd_wal_push}, {"wal-fetch", cmd_wal_fetch},
    {"sqlite", cmd_sqlite},   {"mariadb", cmd_mariadb}, {"mongo", cmd_mongo},
};

int main(int argc, char **argv)
{
    memset(&g, 0, sizeof(g));
    g.repo = getenv("COFFER_REPO");
    g.tty = isatty(STDERR_FILENO);
    /* global options come before the command; subcommands parse the rest */
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t alen = eq ? (size_t)(eq - a) : strlen(a);
#define OPT(s) (alen == strlen(s) && strncmp(a, s, alen) == 0)
#define VALUE()                                                              \
    do {                                                                     \
        if (eq)                                                              \
            val = eq + 1;                                                    \
        else if (i + 1 < argc)                                               \
            val = argv[++i];                                                 \
        else                                                                 \
            return cli_usage("option '%s' needs a value", a);                \
    } while (0)
        if (OPT("-r") || OPT("--repo")) {
            VALUE();
            g.repo = val;
        } else if (OPT("--password-file")) {
            VALUE();
            g.password_file = val;
        } else if (OPT("--password-command")) {
            VALUE();
            g.password_command = val;
        } else if (OPT("--key-file")) {
            VALUE();
            g.key_file = val;
        } else if (OPT("--key-command")) {
            VALUE();
            g.key_command = val;
        } else if (OPT("--json")) {
            g.json = true;
        } else if (OPT("-q") || OPT("--quiet")) {
            g.quiet = true;
        } else if (OPT("-v") || OPT("--verbose")) {
            g.verbose++;
        } else if (OPT("-h") || OPT("--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (OPT("--version")) {
            return cmd_version(0, NULL);
        } else {
            return cli_usage("unknown global option '%s'", a);
        }
#undef OPT
#undef VALUE
    }
    if (i >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[i];
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
        if (strcmp(cmd, commands[k].name) == 0)
            return commands[k].fn(argc - i, argv + i);
    return cli_usage("unknown command '%s'", cmd);
}

bool cli_common_option(int c, const char *arg)
{
    switch (c) {
    case OPT_REPO:
        g.repo = arg;
        return true;
    case OPT_PWFILE:
        g.password_file = arg;
        return true;
    case OPT_PWCMD:
        g.password_command = arg;
        return true;
    case OPT_KEYFILE:
        g.key_file = arg;
        return true;
    case OPT_KEYCMD:
        g.key_command = arg;
        return true;
    case OPT_JSON:
        g.json = true;
        return true;
    case OPT_QUIET:
        g.quiet = true;
        return true;
    case OPT_VERBOSE:
        g.verbose++;
        return true;
    default:
        return false;
    }
}
