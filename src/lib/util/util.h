/*
 * util.h - internal helpers shared by every module: growable bounded buffers, hex, memory,
 * time, and the poisoning of banned libc functions.
 */
#ifndef CF_UTIL_H
#define CF_UTIL_H

#include "coffer/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- growable buffer with a ceiling (curl's dynbuf) ---- */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* ceiling; 0 means CF_BUF_DEFAULT_MAX */
} cf_buf;

#define CF_BUF_DEFAULT_MAX ((size_t)1 << 34) /* 16 GiB: nothing in coffer is bigger */

void cf_buf_init(cf_buf *b, size_t max);
void cf_buf_free(cf_buf *b);        /* frees storage, leaves an empty buffer */
void cf_buf_reset(cf_buf *b);       /* len = 0, keeps storage */
int cf_buf_reserve(cf_buf *b, size_t extra); /* ensure len+extra fits */
int cf_buf_append(cf_buf *b, const void *data, size_t len);
int cf_buf_append_str(cf_buf *b, const char *s);
int cf_buf_printf(cf_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cf_buf_put_u8(cf_buf *b, uint8_t v);
int cf_buf_put_u16(cf_buf *b, uint16_t v); /* little endian */
int cf_buf_put_u32(cf_buf *b, uint32_t v);
int cf_buf_put_u64(cf_buf *b, uint64_t v);
/* Detach the storage: caller owns *out (free()), buffer becomes empty. */
uint8_t *cf_buf_steal(cf_buf *b, size_t *len_out);

/* ---- bounds-checked reader over a byte range from storage ---- */
typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
    bool err; /* set on any read past the end; later reads return zeros */
} cf_rd;

void cf_rd_init(cf_rd *r, const void *data, size_t len);
uint8_t cf_rd_u8(cf_rd *r);
uint16_t cf_rd_u16(cf_rd *r);
uint32_t cf_rd_u32(cf_rd *r);
uint64_t cf_rd_u64(cf_rd *r);
/* Returns a pointer into the data, or NULL (and sets err) if n bytes are not there. */
const uint8_t *cf_rd_bytes(cf_rd *r, size_t n);
static inline size_t cf_rd_left(const cf_rd *r) { return r->err ? 0 : r->len - r->pos; }

/* ---- little-endian helpers ---- */
static inline void cf_le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t cf_le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void cf_le64_put(uint8_t *p, uint64_t v)
{
    cf_le32_put(p, (uint32_t)v);
    cf_le32_put(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t cf_le64_get(const uint8_t *p)
{
    return (uint64_t)cf_le32_get(p) | (uint64_t)cf_le32_get(p + 4) << 32;
}

/* ---- hex ---- */
/* Writes 2*len hex chars plus NUL into out (size >= 2*len+1). */
void cf_hex_encode(char *out, const uint8_t *in, size_t len);
/* The value of one hex digit (either case), or -1. */
int cf_hex_digit(char c);
/* Decodes exactly 2*len hex chars; returns 0 or CF_EINVAL. */
int cf_hex_decode(uint8_t *out, size_t len, const char *hex);

/* ---- base64 (standard alphabet, padded) ---- */
char *cf_base64_encode(const uint8_t *in, size_t len); /* malloc'd */
int cf_base64_decode(cf_buf *out, const char *in);

/* ---- memory ---- */
void *cf_malloc(size_t n);  /* NULL + CF_ENOMEM error on failure */
void *cf_calloc(size_t n, size_t size);
void *cf_realloc(void *p, size_t n);
char *cf_strdup(const char *s);
char *cf_strndup(const char *s, size_t n);
char *cf_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Overflow-checked a*b and a+b: return false on overflow. */
static inline bool cf_mul_ok(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool cf_add_ok(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* Wipe secrets (OPENSSL_cleanse). */
void cf_wipe(void *p, size_t n);
/* Zeroed memory for secrets, in pages of their own marked MADV_DONTDUMP so that a core dump
 * leaves them out (best effort: a kernel without it dumps them). NULL + CF_ENOMEM on
 * failure. cf_secret_free wipes and unmaps; n must be the size given to cf_secret_alloc. */
void *cf_secret_alloc(size_t n);
void cf_secret_free(void *p, size_t n);

/* time functions are public: see coffer/common.h */

/* ---- strings ---- */
bool cf_str_has_prefix(const char *s, const char *prefix);
/* Human size "1.5 GiB". */
void cf_fmt_bytes(char out[32], uint64_t n);
/* Parse "16M", "512k", "1GiB" into bytes. */
int cf_parse_size(uint64_t *out, const char *s);

/* ---- saving the last error across cleanup that may overwrite it ---- */
typedef struct {
    int code, sys;
    char message[1024];
    char hint[512];
    bool has_hint;
} cf_error_saved;
void cf_error_save(cf_error_saved *s);
void cf_error_restore(const cf_error_saved *s);

/* ---- banned functions (CONVENTIONS.md) ---- */
#ifndef CF_NO_POISON
#pragma GCC poison strcpy strcat sprintf vsprintf gets atoi atol strtok
#endif

/* An argument vector for execve(): NULL-terminated, each string owned. */
typedef struct {
    char **v;
    size_t n, cap;
} cf_argv;

int cf_argv_add(cf_argv *a, const char *s);
int cf_argv_addf(cf_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cf_argv_free(cf_argv *a);

/* Make room for element n (0-based) in the array *pv of elements of size elem, capacity *cap:
 * doubles the capacity (from 16) when it is full. pv is the address of the array pointer.
 * Returns 0 or CF_ENOMEM (the array is unchanged). */
int cf_array_grow(void *pv, size_t *cap, size_t n, size_t elem);

/* Keep the last max bytes of a stream in tail (holding *len): append p[0..n), dropping the
 * oldest bytes beyond max. */
void cf_tail_keep(char *tail, size_t *len, size_t max, const void *p, size_t n);

#endif
