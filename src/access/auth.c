/*
 * auth.c — authentication: users and passwords, API tokens, sessions,
 * throttling of failed sign-ins (auth.h; docs/auth.md).
 *
 * Formats (what this module owns on the wire and on disk):
 *  - API token: "cct_" + base64url, no padding, of 32 random bytes: 47
 *    characters. acc_token.hash = lower-case hex of BLAKE2b-256 over the
 *    47 characters. The token itself is shown once and never stored.
 *  - Session id (the cookie value): base64url of 32 random bytes, 43
 *    characters. acc_session.hash = hex BLAKE2b-256 of it; the principal's
 *    `session` field carries that hash, never the id. CSRF token: base64url
 *    of 24 random bytes (32 characters), stored with the session.
 *  - acc_user.pw_hash: libsodium's crypto_pwhash_str (argon2id, the
 *    "$argon2id$v=19$m=...,t=...,p=1$salt$hash" encoding); NULL for a
 *    token-only user.
 *  - acc_throttle.subject: "u:" + user name, "a:" + remote address.
 *  - Times are whole seconds since the epoch; expires 0 = never; revoked
 *    0 = not revoked, else when.
 *
 * Invariants:
 *  - A credential is looked at only after its shape is checked: headers
 *    over AUTH_MAX_HEADER bytes, tokens and session ids of the wrong length
 *    or alphabet are refused before any hashing or SQL.
 *  - auth_login never reuses a session id the client presented: every
 *    sign-in makes a new random id (no session fixation).
 *  - A failed sign-in costs one argon2id verification whether or not the
 *    user exists (unknown users verify against a dummy hash) and counts
 *    against both the user name and the address; while either is locked
 *    no password is checked at all.
 *  - Token cache: an entry is trusted for cache_sec, and only while the
 *    process-wide generation `cache_gen` is the one read *before* the
 *    entry's SQL ran. Every revocation and disabling in this process bumps
 *    the generation after its commit, so a revoked token is refused at
 *    once here and within cache_sec in other processes.
 *  - At most AUTH_MAX_HASHING argon2id computations run at once in the
 *    process (64 MiB each with the interactive limits).
 *  - Writes go through store_begin/store_commit (SQLite's one writer);
 *    reads use this thread's connection. last_used and the sliding idle
 *    expiry are written at most about once a minute per token/session.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../base/log.h"
#include "../store/store_int.h"
#include "auth.h"

#define CACHE_SLOTS     1024 /* direct-mapped by the token hash */
#define TOUCH_EVERY_SEC 60   /* last_used / idle_expires written at most this often */
#define HOUSEKEEP_EVERY 3600 /* old sessions and throttle rows removed at most hourly */
#define HASH_WAIT_SEC   10   /* longest wait for a password-hashing turn */
#define HEX_HASH_LEN    64

/* ---- process-wide state ---------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int sodium_ready;
static int pwhash_fast; /* CONCORD_PWHASH=fast: tests only */
static sem_t hash_sem;
static _Atomic uint64_t cache_gen = 1;

static void init_process(void) {
    sodium_ready = sodium_init() >= 0;
    sem_init(&hash_sem, 0, AUTH_MAX_HASHING);
    const char *f = getenv("CONCORD_PWHASH");
    pwhash_fast = f && strcmp(f, "fast") == 0;
}

static status auth_init(err *e) {
    pthread_once(&init_once, init_process);
    return sodium_ready ? ST_OK
                        : err_set(e, ST_INTERNAL, "exception", NULL, "libsodium failed to initialise");
}

static void cache_invalidate_all(void) {
    atomic_fetch_add(&cache_gen, 1);
}

static unsigned long long pw_ops(void) {
    return pwhash_fast ? crypto_pwhash_OPSLIMIT_MIN : crypto_pwhash_OPSLIMIT_INTERACTIVE;
}
static size_t pw_mem(void) {
    return pwhash_fast ? crypto_pwhash_MEMLIMIT_MIN : crypto_pwhash_MEMLIMIT_INTERACTIVE;
}

/* ---- the handle ------------------------------------------------------------- */

typedef struct cache_entry {
    int used;
    unsigned char hash[32];
    uint64_t gen;
    int64_t until_ms; /* monotonic: trusted until */
    int64_t token_key;
    int64_t expires;   /* the token's own expiry (0 = never) */
    int64_t last_used; /* as written (or being written) to acc_token */
    acc_principal p;   /* without addr */
} cache_entry;

struct auth {
    store *s;
    auth_config cfg;
    char dummy[crypto_pwhash_STRBYTES]; /* hash of a random password: unknown users verify against it */
    pthread_mutex_t lock;               /* guards cache */
    cache_entry *cache;
    _Atomic int64_t housekept; /* when old rows were last removed */
};

/* ---- small helpers ------------------------------------------------------------ */

static int64_t now_sec(void) {
    return (int64_t)time(NULL);
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "2025-01-31T12:00:00Z" */
static void format_time(int64_t t, char out[32]) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "%lld", (long long)t);
}

static void copy_str(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "");
}

static void col_copy(const db_driver *drv, db_stmt *st, int col, char *dst, size_t n) {
    size_t len = 0;
    const char *t = drv->col_text(st, col, &len);
    if (!t) len = 0;
    if (len >= n) len = n - 1;
    if (len) memcpy(dst, t, len);
    dst[len] = 0;
}

/* Steps `st` to the end and finalises it; *rows = rows it returned. */
static status finish(const db_driver *drv, db_stmt *st, int *rows, err *e) {
    int r, n = 0;
    while ((r = drv->step(st, e)) == 1)
        n++;
    drv->done(st);
    if (rows) *rows = n;
    return r < 0 ? (e->code != ST_OK ? e->code : ST_IO) : ST_OK;
}

static int is_b64url(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Exactly n base64url characters and nothing else. */
static int b64url_exact(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && s[i] && is_b64url((unsigned char)s[i]))
        i++;
    return i == n && s[n] == 0;
}

static int token_shape_ok(const char *t) {
    return strncmp(t, AUTH_TOKEN_PREFIX, 4) == 0 && b64url_exact(t + 4, AUTH_TOKEN_LEN - 4);
}

