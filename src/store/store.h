/*
 * store.h — concord's record store: versioned FHIR resources with typed
 * search indexes, behind one interface with two backends (SQLite, the
 * embedded default; PostgreSQL over libpq). See docs/storage.md for the
 * schema, the patient key, and how it distributes with Citus.
 *
 * Durability: every write function runs inside a store_txn; nothing is
 * visible or acknowledged until store_commit returns ST_OK, and store_commit
 * returns only after the backend has made the transaction durable (SQLite WAL
 * with synchronous=FULL; PostgreSQL synchronous_commit).
 *
 * Threads: a `store` is shared by all threads. Each thread uses its own
 * backend connection, opened lazily and kept for the thread's life (the
 * HTTP server's worker threads are long-lived). A store_txn belongs to the
 * thread that began it.
 *
 * Ownership: JSON bodies returned in `buf`s are copies owned by the caller.
 * Strings in store_meta point into memory owned by the struct's arena or are
 * copied into fixed fields, as noted.
 */
#ifndef CONCORD_STORE_H
#define CONCORD_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "../base/arena.h"
#include "../base/buf.h"
#include "../base/status.h"
#include "../fhir/search.h"

typedef struct store store;
typedef struct store_txn store_txn;

/* What identifies one version of one resource. */
typedef struct store_meta {
    char type[64];
    char id[72];
    int64_t version;
    int64_t updated_usec; /* lastUpdated, microseconds since epoch */
    int deleted;
    /* store_read only: what access decisions need */
    int64_t pkey;  /* patient key, 0 outside any patient's compartment */
    char org[16];  /* label: recording organisation (ODS) */
    unsigned sens; /* label: sensitive categories */
} store_meta;

/* Default database location when no --db is given. */
#define STORE_DEFAULT_DB "var/concord.db"

/* Open a store. `url` is a file path (SQLite) or a postgresql:// URL. Runs
 * pending migrations unless `migrate` is 0 (then fails with ST_IO if the
 * schema is behind). */
status store_open(const char *url, int migrate, store **out, err *e);
void store_close(store *s);
const char *store_backend(const store *s); /* "sqlite" or "postgresql" */
/* Apply forward migrations; *applied = how many ran. */
status store_migrate(store *s, int *applied, int *version, err *e);
int store_schema_version(void); /* the version this build expects */

/* ---- writes ---------------------------------------------------------- */
status store_begin(store *s, store_txn **tx, err *e);
/* The same, for a transaction that writes nothing an access decision reads
 * (the access log, sign-in bookkeeping): its commit keeps the cached
 * decisions of store_scope_check. Every other commit invalidates them. */
status store_begin_keeping_access(store *s, store_txn **tx, err *e);
/* A transaction on the access log's tables only (audit_log, audit_anchor),
 * keeping access like the above. On SQLite it runs on the log's own file
 * and connection, so it neither waits for nor holds up store_begin's
 * writers; elsewhere it is store_begin_keeping_access. */
status store_begin_audit(store *s, store_txn **tx, err *e);
status store_commit(store_txn *tx, err *e); /* frees tx */
void store_rollback(store_txn *tx);         /* frees tx */

/* Write a new version of `res` (validated JSON; its resourceType is the
 * type). The store sets id (if `id` is NULL a new one is generated),
 * meta.versionId and meta.lastUpdated in `res` itself, stores it, and fills
 * the search indexes in the same transaction.
 *   if_match   > 0: fail with ST_PRECONDITION unless the current version is it
 *   create_only: fail with ST_CONFLICT if the resource exists (and is not
 *                deleted)
 * `*created` is set to 1 when this made version 1 (or revived a deleted
 * resource), 0 for an update. `body` (may be NULL) receives the stored JSON
 * text, malloc'd, for the caller to free. */
status store_put(store_txn *tx, json_t *res, const char *id, int64_t if_match, int create_only,
                 store_meta *out, int *created, char **body, err *e);
/* Creates, prepared outside the transaction: store_prepare stamps `res`
 * as version 1 (id given, or a new one), serialises it and extracts its
 * index rows — CPU work that then runs in parallel across requests instead
 * of under the write lock. store_put_prepared writes it inside a
 * transaction; if the id turns out to exist already it falls back to a
 * normal put (a new version), or to ST_CONFLICT with create_only. `res`
 * must stay alive and unmodified until store_put_prepared; the prep is the
 * caller's to free (after the transaction ends). */
