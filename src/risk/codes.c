/*
 * codes.c — the code lists and weights of risk stratification, read from
 * the data files in data/risk/ (each file's header cites the paper and
 * table its values come from).
 *
 * Everything code-keyed goes into one open-addressing hash of
 * "<system>:<code>" -> what the code contributes (eFI deficits, Charlson
 * conditions, model condition groups, HFRS points), so that a person's
 * codes are looked up once each. ICD-10 entries are prefixes (dots
 * removed): a code contributes the union of the entries of each of its
 * prefixes ("I252" -> "I", "I2", "I25", "I252"). SNOMED CT entries are
 * exact concepts.
 *
 * Invariant: a loaded risk_codes is never modified, so threads share it.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "risk_int.h"

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static rk_codeinfo *slot_get(risk_codes *c, const char *key, int create) {
    size_t mask = c->nslots - 1;
    for (size_t i = hash_str(key) & mask;; i = (i + 1) & mask) {
        struct rk_code_slot *sl = &c->slots[i];
        if (!sl->key) {
            if (!create) return NULL;
            sl->key = strdup(key);
            if (!sl->key) abort();
            c->nkeys++;
            return &sl->info;
        }
        if (!strcmp(sl->key, key)) return &sl->info;
    }
}

static const rk_codeinfo *slot_find(const risk_codes *c, const char *key) {
    size_t mask = c->nslots - 1;
    for (size_t i = hash_str(key) & mask;; i = (i + 1) & mask) {
        const struct rk_code_slot *sl = &c->slots[i];
        if (!sl->key) return NULL;
        if (!strcmp(sl->key, key)) return &sl->info;
    }
}

rk_codeinfo rk_code_lookup(const risk_codes *c, char sys, const char *code) {
    rk_codeinfo out = {0, 0, 0, 0};
    char key[40];
    size_t n = strlen(code);
    if (n > 30) return out;
    if (sys == 's') {
        snprintf(key, sizeof key, "s:%s", code);
        const rk_codeinfo *ci = slot_find(c, key);
        if (ci) out = *ci;
        return out;
    }
    if (sys != 'i') return out;
    key[0] = 'i';
    key[1] = ':';
    for (size_t k = 1; k <= n; k++) {
        memcpy(key + 2, code, k);
        key[2 + k] = 0;
        const rk_codeinfo *ci = slot_find(c, key);
        if (!ci) continue;
        out.efi |= ci->efi;
        out.charlson |= ci->charlson;
        out.ltc |= ci->ltc;
        if (ci->hfrs_tenths > out.hfrs_tenths) out.hfrs_tenths = ci->hfrs_tenths;
    }
    return out;
}

/* ---- reading the files --------------------------------------------------------------- */

typedef struct tsv {
    FILE *f;
    char path[600];
    char *line;
    size_t cap;
    int lineno;
    char *field[16];
    int nf;
} tsv;

static status tsv_open(tsv *t, const char *dir, const char *name, err *e) {
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s/%s", dir, name);
    t->f = fopen(t->path, "r");
    if (!t->f)
        return err_set(e, ST_NOT_FOUND, "not-found", t->path, "cannot read %s: %s (use --risk-data DIR)",
                       t->path, strerror(errno));
    return ST_OK;
}

