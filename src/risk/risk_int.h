/*
 * risk_int.h — what the files of src/risk share: a person's facts decoded
 * into arrays, the code-list tables, the feature table of the admission
 * model, the model itself, and the index results.
 *
 * The fact text (risk_fact.facts, owned by facts.c) is one line per fact,
 * fields separated by '|', dates as days since 1970-01-01 (empty =
 * unknown). Every line's second field is the rkey of the resource it came
 * from, so a new version of a resource replaces exactly its own lines:
 *
 *   P|rkey|birth|sex|death|postcode|practice|active        Patient
 *   C|rkey|sys|code|day|stored|encounter-id|category      Condition (sys s=SNOMED CT, i=ICD-10)
 *   E|rkey|kind|start|end|adm|disch|dx|id                  Encounter
 *        kind a=admission e=A&E o=outpatient g=GP c=community m=mental health x=other
 *        adm  e=emergency (method 2x) l=elective (1x) n=other non-elective (3x/8x) u=unknown
 *        disch: discharge disposition code; dx: first ICD-10 reason (dots removed)
 *   M|rkey|start|end                                      MedicationStatement (taken from start to end)
 *   S|rkey|home|type|start|end                            EpisodeOfCare from social care (home 1 = care home)
 *   K|rkey|active|day                                     CarePlan (day: created or last updated)
 *
 * The text is printable ASCII with no '|' or newline inside a field, so
 * it travels as TEXT on both backends.
 */
#ifndef CONCORD_RISK_INT_H
#define CONCORD_RISK_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/arena.h"
#include "../base/buf.h"
#include "risk.h"

/* ---- a person's facts, decoded -------------------------------------------- */

typedef struct rk_cond {
    char sys;         /* 's' SNOMED CT, 'i' ICD-10 */
    char cat;         /* 'p' problem list, 'e' encounter diagnosis, '-' other */
    int32_t day;      /* onset/recorded, else the encounter's start, else when stored */
    int32_t stored;   /* the day the version was stored (meta.lastUpdated) */
    const char *code; /* ICD-10 without dots, upper case */
    const char *enc;  /* encounter id, or "" */
} rk_cond;

typedef struct rk_enc {
    char kind;          /* a e o g c m x */
    char adm;           /* e l n u (admissions) */
    int32_t start, end; /* end RK_NODAY while in progress */
    const char *disch, *dx, *id;
} rk_enc;

typedef struct rk_span {
    int32_t start, end; /* end RK_NODAY: open */
    char home;          /* social care: 1 = care home placement */
    const char *type;
} rk_span;

typedef struct rk_person {
    int64_t pkey;
    const char *patient_id;
    int has_patient, active;
    int32_t birth, death;
    char sex; /* m f o u */
    const char *postcode, *practice;
    rk_cond *cond;
    int ncond;
    rk_enc *enc; /* sorted by start */
    int nenc;
    rk_span *med, *soc;
    int nmed, nsoc;
    int care_plan_active;
    int32_t last_review; /* latest care plan day, RK_NODAY if none */
    int32_t last_event;  /* latest day of any fact */
} rk_person;

/* Decode fact text (modified in place: fields are cut out of it) into `p`,
 * arrays from `a`. Returns 0, or -1 if the text is malformed (p is then
 * partly filled; bad lines are skipped, never guessed). */
int rk_person_decode(char *text, size_t len, arena *a, rk_person *p);

/* Encode one resource's facts (facts.c); appended to out. */
int rk_facts_extract(const char *type, json_t *res, int64_t rkey, buf *out);

/* ---- code lists (codes.c) ------------------------------------------------- */

#define RK_EFI_DEFICITS 36
#define RK_CHARLSON     17
#define RK_MAX_LTC      32
#define RK_MAX_BANDS    6

typedef struct rk_codeinfo {
    uint64_t efi;      /* bit d-1: eFI deficit d */
    uint32_t charlson; /* bit k-1: Charlson condition k */
    uint32_t ltc;      /* bit g: long-term condition group g */
    int hfrs_tenths;   /* HFRS points x 10 of the three-character code (ICD-10), 0 if none */
} rk_codeinfo;

typedef struct rk_band {
    char name[24];
    int cmp; /* 0 lt, 1 le, 2 none (the last band) */
    double bound;
} rk_band;

typedef struct rk_bands {
    rk_band v[RK_MAX_BANDS];
    int n;
} rk_bands;

typedef struct rk_index_def {
    int min_age;
    int lookback_days; /* 0 = all */
} rk_index_def;

