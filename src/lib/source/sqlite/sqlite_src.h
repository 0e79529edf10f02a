/*
 * sqlite_src.h - internals of the SQLite source shared by its files: the WAL file format
 * (header, frames, the cumulative checksum), the shipped-frames object format, and helpers
 * around connections and snapshot fields.
 */
#ifndef CF_SOURCE_SQLITE_H
#define CF_SOURCE_SQLITE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "coffer/sqlite.h"
#include "util/util.h"

/* ---- the WAL file (https://www.sqlite.org/fileformat2.html#walformat) ---- */
#define CF_SQ_WAL_HDR 32u
#define CF_SQ_FRAME_HDR 24u
#define CF_SQ_WAL_MAGIC_LE 0x377f0682u
#define CF_SQ_WAL_MAGIC_BE 0x377f0683u

typedef struct {
    uint32_t magic, version, page_size, ckpt_seq, salt1, salt2, cksum1, cksum2;
    uint8_t raw[CF_SQ_WAL_HDR];
} cf_sq__walhdr;

static inline uint32_t cf_sq__be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Parse and verify a WAL header (magic, version, page size, checksum). false: not valid. */
bool cf_sq__walhdr_parse(cf_sq__walhdr *out, const uint8_t raw[CF_SQ_WAL_HDR]);
/* The WAL checksum over n bytes (n a multiple of 8), continuing from in[2] into out[2]. */
void cf_sq__cksum(uint32_t magic, const uint8_t *data, size_t n, const uint32_t in[2],
                  uint32_t out[2]);

/* Committed frames read from a WAL file. */
typedef struct {
    cf_buf frames;            /* raw frames (24-byte header + page), up to the last commit */
    uint32_t first, last;     /* frame numbers (1-based); last < first: none */
    uint32_t nframes, ncommits;
    uint32_t db_pages;        /* database size after the last commit */
    uint32_t cksum_in[2];     /* the checksum before the first frame */
    uint32_t cksum_out[2];    /* after the last committed frame */
} cf_sq__scan;

/* Read the valid frames of the WAL at fd after frame `after` (whose checksum is cksum[2]),
 * keeping those up to the last commit frame. The result may hold no frames. max: ceiling
 * for the bytes kept; 0: find the end only, keep no frames. */
int cf_sq__wal_scan(cf_sq__scan *out, int fd, const char *path, const cf_sq__walhdr *h,
                    uint32_t after, const uint32_t cksum[2], size_t max);
/* The checksum stored in frame n's header (1-based); false when absent or not of this WAL
 * (salts differ). */
bool cf_sq__frame_cksum(int fd, const cf_sq__walhdr *h, uint32_t n, uint32_t out[2]);
/* Read the WAL header at fd. 0 and *present=false when the file is shorter than a header. */
int cf_sq__walhdr_read(cf_sq__walhdr *out, bool *present, int fd, const char *path);

/* ---- shipped frames: archive object "<db-id>/<generation>/<sequence>" ---- */
#define CF_SQ_OBJ_MAGIC "CFSQLWAL"
#define CF_SQ_OBJ_VERSION 1u

typedef struct {
    uint32_t page_size;
    char generation[17];
    char base_id[65];
    uint64_t sequence;
    uint32_t epoch;           /* WAL resets since the base copy */
    uint8_t walhdr[CF_SQ_WAL_HDR];
    uint32_t magic, salt1, salt2, ckpt_seq;
    uint32_t first, last;     /* frame numbers within this WAL */
    uint32_t cksum_in[2], cksum_out[2];
    uint32_t db_pages;
    uint32_t nframes, ncommits;
    int64_t prev_time_ns;     /* the previous step: these commits came after it */
    int64_t time_ns;          /* committed at or before this time */
    const uint8_t *frames;    /* decode: borrowed from the object's bytes */
} cf_sq__obj;

int cf_sq__obj_encode(cf_buf *out, const cf_sq__obj *o, const uint8_t *frames, size_t len);
/* Parse and check an object (header, sizes, every frame's salts and checksum chain).
 * CF_ECORRUPT naming `name` when anything is off. */
int cf_sq__obj_decode(cf_sq__obj *out, const uint8_t *data, size_t len, const char *name);

/* Sequence numbers in names: 10 digits. */
#define CF_SQ_SEQ_FMT "%010llu"

/* ---- connections and copies ---- */
/* Open db with a busy timeout; flags SQLITE_OPEN_*. Errors name the file. */
int cf_sq__open(sqlite3 **out, const char *path, int flags, double busy_timeout);
/* Run SQL with no result rows. */
int cf_sq__exec(sqlite3 *db, const char *sql, const char *path);
/* A CF_E* error from an SQLite result code and the connection's message. */
int cf_sq__err(sqlite3 *db, int src, const char *what, const char *path);
/* Copy src's main database (in its current read transaction if one is open) into a new
 * file at dest with the online backup API, retrying while busy or locked. */
int cf_sq__copy(sqlite3 *src, const char *dest, const char *src_path, double busy_timeout,
                uint32_t *out_pages, uint32_t *out_page_size);
/* PRAGMA integrity_check on the file at path: 0, or CF_ECORRUPT with the first problem. */
int cf_sq__integrity(const char *path);
/* Store the copy at tmp as a base snapshot with info (snapshot_id filled in). */
int cf_sq__store_base(cf_repo *repo, const char *tmp, cf_sqlite_base_info *info,
                      const char *const *tags, const char *host, unsigned threads,
                      cf_backup_stats *out_stats);
/* A temporary file name in dir (or $TMPDIR, /tmp): malloc'd, the file created empty. */
char *cf_sq__tmpfile(const char *dir, const char *hint);
/* The absolute path (malloc'd). */
char *cf_sq__abspath(const char *path);
/* 16 hex digits naming a new generation (time-ordered). */
void cf_sq__new_generation(char out[17]);
void cf_sq__msg(cf_sqlite_message_cb cb, void *payload, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Every base snapshot of db_id (all databases when NULL), oldest first; infos parallel. */
int cf_sq__bases(cf_snapshot ***out, cf_sqlite_base_info **out_infos, size_t *out_count,
                 cf_repo *repo, const char *db_id);

/* The sequence numbers archived for db_id/generation, ascending (malloc'd). */
int cf_sq__sequences(uint64_t **out, size_t *out_count, cf_repo *repo, const char *db_id,
                     const char *generation);
/* Read and decode one shipped object; *owned holds its bytes (free after use of *out). */
int cf_sq__obj_get(cf_sq__obj *out, uint8_t **owned, cf_repo *repo, const char *db_id,
                   const char *generation, uint64_t seq);

#endif
