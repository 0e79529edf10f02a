/*
 * chunker.h - content-defined chunking (FastCDC with normalised chunking, a gear table keyed
 * per repository so chunk boundaries leak nothing about content to someone without the key).
 */
#ifndef CF_CHUNKER_H
#define CF_CHUNKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t min; /* no chunk shorter, except the last of a stream */
    uint32_t avg; /* target average; a power of two */
    uint32_t max; /* no chunk longer */
} cf_chunk_params;

#define CF_CHUNK_MIN_DEFAULT (512u * 1024u)
#define CF_CHUNK_AVG_DEFAULT (1024u * 1024u)
#define CF_CHUNK_MAX_DEFAULT (8u * 1024u * 1024u)

typedef struct cf_chunker cf_chunker;

/* Check parameters: 64 <= min < avg < max <= 64 MiB, avg a power of two. 0 or CF_EINVAL. */
int cf_chunk_params_validate(const cf_chunk_params *p);

/* New chunker with the given parameters and a 32-byte key from which the gear table is
 * derived. *out is freed with cf_chunker_free. 0, CF_EINVAL or CF_ENOMEM. */
int cf_chunker_new(cf_chunker **out, const cf_chunk_params *p, const uint8_t key[32]);
void cf_chunker_free(cf_chunker *c);
const cf_chunk_params *cf_chunker_params(const cf_chunker *c);

/*
 * Find the end of the chunk that starts at data[0]. Stateless: the caller passes at least
 * params.max bytes, or everything up to the end of the stream with eof true.
 * Returns the chunk length (1..max), or 0 when len < max, no cut point was found, and eof is
 * false (the caller must supply more data). With len == 0 and eof it returns 0.
 */
size_t cf_chunker_cut(const cf_chunker *c, const uint8_t *data, size_t len, bool eof);

#endif
