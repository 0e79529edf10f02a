/*
 * fuzz_decompress.c - cf_decompress on hostile input: the first 4 bytes (little endian,
 * capped at 1 MiB) are the expected raw length, the rest the stored blob. Whatever decodes
 * must re-compress and decode back to the same bytes; anything else must be CF_ECORRUPT.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compress/compress.h"
#include "util/util.h"

#define FUZZ_RAW_MAX ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Compress what was decoded and decode it again: it must come back unchanged. */
static void check_roundtrip(const uint8_t *raw, size_t raw_len)
{
    size_t cap = cf_compress_bound(raw_len);
    uint8_t *z = malloc(cap ? cap : 1), *back = malloc(raw_len ? raw_len : 1);
    int algo = -1;
    size_t zlen = 0;
    if (z == NULL || back == NULL)
        abort();
    if (cf_compress(&algo, &zlen, z, cap, raw, raw_len, 1) != 0)
        abort();
    const uint8_t *stored = algo == CF_COMP_NONE ? raw : z;
    size_t stored_len = algo == CF_COMP_NONE ? raw_len : zlen;
    if (cf_decompress(back, raw_len, stored, stored_len, algo) != 0)
        abort();
    if (raw_len > 0 && memcmp(back, raw, raw_len) != 0)
        abort();
    free(z);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t raw_len = cf_le32_get(data);
    if (raw_len > FUZZ_RAW_MAX)
        raw_len = FUZZ_RAW_MAX;
    const uint8_t *src = data + 4;
    size_t n = size - 4;
    uint8_t *dst = malloc(raw_len ? raw_len : 1);
    if (dst == NULL)
        abort();

    const int algos[] = {CF_COMP_NONE, CF_COMP_ZSTD};
    for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
        int rc = cf_decompress(dst, raw_len, src, n, algos[i]);
        if (rc == 0)
            check_roundtrip(dst, raw_len);
        else if (rc != CF_ECORRUPT)
            abort();
    }
    if (cf_decompress(dst, raw_len, src, n, 0x7f) != CF_EUNSUPPORTED)
        abort();
    free(dst);
    return 0;
}
