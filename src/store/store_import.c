/*
 * store_import.c — the import_job and import_file tables: what file
 * imports were asked for and how far each file is durably imported.
 *
 * Invariants:
 *  - import_file.bytes_done / lines_done / stored / quarantined are only
 *    advanced by store_import_checkpoint, inside the transaction that
 *    stored (or quarantined) the records they count. After a crash they
 *    name exactly the first byte not yet imported, so a resumed import
 *    neither skips nor repeats a record.
 *  - Rows are never deleted: they are the history of what was imported.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "store_int.h"

static int64_t now_usec(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

void store_import_list_free(store_import_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].files);
    free(l->v);
    arena_free(&l->a);
    memset(l, 0, sizeof *l);
}

static const char *dup_col(arena *a, const db_driver *drv, db_stmt *st, int col) {
    size_t n;
    const char *t = drv->col_text(st, col, &n);
    return t ? arena_strndup(a, t, n) : NULL;
}

/* Run a one-statement write in its own transaction; *rows = rows returned. */
static status write1(store *s, const char *sql, status (*bind)(const db_driver *, db_stmt *, const void *),
                     const void *arg, int64_t *ret, int *rows, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    rc = drv->prepare(tx->d, sql, 1, &st, e);
    int n = 0;
    if (rc == ST_OK) {
        bind(drv, st, arg);
        int r;
        while ((r = drv->step(st, e)) == 1) {
            if (n++ == 0 && ret) *ret = drv->col_int(st, 0);
        }
        if (r < 0) rc = e && e->code ? e->code : ST_IO;
        drv->done(st);
    }
    if (rows) *rows = n;
    if (rc != ST_OK) {
        store_rollback(tx);
        return rc;
    }
    return store_commit(tx, e);
}

typedef struct job_args {
    const char *origin, *status, *request, *message;
    int64_t job, now;
} job_args;

static status bind_job_create(const db_driver *drv, db_stmt *st, const void *p) {
    const job_args *a = p;
    drv->bind_int(st, 1, a->now);
    drv->bind_int(st, 2, a->now);
    drv->bind_text(st, 3, a->status, -1);
    drv->bind_text(st, 4, a->origin, -1);
    drv->bind_text(st, 5, a->request, -1);
    return ST_OK;
}

status store_import_job_create(store *s, const char *origin, const char *st_text, const char *request,
                               int64_t *job, err *e) {
    static const char sql[] = "INSERT INTO import_job (created, updated, status, origin, request)"
                              " VALUES (?, ?, ?, ?, ?) RETURNING job_key";
    job_args a = {.origin = origin, .status = st_text, .request = request ? request : "{}", .now = now_usec()};
    return write1(s, sql, bind_job_create, &a, job, NULL, e);
}

static status bind_job_set(const db_driver *drv, db_stmt *st, const void *p) {
    const job_args *a = p;
    drv->bind_text(st, 1, a->status, -1);
    if (a->message) drv->bind_text(st, 2, a->message, -1);
    else drv->bind_null(st, 2);
    drv->bind_int(st, 3, a->now);
    drv->bind_int(st, 4, a->job);
    return ST_OK;
}

status store_import_job_set(store *s, int64_t job, const char *st_text, const char *message, err *e) {
    static const char sql[] =
        "UPDATE import_job SET status = ?, message = ?, updated = ? WHERE job_key = ? RETURNING job_key";
    job_args a = {.status = st_text, .message = message, .job = job, .now = now_usec()};
    int rows = 0;
    status rc = write1(s, sql, bind_job_set, &a, NULL, &rows, e);
    if (rc == ST_OK && rows == 0) rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "no import job %lld", (long long)job);
    return rc;
}

#define FILE_COLUMNS                                                                                                   \
    "job_key, file_no, path, fingerprint, format, size, bytes_done, lines_done, stored, quarantined, status, message"

