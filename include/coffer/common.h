/*
 * common.h - error codes, the thread-local last error, and version of libcoffer.
 */
#ifndef COFFER_COMMON_H
#define COFFER_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COFFER_VERSION "0.1.0"

/* Error codes: 0 is success, every failure is negative. */
typedef enum {
#define CF_ERROR(name, value, exit_code, desc) CF_E##name = (value),
#include "coffer/errors.def"
#undef CF_ERROR
} cf_error_code;

/* Backwards-friendly alias: CF_OK == CF_EOK == 0. */
#define CF_OK 0

/*
 * The last error recorded on this thread: code, one-line message naming the object, an
 * optional hint, and the errno or HTTP status that caused it (0 if none). The pointer is
 * borrowed until the next libcoffer call on this thread.
 */
typedef struct {
    int code;
    int sys;              /* errno or protocol status, 0 if none */
    const char *message;  /* never NULL after an error; "" when none recorded */
    const char *hint;     /* may be NULL */
} cf_error;

const cf_error *cf_error_last(void);

/* Record an error (printf-style message) and return `code`, so callers can
 * `return cf_error_set(CF_EIO, errno, "unable to read '%s'", path);` */
int cf_error_set(int code, int sys, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Attach a hint line to the current error. */
void cf_error_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current message with more context: "context: old message". Returns code. */
int cf_error_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cf_error_clear(void);

/* Name ("NOTFOUND"), description and CLI exit code of an error code. */
const char *cf_error_name(int code);
const char *cf_error_desc(int code);
int cf_error_exit_code(int code);

/* Map an errno to the closest error code (ENOENT -> NOTFOUND, ENOSPC -> NOSPACE, ...). */
int cf_error_from_errno(int err);

/* ---- cancellation ---- */
/* Ask the running operation to stop: async-signal-safe, for a SIGINT/SIGTERM handler. A
 * restore stops after the piece of data it is writing, removes its unfinished files and
 * returns CF_ECANCELLED. */
void cf_cancel(void);
bool cf_cancel_requested(void);

/* ---- time ---- */
int64_t cf_now_ns(void);            /* CLOCK_REALTIME in ns */
double cf_mono_seconds(void);       /* CLOCK_MONOTONIC */
/* Format a unix time in ns as RFC 3339 UTC with nanoseconds: 2026-01-02T03:04:05.123456789Z */
void cf_time_format(char out[40], int64_t ns);
/* Parse RFC 3339 (with Z or +hh:mm offset, optional fraction) or "YYYY-MM-DD[ HH:MM[:SS]]"
 * (local time). Returns 0 or CF_EINVAL. */
int cf_time_parse(int64_t *out_ns, const char *s);

#ifdef __cplusplus
}
#endif
#endif
