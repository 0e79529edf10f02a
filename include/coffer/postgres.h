/*
 * postgres.h - PostgreSQL as a source: physical base backups (pg_basebackup), the WAL
 * archive (archive objects of kind "pgwal"), point-in-time recovery into a data directory,
 * checking the archive for gaps, and logical dumps (pg_dump / pg_restore).
 *
 * The PostgreSQL client programs talk to the server; libcoffer stores and reads. Nothing
 * here links libpq. Functions return 0 or a negative CF_E* code with details in
 * cf_error_last(), like every other libcoffer function.
 */
#ifndef COFFER_POSTGRES_H
#define COFFER_POSTGRES_H

#include "coffer/coffer.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Archive kind of WAL segments, timeline history and backup history files. An object is
 * named after its file ("000000010000000000000002"), or "CLUSTER/file" with a cluster name
 * (several clusters in one repository). */
#define CF_PG_ARCHIVE_KIND "pgwal"
/* source_kind of base backups and of logical dumps. */
#define CF_PG_SOURCE_BASE "postgres"
#define CF_PG_SOURCE_DUMP "postgres-dump"

/* Messages from the PostgreSQL programs and from the steps taken, one line each. */
typedef enum { CF_PG_MSG_INFO = 0, CF_PG_MSG_DETAIL = 1, CF_PG_MSG_WARNING = 2 } cf_pg_msg_level;
typedef void (*cf_pg_message_cb)(cf_pg_msg_level level, const char *line, void *payload);

/* How to reach a server and run its client programs. Every field may be NULL. */
typedef struct {
    const char *pgdata; /* a local data directory: its postmaster.pid gives the port and the
                           socket directory, its owner the OS user programs run as (when root) */
    const char *host;   /* host name or socket directory; NULL: from pgdata, or libpq's default */
    const char *port;
    const char *user;   /* database user; NULL: libpq's default (the OS user) */
    const char *dbname;
    const char *bindir; /* where pg_basebackup, psql, pg_ctl, ... are; NULL: search */
    const char *run_as; /* OS user to run the programs as; NULL: as root, the data directory's
                           owner (or "postgres"), otherwise the current user */
} cf_pg_conn;

/* ---------------------------------------------------------------- base backups */

typedef struct {
    cf_pg_conn conn;
    cf_backup_type type;
    const char *const *tags;     /* NULL-terminated, may be NULL */
    const char *host;            /* snapshot host; NULL: this machine */
    const char *cluster;         /* archive namespace; NULL or "": none */
    bool spread_checkpoint;      /* default: an immediate ("fast") checkpoint */
    bool no_archive_check;       /* do not require archive_mode, nor the backup's WAL in this
                                    repository before publishing the snapshot */
    double archive_timeout;      /* seconds to wait for the backup's last WAL segment; 0: 60 */
    unsigned threads;
    cf_progress_cb progress;
    cf_pg_message_cb on_message;
    void *payload;
} cf_pg_backup_opts;

/* What a base backup snapshot records (the "postgres" object of its document). */
typedef struct {
    char snapshot_id[65];
    int64_t time_ns;             /* snapshot time: after the backup's stop point */
    uint32_t timeline;
    uint64_t start_lsn, stop_lsn;
    char start_wal[25], stop_wal[25]; /* WAL file names */
    uint32_t wal_segment_size;
    uint64_t system_identifier;
    uint32_t server_version;     /* server_version_num, e.g. 150020 */
    uint64_t next_xid;           /* first transaction id after the backup (0: unknown) */
    int64_t stop_time_ns;        /* the server's clock just after the backup (0: unknown) */
    char cluster[64];
    char label[128];
    bool from_standby;
} cf_pg_base_info;

/* Take a base backup through pg_basebackup (tar to a pipe, WAL from the archive) into a
 * snapshot of one file "base.tar" with source kind "postgres". The snapshot is published
 * only when pg_basebackup succeeded and (unless no_archive_check) the WAL from the backup's
 * start to its stop point is in this repository. *out_info and *out_stats may be NULL. */
int cf_pg_backup(cf_repo *repo, const cf_pg_backup_opts *opts, cf_pg_base_info *out_info,
                 cf_backup_stats *out_stats);

/* The PostgreSQL fields of a base backup snapshot; CF_ENOTFOUND if it is not one. */
int cf_pg_base_info_get(cf_pg_base_info *out, const cf_snapshot *snap);

