/*
 * keys.c - key slots: the random master key wrapped by a key derived from a password with
 * scrypt. Several slots may open one repository.
 */
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "repo/repo.h"

#define SLOT_AAD "coffer key slot v1"
#define SLOT_AAD_APPEND "coffer key slot v1 role=append"
#define SLOT_AAD_WRITE_ONLY "coffer key slot v1 role=write-only"

static const char *slot_aad(cf_key_role role)
{
    return role == CF_ROLE_APPEND       ? SLOT_AAD_APPEND
           : role == CF_ROLE_WRITE_ONLY ? SLOT_AAD_WRITE_ONLY
                                        : SLOT_AAD;
}

static const char *role_name(cf_key_role role)
{
    return role == CF_ROLE_APPEND ? "append" : role == CF_ROLE_WRITE_ONLY ? "write-only" : "admin";
}

static cf_key_role role_of(const char *name)
{
    if (name && strcmp(name, "append") == 0)
        return CF_ROLE_APPEND;
    if (name && strcmp(name, "write-only") == 0)
        return CF_ROLE_WRITE_ONLY;
    return CF_ROLE_ADMIN;
}

int cf_repo__require_admin(const cf_repo *r, const char *what)
{
    if (r->role == CF_ROLE_ADMIN)
        return 0;
    cf_error_set(CF_EPERM, 0, "%s needs an admin key: key slot %.8s is %s", what, r->slot_id,
                 r->role == CF_ROLE_APPEND ? "append-only" : role_name(r->role));
    cf_error_hint("open the repository with an admin key for this operation");
    return CF_EPERM;
}

cf_key_role cf_repo_role(const cf_repo *repo) { return repo->role; }
#define BUNDLE_MAGIC "CFKB"

int cf_master__generate(cf_master_key *mk)
{
    memset(mk, 0, sizeof(*mk));
    int rc = cf_random_bytes(mk->mac, sizeof(mk->mac));
    if (rc == 0)
        rc = cf_random_bytes(mk->data, sizeof(mk->data));
    mk->gen = 0;
    mk->ngens = 1;
    mk->gen_ids[0] = 0;
    memcpy(mk->gen_keys[0], mk->data, CF_KEY_LEN);
    if (rc == 0)
        rc = cf_random_bytes(mk->index, sizeof(mk->index));
    if (rc == 0)
        rc = cf_x25519_keypair(mk->priv, mk->pub);
    mk->has_index = mk->has_priv = mk->has_pub = rc == 0;
    return rc;
}

void cf_master__write_only(cf_master_key *out, const cf_master_key *mk)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->mac, mk->mac, CF_KEY_LEN);
    out->gen = mk->gen;
    out->has_index = mk->has_index;
    memcpy(out->index, mk->index, CF_KEY_LEN);
    out->has_pub = mk->has_pub;
    memcpy(out->pub, mk->pub, 32);
}

const uint8_t *cf_master__data_key(const cf_master_key *mk, uint32_t gen)
{
    for (uint32_t i = 0; i < mk->ngens; i++)
        if (mk->gen_ids[i] == gen)
            return mk->gen_keys[i];
    return NULL;
}

int cf_master__encode(cf_buf *out, const cf_master_key *mk)
{
    bool v2 = mk->has_index || mk->has_priv || mk->has_pub;
    cf_buf_append(out, BUNDLE_MAGIC, 4);
    cf_buf_put_u8(out, v2 ? 2 : 1);
    cf_buf_append(out, "\0\0\0", 3);
    cf_buf_append(out, mk->mac, CF_KEY_LEN);
    cf_buf_put_u32(out, mk->gen);
    cf_buf_put_u32(out, mk->ngens);
    for (uint32_t i = 0; i < mk->ngens; i++) {
        cf_buf_put_u32(out, mk->gen_ids[i]);
        cf_buf_append(out, mk->gen_keys[i], CF_KEY_LEN);
    }
    if (v2) {
        cf_buf_put_u8(out, (uint8_t)(mk->has_index | mk->has_priv << 1 | mk->has_pub << 2));
        if (mk->has_index)
            cf_buf_append(out, mk->index, CF_KEY_LEN);
        if (mk->has_priv)
            cf_buf_append(out, mk->priv, 32);
        if (mk->has_pub)
            cf_buf_append(out, mk->pub, 32);
    }
    return cf_buf_reserve(out, 1);
}

