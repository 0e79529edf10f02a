/*
 * proc.c - running mongodump and mongorestore: finding them, their argv with the connection
 * options, the 0600 --config file that carries secrets instead of the command line, child
 * processes with stderr kept for messages, and URI redaction.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "source/mongo/mongo_src.h"

extern char **environ;

void cf_mongo__msg(cf_mongo_message_cb cb, void *payload, const char *fmt, ...)
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

static bool executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int cf_mongo__find(char *out, size_t outlen, const char *tool, const char *def)
{
    const char *name = tool && *tool ? tool : def;
    if (strchr(name, '/')) {
        if (strlen(name) < outlen && executable(name)) {
            snprintf(out, outlen, "%s", name);
            return 0;
        }
        cf_error_set(CF_ENOTFOUND, 0, "program '%s' not found or not executable", name);
    } else {
        const char *path = getenv("PATH");
        if (!path || !*path)
            path = "/usr/local/bin:/usr/bin:/bin";
        for (const char *p = path; *p;) {
            const char *e = strchr(p, ':');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len > 0 && len + strlen(name) + 2 <= outlen) {
                snprintf(out, outlen, "%.*s/%s", (int)len, p, name);
                if (executable(out))
                    return 0;
            }
            p += len;
            if (*p == ':')
                p++;
        }
        cf_error_set(CF_ENOTFOUND, 0, "program '%s' not found in PATH", name);
    }
    cf_error_hint("install the MongoDB Database Tools (package mongodb-database-tools), or "
                  "name the program with --%s PATH or COFFER_%s", def,
                  strcmp(def, "mongodump") == 0 ? "MONGODUMP" : "MONGORESTORE");
    return CF_ENOTFOUND;
}

/* ------------------------------------------------------------------ URIs and secrets */

typedef struct {
    char *p;
    size_t len, cap;
} outbuf;

static void put(outbuf *o, const char *s, size_t n)
{
    if (o->cap == 0)
        return;
    size_t room = o->cap - 1 - o->len;
    if (n > room)
        n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static bool secret_key(const char *k, size_t n)
{
    static const char *const words[] = {"password", "secret", "token", NULL};
    for (const char *const *w = words; *w; w++) {
        size_t wl = strlen(*w);
        for (size_t i = 0; i + wl <= n; i++)
            if (strncasecmp(k + i, *w, wl) == 0)
                return true;
    }
    return false;
}

bool cf_mongo_uri_redact(char *out, size_t outlen, const char *uri)
{
    outbuf o = {out, 0, outlen};
    bool redacted = false;
    if (outlen)
        out[0] = '\0';
    if (!uri)
        return false;
    const char *s = strstr(uri, "://");
    const char *auth = s ? s + 3 : uri;
    const char *query = strchr(auth, '?');
    const char *hend = query ? query : auth + strlen(auth);
    /* the user information ends at the last '@' before the options: a raw '@' or '/' in a
     * password (which should be percent-encoded) is then redacted too, never shown */
    const char *at = NULL;
    for (const char *p = auth; p < hend; p++)
        if (*p == '@')
            at = p;
    put(&o, uri, (size_t)(auth - uri));
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon) {
            put(&o, auth, (size_t)(colon - auth));
            redacted = true;
        } else {
            put(&o, auth, (size_t)(at - auth));
        }
        put(&o, "@", 1);
        put(&o, at + 1, (size_t)(hend - at - 1));
    } else {
        put(&o, auth, (size_t)(hend - auth));
    }
    if (query) {
        /* options such as tlsCertificateKeyFilePassword=... */
        const char *p = query;
        while (*p) {
            put(&o, p, 1); /* '?' or '&' */
            p++;
            size_t n = strcspn(p, "&");
            const char *eq = memchr(p, '=', n);
            if (eq && secret_key(p, (size_t)(eq - p))) {
                put(&o, p, (size_t)(eq - p) + 1);
                put(&o, "REDACTED", 8);
                redacted = true;
            } else {
                put(&o, p, n);
            }
            p += n;
        }
    }
    return redacted;
}

