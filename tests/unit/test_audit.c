/*
 * test_audit.c — the access log (src/access/audit.h) on both backends:
 * every test runs once against SQLite (a fresh database file per test) and
 * once against PostgreSQL when CONCORD_TEST_PG is set (a fresh database
 * per test, dropped afterwards); without it the PostgreSQL group is
 * skipped, saying so. tests/with-postgres.sh sets it up:
 *
 *     tests/with-postgres.sh build/test_audit
 *
 * What is covered: appends from many threads, waiting and not, survive a
 * close and reopen as one contiguous chain that verifies; each kind of
 * tampering is reported at the right seq (an altered field, a deleted
 * middle row, a deleted last row, a rewritten prev, the anchor removed),
 * a wrong key is named as such, and a truncation made while the writer was
 * stopped stays visible after it appends again; two writers on one
 * database (two processes) extend one chain; while the database refuses
 * writes, waiting callers get an error and nothing is dropped; strings are bounded and kept
 * as valid UTF-8; the key file's rules; and the query: filters, paging,
 * newest first, and AuditEvents that pass the R4 validator with the
 * fields a privacy officer and a patient read.
 *
 * The tampering is done with plain SQL on the tables, as someone holding
 * the database (but not the key) would.
 */
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "access/audit.h"
#include "base/buf.h"
#include "base/netstring.h"
#include "fhir/validate.h"
#include "store/store.h"
#include "store/store_int.h"
#include "testpg.h"

/* ------------------------------------------------------------ fixture */

typedef struct fx {
    int pg;
    test_db db; /* dir (key files too), url */
    char key[300];
    store *s;
    audit_log *a;
    err e;
} fx;

static int setup_common(void **state, int pg) {
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    *state = f;
    f->pg = pg;
    if (test_db_create(&f->db, "audit", "db.sqlite", pg)) return -1;
    snprintf(f->key, sizeof f->key, "%s/audit.key", f->db.dir);
    if (store_open(f->db.url, 1, &f->s, &f->e) != ST_OK) {
        print_error("store_open(%s): %s\n", f->db.url, f->e.msg);
        return -1;
    }
    return 0;
}

static int setup_sqlite(void **state) {
    return setup_common(state, 0);
}
static int setup_pg(void **state) {
    return setup_common(state, 1);
}

static int teardown(void **state) {
    fx *f = *state;
    if (!f) return 0;
    audit_close(f->a);
    store_close(f->s);
    test_db_drop(&f->db);
    free(f);
    return 0;
}

/* ------------------------------------------------------------ helpers */

static void open_log(fx *f, int flush_ms) {
    audit_config cfg = {.key_path = f->key, .flush_ms = flush_ms};
    if (audit_open(f->s, &cfg, &f->a, &f->e) != ST_OK) fail_msg("audit_open: %s", f->e.msg);
}

static void close_log(fx *f) {
    audit_close(f->a);
    f->a = NULL;
}

/* Plain SQL on this thread's connection, as someone holding the database. */
static void sql_exec(fx *f, const char *sql) {
    err e;
    db *d = store_db(f->s, &e);
    assert_non_null(d);
    if (f->s->drv->exec(d, sql, &e) != ST_OK) fail_msg("%s: %s", sql, e.msg);
}

static int64_t sql_int(fx *f, const char *sql) {
    err e;
    db *d = store_db(f->s, &e);
    db_stmt *st = NULL;
    assert_non_null(d);
    if (f->s->drv->prepare(d, sql, 0, &st, &e) != ST_OK) fail_msg("%s: %s", sql, e.msg);
    int64_t v = -1;
    if (f->s->drv->step(st, &e) == 1) v = f->s->drv->col_int(st, 0);
    f->s->drv->done(st);
    return v;
}

/* How many events the log holds (audit_block: seq..last per block). */
#define EVENTS "SELECT coalesce(sum(last - seq + 1), 0) FROM audit_block"

static void append(fx *f, const char *user, const char *action, int64_t pkey, const char *pid,
                   const char *rtype, const char *rid, const char *reason, int wait) {
    audit_event ev = {
        .user = user,
        .role = "gp",
        .org = "Y00001",
        .action = action,
        .outcome = "0",
        .status = 200,
        .rtype = rtype,
        .rid = rid,
        .pkey = pkey,
        .patient_id = pid,
        .purpose = "TREAT",
        .reason = reason,
        .source = "127.0.0.1",
        .request = "GET /fhir/Observation?patient=p1",
    };
    if (audit_append(f->a, &ev, wait, &f->e) != ST_OK) fail_msg("audit_append: %s", f->e.msg);
}

/* n events, each committed alone (one block each: event i is block i, so
 * that tampering with a block is tampering with one event), then the log
 * closed. */
static void fill(fx *f, int n) {
    open_log(f, 5);
    for (int i = 1; i <= n; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "o%d", i);
        append(f, i % 2 ? "alice" : "bob", i % 3 ? "read" : "search", 1 + i % 4, "p1", "Observation", rid, "",
               1);
    }
    close_log(f);
}

static audit_verify_result verify(fx *f, const char *key) {
    audit_verify_result r;
    if (audit_verify(f->s, key ? key : f->key, &r, &f->e) != ST_OK) fail_msg("audit_verify: %s", f->e.msg);
    return r;
}

static void assert_broken_at(const audit_verify_result *r, int64_t seq, const char *words) {
    if (r->ok) fail_msg("verify passed; expected it to fail at seq %lld", (long long)seq);
    if (r->first_bad_seq != seq)
        fail_msg("verify failed at seq %lld, expected %lld: %s", (long long)r->first_bad_seq, (long long)seq,
                 r->problem);
    if (!strstr(r->problem, words)) fail_msg("problem '%s' does not say '%s'", r->problem, words);
}

static void write_key_file(const char *path, const void *bytes, size_t n, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
}

/* ------------------------------------------------------------ appending */

typedef struct appender {
    fx *f;
    int k, n;
    status rc;
} appender;

