/*
 * store_scope.c — the access scope (store.h, "access scope") as SQL.
 *
 * The store does not decide policy; it evaluates the scope the access
 * module built. The conditions, for a patient key X:
 *   SAME(X)  the patient keys of every source record linked to the same
 *            person as X in the registry (reg_source by person_key; patient
 *            ids mapped through patient_key). X itself is always included
 *            (unlinked records, registry off).
 *   REL(X)   a legitimate relationship: a row of acc_rel for X or SAME(X)
 *            naming one of the scope's organisations or its practitioner;
 *            a row a signed-in person claimed (acc_rel.claimed, rel.c)
 *            counts for X only.
 *   GLASS(X) a live break-glass grant of the user for X or SAME(X).
 *   OBJ(X)   an active consent objection on X or SAME(X).
 * and for a resource row r (pkey, org, sens):
 *   OWN(r)   r.org is one of the scope's organisations.
 *   SENS(r)  (r.sens & sens_denied) = 0.
 * Row visible = r.pkey = 0 OR ((REL OR GLASS) AND (SENS OR OWN)
 *                              AND (NOT OBJ OR OWN OR GLASS)).
 * Values are always bound ('?'), never pasted into the text.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../base/hash.h"
#include "store_int.h"

static void bind_i(store_binds *b, int64_t v) {
    if (b->n < (int)(sizeof b->v / sizeof b->v[0])) b->v[b->n++] = (store_bind){.kind = 'i', .i = v};
}
static void bind_t(store_binds *b, const char *t) {
    if (b->n < (int)(sizeof b->v / sizeof b->v[0])) b->v[b->n++] = (store_bind){.kind = 't', .t = t ? t : ""};
}

/* X: a bound value, or an SQL expression pasted as is */
static void put_x(buf *sql, store_binds *b, const char *x, int x_is_bind, int64_t xv) {
    if (x_is_bind) {
        buf_puts(sql, "?");
        bind_i(b, xv);
    } else {
        buf_puts(sql, x);
    }
}

/* "(X = pk OR pk IN SAME(X))" for the column `col` against expression X */
static void same_person(buf *sql, store_binds *b, const char *col, const char *x, int x_is_bind, int64_t xv) {
    buf_printf(sql, "(%s = ", col);
    put_x(sql, b, x, x_is_bind, xv);
    buf_printf(sql,
               " OR %s IN (SELECT pk2.pkey FROM patient_key pk1"
               " JOIN reg_source s1 ON s1.patient_id = pk1.patient_id"
               " JOIN reg_source s2 ON s2.person_key = s1.person_key"
               " JOIN patient_key pk2 ON pk2.patient_id = s2.patient_id WHERE pk1.pkey = ",
               col);
    put_x(sql, b, x, x_is_bind, xv);
    buf_puts(sql, "))");
}

static void in_orgs(const store_scope *sc, buf *sql, store_binds *b, const char *col) {
    if (sc->norgs == 0) {
        buf_puts(sql, "1 = 0");
        return;
    }
    buf_printf(sql, "%s IN (", col);
    for (int i = 0; i < sc->norgs; i++) {
        buf_puts(sql, i ? ", ?" : "?");
        bind_t(b, sc->orgs[i]);
    }
    buf_puts(sql, ")");
}

/* A claimed relationship (rel.c) counts for X itself only, not SAME(X). */
static void rel(const store_scope *sc, buf *sql, store_binds *b, const char *x, int x_is_bind, int64_t xv) {
    buf_puts(sql, "EXISTS (SELECT 1 FROM acc_rel a WHERE ");
    same_person(sql, b, "a.pkey", x, x_is_bind, xv);
    buf_puts(sql, " AND (a.claimed = 0 OR a.pkey = ");
    put_x(sql, b, x, x_is_bind, xv);
    buf_puts(sql, ") AND (");
    in_orgs(sc, sql, b, "a.org");
    if (sc->practitioner && sc->practitioner[0]) {
        buf_puts(sql, " OR a.who = ?");
        bind_t(b, sc->practitioner);
    }
    buf_puts(sql, "))");
}

