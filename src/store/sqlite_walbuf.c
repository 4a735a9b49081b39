/*
 * sqlite_walbuf.c — an SQLite VFS over the default one that gathers a
 * writer's WAL frames into one write per run of consecutive frames.
 *
 * Why: SQLite writes each WAL frame as two pwrite calls (its 24-byte header,
 * then the page). A transaction Bundle of 100 resources writes 250–400
 * frames, so its COMMIT made 500–800 system calls while holding the write
 * lock; on the bench machine that was a tenth of the server's CPU in
 * bundle workloads (perf, 23 Nov 2026). Gathered, the same frames go to
 * the kernel in one or two calls.
 *
 * What it does: on a WAL file whose database has gathering on
 * (walbuf_enable), a write that continues the pending run is copied into a
 * buffer; any other write first flushes the run. The run is flushed —
 * written, in order, before anything that could observe the file:
 *   - xSync (so the commit's fsync covers it: SQLite syncs the WAL before
 *     publishing a commit under synchronous=FULL, the only mode gathering is
 *     enabled for),
 *   - xRead, xTruncate, xFileSize, xClose on the WAL,
 *   - xShmBarrier and every xShmLock unlock on its database (SQLite writes
 *     the WAL only while holding the WAL write lock, so no frames of a
 *     rolled-back transaction can linger in one connection's buffer while
 *     another connection becomes the writer and reuses those offsets).
 * A failed flush is reported by the call that caused it, or — when that
 * call cannot report (xShmBarrier) — by the next write or sync, so the
 * transaction fails instead of being acknowledged.
 *
 * Everything else passes straight through to the default VFS.
 */
#include "sqlite_walbuf.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The longest run kept. */
#define WALBUF_CAP (1u << 20)
/* A run is written in pieces of at most this: the unix VFS's xWrite takes
 * the length modulo 128 KiB (os_unix.c seekAndWriteFd, SQLite 3.40), so a
 * longer write is split by it anyway and one of exactly 128 KiB is taken
 * for a full disk. */
#define WALBUF_PIECE ((size_t)124 << 10)
/* SQLITE_FCNTL codes above 1000 are free for applications. */
#define WALBUF_FCNTL_ENABLE 0x43574200

typedef struct wb_file wb_file;
struct wb_file {
    sqlite3_file base;  /* our methods */
    sqlite3_file *real; /* the default VFS's file, allocated right after this struct */
    int is_wal;
    int enabled; /* database: gather its WAL's writes */
    wb_file *db; /* WAL: its database file (NULL once that closes) */
    wb_file *wal;
    unsigned char *buf; /* WAL: the pending run [off, off + len) */
    size_t len;
    sqlite3_int64 off;
    int sticky; /* WAL: a failed flush not yet reported */
};

static sqlite3_vfs *wb_real;
static atomic_uint_fast64_t st_in, st_out, st_bytes;

static int wb_flush(wb_file *f) {
    int rc = SQLITE_OK;
    for (size_t at = 0; at < f->len && rc == SQLITE_OK; at += WALBUF_PIECE) {
        size_t n = f->len - at < WALBUF_PIECE ? f->len - at : WALBUF_PIECE;
        rc = f->real->pMethods->xWrite(f->real, f->buf + at, (int)n, f->off + (sqlite3_int64)at);
        atomic_fetch_add(&st_out, 1);
        atomic_fetch_add(&st_bytes, n);
    }
    f->len = 0;
    if (rc != SQLITE_OK && !f->sticky) f->sticky = rc;
    return rc;
}

/* Flush, and hand over any failure not yet reported (a no-op on any file
 * but a WAL: only those buffer). */
static int wb_settle(wb_file *f) {
    wb_flush(f);
    int rc = f->sticky;
    f->sticky = SQLITE_OK;
    return rc;
}

static int wb_gathering(const wb_file *f) {
    return f->is_wal && f->db && f->db->enabled;
}

static int wb_close(sqlite3_file *pf) {
    wb_file *f = (wb_file *)pf;
    int rc = wb_settle(f);
    if (f->is_wal && f->db && f->db->wal == f) f->db->wal = NULL;
    if (!f->is_wal && f->wal) f->wal->db = NULL;
    free(f->buf);
    f->buf = NULL;
    int rc2 = f->real->pMethods->xClose(f->real);
    return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *pf, void *p, int amt, sqlite3_int64 off) {
    wb_file *f = (wb_file *)pf;
    int rc = wb_settle(f);
    if (rc != SQLITE_OK) return rc;
    return f->real->pMethods->xRead(f->real, p, amt, off);
}