static void *appender_main(void *arg) {
    appender *ap = arg;
    char user[16];
    snprintf(user, sizeof user, "user%d", ap->k);
    for (int i = 0; i < ap->n && ap->rc == ST_OK; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "%d", i);
        audit_event ev = {.user = user,
                          .role = "consultant",
                          .action = i % 7 == 0 ? "update" : "read",
                          .outcome = "0",
                          .status = 200,
                          .rtype = "Encounter",
                          .rid = rid,
                          .pkey = ap->k,
                          .patient_id = "p1",
                          .purpose = "TREAT",
                          .source = "10.0.0.1"};
        err e;
        ap->rc = audit_append(ap->f->a, &ev, i % 7 == 0, &e); /* writes wait, reads do not */
    }
    return NULL;
}

static void test_threads_close_reopen_verify(void **state) {
    fx *f = *state;
    enum { THREADS = 6, EACH = 400 };
    open_log(f, 10);
    pthread_t t[THREADS];
    appender ap[THREADS];
    for (int k = 0; k < THREADS; k++) {
        ap[k] = (appender){f, k + 1, EACH, ST_OK};
        assert_int_equal(pthread_create(&t[k], NULL, appender_main, &ap[k]), 0);
    }
    for (int k = 0; k < THREADS; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(ap[k].rc, ST_OK);
    }
    close_log(f);
    assert_int_equal(sql_int(f, EVENTS), THREADS * EACH);

    /* reopen: the chain continues */
    open_log(f, 10);
    for (int i = 0; i < 50; i++)
        append(f, "carol", "read", 9, "p9", "Patient", "p9", "", i == 49);
    audit_flush(f->a);
    assert_int_equal(sql_int(f, EVENTS), THREADS * EACH + 50);
    close_log(f);

    int64_t n = THREADS * EACH + 50;
    assert_int_equal(sql_int(f, "SELECT min(seq) FROM audit_block"), 1);
    assert_int_equal(sql_int(f, "SELECT max(last) FROM audit_block"), n);
    assert_int_equal(sql_int(f, "SELECT seq FROM audit_anchor WHERE id = 1"), n);
    /* each thread's events in the order it appended them (the query gives
     * them newest first) */
    for (int k = 1; k <= THREADS; k++) {
        char user[16];
        snprintf(user, sizeof user, "user%d", k);
        audit_filter flt = {.user = user, .limit = 10000};
        json_t *arr = json_array();
        int64_t total = 0;
        assert_int_equal(audit_query(f->s, &flt, arr, &total, &f->e), ST_OK);
        assert_int_equal(total, EACH);
        assert_int_equal(json_array_size(arr), EACH);
        for (int i = 0; i < EACH; i++) {
            char want[32];
            snprintf(want, sizeof want, "Encounter/%d", EACH - 1 - i);
            const char *got = json_string_value(json_object_get(
                json_object_get(json_array_get(json_object_get(json_array_get(arr, (size_t)i), "entity"), 0),
                                "what"),
                "reference"));
            assert_non_null(got);
            assert_string_equal(got, want);
        }
        json_decref(arr);
    }

    audit_verify_result r = verify(f, NULL);
    if (!r.ok) fail_msg("verify: %s at %lld", r.problem, (long long)r.first_bad_seq);
    assert_int_equal(r.rows, n);
    assert_int_equal(r.first_bad_seq, 0);
    assert_int_equal(strlen(r.head), 64);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit_block WHERE last = %lld AND hash = '%.64s'",
             (long long)n, r.head);
    assert_int_equal(sql_int(f, sql), 1);
    char h[65];
    assert_int_equal(audit_row_hash(f->s, n, h, &f->e), ST_OK);
    assert_string_equal(h, r.head);
    assert_int_equal(audit_row_hash(f->s, n + 1, h, &f->e), ST_NOT_FOUND);
}

/* A wait=1 append is committed when it returns: another connection sees it. */
static void test_wait_means_durable(void **state) {
    fx *f = *state;
    open_log(f, 60000); /* wait=0 events would sit for a minute */
    append(f, "alice", "read", 1, "p1", "Patient", "p1", "", 0);
    append(f, "alice", "read", 1, "p1", "Patient", "p1", "", 0);
    append(f, "alice", "create", 1, "p1", "Observation", "o1", "", 1);
    /* the waiting append took everything queued before it into its commit */
    assert_int_equal(sql_int(f, EVENTS), 3);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM audit_block"), 1);
    append(f, "alice", "read", 1, "p1", "Patient", "p1", "", 0);
    audit_flush(f->a);
    assert_int_equal(sql_int(f, EVENTS), 4);
    append(f, "alice", "read", 1, "p1", "Patient", "p1", "", 0);
    close_log(f); /* close flushes */
    assert_int_equal(sql_int(f, EVENTS), 5);
    assert_true(verify(f, NULL).ok);
}

/* The database refuses the writes for a while: waiting callers are told,
 * nothing is dropped, and the events are written once it accepts again. */
static void test_database_failure_keeps_events(void **state) {
    fx *f = *state;
    open_log(f, 5);
    append(f, "alice", "read", 1, "p1", "Patient", "p1", "", 1);
    if (f->pg)
        sql_exec(f, "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$;"
                    "CREATE TRIGGER audit_down BEFORE INSERT ON audit_block FOR EACH ROW EXECUTE FUNCTION "
                    "audit_down()");
    else
        sql_exec(f, "CREATE TRIGGER audit.audit_down BEFORE INSERT ON audit_block BEGIN SELECT RAISE(ABORT, "
                    "'disk on fire'); END"); /* SQLite: the log's own file (SQLITE_AUDIT_SUFFIX) */
    audit_event ev = {.user = "bob", .action = "create", .outcome = "0", .rtype = "Observation", .rid = "o9"};
    assert_int_equal(audit_append(f->a, &ev, 1, &f->e), ST_IO);
    assert_non_null(strstr(f->e.msg, "disk on fire"));
    for (int i = 0; i < 10; i++)
        append(f, "bob", "read", 1, "p1", "Patient", "p1", "", 0);
    audit_flush(f->a); /* returns: the writer is failing */
    assert_int_equal(sql_int(f, EVENTS), 1);
    sql_exec(f, f->pg ? "DROP TRIGGER audit_down ON audit_block; DROP FUNCTION audit_down()"
                      : "DROP TRIGGER audit.audit_down");
    append(f, "carol", "update", 1, "p1", "Patient", "p1", "", 1); /* waits for the retry to succeed */
    assert_int_equal(sql_int(f, EVENTS), 13);
    assert_int_equal(
        sql_int(f, "SELECT count(*) FROM audit_block WHERE events LIKE '%11:Observation,2:o9,%'"), 1);
    close_log(f);
    audit_verify_result r = verify(f, NULL);
    if (!r.ok) fail_msg("verify: %s", r.problem);
    assert_int_equal(r.rows, 13);
}

