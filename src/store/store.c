/*
 * store.c — the record store's operations, written once over the SQL driver
 * interface (store_int.h): open and migrate, per-thread connections, write
 * transactions (put, delete), reads (read, vread, history, $everything) and
 * the bookkeeping of search parameter ids and patient keys.
 *
 * Invariants:
 *  - `resource` holds exactly one row per (rtype, id): the current version.
 *    Every earlier version is in `resource_history`. A delete is a new
 *    version with deleted = 1 and body NULL. Versions count up from 1.
 *  - The stored body is the exact JSON served: id, meta.versionId and
 *    meta.lastUpdated are written into it before it is stored.
 *  - Index rows always describe the current, non-deleted version and are
 *    replaced in the same transaction as the resource row.
 *  - pkey is the patient key of the resource's compartment patient (see
 *    fhir_index_patient_id), 0 when it belongs to no patient.
 */
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "../fhir/index.h"
#include "../fhir/json.h"
#include "../fhir/model.h"
#include "store_int.h"

/* ---- connections ----------------------------------------------------- */

static void conn_release(void *p) {
    db_conn_link *l = p;
    store *s = l->s;
    pthread_mutex_lock(&s->lock);
    for (db_conn_link **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    s->drv->disconnect(l->d);
    free(l);
}

db *store_db(store *s, err *e) {
    db_conn_link *l = pthread_getspecific(s->conn_key);
    if (l) return l->d;
    db *d = NULL;
    if (s->drv->connect(s, &d, e) != ST_OK) return NULL;
    l = calloc(1, sizeof *l);
    if (!l) {
        s->drv->disconnect(d);
        err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        return NULL;
    }
    l->d = d;
    l->s = s;
    pthread_mutex_lock(&s->lock);
    l->next = s->conns;
    s->conns = l;
    pthread_mutex_unlock(&s->lock);
    pthread_setspecific(s->conn_key, l);
    return d;
}

const char *store_backend(const store *s) {
    return s->drv->name;
}

/* ---- search parameter ids -------------------------------------------- */

static int param_indexed(const fhir_search_param *sp) {
    return sp->path != NULL && sp->type != SP_COMPOSITE && sp->type != SP_SPECIAL;
}

static status load_param_ids(store *s, db *d, err *e) {
    const db_driver *drv = s->drv;
    status rc = ST_OK;
    db_stmt *st = NULL;
    int missing = 0;
    s->param_ids = calloc(fhir_n_search_params + 1, sizeof(int));
    if (!s->param_ids) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    for (int pass = 0; pass < 2; pass++) {
        rc = drv->prepare(d, "SELECT param, rtype, code FROM search_param", 0, &st, e);
        if (rc != ST_OK) return rc;
        int r;
        while ((r = drv->step(st, e)) == 1) {
            const char *rtype = drv->col_text(st, 1, NULL), *code = drv->col_text(st, 2, NULL);
            const fhir_search_param *sp = fhir_search_param_find(rtype, code);
            if (sp && strcmp(sp->resource, rtype) == 0)
                s->param_ids[sp - fhir_search_params] = (int)drv->col_int(st, 0);
        }
        drv->done(st);
        if (r < 0) return ST_IO;
        missing = 0;
        for (size_t i = 0; i < fhir_n_search_params; i++)
            if (param_indexed(&fhir_search_params[i]) && !s->param_ids[i]) missing++;
        if (!missing || pass == 1) break;
        /* register the parameters this build knows and the database doesn't */
        if (drv->serial_writes) pthread_mutex_lock(&s->write_lock);
        rc = drv->begin(d, e);
        for (size_t i = 0; rc == ST_OK && i < fhir_n_search_params; i++) {
            const fhir_search_param *sp = &fhir_search_params[i];
            if (!param_indexed(sp) || s->param_ids[i]) continue;
            rc = drv->prepare(
                d, "INSERT INTO search_param (rtype, code) VALUES (?, ?) ON CONFLICT DO NOTHING", 1, &st, e);
            if (rc != ST_OK) break;
            drv->bind_text(st, 1, sp->resource, -1);
            drv->bind_text(st, 2, sp->code, -1);
            if (drv->step(st, e) < 0) rc = ST_IO;
            drv->done(st);
        }
        if (rc == ST_OK)
            rc = drv->commit(d, e);
        else
            drv->rollback(d);
        if (drv->serial_writes) pthread_mutex_unlock(&s->write_lock);
        if (rc != ST_OK) return rc;
    }
    if (missing)
        return err_set(e, ST_IO, "exception", NULL, "could not register %d search parameters", missing);
    /* $everything's second query: resources that name the patient through
     * any Patient-compartment parameter, not only the one that set their
     * patient key (a Group with the patient among its members...) */
    buf sql = {0};
    buf_puts(&sql, "SELECT DISTINCT r.rtype, r.id, r.version, r.updated, r.deleted, r.body FROM idx_ref x"
                   " JOIN resource r ON r.rkey = x.rkey WHERE x.target_id = ? AND x.target_type = 'Patient'"
                   " AND r.deleted = 0 AND r.pkey <> ? AND x.param IN (0");
    for (size_t i = 0; i < fhir_n_compartments; i++) {
        const fhir_compartment *c = &fhir_compartments[i];
        for (const char *p = c->params; p && *p;) {
            size_t n = strcspn(p, "|");
            char code[64];
            if (n < sizeof code) {
                memcpy(code, p, n);
                code[n] = 0;
                const fhir_search_param *sp = fhir_search_param_find(c->resource, code);
                if (sp && sp->type == SP_REFERENCE && s->param_ids[sp - fhir_search_params])
                    buf_printf(&sql, ", %d", s->param_ids[sp - fhir_search_params]);
            }
            p += n;
            if (*p == '|') p++;
        }
    }
    buf_puts(&sql, ") ORDER BY r.rtype, r.id");
    s->everything_refs_sql = buf_take(&sql);
    return ST_OK;
}

int64_t store_param_id(store *s, const fhir_search_param *sp) {
    return s->param_ids[sp - fhir_search_params];
}

/* ---- open / close ---------------------------------------------------- */

status store_open(const char *url, int migrate, store **out, err *e) {
    status rc = ST_OK;
    *out = NULL;
    if (sodium_init() < 0)
        return err_set(e, ST_INTERNAL, "exception", NULL, "libsodium failed to initialise");
    store *s = calloc(1, sizeof *s);
    if (!s) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    if (!url || !*url) url = STORE_DEFAULT_DB;
    s->url = strdup(url);
    s->drv = (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
                 ? &db_pg_driver
                 : &db_sqlite_driver;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_mutex_init(&s->audit_lock, NULL);
    pthread_key_create(&s->conn_key, conn_release);
    db *d = store_db(s, e);
    if (!d) {
        rc = e ? e->code : ST_IO;
        goto out;
    }
    if (migrate) {
        if (s->drv->serial_writes) pthread_mutex_lock(&s->write_lock);
        rc = schema_migrate(s, d, NULL, NULL, e);
        if (s->drv->serial_writes) pthread_mutex_unlock(&s->write_lock);
        if (rc != ST_OK) goto out;
    } else {
        int v = schema_current_version(s, d);
        if (v != store_schema_version()) {
            rc = err_set(e, ST_IO, "exception", NULL,
                         "database schema is at version %d, this concord needs %d: run `concord migrate`",
                         v < 0 ? 0 : v, store_schema_version());
            goto out;
        }
    }
    rc = load_param_ids(s, d, e);
out:
    if (rc != ST_OK) {
        store_close(s);
        s = NULL;
    }
    *out = s;
    return rc;
}

status store_migrate(store *s, int *applied, int *version, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    if (s->drv->serial_writes) pthread_mutex_lock(&s->write_lock);
    status rc = schema_migrate(s, d, applied, version, e);
    if (s->drv->serial_writes) pthread_mutex_unlock(&s->write_lock);
    return rc;
}

void store_close(store *s) {
    if (!s) return;
    /* this thread's connection, then any other threads' still open */
    db_conn_link *mine = pthread_getspecific(s->conn_key);
    if (mine) {
        pthread_setspecific(s->conn_key, NULL);
        conn_release(mine);
    }
    pthread_mutex_lock(&s->lock);
    db_conn_link *l = s->conns;
    s->conns = NULL;
    pthread_mutex_unlock(&s->lock);
    while (l) {
        db_conn_link *n = l->next;
        s->drv->disconnect(l->d);
        free(l);
        l = n;
    }
    if (s->writer) s->drv->disconnect(s->writer);
    if (s->audit_writer) s->drv->disconnect(s->audit_writer);
    pthread_key_delete(s->conn_key);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->write_lock);
    pthread_mutex_destroy(&s->audit_lock);
    free(s->param_ids);
    free(s->everything_refs_sql);
    free(s->url);
    free(s);
}

/* ---- transactions ---------------------------------------------------- */

/* Write transactions. With a backend that admits one writer at a time
 * (SQLite), every write goes through one shared connection under
 * write_lock: a connection's page cache is discarded whenever another
 * connection has written, so a single writer keeps its cache warm across
 * transactions instead of re-reading the hot index pages on every commit. */
status store_begin(store *s, store_txn **out, err *e) {
    *out = NULL;
    store_txn *tx = calloc(1, sizeof *tx);
    if (!tx) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    tx->s = s;
    status rc = ST_OK;
    if (s->drv->serial_writes) {
        pthread_mutex_lock(&s->write_lock);
        if (!s->writer) {
            rc = s->drv->connect(s, &s->writer, e);
            if (rc == ST_OK && s->drv->writer_setup) rc = s->drv->exec(s->writer, s->drv->writer_setup, e);
            if (rc == ST_OK && s->drv->writer_init) rc = s->drv->writer_init(s->writer, e);
            if (rc != ST_OK && s->writer) {
                s->drv->disconnect(s->writer);
                s->writer = NULL;
            }
        }
        tx->d = s->writer;
    } else {
        tx->d = store_db(s, e);
        if (!tx->d) rc = e ? e->code : ST_IO;
    }
    if (rc == ST_OK) rc = s->drv->begin(tx->d, e);
    if (rc != ST_OK) {
        if (s->drv->serial_writes) pthread_mutex_unlock(&s->write_lock);
        free(tx);
        return rc;
    }
    *out = tx;
    return ST_OK;
}

void store_txn_set_user_claim(store_txn *tx, int on) {
    tx->user_claim = on;
}
int store_txn_user_claim(const store_txn *tx) {
    return tx->user_claim;
}

status store_begin_keeping_access(store *s, store_txn **out, err *e) {
    status rc = store_begin(s, out, e);
    if (rc == ST_OK) (*out)->keeps_access = 1;
    return rc;
}

status store_begin_audit(store *s, store_txn **out, err *e) {
    if (!s->drv->connect_audit) return store_begin_keeping_access(s, out, e);
    *out = NULL;
    store_txn *tx = calloc(1, sizeof *tx);
    if (!tx) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    tx->s = s;
    tx->keeps_access = 1;
    tx->audit = 1;
    pthread_mutex_lock(&s->audit_lock);
    status rc = ST_OK;
    if (!s->audit_writer) rc = s->drv->connect_audit(s, &s->audit_writer, e);
    if (rc == ST_OK) rc = s->drv->begin(s->audit_writer, e);
    if (rc != ST_OK) {
        pthread_mutex_unlock(&s->audit_lock);
        free(tx);
        return rc;
    }
    tx->d = s->audit_writer;
    *out = tx;
    return ST_OK;
}

static void txn_free(store_txn *tx) {
    if (tx->audit)
        pthread_mutex_unlock(&tx->s->audit_lock);
    else if (tx->s->drv->serial_writes)
        pthread_mutex_unlock(&tx->s->write_lock);
    arena_free(&tx->a);
    free(tx);
}

status store_commit(store_txn *tx, err *e) {
    store *s = tx->s;
    status rc = s->drv->commit(tx->d, e);
    if (rc != ST_OK) {
        s->drv->rollback(tx->d);
    } else {
        /* after the commit (store_scope.c). Where readers see a data
         * version, they follow the access epoch instead (migration 13) */
        if (!tx->keeps_access && !s->drv->data_version) atomic_fetch_add(&s->access_gen, 1);
        /* every write counts towards the planner's statistics (this was an
         * `else` of the line above: only sign-in bookkeeping counted, so a
         * loaded database kept the statistics of an empty one and searched
         * Patient?identifier by scanning every Patient; bench.py) */
        if (!tx->audit && s->drv->serial_writes && s->drv->maintenance &&
            ++s->commits % STORE_MAINTENANCE_COMMITS == 1) {
            err me; /* still under write_lock; a failure here costs only plan quality */
            if (s->drv->exec(tx->d, s->drv->maintenance, &me) != ST_OK)
                log_warn("store: maintenance: %s", me.msg);
        }
    }
    txn_free(tx);
    return rc;
}

void store_rollback(store_txn *tx) {
    if (!tx) return;
    tx->s->drv->rollback(tx->d);
    txn_free(tx);
}

status store_savepoint(store_txn *tx, err *e) {
    return tx->s->drv->exec(tx->d, "SAVEPOINT item", e);
}
status store_savepoint_release(store_txn *tx, err *e) {
    return tx->s->drv->exec(tx->d, "RELEASE SAVEPOINT item", e);
}
void store_savepoint_rollback(store_txn *tx) {
    err e;
    if (tx->s->drv->exec(tx->d, "ROLLBACK TO SAVEPOINT item", &e) == ST_OK)
        tx->s->drv->exec(tx->d, "RELEASE SAVEPOINT item", &e);
}

static status txn_patient_key(store_txn *tx, const char *pid, int64_t *pkey, err *e);

status store_txn_patient_key(store_txn *tx, const char *patient_id, int64_t *pkey, err *e) {
    return txn_patient_key(tx, patient_id, pkey, e);
}

/* lastUpdated stamps: strictly increasing within this process, so that the
 * versions of one resource written in one transaction still order. */
static int64_t next_stamp(void) {
    static _Atomic int64_t last;
    int64_t now = fhir_now_usec();
    int64_t prev = atomic_load(&last);
    for (;;) {
        int64_t want = now > prev ? now : prev + 1;
        if (atomic_compare_exchange_weak(&last, &prev, want)) return want;
    }
}

/* New ids are UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then
 * random bits. Time-ordered ids append to the (rtype, id) index instead of
 * landing on a random leaf page each, which cuts the pages every write
 * transaction dirties (and the WAL it writes) considerably. */
void store_new_id(char out[37]) {
    unsigned char r[16];
    randombytes_buf(r, sizeof r);
    uint64_t ms = (uint64_t)(fhir_now_usec() / 1000);
    for (int i = 0; i < 6; i++)
        r[i] = (unsigned char)(ms >> (40 - 8 * i));
    r[6] = (r[6] & 0x0f) | 0x70; /* version 7 */
    r[8] = (r[8] & 0x3f) | 0x80; /* variant 10 */
    static const char hex[] = "0123456789abcdef";
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
        out[j++] = hex[r[i] >> 4];
        out[j++] = hex[r[i] & 15];
    }
    out[j] = 0;
}

