/*
 * test_registry_fs.c — the Fellegi-Sunter model (src/registry/fs.c): the
 * comparison vector of two records, weights as sums of log2(m/u) with
 * missing fields contributing nothing, term-frequency adjustment (a rare
 * surname outweighs a common one), u from random pairs, EM recovering known
 * m and the match proportion from vectors simulated with them, the prior
 * from scored pairs, and the model file's round trip and its rejections.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "registry/fs.h"

#define assert_near(x, want, tol)                                                                            \
    do {                                                                                                     \
        double x_ = (x), w_ = (want);                                                                        \
        if (!(x_ >= w_ - (tol) && x_ <= w_ + (tol)))                                                         \
            fail_msg("%s = %.6f, want %.6f +- %g", #x, x_, w_, (tol));                                       \
    } while (0)

static uint64_t rng_state;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(void) {
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static void person(reg_person *p, const char *nhs, const char *family, const char *given, const char *dob,
                   const char *sex, const char *postcode, const char *address) {
    reg_person_init(p);
    reg_person_set_nhs(p, nhs, strlen(nhs));
    reg_person_set_family(p, family, strlen(family));
    reg_person_set_given(p, given, strlen(given));
    reg_person_set_dob_text(p, dob, strlen(dob));
    reg_person_set_sex_text(p, sex, strlen(sex));
    reg_person_set_postcode(p, postcode, strlen(postcode));
    reg_person_set_address(p, address, strlen(address));
}

static void test_compare_vector(void **state) {
    (void)state;
    reg_person a, b;
    person(&a, "943 476 5919", "O'Brien", "Sarah", "1984-07-09", "F", "W9 9WP", "12 High St");
    person(&b, "9434765918", "OBRIEN", "Sara", "07/09/1984", "2", "W9 9XA", "14 High Street");
    assert_int_equal(a.nhs_valid, 1);
    assert_int_equal(b.nhs_valid, 0);
    reg_person_add_local_id(&a, "ZA1", 3, "ZA132799075", 11);
    reg_person_add_local_id(&b, "ZA1", 3, "ZA199999999", 11);
    fs_vector v;
    fs_compare(&a, &b, &v);
    assert_int_equal(v.level[FS_NHS], CMP_NHS_CLOSE);
    assert_int_equal(v.level[FS_FAMILY], CMP_NAME_EXACT);
    assert_int_equal(v.level[FS_GIVEN], CMP_NAME_JW_HIGH);
    assert_int_equal(v.level[FS_DOB], CMP_DOB_TRANSPOSED);
    assert_int_equal(v.level[FS_SEX], CMP_SEX_SAME);
    assert_int_equal(v.level[FS_POSTCODE], CMP_PC_LEVEL_SECTOR);
    assert_int_equal(v.level[FS_ADDRESS], CMP_ADDR_STREET);
    assert_int_equal(v.level[FS_LOCAL_ID], FS_LOCAL_DISAGREE);
    assert_string_equal(fs_level_name(FS_DOB, v.level[FS_DOB]), "day_month_transposed");
    assert_string_equal(fs_field_name(FS_POSTCODE), "postcode");
    assert_string_equal(fs_level_name(FS_SEX, FS_MISSING), "missing");
    assert_int_equal(fs_field_levels(FS_FAMILY), 5);
    /* missing fields */
    reg_person c;
    reg_person_init(&c);
    reg_person_set_postcode(&c, "ZZ99 3VZ", 8);
    reg_person_set_nhs(&c, "0000000000", 10); /* placeholder: dropped */
    assert_string_equal(c.nhs, "");
    fs_compare(&a, &c, &v);
    for (int f = 0; f < FS_NFIELDS; f++)
        assert_int_equal(v.level[f], FS_MISSING);
    /* dob set numerically: invalid parts become unknown */
    reg_person_set_dob(&c, 1984, 2, 30);
    assert_true(c.dob.y == 1984 && c.dob.m == 2 && c.dob.d == 0);
    reg_person_set_dob(&c, 1984, 13, 1);
    assert_true(c.dob.y == 1984 && c.dob.m == 0);
    reg_person_set_dob(&c, 0, 1, 1);
    assert_true(c.dob.y == 0);
    assert_int_equal(reg_person_add_local_id(&c, "A", 1, "1", 1), 0);
    assert_int_equal(reg_person_add_local_id(&c, "B", 1, "1", 1), 0);
    assert_int_equal(reg_person_add_local_id(&c, "C", 1, "1", 1), -1);
}