int cf_master__decode(cf_master_key *mk, const uint8_t *data, size_t len)
{
    cf_rd rd;
    cf_rd_init(&rd, data, len);
    memset(mk, 0, sizeof(*mk));
    const uint8_t *magic = cf_rd_bytes(&rd, 4);
    uint8_t ver = cf_rd_u8(&rd);
    cf_rd_bytes(&rd, 3);
    const uint8_t *mac = cf_rd_bytes(&rd, CF_KEY_LEN);
    mk->gen = cf_rd_u32(&rd);
    uint32_t n = cf_rd_u32(&rd);
    if (!magic || memcmp(magic, BUNDLE_MAGIC, 4) != 0 || (ver != 1 && ver != 2) || !mac ||
        n > CF_MAX_GENERATIONS || cf_rd_left(&rd) < (size_t)n * (4 + CF_KEY_LEN))
        return cf_error_set(CF_ECORRUPT, 0, "key bundle is damaged");
    memcpy(mk->mac, mac, CF_KEY_LEN);
    mk->ngens = n;
    for (uint32_t i = 0; i < n; i++) {
        mk->gen_ids[i] = cf_rd_u32(&rd);
        memcpy(mk->gen_keys[i], cf_rd_bytes(&rd, CF_KEY_LEN), CF_KEY_LEN);
    }
    if (ver == 2) {
        uint8_t flags = cf_rd_u8(&rd);
        const uint8_t *p;
        if ((flags & 1) && (p = cf_rd_bytes(&rd, CF_KEY_LEN))) {
            memcpy(mk->index, p, CF_KEY_LEN);
            mk->has_index = true;
        }
        if ((flags & 2) && (p = cf_rd_bytes(&rd, 32))) {
            memcpy(mk->priv, p, 32);
            mk->has_priv = true;
        }
        if ((flags & 4) && (p = cf_rd_bytes(&rd, 32))) {
            memcpy(mk->pub, p, 32);
            mk->has_pub = true;
        }
        if ((flags & ~7u) || rd.err) {
            cf_wipe(mk, sizeof(*mk));
            return cf_error_set(CF_ECORRUPT, 0, "key bundle is damaged");
        }
    }
    if (cf_rd_left(&rd) != 0 || (n == 0 && !mk->has_pub)) {
        cf_wipe(mk, sizeof(*mk));
        return cf_error_set(CF_ECORRUPT, 0, "key bundle is damaged");
    }
    if (n == 0)
        return 0; /* write-only: no data key */
    const uint8_t *cur = cf_master__data_key(mk, mk->gen);
    if (!cur) {
        cf_wipe(mk, sizeof(*mk));
        return cf_error_set(CF_ECORRUPT, 0, "key bundle is damaged: no key for its current generation");
    }
    memcpy(mk->data, cur, CF_KEY_LEN);
    return 0;
}

static void host_user(char host[256], char user[64])
{
    if (gethostname(host, 256) != 0)
        snprintf(host, 256, "unknown");
    host[255] = '\0';
    struct passwd *pw = getpwuid(getuid());
    snprintf(user, 64, "%s", pw ? pw->pw_name : "unknown");
}

/* The key-encryption key of a slot from a credential. */
static int slot_kek(uint8_t kek[CF_KEY_LEN], const cf_credential *cred, const uint8_t *salt,
                    size_t salt_len, uint64_t n, uint32_t r, uint32_t p)
{
    if (cred->key) {
        cf_kdf(kek, cred->key, "coffer raw key slot", salt, salt_len);
        return 0;
    }
    return cf_scrypt(kek, cred->password, strlen(cred->password), salt, salt_len, n, r, p);
}

