/*
 * mongo_src.h - internals of the MongoDB source shared by its files: finding and running
 * mongodump/mongorestore (argv with the connection options, the 0600 --config file for
 * secrets, stderr kept in a temporary file), and the snapshot fields.
 */
#ifndef CF_SOURCE_MONGO_H
#define CF_SOURCE_MONGO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "coffer/mongo.h"
#include "util/util.h"


/* Resolve tool (a path, or a name looked up in PATH; NULL: def) into out (PATH_MAX bytes).
 * CF_ENOTFOUND with a hint when it is not an executable file. */
int cf_mongo__find(char *out, size_t outlen, const char *tool, const char *def);

/* The secrets of c for the --config file. *path is "" when none is needed (no password, and
 * no password in the URI); otherwise a 0600 temporary file holding `password:` and/or `uri:`
 * which the caller removes with cf_mongo__config_remove. */
int cf_mongo__config_write(char *path, size_t pathlen, const cf_mongo_conn *c);
void cf_mongo__config_remove(char *path);
/* The YAML double-quoted form of s appended to b (control characters as \xNN). */
int cf_mongo__yaml_quote(cf_buf *b, const char *s);

/* argv = { program, --archive, [--config=F], connection options }. CF_EINVAL for a URI
 * together with --host/--port. */
int cf_mongo__argv_start(cf_argv *a, const char *prog, const char *config,
                         const cf_mongo_conn *c);

#define CF_MONGO_FD_NULL (-1)

typedef struct {
    pid_t pid;
    int err_fd;          /* stderr, a deleted temporary file */
    bool waited;
    char prog[64];
} cf_mongo__proc;

/* Start argv with stdin/stdout from fd_in/fd_out (CF_MONGO_FD_NULL: /dev/null), in our
 * environment without COFFER_* and MONGODB_PASSWORD, SIGPIPE at its default. */
int cf_mongo__spawn(cf_mongo__proc *p, char *const *argv, int fd_in, int fd_out);
/* Wait; *code: the exit code, or 128+signal. */
void cf_mongo__wait(cf_mongo__proc *p, int *code);
/* SIGTERM a child still running, then wait. */
void cf_mongo__kill(cf_mongo__proc *p);
void cf_mongo__proc_free(cf_mongo__proc *p);
/* The last n non-empty stderr lines, oldest first, separated by '\n' ("" if none). */
void cf_mongo__tail(cf_mongo__proc *p, char *buf, size_t len, int n);
/* "PROG failed (exit N): <last line>" or "PROG was killed by signal N: ..." as CF_EGENERIC;
 * the last stderr lines go to the message callback. */
int cf_mongo__fail(cf_mongo__proc *p, int code, cf_mongo_message_cb cb, void *payload);
/* Run argv, stdout into *out (malloc'd, NUL-terminated, up to max bytes). */
int cf_mongo__capture(char **out, char *const *argv, size_t max);

/* The version a tool prints first ("mongodump version: 100.9.4" -> "100.9.4"). */
void cf_mongo__version_from_text(char *out, size_t outlen, const char *text);
/* The snapshot document's "mongodb" object: CF_ENOTFOUND when there is none. */
int cf_mongo__info_from_json(cf_mongo_info *out, const char *doc_json);
/* The "mongodb" object for the snapshot document (malloc'd JSON text). */
char *cf_mongo__info_to_json(const cf_mongo_info *i);
void cf_mongo__msg(cf_mongo_message_cb cb, void *payload, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
