/*
 * pg.h - internals of the PostgreSQL source shared by its files: running the client
 * programs (as another user, with pipes and captured stderr), WAL file names and LSNs,
 * and the snapshot fields.
 */
#ifndef CF_SOURCE_PG_H
#define CF_SOURCE_PG_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "coffer/postgres.h"
#include "util/util.h"

/* A string literal or const string as an execve() argument (never written to). */
#define CF_PG_STR(s) ((char *)(uintptr_t)(s))

/* ---- the OS user programs run as ---- */
typedef struct {
    bool change;          /* switch to uid/gid in the child */
    uid_t uid;
    gid_t gid;
    gid_t *groups;        /* supplementary groups */
    int ngroups;
    char name[64];
    char home[256];
} cf_pg__user;

/* Resolve name (NULL: the current user) into *out. */
int cf_pg__user_lookup(cf_pg__user *out, const char *name);
void cf_pg__user_free(cf_pg__user *u);

/* ---- a resolved connection ---- */
typedef struct {
    char *host, *port, *user, *dbname, *bindir;
    cf_pg__user os;       /* who runs the programs */
} cf_pg__target;

int cf_pg__resolve(cf_pg__target *out, const cf_pg_conn *c);
void cf_pg__target_free(cf_pg__target *t);

/* ---- argv building (util's cf_argv) ---- */
/* -h -p -U (and -d when with_db) of t */
int cf_pg__argv_conn(cf_argv *a, const cf_pg__target *t, bool with_db);

/* Find a PostgreSQL program: bindir, then the version's Debian/RPM directories, PATH, and the
 * newest /usr/lib/postgresql/N/bin. out is PATH_MAX bytes. */
int cf_pg__find_bin(char *out, size_t outlen, const char *bindir, const char *name,
                    const char *version);

/* ---- child processes ---- */
#define CF_PG_FD_NULL (-1) /* /dev/null */
#define CF_PG_FD_PIPE (-2) /* a pipe to or from the caller */

typedef struct {
    pid_t pid;
    int in_fd;            /* write end of the child's stdin (CF_PG_FD_PIPE), else -1 */
    int out_fd;           /* read end of the child's stdout (CF_PG_FD_PIPE), else -1 */
    int err_fd;
    pthread_t err_thread;
    bool err_started;
    bool waited;
    int status;           /* raw wait status once waited */
    pthread_mutex_t mu;
    char errtail[4096];   /* the last lines of stderr */
    size_t errlen;
    char *errall;         /* all of stderr up to 64 KiB */
    size_t errall_len;
    const char *prog;     /* program name for messages */
    cf_pg_message_cb on_line;
    void *payload;
    cf_pg_msg_level line_level;
} cf_pg__proc;

/* Start argv[0] (an absolute path) as user u (NULL: as is) with stdin/stdout from fd_in/fd_out
 * (a descriptor, CF_PG_FD_NULL or CF_PG_FD_PIPE). stderr is captured (and each line passed to
 * on_line at line_level when set). env: NULL-terminated "NAME=value" or NULL for the current
 * environment minus COFFER_* secrets. */
int cf_pg__spawn(cf_pg__proc *p, char *const *argv, const cf_pg__user *u, int fd_in, int fd_out,
                 char *const *env, cf_pg_message_cb on_line, cf_pg_msg_level line_level,
                 void *payload);
/* Wait for the child and its stderr; *out_code: its exit code, or 128+signal. */
int cf_pg__wait(cf_pg__proc *p, int *out_code);
/* Terminate (SIGTERM) a child that is still running, then wait. */
void cf_pg__kill(cf_pg__proc *p);
/* Release what spawn allocated (after wait or kill). */
void cf_pg__proc_free(cf_pg__proc *p);
/* The last non-empty line of stderr ("" if none). */
const char *cf_pg__last_line(cf_pg__proc *p, char *buf, size_t len);
/* Describe a failure: "pg_basebackup failed (exit 1): <last line>" as a CF_EGENERIC error. */
int cf_pg__proc_error(cf_pg__proc *p, int code);

/* The environment for a server or its restore_command: the current one without COFFER_*,
 * with HOME/USER/LOGNAME of u. NULL-terminated, free with cf_pg__env_free. */
char **cf_pg__env_for(const cf_pg__user *u);
void cf_pg__env_free(char **env);

/* Run psql -c sql (unaligned, tuples only, '|' separated); *out gets stdout (malloc'd). */
int cf_pg__psql(char **out, const cf_pg__target *t, const char *sql);

/* Block SIGPIPE on this thread while writing to a child; restore clears one raised meanwhile. */
typedef struct {
    bool blocked, was_pending;
    sigset_t oldmask;
} cf_pg__sigpipe;
void cf_pg__sigpipe_block(cf_pg__sigpipe *s);
void cf_pg__sigpipe_restore(cf_pg__sigpipe *s);

/* ---- WAL names ---- */
#define CF_PG_SEG_DEFAULT (16u * 1024 * 1024)

typedef enum {
    CF_PG_WAL_NONE = 0,
    CF_PG_WAL_SEGMENT,   /* 000000010000000000000002 */
    CF_PG_WAL_PARTIAL,   /* ....partial */
    CF_PG_WAL_HISTORY,   /* 00000002.history */
    CF_PG_WAL_BACKUP,    /* 000000010000000000000002.00000028.backup */
} cf_pg__wal_kind;

