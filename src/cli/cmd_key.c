/*
 * cmd_key.c - `coffer key list|add|remove|passwd|rotate|retire-generation` and `coffer
 * rewrite`: key slots and data key generations.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void print_gens(const cf_key_info *k)
{
    for (uint32_t i = 0; i < k->ngenerations; i++)
        printf("%s%u", i ? "," : "", k->generations[i]);
}

static int key_list(cf_repo *repo, bool packs)
{
    cf_key_info *v = NULL;
    size_t n = 0;
    int rc = cf_key_list(&v, &n, repo);
    if (rc)
        return cli_fail(rc);
    if (g.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *gens = json_array();
            for (uint32_t k = 0; k < v[i].ngenerations; k++)
                json_array_append_new(gens, json_integer(v[i].generations[k]));
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:I}", "id",
                                                 v[i].id, "kind", v[i].kdf, "role",
                                                 v[i].role == CF_ROLE_APPEND       ? "append"
                                                 : v[i].role == CF_ROLE_WRITE_ONLY ? "write-only"
                                                                                   : "admin",
                                                 "created", v[i].created,
                                                 "host", v[i].host, "user", v[i].user, "current",
                                                 v[i].current, "generations", gens,
                                                 "current_generation",
                                                 (json_int_t)v[i].current_generation));
        }
        cli_print_json(arr);
    } else {
        printf(" %-8s  %-8s  %-6s  %-19s  %-12s  %-10s  %s\n", "ID", "Kind", "Role", "Created",
               "Host", "User", "Generations (current)");
        for (size_t i = 0; i < n; i++) {
            printf("%c%.8s  %-8s  %-6s  %.19s  %-12s  %-10s  ", v[i].current ? '*' : ' ', v[i].id,
                   v[i].kdf,
                   v[i].role == CF_ROLE_APPEND       ? "append"
                   : v[i].role == CF_ROLE_WRITE_ONLY ? "wonly"
                                                     : "admin",
                   v[i].created,
                   v[i].host, v[i].user);
            print_gens(&v[i]);
            printf(" (%u)\n", v[i].current_generation);
        }
        printf("* = the key in use\n");
    }
    free(v);
    if (packs) {
        uint32_t gens[CF_KEY_INFO_MAX_GENS + 1];
        uint64_t counts[CF_KEY_INFO_MAX_GENS + 1];
        size_t ng = 0;
        int urc = cf_key_generation_usage(repo, gens, counts, CF_KEY_INFO_MAX_GENS + 1, &ng);
        if (urc)
            return cli_fail(urc);
        json_t *arr = g.json ? json_array() : NULL;
        for (size_t i = 0; i < ng; i++) {
            if (g.json)
                json_array_append_new(arr, json_pack("{s:I, s:I}", "generation",
                                                     (json_int_t)gens[i], "packs",
                                                     (json_int_t)counts[i]));
            else if (gens[i] == 0xFFFFFFFFu)
                printf("packs written by write-only keys: %llu\n", (unsigned long long)counts[i]);
            else
                printf("packs sealed under generation %u: %llu\n", gens[i],
                       (unsigned long long)counts[i]);
        }
        if (g.json)
            cli_print_json(json_pack("{s:o}", "packs_by_generation", arr));
    }
    return 0;
}

static bool parse_gen(uint32_t *out, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno || v > 0xFFFFFFF0ull || *s == '-')
        return false;
    *out = (uint32_t)v;
    return true;
}

/* Open with the credential, then retire a generation from the slot in use: the slot is
 * written again for the same credential. */
static int key_retire(const char *arg)
{
    uint32_t gen;
    if (!parse_gen(&gen, arg))
        return cli_usage("key retire-generation: '%s' is not a generation number", arg);
    if (!g.repo)
        return cli_usage("no repository given: use --repo or set COFFER_REPO");
    cli_cred cred;
    int rc = cli_cred_get(&cred, false, false);
    if (rc)
        return rc;
    cf_repo *repo = NULL;
    int orc = cf_repo_open_cred(&repo, g.repo, &cred.c);
    if (orc) {
        cli_cred_free(&cred);
        return cli_fail(orc);
    }
    cli_set_notice(repo);
    cli_print_warnings(repo);
    char id[65];
    int krc = cf_key_retire_generation(repo, &cred.c, gen, id);
    cli_cred_free(&cred);
    if (krc)
        rc = cli_fail(krc);
    else if (g.json)
        cli_print_json(json_pack("{s:s, s:s, s:I}", "action", "retire-generation", "id", id,
                                 "generation", (json_int_t)gen));
    else if (!g.quiet)
        printf("retired data key generation %u; the key slot in use is now %.8s\n"
               "other key slots that hold it keep it until they are removed\n", gen, id);
    cf_repo_close(repo);
    return rc;
}

