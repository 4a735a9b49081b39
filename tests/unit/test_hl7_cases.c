/*
 * test_hl7_cases.c — the data-driven HL7 v2 cases in tests/data/hl7/.
 *
 * Each case is a directory:
 *   message.hl7        the bytes received (any segment terminator)
 *   expected-ack.hl7   the acknowledgement, with MSH-7 = 20240101000000+0000
 *                      and MSH-10 = ACK0001 (injected, so it is
 *                      deterministic); compared with "\r" read as "\n"
 *   expected.json      (accepted messages) hl7_mapped_json of the result:
 *                      every resource, its key and apply mode, merges;
 *                      compared as JSON values. Nothing in it is volatile
 *                      (ids are derived from the keys), so nothing is
 *                      ignored.
 *   limits             (optional) "max_field N" / "max_message N" ...
 *
 * Every accepted resource must also pass fhir_validate (checked here again,
 * independently of hl7_map's own check). A rejected message must produce
 * no resources.
 *
 * CONCORD_HL7_UPDATE=1 writes the actual outputs over the expected files
 * (to add a case: write message.hl7, run with it, READ the outputs, commit).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fhir/json.h"
#include "fhir/validate.h"
#include "ingest/hl7.h"
#include "ingest/hl7_map.h"

#ifndef CONCORD_SOURCE_DIR
#define CONCORD_SOURCE_DIR "."
#endif
#define CASES_DIR CONCORD_SOURCE_DIR "/tests/data/hl7"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    buf b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_append(&b, tmp, n);
    fclose(f);
    if (!b.p) buf_append(&b, "", 0);
    *len = b.len;
    return buf_take(&b);
}

static void spit(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void crlf_to_lf(char *s, size_t *n) {
    size_t w = 0;
    for (size_t i = 0; i < *n; i++) {
        if (s[i] == '\r') {
            s[w++] = '\n';
            if (i + 1 < *n && s[i + 1] == '\n') i++;
        } else {
            s[w++] = s[i];
        }
    }
    /* one trailing newline, however the file ends */
    while (w && s[w - 1] == '\n') w--;
    s[w++] = '\n';
    s[w] = 0;
    *n = w;
}

static void read_limits(const char *dir, hl7_limits *lim) {
    char path[1200];
    size_t n;
    lim->max_message = HL7_DEFAULT_MAX_MESSAGE;
    lim->max_segments = HL7_DEFAULT_MAX_SEGMENTS;
    lim->max_fields = HL7_DEFAULT_MAX_FIELDS;
    lim->max_field = HL7_DEFAULT_MAX_FIELD;
    snprintf(path, sizeof path, "%s/limits", dir);
    char *text = slurp(path, &n);
    if (!text) return;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char key[32];
        unsigned long v;
        if (sscanf(line, "%31s %lu", key, &v) != 2) fail_msg("%s: bad line \"%s\"", path, line);
        if (!strcmp(key, "max_field")) lim->max_field = v;
        else if (!strcmp(key, "max_message")) lim->max_message = v;
        else if (!strcmp(key, "max_fields")) lim->max_fields = v;
        else if (!strcmp(key, "max_segments")) lim->max_segments = v;
        else fail_msg("%s: unknown limit %s", path, key);
    }
    free(text);
}