int cf_keys__create(cf_storage *st, const cf_master_key *mk, const cf_credential *cred,
                    cf_key_role role, char out_id[65])
{
    int rc = 0;
    uint8_t salt[32], kek[CF_KEY_LEN];
    uint8_t *sealed = NULL;
    cf_buf bundle;
    uint8_t idb[32];
    char *salt64 = NULL, *data64 = NULL, *text = NULL, name[80];
    json_t *doc = NULL, *gens = NULL;
    char host[256], user[64], when[40];
    uint32_t log_n = cred->kdf_log_n ? cred->kdf_log_n : CF_KDF_LOG_N_DEFAULT;

    if (!cred->key && (!cred->password || !*cred->password))
        return cf_error_set(CF_EINVAL, 0, "an empty password is not allowed");
    if (!cred->key && (log_n < 10 || log_n > 24))
        return cf_error_set(CF_EINVAL, 0, "scrypt cost 2^%u out of range (2^10..2^24)", log_n);
    cf_buf_init(&bundle, 1 << 20);
    if ((rc = cf_master__encode(&bundle, mk)))
        goto out;
    size_t sealed_len = bundle.len + CF_SEAL_OVERHEAD;
    if (!(sealed = cf_malloc(sealed_len))) {
        rc = CF_ENOMEM;
        goto out;
    }
    if ((rc = cf_random_bytes(salt, sizeof(salt))) || (rc = cf_random_bytes(idb, sizeof(idb))))
        goto out;
    if ((rc = slot_kek(kek, cred, salt, sizeof(salt), (uint64_t)1 << log_n, 8, 1)))
        goto out;
    rc = cf_aead_seal(sealed, kek, slot_aad(role), strlen(slot_aad(role)), bundle.data, bundle.len);
    if (rc)
        goto out;
    salt64 = cf_base64_encode(salt, sizeof(salt));
    data64 = cf_base64_encode(sealed, sealed_len);
    gens = json_array();
    if (!salt64 || !data64 || !gens) {
        rc = CF_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < mk->ngens; i++)
        json_array_append_new(gens, json_integer(mk->gen_ids[i]));
    host_user(host, user);
    cf_time_format(when, cf_now_ns());
    const char *rname = role_name(role);
    if (cred->key)
        doc = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:I, s:s}", "version", 1, "kdf",
                        "raw", "salt", salt64, "created", when, "host", host, "user", user, "data",
                        data64, "generations", gens, "current", (json_int_t)mk->gen, "role", rname);
    else
        doc = json_pack("{s:i, s:s, s:I, s:i, s:i, s:s, s:s, s:s, s:s, s:s, s:O, s:I, s:s}",
                        "version", 1, "kdf", "scrypt", "n", (json_int_t)((uint64_t)1 << log_n), "r",
                        8, "p", 1, "salt", salt64, "created", when, "host", host, "user", user,
                        "data", data64, "generations", gens, "current", (json_int_t)mk->gen, "role",
                        rname);
    if (!doc || !(text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS))) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to encode key slot");
        goto out;
    }
    cf_hex_encode(out_id, idb, sizeof(idb));
    snprintf(name, sizeof(name), "keys/%s", out_id);
    rc = cf_storage_put(st, name, text, strlen(text), CF_PUT_EXCLUSIVE);
out:
    cf_wipe(kek, sizeof(kek));
    if (bundle.data)
        cf_wipe(bundle.data, bundle.len);
    cf_buf_free(&bundle);
    free(sealed);
    free(salt64);
    free(data64);
    free(text);
    json_decref(doc);
    json_decref(gens);
    return rc;
}

typedef struct {
    char **names;
    size_t n, cap;
} name_list;

static int collect_name(const char *name, uint64_t size, void *payload)
{
    (void)size;
    name_list *l = payload;
    if (cf_array_grow(&l->names, &l->cap, l->n, sizeof(*l->names)))
        return CF_ENOMEM;
    if (!(l->names[l->n] = cf_strdup(name)))
        return CF_ENOMEM;
    l->n++;
    return 0;
}

static void name_list_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

/* Try one slot: 0 on success, CF_EAUTH when the credential does not open it (or is of the
 * other kind), other errors when the slot itself is unreadable. */