struct risk_codes {
    /* open-addressing hash of "s:<code>" / "i:<code>" -> info */
    struct rk_code_slot {
        char *key;
        rk_codeinfo info;
    } * slots;
    size_t nslots, nkeys;
    char efi_name[RK_EFI_DEFICITS][48];
    int efi_rule_polypharmacy; /* deficit number of the polypharmacy rule (0 none) */
    int efi_polypharmacy_min;  /* medicines */
    int efi_rule_care;         /* deficit number of the requirement-for-care rule (0 none) */
    char charlson_id[RK_CHARLSON][16];
    char charlson_name[RK_CHARLSON][96];
    int charlson_w1987[RK_CHARLSON], charlson_w2011[RK_CHARLSON];
    int nltc;
    char ltc_id[RK_MAX_LTC][16];
    char ltc_name[RK_MAX_LTC][48];
    int hfrs_codes;
    int lace_points[4][8][3]; /* component L A C E: rows of (from, to, points) */
    int lace_rows[4];
    rk_bands bands_efi, bands_hfrs, bands_lace;
    rk_index_def def_efi, def_hfrs, def_charlson, def_lace;
    risk_tiers tiers;
    char dir[512];
    /* rk_factor_sensitivity's table, computed once on first use (the
     * access policy is loaded by then): categories of each condition group */
    pthread_mutex_t sens_lock;
    _Atomic int sens_ready;
    unsigned ltc_sens[RK_MAX_LTC];
};

/* What a code of a system contributes (all-zero if nothing). ICD-10: the
 * union over the code's prefixes of length 1..full. */
rk_codeinfo rk_code_lookup(const risk_codes *c, char sys, const char *code);

/* ---- indices (indices.c) -------------------------------------------------- */

typedef struct rk_indices {
    int age;          /* whole years on the date, -1 unknown */
    int efi_deficits; /* -1: not applicable (age) */
    double efi;
    int efi_band; /* index into bands_efi.v, -1 n/a */
    uint64_t efi_present;
    int hfrs_tenths; /* -1 n/a */
    int hfrs_band;
    int charlson; /* 1987 weights, -1 n/a */
    int charlson2011;
    uint32_t charlson_present;
    int lace; /* -1: no discharge to score */
    int lace_band;
    int lace_l, lace_a, lace_c, lace_e;
    int32_t lace_discharge; /* day of the discharge scored */
    const char *lace_encounter;
} rk_indices;

int rk_age_on(const rk_person *p, int32_t day);
void rk_compute_indices(const risk_codes *c, const rk_person *p, int32_t day, rk_indices *out);
int rk_band_of(const rk_bands *b, double score);
/* The index functions, exposed for tests. */
double rk_efi_score(int deficits);
int rk_hfrs_of_codes(const risk_codes *c, const char *const *icd10, int n); /* tenths */
int rk_charlson_of_codes(const risk_codes *c, const char *const *icd10, int n, int updated_weights);
int rk_lace_points(const risk_codes *c, int component, int value);

/* ---- the model's features (features.c) ------------------------------------ */

#define RK_MAX_FEATURES 64

typedef enum rk_group {
    RKG_AGE,
    RKG_SEX,
    RKG_DEPRIVATION,
    RKG_NEL12,
    RKG_NEL24,
    RKG_AE,
    RKG_ELECTIVE,
    RKG_OUTPATIENT,
    RKG_GP,
    RKG_COMMUNITY,
    RKG_MH,
    RKG_RECENT_DISCHARGE,
    RKG_LTC,
    RKG_FRAILTY,
    RKG_MEDICINES,
    RKG_SOCIAL_CARE,
    RKG_CARE_HOME,
    RKG_N
} rk_group;

typedef struct rk_feature_def {
    char name[48];
    rk_group group;
    int ltc; /* RKG_LTC: the condition group's index in risk_codes, else -1 */
    int lo,
        hi; /* age band [lo, hi); deprivation quintile (lo, 0 = unknown); medicines [lo, hi]; female: lo 1 */
} rk_feature_def;

typedef struct rk_featureset {
    int n;
    rk_feature_def f[RK_MAX_FEATURES];
} rk_featureset;

/* The features of model feature set 1 for these code lists. */
void rk_featureset_build(const risk_codes *c, rk_featureset *fs);

/* What was known about a person on a date, before it became features. */
typedef struct rk_profile {
    int age;
    int32_t day;
    int nel12, nel24, ae12, el12, op12, gp12, comm12, mh12, recent_discharge;
    int medicines, social_care, care_home;
    int imd_decile; /* 0 unknown */
    char sex;
    uint32_t ltc;
    rk_indices ix;
} rk_profile;

/* The profile and feature vector x[fs->n] of p on `day`. */
void rk_profile_of(const risk_codes *c, const rk_person *p, int32_t day, int imd_decile, rk_profile *pr);
void rk_features_of(const rk_featureset *fs, const rk_profile *pr, double *x);
/* Outcome: an emergency admission starting in (day, day + 365]. */
int rk_outcome(const rk_person *p, int32_t day);
/* Eligibility on a date: 0 = score; else why not (RK_SKIP_*). */
enum {
    RK_OK = 0,
    RK_SKIP_NO_PATIENT,
    RK_SKIP_NO_BIRTH,
    RK_SKIP_NOT_REGISTERED,
    RK_SKIP_DECEASED,
    RK_SKIP_NOT_BORN
};
int rk_eligible(const rk_person *p, int32_t day);
const char *rk_skip_reason(int why);

