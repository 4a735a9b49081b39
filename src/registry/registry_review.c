/*
 * registry_review.c — the decisions people make about links: the review
 * queue (list, show side by side, accept, reject), manual and HL7 A40
 * merges, unmerge, the history of who did what, and the canonical dump of
 * the link state.
 *
 * A merge records, in its history event's `undo`, the exact state of both
 * persons' rows and of every source row it moved (person, decision, weight,
 * evidence, decider, time), so that unmerge puts each back byte for byte;
 * the golden records follow (the Person resources are rewritten from the
 * restored sources, which gives the same text, hence the same hash).
 * Decisions that must survive `concord link run` are kept in reg_constraint:
 * 'same' (accepted reviews, merges) and 'apart' (rejected reviews, unmerges).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fhir/fhirdate.h"
#include "registry_int.h"

status reg_merge_persons(rdb *c, int64_t keep, int64_t retire, const char *who, const char *action,
                         const char *reason, int64_t review, int64_t *event, err *e);

static void json_str(buf *b, const char *s) {
    buf_putc(b, '"');
    buf_json_escape(b, s ? s : "", s ? strlen(s) : 0);
    buf_putc(b, '"');
}

static void json_time(buf *b, int64_t usec) {
    char t[32];
    if (!usec) {
        buf_puts(b, "null");
        return;
    }
    fhir_instant_format(usec, t);
    json_str(b, t);
}

/* Run `fn` in a write transaction of its own, committed if it succeeds. */
static status in_txn(registry *r, status (*fn)(registry *, rdb *, void *, err *), void *arg, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(r->s, &tx, e);
    if (rc != ST_OK) return rc;
    rdb c;
    rdb_of_tx(&c, tx);
    rc = reg_lock(&c, e);
    if (rc == ST_OK) rc = fn(r, &c, arg, e);
    if (rc == ST_OK)
        rc = store_commit(tx, e);
    else
        store_rollback(tx);
    return rc;
}

/* ---- merge ---------------------------------------------------------------- */

static status person_row_json(rdb *c, int64_t key, json_t **out, err *e) {
    db_stmt *st = NULL;
    status rc = rq_prep(c,
                        "SELECT person_key, retired, COALESCE(merged_into, 0), golden_hash FROM reg_person"
                        " WHERE person_key = ?",
                        &st, e, "i", key);
    if (rc != ST_OK) return rc;
    int r = c->drv->step(st, e);
    if (r == 1)
        *out =
            json_pack("{s:I,s:I,s:I,s:I}", "key", (json_int_t)c->drv->col_int(st, 0), "retired",
                      (json_int_t)c->drv->col_int(st, 1), "merged_into", (json_int_t)c->drv->col_int(st, 2),
                      "golden_hash", (json_int_t)c->drv->col_int(st, 3));
    else
        rc = r < 0 ? ST_IO : err_set(e, ST_NOT_FOUND, "not-found", NULL, "no person %lld", (long long)key);
    c->drv->done(st);
    return rc;
}

/* The decision columns of every source of a person, as JSON. */
static status sources_json(rdb *c, int64_t person, json_t *arr, int64_t *min_src, err *e) {
    db_stmt *st = NULL;
    *min_src = 0;
    status rc = rq_prep(c,
                        "SELECT src_key, person_key, decision, weight, evidence, decided_by, decided_at FROM"
                        " reg_source WHERE person_key = ? ORDER BY src_key",
                        &st, e, "i", person);
    if (rc != ST_OK) return rc;
    int r;
    while ((r = c->drv->step(st, e)) == 1) {
        const char *ev = c->drv->col_text(st, 4, NULL);
        int64_t k = c->drv->col_int(st, 0);
        if (!*min_src) *min_src = k;
        json_array_append_new(
            arr,
            json_pack("{s:I,s:I,s:s,s:f,s:o,s:s,s:I}", "src", (json_int_t)k, "person",
                      (json_int_t)c->drv->col_int(st, 1), "decision", c->drv->col_text(st, 2, NULL), "weight",
                      c->drv->col_double(st, 3), "evidence", ev ? json_string(ev) : json_null(), "decided_by",
                      c->drv->col_text(st, 5, NULL), "decided_at", (json_int_t)c->drv->col_int(st, 6)));
    }
    if (r < 0) rc = ST_IO;
    c->drv->done(st);
    return rc;
}

static status person_live(rdb *c, int64_t key, err *e) {
    int64_t retired = 0;
    int found = 0;
    status rc =
        rq_int(c, "SELECT retired FROM reg_person WHERE person_key = ?", &retired, &found, e, "i", key);
    if (rc == ST_OK && !found)
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "no person %lld", (long long)key);
    if (rc == ST_OK && retired)
        rc = err_set(e, ST_CONFLICT, "conflict", NULL, "person %lld is retired", (long long)key);
    return rc;
}

