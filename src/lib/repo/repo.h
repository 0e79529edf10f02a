/*
 * repo.h - internals of the repository: master key and key slots, config, sealed objects,
 * packs, the in-memory index, trees, snapshots and locks. Format: docs/FORMAT.md.
 */
#ifndef CF_REPO_H
#define CF_REPO_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "chunk/chunker.h"
#include "coffer/coffer.h"
#include "coffer/sys/storage.h"
#include "crypto/crypto.h"
#include "util/util.h"

#define CF_FORMAT_VERSION 1
#define CF_PACK_PREFIX 28 /* "CFPK", version, 3 reserved, generation u32, salt 16 */
#define CF_PACK_SIZE_DEFAULT (16u * 1024u * 1024u)
/* Tree blobs of remote repositories are read a whole pack at a time (trees are packed apart
 * from data, so a tree pack holds the trees of one backup, about 30 bytes a file): this many
 * packs stay in memory, and packs are kept in the local cache (cache.c) under "packs/". Only
 * when the repository's pack size is at most CF_TREE_PACK_WHOLE_MAX. */
#define CF_TREE_PACK_SLOTS 4
#define CF_TREE_PACK_WHOLE_MAX ((uint64_t)64 << 20)
#define CF_PACK_SIZE_MAX (512u * 1024u * 1024u)
#define CF_KDF_LOG_N_DEFAULT 15
#define CF_LOCK_STALE_SECONDS (30 * 60)
#define CF_LOCK_REFRESH_SECONDS (5 * 60)

/* Blob types stored in packs and index entries. Never renumber. */
enum { CF_BLOB_DATA = 0, CF_BLOB_TREE = 1 };

/* Sealed object types (index, snapshot, lock). Never renumber. */
enum { CF_OBJ_INDEX = 1, CF_OBJ_SNAPSHOT = 2, CF_OBJ_LOCK = 3, CF_OBJ_ARCHIVE = 4 };

/* ---- master key ---- */
#define CF_MAX_GENERATIONS 64
typedef struct {
    uint8_t mac[CF_KEY_LEN];   /* blob ids: HMAC-SHA-256 of plaintext */
    uint8_t data[CF_KEY_LEN];  /* the current generation's data key: new packs and objects */
    uint32_t gen;              /* the current generation */
    uint32_t ngens;            /* every generation still readable, the current one included */
    uint32_t gen_ids[CF_MAX_GENERATIONS];
    uint8_t gen_keys[CF_MAX_GENERATIONS][CF_KEY_LEN];
    /* version 2 bundles: an index key (index files and locks, which write-only keys read for
     * deduplication) and the repository's X25519 key pair (what write-only keys seal to) */
    bool has_index, has_priv, has_pub;
    uint8_t index[CF_KEY_LEN];
    uint8_t priv[32], pub[32];
} cf_master_key;

/* Generation markers in pack prefixes and object headers: sealed with the index key, or with
 * a random key boxed to the repository's public key (written by a write-only key). */
#define CF_GEN_INDEX 0xFFFFFFFEu
#define CF_GEN_BOX 0xFFFFFFFFu
/* A pack written by a write-only key has a CF_BOX_LEN key box after its 28-byte prefix. */
#define CF_PACK_PREFIX_MAX (28 + 92)

/* True when this key can read data (holds data keys), false for a write-only key. */
static inline bool cf_master__can_read(const cf_master_key *mk) { return mk->ngens > 0; }
/* The bundle a write-only slot holds: no data keys, no private key. */
void cf_master__write_only(cf_master_key *out, const cf_master_key *mk);

/* A new master key: random mac key, generation 0 with a random data key. */
int cf_master__generate(cf_master_key *mk);
/* The data key of a generation, or NULL when this key bundle does not have it. */
const uint8_t *cf_master__data_key(const cf_master_key *mk, uint32_t gen);
/* The key bundle a key slot seals, and back. */
int cf_master__encode(cf_buf *out, const cf_master_key *mk);
int cf_master__decode(cf_master_key *mk, const uint8_t *data, size_t len);

