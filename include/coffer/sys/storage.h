/*
 * storage.h - the storage driver interface (extension API). A driver stores opaque, immutable
 * objects under slash-separated names ("data/3f/3fa1...", "snapshots/9c..."); it knows nothing
 * of packs, keys or compression. Drivers are selected by URL through the registry.
 */
#ifndef COFFER_SYS_STORAGE_H
#define COFFER_SYS_STORAGE_H

#include "coffer/common.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CF_STORAGE_OPS_VERSION 1

/* Feature flags a driver announces. */
enum {
    CF_STORAGE_FEAT_EXCLUSIVE_PUT = 1u << 0, /* put with CF_PUT_EXCLUSIVE is atomic */
    CF_STORAGE_FEAT_SERVER_COPY = 1u << 1,
    CF_STORAGE_FEAT_STORAGE_CLASS = 1u << 2,
    CF_STORAGE_FEAT_OBJECT_LOCK = 1u << 3,
};

/* Flags for put. */
enum {
    CF_PUT_EXCLUSIVE = 1u << 0, /* fail with CF_EEXISTS if the object exists */
};

/* Flags for open. */
enum {
    CF_STORAGE_CREATE = 1u << 0, /* create the location (directory, bucket) if missing */
};

typedef int (*cf_storage_list_cb)(const char *name, uint64_t size, void *payload);

/*
 * A driver. Every function returns 0 or a negative CF_E* code with cf_error_set() called:
 * CF_ENOTFOUND for a missing object, CF_ERETRYABLE for faults worth retrying,
 * CF_ESTORAGE_AUTH for storage credentials refused or missing (never CF_EAUTH, which means a
 * wrong repository password or key), CF_ENOSPACE for a full device, other codes for permanent
 * faults.
 * Messages name the object and never contain credentials.
 */
typedef struct cf_storage_ops {
    unsigned version; /* CF_STORAGE_OPS_VERSION */
    const char *scheme;
    unsigned features;
    /* Store len bytes under name atomically: readers see the whole object or none. Durable
     * when it returns 0 (local: written, fsynced, renamed, directory fsynced). */
    int (*put)(void *self, const char *name, const void *data, size_t len, unsigned flags);
    /* Read length bytes from offset (length 0: to the end). *out is malloc'd and owned by the
     * caller. Reading past the end returns CF_ECORRUPT naming the object. */
    int (*get)(void *self, const char *name, uint64_t offset, uint64_t length, uint8_t **out,
               size_t *out_len);
    int (*stat)(void *self, const char *name, uint64_t *out_size);
    /* Call cb for every object whose name starts with prefix (a folder such as "data/" is
     * listed recursively). Names are full names relative to the root. A non-zero return from
     * cb stops the listing and is returned. Order is unspecified. */
    int (*list)(void *self, const char *prefix, cf_storage_list_cb cb, void *payload);
    /* Remove an object; CF_ENOTFOUND if it does not exist. */
    int (*remove)(void *self, const char *name);
    /* Bytes free at the location, or CF_EUNSUPPORTED. May be NULL. */
    int (*space)(void *self, uint64_t *out_free);
    void (*close)(void *self);
    /* Optional: a directory on the storage's own filesystem where the engine may build large
     * objects (packs) in temporary files named ".tmp-*", to be published with put_file without
     * holding them in memory. NULL when the driver has none. */
    int (*spool_dir)(void *self, char *out, size_t out_size);
    /* Optional, with spool_dir: publish the temporary file at tmp_path (open as fd, fully
     * written) as name, atomically and durably (fsync, rename, fsync the directory). On
     * success the temporary file is gone. */
    int (*put_file)(void *self, const char *name, const char *tmp_path, int fd, unsigned flags);
    /* Optional: remove temporary files left by writers that were killed. Only called while
     * the caller holds the repository's exclusive lock. unlocked (NULL-terminated) names the
     * top-level folders written without that lock: there a temporary may belong to a live
     * writer on another host, so it is spared unless clearly abandoned. */
    int (*purge_tmp)(void *self, const char *const *unlocked, uint64_t *out_removed,
                     uint64_t *out_bytes);
} cf_storage_ops;

/* An open storage location: a driver and its state. */
typedef struct cf_storage cf_storage;

/*
 * Open a location by URL: "/path" or "local:/path" (local disk), "mem:NAME" (in-process, for
 * tests). With CF_STORAGE_CREATE the location is created if missing; without it a missing
 * location is CF_ENOREPO. *out is closed with cf_storage_close.
 */
int cf_storage_open(cf_storage **out, const char *url, unsigned flags);
/* Wrap an already-created driver instance (for decorators and tests). Takes ownership of self. */
int cf_storage_wrap(cf_storage **out, const cf_storage_ops *ops, void *self, const char *display);
void cf_storage_close(cf_storage *st);

/* The location as shown to users, credentials removed. Borrowed. */
const char *cf_storage_display(const cf_storage *st);
/* The driver's scheme ("local", "mem", "s3", "sftp", ...). Borrowed. */
const char *cf_storage_scheme(const cf_storage *st);
unsigned cf_storage_features(const cf_storage *st);