status reg_merge_persons(rdb *c, int64_t keep, int64_t retire, const char *who, const char *action,
                         const char *reason, int64_t review, int64_t *event, err *e) {
    status rc = ST_OK;
    json_t *undo = NULL, *moved = json_array();
    char *undo_text = NULL;
    buf detail = {0};
    int64_t now = reg_now_usec(), ev = 0, rep_keep = 0, rep_retire = 0;
    json_t *pk = NULL, *pr = NULL;
    if (keep == retire) {
        rc = err_set(e, ST_INVALID, "value", NULL, "a person cannot be merged with itself");
        goto out;
    }
    if ((rc = person_live(c, keep, e)) != ST_OK || (rc = person_live(c, retire, e)) != ST_OK) goto out;
    if ((rc = person_row_json(c, keep, &pk, e)) != ST_OK ||
        (rc = person_row_json(c, retire, &pr, e)) != ST_OK)
        goto out;
    if ((rc = sources_json(c, retire, moved, &rep_retire, e)) != ST_OK) goto out;
    json_t *kept = json_array();
    rc = sources_json(c, keep, kept, &rep_keep, e);
    json_decref(kept);
    if (rc != ST_OK) goto out;
    undo = json_pack("{s:I,s:I,s:[OO],s:O}", "keep", (json_int_t)keep, "retire", (json_int_t)retire,
                     "persons", pk, pr, "sources", moved);
    undo_text = json_dumps(undo, JSON_COMPACT | JSON_REAL_PRECISION(17));
    char keep_id[72], retire_id[72];
    if ((rc = reg_person_id(c, keep, keep_id, e)) != ST_OK ||
        (rc = reg_person_id(c, retire, retire_id, e)) != ST_OK)
        goto out;
    buf_puts(&detail, "{\"keep\":\"Person/");
    buf_json_escape(&detail, keep_id, strlen(keep_id));
    buf_puts(&detail, "\",\"retire\":\"Person/");
    buf_json_escape(&detail, retire_id, strlen(retire_id));
    buf_printf(&detail, "\",\"records\":%zu,\"reason\":", json_array_size(moved));
    json_str(&detail, reason ? reason : "");
    buf_putc(&detail, '}');
    if ((rc = reg_event_add(c, who, action, keep, retire, 0, review, detail.p, undo_text, &ev, e)) != ST_OK)
        goto out;
    const char *decision = strcmp(action, "accept") == 0 ? "accepted" : "merged";
    rc = rq_exec(c,
                 "UPDATE reg_source SET person_key = ?, decision = ?, decided_by = ?, decided_at = ? WHERE"
                 " person_key = ?",
                 e, "ittii", keep, decision, who, now, retire);
    if (rc == ST_OK && rep_keep && rep_retire)
        rc = rq_exec(
            c,
            "INSERT INTO reg_constraint (src_a, src_b, kind, origin, event_key, active, created, created_by)"
            " VALUES (?, ?, 'same', ?, ?, 1, ?, ?)",
            e, "iitiit", rep_keep, rep_retire, action, ev, now, who);
    /* review items between the two are settled by the merge */
    if (rc == ST_OK)
        rc = rq_exec(
            c,
            "UPDATE reg_review SET status = 'superseded', decided_by = ?, decided_at = ? WHERE status ="
            " 'open' AND src_key IN (SELECT src_key FROM reg_source WHERE person_key = ?) AND other_key IN"
            " (SELECT src_key FROM reg_source WHERE person_key = ?)",
            e, "tiii", who, now, keep, keep);
    if (rc == ST_OK) rc = reg_person_refresh(c, keep, 0, e);
    if (rc == ST_OK) rc = reg_person_refresh(c, retire, keep, e);
    if (event) *event = ev;
out:
    json_decref(pk);
    json_decref(pr);
    json_decref(moved);
    json_decref(undo);
    free(undo_text);
    buf_free(&detail);
    return rc;
}

typedef struct merge_args {
    const char *keep, *retire, *who, *reason;
    int64_t event;
} merge_args;

static status do_merge(registry *r, rdb *c, void *arg, err *e) {
    merge_args *a = arg;
    int64_t keep = 0, retire = 0;
    status rc = reg_person_resolve(c, a->keep, &keep, e);
    if (rc == ST_OK) rc = reg_person_resolve(c, a->retire, &retire, e);
    if (rc == ST_OK) rc = reg_merge_persons(c, keep, retire, a->who, "merge", a->reason, 0, &a->event, e);
    return rc;
}

status registry_merge(registry *r, const char *keep, const char *retire, const char *who, const char *reason,
                      int64_t *event, err *e) {
    merge_args a = {keep, retire, who && *who ? who : "unknown", reason, 0};
    status rc = in_txn(r, do_merge, &a, e);
    if (event) *event = a.event;
    return rc;
}

