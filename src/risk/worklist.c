/*
 * worklist.c — risk-ranked lists of people for a practice, an MDG or a
 * cohort, read from risk_score (kept by full runs and incremental
 * rescoring), each row with the factors that explain its score.
 *
 * Filters: practice (ODS code), MDG (organisation id, "mdg-3" or "3"),
 * cohort ("75plus": aged 75 and over on the assessment date; "diabetes":
 * type 1 or 2 diabetes in any setting's record), tier, no active care plan,
 * not reviewed (no care plan created or updated) in N months. Only people
 * with a score are listed; the query is SQL with bound parameters, ordered
 * by probability (highest first), then by patient key for a stable order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fhir/fhirdate.h"
#include "../store/store_int.h"
#include "risk_int.h"

typedef struct where {
    buf sql;
    int nargs;
    const char *text[8];
    int64_t num[8];
    int is_num[8];
} where;

static void w_text(where *w, const char *cond, const char *v) {
    buf_puts(&w->sql, " AND ");
    buf_puts(&w->sql, cond);
    w->is_num[w->nargs] = 0;
    w->text[w->nargs++] = v;
}

static void w_num(where *w, const char *cond, int64_t v) {
    buf_puts(&w->sql, " AND ");
    buf_puts(&w->sql, cond);
    w->is_num[w->nargs] = 1;
    w->num[w->nargs++] = v;
}

static void w_bind(const db_driver *drv, db_stmt *st, const where *w) {
    for (int i = 0; i < w->nargs; i++) {
        if (w->is_num[i])
            drv->bind_int(st, i + 1, w->num[i]);
        else
            drv->bind_text(st, i + 1, w->text[i], -1);
    }
}

static void scope_bind(const db_driver *drv, db_stmt *st, const store_binds *b, int after) {
    for (int i = 0; i < b->n; i++) {
        if (b->v[i].kind == 'i') drv->bind_int(st, after + 1 + i, b->v[i].i);
        else drv->bind_text(st, after + 1 + i, b->v[i].t, -1);
    }
}

static json_t *index_json(double score, int has_score, const char *band) {
    if (!has_score) return json_null();
    json_t *o = json_pack("{s:f}", "score", score);
    if (band) json_object_set_new(o, "band", json_string(band));
    return o;
}

void rk_set_explanation(json_t *row) {
    buf why = {0};
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(row, "factors"), i, f) {
        const char *label = json_string_value(json_object_get(f, "label"));
        if (i) buf_puts(&why, "; ");
        buf_puts(&why, label ? label : "");
    }
    json_object_set_new(row, "explanation", json_string(why.p ? why.p : ""));
    buf_free(&why);
}

status risk_worklist(store *s, const risk_worklist_query *q, json_t **out, err *e) {
    *out = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    status rc = ST_OK;
    where w = {0};
    buf sql = {0};
    char mdg[64];
    if (q->cohort && strcmp(q->cohort, "75plus") != 0 && strcmp(q->cohort, "diabetes") != 0)
        return err_set(e, ST_INVALID, "value", "cohort", "cohort is 75plus or diabetes, not '%s'", q->cohort);
    buf_puts(&w.sql, " WHERE status = 'scored'");
    if (q->practice) w_text(&w, "practice = ?", q->practice);
    if (q->mdg) {
        if (q->mdg[0] >= '0' && q->mdg[0] <= '9')
            snprintf(mdg, sizeof mdg, "mdg-%s", q->mdg);
        else
            snprintf(mdg, sizeof mdg, "%s", q->mdg);
        w_text(&w, "mdg = ?", mdg);
    }
    if (q->cohort && !strcmp(q->cohort, "75plus")) w_num(&w, "age >= ?", 75);
    if (q->cohort && !strcmp(q->cohort, "diabetes")) w_num(&w, "diabetes = ?", 1);
    if (q->tier) w_text(&w, "tier = ?", q->tier);
    if (q->no_care_plan) w_num(&w, "care_plan = ?", 0);
    if (q->not_reviewed_months > 0)
        w_num(&w, "(last_review IS NULL OR last_review < ?)",
              risk_today() - (int64_t)(q->not_reviewed_months * 30.4375 + 0.5));
    int limit = q->limit > 0 ? q->limit : 50, offset = q->offset > 0 ? q->offset : 0;
    /* who is asking: only the patients they may see, counted and listed */
    store_binds sb = {0};
    if (q->scope) {
        buf_puts(&w.sql, " AND ");
        store_scope_pkey_sql(q->scope, "rs.pkey", &w.sql, &sb); /* qualified: the scope's subqueries have pkeys too */
    }

    /* the total */
    buf_puts(&sql, "SELECT COUNT(*) FROM risk_score rs");
    buf_append(&sql, w.sql.p, w.sql.len);
    rc = drv->prepare(d, sql.p, 0, &st, e);
    if (rc != ST_OK) goto out;
    w_bind(drv, st, &w);
    scope_bind(drv, st, &sb, w.nargs);
    int64_t total = 0;
    int r = drv->step(st, e);
    if (r == 1) total = drv->col_int(st, 0);
    drv->done(st);
    st = NULL;
    if (r < 0) {
        rc = ST_IO;
        goto out;
    }

    buf_reset(&sql);
    buf_puts(
        &sql,
        "SELECT patient_id, practice, mdg, age, sex, probability, tier, efi, efi_band, hfrs, hfrs_band,"
        " charlson, charlson2011, lace, lace_band, diabetes, care_plan, last_review, factors, as_of, model"
        " FROM risk_score rs");
    buf_append(&sql, w.sql.p, w.sql.len);
    buf_puts(&sql, " ORDER BY probability DESC, rs.pkey LIMIT ? OFFSET ?");
    rc = drv->prepare(d, sql.p, 0, &st, e);
    if (rc != ST_OK) goto out;
    w_bind(drv, st, &w);
    scope_bind(drv, st, &sb, w.nargs);
    drv->bind_int(st, w.nargs + sb.n + 1, limit);
    drv->bind_int(st, w.nargs + sb.n + 2, offset);
    json_t *rows = json_array();
    char as_of[11] = "";
    char model[64] = "";
    int rank = offset;
    while ((r = drv->step(st, e)) == 1) {
        char day[11];
        const char *sex = drv->col_text(st, 4, NULL);
        json_t *row = json_pack("{s:i, s:s, s:s, s:s, s:I, s:s, s:f, s:s}", "rank", ++rank, "patient",
                                drv->col_text(st, 0, NULL), "practice", drv->col_text(st, 1, NULL), "mdg",
                                drv->col_text(st, 2, NULL), "age", (json_int_t)drv->col_int(st, 3), "sex",
                                sex ? sex : "u", "probability", drv->col_double(st, 5), "tier",
                                drv->col_text(st, 6, NULL) ? drv->col_text(st, 6, NULL) : "");
        json_t *ix = json_object();
        json_object_set_new(ix, "efi",
                            index_json(drv->col_double(st, 7), drv->col_text(st, 8, NULL) != NULL,
                                       drv->col_text(st, 8, NULL)));
        json_object_set_new(ix, "hfrs",
                            index_json(drv->col_double(st, 9), drv->col_text(st, 9, NULL) != NULL,
                                       drv->col_text(st, 10, NULL)));
        json_object_set_new(ix, "charlson",
                            drv->col_text(st, 11, NULL) ? json_integer(drv->col_int(st, 11)) : json_null());
        json_object_set_new(ix, "charlson_2011",
                            drv->col_text(st, 12, NULL) ? json_integer(drv->col_int(st, 12)) : json_null());
        json_object_set_new(ix, "lace",
                            index_json(drv->col_double(st, 13), drv->col_text(st, 13, NULL) != NULL,
                                       drv->col_text(st, 14, NULL)));
        json_object_set_new(row, "indices", ix);
        json_object_set_new(row, "diabetes", json_boolean(drv->col_int(st, 15)));
        json_object_set_new(row, "care_plan", json_boolean(drv->col_int(st, 16)));
        if (drv->col_text(st, 17, NULL)) {
            risk_format_day((int32_t)drv->col_int(st, 17), day);
            json_object_set_new(row, "last_review", json_string(day));
        } else {
            json_object_set_new(row, "last_review", json_null());
        }
        const char *fj = drv->col_text(st, 18, NULL);
        json_t *factors = fj ? json_loads(fj, 0, NULL) : NULL;
        if (!factors) factors = json_array();
        json_object_set_new(row, "factors", factors);
        rk_set_explanation(row);
        risk_format_day((int32_t)drv->col_int(st, 19), day);
        json_object_set_new(row, "assessed", json_string(day)); /* when this result was reached */
        if (!model[0] && drv->col_text(st, 20, NULL))
            snprintf(model, sizeof model, "%s", drv->col_text(st, 20, NULL));
        json_array_append_new(rows, row);
    }
    drv->done(st);
    st = NULL;
    if (r < 0) {
        json_decref(rows);
        rc = ST_IO;
        goto out;
    }
    /* the date of the last full run: rows keep the date their result was reached */
    if (drv->prepare(d, "SELECT as_of FROM risk_run WHERE finished IS NOT NULL ORDER BY run_key DESC LIMIT 1",
                     1, &st, e) == ST_OK) {
        if (drv->step(st, e) == 1) risk_format_day((int32_t)drv->col_int(st, 0), as_of);
        drv->done(st);
        st = NULL;
    }
    json_t *o = json_pack("{s:I, s:i, s:i, s:o}", "total", (json_int_t)total, "offset", offset, "count",
                          (int)json_array_size(rows), "rows", rows);
    if (as_of[0]) json_object_set_new(o, "as_of", json_string(as_of));
    if (model[0]) json_object_set_new(o, "model", json_string(model));
    json_t *filters = json_object();
    if (q->practice) json_object_set_new(filters, "practice", json_string(q->practice));
    if (q->mdg) json_object_set_new(filters, "mdg", json_string(mdg));
    if (q->cohort) json_object_set_new(filters, "cohort", json_string(q->cohort));
    if (q->tier) json_object_set_new(filters, "tier", json_string(q->tier));
    if (q->no_care_plan) json_object_set_new(filters, "no_care_plan", json_true());
    if (q->not_reviewed_months > 0)
        json_object_set_new(filters, "not_reviewed_months", json_integer(q->not_reviewed_months));
    json_object_set_new(o, "filters", filters);
    *out = o;
