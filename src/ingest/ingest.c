/*
 * ingest.c — group-commit writer for HL7 v2 messages (see ingest.h).
 *
 * Flow: a connection thread calls ingest_hl7, which queues a job and waits.
 * The writer thread takes every queued job (up to max_batch), opens one
 * store transaction, and for each job, inside a savepoint:
 *   1. parses and maps the message (hl7_process) — here, on the writer
 *      thread, because decimal texts are remembered per thread until the
 *      resources are serialised (fhir/json.h);
 *   2. answers a duplicate delivery (same sender and MSH-10 already stored)
 *      with the ACK sent the first time, storing nothing;
 *   3. stores the message (ingest_message, status 'stored', with its ACK)
 *      and applies the resources it maps to (upsert / create-if-absent /
 *      status change; an A40 merge links the two Patient records), each
 *      resource's meta.source naming the message;
 *   4. or, when the message cannot be mapped or applied, rolls back to the
 *      savepoint and stores it as 'quarantined' with the reason and where.
 * Then one COMMIT (one fsync for the whole batch), and only then are the
 * waiting threads woken with their ACKs. If the commit fails, every job of
 * the batch is answered AR "not stored, resend" — nothing is acknowledged
 * that is not durable.
 *
 * Invariant: a job's `ack` is written only by the writer, and read by its
 * submitter only after `done` is set under the queue lock.
 */
#include "ingest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "../fhir/json.h"
#include "hl7.h"
#include "hl7_map.h"

typedef enum job_kind { JOB_HL7, JOB_RAW } job_kind;

typedef struct job {
    job_kind kind;
    const char *bytes;
    size_t len;
    const char *source;
    const char *reason; /* JOB_RAW */
    buf *ack;           /* JOB_HL7 */
    int done;
    struct job *next;
} job;

struct ingest {
    store *s;
    int max_batch;
    pthread_t writer;
    pthread_mutex_t lock;
    pthread_cond_t work;  /* jobs queued, or stopping */
    pthread_cond_t done;  /* some job finished */
    job *head, *tail;
    int stopping;
    ingest_stats stats;
};

static void hl7_sender(hl7_msg *m, char *out, size_t n) {
    const hl7_header *h = m ? hl7_msg_header(m) : NULL;
    if (!h) {
        out[0] = 0;
        return;
    }
    snprintf(out, n, "%.*s^%.*s", (int)h->sending_app.n, h->sending_app.p, (int)h->sending_facility.n,
             h->sending_facility.p);
}

static void set_meta_source(json_t *res, const char *source) {
    json_t *meta = json_object_get(res, "meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(res, "meta", meta);
    }
    json_object_set_new(meta, "source", json_string(source));
}

/* Apply one mapped resource inside the transaction. */
static status apply_resource(store_txn *tx, const hl7_resource *r, const char *source, err *e) {
    set_meta_source(r->json, source);
    switch (r->apply) {
    case HL7_APPLY_UPSERT: return store_put(tx, r->json, r->id, 0, 0, NULL, NULL, NULL, e);
    case HL7_APPLY_CREATE: {
        status rc = store_put(tx, r->json, r->id, 0, 1, NULL, NULL, NULL, e);
        if (rc == ST_CONFLICT) { /* already there: a stub is not needed */
            err_clear(e);
            rc = ST_OK;
        }
        return rc;
    }
    case HL7_APPLY_STATUS: {
        buf body = {0};
        store_meta m;
        status rc = store_txn_read(tx, r->type, r->id, &body, &m, e);
        if (rc == ST_OK) {
            json_error_t je;
            json_t *cur = fhir_json_load(body.p, body.len, &je);
            if (!cur) {
                rc = err_set(e, ST_INTERNAL, "exception", NULL, "stored %s/%s is not JSON", r->type, r->id);
            } else {
                json_object_set_new(cur, "status", json_string(r->status));
                set_meta_source(cur, source);
                rc = store_put(tx, cur, r->id, 0, 0, NULL, NULL, NULL, e);
                json_decref(cur);
            }
        } else if (rc == ST_NOT_FOUND || rc == ST_GONE) {
            err_clear(e);
            json_object_set_new(r->json, "status", json_string(r->status));
            rc = store_put(tx, r->json, r->id, 0, 0, NULL, NULL, NULL, e);
        }
        buf_free(&body);
        return rc;
    }
    }
    return ST_OK;
}

