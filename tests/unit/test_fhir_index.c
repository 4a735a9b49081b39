/*
 * test_fhir_index.c — search-index extraction (src/fhir/index.c) on the
 * official R4 examples and on small resources built for one behaviour each:
 * the rows each parameter type yields, path-program steps (choice types,
 * as(Type), where(), resolve() is Type, [N], exists-and-not-false), the
 * patient a resource belongs to, string normalisation and number precision.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fhir/fhirdate.h"
#include "fhir/index.h"

#ifndef CONCORD_REFERENCE_DIR
#define CONCORD_REFERENCE_DIR "../shared/reference"
#endif

/* ------------------------------------------------------------- helpers */

typedef struct fixture {
    arena a;
    idx_rows rows;
    json_t *res;
} fixture;

static json_t *load_example(const char *name) {
    char path[512];
    json_error_t e;
    snprintf(path, sizeof path, "%s/fhir-r4/examples/%s", CONCORD_REFERENCE_DIR, name);
    json_t *j = json_load_file(path, 0, &e);
    if (!j) fail_msg("cannot load %s: %s", path, e.text);
    return j;
}

static json_t *parse(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) fail_msg("bad test JSON (%s): %s", e.text, text);
    return j;
}

/* Index `res` (taking it) as its own resourceType into f. */
static void index_into(fixture *f, json_t *res) {
    memset(f, 0, sizeof *f);
    f->res = res;
    const char *rt = json_string_value(json_object_get(res, "resourceType"));
    assert_non_null(rt);
    assert_int_equal(fhir_index_resource(rt, res, &f->rows, &f->a), 0);
}

static void release(fixture *f) {
    json_decref(f->res);
    arena_free(&f->a);
}

