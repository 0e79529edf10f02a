/*
 * common.c - what the SQLite source's verbs share: connections, the online-backup copy,
 * integrity checks, storing a base copy as a snapshot (and reading its fields back), the
 * database's identity, and listing shipped objects.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "source/sqlite/sqlite_src.h"

void cf_sq__msg(cf_sqlite_message_cb cb, void *payload, const char *fmt, ...)
{
    if (!cb)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    cb(line, payload);
}

int cf_sq__err(sqlite3 *db, int src, const char *what, const char *path)
{
    const char *m = db ? sqlite3_errmsg(db) : sqlite3_errstr(src);
    int prim = src & 0xff;
    int code = CF_EGENERIC;
    if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB)
        code = CF_ECORRUPT;
    else if (prim == SQLITE_FULL)
        code = CF_ENOSPACE;
    else if (prim == SQLITE_CANTOPEN || prim == SQLITE_IOERR)
        code = CF_EIO;
    else if (prim == SQLITE_PERM || prim == SQLITE_READONLY || prim == SQLITE_AUTH)
        code = CF_EPERM;
    else if (prim == SQLITE_NOMEM)
        code = CF_ENOMEM;
    else if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        code = CF_ELOCKED;
    return cf_error_set(code, 0, "unable to %s '%s': %s", what, path, m);
}

int cf_sq__open(sqlite3 **out, const char *path, int flags, double busy_timeout)
{
    *out = NULL;
    sqlite3 *db = NULL;
    int src = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        int rc = cf_sq__err(db, src, "open SQLite database", path);
        sqlite3_close(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, (int)(busy_timeout * 1000));
    *out = db;
    return 0;
}

int cf_sq__exec(sqlite3 *db, const char *sql, const char *path)
{
    char *msg = NULL;
    int src = sqlite3_exec(db, sql, NULL, NULL, &msg);
    sqlite3_free(msg);
    if (src != SQLITE_OK)
        return cf_sq__err(db, src, "run SQL on", path);
    return 0;
}

int cf_sq__copy(sqlite3 *src, const char *dest, const char *src_path, double busy_timeout,
                uint32_t *out_pages, uint32_t *out_page_size)
{
    sqlite3 *dst = NULL;
    int rc = cf_sq__open(&dst, dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, busy_timeout);
    if (rc)
        return rc;
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
        rc = cf_sq__err(dst, sqlite3_errcode(dst), "start the online backup of", src_path);
        sqlite3_close(dst);
        return rc;
    }
    double deadline = cf_mono_seconds() + (busy_timeout > 0 ? busy_timeout : 10);
    int s;
    for (;;) {
        s = sqlite3_backup_step(b, -1);
        if (s == SQLITE_OK)
            continue;
        if ((s & 0xff) == SQLITE_BUSY || (s & 0xff) == SQLITE_LOCKED) {
            if (cf_mono_seconds() > deadline)
                break;
            sqlite3_sleep(10);
            continue;
        }
        break;
    }
    uint32_t pages = (uint32_t)sqlite3_backup_pagecount(b);
    int f = sqlite3_backup_finish(b);
    if (s != SQLITE_DONE) {
        rc = (s & 0xff) == SQLITE_BUSY || (s & 0xff) == SQLITE_LOCKED
                 ? cf_error_set(CF_ELOCKED, 0, "unable to copy SQLite database '%s': still busy "
                                "after %.0f s", src_path, busy_timeout)
                 : cf_sq__err(dst, f != SQLITE_OK ? f : s, "copy SQLite database", src_path);
    }
    if (rc == 0) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(dst, "pragma page_size", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && out_page_size)
            *out_page_size = (uint32_t)sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (out_pages)
            *out_pages = pages;
    }
    if (sqlite3_close(dst) != SQLITE_OK && rc == 0)
        rc = cf_error_set(CF_EIO, 0, "unable to close the copy '%s'", dest);
    return rc;
}

int cf_sq__integrity(const char *path)
{
    sqlite3 *db = NULL;
    int rc = cf_sq__open(&db, path, SQLITE_OPEN_READWRITE, 10);
    if (rc)
        return cf_error_wrap(CF_ECORRUPT, "integrity check of '%s' failed", path);
    sqlite3_stmt *st = NULL;
    int s = sqlite3_prepare_v2(db, "pragma integrity_check", -1, &st, NULL);
    if (s == SQLITE_OK)
        s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (!res || strcmp(res, "ok") != 0)
            rc = cf_error_set(CF_ECORRUPT, 0, "integrity check of '%s' failed: %s", path,
                              res ? res : "no result");
    } else {
        rc = cf_error_set(CF_ECORRUPT, 0, "integrity check of '%s' failed: %s", path,
                          sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

char *cf_sq__tmpfile(const char *dir, const char *hint)
{
    if (!dir || !*dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    char *p = cf_asprintf("%s/coffer-%s.XXXXXX", dir, hint);
    if (!p)
        return NULL;
    int fd = mkstemp(p);
    if (fd < 0) {
        cf_error_set(cf_error_from_errno(errno), errno, "unable to create a temporary file in "
                     "'%s': %s", dir, strerror(errno));
        free(p);
        return NULL;
    }
    close(fd);
    return p;
}

char *cf_sq__abspath(const char *path)
{
    if (path[0] == '/')
        return cf_strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd))) {
        cf_error_set(CF_EIO, errno, "unable to get the working directory: %s", strerror(errno));
        return NULL;
    }
    return cf_asprintf("%s/%s", cwd, path);
}

void cf_sq__new_generation(char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)cf_now_ns());
}

int cf_sqlite_db_id(char out[96], const char *db_path, const char *host)
{
    char hostbuf[256];
    if (!host) {
        if (gethostname(hostbuf, sizeof(hostbuf)) != 0)
            snprintf(hostbuf, sizeof(hostbuf), "unknown");
        hostbuf[sizeof(hostbuf) - 1] = '\0';
        host = hostbuf;
    }
    char *abs = cf_sq__abspath(db_path);
    if (!abs)
        return CF_ENOMEM;
    char *real = realpath(abs, NULL);
    const char *use = real ? real : abs;
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, host, strlen(host)) && EVP_DigestUpdate(ctx, ":", 1) &&
             EVP_DigestUpdate(ctx, use, strlen(use)) && EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    const char *base = strrchr(use, '/');
    base = base ? base + 1 : use;
    char name[64];
    size_t k = 0;
    for (const char *p = base; *p && k < 48; p++) {
        char c = *p;
        bool good = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || (c == '.' && k > 0);
        name[k++] = good ? c : '_';
    }
    name[k] = '\0';
    if (k == 0)
        snprintf(name, sizeof(name), "db");
    free(real);
    free(abs);
    if (!ok)
        return cf_error_set(CF_EGENERIC, 0, "unable to hash the database path");
    char hex[9];
    cf_hex_encode(hex, md, 4);
    snprintf(out, 96, "%s-%s", name, hex);
    return 0;
}

/* ---- base snapshots ---- */

