/*
 * demo.c — `concord demo`: a small, seeded demonstration population so that
 * a fresh server has something real to show — general practices, GPs, and
 * patients with NHS numbers (from the range set aside for testing, 999
 * 000 0000 onwards, with valid modulus 11 check digits), long-term
 * conditions coded in SNOMED CT whose prevalence rises with age, and the
 * observations that go with them (HbA1c, blood pressure, BMI).
 *
 * This is the seed of the full synthetic population generator (its own
 * issue); it writes through the same store API every other writer uses,
 * one transaction per patient, after validating each resource.
 *
 * The same --seed gives the same people (ids are assigned by the store).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"
#include "../fhir/validate.h"
#include "../store/store.h"
#include "cli.h"

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}
static double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) / 9007199254740992.0; }
static int rng_int(rng *r, int n) { return (int)(rng_unit(r) * n); }
#define PICK(r, arr) (arr[rng_int(r, (int)(sizeof arr / sizeof arr[0]))])

/* NHS number check digit: weights 10..2 over the first nine digits,
 * 11 - (sum mod 11); 11 becomes 0; 10 means the number is not valid. */
static int nhs_check_digit(const char d[9]) {
    int sum = 0;
    for (int i = 0; i < 9; i++) sum += (d[i] - '0') * (10 - i);
    int c = 11 - sum % 11;
    if (c == 11) c = 0;
    return c;
}

static void nhs_number(rng *r, char out[11]) {
    for (;;) {
        char d[9] = {'9', '9', '9'};
        for (int i = 3; i < 9; i++) d[i] = (char)('0' + rng_int(r, 10));
        int c = nhs_check_digit(d);
        if (c == 10) continue;
        memcpy(out, d, 9);
        out[9] = (char)('0' + c);
        out[10] = 0;
        return;
    }
}

static const char *const family_names[] = {"Smith", "Jones", "Patel", "Williams", "Brown", "Taylor", "Khan", "Davies",
                                           "Evans", "Wilson", "Thomas", "Johnson", "Roberts", "Ahmed", "Ali",
                                           "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes", "Edwards",
                                           "Green", "Hall", "Wood", "Harris", "Lewis", "Martin", "Jackson", "Clarke",
                                           "Begum", "Hussain", "Shah", "Singh", "Kaur", "Okafor", "Mensah", "Nowak",
                                           "Kowalski", "Silva", "Murphy", "O'Brien", "Campbell", "Stewart"};
static const char *const male_given[] = {"Oliver", "Jack", "Harry", "George", "Mohammed", "Noah", "James", "David",
                                         "John", "Michael", "Peter", "Ahmed", "Ravi", "Tomasz", "Kwame", "Daniel",
                                         "Samuel", "Joseph", "William", "Arthur"};
static const char *const female_given[] = {"Olivia", "Amelia", "Isla", "Ava", "Mary", "Margaret", "Susan", "Fatima",
                                           "Aisha", "Priya", "Sarah", "Emma", "Grace", "Chloe", "Anna", "Patricia",
                                           "Elizabeth", "Joan", "Amara", "Zofia"};
static const char *const streets[] = {"High Street", "Church Road", "Station Road", "Uxbridge Road", "Harrow Road",
                                      "King Street", "Goldhawk Road", "Edgware Road", "Park Lane", "Queens Road"};
static const char *const districts[] = {"W2", "W6", "W9", "W10", "W12", "NW1", "NW6", "NW10", "SW6", "UB1", "HA0"};

typedef struct condition_def {
    const char *code, *display;
    double base, per_decade; /* prevalence: base + per_decade * (age-40)/10, clipped */
} condition_def;

/* SNOMED CT concepts for common long-term conditions. */
static const condition_def conditions[] = {
    {"44054006", "Diabetes mellitus type 2", 0.01, 0.025},
    {"38341003", "Hypertensive disorder", 0.03, 0.07},
    {"13645005", "Chronic obstructive lung disease", 0.0, 0.012},
    {"53741008", "Coronary arteriosclerosis", 0.0, 0.015},
    {"84114007", "Heart failure", 0.0, 0.008},
    {"49436004", "Atrial fibrillation", 0.0, 0.01},
    {"709044004", "Chronic kidney disease", 0.0, 0.012},
    {"35489007", "Depressive disorder", 0.08, 0.0},
    {"52448006", "Dementia", 0.0, 0.006},
};

