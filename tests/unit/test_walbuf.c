/*
 * test_walbuf.c — the VFS that gathers WAL frames (src/store/sqlite_walbuf.c).
 * Every test checks what other connections, and a fresh process, see on
 * disk: gathered frames must reach the file before a commit returns and
 * before the WAL write lock is released, and never overwrite another
 * writer's frames.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/sqlite_walbuf.h"

static char dir[64];
static char path[96];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/concord-walbuf-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(path, sizeof path, "%s/w.db", dir);
    return walbuf_register() == SQLITE_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void ex(sqlite3 *h, const char *sql) {
    char *msg = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) fail_msg("%s: %s (%d)", sql, msg ? msg : "?", rc);
}

static sqlite3 *open_db(const char *vfs, int gather, int cache_pages) {
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    char sql[160];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=%d;"
             "PRAGMA wal_autocheckpoint=0",
             cache_pages);
    ex(h, sql);
    if (gather) assert_int_equal(walbuf_enable(h, "main"), SQLITE_OK);
    return h;
}

static int64_t one_int(sqlite3 *h, const char *sql) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void assert_intact(sqlite3 *h) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* rows of ~1 KiB with random content: every few rows fill a page */
static void insert_rows(sqlite3 *h, int from, int n) {
    char sql[160];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM c WHERE i < %d)"
             " INSERT INTO t SELECT i, randomblob(1000) FROM c",
             from, from + n - 1);
    ex(h, sql);
}

static void test_commits_are_gathered_and_visible(void **state) {
    (void)state;
    sqlite3 *w = open_db(WALBUF_VFS, 1, 20000); /* the whole transaction fits: no spill */
    ex(w, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t (v)");
    walbuf_stats before, after;
    walbuf_get_stats(&before);
    ex(w, "BEGIN");
    insert_rows(w, 1, 3000);
    ex(w, "COMMIT");
    walbuf_get_stats(&after);
    uint64_t in = after.frames_in - before.frames_in, out = after.writes_out - before.writes_out;
    /* two writes per frame (header, page) went in; a few pieces came out */
    if (in < 1000 || out * 20 > in)
        fail_msg("%llu WAL writes gathered into %llu", (unsigned long long)in, (unsigned long long)out);
    /* another connection of ours, and one through the default VFS */
    sqlite3 *r1 = open_db(WALBUF_VFS, 0, 100), *r2 = open_db(NULL, 0, 100);
    assert_int_equal(one_int(r1, "SELECT count(*) FROM t"), 3000);
    assert_int_equal(one_int(r2, "SELECT count(*) FROM t WHERE length(v) = 1000"), 3000);
    assert_intact(r2);
    sqlite3_close(r1);
    sqlite3_close(r2);
    sqlite3_close(w);
}

/* Transactions of every size from 1 to 120 rows: runs of many lengths,
 * some crossing the 124 KiB pieces and the 1 MiB buffer. A run whose
 * length was a multiple of 128 KiB once failed as a full disk. */
static void test_runs_of_every_length(void **state) {
    (void)state;
    sqlite3 *w = open_db(WALBUF_VFS, 1, 4000);
    ex(w, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)");
    int k = 1;
    for (int n = 1; n <= 120; n++) {
        ex(w, "BEGIN");
        char sql[160];
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE c(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM c WHERE i < %d)"
                 " INSERT INTO t SELECT i, randomblob(4000) FROM c",
                 k, k + n - 1);
        ex(w, sql);
        ex(w, "COMMIT");
        k += n;
        if (n % 40 == 0) ex(w, "PRAGMA wal_checkpoint(RESTART)");
    }
    sqlite3 *r = open_db(NULL, 0, 100);
    assert_int_equal(one_int(r, "SELECT count(*) FROM t"), k - 1);
    assert_intact(r);
    sqlite3_close(r);
    sqlite3_close(w);
}

/* A transaction larger than the page cache spills frames into the WAL
 * before it commits; rolled back, those offsets are reused by the next
 * writer — here another connection. Nothing of the rolled-back frames
 * may land on top of its commit later. */
static void test_rolled_back_spill_does_not_overwrite_the_next_writer(void **state) {
    (void)state;
    sqlite3 *a = open_db(WALBUF_VFS, 1, 10), *b = open_db(WALBUF_VFS, 1, 2000);
    ex(a, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)");
    insert_rows(a, 1, 10);
    ex(a, "BEGIN");
    insert_rows(a, 100, 400); /* far more than 10 pages: spills */
    ex(a, "ROLLBACK");
    ex(b, "BEGIN");
    insert_rows(b, 1000, 300);
    ex(b, "COMMIT");
    /* a reads (which would flush anything it still held), then writes */
    assert_int_equal(one_int(a, "SELECT count(*) FROM t"), 310);
    ex(a, "BEGIN");
    insert_rows(a, 5000, 50);
    ex(a, "COMMIT");
    sqlite3 *r = open_db(NULL, 0, 100);
    assert_int_equal(one_int(r, "SELECT count(*) FROM t"), 360);
    assert_int_equal(one_int(r, "SELECT count(*) FROM t WHERE k >= 1000 AND k < 1300"), 300);
    assert_intact(r);
    sqlite3_close(r);
    sqlite3_close(a);
    sqlite3_close(b);
}

/* A commit that returned is on disk even if the process dies at once,
 * without closing anything (kill -9). */
static void test_commit_survives_sudden_exit(void **state) {
    (void)state;
    sqlite3 *w = open_db(WALBUF_VFS, 1, 2000);
    ex(w, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)");
    sqlite3_close(w);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *c = NULL;
        if (sqlite3_open_v2(path, &c, SQLITE_OPEN_READWRITE, WALBUF_VFS) != SQLITE_OK) _exit(2);
        if (sqlite3_exec(c, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) _exit(3);
        if (walbuf_enable(c, "main") != SQLITE_OK) _exit(4);
        if (sqlite3_exec(
                c,
                "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700)"
                " INSERT INTO t SELECT i, randomblob(900) FROM n; COMMIT",
                NULL, NULL, NULL) != SQLITE_OK)
            _exit(5);
        _exit(0); /* no close, no checkpoint */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    sqlite3 *r = open_db(NULL, 0, 100);
    assert_int_equal(one_int(r, "SELECT count(*) FROM t"), 700);
    assert_intact(r);
    sqlite3_close(r);
}

/* Without walbuf_enable (synchronous below FULL, say) nothing is gathered. */
static void test_not_enabled_passes_through(void **state) {
    (void)state;
    sqlite3 *w = open_db(WALBUF_VFS, 0, 2000);
    ex(w, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)");
    walbuf_stats before, after;
    walbuf_get_stats(&before);
    insert_rows(w, 1, 200);
    walbuf_get_stats(&after);
    assert_int_equal(after.frames_in, before.frames_in);
    assert_int_equal(after.writes_out, before.writes_out);
    assert_int_equal(one_int(w, "SELECT count(*) FROM t"), 200);
    sqlite3_close(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_are_gathered_and_visible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_of_every_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_spill_does_not_overwrite_the_next_writer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_survives_sudden_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_enabled_passes_through, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
