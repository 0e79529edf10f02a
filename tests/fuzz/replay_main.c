/*
 * replay_main.c - a plain driver for libFuzzer targets: runs LLVMFuzzerTestOneInput on every
 * file of each corpus directory (or on files) named on the command line, so CI replays the
 * saved corpus as ordinary tests without clang.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT ((size_t)64 << 20)

/* Read one file and run it; returns 1 if run, 0 if skipped, -1 on a read error. */
static int replay_file(const char *path)
{
    struct stat st;
    FILE *f = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = -1;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: unable to stat '%s': %s\n", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = 0;
        goto out;
    }
    if ((size_t)st.st_size > REPLAY_MAX_INPUT) {
        fprintf(stderr, "replay: '%s' is larger than 64 MiB\n", path);
        goto out;
    }
    len = (size_t)st.st_size;
    buf = malloc(len ? len : 1);
    f = fopen(path, "rb");
    if (buf == NULL || f == NULL || fread(buf, 1, len, f) != len) {
        fprintf(stderr, "replay: unable to read '%s'\n", path);
        goto out;
    }
    /* A copy of exactly len bytes, so ASan catches reads past the end. */
    LLVMFuzzerTestOneInput(buf, len);
    rc = 1;
out:
    if (f != NULL)
        fclose(f);
    free(buf);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replay every file in dir in name order; returns the count, or -1 on an error. */
static long replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    long count = 0;

    if (d == NULL)
        return 0; /* no corpus yet: nothing to replay */
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, cap * sizeof(*names));
            if (grown == NULL) {
                count = -1;
                goto out;
            }
            names = grown;
        }
        size_t need = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(need);
        if (names[n] == NULL) {
            count = -1;
            goto out;
        }
        snprintf(names[n], need, "%s/%s", dir, e->d_name);
        n++;
    }
    qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n; i++) {
        int r = replay_file(names[i]);
        if (r < 0) {
            count = -1;
            goto out;
        }
        count += r;
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return count;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc < 2) {
        printf("replayed 0 inputs (usage: %s <corpus-dir-or-file>...)\n", argv[0]);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        long r = 0;
        if (stat(argv[i], &st) == 0 && S_ISREG(st.st_mode))
            r = replay_file(argv[i]);
        else
            r = replay_dir(argv[i]);
        if (r < 0)
            return 1;
        total += r;
    }
    printf("replayed %ld inputs\n", total);
    return 0;
}
