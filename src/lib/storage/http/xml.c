/*
 * xml.c - the bounded XML reader for object-store responses: a single pass over the bytes
 * with an explicit element stack, path matching, and entity decoding.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "storage/http/xml.h"

#define PATH_MAX_PARTS 16

typedef struct {
    const char *part[PATH_MAX_PARTS];
    size_t part_len[PATH_MAX_PARTS];
    size_t n;
} xml_path;

typedef struct {
    const char *name; /* local name (prefix stripped) */
    size_t name_len;
    size_t content_start;
} xml_frame;

static int split_path(xml_path *p, const char *path)
{
    p->n = 0;
    const char *s = path;
    while (*s) {
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        if (n == 0 || p->n >= PATH_MAX_PARTS)
            return CF_EINVAL;
        p->part[p->n] = s;
        p->part_len[p->n] = n;
        p->n++;
        if (!slash)
            break;
        s = slash + 1;
    }
    return p->n ? 0 : CF_EINVAL;
}

static bool path_matches(const xml_path *p, const xml_frame *st, size_t depth)
{
    if (depth != p->n)
        return false;
    for (size_t i = 0; i < depth; i++) {
        if (p->part_len[i] == 1 && p->part[i][0] == '*')
            continue;
        if (p->part_len[i] != st[i].name_len || memcmp(p->part[i], st[i].name, st[i].name_len))
            return false;
    }
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_name_char(char c)
{
    return !is_space(c) && c != '/' && c != '>' && c != '<' && c != '=' && c != '"' &&
           c != '\'' && c != '\0';
}

/* Offset just past the first occurrence of needle at or after i, or 0 if none. */
static size_t find_after(const char *d, size_t n, size_t i, const char *needle)
{
    size_t k = strlen(needle);
    if (n < k)
        return 0;
    for (size_t j = i; j + k <= n; j++)
        if (d[j] == needle[0] && memcmp(d + j, needle, k) == 0)
            return j + k;
    return 0;
}

static bool starts(const char *d, size_t n, size_t i, const char *lit)
{
    size_t k = strlen(lit);
    return i + k <= n && memcmp(d + i, lit, k) == 0;
}

/* Strip a namespace prefix: "s3:Key" -> "Key". */
static void local_name(const char **name, size_t *len)
{
    for (size_t i = 0; i < *len; i++)
        if ((*name)[i] == ':') {
            *name += i + 1;
            *len -= i + 1;
            return;
        }
}

/* Walk the document; call cb for each element matching p. */
static int walk(const char *d, size_t n, const xml_path *p, cf_xml_cb cb, void *payload)
{
    xml_frame st[CF_XML_MAX_DEPTH];
    size_t depth = 0;
    size_t i = 0;

    while (i < n) {
        if (d[i] != '<') {
            i++;
            continue;
        }
        size_t tag_start = i;
        if (starts(d, n, i, "<?")) {
            if (!(i = find_after(d, n, i + 2, "?>")))
                return CF_ECORRUPT;
            continue;
        }
        if (starts(d, n, i, "<!--")) {
            if (!(i = find_after(d, n, i + 4, "-->")))
                return CF_ECORRUPT;
            continue;
        }
        if (starts(d, n, i, "<![CDATA[")) {
            if (depth == 0 || !(i = find_after(d, n, i + 9, "]]>")))
                return CF_ECORRUPT;
            continue;
        }
        if (starts(d, n, i, "<!"))
            return CF_ECORRUPT; /* DOCTYPE and other declarations: never in these responses */

        bool closing = starts(d, n, i, "</");
        i += closing ? 2 : 1;
        size_t name_start = i;
        while (i < n && is_name_char(d[i]))
            i++;
        const char *name = d + name_start;
        size_t name_len = i - name_start;
        if (name_len == 0 || name[0] == ':')
            return CF_ECORRUPT;
        local_name(&name, &name_len);
        if (name_len == 0)
            return CF_ECORRUPT;

        if (closing) {
            while (i < n && is_space(d[i]))
                i++;
            if (i >= n || d[i] != '>')
                return CF_ECORRUPT;
            i++;
            if (depth == 0 || st[depth - 1].name_len != name_len ||
                memcmp(st[depth - 1].name, name, name_len) != 0)
                return CF_ECORRUPT;
            if (path_matches(p, st, depth)) {
                size_t cs = st[depth - 1].content_start;
                int rc = cb(d + cs, tag_start - cs, payload);
                if (rc)
                    return rc;
            }
            depth--;
            continue;
        }

        /* A start tag: skip attributes, honouring quotes. */
        char quote = 0;
        bool self_closing = false;
        for (;;) {
            if (i >= n)
                return CF_ECORRUPT;
            char c = d[i];
            if (quote) {
                if (c == quote)
                    quote = 0;
            } else if (c == '"' || c == '\'') {
                quote = c;
            } else if (c == '<') {
                return CF_ECORRUPT;
            } else if (c == '>') {
                self_closing = i > name_start && d[i - 1] == '/';
                i++;
                break;
            }
            i++;
        }
        if (depth >= CF_XML_MAX_DEPTH)
            return CF_ECORRUPT;
        st[depth] = (xml_frame){.name = name, .name_len = name_len, .content_start = i};
        depth++;
        if (self_closing) {
            if (path_matches(p, st, depth)) {
                int rc = cb(d + i, 0, payload);
                if (rc)
                    return rc;
            }
            depth--;
        }
    }
    return depth == 0 ? 0 : CF_ECORRUPT;
}

int cf_xml_each(const char *doc, size_t len, const char *path, cf_xml_cb cb, void *payload)
{
    xml_path p;
    if (!doc || !path || !cb || split_path(&p, path) != 0)
        return CF_EINVAL;
    return walk(doc, len, &p, cb, payload);
}

/* Append code point cp (valid: checked by the caller) as UTF-8; returns 0 or an error. */
static int put_utf8(cf_buf *b, uint32_t cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xC0 | (cp >> 6));
        u[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xE0 | (cp >> 12));
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xF0 | (cp >> 18));
        u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return cf_buf_append(b, u, n) == 0 ? 0 : (b->len + n + 1 > b->max ? CF_ECORRUPT : CF_ENOMEM);
}