/* base64url (no padding) of n random bytes into out. */
static void random_b64(size_t n, char *out, size_t out_n) {
    unsigned char raw[32];
    randombytes_buf(raw, n);
    sodium_bin2base64(out, out_n, raw, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

/* BLAKE2b-256 of s: raw (may be NULL) and hex (65 bytes). */
static void secret_hash(const char *s, unsigned char raw_out[32], char hex[HEX_HASH_LEN + 1]) {
    unsigned char raw[32];
    crypto_generichash(raw, sizeof raw, (const unsigned char *)s, strlen(s), NULL, 0);
    sodium_bin2hex(hex, HEX_HASH_LEN + 1, raw, sizeof raw);
    if (raw_out) memcpy(raw_out, raw, sizeof raw);
}

static int valid_user_name(const char *s) {
    size_t n = 0;
    for (; s && s[n] && n < 64; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return 0;
    }
    return s && n >= 2 && n <= 63 && s[n] == 0;
}

static int valid_ods(const char *s) {
    size_t n = 0;
    for (; s[n] && n < 16; n++) {
        char c = s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return 0;
    }
    return n >= 2 && n <= 15 && s[n] == 0;
}

/* A FHIR id: [A-Za-z0-9\-\.]{1,64}. */
static int valid_fhir_id(const char *s) {
    size_t n = 0;
    for (; s[n] && n < 65; n++) {
        char c = s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.'))
            return 0;
    }
    return n >= 1 && n <= 64 && s[n] == 0;
}

/* Printable text (UTF-8 allowed) of at most max bytes. */
static int valid_text(const char *s, size_t max) {
    size_t n = 0;
    for (; s[n] && n <= max; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) return 0;
    return n <= max;
}

/* ---- password hashing ----------------------------------------------------------- */

static status hash_turn(err *e) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HASH_WAIT_SEC;
    status rc = ST_OK;
    for (;;) {
        if (sem_timedwait(&hash_sem, &ts) == 0) break;
        if (errno == EINTR) continue;
        rc = err_set(e, ST_THROTTLED, "throttled", NULL,
                     "too many sign-ins in progress; try again in a few seconds");
        break;
    }
    return rc;
}

static status password_hash(const char *pw, char out[crypto_pwhash_STRBYTES], err *e) {
    status rc = hash_turn(e);
    if (rc != ST_OK) goto out;
    int r = crypto_pwhash_str(out, pw, strlen(pw), pw_ops(), pw_mem());
    sem_post(&hash_sem);
    if (r != 0) rc = err_set(e, ST_NOMEM, "exception", NULL, "password hashing failed (out of memory)");
out:
    return rc;
}

/* *ok = 1 when pw matches hash. */
static status password_verify(const char *hash, const char *pw, int *ok, err *e) {
    *ok = 0;
    status rc = hash_turn(e);
    if (rc != ST_OK) goto out;
    *ok = crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
    sem_post(&hash_sem);
out:
    return rc;
}

static status check_password(const char *pw, err *e) {
    status rc = ST_OK;
    size_t n = strnlen(pw, AUTH_MAX_PASSWORD + 1);
    if (n < AUTH_MIN_PASSWORD)
        rc = err_set(e, ST_INVALID, "value", "password", "password too short: at least %d characters",
                     AUTH_MIN_PASSWORD);
    else if (n > AUTH_MAX_PASSWORD)
        rc = err_set(e, ST_INVALID, "value", "password", "password too long: at most %d bytes",
                     AUTH_MAX_PASSWORD);
    return rc;
}

/* ---- open / close ------------------------------------------------------------ */

status auth_open(store *s, const auth_config *cfg, auth **out, err *e) {
    err local;
    if (!e) e = &local;
    auth *a = NULL;
    char pw[48];
    status rc = auth_init(e);
    *out = NULL;
    if (rc != ST_OK) goto out;
    a = calloc(1, sizeof *a);
    if (a) a->cache = calloc(CACHE_SLOTS, sizeof *a->cache);
    if (!a || !a->cache) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    a->s = s;
    if (cfg) a->cfg = *cfg;
    if (a->cfg.session_idle_sec <= 0) a->cfg.session_idle_sec = AUTH_DEFAULT_IDLE_SEC;
    if (a->cfg.session_max_sec <= 0) a->cfg.session_max_sec = AUTH_DEFAULT_MAX_SEC;
    if (a->cfg.max_failures <= 0) a->cfg.max_failures = AUTH_DEFAULT_MAX_FAILURES;
    if (a->cfg.lock_sec <= 0) a->cfg.lock_sec = AUTH_DEFAULT_LOCK_SEC;
    if (a->cfg.cache_sec <= 0) a->cfg.cache_sec = AUTH_DEFAULT_CACHE_SEC;
    if (a->cfg.addr_max_failures <= 0) a->cfg.addr_max_failures = 4 * a->cfg.max_failures;
    if (a->cfg.session_idle_sec > a->cfg.session_max_sec) a->cfg.session_idle_sec = a->cfg.session_max_sec;
    pthread_mutex_init(&a->lock, NULL);
    random_b64(24, pw, sizeof pw);
    rc = password_hash(pw, a->dummy, e);
    sodium_memzero(pw, sizeof pw);
    if (rc != ST_OK) goto out;
    *out = a;
    a = NULL;
out:
    if (a) auth_close(a);
    return rc;
}

void auth_close(auth *a) {
    if (!a) return;
    if (a->cache) {
        sodium_memzero(a->cache, CACHE_SLOTS * sizeof *a->cache);
        pthread_mutex_destroy(&a->lock);
    }
    free(a->cache);
    free(a);
}

const auth_config *auth_config_of(const auth *a) {
    return &a->cfg;
}

/* ---- users ------------------------------------------------------------------- */

#define USER_COLS  "u.user_key, u.name, u.display, u.role, u.org, u.practitioner, u.patient_id, u.disabled"
#define USER_NCOLS 8

/* Columns USER_COLS starting at `c` -> principal; returns disabled. */
static int principal_from_row(const db_driver *drv, db_stmt *st, int c, acc_principal *p) {
    char role[32];
    p->user_key = drv->col_int(st, c);
    col_copy(drv, st, c + 1, p->user, sizeof p->user);
    col_copy(drv, st, c + 2, p->display, sizeof p->display);
    col_copy(drv, st, c + 3, role, sizeof role);
    p->role = acc_role_parse(role);
    col_copy(drv, st, c + 4, p->org, sizeof p->org);
    col_copy(drv, st, c + 5, p->practitioner, sizeof p->practitioner);
    col_copy(drv, st, c + 6, p->patient, sizeof p->patient);
    return drv->col_int(st, c + 7) != 0;
}

typedef struct user_row {
    acc_principal p;
    int found, disabled, has_pw;
    char pw_hash[crypto_pwhash_STRBYTES];
} user_row;

/* The user called `name` on connection d (u->found = 0 if none). */
static status user_load(store *s, db *d, const char *name, user_row *u, err *e) {
    const db_driver *drv = s->drv;
    static const char sql[] = "SELECT " USER_COLS ", u.pw_hash FROM acc_user u WHERE u.name = ?";
    db_stmt *st = NULL;
    memset(u, 0, sizeof *u);
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, name, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        u->found = 1;
        u->disabled = principal_from_row(drv, st, 0, &u->p);
        size_t len = 0;
        const char *h = drv->col_text(st, USER_NCOLS, &len);
        if (h && len > 0 && len < sizeof u->pw_hash) {
            memcpy(u->pw_hash, h, len);
            u->pw_hash[len] = 0;
            u->has_pw = 1;
        }
    }
    drv->done(st);
    if (r < 0) rc = e->code != ST_OK ? e->code : ST_IO;
out:
    return rc;
}

