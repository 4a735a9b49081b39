/*
 * store_sqlite.c — the embedded SQLite backend of the store's SQL driver
 * interface (store_int.h).
 *
 * Durability: WAL journal with synchronous=FULL, so a COMMIT returns only
 * after the WAL is fsynced: a transaction acknowledged to a client survives
 * kill -9 and power loss. Readers never block the writer and vice versa.
 * Writes are serialised by store.c holding store->write_lock around each
 * write transaction (serial_writes = 1), so BEGIN IMMEDIATE never waits on
 * another of our own threads; busy_timeout covers other processes (a CLI
 * command against a database a server has open).
 *
 * Checkpoints: the shared writer copies little of the WAL back into the
 * database file itself (SQLite's automatic checkpoint copies all of it,
 * inside the COMMIT of whichever write crosses 1,000 pages, while every
 * other writer waits on store->write_lock). A thread of its own with its
 * own connection runs a PASSIVE checkpoint whenever a commit leaves
 * CKPT_FRAMES or more in the WAL; PASSIVE never blocks readers or the
 * writer. The WAL starts again from its beginning only when a write
 * begins with every frame copied back, which a steady stream of writes
 * never allows; so at CKPT_RESTART_FRAMES the writer, in its commit, copies
 * what the thread has not yet (the frames since the thread's last run) and
 * the next write restarts the WAL. The WAL stays near that size.
 *
 * WAL writes: connections open through sqlite_walbuf.c's VFS, which hands
 * a commit's frames to the kernel in a few large writes instead of two
 * per frame (switched on per schema only under synchronous=FULL).
 *
 * Statement cache: a small open-addressed table keyed by the SQL text's
 * address (callers pass literals when caching).
 */
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/hash.h"
#include "../base/log.h"
#include "sqlite_walbuf.h"
#include "store_int.h"

#define SQLITE_CACHE_SLOTS 128
/* Searches build their SQL per request (store_search.c), but the text of
 * one shape of search (its parameters, modifiers and the user's scope) is
 * the same every time: values are bound. Preparing it was a fifth of an
 * Observation search's CPU (bench.py at 1,000,029 resources), so a few of
 * the latest texts keep their prepared statements. */
#define SQLITE_TEXT_SLOTS   32
#define CKPT_FRAMES         1000 /* SQLite's own automatic checkpoint threshold */
#define CKPT_RESTART_FRAMES 4096 /* 16 MiB of WAL at 4 KiB pages */

typedef struct sq_ckpt {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int want, stop, busy;
    char *path;
} sq_ckpt;

struct db_stmt {
    sqlite3_stmt *st;
    int cached; /* 1: in the cache keyed by the SQL's address; 2: by its text */
    int in_use; /* text-cached: handed out and not yet done */
    char *text; /* text-cached: its SQL */
    uint64_t hash;
    db *owner;
};

struct db {
    sqlite3 *h;
    char *path;
    sq_ckpt *ckpt;                     /* the shared writer's checkpoint thread, or NULL */
    db_stmt *texts[SQLITE_TEXT_SLOTS]; /* SELECTs built at run time, by text */
    unsigned next_text;
    struct {
        const char *sql;
        db_stmt *stmt;
    } cache[SQLITE_CACHE_SLOTS];
};

static status sq_err(db *d, err *e, const char *what) {
    int code = sqlite3_extended_errcode(d->h);
    status st = ST_IO;
    const char *issue = "exception";
    if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        st = ST_CONFLICT;
        issue = "conflict";
    }
    return err_set(e, st, issue, NULL, "sqlite %s: %s", what, sqlite3_errmsg(d->h));
}

static int mkdir_parents(const char *path) {
    char *dup = strdup(path);
    if (!dup) return -1;
    char *dir = dirname(dup);
    int rc = 0;
    if (strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0) {
        struct stat sb;
        if (stat(dir, &sb) != 0) {
            rc = mkdir_parents(dir);
            if (rc == 0 && mkdir(dir, 0750) != 0 && errno != EEXIST) rc = -1;
        }
    }
    free(dup);
    return rc;
}

