/*
 * bulk.h — loading many resources fast: a pipeline of worker threads that
 * parse, validate and prepare (serialise and extract index rows) in
 * parallel, and one writer that stores the prepared resources in large
 * transactions, in the order they were added.
 *
 * Transactions end only after an item added with group_end = 1, so a
 * group (e.g. all of one person's resources) is committed whole or not at
 * all.
 *
 * Ownership: bulk_add copies what it is given.
 */
#ifndef CONCORD_INGEST_BULK_H
#define CONCORD_INGEST_BULK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../base/status.h"
#include "../store/store.h"

typedef struct bulk bulk;

typedef struct bulk_stats {
    int64_t resources; /* stored */
    int64_t rejected;  /* recorded by the reject hook */
    int64_t commits;
} bulk_stats;

/* workers: parsing threads (0 = one per core, less one); batch: resources
 * per transaction, at least (0 = 5000). */
status bulk_start(store *s, int workers, int batch, bulk **out, err *e);
/* Add one resource (JSON text of `type`, with logical id `id`), or, with
 * json == NULL, a marker that only ends a group. Blocks while the pipeline
 * is full. Returns the first failure seen so far (then
 * stop adding and call bulk_finish). */
status bulk_add(bulk *b, const char *type, const char *id, const char *json, size_t len, int group_end, err *e);
/* ---- imports: rejected items recorded, progress checkpointed ---------- */
/* Where an item came from, for a checkpoint: after the item is committed,
 * the input is durably consumed up to bytes_done / lines_done. */
typedef struct bulk_mark {
    void *owner;  /* what the item came from (a file); items of one owner are added contiguously */
    int64_t bytes_done;
    int64_t lines_done;
    int64_t line; /* the item's own line (or entry) number, for messages */
} bulk_mark;

typedef struct bulk_hooks {
    void *ctx;
    /* On a worker thread, after parsing and before validation: adjust the
     * resource (provenance). Must be thread-safe. May be NULL. */
    status (*transform)(void *ctx, json_t *res, const bulk_mark *m, err *e);
    /* On the writer, inside the open transaction: record an item that
     * could not be prepared (bad JSON, invalid resource) or was added as
     * rejected. ST_OK goes on; anything else stops the load. With no
     * hook, a rejected item stops the load (bulk_add's behaviour). */
    status (*reject)(void *ctx, store_txn *tx, const bulk_mark *m, const char *text, size_t len, const err *why,
                     err *e);
    /* On the writer, inside the transaction: for each owner with items in
     * it, the mark of its last item and its totals since its first item
     * (stored, rejected) — just before each commit, and when the items
     * move on to the next owner. */
    status (*checkpoint)(void *ctx, store_txn *tx, const bulk_mark *m, int64_t stored, int64_t rejected, err *e);
} bulk_hooks;

status bulk_start_hooked(store *s, int workers, int batch, const bulk_hooks *h, bulk **out, err *e);

typedef struct bulk_item {
    const char *type;        /* "" or NULL: the resource's own resourceType */
    const char *id;          /* forced id, or NULL: the resource's id, else fallback_id */
    const char *fallback_id; /* id when the resource has none (NULL: a new uuid) */
    const char *json;
    size_t len;
    int group_end;
    bulk_mark mark;
    const err *rejected; /* non-NULL: not a resource; record `json` as rejected for this reason */
} bulk_item;
status bulk_add_item(bulk *b, const bulk_item *it, err *e);

/* Store everything added, stop the threads, free. The first failure, if
 * any, is returned with its resource named in e->where. */
status bulk_finish(bulk *b, bulk_stats *stats, err *e);
/* Progress so far (resources stored). */
int64_t bulk_stored(bulk *b);

#endif
