/*
 * status.h — the one status type of concord, and the error record that carries
 * code, message and location from where a fault is found to where it is
 * reported (FHIR OperationOutcome, HL7 ERR segment, CLI "file:line: message").
 *
 * Convention: functions return `status` (ST_OK == 0 on success) and, when the
 * caller passes a non-NULL `err *`, fill it on failure. One exit per function:
 * an `rc` variable and a `goto out` cleanup.
 */
#ifndef CONCORD_STATUS_H
#define CONCORD_STATUS_H

#include <stdarg.h>

typedef enum status {
    ST_OK = 0,
    ST_INVALID,       /* malformed input: bad JSON, bad parameter (HTTP 400) */
    ST_UNPROCESSABLE, /* well-formed but fails validation rules (HTTP 422) */
    ST_NOT_FOUND,     /* no such resource or route (HTTP 404) */
    ST_GONE,          /* resource was deleted (HTTP 410) */
    ST_CONFLICT,      /* version/id conflict (HTTP 409) */
    ST_PRECONDITION,  /* If-Match / conditional failed (HTTP 412) */
    ST_TOO_LARGE,     /* body over the limit (HTTP 413) */
    ST_UNSUPPORTED,   /* interaction or feature not supported (HTTP 501/405) */
    ST_IO,            /* storage or system failure (HTTP 500) */
    ST_NOMEM,         /* allocation failure (HTTP 500) */
    ST_INTERNAL,      /* a bug: an invariant did not hold (HTTP 500) */
    ST_UNAUTHENTICATED, /* no or bad credentials (HTTP 401) */
    ST_FORBIDDEN,     /* authenticated but not allowed (HTTP 403) */
    ST_THROTTLED      /* too many attempts; try later (HTTP 429) */
} status;

/* An error with its FHIR issue type ("invalid", "structure", "required",
 * "value", "not-found", "conflict", "processing", "exception", "too-costly",
 * "not-supported"), a message, and where (an element path such as
 * "Patient.name[0].family", or "file:line"). Fixed-size: never allocates. */
typedef struct err {
    status code;
    const char *issue;  /* static string, FHIR IssueType code */
    char msg[320];
    char where[160];
} err;

/* Fill `e` (if non-NULL) and return `code`. `where` may be NULL. */
status err_set(err *e, status code, const char *issue, const char *where,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void err_clear(err *e);

/* HTTP status that a status code maps to. */
int status_http(status s);
/* Short name, e.g. "invalid". */
const char *status_name(status s);

#endif
