/*
 * registry_batch.c — `concord link train` and `concord link run`: the whole
 * registry at once.
 *
 * run: load every live source record (with --rebuild, from the stored
 * Patients first, bringing reg_source, reg_block and reg_tf back in step
 * with them), score every blocked candidate pair with the current model,
 * cluster, compare with the persons recorded, and write the difference in
 * one transaction. Clustering is greedy single linkage under constraints:
 * the 'same' decisions are joined first; then the pairs that link (a
 * trusted NHS number first, then by falling weight) are joined unless a
 * join would put two records an 'apart' decision separates into one
 * person. New clusters are given the recorded person that holds most of
 * their records, so persons keep their ids across runs; persons left
 * without records are retired into the person that took most of theirs.
 *
 * Invariant kept: what run writes is what the hook would keep — every live
 * record in exactly one live person, persons' Person resources rewritten
 * whenever their records change.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/log.h"
#include "../fhir/json.h"
#include "link.h"
#include "registry_int.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- the records in memory -------------------------------------------------- */

typedef struct batch {
    size_t n, cap;
    int64_t *src;    /* sorted ascending */
    int64_t *person; /* recorded person, 0 = none yet */
    reg_person *p;
} batch;

static void batch_free(batch *b) {
    free(b->src);
    free(b->person);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int batch_push(batch *b, int64_t src, int64_t person, const reg_person *p) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        int64_t *ns = realloc(b->src, nc * sizeof *ns);
        if (ns) b->src = ns;
        int64_t *np = realloc(b->person, nc * sizeof *np);
        if (np) b->person = np;
        reg_person *nr = realloc(b->p, nc * sizeof *nr);
        if (nr) b->p = nr;
        if (!ns || !np || !nr) return -1;
        b->cap = nc;
    }
    b->src[b->n] = src;
    b->person[b->n] = person;
    b->p[b->n] = *p;
    b->n++;
    return 0;
}

static long batch_find(const batch *b, int64_t src) {
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b->src[mid] < src)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < b->n && b->src[lo] == src ? (long)lo : -1;
}

/* Every live source record, from reg_source. */
static status load_sources(rdb *c, batch *b, err *e) {
    status rc = ST_OK;
    int64_t after = 0;
    for (;;) {
        db_stmt *st = NULL;
        rc = rq_prep(c,
                     "SELECT " REG_SRC_COLS
                     " FROM reg_source WHERE src_key > ? AND person_key IS NOT NULL ORDER BY"
                     " src_key LIMIT 50000",
                     &st, e, "i", after);
        if (rc != ST_OK) return rc;
        size_t got = 0;
        int s;
        reg_src x;
        while ((s = c->drv->step(st, e)) == 1) {
            reg_src_read(c, st, &x);
            reg_person p;
            reg_raw_to_person(&x.raw, &p);
            if (batch_push(b, x.src_key, x.person_key, &p) != 0) {
                rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory for %zu records", b->n);
                break;
            }
            after = x.src_key;
            got++;
        }
        if (s < 0) rc = ST_IO;
        c->drv->done(st);
        if (rc != ST_OK || got == 0) break;
    }
    return rc;
}

/* ---- rebuild: reg_source, reg_block, reg_tf from the stored Patients ------------- */

#define MULTI_ROWS 256
static char block_insert_sql[MULTI_ROWS * 8 + 64];
static pthread_once_t sql_once = PTHREAD_ONCE_INIT;

static void build_sql(void) {
    size_t k = (size_t)snprintf(block_insert_sql, sizeof block_insert_sql,
                                "INSERT INTO reg_block (bkey, src_key) VALUES ");
    for (int i = 0; i < MULTI_ROWS; i++)
        k += (size_t)snprintf(block_insert_sql + k, sizeof block_insert_sql - k, "%s(?,?)", i ? "," : "");
}

typedef struct bkrow {
    int64_t h, src;
} bkrow;

static int bkrow_cmp(const void *x, const void *y) {
    const bkrow *a = x, *b = y;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return a->src < b->src ? -1 : a->src > b->src;
}

typedef struct tfrow {
    const char *v;
    uint8_t len, field;
} tfrow;

static int tfrow_cmp(const void *x, const void *y) {
    const tfrow *a = x, *b = y;
    if (a->field != b->field) return a->field - b->field;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->v, b->v, n);
    return c ? c : a->len - b->len;
}