/* Two audit_logs on two store handles: two processes sharing a database. */
static void *second_writer(void *arg) {
    fx *f = arg;
    store *s2 = NULL;
    audit_log *a2 = NULL;
    err e;
    audit_config cfg = {.key_path = f->key, .flush_ms = 1};
    if (store_open(f->db.url, 1, &s2, &e) != ST_OK || audit_open(s2, &cfg, &a2, &e) != ST_OK) {
        print_error("second writer: %s\n", e.msg);
        store_close(s2);
        return (void *)1;
    }
    for (int i = 0; i < 300; i++) {
        audit_event ev = {
            .user = "second", .action = "read", .outcome = "0", .rtype = "Patient", .rid = "p2"};
        if (audit_append(a2, &ev, i % 5 == 0, &e) != ST_OK) break;
    }
    audit_close(a2);
    store_close(s2);
    return NULL;
}

static void test_two_writers_one_chain(void **state) {
    fx *f = *state;
    open_log(f, 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, second_writer, f), 0);
    for (int i = 0; i < 300; i++)
        append(f, "first", "read", 1, "p1", "Patient", "p1", "", i % 5 == 0);
    void *res = NULL;
    pthread_join(t, &res);
    assert_null(res);
    close_log(f);
    assert_int_equal(sql_int(f, EVENTS), 600);
    audit_verify_result r = verify(f, NULL);
    if (!r.ok) fail_msg("verify: %s at %lld", r.problem, (long long)r.first_bad_seq);
    assert_int_equal(r.rows, 600);
}

/* ------------------------------------------------------------ tampering */

static void test_fresh_database_verifies(void **state) {
    fx *f = *state;
    unsigned char k[32] = {1, 2, 3};
    write_key_file(f->key, k, sizeof k, 0600);
    audit_verify_result r = verify(f, NULL); /* no writer ever ran: no anchor, no rows */
    assert_true(r.ok);
    assert_int_equal(r.rows, 0);
    assert_string_equal(r.head, "0000000000000000000000000000000000000000000000000000000000000000");
    open_log(f, 5); /* an anchor, still no rows */
    close_log(f);
    r = verify(f, NULL);
    assert_true(r.ok);
    assert_int_equal(r.rows, 0);
    /* events that name no patient: a group with no patient index rows at all */
    open_log(f, 5);
    audit_event ev = {.user = "alice", .action = "login", .outcome = "0"};
    assert_int_equal(audit_append(f->a, &ev, 1, &f->e), ST_OK);
    close_log(f);
    r = verify(f, NULL);
    if (!r.ok) fail_msg("verify: %s", r.problem);
    assert_int_equal(r.rows, 1);
}

static void test_altered_row(void **state) {
    fx *f = *state;
    fill(f, 20);
    assert_true(verify(f, NULL).ok);
    sql_exec(f, "UPDATE audit_block SET events = replace(events, '0:,', '14:nothing to see,') WHERE seq = 7");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 7, "altered");
    assert_int_equal(r.rows, 6);
}

static void test_altered_row_with_its_hash_recomputed_unkeyed(void **state) {
    fx *f = *state;
    fill(f, 10);
    /* change who read it and copy another event's hash over: still caught */
    sql_exec(f, "UPDATE audit_block SET events = replace(replace(events, '5:alice,', '7:mallory,'), hash,"
                " (SELECT hash FROM audit_block WHERE seq = 2)), hash = (SELECT hash FROM audit_block WHERE"
                " seq = 2) WHERE seq = 3");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 3, "altered");
}

static void test_block_hash_rewritten(void **state) {
    fx *f = *state;
    fill(f, 10);
    sql_exec(
        f, "UPDATE audit_block SET hash = '1111111111111111111111111111111111111111111111111111111111111111'"
           " WHERE seq = 4");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 4, "its hash is not its last event's");
}

/* The index rows are outside the chain; removing them would hide events
 * from a patient's or a privacy officer's queries: verify checks them. */
static void test_index_rows_removed(void **state) {
    fx *f = *state;
    fill(f, 10); /* event i: its own block, patient key 1 + i % 4, alice (odd) or bob (even) */
    assert_true(verify(f, NULL).ok);
    sql_exec(f, "DELETE FROM audit_block_patient WHERE seq = 6");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 6, "missing from the patient index");
    assert_int_equal(r.rows, 6);
    sql_exec(f, "INSERT INTO audit_block_patient (grp, pkey, seq) VALUES (0, 3, 6)");
    assert_true(verify(f, NULL).ok);
    sql_exec(f, "DELETE FROM audit_block_user WHERE user_name = 'bob' AND seq = 8");
    r = verify(f, NULL);
    assert_broken_at(&r, 8, "missing from the user index");
    /* a row too many only costs a query a block read for nothing */
    sql_exec(f, "INSERT INTO audit_block_user (grp, user_name, seq) VALUES (0, 'bob', 8),"
                " (0, 'mallory', 8); INSERT INTO audit_block_patient (grp, pkey, seq) VALUES (0, 99, 2)");
    assert_true(verify(f, NULL).ok);
}

/* Several events in one block: an event altered, removed or garbled in
 * the middle of it is named. */
