/*
 * testpg.h — what the unit tests that run on PostgreSQL share: the admin
 * connection ($CONCORD_TEST_PG) for CREATE/DROP DATABASE, and the URL of a
 * database on that server. Include after <cmocka.h> (print_error) and
 * <libpq-fe.h>.
 */
#ifndef CONCORD_TESTS_TESTPG_H
#define CONCORD_TESTS_TESTPG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
