/*
 * fs.c — the Fellegi-Sunter model: records, comparison vectors, weights,
 * term frequencies, EM, u from random pairs, and the model file.
 *
 * Invariants:
 *   - A comparison vector holds, per field, a level below the field's level
 *     count or FS_MISSING; fs_compare produces nothing else, and fs_weight
 *     and fs_em treat any other byte as missing (so a vector from disk or a
 *     fuzzer cannot index out of the tables).
 *   - In a model every m and u used in a logarithm is > 0: fs_estimate_u
 *     adds one to every count, fs_em a pseudo-count, and fs_model_from_json
 *     rejects probabilities outside (0, 1].
 *
 * Disk format owned here: the model file (JSON, "format":
 * "concord-fs-model", "version": FS_MODEL_VERSION); see fs_model_to_json.
 */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fields and levels (data) --------------------------------------- */

static const struct {
    const char *name;
    int nlevels;
    const char *levels[FS_MAX_LEVELS];
    double m0[FS_MAX_LEVELS]; /* starting m for EM */
} fields[FS_NFIELDS] = {
    [FS_NHS] = {"nhs_number",
                CMP_NHS_NLEVELS,
                {"agree", "close", "disagree", "far_invalid"},
                {0.9, 0.04, 0.04, 0.02}},
    [FS_FAMILY] = {"family",
                   CMP_NAME_NLEVELS,
                   {"exact", "jw_0.92", "jw_0.85", "phonetic_or_variant", "different"},
                   {0.85, 0.06, 0.03, 0.03, 0.03}},
    [FS_GIVEN] = {"given",
                  CMP_NAME_NLEVELS,
                  {"exact", "jw_0.92", "jw_0.85", "phonetic_or_variant", "different"},
                  {0.85, 0.06, 0.03, 0.03, 0.03}},
    [FS_DOB] = {"birth_date",
                CMP_DOB_NLEVELS,
                {"exact", "day_month_transposed", "one_part_different", "partial_agree", "different"},
                {0.9, 0.02, 0.04, 0.02, 0.02}},
    [FS_SEX] = {"sex", CMP_SEX_NLEVELS, {"same", "different"}, {0.97, 0.03}},
    [FS_POSTCODE] = {"postcode",
                     CMP_PC_NLEVELS,
                     {"full", "sector", "district", "area", "different"},
                     {0.7, 0.05, 0.1, 0.05, 0.1}},
    [FS_ADDRESS] = {"address",
                    CMP_ADDR_NLEVELS,
                    {"exact", "number_and_street", "street", "different"},
                    {0.6, 0.1, 0.1, 0.2}},
    [FS_LOCAL_ID] = {"local_id", FS_LOCAL_NLEVELS, {"agree", "disagree"}, {0.6, 0.4}},
};

const char *fs_field_name(fs_field f) {
    return (unsigned)f < FS_NFIELDS ? fields[f].name : "?";
}
int fs_field_levels(fs_field f) {
    return (unsigned)f < FS_NFIELDS ? fields[f].nlevels : 0;
}

const char *fs_level_name(fs_field f, int lvl) {
    if ((unsigned)f >= FS_NFIELDS) return "?";
    if (lvl == FS_MISSING || lvl < 0 || lvl >= fields[f].nlevels) return "missing";
    return fields[f].levels[lvl];
}

/* ---- records -------------------------------------------------------- */

void reg_person_init(reg_person *p) {
    memset(p, 0, sizeof *p);
}

nhsno_result reg_person_set_nhs(reg_person *p, const char *s, size_t n) {
    nhsno_result r = nhsno_parse(s, n, p->nhs);
    p->nhs_valid = r == NHSNO_VALID;
    if (r == NHSNO_REPEATED) p->nhs[0] = 0; /* a placeholder says nothing */
    return r;
}