/* Every base backup snapshot of cluster (NULL: those without a cluster name), oldest first.
 * Free with cf_snapshot_list_free; infos (may be NULL) with free(). */
int cf_pg_base_list(cf_snapshot ***out, cf_pg_base_info **out_infos, size_t *out_count,
                    cf_repo *repo, const char *cluster);

/* ---------------------------------------------------------------- WAL archive */

/* Store the WAL file at path (a segment, .partial, .history or .backup file) under its base
 * name. Segments are checked against their name first (page address, segment size). Storing
 * the same bytes again succeeds; different bytes under an existing name fail with
 * CF_EEXISTS. Durable when it returns 0. */
int cf_pg_wal_push(cf_repo *repo, const char *cluster, const char *path);
/* Write the archived WAL file name to dest. CF_ENOTFOUND when it is not archived, CF_ECORRUPT
 * when it is damaged, CF_EINVAL when name is not a WAL file name. */
int cf_pg_wal_fetch(cf_repo *repo, const char *cluster, const char *name, const char *dest);
/* Ask the storage alone (no key, no repository open) whether the archive lacks a WAL file:
 * true only when the repository's config exists and the file's object does not. Archive
 * object names are not secret (archive/pgwal/[CLUSTER/]NAME), so restore_command can answer
 * "not archived" (the end of the archive, absent history files) without deriving a key. */
bool cf_pg_wal_absent(const char *url, const char *cluster, const char *name);

/* ---------------------------------------------------------------- WAL prefetch spool */

/*
 * A spool is a directory (one per recovering cluster, e.g. DATADIR/pg_wal/coffer-prefetch)
 * where a fetch that opened the repository leaves the segments that follow the one asked
 * for, so that the next calls of restore_command take them without opening the repository.
 * A spooled segment is written under a temporary name and renamed, when complete and
 * checked, to "<name>.<sha256 of its content>"; it is handed out only under that name, after
 * its size, segment header and SHA-256 were checked again. Only segments are spooled (never
 * history, .partial or backup history files), and only segments that are in the archive:
 * "not archived" is never remembered.
 */
typedef struct {
    const char *spool_dir;   /* created (0700, its parent must exist); NULL: no prefetch */
    unsigned count;          /* segments after the one asked for (same timeline); 0: none */
    uint64_t max_bytes;      /* the spool's bound, spooled segments included; 0: 256 MiB */
    unsigned threads;        /* parallel fetches; 0: 2 */
} cf_pg_prefetch_opts;

typedef struct {
    unsigned spooled;        /* segments written into the spool by this call */
    unsigned present;        /* following segments that were already in the spool */
    bool skipped;            /* the spool could not be used (not writable, busy): no prefetch */
    bool kept;               /* nothing after the segment is archived: a copy of it was
                                spooled for PostgreSQL's second read at the end of recovery */
} cf_pg_prefetch_result;

/* Hand the segment name from spool_dir to dest (a rename; a copy across file systems),
 * without a repository. The newest spooled segment (nothing of a later segment or timeline
 * is spooled) is copied and stays spooled: PostgreSQL reads the last segment of the archive
 * a second time at the end of recovery. 0 when written; CF_ENOTFOUND when the spool does not
 * hold it, or holds it damaged (the file is then removed), or anything else went wrong: the
 * caller then fetches from the repository. Spooled segments PostgreSQL has moved past
 * (lower segment numbers, lower timelines) are removed after a segment was handed out. */
int cf_pg_spool_take(const char *spool_dir, const char *name, const char *dest);

/* Spool the segment file at path under name (its header must name that segment; the
 * SHA-256 is computed here), creating spool_dir (0700) if needed: renamed into the spool
 * when move (path is then gone; copied and removed across file systems), otherwise copied.
 * For a segment fetched by other means, e.g. pg restore's check run of restore_command.
 * CF_EINVAL when it is not a whole segment of that name. */
int cf_pg_spool_put(const char *spool_dir, const char *name, const char *path, bool move);

/* cf_pg_wal_fetch, then, when name is a segment and it was fetched, fetch up to
 * opts->count following segments of its timeline that are archived (stopping at the first
 * that is not) into opts->spool_dir, with one repository open and opts->threads fetches in
 * parallel, within opts->max_bytes. When the segment right after it is not archived, a copy
 * of the fetched segment itself is spooled (out->kept). The return code is
 * cf_pg_wal_fetch's: problems of the prefetch only make it spool less. out (may be NULL)
 * tells what was spooled. */
