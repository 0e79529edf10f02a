/*
 * tree.c - tree objects: one directory's entries (name, type, metadata, xattrs, and the
 * content blobs of a file or the subtree of a directory), sorted by name, in a compact binary
 * encoding stored as a tree blob.
 */
#include <stdio.h>
#include <stdlib.h>

#include "repo/repo.h"

#define TREE_MAGIC "CFTR"
#define TREE_MAX_NODES (1u << 24)

void cf_tree__init(cf_tree *t) { memset(t, 0, sizeof(*t)); }

void cf_node__free(cf_node *n)
{
    if (!n)
        return;
    free(n->name);
    free(n->user);
    free(n->group);
    free(n->target);
    for (uint16_t i = 0; i < n->nxattrs; i++) {
        free(n->xattrs[i].name);
        free(n->xattrs[i].value);
    }
    free(n->xattrs);
    free(n->content);
    memset(n, 0, sizeof(*n));
}

void cf_tree__free(cf_tree *t)
{
    for (size_t i = 0; i < t->count; i++)
        cf_node__free(&t->nodes[i]);
    free(t->nodes);
    memset(t, 0, sizeof(*t));
}

int cf_tree__add(cf_tree *t, cf_node *n)
{
    if (t->count == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        cf_node *p = cf_realloc(t->nodes, ncap * sizeof(*p));
        if (!p)
            return CF_ENOMEM;
        t->nodes = p;
        t->cap = ncap;
    }
    t->nodes[t->count++] = *n;
    memset(n, 0, sizeof(*n));
    return 0;
}

