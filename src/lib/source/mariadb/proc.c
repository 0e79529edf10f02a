/*
 * proc.c - running the MariaDB client programs: finding them, their argv with the
 * connection options (--defaults-file first, as they require), child processes with pipes
 * and stderr kept for messages, and the small helpers the other files share.
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

#include "source/mariadb/my.h"

extern char **environ;

void cf_my__msg(cf_mariadb_message_cb cb, void *payload, const char *fmt, ...)
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

bool cf_my__valid_server(const char *s)
{
    if (!s || !*s || strlen(s) > 60 || s[0] == '.')
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return strstr(s, "..") == NULL;
}

static bool executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int cf_my__find(char *out, size_t outlen, const char *bindir, const char *const *names)
{
    for (const char *const *n = names; *n; n++) {
        if (bindir) {
            snprintf(out, outlen, "%s/%s", bindir, *n);
            if (executable(out))
                return 0;
            continue;
        }
        const char *path = getenv("PATH");
        if (!path || !*path)
            path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
        const char *p = path;
        while (*p) {
            const char *e = strchr(p, ':');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len > 0 && len < outlen - 2) {
                snprintf(out, outlen, "%.*s/%s", (int)len, p, *n);
                if (executable(out))
                    return 0;
            }
            p += len;
            if (*p == ':')
                p++;
        }
    }
    cf_error_set(CF_ENOTFOUND, 0, "program '%s' not found%s%s", names[0],
                 bindir ? " in " : " in PATH", bindir ? bindir : "");
    cf_error_hint("install the MariaDB client programs (apt-get install mariadb-client)");
    return CF_ENOTFOUND;
}

int cf_my__argv_start(cf_argv *a, const cf_mariadb_conn *c, const char *const *names)
{
    char prog[PATH_MAX];
    int rc = cf_my__find(prog, sizeof(prog), c->bindir, names);
    if (rc)
        return rc;
    if ((rc = cf_argv_add(a, prog)))
        return rc;
    /* --defaults-file must be the first option, or the client reads its other files too */
    if (c->defaults_file && (rc = cf_argv_addf(a, "--defaults-file=%s", c->defaults_file)))
        return rc;
    if (c->host && (rc = cf_argv_addf(a, "--host=%s", c->host)))
        return rc;
    if (c->port && (rc = cf_argv_addf(a, "--port=%s", c->port)))
        return rc;
    if (c->port && !c->host && !c->socket && (rc = cf_argv_add(a, "--protocol=TCP")))
        return rc;
    if (c->user && (rc = cf_argv_addf(a, "--user=%s", c->user)))
        return rc;
    if (c->socket && (rc = cf_argv_addf(a, "--socket=%s", c->socket)))
        return rc;
    return 0;
}

int cf_my__pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cf_error_set(CF_EIO, errno, "unable to create a pipe: %s", strerror(errno));
    return 0;
}

/* The environment for a child: ours without COFFER_* (secrets), plus extras. */
static char **child_env(const cf_mariadb_conn *c, const char *const *extra)
{
    size_t n = 0, k = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    for (const char *const *e = extra; e && *e; e++)
        n++;
    char **env = cf_calloc(n + 2, sizeof(char *));
    if (!env)
        return NULL;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "COFFER_", 7) == 0)
            continue;
        if (c && c->password && strncmp(*e, "MYSQL_PWD=", 10) == 0)
            continue;
        bool replaced = false;
        for (const char *const *x = extra; x && *x; x++) {
            const char *eq = strchr(*x, '=');
            size_t nl = eq ? (size_t)(eq - *x) + 1 : 0;
            if (nl && strncmp(*e, *x, nl) == 0)
                replaced = true;
        }
        if (!replaced)
            env[k++] = *e;
    }
    for (const char *const *x = extra; x && *x; x++)
        env[k++] = (char *)(uintptr_t)*x;
    env[k] = NULL;
    return env;
}

