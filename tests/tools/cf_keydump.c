/*
 * cf_keydump.c - test tool: print, in hex, every key that opening a local repository and
 * working with it puts in a coffer process's memory, so that tests/e2e/test_coredump.sh can
 * search a core dump for them. Never built into coffer itself.
 *
 * Usage: cf_keydump DIR     (credential: COFFER_PASSWORD or COFFER_KEY, 64 hex digits)
 * Output lines "KIND NAME HEX": the key bundle (mac, data keys, index key, X25519 private
 * key), the config and chunker keys, each key slot's key-encryption key for the credential
 * given, and, derived as docs/FORMAT.md says, the key of every pack and sealed object in DIR.
 */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "repo/repo.h"

static void put(const char *kind, const char *name, const uint8_t *key, size_t len)
{
    char hex[129];
    cf_hex_encode(hex, key, len);
    printf("%s %s %s\n", kind, name, hex);
}

/* First n bytes of a file; false when shorter. */
static bool head(const char *path, uint8_t *out, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    size_t got = fread(out, 1, n, f);
    fclose(f);
    return got == n;
}

static void packs(const cf_master_key *mk, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/data", dir);
    DIR *top = opendir(path);
    struct dirent *d;
    while (top && (d = readdir(top))) {
        if (d->d_name[0] == '.')
            continue;
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/data/%.2s", dir, d->d_name);
        DIR *in = opendir(sub);
        struct dirent *e;
        while (in && (e = readdir(in))) {
            uint8_t pre[CF_PACK_PREFIX], key[CF_KEY_LEN];
            char file[8192];
            snprintf(file, sizeof(file), "%s/%s", sub, e->d_name);
            if (e->d_name[0] == '.' || !head(file, pre, sizeof(pre)))
                continue;
            const uint8_t *dk = cf_master__data_key(mk, cf_le32_get(pre + 8));
            if (!dk)
                continue; /* written by a write-only key: a random key in a box */
            cf_kdf(key, dk, "coffer pack key", pre + 12, 16);
            put("pack", e->d_name, key, sizeof(key));
        }
        if (in)
            closedir(in);
    }
    if (top)
        closedir(top);
}

static void objects(const cf_master_key *mk, const char *dir, const char *kind)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, kind);
    DIR *in = opendir(path);
    struct dirent *e;
    while (in && (e = readdir(in))) {
        uint8_t hdr[32], key[CF_KEY_LEN];
        char file[8192];
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        if (e->d_name[0] == '.' || !head(file, hdr, sizeof(hdr)))
            continue;
        uint32_t gen = cf_le32_get(hdr + 12);
        const uint8_t *k = gen == CF_GEN_INDEX ? (mk->has_index ? mk->index : NULL)
                                               : cf_master__data_key(mk, gen);
        if (!k)
            continue;
        cf_kdf(key, k, "coffer object key", hdr + 16, 16);
        put("object", e->d_name, key, sizeof(key));
    }
    if (in)
        closedir(in);
}

static void slot_keks(const char *dir, const char *password, const uint8_t *raw)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/keys", dir);
    DIR *in = opendir(path);
    struct dirent *e;
    while (in && (e = readdir(in))) {
        char file[8192];
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        json_error_t err;
        json_t *doc = e->d_name[0] == '.' ? NULL : json_load_file(file, 0, &err);
        const char *kdf = NULL, *salt64 = NULL;
        json_int_t n = 0, r = 0, p = 0;
        cf_buf salt;
        cf_buf_init(&salt, 4096);
        if (doc && json_unpack(doc, "{s:s, s:s, s?I, s?I, s?I}", "kdf", &kdf, "salt", &salt64, "n",
                               &n, "r", &r, "p", &p) == 0 &&
            cf_base64_decode(&salt, salt64) == 0) {
            uint8_t kek[CF_KEY_LEN];
            if (strcmp(kdf, "raw") == 0 && raw) {
                cf_kdf(kek, raw, "coffer raw key slot", salt.data, salt.len);
                put("kek", e->d_name, kek, sizeof(kek));
            } else if (strcmp(kdf, "scrypt") == 0 && password &&
                       cf_scrypt(kek, password, strlen(password), salt.data, salt.len,
                                 (uint64_t)n, (uint32_t)r, (uint32_t)p) == 0) {
                put("kek", e->d_name, kek, sizeof(kek));
            }
        }
        cf_buf_free(&salt);
        json_decref(doc);
    }
    if (in)
        closedir(in);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: cf_keydump DIR (COFFER_PASSWORD or COFFER_KEY set)\n");
        return 2;
    }
    const char *pw = getenv("COFFER_PASSWORD"), *hex = getenv("COFFER_KEY");
    uint8_t raw[32];
    cf_credential cred = {pw, NULL, 0};
    if (hex) {
        if (strlen(hex) != 64 || cf_hex_decode(raw, 32, hex) != 0) {
            fprintf(stderr, "cf_keydump: COFFER_KEY is not 64 hex digits\n");
            return 2;
        }
        cred.password = NULL;
        cred.key = raw;
    }
    cf_repo *r = NULL;
    int rc = cf_repo_open_cred(&r, argv[1], &cred);
    if (rc) {
        fprintf(stderr, "cf_keydump: %s\n", cf_error_last()->message);
        return 1;
    }
    const cf_master_key *mk = &r->mk;
    char name[16];
    uint8_t k[CF_KEY_LEN];
    put("bundle", "mac", mk->mac, CF_KEY_LEN);
    for (uint32_t i = 0; i < mk->ngens; i++) {
        snprintf(name, sizeof(name), "data%u", mk->gen_ids[i]);
        put("bundle", name, mk->gen_keys[i], CF_KEY_LEN);
    }
    if (mk->has_index)
        put("bundle", "index", mk->index, CF_KEY_LEN);
    if (mk->has_priv)
        put("bundle", "x25519-private", mk->priv, 32);
    cf_kdf(k, mk->mac, "coffer config", NULL, 0);
    put("derived", "config", k, sizeof(k));
    cf_kdf(k, mk->mac, "coffer chunker", NULL, 0);
    put("derived", "chunker", k, sizeof(k));
    slot_keks(argv[1], hex ? NULL : pw, hex ? raw : NULL);
    packs(mk, argv[1]);
    objects(mk, argv[1], "snapshots");
    objects(mk, argv[1], "index");
    cf_repo_close(r);
    return 0;
}