static int try_slot(cf_master_key *out, cf_key_role *out_role, const uint8_t *text, size_t len,
                    const cf_credential *cred, const char *name)
{
    int rc = 0;
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)text, len, 0, &jerr);
    const char *kdf = NULL, *salt64 = NULL, *data64 = NULL;
    json_int_t n = 0, r = 0, p = 0, version = 0;
    cf_buf salt, data;
    uint8_t kek[CF_KEY_LEN];
    uint8_t *plain = NULL;
    cf_buf_init(&salt, 4096);
    cf_buf_init(&data, 1 << 20);
    if (!doc || json_unpack(doc, "{s:I, s:s, s:s, s:s}", "version", &version, "kdf", &kdf, "salt",
                            &salt64, "data", &data64)) {
        rc = cf_error_set(CF_ECORRUPT, 0, "key slot '%s' is damaged: not a valid key document", name);
        goto out;
    }
    if (version != 1 || (strcmp(kdf, "scrypt") != 0 && strcmp(kdf, "raw") != 0)) {
        rc = cf_error_set(CF_EUNSUPPORTED, 0, "key slot '%s' uses an unsupported format (%s v%lld)",
                          name, kdf, (long long)version);
        goto out;
    }
    bool raw = strcmp(kdf, "raw") == 0;
    if (raw != (cred->key != NULL)) {
        rc = CF_EAUTH; /* a password cannot open a key slot and the other way round */
        goto out;
    }
    if (!raw) {
        if (json_unpack(doc, "{s:I, s:I, s:I}", "n", &n, "r", &r, "p", &p) || n < 2 ||
            n > (1 << 24) || (n & (n - 1)) || r < 1 || r > 32 || p < 1 || p > 16) {
            rc = cf_error_set(CF_ECORRUPT, 0, "key slot '%s' has out-of-range scrypt parameters", name);
            goto out;
        }
    }
    if (cf_base64_decode(&salt, salt64) || cf_base64_decode(&data, data64) || salt.len < 16 ||
        data.len < CF_SEAL_OVERHEAD + 48 || data.len > 65536) {
        rc = cf_error_set(CF_ECORRUPT, 0, "key slot '%s' is damaged: bad salt or key data", name);
        goto out;
    }
    if ((rc = slot_kek(kek, cred, salt.data, salt.len, (uint64_t)n, (uint32_t)r, (uint32_t)p)))
        goto out;
    plain = cf_malloc(data.len);
    if (!plain) {
        rc = CF_ENOMEM;
        goto out;
    }
    /* the role is authenticated: the slot only opens with the role it was sealed with */
    const char *role = NULL;
    json_unpack(doc, "{s?s}", "role", &role);
    cf_key_role rl = role_of(role);
    if (role && strcmp(role, "append") != 0 && strcmp(role, "admin") != 0 &&
        strcmp(role, "write-only") != 0) {
        rc = cf_error_set(CF_EUNSUPPORTED, 0, "key slot '%s' has an unknown role '%s'", name, role);
        goto out;
    }
    rc = cf_aead_open(plain, kek, slot_aad(rl), strlen(slot_aad(rl)), data.data, data.len);
    if (rc == 0)
        *out_role = rl;
    if (rc == 0) {
        rc = cf_master__decode(out, plain, data.len - CF_SEAL_OVERHEAD);
        if (rc)
            rc = cf_error_set(CF_ECORRUPT, 0, "key slot '%s' is damaged: bad key bundle", name);
    }
    cf_wipe(plain, data.len);
out:
    free(plain);
    cf_wipe(kek, sizeof(kek));
    cf_buf_free(&salt);
    cf_buf_free(&data);
    json_decref(doc);
    return rc;
}