/* Before the first connection: no global memory statistics. With them on
 * (SQLite's default), every allocation in every connection takes one
 * process-wide mutex, which the server's worker threads then queue on. */
static pthread_once_t sq_once = PTHREAD_ONCE_INIT;
static void sq_configure(void) {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    walbuf_register();
}

/* Gather the WAL writes of `schema` (sqlite_walbuf.c) when it runs with
 * synchronous FULL or EXTRA: SQLite then syncs, and so flushes, the WAL
 * before publishing a commit. CONCORD_SQLITE_PRAGMAS may have lowered it. */
static void sq_gather_wal(sqlite3 *h, const char *schema) {
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA %s.synchronous", schema);
    sqlite3_stmt *st = NULL;
    int level = 0;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        level = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (level >= 2) walbuf_enable(h, schema);
}

/* The access log's file beside database file `path` (SQLITE_AUDIT_SUFFIX). */
static char *audit_path_of(const char *path) {
    size_t n = strlen(path) + sizeof SQLITE_AUDIT_SUFFIX;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, SQLITE_AUDIT_SUFFIX);
    return p;
}

/* Open `path`; with attach_audit, the access log's file is attached as
 * schema `audit` (every connection but the shared writer and the access
 * log's own: see db_sqlite_driver). */
static status sq_open(const char *path, int attach_audit, db **out, err *e) {
    pthread_once(&sq_once, sq_configure);
    status rc = ST_OK;
    db *d = calloc(1, sizeof *d);
    if (!d) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    d->path = strdup(path);
    if (mkdir_parents(path) != 0) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot create the directory for %s: %s", path,
                     strerror(errno));
        goto out;
    }
    if (sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        sqlite3_vfs_find(WALBUF_VFS) ? WALBUF_VFS : NULL) != SQLITE_OK) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot open database %s: %s", path,
                     d->h ? sqlite3_errmsg(d->h) : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(d->h, 30000);
    static const char pragmas[] = "PRAGMA journal_mode=WAL;"
                                  "PRAGMA synchronous=FULL;"
                                  "PRAGMA foreign_keys=OFF;"
                                  "PRAGMA temp_store=MEMORY;"
                                  "PRAGMA cache_size=-16384;"
                                  /* reads through a 64 MiB map: each connection maps
                                   * the file separately and resident pages count once
                                   * per mapping, so a larger map inflates RSS */
                                  "PRAGMA mmap_size=67108864;"
                                  /* ANALYZE samples at most this many index rows per
                                   * index: statistics stay cheap on large stores */
                                  "PRAGMA analysis_limit=1000;";
    char *msg = NULL;
    if (sqlite3_exec(d->h, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot configure database %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        goto out;
    }
    if (attach_audit) {
        char *apath = audit_path_of(path);
        char *sql = apath ? sqlite3_mprintf("ATTACH DATABASE %Q AS audit;"
                                            "PRAGMA audit.journal_mode=WAL;"
                                            "PRAGMA audit.synchronous=FULL;",
                                            apath)
                          : NULL;
        if (!sql) {
            free(apath);
            rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
            goto out;
        }
        int ok = sqlite3_exec(d->h, sql, NULL, NULL, &msg) == SQLITE_OK;
        sqlite3_free(sql);
        if (!ok) {
            rc = err_set(e, ST_IO, "exception", NULL, "cannot open the access log %s: %s", apath,
                         msg ? msg : "?");
            sqlite3_free(msg);
            free(apath);
            goto out;
        }
        free(apath);
    }
    const char *extra = getenv("CONCORD_SQLITE_PRAGMAS"); /* tuning experiments */
    if (extra && sqlite3_exec(d->h, extra, NULL, NULL, &msg) != SQLITE_OK) {
        rc = err_set(e, ST_IO, "exception", NULL, "CONCORD_SQLITE_PRAGMAS: %s", msg ? msg : "?");
        sqlite3_free(msg);
        goto out;
    }
    sq_gather_wal(d->h, "main");
    if (attach_audit) sq_gather_wal(d->h, "audit");
out:
    if (rc != ST_OK) {
        if (d->h) sqlite3_close(d->h);
        free(d->path);
        free(d);
        d = NULL;
    }
    *out = d;
    return rc;
}

