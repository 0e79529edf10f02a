/*
 * mongo.h - MongoDB as a source: `mongodump --archive [--oplog]` streamed into a snapshot of
 * one file, and `mongorestore --archive [--oplogReplay]` fed from it.
 *
 * The MongoDB Database Tools (mongodump, mongorestore) talk to the server; libcoffer stores
 * and reads. Nothing here links a driver. A password (or a URI holding one) is given to the
 * tools in a 0600 temporary --config file, removed when the tool has exited, never on a
 * command line. Functions return 0 or a negative CF_E* code with details in cf_error_last().
 */
#ifndef COFFER_MONGO_H
#define COFFER_MONGO_H

#include "coffer/coffer.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CF_MONGO_SOURCE_KIND "mongodb"
/* The one file of a dump snapshot. */
#define CF_MONGO_FILE_NAME "mongodump.archive"

typedef void (*cf_mongo_message_cb)(const char *line, void *payload);

/* How the tools reach a server. Every field may be NULL. */
typedef struct {
    const char *uri;        /* mongodb:// or mongodb+srv://; when it holds a password it goes
                               into the --config file instead of the command line */
    const char *host;       /* --host (not with uri) */
    const char *port;       /* --port (not with uri) */
    const char *username;   /* --username */
    const char *auth_db;    /* --authenticationDatabase */
    const char *password;   /* written to the --config file, never on a command line */
    const char *tool;       /* the program (mongodump or mongorestore): a path, or a name
                               looked up in PATH; NULL: "mongodump" / "mongorestore" */
} cf_mongo_conn;

/* What a dump snapshot records (its "mongodb" object). Strings are "" when absent. */
typedef struct {
    char snapshot_id[65];
    int64_t time_ns;          /* when the dump started */
    char tool_version[128];   /* from `mongodump --version` */
    char uri[512];            /* the URI without its password */
    char host[256];
    char port[16];
    char username[128];
    char auth_db[128];
    char db[128];             /* "" for the whole server */
    char collection[256];
    bool oplog;               /* dumped with --oplog (a consistent point for the whole server) */
    uint64_t bytes;           /* size of the archive */
} cf_mongo_info;

/* ---------------------------------------------------------------- backup */

typedef struct {
    cf_mongo_conn conn;
    const char *db;               /* NULL: the whole server */
    const char *collection;       /* only with db */
    bool oplog;                   /* --oplog: only for a whole-server dump (CF_EINVAL with db) */
    const char *const *tags;      /* NULL-terminated, may be NULL */
    const char *host;             /* snapshot host; NULL: this machine */
    unsigned threads;
    cf_mongo_message_cb on_message;
    void *payload;
} cf_mongo_backup_opts;

/* Run `mongodump --archive [connection] [--db D [--collection C]] [--oplog]` and stream its
 * stdout into a snapshot of one file "mongodump.archive" (source kind "mongodb"). Published
 * only when mongodump exited 0; otherwise nothing is published and CF_EGENERIC names the
 * tool's exit status (or signal) and its last stderr line. CF_ENOTFOUND when the tool is not
 * installed; CF_EINVAL for contradictory options. out and out_stats may be NULL. */
int cf_mongo_backup(cf_repo *repo, const cf_mongo_backup_opts *opts, cf_mongo_info *out,
                    cf_backup_stats *out_stats);

/* The MongoDB fields of a dump snapshot; CF_ENOTFOUND if it is not one. */
int cf_mongo_info_get(cf_mongo_info *out, const cf_snapshot *snap);

/* The URI without the password of its user information ("mongodb://u:p@h/x" ->
 * "mongodb://u@h/x"), truncated to outlen. Returns true when there was a password. */
bool cf_mongo_uri_redact(char *out, size_t outlen, const char *uri);

/* ---------------------------------------------------------------- restore */

typedef struct {
    cf_mongo_conn conn;           /* the server to restore into */
    const char *snapshot;         /* id, prefix or "latest"; NULL: the newest MongoDB dump */
    bool drop;                    /* --drop: drop each collection before restoring it */
    const char *const *ns_include;/* --nsInclude patterns, NULL-terminated, may be NULL */
    const char *ns_from, *ns_to;  /* --nsFrom/--nsTo: both or neither */
    bool no_oplog_replay;         /* do not pass --oplogReplay for a dump taken with --oplog */
    cf_mongo_message_cb on_message;
    void *payload;
} cf_mongo_restore_opts;

typedef struct {
    cf_mongo_info base;
    bool oplog_replay;            /* --oplogReplay was passed */
    double seconds;
} cf_mongo_restore_result;

/* Stream the dump into `mongorestore --archive [connection] [--drop] [--nsInclude P]...
 * [--nsFrom X --nsTo Y] [--oplogReplay]`. CF_ENOTFOUND for a missing snapshot or tool;
 * CF_EGENERIC when mongorestore failed (its exit status and last stderr line), also when it
 * stopped reading before the end of the archive. */
int cf_mongo_restore(cf_repo *repo, const cf_mongo_restore_opts *opts,
                     cf_mongo_restore_result *out);

#ifdef __cplusplus
}
#endif
#endif
