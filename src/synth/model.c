/*
 * model.c — the synthetic population model: the organisations of the
 * integrated care system, and each person's demographics, conditions,
 * frailty, observations, medicines and monthly history of care.
 *
 * Model (docs/synth.md has every parameter and its source):
 *   - People are registered at the start of the history with a London
 *     age/sex/ethnicity structure; deprivation follows their practice.
 *   - Each condition is present with probability logistic(a_c + age,
 *     deprivation, ethnicity, sex effects + a shared ill-health factor);
 *     a_c is calibrated so that prevalence at the start meets the target.
 *     The same uniform draw compared at the start and end ages gives the
 *     diagnoses made during the history (incidence follows ageing).
 *   - Each month a hazard model draws A&E attendances, non-elective and
 *     elective admissions, outpatient attendances, community nursing,
 *     social care packages, care home admission, mental health contacts,
 *     GP consultations and death. Age, frailty, conditions, deprivation
 *     and prior use (admissions and A&E in the last 12 months, discharge in
 *     the last 30 days) raise the hazards. Practices in the integrated care
 *     programme see non-elective admissions fall by programme_effect over
 *     the evaluation period; every practice shares a secular rise.
 *   - Intercepts of the hazards are calibrated on a fixed pilot sample so
 *     that the population's rates meet the targets in tables.c.
 *
 * Invariants: person_generate is a pure function of (world, index); the
 * world is read-only after synth_world_build, so threads share it.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_int.h"

/* ---- random helpers --------------------------------------------------------- */
double rng_normal(rng *r) {
    /* Box-Muller; one value per call keeps the stream simple */
    double u1 = rng_unit(r), u2 = rng_unit(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int rng_poisson(rng *r, double mean) {
    if (mean <= 0) return 0;
    if (mean > 30) {
        int v = (int)floor(mean + sqrt(mean) * rng_normal(r) + 0.5);
        return v < 0 ? 0 : v;
    }
    double l = exp_neg(mean), p = 1.0;
    int k = 0;
    do {
        k++;
        p *= rng_unit(r);
    } while (p > l);
    return k - 1;
}

int rng_weighted(rng *r, const double *w, int n) {
    double total = 0;
    for (int i = 0; i < n; i++) total += w[i];
    if (total <= 0) return 0;
    double x = rng_unit(r) * total;
    for (int i = 0; i < n; i++) {
        if (x < w[i]) return i;
        x -= w[i];
    }
    return n - 1;
}

/* ---- dates: days since 1970-01-01 in the proleptic Gregorian calendar ---- */
int day_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void civil_from_day(int day, int *y, int *m, int *d) {
    int z = day + 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    int doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

void fmt_date(char out[11], int day) {
    int y, m, d;
    civil_from_day(day, &y, &m, &d);
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = 0;
}

/* ---- NHS numbers -------------------------------------------------------------- */
int synth_nhs_check_digit(const char digits[9]) {
    int sum = 0;
    for (int i = 0; i < 9; i++) sum += (digits[i] - '0') * (10 - i);
    int c = 11 - sum % 11;
    return c == 11 ? 0 : c;
}

int synth_nhs_valid(const char *s) {
    if (!s) return 0;
    for (int i = 0; i < 10; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    if (s[10]) return 0;
    int c = synth_nhs_check_digit(s);
    return c != 10 && c == s[9] - '0';
}

static void nhs_from_prefix(uint32_t prefix, char out[11]) {
    char d[10];
    snprintf(d, sizeof d, "%09u", prefix);
    memcpy(out, d, 9);
    out[9] = (char)('0' + synth_nhs_check_digit(d));
    out[10] = 0;
}

void synth_person_id(int64_t index, char out[16]) {
    unsigned long long n = (unsigned long long)(index + 1) % 1000000000000ULL; /* at most 12 digits */
    snprintf(out, 16, "p%07llu", n);
}

void synth_params_default(synth_params *p) {
    memset(p, 0, sizeof *p);
    p->seed = 1;
    p->patients = 50000;
    p->years = 5;
    p->end_year = 2025;
    p->error_rate = 1.0;
    p->programme_effect = 0.10;
    p->programme_months = 12;
    p->threads = 0;
}

/* ---- hazard model parameters (modelling assumptions; docs/synth.md) -------- */
/* log rate ratio by five-year age band (the bands of age_bands[]) */
static const double age_lrr[N_HAZARDS][19] = {
    /*           0    5   10   15   20   25   30   35   40   45   50   55   60   65   70   75   80   85   90 */
    [HZ_AE] = {0.5, -0.1, -0.1, 0.2, 0.3, 0.2, 0.1, 0, 0, 0, 0, 0, 0.05, 0.15, 0.3, 0.5, 0.75, 1.0, 1.2},
    [HZ_NEL] = {0.4, -0.8, -0.9, -0.5, -0.4, -0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.95, 1.25, 1.6, 1.9,
                2.1},
    [HZ_ELECTIVE] = {-1.2, -1.6, -1.6, -1.3, -1.1, -0.9, -0.7, -0.5, -0.3, 0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0, 0.9,
                     0.6, 0.2},
    [HZ_OUTPATIENT] = {-0.2, -0.6, -0.6, -0.5, -0.5, -0.4, -0.3, -0.2, -0.1, 0, 0.15, 0.3, 0.45, 0.6, 0.7, 0.8,
                       0.8, 0.7, 0.5},
    [HZ_COMMUNITY] = {-6, -6, -6, -6, -4, -4, -4, -4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.6, 1.1, 1.5},
    [HZ_SOCIAL] = {-6, -6, -6, -5, -3, -3, -3, -3, -3, -2.5, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1.0, 1.3},
    [HZ_CARE_HOME] = {-9, -9, -9, -9, -9, -9, -9, -8, -7, -6, -5, -4, -3.5, -3, -2, -1, 0, 0.8, 1.4},
    [HZ_MH] = {-3, -1.5, -0.5, 0.3, 0.4, 0.3, 0.2, 0.2, 0.1, 0.1, 0, 0, -0.2, -0.4, -0.5, -0.4, -0.2, 0, 0},
    [HZ_GP] = {0.3, -0.3, -0.4, -0.3, -0.2, -0.1, -0.1, 0, 0, 0.05, 0.15, 0.25, 0.35, 0.5, 0.6, 0.75, 0.85, 0.95,
               1.0},
    [HZ_DEATH] = {-2.0, -4.9, -4.7, -4.1, -3.7, -3.5, -3.2, -2.9, -2.5, -2.1, -1.7, -1.2, -0.75, -0.25, 0.25,
                  0.8, 1.4, 2.0, 2.7},
};
/* log rate ratio per decile towards the most deprived (IMD decile 1) */
static const double dep_lrr[N_HAZARDS] = {0.06, 0.07, -0.02, 0.0, 0.03, 0.04, 0.02, 0.07, 0.03, 0.06};
/* log rate ratio per frailty deficit */
static const double frailty_lrr[N_HAZARDS] = {0.06, 0.12, 0.02, 0.05, 0.25, 0.25, 0.3, 0.02, 0.08, 0.12};
#define PRIOR_NEL_LRR 0.35    /* per non-elective admission in the last 12 months (max 4) */
#define PRIOR_AE_LRR 0.15     /* per A&E attendance in the last 12 months (max 6), on A&E */
#define PRIOR_AE_NEL_LRR 0.08 /* the same, on non-elective admission */
#define READMIT_LRR 0.2       /* within 30 days of a discharge */
#define SECULAR_TREND 0.03    /* yearly rise in non-elective admissions everywhere */
#define VIA_AE_SHARE 0.70     /* non-elective admissions that come through A&E */
#define DIED_IN_HOSPITAL 0.45 /* deaths in hospital (ONS place of death, ~45%) */
#define MOVE_RATE 0.08        /* changes of address per adult-year */
#define LEAVE_SHARE 0.20      /* of moves, out of the area (registration ends) */
#define PRACTICE_CHANGE_SHARE 0.25 /* of moves within the area, with a new practice */

static int age_band_of(int age) {
    for (int i = 0; i < n_age_bands; i++)
        if (age <= age_bands[i].hi) return i;
    return n_age_bands - 1;
}

static double cond_logit_base(const condition_def *c, double age, int female, int group, int dep, double latent) {
    double a = age;
    if (c->peak_age > 0 && a > c->peak_age) a = c->peak_age;
    return c->age_slope * (a - 50.0) / 10.0 + c->dep_slope * (5.5 - dep) + c->eth[group] +
           (female ? c->female : 0) + c->latent * latent;
}

static double logistic(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---- demographics drawn identically for the pilot and the population ---- */
typedef struct demo_draw {
    double age;
    int female, ethnicity, group, dep;
    double latent;
} demo_draw;

static void draw_demographics(rng *r, const synth_org *practice, demo_draw *d) {
    static double band_w[32], eth_w[32];
    static int init;
    if (!init) { /* benign race: every thread writes the same values */
        for (int i = 0; i < n_age_bands; i++) band_w[i] = age_bands[i].share;
        for (int i = 0; i < n_ethnicities; i++) eth_w[i] = ethnicities[i].share;
        init = 1;
    }
    int b = rng_weighted(r, band_w, n_age_bands);
    d->age = age_bands[b].lo + rng_unit(r) * (age_bands[b].hi - age_bands[b].lo + 1);
    d->female = rng_chance(r, age_bands[b].female);
    d->ethnicity = rng_weighted(r, eth_w, n_ethnicities);
    d->group = ethnicities[d->ethnicity].group;
    int dep = (int)floor(practice->deprivation + rng_normal(r) * 1.6 + 0.5);
    d->dep = dep < 1 ? 1 : dep > 10 ? 10 : dep;
    d->latent = rng_normal(r);
}

/* ---- organisations ---------------------------------------------------------- */
static const char *const acute_names[N_ACUTE] = {"St Aldric's Hospital", "Westway General Hospital",
                                                 "Northwick Vale Hospital", "Ealdham and Brent Hospital"};
static const char *const community_names[N_COMMUNITY] = {
    "Westway Community Health", "Thames Bank Community Services", "Brentmoor Community Health"};
static const char *const council_names[N_COUNCILS] = {"Westbourne City Council", "Royal Borough of Kensal",
                                                      "Fulham Riverside Council", "Brentmoor Council",
                                                      "Ealdham Council"};
static const char *const practice_suffix[] = {"Medical Centre", "Surgery", "Health Centre", "Group Practice",
                                              "Family Practice", "Medical Practice"};
static const char inward_letters[] = "ABDEFGHJLNPQRSTUWXYZ";

static void make_postcode(rng *r, int district, char out[10]) {
    const char *dist = districts[district].district; /* at most 4 characters */
    size_t n = strlen(dist);
    memcpy(out, dist, n);
    out[n] = ' ';
    out[n + 1] = (char)('1' + rng_int(r, 9));
    out[n + 2] = inward_letters[rng_int(r, 20)];
    out[n + 3] = inward_letters[rng_int(r, 20)];
    out[n + 4] = 0;
}

static int district_in_council(rng *r, int council) {
    int cand[32], n = 0;
    for (int i = 0; i < n_districts; i++)
        if (districts[i].council == council) cand[n++] = i;
    return cand[rng_int(r, n)];
}

static void build_orgs(synth_world *w) {
    rng r;
    rng_seed(&r, w->p.seed, 0xC0FFEEULL);
    static const double council_dep[N_COUNCILS] = {5.0, 5.5, 5.0, 4.0, 4.5};
    static const int council_acute[N_COUNCILS] = {0, 0, 1, 2, 3};
    static const int council_community[N_COUNCILS] = {0, 0, 1, 2, 2};
    /* integrated care programme: 5 of the 10 MDGs, chosen by the seed */
    int mdg_in[N_MDG] = {0}, order[N_MDG];
    for (int i = 0; i < N_MDG; i++) order[i] = i;
    for (int i = N_MDG - 1; i > 0; i--) {
        int j = rng_int(&r, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < N_MDG / 2; i++) mdg_in[order[i]] = 1;
    double weights[N_PRACTICES], total = 0;
    for (int i = 0; i < N_PRACTICES; i++) {
        synth_org *o = &w->practices[i];
        memset(o, 0, sizeof *o);
        o->kind = ORG_PRACTICE;
        o->index = i;
        snprintf(o->code, sizeof o->code, "Z%05d", 90001 + i);
        o->council = i * N_COUNCILS / N_PRACTICES; /* contiguous blocks of practices per council */
        o->district = district_in_council(&r, o->council);
        o->mdg = o->council * 2 + (i % 2);
        o->community = council_community[o->council];
        o->main_acute = council_acute[o->council];
        o->quality = 0.55 + 0.40 * rng_unit(&r);
        double dep = council_dep[o->council] + rng_normal(&r) * 1.5;
        o->deprivation = dep < 1.5 ? 1.5 : dep > 9.5 ? 9.5 : dep;
        o->integrated = mdg_in[o->mdg];
        snprintf(o->street, sizeof o->street, "%d %s", 1 + rng_int(&r, 200), streets[rng_int(&r, n_streets)]);
        make_postcode(&r, o->district, o->postcode);
        snprintf(o->name, sizeof o->name, "%s %s", streets[rng_int(&r, n_streets)],
                 practice_suffix[rng_int(&r, (int)(sizeof practice_suffix / sizeof practice_suffix[0]))]);
        /* list sizes: log-normal, median ~5,400 at 500,000 people (NHS Digital
         * Patients Registered at a GP Practice: London practices ~2,000-20,000) */
        weights[i] = exp(0.5 * rng_normal(&r));
        total += weights[i];
    }
    /* largest-remainder allocation of w->p.patients to practices */
    int64_t assigned = 0;
    double rem[N_PRACTICES];
    for (int i = 0; i < N_PRACTICES; i++) {
        double exact = (double)w->p.patients * weights[i] / total;
        w->practices[i].list_size = (int64_t)floor(exact);
        rem[i] = exact - floor(exact);
        assigned += w->practices[i].list_size;
    }
    while (assigned < w->p.patients) {
        int best = 0;
        for (int i = 1; i < N_PRACTICES; i++)
            if (rem[i] > rem[best]) best = i;
        w->practices[best].list_size++;
        rem[best] = -1;
        assigned++;
    }
    int64_t first = 0;
    for (int i = 0; i < N_PRACTICES; i++) {
        w->practices[i].first_person = first;
        first += w->practices[i].list_size;
    }
    for (int i = 0; i < N_ACUTE; i++) {
        synth_org *o = &w->acutes[i];
        memset(o, 0, sizeof *o);
        o->kind = ORG_ACUTE;
        o->index = i;
        snprintf(o->code, sizeof o->code, "ZA%d", i + 1);
        snprintf(o->name, sizeof o->name, "%s", acute_names[i]);
        make_postcode(&r, district_in_council(&r, i < 2 ? i * 2 : i + 1), o->postcode);
    }
    for (int i = 0; i < N_COMMUNITY; i++) {
        synth_org *o = &w->communities[i];
        memset(o, 0, sizeof *o);
        o->kind = ORG_COMMUNITY;
        o->index = i;
        snprintf(o->code, sizeof o->code, "ZC%d", i + 1);
        snprintf(o->name, sizeof o->name, "%s", community_names[i]);
    }
    for (int i = 0; i < N_COUNCILS; i++) {
        synth_org *o = &w->councils[i];
        memset(o, 0, sizeof *o);
        o->kind = ORG_COUNCIL;
        o->index = i;
        snprintf(o->code, sizeof o->code, "ZL%d", i + 1);
        snprintf(o->name, sizeof o->name, "%s Adult Social Care", council_names[i]);
    }
    synth_org *m = &w->mental[0];
    memset(m, 0, sizeof *m);
    m->kind = ORG_MENTAL_HEALTH;
    snprintf(m->code, sizeof m->code, "ZM1");
    snprintf(m->name, sizeof m->name, "Westway Mental Health NHS Trust");
}

/* ---- the person ---------------------------------------------------------------- */
static int practice_of_index(const synth_world *w, int64_t index) {
    int lo = 0, hi = N_PRACTICES - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (w->practices[mid].first_person <= index) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

int person_practice_at(const synth_person *p, int day) {
    return (p->practice2 >= 0 && day >= p->change_day) ? p->practice2 : p->practice;
}

const synth_org *person_practice_org(const synth_world *w, const synth_person *p, int day) {
    return &w->practices[person_practice_at(p, day)];
}

int person_age_years(const synth_person *p, int day) {
    int by, bm, bd, y, m, d;
    civil_from_day(p->birth_day, &by, &bm, &bd);
    civil_from_day(day, &y, &m, &d);
    int age = y - by;
    if (m < bm || (m == bm && d < bd)) age--;
    return age;
}

static const char *pick_zipf(rng *r, const char *const *v, int n) {
    /* frequency falling with rank (exponent 0.9), so some names are common */
    double u = rng_unit(r);
    int i = (int)(n * pow(u, 2.2));
    return v[i < n ? i : n - 1];
}

static int add_event(synth_person *p, int kind, int org, int day, int end_day, int minute, int code, int flags) {
    if (p->n_events >= MAX_EVENTS) return -1;
    synth_event *e = &p->events[p->n_events++];
    memset(e, 0, sizeof *e);
    e->kind = (int16_t)kind;
    e->org = (int16_t)org;
    e->day = day;
    e->end_day = end_day;
    e->minute = (int16_t)minute;
    e->end_minute = (int16_t)(end_day == day ? (minute + 60 + (minute % 180) < 1439 ? minute + 60 + minute % 180
                                                                                   : 1439)
                                             : 600 + (minute % 300));
    e->code = (int16_t)code;
    e->flags = (int16_t)flags;
    return p->n_events - 1;
}

static void add_obs(synth_person *p, int kind, int day, double v, double v2) {
    if (p->n_obs >= MAX_OBS) return;
    synth_obs *o = &p->obs[p->n_obs++];
    o->kind = (int16_t)kind;
    o->day = day;
    o->value = (float)v;
    o->value2 = (float)v2;
}

static int has(const synth_person *p, int c, int day) { return p->onset[c] && p->onset[c] <= day; }

static int deficits_at(const synth_person *p, int day) {
    int n = 0;
    for (int i = 0; i < n_deficits; i++)
        if (p->deficit_onset[i] && p->deficit_onset[i] <= day) n++;
    /* conditions count as deficits too, as in the eFI */
    static const int cond_deficit[] = {C_T2DM, C_T1DM, C_HYPERTENSION, C_COPD, C_CHD, C_HF, C_AF, C_STROKE, C_CKD,
                                       C_DEMENTIA, C_DEPRESSION, C_OSTEOARTHRITIS, C_HYPOTHYROID};
    for (size_t i = 0; i < sizeof cond_deficit / sizeof cond_deficit[0]; i++)
        if (has(p, cond_deficit[i], day)) n++;
    return n;
}

static int pick_nel_reason(rng *r, const synth_person *p, int day, int frailty) {
    double w[64];
    for (int i = 0; i < n_nel_reasons; i++) {
        const admission_reason *a = &nel_reasons[i];
        double x = a->weight;
        if (a->condition >= 0 && !has(p, a->condition, day)) x = 0;
        if (a->frail) x *= 1.0 + a->frail * 0.15 * frailty;
        w[i] = x;
    }
    return rng_weighted(r, w, n_nel_reasons);
}

static int pick_specialty(rng *r, const synth_person *p, int day) {
    double w[64];
    int age = person_age_years(p, day);
    for (int i = 0; i < n_specialties; i++) {
        const specialty_def *s = &specialties[i];
        w[i] = (s->condition < 0 || has(p, s->condition, day)) ? s->weight : 0;
        if (strcmp(s->code, "502") == 0 && !p->female) w[i] = 0;
        if (age < 16 && s->condition < 0) w[i] = strcmp(s->code, "100") == 0 ? 10 : w[i] * 0.3;
    }
    return rng_weighted(r, w, n_specialties);
}

static int pick_elective(rng *r, int age) {
    double w[32];
    for (int i = 0; i < n_electives; i++) w[i] = age >= electives[i].min_age ? electives[i].weight : 0;
    double t = 0;
    for (int i = 0; i < n_electives; i++) t += w[i];
    if (t <= 0) return 5; /* hernia repair: the youngest in the table */
    return rng_weighted(r, w, n_electives);
}

static int pick_community_service(rng *r, const synth_person *p, int day) {
    double w[8] = {10, has(p, C_DEMENTIA, day) || deficits_at(p, day) > 5 ? 4 : 0.5, 2,
                   (has(p, C_T2DM, day) || has(p, C_T1DM, day)) ? 4 : 0.5,
                   (has(p, C_T2DM, day) || has(p, C_T1DM, day)) ? 3 : 0, has(p, C_HF, day) ? 5 : 0,
                   has(p, C_COPD, day) ? 5 : 0, 1.5};
    return rng_weighted(r, w, n_community_services);
}

static int pick_mh_service(rng *r, const synth_person *p, int day, int age) {
    double w[6] = {has(p, C_SMI, day) ? 10 : 1, has(p, C_SMI, day) && age < 35 ? 6 : 0,
                   has(p, C_DEPRESSION, day) ? 10 : 2, has(p, C_SMI, day) ? 2 : 0.3, has(p, C_DEMENTIA, day) ? 10 : 0,
                   0.5};
    return rng_weighted(r, w, n_mh_services);
}

/* Length of stay in days: log-normal around the reason's median, longer
 * with age; a quarter of short-stay reasons go home the same day. */
static int length_of_stay(rng *r, double median, int age) {
    if (median <= 2 && rng_chance(r, 0.3)) return 0;
    double m = median * (age >= 75 ? 1.6 : age >= 65 ? 1.25 : 1.0);
    double los = m * exp(0.7 * rng_normal(r));
    int d = (int)floor(los + 0.5);
    return d < 0 ? 0 : d > 120 ? 120 : d;
}

static int alive_registered(const synth_person *p, int day) { return day < p->end_day; }

/* One person: demographics, conditions, then the monthly history. */
static void person_simulate(const synth_world *w, int64_t index, int practice, uint64_t seed, synth_person *p) {
    rng r;
    rng_seed(&r, seed, (uint64_t)index + 1);
    const synth_org *po = &w->practices[practice];
    memset(p, 0, offsetof(synth_person, events));
    p->index = index;
    synth_person_id(index, p->id);
    if (w->nhs_prefix && index < w->p.patients) nhs_from_prefix(w->nhs_prefix[index], p->nhs);
    demo_draw d;
    draw_demographics(&r, po, &d);
    p->female = d.female;
    p->ethnicity = d.ethnicity;
    p->group = d.group;
    p->deprivation = d.dep;
    p->latent = d.latent;
    p->practice = practice;
    p->practice2 = -1;
    p->start_day = w->start_day;
    p->end_day = w->end_day + 1;
    p->birth_day = w->start_day - (int)(d.age * 365.2425);
    int age0 = person_age_years(p, w->start_day);
    const name_pool *np = &name_pools[p->group];
    snprintf(p->family, sizeof p->family, "%s", pick_zipf(&r, np->family, np->n_family));
    snprintf(p->given, sizeof p->given, "%s",
             p->female ? pick_zipf(&r, np->female, np->n_female) : pick_zipf(&r, np->male, np->n_male));
    if (age0 < 16) snprintf(p->title, sizeof p->title, "%s", p->female ? "Miss" : "Master");
    else if (!p->female) snprintf(p->title, sizeof p->title, "Mr");
    else snprintf(p->title, sizeof p->title, "%s", rng_chance(&r, 0.5) ? "Mrs" : rng_chance(&r, 0.5) ? "Ms" : "Miss");
    int district = rng_chance(&r, 0.75) ? po->district : district_in_council(&r, po->council);
    snprintf(p->street, sizeof p->street, "%d %s", 1 + rng_int(&r, 250), streets[rng_int(&r, n_streets)]);
    make_postcode(&r, district, p->postcode);
    /* Ofcom's numbers reserved for drama: 07700 900000-900999 */
    snprintf(p->phone, sizeof p->phone, "07700 900%03d", rng_int(&r, 1000));
    p->acute = rng_chance(&r, 0.8) ? po->main_acute : rng_int(&r, N_ACUTE);

    /* conditions: prevalent at the start or diagnosed during the history */
    int years = w->p.years;
    for (int c = 0; c < N_CONDITIONS; c++) {
        const condition_def *cd = &conditions[c];
        double u = rng_unit(&r);
        double age_end = d.age + years;
        double p0 = d.age >= cd->min_age
                        ? logistic(w->cond_intercept[c] +
                                   cond_logit_base(cd, d.age, d.female, d.group, d.dep, d.latent))
                        : 0;
        double p1 = age_end >= cd->min_age
                        ? logistic(w->cond_intercept[c] +
                                   cond_logit_base(cd, age_end, d.female, d.group, d.dep, d.latent))
                        : 0;
        if (u < p0) {
            int earliest = p->birth_day + (int)(cd->min_age * 365.2425);
            int span = w->start_day - earliest;
            if (span > 20 * 365) span = 20 * 365;
            p->onset[c] = w->start_day - 1 - (span > 1 ? rng_int(&r, span) : 0);
        } else if (p1 > p0 && u < p1) {
            p->onset[c] = w->start_day + (int)((u - p0) / (p1 - p0) * (w->end_day - w->start_day));
            if (p->onset[c] < w->start_day) p->onset[c] = w->start_day;
        }
    }
    if (p->onset[C_T1DM] && p->onset[C_T2DM]) p->onset[C_T2DM] = 0;
    /* frailty deficits: probability doubling every ~8 years, from 50 */
    for (int i = 0; i < n_deficits && i < 24; i++) {
        double k = log(2.0) / 8.0;
        double pe = deficits[i].rate_at_80 * exp(k * (d.age + years - 80) + 0.35 * d.latent);
        double ps = deficits[i].rate_at_80 * exp(k * (d.age - 80) + 0.35 * d.latent);
        if (d.age + years < 50) continue;
        double u = rng_unit(&r);
        if (pe > 0.95) pe = 0.95;
        if (ps > 0.95) ps = 0.95;
        if (u < ps) p->deficit_onset[i] = w->start_day - 1 - rng_int(&r, 5 * 365);
        else if (u < pe) p->deficit_onset[i] = w->start_day + (int)((u - ps) / (pe - ps) * (w->end_day - w->start_day));
    }
    /* smoking (ONS Annual Population Survey 2022, London ~11.7% current) and BMI */
    if (age0 >= 16) {
        double u = rng_unit(&r);
        double cur = 0.11 + 0.012 * (5.5 - d.dep) + (has(p, C_COPD, w->end_day) ? 0.25 : 0);
        p->smoking = u < cur ? 0 : u < cur + 0.25 + (age0 > 50 ? 0.1 : 0) ? 1 : 2;
        p->bmi = 26.5 + 0.04 * (age0 - 45) + 0.2 * (5.5 - d.dep) + (has(p, C_T2DM, w->end_day) ? 3.5 : 0) +
                 4.5 * rng_normal(&r);
        if (p->bmi < 15) p->bmi = 15 + rng_unit(&r);
    } else {
        p->smoking = -1;
        p->bmi = 17 + 3 * rng_unit(&r);
    }
    p->hba1c_mean = has(p, C_T1DM, w->end_day) ? 68 + 12 * rng_normal(&r) : 56 + 11 * rng_normal(&r);
    if (p->hba1c_mean < 42) p->hba1c_mean = 42 + rng_unit(&r) * 5;

    /* medicines for each condition, from diagnosis */
    for (int i = 0; i < n_drugs && p->n_meds < MAX_MEDS; i++) {
        int c = drugs[i].condition;
        if (!p->onset[c] || !rng_chance(&r, drugs[i].share)) continue;
        int dup = 0;
        for (int k = 0; k < p->n_meds; k++)
            if (strcmp(drugs[p->meds[k].drug].code, drugs[i].code) == 0) dup = 1;
        if (dup) continue;
        synth_med *m = &p->meds[p->n_meds++];
        m->drug = (int16_t)i;
        m->start = p->onset[c] + 14 + rng_int(&r, 120);
        m->end = 0;
    }

    /* ---- the monthly history ---- */
    int nel_month[240] = {0}, ae_month[240] = {0};
    int last_discharge = -100000, in_hospital_until = -1, package_until = -1;
    int months = w->months;
    double hz_base[N_HAZARDS];
    for (int h = 0; h < N_HAZARDS; h++) hz_base[h] = w->hazard_intercept[h];
    for (int m = 0; m < months; m++) {
        int day0 = w->start_day + (int)(m * 30.436875);
        int day1 = w->start_day + (int)((m + 1) * 30.436875);
        if (day1 > w->end_day + 1) day1 = w->end_day + 1;
        if (!alive_registered(p, day0)) break;
        int ndays = day1 - day0;
        int age = (int)((int64_t)(day0 - p->birth_day) * 10000 / 3652425); /* whole years, near enough */
        int band = age_band_of(age);
        int frail = deficits_at(p, day0);
        if (frail > 20) frail = 20;
        double cond_nel = 0, cond_ae = 0, cond_op = 0, cond_death = 0;
        for (int c = 0; c < N_CONDITIONS; c++)
            if (has(p, c, day0)) {
                cond_nel += conditions[c].nel_lrr;
                cond_ae += conditions[c].ae_lrr;
                cond_op += conditions[c].op_lrr;
                cond_death += conditions[c].death_lrr;
            }
        int nel12 = 0, ae12 = 0;
        for (int k = m - 12 < 0 ? 0 : m - 12; k < m; k++) {
            nel12 += nel_month[k];
            ae12 += ae_month[k];
        }
        if (nel12 > 4) nel12 = 4;
        if (ae12 > 6) ae12 = 6;
        double dep = 5.5 - p->deprivation;
        int care_home = p->care_home_day && p->care_home_day <= day0;
        double lp[N_HAZARDS];
        for (int h = 0; h < N_HAZARDS; h++)
            lp[h] = hz_base[h] + age_lrr[h][band] + dep_lrr[h] * dep + frailty_lrr[h] * frail + 0.25 * p->latent;
        lp[HZ_NEL] += cond_nel + PRIOR_NEL_LRR * nel12 + PRIOR_AE_NEL_LRR * ae12 + (care_home ? 0.3 : 0) +
                      log(1 + SECULAR_TREND) * (double)m / 12.0;
        if (po->integrated && day0 >= w->programme_start_day && w->p.programme_effect < 1)
            lp[HZ_NEL] += log(1 - w->p.programme_effect);
        if (day0 - last_discharge < 30) lp[HZ_NEL] += READMIT_LRR;
        lp[HZ_AE] += cond_ae + PRIOR_AE_LRR * ae12 + 0.15 * nel12;
        lp[HZ_ELECTIVE] += 0.3 * cond_op;
        lp[HZ_OUTPATIENT] += cond_op + 0.2 * nel12;
        lp[HZ_COMMUNITY] += 0.5 * cond_nel + (care_home ? -1.0 : 0) + 0.3 * nel12;
        lp[HZ_SOCIAL] += 0.4 * cond_nel + (has(p, C_DEMENTIA, day0) ? 1.2 : 0) + 0.4 * nel12;
        lp[HZ_CARE_HOME] += (has(p, C_DEMENTIA, day0) ? 1.8 : 0) + 0.3 * nel12;
        lp[HZ_MH] += (has(p, C_SMI, day0) ? 4.0 : 0) + (has(p, C_DEPRESSION, day0) ? 1.8 : 0) +
                     (has(p, C_DEMENTIA, day0) ? 1.5 : 0);
        lp[HZ_GP] += 0.5 * cond_op + 0.1 * nel12;
        lp[HZ_DEATH] += cond_death + (p->female ? -0.3 : 0) + (care_home ? 0.8 : 0);
        double f = ndays / 365.2425; /* fraction of a year */

        /* death this month? */
        double pd = 1 - exp_neg(exp(lp[HZ_DEATH]) * f);
        int death_day = 0;
        if (rng_chance(&r, pd)) death_day = day0 + rng_int(&r, ndays);

        /* moving house, leaving the area, changing practice (adults, once) */
        if (!p->move_day && age >= 18 && !care_home && rng_chance(&r, 1 - exp_neg(MOVE_RATE * f))) {
            int mday = day0 + rng_int(&r, ndays);
            if (rng_chance(&r, LEAVE_SHARE)) {
                if (!death_day) {
                    p->end_day = mday;
                    p->left_area = 1;
                    add_event(p, EV_MOVE, 0, mday, mday, 600, 1, 0);
                }
            } else {
                memcpy(p->old_street, p->street, sizeof p->street);
                memcpy(p->old_postcode, p->postcode, sizeof p->postcode);
                p->move_day = mday;
                int council = rng_chance(&r, 0.7) ? po->council : rng_int(&r, N_COUNCILS);
                snprintf(p->street, sizeof p->street, "%d %s", 1 + rng_int(&r, 250), streets[rng_int(&r, n_streets)]);
                make_postcode(&r, district_in_council(&r, council), p->postcode);
                add_event(p, EV_MOVE, 0, mday, mday, 600, 0, 0);
                if (p->practice2 < 0 && rng_chance(&r, PRACTICE_CHANGE_SHARE)) {
                    int np2 = council * N_PRACTICES / N_COUNCILS + rng_int(&r, N_PRACTICES / N_COUNCILS);
                    if (np2 != practice && np2 < N_PRACTICES) {
                        p->practice2 = np2;
                        p->change_day = mday + 14 + rng_int(&r, 60);
                        add_event(p, EV_PRACTICE_CHANGE, np2, p->change_day, p->change_day, 600, 0, 0);
                    }
                }
            }
        }

        /* non-elective admission */
        double h_nel = exp(lp[HZ_NEL]);
        int hosp = rng_chance(&r, 0.85) ? p->acute : rng_int(&r, N_ACUTE);
        if (rng_chance(&r, 1 - exp_neg(h_nel * f))) {
            int day = day0 + rng_int(&r, ndays);
            if (day > in_hospital_until && (!death_day || day < death_day) && alive_registered(p, day)) {
                int reason = pick_nel_reason(&r, p, day, frail);
                int los = length_of_stay(&r, nel_reasons[reason].los_median, age);
                int end = day + los;
                if (end > w->end_day) end = w->end_day;
                int flags = 0, minute = rng_int(&r, 1440);
                if (day - last_discharge < 30) {
                    flags |= EVF_READMIT;
                    p->n_readmit++;
                }
                if (rng_chance(&r, VIA_AE_SHARE)) {
                    flags |= EVF_VIA_AE;
                    int ae_min = minute > 240 ? minute - 240 : 0;
                    add_event(p, EV_AE, hosp, day, day, ae_min, reason, EVF_ADMITTED);
                    ae_month[m]++;
                    p->n_ae++;
                }
                if (los >= 2 && rng_chance(&r, 0.3)) flags |= EVF_TRANSFER;
                add_event(p, EV_NEL, hosp, day, end, minute, reason, flags);
                nel_month[m]++;
                p->n_nel++;
                last_discharge = end;
                in_hospital_until = end;
            }
        }
        /* A&E attendances that do not end in admission */
        int n_ae = rng_poisson(&r, exp(lp[HZ_AE]) * f);
        for (int k = 0; k < n_ae; k++) {
            int day = day0 + rng_int(&r, ndays);
            if (day <= in_hospital_until || (death_day && day >= death_day) || !alive_registered(p, day)) continue;
            int h2 = rng_chance(&r, 0.8) ? p->acute : rng_int(&r, N_ACUTE);
            add_event(p, EV_AE, h2, day, day, rng_int(&r, 1440), -1, 0);
            ae_month[m]++;
            p->n_ae++;
        }
        /* elective admission */
        if (rng_chance(&r, 1 - exp_neg(exp(lp[HZ_ELECTIVE]) * f))) {
            int day = day0 + rng_int(&r, ndays);
            if (day > in_hospital_until && (!death_day || day < death_day) && alive_registered(p, day)) {
                int proc = pick_elective(&r, age);
                int los = electives[proc].day_case ? 0 : 2 + rng_int(&r, 4);
                int end = day + los > w->end_day ? w->end_day : day + los;
                add_event(p, EV_ELECTIVE, p->acute, day, end, 420 + rng_int(&r, 180), proc, 0);
                in_hospital_until = end;
            }
        }
        /* outpatients, community nursing, mental health, GP consultations */
        static const struct {
            int hz, kind;
        } contacts[] = {{HZ_OUTPATIENT, EV_OUTPATIENT}, {HZ_COMMUNITY, EV_COMMUNITY}, {HZ_MH, EV_MH_CONTACT},
                        {HZ_GP, EV_GP_CONSULT}};
        for (size_t c = 0; c < sizeof contacts / sizeof contacts[0]; c++) {
            int n = rng_poisson(&r, exp(lp[contacts[c].hz]) * f);
            if (n > 20) n = 20;
            for (int k = 0; k < n; k++) {
                int day = day0 + rng_int(&r, ndays);
                if (day <= in_hospital_until && day >= in_hospital_until - 120) continue;
                if ((death_day && day >= death_day) || !alive_registered(p, day)) continue;
                int org = 0, code = 0;
                switch (contacts[c].kind) {
                case EV_OUTPATIENT:
                    org = rng_chance(&r, 0.85) ? p->acute : rng_int(&r, N_ACUTE);
                    code = pick_specialty(&r, p, day);
                    break;
                case EV_COMMUNITY:
                    org = w->practices[person_practice_at(p, day)].community;
                    code = pick_community_service(&r, p, day);
                    break;
                case EV_MH_CONTACT: code = pick_mh_service(&r, p, day, age); break;
                default: org = person_practice_at(p, day); break;
                }
                add_event(p, contacts[c].kind, org, day, day, 480 + rng_int(&r, 600), code, 0);
            }
        }
        /* social care package */
        if (day0 > package_until && rng_chance(&r, 1 - exp_neg(exp(lp[HZ_SOCIAL]) * f))) {
            int day = day0 + rng_int(&r, ndays);
            if ((!death_day || day < death_day) && alive_registered(p, day)) {
                double sw[6] = {50, 15, 15, 10, 5, 5};
                int svc = rng_weighted(&r, sw, 6);
                int dur = 30 + (int)(-log(1 - rng_unit(&r)) * 365);
                int end = day + dur;
                int council = districts[0].council;
                /* the council of the person's current postcode district */
                for (int i = 0; i < n_districts; i++) {
                    size_t l = strlen(districts[i].district);
                    if (strncmp(p->postcode, districts[i].district, l) == 0 && p->postcode[l] == ' ')
                        council = districts[i].council;
                }
                int ev = add_event(p, EV_SOCIAL_PACKAGE, council, day, end, 540, svc, 0);
                if (ev >= 0) p->events[ev].extra = (int16_t)(svc == 0 ? 5 + rng_int(&r, 20) : 0);
                package_until = end;
            }
        }
        /* care home admission (once) */
        if (!p->care_home_day && age >= 65 && rng_chance(&r, 1 - exp_neg(exp(lp[HZ_CARE_HOME]) * f))) {
            int day = day0 + rng_int(&r, ndays);
            if ((!death_day || day < death_day) && alive_registered(p, day)) {
                p->care_home_day = day;
                int council = po->council;
                int nursing = rng_chance(&r, 0.4);
                add_event(p, EV_CARE_HOME, council, day, day, 600, nursing ? 7 : 6, 0);
                if (!p->move_day) { /* the care home becomes the address */
                    memcpy(p->old_street, p->street, sizeof p->street);
                    memcpy(p->old_postcode, p->postcode, sizeof p->postcode);
                    p->move_day = day;
                    snprintf(p->street, sizeof p->street, "%s Care Home", streets[rng_int(&r, n_streets)]);
                    make_postcode(&r, district_in_council(&r, council), p->postcode);
                }
            }
        }
        if (death_day) {
            if (death_day > w->end_day) death_day = w->end_day;
            if (death_day > in_hospital_until && rng_chance(&r, DIED_IN_HOSPITAL)) {
                int los = 1 + rng_int(&r, 10);
                int start = death_day - los < day0 ? day0 : death_day - los;
                if (start > in_hospital_until) {
                    int reason = pick_nel_reason(&r, p, start, frail);
                    add_event(p, EV_NEL, p->acute, start, death_day, rng_int(&r, 1440), reason, EVF_DIED | EVF_VIA_AE);
                    add_event(p, EV_AE, p->acute, start, start, 0, reason, EVF_ADMITTED);
                    nel_month[m]++;
                    p->n_nel++;
                    p->n_ae++;
                }
            }
            p->death_day = death_day;
            if (p->end_day > death_day) p->end_day = death_day;
            p->left_area = 0;
            add_event(p, EV_DEATH, 0, death_day, death_day, 0, 0, 0);
            break;
        }
    }

    /* ---- primary care reviews and observations, year by year ---- */
    int by, bm, bd;
    civil_from_day(p->birth_day, &by, &bm, &bd);
    int y0, m0, d0;
    civil_from_day(w->start_day, &y0, &m0, &d0);
    for (int y = y0; y <= w->p.end_year; y++) {
        int review = day_from_civil(y, bm, bd > 28 ? 28 : bd) + rng_int(&r, 40) - 20;
        if (review < w->start_day || review > w->end_day || !alive_registered(p, review)) continue;
        const synth_org *rp = person_practice_org(w, p, review);
        double q = rp->quality;
        int age = person_age_years(p, review);
        int diabetic = has(p, C_T2DM, review) || has(p, C_T1DM, review);
        int vascular = has(p, C_HYPERTENSION, review) || has(p, C_CHD, review) || has(p, C_HF, review) ||
                       has(p, C_STROKE, review) || has(p, C_AF, review) || has(p, C_CKD, review);
        int ckd = has(p, C_CKD, review);
        int n0 = p->n_obs;
        int on_statin = 0;
        for (int k = 0; k < p->n_meds; k++)
            if (strcmp(drugs[p->meds[k].drug].display, "Atorvastatin") == 0 && p->meds[k].start <= review)
                on_statin = 1;
        double egfr = ckd ? 42 + 9 * rng_normal(&r) : 105 - 0.75 * (age > 30 ? age - 30 : 0) + 10 * rng_normal(&r);
        if (egfr < 8) egfr = 8;
        if (egfr > 130) egfr = 130;
        if (diabetic || vascular || (age >= 18 && rng_chance(&r, 0.2 * q))) {
            if (diabetic || vascular ? rng_chance(&r, q) : 1) {
                double sys = 118 + 0.45 * (age - 40) + (has(p, C_HYPERTENSION, review) ? 12 : 0) + 12 * rng_normal(&r);
                double dia = 76 + 0.1 * (age - 40) + (has(p, C_HYPERTENSION, review) ? 5 : 0) + 8 * rng_normal(&r);
                if (sys < 85) sys = 85 + rng_unit(&r) * 10;
                if (dia < 45) dia = 45 + rng_unit(&r) * 10;
                if (dia > sys - 20) dia = sys - 20;
                add_obs(p, OBS_SYSTOLIC, review, floor(sys + 0.5), floor(dia + 0.5));
            }
        }
        if (diabetic) {
            if (rng_chance(&r, q)) add_obs(p, OBS_HBA1C, review, floor(p->hba1c_mean + 6 * rng_normal(&r) + 0.5), 0);
            if (rng_chance(&r, q * 0.9))
                add_obs(p, OBS_CHOLESTEROL, review, (on_statin ? 3.9 : 4.9) + 0.8 * rng_normal(&r), 0);
        } else if ((has(p, C_CHD, review) || has(p, C_STROKE, review)) && rng_chance(&r, q * 0.8)) {
            add_obs(p, OBS_CHOLESTEROL, review, (on_statin ? 3.9 : 4.9) + 0.8 * rng_normal(&r), 0);
        }
        if ((diabetic || ckd || vascular) && rng_chance(&r, diabetic || ckd ? q : q * 0.6)) {
            /* creatinine from eGFR by inverting the shape of CKD-EPI (approximate) */
            double creat = 80.0 * pow(90.0 / egfr, 1.0 / 1.1) * (p->female ? 0.85 : 1.0);
            add_obs(p, OBS_CREATININE, review, floor(creat + 0.5), 0);
            add_obs(p, OBS_EGFR, review, floor(egfr + 0.5), 0);
        }
        if ((diabetic || ckd) && rng_chance(&r, q * 0.7)) {
            double acr = (ckd ? 3.0 : diabetic ? 1.6 : 0.8) * exp(0.9 * rng_normal(&r));
            add_obs(p, OBS_ACR, review, acr, 0);
        }
        if (diabetic && rng_chance(&r, q * 0.85)) add_obs(p, OBS_FOOT, review, 0, 0);
        if ((diabetic && rng_chance(&r, q)) || (age >= 18 && rng_chance(&r, 0.12)))
            add_obs(p, OBS_BMI, review, floor((p->bmi + 0.5 * rng_normal(&r)) * 10 + 0.5) / 10.0, 0);
        if (age >= 16 && ((diabetic && rng_chance(&r, q)) || rng_chance(&r, 0.15))) {
            int s = p->smoking;
            if (s == 0 && rng_chance(&r, 0.05)) p->smoking = s = 1; /* some quit */
            add_obs(p, OBS_SMOKING, review, s < 0 ? 2 : s, 0);
        }
        if (p->n_obs > n0) add_event(p, EV_GP_REVIEW, person_practice_at(p, review), review, review, 540, 0, 0);
    }

    /* events in time order (insertion sort: they are nearly sorted) */
    for (int i = 1; i < p->n_events; i++) {
        synth_event e = p->events[i];
        int j = i - 1;
        while (j >= 0 && (p->events[j].day > e.day || (p->events[j].day == e.day && p->events[j].minute > e.minute))) {
            p->events[j + 1] = p->events[j];
            j--;
        }
        p->events[j + 1] = e;
    }
    /* per-provider sequence numbers */
    int seq[N_EVENT_KINDS][8];
    memset(seq, 0, sizeof seq);
    for (int i = 0; i < p->n_events; i++) {
        synth_event *e = &p->events[i];
        int o = e->org < 8 && e->org >= 0 ? e->org : 0;
        e->seq = (int16_t)seq[e->kind][o]++;
    }
}

void person_generate(const synth_world *w, int64_t index, synth_person *p) {
    person_simulate(w, index, practice_of_index(w, index), w->p.seed, p);
}

/* ---- calibration ----------------------------------------------------------------- */
#define PILOT_PEOPLE 6000
#define PILOT_SEED 0x5EED5EEDULL

static void calibrate_conditions(synth_world *w) {
    /* a fixed pilot sample of demographics; bisection per condition */
    enum { N = 20000 };
    demo_draw *dd = malloc(sizeof *dd * N);
    rng r;
    rng_seed(&r, PILOT_SEED, 7);
    for (int i = 0; i < N; i++) draw_demographics(&r, &w->practices[i % N_PRACTICES], &dd[i]);
    for (int c = 0; c < N_CONDITIONS; c++) {
        const condition_def *cd = &conditions[c];
        double lo = -20, hi = 10;
        for (int it = 0; it < 40; it++) {
            double a = (lo + hi) / 2, sum = 0;
            for (int i = 0; i < N; i++)
                if (dd[i].age >= cd->min_age)
                    sum += logistic(a + cond_logit_base(cd, dd[i].age, dd[i].female, dd[i].group, dd[i].dep,
                                                        dd[i].latent));
            if (sum / N < cd->target) lo = a;
            else hi = a;
        }
        w->cond_intercept[c] = (lo + hi) / 2;
    }
    free(dd);
}

static void calibrate_hazards(synth_world *w) {
    static const double start[N_HAZARDS] = {-1.6, -3.2, -2.5, -0.4, -2.0, -5.5, -6.0, -3.5, -0.1, -6.0};
    for (int h = 0; h < N_HAZARDS; h++) w->hazard_intercept[h] = start[h];
    synth_person *p = malloc(sizeof *p);
    for (int iter = 0; iter < 4; iter++) {
        double count[N_HAZARDS] = {0}, via_ae = 0, py = 0;
        for (int i = 0; i < PILOT_PEOPLE; i++) {
            person_simulate(w, (int64_t)i, i % N_PRACTICES, PILOT_SEED, p);
            py += (p->end_day - p->start_day) / 365.2425;
            for (int k = 0; k < p->n_events; k++) {
                const synth_event *e = &p->events[k];
                switch (e->kind) {
                case EV_AE:
                    count[HZ_AE]++;
                    if (e->flags & EVF_ADMITTED) via_ae++;
                    break;
                case EV_NEL: count[HZ_NEL]++; break;
                case EV_ELECTIVE: count[HZ_ELECTIVE]++; break;
                case EV_OUTPATIENT: count[HZ_OUTPATIENT]++; break;
                case EV_COMMUNITY: count[HZ_COMMUNITY]++; break;
                case EV_SOCIAL_PACKAGE: count[HZ_SOCIAL]++; break;
                case EV_CARE_HOME: count[HZ_CARE_HOME]++; break;
                case EV_MH_CONTACT: count[HZ_MH]++; break;
                case EV_GP_CONSULT: count[HZ_GP]++; break;
                case EV_DEATH: count[HZ_DEATH]++; break;
                default: break;
                }
            }
        }
        for (int h = 0; h < N_HAZARDS; h++) {
            double target = hazards[h].target * py / 1000.0, got = count[h];
            if (h == HZ_AE) { /* the A&E-only hazard makes up what admissions do not */
                target -= via_ae;
                got -= via_ae;
            }
            if (got < 1) got = 1;
            if (target < 1) target = 1;
            w->hazard_intercept[h] += log(target / got);
        }
    }
    free(p);
}

status synth_world_build(const synth_params *params, synth_world **out, err *e) {
    *out = NULL;
    if (params->patients < 1 || params->patients > 20000000)
        return err_set(e, ST_INVALID, "value", "patients", "patients must be 1..20,000,000");
    if (params->years < 1 || params->years > 20)
        return err_set(e, ST_INVALID, "value", "years", "years must be 1..20");
    synth_world *w = calloc(1, sizeof *w);
    if (!w) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    w->p = *params;
    if (w->p.programme_months < 0) w->p.programme_months = 0;
    if (w->p.programme_months > w->p.years * 12) w->p.programme_months = w->p.years * 12;
    w->start_day = day_from_civil(w->p.end_year - w->p.years + 1, 1, 1);
    w->end_day = day_from_civil(w->p.end_year, 12, 31);
    w->months = w->p.years * 12;
    w->programme_start_day = day_from_civil(w->p.end_year, 12, 31) + 1 -
                             (int)(w->p.programme_months * 30.436875);
    build_orgs(w);
    /* NHS numbers: the range reserved for testing, 999 000 0000 upwards,
     * skipping prefixes with no valid check digit; past 999 999 999 the
     * numbers continue downwards from 998 999 999 (docs/synth.md) */
    w->nhs_prefix = malloc(sizeof *w->nhs_prefix * (size_t)w->p.patients);
    if (!w->nhs_prefix) {
        free(w);
        return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    }
    uint32_t prefix = 999000000u;
    int down = 0;
    for (int64_t i = 0; i < w->p.patients;) {
        char d[10];
        snprintf(d, sizeof d, "%09u", prefix);
        if (synth_nhs_check_digit(d) != 10) w->nhs_prefix[i++] = prefix;
        if (!down && prefix == 999999999u) {
            down = 1;
            prefix = 998999999u;
        } else if (down) prefix--;
        else prefix++;
    }
    calibrate_conditions(w);
    calibrate_hazards(w);
    *out = w;
    return ST_OK;
}

void synth_world_free(synth_world *w) {
    if (!w) return;
    free(w->nhs_prefix);
    free(w);
}

int64_t synth_world_patients(const synth_world *w) { return w->p.patients; }
