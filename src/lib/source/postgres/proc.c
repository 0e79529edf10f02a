/*
 * proc.c - running the PostgreSQL client programs: finding them, switching to the server's
 * OS user, pipes to and from them, capturing their stderr, and psql queries.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "source/postgres/pg.h"

extern char **environ;

#define ERRALL_MAX (64 * 1024)

/* ------------------------------------------------------------------ users */

int cf_pg__user_lookup(cf_pg__user *out, const char *name)
{
    memset(out, 0, sizeof(*out));
    struct passwd pw, *res = NULL;
    char buf[4096];
    int e = name ? getpwnam_r(name, &pw, buf, sizeof(buf), &res)
                 : getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res);
    if (!res) {
        if (name)
            return cf_error_set(CF_ENOTFOUND, e, "there is no OS user '%s'", name);
        out->uid = geteuid();
        out->gid = getegid();
        snprintf(out->name, sizeof(out->name), "%u", (unsigned)out->uid);
        return 0;
    }
    out->uid = res->pw_uid;
    out->gid = res->pw_gid;
    snprintf(out->name, sizeof(out->name), "%s", res->pw_name);
    snprintf(out->home, sizeof(out->home), "%s", res->pw_dir ? res->pw_dir : "/");
    if (out->uid == geteuid())
        return 0;
    if (geteuid() != 0)
        return cf_error_set(CF_EPERM, 0, "cannot run programs as OS user '%s' without being root",
                            out->name);
    int n = 64;
    for (int tries = 0; tries < 4; tries++) {
        gid_t *g = cf_realloc(out->groups, (size_t)n * sizeof(gid_t));
        if (!g)
            return CF_ENOMEM;
        out->groups = g;
        int want = n;
        if (getgrouplist(out->name, out->gid, g, &want) >= 0) {
            out->ngroups = want;
            break;
        }
        n = want > n ? want : n * 2;
    }
    out->change = true;
    return 0;
}

void cf_pg__user_free(cf_pg__user *u)
{
    if (!u)
        return;
    free(u->groups);
    u->groups = NULL;
    u->ngroups = 0;
}

/* ------------------------------------------------------------------ connection */

