/*
 * hl7_map.h — HL7 v2 messages to FHIR R4 resources (UK Core conventions).
 *
 *     ADT^A01 A02 A03 A04 A05 A08  -> Patient, Encounter, Condition (DG1),
 *                                     Procedure (PR1)
 *     ADT^A11 (cancel admit)       -> Encounter status entered-in-error
 *     ADT^A13 (cancel discharge)   -> Encounter status back to in-progress
 *     ADT^A28 A31                  -> Patient
 *     ADT^A40                      -> a merge request for the registry
 *     ORU^R01                      -> Observation per OBX, DiagnosticReport
 *                                     per OBR (and the Patient, if absent)
 *
 * The mapping is a pure function of the message (and the configuration):
 * it reads no store and keeps no state, so the caller decides what to
 * write, when, and in which transaction. Every resource it returns has
 * passed fhir_validate (unless the configuration says to skip it).
 *
 * Idempotency: every resource carries a business identifier (a "key"),
 * from which a deterministic logical id is derived — the same message, or
 * a later message about the same thing, always yields the same id:
 *
 *     Patient           local hospital number (PID-3, type MR/PI, per
 *                       assigning authority), else the NHS number
 *     Encounter         visit number PV1-19 (per assigning authority)
 *     Condition         visit number + DG1-3 code
 *     Procedure         visit number + PR1-3 code + PR1-5 time
 *     DiagnosticReport  filler order number OBR-3 (else placer OBR-2)
 *     Observation       filler order number + OBX-1 set id (+ OBX-4 sub-id)
 *
 * Provenance: every resource carries two meta.tag codings, as the
 * synthetic feeds do (docs/synth.md): the care setting
 * (HL7_CARE_SETTING_SYSTEM, "acute" unless configured) and the sending
 * organisation (HL7_ODS_SYSTEM, the code = MSH-4's first component; left
 * out when MSH-4 is empty). meta.source (the message) is the storer's:
 * only it knows the message's key.
 *
 * References between the resources of one message are literal
 * ("Patient/<id>", using those ids). An A08 that arrives before its A01,
 * an A03 for a visit never admitted, a duplicate delivery: all produce the
 * same ids, and the caller's upsert does the right thing.
 *
 * Ownership: the hl7_mapped and its strings live in the arena passed to
 * hl7_map; the json_t trees are owned by the hl7_mapped (one reference each)
 * until hl7_mapped_release. NM values are made with fhir_json_load so they
 * keep their written precision ("5.10"): dump them (fhir_json_dump /
 * store_put) on the same thread before fhir_json_release, or carry their
 * texts to the thread that will (fhir_json_detach / fhir_json_attach, as
 * ingest.c does).
 */
#ifndef CONCORD_INGEST_HL7_MAP_H
#define CONCORD_INGEST_HL7_MAP_H

#include <jansson.h>

#include "hl7.h"

#define HL7_CARE_SETTING_SYSTEM "https://concord.example/CodeSystem/care-setting"
#define HL7_ODS_SYSTEM "https://fhir.nhs.uk/Id/ods-organization-code"

/* How local times (no offset in the HL7 value) are read. */
typedef enum hl7_zone {
    HL7_ZONE_EUROPE_LONDON = 0, /* GMT, or BST (+01:00) between the last Sundays of March and October */
    HL7_ZONE_UTC
} hl7_zone;

/* An explicit identifier system for an assigning authority, overriding the
 * default "<id_base>:<authority>:<kind>". `kind` is an HL7 identifier type
 * (table 0203: MR, PI, VN, ...) or one of "filler-order", "placer-order",
 * "diagnosis", "procedure", "observation", "practitioner", "location",
 * "code"; NULL matches every kind. */
typedef struct hl7_system_rule {
    const char *authority;
    const char *kind;
    const char *system;
} hl7_system_rule;