typedef struct {
    const cf_sqlite_base_info *info;
} base_finish_ctx;

static int base_finish(char **out_json, void *payload)
{
    const cf_sqlite_base_info *i = ((base_finish_ctx *)payload)->info;
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:b}", "version", 1, "db_id",
                          i->db_id, "generation", i->generation, "db_path", i->db_path,
                          "time_ns", (json_int_t)i->time_ns, "page_size",
                          (json_int_t)i->page_size, "pages", (json_int_t)i->pages, "wal",
                          i->wal ? 1 : 0);
    if (o && i->has_position)
        json_object_set_new(o, "position",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "salt1",
                                      (json_int_t)i->salt1, "salt2", (json_int_t)i->salt2,
                                      "ckpt_seq", (json_int_t)i->ckpt_seq, "frame",
                                      (json_int_t)i->frame, "cksum1", (json_int_t)i->cksum1,
                                      "cksum2", (json_int_t)i->cksum2));
    json_t *doc = o ? json_pack("{s:o}", "sqlite", o) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return CF_ENOMEM;
    *out_json = text;
    return 0;
}

int cf_sq__store_base(cf_repo *repo, const char *tmp, cf_sqlite_base_info *info,
                      const char *const *tags, const char *host, unsigned threads,
                      cf_backup_stats *out_stats)
{
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cf_error_set(CF_EIO, errno, "unable to open the copy '%s': %s", tmp,
                            strerror(errno));
    const char *base = strrchr(info->db_path, '/');
    base = base ? base + 1 : info->db_path;
    char name[1024];
    snprintf(name, sizeof(name), "%s", *base ? base : "database.sqlite");
    base_finish_ctx fc = {info};
    cf_backup_opts bo;
    memset(&bo, 0, sizeof(bo));
    bo.type = CF_BACKUP_INCREMENTAL;
    bo.tags = tags;
    bo.host = host;
    bo.stdin_name = name;
    bo.stdin_fd = fd;
    bo.source_kind = CF_SQLITE_SOURCE_KIND;
    bo.time_ns = info->time_ns;
    bo.threads = threads;
    bo.finish = base_finish;
    bo.finish_payload = &fc;
    int rc = cf_backup(repo, &bo, info->snapshot_id, out_stats);
    close(fd);
    return rc;
}