static const char *sq_path(const store *s) {
    return strncmp(s->url, "sqlite:", 7) == 0 ? s->url + 7 : s->url;
}

static status sq_connect(store *s, db **out, err *e) {
    return sq_open(sq_path(s), 1, out, e);
}

/* The access log's writer: its file as the main database, so that its
 * BEGIN IMMEDIATE locks that file only. */
static status sq_connect_audit(store *s, db **out, err *e) {
    char *apath = audit_path_of(sq_path(s));
    if (!apath) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    status rc = sq_open(apath, 0, out, e);
    free(apath);
    return rc;
}

static void stmt_free(db_stmt *s);

static void ckpt_stop(sq_ckpt *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->path);
    free(c);
}

static void sq_disconnect(db *d) {
    if (!d) return;
    if (d->ckpt) {
        sqlite3_wal_hook(d->h, NULL, NULL);
        ckpt_stop(d->ckpt);
    }
    for (int i = 0; i < SQLITE_CACHE_SLOTS; i++) {
        if (d->cache[i].stmt) {
            sqlite3_finalize(d->cache[i].stmt->st);
            free(d->cache[i].stmt);
        }
    }
    for (int i = 0; i < SQLITE_TEXT_SLOTS; i++)
        stmt_free(d->texts[i]);
    sqlite3_close(d->h);
    free(d->path);
    free(d);
}

