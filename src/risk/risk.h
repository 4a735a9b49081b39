/*
 * risk.h — risk stratification of the registered population (issue 7):
 * per-person facts kept current by a store write hook, the published
 * indices (eFI, HFRS, Charlson, LACE), an emergency-admission model fitted
 * and validated on the registry's own history, a risk pyramid, FHIR
 * RiskAssessment results with explanations, incremental rescoring and
 * worklists. docs/risk.md describes the design and the figures; the code
 * lists and weights are data files in data/risk/.
 *
 * Layers (one file each):
 *   facts.c     resource -> fact lines; the write hook; rebuild; bulk reads
 *   codes.c     the data/risk tables -> lookup tables
 *   indices.c   eFI, HFRS, Charlson (1987/2011 weights), LACE, bands
 *   features.c  the model's features at a date, outcomes, explanations
 *   logit.c     logistic regression (IRLS), AUROC, calibration, Brier, SVG
 *   model.c     the versioned model file (JSON) and the model table
 *   train.c     `concord risk train`: fit on one year, validate on the next
 *   run.c       `concord risk run`: score everyone; rescoring of dirty people
 *   worklist.c  ranked lists per practice, MDG and cohort
 *   service.c   the API routes and the rescoring thread of `concord serve`
 *
 * Threads: a risk_codes and a risk_model are immutable once loaded and may
 * be shared. Everything else takes the store and runs on the caller's
 * thread.
 */
#ifndef CONCORD_RISK_H
#define CONCORD_RISK_H

#include <jansson.h>
#include <stdint.h>

#include "../base/status.h"
#include "../fhir/rest.h"
#include "../store/store.h"

typedef struct risk_codes risk_codes;
typedef struct risk_model risk_model;

/* ---- facts (facts.c) ------------------------------------------------------ */

/* Register the facts write hook on `s`: from then on every stored or
 * deleted Patient, Condition, Encounter, MedicationStatement, EpisodeOfCare
 * and CarePlan updates its patient's row of risk_fact in the same
 * transaction, and marks the person for rescoring when their facts change. */
status risk_install(store *s, err *e);

/* Rebuild risk_fact from the stored resources (an existing database, or
 * after the extraction rules change). Runs in transactions of a few
 * thousand people; `progress` (may be NULL) is called after each. */
typedef void (*risk_progress_fn)(void *arg, int64_t people_done, int64_t resources_done);
status risk_facts_rebuild(store *s, risk_progress_fn progress, void *arg, int64_t *people, int64_t *resources,
                          err *e);
/* Write a person's whole fact text directly (marked for rescoring), for
 * loading facts without their resources: `concord risk facts --synth`,
 * which benchmarks stratification at sizes whose resources would not fit
 * the benchmark machine's disk. Lines as rk_facts_extract makes them. */
status risk_facts_write(store_txn *tx, const char *patient_id, const char *facts, size_t len, err *e);
/* One person's fact lines (for `concord risk facts --show`), appended to out. */
status risk_facts_show(store *s, const char *patient_id, buf *out, err *e);

/* Load a postcode -> IMD decile lookup (CSV with a header naming a postcode
 * column and a decile column; ONS's NSPL, or the synthetic ground truth's
 * people.csv), replacing what was there. */
status risk_deprivation_load(store *s, const char *csv_path, int64_t *rows, err *e);

/* ---- code lists (codes.c) ------------------------------------------------- */

status risk_codes_load(const char *dir, risk_codes **out, err *e);
void risk_codes_free(risk_codes *c);

/* ---- the model (model.c) -------------------------------------------------- */

/* Load a model file, or the active model of the store (ST_NOT_FOUND when
 * none has been trained), bound to the features these code lists define
 * (fails if the model uses a feature this build does not compute). */
status risk_model_load_file(const char *path, const risk_codes *c, risk_model **out, err *e);
status risk_model_load_active(store *s, const risk_codes *c, risk_model **out, err *e);
/* Make a model file the store's active model. */
status risk_model_install(store *s, const risk_model *m, err *e);
const char *risk_model_version(const risk_model *m);
void risk_model_free(risk_model *m);

/* ---- training (train.c) --------------------------------------------------- */

typedef struct risk_train_opts {
    int32_t index_day; /* features at this date, outcome in the next 365 days; RK_NODAY: data end - 2 years */
    int32_t validate_day; /* validation index date; RK_NODAY: index_day + 365 */
    double ridge;         /* L2 penalty on the coefficients (not the intercept) */
    const char *out_dir;  /* model.json, report.txt, report.json, calibration.svg written here (NULL: none) */
    int install;          /* make the model the store's active one */
} risk_train_opts;

typedef struct risk_train_result {
    char version[64];
    int64_t train_n, train_events, valid_n, valid_events;
    double auroc, brier, cal_slope, cal_intercept, seconds;
    int32_t index_day, validate_day;
    char *report_text; /* malloc'd, the caller frees */
} risk_train_result;