static void test_weights(void **state) {
    (void)state;
    fs_model m;
    fs_model_init(&m);
    m.m[FS_FAMILY][0] = 0.9;
    m.u[FS_FAMILY][0] = 0.01;
    m.m[FS_DOB][CMP_DOB_DIFFERENT] = 0.01;
    m.u[FS_DOB][CMP_DOB_DIFFERENT] = 0.99;
    fs_vector v;
    memset(v.level, FS_MISSING, sizeof v.level);
    double c[FS_NFIELDS];
    assert_near(fs_weight(&m, &v, NULL, NULL, NULL, c), 0.0, 0);
    for (int f = 0; f < FS_NFIELDS; f++)
        assert_near(c[f], 0.0, 0);
    v.level[FS_FAMILY] = 0;
    v.level[FS_DOB] = CMP_DOB_DIFFERENT;
    double w = fs_weight(&m, &v, NULL, NULL, NULL, c);
    assert_near(c[FS_FAMILY], log2(90.0), 1e-12);
    assert_near(c[FS_DOB], log2(0.01 / 0.99), 1e-12);
    assert_near(w, log2(90.0) + log2(0.01 / 0.99), 1e-12);
    /* a level byte out of range counts as missing */
    v.level[FS_SEX] = 7;
    assert_near(fs_weight(&m, &v, NULL, NULL, NULL, NULL), w, 1e-12);
    /* probability and decisions */
    m.lambda = 0.5;
    assert_near(fs_probability(&m, 0.0), 0.5, 1e-12);
    assert_near(fs_probability(&m, 3.0), 8.0 / 9.0, 1e-12);
    m.lambda = 1e-4;
    assert_near(fs_probability(&m, fs_weight_for_probability(&m, 0.99)), 0.99, 1e-9);
    m.link_weight = 20;
    m.review_weight = 10;
    assert_int_equal(fs_decide(&m, 25), FS_LINK);
    assert_int_equal(fs_decide(&m, 20), FS_LINK);
    assert_int_equal(fs_decide(&m, 15), FS_REVIEW);
    assert_int_equal(fs_decide(&m, 9.99), FS_NEW);
    /* the explanation is JSON with every field */
    buf b = {0};
    fs_explain_json(&m, &v, c, &b);
    json_error_t je;
    json_t *j = json_loads(b.p, 0, &je);
    assert_non_null(j);
    assert_int_equal(json_array_size(json_object_get(j, "fields")), FS_NFIELDS);
    assert_near(json_number_value(json_object_get(j, "weight")), w, 1e-3);
    json_t *f1 = json_array_get(json_object_get(j, "fields"), FS_FAMILY);
    assert_string_equal(json_string_value(json_object_get(f1, "level")), "exact");
    json_decref(j);
    buf_free(&b);
}

/* A rare surname agreeing exactly weighs more than a common one: u for an
 * exact agreement on value v is v's frequency. */
