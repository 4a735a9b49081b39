/*
 * synth_int.h — the synthetic population's internals, shared by model.c
 * (people and their histories), tables.c (code lists and parameters as
 * data), fhir_out.c, hl7_out.c, csv_out.c and feeds.c.
 *
 * Invariants:
 *   - A person is a pure function of (world, index): person_generate seeds
 *     the person's own xoshiro256** stream from splitmix64(seed, index).
 *   - Days are counted from 1970-01-01 (day 0); times are minutes of the day.
 *   - Events of a person are in time order (event.day, then minute).
 */
#ifndef CONCORD_SYNTH_INT_H
#define CONCORD_SYNTH_INT_H

#include <math.h>
#include <stdint.h>

#include "../base/buf.h"
#include "synth.h"

/* ---- random numbers: splitmix64 seeds xoshiro256** --------------------- */
typedef struct rng {
    uint64_t s[4];
} rng;

static inline uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline void rng_seed(rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}
static inline uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t t = s[1] << 17, x = s[1] * 5;
    uint64_t res = ((x << 7) | (x >> 57)) * 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return res;
}
static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static inline int rng_int(rng *r, int n) { return n <= 0 ? 0 : (int)(rng_unit(r) * n); }
static inline int rng_chance(rng *r, double p) { return rng_unit(r) < p; }
double rng_normal(rng *r);
int rng_poisson(rng *r, double mean);
/* Index drawn from cumulative weights w[0..n-1] (not normalised). */
int rng_weighted(rng *r, const double *w, int n);

/* ---- dates --------------------------------------------------------------- */
int day_from_civil(int y, int m, int d);
void civil_from_day(int day, int *y, int *m, int *d);
/* "YYYY-MM-DD" (10 chars + NUL) */
void fmt_date(char out[11], int day);

/* ---- the model's vocabulary ---------------------------------------------- */
enum setting { SET_PRIMARY, SET_ACUTE, SET_COMMUNITY, SET_SOCIAL, SET_MENTAL, N_SETTINGS };
extern const char *const setting_code[N_SETTINGS];
extern const char *const setting_display[N_SETTINGS];

enum org_kind { ORG_PRACTICE, ORG_ACUTE, ORG_COMMUNITY, ORG_COUNCIL, ORG_MENTAL_HEALTH };

#define N_PRACTICES 93
#define N_ACUTE 4
#define N_COMMUNITY 3
#define N_COUNCILS 5
#define N_MENTAL 1
#define N_MDG 10

typedef struct synth_org {
    char code[12];
    char name[72];
    int kind, index;
    /* practices */
    int mdg, council, community, main_acute, district;
    double quality;     /* probability a due care process is done */
    double deprivation; /* mean IMD decile of the list (1 = most deprived) */
    int integrated;     /* in the integrated care programme */
    int64_t list_size, first_person;
    char postcode[12], street[48];
} synth_org;

enum condition {
    C_T2DM, C_T1DM, C_HYPERTENSION, C_ASTHMA, C_COPD, C_CHD, C_HF, C_AF, C_STROKE, C_CKD, C_DEMENTIA,
    C_DEPRESSION, C_SMI, C_CANCER, C_HYPOTHYROID, C_OSTEOARTHRITIS, C_EPILEPSY, C_LD, N_CONDITIONS
};

typedef struct condition_def {
    const char *name;
    const char *snomed, *snomed_display;
    const char *icd10, *icd10_display;
    double target;      /* prevalence among everyone eligible (min_age+) at the start */
    int min_age;
    double age_slope;   /* log-odds per 10 years of age */
    double peak_age;    /* age after which the age effect stops rising (0 = never) */
    double dep_slope;   /* log-odds per decile towards the most deprived */
    double eth[5];      /* log-odds by ethnic group: white, asian, black, mixed, other */
    double female;      /* log-odds for women */
    double latent;      /* loading on the shared ill-health factor */
    double nel_lrr;     /* log rate ratio on non-elective admission */
    double ae_lrr;      /* on A&E attendance */
    double op_lrr;      /* on outpatient attendance */
    double death_lrr;   /* on death */
    const char *source;
} condition_def;
extern const condition_def conditions[N_CONDITIONS];

typedef struct code_def {
    const char *code, *display;
} code_def;

enum ethnic_group { ETH_WHITE, ETH_ASIAN, ETH_BLACK, ETH_MIXED, ETH_OTHER };
typedef struct ethnicity_def {
    const char *code, *display; /* NHS Data Dictionary ethnic category */
    int group;
    double share;
} ethnicity_def;
extern const ethnicity_def ethnicities[];
extern const int n_ethnicities;

