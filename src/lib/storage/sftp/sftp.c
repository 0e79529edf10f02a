/*
 * sftp.c - the SFTP storage driver (libssh2): one SSH session and SFTP channel per instance,
 * shared by all threads under a mutex; host keys checked against known_hosts; key-only
 * authentication; objects written to a temporary file, fsynced, then renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libssh2.h>
#include <libssh2_sftp.h>

#include "coffer/sys/storage.h"
#include "util/util.h"

#define TMP_PREFIX ".tmp-"
#define DEFAULT_PORT 22
#define CONNECT_TIMEOUT_MS 10000 /* TCP connect, SSH handshake and authentication */
#define OP_TIMEOUT_MS 120000     /* any single wait for the server once connected */
#define WRITE_CHUNK ((size_t)4 << 20)
#define READ_CHUNK ((size_t)4 << 20)
#define LIST_MAX_DEPTH 64
#define LIST_BUF_MAX ((size_t)1 << 30)
#define NAME_BUF 4096

typedef struct {
    /* where */
    char *user;
    char *host;     /* without brackets */
    int port;
    char *root;     /* the repository directory on the server: "/abs", "rel" or "/" */
    char *hostport; /* "host:port" or "[v6]:port", for messages */
    char *display;  /* "sftp:LOCATION" as given, for messages */

    /* the connection; everything below is guarded by lock */
    pthread_mutex_t lock;
    int sock;
    LIBSSH2_SESSION *ssh;
    LIBSSH2_SFTP *sftp;
    bool lost;         /* the running operation saw the connection fail: redo it */
    bool broken;       /* the connection failed after the operation took effect: drop it */
    bool no_fsync;     /* the server lacks fsync@openssh.com */
    bool no_dir_fsync; /* the server cannot open directories for fsync */
} sftp_drv;

/* The last failure of a libssh2 call, captured before anything else can overwrite it. */
typedef struct {
    int lib;          /* libssh2 error code */
    unsigned long st; /* SFTP status, when lib is LIBSSH2_ERROR_SFTP_PROTOCOL */
    char msg[256];    /* libssh2's message */
} sftp_err;

static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
static int g_init_rc;
static atomic_int g_inject_drop;

static void lib_init(void)
{
    g_init_rc = libssh2_init(0);
}

/* ---- errors ---- */

static const char *status_text(unsigned long st)
{
    switch (st) {
    case LIBSSH2_FX_EOF: return "end of file";
    case LIBSSH2_FX_NO_SUCH_FILE: return "no such file";
    case LIBSSH2_FX_PERMISSION_DENIED: return "permission denied";
    case LIBSSH2_FX_FAILURE: return "failure reported by the server";
    case LIBSSH2_FX_BAD_MESSAGE: return "bad message";
    case LIBSSH2_FX_NO_CONNECTION: return "no connection";
    case LIBSSH2_FX_CONNECTION_LOST: return "connection lost";
    case LIBSSH2_FX_OP_UNSUPPORTED: return "operation not supported by the server";
    case LIBSSH2_FX_INVALID_HANDLE: return "invalid handle";
    case LIBSSH2_FX_NO_SUCH_PATH: return "no such path";
    case LIBSSH2_FX_FILE_ALREADY_EXISTS: return "file already exists";
    case LIBSSH2_FX_WRITE_PROTECT: return "write protected";
    case LIBSSH2_FX_NO_MEDIA: return "no media";
    case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM: return "no space left on the server";
    case LIBSSH2_FX_QUOTA_EXCEEDED: return "quota exceeded";
    case LIBSSH2_FX_LOCK_CONFLICT: return "lock conflict";
    case LIBSSH2_FX_DIR_NOT_EMPTY: return "directory not empty";
    case LIBSSH2_FX_NOT_A_DIRECTORY: return "not a directory";
    case LIBSSH2_FX_INVALID_FILENAME: return "invalid file name";
    case LIBSSH2_FX_LINK_LOOP: return "too many symbolic links";
    default: return "unknown sftp status";
    }
}

static int status_code(unsigned long st)
{
    switch (st) {
    case LIBSSH2_FX_NO_SUCH_FILE:
    case LIBSSH2_FX_NO_SUCH_PATH:
    case LIBSSH2_FX_NOT_A_DIRECTORY:
        return CF_ENOTFOUND;
    case LIBSSH2_FX_PERMISSION_DENIED:
    case LIBSSH2_FX_WRITE_PROTECT:
        return CF_EPERM;
    case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM:
    case LIBSSH2_FX_QUOTA_EXCEEDED:
        return CF_ENOSPACE;
    case LIBSSH2_FX_FILE_ALREADY_EXISTS:
        return CF_EEXISTS;
    case LIBSSH2_FX_OP_UNSUPPORTED:
        return CF_EUNSUPPORTED;
    case LIBSSH2_FX_NO_CONNECTION:
    case LIBSSH2_FX_CONNECTION_LOST:
    case LIBSSH2_FX_LOCK_CONFLICT:
        return CF_ERETRYABLE;
    default:
        return CF_EIO;
    }
}

static void capture(const sftp_drv *d, sftp_err *e)
{
    char *m = NULL;
    int mlen = 0;
    e->lib = libssh2_session_last_error(d->ssh, &m, &mlen, 0);
    e->st = e->lib == LIBSSH2_ERROR_SFTP_PROTOCOL && d->sftp ? libssh2_sftp_last_error(d->sftp)
                                                              : 0;
    snprintf(e->msg, sizeof(e->msg), "%.*s", m ? mlen : 0, m ? m : "");
    if (e->lib == 0) /* a call failed without saying why: treat it as a broken session */
        e->lib = LIBSSH2_ERROR_SOCKET_NONE;
}

/* Is the failure an SFTP status from the server (the session is fine)? */
static bool is_status(const sftp_err *e)
{
    return e->lib == LIBSSH2_ERROR_SFTP_PROTOCOL;
}

static bool is_status_of(const sftp_err *e, unsigned long st)
{
    return is_status(e) && e->st == st;
}

/* Report a failure captured in e: an SFTP status maps to a code; anything else means the
 * connection is unusable, which marks it lost (the operation is retried once on a new one). */
static int report(sftp_drv *d, const sftp_err *e, const char *verb, const char *name)
{
    if (is_status(e)) {
        int code = status_code(e->st);
        if (code == CF_ENOTFOUND)
            return cf_error_set(code, (int)e->st, "object '%s' not found in '%s'", name,
                                d->display);
        return cf_error_set(code, (int)e->st, "unable to %s '%s' in '%s': %s", verb, name,
                            d->display, status_text(e->st));
    }
    if (e->lib == LIBSSH2_ERROR_ALLOC)
        return cf_error_set(CF_ENOMEM, ENOMEM, "out of memory in ssh session with %s",
                            d->hostport);
    d->lost = true;
    return cf_error_set(CF_ERETRYABLE, e->lib, "unable to %s '%s' in '%s': connection to %s failed: %s",
                        verb, name, d->display, d->hostport, e->msg[0] ? e->msg : "unknown error");
}

static int fail(sftp_drv *d, const char *verb, const char *name)
{
    sftp_err e;
    capture(d, &e);
    return report(d, &e, verb, name);
}

static int not_found(const sftp_drv *d, const char *name)
{
    return cf_error_set(CF_ENOTFOUND, 0, "object '%s' not found in '%s'", name, d->display);
}

/* ---- the location ---- */

static bool bad_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return true;
    return false;
}

static char *login_name(void)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res && res->pw_name[0])
        return cf_strdup(res->pw_name);
    const char *u = getenv("USER");
    if (!u || !*u)
        u = getenv("LOGNAME");
    return u && *u ? cf_strdup(u) : NULL;
}

static char *home_dir(void)
{
    const char *h = getenv("HOME");
    if (h && *h)
        return cf_strdup(h);
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res && res->pw_dir[0])
        return cf_strdup(res->pw_dir);
    return NULL;
}

static int bad_url(const char *loc, const char *why)
{
    /* The location never holds a secret (passwords are refused before we get here). */
    int rc = cf_error_set(CF_EINVAL, 0, "invalid sftp url 'sftp:%s': %s", loc, why);
    cf_error_hint("use sftp:USER@HOST:/abs/path, sftp:USER@HOST:rel/path or "
                  "sftp://USER@HOST:PORT/abs/path");
    return rc;
}