int cf_mongo__yaml_quote(cf_buf *b, const char *s)
{
    int rc = cf_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            rc = cf_buf_append(b, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            rc = cf_buf_printf(b, "\\x%02x", *p);
        } else {
            rc = cf_buf_append(b, p, 1);
        }
    }
    return rc ? rc : cf_buf_append(b, "\"", 1);
}

static bool uri_has_secret(const char *uri)
{
    char tmp[4096];
    return uri && cf_mongo_uri_redact(tmp, sizeof(tmp), uri);
}

int cf_mongo__config_write(char *path, size_t pathlen, const cf_mongo_conn *c)
{
    path[0] = '\0';
    bool uri_secret = uri_has_secret(c->uri);
    if (!c->password && !uri_secret)
        return 0;
    const char *td = getenv("TMPDIR");
    if (!td || !*td)
        td = "/tmp";
    if ((size_t)snprintf(path, pathlen, "%s/coffer-mongo-XXXXXX", td) >= pathlen) {
        path[0] = '\0';
        return cf_error_set(CF_EINVAL, 0, "TMPDIR '%s' is too long", td);
    }
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        path[0] = '\0';
        return cf_error_set(cf_error_from_errno(e), e, "unable to create a file in '%s': %s",
                            td, strerror(e));
    }
    cf_buf b;
    cf_buf_init(&b, 1 << 20);
    int rc = 0;
    if (fchmod(fd, 0600) != 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to protect '%s': %s", path, strerror(errno));
        goto out;
    }
    if (c->password && ((rc = cf_buf_append_str(&b, "password: ")) ||
                        (rc = cf_mongo__yaml_quote(&b, c->password)) ||
                        (rc = cf_buf_append(&b, "\n", 1))))
        goto out;
    if (uri_secret && ((rc = cf_buf_append_str(&b, "uri: ")) ||
                       (rc = cf_mongo__yaml_quote(&b, c->uri)) ||
                       (rc = cf_buf_append(&b, "\n", 1))))
        goto out;
    for (size_t done = 0; done < b.len;) {
        ssize_t w = write(fd, b.data + done, b.len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno ? errno : EIO;
            rc = cf_error_set(cf_error_from_errno(e), e, "unable to write '%s': %s", path,
                              strerror(e));
            goto out;
        }
        done += (size_t)w;
    }
out:
    if (b.data)
        cf_wipe(b.data, b.cap);
    cf_buf_free(&b);
    if (close(fd) != 0 && rc == 0)
        rc = cf_error_set(CF_EIO, errno, "unable to write '%s': %s", path, strerror(errno));
    if (rc)
        cf_mongo__config_remove(path);
    return rc;
}

void cf_mongo__config_remove(char *path)
{
    if (path && path[0]) {
        unlink(path);
        path[0] = '\0';
    }
}

int cf_mongo__argv_start(cf_argv *a, const char *prog, const char *config,
                         const cf_mongo_conn *c)
{
    int rc;
    if (c->uri && (c->host || c->port))
        return cf_error_set(CF_EINVAL, 0, "a MongoDB URI cannot be combined with --host or "
                            "--port");
    if ((rc = cf_argv_add(a, prog)) || (rc = cf_argv_add(a, "--archive")))
        return rc;
    if (config && *config && (rc = cf_argv_addf(a, "--config=%s", config)))
        return rc;
    if (c->uri && !uri_has_secret(c->uri) && (rc = cf_argv_addf(a, "--uri=%s", c->uri)))
        return rc;
    if (c->host && (rc = cf_argv_addf(a, "--host=%s", c->host)))
        return rc;
    if (c->port && (rc = cf_argv_addf(a, "--port=%s", c->port)))
        return rc;
    if (c->username && (rc = cf_argv_addf(a, "--username=%s", c->username)))
        return rc;
    if (c->auth_db && (rc = cf_argv_addf(a, "--authenticationDatabase=%s", c->auth_db)))
        return rc;
    return 0;
}