typedef struct age_band {
    int lo, hi;
    double share;      /* of the population */
    double female;     /* share female */
} age_band;
extern const age_band age_bands[];
extern const int n_age_bands;

/* Observation kinds (GP) */
enum obs_kind {
    OBS_HBA1C, OBS_SYSTOLIC, OBS_DIASTOLIC, OBS_CHOLESTEROL, OBS_CREATININE, OBS_EGFR, OBS_ACR, OBS_BMI,
    OBS_SMOKING, OBS_FOOT, N_OBS_KINDS
};
typedef struct obs_def {
    const char *snomed, *display, *unit, *ucum;
    const char *category; /* vital-signs, laboratory, social-history, exam */
} obs_def;
extern const obs_def obs_defs[N_OBS_KINDS];
extern const code_def smoking_codes[3]; /* current, ex, never */

typedef struct drug_def {
    const char *code, *display;
    int condition;  /* the condition it treats */
    double share;   /* probability someone with the condition takes it */
} drug_def;
extern const drug_def drugs[];
extern const int n_drugs;

typedef struct deficit_def {
    const char *snomed, *display;
    double rate_at_80; /* probability at age 80 */
} deficit_def;
extern const deficit_def deficits[];
extern const int n_deficits;

/* Non-elective admission reasons: ICD-10 primary diagnosis and who gets it */
typedef struct admission_reason {
    const char *icd10, *display;
    int condition;     /* -1: anyone */
    double weight;
    int frail;         /* more likely with frailty */
    double los_median; /* days */
} admission_reason;
extern const admission_reason nel_reasons[];
extern const int n_nel_reasons;

typedef struct elective_def {
    const char *opcs, *opcs_display, *icd10, *icd10_display;
    int min_age;
    int day_case; /* 1 = same-day discharge */
    double weight;
    int specialty;
} elective_def;
extern const elective_def electives[];
extern const int n_electives;

typedef struct specialty_def {
    const char *code, *display; /* NHS treatment function code */
    int condition;              /* -1: general */
    double weight;
} specialty_def;
extern const specialty_def specialties[];
extern const int n_specialties;

typedef struct lab_def {
    const char *loinc, *display, *unit;
    double lo, hi, mean, sd; /* reference range and distribution */
    int decimals;
} lab_def;
extern const lab_def lab_tests[];
extern const int n_lab_tests;

typedef struct name_pool {
    const char *const *family;
    int n_family;
    const char *const *male;
    int n_male;
    const char *const *female;
    int n_female;
} name_pool;
extern const name_pool name_pools[5];
extern const char *const streets[];
extern const int n_streets;
typedef struct district_def {
    const char *district; /* postcode district */
    int council;
} district_def;
extern const district_def districts[];
extern const int n_districts;
/* Given-name variants (formal -> familiar) for planted name errors */
extern const char *const nicknames[][2];
extern const int n_nicknames;

extern const code_def social_services[];
extern const int n_social_services;
extern const code_def community_services[];
extern const int n_community_services;
extern const code_def mh_services[];
extern const int n_mh_services;

/* ---- a person and their history ----------------------------------------- */
enum event_kind {
    EV_GP_CONSULT, EV_GP_REVIEW, EV_AE, EV_NEL, EV_ELECTIVE, EV_OUTPATIENT, EV_COMMUNITY, EV_SOCIAL_PACKAGE,
    EV_CARE_HOME, EV_MH_CONTACT, EV_MOVE, EV_PRACTICE_CHANGE, EV_DEATH, N_EVENT_KINDS
};

typedef struct synth_event {
    int16_t kind;
    int16_t org;      /* provider index within its kind (hospital, community, council...) */
    int day, end_day; /* end_day: discharge/end of package; = day for contacts */
    int16_t minute, end_minute;
    int16_t code;     /* nel reason / elective / specialty / service index */
    int16_t flags;    /* EVF_* */
    int16_t seq;      /* index of the event among the person's events of this provider */
    int16_t extra;    /* hours per week, ward, ... */
} synth_event;
#define EVF_VIA_AE 1     /* NEL admitted through A&E */
#define EVF_READMIT 2    /* NEL within 30 days of a discharge */
#define EVF_TRANSFER 4   /* ward transfer during stay (A02) */
#define EVF_ADMITTED 8   /* A&E attendance ending in admission */
#define EVF_DIED 16      /* died in hospital */

typedef struct synth_obs {
    int16_t kind;
    int day;
    float value, value2;
} synth_obs;