/* ADT^A40: until the registry takes merges over, record them the FHIR way:
 * the retired record links to the surviving one (replaced-by) and is made
 * inactive; the surviving one links back (replaces). */
static status apply_merge(store_txn *tx, const hl7_merge *mg, const char *source, err *e) {
    const char *ids[2] = {mg->retired_id, mg->surviving_id};
    const char *types[2] = {"replaced-by", "replaces"};
    for (int i = 0; i < 2; i++) {
        if (!ids[i]) continue;
        buf body = {0};
        store_meta m;
        status rc = store_txn_read(tx, "Patient", ids[i], &body, &m, e);
        if (rc == ST_NOT_FOUND || rc == ST_GONE) {
            buf_free(&body);
            err_clear(e);
            continue;
        }
        if (rc != ST_OK) {
            buf_free(&body);
            return rc;
        }
        json_error_t je;
        json_t *p = fhir_json_load(body.p, body.len, &je);
        buf_free(&body);
        if (!p) return err_set(e, ST_INTERNAL, "exception", NULL, "stored Patient/%s is not JSON", ids[i]);
        json_t *links = json_object_get(p, "link");
        if (!json_is_array(links)) {
            links = json_array();
            json_object_set_new(p, "link", links);
        }
        char ref[128];
        snprintf(ref, sizeof ref, "Patient/%s", ids[1 - i] ? ids[1 - i] : "");
        json_array_append_new(links, json_pack("{s:{s:s},s:s}", "other", "reference", ref, "type", types[i]));
        if (i == 0) json_object_set_new(p, "active", json_false());
        set_meta_source(p, source);
        rc = ids[1 - i] ? store_put(tx, p, ids[i], 0, 0, NULL, NULL, NULL, e) : ST_OK;
        json_decref(p);
        if (rc != ST_OK) return rc;
    }
    return ST_OK;
}

static void build_ack(hl7_msg *m, hl7_ack_code code, const hl7_error *errs, size_t nerr, buf *out) {
    hl7_ack_build(m, code, errs, nerr, NULL, out);
}

static status quarantine(store_txn *tx, const store_message *base, const char *reason, const char *where,
                         const char *ack, err *e) {
    store_message q = *base;
    q.status = "quarantined";
    q.reason = reason;
    q.location = where;
    q.ack = ack;
    return store_message_insert(tx, &q, NULL, e);
}

/* One HL7 message inside the batch transaction. Fills j->ack. Returns
 * non-OK only when the transaction itself is no longer usable. */