/* ---- config ---- */
typedef struct {
    uint32_t version;
    char id[65];
    cf_chunk_params chunk;
    uint32_t pack_size;
    int compression_level;
} cf_config;

/* ---- index ---- */
typedef struct {
    cf_id id;
    uint32_t pack;      /* number in the index's pack table */
    uint32_t offset;    /* of the sealed blob within the pack */
    uint32_t length;    /* sealed length */
    uint32_t raw_len;   /* plaintext length */
    uint8_t type;       /* CF_BLOB_* */
    uint8_t comp;       /* CF_COMP_* */
    uint8_t used;       /* slot occupied (hash table) */
    uint8_t pad;
} cf_index_entry;

/* An entry as stored in memory for the bulk of the index: 48 bytes per blob. */
typedef struct {
    uint8_t id[CF_ID_LEN];
    uint32_t pack_tc;   /* pack number (28 bits) | type << 28 | compression << 29 */
    uint32_t offset, length, raw_len;
} cf_ix_packed;

#define CF_IX_PACK_MASK 0x0FFFFFFFu
#define CF_IX_DELETED CF_IX_PACK_MASK /* marks a removed base entry */

/*
 * The index: blobs loaded from index files live in a sorted array of 48-byte entries (the
 * "base", searched through a 64 Ki-bucket directory on the first two id bytes); blobs added
 * by this handle live in a small open-addressing table (the "overlay"). See
 * docs/internals/index.md.
 */
typedef struct {
    cf_ix_packed *base;
    size_t nbase, base_cap, base_live;
    size_t nsorted;       /* base[0..nsorted) is sorted and deduplicated */
    uint32_t *dir;        /* 65537 bucket starts into base[0..nsorted) */
    cf_index_entry *slots; /* overlay */
    size_t cap;
    size_t count;         /* live entries: base and overlay */
    size_t overlay_count;
    cf_id *packs;
    size_t npacks, packs_cap;
    /* pack id -> number; simple open addressing over packs */
    uint32_t *pack_slots;
    size_t pack_slots_cap;
} cf_index;

/* Number of live entries (merges entries appended by decode first). */
size_t cf_index__count(cf_index *ix);
/* Number of positions cf_index__at accepts. */
size_t cf_index__positions(cf_index *ix);
/* The entry at a position (base first, then overlay), false for an empty or removed one. */
bool cf_index__at(cf_index *ix, size_t pos, cf_index_entry *out);
/* Sort and deduplicate entries appended by decode (done lazily by the readers too). */
int cf_index__seal(cf_index *ix);
/* Bytes of memory the index uses. */
size_t cf_index__memory(const cf_index *ix);

void cf_index__init(cf_index *ix);
void cf_index__free(cf_index *ix);
/* Number for pack id, adding it if new. */
int cf_index__pack_no(cf_index *ix, const cf_id *pack, uint32_t *out);
/* Add an entry (pack given by number) to the overlay; an existing id keeps its first
 * location. */
int cf_index__add(cf_index *ix, const cf_index_entry *e);
/* Look up an id. The result is valid until the next call on this index from this thread. */
const cf_index_entry *cf_index__get(cf_index *ix, const cf_id *id);
/* Forget every pending entry (blobs of a failed write that were never stored); returns how
 * many. */
size_t cf_index__drop_pending(cf_index *ix);
/* Remove an entry; false when absent. */
bool cf_index__remove(cf_index *ix, const cf_id *id);
/* Pack number of blobs added to a pack still being written. */
#define CF_INDEX_PENDING UINT32_MAX
/* Point a pending entry at the pack it was stored in. */
void cf_index__resolve_pending(cf_index *ix, const cf_id *id, uint32_t pack);
/* Record where a pending blob was placed within its (still open) pack. */
void cf_index__fill_pending(cf_index *ix, const cf_id *id, uint32_t offset, uint32_t length,
                            uint8_t comp);
bool cf_index__has_pack(const cf_index *ix, const cf_id *pack);
/* Serialise entries (all, or only those whose pack is in packs[] when filter) as an index
 * file plaintext. */
