/*
 * walk.c - browsing a snapshot's tree: ls and find are built on cf_walk.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ops/ops.h"

static int walk_tree(cf_repo *r, const cf_id *id, const char *prefix, bool recursive,
                     cf_walk_cb cb, void *payload, int depth)
{
    cf_tree t;
    if (depth > 10000)
        return cf_error_set(CF_ECORRUPT, 0, "tree nesting too deep under '%s'", prefix);
    int rc = cf_repo__load_tree(&t, r, id);
    if (rc)
        return cf_error_wrap(rc, "unable to read '%s'", *prefix ? prefix : "/");
    for (size_t i = 0; i < t.count && rc == 0; i++) {
        const cf_node *n = &t.nodes[i];
        char *path = cf_ops__join(*prefix ? prefix : "/", n->name, n->name_len);
        if (!path) {
            rc = CF_ENOMEM;
            break;
        }
        cf_entry e = {path, (cf_node_type)n->type, n->mode, n->uid, n->gid, n->size, n->mtime,
                      n->target};
        rc = cb(&e, payload);
        if (rc == 0 && recursive && n->type == CF_NODE_DIR)
            rc = walk_tree(r, &n->subtree, path, true, cb, payload, depth + 1);
        free(path);
    }
    cf_tree__free(&t);
    return rc;
}

int cf_walk(cf_repo *repo, const cf_snapshot *snap, const char *path, bool recursive,
            cf_walk_cb cb, void *payload)
{
    cf_id cur = snap->tree;
    cf_buf prefix;
    cf_buf_init(&prefix, 0);
    int rc = 0;
    const char *p = path ? path : "/";
    while (*p && rc == 0) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *name = cf_strndup(p, len);
        cf_tree t;
        if (!name)
            return CF_ENOMEM;
        if ((rc = cf_repo__load_tree(&t, repo, &cur)) == 0) {
            const cf_node *n = cf_tree__find(&t, name);
            cf_buf_append(&prefix, "/", 1);
            cf_buf_append(&prefix, name, len);
            if (!n) {
                rc = cf_error_set(CF_ENOTFOUND, 0, "path '%s' not found in snapshot %.8s", path,
                                  snap->id);
            } else if (n->type != CF_NODE_DIR) {
                /* a single entry */
                cf_entry en = {(const char *)prefix.data, (cf_node_type)n->type, n->mode, n->uid,
                               n->gid, n->size, n->mtime, n->target};
                rc = cb(&en, payload);
                cf_tree__free(&t);
                free(name);
                cf_buf_free(&prefix);
                return rc;
            } else {
                cur = n->subtree;
            }
            cf_tree__free(&t);
        }
        free(name);
        p += len;
    }
    if (rc == 0)
        rc = walk_tree(repo, &cur, prefix.len ? (const char *)prefix.data : "", recursive, cb,
                       payload, 0);
    cf_buf_free(&prefix);
    return rc;
}
