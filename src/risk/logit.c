/*
 * logit.c — logistic regression fitted by iteratively reweighted least
 * squares (Newton-Raphson on the log-likelihood), and the measures of a
 * model's predictions on a validation set.
 *
 * Fitting: maximise sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)]
 * - (ridge / 2) * sum_j beta_j^2 (the intercept is not penalised; a small
 * ridge keeps rare categories finite without changing common ones). Each
 * step solves (X'WX + ridge I) d = X'(y - p) - ridge beta by Cholesky,
 * halving the step while the penalised log-likelihood does not improve.
 * Rows are stored as float (the features are counts, indicators and small
 * logs: float loses nothing that matters) and visited by their non-zero
 * entries, since most indicators are zero. Standard errors are the square
 * roots of the diagonal of the inverse penalised information at the
 * optimum.
 *
 * Validation (Steyerberg, Clinical Prediction Models, 2nd ed., ch. 15):
 * AUROC by ranks (Mann-Whitney, ties averaged); Brier score; calibration
 * slope b of logit P(y) = a + b logit(p); calibration-in-the-large a of
 * logit P(y) = a + logit(p) (slope fixed at 1); observed and mean
 * predicted risk by tenth of predicted risk.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "risk_int.h"

void rk_design_init(rk_design *d, int p) {
    memset(d, 0, sizeof *d);
    d->p = p;
}

void rk_design_push(rk_design *d, const double *x, int y) {
    static const int64_t chunk = 4096;
    if (d->n % chunk == 0) {
        float *nx = realloc(d->x, (size_t)(d->n + chunk) * (size_t)d->p * sizeof(float));
        uint8_t *ny = realloc(d->y, (size_t)(d->n + chunk));
        if (!nx || !ny) abort();
        d->x = nx;
        d->y = ny;
    }
    float *row = d->x + (size_t)d->n * (size_t)d->p;
    for (int j = 0; j < d->p; j++)
        row[j] = (float)x[j];
    d->y[d->n++] = (uint8_t)(y != 0);
}

void rk_design_free(rk_design *d) {
    free(d->x);
    free(d->y);
    memset(d, 0, sizeof *d);
}

void rk_fit_free(rk_fit *f) {
    free(f->beta);
    free(f->se);
    memset(f, 0, sizeof *f);
}

double rk_logistic(double eta) {
    if (eta >= 0) return 1.0 / (1.0 + exp(-eta));
    double z = exp(eta);
    return z / (1.0 + z);
}

/* log(1 + exp(eta)) without overflow */
static double log1pexp(double eta) {
    return eta > 0 ? eta + log1p(exp(-eta)) : log1p(exp(eta));
}

/* Cholesky of the k x k matrix a (lower triangle used), in place. 0 on
 * success, -1 if not positive definite. */
static int cholesky(double *a, int k) {
    for (int j = 0; j < k; j++) {
        double s = a[j * k + j];
        for (int m = 0; m < j; m++)
            s -= a[j * k + m] * a[j * k + m];
        if (s <= 1e-300) return -1;
        double l = sqrt(s);
        a[j * k + j] = l;
        for (int i = j + 1; i < k; i++) {
            double t = a[i * k + j];
            for (int m = 0; m < j; m++)
                t -= a[i * k + m] * a[j * k + m];
            a[i * k + j] = t / l;
        }
    }
    return 0;
}

static void chol_solve(const double *l, int k, const double *b, double *x) {
    for (int i = 0; i < k; i++) {
        double t = b[i];
        for (int m = 0; m < i; m++)
            t -= l[i * k + m] * x[m];
        x[i] = t / l[i * k + i];
    }
    for (int i = k - 1; i >= 0; i--) {
        double t = x[i];
        for (int m = i + 1; m < k; m++)
            t -= l[m * k + i] * x[m];
        x[i] = t / l[i * k + i];
    }
}

/* Penalised log-likelihood at theta (theta[0] the intercept). */
static double penalised_loglik(const rk_design *d, const double *theta, double ridge) {
    int p = d->p;
    double ll = 0;
    for (int64_t i = 0; i < d->n; i++) {
        const float *row = d->x + (size_t)i * (size_t)p;
        double eta = theta[0];
        for (int j = 0; j < p; j++)
            if (row[j] != 0) eta += theta[j + 1] * row[j];
        ll += (d->y[i] ? eta : 0) - log1pexp(eta);
    }
    for (int j = 1; j <= p; j++)
        ll -= 0.5 * ridge * theta[j] * theta[j];
    return ll;
}