static void test_term_frequency(void **state) {
    (void)state;
    enum { N = 1000 };
    reg_person *p = calloc(N, sizeof *p);
    for (int i = 0; i < N; i++) {
        const char *fam = i < 300 ? "Smith" : i == 300 ? "Zywiec" : "Other";
        char buf[32];
        if (i > 300) snprintf(buf, sizeof buf, "Name%c%c", 'a' + i % 26, 'a' + (i / 26) % 26), fam = buf;
        person(&p[i], "", fam, "John", "1950-01-01", "M", "", "");
    }
    fs_tf_table *t = fs_tf_table_build(p, N);
    assert_non_null(t);
    assert_near(fs_tf_table_freq(t, FS_FAMILY, "SMITH", 5), 0.3, 1e-12);
    assert_near(fs_tf_table_freq(t, FS_FAMILY, "ZYWIEC", 6), 0.001, 1e-12);
    assert_near(fs_tf_table_freq(t, FS_GIVEN, "JOHN", 4), 1.0, 1e-12);
    assert_true(fs_tf_table_freq(t, FS_FAMILY, "NOBODY", 6) < 0);
    assert_true(fs_tf_table_freq(t, FS_DOB, "X", 1) < 0);
    fs_model m;
    fs_model_init(&m);
    m.m[FS_FAMILY][0] = 0.9;
    m.u[FS_FAMILY][0] = 0.01;
    fs_tf tf = {fs_tf_table_freq, t};
    reg_person smith2 = p[0], zywiec2 = p[300];
    fs_vector vs, vz;
    fs_compare(&p[0], &smith2, &vs);
    fs_compare(&p[300], &zywiec2, &vz);
    double cs[FS_NFIELDS], cz[FS_NFIELDS];
    double ws = fs_weight(&m, &vs, &p[0], &smith2, &tf, cs);
    double wz = fs_weight(&m, &vz, &p[300], &zywiec2, &tf, cz);
    assert_near(cs[FS_FAMILY], log2(0.9 / 0.3), 1e-12);
    assert_near(cz[FS_FAMILY], log2(0.9 / 0.001), 1e-12);
    assert_true(wz > ws + 8.0);
    /* without tf both get the field's average u */
    double c0[FS_NFIELDS];
    fs_weight(&m, &vs, &p[0], &smith2, NULL, c0);
    assert_near(c0[FS_FAMILY], log2(90.0), 1e-12);
    /* a value counted once is floored at tf_min_u, never 0 */
    m.tf_min_u = 0.01;
    fs_weight(&m, &vz, &p[300], &zywiec2, &tf, cz);
    assert_near(cz[FS_FAMILY], log2(0.9 / 0.01), 1e-12);
    /* tf off for the field: no adjustment */
    m.tf[FS_FAMILY] = 0;
    fs_weight(&m, &vs, &p[0], &smith2, &tf, cs);
    assert_near(cs[FS_FAMILY], log2(90.0), 1e-12);
    /* removing records updates the table */
    for (int i = 0; i < 150; i++)
        fs_tf_table_add(t, &p[i], -1);
    assert_near(fs_tf_table_freq(t, FS_FAMILY, "SMITH", 5), 150.0 / 850.0, 1e-12);
    fs_tf_table_free(t);
    free(p);
}

static void test_estimate_u(void **state) {
    (void)state;
    enum { N = 2000 };
    reg_person *p = calloc(N, sizeof *p);
    for (int i = 0; i < N; i++) {
        reg_person_init(&p[i]);
        reg_person_set_sex_text(&p[i], i % 2 ? "M" : "F", 1);
        char y[8];
        snprintf(y, sizeof y, "%d", 1900 + i % 100); /* year only: partial or different */
        reg_person_set_dob_text(&p[i], y, 4);
    }
    fs_model m, m2;
    fs_model_init(&m);
    fs_model_init(&m2);
    assert_int_equal(fs_estimate_u(&m, p, N, 200000, 42, NULL), ST_OK);
    assert_int_equal(fs_estimate_u(&m2, p, N, 200000, 42, NULL), ST_OK);
    assert_memory_equal(m.u, m2.u, sizeof m.u); /* deterministic */
    /* SE of a proportion from 200,000 pairs <= 0.0011; tolerance 0.005 */
    assert_near(m.u[FS_SEX][CMP_SEX_SAME], 0.5, 0.005);
    assert_near(m.u[FS_DOB][CMP_DOB_PARTIAL], 0.01, 0.002);
    /* a field missing everywhere gets the uniform (add-one) estimate */
    assert_near(m.u[FS_FAMILY][0], 1.0 / 5.0, 1e-12);
    for (int f = 0; f < FS_NFIELDS; f++) {
        double s = 0;
        for (int l = 0; l < fs_field_levels((fs_field)f); l++) {
            assert_true(m.u[f][l] > 0);
            s += m.u[f][l];
        }
        assert_near(s, 1.0, 1e-12);
    }
    err e;
    assert_int_equal(fs_estimate_u(&m, p, 1, 10, 1, &e), ST_INVALID);
    free(p);
}

