/*
 * fuzz_pg_tar.c - cf_pg__tar, the reader of pg_basebackup's tar stream, on hostile bytes:
 * the first byte chooses how the rest is cut into pieces, and whether every 512-byte block
 * gets a valid header checksum first (members start on block boundaries, so mutated headers
 * get past the checksum and reach the fields behind it). Nothing may crash; the result must
 * not depend on the cut (the pipe delivers any sizes); captured texts stay terminated and
 * within their buffers; a stream accepted as whole has its backup_label parsed as at backup.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/postgres/pg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_one(const cf_pg__tar *t)
{
    if (t->label_len >= sizeof(t->label) || t->label[t->label_len] != '\0')
        abort();
    if (t->mtail && (t->mtail_len > CF_PG_MTAIL_MAX || t->mtail[t->mtail_len] != '\0'))
        abort();
    if (t->hlen >= 512 || (t->corrupt && (t->left || t->pad || !t->why[0])))
        abort();
}

static void check_same(const cf_pg__tar *a, const cf_pg__tar *b)
{
    if (a->corrupt != b->corrupt || a->zero_blocks != b->zero_blocks || a->left != b->left ||
        a->pad != b->pad || a->hlen != b->hlen || a->members != b->members ||
        a->have_manifest != b->have_manifest || a->label_len != b->label_len ||
        a->mtail_len != b->mtail_len || memcmp(a->label, b->label, a->label_len) != 0 ||
        memcmp(a->mtail, b->mtail, a->mtail_len) != 0 || strcmp(a->why, b->why) != 0)
        abort();
}

/* Write the unsigned header checksum of every whole block that is not all zero. */
static void fix_checksums(uint8_t *p, size_t n)
{
    for (size_t off = 0; off + 512 <= n; off += 512) {
        uint8_t *h = p + off;
        unsigned sum = 0;
        bool zero = true;
        for (size_t i = 0; i < 512; i++) {
            zero = zero && h[i] == 0;
            sum += i >= 148 && i < 156 ? (unsigned)' ' : h[i];
        }
        if (!zero) {
            snprintf((char *)h + 148, 8, "%06o", sum); /* at most 512 * 255: 6 digits */
            h[155] = ' ';
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t cut = in[0];
    size--;
    cf_pg__tar *whole = malloc(sizeof(*whole)), *pieces = malloc(sizeof(*pieces));
    char *m1 = malloc(CF_PG_MTAIL_MAX + 1), *m2 = malloc(CF_PG_MTAIL_MAX + 1);
    uint8_t *data = malloc(size ? size : 1);
    if (!whole || !pieces || !m1 || !m2 || !data)
        goto out;
    memcpy(data, in + 1, size);
    if (cut & 0x80)
        fix_checksums(data, size);
    cf_pg__tar_init(whole, m1);
    cf_pg__tar_feed(whole, data, size);
    cf_pg__tar_init(pieces, m2);
    /* pieces of 1 to 64 bytes, or around block boundaries, growing with the position */
    size_t step = (size_t)(cut & 63) + 1;
    for (size_t off = 0; off < size;) {
        size_t k = (cut & 64) ? step + (off % 509) : step;
        if (k > size - off)
            k = size - off;
        cf_pg__tar_feed(pieces, data + off, k);
        off += k;
    }
    check_one(whole);
    check_one(pieces);
    check_same(whole, pieces);
    int rc = cf_pg__tar_end(whole);
    if (rc != 0 && rc != CF_ECORRUPT)
        abort();
    if (rc == 0) {
        cf_pg_base_info info;
        memset(&info, 0, sizeof(info));
        bool have_stop = false;
        if (cf_pg__parse_label(&info, whole->label, whole->mtail, &have_stop) == 0 &&
            (info.timeline == 0 || strlen(info.start_wal) != 24))
            abort();
    }
    cf_error_clear();
out:
    free(whole);
    free(pieces);
    free(m1);
    free(m2);
    free(data);
    return 0;
}
