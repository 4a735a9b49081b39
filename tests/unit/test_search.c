/*
 * test_search.c — parsing FHIR search requests (src/fhir/search.c): the
 * query-string splitter (percent-decoding, '+'), each parameter type's
 * value syntax (prefixes, partial dates, number precision, token
 * system|code forms and escapes, quantities, references), which modifiers
 * each type accepts, unknown parameters (strict and lenient), the result
 * parameters (_count, _offset, _sort, _include, _revinclude, _summary,
 * _total) and chained parameters.
 *
 * Every test parses a query string exactly as the REST layer does:
 * search_split_query, then search_parse on a resource type. The expected
 * values come from the FHIR R4 search specification
 * (hl7.org/fhir/R4/search.html).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/buf.h"
#include "fhir/search.h"

/* ------------------------------------------------------------- helpers */

typedef struct fixture {
    arena a;
    search_query q;
    err e;
    search_param_kv *kv;
    int n;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    arena_free(&f->a);
    free(f);
    return 0;
}

/* Split `qs` and parse it as a search on `type`. */
static status parse_on(fixture *f, const char *type, const char *qs, int lenient) {
    arena_reset(&f->a);
    memset(&f->e, 0, sizeof f->e);
    memset(&f->q, 0, sizeof f->q);
    f->n = search_split_query(&f->a, qs, strlen(qs), &f->kv);
    return search_parse(&f->a, type, f->kv, f->n, lenient, &f->q, &f->e);
}

/* Parse; fail the test with the error message unless it succeeds. */
static void ok_on(fixture *f, const char *type, const char *qs) {
    status rc = parse_on(f, type, qs, 0);
    if (rc != ST_OK)
        fail_msg("%s?%s: expected success, got %s (%s) at '%s': %s", type, qs, status_name(rc),
                 f->e.issue ? f->e.issue : "-", f->e.where, f->e.msg);
}

/* Parse; fail unless it is rejected with `code` and e.where == `where`. */
static void bad_on(fixture *f, const char *type, const char *qs, status code, const char *where) {
    status rc = parse_on(f, type, qs, 0);
    if (rc == ST_OK) fail_msg("%s?%s: expected %s, got success", type, qs, status_name(code));
    if (rc != code || strcmp(f->e.where, where) != 0)
        fail_msg("%s?%s: expected %s at '%s', got %s at '%s': %s", type, qs, status_name(code), where,
                 status_name(rc), f->e.where, f->e.msg);
    assert_true(f->e.msg[0] != 0);
}

