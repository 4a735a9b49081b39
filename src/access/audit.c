/*
 * audit.c — the access log (audit.h): a bounded queue of events, one
 * writer thread that chains and commits them in batches, verification of
 * the chain, and the query that turns events into FHIR R4 AuditEvents.
 *
 * On disk (migration 12, docs/audit.md; auditblock.h has the format):
 *   audit_block (seq, last, at_min, at_max, hash, events): events seq..last,
 *     their netstrings and hashes in one text column; hash = last's hash
 *   audit_block_patient (grp, pkey, seq), audit_block_user (grp, user_name,
 *     seq): which blocks name a patient or a user, once per block
 *   audit_anchor (id = 1, seq, hash, key_id, updated)
 *
 * The chain: seq counts up from 1 without gaps, across blocks. Every
 * event's hash covers the one before it (auditblock.h), keyed with the
 * 32 bytes of the key file (crypto_generichash, keyed). The anchor holds
 * the seq and hash of the last event, written in the transaction that
 * appends it, and key_id = hex(BLAKE2b-256(key)) (unkeyed), so that
 * verification can tell a wrong key from an altered log.
 *
 * Invariants:
 *  - Only the writer thread appends, in one transaction per batch that
 *    first locks the anchor row (FOR UPDATE on PostgreSQL; SQLite's single
 *    writer), then continues from the last event actually stored, so that
 *    several processes (a server and a CLI) sharing a database extend one
 *    chain.
 *  - A batch is written as blocks of at most BLOCK_MAX events: a query
 *    for one patient decodes only the blocks that name them.
 *  - An event leaves the queue only once committed: nothing is dropped
 *    while the process lives. At close, events that cannot be written are
 *    written to the server log instead (log_error), each one.
 *  - If the anchor does not name the last event when a batch starts
 *    (blocks were removed from the end of the log, or the anchor was
 *    altered), the batch first appends an "anchor mismatch" event saying
 *    so, so that the evidence survives the anchor moving on; verify
 *    reports it.
 *  - Stored strings are valid UTF-8 without NUL (PostgreSQL text) and
 *    bounded.
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "../store/store_int.h"
#include "access.h"
#include "auditblock.h"

#define KEY_BYTES        AUDIT_KEY_BYTES
#define HASH_HEX         AUDIT_HASH_HEX
#define EAGER_BATCH      4096 /* this many waiting: write now, not at the end of flush_ms */
#define BLOCK_MAX        1024 /* events in one block */
#define VERIFY_PAGE      64   /* blocks read at a time */
#define CONFLICT_RETRIES 5

static const char zero_hash[HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* What the writer appends when the anchor does not name the last event. */
#define MISMATCH_SOURCE  "audit-writer"
#define MISMATCH_REQUEST "audit anchor-mismatch"

/* A block as read back: its columns and its events decoded (strings point
 * into `text`, a copy the block owns). */
typedef struct rblock {
    int64_t first, last, at_min, at_max;
    char hash[HASH_HEX + 1];
    buf text;
    ablock_ev *evs;
    size_t cap;
    long n;
} rblock;

static void rblock_free(rblock *b) {
    buf_free(&b->text);
    free(b->evs);
    memset(b, 0, sizeof *b);
}

#define BLOCK_COLS "seq, last, at_min, at_max, hash, events"

static void copy_hex(char out[HASH_HEX + 1], const char *t, size_t n);

/* Read a row selected with BLOCK_COLS into b (the events not decoded). */
static void read_block(const db_driver *drv, db_stmt *st, rblock *b) {
    size_t n = 0;
    const char *t;
    b->first = drv->col_int(st, 0);
    b->last = drv->col_int(st, 1);
    b->at_min = drv->col_int(st, 2);
    b->at_max = drv->col_int(st, 3);
    t = drv->col_text(st, 4, &n);
    copy_hex(b->hash, t, n);
    t = drv->col_text(st, 5, &n);
    buf_reset(&b->text);
    buf_append(&b->text, t ? t : "", t ? n : 0);
    b->n = 0;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (n bytes available), 0 if none. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    size_t len;
    if (c < 0x80) return c ? 1 : 0;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] > 0x8F))
        return 0;
    return len;
}

/* The bytes of `s` kept for a field of at most `max` bytes: cut before a
 * sequence the limit would split. */
static size_t kept_length(const char *s, size_t max) {
    size_t n = strnlen(s, max + 1);
    if (n <= max) return n;
    n = max;
    for (int back = 0; back < 3 && n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80; back++)
        n--;
    return n;
}

/* Copy n bytes of src to dst as valid UTF-8 (invalid bytes become '?');
 * NUL-terminates; returns the length (== n). */
static size_t utf8_clean(char *dst, const char *src, size_t n) {
    size_t i = 0;
    /* ASCII (no byte >= 0x80; no NUL within a C string's length) is copied
     * as it is: nearly every field of every event */
    while (i < n && !((unsigned char)src[i] & 0x80))
        i++;
    memcpy(dst, src, i);
    while (i < n) {
        size_t k = utf8_seq((const unsigned char *)src + i, n - i);
        if (!k) {
            dst[i++] = '?';
        } else {
            memcpy(dst + i, src + i, k);
            i += k;
        }
    }
    dst[n] = 0;
    return n;
}

/* ---- the key ------------------------------------------------------------- */

static int mkdir_parents(const char *path) {
    char *dup = strdup(path);
    if (!dup) return -1;
    char *dir = dirname(dup);
    int rc = 0;
    struct stat sb;
    if (strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0 && stat(dir, &sb) != 0) {
        rc = mkdir_parents(dir);
        if (rc == 0 && mkdir(dir, 0750) != 0 && errno != EEXIST) rc = -1;
    }
    free(dup);
    return rc;
}

static void fsync_parent(const char *path) {
    char *dup = strdup(path);
    if (!dup) return;
    int fd = open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dup);
}

/* Read the key at `path`; with create=1 make one if there is none
 * (*created = 1). A file of the wrong size is refused. */
static status key_load(const char *path, int create, unsigned char key[KEY_BYTES], int *created, err *e) {
    status rc = ST_OK;
    int fd = -1;
    *created = 0;
    if (!path || !*path) return err_set(e, ST_INVALID, "required", NULL, "no access log key file given");
    for (int attempt = 0; attempt < 2; attempt++) {
        fd = open(path, O_RDONLY | O_CLOEXEC); /* a symlink is fine (mounted secrets) */
        if (fd >= 0 || errno != ENOENT || !create) break;
        if (mkdir_parents(path) != 0) {
            rc = err_set(e, ST_IO, "exception", NULL, "cannot create the directory for %s: %s", path,
                         strerror(errno));
            goto out;
        }
        int wfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (wfd < 0 && errno == EEXIST) continue; /* another process made it: read theirs */
        if (wfd < 0) {
            rc = err_set(e, ST_IO, "exception", NULL, "cannot create the access log key %s: %s", path,
                         strerror(errno));
            goto out;
        }
        randombytes_buf(key, KEY_BYTES);
        int ok = write(wfd, key, KEY_BYTES) == KEY_BYTES && fsync(wfd) == 0;
        int saved = errno;
        close(wfd);
        if (!ok) {
            unlink(path);
            rc = err_set(e, ST_IO, "exception", NULL, "cannot write the access log key %s: %s", path,
                         strerror(saved));
            goto out;
        }
        fsync_parent(path);
        *created = 1;
        log_info(
            "audit: created a new access log key in %s (keep it safe: without it the log cannot be verified)",
            path);
        goto out;
    }
    if (fd < 0) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot open the access log key %s: %s", path,
                     strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = err_set(e, ST_IO, "exception", NULL, "the access log key %s is not a regular file", path);
        goto out;
    }
    if (sb.st_size != KEY_BYTES) {
        rc = err_set(e, ST_INVALID, "invalid", NULL, "the access log key %s is %lld bytes, not %d: not a key",
                     path, (long long)sb.st_size, KEY_BYTES);
        goto out;
    }
    if (read(fd, key, KEY_BYTES) != KEY_BYTES) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot read the access log key %s", path);
        goto out;
    }
    if (sb.st_mode & 077) log_warn("audit: the access log key %s is readable by others (chmod 600 it)", path);
