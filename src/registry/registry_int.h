/*
 * registry_int.h — what the registry's files share (registry.c: the write
 * hook, records, persons and golden records; registry_batch.c: train and
 * run; registry_review.c: review, merge, unmerge, history; registry_api.c:
 * the REST routes and $match). Not for other modules.
 *
 * SQL goes through the store's driver interface (store_int.h), so it is
 * written once for SQLite and PostgreSQL with '?' placeholders. Statements
 * passed with cache=1 must be string literals (the cache is keyed by the
 * text's address).
 */
#ifndef CONCORD_REGISTRY_INT_H
#define CONCORD_REGISTRY_INT_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "../store/store_int.h"
#include "block.h"
#include "fs.h"
#include "registry.h"

/* Pseudo-count of the term-frequency estimate (§8.4): a value's frequency
 * is (count + TF_ALPHA * u_exact) / (total + TF_ALPHA), so in a registry of
 * a few records names weigh what the model says on average, and in a large
 * one what their own frequency says. */
#define REG_TF_ALPHA 100.0
/* A block of more candidates than this is skipped (as block_pairs does). */
#define REG_MAX_BLOCK 1000
/* The real-time hook's bound: a block key shared by more earlier records
 * than this (placeholder demographics, a flood of identical test records)
 * is not used to find candidates, so one write costs at most a few hundred
 * comparisons per key, never a scan that grows with the registry. The
 * other keys and the batch run (REG_MAX_BLOCK) still see such records. */
#define REG_MAX_LIVE_BLOCK 200

#define REG_LAT_RING 65536 /* hook durations kept for registry_stats */

struct registry {
    store *s;
    pthread_mutex_t lock;          /* guards the cached model and the hook timings */
    uint32_t lat_us[REG_LAT_RING]; /* the last hook durations, microseconds (ring) */
    uint64_t nlat;
    double sum_us;
    fs_model model;
    int64_t model_version; /* -1: not loaded yet */
    const block_rule *rules;
    size_t nrules;
};

/* A database handle for registry SQL: inside a write transaction (tx set)
 * or on this thread's read connection. */
typedef struct rdb {
    store *s;
    const db_driver *drv;
    db *d;
    store_txn *tx; /* NULL outside a transaction */
} rdb;

void rdb_of_tx(rdb *c, store_txn *tx);
status rdb_read(rdb *c, store *s, err *e);

/* Prepare `sql` (cached), bind the arguments described by `types`, one
 * letter per argument: 'i' int64_t, 't' const char * (NULL binds NULL),
 * 'd' double. The caller steps and calls c->drv->done(*st). */
status rq_prep(rdb *c, const char *sql, db_stmt **st, err *e, const char *types, ...);
/* The same, run to completion, rows discarded. */
status rq_exec(rdb *c, const char *sql, err *e, const char *types, ...);
/* The first column of the first row as an integer (*found = 0 if none). */
status rq_int(rdb *c, const char *sql, int64_t *out, int *found, err *e, const char *types, ...);
/* A column's text copied into out (NUL-terminated, truncated); "" for NULL. */
void rq_col_copy(rdb *c, db_stmt *st, int col, char *out, size_t cap);

int64_t reg_now_usec(void);
/* qsort that accepts an empty (possibly NULL) array. */
static inline void reg_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
    if (n > 1) qsort(base, n, size, cmp);
}
/* Serialise registry writes on PostgreSQL (a transaction-scoped advisory
 * lock); nothing on SQLite, whose writers are serial anyway. */
status reg_lock(rdb *c, err *e);

/* ---- source records ------------------------------------------------------- */

/* A source Patient's demographics as written (the registry keeps the text
 * and normalises again when it compares, so a change to the normalisers
 * needs no migration). Longer values are truncated. */
typedef struct reg_raw {
    char nhs[24], family[96], given[128], birth_date[32], gender[16], postcode[24], line[128];
    char local[256];  /* up to REG_MAX_LOCAL_IDS "system|value" separated by '\t' */
    char source[128]; /* meta.source */
} reg_raw;