static void test_tampering_inside_a_block(void **state) {
    fx *f = *state;
    open_log(f, 60000);
    for (int i = 1; i <= 30; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "o%d", i);
        append(f, i == 17 ? "carol" : "alice", "read", 1, "p1", "Observation", rid, "", i == 30);
    }
    close_log(f);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM audit_block"), 1);
    assert_true(verify(f, NULL).ok);
    sql_exec(f, "UPDATE audit_block SET events = replace(events, '5:carol,', '5:carot,')");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 17, "event 17 has been altered");
    assert_int_equal(r.rows, 16);
    /* the event cut out of the text: the one after it takes its place */
    sql_exec(f, "UPDATE audit_block SET events = replace(events, '5:carot,', '5:carol,')");
    assert_true(verify(f, NULL).ok);
    /* (event 17 starts 20 bytes before its user, "16:<at>,"; event 18 74
     * bytes before its rid) */
    sql_exec(f, f->pg ? "UPDATE audit_block SET events = substr(events, 1, strpos(events, '5:carol,') - 21)"
                        " || substr(events, strpos(events, '3:o18,') - 74)"
                      : "UPDATE audit_block SET events = substr(events, 1, instr(events, '5:carol,') - 21)"
                        " || substr(events, instr(events, '3:o18,') - 74)");
    r = verify(f, NULL);
    assert_broken_at(&r, 17, "event 17 has been altered");
    /* text garbled after event 3: events 1 to 3 still verify */
    sql_exec(f,
             f->pg ? "UPDATE audit_block SET events = substr(events, 1, strpos(events, '2:o4,') - 70) || 'x'"
                   : "UPDATE audit_block SET events = substr(events, 1, instr(events, '2:o4,') - 70) || 'x'");
    r = verify(f, NULL);
    assert_broken_at(&r, 4, "not a well-formed field");
    assert_int_equal(r.rows, 3);
}

static void test_deleted_middle_row(void **state) {
    fx *f = *state;
    fill(f, 20);
    sql_exec(f, "DELETE FROM audit_block WHERE seq = 10");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 10, "event 10 is missing");
    sql_exec(f, "DELETE FROM audit_block WHERE seq = 11");
    r = verify(f, NULL);
    assert_broken_at(&r, 10, "events 10 to 11 are missing");
}

static void test_deleted_first_row(void **state) {
    fx *f = *state;
    fill(f, 5);
    sql_exec(f, "DELETE FROM audit_block WHERE seq = 1");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 1, "missing");
}

static void test_deleted_last_rows(void **state) {
    fx *f = *state;
    fill(f, 20);
    sql_exec(f, "DELETE FROM audit_block WHERE seq >= 19");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 19, "removed from the end");
    assert_int_equal(r.rows, 18);
}

static void test_reordered_rows(void **state) {
    fx *f = *state;
    fill(f, 10);
    /* swap events 5 and 6 by swapping their blocks' seq */
    sql_exec(f, "UPDATE audit_block SET seq = -5, last = -5 WHERE seq = 5");
    sql_exec(f, "UPDATE audit_block SET seq = 5, last = 5 WHERE seq = 6");
    sql_exec(f, "UPDATE audit_block SET seq = 6, last = 6 WHERE seq = -5");
    audit_verify_result r = verify(f, NULL);
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 5);
}

static void test_anchor_deleted(void **state) {
    fx *f = *state;
    fill(f, 5);
    sql_exec(f, "DELETE FROM audit_anchor");
    audit_verify_result r = verify(f, NULL);
    assert_false(r.ok);
    assert_non_null(strstr(r.problem, "anchor is missing"));
}

static void test_all_rows_deleted(void **state) {
    fx *f = *state;
    fill(f, 5);
    sql_exec(f, "DELETE FROM audit_block");
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 1, "removed from the end");
}

static void test_wrong_key(void **state) {
    fx *f = *state;
    fill(f, 5);
    char other[400];
    snprintf(other, sizeof other, "%s/other.key", f->db.dir);
    unsigned char k[32];
    memset(k, 7, sizeof k);
    write_key_file(other, k, sizeof k, 0600);
    audit_verify_result r = verify(f, other);
    assert_false(r.ok);
    assert_non_null(strstr(r.problem, "key does not match"));
    /* and the right key still verifies */
    assert_true(verify(f, NULL).ok);
}

/* Truncated while no writer ran, then appended to: the writer records
 * what it found, and verify keeps reporting it. */
static void test_truncation_survives_appending(void **state) {
    fx *f = *state;
    fill(f, 10);
    sql_exec(f, "DELETE FROM audit_block WHERE seq > 8");
    open_log(f, 5);
    append(f, "alice", "read", 1, "p1", "Patient", "p1", "", 1);
    close_log(f);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM audit_block WHERE events LIKE '%5:admin,1:8,%'"), 1);
    audit_verify_result r = verify(f, NULL);
    assert_broken_at(&r, 9, "truncated");
    assert_non_null(strstr(r.problem, "seq 10"));
}

/* ------------------------------------------------------------ the key */

static void test_key_file_rules(void **state) {
    fx *f = *state;
    open_log(f, 5);
    close_log(f);
    struct stat sb;
    assert_int_equal(stat(f->key, &sb), 0);
    assert_int_equal(sb.st_size, 32);
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* a file of the wrong size is not a key */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/bad.key", f->db.dir);
    write_key_file(bad, "short", 5, 0600);
    audit_config cfg = {.key_path = bad};
    assert_int_equal(audit_open(f->s, &cfg, &f->a, &f->e), ST_INVALID);
    assert_null(f->a);
    audit_verify_result r;
    assert_int_not_equal(audit_verify(f->s, bad, &r, &f->e), ST_OK);
    assert_false(r.ok);

    /* verify never creates a key */
    char missing[400];
    snprintf(missing, sizeof missing, "%s/missing.key", f->db.dir);
    assert_int_not_equal(audit_verify(f->s, missing, &r, &f->e), ST_OK);
    assert_int_not_equal(access(missing, F_OK), 0);
}

static void test_new_key_refused_for_an_existing_log(void **state) {
    fx *f = *state;
    fill(f, 3);
    char fresh[400];
    snprintf(fresh, sizeof fresh, "%s/lost-and-replaced.key", f->db.dir);
    audit_config cfg = {.key_path = fresh};
    status rc = audit_open(f->s, &cfg, &f->a, &f->e);
    assert_int_not_equal(rc, ST_OK);
    assert_non_null(strstr(f->e.msg, "another key"));
    assert_int_not_equal(access(fresh, F_OK), 0); /* the key it made is not left behind */
    assert_true(verify(f, NULL).ok);
}

