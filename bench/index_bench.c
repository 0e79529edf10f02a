/*
 * index_bench.c - the index at scale: build N chunk ids (default 10 million) spread over
 * index files as a repository of N chunks would have them, then measure the time to load them
 * into the in-memory index, the memory it takes per chunk, and the lookup rate for present and
 * absent ids. Prints figures; no pass/fail.
 *
 * Usage: index_bench [N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "repo/repo.h"

static uint64_t sm_state;
static uint64_t splitmix(void)
{
    uint64_t z = (sm_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void make_id(cf_id *id, uint64_t n)
{
    sm_state = n * 0x2545F4914F6CDD1DULL;
    for (int i = 0; i < 4; i++) {
        uint64_t v = splitmix();
        memcpy(id->b + 8 * i, &v, 8);
    }
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * 4;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    const size_t per_pack = 16;       /* 16 MiB packs of ~1 MiB chunks */
    const size_t per_file = 500000;   /* entries per index file (checkpoints merge to this) */
    printf("index benchmark: %zu chunks, %zu per pack, index files of %zu entries\n", n, per_pack,
           per_file);

    /* encode the index files first, the way they are stored (decrypted) */
    size_t nfiles = (n + per_file - 1) / per_file;
    cf_buf *files = calloc(nfiles, sizeof(cf_buf));
    if (!files)
        return 1;
    double t0 = now();
    for (size_t f = 0; f < nfiles; f++) {
        cf_index ix;
        cf_index__init(&ix);
        size_t lo = f * per_file, hi = lo + per_file < n ? lo + per_file : n;
        for (size_t i = lo; i < hi; i++) {
            cf_index_entry e;
            memset(&e, 0, sizeof(e));
            make_id(&e.id, i);
            if ((i - lo) % per_pack == 0) {
                cf_id pid;
                make_id(&pid, (uint64_t)1 << 40 | i);
                cf_index__pack_no(&ix, &pid, &e.pack);
            } else {
                e.pack = (uint32_t)(ix.npacks - 1);
            }
            e.offset = (uint32_t)((i % per_pack) * 1048576);
            e.length = 1048576 + 28;
            e.raw_len = 2 * 1048576;
            e.comp = 1;
            cf_index__add(&ix, &e);
        }
        cf_buf_init(&files[f], 0);
        cf_index__encode(&files[f], &ix, NULL, 0);
        cf_index__free(&ix);
    }
    printf("  prepared %zu index files in %.2f s\n", nfiles, now() - t0);

    long rss0 = rss_kib();
    cf_index ix;
    cf_index__init(&ix);
    t0 = now();
    for (size_t f = 0; f < nfiles; f++)
        if (cf_index__decode(&ix, files[f].data, files[f].len, "bench")) {
            fprintf(stderr, "decode failed: %s\n", cf_error_last()->message);
            return 1;
        }
    double t_decode = now() - t0;
    cf_index__seal(&ix);
    double t_load = now() - t0;
    for (size_t f = 0; f < nfiles; f++)
        cf_buf_free(&files[f]);
    free(files);
    long rss1 = rss_kib();
    size_t mem = cf_index__memory(&ix);
    printf("  load: %.2f s (decode %.2f s, sort and merge %.2f s)\n", t_load, t_decode,
           t_load - t_decode);
    printf("  entries: %zu, packs: %zu\n", cf_index__count(&ix), ix.npacks);
    printf("  memory: %.1f MiB by the index's own accounting = %.1f bytes per chunk\n",
           (double)mem / 1048576.0, (double)mem / (double)n);
    (void)rss0;
    (void)rss1;

    size_t q = n < 2000000 ? n : 2000000;
    t0 = now();
    size_t hits = 0;
    for (size_t i = 0; i < q; i++) {
        cf_id id;
        make_id(&id, (i * 7919) % n);
        hits += cf_index__get(&ix, &id) != NULL;
    }
    double t_hit = now() - t0;
    t0 = now();
    size_t misses = 0;
    for (size_t i = 0; i < q; i++) {
        cf_id id;
        make_id(&id, n + 1 + i);
        misses += cf_index__get(&ix, &id) == NULL;
    }
    double t_miss = now() - t0;
    printf("  lookups: %.2f M/s present (%zu/%zu found), %.2f M/s absent (%zu/%zu not found)\n",
           (double)q / t_hit / 1e6, hits, q, (double)q / t_miss / 1e6, misses, q);
    printf("  a 10 TB repository of ~1 MiB chunks (10 million) would need %.0f MiB of index\n",
           (double)mem / (double)n * 1e7 / 1048576.0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("  peak resident set of this process: %.1f MiB (includes the encoded index files "
           "it prepared)\n", (double)ru.ru_maxrss / 1024.0);
    cf_index__free(&ix);
    return hits == q && misses == q ? 0 : 1;
}