/* Decode one entity starting at s[0] == '&'; returns its length or 0 if malformed. */
static size_t decode_entity(cf_buf *b, const char *s, size_t n, int *err)
{
    size_t end = 1;
    while (end < n && end < 12 && s[end] != ';')
        end++;
    if (end >= n || s[end] != ';')
        return 0;
    const char *e = s + 1;
    size_t el = end - 1;
    static const struct {
        const char *name;
        char ch;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++)
        if (strlen(named[k].name) == el && memcmp(named[k].name, e, el) == 0) {
            if (cf_buf_append(b, &named[k].ch, 1) != 0)
                *err = b->len + 2 > b->max ? CF_ECORRUPT : CF_ENOMEM;
            return end + 1;
        }
    if (el >= 2 && e[0] == '#') {
        uint32_t cp = 0;
        bool hex = e[1] == 'x' || e[1] == 'X';
        size_t k = hex ? 2 : 1;
        if (k >= el)
            return 0;
        for (; k < el; k++) {
            char c = e[k];
            uint32_t v;
            if (c >= '0' && c <= '9')
                v = (uint32_t)(c - '0');
            else if (hex && c >= 'a' && c <= 'f')
                v = (uint32_t)(c - 'a' + 10);
            else if (hex && c >= 'A' && c <= 'F')
                v = (uint32_t)(c - 'A' + 10);
            else
                return 0;
            cp = cp * (hex ? 16u : 10u) + v;
            if (cp > 0x10FFFF)
                return 0;
        }
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0; /* not a character XML allows */
        *err = put_utf8(b, cp);
        return end + 1;
    }
    return 0;
}

int cf_xml_decode(char **out, const char *inner, size_t inner_len, size_t max)
{
    int rc = 0;
    cf_buf b;
    cf_buf_init(&b, max + 1);
    *out = NULL;
    size_t i = 0;
    while (i < inner_len) {
        char c = inner[i];
        if (c == '<') {
            if (starts(inner, inner_len, i, "<![CDATA[")) {
                size_t end = find_after(inner, inner_len, i + 9, "]]>");
                if (!end) {
                    rc = CF_ECORRUPT;
                    goto out;
                }
                size_t cn = end - 3 - (i + 9);
                if (b.len + cn > max) {
                    rc = CF_ECORRUPT;
                    goto out;
                }
                if (cf_buf_append(&b, inner + i + 9, cn) != 0) {
                    rc = CF_ENOMEM;
                    goto out;
                }
                i = end;
                continue;
            }
            /* A child element or comment: skip the tag (text of children is kept). */
            size_t end = starts(inner, inner_len, i, "<!--")
                             ? find_after(inner, inner_len, i + 4, "-->")
                             : find_after(inner, inner_len, i + 1, ">");
            if (!end) {
                rc = CF_ECORRUPT;
                goto out;
            }
            i = end;
            continue;
        }
        if (c == '&') {
            int err = 0;
            size_t used = decode_entity(&b, inner + i, inner_len - i, &err);
            if (err) {
                rc = err;
                goto out;
            }
            if (!used) {
                rc = CF_ECORRUPT;
                goto out;
            }
            i += used;
            continue;
        }
        /* A run of plain text. */
        size_t j = i;
        while (j < inner_len && inner[j] != '<' && inner[j] != '&')
            j++;
        if (b.len + (j - i) > max) {
            rc = CF_ECORRUPT;
            goto out;
        }
        if (cf_buf_append(&b, inner + i, j - i) != 0) {
            rc = CF_ENOMEM;
            goto out;
        }
        i = j;
    }
    if (b.len > max) {
        rc = CF_ECORRUPT;
        goto out;
    }
    /* cf_buf keeps its text NUL-terminated; an empty result has no storage yet. */
    *out = b.data ? (char *)cf_buf_steal(&b, NULL) : cf_strdup("");
    if (!*out)
        rc = CF_ENOMEM;
out:
    cf_buf_free(&b);
    return rc;
}

typedef struct {
    const char *inner;
    size_t inner_len;
    bool found;
} first_ctx;

static int take_first(const char *inner, size_t inner_len, void *payload)
{
    first_ctx *f = payload;
    f->inner = inner;
    f->inner_len = inner_len;
    f->found = true;
    return 1;
}

int cf_xml_text(char **out, const char *doc, size_t len, const char *path, size_t max)
{
    if (!out)
        return CF_EINVAL;
    *out = NULL;
    first_ctx f = {0};
    int rc = cf_xml_each(doc, len, path, take_first, &f);
    if (rc < 0)
        return rc;
    if (!f.found)
        return CF_ENOTFOUND;
    return cf_xml_decode(out, f.inner, f.inner_len, max);
}

int cf_xml_escape(cf_buf *buf, const char *s)
{
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        default:
            break;
        }
        int rc = rep ? cf_buf_append_str(buf, rep) : cf_buf_append(buf, s, 1);
        if (rc != 0)
            return CF_ENOMEM;
    }
    return 0;
}