static void test_default_key_path(void **state) {
    (void)state;
    char p[300];
    char *saved = getenv("CONCORD_AUDIT_KEY") ? strdup(getenv("CONCORD_AUDIT_KEY")) : NULL;
    unsetenv("CONCORD_AUDIT_KEY");
    audit_default_key_path("var/x.db", p, sizeof p);
    assert_string_equal(p, "var/x.db.audit-key");
    audit_default_key_path("sqlite:/tmp/y.db", p, sizeof p);
    assert_string_equal(p, "/tmp/y.db.audit-key");
    audit_default_key_path("postgresql://u@h/db", p, sizeof p);
    assert_string_equal(p, "var/audit.key");
    audit_default_key_path("postgres://u@h/db", p, sizeof p);
    assert_string_equal(p, "var/audit.key");
    setenv("CONCORD_AUDIT_KEY", "/etc/concord/audit.key", 1);
    audit_default_key_path("var/x.db", p, sizeof p);
    assert_string_equal(p, "/etc/concord/audit.key");
    if (saved)
        setenv("CONCORD_AUDIT_KEY", saved, 1);
    else
        unsetenv("CONCORD_AUDIT_KEY");
    free(saved);
}

/* ------------------------------------------------------------ strings */

static void test_strings_bounded_and_valid_utf8(void **state) {
    fx *f = *state;
    open_log(f, 5);
    char request[5000];
    memset(request, 'a', sizeof request);
    /* "é" (2 bytes) straddling the 2000-byte limit */
    request[1999] = (char)0xC3;
    request[2000] = (char)0xA9;
    request[sizeof request - 1] = 0;
    char reason[] = "bad \xff\xfe bytes \xC3 and a lone continuation \x80 end";
    audit_event ev = {
        .user = "alice", .action = "read", .outcome = "0", .reason = reason, .request = request};
    assert_int_equal(audit_append(f->a, &ev, 1, &f->e), ST_OK);
    close_log(f);
    json_t *arr = json_array();
    int64_t total = 0;
    audit_filter flt = {0};
    assert_int_equal(audit_query(f->s, &flt, arr, &total, &f->e), ST_OK);
    const char *kept = json_string_value(json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(json_array_get(arr, 0), "entity"), 0), "detail"),
            0),
        "valueString"));
    assert_non_null(kept);
    assert_int_equal(strlen(kept), 1999);
    assert_int_equal(total, 1);
    json_t *ent = json_array_get(json_object_get(json_array_get(arr, 0), "entity"), 0);
    const char *desc = json_string_value(json_object_get(ent, "description"));
    assert_non_null(desc);
    assert_string_equal(desc, "bad ?? bytes ? and a lone continuation ? end");
    json_decref(arr);
    assert_true(verify(f, NULL).ok);
}

/* ------------------------------------------------------------ query */

static const char *str_at(json_t *j, const char *path) {
    /* "a.b.0.c": objects by key, arrays by index */
    char buf[200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && j; tok = strtok_r(NULL, ".", &save))
        j = json_is_array(j) ? json_array_get(j, (size_t)atoi(tok)) : json_object_get(j, tok);
    return j ? json_string_value(j) : NULL;
}

/* Case c of a table: the query answers, with the total expected; its
 * entries are returned (the caller decrefs). */
static json_t *query_case(fx *f, size_t c, const audit_filter *flt, int64_t total) {
    json_t *arr = json_array();
    int64_t t = -1;
    assert_int_equal(audit_query(f->s, flt, arr, &t, &f->e), ST_OK);
    if (t != total) fail_msg("case %zu: total %lld, expected %lld", c, (long long)t, (long long)total);
    return arr;
}