static json_t *coding(const char *system, const char *code, const char *display) {
    return json_pack("{s:[{s:s,s:s,s:s}],s:s}", "coding", "system", system, "code", code, "display", display, "text",
                     display);
}

static void date_str(int y, int m, int d, char out[40]) { snprintf(out, 40, "%04d-%02d-%02d", y, m, d); }

static int put(store_txn *tx, json_t *res, const char *id, store_meta *m) {
    err e;
    const char *type = json_string_value(json_object_get(res, "resourceType"));
    if (fhir_validate(res, type, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: generated %s is invalid at %s: %s\n", type, e.where, e.msg);
        return -1;
    }
    if (store_put(tx, res, id, 0, 0, m, NULL, NULL, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int demo_load(store *s, int patients, uint64_t seed) {
    rng r = {seed * 0x9E3779B97F4A7C15ULL + 1};
    err e;
    store_txn *tx = NULL;
    store_meta m;
    int rc = 0;
    const int n_practices = 10;
    char ref[128];

    /* practices and their GPs */
    if (store_begin(s, &tx, &e) != ST_OK) goto fail;
    for (int p = 0; p < n_practices; p++) {
        char ods[16], name[64], id[32];
        snprintf(ods, sizeof ods, "Y%05d", 90001 + p);
        snprintf(name, sizeof name, "%s Medical Centre", PICK(&r, streets));
        snprintf(id, sizeof id, "practice-%d", p + 1);
        json_t *org = json_pack("{s:s,s:[{s:s,s:s}],s:b,s:[{s:[{s:s,s:s,s:s}]}],s:s}", "resourceType", "Organization",
                                "identifier", "system", "https://fhir.nhs.uk/Id/ods-organization-code", "value", ods,
                                "active", 1, "type", "coding", "system",
                                "https://fhir.nhs.uk/CodeSystem/organisation-role", "code", "76", "display",
                                "GP PRACTICE", "name", name);
        if (put(tx, org, id, &m)) goto fail;
        json_decref(org);
        for (int g = 0; g < 2; g++) {
            char pid[32];
            snprintf(pid, sizeof pid, "gp-%d-%d", p + 1, g + 1);
            int female = rng_int(&r, 2);
            json_t *pr = json_pack("{s:s,s:[{s:s,s:[s],s:[s]}],s:s}", "resourceType", "Practitioner", "name", "family",
                                   PICK(&r, family_names), "given",
                                   female ? PICK(&r, female_given) : PICK(&r, male_given), "prefix", "Dr", "gender",
                                   female ? "female" : "male");
            if (put(tx, pr, pid, &m)) goto fail;
            json_decref(pr);
        }
    }
    if (store_commit(tx, &e) != ST_OK) {
        tx = NULL;
        goto fail;
    }
    tx = NULL;

    int resources = n_practices * 3;
    for (int i = 0; i < patients; i++) {
        if (store_begin(s, &tx, &e) != ST_OK) goto fail;
        /* London-like age structure: more young adults, a tail to 100 */
        int age = (int)(rng_unit(&r) * rng_unit(&r) * 70 + rng_unit(&r) * 30);
        if (age > 100) age = 100;
        int female = rng_int(&r, 2);
        int by = 2026 - age, bm = 1 + rng_int(&r, 12), bd = 1 + rng_int(&r, 28);
        char nhs[11], birth[40], pid[32], postcode[32], phone[24];
        nhs_number(&r, nhs);
        date_str(by, bm, bd, birth);
        snprintf(pid, sizeof pid, "demo-%d", i + 1);
        snprintf(postcode, sizeof postcode, "%s %d%c%c", PICK(&r, districts), 1 + rng_int(&r, 9),
                 'A' + rng_int(&r, 26), 'A' + rng_int(&r, 26));
        snprintf(phone, sizeof phone, "020 7946 %04d", rng_int(&r, 10000));
        int practice = rng_int(&r, n_practices);
        snprintf(ref, sizeof ref, "Organization/practice-%d", practice + 1);
        json_t *pt = json_pack(
            "{s:s,s:[{s:s,s:s}],s:b,s:[{s:s,s:s,s:[s]}],s:[{s:s,s:s,s:s}],s:s,s:s,s:[{s:s,s:[s],s:s,s:s}],"
            "s:[{s:s}]}",
            "resourceType", "Patient", "identifier", "system", "https://fhir.nhs.uk/Id/nhs-number", "value", nhs,
            "active", 1, "name", "use", "official", "family", PICK(&r, family_names), "given",
            female ? PICK(&r, female_given) : PICK(&r, male_given), "telecom", "system", "phone", "value", phone, "use",
            "home", "gender", female ? "female" : "male", "birthDate", birth, "address", "use", "home", "line",
            PICK(&r, streets), "city", "London", "postalCode", postcode, "generalPractitioner", "reference", ref);
        if (put(tx, pt, pid, &m)) goto fail;
        json_decref(pt);
        resources++;
        char pref[64];
        snprintf(pref, sizeof pref, "Patient/%s", pid);
        int diabetic = 0;
        for (size_t c = 0; c < sizeof conditions / sizeof conditions[0]; c++) {
            double prev = conditions[c].base + conditions[c].per_decade * (age - 40) / 10.0;
            if (rng_unit(&r) >= prev) continue;
            if (c == 0) diabetic = 1;
            char onset[40];
            int oy = by + 18 + rng_int(&r, age > 18 ? age - 17 : 1);
            if (oy > 2026) oy = 2026;
            date_str(oy, 1 + rng_int(&r, 12), 1 + rng_int(&r, 28), onset);
            json_t *cond = json_pack(
                "{s:s,s:{s:[{s:s,s:s}]},s:{s:[{s:s,s:s}]},s:[{s:[{s:s,s:s}]}],s:o,s:{s:s},s:s}", "resourceType",
                "Condition", "clinicalStatus", "coding", "system",
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "code", "active", "verificationStatus",
                "coding", "system", "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code", "confirmed",
                "category", "coding", "system", "http://terminology.hl7.org/CodeSystem/condition-category", "code",
                "problem-list-item", "code", coding("http://snomed.info/sct", conditions[c].code, conditions[c].display),
                "subject", "reference", pref, "onsetDateTime", onset);
            if (put(tx, cond, NULL, &m)) goto fail;
            json_decref(cond);
            resources++;
        }
        /* observations: BP and BMI for adults, HbA1c for people with diabetes */
        int n_obs = age >= 18 ? 1 + rng_int(&r, 4) : 0;
        for (int k = 0; k < n_obs; k++) {
            char when[64];
            snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:00Z", 2023 + rng_int(&r, 4), 1 + rng_int(&r, 12),
                     1 + rng_int(&r, 28), 8 + rng_int(&r, 9), rng_int(&r, 60));
            json_t *obs;
            int kind = diabetic ? rng_int(&r, 3) : rng_int(&r, 2);
            if (kind == 0) {
                int sys = 110 + rng_int(&r, 60) + age / 4, dia = 65 + rng_int(&r, 30);
                obs = json_pack("{s:s,s:s,s:[{s:[{s:s,s:s}]}],s:o,s:{s:s},s:s,s:[{s:o,s:{s:i,s:s,s:s,s:s}},"
                                "{s:o,s:{s:i,s:s,s:s,s:s}}]}",
                                "resourceType", "Observation", "status", "final", "category", "coding", "system",
                                "http://terminology.hl7.org/CodeSystem/observation-category", "code", "vital-signs",
                                "code", coding("http://snomed.info/sct", "75367002", "Blood pressure"), "subject",
                                "reference", pref, "effectiveDateTime", when, "component", "code",
                                coding("http://snomed.info/sct", "72313002", "Systolic arterial pressure"),
                                "valueQuantity", "value", sys, "unit", "mmHg", "system", "http://unitsofmeasure.org",
                                "code", "mm[Hg]", "code",
                                coding("http://snomed.info/sct", "1091811000000102", "Diastolic arterial pressure"),
                                "valueQuantity", "value", dia, "unit", "mmHg", "system", "http://unitsofmeasure.org",
                                "code", "mm[Hg]");
            } else if (kind == 1) {
                double bmi = 19 + rng_unit(&r) * 18;
                obs = json_pack("{s:s,s:s,s:[{s:[{s:s,s:s}]}],s:o,s:{s:s},s:s,s:{s:f,s:s,s:s,s:s}}", "resourceType",
                                "Observation", "status", "final", "category", "coding", "system",
                                "http://terminology.hl7.org/CodeSystem/observation-category", "code", "vital-signs",
                                "code", coding("http://snomed.info/sct", "60621009", "Body mass index"), "subject",
                                "reference", pref, "effectiveDateTime", when, "valueQuantity", "value",
                                (double)((int)(bmi * 10)) / 10.0, "unit", "kg/m2", "system",
                                "http://unitsofmeasure.org", "code", "kg/m2");
            } else {
                int hba1c = 42 + rng_int(&r, 50);
                obs = json_pack("{s:s,s:s,s:[{s:[{s:s,s:s}]}],s:o,s:{s:s},s:s,s:{s:i,s:s,s:s,s:s}}", "resourceType",
                                "Observation", "status", "final", "category", "coding", "system",
                                "http://terminology.hl7.org/CodeSystem/observation-category", "code", "laboratory",
                                "code",
                                coding("http://snomed.info/sct", "999791000000106",
                                       "Haemoglobin A1c level - IFCC standardised"),
                                "subject", "reference", pref, "effectiveDateTime", when, "valueQuantity", "value",
                                hba1c, "unit", "mmol/mol", "system", "http://unitsofmeasure.org", "code", "mmol/mol");
            }
            if (put(tx, obs, NULL, &m)) goto fail;
            json_decref(obs);
            resources++;
        }
        if (store_commit(tx, &e) != ST_OK) {
            tx = NULL;
            goto fail;
        }
        tx = NULL;
    }
    log_info("demo: loaded %d patients, %d resources", patients, resources);
    return rc;
fail:
    if (tx) store_rollback(tx);
    fprintf(stderr, "concord: demo: loading failed: %s\n", e.msg);
    return 1;
}

typedef struct banner_arg {
    int patients;
} banner_arg;

static void banner(const char *base, void *p) {
    printf("\nconcord is running.\n\n"
           "  Landing page:        %s/\n"
           "  FHIR API base:       %s/fhir\n"
           "  CapabilityStatement: %s/fhir/metadata\n"
           "  Patients:            %s/fhir/Patient?_count=20\n"
           "  One record:          %s/fhir/Patient/demo-1/$everything\n\n"
           "Stop with Ctrl-C.\n",
           base, base, base, base, base);
    fflush(stdout);
}

int cmd_demo(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    int patients = 2000, serve = 1;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
        if (strcmp(argv[i], "--patients") == 0 && i + 1 < argc) {
            patients = atoi(argv[++i]);
            if (patients < 1) {
                fprintf(stderr, "concord: demo: --patients must be at least 1\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--no-serve") == 0) {
            serve = 0;
        } else {
            fprintf(stderr, "concord: demo: unknown option '%s'\nTry 'concord --help'.\n", argv[i]);
            return 2;
        }
    }
    store *s = NULL;
    if (cli_open_store(&o, 1, &s)) return 1;
    store_count *counts = NULL;
    size_t n = 0;
    err e;
    int rc = 0;
    if (store_counts(s, &counts, &n, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: %s\n", e.msg);
        store_close(s);
        return 1;
    }
    free(counts);
    if (n == 0) {
        printf("Loading a demonstration population of %d patients into %s ...\n", patients, o.db);
        fflush(stdout);
        rc = demo_load(s, patients, seed);
    } else {
        printf("The store %s already holds data: not loading the demonstration population again.\n", o.db);
    }
    if (rc == 0 && serve) {
        banner_arg b = {patients};
        rc = cli_serve_until_signal(s, &o, banner, &b);
    }
    store_close(s);
    return rc;
}
