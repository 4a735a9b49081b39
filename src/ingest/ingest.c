/*
 * ingest.c — group-commit writer for HL7 v2 messages (see ingest.h).
 *
 * Flow: a connection thread calls ingest_hl7, which first does all the
 * work that needs no database, on its own thread (so that it runs in
 * parallel with the writer and with other connections):
 *   - parses and maps the message (hl7_process: FHIR resources, validated,
 *     tagged with care setting and sending organisation);
 *   - refuses it (AR, quarantined) when its sender may send only as
 *     certain organisations and its sending facility, MSH-4.1, is not one
 *     of them (ingest_hl7_as: an MLLP peer, src/ingest/peers.h);
 *   - builds the acknowledgement it will get if all goes well (AA), or the
 *     AE/AR and the quarantine reason if it cannot be mapped;
 *   - serialises each resource once into its "content" (the resource
 *     without id and the volatile meta: versionId, lastUpdated, source),
 *     which the writer compares with what is stored;
 *   - detaches the decimal texts of the trees (fhir/json.h), since the
 *     writer, not this thread, serialises what it stores;
 * then queues the job and waits. The writer thread takes every queued job
 * (up to max_batch), opens one store transaction, and for each job:
 *   1. answers a duplicate delivery (same sender MSH-3^MSH-4 and MSH-10
 *      already stored — also earlier in the same batch) with the ACK sent
 *      the first time, storing nothing;
 *   2. stores the message (ingest_message, status 'stored', with its ACK)
 *      and applies the resources it maps to (upsert / create-if-absent /
 *      status change; an A40 merge links the two Patient records), each
 *      resource's meta.source naming the message. A resource whose content
 *      is what is already stored is not written again (a no-op update, as
 *      FHIR servers suppress them): most ADT messages repeat an unchanged
 *      PID, and rewriting a Patient rewrites a page in each of a dozen
 *      indexes; its meta.source keeps naming the message that made it;
 *   3. or, when the message cannot be mapped, stores it as 'quarantined'
 *      with the reason and where; when it mapped but cannot be applied, it
 *      is undone alone and quarantined the same way (see batch_mode: the
 *      batch is first run without savepoints, and again with one around
 *      each message only if a message fails to store).
 * Then one COMMIT (one fsync for the whole batch), and only then are the
 * waiting threads woken with their ACKs. If the commit fails, every job of
 * the batch is answered AR "not stored, resend" — nothing is acknowledged
 * that is not durable. While the writer commits, the connection threads
 * prepare the next batch.
 *
 * Invariants: a job belongs to its submitter until it is queued, then to
 * the writer until `done` is set under the queue lock, then to its
 * submitter again (which frees it: the mapped trees must outlive the
 * writer's fhir_json_release at the end of the batch, so their addresses
 * cannot be reused by trees whose decimal texts it still remembers).
 */
#include "ingest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    buf *ack;           /* JOB_HL7: the answer, filled by the writer */
    /* JOB_HL7: the organisations the sender may send as (NULL: any), and
     * whether this message was refused for naming another */
    const char *const *facilities;
    size_t nfacilities;
    int refused;
    /* JOB_HL7, prepared by the submitter before queueing */
    arena a;
    hl7_result r;
    char sender[256];
    char mtype[32];
    const char *control;
    buf prepared_ack;        /* AA, or the AE/AR of a message that cannot be mapped */
    char where[96];          /* where the mapping failed */
    const char **content;    /* per mapped resource: see resource_content */
    fhir_json_decimals *dec; /* the trees' decimal texts */
    int64_t received_usec;
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

/* ---- the content of a resource, for the no-op check -------------------- */

/* JSON text scanning over the compact text fhir_json_dump writes (spaces
 * are skipped anyway). Returns the end of the value starting at p, or NULL
 * if it is malformed. */
static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (!p) return NULL;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') p++;
    return p;
}

static int key_is(const char *k, size_t n, const char *lit) { return n == strlen(lit) && memcmp(k, lit, n) == 0; }

typedef void (*member_fn)(void *ctx, const char *key, size_t keylen, const char *member, size_t len);

/* Call fn for each member of the object at p ("key":value, key without its
 * quotes). Returns 0, or -1 if the text is not an object. */