/* ------------------------------------------------------------------ child processes */

/* Our environment without coffer's secrets (COFFER_*) and MONGODB_PASSWORD. */
static char **child_env(void)
{
    size_t n = 0, k = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **env = cf_calloc(n + 1, sizeof(char *));
    if (!env)
        return NULL;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "COFFER_", 7) != 0 && strncmp(*e, "MONGODB_PASSWORD=", 17) != 0)
            env[k++] = *e;
    env[k] = NULL;
    return env;
}

int cf_mongo__spawn(cf_mongo__proc *p, char *const *argv, int fd_in, int fd_out)
{
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->err_fd = -1;
    const char *base = strrchr(argv[0], '/');
    snprintf(p->prog, sizeof(p->prog), "%s", base ? base + 1 : argv[0]);
    const char *td = getenv("TMPDIR");
    char *path = cf_asprintf("%s/coffer-mongo-err.XXXXXX", td && *td ? td : "/tmp");
    if (!path)
        return CF_ENOMEM;
    p->err_fd = mkostemp(path, O_CLOEXEC);
    if (p->err_fd < 0) {
        int e = errno;
        free(path);
        return cf_error_set(CF_EIO, e, "unable to create a temporary file: %s", strerror(e));
    }
    unlink(path);
    free(path);
    char **env = child_env();
    if (!env) {
        close(p->err_fd);
        p->err_fd = -1;
        return CF_ENOMEM;
    }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        /* child: only async-signal-safe calls until exec */
        int in = fd_in >= 0 ? fd_in : devnull, out = fd_out >= 0 ? fd_out : devnull;
        if (in >= 0)
            dup2(in, 0);
        if (out >= 0)
            dup2(out, 1);
        dup2(p->err_fd, 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execve(argv[0], argv, env);
        static const char msg[] = "unable to execute the program\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
        _exit(127);
    }
    int fe = errno;
    if (devnull >= 0)
        close(devnull);
    free(env);
    if (pid < 0) {
        close(p->err_fd);
        p->err_fd = -1;
        return cf_error_set(CF_EGENERIC, fe, "unable to start %s: %s", p->prog, strerror(fe));
    }
    p->pid = pid;
    return 0;
}