status store_patient_key(store *s, db *d, const char *patient_id, int create, int64_t *pkey, err *e) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    status rc = ST_OK;
    *pkey = 0;
    for (int attempt = 0; attempt < 2 && !*pkey; attempt++) {
        static const char sel[] = "SELECT pkey FROM patient_key WHERE patient_id = ?";
        rc = drv->prepare(d, sel, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_text(st, 1, patient_id, -1);
        int r = drv->step(st, e);
        if (r == 1) *pkey = drv->col_int(st, 0);
        drv->done(st);
        if (r < 0) return ST_IO;
        if (*pkey || !create) break;
        static const char ins[] =
            "INSERT INTO patient_key (patient_id) VALUES (?) ON CONFLICT DO NOTHING RETURNING pkey";
        rc = drv->prepare(d, ins, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_text(st, 1, patient_id, -1);
        r = drv->step(st, e);
        if (r == 1) *pkey = drv->col_int(st, 0);
        if (r == 1)
            while (drv->step(st, e) == 1) {
            }
        drv->done(st);
        if (r < 0) return ST_IO;
    }
    return rc;
}

/* Patient key inside a write transaction, remembering the last one: a
 * patient's resources usually arrive together (a Bundle, a person's
 * record), and the cache dies with the transaction, so a rolled-back key
 * is never reused. */
static status txn_patient_key(store_txn *tx, const char *pid, int64_t *pkey, err *e) {
    if (tx->last_pkey && strcmp(tx->last_pid, pid) == 0) {
        *pkey = tx->last_pkey;
        return ST_OK;
    }
    status rc = store_patient_key(tx->s, tx->d, pid, 1, pkey, e);
    if (rc == ST_OK && strlen(pid) < sizeof tx->last_pid) {
        snprintf(tx->last_pid, sizeof tx->last_pid, "%s", pid);
        tx->last_pkey = *pkey;
    }
    return rc;
}

/* Current row of (type, id), locked for update inside a write txn. */
typedef struct current_row {
    int exists;
    int64_t rkey, version, updated, pkey;
    int deleted;
} current_row;

static status load_current(store_txn *tx, const char *type, const char *id, current_row *cur, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sql_lock[] =
        "SELECT rkey, version, deleted, pkey, updated FROM resource WHERE rtype = ? AND id = ? FOR UPDATE";
    static const char sql_plain[] =
        "SELECT rkey, version, deleted, pkey, updated FROM resource WHERE rtype = ? AND id = ?";
    db_stmt *st = NULL;
    memset(cur, 0, sizeof *cur);
    status rc = drv->prepare(tx->d, drv->for_update[0] ? sql_lock : sql_plain, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_text(st, 1, type, -1);
    drv->bind_text(st, 2, id, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        cur->exists = 1;
        cur->rkey = drv->col_int(st, 0);
        cur->version = drv->col_int(st, 1);
        cur->deleted = (int)drv->col_int(st, 2);
        cur->pkey = drv->col_int(st, 3);
        cur->updated = drv->col_int(st, 4);
    }
    drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

static status exec_rkey(store_txn *tx, const char *sql, int64_t rkey, err *e) {
    const db_driver *drv = tx->s->drv;
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, rkey);
    if (drv->step(st, e) < 0) rc = ST_IO;
    drv->done(st);
    return rc;
}

static status archive_current(store_txn *tx, int64_t rkey, err *e) {
    static const char sql[] =
        "INSERT INTO resource_history (pkey, rkey, rtype, id, version, updated, deleted, body)"
        " SELECT pkey, rkey, rtype, id, version, updated, deleted, body FROM resource"
        " WHERE rkey = ?";
    return exec_rkey(tx, sql, rkey, e);
}

static status clear_index(store_txn *tx, int64_t rkey, err *e) {
    static const char *const sqls[] = {
        "DELETE FROM idx_token WHERE rkey = ?",  "DELETE FROM idx_string WHERE rkey = ?",
        "DELETE FROM idx_date WHERE rkey = ?",   "DELETE FROM idx_ref WHERE rkey = ?",
        "DELETE FROM idx_number WHERE rkey = ?", "DELETE FROM idx_quantity WHERE rkey = ?",
    };
    for (size_t i = 0; i < sizeof sqls / sizeof sqls[0]; i++) {
        status rc = exec_rkey(tx, sqls[i], rkey, e);
        if (rc != ST_OK) return rc;
    }
    return ST_OK;
}

static const char *nz(const char *s) {
    return s ? s : "";
}

static status write_index(store_txn *tx, int64_t pkey, int64_t rkey, const idx_rows *rows, err *e) {
    static const char sql_token[] = "INSERT INTO idx_token (pkey, rkey, param, system, code) VALUES (?, ?, "
                                    "?, ?, ?) ON CONFLICT DO NOTHING";
    static const char sql_string[] = "INSERT INTO idx_string (pkey, rkey, param, norm, exact) VALUES (?, ?, "
                                     "?, ?, ?) ON CONFLICT DO NOTHING";
    static const char sql_date[] =
        "INSERT INTO idx_date (pkey, rkey, param, lo, hi) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
    static const char sql_ref[] = "INSERT INTO idx_ref (pkey, rkey, param, target_type, target_id, url)"
                                  " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
    static const char sql_number[] = "INSERT INTO idx_number (pkey, rkey, param, value, lo, hi) VALUES (?, "
                                     "?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
    static const char sql_quantity[] =
        "INSERT INTO idx_quantity (pkey, rkey, param, value, lo, hi, system, code)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
    const db_driver *drv = tx->s->drv;
    for (size_t i = 0; i < rows->n; i++) {
        const idx_row *r = &rows->v[i];
        int64_t param = store_param_id(tx->s, r->sp);
        if (!param) continue;
        const char *sql = NULL;
        switch (r->kind) {
        case IDX_TOKEN: sql = sql_token; break;
        case IDX_STRING: sql = sql_string; break;
        case IDX_DATE: sql = sql_date; break;
        case IDX_REF: sql = sql_ref; break;
        case IDX_NUMBER: sql = sql_number; break;
        case IDX_QUANTITY: sql = sql_quantity; break;
        }
        db_stmt *st = NULL;
        status rc = drv->prepare(tx->d, sql, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_int(st, 1, pkey);
        drv->bind_int(st, 2, rkey);
        drv->bind_int(st, 3, param);
        switch (r->kind) {
        case IDX_TOKEN:
            drv->bind_text(st, 4, nz(r->system), -1);
            drv->bind_text(st, 5, nz(r->code), -1);
            break;
        case IDX_STRING:
            drv->bind_text(st, 4, nz(r->norm), -1);
            drv->bind_text(st, 5, nz(r->exact), -1);
            break;
        case IDX_DATE:
            drv->bind_int(st, 4, r->lo);
            drv->bind_int(st, 5, r->hi);
            break;
        case IDX_REF:
            drv->bind_text(st, 4, nz(r->ref_type), -1);
            drv->bind_text(st, 5, nz(r->ref_id), -1);
            drv->bind_text(st, 6, nz(r->ref_url), -1);
            break;
        case IDX_NUMBER:
            drv->bind_double(st, 4, r->value);
            drv->bind_double(st, 5, r->vlo);
            drv->bind_double(st, 6, r->vhi);
            break;
        case IDX_QUANTITY:
            drv->bind_double(st, 4, r->value);
            drv->bind_double(st, 5, r->vlo);
            drv->bind_double(st, 6, r->vhi);
            drv->bind_text(st, 7, nz(r->system), -1);
            drv->bind_text(st, 8, nz(r->code), -1);
            break;
        }
        int s = drv->step(st, e);
        drv->done(st);
        if (s < 0) return ST_IO;
    }
    return ST_OK;
}

/* Stamp `res` (id, meta.versionId, meta.lastUpdated) and serialise it with
 * the conventional leading members: {"resourceType","id","meta",...rest}.
 * Rather than rebuilding the object in that order, the three are taken out,
 * the rest is serialised, and the text is spliced — then they are put back
 * (member order inside the json_t does not matter after this). Returns
 * malloc'd text or NULL. */
static char *stamp_and_serialise(json_t *res, const char *type, const char *id, int64_t version,
                                 int64_t usec) {
    json_t *meta = json_object_get(res, "meta");
    if (json_is_object(meta))
        json_incref(meta);
    else
        meta = json_object();
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)version);
    json_object_set_new(meta, "versionId", json_string(tmp));
    fhir_instant_format(usec, tmp);
    json_object_set_new(meta, "lastUpdated", json_string(tmp));
    json_object_del(res, "resourceType");
    json_object_del(res, "id");
    json_object_del(res, "meta");
    buf b = {0};
    buf_puts(&b, "{\"resourceType\":\"");
    buf_json_escape(&b, type, strlen(type));
    buf_puts(&b, "\",\"id\":\"");
    buf_json_escape(&b, id, strlen(id));
    buf_puts(&b, "\",\"meta\":");
    fhir_json_dump(meta, &b);
    if (json_object_size(res)) {
        size_t at = b.len;
        fhir_json_dump(res, &b); /* "{...}": replace its '{' with ',' */
        b.p[at] = ',';
    } else {
        buf_putc(&b, '}');
    }
    char *out = buf_take(&b);
    json_object_set_new(res, "resourceType", json_string(type));
    json_object_set_new(res, "id", json_string(id));
    json_object_set_new(res, "meta", meta);
    return out;
}

status store_add_write_hook(store *s, const char *type, store_write_hook fn, void *ctx, err *e) {
    if (s->nhooks == STORE_MAX_HOOKS)
        return err_set(e, ST_INVALID, "exception", NULL, "too many store write hooks");
    s->hooks[s->nhooks].type = type;
    s->hooks[s->nhooks].fn = fn;
    s->hooks[s->nhooks].ctx = ctx;
    s->nhooks++;
    return ST_OK;
}

store *store_txn_store(store_txn *tx) {
    return tx->s;
}

static status run_hooks(store_txn *tx, const store_write_event *ev, err *e) {
    store *s = tx->s;
    for (int i = 0; i < s->nhooks; i++) {
        if (s->hooks[i].type && strcmp(s->hooks[i].type, ev->type) != 0) continue;
        status rc = s->hooks[i].fn(s->hooks[i].ctx, tx, ev, e);
        if (rc != ST_OK) return rc;
    }
    return ST_OK;
}

/* Insert version 1 of (type, id). Returns 1 with *rkey set, 0 if the id
 * is already taken (ON CONFLICT: another writer got there first, or it
 * existed), -1 on error (e filled). */
static int insert_first_version(store_txn *tx, int64_t pkey, const char *type, const char *id, int64_t now,
                                const char *body, const store_label *lab, int64_t *rkey, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char ins[] =
        "INSERT INTO resource (pkey, rtype, id, version, updated, deleted, body, org, sens)"
        " VALUES (?, ?, ?, 1, ?, 0, ?, ?, ?) ON CONFLICT (rtype, id) DO NOTHING RETURNING rkey";
    db_stmt *st = NULL;
    if (drv->prepare(tx->d, ins, 1, &st, e) != ST_OK) return -1;
    drv->bind_int(st, 1, pkey);
    drv->bind_text(st, 2, type, -1);
    drv->bind_text(st, 3, id, -1);
    drv->bind_int(st, 4, now);
    drv->bind_text(st, 5, body, -1);
    drv->bind_text(st, 6, lab->org, -1);
    drv->bind_int(st, 7, lab->sens);
    int r = drv->step(st, e);
    if (r == 1) {
        *rkey = drv->col_int(st, 0);
        while (drv->step(st, e) == 1) {
        }
    }
    drv->done(st);
    return r;
}

/* Prepared creates (store_prepare): the body stamped as version 1, its
 * index rows and patient id, computed before the write lock is taken so
 * that concurrent requests do this CPU work in parallel. */
struct store_prep {
    json_t *res; /* borrowed */
    const fhir_type *rt;
    char id[72];
    int64_t now;
    char *body;
    idx_rows rows;
    const char *pid;
    store_label lab;
    arena a;
};

/* Labels (recording organisation, sensitive categories) of a resource
 * about to be stored: from the labeller the access module installs, or
 * the built-in default (the ODS code in meta.tag, nothing sensitive). */
static store_labeller labeller;
static void *labeller_ctx;

void store_set_labeller(store_labeller fn, void *ctx) {
    labeller = fn;
    labeller_ctx = ctx;
}

void store_label_default(const char *type, json_t *res, store_label *out) {
    memset(out, 0, sizeof *out);
    json_t *tags = json_object_get(json_object_get(res, "meta"), "tag");
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        const char *sys = json_string_value(json_object_get(t, "system"));
        const char *code = json_string_value(json_object_get(t, "code"));
        if (sys && code && strcmp(sys, STORE_ODS_SYSTEM) == 0 && strlen(code) < sizeof out->org) {
            snprintf(out->org, sizeof out->org, "%s", code);
            break;
        }
    }
}