/* ---- unmerge -------------------------------------------------------------- */

typedef struct unmerge_args {
    int64_t event;
    const char *who;
    int64_t undo_event;
} unmerge_args;

static status do_unmerge(registry *r, rdb *c, void *arg, err *e) {
    unmerge_args *a = arg;
    status rc = ST_OK;
    json_t *undo = NULL;
    buf detail = {0};
    char action[32] = "";
    int64_t undone = 0;
    db_stmt *st = NULL;
    rc = rq_prep(c, "SELECT action, undo, COALESCE(undone_by, 0) FROM reg_event WHERE event_key = ?", &st, e,
                 "i", a->event);
    if (rc != ST_OK) return rc;
    int s = c->drv->step(st, e);
    if (s == 1) {
        rq_col_copy(c, st, 0, action, sizeof action);
        size_t n = 0;
        const char *t = c->drv->col_text(st, 1, &n);
        if (t) undo = json_loadb(t, n, 0, NULL);
        undone = c->drv->col_int(st, 2);
    }
    c->drv->done(st);
    if (s != 1)
        return s < 0 ? ST_IO
                     : err_set(e, ST_NOT_FOUND, "not-found", NULL, "no history event %lld",
                               (long long)a->event);
    if (!undo) {
        rc = err_set(e, ST_INVALID, "value", NULL, "event %lld is a %s, not a merge", (long long)a->event,
                     action);
        goto out;
    }
    if (undone) {
        rc = err_set(e, ST_CONFLICT, "conflict", NULL, "merge %lld was already undone (event %lld)",
                     (long long)a->event, (long long)undone);
        goto out;
    }
    int64_t keep = json_integer_value(json_object_get(undo, "keep"));
    int64_t retire = json_integer_value(json_object_get(undo, "retire"));
    int64_t k_retired = 0, r_retired = 0, r_into = 0;
    int found = 0;
    if ((rc = rq_int(c, "SELECT retired FROM reg_person WHERE person_key = ?", &k_retired, &found, e, "i",
                     keep)) != ST_OK)
        goto out;
    if ((rc = rq_int(c, "SELECT retired FROM reg_person WHERE person_key = ?", &r_retired, &found, e, "i",
                     retire)) != ST_OK)
        goto out;
    if ((rc = rq_int(c, "SELECT COALESCE(merged_into, 0) FROM reg_person WHERE person_key = ?", &r_into,
                     &found, e, "i", retire)) != ST_OK)
        goto out;
    if (k_retired || !r_retired || r_into != keep) {
        rc = err_set(
            e, ST_CONFLICT, "conflict", NULL,
            "merge %lld cannot be undone: the surviving person has been merged or changed since (undo "
            "the later merge first)",
            (long long)a->event);
        goto out;
    }
    int64_t now = reg_now_usec();
    if ((rc = reg_event_add(c, a->who, "unmerge", keep, retire, 0, 0, NULL, NULL, &a->undo_event, e)) !=
        ST_OK)
        goto out;
    /* the retired person's row as it was, but still marked retired so that
     * the refresh below writes its Person again */
    json_t *prow = json_array_get(json_object_get(undo, "persons"), 1);
    rc = rq_exec(
        c, "UPDATE reg_person SET retired = 1, merged_into = NULL, golden_hash = 0 WHERE person_key = ?", e,
        "i", retire);
    size_t i, restored = 0, skipped = 0;
    json_t *x;
    json_array_foreach(json_object_get(undo, "sources"), i, x) {
        if (rc != ST_OK) break;
        int64_t src = json_integer_value(json_object_get(x, "src"));
        int64_t now_person = 0;
        rc = rq_int(c, "SELECT COALESCE(person_key, 0) FROM reg_source WHERE src_key = ?", &now_person,
                    &found, e, "i", src);
        if (rc != ST_OK) break;
        if (now_person != keep) {
            skipped++; /* moved or deleted since: left where it is */
            continue;
        }
        json_t *evj = json_object_get(x, "evidence");
        rc = rq_exec(
            c,
            "UPDATE reg_source SET person_key = ?, decision = ?, weight = ?, evidence = ?, decided_by = ?,"
            " decided_at = ? WHERE src_key = ?",
            e, "itdttii", json_integer_value(json_object_get(x, "person")),
            json_string_value(json_object_get(x, "decision")),
            json_number_value(json_object_get(x, "weight")),
            json_is_string(evj) ? json_string_value(evj) : NULL,
            json_string_value(json_object_get(x, "decided_by")),
            (int64_t)json_integer_value(json_object_get(x, "decided_at")), src);
        restored++;
    }
    if (rc != ST_OK) goto out;
    if ((rc = rq_exec(c, "UPDATE reg_constraint SET active = 0 WHERE event_key = ? AND kind = 'same'", e, "i",
                      a->event)) != ST_OK)
        goto out;
    int64_t ra = 0, rb = 0;
    rc = rq_int(c, "SELECT MIN(src_key) FROM reg_source WHERE person_key = ?", &ra, &found, e, "i", keep);
    if (rc == ST_OK)
        rc = rq_int(c, "SELECT MIN(src_key) FROM reg_source WHERE person_key = ?", &rb, &found, e, "i",
                    retire);
    if (rc == ST_OK && ra && rb)
        rc = rq_exec(
            c,
            "INSERT INTO reg_constraint (src_a, src_b, kind, origin, event_key, active, created, created_by)"
            " VALUES (?, ?, 'apart', 'unmerge', ?, 1, ?, ?)",
            e, "iiiit", ra, rb, a->undo_event, now, a->who);
    if (rc == ST_OK) rc = reg_person_refresh(c, retire, 0, e);
    if (rc == ST_OK) rc = reg_person_refresh(c, keep, 0, e);
    /* the refresh recomputed the hash from the restored sources; the row's
     * other columns are as before the merge */
    if (rc == ST_OK && json_integer_value(json_object_get(prow, "retired")) == 0)
        rc = rq_exec(c, "UPDATE reg_person SET retired = 0, merged_into = NULL WHERE person_key = ?", e, "i",
                     retire);
    if (rc != ST_OK) goto out;
    buf_printf(&detail, "{\"merge\":%lld,\"restored\":%zu,\"left\":%zu}", (long long)a->event, restored,
               skipped);
    rc = rq_exec(c, "UPDATE reg_event SET detail = ? WHERE event_key = ?", e, "ti", detail.p, a->undo_event);
    if (rc == ST_OK)
        rc = rq_exec(c, "UPDATE reg_event SET undone_by = ? WHERE event_key = ?", e, "ii", a->undo_event,
                     a->event);
out:
    json_decref(undo);
    buf_free(&detail);
    return rc;
}

