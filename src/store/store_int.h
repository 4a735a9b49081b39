/*
 * store_int.h — what store.c and the backends share: the small SQL driver
 * interface each backend implements (store_sqlite.c, store_pg.c), the
 * store handle, and the per-thread connection.
 *
 * SQL is written once, with '?' placeholders; the PostgreSQL driver numbers
 * them ($1, $2, ...). Dialect differences are confined to the schema text
 * (schema.c) and to a few flags on the driver (for_update).
 *
 * Statement caching: prepare(..., cache=1) keeps the prepared statement on
 * the connection keyed by the SQL text's address, so callers must pass
 * string literals (static storage) when caching; dynamic SQL (search) is
 * prepared with cache=0 and finalized by db_done.
 */
#ifndef CONCORD_STORE_INT_H
#define CONCORD_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "store.h"

typedef struct db db;
typedef struct db_stmt db_stmt;

typedef struct db_driver {
    const char *name;
    const char *for_update;   /* suffix that locks selected rows in a write txn */
    int serial_writes;        /* 1: one writer at a time, through one shared connection (SQLite) */
    const char *writer_setup; /* SQL run once on that shared write connection, or NULL */
    /* then this, or NULL: SQLite moves WAL checkpoints off that connection
     * to a thread of their own (store_sqlite.c) */
    status (*writer_init)(db *d, err *e);
    const char *maintenance; /* SQL run on the writer every STORE_MAINTENANCE_COMMITS commits, or NULL */
    status (*connect)(store *s, db **out, err *e);
    /* the access log's writer connection, or NULL: store_begin_audit then
     * writes through store_begin (PostgreSQL keeps the log in the same
     * database; its writers do not block each other) */
    status (*connect_audit)(store *s, db **out, err *e);
    void (*disconnect)(db *d);
    status (*exec)(db *d, const char *sql, err *e);
    status (*prepare)(db *d, const char *sql, int cache, db_stmt **out, err *e);
    void (*bind_int)(db_stmt *st, int idx, int64_t v);
    void (*bind_text)(db_stmt *st, int idx, const char *s, int n);
    /* the same, borrowing s until the statement is stepped (no copy);
     * NULL: use bind_text */
    void (*bind_text_ref)(db_stmt *st, int idx, const char *s, int n);
    void (*bind_double)(db_stmt *st, int idx, double v);
    void (*bind_null)(db_stmt *st, int idx);
    /* 1 = a row is ready, 0 = done, -1 = error (e filled) */
    int (*step)(db_stmt *st, err *e);
    int64_t (*col_int)(db_stmt *st, int col);
    double (*col_double)(db_stmt *st, int col);
    const char *(*col_text)(db_stmt *st, int col, size_t *len); /* NULL for SQL NULL */
    void (*done)(db_stmt *st);
    status (*begin)(db *d, err *e);
    status (*commit)(db *d, err *e);
    void (*rollback)(db *d);
    status (*size)(db *d, int64_t *bytes, err *e);
    /* A number that changes whenever another connection (another process's
     * too) has committed to the database file, as of this connection's
     * latest read: for caches of what the database says (store_scope.c).
     * NULL when the backend has none (PostgreSQL). */
    int (*data_version)(db *d, uint64_t *v);
} db_driver;

#define STORE_MAINTENANCE_COMMITS 500

/* SQLite keeps the access log (audit_log, audit_anchor) in its own file,
 * the database file's name + this, attached to every reading connection as
 * schema `audit`. Its commits then leave the store's file alone: in WAL
 * mode every commit to a file makes each other connection discard its
 * page cache of that file, and the log commits several times a second
 * under read load. */
#define SQLITE_AUDIT_SUFFIX ".audit"

extern const db_driver db_sqlite_driver;
extern const db_driver db_pg_driver;

typedef struct db_conn_link db_conn_link;