void reg_person_set_family(reg_person *p, const char *s, size_t n) {
    cmp_name_prepare(&p->family, s, n);
}
void reg_person_set_given(reg_person *p, const char *s, size_t n) {
    cmp_name_prepare(&p->given, s, n);
}

int reg_person_set_dob_text(reg_person *p, const char *s, size_t n) {
    return cmp_date_parse(s, n, &p->dob);
}

void reg_person_set_dob(reg_person *p, int y, int m, int d) {
    char t[16];
    snprintf(t, sizeof t, "%04d", y);
    cmp_date x = {0, 0, 0};
    if (cmp_date_parse(t, strlen(t), &x) == 0 && m >= 1 && m <= 12) {
        x.m = (int8_t)m;
        snprintf(t, sizeof t, "%04d-%02d-%02d", y, m, d);
        cmp_date full;
        if (d != 0 && cmp_date_parse(t, strlen(t), &full) == 0) x = full;
    }
    p->dob = x;
}

void reg_person_set_sex_text(reg_person *p, const char *s, size_t n) {
    p->sex = (uint8_t)cmp_sex_parse(s, n);
}

cmp_postcode_kind reg_person_set_postcode(reg_person *p, const char *s, size_t n) {
    return cmp_postcode_parse(s, n, &p->postcode);
}

void reg_person_set_address(reg_person *p, const char *s, size_t n) {
    cmp_address_prepare(&p->address, s, n);
}

