/*
 * creds.c - S3 credentials and region from the environment or the AWS shared files
 * (~/.aws/credentials, ~/.aws/config), with a small INI reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "storage/s3/s3.h"
#include "util/util.h"

#define INI_MAX ((size_t)1 << 20)

void cf_s3_creds_free(cf_s3_creds *c)
{
    if (!c)
        return;
    if (c->secret_key) {
        cf_wipe(c->secret_key, strlen(c->secret_key));
        free(c->secret_key);
    }
    if (c->session_token) {
        cf_wipe(c->session_token, strlen(c->session_token));
        free(c->session_token);
    }
    free(c->access_key);
    free(c->region);
    free(c->source);
    memset(c, 0, sizeof(*c));
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Read a small text file; NULL if it is missing or unreadable (errno set). */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    cf_buf b;
    cf_buf_init(&b, INI_MAX + 1);
    char chunk[4096];
    size_t n;
    bool ok = true;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (cf_buf_append(&b, chunk, n) != 0) {
            ok = false;
            break;
        }
    if (ferror(f))
        ok = false;
    fclose(f);
    if (!ok) {
        cf_wipe(b.data, b.cap);
        cf_buf_free(&b);
        errno = EIO;
        return NULL;
    }
    return b.data ? (char *)cf_buf_steal(&b, NULL) : cf_strdup("");
}

static void free_text(char *t)
{
    if (t) {
        cf_wipe(t, strlen(t));
        free(t);
    }
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *trim_end(const char *start, const char *end)
{
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    return end;
}

char *cf_s3_ini_get(const char *text, const char *section, const char *key)
{
    bool in_section = false;
    size_t sl = strlen(section), kl = strlen(key);
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        const char *s = skip_ws(p, end);
        const char *e = trim_end(s, end);
        if (s < e && (*s == ';' || *s == '#')) {
            /* comment */
        } else if (s < e && *s == '[') {
            const char *close = memchr(s, ']', (size_t)(e - s));
            in_section = false;
            if (close) {
                const char *ns = skip_ws(s + 1, close);
                const char *ne = trim_end(ns, close);
                in_section = (size_t)(ne - ns) == sl && memcmp(ns, section, sl) == 0;
            }
        } else if (in_section && s < e) {
            const char *eq = memchr(s, '=', (size_t)(e - s));
            if (eq) {
                const char *ke = trim_end(s, eq);
                if ((size_t)(ke - s) == kl && strncasecmp(s, key, kl) == 0) {
                    const char *vs = skip_ws(eq + 1, e);
                    return cf_strndup(vs, (size_t)(e - vs));
                }
            }
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return NULL;
}

static char *home_file(const char *env_name, const char *rel)
{
    const char *f = env(env_name);
    if (f)
        return cf_strdup(f);
    const char *home = env("HOME");
    if (!home)
        return NULL;
    return cf_asprintf("%s/%s", home, rel);
}

int cf_s3_creds_load(cf_s3_creds *c)
{
    int rc = 0;
    char *cred_path = NULL, *conf_path = NULL, *text = NULL, *section = NULL;
    memset(c, 0, sizeof(*c));
    const char *profile = env("AWS_PROFILE");
    if (!profile)
        profile = env("AWS_DEFAULT_PROFILE");
    if (!profile)
        profile = "default";

    /* Keys in the environment win over any profile, as in the AWS tools. */
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
    if (ak && sk) {
        const char *tok = env("AWS_SESSION_TOKEN");
        if (!(c->access_key = cf_strdup(ak)) || !(c->secret_key = cf_strdup(sk)) ||
            (tok && !(c->session_token = cf_strdup(tok))) ||
            !(c->source = cf_strdup("the environment"))) {
            rc = CF_ENOMEM;
            goto out;
        }
    } else {
        cred_path = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        text = cred_path ? read_text(cred_path) : NULL;
        if (text) {
            c->access_key = cf_s3_ini_get(text, profile, "aws_access_key_id");
            c->secret_key = cf_s3_ini_get(text, profile, "aws_secret_access_key");
            c->session_token = cf_s3_ini_get(text, profile, "aws_session_token");
            if (c->session_token && !*c->session_token) {
                free(c->session_token);
                c->session_token = NULL;
            }
        }
        if (!c->access_key || !c->secret_key || !*c->access_key || !*c->secret_key) {
            rc = cf_error_set(CF_ESTORAGE_AUTH, 0,
                              "no s3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "are not set and profile '%s' has no keys in '%s'",
                              profile, cred_path ? cred_path : "~/.aws/credentials");
            cf_error_hint("export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set "
                          "AWS_PROFILE to a profile in ~/.aws/credentials");
            goto out;
        }
        if (!(c->source = cf_asprintf("profile '%s' in '%s'", profile, cred_path))) {
            rc = CF_ENOMEM;
            goto out;
        }
    }

    /* Region: environment, then the profile's region in the config file. */
    const char *region = env("AWS_REGION");
    if (!region)
        region = env("AWS_DEFAULT_REGION");
    if (region) {
        c->region = cf_strdup(region);
    } else {
        free_text(text);
        text = NULL;
        conf_path = home_file("AWS_CONFIG_FILE", ".aws/config");
        text = conf_path ? read_text(conf_path) : NULL;
        if (text) {
            section = strcmp(profile, "default") == 0 ? cf_strdup("default")
                                                      : cf_asprintf("profile %s", profile);
            if (!section) {
                rc = CF_ENOMEM;
                goto out;
            }
            c->region = cf_s3_ini_get(text, section, "region");
            if (c->region && !*c->region) {
                free(c->region);
                c->region = NULL;
            }
        }
        if (!c->region)
            c->region = cf_strdup(CF_S3_DEFAULT_REGION);
    }
    if (!c->region)
        rc = CF_ENOMEM;
out:
    free_text(text);
    free(cred_path);
    free(conf_path);
    free(section);
    if (rc < 0)
        cf_s3_creds_free(c);
    return rc;
}