int cf_my__spawn(cf_my__proc *p, char *const *argv, int fd_in, int fd_out,
                 const cf_mariadb_conn *c, const char *const *env_extra)
{
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->err_fd = -1;
    const char *base = strrchr(argv[0], '/');
    snprintf(p->prog, sizeof(p->prog), "%s", base ? base + 1 : argv[0]);
    char tmpl[] = "/tmp/coffer-mariadb-err.XXXXXX";
    const char *td = getenv("TMPDIR");
    char *path = td && *td ? cf_asprintf("%s/coffer-mariadb-err.XXXXXX", td) : cf_strdup(tmpl);
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
    char *pwd = NULL;
    const char *extra[16];
    size_t ne = 0;
    if (c && c->password) {
        if (!(pwd = cf_asprintf("MYSQL_PWD=%s", c->password))) {
            close(p->err_fd);
            p->err_fd = -1;
            return CF_ENOMEM;
        }
        extra[ne++] = pwd;
    }
    for (const char *const *x = env_extra; x && *x && ne < 14; x++)
        extra[ne++] = *x;
    extra[ne] = NULL;
    char **env = child_env(c, extra);
    if (!env) {
        if (pwd)
            cf_wipe(pwd, strlen(pwd));
        free(pwd);
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
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
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
    if (pwd)
        cf_wipe(pwd, strlen(pwd));
    free(pwd);
    if (pid < 0) {
        close(p->err_fd);
        p->err_fd = -1;
        return cf_error_set(CF_EGENERIC, fe, "unable to start %s: %s", p->prog, strerror(fe));
    }
    p->pid = pid;
    return 0;
}

int cf_my__wait(cf_my__proc *p, int *code)
{
    if (p->waited || p->pid < 0) {
        *code = 0;
        return 0;
    }
    int st = 0;
    pid_t r;
    do
        r = waitpid(p->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    p->waited = true;
    if (r < 0) {
        *code = 127;
        return 0;
    }
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
    return 0;
}

void cf_my__kill(cf_my__proc *p)
{
    if (p->pid > 0 && !p->waited) {
        kill(p->pid, SIGTERM);
        int code;
        cf_my__wait(p, &code);
    }
}

void cf_my__proc_free(cf_my__proc *p)
{
    if (p->err_fd >= 0)
        close(p->err_fd);
    p->err_fd = -1;
}

void cf_my__last_line(cf_my__proc *p, char *buf, size_t len)
{
    buf[0] = '\0';
    if (p->err_fd < 0 || len < 2)
        return;
    off_t end = lseek(p->err_fd, 0, SEEK_END);
    char tail[2048];
    off_t start = end > (off_t)sizeof(tail) - 1 ? end - (off_t)sizeof(tail) + 1 : 0;
    ssize_t n = pread(p->err_fd, tail, (size_t)(end - start), start);
    if (n <= 0)
        return;
    tail[n] = '\0';
    while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
        tail[--n] = '\0';
    char *line = strrchr(tail, '\n');
    line = line ? line + 1 : tail;
    snprintf(buf, len, "%s", line);
}

int cf_my__fail(cf_my__proc *p, int code)
{
    char line[512];
    cf_my__last_line(p, line, sizeof(line));
    if (code >= 128)
        return cf_error_set(CF_EGENERIC, 0, "%s was killed by signal %d%s%s", p->prog,
                            code - 128, *line ? ": " : "", line);
    return cf_error_set(CF_EGENERIC, 0, "%s failed (exit %d)%s%s", p->prog, code,
                        *line ? ": " : "", line);
}

int cf_my__capture(char **out, char *const *argv, const cf_mariadb_conn *c, size_t max)
{
    int fds[2];
    *out = NULL;
    int rc = cf_my__pipe(fds);
    if (rc)
        return rc;
    cf_my__proc p;
    rc = cf_my__spawn(&p, argv, CF_MY_FD_NULL, fds[1], c, NULL);
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
    cf_my__wait(&p, &code);
    if (rc == 0 && code != 0)
        rc = cf_my__fail(&p, code);
    cf_my__proc_free(&p);
    if (rc == 0 && (rc = cf_buf_append(&b, "", 1)) == 0)
        *out = (char *)cf_buf_steal(&b, NULL);
    cf_buf_free(&b);
    return rc;
}
