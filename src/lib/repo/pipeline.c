/*
 * pipeline.c - the parallel half of the write path: a bounded queue of new blobs and worker
 * threads that compress, seal and append them to packs of their own (each worker has one
 * open data pack and one tree pack, each with its own key), storing full packs themselves so
 * that storage I/O overlaps other workers' CPU work. The producer (the backup walking the
 * source, reading, chunking and hashing; one thread) hands blobs over in batches, so that a
 * stream of small files costs one wake-up per batch rather than per blob, and blocks when
 * the queue is full.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "repo/repo.h"

typedef struct {
    uint8_t type;
    cf_id id;
    uint8_t *data;
    size_t len;
} job;

/* A batch closes at this many blobs or bytes (a single larger blob makes a batch alone). */
#define BATCH_JOBS 64
#define BATCH_BYTES (1u << 20)

typedef struct {
    job jobs[BATCH_JOBS];
    size_t n, bytes;
} batch;

typedef struct {
    struct cf_pipeline *p;
    unsigned no;
    cf_pack_writer w[2];
} worker;

struct cf_pipeline {
    cf_repo *r;
    pthread_t *threads;
    worker *workers;
    unsigned n, started;
    batch **q;        /* queued batches */
    size_t cap, head, count;
    batch *cur;       /* the producer's open batch */
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full, idle;
    unsigned busy;
    bool stop;
    int err;
    char errmsg[1024];
    uint64_t added;
};

static void record_error(struct cf_pipeline *p, int rc)
{
    /* called with p->mu held */
    if (p->err)
        return;
    __atomic_store_n(&p->err, rc, __ATOMIC_RELEASE);
    snprintf(p->errmsg, sizeof(p->errmsg), "%s", cf_error_last()->message);
}

static int raise_error(struct cf_pipeline *p)
{
    /* called with p->mu held: re-raise a worker's error in the calling thread */
    return cf_error_set(p->err, 0, "%s", p->errmsg);
}

static void batch_free(batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->jobs[i].data);
    free(b);
}

static void *work(void *arg)
{
    worker *w = arg;
    struct cf_pipeline *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->count == 0)
            pthread_cond_wait(&p->not_empty, &p->mu);
        if (p->count == 0 && p->stop) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        batch *b = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        p->busy++;
        pthread_cond_signal(&p->not_full);
        pthread_mutex_unlock(&p->mu);

        uint64_t added = 0;
        int rc = 0;
        for (size_t i = 0; i < b->n && rc == 0; i++) {
            job *j = &b->jobs[i];
            if (__atomic_load_n(&p->err, __ATOMIC_ACQUIRE))
                break;
            uint64_t a = 0;
            rc = cf_pack__writer_add(p->r, &w->w[j->type == CF_BLOB_TREE ? 1 : 0], j->type,
                                     &j->id, j->data, j->len, &a);
            added += a;
        }
        batch_free(b);

        pthread_mutex_lock(&p->mu);
        p->busy--;
        p->added += added;
        if (rc)
            record_error(p, rc);
        if (p->count == 0 && p->busy == 0)
            pthread_cond_broadcast(&p->idle);
        if (rc)
            pthread_cond_broadcast(&p->not_full); /* wake a blocked producer to see the error */
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

int cf_pipeline__start(cf_repo *r, unsigned n)
{
    if (r->pipe)
        return 0;
    if (n == 0)
        n = 1;
    if (n > 256)
        n = 256;
    struct cf_pipeline *p = cf_calloc(1, sizeof(*p));
    if (!p)
        return CF_ENOMEM;
    p->r = r;
    p->n = n;
    p->cap = (size_t)n + 1; /* each queued batch holds up to a chunk or 1 MiB: keep few */
    p->q = cf_calloc(p->cap, sizeof(batch *));
    p->threads = cf_calloc(n, sizeof(pthread_t));
    /* the workers' pack writers hold the keys of the packs being built: out of core dumps */
    p->workers = cf_secret_alloc(n * sizeof(worker));
    if (!p->q || !p->threads || !p->workers) {
        free(p->q);
        free(p->threads);
        cf_secret_free(p->workers, n * sizeof(worker));
        free(p);
        return CF_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->not_empty, NULL);
    pthread_cond_init(&p->not_full, NULL);
    pthread_cond_init(&p->idle, NULL);
    for (unsigned i = 0; i < n; i++) {
        p->workers[i].p = p;
        p->workers[i].no = i;
        cf_pack__writer_init(&p->workers[i].w[0]);
        cf_pack__writer_init(&p->workers[i].w[1]);
    }
    r->pipe = p;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&p->threads[i], NULL, work, &p->workers[i]) != 0) {
            int rc = cf_error_set(CF_ENOMEM, 0, "unable to start worker thread %u", i);
            cf_pipeline__stop(r);
            return rc;
        }
        p->started++;
    }
    return 0;
}

