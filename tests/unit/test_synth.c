/*
 * test_synth.c — the synthetic population generator (src/synth).
 *
 * What a user of the data relies on:
 *   - the same seed gives byte-identical feeds, whatever the thread count;
 *   - NHS numbers are valid (modulus 11) unless the ground truth lists the
 *     record as deliberately mistyped, and missing only where it says so;
 *   - every FHIR resource (integrated record and GP extract) passes the
 *     project's validator;
 *   - every HL7 message is MLLP-framed, parses with src/ingest/hl7.h
 *     (except the ones the ground truth lists as malformed), starts with
 *     MSH and has a unique MSH-10;
 *   - prevalence, age structure and event rates land within the stated
 *     tolerances of the documented targets (docs/synth.md);
 *   - the planted-error counts in manifest.json match errors.csv, and the
 *     missing NHS numbers in the GP extract match the ground truth.
 * Small populations keep it fast; bench/synth.sh measures speed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fhir/validate.h"
#include "ingest/hl7.h"
#include "synth/synth.h"
#include "synth/synth_int.h"

#define FEEDS_N 2000

static char dir_a[64], dir_b[64];

/* ---- small file helpers ---------------------------------------------------- */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    size_t got = fread(p, 1, (size_t)n, f);
    fclose(f);
    p[got] = 0;
    if (len) *len = got;
    return p;
}

static void rm_rf(const char *path) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

static int setup_feeds(void **state) {
    (void)state;
    synth_params p;
    synth_params_default(&p);
    p.patients = FEEDS_N;
    p.seed = 42;
    p.error_rate = 2.0; /* more planted errors, so small N still exercises them */
    snprintf(dir_a, sizeof dir_a, "/tmp/concord-synth-a-XXXXXX");
    snprintf(dir_b, sizeof dir_b, "/tmp/concord-synth-b-XXXXXX");
    if (!mkdtemp(dir_a) || !mkdtemp(dir_b)) return -1;
    err e;
    synth_summary s;
    p.threads = 1;
    if (synth_feeds(&p, dir_a, NULL, NULL, &s, &e) != ST_OK) return -1;
    p.threads = 3;
    if (synth_feeds(&p, dir_b, NULL, NULL, &s, &e) != ST_OK) return -1;
    return 0;
}

static int teardown_feeds(void **state) {
    (void)state;
    rm_rf(dir_a);
    rm_rf(dir_b);
    return 0;
}

/* ---- NHS numbers -------------------------------------------------------------- */
static void test_nhs_check_digit(void **state) {
    (void)state;
    assert_true(synth_nhs_valid("9990000018"));
    assert_false(synth_nhs_valid("9990000019"));
    assert_false(synth_nhs_valid("999000001"));
    assert_false(synth_nhs_valid("99900000180"));
    assert_false(synth_nhs_valid("999000001X"));
    assert_int_equal(synth_nhs_check_digit("999000000"), 10); /* no valid number */
    /* published example: 943 476 5919 */
    assert_true(synth_nhs_valid("9434765919"));
    assert_false(synth_nhs_valid("9434765918"));
}

/* ---- determinism ------------------------------------------------------------------ */
static void compare_dirs(const char *a, const char *b, const char *sub) {
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s", a, sub);
    DIR *d = opendir(pa);
    assert_non_null(d);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        snprintf(pa, sizeof pa, "%s/%s/%s", a, sub, de->d_name);
        snprintf(pb, sizeof pb, "%s/%s/%s", b, sub, de->d_name);
        struct stat st;
        if (stat(pa, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        size_t la, lb;
        char *x = slurp(pa, &la), *y = slurp(pb, &lb);
        assert_non_null(x);
        assert_non_null(y);
        if (la != lb || memcmp(x, y, la) != 0) fail_msg("%s differs between runs", pa);
        free(x);
        free(y);
        files++;
    }
    closedir(d);
    assert_true(files > 0);
}

static void test_same_seed_same_bytes(void **state) {
    (void)state;
    static const char *const subs[] = {"gp", "acute", "community", "social_care", "mental_health", "ground_truth", "."};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) compare_dirs(dir_a, dir_b, subs[i]);
}

