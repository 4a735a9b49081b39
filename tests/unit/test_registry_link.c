/*
 * test_registry_link.c — batch linkage end to end (src/registry/link.c,
 * linkeval.c): clustering of linked pairs, then a synthetic population of
 * 2,000 people with the default planted errors (docs/synth.md) is
 * generated, every source patient record read from its feed, the model
 * trained (u from random pairs, m by EM per blocking rule), the candidate
 * pairs scored and clustered, and the result counted against the ground
 * truth: pairwise precision >= 0.995 and recall >= 0.98 (the issue's
 * targets), and a saved model reloads to the same result.
 */
#include <ftw.h>
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

#include "registry/link.h"
#include "registry/linkeval.h"
#include "synth/synth.h"

static void test_cluster(void **state) {
    (void)state;
    /* 0-1-2 chain above threshold, 3-4 below, 5 alone */
    link_pair p[] = {{1, 2, 25.0f, 0}, {0, 1, 21.0f, 0}, {3, 4, 19.9f, 0}, {2, 5, -3.0f, 0}};
    uint32_t c[6];
    assert_int_equal(link_cluster(6, p, 4, 20.0, c), 4);
    assert_int_equal(c[0], 0);
    assert_int_equal(c[1], 0);
    assert_int_equal(c[2], 0);
    assert_int_equal(c[3], 3);
    assert_int_equal(c[4], 4);
    assert_int_equal(c[5], 5);
    assert_int_equal(link_cluster(6, p, 4, 19.0, c), 3);
    assert_int_equal(c[4], 3);
    assert_int_equal(link_cluster(6, p, 0, 0.0, c), 6);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void test_synthetic_population(void **state) {
    (void)state;
    char dir[] = "/tmp/concord-reg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    synth_params sp;
    synth_params_default(&sp);
    sp.patients = 2000;
    sp.seed = 7;
    sp.threads = 2;
    err e;
    err_clear(&e);
    synth_summary sum;
    if (synth_feeds(&sp, dir, NULL, NULL, &sum, &e) != ST_OK) fail_msg("synth: %s", e.msg);

    linkeval_data d;
    if (linkeval_load(dir, &d, &e) != ST_OK) fail_msg("load: %s: %s", e.where, e.msg);
    assert_true(d.n > 3 * 2000); /* every person has a GP record and most have others */
    size_t unknown = 0;
    for (size_t i = 0; i < d.n; i++)
        unknown += d.truth[i] < 0;
    assert_int_equal(unknown, 0);

    linkeval_opts o;
    linkeval_opts_default(&o);
    char model[sizeof dir + 16];
    snprintf(model, sizeof model, "%s/model.json", dir);
    o.model_out = model;
    fs_model m;
    linkeval_counts c;
    if (linkeval_run(&d, &o, &m, &c, &e) != ST_OK) fail_msg("run: %s", e.msg);
    if (c.precision < 0.995 || c.recall < 0.98)
        fail_msg("links: precision %.5f recall %.5f (TP %llu FP %llu of %llu true pairs)", c.precision,
                 c.recall, (unsigned long long)c.link_tp, (unsigned long long)c.link_fp,
                 (unsigned long long)c.true_pairs);
    assert_true(c.cluster_precision >= 0.995);
    assert_true(c.cluster_recall >= 0.99);
    assert_true((double)c.candidate_true / (double)c.true_pairs >= 0.995); /* blocking recall */
    assert_true(c.candidates < 3 * d.n);                                   /* near-linear */
    assert_true(m.lambda > 0 && m.lambda < 0.01);
    /* learnt weights point the right way */
    assert_true(m.m[FS_NHS][CMP_NHS_AGREE] > 100 * m.u[FS_NHS][CMP_NHS_AGREE]);
    assert_true(m.m[FS_DOB][CMP_DOB_DIFFERENT] < m.u[FS_DOB][CMP_DOB_DIFFERENT]);

    /* a valid NHS number that disagrees with name and date of birth is not trusted blindly,
     * while the same number with a typo in the name and a wrong day is still a link */
    reg_person a, b, c3;
    reg_person_init(&a);
    reg_person_set_nhs(&a, "9434765919", 10);
    reg_person_set_family(&a, "Okafor", 6);
    reg_person_set_given(&a, "Amara", 5);
    reg_person_set_dob_text(&a, "1990-05-14", 10);
    reg_person_set_sex_text(&a, "F", 1);
    b = a;
    reg_person_set_family(&b, "Hughes", 6);
    reg_person_set_given(&b, "Thomas", 6);
    reg_person_set_dob_text(&b, "1948-11-02", 10);
    reg_person_set_sex_text(&b, "M", 1);
    c3 = a;
    reg_person_set_family(&c3, "Okafr", 5);
    reg_person_set_dob_text(&c3, "1990-05-15", 10);
    fs_vector v;
    fs_compare(&a, &b, &v);
    assert_int_equal(v.level[FS_NHS], CMP_NHS_AGREE);
    assert_int_equal(fs_decide(&m, fs_weight(&m, &v, &a, &b, NULL, NULL)), FS_NEW);
    fs_compare(&a, &c3, &v);
    assert_int_equal(fs_decide(&m, fs_weight(&m, &v, &a, &c3, NULL, NULL)), FS_LINK);

    /* the saved model gives the same result */
    linkeval_opts o2;
    linkeval_opts_default(&o2);
    o2.model_in = model;
    fs_model m2;
    linkeval_counts c2;
    if (linkeval_run(&d, &o2, &m2, &c2, &e) != ST_OK) fail_msg("rerun: %s", e.msg);
    assert_memory_equal(&m, &m2, sizeof m);
    assert_int_equal(c2.link_tp, c.link_tp);
    assert_int_equal(c2.link_fp, c.link_fp);
    assert_int_equal(c2.cluster_tp, c.cluster_tp);

    linkeval_data_free(&d);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_synthetic_population),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