int cf_keys__open(cf_master_key *out, char out_slot[65], cf_key_role *out_role, cf_storage *st,
                  const cf_credential *cred, const char *url,
                  int (*accept)(const cf_master_key *mk, void *payload), void *payload)
{
    name_list l = {0};
    int rc = cf_storage_list(st, "keys/", collect_name, &l);
    size_t damaged = 0, rejected = 0;
    char first_damage[512] = "";
    if (rc)
        goto out;
    if (l.n == 0) {
        rc = cf_error_set(CF_ECORRUPT, 0, "repository '%s' has no key slots", url);
        goto out;
    }
    rc = CF_EAUTH;
    for (size_t i = 0; i < l.n; i++) {
        uint8_t *text = NULL;
        size_t len = 0;
        int r2 = cf_storage_get(st, l.names[i], 0, 0, &text, &len);
        if (r2 == 0)
            r2 = try_slot(out, out_role, text, len, cred, l.names[i]);
        free(text);
        if (r2 == 0 && accept && accept(out, payload) != 0) {
            /* opens with this credential but does not belong to this repository's config
             * (an interrupted init left it): try the others */
            cf_wipe(out, sizeof(*out));
            rejected++;
            if (!first_damage[0])
                snprintf(first_damage, sizeof(first_damage), "%s", cf_error_last()->message);
            continue;
        }
        if (r2 == 0) {
            rc = 0;
            if (out_slot) {
                const char *base = strrchr(l.names[i], '/');
                snprintf(out_slot, 65, "%s", base ? base + 1 : l.names[i]);
            }
            break;
        }
        if (r2 == CF_ENOMEM || r2 == CF_ERETRYABLE || r2 == CF_EIO) {
            rc = r2;
            goto out;
        }
        if (r2 != CF_EAUTH) {
            damaged++;
            if (!first_damage[0])
                snprintf(first_damage, sizeof(first_damage), "%s", cf_error_last()->message);
        }
    }
    if (rc == CF_EAUTH) {
        if (damaged == l.n || rejected) {
            rc = cf_error_set(CF_ECORRUPT, 0, "no key slot of '%s' is usable: %s", url, first_damage);
        } else {
            rc = cf_error_set(CF_EAUTH, 0, "wrong %s: no key slot of repository '%s' opens with it",
                              cred->key ? "key" : "password", url);
            cf_error_hint(cred->key ? "check COFFER_KEY, --key-file or --key-command"
                                    : "check COFFER_PASSWORD, --password-file or --password-command");
        }
    }
out:
    name_list_free(&l);
    return rc;
}

/* ------------------------------------------------------------------ key management */

static int slot_info(cf_key_info *k, cf_storage *st, const char *name)
{
    uint8_t *text = NULL;
    size_t len = 0;
    memset(k, 0, sizeof(*k));
    const char *base = strrchr(name, '/');
    snprintf(k->id, sizeof(k->id), "%s", base ? base + 1 : name);
    int rc = cf_storage_get(st, name, 0, 0, &text, &len);
    if (rc)
        return rc;
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)text, len, 0, &jerr);
    free(text);
    const char *kdf = "?", *created = "", *host = "", *user = "";
    if (!doc || json_unpack(doc, "{s:s, s?s, s?s, s?s}", "kdf", &kdf, "created", &created, "host",
                            &host, "user", &user)) {
        snprintf(k->kdf, sizeof(k->kdf), "damaged");
        json_decref(doc);
        return 0;
    }
    snprintf(k->kdf, sizeof(k->kdf), "%s", strcmp(kdf, "raw") == 0 ? "key" : "password");
    const char *role = NULL;
    json_unpack(doc, "{s?s}", "role", &role);
    k->role = role_of(role);
    snprintf(k->created, sizeof(k->created), "%s", created);
    snprintf(k->host, sizeof(k->host), "%s", host);
    snprintf(k->user, sizeof(k->user), "%s", user);
    json_t *gens = json_object_get(doc, "generations");
    size_t i;
    json_t *v;
    k->ngenerations = 0;
    bool bad = false;
    json_array_foreach(gens, i, v)
    {
        json_int_t g = json_is_integer(v) ? json_integer_value(v) : -1;
        if (g < 0 || g > (json_int_t)UINT32_MAX)
            bad = true; /* the document is not authenticated: no number is taken on trust */
        else if (k->ngenerations < CF_KEY_INFO_MAX_GENS)
            k->generations[k->ngenerations++] = (uint32_t)g;
    }
    json_t *cur = json_object_get(doc, "current");
    json_int_t c = json_is_integer(cur) ? json_integer_value(cur) : cur ? -1 : 0;
    if (c < 0 || c > (json_int_t)UINT32_MAX)
        bad = true;
    else
        k->current_generation = (uint32_t)c;
    if (bad) {
        snprintf(k->kdf, sizeof(k->kdf), "damaged");
        k->ngenerations = 0;
        k->current_generation = 0;
    }
    json_decref(doc);
    return 0;
}

int cf_key_list(cf_key_info **out, size_t *out_count, cf_repo *r)
{
    name_list l = {0};
    *out = NULL;
    *out_count = 0;
    int rc = cf_storage_list(r->st, "keys/", collect_name, &l);
    cf_key_info *v = NULL;
    if (rc == 0 && !(v = cf_calloc(l.n ? l.n : 1, sizeof(*v))))
        rc = CF_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        int r2 = slot_info(&v[n], r->st, l.names[i]);
        if (r2 == CF_ENOTFOUND)
            continue;
        if (r2) {
            rc = r2;
            break;
        }
        v[n].current = strcmp(v[n].id, r->slot_id) == 0;
        n++;
    }
    name_list_free(&l);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *out_count = n;
    return 0;
}