status rk_logit_fit(const rk_design *d, double ridge, int max_iter, rk_fit *out, err *e) {
    int p = d->p, k = p + 1;
    status rc = ST_OK;
    memset(out, 0, sizeof *out);
    if (d->n < 2)
        return err_set(e, ST_INVALID, "invalid", NULL, "too few people to fit a model (%lld)",
                       (long long)d->n);
    int64_t events = 0;
    for (int64_t i = 0; i < d->n; i++)
        events += d->y[i];
    if (events == 0 || events == d->n)
        return err_set(e, ST_INVALID, "invalid", NULL,
                       "the outcome does not vary (%lld events among %lld people)", (long long)events,
                       (long long)d->n);
    double *theta = calloc((size_t)k, sizeof(double)), *next = calloc((size_t)k, sizeof(double));
    double *h = calloc((size_t)k * (size_t)k, sizeof(double)), *g = calloc((size_t)k, sizeof(double));
    double *step = calloc((size_t)k, sizeof(double));
    int *nz = malloc(sizeof(int) * (size_t)k);
    double *xv = malloc(sizeof(double) * (size_t)k);
    if (!theta || !next || !h || !g || !step || !nz || !xv) abort();
    double rate = (double)events / (double)d->n;
    theta[0] = log(rate / (1 - rate));
    double ll = penalised_loglik(d, theta, ridge);
    int it;
    for (it = 0; it < max_iter; it++) {
        memset(h, 0, sizeof(double) * (size_t)k * (size_t)k);
        memset(g, 0, sizeof(double) * (size_t)k);
        for (int64_t i = 0; i < d->n; i++) {
            const float *row = d->x + (size_t)i * (size_t)p;
            int m = 0;
            nz[m] = 0;
            xv[m++] = 1.0;
            double eta = theta[0];
            for (int j = 0; j < p; j++)
                if (row[j] != 0) {
                    nz[m] = j + 1;
                    xv[m++] = row[j];
                    eta += theta[j + 1] * row[j];
                }
            double pr = rk_logistic(eta), w = pr * (1 - pr), r = d->y[i] - pr;
            for (int a = 0; a < m; a++) {
                int ia = nz[a];
                double wa = w * xv[a];
                g[ia] += r * xv[a];
                double *hrow = h + (size_t)ia * (size_t)k;
                for (int b = 0; b <= a; b++)
                    hrow[nz[b]] += wa * xv[b];
            }
        }
        for (int j = 1; j < k; j++) {
            h[j * k + j] += ridge;
            g[j] -= ridge * theta[j];
        }
        if (cholesky(h, k) != 0) {
            rc = err_set(e, ST_INVALID, "processing", NULL,
                         "the information matrix is singular (a feature never varies): add ridge");
            goto out;
        }
        chol_solve(h, k, g, step);
        double t = 1.0, nll = ll;
        for (int half = 0; half < 30; half++) {
            for (int j = 0; j < k; j++)
                next[j] = theta[j] + t * step[j];
            nll = penalised_loglik(d, next, ridge);
            if (nll >= ll - 1e-12 * fabs(ll)) break;
            t /= 2;
        }
        double maxstep = 0;
        for (int j = 0; j < k; j++)
            maxstep = fmax(maxstep, fabs(next[j] - theta[j]));
        memcpy(theta, next, sizeof(double) * (size_t)k);
        double change = nll - ll;
        ll = nll;
        if (maxstep < 1e-7 || fabs(change) < 1e-10 * fabs(ll)) {
            out->converged = 1;
            it++;
            break;
        }
    }
    /* standard errors from the information at the optimum */
    memset(h, 0, sizeof(double) * (size_t)k * (size_t)k);
    for (int64_t i = 0; i < d->n; i++) {
        const float *row = d->x + (size_t)i * (size_t)p;
        int m = 0;
        nz[m] = 0;
        xv[m++] = 1.0;
        double eta = theta[0];
        for (int j = 0; j < p; j++)
            if (row[j] != 0) {
                nz[m] = j + 1;
                xv[m++] = row[j];
                eta += theta[j + 1] * row[j];
            }
        double pr = rk_logistic(eta), w = pr * (1 - pr);
        for (int a = 0; a < m; a++)
            for (int b = 0; b <= a; b++)
                h[(size_t)nz[a] * (size_t)k + (size_t)nz[b]] += w * xv[a] * xv[b];
    }
    for (int j = 1; j < k; j++)
        h[j * k + j] += ridge;
    out->p = p;
    out->beta = calloc((size_t)p, sizeof(double));
    out->se = calloc((size_t)p, sizeof(double));
    if (!out->beta || !out->se) abort();
    out->intercept = theta[0];
    for (int j = 0; j < p; j++)
        out->beta[j] = theta[j + 1];
    if (cholesky(h, k) == 0) {
        for (int j = 0; j < k; j++) {
            memset(g, 0, sizeof(double) * (size_t)k);
            g[j] = 1;
            chol_solve(h, k, g, step);
            double se = sqrt(fmax(step[j], 0));
            if (j == 0)
                out->intercept_se = se;
            else
                out->se[j - 1] = se;
        }
    }
    out->iterations = it;
    out->loglik = ll;
out:
    free(theta);
    free(next);
    free(h);
    free(g);
    free(step);
    free(nz);
    free(xv);
    return rc;
}

