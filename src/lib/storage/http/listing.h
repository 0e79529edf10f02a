/*
 * listing.h - one page of an object store's XML listing (S3 ListObjectsV2, Azure List Blobs),
 * parsed whole before any of it is handed on, so that the caller's callbacks may remove
 * objects; and the size settings both drivers read from the environment.
 */
#ifndef CF_STORAGE_HTTP_LISTING_H
#define CF_STORAGE_HTTP_LISTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer/sys/storage.h"

typedef struct {
    char *name; /* relative to the repository's prefix */
    uint64_t size;
} cf_list_item;

typedef struct {
    const char *prefix;    /* the repository's key prefix, stripped from every name */
    const char *name_path; /* the key's element inside an item: "Key", "Name" */
    const char *size_path; /* its size's: "Size", "Properties/Content-Length" */
    /* optional: rewrite the key in place given the item's raw content (Azure lists names
     * that are not valid XML percent-encoded); non-zero: malformed */
    int (*fix_name)(char *name, const char *inner, size_t inner_len);
    cf_list_item *items;
    size_t n, cap;
    int err;
} cf_list_page;

/* Collect the items at item_path of doc; keys outside the prefix and names that are not
 * objects (temporaries, "." components) are skipped. Returns 0, CF_ENOMEM, or CF_EIO for a
 * malformed answer (no message set: the driver names the request). */
int cf_list_page_parse(cf_list_page *p, const char *doc, size_t len, const char *item_path);

/* Hand each collected item to cb, stopping at (and returning) its first non-zero return, then
 * empty the page. */
int cf_list_page_emit(cf_list_page *p, cf_storage_list_cb cb, void *payload);

void cf_list_page_free(cf_list_page *p);

/* *out = the size in environment variable name (e.g. "16M"), def when unset; CF_EINVAL
 * naming the variable when it is not a size from min to max (both whole MiB). */
int cf_storage_env_size(uint64_t *out, const char *name, uint64_t def, uint64_t min,
                        uint64_t max);

#endif