typedef struct store_prep store_prep;
status store_prepare(json_t *res, const char *id, store_prep **out, err *e);
const char *store_prep_id(const store_prep *p);
status store_put_prepared(store_txn *tx, store_prep *p, int create_only, store_meta *out, int *created,
                          char **body, err *e);
void store_prep_free(store_prep *p);

/* Delete (a new, deleted version). Deleting a missing or already deleted
 * resource succeeds with out->version = 0 (nothing written). */
status store_delete(store_txn *tx, const char *type, const char *id, store_meta *out, err *e);

/* A new logical id (a random UUID, 36 chars + NUL). */
void store_new_id(char out[37]);

/* Savepoints inside a write transaction: one level, so that a batch of
 * independent items (messages of a group commit) can undo one item and
 * keep the others. */
status store_savepoint(store_txn *tx, err *e);
status store_savepoint_release(store_txn *tx, err *e);
void store_savepoint_rollback(store_txn *tx);

/* ---- labels ----------------------------------------------------------- */
/* Every stored resource carries two labels the access predicates read:
 * the ODS code of the organisation that recorded it and its sensitive
 * categories (bits, see src/access/access.h). They are computed when a
 * version is written, by the labeller the access module installs (once,
 * before the store is used; process-wide) or, without one, by
 * store_label_default: the ODS code in meta.tag, nothing sensitive. */
#define STORE_ODS_SYSTEM "https://fhir.nhs.uk/Id/ods-organization-code"
typedef struct store_label {
    char org[16];
    unsigned sens;
} store_label;
typedef void (*store_labeller)(void *ctx, const char *type, json_t *res, store_label *out);
void store_set_labeller(store_labeller fn, void *ctx);
void store_label_default(const char *type, json_t *res, store_label *out);
/* The labels the store would give `res` now (the installed labeller): for
 * earlier versions, whose rows keep no labels of their own (history). */
void store_label_of(const char *type, json_t *res, store_label *out);

/* ---- access scope (store_scope.c) ------------------------------------- */
/* What one user may see, as the store's queries evaluate it: searches,
 * history and $everything add it to their WHERE clause, so a result (and
 * its count) never includes a record the user may not see. Built by the
 * access module (src/access/policy.c) from the principal; the store only
 * evaluates it. A row is visible when
 *   - it is outside every patient's compartment (pkey 0), or
 *   - (role patient) it belongs to their own record, or
 *   - the user has a legitimate relationship with the person (a row of
 *     acc_rel for any of the person's patient records naming one of the
 *     user's organisations or the user's practitioner id) or a live
 *     break-glass grant for them,
 *   and its sensitive categories are allowed (or it was recorded by the
 *   user's own organisation), and the person has not objected to sharing
 *   (or it was recorded by the user's own organisation, or break-glass).
 * Strings are borrowed. */
#define STORE_SCOPE_MAX_ORGS 16
typedef struct store_scope {
    int restricted;                         /* 0: no restriction (internal jobs, the local CLI) */
    int patient_data;                       /* 0: nothing with a patient key (aggregate-only roles) */
    const char *orgs[STORE_SCOPE_MAX_ORGS]; /* the user's organisation and those part of it */
    int norgs;
    const char *practitioner; /* the user's Practitioner id, or NULL */
    int64_t user_key;         /* whose break-glass grants count */
    int64_t now_usec;
    const int64_t *self_pkeys; /* role patient: the patient keys of their own record */
    int nself;
    int self_only;        /* 1: role patient (only self_pkeys) */
    unsigned sens_denied; /* sensitive categories hidden unless recorded by an own organisation */
} store_scope;

typedef enum store_why {
    STORE_VISIBLE = 0,
    STORE_HIDDEN_NO_RELATIONSHIP, /* no legitimate relationship (break-glass possible) */
    STORE_HIDDEN_CONSENT,         /* the person objected to sharing */
    STORE_HIDDEN_SENSITIVE,       /* a sensitive category the role may not see */
    STORE_HIDDEN_NOT_SELF,        /* role patient: someone else's record */
    STORE_HIDDEN_NO_PATIENT_DATA, /* the role sees no patient-level data */
} store_why;

/* May `sc` see a resource with these labels (from store_read's meta)?
 * *via_glass = 1 when only a break-glass grant makes it visible. */
status store_scope_check(store *s, const store_scope *sc, int64_t pkey, const char *org, unsigned sens,
                         store_why *why, int *via_glass, err *e);
/* The patient key of a patient id (0 if it has none). */
status store_patient_key_of(store *s, const char *patient_id, int64_t *pkey, err *e);
/* The patient keys of every source record of the same person as `pkey`
 * (itself included), through the registry's links. */
