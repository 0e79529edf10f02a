/*
 * snapshot.c - snapshot documents (JSON, sealed), their accessors, listing, filtering and
 * resolution of "latest" and abbreviated ids.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "repo/repo.h"

static const char *type_names[] = {"incremental", "differential", "full"};

const char *cf_snapshot_id(const cf_snapshot *s) { return s->id; }
int64_t cf_snapshot_time(const cf_snapshot *s) { return s->time; }
const char *cf_snapshot_host(const cf_snapshot *s) { return s->host; }
const char *cf_snapshot_username(const cf_snapshot *s) { return s->username; }
size_t cf_snapshot_path_count(const cf_snapshot *s) { return s->npaths; }
const char *cf_snapshot_path(const cf_snapshot *s, size_t i) { return i < s->npaths ? s->paths[i] : NULL; }
size_t cf_snapshot_tag_count(const cf_snapshot *s) { return s->ntags; }
const char *cf_snapshot_tag(const cf_snapshot *s, size_t i) { return i < s->ntags ? s->tags[i] : NULL; }
cf_backup_type cf_snapshot_type(const cf_snapshot *s) { return s->type; }
const char *cf_snapshot_parent(const cf_snapshot *s) { return s->parent; }
const char *cf_snapshot_tree(const cf_snapshot *s) { return s->tree_hex; }
const char *cf_snapshot_source_kind(const cf_snapshot *s) { return s->source_kind; }
const cf_backup_stats *cf_snapshot_stats(const cf_snapshot *s) { return &s->stats; }

void cf_snapshot_free(cf_snapshot *s)
{
    if (!s)
        return;
    free(s->host);
    free(s->username);
    for (size_t i = 0; i < s->npaths; i++)
        free(s->paths[i]);
    free(s->paths);
    for (size_t i = 0; i < s->ntags; i++)
        free(s->tags[i]);
    free(s->tags);
    free(s->parent);
    free(s->source_kind);
    free(s->source_name);
    json_decref(s->extra);
    free(s);
}

void cf_snapshot_list_free(cf_snapshot **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        cf_snapshot_free(list[i]);
    free(list);
}

static json_t *str_array(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *to_json(const cf_snapshot *s, bool with_id)
{
    char when[40];
    cf_time_format(when, s->time);
    const cf_backup_stats *st = &s->stats;
    json_t *stats = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "files_new",
        (json_int_t)st->files_new, "files_changed", (json_int_t)st->files_changed,
        "files_unchanged", (json_int_t)st->files_unchanged, "dirs", (json_int_t)st->dirs,
        "others", (json_int_t)st->others, "bytes_total", (json_int_t)st->bytes_total,
        "bytes_read", (json_int_t)st->bytes_read, "bytes_added", (json_int_t)st->bytes_added,
        "blobs_added", (json_int_t)st->blobs_added, "errors", (json_int_t)st->errors, "seconds",
        st->seconds);
    json_t *doc = json_pack("{s:i, s:s, s:s, s:s, s:o, s:o, s:s, s:s, s:{s:s, s:s}, s:s, s:o}",
                            "version", 1, "time", when, "host", s->host, "username",
                            s->username ? s->username : "", "paths", str_array(s->paths, s->npaths),
                            "tags", str_array(s->tags, s->ntags), "type", type_names[s->type],
                            "tree", s->tree_hex, "source", "kind", s->source_kind, "name",
                            s->source_name ? s->source_name : "", "program",
                            "coffer " COFFER_VERSION, "stats", stats);
    if (!doc)
        return NULL;
    if (s->parent)
        json_object_set_new(doc, "parent", json_string(s->parent));
    if (s->extra) {
        const char *k;
        json_t *v;
        json_object_foreach(s->extra, k, v)
        {
            if (!json_object_get(doc, k))
                json_object_set(doc, k, v);
        }
    }
    if (with_id)
        json_object_set_new(doc, "id", json_string(s->id));
    return doc;
}

char *cf_snapshot_to_json(const cf_snapshot *s)
{
    json_t *doc = to_json(s, true);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    return text;
}

int cf_snapshot__encode(cf_buf *out, const cf_snapshot *s)
{
    json_t *doc = to_json(s, false);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text)
        return cf_error_set(CF_ENOMEM, 0, "unable to encode snapshot");
    int rc = cf_buf_append_str(out, text);
    free(text);
    return rc;
}

static int get_strs(char ***out, size_t *n, json_t *arr)
{
    *out = NULL;
    *n = 0;
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return CF_ECORRUPT;
    size_t cnt = json_array_size(arr);
    if (cnt == 0)
        return 0;
    char **v = cf_calloc(cnt, sizeof(char *));
    if (!v)
        return CF_ENOMEM;
    *out = v;
    for (size_t i = 0; i < cnt; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            return CF_ECORRUPT;
        if (!(v[i] = cf_strdup(s)))
            return CF_ENOMEM;
        *n = i + 1;
    }
    return 0;
}

static uint64_t ju(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : 0;
}

int cf_snapshot__decode(cf_snapshot **out, const uint8_t *data, size_t len, const char *id)
{
    json_error_t jerr;
    int rc = 0;
    cf_snapshot *s = cf_calloc(1, sizeof(*s));
    json_t *doc = json_loadb((const char *)data, len, 0, &jerr);
    if (!s) {
        json_decref(doc);
        return CF_ENOMEM;
    }
    const char *when = NULL, *host = NULL, *user = "", *type = NULL, *tree = NULL;
    const char *kind = "files", *sname = "", *parent = NULL;
    json_int_t version = 0;
    if (!doc || json_unpack(doc, "{s:I, s:s, s:s, s?s, s:s, s:s, s?{s?s, s?s}, s?s}", "version",
                            &version, "time", &when, "host", &host, "username", &user, "type",
                            &type, "tree", &tree, "source", "kind", &kind, "name", &sname,
                            "parent", &parent))
        goto bad;
    if (version != 1 || strlen(tree) != 64 || cf_hex_decode(s->tree.b, 32, tree) ||
        cf_time_parse(&s->time, when))
        goto bad;
    memcpy(s->tree_hex, tree, 65);
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->type = CF_BACKUP_INCREMENTAL;
    for (int i = 0; i < 3; i++)
        if (strcmp(type, type_names[i]) == 0)
            s->type = (cf_backup_type)i;
    if (!(s->host = cf_strdup(host)) || !(s->username = cf_strdup(user)) ||
        !(s->source_kind = cf_strdup(kind)) || !(s->source_name = cf_strdup(sname)) ||
        (parent && !(s->parent = cf_strdup(parent)))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = get_strs(&s->paths, &s->npaths, json_object_get(doc, "paths"))) ||
        (rc = get_strs(&s->tags, &s->ntags, json_object_get(doc, "tags")))) {
        if (rc == CF_ECORRUPT)
            goto bad;
        goto out;
    }
    json_t *st = json_object_get(doc, "stats");
    if (json_is_object(st)) {
        s->stats.files_new = ju(st, "files_new");
        s->stats.files_changed = ju(st, "files_changed");
        s->stats.files_unchanged = ju(st, "files_unchanged");
        s->stats.dirs = ju(st, "dirs");
        s->stats.others = ju(st, "others");
        s->stats.bytes_total = ju(st, "bytes_total");
        s->stats.bytes_read = ju(st, "bytes_read");
        s->stats.bytes_added = ju(st, "bytes_added");
        s->stats.blobs_added = ju(st, "blobs_added");
        s->stats.errors = ju(st, "errors");
        s->stats.seconds = json_number_value(json_object_get(st, "seconds"));
    }
    /* keep fields this version does not interpret (source-specific data) */
    static const char *known[] = {"version", "time", "host", "username", "paths", "tags", "type",
                                  "tree", "source", "program", "stats", "parent", "id"};
    s->extra = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v)
    {
        bool is_known = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            is_known |= strcmp(k, known[i]) == 0;
        if (!is_known)
            json_object_set(s->extra, k, v);
    }
    goto out;
