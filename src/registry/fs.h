/*
 * fs.h — the Fellegi-Sunter record linkage model (Fellegi & Sunter, JASA
 * 1969): the demographic record a source system gives us about a person
 * (reg_person), the comparison of two records into a vector of agreement
 * levels (one per field, or "missing"), m and u probabilities per field and
 * level, the match weight with its per-field contributions, term-frequency
 * adjustment of exact name agreement, EM estimation of m and of the match
 * proportion with u fixed, u from random pairs, and the model's JSON file.
 * The maths is in docs/registry.md.
 *
 * Storage-free and thread-safe: an fs_model is plain data that callers may
 * share read-only between threads; nothing here keeps global state.
 *
 * Ownership: every function borrows its pointer arguments for the duration
 * of the call unless its comment says otherwise. reg_person and fs_model are
 * fixed-size values with no pointers inside: copy them freely. An fs_tf_table
 * is owned by whoever built it and freed with fs_tf_table_free.
 */
#ifndef CONCORD_REGISTRY_FS_H
#define CONCORD_REGISTRY_FS_H

#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../base/status.h"
#include "compare.h"
#include "nhsno.h"

/* ---- the record ----------------------------------------------------- */

#define REG_MAX_LOCAL_IDS 2

/* A local identifier (hospital number, client id) as hashes of its issuing
 * system and its value. */
typedef struct reg_local_id {
    uint64_t system, value;
} reg_local_id;

/* One source record's demographics, normalised and prepared for comparison
 * (about 240 bytes, no pointers). Build it with reg_person_init and the
 * reg_person_set_* functions, which normalise; a field never set is missing. */
typedef struct reg_person {
    char nhs[11];      /* ten digits as given (valid or not), or "" */
    uint8_t nhs_valid; /* 1 if nhs passed the modulus 11 check */
    uint8_t sex;       /* cmp_sex */
    uint8_t nlocal;
    cmp_date dob; /* parts 0 when unknown */
    cmp_name family, given;
    cmp_postcode postcode;
    cmp_address address;
    reg_local_id local[REG_MAX_LOCAL_IDS];
} reg_person;

void reg_person_init(reg_person *p);
/* Each setter normalises its input (a byte range, borrowed). */
nhsno_result reg_person_set_nhs(reg_person *p, const char *s, size_t n);
void reg_person_set_family(reg_person *p, const char *s, size_t n);
/* Given names: all of them, space-separated, as written ("Mary Anne"). */
void reg_person_set_given(reg_person *p, const char *s, size_t n);
/* Returns 0, or -1 (dob left missing) if the text is not a date. */
int reg_person_set_dob_text(reg_person *p, const char *s, size_t n);
void reg_person_set_dob(reg_person *p, int y, int m, int d); /* 0 for an unknown part */
void reg_person_set_sex_text(reg_person *p, const char *s, size_t n);
cmp_postcode_kind reg_person_set_postcode(reg_person *p, const char *s, size_t n);
/* The first line of the address (house number and street). */
void reg_person_set_address(reg_person *p, const char *s, size_t n);
/* Returns 0, or -1 if REG_MAX_LOCAL_IDS are already held (ignored). */
int reg_person_add_local_id(reg_person *p, const char *system, size_t sn, const char *value, size_t vn);

/* ---- fields, levels, comparison vectors ----------------------------- */

typedef enum fs_field {
    FS_NHS = 0,
    FS_FAMILY,
    FS_GIVEN,
    FS_DOB,
    FS_SEX,
    FS_POSTCODE,
    FS_ADDRESS,
    FS_LOCAL_ID,
    FS_NFIELDS
} fs_field;

#define FS_MAX_LEVELS 6
#define FS_MISSING    0xFF /* a field's level when either record lacks it: contributes 0 */

/* Local identifier levels (the other fields' are in compare.h). */
enum { FS_LOCAL_AGREE = 0, FS_LOCAL_DISAGREE, FS_LOCAL_NLEVELS };

/* One pair's levels, field by field (FS_MISSING or 0..levels-1). Eight
 * bytes: `key` packs them for hashing and sorting. */
typedef union fs_vector {
    uint8_t level[FS_NFIELDS];
    uint64_t key;
} fs_vector;

const char *fs_field_name(fs_field f);          /* "nhs_number", "family", ... */
int fs_field_levels(fs_field f);                /* number of levels */
const char *fs_level_name(fs_field f, int lvl); /* "exact", "jw_0.92", ...; "missing" for FS_MISSING */

/* Compare two records field by field. */
void fs_compare(const reg_person *a, const reg_person *b, fs_vector *out);

/* ---- the model ------------------------------------------------------ */

#define FS_MODEL_VERSION 1

typedef struct fs_model {
    double m[FS_NFIELDS][FS_MAX_LEVELS]; /* P(level | match); each field sums to 1 over its levels */
    double u[FS_NFIELDS][FS_MAX_LEVELS]; /* P(level | non-match) */
    double lambda;                       /* prior: P(two records drawn at random are one person) */
    uint8_t tf[FS_NFIELDS];              /* 1: adjust the exact level by term frequency */
    double tf_min_u;                     /* floor on a term-frequency u (a value seen once) */
    double link_weight;                  /* weight >= this: link */
    double review_weight;                /* review_weight <= weight < link_weight: review queue */
} fs_model;

/* Starting values: m favouring agreement, u uniform, lambda 1e-4, term
 * frequencies on for family and given names, tf_min_u 1e-5, thresholds
 * link 20, review 10 (bits). Estimate u (fs_estimate_u), m (fs_em) and
 * lambda (fs_estimate_lambda) before use. */
void fs_model_init(fs_model *m);

/* ---- weights -------------------------------------------------------- */

