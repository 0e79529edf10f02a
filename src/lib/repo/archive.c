/*
 * archive.c - named archive objects (database log files) under archive/<kind>/<name>,
 * sealed like other objects with their name inside the sealed plaintext, so a renamed or
 * swapped object is detected.
 */
#include <stdio.h>
#include <stdlib.h>

#include "repo/repo.h"

#define ARCHIVE_MAGIC "CFAR"

static bool valid_part(const char *s, bool allow_slash)
{
    if (!s || !*s || strlen(s) > 200)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-' || (allow_slash && c == '/');
        if (!ok)
            return false;
    }
    if (strstr(s, "..") || s[0] == '/' || s[0] == '.')
        return false;
    return true;
}

static int path_of(char out[512], const char *kind, const char *name)
{
    if (!valid_part(kind, false) || !valid_part(name, true))
        return cf_error_set(CF_EINVAL, 0, "invalid archive name '%s/%s'", kind ? kind : "",
                            name ? name : "");
    snprintf(out, 512, "archive/%s/%s", kind, name);
    return 0;
}

bool cf_archive_absent_at(const char *url, const char *kind, const char *name)
{
    char path[512];
    cf_storage *st = NULL;
    bool absent = false;
    cf_error_saved saved;
    cf_error_save(&saved);
    if (url && path_of(path, kind, name) == 0 && cf_storage_open(&st, url, 0) == 0 &&
        cf_storage_stat(st, "config", NULL) == 0)
        absent = cf_storage_stat(st, path, NULL) == CF_ENOTFOUND;
    cf_storage_close(st);
    cf_error_restore(&saved);
    return absent;
}

/* Read and open the object at path; *plain gets "CFAR" | name len u16 | name | data. */
static int read_plain(cf_repo *r, const char *path, cf_buf *plain)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = cf_storage_get(r->st, path, 0, 0, &data, &len);
    if (rc == 0)
        rc = cf_repo__open_object(plain, r, CF_OBJ_ARCHIVE, data, len, path);
    free(data);
    return rc;
}

static int check_name(const cf_buf *plain, const char *full, size_t *out_off, const char *path)
{
    size_t nl = strlen(full);
    if (plain->len < 6 || memcmp(plain->data, ARCHIVE_MAGIC, 4) != 0 ||
        (size_t)(plain->data[4] | plain->data[5] << 8) != nl || plain->len < 6 + nl ||
        memcmp(plain->data + 6, full, nl) != 0)
        return cf_error_set(CF_ECORRUPT, 0, "archive object '%s' is damaged: it does not carry "
                            "its own name (renamed or swapped)", path);
    *out_off = 6 + nl;
    return 0;
}

int cf_archive_put(cf_repo *r, const char *kind, const char *name, const void *data, size_t len)
{
    char path[512];
    int rc = path_of(path, kind, name);
    if (rc)
        return rc;
    const char *full = path + strlen("archive/");
    cf_buf plain, sealed, old;
    cf_buf_init(&plain, 0);
    cf_buf_init(&sealed, 0);
    cf_buf_init(&old, 0);
    if ((rc = cf_buf_append(&plain, ARCHIVE_MAGIC, 4)) ||
        (rc = cf_buf_put_u16(&plain, (uint16_t)strlen(full))) ||
        (rc = cf_buf_append_str(&plain, full)) || (rc = cf_buf_append(&plain, data, len)))
        goto out;
    if ((rc = cf_repo__seal_object(&sealed, r, CF_OBJ_ARCHIVE, plain.data, plain.len)))
        goto out;
    rc = cf_storage_put(r->st, path, sealed.data, sealed.len, CF_PUT_EXCLUSIVE);
    if (rc == CF_EEXISTS) {
        /* written before: fine if it is the same content (a retried archive command) */
        size_t off = 0;
        int r2 = read_plain(r, path, &old);
        if (r2 == 0)
            r2 = check_name(&old, full, &off, path);
        if (r2 == 0 && old.len == plain.len && memcmp(old.data, plain.data, plain.len) == 0) {
            rc = 0;
        } else if (r2 == 0) {
            rc = cf_error_set(CF_EEXISTS, 0,
                              "archive object '%s' already exists with different content", path);
        } else {
            rc = cf_error_wrap(CF_EEXISTS, "archive object '%s' exists but cannot be compared",
                               path);
        }
    }
out:
    cf_buf_free(&plain);
    cf_buf_free(&sealed);
    cf_buf_free(&old);
    return rc;
}