static int64_t utc(int y, int mo, int d, int h, int mi, int s) {
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static const search_value *only_value(const fixture *f) {
    assert_int_equal(f->q.n_clauses, 1);
    assert_int_equal(f->q.clauses[0].n_values, 1);
    return &f->q.clauses[0].values[0];
}

#define assert_str(a, b)                                                                                     \
    do {                                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                                     \
        if (!a_ || !b_) {                                                                                    \
            if (a_ != b_) fail_msg("%s: expected %s, got %s", #a, b_ ? b_ : "NULL", a_ ? a_ : "NULL");       \
        } else if (strcmp(a_, b_) != 0)                                                                      \
            fail_msg("%s: expected \"%s\", got \"%s\"", #a, b_, a_);                                         \
    } while (0)

#define assert_near(a, b) assert_float_equal((a), (b), 1e-9)

/* ------------------------------------------------- search_split_query */

static void test_split_basic(void **state) {
    fixture *f = *state;
    const char *qs = "a=1&b=hello+world&c=%41%2b%2F&&d&e=";
    f->n = search_split_query(&f->a, qs, strlen(qs), &f->kv);
    assert_int_equal(f->n, 5);
    assert_str(f->kv[0].name, "a");
    assert_str(f->kv[0].value, "1");
    assert_str(f->kv[1].name, "b");
    assert_str(f->kv[1].value, "hello world");
    assert_str(f->kv[2].name, "c");
    assert_str(f->kv[2].value, "A+/");
    assert_str(f->kv[3].name, "d");
    assert_str(f->kv[3].value, "");
    assert_str(f->kv[4].name, "e");
    assert_str(f->kv[4].value, "");
}

static void test_split_decodes_names_and_keeps_bad_escapes(void **state) {
    fixture *f = *state;
    const char *qs = "name%3Aexact=J%C3%B6rg&x=%zz%4&q=a%26b%3Dc&k=v=w";
    f->n = search_split_query(&f->a, qs, strlen(qs), &f->kv);
    assert_int_equal(f->n, 4);
    assert_str(f->kv[0].name, "name:exact");
    assert_str(f->kv[0].value, "J\xc3\xb6rg");
    assert_str(f->kv[1].value, "%zz%4"); /* not an escape: kept as written */
    assert_str(f->kv[2].value, "a&b=c"); /* encoded separators are data */
    assert_str(f->kv[3].name, "k");
    assert_str(f->kv[3].value, "v=w"); /* the first '=' separates */
}

static void test_split_length_is_authoritative(void **state) {
    fixture *f = *state;
    const char *qs = "a=1&b=2";
    f->n = search_split_query(&f->a, qs, 3, &f->kv); /* only "a=1" */
    assert_int_equal(f->n, 1);
    assert_str(f->kv[0].value, "1");
    f->n = search_split_query(&f->a, "", 0, &f->kv);
    assert_int_equal(f->n, 0);
    f->n = search_split_query(&f->a, "&&&", 3, &f->kv);
    assert_int_equal(f->n, 0);
}

static void test_split_many(void **state) {
    fixture *f = *state;
    buf b = {0};
    for (int i = 0; i < 100; i++)
        buf_printf(&b, "%sp%d=v%d", i ? "&" : "", i, i);
    f->n = search_split_query(&f->a, b.p, b.len, &f->kv);
    buf_free(&b);
    assert_int_equal(f->n, 100);
    for (int i = 0; i < 100; i++) {
        char name[16], value[16];
        snprintf(name, sizeof name, "p%d", i);
        snprintf(value, sizeof value, "v%d", i);
        assert_str(f->kv[i].name, name);
        assert_str(f->kv[i].value, value);
    }
}

/* ---------------------------------------------------------------- token */

static void test_token_forms(void **state) {
    fixture *f = *state;
    const search_value *v;

    ok_on(f, "Observation", "code=http://loinc.org|8867-4");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].type, SP_TOKEN);
    assert_int_equal(f->q.clauses[0].target, ST_PARAM);
    assert_str(f->q.clauses[0].sp->code, "code");
    assert_str(v->system, "http://loinc.org");
    assert_str(v->code, "8867-4");

    ok_on(f, "Observation", "code=8867-4"); /* any system */
    v = only_value(f);
    assert_null(v->system);
    assert_str(v->code, "8867-4");

    ok_on(f, "Observation", "code=|8867-4"); /* explicitly no system */
    v = only_value(f);
    assert_str(v->system, "");
    assert_str(v->code, "8867-4");

    ok_on(f, "Observation", "code=http://loinc.org|"); /* any code in the system */
    v = only_value(f);
    assert_str(v->system, "http://loinc.org");
    assert_null(v->code);

    /* prefixes are not a thing for tokens: "ge123" is a code */
    ok_on(f, "Observation", "code=ge123");
    v = only_value(f);
    assert_int_equal(v->prefix, PFX_EQ);
    assert_str(v->code, "ge123");
}

static void test_token_escapes(void **state) {
    fixture *f = *state;
    const search_value *v;

    /* \| is a literal bar, \, a literal comma: one value */
    ok_on(f, "Patient", "identifier=urn:x\\|y|12\\,3");
    v = only_value(f);
    assert_str(v->system, "urn:x|y");
    assert_str(v->code, "12,3");

    ok_on(f, "Patient", "identifier=a\\|b");
    v = only_value(f);
    assert_null(v->system);
    assert_str(v->code, "a|b");

    /* unescaped commas separate values (OR) */
    ok_on(f, "Observation", "code=a\\,b,sys|c");
    assert_int_equal(f->q.n_clauses, 1);
    assert_int_equal(f->q.clauses[0].n_values, 2);
    assert_null(f->q.clauses[0].values[0].system);
    assert_str(f->q.clauses[0].values[0].code, "a,b");
    assert_str(f->q.clauses[0].values[1].system, "sys");
    assert_str(f->q.clauses[0].values[1].code, "c");

    /* \\ is a literal backslash */
    ok_on(f, "Patient", "family=O\\\\Brien");
    v = only_value(f);
    assert_str(v->text, "O\\Brien");

    /* percent-encoded escapes arrive the same way */
    ok_on(f, "Patient", "identifier=urn%3Ax%5C%7Cy%7C12%5C%2C3");
    v = only_value(f);
    assert_str(v->system, "urn:x|y");
    assert_str(v->code, "12,3");
}

static void test_token_empty_rejected(void **state) {
    fixture *f = *state;
    bad_on(f, "Observation", "code=", ST_INVALID, "code");
    bad_on(f, "Observation", "status=final,", ST_INVALID, "status");
}

/* ---------------------------------------------------------------- string */

static void test_string_values(void **state) {
    fixture *f = *state;
    const search_value *v;
    ok_on(f, "Patient", "family=Chalmers");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].type, SP_STRING);
    assert_int_equal(f->q.clauses[0].modifier, MOD_NONE);
    assert_str(v->text, "Chalmers");

    ok_on(f, "Patient", "family=gtx"); /* no prefixes on strings */
    v = only_value(f);
    assert_int_equal(v->prefix, PFX_EQ);
    assert_str(v->text, "gtx");

    ok_on(f, "Patient", "name=van+der+Berg,Smith\\,Jr");
    assert_int_equal(f->q.clauses[0].n_values, 2);
    assert_str(f->q.clauses[0].values[0].text, "van der Berg");
    assert_str(f->q.clauses[0].values[1].text, "Smith,Jr");

    bad_on(f, "Patient", "family=", ST_INVALID, "family");
}

/* ----------------------------------------------------------------- date */