static status rebuild_indexes(registry *r, rdb *c, const batch *b, err *e) {
    status rc = ST_OK;
    bkrow *rows = NULL;
    tfrow *tf = NULL;
    size_t nr = 0, nt = 0;
    pthread_once(&sql_once, build_sql);
    if ((rc = rq_exec(c, "DELETE FROM reg_block", e, "")) != ST_OK) goto out;
    if ((rc = rq_exec(c, "DELETE FROM reg_tf", e, "")) != ST_OK) goto out;
    rows = malloc((b->n * r->nrules + 1) * sizeof *rows);
    tf = malloc((b->n * 2 + 1) * sizeof *tf);
    if (!rows || !tf) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->n; i++) {
        int64_t h[BLOCK_MAX_RULES];
        reg_block_hashes(r, &b->p[i], h);
        for (size_t k = 0; k < r->nrules; k++) {
            if (!h[k]) continue;
            int dup = 0;
            for (size_t j = 0; j < k; j++)
                dup |= h[j] == h[k];
            if (!dup) rows[nr++] = (bkrow){h[k], b->src[i]};
        }
        if (b->p[i].family.len) tf[nt++] = (tfrow){b->p[i].family.s, b->p[i].family.len, FS_FAMILY};
        if (b->p[i].given.len) tf[nt++] = (tfrow){b->p[i].given.s, b->p[i].given.len, FS_GIVEN};
    }
    reg_sort(rows, nr, sizeof *rows, bkrow_cmp);
    size_t i = 0;
    for (; i + MULTI_ROWS <= nr && rc == ST_OK; i += MULTI_ROWS) {
        db_stmt *st = NULL;
        rc = c->drv->prepare(c->d, block_insert_sql, 1, &st, e);
        if (rc != ST_OK) break;
        for (int k = 0; k < MULTI_ROWS; k++) {
            c->drv->bind_int(st, 2 * k + 1, rows[i + (size_t)k].h);
            c->drv->bind_int(st, 2 * k + 2, rows[i + (size_t)k].src);
        }
        if (c->drv->step(st, e) < 0) rc = ST_IO;
        c->drv->done(st);
    }
    for (; i < nr && rc == ST_OK; i++)
        rc = rq_exec(c, "INSERT INTO reg_block (bkey, src_key) VALUES (?, ?)", e, "ii", rows[i].h,
                     rows[i].src);
    if (rc != ST_OK) goto out;
    reg_sort(tf, nt, sizeof *tf, tfrow_cmp);
    double total[FS_NFIELDS] = {0};
    for (size_t a = 0; a < nt && rc == ST_OK;) {
        size_t z = a + 1;
        while (z < nt && tfrow_cmp(&tf[a], &tf[z]) == 0)
            z++;
        char v[CMP_NAME_MAX];
        memcpy(v, tf[a].v, tf[a].len);
        v[tf[a].len] = 0;
        rc = rq_exec(c, "INSERT INTO reg_tf (field, value, n) VALUES (?, ?, ?)", e, "iti",
                     (int64_t)tf[a].field, v, (int64_t)(z - a));
        total[tf[a].field] += (double)(z - a);
        a = z;
    }
    for (int f = FS_FAMILY; f <= FS_GIVEN && rc == ST_OK; f++)
        rc = rq_exec(c, "INSERT INTO reg_tf (field, value, n) VALUES (?, '', ?)", e, "ii", (int64_t)f,
                     (int64_t)total[f]);
out:
    free(rows);
    free(tf);
    return rc;
}

typedef struct src_ord {
    int64_t k;
    size_t i;
} src_ord;

static int src_ord_cmp(const void *x, const void *y) {
    int64_t a = ((const src_ord *)x)->k, b = ((const src_ord *)y)->k;
    return a < b ? -1 : a > b;
}

/* Read every stored Patient into reg_source (new ones with no person yet,
 * changed ones updated, deleted ones released) and into `b`. */
static status rebuild_sources(registry *r, rdb *c, batch *b, registry_run_report *rep, err *e) {
    status rc = ST_OK;
    int64_t after = 0, now = reg_now_usec(), existing = 0;
    int found = 0;
    /* a registry built for the first time has nothing to look up */
    if ((rc = rq_int(c, "SELECT COUNT(*) FROM reg_source", &existing, &found, e, "")) != ST_OK) return rc;
    for (;;) {
        db_stmt *st = NULL;
        rc = rq_prep(c,
                     "SELECT rkey, id, body FROM resource WHERE rtype = 'Patient' AND deleted = 0 AND rkey > "
                     "? ORDER BY"
                     " rkey LIMIT 20000",
                     &st, e, "i", after);
        if (rc != ST_OK) return rc;
        /* collect the page first: the statements below reuse the connection */
        typedef struct {
            char id[72];
            reg_raw raw;
        } prow;
        prow *page = malloc(20000 * sizeof *page);
        size_t np = 0;
        int s;
        if (!page) {
            c->drv->done(st);
            return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        }
        while ((s = c->drv->step(st, e)) == 1) {
            after = c->drv->col_int(st, 0);
            rq_col_copy(c, st, 1, page[np].id, sizeof page[np].id);
            size_t n = 0;
            const char *body = c->drv->col_text(st, 2, &n);
            json_t *j = body ? json_loadb(body, n, 0, NULL) : NULL;
            char merge_into[72];
            if (!j) continue;
            reg_raw_from_patient(j, &page[np].raw, merge_into);
            json_decref(j);
            np++;
        }
        if (s < 0) rc = ST_IO;
        c->drv->done(st);
        for (size_t i = 0; i < np && rc == ST_OK; i++) {
            reg_raw *raw = &page[i].raw;
            reg_src old;
            int have = 0;
            if (existing) {
                db_stmt *q = NULL;
                rc = rq_prep(c, "SELECT " REG_SRC_COLS " FROM reg_source WHERE patient_id = ?", &q, e, "t",
                             page[i].id);
                if (rc != ST_OK) break;
                have = c->drv->step(q, e) == 1;
                if (have) reg_src_read(c, q, &old);
                c->drv->done(q);
            }
            int64_t src = have ? old.src_key : 0, person = have ? old.person_key : 0;
            if (!have) {
                rc = rq_int(
                    c,
                    "INSERT INTO reg_source (patient_id, decision, decided_by, decided_at, updated, nhs, "
                    "family,"
                    " given, birth_date, gender, postcode, address_line, local_ids, source)"
                    " VALUES (?, 'pending', 'registry', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING src_key",
                    &src, &found, e, "tiittttttttt", page[i].id, now, now, raw->nhs, raw->family, raw->given,
                    raw->birth_date, raw->gender, raw->postcode, raw->line, raw->local, raw->source);
                rep->records_added++;
            } else if (!reg_raw_equal(&old.raw, raw) || !person) {
                rc = rq_exec(
                    c,
                    "UPDATE reg_source SET updated = ?, nhs = ?, family = ?, given = ?, birth_date = ?,"
                    " gender = ?, postcode = ?, address_line = ?, local_ids = ?, source = ? WHERE src_key = "
                    "?",
                    e, "ittttttttti", now, raw->nhs, raw->family, raw->given, raw->birth_date, raw->gender,
                    raw->postcode, raw->line, raw->local, raw->source, src);
                rep->records_updated++;
            }
            reg_person p;
            reg_raw_to_person(raw, &p);
            if (rc == ST_OK && batch_push(b, src, person, &p) != 0)
                rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory for %zu records", b->n);
        }
        free(page);
        if (rc != ST_OK || np == 0) break;
    }
    if (rc != ST_OK) return rc;
    /* records whose Patient is gone */
    db_stmt *st = NULL;
    rc = rq_prep(
        c,
        "SELECT s.src_key, s.person_key FROM reg_source s WHERE s.person_key IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM resource x WHERE x.rtype = 'Patient' AND x.id = s.patient_id AND x.deleted = 0)",
        &st, e, "");
    if (rc != ST_OK) return rc;
    int64_t *gone = NULL;
    size_t ng = 0, cap = 0;
    int s;
    while ((s = c->drv->step(st, e)) == 1) {
        if (ng + 2 > cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *nv = realloc(gone, cap * sizeof *nv);
            if (!nv) break;
            gone = nv;
        }
        gone[ng++] = c->drv->col_int(st, 0);
        gone[ng++] = c->drv->col_int(st, 1);
    }
    c->drv->done(st);
    for (size_t i = 0; i < ng && rc == ST_OK; i += 2) {
        rc = rq_exec(c,
                     "UPDATE reg_source SET person_key = NULL, decision = 'deleted', decided_by = 'registry',"
                     " decided_at = ? WHERE src_key = ?",
                     e, "ii", now, gone[i]);
        if (rc == ST_OK) rc = reg_person_refresh(c, gone[i + 1], 0, e);
        rep->records_removed++;
    }
    free(gone);
    if (rc != ST_OK) return rc;
    /* sort by src_key (rkey order is not src_key order) */
    size_t n = b->n;
    batch t = {0};
    src_ord *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    for (size_t i = 0; i < n; i++)
        v[i] = (src_ord){b->src[i], i};
    reg_sort(v, n, sizeof *v, src_ord_cmp);
    for (size_t i = 0; i < n && rc == ST_OK; i++)
        if (batch_push(&t, b->src[v[i].i], b->person[v[i].i], &b->p[v[i].i]) != 0)
            rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    free(v);
    batch_free(b);
    *b = t;
    if (rc == ST_OK) rc = rebuild_indexes(r, c, b, e);
    return rc;
}

