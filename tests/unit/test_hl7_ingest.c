/*
 * test_hl7_ingest.c — the HL7 group-commit writer (src/ingest/ingest.c)
 * over a real store (a fresh SQLite database per test), driven the way the
 * MLLP connection threads drive it: ingest_hl7 from many threads at once.
 *
 * What a hospital interface relies on, and what is checked: every stored
 * resource says where it came from (meta.source names the message; meta.tag
 * the care setting and the sending organisation); decimals keep their
 * written precision although the message is mapped on one thread and
 * stored on another; a duplicate delivery (same sender and MSH-10) gets the
 * first ACK and stores nothing, also when the copies arrive together; a
 * message whose content is already stored stores no new version; a message
 * that maps but cannot be stored is quarantined alone (nothing of it kept,
 * the other messages of its commit stored) and can be replayed once the
 * cause is gone; bad content is quarantined with an AE; a sender limited to
 * some organisations cannot store a message as another.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "fhir/json.h"
#include "fhir/search.h"
#include "ingest/hl7.h"
#include "ingest/hl7_map.h"
#include "ingest/ingest.h"
#include "store/store.h"

typedef struct fx {
    char dir[256];
    char path[300];
    store *s;
    ingest *g;
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/concord-ingest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/concord.db", f->dir);
    err e;
    if (store_open(f->path, 1, &f->s, &e) != ST_OK) {
        fprintf(stderr, "store_open: %s\n", e.msg);
        return -1;
    }
    if (ingest_start(f->s, 0, &f->g, &e) != ST_OK) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    ingest_stop(f->g);
    store_close(f->s);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", f->dir);
    free(f);
    return 0;
}

/* An A04 (outpatient registration) for hospital number `mrn`, visit
 * `visit`, from RYJ; `ward` varies the Encounter's content. */
static void a04(char *out, size_t n, const char *control, const char *mrn, const char *visit, const char *ward) {
    snprintf(out, n,
             "MSH|^~\\&|PAS|RYJ^2.16.840.1.113883.2.1.3.2.4.18.48^ISO|CONCORD|NWL|20240615103000||ADT^A04^ADT_A01|%s|P|"
             "2.4\rEVN|A04|20240615102900\rPID|1||9990000018^^^NHS^NH~%s^^^RYJ^MR||WATSON^PATRICIA^^^MRS||19700703|F\r"
             "PV1|1|O|%s^^^RYJ||||C1013000^CONSULTANT^A^^^Dr|||101|||||||||%s^^^RYJ^VN|||||||||||||||||||||||||"
             "20240615102900\r",
             control, mrn, ward, visit);
}

static const char *msa_code(const buf *ack, char out[3]) {
    const char *m = ack->p ? strstr(ack->p, "MSA|") : NULL;
    out[0] = 0;
    if (m) snprintf(out, 3, "%s", m + 4);
    return out;
}

/* The ids hl7_map gives the message's resources (deterministic). */
static void ids_of(const char *msg, const char *type, char *id, size_t n) {
    arena a = {0};
    hl7_result r;
    id[0] = 0;
    hl7_process(msg, strlen(msg), NULL, NULL, &a, &r);
    for (size_t i = 0; i < r.mapped.nres; i++)
        if (strcmp(r.mapped.res[i].type, type) == 0) snprintf(id, n, "%s", r.mapped.res[i].id);
    hl7_mapped_release(&r.mapped);
    fhir_json_release();
    arena_free(&a);
}

static json_t *read_res(fx *f, const char *type, const char *id, store_meta *m) {
    buf b = {0};
    err e;
    store_meta mm;
    if (store_read(f->s, type, id, 0, &b, m ? m : &mm, &e) != ST_OK) {
        buf_free(&b);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, 0, &je);
    buf_free(&b);
    return j;
}

static int64_t count_messages(fx *f, const char *status, const char *control) {
    store_message_list l = {0};
    err e;
    int64_t n = 0;
    if (store_message_list_by(f->s, status, 100000, 0, 0, &l, &e) != ST_OK) return -1;
    for (size_t i = 0; i < l.n; i++)
        if (!control || strcmp(l.v[i].control_id, control) == 0) n++;
    store_message_list_free(&l);
    return n;
}

static const char *tag_code(json_t *res, const char *system) {
    json_t *tags = json_object_get(json_object_get(res, "meta"), "tag");
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        if (strcmp(json_string_value(json_object_get(t, "system")), system) == 0)
            return json_string_value(json_object_get(t, "code"));
    }
    return NULL;
}

