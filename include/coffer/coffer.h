/*
 * coffer.h - the public API of libcoffer: open a repository, back up, restore, check, list.
 * The coffer command and the daemon call only what is declared here.
 *
 * Ownership: objects returned through `**out` belong to the caller and are freed with their
 * type's _free/_close function; `const` pointers returned by accessors are borrowed for the
 * lifetime of their parent. Every fallible function returns 0 or a negative CF_E* code, with
 * details in cf_error_last().
 */
#ifndef COFFER_H
#define COFFER_H

#include "coffer/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_repo cf_repo;

/* ---------------------------------------------------------------- repository */

typedef struct {
    uint32_t chunk_min, chunk_avg, chunk_max; /* 0: defaults 512 KiB / 1 MiB / 8 MiB */
    uint32_t pack_size;                       /* 0: default 16 MiB */
    int compression_level;                    /* -1: default (zstd 1); 0: no compression */
    uint32_t kdf_log_n;                       /* 0: default scrypt N = 2^15 */
} cf_init_opts;

/* What opens a key slot: a password (stretched with scrypt) or a 32-byte key (from a key
 * file, COFFER_KEY, or an external key command: how a KMS is wired in). Exactly one of
 * password and key is set. */
typedef struct {
    const char *password;
    const uint8_t *key;      /* 32 bytes */
    uint32_t kdf_log_n;      /* scrypt cost for new password slots; 0: 2^15 */
} cf_credential;

/* Create a repository at url protected by password. Fails with CF_EEXISTS if one is there. */
int cf_repo_init(const char *url, const char *password, const cf_init_opts *opts);
int cf_repo_init_cred(const char *url, const cf_credential *cred, const cf_init_opts *opts);

/* Open a repository. CF_ENOREPO if there is none at url, CF_EAUTH if no key slot opens with
 * password, CF_ECORRUPT if its config is damaged. *out is closed with cf_repo_close. */
int cf_repo_open(cf_repo **out, const char *url, const char *password);
int cf_repo_open_cred(cf_repo **out, const char *url, const cf_credential *cred);
/* Open flags. CF_OPEN_NO_INDEX skips loading the index: for work that touches only archive
 * objects or key slots (a WAL push per process start must be fast on a large repository). */
enum { CF_OPEN_NO_INDEX = 1u << 0 };
int cf_repo_open_flags(cf_repo **out, const char *url, const cf_credential *cred, unsigned flags);
void cf_repo_close(cf_repo *repo);
const char *cf_repo_display(const cf_repo *repo);

/* Non-fatal problems found while opening (damaged index files skipped, ...): count and text. */
/* Messages the library has for the user while it works that are neither errors nor problems
 * of the repository (reading without a lock, ...): cb is called with each, in the calling
 * thread. NULL: dropped. */
typedef void (*cf_notice_cb)(const char *message, void *payload);
void cf_repo_set_notice(cf_repo *repo, cf_notice_cb cb, void *payload);

size_t cf_repo_warning_count(const cf_repo *repo);
const char *cf_repo_warning(const cf_repo *repo, size_t i);

/* ---------------------------------------------------------------- keys */

/* What a key slot may do. An append-only key adds snapshots and data but cannot remove or
 * rewrite anything (forget, prune, rewrite, key remove/rotate need an admin key). */
typedef enum { CF_ROLE_ADMIN = 0, CF_ROLE_APPEND = 1, CF_ROLE_WRITE_ONLY = 2 } cf_key_role;
/* A write-only key can back up (deduplicating against everything stored) but cannot read
 * any snapshot, tree or file content, not even its own: it holds the blob-id key, the index
 * key and the repository's public key, and no data key. See docs/SECURITY.md. */

#define CF_KEY_INFO_MAX_GENS 64
typedef struct {
    char id[65];
    char kdf[16];       /* "password", "key", or "damaged" */
    char created[40];
    char host[256], user[64];
    uint32_t generations[CF_KEY_INFO_MAX_GENS]; /* data key generations the slot holds */
    uint32_t ngenerations, current_generation;
    bool current;       /* the slot this handle was opened with */
    cf_key_role role;
} cf_key_info;

/* Every key slot (readable without unlocking: metadata only). *out freed with free(). */
int cf_key_list(cf_key_info **out, size_t *out_count, cf_repo *repo);
/* Add a slot for cred holding this handle's keys, with a role. An append-only key can only add
 * append-only keys. */