status registry_unmerge(registry *r, int64_t event, const char *who, int64_t *undo_event, err *e) {
    unmerge_args a = {event, who && *who ? who : "unknown", 0};
    status rc = in_txn(r, do_unmerge, &a, e);
    if (undo_event) *undo_event = a.undo_event;
    return rc;
}

/* ---- review queue ----------------------------------------------------------- */

typedef struct review_row {
    int64_t key, src, other, created, decided_at;
    double weight;
    char status[16], created_by[64], decided_by[64];
    char *evidence, *note;
} review_row;

#define REVIEW_COLS                                                                                          \
    "review_key, src_key, other_key, weight, status, created, created_by, COALESCE(decided_by, ''),"         \
    " COALESCE(decided_at, 0), evidence, note"

static void review_read(rdb *c, db_stmt *st, review_row *o) {
    o->key = c->drv->col_int(st, 0);
    o->src = c->drv->col_int(st, 1);
    o->other = c->drv->col_int(st, 2);
    o->weight = c->drv->col_double(st, 3);
    rq_col_copy(c, st, 4, o->status, sizeof o->status);
    o->created = c->drv->col_int(st, 5);
    rq_col_copy(c, st, 6, o->created_by, sizeof o->created_by);
    rq_col_copy(c, st, 7, o->decided_by, sizeof o->decided_by);
    o->decided_at = c->drv->col_int(st, 8);
    const char *t = c->drv->col_text(st, 9, NULL);
    o->evidence = t ? strdup(t) : NULL;
    t = c->drv->col_text(st, 10, NULL);
    o->note = t ? strdup(t) : NULL;
}

static void review_free(review_row *o) {
    free(o->evidence);
    free(o->note);
}

/* "Patient/x" and its person "Person/y" (or null) of a source key. */
static status src_refs(rdb *c, int64_t src, buf *b, err *e) {
    db_stmt *st = NULL;
    status rc =
        rq_prep(c,
                "SELECT s.patient_id, p.person_id FROM reg_source s LEFT JOIN reg_person p ON p.person_key ="
                " s.person_key WHERE s.src_key = ?",
                &st, e, "i", src);
    if (rc != ST_OK) return rc;
    int r = c->drv->step(st, e);
    buf_puts(b, "{\"patient\":");
    if (r == 1) {
        const char *pid = c->drv->col_text(st, 0, NULL), *per = c->drv->col_text(st, 1, NULL);
        buf_puts(b, "\"Patient/");
        buf_json_escape(b, pid, strlen(pid));
        buf_puts(b, "\",\"person\":");
        if (per) {
            buf_puts(b, "\"Person/");
            buf_json_escape(b, per, strlen(per));
            buf_putc(b, '"');
        } else {
            buf_puts(b, "null");
        }
    } else {
        buf_puts(b, "null,\"person\":null");
    }
    buf_putc(b, '}');
    c->drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

static status review_json(rdb *c, const review_row *x, buf *b, err *e) {
    buf_printf(b, "{\"id\":\"%lld\",\"status\":\"%s\",\"weight\":%.4f,\"created\":", (long long)x->key,
               x->status, x->weight);
    json_time(b, x->created);
    buf_puts(b, ",\"created_by\":");
    json_str(b, x->created_by);
    buf_puts(b, ",\"decided_by\":");
    if (x->decided_by[0])
        json_str(b, x->decided_by);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"decided_at\":");
    json_time(b, x->decided_at);
    buf_puts(b, ",\"note\":");
    if (x->note)
        json_str(b, x->note);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"record\":");
    status rc = src_refs(c, x->src, b, e);
    buf_puts(b, ",\"candidate\":");
    if (rc == ST_OK) rc = src_refs(c, x->other, b, e);
    buf_putc(b, '}');
    return rc;
}