static void test_stored_resources_carry_provenance(void **state) {
    fx *f = *state;
    char msg[2048], id[72], code[3];
    a04(msg, sizeof msg, "P1", "RYJ1", "V1", "OPD");
    buf ack = {0};
    ingest_hl7(f->g, msg, strlen(msg), "test", &ack);
    assert_string_equal(msa_code(&ack, code), "AA");
    const char *types[] = {"Patient", "Encounter"};
    for (int i = 0; i < 2; i++) {
        ids_of(msg, types[i], id, sizeof id);
        json_t *r = read_res(f, types[i], id, NULL);
        assert_non_null(r);
        assert_string_equal(tag_code(r, HL7_CARE_SETTING_SYSTEM), "acute");
        assert_string_equal(tag_code(r, HL7_ODS_SYSTEM), "RYJ");
        const char *src = json_string_value(json_object_get(json_object_get(r, "meta"), "source"));
        assert_non_null(src);
        assert_true(strncmp(src, "urn:concord:ingest-message:", 27) == 0);
        /* the message it names is the one stored */
        store_message_list l = {0};
        err e;
        assert_int_equal(store_message_get(f->s, atoll(src + 27), &l, &e), ST_OK);
        assert_string_equal(l.v[0].control_id, "P1");
        assert_string_equal(l.v[0].status, "stored");
        store_message_list_free(&l);
        json_decref(r);
    }
    /* and they can be found by where they came from */
    static const char *const queries[] = {
        "_tag=https://fhir.nhs.uk/Id/ods-organization-code|RYJ",
        "_tag=https://concord.example/CodeSystem/care-setting|acute",
    };
    for (int i = 0; i < 2; i++) {
        arena a = {0};
        search_param_kv *kv;
        search_query q;
        err e;
        int n = search_split_query(&a, queries[i], strlen(queries[i]), &kv);
        assert_int_equal(search_parse(&a, "Encounter", kv, n, 0, &q, &e), ST_OK);
        store_items it = {0};
        assert_int_equal(store_search(f->s, &q, &it, &e), ST_OK);
        assert_int_equal(it.n, 1);
        store_items_free(&it);
        arena_free(&a);
    }
    buf_free(&ack);
}

/* An ORU's numbers are mapped (fhir_json_load) on the submitting thread and
 * serialised by the writer: "7.10" must stay "7.10". */
static void *send_oru(void *arg) {
    fx *f = arg;
    const char *oru = "MSH|^~\\&|LAB|RYJ|||20240615103000||ORU^R01|L1|P|2.5\rPID|1||H1^^^RYJ^MR\r"
                      "OBR|1||F1^LAB|UE^U and E^L|||20240615090000||||||||||||||||||F\r"
                      "OBX|1|NM|A^a^L||7.10|mmol/L|||||F\r"
                      "OBX|2|NM|B^b^L||+02.50|mmol/L|||||F\r";
    buf ack = {0};
    ingest_hl7(f->g, oru, strlen(oru), "test", &ack);
    char code[3];
    buf *ok = malloc(sizeof *ok);
    memset(ok, 0, sizeof *ok);
    buf_puts(ok, msa_code(&ack, code));
    buf_free(&ack);
    return ok;
}

static void test_decimals_survive_the_thread_change(void **state) {
    fx *f = *state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, send_oru, f), 0);
    buf *code;
    pthread_join(t, (void **)&code);
    assert_string_equal(code->p, "AA");
    buf_free(code);
    free(code);
    store_items it = {0};
    err e;
    assert_int_equal(store_history(f->s, "Observation", NULL, 0, 100, 0, &it, &e), ST_OK);
    assert_int_equal(it.n, 2);
    int seen = 0;
    for (size_t i = 0; i < it.n; i++) {
        if (strstr(it.v[i].body, "\"value\":7.10")) seen |= 1;
        if (strstr(it.v[i].body, "\"value\":2.50")) seen |= 2;
    }
    if (seen != 3) fail_msg("decimals lost their precision: %s | %s", it.v[0].body, it.v[1].body);
    store_items_free(&it);
}

typedef struct sender {
    fx *f;
    const char *msg;
    pthread_barrier_t *start;
    buf ack;
} sender;

static void *send_one(void *arg) {
    sender *s = arg;
    pthread_barrier_wait(s->start);
    ingest_hl7(s->f->g, s->msg, strlen(s->msg), "test", &s->ack);
    return NULL;
}

/* Send msgs[i] from thread i, all at once (so they share commits). */
static void send_together(fx *f, const char **msgs, int n, sender *out) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    pthread_t t[16];
    for (int i = 0; i < n; i++) {
        out[i] = (sender){.f = f, .msg = msgs[i], .start = &start};
        pthread_create(&t[i], NULL, send_one, &out[i]);
    }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
}