static status check_user_spec(const auth_user_spec *u, err *e) {
    status rc = ST_OK;
    acc_role role = u->role ? acc_role_parse(u->role) : ROLE_NONE;
    if (!valid_user_name(u->name))
        rc = err_set(e, ST_INVALID, "value", "name",
                     "user name '%.80s' is not valid: 2 to 63 characters of a-z, 0-9, '.', '_' and '-'",
                     u->name ? u->name : "");
    else if (role == ROLE_NONE)
        rc = err_set(e, ST_INVALID, "value", "role",
                     "unknown role '%.40s' (gp, practice-nurse, consultant, ed-clinician, community-nurse, "
                     "social-worker, pharmacist, mental-health, mdg-coordinator, analyst, admin, "
                     "privacy-officer, patient, system)",
                     u->role ? u->role : "");
    else if (u->display && (!*u->display || !valid_text(u->display, 95)))
        rc = err_set(e, ST_INVALID, "value", "display",
                     "display name must be 1 to 95 bytes without control characters");
    else if (u->org && *u->org && !valid_ods(u->org))
        rc = err_set(e, ST_INVALID, "value", "org",
                     "organisation '%.40s' is not an ODS code (2 to 15 letters/digits)", u->org);
    else if (auth_role_needs_org(role) && !(u->org && *u->org))
        rc = err_set(e, ST_INVALID, "required", "org", "role %s needs an organisation (ODS code)",
                     acc_role_name(role));
    else if (u->practitioner && *u->practitioner && !valid_fhir_id(u->practitioner))
        rc = err_set(e, ST_INVALID, "value", "practitioner", "practitioner '%.80s' is not a FHIR id",
                     u->practitioner);
    else if (u->patient_id && *u->patient_id && !valid_fhir_id(u->patient_id))
        rc = err_set(e, ST_INVALID, "value", "patient", "patient '%.80s' is not a FHIR id", u->patient_id);
    else if (role == ROLE_PATIENT && !(u->patient_id && *u->patient_id))
        rc = err_set(e, ST_INVALID, "required", "patient", "role patient needs the user's own Patient id");
    else if (role != ROLE_PATIENT && u->patient_id && *u->patient_id)
        rc = err_set(e, ST_INVALID, "value", "patient", "only role patient has a Patient id");
    else if (u->password)
        rc = check_password(u->password, e);
    return rc;
}

status auth_user_add(store *s, const auth_user_spec *u, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = s->drv;
    static const char sql[] = "INSERT INTO acc_user (name, display, role, org, practitioner, patient_id, "
                              "pw_hash, disabled, created, updated)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)";
    char hash[crypto_pwhash_STRBYTES] = "";
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    int64_t now = now_sec();
    status rc = auth_init(e);
    if (rc == ST_OK) rc = check_user_spec(u, e);
    if (rc == ST_OK && u->password) rc = password_hash(u->password, hash, e); /* before the write lock */
    if (rc != ST_OK) goto out;
    rc = store_begin_keeping_access(s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, u->name, -1);
    drv->bind_text(st, 2, u->display ? u->display : u->name, -1);
    drv->bind_text(st, 3, u->role, -1);
    drv->bind_text(st, 4, u->org ? u->org : "", -1);
    drv->bind_text(st, 5, u->practitioner ? u->practitioner : "", -1);
    drv->bind_text(st, 6, u->patient_id ? u->patient_id : "", -1);
    if (u->password)
        drv->bind_text(st, 7, hash, -1);
    else
        drv->bind_null(st, 7);
    drv->bind_int(st, 8, now);
    drv->bind_int(st, 9, now);
    rc = finish(drv, st, NULL, e);
    if (rc == ST_CONFLICT)
        rc = err_set(e, ST_CONFLICT, "conflict", "name", "user %s already exists", u->name);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    sodium_memzero(hash, sizeof hash);
    return rc;
}

/* Revoke every live session (and with tokens=1 every token) of user_key, in tx. */
static status revoke_user_credentials(store_txn *tx, int64_t user_key, int tokens, int64_t now, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sessions[] = "UPDATE acc_session SET revoked = ? WHERE user_key = ? AND revoked = 0";
    static const char toks[] = "UPDATE acc_token SET revoked = ? WHERE user_key = ? AND revoked = 0";
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sessions, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, now);
    drv->bind_int(st, 2, user_key);
    rc = finish(drv, st, NULL, e);
    if (rc != ST_OK || !tokens) goto out;
    rc = drv->prepare(tx->d, toks, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, now);
    drv->bind_int(st, 2, user_key);
    rc = finish(drv, st, NULL, e);
out:
    return rc;
}

/* UPDATE ... WHERE name = ? RETURNING user_key: *user_key, or ST_NOT_FOUND. */
static status update_user(store_txn *tx, const char *sql, const char *name, int disabled, const char *pw_hash,
                          int64_t now, int64_t *user_key, err *e) {
    const db_driver *drv = tx->s->drv;
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    if (pw_hash)
        drv->bind_text(st, 1, pw_hash, -1);
    else
        drv->bind_int(st, 1, disabled);
    drv->bind_int(st, 2, now);
    drv->bind_text(st, 3, name, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        *user_key = drv->col_int(st, 0);
        while ((r = drv->step(st, e)) == 1) {
        }
        if (r == 0) r = 1;
    }
    drv->done(st);
    if (r < 0)
        rc = e->code != ST_OK ? e->code : ST_IO;
    else if (r == 0)
        rc = err_set(e, ST_NOT_FOUND, "not-found", "name", "no user %.80s", name);
out:
    return rc;
}