static status process_hl7(ingest *g, store_txn *tx, job *j) {
    status rc = ST_OK;
    arena a = {0};
    hl7_result r;
    memset(&r, 0, sizeof r);
    err e;
    err_clear(&e);
    char sender[256];
    hl7_process(j->bytes, j->len, NULL, NULL, &a, &r);
    hl7_sender(r.msg, sender, sizeof sender);
    const hl7_header *h = r.msg ? hl7_msg_header(r.msg) : NULL;
    char *control = h ? hl7_str_dup(&a, h->control_id) : "";
    char mtype[32] = "";
    if (h) snprintf(mtype, sizeof mtype, "%.*s^%.*s", (int)h->type.n, h->type.p, (int)h->trigger.n, h->trigger.p);
    store_message base = {
        .received_usec = fhir_now_usec(),
        .channel = "mllp",
        .source = j->source,
        .sender = sender,
        .control_id = control,
        .message_type = mtype,
        .body = j->bytes,
        .body_len = j->len,
    };
    g->stats.messages++;
    rc = store_savepoint(tx, &e);
    if (rc != ST_OK) goto out;

    if (r.msg && *control) {
        int found = 0;
        rc = store_message_delivered(tx, sender, control, j->ack, &found, &e);
        if (rc != ST_OK) goto fail_tx;
        if (found) { /* duplicate delivery: the same answer, nothing stored */
            g->stats.duplicates++;
            rc = store_savepoint_release(tx, &e);
            goto out;
        }
    }
    if (r.ack != HL7_AA) {
        char where[96];
        hl7_error_where(&r.error, where, sizeof where);
        build_ack(r.msg, r.ack, &r.error, 1, j->ack);
        rc = quarantine(tx, &base, r.error.text, where, j->ack->p, &e);
        if (rc != ST_OK) goto fail_tx;
        g->stats.quarantined++;
        rc = store_savepoint_release(tx, &e);
        goto out;
    }
    /* the message's patient key, for the patient-scoped message table */
    for (size_t i = 0; i < r.mapped.nres; i++) {
        if (strcmp(r.mapped.res[i].type, "Patient") == 0) {
            rc = store_txn_patient_key(tx, r.mapped.res[i].id, &base.pkey, &e);
            break;
        }
    }
    build_ack(r.msg, HL7_AA, NULL, 0, j->ack);
    base.status = "stored";
    base.ack = j->ack->p;
    int64_t key = 0;
    if (rc == ST_OK) rc = store_message_insert(tx, &base, &key, &e);
    char source[64];
    snprintf(source, sizeof source, "urn:concord:ingest-message:%lld", (long long)key);
    for (size_t i = 0; rc == ST_OK && i < r.mapped.nres; i++) rc = apply_resource(tx, &r.mapped.res[i], source, &e);
    for (size_t i = 0; rc == ST_OK && i < r.mapped.nmerges; i++) rc = apply_merge(tx, &r.mapped.merges[i], source, &e);
    if (rc == ST_OK) {
        g->stats.stored++;
        rc = store_savepoint_release(tx, &e);
        goto out;
    }
    /* it mapped but could not be stored: keep it, tell the sender */
    store_savepoint_rollback(tx);
    {
        hl7_error he;
        hl7_fail(&he, rc, HL7_AE, HL7_ERR_INTERNAL, "", 0, -1, 0, 0, 0, 0, "not stored: %s", e.msg);
        buf_reset(j->ack);
        build_ack(r.msg, HL7_AE, &he, 1, j->ack);
        status qrc = store_savepoint(tx, &e);
        if (qrc == ST_OK) qrc = quarantine(tx, &base, he.text, e.where, j->ack->p, &e);
        if (qrc == ST_OK) qrc = store_savepoint_release(tx, &e);
        if (qrc == ST_OK) g->stats.quarantined++;
        rc = qrc;
    }
    goto out;
fail_tx:
    store_savepoint_rollback(tx);
out:
    if (rc != ST_OK) log_error("ingest: %s (message from %s)", e.msg, j->source ? j->source : "?");
    hl7_mapped_release(&r.mapped);
    arena_free(&a);
    return rc;
}

static status process_raw(ingest *g, store_txn *tx, job *j) {
    err e;
    store_message q = {
        .received_usec = fhir_now_usec(),
        .channel = "mllp",
        .source = j->source,
        .sender = "",
        .control_id = "",
        .message_type = "",
        .status = "quarantined",
        .reason = j->reason,
        .body = j->bytes,
        .body_len = j->len,
    };
    status rc = store_savepoint(tx, &e);
    if (rc == ST_OK) rc = store_message_insert(tx, &q, NULL, &e);
    if (rc == ST_OK) rc = store_savepoint_release(tx, &e);
    else store_savepoint_rollback(tx);
    if (rc == ST_OK) g->stats.quarantined++;
    return rc;
}

