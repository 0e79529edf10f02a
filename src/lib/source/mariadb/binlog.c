/*
 * binlog.c - the binlog archive: closed binlog files (every one SHOW BINARY LOGS lists but
 * the last, which the server is writing) stored as archive objects "<server>/<file>".
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source/mariadb/my.h"

#define BINLOG_MAX ((size_t)4 << 30)

static const char *const clients[] = {"mariadb", "mysql", NULL};

typedef struct {
    char prefix[80];
    size_t plen;
    char **names;
    size_t n, cap;
    int err;
} names_ctx;

static int names_cb(const char *name, uint64_t size, void *payload)
{
    (void)size;
    names_ctx *c = payload;
    if (strncmp(name, c->prefix, c->plen) != 0 || strchr(name + c->plen, '/'))
        return 0;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 32;
        char **p = cf_realloc(c->names, nc * sizeof(*p));
        if (!p) {
            c->err = CF_ENOMEM;
            return 1;
        }
        c->names = p;
        c->cap = nc;
    }
    if (!(c->names[c->n] = cf_strdup(name + c->plen))) {
        c->err = CF_ENOMEM;
        return 1;
    }
    c->n++;
    return 0;
}

int cf_my__archived(char ***out, size_t *out_count, cf_repo *repo, const char *server)
{
    names_ctx c;
    memset(&c, 0, sizeof(c));
    snprintf(c.prefix, sizeof(c.prefix), "%s/", server);
    c.plen = strlen(c.prefix);
    int rc = cf_archive_list(repo, CF_MARIADB_ARCHIVE_KIND, names_cb, &c);
    if (c.err)
        rc = c.err;
    if (rc) {
        for (size_t i = 0; i < c.n; i++)
            free(c.names[i]);
        free(c.names);
        return rc;
    }
    *out = c.names;
    *out_count = c.n;
    return 0;
}

static int read_file(uint8_t **out, size_t *out_len, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to read binlog '%s': %s",
                            path, strerror(errno));
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > BINLOG_MAX) {
        rc = cf_error_set(CF_EINVAL, 0, "binlog '%s' is not a regular file of at most 4 GiB",
                          path);
        goto out;
    }
    size_t n = (size_t)st.st_size, done = 0;
    if (!(buf = cf_malloc(n ? n : 1))) {
        rc = CF_ENOMEM;
        goto out;
    }
    while (done < n) {
        ssize_t r = read(fd, buf + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = cf_error_set(CF_EIO, errno, "unable to read binlog '%s': %s", path,
                              strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    if (done < 4 || memcmp(buf, "\xfe" "bin", 4) != 0) {
        rc = cf_error_set(CF_EINVAL, 0, "'%s' is not a binlog file (no magic number)", path);
        goto out;
    }
    *out = buf;
    *out_len = done;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

int cf_mariadb_binlog_push(cf_repo *repo, const cf_mariadb_binlog_push_opts *o,
                           cf_mariadb_binlog_push_result *out)
{
    cf_mariadb_binlog_push_result res;
    cf_argv a = {0};
    char *text = NULL, *dir = NULL, **have = NULL, **lines = NULL;
    size_t nhave = 0;
    int rc;
    memset(&res, 0, sizeof(res));
    const char *server = o->server ? o->server : CF_MARIADB_DEFAULT_SERVER;
    if (!cf_my__valid_server(server))
        return cf_error_set(CF_EINVAL, 0, "invalid server name '%s'", server);
    if ((rc = cf_my__argv_start(&a, &o->conn, clients)) || (rc = cf_argv_add(&a, "-N")) ||
        (rc = cf_argv_add(&a, "-B")) || (rc = cf_argv_add(&a, "-e")))
        goto out;
    if (o->binlog_dir) {
        if (!(dir = cf_strdup(o->binlog_dir))) {
            rc = CF_ENOMEM;
            goto out;
        }
    } else {
        if ((rc = cf_argv_add(&a, "select @@log_bin_basename")) ||
            (rc = cf_my__capture(&text, a.v, &o->conn, 1 << 16)))
            goto out;
        char *nl = strchr(text, '\n');
        if (nl)
            *nl = '\0';
        char *slash = strrchr(text, '/');
        if (!slash || strcmp(text, "NULL") == 0) {
            rc = cf_error_set(CF_EINVAL, 0, "the server does not say where its binlogs are "
                              "(@@log_bin_basename is '%s')", text);
            cf_error_hint("give --binlog-dir");
            goto out;
        }
        *slash = '\0';
        if (!(dir = cf_strdup(*text ? text : "/"))) {
            rc = CF_ENOMEM;
            goto out;
        }
        free(text);
        text = NULL;
        free(a.v[--a.n]);
        a.v[a.n] = NULL;
    }
    if ((rc = cf_argv_add(&a, "show binary logs")) ||
        (rc = cf_my__capture(&text, a.v, &o->conn, 1 << 24))) {
        rc = cf_error_wrap(rc, "unable to list the binlogs");
        goto out;
    }
    /* lines "name<TAB>size[...]"; the last one is being written */
    size_t maxl = 1;
    for (const char *p = text; *p; p++)
        maxl += *p == '\n';
    if (!(lines = cf_calloc(maxl, sizeof(char *)))) {
        rc = CF_ENOMEM;
        goto out;
    }
    size_t nl = 0;
    for (char *p = text; *p && nl < maxl;) {
        char *e = strchr(p, '\n');
        if (e)
            *e = '\0';
        char *tab = strchr(p, '\t');
        if (tab)
            *tab = '\0';
        if (*p)
            lines[nl++] = p;
        if (!e)
            break;
        p = e + 1;
    }
    if (nl == 0) {
        rc = cf_error_set(CF_EINVAL, 0, "the server lists no binlogs: is log-bin enabled?");
        goto out;
    }
    snprintf(res.active, sizeof(res.active), "%s", lines[nl - 1]);
    if ((rc = cf_my__archived(&have, &nhave, repo, server)))
        goto out;
    for (size_t i = 0; i + 1 < nl; i++) {
        const char *name = lines[i];
        res.closed++;
        bool archived = false;
        for (size_t k = 0; k < nhave && !archived; k++)
            archived = strcmp(have[k], name) == 0;
        if (archived) {
            res.already++;
            continue;
        }
        char objname[512];
        if (strchr(name, '/') || snprintf(objname, sizeof(objname), "%s/%s", server, name) >=
                                     (int)sizeof(objname)) {
            rc = cf_error_set(CF_EINVAL, 0, "unexpected binlog name '%s'", name);
            goto out;
        }
        char *path = cf_asprintf("%s/%s", dir, name);
        uint8_t *data = NULL;
        size_t len = 0;
        if (!path) {
            rc = CF_ENOMEM;
            goto out;
        }
        rc = read_file(&data, &len, path);
        free(path);
        if (rc == 0)
            rc = cf_archive_put(repo, CF_MARIADB_ARCHIVE_KIND, objname, data, len);
        free(data);
        if (rc) {
            rc = cf_error_wrap(rc, "unable to archive binlog '%s'", name);
            goto out;
        }
        res.stored++;
        res.bytes += len;
        cf_my__msg(o->on_message, o->payload, "archived %s (%zu bytes)", name, len);
    }
out:
    for (size_t i = 0; i < nhave; i++)
        free(have[i]);
    free(have);
    free(lines);
    free(text);
    free(dir);
    cf_argv_free(&a);
    if (out)
        *out = res;
    return rc;
}