int cmd_key(int argc, char **argv)
{
    enum { O_NPWF = OPT_FIRST_LOCAL, O_NKF, O_NKC, O_KDF, O_APPEND, O_WO, O_PACKS };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"new-password-file", required_argument, NULL, O_NPWF},
        {"new-key-file", required_argument, NULL, O_NKF},
        {"new-key-command", required_argument, NULL, O_NKC},
        {"kdf-log-n", required_argument, NULL, O_KDF},
        {"append-only", no_argument, NULL, O_APPEND},
        {"write-only", no_argument, NULL, O_WO},
        {"packs", no_argument, NULL, O_PACKS},
        {NULL, 0, NULL, 0},
    };
    unsigned kdf = 0;
    cf_key_role role = CF_ROLE_ADMIN;
    bool packs = false;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qv", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        switch (c) {
        case 'r': g.repo = optarg; break;
        case 'q': g.quiet = true; break;
        case 'v': g.verbose++; break;
        case O_NPWF: g.new_password_file = optarg; break;
        case O_NKF: g.new_key_file = optarg; break;
        case O_NKC: g.new_key_command = optarg; break;
        case O_APPEND: role = CF_ROLE_APPEND; break;
        case O_WO: role = CF_ROLE_WRITE_ONLY; break;
        case O_PACKS: packs = true; break;
        case O_KDF: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (end == optarg || *end || v < 10 || v > 24)
                return cli_usage("key: --kdf-log-n takes 10..24");
            kdf = (unsigned)v;
            break;
        }
        default:
            return cli_usage("key: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage("key: give list, add, remove ID, passwd, rotate or retire-generation G");
    const char *sub = argv[optind];
    bool needs_new = strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0 ||
                     strcmp(sub, "rotate") == 0;
    bool one_arg = strcmp(sub, "remove") == 0 || strcmp(sub, "retire-generation") == 0;
    if (one_arg ? optind + 2 != argc : optind + 1 != argc)
        return cli_usage("key %s: wrong number of arguments", sub);
    if (!needs_new && strcmp(sub, "list") != 0 && !one_arg)
        return cli_usage("key: unknown subcommand '%s' (list, add, remove, passwd, rotate, "
                         "retire-generation)", sub);
    if (strcmp(sub, "retire-generation") == 0)
        return key_retire(argv[optind + 1]);
    cf_repo *repo = NULL;
    int rc = cli_open(&repo);
    if (rc)
        return rc;
    if (strcmp(sub, "list") == 0) {
        rc = key_list(repo, packs);
    } else if (strcmp(sub, "remove") == 0) {
        int krc = cf_key_remove(repo, argv[optind + 1]);
        if (krc)
            rc = cli_fail(krc);
        else if (!g.quiet)
            printf("removed key slot %s\n", argv[optind + 1]);
    } else {
        cli_cred nc;
        if ((rc = cli_cred_get(&nc, true, true)) == 0) {
            nc.c.kdf_log_n = kdf;
            char id[65];
            uint32_t gen = 0;
            int krc;
            if (strcmp(sub, "add") == 0)
                krc = cf_key_add(repo, &nc.c, role, id);
            else if (strcmp(sub, "passwd") == 0)
                krc = cf_key_passwd(repo, &nc.c, id);
            else
                krc = cf_key_rotate(repo, &nc.c, id, &gen);
            if (krc) {
                rc = cli_fail(krc);
            } else if (g.json) {
                cli_print_json(json_pack("{s:s, s:s, s:I}", "action", sub, "id", id, "generation",
                                         (json_int_t)gen));
            } else if (!g.quiet) {
                if (strcmp(sub, "add") == 0)
                    printf("added %skey slot %.8s\n",
                           role == CF_ROLE_APPEND       ? "append-only "
                           : role == CF_ROLE_WRITE_ONLY ? "write-only "
                                                        : "",
                           id);
                else if (strcmp(sub, "passwd") == 0)
                    printf("replaced the key slot in use by %.8s\n", id);
                else
                    printf("rotated: new data key generation %u; the key slot in use is now %.8s\n"
                           "other key slots still hold only the old generations: remove them with "
                           "'coffer key remove ID'\n",
                           gen, id);
            }
            cli_cred_free(&nc);
        }
    }
    cf_repo_close(repo);
    return rc;
}

