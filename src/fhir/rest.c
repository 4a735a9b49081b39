/*
 * rest.c — the FHIR R4 RESTful API over the store: routing (a table of
 * method + path patterns), the interactions (read, vread, create,
 * conditional create, update, delete, history, search, batch/transaction,
 * Patient/$everything, metadata), and the rendering of results as
 * Bundles and OperationOutcomes.
 *
 * Invariants:
 *  - A 2xx is returned only after store_commit succeeded (durable).
 *  - Every write is validated (fhir_validate) before the store sees it; a
 *    failure returns an OperationOutcome and stores nothing.
 *  - A transaction Bundle is one store transaction: all entries or none.
 *  - Resource bodies are served as stored (no re-serialisation on read);
 *    Bundles are assembled as text around the stored bodies.
 */
#include "rest.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../access/guard.h"
#include "../base/log.h"
#include "fhirdate.h"
#include "json.h"
#include "model.h"
#include "search.h"
#include "validate.h"

static const char FHIR_JSON[] = "application/fhir+json; charset=utf-8";

/* ---- small helpers --------------------------------------------------- */

static void http_date(int64_t usec, char out[40]) {
    time_t t = (time_t)(usec / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void set_version_headers(rest_response *rs, const store_meta *m) {
    snprintf(rs->etag, sizeof rs->etag, "W/\"%lld\"", (long long)m->version);
    http_date(m->updated_usec, rs->last_modified);
}

static void outcome_json(buf *b, const char *severity, const char *issue, const char *msg, const char *where) {
    buf_puts(b, "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"");
    buf_puts(b, severity);
    buf_puts(b, "\",\"code\":\"");
    buf_puts(b, issue ? issue : "processing");
    buf_puts(b, "\",\"diagnostics\":\"");
    buf_json_escape(b, msg, strlen(msg));
    buf_puts(b, "\"");
    if (where && *where) {
        buf_puts(b, ",\"expression\":[\"");
        buf_json_escape(b, where, strlen(where));
        buf_puts(b, "\"]");
    }
    buf_puts(b, "}]}");
}

void rest_error(rest_response *rs, const err *e) {
    rs->status = status_http(e->code);
    rs->content_type = FHIR_JSON;
    buf_reset(&rs->body);
    rs->etag[0] = rs->location[0] = rs->last_modified[0] = 0;
    outcome_json(&rs->body, e->code >= ST_IO ? "fatal" : "error", e->issue, e->msg[0] ? e->msg : status_name(e->code),
                 e->where);
}

static void fail(rest_response *rs, status code, const char *issue, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void fail(rest_response *rs, status code, const char *issue, const char *where, const char *fmt, ...) {
    err e;
    e.code = code;
    e.issue = issue;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    snprintf(e.where, sizeof e.where, "%s", where ? where : "");
    rest_error(rs, &e);
}

/* Parse an ETag / If-Match value: W/"3", "3" or 3. Returns -1 if malformed. */
static int64_t parse_etag(const char *s) {
    if (!s) return 0;
    while (isspace((unsigned char)*s)) s++;
    if (strncmp(s, "W/", 2) == 0) s += 2;
    if (*s == '"') s++;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 1) return -1;
    if (*end == '"') end++;
    while (isspace((unsigned char)*end)) end++;
    return *end ? -1 : v;
}

static int prefer_has(const char *prefer, const char *what) { return prefer && strstr(prefer, what) != NULL; }

/* Parse a request body as a resource. Returns NULL and fills rs on error. */
static json_t *parse_body(const rest_request *rq, rest_response *rs) {
    if (rq->content_type && !strstr(rq->content_type, "json")) {
        fail(rs, ST_INVALID, "not-supported", NULL, "content type '%s' is not supported: send application/fhir+json",
             rq->content_type);
        rs->status = 415;
        return NULL;
    }
    if (!rq->body || rq->body_len == 0) {
        fail(rs, ST_INVALID, "required", NULL, "the request has no body: a FHIR resource in JSON is expected");
        return NULL;
    }
    json_error_t je;
    json_t *j = fhir_json_load(rq->body, rq->body_len, &je);
    if (!j) {
        char where[64];
        snprintf(where, sizeof where, "line %d, column %d", je.line, je.column);
        fail(rs, ST_INVALID, "structure", where, "malformed JSON at line %d, column %d: %s", je.line, je.column,
             je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        fail(rs, ST_INVALID, "structure", NULL, "the body must be a JSON object (a FHIR resource)");
        return NULL;
    }
    return j;
}

static void render_resource(rest_response *rs, int status, const store_meta *m, const char *body, size_t len,
                            const rest_request *rq, int with_location) {
    rs->status = status;
    rs->content_type = FHIR_JSON;
    set_version_headers(rs, m);
    if (with_location)
        snprintf(rs->location, sizeof rs->location, "%s/%s/%s/_history/%lld", rq->base_url, m->type, m->id,
                 (long long)m->version);
    buf_reset(&rs->body);
    if (body) buf_append(&rs->body, body, len);
}

/* ---- writes (inside a transaction) ----------------------------------- */

typedef struct write_result {
    store_meta meta;
    int created;   /* 201 rather than 200 */
    int unchanged; /* conditional create matched an existing resource */
    char *body;    /* the stored JSON (malloc'd) */
} write_result;

static status check_type(json_t *res, const char *type, err *e) {
    const char *rt = json_string_value(json_object_get(res, "resourceType"));
    if (!rt) return err_set(e, ST_INVALID, "required", "resourceType", "resourceType is missing");
    if (strcmp(rt, type) != 0)
        return err_set(e, ST_INVALID, "invalid", "resourceType", "resourceType %s does not match the URL's %s", rt, type);
    return ST_OK;
}

/* Conditional create: search `criteria` within the txn. *found: 0, 1, or 2+.
 * `scope`: what the principal may see (NULL: everything) — a record they
 * may not see neither matches nor is revealed, as in any search. */
static status match_criteria(store_txn *tx, const char *type, const char *criteria, const store_scope *scope,
                             store_items *it, err *e) {
    arena a = {0};
    search_param_kv *kv;
    int n = search_split_query(&a, criteria, strlen(criteria), &kv);
    search_query q;
    status rc = search_parse(&a, type, kv, n, 0, &q, e);
    if (rc == ST_OK) {
        if (q.n_clauses == 0) rc = err_set(e, ST_INVALID, "invalid", "If-None-Exist", "the condition has no criteria");
    }
    if (rc == ST_OK) {
        q.count = 2;
        q.offset = 0;
        q.n_includes = 0;
        q.scope = scope;
        rc = store_txn_search(tx, &q, it, e);
    }
    arena_free(&a);
    return rc;
}

/* `validated`: the resource was already validated (as part of its Bundle).
 * `want_body`: keep the stored JSON in wr->body for the response. */
/* The part of a create that needs no transaction: type check, the
 * server-assigned id, validation (unless done with the Bundle), and the
 * store's preparation (stamping, serialising, index extraction) — done
 * before the write lock so that concurrent requests do it in parallel. */
static status prepare_create(json_t *res, const char *type, const char *id, int validated, store_prep **prep,
                             err *e) {
    status rc = check_type(res, type, e);
    if (rc != ST_OK) return rc;
    json_object_del(res, "id"); /* the server assigns the id of a created resource */
    if (!validated) {
        rc = fhir_validate(res, type, e);
        if (rc != ST_OK) return rc;
    }
    return store_prepare(res, id, prep, e);
}

/* `prep` from prepare_create, or NULL to do it all here. */
static status do_create(store_txn *tx, json_t *res, const char *type, const char *if_none_exist,
                        const store_scope *scope, const char *id, int validated, int want_body, store_prep *prep,
                        write_result *wr, err *e) {
    status rc = ST_OK;
    if (if_none_exist && *if_none_exist) {
        store_items it = {0};
        rc = match_criteria(tx, type, if_none_exist, scope, &it, e);
        if (rc == ST_OK && it.n > 1)
            rc = err_set(e, ST_PRECONDITION, "multiple-matches", "If-None-Exist",
                         "the condition '%s' matches more than one %s", if_none_exist, type);
        if (rc == ST_OK && it.n == 1) {
            wr->meta = it.v[0].meta;
            wr->unchanged = 1;
            wr->body = it.v[0].body;
            it.v[0].body = NULL;
        }
        store_items_free(&it);
        if (rc != ST_OK || wr->unchanged) return rc;
    }
    if (prep) return store_put_prepared(tx, prep, 1, &wr->meta, &wr->created, want_body ? &wr->body : NULL, e);
    rc = check_type(res, type, e);
    if (rc != ST_OK) return rc;
    json_object_del(res, "id");
    if (!validated) {
        rc = fhir_validate(res, type, e);
        if (rc != ST_OK) return rc;
    }
    return store_put(tx, res, id, 0, 1, &wr->meta, &wr->created, want_body ? &wr->body : NULL, e);
}

static status do_update(store_txn *tx, json_t *res, const char *type, const char *id, int64_t if_match,
                        int validated, int want_body, write_result *wr, err *e) {
    status rc = check_type(res, type, e);
    if (rc != ST_OK) return rc;
    char where[96];
    snprintf(where, sizeof where, "%s.id", type);
    json_t *jid = json_object_get(res, "id");
    if (!jid) return err_set(e, ST_INVALID, "required", where, "an update must carry the resource's id in the body");
    if (!json_is_string(jid)) return err_set(e, ST_INVALID, "structure", where, "id must be a JSON string");
    const char *bid = json_string_value(jid);
    if (!fhir_id_valid(bid))
        return err_set(e, ST_INVALID, "value", where, "'%s' is not a valid id (1-64 of A-Z a-z 0-9 - .)", bid);
    if (strcmp(bid, id) != 0)
        return err_set(e, ST_INVALID, "invalid", where, "the body's id '%s' does not match the URL's '%s'", bid, id);
    if (!validated) {
        rc = fhir_validate(res, type, e);
        if (rc != ST_OK) return rc;
    }
    rc = store_put(tx, res, id, if_match, 0, &wr->meta, &wr->created, want_body ? &wr->body : NULL, e);
    if (rc != ST_OK) return rc;
    return ST_OK;
}

/* Run `fn` in its own transaction, committing on success. */
typedef status (*txn_fn)(store_txn *tx, void *arg, err *e);

/* Are this request's writes a signed-in person's own claims (rel.c)? */
static int user_claim(const rest_ctx *ctx, const rest_request *rq) {
    return ctx->guarded && rq->who && rq->who->role != ROLE_SYSTEM;
}

static status in_txn(store *s, int claim, txn_fn fn, void *arg, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    store_txn_set_user_claim(tx, claim);
    rc = fn(tx, arg, e);
    if (rc != ST_OK) {
        store_rollback(tx);
        return rc;
    }
    return store_commit(tx, e);
}

/* ---- access control ---------------------------------------------------- */

/* One access-log entry for this request (nothing when not guarded). The
 * patient is named by id: given, or looked up from the patient key. */
static status audit_req(rest_ctx *ctx, const rest_request *rq, const char *action, const char *type, const char *id,
                        int64_t pkey, const char *patient_id, int status, const char *purpose, const char *reason,
                        int wait) {
    if (!ctx->guarded) return ST_OK;
    char pid[72] = "";
    if (patient_id) snprintf(pid, sizeof pid, "%s", patient_id);
    else if (pkey) guard_patient_id(ctx->store, pkey, pid, sizeof pid);
    return guard_audit(ctx->audit, rq->who, action, type, id, pkey, pid, status, purpose, reason, rq->method,
                       rq->path, rq->query, wait);
}

/* Refuse with `e` and log the refusal. */
static void deny(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const err *e, const char *action,
                 const char *type, const char *id, int64_t pkey) {
    buf_reset(&rs->body);
    rest_error(rs, e);
    audit_req(ctx, rq, action, type, id, pkey, type && id && strcmp(type, "Patient") == 0 ? id : NULL, rs->status,
              NULL, e->msg, 0);
}

/* A write's access check and stamping (guard_write), logged if refused. */
static status guard_res(rest_ctx *ctx, const rest_request *rq, rest_response *rs, json_t *res, const char *type,
                        const char *id, const char *action, int64_t *pkey, char *pid) {
    *pkey = 0;
    pid[0] = 0;
    if (!ctx->guarded) return ST_OK;
    err e;
    status rc = guard_write(ctx->store, rq->who, res, type, pkey, pid, &e);
    if (rc != ST_OK) deny(ctx, rq, rs, &e, action, type, id, *pkey);
    return rc;
}

/* For an update or delete: the current version must be one the user may
 * see (writing over a hidden record is refused as reading it is). */
static status guard_existing(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const char *type,
                             const char *id, const char *action) {
    if (!ctx->guarded) return ST_OK;
    err e;
    store_meta m;
    status rc = store_read(ctx->store, type, id, 0, NULL, &m, &e);
    if (rc == ST_NOT_FOUND || rc == ST_GONE) return ST_OK;
    if (rc == ST_OK) rc = guard_record(ctx->store, rq->who, &m, NULL, &e);
    if (rc != ST_OK) deny(ctx, rq, rs, &e, action, type, id, m.pkey);
    return rc;
}

/* ---- the interactions ------------------------------------------------ */

typedef struct route_vars {
    const char *type, *id, *vid;
} route_vars;

/* An earlier version may carry a sensitive code its current version no
 * longer has (a diagnosis corrected): history rows keep no labels, so the
 * version's own are worked out from its body. Hidden when the role may not
 * see its category and the user's organisation did not record it. */
static int version_hidden(const rest_ctx *ctx, const rest_request *rq, const char *type, const char *body,
                          size_t len) {
    if (!ctx->guarded || !rq->who || rq->who->role == ROLE_SYSTEM || !body) return 0;
    unsigned denied = acc_sens_denied(rq->who->role);
    if (!denied) return 0;
    json_t *res = json_loadb(body, len, 0, NULL);
    if (!res) return 0;
    store_label lab;
    store_label_of(type, res, &lab);
    json_decref(res);
    return (lab.sens & denied) && strcmp(lab.org, rq->who->org) != 0;
}

static void h_read(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    store_meta m;
    int64_t version = 0;
    if (v->vid) {
        char *end;
        version = strtoll(v->vid, &end, 10);
        if (*end || version < 1) {
            fail(rs, ST_NOT_FOUND, "not-found", NULL, "'%s' is not a version id", v->vid);
            return;
        }
    }
    const char *action = v->vid ? "vread" : "read";
    const char *pid = strcmp(v->type, "Patient") == 0 ? v->id : NULL;
    status rc = ST_OK;
    if (ctx->guarded && (rc = guard_role(rq->who, v->type, ACC_READ, &e)) != ST_OK) {
        deny(ctx, rq, rs, &e, action, v->type, v->id, 0);
        return;
    }
    rc = store_read(ctx->store, v->type, v->id, version, &rs->body, &m, &e);
    int glass = 0;
    if ((rc == ST_OK || rc == ST_GONE) && ctx->guarded) {
        err ge;
        if (guard_record(ctx->store, rq->who, &m, &glass, &ge) != ST_OK) {
            deny(ctx, rq, rs, &ge, action, v->type, v->id, m.pkey);
            return;
        }
    }
    if (rc == ST_GONE) {
        rest_error(rs, &e);
        set_version_headers(rs, &m);
        audit_req(ctx, rq, action, v->type, v->id, m.pkey, pid, rs->status, NULL, e.msg, 0);
        return;
    }
    if (rc != ST_OK) {
        rest_error(rs, &e);
        audit_req(ctx, rq, action, v->type, v->id, 0, pid, rs->status, NULL, e.msg, 0);
        return;
    }
    if (v->vid && version_hidden(ctx, rq, v->type, rs->body.p, rs->body.len)) {
        err he;
        err_set(&he, ST_NOT_FOUND, "not-found", NULL, "%s/%s/_history/%s is not known", v->type, v->id, v->vid);
        deny(ctx, rq, rs, &he, action, v->type, v->id, m.pkey);
        return;
    }
    rs->status = 200;
    rs->content_type = FHIR_JSON;
    set_version_headers(rs, &m);
    if (glass) snprintf(rs->access, sizeof rs->access, "break-glass");
    audit_req(ctx, rq, action, v->type, v->id, m.pkey, pid, 200, glass ? "ETREAT" : NULL, NULL, 0);
}

typedef struct create_arg {
    json_t *res;
    const char *type, *id, *if_none_exist;
    const store_scope *scope; /* of the conditional create's search */
    int64_t if_match;
    store_prep *prep;
    write_result wr;
} create_arg;

static status create_fn(store_txn *tx, void *p, err *e) {
    create_arg *a = p;
    return do_create(tx, a->res, a->type, a->if_none_exist, a->scope, NULL, 1, 1, a->prep, &a->wr, e);
}

static status update_fn(store_txn *tx, void *p, err *e) {
    create_arg *a = p;
    return do_update(tx, a->res, a->type, a->id, a->if_match, 0, 1, &a->wr, e);
}

static void respond_write(const rest_request *rq, rest_response *rs, write_result *wr, int ok_status) {
    int status = wr->created ? 201 : ok_status;
    if (prefer_has(rq->prefer, "return=minimal")) {
        render_resource(rs, status, &wr->meta, NULL, 0, rq, 1);
    } else if (prefer_has(rq->prefer, "return=OperationOutcome")) {
        render_resource(rs, status, &wr->meta, NULL, 0, rq, 1);
        outcome_json(&rs->body, "information", "informational",
                     wr->unchanged ? "a matching resource already exists" : "done", NULL);
    } else {
        render_resource(rs, status, &wr->meta, wr->body, wr->body ? strlen(wr->body) : 0, rq, 1);
    }
}

static void h_create(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    create_arg a = {.type = v->type, .if_none_exist = rq->if_none_exist};
    a.res = parse_body(rq, rs);
    if (!a.res) return;
    int64_t pkey;
    char pid[72];
    if (guard_res(ctx, rq, rs, a.res, a.type, NULL, "create", &pkey, pid) != ST_OK) {
        json_decref(a.res);
        return;
    }
    status rc = prepare_create(a.res, a.type, NULL, 0, &a.prep, &e);
    acc_scope sc;
    if (rc == ST_OK && ctx->guarded && a.if_none_exist && *a.if_none_exist) {
        rc = acc_scope_for(ctx->store, rq->who, &sc, &e);
        a.scope = &sc.sc;
    }
    if (rc == ST_OK) rc = in_txn(ctx->store, user_claim(ctx, rq), create_fn, &a, &e);
    if (rc != ST_OK) rest_error(rs, &e);
    else respond_write(rq, rs, &a.wr, 200);
    if (ctx->guarded) {
        const char *id = rc == ST_OK ? a.wr.meta.id : NULL;
        if (rc == ST_OK && strcmp(a.type, "Patient") == 0) snprintf(pid, sizeof pid, "%s", id);
        audit_req(ctx, rq, "create", a.type, id, pkey, pid, rs->status, NULL, rc == ST_OK ? NULL : e.msg, 1);
    }
    store_prep_free(a.prep);
    free(a.wr.body);
    json_decref(a.res);
}

static void h_update(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    create_arg a = {.type = v->type, .id = v->id};
    if (rq->if_match) {
        a.if_match = parse_etag(rq->if_match);
        if (a.if_match < 0) {
            fail(rs, ST_INVALID, "invalid", "If-Match", "If-Match must be a version ETag such as W/\"3\"");
            return;
        }
    }
    a.res = parse_body(rq, rs);
    if (!a.res) return;
    int64_t pkey;
    char pid[72];
    if (guard_existing(ctx, rq, rs, a.type, a.id, "update") != ST_OK ||
        guard_res(ctx, rq, rs, a.res, a.type, a.id, "update", &pkey, pid) != ST_OK) {
        json_decref(a.res);
        return;
    }
    status rc = in_txn(ctx->store, user_claim(ctx, rq), update_fn, &a, &e);
    if (rc != ST_OK) rest_error(rs, &e);
    else respond_write(rq, rs, &a.wr, 200);
    audit_req(ctx, rq, "update", a.type, a.id, pkey, pid, rs->status, NULL, rc == ST_OK ? NULL : e.msg, 1);
    free(a.wr.body);
    json_decref(a.res);
}

typedef struct delete_arg {
    const char *type, *id;
    store_meta m;
} delete_arg;

static status delete_fn(store_txn *tx, void *p, err *e) {
    delete_arg *a = p;
    return store_delete(tx, a->type, a->id, &a->m, e);
}

static void h_delete(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    delete_arg a = {.type = v->type, .id = v->id};
    if (ctx->guarded) {
        if (guard_role(rq->who, v->type, ACC_DELETE, &e) != ST_OK) {
            deny(ctx, rq, rs, &e, "delete", v->type, v->id, 0);
            return;
        }
        if (guard_existing(ctx, rq, rs, v->type, v->id, "delete") != ST_OK) return;
    }
    store_meta before;
    err re;
    int64_t pkey = 0;
    if (ctx->guarded && store_read(ctx->store, v->type, v->id, 0, NULL, &before, &re) == ST_OK) pkey = before.pkey;
    status rc = in_txn(ctx->store, user_claim(ctx, rq), delete_fn, &a, &e);
    if (rc != ST_OK) {
        rest_error(rs, &e);
        audit_req(ctx, rq, "delete", v->type, v->id, pkey, NULL, rs->status, NULL, e.msg, 1);
        return;
    }
    rs->status = 204;
    rs->content_type = FHIR_JSON;
    if (a.m.version) set_version_headers(rs, &a.m);
    audit_req(ctx, rq, "delete", v->type, v->id, pkey, NULL, 204, NULL, NULL, 1);
}

/* ---- Bundles out ----------------------------------------------------- */

static void bundle_open(buf *b, const char *type) {
    char id[37], now[32];
    store_new_id(id);
    fhir_instant_format(fhir_now_usec(), now);
    buf_printf(b, "{\"resourceType\":\"Bundle\",\"id\":\"%s\",\"meta\":{\"lastUpdated\":\"%s\"},\"type\":\"%s\"", id,
               now, type);
}

static void link_json(buf *b, const char *rel, const char *base, const char *type, const char *canon, int count,
                      int offset, int *first) {
    buf_printf(b, "%s{\"relation\":\"%s\",\"url\":\"", *first ? "" : ",", rel);
    *first = 0;
    buf tmp = {0};
    buf_printf(&tmp, "%s/%s?", base, type);
    if (canon && *canon) buf_printf(&tmp, "%s&", canon);
    buf_printf(&tmp, "_count=%d&_offset=%d", count, offset);
    buf_json_escape(b, tmp.p, tmp.len);
    buf_free(&tmp);
    buf_puts(b, "\"}");
}

static void entry_full_url(buf *b, const char *base, const store_meta *m) {
    buf_puts(b, "\"fullUrl\":\"");
    buf_json_escape(b, base, strlen(base));
    buf_putc(b, '/');
    buf_json_escape(b, m->type, strlen(m->type));
    buf_putc(b, '/');
    buf_json_escape(b, m->id, strlen(m->id));
    buf_putc(b, '"');
}

static void render_searchset(rest_response *rs, const rest_request *rq, const search_query *q, const char *type,
                             store_items *it) {
    buf *b = &rs->body;
    rs->status = 200;
    rs->content_type = FHIR_JSON;
    buf_reset(b);
    bundle_open(b, "searchset");
    if (it->total >= 0) buf_printf(b, ",\"total\":%lld", (long long)it->total);
    if (q) {
        buf_puts(b, ",\"link\":[");
        int first = 1;
        link_json(b, "self", rq->base_url, type, q->canonical, q->count, q->offset, &first);
        if (it->more) link_json(b, "next", rq->base_url, type, q->canonical, q->count, q->offset + q->count, &first);
        if (q->offset > 0)
            link_json(b, "previous", rq->base_url, type, q->canonical, q->count,
                      q->offset > q->count ? q->offset - q->count : 0, &first);
        buf_puts(b, "]");
    }
    buf_puts(b, ",\"entry\":[");
    int n = 0;
    for (size_t i = 0; i < it->n; i++) {
        store_item *x = &it->v[i];
        if (!x->body) continue;
        buf_puts(b, n++ ? ",{" : "{");
        entry_full_url(b, rq->base_url, &x->meta);
        buf_puts(b, ",\"resource\":");
        buf_append(b, x->body, x->body_len);
        buf_printf(b, ",\"search\":{\"mode\":\"%s\"}}", x->include ? "include" : "match");
    }
    if (q && q->ignored) {
        buf_puts(b, n++ ? ",{" : "{");
        buf_puts(b, "\"resource\":");
        char msg[512];
        snprintf(msg, sizeof msg, "parameters ignored (Prefer: handling=lenient): %s", q->ignored);
        outcome_json(b, "warning", "not-supported", msg, NULL);
        buf_puts(b, ",\"search\":{\"mode\":\"outcome\"}}");
    }
    buf_puts(b, "]}");
    if (n == 0) {
        /* FHIR forbids empty arrays: drop the "entry":[] we opened */
        b->len -= strlen(",\"entry\":[]}");
        buf_puts(b, "}");
    }
}

/* Parameters that single out a person: an aggregate-only role may not
 * count with them (a count of one named person's diagnoses is not
 * aggregate data). */
static int identifying_param(const search_clause *c) {
    static const char *const names[] = {"_id", "identifier", "patient", "subject", "name", "family", "given",
                                        "phonetic", "birthdate", "address", "address-postalcode", "telecom",
                                        "phone", "email", "link", "encounter", "beneficiary", NULL};
    if (c->target == ST_ID) return 1;
    if (c->target != ST_PARAM || !c->sp) return 0;
    for (int i = 0; i < c->n_values; i++)
        if (c->values[i].chain) return 1;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], c->sp->code) == 0) return 1;
    return 0;
}

void rest_touch(rest_response *rs, int64_t pkey) {
    if (!pkey || rs->ntouched >= REST_MAX_TOUCHED) return;
    for (int i = 0; i < rs->ntouched; i++)
        if (rs->touched[i] == pkey) return;
    rs->touched[rs->ntouched++] = pkey;
}

/* Who may search: a role that reads the area, within its scope; or an
 * aggregate-only role counting (_summary=count) without singling anyone
 * out, over the whole population. */
static status guard_search(rest_ctx *ctx, const rest_request *rq, search_query *q, const char *type, acc_scope *sc,
                           err *e) {
    status rc = guard_role(rq->who, type, ACC_READ, e);
    if (rc == ST_OK) {
        rc = acc_scope_for(ctx->store, rq->who, sc, e);
        if (rc == ST_OK) q->scope = &sc->sc;
        if (q->n_includes && !acc_allow(rq->who->role, AREA_DEMOGRAPHICS, ACC_READ))
            for (int i = 0; i < q->n_includes; i++)
                if (q->includes[i].target_type && acc_area_of_type(q->includes[i].target_type) != acc_area_of_type(type))
                    return err_set(e, ST_FORBIDDEN, "forbidden", "_include", "the role %s may not include %s",
                                   acc_role_name(rq->who->role), q->includes[i].target_type);
        return rc;
    }
    if (q->summary != SUMMARY_COUNT || guard_role(rq->who, type, ACC_COUNT, NULL) != ST_OK) return rc;
    for (int i = 0; i < q->n_clauses; i++)
        if (identifying_param(&q->clauses[i]))
            return err_set(e, ST_FORBIDDEN, "forbidden", q->clauses[i].sp ? q->clauses[i].sp->code : "_id",
                           "the role %s counts populations only: a count may not name a person",
                           acc_role_name(rq->who->role));
    q->scope = NULL; /* a population count */
    return ST_OK;
}

/* A search's access-log entries: one per patient whose data it returned
 * (so each can see it in their own log), or one for the search itself. */
static void audit_search(rest_ctx *ctx, const rest_request *rq, const char *type, const store_items *it, int status,
                         const char *reason) {
    if (!ctx->guarded) return;
    int64_t seen[64];
    int nseen = 0, logged = 0;
    for (size_t i = 0; it && i < it->n; i++) {
        int64_t pk = it->v[i].meta.pkey;
        if (!pk) continue;
        int dup = 0;
        for (int k = 0; k < nseen && !dup; k++) dup = seen[k] == pk;
        if (dup) continue;
        if (nseen < 64) seen[nseen++] = pk;
        audit_req(ctx, rq, "search", type, NULL, pk, NULL, status, NULL, reason, 0);
        logged = 1;
    }
    if (!logged) audit_req(ctx, rq, "search", type, NULL, 0, NULL, status, NULL, reason, 0);
}

static void h_search_kv(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const char *type,
                        search_param_kv *kv, int n) {
    arena a = {0};
    err e;
    search_query q;
    store_items it = {0};
    acc_scope sc;
    int lenient = prefer_has(rq->prefer, "handling=lenient");
    status rc = search_parse(&a, type, kv, n, lenient, &q, &e);
    if (rc == ST_OK && ctx->guarded) {
        rc = guard_search(ctx, rq, &q, type, &sc, &e);
        if (rc != ST_OK) {
            deny(ctx, rq, rs, &e, "search", type, NULL, 0);
            goto out;
        }
    }
    if (rc == ST_OK) rc = store_search(ctx->store, &q, &it, &e);
    if (rc != ST_OK) rest_error(rs, &e);
    else render_searchset(rs, rq, &q, type, &it);
    audit_search(ctx, rq, type, &it, rs->status, rc == ST_OK ? NULL : e.msg);
out:
    store_items_free(&it);
    arena_free(&a);
}

static void h_search(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    arena a = {0};
    search_param_kv *kv = NULL;
    int n = rq->query ? search_split_query(&a, rq->query, strlen(rq->query), &kv) : 0;
    h_search_kv(ctx, rq, rs, v->type, kv, n);
    arena_free(&a);
}

static void h_search_post(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    if (rq->content_type && !strstr(rq->content_type, "application/x-www-form-urlencoded")) {
        fail(rs, ST_INVALID, "not-supported", NULL, "_search takes application/x-www-form-urlencoded parameters");
        rs->status = 415;
        return;
    }
    arena a = {0};
    search_param_kv *kq = NULL, *kb = NULL;
    int nq = rq->query ? search_split_query(&a, rq->query, strlen(rq->query), &kq) : 0;
    int nb = rq->body ? search_split_query(&a, rq->body, rq->body_len, &kb) : 0;
    search_param_kv *kv = arena_alloc(&a, (size_t)(nq + nb + 1) * sizeof *kv);
    if (nq) memcpy(kv, kq, (size_t)nq * sizeof *kv);
    if (nb) memcpy(kv + nq, kb, (size_t)nb * sizeof *kv);
    h_search_kv(ctx, rq, rs, v->type, kv, nq + nb);
    arena_free(&a);
}

static void h_history(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    arena a = {0};
    search_param_kv *kv = NULL;
    int n = rq->query ? search_split_query(&a, rq->query, strlen(rq->query), &kv) : 0;
    int count = SEARCH_DEFAULT_COUNT, offset = 0;
    int64_t since = 0;
    for (int i = 0; i < n; i++) {
        char *end;
        if (strcmp(kv[i].name, "_count") == 0) {
            long c = strtol(kv[i].value, &end, 10);
            if (*end || c < 0) {
                fail(rs, ST_INVALID, "value", "_count", "_count must be a non-negative integer");
                goto out;
            }
            count = c > SEARCH_MAX_COUNT ? SEARCH_MAX_COUNT : (int)c;
        } else if (strcmp(kv[i].name, "_offset") == 0) {
            long c = strtol(kv[i].value, &end, 10);
            if (*end || c < 0) {
                fail(rs, ST_INVALID, "value", "_offset", "_offset must be a non-negative integer");
                goto out;
            }
            offset = (int)c;
        } else if (strcmp(kv[i].name, "_since") == 0) {
            int64_t lo, hi;
            if (fhir_date_range(kv[i].value, strlen(kv[i].value), &lo, &hi) != 0) {
                fail(rs, ST_INVALID, "value", "_since", "_since must be an instant");
                goto out;
            }
            since = lo * 1000000;
        } else if (strcmp(kv[i].name, "_format") && strcmp(kv[i].name, "_pretty")) {
            fail(rs, ST_INVALID, "not-supported", kv[i].name, "history does not support the parameter '%s'", kv[i].name);
            goto out;
        }
    }
    store_items it = {0};
    err e;
    int64_t hpkey = 0;
    if (ctx->guarded) {
        /* a record's history: as reading it. Across records: only for the
         * population-scope role (it is an export of everything changed). */
        status g = guard_role(rq->who, v->type ? v->type : "Patient", ACC_READ, &e);
        if (g == ST_OK && !v->id && rq->who->role != ROLE_SYSTEM)
            g = err_set(&e, ST_FORBIDDEN, "forbidden", NULL,
                        "history across records is not available to the role %s: read a record's history, or search",
                        acc_role_name(rq->who->role));
        if (g == ST_OK && v->id) {
            store_meta m;
            err re;
            if (store_read(ctx->store, v->type, v->id, 0, NULL, &m, &re) != ST_NOT_FOUND) {
                g = guard_record(ctx->store, rq->who, &m, NULL, &e);
                hpkey = m.pkey;
            }
        }
        if (g != ST_OK) {
            deny(ctx, rq, rs, &e, "history", v->type, v->id, hpkey);
            goto out;
        }
    }
    status rc = store_history(ctx->store, v->type, v->id, since, count, offset, &it, &e);
    if (rc == ST_OK && ctx->guarded) { /* earlier versions the user may not see are left out */
        size_t keep = 0;
        for (size_t i = 0; i < it.n; i++) {
            if (version_hidden(ctx, rq, it.v[i].meta.type, it.v[i].body, it.v[i].body_len)) free(it.v[i].body);
            else it.v[keep++] = it.v[i];
        }
        if (it.total >= 0) it.total -= (int64_t)(it.n - keep); /* not counted either */
        it.n = keep;
    }
    audit_req(ctx, rq, "history", v->type, v->id, hpkey, NULL, rc == ST_OK ? 200 : status_http(rc), NULL, NULL, 0);
    if (rc != ST_OK) {
        store_items_free(&it);
        rest_error(rs, &e);
        goto out;
    }
    buf *b = &rs->body;
    rs->status = 200;
    rs->content_type = FHIR_JSON;
    buf_reset(b);
    bundle_open(b, "history");
    buf_puts(b, ",\"entry\":[");
    for (size_t i = 0; i < it.n; i++) {
        store_item *x = &it.v[i];
        buf_puts(b, i ? ",{" : "{");
        entry_full_url(b, rq->base_url, &x->meta);
        if (x->body) {
            buf_puts(b, ",\"resource\":");
            buf_append(b, x->body, x->body_len);
        }
        const char *method = x->meta.deleted ? "DELETE" : x->meta.version == 1 ? "POST" : "PUT";
        buf_printf(b, ",\"request\":{\"method\":\"%s\",\"url\":\"%s", method, x->meta.type);
        if (x->meta.version > 1 || x->meta.deleted) {
            buf_putc(b, '/');
            buf_json_escape(b, x->meta.id, strlen(x->meta.id));
        }
        char lm[32];
        fhir_instant_format(x->meta.updated_usec, lm);
        buf_printf(b, "\"},\"response\":{\"status\":\"%s\",\"etag\":\"W/\\\"%lld\\\"\",\"lastModified\":\"%s\"}}",
                   x->meta.deleted ? "204" : x->meta.version == 1 ? "201" : "200", (long long)x->meta.version, lm);
    }
    buf_puts(b, "]}");
    if (it.n == 0) {
        b->len -= strlen(",\"entry\":[]}");
        buf_puts(b, "}");
    }
    store_items_free(&it);
out:
    arena_free(&a);
}

static void h_everything(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    store_items it = {0};
    err e;
    acc_scope sc;
    const store_scope *scope = NULL;
    int64_t pkey = 0;
    int glass = 0;
    if (ctx->guarded) {
        store_meta m = {0};
        err re;
        status g = guard_role(rq->who, "Patient", ACC_READ | ACC_EXPORT, &e);
        if (g != ST_OK && rq->who->role == ROLE_PATIENT) g = ST_OK; /* their own record, checked next */
        if (g == ST_OK && store_read(ctx->store, "Patient", v->id, 0, NULL, &m, &re) == ST_OK) {
            pkey = m.pkey;
            g = guard_record(ctx->store, rq->who, &m, &glass, &e);
        }
        if (g == ST_OK) g = acc_scope_for(ctx->store, rq->who, &sc, &e);
        if (g != ST_OK) {
            deny(ctx, rq, rs, &e, "export", "Patient", v->id, pkey);
            return;
        }
        scope = &sc.sc;
    }
    status rc = store_everything_scoped(ctx->store, scope, v->id, &it, &e);
    if (rc == ST_OK && ctx->guarded) {
        /* only the kinds of record the role may read (a pharmacist's export
         * has no social care, a patient's no risk scores) */
        size_t keep = 0;
        for (size_t i = 0; i < it.n; i++) {
            if (acc_allow(rq->who->role, acc_area_of_type(it.v[i].meta.type), ACC_READ)) it.v[keep++] = it.v[i];
            else free(it.v[i].body);
        }
        it.n = keep;
    }
    if (rc != ST_OK) rest_error(rs, &e);
    else {
        it.total = (int64_t)it.n;
        render_searchset(rs, rq, NULL, "Patient", &it);
        if (glass) snprintf(rs->access, sizeof rs->access, "break-glass");
    }
    audit_req(ctx, rq, "export", "Patient", v->id, pkey, v->id, rs->status, glass ? "ETREAT" : NULL,
              rc == ST_OK ? NULL : e.msg, 0);
    store_items_free(&it);
}

/* ---- access operations ------------------------------------------------ */

static void json_reply(rest_response *rs, int status, json_t *j) {
    char *text = json_dumps(j, JSON_COMPACT);
    rs->status = status;
    rs->content_type = FHIR_JSON;
    buf_reset(&rs->body);
    if (text) buf_puts(&rs->body, text);
    free(text);
}

/* A string argument from a JSON body: {"name": "..."} or a Parameters
 * resource's valueString; NULL if absent. */
static const char *body_arg(json_t *body, const char *name) {
    const char *v = json_string_value(json_object_get(body, name));
    if (v) return v;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(body, "parameter"), i, p) {
        const char *n = json_string_value(json_object_get(p, "name"));
        if (n && strcmp(n, name) == 0) {
            json_t *x = json_object_get(p, "valueString");
            if (!x) x = json_object_get(p, "valueInteger");
            if (json_is_integer(x)) return NULL;
            return json_string_value(x);
        }
    }
    return NULL;
}

