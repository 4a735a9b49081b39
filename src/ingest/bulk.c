/*
 * bulk.c — the bulk load pipeline (see bulk.h).
 *
 * A ring of slots carries each item through three owners in turn:
 *   EMPTY    --bulk_add-->  RAW       (the producer copied the text in)
 *   RAW      --worker--->   READY     (parsed, validated, store_prepare'd)
 *                           or FAILED (with the error)
 *   READY    --writer--->   EMPTY     (store_put_prepared in the open txn)
 * Slot i carries items i, i+cap, i+2cap...; the writer consumes strictly in
 * the order items were added, so commit boundaries fall where the producer
 * put group ends. One mutex guards the states and counters; the work on a
 * slot is done outside it by the thread that owns the slot.
 *
 * Decimals keep their written text because each worker serialises the
 * resource (store_prepare) on the thread that parsed it, then forgets the
 * texts (fhir_json_release). If an id turns out to exist already, the
 * writer re-serialises (a new version); decimals in that rare path lose
 * their trailing zeros.
 */
#include "bulk.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/log.h"
#include "../fhir/json.h"
#include "../fhir/validate.h"

#define BULK_RING 4096
#define BULK_MAX_WORKERS 16

typedef enum { SLOT_EMPTY, SLOT_RAW, SLOT_WORKING, SLOT_READY, SLOT_FAILED } slot_state;

typedef struct slot {
    slot_state state;
    char type[64];
    char id[72];
    char fallback_id[72];
    char *json;
    size_t len;
    int group_end;
    int pre_rejected; /* added as rejected: e says why */
    bulk_mark mark;
    json_t *res;
    store_prep *prep;
    err e;
} slot;

struct bulk {
    store *s;
    bulk_hooks hooks;
    int hooked;
    int batch;
    int nworkers;
    pthread_t workers[BULK_MAX_WORKERS];
    pthread_t writer;
    pthread_mutex_t lock;
    /* one condition per kind of waiter, signalled only when one waits:
     * waking every thread for every item cost more than the work */
    pthread_cond_t work, ready, space;
    int workers_waiting, writer_waiting, producer_waiting;
    slot ring[BULK_RING];
    int64_t added;   /* items handed in */
    int64_t claimed; /* items taken by workers */
    int64_t stored;  /* items the writer has consumed */
    int64_t ok;      /* items stored successfully */
    int64_t rejected; /* items recorded by the reject hook */
    int64_t commits;
    int finishing;
    int failed;
    err first;
};

static void slot_clear(slot *sl) {
    free(sl->json);
    sl->json = NULL;
    if (sl->prep) store_prep_free(sl->prep);
    sl->prep = NULL;
    if (sl->res) json_decref(sl->res);
    sl->res = NULL;
    sl->state = SLOT_EMPTY;
}

/* Parse, validate and prepare; returns the slot's next state (set by the
 * caller under the lock). */
static slot_state prepare_slot(const bulk *b, slot *sl) {
    json_error_t je;
    slot_state next = SLOT_READY;
    if (sl->pre_rejected) return SLOT_FAILED;
    if (!sl->json) return SLOT_READY; /* a group boundary, not a resource */
    sl->res = fhir_json_load(sl->json, sl->len, &je);
    if (!sl->res) {
        if (sl->type[0])
            err_set(&sl->e, ST_INVALID, "structure", sl->id, "%s/%s is not JSON: %s (line %d, column %d)", sl->type,
                    sl->id, je.text, je.line, je.column);
        else
            err_set(&sl->e, ST_INVALID, "structure", NULL, "not JSON: %s (column %d)", je.text, je.column);
        return SLOT_FAILED;
    }
    if (!sl->type[0]) {
        const char *rt = json_is_object(sl->res) ? json_string_value(json_object_get(sl->res, "resourceType")) : NULL;
        if (!rt) {
            err_set(&sl->e, ST_INVALID, "required", "resourceType",
                    json_is_object(sl->res) ? "no resourceType: not a FHIR resource" : "not a JSON object");
            fhir_json_release();
            return SLOT_FAILED;
        }
        snprintf(sl->type, sizeof sl->type, "%s", rt);
    }
    const char *id = sl->id[0] ? sl->id : NULL;
    if (!id) {
        const char *own = json_string_value(json_object_get(sl->res, "id"));
        snprintf(sl->id, sizeof sl->id, "%s", own ? own : sl->fallback_id);
        id = sl->id[0] ? sl->id : NULL;
    }
    if ((b->hooks.transform && b->hooks.transform(b->hooks.ctx, sl->res, &sl->mark, &sl->e) != ST_OK) ||
        fhir_validate(sl->res, sl->type, &sl->e) != ST_OK || store_prepare(sl->res, id, &sl->prep, &sl->e) != ST_OK) {
        char inner[sizeof sl->e.where];
        memcpy(inner, sl->e.where, sizeof inner);
        snprintf(sl->e.where, sizeof sl->e.where, "%.40s/%.64s %.50s", sl->type, sl->id, inner);
        next = SLOT_FAILED;
    }
    fhir_json_release();
    return next;
}