out:
    if (fd >= 0) close(fd);
    return rc;
}

static void key_id_of(const unsigned char key[KEY_BYTES], char out[HASH_HEX + 1]) {
    unsigned char md[32];
    crypto_generichash(md, sizeof md, key, KEY_BYTES, NULL, 0);
    ablock_hex(md, sizeof md, out);
}

void audit_default_key_path(const char *db_url, char *out, size_t n) {
    const char *env = getenv("CONCORD_AUDIT_KEY");
    if (env && *env) {
        snprintf(out, n, "%s", env);
    } else if (!db_url || !*db_url) {
        snprintf(out, n, "%s.audit-key", STORE_DEFAULT_DB);
    } else if (strncmp(db_url, "postgresql://", 13) == 0 || strncmp(db_url, "postgres://", 11) == 0) {
        snprintf(out, n, "var/audit.key");
    } else {
        if (strncmp(db_url, "sqlite:", 7) == 0) db_url += 7;
        snprintf(out, n, "%s.audit-key", db_url);
    }
}

/* ---- the anchor and the head ------------------------------------------ */

typedef struct anchor {
    int found;
    int64_t seq;
    char hash[HASH_HEX + 1];
    char key_id[HASH_HEX + 1];
} anchor;

static void copy_hex(char out[HASH_HEX + 1], const char *t, size_t n) {
    if (!t) n = 0;
    if (n > HASH_HEX) n = HASH_HEX;
    if (n) memcpy(out, t, n);
    out[n] = 0;
}

static status read_anchor(const db_driver *drv, db *d, int lock, anchor *an, err *e) {
    static const char sql_lock[] = "SELECT seq, hash, key_id FROM audit_anchor WHERE id = 1 FOR UPDATE";
    static const char sql_plain[] = "SELECT seq, hash, key_id FROM audit_anchor WHERE id = 1";
    db_stmt *st = NULL;
    memset(an, 0, sizeof *an);
    status rc = drv->prepare(d, lock && drv->for_update[0] ? sql_lock : sql_plain, 1, &st, e);
    if (rc != ST_OK) return rc;
    int r = drv->step(st, e);
    if (r == 1) {
        size_t n;
        const char *t;
        an->found = 1;
        an->seq = drv->col_int(st, 0);
        t = drv->col_text(st, 1, &n);
        copy_hex(an->hash, t, n);
        t = drv->col_text(st, 2, &n);
        copy_hex(an->key_id, t, n);
    }
    drv->done(st);
    return r < 0 ? e->code : ST_OK;
}

/* The last event's seq and hash (0 and 64 zeros for an empty log). */
static status read_last(const db_driver *drv, db *d, int64_t *seq, char hash[HASH_HEX + 1], err *e) {
    static const char sql[] = "SELECT last, hash FROM audit_block ORDER BY seq DESC LIMIT 1";
    db_stmt *st = NULL;
    *seq = 0;
    memcpy(hash, zero_hash, sizeof zero_hash);
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    int r = drv->step(st, e);
    if (r == 1) {
        size_t n;
        const char *t = drv->col_text(st, 1, &n);
        *seq = drv->col_int(st, 0);
        copy_hex(hash, t, n);
    }
    drv->done(st);
    return r < 0 ? e->code : ST_OK;
}

static status insert_anchor(const db_driver *drv, db *d, const char *key_id, err *e) {
    static const char sql[] =
        "INSERT INTO audit_anchor (id, seq, hash, key_id, updated) VALUES (1, 0, ?, ?, ?)"
        " ON CONFLICT DO NOTHING";
    db_stmt *st = NULL;
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_text(st, 1, zero_hash, HASH_HEX);
    drv->bind_text(st, 2, key_id, -1);
    drv->bind_int(st, 3, fhir_now_usec());
    return store_step_done(drv, st, e);
}

/* ---- the queue and the writer ---------------------------------------- */

/* A queued event: the row (seq given by the writer) and its strings, in
 * one allocation. */
typedef struct qev {
    arow r;
    char data[];
} qev;

struct audit_log {
    store *s;
    unsigned char key[KEY_BYTES];
    crypto_generichash_state keyed; /* the key absorbed (ablock_keyed) */
    buf wtext;                      /* the writer's block text */
    char key_id[HASH_HEX + 1];
    int flush_ms, sync_reads;

    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work; /* the writer waits here (CLOCK_MONOTONIC) */
    pthread_cond_t done; /* appenders waiting for durability */
    pthread_cond_t room; /* appenders waiting for space */
    qev **ring;          /* AUDIT_QUEUE_MAX slots: [head, head+count) not yet committed */
    size_t head, count;
    uint64_t appended, durable; /* events ever queued / committed */
    uint64_t failed_through;    /* the last failed batch ended at this ticket */
    uint64_t failures;          /* failed batches so far */
    int urgent;                 /* a wait=1 event is queued */
    int flush_req, stop, exited;
    int window_open; /* a flush_ms window is running for events not yet taken */
    struct timespec deadline;
    err last_err;
    int64_t head_seq; /* the chain's head after the last commit (writer), for the server log */
    char head_hash[HASH_HEX + 1];
};