/* POST Patient/{id}/$break-glass {"reason": "...", "minutes": 60}: a
 * clinician with no relationship opens the record in an emergency. */
static void h_break_glass(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    status rc = ST_OK;
    json_t *body = NULL;
    if (!ctx->guarded) {
        fail(rs, ST_UNSUPPORTED, "not-supported", NULL, "break-glass needs access control");
        return;
    }
    if (rq->who->role == ROLE_PATIENT || !acc_allow(rq->who->role, AREA_CLINICAL, ACC_READ)) {
        err_set(&e, ST_FORBIDDEN, "forbidden", NULL, "the role %s may not break the glass: it does not treat patients",
                acc_role_name(rq->who->role));
        deny(ctx, rq, rs, &e, "break-glass", "Patient", v->id, 0);
        return;
    }
    body = rq->body_len ? json_loadb(rq->body, rq->body_len, 0, NULL) : NULL;
    const char *reason = body_arg(body, "reason");
    json_int_t minutes = json_integer_value(json_object_get(body, "minutes"));
    int64_t expires = 0, key = 0;
    rc = acc_glass_open(ctx->store, rq->who, v->id, reason, (int)minutes, &expires, &key, &e);
    if (rc != ST_OK) {
        deny(ctx, rq, rs, &e, "break-glass", "Patient", v->id, 0);
        goto out;
    }
    char until[40];
    fhir_instant_format(expires, until);
    int64_t gpkey = 0; /* in the patient's own log, and a privacy officer's search by patient */
    err ke;
    if (store_patient_key_of(ctx->store, v->id, &gpkey, &ke) != ST_OK) gpkey = 0;
    rc = audit_req(ctx, rq, "break-glass", "Patient", v->id, gpkey, v->id, 200, "ETREAT", reason, 1);
    json_t *r = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}, {s:s, s:I}]}", "resourceType", "Parameters", "parameter",
                          "name", "expires", "valueInstant", until, "name", "reason", "valueString", reason, "name",
                          "grant", "valueInteger", (json_int_t)key);
    json_reply(rs, 200, r);
    json_decref(r);
    snprintf(rs->access, sizeof rs->access, "break-glass; until=%s", until);