status auth_user_set_disabled(store *s, const char *name, int disabled, err *e) {
    err local;
    if (!e) e = &local;
    static const char sql[] =
        "UPDATE acc_user SET disabled = ?, updated = ? WHERE name = ? RETURNING user_key";
    store_txn *tx = NULL;
    int64_t user_key = 0, now = now_sec();
    status rc = store_begin_keeping_access(s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = update_user(tx, sql, name ? name : "", disabled ? 1 : 0, NULL, now, &user_key, e);
    if (rc == ST_OK && disabled) rc = revoke_user_credentials(tx, user_key, 1, now, e);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
    if (rc == ST_OK && disabled) cache_invalidate_all();
out:
    if (tx) store_rollback(tx);
    return rc;
}

status auth_user_set_password(store *s, const char *name, const char *password, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = s->drv;
    static const char sql[] =
        "UPDATE acc_user SET pw_hash = ?, updated = ? WHERE name = ? RETURNING user_key";
    static const char unthrottle[] = "DELETE FROM acc_throttle WHERE subject = ?";
    char hash[crypto_pwhash_STRBYTES] = "", subject[80];
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    int64_t user_key = 0, now = now_sec();
    status rc = auth_init(e);
    if (rc == ST_OK && !password)
        rc = err_set(e, ST_INVALID, "required", "password", "a new password is required");
    if (rc == ST_OK) rc = check_password(password, e);
    if (rc == ST_OK && !valid_user_name(name))
        rc = err_set(e, ST_NOT_FOUND, "not-found", "name", "no user %.80s", name ? name : "");
    if (rc == ST_OK) rc = password_hash(password, hash, e);
    if (rc != ST_OK) goto out;
    rc = store_begin_keeping_access(s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = update_user(tx, sql, name, 0, hash, now, &user_key, e);
    if (rc == ST_OK) rc = revoke_user_credentials(tx, user_key, 0, now, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, unthrottle, 1, &st, e);
    if (rc != ST_OK) goto out;
    snprintf(subject, sizeof subject, "u:%s", name);
    drv->bind_text(st, 1, subject, -1);
    rc = finish(drv, st, NULL, e);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    sodium_memzero(hash, sizeof hash);
    return rc;
}

status auth_user_list(store *s, json_t *out_array, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = s->drv;
    static const char sql[] = "SELECT " USER_COLS ", CASE WHEN u.pw_hash IS NULL THEN 0 ELSE 1 END, u.created"
                              " FROM acc_user u ORDER BY u.name";
    db_stmt *st = NULL;
    status rc = ST_OK;
    db *d = store_db(s, e);
    if (!d) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        acc_principal p;
        char created[32];
        memset(&p, 0, sizeof p);
        int disabled = principal_from_row(drv, st, 0, &p);
        format_time(drv->col_int(st, USER_NCOLS + 1), created);
        json_array_append_new(
            out_array, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:s}", "name", p.user, "display",
                                 p.display, "role", acc_role_name(p.role), "org", p.org, "practitioner",
                                 p.practitioner, "patient", p.patient, "disabled", disabled, "password",
                                 (int)drv->col_int(st, USER_NCOLS), "created", created));
    }
    drv->done(st);
    if (r < 0) rc = e->code != ST_OK ? e->code : ST_IO;
out:
    return rc;
}

status auth_user_get(store *s, const char *name, acc_principal *out, int *disabled, err *e) {
    err local;
    if (!e) e = &local;
    user_row *u = calloc(1, sizeof *u);
    status rc = ST_OK;
    memset(out, 0, sizeof *out);
    db *d = store_db(s, e);
    if (!u)
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    else if (!d)
        rc = e->code != ST_OK ? e->code : ST_IO;
    else if (valid_user_name(name))
        rc = user_load(s, d, name, u, e);
    if (rc != ST_OK) goto out;
    if (!u->found) {
        rc = err_set(e, ST_NOT_FOUND, "not-found", "name", "no user %.80s", name ? name : "");
        goto out;
    }
    *out = u->p;
    if (disabled) *disabled = u->disabled;
out:
    if (u) sodium_memzero(u, sizeof *u);
    free(u);
    return rc;
}

/* ---- tokens ------------------------------------------------------------------- */

status auth_token_create(store *s, const char *user, const char *label, int64_t ttl_sec, char out[96],
                         err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = s->drv;
    static const char ins[] =
        "INSERT INTO acc_token (user_key, hash, label, created, expires, revoked, last_used)"
        " VALUES (?, ?, ?, ?, ?, 0, 0)";
    char token[AUTH_TOKEN_LEN + 8], hex[HEX_HASH_LEN + 1];
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    user_row *u = calloc(1, sizeof *u);
    int64_t now = now_sec();
    status rc = auth_init(e);
    out[0] = 0;
    if (rc != ST_OK) goto out;
    if (!u)
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    else if (ttl_sec < 0 || ttl_sec > (int64_t)100 * 366 * 86400)
        rc = err_set(e, ST_INVALID, "value", "ttl", "token lifetime must be 0 (never expires) to 100 years");
    else if (label && !valid_text(label, 200))
        rc = err_set(e, ST_INVALID, "value", "label",
                     "label must be at most 200 bytes without control characters");
    else if (!valid_user_name(user))
        rc = err_set(e, ST_NOT_FOUND, "not-found", "user", "no user %.80s", user ? user : "");
    if (rc != ST_OK) goto out;
    rc = store_begin_keeping_access(s, &tx, e);
    if (rc == ST_OK) rc = user_load(s, tx->d, user, u, e);
    if (rc != ST_OK) goto out;
    if (!u->found) {
        rc = err_set(e, ST_NOT_FOUND, "not-found", "user", "no user %.80s", user);
        goto out;
    }
    if (u->disabled) {
        rc = err_set(e, ST_CONFLICT, "business-rule", "user", "user %s is disabled: enable it first", user);
        goto out;
    }
    memcpy(token, AUTH_TOKEN_PREFIX, 4);
    random_b64(32, token + 4, sizeof token - 4);
    secret_hash(token, NULL, hex);
    rc = drv->prepare(tx->d, ins, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, u->p.user_key);
    drv->bind_text(st, 2, hex, -1);
    drv->bind_text(st, 3, label ? label : "", -1);
    drv->bind_int(st, 4, now);
    drv->bind_int(st, 5, ttl_sec ? now + ttl_sec : 0);
    rc = finish(drv, st, NULL, e);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
    if (rc == ST_OK) memcpy(out, token, AUTH_TOKEN_LEN + 1);
out:
    if (tx) store_rollback(tx);
    sodium_memzero(token, sizeof token);
    free(u);
    return rc;
}

status auth_token_revoke(store *s, const char *arg, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = s->drv;
    static const char by_key[] =
        "UPDATE acc_token SET revoked = ? WHERE token_key = ? AND revoked = 0 RETURNING token_key";
    static const char by_hash[] =
        "UPDATE acc_token SET revoked = ? WHERE hash = ? AND revoked = 0 RETURNING token_key";
    static const char exists_key[] = "SELECT revoked FROM acc_token WHERE token_key = ?";
    static const char exists_hash[] = "SELECT revoked FROM acc_token WHERE hash = ?";
    char hex[HEX_HASH_LEN + 1];
    int64_t key = 0, now = now_sec();
    int is_key = 0, rows = 0;
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    status rc = auth_init(e);
    if (rc != ST_OK) goto out;
    if (!arg) arg = "";
    size_t n = strnlen(arg, 20);
    if (n >= 1 && n <= 18 && strspn(arg, "0123456789") == n) {
        is_key = 1;
        key = strtoll(arg, NULL, 10);
    } else if (token_shape_ok(arg)) {
        secret_hash(arg, NULL, hex);
    } else {
        rc = err_set(e, ST_INVALID, "value", "token",
                     "'%.20s%s' is neither a token (cct_...) nor a token key (a number)", arg,
                     strlen(arg) > 20 ? "..." : "");
        goto out;
    }
    rc = store_begin_keeping_access(s, &tx, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, is_key ? by_key : by_hash, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, now);
    if (is_key)
        drv->bind_int(st, 2, key);
    else
        drv->bind_text(st, 2, hex, -1);
    rc = finish(drv, st, &rows, e);
    if (rc == ST_OK && rows == 0) { /* already revoked, or no such token? */
        rc = drv->prepare(tx->d, is_key ? exists_key : exists_hash, 1, &st, e);
        if (rc != ST_OK) goto out;
        if (is_key)
            drv->bind_int(st, 1, key);
        else
            drv->bind_text(st, 1, hex, -1);
        rc = finish(drv, st, &rows, e);
        if (rc == ST_OK && rows == 0)
            rc = is_key ? err_set(e, ST_NOT_FOUND, "not-found", "token", "no token with key %lld",
                                  (long long)key)
                        : err_set(e, ST_NOT_FOUND, "not-found", "token", "unknown token");
    }
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
    if (rc == ST_OK) cache_invalidate_all();
out:
    if (tx) store_rollback(tx);
    return rc;
}

