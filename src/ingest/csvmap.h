/*
 * csvmap.h — a data-driven mapping from one provider's CSV layout to FHIR R4
 * resources. The mapping file (format: docs/csv-mapping.md; one per
 * provider in mappings/) says which organisation and care setting send the
 * extract, its delimiter and date formats, its code tables, and for each
 * column the FHIR element it fills:
 *
 *     organisation ZC1
 *     setting community
 *     date-format YYYY-MM-DD
 *     sex-codes M=male F=female
 *     set Encounter.class HH
 *     column patient_id -> Patient.identifier[local]
 *     column contact_date + contact_time -> Encounter.period.start
 *
 * Each data row becomes a Patient, then the resources the row records
 * (an Encounter for a contact, an EpisodeOfCare for a service package or a
 * care home placement), as compact FHIR JSON with:
 *   - meta.tag: the care setting (https://concord.example/CodeSystem/
 *     care-setting) and the organisation (ODS code), meta.source if given;
 *   - deterministic ids: 32 hex characters of BLAKE2b-128 over
 *     "<type>|<identifier system>|<business key>" — the same derivation
 *     hl7_map uses — so the same row, or a later row about the same client
 *     or contact, always yields the same ids and a re-import updates;
 *   - references to the Patient as "Patient/<id>", to organisations by
 *     identifier (ODS code).
 *
 * Ownership and threads: a csvmap owns everything it holds; csvmap_bind
 * records column positions in it (call it once per file, before any row);
 * csvmap_row then only reads it, so concurrent calls on a bound mapping are
 * safe. Strings handed to the emit callback live until it returns.
 */
#ifndef CONCORD_INGEST_CSVMAP_H
#define CONCORD_INGEST_CSVMAP_H

#include <stddef.h>

#include "../base/status.h"
#include "csv.h"

typedef struct csvmap csvmap;

/* Load a mapping file; errors name path:line (in e->where). */
status csvmap_load(const char *path, csvmap **out, err *e);
/* The same from text in memory; `name` stands for the path in errors. */
status csvmap_parse(const char *text, size_t len, const char *name, csvmap **out, err *e);

char csvmap_delimiter(const csvmap *m);
const char *csvmap_org(const csvmap *m); /* ODS code of the sending organisation */
const char *
csvmap_setting(const csvmap *m); /* primary-care | acute | community | social-care | mental-health */

/* Bind the mapping's columns to the header record (by name: exact, else
 * ignoring case and surrounding spaces). A missing column the mapping does
 * not mark optional is an error naming it (e->where = the column name). */
status csvmap_bind(csvmap *m, const csv_record *header, err *e);

/* Map one data row: calls emit once per resource (Patient first, then what
 * the row records), each as compact FHIR JSON text with a deterministic id.
 * On a bad value returns ST_INVALID with e->where = the column header name
 * and e->msg precise, e.g. "date_of_birth: \"31/02/19X5\" is not a date in
 * the form DD/MM/YYYY"; nothing is emitted for that row then (the whole
 * row is checked before anything is emitted). `source` is the meta.source
 * URI stamped on every resource (NULL or "" for none; one with whitespace
 * is refused: ST_INVALID, e->where "source"). The row's fields must be
 * UTF-8, as csv_next guarantees. An error returned by emit stops the row
 * and is returned as it is (resources emitted before it stay emitted: the
 * caller's transaction decides). Thread-safe for concurrent calls on a
 * bound mapping; borrows row and source for the call. */
typedef status (*csvmap_emit)(void *ctx, const char *type, const char *id, const char *json, size_t len,
                              err *e);
status csvmap_row(const csvmap *m, const csv_record *row, const char *source, csvmap_emit emit, void *ctx,
                  err *e);

void csvmap_free(csvmap *m);

#endif