int cf_index__encode(cf_buf *out, cf_index *ix, const cf_id *only_packs, size_t n_only);
/* Serialise exactly these entries (pack numbers of ix) as an index file plaintext. Sorts
 * list. */
int cf_index__encode_list(cf_buf *out, const cf_index *ix, cf_index_entry *list, size_t n);
/* Parse an index file plaintext into ix. */
int cf_index__decode(cf_index *ix, const uint8_t *data, size_t len, const char *name);

/* ---- pack writer ---- */
typedef struct {
    cf_buf buf;              /* the pack being built */
    uint8_t key[CF_KEY_LEN]; /* this pack's key */
    cf_buf header;           /* header entries */
    cf_buf scratch;          /* compression output */
    uint32_t count;
    uint8_t prefix[120];     /* CF_PACK_PREFIX_MAX: the header's associated data */
    size_t prefix_len;       /* 28, or 120 with a key box (written by a write-only key) */
    /* spooled packs are built in a temporary file instead of buf (which then only stages
     * one sealed blob): memory stays small whatever the pack size */
    int fd;                  /* -1: building in memory */
    char tmp[4096];
    uint64_t len;            /* bytes written to the spool file */
    struct cf_sha256_ctx *hash;
} cf_pack_writer;

void cf_pack__writer_init(cf_pack_writer *w);
void cf_pack__writer_free(cf_pack_writer *w);
/* Drop the pack being built (its blobs were never stored). */
void cf_pack__writer_abort(cf_pack_writer *w);

/* ---- tree ---- */
typedef struct {
    uint8_t kind; /* 0 blob, 1 hole */
    uint64_t len; /* plaintext length (blob) or hole length */
    cf_id id;
} cf_content_item;

typedef struct {
    char *name; size_t len;
} cf_xattr_name;

typedef struct {
    char *name;
    uint8_t *value;
    uint32_t value_len;
} cf_xattr;

typedef struct {
    uint8_t type; /* cf_node_type */
    char *name;
    uint16_t name_len; /* names may contain any byte but '/' and NUL */
    uint32_t mode, uid, gid;
    char *user, *group;
    int64_t mtime, atime, ctime;
    uint64_t size, inode, dev, rdev;
    uint32_t nlink;
    uint8_t flags;
    char *target;       /* symlink */
    cf_xattr *xattrs;
    uint16_t nxattrs;
    cf_content_item *content;
    uint32_t ncontent;
    cf_id subtree;      /* dirs */
} cf_node;

typedef struct {
    cf_node *nodes;
    size_t count, cap;
} cf_tree;

void cf_tree__init(cf_tree *t);
void cf_tree__free(cf_tree *t);
void cf_node__free(cf_node *n);
/* Append a node (takes ownership of its allocations). */
int cf_tree__add(cf_tree *t, cf_node *n);
void cf_tree__sort(cf_tree *t);
const cf_node *cf_tree__find(const cf_tree *t, const char *name);
int cf_tree__encode(cf_buf *out, const cf_tree *t);
/* True when both trees would encode to the same bytes. */
bool cf_tree__equal(const cf_tree *a, const cf_tree *b);
int cf_tree__decode(cf_tree *t, const uint8_t *data, size_t len);
/* Deep copy of a node's allocations. */
int cf_node__copy(cf_node *dst, const cf_node *src);

/* ---- snapshot ---- */
struct cf_snapshot {
    char id[65];
    int64_t time;
    char *host, *username;
    char **paths; size_t npaths;
    char **tags; size_t ntags;
    cf_backup_type type;
    char *parent; /* hex or NULL */
    cf_id tree;
    char tree_hex[65];
    char *source_kind, *source_name;
    cf_backup_stats stats;
    json_t *extra; /* unknown or source-specific fields, kept as they are */
};

int cf_snapshot__encode(cf_buf *out, const cf_snapshot *s);
int cf_snapshot__decode(cf_snapshot **out, const uint8_t *data, size_t len, const char *id);