status store_person_pkeys(store *s, int64_t pkey, int64_t *out, int max, int *n, err *e);

/* SQL for other modules' queries over patient-keyed tables: appends a
 * condition that `pkey_expr` is a patient the scope may see (relationship
 * or break-glass, or self), with '?' placeholders whose values are pushed
 * on `b` in order. */
typedef struct store_bind {
    char kind; /* 'i' or 't' */
    int64_t i;
    const char *t;
} store_bind;
typedef struct store_binds {
    store_bind v[128];
    int n;
} store_binds;
void store_scope_pkey_sql(const store_scope *sc, const char *pkey_expr, buf *sql, store_binds *b);
/* The whole row condition for a resource row alias (its pkey, org, sens). */
void store_scope_row_sql(const store_scope *sc, const char *alias, buf *sql, store_binds *b);

/* ---- write hooks ------------------------------------------------------ */
/* Components that keep derived data in step with the records (the patient
 * registry, risk facts) register a hook; it runs inside the write
 * transaction after each version is stored or deleted, on the writing
 * thread, so what it writes commits or rolls back with the record. A hook
 * that fails fails the write. Register before the store is used by other
 * threads; hooks are called in registration order. */
typedef struct store_write_event {
    const char *type, *id;
    int64_t version;
    int deleted;        /* a delete: res and body are NULL */
    int64_t pkey, rkey; /* patient key (0 if none) and resource key */
    json_t *res;        /* the resource as stored (meta stamped), may be NULL */
    const char *body;   /* its stored JSON text */
} store_write_event;
typedef status (*store_write_hook)(void *ctx, store_txn *tx, const store_write_event *ev, err *e);
#define STORE_MAX_HOOKS 8
status store_add_write_hook(store *s, const char *type, store_write_hook fn, void *ctx,
                            err *e); /* type NULL = all */
/* The store a transaction belongs to (for hooks that run SQL through it). */
store *store_txn_store(store_txn *tx);
/* The transaction's writes come from a person signed in (a clinician, an
 * administrator), not from a machine feed: a relationship they establish is
 * that person's own claim (src/access/rel.c, docs/access.md). */
void store_txn_set_user_claim(store_txn *tx, int on);
int store_txn_user_claim(const store_txn *tx);

/* ---- ingest messages (store_message.c) ------------------------------- */
/* A message or record as ingest received it. Strings are borrowed on
 * insert; on read they point into the store_message_list's memory. */
typedef struct store_message {
    int64_t key;
    int64_t pkey; /* patient key of the message's patient, 0 if none */
    int64_t received_usec;
    const char *channel;      /* "mllp", "file" */
    const char *source;       /* peer address, or file:line */
    const char *sender;       /* HL7: sending application^facility; file: the file */
    const char *control_id;   /* HL7 MSH-10; file: line number */
    const char *message_type; /* "ADT^A01", "ndjson", ... */
    const char *status;       /* "stored", "quarantined", "replayed", "discarded" */
    const char *ack;          /* the acknowledgement sent, if any */
    const char *reason;       /* why quarantined */
    const char *location;     /* where in the message the fault is */
    const char *body;
    size_t body_len;
} store_message;

typedef struct store_message_list {
    store_message *v;
    size_t n;
    arena a;
} store_message_list;
void store_message_list_free(store_message_list *l);

/* The ACK already sent for a stored message from `sender` with
 * `control_id` (duplicate delivery): *found = 1 and the ACK appended. */
status store_message_delivered(store_txn *tx, const char *sender, const char *control_id, buf *ack,
                               int *found, err *e);
status store_message_insert(store_txn *tx, const store_message *m, int64_t *key, err *e);
/* List by status (NULL = all), newest first. */
status store_message_list_by(store *s, const char *status, int limit, int offset, int with_body,
                             store_message_list *out, err *e);
status store_message_get(store *s, int64_t key, store_message_list *out, err *e);
/* Change a message's status (quarantined -> replayed/discarded). */
status store_message_set_status(store *s, int64_t key, const char *from, const char *to, err *e);
/* Patient key for a patient id inside a write transaction (assigned if new). */
status store_txn_patient_key(store_txn *tx, const char *patient_id, int64_t *pkey, err *e);

/* ---- import jobs (store_import.c) ------------------------------------ */
/* A file import (concord import, $import): the job and, per file, how far
 * it is durably imported. Strings point into the list's arena. */