static void read_file_row(arena *a, const db_driver *drv, db_stmt *st, store_import_file *f) {
    memset(f, 0, sizeof *f);
    f->job = drv->col_int(st, 0);
    f->file_no = (int)drv->col_int(st, 1);
    f->path = dup_col(a, drv, st, 2);
    f->fingerprint = dup_col(a, drv, st, 3);
    f->format = dup_col(a, drv, st, 4);
    f->size = drv->col_int(st, 5);
    f->bytes_done = drv->col_int(st, 6);
    f->lines_done = drv->col_int(st, 7);
    f->stored = drv->col_int(st, 8);
    f->quarantined = drv->col_int(st, 9);
    f->status = dup_col(a, drv, st, 10);
    f->message = dup_col(a, drv, st, 11);
}

static status load_files(store *s, db *d, store_import_list *out, store_import_job *j, err *e) {
    const db_driver *drv = s->drv;
    static const char sql[] = "SELECT " FILE_COLUMNS " FROM import_file WHERE job_key = ? ORDER BY file_no";
    db_stmt *st = NULL;
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, j->key);
    size_t cap = 0;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        if (j->nfiles == cap) {
            cap = cap ? cap * 2 : 4;
            store_import_file *v = realloc(j->files, cap * sizeof *v);
            if (!v) abort();
            j->files = v;
        }
        read_file_row(&out->a, drv, st, &j->files[j->nfiles++]);
    }
    drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

#define JOB_COLUMNS "job_key, created, updated, status, origin, request, message"

static status load_jobs(store *s, db *d, db_stmt *st, store_import_list *out, err *e) {
    const db_driver *drv = s->drv;
    size_t cap = 0;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 8;
            store_import_job *v = realloc(out->v, cap * sizeof *v);
            if (!v) abort();
            out->v = v;
        }
        store_import_job *j = &out->v[out->n++];
        memset(j, 0, sizeof *j);
        j->key = drv->col_int(st, 0);
        j->created_usec = drv->col_int(st, 1);
        j->updated_usec = drv->col_int(st, 2);
        j->status = dup_col(&out->a, drv, st, 3);
        j->origin = dup_col(&out->a, drv, st, 4);
        j->request = dup_col(&out->a, drv, st, 5);
        j->message = dup_col(&out->a, drv, st, 6);
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    for (size_t i = 0; i < out->n; i++) {
        status rc = load_files(s, d, out, &out->v[i], e);
        if (rc != ST_OK) return rc;
    }
    return ST_OK;
}

status store_import_job_get(store *s, int64_t job, store_import_list *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    static const char sql[] = "SELECT " JOB_COLUMNS " FROM import_job WHERE job_key = ?";
    db_stmt *st = NULL;
    status rc = s->drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    s->drv->bind_int(st, 1, job);
    rc = load_jobs(s, d, st, out, e);
    if (rc == ST_OK && out->n == 0)
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "no import job %lld", (long long)job);
    return rc;
}

status store_import_job_list(store *s, const char *st_text, int limit, store_import_list *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    static const char by_status[] =
        "SELECT " JOB_COLUMNS " FROM import_job WHERE status = ? ORDER BY job_key LIMIT ?";
    static const char all[] = "SELECT " JOB_COLUMNS " FROM import_job ORDER BY job_key DESC LIMIT ?";
    db_stmt *st = NULL;
    status rc = s->drv->prepare(d, st_text ? by_status : all, 1, &st, e);
    if (rc != ST_OK) return rc;
    int i = 1;
    if (st_text) s->drv->bind_text(st, i++, st_text, -1);
    s->drv->bind_int(st, i, limit > 0 ? limit : 100);
    return load_jobs(s, d, st, out, e);
}