/* ---- scoring ------------------------------------------------------------------- */

typedef struct bpair {
    uint32_t i, j;
    float w;
    uint8_t trusted;
} bpair;

typedef struct scorer {
    const fs_model *m;
    const batch *b;
    fs_tf tf;
    bpair *v;
    size_t n, cap;
    int oom;
} scorer;

static int score_pair(void *arg, uint32_t i, uint32_t j, int rule) {
    scorer *s = arg;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 65536;
        bpair *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) {
            s->oom = 1;
            return 1;
        }
        s->v = nv;
        s->cap = nc;
    }
    fs_vector v;
    fs_compare(&s->b->p[i], &s->b->p[j], &v);
    double w = fs_weight(s->m, &v, &s->b->p[i], &s->b->p[j], &s->tf, NULL);
    s->v[s->n++] = (bpair){i, j, (float)w, (uint8_t)reg_trusted_nhs(&s->b->p[i], &s->b->p[j], &v)};
    return 0;
}

static int bpair_order(const void *x, const void *y) {
    const bpair *a = x, *b = y;
    if (a->trusted != b->trusted) return b->trusted - a->trusted;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    if (a->i != b->i) return a->i < b->i ? -1 : 1;
    return a->j < b->j ? -1 : a->j > b->j;
}

/* ---- constrained clustering ------------------------------------------------------ */

typedef struct uf {
    uint32_t *parent;
    /* 'apart' partners, as lists per root: head[root] -> node, next[node] */
    int32_t *head, *tail;
    uint32_t *partner;
    int32_t *next;
    size_t nnodes;
} uf;

static uint32_t uf_find(uf *u, uint32_t x) {
    while (u->parent[x] != x) {
        u->parent[x] = u->parent[u->parent[x]];
        x = u->parent[x];
    }
    return x;
}

/* 1 if joining roots a and b would put an 'apart' pair together. */
static int uf_blocked(uf *u, uint32_t a, uint32_t b) {
    for (int32_t k = u->head[a]; k >= 0; k = u->next[k])
        if (uf_find(u, u->partner[k]) == b) return 1;
    return 0;
}

static void uf_join(uf *u, uint32_t a, uint32_t b) {
    /* smaller index is the root */
    if (b < a) {
        uint32_t t = a;
        a = b;
        b = t;
    }
    u->parent[b] = a;
    if (u->head[b] >= 0) {
        if (u->head[a] < 0)
            u->head[a] = u->head[b];
        else
            u->next[u->tail[a]] = u->head[b];
        u->tail[a] = u->tail[b];
        u->head[b] = u->tail[b] = -1;
    }
}

static void uf_add_apart(uf *u, uint32_t x, uint32_t y) {
    size_t k = u->nnodes++;
    u->partner[k] = y;
    u->next[k] = -1;
    if (u->head[x] < 0)
        u->head[x] = (int32_t)k;
    else
        u->next[u->tail[x]] = (int32_t)k;
    u->tail[x] = (int32_t)k;
}

/* A cluster's valid NHS numbers as integers, two at most (0 = none). */
typedef uint64_t nhs_pair[2];

static void nhs_merge(nhs_pair into, const nhs_pair from) {
    for (int k = 0; k < 2; k++) {
        uint64_t x = from[k];
        if (!x || x == into[0] || x == into[1]) continue;
        if (!into[0])
            into[0] = x;
        else if (!into[1])
            into[1] = x;
    }
}

/* 1 if a number of `a` and one of `b` are both valid, different, and not
 * one digit or one adjacent swap apart (a mistyping: CMP_NHS_CLOSE). */
static int nhs_conflict(const nhs_pair a, const nhs_pair b) {
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            if (!a[i] || !b[j] || a[i] == b[j]) continue;
            char x[24], y[24]; /* 20 digits at most */
            snprintf(x, sizeof x, "%010llu", (unsigned long long)a[i]);
            snprintf(y, sizeof y, "%010llu", (unsigned long long)b[j]);
            if (cmp_nhs_level(x, 1, y, 1) == CMP_NHS_DISAGREE) return 1;
        }
    return 0;
}

