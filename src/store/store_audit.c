/*
 * store_audit.c — one block of the access log into its tables
 * (store_int.h, store_audit_put_block; the format is src/access/auditblock.h).
 * Shared by the log's writer and by migration 12, which repacked the
 * row-per-event log.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define INDEX_CHUNK 16

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_str(const void *a, const void *b) {
    const store_str *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

status store_step_done(const db_driver *drv, db_stmt *st, err *e) {
    int r = drv->step(st, e);
    while (r == 1)
        r = drv->step(st, e);
    drv->done(st);
    return r < 0 ? e->code : ST_OK;
}

static status put_patients(const db_driver *drv, db *d, int64_t first, const int64_t *k, size_t n, err *e) {
    static const char one[] =
        "INSERT INTO audit_block_patient (grp, pkey, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
    static const char chunk[] =
        "INSERT INTO audit_block_patient (grp, pkey, seq) VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?),"
        " (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?),"
        " (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?) ON CONFLICT DO NOTHING";
    _Static_assert(INDEX_CHUNK == 16, "chunk SQL has 16 rows");
    for (size_t i = 0; i < n;) {
        size_t m = n - i >= INDEX_CHUNK ? INDEX_CHUNK : 1;
        db_stmt *st = NULL;
        status rc = drv->prepare(d, m == 1 ? one : chunk, 1, &st, e);
        if (rc != ST_OK) return rc;
        for (size_t j = 0; j < m; j++) {
            drv->bind_int(st, (int)(3 * j + 1), first >> STORE_AUDIT_GROUP_BITS);
            drv->bind_int(st, (int)(3 * j + 2), k[i + j]);
            drv->bind_int(st, (int)(3 * j + 3), first);
        }
        rc = store_step_done(drv, st, e);
        if (rc != ST_OK) return rc;
        i += m;
    }
    return ST_OK;
}

status store_audit_put_block(const db_driver *drv, db *d, const store_audit_block *b, err *e) {
    static const char ins[] =
        "INSERT INTO audit_block (seq, last, at_min, at_max, hash, events) VALUES (?, ?, ?, ?, ?, ?)";
    /* ON CONFLICT: rows left behind by blocks removed from the end of the
     * log (tampering, which verify reports) must not stop the writer; a
     * stale row only makes a query read a block it did not need */
    static const char user[] =
        "INSERT INTO audit_block_user (grp, user_name, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
    void (*text)(db_stmt *, int, const char *, int) =
        drv->bind_text_ref ? drv->bind_text_ref : drv->bind_text;
    db_stmt *st = NULL;
    status rc = drv->prepare(d, ins, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, b->first);
    drv->bind_int(st, 2, b->last);
    drv->bind_int(st, 3, b->at_min);
    drv->bind_int(st, 4, b->at_max);
    text(st, 5, b->hash, 64);
    text(st, 6, b->text, (int)b->ntext);
    rc = store_step_done(drv, st, e);
    if (rc != ST_OK) return rc;

    /* the index rows: each patient and user once per block */
    size_t np = 0, nu = 0;
    qsort(b->pkeys, b->npkeys, sizeof *b->pkeys, cmp_i64);
    for (size_t i = 0; i < b->npkeys; i++)
        if (b->pkeys[i] != 0 && (np == 0 || b->pkeys[np - 1] != b->pkeys[i])) b->pkeys[np++] = b->pkeys[i];
    rc = put_patients(drv, d, b->first, b->pkeys, np, e);
    if (rc != ST_OK) return rc;
    qsort(b->users, b->nusers, sizeof *b->users, cmp_str);
    for (size_t i = 0; i < b->nusers; i++)
        if (b->users[i].n != 0 && (nu == 0 || cmp_str(&b->users[nu - 1], &b->users[i]) != 0))
            b->users[nu++] = b->users[i];
    for (size_t i = 0; i < nu; i++) {
        rc = drv->prepare(d, user, 1, &st, e);
        if (rc != ST_OK) return rc;
        drv->bind_int(st, 1, b->first >> STORE_AUDIT_GROUP_BITS);
        text(st, 2, b->users[i].p, (int)b->users[i].n);
        drv->bind_int(st, 3, b->first);
        rc = store_step_done(drv, st, e);
        if (rc != ST_OK) return rc;
    }
    return ST_OK;
}