static void test_query_filters_and_auditevent_json(void **state) {
    fx *f = *state;
    open_log(f, 5);
    audit_event evs[] = {
        {.user = "alice",
         .role = "gp",
         .org = "Y00001",
         .action = "read",
         .outcome = "0",
         .status = 200,
         .rtype = "Observation",
         .rid = "o1",
         .pkey = 11,
         .patient_id = "p11",
         .purpose = "TREAT",
         .source = "10.1.2.3",
         .request = "GET /fhir/Observation/o1"},
        {.user = "bob",
         .role = "ed-clinician",
         .org = "RYJ01",
         .action = "break-glass",
         .outcome = "0",
         .status = 200,
         .rtype = "Patient",
         .rid = "p12",
         .pkey = 12,
         .patient_id = "p12",
         .purpose = "ETREAT",
         .reason = "unconscious in ED, no relationship",
         .source = "10.1.2.4"},
        {.user = "bob",
         .role = "ed-clinician",
         .org = "RYJ01",
         .action = "search",
         .outcome = "4",
         .status = 403,
         .rtype = "Condition",
         .pkey = 13,
         .patient_id = "p13",
         .purpose = "TREAT",
         .reason = "no legitimate relationship",
         .source = "10.1.2.4",
         .request = "GET /fhir/Condition?patient=p13"},
        {.user = "alice",
         .role = "gp",
         .org = "Y00001",
         .action = "create",
         .outcome = "0",
         .status = 201,
         .rtype = "Observation",
         .rid = "o2",
         .pkey = 11,
         .patient_id = "p11",
         .purpose = "TREAT",
         .source = "10.1.2.3"},
        {.user = "mallory",
         .action = "login-failed",
         .outcome = "4",
         .status = 401,
         .reason = "bad password",
         .source = "203.0.113.9"},
        {.user = "cli:root",
         .role = "admin",
         .action = "search",
         .outcome = "0",
         .source = "cli",
         .request = "concord audit list"},
    };
    int n = (int)(sizeof evs / sizeof evs[0]);
    for (int i = 0; i < n; i++) {
        evs[i].at_usec = 1700000000000000LL + i * 1000000LL;
        assert_int_equal(audit_append(f->a, &evs[i], i == n - 1, &f->e), ST_OK);
    }
    close_log(f);

    /* every event is a valid R4 AuditEvent, newest first */
    json_t *all = json_array();
    int64_t total = 0;
    audit_filter none = {0};
    assert_int_equal(audit_query(f->s, &none, all, &total, &f->e), ST_OK);
    assert_int_equal(total, n);
    assert_int_equal(json_array_size(all), (size_t)n);
    for (int i = 0; i < n; i++) {
        json_t *ev = json_array_get(all, (size_t)i);
        err e;
        if (fhir_validate(ev, "AuditEvent", &e) != ST_OK) {
            char *dump = json_dumps(ev, 0);
            fail_msg("AuditEvent %d invalid at %s: %s\n%s", i, e.where, e.msg, dump);
        }
        char id[32];
        snprintf(id, sizeof id, "audit-%d", n - i);
        assert_string_equal(str_at(ev, "id"), id);
    }

    /* the read (oldest, last in the list) */
    json_t *rd = json_array_get(all, (size_t)n - 1);
    assert_string_equal(str_at(rd, "resourceType"), "AuditEvent");
    assert_string_equal(str_at(rd, "type.system"), "http://dicom.nema.org/resources/ontology/DCM");
    assert_string_equal(str_at(rd, "type.code"), "110110");
    assert_string_equal(str_at(rd, "subtype.0.system"), "http://hl7.org/fhir/restful-interaction");
    assert_string_equal(str_at(rd, "subtype.0.code"), "read");
    assert_string_equal(str_at(rd, "action"), "R");
    assert_string_equal(str_at(rd, "recorded"), "2023-11-14T22:13:20.000000Z");
    assert_string_equal(str_at(rd, "outcome"), "0");
    assert_string_equal(str_at(rd, "purposeOfEvent.0.coding.0.code"), "TREAT");
    assert_string_equal(str_at(rd, "agent.0.who.display"), "alice");
    assert_string_equal(str_at(rd, "agent.0.role.0.text"), "GP");
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(rd, "agent"), 0), "requestor")));
    assert_string_equal(str_at(rd, "agent.0.network.address"), "10.1.2.3");
    assert_string_equal(str_at(rd, "agent.1.who.identifier.value"), "Y00001");
    assert_string_equal(str_at(rd, "source.observer.display"), "concord");
    assert_string_equal(str_at(rd, "entity.0.what.reference"), "Observation/o1");
    assert_string_equal(str_at(rd, "entity.0.detail.0.valueString"), "GET /fhir/Observation/o1");
    assert_string_equal(str_at(rd, "entity.1.what.reference"), "Patient/p11");
    assert_string_equal(str_at(rd, "entity.1.role.code"), "1");

    /* break-glass: emergency purpose, the reason on the patient entity */
    json_t *bg = json_array_get(all, (size_t)n - 2);
    assert_string_equal(str_at(bg, "purposeOfEvent.0.coding.0.code"), "ETREAT");
    assert_string_equal(str_at(bg, "subtype.0.code"), "break-glass");
    assert_string_equal(str_at(bg, "entity.0.what.reference"), "Patient/p12");
    assert_string_equal(str_at(bg, "entity.0.description"), "unconscious in ED, no relationship");
    assert_null(json_array_get(json_object_get(bg, "entity"), 1));

    /* a refusal: outcome 4 and why */
    json_t *ref = json_array_get(all, (size_t)n - 3);
    assert_string_equal(str_at(ref, "outcome"), "4");
    assert_string_equal(str_at(ref, "outcomeDesc"), "no legitimate relationship");
    assert_string_equal(str_at(ref, "action"), "E");
    assert_string_equal(str_at(ref, "subtype.0.code"), "search");

    /* a failed sign-in: user authentication, no patient */
    json_t *lf = json_array_get(all, 1);
    assert_string_equal(str_at(lf, "type.code"), "110114");
    assert_string_equal(str_at(lf, "subtype.0.code"), "110122");
    json_decref(all);

    /* filters */
    struct {
        audit_filter flt;
        int64_t total;
        const char *first_id; /* newest match */
    } cases[] = {
        {{.pkeys = (int64_t[]){11}, .npkeys = 1}, 2, "audit-4"},
        {{.pkeys = (int64_t[]){11, 12}, .npkeys = 2}, 3, "audit-4"},
        {{.pkeys = (int64_t[]){0}, .npkeys = 0}, 0, NULL}, /* a person with no records sees nothing */
        {{.user = "bob"}, 2, "audit-3"},
        {{.user = "bob", .action = "break-glass"}, 1, "audit-2"},
        {{.outcome = "4"}, 2, "audit-5"},
        {{.action = "search"}, 2, "audit-6"},
        {{.pkeys = (int64_t[]){13}, .npkeys = 1, .outcome = "0"}, 0, NULL},
        {{.since_usec = 1700000002000000LL, .until_usec = 1700000003000000LL}, 2, "audit-4"},
        {{.limit = 2, .offset = 1}, 6, "audit-5"},
        {{.user = "nobody' OR '1'='1"}, 0, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        json_t *arr = query_case(f, c, &cases[c].flt, cases[c].total);
        if (cases[c].first_id)
            assert_string_equal(str_at(arr, "0.id"), cases[c].first_id);
        else
            assert_int_equal(json_array_size(arr), 0);
        if (cases[c].flt.limit) assert_int_equal(json_array_size(arr), (size_t)cases[c].flt.limit);
        json_decref(arr);
    }
    /* too many keys is an error, not a silent cut */
    int64_t many[1001] = {0};
    audit_filter big = {.pkeys = many, .npkeys = 1001};
    json_t *arr = json_array();
    assert_int_equal(audit_query(f->s, &big, arr, NULL, &f->e), ST_INVALID);
    json_decref(arr);
}

/* Queries by patient and by user walk the log block by block (65,536
 * events each, newest first): counts, order and paging across a block
 * boundary. */
static void test_query_across_blocks(void **state) {
    fx *f = *state;
    enum { N = 70000 };
    open_log(f, 50);
    for (int i = 1; i <= N; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "o%d", i);
        int zed = i >= 65535 && i <= 65537;
        append(f, zed ? "zed" : "alice", "read", i % 10000 == 0 ? 7 : 1 + i % 5, "p", "Observation", rid, "",
               0);
    }
    close_log(f);
    assert_int_equal(sql_int(f, "SELECT max(last) FROM audit_block"), N);
    static const int64_t seven[] = {7}, zed_65536[] = {1 + 65536 % 5};
    const struct {
        audit_filter flt;
        int64_t total;
        const char *ids[3];
    } cases[] = {
        {{.pkeys = seven, .npkeys = 1, .limit = 3}, 7, {"audit-70000", "audit-60000", "audit-50000"}},
        {{.pkeys = seven, .npkeys = 1, .limit = 2, .offset = 1}, 7, {"audit-60000", "audit-50000", NULL}},
        {{.user = "zed"}, 3, {"audit-65537", "audit-65536", "audit-65535"}},
        {{.user = "zed", .offset = 2}, 3, {"audit-65535", NULL, NULL}},
        {{.user = "zed", .pkeys = zed_65536, .npkeys = 1}, 1, {"audit-65536", NULL, NULL}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        json_t *arr = query_case(f, c, &cases[c].flt, cases[c].total);
        size_t n = 0;
        while (n < 3 && cases[c].ids[n])
            n++;
        assert_int_equal(json_array_size(arr), n);
        for (size_t i = 0; i < n; i++) {
            char path[16];
            snprintf(path, sizeof path, "%zu.id", i);
            assert_string_equal(str_at(arr, path), cases[c].ids[i]);
        }
        json_decref(arr);
    }
    assert_true(verify(f, NULL).ok);
}

