/*
 * registry_api.c — the registry over the FHIR API (rest_ext routes, listed
 * in registry.h) and FHIR R4 Patient/$match.
 *
 * $match (hl7.org/fhir/R4/patient-operation-match.html): the input Patient
 * is compared with the registry's source records exactly as an arriving
 * record would be (same blocking, model and term frequencies), and the
 * candidates come back as a searchset Bundle of the source Patients, best
 * first, each with search.mode "match", search.score (the posterior
 * probability of a match) and the match-grade extension:
 *   certain        a trusted NHS number (same valid number, same date of birth,
 *                  a name agreeing), or a weight 10 bits above the link threshold
 *   probable       weight >= the link threshold
 *   possible       weight >= the review threshold
 *   certainly-not  below the review threshold yet sharing the valid NHS number:
 *                  shown because a number shared by different people needs a look
 * Candidates below the review threshold otherwise are not returned.
 *
 * Operations that change links take the acting user from the request
 * (`user` in the JSON body or the query); there is no authentication yet,
 * so it is recorded as given.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../access/guard.h"
#include "../access/policy.h"
#include "registry_int.h"

#define MATCH_GRADE_URL "http://hl7.org/fhir/StructureDefinition/match-grade"
#define REG_PERSON_URL  "https://concord.example/fhir/StructureDefinition/registry-person"
static const char JSON_CT[] = "application/json; charset=utf-8";
static const char FHIR_CT[] = "application/fhir+json; charset=utf-8";

/* ---- $match --------------------------------------------------------------------- */

typedef struct graded {
    const reg_cand *c;
    int rank; /* 0 certain, 1 probable, 2 possible, 3 certainly-not */
    double score;
} graded;

static const char *const grades[] = {"certain", "probable", "possible", "certainly-not"};

static int graded_cmp(const void *x, const void *y) {
    const graded *a = x, *b = y;
    if (a->rank != b->rank) return a->rank - b->rank;
    if (a->c->w != b->c->w) return a->c->w > b->c->w ? -1 : 1;
    return a->c->src.src_key < b->c->src.src_key ? -1 : 1;
}

status registry_match(registry *r, json_t *patient, int only_certain, int count, const char *base_url,
                      buf *out, err *e) {
    status rc = ST_OK;
    reg_cand *cand = NULL;
    graded *g = NULL;
    size_t nc = 0, ng = 0;
    buf body = {0};
    if (count <= 0) count = 10;
    reg_raw raw;
    char merge_into[72];
    reg_raw_from_patient(patient, &raw, merge_into);
    reg_person p;
    reg_raw_to_person(&raw, &p);
    rdb c;
    if ((rc = rdb_read(&c, r->s, e)) != ST_OK) goto out;
    fs_model m;
    int64_t ver;
    if ((rc = reg_model_current(r, &c, &m, &ver, e)) != ST_OK) goto out;
    reg_tf_ctx tf;
    if ((rc = reg_tf_lookup(&c, &m, &p, 0, &tf, e)) != ST_OK) goto out;
    if ((rc = reg_candidates(r, &c, &m, &p, 0, &tf, &cand, &nc, e)) != ST_OK) goto out;
    g = calloc(nc ? nc : 1, sizeof *g);
    if (!g) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nc; i++) {
        const reg_cand *x = &cand[i];
        int rank;
        if (x->trusted || x->w >= m.link_weight + 10)
            rank = 0;
        else if (x->w >= m.link_weight)
            rank = 1;
        else if (x->w >= m.review_weight)
            rank = 2;
        else if (x->v.level[FS_NHS] == CMP_NHS_AGREE && p.nhs_valid)
            rank = 3;
        else
            continue;
        if (only_certain && rank != 0) continue;
        double s = fs_probability(&m, x->w);
        if (x->trusted && s < 0.999) s = 0.999;
        g[ng++] = (graded){x, rank, s};
    }
    reg_sort(g, ng, sizeof *g, graded_cmp);
    if (ng > (size_t)count) ng = (size_t)count;
    buf ent = {0};
    size_t written = 0;
    for (size_t i = 0; i < ng; i++) {
        const reg_cand *x = g[i].c;
        store_meta meta;
        buf_reset(&body);
        err e2;
        /* a candidate deleted between scoring and reading is left out */
        if (store_read(r->s, "Patient", x->src.patient_id, 0, &body, &meta, &e2) != ST_OK) continue;
        char person[72] = "";
        reg_person_id(&c, x->src.person_key, person, &e2);
        buf_puts(&ent, written ? ",{\"fullUrl\":\"" : "{\"fullUrl\":\"");
        buf_json_escape(&ent, base_url ? base_url : "", base_url ? strlen(base_url) : 0);
        buf_puts(&ent, "/Patient/");
        buf_json_escape(&ent, x->src.patient_id, strlen(x->src.patient_id));
        buf_puts(&ent, "\",\"resource\":");
        buf_append(&ent, body.p, body.len);
        buf_printf(&ent,
                   ",\"search\":{\"extension\":[{\"url\":\"" MATCH_GRADE_URL
                   "\",\"valueCode\":\"%s\"},{\"url\":\"" REG_PERSON_URL
                   "\",\"valueReference\":{\"reference\":\"Person/",
                   grades[g[i].rank]);
        buf_json_escape(&ent, person, strlen(person));
        buf_printf(&ent, "\"}}],\"mode\":\"match\",\"score\":%.6f}}", g[i].score);
        written++;
    }
    buf_printf(out, "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":%zu,\"entry\":[", written);
    buf_append(out, ent.p ? ent.p : "", ent.len);
    buf_puts(out, "]}");
    buf_free(&ent);
