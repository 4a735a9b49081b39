/*
 * service.c — risk stratification inside `concord serve`: the API routes
 * and the thread that drains the rescoring queue.
 *
 *   GET  /fhir/$risk-worklist?practice=ODS|mdg=ID|cohort=75plus|diabetes
 *                             [&tier=T][&no-care-plan=true][&not-reviewed-months=N]
 *                             [&_count=N][&_offset=N]
 *                                      ranked people with their explanations
 *   GET  /fhir/Patient/ID/$risk        one person's scores and factors
 *   POST /fhir/Patient/ID/$risk-rescore   rescore one person now
 *   GET  /fhir/$risk-events[?after=N&_count=N]   tier changes, oldest first
 *   GET  /fhir/$risk-status            model, last run, people waiting to be rescored
 *
 * The rescoring thread wakes when the facts hook marks someone (it calls
 * risk_service_kick before the writer commits; the thread's own write
 * transaction then waits for that commit on SQLite) and at least every
 * RESCORE_POLL_MS otherwise (on PostgreSQL a wake-up can come before the
 * commit is visible), and drains the queue in transactions of at most
 * RESCORE_BATCH people. It re-reads the active model when another has been
 * installed (`concord risk train` from another process).
 *
 * Results are the store's data and the API serves them as such; the
 * access-control layer (issue 6) decides who may call these routes.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../access/guard.h"
#include "../access/policy.h"
#include "../base/log.h"
#include "../store/store_int.h"
#include "risk_int.h"

#define RESCORE_POLL_MS 250
#define RESCORE_BATCH   200

struct risk_service {
    store *s;
    risk_codes *c;
    risk_model *m; /* under lock */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping, kicked;
    int64_t rescored;
    char last_error[320];
    risk_model *retired[16]; /* replaced models: a handler may still hold one */
    int nretired;
};

static pthread_mutex_t kick_lock = PTHREAD_MUTEX_INITIALIZER;
static risk_service *kick_target;

void risk_service_kick(void) {
    pthread_mutex_lock(&kick_lock);
    risk_service *svc = kick_target;
    if (svc) {
        pthread_mutex_lock(&svc->lock);
        svc->kicked = 1;
        pthread_cond_signal(&svc->wake);
        pthread_mutex_unlock(&svc->lock);
    }
    pthread_mutex_unlock(&kick_lock);
}

/* The active model, reloaded if another was installed since. */
static void refresh_model(risk_service *svc) {
    db *d;
    err e;
    char active[64] = "";
    if (!(d = store_db(svc->s, &e))) return;
    const db_driver *drv = svc->s->drv;
    db_stmt *st = NULL;
    static const char sql[] = "SELECT version FROM risk_model WHERE active = 1 ORDER BY created DESC LIMIT 1";
    if (drv->prepare(d, sql, 1, &st, &e) != ST_OK) return;
    if (drv->step(st, &e) == 1) snprintf(active, sizeof active, "%s", drv->col_text(st, 0, NULL));
    drv->done(st);
    pthread_mutex_lock(&svc->lock);
    int same = (svc->m && !strcmp(svc->m->version, active)) || (!svc->m && !active[0]);
    pthread_mutex_unlock(&svc->lock);
    if (same) return;
    risk_model *m = NULL;
    if (risk_model_load_active(svc->s, svc->c, &m, &e) != ST_OK) {
        log_warn("risk: cannot load the active model: %s", e.msg);
        return;
    }
    pthread_mutex_lock(&svc->lock);
    risk_model *old = svc->m;
    svc->m = m;
    pthread_mutex_unlock(&svc->lock);
    /* the old model may still be in use by a handler: models are small and
     * replaced rarely, so it is kept until the service stops */
    if (old) {
        log_info("risk: model %s replaced by %s", old->version, m->version);
        if (svc->nretired == 16) {
            risk_model_free(svc->retired[0]);
            memmove(svc->retired, svc->retired + 1, 15 * sizeof svc->retired[0]);
            svc->nretired--;
        }
        svc->retired[svc->nretired++] = old;
    }
}

