/*
 * glass.c — break-glass: a user with no legitimate relationship opens a
 * person's record in an emergency by giving a reason. The grant (acc_glass)
 * is time-limited, counts in the store scope like a relationship (and over
 * a consent objection) until it expires, is written to the access log with
 * purpose ETREAT by the caller, and waits for a privacy officer's review.
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "../store/store_int.h"
#include "policy.h"

static int64_t now_usec(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

status acc_glass_open(store *s, const acc_principal *p, const char *patient_id, const char *reason, int minutes,
                      int64_t *expires_usec, int64_t *glass_key, err *e) {
    status rc = ST_OK;
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    if (!reason || strlen(reason) < 10)
        return err_set(e, ST_INVALID, "required", "reason",
                       "break-glass needs a reason of at least 10 characters, recorded in the access log");
    if (minutes <= 0 || minutes > 12 * 60) minutes = 60;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    int64_t pkey = 0;
    rc = store_patient_key(s, d, patient_id, 0, &pkey, e);
    if (rc != ST_OK) return rc;
    if (!pkey) return err_set(e, ST_NOT_FOUND, "not-found", NULL, "no record of patient %s", patient_id);
    int64_t now = now_usec();
    *expires_usec = now + (int64_t)minutes * 60 * 1000000;
    rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    static const char ins[] = "INSERT INTO acc_glass (user_key, user_name, pkey, patient_id, reason, granted, expires)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING glass_key";
    rc = s->drv->prepare(tx->d, ins, 1, &st, e);
    if (rc != ST_OK) goto out;
    s->drv->bind_int(st, 1, p->user_key);
    s->drv->bind_text(st, 2, p->user, -1);
    s->drv->bind_int(st, 3, pkey);
    s->drv->bind_text(st, 4, patient_id, -1);
    s->drv->bind_text(st, 5, reason, -1);
    s->drv->bind_int(st, 6, now);
    s->drv->bind_int(st, 7, *expires_usec);
    int r = s->drv->step(st, e);
    if (r == 1 && glass_key) *glass_key = s->drv->col_int(st, 0);
    while (r == 1) r = s->drv->step(st, e);
    s->drv->done(st);
    st = NULL;
    if (r < 0) {
        rc = ST_IO;
        goto out;
    }
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    return rc;
}

status acc_glass_list(store *s, int unreviewed_only, json_t *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    static const char all[] = "SELECT glass_key, user_name, patient_id, reason, granted, expires, reviewed_by,"
                              " reviewed_at, review_note FROM acc_glass ORDER BY glass_key DESC LIMIT 1000";
    static const char open[] = "SELECT glass_key, user_name, patient_id, reason, granted, expires, reviewed_by,"
                               " reviewed_at, review_note FROM acc_glass WHERE reviewed_at IS NULL"
                               " ORDER BY glass_key DESC LIMIT 1000";
    db_stmt *st = NULL;
    status rc = s->drv->prepare(d, unreviewed_only ? open : all, 1, &st, e);
    if (rc != ST_OK) return rc;
    int r;
    while ((r = s->drv->step(st, e)) == 1) {
        const char *by = s->drv->col_text(st, 6, NULL), *note = s->drv->col_text(st, 8, NULL);
        json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:I, s:I}", "id", (json_int_t)s->drv->col_int(st, 0), "user",
                              s->drv->col_text(st, 1, NULL), "patient", s->drv->col_text(st, 2, NULL), "reason",
                              s->drv->col_text(st, 3, NULL), "granted_usec", (json_int_t)s->drv->col_int(st, 4),
                              "expires_usec", (json_int_t)s->drv->col_int(st, 5));
        if (!o) continue;
        json_object_set_new(o, "reviewed", json_boolean(by != NULL));
        if (by) {
            json_object_set_new(o, "reviewed_by", json_string(by));
            json_object_set_new(o, "reviewed_at_usec", json_integer(s->drv->col_int(st, 7)));
            if (note) json_object_set_new(o, "review_note", json_string(note));
        }
        json_array_append_new(out, o);
    }
    s->drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

status acc_glass_review(store *s, int64_t glass_key, const char *reviewer, const char *note, err *e) {
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    static const char upd[] = "UPDATE acc_glass SET reviewed_by = ?, reviewed_at = ?, review_note = ?"
                              " WHERE glass_key = ? AND reviewed_at IS NULL RETURNING glass_key";
    rc = s->drv->prepare(tx->d, upd, 1, &st, e);
    if (rc != ST_OK) goto out;
    s->drv->bind_text(st, 1, reviewer, -1);
    s->drv->bind_int(st, 2, now_usec());
    s->drv->bind_text(st, 3, note ? note : "", -1);
    s->drv->bind_int(st, 4, glass_key);
    int r = s->drv->step(st, e), found = r == 1;
    while (r == 1) r = s->drv->step(st, e);
    s->drv->done(st);
    if (r < 0) {
        rc = ST_IO;
        goto out;
    }
    if (!found) {
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "no unreviewed break-glass grant %lld",
                     (long long)glass_key);
        goto out;
    }
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    return rc;
}
