/*
 * registry.h — the patient registry over the store: every source Patient
 * (whatever channel wrote it: REST, HL7 over MLLP, file import) linked to
 * one person (a golden record) in the same transaction that stores it,
 * with the decision, its weight and per-field evidence recorded; a review
 * queue for the uncertain; merge and unmerge with history; batch re-linking
 * and training; and FHIR Patient/$match. docs/registry.md (sections 8 on)
 * describes the tables, the rules and the FHIR representation.
 *
 * The golden record is a FHIR `Person` resource (id = the person's id) whose
 * `link[]` targets every source `Patient` of the person; it is written by
 * the registry itself and readable and searchable through the normal FHIR
 * API (`GET /fhir/Person/{id}`, `GET /fhir/Person?link=Patient/{id}`). Source
 * Patients are never rewritten by the registry.
 *
 * Threads: a `registry` is shared by every thread that writes through its
 * store. The write hook runs on the writing thread inside its transaction;
 * the operations below open their own transactions. The only shared mutable
 * state is the cached model, under a mutex.
 *
 * Ownership: a registry borrows its store (which must outlive it). Results
 * returned through pointers are owned by the caller as each comment says.
 */
#ifndef CONCORD_REGISTRY_REGISTRY_H
#define CONCORD_REGISTRY_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../base/status.h"
#include "../fhir/rest.h"
#include "../store/store.h"
#include "fs.h"

typedef struct registry registry;

#define REGISTRY_NHS_SYSTEM "https://fhir.nhs.uk/Id/nhs-number"

/* Open the registry on `s` and register its write hook on Patient. The
 * caller owns *out (registry_close, after the store is no longer written). */
status registry_open(store *s, registry **out, err *e);
void registry_close(registry *r);

/* For the `concord` command: open the registry on `s` unless the
 * environment says CONCORD_REGISTRY=off, and remember it for registry_of.
 * The registry lives until the process ends. */
status registry_attach(store *s, err *e);
/* The registry attached to `s`, or NULL. */
registry *registry_of(store *s);

/* The default model used before `concord link train` (documented m/u priors:
 * docs/registry.md §8.3). */
void registry_default_model(fs_model *m);
/* The model in use (the newest saved, else the default) and its version (0
 * for the default). */
status registry_model(registry *r, fs_model *m, int64_t *version, err *e);

/* Durations of the write hook (linking one Patient, inside its
 * transaction, commit not included) over the last 65,536 calls. */
typedef struct registry_stats {
    uint64_t count;                                 /* calls since the registry was opened */
    double mean_us, p50_us, p90_us, p99_us, max_us; /* of the calls kept */
} registry_stats;
void registry_hook_stats(registry *r, registry_stats *out);
void registry_stats_json(const registry_stats *st, buf *out);

/* ---- training and batch ------------------------------------------------ */

typedef struct registry_train_report {
    size_t records;
    int64_t version; /* of the saved model */
    double seconds_load, seconds_train;
    double lambda;
} registry_train_report;

/* Re-estimate the model (link_train: u from random pairs, m by EM per
 * blocking rule, lambda) from every source record and save it as a new
 * version, thresholds kept from the current model. */
status registry_train(registry *r, const char *who, registry_train_report *rep, err *e);

typedef struct registry_run_opts {
    int rebuild;     /* first (re)read every stored Patient into the registry's source table,
                      * and rebuild block keys and term frequencies from them */
    int dry_run;     /* compute and report, change nothing */
    const char *who; /* recorded as the decider of what changes */
} registry_run_opts;

typedef struct registry_run_report {
    size_t records, candidate_pairs, persons_before, persons_after;
    size_t records_added;              /* --rebuild: Patients not yet in the registry */
    size_t records_updated;            /* --rebuild: demographics changed since they were linked */
    size_t records_removed;            /* --rebuild: Patients deleted */
    size_t moved;                      /* records whose person changed */
    uint64_t links_made, links_broken; /* pairs of records now together / now apart */
    size_t persons_created, persons_retired, persons_rewritten;
    size_t reviews_opened, reviews_closed, reviews_open;
    size_t constraints_same, constraints_apart, blocked_by_apart;
    size_t blocked_by_nhs; /* joins refused: the two persons hold different valid NHS numbers */
    double seconds_load, seconds_score, seconds_cluster, seconds_write, seconds_total;
} registry_run_report;