/* One factor of an explanation: a feature group's contribution to the
 * log-odds, relative to the mean person of the training data. */
typedef struct rk_factor {
    int group, ltc;
    double contribution;
} rk_factor;
#define RK_TOP_FACTORS 5
/* The groups that raised this person's risk most, largest first: only
 * groups the person has (a non-zero feature: not a reference category, not
 * a zero count) whose contribution is positive; at most RK_TOP_FACTORS. */
int rk_explain(const risk_model *m, const double *x, rk_factor *out);
/* A clinician's label for one factor of this person: "2 emergency
 * admissions in the last 12 months". */
void rk_factor_label(const risk_codes *c, const rk_profile *pr, const rk_factor *f, char *out, size_t n);
const char *rk_factor_code(const rk_factor *f, const risk_codes *c); /* "nel_12m", "ltc:copd" */
/* The sensitive categories (src/access, SENS_*) a factor reveals: a
 * condition group those of its codes by the sensitive-codes list, contact
 * with mental health services mental health; 0 for the others. */
unsigned rk_factor_sensitivity(const risk_codes *c, const char *code);
/* A worklist row's "explanation": its factors' labels joined by "; ". */
void rk_set_explanation(json_t *row);

/* ---- logistic regression (logit.c) ---------------------------------------- */

typedef struct rk_design {
    int64_t n;
    int p;    /* features, without the intercept */
    float *x; /* n x p, row-major */
    uint8_t *y;
} rk_design;

void rk_design_init(rk_design *d, int p);
void rk_design_push(rk_design *d, const double *x, int y);
void rk_design_free(rk_design *d);

typedef struct rk_fit {
    int p;
    double intercept, intercept_se;
    double *beta, *se; /* p each, malloc'd */
    int iterations, converged;
    double loglik;
} rk_fit;

status rk_logit_fit(const rk_design *d, double ridge, int max_iter, rk_fit *out, err *e);
void rk_fit_free(rk_fit *f);
double rk_logistic(double eta);

typedef struct rk_validation {
    int64_t n, events;
    double auroc, brier, cal_slope, cal_intercept, mean_predicted, observed_rate;
    struct {
        int64_t n, events;
        double mean_predicted, observed;
    } deciles[10];
} rk_validation;

/* Metrics of predicted probabilities p[i] against outcomes y[i]. */
status rk_validate(const double *p, const uint8_t *y, int64_t n, rk_validation *v, err *e);
double rk_auroc(const double *p, const uint8_t *y, int64_t n);
/* SVG calibration plot of the deciles, appended to out. */
void rk_calibration_svg(const rk_validation *v, const char *title, buf *out);

/* ---- the model (model.c) -------------------------------------------------- */

struct risk_model {
    char version[64];
    char name[64];
    int feature_set;
    int p;
    rk_featureset fs; /* resolved against the code lists of this build */
    char feature_name[RK_MAX_FEATURES][48];
    double intercept;
    double beta[RK_MAX_FEATURES], se[RK_MAX_FEATURES], mean[RK_MAX_FEATURES];
    /* explanation slots (rk_model_bind): feature i adds to slot[i]; a slot
     * is a feature group, or one long-term condition */
    int slot[RK_MAX_FEATURES], nslots, slot_group[RK_MAX_FEATURES], slot_ltc[RK_MAX_FEATURES];
    char *json; /* the model file as text */
};

#define RK_MODEL_NAME  "concord-emergency-admission"
#define RK_FEATURE_SET 1

/* Build a model from a fit (train.c). `extra` (borrowed) is merged into
 * the file: training and validation details. */
status rk_model_from_fit(const risk_codes *c, const rk_featureset *fs, const rk_fit *f, const double *means,
                         json_t *extra, risk_model **out, err *e);
/* Bind the model's features to this build's feature set; fails if the
 * model names a feature this build does not compute. */
status rk_model_bind(risk_model *m, const risk_codes *c, err *e);
double rk_model_eta(const risk_model *m, const double *x);

/* ---- postcode -> IMD decile (run.c) --------------------------------------- */

typedef struct rk_depmap rk_depmap;
status rk_depmap_load(store *s, rk_depmap **out, err *e);
int rk_depmap_get(const rk_depmap *m, const char *postcode); /* 0 = unknown */
void rk_depmap_free(rk_depmap *m);

/* The rescoring watermark (run.c): people marked after it wait to be rescored. */
typedef struct db db;
int64_t rk_watermark(store *s, db *d);

/* ---- misc ----------------------------------------------------------------- */

double rk_now_seconds(void);
/* Postcode normalised: upper case, one space before the inward code. */
void rk_postcode_norm(const char *in, char *out, size_t n);

#endif