static void label_resource(const char *type, json_t *res, store_label *out) {
    if (labeller)
        labeller(labeller_ctx, type, res, out);
    else
        store_label_default(type, res, out);
}

void store_label_of(const char *type, json_t *res, store_label *out) {
    label_resource(type, res, out);
}

static status put_impl(store_txn *tx, json_t *res, const char *id, int64_t if_match, int create_only,
                       store_prep *prep, store_meta *out, int *created, char **body_out, err *e) {
    const db_driver *drv = tx->s->drv;
    status rc = ST_OK;
    char idbuf[37];
    char *body = NULL;
    db_stmt *st = NULL;
    /* the type's name from the static model table: `res` is re-built below */
    const fhir_type *rt = fhir_resource_type(json_string_value(json_object_get(res, "resourceType")));
    if (!rt) return err_set(e, ST_INVALID, "invalid", "resourceType", "unknown resource type");
    const char *type = rt->name;
    if (!id) {
        store_new_id(idbuf);
        id = idbuf;
    }
    if (strlen(id) > 64) return err_set(e, ST_INVALID, "value", "id", "id is longer than 64 characters");
    /* own copy: `id` may point into `res`, which is re-built below */
    char idcopy[72];
    snprintf(idcopy, sizeof idcopy, "%s", id);
    id = idcopy;
    current_row cur;
    int attempts = 0;
    if (prep && prep->body && !if_match) {
        /* a prepared create: insert straight away; only if the id is taken
         * (rare) read what is there and take the general path */
        int64_t pkey = 0;
        if (prep->pid) rc = txn_patient_key(tx, prep->pid, &pkey, e);
        if (rc != ST_OK) goto out;
        int64_t rkey = 0;
        int r = insert_first_version(tx, pkey, type, id, prep->now, prep->body, &prep->lab, &rkey, e);
        if (r < 0) {
            rc = e ? e->code : ST_IO;
            goto out;
        }
        if (r == 1) {
            rc = write_index(tx, pkey, rkey, &prep->rows, e);
            if (rc == ST_OK && tx->s->nhooks) {
                store_write_event ev = {type, id, 1, 0, pkey, rkey, res, prep->body};
                rc = run_hooks(tx, &ev, e);
            }
            if (rc != ST_OK) goto out;
            if (out) {
                snprintf(out->type, sizeof out->type, "%s", type);
                snprintf(out->id, sizeof out->id, "%s", id);
                out->version = 1;
                out->updated_usec = prep->now;
                out->deleted = 0;
            }
            if (created) *created = 1;
            if (body_out) {
                *body_out = prep->body;
                prep->body = NULL;
            }
            goto out;
        }
    }
retry:
    rc = load_current(tx, type, id, &cur, e);
    if (rc != ST_OK) goto out;
    if (create_only && cur.exists && !cur.deleted) {
        rc = err_set(e, ST_CONFLICT, "duplicate", "id", "%s/%s already exists", type, id);
        goto out;
    }
    if (if_match > 0 && (!cur.exists || cur.deleted || cur.version != if_match)) {
        rc =
            err_set(e, ST_PRECONDITION, "conflict", NULL,
                    "If-Match version %lld does not match the current version %lld of %s/%s",
                    (long long)if_match, (long long)(cur.exists && !cur.deleted ? cur.version : 0), type, id);
        goto out;
    }
    int64_t version = cur.exists ? cur.version + 1 : 1;
    int64_t now;
    idx_rows rows = {0};
    const char *pid;
    store_label lab;
    if (prep && prep->body && version == 1) { /* the prepared create still holds */
        now = prep->now;
        body = prep->body;
        prep->body = NULL;
        rows = prep->rows;
        pid = prep->pid;
        lab = prep->lab;
    } else {
        label_resource(type, res, &lab);
        now = next_stamp();
        body = stamp_and_serialise(res, type, id, version, now);
        if (!body) {
            rc = err_set(e, ST_NOMEM, "exception", NULL, "cannot serialise resource");
            goto out;
        }
        fhir_index_resource(type, res, &rows, &tx->a);
        pid = fhir_index_patient_id(type, res, &rows);
    }
    int64_t pkey = 0;
    if (pid) {
        rc = txn_patient_key(tx, pid, &pkey, e);
        if (rc != ST_OK) goto out;
    }
    int64_t rkey = cur.rkey;
    if (cur.exists) {
        rc = archive_current(tx, cur.rkey, e);
        if (rc == ST_OK && !cur.deleted) rc = clear_index(tx, cur.rkey, e);
        if (rc != ST_OK) goto out;
        static const char upd[] =
            "UPDATE resource SET pkey = ?, version = ?, updated = ?, deleted = 0, body = ?, org = ?, sens = ?"
            " WHERE rkey = ?";
        rc = drv->prepare(tx->d, upd, 1, &st, e);
        if (rc != ST_OK) goto out;
        drv->bind_int(st, 1, pkey);
        drv->bind_int(st, 2, version);
        drv->bind_int(st, 3, now);
        drv->bind_text(st, 4, body, -1);
        drv->bind_text(st, 5, lab.org, -1);
        drv->bind_int(st, 6, lab.sens);
        drv->bind_int(st, 7, cur.rkey);
        if (drv->step(st, e) < 0) rc = ST_IO;
        drv->done(st);
    } else {
        /* ON CONFLICT: another transaction created this id after we looked
         * (PostgreSQL; SQLite serialises writers). Read it again and write
         * the next version on top, or refuse if we were asked to create. */
        int r = insert_first_version(tx, pkey, type, id, now, body, &lab, &rkey, e);
        if (r < 0) rc = e ? e->code : ST_IO;
        if (r == 0) {
            free(body);
            body = NULL;
            arena_reset(&tx->a);
            if (create_only || ++attempts > 3) {
                rc = err_set(e, ST_CONFLICT, "duplicate", "id", "%s/%s was created concurrently", type, id);
                goto out;
            }
            goto retry;
        }
    }
    if (rc != ST_OK) goto out;
    rc = write_index(tx, pkey, rkey, &rows, e);
    if (rc == ST_OK && tx->s->nhooks) {
        store_write_event ev = {type, id, version, 0, pkey, rkey, res, body};
        rc = run_hooks(tx, &ev, e);
    }
    if (rc != ST_OK) goto out;
    if (out) {
        snprintf(out->type, sizeof out->type, "%s", type);
        snprintf(out->id, sizeof out->id, "%s", id);
        out->version = version;
        out->updated_usec = now;
        out->deleted = 0;
    }
    if (created) *created = !cur.exists || cur.deleted;
    if (body_out) {
        *body_out = body;
        body = NULL;
    }
out:
    free(body);
    arena_reset(&tx->a);
    return rc;
}