static uint64_t fnv1a64(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int reg_person_add_local_id(reg_person *p, const char *system, size_t sn, const char *value, size_t vn) {
    if (p->nlocal >= REG_MAX_LOCAL_IDS) return -1;
    reg_local_id *l = &p->local[p->nlocal++];
    l->system = fnv1a64(system, sn);
    l->value = fnv1a64(value, vn);
    return 0;
}

/* ---- comparison ----------------------------------------------------- */

static uint8_t lvl(int x) {
    return x == CMP_MISSING ? FS_MISSING : (uint8_t)x;
}

static int local_id_level(const reg_person *a, const reg_person *b) {
    int shared = 0;
    for (int i = 0; i < a->nlocal; i++)
        for (int j = 0; j < b->nlocal; j++)
            if (a->local[i].system == b->local[j].system) {
                if (a->local[i].value == b->local[j].value) return FS_LOCAL_AGREE;
                shared = 1;
            }
    return shared ? FS_LOCAL_DISAGREE : CMP_MISSING;
}

void fs_compare(const reg_person *a, const reg_person *b, fs_vector *out) {
    out->level[FS_NHS] = lvl(cmp_nhs_level(a->nhs, a->nhs_valid, b->nhs, b->nhs_valid));
    out->level[FS_FAMILY] = lvl(cmp_name_level(&a->family, &b->family, 0));
    out->level[FS_GIVEN] = lvl(cmp_name_level(&a->given, &b->given, 1));
    out->level[FS_DOB] = lvl(cmp_dob_level(a->dob, b->dob));
    out->level[FS_SEX] = lvl(cmp_sex_level((cmp_sex)a->sex, (cmp_sex)b->sex));
    out->level[FS_POSTCODE] = lvl(cmp_postcode_level(&a->postcode, &b->postcode));
    out->level[FS_ADDRESS] = lvl(cmp_address_level(&a->address, &b->address));
    out->level[FS_LOCAL_ID] = lvl(local_id_level(a, b));
}

/* ---- the model and weights ------------------------------------------ */

void fs_model_init(fs_model *m) {
    memset(m, 0, sizeof *m);
    for (int f = 0; f < FS_NFIELDS; f++)
        for (int l = 0; l < fields[f].nlevels; l++) {
            m->m[f][l] = fields[f].m0[l];
            m->u[f][l] = 1.0 / fields[f].nlevels;
        }
    m->lambda = 1e-4;
    m->tf[FS_FAMILY] = m->tf[FS_GIVEN] = 1;
    m->tf_min_u = 1e-5;
    m->link_weight = 20.0;
    m->review_weight = 10.0;
}

/* The value a term-frequency lookup is made on. */
static const char *tf_value(const reg_person *p, fs_field f, size_t *n) {
    switch (f) {
    case FS_FAMILY: *n = p->family.len; return p->family.s;
    case FS_GIVEN: *n = p->given.len; return p->given.s;
    case FS_POSTCODE: *n = strlen(p->postcode.pc); return p->postcode.pc;
    default: *n = 0; return NULL;
    }
}

double fs_weight(const fs_model *m, const fs_vector *v, const reg_person *a, const reg_person *b,
                 const fs_tf *tf, double contrib[FS_NFIELDS]) {
    double w = 0.0;
    for (int f = 0; f < FS_NFIELDS; f++) {
        int l = v->level[f];
        double c = 0.0;
        if (l < fields[f].nlevels) {
            double u = m->u[f][l];
            if (l == 0 && m->tf[f] && tf && tf->freq && a && b) {
                size_t n;
                const char *val = tf_value(a, (fs_field)f, &n);
                if (val && n > 0) {
                    double fr = tf->freq(tf->arg, (fs_field)f, val, n);
                    if (fr >= 0.0) u = fr > m->tf_min_u ? fr : m->tf_min_u;
                }
            }
            c = log2(m->m[f][l] / u);
        }
        if (contrib) contrib[f] = c;
        w += c;
    }
    return w;
}

static double logit2(double p) {
    return log2(p / (1.0 - p));
}

double fs_probability(const fs_model *m, double weight) {
    double x = weight + logit2(m->lambda);
    return 1.0 / (1.0 + exp2(-x));
}

double fs_weight_for_probability(const fs_model *m, double p) {
    return logit2(p) - logit2(m->lambda);
}

fs_decision fs_decide(const fs_model *m, double weight) {
    if (weight >= m->link_weight) return FS_LINK;
    if (weight >= m->review_weight) return FS_REVIEW;
    return FS_NEW;
}

void fs_explain_json(const fs_model *m, const fs_vector *v, const double contrib[FS_NFIELDS], buf *out) {
    double w = 0.0;
    for (int f = 0; f < FS_NFIELDS; f++)
        w += contrib[f];
    buf_printf(out, "{\"weight\":%.4f,\"probability\":%.6g,\"fields\":[", w, fs_probability(m, w));
    for (int f = 0; f < FS_NFIELDS; f++)
        buf_printf(out, "%s{\"field\":\"%s\",\"level\":\"%s\",\"weight\":%.4f}", f ? "," : "", fields[f].name,
                   fs_level_name((fs_field)f, v->level[f]), contrib[f]);
    buf_puts(out, "]}");
}

/* ---- term-frequency table -------------------------------------------- */

typedef struct tf_entry {
    uint64_t h;
    uint32_t count;
    uint8_t used, field, len;
    char s[CMP_NAME_MAX];
} tf_entry;

struct fs_tf_table {
    tf_entry *e;
    size_t cap, used;
    double total[FS_NFIELDS];
};

static uint64_t tf_hash(int field, const char *s, size_t n) {
    return fnv1a64(s, n) ^ ((uint64_t)field << 56);
}

static tf_entry *tf_slot(fs_tf_table *t, int field, const char *s, size_t n, int create) {
    if (n >= CMP_NAME_MAX) n = CMP_NAME_MAX - 1;
    uint64_t h = tf_hash(field, s, n);
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        tf_entry *x = &t->e[i];
        if (!x->used) {
            if (!create) return NULL;
            x->used = 1;
            x->h = h;
            x->field = (uint8_t)field;
            x->len = (uint8_t)n;
            memcpy(x->s, s, n);
            x->s[n] = 0;
            t->used++;
            return x;
        }
        if (x->h == h && x->field == field && x->len == n && memcmp(x->s, s, n) == 0) return x;
    }
}

