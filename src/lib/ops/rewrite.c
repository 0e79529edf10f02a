/*
 * rewrite.c - re-encryption after a key rotation: repack old-generation packs, re-seal the
 * index and snapshot documents under the current generation, then retire the old
 * generations from the key slot in use.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ops/ops.h"

/* Re-seal every snapshot document sealed under an older generation. */
static int reseal_snapshots(cf_repo *r, uint64_t *count)
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
        if (gen == r->mk.gen)
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
    po.reencrypt = true;
    int rc = cf_repo_lock(r, CF_LOCK_EXCLUSIVE);
    if (rc)
        return rc;
    if ((rc = cf_ops__prune(r, &po, &st.prune, false)))
        goto out;
    if (po.dry_run)
        goto out;
    if ((rc = reseal_snapshots(r, &st.snapshots_resealed)))
        goto out;
    /* nothing needs the old generations now: the slot in use keeps the current one only */
    if (r->mk.ngens > 1) {
        cf_master_key mk = r->mk; /* mac, index and key pair stay */
        memset(mk.gen_ids, 0, sizeof(mk.gen_ids));
        cf_wipe(mk.gen_keys, sizeof(mk.gen_keys));
        mk.ngens = 1;
        mk.gen_ids[0] = r->mk.gen;
        memcpy(mk.gen_keys[0], r->mk.data, CF_KEY_LEN);
        st.generations_retired = r->mk.ngens - 1;
        char id[65];
        rc = cf_keys__replace_slot(r, &mk, cred, id);
        cf_wipe(&mk, sizeof(mk));
    }
out:
    cf_repo_unlock(r);
    if (out)
        *out = st;
    return rc;
}
