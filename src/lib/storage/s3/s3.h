/*
 * s3.h - internals of the S3 driver shared by its files and unit tests: the parsed location
 * (endpoint, bucket, prefix, per-object options) and the credentials.
 */
#ifndef CF_STORAGE_S3_H
#define CF_STORAGE_S3_H

#include <stdbool.h>
#include <stddef.h>

#define CF_S3_DEFAULT_REGION "us-east-1"

typedef enum {
    CF_S3_COND_AUTO = 0, /* probe the server once, on the first exclusive put */
    CF_S3_COND_YES,      /* the server honours If-None-Match: * on writes */
    CF_S3_COND_NO,       /* it does not: check with HEAD, then write (racy across processes) */
} cf_s3_cond;

typedef struct {
    char *scheme;   /* "https" or "http" */
    char *host;     /* host[:port] exactly as in the Host header */
    char *bucket;
    char *prefix;   /* "" or "dir/sub/" (always ends with '/') */
    bool aws;       /* the s3:BUCKET form: AWS endpoints, virtual-host style */
    bool path_style; /* bucket in the path (custom endpoints, AWS buckets with dots) */
    char *region;   /* ?region=, else NULL */
    char *storage_class;   /* ?storage_class= or COFFER_S3_STORAGE_CLASS, else NULL */
    char *sse;             /* ?sse=AES256|aws:kms */
    char *sse_kms_key_id;  /* ?sse_kms_key_id= */
    char *object_lock;     /* ?object_lock=COMPLIANCE|GOVERNANCE */
    unsigned retain_days;  /* ?retain_days=N (with object_lock) */
    char *lock_exclude;    /* ?object_lock_exclude=PREFIX (default "locks/"): not retained */
    cf_s3_cond cond;       /* ?conditional_put=auto|yes|no or COFFER_S3_CONDITIONAL_PUT */
} cf_s3_location;

/*
 * Parse what follows "s3:" - "https://HOST[:PORT]/BUCKET[/PREFIX][?OPTIONS]",
 * "http://..." or "BUCKET[/PREFIX][?OPTIONS]" (AWS). The endpoint of the AWS form depends on
 * the region: call cf_s3_location_set_region afterwards. Returns 0 or CF_EINVAL (message set,
 * never echoing the text after an '@'), CF_ENOMEM.
 */
int cf_s3_location_parse(cf_s3_location *out, const char *location);
/* Set the region; for the AWS form (re)compute host and path style from it. */
int cf_s3_location_set_region(cf_s3_location *loc, const char *region);
void cf_s3_location_free(cf_s3_location *loc);

typedef struct {
    char *access_key;
    char *secret_key;    /* wiped when freed */
    char *session_token; /* or NULL */
    char *region;        /* AWS_REGION, AWS_DEFAULT_REGION, the profile's region, us-east-1 */
    char *source;        /* where the keys came from, for messages: "environment", a file */
} cf_s3_creds;

/*
 * Credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) from the
 * environment, else the profile AWS_PROFILE (default "default") in AWS_SHARED_CREDENTIALS_FILE
 * (default ~/.aws/credentials). Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's region
 * in AWS_CONFIG_FILE (default ~/.aws/config), else us-east-1. Returns 0, CF_ESTORAGE_AUTH when no
 * credentials are found, CF_ENOMEM.
 */
int cf_s3_creds_load(cf_s3_creds *out);
void cf_s3_creds_free(cf_s3_creds *c);

/* Look up key in [section] of an INI text (';' and '#' comments, "key = value").
 * Returns a malloc'd value or NULL. */
char *cf_s3_ini_get(const char *text, const char *section, const char *key);

#endif