/* ---- validation ------------------------------------------------------------------------- */

typedef struct scored {
    double p;
    uint8_t y;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    return (x->p > y->p) - (x->p < y->p);
}

static double auroc_sorted(const scored *s, int64_t n) {
    double rank_sum = 0;
    int64_t pos = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && s[j].p == s[i].p)
            j++;
        double avg = (double)(i + 1 + j) / 2.0; /* ranks i+1..j */
        for (int64_t k = i; k < j; k++)
            if (s[k].y) {
                rank_sum += avg;
                pos++;
            }
        i = j;
    }
    int64_t neg = n - pos;
    if (!pos || !neg) return NAN;
    return (rank_sum - (double)pos * (double)(pos + 1) / 2.0) / ((double)pos * (double)neg);
}

double rk_auroc(const double *p, const uint8_t *y, int64_t n) {
    scored *s = malloc(sizeof *s * (size_t)(n ? n : 1));
    if (!s) abort();
    for (int64_t i = 0; i < n; i++)
        s[i] = (scored){p[i], y[i]};
    qsort(s, (size_t)n, sizeof *s, cmp_scored);
    double a = auroc_sorted(s, n);
    free(s);
    return a;
}

/* Two-parameter recalibration: logit P(y) = a + b * lp (fit_slope) or
 * a + lp (slope fixed at 1). Newton on (a, b). */
static void recalibrate(const double *lp, const uint8_t *y, int64_t n, int fit_slope, double *a_out,
                        double *b_out) {
    double a = 0, b = 1;
    for (int it = 0; it < 50; it++) {
        double g0 = 0, g1 = 0, h00 = 0, h01 = 0, h11 = 0;
        for (int64_t i = 0; i < n; i++) {
            double pr = rk_logistic(a + b * lp[i]), w = pr * (1 - pr), r = y[i] - pr;
            g0 += r;
            h00 += w;
            if (fit_slope) {
                g1 += r * lp[i];
                h01 += w * lp[i];
                h11 += w * lp[i] * lp[i];
            }
        }
        double da, db = 0;
        if (fit_slope) {
            double det = h00 * h11 - h01 * h01;
            if (fabs(det) < 1e-300) break;
            da = (h11 * g0 - h01 * g1) / det;
            db = (h00 * g1 - h01 * g0) / det;
        } else {
            if (h00 < 1e-300) break;
            da = g0 / h00;
        }
        a += da;
        b += db;
        if (fabs(da) < 1e-10 && fabs(db) < 1e-10) break;
    }
    *a_out = a;
    *b_out = b;
}