static void *rescore_main(void *arg) {
    risk_service *svc = arg;
    int checks = 0;
    for (;;) {
        pthread_mutex_lock(&svc->lock);
        if (!svc->kicked && !svc->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += RESCORE_POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&svc->wake, &svc->lock, &ts);
        }
        int stop = svc->stopping;
        svc->kicked = 0;
        pthread_mutex_unlock(&svc->lock);
        if (stop) break;
        if (checks++ % 20 == 0 || !svc->m) refresh_model(svc);
        if (!svc->m) continue;
        for (;;) {
            int done = 0;
            err e;
            err_clear(&e);
            status rc = risk_rescore_dirty(svc->s, svc->c, svc->m, RESCORE_BATCH, &done, &e);
            if (rc != ST_OK) {
                if (rc != ST_NOT_FOUND && strcmp(svc->last_error, e.msg) != 0)
                    log_warn("risk: rescoring: %s", e.msg);
                snprintf(svc->last_error, sizeof svc->last_error, "%s", e.msg);
                break;
            }
            svc->last_error[0] = 0;
            pthread_mutex_lock(&svc->lock);
            svc->rescored += done;
            pthread_mutex_unlock(&svc->lock);
            if (done < RESCORE_BATCH) break;
        }
    }
    return NULL;
}

status risk_service_start(store *s, const char *data_dir, risk_service **out, err *e) {
    *out = NULL;
    risk_service *svc = calloc(1, sizeof *svc);
    if (!svc) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    svc->s = s;
    status rc = risk_codes_load(data_dir, &svc->c, e);
    if (rc != ST_OK) {
        free(svc);
        return rc;
    }
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->wake, NULL);
    refresh_model(svc);
    if (pthread_create(&svc->thread, NULL, rescore_main, svc) != 0) {
        risk_codes_free(svc->c);
        free(svc);
        return err_set(e, ST_IO, "exception", NULL, "cannot start the rescoring thread");
    }
    pthread_mutex_lock(&kick_lock);
    kick_target = svc;
    pthread_mutex_unlock(&kick_lock);
    *out = svc;
    return ST_OK;
}

void risk_service_stop(risk_service *svc) {
    if (!svc) return;
    pthread_mutex_lock(&kick_lock);
    if (kick_target == svc) kick_target = NULL;
    pthread_mutex_unlock(&kick_lock);
    pthread_mutex_lock(&svc->lock);
    svc->stopping = 1;
    pthread_cond_signal(&svc->wake);
    pthread_mutex_unlock(&svc->lock);
    pthread_join(svc->thread, NULL);
    risk_model_free(svc->m);
    for (int i = 0; i < svc->nretired; i++)
        risk_model_free(svc->retired[i]);
    risk_codes_free(svc->c);
    pthread_mutex_destroy(&svc->lock);
    pthread_cond_destroy(&svc->wake);
    free(svc);
}

/* ---- handlers --------------------------------------------------------------------------- */

static const char JSON_CT[] = "application/json; charset=utf-8";

static void send_json(rest_response *rs, int status, json_t *j) {
    char *t = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    rs->status = status;
    buf_puts(&rs->body, t ? t : "{}");
    free(t);
    rs->content_type = JSON_CT;
    json_decref(j);
}

static int bad_param(rest_response *rs, const char *name, const char *why) {
    err e;
    err_set(&e, ST_INVALID, "value", name, "%s: %s", name, why);
    rest_error(rs, &e);
    return 1;
}

static int int_param(const char *query, const char *name, int lo, int hi, int *out, rest_response *rs) {
    char v[32];
    if (!rest_query_param(query, name, v, sizeof v)) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        char why[80];
        snprintf(why, sizeof why, "must be a whole number from %d to %d", lo, hi);
        return bad_param(rs, name, why) ? -1 : -1;
    }
    *out = (int)x;
    return 0;
}

/* A worklist row explains its score by its top factors; a factor that
 * reveals a category the user may not see (a depression, a mental health
 * contact for a practice nurse) is left out of the row's factors and
 * explanation, as the records behind it are. The score itself stays: it is
 * a summary, not the record. */
