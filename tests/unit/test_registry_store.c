/*
 * test_registry_store.c — the patient registry over the store (registry.h),
 * on both backends: every test runs against SQLite (a fresh file per test)
 * and, when CONCORD_TEST_PG holds a postgresql:// URL of a server the tests
 * may create databases on, against PostgreSQL (a fresh database per test);
 * tests/with-postgres.sh sets it. As test_store.c does.
 *
 * What is covered: a Patient written in a transaction is linked in that
 * transaction (and a rollback leaves no trace); records with the same
 * trusted NHS number, and records without one that agree, land on one
 * person whose Person resource links them all; a different person gets a
 * new Person; an update that makes a record someone else moves it; a
 * delete releases it (and retires an emptied person); review items are
 * opened for the uncertain, and accept/reject survive `run`; merge then
 * unmerge restores byte-identical link state and Person texts; a
 * replaced-by link (HL7 A40) merges; $match grades; train saves a new
 * model version and run --rebuild picks up Patients written while the
 * registry was off.
 */
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "registry/registry.h"
#include "store/store.h"
#include "testpg.h"

#define NHS_SYS "https://fhir.nhs.uk/Id/nhs-number"

typedef struct fx {
    int pg;
    test_db db; /* dir (key files too), url */
    store *s;
    registry *r;
    err e;
} fx;




static int open_all(fx *f) {
    if (test_db_create(&f->db, "regunit", "db.sqlite", f->pg)) return -1;
    if (store_open(f->db.url, 1, &f->s, &f->e) != ST_OK) {
        print_error("store_open: %s\n", f->e.msg);
        return -1;
    }
    if (registry_open(f->s, &f->r, &f->e) != ST_OK) {
        print_error("registry_open: %s\n", f->e.msg);
        return -1;
    }
    return 0;
}

static int setup_sqlite(void **state) {
    fx *f = calloc(1, sizeof *f);
    *state = f;
    return f ? open_all(f) : -1;
}

static int setup_pg(void **state) {
    fx *f = calloc(1, sizeof *f);
    *state = f;
    if (!f) return -1;
    f->pg = 1;
    return open_all(f);
}

static int teardown(void **state) {
    fx *f = *state;
    if (!f) return 0;
    store_close(f->s);
    registry_close(f->r);
    test_db_drop(&f->db);
    free(f);
    return 0;
}

/* ---- helpers -------------------------------------------------------------------- */

/* A Patient; NULL/"" fields are left out. */
static json_t *patient(const char *id, const char *nhs, const char *family, const char *given,
                       const char *dob, const char *gender, const char *postcode) {
    json_t *p = json_pack("{s:s,s:s}", "resourceType", "Patient", "id", id);
    if (nhs && *nhs)
        json_object_set_new(p, "identifier", json_pack("[{s:s,s:s}]", "system", NHS_SYS, "value", nhs));
    json_object_set_new(p, "name", json_pack("[{s:s,s:[s]}]", "family", family, "given", given));
    if (dob && *dob) json_object_set_new(p, "birthDate", json_string(dob));
    if (gender && *gender) json_object_set_new(p, "gender", json_string(gender));
    if (postcode && *postcode)
        json_object_set_new(p, "address",
                            json_pack("[{s:s,s:[s]}]", "postalCode", postcode, "line", "1 High Street"));
    return p;
}

static void put(fx *f, json_t *p) {
    store_txn *tx = NULL;
    assert_int_equal(store_begin(f->s, &tx, &f->e), ST_OK);
    status rc = store_put(tx, p, json_string_value(json_object_get(p, "id")), 0, 0, NULL, NULL, NULL, &f->e);
    if (rc != ST_OK) print_error("put: %s at %s\n", f->e.msg, f->e.where);
    assert_int_equal(rc, ST_OK);
    assert_int_equal(store_commit(tx, &f->e), ST_OK);
    json_decref(p);
}