static int wb_write(sqlite3_file *pf, const void *p, int amt, sqlite3_int64 off) {
    wb_file *f = (wb_file *)pf;
    if (!f->is_wal) return f->real->pMethods->xWrite(f->real, p, amt, off);
    if (f->sticky) return wb_settle(f);
    if (!wb_gathering(f) || amt <= 0) {
        int rc = wb_settle(f);
        return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, p, amt, off);
    }
    atomic_fetch_add(&st_in, 1);
    if (!f->buf) {
        f->buf = malloc(WALBUF_CAP);
        if (!f->buf) return f->real->pMethods->xWrite(f->real, p, amt, off);
    }
    if (f->len && (off != f->off + (sqlite3_int64)f->len || f->len + (size_t)amt > WALBUF_CAP)) {
        int rc = wb_settle(f);
        if (rc != SQLITE_OK) return rc;
    }
    if ((size_t)amt > WALBUF_PIECE) { /* SQLite writes pages and headers; never this */
        atomic_fetch_add(&st_out, 1);
        atomic_fetch_add(&st_bytes, (uint64_t)amt);
        return f->real->pMethods->xWrite(f->real, p, amt, off);
    }
    if (!f->len) f->off = off;
    memcpy(f->buf + f->len, p, (size_t)amt);
    f->len += (size_t)amt;
    return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *pf, sqlite3_int64 size) {
    wb_file *f = (wb_file *)pf;
    int rc = wb_settle(f);
    if (rc != SQLITE_OK) return rc;
    return f->real->pMethods->xTruncate(f->real, size);
}

static int wb_sync(sqlite3_file *pf, int flags) {
    wb_file *f = (wb_file *)pf;
    int rc = wb_settle(f);
    if (rc != SQLITE_OK) return rc;
    return f->real->pMethods->xSync(f->real, flags);
}

static int wb_file_size(sqlite3_file *pf, sqlite3_int64 *size) {
    wb_file *f = (wb_file *)pf;
    int rc = wb_settle(f);
    if (rc != SQLITE_OK) return rc;
    return f->real->pMethods->xFileSize(f->real, size);
}

static int wb_lock(sqlite3_file *pf, int lock) {
    wb_file *f = (wb_file *)pf;
    return f->real->pMethods->xLock(f->real, lock);
}

static int wb_unlock(sqlite3_file *pf, int lock) {
    wb_file *f = (wb_file *)pf;
    return f->real->pMethods->xUnlock(f->real, lock);
}

