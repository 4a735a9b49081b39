/*
 * registry.c — the patient registry in the store: the write hook that links
 * every source Patient to a person in the transaction that stores it, the
 * source records and their block keys and term frequencies, the persons and
 * their golden records (FHIR Person resources), and the model in use.
 *
 * Tables (schema.c, migration "registry"; docs/registry.md §8):
 *   reg_person      person_key, person_id (= the Person resource's id), retired,
 *                   merged_into, golden_hash (of the Person last written)
 *   reg_source      one row per source Patient: its person, the decision that put it
 *                   there (decision, weight, evidence JSON, decided_by, decided_at) and
 *                   its demographics as written
 *   reg_block       (block key hash, src_key): candidate lookup
 *   reg_tf          (field, value) -> count; value '' holds the field's total
 *   reg_review      the review queue; reg_constraint the decisions that keep records
 *                   together or apart; reg_event the history; reg_model the models
 *
 * Invariants:
 *   - Every live source row (its Patient not deleted) has a person, block
 *     rows for exactly the keys of its stored demographics, and is counted
 *     once in reg_tf; a deleted Patient's row has person_key NULL, no block
 *     rows and no counts (the row stays: history and decisions name it).
 *   - A live person has at least one source and a Person resource whose
 *     text hashes to golden_hash; a retired person has none, and its Person
 *     is deleted or (merged) inactive and linking to the survivor.
 *   - Everything here runs inside the transaction of the write that caused
 *     it, so it commits or rolls back with the record; no in-memory state
 *     mirrors the tables except the model, which is versioned and read-only.
 *   - The registry never writes Patients; its writes (Person resources) are
 *     made with reg_writing set, and the hook ignores writes made so.
 */
#include "registry_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "../base/log.h"

_Thread_local int reg_writing;

/* ---- SQL helpers ---------------------------------------------------------- */

void rdb_of_tx(rdb *c, store_txn *tx) {
    c->s = tx->s;
    c->drv = tx->s->drv;
    c->d = tx->d;
    c->tx = tx;
}

status rdb_read(rdb *c, store *s, err *e) {
    c->s = s;
    c->drv = s->drv;
    c->tx = NULL;
    c->d = store_db(s, e);
    return c->d ? ST_OK : (e && e->code ? e->code : ST_IO);
}

static status vprep(rdb *c, const char *sql, db_stmt **st, err *e, const char *types, va_list ap) {
    status rc = c->drv->prepare(c->d, sql, 1, st, e);
    if (rc != ST_OK) return rc;
    for (int i = 0; types && types[i]; i++) {
        switch (types[i]) {
        case 'i': c->drv->bind_int(*st, i + 1, va_arg(ap, int64_t)); break;
        case 'd': c->drv->bind_double(*st, i + 1, va_arg(ap, double)); break;
        default: {
            const char *s = va_arg(ap, const char *);
            if (s)
                c->drv->bind_text(*st, i + 1, s, -1);
            else
                c->drv->bind_null(*st, i + 1);
        }
        }
    }
    return ST_OK;
}

status rq_prep(rdb *c, const char *sql, db_stmt **st, err *e, const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    status rc = vprep(c, sql, st, e, types, ap);
    va_end(ap);
    return rc;
}

status rq_exec(rdb *c, const char *sql, err *e, const char *types, ...) {
    db_stmt *st = NULL;
    va_list ap;
    va_start(ap, types);
    status rc = vprep(c, sql, &st, e, types, ap);
    va_end(ap);
    if (rc != ST_OK) return rc;
    int r;
    while ((r = c->drv->step(st, e)) == 1) {
    }
    if (r < 0) rc = e && e->code ? e->code : ST_IO;
    c->drv->done(st);
    return rc;
}

status rq_int(rdb *c, const char *sql, int64_t *out, int *found, err *e, const char *types, ...) {
    db_stmt *st = NULL;
    va_list ap;
    va_start(ap, types);
    status rc = vprep(c, sql, &st, e, types, ap);
    va_end(ap);
    if (rc != ST_OK) return rc;
    int r = c->drv->step(st, e);
    if (found) *found = r == 1;
    *out = r == 1 ? c->drv->col_int(st, 0) : 0;
    if (r == 1)
        while ((r = c->drv->step(st, e)) == 1) {
        }
    if (r < 0) rc = e && e->code ? e->code : ST_IO;
    c->drv->done(st);
    return rc;
}

void rq_col_copy(rdb *c, db_stmt *st, int col, char *out, size_t cap) {
    size_t n = 0;
    const char *t = c->drv->col_text(st, col, &n);
    if (!t) n = 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(out, t, n);
    out[n] = 0;
}

