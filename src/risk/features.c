/*
 * features.c — the emergency-admission model's features: what is known
 * about a person on a date (their profile), its encoding as a feature
 * vector (feature set 1), the outcome, who can be scored, and the words
 * that explain a score.
 *
 * Feature set 1 (docs/risk.md has the table): age band (reference 18-39),
 * sex (reference male; 'unknown' its own category), deprivation quintile
 * from the IMD decile of the home postcode (reference the middle quintile;
 * 'unknown' its own category: never read as zero), counts in the 12 months
 * before the date of emergency admissions, A&E attendances, elective
 * admissions (capped), outpatient, GP and community contacts (log(1+n)),
 * emergency admissions 12-24 months before, any mental health contact,
 * discharge in the last 30 days, each long-term condition group of
 * data/risk/ltc.tsv, the eFI score, medicines (bands, reference none), an
 * active social care package and a care home placement.
 *
 * Missing data: a count with no record is zero contacts in every connected
 * feed (concord cannot tell an unconnected feed from no use); sex and
 * deprivation have explicit 'unknown' categories; without a registration
 * record (Patient) or a date of birth a person is not scored, and says why.
 *
 * Windows: "in the 12 months before" is (date - 365, date]; the outcome is
 * an emergency admission (admission method 2x, or emergency priority when
 * no method is recorded) starting in (date, date + 365].
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../access/policy.h"
#include "risk_int.h"

typedef struct fixed_feature {
    const char *name;
    rk_group group;
    int lo, hi;
} fixed_feature;

/* the features before and after the condition groups, in order */
static const fixed_feature HEAD[] = {
    {"age_0_17", RKG_AGE, 0, 18},
    {"age_40_49", RKG_AGE, 40, 50},
    {"age_50_59", RKG_AGE, 50, 60},
    {"age_60_69", RKG_AGE, 60, 70},
    {"age_70_74", RKG_AGE, 70, 75},
    {"age_75_79", RKG_AGE, 75, 80},
    {"age_80_84", RKG_AGE, 80, 85},
    {"age_85_89", RKG_AGE, 85, 90},
    {"age_90_plus", RKG_AGE, 90, 1000},
    {"female", RKG_SEX, 1, 0},
    {"sex_unknown", RKG_SEX, 0, 0},
    {"imd_q1_most_deprived", RKG_DEPRIVATION, 1, 0},
    {"imd_q2", RKG_DEPRIVATION, 2, 0},
    {"imd_q4", RKG_DEPRIVATION, 4, 0},
    {"imd_q5_least_deprived", RKG_DEPRIVATION, 5, 0},
    {"imd_unknown", RKG_DEPRIVATION, 0, 0},
    {"emergency_admissions_12m", RKG_NEL12, 0, 5},
    {"emergency_admissions_13_24m", RKG_NEL24, 0, 5},
    {"ae_attendances_12m", RKG_AE, 0, 10},
    {"elective_admissions_12m", RKG_ELECTIVE, 0, 5},
    {"outpatient_log_12m", RKG_OUTPATIENT, 0, 0},
    {"gp_contacts_log_12m", RKG_GP, 0, 0},
    {"community_contacts_log_12m", RKG_COMMUNITY, 0, 0},
    {"mental_health_contact_12m", RKG_MH, 0, 0},
    {"discharged_30d", RKG_RECENT_DISCHARGE, 0, 0},
};
static const fixed_feature TAIL[] = {
    {"efi_score", RKG_FRAILTY, 0, 0},
    {"medicines_1_4", RKG_MEDICINES, 1, 4},
    {"medicines_5_9", RKG_MEDICINES, 5, 9},
    {"medicines_10_plus", RKG_MEDICINES, 10, 1000000},
    {"social_care_package", RKG_SOCIAL_CARE, 0, 0},
    {"care_home", RKG_CARE_HOME, 0, 0},
};

static void add(rk_featureset *fs, const char *name, rk_group g, int ltc, int lo, int hi) {
    rk_feature_def *f = &fs->f[fs->n++];
    snprintf(f->name, sizeof f->name, "%s", name);
    f->group = g;
    f->ltc = ltc;
    f->lo = lo;
    f->hi = hi;
}