/* ---- the run ------------------------------------------------------------------------ */

typedef struct cons {
    int64_t a, b;
    int apart;
} cons;

typedef struct rev {
    int64_t key, src, other;
    int status; /* 0 open, 1 decided (accepted/rejected) */
} rev;

typedef struct triple {
    uint32_t root;
    int64_t person;
    uint32_t count;
} triple;

static int triple_by_root(const void *x, const void *y) {
    const triple *a = x, *b = y;
    if (a->root != b->root) return a->root < b->root ? -1 : 1;
    return a->person < b->person ? -1 : a->person > b->person;
}

static int triple_by_count(const void *x, const void *y) {
    const triple *a = x, *b = y;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    if (a->person != b->person) return a->person < b->person ? -1 : 1;
    return a->root < b->root ? -1 : a->root > b->root;
}

static int i64_cmp(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

static uint64_t pairs_of(uint64_t n) {
    return n * (n - 1) / 2;
}

typedef struct revcand {
    uint32_t ra, rb; /* roots, ra < rb */
    uint32_t i, j;
    float w;
} revcand;

static int revcand_cmp(const void *x, const void *y) {
    const revcand *a = x, *b = y;
    if (a->ra != b->ra) return a->ra < b->ra ? -1 : 1;
    if (a->rb != b->rb) return a->rb < b->rb ? -1 : 1;
    return a->w > b->w ? -1 : a->w < b->w;
}

static status load_constraints(rdb *c, cons **out, size_t *n, err *e) {
    db_stmt *st = NULL;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    status rc = rq_prep(c, "SELECT src_a, src_b, kind FROM reg_constraint WHERE active = 1 ORDER BY con_key",
                        &st, e, "");
    if (rc != ST_OK) return rc;
    int s;
    while ((s = c->drv->step(st, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            cons *nv = realloc(*out, cap * sizeof *nv);
            if (!nv) break;
            *out = nv;
        }
        const char *k = c->drv->col_text(st, 2, NULL);
        (*out)[(*n)++] = (cons){c->drv->col_int(st, 0), c->drv->col_int(st, 1), k && strcmp(k, "apart") == 0};
    }
    c->drv->done(st);
    return s < 0 ? ST_IO : ST_OK;
}

static status load_reviews(rdb *c, rev **out, size_t *n, err *e) {
    db_stmt *st = NULL;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    status rc = rq_prep(
        c, "SELECT review_key, src_key, other_key, status FROM reg_review WHERE status <> 'superseded'", &st,
        e, "");
    if (rc != ST_OK) return rc;
    int s;
    while ((s = c->drv->step(st, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            rev *nv = realloc(*out, cap * sizeof *nv);
            if (!nv) break;
            *out = nv;
        }
        const char *k = c->drv->col_text(st, 3, NULL);
        (*out)[(*n)++] = (rev){c->drv->col_int(st, 0), c->drv->col_int(st, 1), c->drv->col_int(st, 2),
                               k && strcmp(k, "open") != 0};
    }
    c->drv->done(st);
    return s < 0 ? ST_IO : ST_OK;
}

static void evidence_for(const fs_model *m, int64_t ver, const batch *b, const fs_tf *tf, uint32_t i,
                         uint32_t j, int trusted, const char *patient_j, buf *out) {
    fs_vector v;
    double contrib[FS_NFIELDS];
    fs_compare(&b->p[i], &b->p[j], &v);
    fs_weight(m, &v, &b->p[i], &b->p[j], tf, contrib);
    buf_printf(out, "{\"rule\":\"%s\",\"model\":%lld,\"by\":\"batch\",\"against\":\"Patient/",
               trusted ? "nhs" : "link", (long long)ver);
    buf_json_escape(out, patient_j, strlen(patient_j));
    buf_printf(out, "\",\"trusted_nhs\":%s,\"explain\":", trusted ? "true" : "false");
    fs_explain_json(m, &v, contrib, out);
    buf_putc(out, '}');
}

static status patient_of(rdb *c, int64_t src, char out[72], err *e) {
    db_stmt *st = NULL;
    status rc = rq_prep(c, "SELECT patient_id FROM reg_source WHERE src_key = ?", &st, e, "i", src);
    if (rc != ST_OK) return rc;
    out[0] = 0;
    if (c->drv->step(st, e) == 1) rq_col_copy(c, st, 0, out, 72);
    c->drv->done(st);
    return ST_OK;
}

typedef struct run_state {
    registry *r;
    const registry_run_opts *o;
    registry_run_report *rep;
} run_state;

static status do_run(registry *r, rdb *c, const registry_run_opts *o, registry_run_report *rep, err *e) {
    status rc = ST_OK;
    batch b = {0};
    scorer sc = {0};
    cons *cs = NULL;
    rev *rv = NULL;
    size_t ncs = 0, nrv = 0;
    uf u = {0};
    uint32_t *root = NULL, *best = NULL;
    nhs_pair *nhs2 = NULL;
    float *bestw = NULL;
    int64_t *newp = NULL, *oldps = NULL;
    uint8_t *oldp_taken = NULL;
    int64_t *oldp_into_root = NULL;
    triple *tr = NULL;
    revcand *rc_v = NULL;
    fs_tf_table *tft = NULL;
    uint8_t *affected_new = NULL;
    int64_t *affected = NULL;
    size_t naff = 0, capaff = 0;
    buf evid = {0};
    const char *who = o->who && *o->who ? o->who : "batch";
    double t0 = now_s(), t;
    fs_model m;
    int64_t mver = 0;
    if ((rc = reg_model_current(r, c, &m, &mver, e)) != ST_OK) goto out;
    if (o->rebuild)
        rc = rebuild_sources(r, c, &b, rep, e);
    else
        rc = load_sources(c, &b, e);
    if (rc != ST_OK) goto out;
    rep->records = b.n;
    {
        int64_t np = 0;
        int found;
        rc = rq_int(c, "SELECT COUNT(*) FROM reg_person WHERE retired = 0", &np, &found, e, "");
        rep->persons_before = (size_t)np;
        if (rc != ST_OK) goto out;
    }
    if ((rc = load_constraints(c, &cs, &ncs, e)) != ST_OK) goto out;
    if ((rc = load_reviews(c, &rv, &nrv, e)) != ST_OK) goto out;
    t = now_s();
    rep->seconds_load = t - t0;

    /* score */
    reg_tf_ctx tfc = {0};
    tfc.m = &m;
    tft = fs_tf_table_build(b.p, b.n);
    if (!tft) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    tfc.table = tft;
    for (size_t i = 0; i < b.n; i++) {
        tfc.total[FS_FAMILY] += b.p[i].family.len > 0;
        tfc.total[FS_GIVEN] += b.p[i].given.len > 0;
    }
    sc.m = &m;
    sc.b = &b;
    sc.tf = (fs_tf){reg_tf_freq, &tfc};
    block_stats bs;
    if (b.n >= 2 &&
        (rc = block_pairs(b.p, b.n, r->rules, r->nrules, REG_MAX_BLOCK, 1, score_pair, &sc, &bs, e)) != ST_OK)
        goto out;
    if (sc.oom) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory for pairs");
        goto out;
    }
    rep->candidate_pairs = sc.n;
    double t1 = now_s();
    rep->seconds_score = t1 - t;

    /* cluster */
    size_t n = b.n;
    u.parent = malloc((n ? n : 1) * sizeof *u.parent);
    u.head = malloc((n ? n : 1) * sizeof *u.head);
    u.tail = malloc((n ? n : 1) * sizeof *u.tail);
    u.partner = malloc((2 * ncs + 1) * sizeof *u.partner);
    u.next = malloc((2 * ncs + 1) * sizeof *u.next);
    root = malloc((n ? n : 1) * sizeof *root);
    best = malloc((n ? n : 1) * sizeof *best);
    bestw = malloc((n ? n : 1) * sizeof *bestw);
    newp = calloc(n ? n : 1, sizeof *newp);
    if (!u.parent || !u.head || !u.tail || !u.partner || !u.next || !root || !best || !bestw || !newp) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        u.parent[i] = (uint32_t)i;
        u.head[i] = u.tail[i] = -1;
        best[i] = UINT32_MAX;
        bestw[i] = -INFINITY;
    }
    for (size_t k = 0; k < ncs; k++) {
        long a = batch_find(&b, cs[k].a), bb = batch_find(&b, cs[k].b);
        if (a < 0 || bb < 0) continue;
        if (cs[k].apart) {
            rep->constraints_apart++;
            uf_add_apart(&u, (uint32_t)a, (uint32_t)bb);
            uf_add_apart(&u, (uint32_t)bb, (uint32_t)a);
        }
    }
    for (size_t k = 0; k < ncs; k++) {
        long a = batch_find(&b, cs[k].a), bb = batch_find(&b, cs[k].b);
        if (a < 0 || bb < 0 || cs[k].apart) continue;
        rep->constraints_same++;
        uint32_t ra = uf_find(&u, (uint32_t)a), rb = uf_find(&u, (uint32_t)bb);
        if (ra != rb) uf_join(&u, ra, rb);
    }
    /* the valid NHS numbers of each cluster (two at most are kept): two
     * clusters holding different valid numbers that are not a mistyping of
     * one another are two people, whatever a third record says */
    nhs2 = calloc(n ? n : 1, sizeof *nhs2);
    if (!nhs2) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (b.p[i].nhs_valid) nhs2[i][0] = strtoull(b.p[i].nhs, NULL, 10);
    for (size_t i = 0; i < n; i++) { /* 'same' decisions joined above: their numbers go to the root */
        uint32_t ri = uf_find(&u, (uint32_t)i);
        if (ri != i) nhs_merge(nhs2[ri], nhs2[i]);
    }
    reg_sort(sc.v, sc.n, sizeof *sc.v, bpair_order);
    for (size_t k = 0; k < sc.n; k++) {
        bpair *p = &sc.v[k];
        if (!p->trusted && p->w < m.link_weight) continue;
        uint32_t ra = uf_find(&u, p->i), rb = uf_find(&u, p->j);
        if (ra == rb) continue;
        if (uf_blocked(&u, ra, rb) || uf_blocked(&u, rb, ra)) {
            rep->blocked_by_apart++;
            continue;
        }
        if (nhs_conflict(nhs2[ra], nhs2[rb])) {
            rep->blocked_by_nhs++;
            continue;
        }
        uf_join(&u, ra, rb);
        uint32_t nr = ra < rb ? ra : rb, old = ra < rb ? rb : ra;
        nhs_merge(nhs2[nr], nhs2[old]);
    }
    for (size_t i = 0; i < n; i++)
        root[i] = uf_find(&u, (uint32_t)i);
    /* each record's strongest pair inside its cluster: its evidence */
    for (size_t k = 0; k < sc.n; k++) {
        bpair *p = &sc.v[k];
        if (root[p->i] != root[p->j]) continue;
        float w = p->trusted ? p->w + 1000.0f : p->w;
        if (w > bestw[p->i]) bestw[p->i] = w, best[p->i] = (uint32_t)k;
        if (w > bestw[p->j]) bestw[p->j] = w, best[p->j] = (uint32_t)k;
    }

    /* clusters -> persons: the recorded person holding most of a cluster keeps it */
    tr = malloc((n ? n : 1) * sizeof *tr);
    oldps = malloc((n ? n : 1) * sizeof *oldps);
    if (!tr || !oldps) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    size_t ntr = 0, nold = 0;
    for (size_t i = 0; i < n; i++)
        if (b.person[i]) {
            tr[ntr++] = (triple){root[i], b.person[i], 1};
            oldps[nold++] = b.person[i];
        }
    reg_sort(oldps, nold, sizeof *oldps, i64_cmp);
    size_t nd = 0;
    for (size_t i = 0; i < nold; i++)
        if (!nd || oldps[nd - 1] != oldps[i]) oldps[nd++] = oldps[i];
    nold = nd;
    oldp_taken = calloc(nold ? nold : 1, 1);
    oldp_into_root = malloc((nold ? nold : 1) * sizeof *oldp_into_root);
    if (!oldp_taken || !oldp_into_root) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    reg_sort(tr, ntr, sizeof *tr, triple_by_root);
    size_t nt = 0;
    for (size_t i = 0; i < ntr; i++) {
        if (nt && tr[nt - 1].root == tr[i].root && tr[nt - 1].person == tr[i].person)
            tr[nt - 1].count++;
        else
            tr[nt++] = tr[i];
    }
    reg_sort(tr, nt, sizeof *tr, triple_by_count);
    uint64_t both = 0;
    for (size_t k = 0; k < nt; k++)
        both += pairs_of(tr[k].count);
    for (size_t k = 0; k < nold; k++)
        oldp_into_root[k] = -1;
    for (size_t k = 0; k < nt; k++) {
        int64_t *pp = bsearch(&tr[k].person, oldps, nold, sizeof *oldps, i64_cmp);
        size_t pi = (size_t)(pp - oldps);
        if (oldp_into_root[pi] < 0) oldp_into_root[pi] = tr[k].root; /* where most of it went */
        if (newp[tr[k].root] || oldp_taken[pi]) continue;
        newp[tr[k].root] = tr[k].person;
        oldp_taken[pi] = 1;
    }
    /* pairs together before and after */
    {
        uint64_t before = 0, after = 0;
        size_t *cnt = calloc(n ? n : 1, sizeof *cnt);
        if (!cnt) {
            rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            cnt[root[i]]++;
        size_t clusters = 0;
        for (size_t i = 0; i < n; i++)
            if (cnt[i]) {
                after += pairs_of(cnt[i]);
                clusters++;
            }
        free(cnt);
        int64_t *sp = malloc((n ? n : 1) * sizeof *sp);
        if (!sp) {
            rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
            goto out;
        }
        size_t ns = 0;
        for (size_t i = 0; i < n; i++)
            if (b.person[i]) sp[ns++] = b.person[i];
        reg_sort(sp, ns, sizeof *sp, i64_cmp);
        for (size_t a = 0; a < ns;) {
            size_t z = a;
            while (z < ns && sp[z] == sp[a])
                z++;
            before += pairs_of(z - a);
            a = z;
        }
        free(sp);
        rep->links_made = after - both;
        rep->links_broken = before - both;
        rep->persons_after = clusters;
    }
    for (size_t i = 0; i < n; i++)
        if (root[i] == i && !newp[i]) rep->persons_created++;
    for (size_t k = 0; k < nold; k++)
        if (!oldp_taken[k]) rep->persons_retired++;
    for (size_t i = 0; i < n; i++) {
        int64_t np = newp[root[i]];
        if (!np || np != b.person[i]) rep->moved++;
    }

    /* reviews: open ones settled by this run, and new ones */
    uint8_t *rv_close = calloc(nrv ? nrv : 1, 1);
    if (!rv_close) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    size_t nrc = 0;
    rc_v = malloc((sc.n ? sc.n : 1) * sizeof *rc_v);
    if (!rc_v) {
        free(rv_close);
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < nrv; k++) {
        if (rv[k].status) continue;
        long a = batch_find(&b, rv[k].src), bb = batch_find(&b, rv[k].other);
        if (a < 0 || bb < 0 || root[a] == root[bb]) {
            rv_close[k] = 1;
            continue;
        }
        fs_vector v;
        fs_compare(&b.p[a], &b.p[bb], &v);
        double w = fs_weight(&m, &v, &b.p[a], &b.p[bb], &sc.tf, NULL);
        if (w < m.review_weight) rv_close[k] = 1;
    }
    for (size_t k = 0; k < sc.n; k++) {
        bpair *p = &sc.v[k];
        if (p->trusted || p->w < m.review_weight) continue; /* link-band pairs left apart, too */
        uint32_t ra = root[p->i], rb = root[p->j];
        if (ra == rb || uf_blocked(&u, ra, rb) || uf_blocked(&u, rb, ra))
            continue; /* together, or decided apart */
        rc_v[nrc++] = (revcand){ra < rb ? ra : rb, ra < rb ? rb : ra, p->i, p->j, p->w};
    }
    reg_sort(rc_v, nrc, sizeof *rc_v, revcand_cmp);
    /* clusters already under review (open) or decided between these two */
    revcand *have = malloc((nrv ? nrv : 1) * sizeof *have);
    size_t nh = 0;
    if (!have) {
        free(rv_close);
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < nrv; k++) {
        if (rv_close[k]) continue;
        long a = batch_find(&b, rv[k].src), bb = batch_find(&b, rv[k].other);
        if (a < 0 || bb < 0) continue;
        uint32_t ra = root[a], rb = root[bb];
        have[nh++] = (revcand){ra < rb ? ra : rb, ra < rb ? rb : ra, 0, 0, 0};
    }
    reg_sort(have, nh, sizeof *have, revcand_cmp);
    size_t nnew = 0;
    for (size_t k = 0; k < nrc; k++) {
        if (k && rc_v[k].ra == rc_v[k - 1].ra && rc_v[k].rb == rc_v[k - 1].rb) continue;
        revcand key = {rc_v[k].ra, rc_v[k].rb, 0, 0, INFINITY};
        int dup = 0;
        for (size_t lo = 0, hi = nh; lo < hi && !dup;) {
            size_t mid = (lo + hi) / 2;
            int cmp = have[mid].ra != key.ra   ? (have[mid].ra < key.ra ? -1 : 1)
                      : have[mid].rb != key.rb ? (have[mid].rb < key.rb ? -1 : 1)
                                               : 0;
            if (cmp == 0)
                dup = 1;
            else if (cmp < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (!dup) rc_v[nnew++] = rc_v[k];
    }
    free(have);
    for (size_t k = 0; k < nrv; k++)
        rep->reviews_closed += rv_close[k];
    rep->reviews_opened = nnew;
    size_t open_before = 0;
    for (size_t k = 0; k < nrv; k++)
        open_before += !rv[k].status;
    rep->reviews_open = open_before - rep->reviews_closed + nnew;
    double t2 = now_s();
    rep->seconds_cluster = t2 - t1;

    if (o->dry_run) {
        free(rv_close);
        goto done;
    }
    /* write: new persons, moved records, golden records, reviews */
    int64_t now = reg_now_usec();
    affected_new = NULL;
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        if (root[i] != i || newp[i]) continue;
        char pid[72];
        rc = reg_person_new(c, &newp[i], pid, e);
    }
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        int64_t np = newp[root[i]];
        if (np == b.person[i]) continue;
        buf_reset(&evid);
        const char *decision = "new";
        double w = 0;
        if (best[i] != UINT32_MAX) {
            bpair *p = &sc.v[best[i]];
            uint32_t j = p->i == i ? p->j : p->i;
            char pj[72];
            if ((rc = patient_of(c, b.src[j], pj, e)) != ST_OK) break;
            evidence_for(&m, mver, &b, &sc.tf, (uint32_t)i, j, p->trusted, pj, &evid);
            decision = p->trusted ? "nhs" : "link";
            w = p->w;
        } else {
            size_t members = 0;
            for (size_t j = 0; j < n && members < 2; j++)
                members += root[j] == root[i];
            if (members > 1) decision = "merged"; /* together by a recorded decision */
            buf_printf(&evid, "{\"rule\":\"%s\",\"model\":%lld,\"by\":\"batch\"}", decision, (long long)mver);
        }
        rc = rq_exec(
            c,
            "UPDATE reg_source SET person_key = ?, decision = ?, weight = ?, evidence = ?, decided_by = ?,"
            " decided_at = ? WHERE src_key = ?",
            e, "itdttii", np, decision, w, evid.p, who, now, b.src[i]);
        /* both persons change */
        for (int side = 0; side < 2 && rc == ST_OK; side++) {
            int64_t pk = side ? b.person[i] : np;
            if (!pk) continue;
            if (naff + 1 > capaff) {
                capaff = capaff ? capaff * 2 : 1024;
                int64_t *na = realloc(affected, capaff * sizeof *na);
                if (!na) {
                    rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
                    break;
                }
                affected = na;
            }
            affected[naff++] = pk;
        }
    }
    if (rc == ST_OK) {
        reg_sort(affected, naff, sizeof *affected, i64_cmp);
        size_t na = 0;
        for (size_t k = 0; k < naff; k++)
            if (!na || affected[na - 1] != affected[k]) affected[na++] = affected[k];
        naff = na;
    }
    /* live persons first, so that the retired can link to them */
    for (size_t k = 0; k < naff && rc == ST_OK; k++) {
        int64_t *pp = bsearch(&affected[k], oldps, nold, sizeof *oldps, i64_cmp);
        if (pp && !oldp_taken[pp - oldps]) continue;
        rc = reg_person_refresh(c, affected[k], 0, e);
        rep->persons_rewritten++;
    }
    for (size_t k = 0; k < nold && rc == ST_OK; k++) {
        if (oldp_taken[k]) continue;
        int64_t into = oldp_into_root[k] >= 0 ? newp[oldp_into_root[k]] : 0;
        rc = reg_person_refresh(c, oldps[k], into, e);
        rep->persons_rewritten++;
    }
    for (size_t k = 0; k < nrv && rc == ST_OK; k++)
        if (rv_close[k])
            rc = rq_exec(c,
                         "UPDATE reg_review SET status = 'superseded', decided_by = ?, decided_at = ? WHERE "
                         "review_key = ?",
                         e, "tii", who, now, rv[k].key);
    free(rv_close);
    for (size_t k = 0; k < nnew && rc == ST_OK; k++) {
        revcand *x = &rc_v[k];
        char pj[72];
        if ((rc = patient_of(c, b.src[x->j], pj, e)) != ST_OK) break;
        buf_reset(&evid);
        fs_vector v;
        double contrib[FS_NFIELDS];
        fs_compare(&b.p[x->i], &b.p[x->j], &v);
        fs_weight(&m, &v, &b.p[x->i], &b.p[x->j], &sc.tf, contrib);
        buf_printf(&evid, "{\"rule\":\"review\",\"model\":%lld,\"by\":\"batch\",\"against\":\"Patient/",
                   (long long)mver);
        buf_json_escape(&evid, pj, strlen(pj));
        buf_puts(&evid, "\",\"trusted_nhs\":false,\"explain\":");
        fs_explain_json(&m, &v, contrib, &evid);
        buf_putc(&evid, '}');
        rc = rq_exec(
            c,
            "INSERT INTO reg_review (src_key, other_key, weight, evidence, status, created, created_by)"
            " VALUES (?, ?, ?, ?, 'open', ?, ?)",
            e, "iidtit", b.src[x->i], b.src[x->j], (double)x->w, evid.p, now, who);
    }
    rep->seconds_write = now_s() - t2;
    rep->seconds_total = now_s() - t0;
    if (rc == ST_OK) {
        buf_reset(&evid);
        registry_run_report_json(rep, &evid);
        rc = reg_event_add(c, who, o->rebuild ? "run-rebuild" : "run", 0, 0, 0, 0, evid.p, NULL, NULL, e);
    }
    goto out;
done:
    rep->seconds_total = now_s() - t0;
out:
    batch_free(&b);
    free(sc.v);
    free(cs);
    free(rv);
    free(u.parent);
    free(u.head);
    free(u.tail);
    free(u.partner);
    free(u.next);
    free(root);
    free(nhs2);
    free(best);
    free(bestw);
    free(newp);
    free(oldps);
    free(oldp_taken);
    free(oldp_into_root);
    free(tr);
    free(rc_v);
    free(affected);
    free(affected_new);
    fs_tf_table_free(tft);
    buf_free(&evid);
    return rc;
}

status registry_run(registry *r, const registry_run_opts *o, registry_run_report *rep, err *e) {
    registry_run_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    store_txn *tx = NULL;
    status rc = store_begin(r->s, &tx, e);
    if (rc != ST_OK) return rc;
    rdb c;
    rdb_of_tx(&c, tx);
    rc = reg_lock(&c, e);
    /* SQLite: a run rewrites much of the registry in one transaction; a
     * page cache big enough to hold it keeps pages from spilling into the
     * WAL and being searched for there on every read. Restored after. */
    int64_t cache = 0;
    int sqlite = c.drv == &db_sqlite_driver, found = 0;
    if (rc == ST_OK && sqlite) rc = rq_int(&c, "PRAGMA cache_size", &cache, &found, e, "");
    if (rc == ST_OK && sqlite) rc = rq_exec(&c, "PRAGMA cache_size=-1048576", e, "");
    int was = reg_writing;
    reg_writing = 1;
    if (rc == ST_OK) rc = do_run(r, &c, o, rep, e);
    reg_writing = was;
    if (rc == ST_OK && !o->dry_run) {
        double t = now_s();
        rc = store_commit(tx, e);
        rep->seconds_write += now_s() - t;
        rep->seconds_total += now_s() - t;
    } else {
        store_rollback(tx);
    }
    if (sqlite && found) {
        /* back to what the writer connection had (outside the transaction) */
        err e2;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size=%lld", (long long)cache);
        if (store_begin(r->s, &tx, &e2) == ST_OK) {
            c.drv->exec(tx->d, sql, &e2);
            store_rollback(tx);
        }
    }
    fhir_json_release();
    return rc;
}

void registry_run_report_json(const registry_run_report *p, buf *out) {
    buf_printf(
        out,
        "{\"records\":%zu,\"candidate_pairs\":%zu,\"persons_before\":%zu,\"persons_after\":%zu,"
        "\"records_added\":%zu,\"records_updated\":%zu,\"records_removed\":%zu,\"moved\":%zu,"
        "\"links_made\":%llu,\"links_broken\":%llu,\"persons_created\":%zu,\"persons_retired\":%zu,"
        "\"persons_rewritten\":%zu,\"reviews_opened\":%zu,\"reviews_closed\":%zu,\"reviews_open\":%zu,"
        "\"constraints_same\":%zu,\"constraints_apart\":%zu,\"blocked_by_apart\":%zu,\"blocked_by_nhs\":%zu,"
        "\"seconds\":{\"load\":%.3f,\"score\":%.3f,\"cluster\":%.3f,\"write\":%.3f,\"total\":%.3f}}",
        p->records, p->candidate_pairs, p->persons_before, p->persons_after, p->records_added,
        p->records_updated, p->records_removed, p->moved, (unsigned long long)p->links_made,
        (unsigned long long)p->links_broken, p->persons_created, p->persons_retired, p->persons_rewritten,
        p->reviews_opened, p->reviews_closed, p->reviews_open, p->constraints_same, p->constraints_apart,
        p->blocked_by_apart, p->blocked_by_nhs, p->seconds_load, p->seconds_score, p->seconds_cluster,
        p->seconds_write, p->seconds_total);
}

/* ---- training ----------------------------------------------------------------------- */

status registry_train(registry *r, const char *who, registry_train_report *rep, err *e) {
    registry_train_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    batch b = {0};
    buf json = {0}, report = {0};
    store_txn *tx = NULL;
    double t0 = now_s();
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    fs_model m;
    int64_t ver = 0;
    if (rc == ST_OK) rc = reg_model_current(r, &c, &m, &ver, e);
    if (rc == ST_OK) rc = load_sources(&c, &b, e);
    if (rc != ST_OK) goto out;
    rep->records = b.n;
    rep->seconds_load = now_s() - t0;
    if (b.n < 200) {
        rc = err_set(
            e, ST_INVALID, "value", NULL,
            "%zu source records are too few to estimate the model (need 200): the default model stays", b.n);
        goto out;
    }
    link_train_opts lo;
    link_train_opts_default(&lo);
    link_train_report lr;
    double t1 = now_s();
    if ((rc = link_train(&m, b.p, b.n, r->rules, r->nrules, &lo, &lr, e)) != ST_OK) goto out;
    rep->seconds_train = now_s() - t1;
    rep->lambda = m.lambda;
    fs_model_to_json(&m, &json);
    buf_printf(&report,
               "{\"records\":%zu,\"candidates\":%zu,\"from_version\":%lld,\"seconds\":%.3f,\"rules\":[", b.n,
               lr.candidates, (long long)ver, rep->seconds_train);
    for (size_t k = 0; k < lr.nrules; k++)
        buf_printf(&report, "%s{\"rule\":\"%s\",\"pairs\":%zu,\"lambda\":%.6g,\"iterations\":%d}",
                   k ? "," : "", r->rules[k].name, lr.rule_pairs[k], lr.em[k].lambda, lr.em[k].iterations);
    buf_puts(&report, "]}");
    if ((rc = store_begin(r->s, &tx, e)) != ST_OK) goto out;
    rdb_of_tx(&c, tx);
    int found;
    rc = rq_int(
        &c,
        "INSERT INTO reg_model (created, created_by, model, report) VALUES (?, ?, ?, ?) RETURNING version",
        &rep->version, &found, e, "itt", reg_now_usec(), who && *who ? who : "unknown", json.p, report.p);
    if (rc == ST_OK)
        rc = reg_event_add(&c, who && *who ? who : "unknown", "train", 0, 0, 0, 0, report.p, NULL, NULL, e);
    if (rc == ST_OK)
        rc = store_commit(tx, e);
    else
        store_rollback(tx);
out:
    batch_free(&b);
    buf_free(&json);
    buf_free(&report);
    return rc;
}
