/*
 * error.c - the thread-local last error and the error code table.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

#define CF_MSG_MAX 1024

static _Thread_local char tl_msg[CF_MSG_MAX];
static _Thread_local char tl_hint[CF_MSG_MAX];
static _Thread_local cf_error tl_err = {0, 0, "", NULL};

const cf_error *cf_error_last(void)
{
    tl_err.message = tl_msg;
    return &tl_err;
}

void cf_error_clear(void)
{
    tl_msg[0] = '\0';
    tl_hint[0] = '\0';
    tl_err.code = 0;
    tl_err.sys = 0;
    tl_err.hint = NULL;
}

int cf_error_set(int code, int sys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof(tl_msg), fmt, ap);
    va_end(ap);
    tl_err.code = code;
    tl_err.sys = sys;
    tl_err.hint = NULL;
    tl_hint[0] = '\0';
    return code;
}

void cf_error_hint(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_hint, sizeof(tl_hint), fmt, ap);
    va_end(ap);
    tl_err.hint = tl_hint;
}

int cf_error_wrap(int code, const char *fmt, ...)
{
    char prefix[CF_MSG_MAX];
    char old[CF_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, tl_msg, sizeof(old));
    size_t n = strlen(prefix);
    memcpy(tl_msg, prefix, n + 1);
    if (old[0] && n + 2 < sizeof(tl_msg)) {
        memcpy(tl_msg + n, ": ", 3);
        size_t room = sizeof(tl_msg) - n - 3;
        size_t olen = strlen(old);
        if (olen > room)
            olen = room;
        memcpy(tl_msg + n + 2, old, olen);
        tl_msg[n + 2 + olen] = '\0';
    }
    if (code != 0)
        tl_err.code = code;
    return code;
}

void cf_error_save(cf_error_saved *s)
{
    s->code = tl_err.code;
    s->sys = tl_err.sys;
    snprintf(s->message, sizeof(s->message), "%.1000s", tl_msg);
    s->has_hint = tl_err.hint != NULL;
    snprintf(s->hint, sizeof(s->hint), "%.500s", s->has_hint ? tl_hint : "");
}

void cf_error_restore(const cf_error_saved *s)
{
    cf_error_set(s->code, s->sys, "%s", s->message);
    if (s->has_hint)
        cf_error_hint("%s", s->hint);
}

const char *cf_error_name(int code)
{
    switch (code) {
#define CF_ERROR(name, value, exit_code, desc) \
    case (value):                              \
        return #name;
#include "coffer/errors.def"
#undef CF_ERROR
    default:
        return "UNKNOWN";
    }
}

const char *cf_error_desc(int code)
{
    switch (code) {
#define CF_ERROR(name, value, exit_code, desc) \
    case (value):                              \
        return desc;
#include "coffer/errors.def"
#undef CF_ERROR
    default:
        return "unknown error";
    }
}

int cf_error_exit_code(int code)
{
    switch (code) {
#define CF_ERROR(name, value, exit_code, desc) \
    case (value):                              \
        return (exit_code);
#include "coffer/errors.def"
#undef CF_ERROR
    default:
        return 1;
    }
}

int cf_error_from_errno(int err)
{
    switch (err) {
    case 0:
        return CF_OK;
    case ENOENT:
    case ENOTDIR:
        return CF_ENOTFOUND;
    case EEXIST:
        return CF_EEXISTS;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return CF_ENOSPACE;
    case EACCES:
    case EPERM:
    case EROFS:
        return CF_EPERM;
    case ENOMEM:
        return CF_ENOMEM;
    case EINTR:
    case EAGAIN:
    case ETIMEDOUT:
        return CF_ERETRYABLE;
    case EINVAL:
        return CF_EINVAL;
    default:
        return CF_EIO;
    }
}
