/*
 * my.h - internals of the MariaDB source shared by its files: finding and running the
 * client programs (argv with the connection options, stderr kept in a temporary file),
 * and the snapshot fields.
 */
#ifndef CF_SOURCE_MARIADB_H
#define CF_SOURCE_MARIADB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "coffer/mariadb.h"
#include "util/util.h"

/* A string as an execve() argument (never written to). */
#define CF_MY_STR(s) ((char *)(uintptr_t)(s))


/* Find the first of names (NULL-terminated) in bindir, then PATH. out: PATH_MAX bytes. */
int cf_my__find(char *out, size_t outlen, const char *bindir, const char *const *names);
/* argv = { program found among names, connection options (defaults-file first) }. */
int cf_my__argv_start(cf_argv *a, const cf_mariadb_conn *c, const char *const *names);

#define CF_MY_FD_NULL (-1)

typedef struct {
    pid_t pid;
    int err_fd;          /* stderr, a deleted temporary file */
    bool waited;
    char prog[64];
} cf_my__proc;

/* Start argv with stdin/stdout from fd_in/fd_out (CF_MY_FD_NULL: /dev/null). env_extra:
 * NULL-terminated "NAME=value" added to the environment (MYSQL_PWD from c). */
int cf_my__spawn(cf_my__proc *p, char *const *argv, int fd_in, int fd_out,
                 const cf_mariadb_conn *c, const char *const *env_extra);
/* Wait; *code: the exit code, or 128+signal. */
int cf_my__wait(cf_my__proc *p, int *code);
/* SIGTERM a child still running, then wait. */
void cf_my__kill(cf_my__proc *p);
void cf_my__proc_free(cf_my__proc *p);
/* The last non-empty stderr line ("" if none). */
void cf_my__last_line(cf_my__proc *p, char *buf, size_t len);
/* "PROG failed (exit N): <last line>" as CF_EGENERIC. */
int cf_my__fail(cf_my__proc *p, int code);
/* Run argv, stdout into *out (malloc'd, NUL-terminated, up to max bytes). */
int cf_my__capture(char **out, char *const *argv, const cf_mariadb_conn *c, size_t max);
/* Pipe with both ends close-on-exec. */
int cf_my__pipe(int fds[2]);

/* The binlog file names archived for server (malloc'd array of malloc'd names). */
int cf_my__archived(char ***out, size_t *out_count, cf_repo *repo, const char *server);
/* The binlog position (and gtid_slave_pos) in a dump's first bytes; false when there is no
 * valid position. */
bool cf_my__parse_position(cf_mariadb_info *info, const uint8_t *head, size_t len);
/* "mysql-bin.000012" -> base length 9, index 12. false if not of that form. */
bool cf_my__split_binlog_name(const char *name, size_t *base_len, uint64_t *index);
/* The snapshot document's "mariadb" object. */
int cf_my__info_from_json(cf_mariadb_info *out, const char *doc_json);
bool cf_my__valid_server(const char *s);
void cf_my__msg(cf_mariadb_message_cb cb, void *payload, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