static void glass(const store_scope *sc, buf *sql, store_binds *b, const char *x, int x_is_bind, int64_t xv) {
    buf_puts(sql, "EXISTS (SELECT 1 FROM acc_glass g WHERE g.user_key = ? AND g.expires > ? AND ");
    bind_i(b, sc->user_key);
    bind_i(b, sc->now_usec);
    same_person(sql, b, "g.pkey", x, x_is_bind, xv);
    buf_puts(sql, ")");
}

static void objection(buf *sql, store_binds *b, const char *x, int x_is_bind, int64_t xv) {
    buf_puts(sql, "EXISTS (SELECT 1 FROM acc_consent c WHERE ");
    same_person(sql, b, "c.pkey", x, x_is_bind, xv);
    buf_puts(sql, ")");
}

static void self_list(const store_scope *sc, buf *sql, store_binds *b, const char *x) {
    if (sc->nself == 0) {
        buf_puts(sql, "1 = 0");
        return;
    }
    buf_printf(sql, "%s IN (", x);
    for (int i = 0; i < sc->nself; i++) {
        buf_puts(sql, i ? ", ?" : "?");
        bind_i(b, sc->self_pkeys[i]);
    }
    buf_puts(sql, ")");
}

void store_scope_pkey_sql(const store_scope *sc, const char *pkey_expr, buf *sql, store_binds *b) {
    if (!sc || !sc->restricted) {
        buf_puts(sql, "1 = 1");
        return;
    }
    if (!sc->patient_data) {
        buf_puts(sql, "1 = 0");
        return;
    }
    if (sc->self_only) {
        self_list(sc, sql, b, pkey_expr);
        return;
    }
    buf_puts(sql, "(");
    rel(sc, sql, b, pkey_expr, 0, 0);
    buf_puts(sql, " OR ");
    glass(sc, sql, b, pkey_expr, 0, 0);
    buf_puts(sql, ")");
}

void store_scope_row_sql(const store_scope *sc, const char *alias, buf *sql, store_binds *b) {
    if (!sc || !sc->restricted) {
        buf_puts(sql, "1 = 1");
        return;
    }
    char pk[80], org[80];
    snprintf(pk, sizeof pk, "%s.pkey", alias);
    snprintf(org, sizeof org, "%s.org", alias);
    if (!sc->patient_data) {
        buf_printf(sql, "%s = 0", pk);
        return;
    }
    buf_printf(sql, "(%s = 0 OR (", pk);
    if (sc->self_only) {
        self_list(sc, sql, b, pk);
        buf_printf(sql, " AND (%s.sens & ?) = 0))", alias);
        bind_i(b, (int64_t)sc->sens_denied);
        return;
    }
    buf_puts(sql, "(");
    rel(sc, sql, b, pk, 0, 0);
    buf_puts(sql, " OR ");
    glass(sc, sql, b, pk, 0, 0);
    buf_printf(sql, ") AND ((%s.sens & ?) = 0 OR ", alias);
    bind_i(b, (int64_t)sc->sens_denied);
    in_orgs(sc, sql, b, org);
    buf_puts(sql, ") AND (NOT ");
    objection(sql, b, pk, 0, 0);
    buf_puts(sql, " OR ");
    in_orgs(sc, sql, b, org);
    buf_puts(sql, " OR ");
    glass(sc, sql, b, pk, 0, 0);
    buf_puts(sql, ")))");
}

/* The one-record check runs on every read by id, so its statements have
 * fixed text (prepared once per connection and cached): SAME(X) is the
 * same subquery as in searches, bound to X; which organisation or
 * practitioner holds a relationship is compared here, in C. */
#define SAME_X                                                                                               \
    "(SELECT pk2.pkey FROM patient_key pk1 JOIN reg_source s1 ON s1.patient_id = pk1.patient_id"             \
    " JOIN reg_source s2 ON s2.person_key = s1.person_key"                                                   \
    " JOIN patient_key pk2 ON pk2.patient_id = s2.patient_id WHERE pk1.pkey = ?)"

