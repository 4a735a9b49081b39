/*
 * synth.h — concord's synthetic integrated care population: a seeded,
 * reproducible model of a North West London-like integrated care system
 * (93 practices, 4 acute trusts, 3 community providers, 5 councils' social
 * care, 1 mental health trust, 10 MDGs) and of the feeds each care setting
 * sends about its people. See docs/synth.md for the model, its parameters
 * and their sources.
 *
 * Two outputs:
 *   - synth_feeds: the files each setting would send (GP FHIR ndjson, acute
 *     HL7 v2.4 MLLP streams, community/social care/mental health CSV), with
 *     planted errors and a ground truth; `concord synth`.
 *   - synth_world_foreach_resource: the true, clean, integrated record of
 *     every person as FHIR R4 JSON resources; `concord demo` loads these.
 *
 * Determinism: everything is a function of (params, seed). Each person has
 * their own random stream derived from the seed and their index, so output
 * does not depend on threads or timing; files are written in person order.
 *
 * Ownership: a synth_world owns its organisations and tables; callers free
 * it with synth_world_free. Strings handed to callbacks are borrowed for
 * the duration of the call.
 */
#ifndef CONCORD_SYNTH_H
#define CONCORD_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

/* Code systems and tag systems the generator writes (docs/synth.md). */
#define SYNTH_NHS_NUMBER_SYSTEM "https://fhir.nhs.uk/Id/nhs-number"
#define SYNTH_ODS_SYSTEM "https://fhir.nhs.uk/Id/ods-organization-code"
#define SYNTH_SNOMED_SYSTEM "http://snomed.info/sct"
#define SYNTH_ICD10_SYSTEM "http://hl7.org/fhir/sid/icd-10"
#define SYNTH_OPCS4_SYSTEM "http://fhir.nhs.uk/Id/opcs-4"
#define SYNTH_LOINC_SYSTEM "http://loinc.org"
/* meta.tag carrying the care setting (primary-care, acute, community,
 * social-care, mental-health); a second tag carries the source
 * organisation's ODS code under SYNTH_ODS_SYSTEM. */
#define SYNTH_SETTING_SYSTEM "https://concord.example/CodeSystem/care-setting"
/* Local identifiers: hospital numbers and provider client ids, suffixed
 * with the organisation's ODS code: <base>/<ODS>. */
#define SYNTH_LOCAL_ID_BASE "https://concord.example/Id/local-patient"

typedef struct synth_params {
    uint64_t seed;
    int64_t patients;        /* people registered at the start of the history */
    int years;               /* years of history (default 5) */
    int end_year;            /* the history runs to 31 December of this year */
    double error_rate;       /* multiplier on every planted-error rate (0 = clean feeds) */
    double programme_effect; /* fractional fall in non-elective admissions in integrated-care practices */
    int programme_months;    /* length of the evaluation period at the end of the history */
    int threads;             /* generator threads for synth_feeds (0 = number of CPUs, max 16) */
} synth_params;

void synth_params_default(synth_params *p);

typedef struct synth_world synth_world;

/* Build the organisations, list sizes and calibrated model constants. */
status synth_world_build(const synth_params *p, synth_world **out, err *e);
void synth_world_free(synth_world *w);

/* Progress callback: done of total people. Called from the writing thread. */
typedef void (*synth_progress_fn)(void *arg, int64_t done, int64_t total);

/* Every resource of the integrated record, in a fixed order: first the
 * organisations and practitioners, then person by person (Patient first,
 * then what refers to it). `json` is a complete FHIR R4 resource with its
 * id set (NUL-terminated, `len` bytes). Return non-zero from `fn` to stop;
 * that value is returned. */
typedef int (*synth_resource_fn)(void *arg, const char *type, const char *id, const char *json, size_t len);
int synth_world_foreach_resource(const synth_world *w, int64_t first, int64_t count, synth_resource_fn fn,
                                 void *arg);
/* Only the shared resources (Organization, Practitioner). */
int synth_world_foreach_org_resource(const synth_world *w, synth_resource_fn fn, void *arg);
int64_t synth_world_patients(const synth_world *w);
/* The id of person `index` (0-based), e.g. "p0000001". */
void synth_person_id(int64_t index, char out[16]);

/* What synth_feeds produced. */
typedef struct synth_summary {
    int64_t people, deaths, moves, practice_changes;
    int64_t gp_resources, hl7_messages, csv_rows[3]; /* community, social care, mental health */
    int64_t ae, nel, elective, outpatient, readmissions, community_contacts, social_packages, care_home,
        mh_contacts, gp_consultations;
    int64_t planted_errors, ground_truth_records;
    double person_years;
    int64_t bytes;
} synth_summary;

/* Write every feed, the ground truth and manifest.json under `dir`
 * (created if missing). */
status synth_feeds(const synth_params *p, const char *dir, synth_progress_fn progress, void *arg,
                   synth_summary *out, err *e);

/* ---- helpers exposed for tests and other modules ---------------------- */

/* NHS number check digit over the first nine digits (weights 10..2,
 * 11 - sum mod 11, 11 -> 0); 10 means no valid number has these digits. */
int synth_nhs_check_digit(const char digits[9]);
/* 1 if `s` is ten digits with a valid check digit. */
int synth_nhs_valid(const char *s);

#endif
