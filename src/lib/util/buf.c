/*
 * buf.c - growable byte buffers with a ceiling, and a bounds-checked reader.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/util.h"

void cf_buf_init(cf_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : CF_BUF_DEFAULT_MAX;
}

void cf_buf_free(cf_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void cf_buf_reset(cf_buf *b) { b->len = 0; }

int cf_buf_reserve(cf_buf *b, size_t extra)
{
    size_t need;
    if (b->max == 0)
        b->max = CF_BUF_DEFAULT_MAX;
    if (!cf_add_ok(b->len, extra, &need) || need > b->max)
        return cf_error_set(CF_ENOMEM, 0, "buffer would exceed its limit of %zu bytes", b->max);
    if (need <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need) {
        if (ncap > b->max / 2) {
            ncap = b->max;
            break;
        }
        ncap *= 2;
    }
    if (ncap < need)
        ncap = need;
    uint8_t *p = realloc(b->data, ncap);
    if (!p)
        return cf_error_set(CF_ENOMEM, 0, "out of memory growing a buffer to %zu bytes", ncap);
    b->data = p;
    b->cap = ncap;
    return 0;
}

int cf_buf_append(cf_buf *b, const void *data, size_t len)
{
    int rc = cf_buf_reserve(b, len + 1);
    if (rc)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0; /* keep text NUL-terminated without counting it */
    return 0;
}

int cf_buf_append_str(cf_buf *b, const char *s) { return cf_buf_append(b, s, strlen(s)); }

int cf_buf_printf(cf_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return cf_error_set(CF_EINVAL, 0, "bad format string");
    int rc = cf_buf_reserve(b, (size_t)n + 1);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int cf_buf_put_u8(cf_buf *b, uint8_t v) { return cf_buf_append(b, &v, 1); }

int cf_buf_put_u16(cf_buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return cf_buf_append(b, p, 2);
}

int cf_buf_put_u32(cf_buf *b, uint32_t v)
{
    uint8_t p[4];
    cf_le32_put(p, v);
    return cf_buf_append(b, p, 4);
}

int cf_buf_put_u64(cf_buf *b, uint64_t v)
{
    uint8_t p[8];
    cf_le64_put(p, v);
    return cf_buf_append(b, p, 8);
}

uint8_t *cf_buf_steal(cf_buf *b, size_t *len_out)
{
    uint8_t *p = b->data;
    if (len_out)
        *len_out = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

void cf_rd_init(cf_rd *r, const void *data, size_t len)
{
    r->p = data;
    r->len = data ? len : 0;
    r->pos = 0;
    r->err = false;
}

const uint8_t *cf_rd_bytes(cf_rd *r, size_t n)
{
    if (r->err || n > r->len - r->pos) {
        r->err = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

uint8_t cf_rd_u8(cf_rd *r)
{
    const uint8_t *p = cf_rd_bytes(r, 1);
    return p ? p[0] : 0;
}

uint16_t cf_rd_u16(cf_rd *r)
{
    const uint8_t *p = cf_rd_bytes(r, 2);
    if (!p)
        return 0;
    uint16_t v = p[1];
    v = (uint16_t)(v << 8);
    return (uint16_t)(v | p[0]);
}

uint32_t cf_rd_u32(cf_rd *r)
{
    const uint8_t *p = cf_rd_bytes(r, 4);
    return p ? cf_le32_get(p) : 0;
}

uint64_t cf_rd_u64(cf_rd *r)
{
    const uint8_t *p = cf_rd_bytes(r, 8);
    return p ? cf_le64_get(p) : 0;
}