out:
    if (st) drv->done(st);
    buf_free(&w.sql);
    buf_free(&sql);
    return rc;
}

status risk_events(store *s, int64_t after_key, int limit, json_t **out, err *e) {
    *out = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] = "SELECT event_key, at, kind, from_tier, to_tier, probability, model, detail"
                              " FROM risk_event WHERE event_key > ? ORDER BY event_key LIMIT ?";
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, after_key);
    drv->bind_int(st, 2, limit > 0 ? limit : 100);
    json_t *rows = json_array();
    int r;
    while ((r = drv->step(st, e)) == 1) {
        char when[32];
        fhir_instant_format(drv->col_int(st, 1), when);
        const char *from = drv->col_text(st, 3, NULL), *to = drv->col_text(st, 4, NULL);
        json_array_append_new(
            rows, json_pack("{s:I, s:s, s:s, s:s?, s:s?, s:s?, s:f, s:s?}", "id",
                            (json_int_t)drv->col_int(st, 0), "at", when, "kind", drv->col_text(st, 2, NULL),
                            "patient", drv->col_text(st, 7, NULL), "from", from, "to", to, "probability",
                            drv->col_double(st, 5), "model", drv->col_text(st, 6, NULL)));
    }
    drv->done(st);
    if (r < 0) {
        json_decref(rows);
        return ST_IO;
    }
    *out = json_pack("{s:o}", "events", rows);
    return ST_OK;
}
