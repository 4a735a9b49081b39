/*
 * store_pg.c — the PostgreSQL backend of the store's SQL driver interface
 * (store_int.h), over libpq.
 *
 * SQL arrives with '?' placeholders and is rewritten to $1..$n (our SQL
 * never puts '?' inside literals). Parameters travel in text format.
 * Cached statements are prepared once per connection (PQprepare, named
 * "c<slot>"); others go through PQexecParams. A statement executes on its
 * first step and its rows are then read from the PGresult.
 *
 * Durability: PostgreSQL's COMMIT returns after the WAL flush
 * (synchronous_commit=on, which this driver sets for its sessions).
 * Concurrency: write transactions run concurrently; store.c locks the rows it
 * updates with SELECT ... FOR UPDATE, and unique violations (two creates of
 * one id at once) come back as ST_CONFLICT.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "store_int.h"

#define PG_CACHE_SLOTS 128
#define PG_MAX_PARAMS 32766 /* as SQLite's default, under PostgreSQL's 65535 */

struct db_stmt {
    db *owner;
    char *sql; /* rewritten with $n */
    int cached, slot, nparams;
    char **vals;
    PGresult *res;
    int row, nrows, executed;
};

struct db {
    PGconn *h;
    struct {
        const char *sql;
        db_stmt *stmt;
        int prepared;
    } cache[PG_CACHE_SLOTS];
};

static status pg_result_err(PGresult *r, PGconn *h, err *e, const char *what) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(h);
    status st = ST_IO;
    const char *issue = "exception";
    if (state && strcmp(state, "23505") == 0) {
        st = ST_CONFLICT;
        issue = "conflict";
    } else if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
        st = ST_CONFLICT;
        issue = "transient";
    }
    char clean[300];
    snprintf(clean, sizeof clean, "%s", msg ? msg : "?");
    size_t n = strlen(clean);
    while (n && (clean[n - 1] == '\n' || clean[n - 1] == ' ')) clean[--n] = 0;
    return err_set(e, st, issue, NULL, "postgresql %s: %s", what, clean);
}

static status pg_connect(store *s, db **out, err *e) {
    db *d = calloc(1, sizeof *d);
    if (!d) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    d->h = PQconnectdb(s->url);
    if (PQstatus(d->h) != CONNECTION_OK) {
        status st = err_set(e, ST_IO, "exception", NULL, "cannot connect to PostgreSQL: %s", PQerrorMessage(d->h));
        PQfinish(d->h);
        free(d);
        *out = NULL;
        return st;
    }
    PGresult *r = PQexec(d->h, "SET synchronous_commit = on; SET client_min_messages = warning");
    PQclear(r);
    *out = d;
    return ST_OK;
}

static void stmt_free(db_stmt *st) {
    if (!st) return;
    if (st->res) PQclear(st->res);
    if (st->vals) {
        for (int i = 0; i < st->nparams; i++) free(st->vals[i]);
        free(st->vals);
    }
    free(st->sql);
    free(st);
}

static void pg_disconnect(db *d) {
    if (!d) return;
    for (int i = 0; i < PG_CACHE_SLOTS; i++) stmt_free(d->cache[i].stmt);
    PQfinish(d->h);
    free(d);
}

static status pg_exec(db *d, const char *sql, err *e) {
    PGresult *r = PQexec(d->h, sql);
    ExecStatusType t = PQresultStatus(r);
    status st = ST_OK;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) st = pg_result_err(r, d->h, e, "exec");
    PQclear(r);
    return st;
}

/* '?' -> $n */
static char *rewrite(const char *sql, int *nparams) {
    buf b = {0};
    int n = 0;
    for (const char *p = sql; *p; p++) {
        if (*p == '?') buf_printf(&b, "$%d", ++n);
        else buf_putc(&b, *p);
    }
    *nparams = n;
    return buf_take(&b);
}

static status pg_prepare(db *d, const char *sql, int cache, db_stmt **out, err *e) {
    unsigned slot = 0;
    if (cache) {
        uintptr_t k = (uintptr_t)sql;
        slot = (unsigned)((k >> 3) * 2654435761u) % PG_CACHE_SLOTS;
        for (unsigned i = 0; i < PG_CACHE_SLOTS; i++) {
            unsigned j = (slot + i) % PG_CACHE_SLOTS;
            if (d->cache[j].sql == sql) {
                *out = d->cache[j].stmt;
                return ST_OK;
            }
            if (!d->cache[j].sql) {
                slot = j;
                break;
            }
            if (i == PG_CACHE_SLOTS - 1) cache = 0;
        }
    }
    db_stmt *st = calloc(1, sizeof *st);
    if (!st) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    st->owner = d;
    st->sql = rewrite(sql, &st->nparams);
    if (st->nparams > PG_MAX_PARAMS) {
        stmt_free(st);
        return err_set(e, ST_INVALID, "too-costly", NULL, "query has too many parameters");
    }
    st->vals = calloc((size_t)st->nparams + 1, sizeof(char *));
    st->cached = cache;
    st->slot = (int)slot;
    if (cache) {
        char name[16];
        snprintf(name, sizeof name, "c%u", slot);
        PGresult *r = PQprepare(d->h, name, st->sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            status rc = pg_result_err(r, d->h, e, "prepare");
            PQclear(r);
            stmt_free(st);
            return rc;
        }
        PQclear(r);
        d->cache[slot].sql = sql;
        d->cache[slot].stmt = st;
    }
    *out = st;
    return ST_OK;
}

