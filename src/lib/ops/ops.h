/*
 * ops.h - helpers shared by the engine's verbs (backup, restore, check, browse).
 */
#ifndef CF_OPS_H
#define CF_OPS_H

#include "repo/repo.h"

/* Join dir and a name of len bytes with '/', malloc'd. */
char *cf_ops__join(const char *dir, const char *name, size_t len);
/* Does path (absolute, '/'-separated) match any pattern? Patterns without '/' match any path
 * component's base name; patterns with '/' match the whole path or one of its parents. */
bool cf_ops__match_any(const char *const *patterns, const char *path);
/* Find the snapshot the backup compares against. *out NULL when none. */
int cf_ops__find_parent(cf_snapshot **out, cf_repo *r, const cf_backup_opts *o, char **paths,
                        size_t npaths, const char *host);



/* Prune, optionally without taking the lock (the caller holds it). */
int cf_ops__prune(cf_repo *r, const cf_prune_opts *o, cf_prune_stats *out, bool lock);

/* A set of ids (open addressing), for visited trees and damaged packs. */
typedef struct {
    cf_id *slots;
    uint8_t *used;
    size_t cap, count;
} cf_idset;

void cf_idset_init(cf_idset *s);
void cf_idset_free(cf_idset *s);
/* 1 if added, 0 if already present, negative on error. */
int cf_idset_add(cf_idset *s, const cf_id *id);
bool cf_idset_has(const cf_idset *s, const cf_id *id);
#endif