static json_t *time_or_null(int64_t t) {
    char buf[32];
    if (!t) return json_null();
    format_time(t, buf);
    return json_string(buf);
}

status auth_token_list(store *s, const char *user, json_t *out_array, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = s->drv;
#define TOKEN_LIST_SQL                                                                                       \
    "SELECT t.token_key, u.name, t.label, t.created, t.expires, t.revoked, t.last_used FROM acc_token t"     \
    " JOIN acc_user u ON u.user_key = t.user_key"
    static const char all[] = TOKEN_LIST_SQL " ORDER BY t.token_key DESC";
    static const char one[] = TOKEN_LIST_SQL " WHERE u.name = ? ORDER BY t.token_key DESC";
#undef TOKEN_LIST_SQL
    db_stmt *st = NULL;
    user_row *u = NULL;
    int64_t now = now_sec();
    status rc = ST_OK;
    db *d = store_db(s, e);
    if (!d) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    if (user) { /* say so when the user does not exist, rather than listing nothing */
        u = calloc(1, sizeof *u);
        if (!u)
            rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        else if (valid_user_name(user))
            rc = user_load(s, d, user, u, e);
        if (rc == ST_OK && !u->found)
            rc = err_set(e, ST_NOT_FOUND, "not-found", "user", "no user %.80s", user);
        if (rc != ST_OK) goto out;
    }
    rc = drv->prepare(d, user ? one : all, 1, &st, e);
    if (rc != ST_OK) goto out;
    if (user) drv->bind_text(st, 1, user, -1);
    int r;
    while ((r = drv->step(st, e)) == 1) {
        char name[64], label[256], created[32];
        col_copy(drv, st, 1, name, sizeof name);
        col_copy(drv, st, 2, label, sizeof label);
        format_time(drv->col_int(st, 3), created);
        int64_t expires = drv->col_int(st, 4), revoked = drv->col_int(st, 5);
        const char *state = revoked ? "revoked" : (expires && now > expires) ? "expired" : "active";
        json_array_append_new(
            out_array, json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:s}", "key",
                                 (json_int_t)drv->col_int(st, 0), "user", name, "label", label, "created",
                                 created, "expires", time_or_null(expires), "revoked", time_or_null(revoked),
                                 "last_used", time_or_null(drv->col_int(st, 6)), "state", state));
    }
    drv->done(st);
    if (r < 0) rc = e->code != ST_OK ? e->code : ST_IO;
out:
    free(u);
    return rc;
}

/* ---- bearer tokens ------------------------------------------------------------- */

/* Writes last_used; a failure costs only the statistic. */
static void token_touch(store *s, int64_t token_key, int64_t now) {
    static const char sql[] = "UPDATE acc_token SET last_used = ? WHERE token_key = ?";
    const db_driver *drv = s->drv;
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    err e;
    err_clear(&e);
    status rc = store_begin_keeping_access(s, &tx, &e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, sql, 1, &st, &e);
    if (rc == ST_OK) {
        drv->bind_int(st, 1, now);
        drv->bind_int(st, 2, token_key);
        rc = finish(drv, st, NULL, &e);
    }
    if (rc == ST_OK) {
        rc = store_commit(tx, &e);
        tx = NULL;
    }
    if (tx) store_rollback(tx);
    if (rc != ST_OK)
        log_warn("auth: recording when token %lld was last used: %s", (long long)token_key, e.msg);
}

status auth_bearer(auth *a, const char *header, const char *addr, acc_principal *out, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = a->s->drv;
    static const char sql[] = "SELECT t.token_key, t.expires, t.revoked, t.last_used, " USER_COLS
                              " FROM acc_token t JOIN acc_user u ON u.user_key = t.user_key WHERE t.hash = ?";
    char token[AUTH_TOKEN_LEN + 1], hex[HEX_HASH_LEN + 1], when[32];
    unsigned char raw[32];
    int64_t now = now_sec(), touch_key = 0;
    db_stmt *st = NULL;
    status rc = ST_OK;
    memset(out, 0, sizeof *out);

    /* the shape first: nothing unbounded is hashed or sent to the database */
    size_t hlen = header ? strnlen(header, AUTH_MAX_HEADER + 1) : 0;
    if (hlen == 0) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL,
                     "no credentials: send 'Authorization: Bearer <token>'");
        goto out;
    }
    if (hlen > AUTH_MAX_HEADER) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "Authorization header longer than %d bytes",
                     AUTH_MAX_HEADER);
        goto out;
    }
    if (strncasecmp(header, "Bearer", 6) != 0 || (header[6] != ' ' && header[6] != '\t')) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "Authorization scheme must be Bearer");
        goto out;
    }
    const char *t = header + 6;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t tlen = strlen(t);
    while (tlen > 0 && (t[tlen - 1] == ' ' || t[tlen - 1] == '\t'))
        tlen--;
    if (tlen != AUTH_TOKEN_LEN) {
        rc = err_set(
            e, ST_UNAUTHENTICATED, "login", NULL,
            "malformed token: expected cct_ and 43 base64url characters (%d in all), got %zu characters",
            AUTH_TOKEN_LEN, tlen);
        goto out;
    }
    memcpy(token, t, AUTH_TOKEN_LEN);
    token[AUTH_TOKEN_LEN] = 0;
    if (!token_shape_ok(token)) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL,
                     "malformed token: expected cct_ and 43 base64url characters (A-Z a-z 0-9 - _)");
        goto out;
    }
    rc = auth_init(e);
    if (rc != ST_OK) goto out;
    secret_hash(token, raw, hex);

    /* the cache */
    uint64_t gen = atomic_load(&cache_gen);
    int64_t mono = mono_ms();
    unsigned slot = ((unsigned)raw[0] | (unsigned)raw[1] << 8) % CACHE_SLOTS;
    int hit = 0;
    pthread_mutex_lock(&a->lock);
    cache_entry *c = &a->cache[slot];
    if (c->used && c->gen == gen && mono < c->until_ms && sodium_memcmp(c->hash, raw, sizeof raw) == 0) {
        hit = 1;
        if (c->expires && now > c->expires) {
            c->used = 0;
            format_time(c->expires, when);
            rc = err_set(e, ST_UNAUTHENTICATED, "expired", NULL, "token %lld expired at %s",
                         (long long)c->token_key, when);
        } else {
            *out = c->p;
            if (now - c->last_used >= TOUCH_EVERY_SEC) {
                c->last_used = now;
                touch_key = c->token_key;
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
    if (hit) goto out;

    /* the database */
    db *d = store_db(a->s, e);
    if (!d) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, hex, -1);
    int r = drv->step(st, e);
    int64_t key = 0, expires = 0, revoked = 0, last_used = 0;
    int disabled = 0;
    acc_principal p;
    memset(&p, 0, sizeof p);
    if (r == 1) {
        key = drv->col_int(st, 0);
        expires = drv->col_int(st, 1);
        revoked = drv->col_int(st, 2);
        last_used = drv->col_int(st, 3);
        disabled = principal_from_row(drv, st, 4, &p);
    }
    drv->done(st);
    if (r < 0) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    if (r == 0) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "unknown token");
    } else if (revoked) {
        format_time(revoked, when);
        rc = err_set(e, ST_UNAUTHENTICATED, "expired", NULL, "token %lld was revoked at %s", (long long)key,
                     when);
    } else if (expires && now > expires) {
        format_time(expires, when);
        rc =
            err_set(e, ST_UNAUTHENTICATED, "expired", NULL, "token %lld expired at %s", (long long)key, when);
    } else if (disabled) {
        rc = err_set(e, ST_UNAUTHENTICATED, "suppressed", NULL, "user %s is disabled", p.user);
    } else if (p.role == ROLE_NONE) {
        rc = err_set(e, ST_UNAUTHENTICATED, "security", NULL, "user %s has no known role", p.user);
    }
    if (rc != ST_OK) goto out;
    p.via = ACC_VIA_TOKEN;
    *out = p;
    pthread_mutex_lock(&a->lock);
    c = &a->cache[slot];
    c->used = 1;
    memcpy(c->hash, raw, sizeof raw);
    c->gen = gen; /* read before the SELECT: a revocation committed since makes this entry stale */
    c->until_ms = mono + (int64_t)a->cfg.cache_sec * 1000;
    c->token_key = key;
    c->expires = expires;
    c->p = p;
    c->last_used = last_used;
    if (now - last_used >= TOUCH_EVERY_SEC) {
        c->last_used = now;
        touch_key = key;
    }
    pthread_mutex_unlock(&a->lock);
