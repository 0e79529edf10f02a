/*
 * compress.c - per-blob zstd compression with per-thread contexts, the sampling test that
 * skips compression for data that will not shrink, and hostile-input-safe decompression.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "compress/compress.h"
#include "util/util.h"

/* zstd's default decoder limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT, not in the stable API). */
#define CF_ZSTD_WINDOWLOG_MAX 27

/* ---- per-thread contexts, freed when the thread exits ---- */

typedef struct {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    bool registered;
} cf_zstd_tl;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_tl_key;
static bool g_key_ok;
static _Thread_local cf_zstd_tl tl_ctx;

static void tl_destroy(void *arg)
{
    cf_zstd_tl *t = arg;
    ZSTD_freeCCtx(t->cctx);
    ZSTD_freeDCtx(t->dctx);
    t->cctx = NULL;
    t->dctx = NULL;
    t->registered = false;
}

static void global_init(void)
{
    g_key_ok = pthread_key_create(&g_tl_key, tl_destroy) == 0;
}

static cf_zstd_tl *tl_get(void)
{
    pthread_once(&g_once, global_init);
    cf_zstd_tl *t = &tl_ctx;
    if (!t->registered && g_key_ok && pthread_setspecific(g_tl_key, t) == 0)
        t->registered = true;
    return t;
}

static ZSTD_CCtx *tl_cctx(void)
{
    cf_zstd_tl *t = tl_get();
    if (t->cctx == NULL)
        t->cctx = ZSTD_createCCtx();
    return t->cctx;
}

static ZSTD_DCtx *tl_dctx(void)
{
    cf_zstd_tl *t = tl_get();
    if (t->dctx == NULL) {
        t->dctx = ZSTD_createDCtx();
        /* Single-shot decoding writes straight into dst, but cap the window anyway. */
        if (t->dctx != NULL &&
            ZSTD_isError(ZSTD_DCtx_setParameter(t->dctx, ZSTD_d_windowLogMax,
                                                CF_ZSTD_WINDOWLOG_MAX))) {
            ZSTD_freeDCtx(t->dctx);
            t->dctx = NULL;
        }
    }
    return t->dctx;
}

/* ---- the worthwhile estimate ---- */

#define CF_SAMPLE_LEN 4096u
#define CF_SAMPLES 4u
#define CF_TRIAL_LEVEL (-10) /* fast trial: still finds repeats the histogram cannot see */

/*
 * Where sample i of n bytes starts: inputs up to CF_SAMPLES * CF_SAMPLE_LEN are covered
 * whole, larger ones by samples spread from the first byte to the last.
 */
static size_t sample_at(size_t n, unsigned i, size_t *len)
{
    if (n <= (size_t)CF_SAMPLES * CF_SAMPLE_LEN) {
        size_t off = (size_t)i * CF_SAMPLE_LEN;
        if (off >= n) {
            *len = 0;
            return 0;
        }
        *len = n - off < CF_SAMPLE_LEN ? n - off : CF_SAMPLE_LEN;
        return off;
    }
    *len = CF_SAMPLE_LEN;
    return (n - CF_SAMPLE_LEN) / (CF_SAMPLES - 1) * i;
}

bool cf_compress_worthwhile(const void *src, size_t n)
{
    const uint8_t *p = src;
    uint32_t hist[4][256];
    uint64_t total = 0, sumsq = 0;
    size_t len = 0;

    if (src == NULL || n == 0)
        return false;

    /*
     * Stage 1: order-0 collision entropy (Renyi-2) of the samples, integer-only. Sum p^2
     * above 2^-7 (entropy under 7 bits a byte) means entropy coding alone saves a useful
     * share: text, SQL, zeros, most binaries stop here.
     */
    memset(hist, 0, sizeof(hist));
    for (unsigned s = 0; s < CF_SAMPLES; s++) {
        size_t off = sample_at(n, s, &len), i = 0;
        const uint8_t *q = p + off;
        /* Four interleaved tables: runs of one byte do not serialise on one counter. */
        for (; i + 4 <= len; i += 4) {
            hist[0][q[i]]++;
            hist[1][q[i + 1]]++;
            hist[2][q[i + 2]]++;
            hist[3][q[i + 3]]++;
        }
        for (; i < len; i++)
            hist[0][q[i]]++;
        total += len;
    }
    for (unsigned b = 0; b < 256; b++) {
        uint64_t c = (uint64_t)hist[0][b] + hist[1][b] + hist[2][b] + hist[3][b];
        sumsq += c * c;
    }
    if (sumsq * 128u > total * total)
        return true;

    /*
     * Stage 2: near-uniform byte histogram. Random, compressed and encrypted data look like
     * this, but so do repeats of high-entropy blocks and sequences: a fast zstd pass over the
     * samples tells them apart. cf_compress wants 1/32 saved; the fast trial on small samples
     * understates what level 3 on the whole blob achieves, so 1/64 here (on 1 MiB blocks of
     * files under /usr: about 1% of compressible blocks missed, 0.1% tried in vain).
     */
    ZSTD_CCtx *cctx = tl_cctx();
    if (cctx == NULL)
        return true; /* let cf_compress try, and report the allocation failure */
    uint8_t trial[CF_SAMPLE_LEN];
    uint64_t packed = 0;
    for (unsigned s = 0; s < CF_SAMPLES; s++) {
        size_t off = sample_at(n, s, &len);
        if (len == 0)
            continue;
        size_t cap = len - len / 64u;
        size_t r = ZSTD_compressCCtx(cctx, trial, cap, p + off, len, CF_TRIAL_LEVEL);
        packed += ZSTD_isError(r) ? len : r;
    }
    return packed + total / 64u <= total;
}