int64_t reg_now_usec(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

status reg_lock(rdb *c, err *e) {
    if (c->drv != &db_pg_driver) return ST_OK;
    return rq_exec(c, "SELECT pg_advisory_xact_lock(7104202612)", e, "");
}

/* ---- the model ---------------------------------------------------------- */

/* The default model (docs/registry.md §8.3): m and u set by hand from what
 * is known of NHS feeds and rounded from training on the synthetic
 * population, so that linking works from the first record. u of an exact
 * name is the average over names; term frequencies refine it per name. */
void registry_default_model(fs_model *m) {
    fs_model_init(m);
    static const double mu[FS_NFIELDS][FS_MAX_LEVELS][2] = {
        [FS_NHS] = {{0.970, 1e-6}, {0.029, 4e-6}, {0.0005, 0.974995}, {0.0005, 0.025}},
        [FS_FAMILY] = {{0.93, 0.01}, {0.02, 0.001}, {0.01, 0.002}, {0.01, 0.005}, {0.03, 0.982}},
        [FS_GIVEN] = {{0.93, 0.01}, {0.02, 0.001}, {0.01, 0.005}, {0.03, 0.004}, {0.01, 0.98}},
        [FS_DOB] = {{0.96, 3e-5}, {0.01, 1e-5}, {0.02, 0.004}, {0.005, 0.001}, {0.005, 0.99496}},
        [FS_SEX] = {{0.99, 0.5}, {0.01, 0.5}},
        [FS_POSTCODE] = {{0.80, 1e-4}, {0.02, 0.005}, {0.05, 0.04}, {0.05, 0.3}, {0.08, 0.6549}},
        [FS_ADDRESS] = {{0.80, 2e-4}, {0.03, 1e-4}, {0.02, 0.03}, {0.15, 0.9697}},
        [FS_LOCAL_ID] = {{0.05, 1e-7}, {0.95, 0.9999999}},
    };
    for (int f = 0; f < FS_NFIELDS; f++)
        for (int l = 0; l < fs_field_levels((fs_field)f); l++) {
            m->m[f][l] = mu[f][l][0];
            m->u[f][l] = mu[f][l][1];
        }
    m->lambda = 1e-6;
    m->tf[FS_FAMILY] = m->tf[FS_GIVEN] = 1;
    m->tf[FS_POSTCODE] = 0;
    m->tf_min_u = 1e-5;
    m->link_weight = 20.0;
    m->review_weight = 10.0;
}

status reg_model_current(registry *r, rdb *c, fs_model *m, int64_t *version, err *e) {
    int64_t v = 0;
    int found = 0;
    status rc = rq_int(c, "SELECT COALESCE(MAX(version), 0) FROM reg_model", &v, &found, e, "");
    if (rc != ST_OK) return rc;
    pthread_mutex_lock(&r->lock);
    int cached = r->model_version == v;
    if (cached) *m = r->model;
    pthread_mutex_unlock(&r->lock);
    if (cached) goto out;
    if (v == 0) {
        registry_default_model(m);
    } else {
        db_stmt *st = NULL;
        rc = rq_prep(c, "SELECT model FROM reg_model WHERE version = ?", &st, e, "i", v);
        if (rc != ST_OK) return rc;
        int s = c->drv->step(st, e);
        if (s == 1) {
            size_t n = 0;
            const char *t = c->drv->col_text(st, 0, &n);
            rc = fs_model_from_json(t ? t : "", n, m, e);
        } else {
            rc = s < 0
                     ? ST_IO
                     : err_set(e, ST_INTERNAL, "exception", "reg_model", "model %lld vanished", (long long)v);
        }
        c->drv->done(st);
        if (rc != ST_OK) return rc;
    }
    pthread_mutex_lock(&r->lock);
    r->model = *m;
    r->model_version = v;
    pthread_mutex_unlock(&r->lock);
out:
    if (version) *version = v;
    return ST_OK;
}

status registry_model(registry *r, fs_model *m, int64_t *version, err *e) {
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    if (rc == ST_OK) rc = reg_model_current(r, &c, m, version, e);
    return rc;
}

/* ---- opening ----------------------------------------------------------- */

static status on_patient(void *ctx, store_txn *tx, const store_write_event *ev, err *e);

status registry_open(store *s, registry **out, err *e) {
    *out = NULL;
    registry *r = calloc(1, sizeof *r);
    if (!r) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    r->s = s;
    pthread_mutex_init(&r->lock, NULL);
    r->model_version = -1;
    r->rules = block_default_rules(&r->nrules);
    status rc = store_add_write_hook(s, "Patient", on_patient, r, e);
    if (rc != ST_OK) {
        pthread_mutex_destroy(&r->lock);
        free(r);
        return rc;
    }
    *out = r;
    return ST_OK;
}

void registry_close(registry *r) {
    if (!r) return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

#define MAX_ATTACHED 8
static struct {
    store *s;
    registry *r;
} attached[MAX_ATTACHED];
static int nattached;
static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;

static void print_stats_at_exit(void);

status registry_attach(store *s, err *e) {
    const char *env = getenv("CONCORD_REGISTRY");
    if (env && (strcmp(env, "off") == 0 || strcmp(env, "0") == 0)) {
        log_info("registry: off (CONCORD_REGISTRY=%s): Patients are not linked as they are written", env);
        return ST_OK;
    }
    pthread_mutex_lock(&attach_lock);
    status rc = ST_OK;
    int slot = nattached;
    for (int i = 0; i < nattached; i++)
        if (attached[i].s == s) slot = i; /* a store closed earlier had this address */
    if (slot == MAX_ATTACHED) {
        rc = err_set(e, ST_INTERNAL, "exception", NULL, "too many registries");
    } else {
        registry *r = NULL;
        rc = registry_open(s, &r, e);
        if (rc == ST_OK) {
            if (slot < nattached) registry_close(attached[slot].r);
            attached[slot].s = s;
            attached[slot].r = r;
            if (slot == nattached) nattached++;
            const char *st = getenv("CONCORD_REGISTRY_STATS");
            static int registered;
            if (st && *st && strcmp(st, "0") != 0 && !registered) {
                atexit(print_stats_at_exit);
                registered = 1;
            }
        }
    }
    pthread_mutex_unlock(&attach_lock);
    return rc;
}

/* CONCORD_REGISTRY_STATS=1: the hook's timings on stderr when the process
 * ends (for measuring its cost on `concord import`). */
static void print_stats_at_exit(void) {
    for (int i = 0; i < nattached; i++) {
        registry_stats st;
        registry_hook_stats(attached[i].r, &st);
        buf b = {0};
        registry_stats_json(&st, &b);
        fprintf(stderr, "registry stats: %s\n", b.p);
        buf_free(&b);
    }
}

registry *registry_of(store *s) {
    registry *r = NULL;
    pthread_mutex_lock(&attach_lock);
    for (int i = 0; i < nattached; i++)
        if (attached[i].s == s) r = attached[i].r;
    pthread_mutex_unlock(&attach_lock);
    return r;
}

/* ---- source records ----------------------------------------------------- */

static void copy_str(char *out, size_t cap, const char *s) {
    snprintf(out, cap, "%s", s ? s : "");
}

static const char *jstr(json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

void reg_raw_from_patient(json_t *p, reg_raw *raw, char merge_into[72]) {
    memset(raw, 0, sizeof *raw);
    merge_into[0] = 0;
    size_t i, nlocal = 0, ll = 0;
    json_t *x;
    json_array_foreach(json_object_get(p, "identifier"), i, x) {
        const char *sys = jstr(x, "system"), *val = jstr(x, "value");
        if (!val || !*val) continue;
        if (sys && strcmp(sys, REGISTRY_NHS_SYSTEM) == 0) {
            if (!raw->nhs[0]) copy_str(raw->nhs, sizeof raw->nhs, val);
        } else if (sys && nlocal < REG_MAX_LOCAL_IDS) {
            int k =
                snprintf(raw->local + ll, sizeof raw->local - ll, "%s%s|%s", nlocal ? "\t" : "", sys, val);
            if (k > 0 && (size_t)k < sizeof raw->local - ll) {
                ll += (size_t)k;
                nlocal++;
            } else {
                raw->local[ll] = 0;
            }
        }
    }
    /* the official (or usual) name, else the first */
    json_t *names = json_object_get(p, "name"), *name = NULL;
    json_array_foreach(names, i, x) {
        const char *use = jstr(x, "use");
        if (use && (strcmp(use, "official") == 0 || strcmp(use, "usual") == 0)) {
            name = x;
            break;
        }
    }
    if (!name) name = json_array_get(names, 0);
    copy_str(raw->family, sizeof raw->family, jstr(name, "family"));
    size_t gl = 0;
    json_array_foreach(json_object_get(name, "given"), i, x) {
        const char *g = json_string_value(x);
        if (!g || !*g) continue;
        int k = snprintf(raw->given + gl, sizeof raw->given - gl, "%s%s", gl ? " " : "", g);
        if (k < 0 || (size_t)k >= sizeof raw->given - gl) break;
        gl += (size_t)k;
    }
    copy_str(raw->birth_date, sizeof raw->birth_date, jstr(p, "birthDate"));
    copy_str(raw->gender, sizeof raw->gender, jstr(p, "gender"));
    /* the home address in use, else the first not marked old */
    json_t *addrs = json_object_get(p, "address"), *addr = NULL;
    json_array_foreach(addrs, i, x) {
        const char *use = jstr(x, "use");
        if (use && strcmp(use, "home") == 0 && !json_object_get(json_object_get(x, "period"), "end")) {
            addr = x;
            break;
        }
    }
    if (!addr) json_array_foreach(addrs, i, x) {
            const char *use = jstr(x, "use");
            if (!use || strcmp(use, "old") != 0) {
                addr = x;
                break;
            }
        }
    copy_str(raw->postcode, sizeof raw->postcode, jstr(addr, "postalCode"));
    copy_str(raw->line, sizeof raw->line,
             json_string_value(json_array_get(json_object_get(addr, "line"), 0)));
    copy_str(raw->source, sizeof raw->source, jstr(json_object_get(p, "meta"), "source"));
    /* HL7 A40 (and any FHIR client): link type replaced-by names the survivor */
    json_array_foreach(json_object_get(p, "link"), i, x) {
        const char *type = jstr(x, "type");
        const char *ref = jstr(json_object_get(x, "other"), "reference");
        if (type && ref && strcmp(type, "replaced-by") == 0 && strncmp(ref, "Patient/", 8) == 0 && ref[8])
            copy_str(merge_into, 72, ref + 8);
    }
}

void reg_raw_to_person(const reg_raw *raw, reg_person *p) {
    reg_person_init(p);
    if (raw->nhs[0]) reg_person_set_nhs(p, raw->nhs, strlen(raw->nhs));
    reg_person_set_family(p, raw->family, strlen(raw->family));
    reg_person_set_given(p, raw->given, strlen(raw->given));
    if (raw->birth_date[0]) reg_person_set_dob_text(p, raw->birth_date, strlen(raw->birth_date));
    if (raw->gender[0]) reg_person_set_sex_text(p, raw->gender, strlen(raw->gender));
    if (raw->postcode[0]) reg_person_set_postcode(p, raw->postcode, strlen(raw->postcode));
    if (raw->line[0]) reg_person_set_address(p, raw->line, strlen(raw->line));
    for (const char *s = raw->local; *s;) {
        const char *end = strchr(s, '\t');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        const char *bar = memchr(s, '|', n);
        if (bar) reg_person_add_local_id(p, s, (size_t)(bar - s), bar + 1, n - (size_t)(bar - s) - 1);
        s += n;
        if (*s == '\t') s++;
    }
}

int reg_raw_equal(const reg_raw *a, const reg_raw *b) {
    /* meta.source is provenance, not demographics */
    return strcmp(a->nhs, b->nhs) == 0 && strcmp(a->family, b->family) == 0 &&
           strcmp(a->given, b->given) == 0 && strcmp(a->birth_date, b->birth_date) == 0 &&
           strcmp(a->gender, b->gender) == 0 && strcmp(a->postcode, b->postcode) == 0 &&
           strcmp(a->line, b->line) == 0 && strcmp(a->local, b->local) == 0;
}

void reg_src_read(rdb *c, db_stmt *st, reg_src *o) {
    const db_driver *drv = c->drv;
    o->src_key = drv->col_int(st, 0);
    o->person_key = drv->col_int(st, 1);
    rq_col_copy(c, st, 2, o->patient_id, sizeof o->patient_id);
    rq_col_copy(c, st, 3, o->decision, sizeof o->decision);
    o->weight = drv->col_double(st, 4);
    o->updated = drv->col_int(st, 5);
    o->decided_at = drv->col_int(st, 6);
    rq_col_copy(c, st, 7, o->decided_by, sizeof o->decided_by);
    reg_raw *r = &o->raw;
    rq_col_copy(c, st, 8, r->nhs, sizeof r->nhs);
    rq_col_copy(c, st, 9, r->family, sizeof r->family);
    rq_col_copy(c, st, 10, r->given, sizeof r->given);
    rq_col_copy(c, st, 11, r->birth_date, sizeof r->birth_date);
    rq_col_copy(c, st, 12, r->gender, sizeof r->gender);
    rq_col_copy(c, st, 13, r->postcode, sizeof r->postcode);
    rq_col_copy(c, st, 14, r->line, sizeof r->line);
    rq_col_copy(c, st, 15, r->local, sizeof r->local);
    rq_col_copy(c, st, 16, r->source, sizeof r->source);
}

static status src_by_patient(rdb *c, const char *patient_id, reg_src *out, int *found, err *e) {
    db_stmt *st = NULL;
    status rc =
        rq_prep(c, "SELECT " REG_SRC_COLS " FROM reg_source WHERE patient_id = ?", &st, e, "t", patient_id);
    if (rc != ST_OK) return rc;
    int r = c->drv->step(st, e);
    *found = r == 1;
    if (r == 1) reg_src_read(c, st, out);
    if (r < 0) rc = ST_IO;
    c->drv->done(st);
    return rc;
}

static status src_by_key(rdb *c, int64_t key, reg_src *out, int *found, err *e) {
    db_stmt *st = NULL;
    status rc = rq_prep(c, "SELECT " REG_SRC_COLS " FROM reg_source WHERE src_key = ?", &st, e, "i", key);
    if (rc != ST_OK) return rc;
    int r = c->drv->step(st, e);
    *found = r == 1;
    if (r == 1) reg_src_read(c, st, out);
    if (r < 0) rc = ST_IO;
    c->drv->done(st);
    return rc;
}

/* ---- block keys ------------------------------------------------------------ */

static int64_t hash_key(int rule, const char *k, size_t n) {
    uint64_t h = 1469598103934665603ull;
    h ^= (unsigned char)(rule + 1);
    h *= 1099511628211ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return (int64_t)(h ? h : 1);
}

size_t reg_block_hashes(const registry *r, const reg_person *p, int64_t *out) {
    size_t n = 0;
    for (size_t k = 0; k < r->nrules; k++) {
        char key[BLOCK_KEY_MAX];
        size_t kl = block_key(&r->rules[k], p, key);
        out[k] = kl ? hash_key((int)k, key, kl) : 0;
        n += kl != 0;
    }
    return n;
}

static status blocks_write(registry *r, rdb *c, int64_t src, const reg_person *p, int add, err *e) {
    int64_t h[BLOCK_MAX_RULES];
    reg_block_hashes(r, p, h);
    status rc = ST_OK;
    for (size_t k = 0; k < r->nrules && rc == ST_OK; k++) {
        if (!h[k]) continue;
        int dup = 0; /* two rules giving one hash: written once */
        for (size_t j = 0; j < k; j++)
            dup |= h[j] == h[k];
        if (dup) continue;
        if (add)
            rc = rq_exec(c, "INSERT INTO reg_block (bkey, src_key) VALUES (?, ?) ON CONFLICT DO NOTHING", e,
                         "ii", h[k], src);
        else
            rc = rq_exec(c, "DELETE FROM reg_block WHERE bkey = ? AND src_key = ?", e, "ii", h[k], src);
    }
    return rc;
}

/* ---- term frequencies --------------------------------------------------- */

static const fs_field tf_fields[] = {FS_FAMILY, FS_GIVEN};

static const char *tf_value(const reg_person *p, fs_field f) {
    return f == FS_FAMILY ? p->family.s : p->given.s;
}

static double tf_smooth(const fs_model *m, fs_field f, double count, double total) {
    double u = m->u[f][0];
    return (count + REG_TF_ALPHA * u) / (total + REG_TF_ALPHA);
}

double reg_tf_freq(void *arg, fs_field field, const char *value, size_t n) {
    reg_tf_ctx *t = arg;
    if ((unsigned)field >= FS_NFIELDS || !t->m) return -1.0;
    if (t->table) {
        double fr = fs_tf_table_freq(t->table, field, value, n);
        double total = t->total[field];
        if (fr < 0 || total <= 0) return -1.0;
        return tf_smooth(t->m, field, fr * total, total);
    }
    if (t->total[field] <= 0) return -1.0;
    return tf_smooth(t->m, field, t->count[field], t->total[field]);
}

/* Count (delta +1/-1) a record's values; with `out`, read the counts of its
 * values and the totals after the change. */
static status tf_update(rdb *c, const reg_person *p, int delta, reg_tf_ctx *out, err *e) {
    status rc = ST_OK;
    for (size_t k = 0; k < sizeof tf_fields / sizeof tf_fields[0] && rc == ST_OK; k++) {
        fs_field f = tf_fields[k];
        const char *v = tf_value(p, f);
        if (!v[0]) continue;
        for (int tot = 0; tot < 2 && rc == ST_OK; tot++) {
            const char *val = tot ? "" : v;
            int64_t n = 0;
            int found = 0;
            rc = rq_int(
                c,
                "INSERT INTO reg_tf (field, value, n) VALUES (?, ?, ?) ON CONFLICT (field, value) DO UPDATE"
                " SET n = reg_tf.n + excluded.n RETURNING n",
                &n, &found, e, "iti", (int64_t)f, val, (int64_t)delta);
            if (out) {
                if (tot)
                    out->total[f] = (double)n;
                else
                    out->count[f] = (double)n;
            }
        }
    }
    return rc;
}

status reg_tf_lookup(rdb *c, const fs_model *m, const reg_person *p, int add, reg_tf_ctx *tf, err *e) {
    memset(tf, 0, sizeof *tf);
    tf->m = m;
    if (add) return tf_update(c, p, +1, tf, e);
    status rc = ST_OK;
    for (size_t k = 0; k < sizeof tf_fields / sizeof tf_fields[0] && rc == ST_OK; k++) {
        fs_field f = tf_fields[k];
        const char *v = tf_value(p, f);
        int64_t n = 0, total = 0;
        int found;
        rc = rq_int(c, "SELECT n FROM reg_tf WHERE field = ? AND value = ?", &total, &found, e, "it",
                    (int64_t)f, "");
        if (rc == ST_OK && v[0])
            rc = rq_int(c, "SELECT n FROM reg_tf WHERE field = ? AND value = ?", &n, &found, e, "it",
                        (int64_t)f, v);
        /* the record being matched counts as one more */
        tf->count[f] = (double)n + 1;
        tf->total[f] = (double)total + 1;
    }
    return rc;
}

/* ---- candidates and scoring ---------------------------------------------- */

int reg_trusted_nhs(const reg_person *a, const reg_person *b, const fs_vector *v) {
    if (v->level[FS_NHS] != CMP_NHS_AGREE || !a->nhs_valid || !b->nhs_valid) return 0;
    if (v->level[FS_DOB] != CMP_DOB_EXACT) return 0;
    int fam = v->level[FS_FAMILY], giv = v->level[FS_GIVEN];
    return (fam != FS_MISSING && fam < CMP_NAME_DIFFERENT) || (giv != FS_MISSING && giv < CMP_NAME_DIFFERENT);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

status reg_candidates(registry *r, rdb *c, const fs_model *m, const reg_person *p, int64_t self,
                      reg_tf_ctx *tf, reg_cand **out, size_t *nout, err *e) {
    status rc = ST_OK;
    int64_t h[BLOCK_MAX_RULES];
    int64_t *keys = NULL;
    size_t nk = 0, capk = 0;
    reg_cand *cand = NULL;
    size_t nc = 0;
    *out = NULL;
    *nout = 0;
    reg_block_hashes(r, p, h);
    for (size_t k = 0; k < r->nrules && rc == ST_OK; k++) {
        if (!h[k]) continue;
        db_stmt *st = NULL;
        rc = rq_prep(c, "SELECT src_key FROM reg_block WHERE bkey = ? LIMIT 201", &st, e, "i", h[k]);
        if (rc != ST_OK) break;
        size_t first = nk;
        int s;
        while ((s = c->drv->step(st, e)) == 1) {
            if (nk == capk) {
                capk = capk ? capk * 2 : 64;
                int64_t *nkeys = realloc(keys, capk * sizeof *nkeys);
                if (!nkeys) {
                    rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
                    break;
                }
                keys = nkeys;
            }
            keys[nk++] = c->drv->col_int(st, 0);
        }
        if (s < 0) rc = ST_IO;
        c->drv->done(st);
        if (nk - first > REG_MAX_LIVE_BLOCK) nk = first; /* an oversized block: skipped */
    }
    if (rc != ST_OK) goto out;
    reg_sort(keys, nk, sizeof *keys, cmp_i64);
    cand = calloc(nk ? nk : 1, sizeof *cand);
    if (!cand) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    fs_tf tfc = {reg_tf_freq, tf};
    for (size_t i = 0; i < nk && rc == ST_OK; i++) {
        if (keys[i] == self || (i > 0 && keys[i] == keys[i - 1])) continue;
        reg_cand *x = &cand[nc];
        int found = 0;
        rc = src_by_key(c, keys[i], &x->src, &found, e);
        if (rc != ST_OK || !found || !x->src.person_key) continue;
        reg_raw_to_person(&x->src.raw, &x->p);
        fs_compare(p, &x->p, &x->v);
        x->w = fs_weight(m, &x->v, p, &x->p, &tfc, x->contrib);
        x->trusted = reg_trusted_nhs(p, &x->p, &x->v);
        nc++;
    }
out:
    free(keys);
    if (rc != ST_OK) {
        free(cand);
        return rc;
    }
    *out = cand;
    *nout = nc;
    return ST_OK;
}

/* ---- persons and golden records ------------------------------------------ */

status reg_person_new(rdb *c, int64_t *person_key, char person_id[72], err *e) {
    char id[37];
    store_new_id(id);
    copy_str(person_id, 72, id);
    int found = 0;
    return rq_int(c,
                  "INSERT INTO reg_person (person_id, created, retired, golden_hash) VALUES (?, ?, 0, 0)"
                  " RETURNING person_key",
                  person_key, &found, e, "ti", id, reg_now_usec());
}

status reg_person_id(rdb *c, int64_t person_key, char person_id[72], err *e) {
    db_stmt *st = NULL;
    status rc = rq_prep(c, "SELECT person_id FROM reg_person WHERE person_key = ?", &st, e, "i", person_key);
    if (rc != ST_OK) return rc;
    int r = c->drv->step(st, e);
    if (r == 1)
        rq_col_copy(c, st, 0, person_id, 72);
    else
        rc = r < 0 ? ST_IO
                   : err_set(e, ST_NOT_FOUND, "not-found", NULL, "no person %lld", (long long)person_key);
    c->drv->done(st);
    return rc;
}

status reg_person_resolve(rdb *c, const char *name, int64_t *person_key, err *e) {
    int found = 0;
    status rc;
    if (!name || !*name)
        return err_set(e, ST_INVALID, "required", NULL, "a person is needed (Person/ID or Patient/ID)");
    if (strncmp(name, "Patient/", 8) == 0) {
        rc = rq_int(c, "SELECT COALESCE(person_key, 0) FROM reg_source WHERE patient_id = ?", person_key,
                    &found, e, "t", name + 8);
        if (rc == ST_OK && (!found || !*person_key))
            rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "%s is not in the registry", name);
        return rc;
    }
    const char *id = strncmp(name, "Person/", 7) == 0 ? name + 7 : name;
    int64_t retired = 0;
    rc = rq_int(c, "SELECT person_key FROM reg_person WHERE person_id = ?", person_key, &found, e, "t", id);
    if (rc != ST_OK) return rc;
    if (!found) {
        /* a bare Patient id is accepted too */
        if (id == name) {
            rc = rq_int(c, "SELECT COALESCE(person_key, 0) FROM reg_source WHERE patient_id = ?", person_key,
                        &found, e, "t", id);
            if (rc == ST_OK && found && *person_key) return ST_OK;
        }
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "no person %s in the registry", name);
    }
    rc = rq_int(c, "SELECT retired FROM reg_person WHERE person_key = ?", &retired, &found, e, "i",
                *person_key);
    if (rc == ST_OK && retired)
        rc = err_set(e, ST_GONE, "deleted", NULL, "person %s is retired (merged or emptied)", id);
    return rc;
}

static uint64_t fnv64(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The choice rules of §8.5: the value held by most sources, ties to the
 * most recently updated source, then the lowest src_key. `key` gives the
 * comparable value of source i ("" = none). */
typedef const char *(*value_fn)(const reg_src *s, char *tmp, size_t cap);

static int choose(const reg_src *v, size_t n, value_fn key) {
    int best = -1, best_count = 0;
    char a[160], b[160];
    for (size_t i = 0; i < n; i++) {
        const char *ki = key(&v[i], a, sizeof a);
        if (!ki[0]) continue;
        int count = 0;
        for (size_t j = 0; j < n; j++) {
            const char *kj = key(&v[j], b, sizeof b);
            count += strcmp(ki, kj) == 0;
        }
        if (best < 0 || count > best_count ||
            (count == best_count && (v[i].updated > v[best].updated ||
                                     (v[i].updated == v[best].updated && v[i].src_key < v[best].src_key)))) {
            best = (int)i;
            best_count = count;
        }
    }
    return best;
}

static const char *key_nhs(const reg_src *s, char *tmp, size_t cap) {
    char d[11];
    if (nhsno_parse(s->raw.nhs, strlen(s->raw.nhs), d) != NHSNO_VALID) return "";
    snprintf(tmp, cap, "%s", d);
    return tmp;
}

static const char *key_name(const reg_src *s, char *tmp, size_t cap) {
    char f[CMP_NAME_MAX], g[CMP_NAME_MAX * 2];
    cmp_name_normalise(s->raw.family, strlen(s->raw.family), f, sizeof f);
    cmp_name_normalise(s->raw.given, strlen(s->raw.given), g, sizeof g);
    if (!f[0] && !g[0]) return "";
    snprintf(tmp, cap, "%s|%s", f, g);
    return tmp;
}

static const char *key_dob_full(const reg_src *s, char *tmp, size_t cap) {
    cmp_date d;
    if (cmp_date_parse(s->raw.birth_date, strlen(s->raw.birth_date), &d) != 0 || !d.m || !d.d) return "";
    snprintf(tmp, cap, "%04d-%02d-%02d", d.y, d.m, d.d);
    return tmp;
}

static const char *key_dob_any(const reg_src *s, char *tmp, size_t cap) {
    cmp_date d;
    if (cmp_date_parse(s->raw.birth_date, strlen(s->raw.birth_date), &d) != 0 || !d.y) return "";
    if (d.m && d.d)
        snprintf(tmp, cap, "%04d-%02d-%02d", d.y, d.m, d.d);
    else if (d.m)
        snprintf(tmp, cap, "%04d-%02d", d.y, d.m);
    else
        snprintf(tmp, cap, "%04d", d.y);
    return tmp;
}

static const char *key_gender(const reg_src *s, char *tmp, size_t cap) {
    switch (cmp_sex_parse(s->raw.gender, strlen(s->raw.gender))) {
    case CMP_SEX_MALE: return "male";
    case CMP_SEX_FEMALE: return "female";
    case CMP_SEX_OTHER: return "other";
    default: return "";
    }
}

static void json_str(buf *b, const char *s) {
    buf_putc(b, '"');
    buf_json_escape(b, s, strlen(s));
    buf_putc(b, '"');
}

static const char *assurance(const reg_src *s) {
    if (strcmp(s->decision, "link") == 0) return "level3";
    if (strcmp(s->decision, "new") == 0 || strcmp(s->decision, "review") == 0) return "level3";
    return "level4"; /* nhs, accepted, merged, manual */
}

/* The Person resource of a live person from its sources (sorted by src_key). */
static void golden_json(const char *person_id, const reg_src *v, size_t n, buf *b) {
    char tmp[160];
    buf_puts(b, "{\"resourceType\":\"Person\",\"id\":");
    json_str(b, person_id);
    int i = choose(v, n, key_nhs);
    if (i >= 0) {
        buf_puts(b, ",\"identifier\":[{\"system\":\"" REGISTRY_NHS_SYSTEM "\",\"value\":");
        json_str(b, key_nhs(&v[i], tmp, sizeof tmp));
        buf_puts(b, "}]");
    }
    i = choose(v, n, key_name);
    if (i >= 0) {
        buf_puts(b, ",\"name\":[{\"use\":\"official\"");
        if (v[i].raw.family[0]) {
            buf_puts(b, ",\"family\":");
            json_str(b, v[i].raw.family);
        }
        if (v[i].raw.given[0]) {
            buf_puts(b, ",\"given\":[");
            const char *g = v[i].raw.given;
            int first = 1;
            while (*g) {
                while (*g == ' ')
                    g++;
                const char *end = g;
                while (*end && *end != ' ')
                    end++;
                if (end > g) {
                    if (!first) buf_putc(b, ',');
                    buf_putc(b, '"');
                    buf_json_escape(b, g, (size_t)(end - g));
                    buf_putc(b, '"');
                    first = 0;
                }
                g = end;
            }
            buf_putc(b, ']');
        }
        buf_putc(b, '}');
        buf_putc(b, ']');
    }
    i = choose(v, n, key_gender);
    if (i >= 0) {
        buf_puts(b, ",\"gender\":");
        json_str(b, key_gender(&v[i], tmp, sizeof tmp));
    }
    i = choose(v, n, key_dob_full);
    if (i < 0) i = choose(v, n, key_dob_any);
    if (i >= 0) {
        buf_puts(b, ",\"birthDate\":");
        json_str(b, key_dob_any(&v[i], tmp, sizeof tmp));
    }
    /* the address of the most recently updated source with a real postcode */
    int a = -1;
    for (size_t k = 0; k < n; k++) {
        cmp_postcode pc;
        if (cmp_postcode_parse(v[k].raw.postcode, strlen(v[k].raw.postcode), &pc) != CMP_PC_FULL) continue;
        if (a < 0 || v[k].updated > v[a].updated) a = (int)k;
    }
    int full = a >= 0;
    if (!full) /* no real postcode anywhere: the most recent address line */
        for (size_t k = 0; k < n; k++)
            if (v[k].raw.line[0] && (a < 0 || v[k].updated > v[a].updated)) a = (int)k;
    if (a >= 0) {
        cmp_postcode pc;
        cmp_postcode_parse(v[a].raw.postcode, strlen(v[a].raw.postcode), &pc);
        buf_puts(b, ",\"address\":[{\"use\":\"home\"");
        if (v[a].raw.line[0]) {
            buf_puts(b, ",\"line\":[");
            json_str(b, v[a].raw.line);
            buf_putc(b, ']');
        }
        if (full) {
            buf_puts(b, ",\"postalCode\":");
            json_str(b, pc.pc);
        }
        buf_puts(b, "}]");
    }
    buf_puts(b, ",\"active\":true,\"link\":[");
    for (size_t k = 0; k < n; k++) {
        buf_puts(b, k ? ",{\"target\":{\"reference\":\"Patient/" : "{\"target\":{\"reference\":\"Patient/");
        buf_json_escape(b, v[k].patient_id, strlen(v[k].patient_id));
        buf_puts(b, "\"},\"assurance\":\"");
        buf_puts(b, assurance(&v[k]));
        buf_puts(b, "\"}");
    }
    buf_puts(b, "]}");
}

static status person_sources(rdb *c, int64_t person_key, reg_src **out, size_t *n, err *e) {
    db_stmt *st = NULL;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    status rc = rq_prep(c, "SELECT " REG_SRC_COLS " FROM reg_source WHERE person_key = ? ORDER BY src_key",
                        &st, e, "i", person_key);
    if (rc != ST_OK) return rc;
    int r;
    while ((r = c->drv->step(st, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            reg_src *nv = realloc(*out, cap * sizeof *nv);
            if (!nv) {
                rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
                break;
            }
            *out = nv;
        }
        reg_src_read(c, st, &(*out)[(*n)++]);
    }
    if (r < 0) rc = ST_IO;
    c->drv->done(st);
    if (rc != ST_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* Write a Person resource (text) as the registry. */
static status person_put(rdb *c, const char *id, const buf *text, err *e) {
    json_error_t je;
    json_t *j = json_loadb(text->p, text->len, 0, &je);
    if (!j) return err_set(e, ST_INTERNAL, "exception", "Person", "golden record is not JSON: %s", je.text);
    int was = reg_writing;
    reg_writing = 1;
    status rc = store_put(c->tx, j, id, 0, 0, NULL, NULL, NULL, e);
    reg_writing = was;
    json_decref(j);
    return rc;
}

status reg_person_refresh(rdb *c, int64_t person_key, int64_t retired_into, err *e) {
    status rc = ST_OK;
    reg_src *v = NULL;
    size_t n = 0;
    buf b = {0};
    char id[72], into_id[72];
    int64_t retired = 0, old_hash = 0;
    db_stmt *st = NULL;
    rc = rq_prep(c, "SELECT person_id, retired, golden_hash FROM reg_person WHERE person_key = ?", &st, e,
                 "i", person_key);
    if (rc != ST_OK) goto out;
    int r = c->drv->step(st, e);
    if (r == 1) {
        rq_col_copy(c, st, 0, id, sizeof id);
        retired = c->drv->col_int(st, 1);
        old_hash = c->drv->col_int(st, 2);
    }
    c->drv->done(st);
    if (r != 1) {
        rc = r < 0 ? ST_IO
                   : err_set(e, ST_INTERNAL, "exception", NULL, "no person %lld", (long long)person_key);
        goto out;
    }
    if ((rc = person_sources(c, person_key, &v, &n, e)) != ST_OK) goto out;
    if (n == 0) {
        if (retired_into) {
            if ((rc = reg_person_id(c, retired_into, into_id, e)) != ST_OK) goto out;
            buf_puts(&b, "{\"resourceType\":\"Person\",\"id\":");
            json_str(&b, id);
            buf_puts(&b, ",\"active\":false,\"link\":[{\"target\":{\"reference\":\"Person/");
            buf_json_escape(&b, into_id, strlen(into_id));
            buf_puts(&b, "\"},\"assurance\":\"level4\"}]}");
            int64_t h = (int64_t)fnv64(b.p, b.len);
            if (h != old_hash || !retired) rc = person_put(c, id, &b, e);
            if (rc == ST_OK)
                rc = rq_exec(c,
                             "UPDATE reg_person SET retired = 1, merged_into = ?, golden_hash = ? WHERE "
                             "person_key = ?",
                             e, "iii", retired_into, h, person_key);
        } else if (!retired || old_hash) {
            store_meta m;
            int was = reg_writing;
            reg_writing = 1;
            rc = store_delete(c->tx, "Person", id, &m, e);
            reg_writing = was;
            if (rc == ST_OK)
                rc = rq_exec(c,
                             "UPDATE reg_person SET retired = 1, merged_into = NULL, golden_hash = 0 WHERE "
                             "person_key = ?",
                             e, "i", person_key);
        }
        goto out;
    }
    golden_json(id, v, n, &b);
    int64_t h = (int64_t)fnv64(b.p, b.len);
    if (h != old_hash || retired) {
        rc = person_put(c, id, &b, e);
        if (rc == ST_OK)
            rc = rq_exec(
                c,
                "UPDATE reg_person SET retired = 0, merged_into = NULL, golden_hash = ? WHERE person_key = ?",
                e, "ii", h, person_key);
    }
out:
    free(v);
    buf_free(&b);
    return rc;
}

/* ---- history -------------------------------------------------------------- */

status reg_event_add(rdb *c, const char *who, const char *action, int64_t person, int64_t other, int64_t src,
                     int64_t review, const char *detail, const char *undo, int64_t *event, err *e) {
    int64_t key = 0;
    int found;
    status rc = rq_int(
        c,
        "INSERT INTO reg_event (at, who, action, person_key, other_person, src_key, review_key, detail,"
        " undo) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING event_key",
        &key, &found, e, "ittiiiitt", reg_now_usec(), who, action, person, other, src, review, detail, undo);
    if (event) *event = key;
    return rc;
}

/* ---- the write hook: real-time linking ----------------------------------------- */

/* Decisions a source row records. Manual ones are kept when the record's
 * demographics change; automatic ones are made again. */
static int decision_is_manual(const char *d) {
    return strcmp(d, "accepted") == 0 || strcmp(d, "merged") == 0 || strcmp(d, "manual") == 0;
}

static void evidence_json(const fs_model *m, int64_t model_version, const reg_cand *x, const char *rule,
                          buf *b) {
    buf_printf(b, "{\"rule\":\"%s\",\"model\":%lld", rule, (long long)model_version);
    if (x) {
        buf_puts(b, ",\"against\":\"Patient/");
        buf_json_escape(b, x->src.patient_id, strlen(x->src.patient_id));
        buf_puts(b, "\",\"trusted_nhs\":");
        buf_puts(b, x->trusted ? "true" : "false");
        buf_puts(b, ",\"explain\":");
        fs_explain_json(m, &x->v, x->contrib, b);
    }
    buf_putc(b, '}');
}

/* Persons a record is kept apart from (rejected reviews, unmerges). */
static status apart_persons(rdb *c, int64_t src, int64_t **out, size_t *n, err *e) {
    db_stmt *st = NULL;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    status rc =
        rq_prep(c,
                "SELECT s.person_key FROM reg_constraint k JOIN reg_source s ON s.src_key = k.src_b"
                " WHERE k.src_a = ? AND k.kind = 'apart' AND k.active = 1 AND s.person_key IS NOT NULL"
                " UNION SELECT s.person_key FROM reg_constraint k JOIN reg_source s ON s.src_key = k.src_a"
                " WHERE k.src_b = ? AND k.kind = 'apart' AND k.active = 1 AND s.person_key IS NOT NULL",
                &st, e, "ii", src, src);
    if (rc != ST_OK) return rc;
    int r;
    while ((r = c->drv->step(st, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            int64_t *nv = realloc(*out, cap * sizeof *nv);
            if (!nv) break;
            *out = nv;
        }
        (*out)[(*n)++] = c->drv->col_int(st, 0);
    }
    if (r < 0) rc = ST_IO;
    c->drv->done(st);
    return rc;
}

/* A review item for (src, other) unless one exists for the pair. */
static status review_open(rdb *c, int64_t src, int64_t other, double w, const char *evidence, const char *who,
                          int *opened, err *e) {
    int64_t have = 0;
    int found = 0;
    if (opened) *opened = 0;
    status rc =
        rq_int(c,
               "SELECT review_key FROM reg_review WHERE ((src_key = ? AND other_key = ?) OR (src_key = ? AND"
               " other_key = ?)) AND status <> 'superseded'",
               &have, &found, e, "iiii", src, other, other, src);
    if (rc != ST_OK || found) return rc;
    rc = rq_exec(c,
                 "INSERT INTO reg_review (src_key, other_key, weight, evidence, status, created, created_by)"
                 " VALUES (?, ?, ?, ?, 'open', ?, ?)",
                 e, "iidtit", src, other, w, evidence, reg_now_usec(), who);
    if (rc == ST_OK && opened) *opened = 1;
    return rc;
}

status reg_merge_persons(rdb *c, int64_t keep, int64_t retire, const char *who, const char *action,
                         const char *reason, int64_t review, int64_t *event, err *e); /* registry_review.c */

typedef struct person_score {
    int64_t person;
    int best; /* index of its best candidate */
    int trusted;
} person_score;

static status on_write(registry *r, rdb *c, const store_write_event *ev, err *e) {
    status rc = ST_OK;
    reg_raw raw;
    char merge_into[72];
    reg_src old;
    int have_old = 0;
    reg_cand *cand = NULL;
    size_t nc = 0;
    person_score *ps = NULL;
    int64_t *apart = NULL;
    size_t napart = 0;
    buf ev_json = {0};
    int64_t now = reg_now_usec();
    reg_raw_from_patient(ev->res, &raw, merge_into);
    if ((rc = src_by_patient(c, ev->id, &old, &have_old, e)) != ST_OK) goto out;
    int64_t src = have_old ? old.src_key : 0, cur_person = have_old ? old.person_key : 0;
    if (have_old && cur_person && reg_raw_equal(&old.raw, &raw)) goto merge; /* nothing to link again */
    fs_model m;
    int64_t mver = 0;
    if ((rc = reg_model_current(r, c, &m, &mver, e)) != ST_OK) goto out;
    reg_person p;
    reg_raw_to_person(&raw, &p);
    if (have_old && cur_person) { /* the old demographics leave the indexes */
        reg_person op;
        reg_raw_to_person(&old.raw, &op);
        if ((rc = blocks_write(r, c, src, &op, 0, e)) != ST_OK) goto out;
        if ((rc = tf_update(c, &op, -1, NULL, e)) != ST_OK) goto out;
    }
    if (!have_old) {
        int found = 0;
        rc = rq_int(
            c,
            "INSERT INTO reg_source (patient_id, decision, decided_by, decided_at, updated, nhs, family,"
            " given, birth_date, gender, postcode, address_line, local_ids, source)"
            " VALUES (?, 'pending', 'registry', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING src_key",
            &src, &found, e, "tiittttttttt", ev->id, now, now, raw.nhs, raw.family, raw.given, raw.birth_date,
            raw.gender, raw.postcode, raw.line, raw.local, raw.source);
    } else {
        rc = rq_exec(
            c,
            "UPDATE reg_source SET updated = ?, nhs = ?, family = ?, given = ?, birth_date = ?, gender = ?,"
            " postcode = ?, address_line = ?, local_ids = ?, source = ? WHERE src_key = ?",
            e, "ittttttttti", now, raw.nhs, raw.family, raw.given, raw.birth_date, raw.gender, raw.postcode,
            raw.line, raw.local, raw.source, src);
    }
    if (rc != ST_OK) goto out;
    reg_tf_ctx tf;
    if ((rc = reg_tf_lookup(c, &m, &p, 1, &tf, e)) != ST_OK) goto out;
    if ((rc = blocks_write(r, c, src, &p, 1, e)) != ST_OK) goto out;
    if ((rc = reg_candidates(r, c, &m, &p, src, &tf, &cand, &nc, e)) != ST_OK) goto out;
    if (have_old && (rc = apart_persons(c, src, &apart, &napart, e)) != ST_OK) goto out;

    /* the best candidate of each person */
    size_t np = 0;
    ps = calloc(nc ? nc : 1, sizeof *ps);
    if (!ps) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nc; i++) {
        for (size_t k = 0; k < napart; k++)
            if (apart[k] == cand[i].src.person_key) cand[i].apart = 1;
        if (cand[i].apart) continue;
        size_t k = 0;
        while (k < np && ps[k].person != cand[i].src.person_key)
            k++;
        if (k == np) {
            ps[np++] = (person_score){cand[i].src.person_key, (int)i, cand[i].trusted};
        } else {
            if (cand[i].w > cand[ps[k].best].w) ps[k].best = (int)i;
            ps[k].trusted |= cand[i].trusted;
        }
    }
    /* trusted NHS numbers first, then weight */
    int best = -1, second = -1;
    for (size_t k = 0; k < np; k++) {
        int better = best < 0 || (ps[k].trusted > ps[best].trusted) ||
                     (ps[k].trusted == ps[best].trusted && cand[ps[k].best].w > cand[ps[best].best].w);
        if (better) {
            second = best;
            best = (int)k;
        } else if (second < 0 || cand[ps[k].best].w > cand[ps[second].best].w) {
            second = (int)k;
        }
    }
    const reg_cand *bc = best >= 0 ? &cand[ps[best].best] : NULL;
    fs_decision d = FS_NEW;
    const char *rule = "new";
    if (bc && ps[best].trusted) {
        d = FS_LINK;
        rule = "nhs";
    } else if (bc) {
        d = fs_decide(&m, bc->w);
        rule = d == FS_LINK ? "link" : d == FS_REVIEW ? "review" : "new";
    }
    buf evid = {0};
    evidence_json(&m, mver, bc, rule, &evid);
    int64_t target = d == FS_LINK ? ps[best].person : 0;
    int64_t old_person = cur_person;
    int manual = have_old && cur_person && decision_is_manual(old.decision);
    int64_t person = cur_person;
    if (manual) {
        /* a person's decision stands; only the evidence is refreshed */
    } else if (target) {
        person = target;
    } else if (cur_person) {
        int64_t others = 0;
        int found;
        rc = rq_int(c, "SELECT COUNT(*) FROM reg_source WHERE person_key = ? AND src_key <> ?", &others,
                    &found, e, "ii", cur_person, src);
        if (rc == ST_OK && others > 0) person = 0; /* it no longer belongs with them */
    } else {
        person = 0;
    }
    if (rc == ST_OK && !person) {
        char pid[72];
        rc = reg_person_new(c, &person, pid, e);
    }
    if (rc == ST_OK && !manual)
        rc = rq_exec(
            c,
            "UPDATE reg_source SET person_key = ?, decision = ?, weight = ?, evidence = ?, decided_by ="
            " 'registry', decided_at = ? WHERE src_key = ?",
            e, "itdtii", person,
            d == FS_LINK     ? rule
            : d == FS_REVIEW ? "review"
                             : "new",
            bc ? bc->w : 0.0, evid.p, now, src);
    else if (rc == ST_OK)
        rc = rq_exec(c, "UPDATE reg_source SET person_key = ? WHERE src_key = ?", e, "ii", person, src);
    if (rc == ST_OK) rc = reg_person_refresh(c, person, 0, e);
    if (rc == ST_OK && old_person && old_person != person) {
        rc = reg_person_refresh(c, old_person, 0, e);
        if (rc == ST_OK) {
            buf_printf(&ev_json, "{\"from\":%lld,\"to\":%lld,\"rule\":\"%s\"}", (long long)old_person,
                       (long long)person, rule);
            rc = reg_event_add(c, "registry", "relink", person, old_person, src, 0, ev_json.p, NULL, NULL, e);
        }
    }
    /* the uncertain go to review; so does a second person as strong as the first */
    if (rc == ST_OK && !manual && d == FS_REVIEW)
        rc = review_open(c, src, bc->src.src_key, bc->w, evid.p, "registry", NULL, e);
    if (rc == ST_OK && !manual && d == FS_LINK && second >= 0 && cand[ps[second].best].w >= m.link_weight) {
        const reg_cand *sc = &cand[ps[second].best];
        buf ev2 = {0};
        evidence_json(&m, mver, sc, "second", &ev2);
        rc = review_open(c, src, sc->src.src_key, sc->w, ev2.p, "registry", NULL, e);
        buf_free(&ev2);
    }
    buf_free(&evid);
    if (rc != ST_OK) goto out;
    cur_person = person;
merge:
    /* HL7 A40 (Patient.link replaced-by): this record's person joins the survivor's */
    if (merge_into[0] && strcmp(merge_into, ev->id) != 0) {
        reg_src surv;
        int found = 0;
        if ((rc = src_by_patient(c, merge_into, &surv, &found, e)) != ST_OK) goto out;
        if (found && surv.person_key && cur_person && surv.person_key != cur_person) {
            char reason[200];
            snprintf(reason, sizeof reason, "Patient/%s replaced-by Patient/%s", ev->id, merge_into);
            char who[160];
            snprintf(who, sizeof who, "%s", raw.source[0] ? raw.source : "replaced-by");
            rc = reg_merge_persons(c, surv.person_key, cur_person, who, "a40-merge", reason, 0, NULL, e);
        }
    }
out:
    free(cand);
    free(ps);
    free(apart);
    buf_free(&ev_json);
    return rc;
}

static status on_delete(registry *r, rdb *c, const char *patient_id, err *e) {
    reg_src old;
    int found = 0;
    status rc = src_by_patient(c, patient_id, &old, &found, e);
    if (rc != ST_OK || !found || !old.person_key) return rc;
    reg_person op;
    reg_raw_to_person(&old.raw, &op);
    if ((rc = blocks_write(r, c, old.src_key, &op, 0, e)) != ST_OK) return rc;
    if ((rc = tf_update(c, &op, -1, NULL, e)) != ST_OK) return rc;
    int64_t now = reg_now_usec();
    rc = rq_exec(c,
                 "UPDATE reg_source SET person_key = NULL, decision = 'deleted', decided_by = 'registry',"
                 " decided_at = ?, updated = ? WHERE src_key = ?",
                 e, "iii", now, now, old.src_key);
    if (rc == ST_OK)
        rc = rq_exec(c,
                     "UPDATE reg_review SET status = 'superseded', decided_by = 'registry', decided_at = ?"
                     " WHERE status = 'open' AND (src_key = ? OR other_key = ?)",
                     e, "iii", now, old.src_key, old.src_key);
    if (rc == ST_OK) rc = reg_person_refresh(c, old.person_key, 0, e);
    return rc;
}

static status on_patient(void *ctx, store_txn *tx, const store_write_event *ev, err *e) {
    registry *r = ctx;
    if (reg_writing) return ST_OK;
    if (!ev->deleted && !ev->res) return ST_OK;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rdb c;
    rdb_of_tx(&c, tx);
    status rc = reg_lock(&c, e);
    if (rc == ST_OK) rc = ev->deleted ? on_delete(r, &c, ev->id, e) : on_write(r, &c, ev, e);
    if (rc != ST_OK && e && !e->where[0]) snprintf(e->where, sizeof e->where, "registry: Patient/%s", ev->id);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
    pthread_mutex_lock(&r->lock);
    r->lat_us[r->nlat % REG_LAT_RING] = us < 4e9 ? (uint32_t)(us + 0.5) : UINT32_MAX;
    r->nlat++;
    r->sum_us += us;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static int u32_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void registry_hook_stats(registry *r, registry_stats *o) {
    memset(o, 0, sizeof *o);
    uint32_t *v = malloc(REG_LAT_RING * sizeof *v);
    if (!v) return;
    pthread_mutex_lock(&r->lock);
    size_t n = r->nlat < REG_LAT_RING ? (size_t)r->nlat : REG_LAT_RING;
    memcpy(v, r->lat_us, n * sizeof *v);
    o->count = r->nlat;
    o->mean_us = r->nlat ? r->sum_us / (double)r->nlat : 0;
    pthread_mutex_unlock(&r->lock);
    if (n) {
        reg_sort(v, n, sizeof *v, u32_cmp);
        o->p50_us = v[(n - 1) / 2];
        o->p90_us = v[(size_t)((double)(n - 1) * 0.90)];
        o->p99_us = v[(size_t)((double)(n - 1) * 0.99)];
        o->max_us = v[n - 1];
    }
    free(v);
}

void registry_stats_json(const registry_stats *st, buf *out) {
    buf_printf(out,
               "{\"hook\":{\"count\":%llu,\"mean_us\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,"
               "\"max_us\":%.0f}}",
               (unsigned long long)st->count, st->mean_us, st->p50_us, st->p90_us, st->p99_us, st->max_us);
}