/* Queue the producer's open batch (blocks while the queue is full). */
static int push_batch(struct cf_pipeline *p)
{
    batch *b = p->cur;
    if (!b)
        return 0;
    p->cur = NULL;
    pthread_mutex_lock(&p->mu);
    while (p->count == p->cap && !p->err)
        pthread_cond_wait(&p->not_full, &p->mu);
    if (p->err) {
        int rc = raise_error(p);
        pthread_mutex_unlock(&p->mu);
        batch_free(b);
        return rc;
    }
    p->q[(p->head + p->count) % p->cap] = b;
    p->count++;
    pthread_cond_signal(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int cf_pipeline__submit(cf_repo *r, uint8_t type, const cf_id *id, const void *data, size_t len,
                        uint64_t *out_added)
{
    struct cf_pipeline *p = r->pipe;
    *out_added = 0;
    if (__atomic_load_n(&p->err, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&p->mu);
        int rc = raise_error(p);
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    if (!p->cur && !(p->cur = cf_calloc(1, sizeof(batch))))
        return CF_ENOMEM;
    uint8_t *copy = cf_malloc(len ? len : 1);
    if (!copy)
        return CF_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    batch *b = p->cur;
    job *j = &b->jobs[b->n++];
    j->type = type;
    j->id = *id;
    j->data = copy;
    j->len = len;
    b->bytes += len;
    if (b->n == BATCH_JOBS || b->bytes >= BATCH_BYTES)
        return push_batch(p);
    return 0;
}

int cf_pipeline__drain(cf_repo *r)
{
    struct cf_pipeline *p = r->pipe;
    int rc = 0;
    if (!p)
        return 0;
    if ((rc = push_batch(p)))
        return rc;
    pthread_mutex_lock(&p->mu);
    while (p->count > 0 || p->busy > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    if (p->err)
        rc = raise_error(p);
    pthread_mutex_unlock(&p->mu);
    if (rc)
        return rc;
    /* workers are idle: close their packs from here */
    for (unsigned i = 0; i < p->n && rc == 0; i++)
        for (int k = 0; k < 2 && rc == 0; k++)
            rc = cf_pack__writer_finish(r, &p->workers[i].w[k]);
    return rc;
}

uint64_t cf_pipeline__added(cf_repo *r)
{
    struct cf_pipeline *p = r->pipe;
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    uint64_t a = p->added;
    pthread_mutex_unlock(&p->mu);
    return a;
}

int cf_pipeline__stop(cf_repo *r)
{
    struct cf_pipeline *p = r->pipe;
    if (!p)
        return 0;
    if (p->started && !__atomic_load_n(&p->err, __ATOMIC_ACQUIRE))
        push_batch(p); /* the workers take it before they see stop; an error is kept in p */
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    int rc = p->err ? cf_error_set(p->err, 0, "%s", p->errmsg) : 0;
    /* batches left by an error are dropped */
    for (size_t k = 0; k < p->count; k++)
        batch_free(p->q[(p->head + k) % p->cap]);
    batch_free(p->cur);
    for (unsigned i = 0; i < p->n; i++) {
        cf_pack__writer_free(&p->workers[i].w[0]);
        cf_pack__writer_free(&p->workers[i].w[1]);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->not_empty);
    pthread_cond_destroy(&p->not_full);
    pthread_cond_destroy(&p->idle);
    free(p->q);
    free(p->threads);
    cf_secret_free(p->workers, p->n * sizeof(worker));
    free(p);
    r->pipe = NULL;
    return rc;
}
