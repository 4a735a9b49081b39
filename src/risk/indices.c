/*
 * indices.c — the published indices, computed from a person's facts on an
 * assessment date. Code lists, points, bands, age limits and lookback
 * windows are data (data/risk/, loaded by codes.c); this file holds the
 * rules of each paper:
 *
 *   eFI   Clegg A et al. Age Ageing 2016;45(3):353-360. Deficits present in
 *         the primary care record on or before the date, out of 36;
 *         score = deficits / 36; for people aged 65 and over.
 *   HFRS  Gilbert T et al. Lancet 2018;391(10132):1775-1782. The distinct
 *         three-character ICD-10 codes of hospital data in the two years
 *         before the date, each scoring its points once; aged 75 and over.
 *   Charlson  Quan H et al. Med Care 2005 (ICD-10 coding) with the 1987
 *         weights (Charlson ME et al. J Chronic Dis 1987) and the 2011
 *         weights (Quan H et al. Am J Epidemiol 2011); hierarchy: the more
 *         severe of liver disease, diabetes and cancer pairs.
 *   LACE  van Walraven C et al. CMAJ 2010;182(6):551-557. At the most recent
 *         discharge on or before the date.
 *
 * Scores with decimals (HFRS points) are summed in integer tenths so that a
 * band edge (5.0, 15.0) is met exactly, never missed by rounding.
 */
#include <math.h>
#include <string.h>

#include "risk_int.h"

static void civil(int32_t day, int *y, int *m, int *d) {
    int z = day + 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    int doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp + (mp < 10 ? 3 : -9);
    *y = yoe + era * 400 + (*m <= 2);
}

int rk_age_on(const rk_person *p, int32_t day) {
    if (p->birth == RK_NODAY || day < p->birth) return -1;
    int by, bm, bd, y, m, d;
    civil(p->birth, &by, &bm, &bd);
    civil(day, &y, &m, &d);
    int age = y - by;
    if (m < bm || (m == bm && d < bd)) age--;
    return age;
}

int rk_band_of(const rk_bands *b, double score) {
    const double eps = 1e-9;
    for (int i = 0; i < b->n; i++) {
        const rk_band *x = &b->v[i];
        if (x->cmp == 2) return i;
        if (x->cmp == 0 && score < x->bound - eps) return i;
        if (x->cmp == 1 && score <= x->bound + eps) return i;
    }
    return b->n - 1;
}

double rk_efi_score(int deficits) {
    return deficits / (double)RK_EFI_DEFICITS;
}

static int span_active(const rk_span *s, int32_t day) {
    return s->start != RK_NODAY && s->start <= day && (s->end == RK_NODAY || s->end >= day);
}

static int is_death_disposition(const char *d) {
    return d && (!strcmp(d, "exp") || !strcmp(d, "79") || !strcmp(d, "died") || !strcmp(d, "deceased"));
}

/* The distinct HFRS codes among `codes` (ICD-10, dots removed), in tenths. */
typedef struct code3_set {
    char v[256][4];
    int n;
} code3_set;

static int code3_add(code3_set *s, const char *code) {
    if (strlen(code) < 3) return 0;
    for (int i = 0; i < s->n; i++)
        if (!memcmp(s->v[i], code, 3)) return 0;
    if (s->n == 256) return 0;
    memcpy(s->v[s->n], code, 3);
    s->v[s->n++][3] = 0;
    return 1;
}

int rk_hfrs_of_codes(const risk_codes *c, const char *const *icd10, int n) {
    code3_set seen = {.n = 0};
    int tenths = 0;
    for (int i = 0; i < n; i++) {
        char norm[16];
        size_t k = 0;
        for (const char *p = icd10[i]; *p && k + 1 < sizeof norm; p++)
            if (*p != '.') norm[k++] = *p;
        norm[k] = 0;
        if (!code3_add(&seen, norm)) continue;
        char three[4] = {norm[0], norm[1], norm[2], 0};
        tenths += rk_code_lookup(c, 'i', three).hfrs_tenths;
    }
    return tenths;
}

/* Charlson conditions bitset -> score with the hierarchy applied. */
static int charlson_score(const risk_codes *c, uint32_t present, int updated) {
    /* ids: 9 mild liver / 15 moderate-severe; 10 diabetes / 11 with
     * complications; 14 malignancy / 16 metastatic (1-based numbers) */
    if (present & (1u << 14)) present &= ~(1u << 8);
    if (present & (1u << 10)) present &= ~(1u << 9);
    if (present & (1u << 15)) present &= ~(1u << 13);
    int score = 0;
    for (int k = 0; k < RK_CHARLSON; k++)
        if (present & (1u << k)) score += updated ? c->charlson_w2011[k] : c->charlson_w1987[k];
    return score;
}

int rk_charlson_of_codes(const risk_codes *c, const char *const *icd10, int n, int updated_weights) {
    uint32_t present = 0;
    for (int i = 0; i < n; i++) {
        char norm[16];
        size_t k = 0;
        for (const char *p = icd10[i]; *p && k + 1 < sizeof norm; p++)
            if (*p != '.') norm[k++] = *p;
        norm[k] = 0;
        present |= rk_code_lookup(c, 'i', norm).charlson;
    }
    return charlson_score(c, present, updated_weights);
}

int rk_lace_points(const risk_codes *c, int component, int value) {
    for (int i = 0; i < c->lace_rows[component]; i++) {
        const int *r = c->lace_points[component][i];
        if (value >= r[0] && (r[1] < 0 || value <= r[1])) return r[2];
    }
    return 0;
}