static int cmp_name(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int cmp_node(const void *a, const void *b)
{
    const cf_node *x = a, *y = b;
    return cmp_name(x->name, x->name_len, y->name, y->name_len);
}

void cf_tree__sort(cf_tree *t)
{
    if (t->count > 1)
        qsort(t->nodes, t->count, sizeof(cf_node), cmp_node);
}

const cf_node *cf_tree__find(const cf_tree *t, const char *name)
{
    size_t len = strlen(name), lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_name(t->nodes[mid].name, t->nodes[mid].name_len, name, len);
        if (c == 0)
            return &t->nodes[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool node_equal(const cf_node *a, const cf_node *b)
{
    if (a->type != b->type || a->name_len != b->name_len || memcmp(a->name, b->name, a->name_len) ||
        a->mode != b->mode || a->uid != b->uid || a->gid != b->gid || !str_eq(a->user, b->user) ||
        !str_eq(a->group, b->group) || a->mtime != b->mtime || a->atime != b->atime ||
        a->ctime != b->ctime || a->size != b->size || a->inode != b->inode || a->dev != b->dev ||
        a->rdev != b->rdev || a->nlink != b->nlink || a->flags != b->flags ||
        !str_eq(a->target, b->target) || a->nxattrs != b->nxattrs)
        return false;
    for (uint16_t k = 0; k < a->nxattrs; k++)
        if (!str_eq(a->xattrs[k].name, b->xattrs[k].name) ||
            a->xattrs[k].value_len != b->xattrs[k].value_len ||
            memcmp(a->xattrs[k].value, b->xattrs[k].value, a->xattrs[k].value_len))
            return false;
    if (a->type == CF_NODE_FILE) {
        if (a->ncontent != b->ncontent)
            return false;
        for (uint32_t k = 0; k < a->ncontent; k++)
            if (a->content[k].kind != b->content[k].kind || a->content[k].len != b->content[k].len ||
                (a->content[k].kind == 0 && !cf_id_eq(&a->content[k].id, &b->content[k].id)))
                return false;
    } else if (a->type == CF_NODE_DIR && !cf_id_eq(&a->subtree, &b->subtree)) {
        return false;
    }
    return true;
}

bool cf_tree__equal(const cf_tree *a, const cf_tree *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (!node_equal(&a->nodes[i], &b->nodes[i]))
            return false;
    return true;
}

static int put_str16(cf_buf *b, const char *s, size_t len)
{
    int rc = cf_buf_put_u16(b, (uint16_t)len);
    return rc ? rc : cf_buf_append(b, s, len);
}

static int put_str8(cf_buf *b, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len > 255)
        len = 255;
    int rc = cf_buf_put_u8(b, (uint8_t)len);
    return rc ? rc : cf_buf_append(b, s ? s : "", len);
}

int cf_tree__encode(cf_buf *out, const cf_tree *t)
{
    int rc = 0;
    for (size_t i = 0; i < t->count; i++) {
        const cf_node *n = &t->nodes[i];
        if (n->target && strlen(n->target) > 65535)
            return cf_error_set(CF_EINVAL, 0, "tree entry '%.*s' cannot be encoded: name or link "
                                "target out of range", (int)n->name_len, n->name ? n->name : "");
        for (uint16_t k = 0; k < n->nxattrs; k++)
            if (strlen(n->xattrs[k].name) > 255)
                return cf_error_set(CF_EINVAL, 0, "extended attribute name too long in '%.*s'",
                                    (int)n->name_len, n->name);
    }
    cf_buf_append(out, TREE_MAGIC, 4);
    cf_buf_put_u8(out, 1);
    cf_buf_put_u32(out, (uint32_t)t->count);
    for (size_t i = 0; i < t->count && rc == 0; i++) {
        const cf_node *n = &t->nodes[i];
        cf_buf_put_u8(out, n->type);
        put_str16(out, n->name, n->name_len);
        cf_buf_put_u32(out, n->mode);
        cf_buf_put_u32(out, n->uid);
        cf_buf_put_u32(out, n->gid);
        put_str8(out, n->user);
        put_str8(out, n->group);
        cf_buf_put_u64(out, (uint64_t)n->mtime);
        cf_buf_put_u64(out, (uint64_t)n->atime);
        cf_buf_put_u64(out, (uint64_t)n->ctime);
        cf_buf_put_u64(out, n->size);
        cf_buf_put_u64(out, n->inode);
        cf_buf_put_u64(out, n->dev);
        cf_buf_put_u64(out, n->rdev);
        cf_buf_put_u32(out, n->nlink);
        cf_buf_put_u8(out, n->flags);
        put_str16(out, n->target ? n->target : "", n->target ? strlen(n->target) : 0);
        cf_buf_put_u16(out, n->nxattrs);
        for (uint16_t k = 0; k < n->nxattrs; k++) {
            put_str8(out, n->xattrs[k].name);
            cf_buf_put_u32(out, n->xattrs[k].value_len);
            cf_buf_append(out, n->xattrs[k].value, n->xattrs[k].value_len);
        }
        if (n->type == CF_NODE_FILE) {
            cf_buf_put_u32(out, n->ncontent);
            for (uint32_t k = 0; k < n->ncontent; k++) {
                cf_buf_put_u8(out, n->content[k].kind);
                cf_buf_put_u64(out, n->content[k].len);
                if (n->content[k].kind == 0)
                    cf_buf_append(out, n->content[k].id.b, 32);
            }
        } else if (n->type == CF_NODE_DIR) {
            rc = cf_buf_append(out, n->subtree.b, 32);
        }
    }
    /* a final append reports any allocation failure of the unchecked ones above */
    if (rc == 0)
        rc = cf_buf_reserve(out, 1);
    return rc;
}

static char *rd_str(cf_rd *rd, size_t len, bool allow_empty)
{
    const uint8_t *p = cf_rd_bytes(rd, len);
    if (!p || (!allow_empty && len == 0) || memchr(p, 0, len)) {
        rd->err = true;
        return NULL;
    }
    return cf_strndup((const char *)p, len);
}

int cf_tree__decode(cf_tree *t, const uint8_t *data, size_t len)
{
    cf_rd rd;
    cf_rd_init(&rd, data, len);
    const uint8_t *magic = cf_rd_bytes(&rd, 4);
    uint8_t ver = cf_rd_u8(&rd);
    uint32_t count = cf_rd_u32(&rd);
    int rc = 0;
    cf_node n;
    memset(&n, 0, sizeof(n));
    if (!magic || rd.err || memcmp(magic, TREE_MAGIC, 4) != 0 || ver != 1 ||
        count > TREE_MAX_NODES || count > cf_rd_left(&rd) / 16)
        return cf_error_set(CF_ECORRUPT, 0, "tree is damaged: bad header");
    for (uint32_t i = 0; i < count; i++) {
        n.type = cf_rd_u8(&rd);
        uint16_t nl = cf_rd_u16(&rd);
        n.name_len = nl;
        n.name = rd_str(&rd, nl, false);
        if (n.name && (memchr(n.name, '/', nl) || strcmp(n.name, ".") == 0 ||
                       strcmp(n.name, "..") == 0))
            rd.err = true;
        n.mode = cf_rd_u32(&rd);
        n.uid = cf_rd_u32(&rd);
        n.gid = cf_rd_u32(&rd);
        n.user = rd_str(&rd, cf_rd_u8(&rd), true);
        n.group = rd_str(&rd, cf_rd_u8(&rd), true);
        n.mtime = (int64_t)cf_rd_u64(&rd);
        n.atime = (int64_t)cf_rd_u64(&rd);
        n.ctime = (int64_t)cf_rd_u64(&rd);
        n.size = cf_rd_u64(&rd);
        n.inode = cf_rd_u64(&rd);
        n.dev = cf_rd_u64(&rd);
        n.rdev = cf_rd_u64(&rd);
        n.nlink = cf_rd_u32(&rd);
        n.flags = cf_rd_u8(&rd);
        uint16_t tl = cf_rd_u16(&rd);
        if (tl) {
            n.target = rd_str(&rd, tl, true);
        }
        n.nxattrs = cf_rd_u16(&rd);
        if (n.nxattrs) {
            if (n.nxattrs > cf_rd_left(&rd) / 5) {
                rd.err = true;
                n.nxattrs = 0;
            } else if (!(n.xattrs = cf_calloc(n.nxattrs, sizeof(cf_xattr)))) {
                rc = CF_ENOMEM;
                n.nxattrs = 0;
                goto out;
            }
        }
        for (uint16_t k = 0; k < n.nxattrs && !rd.err; k++) {
            n.xattrs[k].name = rd_str(&rd, cf_rd_u8(&rd), false);
            uint32_t vl = cf_rd_u32(&rd);
            const uint8_t *v = cf_rd_bytes(&rd, vl);
            if (v) {
                n.xattrs[k].value = cf_malloc(vl ? vl : 1);
                if (n.xattrs[k].value)
                    memcpy(n.xattrs[k].value, v, vl);
                n.xattrs[k].value_len = vl;
            }
        }
        if (n.type == CF_NODE_FILE) {
            uint32_t nc = cf_rd_u32(&rd);
            if (nc > cf_rd_left(&rd) / 9) {
                rd.err = true;
            } else if (nc) {
                n.content = cf_calloc(nc, sizeof(cf_content_item));
                if (!n.content) {
                    rc = CF_ENOMEM;
                    goto out;
                }
                n.ncontent = nc;
                for (uint32_t k = 0; k < nc && !rd.err; k++) {
                    n.content[k].kind = cf_rd_u8(&rd);
                    n.content[k].len = cf_rd_u64(&rd);
                    if (n.content[k].kind == 0) {
                        const uint8_t *id = cf_rd_bytes(&rd, 32);
                        if (id)
                            memcpy(n.content[k].id.b, id, 32);
                        if (n.content[k].len > UINT32_MAX)
                            rd.err = true;
                    } else if (n.content[k].kind != 1) {
                        rd.err = true;
                    }
                }
            }
        } else if (n.type == CF_NODE_DIR) {
            const uint8_t *id = cf_rd_bytes(&rd, 32);
            if (id)
                memcpy(n.subtree.b, id, 32);
        } else if (n.type < CF_NODE_SYMLINK || n.type > CF_NODE_SOCKET) {
            rd.err = true;
        }
        if (rd.err) {
            rc = cf_error_set(CF_ECORRUPT, 0, "tree is damaged: entry %u is invalid", i);
            goto out;
        }
        if (i > 0 && cmp_node(&t->nodes[t->count - 1], &n) >= 0) {
            rc = cf_error_set(CF_ECORRUPT, 0, "tree is damaged: entries out of order at %u", i);
            goto out;
        }
        if ((rc = cf_tree__add(t, &n)))
            goto out;
    }
    if (cf_rd_left(&rd) != 0)
        rc = cf_error_set(CF_ECORRUPT, 0, "tree is damaged: trailing bytes");
out:
    cf_node__free(&n);
    if (rc)
        cf_tree__free(t);
    return rc;
}

int cf_node__copy(cf_node *dst, const cf_node *src)
{
    *dst = *src;
    dst->name = NULL;
    dst->user = dst->group = dst->target = NULL;
    dst->xattrs = NULL;
    dst->content = NULL;
    dst->nxattrs = 0;
    dst->ncontent = 0;
    if (!(dst->name = cf_strndup(src->name, src->name_len)))
        goto fail;
    if (src->user && !(dst->user = cf_strdup(src->user)))
        goto fail;
    if (src->group && !(dst->group = cf_strdup(src->group)))
        goto fail;
    if (src->target && !(dst->target = cf_strdup(src->target)))
        goto fail;
    if (src->nxattrs) {
        if (!(dst->xattrs = cf_calloc(src->nxattrs, sizeof(cf_xattr))))
            goto fail;
        dst->nxattrs = src->nxattrs;
        for (uint16_t k = 0; k < src->nxattrs; k++) {
            dst->xattrs[k].name = cf_strdup(src->xattrs[k].name);
            dst->xattrs[k].value = cf_malloc(src->xattrs[k].value_len + 1u);
            if (!dst->xattrs[k].name || !dst->xattrs[k].value)
                goto fail;
            memcpy(dst->xattrs[k].value, src->xattrs[k].value, src->xattrs[k].value_len);
            dst->xattrs[k].value_len = src->xattrs[k].value_len;
        }
    }
    if (src->ncontent) {
        if (!(dst->content = cf_malloc(src->ncontent * sizeof(cf_content_item))))
            goto fail;
        memcpy(dst->content, src->content, src->ncontent * sizeof(cf_content_item));
        dst->ncontent = src->ncontent;
    }
    return 0;
fail:
    cf_node__free(dst);
    return CF_ENOMEM;
}

int cf_repo__load_tree(cf_tree *out, cf_repo *r, const cf_id *id)
{
    cf_buf b;
    cf_buf_init(&b, 0);
    cf_tree__init(out);
    int rc = cf_repo__read_blob(&b, r, id, CF_BLOB_TREE);
    if (rc == 0) {
        rc = cf_tree__decode(out, b.data, b.len);
        if (rc) {
            char hex[65];
            cf_hex_encode(hex, id->b, 32);
            cf_error_wrap(rc, "tree %.16s", hex);
        }
    }
    cf_buf_free(&b);
    return rc;
}

int cf_repo__save_tree(cf_repo *r, const cf_tree *t, cf_id *out_id, uint64_t *out_added)
{
    cf_buf b;
    cf_buf_init(&b, 0);
    int rc = cf_tree__encode(&b, t);
    if (rc == 0) {
        cf_repo__blob_id(r, out_id, b.data, b.len);
        rc = cf_repo__add_blob(r, CF_BLOB_TREE, out_id, b.data, b.len, out_added);
    }
    cf_buf_free(&b);
    return rc;
}
