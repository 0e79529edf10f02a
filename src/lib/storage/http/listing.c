/*
 * listing.c - pages of object store listings, shared by the S3 and Azure drivers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage/http/listing.h"
#include "storage/http/xml.h"
#include "util/util.h"

static int add_item(cf_list_page *p, const char *rel, uint64_t size)
{
    if (cf_array_grow(&p->items, &p->cap, p->n, sizeof(*p->items)))
        return CF_ENOMEM;
    if (!(p->items[p->n].name = cf_strdup(rel)))
        return CF_ENOMEM;
    p->items[p->n].size = size;
    p->n++;
    return 0;
}

static int page_item(const char *inner, size_t inner_len, void *payload)
{
    cf_list_page *p = payload;
    char *key = NULL, *size_s = NULL;
    int rc = cf_xml_text(&key, inner, inner_len, p->name_path, 4096);
    if (rc == 0)
        rc = cf_xml_text(&size_s, inner, inner_len, p->size_path, 32);
    if (rc == 0 && p->fix_name && p->fix_name(key, inner, inner_len) != 0)
        rc = CF_EIO;
    if (rc == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long long size = strtoull(size_s, &end, 10);
        size_t pl = strlen(p->prefix);
        if (errno || end == size_s || *end || size_s[0] == '-')
            rc = CF_EIO;
        else if (strncmp(key, p->prefix, pl) == 0 && cf_storage_name_valid(key + pl))
            rc = add_item(p, key + pl, size);
    }
    if (rc)
        p->err = rc == CF_ENOMEM ? CF_ENOMEM : CF_EIO;
    free(key);
    free(size_s);
    return rc ? -1 : 0;
}

int cf_list_page_parse(cf_list_page *p, const char *doc, size_t len, const char *item_path)
{
    p->err = 0;
    int rc = cf_xml_each(doc, len, item_path, page_item, p);
    if (p->err)
        return p->err;
    return rc ? CF_EIO : 0;
}

int cf_list_page_emit(cf_list_page *p, cf_storage_list_cb cb, void *payload)
{
    int rc = 0;
    for (size_t i = 0; i < p->n && rc == 0; i++)
        rc = cb(p->items[i].name, p->items[i].size, payload);
    cf_list_page_free(p);
    return rc;
}

void cf_list_page_free(cf_list_page *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->items[i].name);
    free(p->items);
    p->items = NULL;
    p->n = p->cap = 0;
}

int cf_storage_env_size(uint64_t *out, const char *name, uint64_t def, uint64_t min,
                        uint64_t max)
{
    const char *v = getenv(name);
    *out = def;
    if (!v || !*v)
        return 0;
    uint64_t x;
    if (cf_parse_size(&x, v) != 0 || x < min || x > max)
        return cf_error_set(CF_EINVAL, 0, "%s='%s' is not a size from %llu MiB to %llu MiB", name,
                            v, (unsigned long long)(min >> 20), (unsigned long long)(max >> 20));
    *out = x;
    return 0;
}