out:
    free(cand);
    free(g);
    buf_free(&body);
    return rc;
}

/* ---- request helpers ------------------------------------------------------------- */

static void fail(rest_response *rs, status code, const char *issue, const char *fmt, const char *arg) {
    err e;
    err_set(&e, code, issue, NULL, fmt, arg);
    rest_error(rs, &e);
}

static void send_buf(rest_response *rs, int st, buf *b, const char *ct) {
    rs->status = st;
    buf_append(&rs->body, b->p ? b->p : "", b->len);
    rs->content_type = ct;
}


/* A named argument from the body (a JSON object, or FHIR Parameters with
 * value[x] strings) or else the query. */
static int arg_param(const rest_request *rq, json_t *body, const char *name, char *out, size_t n) {
    if (body) {
        const char *v = json_string_value(json_object_get(body, name));
        if (!v) {
            size_t i;
            json_t *x;
            json_array_foreach(json_object_get(body, "parameter"), i, x) {
                const char *nm = json_string_value(json_object_get(x, "name"));
                if (!nm || strcmp(nm, name) != 0) continue;
                v = json_string_value(json_object_get(x, "valueString"));
                if (!v) v = json_string_value(json_object_get(x, "valueCode"));
                if (!v)
                    v = json_string_value(json_object_get(json_object_get(x, "valueReference"), "reference"));
            }
        }
        if (v) {
            snprintf(out, n, "%s", v);
            return 1;
        }
    }
    return rest_query_param(rq->query, name, out, n);
}

static json_t *body_json(const rest_request *rq, rest_response *rs, int *bad) {
    *bad = 0;
    if (!rq->body || rq->body_len == 0) return NULL;
    json_error_t je;
    json_t *j = json_loadb(rq->body, rq->body_len, 0, &je);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        err e;
        char where[64];
        snprintf(where, sizeof where, "line %d column %d", je.line, je.column);
        err_set(&e, ST_INVALID, "structure", where, "the body is not a JSON object: %s", je.text);
        rest_error(rs, &e);
        *bad = 1;
        return NULL;
    }
    return j;
}

static int parse_key(const char *id, int64_t *out) {
    char *end;
    long long v = id ? strtoll(id, &end, 10) : 0;
    if (!id || !*id || *end || v < 1) return 0;
    *out = v;
    return 1;
}

/* ---- handlers ------------------------------------------------------------------------ */

/* $match answers within what the user may see, like any search: a
 * candidate they have no relationship with is left out (its existence is
 * not revealed), and the total counts what is left. */
