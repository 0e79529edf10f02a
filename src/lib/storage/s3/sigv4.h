/*
 * sigv4.h - AWS Signature Version 4 for request headers, implemented with OpenSSL
 * (HMAC-SHA256, SHA-256). S3 flavour: the path is signed as given (encoded once, never
 * normalised or double-encoded).
 */
#ifndef CF_STORAGE_S3_SIGV4_H
#define CF_STORAGE_S3_SIGV4_H

#include <stddef.h>

#include "util/util.h"

typedef struct {
    const char *name;
    const char *value;
} cf_sigv4_pair;

typedef struct {
    const char *method;
    /* The canonical URI: the request path, already percent-encoded exactly as sent
     * ("/bucket/dir/a%24b"). */
    const char *path;
    /* Query parameters, raw (not encoded); the signer encodes and sorts them. A parameter
     * without a value has value "". */
    const cf_sigv4_pair *query;
    size_t n_query;
    /* The headers to sign, names in any case; must include host and x-amz-date. Values are
     * trimmed and inner runs of spaces collapsed; repeated names are joined with ','. */
    const cf_sigv4_pair *headers;
    size_t n_headers;
    const char *payload_hash; /* lower-case hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
    const char *amz_date;     /* "YYYYMMDDTHHMMSSZ", the x-amz-date header's value */
    const char *region;
    const char *service;
    const char *access_key;
    const char *secret_key;
} cf_sigv4_input;

typedef struct {
    char *canonical_request;
    char *string_to_sign;
    char *signed_headers; /* "host;x-amz-content-sha256;x-amz-date" */
    char signature[65];   /* lower-case hex */
    char *authorization;  /* the Authorization header's value */
} cf_sigv4_output;

/* Sign. Returns 0 or CF_ENOMEM / CF_EINVAL; free *out with cf_sigv4_output_free. */
int cf_sigv4_sign(cf_sigv4_output *out, const cf_sigv4_input *in);
void cf_sigv4_output_free(cf_sigv4_output *out);

/* The canonical query string (RFC 3986-encoded names and values, sorted by name then value,
 * "name=value" joined by '&'), appended to out. Also what the request URL should carry, so
 * what is sent is what is signed. Returns 0 or CF_ENOMEM. */
int cf_sigv4_canonical_query(cf_buf *out, const cf_sigv4_pair *query, size_t n);

/* Lower-case hex SHA-256 of data. */
void cf_sigv4_sha256_hex(char out[65], const void *data, size_t len);

/* "YYYYMMDDTHHMMSSZ" for the unix time t (UTC). */
void cf_sigv4_amz_date(char out[17], long long t);

#endif