static void ts_add_ms(struct timespec *t, long ms) {
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static int ts_reached(const struct timespec *t) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static qev *qev_copy(const audit_event *ev) {
    const char *src[NT] = {
        [T_USER] = ev->user,     [T_ROLE] = ev->role,          [T_ORG] = ev->org,
        [T_ACTION] = ev->action, [T_OUTCOME] = ev->outcome,    [T_RTYPE] = ev->rtype,
        [T_RID] = ev->rid,       [T_PATIENT] = ev->patient_id, [T_PURPOSE] = ev->purpose,
        [T_REASON] = ev->reason, [T_SOURCE] = ev->source,      [T_REQUEST] = ev->request,
    };
    size_t keep[NT], total = 0;
    for (int i = 0; i < AUDIT_NCOLUMNS; i++) {
        const acolumn *c = &audit_columns[i];
        if (!c->text) continue;
        keep[c->idx] = src[c->idx] ? kept_length(src[c->idx], c->max) : 0;
        total += keep[c->idx] + 1;
    }
    qev *q = malloc(sizeof *q + total);
    if (!q) return NULL;
    char *p = q->data;
    for (int i = 0; i < NT; i++) {
        q->r.txt[i] = p;
        q->r.len[i] = utf8_clean(p, src[i] ? src[i] : "", keep[i]);
        p += keep[i] + 1;
    }
    q->r.seq = 0;
    q->r.num[I_AT] = ev->at_usec ? ev->at_usec : fhir_now_usec();
    q->r.num[I_STATUS] = ev->status;
    q->r.num[I_PKEY] = ev->pkey;
    return q;
}

/* The events rows[0..n) as blocks of at most BLOCK_MAX, continuing the
 * chain from *seq and prev; advances both. */
static status write_blocks(audit_log *a, const db_driver *drv, db *d, arow *const *rows, size_t n,
                           int64_t *seq, char prev[HASH_HEX + 1], err *e) {
    status rc = ST_OK;
    buf text = a->wtext; /* kept from batch to batch: a block is a few hundred KiB */
    int64_t pkeys[BLOCK_MAX];
    store_str users[BLOCK_MAX];
    for (size_t i = 0; i < n && rc == ST_OK;) {
        size_t m = n - i < BLOCK_MAX ? n - i : BLOCK_MAX;
        store_audit_block b = {.first = *seq + 1, .pkeys = pkeys, .users = users, .npkeys = m, .nusers = m};
        buf_reset(&text);
        for (size_t j = 0; j < m; j++) {
            arow *r = rows[i + j];
            int64_t at = r->num[I_AT];
            size_t off = text.len;
            r->seq = ++*seq;
            ablock_put(&text, r);
            ablock_hash(&a->keyed, prev, r->seq, text.p + off, text.len - off, prev);
            buf_append(&text, prev, HASH_HEX);
            if (!j || at < b.at_min) b.at_min = at;
            if (!j || at > b.at_max) b.at_max = at;
            pkeys[j] = r->num[I_PKEY];
            users[j] = (store_str){r->txt[T_USER], r->len[T_USER]};
        }
        b.last = *seq;
        b.hash = prev;
        b.text = text.p;
        b.ntext = text.len;
        rc = store_audit_put_block(drv, d, &b, e);
        i += m;
    }
    a->wtext = text;
    return rc;
}

/* The event that records an anchor that did not name the last row. */
static void mismatch_event(const anchor *an, int64_t last_seq, const char *last_hash, char *reason,
                           size_t nreason, qev *q) {
    if (!an->found)
        snprintf(
            reason, nreason,
            "the access log's anchor was missing when the writer resumed after seq %lld (hash %.16s...): it "
            "may have been deleted",
            (long long)last_seq, last_hash);
    else
        snprintf(reason, nreason,
                 "the access log's anchor named seq %lld (hash %.16s...) but the log ended at seq %lld (hash "
                 "%.16s...) when the writer resumed: events may have been removed from its end",
                 (long long)an->seq, an->hash, (long long)last_seq, last_hash);
    audit_event ev = {.user = "concord",
                      .role = "system",
                      .action = "admin",
                      .outcome = "8",
                      .reason = reason,
                      .source = MISMATCH_SOURCE,
                      .request = MISMATCH_REQUEST};
    memset(q, 0, sizeof *q);
    const char *src[NT] = {
        [T_USER] = ev.user,     [T_ROLE] = ev.role,     [T_ACTION] = ev.action,  [T_OUTCOME] = ev.outcome,
        [T_REASON] = ev.reason, [T_SOURCE] = ev.source, [T_REQUEST] = ev.request};
    for (int i = 0; i < NT; i++) {
        q->r.txt[i] = src[i] ? src[i] : "";
        q->r.len[i] = strlen(q->r.txt[i]);
    }
    q->r.num[I_AT] = fhir_now_usec();
}

/* One batch: ring[head .. head+n) in one transaction, after the anchor
 * check; the anchor moves to the new head. */
static status write_batch_once(audit_log *a, size_t head, size_t n, int64_t *head_seq,
                               char head_hash[HASH_HEX + 1], err *e) {
    const db_driver *drv = a->s->drv;
    store_txn *tx = NULL;
    anchor an;
    int64_t seq = 0;
    char prev[HASH_HEX + 1];
    char reason[400];
    qev mm;
    size_t k = 0;
    arow **rows = malloc((n + 1) * sizeof *rows);
    if (!rows) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    status rc = store_begin_audit(a->s, &tx, e);
    if (rc != ST_OK) goto out;
    db *d = tx->d;
    rc = read_anchor(drv, d, 1, &an, e);
    if (rc == ST_OK && !an.found) {
        rc = insert_anchor(drv, d, a->key_id, e);
        if (rc == ST_OK) rc = read_anchor(drv, d, 1, &an, e);
        an.found = 0; /* it was missing: that in itself is evidence when there are rows */
    }
    if (rc == ST_OK) rc = read_last(drv, d, &seq, prev, e);
    if (rc != ST_OK) goto out;
    if ((!an.found && seq > 0) || (an.found && (an.seq != seq || strcmp(an.hash, prev) != 0))) {
        mismatch_event(&an, seq, prev, reason, sizeof reason, &mm);
        log_warn("audit: %s; recorded in the log", reason);
        rows[k++] = &mm.r;
    }
    for (size_t i = 0; i < n; i++)
        rows[k++] = &a->ring[(head + i) % AUDIT_QUEUE_MAX]->r;
    rc = write_blocks(a, drv, d, rows, k, &seq, prev, e);
    if (rc != ST_OK) goto out;
    static const char upd[] =
        "UPDATE audit_anchor SET seq = ?, hash = ?, key_id = ?, updated = ? WHERE id = 1";
    db_stmt *st = NULL;
    rc = drv->prepare(d, upd, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, seq);
    drv->bind_text(st, 2, prev, HASH_HEX);
    drv->bind_text(st, 3, a->key_id, HASH_HEX);
    drv->bind_int(st, 4, fhir_now_usec());
    rc = store_step_done(drv, st, e);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
    if (rc == ST_OK) {
        *head_seq = seq;
        memcpy(head_hash, prev, HASH_HEX + 1);
    }
out:
    if (tx) store_rollback(tx);
    free(rows);
    return rc;
}

static status write_batch(audit_log *a, size_t head, size_t n, int64_t *head_seq,
                          char head_hash[HASH_HEX + 1], err *e) {
    status rc;
    int attempt = 0;
    do { /* ST_CONFLICT: another writer took the same seq first; start again from its head */
        rc = write_batch_once(a, head, n, head_seq, head_hash, e);
    } while (rc == ST_CONFLICT && ++attempt < CONFLICT_RETRIES);
    return rc;
}

static void *writer_main(void *arg) {
    audit_log *a = arg;
    long backoff_ms = 0;
    int failures_at_stop = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        /* wait for something to write and a reason to write it now */
        for (;;) {
            if (a->count == 0) {
                if (a->stop) goto exit;
                pthread_cond_wait(&a->work, &a->mu);
                continue;
            }
            if (a->stop || a->urgent || a->flush_req || a->count >= EAGER_BATCH || !a->window_open ||
                ts_reached(&a->deadline))
                break;
            pthread_cond_timedwait(&a->work, &a->mu, &a->deadline);
        }
        size_t head = a->head, n = a->count;
        a->urgent = a->flush_req = a->window_open = 0;
        pthread_mutex_unlock(&a->mu);
        err e;
        err_clear(&e);
        status rc = write_batch(a, head, n, &a->head_seq, a->head_hash, &e);
        pthread_mutex_lock(&a->mu);
        if (rc == ST_OK) {
            for (size_t i = 0; i < n; i++) {
                size_t slot = (head + i) % AUDIT_QUEUE_MAX;
                free(a->ring[slot]);
                a->ring[slot] = NULL;
            }
            a->head = (head + n) % AUDIT_QUEUE_MAX;
            a->count -= n;
            a->durable += n;
            backoff_ms = 0;
            pthread_cond_broadcast(&a->done);
            pthread_cond_broadcast(&a->room);
            continue;
        }
        /* keep the events, tell those waiting on them, retry after a pause */
        a->failed_through = a->durable + n;
        a->failures++;
        a->last_err = e;
        pthread_cond_broadcast(&a->done);
        log_error("audit: could not write %zu access log events (kept, retrying): %s", n, e.msg);
        if (a->stop && ++failures_at_stop >= 3) goto exit;
        backoff_ms = backoff_ms ? (backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2) : 50;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        ts_add_ms(&until, backoff_ms);
        while (!a->stop && !ts_reached(&until))
            pthread_cond_timedwait(&a->work, &a->mu, &until);
        a->urgent = 1; /* do not wait for another window */
    }
exit:
    a->exited = 1;
    pthread_cond_broadcast(&a->done);
    pthread_cond_broadcast(&a->room);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- open / append / flush / close ----------------------------------- */

/* Check the key against the log, make the anchor if there is none, warn
 * if it does not name the last row (the first batch records that). */
static status check_log(audit_log *a, err *e) {
    const db_driver *drv = a->s->drv;
    store_txn *tx = NULL;
    anchor an;
    int64_t last = 0;
    char last_hash[HASH_HEX + 1];
    status rc = store_begin_audit(a->s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = read_anchor(drv, tx->d, 1, &an, e);
    if (rc == ST_OK) rc = read_last(drv, tx->d, &last, last_hash, e);
    if (rc != ST_OK) goto out;
    if (an.found && an.key_id[0] && strcmp(an.key_id, a->key_id) != 0 && (an.seq > 0 || last > 0)) {
        rc = err_set(e, ST_IO, "security", NULL,
                     "the access log was written with another key (key id %.16s...; this key is %.16s...): "
                     "restore that key file rather than start an unverifiable chain",
                     an.key_id, a->key_id);
        goto out;
    }
    if (!an.found) rc = insert_anchor(drv, tx->d, a->key_id, e);
    if (rc != ST_OK) goto out;
    a->head_seq = last;
    memcpy(a->head_hash, last_hash, sizeof last_hash);
    log_info("audit: access log head %lld:%s", (long long)last, last_hash);
    if ((!an.found && last > 0) || (an.found && (an.seq != last || strcmp(an.hash, last_hash) != 0)))
        log_warn(
            "audit: the access log's anchor (seq %lld) does not name its last row (seq %lld): rows may have "
            "been removed; appending continues from the last row and records this",
            (long long)an.seq, (long long)last);
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    return rc;
}

status audit_open(store *s, const audit_config *cfg, audit_log **out, err *e) {
    err local; /* the caller may pass no err; the drivers need one */
    if (!e) e = &local;
    status rc = ST_OK;
    int created = 0;
    pthread_condattr_t ca;
    *out = NULL;
    if (sodium_init() < 0)
        return err_set(e, ST_INTERNAL, "exception", NULL, "libsodium failed to initialise");
    audit_log *a = calloc(1, sizeof *a);
    if (!a) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    a->s = s;
    /* 100 ms: a commit (and its WAL checkpoint) per few thousand reads under
     * load rather than per few hundred; measured in bench/access.py */
    a->flush_ms = cfg && cfg->flush_ms > 0 ? cfg->flush_ms : 100;
    a->sync_reads = cfg ? cfg->sync_reads : 0;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&a->done, NULL);
    pthread_cond_init(&a->room, NULL);
    a->ring = calloc(AUDIT_QUEUE_MAX, sizeof *a->ring);
    if (!a->ring) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    rc = key_load(cfg ? cfg->key_path : NULL, 1, a->key, &created, e);
    if (rc != ST_OK) goto out;
    key_id_of(a->key, a->key_id);
    ablock_keyed(&a->keyed, a->key);
    rc = check_log(a, e);
    if (rc != ST_OK) {
        if (created) unlink(cfg->key_path); /* do not leave a key that does not fit the log */
        goto out;
    }
    if (pthread_create(&a->thread, NULL, writer_main, a) != 0) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot start the access log writer: %s", strerror(errno));
        goto out;
    }
    a->started = 1;
    pthread_setname_np(a->thread, "audit-writer"); /* its CPU is measured by bench/access.py */
out:
    if (rc != ST_OK) {
        audit_close(a);
        a = NULL;
    }
    *out = a;
    return rc;
}