status store_import_file_find(store *s, const char *fingerprint, store_import_list *out, store_import_file *f,
                              int *found, err *e) {
    *found = 0;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    static const char sql[] =
        "SELECT " FILE_COLUMNS " FROM import_file WHERE fingerprint = ? AND status NOT IN ('skipped', 'resumed')"
        " ORDER BY job_key DESC, file_no DESC LIMIT 1";
    db_stmt *st = NULL;
    status rc = s->drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    s->drv->bind_text(st, 1, fingerprint, -1);
    int r = s->drv->step(st, e);
    if (r == 1) {
        read_file_row(&out->a, s->drv, st, f);
        *found = 1;
    }
    s->drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

static status bind_file_add(const db_driver *drv, db_stmt *st, const void *p) {
    const store_import_file *f = p;
    drv->bind_int(st, 1, f->job);
    drv->bind_int(st, 2, f->file_no);
    drv->bind_text(st, 3, f->path, -1);
    drv->bind_text(st, 4, f->fingerprint, -1);
    drv->bind_text(st, 5, f->format, -1);
    drv->bind_int(st, 6, f->size);
    drv->bind_int(st, 7, f->bytes_done);
    drv->bind_int(st, 8, f->lines_done);
    drv->bind_int(st, 9, f->stored);
    drv->bind_int(st, 10, f->quarantined);
    drv->bind_text(st, 11, f->status ? f->status : "pending", -1);
    if (f->message) drv->bind_text(st, 12, f->message, -1);
    else drv->bind_null(st, 12);
    return ST_OK;
}

static const char file_add_sql[] =
    "INSERT INTO import_file (job_key, file_no, path, fingerprint, format, size, bytes_done, lines_done,"
    " stored, quarantined, status, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING job_key";

status store_import_file_add(store *s, const store_import_file *f, err *e) {
    return write1(s, file_add_sql, bind_file_add, f, NULL, NULL, e);
}

static status run_tx(store_txn *tx, const char *sql, status (*bind)(const db_driver *, db_stmt *, const void *),
                     const void *arg, err *e) {
    const db_driver *drv = tx->s->drv;
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    bind(drv, st, arg);
    int r;
    while ((r = drv->step(st, e)) == 1) {}
    drv->done(st);
    return r < 0 ? (e && e->code ? e->code : ST_IO) : ST_OK;
}

status store_import_file_add_tx(store_txn *tx, const store_import_file *f, err *e) {
    return run_tx(tx, file_add_sql, bind_file_add, f, e);
}

status store_import_checkpoint(store_txn *tx, int64_t job, int file_no, int64_t bytes_done, int64_t lines_done,
                               int64_t stored, int64_t quarantined, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sql[] =
        "UPDATE import_file SET bytes_done = ?, lines_done = ?, stored = ?, quarantined = ?, status = 'running'"
        " WHERE job_key = ? AND file_no = ?";
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, bytes_done);
    drv->bind_int(st, 2, lines_done);
    drv->bind_int(st, 3, stored);
    drv->bind_int(st, 4, quarantined);
    drv->bind_int(st, 5, job);
    drv->bind_int(st, 6, file_no);
    int r = drv->step(st, e);
    drv->done(st);
    return r < 0 ? (e && e->code ? e->code : ST_IO) : ST_OK;
}

typedef struct file_set_args {
    const char *status, *message;
    int64_t job;
    int file_no;
} file_set_args;

static status bind_file_set(const db_driver *drv, db_stmt *st, const void *p) {
    const file_set_args *a = p;
    drv->bind_text(st, 1, a->status, -1);
    if (a->message) drv->bind_text(st, 2, a->message, -1);
    else drv->bind_null(st, 2);
    drv->bind_int(st, 3, a->job);
    drv->bind_int(st, 4, a->file_no);
    return ST_OK;
}

static const char file_set_sql[] =
    "UPDATE import_file SET status = ?, message = ? WHERE job_key = ? AND file_no = ? RETURNING job_key";

status store_import_file_set(store *s, int64_t job, int file_no, const char *st_text, const char *message, err *e) {
    file_set_args a = {st_text, message, job, file_no};
    return write1(s, file_set_sql, bind_file_set, &a, NULL, NULL, e);
}

status store_import_file_set_tx(store_txn *tx, int64_t job, int file_no, const char *st_text, const char *message,
                                err *e) {
    file_set_args a = {st_text, message, job, file_no};
    return run_tx(tx, file_set_sql, bind_file_set, &a, e);
}