/* True parameters of the simulation. */
static const double true_m[FS_NFIELDS][FS_MAX_LEVELS] = {{0.90, 0.04, 0.05, 0.01},
                                                         {0.88, 0.05, 0.03, 0.02, 0.02},
                                                         {0.85, 0.05, 0.04, 0.04, 0.02},
                                                         {0.92, 0.02, 0.04, 0.01, 0.01},
                                                         {0.98, 0.02},
                                                         {0.70, 0.05, 0.10, 0.05, 0.10},
                                                         {0.60, 0.10, 0.10, 0.20},
                                                         {0.30, 0.70}};
static const double true_u[FS_NFIELDS][FS_MAX_LEVELS] = {{0.001, 0.009, 0.97, 0.02},
                                                         {0.01, 0.01, 0.03, 0.06, 0.89},
                                                         {0.02, 0.01, 0.03, 0.08, 0.86},
                                                         {0.001, 0.001, 0.02, 0.003, 0.975},
                                                         {0.5, 0.5},
                                                         {0.001, 0.004, 0.04, 0.25, 0.705},
                                                         {0.001, 0.002, 0.02, 0.977},
                                                         {0.001, 0.999}};
static const double p_missing[FS_NFIELDS] = {0.15, 0.05, 0.05, 0.05, 0.02, 0.1, 0.5, 0.8};

static uint8_t draw(const double *p, int n) {
    double x = unif(), c = 0;
    for (int l = 0; l < n; l++) {
        c += p[l];
        if (x < c) return (uint8_t)l;
    }
    return (uint8_t)(n - 1);
}

static fs_vector *simulate(size_t n, double lambda, uint64_t seed) {
    rng_state = seed;
    fs_vector *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        int match = unif() < lambda;
        for (int f = 0; f < FS_NFIELDS; f++)
            v[i].level[f] = unif() < p_missing[f]
                                ? FS_MISSING
                                : draw(match ? true_m[f] : true_u[f], fs_field_levels((fs_field)f));
    }
    return v;
}

/* EM with u fixed at the truth recovers m and lambda. 200,000 vectors at
 * lambda 0.3 hold ~60,000 matches; a proportion's standard error is then at
 * most sqrt(0.25 / 60,000) = 0.002 (less for the local id, observed in 20%:
 * 0.0046), and with classes this well separated the posterior assignment
 * adds little; so m within 0.015 (>= 3 SE everywhere) and lambda within 0.005. */
static void test_em_recovers_m(void **state) {
    (void)state;
    enum { N = 200000 };
    const double lambda = 0.3;
    fs_vector *v = simulate(N, lambda, 20240501);
    fs_model m;
    fs_model_init(&m);
    memcpy(m.u, true_u, sizeof m.u);
    fs_em_opts o;
    fs_em_opts_default(&o);
    fs_em_result r;
    assert_int_equal(fs_em(&m, v, N, &o, &r, NULL), ST_OK);
    assert_true(r.converged);
    assert_true(r.patterns > 100 && r.patterns < N);
    assert_near(r.lambda, lambda, 0.005);
    for (int f = 0; f < FS_NFIELDS; f++)
        for (int l = 0; l < fs_field_levels((fs_field)f); l++)
            if (fabs(m.m[f][l] - true_m[f][l]) > 0.015)
                fail_msg("m[%s][%s] = %.4f, true %.4f", fs_field_name((fs_field)f),
                         fs_level_name((fs_field)f, l), m.m[f][l], true_m[f][l]);
    assert_memory_equal(m.u, true_u, sizeof m.u); /* u untouched */
    /* the same again from a poor start converges to the same place */
    fs_model m2;
    fs_model_init(&m2);
    memcpy(m2.u, true_u, sizeof m2.u);
    for (int f = 0; f < FS_NFIELDS; f++)
        for (int l = 0; l < fs_field_levels((fs_field)f); l++)
            m2.m[f][l] = 1.0 / fs_field_levels((fs_field)f);
    m2.m[FS_DOB][0] = 0.5, m2.m[FS_DOB][4] = 0.5 - 3 * 0.125 + 0.125; /* still favours exact dob */
    m2.m[FS_DOB][1] = m2.m[FS_DOB][2] = m2.m[FS_DOB][3] = 0.0;
    {
        double s = 0;
        for (int l = 0; l < 5; l++)
            s += m2.m[FS_DOB][l];
        for (int l = 0; l < 5; l++)
            m2.m[FS_DOB][l] = (m2.m[FS_DOB][l] + 0.01) / (s + 0.05);
    }
    o.start_lambda = 0.5;
    assert_int_equal(fs_em(&m2, v, N, &o, &r, NULL), ST_OK);
    assert_near(r.lambda, lambda, 0.005);
    for (int f = 0; f < FS_NFIELDS; f++)
        for (int l = 0; l < fs_field_levels((fs_field)f); l++)
            assert_near(m2.m[f][l], m.m[f][l], 0.002);
    free(v);
}