/* Lines of postmaster.pid: 1 pid, 2 data dir, 3 start, 4 port, 5 socket dir, 6 listen addr. */
static int read_pidfile(const char *pgdata, char **port, char **sockdir, char **listen)
{
    char *path = cf_asprintf("%s/postmaster.pid", pgdata);
    char *text = NULL;
    if (!path)
        return CF_ENOMEM;
    int rc = cf_pg__read_text(&text, path, 64 * 1024);
    if (rc) {
        if (cf_error_last()->sys == ENOENT) {
            rc = cf_error_set(CF_ENOTFOUND, ENOENT,
                              "no server is running on data directory '%s' (no postmaster.pid)",
                              pgdata);
            cf_error_hint("start the server, or give --host and --port instead of --pgdata");
        } else {
            cf_error_hint("run as root or as the server's OS user, or give --host and --port "
                          "instead of --pgdata");
        }
        free(path);
        return rc;
    }
    free(path);
    char *line = text;
    for (int i = 1; line && i <= 6; i++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (i == 4 && *line)
            *port = cf_strdup(line);
        else if (i == 5 && *line)
            *sockdir = cf_strdup(line);
        else if (i == 6 && *line)
            *listen = cf_strdup(line);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return 0;
}

int cf_pg__resolve(cf_pg__target *out, const cf_pg_conn *c)
{
    memset(out, 0, sizeof(*out));
    char *pport = NULL, *psock = NULL, *plisten = NULL;
    const char *run_as = c->run_as;
    char owner[64] = "";
    int rc = 0;
    if (c->pgdata && *c->pgdata) {
        struct stat st;
        if (stat(c->pgdata, &st) != 0)
            return cf_error_set(cf_error_from_errno(errno), errno,
                                "unable to use data directory '%s': %s", c->pgdata,
                                strerror(errno));
        struct passwd *pw = getpwuid(st.st_uid);
        if (pw)
            snprintf(owner, sizeof(owner), "%s", pw->pw_name);
        if ((rc = read_pidfile(c->pgdata, &pport, &psock, &plisten)))
            goto out;
    }
    if (!run_as && geteuid() == 0) {
        if (*owner)
            run_as = owner;
        else if ((!c->host || c->host[0] == '/') && getpwnam("postgres"))
            run_as = "postgres"; /* root is rarely a database user; peer authentication */
    }
    if ((rc = cf_pg__user_lookup(&out->os, run_as)))
        goto out;
    const char *host = c->host;
    if (!host && psock)
        host = psock;
    if (!host && plisten) {
        /* no socket directory: the listen address ("*" or a list: use loopback) */
        host = (strchr(plisten, '*') || strchr(plisten, ',') || strchr(plisten, ' '))
                   ? "127.0.0.1"
                   : plisten;
    }
    const char *port = c->port ? c->port : pport;
    if ((host && !(out->host = cf_strdup(host))) || (port && !(out->port = cf_strdup(port))) ||
        (c->user && !(out->user = cf_strdup(c->user))) ||
        (c->dbname && !(out->dbname = cf_strdup(c->dbname))) ||
        (c->bindir && !(out->bindir = cf_strdup(c->bindir))))
        rc = CF_ENOMEM;
out:
    free(pport);
    free(psock);
    free(plisten);
    if (rc)
        cf_pg__target_free(out);
    return rc;
}

void cf_pg__target_free(cf_pg__target *t)
{
    if (!t)
        return;
    free(t->host);
    free(t->port);
    free(t->user);
    free(t->dbname);
    free(t->bindir);
    cf_pg__user_free(&t->os);
    memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------ argv */

int cf_pg__argv_conn(cf_argv *a, const cf_pg__target *t, bool with_db)
{
    int rc = 0;
    if (t->host && ((rc = cf_argv_add(a, "-h")) || (rc = cf_argv_add(a, t->host))))
        return rc;
    if (t->port && ((rc = cf_argv_add(a, "-p")) || (rc = cf_argv_add(a, t->port))))
        return rc;
    if (t->user && ((rc = cf_argv_add(a, "-U")) || (rc = cf_argv_add(a, t->user))))
        return rc;
    if (with_db && t->dbname &&
        ((rc = cf_argv_add(a, "-d")) || (rc = cf_argv_add(a, t->dbname))))
        return rc;
    return 0;
}

/* ------------------------------------------------------------------ finding programs */

static bool try_bin(char *out, size_t outlen, const char *dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    return n > 0 && (size_t)n < outlen && access(out, X_OK) == 0;
}

int cf_pg__find_bin(char *out, size_t outlen, const char *bindir, const char *name,
                    const char *version)
{
    char dir[PATH_MAX];
    if (bindir && *bindir) {
        if (try_bin(out, outlen, bindir, name))
            return 0;
        return cf_error_set(CF_ENOTFOUND, 0, "PostgreSQL program '%s' not found in '%s'", name,
                            bindir);
    }
    if (version && *version) {
        snprintf(dir, sizeof(dir), "/usr/lib/postgresql/%s/bin", version);
        if (try_bin(out, outlen, dir, name))
            return 0;
        snprintf(dir, sizeof(dir), "/usr/pgsql-%s/bin", version);
        if (try_bin(out, outlen, dir, name))
            return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len > 0 && len < sizeof(dir)) {
            memcpy(dir, path, len);
            dir[len] = '\0';
            if (try_bin(out, outlen, dir, name))
                return 0;
        }
        path += len + (colon ? 1 : 0);
    }
    /* Debian keeps the server programs (pg_ctl, initdb) off PATH: take the newest version */
    DIR *d = opendir("/usr/lib/postgresql");
    long best = -1;
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            char *end;
            long v = strtol(de->d_name, &end, 10);
            if (end == de->d_name || *end || v <= best)
                continue;
            snprintf(dir, sizeof(dir), "/usr/lib/postgresql/%s/bin", de->d_name);
            char cand[PATH_MAX];
            if (try_bin(cand, sizeof(cand), dir, name)) {
                best = v;
                snprintf(out, outlen, "%s", cand);
            }
        }
        closedir(d);
    }
    if (best >= 0)
        return 0;
    int rc = cf_error_set(CF_ENOTFOUND, 0, "PostgreSQL program '%s' not found", name);
    cf_error_hint("install the PostgreSQL client programs (Debian: postgresql-client), or "
                  "give --pg-bindir");
    return rc;
}

/* ------------------------------------------------------------------ environment */

static bool secret_var(const char *e)
{
    return strncmp(e, "COFFER_", 7) == 0;
}

