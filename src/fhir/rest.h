/*
 * rest.h — the FHIR R4 RESTful API, independent of the HTTP library: a
 * request (method, path below the base, query, headers that matter, body)
 * goes in; a response (status, headers, body) comes out. src/http adapts it
 * to libmicrohttpd; tests and other modules (ingest, bundles) can call it
 * directly.
 *
 * Every failure produces an OperationOutcome body with the issue type,
 * a diagnostic message, and the location (expression) of the fault.
 */
#ifndef CONCORD_FHIR_REST_H
#define CONCORD_FHIR_REST_H

#include <stddef.h>

#include "../access/access.h"
#include "../base/arena.h"
#include "../base/buf.h"
#include "../store/store.h"

typedef struct rest_request {
    const char *method;       /* "GET", "POST", ... */
    const char *path;         /* below the base, e.g. "/Patient/123" or "" */
    const char *query;        /* raw query string without '?', may be NULL */
    const char *body;
    size_t body_len;
    const char *content_type; /* may be NULL */
    const char *if_match;
    const char *if_none_exist;
    const char *prefer;
    const char *base_url;     /* absolute base, e.g. "http://127.0.0.1:8080/fhir" */
    const acc_principal *who; /* who is asking (authenticated by the HTTP layer), or NULL */
} rest_request;

#define REST_MAX_TOUCHED 256

typedef struct rest_response {
    int status;
    buf body;
    const char *content_type; /* static string */
    char etag[32];            /* W/"3" or empty */
    char location[512];       /* or empty */
    char last_modified[40];   /* RFC 7231 date or empty */
    char content_location[512]; /* or empty (async operations: where to poll) */
    char progress[128];       /* X-Progress (async operations), or empty */
    char access[160];         /* X-Concord-Access: how access was granted when not ordinary (break-glass) */
    /* Operations (rest_ext) that return patient data name each patient key
     * here (rest_touch), so that the access log has an entry per patient,
     * which each patient sees in their own log. */
    int64_t touched[REST_MAX_TOUCHED];
    int ntouched;
} rest_response;

/* Record that the response holds data of patient `pkey` (0 and repeats
 * ignored; past REST_MAX_TOUCHED, the operation's own entry stands for the rest). */
void rest_touch(rest_response *rs, int64_t pkey);

/* Operations served by other modules (file import, quarantine) under the
 * same base: segments as in the built-in routes ("{id}" matches any
 * segment and is passed as `id`; anything else literal). Looked at before
 * the built-in routes. */
typedef void (*rest_ext_fn)(void *user, const rest_request *rq, rest_response *rs, const char *id);
/* Each operation declares what it needs (policy.h: an area and action
 * bits); with access control on, a principal whose role lacks it is
 * refused before the handler runs, and every call is written to the
 * access log. An operation that declares nothing (actions 0) is refused
 * to everyone. Handlers that return patient-level rows apply the
 * principal's scope themselves (rq->who). */
typedef struct rest_ext_route {
    const char *method;
    const char *seg[4];
    rest_ext_fn fn;
    int area;         /* acc_area */
    unsigned actions; /* ACC_READ ... */
} rest_ext_route;

/* One module's routes and the `user` pointer its handlers get. */
typedef struct rest_ext {
    const rest_ext_route *routes;
    size_t n;
    void *user;
} rest_ext;
#define REST_MAX_EXT 8

typedef struct rest_ctx {
    store *store;
    const char *version;       /* concord version for CapabilityStatement */
    size_t max_body;           /* for the CapabilityStatement's description */
    rest_ext ext[REST_MAX_EXT]; /* more operations (file import, registry ...) */
    size_t n_ext;
    /* Access control (src/access): when `guarded`, every interaction but
     * the CapabilityStatement needs rq->who, is checked against role,
     * relationship, sensitivity and consent, and is written to `audit`. */
    int guarded;
    struct audit_log *audit;
} rest_ctx;

/* Handle one request. `rs` must be zero-initialised; the caller frees
 * rs->body with buf_free. */
void rest_handle(rest_ctx *ctx, const rest_request *rq, rest_response *rs);

/* The first value of query parameter `name` in a raw query string,
 * percent-decoded into out (truncated to n - 1 bytes): 1 found, 0 not. For
 * operations that take a few simple arguments; searches use search.h. */
int rest_query_param(const char *query, const char *name, char *out, size_t n);

/* Fill `rs` with an OperationOutcome for `e`, status from the error code. */
void rest_error(rest_response *rs, const err *e);

/* The CapabilityStatement as JSON text (built once, cached). */
const char *rest_capability(rest_ctx *ctx, const char *base_url);

#endif