/* Charlson conditions recorded in hospital data in (from, to]. */
static uint32_t charlson_between(const risk_codes *c, const rk_person *p, int32_t from, int32_t to) {
    uint32_t present = 0;
    for (int i = 0; i < p->ncond; i++) {
        const rk_cond *x = &p->cond[i];
        if (x->sys != 'i' || x->day > to || x->day <= from) continue;
        present |= rk_code_lookup(c, 'i', x->code).charlson;
    }
    for (int i = 0; i < p->nenc; i++) {
        const rk_enc *x = &p->enc[i];
        if (x->kind != 'a' || !x->dx[0] || x->start > to || x->start <= from) continue;
        present |= rk_code_lookup(c, 'i', x->dx).charlson;
    }
    return present;
}

void rk_compute_indices(const risk_codes *c, const rk_person *p, int32_t day, rk_indices *o) {
    memset(o, 0, sizeof *o);
    o->age = rk_age_on(p, day);
    o->efi_band = o->hfrs_band = o->lace_band = -1;
    o->hfrs_tenths = o->charlson = o->charlson2011 = o->lace = -1;
    o->lace_discharge = RK_NODAY;
    o->lace_encounter = "";

    /* eFI: deficits are counted for everyone (the admission model uses
     * them); the index itself applies from min_age */
    uint64_t efi = 0;
    for (int i = 0; i < p->ncond; i++)
        if (p->cond[i].sys == 's' && p->cond[i].day <= day)
            efi |= rk_code_lookup(c, 's', p->cond[i].code).efi;
    if (c->efi_rule_polypharmacy) {
        int active = 0;
        for (int i = 0; i < p->nmed; i++)
            active += span_active(&p->med[i], day);
        if (active >= c->efi_polypharmacy_min) efi |= 1ULL << (c->efi_rule_polypharmacy - 1);
    }
    if (c->efi_rule_care) {
        for (int i = 0; i < p->nsoc; i++)
            if (span_active(&p->soc[i], day)) efi |= 1ULL << (c->efi_rule_care - 1);
    }
    o->efi_present = efi;
    o->efi_deficits = __builtin_popcountll(efi);
    o->efi = rk_efi_score(o->efi_deficits);
    if (o->age >= c->def_efi.min_age) o->efi_band = rk_band_of(&c->bands_efi, o->efi);

    /* HFRS */
    if (o->age >= c->def_hfrs.min_age) {
        int32_t from = c->def_hfrs.lookback_days ? day - c->def_hfrs.lookback_days : INT32_MIN + 1;
        code3_set seen = {.n = 0};
        int tenths = 0;
        for (int i = 0; i < p->ncond; i++) {
            const rk_cond *x = &p->cond[i];
            if (x->sys != 'i' || x->day > day || x->day <= from) continue;
            if (code3_add(&seen, x->code)) tenths += rk_code_lookup(c, 'i', x->code).hfrs_tenths;
        }
        for (int i = 0; i < p->nenc; i++) {
            const rk_enc *x = &p->enc[i];
            if (x->kind != 'a' || !x->dx[0] || x->start > day || x->start <= from) continue;
            if (code3_add(&seen, x->dx)) tenths += rk_code_lookup(c, 'i', x->dx).hfrs_tenths;
        }
        o->hfrs_tenths = tenths;
        o->hfrs_band = rk_band_of(&c->bands_hfrs, tenths / 10.0);
    }

    /* Charlson */
    if (o->age >= c->def_charlson.min_age) {
        int32_t from = c->def_charlson.lookback_days ? day - c->def_charlson.lookback_days : INT32_MIN + 1;
        uint32_t present = charlson_between(c, p, from, day);
        o->charlson_present = present;
        o->charlson = charlson_score(c, present, 0);
        o->charlson2011 = charlson_score(c, present, 1);
    }

    /* LACE at the most recent discharge (alive) on or before the date */
    if (o->age >= c->def_lace.min_age) {
        const rk_enc *adm = NULL;
        for (int i = 0; i < p->nenc; i++) {
            const rk_enc *x = &p->enc[i];
            if (x->kind != 'a' || x->end == RK_NODAY || x->end > day || is_death_disposition(x->disch))
                continue;
            if (!adm || x->end > adm->end || (x->end == adm->end && x->start > adm->start)) adm = x;
        }
        if (adm) {
            int los = adm->end - adm->start;
            if (los < 0) los = 0;
            int acute = adm->adm == 'e';
            int32_t from = c->def_lace.lookback_days ? adm->end - c->def_lace.lookback_days : INT32_MIN + 1;
            int cci = charlson_score(c, charlson_between(c, p, from, adm->end), 0);
            int ed = 0;
            for (int i = 0; i < p->nenc; i++) {
                const rk_enc *x = &p->enc[i];
                if (x->kind == 'e' && x->start < adm->start && x->start >= adm->start - 182) ed++;
            }
            o->lace_l = rk_lace_points(c, 0, los);
            o->lace_a = rk_lace_points(c, 1, acute);
            o->lace_c = rk_lace_points(c, 2, cci);
            o->lace_e = rk_lace_points(c, 3, ed);
            o->lace = o->lace_l + o->lace_a + o->lace_c + o->lace_e;
            o->lace_band = rk_band_of(&c->bands_lace, o->lace);
            o->lace_discharge = adm->end;
            o->lace_encounter = adm->id;
        }
    }
}