/* Parse "[USER@]HOST" or "[USER@][V6]" from s[0..n), with an optional ":PORT" when
 * with_port. */
static int parse_authority(sftp_drv *d, const char *loc, const char *s, size_t n, bool with_port)
{
    const char *at = memchr(s, '@', n);
    const char *h = s;
    size_t hn = n;
    if (at) {
        /* the last '@' separates the user, as in ssh */
        const char *p = at;
        while ((p = memchr(p + 1, '@', n - (size_t)(p + 1 - s))) != NULL)
            at = p;
        size_t un = (size_t)(at - s);
        if (memchr(s, ':', un))
            return cf_error_set(CF_EINVAL, 0,
                                "sftp urls cannot hold a password; use key authentication "
                                "(COFFER_SFTP_KEY or ssh-agent)");
        if (un == 0 || bad_chars(s, un))
            return bad_url(loc, "the user name is empty or has spaces");
        d->user = cf_strndup(s, un);
        if (!d->user)
            return CF_ENOMEM;
        h = at + 1;
        hn = n - un - 1;
    }
    const char *port = NULL;
    size_t pn = 0;
    if (hn && h[0] == '[') {
        const char *close = memchr(h, ']', hn);
        if (!close)
            return bad_url(loc, "unbalanced '[' in the host");
        size_t rest = hn - (size_t)(close + 1 - h);
        if (rest) {
            if (!with_port || close[1] != ':')
                return bad_url(loc, "unexpected text after ']'");
            port = close + 2;
            pn = rest - 1;
        }
        d->host = cf_strndup(h + 1, (size_t)(close - h - 1));
    } else {
        const char *colon = with_port ? memchr(h, ':', hn) : NULL;
        size_t len = colon ? (size_t)(colon - h) : hn;
        if (colon) {
            port = colon + 1;
            pn = hn - len - 1;
        }
        d->host = cf_strndup(h, len);
    }
    if (!d->host)
        return CF_ENOMEM;
    if (!d->host[0] || bad_chars(d->host, strlen(d->host)) || strchr(d->host, '/'))
        return bad_url(loc, "the host is missing or malformed");
    d->port = DEFAULT_PORT;
    if (port) {
        long v = 0;
        if (pn == 0 || pn > 5)
            return bad_url(loc, "the port must be a number from 1 to 65535");
        for (size_t i = 0; i < pn; i++) {
            if (port[i] < '0' || port[i] > '9')
                return bad_url(loc, "the port must be a number from 1 to 65535");
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return bad_url(loc, "the port must be a number from 1 to 65535");
        d->port = (int)v;
    }
    if (!d->user && !(d->user = login_name()))
        return bad_url(loc, "no user given and the login name is unknown");
    return 0;
}

/*
 * LOCATION is what follows "sftp:":
 *   USER@HOST:/abs/path   USER@HOST:rel/path (relative to the login directory)
 *   //USER@HOST[:PORT]/abs/path   //USER@HOST[:PORT]/~/rel/path
 * USER may be left out (the local login name is used); HOST may be "[v6addr]".
 */
static int parse_location(sftp_drv *d, const char *loc)
{
    int rc;
    const char *path;
    if (strncmp(loc, "//", 2) == 0) {
        const char *a = loc + 2;
        const char *slash = strchr(a, '/');
        if (!slash)
            return bad_url(loc, "no path after the host");
        if ((rc = parse_authority(d, loc, a, (size_t)(slash - a), true)) < 0)
            return rc;
        path = slash;
        if (strncmp(path, "/~/", 3) == 0)
            path += 3;
        else if (strcmp(path, "/~") == 0)
            path = ".";
    } else {
        /* the host ends at the first ':' outside brackets */
        const char *p = loc;
        bool in_brackets = false;
        for (; *p; p++) {
            if (*p == '[')
                in_brackets = true;
            else if (*p == ']')
                in_brackets = false;
            else if (*p == ':' && !in_brackets)
                break;
            else if (*p == '/' && !in_brackets)
                return bad_url(loc, "expected USER@HOST:PATH");
        }
        if (in_brackets)
            return bad_url(loc, "unbalanced '[' in the host");
        /* "user:password@host:path" would otherwise parse as host "user", path
         * "password@host:path": refuse it without repeating it */
        const char *at = *p == ':' ? strchr(p + 1, '@') : NULL;
        if (at && !memchr(p + 1, '/', (size_t)(at - p - 1)) && strchr(at, ':') &&
            !memchr(loc, '@', (size_t)(p - loc)))
            return cf_error_set(CF_EINVAL, 0,
                                "sftp urls cannot hold a password; use key authentication "
                                "(COFFER_SFTP_KEY or ssh-agent)");
        if (*p != ':')
            return bad_url(loc, "expected USER@HOST:PATH");
        if ((rc = parse_authority(d, loc, loc, (size_t)(p - loc), false)) < 0)
            return rc;
        path = p + 1;
        if (strncmp(path, "~/", 2) == 0)
            path += 2;
        else if (strcmp(path, "~") == 0)
            path = ".";
    }
    if (!*path)
        return bad_url(loc, "the path is empty");
    for (const char *c = path; *c; c++)
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            return bad_url(loc, "the path contains a control character");
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    d->root = cf_strndup(path, len);
    if (!d->root)
        return CF_ENOMEM;
    d->hostport = strchr(d->host, ':') ? cf_asprintf("[%s]:%d", d->host, d->port)
                                       : cf_asprintf("%s:%d", d->host, d->port);
    d->display = cf_asprintf("sftp:%s", loc);
    if (!d->hostport || !d->display)
        return CF_ENOMEM;
    return 0;
}

/* The path on the server of an object (or of a folder, given "data/ab"). malloc'd. */
static char *server_path(const sftp_drv *d, const char *name)
{
    if (!name || !*name)
        return cf_strdup(d->root);
    if (strcmp(d->root, "/") == 0)
        return cf_asprintf("/%s", name);
    return cf_asprintf("%s/%s", d->root, name);
}

/* The directory part of a server path, malloc'd ("." for a bare name, "/" for "/x"). */
static char *parent_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return cf_strdup(".");
    if (slash == path)
        return cf_strdup("/");
    return cf_strndup(path, (size_t)(slash - path));
}

static void random_hex(char out[33])
{
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            /* no entropy source: fall back to time, pid and a counter (names need only be
             * unique, not secret) */
            static atomic_ulong counter;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
            uint64_t b = ((uint64_t)getpid() << 32) ^ atomic_fetch_add(&counter, 1);
            memcpy(r, &a, 8);
            memcpy(r + 8, &b, 8);
            break;
        }
        got += (size_t)n;
    }
    cf_hex_encode(out, r, sizeof(r));
}

/* ---- connecting ---- */

static int tcp_connect(sftp_drv *d)
{
    int rc = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", d->port);
    int g = getaddrinfo(d->host, portstr, &hints, &res);
    if (g != 0) {
        rc = cf_error_set(g == EAI_AGAIN ? CF_ERETRYABLE : CF_EIO, 0,
                          "unable to connect to sftp server %s: cannot resolve host: %s",
                          d->hostport, gai_strerror(g));
        cf_error_hint("check the host name in the repository url");
        return rc;
    }
    int err = 0;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                int n;
                do {
                    n = poll(&pfd, 1, CONNECT_TIMEOUT_MS);
                } while (n < 0 && errno == EINTR);
                if (n == 0) {
                    err = ETIMEDOUT;
                } else if (n < 0) {
                    err = errno;
                } else {
                    socklen_t l = sizeof(err);
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
                        err = errno;
                }
            }
            if (err != 0) {
                close(fd);
                fd = -1;
                continue;
            }
        }
        break;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        char eb[128];
        const char *why = err == ETIMEDOUT ? "timed out after 10 s" : strerror_r(err, eb, sizeof(eb));
        rc = cf_error_set(CF_ERETRYABLE, err, "unable to connect to sftp server %s: %s",
                          d->hostport, why);
        cf_error_hint("check that the ssh server is running and reachable on %s", d->hostport);
        return rc;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    d->sock = fd;
    return 0;
}

/* Tear the connection down. Unless graceful, the socket is shut first so that nothing waits
 * for a server that is gone. */