static status match_visible_only(store *s, const acc_principal *who, buf *out, rest_response *rs, err *e) {
    json_error_t je;
    json_t *b = json_loadb(out->p ? out->p : "", out->len, 0, &je);
    if (!b) return err_set(e, ST_IO, "exception", NULL, "$match produced unreadable JSON: %s", je.text);
    json_t *entries = json_object_get(b, "entry");
    status rc = ST_OK;
    for (size_t i = json_array_size(entries); rc == ST_OK && i-- > 0;) {
        json_t *res = json_object_get(json_array_get(entries, i), "resource");
        const char *rid = json_string_value(json_object_get(res, "id"));
        store_meta m;
        err re;
        int visible = 0;
        if (rid && store_read(s, "Patient", rid, 0, NULL, &m, &re) == ST_OK) {
            status g = guard_record(s, who, &m, NULL, &re);
            if (g == ST_OK) visible = 1, rest_touch(rs, m.pkey);
            else if (g != ST_FORBIDDEN && g != ST_NOT_FOUND) rc = err_set(e, g, "exception", NULL, "%s", re.msg);
        }
        if (!visible) json_array_remove(entries, i);
    }
    if (rc == ST_OK) {
        json_object_set_new(b, "total", json_integer((json_int_t)json_array_size(entries)));
        char *t = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
        buf_reset(out);
        if (t) buf_puts(out, t);
        free(t);
    }
    json_decref(b);
    return rc;
}

static void h_match(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    int bad;
    json_t *body = body_json(rq, rs, &bad);
    if (bad) return;
    json_t *patient = NULL;
    int only_certain = 0, count = 0;
    if (body) {
        const char *rt = json_string_value(json_object_get(body, "resourceType"));
        if (rt && strcmp(rt, "Patient") == 0) patient = body;
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(body, "parameter"), i, x) {
            const char *nm = json_string_value(json_object_get(x, "name"));
            if (!nm) continue;
            if (strcmp(nm, "resource") == 0) patient = json_object_get(x, "resource");
            if (strcmp(nm, "onlyCertainMatches") == 0)
                only_certain = json_is_true(json_object_get(x, "valueBoolean"));
            if (strcmp(nm, "count") == 0) count = (int)json_integer_value(json_object_get(x, "valueInteger"));
        }
    }
    const char *prt = json_string_value(json_object_get(patient, "resourceType"));
    if (!patient || !prt || strcmp(prt, "Patient") != 0) {
        json_decref(body);
        fail(rs, ST_INVALID, "required", "Patient/$match needs a Parameters body with a 'resource' Patient%s",
             "");
        return;
    }
    if (count < 0 || count > 1000) count = 10;
    buf out = {0};
    err e;
    err_clear(&e);
    if (registry_match(r, patient, only_certain, count, rq->base_url, &out, &e) != ST_OK) {
        rest_error(rs, &e);
    } else if (rq->who && match_visible_only(r->s, rq->who, &out, rs, &e) != ST_OK) {
        rest_error(rs, &e);
    } else {
        send_buf(rs, 200, &out, FHIR_CT);
    }
    buf_free(&out);
    json_decref(body);
}