/* Run one case; returns the number of failures (printed). */
static int run_case(const char *name, int update) {
    char dir[1024], path[1200];
    size_t n, en;
    int failures = 0;
    snprintf(dir, sizeof dir, "%s/%s", CASES_DIR, name);
    snprintf(path, sizeof path, "%s/message.hl7", dir);
    char *msg = slurp(path, &n);
    if (!msg) {
        print_error("%s: no message.hl7\n", name);
        return 1;
    }
    hl7_limits lim;
    read_limits(dir, &lim);

    arena a = {0};
    hl7_result r;
    status rc = hl7_process(msg, n, &lim, NULL, &a, &r);

    /* the ACK */
    buf ack = {0};
    hl7_ack_opts opts = {0};
    opts.timestamp = "20240101000000+0000";
    opts.control_id = "ACK0001";
    hl7_ack_build(r.msg, r.ack, &r.error, r.ack != HL7_AA, &opts, &ack);
    snprintf(path, sizeof path, "%s/expected-ack.hl7", dir);
    crlf_to_lf(ack.p, &ack.len);
    if (update) spit(path, ack.p, ack.len);
    char *want_ack = slurp(path, &en);
    if (!want_ack) {
        print_error("%s: no expected-ack.hl7; got:\n%s", name, ack.p);
        failures++;
    } else {
        crlf_to_lf(want_ack, &en);
        if (en != ack.len || memcmp(want_ack, ack.p, en) != 0) {
            print_error("%s: ACK differs\n--- expected\n%s--- got\n%s", name, want_ack, ack.p);
            failures++;
        }
    }

    /* the resources */
    snprintf(path, sizeof path, "%s/expected.json", dir);
    if (rc == ST_OK) {
        json_t *got = hl7_mapped_json(&r.mapped);
        for (size_t i = 0; i < r.mapped.nres; i++) {
            err e;
            if (fhir_validate(r.mapped.res[i].json, r.mapped.res[i].type, &e) != ST_OK) {
                print_error("%s: %s %zu is not valid FHIR at %s: %s\n", name, r.mapped.res[i].type, i, e.where,
                            e.msg);
                failures++;
            }
        }
        if (update) {
            char *s = json_dumps(got, JSON_INDENT(2));
            size_t sl = strlen(s);
            s[sl] = '\n';
            spit(path, s, sl + 1);
            free(s);
        }
        json_error_t je;
        json_t *want = json_load_file(path, 0, &je);
        if (!want) {
            print_error("%s: expected.json: %s (line %d)\n", name, je.text, je.line);
            failures++;
        } else if (!json_equal(want, got)) {
            char *g = json_dumps(got, JSON_INDENT(2));
            print_error("%s: resources differ from expected.json; got:\n%s\n", name, g);
            free(g);
            failures++;
        }
        json_decref(want);
        json_decref(got);
    } else {
        struct stat st;
        if (r.mapped.nres != 0 || r.mapped.nmerges != 0) {
            print_error("%s: rejected, yet %zu resources were returned\n", name, r.mapped.nres);
            failures++;
        }
        if (stat(path, &st) == 0) {
            print_error("%s: expected.json present, but the message was rejected: %s\n", name, r.error.text);
            failures++;
        }
        if (r.error.text[0] == 0) {
            print_error("%s: rejected without a reason\n", name);
            failures++;
        }
    }
    hl7_mapped_release(&r.mapped);
    fhir_json_release();
    buf_free(&ack);
    free(want_ack);
    free(msg);
    arena_free(&a);
    return failures;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_cases(void **state) {
    (void)state;
    DIR *d = opendir(CASES_DIR);
    if (!d) fail_msg("cannot open %s", CASES_DIR);
    char *names[512];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 512) {
        char p[1024];
        struct stat st;
        if (de->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", CASES_DIR, de->d_name);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    const char *upd = getenv("CONCORD_HL7_UPDATE");
    int update = upd && *upd == '1';
    int failures = 0, accepted = 0;
    for (size_t i = 0; i < n; i++) {
        failures += run_case(names[i], update);
        char p[1200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s/expected.json", CASES_DIR, names[i]);
        accepted += stat(p, &st) == 0;
        free(names[i]);
    }
    print_message("%zu HL7 cases (%d accepted, %zu rejected), %d failures\n", n, accepted, n - (size_t)accepted,
                  failures);
    /* the suite must not pass by having nothing in it */
    assert_true(n >= 40);
    assert_true(accepted >= 15);
    assert_int_equal(failures, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