static void test_duplicates_together_are_stored_once(void **state) {
    fx *f = *state;
    char msg[2048], id[72], code[3];
    a04(msg, sizeof msg, "D1", "RYJ2", "V2", "OPD");
    const char *msgs[8];
    for (int i = 0; i < 8; i++) msgs[i] = msg;
    sender s[8];
    send_together(f, msgs, 8, s);
    for (int i = 0; i < 8; i++) {
        assert_string_equal(msa_code(&s[i].ack, code), "AA");
        assert_string_equal(s[i].ack.p, s[0].ack.p); /* the very same ACK */
    }
    for (int i = 0; i < 8; i++) buf_free(&s[i].ack);
    assert_int_equal(count_messages(f, "stored", "D1"), 1);
    ingest_stats st;
    ingest_get_stats(f->g, &st);
    assert_int_equal(st.duplicates, 7);
    ids_of(msg, "Encounter", id, sizeof id);
    store_meta m;
    json_t *r = read_res(f, "Encounter", id, &m);
    assert_non_null(r);
    assert_int_equal(m.version, 1);
    json_decref(r);
}

static void test_unchanged_content_stores_no_new_version(void **state) {
    fx *f = *state;
    char m1[2048], m2[2048], m3[2048], id[72], code[3];
    a04(m1, sizeof m1, "U1", "RYJ3", "V3", "OPD");
    a04(m2, sizeof m2, "U2", "RYJ3", "V3", "OPD");  /* the same again, a new control id */
    a04(m3, sizeof m3, "U3", "RYJ3", "V3", "CLIN"); /* the Encounter moves */
    buf ack = {0};
    ingest_hl7(f->g, m1, strlen(m1), "test", &ack);
    assert_string_equal(msa_code(&ack, code), "AA");
    buf_reset(&ack);
    ingest_hl7(f->g, m2, strlen(m2), "test", &ack);
    assert_string_equal(msa_code(&ack, code), "AA");
    assert_int_equal(count_messages(f, "stored", "U2"), 1); /* the message is kept */
    store_meta m;
    ids_of(m1, "Encounter", id, sizeof id);
    json_t *r = read_res(f, "Encounter", id, &m);
    assert_int_equal(m.version, 1);
    const char *src1 = json_string_value(json_object_get(json_object_get(r, "meta"), "source"));
    char first[64];
    snprintf(first, sizeof first, "%s", src1);
    json_decref(r);
    buf_reset(&ack);
    ingest_hl7(f->g, m3, strlen(m3), "test", &ack);
    assert_string_equal(msa_code(&ack, code), "AA");
    r = read_res(f, "Encounter", id, &m);
    assert_int_equal(m.version, 2);
    assert_string_not_equal(json_string_value(json_object_get(json_object_get(r, "meta"), "source")), first);
    json_decref(r);
    /* the Patient did not change in any of them */
    ids_of(m1, "Patient", id, sizeof id);
    r = read_res(f, "Patient", id, &m);
    assert_int_equal(m.version, 1);
    json_decref(r);
    buf_free(&ack);
}

/* A message that maps but cannot be stored (here: a trigger refuses its
 * Encounter) is quarantined on its own — nothing of it stored, not even its
 * new Patient — while the messages committed with it are stored. Once the
 * cause is gone, a replay stores it. */