static int each_member(const char *p, const char *end, member_fn fn, void *ctx) {
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') return 0;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"') return -1;
        const char *k = p, *ke = skip_string(p, end);
        if (!ke) return -1;
        const char *v = skip_ws(ke, end);
        if (v >= end || *v != ':') return -1;
        const char *ve = skip_value(v + 1, end);
        if (!ve) return -1;
        fn(ctx, k + 1, (size_t)(ke - k - 2), k, (size_t)(ve - k));
        p = skip_ws(ve, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        return p < end && *p == '}' ? 0 : -1;
    }
}

typedef struct content_ctx {
    buf *out;
    int meta_pass;
    const char *meta;
    size_t meta_len;
} content_ctx;

static void content_member(void *arg, const char *key, size_t keylen, const char *member, size_t len) {
    content_ctx *c = arg;
    if (c->meta_pass) { /* members of meta */
        if (key_is(key, keylen, "versionId") || key_is(key, keylen, "lastUpdated") || key_is(key, keylen, "source"))
            return;
    } else if (key_is(key, keylen, "meta")) {
        const char *v = memchr(member, ':', len); /* the key holds no ':' we need to care about: "meta" */
        c->meta = v + 1;
        c->meta_len = len - (size_t)(v + 1 - member);
        return;
    } else if (key_is(key, keylen, "resourceType") || key_is(key, keylen, "id")) {
        return;
    }
    buf_append(c->out, member, len);
    buf_putc(c->out, ',');
}

/* A resource's content: its members other than resourceType, id and meta,
 * then (after a separator) the members of meta other than versionId,
 * lastUpdated and source — each as written, in order. Two versions with
 * the same content differ only in what the store and ingest stamp on
 * them. Returns 0, or -1 if `json` is not an object. */
static int resource_content(const char *json, size_t n, buf *out) {
    content_ctx c = {.out = out};
    const char *end = json + n;
    if (each_member(json, end, content_member, &c) != 0) return -1;
    buf_putc(out, '\n');
    c.meta_pass = 1;
    if (c.meta && each_member(c.meta, c.meta + c.meta_len, content_member, &c) != 0) return -1;
    return 0;
}

/* ---- preparation, on the submitting thread ----------------------------- */

static void hl7_sender(hl7_msg *m, char *out, size_t n) {
    const hl7_header *h = m ? hl7_msg_header(m) : NULL;
    if (!h) {
        out[0] = 0;
        return;
    }
    snprintf(out, n, "%.*s^%.*s", (int)h->sending_app.n, h->sending_app.p, (int)h->sending_facility.n,
             h->sending_facility.p);
}

/* The content of each resource to be upserted, for the writer's no-op
 * check (NULL for the others: they are not compared). */
static void prepare_contents(job *j) {
    const hl7_mapped *mp = &j->r.mapped;
    j->content = arena_zalloc(&j->a, (mp->nres + 1) * sizeof *j->content);
    buf text = {0}, content = {0};
    for (size_t i = 0; i < mp->nres; i++) {
        if (mp->res[i].apply != HL7_APPLY_UPSERT) continue;
        buf_reset(&text);
        buf_reset(&content);
        fhir_json_dump(mp->res[i].json, &text);
        if (resource_content(text.p, text.len, &content) == 0)
            j->content[i] = arena_strndup(&j->a, content.p, content.len);
    }
    buf_free(&text);
    buf_free(&content);
}

/* The decimal texts of the mapped trees, to travel with the job (and only
 * theirs: numbers a failed mapping made and freed must not). */
static fhir_json_decimals *detach_decimals(const hl7_mapped *mp) {
    size_t n = mp->nres + 2 * mp->nmerges;
    json_t **roots = calloc(n + 1, sizeof *roots);
    if (!roots) abort();
    size_t k = 0;
    for (size_t i = 0; i < mp->nres; i++) roots[k++] = mp->res[i].json;
    for (size_t i = 0; i < mp->nmerges; i++) {
        roots[k++] = mp->merges[i].surviving;
        roots[k++] = mp->merges[i].retired;
    }
    fhir_json_decimals *d = fhir_json_detach(roots, k);
    free(roots);
    return d;
}

/* A sender that may send only as certain organisations (an MLLP peer,
 * src/ingest/peers.h): a message naming another sending facility in MSH-4.1
 * is refused, whatever else is right or wrong with it. A message whose MSH
 * could not be read is refused by the parser already. */