/* With estimate_u EM also recovers u (tolerance as for m: ~140,000 non-matches). */
static void test_em_recovers_u(void **state) {
    (void)state;
    enum { N = 200000 };
    fs_vector *v = simulate(N, 0.3, 7);
    fs_model m;
    fs_model_init(&m);
    fs_em_opts o;
    fs_em_opts_default(&o);
    o.estimate_u = 1;
    fs_em_result r;
    assert_int_equal(fs_em(&m, v, N, &o, &r, NULL), ST_OK);
    assert_near(r.lambda, 0.3, 0.005);
    for (int f = 0; f < FS_NFIELDS; f++)
        for (int l = 0; l < fs_field_levels((fs_field)f); l++) {
            assert_near(m.m[f][l], true_m[f][l], 0.015);
            assert_near(m.u[f][l], true_u[f][l], 0.01);
        }
    free(v);
}

/* Fixed fields are held out: their m does not move, and the others are
 * still recovered. */
static void test_em_fixed_fields(void **state) {
    (void)state;
    enum { N = 100000 };
    fs_vector *v = simulate(N, 0.5, 99);
    fs_model m;
    fs_model_init(&m);
    memcpy(m.u, true_u, sizeof m.u);
    double before[FS_MAX_LEVELS];
    memcpy(before, m.m[FS_DOB], sizeof before);
    fs_em_opts o;
    fs_em_opts_default(&o);
    o.fixed[FS_DOB] = 1;
    o.fixed[FS_NHS] = 1;
    fs_em_result r;
    assert_int_equal(fs_em(&m, v, N, &o, &r, NULL), ST_OK);
    assert_memory_equal(m.m[FS_DOB], before, sizeof before);
    assert_near(r.lambda, 0.5, 0.01);
    for (int l = 0; l < 5; l++)
        assert_near(m.m[FS_FAMILY][l], true_m[FS_FAMILY][l], 0.015);
    /* nothing to learn from */
    err e;
    assert_int_equal(fs_em(&m, v, 0, NULL, NULL, &e), ST_INVALID);
    fs_vector empty;
    memset(empty.level, FS_MISSING, sizeof empty.level);
    assert_int_equal(fs_em(&m, &empty, 1, NULL, NULL, &e), ST_INVALID);
    free(v);
}

static void test_estimate_lambda(void **state) {
    (void)state;
    /* 100 certain matches, 1,000 certain non-matches among 10^6 pairs */
    double w[1100];
    for (int i = 0; i < 1100; i++)
        w[i] = i < 100 ? 40.0 : -20.0;
    assert_near(fs_estimate_lambda(w, 1100, 1e6), 100.0 / 1e6, 1e-7);
    assert_true(fs_estimate_lambda(NULL, 0, 1e6) > 0);
}