typedef struct synth_med {
    int16_t drug;
    int start, end; /* end 0 = still taking */
} synth_med;

#define MAX_EVENTS 1536
#define MAX_OBS 768
#define MAX_MEDS 40

typedef struct synth_person {
    int64_t index;
    char id[16];
    char nhs[11];
    int female, ethnicity, group, deprivation;
    int birth_day, death_day; /* death_day 0: alive at the end */
    int practice, practice2, change_day; /* practice2 >= 0 after a change of practice on change_day */
    int start_day, end_day;              /* registered from start_day (the history start) to end_day */
    int left_area;                       /* end_day is a move out of the area */
    char given[24], family[32], title[8];
    char street[48], postcode[10];
    char old_street[48], old_postcode[10]; /* before the move (move_day > 0) */
    int move_day;
    char phone[16];
    int acute; /* home hospital */
    int onset[N_CONDITIONS]; /* day of diagnosis; 0 = never */
    int deficit_onset[24];   /* frailty deficit onset days; 0 = none */
    int smoking;             /* 0 current 1 ex 2 never; -1 child */
    double bmi, hba1c_mean, latent;
    int care_home_day;
    int n_events, n_obs, n_meds;
    synth_event events[MAX_EVENTS];
    synth_obs obs[MAX_OBS];
    synth_med meds[MAX_MEDS];
    /* model outputs for tests and the manifest */
    int n_nel, n_ae, n_readmit;
} synth_person;

/* Calibrated model constants */
enum hazard_kind { HZ_AE, HZ_NEL, HZ_ELECTIVE, HZ_OUTPATIENT, HZ_COMMUNITY, HZ_SOCIAL, HZ_CARE_HOME, HZ_MH,
                   HZ_GP, HZ_DEATH, N_HAZARDS };
typedef struct hazard_def {
    const char *name;
    double target; /* events per 1,000 person-years */
    const char *source;
} hazard_def;
extern const hazard_def hazards[N_HAZARDS];

struct synth_world {
    synth_params p;
    synth_org practices[N_PRACTICES], acutes[N_ACUTE], communities[N_COMMUNITY], councils[N_COUNCILS],
        mental[N_MENTAL];
    double cond_intercept[N_CONDITIONS];
    double hazard_intercept[N_HAZARDS];
    int start_day, end_day, months, programme_start_day;
    uint32_t *nhs_prefix; /* valid 9-digit prefixes, one per person */
};

void person_generate(const synth_world *w, int64_t index, synth_person *p);
int person_practice_at(const synth_person *p, int day);
int person_age_years(const synth_person *p, int day);
const synth_org *person_practice_org(const synth_world *w, const synth_person *p, int day);

/* The integrated FHIR record of one person (fhir_out.c). */
int fhir_person(const synth_world *w, const synth_person *p, buf *scratch, synth_resource_fn fn, void *arg);
int fhir_orgs(const synth_world *w, buf *scratch, synth_resource_fn fn, void *arg);
/* One FHIR Patient as the GP extract would send it, with optional planted
 * demographic differences (NULL fields: the true value). */
typedef struct demog {
    const char *nhs; /* "" = missing */
    const char *given, *family, *postcode, *street;
    int birth_day;
} demog;
void demog_true(const synth_person *p, int day, demog *d);
void fhir_patient(buf *b, const synth_world *w, const synth_person *p, const char *id, const demog *d,
                  int practice, int setting, const char *source_org);
/* The GP record of a person's clinical content (conditions, observations,
 * medications, consultations) for the GP extract; `pid` is the Patient id
 * the resources refer to; one resource per line into `b`. Returns count. */
int fhir_gp_clinical(buf *b, const synth_world *w, const synth_person *p, const char *pid, int practice);

/* 1: leave meta.tag out of resources formatted on this thread (extracts). */
void fhir_set_extract_mode(int on);

/* Small string helpers (fhir_out.c); put_c is buf_putc without the call */
static inline void put_c(buf *b, char c) {
    if (b->len + 2 > b->cap) buf_reserve(b, 1);
    b->p[b->len++] = c;
    b->p[b->len] = 0;
}
/* exp(-x) for the small x of monthly hazards: a series below 0.05 (error
 * < 1e-8), the library above */
static inline double exp_neg(double x) {
    return x < 0.05 ? 1 - x * (1 - x * (0.5 - x * (1.0 / 6 - x / 24))) : exp(-x);
}
void put_str(buf *b, const char *s);
void put_int(buf *b, long long v);
void put_fixed(buf *b, double v, int decimals);
void put_json_str(buf *b, const char *s); /* quoted and escaped */

#endif