char **cf_pg__env_for(const cf_pg__user *u)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **env = cf_calloc(n + 4, sizeof(char *));
    if (!env)
        return NULL;
    size_t k = 0;
    bool fail = false;
    for (char **e = environ; e && *e; e++) {
        if (secret_var(*e))
            continue;
        if (u && u->change &&
            (strncmp(*e, "HOME=", 5) == 0 || strncmp(*e, "USER=", 5) == 0 ||
             strncmp(*e, "LOGNAME=", 8) == 0))
            continue;
        if (!(env[k++] = cf_strdup(*e)))
            fail = true;
    }
    if (u && u->change) {
        if (!(env[k++] = cf_asprintf("HOME=%s", u->home[0] ? u->home : "/")) ||
            !(env[k++] = cf_asprintf("USER=%s", u->name)) ||
            !(env[k++] = cf_asprintf("LOGNAME=%s", u->name)))
            fail = true;
    }
    env[k] = NULL;
    if (fail) {
        cf_pg__env_free(env);
        return NULL;
    }
    return env;
}

void cf_pg__env_free(char **env)
{
    if (!env)
        return;
    for (char **e = env; *e; e++)
        free(*e);
    free(env);
}

/* ------------------------------------------------------------------ processes */

static void emit_line(cf_pg__proc *p, const char *line, size_t len)
{
    if (!p->on_line || len == 0)
        return;
    char buf[2048];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    p->on_line(p->line_level, buf, p->payload);
}

static void *err_reader(void *arg)
{
    cf_pg__proc *p = arg;
    char buf[4096];
    char line[2048];
    size_t ll = 0;
    for (;;) {
        ssize_t n = read(p->err_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        pthread_mutex_lock(&p->mu);
        size_t room = ERRALL_MAX - p->errall_len;
        if (p->errall && room > 0) {
            size_t k = (size_t)n < room ? (size_t)n : room;
            memcpy(p->errall + p->errall_len, buf, k);
            p->errall_len += k;
            p->errall[p->errall_len] = '\0';
        }
        /* keep the tail */
        for (ssize_t i = 0; i < n; i++) {
            if (p->errlen + 1 >= sizeof(p->errtail)) {
                size_t drop = sizeof(p->errtail) / 2;
                memmove(p->errtail, p->errtail + drop, p->errlen - drop);
                p->errlen -= drop;
            }
            p->errtail[p->errlen++] = buf[i];
        }
        p->errtail[p->errlen] = '\0';
        pthread_mutex_unlock(&p->mu);
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                emit_line(p, line, ll);
                ll = 0;
            } else if (ll < sizeof(line) - 1) {
                line[ll++] = buf[i];
            }
        }
    }
    emit_line(p, line, ll);
    return NULL;
}