static int64_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static int info_from_snapshot(cf_sqlite_base_info *out, const cf_snapshot *snap)
{
    memset(out, 0, sizeof(*out));
    const char *kind = cf_snapshot_source_kind(snap);
    if (!kind || strcmp(kind, CF_SQLITE_SOURCE_KIND) != 0)
        return cf_error_set(CF_ENOTFOUND, 0, "snapshot %.8s is not an SQLite backup",
                            cf_snapshot_id(snap));
    char *text = cf_snapshot_to_json(snap);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *o = json_object_get(doc, "sqlite");
    int rc = 0;
    const char *id = json_string_value(json_object_get(o, "db_id"));
    const char *gen = json_string_value(json_object_get(o, "generation"));
    const char *path = json_string_value(json_object_get(o, "db_path"));
    if (!json_is_object(o) || !id || !gen || strlen(gen) != 16) {
        rc = cf_error_set(CF_ENOTFOUND, 0, "snapshot %.8s has no SQLite fields",
                          cf_snapshot_id(snap));
        goto out;
    }
    snprintf(out->snapshot_id, sizeof(out->snapshot_id), "%s", cf_snapshot_id(snap));
    snprintf(out->db_id, sizeof(out->db_id), "%s", id);
    snprintf(out->generation, sizeof(out->generation), "%s", gen);
    snprintf(out->db_path, sizeof(out->db_path), "%s", path ? path : "");
    out->time_ns = jint(o, "time_ns");
    if (!out->time_ns)
        out->time_ns = cf_snapshot_time(snap);
    out->page_size = (uint32_t)jint(o, "page_size");
    out->pages = (uint32_t)jint(o, "pages");
    out->wal = json_is_true(json_object_get(o, "wal"));
    json_t *p = json_object_get(o, "position");
    if (json_is_object(p)) {
        out->has_position = true;
        out->salt1 = (uint32_t)jint(p, "salt1");
        out->salt2 = (uint32_t)jint(p, "salt2");
        out->ckpt_seq = (uint32_t)jint(p, "ckpt_seq");
        out->frame = (uint32_t)jint(p, "frame");
        out->cksum1 = (uint32_t)jint(p, "cksum1");
        out->cksum2 = (uint32_t)jint(p, "cksum2");
    }
out:
    json_decref(doc);
    return rc;
}

int cf_sqlite_base_info_get(cf_sqlite_base_info *out, const cf_snapshot *snap)
{
    return info_from_snapshot(out, snap);
}