status store_put(store_txn *tx, json_t *res, const char *id, int64_t if_match, int create_only,
                 store_meta *out, int *created, char **body_out, err *e) {
    return put_impl(tx, res, id, if_match, create_only, NULL, out, created, body_out, e);
}

status store_prepare(json_t *res, const char *id, store_prep **out, err *e) {
    *out = NULL;
    const fhir_type *rt = fhir_resource_type(json_string_value(json_object_get(res, "resourceType")));
    if (!rt) return err_set(e, ST_INVALID, "invalid", "resourceType", "unknown resource type");
    if (id && strlen(id) > 64)
        return err_set(e, ST_INVALID, "value", "id", "id is longer than 64 characters");
    store_prep *p = calloc(1, sizeof *p);
    if (!p) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    p->res = res;
    p->rt = rt;
    if (id)
        snprintf(p->id, sizeof p->id, "%s", id);
    else
        store_new_id(p->id);
    p->now = next_stamp();
    p->body = stamp_and_serialise(res, rt->name, p->id, 1, p->now);
    if (!p->body) {
        free(p);
        return err_set(e, ST_NOMEM, "exception", NULL, "cannot serialise resource");
    }
    fhir_index_resource(rt->name, res, &p->rows, &p->a);
    const char *pid = fhir_index_patient_id(rt->name, res, &p->rows);
    p->pid = pid ? arena_strdup(&p->a, pid) : NULL;
    label_resource(rt->name, res, &p->lab);
    *out = p;
    return ST_OK;
}