out:
    json_decref(body);
}

/* GET $break-glass[?reviewed=false]: the grants, for privacy officers. */
static void h_glass_list(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    if (!ctx->guarded || rq->who->role != ROLE_PRIVACY_OFFICER) {
        err_set(&e, ST_FORBIDDEN, "forbidden", NULL, "break-glass review is for privacy officers");
        deny(ctx, rq, rs, &e, "search", "AuditEvent", NULL, 0);
        return;
    }
    char reviewed[8] = "";
    rest_query_param(rq->query, "reviewed", reviewed, sizeof reviewed);
    json_t *list = json_array();
    if (acc_glass_list(ctx->store, strcmp(reviewed, "false") == 0, list, &e) != ST_OK) rest_error(rs, &e);
    else json_reply(rs, 200, list);
    json_decref(list);
    audit_req(ctx, rq, "search", "AuditEvent", NULL, 0, NULL, rs->status, "HOPERAT", "break-glass grants", 0);
}

/* POST $break-glass/{id}/$review {"note": "..."} */
static void h_glass_review(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    if (!ctx->guarded || rq->who->role != ROLE_PRIVACY_OFFICER) {
        err_set(&e, ST_FORBIDDEN, "forbidden", NULL, "break-glass review is for privacy officers");
        deny(ctx, rq, rs, &e, "operation", "AuditEvent", v->id, 0);
        return;
    }
    json_t *body = rq->body_len ? json_loadb(rq->body, rq->body_len, 0, NULL) : NULL;
    char *end;
    long long key = strtoll(v->id, &end, 10);
    status rc = *end ? err_set(&e, ST_INVALID, "value", NULL, "'%s' is not a grant number", v->id)
                     : acc_glass_review(ctx->store, key, rq->who->user, body_arg(body, "note"), &e);
    if (rc != ST_OK) rest_error(rs, &e);
    else {
        json_t *r = json_pack("{s:I, s:b}", "grant", (json_int_t)key, "reviewed", 1);
        json_reply(rs, 200, r);
        json_decref(r);
    }
    audit_req(ctx, rq, "operation", "AuditEvent", v->id, 0, NULL, rs->status, "HOPERAT", "break-glass review", 1);
    json_decref(body);
}