static void conn_close(sftp_drv *d, bool graceful)
{
    if (d->sock >= 0 && !graceful)
        (void)shutdown(d->sock, SHUT_RDWR);
    if (d->sftp)
        libssh2_sftp_shutdown(d->sftp);
    d->sftp = NULL;
    if (d->ssh) {
        if (graceful)
            libssh2_session_disconnect(d->ssh, "closing");
        libssh2_session_free(d->ssh);
    }
    d->ssh = NULL;
    if (d->sock >= 0)
        close(d->sock);
    d->sock = -1;
}

static int session_error(sftp_drv *d, const char *what)
{
    sftp_err e;
    capture(d, &e);
    int rc = cf_error_set(e.lib == LIBSSH2_ERROR_ALLOC ? CF_ENOMEM : CF_ERETRYABLE, e.lib,
                          "%s with sftp server %s failed: %s", what, d->hostport,
                          e.msg[0] ? e.msg : "unknown error");
    return rc;
}

typedef struct {
    const char *name; /* "ssh-ed25519" */
    int knownhost;    /* LIBSSH2_KNOWNHOST_KEY_* */
} key_kind;

static key_kind host_key_kind(int type)
{
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return (key_kind){"ssh-rsa", LIBSSH2_KNOWNHOST_KEY_SSHRSA};
    case LIBSSH2_HOSTKEY_TYPE_DSS: return (key_kind){"ssh-dss", LIBSSH2_KNOWNHOST_KEY_SSHDSS};
#ifdef LIBSSH2_HOSTKEY_TYPE_ECDSA_256
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
        return (key_kind){"ecdsa-sha2-nistp256", LIBSSH2_KNOWNHOST_KEY_ECDSA_256};
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
        return (key_kind){"ecdsa-sha2-nistp384", LIBSSH2_KNOWNHOST_KEY_ECDSA_384};
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
        return (key_kind){"ecdsa-sha2-nistp521", LIBSSH2_KNOWNHOST_KEY_ECDSA_521};
#endif
#ifdef LIBSSH2_HOSTKEY_TYPE_ED25519
    case LIBSSH2_HOSTKEY_TYPE_ED25519:
        return (key_kind){"ssh-ed25519", LIBSSH2_KNOWNHOST_KEY_ED25519};
#endif
    default: return (key_kind){"unknown", LIBSSH2_KNOWNHOST_KEY_UNKNOWN};
    }
}

/* The host as known_hosts names it: "host" on port 22, "[host]:port" elsewhere. malloc'd. */
static char *known_name(const sftp_drv *d)
{
    return d->port == DEFAULT_PORT ? cf_strdup(d->host)
                                   : cf_asprintf("[%s]:%d", d->host, d->port);
}

/* Read an OpenSSH known_hosts file line by line; lines libssh2 cannot parse (markers such as
 * @cert-authority, key types it does not know) are skipped instead of failing the file. A
 * missing file is empty. */
static void known_hosts_load(LIBSSH2_KNOWNHOSTS *kh, const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        line[len] = '\0'; /* libssh2 looks one byte past len for a newline */
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == len || line[i] == '#' || line[i] == '@')
            continue;
        (void)libssh2_knownhost_readline(kh, line + i, len - i, LIBSSH2_KNOWNHOST_FILE_OPENSSH);
    }
    free(line);
    fclose(f);
}

/* Append the host key to the known_hosts file at path (creating it, and its directory, with
 * private modes). */
static int known_hosts_add(sftp_drv *d, LIBSSH2_KNOWNHOSTS *kh, const char *path,
                           const char *key, size_t klen, key_kind kind)
{
    int rc = 0;
    char eb[128];
    char *name = known_name(d);
    char *dir = NULL;
    int fd = -1;
    char line[16384];
    size_t outlen = 0;
    struct libssh2_knownhost *entry = NULL;
    if (!name) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (libssh2_knownhost_addc(kh, name, NULL, key, klen, NULL, 0,
                               LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                                   kind.knownhost,
                               &entry) != 0 ||
        libssh2_knownhost_writeline(kh, entry, line, sizeof(line) - 1, &outlen,
                                    LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
        rc = session_error(d, "recording the host key");
        goto out;
    }
    if (outlen == 0 || line[outlen - 1] != '\n')
        line[outlen++] = '\n';
    dir = parent_of(path);
    if (!dir) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int err = errno;
        rc = cf_error_set(cf_error_from_errno(err), err,
                          "unable to record the host key of %s in '%s': %s", d->hostport, path,
                          strerror_r(err, eb, sizeof(eb)));
        goto out;
    }
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, outlen) != (ssize_t)outlen || fsync(fd) != 0) {
        int err = errno;
        rc = cf_error_set(cf_error_from_errno(err), err,
                          "unable to record the host key of %s in '%s': %s", d->hostport, path,
                          strerror_r(err, eb, sizeof(eb)));
        goto out;
    }
out:
    if (fd >= 0)
        close(fd);
    free(dir);
    free(name);
    return rc;
}