static int tf_grow(fs_tf_table *t) {
    size_t ncap = t->cap ? t->cap * 2 : 1024;
    tf_entry *ne = calloc(ncap, sizeof *ne);
    if (!ne) return -1;
    tf_entry *old = t->e;
    size_t ocap = t->cap;
    t->e = ne;
    t->cap = ncap;
    t->used = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].used) {
            tf_entry *x = tf_slot(t, old[i].field, old[i].s, old[i].len, 1);
            x->count = old[i].count;
        }
    free(old);
    return 0;
}

static const fs_field tf_fields[] = {FS_FAMILY, FS_GIVEN, FS_POSTCODE};

void fs_tf_table_add(fs_tf_table *t, const reg_person *p, int delta) {
    for (size_t k = 0; k < sizeof tf_fields / sizeof tf_fields[0]; k++) {
        fs_field f = tf_fields[k];
        size_t n;
        const char *v = tf_value(p, f, &n);
        if (!v || n == 0) continue;
        if ((t->used + 1) * 2 > t->cap && tf_grow(t) != 0) return;
        tf_entry *x = tf_slot(t, f, v, n, delta > 0);
        if (!x) continue;
        if (delta > 0)
            x->count += (uint32_t)delta;
        else
            x->count = x->count >= (uint32_t)-delta ? x->count - (uint32_t)-delta : 0;
        t->total[f] += delta;
        if (t->total[f] < 0) t->total[f] = 0;
    }
}

fs_tf_table *fs_tf_table_build(const reg_person *p, size_t n) {
    fs_tf_table *t = calloc(1, sizeof *t);
    if (!t || tf_grow(t) != 0) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        fs_tf_table_add(t, &p[i], 1);
    return t;
}

double fs_tf_table_freq(void *table, fs_field field, const char *value, size_t n) {
    fs_tf_table *t = table;
    if (!t || (unsigned)field >= FS_NFIELDS || t->total[field] <= 0) return -1.0;
    tf_entry *x = tf_slot(t, field, value, n, 0);
    if (!x || x->count == 0) return -1.0;
    return (double)x->count / t->total[field];
}

void fs_tf_table_free(fs_tf_table *t) {
    if (!t) return;
    free(t->e);
    free(t);
}

/* ---- estimation ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

status fs_estimate_u(fs_model *m, const reg_person *p, size_t n, size_t npairs, uint64_t seed, err *e) {
    if (n < 2)
        return err_set(e, ST_INVALID, "value", "fs_estimate_u", "need at least two records, got %zu", n);
    double count[FS_NFIELDS][FS_MAX_LEVELS] = {{0}};
    uint64_t s = seed;
    for (size_t k = 0; k < npairs; k++) {
        size_t i = (size_t)(splitmix64(&s) % n);
        size_t j = (size_t)(splitmix64(&s) % (n - 1));
        if (j >= i) j++;
        fs_vector v;
        fs_compare(&p[i], &p[j], &v);
        for (int f = 0; f < FS_NFIELDS; f++)
            if (v.level[f] < fields[f].nlevels) count[f][v.level[f]] += 1.0;
    }
    for (int f = 0; f < FS_NFIELDS; f++) {
        double total = 0.0;
        for (int l = 0; l < fields[f].nlevels; l++)
            total += count[f][l];
        for (int l = 0; l < fields[f].nlevels; l++)
            m->u[f][l] = (count[f][l] + 1.0) / (total + fields[f].nlevels);
    }
    return ST_OK;
}

void fs_em_opts_default(fs_em_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_iter = 500;
    o->tol = 1e-7;
    o->prior_count = 0.1;
    o->start_lambda = 0.1;
}

/* Distinct vectors and their multiplicities (open addressing on the key). */
typedef struct patterns {
    uint64_t *key;
    double *count;
    size_t cap, n;
} patterns;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Keys are stored +1 so that 0 marks an empty slot (the all-zero vector is a
 * real pattern); a vector with every byte 0xFF is all-missing and is dropped
 * before insertion, so key + 1 cannot wrap. */