int cf_pg_wal_fetch_ahead(cf_repo *repo, const char *cluster, const char *name, const char *dest,
                          const cf_pg_prefetch_opts *opts, cf_pg_prefetch_result *out);

/* Remove the spool's files (spooled segments and leftover temporary files) and the
 * directory if it is then empty. 0 when it is gone or never existed. */
int cf_pg_spool_remove(const char *spool_dir);

/* Parse "X/Y" (hexadecimal halves) into an LSN; format one the same way (out: 20 bytes). */
int cf_pg_lsn_parse(uint64_t *out, const char *s);
void cf_pg_lsn_format(char out[20], uint64_t lsn);

/* ---------------------------------------------------------------- recovery */

typedef enum {
    CF_PG_TARGET_END = 0,   /* replay every archived segment */
    CF_PG_TARGET_TIME,
    CF_PG_TARGET_LSN,
    CF_PG_TARGET_XID,
    CF_PG_TARGET_NAME,      /* a restore point made with pg_create_restore_point() */
    CF_PG_TARGET_IMMEDIATE, /* stop as soon as the base backup is consistent */
} cf_pg_target;

typedef enum {
    CF_PG_ARCHIVING_AUTO = 0, /* off after recovery (the restored cluster would archive a new
                                 timeline into the repository), kept for a standby */
    CF_PG_ARCHIVING_OFF,
    CF_PG_ARCHIVING_KEEP,
} cf_pg_archiving;

typedef struct {
    const char *target_dir;      /* created (0700); must be missing or empty */
    const char *snapshot;        /* base backup (id, prefix); NULL: the latest that ends before
                                    the target (for a time: by the server's clock) */
    const char *cluster;
    cf_pg_target target;
    const char *target_value;    /* TIME: any form cf_pg_time_parse takes; LSN "X/Y"; XID; NAME */
    bool target_exclusive;       /* stop just before the target instead of just after */
    const char *target_timeline; /* NULL: "latest" */
    const char *target_action;   /* "promote" (default), "pause" or "shutdown" */
    bool standby;                /* standby.signal: follow the archive, never promote */
    const char *restore_command; /* NULL: "coffer wal-fetch %f %p" */
    const char *env_file;        /* written (0600, owned by the server user) with env_lines,
                                    for a restore_command that reads it; NULL: none */
    const char *const *env_lines; /* "NAME=value", NULL-terminated */
    const char *const *settings; /* more "name=value" settings for postgresql.auto.conf */
    cf_pg_archiving archiving;
    const char *owner;           /* OS user owning the data directory; NULL: "postgres" when
                                    root, otherwise the current user */
    bool no_verify;              /* skip running restore_command once before starting */
    const char *spool_dir;       /* the prefetch spool of restore_command (created, owned by
                                    the server user): the segment its check run fetched is
                                    spooled there; NULL: the check run's file is removed */
    bool start;                  /* start the server and wait until it reached the target */
    const char *log_file;        /* server log with start; NULL: TARGET_DIR/coffer-restore.log */
    double wait_timeout;         /* seconds; 0: 600 */
    const char *bindir;          /* pg_ctl, psql; NULL: search (by the backup's PG_VERSION) */
    cf_pg_message_cb on_message;
    void *payload;
} cf_pg_restore_opts;

typedef struct {
    cf_pg_base_info base;        /* the base backup restored */
    double extract_seconds;
    double recovery_seconds;     /* start until the target was reached (with start) */
    bool started;
    char state[32];              /* with start: "promoted", "paused", "shut down", "standby" */
} cf_pg_restore_result;

/* Restore a base backup into target_dir and configure recovery (restore_command, the
 * target, recovery.signal or standby.signal); with start, start the server and wait until
 * it reached the target. CF_ENOTFOUND when no base backup precedes the target. */
int cf_pg_restore(cf_repo *repo, const cf_pg_restore_opts *opts, cf_pg_restore_result *out);

/* Parse a time as PostgreSQL prints it ("2024-05-01 12:00:00.123456+00", "... UTC") or
 * RFC 3339; a time without a zone is local time. */
