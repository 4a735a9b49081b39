/*
 * model.c — the emergency-admission model as a versioned file, and the
 * store's table of models.
 *
 * File format (JSON; docs/risk.md shows one):
 *   {"model": "concord-emergency-admission", "version": "fs1-20260101T120000.123Z",
 *    "feature_set": 1, "created": "...", "outcome": "...",
 *    "intercept": -4.1, "intercept_se": 0.05,
 *    "features": [{"name": "age_85_89", "coef": 1.2, "se": 0.1, "mean": 0.01,
 *                  "odds_ratio": 3.3}, ...],
 *    "training": {...}, "validation": {...}}
 * A model is bound to the features this build computes by name; a model
 * naming a feature this build does not know is refused, never applied
 * with that feature silently dropped.
 *
 * The version names the feature set and the moment of fitting; the file
 * text is kept verbatim in risk_model.body, and one row is active.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../fhir/fhirdate.h"
#include "../store/store_int.h"
#include "risk_int.h"

const char *risk_model_version(const risk_model *m) {
    return m->version;
}

void risk_model_free(risk_model *m) {
    if (!m) return;
    free(m->json);
    free(m);
}

double rk_model_eta(const risk_model *m, const double *x) {
    double eta = m->intercept;
    for (int i = 0; i < m->p; i++)
        eta += m->beta[i] * x[i];
    return eta;
}

status rk_model_bind(risk_model *m, const risk_codes *c, err *e) {
    rk_featureset all;
    rk_featureset_build(c, &all);
    memset(&m->fs, 0, sizeof m->fs);
    for (int i = 0; i < m->p; i++) {
        int found = -1;
        for (int k = 0; k < all.n; k++)
            if (!strcmp(all.f[k].name, m->feature_name[i])) found = k;
        if (found < 0)
            return err_set(
                e, ST_INVALID, "not-supported", m->feature_name[i],
                "model %s uses feature '%s', which this build does not compute: retrain (concord risk "
                "train)",
                m->version, m->feature_name[i]);
        m->fs.f[m->fs.n++] = all.f[found];
    }
    m->nslots = 0;
    for (int i = 0; i < m->p; i++) {
        const rk_feature_def *f = &m->fs.f[i];
        int k = -1;
        if (f->group != RKG_LTC)
            for (int j = 0; j < m->nslots; j++)
                if (m->slot_group[j] == (int)f->group) k = j;
        if (k < 0) {
            k = m->nslots++;
            m->slot_group[k] = (int)f->group;
            m->slot_ltc[k] = f->ltc;
        }
        m->slot[i] = k;
    }
    return ST_OK;
}

static status model_from_json(json_t *j, const char *text, const risk_codes *c, risk_model **out, err *e) {
    *out = NULL;
    const char *name = json_string_value(json_object_get(j, "model"));
    const char *version = json_string_value(json_object_get(j, "version"));
    json_t *feats = json_object_get(j, "features");
    if (!name || strcmp(name, RK_MODEL_NAME) != 0 || !version || !json_is_array(feats))
        return err_set(e, ST_INVALID, "invalid", "model", "not a %s model file", RK_MODEL_NAME);
    if (json_integer_value(json_object_get(j, "feature_set")) != RK_FEATURE_SET)
        return err_set(e, ST_INVALID, "not-supported", "feature_set",
                       "model %s has feature set %lld; this build has %d", version,
                       (long long)json_integer_value(json_object_get(j, "feature_set")), RK_FEATURE_SET);
    if (json_array_size(feats) > RK_MAX_FEATURES)
        return err_set(e, ST_INVALID, "invalid", "features", "too many features");
    risk_model *m = calloc(1, sizeof *m);
    if (!m) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->version, sizeof m->version, "%s", version);
    m->feature_set = RK_FEATURE_SET;
    m->intercept = json_number_value(json_object_get(j, "intercept"));
    size_t i;
    json_t *f;
    json_array_foreach(feats, i, f) {
        const char *fn = json_string_value(json_object_get(f, "name"));
        if (!fn) {
            free(m);
            return err_set(e, ST_INVALID, "invalid", "features", "a feature has no name");
        }
        snprintf(m->feature_name[i], sizeof m->feature_name[i], "%s", fn);
        m->beta[i] = json_number_value(json_object_get(f, "coef"));
        m->se[i] = json_number_value(json_object_get(f, "se"));
        m->mean[i] = json_number_value(json_object_get(f, "mean"));
    }
    m->p = (int)json_array_size(feats);
    m->json = strdup(text);
    status rc = m->json ? rk_model_bind(m, c, e) : err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    if (rc != ST_OK) {
        risk_model_free(m);
        return rc;
    }
    *out = m;
    return ST_OK;
}

static status model_from_text(const char *text, const risk_codes *c, risk_model **out, err *e) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) return err_set(e, ST_INVALID, "invalid", "model", "model file: %s (line %d)", je.text, je.line);
    status rc = model_from_json(j, text, c, out, e);
    json_decref(j);
    return rc;
}

status risk_model_load_file(const char *path, const risk_codes *c, risk_model **out, err *e) {
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return err_set(e, ST_NOT_FOUND, "not-found", path, "cannot read model file %s", path);
    buf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    status rc = model_from_text(b.p ? b.p : "", c, out, e);
    buf_free(&b);
    return rc;
}

status risk_model_load_active(store *s, const risk_codes *c, risk_model **out, err *e) {
    *out = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] = "SELECT body FROM risk_model WHERE active = 1 ORDER BY created DESC LIMIT 1";
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    int r = drv->step(st, e);
    char *text = NULL;
    if (r == 1) {
        const char *t = drv->col_text(st, 0, NULL);
        text = strdup(t ? t : "");
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    if (r == 0)
        return err_set(
            e, ST_NOT_FOUND, "not-found", NULL,
            "no emergency-admission model has been trained on this database: run `concord risk train`");
    rc = model_from_text(text, c, out, e);
    free(text);
    return rc;
}

status risk_model_install(store *s, const risk_model *m, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    rc = drv->exec(tx->d, "UPDATE risk_model SET active = 0 WHERE active = 1", e);
    if (rc != ST_OK) goto out;
    static const char ins[] = "INSERT INTO risk_model (version, created, active, body) VALUES (?, ?, 1, ?)"
                              " ON CONFLICT (version) DO UPDATE SET active = 1, body = excluded.body";
    rc = drv->prepare(tx->d, ins, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_text(st, 1, m->version, -1);
    drv->bind_int(st, 2, fhir_now_usec());
    drv->bind_text(st, 3, m->json, -1);
    if (drv->step(st, e) < 0) rc = ST_IO;
    drv->done(st);
out:
    if (rc == ST_OK)
        rc = store_commit(tx, e);
    else
        store_rollback(tx);
    return rc;
}

status rk_model_from_fit(const risk_codes *c, const rk_featureset *fs, const rk_fit *f, const double *means,
                         json_t *extra, risk_model **out, err *e) {
    char version[64], created[32];
    int64_t us = fhir_now_usec();
    time_t now = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
    /* the feature set and the moment of fitting, to the millisecond */
    snprintf(version, sizeof version, "fs%d-%s.%03dZ", RK_FEATURE_SET, stamp, (int)(us / 1000 % 1000));
    fhir_instant_format(us, created);
    json_t *feats = json_array();
    for (int i = 0; i < fs->n; i++)
        json_array_append_new(feats, json_pack("{s:s, s:f, s:f, s:f, s:f}", "name", fs->f[i].name, "coef",
                                               f->beta[i], "se", f->se[i], "mean", means[i], "odds_ratio",
                                               exp(f->beta[i])));
    json_t *j = json_pack(
        "{s:s, s:s, s:i, s:s, s:s, s:s, s:f, s:f, s:o}", "model", RK_MODEL_NAME, "version", version,
        "feature_set", RK_FEATURE_SET, "created", created, "outcome",
        "an emergency hospital admission (NHS admission method 2x, or Encounter.priority emergency when no "
        "method is"
        " recorded) starting in the 365 days after the assessment date",
        "method",
        "logistic regression, iteratively reweighted least squares with an L2 penalty on the coefficients"
        " (src/risk/logit.c)",
        "intercept", f->intercept, "intercept_se", f->intercept_se, "features", feats);
    if (extra) json_object_update(j, extra);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    status rc = model_from_json(j, text, c, out, e);
    free(text);
    json_decref(j);
    return rc;
}
