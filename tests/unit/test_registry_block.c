/*
 * test_registry_block.c — blocking (src/registry/block.c): the key of each
 * default rule, records without the fields a rule needs get no key, every
 * candidate pair is produced once by the first rule that groups it (or once
 * per rule without dedupe), oversized blocks are skipped and counted
 * without hiding pairs from later rules, the callback can stop the walk,
 * and on a population of distinct people the number of pairs stays well
 * below the number of records.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry/block.h"

static void person(reg_person *p, const char *nhs, const char *family, const char *given, const char *dob,
                   const char *postcode) {
    reg_person_init(p);
    reg_person_set_nhs(p, nhs, strlen(nhs));
    reg_person_set_family(p, family, strlen(family));
    reg_person_set_given(p, given, strlen(given));
    reg_person_set_dob_text(p, dob, strlen(dob));
    reg_person_set_postcode(p, postcode, strlen(postcode));
}

static const block_rule *rule(const char *name) {
    size_t n;
    const block_rule *r = block_default_rules(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].name, name) == 0) return &r[i];
    fail_msg("no rule %s", name);
    return NULL;
}

static void key_is(const char *rname, const reg_person *p, const char *want) {
    char k[BLOCK_KEY_MAX];
    size_t n = block_key(rule(rname), p, k);
    if (strcmp(k, want) != 0 || n != strlen(want)) fail_msg("%s key \"%s\", want \"%s\"", rname, k, want);
}

static void test_keys(void **state) {
    (void)state;
    size_t n;
    const block_rule *r = block_default_rules(&n);
    assert_int_equal(n, 6);
    assert_string_equal(r[0].name, "nhs");
    reg_person p;
    person(&p, "943 476 5919", "Smith", "John", "1970-07-03", "w9 9wp");
    key_is("nhs", &p, "9434765919");
    key_is("dob_family", &p, "19700703|S530");
    key_is("dob_given", &p, "19700703|J500");
    key_is("names_ym", &p, "S530|JAN|197007");
    key_is("names_dm", &p, "S530|JAN|1970{03,07}");
    key_is("postcode_given", &p, "W9 9WP|J");
    /* what a rule needs is missing: no key */
    person(&p, "9434765918", "Smith", "", "1970", "ZZ99 3VZ");
    key_is("nhs", &p, "");        /* invalid check digit */
    key_is("dob_family", &p, ""); /* year only */
    key_is("dob_given", &p, "");
    key_is("names_ym", &p, ""); /* no given name, year only */
    key_is("names_dm", &p, "");
    key_is("postcode_given", &p, ""); /* pseudo-postcode */
    reg_person_init(&p);
    for (size_t i = 0; i < n; i++) {
        char k[BLOCK_KEY_MAX];
        assert_int_equal(block_key(&r[i], &p, k), 0);
    }
}

typedef struct got {
    uint32_t i[64], j[64];
    int rule[64];
    int n, stop_after;
} got;

static int collect(void *arg, uint32_t i, uint32_t j, int rule_index) {
    got *g = arg;
    assert_true(i < j);
    if (g->n < 64) {
        g->i[g->n] = i;
        g->j[g->n] = j;
        g->rule[g->n] = rule_index;
    }
    g->n++;
    return g->stop_after && g->n >= g->stop_after;
}

static int find(const got *g, uint32_t i, uint32_t j) {
    int count = 0, r = -1;
    for (int k = 0; k < g->n && k < 64; k++)
        if (g->i[k] == i && g->j[k] == j) count++, r = g->rule[k];
    if (count > 1) fail_msg("pair (%u, %u) emitted %d times", i, j, count);
    return r;
}

static void five(reg_person p[5]) {
    person(&p[0], "9434765919", "Smith", "John", "1970-07-03", "W9 9WP");
    person(&p[1], "", "Smith", "John", "1970-07-03", "W9 9WP");           /* no NHS number */
    person(&p[2], "9434765919", "Smith", "John", "1970-03-07", "W9 9WP"); /* dob transposed */
    person(&p[3], "9990000018", "Patel", "Priya", "1985-01-01", "NW8 7ZZ");
    person(&p[4], "9990000018", "Patel", "Priya", "1985-01-01", "NW8 7ZZ");
}

static void test_pairs_dedupe(void **state) {
    (void)state;
    reg_person p[5];
    five(p);
    size_t nr;
    const block_rule *r = block_default_rules(&nr);
    got g = {0};
    block_stats st;
    assert_int_equal(block_pairs(p, 5, r, nr, 0, 1, collect, &g, &st, NULL), ST_OK);
    assert_int_equal(g.n, 4);
    assert_int_equal(find(&g, 0, 2), 0); /* nhs */
    assert_int_equal(find(&g, 3, 4), 0); /* nhs */
    assert_int_equal(find(&g, 0, 1), 1); /* dob_family */
    assert_int_equal(find(&g, 1, 2), 4); /* names_dm: no NHS number, day and month transposed */
    assert_int_equal(find(&g, 0, 3), -1);
    assert_int_equal(st.pairs[0], 2);
    assert_int_equal(st.pairs[1], 1);
    assert_int_equal(st.pairs[2], 0);
    assert_int_equal(st.pairs[3], 0);
    assert_int_equal(st.pairs[4], 1);
    assert_int_equal(st.pairs[5], 0);
    assert_int_equal(st.duplicates, 16 - 4);
    assert_int_equal(st.keyed[0], 4);
    /* without dedupe: once per rule that groups the pair */
    memset(&g, 0, sizeof g);
    assert_int_equal(block_pairs(p, 5, r, nr, 0, 0, collect, &g, &st, NULL), ST_OK);
    /* nhs 2, dob_family 2, dob_given 2, names_ym 2 ((0,1), (3,4)), names_dm 4, postcode_given 4 */
    assert_int_equal(g.n, 2 + 2 + 2 + 2 + 4 + 4);
    assert_int_equal(st.duplicates, 0);
}