/* Whether name is a valid object name (not a temporary, no "." or ".." component, ...):
 * drivers listing a store skip keys that are not. */
bool cf_storage_name_valid(const char *name);

int cf_storage_put(cf_storage *st, const char *name, const void *data, size_t len, unsigned flags);
int cf_storage_get(cf_storage *st, const char *name, uint64_t offset, uint64_t length,
                   uint8_t **out, size_t *out_len);
int cf_storage_stat(cf_storage *st, const char *name, uint64_t *out_size);
int cf_storage_list(cf_storage *st, const char *prefix, cf_storage_list_cb cb, void *payload);
int cf_storage_remove(cf_storage *st, const char *name);
int cf_storage_space(cf_storage *st, uint64_t *out_free);
/* Remove temporary files of killed writers (no-op for drivers without any); unlocked: see
 * purge_tmp. */
int cf_storage_purge_tmp(cf_storage *st, const char *const *unlocked, uint64_t *out_removed,
                         uint64_t *out_bytes);
/* The spool directory of drivers that have one (CF_EUNSUPPORTED otherwise). */
int cf_storage_spool_dir(cf_storage *st, char *out, size_t out_size);
int cf_storage_put_file(cf_storage *st, const char *name, const char *tmp_path, int fd,
                        unsigned flags);

/* Object names: at most this many bytes. Valid names are non-empty, slash-separated, do not
 * start or end with '/', and contain no "..", "//", "." component, or component starting
 * with ".tmp-" (reserved for drivers' temporary files). The wrappers below return CF_EINVAL
 * for anything else, so drivers only ever see valid names. */
#define CF_STORAGE_NAME_MAX 1024
/* The most one get may return; larger reads are CF_EINVAL (read large objects in ranges). */
#define CF_STORAGE_GET_MAX ((uint64_t)1 << 30)

/* Drivers built in. */
extern const cf_storage_ops cf_storage_local_ops;
extern const cf_storage_ops cf_storage_mem_ops;
/* Constructors used by the registry. */
int cf_storage_local_new(void **out_self, const char *path, unsigned flags);
int cf_storage_mem_new(void **out_self, const char *name, unsigned flags);

/* SFTP (libssh2; docs/storage/sftp.md). location is what follows "sftp:":
 * "USER@HOST:/abs/path", "USER@HOST:rel/path" or "//USER@HOST[:PORT]/abs/path". Keys come from
 * COFFER_SFTP_KEY (or ssh-agent, ~/.ssh/id_ed25519, ~/.ssh/id_rsa); host keys are checked
 * against COFFER_SFTP_KNOWN_HOSTS or ~/.ssh/known_hosts (COFFER_SFTP_ACCEPT_NEW=1 records an
 * unknown one). Connection failures are CF_ERETRYABLE; refused or unknown keys
 * CF_ESTORAGE_AUTH. */
extern const cf_storage_ops cf_storage_sftp_ops;
int cf_storage_sftp_new(void **out_self, const char *location, unsigned flags);
/* Testing: the next n operations on any sftp storage find their connection dropped (the
 * socket is shut down under them), which exercises reconnection. Returns 0 or CF_EINVAL. */
int cf_storage_sftp_inject_drop(int n);

/* S3 and S3-compatible stores (docs/storage/s3.md). location is what follows "s3:":
 * "BUCKET[/PREFIX]" (AWS, virtual-host style) or "http[s]://HOST[:PORT]/BUCKET[/PREFIX]" (path
 * style), optionally followed by "?storage_class=...&sse=...&object_lock=...&retain_days=N".
 * Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) or AWS_PROFILE. */
extern const cf_storage_ops cf_storage_s3_ops;
int cf_storage_s3_new(void **out_self, const char *location, unsigned flags);

/* Azure Blob storage (docs/storage/azure.md). location is what follows "azure:":
 * "ACCOUNT/CONTAINER[/PREFIX]" (https://ACCOUNT.blob.core.windows.net) or
 * "http[s]://HOST[:PORT]/ACCOUNT/CONTAINER[/PREFIX]" (path style, for emulators such as
 * Azurite), optionally followed by "?tier=Hot|Cool|Cold|Archive". Credentials:
 * AZURE_STORAGE_KEY (SharedKey; AZURE_STORAGE_ACCOUNT, if set, must name the url's account)
 * or AZURE_STORAGE_SAS_TOKEN. */
extern const cf_storage_ops cf_storage_azure_ops;
int cf_storage_azure_new(void **out_self, const char *location, unsigned flags);

/* ---- testing (mem driver only) ---- */
/* Make every every_n-th call of op ("put", "get", "list", "remove", "stat") on the mem store
 * named store (without "mem:") fail with code (a negative CF_E*) before doing anything;
 * every_n 0 disables injection for that op. Resets the op's call counter. Returns 0,
 * CF_ENOREPO if the store does not exist, or CF_EINVAL. */
int cf_storage_mem_inject(const char *store, const char *op, int every_n, int code);
/* Drop every mem store and its objects. Handles still open on a dropped store return
 * CF_ENOREPO from every call; close them as usual. */
void cf_storage_mem_reset(void);

#ifdef __cplusplus
}
#endif
#endif