/* ------------------------------------------------------------ migrations */

/* The row-per-event log of schemas 7 to 11, written here from its
 * definition (docs/audit.md: hash_n = BLAKE2b-256(key; prev_n || ns(seq)
 * || ns of the fifteen columns)) rather than by audit.c: n rows into
 * `schema`audit_log, its anchor naming the last, with the key of f's key
 * file (made by opening the log once). */
#define LEGACY_COLUMNS                                                                                       \
    "seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, user_name TEXT NOT NULL, role TEXT NOT NULL, org TEXT NOT " \
    "NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, status INTEGER NOT NULL, rtype TEXT NOT NULL, rid "  \
    "TEXT NOT NULL, pkey BIGINT NOT NULL, patient_id TEXT NOT NULL, purpose TEXT NOT NULL, reason TEXT NOT " \
    "NULL, source TEXT NOT NULL, request TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL"

static void legacy_log(fx *f, const char *schema, int n) {
    unsigned char key[32];
    int fd = open(f->key, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, key, sizeof key), (ssize_t)sizeof key);
    close(fd);
    char sql[1200];
    snprintf(sql, sizeof sql,
             "CREATE TABLE %saudit_log (" LEGACY_COLUMNS ");"
             "CREATE INDEX %saudit_log_patient ON audit_log (pkey, seq);"
             "CREATE INDEX %saudit_log_user ON audit_log (user_name, seq);"
             "CREATE INDEX %saudit_log_at ON audit_log (at);"
             "CREATE TABLE IF NOT EXISTS %saudit_anchor (id SMALLINT PRIMARY KEY, seq BIGINT NOT NULL,"
             " hash TEXT NOT NULL, key_id TEXT NOT NULL, updated BIGINT NOT NULL);"
             "DELETE FROM %saudit_anchor",
             schema, schema, schema, schema, schema, schema);
    sql_exec(f, sql);
    char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000", hash[65];
    err e;
    db *d = store_db(f->s, &e);
    const db_driver *drv = f->s->drv;
    snprintf(sql, sizeof sql,
             "INSERT INTO %saudit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", schema);
    assert_int_equal(drv->exec(d, "BEGIN", &e), ST_OK);
    for (int i = 1; i <= n; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "o%d", i);
        const char *txt[] = {i % 2 ? "alice" : "bob",
                             "gp",
                             "Y00001",
                             "read",
                             "0",
                             "Observation",
                             rid,
                             "p1",
                             "TREAT",
                             i == 7 ? "a reason, with a comma: 3:x," : "",
                             "127.0.0.1",
                             "GET /x"};
        int64_t at = 1700000000000000 + i, status = 200, pkey = 1 + i % 4;
        buf in = {0};
        buf_append(&in, prev, 64);
        ns_put_int(&in, i);
        ns_put_int(&in, at);
        for (int t = 0; t < 5; t++)
            ns_put(&in, txt[t], strlen(txt[t]));
        ns_put_int(&in, status);
        ns_put(&in, txt[5], strlen(txt[5]));
        ns_put(&in, txt[6], strlen(txt[6]));
        ns_put_int(&in, pkey);
        for (int t = 7; t < 12; t++)
            ns_put(&in, txt[t], strlen(txt[t]));
        unsigned char md[32];
        crypto_generichash(md, sizeof md, (const unsigned char *)in.p, in.len, key, sizeof key);
        buf_free(&in);
        for (int k = 0; k < 32; k++)
            snprintf(hash + 2 * k, 3, "%02x", md[k]);
        db_stmt *st = NULL;
        assert_int_equal(drv->prepare(d, sql, 0, &st, &e), ST_OK);
        int p = 1;
        drv->bind_int(st, p++, i);
        drv->bind_int(st, p++, at);
        for (int t = 0; t < 5; t++)
            drv->bind_text(st, p++, txt[t], -1);
        drv->bind_int(st, p++, status);
        drv->bind_text(st, p++, txt[5], -1);
        drv->bind_text(st, p++, txt[6], -1);
        drv->bind_int(st, p++, pkey);
        for (int t = 7; t < 12; t++)
            drv->bind_text(st, p++, txt[t], -1);
        drv->bind_text(st, p++, prev, 64);
        drv->bind_text(st, p++, hash, 64);
        assert_int_equal(drv->step(st, &e), 0);
        drv->done(st);
        memcpy(prev, hash, sizeof hash);
    }
    assert_int_equal(drv->exec(d, "COMMIT", &e), ST_OK);
    unsigned char kid[32];
    char kidhex[65];
    crypto_generichash(kid, sizeof kid, key, sizeof key, NULL, 0);
    for (int k = 0; k < 32; k++)
        snprintf(kidhex + 2 * k, 3, "%02x", kid[k]);
    snprintf(sql, sizeof sql, "INSERT INTO %saudit_anchor VALUES (1, %d, '%s', '%s', 0)", schema, n, prev,
             kidhex);
    sql_exec(f, sql);
}

static void reopen_store(fx *f) {
    store_close(f->s);
    f->s = NULL;
    if (store_open(f->db.url, 1, &f->s, &f->e) != ST_OK) fail_msg("store_open: %s", f->e.msg);
}

/* What a repacked log must be: every event, in blocks of at most 1,024,
 * verifying with the key, answering queries, and extended by the writer. */