static void del(fx *f, const char *id) {
    store_txn *tx = NULL;
    store_meta m;
    assert_int_equal(store_begin(f->s, &tx, &f->e), ST_OK);
    assert_int_equal(store_delete(tx, "Patient", id, &m, &f->e), ST_OK);
    assert_int_equal(store_commit(tx, &f->e), ST_OK);
}

/* The Person id of a Patient's person ("" if none). */
static void person_of(fx *f, const char *patient_id, char out[80]) {
    char name[96];
    snprintf(name, sizeof name, "Patient/%s", patient_id);
    buf b = {0};
    out[0] = 0;
    err e;
    if (registry_person_show(f->r, name, &b, &e) == ST_OK) {
        json_t *j = json_loads(b.p, 0, NULL);
        const char *p = json_string_value(json_object_get(j, "person"));
        if (p) snprintf(out, 80, "%s", p + 7);
        json_decref(j);
    }
    buf_free(&b);
}

static json_t *read_person(fx *f, const char *id, status *st) {
    buf b = {0};
    store_meta m;
    err e;
    *st = store_read(f->s, "Person", id, 0, &b, &m, &e);
    json_t *j = *st == ST_OK ? json_loads(b.p, 0, NULL) : NULL;
    buf_free(&b);
    return j;
}

/* The Patient ids a Person links, sorted, as "a,b,c". */
static void person_links(fx *f, const char *id, char *out, size_t n) {
    status st;
    json_t *j = read_person(f, id, &st);
    out[0] = 0;
    size_t i, len = 0;
    json_t *x;
    json_array_foreach(json_object_get(j, "link"), i, x) {
        const char *ref = json_string_value(json_object_get(json_object_get(x, "target"), "reference"));
        len += (size_t)snprintf(out + len, n - len, "%s%s", len ? "," : "", ref ? ref + 8 : "?");
    }
    json_decref(j);
}

static json_t *review_list(fx *f, const char *status) {
    buf b = {0};
    assert_int_equal(registry_review_list(f->r, status, 100, &b, &f->e), ST_OK);
    json_t *j = json_loads(b.p, 0, NULL);
    buf_free(&b);
    assert_non_null(j);
    return j;
}

static void run(fx *f, int rebuild, registry_run_report *rep) {
    registry_run_opts o = {rebuild, 0, "test"};
    status rc = registry_run(f->r, &o, rep, &f->e);
    if (rc != ST_OK) print_error("run: %s\n", f->e.msg);
    assert_int_equal(rc, ST_OK);
}

static char *dump(fx *f) {
    buf b = {0};
    assert_int_equal(registry_dump(f->r, &b, &f->e), ST_OK);
    char *t = strdup(b.p ? b.p : "");
    buf_free(&b);
    return t;
}

/* A Person's text without meta (versionId and lastUpdated change on rewrite). */
static char *person_text(fx *f, const char *id) {
    status st;
    json_t *j = read_person(f, id, &st);
    if (!j) return strdup("(none)");
    json_object_del(j, "meta");
    char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return t;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_default_model_is_a_valid_model(void **state) {
    (void)state;
    fs_model m, back;
    registry_default_model(&m);
    buf b = {0};
    fs_model_to_json(&m, &b);
    err e;
    assert_int_equal(fs_model_from_json(b.p, b.len, &back, &e), ST_OK); /* every field sums to 1 */
    buf_free(&b);
    assert_true(m.link_weight > m.review_weight);
}

static void test_linked_in_the_writing_transaction(void **state) {
    fx *f = *state;
    /* rolled back: nothing of it anywhere */
    store_txn *tx = NULL;
    assert_int_equal(store_begin(f->s, &tx, &f->e), ST_OK);
    json_t *p = patient("rb1", "9434765919", "Smith", "John", "1970-01-02", "male", "W2 1NY");
    assert_int_equal(store_put(tx, p, "rb1", 0, 0, NULL, NULL, NULL, &f->e), ST_OK);
    store_rollback(tx);
    json_decref(p);
    char per[80];
    person_of(f, "rb1", per);
    assert_string_equal(per, "");
    char *d = dump(f);
    assert_string_equal(d ? d : "", "");
    free(d);
    /* committed: its person and Person resource are there at once */
    put(f, patient("a1", "9434765919", "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    person_of(f, "a1", per);
    assert_true(per[0]);
    char links[256];
    person_links(f, per, links, sizeof links);
    assert_string_equal(links, "a1");
    status st;
    json_t *j = read_person(f, per, &st);
    assert_int_equal(st, ST_OK);
    assert_string_equal(json_string_value(json_object_get(j, "birthDate")), "1970-01-02");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(j, "identifier"), 0), "value")),
        "9434765919");
    json_decref(j);
}