/* GET $access-log?patient=&user=&action=&outcome=&_count=&_offset= (AuditEvents) — the
 * access log: a privacy officer sees all of it; a patient sees who
 * accessed their own record (every patient key of their person). */
static void h_audit_search(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    status rc = ST_OK;
    int64_t pkeys[64];
    int npk = 0;
    audit_filter f = {0};
    char patient[72] = "", user[64] = "", action[32] = "", outcome[4] = "", count[16] = "", offset[16] = "";
    rest_query_param(rq->query, "patient", patient, sizeof patient);
    if (!rest_query_param(rq->query, "user", user, sizeof user))
        rest_query_param(rq->query, "agent", user, sizeof user);
    rest_query_param(rq->query, "action", action, sizeof action);
    rest_query_param(rq->query, "outcome", outcome, sizeof outcome);
    rest_query_param(rq->query, "_count", count, sizeof count);
    rest_query_param(rq->query, "_offset", offset, sizeof offset);
    if (strncmp(patient, "Patient/", 8) == 0) memmove(patient, patient + 8, strlen(patient + 8) + 1);
    if (!ctx->guarded) {
        fail(rs, ST_UNSUPPORTED, "not-supported", NULL, "the access log needs access control");
        return;
    }
    int officer = rq->who->role == ROLE_PRIVACY_OFFICER; /* the log is theirs, not every AuditEvent reader's */
    if (rq->who->role == ROLE_PATIENT) {
        if (patient[0] && strcmp(patient, rq->who->patient) != 0)
            rc = err_set(&e, ST_FORBIDDEN, "forbidden", "patient", "a patient may see only who accessed their own record");
        snprintf(patient, sizeof patient, "%s", rq->who->patient);
    } else if (!officer) {
        rc = err_set(&e, ST_FORBIDDEN, "forbidden", NULL, "the access log is for privacy officers and for patients");
    }
    if (rc != ST_OK) {
        deny(ctx, rq, rs, &e, "search", "AuditEvent", NULL, 0);
        return;
    }
    if (patient[0]) {
        int64_t pk = 0;
        rc = store_patient_key_of(ctx->store, patient, &pk, &e);
        if (rc == ST_OK && pk) rc = store_person_pkeys(ctx->store, pk, pkeys, 64, &npk, &e);
        f.pkeys = pkeys;
        f.npkeys = npk;
    }
    f.user = user[0] ? user : NULL;
    f.action = action[0] ? action : NULL;
    f.outcome = outcome[0] ? outcome : NULL;
    f.limit = count[0] ? atoi(count) : 50;
    f.offset = offset[0] ? atoi(offset) : 0;
    json_t *entries = json_array();
    int64_t total = 0;
    if (rc == ST_OK) audit_flush(ctx->audit); /* everything logged before this request is in the answer */
    if (rc == ST_OK) rc = audit_query(ctx->store, &f, entries, &total, &e);
    if (rc != ST_OK) rest_error(rs, &e);
    else {
        json_t *b = json_pack("{s:s, s:s, s:I, s:[]}", "resourceType", "Bundle", "type", "searchset", "total",
                              (json_int_t)total, "entry");
        json_t *arr = json_object_get(b, "entry");
        size_t i;
        json_t *x;
        json_array_foreach(entries, i, x) {
            json_t *en = json_pack("{s:O, s:{s:s}}", "resource", x, "search", "mode", "match");
            json_array_append_new(arr, en);
        }
        json_reply(rs, 200, b);
        json_decref(b);
    }
    json_decref(entries);
    audit_req(ctx, rq, "search", "AuditEvent", NULL, npk ? pkeys[0] : 0, patient[0] ? patient : NULL, rs->status,
              rq->who->role == ROLE_PATIENT ? "PATRQT" : "HOPERAT", "access log", 0);
}

