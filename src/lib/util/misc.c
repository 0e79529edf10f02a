/*
 * misc.c - memory helpers, hex and base64, time formatting and parsing, sizes, argv vectors.
 */
#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include "util/util.h"

void *cf_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        cf_error_set(CF_ENOMEM, ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *cf_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        cf_error_set(CF_ENOMEM, ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *cf_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        cf_error_set(CF_ENOMEM, ENOMEM, "out of memory allocating %zu bytes", n);
    return q;
}

char *cf_strdup(const char *s)
{
    return cf_strndup(s, strlen(s));
}

char *cf_strndup(const char *s, size_t n)
{
    char *p = cf_malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *cf_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = cf_malloc((size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void cf_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

static size_t page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }

void *cf_secret_alloc(size_t n)
{
    size_t size = page_round(n ? n : 1);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        cf_error_set(CF_ENOMEM, errno, "out of memory allocating %zu bytes for secrets", n);
        return NULL;
    }
    (void)madvise(p, size, MADV_DONTDUMP);
#ifdef __SANITIZE_ADDRESS__
    __lsan_register_root_region(p, size); /* what it points to is not leaked */
#endif
    return p; /* anonymous pages are zero-filled */
}

void cf_secret_free(void *p, size_t n)
{
    if (!p)
        return;
    size_t size = page_round(n ? n : 1);
    OPENSSL_cleanse(p, n ? n : 1);
#ifdef __SANITIZE_ADDRESS__
    __lsan_unregister_root_region(p, size);
#endif
    munmap(p, size);
}

void cf_hex_encode(char *out, const uint8_t *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int cf_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cf_hex_decode(uint8_t *out, size_t len, const char *hex)
{
    for (size_t i = 0; i < len; i++) {
        int hi = cf_hex_digit(hex[2 * i]);
        int lo = hi < 0 ? -1 : cf_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cf_error_set(CF_EINVAL, 0, "invalid hex string");
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[2 * len] != '\0')
        return cf_error_set(CF_EINVAL, 0, "hex string too long");
    return 0;
}

char *cf_base64_encode(const uint8_t *in, size_t len)
{
    size_t olen = 4 * ((len + 2) / 3) + 1;
    char *out = cf_malloc(olen);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

int cf_base64_decode(cf_buf *out, const char *in)
{
    size_t n = strlen(in);
    if (n % 4 != 0 || n > (size_t)1 << 30)
        return cf_error_set(CF_EINVAL, 0, "invalid base64 length");
    int rc = cf_buf_reserve(out, n / 4 * 3 + 1);
    if (rc)
        return rc;
    int got = EVP_DecodeBlock(out->data + out->len, (const unsigned char *)in, (int)n);
    if (got < 0)
        return cf_error_set(CF_EINVAL, 0, "invalid base64");
    size_t pad = 0;
    if (n >= 1 && in[n - 1] == '=')
        pad++;
    if (n >= 2 && in[n - 2] == '=')
        pad++;
    out->len += (size_t)got - pad;
    return 0;
}

int64_t cf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static atomic_int cancel_flag; /* lock-free: safe to set from a signal handler */

void cf_cancel(void)
{
    atomic_store_explicit(&cancel_flag, 1, memory_order_relaxed);
}

bool cf_cancel_requested(void)
{
    return atomic_load_explicit(&cancel_flag, memory_order_relaxed) != 0;
}

double cf_mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cf_time_format(char out[40], int64_t ns)
{
    time_t sec = (time_t)(ns / 1000000000LL);
    long frac = (long)(ns % 1000000000LL);
    if (frac < 0) {
        frac += 1000000000L;
        sec -= 1;
    }
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[24];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%s.%09ldZ", base, frac);
}

int cf_time_parse(int64_t *out_ns, const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3)
        goto bad;
    const char *p = s + n;
    long frac_ns = 0;
    bool have_tz = false;
    long tzoff = 0;
    if (*p == 'T' || *p == ' ') {
        p++;
        int m = 0;
        if (sscanf(p, "%2d:%2d%n", &h, &mi, &m) != 2)
            goto bad;
        p += m;
        if (*p == ':') {
            if (sscanf(p, ":%2d%n", &sec, &m) != 1)
                goto bad;
            p += m;
        }
        if (*p == '.') {
            p++;
            long scale = 100000000L;
            while (isdigit((unsigned char)*p)) {
                frac_ns += (*p - '0') * scale;
                scale /= 10;
                p++;
            }
        }
        if (*p == 'Z' || *p == 'z') {
            have_tz = true;
            p++;
        } else if (*p == '+' || *p == '-') {
            int th, tmn = 0, k = 0;
            int sign = *p == '-' ? -1 : 1;
            p++;
            if (sscanf(p, "%2d%n", &th, &k) != 1)
                goto bad;
            p += k;
            if (*p == ':')
                p++;
            if (isdigit((unsigned char)*p)) {
                if (sscanf(p, "%2d%n", &tmn, &k) != 1)
                    goto bad;
                p += k;
            }
            have_tz = true;
            tzoff = sign * (th * 3600L + tmn * 60L);
        }
    }
    if (*p != '\0')
        goto bad;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        goto bad;
    if (y < 1678 || y > 2261) /* the range of int64 nanoseconds since 1970 */
        goto bad;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t;
    if (have_tz) {
        t = timegm(&tm) - tzoff;
    } else {
        tm.tm_isdst = -1;
        t = mktime(&tm);
    }
    *out_ns = (int64_t)t * 1000000000LL + frac_ns;
    return 0;
bad:
    return cf_error_set(CF_EINVAL, 0, "invalid time '%s'", s);
}

bool cf_str_has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

void cf_fmt_bytes(char out[32], uint64_t n)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, 32, "%llu B", (unsigned long long)n);
    else
        snprintf(out, 32, "%.3g %s", v, units[u]);
}

int cf_parse_size(uint64_t *out, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno)
        goto bad;
    uint64_t mul = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mul = 1024;
        end++;
        break;
    case 'm':
        mul = 1024 * 1024;
        end++;
        break;
    case 'g':
        mul = 1024ULL * 1024 * 1024;
        end++;
        break;
    case 't':
        mul = 1024ULL * 1024 * 1024 * 1024;
        end++;
        break;
    case 'b':
        break;
    default:
        goto bad;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0')
        goto bad;
    if (v > UINT64_MAX / mul)
        goto bad;
    *out = v * mul;
    return 0;
bad:
    return cf_error_set(CF_EINVAL, 0, "invalid size '%s'", s);
}