const char *store_prep_id(const store_prep *p) {
    return p->id;
}

status store_put_prepared(store_txn *tx, store_prep *p, int create_only, store_meta *out, int *created,
                          char **body_out, err *e) {
    return put_impl(tx, p->res, p->id, 0, create_only, p, out, created, body_out, e);
}

void store_prep_free(store_prep *p) {
    if (!p) return;
    free(p->body);
    arena_free(&p->a);
    free(p);
}

status store_delete(store_txn *tx, const char *type, const char *id, store_meta *out, err *e) {
    const db_driver *drv = tx->s->drv;
    db_stmt *st = NULL;
    current_row cur;
    memset(out, 0, sizeof *out);
    snprintf(out->type, sizeof out->type, "%s", type);
    snprintf(out->id, sizeof out->id, "%s", id);
    status rc = load_current(tx, type, id, &cur, e);
    if (rc != ST_OK || !cur.exists || cur.deleted) return rc;
    rc = archive_current(tx, cur.rkey, e);
    if (rc == ST_OK) rc = clear_index(tx, cur.rkey, e);
    if (rc != ST_OK) return rc;
    int64_t now = next_stamp();
    static const char upd[] =
        "UPDATE resource SET version = ?, updated = ?, deleted = 1, body = NULL WHERE rkey = ?";
    rc = drv->prepare(tx->d, upd, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, cur.version + 1);
    drv->bind_int(st, 2, now);
    drv->bind_int(st, 3, cur.rkey);
    if (drv->step(st, e) < 0) rc = ST_IO;
    drv->done(st);
    out->version = cur.version + 1;
    out->updated_usec = now;
    out->deleted = 1;
    if (rc == ST_OK && tx->s->nhooks) {
        store_write_event ev = {out->type, out->id, out->version, 1, cur.pkey, cur.rkey, NULL, NULL};
        rc = run_hooks(tx, &ev, e);
    }
    return rc;
}

