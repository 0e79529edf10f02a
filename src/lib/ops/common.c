/*
 * common.c - path joining, pattern matching and parent selection shared by the verbs.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops/ops.h"

char *cf_ops__join(const char *dir, const char *name, size_t len)
{
    size_t dl = strlen(dir);
    bool slash = dl > 0 && dir[dl - 1] == '/';
    char *p = cf_malloc(dl + len + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    if (!slash)
        p[dl++] = '/';
    memcpy(p + dl, name, len);
    p[dl + len] = '\0';
    return p;
}

static bool match_one(const char *pat, const char *path)
{
    if (!strchr(pat, '/')) {
        /* base name of any component of the path */
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        return fnmatch(pat, base, FNM_PERIOD & 0) == 0;
    }
    if (fnmatch(pat, path, FNM_PATHNAME) == 0)
        return true;
    /* "/a/b" also matches everything below /a/b */
    size_t pl = strlen(pat);
    if (strncmp(pat, path, pl) == 0 && path[pl] == '/' && !strpbrk(pat, "*?["))
        return true;
    return false;
}

bool cf_ops__match_any(const char *const *patterns, const char *path)
{
    for (; patterns && *patterns; patterns++)
        if (**patterns && match_one(*patterns, path))
            return true;
    return false;
}

static bool same_paths(const cf_snapshot *s, char **paths, size_t n)
{
    if (s->npaths != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->paths[i], paths[i]) != 0)
            return false;
    return true;
}

int cf_ops__find_parent(cf_snapshot **out, cf_repo *r, const cf_backup_opts *o, char **paths,
                        size_t npaths, const char *host)
{
    *out = NULL;
    if (o->parent)
        return cf_snapshot_find(out, r, o->parent, NULL);
    if (o->type == CF_BACKUP_FULL)
        return 0;
    cf_snapshot **list = NULL;
    size_t n = 0;
    cf_snapshot_filter f = {host, NULL, NULL};
    int rc = cf_snapshot_list(&list, &n, r, &f);
    if (rc)
        return rc;
    for (size_t i = n; i-- > 0;) {
        cf_snapshot *s = list[i];
        if (!same_paths(s, paths, npaths))
            continue;
        if (o->source_kind && strcmp(o->source_kind, s->source_kind) != 0)
            continue;
        if (o->type == CF_BACKUP_DIFFERENTIAL && s->type != CF_BACKUP_FULL)
            continue;
        *out = s;
        list[i] = NULL;
        break;
    }
    cf_snapshot_list_free(list, n);
    return 0;
}

void cf_idset_init(cf_idset *s) { memset(s, 0, sizeof(*s)); }

void cf_idset_free(cf_idset *s)
{
    free(s->slots);
    free(s->used);
    memset(s, 0, sizeof(*s));
}

static size_t idset_pos(const cf_idset *s, const cf_id *id)
{
    size_t j = cf_le64_get(id->b) & (s->cap - 1);
    while (s->used[j] && !cf_id_eq(&s->slots[j], id))
        j = (j + 1) & (s->cap - 1);
    return j;
}

int cf_idset_add(cf_idset *s, const cf_id *id)
{
    if ((s->count + 1) * 2 > s->cap) {
        cf_idset n;
        n.cap = s->cap ? s->cap * 2 : 256;
        n.count = 0;
        n.slots = cf_malloc(n.cap * sizeof(cf_id));
        n.used = cf_calloc(n.cap, 1);
        if (!n.slots || !n.used) {
            free(n.slots);
            free(n.used);
            return CF_ENOMEM;
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (s->used[i]) {
                size_t j = idset_pos(&n, &s->slots[i]);
                n.slots[j] = s->slots[i];
                n.used[j] = 1;
                n.count++;
            }
        }
        cf_idset_free(s);
        *s = n;
    }
    size_t j = idset_pos(s, id);
    if (s->used[j])
        return 0;
    s->slots[j] = *id;
    s->used[j] = 1;
    s->count++;
    return 1;
}

bool cf_idset_has(const cf_idset *s, const cf_id *id)
{
    return s->cap && s->used[idset_pos(s, id)];
}