status registry_review_list(registry *r, const char *which, int limit, buf *out, err *e) {
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    if (rc != ST_OK) return rc;
    if (limit <= 0) limit = 50;
    db_stmt *st = NULL;
    if (which && strcmp(which, "all") != 0)
        rc = rq_prep(
            &c, "SELECT " REVIEW_COLS " FROM reg_review WHERE status = ? ORDER BY review_key DESC LIMIT ?",
            &st, e, "ti", which, (int64_t)limit);
    else
        rc = rq_prep(&c, "SELECT " REVIEW_COLS " FROM reg_review ORDER BY review_key DESC LIMIT ?", &st, e,
                     "i", (int64_t)limit);
    if (rc != ST_OK) return rc;
    review_row *v = NULL;
    size_t n = 0, cap = 0;
    int s;
    while ((s = c.drv->step(st, e)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            review_row *nv = realloc(v, cap * sizeof *nv);
            if (!nv) break;
            v = nv;
        }
        review_read(&c, st, &v[n++]);
    }
    c.drv->done(st);
    if (s < 0) rc = ST_IO;
    int64_t open = 0;
    int found;
    if (rc == ST_OK)
        rc = rq_int(&c, "SELECT COUNT(*) FROM reg_review WHERE status = 'open'", &open, &found, e, "");
    buf_printf(out, "{\"open\":%lld,\"items\":[", (long long)open);
    for (size_t i = 0; i < n; i++) {
        if (rc == ST_OK) {
            if (i) buf_putc(out, ',');
            rc = review_json(&c, &v[i], out, e);
        }
        review_free(&v[i]);
    }
    buf_puts(out, "]}");
    free(v);
    return rc;
}

static status review_get(rdb *c, int64_t id, review_row *x, err *e) {
    db_stmt *st = NULL;
    status rc = rq_prep(c, "SELECT " REVIEW_COLS " FROM reg_review WHERE review_key = ?", &st, e, "i", id);
    if (rc != ST_OK) return rc;
    int s = c->drv->step(st, e);
    if (s == 1) review_read(c, st, x);
    c->drv->done(st);
    if (s != 1)
        return s < 0 ? ST_IO
                     : err_set(e, ST_NOT_FOUND, "not-found", NULL, "no review item %lld", (long long)id);
    return ST_OK;
}

static status src_get(rdb *c, int64_t key, reg_src *out, err *e) {
    db_stmt *st = NULL;
    status rc = rq_prep(c, "SELECT " REG_SRC_COLS " FROM reg_source WHERE src_key = ?", &st, e, "i", key);
    if (rc != ST_OK) return rc;
    int s = c->drv->step(st, e);
    if (s == 1) reg_src_read(c, st, out);
    c->drv->done(st);
    if (s != 1)
        return s < 0 ? ST_IO
                     : err_set(e, ST_NOT_FOUND, "not-found", NULL, "no source record %lld", (long long)key);
    return ST_OK;
}

static const char *raw_field(const reg_raw *r, fs_field f) {
    switch (f) {
    case FS_NHS: return r->nhs;
    case FS_FAMILY: return r->family;
    case FS_GIVEN: return r->given;
    case FS_DOB: return r->birth_date;
    case FS_SEX: return r->gender;
    case FS_POSTCODE: return r->postcode;
    case FS_ADDRESS: return r->line;
    case FS_LOCAL_ID: return r->local;
    default: return "";
    }
}