static void test_date_partial_precisions(void **state) {
    fixture *f = *state;
    const search_value *v;

    ok_on(f, "Patient", "birthdate=2024");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].type, SP_DATE);
    assert_int_equal(v->prefix, PFX_EQ);
    assert_int_equal(v->lo, utc(2024, 1, 1, 0, 0, 0));
    assert_int_equal(v->hi, utc(2025, 1, 1, 0, 0, 0) - 1);

    ok_on(f, "Patient", "birthdate=2024-02"); /* leap year */
    v = only_value(f);
    assert_int_equal(v->lo, utc(2024, 2, 1, 0, 0, 0));
    assert_int_equal(v->hi, utc(2024, 2, 29, 23, 59, 59));

    ok_on(f, "Patient", "birthdate=2023-02");
    v = only_value(f);
    assert_int_equal(v->hi, utc(2023, 2, 28, 23, 59, 59));

    ok_on(f, "Patient", "birthdate=1974-12-25");
    v = only_value(f);
    assert_int_equal(v->lo, utc(1974, 12, 25, 0, 0, 0));
    assert_int_equal(v->hi, utc(1974, 12, 25, 23, 59, 59));

    ok_on(f, "Observation", "date=2024-03-05T10:15:30Z");
    v = only_value(f);
    assert_int_equal(v->lo, utc(2024, 3, 5, 10, 15, 30));
    assert_int_equal(v->hi, utc(2024, 3, 5, 10, 15, 30));

    /* '+' in a query string is a space: the zone must arrive as %2B */
    ok_on(f, "Observation", "date=2024-03-05T10:15:30%2B01:00");
    v = only_value(f);
    assert_int_equal(v->lo, utc(2024, 3, 5, 9, 15, 30));
    assert_int_equal(v->hi, utc(2024, 3, 5, 9, 15, 30));
}

static void test_date_prefixes(void **state) {
    fixture *f = *state;
    static const struct {
        const char *value;
        search_prefix p;
    } cases[] = {{"eq2024", PFX_EQ}, {"ne2024", PFX_NE}, {"gt2024", PFX_GT},
                 {"lt2024", PFX_LT}, {"ge2024", PFX_GE}, {"le2024", PFX_LE},
                 {"sa2024", PFX_SA}, {"eb2024", PFX_EB}, {"ap2024", PFX_AP}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char qs[64];
        snprintf(qs, sizeof qs, "birthdate=%s", cases[i].value);
        ok_on(f, "Patient", qs);
        const search_value *v = only_value(f);
        if (v->prefix != cases[i].p) fail_msg("%s: prefix %d, expected %d", qs, v->prefix, cases[i].p);
        assert_int_equal(v->lo, utc(2024, 1, 1, 0, 0, 0));
        assert_int_equal(v->hi, utc(2025, 1, 1, 0, 0, 0) - 1);
    }
    /* OR of two values with different prefixes */
    ok_on(f, "Patient", "birthdate=lt1950,ge2000-06");
    assert_int_equal(f->q.clauses[0].n_values, 2);
    assert_int_equal(f->q.clauses[0].values[0].prefix, PFX_LT);
    assert_int_equal(f->q.clauses[0].values[0].lo, utc(1950, 1, 1, 0, 0, 0));
    assert_int_equal(f->q.clauses[0].values[1].prefix, PFX_GE);
    assert_int_equal(f->q.clauses[0].values[1].lo, utc(2000, 6, 1, 0, 0, 0));
    /* AND: the parameter repeated */
    ok_on(f, "Patient", "birthdate=ge1970&birthdate=lt1980");
    assert_int_equal(f->q.n_clauses, 2);
    assert_int_equal(f->q.clauses[0].values[0].prefix, PFX_GE);
    assert_int_equal(f->q.clauses[1].values[0].prefix, PFX_LT);
}

static void test_date_invalid(void **state) {
    fixture *f = *state;
    bad_on(f, "Patient", "birthdate=2023-02-29", ST_INVALID, "birthdate");
    bad_on(f, "Patient", "birthdate=2024-13", ST_INVALID, "birthdate");
    bad_on(f, "Patient", "birthdate=ge", ST_INVALID, "birthdate");
    bad_on(f, "Patient", "birthdate=xx2024", ST_INVALID, "birthdate");
    bad_on(f, "Patient", "birthdate=yesterday", ST_INVALID, "birthdate");
    bad_on(f, "Patient", "birthdate=1974-12-25,nope", ST_INVALID, "birthdate");
    bad_on(f, "Observation", "date=2024-03-05T25:00:00Z", ST_INVALID, "date");
}

static void test_lastupdated_and_id(void **state) {
    fixture *f = *state;
    const search_value *v;
    ok_on(f, "Patient", "_lastUpdated=ge2024-01-01");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].target, ST_LASTUPDATED);
    assert_int_equal(f->q.clauses[0].type, SP_DATE);
    assert_int_equal(v->prefix, PFX_GE);
    assert_int_equal(v->lo, utc(2024, 1, 1, 0, 0, 0));
    assert_int_equal(v->hi, utc(2024, 1, 1, 23, 59, 59));
    bad_on(f, "Patient", "_lastUpdated=soon", ST_INVALID, "_lastUpdated");

    ok_on(f, "Patient", "_id=a1,b-2");
    assert_int_equal(f->q.n_clauses, 1);
    assert_int_equal(f->q.clauses[0].target, ST_ID);
    assert_int_equal(f->q.clauses[0].type, SP_TOKEN);
    assert_int_equal(f->q.clauses[0].n_values, 2);
    assert_str(f->q.clauses[0].values[0].text, "a1");
    assert_str(f->q.clauses[0].values[1].text, "b-2");
    bad_on(f, "Patient", "_id=", ST_INVALID, "_id");
}

