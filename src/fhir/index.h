/*
 * index.h — search-index extraction: from a resource (parsed JSON) to the
 * typed rows the store keeps in its index tables, by evaluating each search
 * parameter's path program (see model.h) and turning the matched values into
 * rows of the parameter's type.
 *
 *   token:     (system, code)   from code/string, boolean ("true"/"false"),
 *              Coding, CodeableConcept (each coding), Identifier and
 *              ContactPoint (system, value); uri parameters also land here
 *              with system NULL and code = the uri.
 *   string:    (norm, exact)    norm = lower-cased, accents removed;
 *              HumanName and Address give one row per part (family, given,
 *              prefix, suffix, text / line, city, district, state,
 *              postalCode, country, text).
 *   date:      [lo, hi] seconds from date/dateTime/instant/Period/Timing.
 *   reference: (type, id, url)  "Patient/123" -> ("Patient","123"); an
 *              absolute or urn reference keeps url and leaves type/id as
 *              parsed when they can be.
 *   number:    value, [lo, hi] by the stated precision.
 *   quantity:  value, [lo, hi], system, code (code falls back to unit).
 *
 * Ownership: rows and their strings live in the arena passed in.
 */
#ifndef CONCORD_FHIR_INDEX_H
#define CONCORD_FHIR_INDEX_H

#include <jansson.h>
#include <stdint.h>

#include "../base/arena.h"
#include "model.h"

typedef enum idx_kind { IDX_TOKEN, IDX_STRING, IDX_DATE, IDX_REF, IDX_NUMBER, IDX_QUANTITY } idx_kind;

typedef struct idx_row {
    const fhir_search_param *sp;
    idx_kind kind;
    const char *system;                      /* token, quantity; may be NULL */
    const char *code;                        /* token code; quantity code/unit; may be NULL */
    const char *norm;                        /* string: normalised */
    const char *exact;                       /* string: as written */
    const char *ref_type, *ref_id, *ref_url; /* reference */
    double value, vlo, vhi;                  /* number, quantity */
    int64_t lo, hi;                          /* date */
} idx_row;

typedef struct idx_rows {
    idx_row *v;
    size_t n, cap;
} idx_rows;

/* Evaluate every search parameter of `rtype` (including the Resource and
 * DomainResource ones that have paths, e.g. _profile, _tag) on `res` and
 * append rows to `out`. Identical rows for the same parameter are emitted
 * once. Returns 0, or -1 if rtype is unknown. */
int fhir_index_resource(const char *rtype, json_t *res, idx_rows *out, arena *a);

/* The id of the patient whose compartment `res` belongs to: the resource's
 * own id for a Patient; else the first reference to a Patient found through
 * the compartment parameters (fhir_compartment_find) in `rows`. NULL if none. */
const char *fhir_index_patient_id(const char *rtype, json_t *res, const idx_rows *rows);

/* The same answer without indexing the whole resource: only the
 * compartment's reference parameters are evaluated (for the access check
 * of a write, which runs before the store indexes the resource). The string
 * lives in `a` (or is borrowed from `res` for a Patient). */
const char *fhir_index_compartment_patient(const char *rtype, json_t *res, arena *a);

/* Normalise a string for string search: lower-case, Latin accents removed,
 * whitespace runs collapsed. Result in arena. */
char *fhir_string_normalize(arena *a, const char *s);

/* Evaluate one compiled path program on a resource and call `fn` for each
 * JSON value matched (with the JSON key it was found under, which carries the
 * type for choice elements, e.g. "valueQuantity"). */
typedef void (*fhir_path_fn)(void *ctx, const char *key, json_t *value);
void fhir_path_eval(const char *path, json_t *res, fhir_path_fn fn, void *ctx);

#endif
