/*
 * index.c - the in-memory index (blob id -> pack, offset, length, type, compression).
 * Entries loaded from index files form a sorted array of 48-byte records (the base), found
 * through a directory of 65536 buckets on the first two id bytes and a short binary search;
 * entries this handle adds go to an open-addressing table (the overlay). Also the index file
 * encoding. Memory model: docs/internals/index.md.
 */
#include <stdio.h>
#include <stdlib.h>

#include "repo/repo.h"

#define IX_MAGIC "CFIX"
#define IX_ENTRY_SIZE 50
#define DIR_BUCKETS 65536

static _Thread_local cf_index_entry tl_result;

void cf_index__init(cf_index *ix) { memset(ix, 0, sizeof(*ix)); }

void cf_index__free(cf_index *ix)
{
    free(ix->base);
    free(ix->dir);
    free(ix->slots);
    free(ix->packs);
    free(ix->pack_slots);
    memset(ix, 0, sizeof(*ix));
}

static inline uint64_t id_hash(const cf_id *id)
{
    /* ids are keyed hashes: their bytes are already uniformly distributed */
    return cf_le64_get(id->b);
}

static inline uint32_t bucket_of(const uint8_t *id) { return (uint32_t)id[0] << 8 | id[1]; }

static void unpack(cf_index_entry *e, const cf_ix_packed *p)
{
    memset(e, 0, sizeof(*e));
    memcpy(e->id.b, p->id, CF_ID_LEN);
    e->pack = p->pack_tc & CF_IX_PACK_MASK;
    e->type = (uint8_t)((p->pack_tc >> 28) & 1);
    e->comp = (uint8_t)(p->pack_tc >> 29);
    e->offset = p->offset;
    e->length = p->length;
    e->raw_len = p->raw_len;
    e->used = 1;
}

/* Order: id, then location, so the copies of a blob stored twice sit together in a fixed
 * order and the first one is the one lookups return. */