out:
    if (rc == ST_OK) {
        copy_str(out->addr, sizeof out->addr, addr);
        if (touch_key) token_touch(a->s, touch_key, now);
    } else {
        memset(out, 0, sizeof *out);
    }
    sodium_memzero(token, sizeof token);
    return rc;
}

/* ---- throttling --------------------------------------------------------------- */

/* "u:name" / "a:addr" into out; "" when there is no such subject. */
static void throttle_subjects(const char *user, const char *addr, char su[80], char sa[80]) {
    su[0] = sa[0] = 0;
    if (valid_user_name(user)) snprintf(su, 80, "u:%s", user);
    if (addr && *addr) snprintf(sa, 80, "a:%.60s", addr);
}

/* ST_THROTTLED while either subject is locked. */
static status throttle_check(auth *a, db *d, const char *su, const char *sa, int64_t now, err *e) {
    const db_driver *drv = a->s->drv;
    static const char sql[] = "SELECT locked_until FROM acc_throttle WHERE subject = ?";
    status rc = ST_OK;
    const char *subjects[2] = {su, sa};
    for (int i = 0; i < 2 && rc == ST_OK; i++) {
        if (!subjects[i][0]) continue;
        db_stmt *st = NULL;
        rc = drv->prepare(d, sql, 1, &st, e);
        if (rc != ST_OK) break;
        drv->bind_text(st, 1, subjects[i], -1);
        int r = drv->step(st, e);
        int64_t until = r == 1 ? drv->col_int(st, 0) : 0;
        drv->done(st);
        if (r < 0) {
            rc = e->code != ST_OK ? e->code : ST_IO;
        } else if (until > now) {
            char when[32];
            format_time(until, when);
            rc = err_set(e, ST_THROTTLED, "throttled", NULL,
                         "too many failed sign-ins %s %s; try again in %lld s (after %s)",
                         i == 0 ? "for user" : "from address", subjects[i] + 2, (long long)(until - now),
                         when);
        }
    }
    return rc;
}

/* One more failure for `subject` inside tx: counts within the window and
 * locks at the limit, doubling the lock with each further failure. */
static status throttle_fail_one(auth *a, store_txn *tx, const char *subject, int max_failures, int64_t now,
                                err *e) {
    const db_driver *drv = a->s->drv;
    static const char ensure[] =
        "INSERT INTO acc_throttle (subject, failures, first, locked_until) VALUES (?, 0, ?, 0)"
        " ON CONFLICT (subject) DO NOTHING";
    static const char sel[] = "SELECT failures, first, locked_until FROM acc_throttle WHERE subject = ?";
    static const char sel_lock[] =
        "SELECT failures, first, locked_until FROM acc_throttle WHERE subject = ? FOR UPDATE";
    static const char upd[] =
        "UPDATE acc_throttle SET failures = ?, first = ?, locked_until = ? WHERE subject = ?";
    db_stmt *st = NULL;
    int64_t failures = 0, first = now, until = 0;
    status rc = drv->prepare(tx->d, ensure, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, subject, -1);
    drv->bind_int(st, 2, now);
    rc = finish(drv, st, NULL, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, drv->for_update[0] ? sel_lock : sel, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, subject, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        failures = drv->col_int(st, 0);
        first = drv->col_int(st, 1);
        until = drv->col_int(st, 2);
    }
    drv->done(st);
    if (r < 0) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    if (now - first > AUTH_THROTTLE_WINDOW_SEC && now > until + AUTH_THROTTLE_WINDOW_SEC) {
        failures = 0; /* a new series: the last one is over */
        first = now;
        until = 0;
    }
    failures++;
    if (failures >= max_failures) {
        int64_t extra = failures - max_failures, lock = a->cfg.lock_sec;
        while (extra-- > 0 && lock < AUTH_MAX_LOCK_SEC)
            lock *= 2;
        if (lock > AUTH_MAX_LOCK_SEC) lock = AUTH_MAX_LOCK_SEC;
        until = now + lock;
    }
    rc = drv->prepare(tx->d, upd, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, failures);
    drv->bind_int(st, 2, first);
    drv->bind_int(st, 3, until);
    drv->bind_text(st, 4, subject, -1);
    rc = finish(drv, st, NULL, e);
    if (rc == ST_OK && until > now) {
        char when[32];
        format_time(until, when);
        log_warn("auth: sign-in locked for %s until %s (%lld failures)", subject, when, (long long)failures);
    }
out:
    return rc;
}