static void withhold_factors_of(const risk_codes *c, unsigned denied, json_t *row) {
    json_t *factors = json_object_get(row, "factors");
    for (size_t k = json_array_size(factors); k-- > 0;) {
        const char *code = json_string_value(json_object_get(json_array_get(factors, k), "code"));
        if (code && (rk_factor_sensitivity(c, code) & denied)) json_array_remove(factors, k);
    }
    if (json_object_get(row, "explanation")) rk_set_explanation(row);
}

static void withhold_sensitive_factors(const risk_codes *c, unsigned denied, json_t *out) {
    if (!denied || !c) return;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(out, "rows"), i, row) withhold_factors_of(c, denied, row);
}

static void h_worklist(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    risk_service *svc = user;
    (void)id;
    char practice[32], mdg[64], cohort[32], tier[32], flag[16];
    risk_worklist_query q = {0};
    if (rest_query_param(rq->query, "practice", practice, sizeof practice)) q.practice = practice;
    if (rest_query_param(rq->query, "mdg", mdg, sizeof mdg)) q.mdg = mdg;
    if (rest_query_param(rq->query, "cohort", cohort, sizeof cohort)) q.cohort = cohort;
    if (rest_query_param(rq->query, "tier", tier, sizeof tier)) q.tier = tier;
    if (rest_query_param(rq->query, "no-care-plan", flag, sizeof flag)) {
        if (!strcmp(flag, "true") || !*flag)
            q.no_care_plan = 1;
        else if (strcmp(flag, "false") != 0) {
            bad_param(rs, "no-care-plan", "is true or false");
            return;
        }
    }
    if (int_param(rq->query, "not-reviewed-months", 1, 1200, &q.not_reviewed_months, rs) < 0) return;
    q.limit = 50;
    if (int_param(rq->query, "_count", 1, 10000, &q.limit, rs) < 0) return;
    if (int_param(rq->query, "_offset", 0, 100000000, &q.offset, rs) < 0) return;
    if (!q.practice && !q.mdg && !q.cohort && !q.tier) {
        bad_param(rs, "practice", "give practice=ODS, mdg=ID, cohort=75plus|diabetes or tier=T");
        return;
    }
    json_t *out = NULL;
    err e;
    acc_scope sc;
    if (rq->who) {
        if (acc_scope_for(svc->s, rq->who, &sc, &e) != ST_OK) {
            rest_error(rs, &e);
            return;
        }
        q.scope = &sc.sc;
    }
    if (risk_worklist(svc->s, &q, &out, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    if (q.scope) withhold_sensitive_factors(svc->c, q.scope->sens_denied, out);
    /* each person listed, in their own access log */
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(out, "rows"), i, row) {
        int64_t pkey = 0;
        const char *pid = json_string_value(json_object_get(row, "patient"));
        if (pid && store_patient_key_of(svc->s, pid, &pkey, &e) == ST_OK) rest_touch(rs, pkey);
    }
    send_json(rs, 200, out);
}

/* A person's risk is part of their record: the same check as reading it. */
static int patient_visible(store *s, const rest_request *rq, rest_response *rs, const char *id) {
    if (!rq->who) return 1;
    store_meta m;
    err e;
    status rc = store_read(s, "Patient", id ? id : "", 0, NULL, &m, &e);
    if (rc == ST_OK || rc == ST_GONE) rc = guard_record(s, rq->who, &m, NULL, &e);
    if (rc == ST_NOT_FOUND) return 1; /* the handler answers */
    if (rc != ST_OK) {
        rest_error(rs, &e);
        return 0;
    }
    rest_touch(rs, m.pkey); /* in the patient's own access log */
    return 1;
}

static void h_patient(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    risk_service *svc = user;
    json_t *out = NULL;
    err e;
    if (!patient_visible(svc->s, rq, rs, id)) return;
    if (risk_patient_result(svc->s, id ? id : "", &out, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    acc_scope sc;
    if (rq->who && svc->c) {
        if (acc_scope_for(svc->s, rq->who, &sc, &e) != ST_OK) {
            json_decref(out);
            rest_error(rs, &e);
            return;
        }
        if (sc.sc.sens_denied) withhold_factors_of(svc->c, sc.sc.sens_denied, out);
    }
    send_json(rs, 200, out);
}

static void h_rescore(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    risk_service *svc = user;
    err e;
    err_clear(&e);
    if (!patient_visible(svc->s, rq, rs, id)) return;
    pthread_mutex_lock(&svc->lock);
    risk_model *m = svc->m;
    pthread_mutex_unlock(&svc->lock);
    if (!m) {
        err_set(&e, ST_NOT_FOUND, "not-found", NULL,
                "no emergency-admission model: run `concord risk train`");
        rest_error(rs, &e);
        return;
    }
    if (risk_rescore_patient(svc->s, svc->c, m, id ? id : "", &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    h_patient(user, rq, rs, id);
}

static void h_events(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    risk_service *svc = user;
    (void)id;
    int after = 0, count = 100;
    if (int_param(rq->query, "after", 0, 2000000000, &after, rs) < 0) return;
    if (int_param(rq->query, "_count", 1, 10000, &count, rs) < 0) return;
    json_t *out = NULL;
    err e;
    if (risk_events(svc->s, after, count, &out, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    send_json(rs, 200, out);
}

static void h_status(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    risk_service *svc = user;
    (void)rq;
    (void)id;
    err e;
    db *d = store_db(svc->s, &e);
    if (!d) {
        rest_error(rs, &e);
        return;
    }
    const db_driver *drv = svc->s->drv;
    db_stmt *st = NULL;
    json_t *o = json_object();
    pthread_mutex_lock(&svc->lock);
    json_object_set_new(o, "model", svc->m ? json_string(svc->m->version) : json_null());
    json_object_set_new(o, "rescored_since_start", json_integer(svc->rescored));
    pthread_mutex_unlock(&svc->lock);
    if (drv->prepare(d, "SELECT COUNT(*) FROM risk_fact WHERE dirty > 0 AND dirty > ?", 0, &st, &e) ==
        ST_OK) {
        drv->bind_int(st, 1, rk_watermark(svc->s, d));
        if (drv->step(st, &e) == 1) json_object_set_new(o, "waiting", json_integer(drv->col_int(st, 0)));
        drv->done(st);
    }
    if (drv->prepare(
            d,
            "SELECT run_key, as_of, as_of_rule, model, tiers, stats FROM risk_run WHERE finished IS NOT NULL"
            " ORDER BY run_key DESC LIMIT 1",
            0, &st, &e) == ST_OK) {
        if (drv->step(st, &e) == 1) {
            char day[11];
            risk_format_day((int32_t)drv->col_int(st, 1), day);
            json_t *tiers =
                json_loads(drv->col_text(st, 4, NULL) ? drv->col_text(st, 4, NULL) : "[]", 0, NULL);
            json_t *stats =
                json_loads(drv->col_text(st, 5, NULL) ? drv->col_text(st, 5, NULL) : "{}", 0, NULL);
            json_object_set_new(
                o, "last_run",
                json_pack("{s:I, s:s, s:s, s:s, s:o, s:o}", "id", (json_int_t)drv->col_int(st, 0), "as_of",
                          day, "date_rule", drv->col_text(st, 2, NULL), "model", drv->col_text(st, 3, NULL),
                          "tiers", tiers ? tiers : json_array(), "stats", stats ? stats : json_object()));
        }
        drv->done(st);
    }
    send_json(rs, 200, o);
}

const rest_ext_route risk_service_routes[] = {
    {"GET", {"$risk-worklist"}, h_worklist, AREA_RISK, ACC_READ},
    /* tier changes across the population: for integrations (system, admin) */
    {"GET", {"$risk-events"}, h_events, AREA_INGEST, ACC_WRITE},
    {"GET", {"$risk-status"}, h_status, AREA_RISK, ACC_READ},
    {"GET", {"Patient", "{id}", "$risk"}, h_patient, AREA_RISK, ACC_READ},
    {"POST", {"Patient", "{id}", "$risk-rescore"}, h_rescore, AREA_RISK, ACC_READ},
};
const size_t risk_service_nroutes = sizeof risk_service_routes / sizeof risk_service_routes[0];
