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
    bool json;
    bool quiet;
    int verbose;
    bool tty; /* stderr is a terminal: show progress */
} cli_globals;

extern cli_globals g;

#define EXIT_USAGE 2

/* Print "coffer: error: message" (+ hint) for rc and return its exit code. */
int cli_fail(int rc);
/* Print a usage error and return EXIT_USAGE. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Read the password (COFFER_PASSWORD, --password-file, --password-command, terminal).
 * confirm: ask twice on a terminal. Returns malloc'd string or NULL (error printed). */
char *cli_password(bool confirm, int *out_rc);
void cli_password_free(char *pw);
/* Open the repository named by --repo/COFFER_REPO. Returns exit code (0 ok). */
int cli_open(cf_repo **out);
/* Print repository warnings to stderr. */
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



/* Options every subcommand accepts too (global options may follow the command). */
enum { OPT_REPO = 1000, OPT_PWFILE, OPT_PWCMD, OPT_JSON, OPT_QUIET, OPT_VERBOSE, OPT_FIRST_LOCAL };
#define CLI_COMMON_OPTIONS                                                   \
    {"repo", required_argument, NULL, OPT_REPO},                             \
    {"password-file", required_argument, NULL, OPT_PWFILE},                  \
    {"password-command", required_argument, NULL, OPT_PWCMD},                \
    {"json", no_argument, NULL, OPT_JSON},                                   \
    {"quiet", no_argument, NULL, OPT_QUIET},                                 \
    {"verbose", no_argument, NULL, OPT_VERBOSE}
/* Handle a common option; returns true if c was one. */
bool cli_common_option(int c, const char *arg);
#endif