int cf_pg__spawn(cf_pg__proc *p, char *const *argv, const cf_pg__user *u, int fd_in, int fd_out,
                 char *const *env, cf_pg_message_cb on_line, cf_pg_msg_level line_level,
                 void *payload)
{
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->in_fd = p->out_fd = p->err_fd = -1;
    p->on_line = on_line;
    p->payload = payload;
    p->line_level = line_level;
    const char *slash = strrchr(argv[0], '/');
    p->prog = slash ? slash + 1 : argv[0];
    pthread_mutex_init(&p->mu, NULL);
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    int devnull = -1;
    char **own_env = NULL;
    int rc = 0;
    if (!(p->errall = cf_malloc(ERRALL_MAX + 1)))
        return CF_ENOMEM;
    p->errall[0] = '\0';
    if (!env) {
        if (!(own_env = cf_pg__env_for(u)))
            return CF_ENOMEM;
        env = own_env;
    }
    if ((fd_in == CF_PG_FD_PIPE && pipe2(in_pipe, O_CLOEXEC) != 0) ||
        (fd_out == CF_PG_FD_PIPE && pipe2(out_pipe, O_CLOEXEC) != 0) ||
        pipe2(err_pipe, O_CLOEXEC) != 0 ||
        ((fd_in == CF_PG_FD_NULL || fd_out == CF_PG_FD_NULL) &&
         (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)) {
        rc = cf_error_set(CF_EIO, errno, "unable to start '%s': %s", p->prog, strerror(errno));
        goto fail;
    }
    int cin = fd_in == CF_PG_FD_PIPE ? in_pipe[0] : fd_in == CF_PG_FD_NULL ? devnull : fd_in;
    int cout = fd_out == CF_PG_FD_PIPE ? out_pipe[1] : fd_out == CF_PG_FD_NULL ? devnull : fd_out;
    int cerr = err_pipe[1];
    bool change = u && u->change;
    pid_t pid = fork();
    if (pid < 0) {
        rc = cf_error_set(CF_EIO, errno, "unable to start '%s': %s", p->prog, strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* the child: only async-signal-safe calls until exec */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* move the descriptors out of the way of 0..2 first */
        int a = fcntl(cin, F_DUPFD, 10), b = fcntl(cout, F_DUPFD, 10), c = fcntl(cerr, F_DUPFD, 10);
        if (a < 0 || b < 0 || c < 0 || dup2(a, 0) < 0 || dup2(b, 1) < 0 || dup2(c, 2) < 0)
            _exit(127);
        close_range(3, ~0U, 0);
        if (change) {
            if (setgroups((size_t)u->ngroups, u->groups) != 0 || setgid(u->gid) != 0 ||
                setuid(u->uid) != 0)
                _exit(126);
            if (chdir("/") != 0)
                _exit(126);
        }
        umask(077);
        execve(argv[0], argv, env);
        _exit(127);
    }
    p->pid = pid;
    if (in_pipe[0] >= 0)
        close(in_pipe[0]);
    if (out_pipe[1] >= 0)
        close(out_pipe[1]);
    close(err_pipe[1]);
    if (devnull >= 0)
        close(devnull);
    p->in_fd = in_pipe[1];
    p->out_fd = out_pipe[0];
    p->err_fd = err_pipe[0];
    cf_pg__env_free(own_env);
    if (pthread_create(&p->err_thread, NULL, err_reader, p) == 0)
        p->err_started = true;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    if (devnull >= 0)
        close(devnull);
    cf_pg__env_free(own_env);
    free(p->errall);
    p->errall = NULL;
    pthread_mutex_destroy(&p->mu);
    return rc;
}

int cf_pg__wait(cf_pg__proc *p, int *out_code)
{
    if (p->in_fd >= 0) {
        close(p->in_fd);
        p->in_fd = -1;
    }
    if (!p->waited && p->pid > 0) {
        int st = 0;
        while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
        }
        p->status = st;
        p->waited = true;
    }
    if (p->err_started) {
        pthread_join(p->err_thread, NULL);
        p->err_started = false;
    }
    if (p->err_fd >= 0) {
        close(p->err_fd);
        p->err_fd = -1;
    }
    if (p->out_fd >= 0) {
        close(p->out_fd);
        p->out_fd = -1;
    }
    int code = WIFEXITED(p->status) ? WEXITSTATUS(p->status)
               : WIFSIGNALED(p->status) ? 128 + WTERMSIG(p->status)
                                        : 1;
    if (out_code)
        *out_code = code;
    return 0;
}

void cf_pg__kill(cf_pg__proc *p)
{
    if (p->pid > 0 && !p->waited)
        kill(p->pid, SIGTERM);
    cf_pg__wait(p, NULL);
}

void cf_pg__proc_free(cf_pg__proc *p)
{
    if (!p->errall)
        return;
    free(p->errall);
    p->errall = NULL;
    pthread_mutex_destroy(&p->mu);
}

const char *cf_pg__last_line(cf_pg__proc *p, char *buf, size_t len)
{
    pthread_mutex_lock(&p->mu);
    size_t end = p->errlen;
    while (end > 0 && (p->errtail[end - 1] == '\n' || p->errtail[end - 1] == '\r' ||
                       p->errtail[end - 1] == ' '))
        end--;
    size_t start = end;
    while (start > 0 && p->errtail[start - 1] != '\n')
        start--;
    size_t n = end - start < len - 1 ? end - start : len - 1;
    memcpy(buf, p->errtail + start, n);
    buf[n] = '\0';
    pthread_mutex_unlock(&p->mu);
    return buf;
}

int cf_pg__proc_error(cf_pg__proc *p, int code)
{
    char line[1024];
    cf_pg__last_line(p, line, sizeof(line));
    if (code == 127 && !*line)
        return cf_error_set(CF_EGENERIC, 0, "unable to run '%s'", p->prog);
    if (code > 128)
        return cf_error_set(CF_EGENERIC, 0, "%s was killed by signal %d%s%s", p->prog, code - 128,
                            *line ? ": " : "", line);
    return cf_error_set(CF_EGENERIC, 0, "%s failed (exit %d)%s%s", p->prog, code,
                        *line ? ": " : "", line);
}

/* ------------------------------------------------------------------ psql */

int cf_pg__psql(char **out, const cf_pg__target *t, const char *sql)
{
    *out = NULL;
    char bin[PATH_MAX];
    cf_argv a = {0};
    cf_pg__proc p;
    cf_buf b;
    cf_buf_init(&b, 16 << 20);
    int rc = cf_pg__find_bin(bin, sizeof(bin), t->bindir, "psql", NULL);
    if (rc)
        return rc;
    if ((rc = cf_argv_add(&a, bin)) || (rc = cf_argv_add(&a, "-X")) ||
        (rc = cf_argv_add(&a, "-A")) || (rc = cf_argv_add(&a, "-t")) ||
        (rc = cf_argv_add(&a, "-q")) || (rc = cf_argv_add(&a, "-w")) ||
        (rc = cf_argv_add(&a, "-v")) || (rc = cf_argv_add(&a, "ON_ERROR_STOP=1")) ||
        (rc = cf_pg__argv_conn(&a, t, true)) || (rc = cf_argv_add(&a, "-c")) ||
        (rc = cf_argv_add(&a, sql)))
        goto out;
    if ((rc = cf_pg__spawn(&p, a.v, &t->os, CF_PG_FD_NULL, CF_PG_FD_PIPE, NULL, NULL, 0, NULL)))
        goto out;
    char buf[8192];
    for (;;) {
        ssize_t n = read(p.out_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (rc == 0)
            rc = cf_buf_append(&b, buf, (size_t)n);
    }
    int code = 0;
    cf_pg__wait(&p, &code);
    if (rc == 0 && code != 0)
        rc = cf_pg__proc_error(&p, code);
    cf_pg__proc_free(&p);
    if (rc == 0 && (rc = cf_buf_append(&b, "", 1)) == 0)
        *out = (char *)cf_buf_steal(&b, NULL);
out:
    cf_buf_free(&b);
    cf_argv_free(&a);
    return rc;
}

/* ------------------------------------------------------------------ SIGPIPE */

void cf_pg__sigpipe_block(cf_pg__sigpipe *s)
{
    sigset_t set, pending;
    memset(s, 0, sizeof(*s));
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    s->was_pending = sigismember(&pending, SIGPIPE) == 1;
    s->blocked = pthread_sigmask(SIG_BLOCK, &set, &s->oldmask) == 0;
}

void cf_pg__sigpipe_restore(cf_pg__sigpipe *s)
{
    if (!s->blocked)
        return;
    if (!s->was_pending) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) == 1) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &s->oldmask, NULL);
    s->blocked = false;
}