static int in_scope_orgs(const store_scope *sc, const char *org) {
    for (int i = 0; org && i < sc->norgs; i++)
        if (strcmp(sc->orgs[i], org) == 0) return 1;
    return 0;
}

/* REL(X): does any relationship row of X's person name the scope's
 * organisations or its practitioner? */
static status check_rel(store *s, db *d, const store_scope *sc, int64_t x, int *out, err *e) {
    static const char sql[] = "SELECT org, who, pkey, claimed FROM acc_rel WHERE pkey = ? OR pkey IN " SAME_X;
    db_stmt *st = NULL;
    *out = 0;
    status rc = s->drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    s->drv->bind_int(st, 1, x);
    s->drv->bind_int(st, 2, x);
    int r;
    while (!*out && (r = s->drv->step(st, e)) == 1) {
        const char *o = s->drv->col_text(st, 0, NULL), *who = s->drv->col_text(st, 1, NULL);
        if (s->drv->col_int(st, 3) && s->drv->col_int(st, 2) != x) continue; /* claimed: X itself only */
        if (in_scope_orgs(sc, o) ||
            (sc->practitioner && sc->practitioner[0] && who && strcmp(who, sc->practitioner) == 0))
            *out = 1;
    }
    s->drv->done(st);
    return !*out && r < 0 ? ST_IO : ST_OK;
}

/* One row or none: 1 if the statement (binds: X twice, then `extra`) finds any. */
static status exists_for_person(store *s, db *d, const char *sql, int64_t x, const int64_t *extra, int nextra,
                                int *out, err *e) {
    db_stmt *st = NULL;
    *out = 0;
    status rc = s->drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    int i = 1;
    for (int k = 0; k < nextra; k++)
        s->drv->bind_int(st, i++, extra[k]);
    s->drv->bind_int(st, i++, x);
    s->drv->bind_int(st, i, x);
    int r = s->drv->step(st, e);
    s->drv->done(st);
    if (r < 0) return ST_IO;
    *out = r == 1;
    return ST_OK;
}

/* ---- the decision cache ----------------------------------------------
 * A read by id asks the same question again and again (this user, this
 * patient), and the answer changes only when something is committed that
 * decisions read: relationships, consent, break-glass grants, registry
 * links. So decisions are cached, stamped with the store's access_gen read
 * BEFORE the queries that made them; every commit that may change one
 * bumps it AFTER it is durable (store_commit), which makes every older
 * entry stale. A decision reached through break-glass is never cached (it
 * expires by the clock). Another process's commits (the `concord` command
 * beside a server) are not seen by this counter: entries also expire after
 * ACCESS_CACHE_SEC, the same bound as the token cache (docs/access.md).
 * On SQLite they are seen: the connection's data version moves whenever
 * another connection has committed to the database file, and every check
 * follows the read of the record it is about (so the version is as of that
 * read); a change bumps access_gen, and entries then live up to
 * ACCESS_CACHE_SEC_SEEN. (With 5 s, one GP reading 5,555 patients'
 * records at random missed the cache on one read in twenty, each miss a
 * few queries: a quarter of what the relationship cost; bench/access.py.) */
#define ACCESS_CACHE_SEC      5
#define ACCESS_CACHE_SEC_SEEN 60
#define CACHE_STRIPES         64
#define CACHE_WAYS            1024 /* entries per stripe: 65,536 decisions */

typedef struct cached {
    uint64_t key, gen;
    int64_t pkey;
    time_t at;
    store_why why;
} cached;

static struct {
    pthread_mutex_t lock;
    cached v[CACHE_WAYS];
} cache[CACHE_STRIPES];
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_init(void) {
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_init(&cache[i].lock, NULL);
}