static void h_metadata(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    rs->status = 200;
    rs->content_type = FHIR_JSON;
    buf_puts(&rs->body, rest_capability(ctx, rq->base_url));
}

/* ---- Bundles in: batch and transaction -------------------------------- */

typedef struct entry_job {
    int index;
    const char *method;
    char type[64];
    char id[72];
    const char *query;    /* after '?' in request.url, or NULL */
    json_t *resource;     /* borrowed from the bundle */
    const char *if_match, *if_none_exist;
    const char *full_url; /* urn:uuid: fullUrl of a transaction entry */
    int validated;        /* resource validated with its Bundle */
    int matched;          /* conditional create matched an existing resource */
    int guarded;          /* its access check passed before the write lock */
    store_prep *prep;     /* a create prepared before the transaction */
    /* results */
    int status;
    write_result wr;
    buf out; /* GET result body */
    err e;
    /* the access-log entry, written once the entry's transaction has
     * ended (never from inside it: the log's writer needs the store) */
    const char *audit_action; /* NULL: nothing to log */
    int audit_status;         /* the access decision's status; the outcome is settled at the end */
    int64_t audit_pkey;
    char audit_pid[72];
    char audit_reason[160];
    int64_t *audit_pkeys;     /* search: the patients whose data it returned */
    int audit_npkeys;
} entry_job;

static void rewrite_refs(json_t *j, json_t *map) {
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (strcmp(k, "reference") == 0 && json_is_string(v)) {
                json_t *to = json_object_get(map, json_string_value(v));
                if (to) json_string_set(v, json_string_value(to));
            } else {
                rewrite_refs(v, map);
            }
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) rewrite_refs(v, map);
    }
}

/* Split request.url ("Patient/1", "Patient?x=y", "[base]/Patient/1") */
static status parse_entry_url(const rest_request *rq, const char *url, entry_job *job, err *e, const char *where) {
    size_t bl = strlen(rq->base_url);
    if (strncmp(url, rq->base_url, bl) == 0 && url[bl] == '/') url += bl + 1;
    while (*url == '/') url++;
    const char *q = strchr(url, '?');
    size_t pathlen = q ? (size_t)(q - url) : strlen(url);
    job->query = q ? q + 1 : NULL;
    const char *slash = memchr(url, '/', pathlen);
    size_t tl = slash ? (size_t)(slash - url) : pathlen;
    if (tl == 0 || tl >= sizeof job->type) return err_set(e, ST_INVALID, "invalid", where, "bad request.url '%s'", url);
    memcpy(job->type, url, tl);
    job->type[tl] = 0;
    if (!fhir_resource_type(job->type))
        return err_set(e, ST_INVALID, "not-supported", where, "unknown resource type '%s'", job->type);
    job->id[0] = 0;
    if (slash) {
        size_t il = pathlen - tl - 1;
        if (il == 0 || il >= sizeof job->id || memchr(slash + 1, '/', il))
            return err_set(e, ST_INVALID, "invalid", where, "request.url '%s' is not Type/id", url);
        memcpy(job->id, slash + 1, il);
        job->id[il] = 0;
        if (!fhir_id_valid(job->id)) return err_set(e, ST_INVALID, "value", where, "'%s' is not a valid id", job->id);
    }
    return ST_OK;
}

/* The access check of one entry, as the same request on its own would be
 * checked; it records what the access log will say of the entry. `tx`
 * NULL: before the write lock, for a create only (its id is new, so there
 * is no current version to check). */
static status guard_entry(rest_ctx *ctx, const rest_request *rq, store_txn *tx, entry_job *job, err *e) {
    char where[48];
    snprintf(where, sizeof where, "Bundle.entry[%d]", job->index);
    status rc = ST_OK;
    int64_t pkey = 0;
    char pid[72] = "";
    const char *m = job->method;
    int is_write = strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0;
    const char *action = strcmp(m, "POST") == 0 ? "create" : strcmp(m, "PUT") == 0 ? "update"
                         : strcmp(m, "DELETE") == 0 ? "delete" : job->id[0] ? "read" : "search";
    if (strcmp(m, "DELETE") == 0) rc = guard_role(rq->who, job->type, ACC_DELETE, e);
    else if (!is_write) rc = guard_role(rq->who, job->type, ACC_READ, e);
    if (rc == ST_OK && job->id[0] && tx) {
        store_meta cur;
        err re;
        status r = store_txn_read(tx, job->type, job->id, NULL, &cur, &re);
        if (r == ST_OK || r == ST_GONE) {
            pkey = cur.pkey;
            rc = guard_record(ctx->store, rq->who, &cur, NULL, e);
        }
    }
    if (rc == ST_OK && is_write && job->resource)
        rc = guard_write(ctx->store, rq->who, job->resource, job->type, &pkey, pid, e);
    job->audit_action = action;
    job->audit_status = rc == ST_OK ? 200 : status_http(rc);
    job->audit_pkey = pkey;
    snprintf(job->audit_pid, sizeof job->audit_pid, "%s", pid);
    job->audit_reason[0] = 0;
    if (rc != ST_OK) snprintf(job->audit_reason, sizeof job->audit_reason, "%.159s", e->msg);
    if (rc != ST_OK && !e->where[0]) snprintf(e->where, sizeof e->where, "%s", where);
    job->guarded = rc == ST_OK;
    return rc;
}

