/*
 * validate.h — structural validation of a FHIR R4 resource (JSON) against the
 * generated model (model.h): known resourceType; every property is an element
 * of its type (choice elements by their typed name, "_x" primitive
 * extensions, contained resources validated as resources); JSON kinds match
 * the element types (string/number/boolean/object; arrays exactly where the
 * cardinality is many); required elements (min >= 1) present; primitive
 * values well-formed (id, date, dateTime, instant, boolean, integer,
 * positiveInt, unsignedInt, decimal, uri, code...); resource id rules.
 *
 * On failure fills `e` with ST_INVALID or ST_UNPROCESSABLE, issue type
 * ("structure", "required", "value", "invalid") and `where` = the element
 * path with indices, e.g. "Patient.name[1].given[0]".
 */
#ifndef CONCORD_FHIR_VALIDATE_H
#define CONCORD_FHIR_VALIDATE_H

#include <jansson.h>

#include "../base/status.h"

/* Validate a resource; `expected_type` may be NULL (any resource type). */
status fhir_validate(json_t *res, const char *expected_type, err *e);

/* 1..64 characters of [A-Za-z0-9-.] */
int fhir_id_valid(const char *id);

#endif