static int check_host_key(sftp_drv *d)
{
    int rc = 0;
    size_t klen = 0;
    int ktype = 0;
    char *path = NULL, *home = NULL, *b64 = NULL, *kname = NULL;
    LIBSSH2_KNOWNHOSTS *kh = NULL;

    const char *key = libssh2_session_hostkey(d->ssh, &klen, &ktype);
    const char *hash = libssh2_hostkey_hash(d->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
    if (!key || !hash) {
        rc = session_error(d, "reading the host key");
        goto out;
    }
    key_kind kind = host_key_kind(ktype);
    b64 = cf_base64_encode((const uint8_t *)hash, 32);
    if (!b64) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (size_t n = strlen(b64); n && b64[n - 1] == '='; n--)
        b64[n - 1] = '\0';

    const char *env = getenv("COFFER_SFTP_KNOWN_HOSTS");
    if (env && *env) {
        path = cf_strdup(env);
    } else {
        home = home_dir();
        path = home ? cf_asprintf("%s/.ssh/known_hosts", home) : NULL;
        if (!home) {
            rc = cf_error_set(CF_ESTORAGE_AUTH, 0,
                              "cannot check the host key of %s: no home directory for "
                              "~/.ssh/known_hosts",
                              d->hostport);
            cf_error_hint("set COFFER_SFTP_KNOWN_HOSTS to a known_hosts file");
            goto out;
        }
    }
    if (!path) {
        rc = CF_ENOMEM;
        goto out;
    }
    kh = libssh2_knownhost_init(d->ssh);
    if (!kh) {
        rc = session_error(d, "reading known hosts");
        goto out;
    }
    known_hosts_load(kh, path);
    if (!(env && *env))
        known_hosts_load(kh, "/etc/ssh/ssh_known_hosts");

    int typemask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW;
    /* Look up exactly the name OpenSSH uses ("[host]:port" off port 22), without libssh2's
     * fallback from "[host]:port" to a plain "host" entry, which OpenSSH does not do. */
    kname = known_name(d);
    if (!kname) {
        rc = CF_ENOMEM;
        goto out;
    }
    int check = kind.knownhost == LIBSSH2_KNOWNHOST_KEY_UNKNOWN
                    ? LIBSSH2_KNOWNHOST_CHECK_NOTFOUND
                    : libssh2_knownhost_checkp(kh, kname, -1, key, klen,
                                               typemask | kind.knownhost, NULL);
    if (check == LIBSSH2_KNOWNHOST_CHECK_MATCH)
        goto out;
    if (check == LIBSSH2_KNOWNHOST_CHECK_FAILURE) {
        rc = session_error(d, "checking the host key");
        goto out;
    }
    if (check == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
        rc = cf_error_set(CF_ESTORAGE_AUTH, 0,
                          "host key of sftp server %s has changed: it now presents %s key "
                          "SHA256:%s, which does not match '%s'; refusing to connect",
                          d->hostport, kind.name, b64, path);
        cf_error_hint("this may be a man-in-the-middle attack; if the server's key really "
                      "changed, remove the old entry with: ssh-keygen -R '%s' -f '%s'",
                      kname, path);
        goto out;
    }
    /* Not found with this key type: is the host known with a key of another type? That is
     * a change too, and accept-new must not paper over it (as with ssh). */
    if (libssh2_knownhost_checkp(kh, kname, -1, key, klen, typemask, NULL) ==
        LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
        rc = cf_error_set(CF_ESTORAGE_AUTH, 0,
                          "host key of sftp server %s has changed: it now presents %s key "
                          "SHA256:%s, but '%s' holds a key of another type for it; refusing "
                          "to connect",
                          d->hostport, kind.name, b64, path);
        cf_error_hint("if the server's keys really changed, remove the old entries with "
                      "ssh-keygen -R and connect again");
        goto out;
    }
    const char *accept = getenv("COFFER_SFTP_ACCEPT_NEW");
    if (accept && strcmp(accept, "1") == 0 && kind.knownhost != LIBSSH2_KNOWNHOST_KEY_UNKNOWN) {
        rc = known_hosts_add(d, kh, path, key, klen, kind);
        goto out;
    }
    rc = cf_error_set(CF_ESTORAGE_AUTH, 0,
                      "host key of sftp server %s is not known: %s key SHA256:%s is not in "
                      "'%s'; refusing to connect",
                      d->hostport, kind.name, b64, path);
    if (d->port == DEFAULT_PORT)
        cf_error_hint("check the fingerprint with the server's administrator, then add it "
                      "with 'ssh-keyscan %s >> %s', or set COFFER_SFTP_ACCEPT_NEW=1 to record "
                      "it on first connection",
                      d->host, path);
    else
        cf_error_hint("check the fingerprint with the server's administrator, then add it "
                      "with 'ssh-keyscan -p %d %s >> %s', or set COFFER_SFTP_ACCEPT_NEW=1 to "
                      "record it on first connection",
                      d->port, d->host, path);
out:
    if (kh)
        libssh2_knownhost_free(kh);
    free(kname);
    free(b64);
    free(path);
    free(home);
    return rc;
}

/* After a failed authentication attempt: is the session still usable for another? */
static bool auth_refused(int lib)
{
    return lib == LIBSSH2_ERROR_AUTHENTICATION_FAILED || lib == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED ||
           lib == LIBSSH2_ERROR_FILE || lib == LIBSSH2_ERROR_METHOD_NOT_SUPPORTED ||
           lib == LIBSSH2_ERROR_AGENT_PROTOCOL || lib == LIBSSH2_ERROR_PUBLICKEY_PROTOCOL ||
           lib == LIBSSH2_ERROR_KEYFILE_AUTH_FAILED;
}

/* Is the private key file (or its .pub companion) an RSA key? Reads headers only. */
static bool rsa_key(const char *file)
{
    char line[128] = "";
    bool rsa = false;
    FILE *f = fopen(file, "re");
    if (f) {
        rsa = fgets(line, sizeof(line), f) && strstr(line, "BEGIN RSA PRIVATE KEY");
        fclose(f);
    }
    char *pub = cf_asprintf("%s.pub", file);
    if (!rsa && pub && (f = fopen(pub, "re")) != NULL) {
        rsa = fgets(line, sizeof(line), f) && strncmp(line, "ssh-rsa ", 8) == 0;
        fclose(f);
    }
    free(pub);
    return rsa;
}

/* Try one private key file. Returns 0 when authenticated, 1 when refused (reason appended to
 * tried), or a negative code for a broken connection. */
static int try_key_file(sftp_drv *d, const char *file, cf_buf *tried)
{
    const char *pass = getenv("COFFER_SFTP_KEY_PASSPHRASE");
    int r = libssh2_userauth_publickey_fromfile_ex(d->ssh, d->user, (unsigned)strlen(d->user),
                                                   NULL, file, pass);
    if (r == 0)
        return 0;
    sftp_err e;
    capture(d, &e);
    if (!auth_refused(e.lib))
        return cf_error_set(CF_ERETRYABLE, e.lib,
                            "authentication with sftp server %s failed: connection error: %s",
                            d->hostport, e.msg);
    if (e.lib == LIBSSH2_ERROR_FILE)
        cf_buf_printf(tried, "%skey '%s' could not be loaded (unreadable, unsupported, or "
                             "encrypted without COFFER_SFTP_KEY_PASSPHRASE)",
                      tried->len ? "; " : "", file);
    else if (rsa_key(file))
        /* libssh2 1.10 signs RSA authentication with SHA-1 ("ssh-rsa") only, which OpenSSH
         * 8.8 and later refuse unless PubkeyAcceptedAlgorithms allows it */
        cf_buf_printf(tried, "%sRSA key '%s' was refused (this build can sign RSA only with "
                             "SHA-1 ssh-rsa, which OpenSSH 8.8+ refuses by default; use an "
                             "ed25519 key)",
                      tried->len ? "; " : "", file);
    else
        cf_buf_printf(tried, "%skey '%s' was refused", tried->len ? "; " : "", file);
    return 1;
}

/* ssh-agent identities. Same returns as try_key_file; 1 also when there is no agent. */
static int try_agent(sftp_drv *d, cf_buf *tried)
{
    int rc = 1;
    const char *sock = getenv("SSH_AUTH_SOCK");
    if (!sock || !*sock)
        return 1;
    LIBSSH2_AGENT *agent = libssh2_agent_init(d->ssh);
    if (!agent)
        return 1;
    if (libssh2_agent_connect(agent) != 0) {
        cf_buf_printf(tried, "%sssh-agent at SSH_AUTH_SOCK could not be reached",
                      tried->len ? "; " : "");
        goto out;
    }
    if (libssh2_agent_list_identities(agent) != 0) {
        cf_buf_printf(tried, "%sssh-agent did not list its keys", tried->len ? "; " : "");
        goto disconnect;
    }
    struct libssh2_agent_publickey *id = NULL, *prev = NULL;
    int n = 0;
    while (libssh2_agent_get_identity(agent, &id, prev) == 0) {
        prev = id;
        n++;
        if (libssh2_agent_userauth(agent, d->user, id) == 0) {
            rc = 0;
            goto disconnect;
        }
        sftp_err e;
        capture(d, &e);
        if (!auth_refused(e.lib) && e.lib != LIBSSH2_ERROR_SOCKET_NONE) {
            rc = cf_error_set(CF_ERETRYABLE, e.lib,
                              "authentication with sftp server %s failed: connection error: %s",
                              d->hostport, e.msg);
            goto disconnect;
        }
    }
    cf_buf_printf(tried, "%s%d ssh-agent key%s refused", tried->len ? "; " : "", n,
                  n == 1 ? " was" : "s were");
disconnect:
    libssh2_agent_disconnect(agent);
out:
    libssh2_agent_free(agent);
    return rc;
}

static int authenticate(sftp_drv *d)
{
    int rc = 0;
    char *home = NULL, *file = NULL;
    cf_buf tried;
    cf_buf_init(&tried, 4096);

    char *methods = libssh2_userauth_list(d->ssh, d->user, (unsigned)strlen(d->user));
    if (!methods) {
        if (libssh2_userauth_authenticated(d->ssh))
            goto out;
        rc = session_error(d, "authentication");
        goto out;
    }
    if (!strstr(methods, "publickey")) {
        rc = cf_error_set(CF_ESTORAGE_AUTH, 0,
                          "sftp server %s does not accept public key authentication for '%s' "
                          "(it offers: %s)",
                          d->hostport, d->user, methods);
        cf_error_hint("coffer authenticates with keys only; enable PubkeyAuthentication on "
                      "the server");
        goto out;
    }

    const char *explicit = getenv("COFFER_SFTP_KEY");
    if (explicit && *explicit) {
        if (access(explicit, R_OK) != 0) {
            int err = errno;
            char eb[128];
            rc = cf_error_set(CF_ESTORAGE_AUTH, err, "cannot read the private key '%s' named by "
                                             "COFFER_SFTP_KEY: %s",
                              explicit, strerror_r(err, eb, sizeof(eb)));
            goto out;
        }
        rc = try_key_file(d, explicit, &tried);
    } else {
        rc = try_agent(d, &tried);
        home = home_dir();
        static const char *const defaults[] = {"id_ed25519", "id_rsa"};
        for (size_t i = 0; rc == 1 && home && i < sizeof(defaults) / sizeof(defaults[0]); i++) {
            free(file);
            file = cf_asprintf("%s/.ssh/%s", home, defaults[i]);
            if (!file) {
                rc = CF_ENOMEM;
                goto out;
            }
            if (access(file, R_OK) == 0)
                rc = try_key_file(d, file, &tried);
        }
    }
    if (rc == 1) {
        if (tried.len == 0)
            cf_buf_printf(&tried, "no key to offer");
        rc = cf_error_set(CF_ESTORAGE_AUTH, 0, "authentication as '%s' with sftp server %s failed: %.*s",
                          d->user, d->hostport, (int)(tried.len > 600 ? 600 : tried.len),
                          (const char *)tried.data);
        cf_error_hint("set COFFER_SFTP_KEY to a private key whose public key is in the "
                      "server's authorized_keys (or use ~/.ssh/id_ed25519, ~/.ssh/id_rsa or "
                      "ssh-agent)");
    }
out:
    cf_buf_free(&tried);
    free(file);
    free(home);
    return rc;
}

static int conn_open(sftp_drv *d)
{
    int rc;
    if (pthread_once(&g_init_once, lib_init) != 0 || g_init_rc != 0)
        return cf_error_set(CF_EIO, 0, "unable to initialise libssh2");
    if ((rc = tcp_connect(d)) < 0)
        return rc;
    d->ssh = libssh2_session_init_ex(NULL, NULL, NULL, d);
    if (!d->ssh) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to create an ssh session for %s", d->hostport);
        goto out;
    }
    libssh2_session_set_blocking(d->ssh, 1);
    libssh2_session_set_timeout(d->ssh, CONNECT_TIMEOUT_MS);
    if (libssh2_session_handshake(d->ssh, d->sock) != 0) {
        rc = session_error(d, "ssh handshake");
        cf_error_hint("check that %s is an ssh server", d->hostport);
        goto out;
    }
    if ((rc = check_host_key(d)) < 0)
        goto out;
    if ((rc = authenticate(d)) < 0)
        goto out;
    d->sftp = libssh2_sftp_init(d->ssh);
    if (!d->sftp) {
        sftp_err e;
        capture(d, &e);
        rc = cf_error_set(CF_EIO, e.lib, "unable to start sftp on %s: %s", d->hostport,
                          e.msg[0] ? e.msg : "unknown error");
        cf_error_hint("check that the server enables the sftp subsystem");
        goto out;
    }
    libssh2_session_set_timeout(d->ssh, OP_TIMEOUT_MS);
out:
    if (rc < 0)
        conn_close(d, false);
    return rc;
}