#define BULK_CHUNK 32 /* items a worker claims at once */

static void *worker_main(void *arg) {
    bulk *b = arg;
    pthread_setname_np(pthread_self(), "bulk-prepare");
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->claimed == b->added && !b->finishing) {
            b->workers_waiting++;
            pthread_cond_wait(&b->work, &b->lock);
            b->workers_waiting--;
        }
        if (b->claimed == b->added && b->finishing) break;
        int64_t first = b->claimed, n = b->added - b->claimed;
        if (n > BULK_CHUNK) n = BULK_CHUNK;
        b->claimed += n;
        pthread_mutex_unlock(&b->lock);
        for (int64_t k = 0; k < n; k++) {
            slot *sl = &b->ring[(first + k) % BULK_RING];
            slot_state next = prepare_slot(b, sl);
            pthread_mutex_lock(&b->lock);
            sl->state = next;
            if (b->writer_waiting && first + k == b->stored) pthread_cond_signal(&b->ready);
            if (k < n - 1) pthread_mutex_unlock(&b->lock);
        }
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

static void fail(bulk *b, const err *e) {
    if (!b->failed) {
        b->failed = 1;
        b->first = *e;
    }
}

/* Writer: store READY items, record FAILED ones through the reject hook
 * (or stop), commit after a group end once `batch` items are in the
 * transaction, checkpointing just before. */
static void *writer_main(void *arg) {
    bulk *b = arg;
    pthread_setname_np(pthread_self(), "bulk-writer");
    store_txn *tx = NULL;
    int64_t in_txn = 0, ok = 0, rejected = 0;
    int64_t own_ok = 0, own_rejected = 0; /* of last.owner */
    int owner_in_txn = 0;                 /* last.owner has items in the open transaction */
    bulk_mark last = {0};
    err e;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        if (b->stored == b->added && b->finishing) break;
        if (b->stored == b->added || b->ring[b->stored % BULK_RING].state < SLOT_READY) {
            b->writer_waiting = 1;
            pthread_cond_wait(&b->ready, &b->lock);
            b->writer_waiting = 0;
            continue;
        }
        slot *sl = &b->ring[b->stored % BULK_RING];
        int failed = b->failed;
        pthread_mutex_unlock(&b->lock);
        status rc = ST_OK;
        int committed = 0, stored_one = 0, rejected_one = 0;
        err_clear(&e);
        if (!failed) {
            int is_item = sl->prep != NULL || sl->state == SLOT_FAILED;
            if (sl->state == SLOT_FAILED && !(b->hooked && b->hooks.reject)) {
                e = sl->e;
                rc = e.code ? e.code : ST_INVALID;
            } else {
                if (is_item && !tx) rc = store_begin(b->s, &tx, &e);
                if (rc == ST_OK && is_item && sl->mark.owner != last.owner) {
                    /* the next file: the one before gets its last checkpoint in this transaction */
                    if (owner_in_txn && b->hooked && b->hooks.checkpoint)
                        rc = b->hooks.checkpoint(b->hooks.ctx, tx, &last, own_ok, own_rejected, &e);
                    own_ok = own_rejected = 0;
                    owner_in_txn = 0;
                    memset(&last, 0, sizeof last);
                    last.owner = sl->mark.owner;
                }
                if (rc != ST_OK) {
                    /* fall through to the failure below */
                } else if (sl->state == SLOT_FAILED) {
                    rc = b->hooks.reject(b->hooks.ctx, tx, &sl->mark, sl->json, sl->json ? sl->len : 0, &sl->e, &e);
                    rejected_one = rc == ST_OK;
                } else if (rc == ST_OK && sl->prep) {
                    rc = store_put_prepared(tx, sl->prep, 0, NULL, NULL, NULL, &e);
                    if (rc != ST_OK && !e.where[0]) snprintf(e.where, sizeof e.where, "%s/%s", sl->type, sl->id);
                    stored_one = rc == ST_OK;
                }
                if (rc == ST_OK && is_item) {
                    in_txn++;
                    ok += stored_one;
                    rejected += rejected_one;
                    own_ok += stored_one;
                    own_rejected += rejected_one;
                    owner_in_txn = 1;
                    if (sl->mark.bytes_done || sl->mark.lines_done) last = sl->mark;
                }
                if (rc == ST_OK && tx && sl->group_end && in_txn >= b->batch) {
                    if (owner_in_txn && b->hooked && b->hooks.checkpoint)
                        rc = b->hooks.checkpoint(b->hooks.ctx, tx, &last, own_ok, own_rejected, &e);
                    owner_in_txn = 0;
                    if (rc == ST_OK) {
                        rc = store_commit(tx, &e);
                        committed = rc == ST_OK;
                    } else {
                        store_rollback(tx);
                    }
                    tx = NULL;
                    in_txn = 0;
                }
            }
        }
        /* the slot's memory is released by the producer when it reuses
         * the slot (bulk_add_item): frees off the writer, the bottleneck */
        sl->state = SLOT_EMPTY;
        pthread_mutex_lock(&b->lock);
        if (rc != ST_OK) fail(b, &e);
        if (committed) {
            b->ok = ok;
            b->rejected = rejected;
            b->commits++;
        }
        b->stored++;
        if (b->producer_waiting && (b->failed || b->added - b->stored <= BULK_RING / 2))
            pthread_cond_signal(&b->space);
    }
    pthread_mutex_unlock(&b->lock);
    if (tx) {
        status rc = ST_OK;
        if (b->failed) {
            store_rollback(tx); /* a group cut short is not committed */
        } else {
            if (owner_in_txn && b->hooked && b->hooks.checkpoint)
                rc = b->hooks.checkpoint(b->hooks.ctx, tx, &last, own_ok, own_rejected, &e);
            if (rc == ST_OK) rc = store_commit(tx, &e);
            else store_rollback(tx);
        }
        pthread_mutex_lock(&b->lock);
        if (rc != ST_OK) fail(b, &e);
        else if (!b->failed) {
            b->ok = ok;
            b->rejected = rejected;
            b->commits++;
        }
        pthread_mutex_unlock(&b->lock);
    }
    return NULL;
}

