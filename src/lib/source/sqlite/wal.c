/*
 * wal.c - the SQLite WAL file format: header and frame parsing, the cumulative checksum,
 * reading the committed frames after a position; and the archive object that carries
 * shipped frames (encode, and a decode that re-checks every frame).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source/sqlite/sqlite_src.h"

static uint32_t word(uint32_t magic, const uint8_t *p)
{
    return magic == CF_SQ_WAL_MAGIC_BE ? cf_sq__be32(p) : cf_le32_get(p);
}

void cf_sq__cksum(uint32_t magic, const uint8_t *data, size_t n, const uint32_t in[2],
                  uint32_t out[2])
{
    uint32_t s0 = in[0], s1 = in[1];
    for (size_t i = 0; i + 8 <= n; i += 8) {
        s0 += word(magic, data + i) + s1;
        s1 += word(magic, data + i + 4) + s0;
    }
    out[0] = s0;
    out[1] = s1;
}

bool cf_sq__walhdr_parse(cf_sq__walhdr *out, const uint8_t raw[CF_SQ_WAL_HDR])
{
    memset(out, 0, sizeof(*out));
    memcpy(out->raw, raw, CF_SQ_WAL_HDR);
    out->magic = cf_sq__be32(raw);
    out->version = cf_sq__be32(raw + 4);
    out->page_size = cf_sq__be32(raw + 8);
    out->ckpt_seq = cf_sq__be32(raw + 12);
    out->salt1 = cf_sq__be32(raw + 16);
    out->salt2 = cf_sq__be32(raw + 20);
    out->cksum1 = cf_sq__be32(raw + 24);
    out->cksum2 = cf_sq__be32(raw + 28);
    if (out->magic != CF_SQ_WAL_MAGIC_LE && out->magic != CF_SQ_WAL_MAGIC_BE)
        return false;
    if (out->version != 3007000u)
        return false;
    if (out->page_size == 1) /* 65536 is stored as 1 in the database header, not here */
        out->page_size = 65536;
    if (out->page_size < 512 || out->page_size > 65536 ||
        (out->page_size & (out->page_size - 1)) != 0)
        return false;
    uint32_t zero[2] = {0, 0}, ck[2];
    cf_sq__cksum(out->magic, raw, 24, zero, ck);
    return ck[0] == out->cksum1 && ck[1] == out->cksum2;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

int cf_sq__walhdr_read(cf_sq__walhdr *out, bool *present, int fd, const char *path)
{
    uint8_t raw[CF_SQ_WAL_HDR];
    size_t got = 0;
    *present = false;
    memset(out, 0, sizeof(*out));
    int e = pread_full(fd, raw, sizeof(raw), 0, &got);
    if (e)
        return cf_error_set(CF_EIO, -e, "unable to read WAL file '%s': %s", path, strerror(-e));
    if (got < sizeof(raw))
        return 0;
    if (!cf_sq__walhdr_parse(out, raw))
        return 0; /* a header being written, or none yet: no frames to read */
    *present = true;
    return 0;
}

static uint64_t frame_off(const cf_sq__walhdr *h, uint32_t n)
{
    return CF_SQ_WAL_HDR + (uint64_t)(n - 1) * (CF_SQ_FRAME_HDR + h->page_size);
}

bool cf_sq__frame_cksum(int fd, const cf_sq__walhdr *h, uint32_t n, uint32_t out[2])
{
    uint8_t fh[CF_SQ_FRAME_HDR];
    size_t got = 0;
    if (n == 0 || pread_full(fd, fh, sizeof(fh), frame_off(h, n), &got) || got < sizeof(fh))
        return false;
    if (cf_sq__be32(fh + 8) != h->salt1 || cf_sq__be32(fh + 12) != h->salt2)
        return false;
    out[0] = cf_sq__be32(fh + 16);
    out[1] = cf_sq__be32(fh + 20);
    return true;
}