status audit_append(audit_log *a, const audit_event *ev, int wait, err *e) {
    err local; /* the caller may pass no err; the drivers need one */
    if (!e) e = &local;
    status rc = ST_OK;
    if (!a) return err_set(e, ST_INTERNAL, "exception", NULL, "no access log");
    qev *q = qev_copy(ev);
    if (!q) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    wait = wait || a->sync_reads;
    pthread_mutex_lock(&a->mu);
    while (a->count == AUDIT_QUEUE_MAX && !a->exited)
        pthread_cond_wait(&a->room, &a->mu);
    if (a->exited || !a->started) {
        rc = err_set(e, ST_IO, "exception", NULL, "the access log is closed");
        goto out;
    }
    a->ring[(a->head + a->count) % AUDIT_QUEUE_MAX] = q;
    q = NULL;
    a->count++;
    uint64_t ticket = ++a->appended;
    int wake = wait || a->count >= EAGER_BATCH;
    if (!a->window_open) {
        a->window_open = 1;
        clock_gettime(CLOCK_MONOTONIC, &a->deadline);
        ts_add_ms(&a->deadline, a->flush_ms);
        wake = 1;
    }
    if (wait) a->urgent = 1;
    if (wake) pthread_cond_signal(&a->work);
    if (!wait) goto out;
    while (a->durable < ticket && a->failed_through < ticket && !a->exited)
        pthread_cond_wait(&a->done, &a->mu);
    if (a->durable < ticket)
        rc = err_set(e, ST_IO, "exception", NULL, "the access log could not be written: %s",
                     a->last_err.msg[0] ? a->last_err.msg : "closed");
out:
    pthread_mutex_unlock(&a->mu);
    free(q);
    return rc;
}

void audit_flush(audit_log *a) {
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    uint64_t target = a->appended, failures = a->failures;
    if (a->durable < target) {
        a->flush_req = 1;
        pthread_cond_signal(&a->work);
    }
    /* until durable, or until an attempt made after this call failed */
    while (a->durable < target && a->failures == failures && !a->exited)
        pthread_cond_wait(&a->done, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

void audit_close(audit_log *a) {
    if (!a) return;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_signal(&a->work);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
        /* the head in the server log: a witness kept outside the database
         * (concord audit verify --expect SEQ:HASH) */
        log_info("audit: access log closed at head %lld:%s", (long long)a->head_seq, a->head_hash);
    }
    /* what could not be written goes to the server log rather than nowhere */
    for (size_t i = 0; a->ring && i < a->count; i++) {
        qev *q = a->ring[(a->head + i) % AUDIT_QUEUE_MAX];
        const arow *r = &q->r;
        log_error("audit: unwritten access log event: at=%lld user=%s role=%s org=%s action=%s outcome=%s "
                  "status=%lld what=%s/%s patient=%s purpose=%s reason=%s source=%s request=%s",
                  (long long)r->num[I_AT], r->txt[T_USER], r->txt[T_ROLE], r->txt[T_ORG], r->txt[T_ACTION],
                  r->txt[T_OUTCOME], (long long)r->num[I_STATUS], r->txt[T_RTYPE], r->txt[T_RID],
                  r->txt[T_PATIENT], r->txt[T_PURPOSE], r->txt[T_REASON], r->txt[T_SOURCE],
                  r->txt[T_REQUEST]);
        free(q);
    }
    free(a->ring);
    buf_free(&a->wtext);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->work);
    pthread_cond_destroy(&a->done);
    pthread_cond_destroy(&a->room);
    sodium_memzero(a->key, sizeof a->key);
    free(a);
}

/* ---- verify ----------------------------------------------------------- */

/* Whether text field t of r (decoded without terminate) is s. */
static int field_is(const arow *r, int t, const char *s) {
    size_t n = strlen(s);
    return r->len[t] == n && memcmp(r->txt[t], s, n) == 0;
}

static int is_mismatch_record(const arow *r) {
    return field_is(r, T_ACTION, "admin") && field_is(r, T_SOURCE, MISMATCH_SOURCE) &&
           field_is(r, T_REQUEST, MISMATCH_REQUEST);
}

typedef struct verify_state {
    crypto_generichash_state keyed;
    int key_mismatch;
    char want_key_id[HASH_HEX + 1], key_id[HASH_HEX + 1];
    int64_t after;           /* seq of the last block read */
    int64_t last;            /* last event checked */
    char prev[HASH_HEX + 1]; /* its hash */
    audit_verify_result *out;
    /* the index rows of group idx_grp (-1: none loaded), sorted */
    const db_driver *drv;
    db *d;
    err *e;
    status io; /* a database error while checking the index */
    int64_t idx_grp;
    struct ipk {
        int64_t pkey, seq;
    } * pk;
    size_t npk, cpk;
    struct iuser {
        char *name;
        int64_t seq;
    } * us;
    size_t nus, cus;
} verify_state;