static void test_other_seed_other_people(void **state) {
    (void)state;
    synth_params p;
    synth_params_default(&p);
    p.patients = 200;
    synth_world *w1, *w2;
    err e;
    assert_int_equal(synth_world_build(&p, &w1, &e), ST_OK);
    p.seed = 2;
    assert_int_equal(synth_world_build(&p, &w2, &e), ST_OK);
    synth_person *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    int same = 0;
    for (int i = 0; i < 200; i++) {
        person_generate(w1, i, a);
        person_generate(w2, i, b);
        same += a->birth_day == b->birth_day && strcmp(a->family, b->family) == 0;
        assert_string_equal(a->nhs, b->nhs); /* NHS numbers are allocated in order */
    }
    assert_true(same < 20);
    free(a);
    free(b);
    synth_world_free(w1);
    synth_world_free(w2);
}

/* ---- the ground truth ---------------------------------------------------------------- */
typedef struct truth {
    json_t *errors; /* "feed|person|kind" -> count; "feed|record|kind" -> 1 */
    json_t *record_person; /* "feed|record" -> person */
    json_t *local_person;  /* "feed|local" -> person */
    json_t *kind_count;    /* kind -> rows */
} truth;

static void truth_load(const char *dir, truth *t) {
    char path[512];
    t->errors = json_object();
    t->record_person = json_object();
    t->local_person = json_object();
    t->kind_count = json_object();
    snprintf(path, sizeof path, "%s/ground_truth/errors.csv", dir);
    char *text = slurp(path, NULL);
    assert_non_null(text);
    char *save = NULL;
    int header = 1;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = 0;
            continue;
        }
        char feed[64], rec[64], person[32], kind[32];
        assert_int_equal(sscanf(line, "%63[^,],%63[^,],%31[^,],%31[^,]", feed, rec, person, kind), 4);
        char key[256];
        snprintf(key, sizeof key, "%s|%s|%s", feed, person, kind);
        json_object_set_new(t->errors, key, json_true());
        snprintf(key, sizeof key, "%s|%s|%s", feed, rec, kind);
        json_object_set_new(t->errors, key, json_true());
        json_t *c = json_object_get(t->kind_count, kind);
        json_object_set_new(t->kind_count, kind, json_integer(c ? json_integer_value(c) + 1 : 1));
    }
    free(text);
    snprintf(path, sizeof path, "%s/ground_truth/records.csv", dir);
    text = slurp(path, NULL);
    assert_non_null(text);
    header = 1;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = 0;
            continue;
        }
        char feed[64], rec[64], local[64], person[32];
        assert_int_equal(sscanf(line, "%63[^,],%63[^,],%63[^,],%31s", feed, rec, local, person), 4);
        char key[256];
        snprintf(key, sizeof key, "%s|%s", feed, rec);
        json_object_set_new(t->record_person, key, json_string(person));
        snprintf(key, sizeof key, "%s|%s", feed, local);
        json_object_set_new(t->local_person, key, json_string(person));
    }
    free(text);
}

static void truth_free(truth *t) {
    json_decref(t->errors);
    json_decref(t->record_person);
    json_decref(t->local_person);
    json_decref(t->kind_count);
}

static int listed(const truth *t, const char *feed, const char *id, const char *kind) {
    char key[256];
    snprintf(key, sizeof key, "%s|%s|%s", feed, id, kind);
    return json_object_get(t->errors, key) != NULL;
}

/* ---- GP extract: FHIR validates; NHS numbers; missing ones listed ------------------- */
static void test_gp_extract(void **state) {
    (void)state;
    truth t;
    truth_load(dir_a, &t);
    char path[512];
    snprintf(path, sizeof path, "%s/gp", dir_a);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    long resources = 0, patients = 0, missing = 0, mistyped = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char feed[64];
        snprintf(feed, sizeof feed, "gp/%.*s", (int)(strlen(de->d_name) - 7), de->d_name);
        snprintf(path, sizeof path, "%s/gp/%s", dir_a, de->d_name);
        char *text = slurp(path, NULL);
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            json_error_t je;
            json_t *r = json_loads(line, 0, &je);
            if (!r) fail_msg("%s: not JSON: %s", path, je.text);
            err e;
            if (fhir_validate(r, NULL, &e) != ST_OK) fail_msg("%s: invalid at %s: %s\n%s", path, e.where, e.msg, line);
            resources++;
            if (strcmp(json_string_value(json_object_get(r, "resourceType")), "Patient") == 0) {
                patients++;
                const char *id = json_string_value(json_object_get(r, "id"));
                char key[256];
                snprintf(key, sizeof key, "%s|%s", feed, id);
                json_t *person = json_object_get(t.local_person, key);
                if (!person) fail_msg("GP patient %s/%s is not in the ground truth", feed, id);
                json_t *ids = json_object_get(r, "identifier");
                const char *nhs = ids ? json_string_value(json_object_get(json_array_get(ids, 0), "value")) : NULL;
                if (!nhs) {
                    missing++;
                    if (!listed(&t, feed, id, "nhs_missing")) fail_msg("%s %s has no NHS number, not listed", feed, id);
                } else if (!synth_nhs_valid(nhs)) {
                    mistyped++;
                    if (!listed(&t, feed, id, "nhs_mistyped")) fail_msg("%s %s: invalid NHS number %s, not listed", feed, id, nhs);
                }
            }
            json_decref(r);
        }
        free(text);
    }
    closedir(d);
    assert_true(patients >= FEEDS_N);
    assert_true(resources > patients * 5);
    /* every nhs_missing listed for a GP feed is a Patient without one */
    long listed_missing = 0;
    const char *key;
    json_t *v;
    json_object_foreach(t.errors, key, v) {
        if (strncmp(key, "gp/", 3) == 0 && strstr(key, "|nhs_missing") && !strstr(key, "|p0")) listed_missing++;
    }
    assert_int_equal(listed_missing, missing);
    assert_true(missing > 0);
    truth_free(&t);
}