static void fill(fs_model *m) {
    fs_model_init(m);
    rng_state = 5;
    for (int f = 0; f < FS_NFIELDS; f++) {
        int L = fs_field_levels((fs_field)f);
        double sm = 0, su = 0;
        for (int l = 0; l < L; l++) {
            m->m[f][l] = 0.01 + unif();
            m->u[f][l] = 0.01 + unif();
            sm += m->m[f][l];
            su += m->u[f][l];
        }
        for (int l = 0; l < L; l++)
            m->m[f][l] /= sm, m->u[f][l] /= su;
    }
    m->lambda = 1.2345e-5;
    m->tf[FS_POSTCODE] = 1;
    m->link_weight = 17.25;
    m->review_weight = 6.5;
}

static void test_model_round_trip(void **state) {
    (void)state;
    fs_model a, b;
    fill(&a);
    buf j = {0};
    fs_model_to_json(&a, &j);
    err e;
    err_clear(&e);
    assert_int_equal(fs_model_from_json(j.p, j.len, &b, &e), ST_OK);
    assert_memory_equal(&a, &b, sizeof a); /* %.17g round-trips every double */
    char path[] = "/tmp/concord-fs-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(fs_model_save(&a, path, &e), ST_OK);
    fs_model c;
    assert_int_equal(fs_model_load(&c, path, &e), ST_OK);
    assert_memory_equal(&a, &c, sizeof a);
    unlink(path);
    assert_int_equal(fs_model_load(&c, path, &e), ST_NOT_FOUND);
    buf_free(&j);
}

static void reject(const char *from, const char *to, status want, const char *where) {
    fs_model a, b;
    fill(&a);
    buf j = {0};
    fs_model_to_json(&a, &j);
    char *p = strstr(j.p, from);
    if (!p) fail_msg("\"%s\" not in the model text", from);
    buf t = {0};
    buf_append(&t, j.p, (size_t)(p - j.p));
    buf_puts(&t, to);
    buf_puts(&t, p + strlen(from));
    err e;
    err_clear(&e);
    status rc = fs_model_from_json(t.p, t.len, &b, &e);
    if (rc != want) fail_msg("%s -> %s: status %d, want %d (%s)", from, to, rc, want, e.msg);
    if (where && !strstr(e.where, where))
        fail_msg("%s -> %s: where \"%s\", want \"%s\"", from, to, e.where, where);
    buf_free(&j);
    buf_free(&t);
}

static void test_model_rejects(void **state) {
    (void)state;
    reject("concord-fs-model", "something-else", ST_INVALID, "format");
    reject("\"version\": 1", "\"version\": 2", ST_UNSUPPORTED, "version");
    reject("\"lambda\": ", "\"lambda\": -", ST_INVALID, "lambda");
    reject("\"name\": \"sex\"", "\"name\": \"gender\"", ST_INVALID, "fields");
    reject("\"name\": \"same\"", "\"name\": \"equal\"", ST_INVALID, "sex.levels[0]");
    reject("\"link\": 17.25", "\"link\": 1.25", ST_INVALID, "thresholds");
    reject("{\"name\": \"agree\", \"m\": 0.", "{\"name\": \"agree\", \"m\": 0.0", ST_INVALID, "nhs_number");
    reject("\"m\": ", "\"m\": 1", ST_INVALID, NULL);
    reject("{\n  \"format\"", "[{\n  \"format\"", ST_INVALID, "line");
    err e;
    fs_model b;
    assert_int_equal(fs_model_from_json("", 0, &b, &e), ST_INVALID);
    assert_int_equal(fs_model_from_json("{}", 2, &b, &e), ST_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compare_vector),   cmocka_unit_test(test_weights),
        cmocka_unit_test(test_term_frequency),   cmocka_unit_test(test_estimate_u),
        cmocka_unit_test(test_em_recovers_m),    cmocka_unit_test(test_em_recovers_u),
        cmocka_unit_test(test_em_fixed_fields),  cmocka_unit_test(test_estimate_lambda),
        cmocka_unit_test(test_model_round_trip), cmocka_unit_test(test_model_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