status bulk_start(store *s, int workers, int batch, bulk **out, err *e) {
    return bulk_start_hooked(s, workers, batch, NULL, out, e);
}

status bulk_start_hooked(store *s, int workers, int batch, const bulk_hooks *h, bulk **out, err *e) {
    bulk *b = calloc(1, sizeof *b);
    if (!b) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    b->s = s;
    if (h) {
        b->hooks = *h;
        b->hooked = 1;
    }
    b->batch = batch > 0 ? batch : 5000;
    if (workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 1 ? (int)n - 1 : 1;
    }
    b->nworkers = workers > BULK_MAX_WORKERS ? BULK_MAX_WORKERS : workers;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->ready, NULL);
    pthread_cond_init(&b->space, NULL);
    for (int i = 0; i < b->nworkers; i++) pthread_create(&b->workers[i], NULL, worker_main, b);
    pthread_create(&b->writer, NULL, writer_main, b);
    *out = b;
    return ST_OK;
}

status bulk_add(bulk *b, const char *type, const char *id, const char *json, size_t len, int group_end, err *e) {
    bulk_item it = {.type = type, .id = id, .json = json, .len = len, .group_end = group_end};
    return bulk_add_item(b, &it, e);
}

status bulk_add_item(bulk *b, const bulk_item *it, err *e) {
    pthread_mutex_lock(&b->lock);
    while (!b->failed && b->added - b->stored >= BULK_RING) {
        b->producer_waiting = 1;
        pthread_cond_wait(&b->space, &b->lock);
        b->producer_waiting = 0;
    }
    if (b->failed) {
        if (e) *e = b->first;
        status rc = b->first.code ? b->first.code : ST_INVALID;
        pthread_mutex_unlock(&b->lock);
        return rc;
    }
    slot *sl = &b->ring[b->added % BULK_RING];
    pthread_mutex_unlock(&b->lock);
    /* the slot is ours: EMPTY and not yet counted in `added` */
    slot_clear(sl);
    snprintf(sl->type, sizeof sl->type, "%s", it->type ? it->type : "");
    snprintf(sl->id, sizeof sl->id, "%s", it->id ? it->id : "");
    snprintf(sl->fallback_id, sizeof sl->fallback_id, "%s", it->fallback_id ? it->fallback_id : "");
    sl->json = NULL;
    if (it->json) {
        sl->json = malloc(it->len + 1);
        if (!sl->json) abort();
        memcpy(sl->json, it->json, it->len);
        sl->json[it->len] = 0;
    }
    sl->len = it->len;
    sl->group_end = it->group_end;
    sl->mark = it->mark;
    err_clear(&sl->e);
    sl->pre_rejected = it->rejected != NULL;
    if (it->rejected) sl->e = *it->rejected;
    sl->state = SLOT_RAW;
    pthread_mutex_lock(&b->lock);
    b->added++;
    if (b->workers_waiting && (b->added - b->claimed >= BULK_CHUNK || !it->json)) pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->lock);
    return ST_OK;
}

int64_t bulk_stored(bulk *b) {
    pthread_mutex_lock(&b->lock);
    int64_t n = b->ok;
    pthread_mutex_unlock(&b->lock);
    return n;
}

status bulk_finish(bulk *b, bulk_stats *stats, err *e) {
    pthread_mutex_lock(&b->lock);
    b->finishing = 1;
    pthread_cond_broadcast(&b->work);
    pthread_cond_broadcast(&b->ready);
    pthread_mutex_unlock(&b->lock);
    for (int i = 0; i < b->nworkers; i++) pthread_join(b->workers[i], NULL);
    pthread_join(b->writer, NULL);
    status rc = ST_OK;
    if (b->failed) {
        if (e) *e = b->first;
        rc = b->first.code ? b->first.code : ST_INVALID;
    }
    if (stats) {
        stats->resources = b->ok;
        stats->rejected = b->rejected;
        stats->commits = b->commits;
    }
    for (int i = 0; i < BULK_RING; i++) slot_clear(&b->ring[i]);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->ready);
    pthread_cond_destroy(&b->space);
    free(b);
    return rc;
}