/* Frequency in [0, 1] of a normalised value of `field` among the records
 * (the u of an exact agreement on that value); < 0 if not known. */
typedef double (*fs_freq_fn)(void *arg, fs_field field, const char *value, size_t n);
typedef struct fs_tf {
    fs_freq_fn freq;
    void *arg;
} fs_tf;

/* Match weight of a pair: sum over fields of log2(m/u) at the pair's level
 * (0 for a missing field). With `tf` (may be NULL) and both records, an
 * exact agreement on a field with model->tf set uses u = max(freq(value),
 * tf_min_u) instead of u[field][exact]: a rare surname weighs more than a
 * common one. `contrib` (may be NULL) receives each field's term. */
double fs_weight(const fs_model *m, const fs_vector *v, const reg_person *a, const reg_person *b,
                 const fs_tf *tf, double contrib[FS_NFIELDS]);

/* Posterior probability of a match given a weight and the model's lambda. */
double fs_probability(const fs_model *m, double weight);

/* The decision a weight leads to. */
typedef enum fs_decision { FS_NEW = 0, FS_REVIEW, FS_LINK } fs_decision;
fs_decision fs_decide(const fs_model *m, double weight);

/* Append the explanation of one comparison as a JSON object:
 * {"weight":w,"probability":p,"fields":[{"field":"family","level":"exact",
 *  "weight":w},...]}. For storing with each decision and for review. */
void fs_explain_json(const fs_model *m, const fs_vector *v, const double contrib[FS_NFIELDS], buf *out);

/* ---- term frequencies ----------------------------------------------- */

typedef struct fs_tf_table fs_tf_table;

/* Count the values of the family and given names (and full postcodes) of
 * `n` records. Caller owns the result (fs_tf_table_free). NULL on ENOMEM. */
fs_tf_table *fs_tf_table_build(const reg_person *p, size_t n);
/* Add or remove one record's values (real-time registry updates). */
void fs_tf_table_add(fs_tf_table *t, const reg_person *p, int delta);
/* fs_freq_fn over a table: count(value) / records counted. */
double fs_tf_table_freq(void *table, fs_field field, const char *value, size_t n);
void fs_tf_table_free(fs_tf_table *t);

/* ---- estimation ----------------------------------------------------- */

/* u probabilities from `npairs` random pairs (i != j) of `n` records (a
 * random pair is almost surely a non-match): u = (count + 1) / (total +
 * levels) per field, missing levels not counted. Deterministic for a seed.
 * ST_INVALID if n < 2. */
status fs_estimate_u(fs_model *m, const reg_person *p, size_t n, size_t npairs, uint64_t seed, err *e);

typedef struct fs_em_opts {
    int max_iter;              /* default 500 */
    double tol;                /* stop when no m, u or proportion moves more than this (default 1e-7) */
    double prior_count;        /* pseudo-count added to every level in the M step (default 0.1) */
    double start_lambda;       /* starting match proportion (default 0.1) */
    int estimate_u;            /* 0 (default): u stays as given */
    uint8_t fixed[FS_NFIELDS]; /* 1: treat the field as missing and leave its m (and u) alone:
                                * the fields a blocking rule's key is made of, since among the
                                * pairs that rule produced they agree by construction */
} fs_em_opts;

typedef struct fs_em_result {
    int iterations;
    int converged;
    double lambda;   /* estimated proportion of matches among the n vectors */
    double loglik;   /* log-likelihood (natural log) at the end */
    size_t patterns; /* distinct comparison vectors */
} fs_em_result;

/* Set opts to the defaults above. */
void fs_em_opts_default(fs_em_opts *o);

/* EM estimation of m and of the match proportion from `n` comparison
 * vectors, starting from the model's current m, with u fixed (unless
 * opts->estimate_u). Identical vectors are counted once with their
 * multiplicity, so the cost of an iteration is in the number of distinct
 * vectors. Updates m->m (and m->u) of the fields not fixed; leaves
 * m->lambda alone (the proportion is in res->lambda: it is the proportion
 * among these pairs, not among all pairs). `opts` may be NULL (defaults).
 * `res` may be NULL. ST_INVALID if n == 0; ST_NOMEM. */
status fs_em(fs_model *m, const fs_vector *v, size_t n, const fs_em_opts *opts, fs_em_result *res, err *e);

/* The prior match probability of two records drawn at random, from the
 * weights of the compared (blocked) pairs: the fixed point of
 * lambda = sum_i P(match | w_i, lambda) / total_pairs, taking pairs never
 * compared as non-matches. total_pairs = n (n - 1) / 2 for n records. */
double fs_estimate_lambda(const double *weights, size_t nweights, double total_pairs);

/* The weight at which the posterior probability is p (0 < p < 1) under the
 * model's lambda: for setting thresholds as probabilities. */
double fs_weight_for_probability(const fs_model *m, double p);

/* ---- the model file ------------------------------------------------- */

/* JSON: {"format":"concord-fs-model","version":1,"lambda":..,
 * "tf_min_u":..,"thresholds":{"link":..,"review":..},"fields":[{"name":
 * "family","tf":true,"levels":[{"name":"exact","m":..,"u":..},...]},...]}.
 * Appends to `out`. */
void fs_model_to_json(const fs_model *m, buf *out);
/* Parse what fs_model_to_json wrote. Every field and level must be present
 * by name and count, each probability in (0, 1], each field's m and u sum to
 * 1 within 1e-6; otherwise ST_INVALID with the location in e->where. */
status fs_model_from_json(const char *text, size_t len, fs_model *m, err *e);
/* Write atomically (temporary file, fsync, rename) / read a model file. */
status fs_model_save(const fs_model *m, const char *path, err *e);
status fs_model_load(fs_model *m, const char *path, err *e);

#endif