int cf_key_add(cf_repo *r, const cf_credential *cred, cf_key_role role, char out_id[65])
{
    if (role != CF_ROLE_APPEND && cf_repo__require_admin(r, "adding an admin or write-only key"))
        return CF_EPERM;
    if (role == CF_ROLE_WRITE_ONLY) {
        if (!r->mk.has_pub || !r->mk.has_index) {
            cf_error_set(CF_EUNSUPPORTED, 0, "this repository's keys predate write-only keys");
            cf_error_hint("create a new repository and copy the snapshots to it to use them");
            return CF_EUNSUPPORTED;
        }
        cf_master_key wo;
        cf_master__write_only(&wo, &r->mk);
        int rc = cf_keys__create(r->st, &wo, cred, role, out_id);
        cf_wipe(&wo, sizeof(wo));
        return rc;
    }
    if (!cf_master__can_read(&r->mk))
        return cf_error_set(CF_EPERM, 0, "a write-only key cannot add keys that read");
    return cf_keys__create(r->st, &r->mk, cred, role, out_id);
}

/* Resolve an id prefix to a slot name. */
static int find_slot(char out[80], cf_repo *r, const char *prefix)
{
    name_list l = {0};
    int rc = cf_storage_list(r->st, "keys/", collect_name, &l);
    size_t hits = 0, plen = strlen(prefix);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        const char *base = strrchr(l.names[i], '/');
        base = base ? base + 1 : l.names[i];
        if (plen >= 4 && strncmp(base, prefix, plen) == 0) {
            snprintf(out, 80, "%s", l.names[i]);
            hits++;
        }
    }
    name_list_free(&l);
    if (rc)
        return rc;
    if (hits == 0)
        return cf_error_set(CF_ENOTFOUND, 0, "no key slot '%s'", prefix);
    if (hits > 1)
        return cf_error_set(CF_EINVAL, 0, "key slot id '%s' is ambiguous", prefix);
    return 0;
}

int cf_key_remove(cf_repo *r, const char *id)
{
    char name[80];
    int rc = cf_repo__require_admin(r, "removing a key");
    if (rc)
        return rc;
    rc = find_slot(name, r, id);
    if (rc)
        return rc;
    const char *base = strrchr(name, '/') + 1;
    if (strcmp(base, r->slot_id) == 0) {
        cf_error_set(CF_EINVAL, 0, "refusing to remove key slot %.8s: it is the one in use", base);
        cf_error_hint("open the repository with another key to remove this one, or use 'key passwd'");
        return CF_EINVAL;
    }
    if ((rc = cf_repo_lock(r, CF_LOCK_EXCLUSIVE)))
        return rc;
    rc = cf_storage_remove(r->st, name);
    cf_repo_unlock(r);
    return rc;
}

/* Write a new slot for cred holding mk, then remove the slot in use. The caller holds the
 * exclusive lock. */
int cf_keys__replace_slot(cf_repo *r, const cf_master_key *mk, const cf_credential *cred,
                          char out_id[65])
{
    int rc = 0;
    char old[80];
    snprintf(old, sizeof(old), "keys/%s", r->slot_id);
    if ((rc = cf_keys__create(r->st, mk, cred, r->role, out_id)) == 0) {
        /* the new slot is durable before the old one goes: a crash leaves both */
        rc = cf_storage_remove(r->st, old);
        if (rc == CF_ENOTFOUND)
            rc = 0;
        if (rc == 0) {
            memcpy(r->slot_id, out_id, 65);
            r->mk = *mk;
        }
    }
    return rc;
}

static int replace_slot(cf_repo *r, const cf_master_key *mk, const cf_credential *cred,
                        char out_id[65])
{
    int rc = cf_repo_lock(r, CF_LOCK_EXCLUSIVE);
    if (rc)
        return rc;
    rc = cf_keys__replace_slot(r, mk, cred, out_id);
    cf_repo_unlock(r);
    return rc;
}