typedef struct hl7_map_config {
    const char *id_base;           /* default "urn:concord:id" */
    const hl7_system_rule *systems; /* may be NULL */
    size_t nsystems;
    hl7_zone zone;
    const char *processing_ids; /* MSH-11 values accepted, one letter each; default "PT" */
    int skip_validation;        /* 1: do not run fhir_validate on each resource (the unit tests
                                   and the fuzzer check every mapping does produce valid FHIR);
                                   saves about half of hl7_map's time */
    const char *care_setting;   /* the feed's care setting, a code of HL7_CARE_SETTING_SYSTEM
                                   (see below); default "acute" (hospital feeds) */
} hl7_map_config;

/* What the caller should do with a resource. */
typedef enum hl7_apply {
    HL7_APPLY_UPSERT = 0, /* create, or replace the current version */
    HL7_APPLY_CREATE,     /* create only if absent (a stub: e.g. the Patient of an ORU) */
    HL7_APPLY_STATUS      /* set `status` on the existing resource; create `json` if absent */
} hl7_apply;

typedef struct hl7_resource {
    const char *type;   /* "Patient", ... (static) */
    const char *id;     /* deterministic logical id (also json "id") */
    const char *key_system, *key_value; /* the business identifier */
    hl7_apply apply;
    const char *status; /* HL7_APPLY_STATUS: the value for the resource's status */
    json_t *json;       /* the resource; owned by the hl7_mapped */
    long segment;       /* the segment it was made from (index in the message) */
} hl7_resource;

/* ADT^A40: the registry should merge `retired` into `surviving`. */
typedef struct hl7_merge {
    json_t *surviving;        /* Identifier[] from PID-3 (owned) */
    json_t *retired;          /* Identifier[] from MRG-1 (owned) */
    const char *surviving_id; /* deterministic Patient ids, as for Patient above */
    const char *retired_id;
    long segment; /* the MRG segment */
} hl7_merge;

typedef struct hl7_mapped {
    const char *message_type; /* "ADT", "ORU" */
    const char *trigger;      /* "A01", "R01" */
    const char *control_id;   /* MSH-10 */
    const char *event_time;   /* FHIR dateTime: EVN-2, else MSH-7; for ordering updates; may be NULL */
    hl7_resource *res;
    size_t nres;
    hl7_merge *merges;
    size_t nmerges;
} hl7_mapped;

/* Map a parsed message. On failure returns ST_INVALID (content: AE) or
 * ST_UNSUPPORTED (type, event, version, processing id: AR) with `e` filled
 * and `out` empty. `cfg` may be NULL for the defaults. */
status hl7_map(hl7_msg *m, const hl7_map_config *cfg, arena *a, hl7_mapped *out, hl7_error *e);
/* Drop the json references; the rest goes with the arena. */
void hl7_mapped_release(hl7_mapped *out);

/* The whole of it as JSON (for tests, quarantine display, debugging):
 * {"resources":[{"apply","key":{"system","value"},"status"?,"resource"}],
 *  "merges":[{"surviving","retired","survivingId","retiredId"}]}. New reference. */
json_t *hl7_mapped_json(const hl7_mapped *out);

/* Parse and map in one call: what the MLLP listener does per message.
 * Fills `r`; r->ack is HL7_AA when the message mapped, else AE/AR with
 * r->error. r->msg is NULL only if not even MSH could be read. Build the
 * acknowledgement with hl7_ack_build(r->msg, r->ack, &r->error,
 * r->ack != HL7_AA, ...) — after the resources are durably stored. */
typedef struct hl7_result {
    hl7_msg *msg;
    hl7_mapped mapped;
    hl7_ack_code ack;
    hl7_error error;
} hl7_result;
status hl7_process(const char *bytes, size_t len, const hl7_limits *limits, const hl7_map_config *cfg, arena *a,
                   hl7_result *r);

/* HL7 DTM "YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]" as a FHIR dateTime (a
 * time gets seconds and an offset: the value's own, else the `zone` rule)
 * into out[40]. date_only: write only the date part (FHIR date). Returns 0,
 * or -1 if `s` is not a valid DTM. */
int hl7_dtm_to_fhir(hl7_str s, hl7_zone zone, int date_only, char out[40]);

/* NHS number: 10 digits with a valid modulus 11 check digit. */
int hl7_nhs_number_valid(const char *s, size_t n);

#endif
