/*
 * store_message.c — the ingest_message table: every HL7 message and file
 * record ingest receives, kept as received, with what became of it.
 *
 * Invariants:
 *  - A message is inserted in the same transaction as the resources it
 *    produced (status 'stored', with the ACK that will be sent), or as a
 *    quarantined message (status 'quarantined', reason, location) — in
 *    both cases before any acknowledgement leaves the server.
 *  - (sender, control_id) is unique among stored messages: a duplicate
 *    delivery finds the earlier ACK and stores nothing.
 *  - Status moves only quarantined -> replayed | discarded, checked in the
 *    UPDATE itself so two operators cannot both act on one message.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

status store_message_delivered(store_txn *tx, const char *sender, const char *control_id, buf *ack, int *found,
                               err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sql[] =
        "SELECT ack FROM ingest_message WHERE sender = ? AND control_id = ? AND status = 'stored'";
    db_stmt *st = NULL;
    *found = 0;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_text(st, 1, sender, -1);
    drv->bind_text(st, 2, control_id, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        size_t len;
        const char *a = drv->col_text(st, 0, &len);
        if (a) buf_append(ack, a, len);
        *found = 1;
    }
    drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

status store_message_insert(store_txn *tx, const store_message *m, int64_t *key, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sql[] =
        "INSERT INTO ingest_message (pkey, received, channel, source, sender, control_id, message_type, status,"
        " ack, reason, location, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING msg_key";
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, m->pkey);
    drv->bind_int(st, 2, m->received_usec);
    drv->bind_text(st, 3, m->channel ? m->channel : "", -1);
    drv->bind_text(st, 4, m->source ? m->source : "", -1);
    drv->bind_text(st, 5, m->sender ? m->sender : "", -1);
    drv->bind_text(st, 6, m->control_id ? m->control_id : "", -1);
    drv->bind_text(st, 7, m->message_type ? m->message_type : "", -1);
    drv->bind_text(st, 8, m->status, -1);
    drv->bind_text(st, 9, m->ack, -1);
    drv->bind_text(st, 10, m->reason, -1);
    drv->bind_text(st, 11, m->location, -1);
    drv->bind_text(st, 12, m->body ? m->body : "", m->body ? (int)m->body_len : 0);
    int r = drv->step(st, e);
    if (r == 1 && key) *key = drv->col_int(st, 0);
    if (r == 1)
        while (drv->step(st, e) == 1) {}
    drv->done(st);
    return r < 0 ? (e ? e->code : ST_IO) : ST_OK;
}

void store_message_list_free(store_message_list *l) {
    free(l->v);
    arena_free(&l->a);
    memset(l, 0, sizeof *l);
}

static const char *col_dup(store_message_list *l, const db_driver *drv, db_stmt *st, int col, size_t *len) {
    size_t n;
    const char *t = drv->col_text(st, col, &n);
    if (len) *len = t ? n : 0;
    return t ? arena_strndup(&l->a, t, n) : NULL;
}

static status read_messages(store *s, db *d, db_stmt *st, int with_body, store_message_list *out, err *e) {
    const db_driver *drv = s->drv;
    size_t cap = 0;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            store_message *v = realloc(out->v, cap * sizeof *v);
            if (!v) abort();
            out->v = v;
        }
        store_message *m = &out->v[out->n++];
        memset(m, 0, sizeof *m);
        m->key = drv->col_int(st, 0);
        m->pkey = drv->col_int(st, 1);
        m->received_usec = drv->col_int(st, 2);
        m->channel = col_dup(out, drv, st, 3, NULL);
        m->source = col_dup(out, drv, st, 4, NULL);
        m->sender = col_dup(out, drv, st, 5, NULL);
        m->control_id = col_dup(out, drv, st, 6, NULL);
        m->message_type = col_dup(out, drv, st, 7, NULL);
        m->status = col_dup(out, drv, st, 8, NULL);
        m->ack = col_dup(out, drv, st, 9, NULL);
        m->reason = col_dup(out, drv, st, 10, NULL);
        m->location = col_dup(out, drv, st, 11, NULL);
        if (with_body) m->body = col_dup(out, drv, st, 12, &m->body_len);
    }
    (void)d;
    return r < 0 ? ST_IO : ST_OK;
}

#define MESSAGE_COLUMNS                                                                                             \
    "msg_key, pkey, received, channel, source, sender, control_id, message_type, status, ack, reason, location, body"

status store_message_list_by(store *s, const char *status_filter, int limit, int offset, int with_body,
                             store_message_list *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    static const char by_status[] =
        "SELECT " MESSAGE_COLUMNS " FROM ingest_message WHERE status = ? ORDER BY msg_key DESC LIMIT ? OFFSET ?";
    static const char all[] = "SELECT " MESSAGE_COLUMNS " FROM ingest_message ORDER BY msg_key DESC LIMIT ? OFFSET ?";
    db_stmt *st = NULL;
    status rc = drv->prepare(d, status_filter ? by_status : all, 1, &st, e);
    if (rc != ST_OK) return rc;
    int i = 1;
    if (status_filter) drv->bind_text(st, i++, status_filter, -1);
    drv->bind_int(st, i++, limit);
    drv->bind_int(st, i, offset);
    rc = read_messages(s, d, st, with_body, out, e);
    drv->done(st);
    return rc;
}

status store_message_get(store *s, int64_t key, store_message_list *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    static const char sql[] = "SELECT " MESSAGE_COLUMNS " FROM ingest_message WHERE msg_key = ?";
    db_stmt *st = NULL;
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, key);
    rc = read_messages(s, d, st, 1, out, e);
    drv->done(st);
    if (rc == ST_OK && out->n == 0)
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "no ingest message %lld", (long long)key);
    return rc;
}

status store_message_set_status(store *s, int64_t key, const char *from, const char *to, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    const db_driver *drv = s->drv;
    static const char sql[] = "UPDATE ingest_message SET status = ? WHERE msg_key = ? AND status = ? RETURNING msg_key";
    db_stmt *st = NULL;
    rc = drv->prepare(tx->d, sql, 1, &st, e);
    int r = 0;
    if (rc == ST_OK) {
        drv->bind_text(st, 1, to, -1);
        drv->bind_int(st, 2, key);
        drv->bind_text(st, 3, from, -1);
        r = drv->step(st, e);
        if (r == 1)
            while (drv->step(st, e) == 1) {}
        drv->done(st);
        if (r < 0) rc = ST_IO;
        else if (r == 0)
            rc = err_set(e, ST_CONFLICT, "conflict", NULL, "message %lld is not %s", (long long)key, from);
    }
    if (rc != ST_OK) {
        store_rollback(tx);
        return rc;
    }
    return store_commit(tx, e);
}
