/*
 * rewrite.c - re-encryption after a key rotation: repack old-generation packs (all older
 * generations, or one), re-seal the index, snapshot documents and archive objects under the
 * current generation, then retire the generations nothing uses any more from the key slot in
 * use.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ops/ops.h"

/* Re-seal every snapshot document sealed under an older generation (only: just that one,
 * unless it is UINT32_MAX). */
static int reseal_snapshots(cf_repo *r, uint32_t only, uint64_t *count)
{
    cf_snapshot **list = NULL;
    size_t n = 0;
    cf_buf raw, doc;
    cf_buf_init(&raw, 0);
    cf_buf_init(&doc, 0);
    int rc = cf_snapshot_list(&list, &n, r, NULL);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[128];
        snprintf(path, sizeof(path), "snapshots/%s", list[i]->id);
        uint8_t *data = NULL;
        size_t len = 0;
        if ((rc = cf_storage_get(r->st, path, 0, 0, &data, &len)))
            break;
        uint32_t gen = len >= 16 ? cf_le32_get(data + 12) : 0;
        free(data);
        if (gen == r->mk.gen || (only != UINT32_MAX && gen != only))
            continue;
        cf_buf_reset(&doc);
        if ((rc = cf_snapshot__encode(&doc, list[i])))
            break;
        char id[65];
        /* the new document first, then the old one goes: a crash leaves a duplicate, never
         * a loss */
        if ((rc = cf_repo__put_object(r, "snapshots", CF_OBJ_SNAPSHOT, doc.data, doc.len, id)))
            break;
        if (strcmp(id, list[i]->id) != 0) {
            rc = cf_storage_remove(r->st, path);
            if (rc == CF_ENOTFOUND)
                rc = 0;
        }
        (*count)++;
    }
    cf_snapshot_list_free(list, n);
    cf_buf_free(&raw);
    cf_buf_free(&doc);
    return rc;
}

int cf_rewrite_reencrypt(cf_repo *r, const cf_credential *cred, const cf_prune_opts *opts,
                         cf_rewrite_stats *out)
{
    cf_rewrite_stats st;
    memset(&st, 0, sizeof(st));
    cf_prune_opts po = opts ? *opts : (cf_prune_opts){.max_unused_percent = -1};
    if (cf_repo__require_admin(r, "rewrite"))
        return CF_EPERM;
    if (po.only_generation && !cf_master__data_key(&r->mk, po.generation))
        return cf_error_set(CF_ENOTFOUND, 0, "the key in use holds no data key generation %u",
                            po.generation);
    if (po.only_generation && po.generation == r->mk.gen) {
        cf_error_set(CF_EINVAL, 0, "generation %u is the current one: there is nothing to "
                     "re-encrypt it to", po.generation);
        cf_error_hint("run 'coffer key rotate' first");
        return CF_EINVAL;
    }
    po.reencrypt = true;
    int rc = cf_repo_lock(r, CF_LOCK_EXCLUSIVE);
    if (rc)
        return rc;
    if ((rc = cf_ops__prune(r, &po, &st.prune, false)))
        goto out;
    if (po.dry_run)
        goto out;
    uint32_t only = po.only_generation ? po.generation : UINT32_MAX;
    if ((rc = reseal_snapshots(r, only, &st.snapshots_resealed)))
        goto out;
    if ((rc = cf_archive__reseal(r, only, &st.archive_resealed)))
        goto out;
    /* nothing needs the re-encrypted generations now: the slot in use drops them, unless
     * another key slot still writes under one */
    uint32_t gens[CF_MAX_GENERATIONS], ng = 0;
    for (uint32_t i = 0; i < r->mk.ngens; i++) {
        uint32_t gen = r->mk.gen_ids[i];
        if (gen != r->mk.gen && (!po.only_generation || gen == po.generation))
            gens[ng++] = gen;
    }
    for (uint32_t i = 0; i < ng && rc == 0; i++) {
        char id[65];
        rc = cf_keys__retire_generation(r, cred, gens[i], id);
        if (rc == 0) {
            st.generations_retired++;
        } else if (rc == CF_EINVAL) {
            if (po.on_message)
                po.on_message(NULL, cf_error_last()->message, po.payload);
            st.generations_kept++;
            rc = 0;
        }
    }
out:
    cf_repo_unlock(r);
    if (out)
        *out = st;
    return rc;
}