static int patterns_add(patterns *p, uint64_t key) {
    if ((p->n + 1) * 2 > p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 4096;
        uint64_t *nk = calloc(ncap, sizeof *nk);
        double *nc = calloc(ncap, sizeof *nc);
        if (!nk || !nc) {
            free(nk);
            free(nc);
            return -1;
        }
        for (size_t i = 0; i < p->cap; i++) {
            if (!p->key[i]) continue;
            size_t j = mix64(p->key[i]) & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = p->key[i];
            nc[j] = p->count[i];
        }
        free(p->key);
        free(p->count);
        p->key = nk;
        p->count = nc;
        p->cap = ncap;
    }
    uint64_t k1 = key + 1;
    size_t j = mix64(k1) & (p->cap - 1);
    while (p->key[j] && p->key[j] != k1)
        j = (j + 1) & (p->cap - 1);
    if (!p->key[j]) {
        p->key[j] = k1;
        p->n++;
    }
    p->count[j] += 1.0;
    return 0;
}

status fs_em(fs_model *m, const fs_vector *v, size_t n, const fs_em_opts *opts, fs_em_result *res, err *e) {
    status rc = ST_OK;
    fs_em_opts o;
    if (opts)
        o = *opts;
    else
        fs_em_opts_default(&o);
    patterns pt = {0};
    uint8_t *lv = NULL; /* compacted patterns: level per field */
    double *cnt = NULL;
    if (n == 0) {
        rc = err_set(e, ST_INVALID, "value", "fs_em", "no comparison vectors");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        fs_vector x = v[i];
        int any = 0;
        for (int f = 0; f < FS_NFIELDS; f++) {
            if (x.level[f] >= fields[f].nlevels || o.fixed[f]) x.level[f] = FS_MISSING;
            any |= x.level[f] != FS_MISSING;
        }
        if (!any) continue; /* says nothing about anything */
        if (patterns_add(&pt, x.key) != 0) {
            rc = err_set(e, ST_NOMEM, "exception", "fs_em", "out of memory for %zu patterns", pt.n);
            goto out;
        }
    }
    if (pt.n == 0) {
        rc = err_set(e, ST_INVALID, "value", "fs_em", "every vector is missing every field");
        goto out;
    }
    size_t np = pt.n;
    lv = malloc(np * FS_NFIELDS);
    cnt = malloc(np * sizeof *cnt);
    if (!lv || !cnt) {
        rc = err_set(e, ST_NOMEM, "exception", "fs_em", "out of memory");
        goto out;
    }
    double total = 0.0;
    for (size_t i = 0, k = 0; i < pt.cap; i++) {
        if (!pt.key[i]) continue;
        fs_vector x;
        x.key = pt.key[i] - 1;
        memcpy(lv + k * FS_NFIELDS, x.level, FS_NFIELDS);
        cnt[k] = pt.count[i];
        total += cnt[k];
        k++;
    }
    double lambda = o.start_lambda > 0 && o.start_lambda < 1 ? o.start_lambda : 0.1;
    double loglik = 0.0;
    int it = 0, converged = 0;
    for (it = 1; it <= o.max_iter; it++) {
        double lm[FS_NFIELDS][FS_MAX_LEVELS], lu[FS_NFIELDS][FS_MAX_LEVELS];
        for (int f = 0; f < FS_NFIELDS; f++)
            for (int l = 0; l < fields[f].nlevels; l++) {
                lm[f][l] = log(m->m[f][l] > 0 ? m->m[f][l] : 1e-300);
                lu[f][l] = log(m->u[f][l] > 0 ? m->u[f][l] : 1e-300);
            }
        double llam = log(lambda), l1lam = log(1.0 - lambda);
        double am[FS_NFIELDS][FS_MAX_LEVELS] = {{0}}, au[FS_NFIELDS][FS_MAX_LEVELS] = {{0}};
        double gsum = 0.0;
        loglik = 0.0;
        for (size_t k = 0; k < np; k++) {
            const uint8_t *x = lv + k * FS_NFIELDS;
            double a = llam, b = l1lam;
            for (int f = 0; f < FS_NFIELDS; f++)
                if (x[f] != FS_MISSING) {
                    a += lm[f][x[f]];
                    b += lu[f][x[f]];
                }
            double hi = a > b ? a : b;
            double lse = hi + log(exp(a - hi) + exp(b - hi));
            double g = exp(a - lse);
            loglik += cnt[k] * lse;
            double cg = cnt[k] * g, cn = cnt[k] - cg;
            gsum += cg;
            for (int f = 0; f < FS_NFIELDS; f++)
                if (x[f] != FS_MISSING) {
                    am[f][x[f]] += cg;
                    au[f][x[f]] += cn;
                }
        }
        double delta = 0.0;
        for (int f = 0; f < FS_NFIELDS; f++) {
            if (o.fixed[f]) continue;
            int L = fields[f].nlevels;
            double sm = 0.0, su = 0.0;
            for (int l = 0; l < L; l++)
                sm += am[f][l], su += au[f][l];
            if (sm + su <= 0.0) continue; /* the field is missing in every vector */
            for (int l = 0; l < L; l++) {
                double nm = (am[f][l] + o.prior_count) / (sm + o.prior_count * L);
                delta = fmax(delta, fabs(nm - m->m[f][l]));
                m->m[f][l] = nm;
                if (o.estimate_u) {
                    double nu = (au[f][l] + o.prior_count) / (su + o.prior_count * L);
                    delta = fmax(delta, fabs(nu - m->u[f][l]));
                    m->u[f][l] = nu;
                }
            }
        }
        double nl = gsum / total;
        if (nl < 1e-12) nl = 1e-12;
        if (nl > 1 - 1e-12) nl = 1 - 1e-12;
        delta = fmax(delta, fabs(nl - lambda));
        lambda = nl;
        if (delta < o.tol) {
            converged = 1;
            break;
        }
    }
    if (res) {
        res->iterations = it > o.max_iter ? o.max_iter : it;
        res->converged = converged;
        res->lambda = lambda;
        res->loglik = loglik;
        res->patterns = np;
    }
out:
    free(pt.key);
    free(pt.count);
    free(lv);
    free(cnt);
    return rc;
}