/* --------------------------------------------------------------- number */

static void test_number_precision(void **state) {
    fixture *f = *state;
    const search_value *v;

    ok_on(f, "RiskAssessment", "probability=100");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].type, SP_NUMBER);
    assert_int_equal(v->prefix, PFX_EQ);
    assert_near(v->num, 100.0);
    assert_near(v->nlo, 99.5);
    assert_near(v->nhi, 100.5);

    ok_on(f, "RiskAssessment", "probability=100.0");
    v = only_value(f);
    assert_near(v->num, 100.0);
    assert_near(v->nlo, 99.95);
    assert_near(v->nhi, 100.05);

    ok_on(f, "RiskAssessment", "probability=100.00");
    v = only_value(f);
    assert_near(v->nlo, 99.995);
    assert_near(v->nhi, 100.005);

    ok_on(f, "RiskAssessment", "probability=0.8");
    v = only_value(f);
    assert_near(v->num, 0.8);
    assert_near(v->nlo, 0.75);
    assert_near(v->nhi, 0.85);

    ok_on(f, "RiskAssessment", "probability=-1.25");
    v = only_value(f);
    assert_near(v->num, -1.25);
    assert_near(v->nlo, -1.255);
    assert_near(v->nhi, -1.245);

    ok_on(f, "RiskAssessment", "probability=1e2");
    v = only_value(f);
    assert_near(v->num, 100.0);
    assert_true(v->nlo < 100.0 && v->nhi > 100.0);
}

static void test_number_prefixes(void **state) {
    fixture *f = *state;
    static const struct {
        const char *value;
        search_prefix p;
    } cases[] = {{"gt0.5", PFX_GT}, {"lt0.5", PFX_LT}, {"ge0.5", PFX_GE},
                 {"le0.5", PFX_LE}, {"ne0.5", PFX_NE}, {"sa0.5", PFX_SA},
                 {"eb0.5", PFX_EB}, {"ap0.5", PFX_AP}, {"eq0.5", PFX_EQ}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char qs[64];
        snprintf(qs, sizeof qs, "probability=%s", cases[i].value);
        ok_on(f, "RiskAssessment", qs);
        const search_value *v = only_value(f);
        if (v->prefix != cases[i].p) fail_msg("%s: prefix %d, expected %d", qs, v->prefix, cases[i].p);
        assert_near(v->num, 0.5);
        assert_near(v->nlo, 0.45);
        assert_near(v->nhi, 0.55);
    }
}

static void test_number_invalid(void **state) {
    fixture *f = *state;
    bad_on(f, "RiskAssessment", "probability=abc", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=1.2.3", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=gt", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=nan", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=inf", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=1e999", ST_INVALID, "probability");
    bad_on(f, "RiskAssessment", "probability=0.5+", ST_INVALID, "probability"); /* "0.5 " */
}

/* A search number is a FHIR decimal; C's strtod also reads hexadecimal. */
static void test_number_is_decimal_not_hex(void **state) {
    fixture *f = *state;
    bad_on(f, "RiskAssessment", "probability=0x10", ST_INVALID, "probability");
    bad_on(f, "Observation", "value-quantity=0x1p4||mg", ST_INVALID, "value-quantity");
}

/* ------------------------------------------------------------- quantity */

static void test_quantity_forms(void **state) {
    fixture *f = *state;
    const search_value *v;

    ok_on(f, "Observation", "value-quantity=5.4|http://unitsofmeasure.org|mg");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].type, SP_QUANTITY);
    assert_int_equal(v->prefix, PFX_EQ);
    assert_near(v->num, 5.4);
    assert_near(v->nlo, 5.35);
    assert_near(v->nhi, 5.45);
    assert_str(v->system, "http://unitsofmeasure.org");
    assert_str(v->code, "mg");

    ok_on(f, "Observation", "value-quantity=le5.4||mg");
    v = only_value(f);
    assert_int_equal(v->prefix, PFX_LE);
    assert_null(v->system);
    assert_str(v->code, "mg");

    ok_on(f, "Observation", "value-quantity=72");
    v = only_value(f);
    assert_near(v->num, 72);
    assert_null(v->system);
    assert_null(v->code);

    ok_on(f, "Observation", "value-quantity=5.4|http://x\\|y|mg");
    v = only_value(f);
    assert_str(v->system, "http://x|y");
    assert_str(v->code, "mg");

    bad_on(f, "Observation", "value-quantity=5.4|mg", ST_INVALID, "value-quantity");
    bad_on(f, "Observation", "value-quantity=five||mg", ST_INVALID, "value-quantity");
    bad_on(f, "Observation", "value-quantity=|http://unitsofmeasure.org|mg", ST_INVALID, "value-quantity");
}