static void check_repacked(fx *f, int n) {
    assert_int_equal(sql_int(f, EVENTS), n);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM audit_block"), (n + 1023) / 1024);
    assert_int_equal(sql_int(f, "SELECT max(version) FROM concord_schema"), store_schema_version());
    audit_verify_result r = verify(f, NULL);
    if (!r.ok) fail_msg("verify: %s at %lld", r.problem, (long long)r.first_bad_seq);
    assert_int_equal(r.rows, n);
    static const int64_t three[] = {3};
    audit_filter flt = {.pkeys = three, .npkeys = 1, .limit = 1};
    json_t *arr = query_case(f, 0, &flt, (n + 2) / 4); /* pkey 1 + i % 4 == 3: i = 2, 6, 10, ... */
    json_decref(arr);
    open_log(f, 5);
    append(f, "carol", "read", 3, "p1", "Patient", "p1", "", 1);
    close_log(f);
    r = verify(f, NULL);
    if (!r.ok) fail_msg("verify after appending: %s at %lld", r.problem, (long long)r.first_bad_seq);
    assert_int_equal(r.rows, n + 1);
}

/* A log of schema 11 (one row per event) is repacked into blocks at
 * start-up (migration 12) without changing a hash. */
static void test_row_log_repacked_into_blocks(void **state) {
    fx *f = *state;
    enum { N = 2500 };
    open_log(f, 5);
    close_log(f);
    sql_exec(f, f->pg ? "DROP TABLE audit_block; DROP TABLE audit_block_patient; DROP TABLE audit_block_user;"
                        "DELETE FROM concord_schema WHERE version >= 12"
                      : "DROP TABLE audit.audit_block; DROP TABLE audit.audit_block_patient;"
                        "DROP TABLE audit.audit_block_user; DELETE FROM concord_schema WHERE version >= 12");
    legacy_log(f, f->pg ? "" : "audit.", N);
    reopen_store(f);
    assert_int_equal(sql_int(f, f->pg ? "SELECT count(*) FROM pg_tables WHERE tablename = 'audit_log'"
                                      : "SELECT count(*) FROM audit.sqlite_master WHERE name = 'audit_log'"),
                     0);
    check_repacked(f, N);
}

/* SQLite: a log written before the access log had its own file (schema 8:
 * the tables in the database file) moves into that file at start-up, is
 * repacked and still verifies; when the move was interrupted after the
 * copy (rows in both files, the version still 8), it is finished without
 * copying twice. */
static void test_sqlite_log_moves_to_its_own_file(void **state) {
    fx *f = *state;
    enum { N = 30 };
    open_log(f, 5);
    close_log(f);
    for (int keep_copy = 0; keep_copy <= 1; keep_copy++) {
        sql_exec(f, "DROP TABLE IF EXISTS audit.audit_block; DROP TABLE IF EXISTS audit.audit_block_patient;"
                    "DROP TABLE IF EXISTS audit.audit_block_user; DROP TABLE IF EXISTS audit.audit_log;"
                    "DROP TABLE audit.audit_anchor;"
                    "ALTER TABLE acc_rel DROP COLUMN claimed;" /* migration 11 added it */
                    "DELETE FROM concord_schema WHERE version >= 9;");
        legacy_log(f, "main.", N);
        if (keep_copy) legacy_log(f, "audit.", N);
        reopen_store(f);
        assert_int_equal(sql_int(f, "SELECT count(*) FROM main.sqlite_master WHERE name LIKE 'audit%'"), 0);
        check_repacked(f, N);
    }
}

/* ================================================================ main */

#define AUDIT_TESTS(X)                                                                                       \
    X(test_threads_close_reopen_verify)                                                                      \
    X(test_wait_means_durable)                                                                               \
    X(test_two_writers_one_chain)                                                                            \
    X(test_database_failure_keeps_events)                                                                    \
    X(test_fresh_database_verifies)                                                                          \
    X(test_altered_row)                                                                                      \
    X(test_altered_row_with_its_hash_recomputed_unkeyed)                                                     \
    X(test_block_hash_rewritten)                                                                             \
    X(test_tampering_inside_a_block)                                                                         \
    X(test_index_rows_removed)                                                                               \
    X(test_deleted_middle_row)                                                                               \
    X(test_deleted_first_row)                                                                                \
    X(test_deleted_last_rows)                                                                                \
    X(test_reordered_rows)                                                                                   \
    X(test_anchor_deleted)                                                                                   \
    X(test_all_rows_deleted)                                                                                 \
    X(test_wrong_key)                                                                                        \
    X(test_truncation_survives_appending)                                                                    \
    X(test_key_file_rules)                                                                                   \
    X(test_new_key_refused_for_an_existing_log)                                                              \
    X(test_strings_bounded_and_valid_utf8)                                                                   \
    X(test_query_filters_and_auditevent_json)                                                                \
    X(test_query_across_blocks)                                                                              \
    X(test_row_log_repacked_into_blocks)

#define SQLITE_TEST(fn) {"sqlite: " #fn, fn, setup_sqlite, teardown, NULL},
#define PG_TEST(fn)     {"postgresql: " #fn, fn, setup_pg, teardown, NULL},

static void test_postgresql_skipped(void **state) {
    (void)state;
    print_message(
        "skipped: CONCORD_TEST_PG not set (run under tests/with-postgres.sh for the PostgreSQL backend)\n");
    skip();
}

int main(void) {
    static const struct CMUnitTest common[] = {cmocka_unit_test(test_default_key_path)};
    static const struct CMUnitTest sqlite_tests[] = {AUDIT_TESTS(SQLITE_TEST)
                                                         SQLITE_TEST(test_sqlite_log_moves_to_its_own_file)};
    static const struct CMUnitTest pg_tests[] = {AUDIT_TESTS(PG_TEST)};
    static const struct CMUnitTest pg_skipped[] = {cmocka_unit_test(test_postgresql_skipped)};
    int failed = cmocka_run_group_tests_name("audit", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("audit on SQLite", sqlite_tests, NULL, NULL);
    const char *pg = getenv("CONCORD_TEST_PG");
    if (pg && *pg)
        failed += cmocka_run_group_tests_name("audit on PostgreSQL", pg_tests, NULL, NULL);
    else
        failed += cmocka_run_group_tests_name("audit on PostgreSQL", pg_skipped, NULL, NULL);
    return failed ? 1 : 0;
}
