/*
 * sqlite.h - SQLite as a source: consistent copies of a live database through the online
 * backup API, continuous shipping of committed WAL frames (archive objects of kind
 * "sqlitewal"), and point-in-time restore (a base copy plus the frames committed up to T).
 *
 * Functions return 0 or a negative CF_E* code with details in cf_error_last(), like every
 * other libcoffer function. See docs/databases/sqlite.md for the model and its limits.
 */
#ifndef COFFER_SQLITE_H
#define COFFER_SQLITE_H

#include "coffer/coffer.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* source_kind of base copies; archive kind of shipped WAL frames. */
#define CF_SQLITE_SOURCE_KIND "sqlite"
#define CF_SQLITE_ARCHIVE_KIND "sqlitewal"

/* One line of progress or warning text. */
typedef void (*cf_sqlite_message_cb)(const char *line, void *payload);

/* What a base copy records (the "sqlite" object of its snapshot document). */
typedef struct {
    char snapshot_id[65];
    char db_id[96];          /* names the database in the archive: see cf_sqlite_db_id */
    char generation[17];     /* 16 hex digits; a base copy and the frames that follow it */
    char db_path[1024];      /* the file copied (as given, made absolute) */
    int64_t time_ns;         /* the instant the copy is consistent with */
    uint32_t page_size;
    uint32_t pages;
    bool wal;                /* the database was in WAL mode */
    /* the WAL position the copy is consistent with (replicated generations only) */
    bool has_position;
    uint32_t salt1, salt2, ckpt_seq;
    uint32_t frame;          /* last WAL frame included (0: none of this WAL) */
    uint32_t cksum1, cksum2; /* the WAL checksum after that frame (or of the header) */
} cf_sqlite_base_info;

/* The identity of a database in the repository: "<basename>-<8 hex of host and absolute
 * path>", characters outside [A-Za-z0-9._-] replaced by '_'. out: 96 bytes. */
int cf_sqlite_db_id(char out[96], const char *db_path, const char *host);

/* ---------------------------------------------------------------- base copies */

typedef struct {
    const char *db_path;
    const char *db_id;           /* NULL: cf_sqlite_db_id(db_path, host) */
    const char *const *tags;     /* NULL-terminated, may be NULL */
    const char *host;            /* snapshot host; NULL: this machine */
    const char *tmp_dir;         /* where the copy is made; NULL: $TMPDIR or /tmp */
    double busy_timeout;         /* seconds to wait for locks; 0: 10 */
    unsigned threads;
    cf_sqlite_message_cb on_message;
    void *payload;
} cf_sqlite_backup_opts;

typedef struct {
    cf_sqlite_base_info info;
    cf_backup_stats stats;
    double copy_seconds;         /* the online backup API copy */
    double check_seconds;        /* PRAGMA integrity_check of the copy */
} cf_sqlite_backup_result;

/* Copy the live database with sqlite3_backup_* into a temporary file (retrying while it is
 * busy or locked), check the copy with PRAGMA integrity_check, and store it as a snapshot of
 * one file named after the database (source kind "sqlite"). The copy is consistent: a
 * single read transaction. CF_ECORRUPT when the copy fails its integrity check. */
int cf_sqlite_backup(cf_repo *repo, const cf_sqlite_backup_opts *opts,
                     cf_sqlite_backup_result *out);

/* The SQLite fields of a base copy snapshot; CF_ENOTFOUND if it is not one. */
int cf_sqlite_base_info_get(cf_sqlite_base_info *out, const cf_snapshot *snap);

/* ---------------------------------------------------------------- continuous replication */

typedef struct cf_sqlite_replicator cf_sqlite_replicator;

typedef struct {
    const char *db_path;         /* a database in WAL mode, opened read-write */
    const char *db_id;           /* NULL: cf_sqlite_db_id(db_path, host) */
    const char *const *tags;     /* tags of the base copies */
    const char *host;
    const char *tmp_dir;
    double snapshot_every;       /* seconds between base copies (a new generation); 0: 3600;
                                    negative: only when continuity is lost */
    double busy_timeout;         /* seconds to wait for the write lock at each step; 0: 5 */
    unsigned threads;
    cf_sqlite_message_cb on_message;
    void *payload;
} cf_sqlite_replicate_opts;

typedef struct {
    bool new_generation;         /* a base copy was taken in this step */
    char generation[17];
    char base_id[65];            /* the generation's base copy */
    uint32_t objects;            /* archive objects stored in this step (0 or 1) */
    uint32_t frames, commits;    /* frames and commits shipped in this step */
    uint64_t bytes;              /* archive bytes (before compression) */
    uint64_t sequence;           /* the last sequence number stored in the generation */
    double lag_seconds;          /* from the step's start (commits seen) until durable */
    char reason[128];            /* why a new generation started ("" when none) */
} cf_sqlite_step_result;

/* Open the database (two connections: one holds a read transaction between steps, so the
 * WAL cannot be reset with frames not yet shipped; one takes the write lock for an instant
 * at each step, so the end of the WAL is stable while it is read). Continues the latest
 * generation of the database in the repository when the WAL still holds its last shipped
 * frame, else the first step starts a new one. CF_EUNSUPPORTED when not in WAL mode. */
int cf_sqlite_replicator_open(cf_sqlite_replicator **out, cf_repo *repo,
                              const cf_sqlite_replicate_opts *opts);
/* Ship the frames committed since the last step as one archive object
 * "<db-id>/<generation>/<sequence>"; take a base copy first (a new generation) when there is
 * none yet, continuity was lost (the WAL was reset or replaced with frames not shipped), or
 * snapshot_every elapsed. After an error, the next step starts a new generation. */
int cf_sqlite_replicator_step(cf_sqlite_replicator *r, cf_sqlite_step_result *out);
void cf_sqlite_replicator_close(cf_sqlite_replicator *r);

/* ---------------------------------------------------------------- restore */

typedef struct {
    const char *target;          /* the database file to create; must not exist (see
                                    overwrite); built beside it and renamed into place */
    const char *db_id;           /* NULL: that of db_path, or of the latest SQLite snapshot */
    const char *db_path;         /* NULL, or the original path to derive db_id (with host) */
    const char *host;
    const char *snapshot;        /* a base copy (id, prefix); NULL: chosen by time */
    int64_t time_ns;             /* 0: the latest state archived */
    bool overwrite;              /* replace an existing target (and remove its -wal, -shm) */
    bool no_frames;              /* the base copy alone */
    cf_sqlite_message_cb on_message;
    void *payload;
} cf_sqlite_restore_opts;

typedef struct {
    cf_sqlite_base_info base;
    uint64_t objects, frames, commits; /* applied */
    int64_t restored_to_ns;      /* time of the last commit applied (the base's if none) */
    uint32_t pages;              /* database size */
    double seconds;
} cf_sqlite_restore_result;

/* Rebuild the database as of time_ns: the base copy at or before it (of the generation that
 * reaches furthest towards it), then the frames of that generation committed at or before
 * it, in order. The result must pass PRAGMA integrity_check; otherwise nothing is left at
 * target and CF_ECORRUPT is returned (also for damaged or missing archive objects).
 * CF_ENOTFOUND when no base copy precedes the time. */
int cf_sqlite_restore(cf_repo *repo, const cf_sqlite_restore_opts *opts,
                      cf_sqlite_restore_result *out);

#ifdef __cplusplus
}
#endif
#endif
