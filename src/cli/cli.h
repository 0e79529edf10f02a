/*
 * cli.h - shared state and helpers of the coffer command: global options, opening the
 * repository with the password from its sources, printing errors and JSON.
 */
#ifndef CF_CLI_H
#define CF_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "coffer/coffer.h"

typedef struct {
    const char *repo;
    const char *password_file;
    const char *password_command;
    const char *key_file;
    const char *key_command;
    const char *new_password_file;
    const char *new_key_file;
    const char *new_key_command;
    bool json;
    bool quiet;
    int verbose;
    bool tty; /* stderr is a terminal: show progress */
} cli_globals;

extern cli_globals g;

#define EXIT_USAGE 2

/* Print "coffer: error: message" (+ hint) for rc and return its exit code. */
int cli_fail(int rc);
/* Report an error found by the CLI itself (code: a CF_E* code, hint may be NULL) as
 * cli_fail reports the library's: text or --json; returns the exit code. */
int cli_error(int code, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print a usage error (text, or JSON with --json) and return EXIT_USAGE. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A credential from the command line, environment or terminal. */
typedef struct {
    cf_credential c;
    char *password;
    uint8_t key[32];
} cli_cred;
/* The credential that opens the repository: a key (--key-file, --key-command, COFFER_KEY)
 * or a password (--password-file, --password-command, COFFER_PASSWORD, terminal). With
 * is_new, the new credential for key add/passwd/rotate (--new-key-file, --new-key-command,
 * COFFER_NEW_KEY, --new-password-file, COFFER_NEW_PASSWORD, or asked twice). confirm: ask
 * twice on a terminal. Returns 0 or an exit code (error printed). */
int cli_cred_get(cli_cred *out, bool confirm, bool is_new);
void cli_cred_free(cli_cred *c);
/* Open the repository named by --repo/COFFER_REPO. Returns exit code (0 ok). */
int cli_open(cf_repo **out);
/* The same with cf_repo_open_flags flags (CF_OPEN_NO_INDEX for archive-only work). */
int cli_open_flags(cf_repo **out, unsigned flags);
/* Print repository warnings to stderr. */
/* Print the library's notices (cf_repo_set_notice) on stderr as warnings. */
void cli_set_notice(cf_repo *r);
void cli_print_warnings(cf_repo *r);
/* Print a JSON value on stdout followed by a newline, and free it. */
void cli_print_json(json_t *v);
void cli_fmt_duration(char out[32], double seconds);
json_t *cli_snapshot_json(const cf_snapshot *s);
/* A NULL-terminated growable list of strings (borrowed pointers). */
typedef struct {
    const char **v;
    size_t n, cap;
} cli_strs;
void cli_strs_push(cli_strs *l, const char *s);
void cli_strs_free(cli_strs *l);

/* Parse a --threads value (1 to 256) into *out; a usage error naming cmd otherwise. */
int cli_threads(unsigned *out, const char *arg, const char *cmd);

/* A line on stderr: {"message_type": type, "message": line} with --json, otherwise
 * "coffer: <prefix><line>". */
void cli_stderr_line(const char *type, const char *prefix, const char *line);

/* A source's progress line (on_message of the database adapters): on stderr, as a JSON
 * message with --json; with --quiet only warnings. */
void cli_message(const char *line, void *payload);

/* A command group's subcommands ("pg backup", "sqlite list", ...): run the one argv[1]
 * names with argv shifted by one, print usage for none or help, refuse an unknown one. */
typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} cli_sub;
int cli_dispatch(const char *group, const char *usage, const cli_sub *subs, int argc,
                 char **argv);

/* SIGINT, SIGTERM and SIGHUP ask the running operation to stop cleanly (cf_cancel); a second
 * one ends the process. Signals ignored on purpose stay ignored. */
void cli_cancel_on_signals(void);

int cmd_init(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_snapshots(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_find(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_unlock(int argc, char **argv);
int cmd_forget(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_rewrite(int argc, char **argv);
int cmd_pg(int argc, char **argv);        /* cmd_pg.c: coffer pg backup|restore|check|... */
int cmd_wal_push(int argc, char **argv);  /* cmd_pg.c: PostgreSQL archive_command */
int cmd_wal_fetch(int argc, char **argv); /* cmd_pg.c: PostgreSQL restore_command */
int cmd_sqlite(int argc, char **argv);    /* cmd_sqlite.c: coffer sqlite backup|replicate|restore|list */
int cmd_mariadb(int argc, char **argv);   /* cmd_mariadb.c: coffer mariadb backup|binlog-push|restore|list */
int cmd_mongo(int argc, char **argv);     /* cmd_mongo.c: coffer mongo backup|restore|list */



/* Options every subcommand accepts too (global options may follow the command). */
enum { OPT_REPO = 1000, OPT_PWFILE, OPT_PWCMD, OPT_JSON, OPT_QUIET, OPT_VERBOSE, OPT_KEYFILE,
       OPT_KEYCMD, OPT_FIRST_LOCAL };
#define CLI_COMMON_OPTIONS                                                   \
    {"repo", required_argument, NULL, OPT_REPO},                             \
    {"password-file", required_argument, NULL, OPT_PWFILE},                  \
    {"password-command", required_argument, NULL, OPT_PWCMD},                \
    {"key-file", required_argument, NULL, OPT_KEYFILE},                      \
    {"key-command", required_argument, NULL, OPT_KEYCMD},                    \
    {"json", no_argument, NULL, OPT_JSON},                                   \
    {"quiet", no_argument, NULL, OPT_QUIET},                                 \
    {"verbose", no_argument, NULL, OPT_VERBOSE}
/* Handle a common option; returns true if c was one. */
bool cli_common_option(int c, const char *arg);
#endif