void rk_featureset_build(const risk_codes *c, rk_featureset *fs) {
    memset(fs, 0, sizeof *fs);
    for (size_t i = 0; i < sizeof HEAD / sizeof HEAD[0]; i++)
        add(fs, HEAD[i].name, HEAD[i].group, -1, HEAD[i].lo, HEAD[i].hi);
    for (int g = 0; g < c->nltc && fs->n < RK_MAX_FEATURES - 8; g++) {
        char name[48];
        snprintf(name, sizeof name, "ltc_%s", c->ltc_id[g]);
        add(fs, name, RKG_LTC, g, 0, 0);
    }
    for (size_t i = 0; i < sizeof TAIL / sizeof TAIL[0]; i++)
        add(fs, TAIL[i].name, TAIL[i].group, -1, TAIL[i].lo, TAIL[i].hi);
}

static int in_window(int32_t d, int32_t from, int32_t to) {
    return d != RK_NODAY && d > from && d <= to;
}

void rk_profile_of(const risk_codes *c, const rk_person *p, int32_t day, int imd_decile, rk_profile *pr) {
    memset(pr, 0, sizeof *pr);
    pr->day = day;
    pr->sex = p->sex;
    pr->imd_decile = imd_decile;
    rk_compute_indices(c, p, day, &pr->ix);
    pr->age = pr->ix.age;
    for (int i = 0; i < p->nenc; i++) {
        const rk_enc *x = &p->enc[i];
        int last12 = in_window(x->start, day - 365, day);
        switch (x->kind) {
        case 'a':
            if (x->adm == 'e' && last12) pr->nel12++;
            if (x->adm == 'e' && in_window(x->start, day - 730, day - 365)) pr->nel24++;
            if (x->adm == 'l' && last12) pr->el12++;
            if (in_window(x->end, day - 30, day)) pr->recent_discharge = 1;
            if (x->dx[0] && x->start <= day) pr->ltc |= rk_code_lookup(c, 'i', x->dx).ltc;
            break;
        case 'e': pr->ae12 += last12; break;
        case 'o': pr->op12 += last12; break;
        case 'g': pr->gp12 += last12; break;
        case 'c': pr->comm12 += last12; break;
        case 'm': pr->mh12 += last12; break;
        default: break;
        }
    }
    for (int i = 0; i < p->ncond; i++)
        if (p->cond[i].day <= day) pr->ltc |= rk_code_lookup(c, p->cond[i].sys, p->cond[i].code).ltc;
    for (int i = 0; i < p->nmed; i++) {
        const rk_span *m = &p->med[i];
        if (m->start != RK_NODAY && m->start <= day && (m->end == RK_NODAY || m->end >= day)) pr->medicines++;
    }
    for (int i = 0; i < p->nsoc; i++) {
        const rk_span *m = &p->soc[i];
        if (m->start == RK_NODAY || m->start > day || (m->end != RK_NODAY && m->end < day)) continue;
        if (m->home)
            pr->care_home = 1;
        else
            pr->social_care = 1;
    }
}

static double cap(int v, int hi) {
    return v > hi ? hi : v;
}

void rk_features_of(const rk_featureset *fs, const rk_profile *pr, double *x) {
    int a = pr->age;
    int q = pr->imd_decile ? (pr->imd_decile + 1) / 2 : 0; /* quintile 1..5, 0 unknown */
    for (int i = 0; i < fs->n; i++) {
        const rk_feature_def *f = &fs->f[i];
        double v = 0;
        switch (f->group) {
        case RKG_AGE: v = a >= f->lo && a < f->hi; break;
        case RKG_SEX: v = f->lo ? pr->sex == 'f' : (pr->sex != 'f' && pr->sex != 'm'); break;
        case RKG_DEPRIVATION: v = q == f->lo; break;
        case RKG_NEL12: v = cap(pr->nel12, f->hi); break;
        case RKG_NEL24: v = cap(pr->nel24, f->hi); break;
        case RKG_AE: v = cap(pr->ae12, f->hi); break;
        case RKG_ELECTIVE: v = cap(pr->el12, f->hi); break;
        case RKG_OUTPATIENT: v = log1p(pr->op12); break;
        case RKG_GP: v = log1p(pr->gp12); break;
        case RKG_COMMUNITY: v = log1p(pr->comm12); break;
        case RKG_MH: v = pr->mh12 > 0; break;
        case RKG_RECENT_DISCHARGE: v = pr->recent_discharge; break;
        case RKG_LTC: v = (pr->ltc >> f->ltc) & 1; break;
        case RKG_FRAILTY: v = pr->ix.efi; break;
        case RKG_MEDICINES: v = pr->medicines >= f->lo && pr->medicines <= f->hi; break;
        case RKG_SOCIAL_CARE: v = pr->social_care; break;
        case RKG_CARE_HOME: v = pr->care_home; break;
        default: break;
        }
        x[i] = v;
    }
}