/* ---- reads ----------------------------------------------------------- */

static status read_on(store *s, db *d, const char *type, const char *id, int64_t version, buf *body,
                      store_meta *meta, err *e) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    status rc = ST_OK;
    static const char cur_sql[] = "SELECT rkey, version, updated, deleted, body, pkey, org, sens FROM "
                                  "resource WHERE rtype = ? AND id = ?";
    memset(meta, 0, sizeof *meta);
    snprintf(meta->type, sizeof meta->type, "%s", type);
    snprintf(meta->id, sizeof meta->id, "%s", id);
    rc = drv->prepare(d, cur_sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_text(st, 1, type, -1);
    drv->bind_text(st, 2, id, -1);
    int r = drv->step(st, e);
    if (r < 0) {
        drv->done(st);
        return ST_IO;
    }
    if (r == 0) {
        drv->done(st);
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "%s/%s is not known", type, id);
    }
    int64_t rkey = drv->col_int(st, 0);
    meta->version = drv->col_int(st, 1);
    meta->updated_usec = drv->col_int(st, 2);
    meta->deleted = (int)drv->col_int(st, 3);
    meta->pkey = drv->col_int(st, 5);
    const char *org = drv->col_text(st, 6, NULL);
    snprintf(meta->org, sizeof meta->org, "%s", org ? org : "");
    meta->sens = (unsigned)drv->col_int(st, 7);
    if (version == 0 || version == meta->version) {
        size_t len;
        const char *b = drv->col_text(st, 4, &len);
        if (b && body) buf_append(body, b, len);
        drv->done(st);
        if (meta->deleted) return err_set(e, ST_GONE, "deleted", NULL, "%s/%s was deleted", type, id);
        return ST_OK;
    }
    drv->done(st);
    if (version > meta->version || version < 1)
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "%s/%s has no version %lld", type, id,
                       (long long)version);
    static const char hist_sql[] = "SELECT version, updated, deleted, body FROM resource_history"
                                   " WHERE rkey = ? AND version = ?";
    rc = drv->prepare(d, hist_sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, rkey);
    drv->bind_int(st, 2, version);
    r = drv->step(st, e);
    if (r == 1) {
        meta->version = drv->col_int(st, 0);
        meta->updated_usec = drv->col_int(st, 1);
        meta->deleted = (int)drv->col_int(st, 2);
        size_t len;
        const char *b = drv->col_text(st, 3, &len);
        if (b && body) buf_append(body, b, len);
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    if (r == 0)
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "%s/%s has no version %lld", type, id,
                       (long long)version);
    if (meta->deleted)
        return err_set(e, ST_GONE, "deleted", NULL, "version %lld of %s/%s is a deletion", (long long)version,
                       type, id);
    return ST_OK;
}