int cf_pg_time_parse(int64_t *out_ns, const char *s);

/* ---------------------------------------------------------------- checking the archive */

typedef struct {
    const char *cluster;
    bool read_data;              /* also read and authenticate every segment checked */
    cf_pg_message_cb on_problem; /* each gap or problem, one line */
    void *payload;
} cf_pg_check_opts;

typedef struct {
    size_t backups;
    int64_t earliest_backup_ns, latest_backup_ns;
    char earliest_backup_id[65];
    char first_wal[25];          /* the oldest base backup's start segment */
    char last_wal[25];           /* the newest archived segment */
    uint32_t timeline;           /* the newest timeline */
    uint64_t segments;           /* segments in the archive */
    uint64_t segments_checked;
    uint64_t history_files, backup_files, partial_files, other_files;
    uint64_t missing;            /* segments missing in the recoverable range */
    uint64_t problems;           /* gaps and other problems reported */
} cf_pg_check_result;

/* Check that the archive holds every segment from the oldest base backup's start to the
 * newest archived segment along the newest timeline (and each base backup's WAL up to its
 * stop point). 0 when complete, CF_ECORRUPT when segments are missing or damaged,
 * CF_ENOTFOUND when there is no base backup. */
int cf_pg_check(cf_repo *repo, const cf_pg_check_opts *opts, cf_pg_check_result *out);

/* ---------------------------------------------------------------- WAL retention */

typedef struct {
    const char *cluster;         /* NULL or "": the WAL stored without a cluster name */
    bool dry_run;                /* list what would go, remove nothing (no lock, any key) */
    void (*on_removed)(const char *file, void *payload); /* each file removed (or that would
                                                            be), oldest first */
    void *payload;
} cf_pg_expire_opts;

typedef struct {
    size_t backups;              /* base backups of the cluster kept in the repository */
    char oldest_backup_id[65];   /* the one that starts first (lowest start LSN) */
    char keep_from[25];          /* its start_wal: this and later segments are kept */
    uint64_t keep_lsn;           /* its start LSN */
    uint64_t segments_removed, partial_removed, backup_files_removed;
    uint64_t segments_kept, history_kept, other_kept;
} cf_pg_expire_result;

/* Remove the archived WAL of a cluster that no kept base backup needs: segments and .partial
 * files that end at or before the start LSN of the oldest base backup (on any timeline; LSNs
 * grow across timelines), and backup history files of base backups that started before it.
 * Timeline history files are never removed. Needs an admin key and takes an exclusive lock
 * (unless dry_run). CF_ENOTFOUND (nothing removed) when the cluster has no base backup;
 * CF_ECORRUPT when a snapshot document is unreadable (it could be a base backup). */
int cf_pg_expire(cf_repo *repo, const cf_pg_expire_opts *opts, cf_pg_expire_result *out);

/* ---------------------------------------------------------------- logical dumps */

typedef struct {
    cf_pg_conn conn;             /* conn.dbname: the database to dump (required) */
    const char *const *tags;
    const char *host;
    const char *const *pg_dump_args; /* more arguments for pg_dump, NULL-terminated */
    unsigned threads;
    cf_pg_message_cb on_message;
    void *payload;
} cf_pg_dump_opts;

/* pg_dump -Fc of one database into a snapshot of one file "<dbname>.dump" (source kind
 * "postgres-dump"); published only when pg_dump succeeded. */
int cf_pg_dump(cf_repo *repo, const cf_pg_dump_opts *opts, char out_id[65],
               cf_backup_stats *out_stats);

typedef struct {
    cf_pg_conn conn;             /* conn.dbname: the database to restore into (required) */
    const char *snapshot;        /* id, prefix or "latest" (the latest dump, of from_dbname if
                                    set) */
    const char *from_dbname;
    bool create;                 /* CREATE DATABASE conn.dbname first */
    bool clean;                  /* drop objects before re-creating them */
    bool no_owner;
    bool exit_on_error;
    cf_pg_message_cb on_message;
    void *payload;
} cf_pg_restore_dump_opts;

/* Feed a dump snapshot to pg_restore. CF_EGENERIC when pg_restore reported errors. */
int cf_pg_restore_dump(cf_repo *repo, const cf_pg_restore_dump_opts *opts, char out_id[65]);

#ifdef __cplusplus
}
#endif
#endif
