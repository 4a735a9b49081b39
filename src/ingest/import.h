/*
 * import.h — file imports: FHIR ndjson, FHIR Bundles (and single
 * resources), CSV extracts with a per-provider mapping; files or whole
 * directories. Used by `concord import` and by the $import API.
 *
 * Guarantees:
 *  - Good records are stored, bad ones quarantined (ingest_message,
 *    channel "file") with file, line and the OperationOutcome text; the
 *    import never stops at a bad record.
 *  - Progress is checkpointed in the transaction that stores the records
 *    (import_file), so importing an interrupted file again resumes after
 *    the last committed record: nothing is skipped or stored twice.
 *  - A file already imported completely is skipped unless `force`.
 *  - Memory is bounded whatever the file size: ndjson and CSV stream
 *    record by record through a fixed ring (bulk.c); a Bundle file is
 *    parsed whole and so is limited to IMPORT_MAX_BUNDLE bytes.
 *  - Every stored resource records where it came from: meta.source =
 *    urn:concord:import:<job>/<file>#<line>, and meta.tags for the care
 *    setting and the source organisation (ODS) when given (CSV mappings
 *    always give them).
 */
#ifndef CONCORD_INGEST_IMPORT_H
#define CONCORD_INGEST_IMPORT_H

#include <stdint.h>

#include "../base/status.h"
#include "../store/store.h"

#define IMPORT_MAX_BUNDLE ((int64_t)1 << 30)
#define IMPORT_MAX_LINE ((size_t)64 << 20)

typedef struct import_progress {
    int file_no, nfiles;
    const char *path;
    int64_t bytes_done, bytes_total; /* over all files */
    int64_t stored, quarantined;     /* committed, over all files */
    double seconds;
} import_progress;

typedef struct import_opts {
    const char *format;  /* "ndjson", "bundle", "csv", or NULL: from the name/content */
    const char *mapping; /* CSV mapping file (required for CSV) */
    const char *org;     /* ODS code to tag resources with (ndjson, Bundles), or NULL */
    const char *setting; /* care setting to tag resources with, or NULL */
    const char *origin;  /* "cli" or "api" (import_job.origin) */
    int force;           /* import files already imported completely again */
    int workers, batch;  /* 0 = defaults */
    /* Called from the importing thread about 5 times a second, and once at
     * the end of each file (may be NULL). */
    void (*progress)(void *ctx, const import_progress *p);
    void *progress_ctx;
    /* Called for each quarantined record (from the store's writer thread),
     * with "path:line", the reason and the element at fault ("" if none)
     * (may be NULL). */
    void (*rejected)(void *ctx, const char *where, const char *reason, const char *element);
    void *rejected_ctx;
    volatile int *cancel; /* set to stop between records (resumable) */
} import_opts;

typedef struct import_file_outcome {
    char path[512];
    char format[16];
    char status[16]; /* done | skipped | failed | cancelled */
    char message[256];
    int64_t stored, quarantined, resumed_from_line;
} import_file_outcome;

typedef struct import_result {
    int64_t job;
    int nfiles;
    import_file_outcome *files; /* malloc'd; free with import_result_free */
    int64_t stored, quarantined;
    double seconds;
} import_result;
void import_result_free(import_result *r);

/* Expand paths (directories recursively: *.ndjson, *.jsonl, *.json, and
 * *.csv when a mapping is given), then import each file. With job == 0 a
 * new import_job is created; otherwise the files are recorded under that
 * (existing) job. Returns ST_OK when every file was processed (records may
 * have been quarantined: see the counts); an error stops the import and
 * says which file. */
status import_run(store *s, int64_t job, const char *const *paths, int npaths, const import_opts *o,
                  import_result *r, err *e);

/* Replay a quarantined file record (ingest_message with channel "file")
 * after its cause was fixed: stored → the record becomes 'replayed'. */
status import_replay(store *s, int64_t msg_key, err *e);

#endif