/* Everything the answer depends on besides the store's contents. */
static uint64_t decision_key(const store_scope *sc, int64_t pkey, const char *org, unsigned sens) {
    uint64_t h = FNV1A_INIT;
    h = fnv1a(h, &sc->user_key, sizeof sc->user_key);
    h = fnv1a(h, &pkey, sizeof pkey);
    h = fnv1a(h, &sens, sizeof sens);
    h = fnv1a(h, &sc->sens_denied, sizeof sc->sens_denied);
    if (org) h = fnv1a(h, org, strlen(org) + 1);
    for (int i = 0; i < sc->norgs; i++)
        h = fnv1a(h, sc->orgs[i], strlen(sc->orgs[i]) + 1);
    if (sc->practitioner) h = fnv1a(h, sc->practitioner, strlen(sc->practitioner) + 1);
    return h | 1; /* 0 marks an empty slot */
}

static int cache_get(uint64_t key, int64_t pkey, uint64_t gen, int ttl, store_why *why) {
    pthread_once(&cache_once, cache_init);
    int st = (int)(key % CACHE_STRIPES);
    cached *c = &cache[st].v[(key / CACHE_STRIPES) % CACHE_WAYS];
    time_t now = time(NULL);
    int hit = 0;
    pthread_mutex_lock(&cache[st].lock);
    if (c->key == key && c->pkey == pkey && c->gen == gen && now - c->at < ttl) {
        *why = c->why;
        hit = 1;
    }
    pthread_mutex_unlock(&cache[st].lock);
    return hit;
}

static void cache_put(uint64_t key, int64_t pkey, uint64_t gen, store_why why) {
    int st = (int)(key % CACHE_STRIPES);
    cached *c = &cache[st].v[(key / CACHE_STRIPES) % CACHE_WAYS];
    pthread_mutex_lock(&cache[st].lock);
    *c = (cached){.key = key, .gen = gen, .pkey = pkey, .at = time(NULL), .why = why};
    pthread_mutex_unlock(&cache[st].lock);
}

static status check_uncached(store *s, const store_scope *sc, int64_t pkey, const char *org, unsigned sens,
                             store_why *why, int *via_glass, err *e);

/* Something was committed since this connection last looked: if it moved
 * the access epoch (what decisions read changed), cached decisions are
 * stale. Not knowing counts as moved. */
static status follow_epoch(store *s, db *d) {
    static const char sql[] = "SELECT n FROM acc_epoch WHERE id = 1";
    err e;
    db_stmt *st = NULL;
    int64_t n = -1;
    status rc = s->drv->prepare(d, sql, 1, &st, &e);
    if (rc == ST_OK) {
        if (s->drv->step(st, &e) == 1) n = s->drv->col_int(st, 0);
        s->drv->done(st);
    }
    if (n < 0 || atomic_exchange(&s->access_epoch, n) != n) atomic_fetch_add(&s->access_gen, 1);
    return n < 0 ? ST_IO : ST_OK;
}

status store_scope_check(store *s, const store_scope *sc, int64_t pkey, const char *org, unsigned sens,
                         store_why *why, int *via_glass, err *e) {
    *why = STORE_VISIBLE;
    if (via_glass) *via_glass = 0;
    if (!sc || !sc->restricted || pkey == 0 || !sc->patient_data || sc->self_only)
        return check_uncached(s, sc, pkey, org, sens, why, via_glass, e);
    int ttl = ACCESS_CACHE_SEC;
    if (s->drv->data_version) {
        static __thread db *seen_d;
        static __thread uint64_t seen_v;
        db *d = store_db(s, e);
        uint64_t v;
        if (d && s->drv->data_version(d, &v) == 0) {
            int ok = 1;
            if (seen_d != d || seen_v != v) ok = follow_epoch(s, d) == ST_OK; /* a commit since */
            seen_d = ok ? d : NULL;
            seen_v = v;
            if (ok) ttl = ACCESS_CACHE_SEC_SEEN;
        }
    }
    uint64_t gen = atomic_load(&s->access_gen); /* before the queries */
    uint64_t key = decision_key(sc, pkey, org, sens);
    if (cache_get(key, pkey, gen, ttl, why)) return ST_OK;
    int glass = 0;
    status rc = check_uncached(s, sc, pkey, org, sens, why, &glass, e);
    if (rc == ST_OK && !glass) cache_put(key, pkey, gen, *why);
    if (via_glass) *via_glass = glass;
    return rc;
}