static inline int cmp_loc(const cf_ix_packed *x, const cf_ix_packed *y)
{
    int c = memcmp(x->id, y->id, CF_ID_LEN);
    if (c)
        return c;
    uint32_t px = x->pack_tc & CF_IX_PACK_MASK, py = y->pack_tc & CF_IX_PACK_MASK;
    if (px != py)
        return px < py ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_packed(const void *a, const void *b) { return cmp_loc(a, b); }

/* Sort base by id in place: distribute by the first two bytes (American flag sort: one
 * counting pass, then cycles of swaps), then sort each of the 65536 buckets, which hold about
 * n/65536 entries each. Fills dir with the bucket starts. */
static void radix_sort(cf_ix_packed *v, size_t n, uint32_t *dir)
{
    memset(dir, 0, (DIR_BUCKETS + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++)
        dir[bucket_of(v[i].id) + 1]++;
    for (uint32_t b = 0; b < DIR_BUCKETS; b++)
        dir[b + 1] += dir[b];
    /* next[b]: where the next entry of bucket b goes */
    uint32_t *next = malloc(DIR_BUCKETS * sizeof(uint32_t));
    if (!next) {
        qsort(v, n, sizeof(cf_ix_packed), cmp_packed);
        return;
    }
    memcpy(next, dir, DIR_BUCKETS * sizeof(uint32_t));
    for (uint32_t b = 0; b < DIR_BUCKETS; b++) {
        while (next[b] < dir[b + 1]) {
            cf_ix_packed cur = v[next[b]];
            uint32_t cb = bucket_of(cur.id);
            while (cb != b) {
                cf_ix_packed tmp = v[next[cb]];
                v[next[cb]++] = cur;
                cur = tmp;
                cb = bucket_of(cur.id);
            }
            v[next[b]++] = cur;
        }
    }
    free(next);
    for (uint32_t b = 0; b < DIR_BUCKETS; b++) {
        size_t lo = dir[b], hi = dir[b + 1];
        /* insertion sort for the small buckets this usually gives */
        if (hi - lo > 32) {
            qsort(v + lo, hi - lo, sizeof(cf_ix_packed), cmp_packed);
            continue;
        }
        for (size_t i = lo + 1; i < hi; i++) {
            cf_ix_packed x = v[i];
            size_t j = i;
            while (j > lo && cmp_loc(&v[j - 1], &x) > 0) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
    }
}

int cf_index__seal(cf_index *ix)
{
    if (ix->nsorted == ix->nbase)
        return 0;
    if (!ix->dir && !(ix->dir = cf_malloc((DIR_BUCKETS + 1) * sizeof(uint32_t))))
        return CF_ENOMEM;
    if (ix->nbase > UINT32_MAX)
        return cf_error_set(CF_ENOMEM, 0, "index of %zu entries is too large", ix->nbase);
    radix_sort(ix->base, ix->nbase, ix->dir);
    /* keep the first of equal ids: qsort is not stable, so prefer live entries, then any */
    /* the same record loaded twice (from two index files) is kept once; two different
     * locations of one blob are both kept, so that prune can account for the extra copy */
    size_t k = 0;
    for (size_t i = 0; i < ix->nbase; i++) {
        if (k > 0 && cmp_loc(&ix->base[k - 1], &ix->base[i]) == 0)
            continue;
        ix->base[k++] = ix->base[i];
    }
    ix->nbase = k;
    ix->nsorted = k;
    /* give back what doubling reserved beyond the entries */
    if (ix->base_cap > k + k / 16 + 1024) {
        cf_ix_packed *nb = realloc(ix->base, (k ? k : 1) * sizeof(*nb));
        if (nb) {
            ix->base = nb;
            ix->base_cap = k ? k : 1;
        }
    }
    size_t live = 0;
    for (size_t i = 0; i < k; i++)
        live += (ix->base[i].pack_tc & CF_IX_PACK_MASK) != CF_IX_DELETED;
    ix->count = live + ix->overlay_count;
    ix->base_live = live;
    /* directory: dir[b] = first entry whose bucket >= b */
    size_t j = 0;
    for (uint32_t b = 0; b < DIR_BUCKETS; b++) {
        while (j < k && bucket_of(ix->base[j].id) < b)
            j++;
        ix->dir[b] = (uint32_t)j;
    }
    ix->dir[DIR_BUCKETS] = (uint32_t)k;
    /* an overlay entry that now also exists in the base: the base copy came first from
     * storage, but the overlay one is what this handle wrote; both are valid locations, and
     * lookups prefer the overlay */
    return 0;
}

static cf_ix_packed *base_find(cf_index *ix, const cf_id *id)
{
    if (cf_index__seal(ix) || ix->nsorted == 0)
        return NULL;
    uint32_t b = bucket_of(id->b);
    size_t lo = ix->dir[b], hi = ix->dir[b + 1];
    /* the first record with this id that is not removed */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(ix->base[mid].id, id->b, CF_ID_LEN) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < ix->nsorted && memcmp(ix->base[i].id, id->b, CF_ID_LEN) == 0; i++)
        if ((ix->base[i].pack_tc & CF_IX_PACK_MASK) != CF_IX_DELETED)
            return &ix->base[i];
    return NULL;
}

static cf_index_entry *overlay_find(const cf_index *ix, const cf_id *id)
{
    if (!ix->cap)
        return NULL;
    size_t j = id_hash(id) & (ix->cap - 1);
    while (ix->slots[j].used) {
        if (cf_id_eq(&ix->slots[j].id, id))
            return &ix->slots[j];
        j = (j + 1) & (ix->cap - 1);
    }
    return NULL;
}

static int grow_slots(cf_index *ix)
{
    size_t ncap = ix->cap ? ix->cap * 2 : 1024;
    cf_index_entry *ns = cf_calloc(ncap, sizeof(*ns));
    if (!ns)
        return CF_ENOMEM;
    for (size_t i = 0; i < ix->cap; i++) {
        if (!ix->slots[i].used)
            continue;
        size_t j = id_hash(&ix->slots[i].id) & (ncap - 1);
        while (ns[j].used)
            j = (j + 1) & (ncap - 1);
        ns[j] = ix->slots[i];
    }
    free(ix->slots);
    ix->slots = ns;
    ix->cap = ncap;
    return 0;
}

int cf_index__add(cf_index *ix, const cf_index_entry *e)
{
    if (overlay_find(ix, &e->id) || base_find(ix, &e->id))
        return 0;
    if ((ix->overlay_count + 1) * 10 > ix->cap * 7) {
        int rc = grow_slots(ix);
        if (rc)
            return rc;
    }
    size_t j = id_hash(&e->id) & (ix->cap - 1);
    while (ix->slots[j].used)
        j = (j + 1) & (ix->cap - 1);
    ix->slots[j] = *e;
    ix->slots[j].used = 1;
    ix->overlay_count++;
    ix->count++;
    return 0;
}

const cf_index_entry *cf_index__get(cf_index *ix, const cf_id *id)
{
    cf_index_entry *o = overlay_find(ix, id);
    if (o)
        return o;
    cf_ix_packed *p = base_find(ix, id);
    if (!p)
        return NULL;
    unpack(&tl_result, p);
    return &tl_result;
}

void cf_index__resolve_pending(cf_index *ix, const cf_id *id, uint32_t pack)
{
    cf_index_entry *e = overlay_find(ix, id);
    if (e && e->pack == CF_INDEX_PENDING)
        e->pack = pack;
}

void cf_index__fill_pending(cf_index *ix, const cf_id *id, uint32_t offset, uint32_t length,
                            uint8_t comp)
{
    cf_index_entry *e = overlay_find(ix, id);
    if (e && e->pack == CF_INDEX_PENDING) {
        e->offset = offset;
        e->length = length;
        e->comp = comp;
    }
}

bool cf_index__remove(cf_index *ix, const cf_id *id)
{
    cf_ix_packed *p = base_find(ix, id);
    if (p) {
        p->pack_tc = (p->pack_tc & ~CF_IX_PACK_MASK) | CF_IX_DELETED;
        ix->base_live--;
        ix->count--;
        return true;
    }
    if (!ix->cap)
        return false;
    size_t mask = ix->cap - 1;
    size_t j = id_hash(id) & mask;
    while (ix->slots[j].used && !cf_id_eq(&ix->slots[j].id, id))
        j = (j + 1) & mask;
    if (!ix->slots[j].used)
        return false;
    /* backward-shift deletion keeps every probe sequence unbroken without tombstones */
    size_t hole = j;
    size_t k = (j + 1) & mask;
    while (ix->slots[k].used) {
        size_t home = id_hash(&ix->slots[k].id) & mask;
        /* move k into the hole if its home is not in (hole, k] cyclically */
        bool between = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
        if (!between) {
            ix->slots[hole] = ix->slots[k];
            hole = k;
        }
        k = (k + 1) & mask;
    }
    memset(&ix->slots[hole], 0, sizeof(ix->slots[hole]));
    ix->overlay_count--;
    ix->count--;
    return true;
}

size_t cf_index__drop_pending(cf_index *ix)
{
    /* collect first: removal shifts entries, so removing while scanning would skip some */
    size_t n = 0;
    for (size_t i = 0; i < ix->cap; i++)
        n += ix->slots[i].used && ix->slots[i].pack == CF_INDEX_PENDING;
    if (n == 0)
        return 0;
    cf_id *ids = malloc(n * sizeof(*ids));
    size_t k = 0;
    if (ids) {
        for (size_t i = 0; i < ix->cap; i++)
            if (ix->slots[i].used && ix->slots[i].pack == CF_INDEX_PENDING)
                ids[k++] = ix->slots[i].id;
        for (size_t i = 0; i < k; i++)
            cf_index__remove(ix, &ids[i]);
        free(ids);
        return k;
    }
    /* no memory for the list: one at a time, rescanning after each removal */
    for (bool again = true; again;) {
        again = false;
        for (size_t i = 0; i < ix->cap; i++) {
            if (ix->slots[i].used && ix->slots[i].pack == CF_INDEX_PENDING) {
                cf_id id = ix->slots[i].id;
                cf_index__remove(ix, &id);
                k++;
                again = true;
                break;
            }
        }
    }
    return k;
}

size_t cf_index__count(cf_index *ix)
{
    cf_index__seal(ix);
    return ix->count;
}

size_t cf_index__positions(cf_index *ix)
{
    cf_index__seal(ix);
    return ix->nbase + ix->cap;
}

bool cf_index__at(cf_index *ix, size_t pos, cf_index_entry *out)
{
    if (pos < ix->nbase) {
        if ((ix->base[pos].pack_tc & CF_IX_PACK_MASK) == CF_IX_DELETED)
            return false;
        unpack(out, &ix->base[pos]);
        return true;
    }
    pos -= ix->nbase;
    if (pos >= ix->cap || !ix->slots[pos].used)
        return false;
    *out = ix->slots[pos];
    return true;
}

size_t cf_index__memory(const cf_index *ix)
{
    return ix->base_cap * sizeof(cf_ix_packed) + (ix->dir ? (DIR_BUCKETS + 1) * sizeof(uint32_t) : 0) +
           ix->cap * sizeof(cf_index_entry) + ix->packs_cap * sizeof(cf_id) +
           ix->pack_slots_cap * sizeof(uint32_t);
}

static int find_pack(const cf_index *ix, const cf_id *pack, size_t *slot)
{
    if (!ix->pack_slots_cap)
        return -1;
    size_t j = id_hash(pack) & (ix->pack_slots_cap - 1);
    while (ix->pack_slots[j]) {
        if (cf_id_eq(&ix->packs[ix->pack_slots[j] - 1], pack)) {
            *slot = j;
            return (int)(ix->pack_slots[j] - 1);
        }
        j = (j + 1) & (ix->pack_slots_cap - 1);
    }
    *slot = j;
    return -1;
}

bool cf_index__has_pack(const cf_index *ix, const cf_id *pack)
{
    size_t slot;
    return find_pack(ix, pack, &slot) >= 0;
}

int cf_index__pack_no(cf_index *ix, const cf_id *pack, uint32_t *out)
{
    size_t slot = 0;
    int found = find_pack(ix, pack, &slot);
    if (found >= 0) {
        *out = (uint32_t)found;
        return 0;
    }
    if (ix->npacks >= CF_IX_DELETED)
        return cf_error_set(CF_ENOMEM, 0, "too many packs");
    if ((ix->npacks + 1) * 2 > ix->pack_slots_cap) {
        size_t ncap = ix->pack_slots_cap ? ix->pack_slots_cap * 2 : 256;
        uint32_t *ns = cf_calloc(ncap, sizeof(*ns));
        if (!ns)
            return CF_ENOMEM;
        for (size_t i = 0; i < ix->npacks; i++) {
            size_t j = id_hash(&ix->packs[i]) & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = (uint32_t)(i + 1);
        }
        free(ix->pack_slots);
        ix->pack_slots = ns;
        ix->pack_slots_cap = ncap;
        find_pack(ix, pack, &slot);
    }
    if (ix->npacks == ix->packs_cap) {
        size_t ncap = ix->packs_cap ? ix->packs_cap * 2 : 64;
        cf_id *np = cf_realloc(ix->packs, ncap * sizeof(*np));
        if (!np)
            return CF_ENOMEM;
        ix->packs = np;
        ix->packs_cap = ncap;
    }
    ix->packs[ix->npacks] = *pack;
    ix->pack_slots[slot] = (uint32_t)(ix->npacks + 1);
    *out = (uint32_t)ix->npacks;
    ix->npacks++;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    return cf_id_cmp(&((const cf_index_entry *)a)->id, &((const cf_index_entry *)b)->id);
}

int cf_index__encode(cf_buf *out, cf_index *ix, const cf_id *only_packs, size_t n_only)
{
    int rc = 0;
    size_t n = 0;
    cf_index_entry *list = NULL;
    uint32_t *remap = NULL;
    cf_id *table = NULL;
    if ((rc = cf_index__seal(ix)))
        return rc;
    /* map pack number -> position in this file's pack table (1-based; 0 = excluded) */
    remap = cf_calloc(ix->npacks ? ix->npacks : 1, sizeof(*remap));
    if (!remap)
        return CF_ENOMEM;
    uint32_t npk = 0;
    if (only_packs) {
        for (size_t i = 0; i < n_only; i++) {
            size_t slot;
            int no = find_pack(ix, &only_packs[i], &slot);
            if (no >= 0 && !remap[no])
                remap[no] = ++npk;
        }
    } else {
        for (size_t i = 0; i < ix->npacks; i++)
            remap[i] = ++npk;
    }
    list = cf_malloc((ix->count ? ix->count : 1) * sizeof(*list));
    if (!list) {
        rc = CF_ENOMEM;
        goto out;
    }
    size_t npos = cf_index__positions(ix);
    for (size_t i = 0; i < npos && n < ix->count; i++) {
        cf_index_entry e;
        if (cf_index__at(ix, i, &e) && e.pack < ix->npacks && remap[e.pack])
            list[n++] = e;
    }
    qsort(list, n, sizeof(*list), cmp_entry);
    if ((rc = cf_buf_reserve(out, 16 + (size_t)npk * 32 + n * IX_ENTRY_SIZE)))
        goto out;
    cf_buf_append(out, IX_MAGIC, 4);
    cf_buf_put_u8(out, 1);
    cf_buf_append(out, "\0\0\0", 3);
    cf_buf_put_u32(out, npk);
    cf_buf_put_u32(out, (uint32_t)n);
    /* pack table in remap order */
    table = cf_calloc(npk ? npk : 1, sizeof(cf_id));
    if (!table) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ix->npacks; i++)
        if (remap[i])
            table[remap[i] - 1] = ix->packs[i];
    cf_buf_append(out, table, (size_t)npk * 32);
    for (size_t i = 0; i < n; i++) {
        const cf_index_entry *e = &list[i];
        cf_buf_append(out, e->id.b, 32);
        cf_buf_put_u32(out, remap[e->pack] - 1);
        cf_buf_put_u32(out, e->offset);
        cf_buf_put_u32(out, e->length);
        cf_buf_put_u32(out, e->raw_len);
        cf_buf_put_u8(out, e->type);
        cf_buf_put_u8(out, e->comp);
    }
out:
    free(table);
    free(list);
    free(remap);
    return rc;
}

int cf_index__encode_list(cf_buf *out, const cf_index *ix, cf_index_entry *list, size_t n)
{
    int rc = 0;
    uint32_t *remap = cf_calloc(ix->npacks ? ix->npacks : 1, sizeof(*remap));
    cf_id *table = NULL;
    if (!remap)
        return CF_ENOMEM;
    uint32_t npk = 0;
    for (size_t i = 0; i < n; i++) {
        if (list[i].pack >= ix->npacks) {
            rc = cf_error_set(CF_EINVAL, 0, "index entry names pack %u of %zu", list[i].pack,
                              ix->npacks);
            goto out;
        }
        if (!remap[list[i].pack])
            remap[list[i].pack] = ++npk;
    }
    qsort(list, n, sizeof(*list), cmp_entry);
    table = cf_calloc(npk ? npk : 1, sizeof(cf_id));
    if (!table || (rc = cf_buf_reserve(out, 16 + (size_t)npk * 32 + n * IX_ENTRY_SIZE))) {
        rc = rc ? rc : CF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ix->npacks; i++)
        if (remap[i])
            table[remap[i] - 1] = ix->packs[i];
    cf_buf_append(out, IX_MAGIC, 4);
    cf_buf_put_u8(out, 1);
    cf_buf_append(out, "\0\0\0", 3);
    cf_buf_put_u32(out, npk);
    cf_buf_put_u32(out, (uint32_t)n);
    cf_buf_append(out, table, (size_t)npk * 32);
    for (size_t i = 0; i < n; i++) {
        const cf_index_entry *e = &list[i];
        cf_buf_append(out, e->id.b, 32);
        cf_buf_put_u32(out, remap[e->pack] - 1);
        cf_buf_put_u32(out, e->offset);
        cf_buf_put_u32(out, e->length);
        cf_buf_put_u32(out, e->raw_len);
        cf_buf_put_u8(out, e->type);
        cf_buf_put_u8(out, e->comp);
    }
out:
    free(table);
    free(remap);
    return rc;
}

int cf_index__decode(cf_index *ix, const uint8_t *data, size_t len, const char *name)
{
    cf_rd rd;
    cf_rd_init(&rd, data, len);
    const uint8_t *magic = cf_rd_bytes(&rd, 4);
    uint8_t ver = cf_rd_u8(&rd);
    cf_rd_bytes(&rd, 3);
    uint32_t npk = cf_rd_u32(&rd);
    uint32_t n = cf_rd_u32(&rd);
    if (!magic || rd.err || memcmp(magic, IX_MAGIC, 4) != 0)
        return cf_error_set(CF_ECORRUPT, 0, "index '%s' is damaged: bad header", name);
    if (ver != 1)
        return cf_error_set(CF_EUNSUPPORTED, 0, "index '%s' has unsupported version %u", name, ver);
    if ((uint64_t)npk * 32 + (uint64_t)n * IX_ENTRY_SIZE != cf_rd_left(&rd))
        return cf_error_set(CF_ECORRUPT, 0, "index '%s' is damaged: size does not match its counts",
                            name);
    /* validate every entry before touching the index, so a bad file adds nothing */
    cf_rd check = rd;
    cf_rd_bytes(&check, (size_t)npk * 32);
    for (uint32_t i = 0; i < n; i++) {
        cf_rd_bytes(&check, 32);
        uint32_t pk = cf_rd_u32(&check);
        cf_rd_u32(&check);
        uint32_t length = cf_rd_u32(&check);
        cf_rd_u32(&check);
        uint8_t type = cf_rd_u8(&check);
        uint8_t comp = cf_rd_u8(&check);
        if (pk >= npk || length < CF_SEAL_OVERHEAD || type > CF_BLOB_TREE || comp > 7)
            return cf_error_set(CF_ECORRUPT, 0, "index '%s' is damaged: entry %u is invalid", name, i);
    }
    uint32_t *map = cf_malloc((npk ? npk : 1) * sizeof(uint32_t));
    if (!map)
        return CF_ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < npk; i++) {
        cf_id p;
        memcpy(p.b, cf_rd_bytes(&rd, 32), 32);
        if ((rc = cf_index__pack_no(ix, &p, &map[i])))
            goto out;
    }
    if (ix->nbase + n > ix->base_cap) {
        size_t ncap = ix->base_cap ? ix->base_cap : 1024;
        while (ncap < ix->nbase + n)
            ncap *= 2;
        cf_ix_packed *nb = cf_realloc(ix->base, ncap * sizeof(*nb));
        if (!nb) {
            rc = CF_ENOMEM;
            goto out;
        }
        ix->base = nb;
        ix->base_cap = ncap;
    }
    for (uint32_t i = 0; i < n; i++) {
        cf_ix_packed *e = &ix->base[ix->nbase++];
        memcpy(e->id, cf_rd_bytes(&rd, 32), 32);
        uint32_t pk = cf_rd_u32(&rd);
        e->offset = cf_rd_u32(&rd);
        e->length = cf_rd_u32(&rd);
        e->raw_len = cf_rd_u32(&rd);
        uint32_t type = cf_rd_u8(&rd);
        uint32_t comp = cf_rd_u8(&rd);
        e->pack_tc = map[pk] | type << 28 | comp << 29;
    }
    /* counted now; seal() recounts once duplicates are merged */
    ix->count += n;
    ix->base_live += n;
out:
    free(map);
    return rc;
}
