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

#include "../base/status.h"
#include "../store/store.h"

typedef struct bulk bulk;

typedef struct bulk_stats {
    int64_t resources; /* stored */
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
/* Store everything added, stop the threads, free. The first failure, if
 * any, is returned with its resource named in e->where. */
status bulk_finish(bulk *b, bulk_stats *stats, err *e);
/* Progress so far (resources stored). */
int64_t bulk_stored(bulk *b);

#endif