/* ---- running operations ---- */

typedef int (*op_fn)(sftp_drv *d, void *arg);

/* Testing: should this operation find its connection dropped? */
static bool take_injected_drop(void)
{
    int n = atomic_load(&g_inject_drop);
    while (n > 0)
        if (atomic_compare_exchange_weak(&g_inject_drop, &n, n - 1))
            return true;
    return false;
}

/* Run fn under the lock on a live connection. A connection found broken is re-established
 * once and fn run again; a second failure is CF_ERETRYABLE. fn must be safe to repeat. */
static int run(sftp_drv *d, op_fn fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&d->lock);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!d->sftp && (rc = conn_open(d)) < 0)
            break;
        if (attempt == 0 && take_injected_drop())
            (void)shutdown(d->sock, SHUT_RDWR); /* testing: the connection "drops" */
        d->lost = false;
        d->broken = false;
        rc = fn(d, arg);
        if (!d->lost) {
            if (d->broken)
                conn_close(d, false); /* done, but the next operation needs a new one */
            break;
        }
        conn_close(d, false);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

int cf_storage_sftp_inject_drop(int n)
{
    if (n < 0)
        return cf_error_set(CF_EINVAL, 0, "cf_storage_sftp_inject_drop: n is negative");
    atomic_store(&g_inject_drop, n);
    return 0;
}

/* Stat a server path. Returns 0, or a negative code with e filled (no error recorded). */
static int raw_stat(sftp_drv *d, const char *path, LIBSSH2_SFTP_ATTRIBUTES *a, sftp_err *e)
{
    memset(a, 0, sizeof(*a));
    if (libssh2_sftp_stat_ex(d->sftp, path, (unsigned)strlen(path), LIBSSH2_SFTP_STAT, a) == 0)
        return 0;
    capture(d, e);
    return -1;
}

static bool attrs_dir(const LIBSSH2_SFTP_ATTRIBUTES *a)
{
    return (a->flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) && LIBSSH2_SFTP_S_ISDIR(a->permissions);
}

static bool attrs_reg(const LIBSSH2_SFTP_ATTRIBUTES *a)
{
    return (a->flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) && LIBSSH2_SFTP_S_ISREG(a->permissions);
}

/* mkdir -p of a server path, bottom-up: only the missing directories cost a round trip.
 * name is what messages show. */
static int mkdir_p(sftp_drv *d, const char *path, const char *name, int depth)
{
    sftp_err e;
    if (libssh2_sftp_mkdir_ex(d->sftp, path, (unsigned)strlen(path), 0700) == 0)
        return 0;
    capture(d, &e);
    if (!is_status(&e))
        return report(d, &e, "create folder", name);
    if (status_code(e.st) == CF_ENOTFOUND && depth < 512) {
        char *parent = parent_of(path);
        if (!parent)
            return CF_ENOMEM;
        int rc = strcmp(parent, path) == 0 || strcmp(parent, ".") == 0
                     ? cf_error_set(CF_EIO, 0, "unable to create folder '%s' in '%s'", name,
                                    d->display)
                     : mkdir_p(d, parent, name, depth + 1);
        free(parent);
        if (rc < 0)
            return rc;
        if (libssh2_sftp_mkdir_ex(d->sftp, path, (unsigned)strlen(path), 0700) == 0)
            return 0;
        capture(d, &e);
        if (!is_status(&e))
            return report(d, &e, "create folder", name);
    }
    /* Already there (OpenSSH answers a plain failure for EEXIST), or a real error. */
    LIBSSH2_SFTP_ATTRIBUTES a;
    sftp_err e2;
    int sr = raw_stat(d, path, &a, &e2);
    if (sr == 0 && attrs_dir(&a))
        return 0;
    if (sr < 0 && !is_status(&e2))
        return report(d, &e2, "create folder", name);
    if (e.st == LIBSSH2_FX_FAILURE || e.st == LIBSSH2_FX_FILE_ALREADY_EXISTS)
        return cf_error_set(CF_EIO, (int)e.st,
                            "unable to create folder '%s' in '%s': something that is not a "
                            "folder is in the way",
                            name, d->display);
    int code = status_code(e.st);
    return cf_error_set(code == CF_ENOTFOUND ? CF_EIO : code, (int)e.st,
                        "unable to create folder '%s' in '%s': %s", name, d->display,
                        status_text(e.st));
}

/* ---- open / close ---- */

typedef struct {
    unsigned flags;
} open_args;

static int op_open(sftp_drv *d, void *arg)
{
    const open_args *o = arg;
    LIBSSH2_SFTP_ATTRIBUTES a;
    sftp_err e;
    if (raw_stat(d, d->root, &a, &e) == 0) {
        if (!attrs_dir(&a))
            return cf_error_set(CF_EINVAL, ENOTDIR, "repository '%s' is not a directory",
                                d->display);
        return 0;
    }
    if (!is_status(&e))
        return report(d, &e, "open", d->root);
    if (status_code(e.st) != CF_ENOTFOUND)
        return cf_error_set(status_code(e.st), (int)e.st, "unable to open repository '%s': %s",
                            d->display, status_text(e.st));
    if (!(o->flags & CF_STORAGE_CREATE)) {
        int rc = cf_error_set(CF_ENOREPO, (int)e.st, "repository '%s' does not exist",
                              d->display);
        cf_error_hint("check the path, or create a repository there first");
        return rc;
    }
    int rc = mkdir_p(d, d->root, d->root, 0);
    if (rc < 0 && !d->lost)
        cf_error_wrap(rc, "unable to create repository '%s'", d->display);
    return rc;
}

static void drv_free(sftp_drv *d)
{
    if (!d)
        return;
    free(d->user);
    free(d->host);
    free(d->root);
    free(d->hostport);
    free(d->display);
    free(d);
}

