/*
 * sqlite_walbuf.h — an SQLite VFS that gathers a writer's WAL frames into
 * one write per run of consecutive frames (see sqlite_walbuf.c).
 */
#ifndef CONCORD_SQLITE_WALBUF_H
#define CONCORD_SQLITE_WALBUF_H

#include <sqlite3.h>
#include <stdint.h>

#define WALBUF_VFS "concord-walbuf"

/* Register the VFS (not as the default); safe to call more than once and
 * from several threads. Returns an SQLite result code. */
int walbuf_register(void);

/* Gather WAL writes for `schema` ("main", "audit", ...) of a connection
 * opened through WALBUF_VFS. Only call it when that schema runs with
 * synchronous=FULL or EXTRA: SQLite then syncs the WAL, which flushes the
 * gathered frames, before it publishes a commit. Returns an SQLite result
 * code (SQLITE_NOTFOUND when the file is not ours). */
int walbuf_enable(sqlite3 *h, const char *schema);

/* Process-wide counters, for tests and benchmarks. */
typedef struct walbuf_stats {
    uint64_t frames_in;  /* xWrite calls on WAL files with gathering on */
    uint64_t writes_out; /* writes issued to the file system for them */
    uint64_t bytes;      /* bytes those writes carried */
} walbuf_stats;
void walbuf_get_stats(walbuf_stats *out);

#endif