static void h_review_list(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    char st[32] = "open", cnt[16];
    rest_query_param(rq->query, "status", st, sizeof st);
    int limit = rest_query_param(rq->query, "_count", cnt, sizeof cnt) ? atoi(cnt) : 50;
    if (limit < 1 || limit > 1000) limit = 50;
    buf out = {0};
    err e;
    if (registry_review_list(r, st, limit, &out, &e) != ST_OK)
        rest_error(rs, &e);
    else
        send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

static void h_review_show(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    int64_t key;
    if (!parse_key(id, &key)) {
        fail(rs, ST_NOT_FOUND, "not-found", "no review item '%s'", id ? id : "");
        return;
    }
    buf out = {0};
    err e;
    if (registry_review_show(r, key, &out, &e) != ST_OK)
        rest_error(rs, &e);
    else
        send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

static void review_decide(registry *r, const rest_request *rq, rest_response *rs, const char *id,
                          int accept) {
    int64_t key;
    if (!parse_key(id, &key)) {
        fail(rs, ST_NOT_FOUND, "not-found", "no review item '%s'", id ? id : "");
        return;
    }
    int bad;
    json_t *body = body_json(rq, rs, &bad);
    if (bad) return;
    char who[128] = "api", note[512] = "";
    arg_param(rq, body, "user", who, sizeof who);
    if (rq->who) snprintf(who, sizeof who, "%s", rq->who->user); /* signed in: that is who decided */
    int has_note = arg_param(rq, body, "note", note, sizeof note);
    buf out = {0};
    err e;
    err_clear(&e);
    if (registry_review_decide(r, key, accept, who, has_note ? note : NULL, &out, &e) != ST_OK)
        rest_error(rs, &e);
    else
        send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
    json_decref(body);
}

static void h_review_accept(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    review_decide(user, rq, rs, id, 1);
}
static void h_review_reject(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    review_decide(user, rq, rs, id, 0);
}

static void h_merge(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    int bad;
    json_t *body = body_json(rq, rs, &bad);
    if (bad) return;
    char keep[128] = "", retire[128] = "", who[128] = "api", reason[256] = "";
    arg_param(rq, body, "keep", keep, sizeof keep);
    arg_param(rq, body, "retire", retire, sizeof retire);
    arg_param(rq, body, "user", who, sizeof who);
    if (rq->who) snprintf(who, sizeof who, "%s", rq->who->user); /* signed in: that is who decided */
    arg_param(rq, body, "reason", reason, sizeof reason);
    json_decref(body);
    if (!keep[0] || !retire[0]) {
        fail(rs, ST_INVALID, "required", "$link-merge needs 'keep' and 'retire' (Person/ID or Patient/ID)%s",
             "");
        return;
    }
    int64_t ev = 0;
    err e;
    err_clear(&e);
    if (registry_merge(r, keep, retire, who, reason, &ev, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    buf out = {0};
    buf_printf(&out, "{\"event\":\"%lld\",\"keep\":", (long long)ev);
    buf_putc(&out, '"');
    buf_json_escape(&out, keep, strlen(keep));
    buf_puts(&out, "\",\"retire\":\"");
    buf_json_escape(&out, retire, strlen(retire));
    buf_puts(&out, "\"}");
    send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

static void h_unmerge(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    int64_t key;
    if (!parse_key(id, &key)) {
        fail(rs, ST_NOT_FOUND, "not-found", "no history event '%s'", id ? id : "");
        return;
    }
    int bad;
    json_t *body = body_json(rq, rs, &bad);
    if (bad) return;
    char who[128] = "api";
    arg_param(rq, body, "user", who, sizeof who);
    if (rq->who) snprintf(who, sizeof who, "%s", rq->who->user); /* signed in: that is who decided */
    json_decref(body);
    int64_t ev = 0;
    err e;
    err_clear(&e);
    if (registry_unmerge(r, key, who, &ev, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    buf out = {0};
    buf_printf(&out, "{\"event\":\"%lld\",\"undoes\":\"%lld\"}", (long long)ev, (long long)key);
    send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

static void h_history(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    char person[128] = "", cnt[16];
    rest_query_param(rq->query, "person", person, sizeof person);
    int limit = rest_query_param(rq->query, "_count", cnt, sizeof cnt) ? atoi(cnt) : 100;
    buf out = {0};
    err e;
    if (registry_history(r, person[0] ? person : NULL, limit, &out, &e) != ST_OK)
        rest_error(rs, &e);
    else
        send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

static void h_person(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry *r = user;
    buf out = {0};
    err e;
    char name[160];
    /* a bare id: a Person id, else a Patient id (reg_person_resolve) */
    snprintf(name, sizeof name, "%s", id ? id : "");
    if (registry_person_show(r, name, &out, &e) != ST_OK)
        rest_error(rs, &e);
    else
        send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

static void h_stats(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    registry_stats st;
    registry_hook_stats(user, &st);
    buf out = {0};
    registry_stats_json(&st, &out);
    send_buf(rs, 200, &out, JSON_CT);
    buf_free(&out);
}

const rest_ext_route registry_routes[] = {
    {"POST", {"Patient", "$match"}, h_match, AREA_DEMOGRAPHICS, ACC_WRITE},
    {"GET", {"$link-review"}, h_review_list, AREA_REGISTRY, ACC_READ},
    {"GET", {"$link-review", "{id}"}, h_review_show, AREA_REGISTRY, ACC_READ},
    {"POST", {"$link-review", "{id}", "$accept"}, h_review_accept, AREA_REGISTRY, ACC_WRITE},
    {"POST", {"$link-review", "{id}", "$reject"}, h_review_reject, AREA_REGISTRY, ACC_WRITE},
    {"POST", {"$link-merge"}, h_merge, AREA_REGISTRY, ACC_WRITE},
    {"POST", {"$link-unmerge", "{id}"}, h_unmerge, AREA_REGISTRY, ACC_WRITE},
    {"GET", {"$link-history"}, h_history, AREA_REGISTRY, ACC_READ},
    {"GET", {"$link-person", "{id}"}, h_person, AREA_REGISTRY, ACC_READ},
    {"GET", {"$link-stats"}, h_stats, AREA_REGISTRY, ACC_READ},
};
const size_t registry_nroutes = sizeof registry_routes / sizeof registry_routes[0];
