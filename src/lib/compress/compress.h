/*
 * compress.h - per-blob compression with zstd, and the cheap test that skips it for data
 * that will not compress.
 */
#ifndef CF_COMPRESS_H
#define CF_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Algorithm ids as stored in pack headers and tree/index entries. Never renumber. */
enum {
    CF_COMP_NONE = 0,
    CF_COMP_ZSTD = 1,
};

/* Data blobs: zstd 1 costs about a quarter less CPU than zstd 3 and makes a typical
 * repository 1-2 % larger (docs/PERFORMANCE.md); a repository chooses its level at init. */
#define CF_COMP_LEVEL_DEFAULT 1
/* Metadata objects (indexes, snapshots, key slots): small, read often, written rarely. */
#define CF_COMP_LEVEL_META 3

/* Largest output cf_compress can produce for n bytes of input. */
size_t cf_compress_bound(size_t n);

/*
 * Estimate from samples whether n bytes are worth compressing (costs a few microseconds per
 * MiB, far less than a compression attempt). False for random or already-compressed data.
 */
bool cf_compress_worthwhile(const void *src, size_t n);

/*
 * Compress src (n bytes) at level into dst (dst_cap >= cf_compress_bound(n)).
 * On return *out_algo is CF_COMP_ZSTD and *out_len the compressed size, or, when level is 0,
 * the data is judged not worthwhile, or compression would not save at least 1/32 of n,
 * *out_algo is CF_COMP_NONE and nothing useful is in dst (the caller stores src raw).
 * Uses a per-thread compression context. Returns 0 or a negative CF_E* code.
 */
int cf_compress(int *out_algo, size_t *out_len, uint8_t *dst, size_t dst_cap, const void *src,
                size_t n, int level);

/*
 * Decompress exactly raw_len bytes into dst. Returns 0, or CF_ECORRUPT when the input is not
 * valid for algo or does not decompress to exactly raw_len bytes, or CF_EUNSUPPORTED for an
 * unknown algo. Safe on hostile input.
 */
int cf_decompress(uint8_t *dst, size_t raw_len, const void *src, size_t n, int algo);

#endif