status registry_review_show(registry *r, int64_t id, buf *out, err *e) {
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    if (rc != ST_OK) return rc;
    review_row x = {0};
    if ((rc = review_get(&c, id, &x, e)) != ST_OK) return rc;
    reg_src a, b;
    if ((rc = src_get(&c, x.src, &a, e)) != ST_OK || (rc = src_get(&c, x.other, &b, e)) != ST_OK) goto out;
    /* the comparison with the model in use now, field by field */
    fs_model m;
    int64_t ver = 0;
    if ((rc = reg_model_current(r, &c, &m, &ver, e)) != ST_OK) goto out;
    reg_person pa, pb;
    reg_raw_to_person(&a.raw, &pa);
    reg_raw_to_person(&b.raw, &pb);
    reg_tf_ctx tf;
    if ((rc = reg_tf_lookup(&c, &m, &pa, 0, &tf, e)) != ST_OK) goto out;
    fs_vector v;
    double contrib[FS_NFIELDS];
    fs_compare(&pa, &pb, &v);
    fs_tf tfc = {reg_tf_freq, &tf};
    double w = fs_weight(&m, &v, &pa, &pb, &tfc, contrib);
    buf_puts(out, "{\"item\":");
    if ((rc = review_json(&c, &x, out, e)) != ST_OK) goto out;
    buf_printf(out, ",\"now\":{\"model\":%lld,\"weight\":%.4f,\"probability\":%.6g,\"decision\":\"%s\"",
               (long long)ver, w, fs_probability(&m, w),
               reg_trusted_nhs(&pa, &pb, &v)   ? "link (trusted NHS number)"
               : fs_decide(&m, w) == FS_LINK   ? "link"
               : fs_decide(&m, w) == FS_REVIEW ? "review"
                                               : "new person");
    buf_puts(out, "},\"fields\":[");
    for (int f = 0; f < FS_NFIELDS; f++) {
        buf_puts(out, f ? ",{\"field\":" : "{\"field\":");
        json_str(out, fs_field_name((fs_field)f));
        buf_puts(out, ",\"record\":");
        json_str(out, raw_field(&a.raw, (fs_field)f));
        buf_puts(out, ",\"candidate\":");
        json_str(out, raw_field(&b.raw, (fs_field)f));
        buf_puts(out, ",\"level\":");
        json_str(out, fs_level_name((fs_field)f, v.level[f]));
        buf_printf(out, ",\"weight\":%.4f}", contrib[f]);
    }
    buf_puts(out, "],\"evidence_at_decision\":");
    buf_puts(out, x.evidence ? x.evidence : "null");
    buf_putc(out, '}');
out:
    review_free(&x);
    return rc;
}

typedef struct decide_args {
    int64_t id;
    int accept;
    const char *who, *note;
} decide_args;

static status do_decide(registry *r, rdb *c, void *arg, err *e) {
    decide_args *a = arg;
    review_row x = {0};
    status rc = review_get(c, a->id, &x, e);
    if (rc != ST_OK) return rc;
    int64_t now = reg_now_usec(), pa = 0, pb = 0, event = 0;
    int found = 0;
    if (strcmp(x.status, "open") != 0) {
        rc = err_set(e, ST_CONFLICT, "conflict", NULL, "review item %lld is %s, not open", (long long)a->id,
                     x.status);
        goto out;
    }
    rc = rq_int(c, "SELECT COALESCE(person_key, 0) FROM reg_source WHERE src_key = ?", &pa, &found, e, "i",
                x.src);
    if (rc == ST_OK)
        rc = rq_int(c, "SELECT COALESCE(person_key, 0) FROM reg_source WHERE src_key = ?", &pb, &found, e,
                    "i", x.other);
    if (rc != ST_OK) goto out;
    if (!pa || !pb) {
        rc = err_set(e, ST_CONFLICT, "conflict", NULL, "a record of review item %lld has been deleted",
                     (long long)a->id);
        goto out;
    }
    if ((rc = rq_exec(c,
                      "UPDATE reg_review SET status = ?, decided_by = ?, decided_at = ?, note = ? WHERE "
                      "review_key = ?",
                      e, "ttiti", a->accept ? "accepted" : "rejected", a->who, now, a->note, a->id)) != ST_OK)
        goto out;
    if (a->accept) {
        if (pa != pb) {
            /* the record's person joins the candidate's */
            char reason[64];
            snprintf(reason, sizeof reason, "review %lld accepted", (long long)a->id);
            rc = reg_merge_persons(c, pb, pa, a->who, "accept", reason, a->id, &event, e);
        } else {
            rc = reg_event_add(c, a->who, "accept", pa, pb, x.src, a->id, NULL, NULL, &event, e);
        }
        if (rc == ST_OK)
            rc = rq_exec(c,
                         "INSERT INTO reg_constraint (src_a, src_b, kind, origin, event_key, active, "
                         "created, created_by)"
                         " VALUES (?, ?, 'same', 'review', ?, 1, ?, ?)",
                         e, "iiiit", x.src, x.other, event, now, a->who);
    } else {
        rc = reg_event_add(c, a->who, "reject", pa, pb, x.src, a->id, NULL, NULL, &event, e);
        if (rc == ST_OK)
            rc = rq_exec(c,
                         "INSERT INTO reg_constraint (src_a, src_b, kind, origin, event_key, active, "
                         "created, created_by)"
                         " VALUES (?, ?, 'apart', 'review', ?, 1, ?, ?)",
                         e, "iiiit", x.src, x.other, event, now, a->who);
        if (rc == ST_OK && pa == pb) {
            /* together now (e.g. linked through a third record): the record leaves */
            int64_t np = 0;
            char pid[72];
            rc = reg_person_new(c, &np, pid, e);
            if (rc == ST_OK)
                rc = rq_exec(c,
                             "UPDATE reg_source SET person_key = ?, decision = 'manual', decided_by = ?, "
                             "decided_at = ?"
                             " WHERE src_key = ?",
                             e, "itii", np, a->who, now, x.src);
            if (rc == ST_OK) rc = reg_person_refresh(c, np, 0, e);
            if (rc == ST_OK) rc = reg_person_refresh(c, pa, 0, e);
        }
    }
out:
    review_free(&x);
    return rc;
}

