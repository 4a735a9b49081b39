/*
 * train.c — `concord risk train`: fit the emergency-admission model on the
 * registry's own history and validate it on a later period.
 *
 * Design (a temporal validation, Steyerberg ch. 17): the data end is the
 * latest encounter start in the store (not after today). The validation
 * index date is one year before it, so the validation outcome year is the
 * last complete year of data; the training index date is one year earlier
 * still, so the training outcome year ends where validation begins and no
 * outcome used for fitting is also used for validation. For each index
 * date, everyone eligible on it (registered, alive, born) contributes their
 * features on that date and whether an emergency admission began in the
 * following 365 days. People whose registration has ended (Patient.active
 * false) are left out of both years: concord does not know when they left,
 * so their missing admissions could be departures.
 *
 * The report (text and JSON) gives the coefficients, AUROC with its
 * Hanley-McNeil standard error, the Brier score, calibration slope and
 * calibration-in-the-large, calibration by tenth of predicted risk (also
 * drawn as SVG), and for comparison the AUROC of each published index used
 * alone as a predictor of the same outcome in its own age group.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/log.h"
#include "../fhir/model.h"
#include "../store/store_int.h"
#include "risk_int.h"

#define PAGE 5000

/* The latest encounter start in the store, as a day (RK_NODAY if none). */
static int32_t data_end(store *s, err *e) {
    const fhir_search_param *sp = fhir_search_param_find("Encounter", "date");
    int64_t param = sp ? store_param_id(s, sp) : 0;
    db *d = store_db(s, e);
    if (!d || !param) return RK_NODAY;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    int32_t day = RK_NODAY;
    if (drv->prepare(d, "SELECT MAX(lo) FROM idx_date WHERE param = ? AND lo <= ?", 0, &st, e) != ST_OK)
        return RK_NODAY;
    drv->bind_int(st, 1, param);
    drv->bind_int(st, 2, (int64_t)risk_today() * 86400 + 86399);
    if (drv->step(st, e) == 1 && drv->col_text(st, 0, NULL)) {
        int64_t lo = drv->col_int(st, 0);
        day = (int32_t)(lo >= 0 ? lo / 86400 : (lo - 86399) / 86400);
    }
    drv->done(st);
    return day;
}

/* The same from the facts (a store holding facts without their resources:
 * `concord risk facts --synth`): the latest encounter start, not after today. */
static int32_t data_end_from_facts(store *s, err *e) {
    db *d = store_db(s, e);
    if (!d) return RK_NODAY;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    int32_t end = RK_NODAY, today = risk_today();
    int64_t after = 0;
    arena a = {0};
    for (;;) {
        if (drv->prepare(d, "SELECT pkey, facts FROM risk_fact WHERE pkey > ? ORDER BY pkey LIMIT 5000", 1,
                         &st, e) != ST_OK)
            break;
        drv->bind_int(st, 1, after);
        int rows = 0;
        arena_reset(&a);
        while (drv->step(st, e) == 1) {
            rows++;
            after = drv->col_int(st, 0);
            size_t len = 0;
            const char *t = drv->col_text(st, 1, &len);
            char *text = arena_alloc(&a, len + 1);
            memcpy(text, t ? t : "", len);
            text[len] = 0;
            rk_person p = {.pkey = after, .patient_id = ""};
            rk_person_decode(text, len, &a, &p);
            for (int i = 0; i < p.nenc; i++)
                if (p.enc[i].start <= today && (end == RK_NODAY || p.enc[i].start > end))
                    end = p.enc[i].start;
        }
        drv->done(st);
        if (rows < 5000) break;
    }
    arena_free(&a);
    return end;
}

/* One published index as a predictor: its values and outcomes. */
typedef struct index_eval {
    const char *name, *population;
    double *v;
    uint8_t *y;
    int64_t n, cap;
} index_eval;

static void ie_push(index_eval *ie, double v, int y) {
    if (ie->n == ie->cap) {
        ie->cap = ie->cap ? ie->cap * 2 : 4096;
        ie->v = realloc(ie->v, sizeof(double) * (size_t)ie->cap);
        ie->y = realloc(ie->y, (size_t)ie->cap);
        if (!ie->v || !ie->y) abort();
    }
    ie->v[ie->n] = v;
    ie->y[ie->n++] = (uint8_t)y;
}

static double auroc_se(double a, int64_t n1, int64_t n0) {
    if (!(a > 0 && a < 1) || !n1 || !n0) return NAN;
    double q1 = a / (2 - a), q2 = 2 * a * a / (1 + a);
    return sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) /
                ((double)n1 * (double)n0));
}

static status write_file(const char *dir, const char *name, const char *text, size_t len, err *e) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return err_set(e, ST_IO, "exception", path, "cannot write %s", path);
    size_t w = fwrite(text, 1, len, f);
    int bad = fclose(f) != 0 || w != len;
    return bad ? err_set(e, ST_IO, "exception", path, "cannot write %s", path) : ST_OK;
}