/* ---- the integrated record (what `concord demo` loads) validates ---------------------- */
typedef struct count_ctx {
    long n, patients;
} count_ctx;

static int validate_one(void *arg, const char *type, const char *id, const char *json, size_t len) {
    count_ctx *c = arg;
    json_error_t je;
    json_t *r = json_loadb(json, len, 0, &je);
    if (!r) fail_msg("%s/%s: not JSON: %s", type, id, je.text);
    err e;
    if (fhir_validate(r, type, &e) != ST_OK) fail_msg("%s/%s invalid at %s: %s\n%.*s", type, id, e.where, e.msg, (int)len, json);
    const char *rid = json_string_value(json_object_get(r, "id"));
    assert_non_null(rid);
    assert_string_equal(rid, id);
    assert_true(fhir_id_valid(rid));
    json_t *tags = json_object_get(json_object_get(r, "meta"), "tag");
    assert_int_equal(json_array_size(tags), 2); /* care setting and source organisation */
    assert_string_equal(json_string_value(json_object_get(json_array_get(tags, 0), "system")), SYNTH_SETTING_SYSTEM);
    if (strcmp(type, "Patient") == 0) c->patients++;
    c->n++;
    json_decref(r);
    return 0;
}

static void test_integrated_record_validates(void **state) {
    (void)state;
    synth_params p;
    synth_params_default(&p);
    p.patients = 400;
    synth_world *w;
    err e;
    assert_int_equal(synth_world_build(&p, &w, &e), ST_OK);
    count_ctx c = {0};
    assert_int_equal(synth_world_foreach_org_resource(w, validate_one, &c), 0);
    assert_int_equal(c.n, N_MDG + N_PRACTICES * 3 + N_ACUTE + N_COMMUNITY + N_COUNCILS + N_MENTAL);
    assert_int_equal(synth_world_foreach_resource(w, 0, p.patients, validate_one, &c), 0);
    assert_int_equal(c.patients, 400);
    assert_true(c.n > 400 * 10);
    synth_world_free(w);
}