status registry_review_decide(registry *r, int64_t id, int accept, const char *who, const char *note,
                              buf *out, err *e) {
    decide_args a = {id, accept, who && *who ? who : "unknown", note};
    status rc = in_txn(r, do_decide, &a, e);
    if (rc == ST_OK && out) {
        rdb c;
        review_row x = {0};
        rc = rdb_read(&c, r->s, e);
        if (rc == ST_OK) rc = review_get(&c, id, &x, e);
        if (rc == ST_OK) rc = review_json(&c, &x, out, e);
        review_free(&x);
    }
    return rc;
}

/* ---- history, persons, dump --------------------------------------------------- */

static status person_ref(rdb *c, int64_t key, buf *b, err *e) {
    if (!key) {
        buf_puts(b, "null");
        return ST_OK;
    }
    char id[72];
    status rc = reg_person_id(c, key, id, e);
    if (rc != ST_OK) return rc;
    buf_puts(b, "\"Person/");
    buf_json_escape(b, id, strlen(id));
    buf_putc(b, '"');
    return ST_OK;
}

status registry_history(registry *r, const char *person, int limit, buf *out, err *e) {
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    if (rc != ST_OK) return rc;
    int64_t pk = 0;
    if (person && *person) {
        /* a retired person has history too */
        const char *id = strncmp(person, "Person/", 7) == 0 ? person + 7 : person;
        int found = 0;
        rc = rq_int(&c, "SELECT person_key FROM reg_person WHERE person_id = ?", &pk, &found, e, "t", id);
        if (rc == ST_OK && !found) rc = reg_person_resolve(&c, person, &pk, e);
        if (rc != ST_OK) return rc;
    }
    if (limit <= 0) limit = 100;
    db_stmt *st = NULL;
    if (pk)
        rc = rq_prep(
            &c,
            "SELECT event_key, at, who, action, COALESCE(person_key, 0), COALESCE(other_person, 0),"
            " COALESCE(src_key, 0), COALESCE(review_key, 0), detail, COALESCE(undone_by, 0) FROM reg_event"
            " WHERE person_key = ? OR other_person = ? ORDER BY event_key DESC LIMIT ?",
            &st, e, "iii", pk, pk, (int64_t)limit);
    else
        rc = rq_prep(
            &c,
            "SELECT event_key, at, who, action, COALESCE(person_key, 0), COALESCE(other_person, 0),"
            " COALESCE(src_key, 0), COALESCE(review_key, 0), detail, COALESCE(undone_by, 0) FROM reg_event"
            " ORDER BY event_key DESC LIMIT ?",
            &st, e, "i", (int64_t)limit);
    if (rc != ST_OK) return rc;
    typedef struct {
        int64_t key, at, person, other, src, review, undone;
        char who[128], action[32];
        char *detail;
    } evrow;
    evrow *v = NULL;
    size_t n = 0, cap = 0;
    int s;
    while ((s = c.drv->step(st, e)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            evrow *nv = realloc(v, cap * sizeof *nv);
            if (!nv) break;
            v = nv;
        }
        evrow *x = &v[n++];
        x->key = c.drv->col_int(st, 0);
        x->at = c.drv->col_int(st, 1);
        rq_col_copy(&c, st, 2, x->who, sizeof x->who);
        rq_col_copy(&c, st, 3, x->action, sizeof x->action);
        x->person = c.drv->col_int(st, 4);
        x->other = c.drv->col_int(st, 5);
        x->src = c.drv->col_int(st, 6);
        x->review = c.drv->col_int(st, 7);
        const char *d = c.drv->col_text(st, 8, NULL);
        x->detail = d ? strdup(d) : NULL;
        x->undone = c.drv->col_int(st, 9);
    }
    c.drv->done(st);
    if (s < 0) rc = ST_IO;
    buf_puts(out, "{\"events\":[");
    for (size_t i = 0; i < n; i++) {
        evrow *x = &v[i];
        if (rc == ST_OK) {
            buf_printf(out, "%s{\"id\":\"%lld\",\"at\":", i ? "," : "", (long long)x->key);
            json_time(out, x->at);
            buf_puts(out, ",\"who\":");
            json_str(out, x->who);
            buf_puts(out, ",\"action\":");
            json_str(out, x->action);
            buf_puts(out, ",\"person\":");
            rc = person_ref(&c, x->person, out, e);
            buf_puts(out, ",\"other\":");
            if (rc == ST_OK) rc = person_ref(&c, x->other, out, e);
            if (x->src) {
                buf_puts(out, ",\"record\":");
                if (rc == ST_OK) rc = src_refs(&c, x->src, out, e);
            }
            if (x->review) buf_printf(out, ",\"review\":\"%lld\"", (long long)x->review);
            buf_puts(out, ",\"detail\":");
            buf_puts(out, x->detail ? x->detail : "null");
            if (x->undone) buf_printf(out, ",\"undone_by\":\"%lld\"", (long long)x->undone);
            buf_putc(out, '}');
        }
        free(x->detail);
    }
    buf_puts(out, "]}");
    free(v);
    return rc;
}