typedef struct {
    cf_pg__wal_kind kind;
    uint32_t tli;
    uint32_t log, seg;   /* segments, partial and backup files */
    uint32_t offset;     /* backup files */
} cf_pg__wal_name;

cf_pg__wal_kind cf_pg__wal_parse(cf_pg__wal_name *out, const char *name);
static inline uint64_t cf_pg__segs_per_id(uint32_t segsize) { return 0x100000000ULL / segsize; }
static inline uint64_t cf_pg__segno(const cf_pg__wal_name *w, uint32_t segsize)
{
    return (uint64_t)w->log * cf_pg__segs_per_id(segsize) + w->seg;
}
/* File name of segment segno on timeline tli (out: 25 bytes). */
void cf_pg__seg_name(char out[25], uint32_t tli, uint64_t segno, uint32_t segsize);
bool cf_pg__valid_segsize(uint64_t s);
/* The first page of segment data (len bytes) names w's address and a segment size of len:
 * 0, or CF_EINVAL naming name. */
int cf_pg__check_segment(const cf_pg__wal_name *w, const char *name, const uint8_t *d,
                         size_t len);

/* The archive object name of file (with the cluster prefix); out is 256 bytes. */
int cf_pg__archive_name(char out[256], const char *cluster, const char *file);
bool cf_pg__valid_cluster(const char *cluster);

/* ---- misc ---- */
/* Make path absolute against the working directory (malloc'd). */
char *cf_pg__abspath(const char *path);
/* Quote s for a PostgreSQL configuration file ('...' with '' and \\). */
int cf_pg__conf_quote(cf_buf *b, const char *s);
/* Quote s for /bin/sh ('...' with '\''). */
int cf_pg__sh_quote(cf_buf *b, const char *s);
void cf_pg__msg(cf_pg_message_cb cb, void *payload, cf_pg_msg_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Read a small text file (up to max bytes) into a malloc'd NUL-terminated string. */
int cf_pg__read_text(char **out, const char *path, size_t max);
/* Sleep for seconds (fractions allowed). */
void cf_pg__sleep(double seconds);

/* ---- texts parsed back from the archive or pg_basebackup's stream ---- */
/* backup_label (start point, timeline, from standby) and the tail of backup_manifest (mtail,
 * may be NULL: the stop point, *have_stop). CF_EGENERIC when the label is not valid. */
int cf_pg__parse_label(cf_pg_base_info *info, const char *label, const char *mtail,
                       bool *have_stop);
/* The STOP WAL LOCATION of a backup history file ("....backup"). */
int cf_pg__parse_backup_history(uint64_t *stop_lsn, const char *text);
/* A timeline history file: one (tli, end LSN) per line, blank lines and comments skipped;
 * CF_ECORRUPT for any other line that is not a timeline (1 to 2^32-1, above the previous
 * one) and an LSN. text is modified (lines are cut); *out is malloc'd (NULL when none). */
typedef struct {
    uint32_t tli;
    uint64_t end;
} cf_pg__hist_entry;
int cf_pg__parse_history(cf_pg__hist_entry **out, size_t *out_n, char *text);

/* The snapshot document's "postgres" object as parsed fields. CF_ENOTFOUND when there is
 * none, CF_ECORRUPT when a field is missing or out of range. */
int cf_pg__info_from_json(cf_pg_base_info *out, const char *doc_json);

/* A decimal number of ASCII digits only (no sign, no blanks) at s, at most max. *end (may be
 * NULL) is set past the last digit. false when there is no digit or the value exceeds max. */
bool cf_pg__dec(uint64_t *out, const char *s, const char **end, uint64_t max);

/* ---- pg_basebackup's tar stream ---- */
/*
 * A streaming reader of the tar stream on its way into the repository: it captures
 * backup_label (start point, timeline) at the start and the tail of backup_manifest (its WAL
 * range: the stop point) at the end, and sees whether the archive ended properly. Bytes may
 * arrive in pieces of any size. Nothing is allocated: set mtail to a buffer of
 * CF_PG_MTAIL_MAX + 1 bytes to keep the manifest's tail (NULL: not kept).
 */
#define CF_PG_MTAIL_MAX (64 * 1024)

typedef struct {
    uint8_t hdr[512];
    size_t hlen;         /* bytes of the current header so far */
    uint64_t left, pad;  /* data and padding bytes of the current member still to come */
    int capture;         /* 1 backup_label, 2 backup_manifest */
    char label[8192];
    size_t label_len;
    char *mtail;
    size_t mtail_len;
    bool have_manifest;
    int zero_blocks;     /* consecutive zero blocks seen (2: the end of the archive) */
    bool corrupt;        /* a header is not valid: what follows is not parsed */
    char why[96];        /* what was wrong with it */
    uint64_t members;    /* headers read */
} cf_pg__tar;

/* Start reading (mtail: see above). */
void cf_pg__tar_init(cf_pg__tar *t, char *mtail);
/* Read the next n bytes of the stream. */
void cf_pg__tar_feed(cf_pg__tar *t, const uint8_t *p, size_t n);
/* At the end of the stream: 0 when it was a whole archive, else CF_ECORRUPT (truncated, or a
 * header not valid). */
int cf_pg__tar_end(const cf_pg__tar *t);

#endif
