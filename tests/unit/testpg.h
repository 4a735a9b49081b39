/*
 * testpg.h — what the unit tests that run on both backends share: the admin
 * connection ($CONCORD_TEST_PG) for CREATE/DROP DATABASE, the URL of a
 * database on that server, and a fresh database per test (test_db: a
 * temporary directory, and in it the SQLite file, or a new PostgreSQL
 * database). Include after <cmocka.h> (print_error) and <libpq-fe.h>.
 */
#ifndef CONCORD_TESTS_TESTPG_H
#define CONCORD_TESTS_TESTPG_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* `base` (a postgresql:// URL) with its database name replaced by `db`. */
static inline void url_with_dbname(const char *base, const char *db, char *out, size_t n) {
    const char *scheme = strstr(base, "://");
    const char *host = scheme ? scheme + 3 : base;
    const char *q = strchr(host, '?');
    const char *slash = strchr(host, '/');
    if (slash && q && slash > q) slash = NULL;
    size_t head = slash ? (size_t)(slash - base) : q ? (size_t)(q - base) : strlen(base);
    snprintf(out, n, "%.*s/%s%s", (int)head, base, db, q ? q : "");
}

/* Run one statement on the admin connection; 1 if it succeeded. */
static inline int pg_admin_exec(const char *sql) {
    PGconn *c = PQconnectdb(getenv("CONCORD_TEST_PG"));
    int ok = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        print_error("cannot connect to CONCORD_TEST_PG: %s", PQerrorMessage(c));
    } else {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) print_error("%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

/* A fresh database for one test: dir is always a new temporary directory
 * (for key files and the like, and the SQLite file `file` in it); on
 * PostgreSQL a new database on $CONCORD_TEST_PG. */
typedef struct test_db {
    char dir[256];
    char url[512];
    char pg_db[64];
} test_db;

static inline int test_db_create(test_db *t, const char *name, const char *file, int pg) {
    static int counter;
    memset(t, 0, sizeof *t);
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/concord-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
    if (!mkdtemp(t->dir)) return -1;
    if (!pg) {
        snprintf(t->url, sizeof t->url, "%s/%s", t->dir, file);
        return 0;
    }
    snprintf(t->pg_db, sizeof t->pg_db, "concord_%s_%d_%d", name, (int)getpid(), ++counter);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", t->pg_db);
    if (!pg_admin_exec(sql)) return -1;
    url_with_dbname(getenv("CONCORD_TEST_PG"), t->pg_db, t->url, sizeof t->url);
    return 0;
}

/* DROP DATABASE name (a test's own, made by test_db_create or alike). */
static inline void test_pg_drop(const char *name) {
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    pg_admin_exec(sql);
}

/* Remove a test's directory with the files in it ("" is nothing). */
static inline void test_dir_remove(const char *dir) {
    if (!dir[0]) return;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* Drop the database and remove the directory with everything in it. */
static inline void test_db_drop(test_db *t) {
    if (t->pg_db[0]) test_pg_drop(t->pg_db);
    test_dir_remove(t->dir);
}

#endif