static void test_same_person_by_nhs_number_and_by_demographics(void **state) {
    fx *f = *state;
    put(f, patient("a1", "9434765919", "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    /* the same valid number written differently, a misspelt name: trusted */
    put(f, patient("a2", "943 476 5919", "Smyth", "Jon", "1970-01-02", "male", NULL));
    /* no NHS number, the same demographics */
    put(f, patient("a3", NULL, "SMITH", "John", "1970-01-02", "male", "W2 1NY"));
    /* someone else */
    put(f, patient("b1", NULL, "Okafor", "Ngozi", "1985-11-30", "female", "NW6 2AB"));
    char p1[80], p2[80], p3[80], p4[80];
    person_of(f, "a1", p1);
    person_of(f, "a2", p2);
    person_of(f, "a3", p3);
    person_of(f, "b1", p4);
    assert_string_equal(p1, p2);
    assert_string_equal(p1, p3);
    assert_string_not_equal(p1, p4);
    char links[256];
    person_links(f, p1, links, sizeof links);
    assert_string_equal(links, "a1,a2,a3");
    /* the same NHS number with a different date of birth and name is not trusted blindly */
    put(f, patient("c1", "9434765919", "Brown", "Alice", "1990-03-04", "female", NULL));
    char p5[80];
    person_of(f, "c1", p5);
    assert_string_not_equal(p5, p1);
}

static void test_update_and_delete(void **state) {
    fx *f = *state;
    put(f, patient("a1", NULL, "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    put(f, patient("a2", NULL, "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    char p1[80], p2[80];
    person_of(f, "a1", p1);
    person_of(f, "a2", p2);
    assert_string_equal(p1, p2);
    /* a2 turns out to be someone else: it leaves */
    put(f, patient("a2", NULL, "Patel", "Priya", "1999-09-09", "female", "HA0 1AA"));
    person_of(f, "a2", p2);
    assert_string_not_equal(p1, p2);
    char links[256];
    person_links(f, p1, links, sizeof links);
    assert_string_equal(links, "a1");
    /* deleting the only record retires the person: its Person is gone */
    del(f, "a2");
    person_of(f, "a2", links);
    assert_string_equal(links, "");
    status st;
    json_t *j = read_person(f, p2, &st);
    assert_int_equal(st, ST_GONE);
    json_decref(j);
    /* writing the same demographics again changes nothing */
    char *d1 = dump(f);
    put(f, patient("a1", NULL, "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    char *d2 = dump(f);
    assert_string_equal(d1, d2);
    free(d1);
    free(d2);
}

/* Two Mary Joneses with the same date of birth and different NHS numbers:
 * between the thresholds. */
static void make_review(fx *f) {
    put(f, patient("m1", "9434765870", "Jones", "Mary", "1980-05-16", "female", NULL));
    put(f, patient("m2", "4010232137", "Jones", "Mary", "1980-05-16", "female", NULL));
}

static void test_review_decisions_survive_run(void **state) {
    fx *f = *state;
    make_review(f);
    put(f, patient("n1", "9990000018", "Khan", "Imran", "1962-02-03", "male", NULL));
    put(f, patient("n2", "9990000026", "Khan", "Imran", "1962-02-03", "male", NULL));
    json_t *l = review_list(f, "open");
    assert_int_equal(json_array_size(json_object_get(l, "items")), 2);
    /* newest first: the Khans, then the Joneses */
    int64_t khan =
        atoll(json_string_value(json_object_get(json_array_get(json_object_get(l, "items"), 0), "id")));
    int64_t jones =
        atoll(json_string_value(json_object_get(json_array_get(json_object_get(l, "items"), 1), "id")));
    json_decref(l);
    buf b = {0};
    assert_int_equal(registry_review_show(f->r, jones, &b, &f->e), ST_OK);
    json_t *show = json_loads(b.p, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(show, "fields")), FS_NFIELDS);
    json_decref(show);
    buf_reset(&b);
    assert_int_equal(registry_review_decide(f->r, jones, 1, "alice", "same woman, two numbers", &b, &f->e),
                     ST_OK);
    assert_int_equal(registry_review_decide(f->r, khan, 0, "bob", NULL, NULL, &f->e), ST_OK);
    /* decided once only */
    assert_int_equal(registry_review_decide(f->r, khan, 1, "bob", NULL, NULL, &f->e), ST_CONFLICT);
    buf_free(&b);
    char m1[80], m2[80], n1[80], n2[80];
    person_of(f, "m1", m1);
    person_of(f, "m2", m2);
    person_of(f, "n1", n1);
    person_of(f, "n2", n2);
    assert_string_equal(m1, m2);
    assert_string_not_equal(n1, n2);
    registry_run_report rep;
    run(f, 0, &rep);
    assert_int_equal(rep.moved, 0);
    assert_int_equal(rep.reviews_opened, 0);
    person_of(f, "m1", m1);
    person_of(f, "m2", m2);
    person_of(f, "n1", n1);
    person_of(f, "n2", n2);
    assert_string_equal(m1, m2);
    assert_string_not_equal(n1, n2);
    /* and after a rebuild from the stored Patients: still so */
    run(f, 1, &rep);
    person_of(f, "n1", n1);
    person_of(f, "n2", n2);
    assert_string_not_equal(n1, n2);
    l = review_list(f, "open");
    assert_int_equal(json_array_size(json_object_get(l, "items")), 0);
    json_decref(l);
}

static void test_merge_then_unmerge_restores_exactly(void **state) {
    fx *f = *state;
    put(f, patient("a1", "9434765919", "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    put(f, patient("a2", NULL, "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    put(f, patient("b1", NULL, "Okafor", "Ngozi", "1985-11-30", "female", "NW6 2AB"));
    make_review(f);
    char pa[80], pb[80];
    person_of(f, "a1", pa);
    person_of(f, "b1", pb);
    char *before = dump(f);
    char *ta = person_text(f, pa), *tb = person_text(f, pb);
    int64_t ev = 0, uev = 0;
    char keep[96], retire[96];
    snprintf(keep, sizeof keep, "Person/%s", pb);
    snprintf(retire, sizeof retire, "Patient/%s", "a1");
    assert_int_equal(registry_merge(f->r, keep, retire, "carol", "test", &ev, &f->e), ST_OK);
    char p[80];
    person_of(f, "a2", p);
    assert_string_equal(p, pb);
    char links[256];
    person_links(f, pb, links, sizeof links);
    assert_string_equal(links, "a1,a2,b1");
    status st;
    json_t *ret = read_person(f, pa, &st); /* the retired Person: inactive, pointing at the survivor */
    assert_int_equal(st, ST_OK);
    assert_false(json_is_true(json_object_get(ret, "active")));
    json_decref(ret);
    char *during = dump(f);
    assert_string_not_equal(before, during);
    /* a1 is in pb now: merging a person with itself is refused */
    assert_int_equal(registry_merge(f->r, keep, retire, "carol", "again", NULL, &f->e), ST_INVALID);
    assert_int_equal(registry_unmerge(f->r, ev, "dave", &uev, &f->e), ST_OK);
    char *after = dump(f);
    assert_string_equal(before, after);
    char *ta2 = person_text(f, pa), *tb2 = person_text(f, pb);
    assert_string_equal(ta, ta2);
    assert_string_equal(tb, tb2);
    /* undone once only, and recorded */
    assert_int_equal(registry_unmerge(f->r, ev, "dave", NULL, &f->e), ST_CONFLICT);
    buf h = {0};
    assert_int_equal(registry_history(f->r, keep, 10, &h, &f->e), ST_OK);
    assert_non_null(strstr(h.p, "\"action\":\"unmerge\""));
    assert_non_null(strstr(h.p, "\"who\":\"carol\""));
    buf_free(&h);
    /* the unmerge is respected by a run: they stay apart */
    registry_run_report rep;
    run(f, 0, &rep);
    person_of(f, "a1", p);
    assert_string_equal(p, pa);
    free(before);
    free(during);
    free(after);
    free(ta);
    free(tb);
    free(ta2);
    free(tb2);
}

static void test_replaced_by_link_merges(void **state) {
    fx *f = *state;
    put(f, patient("h1", NULL, "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    put(f, patient("h2", NULL, "Nowak", "Jan", "1971-03-04", "male", "W9 9WP"));
    char p1[80], p2[80];
    person_of(f, "h1", p1);
    person_of(f, "h2", p2);
    assert_string_not_equal(p1, p2);
    /* ADT^A40 as ingest records it: the retired record links to the survivor */
    json_t *p = patient("h2", NULL, "Nowak", "Jan", "1971-03-04", "male", "W9 9WP");
    json_object_set_new(p, "active", json_false());
    json_object_set_new(
        p, "link", json_pack("[{s:{s:s},s:s}]", "other", "reference", "Patient/h1", "type", "replaced-by"));
    put(f, p);
    person_of(f, "h2", p2);
    assert_string_equal(p1, p2);
    buf h = {0};
    assert_int_equal(registry_history(f->r, NULL, 10, &h, &f->e), ST_OK);
    assert_non_null(strstr(h.p, "\"action\":\"a40-merge\""));
    buf_free(&h);
}

static void test_match_grades(void **state) {
    fx *f = *state;
    put(f, patient("a1", "9434765919", "Smith", "John", "1970-01-02", "male", "W2 1NY"));
    put(f, patient("b1", NULL, "Okafor", "Ngozi", "1985-11-30", "female", "NW6 2AB"));
    json_t *q = patient("q", "9434765919", "Smith", "John", "1970-01-02", "male", NULL);
    buf b = {0};
    assert_int_equal(registry_match(f->r, q, 0, 10, "http://x/fhir", &b, &f->e), ST_OK);
    json_t *j = json_loads(b.p, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "searchset");
    assert_int_equal(json_integer_value(json_object_get(j, "total")), 1);
    json_t *s = json_object_get(json_array_get(json_object_get(j, "entry"), 0), "search");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(s, "extension"), 0), "valueCode")),
        "certain");
    assert_true(json_real_value(json_object_get(s, "score")) >= 0.999);
    json_decref(j);
    json_decref(q);
    /* a weaker match: no NHS number, no address, a shortened given name */
    q = patient("q", NULL, "Smith", "Jon", "1970-01-02", "male", NULL);
    buf_reset(&b);
    assert_int_equal(registry_match(f->r, q, 0, 10, "http://x/fhir", &b, &f->e), ST_OK);
    j = json_loads(b.p, 0, NULL);
    s = json_object_get(json_array_get(json_object_get(j, "entry"), 0), "search");
    const char *g =
        json_string_value(json_object_get(json_array_get(json_object_get(s, "extension"), 0), "valueCode"));
    assert_true(g && (strcmp(g, "probable") == 0 || strcmp(g, "possible") == 0));
    json_decref(j);
    buf_reset(&b);
    assert_int_equal(registry_match(f->r, q, 1, 10, "http://x/fhir", &b, &f->e), ST_OK);
    j = json_loads(b.p, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "total")), 0);
    json_decref(j);
    json_decref(q);
    buf_free(&b);
}

/* People with a few records each, some mistyped: enough to train on. */
static void population(fx *f, int people, int start) {
    static const char *fam[] = {"Smith",  "Jones", "Taylor", "Brown",  "Khan",  "Patel", "Wilson", "Evans",
                                "Okafor", "Nowak", "Murphy", "Hughes", "Begum", "Ali",   "Clarke", "Walker"};
    static const char *giv[] = {"John",  "Mary", "Ahmed", "Grace", "Tom",  "Sarah", "Ravi", "Anna",
                                "Peter", "Zara", "Ian",   "Lucy",  "Omar", "Ella",  "Sam",  "Kate"};
    store_txn *tx = NULL;
    assert_int_equal(store_begin(f->s, &tx, &f->e), ST_OK);
    for (int i = start; i < start + people; i++) {
        char dob[16], id[32], pc[16];
        snprintf(dob, sizeof dob, "%04d-%02d-%02d", 1930 + i % 80, 1 + i % 12, 1 + (i * 7) % 28);
        snprintf(pc, sizeof pc, "W%d %d%c%c", 1 + i % 12, i % 10, "ABDEFGHJLNPQRSTUWXYZ"[i % 20],
                 "ABDEFGHJLNPQRSTUWXYZ"[(i / 20) % 20]);
        const char *fa = fam[(i * 7) % 16], *gi = giv[(i * 5) % 16];
        for (int k = 0; k < 1 + i % 3; k++) {
            snprintf(id, sizeof id, "pop%d-%d", i, k);
            char fam2[32];
            snprintf(fam2, sizeof fam2, "%s%s", fa, k == 2 && i % 5 == 0 ? "e" : "");
            json_t *p = patient(id, NULL, fam2, gi, dob, i % 2 ? "male" : "female", k == 1 ? NULL : pc);
            assert_int_equal(store_put(tx, p, id, 0, 0, NULL, NULL, NULL, &f->e), ST_OK);
            json_decref(p);
        }
    }
    assert_int_equal(store_commit(tx, &f->e), ST_OK);
}

static void test_train_saves_a_new_model_version(void **state) {
    fx *f = *state;
    registry_train_report tr;
    /* too few records: the default model stays */
    assert_int_equal(registry_train(f->r, "erin", &tr, &f->e), ST_INVALID);
    population(f, 200, 0);
    assert_int_equal(registry_train(f->r, "erin", &tr, &f->e), ST_OK);
    assert_int_equal(tr.version, 1);
    assert_true(tr.records >= 390);
    fs_model m;
    int64_t v = 0;
    assert_int_equal(registry_model(f->r, &m, &v, &f->e), ST_OK);
    assert_int_equal(v, 1);
    assert_int_equal(registry_train(f->r, "erin", &tr, &f->e), ST_OK);
    assert_int_equal(tr.version, 2);
    registry_run_report rep;
    run(f, 0, &rep);
    assert_int_equal(rep.records, tr.records);
}

static void test_run_rebuild_links_what_was_written_without_the_registry(void **state) {
    fx *f = *state;
    /* a second store handle on the same database, without the registry */
    store *plain = NULL;
    assert_int_equal(store_open(f->db.url, 1, &plain, &f->e), ST_OK);
    store_txn *tx = NULL;
    assert_int_equal(store_begin(plain, &tx, &f->e), ST_OK);
    json_t *p1 = patient("z1", "9434765919", "Smith", "John", "1970-01-02", "male", "W2 1NY");
    json_t *p2 = patient("z2", NULL, "Smith", "John", "1970-01-02", "male", "W2 1NY");
    json_t *p3 = patient("z3", NULL, "Okafor", "Ngozi", "1985-11-30", "female", NULL);
    assert_int_equal(store_put(tx, p1, "z1", 0, 0, NULL, NULL, NULL, &f->e), ST_OK);
    assert_int_equal(store_put(tx, p2, "z2", 0, 0, NULL, NULL, NULL, &f->e), ST_OK);
    assert_int_equal(store_put(tx, p3, "z3", 0, 0, NULL, NULL, NULL, &f->e), ST_OK);
    assert_int_equal(store_commit(tx, &f->e), ST_OK);
    json_decref(p1);
    json_decref(p2);
    json_decref(p3);
    store_close(plain);
    char a[80];
    person_of(f, "z1", a);
    assert_string_equal(a, "");
    registry_run_report rep;
    run(f, 1, &rep);
    assert_int_equal(rep.records_added, 3);
    assert_int_equal(rep.persons_created, 2);
    char b[80], c[80];
    person_of(f, "z1", a);
    person_of(f, "z2", b);
    person_of(f, "z3", c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    /* what run built, the hook keeps: a new record finds them */
    put(f, patient("z4", "9434765919", "Smith", "John", "1970-01-02", "male", NULL));
    person_of(f, "z4", c);
    assert_string_equal(a, c);
    /* and a second run changes nothing */
    run(f, 1, &rep);
    assert_int_equal(rep.moved, 0);
    assert_int_equal(rep.records_added, 0);
}

/* Two women of one name and birth date with different valid NHS numbers, and
 * a record without a number that matches both: it joins one of them, and a
 * batch run does not make one person of all three through it. */
static void test_run_keeps_different_nhs_numbers_apart(void **state) {
    fx *f = *state;
    put(f, patient("f1", "9434765870", "Patel", "Fatima", "1957-04-29", "female", "W2 6YZ"));
    put(f, patient("f2", "4010232137", "Patel", "Fatima", "1957-04-29", "female", NULL));
    put(f, patient("f3", NULL, "PATEL", "Fatima", "1957-04-29", "female", NULL));
    char a[80], b[80], c[80];
    person_of(f, "f1", a);
    person_of(f, "f2", b);
    person_of(f, "f3", c);
    assert_string_not_equal(a, b);
    assert_true(strcmp(c, a) == 0 || strcmp(c, b) == 0);
    registry_run_report rep;
    run(f, 0, &rep);
    person_of(f, "f1", a);
    person_of(f, "f2", b);
    assert_string_not_equal(a, b);
    assert_true(rep.blocked_by_nhs >= 1);
}

#define TESTS(X)                                                                                             \
    X(test_linked_in_the_writing_transaction)                                                                \
    X(test_same_person_by_nhs_number_and_by_demographics)                                                    \
    X(test_update_and_delete)                                                                                \
    X(test_review_decisions_survive_run)                                                                     \
    X(test_merge_then_unmerge_restores_exactly)                                                              \
    X(test_replaced_by_link_merges)                                                                          \
    X(test_match_grades)                                                                                     \
    X(test_train_saves_a_new_model_version)                                                                  \
    X(test_run_rebuild_links_what_was_written_without_the_registry)                                          \
    X(test_run_keeps_different_nhs_numbers_apart)

#define SQLITE_TEST(fn) {"sqlite: " #fn, fn, setup_sqlite, teardown, NULL},
#define PG_TEST(fn)     {"postgresql: " #fn, fn, setup_pg, teardown, NULL},

static void test_postgresql_skipped(void **state) {
    (void)state;
    print_message(
        "skipped: CONCORD_TEST_PG not set (run under tests/with-postgres.sh for the PostgreSQL backend)\n");
    skip();
}

int main(void) {
    static const struct CMUnitTest common[] = {cmocka_unit_test(test_default_model_is_a_valid_model)};
    static const struct CMUnitTest sqlite_tests[] = {TESTS(SQLITE_TEST)};
    static const struct CMUnitTest pg_tests[] = {TESTS(PG_TEST)};
    static const struct CMUnitTest pg_skipped[] = {cmocka_unit_test(test_postgresql_skipped)};
    int failed = cmocka_run_group_tests_name("registry model", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("registry on SQLite", sqlite_tests, NULL, NULL);
    const char *pg = getenv("CONCORD_TEST_PG");
    if (pg && *pg)
        failed += cmocka_run_group_tests_name("registry on PostgreSQL", pg_tests, NULL, NULL);
    else
        failed += cmocka_run_group_tests_name("registry on PostgreSQL", pg_skipped, NULL, NULL);
    return failed ? 1 : 0;
}