double fs_estimate_lambda(const double *weights, size_t nweights, double total_pairs) {
    if (nweights == 0 || total_pairs <= 0) return 1e-12;
    double lambda = 0.5 * (double)nweights / total_pairs;
    if (lambda >= 0.5) lambda = 0.25;
    for (int it = 0; it < 200; it++) {
        double lo = logit2(lambda), s = 0.0;
        for (size_t i = 0; i < nweights; i++)
            s += 1.0 / (1.0 + exp2(-(weights[i] + lo)));
        double nl = s / total_pairs;
        if (nl < 1e-15) nl = 1e-15;
        if (nl > 0.5) nl = 0.5;
        if (fabs(nl - lambda) <= 1e-9 * lambda) {
            lambda = nl;
            break;
        }
        lambda = nl;
    }
    return lambda;
}

/* ---- the model file -------------------------------------------------- */

#define FS_FORMAT "concord-fs-model"

void fs_model_to_json(const fs_model *m, buf *out) {
    buf_printf(out,
               "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"lambda\": %.17g,\n  \"tf_min_u\": %.17g,\n",
               FS_FORMAT, FS_MODEL_VERSION, m->lambda, m->tf_min_u);
    buf_printf(out, "  \"thresholds\": {\"link\": %.17g, \"review\": %.17g},\n  \"fields\": [\n",
               m->link_weight, m->review_weight);
    for (int f = 0; f < FS_NFIELDS; f++) {
        buf_printf(out, "    {\"name\": \"%s\", \"tf\": %s, \"levels\": [", fields[f].name,
                   m->tf[f] ? "true" : "false");
        for (int l = 0; l < fields[f].nlevels; l++)
            buf_printf(out, "%s\n      {\"name\": \"%s\", \"m\": %.17g, \"u\": %.17g}", l ? "," : "",
                       fields[f].levels[l], m->m[f][l], m->u[f][l]);
        buf_printf(out, "]}%s\n", f + 1 < FS_NFIELDS ? "," : "");
    }
    buf_puts(out, "  ]\n}\n");
}