static int wb_check_reserved(sqlite3_file *pf, int *out) {
    wb_file *f = (wb_file *)pf;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wb_file_control(sqlite3_file *pf, int op, void *arg) {
    wb_file *f = (wb_file *)pf;
    if (op == WALBUF_FCNTL_ENABLE) {
        if (f->is_wal) return SQLITE_NOTFOUND;
        f->enabled = arg ? *(int *)arg != 0 : 1;
        if (!f->enabled && f->wal) wb_flush(f->wal);
        return SQLITE_OK;
    }
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wb_sector_size(sqlite3_file *pf) {
    wb_file *f = (wb_file *)pf;
    return f->real->pMethods->xSectorSize(f->real);
}

static int wb_device_characteristics(sqlite3_file *pf) {
    wb_file *f = (wb_file *)pf;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int wb_shm_map(sqlite3_file *pf, int pg, int pgsz, int extend, void volatile **pp) {
    wb_file *f = (wb_file *)pf;
    if (f->real->pMethods->iVersion < 2) return SQLITE_IOERR_SHMMAP;
    return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}

static int wb_shm_lock(sqlite3_file *pf, int offset, int n, int flags) {
    wb_file *f = (wb_file *)pf;
    if (f->real->pMethods->iVersion < 2) return SQLITE_IOERR_SHMLOCK;
    if ((flags & SQLITE_SHM_UNLOCK) && f->wal) wb_flush(f->wal); /* a failure stays sticky */
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void wb_shm_barrier(sqlite3_file *pf) {
    wb_file *f = (wb_file *)pf;
    if (f->wal) wb_flush(f->wal);
    if (f->real->pMethods->iVersion >= 2) f->real->pMethods->xShmBarrier(f->real);
}

static int wb_shm_unmap(sqlite3_file *pf, int del) {
    wb_file *f = (wb_file *)pf;
    if (f->real->pMethods->iVersion < 2) return SQLITE_OK;
    return f->real->pMethods->xShmUnmap(f->real, del);
}

static int wb_fetch(sqlite3_file *pf, sqlite3_int64 off, int amt, void **pp) {
    wb_file *f = (wb_file *)pf;
    *pp = NULL;
    if (f->real->pMethods->iVersion < 3 || f->is_wal) return SQLITE_OK;
    return f->real->pMethods->xFetch(f->real, off, amt, pp);
}

static int wb_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *p) {
    wb_file *f = (wb_file *)pf;
    if (f->real->pMethods->iVersion < 3) return SQLITE_OK;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods wb_methods = {
    3,
    wb_close,
    wb_read,
    wb_write,
    wb_truncate,
    wb_sync,
    wb_file_size,
    wb_lock,
    wb_unlock,
    wb_check_reserved,
    wb_file_control,
    wb_sector_size,
    wb_device_characteristics,
    wb_shm_map,
    wb_shm_lock,
    wb_shm_barrier,
    wb_shm_unmap,
    wb_fetch,
    wb_unfetch,
};

static int wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *pf, int flags, int *out_flags) {
    (void)vfs;
    wb_file *f = (wb_file *)pf;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = wb_real->xOpen(wb_real, name, f->real, flags, out_flags);
    f->base.pMethods = f->real->pMethods ? &wb_methods : NULL;
    if (rc != SQLITE_OK || !f->real->pMethods) return rc;
    if ((flags & SQLITE_OPEN_WAL) && name) {
        f->is_wal = 1;
        sqlite3_file *dbf = sqlite3_database_file_object(name);
        if (dbf && dbf->pMethods == &wb_methods) {
            f->db = (wb_file *)dbf;
            f->db->wal = f;
        }
    }
    return SQLITE_OK;
}

/* The rest of the VFS is the default one's. */
static int wb_delete(sqlite3_vfs *v, const char *name, int sync) {
    (void)v;
    return wb_real->xDelete(wb_real, name, sync);
}
static int wb_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
    (void)v;
    return wb_real->xAccess(wb_real, name, flags, out);
}
static int wb_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
    (void)v;
    return wb_real->xFullPathname(wb_real, name, n, out);
}
static void *wb_dlopen(sqlite3_vfs *v, const char *name) {
    (void)v;
    return wb_real->xDlOpen(wb_real, name);
}
static void wb_dlerror(sqlite3_vfs *v, int n, char *msg) {
    (void)v;
    wb_real->xDlError(wb_real, n, msg);
}
static void (*wb_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void) {
    (void)v;
    return wb_real->xDlSym(wb_real, h, sym);
}
static void wb_dlclose(sqlite3_vfs *v, void *h) {
    (void)v;
    wb_real->xDlClose(wb_real, h);
}
static int wb_randomness(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return wb_real->xRandomness(wb_real, n, out);
}
static int wb_sleep(sqlite3_vfs *v, int us) {
    (void)v;
    return wb_real->xSleep(wb_real, us);
}
static int wb_current_time(sqlite3_vfs *v, double *out) {
    (void)v;
    return wb_real->xCurrentTime(wb_real, out);
}
static int wb_last_error(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return wb_real->xGetLastError ? wb_real->xGetLastError(wb_real, n, out) : 0;
}
static int wb_current_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
    (void)v;
    return wb_real->xCurrentTimeInt64(wb_real, out);
}

static sqlite3_vfs wb_vfs;
static int wb_register_rc;

static void wb_register_once(void) {
    wb_real = sqlite3_vfs_find(NULL);
    if (!wb_real || wb_real->iVersion < 2) {
        wb_register_rc = SQLITE_ERROR;
        return;
    }
    wb_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(wb_file) + wb_real->szOsFile,
        .mxPathname = wb_real->mxPathname,
        .zName = WALBUF_VFS,
        .xOpen = wb_open,
        .xDelete = wb_delete,
        .xAccess = wb_access,
        .xFullPathname = wb_full_pathname,
        .xDlOpen = wb_dlopen,
        .xDlError = wb_dlerror,
        .xDlSym = wb_dlsym,
        .xDlClose = wb_dlclose,
        .xRandomness = wb_randomness,
        .xSleep = wb_sleep,
        .xCurrentTime = wb_current_time,
        .xGetLastError = wb_last_error,
        .xCurrentTimeInt64 = wb_current_time64,
    };
    wb_register_rc = sqlite3_vfs_register(&wb_vfs, 0);
}

int walbuf_register(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, wb_register_once);
    return wb_register_rc;
}

int walbuf_enable(sqlite3 *h, const char *schema) {
    int on = 1;
    return sqlite3_file_control(h, schema, WALBUF_FCNTL_ENABLE, &on);
}

void walbuf_get_stats(walbuf_stats *out) {
    out->frames_in = atomic_load(&st_in);
    out->writes_out = atomic_load(&st_out);
    out->bytes = atomic_load(&st_bytes);
}