struct store {
    const db_driver *drv;
    char *url;
    pthread_key_t conn_key;
    pthread_mutex_t lock;       /* guards conns list */
    pthread_mutex_t write_lock; /* serialises write txns when drv->serial_writes */
    db_conn_link *conns;
    db *writer;                 /* the one write connection when drv->serial_writes */
    unsigned long commits;      /* on the writer, under write_lock */
    pthread_mutex_t audit_lock; /* serialises access-log txns on audit_writer */
    db *audit_writer;           /* drv->connect_audit's connection, opened on first use */
    int *param_ids;             /* database id of each fhir_search_params[i], 0 if none */
    char *everything_refs_sql;  /* built at open from the compartment table */
    struct {
        const char *type; /* NULL: every type */
        store_write_hook fn;
        void *ctx;
    } hooks[STORE_MAX_HOOKS];
    int nhooks;
    /* Bumped after every commit that may change an access decision (all but
     * store_begin_keeping_access transactions): cached decisions older
     * than it are recomputed (store_scope.c). */
    _Atomic uint64_t access_gen;
    _Atomic int64_t access_epoch; /* acc_epoch.n as last read (SQLite; store_scope.c) */
};

/* A connection as seen by store.c: the driver's handle plus its owner. */
struct db_conn_link {
    db *d;
    store *s;
    db_conn_link *next;
};

struct store_txn {
    store *s;
    db *d;
    int64_t now_usec;
    arena a;           /* per-transaction scratch: index rows etc. */
    char last_pid[72]; /* the last patient key looked up in this txn */
    int64_t last_pkey;
    int keeps_access; /* store_begin_keeping_access: commits leave access_gen alone */
    int audit;        /* store_begin_audit on audit_writer: holds audit_lock */
    int user_claim;   /* store_txn_set_user_claim */
};

/* One block of the access log (src/access/auditblock.h has its format):
 * events first..last, their text, the last one's hash, and what the
 * indexes need — each event's patient key (0: none) and user name, in any
 * order and repeated (sorted and deduplicated in place). The index rows
 * are keyed by the group of 2^STORE_AUDIT_GROUP_BITS events the block
 * starts in, so that each commit rewrites the few pages of the current
 * group's part of the index rather than one page per patient all over it.
 * 4,096: with 65,536 a commit of a thousand reads of random patients
 * dirtied hundreds of index pages (a third of the writer's time went on
 * that, bench/access.py); a query walks the groups, one probe each, about
 * 250 per million events (src/access/audit.c). */
#define STORE_AUDIT_GROUP_BITS 12
typedef struct store_str {
    const char *p;
    size_t n;
} store_str;
typedef struct store_audit_block {
    int64_t first, last, at_min, at_max;
    const char *hash; /* 64 hex digits */
    const char *text;
    size_t ntext;
    int64_t *pkeys;
    size_t npkeys;
    store_str *users;
    size_t nusers;
} store_audit_block;
status store_audit_put_block(const db_driver *drv, db *d, const store_audit_block *b, err *e);
/* Step a statement to its end and finish it: ST_OK, or the step's error. */
status store_step_done(const db_driver *drv, db_stmt *st, err *e);

/* This thread's connection to `s`, opened on first use. */
db *store_db(store *s, err *e);

/* Schema (schema.c): run migrations on `d`. */
status schema_migrate(store *s, db *d, int *applied, int *version, err *e);
int schema_current_version(store *s, db *d);

/* Search SQL (store_search.c). */
status store_search_on(store *s, db *d, const search_query *q, store_items *out, err *e);

/* Helpers for reading rows into items (store.c). Result rows start with
 * (rtype, id, version, updated, deleted, body). */
void store_row_meta(const db_driver *drv, db_stmt *st, store_meta *m);
void store_items_push(store_items *it, const store_meta *m, const char *body, size_t len, int include);
int64_t store_param_id(store *s, const fhir_search_param *sp);
/* Patient key of `patient_id` (0 if none known); with create=1 inside a
 * write txn, assigns one. */
status store_patient_key(store *s, db *d, const char *patient_id, int create, int64_t *pkey, err *e);

#endif
