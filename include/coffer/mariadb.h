/*
 * mariadb.h - MariaDB/MySQL as a source: logical dumps (mariadb-dump --single-transaction
 * with the binlog position), the binlog archive (archive objects of kind "mysqlbinlog"),
 * and point-in-time restore (the dump loaded into a server, then the archived binlogs
 * replayed from the recorded position up to a time).
 *
 * The MariaDB client programs (mariadb-dump, mariadb, mariadb-binlog, or their mysql*
 * names) talk to the server; libcoffer stores and reads. Nothing here links a client
 * library. Functions return 0 or a negative CF_E* code with details in cf_error_last().
 */
#ifndef COFFER_MARIADB_H
#define COFFER_MARIADB_H

#include "coffer/coffer.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CF_MARIADB_SOURCE_KIND "mariadb"
/* Archived binlogs are named "<server>/<binlog file name>". */
#define CF_MARIADB_ARCHIVE_KIND "mysqlbinlog"
/* The server name used when none is given. */
#define CF_MARIADB_DEFAULT_SERVER "default"

typedef void (*cf_mariadb_message_cb)(const char *line, void *payload);

/* How the client programs reach a server. Every field may be NULL. */
typedef struct {
    const char *defaults_file; /* passed first, as --defaults-file (else the client's own
                                  option files are read) */
    const char *host;
    const char *port;
    const char *user;
    const char *socket;
    const char *password;      /* given to the programs in MYSQL_PWD, never on a command line;
                                  better: put it in the defaults file */
    const char *bindir;        /* where the programs are; NULL: PATH */
} cf_mariadb_conn;

/* What a dump snapshot records (its "mariadb" object). */
typedef struct {
    char snapshot_id[65];
    char server[64];
    int64_t time_ns;           /* when the dump started; its consistent point follows */
    bool has_binlog;
    char binlog_file[256];     /* the binlog position the dump is consistent with */
    uint64_t binlog_pos;
    char gtid[256];            /* gtid_slave_pos from the dump, "" if none */
    char databases[512];       /* space-separated, "" for all */
} cf_mariadb_info;

/* ---------------------------------------------------------------- dumps */

typedef struct {
    cf_mariadb_conn conn;
    const char *const *databases; /* NULL-terminated; NULL: --all-databases */
    const char *const *dump_args; /* more arguments for mariadb-dump, NULL-terminated */
    const char *const *tags;
    const char *host;             /* snapshot host; NULL: this machine */
    const char *server;           /* binlog archive namespace; NULL: "default" */
    bool no_binlog;               /* no binlog position (a server without log-bin): the dump
                                     cannot start a point-in-time restore */
    unsigned threads;
    cf_mariadb_message_cb on_message;
    void *payload;
} cf_mariadb_backup_opts;

/* Run mariadb-dump --single-transaction --routines --events --master-data=2 (or
 * --source-data=2) and stream its output into a snapshot of one file "dump.sql" (source
 * kind "mariadb"), tagged "binlog=FILE:POS". The snapshot is published only when the dump
 * exited 0 and its output ends with the "-- Dump completed" trailer; otherwise nothing is
 * published and CF_EGENERIC names the dumper's error. out and out_stats may be NULL. */
int cf_mariadb_backup(cf_repo *repo, const cf_mariadb_backup_opts *opts, cf_mariadb_info *out,
                      cf_backup_stats *out_stats);

/* The MariaDB fields of a dump snapshot; CF_ENOTFOUND if it is not one. */
int cf_mariadb_info_get(cf_mariadb_info *out, const cf_snapshot *snap);

/* ---------------------------------------------------------------- binlog archive */

typedef struct {
    cf_mariadb_conn conn;
    const char *binlog_dir;       /* where the binlog files are; NULL: @@log_bin_basename's */
    const char *server;           /* NULL: "default" */
    cf_mariadb_message_cb on_message;
    void *payload;
} cf_mariadb_binlog_push_opts;

typedef struct {
    uint32_t closed;              /* closed binlogs the server lists */
    uint32_t stored;              /* newly archived */
    uint32_t already;             /* archived before */
    uint64_t bytes;               /* bytes newly archived */
    char active[256];             /* the binlog being written (not archived) */
} cf_mariadb_binlog_push_result;

/* Archive every closed binlog (all that SHOW BINARY LOGS lists but the last) not archived
 * yet. Idempotent. */
int cf_mariadb_binlog_push(cf_repo *repo, const cf_mariadb_binlog_push_opts *opts,
                           cf_mariadb_binlog_push_result *out);

/* ---------------------------------------------------------------- restore */

typedef struct {
    cf_mariadb_conn conn;         /* the server to load into */
    const char *snapshot;         /* a dump (id, prefix); NULL: the latest at or before time */
    const char *server;           /* NULL: the snapshot's */
    int64_t time_ns;              /* 0: replay every archived binlog */
    bool dump_only;               /* load the dump, replay nothing */
    const char *tmp_dir;          /* where binlogs are fetched; NULL: $TMPDIR or /tmp */
    cf_mariadb_message_cb on_message;
    void *payload;
} cf_mariadb_restore_opts;

typedef struct {
    cf_mariadb_info base;
    uint32_t binlogs;             /* binlog files replayed */
    char stop_datetime[32];       /* UTC, "" when replaying to the end */
    double load_seconds, replay_seconds;
} cf_mariadb_restore_result;

/* Load the dump into the server (the mariadb client), then replay the archived binlogs from
 * the dump's position with mariadb-binlog --start-position (and --stop-datetime, in UTC,
 * binlog times having 1 s resolution: events of the second of time_ns and later are not
 * replayed). CF_ENOTFOUND when no dump precedes the time or the binlog holding the dump's
 * position is not archived; CF_ECORRUPT when an archived binlog is damaged or one in the
 * sequence is missing; CF_EGENERIC when a client program failed. */
int cf_mariadb_restore(cf_repo *repo, const cf_mariadb_restore_opts *opts,
                       cf_mariadb_restore_result *out);

#ifdef __cplusplus
}
#endif
#endif