static status get_number(json_t *o, const char *key, double lo, double hi, double *out, const char *where,
                         err *e) {
    json_t *x = json_object_get(o, key);
    if (!json_is_number(x))
        return err_set(e, ST_INVALID, "required", where, "\"%s\" missing or not a number", key);
    double v = json_number_value(x);
    if (!(v >= lo && v <= hi))
        return err_set(e, ST_INVALID, "value", where, "\"%s\" = %g outside [%g, %g]", key, v, lo, hi);
    *out = v;
    return ST_OK;
}

status fs_model_from_json(const char *text, size_t len, fs_model *out, err *e) {
    status rc = ST_OK;
    json_error_t je;
    fs_model m;
    fs_model_init(&m);
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        char where[64];
        snprintf(where, sizeof where, "line %d column %d", je.line, je.column);
        rc = err_set(e, ST_INVALID, "structure", where, "model file is not JSON: %s", je.text);
        goto out;
    }
    json_t *fmt = json_object_get(root, "format");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), FS_FORMAT) != 0) {
        rc = err_set(e, ST_INVALID, "value", "format", "not a concord Fellegi-Sunter model (format \"%s\")",
                     FS_FORMAT);
        goto out;
    }
    json_t *ver = json_object_get(root, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) != FS_MODEL_VERSION) {
        rc = err_set(e, ST_UNSUPPORTED, "not-supported", "version", "model version %lld, this build reads %d",
                     json_is_integer(ver) ? (long long)json_integer_value(ver) : -1LL, FS_MODEL_VERSION);
        goto out;
    }
    if ((rc = get_number(root, "lambda", 1e-300, 1.0 - 1e-12, &m.lambda, "lambda", e)) != ST_OK) goto out;
    if ((rc = get_number(root, "tf_min_u", 1e-300, 1.0, &m.tf_min_u, "tf_min_u", e)) != ST_OK) goto out;
    json_t *th = json_object_get(root, "thresholds");
    if (!json_is_object(th)) {
        rc = err_set(e, ST_INVALID, "required", "thresholds", "\"thresholds\" missing");
        goto out;
    }
    if ((rc = get_number(th, "link", -1e6, 1e6, &m.link_weight, "thresholds.link", e)) != ST_OK) goto out;
    if ((rc = get_number(th, "review", -1e6, 1e6, &m.review_weight, "thresholds.review", e)) != ST_OK)
        goto out;
    if (m.review_weight > m.link_weight) {
        rc = err_set(e, ST_INVALID, "value", "thresholds", "review threshold %g above link threshold %g",
                     m.review_weight, m.link_weight);
        goto out;
    }
    json_t *fa = json_object_get(root, "fields");
    if (!json_is_array(fa) || json_array_size(fa) != FS_NFIELDS) {
        rc = err_set(e, ST_INVALID, "structure", "fields", "\"fields\" must be an array of %d fields",
                     FS_NFIELDS);
        goto out;
    }
    for (int f = 0; f < FS_NFIELDS; f++) {
        char where[96];
        /* fields are matched by name, in any order */
        json_t *fo = NULL;
        for (size_t k = 0; k < json_array_size(fa); k++) {
            json_t *c = json_array_get(fa, k);
            json_t *nm = json_object_get(c, "name");
            if (json_is_string(nm) && strcmp(json_string_value(nm), fields[f].name) == 0) fo = c;
        }
        if (!fo) {
            rc = err_set(e, ST_INVALID, "required", "fields", "field \"%s\" missing", fields[f].name);
            goto out;
        }
        json_t *tf = json_object_get(fo, "tf");
        m.tf[f] = json_is_true(tf);
        json_t *la = json_object_get(fo, "levels");
        if (!json_is_array(la) || (int)json_array_size(la) != fields[f].nlevels) {
            rc = err_set(e, ST_INVALID, "structure", fields[f].name, "field \"%s\" must have %d levels",
                         fields[f].name, fields[f].nlevels);
            goto out;
        }
        double sm = 0.0, su = 0.0;
        for (int l = 0; l < fields[f].nlevels; l++) {
            json_t *lo = json_array_get(la, (size_t)l);
            json_t *nm = json_object_get(lo, "name");
            snprintf(where, sizeof where, "%s.levels[%d]", fields[f].name, l);
            if (!json_is_string(nm) || strcmp(json_string_value(nm), fields[f].levels[l]) != 0) {
                rc = err_set(e, ST_INVALID, "value", where, "level %d of \"%s\" must be \"%s\"", l,
                             fields[f].name, fields[f].levels[l]);
                goto out;
            }
            if ((rc = get_number(lo, "m", 1e-300, 1.0, &m.m[f][l], where, e)) != ST_OK) goto out;
            if ((rc = get_number(lo, "u", 1e-300, 1.0, &m.u[f][l], where, e)) != ST_OK) goto out;
            sm += m.m[f][l];
            su += m.u[f][l];
        }
        if (fabs(sm - 1.0) > 1e-6 || fabs(su - 1.0) > 1e-6) {
            rc = err_set(e, ST_INVALID, "value", fields[f].name, "m or u of \"%s\" do not sum to 1 (%g, %g)",
                         fields[f].name, sm, su);
            goto out;
        }
    }
    *out = m;