static int cmp_ipk(const void *a, const void *b) {
    const struct ipk *x = a, *y = b;
    if (x->pkey != y->pkey) return x->pkey < y->pkey ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static int cmp_iuser(const void *a, const void *b) {
    const struct iuser *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static void index_free(verify_state *v) {
    for (size_t i = 0; i < v->nus; i++)
        free(v->us[i].name);
    free(v->pk);
    free(v->us);
    v->pk = NULL;
    v->us = NULL;
    v->npk = v->cpk = v->nus = v->cus = 0;
}

/* The index rows of group g into v (replacing the last group's). */
static status index_load(verify_state *v, int64_t g) {
    static const char psql[] = "SELECT pkey, seq FROM audit_block_patient WHERE grp = ?";
    static const char usql[] = "SELECT user_name, seq FROM audit_block_user WHERE grp = ?";
    const db_driver *drv = v->drv;
    db_stmt *st = NULL;
    int r;
    for (size_t i = 0; i < v->nus; i++)
        free(v->us[i].name);
    v->npk = v->nus = 0;
    v->idx_grp = -1;
    status rc = drv->prepare(v->d, psql, 1, &st, v->e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, g);
    while ((r = drv->step(st, v->e)) == 1) {
        if (v->npk == v->cpk) {
            size_t cap = v->cpk ? v->cpk * 2 : 1024;
            struct ipk *grown = realloc(v->pk, cap * sizeof *grown);
            if (!grown) abort(); /* a group's rows: a few thousand */
            v->pk = grown;
            v->cpk = cap;
        }
        v->pk[v->npk++] = (struct ipk){drv->col_int(st, 0), drv->col_int(st, 1)};
    }
    drv->done(st);
    if (r < 0) return v->e->code;
    rc = drv->prepare(v->d, usql, 1, &st, v->e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, g);
    while ((r = drv->step(st, v->e)) == 1) {
        if (v->nus == v->cus) {
            size_t cap = v->cus ? v->cus * 2 : 64;
            struct iuser *grown = realloc(v->us, cap * sizeof *grown);
            if (!grown) abort();
            v->us = grown;
            v->cus = cap;
        }
        size_t n = 0;
        const char *t = drv->col_text(st, 0, &n);
        char *name = strndup(t ? t : "", t ? n : 0);
        if (!name) abort();
        v->us[v->nus++] = (struct iuser){name, drv->col_int(st, 1)};
    }
    drv->done(st);
    if (r < 0) return v->e->code;
    if (v->npk) qsort(v->pk, v->npk, sizeof *v->pk, cmp_ipk); /* (NULL when none: not for qsort) */
    if (v->nus) qsort(v->us, v->nus, sizeof *v->us, cmp_iuser);
    v->idx_grp = g;
    return ST_OK;
}

static void verify_fail(verify_state *v, int64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void verify_fail(verify_state *v, int64_t seq, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    v->out->ok = 0;
    v->out->first_bad_seq = seq;
    vsnprintf(v->out->problem, sizeof v->out->problem, fmt, ap);
    va_end(ap);
}

/* The index rows are not in the chain: removing some would hide events
 * from queries by patient or by user (a patient's own view of who read
 * their record) while every hash still verified. So every patient and
 * user a verified block names must have its row. 0 = fine; -1 = broken
 * (out filled) or a database error (v->io). */
static int verify_index(verify_state *v, const rblock *b) {
    int64_t g = b->first >> STORE_AUDIT_GROUP_BITS;
    if (g != v->idx_grp && (v->io = index_load(v, g)) != ST_OK) return -1;
    for (long i = 0; i < b->n; i++) {
        const arow *r = &b->evs[i].r;
        int64_t pkey = r->num[I_PKEY];
        struct ipk want = {pkey, b->first};
        if (pkey && (!v->npk || !bsearch(&want, v->pk, v->npk, sizeof *v->pk, cmp_ipk))) {
            verify_fail(v, r->seq,
                        "event %lld's patient (key %lld) is missing from the patient index "
                        "(audit_block_patient): rows were removed, and queries by patient would not show it",
                        (long long)r->seq, (long long)pkey);
            return -1;
        }
        if (!r->len[T_USER]) continue;
        char name[AUDIT_SHORT_MAX + 1];
        size_t n = r->len[T_USER] < AUDIT_SHORT_MAX ? r->len[T_USER] : AUDIT_SHORT_MAX;
        memcpy(name, r->txt[T_USER], n);
        name[n] = 0;
        struct iuser wu = {name, b->first};
        if (!v->nus || !bsearch(&wu, v->us, v->nus, sizeof *v->us, cmp_iuser)) {
            verify_fail(v, r->seq,
                        "event %lld's user (%s) is missing from the user index (audit_block_user): rows were "
                        "removed, and queries by user would not show it",
                        (long long)r->seq, name);
            return -1;
        }
    }
    return 0;
}

/* Check one block against the chain so far; 0 = fine, -1 = broken (out filled). */
static int verify_block(verify_state *v, rblock *b) {
    int64_t expect = v->last + 1;
    char why[160], want[HASH_HEX + 1];
    if (b->first != expect) {
        if (b->first == expect + 1)
            verify_fail(v, expect, "event %lld is missing (deleted): the log goes from %lld to %lld",
                        (long long)expect, (long long)v->last, (long long)b->first);
        else if (b->first > expect)
            verify_fail(
                v, expect, "events %lld to %lld are missing (deleted): the log goes from %lld to %lld",
                (long long)expect, (long long)(b->first - 1), (long long)v->last, (long long)b->first);
        else
            verify_fail(v, b->first, "a block starts at event %lld, after event %lld: blocks out of order",
                        (long long)b->first, (long long)v->last);
        return -1;
    }
    long n = ablock_decode(b->text.p, b->text.len, b->first, 0, &b->evs, &b->cap, why, sizeof why);
    b->n = n;
    for (long i = 0; i < n; i++) {
        const ablock_ev *ev = &b->evs[i];
        ablock_hash(&v->keyed, v->prev, ev->r.seq, b->text.p + ev->off, ev->len, want);
        if (memcmp(ev->hash, want, HASH_HEX) != 0) {
            if (v->key_mismatch)
                verify_fail(v, ev->r.seq,
                            "the key does not match the one the log was written with (key id %.16s..., the "
                            "log's %.16s...): event %lld does not verify with it",
                            v->key_id, v->want_key_id, (long long)ev->r.seq);
            else
                verify_fail(v, ev->r.seq, "event %lld has been altered: its contents do not match its hash",
                            (long long)ev->r.seq);
            return -1;
        }
        v->out->rows++;
        v->last = ev->r.seq;
        memcpy(v->prev, want, sizeof want);
        if (is_mismatch_record(&ev->r)) {
            verify_fail(v, ev->r.seq,
                        "at seq %lld the writer found the log truncated or its anchor altered: %.*s",
                        (long long)ev->r.seq, (int)(ev->r.len[T_REASON] < 150 ? ev->r.len[T_REASON] : 150),
                        ev->r.txt[T_REASON]);
            return -1;
        }
    }
    if (why[0]) {
        verify_fail(v, b->first + n, "the block of events %lld to %lld has been altered: %s",
                    (long long)b->first, (long long)b->last, why);
        return -1;
    }
    if (n == 0 || b->last != v->last) {
        verify_fail(v, v->last + 1, "the block of events %lld to %lld holds %ld: it has been altered",
                    (long long)b->first, (long long)b->last, n);
        return -1;
    }
    if (strcmp(b->hash, v->prev) != 0) {
        verify_fail(v, b->last,
                    "the block ending at event %lld has been altered: its hash is not its last event's",
                    (long long)b->last);
        return -1;
    }
    return verify_index(v, b);
}

/* Blocks after v->after, in pages, to the end. */
static status verify_blocks(const db_driver *drv, db *d, verify_state *v, err *e) {
    static const char sql[] = "SELECT " BLOCK_COLS " FROM audit_block WHERE seq > ? ORDER BY seq LIMIT 64";
    _Static_assert(VERIFY_PAGE == 64, "page size in the SQL");
    status rc = ST_OK;
    rblock b = {0};
    for (;;) {
        db_stmt *st = NULL;
        int got = 0, r, broken = 0;
        rc = drv->prepare(d, sql, 1, &st, e);
        if (rc != ST_OK) break;
        drv->bind_int(st, 1, v->after);
        while (!broken && (r = drv->step(st, e)) == 1) {
            read_block(drv, st, &b);
            got++;
            v->after = b.first;
            broken = verify_block(v, &b) != 0;
        }
        drv->done(st);
        if (!broken && r < 0) rc = e->code;
        if (v->io != ST_OK) rc = v->io;
        if (rc != ST_OK || broken || got < VERIFY_PAGE) break;
    }
    rblock_free(&b);
    return rc;
}

status audit_verify(store *s, const char *key_path, audit_verify_result *out, err *e) {
    err local; /* the caller may pass no err; the drivers need one */
    if (!e) e = &local;
    status rc = ST_OK;
    unsigned char key[KEY_BYTES];
    int created = 0;
    verify_state v;
    anchor an;
    memset(out, 0, sizeof *out);
    memset(&v, 0, sizeof v);
    out->ok = 1;
    memcpy(out->head, zero_hash, sizeof zero_hash);
    if (sodium_init() < 0)
        return err_set(e, ST_INTERNAL, "exception", NULL, "libsodium failed to initialise");
    rc = key_load(key_path, 0, key, &created, e);
    if (rc != ST_OK) goto out;
    db *d = store_db(s, e);
    if (!d) {
        rc = e ? e->code : ST_IO;
        goto out;
    }
    const db_driver *drv = s->drv;
    ablock_keyed(&v.keyed, key);
    v.out = out;
    v.drv = drv;
    v.d = d;
    v.e = e;
    v.idx_grp = -1;
    key_id_of(key, v.key_id);
    memcpy(v.prev, zero_hash, sizeof zero_hash);
    rc = read_anchor(drv, d, 0, &an, e);
    if (rc != ST_OK) goto out;
    if (an.found && an.key_id[0] && strcmp(an.key_id, v.key_id) != 0) {
        v.key_mismatch = 1;
        memcpy(v.want_key_id, an.key_id, sizeof an.key_id);
    }
    /* Events, then the anchor as it is now. The anchor moves with the
     * events in one transaction, so once every block was read it names the last
     * one, or a later one appended meanwhile (read on). */
    for (int round = 0; round < 100 && out->ok; round++) {
        rc = verify_blocks(drv, d, &v, e);
        if (rc != ST_OK || !out->ok) break;
        rc = read_anchor(drv, d, 0, &an, e);
        if (rc != ST_OK) break;
        if (an.found && an.seq > v.last) {
            int64_t before = v.last;
            rc = verify_blocks(drv, d, &v, e);
            if (rc != ST_OK || !out->ok) break;
            if (v.last > before) continue; /* appended meanwhile: check the anchor again */
            verify_fail(&v, v.last + 1,
                        "the log ends at seq %lld but its anchor says %lld: events %lld to %lld were "
                        "removed from the end",
                        (long long)v.last, (long long)an.seq, (long long)v.last + 1, (long long)an.seq);
        } else if (!an.found && v.last > 0) {
            verify_fail(&v, v.last, "the anchor is missing (deleted): the end of the log cannot be checked");
        } else if (an.found && an.seq < v.last) {
            verify_fail(&v, an.seq + 1,
                        "the anchor names seq %lld but the log goes on to %lld: the anchor was altered",
                        (long long)an.seq, (long long)v.last);
        } else if (an.found && an.seq > 0 && strcmp(an.hash, v.prev) != 0) {
            verify_fail(&v, an.seq,
                        "the anchor's hash does not match event %lld: the anchor or the event was replaced",
                        (long long)an.seq);
        } else if (v.key_mismatch) {
            if (v.last == 0)
                verify_fail(&v, 0,
                            "the key does not match the one the log was written with (key id %.16s..., the "
                            "log's %.16s...)",
                            v.key_id, v.want_key_id);
            else
                verify_fail(&v, 0,
                            "every event verifies with this key but the anchor names another key (%.16s...): "
                            "the anchor was altered",
                            v.want_key_id);
        }
        break;
    }
    memcpy(out->head, v.prev, sizeof v.prev);
out:
    sodium_memzero(key, sizeof key);
    index_free(&v);
    if (rc != ST_OK) out->ok = 0;
    return rc;
}

status audit_row_hash(store *s, int64_t seq, char out[HASH_HEX + 1], err *e) {
    err local; /* the caller may pass no err; the drivers need one */
    if (!e) e = &local;
    static const char sql[] =
        "SELECT " BLOCK_COLS " FROM audit_block WHERE seq <= ? ORDER BY seq DESC LIMIT 1";
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    rblock b = {0};
    char why[160];
    out[0] = 0;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, seq);
    int r = drv->step(st, e);
    if (r == 1) read_block(drv, st, &b);
    drv->done(st);
    if (r < 0) {
        rc = e->code;
    } else if (r == 1 && seq >= b.first && seq <= b.last) {
        long n = ablock_decode(b.text.p, b.text.len, b.first, 0, &b.evs, &b.cap, why, sizeof why);
        if (seq - b.first < n) copy_hex(out, b.evs[seq - b.first].hash, HASH_HEX);
    }
    if (rc == ST_OK && !out[0])
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "the access log has no event %lld", (long long)seq);
    rblock_free(&b);
    return rc;
}

/* ---- query: events as FHIR AuditEvents ----------------------------------- */

#define DCM                 "http://dicom.nema.org/resources/ontology/DCM"
#define REST_INTERACTION    "http://hl7.org/fhir/restful-interaction"
#define AUDIT_ACTION_SYSTEM "https://concord.example/CodeSystem/audit-action"
#define ROLE_SYSTEM_URL     "https://concord.example/CodeSystem/role"
#define ODS_SYSTEM          "https://fhir.nhs.uk/Id/ods-organization-code"
#define ACT_REASON          "http://terminology.hl7.org/CodeSystem/v3-ActReason"

/* How each action appears in an AuditEvent. */
static const struct action_def {
    const char *action;
    const char *code;    /* AuditEvent.action */
    const char *rest;    /* restful-interaction code, or NULL */
    const char *dcm_sub; /* DICOM subtype code (sign-in), or NULL */
    const char *dcm_sub_display;
    const char *type_code; /* DICOM type for this action whether or not a patient is named, or NULL */
    const char *type_display;
} action_defs[] = {
    {"read", "R", "read", NULL, NULL, NULL, NULL},
    {"vread", "R", "vread", NULL, NULL, NULL, NULL},
    {"search", "E", "search", NULL, NULL, NULL, NULL},
    {"history", "R", "history", NULL, NULL, NULL, NULL},
    {"create", "C", "create", NULL, NULL, NULL, NULL},
    {"update", "U", "update", NULL, NULL, NULL, NULL},
    {"delete", "D", "delete", NULL, NULL, NULL, NULL},
    {"operation", "E", "operation", NULL, NULL, NULL, NULL},
    {"export", "R", NULL, NULL, NULL, "110106", "Export"},
    {"login", "E", NULL, "110122", "Login", "110114", "User Authentication"},
    {"logout", "E", NULL, "110123", "Logout", "110114", "User Authentication"},
    {"login-failed", "E", NULL, "110122", "Login", "110114", "User Authentication"},
    {"break-glass", "E", NULL, NULL, NULL, NULL, NULL},
    {"consent", "U", NULL, NULL, NULL, NULL, NULL},
    {"admin", "E", NULL, NULL, NULL, "110100", "Application Activity"},
};

static const struct purpose_def {
    const char *code, *display;
} purpose_defs[] = {
    {"TREAT", "treatment"},
    {"ETREAT", "Emergency Treatment"},
    {"HOPERAT", "healthcare operations"},
    {"PATRQT", "patient requested"},
    {"HSYSADMIN", "health system administration"},
    {"PUBHLTH", "public health"},
    {"HRESCH", "healthcare research"},
    {"HPAYMT", "healthcare payment"},
    {"CAREMGT", "care management"},
    {"HMARKT", "healthcare marketing"},
};

static json_t *coding(const char *system, const char *code, const char *display) {
    json_t *c = json_object();
    json_object_set_new(c, "system", json_string(system));
    json_object_set_new(c, "code", json_string(code));
    if (display) json_object_set_new(c, "display", json_string(display));
    return c;
}

static json_t *reference(const char *type, const char *id) {
    char ref[600];
    snprintf(ref, sizeof ref, "%s/%s", type, id);
    json_t *r = json_object();
    json_object_set_new(r, "reference", json_string(ref));
    return r;
}

/* The AuditEvent for row `r`. */
static json_t *event_json(const arow *r) {
    const struct action_def *ad = NULL;
    for (size_t i = 0; i < sizeof action_defs / sizeof action_defs[0] && !ad; i++)
        if (strcmp(action_defs[i].action, r->txt[T_ACTION]) == 0) ad = &action_defs[i];
    int has_patient = r->txt[T_PATIENT][0] != 0 || r->num[I_PKEY] != 0;
    json_t *ev = json_object();
    char id[40];
    snprintf(id, sizeof id, "audit-%lld", (long long)r->seq);
    json_object_set_new(ev, "resourceType", json_string("AuditEvent"));
    json_object_set_new(ev, "id", json_string(id));

    /* type: sign-in and export have their own; anything about a patient is
     * "Patient Record"; other REST interactions "RESTful Operation" */
    if (ad && ad->type_code && (!has_patient || ad->dcm_sub))
        json_object_set_new(ev, "type", coding(DCM, ad->type_code, ad->type_display));
    else if (has_patient)
        json_object_set_new(ev, "type", coding(DCM, "110110", "Patient Record"));
    else if (ad && ad->rest)
        json_object_set_new(
            ev, "type",
            coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"));
    else
        json_object_set_new(ev, "type", coding(DCM, "110100", "Application Activity"));
    json_t *sub = json_array();
    if (ad && ad->rest) json_array_append_new(sub, coding(REST_INTERACTION, ad->rest, NULL));
    if (ad && ad->dcm_sub) json_array_append_new(sub, coding(DCM, ad->dcm_sub, ad->dcm_sub_display));
    if (r->txt[T_ACTION][0]) json_array_append_new(sub, coding(AUDIT_ACTION_SYSTEM, r->txt[T_ACTION], NULL));
    if (json_array_size(sub))
        json_object_set_new(ev, "subtype", sub);
    else
        json_decref(sub);
    json_object_set_new(ev, "action", json_string(ad ? ad->code : "E"));

    char when[32];
    fhir_instant_format(r->num[I_AT], when);
    json_object_set_new(ev, "recorded", json_string(when));
    const char *outcome = r->txt[T_OUTCOME];
    if (*outcome) json_object_set_new(ev, "outcome", json_string(outcome));
    if (*outcome && strcmp(outcome, "0") != 0 && r->txt[T_REASON][0])
        json_object_set_new(ev, "outcomeDesc", json_string(r->txt[T_REASON]));
    if (r->txt[T_PURPOSE][0]) {
        const char *display = NULL;
        for (size_t i = 0; i < sizeof purpose_defs / sizeof purpose_defs[0] && !display; i++)
            if (strcmp(purpose_defs[i].code, r->txt[T_PURPOSE]) == 0) display = purpose_defs[i].display;
        json_t *cc = json_object(), *codings = json_array();
        json_array_append_new(codings, coding(ACT_REASON, r->txt[T_PURPOSE], display));
        json_object_set_new(cc, "coding", codings);
        json_object_set_new(ev, "purposeOfEvent", json_pack("[o]", cc));
    }

    /* agents: the user (the requestor), and the organisation they act for */
    json_t *agents = json_array(), *user = json_object();
    if (r->txt[T_ROLE][0]) {
        acc_role role = acc_role_parse(r->txt[T_ROLE]);
        const char *label = role != ROLE_NONE ? acc_role_label(role) : r->txt[T_ROLE];
        json_t *cc = json_object(), *codings = json_array();
        json_array_append_new(codings,
                              coding(ROLE_SYSTEM_URL, r->txt[T_ROLE], role != ROLE_NONE ? label : NULL));
        json_object_set_new(cc, "coding", codings);
        json_object_set_new(cc, "text", json_string(label));
        json_object_set_new(user, "role", json_pack("[o]", cc));
    }
    json_object_set_new(user, "who",
                        json_pack("{s:s}", "display", r->txt[T_USER][0] ? r->txt[T_USER] : "unknown"));
    json_object_set_new(user, "requestor", json_true());
    if (r->txt[T_SOURCE][0] && strcmp(r->txt[T_SOURCE], "cli") != 0 &&
        strcmp(r->txt[T_SOURCE], MISMATCH_SOURCE) != 0)
        json_object_set_new(user, "network",
                            json_pack("{s:s,s:s}", "address", r->txt[T_SOURCE], "type", "2"));
    json_array_append_new(agents, user);
    if (r->txt[T_ORG][0])
        json_array_append_new(agents, json_pack("{s:{s:{s:s,s:s},s:s},s:b}", "who", "identifier", "system",
                                                ODS_SYSTEM, "value", r->txt[T_ORG], "display", r->txt[T_ORG],
                                                "requestor", 0));
    json_object_set_new(ev, "agent", agents);
    json_object_set_new(ev, "source", json_pack("{s:{s:s}}", "observer", "display", "concord"));

    /* entities: what was touched (with the request and the reason), and
     * whose record it is */
    json_t *entities = json_array();
    const char *rtype = r->txt[T_RTYPE], *rid = r->txt[T_RID], *pid = r->txt[T_PATIENT];
    int what_is_patient = strcmp(rtype, "Patient") == 0 && *rid && strcmp(rid, pid) == 0;
    json_t *what = NULL;
    if (*rtype || (!*pid && (r->txt[T_REASON][0] || r->txt[T_REQUEST][0]))) {
        what = json_object();
        if (*rtype && *rid) json_object_set_new(what, "what", reference(rtype, rid));
        if (*rtype)
            json_object_set_new(what, "type", coding("http://hl7.org/fhir/resource-types", rtype, NULL));
        else
            json_object_set_new(
                what, "type",
                coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"));
        if (what_is_patient)
            json_object_set_new(what, "role",
                                coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"));
        json_array_append_new(entities, what);
    }
    if (*pid && !what_is_patient) {
        json_t *pe = json_object();
        json_object_set_new(pe, "what", reference("Patient", pid));
        json_object_set_new(pe, "type",
                            coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"));
        json_object_set_new(pe, "role",
                            coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"));
        json_array_append_new(entities, pe);
        if (!what) what = pe;
    }
    if (what && r->txt[T_REASON][0]) json_object_set_new(what, "description", json_string(r->txt[T_REASON]));
    if (what && r->txt[T_REQUEST][0])
        json_object_set_new(what, "detail",
                            json_pack("[{s:s,s:s}]", "type", "request", "valueString", r->txt[T_REQUEST]));
    if (json_array_size(entities))
        json_object_set_new(ev, "entity", entities);
    else
        json_decref(entities);
    return ev;
}

#define MAX_QUERY_PKEYS 1000

/* Whether event r (decoded with terminate) passes f. */
static int event_matches(const audit_filter *f, const arow *r) {
    if (f->pkeys) {
        int found = 0;
        for (int i = 0; i < f->npkeys && !found; i++)
            found = f->pkeys[i] == r->num[I_PKEY];
        if (!found) return 0;
    }
    if (f->user && strcmp(r->txt[T_USER], f->user) != 0) return 0;
    if (f->action && strcmp(r->txt[T_ACTION], f->action) != 0) return 0;
    if (f->outcome && strcmp(r->txt[T_OUTCOME], f->outcome) != 0) return 0;
    if (f->since_usec && r->num[I_AT] < f->since_usec) return 0;
    if (f->until_usec && r->num[I_AT] > f->until_usec) return 0;
    return 1;
}

/* The blocks that may hold events passing f, newest first, into *out
 * (seq only, or seq..at_max when read from audit_block itself). By patient
 * or by user: group by group of 2^STORE_AUDIT_GROUP_BITS events, newest
 * first, one probe of the group's index each (schema.c, migration 12). */
typedef struct cand {
    int64_t first, last, at_min, at_max;
    int header; /* first..at_max known */
} cand;

static status candidates(const db_driver *drv, db *d, const audit_filter *f, cand **out, size_t *n, err *e) {
    buf sql = {0};
    db_stmt *st = NULL;
    size_t cap = 0;
    int indexed = f->pkeys || f->user;
    *out = NULL;
    *n = 0;
    if (f->pkeys) {
        buf_printf(&sql,
                   "WITH RECURSIVE g(b) AS (SELECT (SELECT max(seq) FROM audit_block) >> %d UNION ALL"
                   " SELECT b - 1 FROM g WHERE b > 0) SELECT DISTINCT p.seq FROM g, audit_block_patient p"
                   " WHERE p.grp = g.b AND p.pkey IN (",
                   STORE_AUDIT_GROUP_BITS);
        for (int i = 0; i < f->npkeys; i++)
            buf_puts(&sql, i ? ", ?" : "?");
        buf_puts(&sql, f->npkeys ? ") ORDER BY p.seq DESC" : "NULL) ORDER BY p.seq DESC");
    } else if (f->user) {
        buf_printf(&sql,
                   "WITH RECURSIVE g(b) AS (SELECT (SELECT max(seq) FROM audit_block) >> %d UNION ALL"
                   " SELECT b - 1 FROM g WHERE b > 0) SELECT u.seq FROM g, audit_block_user u"
                   " WHERE u.grp = g.b AND u.user_name = ? ORDER BY u.seq DESC",
                   STORE_AUDIT_GROUP_BITS);
    } else {
        buf_puts(&sql, "SELECT seq, last, at_min, at_max FROM audit_block WHERE at_max >= ? AND at_min <= ?"
                       " ORDER BY seq DESC");
    }
    status rc = drv->prepare(d, sql.p, 0, &st, e);
    if (rc != ST_OK) goto out;
    int p = 1;
    if (f->pkeys)
        for (int i = 0; i < f->npkeys; i++)
            drv->bind_int(st, p++, f->pkeys[i]);
    else if (f->user)
        drv->bind_text(st, p++, f->user, -1);
    else {
        drv->bind_int(st, p++, f->since_usec ? f->since_usec : INT64_MIN);
        drv->bind_int(st, p++, f->until_usec ? f->until_usec : INT64_MAX);
    }
    int r;
    while ((r = drv->step(st, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            cand *grown = realloc(*out, cap * sizeof *grown);
            if (!grown) {
                rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
                break;
            }
            *out = grown;
        }
        cand *c = &(*out)[(*n)++];
        memset(c, 0, sizeof *c);
        c->first = drv->col_int(st, 0);
        if (!indexed) {
            c->last = drv->col_int(st, 1);
            c->at_min = drv->col_int(st, 2);
            c->at_max = drv->col_int(st, 3);
            c->header = 1;
        }
    }
    drv->done(st);
    if (r < 0 && rc == ST_OK) rc = e->code;
out:
    buf_free(&sql);
    return rc;
}

static status fetch_block(const db_driver *drv, db *d, int64_t seq, rblock *b, int *found, err *e) {
    static const char sql[] = "SELECT " BLOCK_COLS " FROM audit_block WHERE seq = ?";
    db_stmt *st = NULL;
    *found = 0;
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, seq);
    int r = drv->step(st, e);
    if (r == 1) {
        read_block(drv, st, b);
        *found = 1;
    }
    drv->done(st);
    return r < 0 ? e->code : ST_OK;
}

status audit_query(store *s, const audit_filter *f, json_t *entries_out, int64_t *total, err *e) {
    err local; /* the caller may pass no err; the drivers need one */
    if (!e) e = &local;
    status rc = ST_OK;
    audit_filter none = {0};
    cand *cs = NULL;
    size_t ncs = 0;
    rblock b = {0};
    char why[160];
    if (!f) f = &none;
    if (total) *total = 0;
    if (f->pkeys && (f->npkeys < 0 || f->npkeys > MAX_QUERY_PKEYS))
        return err_set(e, ST_INVALID, "too-costly", NULL, "at most %d patient keys in one access log query",
                       MAX_QUERY_PKEYS);
    if (f->limit < 0 || f->offset < 0)
        return err_set(e, ST_INVALID, "invalid", NULL, "negative limit or offset");
    int64_t want = f->limit == 0 ? 100 : f->limit > 10000 ? 10000 : f->limit, skip = f->offset, count = 0;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    rc = candidates(drv, d, f, &cs, &ncs, e);
    int per_event = f->pkeys || f->user || f->action || f->outcome;
    for (size_t i = 0; rc == ST_OK && i < ncs && (total || want > 0); i++) {
        cand *c = &cs[i];
        int found = 1;
        if (c->header) {
            /* a block wholly inside the time window counts without reading
             * its events, unless the page is in it */
            int64_t nb = c->last - c->first + 1;
            int whole = !per_event && (!f->since_usec || c->at_min >= f->since_usec) &&
                        (!f->until_usec || c->at_max <= f->until_usec);
            if (whole && (skip >= nb || want == 0)) {
                count += nb;
                skip -= skip >= nb ? nb : 0;
                continue;
            }
            rc = fetch_block(drv, d, c->first, &b, &found, e);
        } else {
            rc = fetch_block(drv, d, c->first, &b, &found, e);
            if (rc == ST_OK && found &&
                ((f->since_usec && b.at_max < f->since_usec) || (f->until_usec && b.at_min > f->until_usec)))
                continue;
        }
        if (rc != ST_OK) break;
        if (!found) continue; /* removed since the candidates were listed */
        long n = ablock_decode(b.text.p, b.text.len, b.first, 1, &b.evs, &b.cap, why, sizeof why);
        if (why[0]) {
            rc = err_set(e, ST_IO, "exception", NULL,
                         "the access log's block of events %lld to %lld is not readable (run concord audit "
                         "verify): %s",
                         (long long)b.first, (long long)b.last, why);
            break;
        }
        for (long k = n - 1; k >= 0; k--) {
            const arow *r = &b.evs[k].r;
            if (!event_matches(f, r)) continue;
            count++;
            if (skip > 0) {
                skip--;
            } else if (want > 0) {
                json_array_append_new(entries_out, event_json(r));
                want--;
            }
        }
    }
    if (rc == ST_OK && total) *total = count;
    free(cs);
    rblock_free(&b);
    return rc;
}