/* Next data line split on tabs; 0 at the end. */
static int tsv_next(tsv *t) {
    for (;;) {
        ssize_t n = getline(&t->line, &t->cap, t->f);
        if (n <= 0) return 0;
        t->lineno++;
        t->line[strcspn(t->line, "\r\n")] = 0;
        if (!t->line[0] || t->line[0] == '#') continue;
        t->nf = 0;
        for (char *p = t->line; t->nf < 16;) {
            t->field[t->nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        return 1;
    }
}

static status tsv_bad(tsv *t, err *e, const char *what) {
    char where[640];
    snprintf(where, sizeof where, "%s:%d", t->path, t->lineno);
    return err_set(e, ST_INVALID, "invalid", where, "%s: %s", where, what);
}

static void tsv_close(tsv *t) {
    if (t->f) fclose(t->f);
    free(t->line);
    t->f = NULL;
    t->line = NULL;
}

/* ICD-10 prefix as stored: upper case, alphanumerics only. */
static void icd_key(const char *code, char *key, size_t n) {
    size_t k = snprintf(key, n, "i:");
    for (const char *p = code; *p && k + 1 < n; p++)
        if (isalnum((unsigned char)*p)) key[k++] = (char)toupper((unsigned char)*p);
    key[k] = 0;
}

static status load_efi(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "efi.tsv", e);
    if (rc != ST_OK) return rc;
    int seen[RK_EFI_DEFICITS + 1] = {0};
    while (tsv_next(&t)) {
        if (t.nf < 4) {
            rc = tsv_bad(&t, e, "expected deficit, name, kind, code");
            break;
        }
        int d = atoi(t.field[0]);
        if (d < 1 || d > RK_EFI_DEFICITS) {
            rc = tsv_bad(&t, e, "deficit number must be 1..36");
            break;
        }
        seen[d] = 1;
        snprintf(c->efi_name[d - 1], sizeof c->efi_name[0], "%s", t.field[1]);
        const char *kind = t.field[2], *code = t.field[3];
        if (!strcmp(kind, "code")) {
            char key[48];
            snprintf(key, sizeof key, "s:%s", code);
            slot_get(c, key, 1)->efi |= 1ULL << (d - 1);
        } else if (!strcmp(kind, "rule")) {
            if (!strncmp(code, "active_medicines>=", 18)) {
                c->efi_rule_polypharmacy = d;
                c->efi_polypharmacy_min = atoi(code + 18);
            } else if (!strcmp(code, "social_care_or_care_home")) {
                c->efi_rule_care = d;
            } else {
                rc = tsv_bad(&t, e, "unknown rule");
                break;
            }
        } else if (strcmp(kind, "none") != 0) {
            rc = tsv_bad(&t, e, "kind must be code, rule or none");
            break;
        }
    }
    for (int d = 1; rc == ST_OK && d <= RK_EFI_DEFICITS; d++)
        if (!seen[d]) rc = err_set(e, ST_INVALID, "invalid", t.path, "%s: deficit %d is missing", t.path, d);
    tsv_close(&t);
    return rc;
}

static status load_hfrs(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "hfrs.tsv", e);
    if (rc != ST_OK) return rc;
    while (tsv_next(&t)) {
        if (t.nf < 2 || strlen(t.field[0]) != 3) {
            rc = tsv_bad(&t, e, "expected a three-character ICD-10 code and its points");
            break;
        }
        double pts = strtod(t.field[1], NULL);
        char key[16];
        icd_key(t.field[0], key, sizeof key);
        slot_get(c, key, 1)->hfrs_tenths = (int)lround(pts * 10);
        c->hfrs_codes++;
    }
    tsv_close(&t);
    return rc;
}

static status load_charlson(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "charlson.tsv", e);
    if (rc != ST_OK) return rc;
    int n = 0;
    while (tsv_next(&t)) {
        if (t.nf < 6) {
            rc = tsv_bad(&t, e, "expected no, id, name, w1987, w2011, prefixes");
            break;
        }
        int k = atoi(t.field[0]);
        if (k < 1 || k > RK_CHARLSON) {
            rc = tsv_bad(&t, e, "condition number must be 1..17");
            break;
        }
        snprintf(c->charlson_id[k - 1], sizeof c->charlson_id[0], "%s", t.field[1]);
        snprintf(c->charlson_name[k - 1], sizeof c->charlson_name[0], "%s", t.field[2]);
        c->charlson_w1987[k - 1] = atoi(t.field[3]);
        c->charlson_w2011[k - 1] = atoi(t.field[4]);
        for (char *p = t.field[5]; *p;) {
            size_t len = strcspn(p, " ");
            if (len) {
                char code[16], key[20];
                snprintf(code, sizeof code, "%.*s", (int)(len < 15 ? len : 15), p);
                icd_key(code, key, sizeof key);
                slot_get(c, key, 1)->charlson |= 1u << (k - 1);
            }
            p += len;
            while (*p == ' ')
                p++;
        }
        n++;
    }
    if (rc == ST_OK && n != RK_CHARLSON)
        rc = err_set(e, ST_INVALID, "invalid", t.path, "%s: %d conditions, expected 17", t.path, n);
    tsv_close(&t);
    return rc;
}