static void set_val(db_stmt *st, int idx, char *v) {
    if (idx < 1 || idx > st->nparams) {
        free(v);
        return;
    }
    free(st->vals[idx - 1]);
    st->vals[idx - 1] = v;
}

static void pg_bind_int(db_stmt *st, int idx, int64_t v) {
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    set_val(st, idx, strdup(tmp));
}
static void pg_bind_text(db_stmt *st, int idx, const char *s, int n) {
    if (!s) set_val(st, idx, NULL);
    else set_val(st, idx, n < 0 ? strdup(s) : strndup(s, (size_t)n));
}
static void pg_bind_double(db_stmt *st, int idx, double v) {
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.17g", v);
    set_val(st, idx, strdup(tmp));
}
static void pg_bind_null(db_stmt *st, int idx) { set_val(st, idx, NULL); }

static int pg_step(db_stmt *st, err *e) {
    if (!st->executed) {
        st->executed = 1;
        if (st->cached) {
            char name[16];
            snprintf(name, sizeof name, "c%d", st->slot);
            st->res = PQexecPrepared(st->owner->h, name, st->nparams, (const char *const *)st->vals, NULL, NULL, 0);
        } else {
            st->res = PQexecParams(st->owner->h, st->sql, st->nparams, NULL, (const char *const *)st->vals, NULL,
                                   NULL, 0);
        }
        ExecStatusType t = PQresultStatus(st->res);
        if (t == PGRES_COMMAND_OK) {
            st->nrows = 0;
        } else if (t == PGRES_TUPLES_OK) {
            st->nrows = PQntuples(st->res);
        } else {
            pg_result_err(st->res, st->owner->h, e, "query");
            return -1;
        }
        st->row = -1;
    }
    if (st->row + 1 < st->nrows) {
        st->row++;
        return 1;
    }
    return 0;
}

static int64_t pg_col_int(db_stmt *st, int col) {
    if (PQgetisnull(st->res, st->row, col)) return 0;
    return strtoll(PQgetvalue(st->res, st->row, col), NULL, 10);
}
static double pg_col_double(db_stmt *st, int col) {
    if (PQgetisnull(st->res, st->row, col)) return 0;
    return strtod(PQgetvalue(st->res, st->row, col), NULL);
}
static const char *pg_col_text(db_stmt *st, int col, size_t *len) {
    if (PQgetisnull(st->res, st->row, col)) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = (size_t)PQgetlength(st->res, st->row, col);
    return PQgetvalue(st->res, st->row, col);
}

static void pg_done(db_stmt *st) {
    if (!st) return;
    if (st->cached) {
        if (st->res) PQclear(st->res);
        st->res = NULL;
        st->executed = 0;
        st->row = st->nrows = 0;
        for (int i = 0; i < st->nparams; i++) {
            free(st->vals[i]);
            st->vals[i] = NULL;
        }
    } else {
        stmt_free(st);
    }
}

static status pg_begin(db *d, err *e) { return pg_exec(d, "BEGIN", e); }
static status pg_commit(db *d, err *e) { return pg_exec(d, "COMMIT", e); }
static void pg_rollback(db *d) {
    if (PQtransactionStatus(d->h) != PQTRANS_IDLE) {
        PGresult *r = PQexec(d->h, "ROLLBACK");
        PQclear(r);
    }
}

static status pg_size(db *d, int64_t *bytes, err *e) {
    PGresult *r = PQexec(d->h, "SELECT pg_database_size(current_database())");
    status st = ST_OK;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) *bytes = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else st = pg_result_err(r, d->h, e, "size");
    PQclear(r);
    return st;
}

const db_driver db_pg_driver = {
    .name = "postgresql",
    .for_update = " FOR UPDATE",
    .serial_writes = 0,
    .writer_setup = NULL,
    .maintenance = NULL, /* autovacuum keeps PostgreSQL's statistics */
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .exec = pg_exec,
    .prepare = pg_prepare,
    .bind_int = pg_bind_int,
    .bind_text = pg_bind_text,
    .bind_double = pg_bind_double,
    .bind_null = pg_bind_null,
    .step = pg_step,
    .col_int = pg_col_int,
    .col_double = pg_col_double,
    .col_text = pg_col_text,
    .done = pg_done,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .size = pg_size,
};