static bool seq(const char *a, const char *b) {
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static size_t count(const fixture *f, const char *code) {
    size_t n = 0;
    for (size_t i = 0; i < f->rows.n; i++)
        if (strcmp(f->rows.v[i].sp->code, code) == 0) n++;
    return n;
}

static const idx_row *nth(const fixture *f, const char *code, size_t k) {
    for (size_t i = 0; i < f->rows.n; i++)
        if (strcmp(f->rows.v[i].sp->code, code) == 0 && k-- == 0) return &f->rows.v[i];
    return NULL;
}

static bool has_token(const fixture *f, const char *code, const char *system, const char *value) {
    for (size_t i = 0; i < f->rows.n; i++) {
        const idx_row *r = &f->rows.v[i];
        if (strcmp(r->sp->code, code) == 0 && r->kind == IDX_TOKEN && seq(r->system, system) &&
            seq(r->code, value))
            return true;
    }
    return false;
}

static bool has_string(const fixture *f, const char *code, const char *exact, const char *norm) {
    for (size_t i = 0; i < f->rows.n; i++) {
        const idx_row *r = &f->rows.v[i];
        if (strcmp(r->sp->code, code) == 0 && r->kind == IDX_STRING && seq(r->exact, exact) &&
            seq(r->norm, norm))
            return true;
    }
    return false;
}

static bool has_ref(const fixture *f, const char *code, const char *type, const char *id, const char *url) {
    for (size_t i = 0; i < f->rows.n; i++) {
        const idx_row *r = &f->rows.v[i];
        if (strcmp(r->sp->code, code) == 0 && r->kind == IDX_REF && seq(r->ref_type, type) &&
            seq(r->ref_id, id) && seq(r->ref_url, url))
            return true;
    }
    return false;
}

static bool has_date(const fixture *f, const char *code, int64_t lo, int64_t hi) {
    for (size_t i = 0; i < f->rows.n; i++) {
        const idx_row *r = &f->rows.v[i];
        if (strcmp(r->sp->code, code) == 0 && r->kind == IDX_DATE && r->lo == lo && r->hi == hi) return true;
    }
    return false;
}

static int64_t day(const char *d) {
    int64_t lo, hi;
    assert_int_equal(fhir_date_range(d, strlen(d), &lo, &hi), 0);
    return lo;
}

/* -------------------------------------------------------- observation */

static void test_observation_example(void **state) {
    (void)state;
    fixture f;
    index_into(&f, load_example("observation-example.json"));

    /* code: one token per coding, system and code */
    assert_int_equal(count(&f, "code"), 4);
    assert_true(has_token(&f, "code", "http://loinc.org", "29463-7"));
    assert_true(has_token(&f, "code", "http://loinc.org", "3141-9"));
    assert_true(has_token(&f, "code", "http://snomed.info/sct", "27113001"));
    assert_true(has_token(&f, "code", "http://acme.org/devices/clinical-codes", "body-weight"));
    assert_false(has_token(&f, "code", NULL, "29463-7"));
    assert_int_equal(count(&f, "combo-code"), 4);
    assert_true(has_token(&f, "category", "http://terminology.hl7.org/CodeSystem/observation-category",
                          "vital-signs"));
    /* status: a code, no system */
    assert_int_equal(count(&f, "status"), 1);
    assert_true(has_token(&f, "status", NULL, "final"));

    /* subject and patient references, and the patient the record belongs to */
    assert_int_equal(count(&f, "patient"), 1);
    assert_true(has_ref(&f, "patient", "Patient", "example", NULL));
    assert_true(has_ref(&f, "subject", "Patient", "example", NULL));
    assert_true(has_ref(&f, "encounter", "Encounter", "example", NULL));
    assert_string_equal(fhir_index_patient_id("Observation", f.res, &f.rows), "example");

    /* effectiveDateTime "2016-03-28": the whole day */
    assert_int_equal(count(&f, "date"), 1);
    const idx_row *d = nth(&f, "date", 0);
    assert_int_equal(d->kind, IDX_DATE);
    assert_int_equal(d->lo, 1459123200);
    assert_int_equal(d->hi, 1459123200 + 86399);

    /* valueQuantity 185 lbs (UCUM [lb_av]) */
    assert_int_equal(count(&f, "value-quantity"), 1);
    const idx_row *q = nth(&f, "value-quantity", 0);
    assert_int_equal(q->kind, IDX_QUANTITY);
    assert_true(q->value == 185.0);
    assert_true(q->vlo == 184.5 && q->vhi == 185.5);
    assert_string_equal(q->system, "http://unitsofmeasure.org");
    assert_string_equal(q->code, "[lb_av]");
    assert_int_equal(count(&f, "combo-value-quantity"), 1);

    /* nothing for absent elements, composites, or the store's own columns */
    assert_int_equal(count(&f, "value-concept"), 0);
    assert_int_equal(count(&f, "value-date"), 0);
    assert_int_equal(count(&f, "code-value-quantity"), 0);
    assert_int_equal(count(&f, "_id"), 0);
    assert_int_equal(count(&f, "_lastUpdated"), 0);
    for (size_t i = 0; i < f.rows.n; i++) {
        const char *r = f.rows.v[i].sp->resource;
        assert_true(strcmp(r, "Observation") == 0 || strcmp(r, "Resource") == 0 ||
                    strcmp(r, "DomainResource") == 0);
    }
    release(&f);
}

static void test_observation_value_precision(void **state) {
    (void)state;
    fixture f;
    index_into(&f, parse("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                         "\"valueQuantity\":{\"value\":6.3,\"unit\":\"mmol/L\"},"
                         "\"component\":[{\"code\":{\"text\":\"a\"},\"valueQuantity\":{\"value\":0.001,"
                         "\"system\":\"http://unitsofmeasure.org\",\"code\":\"g\"}},"
                         "{\"code\":{\"text\":\"b\"},\"valueQuantity\":{\"value\":1.5e-3}},"
                         "{\"code\":{\"text\":\"c\"},\"valueQuantity\":{\"value\":120}}]}"));
    const idx_row *q = nth(&f, "value-quantity", 0);
    assert_non_null(q);
    assert_true(q->value == 6.3);
    assert_true(q->vlo > 6.2499 && q->vlo < 6.2501 && q->vhi > 6.3499 && q->vhi < 6.3501);
    assert_null(q->system);
    assert_string_equal(q->code, "mmol/L"); /* code falls back to unit */
    assert_int_equal(count(&f, "component-value-quantity"), 3);
    q = nth(&f, "component-value-quantity", 0);
    assert_true(q->vlo > 0.00049999 && q->vlo < 0.00050001 && q->vhi > 0.00149999 && q->vhi < 0.00150001);
    assert_string_equal(q->code, "g");
    q = nth(&f, "component-value-quantity", 1); /* 1.5e-3: four decimals */
    assert_true(q->vlo > 0.00144999 && q->vlo < 0.00145001);
    q = nth(&f, "component-value-quantity", 2); /* integer */
    assert_true(q->vlo == 119.5 && q->vhi == 120.5);
    /* component values are not the observation's own value */
    assert_int_equal(count(&f, "value-quantity"), 1);
    assert_int_equal(count(&f, "combo-value-quantity"), 4);
    /* CodeableConcept with text only: no token */
    assert_int_equal(count(&f, "code"), 0);
    release(&f);
}

static void test_observation_group_subject(void **state) {
    (void)state;
    fixture f;
    /* a Group is a subject but not a patient */
    index_into(&f, parse("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                         "\"subject\":{\"reference\":\"Group/g1\"}}"));
    assert_true(has_ref(&f, "subject", "Group", "g1", NULL));
    assert_int_equal(count(&f, "patient"), 0);
    assert_null(fhir_index_patient_id("Observation", f.res, &f.rows));
    release(&f);

    /* ... but a patient performer puts it in that patient's compartment */
    index_into(&f,
               parse("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                     "\"subject\":{\"reference\":\"Group/g1\"},"
                     "\"performer\":[{\"reference\":\"Practitioner/d1\"},{\"reference\":\"Patient/p9\"}]}"));
    assert_int_equal(count(&f, "performer"), 2);
    assert_string_equal(fhir_index_patient_id("Observation", f.res, &f.rows), "p9");
    release(&f);

    /* subject comes before performer (CompartmentDefinition order) */
    index_into(&f, parse("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                         "\"performer\":[{\"reference\":\"Patient/p9\"}],"
                         "\"subject\":{\"reference\":\"Patient/p1\"}}"));
    assert_string_equal(fhir_index_patient_id("Observation", f.res, &f.rows), "p1");
    release(&f);
}

static void test_reference_forms(void **state) {
    (void)state;
    fixture f;
    /* absolute, versioned reference: type and id parsed, url kept */
    index_into(&f, parse("{\"resourceType\":\"Condition\",\"subject\":{\"reference\":"
                         "\"http://example.org/fhir/Patient/123/_history/2\"}}"));
    assert_true(has_ref(&f, "patient", "Patient", "123", "http://example.org/fhir/Patient/123/_history/2"));
    assert_string_equal(fhir_index_patient_id("Condition", f.res, &f.rows), "123");
    release(&f);

    /* relative versioned */
    index_into(
        &f, parse("{\"resourceType\":\"Condition\",\"subject\":{\"reference\":\"Patient/7/_history/1\"}}"));
    assert_true(has_ref(&f, "patient", "Patient", "7", NULL));
    release(&f);

    /* a contained reference: a subject row keeps the url, but its type is
     * unknown, so it is not a patient reference */
    index_into(&f, parse("{\"resourceType\":\"Condition\",\"contained\":[{\"resourceType\":\"Patient\","
                         "\"id\":\"p1\"}],\"subject\":{\"reference\":\"#p1\"}}"));
    assert_true(has_ref(&f, "subject", NULL, NULL, "#p1"));
    assert_int_equal(count(&f, "patient"), 0);
    assert_null(fhir_index_patient_id("Condition", f.res, &f.rows));
    release(&f);

    /* urn:uuid without a type: dropped by @Patient */
    index_into(&f, parse("{\"resourceType\":\"Condition\",\"subject\":{\"reference\":"
                         "\"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0\"}}"));
    assert_true(has_ref(&f, "subject", NULL, NULL, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"));
    assert_int_equal(count(&f, "patient"), 0);
    release(&f);

    /* urn:uuid with Reference.type: the type is known, the id is not */
    index_into(&f, parse("{\"resourceType\":\"Condition\",\"subject\":{\"reference\":"
                         "\"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0\",\"type\":\"Patient\"}}"));
    assert_true(has_ref(&f, "patient", "Patient", NULL, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"));
    assert_null(fhir_index_patient_id("Condition", f.res, &f.rows));
    release(&f);

    /* not a resource type, bad id, identifier-only: no type/id */
    index_into(&f, parse("{\"resourceType\":\"Condition\",\"subject\":{\"reference\":\"Patients/1\"},"
                         "\"asserter\":{\"identifier\":{\"value\":\"x\"}},"
                         "\"encounter\":{\"reference\":\"Encounter/a_b\"}}"));
    assert_true(has_ref(&f, "subject", NULL, NULL, "Patients/1"));
    assert_int_equal(count(&f, "patient"), 0);
    assert_int_equal(count(&f, "asserter"), 0);
    assert_true(has_ref(&f, "encounter", NULL, NULL, "Encounter/a_b"));
    release(&f);
}

/* ------------------------------------------------------------- patient */

static void test_patient_example(void **state) {
    (void)state;
    fixture f;
    index_into(&f, load_example("patient-example.json"));

    /* names: every part, normalised, duplicates (Peter James twice) once */
    assert_int_equal(count(&f, "family"), 2);
    assert_true(has_string(&f, "family", "Chalmers", "chalmers"));
    assert_true(has_string(&f, "family", "Windsor", "windsor"));
    assert_int_equal(count(&f, "given"), 3);
    assert_true(has_string(&f, "given", "Peter", "peter"));
    assert_true(has_string(&f, "given", "James", "james"));
    assert_true(has_string(&f, "given", "Jim", "jim"));
    assert_true(has_string(&f, "name", "Chalmers", "chalmers"));
    assert_true(has_string(&f, "name", "Jim", "jim"));
    assert_int_equal(count(&f, "name"), 5);
    /* the contact's name (du Marché) is not the patient's */
    assert_false(has_string(&f, "family", "du Marché", "du marche"));

    /* address parts */
    assert_true(has_string(&f, "address-city", "PleasantVille", "pleasantville"));
    assert_true(has_string(&f, "address", "534 Erewhon St", "534 erewhon st"));
    assert_true(has_string(&f, "address", "534 Erewhon St PeasantVille, Rainbow, Vic  3999",
                           "534 erewhon st peasantville, rainbow, vic 3999"));
    assert_true(has_string(&f, "address-postalcode", "3999", "3999"));

    assert_int_equal(count(&f, "identifier"), 1);
    assert_true(has_token(&f, "identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345"));
    assert_true(has_token(&f, "gender", NULL, "male"));
    assert_true(has_token(&f, "active", NULL, "true"));
    assert_true(has_date(&f, "birthdate", day("1974-12-25"), day("1974-12-25") + 86399));
    assert_true(has_ref(&f, "organization", "Organization", "1", NULL));

    /* deceasedBoolean false */
    assert_int_equal(count(&f, "deceased"), 1);
    assert_true(has_token(&f, "deceased", NULL, "false"));
    assert_int_equal(count(&f, "death-date"), 0);

    /* telecom: the phone numbers via ?system=phone; the one without a value
     * gives nothing; no email */
    assert_int_equal(count(&f, "phone"), 3);
    assert_true(has_token(&f, "phone", "phone", "(03) 5555 6473"));
    assert_true(has_token(&f, "phone", "phone", "(03) 3410 5613"));
    assert_true(has_token(&f, "phone", "phone", "(03) 5555 8834"));
    assert_int_equal(count(&f, "email"), 0);
    assert_int_equal(count(&f, "telecom"), 3);

    assert_string_equal(fhir_index_patient_id("Patient", f.res, &f.rows), "example");
    release(&f);
}

static void test_patient_deceased_and_email(void **state) {
    (void)state;
    fixture f;
    index_into(&f, parse("{\"resourceType\":\"Patient\",\"id\":\"p\",\"deceasedDateTime\":"
                         "\"2015-02-14T13:42:00+10:00\",\"telecom\":[{\"system\":\"email\",\"value\":"
                         "\"a@b.org\"},{\"system\":\"phone\",\"value\":\"0123\"},{\"system\":\"fax\","
                         "\"value\":\"0999\"}]}"));
    assert_int_equal(count(&f, "deceased"), 1);
    assert_true(has_token(&f, "deceased", NULL, "true"));
    int64_t t = day("2015-02-14") + 13 * 3600 + 42 * 60 - 10 * 3600;
    assert_true(has_date(&f, "death-date", t, t));
    assert_int_equal(count(&f, "email"), 1);
    assert_true(has_token(&f, "email", "email", "a@b.org"));
    assert_int_equal(count(&f, "phone"), 1);
    assert_true(has_token(&f, "phone", "phone", "0123"));
    assert_int_equal(count(&f, "telecom"), 3);
    release(&f);

    index_into(&f, parse("{\"resourceType\":\"Patient\",\"deceasedBoolean\":true}"));
    assert_true(has_token(&f, "deceased", NULL, "true"));
    assert_int_equal(count(&f, "deceased"), 1);
    release(&f);

    /* absent: exists() is false, so the token is "false" */
    index_into(&f, parse("{\"resourceType\":\"Patient\"}"));
    assert_int_equal(count(&f, "deceased"), 1);
    assert_true(has_token(&f, "deceased", NULL, "false"));
    assert_null(fhir_index_patient_id("Patient", f.res, &f.rows));
    release(&f);
}

/* ----------------------------------------------------------- condition */

static void test_condition_onset(void **state) {
    (void)state;
    fixture f;
    index_into(&f, load_example("condition-example.json"));
    /* onset as(dateTime) */
    assert_int_equal(count(&f, "onset-date"), 1);
    assert_true(has_date(&f, "onset-date", day("2012-05-24"), day("2012-05-24") + 86399));
    assert_int_equal(count(&f, "onset-age"), 0);
    assert_true(has_token(&f, "code", "http://snomed.info/sct", "39065001"));
    assert_true(has_token(&f, "category", "http://snomed.info/sct", "439401001"));
    assert_true(has_ref(&f, "patient", "Patient", "example", NULL));
    assert_string_equal(fhir_index_patient_id("Condition", f.res, &f.rows), "example");
    release(&f);

    /* onset as(Age): a quantity, not a date */
    index_into(&f, parse("{\"resourceType\":\"Condition\",\"onsetAge\":{\"value\":52,\"unit\":\"yr\","
                         "\"system\":\"http://unitsofmeasure.org\",\"code\":\"a\"}}"));
    assert_int_equal(count(&f, "onset-date"), 0);
    assert_int_equal(count(&f, "onset-age"), 1);
    const idx_row *q = nth(&f, "onset-age", 0);
    assert_true(q->value == 52 && q->vlo == 51.5 && q->vhi == 52.5);
    assert_string_equal(q->code, "a");
    release(&f);

    /* onset as(Period) with an open end; as(Range); as(string) */
    index_into(
        &f, parse("{\"resourceType\":\"Condition\",\"onsetPeriod\":{\"start\":\"2020-01\"},"
                  "\"abatementRange\":{\"low\":{\"value\":10,\"unit\":\"a\"},\"high\":{\"value\":20.5}}}"));
    assert_true(has_date(&f, "onset-date", day("2020-01-01"), FHIR_DATE_MAX));
    q = nth(&f, "abatement-age", 0);
    assert_non_null(q);
    assert_true(q->value == 10 && q->vlo == 9.5 && q->vhi > 20.5499 && q->vhi < 20.5501);
    assert_string_equal(q->code, "a");
    release(&f);

    index_into(&f, parse("{\"resourceType\":\"Condition\",\"onsetString\":\"Since Childhood\","
                         "\"abatementPeriod\":{\"end\":\"2021\"},\"onsetRange\":{\"high\":{\"value\":3}}}"));
    assert_true(has_string(&f, "onset-info", "Since Childhood", "since childhood"));
    assert_true(has_date(&f, "abatement-date", FHIR_DATE_MIN, day("2022-01-01") - 1));
    q = nth(&f, "onset-age", 0);
    assert_non_null(q);
    assert_true(q->value == 3 && q->vhi == 3.5 && q->vlo < -1e300);
    release(&f);
}

/* ------------------------------------------------------- other shapes */

static void test_timing_period_meta(void **state) {
    (void)state;
    fixture f;
    index_into(&f,
               parse("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"coding\":["
                     "{\"system\":\"s\",\"code\":\"c\"},{\"system\":\"s\",\"code\":\"c\"}]},"
                     "\"effectiveTiming\":{\"event\":[\"2020-01-01\",\"2020-01-02T10:00:00Z\"],"
                     "\"repeat\":{\"boundsPeriod\":{\"start\":\"2020-01-01\",\"end\":\"2020-01-31\"}}},"
                     "\"meta\":{\"lastUpdated\":\"2020-01-01T00:00:00Z\","
                     "\"profile\":[\"http://example.org/StructureDefinition/bp\"],"
                     "\"tag\":[{\"system\":\"http://example.org/tags\",\"code\":\"t1\"}],"
                     "\"security\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-Confidentiality\","
                     "\"code\":\"R\"}],\"source\":\"http://gp.example.org/emis\"}}"));
    /* duplicate codings: one row */
    assert_int_equal(count(&f, "code"), 1);
    assert_int_equal(count(&f, "date"), 3);
    assert_true(has_date(&f, "date", day("2020-01-01"), day("2020-01-01") + 86399));
    assert_true(has_date(&f, "date", day("2020-01-02") + 36000, day("2020-01-02") + 36000));
    assert_true(has_date(&f, "date", day("2020-01-01"), day("2020-01-31") + 86399));
    assert_true(has_token(&f, "_profile", NULL, "http://example.org/StructureDefinition/bp"));
    assert_true(has_token(&f, "_tag", "http://example.org/tags", "t1"));
    assert_true(has_token(&f, "_security", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"));
    assert_true(has_token(&f, "_source", NULL, "http://gp.example.org/emis"));
    assert_int_equal(count(&f, "_lastUpdated"), 0);
    assert_int_equal(count(&f, "_id"), 0);
    release(&f);

    /* Period: both ends; an inverted or unparseable period gives nothing */
    index_into(&f,
               parse("{\"resourceType\":\"Encounter\",\"status\":\"finished\",\"class\":{\"code\":\"AMB\"},"
                     "\"period\":{\"start\":\"2021-03-01T09:00:00Z\",\"end\":\"2021-03-01T09:30:00Z\"}}"));
    assert_true(has_date(&f, "date", day("2021-03-01") + 9 * 3600, day("2021-03-01") + 9 * 3600 + 1800));
    assert_true(has_token(&f, "class", NULL, "AMB"));
    release(&f);
    index_into(
        &f,
        parse(
            "{\"resourceType\":\"Encounter\",\"period\":{\"start\":\"2021-03-02\",\"end\":\"2021-03-01\"}}"));
    assert_int_equal(count(&f, "date"), 0);
    release(&f);
    index_into(&f, parse("{\"resourceType\":\"Encounter\",\"period\":{\"start\":\"2021-02-30\"}}"));
    assert_int_equal(count(&f, "date"), 0);
    release(&f);
}

static void test_money_and_number(void **state) {
    (void)state;
    fixture f;
    index_into(&f, parse("{\"resourceType\":\"Invoice\",\"status\":\"issued\","
                         "\"totalNet\":{\"value\":12.50,\"currency\":\"EUR\"}}"));
    const idx_row *q = nth(&f, "totalnet", 0);
    assert_non_null(q);
    assert_int_equal(q->kind, IDX_QUANTITY);
    assert_true(q->value == 12.5);
    assert_string_equal(q->system, "urn:iso:std:iso:4217");
    assert_string_equal(q->code, "EUR");
    /* "12.50" reaches us as the double 12.5: precision from %.15g is 0.1 */
    assert_true(q->vlo > 12.4499 && q->vlo < 12.4501);
    release(&f);

    index_into(&f, parse("{\"resourceType\":\"RiskAssessment\",\"status\":\"final\",\"subject\":"
                         "{\"reference\":\"Patient/x\"},\"prediction\":[{\"probabilityDecimal\":0.25},"
                         "{\"probabilityRange\":{\"low\":{\"value\":1},\"high\":{\"value\":2}}}]}"));
    assert_int_equal(count(&f, "probability"), 2);
    const idx_row *n = nth(&f, "probability", 0);
    assert_int_equal(n->kind, IDX_NUMBER);
    assert_true(n->value == 0.25 && n->vlo > 0.2449 && n->vlo < 0.2451 && n->vhi > 0.2549 && n->vhi < 0.2551);
    n = nth(&f, "probability", 1);
    assert_true(n->vlo == 0.5 && n->vhi == 2.5);
    assert_string_equal(fhir_index_patient_id("RiskAssessment", f.res, &f.rows), "x");
    release(&f);
}

/* Many values for one parameter: every distinct one kept, repeats dropped
 * (past the point where duplicate detection switches to a hash table). */
static void test_many_values(void **state) {
    (void)state;
    json_t *res = parse("{\"resourceType\":\"Patient\",\"identifier\":[],\"name\":[{\"given\":[]}]}");
    json_t *ids = json_object_get(res, "identifier");
    json_t *given = json_object_get(json_array_get(json_object_get(res, "name"), 0), "given");
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++) {
            char v[32];
            snprintf(v, sizeof v, "%d", i);
            json_array_append_new(ids,
                                  json_pack("{s:s,s:s}", "system", round == 2 ? "other" : "s", "value", v));
            snprintf(v, sizeof v, "Name%d", i % 300);
            json_array_append_new(given, json_string(v));
        }
    }
    fixture f;
    index_into(&f, res);
    assert_int_equal(count(&f, "identifier"), 2000); /* rounds 0 and 1 identical */
    assert_true(has_token(&f, "identifier", "s", "999"));
    assert_true(has_token(&f, "identifier", "other", "0"));
    assert_false(has_token(&f, "identifier", "other", "1000"));
    assert_int_equal(count(&f, "given"), 300);
    assert_true(has_string(&f, "given", "Name299", "name299"));
    release(&f);
}

static void test_unknown_type(void **state) {
    (void)state;
    arena a = {0};
    idx_rows rows = {0};
    json_t *j = parse("{\"resourceType\":\"Nonsense\"}");
    assert_int_equal(fhir_index_resource("Nonsense", j, &rows, &a), -1);
    assert_int_equal(fhir_index_resource("DomainResource", j, &rows, &a), -1); /* abstract */
    assert_int_equal(fhir_index_resource(NULL, j, &rows, &a), -1);
    assert_int_equal(fhir_index_resource("Patient", NULL, &rows, &a), -1);
    assert_int_equal(rows.n, 0);
    json_decref(j);
    arena_free(&a);
}

/* Every official example indexes without error, and every row is well formed. */
static void test_all_examples(void **state) {
    (void)state;
    static const char *const names[] = {
        "allergyintolerance-example.json", "appointment-example.json",       "careteam-example.json",
        "composition-example.json",        "documentreference-example.json", "encounter-example.json",
        "immunization-example.json",       "medicationrequest0301.json",     "person-example.json",
        "practitioner-example.json",       "riskassessment-example.json",    "observation-decimal.json",
        "location-example.json",           "questionnaire-example.json",
    };
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        fixture f;
        index_into(&f, load_example(names[k]));
        assert_true(f.rows.n > 0);
        for (size_t i = 0; i < f.rows.n; i++) {
            const idx_row *r = &f.rows.v[i];
            switch (r->kind) {
            case IDX_TOKEN: assert_non_null(r->code); break;
            case IDX_STRING:
                assert_non_null(r->exact);
                assert_non_null(r->norm);
                break;
            case IDX_DATE: assert_true(r->lo <= r->hi); break;
            case IDX_REF: assert_true(r->ref_url || (r->ref_type && r->ref_id)); break;
            case IDX_NUMBER:
            case IDX_QUANTITY: assert_true(r->vlo <= r->value && r->value <= r->vhi); break;
            }
            /* no duplicate rows within one parameter */
            for (size_t j = 0; j < i; j++) {
                const idx_row *o = &f.rows.v[j];
                if (o->sp != r->sp || o->kind != r->kind) continue;
                bool same = seq(o->system, r->system) && seq(o->code, r->code) && seq(o->exact, r->exact) &&
                            seq(o->ref_type, r->ref_type) && seq(o->ref_id, r->ref_id) &&
                            seq(o->ref_url, r->ref_url) && o->lo == r->lo && o->hi == r->hi &&
                            o->value == r->value && o->vlo == r->vlo && o->vhi == r->vhi;
                if (same) fail_msg("%s: duplicate row for %s", names[k], r->sp->code);
            }
        }
        release(&f);
    }
    /* spot checks */
    fixture f;
    index_into(&f, load_example("medicationrequest0301.json"));
    assert_true(has_ref(&f, "medication", NULL, NULL, "#med0310"));
    assert_string_equal(fhir_index_patient_id("MedicationRequest", f.res, &f.rows), "pat1");
    release(&f);
}

/* The access check of a write names the record's patient from the
 * compartment parameters alone (fhir_index_compartment_patient); it must
 * agree with the store's rule over the full index, on every official
 * example (and every resource inside an example Bundle) and on the
 * references of the small cases above. */
static void check_same_patient(const char *what, json_t *res) {
    const char *rt = json_string_value(json_object_get(res, "resourceType"));
    if (!rt || !fhir_resource_type(rt)) return;
    fixture f;
    memset(&f, 0, sizeof f);
    f.res = res;
    assert_int_equal(fhir_index_resource(rt, res, &f.rows, &f.a), 0);
    const char *full = fhir_index_patient_id(rt, res, &f.rows);
    arena a = {0};
    const char *fast = fhir_index_compartment_patient(rt, res, &a);
    if (!seq(full, fast))
        fail_msg("%s (%s): full index says %s, compartment alone %s", what, rt, full ? full : "none",
                 fast ? fast : "none");
    arena_free(&a);
    arena_free(&f.a);
}

static void test_compartment_patient_agrees_with_the_full_index(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fhir-r4/examples", CONCORD_REFERENCE_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int files = 0, named = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0) continue;
        json_t *j = load_example(de->d_name);
        files++;
        check_same_patient(de->d_name, j);
        size_t i;
        json_t *entry;
        json_array_foreach(json_object_get(j, "entry"), i, entry) {
            check_same_patient(de->d_name, json_object_get(entry, "resource"));
        }
        arena a = {0};
        const char *rt = json_string_value(json_object_get(j, "resourceType"));
        named += rt && fhir_index_compartment_patient(rt, j, &a) != NULL;
        arena_free(&a);
        json_decref(j);
    }
    closedir(d);
    assert_true(files >= 50);
    assert_true(named >= 10); /* the comparison is not vacuous */
    json_t *obs = parse("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                        "\"performer\":[{\"reference\":\"Patient/p9\"}]}");
    check_same_patient("performer only", obs);
    arena a = {0};
    assert_string_equal(fhir_index_compartment_patient("Observation", obs, &a), "p9");
    arena_free(&a);
    json_decref(obs);
}

/* ----------------------------------------------------------- path eval */

typedef struct collect {
    int n;
    char keys[16][64];
    json_t *vals[16];
} collect;

static void collect_fn(void *ctx, const char *key, json_t *v) {
    collect *c = ctx;
    if (c->n < 16) {
        snprintf(c->keys[c->n], sizeof c->keys[0], "%s", key ? key : "(null)");
        c->vals[c->n] = v;
    }
    c->n++;
}

static collect run(const char *path, json_t *res) {
    collect c;
    memset(&c, 0, sizeof c);
    fhir_path_eval(path, res, collect_fn, &c);
    return c;
}

static void test_path_eval(void **state) {
    (void)state;
    json_t *p = load_example("patient-example.json");
    collect c = run("name.given", p);
    assert_int_equal(c.n, 5);
    assert_string_equal(json_string_value(c.vals[0]), "Peter");
    assert_string_equal(json_string_value(c.vals[2]), "Jim");
    assert_string_equal(c.keys[0], "given");

    c = run("name[1].given", p);
    assert_int_equal(c.n, 1);
    assert_string_equal(json_string_value(c.vals[0]), "Jim");
    /* [N] counts across the whole collection, not per parent */
    c = run("name.given[3]", p);
    assert_int_equal(c.n, 1);
    assert_string_equal(json_string_value(c.vals[0]), "Peter");
    c = run("name[9]", p);
    assert_int_equal(c.n, 0);

    c = run("telecom?system=phone", p);
    assert_int_equal(c.n, 3);
    c = run("telecom?system='phone'?use=mobile", p);
    assert_int_equal(c.n, 1);
    assert_string_equal(json_string_value(json_object_get(c.vals[0], "value")), "(03) 3410 5613");
    c = run("telecom?system=fax", p);
    assert_int_equal(c.n, 0);

    /* choice: any type, and one type */
    c = run("deceased[x]", p);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "deceasedBoolean");
    c = run("deceased[x]:dateTime", p);
    assert_int_equal(c.n, 0);
    c = run("deceased[x]:boolean", p);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "deceasedBoolean");
    /* exists() and != false: one boolean */
    c = run("deceased[x]!", p);
    assert_int_equal(c.n, 1);
    assert_true(json_is_false(c.vals[0]));
    c = run("gender!", p);
    assert_int_equal(c.n, 1);
    assert_true(json_is_true(c.vals[0]));

    /* branches */
    c = run("gender|birthDate|nothing", p);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[1], "birthDate");
    c = run("managingOrganization@Organization|managingOrganization@Patient", p);
    assert_int_equal(c.n, 1);

    /* malformed branches are skipped, the rest still run */
    c = run("name..given|gender", p);
    assert_int_equal(c.n, 1);
    c = run("name[|gender.|name?x|name@|[0]|gender", p);
    assert_int_equal(c.n, 1);
    c = run("", p); /* the empty program names the resource */
    assert_int_equal(c.n, 1);
    assert_ptr_equal(c.vals[0], p);
    c = run("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r", p); /* too many steps */
    assert_int_equal(c.n, 0);
    json_decref(p);

    json_t *o = load_example("observation-example.json");
    c = run("value[x]:Quantity", o);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "valueQuantity");
    c = run("subject@Patient", o);
    assert_int_equal(c.n, 1);
    c = run("subject@Group", o);
    assert_int_equal(c.n, 0);
    c = run("code.coding?code=3141-9.display", o);
    assert_int_equal(c.n, 1);
    assert_string_equal(json_string_value(c.vals[0]), "Body weight Measured");
    /* a filter value ends at '.': the format cannot carry one inside it */
    c = run("code.coding?system=http://loinc.org", o);
    assert_int_equal(c.n, 0);
    c = run("code.coding?system='http://loinc.org'.code", o); /* quoted, it can */
    assert_int_equal(c.n, 2);
    c = run("code.coding?system='http://loinc.org", o); /* unterminated quote */
    assert_int_equal(c.n, 0);
    json_decref(o);
}