/* ---- hospital HL7 streams ----------------------------------------------------------------- */
static void test_hl7_streams(void **state) {
    (void)state;
    truth t;
    truth_load(dir_a, &t);
    json_t *seen = json_object();
    long messages = 0, malformed = 0, no_nhs = 0;
    for (int h = 1; h <= N_ACUTE; h++) {
        char path[512], feed[32];
        snprintf(feed, sizeof feed, "acute/ZA%d", h);
        snprintf(path, sizeof path, "%s/%s.hl7", dir_a, feed);
        size_t len;
        char *s = slurp(path, &len);
        assert_non_null(s);
        size_t i = 0;
        while (i < len) {
            if (s[i] != 0x0B) fail_msg("%s: byte %zu is not an MLLP start block", path, i);
            char *endp = memchr(s + i, 0x1C, len - i);
            assert_non_null(endp);
            size_t end = (size_t)(endp - s);
            assert_true(end + 1 < len && s[end + 1] == 0x0D);
            const char *msg = s + i + 1;
            size_t mlen = end - i - 1;
            i = end + 2;
            messages++;
            assert_true(mlen > 3 && memcmp(msg, "MSH", 3) == 0);
            /* segments: three-character ids, each ended by \r (a truncated one may not be) */
            arena a = {0};
            hl7_msg *m = NULL;
            hl7_error he;
            status st = hl7_parse(msg, mlen, NULL, &a, &m, &he);
            char ctrl[64] = "";
            if (m) {
                const hl7_header *hd = hl7_msg_header(m);
                snprintf(ctrl, sizeof ctrl, "%.*s", (int)hd->control_id.n, hd->control_id.p);
            }
            if (st != ST_OK || !ctrl[0]) {
                /* must be one the ground truth lists as malformed: find it by its MSH-10
                 * (or, when MSH-10 is missing, by elimination: counted below) */
                malformed++;
                if (ctrl[0] && !listed(&t, feed, ctrl, "malformed"))
                    fail_msg("%s: message %s does not parse (%s) and is not listed as malformed", path, ctrl, he.text);
                arena_free(&a);
                continue;
            }
            char key[128];
            snprintf(key, sizeof key, "%s|%s", feed, ctrl);
            if (json_object_get(seen, key)) fail_msg("%s: MSH-10 %s is not unique", path, ctrl);
            json_object_set_new(seen, key, json_true());
            if (!json_object_get(t.record_person, key)) fail_msg("%s: message %s is not in the ground truth", path, ctrl);
            /* PID-3: an NHS number (type NH) valid unless listed */
            long pid = hl7_segment_find(m, "PID", 0);
            if (pid >= 0) {
                const char *person = json_string_value(json_object_get(t.record_person, key));
                int reps = hl7_rep_count(m, pid, 3), found = 0;
                for (int r = 1; r <= reps; r++) {
                    const char *type = hl7_get_cstr(m, pid, 3, r, 5, 0);
                    if (strcmp(type, "NH") != 0) continue;
                    found = 1;
                    const char *nhs = hl7_get_cstr(m, pid, 3, r, 1, 0);
                    if (!synth_nhs_valid(nhs) && !listed(&t, feed, person, "nhs_mistyped"))
                        fail_msg("%s %s: invalid NHS number %s not listed", path, ctrl, nhs);
                }
                if (!found) {
                    no_nhs++;
                    if (!listed(&t, feed, person, "nhs_missing"))
                        fail_msg("%s %s: no NHS number and not listed as missing", path, ctrl);
                }
            }
            arena_free(&a);
        }
        free(s);
    }
    json_t *listed_malformed = json_object_get(t.kind_count, "malformed");
    assert_true(messages > FEEDS_N);
    assert_true(no_nhs > 0);
    /* every malformed message that fails to parse is listed; some listed ones
     * (a bad date of birth) still parse structurally */
    assert_true(listed_malformed && json_integer_value(listed_malformed) >= malformed);
    json_decref(seen);
    truth_free(&t);
}

/* ---- the planted-error counts agree ------------------------------------------------------- */
static void test_error_counts_match_manifest(void **state) {
    (void)state;
    truth t;
    truth_load(dir_a, &t);
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.json", dir_a);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    assert_non_null(m);
    json_t *pe = json_object_get(m, "planted_errors");
    const char *k;
    json_t *v;
    long total = 0;
    json_object_foreach(pe, k, v) {
        json_t *c = json_object_get(t.kind_count, k);
        assert_int_equal(json_integer_value(v), c ? json_integer_value(c) : 0);
        total += json_integer_value(v);
    }
    assert_int_equal(total, json_integer_value(json_object_get(json_object_get(m, "counts"), "planted_errors")));
    assert_true(total > 100);
    /* every kind of error is planted at this size and rate */
    json_object_foreach(pe, k, v) if (json_integer_value(v) == 0) fail_msg("no %s planted", k);
    json_decref(m);
    truth_free(&t);
}

