/*
 * guard.h — the access decisions the FHIR API makes on every interaction,
 * and the access-log entries it writes for them. The REST layer
 * (src/fhir/rest.c) calls these; they know nothing of HTTP.
 */
#ifndef CONCORD_ACCESS_GUARD_H
#define CONCORD_ACCESS_GUARD_H

#include <jansson.h>

#include "../store/store.h"
#include "access.h"
#include "audit.h"
#include "policy.h"

/* May the role do `actions` on resources of `rtype` at all?
 * ST_FORBIDDEN with a message naming role, area and action otherwise. */
status guard_role(const acc_principal *who, const char *rtype, unsigned actions, err *e);

/* May `who` see this stored record (labels in m, from store_read)? Hidden
 * for want of a relationship or because of a consent objection:
 * ST_FORBIDDEN (the message says break-glass is possible); hidden because
 * sensitive: ST_NOT_FOUND, as if it did not exist. *via_glass = 1 when a
 * break-glass grant is what lets it through. */
status guard_record(store *s, const acc_principal *who, const store_meta *m, int *via_glass, err *e);

/* Before a create or update of `res` by `who`: the role may write the
 * area; the patient whose record it will be stored in (the store's rule:
 * the first Patient reference among the type's Patient-compartment
 * parameters) must be one `who` may see (a new Patient excepted); the
 * patient role writes only its own notes and goals, and never over a
 * clinician's entry (the body's id naming one). Then the resource is
 * stamped with the writer's organisation (meta.tag ODS code, replacing any
 * the client sent: a user writes only as the organisation they are) or,
 * for a patient, as patient-authored.
 * *pkey and patient_id (72 bytes) receive the patient it is about. */
status guard_write(store *s, const acc_principal *who, json_t *res, const char *rtype, int64_t *pkey,
                   char *patient_id, err *e);

/* The patient id of a patient key ("" if none). */
void guard_patient_id(store *s, int64_t pkey, char *out, size_t n);

/* One access-log entry. outcome from the HTTP status (2xx "0", 4xx "4",
 * 5xx "8"); wait as audit_append. No-op when log is NULL. A failure to
 * append is logged and returned (writes then fail: nothing unaudited). */
status guard_audit(audit_log *log, const acc_principal *who, const char *action, const char *rtype, const char *rid,
                 int64_t pkey, const char *patient_id, int http_status, const char *purpose, const char *reason,
                 const char *method, const char *path, const char *query, int wait);

#define CONCORD_TAG_SYSTEM "https://concord.example/CodeSystem/tag"

#endif