/* ------------------------------------------------------------------ misc */

char *cf_pg__abspath(const char *path)
{
    if (path[0] == '/')
        return cf_strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd))) {
        cf_error_set(CF_EIO, errno, "unable to get the working directory: %s", strerror(errno));
        return NULL;
    }
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    return cf_asprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path);
}

int cf_pg__conf_quote(cf_buf *b, const char *s)
{
    int rc = cf_buf_append(b, "'", 1);
    for (const char *p = s; rc == 0 && *p; p++) {
        if (*p == '\'')
            rc = cf_buf_append(b, "''", 2);
        else if (*p == '\\')
            rc = cf_buf_append(b, "\\\\", 2);
        else if (*p == '\n' || *p == '\r')
            rc = cf_error_set(CF_EINVAL, 0, "a setting cannot contain a line break");
        else
            rc = cf_buf_append(b, p, 1);
    }
    return rc ? rc : cf_buf_append(b, "'", 1);
}

int cf_pg__sh_quote(cf_buf *b, const char *s)
{
    int rc = cf_buf_append(b, "'", 1);
    for (const char *p = s; rc == 0 && *p; p++)
        rc = *p == '\'' ? cf_buf_append(b, "'\\''", 4) : cf_buf_append(b, p, 1);
    return rc ? rc : cf_buf_append(b, "'", 1);
}

void cf_pg__msg(cf_pg_message_cb cb, void *payload, cf_pg_msg_level level, const char *fmt, ...)
{
    if (!cb)
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    cb(level, buf, payload);
}

int cf_pg__read_text(char **out, const char *path, size_t max)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cf_error_set(cf_error_from_errno(errno), errno, "unable to read '%s': %s", path,
                            strerror(errno));
    cf_buf b;
    cf_buf_init(&b, max + 1);
    char buf[8192];
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = cf_error_set(CF_EIO, errno, "unable to read '%s': %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if ((rc = cf_buf_append(&b, buf, (size_t)n)))
            break;
    }
    close(fd);
    if (rc == 0 && (rc = cf_buf_append(&b, "", 1)) == 0)
        *out = (char *)cf_buf_steal(&b, NULL);
    cf_buf_free(&b);
    return rc;
}

void cf_pg__sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