int cf_key_passwd(cf_repo *r, const cf_credential *cred, char out_id[65])
{
    return replace_slot(r, &r->mk, cred, out_id);
}

int cf_key_rotate(cf_repo *r, const cf_credential *cred, char out_id[65], uint32_t *out_gen)
{
    if (cf_repo__require_admin(r, "key rotation"))
        return CF_EPERM;
    cf_master_key mk = r->mk;
    uint32_t next = 0;
    for (uint32_t i = 0; i < mk.ngens; i++)
        if (mk.gen_ids[i] >= next)
            next = mk.gen_ids[i] + 1;
    if (mk.ngens >= CF_MAX_GENERATIONS) {
        cf_wipe(&mk, sizeof(mk));
        cf_error_set(CF_EUNSUPPORTED, 0, "this key holds %u data key generations, the most allowed",
                     mk.ngens);
        cf_error_hint("run 'coffer rewrite --reencrypt' to retire old generations first");
        return CF_EUNSUPPORTED;
    }
    int rc = cf_random_bytes(mk.gen_keys[mk.ngens], CF_KEY_LEN);
    if (rc == 0) {
        mk.gen_ids[mk.ngens] = next;
        mk.ngens++;
        mk.gen = next;
        memcpy(mk.data, mk.gen_keys[mk.ngens - 1], CF_KEY_LEN);
        rc = replace_slot(r, &mk, cred, out_id);
    }
    if (rc == 0 && out_gen)
        *out_gen = next;
    cf_wipe(&mk, sizeof(mk));
    return rc;
}

/* ------------------------------------------------------------------ generations in use */

typedef struct {
    cf_repo *r;
    uint32_t gen;
    uint64_t *count;
    int rc;
} gen_scan;

/* Count sealed objects (index, snapshots, archive) whose header names generation gen: the
 * generation is bytes 12..15 of the 32-byte object header. */
static int scan_object_gen(const char *name, uint64_t size, void *payload)
{
    gen_scan *c = payload;
    if (size < 16)
        return 0;
    uint8_t *hdr = NULL;
    size_t n = 0;
    int rc = cf_storage_get(c->r->st, name, 0, 16, &hdr, &n);
    if (rc == CF_ENOTFOUND || rc == CF_ECORRUPT) {
        free(hdr);
        return 0; /* gone meanwhile, or damaged: check's business */
    }
    if (rc == 0 && n == 16 && memcmp(hdr, "CFOB", 4) == 0 && cf_le32_get(hdr + 12) == c->gen)
        (*c->count)++;
    free(hdr);
    return rc;
}

int cf_keys__generation_use(cf_repo *r, uint32_t gen, cf_generation_use *out)
{
    memset(out, 0, sizeof(*out));
    int rc = 0;
    for (size_t i = 0; i < r->index.npacks && rc == 0; i++) {
        uint32_t g = 0;
        rc = cf_repo__pack_generation(r, &r->index.packs[i], &g);
        if (rc == CF_ENOTFOUND || rc == CF_ECORRUPT) {
            rc = 0;
            continue;
        }
        if (rc == 0 && g == gen && cf_index__has_pack(&r->index, &r->index.packs[i]))
            out->packs++;
    }
    gen_scan c = {r, gen, &out->snapshots, 0};
    if (rc == 0)
        rc = cf_storage_list(r->st, "snapshots/", scan_object_gen, &c);
    c.count = &out->index_files;
    if (rc == 0)
        rc = cf_storage_list(r->st, "index/", scan_object_gen, &c);
    c.count = &out->archive_objects;
    if (rc == 0)
        rc = cf_storage_list(r->st, "archive/", scan_object_gen, &c);
    return rc;
}

int cf_key_generation_use(cf_repo *r, uint32_t gen, cf_generation_use *out)
{
    int rc = cf_repo_lock(r, CF_LOCK_READ);
    if (rc)
        return rc;
    rc = cf_keys__generation_use(r, gen, out);
    cf_repo_unlock(r);
    return rc;
}

/* Another admin or append-only slot whose current generation is gen still seals new data
 * under it: name it in out (first 8 hex digits). Write-only slots seal to the public key. */