int cf_archive_get(cf_repo *r, const char *kind, const char *name, uint8_t **out, size_t *out_len)
{
    char path[512];
    *out = NULL;
    *out_len = 0;
    int rc = path_of(path, kind, name);
    if (rc)
        return rc;
    cf_buf plain;
    cf_buf_init(&plain, 0);
    size_t off = 0;
    rc = read_plain(r, path, &plain);
    if (rc == 0)
        rc = check_name(&plain, path + strlen("archive/"), &off, path);
    if (rc == 0) {
        size_t n = plain.len - off;
        uint8_t *p = cf_malloc(n ? n : 1);
        if (!p) {
            rc = CF_ENOMEM;
        } else {
            memcpy(p, plain.data + off, n);
            *out = p;
            *out_len = n;
        }
    }
    cf_buf_free(&plain);
    return rc;
}

typedef struct {
    size_t skip;
    cf_walk_cb_name cb;
    void *payload;
} list_ctx;

static int list_one(const char *name, uint64_t size, void *payload)
{
    list_ctx *c = payload;
    return c->cb(name + c->skip, size, c->payload);
}

int cf_archive_list(cf_repo *r, const char *kind, cf_walk_cb_name cb, void *payload)
{
    char prefix[256];
    if (!valid_part(kind, false))
        return cf_error_set(CF_EINVAL, 0, "invalid archive kind '%s'", kind ? kind : "");
    snprintf(prefix, sizeof(prefix), "archive/%s/", kind);
    list_ctx c = {strlen(prefix), cb, payload};
    return cf_storage_list(r->st, prefix, list_one, &c);
}

int cf_archive_remove(cf_repo *r, const char *kind, const char *name)
{
    char path[512];
    int rc = path_of(path, kind, name);
    if (rc)
        return rc;
    if ((rc = cf_repo__require_admin(r, "removing archived logs")))
        return rc;
    return cf_storage_remove(r->st, path);
}

typedef struct {
    cf_repo *r;
    uint32_t only;
    uint64_t *count;
    cf_buf plain, sealed;
} reseal_ctx;

/* Re-seal the archive object at name (a full path) if an older generation seals it. The new
 * object replaces the old atomically; both hold the same plaintext, so a reader at any moment
 * gets valid content and a retried push of the same bytes still matches. */
static int reseal_one(const char *name, uint64_t size, void *payload)
{
    reseal_ctx *c = payload;
    cf_repo *r = c->r;
    if (size < 16)
        return 0;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = cf_storage_get(r->st, name, 0, 16, &data, &len);
    if (rc == CF_ENOTFOUND) {
        free(data);
        return 0; /* removed meanwhile (pg expire) */
    }
    if (rc)
        return rc;
    uint32_t gen = len == 16 && memcmp(data, "CFOB", 4) == 0 ? cf_le32_get(data + 12) : r->mk.gen;
    free(data);
    data = NULL;
    /* boxed objects of write-only clients belong to no generation */
    if (gen == r->mk.gen || gen == CF_GEN_BOX || gen == CF_GEN_INDEX ||
        (c->only != UINT32_MAX && gen != c->only))
        return 0;
    if ((rc = cf_storage_get(r->st, name, 0, 0, &data, &len)))
        return rc == CF_ENOTFOUND ? 0 : rc;
    size_t off = 0;
    cf_buf_reset(&c->plain);
    cf_buf_reset(&c->sealed);
    rc = cf_repo__open_object(&c->plain, r, CF_OBJ_ARCHIVE, data, len, name);
    free(data);
    if (rc == 0)
        rc = check_name(&c->plain, name + strlen("archive/"), &off, name);
    if (rc == 0)
        rc = cf_repo__seal_object(&c->sealed, r, CF_OBJ_ARCHIVE, c->plain.data, c->plain.len);
    if (rc == 0)
        rc = cf_storage_put(r->st, name, c->sealed.data, c->sealed.len, 0);
    if (rc == 0)
        (*c->count)++;
    return rc;
}

int cf_archive__reseal(cf_repo *r, uint32_t only, uint64_t *count)
{
    reseal_ctx c = {.r = r, .only = only, .count = count};
    cf_buf_init(&c.plain, 0);
    cf_buf_init(&c.sealed, 0);
    int rc = cf_storage_list(r->st, "archive/", reseal_one, &c);
    cf_buf_free(&c.plain);
    cf_buf_free(&c.sealed);
    return rc;
}