int cf_sq__wal_scan(cf_sq__scan *out, int fd, const char *path, const cf_sq__walhdr *h,
                    uint32_t after, const uint32_t cksum[2], size_t max)
{
    size_t fsz = CF_SQ_FRAME_HDR + h->page_size;
    uint8_t *fr = cf_malloc(fsz);
    int rc = 0;
    uint32_t ck[2] = {cksum[0], cksum[1]};
    size_t committed_len = 0;
    memset(out, 0, sizeof(*out));
    cf_buf_init(&out->frames, max);
    out->first = after + 1;
    out->last = after;
    out->cksum_in[0] = out->cksum_out[0] = cksum[0];
    out->cksum_in[1] = out->cksum_out[1] = cksum[1];
    if (!fr)
        return CF_ENOMEM;
    uint32_t nframes = 0, ncommits = 0;
    for (uint32_t n = after + 1; n != 0; n++) {
        size_t got = 0;
        int e = pread_full(fd, fr, fsz, frame_off(h, n), &got);
        if (e) {
            rc = cf_error_set(CF_EIO, -e, "unable to read WAL file '%s': %s", path, strerror(-e));
            break;
        }
        if (got < fsz)
            break; /* the end, or a frame being written */
        if (cf_sq__be32(fr + 8) != h->salt1 || cf_sq__be32(fr + 12) != h->salt2 ||
            cf_sq__be32(fr) == 0)
            break; /* left over from before the last reset */
        uint32_t nck[2];
        cf_sq__cksum(h->magic, fr, 8, ck, nck);
        cf_sq__cksum(h->magic, fr + CF_SQ_FRAME_HDR, h->page_size, nck, nck);
        if (nck[0] != cf_sq__be32(fr + 16) || nck[1] != cf_sq__be32(fr + 20))
            break;
        ck[0] = nck[0];
        ck[1] = nck[1];
        if (max && (rc = cf_buf_append(&out->frames, fr, fsz))) {
            rc = cf_error_wrap(rc, "too many WAL frames to ship at once from '%s'", path);
            break;
        }
        nframes++;
        uint32_t dbsize = cf_sq__be32(fr + 4);
        if (dbsize != 0) {
            ncommits++;
            committed_len = out->frames.len;
            out->last = n;
            out->nframes = nframes;
            out->ncommits = ncommits;
            out->db_pages = dbsize;
            out->cksum_out[0] = ck[0];
            out->cksum_out[1] = ck[1];
        }
    }
    out->frames.len = committed_len; /* frames of a transaction still open stay for later */
    free(fr);
    if (rc)
        cf_buf_free(&out->frames);
    return rc;
}

/* ---- the archive object ---- */

int cf_sq__obj_encode(cf_buf *b, const cf_sq__obj *o, const uint8_t *frames, size_t len)
{
    int rc = 0;
    if ((rc = cf_buf_append(b, CF_SQ_OBJ_MAGIC, 8)) ||
        (rc = cf_buf_put_u32(b, CF_SQ_OBJ_VERSION)) ||
        (rc = cf_buf_put_u32(b, o->page_size)) || (rc = cf_buf_append(b, o->generation, 16)) ||
        (rc = cf_buf_append(b, o->base_id, 64)) || (rc = cf_buf_put_u64(b, o->sequence)) ||
        (rc = cf_buf_put_u32(b, o->epoch)) || (rc = cf_buf_append(b, o->walhdr, CF_SQ_WAL_HDR)) ||
        (rc = cf_buf_put_u32(b, o->first)) || (rc = cf_buf_put_u32(b, o->last)) ||
        (rc = cf_buf_put_u32(b, o->cksum_in[0])) || (rc = cf_buf_put_u32(b, o->cksum_in[1])) ||
        (rc = cf_buf_put_u32(b, o->cksum_out[0])) || (rc = cf_buf_put_u32(b, o->cksum_out[1])) ||
        (rc = cf_buf_put_u32(b, o->db_pages)) || (rc = cf_buf_put_u32(b, o->nframes)) ||
        (rc = cf_buf_put_u32(b, o->ncommits)) ||
        (rc = cf_buf_put_u64(b, (uint64_t)o->prev_time_ns)) ||
        (rc = cf_buf_put_u64(b, (uint64_t)o->time_ns)))
        return rc;
    return cf_buf_append(b, frames, len);
}