int rk_outcome(const rk_person *p, int32_t day) {
    for (int i = 0; i < p->nenc; i++) {
        const rk_enc *x = &p->enc[i];
        if (x->kind == 'a' && x->adm == 'e' && x->start > day && x->start <= day + 365) return 1;
    }
    return 0;
}

int rk_eligible(const rk_person *p, int32_t day) {
    if (!p->has_patient) return RK_SKIP_NO_PATIENT;
    if (p->birth == RK_NODAY) return RK_SKIP_NO_BIRTH;
    if (p->birth > day) return RK_SKIP_NOT_BORN;
    if (p->death != RK_NODAY && p->death <= day) return RK_SKIP_DECEASED;
    if (!p->active) return RK_SKIP_NOT_REGISTERED;
    return RK_OK;
}

const char *rk_skip_reason(int why) {
    switch (why) {
    case RK_OK: return "scored";
    case RK_SKIP_NO_PATIENT:
        return "too little data to score: no registration record (Patient) for this person";
    case RK_SKIP_NO_BIRTH: return "too little data to score: no date of birth";
    case RK_SKIP_NOT_REGISTERED: return "not scored: registration has ended (Patient.active is false)";
    case RK_SKIP_DECEASED: return "not scored: deceased";
    case RK_SKIP_NOT_BORN: return "not scored: born after the assessment date";
    }
    return "not scored";
}

/* ---- explanations ---------------------------------------------------------------------- */

int rk_explain(const risk_model *m, const double *x, rk_factor *out) {
    double contrib[RK_MAX_FEATURES] = {0};
    unsigned char present[RK_MAX_FEATURES] = {0};
    for (int i = 0; i < m->p; i++) {
        contrib[m->slot[i]] += m->beta[i] * (x[i] - m->mean[i]);
        if (x[i] != 0) present[m->slot[i]] = 1;
    }
    /* only what the person has: never "no elective admissions" as a reason
     * (a protective factor they lack), nor the reference category */
    int k = 0;
    for (int pick = 0; pick < RK_TOP_FACTORS; pick++) {
        int best = -1;
        for (int i = 0; i < m->nslots; i++)
            if (present[i] && contrib[i] > 0.005 && (best < 0 || contrib[i] > contrib[best])) best = i;
        if (best < 0) break;
        out[k++] = (rk_factor){m->slot_group[best], m->slot_ltc[best], contrib[best]};
        present[best] = 0;
    }
    return k;
}

/* Each condition group's categories, in one pass over the code table (a
 * worklist asks per row and factor, a risk run per person and factor). */
static void ltc_sensitivity(risk_codes *c) {
    pthread_mutex_lock(&c->sens_lock);
    if (!atomic_load(&c->sens_ready)) {
        memset(c->ltc_sens, 0, sizeof c->ltc_sens);
        for (size_t i = 0; i < c->nslots; i++) {
            const char *key = c->slots[i].key;
            uint32_t groups = key ? c->slots[i].info.ltc : 0;
            if (!groups || strlen(key) < 3 || key[1] != ':') continue;
            unsigned sens = acc_code_sensitivity(
                key[0] == 's' ? "http://snomed.info/sct" : "http://hl7.org/fhir/sid/icd-10", key + 2);
            for (int g = 0; g < c->nltc; g++)
                if (groups & (1u << g)) c->ltc_sens[g] |= sens;
        }
        atomic_store(&c->sens_ready, 1);
    }
    pthread_mutex_unlock(&c->sens_lock);
}

unsigned rk_factor_sensitivity(const risk_codes *c, const char *code) {
    if (!strcmp(code, "mental_health_contact_12m")) return acc_sens_parse("mental-health");
    for (int g = 0; g < c->nltc; g++) {
        if (strcmp(c->ltc_id[g], code) != 0) continue;
        risk_codes *m = (risk_codes *)c; /* the memo only */
        if (!atomic_load(&m->sens_ready)) ltc_sensitivity(m);
        return m->ltc_sens[g];
    }
    return 0;
}