/* ---- compress / decompress ---- */

size_t cf_compress_bound(size_t n)
{
    return ZSTD_compressBound(n);
}

int cf_compress(int *out_algo, size_t *out_len, uint8_t *dst, size_t dst_cap, const void *src,
                size_t n, int level)
{
    int rc = 0;
    size_t bound = 0, limit = 0, r = 0;
    ZSTD_CCtx *cctx = NULL;

    if (out_algo == NULL || out_len == NULL || (src == NULL && n > 0)) {
        rc = cf_error_set(CF_EINVAL, 0, "unable to compress: missing argument");
        goto out;
    }
    *out_algo = CF_COMP_NONE;
    *out_len = n;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        rc = cf_error_set(CF_EINVAL, 0, "invalid compression level %d: expected %d to %d", level,
                          ZSTD_minCLevel(), ZSTD_maxCLevel());
        goto out;
    }
    bound = ZSTD_compressBound(n);
    if (bound == 0 || ZSTD_isError(bound)) {
        rc = cf_error_set(CF_EINVAL, 0, "unable to compress %zu bytes: input too large", n);
        goto out;
    }
    if (dst == NULL || dst_cap < bound) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "unable to compress %zu bytes: output buffer of %zu bytes is below "
                          "the bound of %zu",
                          n, dst_cap, bound);
        goto out;
    }
    if (level == 0 || n == 0 || !cf_compress_worthwhile(src, n))
        goto out;

    cctx = tl_cctx();
    if (cctx == NULL) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to create zstd compression context");
        goto out;
    }
    /* Compressing into exactly the space that would be worth it lets zstd give up early. */
    limit = n - n / 32u;
    r = ZSTD_compressCCtx(cctx, dst, limit, src, n, level);
    if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall)
            goto out; /* would not save 1/32: store raw */
        rc = cf_error_set(CF_EGENERIC, 0, "unable to compress %zu bytes with zstd: %s", n,
                          ZSTD_getErrorName(r));
        goto out;
    }
    if (r >= n || n - r < n / 32u)
        goto out;
    *out_algo = CF_COMP_ZSTD;
    *out_len = r;
out:
    return rc;
}

int cf_decompress(uint8_t *dst, size_t raw_len, const void *src, size_t n, int algo)
{
    int rc = 0;
    unsigned long long fsize = 0;
    size_t r = 0;
    ZSTD_DCtx *dctx = NULL;

    if ((dst == NULL && raw_len > 0) || (src == NULL && n > 0)) {
        rc = cf_error_set(CF_EINVAL, 0, "unable to decompress: missing buffer");
        goto out;
    }
    switch (algo) {
    case CF_COMP_NONE:
        if (n != raw_len) {
            rc = cf_error_set(CF_ECORRUPT, 0,
                              "uncompressed blob is %zu bytes, expected %zu", n, raw_len);
            goto out;
        }
        if (n > 0)
            memmove(dst, src, n);
        break;
    case CF_COMP_ZSTD:
        fsize = ZSTD_getFrameContentSize(src, n);
        if (fsize == ZSTD_CONTENTSIZE_ERROR) {
            rc = cf_error_set(CF_ECORRUPT, 0, "zstd blob of %zu bytes has no valid frame header",
                              n);
            goto out;
        }
        if (fsize != ZSTD_CONTENTSIZE_UNKNOWN && fsize != (unsigned long long)raw_len) {
            rc = cf_error_set(CF_ECORRUPT, 0, "zstd blob declares %llu bytes, expected %zu",
                              fsize, raw_len);
            goto out;
        }
        dctx = tl_dctx();
        if (dctx == NULL) {
            rc = cf_error_set(CF_ENOMEM, 0, "unable to create zstd decompression context");
            goto out;
        }
        /* Exact capacity: output beyond raw_len is an error, not an overflow. */
        r = ZSTD_decompressDCtx(dctx, dst, raw_len, src, n);
        if (ZSTD_isError(r)) {
            rc = cf_error_set(CF_ECORRUPT, 0, "unable to decompress zstd blob of %zu bytes: %s",
                              n, ZSTD_getErrorName(r));
            goto out;
        }
        if (r != raw_len) {
            rc = cf_error_set(CF_ECORRUPT, 0, "zstd blob decompressed to %zu bytes, expected %zu",
                              r, raw_len);
            goto out;
        }
        break;
    default:
        rc = cf_error_set(CF_EUNSUPPORTED, 0, "unsupported compression algorithm %d", algo);
        goto out;
    }
out:
    return rc;
}