static status load_ltc(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "ltc.tsv", e);
    if (rc != ST_OK) return rc;
    while (tsv_next(&t)) {
        if (t.nf < 4) {
            rc = tsv_bad(&t, e, "expected group, name, system, code");
            break;
        }
        int g = -1;
        for (int i = 0; i < c->nltc; i++)
            if (!strcmp(c->ltc_id[i], t.field[0])) g = i;
        if (g < 0) {
            if (c->nltc == RK_MAX_LTC) {
                rc = tsv_bad(&t, e, "too many condition groups");
                break;
            }
            g = c->nltc++;
            snprintf(c->ltc_id[g], sizeof c->ltc_id[0], "%s", t.field[0]);
            snprintf(c->ltc_name[g], sizeof c->ltc_name[0], "%s", t.field[1]);
        }
        char key[48];
        if (!strcmp(t.field[2], "snomed"))
            snprintf(key, sizeof key, "s:%s", t.field[3]);
        else if (!strcmp(t.field[2], "icd10"))
            icd_key(t.field[3], key, sizeof key);
        else {
            rc = tsv_bad(&t, e, "system must be snomed or icd10");
            break;
        }
        slot_get(c, key, 1)->ltc |= 1u << g;
    }
    tsv_close(&t);
    return rc;
}

static status load_lace(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "lace.tsv", e);
    if (rc != ST_OK) return rc;
    while (tsv_next(&t)) {
        const char *comp = "LACE";
        const char *at = t.nf >= 4 && strlen(t.field[0]) == 1 ? strchr(comp, t.field[0][0]) : NULL;
        if (!at) {
            rc = tsv_bad(&t, e, "expected component (L, A, C or E), from, to, points");
            break;
        }
        int k = (int)(at - comp);
        if (c->lace_rows[k] == 8) {
            rc = tsv_bad(&t, e, "too many rows for the component");
            break;
        }
        int *row = c->lace_points[k][c->lace_rows[k]++];
        row[0] = atoi(t.field[1]);
        row[1] = atoi(t.field[2]);
        row[2] = atoi(t.field[3]);
    }
    tsv_close(&t);
    return rc;
}

static status load_bands(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "bands.tsv", e);
    if (rc != ST_OK) return rc;
    while (tsv_next(&t)) {
        rk_bands *b = NULL;
        if (t.nf >= 4 && !strcmp(t.field[0], "efi"))
            b = &c->bands_efi;
        else if (t.nf >= 4 && !strcmp(t.field[0], "hfrs"))
            b = &c->bands_hfrs;
        else if (t.nf >= 4 && !strcmp(t.field[0], "lace"))
            b = &c->bands_lace;
        if (!b || b->n == RK_MAX_BANDS) {
            rc = tsv_bad(&t, e, "expected index (efi, hfrs, lace), band, compare, bound");
            break;
        }
        rk_band *x = &b->v[b->n++];
        snprintf(x->name, sizeof x->name, "%s", t.field[1]);
        if (!strcmp(t.field[2], "lt"))
            x->cmp = 0;
        else if (!strcmp(t.field[2], "le"))
            x->cmp = 1;
        else
            x->cmp = 2;
        x->bound = x->cmp == 2 ? INFINITY : strtod(t.field[3], NULL);
    }
    tsv_close(&t);
    return rc;
}

static status load_indices(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "indices.tsv", e);
    if (rc != ST_OK) return rc;
    while (tsv_next(&t)) {
        rk_index_def *d = NULL;
        if (t.nf >= 3 && !strcmp(t.field[0], "efi"))
            d = &c->def_efi;
        else if (t.nf >= 3 && !strcmp(t.field[0], "hfrs"))
            d = &c->def_hfrs;
        else if (t.nf >= 3 && !strcmp(t.field[0], "charlson"))
            d = &c->def_charlson;
        else if (t.nf >= 3 && !strcmp(t.field[0], "lace"))
            d = &c->def_lace;
        if (!d) {
            rc = tsv_bad(&t, e, "expected index, min_age, lookback_days");
            break;
        }
        d->min_age = atoi(t.field[1]);
        d->lookback_days = atoi(t.field[2]);
    }
    tsv_close(&t);
    return rc;
}