/* ---- the repository handle ---- */
struct cf_repo {
    cf_storage *st;
    char *url;
    cf_config cfg;
    cf_master_key mk;
    cf_chunker *chunker;
    cf_index index;
    pthread_mutex_t mu;      /* guards index and pending writes */
    cf_pack_writer packs[2]; /* one per blob type, for blobs added without the pipeline */
    struct cf_pipeline *pipe; /* workers that compress, seal and store; NULL when off */
    cf_id *new_packs; size_t n_new_packs, new_packs_cap; /* written since last index flush */
    char **warnings; size_t nwarnings;
    char lock_name[80];      /* held lock object, "" if none */
    char slot_id[65];        /* the key slot this handle was opened with */
    cf_key_role role;        /* and its role */
    uint32_t unknown_gens;   /* objects that named a generation above this key's newest */
    uint32_t unknown_gen_max;
    cf_lock_mode lock_mode;
    double lock_refreshed;
    cf_notice_cb notice;     /* cf_repo_set_notice */
    void *notice_payload;
    uint64_t bytes_written;  /* pack and index bytes stored by this handle */
    uint64_t blobs_claimed;  /* new blobs accepted by this handle */
    char (*written_indexes)[65]; size_t n_written_indexes; /* index files this handle wrote */
    char (*index_names)[65]; size_t nindex_names; /* index files loaded (or found damaged) */
    bool index_unloaded;     /* opened with CF_OPEN_NO_INDEX: loaded at the first lock */
    bool cache_off;          /* read metadata from storage, not the local cache (check) */
    bool reload_index;       /* the next lock reloads the whole index from storage */
    double last_checkpoint;  /* when an index checkpoint was last written */
    char spool[4096];        /* where packs are built ("" : in memory) */
    uint8_t (*salts)[CF_PACK_PREFIX_MAX + 1]; size_t nsalts; /* pack prefixes by pack number;
                                                                 [CF_PACK_PREFIX_MAX] = known */
    /* whole tree packs of remote storage held in memory (guarded by mu), see
     * cf_repo__read_blob_window */
    struct {
        cf_id pack;
        uint8_t *data; /* NULL: free slot */
        size_t len;
        uint64_t used;
    } tree_packs[CF_TREE_PACK_SLOTS];
    uint64_t tree_pack_tick;
};

/* Sealed objects: index, snapshot, lock documents. */
int cf_repo__seal_object(cf_buf *out, const cf_repo *r, uint8_t type, const void *pt, size_t len);
int cf_repo__open_object(cf_buf *out, const cf_repo *r, uint8_t type, const uint8_t *data,
                         size_t len, const char *name);
/* Seal and store under "<dir>/<sha256 hex>"; out_name may be NULL. */
int cf_repo__put_object(cf_repo *r, const char *dir, uint8_t type, const void *pt, size_t len,
                        char out_name[65]);
int cf_repo__get_object(cf_buf *out, cf_repo *r, const char *dir, uint8_t type, const char *name);

/* Re-seal under the current generation every archive object sealed under an older one (only
 * that one, unless only is UINT32_MAX); *count is incremented per object. For rewrite. */
int cf_archive__reseal(cf_repo *r, uint32_t only, uint64_t *count);

/* Blob id of plaintext. */
void cf_repo__blob_id(const cf_repo *r, cf_id *out, const void *data, size_t len);
/* Store a blob unless the index has it. *out_added is the stored size (0 if deduplicated). */
int cf_repo__add_blob(cf_repo *r, uint8_t type, const cf_id *id, const void *data, size_t len,
                      uint64_t *out_added);
/* Reserve id in the index as pending; false when it is already known (stored or in flight). */
bool cf_repo__claim_blob(cf_repo *r, uint8_t type, const cf_id *id, size_t len);
/* Compress, seal and append a claimed blob to w; closes and stores w when full. */
int cf_pack__writer_add(cf_repo *r, cf_pack_writer *w, uint8_t type, const cf_id *id,
                        const void *data, size_t len, uint64_t *out_added);