/* ------------------------------------------------------------- strings */

static void test_string_normalize(void **state) {
    (void)state;
    arena a = {0};
    assert_string_equal(fhir_string_normalize(&a, "  Bénédicte \t du   MARCHÉ  "), "benedicte du marche");
    assert_string_equal(fhir_string_normalize(&a, "Straße"), "strasse");
    assert_string_equal(fhir_string_normalize(&a, "ÆRØ Œuvre Łódź"), "aero oeuvre lodz");
    assert_string_equal(fhir_string_normalize(&a, "Zoë Saldaña-Ñúñez"), "zoe saldana-nunez");
    assert_string_equal(fhir_string_normalize(&a, "Sio\xcc\x82n"), "sion"); /* combining circumflex */
    assert_string_equal(fhir_string_normalize(&a, "ИВАН Ёлкин"), "иван ёлкин");
    assert_string_equal(fhir_string_normalize(&a, "ΣΩΚΡΑΤΗΣ"), "σωκρατησ");
    assert_string_equal(fhir_string_normalize(&a, "a\xff"
                                                  "b\xc3"),
                        "ab"); /* invalid bytes dropped */
    assert_string_equal(fhir_string_normalize(&a, "non\xc2\xa0"
                                                  "breaking"),
                        "non breaking");
    assert_string_equal(fhir_string_normalize(&a, "2 × 3"), "2 × 3");
    assert_string_equal(fhir_string_normalize(&a, ""), "");
    assert_string_equal(fhir_string_normalize(&a, "   "), "");
    arena_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_observation_example),
        cmocka_unit_test(test_observation_value_precision),
        cmocka_unit_test(test_observation_group_subject),
        cmocka_unit_test(test_reference_forms),
        cmocka_unit_test(test_patient_example),
        cmocka_unit_test(test_patient_deceased_and_email),
        cmocka_unit_test(test_condition_onset),
        cmocka_unit_test(test_timing_period_meta),
        cmocka_unit_test(test_money_and_number),
        cmocka_unit_test(test_many_values),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_all_examples),
        cmocka_unit_test(test_compartment_patient_agrees_with_the_full_index),
        cmocka_unit_test(test_path_eval),
        cmocka_unit_test(test_string_normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