/* ---- CSV extracts: NHS numbers valid unless listed -------------------------------------- */
static void test_csv_nhs_numbers(void **state) {
    (void)state;
    truth t;
    truth_load(dir_a, &t);
    static const struct {
        const char *file, *column;
        char delim;
    } files[] = {{"community/ZC1.csv", "nhs_number", ','},   {"community/ZC2.csv", "NHSNo", '|'},
                 {"community/ZC3.csv", "client_nhs", ','},   {"social_care/ZL1.csv", "nhs_no", ','},
                 {"social_care/ZL2.csv", "NHSNumber", ','},  {"social_care/ZL3.csv", "nhs", '|'},
                 {"social_care/ZL4.csv", "NHS_NUMBER", ','}, {"social_care/ZL5.csv", "nhs_number", ','},
                 {"mental_health/ZM1.csv", "nhs_number", ','}};
    long rows = 0, missing = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[512], feed[64];
        snprintf(path, sizeof path, "%s/%s", dir_a, files[f].file);
        snprintf(feed, sizeof feed, "%.*s", (int)(strlen(files[f].file) - 4), files[f].file);
        char *text = slurp(path, NULL);
        assert_non_null(text);
        char *save = NULL;
        int col = -1, idcol = 0;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            /* split, honouring quotes */
            char *cells[32];
            int n = 0, q = 0;
            cells[n++] = line;
            for (char *c = line; *c; c++) {
                if (*c == '"') q = !q;
                else if (*c == files[f].delim && !q && n < 32) {
                    *c = 0;
                    cells[n++] = c + 1;
                }
            }
            if (col < 0) {
                for (int i = 0; i < n; i++)
                    if (strcmp(cells[i], files[f].column) == 0) col = i;
                /* the row id is the first column except in ZL1 (no row id: client ref) and ZL4 */
                idcol = strcmp(files[f].file, "social_care/ZL4.csv") == 0 ? 1 : 0;
                assert_true(col >= 0);
                continue;
            }
            rows++;
            assert_true(n > col);
            char key[256];
            const char *rowid = cells[idcol];
            if (strcmp(files[f].file, "social_care/ZL1.csv") == 0) continue; /* no row id column */
            snprintf(key, sizeof key, "%s|%s", feed, rowid);
            json_t *person = json_object_get(t.record_person, key);
            if (!person) fail_msg("%s row %s not in the ground truth", feed, rowid);
            const char *nhs = cells[col];
            if (!nhs[0]) {
                missing++;
                if (!listed(&t, feed, json_string_value(person), "nhs_missing"))
                    fail_msg("%s row %s: no NHS number, not listed", feed, rowid);
            } else if (!synth_nhs_valid(nhs) && !listed(&t, feed, json_string_value(person), "nhs_mistyped")) {
                fail_msg("%s row %s: invalid NHS number %s, not listed", feed, rowid, nhs);
            }
        }
        free(text);
    }
    assert_true(rows > 100);
    assert_true(missing > 0);
    truth_free(&t);
}