static status load_tiers(risk_codes *c, err *e) {
    tsv t;
    status rc = tsv_open(&t, c->dir, "tiers.tsv", e);
    if (rc != ST_OK) return rc;
    while (tsv_next(&t)) {
        if (t.nf < 2 || c->tiers.n == RISK_MAX_TIERS) {
            rc = tsv_bad(&t, e, "expected tier, percent");
            break;
        }
        int k = c->tiers.n++;
        snprintf(c->tiers.name[k], sizeof c->tiers.name[0], "%s", t.field[0]);
        c->tiers.percent[k] = strcmp(t.field[1], "-") ? strtod(t.field[1], NULL) : -1;
    }
    tsv_close(&t);
    return rc;
}

status risk_codes_load(const char *dir, risk_codes **out, err *e) {
    *out = NULL;
    risk_codes *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    pthread_mutex_init(&c->sens_lock, NULL);
    c->nslots = 4096;
    c->slots = calloc(c->nslots, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    }
    status rc = load_efi(c, e);
    if (rc == ST_OK) rc = load_hfrs(c, e);
    if (rc == ST_OK) rc = load_charlson(c, e);
    if (rc == ST_OK) rc = load_ltc(c, e);
    if (rc == ST_OK) rc = load_lace(c, e);
    if (rc == ST_OK) rc = load_bands(c, e);
    if (rc == ST_OK) rc = load_indices(c, e);
    if (rc == ST_OK) rc = load_tiers(c, e);
    if (rc == ST_OK && c->nkeys * 2 > c->nslots)
        rc = err_set(e, ST_INVALID, "too-costly", dir, "too many codes (%zu) for the lookup table", c->nkeys);
    if (rc != ST_OK) {
        risk_codes_free(c);
        return rc;
    }
    *out = c;
    return ST_OK;
}

void risk_codes_free(risk_codes *c) {
    if (!c) return;
    for (size_t i = 0; i < c->nslots; i++)
        free(c->slots[i].key);
    free(c->slots);
    pthread_mutex_destroy(&c->sens_lock);
    free(c);
}

void risk_tiers_default(const risk_codes *c, risk_tiers *t) {
    if (c && c->tiers.n >= 2) {
        *t = c->tiers;
        return;
    }
    risk_tiers_parse("0.5,4.5,15", t, NULL);
}

status risk_tiers_parse(const char *spec, risk_tiers *t, err *e) {
    static const char *const names4[] = {"very-high", "high", "moderate", "low"};
    memset(t, 0, sizeof *t);
    double v[RISK_MAX_TIERS];
    int n = 0;
    double sum = 0;
    for (const char *p = spec; *p;) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || x <= 0 || n == RISK_MAX_TIERS - 1)
            return err_set(e, ST_INVALID, "value", "--tiers",
                           "--tiers takes percentages like 0.5,4.5,15, not '%s'", spec);
        v[n++] = x;
        sum += x;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return err_set(e, ST_INVALID, "value", "--tiers", "--tiers: unexpected '%s'", p);
    }
    if (!n || sum >= 100)
        return err_set(e, ST_INVALID, "value", "--tiers", "--tiers must leave a bottom tier (sum < 100)");
    t->n = n + 1;
    for (int i = 0; i < t->n; i++) {
        if (t->n == 4)
            snprintf(t->name[i], sizeof t->name[0], "%s", names4[i]);
        else if (i == t->n - 1)
            snprintf(t->name[i], sizeof t->name[0], "low");
        else
            snprintf(t->name[i], sizeof t->name[0], "tier-%d", i + 1);
        t->percent[i] = i < n ? v[i] : -1;
    }
    return ST_OK;
}
