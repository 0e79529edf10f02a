/*
 * wal.c - the WAL archive: file names, LSNs, and storing and fetching WAL files as archive
 * objects ("pgwal"), as archive_command and restore_command do.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source/postgres/pg.h"

/* ------------------------------------------------------------------ names */

static bool hexn(const char *s, size_t n, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

cf_pg__wal_kind cf_pg__wal_parse(cf_pg__wal_name *out, const char *name)
{
    memset(out, 0, sizeof(*out));
    size_t n = strlen(name);
    if (n == 16 && strcmp(name + 8, ".history") == 0 && hexn(name, 8, &out->tli))
        return out->kind = CF_PG_WAL_HISTORY;
    if (n < 24 || !hexn(name, 8, &out->tli) || !hexn(name + 8, 8, &out->log) ||
        !hexn(name + 16, 8, &out->seg))
        return CF_PG_WAL_NONE;
    if (n == 24)
        return out->kind = CF_PG_WAL_SEGMENT;
    if (strcmp(name + 24, ".partial") == 0)
        return out->kind = CF_PG_WAL_PARTIAL;
    if (n == 40 && name[24] == '.' && strcmp(name + 33, ".backup") == 0 &&
        hexn(name + 25, 8, &out->offset))
        return out->kind = CF_PG_WAL_BACKUP;
    memset(out, 0, sizeof(*out));
    return CF_PG_WAL_NONE;
}

void cf_pg__seg_name(char out[25], uint32_t tli, uint64_t segno, uint32_t segsize)
{
    uint64_t per = cf_pg__segs_per_id(segsize);
    snprintf(out, 25, "%08X%08X%08X", tli, (uint32_t)(segno / per), (uint32_t)(segno % per));
}

bool cf_pg__valid_segsize(uint64_t s)
{
    return s >= (1u << 20) && s <= (1u << 30) && (s & (s - 1)) == 0;
}

bool cf_pg__valid_cluster(const char *cluster)
{
    size_t n = strlen(cluster);
    if (n == 0 || n > 63 || cluster[0] == '.' || cluster[0] == '-')
        return false;
    for (const char *p = cluster; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return strstr(cluster, "..") == NULL;
}

int cf_pg__archive_name(char out[256], const char *cluster, const char *file)
{
    if (cluster && *cluster) {
        if (!cf_pg__valid_cluster(cluster))
            return cf_error_set(CF_EINVAL, 0,
                                "invalid cluster name '%s': use letters, digits, '.', '_', '-'",
                                cluster);
        snprintf(out, 256, "%s/%s", cluster, file);
    } else {
        snprintf(out, 256, "%s", file);
    }
    return 0;
}

/* ------------------------------------------------------------------ numbers */

bool cf_pg__dec(uint64_t *out, const char *s, const char **end, uint64_t max)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (end)
        *end = p;
    if (p == s)
        return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------ LSNs */

int cf_pg_lsn_parse(uint64_t *out, const char *s)
{
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash || slash == s || !slash[1] || slash - s > 8 || strlen(slash + 1) > 8)
        return cf_error_set(CF_EINVAL, 0, "invalid LSN '%s': expected X/Y in hexadecimal",
                            s ? s : "");
    uint32_t hi = 0, lo = 0;
    for (const char *p = s; p < slash; p++) {
        char c = *p;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return cf_error_set(CF_EINVAL, 0, "invalid LSN '%s': expected X/Y in hexadecimal", s);
        hi = hi << 4 | (uint32_t)d;
    }
    for (const char *p = slash + 1; *p; p++) {
        char c = *p;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return cf_error_set(CF_EINVAL, 0, "invalid LSN '%s': expected X/Y in hexadecimal", s);
        lo = lo << 4 | (uint32_t)d;
    }
    *out = (uint64_t)hi << 32 | lo;
    return 0;
}

void cf_pg_lsn_format(char out[20], uint64_t lsn)
{
    snprintf(out, 20, "%X/%X", (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

/* ------------------------------------------------------------------ push and fetch */

#define XLP_LONG_HEADER 0x0002
#define WAL_FILE_MAX ((size_t)1 << 30)

static int read_whole(uint8_t **out, size_t *out_len, const char *path)
{
    *out = NULL;
    *out_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to read WAL file '%s': %s",
                            path, strerror(errno));
    struct stat st;
    int rc = 0;
    uint8_t *data = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cf_error_set(CF_EINVAL, errno, "'%s' is not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > WAL_FILE_MAX) {
        rc = cf_error_set(CF_EINVAL, 0, "WAL file '%s' is too large (%lld bytes)", path,
                          (long long)st.st_size);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    if (!(data = cf_malloc(len ? len : 1))) {
        rc = CF_ENOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, data + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = cf_error_set(CF_EIO, errno, "unable to read WAL file '%s': %s", path,
                              strerror(errno));
            goto out;
        }
        if (n == 0) {
            rc = cf_error_set(CF_EIO, 0, "WAL file '%s' shrank while being read", path);
            goto out;
        }
        got += (size_t)n;
    }
    *out = data;
    *out_len = len;
    data = NULL;
out:
    free(data);
    close(fd);
    return rc;
}

/* A segment's first page is a long page header naming its own address and segment size. */
int cf_pg__check_segment(const cf_pg__wal_name *w, const char *name, const uint8_t *d, size_t len)
{
    uint16_t info;
    uint64_t pageaddr;
    uint32_t segsize;
    if (len < 40)
        return cf_error_set(CF_EINVAL, 0, "WAL segment '%s' is too short (%zu bytes)", name, len);
    memcpy(&info, d + 2, 2);
    memcpy(&pageaddr, d + 8, 8);
    memcpy(&segsize, d + 32, 4);
    if (!(info & XLP_LONG_HEADER) || !cf_pg__valid_segsize(segsize) || segsize != len)
        return cf_error_set(CF_EINVAL, 0,
                            "'%s' is not a WAL segment: no valid segment header (size %zu)",
                            name, len);
    uint64_t want = cf_pg__segno(w, segsize) * segsize;
    if (pageaddr != want || w->seg >= cf_pg__segs_per_id(segsize))
        return cf_error_set(CF_EINVAL, 0,
                            "WAL segment '%s' holds the data of another segment (page address "
                            "%X/%X, expected %X/%X)",
                            name, (uint32_t)(pageaddr >> 32), (uint32_t)pageaddr,
                            (uint32_t)(want >> 32), (uint32_t)want);
    return 0;
}

int cf_pg_wal_push(cf_repo *repo, const char *cluster, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    cf_pg__wal_name w;
    char full[256];
    if (cf_pg__wal_parse(&w, name) == CF_PG_WAL_NONE)
        return cf_error_set(CF_EINVAL, 0, "'%s' is not a WAL file name", name);
    int rc = cf_pg__archive_name(full, cluster, name);
    if (rc)
        return rc;
    uint8_t *data = NULL;
    size_t len = 0;
    if ((rc = read_whole(&data, &len, path)))
        return rc;
    if (w.kind == CF_PG_WAL_SEGMENT || w.kind == CF_PG_WAL_PARTIAL)
        rc = cf_pg__check_segment(&w, name, data, len);
    if (rc == 0) {
        rc = cf_archive_put(repo, CF_PG_ARCHIVE_KIND, full, data, len);
        if (rc == CF_EEXISTS)
            cf_error_hint("a different file was archived under this name before: another "
                          "cluster archives into this repository (give each one --cluster), or "
                          "a restored cluster archived on the same timeline");
    }
    free(data);
    return rc;
}

bool cf_pg_wal_absent(const char *url, const char *cluster, const char *name)
{
    cf_pg__wal_name w;
    char full[256];
    if (cf_pg__wal_parse(&w, name) == CF_PG_WAL_NONE)
        return false;
    cf_error_saved saved;
    cf_error_save(&saved);
    bool bad = cf_pg__archive_name(full, cluster, name) != 0;
    cf_error_restore(&saved);
    return !bad && cf_archive_absent_at(url, CF_PG_ARCHIVE_KIND, full);
}

int cf_pg_wal_fetch(cf_repo *repo, const char *cluster, const char *name, const char *dest)
{
    cf_pg__wal_name w;
    char full[256];
    if (cf_pg__wal_parse(&w, name) == CF_PG_WAL_NONE)
        return cf_error_set(CF_EINVAL, 0, "'%s' is not a WAL file name", name);
    int rc = cf_pg__archive_name(full, cluster, name);
    if (rc)
        return rc;
    uint8_t *data = NULL;
    size_t len = 0;
    if ((rc = cf_archive_get(repo, CF_PG_ARCHIVE_KIND, full, &data, &len)))
        return rc;
    int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to write '%s': %s", dest,
                          strerror(errno));
        free(data);
        return rc;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to write '%s': %s", dest,
                              strerror(errno));
            break;
        }
        done += (size_t)n;
    }
    if (close(fd) != 0 && rc == 0)
        rc = cf_error_set(cf_error_from_errno(errno), errno, "unable to write '%s': %s", dest,
                          strerror(errno));
    if (rc)
        unlink(dest);
    free(data);
    return rc;
}
