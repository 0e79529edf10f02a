/*
 * index.c - the in-memory index (blob id -> pack, offset, length) as an open-addressing hash
 * table, and the index file encoding.
 */
#include <stdio.h>
#include <stdlib.h>

#include "repo/repo.h"

#define IX_MAGIC "CFIX"
#define IX_ENTRY_SIZE 50

void cf_index__init(cf_index *ix) { memset(ix, 0, sizeof(*ix)); }

void cf_index__free(cf_index *ix)
{
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
    if ((ix->count + 1) * 10 > ix->cap * 7) {
        int rc = grow_slots(ix);
        if (rc)
            return rc;
    }
    size_t j = id_hash(&e->id) & (ix->cap - 1);
    while (ix->slots[j].used) {
        if (cf_id_eq(&ix->slots[j].id, &e->id))
            return 0;
        j = (j + 1) & (ix->cap - 1);
    }
    ix->slots[j] = *e;
    ix->slots[j].used = 1;
    ix->count++;
    return 0;
}

const cf_index_entry *cf_index__get(const cf_index *ix, const cf_id *id)
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

void cf_index__resolve_pending(cf_index *ix, const cf_id *id, uint32_t pack)
{
    if (!ix->cap)
        return;
    size_t j = id_hash(id) & (ix->cap - 1);
    while (ix->slots[j].used) {
        if (cf_id_eq(&ix->slots[j].id, id)) {
            if (ix->slots[j].pack == CF_INDEX_PENDING)
                ix->slots[j].pack = pack;
            return;
        }
        j = (j + 1) & (ix->cap - 1);
    }
}

bool cf_index__remove(cf_index *ix, const cf_id *id)
{
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
    ix->count--;
    return true;
}

size_t cf_index__drop_pending(cf_index *ix)
{
    size_t dropped = 0;
    /* rebuild: removal during a scan would shift entries past the cursor */
    cf_index_entry *old = ix->slots;
    size_t cap = ix->cap;
    if (!cap)
        return 0;
    cf_index_entry *ns = cf_calloc(cap, sizeof(*ns));
    if (!ns) {
        /* fall back to removing one at a time from the start each time */
        for (bool again = true; again;) {
            again = false;
            for (size_t i = 0; i < ix->cap; i++) {
                if (ix->slots[i].used && ix->slots[i].pack == CF_INDEX_PENDING) {
                    cf_id id = ix->slots[i].id;
                    cf_index__remove(ix, &id);
                    dropped++;
                    again = true;
                    break;
                }
            }
        }
        return dropped;
    }
    ix->slots = ns;
    ix->count = 0;
    for (size_t i = 0; i < cap; i++) {
        if (!old[i].used)
            continue;
        if (old[i].pack == CF_INDEX_PENDING) {
            dropped++;
            continue;
        }
        size_t j = id_hash(&old[i].id) & (cap - 1);
        while (ns[j].used)
            j = (j + 1) & (cap - 1);
        ns[j] = old[i];
        ix->count++;
    }
    free(old);
    return dropped;
}

void cf_index__fill_pending(cf_index *ix, const cf_id *id, uint32_t offset, uint32_t length,
                            uint8_t comp)
{
    if (!ix->cap)
        return;
    size_t j = id_hash(id) & (ix->cap - 1);
    while (ix->slots[j].used) {
        if (cf_id_eq(&ix->slots[j].id, id)) {
            if (ix->slots[j].pack == CF_INDEX_PENDING) {
                ix->slots[j].offset = offset;
                ix->slots[j].length = length;
                ix->slots[j].comp = comp;
            }
            return;
        }
        j = (j + 1) & (ix->cap - 1);
    }
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

int cf_index__encode(cf_buf *out, const cf_index *ix, const cf_id *only_packs, size_t n_only)
{
    int rc = 0;
    size_t n = 0;
    cf_index_entry *list = NULL;
    uint32_t *remap = NULL;
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
    for (size_t i = 0; i < ix->cap; i++) {
        const cf_index_entry *e = &ix->slots[i];
        if (e->used && e->pack < ix->npacks && remap[e->pack])
            list[n++] = *e;
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
    cf_id *table = cf_calloc(npk ? npk : 1, sizeof(cf_id));
    if (!table) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ix->npacks; i++)
        if (remap[i])
            table[remap[i] - 1] = ix->packs[i];
    cf_buf_append(out, table, (size_t)npk * 32);
    free(table);
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
    free(list);
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
    if (!magic || memcmp(magic, IX_MAGIC, 4) != 0 || rd.err)
        return cf_error_set(CF_ECORRUPT, 0, "index '%s' is damaged: bad header", name);
    if (ver != 1)
        return cf_error_set(CF_EUNSUPPORTED, 0, "index '%s' has unsupported version %u", name, ver);
    if ((uint64_t)npk * 32 + (uint64_t)n * IX_ENTRY_SIZE != cf_rd_left(&rd))
        return cf_error_set(CF_ECORRUPT, 0, "index '%s' is damaged: size does not match its counts",
                            name);
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
    for (uint32_t i = 0; i < n; i++) {
        cf_index_entry e;
        memset(&e, 0, sizeof(e));
        memcpy(e.id.b, cf_rd_bytes(&rd, 32), 32);
        uint32_t pk = cf_rd_u32(&rd);
        e.offset = cf_rd_u32(&rd);
        e.length = cf_rd_u32(&rd);
        e.raw_len = cf_rd_u32(&rd);
        e.type = cf_rd_u8(&rd);
        e.comp = cf_rd_u8(&rd);
        if (pk >= npk || e.length < CF_SEAL_OVERHEAD || e.type > CF_BLOB_TREE) {
            rc = cf_error_set(CF_ECORRUPT, 0, "index '%s' is damaged: entry %u is invalid", name, i);
            goto out;
        }
        e.pack = map[pk];
        if ((rc = cf_index__add(ix, &e)))
            goto out;
    }
out:
    free(map);
    return rc;
}