static void test_unstorable_message_quarantined_alone(void **state) {
    fx *f = *state;
    sqlite3 *h;
    assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 10000);
    assert_int_equal(sqlite3_exec(h,
                                  "CREATE TRIGGER refuse BEFORE INSERT ON resource WHEN NEW.body LIKE '%VFAIL%' "
                                  "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    char msgs[6][2048], id[72], code[3];
    const char *p[6];
    for (int i = 0; i < 6; i++) {
        char control[16], mrn[16], visit[16];
        snprintf(control, sizeof control, "Q%d", i);
        snprintf(mrn, sizeof mrn, "RYJQ%d", i);
        snprintf(visit, sizeof visit, i == 3 ? "VFAIL" : "VQ%d", i);
        a04(msgs[i], sizeof msgs[i], control, mrn, visit, "OPD");
        p[i] = msgs[i];
    }
    sender s[6];
    send_together(f, p, 6, s);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(msa_code(&s[i].ack, code), i == 3 ? "AE" : "AA");
        if (i == 3) assert_non_null(strstr(s[i].ack.p, "refused by the test"));
        buf_free(&s[i].ack);
        ids_of(msgs[i], "Patient", id, sizeof id);
        json_t *r = read_res(f, "Patient", id, NULL);
        if (i == 3) assert_null(r);
        else assert_non_null(r);
        json_decref(r);
    }
    assert_int_equal(count_messages(f, "quarantined", "Q3"), 1);
    assert_int_equal(count_messages(f, "stored", "Q3"), 0);
    assert_int_equal(count_messages(f, "stored", NULL), 5);

    /* the cause fixed: replay */
    assert_int_equal(sqlite3_exec(h, "DROP TRIGGER refuse", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    store_message_list l = {0};
    err e;
    assert_int_equal(store_message_list_by(f->s, "quarantined", 10, 0, 0, &l, &e), ST_OK);
    assert_int_equal(l.n, 1);
    int64_t key = l.v[0].key;
    store_message_list_free(&l);
    buf ack = {0};
    assert_int_equal(ingest_replay(f->g, key, &ack, &e), ST_OK);
    assert_string_equal(msa_code(&ack, code), "AA");
    buf_free(&ack);
    assert_int_equal(count_messages(f, "replayed", "Q3"), 1);
    assert_int_equal(count_messages(f, "stored", "Q3"), 1);
    ids_of(msgs[3], "Encounter", id, sizeof id);
    json_t *r = read_res(f, "Encounter", id, NULL);
    assert_non_null(r);
    json_decref(r);
}

static void test_bad_content_quarantined_with_ae(void **state) {
    fx *f = *state;
    char msg[2048], code[3];
    a04(msg, sizeof msg, "B1", "RYJB", "VB", "OPD");
    char *dob = strstr(msg, "19700703");
    memcpy(dob, "1970XX03", 8);
    buf ack = {0};
    ingest_hl7(f->g, msg, strlen(msg), "test", &ack);
    assert_string_equal(msa_code(&ack, code), "AE");
    assert_non_null(strstr(ack.p, "ERR|"));
    buf_free(&ack);
    assert_int_equal(count_messages(f, "quarantined", "B1"), 1);
    assert_int_equal(count_messages(f, "stored", "B1"), 0);
}

/* A sender that may send only as some organisations (an MLLP peer):
 * a message from another sending facility gets AR with an ERR at MSH-4,
 * is quarantined, stores nothing — and is not answered as a duplicate of
 * the same sender and control id stored from where it was allowed. */
static void test_sender_limited_to_its_organisations(void **state) {
    fx *f = *state;
    char msg[2048], code[3], id[72];
    const char *ryj[] = {"ZZ9", "ryj"}; /* compared without regard to case */
    const char *other[] = {"RQM"};
    buf ack = {0};
    a04(msg, sizeof msg, "F1", "RYJF", "VF1", "OPD");
    ingest_hl7_as(f->g, msg, strlen(msg), "test", ryj, 2, &ack);
    assert_string_equal(msa_code(&ack, code), "AA");
    assert_int_equal(count_messages(f, "stored", "F1"), 1);

    buf_reset(&ack);
    a04(msg, sizeof msg, "F2", "RYJF2", "VF2", "OPD");
    ingest_hl7_as(f->g, msg, strlen(msg), "test", other, 1, &ack);
    assert_string_equal(msa_code(&ack, code), "AR");
    assert_non_null(strstr(ack.p, "ERR|MSH^1^4"));
    assert_non_null(strstr(ack.p, "sending facility RYJ is not allowed from this connection"));
    assert_int_equal(count_messages(f, "quarantined", "F2"), 1);
    assert_int_equal(count_messages(f, "stored", "F2"), 0);
    ids_of(msg, "Encounter", id, sizeof id);
    json_t *r = read_res(f, "Encounter", id, NULL);
    assert_null(r);

    /* F1 again, from a connection that may not send as RYJ: refused, not the first AA */
    buf_reset(&ack);
    a04(msg, sizeof msg, "F1", "RYJF", "VF1", "OPD");
    ingest_hl7_as(f->g, msg, strlen(msg), "test", other, 1, &ack);
    assert_string_equal(msa_code(&ack, code), "AR");
    assert_int_equal(count_messages(f, "quarantined", "F1"), 1);

    /* no list at all: any sending facility (ingest_hl7) */
    buf_reset(&ack);
    a04(msg, sizeof msg, "F3", "RYJF3", "VF3", "OPD");
    ingest_hl7_as(f->g, msg, strlen(msg), "test", NULL, 0, &ack);
    assert_string_equal(msa_code(&ack, code), "AA");
    buf_free(&ack);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stored_resources_carry_provenance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decimals_survive_the_thread_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_together_are_stored_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unchanged_content_stores_no_new_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unstorable_message_quarantined_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_content_quarantined_with_ae, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sender_limited_to_its_organisations, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