static status run_entry(rest_ctx *ctx, const rest_request *rq, store_txn *tx, entry_job *job, int want_body,
                        err *e) {
    char where[48];
    snprintf(where, sizeof where, "Bundle.entry[%d]", job->index);
    status rc = ST_OK;
    if (ctx->guarded && !job->guarded) {
        rc = guard_entry(ctx, rq, tx, job, e);
        if (rc != ST_OK) return rc;
    }
    if (strcmp(job->method, "POST") == 0) {
        if (!job->resource) return err_set(e, ST_INVALID, "required", where, "POST entry without a resource");
        const char *cond = job->full_url || job->id[0] ? NULL : job->if_none_exist;
        acc_scope sc;
        const store_scope *scope = NULL;
        if (cond && *cond && ctx->guarded) {
            rc = acc_scope_for(ctx->store, rq->who, &sc, e);
            if (rc != ST_OK) return rc;
            scope = &sc.sc;
        }
        rc = do_create(tx, job->resource, job->type, cond, scope, job->id[0] ? job->id : NULL, job->validated,
                       want_body, job->prep, &job->wr, e);
        job->status = job->wr.created ? 201 : 200;
    } else if (strcmp(job->method, "PUT") == 0) {
        if (!job->resource) return err_set(e, ST_INVALID, "required", where, "PUT entry without a resource");
        if (!job->id[0]) return err_set(e, ST_INVALID, "not-supported", where, "conditional update is not supported");
        int64_t im = job->if_match ? parse_etag(job->if_match) : 0;
        if (im < 0) return err_set(e, ST_INVALID, "invalid", where, "bad ifMatch");
        rc = do_update(tx, job->resource, job->type, job->id, im, job->validated, want_body, &job->wr, e);
        job->status = job->wr.created ? 201 : 200;
    } else if (strcmp(job->method, "DELETE") == 0) {
        if (!job->id[0]) return err_set(e, ST_INVALID, "not-supported", where, "conditional delete is not supported");
        rc = store_delete(tx, job->type, job->id, &job->wr.meta, e);
        job->status = 204;
    } else if (strcmp(job->method, "GET") == 0) {
        if (job->id[0]) {
            rc = store_txn_read(tx, job->type, job->id, &job->out, &job->wr.meta, e);
        } else {
            arena a = {0};
            search_param_kv *kv = NULL;
            int n = job->query ? search_split_query(&a, job->query, strlen(job->query), &kv) : 0;
            search_query q;
            store_items it = {0};
            acc_scope sc;
            rc = search_parse(&a, job->type, kv, n, 0, &q, e);
            if (rc == ST_OK && ctx->guarded) rc = guard_search(ctx, rq, &q, job->type, &sc, e);
            if (rc == ST_OK) rc = store_txn_search(tx, &q, &it, e);
            for (size_t k = 0; ctx->guarded && k < it.n; k++) {
                int64_t pk = it.v[k].meta.pkey;
                int dup = !pk;
                for (int x = 0; x < job->audit_npkeys && !dup; x++) dup = job->audit_pkeys[x] == pk;
                if (dup) continue;
                int64_t *np = realloc(job->audit_pkeys, (size_t)(job->audit_npkeys + 1) * sizeof *np);
                if (!np) break;
                job->audit_pkeys = np;
                job->audit_pkeys[job->audit_npkeys++] = pk;
            }
            if (rc == ST_OK) {
                rest_response tmp = {0};
                render_searchset(&tmp, rq, &q, job->type, &it);
                job->out = tmp.body;
            }
            store_items_free(&it);
            arena_free(&a);
        }
        job->status = 200;
    } else {
        return err_set(e, ST_INVALID, "not-supported", where, "method %s is not supported in a Bundle", job->method);
    }
    (void)ctx;
    if (rc != ST_OK) {
        /* locate the fault inside the Bundle: "Observation.foo" becomes
         * "Bundle.entry[1].resource.foo" */
        size_t tl = strlen(job->type);
        if (e->where[0] == 0) {
            snprintf(e->where, sizeof e->where, "%s", where);
        } else if (strncmp(e->where, job->type, tl) == 0 && (e->where[tl] == '.' || e->where[tl] == 0)) {
            char inner[sizeof e->where];
            snprintf(inner, sizeof inner, "%s", e->where + tl);
            int n = snprintf(e->where, sizeof e->where, "%s.resource", where);
            if (n > 0 && (size_t)n < sizeof e->where) snprintf(e->where + n, sizeof e->where - (size_t)n, "%.*s", (int)(sizeof e->where - (size_t)n - 1), inner);
        }
    }
    return rc;
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "200 OK";
    case 201: return "201 Created";
    case 204: return "204 No Content";
    default: return NULL;
    }
}

static void entry_response(buf *b, const rest_request *rq, entry_job *job, int with_resource) {
    buf_puts(b, "{");
    if (job->status >= 400) {
        buf_printf(b, "\"response\":{\"status\":\"%d\",\"outcome\":", job->status);
        outcome_json(b, "error", job->e.issue, job->e.msg, job->e.where);
        buf_puts(b, "}}");
        return;
    }
    const store_meta *m = &job->wr.meta;
    if (job->out.len) {
        buf_puts(b, "\"resource\":");
        buf_append(b, job->out.p, job->out.len);
        buf_putc(b, ',');
    } else if (with_resource && job->wr.body) {
        entry_full_url(b, rq->base_url, m);
        buf_puts(b, ",\"resource\":");
        buf_puts(b, job->wr.body);
        buf_putc(b, ',');
    }
    buf_printf(b, "\"response\":{\"status\":\"%s\"", reason(job->status) ? reason(job->status) : "200 OK");
    if (m->version > 0 && strcmp(job->method, "GET") != 0) {
        char lm[32];
        fhir_instant_format(m->updated_usec, lm);
        if (strcmp(job->method, "DELETE") != 0) {
            buf_puts(b, ",\"location\":\"");
            buf_json_escape(b, m->type, strlen(m->type));
            buf_putc(b, '/');
            buf_json_escape(b, m->id, strlen(m->id));
            buf_printf(b, "/_history/%lld\"", (long long)m->version);
        }
        buf_printf(b, ",\"etag\":\"W/\\\"%lld\\\"\",\"lastModified\":\"%s\"", (long long)m->version, lm);
    }
    buf_puts(b, "}}");
}

static int method_order(const char *m) {
    if (strcmp(m, "DELETE") == 0) return 0;
    if (strcmp(m, "POST") == 0) return 1;
    if (strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0) return 2;
    return 3;
}

