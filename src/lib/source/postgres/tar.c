/*
 * tar.c - the streaming reader of pg_basebackup's tar stream: member headers (checked),
 * backup_label and the tail of backup_manifest captured, and the end of the archive seen.
 */
#include <stdio.h>
#include <string.h>

#include "source/postgres/pg.h"

#define TAR_SIZE_MAX ((uint64_t)INT64_MAX) /* a member's size is an off_t */

static void tar_bad(cf_pg__tar *t, const char *why)
{
    t->corrupt = true;
    snprintf(t->why, sizeof(t->why), "member %llu: %s", (unsigned long long)t->members, why);
    t->capture = 0;
    t->left = t->pad = 0;
}

/* An octal field of n bytes: leading blanks, digits, then NUL or blanks to its end. */
static bool tar_octal(uint64_t *out, const uint8_t *f, size_t n)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && f[i] == ' ')
        i++;
    size_t first = i;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v > (UINT64_MAX >> 3))
            return false;
        v = v << 3 | (uint64_t)(f[i] - '0');
    }
    if (i == first)
        return false;
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != '\0')
            return false;
    *out = v;
    return true;
}

/* The size field: octal, or base-256 (first byte 0x80, big-endian) for 8 GiB and more. */
static bool tar_size(uint64_t *out, const uint8_t *h)
{
    const uint8_t *f = h + 124;
    uint64_t v = 0;
    if (f[0] & 0x80) {
        if (f[0] != 0x80) /* negative, or more than 95 bits */
            return false;
        for (size_t i = 1; i < 12; i++) {
            if (v > (UINT64_MAX >> 8))
                return false;
            v = v << 8 | f[i];
        }
    } else if (!tar_octal(&v, f, 12)) {
        return false;
    }
    if (v > TAR_SIZE_MAX)
        return false;
    *out = v;
    return true;
}

/* The header checksum: the sum of its bytes with the checksum field read as blanks (unsigned,
 * or signed as some old tar programs wrote it). */
static bool tar_checksum_ok(const uint8_t *h)
{
    uint64_t want = 0;
    if (!tar_octal(&want, h + 148, 8))
        return false;
    uint64_t us = 0;
    int64_t ss = 0;
    for (size_t i = 0; i < 512; i++) {
        uint8_t c = i >= 148 && i < 156 ? (uint8_t)' ' : h[i];
        us += c;
        ss += (int8_t)c;
    }
    return want == us || (ss >= 0 && want == (uint64_t)ss);
}

static void tar_header(cf_pg__tar *t)
{
    bool zero = true;
    for (size_t i = 0; i < 512 && zero; i++)
        zero = t->hdr[i] == 0;
    t->capture = 0;
    t->left = t->pad = 0;
    if (zero) {
        t->zero_blocks++;
        return;
    }
    t->members++;
    if (t->zero_blocks >= 2) {
        tar_bad(t, "a header after the end of the archive");
        return;
    }
    t->zero_blocks = 0;
    if (!tar_checksum_ok(t->hdr)) {
        tar_bad(t, "header checksum mismatch");
        return;
    }
    uint64_t size = 0;
    if (!tar_size(&size, t->hdr)) {
        tar_bad(t, "invalid member size");
        return;
    }
    char name[101];
    memcpy(name, t->hdr, 100);
    name[100] = '\0';
    char type = (char)t->hdr[156];
    bool file = type == '0' || type == '\0';
    if (file && t->hdr[345] == '\0' && strcmp(name, "backup_label") == 0) {
        t->capture = 1;
        t->label_len = 0;
        t->label[0] = '\0';
    } else if (file && t->hdr[345] == '\0' && strcmp(name, "backup_manifest") == 0) {
        t->capture = 2;
        t->mtail_len = 0;
        if (t->mtail)
            t->mtail[0] = '\0';
        t->have_manifest = true;
    }
    t->left = size;
    t->pad = (512 - size % 512) % 512;
}

static void tar_data(cf_pg__tar *t, const uint8_t *p, size_t n)
{
    if (t->capture == 1) {
        size_t room = sizeof(t->label) - 1 - t->label_len;
        size_t k = n < room ? n : room;
        memcpy(t->label + t->label_len, p, k);
        t->label_len += k;
        t->label[t->label_len] = '\0';
    } else if (t->capture == 2 && t->mtail) {
        cf_tail_keep(t->mtail, &t->mtail_len, CF_PG_MTAIL_MAX, p, n);
        t->mtail[t->mtail_len] = '\0';
    }
}

void cf_pg__tar_init(cf_pg__tar *t, char *mtail)
{
    memset(t, 0, sizeof(*t));
    t->mtail = mtail;
    if (mtail)
        mtail[0] = '\0';
}

void cf_pg__tar_feed(cf_pg__tar *t, const uint8_t *p, size_t n)
{
    while (n > 0 && !t->corrupt) {
        if (t->left > 0) {
            size_t k = (uint64_t)n < t->left ? n : (size_t)t->left;
            tar_data(t, p, k);
            t->left -= k;
            p += k;
            n -= k;
        } else if (t->pad > 0) {
            size_t k = (uint64_t)n < t->pad ? n : (size_t)t->pad;
            t->pad -= k;
            p += k;
            n -= k;
        } else {
            size_t k = 512 - t->hlen < n ? 512 - t->hlen : n;
            memcpy(t->hdr + t->hlen, p, k);
            t->hlen += k;
            p += k;
            n -= k;
            if (t->hlen == 512) {
                t->hlen = 0;
                tar_header(t);
            }
        }
    }
}

int cf_pg__tar_end(const cf_pg__tar *t)
{
    if (t->corrupt)
        return cf_error_set(CF_ECORRUPT, 0, "the tar stream is not valid: %s", t->why);
    if (t->zero_blocks < 2 || t->left || t->pad || t->hlen)
        return cf_error_set(CF_ECORRUPT, 0, "the tar stream ended early");
    return 0;
}