static int slot_writing_under(char out[9], cf_repo *r, uint32_t gen)
{
    cf_key_info *v = NULL;
    size_t n = 0;
    out[0] = '\0';
    int rc = cf_key_list(&v, &n, r);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (v[i].current || v[i].role == CF_ROLE_WRITE_ONLY || strcmp(v[i].kdf, "damaged") == 0)
            continue;
        if (v[i].current_generation == gen) {
            snprintf(out, 9, "%.8s", v[i].id);
            break;
        }
    }
    free(v);
    return rc;
}

int cf_keys__retire_generation(cf_repo *r, const cf_credential *cred, uint32_t gen, char out_id[65])
{
    if (!cf_master__data_key(&r->mk, gen))
        return cf_error_set(CF_ENOTFOUND, 0, "the key in use holds no data key generation %u", gen);
    if (gen == r->mk.gen) {
        cf_error_set(CF_EINVAL, 0, "refusing to retire data key generation %u: it is the current "
                     "one, which seals everything written now", gen);
        cf_error_hint("run 'coffer key rotate' first to start a new generation");
        return CF_EINVAL;
    }
    cf_generation_use u;
    int rc = cf_keys__generation_use(r, gen, &u);
    if (rc)
        return rc;
    if (u.packs || u.snapshots || u.index_files || u.archive_objects) {
        cf_error_set(CF_EINVAL, 0, "refusing to retire data key generation %u: still in use by "
                     "%llu packs, %llu snapshots, %llu index files and %llu archive objects",
                     gen, (unsigned long long)u.packs, (unsigned long long)u.snapshots,
                     (unsigned long long)u.index_files, (unsigned long long)u.archive_objects);
        cf_error_hint("run 'coffer rewrite --reencrypt --generation %u' first", gen);
        return CF_EINVAL;
    }
    char other[9];
    if ((rc = slot_writing_under(other, r, gen)))
        return rc;
    if (other[0]) {
        cf_error_set(CF_EINVAL, 0, "refusing to retire data key generation %u: key slot %s still "
                     "seals new data under it", gen, other);
        cf_error_hint("remove that key slot first ('coffer key remove %s')", other);
        return CF_EINVAL;
    }
    cf_master_key mk = r->mk;
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->mk.ngens; i++) {
        if (r->mk.gen_ids[i] == gen)
            continue;
        mk.gen_ids[k] = r->mk.gen_ids[i];
        memcpy(mk.gen_keys[k], r->mk.gen_keys[i], CF_KEY_LEN);
        k++;
    }
    for (uint32_t i = k; i < CF_MAX_GENERATIONS; i++) {
        mk.gen_ids[i] = 0;
        cf_wipe(mk.gen_keys[i], CF_KEY_LEN);
    }
    mk.ngens = k;
    rc = cf_keys__replace_slot(r, &mk, cred, out_id);
    cf_wipe(&mk, sizeof(mk));
    return rc;
}

int cf_key_retire_generation(cf_repo *r, const cf_credential *cred, uint32_t gen, char out_id[65])
{
    if (cf_repo__require_admin(r, "retiring a key generation"))
        return CF_EPERM;
    int rc = cf_repo_lock(r, CF_LOCK_EXCLUSIVE); /* no writer runs while usage is counted */
    if (rc)
        return rc;
    rc = cf_keys__retire_generation(r, cred, gen, out_id);
    cf_repo_unlock(r);
    return rc;
}

int cf_key_generation_usage(cf_repo *r, uint32_t *gens, uint64_t *counts, size_t max, size_t *n)
{
    *n = 0;
    int rc = cf_repo_lock(r, CF_LOCK_READ); /* also brings the index up to date */
    if (rc)
        return rc;
    for (size_t i = 0; i < r->index.npacks && rc == 0; i++) {
        uint32_t gen = 0;
        rc = cf_repo__pack_generation(r, &r->index.packs[i], &gen);
        if (rc == CF_ENOTFOUND || rc == CF_ECORRUPT) {
            rc = 0; /* missing or damaged packs are check's business */
            continue;
        }
        if (rc)
            break;
        size_t k = 0;
        while (k < *n && gens[k] != gen)
            k++;
        if (k == *n) {
            if (*n == max)
                continue;
            gens[k] = gen;
            counts[k] = 0;
            (*n)++;
        }
        counts[k]++;
    }
    cf_repo_unlock(r);
    return rc;
}