status rk_validate(const double *p, const uint8_t *y, int64_t n, rk_validation *v, err *e) {
    memset(v, 0, sizeof *v);
    if (n < 10)
        return err_set(e, ST_INVALID, "invalid", NULL, "too few people to validate (%lld)", (long long)n);
    scored *s = malloc(sizeof *s * (size_t)n);
    double *lp = malloc(sizeof(double) * (size_t)n);
    if (!s || !lp) abort();
    double brier = 0, sp = 0;
    int64_t ev = 0;
    for (int64_t i = 0; i < n; i++) {
        double pi = fmin(fmax(p[i], 1e-12), 1 - 1e-12);
        s[i] = (scored){pi, y[i]};
        lp[i] = log(pi / (1 - pi));
        brier += (pi - y[i]) * (pi - y[i]);
        sp += pi;
        ev += y[i];
    }
    v->n = n;
    v->events = ev;
    v->brier = brier / (double)n;
    v->mean_predicted = sp / (double)n;
    v->observed_rate = (double)ev / (double)n;
    double a, b;
    recalibrate(lp, y, n, 1, &a, &b);
    v->cal_slope = b;
    recalibrate(lp, y, n, 0, &a, &b);
    v->cal_intercept = a;
    qsort(s, (size_t)n, sizeof *s, cmp_scored);
    v->auroc = auroc_sorted(s, n);
    for (int d = 0; d < 10; d++) {
        int64_t lo = n * d / 10, hi = n * (d + 1) / 10;
        double sum = 0;
        int64_t evd = 0;
        for (int64_t i = lo; i < hi; i++) {
            sum += s[i].p;
            evd += s[i].y;
        }
        v->deciles[d].n = hi - lo;
        v->deciles[d].events = evd;
        v->deciles[d].mean_predicted = hi > lo ? sum / (double)(hi - lo) : 0;
        v->deciles[d].observed = hi > lo ? (double)evd / (double)(hi - lo) : 0;
    }
    free(s);
    free(lp);
    return ST_OK;
}

void rk_calibration_svg(const rk_validation *v, const char *title, buf *out) {
    double maxv = 0;
    for (int d = 0; d < 10; d++)
        maxv = fmax(maxv, fmax(v->deciles[d].mean_predicted, v->deciles[d].observed));
    /* axis to a round number above the largest value */
    double axis = 0.05;
    while (axis < maxv * 1.05 && axis < 1.0)
        axis = axis < 0.1 ? axis + 0.05 : axis + 0.1;
    if (axis > 1) axis = 1;
    const int W = 520, H = 520, L = 70, B = 60, T = 50, R = 20;
    const int pw = W - L - R, ph = H - T - B;
#define XP(val) (L + (val) / axis * pw)
#define YP(val) (T + ph - (val) / axis * ph)
    buf_printf(out,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\""
               " font-family=\"sans-serif\" font-size=\"12\">\n",
               W, H, W, H);
    buf_printf(out, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    buf_puts(out, "<text x=\"260\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">");
    buf_html_escape(out, title);
    buf_puts(out, "</text>\n");
    buf_printf(
        out,
        "<text x=\"260\" y=\"40\" text-anchor=\"middle\" fill=\"#555\">AUROC %.3f, calibration slope %.2f,"
        " intercept %.2f, Brier %.4f, n %lld</text>\n",
        v->auroc, v->cal_slope, v->cal_intercept, v->brier, (long long)v->n);
    buf_printf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", L,
               T, pw, ph);
    for (int i = 0; i <= 5; i++) {
        double val = axis * i / 5;
        buf_printf(out,
                   "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f%%</text>\n",
                   XP(val), T, XP(val), T + ph, XP(val), T + ph + 18, val * 100);
        buf_printf(out,
                   "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.0f%%</text>\n",
                   L, YP(val), L + pw, YP(val), L - 6, YP(val) + 4, val * 100);
    }
    buf_printf(
        out,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"4 4\"/>\n",
        XP(0.0), YP(0.0), XP(axis), YP(axis));
    buf_puts(out, "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" points=\"");
    for (int d = 0; d < 10; d++)
        buf_printf(out, "%.1f,%.1f ", XP(v->deciles[d].mean_predicted), YP(v->deciles[d].observed));
    buf_puts(out, "\"/>\n");
    for (int d = 0; d < 10; d++)
        buf_printf(
            out,
            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f5fa8\"><title>tenth %d: predicted %.2f%%,"
            " observed %.2f%% (n %lld)</title></circle>\n",
            XP(v->deciles[d].mean_predicted), YP(v->deciles[d].observed), d + 1,
            v->deciles[d].mean_predicted * 100, v->deciles[d].observed * 100, (long long)v->deciles[d].n);
    buf_printf(out,
               "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">mean predicted risk (tenths of predicted "
               "risk)</text>\n",
               L + pw / 2, H - 18);
    buf_printf(
        out,
        "<text x=\"18\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 18 %d)\">observed emergency"
        " admission rate</text>\n",
        T + ph / 2, T + ph / 2);
    buf_puts(out, "</svg>\n");
#undef XP
#undef YP
}