static status sq_exec(db *d, const char *sql, err *e) {
    char *msg = NULL;
    if (sqlite3_exec(d->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        status st = sq_err(d, e, "exec");
        sqlite3_free(msg);
        return st;
    }
    return ST_OK;
}

static void stmt_free(db_stmt *s) {
    if (!s) return;
    sqlite3_finalize(s->st);
    free(s->text);
    free(s);
}

/* A SELECT built at run time: its prepared statement from the text cache,
 * or prepared and kept there (evicting the oldest entry not in use). A
 * statement in use (the same text asked for again before done) is not
 * shared: that caller gets one of its own. */
static status prepare_text(db *d, const char *sql, db_stmt **out, err *e) {
    size_t n = strlen(sql);
    uint64_t h = fnv1a(FNV1A_INIT, sql, n);
    for (int i = 0; i < SQLITE_TEXT_SLOTS; i++) {
        db_stmt *t = d->texts[i];
        if (t && t->hash == h && !t->in_use && strcmp(t->text, sql) == 0) {
            t->in_use = 1;
            *out = t;
            return ST_OK;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(d->h, sql, (int)n + 1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return sq_err(d, e, "prepare");
    db_stmt *s = calloc(1, sizeof *s);
    char *text = s ? malloc(n + 1) : NULL;
    if (!text) {
        free(s);
        sqlite3_finalize(st);
        return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    }
    memcpy(text, sql, n + 1);
    *s = (db_stmt){.st = st, .cached = 2, .in_use = 1, .text = text, .hash = h, .owner = d};
    for (int k = 0; k < SQLITE_TEXT_SLOTS; k++) {
        unsigned slot = d->next_text++ % SQLITE_TEXT_SLOTS;
        if (d->texts[slot] && d->texts[slot]->in_use) continue;
        stmt_free(d->texts[slot]);
        d->texts[slot] = s;
        *out = s;
        return ST_OK;
    }
    s->cached = 0; /* every slot in use: this one is the caller's alone */
    *out = s;
    return ST_OK;
}

static status sq_prepare(db *d, const char *sql, int cache, db_stmt **out, err *e) {
    unsigned slot = 0;
    if (cache) {
        uintptr_t k = (uintptr_t)sql;
        slot = (unsigned)((k >> 3) * 2654435761u) % SQLITE_CACHE_SLOTS;
        for (unsigned i = 0; i < SQLITE_CACHE_SLOTS; i++) {
            unsigned j = (slot + i) % SQLITE_CACHE_SLOTS;
            if (d->cache[j].sql == sql) {
                *out = d->cache[j].stmt;
                return ST_OK;
            }
            if (!d->cache[j].sql) {
                slot = j;
                break;
            }
            if (i == SQLITE_CACHE_SLOTS - 1) cache = 0; /* full: don't cache */
        }
    }
    if (!cache && strncmp(sql, "SELECT ", 7) == 0) return prepare_text(d, sql, out, e);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(d->h, sql, -1, cache ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) != SQLITE_OK)
        return sq_err(d, e, "prepare");
    db_stmt *s = calloc(1, sizeof *s);
    if (!s) {
        sqlite3_finalize(st);
        return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    }
    s->st = st;
    s->cached = cache;
    s->owner = d;
    if (cache) {
        d->cache[slot].sql = sql;
        d->cache[slot].stmt = s;
    }
    *out = s;
    return ST_OK;
}

static void sq_bind_int(db_stmt *st, int idx, int64_t v) {
    sqlite3_bind_int64(st->st, idx, v);
}
static void sq_bind_text(db_stmt *st, int idx, const char *s, int n) {
    if (!s)
        sqlite3_bind_null(st->st, idx);
    else
        sqlite3_bind_text(st->st, idx, s, n, SQLITE_TRANSIENT);
}
static void sq_bind_text_ref(db_stmt *st, int idx, const char *s, int n) {
    if (!s)
        sqlite3_bind_null(st->st, idx);
    else
        sqlite3_bind_text(st->st, idx, s, n, SQLITE_STATIC);
}
static void sq_bind_double(db_stmt *st, int idx, double v) {
    sqlite3_bind_double(st->st, idx, v);
}
static void sq_bind_null(db_stmt *st, int idx) {
    sqlite3_bind_null(st->st, idx);
}

static int sq_step(db_stmt *st, err *e) {
    int rc = sqlite3_step(st->st);
    if (rc == SQLITE_ROW) return 1;
    if (rc == SQLITE_DONE) return 0;
    sq_err(st->owner, e, "step");
    return -1;
}

static int64_t sq_col_int(db_stmt *st, int col) {
    return sqlite3_column_int64(st->st, col);
}
static double sq_col_double(db_stmt *st, int col) {
    return sqlite3_column_double(st->st, col);
}
static const char *sq_col_text(db_stmt *st, int col, size_t *len) {
    const unsigned char *t = sqlite3_column_text(st->st, col);
    if (len) *len = t ? (size_t)sqlite3_column_bytes(st->st, col) : 0;
    return (const char *)t;
}

static void sq_done(db_stmt *st) {
    if (!st) return;
    if (st->cached) {
        sqlite3_reset(st->st);
        sqlite3_clear_bindings(st->st);
        st->in_use = 0;
    } else {
        stmt_free(st);
    }
}

static status sq_begin(db *d, err *e) {
    return sq_exec(d, "BEGIN IMMEDIATE", e);
}
static status sq_commit(db *d, err *e) {
    return sq_exec(d, "COMMIT", e);
}
static void sq_rollback(db *d) {
    if (!sqlite3_get_autocommit(d->h)) sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
}

static status sq_size(db *d, int64_t *bytes, err *e) {
    struct stat sb;
    int64_t total = 0;
    if (stat(d->path, &sb) == 0) total += sb.st_size;
    size_t n = strlen(d->path) + 8;
    char *wal = malloc(n);
    if (wal) {
        snprintf(wal, n, "%s-wal", d->path);
        if (stat(wal, &sb) == 0) total += sb.st_size;
        free(wal);
    }
    *bytes = total;
    return ST_OK;
}

/* ---- checkpoints off the write lock ------------------------------------ */

static void *ckpt_main(void *arg) {
    sq_ckpt *c = arg;
    db *d = NULL;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->want && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop) break;
        c->want = 0;
        c->busy = 1;
        pthread_mutex_unlock(&c->mu);
        err e;
        if (!d && sq_open(c->path, 0, &d, &e) != ST_OK) {
            log_warn("sqlite: checkpoint connection: %s (the writer checkpoints instead)", e.msg);
            d = NULL;
        }
        if (d) {
            int rc = sqlite3_wal_checkpoint_v2(d->h, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                log_warn("sqlite: checkpoint: %s", sqlite3_errmsg(d->h));
        }
        pthread_mutex_lock(&c->mu);
        c->busy = 0;
    }
    pthread_mutex_unlock(&c->mu);
    sq_disconnect(d);
    return NULL;
}

/* After every commit of the writer: `frames` pages are in the WAL. */
static int sq_wal_hook(void *arg, sqlite3 *h, const char *name, int frames) {
    sq_ckpt *c = arg;
    if (frames < CKPT_FRAMES) return SQLITE_OK;
    pthread_mutex_lock(&c->mu);
    int finish = frames >= CKPT_RESTART_FRAMES && (!c->busy || frames >= 4 * CKPT_RESTART_FRAMES);
    if (!finish && !c->busy) {
        c->want = 1;
        pthread_cond_signal(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    /* BUSY while the thread is at it: the next commit tries again */
    if (finish) sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

static status sq_writer_init(db *d, err *e) {
    sq_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(d->path))) {
        free(c);
        return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->th, NULL, ckpt_main, c) != 0) {
        /* SQLite's automatic checkpoint stays in place */
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c->path);
        free(c);
        return ST_OK;
    }
    pthread_setname_np(c->th, "checkpoint");
    d->ckpt = c;
    sqlite3_wal_hook(d->h, sq_wal_hook, c); /* replaces the automatic checkpoint */
    return ST_OK;
}

/* The pager's data version: SQLite moves it at the start of a read
 * transaction that finds the file changed by another connection. */
static int sq_data_version(db *d, uint64_t *v) {
    unsigned int u = 0;
    if (sqlite3_file_control(d->h, "main", SQLITE_FCNTL_DATA_VERSION, &u) != SQLITE_OK) return -1;
    *v = u;
    return 0;
}

const db_driver db_sqlite_driver = {
    .name = "sqlite",
    .for_update = "",
    .serial_writes = 1,
    /* the one writer keeps more of the indexes' hot pages than readers.
     * It leaves the access log's file: BEGIN IMMEDIATE takes the write
     * lock of every attached database, and a resource write need not wait
     * for the access log's writer nor it for them (store_begin_audit) */
    .writer_setup = "PRAGMA cache_size=-131072; DETACH DATABASE audit",
    /* keep the planner's statistics current as the store grows: without
     * them SQLite scans every resource of a type in rkey order rather than
     * looking up the few an index subquery names (Patient?identifier=...) */
    .maintenance = "ANALYZE",
    .writer_init = sq_writer_init,
    .connect = sq_connect,
    .connect_audit = sq_connect_audit,
    .disconnect = sq_disconnect,
    .exec = sq_exec,
    .prepare = sq_prepare,
    .bind_int = sq_bind_int,
    .bind_text = sq_bind_text,
    .bind_text_ref = sq_bind_text_ref,
    .bind_double = sq_bind_double,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .col_int = sq_col_int,
    .col_double = sq_col_double,
    .col_text = sq_col_text,
    .done = sq_done,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .size = sq_size,
    .data_version = sq_data_version,
};