static bool hexstr(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

int cf_sq__obj_decode(cf_sq__obj *o, const uint8_t *data, size_t len, const char *name)
{
    cf_rd r;
    memset(o, 0, sizeof(*o));
    cf_rd_init(&r, data, len);
    const uint8_t *magic = cf_rd_bytes(&r, 8);
    uint32_t version = cf_rd_u32(&r);
    o->page_size = cf_rd_u32(&r);
    const uint8_t *gen = cf_rd_bytes(&r, 16);
    const uint8_t *base = cf_rd_bytes(&r, 64);
    o->sequence = cf_rd_u64(&r);
    o->epoch = cf_rd_u32(&r);
    const uint8_t *wh = cf_rd_bytes(&r, CF_SQ_WAL_HDR);
    o->first = cf_rd_u32(&r);
    o->last = cf_rd_u32(&r);
    o->cksum_in[0] = cf_rd_u32(&r);
    o->cksum_in[1] = cf_rd_u32(&r);
    o->cksum_out[0] = cf_rd_u32(&r);
    o->cksum_out[1] = cf_rd_u32(&r);
    o->db_pages = cf_rd_u32(&r);
    o->nframes = cf_rd_u32(&r);
    o->ncommits = cf_rd_u32(&r);
    o->prev_time_ns = (int64_t)cf_rd_u64(&r);
    o->time_ns = (int64_t)cf_rd_u64(&r);
    if (r.err || memcmp(magic, CF_SQ_OBJ_MAGIC, 8) != 0)
        return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: bad header",
                            name);
    if (version != CF_SQ_OBJ_VERSION)
        return cf_error_set(CF_EUNSUPPORTED, 0, "shipped WAL frames '%s' have format version %u",
                            name, version);
    memcpy(o->generation, gen, 16);
    memcpy(o->base_id, base, 64);
    memcpy(o->walhdr, wh, CF_SQ_WAL_HDR);
    cf_sq__walhdr h;
    size_t fsz = CF_SQ_FRAME_HDR + (size_t)o->page_size, need;
    if (!hexstr(o->generation, 16) || !hexstr(o->base_id, 64) ||
        !cf_sq__walhdr_parse(&h, o->walhdr) || h.page_size != o->page_size || o->nframes == 0 ||
        o->first == 0 || o->last < o->first || o->last - o->first + 1 != o->nframes ||
        !cf_mul_ok(fsz, o->nframes, &need) || need != cf_rd_left(&r))
        return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: inconsistent "
                            "header", name);
    o->magic = h.magic;
    o->salt1 = h.salt1;
    o->salt2 = h.salt2;
    o->ckpt_seq = h.ckpt_seq;
    o->frames = data + r.pos;
    if (o->first == 1 && (o->cksum_in[0] != h.cksum1 || o->cksum_in[1] != h.cksum2))
        return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: the first "
                            "frame does not follow the WAL header", name);
    /* every frame: this WAL's salts, the checksum chain, the last one a commit */
    uint32_t ck[2] = {o->cksum_in[0], o->cksum_in[1]};
    uint32_t ncommits = 0;
    for (uint32_t i = 0; i < o->nframes; i++) {
        const uint8_t *f = o->frames + (size_t)i * fsz;
        if (cf_sq__be32(f + 8) != h.salt1 || cf_sq__be32(f + 12) != h.salt2 || cf_sq__be32(f) == 0)
            return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: frame %u "
                                "is not of this WAL", name, o->first + i);
        cf_sq__cksum(h.magic, f, 8, ck, ck);
        cf_sq__cksum(h.magic, f + CF_SQ_FRAME_HDR, o->page_size, ck, ck);
        if (ck[0] != cf_sq__be32(f + 16) || ck[1] != cf_sq__be32(f + 20))
            return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: checksum "
                                "mismatch in frame %u", name, o->first + i);
        if (cf_sq__be32(f + 4) != 0)
            ncommits++;
    }
    const uint8_t *lastf = o->frames + (size_t)(o->nframes - 1) * fsz;
    if (ck[0] != o->cksum_out[0] || ck[1] != o->cksum_out[1] || ncommits != o->ncommits ||
        cf_sq__be32(lastf + 4) == 0 || cf_sq__be32(lastf + 4) != o->db_pages)
        return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: they do not "
                            "end with a commit", name);
    return 0;
}