/* Re-link every source record with the current model, respecting recorded
 * decisions (accepted reviews and merges keep records together, rejected
 * reviews and unmerges keep them apart), and write what changed. */
status registry_run(registry *r, const registry_run_opts *o, registry_run_report *rep, err *e);
void registry_run_report_json(const registry_run_report *rep, buf *out);

/* ---- review queue ------------------------------------------------------ */

/* JSON of the review items in `status` ("open", "accepted", "rejected",
 * "superseded", or NULL for all), newest first: {"items":[...]} with each
 * item's id, status, weight, the two source Patients and their persons. */
status registry_review_list(registry *r, const char *which, int limit, buf *out, err *e);
/* One item side by side: both records' demographics and the field-by-field
 * evidence (level and weight of each field). ST_NOT_FOUND if no such item. */
status registry_review_show(registry *r, int64_t id, buf *out, err *e);
/* Accept (the two records are one person: their persons are merged) or
 * reject (they are two people: kept apart from now on). Only open items;
 * ST_CONFLICT otherwise. `out` (may be NULL) receives the item after. */
status registry_review_decide(registry *r, int64_t id, int accept, const char *who, const char *note,
                              buf *out, err *e);

/* ---- merge, unmerge, history --------------------------------------------- */

/* Merge two persons, each named by "Person/ID", "Patient/ID" (its person) or
 * a bare Person id: `retire`'s records move to `keep`, which survives; the
 * retired Person stays readable, inactive, linking to the survivor.
 * *event receives the history event (for unmerge). */
status registry_merge(registry *r, const char *keep, const char *retire, const char *who, const char *reason,
                      int64_t *event, err *e);
/* Undo a merge event: the retired person and the exact link state of every
 * record the merge moved are restored, and the two persons are kept apart
 * from then on. ST_CONFLICT if a later change makes that impossible (the
 * survivor was itself merged since: unmerge that first). */
status registry_unmerge(registry *r, int64_t event, const char *who, int64_t *undo_event, err *e);
/* History events, newest first: {"events":[...]}; of one person (named as
 * for merge) or all (NULL). */
status registry_history(registry *r, const char *person, int limit, buf *out, err *e);
/* A person with its records and their decisions: {"person":..,"records":[..]}. */
status registry_person_show(registry *r, const char *person, buf *out, err *e);

/* The whole link state in a canonical text form, one line per person and
 * per record (persons, their retirement, each record's person, decision,
 * weight, evidence, decider and time): equal text = equal state. For tests
 * and for checking that an unmerge restored exactly what was there. */
status registry_dump(registry *r, buf *out, err *e);

/* ---- FHIR Patient/$match ------------------------------------------------- */

/* Score the Patient `patient` against the registry and append a searchset
 * Bundle of candidate source Patients (search.mode "match", search.score the
 * probability, extension match-grade: certain | probable | possible |
 * certainly-not), best first, at most `count` (0: 10). With only_certain,
 * only "certain" candidates. */
status registry_match(registry *r, json_t *patient, int only_certain, int count, const char *base_url,
                      buf *out, err *e);

/* ---- the API (rest_ext routes; `user` is the registry) -------------------
 *   POST /fhir/Patient/$match
 *   GET  /fhir/$link-review[?status=open|accepted|rejected|superseded|all&_count=N]
 *   GET  /fhir/$link-review/{id}
 *   POST /fhir/$link-review/{id}/$accept      (optional JSON body {"user":..,"note":..})
 *   POST /fhir/$link-review/{id}/$reject
 *   POST /fhir/$link-merge                    {"keep":"Person/..","retire":"Person/..","user":..}
 *   POST /fhir/$link-unmerge/{event}          {"user":..}
 *   GET  /fhir/$link-history[?person=..]
 *   GET  /fhir/$link-person/{id}              (a Person id or Patient id)
 *   GET  /fhir/$link-stats                    (registry_hook_stats) */
extern const rest_ext_route registry_routes[];
extern const size_t registry_nroutes;

#endif