static void rewrite_message(const char *path, const char *m, void *payload)
{
    (void)path;
    (void)payload;
    if (!g.quiet && !g.json)
        printf("%s\n", m);
}

int cmd_rewrite(int argc, char **argv)
{
    enum { O_REENC = OPT_FIRST_LOCAL, O_DRY, O_GEN };
    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        {"reencrypt", no_argument, NULL, O_REENC},
        {"generation", required_argument, NULL, O_GEN},
        {"dry-run", no_argument, NULL, O_DRY},
        {NULL, 0, NULL, 0},
    };
    bool reenc = false;
    cf_prune_opts po;
    memset(&po, 0, sizeof(po));
    po.max_unused_percent = -1; /* the default unless --max-unused is given */
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:qvn", opts, NULL)) != -1) {
        if (cli_common_option(c, optarg))
            continue;
        if (c == O_REENC)
            reenc = true;
        else if (c == O_DRY || c == 'n')
            po.dry_run = true;
        else if (c == O_GEN && parse_gen(&po.generation, optarg))
            po.only_generation = true;
        else if (c == O_GEN)
            return cli_usage("rewrite: --generation takes a generation number, not '%s'", optarg);
        else if (c == 'r')
            g.repo = optarg;
        else if (c == 'q')
            g.quiet = true;
        else
            return cli_usage("rewrite: unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (!reenc || optind < argc)
        return cli_usage("rewrite: give --reencrypt (re-seal everything under the current key "
                         "generation; --generation G: only what generation G seals)");
    if (!g.repo)
        return cli_usage("no repository given: use --repo or set COFFER_REPO");
    cli_cred cred;
    int rc = cli_cred_get(&cred, false, false);
    if (rc)
        return rc;
    cf_repo *repo = NULL;
    int orc = cf_repo_open_cred(&repo, g.repo, &cred.c);
    if (orc) {
        cli_cred_free(&cred);
        return cli_fail(orc);
    }
    cli_set_notice(repo);
    cli_print_warnings(repo);
    cf_rewrite_stats st;
    po.on_message = rewrite_message;
    int rrc = cf_rewrite_reencrypt(repo, &cred.c, &po, &st);
    cli_cred_free(&cred);
    if (rrc) {
        rc = cli_fail(rrc);
    } else if (g.json) {
        json_t *o = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:i, s:i}", "action",
                              "reencrypt", "dry_run", po.dry_run, "packs_repacked",
                              (json_int_t)st.prune.packs_repacked, "bytes_repacked",
                              (json_int_t)st.prune.bytes_repacked, "snapshots_resealed",
                              (json_int_t)st.snapshots_resealed, "archive_resealed",
                              (json_int_t)st.archive_resealed, "generations_retired",
                              (int)st.generations_retired, "generations_kept",
                              (int)st.generations_kept);
        if (po.only_generation)
            json_object_set_new(o, "generation", json_integer(po.generation));
        cli_print_json(o);
    } else if (!g.quiet) {
        char what[64] = "";
        if (po.only_generation)
            snprintf(what, sizeof(what), " of generation %u", po.generation);
        printf("%s %llu packs%s (%.1f MiB), re-sealed %llu snapshots and %llu archive objects, "
               "retired %u old key generations from the key in use\n",
               po.dry_run ? "would re-encrypt" : "re-encrypted",
               (unsigned long long)st.prune.packs_repacked, what,
               (double)st.prune.bytes_repacked / 1048576.0,
               (unsigned long long)st.snapshots_resealed,
               (unsigned long long)st.archive_resealed, st.generations_retired);
        if (st.generations_kept)
            printf("%u older generations were kept (see above); retire them later with "
                   "'coffer key retire-generation G'\n", st.generations_kept);
    }
    cf_repo_close(repo);
    return rc;
}