void cf_mongo__wait(cf_mongo__proc *p, int *code)
{
    *code = 0;
    if (p->waited || p->pid < 0)
        return;
    int st = 0;
    pid_t r;
    do
        r = waitpid(p->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    p->waited = true;
    if (r < 0)
        *code = 127;
    else
        *code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
}

void cf_mongo__kill(cf_mongo__proc *p)
{
    if (p->pid > 0 && !p->waited) {
        kill(p->pid, SIGTERM);
        int code;
        cf_mongo__wait(p, &code);
    }
}

void cf_mongo__proc_free(cf_mongo__proc *p)
{
    if (p->err_fd >= 0)
        close(p->err_fd);
    p->err_fd = -1;
}

void cf_mongo__tail(cf_mongo__proc *p, char *buf, size_t len, int n)
{
    if (len == 0)
        return;
    buf[0] = '\0';
    if (p->err_fd < 0 || len < 2 || n < 1)
        return;
    off_t end = lseek(p->err_fd, 0, SEEK_END);
    char tail[4096];
    if (end <= 0)
        return;
    off_t start = end > (off_t)sizeof(tail) - 1 ? end - (off_t)sizeof(tail) + 1 : 0;
    ssize_t got = pread(p->err_fd, tail, (size_t)(end - start), start);
    if (got <= 0)
        return;
    size_t k = (size_t)got;
    tail[k] = '\0';
    /* nothing but printable text: a tool's message goes into one-line errors */
    for (size_t i = 0; i < k; i++)
        if ((unsigned char)tail[i] < 0x20 && tail[i] != '\n')
            tail[i] = ' ';
    /* walk back over n non-empty lines */
    size_t e = k;
    int lines = 0;
    size_t from = 0;
    while (e > 0 && lines < n) {
        while (e > 0 && (tail[e - 1] == '\n' || tail[e - 1] == ' '))
            e--;
        if (e == 0)
            break;
        size_t b = e;
        while (b > 0 && tail[b - 1] != '\n')
            b--;
        lines++;
        from = b;
        e = b;
    }
    if (lines == 0)
        return;
    size_t last = k;
    while (last > from && (tail[last - 1] == '\n' || tail[last - 1] == ' '))
        last--;
    snprintf(buf, len, "%.*s", (int)(last - from), tail + from);
}

int cf_mongo__fail(cf_mongo__proc *p, int code, cf_mongo_message_cb cb, void *payload)
{
    char lines[2048], last[512];
    cf_mongo__tail(p, lines, sizeof(lines), 10);
    cf_mongo__tail(p, last, sizeof(last), 1);
    if (cb && lines[0]) {
        for (char *l = lines; l && *l;) {
            char *nl = strchr(l, '\n');
            if (nl)
                *nl = '\0';
            if (*l)
                cf_mongo__msg(cb, payload, "%s: %s", p->prog, l);
            l = nl ? nl + 1 : NULL;
        }
    }
    if (code >= 128)
        return cf_error_set(CF_EGENERIC, 0, "%s was killed by signal %d%s%s", p->prog,
                            code - 128, *last ? ": " : "", last);
    return cf_error_set(CF_EGENERIC, 0, "%s failed (exit %d)%s%s", p->prog, code,
                        *last ? ": " : "", last);
}

int cf_mongo__capture(char **out, char *const *argv, size_t max)
{
    int fds[2];
    *out = NULL;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cf_error_set(CF_EIO, errno, "unable to create a pipe: %s", strerror(errno));
    cf_mongo__proc p;
    int rc = cf_mongo__spawn(&p, argv, CF_MONGO_FD_NULL, fds[1]);
    close(fds[1]);
    if (rc) {
        close(fds[0]);
        return rc;
    }
    cf_buf b;
    cf_buf_init(&b, max + 1);
    char chunk[8192];
    for (;;) {
        ssize_t n = read(fds[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (rc == 0 && cf_buf_append(&b, chunk, (size_t)n) != 0)
            rc = cf_error_set(CF_EGENERIC, 0, "too much output from %s", p.prog);
    }
    close(fds[0]);
    int code = 0;
    cf_mongo__wait(&p, &code);
    if (rc == 0 && code != 0)
        rc = cf_mongo__fail(&p, code, NULL, NULL);
    cf_mongo__proc_free(&p);
    if (rc == 0 && (rc = cf_buf_append(&b, "", 1)) == 0)
        *out = (char *)cf_buf_steal(&b, NULL);
    cf_buf_free(&b);
    return rc;
}

void cf_mongo__version_from_text(char *out, size_t outlen, const char *text)
{
    if (outlen == 0)
        return;
    out[0] = '\0';
    if (!text)
        return;
    /* the first non-empty line; "<tool> version: X" -> X */
    while (*text == '\n' || *text == '\r' || *text == ' ')
        text++;
    size_t n = strcspn(text, "\r\n");
    const char *v = memmem(text, n, "version:", 8);
    if (v) {
        v += 8;
        while (v < text + n && *v == ' ')
            v++;
        n -= (size_t)(v - text);
        text = v;
    }
    while (n > 0 && text[n - 1] == ' ')
        n--;
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++)
        out[k++] = (unsigned char)text[i] < 0x20 || text[i] == 0x7f ? '?' : text[i];
    out[k] = '\0';
}