out:
    json_decref(root);
    return rc;
}

status fs_model_save(const fs_model *m, const char *path, err *e) {
    status rc = ST_OK;
    buf b = {0};
    char tmp[4096];
    int fd = -1;
    fs_model_to_json(m, &b);
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        rc = err_set(e, ST_INVALID, "value", path, "path too long");
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = err_set(e, ST_IO, "exception", tmp, "cannot create: %s", strerror(errno));
        goto out;
    }
    for (size_t off = 0; off < b.len;) {
        ssize_t w = write(fd, b.p + off, b.len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            rc = err_set(e, ST_IO, "exception", tmp, "write: %s", strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = err_set(e, ST_IO, "exception", tmp, "fsync: %s", strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = err_set(e, ST_IO, "exception", path, "rename: %s", strerror(errno));
        goto out;
    }
out:
    if (fd >= 0) close(fd);
    if (rc != ST_OK) unlink(tmp);
    buf_free(&b);
    return rc;
}

status fs_model_load(fs_model *m, const char *path, err *e) {
    status rc = ST_OK;
    buf b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        rc = err_set(e, errno == ENOENT ? ST_NOT_FOUND : ST_IO, errno == ENOENT ? "not-found" : "exception",
                     path, "cannot open model: %s", strerror(errno));
        goto out;
    }
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + got > (1u << 20)) {
            rc = err_set(e, ST_TOO_LARGE, "too-costly", path, "model file over 1 MiB");
            goto out;
        }
        buf_append(&b, chunk, got);
    }
    if (ferror(f)) {
        rc = err_set(e, ST_IO, "exception", path, "read error");
        goto out;
    }
    rc = fs_model_from_json(b.p ? b.p : "", b.len, m, e);
    if (rc != ST_OK && e && !e->where[0]) snprintf(e->where, sizeof e->where, "%s", path);
out:
    if (f) fclose(f);
    buf_free(&b);
    return rc;
}