bad:
    rc = cf_error_set(CF_ECORRUPT, 0, "snapshot '%s' is damaged: invalid document", id);
out:
    json_decref(doc);
    if (rc) {
        cf_snapshot_free(s);
        s = NULL;
    }
    *out = s;
    return rc;
}

/* ------------------------------------------------------------------ listing */

typedef struct {
    char **names;
    size_t n, cap;
} names_t;

static int collect(const char *name, uint64_t size, void *payload)
{
    (void)size;
    names_t *l = payload;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strlen(base) != 64)
        return 0;
    if (cf_array_grow(&l->names, &l->cap, l->n, sizeof(*l->names)))
        return CF_ENOMEM;
    if (!(l->names[l->n] = cf_strdup(base)))
        return CF_ENOMEM;
    l->n++;
    return 0;
}

static bool has_all(char **have, size_t nhave, const char *const *want)
{
    for (; want && *want; want++) {
        bool found = false;
        for (size_t i = 0; i < nhave && !found; i++)
            found = strcmp(have[i], *want) == 0;
        if (!found)
            return false;
    }
    return true;
}

static bool matches(const cf_snapshot *s, const cf_snapshot_filter *f)
{
    if (!f)
        return true;
    if (f->host && strcmp(f->host, s->host) != 0)
        return false;
    return has_all(s->tags, s->ntags, f->tags) && has_all(s->paths, s->npaths, f->paths);
}

