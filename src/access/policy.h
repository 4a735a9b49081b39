/*
 * policy.h — what each role may do, what is sensitive, and the store scope
 * (store.h) that limits a principal's queries to the patients they have a
 * legitimate relationship with. Relationships, consent and break-glass
 * grants are kept by rel.c and glass.c; this file decides.
 */
#ifndef CONCORD_ACCESS_POLICY_H
#define CONCORD_ACCESS_POLICY_H

#include <jansson.h>

#include "../store/store.h"
#include "access.h"

/* Actions (bits). READ covers read, vread, search, history; COUNT is an
 * aggregate search (_summary=count) that returns no patient-level data. */
enum {
    ACC_READ = 1u << 0,
    ACC_WRITE = 1u << 1, /* create, update */
    ACC_DELETE = 1u << 2,
    ACC_EXPORT = 1u << 3, /* $everything, bulk */
    ACC_COUNT = 1u << 4,
};

/* Areas of the record and of the system that permissions are given on. */
typedef enum acc_area {
    AREA_DEMOGRAPHICS = 0, /* Patient, Person, RelatedPerson */
    AREA_CLINICAL,         /* observations, conditions, procedures, reports ... */
    AREA_MEDICATION,       /* medicines, allergies, immunisations */
    AREA_COORDINATION,     /* encounters, episodes, care plans and teams, goals, consent ... */
    AREA_DIRECTORY,        /* organisations, practitioners, locations: no patient data */
    AREA_AUDIT,            /* the access log, break-glass review */
    AREA_RISK,             /* risk scores and worklists */
    AREA_INGEST,           /* imports, quarantine */
    AREA_REGISTRY,         /* linkage review, merge, unmerge */
    AREA_PATIENT_AUTHORED, /* a patient's own notes and goals */
    AREA_COUNT
} acc_area;

const char *acc_area_name(acc_area a);
/* The area a resource type belongs to. */
acc_area acc_area_of_type(const char *rtype);
/* Does the role have these action bits on the area? */
int acc_allow(acc_role role, acc_area area, unsigned actions);
/* The sensitive categories the role does not see (unless recorded by its
 * own organisation). */
unsigned acc_sens_denied(acc_role role);
/* "mental-health" -> SENS_MENTAL_HEALTH; 0 if unknown. */
unsigned acc_sens_parse(const char *name);
/* The sensitive categories (SENS_*) of one code by the sensitive-codes
 * list (system as a FHIR URL; ICD-10 compared without the dot); a code of
 * ACC_SENSITIVITY_SYSTEM is a category by name. */
unsigned acc_code_sensitivity(const char *system, const char *code);
/* A resource labels itself sensitive with a coding of this system whose
 * code is the category's name (in meta.security, say): concord's own
 * derived records (a RiskAssessment explained by a depression) use it. */
#define ACC_SENSITIVITY_SYSTEM "https://concord.example/CodeSystem/sensitivity"
/* Names of the set bits, comma separated, into out. */
void acc_sens_names(unsigned sens, char *out, size_t n);

/* Load data/access (sensitive codes and roles) and install the store
 * labeller that sets resource.org and resource.sens on every write. Call
 * once before the store is used by other threads. `dir` NULL: the
 * default (CONCORD_ACCESS_DATA, then data/access, then the source tree). */
status acc_policy_init(const char *dir, err *e);

/* A principal's scope, with the storage its pointers refer to. */
typedef struct acc_scope {
    store_scope sc;
    char orgs[STORE_SCOPE_MAX_ORGS][16];
    int64_t self[32];
} acc_scope;
/* Build the scope for `p` (unrestricted when p is NULL: the local CLI). The
 * organisation list is the user's ODS code and those of organisations that
 * are part of it (the practices of an MDG). */
status acc_scope_for(store *s, const acc_principal *p, acc_scope *out, err *e);
/* Fix up internal pointers after copying an acc_scope. */
void acc_scope_fix(acc_scope *a);

/* Break-glass (glass.c): open a time-limited grant for the user on the
 * person whose patient record is `patient_id`; the reason is required. */
status acc_glass_open(store *s, const acc_principal *p, const char *patient_id, const char *reason,
                      int minutes, int64_t *expires_usec, int64_t *glass_key, err *e);
/* Grants as JSON objects (newest first): all, or only those not reviewed. */
status acc_glass_list(store *s, int unreviewed_only, json_t *out, err *e);
status acc_glass_review(store *s, int64_t glass_key, const char *reviewer, const char *note, err *e);

/* Relationship, consent and organisation hooks (rel.c). */
status acc_rel_attach(store *s, err *e);

#endif