static void h_bundle(rest_ctx *ctx, const rest_request *rq, rest_response *rs, const route_vars *v) {
    err e;
    json_t *bundle = parse_body(rq, rs);
    if (!bundle) return;
    entry_job *jobs = NULL;
    json_t *map = json_object();
    json_t *seen = json_object(); /* fullUrls */
    size_t n = 0;
    status rc = check_type(bundle, "Bundle", &e);
    const char *btype = json_string_value(json_object_get(bundle, "type"));
    int transaction = btype && strcmp(btype, "transaction") == 0;
    json_t *entries = json_object_get(bundle, "entry");
    n = json_array_size(entries);
    if (rc == ST_OK && transaction) {
        /* a transaction stands or falls whole: validate every entry now */
        rc = fhir_validate(bundle, "Bundle", &e);
    } else if (rc == ST_OK) {
        /* a batch: validate the Bundle itself here, each entry's resource
         * on its own when the entry runs, so one bad entry fails alone */
        json_t *held = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *en = json_array_get(entries, i);
            json_t *r = json_object_get(en, "resource");
            json_array_append(held, r ? r : json_null());
            if (r) json_object_del(en, "resource");
        }
        rc = fhir_validate(bundle, "Bundle", &e);
        for (size_t i = 0; i < n; i++) {
            json_t *r = json_array_get(held, i);
            if (!json_is_null(r)) json_object_set(json_array_get(entries, i), "resource", r);
        }
        json_decref(held);
    }
    if (rc == ST_OK && !transaction && !(btype && strcmp(btype, "batch") == 0))
        rc = err_set(&e, ST_INVALID, "invalid", "Bundle.type", "only batch and transaction Bundles can be submitted");
    jobs = calloc(n + 1, sizeof *jobs);
    for (size_t i = 0; rc == ST_OK && i < n; i++) {
        json_t *en = json_array_get(entries, i);
        entry_job *job = &jobs[i];
        job->index = (int)i;
        job->validated = transaction;
        char where[64];
        snprintf(where, sizeof where, "Bundle.entry[%zu].request", i);
        json_t *req = json_object_get(en, "request");
        job->method = json_string_value(json_object_get(req, "method"));
        const char *url = json_string_value(json_object_get(req, "url"));
        status erc = ST_OK;
        if (!job->method || !url)
            erc = err_set(&job->e, ST_INVALID, "required", where, "each entry needs request.method and request.url");
        else
            erc = parse_entry_url(rq, url, job, &job->e, where);
        if (erc != ST_OK) {
            if (transaction) {
                e = job->e;
                rc = erc;
                break;
            }
            job->status = status_http(erc); /* a batch entry fails alone */
            if (!job->method) job->method = "GET";
            continue;
        }
        job->if_match = json_string_value(json_object_get(req, "ifMatch"));
        job->if_none_exist = json_string_value(json_object_get(req, "ifNoneExist"));
        job->resource = json_object_get(en, "resource");
        const char *full = json_string_value(json_object_get(en, "fullUrl"));
        if (full) {
            /* bdl-7: fullUrl is unique within a Bundle */
            if (json_object_get(seen, full)) {
                rc = err_set(&e, ST_INVALID, "invalid", where, "fullUrl %s appears more than once in the Bundle",
                             full);
                break;
            }
            json_object_set_new(seen, full, json_true());
        }
        if (transaction && full && strncmp(full, "urn:uuid:", 9) == 0) {
            job->full_url = full;
            if (strcmp(job->method, "POST") == 0 && !job->if_none_exist) {
                char id[37];
                store_new_id(id);
                snprintf(job->id, sizeof job->id, "%s", id);
            }
            if (job->id[0]) {
                char ref[160];
                snprintf(ref, sizeof ref, "%s/%s", job->type, job->id);
                json_object_set_new(map, full, json_string(ref));
            }
        }
    }
    if (rc != ST_OK) {
        rest_error(rs, &e);
        goto out;
    }
    int with_resource = prefer_has(rq->prefer, "return=representation");

    /* Creates whose references are all known now (no conditional creates
     * to resolve first) are prepared before the write lock. */
    int conditional = 0;
    for (size_t i = 0; i < n; i++)
        if (jobs[i].if_none_exist && jobs[i].status < 400 && strcmp(jobs[i].method, "POST") == 0) conditional = 1;
    if (transaction && !conditional) {
        if (json_object_size(map)) rewrite_refs(entries, map);
        json_object_clear(map);
        /* Guarded creates are checked (and stamped with the writer's
         * organisation) here too, before the lock, as a single create is.
         * Inside the transaction the check would not see the Bundle's own
         * uncommitted writes on SQLite either (it reads on the thread's own
         * connection), so only timing changes — except that a Bundle which
         * deletes, or records or withdraws a consent, could narrow access
         * for its later entries: such Bundles keep every check in the
         * transaction. A create refused here is checked again there (an
         * earlier entry may establish the relationship on PostgreSQL). */
        int pre_guard = ctx->guarded;
        for (size_t i = 0; i < n; i++)
            if (strcmp(jobs[i].method, "DELETE") == 0 || strcmp(jobs[i].type, "Consent") == 0) pre_guard = 0;
        for (size_t i = 0; rc == ST_OK && i < n; i++) {
            entry_job *job = &jobs[i];
            if (strcmp(job->method, "POST") != 0 || !job->resource) continue;
            if (ctx->guarded) {
                err ge;
                if (!pre_guard || guard_entry(ctx, rq, NULL, job, &ge) != ST_OK) {
                    job->audit_action = NULL; /* decided in the transaction */
                    continue;
                }
            }
            rc = prepare_create(job->resource, job->type, job->id[0] ? job->id : NULL, 1, &job->prep, &e);
            if (rc != ST_OK) {
                char where[48];
                snprintf(where, sizeof where, "Bundle.entry[%zu].resource", i);
                if (!e.where[0]) snprintf(e.where, sizeof e.where, "%s", where);
                rest_error(rs, &e);
                goto out;
            }
        }
    }

    if (transaction) {
        store_txn *tx = NULL;
        rc = store_begin(ctx->store, &tx, &e);
        if (rc == ST_OK) store_txn_set_user_claim(tx, user_claim(ctx, rq));
        /* conditional creates first: a reference to the entry's fullUrl must
         * resolve to the resource that matched, when one did */
        for (size_t i = 0; rc == ST_OK && i < n; i++) {
            entry_job *job = &jobs[i];
            if (strcmp(job->method, "POST") != 0 || !job->if_none_exist) continue;
            store_items it = {0};
            acc_scope sc;
            const store_scope *scope = NULL;
            if (ctx->guarded) {
                rc = acc_scope_for(ctx->store, rq->who, &sc, &e);
                scope = &sc.sc;
            }
            if (rc == ST_OK) rc = match_criteria(tx, job->type, job->if_none_exist, scope, &it, &e);
            if (rc == ST_OK && it.n > 1)
                rc = err_set(&e, ST_PRECONDITION, "multiple-matches", NULL,
                             "Bundle.entry[%zu]: ifNoneExist '%s' matches more than one %s", i, job->if_none_exist,
                             job->type);
            if (rc == ST_OK && it.n == 1) {
                job->matched = 1;
                job->status = 200;
                job->wr.meta = it.v[0].meta;
                job->wr.body = it.v[0].body;
                it.v[0].body = NULL;
                snprintf(job->id, sizeof job->id, "%s", it.v[0].meta.id);
            } else if (rc == ST_OK) {
                char id[37];
                store_new_id(id);
                snprintf(job->id, sizeof job->id, "%s", id);
            }
            store_items_free(&it);
            if (rc == ST_OK && job->full_url) {
                char ref[160];
                snprintf(ref, sizeof ref, "%s/%s", job->type, job->id);
                json_object_set_new(map, job->full_url, json_string(ref));
            }
        }
        if (json_object_size(map)) rewrite_refs(entries, map);
        for (int pass = 0; rc == ST_OK && pass < 4; pass++) {
            for (size_t i = 0; rc == ST_OK && i < n; i++) {
                if (method_order(jobs[i].method) != pass || jobs[i].matched) continue;
                rc = run_entry(ctx, rq, tx, &jobs[i], with_resource, &e);
            }
        }
        if (rc != ST_OK) {
            if (tx) store_rollback(tx);
            rest_error(rs, &e);
            goto out;
        }
        rc = store_commit(tx, &e);
        if (rc != ST_OK) {
            rest_error(rs, &e);
            goto out;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            store_txn *tx = NULL;
            entry_job *job = &jobs[i];
            if (job->status >= 400) continue; /* its request was already refused */
            rc = ST_OK;
            if (strcmp(job->method, "POST") == 0 && job->resource && !job->if_none_exist && !ctx->guarded)
                rc = prepare_create(job->resource, job->type, NULL, 0, &job->prep, &job->e);
            if (rc == ST_OK) rc = store_begin(ctx->store, &tx, &job->e);
            if (rc == ST_OK) store_txn_set_user_claim(tx, user_claim(ctx, rq));
            if (rc == ST_OK) rc = run_entry(ctx, rq, tx, job, with_resource, &job->e);
            if (rc == ST_OK) rc = store_commit(tx, &job->e);
            else if (tx) store_rollback(tx);
            if (rc != ST_OK) job->status = status_http(rc);
        }
    }
    buf *b = &rs->body;
    buf_reset(b);
    rs->status = 200;
    rs->content_type = FHIR_JSON;
    bundle_open(b, transaction ? "transaction-response" : "batch-response");
    if (n) {
        buf_puts(b, ",\"entry\":[");
        for (size_t i = 0; i < n; i++) {
            if (i) buf_putc(b, ',');
            entry_response(b, rq, &jobs[i], with_resource);
        }
        buf_puts(b, "]");
    }
    buf_puts(b, "}");
out:;
    /* the access log, now that every transaction has ended: an entry that
     * passed the access check takes the outcome of its transaction (the
     * whole Bundle's for a transaction); the last waits until all are durable */
    size_t last_logged = 0;
    for (size_t i = 0; i < n && jobs; i++)
        if (jobs[i].audit_action) last_logged = i;
    for (size_t i = 0; i < n && jobs && ctx->guarded; i++) {
        entry_job *job = &jobs[i];
        if (!job->audit_action) continue;
        int st = job->audit_status >= 400 ? job->audit_status
                 : transaction           ? rs->status
                 : job->status ? job->status : 200;
        const char *why = job->audit_reason[0] ? job->audit_reason : st >= 400 ? "not stored: the Bundle failed" : NULL;
        int last = i == last_logged;
        const char *rid = job->id[0] ? job->id : st < 400 && job->wr.meta.id[0] ? job->wr.meta.id : NULL;
        if (strcmp(job->audit_action, "search") == 0 && job->audit_npkeys) {
            for (int k = 0; k < job->audit_npkeys; k++)
                audit_req(ctx, rq, "search", job->type, NULL, job->audit_pkeys[k], NULL, st, NULL, why,
                          last && k + 1 == job->audit_npkeys);
        } else {
            audit_req(ctx, rq, job->audit_action, job->type, rid, job->audit_pkey,
                      job->audit_pid[0] ? job->audit_pid : NULL, st, NULL, why, last);
        }
    }
    for (size_t i = 0; i < n && jobs; i++) {
        free(jobs[i].audit_pkeys);
        store_prep_free(jobs[i].prep);
        free(jobs[i].wr.body);
        buf_free(&jobs[i].out);
    }
    free(jobs);
    json_decref(map);
    json_decref(seen);
    json_decref(bundle);
    (void)v;
}

/* The value of query parameter `name`, percent-decoded ("+" is a space). */
int rest_query_param(const char *query, const char *name, char *out, size_t n) {
    if (!query || n == 0) return 0;
    size_t nl = strlen(name);
    for (const char *p = query; *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t k = 0;
            for (const char *q = p + nl + 1; q < p + len && k + 1 < n; q++) {
                if (*q == '%' && q + 2 < p + len && q[1] && q[2]) {
                    char hx[3] = {q[1], q[2], 0};
                    out[k++] = (char)strtol(hx, NULL, 16);
                    q += 2;
                } else {
                    out[k++] = *q == '+' ? ' ' : *q;
                }
            }
            out[k] = 0;
            return 1;
        }
        if (!amp) break;
        p = amp + 1;
    }
    return 0;
}

/* ---- routing --------------------------------------------------------- */

typedef void (*handler_fn)(rest_ctx *, const rest_request *, rest_response *, const route_vars *);

/* Segment patterns: "{type}" a resource type, "{id}" a logical id,
 * "{vid}" a version id, anything else literal. */
static const struct route {
    const char *method;
    const char *seg[4];
    handler_fn fn;
} routes[] = {
    {"POST", {NULL}, h_bundle},
    {"GET", {"metadata"}, h_metadata},
    {"GET", {"$access-log"}, h_audit_search},
    {"GET", {"$break-glass"}, h_glass_list},
    {"POST", {"$break-glass", "{id}", "$review"}, h_glass_review},
    {"POST", {"Patient", "{id}", "$break-glass"}, h_break_glass},
    {"GET", {"_history"}, h_history},
    {"GET", {"{type}"}, h_search},
    {"POST", {"{type}"}, h_create},
    {"POST", {"{type}", "_search"}, h_search_post},
    {"GET", {"{type}", "_history"}, h_history},
    {"GET", {"Patient", "{id}", "$everything"}, h_everything},
    {"POST", {"Patient", "{id}", "$everything"}, h_everything},
    {"GET", {"{type}", "{id}"}, h_read},
    {"PUT", {"{type}", "{id}"}, h_update},
    {"DELETE", {"{type}", "{id}"}, h_delete},
    {"GET", {"{type}", "{id}", "_history"}, h_history},
    {"GET", {"{type}", "{id}", "_history", "{vid}"}, h_read},
};