status risk_train(store *s, const risk_codes *c, const risk_train_opts *o, risk_model **model_out,
                  risk_train_result *res, err *e) {
    status rc = ST_OK;
    rk_featureset fs;
    rk_design train, valid;
    rk_fit fit = {0};
    rk_depmap *dep = NULL;
    risk_model *m = NULL;
    double *pv = NULL;
    db_stmt *st = NULL;
    arena page = {0};
    buf txt = {0}, svg = {0};
    json_t *extra = NULL;
    index_eval ies[4] = {{"eFI", "aged 65 and over", NULL, NULL, 0, 0},
                         {"HFRS", "aged 75 and over", NULL, NULL, 0, 0},
                         {"Charlson (1987 weights)", "aged 18 and over", NULL, NULL, 0, 0},
                         {"Charlson (2011 weights)", "aged 18 and over", NULL, NULL, 0, 0}};
    const db_driver *drv = s->drv;
    double t0 = rk_now_seconds();
    memset(res, 0, sizeof *res);
    if (model_out) *model_out = NULL;
    rk_featureset_build(c, &fs);
    rk_design_init(&train, fs.n);
    rk_design_init(&valid, fs.n);

    int32_t t_valid = o->validate_day, t_train = o->index_day;
    if (t_train == RK_NODAY || t_valid == RK_NODAY) {
        int32_t end = data_end(s, e);
        if (end == RK_NODAY) end = data_end_from_facts(s, e);
        if (end == RK_NODAY) {
            rc = err_set(e, ST_INVALID, "not-found", NULL,
                         "no encounters in the store: nothing to learn emergency admissions from");
            goto out;
        }
        if (t_valid == RK_NODAY) t_valid = t_train != RK_NODAY ? t_train + 365 : end - 365;
        if (t_train == RK_NODAY) t_train = t_valid - 365;
    }
    if (t_train + 365 > t_valid) {
        rc = err_set(e, ST_INVALID, "value", "--validate-date",
                     "the validation index date must be at least a year after the training index date");
        goto out;
    }
    res->index_day = t_train;
    res->validate_day = t_valid;
    rc = rk_depmap_load(s, &dep, e);
    if (rc != ST_OK) goto out;
    db *d = store_db(s, e);
    if (!d) {
        rc = e ? e->code : ST_IO;
        goto out;
    }

    /* one pass over everyone's facts: both years' rows */
    int64_t after = 0;
    double x[RK_MAX_FEATURES];
    for (;;) {
        static const char sql[] =
            "SELECT f.pkey, k.patient_id, f.facts FROM risk_fact f"
            " JOIN patient_key k ON k.pkey = f.pkey WHERE f.pkey > ? ORDER BY f.pkey LIMIT ?";
        rc = drv->prepare(d, sql, 1, &st, e);
        if (rc != ST_OK) goto out;
        drv->bind_int(st, 1, after);
        drv->bind_int(st, 2, PAGE);
        arena_reset(&page);
        int r, rows = 0;
        while ((r = drv->step(st, e)) == 1) {
            rows++;
            rk_person p = {.pkey = drv->col_int(st, 0), .patient_id = ""};
            after = p.pkey;
            size_t len = 0;
            const char *facts = drv->col_text(st, 2, &len);
            char *text = arena_alloc(&page, len + 1);
            memcpy(text, facts ? facts : "", len);
            text[len] = 0;
            rk_person_decode(text, len, &page, &p);
            int dec = rk_depmap_get(dep, p.postcode);
            for (int which = 0; which < 2; which++) {
                int32_t day = which ? t_valid : t_train;
                if (rk_eligible(&p, day) != RK_OK) continue;
                rk_profile pr;
                rk_profile_of(c, &p, day, dec, &pr);
                rk_features_of(&fs, &pr, x);
                int y = rk_outcome(&p, day);
                rk_design_push(which ? &valid : &train, x, y);
                if (which) {
                    if (pr.ix.efi_band >= 0) ie_push(&ies[0], pr.ix.efi, y);
                    if (pr.ix.hfrs_tenths >= 0) ie_push(&ies[1], pr.ix.hfrs_tenths, y);
                    if (pr.ix.charlson >= 0) {
                        ie_push(&ies[2], pr.ix.charlson, y);
                        ie_push(&ies[3], pr.ix.charlson2011, y);
                    }
                }
            }
        }
        drv->done(st);
        st = NULL;
        if (r < 0) {
            rc = ST_IO;
            goto out;
        }
        if (rows < PAGE) break;
    }
    for (int64_t i = 0; i < train.n; i++)
        res->train_events += train.y[i];
    for (int64_t i = 0; i < valid.n; i++)
        res->valid_events += valid.y[i];
    res->train_n = train.n;
    res->valid_n = valid.n;
    if (train.n < 100 || valid.n < 100) {
        rc = err_set(e, ST_INVALID, "invalid", NULL,
                     "too few people to train (%lld) or validate (%lld) on: at least 100 each",
                     (long long)train.n, (long long)valid.n);
        goto out;
    }

    /* fit */
    double ridge = o->ridge > 0 ? o->ridge : 1.0;
    rc = rk_logit_fit(&train, ridge, 30, &fit, e);
    if (rc != ST_OK) goto out;
    double means[RK_MAX_FEATURES] = {0};
    for (int64_t i = 0; i < train.n; i++)
        for (int j = 0; j < fs.n; j++)
            means[j] += train.x[(size_t)i * (size_t)fs.n + (size_t)j];
    for (int j = 0; j < fs.n; j++)
        means[j] /= (double)train.n;

    /* validate */
    pv = malloc(sizeof(double) * (size_t)valid.n);
    if (!pv) abort();
    for (int64_t i = 0; i < valid.n; i++) {
        double eta = fit.intercept;
        const float *row = valid.x + (size_t)i * (size_t)fs.n;
        for (int j = 0; j < fs.n; j++)
            eta += fit.beta[j] * row[j];
        pv[i] = rk_logistic(eta);
    }
    rk_validation v;
    rc = rk_validate(pv, valid.y, valid.n, &v, e);
    if (rc != ST_OK) goto out;
    res->auroc = v.auroc;
    res->brier = v.brier;
    res->cal_slope = v.cal_slope;
    res->cal_intercept = v.cal_intercept;
    double auc_se = auroc_se(v.auroc, v.events, v.n - v.events);

    /* the model file, with its training and validation */
    char d_train[11], d_valid[11], d_end[11], d_tend[11];
    risk_format_day(t_train, d_train);
    risk_format_day(t_valid, d_valid);
    risk_format_day(t_valid + 365, d_end);
    risk_format_day(t_train + 365, d_tend);
    json_t *dec = json_array();
    for (int k = 0; k < 10; k++)
        json_array_append_new(dec, json_pack("{s:i, s:I, s:I, s:f, s:f}", "tenth", k + 1, "n",
                                             (json_int_t)v.deciles[k].n, "events",
                                             (json_int_t)v.deciles[k].events, "mean_predicted",
                                             v.deciles[k].mean_predicted, "observed", v.deciles[k].observed));
    json_t *idx = json_array();
    for (int k = 0; k < 4; k++) {
        double a = ies[k].n ? rk_auroc(ies[k].v, ies[k].y, ies[k].n) : NAN;
        int64_t ev = 0;
        for (int64_t i = 0; i < ies[k].n; i++)
            ev += ies[k].y[i];
        json_t *row = json_pack("{s:s, s:s, s:I, s:I}", "index", ies[k].name, "population", ies[k].population,
                                "n", (json_int_t)ies[k].n, "events", (json_int_t)ev);
        if (!isnan(a)) json_object_set_new(row, "auroc", json_real(a));
        json_array_append_new(idx, row);
    }
    extra = json_pack("{s:{s:s, s:s, s:I, s:I, s:f, s:i, s:b, s:f}, s:{s:s, s:s, s:I, s:I, s:f, s:f, s:f, "
                      "s:f, s:f, s:f, s:f, "
                      "s:o, s:o}}",
                      "training", "index_date", d_train, "outcome_until", d_tend, "people",
                      (json_int_t)train.n, "events", (json_int_t)res->train_events, "ridge", ridge,
                      "iterations", fit.iterations, "converged", fit.converged, "log_likelihood", fit.loglik,
                      "validation", "index_date", d_valid, "outcome_until", d_end, "people",
                      (json_int_t)valid.n, "events", (json_int_t)v.events, "auroc", v.auroc, "auroc_se",
                      isnan(auc_se) ? 0 : auc_se, "brier", v.brier, "calibration_slope", v.cal_slope,
                      "calibration_intercept", v.cal_intercept, "mean_predicted", v.mean_predicted,
                      "observed_rate", v.observed_rate, "deciles", dec, "published_indices", idx);
    rc = rk_model_from_fit(c, &fs, &fit, means, extra, &m, e);
    if (rc != ST_OK) goto out;
    snprintf(res->version, sizeof res->version, "%s", m->version);

    /* the report */
    buf_printf(&txt, "concord emergency-admission model %s\n\n", m->version);
    buf_printf(&txt,
               "Outcome: an emergency admission (NHS admission method 2x) beginning within 365 days.\n");
    buf_printf(&txt, "Training:   features on %s, outcomes to %s: %lld people, %lld events (%.2f%%)\n",
               d_train, d_tend, (long long)train.n, (long long)res->train_events,
               100.0 * (double)res->train_events / (double)train.n);
    buf_printf(&txt, "Validation: features on %s, outcomes to %s: %lld people, %lld events (%.2f%%)\n",
               d_valid, d_end, (long long)valid.n, (long long)v.events, 100.0 * v.observed_rate);
    buf_printf(&txt, "Fit: IRLS, ridge %.2f, %d iterations%s, log-likelihood %.1f\n\n", ridge, fit.iterations,
               fit.converged ? " (converged)" : " (NOT converged)", fit.loglik);
    buf_printf(&txt, "Validation year\n  AUROC                 %.4f (SE %.4f, 95%% CI %.4f-%.4f)\n", v.auroc,
               auc_se, v.auroc - 1.96 * auc_se, v.auroc + 1.96 * auc_se);
    buf_printf(&txt,
               "  Brier score           %.5f (outcome rate %.4f: a model predicting the rate scores %.5f)\n",
               v.brier, v.observed_rate, v.observed_rate * (1 - v.observed_rate));
    buf_printf(&txt, "  calibration slope     %.3f (ideal 1)\n", v.cal_slope);
    buf_printf(&txt, "  calibration intercept %.3f (calibration-in-the-large, ideal 0)\n", v.cal_intercept);
    buf_printf(&txt, "  mean predicted %.4f, observed %.4f\n\n", v.mean_predicted, v.observed_rate);
    buf_printf(&txt,
               "Calibration by tenth of predicted risk\n  tenth        n   events  predicted  observed\n");
    for (int k = 0; k < 10; k++)
        buf_printf(&txt, "  %5d %8lld %8lld  %8.2f%%  %7.2f%%\n", k + 1, (long long)v.deciles[k].n,
                   (long long)v.deciles[k].events, 100 * v.deciles[k].mean_predicted,
                   100 * v.deciles[k].observed);
    buf_printf(&txt, "\nPublished indices alone, same outcome, validation year\n");
    size_t ii;
    json_t *row;
    json_array_foreach(idx, ii, row) {
        json_t *a = json_object_get(row, "auroc");
        buf_printf(&txt, "  %-24s %-18s n %8lld  AUROC %s", json_string_value(json_object_get(row, "index")),
                   json_string_value(json_object_get(row, "population")),
                   (long long)json_integer_value(json_object_get(row, "n")), a ? "" : "n/a\n");
        if (a) buf_printf(&txt, "%.4f\n", json_real_value(a));
    }
    buf_printf(&txt, "\nCoefficients (log-odds; reference: age 18-39, male, IMD quintile 3, no medicines)\n");
    buf_printf(&txt, "  %-30s %9s %8s %9s %8s\n", "feature", "coef", "se", "odds", "mean");
    buf_printf(&txt, "  %-30s %9.4f %8.4f\n", "(intercept)", fit.intercept, fit.intercept_se);
    for (int j = 0; j < fs.n; j++)
        buf_printf(&txt, "  %-30s %9.4f %8.4f %9.3f %8.4f\n", fs.f[j].name, fit.beta[j], fit.se[j],
                   exp(fit.beta[j]), means[j]);
    buf_printf(&txt, "\nTrained in %.1f s.\n", rk_now_seconds() - t0);
    char title[128];
    snprintf(title, sizeof title, "Calibration, validation year from %s (%s)", d_valid, m->version);
    rk_calibration_svg(&v, title, &svg);

    if (o->out_dir) {
        mkdir(o->out_dir, 0755);
        json_t *report = json_loads(m->json, 0, NULL);
        char *rj = report ? json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        json_decref(report);
        rc = write_file(o->out_dir, "model.json", m->json, strlen(m->json), e);
        if (rc == ST_OK) rc = write_file(o->out_dir, "report.txt", txt.p, txt.len, e);
        if (rc == ST_OK && rj) rc = write_file(o->out_dir, "report.json", rj, strlen(rj), e);
        if (rc == ST_OK) rc = write_file(o->out_dir, "calibration.svg", svg.p, svg.len, e);
        free(rj);
        if (rc != ST_OK) goto out;
    }
    if (o->install) {
        rc = risk_model_install(s, m, e);
        if (rc != ST_OK) goto out;
    }
    res->seconds = rk_now_seconds() - t0;
    res->report_text = buf_take(&txt);
    if (model_out) {
        *model_out = m;
        m = NULL;
    }
out:
    if (st) drv->done(st);
    for (int k = 0; k < 4; k++) {
        free(ies[k].v);
        free(ies[k].y);
    }
    json_decref(extra);
    rk_design_free(&train);
    rk_design_free(&valid);
    rk_fit_free(&fit);
    rk_depmap_free(dep);
    risk_model_free(m);
    free(pv);
    arena_free(&page);
    buf_free(&txt);
    buf_free(&svg);
    return rc;
}