const char *rk_factor_code(const rk_factor *f, const risk_codes *c) {
    static const char *const codes[RKG_N] = {
        [RKG_AGE] = "age",
        [RKG_SEX] = "sex",
        [RKG_DEPRIVATION] = "deprivation",
        [RKG_NEL12] = "emergency_admissions_12m",
        [RKG_NEL24] = "emergency_admissions_13_24m",
        [RKG_AE] = "ae_attendances_12m",
        [RKG_ELECTIVE] = "elective_admissions_12m",
        [RKG_OUTPATIENT] = "outpatient_12m",
        [RKG_GP] = "gp_contacts_12m",
        [RKG_COMMUNITY] = "community_contacts_12m",
        [RKG_MH] = "mental_health_contact_12m",
        [RKG_RECENT_DISCHARGE] = "discharged_30d",
        [RKG_LTC] = "condition",
        [RKG_FRAILTY] = "frailty",
        [RKG_MEDICINES] = "medicines",
        [RKG_SOCIAL_CARE] = "social_care_package",
        [RKG_CARE_HOME] = "care_home",
    };
    if (f->group == RKG_LTC && f->ltc >= 0 && f->ltc < c->nltc) return c->ltc_id[f->ltc];
    return f->group >= 0 && f->group < RKG_N ? codes[f->group] : "?";
}

static const char *plural(int n, const char *one, const char *many) {
    return n == 1 ? one : many;
}

void rk_factor_label(const risk_codes *c, const rk_profile *pr, const rk_factor *f, char *out, size_t n) {
    switch ((rk_group)f->group) {
    case RKG_AGE: snprintf(out, n, "aged %d", pr->age); break;
    case RKG_SEX:
        snprintf(out, n, "%s", pr->sex == 'f' ? "female" : pr->sex == 'm' ? "male" : "sex not recorded");
        break;
    case RKG_DEPRIVATION:
        if (pr->imd_decile)
            snprintf(out, n, "lives in IMD decile %d (1 = most deprived)", pr->imd_decile);
        else
            snprintf(out, n, "deprivation unknown (no IMD decile for the postcode)");
        break;
    case RKG_NEL12:
        snprintf(out, n, "%d emergency %s in the last 12 months", pr->nel12,
                 plural(pr->nel12, "admission", "admissions"));
        break;
    case RKG_NEL24:
        snprintf(out, n, "%d emergency %s 12-24 months ago", pr->nel24,
                 plural(pr->nel24, "admission", "admissions"));
        break;
    case RKG_AE:
        snprintf(out, n, "%d A&E %s in the last 12 months", pr->ae12,
                 plural(pr->ae12, "attendance", "attendances"));
        break;
    case RKG_ELECTIVE:
        snprintf(out, n, "%d elective %s in the last 12 months", pr->el12,
                 plural(pr->el12, "admission", "admissions"));
        break;
    case RKG_OUTPATIENT:
        snprintf(out, n, "%d outpatient %s in the last 12 months", pr->op12,
                 plural(pr->op12, "attendance", "attendances"));
        break;
    case RKG_GP:
        snprintf(out, n, "%d GP %s in the last 12 months", pr->gp12,
                 plural(pr->gp12, "consultation", "consultations"));
        break;
    case RKG_COMMUNITY:
        snprintf(out, n, "%d community health %s in the last 12 months", pr->comm12,
                 plural(pr->comm12, "contact", "contacts"));
        break;
    case RKG_MH: snprintf(out, n, "in contact with mental health services in the last 12 months"); break;
    case RKG_RECENT_DISCHARGE: snprintf(out, n, "discharged from hospital in the last 30 days"); break;
    case RKG_LTC:
        snprintf(out, n, "%s",
                 f->ltc >= 0 && f->ltc < c->nltc ? c->ltc_name[f->ltc] : "a long-term condition");
        break;
    case RKG_FRAILTY:
        snprintf(out, n, "frailty: %d of 36 eFI deficits (eFI %.2f)", pr->ix.efi_deficits, pr->ix.efi);
        break;
    case RKG_MEDICINES:
        snprintf(out, n, "%d %s in use", pr->medicines, plural(pr->medicines, "medicine", "medicines"));
        break;
    case RKG_SOCIAL_CARE: snprintf(out, n, "receives an adult social care package"); break;
    case RKG_CARE_HOME: snprintf(out, n, "lives in a care home"); break;
    default: snprintf(out, n, "other"); break;
    }
}