/* One row of reg_source. */
typedef struct reg_src {
    int64_t src_key, person_key; /* person_key 0: none (deleted) */
    char patient_id[72];
    char decision[16];
    double weight;
    int64_t updated, decided_at;
    char decided_by[64];
    reg_raw raw;
} reg_src;

#define REG_SRC_COLS                                                                                         \
    "src_key, COALESCE(person_key, 0), patient_id, decision, COALESCE(weight, 0), updated, decided_at, "     \
    "decided_by, nhs, family, given, birth_date, gender, postcode, address_line, local_ids, source"
void reg_src_read(rdb *c, db_stmt *st, reg_src *out); /* a row selected with REG_SRC_COLS */

/* Extract the demographics from a FHIR Patient; *merge_into receives the
 * id of the Patient named by a `link` of type replaced-by (HL7 A40), or "". */
void reg_raw_from_patient(json_t *p, reg_raw *raw, char merge_into[72]);
void reg_raw_to_person(const reg_raw *raw, reg_person *p);
int reg_raw_equal(const reg_raw *a, const reg_raw *b);

/* Block keys of a record: 64-bit hashes (rule number included), 0 = none. */
size_t reg_block_hashes(const registry *r, const reg_person *p, int64_t *out);

/* The term-frequency callback over fixed counts (the incoming record's
 * family and given names; real time) or over an fs_tf_table (batch). */
typedef struct reg_tf_ctx {
    const fs_model *m;
    double count[FS_NFIELDS], total[FS_NFIELDS]; /* real time: counts of the incoming record's values */
    fs_tf_table *table;                          /* batch: counts of every value */
} reg_tf_ctx;
double reg_tf_freq(void *arg, fs_field field, const char *value, size_t n);

/* 1 if the pair's NHS number is trusted for a deterministic link: the same
 * valid number, the same full date of birth, and a family or given name that
 * agrees at least phonetically (§8.2). */
int reg_trusted_nhs(const reg_person *a, const reg_person *b, const fs_vector *v);

/* ---- persons -------------------------------------------------------------- */

status reg_person_new(rdb *c, int64_t *person_key, char person_id[72], err *e);
status reg_person_id(rdb *c, int64_t person_key, char person_id[72], err *e);
/* Resolve "Person/ID", "Patient/ID" or a bare id to a live person. */
status reg_person_resolve(rdb *c, const char *name, int64_t *person_key, err *e);
/* Recompute the golden record of a person and write its Person resource if
 * it changed; a person with no records left is retired (into `retired_into`
 * when non-zero, else its Person is deleted). */
status reg_person_refresh(rdb *c, int64_t person_key, int64_t retired_into, err *e);

/* Load the model in use (cached by version). */
status reg_model_current(registry *r, rdb *c, fs_model *m, int64_t *version, err *e);

/* Record a history event; *event may be NULL. */
status reg_event_add(rdb *c, const char *who, const char *action, int64_t person, int64_t other, int64_t src,
                     int64_t review, const char *detail, const char *undo, int64_t *event, err *e);

/* Scoring one record against stored candidates (real time and $match). */
typedef struct reg_cand {
    reg_src src;
    reg_person p;
    fs_vector v;
    double w;
    double contrib[FS_NFIELDS];
    int trusted;
    int apart; /* a recorded decision keeps it apart from the record */
} reg_cand;

/* Candidates of `p` (excluding src_key `self`), scored. *out is malloc'd
 * (caller frees). `tf` has the record's value counts. */
status reg_candidates(registry *r, rdb *c, const fs_model *m, const reg_person *p, int64_t self,
                      reg_tf_ctx *tf, reg_cand **out, size_t *n, err *e);
/* The term-frequency counts of `p`'s values (read-only; plus `add` for a
 * record about to be counted). */
status reg_tf_lookup(rdb *c, const fs_model *m, const reg_person *p, int add, reg_tf_ctx *tf, err *e);

/* Thread-local: set while the registry itself writes through the store, so
 * its hook ignores those writes (it never writes Patients, but a guard is
 * cheaper than an argument). */
extern _Thread_local int reg_writing;

#endif