/* Close w: seal its header, store it, register the pack and its blobs. */
int cf_pack__writer_finish(cf_repo *r, cf_pack_writer *w);

/* The parallel pipeline: with it started, cf_repo__add_blob hands new blobs to worker threads
 * (bounded queue: a slow backend slows the producer). drain waits for all queued blobs and
 * closes the workers' packs; stop drains and joins. Errors of workers are returned by the
 * next submit, drain or stop. bytes added are accounted in cf_pipeline__added. */
int cf_pipeline__start(cf_repo *r, unsigned workers);
int cf_pipeline__submit(cf_repo *r, uint8_t type, const cf_id *id, const void *data, size_t len,
                        uint64_t *out_added);
int cf_pipeline__drain(cf_repo *r);
int cf_pipeline__stop(cf_repo *r);
uint64_t cf_pipeline__added(cf_repo *r);
/* Read and verify a blob: plaintext into out (appended). */
int cf_repo__read_blob(cf_buf *out, cf_repo *r, const cf_id *id, uint8_t type);

/*
 * A read-ahead window over packs, shared by the threads of one restore. On remote storage
 * every request costs a round trip, and restore reads the blobs of a pack in about the order
 * they were written: reading the CF_PACK_WINDOW-aligned chunk of a pack that holds a blob
 * (stretched to the blob's end, clipped to the pack) serves the blobs that follow from
 * memory, one request per chunk instead of one per blob. Backup fills one pack per pipeline
 * worker at a time, so consecutive files interleave over a few packs and restore workers
 * read the same chunks: a chunk one thread is downloading is waited for by the others, not
 * downloaded again. Blobs are copied out and still authenticated one by one.
 */
#define CF_PACK_WINDOW ((size_t)4 << 20)
#define CF_PACK_WINDOW_SLOTS_MAX 64
#define CF_PACK_WINDOW_SIZES 16
typedef struct {
    bool valid;    /* data holds the chunk */
    bool loading;  /* a thread is downloading it */
    cf_id pack;    /* the pack this slot holds bytes of */
    uint64_t off;  /* where they start */
    uint64_t span; /* how many */
    uint64_t used; /* last use (tick), for replacement */
    uint8_t *data;
} cf_pack_window_slot;
typedef struct {
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* a slot finished loading */
    unsigned nslots;
    cf_pack_window_slot slot[CF_PACK_WINDOW_SLOTS_MAX];
    uint64_t tick;
    struct {
        cf_id pack;
        uint64_t size;
        bool known;
    } sizes[CF_PACK_WINDOW_SIZES]; /* recent packs' sizes (from stat), round robin */
    unsigned next_size;
} cf_pack_window;

/* A window holding up to nslots chunks (2..CF_PACK_WINDOW_SLOTS_MAX, clamped). */
void cf_pack_window_init(cf_pack_window *w, unsigned nslots);
void cf_pack_window_free(cf_pack_window *w);
/* cf_repo__read_blob through the window w (NULL: a plain read). */
int cf_repo__read_blob_window(cf_buf *out, cf_repo *r, const cf_id *id, uint8_t type,
                              cf_pack_window *w);
/* Write out partially filled packs, then an index file for the packs written since the last
 * flush. */
int cf_repo__flush(cf_repo *r);
/* Remove the index files this handle wrote, except keep (a name, may be NULL); adds the
 * number removed to *count. */
int cf_repo__remove_flushed_indexes(cf_repo *r, const char *keep, uint64_t *count);
/* During a long backup: write an index for the packs finished so far when enough have
 * accumulated, so an interrupted backup's data is reused by the next one. */
int cf_repo__maybe_checkpoint(cf_repo *r);
/* Index the packs stored since the last index file now. */
int cf_repo__checkpoint(cf_repo *r);
/* After taking a lock: bring the index up to date with storage (files another process added
 * are loaded; if any went away, the index is reloaded). Other processes may have changed the
 * repository between open and lock. */