int cf_sq__bases(cf_snapshot ***out, cf_sqlite_base_info **out_infos, size_t *out_count,
                 cf_repo *repo, const char *db_id)
{
    cf_snapshot **all = NULL;
    size_t n = 0, k = 0;
    *out = NULL;
    *out_count = 0;
    if (out_infos)
        *out_infos = NULL;
    int rc = cf_snapshot_list(&all, &n, repo, NULL);
    if (rc)
        return rc;
    cf_sqlite_base_info *infos = cf_calloc(n ? n : 1, sizeof(*infos));
    if (!infos) {
        cf_snapshot_list_free(all, n);
        return CF_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        cf_sqlite_base_info inf;
        if (info_from_snapshot(&inf, all[i]) != 0 || (db_id && strcmp(inf.db_id, db_id) != 0)) {
            cf_snapshot_free(all[i]);
            continue;
        }
        infos[k] = inf;
        all[k++] = all[i];
    }
    cf_error_clear();
    /* oldest first by the time each copy is consistent with */
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && infos[j - 1].time_ns > infos[j].time_ns; j--) {
            cf_sqlite_base_info ti = infos[j];
            infos[j] = infos[j - 1];
            infos[j - 1] = ti;
            cf_snapshot *ts = all[j];
            all[j] = all[j - 1];
            all[j - 1] = ts;
        }
    *out = all;
    *out_count = k;
    if (out_infos)
        *out_infos = infos;
    else
        free(infos);
    return 0;
}

/* ---- shipped objects ---- */

typedef struct {
    char prefix[160];
    size_t plen;
    uint64_t *v;
    size_t n, cap;
    int err;
} seq_ctx;

static int seq_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    seq_ctx *c = payload;
    if (strncmp(name, c->prefix, c->plen) != 0)
        return 0;
    const char *s = name + c->plen;
    char *end = NULL;
    /* digits only: strtoull would also take blanks, a sign, and wrap "-1" */
    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno)
        return 0;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        uint64_t *p = cf_realloc(c->v, nc * sizeof(*p));
        if (!p) {
            c->err = CF_ENOMEM;
            return 1;
        }
        c->v = p;
        c->cap = nc;
    }
    c->v[c->n++] = v;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int cf_sq__sequences(uint64_t **out, size_t *out_count, cf_repo *repo, const char *db_id,
                     const char *generation)
{
    seq_ctx c;
    memset(&c, 0, sizeof(c));
    snprintf(c.prefix, sizeof(c.prefix), "%s/%s/", db_id, generation);
    c.plen = strlen(c.prefix);
    int rc = cf_archive_list(repo, CF_SQLITE_ARCHIVE_KIND, seq_cb, &c);
    if (c.err)
        rc = c.err;
    if (rc) {
        free(c.v);
        return rc;
    }
    if (c.n)
        qsort(c.v, c.n, sizeof(uint64_t), cmp_u64);
    *out = c.v;
    *out_count = c.n;
    return 0;
}

int cf_sq__obj_get(cf_sq__obj *out, uint8_t **owned, cf_repo *repo, const char *db_id,
                   const char *generation, uint64_t seq)
{
    char name[256];
    snprintf(name, sizeof(name), "%s/%s/" CF_SQ_SEQ_FMT, db_id, generation,
             (unsigned long long)seq);
    uint8_t *data = NULL;
    size_t len = 0;
    *owned = NULL;
    int rc = cf_archive_get(repo, CF_SQLITE_ARCHIVE_KIND, name, &data, &len);
    if (rc == CF_ENOTFOUND)
        return cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are missing from the "
                            "archive", name);
    if (rc)
        return rc;
    rc = cf_sq__obj_decode(out, data, len, name);
    if (rc == 0 && (memcmp(out->generation, generation, 16) != 0 || out->sequence != seq))
        rc = cf_error_set(CF_ECORRUPT, 0, "shipped WAL frames '%s' are damaged: they belong to "
                          "%.16s/%llu", name, out->generation,
                          (unsigned long long)out->sequence);
    if (rc) {
        free(data);
        return rc;
    }
    *owned = data;
    return 0;
}
