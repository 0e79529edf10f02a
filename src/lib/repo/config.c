/*
 * config.c - the repository's config object: format version, id, chunker parameters, pack
 * size and compression. Plaintext JSON on one line, followed by a line with its HMAC under a
 * key derived from the master key, so it is readable before unlocking and verified after.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "chunk/chunker.h"
#include "repo/repo.h"

#define MAC_PREFIX "hmac-sha256:"

static void config_mac(char out[65], const cf_master_key *mk, const uint8_t *body, size_t len)
{
    uint8_t key[CF_KEY_LEN], mac[32];
    cf_kdf(key, mk->mac, "coffer config", NULL, 0);
    cf_hmac_sha256(mac, key, body, len);
    cf_hex_encode(out, mac, sizeof(mac));
    cf_wipe(key, sizeof(key));
}

int cf_config__write(cf_storage *st, const cf_config *c, const cf_master_key *mk)
{
    int rc = 0;
    char *body = NULL, mac[65];
    cf_buf out;
    cf_buf_init(&out, 1 << 20);
    json_t *doc = json_pack("{s:i, s:s, s:{s:i, s:i, s:i}, s:i, s:{s:s, s:i}}", "version",
                            (int)c->version, "id", c->id, "chunker", "min", (int)c->chunk.min,
                            "avg", (int)c->chunk.avg, "max", (int)c->chunk.max, "pack_size",
                            (int)c->pack_size, "compression", "algorithm",
                            c->compression_level ? "zstd" : "none", "level", c->compression_level);
    if (!doc || !(body = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS))) {
        rc = cf_error_set(CF_ENOMEM, 0, "unable to encode config");
        goto out;
    }
    config_mac(mac, mk, (const uint8_t *)body, strlen(body));
    if ((rc = cf_buf_printf(&out, "%s\n%s%s\n", body, MAC_PREFIX, mac)))
        goto out;
    rc = cf_storage_put(st, "config", out.data, out.len, CF_PUT_EXCLUSIVE);
out:
    json_decref(doc);
    free(body);
    cf_buf_free(&out);
    return rc;
}

/* Split raw into body and mac lines; parse the body into out. */
static int parse(cf_config *out, const cf_buf *raw, size_t *body_len, const char **mac,
                 const char *url)
{
    const char *text = (const char *)raw->data;
    const char *nl = memchr(text, '\n', raw->len);
    json_error_t jerr;
    json_t *doc = NULL;
    json_int_t version = 0, cmin = 0, cavg = 0, cmax = 0, pack = 0, level = 0;
    const char *id = NULL, *algo = NULL;
    int rc = 0;
    if (!nl)
        goto bad;
    *body_len = (size_t)(nl - text);
    *mac = nl + 1;
    doc = json_loadb(text, *body_len, 0, &jerr);
    if (!doc || json_unpack(doc, "{s:I, s:s, s:{s:I, s:I, s:I}, s:I, s:{s:s, s:I}}", "version",
                            &version, "id", &id, "chunker", "min", &cmin, "avg", &cavg, "max",
                            &cmax, "pack_size", &pack, "compression", "algorithm", &algo,
                            "level", &level))
        goto bad;
    if (version != CF_FORMAT_VERSION) {
        rc = cf_error_set(CF_EUNSUPPORTED, 0,
                          "repository '%s' has format version %lld; this coffer reads version %d",
                          url, (long long)version, CF_FORMAT_VERSION);
        goto out;
    }
    if (strlen(id) != 64 || cmin <= 0 || cavg <= 0 || cmax <= 0 || cmax > (64 << 20) ||
        pack < (1 << 16) || pack > (json_int_t)CF_PACK_SIZE_MAX || level < 0 || level > 22)
        goto bad;
    out->version = (uint32_t)version;
    memcpy(out->id, id, 65);
    out->chunk.min = (uint32_t)cmin;
    out->chunk.avg = (uint32_t)cavg;
    out->chunk.max = (uint32_t)cmax;
    if (cf_chunk_params_validate(&out->chunk))
        goto bad;
    out->pack_size = (uint32_t)pack;
    out->compression_level = strcmp(algo, "none") == 0 ? 0 : (int)level;
    goto out;
bad:
    rc = cf_error_set(CF_ECORRUPT, 0, "config of repository '%s' is damaged", url);
out:
    json_decref(doc);
    return rc;
}

int cf_config__read_unverified(cf_config *out, cf_buf *raw, cf_storage *st, const char *url)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = cf_storage_get(st, "config", 0, 0, &data, &len);
    if (rc == CF_ENOTFOUND)
        return cf_error_set(CF_ENOREPO, 0, "no repository at '%s' (config not found)", url);
    if (rc)
        return rc;
    rc = cf_buf_append(raw, data, len);
    free(data);
    if (rc)
        return rc;
    size_t body_len;
    const char *mac;
    return parse(out, raw, &body_len, &mac, url);
}

int cf_config__read(cf_config *out, cf_storage *st, const cf_master_key *mk, const char *url)
{
    cf_buf raw;
    cf_buf_init(&raw, 1 << 20);
    int rc = cf_config__read_unverified(out, &raw, st, url);
    if (rc)
        goto out;
    size_t body_len;
    const char *mac;
    if ((rc = parse(out, &raw, &body_len, &mac, url)))
        goto out;
    char want[65];
    config_mac(want, mk, raw.data, body_len);
    size_t maclen = raw.len - body_len - 1;
    if (maclen < strlen(MAC_PREFIX) + 64 || !cf_str_has_prefix(mac, MAC_PREFIX) ||
        !cf_ct_equal(mac + strlen(MAC_PREFIX), want, 64)) {
        rc = cf_error_set(CF_ECORRUPT, 0,
                          "config of repository '%s' failed authentication: it was altered", url);
        goto out;
    }
out:
    cf_buf_free(&raw);
    return rc;
}
