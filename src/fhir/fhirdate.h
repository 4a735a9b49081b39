/*
 * fhirdate.h — FHIR date, dateTime and instant values as ranges of time.
 *
 * A FHIR date-time has a precision ("2024", "2024-03", "2024-03-05",
 * "2024-03-05T10:15", "2024-03-05T10:15:30.123+01:00"); as a search value it
 * stands for the whole interval it names. Ranges are in seconds since the
 * Unix epoch, UTC, both ends inclusive: [lo, hi]. Values without a time zone
 * are read as UTC (concord's stated convention for local times).
 */
#ifndef CONCORD_FHIRDATE_H
#define CONCORD_FHIRDATE_H

#include <stdint.h>
#include <stddef.h>

/* The first and last second FHIR can write (0001-01-01T00:00:00Z and
 * 9999-12-31T23:59:59Z): the bounds of an open-ended Period in the index. */
#define FHIR_DATE_MIN INT64_C(-62135596800)
#define FHIR_DATE_MAX INT64_C(253402300799)

/* Parse a date/dateTime/instant. Returns 0 and sets lo/hi on success, -1 if
 * `s` is not a valid FHIR date, dateTime or instant (checks field ranges,
 * days in month including leap years, and the zone "Z" or ±hh:mm). */
int fhir_date_range(const char *s, size_t n, int64_t *lo, int64_t *hi);

/* Format `usec` microseconds since the epoch as an instant
 * "YYYY-MM-DDThh:mm:ss.uuuuuuZ" (27 chars + NUL) into out[32]. */
void fhir_instant_format(int64_t usec, char out[32]);

/* Current time in microseconds since the epoch. */
int64_t fhir_now_usec(void);

#endif