status risk_train(store *s, const risk_codes *c, const risk_train_opts *o, risk_model **model_out,
                  risk_train_result *r, err *e);

/* ---- scoring (run.c) ------------------------------------------------------ */

#define RISK_MAX_TIERS 8
typedef struct risk_tiers {
    int n; /* tiers, highest first */
    char name[RISK_MAX_TIERS][16];
    double percent[RISK_MAX_TIERS]; /* share of the scored population; the last is the rest */
} risk_tiers;
/* The default pyramid (data/risk/tiers.tsv) */
void risk_tiers_default(const risk_codes *c, risk_tiers *t);
/* "0.5,4.5,15" -> very-high/high/moderate/low with those shares. */
status risk_tiers_parse(const char *spec, risk_tiers *t, err *e);

typedef struct risk_run_opts {
    int32_t as_of; /* assessment date; RK_NODAY = today */
    risk_tiers tiers;
    int write_resources; /* 1: RiskAssessment resources for everyone whose result changed */
    int workers;         /* threads preparing resources (0 = cores - 1) */
} risk_run_opts;

typedef struct risk_run_stats {
    int64_t people, scored, insufficient, not_registered, deceased;
    int64_t resources_written, rows_written, tier_changes;
    double t_read, t_score, t_tier, t_resources, t_results, t_total; /* seconds */
    double thresholds[RISK_MAX_TIERS];
} risk_run_stats;

status risk_run(store *s, const risk_codes *c, const risk_model *m, const risk_run_opts *o,
                risk_run_stats *st, err *e);

/* Rescore the people marked dirty by the facts hook (up to `max`), each in
 * the way the last full run did (its date rule, tiers and thresholds). One
 * transaction. *done = people rescored. ST_NOT_FOUND when no full run has
 * been made yet (nothing to compare tiers with). */
status risk_rescore_dirty(store *s, const risk_codes *c, const risk_model *m, int max, int *done, err *e);
/* Rescore one person now, dirty or not. */
status risk_rescore_patient(store *s, const risk_codes *c, const risk_model *m, const char *patient_id,
                            err *e);
/* Measure: for n scored people, store a new emergency admission (its own
 * transaction) and time the rescoring that follows (bench/risk.py).
 * Writes to the store: run it on a scratch copy. */
status risk_rescore_bench(store *s, const risk_codes *c, const risk_model *m, int n, json_t **out, err *e);
/* A person's current result as JSON (scores row + explanation), or
 * ST_NOT_FOUND. The caller decrefs. */
status risk_patient_result(store *s, const char *patient_id, json_t **out, err *e);

/* ---- worklists (worklist.c) ----------------------------------------------- */

typedef struct risk_worklist_query {
    const char *practice;    /* ODS code of the registered practice, or NULL */
    const char *mdg;         /* MDG organisation id (e.g. mdg-3), or NULL */
    const char *cohort;      /* "75plus", "diabetes" or NULL */
    const char *tier;        /* only this tier, or NULL */
    int no_care_plan;        /* only people without an active care plan */
    int not_reviewed_months; /* only people not reviewed in this many months (0 = no filter) */
    int limit, offset;
    const struct store_scope *scope; /* only patients this scope may see (NULL = all) */
} risk_worklist_query;

/* Rows sorted by probability, highest first: a JSON object {"total":..,
 * "rows":[{patient, nhs?, practice, age, sex, probability, tier, indices,
 * factors[], care_plan, last_review}, ...]}. The caller decrefs. */
status risk_worklist(store *s, const risk_worklist_query *q, json_t **out, err *e);

/* Tier changes recorded since `after_key` (exclusive), oldest first. */
status risk_events(store *s, int64_t after_key, int limit, json_t **out, err *e);

/* ---- the service in `concord serve` (service.c) --------------------------- */

typedef struct risk_service risk_service;
/* Loads the code lists from `data_dir` and the active model (if any), and
 * starts the thread that drains the rescoring queue. */
status risk_service_start(store *s, const char *data_dir, risk_service **out, err *e);
void risk_service_stop(risk_service *svc);
/* Wake the rescoring thread (the facts hook calls it after marking). */
void risk_service_kick(void);

extern const rest_ext_route risk_service_routes[];
extern const size_t risk_service_nroutes;

/* ---- dates ---------------------------------------------------------------- */

#define RK_NODAY INT32_MIN
/* "YYYY", "YYYY-MM", "YYYY-MM-DD" or a dateTime -> days since 1970-01-01
 * (the first day of a partial date); RK_NODAY if not a date. */
int32_t risk_parse_day(const char *s);
void risk_format_day(int32_t day, char out[11]);
int32_t risk_today(void);

#endif