status store_read(store *s, const char *type, const char *id, int64_t version, buf *body, store_meta *meta,
                  err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    return read_on(s, d, type, id, version, body, meta, e);
}

status store_txn_read(store_txn *tx, const char *type, const char *id, buf *body, store_meta *meta, err *e) {
    return read_on(tx->s, tx->d, type, id, 0, body, meta, e);
}

void store_items_push(store_items *it, const store_meta *m, const char *body, size_t len, int include) {
    if (it->n == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 16;
        store_item *v = realloc(it->v, cap * sizeof *v);
        if (!v) abort();
        it->v = v;
        it->cap = cap;
    }
    store_item *x = &it->v[it->n++];
    x->meta = *m;
    x->include = include;
    x->body = NULL;
    x->body_len = 0;
    if (body) {
        x->body = malloc(len + 1);
        if (!x->body) abort();
        memcpy(x->body, body, len);
        x->body[len] = 0;
        x->body_len = len;
    }
}

void store_items_free(store_items *it) {
    for (size_t i = 0; i < it->n; i++)
        free(it->v[i].body);
    free(it->v);
    memset(it, 0, sizeof *it);
}

void store_row_meta(const db_driver *drv, db_stmt *st, store_meta *m) {
    memset(m, 0, sizeof *m);
    const char *t = drv->col_text(st, 0, NULL), *id = drv->col_text(st, 1, NULL);
    snprintf(m->type, sizeof m->type, "%s", t ? t : "");
    snprintf(m->id, sizeof m->id, "%s", id ? id : "");
    m->version = drv->col_int(st, 2);
    m->updated_usec = drv->col_int(st, 3);
    m->deleted = (int)drv->col_int(st, 4);
}

/* Rows of (rtype, id, version, updated, deleted, body) into items. */
static status collect(store *s, db_stmt *st, store_items *out, int include, err *e) {
    const db_driver *drv = s->drv;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        store_meta m;
        store_row_meta(drv, st, &m);
        size_t len;
        const char *b = drv->col_text(st, 5, &len);
        store_items_push(out, &m, b, len, include);
    }
    return r < 0 ? ST_IO : ST_OK;
}