static void throttle_fail(auth *a, const char *su, const char *sa, int64_t now) {
    store_txn *tx = NULL;
    err e;
    err_clear(&e);
    status rc = store_begin_keeping_access(a->s, &tx, &e);
    if (rc == ST_OK && su[0]) rc = throttle_fail_one(a, tx, su, a->cfg.max_failures, now, &e);
    if (rc == ST_OK && sa[0]) rc = throttle_fail_one(a, tx, sa, a->cfg.addr_max_failures, now, &e);
    if (rc == ST_OK) {
        rc = store_commit(tx, &e);
        tx = NULL;
    }
    if (tx) store_rollback(tx);
    if (rc != ST_OK) log_warn("auth: recording a failed sign-in: %s", e.msg);
}

/* ---- sessions ----------------------------------------------------------------- */

/* Old sessions and finished throttle series, at most hourly, inside tx. */
static status housekeep(auth *a, store_txn *tx, int64_t now, err *e) {
    static const char sessions[] =
        "DELETE FROM acc_session WHERE expires < ? OR (revoked > 0 AND revoked < ?) OR idle_expires < ?";
    static const char throttle[] = "DELETE FROM acc_throttle WHERE locked_until < ? AND first < ?";
    const db_driver *drv = a->s->drv;
    db_stmt *st = NULL;
    status rc = ST_OK;
    int64_t last = atomic_load(&a->housekept);
    if (now - last < HOUSEKEEP_EVERY || !atomic_compare_exchange_strong(&a->housekept, &last, now)) goto out;
    int64_t day_ago = now - 86400;
    rc = drv->prepare(tx->d, sessions, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, day_ago);
    drv->bind_int(st, 2, day_ago);
    drv->bind_int(st, 3, day_ago);
    rc = finish(drv, st, NULL, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, throttle, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, now - AUTH_THROTTLE_WINDOW_SEC);
    drv->bind_int(st, 2, day_ago);
    rc = finish(drv, st, NULL, e);
out:
    return rc;
}

status auth_login(auth *a, const char *user, const char *password, const char *addr, acc_principal *out,
                  char session_id[72], err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = a->s->drv;
    static const char ins[] =
        "INSERT INTO acc_session (hash, user_key, csrf, created, expires, idle_expires, revoked,"
        " addr) VALUES (?, ?, ?, ?, ?, ?, 0, ?)";
    static const char unthrottle[] = "DELETE FROM acc_throttle WHERE subject = ?";
    static const char rehash[] = "UPDATE acc_user SET pw_hash = ? WHERE user_key = ? AND pw_hash = ?";
    char su[80], sa[80], sid[AUTH_SESSION_LEN + 8], csrf[48], hex[HEX_HASH_LEN + 1];
    char newhash[crypto_pwhash_STRBYTES];
    user_row *u = calloc(1, sizeof *u);
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    int64_t now = now_sec();
    int ok = 0;
    status rc = auth_init(e);
    memset(out, 0, sizeof *out);
    session_id[0] = 0;
    sid[0] = newhash[0] = 0;
    if (rc != ST_OK) goto out;
    if (!u) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    if (!user || !*user || !password || !*password) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "user name and password are required");
        goto out;
    }
    if (strnlen(password, AUTH_MAX_PASSWORD + 1) > AUTH_MAX_PASSWORD || strnlen(user, 256) > 255) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "wrong user name or password");
        goto out;
    }
    throttle_subjects(user, addr, su, sa);
    db *d = store_db(a->s, e);
    if (!d) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    rc = throttle_check(a, d, su, sa, now, e);
    if (rc == ST_OK && su[0]) rc = user_load(a->s, d, user, u, e);
    if (rc != ST_OK) goto out;
    /* the same work whether or not the user exists or has a password */
    rc = password_verify(u->has_pw ? u->pw_hash : a->dummy, password, &ok, e);
    if (rc != ST_OK) goto out;
    if (!ok || !u->has_pw) {
        throttle_fail(a, su, sa, now);
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "wrong user name or password");
        goto out;
    }
    if (u->disabled) {
        rc = err_set(e, ST_UNAUTHENTICATED, "suppressed", NULL, "user %s is disabled", u->p.user);
        goto out;
    }
    if (u->p.role == ROLE_NONE) {
        rc = err_set(e, ST_UNAUTHENTICATED, "security", NULL, "user %s has no known role", u->p.user);
        goto out;
    }
    /* a new session, whatever the client presented */
    random_b64(32, sid, sizeof sid);
    random_b64(24, csrf, sizeof csrf);
    secret_hash(sid, NULL, hex);
    int64_t expires = now + a->cfg.session_max_sec;
    int64_t idle = now + a->cfg.session_idle_sec;
    if (idle > expires) idle = expires;
    rc = store_begin_keeping_access(a->s, &tx, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, ins, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, hex, -1);
    drv->bind_int(st, 2, u->p.user_key);
    drv->bind_text(st, 3, csrf, -1);
    drv->bind_int(st, 4, now);
    drv->bind_int(st, 5, expires);
    drv->bind_int(st, 6, idle);
    drv->bind_text(st, 7, addr ? addr : "", -1);
    rc = finish(drv, st, NULL, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, unthrottle, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, su, -1);
    rc = finish(drv, st, NULL, e);
    if (rc == ST_OK) rc = housekeep(a, tx, now, e);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
    if (rc != ST_OK) goto out;
    *out = u->p;
    out->via = ACC_VIA_SESSION;
    copy_str(out->session, sizeof out->session, hex);
    copy_str(out->csrf, sizeof out->csrf, csrf);
    copy_str(out->addr, sizeof out->addr, addr);
    memcpy(session_id, sid, AUTH_SESSION_LEN + 1);
    /* a hash made with weaker limits (an old build, a test database) is upgraded while the password is at
     * hand */
    if (!pwhash_fast && crypto_pwhash_str_needs_rehash(u->pw_hash, pw_ops(), pw_mem()) != 0) {
        err re;
        err_clear(&re);
        status r2 = password_hash(password, newhash, &re);
        if (r2 == ST_OK) r2 = store_begin_keeping_access(a->s, &tx, &re);
        if (r2 == ST_OK) r2 = drv->prepare(tx->d, rehash, 1, &st, &re);
        if (r2 == ST_OK) {
            drv->bind_text(st, 1, newhash, -1);
            drv->bind_int(st, 2, u->p.user_key);
            drv->bind_text(st, 3, u->pw_hash, -1);
            r2 = finish(drv, st, NULL, &re);
        }
        if (r2 == ST_OK && tx) {
            r2 = store_commit(tx, &re);
            tx = NULL;
        }
        if (r2 != ST_OK) log_warn("auth: upgrading the password hash of %s: %s", u->p.user, re.msg);
    }
out:
    if (tx) store_rollback(tx);
    if (rc != ST_OK) memset(out, 0, sizeof *out);
    if (u) sodium_memzero(u, sizeof *u);
    free(u);
    sodium_memzero(sid, sizeof sid);
    sodium_memzero(csrf, sizeof csrf);
    sodium_memzero(newhash, sizeof newhash);
    return rc;
}