/* ------------------------------------------------------------ reference */

static void test_reference_forms(void **state) {
    fixture *f = *state;
    const search_value *v;

    ok_on(f, "Observation", "subject=Patient/p1");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].type, SP_REFERENCE);
    assert_str(v->ref_type, "Patient");
    assert_str(v->ref_id, "p1");
    assert_null(v->ref_url);
    assert_null(v->chain);

    ok_on(f, "Observation", "subject=p1");
    v = only_value(f);
    assert_null(v->ref_type);
    assert_str(v->ref_id, "p1");

    ok_on(f, "Observation", "subject=Patient/p1/_history/3");
    v = only_value(f);
    assert_str(v->ref_type, "Patient");
    assert_str(v->ref_id, "p1");

    ok_on(f, "Observation", "subject=http://example.org/fhir/Patient/p1");
    v = only_value(f);
    assert_str(v->ref_url, "http://example.org/fhir/Patient/p1");
    assert_str(v->ref_type, "Patient");
    assert_str(v->ref_id, "p1");

    ok_on(f, "Observation", "subject=urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0");
    v = only_value(f);
    assert_str(v->ref_url, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0");
    assert_null(v->ref_type);

    ok_on(f, "Observation", "subject:Patient=p1");
    v = only_value(f);
    assert_int_equal(f->q.clauses[0].modifier, MOD_TYPE);
    assert_str(f->q.clauses[0].type_modifier, "Patient");
    assert_str(v->ref_type, "Patient");
    assert_str(v->ref_id, "p1");

    ok_on(f, "Observation", "subject:Patient=Patient/p1");
    v = only_value(f);
    assert_str(v->ref_type, "Patient");

    bad_on(f, "Observation", "subject:Patient=Group/g1", ST_INVALID, "subject:Patient");
    bad_on(f, "Observation", "subject=Foo/1", ST_INVALID, "subject");
    bad_on(f, "Observation", "subject=", ST_INVALID, "subject");
}

/* ------------------------------------------------------------ modifiers */

typedef struct mod_case {
    const char *type, *name;
    int accepted;
    search_modifier mod;
} mod_case;