int cf_repo__refresh_index(cf_repo *r);
/* Load all index files into r->index (damaged ones are warnings). */
int cf_repo__load_index(cf_repo *r);
/* Trees. */
int cf_repo__load_tree(cf_tree *out, cf_repo *r, const cf_id *id);
int cf_repo__save_tree(cf_repo *r, const cf_tree *t, cf_id *out_id, uint64_t *out_added);

/* Pack parsing, used by check: read the header of a pack's bytes. */
typedef struct {
    cf_id id;
    uint8_t type, comp;
    uint32_t offset, length, raw_len;
} cf_pack_entry;
int cf_pack__read_header(cf_pack_entry **out, size_t *out_count, const cf_repo *r,
                         const uint8_t *pack, size_t len, const char *name);
/* Length of a pack's prefix from its first CF_PACK_PREFIX bytes (28, or 120 with a key box). */
size_t cf_pack__prefix_len(const uint8_t *prefix);
/* Decrypt and decompress one blob found in a pack whose prefix (cf_pack__prefix_len bytes) is
 * prefix: appends plaintext to out. */
int cf_pack__open_blob(cf_buf *out, const cf_repo *r, const uint8_t *prefix,
                       const cf_pack_entry *e, const uint8_t *sealed, const char *name);
/* The data key generation a pack is sealed under (reads its prefix). */
int cf_repo__pack_generation(cf_repo *r, const cf_id *pack, uint32_t *out);
/* Replace the key slot in use by one for cred holding mk (keys.c). */
int cf_keys__replace_slot(cf_repo *r, const cf_master_key *mk, const cf_credential *cred,
                          char out_id[65]);
/* Pack name helpers: "data/xx/<hex>". */
void cf_pack__path(char out[80], const cf_id *id);

void cf_repo__warn(cf_repo *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cf_repo__refresh_lock(cf_repo *r);

/* Count what is sealed under gen (no locking: the caller holds a lock). */
int cf_keys__generation_use(cf_repo *r, uint32_t gen, cf_generation_use *out);
/* Retire gen from the slot in use (checks as cf_key_retire_generation; the caller holds the
 * exclusive lock). */
int cf_keys__retire_generation(cf_repo *r, const cf_credential *cred, uint32_t gen,
                               char out_id[65]);
/* Key slots. */
int cf_keys__create(cf_storage *st, const cf_master_key *mk, const cf_credential *cred,
                    cf_key_role role, char out_id[65]);
/* Open the first slot cred opens whose keys accept() approves (NULL: any). */
int cf_keys__open(cf_master_key *out, char out_slot[65], cf_key_role *out_role, cf_storage *st,
                  const cf_credential *cred, const char *url,
                  int (*accept)(const cf_master_key *mk, void *payload), void *payload);
/* The metadata cache of remote repositories (cache.c). */
bool cf_cache__get(const cf_repo *r, const char *dir, const char *name, uint8_t **data,
                   size_t *len);
void cf_cache__put(const cf_repo *r, const char *dir, const char *name, const uint8_t *data,
                   size_t len);
/* Forget cached tree packs the index no longer lists (after the index was loaded whole). */
void cf_cache__prune_packs(cf_repo *r);
/* Release the tree packs held in memory. */
void cf_repo__free_tree_packs(cf_repo *r);
/* True when the repository's storage is remote (not local, not mem). */
bool cf_repo__remote(const cf_repo *r);
void cf_cache__prune(const cf_repo *r, const char *dir,
                     bool (*exists)(const char *name, void *payload), void *payload);

/* Remember that an object named a generation this key does not hold (thread-safe). */
void cf_repo__note_unknown_generation(cf_repo *r, uint32_t gen);
/* CF_EPERM naming the operation unless the key in use is an admin key. */
int cf_repo__require_admin(const cf_repo *r, const char *what);

/* Config. */
int cf_config__write(cf_storage *st, const cf_config *c, const cf_master_key *mk);
int cf_config__read(cf_config *out, cf_storage *st, const cf_master_key *mk, const char *url);
int cf_config__read_unverified(cf_config *out, cf_buf *raw, cf_storage *st, const char *url);

#endif