static void *writer_main(void *arg) {
    ingest *g = arg;
    log_set_request_id("ingest");
    for (;;) {
        pthread_mutex_lock(&g->lock);
        while (!g->head && !g->stopping) pthread_cond_wait(&g->work, &g->lock);
        if (!g->head && g->stopping) {
            pthread_mutex_unlock(&g->lock);
            break;
        }
        /* take up to max_batch jobs */
        job *batch = g->head, *last = g->head;
        int n = 1;
        while (last->next && n < g->max_batch) {
            last = last->next;
            n++;
        }
        g->head = last->next;
        if (!g->head) g->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&g->lock);

        store_txn *tx = NULL;
        err e;
        status rc = store_begin(g->s, &tx, &e);
        for (job *j = batch; rc == ST_OK && j; j = j->next) {
            switch (j->kind) {
            case JOB_HL7: rc = process_hl7(g, tx, j); break;
            case JOB_RAW: rc = process_raw(g, tx, j); break;
            }
        }
        if (rc == ST_OK) rc = store_commit(tx, &e);
        else if (tx) store_rollback(tx);
        fhir_json_release();
        if (rc == ST_OK) {
            g->stats.commits++;
        } else {
            g->stats.failed_commits++;
            log_error("ingest: batch of %d not stored: %s", n, e.msg);
            for (job *j = batch; j; j = j->next) {
                if (!j->ack) continue;
                buf_reset(j->ack);
                hl7_error he;
                hl7_fail(&he, ST_IO, HL7_AR, HL7_ERR_INTERNAL, "", 0, -1, 0, 0, 0, 0,
                         "not stored (storage failure); please resend");
                arena a = {0};
                hl7_msg *m = NULL;
                hl7_error pe;
                hl7_parse(j->bytes, j->len, NULL, &a, &m, &pe);
                build_ack(m, HL7_AR, &he, 1, j->ack);
                arena_free(&a);
            }
        }
        pthread_mutex_lock(&g->lock);
        for (job *j = batch; j;) {
            job *next = j->next;
            j->done = 1;
            j = next;
        }
        pthread_cond_broadcast(&g->done);
        pthread_mutex_unlock(&g->lock);
    }
    return NULL;
}

status ingest_start(store *s, int max_batch, ingest **out, err *e) {
    ingest *g = calloc(1, sizeof *g);
    if (!g) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    g->s = s;
    g->max_batch = max_batch > 0 ? max_batch : 256;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->work, NULL);
    pthread_cond_init(&g->done, NULL);
    if (pthread_create(&g->writer, NULL, writer_main, g) != 0) {
        free(g);
        return err_set(e, ST_IO, "exception", NULL, "cannot start the ingest writer thread");
    }
    *out = g;
    return ST_OK;
}

void ingest_stop(ingest *g) {
    if (!g) return;
    pthread_mutex_lock(&g->lock);
    g->stopping = 1;
    pthread_cond_signal(&g->work);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->writer, NULL);
    if (g->stats.messages)
        log_info("ingest: %lu messages (%lu stored, %lu duplicates, %lu quarantined) in %lu commits", g->stats.messages,
                 g->stats.stored, g->stats.duplicates, g->stats.quarantined, g->stats.commits);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->work);
    pthread_cond_destroy(&g->done);
    free(g);
}

void ingest_get_stats(ingest *g, ingest_stats *out) {
    pthread_mutex_lock(&g->lock);
    *out = g->stats;
    pthread_mutex_unlock(&g->lock);
}

static void submit_and_wait(ingest *g, job *j) {
    pthread_mutex_lock(&g->lock);
    if (g->tail) g->tail->next = j;
    else g->head = j;
    g->tail = j;
    pthread_cond_signal(&g->work);
    while (!j->done) pthread_cond_wait(&g->done, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

void ingest_hl7(ingest *g, const char *bytes, size_t len, const char *source, buf *ack) {
    job j = {.kind = JOB_HL7, .bytes = bytes, .len = len, .source = source, .ack = ack};
    submit_and_wait(g, &j);
}

void ingest_quarantine_raw(ingest *g, const char *bytes, size_t len, const char *source, const char *reason) {
    job j = {.kind = JOB_RAW, .bytes = bytes, .len = len, .source = source, .reason = reason};
    submit_and_wait(g, &j);
}

status ingest_replay(ingest *g, int64_t key, buf *ack, err *e) {
    store_message_list l = {0};
    status rc = store_message_get(g->s, key, &l, e);
    if (rc != ST_OK) goto out;
    store_message *m = &l.v[0];
    if (strcmp(m->status, "quarantined") != 0) {
        rc = err_set(e, ST_CONFLICT, "conflict", NULL, "message %lld is %s, not quarantined", (long long)key,
                     m->status);
        goto out;
    }
    /* claim it first, so two replays cannot both run */
    rc = store_message_set_status(g->s, key, "quarantined", "replayed", e);
    if (rc != ST_OK) goto out;
    char src[64];
    snprintf(src, sizeof src, "replay of message %lld", (long long)key);
    ingest_hl7(g, m->body, m->body_len, src, ack);
out:
    store_message_list_free(&l);
    return rc;
}
