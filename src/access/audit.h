/*
 * audit.h — the access log: every read, search, write, export and refusal
 * of patient data, every sign-in and break-glass, as an append-only keyed
 * hash chain in the audit_log table (docs/audit.md has the format and what
 * `concord audit verify` can and cannot detect).
 *
 * Writing: audit_append copies the event into a bounded in-memory queue;
 * one writer thread per audit_log gives each event its seq and chain hash
 * in arrival order and commits them in batches (group commit: everything
 * queued when a batch starts goes into one transaction, which also moves
 * the anchor, audit_anchor id 1, to the new head).
 *
 * Durability: an event appended with wait=1 is committed (durable) before
 * audit_append returns ST_OK; wait=0 events are committed within about
 * flush_ms of being appended (sooner under load); audit_flush waits for
 * everything appended so far; audit_close flushes. If the database fails
 * the writer keeps the events and retries (the log never drops an event
 * while the process lives): wait=1 callers then get ST_IO (their event
 * stays queued and may still be written later), and when the queue is
 * full appenders block until there is room.
 *
 * Threads: an audit_log is shared by every thread; audit_append and
 * audit_flush are thread-safe. Never call audit_append with wait=1, or
 * audit_flush, while holding a store transaction on SQLite: the writer
 * needs the store's single write connection (deadlock). Close the
 * audit_log before its store (audit_close, then store_close) and after
 * the last thread that appends has stopped.
 *
 * Ownership: every string argument is borrowed for the call; audit_query
 * appends new references to the caller's json array.
 */
#ifndef CONCORD_AUDIT_H
#define CONCORD_AUDIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"
#include "../store/store.h"

typedef struct audit_event { /* all strings borrowed; NULL = "" */
    int64_t at_usec;         /* 0 = now */
    const char *user, *role, *org;
    /* read|vread|search|history|create|update|delete|export|operation|
     * login|logout|login-failed|break-glass|consent|admin */
    const char *action;
    /* FHIR AuditEvent.outcome: "0" success, "4" minor failure (refused,
     * denied), "8" serious failure */
    const char *outcome;
    int status; /* HTTP status or 0 */
    const char *rtype, *rid;
    int64_t pkey; /* patient key, 0 if none */
    const char *patient_id;
    /* v3 PurposeOfUse: TREAT, ETREAT (break-glass), HOPERAT, PATRQT
     * (the patient's own), HSYSADMIN ... */
    const char *purpose;
    const char *reason;  /* why refused, the break-glass reason, or detail (first 2000 bytes kept) */
    const char *source;  /* remote address or "cli" */
    const char *request; /* e.g. "GET Patient/123?_count=1" (first 2000 bytes kept) */
} audit_event;
/* Strings are stored as valid UTF-8 (invalid bytes become '?'); short
 * fields keep their first 256 bytes, reason and request their first 2000. */

typedef struct audit_log audit_log;

typedef struct audit_config {
    const char *key_path; /* the chain's key: 32 bytes, created (mode 0600) if missing */
    int flush_ms;         /* wait=0 events are committed within this (default 100) */
    int sync_reads;       /* 1: every append waits as if wait=1 */
} audit_config;

/* Load (or create) the key, check it is the key the log was written with
 * (refuses to start otherwise: a new key would make the chain
 * unverifiable), and start the writer thread. */
status audit_open(store *s, const audit_config *cfg, audit_log **out, err *e);
/* Append an event (copied). wait=1: return once it is durably committed;
 * wait=0: return at once (unless cfg->sync_reads). Blocks while the queue
 * holds AUDIT_QUEUE_MAX uncommitted events. */
status audit_append(audit_log *a, const audit_event *ev, int wait, err *e);
#define AUDIT_QUEUE_MAX 65536
/* Wait until everything appended so far is durable, or until a write
 * attempt made after this call fails (the events stay queued). */
void audit_flush(audit_log *a);
/* Flush, stop the writer thread, free. NULL is fine. */
void audit_close(audit_log *a);

/* The key's default location for a database: $CONCORD_AUDIT_KEY if set;
 * else "X.audit-key" for a SQLite file X; else "var/audit.key". */
void audit_default_key_path(const char *db_url, char *out, size_t n);

/* Verify the whole chain with the key: recompute every hash, check seq is
 * contiguous from 1 and every prev names the row before, and that the
 * anchor names the last row (tail truncation). Returns ST_OK when the
 * check ran (out->ok says whether the log is intact); an error status
 * when it could not run (no key file, database error). */
typedef struct audit_verify_result {
    int64_t rows; /* rows checked */
    int64_t
        first_bad_seq; /* where the log is broken (0 when ok, or when the key is wrong and no row was read) */
    int ok;
    char problem[256]; /* what is wrong, "" when ok */
    char head[65];     /* hash of the last row checked (64 zeros for an empty log) */
} audit_verify_result;
status audit_verify(store *s, const char *key_path, audit_verify_result *out, err *e);
/* The stored hash of row `seq` (ST_NOT_FOUND if there is none): with a
 * verified chain, checks a head recorded elsewhere earlier (a witness)
 * against tail truncation by someone who also rewrote the anchor. */
status audit_row_hash(store *s, int64_t seq, char out[65], err *e);

/* Query for privacy officers and patients, newest first. Every filter may
 * be 0/NULL (no filter), except that pkeys != NULL with npkeys == 0
 * matches nothing (a patient with no records has no accesses to see).
 * since/until: since <= at <= until (usec). limit 0 = 100 (at most 10000).
 * Appends FHIR R4 AuditEvent objects to `entries_out`; *total (may be
 * NULL) receives the number of matching events. */
typedef struct audit_filter {
    const int64_t *pkeys; /* a person's record may span several patient keys */
    int npkeys;           /* at most 1000 */
    const char *user;
    const char *action;
    const char *outcome;
    int64_t since_usec, until_usec;
    int limit, offset;
} audit_filter;
status audit_query(store *s, const audit_filter *f, json_t *entries_out, int64_t *total, err *e);

#endif