static status check_uncached(store *s, const store_scope *sc, int64_t pkey, const char *org, unsigned sens,
                             store_why *why, int *via_glass, err *e) {
    static const char glass_sql[] = "SELECT 1 FROM acc_glass WHERE user_key = ? AND expires > ?"
                                    " AND (pkey = ? OR pkey IN " SAME_X ") LIMIT 1";
    static const char objection_sql[] =
        "SELECT 1 FROM acc_consent WHERE pkey = ? OR pkey IN " SAME_X " LIMIT 1";
    *why = STORE_VISIBLE;
    if (via_glass) *via_glass = 0;
    if (!sc || !sc->restricted || pkey == 0) return ST_OK;
    if (!sc->patient_data) {
        *why = STORE_HIDDEN_NO_PATIENT_DATA;
        return ST_OK;
    }
    if (sc->self_only) {
        int mine = 0;
        for (int i = 0; i < sc->nself; i++)
            mine |= sc->self_pkeys[i] == pkey;
        if (!mine)
            *why = STORE_HIDDEN_NOT_SELF;
        else if (sens & sc->sens_denied)
            *why = STORE_HIDDEN_SENSITIVE;
        return ST_OK;
    }
    int own = in_scope_orgs(sc, org);
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    int has_rel = 0, has_glass = 0, objected = 0, glass_known = 0;
    status rc = check_rel(s, d, sc, pkey, &has_rel, e);
    int64_t user_now[2] = {sc->user_key, sc->now_usec};
    if (rc == ST_OK && !has_rel) {
        rc = exists_for_person(s, d, glass_sql, pkey, user_now, 2, &has_glass, e);
        glass_known = 1;
    }
    if (rc != ST_OK) return rc;
    if (!has_rel && !has_glass) {
        *why = STORE_HIDDEN_NO_RELATIONSHIP;
        return ST_OK;
    }
    if ((sens & sc->sens_denied) && !own) {
        *why = STORE_HIDDEN_SENSITIVE;
        return ST_OK;
    }
    if (!own) {
        rc = exists_for_person(s, d, objection_sql, pkey, NULL, 0, &objected, e);
        if (rc == ST_OK && objected && !glass_known)
            rc = exists_for_person(s, d, glass_sql, pkey, user_now, 2, &has_glass, e);
        if (rc != ST_OK) return rc;
        if (objected && !has_glass) {
            *why = STORE_HIDDEN_CONSENT;
            return ST_OK;
        }
    }
    /* visible because of a break-glass grant: no relationship, or over an objection */
    if (via_glass && (!has_rel || objected)) *via_glass = 1;
    return ST_OK;
}

status store_person_pkeys(store *s, int64_t pkey, int64_t *out, int max, int *n, err *e) {
    *n = 0;
    if (max <= 0) return ST_OK;
    out[(*n)++] = pkey;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    static const char sql[] = "SELECT pk2.pkey FROM patient_key pk1"
                              " JOIN reg_source s1 ON s1.patient_id = pk1.patient_id"
                              " JOIN reg_source s2 ON s2.person_key = s1.person_key"
                              " JOIN patient_key pk2 ON pk2.patient_id = s2.patient_id"
                              " WHERE pk1.pkey = ? AND pk2.pkey <> ? ORDER BY pk2.pkey";
    db_stmt *st = NULL;
    status rc = s->drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    s->drv->bind_int(st, 1, pkey);
    s->drv->bind_int(st, 2, pkey);
    int r;
    while ((r = s->drv->step(st, e)) == 1)
        if (*n < max) out[(*n)++] = s->drv->col_int(st, 0);
    s->drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

status store_patient_key_of(store *s, const char *patient_id, int64_t *pkey, err *e) {
    *pkey = 0;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    return store_patient_key(s, d, patient_id, 0, pkey, e);
}
