/*
 * azure.h - internals of the Azure Blob driver shared by its files and unit tests: the parsed
 * location (endpoint, account, container, prefix, access tier) and the SharedKey signer.
 */
#ifndef CF_STORAGE_AZURE_H
#define CF_STORAGE_AZURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The REST API version sent as x-ms-version: the first with the Cold tier; Azurite 3.35
 * accepts 2009-04-14 to 2025-11-05. */
#define CF_AZURE_API_VERSION "2021-12-02"
#define CF_AZURE_DEFAULT_SUFFIX "core.windows.net"

typedef struct {
    char *scheme;    /* "https" or "http" */
    char *host;      /* host[:port] exactly as in the Host header */
    char *account;   /* storage account: first path segment in the path-style form */
    char *container;
    char *prefix;    /* "" or "dir/sub/" (always ends with '/') */
    bool path_style; /* http(s)://HOST/ACCOUNT/CONTAINER (emulators): the account is part of
                      * the request path, and so appears twice in the signed resource */
    char *tier;      /* ?tier= or COFFER_AZURE_TIER: "Hot", "Cool", "Cold", "Archive", or NULL */
} cf_azure_location;

/*
 * Parse what follows "azure:" - "ACCOUNT/CONTAINER[/PREFIX][?tier=T]" (endpoint
 * https://ACCOUNT.blob.core.windows.net, or the suffix in COFFER_AZURE_ENDPOINT_SUFFIX) or
 * "http[s]://HOST[:PORT]/ACCOUNT/CONTAINER[/PREFIX][?tier=T]" (path style, for Azurite and
 * other emulators). Returns 0 or CF_EINVAL (message set; never echoes query text, which could
 * hold a SAS signature), CF_ENOMEM.
 */
int cf_azure_location_parse(cf_azure_location *out, const char *location);
void cf_azure_location_free(cf_azure_location *loc);

/* A header or query parameter. */
typedef struct {
    const char *name;
    const char *value;
} cf_azure_pair;

typedef struct {
    const char *method; /* "GET", "PUT", ... */
    /* Every header the request carries (names in any case): the standard ones that the
     * string to sign lists (Content-Encoding, Content-Language, Content-MD5, Content-Type,
     * Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range) are taken
     * by name, all x-ms-* ones are canonicalized; others are ignored. */
    const cf_azure_pair *headers;
    size_t n_headers;
    /* The body's length as sent in Content-Length (0 and "no body" both sign as empty). */
    uint64_t content_length;
    const char *account;
    /* The request path exactly as sent, percent-encoded: "/container/dir/blob" on Azure,
     * "/account/container/dir/blob" on an emulator (path style). */
    const char *path;
    /* Query parameters, decoded (names in any case). */
    const cf_azure_pair *query;
    size_t n_query;
} cf_azure_sign_input;

/*
 * The SharedKey string to sign (API versions 2015-02-21 and later):
 *   VERB \n Content-Encoding \n Content-Language \n Content-Length (empty when 0) \n
 *   Content-MD5 \n Content-Type \n Date \n If-Modified-Since \n If-Match \n If-None-Match \n
 *   If-Unmodified-Since \n Range \n
 *   CanonicalizedHeaders: "name:value\n" per x-ms-* header, names lower-cased and sorted,
 *     runs of white space in values folded to one space, values trimmed
 *   CanonicalizedResource: "/" ACCOUNT PATH, then "\nname:value" per query parameter, names
 *     lower-cased and sorted, values of a repeated name sorted and joined with ','.
 * *out is malloc'd. Returns 0 or CF_ENOMEM / CF_EINVAL (a header value with CR or LF).
 */
int cf_azure_string_to_sign(char **out, const cf_azure_sign_input *in);

/* base64(HMAC-SHA256(key, sts)) into out (44 characters and a NUL). Returns 0 or CF_EIO. */
int cf_azure_signature(char out[45], const uint8_t *key, size_t key_len, const char *sts);

/* The x-ms-date value for unix time t: "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 1123, English
 * names whatever the locale). */
void cf_azure_date(char out[30], long long t);

/* The block id of block index of an upload: base64 of "<16 hex nonce>-<7 digit index>", 32
 * characters for every block (Azure wants one length per blob), unique per upload so that
 * racing uploads of one blob never commit each other's blocks. */
void cf_azure_block_id(char out[33], uint64_t nonce, size_t index);

/* cf_list_page's fix_name for List Blobs: a name given <Name Encoded="true"> (not valid XML)
 * is percent-decoded in place. 0, or -1 for a malformed or NUL-carrying encoding. */
int cf_azure_list_name(char *name, const char *inner, size_t inner_len);

#endif