int cf_key_add(cf_repo *repo, const cf_credential *cred, cf_key_role role, char out_id[65]);
/* The role of the key slot this handle was opened with. */
cf_key_role cf_repo_role(const cf_repo *repo);
/* Remove a slot by id prefix. The slot in use cannot be removed (CF_EINVAL). */
int cf_key_remove(cf_repo *repo, const char *id);
/* Replace the slot in use by one for cred (a new password or key). */
int cf_key_passwd(cf_repo *repo, const cf_credential *cred, char out_id[65]);
/* How many packs are sealed under each data key generation (reads every pack's prefix: one
 * small read per pack). gens/counts have room for max entries; *n gets the number used.
 * Packs written by write-only keys are counted under generation 0xFFFFFFFF. */
int cf_key_generation_usage(cf_repo *repo, uint32_t *gens, uint64_t *counts, size_t max,
                            size_t *n);
/* What is sealed under one data key generation: indexed packs, snapshot documents, index
 * files (repositories that predate the index key) and archive objects. Reads the first bytes
 * of each. Shared lock. */
typedef struct {
    uint64_t packs, snapshots, index_files, archive_objects;
} cf_generation_use;
int cf_key_generation_use(cf_repo *repo, uint32_t gen, cf_generation_use *out);
/* Destroy data key generation gen: the slot in use is replaced by one for cred holding every
 * other generation. Refused (CF_EINVAL) for the current generation, while anything is sealed
 * under gen, or while another admin or append-only slot still seals new data under it;
 * CF_ENOTFOUND when the key in use does not hold it. Admin only; exclusive lock. Other slots
 * that hold gen keep it until they are removed. */
int cf_key_retire_generation(cf_repo *repo, const cf_credential *cred, uint32_t gen,
                             char out_id[65]);
/* Rotate: start a new data key generation for everything written from now on, and replace
 * the slot in use by one for cred holding every generation. Nothing is re-uploaded; other
 * slots keep the generations they had (they read old data but not new) until removed. */
int cf_key_rotate(cf_repo *repo, const cf_credential *cred, char out_id[65], uint32_t *out_gen);

/* ---------------------------------------------------------------- locks */

/* SHARED: writers that add (backup); EXCLUSIVE: writers that remove (prune, forget); READ:
 * readers (restore, check), which work without a lock when the storage refuses writes (a
 * read-only mount, read-only credentials), saying so through the notice callback. */
typedef enum { CF_LOCK_SHARED = 0, CF_LOCK_EXCLUSIVE = 1, CF_LOCK_READ = 2 } cf_lock_mode;
/* Take a lock on the repository for the lifetime of the handle (released by cf_repo_unlock or
 * cf_repo_close). CF_ELOCKED names the holder when a conflicting, live lock exists. */
int cf_repo_lock(cf_repo *repo, cf_lock_mode mode);
int cf_repo_unlock(cf_repo *repo);
/* Remove stale locks (dead process on this host, or not refreshed for 30 minutes); with all,
 * remove every lock. *out_removed counts them. */
int cf_repo_unlock_stale(cf_repo *repo, bool all, size_t *out_removed);

/* ---------------------------------------------------------------- snapshots */

typedef enum {
    CF_BACKUP_INCREMENTAL = 0,
    CF_BACKUP_DIFFERENTIAL = 1,
    CF_BACKUP_FULL = 2,
} cf_backup_type;

typedef struct {
    uint64_t files_new, files_changed, files_unchanged;
    uint64_t dirs, others;
    uint64_t bytes_total;    /* size of all files in the snapshot */
    uint64_t bytes_read;     /* bytes actually read from the source */
    uint64_t bytes_added;    /* bytes added to the repository after dedup and compression */
    uint64_t blobs_added;
    uint64_t errors;         /* files that could not be read */
    double seconds;
} cf_backup_stats;

typedef struct cf_snapshot cf_snapshot;

/* Accessors; strings borrowed from the snapshot. */
const char *cf_snapshot_id(const cf_snapshot *s);   /* 64 hex chars */
int64_t cf_snapshot_time(const cf_snapshot *s);     /* unix ns */
const char *cf_snapshot_host(const cf_snapshot *s);
const char *cf_snapshot_username(const cf_snapshot *s);
size_t cf_snapshot_path_count(const cf_snapshot *s);
const char *cf_snapshot_path(const cf_snapshot *s, size_t i);
size_t cf_snapshot_tag_count(const cf_snapshot *s);
const char *cf_snapshot_tag(const cf_snapshot *s, size_t i);
cf_backup_type cf_snapshot_type(const cf_snapshot *s);
const char *cf_snapshot_parent(const cf_snapshot *s); /* NULL when none */
const char *cf_snapshot_tree(const cf_snapshot *s);
const char *cf_snapshot_source_kind(const cf_snapshot *s); /* "files", "stdin" */
const cf_backup_stats *cf_snapshot_stats(const cf_snapshot *s);
/* The snapshot document as JSON text (malloc'd). */
char *cf_snapshot_to_json(const cf_snapshot *s);
void cf_snapshot_free(cf_snapshot *s);

