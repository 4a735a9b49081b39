/*
 * json.h — FHIR JSON in and out, keeping decimals exactly as written.
 *
 * FHIR's decimal type is significant to its written precision ("1.00" is
 * not "1.0"; "4.2" must not come back as "4.2000000000000002"), but jansson
 * holds every non-integer as a double. So: fhir_json_load remembers the text
 * of each real number it parsed (found by scanning the input's number tokens
 * in document order and pairing them with the parsed tree, whose members
 * jansson keeps in document order), and fhir_json_dump writes that text back.
 * Reals without remembered text (made in code) are written in the shortest
 * form that reads back to the same double.
 *
 * The remembered texts live in a per-thread table keyed by the json_t
 * pointer, from fhir_json_load until fhir_json_release (called at the end of
 * each request). Ownership: fhir_json_load returns a new reference the
 * caller decrefs; fhir_json_release must not be called while a tree loaded
 * on this thread is still to be dumped.
 *
 * A tree loaded on one thread and dumped on another (HL7 ingest maps on the
 * connection's thread and stores on the writer's) takes its texts along:
 * fhir_json_detach on the loading thread, fhir_json_attach on the dumping
 * one. The trees must stay alive (not freed, so their addresses are not
 * reused) until the dumping thread's fhir_json_release.
 */
#ifndef CONCORD_FHIR_JSON_H
#define CONCORD_FHIR_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "../base/buf.h"

/* Parse (rejecting duplicate keys); NULL with `je` filled on error. */
json_t *fhir_json_load(const char *text, size_t n, json_error_t *je);
/* Append compact JSON for `j` to `out`. */
void fhir_json_dump(const json_t *j, buf *out);
/* Forget the texts remembered on this thread. */
void fhir_json_release(void);

/* Texts remembered on one thread, carried to another. */
typedef struct fhir_json_decimals fhir_json_decimals;
/* Take the texts this thread remembers for the numbers in the trees
 * roots[0..n-1] (NULL roots are skipped), or every text it remembers if
 * `roots` is NULL, and forget the rest (as fhir_json_release). Only the
 * numbers of live trees may travel: a text kept for a freed number would
 * be printed for whatever number next gets its address. NULL when there
 * are none. Borrows the roots; the caller owns the result and frees it with
 * fhir_json_decimals_free. */
fhir_json_decimals *fhir_json_detach(json_t *const *roots, size_t n);
/* Remember `d`'s texts on this thread too, until its fhir_json_release.
 * Borrows `d` (the texts are copied); NULL does nothing. */
void fhir_json_attach(const fhir_json_decimals *d);
void fhir_json_decimals_free(fhir_json_decimals *d);

#endif