static void route(rest_ctx *ctx, const rest_request *rq, rest_response *rs) {
    char path[1024];
    char *seg[5];
    int nseg = 0;
    snprintf(path, sizeof path, "%s", rq->path ? rq->path : "");
    for (char *p = path; *p && nseg < 5;) {
        while (*p == '/') *p++ = 0;
        if (!*p) break;
        seg[nseg++] = p;
        while (*p && *p != '/') p++;
    }
    if (ctx->guarded && !rq->who && !(strcmp(rq->method, "GET") == 0 && nseg == 1 && strcmp(seg[0], "metadata") == 0)) {
        err e;
        err_set(&e, ST_UNAUTHENTICATED, "login", NULL,
                "sign in first: send Authorization: Bearer <token> (concord token create), or a session cookie "
                "from POST /auth/login");
        deny(ctx, rq, rs, &e, "operation", nseg ? seg[0] : NULL, NULL, 0);
        return;
    }
    int path_matched = 0;
    for (size_t x = 0; x < ctx->n_ext; x++) {
        for (size_t r = 0; r < ctx->ext[x].n; r++) {
            const rest_ext_route *rt = &ctx->ext[x].routes[r];
            int n = 0;
            while (n < 4 && rt->seg[n]) n++;
            if (n != nseg) continue;
            const char *id = NULL;
            int ok = 1;
            for (int i = 0; i < n && ok; i++) {
                if (strcmp(rt->seg[i], "{id}") == 0) id = seg[i];
                else if (strcmp(rt->seg[i], "{type}") == 0) ok = fhir_resource_type(seg[i]) != NULL;
                else ok = strcmp(rt->seg[i], seg[i]) == 0;
            }
            if (!ok) continue;
            path_matched = 1;
            if (strcmp(rt->method, rq->method) != 0) continue;
            if (ctx->guarded && (!rt->actions || !acc_allow(rq->who->role, (acc_area)rt->area, rt->actions))) {
                err e;
                err_set(&e, ST_FORBIDDEN, "forbidden", NULL, "the role %s may not use this operation (%s)",
                        acc_role_name(rq->who->role), acc_area_name((acc_area)rt->area));
                deny(ctx, rq, rs, &e, "operation", NULL, id, 0);
                return;
            }
            rt->fn(ctx->ext[x].user, rq, rs, id);
            if (!rs->content_type) rs->content_type = FHIR_JSON;
            /* one entry per patient whose data it returned, or one for the call */
            for (int k = 0; k < rs->ntouched; k++)
                audit_req(ctx, rq, "operation", NULL, id, rs->touched[k], NULL, rs->status, NULL, NULL, 0);
            if (!rs->ntouched)
                audit_req(ctx, rq, "operation", NULL, id, 0, NULL, rs->status, NULL, NULL,
                          strcmp(rq->method, "GET") != 0);
            return;
        }
    }
    for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
        const struct route *rt = &routes[r];
        int n = 0;
        while (n < 4 && rt->seg[n]) n++;
        if (n != nseg) continue;
        route_vars v = {0};
        int ok = 1;
        for (int i = 0; i < n && ok; i++) {
            const char *pat = rt->seg[i];
            if (strcmp(pat, "{type}") == 0) {
                ok = fhir_resource_type(seg[i]) != NULL;
                v.type = seg[i];
            } else if (strcmp(pat, "{id}") == 0) {
                ok = seg[i][0] != '_' && seg[i][0] != '$';
                v.id = seg[i];
            } else if (strcmp(pat, "{vid}") == 0) {
                v.vid = seg[i];
            } else {
                ok = strcmp(pat, seg[i]) == 0;
                if (ok && strcmp(pat, "Patient") == 0) v.type = "Patient";
            }
        }
        if (!ok) continue;
        path_matched = 1;
        if (strcmp(rt->method, rq->method) != 0) continue;
        if (v.id && !fhir_id_valid(v.id)) {
            fail(rs, ST_INVALID, "value", NULL, "'%s' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)", v.id);
            audit_req(ctx, rq, "operation", v.type, NULL, 0, NULL, rs->status, NULL, "not a valid FHIR id", 0);
            return;
        }
        rt->fn(ctx, rq, rs, &v);
        if (!rs->content_type) rs->content_type = FHIR_JSON;
        return;
    }
    /* what the router refuses by itself is in the access log too (a probe
     * for paths is an attempt at access) */
    if (path_matched) {
        fail(rs, ST_UNSUPPORTED, "not-supported", NULL, "%s is not supported on %s", rq->method,
             rq->path && *rq->path ? rq->path : "/");
        rs->status = 405;
        audit_req(ctx, rq, "operation", NULL, NULL, 0, NULL, rs->status, NULL, "method not supported here", 0);
        return;
    }
    if (nseg >= 1 && !fhir_resource_type(seg[0]) && seg[0][0] != '_' && seg[0][0] != '$' &&
        strcmp(seg[0], "metadata") != 0) {
        fail(rs, ST_NOT_FOUND, "not-supported", NULL, "'%s' is not a FHIR R4 resource type", seg[0]);
        audit_req(ctx, rq, "operation", NULL, NULL, 0, NULL, rs->status, NULL, "not a resource type", 0);
        return;
    }
    fail(rs, ST_NOT_FOUND, "not-found", NULL, "no FHIR interaction at %s %s", rq->method,
         rq->path && *rq->path ? rq->path : "/");
    audit_req(ctx, rq, "operation", NULL, NULL, 0, NULL, rs->status, NULL, "no such interaction", 0);
}

void rest_handle(rest_ctx *ctx, const rest_request *rq, rest_response *rs) {
    route(ctx, rq, rs);
    fhir_json_release(); /* decimals remembered while parsing this request */
}

/* ---- CapabilityStatement -------------------------------------------- */

static json_t *capability_build(rest_ctx *ctx, const char *base_url) {
    json_t *cs = json_object();
    char now[32];
    fhir_instant_format(fhir_now_usec(), now);
    json_object_set_new(cs, "resourceType", json_string("CapabilityStatement"));
    json_object_set_new(cs, "status", json_string("active"));
    json_object_set_new(cs, "date", json_string(now));
    json_object_set_new(cs, "kind", json_string("instance"));
    json_t *sw = json_object();
    json_object_set_new(sw, "name", json_string("concord"));
    json_object_set_new(sw, "version", json_string(ctx->version ? ctx->version : "dev"));
    json_object_set_new(cs, "software", sw);
    json_t *impl = json_object();
    json_object_set_new(impl, "description",
                        json_string("concord integrated care server: FHIR R4 record store"));
    json_object_set_new(impl, "url", json_string(base_url));
    json_object_set_new(cs, "implementation", impl);
    json_object_set_new(cs, "fhirVersion", json_string("4.0.1"));
    json_object_set_new(cs, "format", json_pack("[ss]", "application/fhir+json", "json"));
    json_t *rest = json_object();
    json_object_set_new(rest, "mode", json_string("server"));
    json_t *resources = json_array();
    static const char *const interactions[] = {"read",         "vread",          "update", "delete",
                                               "history-instance", "history-type", "create", "search-type"};
    for (size_t i = 0; i < fhir_n_types; i++) {
        const fhir_type *t = &fhir_types[i];
        if (t->kind != FHIR_KIND_RESOURCE || t->abstract_) continue;
        json_t *r = json_object();
        json_object_set_new(r, "type", json_string(t->name));
        json_t *ia = json_array();
        for (size_t k = 0; k < sizeof interactions / sizeof interactions[0]; k++) {
            json_t *o = json_object();
            json_object_set_new(o, "code", json_string(interactions[k]));
            json_array_append_new(ia, o);
        }
        json_object_set_new(r, "interaction", ia);
        json_object_set_new(r, "versioning", json_string("versioned-update"));
        json_object_set_new(r, "readHistory", json_true());
        json_object_set_new(r, "updateCreate", json_true());
        json_object_set_new(r, "conditionalCreate", json_true());
        json_object_set_new(r, "conditionalUpdate", json_false());
        json_object_set_new(r, "conditionalDelete", json_string("not-supported"));
        json_t *sps = json_array();
        json_t *incs = json_array();
        json_array_append_new(sps, json_pack("{ssss}", "name", "_id", "type", "token"));
        json_array_append_new(sps, json_pack("{ssss}", "name", "_lastUpdated", "type", "date"));
        const char *bases[] = {t->name, "DomainResource", "Resource"};
        for (int b = 0; b < 3; b++) {
            size_t cnt;
            const fhir_search_param *sp = fhir_search_params_of(bases[b], &cnt);
            for (size_t k = 0; sp && k < cnt; k++) {
                if (!sp[k].path || sp[k].type == SP_COMPOSITE || sp[k].type == SP_SPECIAL) continue;
                if (b > 0 && strcmp(t->name, "Resource") == 0) continue;
                /* listed above: answered from the resource's own columns */
                if (strcmp(sp[k].code, "_id") == 0 || strcmp(sp[k].code, "_lastUpdated") == 0) continue;
                json_array_append_new(sps, json_pack("{ssss}", "name", sp[k].code, "type", sp_type_name(sp[k].type)));
                if (sp[k].type == SP_REFERENCE && b == 0) {
                    char inc[160];
                    snprintf(inc, sizeof inc, "%s:%s", t->name, sp[k].code);
                    json_array_append_new(incs, json_string(inc));
                }
            }
        }
        json_object_set_new(r, "searchParam", sps);
        if (json_array_size(incs)) json_object_set_new(r, "searchInclude", incs);
        else json_decref(incs);
        if (strcmp(t->name, "Patient") == 0) {
            json_object_set_new(r, "operation",
                                json_pack("[{ssss}]", "name", "everything", "definition",
                                          "http://hl7.org/fhir/OperationDefinition/Patient-everything"));
        }
        json_array_append_new(resources, r);
    }
    json_object_set_new(rest, "resource", resources);
    json_object_set_new(rest, "interaction",
                        json_pack("[{ss}{ss}{ss}]", "code", "transaction", "code", "batch", "code", "history-system"));
    json_object_set_new(cs, "rest", json_pack("[o]", rest));
    return cs;
}

const char *rest_capability(rest_ctx *ctx, const char *base_url) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char *cached;
    static char cached_base[256];
    pthread_mutex_lock(&lock);
    if (!cached || strcmp(cached_base, base_url) != 0) {
        /* the previous text is left allocated: another thread may still be
         * sending it (the base URL changes only in tests) */
        json_t *cs = capability_build(ctx, base_url);
        cached = json_dumps(cs, JSON_COMPACT);
        json_decref(cs);
        snprintf(cached_base, sizeof cached_base, "%s", base_url);
    }
    const char *r = cached;
    pthread_mutex_unlock(&lock);
    return r;
}