status auth_session(auth *a, const char *session_id, const char *addr, acc_principal *out, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = a->s->drv;
    static const char sql[] =
        "SELECT s.csrf, s.expires, s.idle_expires, s.revoked, " USER_COLS
        " FROM acc_session s JOIN acc_user u ON u.user_key = s.user_key WHERE s.hash = ?";
    static const char slide[] = "UPDATE acc_session SET idle_expires = ? WHERE hash = ? AND revoked = 0";
    char hex[HEX_HASH_LEN + 1], csrf[48];
    acc_principal p;
    db_stmt *st = NULL;
    store_txn *tx = NULL;
    int64_t now = now_sec(), expires = 0, idle = 0, revoked = 0;
    int disabled = 0;
    status rc = ST_OK;
    memset(out, 0, sizeof *out);
    memset(&p, 0, sizeof p);
    if (!session_id || !*session_id) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "not signed in");
        goto out;
    }
    if (!b64url_exact(session_id, AUTH_SESSION_LEN)) {
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "malformed session cookie: sign in again");
        goto out;
    }
    rc = auth_init(e);
    if (rc != ST_OK) goto out;
    secret_hash(session_id, NULL, hex);
    db *d = store_db(a->s, e);
    if (!d) {
        rc = e->code != ST_OK ? e->code : ST_IO;
        goto out;
    }
    rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, hex, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        col_copy(drv, st, 0, csrf, sizeof csrf);
        expires = drv->col_int(st, 1);
        idle = drv->col_int(st, 2);
        revoked = drv->col_int(st, 3);
        disabled = principal_from_row(drv, st, 4, &p);
    }
    drv->done(st);
    if (r < 0)
        rc = e->code != ST_OK ? e->code : ST_IO;
    else if (r == 0)
        rc = err_set(e, ST_UNAUTHENTICATED, "login", NULL, "unknown session: sign in again");
    else if (revoked)
        rc = err_set(e, ST_UNAUTHENTICATED, "expired", NULL,
                     "session ended (signed out or revoked): sign in again");
    else if (now > expires)
        rc = err_set(e, ST_UNAUTHENTICATED, "expired", NULL,
                     "session expired (the %d-hour limit): sign in again", a->cfg.session_max_sec / 3600);
    else if (now > idle)
        rc = err_set(e, ST_UNAUTHENTICATED, "expired", NULL,
                     "session expired after %d minutes idle: sign in again",
                     (a->cfg.session_idle_sec + 59) / 60);
    else if (disabled)
        rc = err_set(e, ST_UNAUTHENTICATED, "suppressed", NULL, "user %s is disabled", p.user);
    else if (p.role == ROLE_NONE)
        rc = err_set(e, ST_UNAUTHENTICATED, "security", NULL, "user %s has no known role", p.user);
    if (rc != ST_OK) goto out;
    /* slide the idle expiry, writing at most about once a minute */
    int64_t new_idle = now + a->cfg.session_idle_sec;
    int64_t step = a->cfg.session_idle_sec / 2;
    if (step > TOUCH_EVERY_SEC) step = TOUCH_EVERY_SEC;
    if (step < 1) step = 1;
    if (new_idle > expires) new_idle = expires;
    if (new_idle - idle >= step) {
        err se;
        err_clear(&se);
        status r2 = store_begin_keeping_access(a->s, &tx, &se);
        if (r2 == ST_OK) r2 = drv->prepare(tx->d, slide, 1, &st, &se);
        if (r2 == ST_OK) {
            drv->bind_int(st, 1, new_idle);
            drv->bind_text(st, 2, hex, -1);
            r2 = finish(drv, st, NULL, &se);
        }
        if (r2 == ST_OK) {
            r2 = store_commit(tx, &se);
            tx = NULL;
        }
        if (r2 != ST_OK) log_warn("auth: extending a session of %s: %s", p.user, se.msg);
    }
    *out = p;
    out->via = ACC_VIA_SESSION;
    copy_str(out->session, sizeof out->session, hex);
    copy_str(out->csrf, sizeof out->csrf, csrf);
    copy_str(out->addr, sizeof out->addr, addr);
out:
    if (tx) store_rollback(tx);
    sodium_memzero(csrf, sizeof csrf);
    return rc;
}

status auth_logout(auth *a, const char *session_id, err *e) {
    err local;
    if (!e) e = &local;
    const db_driver *drv = a->s->drv;
    static const char sql[] = "UPDATE acc_session SET revoked = ? WHERE hash = ? AND revoked = 0";
    char hex[HEX_HASH_LEN + 1];
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    status rc = ST_OK;
    if (!session_id || !b64url_exact(session_id, AUTH_SESSION_LEN)) goto out; /* nothing to end */
    rc = auth_init(e);
    if (rc != ST_OK) goto out;
    secret_hash(session_id, NULL, hex);
    rc = store_begin_keeping_access(a->s, &tx, e);
    if (rc == ST_OK) rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, now_sec());
    drv->bind_text(st, 2, hex, -1);
    rc = finish(drv, st, NULL, e);
    if (rc != ST_OK) goto out;
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    return rc;
}

int auth_csrf_ok(const acc_principal *p, const char *header) {
    int ok = 0;
    if (p && header && p->via == ACC_VIA_SESSION && p->csrf[0]) {
        size_t n = strnlen(p->csrf, sizeof p->csrf);
        ok = strnlen(header, n + 1) == n && sodium_memcmp(p->csrf, header, n) == 0;
    }
    return ok;
}

/* ---- cookies ------------------------------------------------------------------ */

const char *auth_cookie_name(const auth *a) {
    return a->cfg.secure_cookies ? "__Host-concord_session" : "concord_session";
}

int auth_set_cookie(const auth *a, const char *session_id, char *out, size_t n) {
    int w;
    if (session_id)
        w = snprintf(out, n, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d%s", auth_cookie_name(a),
                     session_id, a->cfg.session_max_sec, a->cfg.secure_cookies ? "; Secure" : "");
    else
        w = snprintf(out, n, "%s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s", auth_cookie_name(a),
                     a->cfg.secure_cookies ? "; Secure" : "");
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

int auth_cookie_value(const char *h, const char *name, char *out, size_t n) {
    int found = 0, ok = 0;
    size_t name_len = name ? strlen(name) : 0;
    if (n) out[0] = 0;
    const char *p = h && name_len && n ? h : "";
    while (*p && !found) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        size_t klen = (size_t)(p - k);
        while (klen && (k[klen - 1] == ' ' || k[klen - 1] == '\t'))
            klen--;
        if (*p != '=') continue; /* a bare word: skip it */
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *v = p;
        while (*p && *p != ';')
            p++;
        size_t vlen = (size_t)(p - v);
        while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
            vlen--;
        if (klen != name_len || memcmp(k, name, klen) != 0) continue;
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
            v++;
            vlen -= 2;
        }
        found = 1;
        if (vlen < n) {
            memcpy(out, v, vlen);
            out[vlen] = 0;
            ok = 1;
        }
    }
    return ok;
}