typedef struct store_import_file {
    int64_t job;
    int file_no;
    const char *path, *fingerprint, *format, *status, *message;
    int64_t size, bytes_done, lines_done, stored, quarantined;
} store_import_file;

typedef struct store_import_job {
    int64_t key, created_usec, updated_usec;
    const char *status;  /* queued | running | done | failed | cancelled */
    const char *origin;  /* cli | api */
    const char *request; /* JSON: what was asked */
    const char *message;
    store_import_file *files;
    size_t nfiles;
} store_import_job;

typedef struct store_import_list {
    store_import_job *v;
    size_t n;
    arena a;
} store_import_list;
void store_import_list_free(store_import_list *l);

status store_import_job_create(store *s, const char *origin, const char *status, const char *request,
                               int64_t *job, err *e);
status store_import_job_set(store *s, int64_t job, const char *status, const char *message, err *e);
/* One job with its files (out->n == 1), or ST_NOT_FOUND. */
status store_import_job_get(store *s, int64_t job, store_import_list *out, err *e);
/* Jobs in a status (NULL = all), oldest first, with their files. */
status store_import_job_list(store *s, const char *status, int limit, store_import_list *out, err *e);
/* The newest file record with this fingerprint (*found = 0 if none);
 * strings in out->a. */
status store_import_file_find(store *s, const char *fingerprint, store_import_list *out, store_import_file *f,
                              int *found, err *e);
status store_import_file_add(store *s, const store_import_file *f, err *e);
/* Progress of one file, inside the transaction that stored what it counts. */
status store_import_checkpoint(store_txn *tx, int64_t job, int file_no, int64_t bytes_done,
                               int64_t lines_done, int64_t stored, int64_t quarantined, err *e);
status store_import_file_set(store *s, int64_t job, int file_no, const char *status, const char *message,
                             err *e);
/* The same inside a transaction (many files, one commit). */
status store_import_file_add_tx(store_txn *tx, const store_import_file *f, err *e);
status store_import_file_set_tx(store_txn *tx, int64_t job, int file_no, const char *status,
                                const char *message, err *e);

/* ---- reads ----------------------------------------------------------- */
/* Read the current version (version == 0) or a given version. Deleted:
 * ST_GONE with meta filled. Missing: ST_NOT_FOUND. Body appended to `body`. */
status store_read(store *s, const char *type, const char *id, int64_t version, buf *body, store_meta *meta,
                  err *e);
/* Same, inside a write transaction (sees its own uncommitted writes). */
status store_txn_read(store_txn *tx, const char *type, const char *id, buf *body, store_meta *meta, err *e);

/* One item of a result: a version of a resource. `body` is NULL for a
 * deleted version. */
typedef struct store_item {
    store_meta meta;
    char *body;
    size_t body_len;
    int include; /* 1 for _include/_revinclude results */
} store_item;

typedef struct store_items {
    store_item *v;
    size_t n, cap;
    int64_t total; /* -1 when not computed */
    int more;      /* search: there are results after this page */
} store_items;
void store_items_free(store_items *it);

/* History: of one resource (type and id set), of a type (id NULL), or of
 * the whole server (type NULL). Newest first; `since_usec` (0 = all);
 * paging by count/offset. */
status store_history(store *s, const char *type, const char *id, int64_t since_usec, int count, int offset,
                     store_items *out, err *e);

/* Search (see search.h for the parsed query). Fills out->total when the
 * query asks for it (_summary=count, _total=accurate) or when the page is
 * the last one. */
status store_search(store *s, const search_query *q, store_items *out, err *e);
/* Same, inside a write transaction (conditional create/update). */
status store_txn_search(store_txn *tx, const search_query *q, store_items *out, err *e);

/* Patient/$everything: the patient, every resource in their compartment,
 * and the non-patient resources those refer to. */
status store_everything(store *s, const char *patient_id, store_items *out, err *e);
/* The same within an access scope (NULL = unrestricted): the caller has
 * checked that the patient is visible; each resource is then subject to
 * the scope's sensitivity and consent conditions. */
status store_everything_scoped(store *s, const store_scope *sc, const char *patient_id, store_items *out,
                               err *e);

/* Counts of current (not deleted) resources per type, for the landing page. */
typedef struct store_count {
    char type[64];
    int64_t count;
} store_count;
status store_counts(store *s, store_count **out, size_t *n, err *e);

/* Size of the database in bytes (file size or pg_database_size). */
status store_size(store *s, int64_t *bytes, err *e);

#endif