int cf_storage_sftp_new(void **out_self, const char *location, unsigned flags)
{
    int rc = 0;
    sftp_drv *d = NULL;
    bool mutex = false;

    if (!out_self || !location || !*location)
        return cf_error_set(CF_EINVAL, 0, "sftp storage: a location is required");
    *out_self = NULL;
    d = cf_calloc(1, sizeof(*d));
    if (!d)
        return CF_ENOMEM;
    d->sock = -1;
    if ((rc = parse_location(d, location)) < 0)
        goto out;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    rc = pthread_mutex_init(&d->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc != 0) {
        rc = cf_error_set(CF_ENOMEM, rc, "sftp storage: unable to create a mutex");
        goto out;
    }
    mutex = true;
    open_args o = {flags};
    if ((rc = run(d, op_open, &o)) < 0)
        goto out;
    *out_self = d;
    d = NULL;
out:
    if (d) {
        conn_close(d, true);
        if (mutex)
            pthread_mutex_destroy(&d->lock);
        drv_free(d);
    }
    return rc;
}

static void sftp_close(void *self)
{
    sftp_drv *d = self;
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    conn_close(d, true);
    pthread_mutex_unlock(&d->lock);
    pthread_mutex_destroy(&d->lock);
    drv_free(d);
}

/* ---- put ---- */

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len;
    unsigned flags;
} put_args;

/* Bytes free where path lives, or UINT64_MAX when the server cannot tell. */
static uint64_t free_bytes(sftp_drv *d, const char *path)
{
    LIBSSH2_SFTP_STATVFS sv;
    if (libssh2_sftp_statvfs(d->sftp, path, strlen(path), &sv) != 0)
        return UINT64_MAX;
    uint64_t n;
    if (__builtin_mul_overflow(sv.f_bavail, sv.f_frsize, &n))
        return UINT64_MAX;
    return n;
}

/* A write-side failure. OpenSSH's server speaks SFTP v3, which has no "disk full" status:
 * ENOSPC arrives as a plain failure, so ask the server for its free space to tell. */
static int write_failed(sftp_drv *d, const char *dir, const char *name, size_t need)
{
    sftp_err e;
    capture(d, &e);
    if (is_status_of(&e, LIBSSH2_FX_FAILURE)) {
        uint64_t avail = free_bytes(d, dir);
        if (avail != UINT64_MAX && avail < (uint64_t)need + 65536)
            return cf_error_set(CF_ENOSPACE, (int)e.st,
                                "unable to write '%s' in '%s': no space left on the server "
                                "(%llu bytes free)",
                                name, d->display, (unsigned long long)avail);
    }
    return report(d, &e, "write", name);
}

/* fsync a directory on the server, best effort: sftp-server opens directories as files, so
 * fsync@openssh.com reaches them; servers that refuse are not asked again. It runs after the
 * object is published, so a connection failing here must not repeat the put. */
static void fsync_dir(sftp_drv *d, const char *dir)
{
    if (d->no_fsync || d->no_dir_fsync)
        return;
    LIBSSH2_SFTP_HANDLE *h = libssh2_sftp_open_ex(d->sftp, dir, (unsigned)strlen(dir),
                                                  LIBSSH2_FXF_READ, 0, LIBSSH2_SFTP_OPENFILE);
    if (!h) {
        sftp_err e;
        capture(d, &e);
        if (is_status(&e))
            d->no_dir_fsync = true;
        else
            d->broken = true;
        return;
    }
    if (libssh2_sftp_fsync(h) != 0) {
        sftp_err e;
        capture(d, &e);
        if (is_status(&e))
            d->no_dir_fsync = true;
        else
            d->broken = true;
    }
    libssh2_sftp_close_handle(h);
}

static int rename_plain(sftp_drv *d, const char *from, const char *to, long flags)
{
    return libssh2_sftp_rename_ex(d->sftp, from, (unsigned)strlen(from), to, (unsigned)strlen(to),
                                  flags);
}

/* Does a server path exist? 1 yes, 0 no, negative: could not tell (e filled). */
static int exists(sftp_drv *d, const char *path, sftp_err *e)
{
    LIBSSH2_SFTP_ATTRIBUTES a;
    if (raw_stat(d, path, &a, e) == 0)
        return 1;
    if (is_status(e) && status_code(e->st) == CF_ENOTFOUND)
        return 0;
    return -1;
}

static int op_put(sftp_drv *d, void *arg)
{
    const put_args *p = arg;
    int rc = 0;
    char *full = NULL, *dir = NULL, *tmp = NULL, *aside = NULL;
    LIBSSH2_SFTP_HANDLE *h = NULL;
    bool tmp_exists = false;
    char rnd[33];
    sftp_err e;

    full = server_path(d, p->name);
    dir = full ? parent_of(full) : NULL;
    random_hex(rnd);
    tmp = dir ? cf_asprintf("%s/" TMP_PREFIX "%s", dir, rnd) : NULL;
    if (!tmp) {
        rc = CF_ENOMEM;
        goto out;
    }

    const unsigned long oflags = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_EXCL;
    for (int attempt = 0; !h; attempt++) {
        h = libssh2_sftp_open_ex(d->sftp, tmp, (unsigned)strlen(tmp), oflags, 0600,
                                 LIBSSH2_SFTP_OPENFILE);
        if (h)
            break;
        capture(d, &e);
        if (attempt == 0 && is_status(&e) && status_code(e.st) == CF_ENOTFOUND) {
            /* the object's folder is missing: create it (and its parents), then retry */
            const char *slash = strrchr(p->name, '/');
            char *folder = slash ? cf_strndup(p->name, (size_t)(slash - p->name)) : cf_strdup(".");
            if (!folder) {
                rc = CF_ENOMEM;
                goto out;
            }
            rc = mkdir_p(d, dir, folder, 0);
            free(folder);
            if (rc < 0)
                goto out;
            continue;
        }
        if (is_status(&e) && status_code(e.st) == CF_ENOTFOUND)
            rc = cf_error_set(CF_EIO, (int)e.st, "unable to write '%s' in '%s': %s", p->name,
                              d->display, status_text(e.st));
        else
            rc = report(d, &e, "write", p->name);
        goto out;
    }
    tmp_exists = true;

    size_t done = 0;
    while (done < p->len) {
        size_t n = p->len - done < WRITE_CHUNK ? p->len - done : WRITE_CHUNK;
        ssize_t w = libssh2_sftp_write(h, (const char *)p->data + done, n);
        if (w < 0) {
            rc = write_failed(d, dir, p->name, p->len - done);
            goto out;
        }
        if (w == 0) {
            rc = cf_error_set(CF_EIO, 0, "unable to write '%s' in '%s': the server accepted "
                                         "no data",
                              p->name, d->display);
            goto out;
        }
        done += (size_t)w;
    }
    if (!d->no_fsync && libssh2_sftp_fsync(h) != 0) {
        capture(d, &e);
        if (is_status_of(&e, LIBSSH2_FX_OP_UNSUPPORTED)) {
            d->no_fsync = true; /* the server lacks fsync@openssh.com: durable as it can be */
        } else {
            rc = write_failed(d, dir, p->name, 0);
            goto out;
        }
    }
    LIBSSH2_SFTP_HANDLE *ch = h;
    h = NULL;
    if (libssh2_sftp_close_handle(ch) != 0) {
        rc = write_failed(d, dir, p->name, 0);
        goto out;
    }

    if (p->flags & CF_PUT_EXCLUSIVE) {
        /* A plain SFTP v3 rename never replaces its target; OpenSSH implements it with link()
         * + unlink(), so of racing exclusive puts exactly one wins. */
        if (rename_plain(d, tmp, full, LIBSSH2_SFTP_RENAME_ATOMIC | LIBSSH2_SFTP_RENAME_NATIVE) !=
            0) {
            capture(d, &e);
            if (!is_status(&e)) {
                rc = report(d, &e, "publish", p->name);
                goto out;
            }
            sftp_err e2;
            int ex = is_status_of(&e, LIBSSH2_FX_FILE_ALREADY_EXISTS) ? 1 : exists(d, full, &e2);
            if (ex == 1)
                rc = cf_error_set(CF_EEXISTS, (int)e.st, "object '%s' already exists in '%s'",
                                  p->name, d->display);
            else if (ex < 0 && !is_status(&e2))
                rc = report(d, &e2, "publish", p->name);
            else
                rc = cf_error_set(status_code(e.st) == CF_ENOTFOUND ? CF_EIO : status_code(e.st),
                                  (int)e.st, "unable to publish '%s' in '%s': %s", p->name,
                                  d->display, status_text(e.st));
            goto out;
        }
        tmp_exists = false;
    } else {
        /* libssh2 1.10 speaks SFTP v3 to OpenSSH and cannot send posix-rename@openssh.com,
         * so an existing target is first moved aside (and put back if the rename fails). */
        long rflags = LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC |
                      LIBSSH2_SFTP_RENAME_NATIVE;
        for (int attempt = 0;; attempt++) {
            if (rename_plain(d, tmp, full, rflags) == 0) {
                tmp_exists = false;
                break;
            }
            capture(d, &e);
            if (!is_status(&e) || attempt >= 3) {
                rc = report(d, &e, "publish", p->name);
                goto out;
            }
            sftp_err e2;
            int ex = exists(d, full, &e2);
            if (ex <= 0) {
                rc = ex < 0 ? report(d, &e2, "publish", p->name)
                            : cf_error_set(status_code(e.st) == CF_ENOTFOUND ? CF_EIO
                                                                             : status_code(e.st),
                                           (int)e.st, "unable to publish '%s' in '%s': %s",
                                           p->name, d->display, status_text(e.st));
                goto out;
            }
            free(aside);
            random_hex(rnd);
            aside = cf_asprintf("%s/" TMP_PREFIX "%s-old", dir, rnd);
            if (!aside) {
                rc = CF_ENOMEM;
                goto out;
            }
            if (rename_plain(d, full, aside, rflags) != 0) {
                capture(d, &e);
                if (!is_status(&e)) {
                    rc = report(d, &e, "publish", p->name);
                    goto out;
                }
                continue; /* gone meanwhile (or replaced): try again */
            }
            if (rename_plain(d, tmp, full, rflags) == 0) {
                tmp_exists = false;
                (void)libssh2_sftp_unlink_ex(d->sftp, aside, (unsigned)strlen(aside));
                break;
            }
            capture(d, &e);
            if (!is_status(&e)) {
                rc = report(d, &e, "publish", p->name);
                goto out;
            }
            (void)rename_plain(d, aside, full, rflags); /* put the old object back */
        }
    }
    fsync_dir(d, dir);
out:
    if (h)
        libssh2_sftp_close_handle(h);
    if (tmp_exists && !d->lost)
        (void)libssh2_sftp_unlink_ex(d->sftp, tmp, (unsigned)strlen(tmp));
    free(aside);
    free(tmp);
    free(dir);
    free(full);
    return rc;
}