status store_history(store *s, const char *type, const char *id, int64_t since_usec, int count, int offset,
                     store_items *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    status rc;
    out->total = -1;
    static const char one[] =
        "SELECT rtype, id, version, updated, deleted, body FROM resource WHERE rtype = ? AND id = ? AND "
        "updated >= ?"
        " UNION ALL SELECT rtype, id, version, updated, deleted, body FROM resource_history"
        " WHERE rkey = (SELECT rkey FROM resource WHERE rtype = ? AND id = ?) AND updated >= ?"
        " ORDER BY version DESC LIMIT ? OFFSET ?";
    static const char of_type[] =
        "SELECT rtype, id, version, updated, deleted, body FROM resource WHERE rtype = ? AND updated >= ?"
        " UNION ALL SELECT rtype, id, version, updated, deleted, body FROM resource_history"
        " WHERE rtype = ? AND updated >= ? ORDER BY updated DESC LIMIT ? OFFSET ?";
    static const char all[] =
        "SELECT rtype, id, version, updated, deleted, body FROM resource WHERE updated >= ?"
        " UNION ALL SELECT rtype, id, version, updated, deleted, body FROM resource_history"
        " WHERE updated >= ? ORDER BY updated DESC LIMIT ? OFFSET ?";
    if (type && id) {
        rc = drv->prepare(d, one, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_text(st, 1, type, -1);
        drv->bind_text(st, 2, id, -1);
        drv->bind_int(st, 3, since_usec);
        drv->bind_text(st, 4, type, -1);
        drv->bind_text(st, 5, id, -1);
        drv->bind_int(st, 6, since_usec);
        drv->bind_int(st, 7, count);
        drv->bind_int(st, 8, offset);
    } else if (type) {
        rc = drv->prepare(d, of_type, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_text(st, 1, type, -1);
        drv->bind_int(st, 2, since_usec);
        drv->bind_text(st, 3, type, -1);
        drv->bind_int(st, 4, since_usec);
        drv->bind_int(st, 5, count);
        drv->bind_int(st, 6, offset);
    } else {
        rc = drv->prepare(d, all, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_int(st, 1, since_usec);
        drv->bind_int(st, 2, since_usec);
        drv->bind_int(st, 3, count);
        drv->bind_int(st, 4, offset);
    }
    rc = collect(s, st, out, 0, e);
    drv->done(st);
    if (rc == ST_OK && type && id && out->n == 0 && offset == 0 && since_usec == 0) {
        store_meta m;
        rc = read_on(s, d, type, id, 0, NULL, &m, e);
        if (rc == ST_GONE) rc = ST_OK;
    }
    return rc;
}

status store_search(store *s, const search_query *q, store_items *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    return store_search_on(s, d, q, out, e);
}

status store_txn_search(store_txn *tx, const search_query *q, store_items *out, err *e) {
    return store_search_on(tx->s, tx->d, q, out, e);
}

status store_everything(store *s, const char *patient_id, store_items *out, err *e) {
    return store_everything_scoped(s, NULL, patient_id, out, e);
}

/* A prepared statement for `base` (whose rows are resources aliased r and
 * whose first `nfixed` placeholders the caller binds) with the scope's row
 * condition added before `tail`; the scope's values are bound here. */
static status prepare_scoped(store *s, db *d, const store_scope *sc, const char *base, const char *tail,
                             int nfixed, db_stmt **st, err *e) {
    buf sql = {0};
    store_binds b = {0};
    buf_puts(&sql, base);
    buf_puts(&sql, " AND ");
    store_scope_row_sql(sc, "r", &sql, &b);
    buf_puts(&sql, tail);
    status rc = s->drv->prepare(d, sql.p, 0, st, e);
    buf_free(&sql);
    if (rc != ST_OK) return rc;
    for (int i = 0; i < b.n; i++) {
        if (b.v[i].kind == 'i')
            s->drv->bind_int(*st, nfixed + 1 + i, b.v[i].i);
        else
            s->drv->bind_text(*st, nfixed + 1 + i, b.v[i].t, -1);
    }
    return ST_OK;
}

status store_everything_scoped(store *s, const store_scope *sc, const char *patient_id, store_items *out,
                               err *e) {
    if (sc && !sc->restricted) sc = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    store_meta m;
    buf body = {0};
    status rc = read_on(s, d, "Patient", patient_id, 0, &body, &m, e);
    if (rc != ST_OK) goto out;
    out->total = -1;
    store_items_push(out, &m, body.p, body.len, 0);
    int64_t pkey = 0;
    rc = store_patient_key(s, d, patient_id, 0, &pkey, e);
    if (rc != ST_OK || !pkey) goto out;
    static const char sql[] = "SELECT rtype, id, version, updated, deleted, body FROM resource"
                              " WHERE pkey = ? AND deleted = 0 AND NOT (rtype = 'Patient' AND id = ?)"
                              " ORDER BY rtype, rkey";
    static const char sql_base[] =
        "SELECT r.rtype, r.id, r.version, r.updated, r.deleted, r.body FROM resource r"
        " WHERE r.pkey = ? AND r.deleted = 0 AND NOT (r.rtype = 'Patient' AND r.id = ?)";
    if (sc)
        rc = prepare_scoped(s, d, sc, sql_base, " ORDER BY r.rtype, r.rkey", 2, &st, e);
    else
        rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, pkey);
    drv->bind_text(st, 2, patient_id, -1);
    rc = collect(s, st, out, 0, e);
    drv->done(st);
    if (rc != ST_OK) goto out;
    if (sc) {
        /* the compartment's resources kept under other patient keys, as
         * everything_refs_sql finds them, within the scope */
        const char *refs_sql = s->everything_refs_sql;
        const char *order = strstr(refs_sql, " ORDER BY");
        buf base = {0};
        buf_append(&base, refs_sql, order ? (size_t)(order - refs_sql) : strlen(refs_sql));
        rc = prepare_scoped(s, d, sc, base.p, order ? order : "", 2, &st, e);
        buf_free(&base);
    } else {
        rc = drv->prepare(d, s->everything_refs_sql, 1, &st, e);
    }
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, patient_id, -1);
    drv->bind_int(st, 2, pkey);
    rc = collect(s, st, out, 0, e);
    drv->done(st);
    if (rc != ST_OK) goto out;
    /* the resources outside any compartment that these refer to
     * (practitioners, organisations, locations, medications...) */
    static const char refs[] =
        "SELECT DISTINCT r.rtype, r.id, r.version, r.updated, r.deleted, r.body FROM idx_ref x"
        " JOIN resource r ON r.rtype = x.target_type AND r.id = x.target_id"
        " WHERE x.pkey = ? AND r.pkey = 0 AND r.deleted = 0";
    rc = drv->prepare(d, refs, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, pkey);
    rc = collect(s, st, out, 1, e);
    drv->done(st);
out:
    buf_free(&body);
    return rc;
}

status store_counts(store *s, store_count **out, size_t *n, err *e) {
    db *d = store_db(s, e);
    *out = NULL;
    *n = 0;
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] =
        "SELECT rtype, COUNT(*) FROM resource WHERE deleted = 0 GROUP BY rtype ORDER BY rtype";
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    size_t cap = 0;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            store_count *v = realloc(*out, cap * sizeof *v);
            if (!v) abort();
            *out = v;
        }
        const char *t = drv->col_text(st, 0, NULL);
        snprintf((*out)[*n].type, sizeof(*out)[*n].type, "%s", t ? t : "");
        (*out)[*n].count = drv->col_int(st, 1);
        (*n)++;
    }
    drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

status store_size(store *s, int64_t *bytes, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    return s->drv->size(d, bytes, e);
}