static void check_sending_facility(job *j) {
    hl7_result *r = &j->r;
    if (!j->facilities || !r->msg) return;
    hl7_str f = hl7_str_trim(hl7_get(r->msg, 0, 4, 1, 1, 0));
    for (size_t i = 0; i < j->nfacilities; i++)
        if (strlen(j->facilities[i]) == f.n && strncasecmp(j->facilities[i], f.p, f.n) == 0) return;
    char allowed[128] = "";
    size_t k = 0;
    for (size_t i = 0; i < j->nfacilities && k < sizeof allowed; i++) {
        int w = snprintf(allowed + k, sizeof allowed - k, "%s%s", i ? ", " : "", j->facilities[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
    int shown = f.n > 64 ? 64 : (int)f.n;
    if (f.n)
        hl7_fail(&r->error, ST_FORBIDDEN, HL7_AR, HL7_ERR_TABLE_VALUE, "MSH", 1, 0, 4, 1, 1, 0,
                 "sending facility %.*s is not allowed from this connection (it may send as %s)", shown, f.p,
                 j->nfacilities ? allowed : "no organisation");
    else
        hl7_fail(&r->error, ST_FORBIDDEN, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 1, 0, 4, 1, 1, 0,
                 "no sending facility (MSH-4.1): this connection may send only as %s",
                 j->nfacilities ? allowed : "no organisation");
    r->ack = HL7_AR;
    j->refused = 1;
    log_warn("ingest: message %s from %s refused: %s", j->control, j->source ? j->source : "?",
             r->error.text);
}

static void prepare_hl7(job *j) {
    hl7_result *r = &j->r;
    /* this thread's own decimal texts (a caller in the middle of a request
     * of its own) stay with it: only the message's trees' texts go along */
    fhir_json_decimals *own = fhir_json_detach(NULL, 0);
    hl7_process(j->bytes, j->len, NULL, NULL, &j->a, r);
    hl7_sender(r->msg, j->sender, sizeof j->sender);
    const hl7_header *h = r->msg ? hl7_msg_header(r->msg) : NULL;
    j->control = h ? hl7_str_dup(&j->a, h->control_id) : "";
    if (h) snprintf(j->mtype, sizeof j->mtype, "%.*s^%.*s", (int)h->type.n, h->type.p, (int)h->trigger.n, h->trigger.p);
    j->received_usec = fhir_now_usec();
    check_sending_facility(j);
    if (r->ack == HL7_AA) {
        hl7_ack_build(r->msg, HL7_AA, NULL, 0, NULL, &j->prepared_ack);
        prepare_contents(j);
    } else {
        hl7_error_where(&r->error, j->where, sizeof j->where);
        hl7_ack_build(r->msg, r->ack, &r->error, 1, NULL, &j->prepared_ack);
    }
    j->dec = detach_decimals(&r->mapped);
    fhir_json_attach(own);
    fhir_json_decimals_free(own);
}

static void job_free(job *j) {
    buf_free(&j->prepared_ack);
    hl7_mapped_release(&j->r.mapped);
    fhir_json_decimals_free(j->dec);
    arena_free(&j->a);
}

/* ---- the writer -------------------------------------------------------- */

/* What the writer keeps across jobs: scratch buffers. */
typedef struct writer_ctx {
    buf cur, content;
    ingest_stats stats; /* this batch's, added to the totals when it ends */
} writer_ctx;

static void set_meta_source(json_t *res, const char *source) {
    json_t *meta = json_object_get(res, "meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(res, "meta", meta);
    }
    json_object_set_new(meta, "source", json_string(source));
}

/* Is the stored version of r's resource the same as what r would store?
 * *same = 1 then. Not found or deleted: *same = 0. */
static status stored_same(writer_ctx *w, store_txn *tx, const hl7_resource *r, const char *content, int *same,
                          err *e) {
    *same = 0;
    if (!content) return ST_OK;
    buf_reset(&w->cur);
    store_meta m;
    status rc = store_txn_read(tx, r->type, r->id, &w->cur, &m, e);
    if (rc == ST_NOT_FOUND || rc == ST_GONE) {
        err_clear(e);
        return ST_OK;
    }
    if (rc != ST_OK) return rc;
    buf_reset(&w->content);
    if (resource_content(w->cur.p, w->cur.len, &w->content) == 0)
        *same = strlen(content) == w->content.len && memcmp(content, w->content.p, w->content.len) == 0;
    return ST_OK;
}

/* Apply one mapped resource inside the transaction. */
static status apply_resource(writer_ctx *w, store_txn *tx, const hl7_resource *r, const char *content,
                             const char *source, err *e) {
    switch (r->apply) {
    case HL7_APPLY_UPSERT: {
        int same = 0;
        status rc = stored_same(w, tx, r, content, &same, e);
        if (rc != ST_OK || same) return rc;
        set_meta_source(r->json, source);
        return store_put(tx, r->json, r->id, 0, 0, NULL, NULL, NULL, e);
    }
    case HL7_APPLY_CREATE: {
        set_meta_source(r->json, source);
        status rc = store_put(tx, r->json, r->id, 0, 1, NULL, NULL, NULL, e);
        if (rc == ST_CONFLICT) { /* already there: a stub is not needed */
            err_clear(e);
            rc = ST_OK;
        }
        return rc;
    }
    case HL7_APPLY_STATUS: {
        buf_reset(&w->cur);
        store_meta m;
        status rc = store_txn_read(tx, r->type, r->id, &w->cur, &m, e);
        if (rc == ST_OK) {
            json_error_t je;
            json_t *cur = fhir_json_load(w->cur.p, w->cur.len, &je);
            if (!cur) {
                rc = err_set(e, ST_INTERNAL, "exception", NULL, "stored %s/%s is not JSON", r->type, r->id);
            } else if (json_is_string(json_object_get(cur, "status")) &&
                       strcmp(json_string_value(json_object_get(cur, "status")), r->status) == 0) {
                json_decref(cur); /* already so */
            } else {
                json_object_set_new(cur, "status", json_string(r->status));
                /* the provenance of this change: the message's tags */
                json_t *tags = json_object_get(json_object_get(r->json, "meta"), "tag");
                set_meta_source(cur, source);
                if (tags) json_object_set(json_object_get(cur, "meta"), "tag", tags);
                rc = store_put(tx, cur, r->id, 0, 0, NULL, NULL, NULL, e);
                json_decref(cur);
            }
        } else if (rc == ST_NOT_FOUND || rc == ST_GONE) {
            err_clear(e);
            json_object_set_new(r->json, "status", json_string(r->status));
            set_meta_source(r->json, source);
            rc = store_put(tx, r->json, r->id, 0, 0, NULL, NULL, NULL, e);
        }
        return rc;
    }
    }
    return ST_OK;
}

/* ADT^A40: until the registry takes merges over, record them the FHIR way:
 * the retired record links to the surviving one (replaced-by) and is made
 * inactive; the surviving one links back (replaces). */
static status apply_merge(writer_ctx *w, store_txn *tx, const hl7_merge *mg, const char *source, err *e) {
    const char *ids[2] = {mg->retired_id, mg->surviving_id};
    const char *types[2] = {"replaced-by", "replaces"};
    for (int i = 0; i < 2; i++) {
        if (!ids[i]) continue;
        buf_reset(&w->cur);
        store_meta m;
        status rc = store_txn_read(tx, "Patient", ids[i], &w->cur, &m, e);
        if (rc == ST_NOT_FOUND || rc == ST_GONE) {
            err_clear(e);
            continue;
        }
        if (rc != ST_OK) return rc;
        json_error_t je;
        json_t *p = fhir_json_load(w->cur.p, w->cur.len, &je);
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

static status quarantine(store_txn *tx, const store_message *base, const char *reason, const char *where,
                         const char *ack, err *e) {
    store_message q = *base;
    q.status = "quarantined";
    q.reason = reason;
    q.location = where;
    q.ack = ack;
    return store_message_insert(tx, &q, NULL, e);
}

/* Savepoints around each message let one message be undone and the rest
 * of the batch kept, but they cost two statements per message and a copy
 * of every page a message touches. So a batch first runs without them
 * (optimistic); should a message then fail to store, the whole transaction
 * is rolled back and the batch runs again with them (careful), where that
 * message is undone and quarantined alone. */
typedef struct batch_mode {
    int careful; /* a savepoint around each message */
} batch_mode;

static status item_begin(const batch_mode *bm, store_txn *tx, err *e) {
    return bm->careful ? store_savepoint(tx, e) : ST_OK;
}
static status item_end(const batch_mode *bm, store_txn *tx, err *e) {
    return bm->careful ? store_savepoint_release(tx, e) : ST_OK;
}
static void item_undo(const batch_mode *bm, store_txn *tx) {
    if (bm->careful) store_savepoint_rollback(tx);
}

/* One HL7 message inside the batch transaction. Leaves the ACK to send in
 * j->ack. Returns non-OK when the transaction itself is no longer usable,
 * or (optimistic pass) with *redo set when the message could not be
 * stored. */
static status process_hl7(writer_ctx *w, const batch_mode *bm, store_txn *tx, job *j, int *redo) {
    status rc = ST_OK;
    hl7_result *r = &j->r;
    err e;
    err_clear(&e);
    store_message base = {
        .received_usec = j->received_usec,
        .channel = "mllp",
        .source = j->source,
        .sender = j->sender,
        .control_id = j->control,
        .message_type = j->mtype,
        .body = j->bytes,
        .body_len = j->len,
    };
    w->stats.messages++;
    fhir_json_attach(j->dec);
    /* the answer prepared for it (a pass before this one may have changed it) */
    buf_reset(j->ack);
    buf_append(j->ack, j->prepared_ack.p, j->prepared_ack.len);
    rc = item_begin(bm, tx, &e);
    if (rc != ST_OK) goto out;

    /* (a refused message is not a duplicate of the message its sender and
     * control id name: that one came from where it was allowed to) */
    if (r->msg && *j->control && !j->refused) {
        int found = 0;
        buf_reset(&w->cur);
        rc = store_message_delivered(tx, j->sender, j->control, &w->cur, &found, &e);
        if (rc != ST_OK) goto fail_tx;
        if (found) { /* duplicate delivery: the same answer, nothing stored */
            buf_reset(j->ack);
            buf_append(j->ack, w->cur.p, w->cur.len);
            w->stats.duplicates++;
            rc = item_end(bm, tx, &e);
            goto out;
        }
    }
    if (r->ack != HL7_AA) {
        rc = quarantine(tx, &base, r->error.text, j->where, j->ack->p, &e);
        if (rc != ST_OK) goto fail_tx;
        w->stats.quarantined++;
        rc = item_end(bm, tx, &e);
        goto out;
    }
    /* the message's patient key, for the patient-scoped message table */
    for (size_t i = 0; i < r->mapped.nres; i++) {
        if (strcmp(r->mapped.res[i].type, "Patient") == 0) {
            rc = store_txn_patient_key(tx, r->mapped.res[i].id, &base.pkey, &e);
            break;
        }
    }
    base.status = "stored";
    base.ack = j->ack->p;
    int64_t key = 0;
    if (rc == ST_OK) rc = store_message_insert(tx, &base, &key, &e);
    char source[64];
    snprintf(source, sizeof source, "urn:concord:ingest-message:%lld", (long long)key);
    for (size_t i = 0; rc == ST_OK && i < r->mapped.nres; i++)
        rc = apply_resource(w, tx, &r->mapped.res[i], j->content[i], source, &e);
    for (size_t i = 0; rc == ST_OK && i < r->mapped.nmerges; i++)
        rc = apply_merge(w, tx, &r->mapped.merges[i], source, &e);
    if (rc == ST_OK) {
        w->stats.stored++;
        rc = item_end(bm, tx, &e);
        goto out;
    }
    if (!bm->careful) { /* undo the batch, run it again with savepoints */
        *redo = 1;
        goto out;
    }
    /* it mapped but could not be stored: keep it, tell the sender */
    store_savepoint_rollback(tx);
    {
        hl7_error he;
        hl7_fail(&he, rc, HL7_AE, HL7_ERR_INTERNAL, "", 0, -1, 0, 0, 0, 0, "not stored: %s", e.msg);
        buf_reset(j->ack);
        hl7_ack_build(r->msg, HL7_AE, &he, 1, NULL, j->ack);
        status qrc = store_savepoint(tx, &e);
        if (qrc == ST_OK) qrc = quarantine(tx, &base, he.text, e.where, j->ack->p, &e);
        if (qrc == ST_OK) qrc = store_savepoint_release(tx, &e);
        if (qrc == ST_OK) w->stats.quarantined++;
        rc = qrc;
    }
    goto out;
fail_tx:
    item_undo(bm, tx);
out:
    if (rc != ST_OK && !*redo) log_error("ingest: %s (message from %s)", e.msg, j->source ? j->source : "?");
    return rc;
}

static status process_raw(writer_ctx *w, const batch_mode *bm, store_txn *tx, job *j) {
    err e;
    store_message q = {
        .received_usec = j->received_usec,
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
    status rc = item_begin(bm, tx, &e);
    if (rc == ST_OK) rc = store_message_insert(tx, &q, NULL, &e);
    if (rc == ST_OK) rc = item_end(bm, tx, &e);
    else item_undo(bm, tx);
    if (rc == ST_OK) w->stats.quarantined++;
    return rc;
}

/* The commit failed: nothing of the batch is stored, every sender must
 * resend. */
static void answer_retry(job *batch) {
    for (job *j = batch; j; j = j->next) {
        if (!j->ack) continue;
        buf_reset(j->ack);
        hl7_error he;
        hl7_fail(&he, ST_IO, HL7_AR, HL7_ERR_INTERNAL, "", 0, -1, 0, 0, 0, 0,
                 "not stored (storage failure); please resend");
        hl7_ack_build(j->r.msg, HL7_AR, &he, 1, NULL, j->ack);
    }
}

/* Store a batch in one transaction: optimistically, then carefully if
 * need be. Returns the commit's status. */
static status store_batch(ingest *g, writer_ctx *w, job *batch, int n, err *e) {
    batch_mode bm = {0};
    status rc;
    for (;;) {
        int redo = 0;
        memset(&w->stats, 0, sizeof w->stats);
        store_txn *tx = NULL;
        rc = store_begin(g->s, &tx, e);
        for (job *j = batch; rc == ST_OK && !redo && j; j = j->next) {
            switch (j->kind) {
            case JOB_HL7: rc = process_hl7(w, &bm, tx, j, &redo); break;
            case JOB_RAW: rc = process_raw(w, &bm, tx, j); break;
            }
        }
        if (redo) {
            store_rollback(tx);
            bm.careful = 1;
            continue;
        }
        if (rc == ST_OK) rc = store_commit(tx, e);
        else if (tx) store_rollback(tx);
        break;
    }
    if (rc != ST_OK) {
        log_error("ingest: batch of %d not stored: %s", n, e->msg);
        answer_retry(batch);
    }
    return rc;
}

static void *writer_main(void *arg) {
    ingest *g = arg;
    writer_ctx w = {0};
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

        err e;
        status rc = store_batch(g, &w, batch, n, &e);
        fhir_json_release();

        pthread_mutex_lock(&g->lock);
        g->stats.messages += w.stats.messages;
        if (rc == ST_OK) {
            g->stats.stored += w.stats.stored;
            g->stats.duplicates += w.stats.duplicates;
            g->stats.quarantined += w.stats.quarantined;
            g->stats.commits++;
        } else {
            g->stats.failed_commits++;
        }
        for (job *j = batch; j;) {
            job *next = j->next;
            j->done = 1;
            j = next;
        }
        pthread_cond_broadcast(&g->done);
        pthread_mutex_unlock(&g->lock);
    }
    buf_free(&w.cur);
    buf_free(&w.content);
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
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->work);
        pthread_cond_destroy(&g->done);
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

void ingest_hl7_as(ingest *g, const char *bytes, size_t len, const char *source,
                   const char *const *facilities, size_t nfacilities, buf *ack) {
    job j = {.kind = JOB_HL7,
             .bytes = bytes,
             .len = len,
             .source = source,
             .ack = ack,
             .facilities = facilities,
             .nfacilities = nfacilities};
    prepare_hl7(&j);
    submit_and_wait(g, &j);
    job_free(&j);
}

void ingest_hl7(ingest *g, const char *bytes, size_t len, const char *source, buf *ack) {
    ingest_hl7_as(g, bytes, len, source, NULL, 0, ack);
}

void ingest_quarantine_raw(ingest *g, const char *bytes, size_t len, const char *source, const char *reason) {
    job j = {.kind = JOB_RAW, .bytes = bytes, .len = len, .source = source, .reason = reason};
    j.received_usec = fhir_now_usec();
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
