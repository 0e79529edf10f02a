/*
 * main.c - the coffer command: global options, password sources, dispatch to subcommands.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
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
    "  unlock                    remove stale locks\n"
    "  version                   print the version\n"
    "\n"
    "global options:\n"
    "  -r, --repo URL            repository (or COFFER_REPO)\n"
    "  --password-file FILE      read the password from FILE (or COFFER_PASSWORD_FILE)\n"
    "  --password-command CMD    run CMD and use its output (or COFFER_PASSWORD_COMMAND)\n"
    "                            (or COFFER_PASSWORD; otherwise asked on the terminal)\n"
    "  --json                    machine-readable output\n"
    "  -q, --quiet               no progress, less output\n"
    "  -v, --verbose             more output\n"
    "\n"
    "exit codes: 0 ok, 1 error, 2 usage, 3 some files unreadable, 10 no repository,\n"
    "11 wrong password, 12 damaged repository, 13 locked, 14 no space (docs/EXIT-CODES.md)\n";

int cli_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("coffer: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nrun 'coffer help' for usage\n", stderr);
    return EXIT_USAGE;
}

int cli_fail(int rc)
{
    const cf_error *e = cf_error_last();
    const char *msg = e->message && *e->message ? e->message : cf_error_desc(rc);
    if (g.json) {
        json_t *o = json_pack("{s:s, s:s, s:s?, s:i}", "error", msg, "code", cf_error_name(rc),
                              "hint", e->hint, "exit_code", cf_error_exit_code(rc));
        char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (t)
            fprintf(stderr, "%s\n", t);
        free(t);
        json_decref(o);
    } else {
        fprintf(stderr, "coffer: error: %s\n", msg);
        if (e->hint)
            fprintf(stderr, "hint: %s\n", e->hint);
    }
    return cf_error_exit_code(rc);
}

static char *read_tty_password(const char *prompt)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct termios old, noecho;
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &noecho);
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        /* nothing to do: the prompt is cosmetic */
    }
    char buf[1024];
    size_t n = 0;
    while (n < sizeof(buf) - 1) {
        char ch;
        ssize_t k = read(fd, &ch, 1);
        if (k <= 0 || ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = '\0';
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* cosmetic */
    }
    close(fd);
    char *p = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return p;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static char *read_stream(FILE *f, size_t max)
{
    char *buf = malloc(max + 1);
    if (!buf)
        return NULL;
    size_t n = fread(buf, 1, max, f);
    buf[n] = '\0';
    return buf;
}

char *cli_password(bool confirm, int *out_rc)
{
    *out_rc = 0;
    const char *env = getenv("COFFER_PASSWORD");
    const char *file = g.password_file ? g.password_file : getenv("COFFER_PASSWORD_FILE");
    const char *cmd = g.password_command ? g.password_command : getenv("COFFER_PASSWORD_COMMAND");
    char *pw = NULL;
    if (file) {
        FILE *f = fopen(file, "re");
        if (!f) {
            fprintf(stderr, "coffer: error: unable to read password file '%s': %s\n", file,
                    strerror(errno));
            *out_rc = 1;
            return NULL;
        }
        pw = read_stream(f, 4096);
        fclose(f);
        if (pw) {
            /* the first line is the password */
            char *nl = strchr(pw, '\n');
            if (nl)
                *nl = '\0';
            chomp(pw);
        }
    } else if (cmd) {
        FILE *p = popen(cmd, "r");
        if (!p) {
            fprintf(stderr, "coffer: error: unable to run password command: %s\n", strerror(errno));
            *out_rc = 1;
            return NULL;
        }
        pw = read_stream(p, 4096);
        int st = pclose(p);
        if (st != 0) {
            fprintf(stderr, "coffer: error: password command failed (exit status %d)\n",
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            cli_password_free(pw);
            *out_rc = 1;
            return NULL;
        }
        if (pw) {
            char *nl = strchr(pw, '\n');
            if (nl)
                *nl = '\0';
        }
    } else if (env) {
        pw = strdup(env);
    } else if (isatty(STDIN_FILENO) || isatty(STDERR_FILENO)) {
        pw = read_tty_password("enter repository password: ");
        if (pw && confirm) {
            char *again = read_tty_password("enter the password again: ");
            if (!again || strcmp(pw, again) != 0) {
                fprintf(stderr, "coffer: error: passwords do not match\n");
                cli_password_free(pw);
                cli_password_free(again);
                *out_rc = EXIT_USAGE;
                return NULL;
            }
            cli_password_free(again);
        }
    } else {
        fprintf(stderr, "coffer: error: no password given\n"
                        "hint: set COFFER_PASSWORD, --password-file or --password-command\n");
        *out_rc = EXIT_USAGE;
        return NULL;
    }
    if (!pw) {
        fprintf(stderr, "coffer: error: unable to read the password\n");
        *out_rc = 1;
        return NULL;
    }
    if (!*pw) {
        fprintf(stderr, "coffer: error: the password is empty\n");
        cli_password_free(pw);
        *out_rc = EXIT_USAGE;
        return NULL;
    }
    return pw;
}

void cli_password_free(char *pw)
{
    if (pw) {
        OPENSSL_cleanse(pw, strlen(pw));
        free(pw);
    }
}

int cli_open(cf_repo **out)
{
    *out = NULL;
    if (!g.repo)
        return cli_usage("no repository given: use --repo or set COFFER_REPO");
    int prc = 0;
    char *pw = cli_password(false, &prc);
    if (!pw)
        return prc;
    int rc = cf_repo_open(out, g.repo, pw);
    cli_password_free(pw);
    if (rc)
        return cli_fail(rc);
    cli_print_warnings(*out);
    return 0;
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
    {"forget", cmd_forget},   {"prune", cmd_prune},
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