static int cmp_time(const void *a, const void *b)
{
    const cf_snapshot *x = *(cf_snapshot *const *)a, *y = *(cf_snapshot *const *)b;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    return strcmp(x->id, y->id);
}

int cf_snapshot_list(cf_snapshot ***out, size_t *out_count, cf_repo *repo,
                     const cf_snapshot_filter *filter)
{
    names_t l = {0};
    cf_snapshot **v = NULL;
    size_t n = 0;
    cf_buf b;
    cf_buf_init(&b, 0);
    *out = NULL;
    *out_count = 0;
    if (!cf_master__can_read(&repo->mk)) {
        cf_error_set(CF_EPERM, 0, "key slot %.8s is write-only: it cannot list or read snapshots",
                     repo->slot_id);
        cf_error_hint("use an admin or append-only key to list, restore or check");
        return CF_EPERM;
    }
    int rc = cf_storage_list(repo->st, "snapshots/", collect, &l);
    if (rc)
        goto out;
    v = cf_calloc(l.n ? l.n : 1, sizeof(*v));
    if (!v) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        cf_buf_reset(&b);
        cf_snapshot *s = NULL;
        int r2 = cf_repo__get_object(&b, repo, "snapshots", CF_OBJ_SNAPSHOT, l.names[i]);
        if (r2 == 0)
            r2 = cf_snapshot__decode(&s, b.data, b.len, l.names[i]);
        if (r2 == CF_ENOMEM || r2 == CF_ERETRYABLE || r2 == CF_EIO) {
            rc = r2;
            goto out;
        }
        if (r2) {
            cf_repo__warn(repo, "skipping snapshot %s: %s", l.names[i], cf_error_last()->message);
            continue;
        }
        if (matches(s, filter))
            v[n++] = s;
        else
            cf_snapshot_free(s);
    }
    qsort(v, n, sizeof(*v), cmp_time);
    *out = v;
    *out_count = n;
    v = NULL;
out:
    if (v)
        cf_snapshot_list_free(v, n);
    for (size_t i = 0; i < l.n; i++)
        free(l.names[i]);
    free(l.names);
    cf_buf_free(&b);
    return rc;
}

int cf_snapshot_find(cf_snapshot **out, cf_repo *repo, const char *spec,
                     const cf_snapshot_filter *filter)
{
    cf_snapshot **list = NULL;
    size_t n = 0;
    *out = NULL;
    bool latest = strcmp(spec, "latest") == 0;
    size_t slen = strlen(spec);
    if (!latest) {
        if (slen < 4 || slen > 64)
            return cf_error_set(CF_EINVAL, 0, "invalid snapshot id '%s': give 'latest' or at least 4 hex digits", spec);
        for (size_t i = 0; i < slen; i++)
            if (!strchr("0123456789abcdef", spec[i]))
                return cf_error_set(CF_EINVAL, 0, "invalid snapshot id '%s'", spec);
    }
    int rc = cf_snapshot_list(&list, &n, repo, latest ? filter : NULL);
    if (rc)
        return rc;
    cf_snapshot *found = NULL;
    size_t nfound = 0;
    if (latest) {
        if (n) {
            found = list[n - 1];
            nfound = 1;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (strncmp(list[i]->id, spec, slen) == 0) {
                found = list[i];
                nfound++;
            }
        }
    }
    if (nfound == 0)
        rc = cf_error_set(CF_ENOTFOUND, 0, latest ? "no snapshot found%s" : "no snapshot '%s' found",
                          latest ? "" : spec);
    else if (nfound > 1)
        rc = cf_error_set(CF_EINVAL, 0, "snapshot id '%s' is ambiguous: %zu snapshots match", spec,
                          nfound);
    else {
        for (size_t i = 0; i < n; i++)
            if (list[i] == found)
                list[i] = NULL;
        *out = found;
    }
    for (size_t i = 0; i < n; i++)
        cf_snapshot_free(list[i]);
    free(list);
    return rc;
}