status registry_person_show(registry *r, const char *person, buf *out, err *e) {
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    if (rc != ST_OK) return rc;
    int64_t pk = 0;
    if ((rc = reg_person_resolve(&c, person, &pk, e)) != ST_OK) return rc;
    buf_puts(out, "{\"person\":");
    if ((rc = person_ref(&c, pk, out, e)) != ST_OK) return rc;
    buf_puts(out, ",\"records\":[");
    db_stmt *st = NULL;
    rc = rq_prep(&c,
                 "SELECT patient_id, decision, weight, decided_by, decided_at, evidence FROM reg_source WHERE"
                 " person_key = ? ORDER BY src_key",
                 &st, e, "i", pk);
    if (rc != ST_OK) return rc;
    int s, first = 1;
    while ((s = c.drv->step(st, e)) == 1) {
        const char *ev = c.drv->col_text(st, 5, NULL);
        buf_puts(out, first ? "{\"patient\":\"Patient/" : ",{\"patient\":\"Patient/");
        const char *pid = c.drv->col_text(st, 0, NULL);
        buf_json_escape(out, pid, strlen(pid));
        buf_puts(out, "\",\"decision\":");
        json_str(out, c.drv->col_text(st, 1, NULL));
        buf_printf(out, ",\"weight\":%.4f,\"decided_by\":", c.drv->col_double(st, 2));
        json_str(out, c.drv->col_text(st, 3, NULL));
        buf_puts(out, ",\"decided_at\":");
        json_time(out, c.drv->col_int(st, 4));
        buf_puts(out, ",\"evidence\":");
        buf_puts(out, ev ? ev : "null");
        buf_putc(out, '}');
        first = 0;
    }
    c.drv->done(st);
    buf_puts(out, "]}");
    return s < 0 ? ST_IO : ST_OK;
}

status registry_dump(registry *r, buf *out, err *e) {
    rdb c;
    status rc = rdb_read(&c, r->s, e);
    if (rc != ST_OK) return rc;
    db_stmt *st = NULL;
    rc = rq_prep(&c,
                 "SELECT person_key, person_id, retired, COALESCE(merged_into, 0), golden_hash FROM "
                 "reg_person ORDER BY"
                 " person_key",
                 &st, e, "");
    if (rc != ST_OK) return rc;
    int s;
    while ((s = c.drv->step(st, e)) == 1)
        buf_printf(out, "person %lld %s retired=%lld into=%lld golden=%016llx\n",
                   (long long)c.drv->col_int(st, 0), c.drv->col_text(st, 1, NULL),
                   (long long)c.drv->col_int(st, 2), (long long)c.drv->col_int(st, 3),
                   (unsigned long long)c.drv->col_int(st, 4));
    c.drv->done(st);
    if (s < 0) return ST_IO;
    rc = rq_prep(
        &c,
        "SELECT src_key, patient_id, COALESCE(person_key, 0), decision, weight, COALESCE(evidence, ''),"
        " decided_by, decided_at FROM reg_source ORDER BY src_key",
        &st, e, "");
    if (rc != ST_OK) return rc;
    while ((s = c.drv->step(st, e)) == 1)
        buf_printf(out, "record %lld %s person=%lld %s %.17g %s %lld %s\n", (long long)c.drv->col_int(st, 0),
                   c.drv->col_text(st, 1, NULL), (long long)c.drv->col_int(st, 2),
                   c.drv->col_text(st, 3, NULL), c.drv->col_double(st, 4), c.drv->col_text(st, 6, NULL),
                   (long long)c.drv->col_int(st, 7), c.drv->col_text(st, 5, NULL));
    c.drv->done(st);
    return s < 0 ? ST_IO : ST_OK;
}