/* ------------------------------------------------------------------ argv */

int cf_array_grow(void *pv, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap <= n) {
        if (ncap > SIZE_MAX / 2)
            return CF_ENOMEM;
        ncap *= 2;
    }
    if (elem && ncap > SIZE_MAX / elem)
        return CF_ENOMEM;
    void *old;
    memcpy(&old, pv, sizeof(old));
    void *p = cf_realloc(old, ncap * elem);
    if (!p)
        return CF_ENOMEM;
    memcpy(pv, &p, sizeof(p));
    *cap = ncap;
    return 0;
}

int cf_argv_add(cf_argv *a, const char *s)
{
    /* room for s and the terminating NULL */
    if (cf_array_grow(&a->v, &a->cap, a->n + 1, sizeof(*a->v)))
        return CF_ENOMEM;
    if (!(a->v[a->n] = cf_strdup(s)))
        return CF_ENOMEM;
    a->n++;
    a->v[a->n] = NULL;
    return 0;
}

int cf_argv_addf(cf_argv *a, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return cf_error_set(CF_EINVAL, 0, "argument too long");
    return cf_argv_add(a, buf);
}

void cf_argv_free(cf_argv *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof(*a));
}

/* ------------------------------------------------------------------ stream tails */

void cf_tail_keep(char *tail, size_t *len, size_t max, const void *p, size_t n)
{
    const char *src = p;
    if (n >= max) {
        memcpy(tail, src + n - max, max);
        *len = max;
        return;
    }
    if (*len + n > max) {
        size_t drop = *len + n - max;
        memmove(tail, tail + drop, *len - drop);
        *len -= drop;
    }
    memcpy(tail + *len, src, n);
    *len += n;
}
