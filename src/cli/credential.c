/*
 * credential.c - where the secret that opens a repository comes from: a 32-byte key (key
 * file, key command, COFFER_KEY) or a password (file, command, COFFER_PASSWORD, terminal).
 * Secrets are wiped when freed and never printed; a command's stderr is shown, its stdout
 * never is.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cli.h"

#define SECRET_MAX 4096

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static char *read_tty(const char *prompt)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct termios old, noecho;
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &noecho);
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        /* the prompt is cosmetic */
    }
    char buf[1024];
    size_t n = 0;
    while (n < sizeof(buf) - 1) {
        char ch;
        ssize_t k = read(fd, &ch, 1);
        if (k <= 0 || ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = '\0';
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* cosmetic */
    }
    close(fd);
    char *p = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return p;
}

/* Read up to SECRET_MAX bytes from fd with read(2): no stdio buffer keeps a copy of the
 * secret after it is wiped. *len gets the count. */
static char *slurp_fd(int fd, size_t *len)
{
    char *buf = malloc(SECRET_MAX + 1);
    if (!buf)
        return NULL;
    size_t n = 0;
    while (n < SECRET_MAX) {
        ssize_t k = read(fd, buf + n, SECRET_MAX - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static char *read_file(const char *path, size_t *len, const char *what)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cli_error(CF_EIO, NULL, "unable to read %s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    char *s = slurp_fd(fd, len);
    close(fd);
    return s;
}

static char *run_command(const char *cmd, size_t *len, const char *what)
{
    FILE *p = popen(cmd, "r");
    if (!p) {
        cli_error(CF_EIO, NULL, "unable to run %s: %s", what, strerror(errno));
        return NULL;
    }
    char *s = slurp_fd(fileno(p), len); /* never through p's stdio buffer */
    int st = pclose(p);
    if (st != 0) {
        cli_error(CF_EIO, NULL, "%s failed (exit status %d); its error output is above", what,
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        if (s) {
            OPENSSL_cleanse(s, SECRET_MAX + 1);
            free(s);
        }
        return NULL;
    }
    return s;
}

/* A secret from the environment: copied, then wiped from the environment block and removed,
 * so that it is neither in /proc/PID/environ nor in a core dump of this process (nor passed
 * to programs coffer starts). NULL when unset. */
static char *take_env(const char *name)
{
    char *v = getenv(name);
    if (!v)
        return NULL;
    char *copy = strdup(v);
    OPENSSL_cleanse(v, strlen(v));
    unsetenv(name);
    return copy;
}

static void first_line(char *s)
{
    char *nl = strpbrk(s, "\r\n");
    if (nl)
        *nl = '\0';
}

/* 32 raw bytes, or 64 hex digits, or base64 of 32 bytes (whitespace around ignored). */
static bool parse_key(uint8_t out[32], const char *s, size_t len)
{
    if (len == 32) {
        memcpy(out, s, 32);
        return true;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    if (len == 64) {
        for (size_t i = 0; i < 32; i++) {
            unsigned v;
            char two[3] = {s[2 * i], s[2 * i + 1], 0};
            if (!isxdigit((unsigned char)two[0]) || !isxdigit((unsigned char)two[1]) ||
                sscanf(two, "%x", &v) != 1)
                return false;
            out[i] = (uint8_t)v;
        }
        return true;
    }
    if (len == 44) {
        uint8_t tmp[48];
        int n = EVP_DecodeBlock(tmp, (const unsigned char *)s, 44);
        bool ok = n == 33 && s[43] == '=' && s[42] != '=';
        if (ok)
            memcpy(out, tmp, 32);
        OPENSSL_cleanse(tmp, sizeof(tmp));
        return ok;
    }
    return false;
}

static int key_from(cli_cred *out, char *text, size_t len, const char *where)
{
    bool ok = text && parse_key(out->key, text, len);
    if (text) {
        OPENSSL_cleanse(text, len);
        free(text);
    }
    if (!ok) {
        return cli_error(CF_EINVAL, NULL,
                         "the key from %s is not 32 bytes (raw, 64 hex digits or base64)", where);
    }
    out->c.key = out->key;
    return 0;
}

int cli_cred_get(cli_cred *out, bool confirm, bool is_new)
{
    memset(out, 0, sizeof(*out));
    const char *kfile = is_new ? g.new_key_file : (g.key_file ? g.key_file : getenv("COFFER_KEY_FILE"));
    const char *kcmd = is_new ? g.new_key_command
                              : (g.key_command ? g.key_command : getenv("COFFER_KEY_COMMAND"));
    char *kenv = take_env(is_new ? "COFFER_NEW_KEY" : "COFFER_KEY");
    const char *pfile = is_new ? g.new_password_file
                               : (g.password_file ? g.password_file : getenv("COFFER_PASSWORD_FILE"));
    const char *pcmd = is_new ? NULL
                              : (g.password_command ? g.password_command
                                                    : getenv("COFFER_PASSWORD_COMMAND"));
    char *penv = take_env(is_new ? "COFFER_NEW_PASSWORD" : "COFFER_PASSWORD");
    size_t len = 0;
    int rc = 0;
    if (kfile) {
        char *text = read_file(kfile, &len, "key file");
        rc = text ? key_from(out, text, len, kfile) : 1;
    } else if (kcmd) {
        char *text = run_command(kcmd, &len, "key command");
        rc = text ? key_from(out, text, len, "the key command") : 1;
    } else if (kenv) {
        rc = key_from(out, kenv, strlen(kenv), is_new ? "COFFER_NEW_KEY" : "COFFER_KEY");
        kenv = NULL; /* key_from wiped and freed it */
    } else {
        rc = -1;
    }
    wipe_free(kenv);
    if (rc != -1) {
        wipe_free(penv);
        return rc;
    }
    if (pfile || pcmd) { /* they come first: the environment's password is not used */
        wipe_free(penv);
        penv = NULL;
    }
    char *pw = NULL;
    if (pfile) {
        if (!(pw = read_file(pfile, NULL, "password file")))
            return 1;
        first_line(pw);
    } else if (pcmd) {
        if (!(pw = run_command(pcmd, NULL, "password command")))
            return 1;
        first_line(pw);
    } else if (penv) {
        pw = penv;
        penv = NULL;
    } else if (isatty(STDIN_FILENO) || isatty(STDERR_FILENO)) {
        pw = read_tty(is_new ? "enter the new password: " : "enter repository password: ");
        if (pw && (confirm || is_new)) {
            char *again = read_tty("enter the password again: ");
            bool same = again && strcmp(pw, again) == 0;
            wipe_free(again);
            if (!same) {
                wipe_free(pw);
                return cli_error(CF_EINVAL, NULL, "passwords do not match");
            }
        }
    } else {
        if (is_new)
            return cli_error(CF_EINVAL,
                             "set COFFER_NEW_PASSWORD or COFFER_NEW_KEY, or use "
                             "--new-password-file, --new-key-file or --new-key-command",
                             "no new password or key given");
        return cli_error(CF_EINVAL,
                         "set COFFER_PASSWORD, --password-file or --password-command (or "
                         "COFFER_KEY, --key-file, --key-command)",
                         "no password given");
    }
    wipe_free(penv);
    if (!pw) {
        return cli_error(CF_EIO, NULL, "unable to read the password");
    }
    if (!*pw) {
        wipe_free(pw);
        return cli_error(CF_EINVAL, NULL, "the password is empty");
    }
    out->password = pw;
    out->c.password = pw;
    return 0;
}

void cli_cred_free(cli_cred *c)
{
    wipe_free(c->password);
    OPENSSL_cleanse(c->key, sizeof(c->key));
    memset(c, 0, sizeof(*c));
}
