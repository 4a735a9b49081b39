/*
 * status.c — error records and their mapping to HTTP status codes.
 */
#include "status.h"

#include <stdio.h>
#include <string.h>

status err_set(err *e, status code, const char *issue, const char *where, const char *fmt, ...) {
    if (!e) return code;
    e->code = code;
    e->issue = issue ? issue : "processing";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    snprintf(e->where, sizeof e->where, "%s", where ? where : "");
    return code;
}

void err_clear(err *e) {
    if (!e) return;
    e->code = ST_OK;
    e->issue = NULL;
    e->msg[0] = 0;
    e->where[0] = 0;
}

static const struct {
    status s;
    int http;
    const char *name;
} status_table[] = {
    {ST_OK, 200, "ok"},
    {ST_INVALID, 400, "invalid"},
    {ST_UNPROCESSABLE, 422, "unprocessable"},
    {ST_NOT_FOUND, 404, "not-found"},
    {ST_GONE, 410, "gone"},
    {ST_CONFLICT, 409, "conflict"},
    {ST_PRECONDITION, 412, "precondition-failed"},
    {ST_TOO_LARGE, 413, "too-large"},
    {ST_UNSUPPORTED, 501, "not-supported"},
    {ST_IO, 500, "io-error"},
    {ST_NOMEM, 500, "out-of-memory"},
    {ST_INTERNAL, 500, "internal-error"},
    {ST_UNAUTHENTICATED, 401, "unauthenticated"},
    {ST_FORBIDDEN, 403, "forbidden"},
    {ST_THROTTLED, 429, "throttled"},
};

int status_http(status s) {
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].s == s) return status_table[i].http;
    return 500;
}

const char *status_name(status s) {
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].s == s) return status_table[i].name;
    return "unknown";
}