typedef struct {
    const char *host;          /* NULL: any */
    const char *const *tags;   /* all must be present; NULL-terminated, may be NULL */
    const char *const *paths;  /* snapshot's paths must include all; NULL-terminated */
} cf_snapshot_filter;

/* All snapshots matching filter, oldest first. *out is an array of *out_count snapshots,
 * freed with cf_snapshot_list_free. Unreadable snapshot documents are reported as repo
 * warnings and skipped. */
int cf_snapshot_list(cf_snapshot ***out, size_t *out_count, cf_repo *repo,
                     const cf_snapshot_filter *filter);
void cf_snapshot_list_free(cf_snapshot **list, size_t count);

/* Resolve "latest", a full id or an unambiguous prefix (at least 4 hex chars) to a snapshot.
 * filter applies to "latest". CF_ENOTFOUND or CF_EINVAL (ambiguous) otherwise. */
int cf_snapshot_find(cf_snapshot **out, cf_repo *repo, const char *spec,
                     const cf_snapshot_filter *filter);

/* ---------------------------------------------------------------- backup */

typedef struct {
    uint64_t files_done, bytes_done;  /* processed so far */
    uint64_t files_total, bytes_total; /* estimate from the scan; 0 if unknown */
    const char *current;               /* path being read; borrowed, may be NULL */
} cf_progress;

typedef void (*cf_progress_cb)(const cf_progress *p, void *payload);
/* Called for each file or directory that could not be read (the backup goes on). */
typedef void (*cf_backup_error_cb)(const char *path, const char *message, void *payload);

typedef struct {
    cf_backup_type type;
    const char *const *paths;       /* NULL-terminated; ignored with stdin_name */
    const char *const *tags;        /* NULL-terminated, may be NULL */
    const char *host;               /* NULL: this machine's hostname */
    const char *const *excludes;    /* glob patterns (fnmatch), NULL-terminated */
    bool one_file_system;
    const char *stdin_name;         /* non-NULL: back up stdin_fd as one file of this name */
    int stdin_fd;
    const char *source_kind;        /* NULL: "files" or "stdin" */
    const char *parent;             /* explicit parent snapshot spec, or NULL */
    int64_t time_ns;                /* 0: now */
    cf_progress_cb progress;
    cf_backup_error_cb on_error;
    void *payload;
    double progress_interval;       /* seconds between progress calls; 0: 1 s */
    unsigned threads;               /* compression/encryption workers; 0: one per CPU */
    /* Database sources (PostgreSQL, ...): called once when the source has been read to its
     * end, before the snapshot is written, since a database tool's exit status and its stop
     * point are known only then. Return 0, optionally with a JSON object text in *out_json
     * (malloc'd, freed by cf_backup) whose fields are added to the snapshot document (they
     * never replace the document's own fields); or a negative CF_E* code: nothing is
     * published and cf_backup returns that code. NULL: not called. */
    int (*finish)(char **out_json, void *finish_payload);
    void *finish_payload;
} cf_backup_opts;

/* Back up, publish the snapshot last, and return its id (65 bytes incl. NUL) and stats.
 * Returns 0, or CF_EPARTIAL when the snapshot was written but some files could not be read,
 * or another error when nothing was published. Takes a shared lock. */
int cf_backup(cf_repo *repo, const cf_backup_opts *opts, char out_id[65], cf_backup_stats *out_stats);

/* ---------------------------------------------------------------- restore */

typedef struct {
    const char *target;             /* directory; created if missing */
    const char *subpath;            /* restore only this path inside the snapshot; NULL: all */
    const char *const *includes;    /* glob patterns; NULL: everything */
    const char *const *excludes;
    bool overwrite;                 /* allow a non-empty target, replace existing files */
    bool verify;                    /* re-read what was written and compare with the ids */
    bool no_owner;                  /* do not restore owners even as root */
    unsigned threads;               /* parallel file writers; 0: one per CPU */
    cf_progress_cb progress;
    cf_backup_error_cb on_error;
    void *payload;
} cf_restore_opts;