static int sftp_put(void *self, const char *name, const void *data, size_t len, unsigned flags)
{
    put_args a = {name, data, len, flags};
    return run(self, op_put, &a);
}

/* ---- get, stat ---- */

typedef struct {
    const char *name;
    uint64_t offset, length;
    uint8_t *buf;
    size_t len;
} get_args;

static int op_get(sftp_drv *d, void *arg)
{
    get_args *g = arg;
    int rc = 0;
    char *full = server_path(d, g->name);
    LIBSSH2_SFTP_HANDLE *h = NULL;
    LIBSSH2_SFTP_ATTRIBUTES a;
    if (!full)
        return CF_ENOMEM;
    free(g->buf);
    g->buf = NULL;
    g->len = 0;

    h = libssh2_sftp_open_ex(d->sftp, full, (unsigned)strlen(full), LIBSSH2_FXF_READ, 0,
                             LIBSSH2_SFTP_OPENFILE);
    if (!h) {
        rc = fail(d, "read", g->name);
        goto out;
    }
    memset(&a, 0, sizeof(a));
    if (libssh2_sftp_fstat_ex(h, &a, 0) != 0) {
        rc = fail(d, "read", g->name);
        goto out;
    }
    if (!attrs_reg(&a) || !(a.flags & LIBSSH2_SFTP_ATTR_SIZE)) {
        rc = not_found(d, g->name);
        goto out;
    }
    uint64_t size = a.filesize, end;
    if (g->offset > size || __builtin_add_overflow(g->offset, g->length, &end) || end > size) {
        rc = cf_error_set(CF_ECORRUPT, 0,
                          "object '%s' is shorter than expected (size %llu, wanted %llu bytes "
                          "at offset %llu) in '%s'",
                          g->name, (unsigned long long)size, (unsigned long long)g->length,
                          (unsigned long long)g->offset, d->display);
        goto out;
    }
    uint64_t want = g->length ? g->length : size - g->offset;
    if (want > CF_STORAGE_GET_MAX) {
        rc = cf_error_set(CF_EINVAL, 0,
                          "read of %llu bytes from '%s' in '%s' exceeds the 1 GiB limit",
                          (unsigned long long)want, g->name, d->display);
        goto out;
    }
    g->buf = cf_malloc((size_t)want);
    if (!g->buf) {
        rc = CF_ENOMEM;
        goto out;
    }
    if (g->offset)
        libssh2_sftp_seek64(h, g->offset);
    bool to_eof = g->offset + want == size;
    size_t done = 0;
    while (done < want) {
        /* libssh2 keeps 4x the buffer it is given in flight (read-ahead). Up to the end of
         * the file that costs nothing (the server answers EOF); for a range that stops short,
         * ask for a quarter of what is left, so it does not fetch up to 3x the range. */
        size_t left = (size_t)want - done;
        size_t n = to_eof ? left : left / 4 ? left / 4 : left;
        if (n > READ_CHUNK)
            n = READ_CHUNK;
        ssize_t r = libssh2_sftp_read(h, (char *)g->buf + done, n);
        if (r < 0) {
            rc = fail(d, "read", g->name);
            goto out;
        }
        if (r == 0) {
            rc = cf_error_set(CF_ECORRUPT, 0,
                              "object '%s' is shorter than expected (ended after %llu bytes, "
                              "wanted %llu at offset %llu) in '%s'",
                              g->name, (unsigned long long)(g->offset + done),
                              (unsigned long long)want, (unsigned long long)g->offset,
                              d->display);
            goto out;
        }
        done += (size_t)r;
    }
    g->len = (size_t)want;
out:
    if (h)
        libssh2_sftp_close_handle(h);
    if (rc < 0) {
        free(g->buf);
        g->buf = NULL;
        g->len = 0;
    }
    free(full);
    return rc;
}

static int sftp_get(void *self, const char *name, uint64_t offset, uint64_t length,
                    uint8_t **out, size_t *out_len)
{
    get_args g = {name, offset, length, NULL, 0};
    int rc = run(self, op_get, &g);
    if (rc < 0) {
        free(g.buf);
        return rc;
    }
    *out = g.buf;
    *out_len = g.len;
    return 0;
}

typedef struct {
    const char *name;
    uint64_t size;
} stat_args;

static int op_stat(sftp_drv *d, void *arg)
{
    stat_args *s = arg;
    LIBSSH2_SFTP_ATTRIBUTES a;
    sftp_err e;
    char *full = server_path(d, s->name);
    if (!full)
        return CF_ENOMEM;
    int rc = raw_stat(d, full, &a, &e);
    free(full);
    if (rc < 0)
        return report(d, &e, "stat", s->name);
    if (!attrs_reg(&a) || !(a.flags & LIBSSH2_SFTP_ATTR_SIZE))
        return not_found(d, s->name);
    s->size = a.filesize;
    return 0;
}

static int sftp_stat(void *self, const char *name, uint64_t *out_size)
{
    stat_args s = {name, 0};
    int rc = run(self, op_stat, &s);
    if (rc == 0)
        *out_size = s.size;
    return rc;
}

/* ---- remove ---- */

typedef struct {
    const char *name;
} remove_args;

static int op_remove(sftp_drv *d, void *arg)
{
    const char *name = ((const remove_args *)arg)->name;
    char *full = server_path(d, name);
    if (!full)
        return CF_ENOMEM;
    int rc = 0;
    if (libssh2_sftp_unlink_ex(d->sftp, full, (unsigned)strlen(full)) != 0) {
        sftp_err e, e2;
        capture(d, &e);
        LIBSSH2_SFTP_ATTRIBUTES a;
        /* OpenSSH answers a plain failure for a folder (EISDIR): a folder is not an object */
        int sr = is_status_of(&e, LIBSSH2_FX_FAILURE) ? raw_stat(d, full, &a, &e2) : 1;
        if (sr == 0 && attrs_dir(&a))
            rc = not_found(d, name);
        else if (sr < 0 && !is_status(&e2))
            rc = report(d, &e2, "remove", name);
        else
            rc = report(d, &e, "remove", name);
    }
    free(full);
    return rc;
}