static void test_oversized_blocks(void **state) {
    (void)state;
    reg_person p[5];
    five(p);
    size_t nr;
    const block_rule *r = block_default_rules(&nr);
    got g = {0};
    block_stats st;
    /* blocks of 3 (the three Smiths under names_dm and postcode_given) are skipped */
    assert_int_equal(block_pairs(p, 5, r, nr, 2, 1, collect, &g, &st, NULL), ST_OK);
    assert_int_equal(st.oversized_blocks, 2);
    assert_int_equal(st.oversized_records, 6);
    assert_int_equal(g.n, 3);
    assert_int_equal(find(&g, 1, 2), -1);
    /* a pair in a skipped block of an earlier rule is still produced by a later one */
    reg_person q[4];
    person(&q[0], "", "Jones", "Ann", "1950-01-01", "W9 9WP");
    person(&q[1], "", "Jones", "Ann", "1950-01-01", "W9 9WP");
    person(&q[2], "", "Jones", "Ann", "1950-01-01", "W1 3QF");
    person(&q[3], "", "Brown", "Bob", "1960-01-01", "W1 3QF");
    const block_rule two[2] = {*rule("dob_family"), *rule("postcode_given")};
    memset(&g, 0, sizeof g);
    assert_int_equal(block_pairs(q, 4, two, 2, 2, 1, collect, &g, &st, NULL), ST_OK);
    assert_int_equal(st.oversized_blocks, 1); /* the three Joneses by dob */
    assert_int_equal(g.n, 1);
    assert_int_equal(find(&g, 0, 1), 1); /* by postcode_given */
}

static void test_stop_and_errors(void **state) {
    (void)state;
    reg_person p[5];
    five(p);
    size_t nr;
    const block_rule *r = block_default_rules(&nr);
    got g = {0};
    g.stop_after = 1;
    block_stats st;
    assert_int_equal(block_pairs(p, 5, r, nr, 0, 1, collect, &g, &st, NULL), ST_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(st.stopped, 1);
    err e;
    assert_int_equal(block_pairs(p, 5, r, 0, 0, 1, collect, &g, NULL, &e), ST_INVALID);
    assert_int_equal(block_pairs(p, 5, r, BLOCK_MAX_RULES + 1, 0, 1, collect, &g, NULL, &e), ST_INVALID);
    memset(&g, 0, sizeof g);
    assert_int_equal(block_pairs(p, 1, r, nr, 0, 1, collect, &g, &st, NULL), ST_OK);
    assert_int_equal(g.n, 0);
}

static int count_only(void *arg, uint32_t i, uint32_t j, int rule_index) {
    (void)i, (void)j, (void)rule_index;
    (*(size_t *)arg)++;
    return 0;
}

/* 20,000 distinct people with surnames and given names drawn with Zipf-like
 * frequencies (a few very common ones): the default rules compare fewer
 * pairs than there are records, where all pairs would be 2 * 10^8. */
static void test_near_linear(void **state) {
    (void)state;
    enum { N = 20000 };
    static const char *const fam[] = {"Smith",  "Jones",  "Patel",   "Khan",  "Brown",  "Williams",
                                      "Taylor", "Davies", "Wilson",  "Evans", "Thomas", "Roberts",
                                      "Ali",    "Begum",  "Hussain", "Walker"};
    static const char *const giv[] = {"Mohammed", "Olivia", "James", "Amelia", "Oliver", "Isla", "Harry",
                                      "Ava",      "Jack",   "Mia",   "George", "Sophia", "Noah", "Grace"};
    reg_person *p = calloc(N, sizeof *p);
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t x = (uint32_t)(s >> 33);
        /* Zipf-ish: index = floor(k * u^3) */
        double u = (double)(x & 0xffff) / 65536.0;
        char family[48], given[48], dob[16], postcode[16];
        snprintf(family, sizeof family, "%s%s", fam[(int)(16 * u * u * u)], i % 3 ? "" : "son");
        snprintf(given, sizeof given, "%s", giv[(x >> 16) % 14]);
        snprintf(dob, sizeof dob, "%04d-%02d-%02d", 1920 + (int)(x % 100), 1 + (int)((x >> 8) % 12),
                 1 + (int)((x >> 12) % 28));
        snprintf(postcode, sizeof postcode, "W%d %d%c%c", 1 + (int)(x % 14), (int)((x >> 4) % 10),
                 'A' + (int)((x >> 7) % 8), 'P' + (int)((x >> 10) % 8));
        char nhs[16];
        snprintf(nhs, sizeof nhs, "%s", "");
        person(&p[i], nhs, family, given, dob, postcode);
    }
    size_t nr, pairs = 0;
    const block_rule *r = block_default_rules(&nr);
    block_stats st;
    assert_int_equal(block_pairs(p, N, r, nr, 0, 1, count_only, &pairs, &st, NULL), ST_OK);
    assert_int_equal(st.oversized_blocks, 0);
    if (pairs >= N) fail_msg("%zu pairs for %d distinct people", pairs, N);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_pairs_dedupe),
        cmocka_unit_test(test_oversized_blocks),
        cmocka_unit_test(test_stop_and_errors),
        cmocka_unit_test(test_near_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