typedef struct {
    uint64_t files, dirs, others, bytes;
    uint64_t errors;
    uint64_t verified;
    double seconds;
} cf_restore_stats;

/* Restore a snapshot. CF_EPARTIAL when some files could not be restored (reported through
 * on_error, which may be called from several threads, one call at a time), the rest being
 * restored; CF_ECORRUPT when some could not be restored because repository data is damaged
 * or missing. */
int cf_restore(cf_repo *repo, const cf_snapshot *snap, const cf_restore_opts *opts,
               cf_restore_stats *out_stats);

/* Write the contents of one file of a snapshot to fd. */
int cf_dump(cf_repo *repo, const cf_snapshot *snap, const char *path, int fd);

/* ---------------------------------------------------------------- browse */

typedef enum {
    CF_NODE_FILE = 1,
    CF_NODE_DIR = 2,
    CF_NODE_SYMLINK = 3,
    CF_NODE_FIFO = 4,
    CF_NODE_CHARDEV = 5,
    CF_NODE_BLOCKDEV = 6,
    CF_NODE_SOCKET = 7,
} cf_node_type;

typedef struct {
    const char *path;      /* full path within the snapshot, '/'-separated, starts with '/' */
    cf_node_type type;
    uint32_t mode, uid, gid;
    uint64_t size;
    int64_t mtime_ns;
    const char *link_target; /* symlinks, else NULL */
} cf_entry;

/* Return non-zero from the callback to stop the walk (that value is returned). */
typedef int (*cf_walk_cb)(const cf_entry *e, void *payload);

/* A callback receiving names; non-zero stops. */
typedef int (*cf_walk_cb_name)(const char *name, uint64_t size, void *payload);

/* Walk the snapshot's tree depth-first in name order, starting at path (NULL or "/": all). */
int cf_walk(cf_repo *repo, const cf_snapshot *snap, const char *path, bool recursive,
            cf_walk_cb cb, void *payload);

/* ---------------------------------------------------------------- check */

typedef struct {
    bool read_data;
    uint32_t read_data_percent;     /* 0 or 100: all when read_data; 1..99: a random subset */
    cf_backup_error_cb on_problem;  /* each problem, one line */
    void *payload;
} cf_check_opts;

typedef struct {
    uint64_t snapshots, trees, blobs, packs, packs_read;
    uint64_t problems;
    uint64_t damaged_packs, missing_packs, missing_blobs, damaged_indexes, damaged_snapshots;
} cf_check_stats;

/* Check the repository. 0 when no problems were found, CF_ECORRUPT otherwise (every problem
 * reported through on_problem: the damaged object, and the snapshots and files affected). */
int cf_check(cf_repo *repo, const cf_check_opts *opts, cf_check_stats *out_stats);

/* ---------------------------------------------------------------- forget and prune */

/* How snapshots are grouped before a policy applies to each group. */
enum {
    CF_GROUP_HOST = 1u << 0,
    CF_GROUP_PATHS = 1u << 1,
    CF_GROUP_TAGS = 1u << 2,
    CF_GROUP_SOURCE = 1u << 3,
};

typedef struct {
    int last, hourly, daily, weekly, monthly, yearly; /* 0: rule unused; -1: unlimited */
    int64_t within_ns;             /* keep everything newer than the group's latest minus this */
    const char *const *keep_tags;  /* keep snapshots carrying any of these; NULL-terminated */
    unsigned group_by;             /* CF_GROUP_* bits; 0: host and paths */
} cf_forget_policy;

typedef struct {
    cf_snapshot *snap;
    bool keep;
    char reasons[160]; /* "last, daily, monthly" for kept snapshots */
    char *group;       /* the group's description */
} cf_forget_item;

/* Decide which snapshots (matching filter) a policy keeps. A policy with no rule is refused
 * (CF_EINVAL): it would delete everything. Items are grouped, newest first within a group. */
int cf_forget_plan(cf_forget_item **out, size_t *out_count, cf_repo *repo,
                   const cf_forget_policy *policy, const cf_snapshot_filter *filter);
/* Remove the snapshots the plan does not keep. Takes an exclusive lock. *out_removed counts.
 * Snapshots the storage refuses to delete (S3 Object Lock retention) stay; the others are
 * removed, and CF_EPARTIAL then says how many stayed. */
int cf_forget_apply(cf_repo *repo, const cf_forget_item *items, size_t count, size_t *out_removed);
void cf_forget_items_free(cf_forget_item *items, size_t count);