/* ---- the model against its targets --------------------------------------------------------- */
static void test_model_targets(void **state) {
    (void)state;
    enum { N = 30000 };
    synth_params p;
    synth_params_default(&p);
    p.patients = N;
    p.seed = 1;
    synth_world *w;
    err e;
    assert_int_equal(synth_world_build(&p, &w, &e), ST_OK);
    synth_person *x = malloc(sizeof *x);
    long prevalent[N_CONDITIONS] = {0}, band[3] = {0}, nel = 0, ae = 0, deaths = 0, female = 0;
    long nel_prog[2][2] = {{0}}; /* [integrated][evaluation period] */
    double py = 0, py_prog[2][2] = {{0}};
    long nhs_bad = 0;
    for (int i = 0; i < N; i++) {
        person_generate(w, i, x);
        if (!synth_nhs_valid(x->nhs)) nhs_bad++;
        for (int c = 0; c < N_CONDITIONS; c++)
            if (x->onset[c] && x->onset[c] < w->start_day) prevalent[c]++;
        int age = person_age_years(x, w->start_day);
        band[age < 20 ? 0 : age < 65 ? 1 : 2]++;
        female += x->female;
        py += (x->end_day - x->start_day) / 365.2425;
        int integ = w->practices[x->practice].integrated;
        int split = w->programme_start_day;
        int pre_end = x->end_day < split ? x->end_day : split;
        if (pre_end > x->start_day) py_prog[integ][0] += (pre_end - x->start_day) / 365.2425;
        if (x->end_day > split) py_prog[integ][1] += (x->end_day - split) / 365.2425;
        for (int k = 0; k < x->n_events; k++) {
            const synth_event *ev = &x->events[k];
            if (ev->kind == EV_NEL) {
                nel++;
                nel_prog[integ][ev->day >= split]++;
            }
            if (ev->kind == EV_AE) ae++;
            if (ev->kind == EV_DEATH) deaths++;
        }
    }
    assert_int_equal(nhs_bad, 0);
    /* prevalence at the start within 20% of target (or 0.15 percentage points for rare ones) */
    for (int c = 0; c < N_CONDITIONS; c++) {
        double got = (double)prevalent[c] / N, want = conditions[c].target;
        double tol = fmax(0.20 * want, 0.0015);
        if (fabs(got - want) > tol)
            fail_msg("%s prevalence %.4f, target %.4f (tolerance %.4f)", conditions[c].name, got, want, tol);
    }
    /* London age structure: 0-19 23.9%, 20-64 63.6%, 65+ 12.4% of the ONS bands (+-1.5 points) */
    double total_share = 0, share_young = 0, share_old = 0;
    for (int b = 0; b < n_age_bands; b++) {
        total_share += age_bands[b].share;
        if (age_bands[b].hi < 20) share_young += age_bands[b].share;
        if (age_bands[b].lo >= 65) share_old += age_bands[b].share;
    }
    assert_true(fabs((double)band[0] / N - share_young / total_share) < 0.015);
    assert_true(fabs((double)band[2] / N - share_old / total_share) < 0.015);
    assert_true(fabs((double)female / N - 0.505) < 0.02);
    /* rates per 1,000 person-years within 15% (non-elective, A&E: admissions are
     * heavy-tailed, so a 30,000-person sample varies by ~5% between seeds) and 35% (deaths) */
    double nel_rate = nel * 1000.0 / py, ae_rate = ae * 1000.0 / py, death_rate = deaths * 1000.0 / py;
    if (fabs(nel_rate - hazards[HZ_NEL].target) > 0.15 * hazards[HZ_NEL].target)
        fail_msg("non-elective admissions %.1f/1000, target %.1f", nel_rate, hazards[HZ_NEL].target);
    if (fabs(ae_rate - hazards[HZ_AE].target) > 0.15 * hazards[HZ_AE].target)
        fail_msg("A&E %.1f/1000, target %.1f", ae_rate, hazards[HZ_AE].target);
    if (fabs(death_rate - hazards[HZ_DEATH].target) > 0.35 * hazards[HZ_DEATH].target)
        fail_msg("deaths %.1f/1000, target %.1f", death_rate, hazards[HZ_DEATH].target);
    (void)nel_prog;
    free(x);
    synth_world_free(w);
}

/* The programme: with a large configured effect, integrated practices' admission
 * rate over the evaluation period falls well below the comparison practices'. */
static void test_programme_effect(void **state) {
    (void)state;
    enum { N = 20000 };
    synth_params p;
    synth_params_default(&p);
    p.patients = N;
    p.programme_effect = 0.5;
    synth_world *w;
    err e;
    assert_int_equal(synth_world_build(&p, &w, &e), ST_OK);
    synth_person *x = malloc(sizeof *x);
    double nel[2][2] = {{0}}, py[2][2] = {{0}};
    int split = w->programme_start_day;
    for (int i = 0; i < N; i++) {
        person_generate(w, i, x);
        int in = w->practices[x->practice].integrated;
        int pre_end = x->end_day < split ? x->end_day : split;
        if (pre_end > x->start_day) py[in][0] += (pre_end - x->start_day) / 365.2425;
        if (x->end_day > split) py[in][1] += (x->end_day - split) / 365.2425;
        for (int k = 0; k < x->n_events; k++)
            if (x->events[k].kind == EV_NEL) nel[in][x->events[k].day >= split]++;
    }
    double ratio_in = (nel[1][1] / py[1][1]) / (nel[1][0] / py[1][0]);
    double ratio_out = (nel[0][1] / py[0][1]) / (nel[0][0] / py[0][0]);
    if (!(ratio_in / ratio_out < 0.75))
        fail_msg("programme effect 0.5 not visible: %.3f vs %.3f", ratio_in, ratio_out);
    free(x);
    synth_world_free(w);
}

int main(void) {
    const struct CMUnitTest feeds[] = {
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_gp_extract),
        cmocka_unit_test(test_hl7_streams),
        cmocka_unit_test(test_csv_nhs_numbers),
        cmocka_unit_test(test_error_counts_match_manifest),
    };
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_nhs_check_digit),
        cmocka_unit_test(test_other_seed_other_people),
        cmocka_unit_test(test_integrated_record_validates),
        cmocka_unit_test(test_model_targets),
        cmocka_unit_test(test_programme_effect),
    };
    int rc = cmocka_run_group_tests_name("synth model", model, NULL, NULL);
    rc |= cmocka_run_group_tests_name("synth feeds", feeds, setup_feeds, teardown_feeds);
    return rc;
}
