/*
 * fuzz_sqlite_frames.c - cf_sq__obj_decode of hostile shipped SQLite WAL frame objects (read
 * back from the repository at restore). Failures must be CF_ECORRUPT or CF_EUNSUPPORTED; a
 * decoded object must be self-consistent and re-encode to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "source/sqlite/sqlite_src.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_sq__obj o;
    int rc = cf_sq__obj_decode(&o, data, size, "archive/sqlitewal/fuzz");
    if (rc != 0) {
        if (rc != CF_ECORRUPT && rc != CF_EUNSUPPORTED)
            abort();
        return 0;
    }
    if (o.nframes == 0 || o.last < o.first || o.page_size == 0)
        abort();
    size_t flen = (size_t)o.nframes * (CF_SQ_FRAME_HDR + (size_t)o.page_size);
    if (!o.frames || o.frames < data || o.frames + flen != data + size)
        abort();
    cf_buf b;
    cf_buf_init(&b, 0);
    if (cf_sq__obj_encode(&b, &o, o.frames, flen) != 0 || b.len != size ||
        memcmp(b.data, data, size) != 0)
        abort();
    cf_buf_free(&b);
    return 0;
}