typedef struct {
    double max_unused_percent;  /* repack partly used packs while unused space exceeds this
                                   share of the repository (0: repack every partly used
                                   pack); negative: the default, 5 */
    uint64_t max_repack_bytes;  /* 0: unlimited */
    bool dry_run;
    bool reencrypt;             /* also repack every pack sealed under an older data key
                                   generation, and re-seal the index under the current one */
    bool only_generation;       /* with reencrypt: only packs sealed under generation */
    uint32_t generation;
    cf_backup_error_cb on_message; /* progress and decisions, one line each; may be NULL */
    void *payload;
} cf_prune_opts;

typedef struct {
    uint64_t packs, packs_deleted, packs_repacked, packs_unindexed;
    uint64_t packs_locked;  /* to delete, but the storage refused (retention): kept */
    uint64_t blobs, blobs_used, blobs_removed;
    uint64_t bytes_total, bytes_freed, bytes_repacked, bytes_unused_after;
    uint64_t index_files_written, index_files_deleted;
    double seconds;
} cf_prune_stats;

/* Remove data no snapshot references: delete unused packs, repack partly used ones, rewrite
 * the index. Takes an exclusive lock (refuses with CF_ELOCKED while a backup runs). Safe to
 * interrupt at any point: see docs/internals/prune.md. */
int cf_prune(cf_repo *repo, const cf_prune_opts *opts, cf_prune_stats *out_stats);

typedef struct {
    cf_prune_stats prune;
    uint64_t snapshots_resealed;
    uint64_t archive_resealed;  /* archive objects (database logs) re-sealed */
    uint32_t generations_retired;
    uint32_t generations_kept;  /* older generations still in use (another key slot): kept */
} cf_rewrite_stats;

/* Re-seal everything under the current data key generation (with opts->only_generation:
 * only what is sealed under opts->generation): packs of older generations are
 * repacked (and unused data dropped, as prune does), index files, snapshot documents and
 * archive objects are written again (snapshot ids change: a snapshot's id is the hash of its
 * sealed document; archive objects keep their names),
 * and the older generations are removed from the key slot in use, which is rewritten for
 * cred. Afterwards nothing in the repository needs an older generation. Exclusive lock. */
int cf_rewrite_reencrypt(cf_repo *repo, const cf_credential *cred, const cf_prune_opts *opts,
                         cf_rewrite_stats *out_stats);

/* ---------------------------------------------------------------- archive objects */

/*
 * Named objects kept beside snapshots: database log files (PostgreSQL WAL segments, MariaDB
 * binlogs, SQLite WAL frames) that a point-in-time recovery replays. Each is compressed and
 * sealed like every other object, and bound to its name (a renamed or swapped object is
 * reported as damaged). kind and name use [A-Za-z0-9._-] (name may contain '/').
 */
/* Store an archive object. Storing the same bytes again under the same name succeeds;
 * different bytes under an existing name fail with CF_EEXISTS. Durable when it returns. */
int cf_archive_put(cf_repo *repo, const char *kind, const char *name, const void *data,
                   size_t len);
/* Read one: *out is malloc'd. CF_ENOTFOUND when absent, CF_ECORRUPT when damaged. */
int cf_archive_get(cf_repo *repo, const char *kind, const char *name, uint8_t **out,
                   size_t *out_len);
/* Every name of a kind (unordered). */
int cf_archive_list(cf_repo *repo, const char *kind, cf_walk_cb_name cb, void *payload);
int cf_archive_remove(cf_repo *repo, const char *kind, const char *name);
/* Ask the storage at url alone (no key, no repository open) whether an archive object is
 * absent: true only when the repository's config exists and the object does not. Archive
 * names are not secret; anything that cannot be answered is false. */
bool cf_archive_absent_at(const char *url, const char *kind, const char *name);

/* ---------------------------------------------------------------- stats and debugging */

typedef struct {
    uint64_t snapshots, packs, blobs, data_blobs, tree_blobs;
    uint64_t stored_bytes;      /* sum of pack sizes */
    uint64_t raw_bytes;         /* sum of blob plaintext sizes */
    uint64_t index_files;
    uint64_t restore_size;      /* sum of file sizes over all snapshots */
} cf_repo_stats;

int cf_repo_stats_get(cf_repo *repo, cf_repo_stats *out);

/* Debugging: return a JSON description of "config", "snapshot ID", "index ID", "pack ID",
 * "tree ID", "key ID", "keys", "blob ID" (malloc'd text). Never prints key material. */
int cf_repo_cat(char **out, cf_repo *repo, const char *what, const char *id);

#ifdef __cplusplus
}
#endif
#endif