static void test_modifiers_per_type(void **state) {
    fixture *f = *state;
    static const mod_case cases[] = {
        /* string */
        {"Patient", "family:exact", 1, MOD_EXACT},
        {"Patient", "family:contains", 1, MOD_CONTAINS},
        {"Patient", "family:not", 0, MOD_NONE},
        {"Patient", "family:text", 0, MOD_NONE},
        {"Patient", "family:below", 0, MOD_NONE},
        {"Patient", "family:Patient", 0, MOD_NONE},
        /* token */
        {"Patient", "gender:not", 1, MOD_NOT},
        {"Patient", "gender:exact", 0, MOD_NONE},
        {"Patient", "gender:contains", 0, MOD_NONE},
        {"Patient", "gender:text", 0, MOD_NONE},
        {"Patient", "gender:above", 0, MOD_NONE},
        {"Patient", "gender:bogus", 0, MOD_NONE},
        /* date */
        {"Patient", "birthdate:exact", 0, MOD_NONE},
        {"Patient", "birthdate:not", 0, MOD_NONE},
        {"Patient", "birthdate:contains", 0, MOD_NONE},
        /* number */
        {"RiskAssessment", "probability:exact", 0, MOD_NONE},
        {"RiskAssessment", "probability:not", 0, MOD_NONE},
        /* quantity */
        {"Observation", "value-quantity:contains", 0, MOD_NONE},
        {"Observation", "value-quantity:not", 0, MOD_NONE},
        /* reference */
        {"Observation", "subject:Group", 1, MOD_TYPE},
        {"Observation", "subject:Organization", 0, MOD_NONE}, /* not a target of subject */
        {"Observation", "subject:exact", 0, MOD_NONE},
        {"Observation", "subject:not", 0, MOD_NONE},
        {"Observation", "subject:Foo", 0, MOD_NONE},
        /* uri */
        {"Patient", "_profile:below", 1, MOD_BELOW},
        {"Patient", "_profile:above", 1, MOD_ABOVE},
        {"Patient", "_profile:contains", 0, MOD_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const mod_case *c = &cases[i];
        const char *value = strstr(c->name, "subject")                                      ? "x1"
                            : strstr(c->name, "_profile")                                   ? "http://x.org/p"
                            : strstr(c->name, "birthdate")                                  ? "2024"
                            : strstr(c->name, "probability") || strstr(c->name, "quantity") ? "5"
                                                                                            : "abc";
        char qs[128];
        snprintf(qs, sizeof qs, "%s=%s", c->name, value);
        status rc = parse_on(f, c->type, qs, 0);
        if (c->accepted) {
            if (rc != ST_OK)
                fail_msg("%s?%s: expected accepted, got %s: %s", c->type, qs, status_name(rc), f->e.msg);
            if (f->q.clauses[0].modifier != c->mod)
                fail_msg("%s?%s: modifier %d, expected %d", c->type, qs, f->q.clauses[0].modifier, c->mod);
        } else {
            if (rc != ST_INVALID)
                fail_msg("%s?%s: expected ST_INVALID, got %s", c->type, qs,
                         rc == ST_OK ? "success" : status_name(rc));
            if (strcmp(f->e.where, c->name) != 0)
                fail_msg("%s?%s: where '%s', expected '%s'", c->type, qs, f->e.where, c->name);
        }
    }
}

static void test_missing_modifier(void **state) {
    fixture *f = *state;
    static const struct {
        const char *type, *name;
    } params[] = {{"Patient", "family"},
                  {"Patient", "gender"},
                  {"Patient", "birthdate"},
                  {"RiskAssessment", "probability"},
                  {"Observation", "value-quantity"},
                  {"Observation", "subject"},
                  {"Patient", "_profile"}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        for (int want = 0; want < 2; want++) {
            char qs[96];
            snprintf(qs, sizeof qs, "%s:missing=%s", params[i].name, want ? "true" : "false");
            status rc = parse_on(f, params[i].type, qs, 0);
            if (rc != ST_OK) fail_msg("%s?%s: %s", params[i].type, qs, f->e.msg);
            assert_int_equal(f->q.n_clauses, 1);
            assert_int_equal(f->q.clauses[0].modifier, MOD_MISSING);
            assert_int_equal(f->q.clauses[0].missing, want);
            assert_int_equal(f->q.clauses[0].n_values, 0);
        }
        char qs[96], where[64];
        snprintf(qs, sizeof qs, "%s:missing=yes", params[i].name);
        snprintf(where, sizeof where, "%s:missing", params[i].name);
        bad_on(f, params[i].type, qs, ST_INVALID, where);
    }
}

/* ------------------------------------------ unknown parameters, lenient */

static void test_unknown_parameter_strict(void **state) {
    fixture *f = *state;
    bad_on(f, "Patient", "name=x&foo=bar", ST_INVALID, "foo");
    assert_str(f->e.issue, "not-found");
    assert_non_null(strstr(f->e.msg, "foo"));
    /* a parameter of another type is unknown here */
    bad_on(f, "Patient", "code=123", ST_INVALID, "code");
    /* composite and special parameters are not supported: still a 400 */
    bad_on(f, "Observation", "code-value-quantity=x$5", ST_INVALID, "code-value-quantity");
    assert_str(f->e.issue, "not-supported");
    bad_on(f, "Patient", "_text=abc", ST_INVALID, "_text");
    /* unsupported result parameters */
    bad_on(f, "Patient", "_summary=true", ST_INVALID, "_summary");
    bad_on(f, "Patient", "_total=some", ST_INVALID, "_total");
    bad_on(f, "Patient", "_format=xml", ST_UNSUPPORTED, "_format");
}

static void test_unknown_parameter_lenient(void **state) {
    fixture *f = *state;
    status rc = parse_on(f, "Patient", "foo=1&family=Chalmers&bar:exact=2&gender:bogus=x&_summary=text", 1);
    if (rc != ST_OK) fail_msg("lenient: %s", f->e.msg);
    assert_int_equal(f->q.n_clauses, 1);
    assert_str(f->q.clauses[0].sp->code, "family");
    assert_str(f->q.ignored, "foo,bar:exact,gender:bogus,_summary=text");
    assert_str(f->q.canonical, "family=Chalmers");

    /* nothing ignored: ignored is NULL */
    rc = parse_on(f, "Patient", "family=Chalmers", 1);
    assert_int_equal(rc, ST_OK);
    assert_null(f->q.ignored);

    /* lenient does not excuse a bad value of a known parameter */
    rc = parse_on(f, "Patient", "foo=1&birthdate=notadate", 1);
    assert_int_equal(rc, ST_INVALID);
    assert_str(f->e.where, "birthdate");
}

/* ------------------------------------------------------ result params */

static void test_count_and_offset(void **state) {
    fixture *f = *state;
    ok_on(f, "Patient", "family=x");
    assert_int_equal(f->q.count, SEARCH_DEFAULT_COUNT);
    assert_int_equal(f->q.offset, 0);
    ok_on(f, "Patient", "_count=10&_offset=20");
    assert_int_equal(f->q.count, 10);
    assert_int_equal(f->q.offset, 20);
    ok_on(f, "Patient", "_count=2000");
    assert_int_equal(f->q.count, SEARCH_MAX_COUNT);
    assert_int_equal(SEARCH_MAX_COUNT, 1000);
    ok_on(f, "Patient", "_count=1000");
    assert_int_equal(f->q.count, 1000);
    ok_on(f, "Patient", "_count=0");
    assert_int_equal(f->q.count, 0);
    bad_on(f, "Patient", "_count=-1", ST_INVALID, "_count");
    bad_on(f, "Patient", "_count=ten", ST_INVALID, "_count");
    bad_on(f, "Patient", "_count=", ST_INVALID, "_count");
    bad_on(f, "Patient", "_count=5x", ST_INVALID, "_count");
    bad_on(f, "Patient", "_offset=-5", ST_INVALID, "_offset");
    /* _count and _offset stay out of the canonical query (paging links add them) */
    ok_on(f, "Patient", "family=Peter+James&_count=10&gender=male&_offset=3");
    assert_str(f->q.canonical, "family=Peter%20James&gender=male");
}

static void test_summary_and_total(void **state) {
    fixture *f = *state;
    ok_on(f, "Patient", "_summary=count");
    assert_int_equal(f->q.summary, SUMMARY_COUNT);
    assert_int_equal(f->q.n_clauses, 0);
    ok_on(f, "Patient", "_summary=false");
    assert_int_equal(f->q.summary, SUMMARY_NONE);
    ok_on(f, "Patient", "_total=accurate");
    assert_int_equal(f->q.total_accurate, 1);
    ok_on(f, "Patient", "_total=none");
    assert_int_equal(f->q.total_accurate, 0);
    ok_on(f, "Patient", "_total=estimate");
    assert_int_equal(f->q.total_accurate, 0);
    ok_on(f, "Patient", "_format=application/fhir%2Bjson&_pretty=true");
    assert_int_equal(f->q.n_clauses, 0);
}

static void test_sort(void **state) {
    fixture *f = *state;
    ok_on(f, "Observation", "_sort=-date,_id,_lastUpdated,code");
    assert_int_equal(f->q.n_sorts, 4);
    assert_int_equal(f->q.sorts[0].target, ST_PARAM);
    assert_str(f->q.sorts[0].sp->code, "date");
    assert_int_equal(f->q.sorts[0].descending, 1);
    assert_int_equal(f->q.sorts[1].target, ST_ID);
    assert_int_equal(f->q.sorts[1].descending, 0);
    assert_int_equal(f->q.sorts[2].target, ST_LASTUPDATED);
    assert_int_equal(f->q.sorts[2].descending, 0);
    assert_int_equal(f->q.sorts[3].target, ST_PARAM);
    assert_str(f->q.sorts[3].sp->code, "code");
    assert_str(f->q.canonical, "_sort=-date,_id,_lastUpdated,code");

    ok_on(f, "Patient", "_sort=family");
    assert_int_equal(f->q.n_sorts, 1);
    assert_str(f->q.sorts[0].sp->code, "family");

    bad_on(f, "Observation", "_sort=subject", ST_INVALID, "_sort");             /* reference */
    bad_on(f, "Observation", "_sort=nope", ST_INVALID, "_sort");                /* unknown */
    bad_on(f, "Observation", "_sort=-", ST_INVALID, "_sort");                   /* empty */
    bad_on(f, "Observation", "_sort=code-value-quantity", ST_INVALID, "_sort"); /* composite */
}

static void test_include(void **state) {
    fixture *f = *state;
    ok_on(f, "Observation", "_include=Observation:patient");
    assert_int_equal(f->q.n_includes, 1);
    assert_int_equal(f->q.includes[0].reverse, 0);
    assert_str(f->q.includes[0].source_type, "Observation");
    assert_str(f->q.includes[0].sp->code, "patient");
    assert_null(f->q.includes[0].target_type);

    ok_on(f, "Observation", "_include=Observation:subject:Patient&_include=Observation:performer");
    assert_int_equal(f->q.n_includes, 2);
    assert_str(f->q.includes[0].sp->code, "subject");
    assert_str(f->q.includes[0].target_type, "Patient");
    assert_str(f->q.includes[1].sp->code, "performer");

    bad_on(f, "Observation", "_include=Patient:organization", ST_INVALID, "_include"); /* other source type */
    bad_on(f, "Observation", "_include=Observation:code", ST_INVALID, "_include");     /* not a reference */
    bad_on(f, "Observation", "_include=Observation", ST_INVALID, "_include");          /* no parameter */
    bad_on(f, "Observation", "_include=Observation:nope", ST_INVALID, "_include");
    bad_on(f, "Observation", "_include=Observation:subject:Patient:x", ST_INVALID, "_include");
}

/* _include=Source:param:Target — Target must be a resource type the
 * parameter can refer to. */
static void test_include_target_type_checked(void **state) {
    fixture *f = *state;
    bad_on(f, "Observation", "_include=Observation:subject:Foo", ST_INVALID, "_include");
    bad_on(f, "Observation", "_include=Observation:subject:Organization", ST_INVALID, "_include");
}

static void test_revinclude(void **state) {
    fixture *f = *state;
    ok_on(f, "Patient", "_revinclude=Observation:patient&_revinclude=RiskAssessment:subject");
    assert_int_equal(f->q.n_includes, 2);
    assert_int_equal(f->q.includes[0].reverse, 1);
    assert_str(f->q.includes[0].source_type, "Observation");
    assert_str(f->q.includes[0].sp->code, "patient");
    assert_str(f->q.includes[1].source_type, "RiskAssessment");
    assert_str(f->q.includes[1].sp->code, "subject");

    bad_on(f, "Organization", "_revinclude=Observation:patient", ST_INVALID,
           "_revinclude"); /* cannot refer */
    bad_on(f, "Patient", "_revinclude=Foo:patient", ST_INVALID, "_revinclude");
    bad_on(f, "Patient", "_revinclude=Observation:status", ST_INVALID, "_revinclude");
}

/* --------------------------------------------------------------- chains */

static void test_chain_resolution(void **state) {
    fixture *f = *state;
    const search_value *v;

    ok_on(f, "Observation", "patient.identifier=urn:mrn|111");
    v = only_value(f);
    assert_str(f->q.clauses[0].sp->code, "patient");
    assert_non_null(v->chain);
    assert_str(v->chain_type, "Patient");
    assert_str(v->chain->sp->code, "identifier");
    assert_str(v->chain->sp->resource, "Patient");
    assert_int_equal(v->chain->type, SP_TOKEN);
    assert_int_equal(v->chain->n_values, 1);
    assert_str(v->chain->values[0].system, "urn:mrn");
    assert_str(v->chain->values[0].code, "111");

    /* the one target type of subject that has 'gender' */
    ok_on(f, "Observation", "subject.gender=male");
    v = only_value(f);
    assert_str(v->chain_type, "Patient");

    /* explicit type */
    ok_on(f, "Observation", "subject:Patient.identifier=urn:mrn|111");
    v = only_value(f);
    assert_str(v->chain_type, "Patient");

    /* modifier on the chained parameter */
    ok_on(f, "Observation", "patient.name:exact=Peter");
    v = only_value(f);
    assert_int_equal(v->chain->modifier, MOD_EXACT);
    assert_str(v->chain->values[0].text, "Peter");

    /* two levels */
    ok_on(f, "Observation", "patient.organization.name=Good");
    v = only_value(f);
    assert_str(v->chain_type, "Patient");
    assert_str(v->chain->sp->code, "organization");
    assert_non_null(v->chain->values[0].chain);
    assert_str(v->chain->values[0].chain_type, "Organization");
    assert_str(v->chain->values[0].chain->sp->code, "name");
    assert_str(v->chain->values[0].chain->values[0].text, "Good");
}

/* A bad value in a chained parameter is parsed as the chained parameter's
 * type and rejected; the error's `where` is the parameter as the client wrote
 * it (search.h: "where = the parameter name"), not the inner code, so the
 * OperationOutcome points at something in the request. */
static void test_chain_error_names_the_parameter(void **state) {
    fixture *f = *state;
    bad_on(f, "Observation", "patient.birthdate=notadate", ST_INVALID, "patient.birthdate");
    bad_on(f, "Observation", "patient.name:bogus=x", ST_INVALID, "patient.name:bogus");
}

static void test_chain_rejections(void **state) {
    fixture *f = *state;
    /* Group, Device, Patient and Location all have 'identifier' */
    bad_on(f, "Observation", "subject.identifier=x", ST_INVALID, "subject.identifier");
    assert_non_null(strstr(f->e.msg, "ambiguous"));
    assert_non_null(strstr(f->e.msg, ":Type"));
    /* only references chain */
    bad_on(f, "Observation", "code.identifier=x", ST_INVALID, "code.identifier");
    /* no target type has the parameter */
    bad_on(f, "Observation", "subject.nope=x", ST_INVALID, "subject.nope");
    /* the chained parameter is unknown on the (only) target type: the error
     * names the parameter as the client wrote it */
    bad_on(f, "Observation", "patient.foo=x", ST_INVALID, "patient.foo");
    /* too deep */
    status rc = parse_on(f, "Observation", "patient.organization.partof.partof.name=x", 0);
    assert_int_equal(rc, ST_INVALID);
    assert_str(f->e.issue, "too-costly");
}

/* --------------------------------------------------------------- canonical */

static void test_canonical(void **state) {
    fixture *f = *state;
    ok_on(f, "Observation",
          "code=http://loinc.org|8867-4&_count=5&date=ge2024-01-01&_include=Observation:patient");
    assert_str(f->q.canonical, "code=http://loinc.org|8867-4&date=ge2024-01-01&_include=Observation:patient");
    ok_on(f, "Patient", "name=O%27Brien%26Co");
    assert_str(f->q.canonical, "name=O%27Brien%26Co");
    assert_str(f->q.clauses[0].values[0].text, "O'Brien&Co");
    ok_on(f, "Patient", "");
    assert_str(f->q.canonical, "");
    assert_int_equal(f->q.n_clauses, 0);
    assert_str(f->q.type, "Patient");
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_split_basic),
        T(test_split_decodes_names_and_keeps_bad_escapes),
        T(test_split_length_is_authoritative),
        T(test_split_many),
        T(test_token_forms),
        T(test_token_escapes),
        T(test_token_empty_rejected),
        T(test_string_values),
        T(test_date_partial_precisions),
        T(test_date_prefixes),
        T(test_date_invalid),
        T(test_lastupdated_and_id),
        T(test_number_precision),
        T(test_number_prefixes),
        T(test_number_invalid),
        T(test_number_is_decimal_not_hex),
        T(test_quantity_forms),
        T(test_reference_forms),
        T(test_modifiers_per_type),
        T(test_missing_modifier),
        T(test_unknown_parameter_strict),
        T(test_unknown_parameter_lenient),
        T(test_count_and_offset),
        T(test_summary_and_total),
        T(test_sort),
        T(test_include),
        T(test_include_target_type_checked),
        T(test_revinclude),
        T(test_chain_resolution),
        T(test_chain_error_names_the_parameter),
        T(test_chain_rejections),
        T(test_canonical),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