static int sftp_remove(void *self, const char *name)
{
    remove_args r = {name};
    return run(self, op_remove, &r);
}

/* ---- list ---- */

/* The listing is collected under the lock (records: u64 size, name, NUL) and reported to the
 * callback afterwards, so a callback may use the storage, and a retried listing never
 * reports a name twice. */
typedef struct {
    const char *prefix;
    size_t prefix_len;
    cf_buf out;
    cf_buf rel; /* the folder being listed, relative to the root, with a trailing '/' */
} list_args;

static bool dir_may_match(const list_args *l, const char *path, size_t len)
{
    size_t n = len < l->prefix_len ? len : l->prefix_len;
    return memcmp(path, l->prefix, n) == 0;
}

static int list_dir(sftp_drv *d, list_args *l, int depth)
{
    int rc = 0;
    size_t base_len = l->rel.len;
    char *dirpath = NULL;
    LIBSSH2_SFTP_HANDLE *h = NULL;
    char namebuf[NAME_BUF];

    if (depth > LIST_MAX_DEPTH)
        return cf_error_set(CF_EIO, ELOOP, "unable to list '%.*s' in '%s': nested too deeply",
                            (int)l->rel.len, (const char *)l->rel.data, d->display);
    /* the folder's server path: root + rel without its trailing '/' */
    if (base_len) {
        char *rel = cf_strndup((const char *)l->rel.data, base_len - 1);
        dirpath = rel ? server_path(d, rel) : NULL;
        free(rel);
    } else {
        dirpath = cf_strdup(d->root);
    }
    if (!dirpath)
        return CF_ENOMEM;
    h = libssh2_sftp_open_ex(d->sftp, dirpath, (unsigned)strlen(dirpath), 0, 0,
                             LIBSSH2_SFTP_OPENDIR);
    if (!h) {
        sftp_err e;
        capture(d, &e);
        /* a missing folder (or an object where the folder would be: ENOTDIR, which
         * sftp-server reports as "no such file") lists nothing */
        if (!(is_status(&e) && status_code(e.st) == CF_ENOTFOUND))
            rc = report(d, &e, "list", l->prefix[0] ? l->prefix : "/");
        goto out;
    }
    for (;;) {
        LIBSSH2_SFTP_ATTRIBUTES a;
        memset(&a, 0, sizeof(a));
        int n = libssh2_sftp_readdir_ex(h, namebuf, sizeof(namebuf) - 1, NULL, 0, &a);
        if (n == 0)
            break;
        if (n < 0) {
            sftp_err e;
            capture(d, &e);
            if (is_status_of(&e, LIBSSH2_FX_EOF))
                break;
            rc = report(d, &e, "list", l->prefix[0] ? l->prefix : "/");
            goto out;
        }
        namebuf[n] = '\0';
        if ((size_t)n != strlen(namebuf))
            continue; /* a NUL inside a name: not one of ours */
        if (strcmp(namebuf, ".") == 0 || strcmp(namebuf, "..") == 0 ||
            cf_str_has_prefix(namebuf, TMP_PREFIX))
            continue;
        l->rel.len = base_len;
        if ((rc = cf_buf_append_str(&l->rel, namebuf)) < 0 ||
            (rc = cf_buf_reserve(&l->rel, 2)) < 0)
            goto out;
        l->rel.data[l->rel.len] = '\0';
        const char *full = (const char *)l->rel.data;
        size_t full_len = l->rel.len;

        bool have_type = (a.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
                         !LIBSSH2_SFTP_S_ISLNK(a.permissions);
        if (!have_type) {
            /* a symbolic link (sftp-server lstat()s entries) or no type given: follow it */
            bool matches = full_len >= l->prefix_len && memcmp(full, l->prefix, l->prefix_len) == 0;
            if (!matches && !dir_may_match(l, full, full_len))
                continue;
            char *sp = server_path(d, full);
            sftp_err e;
            if (!sp) {
                rc = CF_ENOMEM;
                goto out;
            }
            int r = raw_stat(d, sp, &a, &e);
            free(sp);
            if (r < 0) {
                if (is_status(&e))
                    continue; /* dangling, or removed while we listed */
                rc = report(d, &e, "list", full);
                goto out;
            }
        }
        if (attrs_reg(&a)) {
            if (full_len >= l->prefix_len && memcmp(full, l->prefix, l->prefix_len) == 0) {
                uint8_t sz[8];
                cf_le64_put(sz, (a.flags & LIBSSH2_SFTP_ATTR_SIZE) ? a.filesize : 0);
                if ((rc = cf_buf_append(&l->out, sz, 8)) < 0 ||
                    (rc = cf_buf_append(&l->out, full, full_len + 1)) < 0)
                    goto out;
            }
        } else if (attrs_dir(&a)) {
            if ((rc = cf_buf_append(&l->rel, "/", 1)) < 0)
                goto out;
            if (!dir_may_match(l, (const char *)l->rel.data, l->rel.len))
                continue;
            if ((rc = list_dir(d, l, depth + 1)) != 0)
                goto out;
        }
    }
out:
    l->rel.len = base_len;
    if (h)
        libssh2_sftp_close_handle(h);
    free(dirpath);
    return rc;
}

static int op_list(sftp_drv *d, void *arg)
{
    list_args *l = arg;
    cf_buf_reset(&l->out);
    cf_buf_reset(&l->rel);
    const char *slash = strrchr(l->prefix, '/');
    size_t dir_len = slash ? (size_t)(slash - l->prefix) + 1 : 0;
    int rc = cf_buf_reserve(&l->rel, dir_len + 1);
    if (rc < 0)
        return rc;
    if (dir_len && (rc = cf_buf_append(&l->rel, l->prefix, dir_len)) < 0)
        return rc;
    return list_dir(d, l, 0);
}

static int sftp_list(void *self, const char *prefix, cf_storage_list_cb cb, void *payload)
{
    list_args l = {.prefix = prefix, .prefix_len = strlen(prefix)};
    cf_buf_init(&l.out, LIST_BUF_MAX);
    cf_buf_init(&l.rel, (size_t)64 * 1024);
    int rc = run(self, op_list, &l);
    for (size_t pos = 0; rc == 0 && pos + 8 < l.out.len;) {
        uint64_t size = cf_le64_get(l.out.data + pos);
        const char *name = (const char *)l.out.data + pos + 8;
        pos += 8 + strlen(name) + 1;
        rc = cb(name, size, payload);
    }
    cf_buf_free(&l.out);
    cf_buf_free(&l.rel);
    return rc;
}

/* ---- space ---- */

typedef struct {
    uint64_t free;
} space_args;

static int op_space(sftp_drv *d, void *arg)
{
    space_args *s = arg;
    LIBSSH2_SFTP_STATVFS sv;
    if (libssh2_sftp_statvfs(d->sftp, d->root, strlen(d->root), &sv) != 0) {
        sftp_err e;
        capture(d, &e);
        if (is_status(&e))
            return cf_error_set(CF_EUNSUPPORTED, (int)e.st,
                                "free space of '%s' is not available from the server",
                                d->display);
        return report(d, &e, "get free space of", d->root);
    }
    if (__builtin_mul_overflow(sv.f_bavail, sv.f_frsize, &s->free))
        s->free = UINT64_MAX;
    return 0;
}

static int sftp_space(void *self, uint64_t *out_free)
{
    space_args s = {0};
    int rc = run(self, op_space, &s);
    if (rc == 0)
        *out_free = s.free;
    return rc;
}

const cf_storage_ops cf_storage_sftp_ops = {
    .version = CF_STORAGE_OPS_VERSION,
    .scheme = "sftp",
    .features = CF_STORAGE_FEAT_EXCLUSIVE_PUT,
    .put = sftp_put,
    .get = sftp_get,
    .stat = sftp_stat,
    .list = sftp_list,
    .remove = sftp_remove,
    .space = sftp_space,
    .close = sftp_close,
};
