/*
 * test_store.c — the record store (src/store) through its public interface
 * (store.h), on both backends: every test runs once against SQLite (a fresh
 * database file per test) and once against PostgreSQL when
 * CONCORD_TEST_PG holds a postgresql:// URL of a server the tests may create
 * databases on (a fresh database concord_unit_<pid>_<n> per test, dropped
 * afterwards). Without it the PostgreSQL group is skipped, saying so.
 * tests/with-postgres.sh starts a throwaway server and sets the variable:
 *
 *     tests/with-postgres.sh build/test_store
 *
 * What is covered: migrations at open (idempotent; refusing a database
 * that is behind when not allowed to migrate); versioned writes (ids,
 * meta.versionId/lastUpdated stamped into the body, history, vread,
 * If-Match, create-only, delete and re-create); transactions (rollback
 * leaves no resource and no index rows; index rows are written in the
 * resource's transaction and are visible to it, and to nobody else before
 * commit); the patient key (the patient= fast path, $everything); counts
 * and size; search semantics at the store level for every parameter type,
 * modifier, prefix, chains, _sort, _include/_revinclude, _summary=count,
 * _total and paging; and concurrent writers (no lost update; one winner
 * among concurrent creates of one id).
 *
 * Expected results follow the FHIR R4 search specification
 * (hl7.org/fhir/R4/search.html). A search test runs every query, prints
 * each mismatch, and fails at the end, so one run lists every deviation.
 */
#include <dirent.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fhir/fhirdate.h"
#include "fhir/search.h"
#include "store/store.h"
#include "store/store_int.h"
#include "testpg.h"

/* ------------------------------------------------------------ fixture */

#define MAX_DBS 4

typedef struct fx {
    int pg;                   /* 1: PostgreSQL backend */
    char dir[256];            /* SQLite: the test's temp directory */
    char url[512];            /* the test's main database */
    char pg_dbs[MAX_DBS][64]; /* PostgreSQL databases to drop */
    int n_pg_dbs, n_sqlite_extra;
    store *s;
    store_txn *tx; /* a transaction left open by a failed test: rolled back */
    err e;
    int mismatches; /* search tests: count, then fail at the end */
} fx;

static int pg_counter;

/* A new empty database; its URL (SQLite path or postgresql:// URL) in out. */
static int new_database(fx *f, char *out, size_t n) {
    if (!f->pg) {
        snprintf(out, n, "%s/db%d.sqlite", f->dir, f->n_sqlite_extra++);
        return 0;
    }
    if (f->n_pg_dbs == MAX_DBS) return -1;
    char *name = f->pg_dbs[f->n_pg_dbs];
    snprintf(name, sizeof f->pg_dbs[0], "concord_unit_%d_%d", (int)getpid(), ++pg_counter);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (!pg_admin_exec(sql)) return -1;
    f->n_pg_dbs++;
    url_with_dbname(getenv("CONCORD_TEST_PG"), name, out, n);
    return 0;
}

static int open_main(fx *f) {
    if (new_database(f, f->url, sizeof f->url) != 0) return -1;
    if (store_open(f->url, 1, &f->s, &f->e) != ST_OK) {
        print_error("store_open(%s): %s\n", f->url, f->e.msg);
        return -1;
    }
    return 0;
}

static int setup_sqlite(void **state) {
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    *state = f;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/concord-unit-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) return -1;
    return open_main(f);
}

static int setup_pg(void **state) {
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    *state = f;
    f->pg = 1;
    return open_main(f);
}

static int teardown(void **state) {
    fx *f = *state;
    if (!f) return 0;
    if (f->tx) store_rollback(f->tx);
    store_close(f->s);
    for (int i = 0; i < f->n_pg_dbs; i++)
        test_pg_drop(f->pg_dbs[i]);
    test_dir_remove(f->dir);
    free(f);
    return 0;
}

static const char *backend(const fx *f) {
    return f->pg ? "postgresql" : "sqlite";
}

/* ------------------------------------------------------------ helpers */

static json_t *J(const char *text) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) fail_msg("bad test JSON (%s): %s", je.text, text);
    return j;
}

/* One write transaction: store_put of `text` (parsed) and commit. */
static status put_ex(fx *f, const char *text, const char *id, int64_t if_match, int create_only,
                     store_meta *m, int *created) {
    json_t *res = J(text);
    store_meta tmp;
    int tmpc;
    if (!m) m = &tmp;
    if (!created) created = &tmpc;
    memset(&f->e, 0, sizeof f->e);
    status rc = store_begin(f->s, &f->tx, &f->e);
    if (rc == ST_OK) rc = store_put(f->tx, res, id, if_match, create_only, m, created, NULL, &f->e);
    if (rc == ST_OK) {
        rc = store_commit(f->tx, &f->e);
        f->tx = NULL;
    } else if (f->tx) {
        store_rollback(f->tx);
        f->tx = NULL;
    }
    json_decref(res);
    return rc;
}

/* put, asserting success; returns the new version. */
static int64_t put_ok(fx *f, const char *id, const char *text) {
    store_meta m;
    status rc = put_ex(f, text, id, 0, 0, &m, NULL);
    if (rc != ST_OK)
        fail_msg("[%s] put %s: %s: %s", backend(f), id ? id : "(new)", status_name(rc), f->e.msg);
    return m.version;
}

static status del_ex(fx *f, const char *type, const char *id, store_meta *m) {
    memset(&f->e, 0, sizeof f->e);
    status rc = store_begin(f->s, &f->tx, &f->e);
    if (rc == ST_OK) rc = store_delete(f->tx, type, id, m, &f->e);
    if (rc == ST_OK) {
        rc = store_commit(f->tx, &f->e);
        f->tx = NULL;
    } else if (f->tx) {
        store_rollback(f->tx);
        f->tx = NULL;
    }
    return rc;
}

static void del_ok(fx *f, const char *type, const char *id) {
    store_meta m;
    status rc = del_ex(f, type, id, &m);
    if (rc != ST_OK) fail_msg("[%s] delete %s/%s: %s", backend(f), type, id, f->e.msg);
}

/* Read the current version's body as JSON (caller decrefs); asserts ST_OK. */
static json_t *read_json(fx *f, const char *type, const char *id, int64_t version, store_meta *m) {
    buf b = {0};
    store_meta tmp;
    if (!m) m = &tmp;
    status rc = store_read(f->s, type, id, version, &b, m, &f->e);
    if (rc != ST_OK) {
        buf_free(&b);
        fail_msg("[%s] read %s/%s/_history/%lld: %s: %s", backend(f), type, id, (long long)version,
                 status_name(rc), f->e.msg);
    }
    json_t *j = J(b.p);
    buf_free(&b);
    return j;
}

static const char *jstr(json_t *j, const char *path) {
    /* "a.b" → j.a.b as a string, or NULL */
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", path);
    json_t *cur = j;
    for (char *tok = strtok(tmp, "."); tok && cur; tok = strtok(NULL, "."))
        cur = json_object_get(cur, tok);
    return json_string_value(cur);
}

#define assert_str(a, b)                                                                                     \
    do {                                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                                     \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                               \
            fail_msg("%s: expected \"%s\", got \"%s\"", #a, b_ ? b_ : "NULL", a_ ? a_ : "NULL");             \
    } while (0)

#define assert_status(rc, want)                                                                              \
    do {                                                                                                     \
        status r_ = (rc);                                                                                    \
        if (r_ != (want))                                                                                    \
            fail_msg("[%s] %s: expected %s, got %s (%s)", backend(f), #rc, status_name(want),                \
                     status_name(r_), f->e.msg);                                                             \
    } while (0)

/* Parse `qs` as a search on `type` (strict) and run it, in `tx` if given. */
static status run_search(fx *f, store_txn *tx, const char *type, const char *qs, store_items *out) {
    arena a = {0};
    search_param_kv *kv;
    search_query q;
    memset(out, 0, sizeof *out);
    memset(&f->e, 0, sizeof f->e);
    int n = search_split_query(&a, qs, strlen(qs), &kv);
    status rc = search_parse(&a, type, kv, n, 0, &q, &f->e);
    if (rc == ST_OK) rc = tx ? store_txn_search(tx, &q, out, &f->e) : store_search(f->s, &q, out, &f->e);
    arena_free(&a);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Items as "Type/id Type/id +Type/id" (includes marked '+', after the
 * matches); sorted within each group unless `ordered`. */
static void describe(const store_items *it, int ordered, char *out, size_t n) {
    char **v = calloc(it->n + 1, sizeof *v);
    size_t nm = 0;
    for (int inc = 0; inc < 2; inc++) {
        size_t first = nm;
        for (size_t i = 0; i < it->n; i++) {
            if (!!it->v[i].include != inc) continue;
            v[nm] = malloc(160);
            snprintf(v[nm], 160, "%s%s/%s", inc ? "+" : "", it->v[i].meta.type, it->v[i].meta.id);
            nm++;
        }
        if (!ordered) qsort(v + first, nm - first, sizeof *v, cmp_str);
    }
    out[0] = 0;
    size_t len = 0;
    for (size_t i = 0; i < nm; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? " " : "", v[i]);
        if (w > 0 && (size_t)w < n - len) len += (size_t)w;
        free(v[i]);
    }
    free(v);
}

/* The expected text normalised the same way (sorted unless ordered). */
static void normalise(const char *want, int ordered, char *out, size_t n) {
    char tmp[2048];
    snprintf(tmp, sizeof tmp, "%s", want);
    char *v[128];
    size_t nv = 0;
    for (char *t = strtok(tmp, " "); t && nv < 128; t = strtok(NULL, " "))
        v[nv++] = t;
    size_t split = 0;
    while (split < nv && v[split][0] != '+')
        split++;
    if (!ordered) {
        qsort(v, split, sizeof *v, cmp_str);
        qsort(v + split, nv - split, sizeof *v, cmp_str);
    }
    out[0] = 0;
    size_t len = 0;
    for (size_t i = 0; i < nv; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? " " : "", v[i]);
        if (w > 0 && (size_t)w < n - len) len += (size_t)w;
    }
}

/* Run a search and compare; a mismatch is printed and counted. */
static void expect_(fx *f, const char *type, const char *qs, int ordered, const char *want, int line) {
    store_items it;
    status rc = run_search(f, NULL, type, qs, &it);
    char got[4096], exp[4096];
    if (rc != ST_OK) {
        snprintf(got, sizeof got, "error %s: %s", status_name(rc), f->e.msg);
    } else {
        describe(&it, ordered, got, sizeof got);
    }
    store_items_free(&it);
    normalise(want, ordered, exp, sizeof exp);
    if (strcmp(got, exp) != 0) {
        print_error("[%s] line %d: %s?%s\n    expected: {%s}\n    got:      {%s}\n", backend(f), line, type,
                    qs, exp, got);
        f->mismatches++;
    }
}
#define expect_set(f, type, qs, want) expect_(f, type, qs, 0, want, __LINE__)
#define expect_seq(f, type, qs, want) expect_(f, type, qs, 1, want, __LINE__)

/* A search's paging facts: n results, `more`, total. */
static void expect_page_(fx *f, const char *type, const char *qs, const char *want, int more, int64_t total,
                         int line) {
    store_items it;
    status rc = run_search(f, NULL, type, qs, &it);
    char got[4096], exp[4096];
    if (rc != ST_OK) {
        print_error("[%s] line %d: %s?%s: error %s\n", backend(f), line, type, qs, f->e.msg);
        f->mismatches++;
        return;
    }
    describe(&it, 1, got, sizeof got);
    normalise(want, 1, exp, sizeof exp);
    if (strcmp(got, exp) != 0 || it.more != more || it.total != total) {
        print_error("[%s] line %d: %s?%s\n    expected: {%s} more=%d total=%lld\n    got:      {%s} more=%d "
                    "total=%lld\n",
                    backend(f), line, type, qs, exp, more, (long long)total, got, it.more,
                    (long long)it.total);
        f->mismatches++;
    }
    store_items_free(&it);
}
#define expect_page(f, type, qs, want, more, total) expect_page_(f, type, qs, want, more, total, __LINE__)

static void finish(fx *f) {
    if (f->mismatches)
        fail_msg("[%s] %d search result(s) differ from the specification (listed above)", backend(f),
                 f->mismatches);
}

static size_t history_count(fx *f, const char *type, const char *id) {
    store_items it = {0};
    status rc = store_history(f->s, type, id, 0, 100000, 0, &it, &f->e);
    if (rc != ST_OK) fail_msg("[%s] history %s/%s: %s", backend(f), type, id ? id : "", f->e.msg);
    size_t n = it.n;
    store_items_free(&it);
    return n;
}

/* ------------------------------------------------------ the population */

/*
 * A small population with one resource for each behaviour searched:
 *   org1  Organization "Good Health Clinic"
 *   p1    Patient Peter James Chalmers, male, 1974-12-25, urn:mrn|111, managed by org1
 *   p2    Patient Zoë Windsor, female, 1980-03 (month precision), urn:mrn|222
 *   p3    Patient Sean O_Brien, no gender, 2001-07-14, identifier 333 without system
 *   g1    Group
 *   o1    Observation final, loinc 8867-4, p1, 2024-03-05T10:00Z, 72 /min
 *   o2    Observation preliminary, loinc 29463-7, p1, 2024-04-10T08:30Z, 80.5 kg
 *   o3    Observation final, loinc 8867-4, p2, 2023-12-31T23:00Z, 100 /min, performer org1
 *   o4    Observation final, loinc 8867-4, Group g1, 2024-03-05T12:00Z, 64 /min
 *   o5    Observation final, http://other.org 8867-4, p2, 2022-01-01, 5.4 mg
 *   r1    RiskAssessment p1, probability 0.8
 *   r2    RiskAssessment p2, probability 0.25
 * Created in this order (so rkey order = this order).
 */
static void seed(fx *f) {
    put_ok(f, "org1", "{\"resourceType\":\"Organization\",\"active\":true,\"name\":\"Good Health Clinic\"}");
    put_ok(f, "p1",
           "{\"resourceType\":\"Patient\",\"active\":true,\"identifier\":[{\"system\":\"urn:mrn\",\"value\":"
           "\"111\"}],"
           "\"name\":[{\"family\":\"Chalmers\",\"given\":[\"Peter\",\"James\"]}],\"gender\":\"male\","
           "\"birthDate\":\"1974-12-25\",\"managingOrganization\":{\"reference\":\"Organization/org1\"}}");
    put_ok(f, "p2",
           "{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:mrn\",\"value\":\"222\"}],"
           "\"name\":[{\"family\":\"Windsor\",\"given\":[\"Zo\xc3\xab\"]}],\"gender\":\"female\","
           "\"birthDate\":\"1980-03\"}");
    put_ok(f, "p3",
           "{\"resourceType\":\"Patient\",\"identifier\":[{\"value\":\"333\"}],"
           "\"name\":[{\"family\":\"O_Brien\",\"given\":[\"Sean\"]}],\"birthDate\":\"2001-07-14\"}");
    put_ok(f, "g1", "{\"resourceType\":\"Group\",\"type\":\"person\",\"actual\":true}");
    put_ok(f, "o1",
           "{\"resourceType\":\"Observation\",\"status\":\"final\","
           "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"8867-4\"}]},"
           "\"subject\":{\"reference\":\"Patient/p1\"},\"effectiveDateTime\":\"2024-03-05T10:00:00Z\","
           "\"valueQuantity\":{\"value\":72,\"unit\":\"beats/min\",\"system\":\"http://unitsofmeasure.org\","
           "\"code\":\"/min\"}}");
    put_ok(f, "o2",
           "{\"resourceType\":\"Observation\",\"status\":\"preliminary\","
           "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"29463-7\"}]},"
           "\"subject\":{\"reference\":\"Patient/p1\"},\"effectiveDateTime\":\"2024-04-10T08:30:00Z\","
           "\"valueQuantity\":{\"value\":80.5,\"unit\":\"kg\",\"system\":\"http://unitsofmeasure.org\","
           "\"code\":\"kg\"}}");
    put_ok(f, "o3",
           "{\"resourceType\":\"Observation\",\"status\":\"final\","
           "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"8867-4\"}]},"
           "\"subject\":{\"reference\":\"Patient/p2\"},\"effectiveDateTime\":\"2023-12-31T23:00:00Z\","
           "\"performer\":[{\"reference\":\"Organization/org1\"}],"
           "\"valueQuantity\":{\"value\":100,\"unit\":\"beats/min\",\"system\":\"http://unitsofmeasure.org\","
           "\"code\":\"/min\"}}");
    put_ok(f, "o4",
           "{\"resourceType\":\"Observation\",\"status\":\"final\","
           "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"8867-4\"}]},"
           "\"subject\":{\"reference\":\"Group/g1\"},\"effectiveDateTime\":\"2024-03-05T12:00:00Z\","
           "\"valueQuantity\":{\"value\":64,\"unit\":\"beats/min\",\"system\":\"http://unitsofmeasure.org\","
           "\"code\":\"/min\"}}");
    put_ok(f, "o5",
           "{\"resourceType\":\"Observation\",\"status\":\"final\","
           "\"code\":{\"coding\":[{\"system\":\"http://other.org\",\"code\":\"8867-4\"}]},"
           "\"subject\":{\"reference\":\"Patient/p2\"},\"effectiveDateTime\":\"2022-01-01\","
           "\"valueQuantity\":{\"value\":5.4,\"unit\":\"mg\",\"system\":\"http://unitsofmeasure.org\","
           "\"code\":\"mg\"}}");
    put_ok(f, "r1",
           "{\"resourceType\":\"RiskAssessment\",\"status\":\"final\",\"subject\":{\"reference\":\"Patient/"
           "p1\"},"
           "\"prediction\":[{\"probabilityDecimal\":0.8}]}");
    put_ok(f, "r2",
           "{\"resourceType\":\"RiskAssessment\",\"status\":\"final\",\"subject\":{\"reference\":\"Patient/"
           "p2\"},"
           "\"prediction\":[{\"probabilityDecimal\":0.25}]}");
}

/* ========================================================= migrations */

static void test_migrations_idempotent(void **state) {
    fx *f = *state;
    assert_true(store_schema_version() >= 1);
    assert_str(store_backend(f->s), backend(f));
    int applied = -1, version = -1;
    assert_status(store_migrate(f->s, &applied, &version, &f->e), ST_OK);
    assert_int_equal(applied, 0);
    assert_int_equal(version, store_schema_version());

    put_ok(f, "keep", "{\"resourceType\":\"Patient\",\"gender\":\"other\"}");
    /* open the same database again, migrating: nothing to do, data kept */
    store_close(f->s);
    f->s = NULL;
    assert_status(store_open(f->url, 1, &f->s, &f->e), ST_OK);
    applied = version = -1;
    assert_status(store_migrate(f->s, &applied, &version, &f->e), ST_OK);
    assert_int_equal(applied, 0);
    assert_int_equal(version, store_schema_version());
    store_close(f->s);
    f->s = NULL;
    /* and without migrating: the schema is current, so that works too */
    assert_status(store_open(f->url, 0, &f->s, &f->e), ST_OK);
    store_meta m;
    json_t *j = read_json(f, "Patient", "keep", 0, &m);
    assert_str(jstr(j, "gender"), "other");
    assert_int_equal(m.version, 1);
    json_decref(j);
}

static void test_open_without_migrate_on_empty_database(void **state) {
    fx *f = *state;
    char url[512];
    assert_int_equal(new_database(f, url, sizeof url), 0);
    store *s = (store *)&s; /* must be set to NULL on failure */
    err e = {0};
    status rc = store_open(url, 0, &s, &e);
    assert_int_equal(rc, ST_IO);
    assert_null(s);
    if (!strstr(e.msg, "concord migrate"))
        fail_msg("message does not say to run `concord migrate`: %s", e.msg);
    /* that attempt changed nothing: migrating now applies every step */
    assert_status(store_open(url, 1, &s, &e), ST_OK);
    int applied = -1, version = -1;
    assert_status(store_migrate(s, &applied, &version, &e), ST_OK);
    assert_int_equal(applied, 0);
    assert_int_equal(version, store_schema_version());
    store_close(s);
    assert_status(store_open(url, 0, &s, &e), ST_OK);
    store_close(s);
}

/* ============================================================= writes */

static void test_put_creates_version_1(void **state) {
    fx *f = *state;
    json_t *res = J("{\"resourceType\":\"Patient\",\"gender\":\"female\",\"meta\":{\"versionId\":\"7\","
                    "\"profile\":[\"http://example.org/p\"]}}");
    store_meta m;
    int created = -1;
    int64_t before = fhir_now_usec();
    assert_status(store_begin(f->s, &f->tx, &f->e), ST_OK);
    assert_status(store_put(f->tx, res, NULL, 0, 0, &m, &created, NULL, &f->e), ST_OK);
    assert_status(store_commit(f->tx, &f->e), ST_OK);
    f->tx = NULL;
    int64_t after = fhir_now_usec();

    assert_int_equal(created, 1);
    assert_int_equal(m.version, 1);
    assert_int_equal(m.deleted, 0);
    assert_str(m.type, "Patient");
    assert_true(m.updated_usec >= before && m.updated_usec <= after);
    /* a time-ordered (version 7, RFC 9562) UUID */
    assert_int_equal(strlen(m.id), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(m.id[i], '-');
        else if (!strchr("0123456789abcdef", m.id[i]))
            fail_msg("id %s: not lower-case hex at %d", m.id, i);
    }
    assert_int_equal(m.id[14], '7');
    assert_non_null(strchr("89ab", m.id[19]));

    /* stamped into the caller's JSON */
    char instant[32];
    fhir_instant_format(m.updated_usec, instant);
    assert_str(jstr(res, "id"), m.id);
    assert_str(jstr(res, "meta.versionId"), "1");
    assert_str(jstr(res, "meta.lastUpdated"), instant);
    assert_int_equal(json_array_size(json_object_get(json_object_get(res, "meta"), "profile")), 1);
    json_decref(res);

    /* and into the stored body, which starts resourceType, id, meta */
    buf b = {0};
    store_meta rm;
    assert_status(store_read(f->s, "Patient", m.id, 0, &b, &rm, &f->e), ST_OK);
    char prefix[80];
    snprintf(prefix, sizeof prefix, "{\"resourceType\":\"Patient\",\"id\":\"%s\",\"meta\":{", m.id);
    if (strncmp(b.p, prefix, strlen(prefix)) != 0) fail_msg("body does not start %s: %s", prefix, b.p);
    json_t *j = J(b.p);
    buf_free(&b);
    assert_str(jstr(j, "id"), m.id);
    assert_str(jstr(j, "meta.versionId"), "1");
    assert_str(jstr(j, "meta.lastUpdated"), instant);
    assert_str(jstr(j, "gender"), "female");
    json_decref(j);
    assert_int_equal(rm.version, 1);
    assert_int_equal(rm.updated_usec, m.updated_usec);
    assert_int_equal(rm.deleted, 0);

    /* a second create gets another id */
    store_meta m2;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", NULL, 0, 0, &m2, &created), ST_OK);
    assert_int_equal(created, 1);
    assert_true(strcmp(m.id, m2.id) != 0);

    /* what store_put refuses */
    assert_status(put_ex(f, "{\"resourceType\":\"NoSuchType\"}", "x", 0, 0, NULL, NULL), ST_INVALID);
    assert_status(put_ex(f, "{\"name\":[]}", "x", 0, 0, NULL, NULL), ST_INVALID);
}

/* FHIR ids are at most 64 characters, and store_put says so in its error
 * ("id is longer than 64 characters"): 64 is stored, 65 is refused. */
static void test_put_id_length_limit(void **state) {
    fx *f = *state;
    char id[80];
    memset(id, 'a', 64);
    id[64] = 0;
    store_meta m;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", id, 0, 0, &m, NULL), ST_OK);
    assert_str(m.id, id);
    id[64] = 'b';
    id[65] = 0;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", id, 0, 0, &m, NULL), ST_INVALID);
}

static void test_update_keeps_history(void **state) {
    fx *f = *state;
    store_meta m1, m2;
    int created = -1;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"Before\"}]}", "u1", 0, 0,
                         &m1, &created),
                  ST_OK);
    assert_int_equal(created, 1);
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"After\"}]}", "u1", 0, 0,
                         &m2, &created),
                  ST_OK);
    assert_int_equal(created, 0);
    assert_int_equal(m2.version, 2);
    assert_str(m2.id, "u1");
    assert_true(m2.updated_usec > m1.updated_usec);

    store_meta m;
    json_t *cur = read_json(f, "Patient", "u1", 0, &m);
    assert_int_equal(m.version, 2);
    assert_str(json_string_value(json_object_get(json_array_get(json_object_get(cur, "name"), 0), "family")),
               "After");
    assert_str(jstr(cur, "meta.versionId"), "2");
    json_decref(cur);

    json_t *v1 = read_json(f, "Patient", "u1", 1, &m);
    assert_int_equal(m.version, 1);
    assert_int_equal(m.updated_usec, m1.updated_usec);
    assert_str(json_string_value(json_object_get(json_array_get(json_object_get(v1, "name"), 0), "family")),
               "Before");
    assert_str(jstr(v1, "meta.versionId"), "1");
    json_decref(v1);

    json_t *v2 = read_json(f, "Patient", "u1", 2, &m);
    assert_int_equal(m.version, 2);
    json_decref(v2);

    buf b = {0};
    assert_status(store_read(f->s, "Patient", "u1", 3, &b, &m, &f->e), ST_NOT_FOUND);
    assert_status(store_read(f->s, "Patient", "nope", 0, &b, &m, &f->e), ST_NOT_FOUND);
    buf_free(&b);

    /* history: newest first */
    store_items it = {0};
    assert_status(store_history(f->s, "Patient", "u1", 0, 100, 0, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 2);
    assert_int_equal(it.v[0].meta.version, 2);
    assert_int_equal(it.v[1].meta.version, 1);
    assert_non_null(strstr(it.v[1].body, "Before"));
    store_items_free(&it);
    /* the search index describes the current version only */
    expect_set(f, "Patient", "family=after", "Patient/u1");
    expect_set(f, "Patient", "family=before", "");
    finish(f);
}

static void test_history_levels(void **state) {
    fx *f = *state;
    store_meta a1, b1, a2;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", "a", 0, 0, &a1, NULL), ST_OK);
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", "b", 0, 0, &b1, NULL), ST_OK);
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"active\":true}", "a", 0, 0, &a2, NULL), ST_OK);
    put_ok(f, "o", "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"}}");

    store_items it = {0};
    char got[1024];
    /* type level: every version of every Patient, newest first */
    assert_status(store_history(f->s, "Patient", NULL, 0, 100, 0, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 3);
    assert_str(it.v[0].meta.id, "a");
    assert_int_equal(it.v[0].meta.version, 2);
    assert_str(it.v[1].meta.id, "b");
    assert_str(it.v[2].meta.id, "a");
    assert_int_equal(it.v[2].meta.version, 1);
    store_items_free(&it);
    /* since: from b's write on */
    assert_status(store_history(f->s, "Patient", NULL, b1.updated_usec, 100, 0, &it, &f->e), ST_OK);
    describe(&it, 1, got, sizeof got);
    assert_str(got, "Patient/a Patient/b");
    store_items_free(&it);
    /* paging */
    assert_status(store_history(f->s, "Patient", NULL, 0, 1, 1, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 1);
    assert_str(it.v[0].meta.id, "b");
    store_items_free(&it);
    /* server level */
    assert_status(store_history(f->s, NULL, NULL, 0, 100, 0, &it, &f->e), ST_OK);
    describe(&it, 1, got, sizeof got);
    assert_str(got, "Observation/o Patient/a Patient/b Patient/a");
    store_items_free(&it);
    /* instance paging */
    assert_status(store_history(f->s, "Patient", "a", 0, 1, 1, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 1);
    assert_int_equal(it.v[0].meta.version, 1);
    store_items_free(&it);
    /* of nothing */
    assert_status(store_history(f->s, "Patient", "nope", 0, 100, 0, &it, &f->e), ST_NOT_FOUND);
    store_items_free(&it);
}

static void test_if_match(void **state) {
    fx *f = *state;
    put_ok(f, "m1", "{\"resourceType\":\"Patient\",\"gender\":\"male\"}");
    put_ok(f, "m1", "{\"resourceType\":\"Patient\",\"gender\":\"female\"}");

    store_meta m;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"gender\":\"other\"}", "m1", 1, 0, &m, NULL),
                  ST_PRECONDITION);
    /* nothing written */
    json_t *j = read_json(f, "Patient", "m1", 0, &m);
    assert_int_equal(m.version, 2);
    assert_str(jstr(j, "gender"), "female");
    json_decref(j);
    assert_int_equal(history_count(f, "Patient", "m1"), 2);
    expect_set(f, "Patient", "gender=other", "");

    /* the right version goes through */
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"gender\":\"other\"}", "m1", 2, 0, &m, NULL),
                  ST_OK);
    assert_int_equal(m.version, 3);
    expect_set(f, "Patient", "gender=other", "Patient/m1");

    /* If-Match on a resource that does not exist, or was deleted */
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", "never", 1, 0, &m, NULL), ST_PRECONDITION);
    buf b = {0};
    assert_status(store_read(f->s, "Patient", "never", 0, &b, &m, &f->e), ST_NOT_FOUND);
    buf_free(&b);
    del_ok(f, "Patient", "m1");
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", "m1", 4, 0, &m, NULL), ST_PRECONDITION);
    assert_int_equal(history_count(f, "Patient", "m1"), 4);
    finish(f);
}

static void test_create_only(void **state) {
    fx *f = *state;
    store_meta m;
    int created = -1;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"gender\":\"male\"}", "c1", 0, 1, &m, &created),
                  ST_OK);
    assert_int_equal(created, 1);
    assert_int_equal(m.version, 1);
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"gender\":\"female\"}", "c1", 0, 1, &m, &created),
                  ST_CONFLICT);
    assert_int_equal(f->e.code, ST_CONFLICT);
    json_t *j = read_json(f, "Patient", "c1", 0, &m);
    assert_int_equal(m.version, 1);
    assert_str(jstr(j, "gender"), "male");
    json_decref(j);
    assert_int_equal(history_count(f, "Patient", "c1"), 1);
    /* the same id of another type is another resource */
    assert_status(put_ex(f, "{\"resourceType\":\"Organization\"}", "c1", 0, 1, &m, &created), ST_OK);
    assert_int_equal(created, 1);
    /* after a delete, create-only may revive the id */
    del_ok(f, "Patient", "c1");
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"gender\":\"other\"}", "c1", 0, 1, &m, &created),
                  ST_OK);
    assert_int_equal(created, 1);
    assert_int_equal(m.version, 3);
}

static void test_delete_and_recreate(void **state) {
    fx *f = *state;
    put_ok(f, "d1", "{\"resourceType\":\"Patient\",\"gender\":\"male\"}");
    put_ok(f, "d1", "{\"resourceType\":\"Patient\",\"gender\":\"female\"}");
    store_meta dm;
    assert_status(del_ex(f, "Patient", "d1", &dm), ST_OK);
    assert_int_equal(dm.version, 3);
    assert_int_equal(dm.deleted, 1);
    assert_str(dm.id, "d1");

    buf b = {0};
    store_meta m;
    assert_status(store_read(f->s, "Patient", "d1", 0, &b, &m, &f->e), ST_GONE);
    assert_int_equal(m.deleted, 1);
    assert_int_equal(m.version, 3);
    assert_status(store_read(f->s, "Patient", "d1", 3, &b, &m, &f->e), ST_GONE);
    buf_reset(&b);
    assert_status(store_read(f->s, "Patient", "d1", 2, &b, &m, &f->e),
                  ST_OK); /* older versions stay readable */
    assert_non_null(strstr(b.p, "female"));
    buf_free(&b);

    store_items it = {0};
    assert_status(store_history(f->s, "Patient", "d1", 0, 100, 0, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 3);
    assert_int_equal(it.v[0].meta.version, 3);
    assert_int_equal(it.v[0].meta.deleted, 1);
    assert_null(it.v[0].body);
    assert_int_equal(it.v[1].meta.version, 2);
    assert_int_equal(it.v[1].meta.deleted, 0);
    assert_non_null(it.v[1].body);
    assert_int_equal(it.v[2].meta.version, 1);
    assert_true(it.v[0].meta.updated_usec > it.v[1].meta.updated_usec);
    assert_true(it.v[1].meta.updated_usec > it.v[2].meta.updated_usec);
    store_items_free(&it);

    /* gone from search */
    expect_set(f, "Patient", "gender=female", "");
    expect_set(f, "Patient", "_id=d1", "");

    /* deleting again, or deleting what never was: success, nothing written */
    assert_status(del_ex(f, "Patient", "d1", &dm), ST_OK);
    assert_int_equal(dm.version, 0);
    assert_status(del_ex(f, "Patient", "never", &dm), ST_OK);
    assert_int_equal(dm.version, 0);
    assert_int_equal(history_count(f, "Patient", "d1"), 3);

    /* re-create */
    int created = -1;
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\",\"gender\":\"other\"}", "d1", 0, 0, &m, &created),
                  ST_OK);
    assert_int_equal(created, 1);
    assert_int_equal(m.version, 4);
    json_t *j = read_json(f, "Patient", "d1", 0, &m);
    assert_str(jstr(j, "meta.versionId"), "4");
    json_decref(j);
    assert_int_equal(history_count(f, "Patient", "d1"), 4);
    expect_set(f, "Patient", "gender=other", "Patient/d1");
    finish(f);
}

/* ======================================================= transactions */

static void test_rollback_leaves_nothing(void **state) {
    fx *f = *state;
    json_t *p = J("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"Ghost\"}]}");
    json_t *o = J("{\"resourceType\":\"Observation\",\"status\":\"final\","
                  "\"code\":{\"coding\":[{\"system\":\"urn:t\",\"code\":\"rb-1\"}]},"
                  "\"subject\":{\"reference\":\"Patient/px\"}}");
    store_meta m;
    int created;
    assert_status(store_begin(f->s, &f->tx, &f->e), ST_OK);
    assert_status(store_put(f->tx, p, "px", 0, 0, &m, &created, NULL, &f->e), ST_OK);
    assert_status(store_put(f->tx, o, "ox", 0, 0, &m, &created, NULL, &f->e), ST_OK);
    store_rollback(f->tx);
    f->tx = NULL;
    json_decref(p);
    json_decref(o);

    buf b = {0};
    assert_status(store_read(f->s, "Patient", "px", 0, &b, &m, &f->e), ST_NOT_FOUND);
    assert_status(store_read(f->s, "Observation", "ox", 0, &b, &m, &f->e), ST_NOT_FOUND);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    store_items it = {0};
    assert_status(store_history(f->s, "Patient", "px", 0, 100, 0, &it, &f->e), ST_NOT_FOUND);
    store_items_free(&it);
    assert_status(store_history(f->s, NULL, NULL, 0, 100, 0, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 0);
    store_items_free(&it);
    store_count *c = NULL;
    size_t nc = 99;
    assert_status(store_counts(f->s, &c, &nc, &f->e), ST_OK);
    assert_int_equal(nc, 0);
    free(c);

    expect_set(f, "Observation", "code=rb-1", "");
    expect_set(f, "Observation", "patient=px", "");
    expect_set(f, "Observation", "subject=Patient/px", "");
    expect_set(f, "Patient", "family=ghost", "");
    /* a resource written afterwards may reuse the rolled-back row's key:
     * no index row of the rolled-back write may attach to it */
    put_ok(f, "other", "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"}}");
    put_ok(f, "pz", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"Real\"}]}");
    expect_set(f, "Observation", "code=rb-1", "");
    expect_set(f, "Observation", "subject=Patient/px", "");
    expect_set(f, "Patient", "family=ghost", "");
    expect_set(f, "Patient", "family=real", "Patient/pz");
    finish(f);
}

typedef struct probe {
    store *s;
    int n_code, n_patient; /* results seen by another connection */
    status read_rc, search_rc;
    char msg[320];
} probe;

/* Another thread (so another connection) looks for the test resource. */
static void *probe_main(void *arg) {
    probe *p = arg;
    err e = {0};
    arena a = {0};
    search_param_kv *kv;
    search_query q;
    store_items it = {0};
    buf b = {0};
    store_meta m;
    p->read_rc = store_read(p->s, "Observation", "tx1", 0, &b, &m, &e);
    buf_free(&b);
    const char *qs[2] = {"code=urn:t|tx-1", "patient=ptx"};
    int *counts[2] = {&p->n_code, &p->n_patient};
    p->search_rc = ST_OK;
    for (int i = 0; i < 2 && p->search_rc == ST_OK; i++) {
        int n = search_split_query(&a, qs[i], strlen(qs[i]), &kv);
        p->search_rc = search_parse(&a, "Observation", kv, n, 0, &q, &e);
        if (p->search_rc == ST_OK) p->search_rc = store_search(p->s, &q, &it, &e);
        *counts[i] = (int)it.n;
        store_items_free(&it);
    }
    snprintf(p->msg, sizeof p->msg, "%s", e.msg);
    arena_free(&a);
    return NULL;
}

static probe run_probe(fx *f) {
    probe p = {.s = f->s, .n_code = -1, .n_patient = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, probe_main, &p), 0);
    pthread_join(t, NULL);
    return p;
}

static void test_index_written_in_the_transaction(void **state) {
    fx *f = *state;
    put_ok(f, "ptx", "{\"resourceType\":\"Patient\"}");
    json_t *o = J("{\"resourceType\":\"Observation\",\"status\":\"final\","
                  "\"code\":{\"coding\":[{\"system\":\"urn:t\",\"code\":\"tx-1\"}]},"
                  "\"subject\":{\"reference\":\"Patient/ptx\"}}");
    store_meta m;
    int created;
    assert_status(store_begin(f->s, &f->tx, &f->e), ST_OK);
    assert_status(store_put(f->tx, o, "tx1", 0, 0, &m, &created, NULL, &f->e), ST_OK);
    json_decref(o);

    /* the transaction sees its own resource, through the index */
    store_items it;
    char got[512];
    assert_status(run_search(f, f->tx, "Observation", "code=urn:t|tx-1", &it), ST_OK);
    describe(&it, 0, got, sizeof got);
    store_items_free(&it);
    assert_str(got, "Observation/tx1");
    assert_status(run_search(f, f->tx, "Observation", "patient=ptx", &it), ST_OK);
    describe(&it, 0, got, sizeof got);
    store_items_free(&it);
    assert_str(got, "Observation/tx1");
    buf b = {0};
    assert_status(store_txn_read(f->tx, "Observation", "tx1", &b, &m, &f->e), ST_OK);
    assert_int_equal(m.version, 1);
    buf_free(&b);

    /* another connection does not, until commit */
    probe p = run_probe(f);
    if (p.search_rc != ST_OK) fail_msg("[%s] probe search: %s", backend(f), p.msg);
    assert_int_equal(p.read_rc, ST_NOT_FOUND);
    assert_int_equal(p.n_code, 0);
    assert_int_equal(p.n_patient, 0);

    assert_status(store_commit(f->tx, &f->e), ST_OK);
    f->tx = NULL;
    p = run_probe(f);
    if (p.search_rc != ST_OK) fail_msg("[%s] probe search: %s", backend(f), p.msg);
    assert_int_equal(p.read_rc, ST_OK);
    assert_int_equal(p.n_code, 1);
    assert_int_equal(p.n_patient, 1);
}

/* ================================================ patient key, $everything */

static void test_patient_key_fast_path(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Observation", "patient=p1", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "patient=Patient/p1", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "patient=p2", "Observation/o3 Observation/o5");
    expect_set(f, "Observation", "patient=p3", "");
    expect_set(f, "Observation", "patient=nobody", "");
    expect_set(f, "Observation", "patient=g1", ""); /* o4's subject is a Group */
    expect_set(f, "Observation", "subject=Patient/p1", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "subject:Patient=p1", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "patient=p1&code=29463-7", "Observation/o2");
    expect_set(f, "Observation", "patient=p1&code=http://loinc.org|8867-4&date=ge2024-01-01",
               "Observation/o1");
    expect_set(f, "Observation", "patient=p1,p2",
               "Observation/o1 Observation/o2 Observation/o3 Observation/o5");
    /* the patient's list with other clauses: tested inside it (code, status,
     * :not, :missing) or against the resource itself (_id, _lastUpdated) */
    expect_set(f, "Observation", "patient=p1&status=final", "Observation/o1");
    expect_set(f, "Observation", "patient=p1&code:not=29463-7", "Observation/o1");
    expect_set(f, "Observation", "patient=p1&code:missing=true", "");
    expect_set(f, "Observation", "patient=p1&_id=o2", "Observation/o2");
    expect_set(f, "Observation", "patient=p1&_id=o3", "");
    expect_set(f, "Observation", "patient=p1&_lastUpdated=gt2000-01-01", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "patient=p1&_lastUpdated=lt2000-01-01", "");
    /* no patient: the narrowest clause lists, the others test its rows */
    expect_set(f, "Observation", "code=8867-4&status=final&_id=o1,o3,o4",
               "Observation/o1 Observation/o3 Observation/o4");
    expect_set(f, "Observation", "code=8867-4&status=preliminary", "");
    expect_set(f, "RiskAssessment", "patient=p1", "RiskAssessment/r1");
    expect_page(f, "Observation", "patient=nobody&_summary=count", "", 0, 0);
    expect_page(f, "Observation", "patient=p2&_summary=count", "", 0, 2);

    /* the Observation moves to another patient: the key moves with it */
    put_ok(f, "o2",
           "{\"resourceType\":\"Observation\",\"status\":\"preliminary\","
           "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"29463-7\"}]},"
           "\"subject\":{\"reference\":\"Patient/p2\"}}");
    expect_set(f, "Observation", "patient=p1", "Observation/o1");
    expect_set(f, "Observation", "patient=p2", "Observation/o2 Observation/o3 Observation/o5");
    expect_set(f, "Observation", "subject=Patient/p1", "Observation/o1");
    /* ... and to no patient at all */
    put_ok(f, "o1",
           "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
           "\"subject\":{\"reference\":\"Group/g1\"}}");
    expect_set(f, "Observation", "patient=p1", "");
    expect_set(f, "Observation", "subject=Group/g1", "Observation/o1 Observation/o4");
    finish(f);
}

static void expect_everything(fx *f, const char *patient, status want_rc, const char *want, int line) {
    store_items it = {0};
    status rc = store_everything(f->s, patient, &it, &f->e);
    char got[4096] = "", exp[4096];
    if (rc == ST_OK) describe(&it, 1, got, sizeof got);
    store_items_free(&it);
    normalise(want, 1, exp, sizeof exp);
    if (rc != want_rc || (rc == ST_OK && strcmp(got, exp) != 0)) {
        print_error("[%s] line %d: Patient/%s/$everything\n    expected: %s {%s}\n    got:      %s {%s} %s\n",
                    backend(f), line, patient, status_name(want_rc), exp, status_name(rc), got,
                    rc == ST_OK ? "" : f->e.msg);
        f->mismatches++;
    }
}

static void test_everything(void **state) {
    fx *f = *state;
    seed(f);
    /* the patient, their compartment (by type, then age), then what those
     * refer to outside any compartment; never the Group's Observation o4 */
    expect_everything(f, "p1", ST_OK,
                      "Patient/p1 Observation/o1 Observation/o2 RiskAssessment/r1 +Organization/org1",
                      __LINE__);
    expect_everything(f, "p2", ST_OK,
                      "Patient/p2 Observation/o3 Observation/o5 RiskAssessment/r2 +Organization/org1",
                      __LINE__);
    expect_everything(f, "p3", ST_OK, "Patient/p3", __LINE__);
    expect_everything(f, "nobody", ST_NOT_FOUND, "", __LINE__);
    /* deleted resources are not part of it */
    del_ok(f, "Observation", "o2");
    del_ok(f, "Organization", "org1");
    expect_everything(f, "p1", ST_OK, "Patient/p1 Observation/o1 RiskAssessment/r1", __LINE__);
    del_ok(f, "Patient", "p3");
    expect_everything(f, "p3", ST_GONE, "", __LINE__);
    finish(f);
}

static void test_counts_and_size(void **state) {
    fx *f = *state;
    seed(f);
    store_count *c = NULL;
    size_t n = 0;
    assert_status(store_counts(f->s, &c, &n, &f->e), ST_OK);
    static const struct {
        const char *type;
        int64_t count;
    } want[] = {{"Group", 1}, {"Observation", 5}, {"Organization", 1}, {"Patient", 3}, {"RiskAssessment", 2}};
    assert_int_equal(n, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_str(c[i].type, want[i].type);
        assert_int_equal(c[i].count, want[i].count);
    }
    free(c);
    del_ok(f, "Observation", "o5");
    del_ok(f, "Group", "g1");
    put_ok(f, "o1", "{\"resourceType\":\"Observation\",\"status\":\"amended\",\"code\":{\"text\":\"x\"}}");
    assert_status(store_counts(f->s, &c, &n, &f->e), ST_OK);
    assert_int_equal(n, 4);
    assert_str(c[0].type, "Observation");
    assert_int_equal(c[0].count, 4);
    free(c);

    int64_t bytes = -1;
    assert_status(store_size(f->s, &bytes, &f->e), ST_OK);
    assert_true(bytes > 0);
}

/* SQLite: the planner's statistics follow the data. The writer refreshes
 * them every STORE_MAINTENANCE_COMMITS commits of any kind; when only
 * sign-in bookkeeping counted, a loaded database kept the statistics of an
 * empty one and searched Patient?identifier by scanning every Patient. */
static void test_planner_statistics_follow_the_data(void **state) {
    fx *f = *state;
    if (f->pg) return; /* PostgreSQL's autovacuum analyses by itself */
    for (int i = 0; i < STORE_MAINTENANCE_COMMITS + 2; i++) {
        char id[32], text[160];
        snprintf(id, sizeof id, "stat%d", i);
        snprintf(text, sizeof text,
                 "{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:x\",\"value\":\"v%d\"}]}",
                 i);
        put_ok(f, id, text);
    }
    err e;
    db *d = store_db(f->s, &e);
    assert_non_null(d);
    db_stmt *st = NULL;
    assert_status(
        f->s->drv->prepare(d, "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'resource'", 0, &st, &e), ST_OK);
    assert_int_equal(f->s->drv->step(st, &e), 1);
    int64_t rows = f->s->drv->col_int(st, 0);
    f->s->drv->done(st);
    assert_true(rows >= 1);
}

/* ======================================================== search semantics */

static void test_search_token(void **state) {
    fx *f = *state;
    seed(f);
    const char *all = "Observation/o1 Observation/o2 Observation/o3 Observation/o4 Observation/o5";
    expect_set(f, "Observation", "code=8867-4",
               "Observation/o1 Observation/o3 Observation/o4 Observation/o5");
    expect_set(f, "Observation", "code=http://loinc.org|8867-4",
               "Observation/o1 Observation/o3 Observation/o4");
    expect_set(f, "Observation", "code=http://other.org|", "Observation/o5");
    expect_set(f, "Observation", "code=|8867-4", "");
    expect_set(f, "Observation", "code=8867-4,29463-7", all);
    expect_set(f, "Observation", "code=http://loinc.org|29463-7,http://other.org|8867-4",
               "Observation/o2 Observation/o5");
    expect_set(f, "Observation", "code:not=8867-4", "Observation/o2");
    expect_set(f, "Observation", "code:not=http://loinc.org|8867-4", "Observation/o2 Observation/o5");
    expect_set(f, "Observation", "status=final",
               "Observation/o1 Observation/o3 Observation/o4 Observation/o5");
    expect_set(f, "Observation", "status=final&code=29463-7", "");
    expect_set(f, "Observation", "status=final&code=8867-4&code=http://loinc.org|",
               "Observation/o1 Observation/o3 Observation/o4");
    expect_set(f, "Observation", "code=8867", "");    /* tokens match whole codes */
    expect_set(f, "Observation", "status=FINAL", ""); /* and are case-sensitive for code */
    expect_set(f, "Patient", "gender=male", "Patient/p1");
    expect_set(f, "Patient", "gender=male,female", "Patient/p1 Patient/p2");
    /* :not includes resources with no value at all (p3 has no gender) */
    expect_set(f, "Patient", "gender:not=male", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "identifier=urn:mrn|111", "Patient/p1");
    expect_set(f, "Patient", "identifier=111", "Patient/p1");
    expect_set(f, "Patient", "identifier=|333", "Patient/p3");
    expect_set(f, "Patient", "identifier=333", "Patient/p3");
    expect_set(f, "Patient", "identifier=urn:mrn|333", "");
    expect_set(f, "Patient", "identifier=urn:mrn|", "Patient/p1 Patient/p2");
    expect_set(f, "Patient", "active=true", "Patient/p1");
    expect_set(f, "Organization", "active=true", "Organization/org1");
    finish(f);
}

static void test_search_string(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Patient", "family=chal", "Patient/p1");
    expect_set(f, "Patient", "family=CHALMERS", "Patient/p1");
    expect_set(f, "Patient", "family=hal", "");          /* starts-with, not contains */
    expect_set(f, "Patient", "given=zoe", "Patient/p2"); /* accents folded */
    expect_set(f, "Patient", "given=Zo%C3%AB", "Patient/p2");
    expect_set(f, "Patient", "name=peter", "Patient/p1");
    expect_set(f, "Patient", "name=james", "Patient/p1");
    expect_set(f, "Patient", "name=windsor", "Patient/p2");
    expect_set(f, "Patient", "name=windsor,sean", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "name=peter&name=chalmers", "Patient/p1");
    expect_set(f, "Patient", "name=peter&name=windsor", "");
    expect_set(f, "Patient", "family:exact=Chalmers", "Patient/p1");
    expect_set(f, "Patient", "family:exact=chalmers", "");
    expect_set(f, "Patient", "family:exact=Chal", "");
    expect_set(f, "Patient", "given:exact=Zoe", "");
    expect_set(f, "Patient", "given:exact=Zo%C3%AB", "Patient/p2");
    expect_set(f, "Patient", "family:contains=ALM", "Patient/p1");
    expect_set(f, "Patient", "family:contains=s", "Patient/p1 Patient/p2");
    expect_set(f, "Patient", "family:contains=brie", "Patient/p3");
    /* LIKE wildcards in the value are literal characters */
    expect_set(f, "Patient", "name:contains=_", "Patient/p3");
    expect_set(f, "Patient", "name:contains=%25", "");
    expect_set(f, "Patient", "family=o_", "Patient/p3");
    expect_set(f, "Patient", "family=o%25", "");
    expect_set(f, "Organization", "name=good+health", "Organization/org1");
    finish(f);
}

static void test_search_date(void **state) {
    fx *f = *state;
    seed(f);
    /* birthDate: p1 1974-12-25, p2 1980-03 (the whole month), p3 2001-07-14 */
    expect_set(f, "Patient", "birthdate=1974", "Patient/p1");
    expect_set(f, "Patient", "birthdate=1974-12-25", "Patient/p1");
    expect_set(f, "Patient", "birthdate=1974-12-24", "");
    expect_set(f, "Patient", "birthdate=1980", "Patient/p2");
    expect_set(f, "Patient", "birthdate=1980-03", "Patient/p2");
    expect_set(f, "Patient", "birthdate=eq1980-03-15", ""); /* the month is not within the day */
    expect_set(f, "Patient", "birthdate=ap1980-03-15", "Patient/p2");
    expect_set(f, "Patient", "birthdate=lt1980", "Patient/p1");
    expect_set(f, "Patient", "birthdate=lt1980-03-15", "Patient/p1 Patient/p2");
    expect_set(f, "Patient", "birthdate=le1974-12-25", "Patient/p1");
    expect_set(f, "Patient", "birthdate=gt1980-03-15", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "birthdate=ge1980-03-15", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "birthdate=gt1980-03", "Patient/p3");
    expect_set(f, "Patient", "birthdate=sa1980", "Patient/p3");
    expect_set(f, "Patient", "birthdate=eb1980", "Patient/p1");
    expect_set(f, "Patient", "birthdate=ne1974-12-25", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "birthdate=1974,2001", "Patient/p1 Patient/p3");
    expect_set(f, "Patient", "birthdate=ge1970&birthdate=lt1990", "Patient/p1 Patient/p2");
    /* Observation.effective */
    expect_set(f, "Observation", "date=2024-03-05", "Observation/o1 Observation/o4");
    expect_set(f, "Observation", "date=2024", "Observation/o1 Observation/o2 Observation/o4");
    expect_set(f, "Observation", "date=ge2024-04", "Observation/o2");
    expect_set(f, "Observation", "date=lt2024", "Observation/o3 Observation/o5");
    expect_set(f, "Observation", "date=sa2023-12-31", "Observation/o1 Observation/o2 Observation/o4");
    expect_set(f, "Observation", "date=eb2024-03-05", "Observation/o3 Observation/o5");
    expect_set(f, "Observation", "date=2023-12-31T23:00:00Z", "Observation/o3");
    expect_set(f, "Observation", "date=2024-01-01T00:00:00%2B01:00",
               "Observation/o3"); /* = 2023-12-31T23:00Z */
    expect_set(f, "Observation", "date=gt2024-03-05T10:00:00Z", "Observation/o2 Observation/o4");
    expect_set(f, "Observation", "date=ge2024-03-05T10:00:00Z",
               "Observation/o1 Observation/o2 Observation/o4");
    expect_set(f, "Observation", "date=2024-03-05T10:00", "Observation/o1");
    finish(f);
}

static void test_search_number(void **state) {
    fx *f = *state;
    seed(f);
    /* r1 0.8, r2 0.25 */
    expect_set(f, "RiskAssessment", "probability=0.8", "RiskAssessment/r1");
    expect_set(f, "RiskAssessment", "probability=0.80", "RiskAssessment/r1");
    expect_set(f, "RiskAssessment", "probability=0.81", "");                 /* [0.805, 0.815) */
    expect_set(f, "RiskAssessment", "probability=0.3", "RiskAssessment/r2"); /* [0.25, 0.35) */
    expect_set(f, "RiskAssessment", "probability=0.25", "RiskAssessment/r2");
    expect_set(f, "RiskAssessment", "probability=0.7", "");
    expect_set(f, "RiskAssessment", "probability=1", "RiskAssessment/r1"); /* [0.5, 1.5) */
    expect_set(f, "RiskAssessment", "probability=gt0.5", "RiskAssessment/r1");
    expect_set(f, "RiskAssessment", "probability=lt0.5", "RiskAssessment/r2");
    expect_set(f, "RiskAssessment", "probability=ge0.8", "RiskAssessment/r1");
    expect_set(f, "RiskAssessment", "probability=le0.25", "RiskAssessment/r2");
    expect_set(f, "RiskAssessment", "probability=ne0.8", "RiskAssessment/r2");
    expect_set(f, "RiskAssessment", "probability=0.8,0.25", "RiskAssessment/r1 RiskAssessment/r2");
    expect_set(f, "RiskAssessment", "probability=gt0.1&probability=lt0.5", "RiskAssessment/r2");
    finish(f);
}

static void test_search_quantity(void **state) {
    fx *f = *state;
    seed(f);
    /* o1 72 /min, o2 80.5 kg, o3 100 /min, o4 64 /min, o5 5.4 mg */
    expect_set(f, "Observation", "value-quantity=72", "Observation/o1");
    expect_set(f, "Observation", "value-quantity=72|http://unitsofmeasure.org|/min", "Observation/o1");
    expect_set(f, "Observation", "value-quantity=72||/min", "Observation/o1");
    expect_set(f, "Observation", "value-quantity=72||kg", "");
    expect_set(f, "Observation", "value-quantity=72|http://other.org|/min", "");
    expect_set(f, "Observation", "value-quantity=80.5", "Observation/o2");
    expect_set(f, "Observation", "value-quantity=80", "");
    expect_set(f, "Observation", "value-quantity=gt75", "Observation/o2 Observation/o3");
    expect_set(f, "Observation", "value-quantity=le64", "Observation/o4 Observation/o5");
    expect_set(f, "Observation", "value-quantity=lt70||/min", "Observation/o4");
    expect_set(f, "Observation", "value-quantity=ap100", "Observation/o3");
    expect_set(f, "Observation", "value-quantity=5.4||mg", "Observation/o5");
    expect_set(f, "Observation", "value-quantity=ge60||/min&value-quantity=le80||/min",
               "Observation/o1 Observation/o4");
    finish(f);
}

static void test_search_reference(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Observation", "subject=Patient/p1", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "subject=p1", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "subject=Group/g1", "Observation/o4");
    expect_set(f, "Observation", "subject:Group=g1", "Observation/o4");
    expect_set(f, "Observation", "subject=Group/p1", "");
    expect_set(f, "Observation", "subject=Patient/p1,Group/g1",
               "Observation/o1 Observation/o2 Observation/o4");
    expect_set(f, "Observation", "performer=Organization/org1", "Observation/o3");
    expect_set(f, "Observation", "performer=org1", "Observation/o3");
    expect_set(f, "Observation", "subject=Patient/p1/_history/1", "Observation/o1 Observation/o2");
    expect_set(f, "Patient", "organization=org1", "Patient/p1");
    expect_set(f, "Patient", "organization=Organization/org1", "Patient/p1");
    expect_set(f, "RiskAssessment", "subject=Patient/p2", "RiskAssessment/r2");
    finish(f);
}

static void test_search_id_and_lastupdated(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Patient", "_id=p1", "Patient/p1");
    expect_set(f, "Patient", "_id=p1,p3", "Patient/p1 Patient/p3");
    expect_set(f, "Patient", "_id=nope", "");
    expect_set(f, "Patient", "_id=o1", ""); /* another type's id */
    expect_set(f, "Patient", "_id=p1,p2&gender=female", "Patient/p2");
    expect_set(f, "Patient", "_lastUpdated=gt2000-01-01", "Patient/p1 Patient/p2 Patient/p3");
    expect_set(f, "Patient", "_lastUpdated=lt2000-01-01", "");
    expect_set(f, "Patient", "_lastUpdated=sa9999", "");

    /* second precision: p3 rewritten at least a second after everything else */
    store_meta m;
    buf b = {0};
    assert_status(store_read(f->s, "Patient", "p2", 0, &b, &m, &f->e), ST_OK);
    buf_free(&b);
    int64_t p2_second = m.updated_usec / 1000000;
    while (fhir_now_usec() / 1000000 <= p2_second)
        usleep(20000);
    put_ok(f, "p3", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"O_Brien\"}]}");
    char instant[32], qs[96];
    fhir_instant_format(p2_second * 1000000, instant);
    instant[19] = 0; /* YYYY-MM-DDThh:mm:ss */
    snprintf(qs, sizeof qs, "_lastUpdated=gt%sZ", instant);
    expect_set(f, "Patient", qs, "Patient/p3");
    snprintf(qs, sizeof qs, "_lastUpdated=le%sZ", instant);
    expect_set(f, "Patient", qs, "Patient/p1 Patient/p2");
    /* p1 was written just before p2, maybe within the same second */
    assert_status(store_read(f->s, "Patient", "p1", 0, &b, &m, &f->e), ST_OK);
    buf_free(&b);
    snprintf(qs, sizeof qs, "_lastUpdated=ge%sZ&_id=p1,p2,p3", instant);
    expect_set(f, "Patient", qs,
               m.updated_usec / 1000000 == p2_second ? "Patient/p1 Patient/p2 Patient/p3"
                                                     : "Patient/p2 Patient/p3");
    finish(f);
}

/* _id:not — the modifier is accepted by the parser (as for any token
 * parameter); it must then exclude the id, not select it. */
static void test_search_id_not(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Patient", "_id:not=p1", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "_id:not=p1,p2", "Patient/p3");
    finish(f);
}

/* :missing on _id and _lastUpdated: either rejected when parsed (400), or
 * answered correctly — every resource has both, so :missing=true matches
 * nothing and :missing=false everything. Never a database error. */
static void test_search_missing_on_id_and_lastupdated(void **state) {
    fx *f = *state;
    seed(f);
    static const struct {
        const char *qs, *want;
    } cases[] = {
        {"_id:missing=true", ""},
        {"_id:missing=false", "Patient/p1 Patient/p2 Patient/p3"},
        {"_lastUpdated:missing=true", ""},
        {"_lastUpdated:missing=false", "Patient/p1 Patient/p2 Patient/p3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_items it;
        status rc = run_search(f, NULL, "Patient", cases[i].qs, &it);
        char got[512] = "", exp[512];
        if (rc == ST_OK) describe(&it, 0, got, sizeof got);
        store_items_free(&it);
        normalise(cases[i].want, 0, exp, sizeof exp);
        if (rc == ST_INVALID) continue; /* rejected as a bad request: fine */
        if (rc != ST_OK || strcmp(got, exp) != 0) {
            print_error("[%s] Patient?%s\n    expected: {%s} (or a 400)\n    got:      %s {%s} %s\n",
                        backend(f), cases[i].qs, exp, status_name(rc), got, rc == ST_OK ? "" : f->e.msg);
            f->mismatches++;
        }
    }
    finish(f);
}

static void test_search_missing(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Patient", "gender:missing=true", "Patient/p3");
    expect_set(f, "Patient", "gender:missing=false", "Patient/p1 Patient/p2");
    expect_set(f, "Patient", "birthdate:missing=false", "Patient/p1 Patient/p2 Patient/p3");
    expect_set(f, "Patient", "birthdate:missing=true", "");
    expect_set(f, "Patient", "organization:missing=true", "Patient/p2 Patient/p3");
    expect_set(f, "Patient", "family:missing=false&gender:missing=true", "Patient/p3");
    expect_set(f, "Observation", "performer:missing=false", "Observation/o3");
    expect_set(f, "RiskAssessment", "probability:missing=false", "RiskAssessment/r1 RiskAssessment/r2");
    expect_set(f, "Observation", "value-quantity:missing=true", "");
    finish(f);
}

static void test_search_chain(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Observation", "patient.identifier=urn:mrn|111", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "patient.identifier=urn:mrn|999", "");
    expect_set(f, "Observation", "patient.family=windsor", "Observation/o3 Observation/o5");
    expect_set(f, "Observation", "subject:Patient.identifier=urn:mrn|222", "Observation/o3 Observation/o5");
    expect_set(f, "Observation", "subject.gender=male", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "patient.identifier=urn:mrn|111,urn:mrn|222",
               "Observation/o1 Observation/o2 Observation/o3 Observation/o5");
    expect_set(f, "Observation", "patient.identifier=urn:mrn|111&code=29463-7", "Observation/o2");
    expect_set(f, "Observation", "patient.organization.name=good", "Observation/o1 Observation/o2");
    expect_set(f, "Patient", "organization.name=good", "Patient/p1");
    expect_set(f, "RiskAssessment", "subject:Patient.birthdate=lt1980", "RiskAssessment/r1");
    /* a deleted target no longer matches */
    del_ok(f, "Organization", "org1");
    expect_set(f, "Patient", "organization.name=good", "");
    finish(f);
}

static void test_search_sort(void **state) {
    fx *f = *state;
    seed(f);
    expect_seq(f, "Patient", "_sort=birthdate", "Patient/p1 Patient/p2 Patient/p3");
    expect_seq(f, "Patient", "_sort=-birthdate", "Patient/p3 Patient/p2 Patient/p1");
    expect_seq(f, "Patient", "_sort=family", "Patient/p1 Patient/p3 Patient/p2");
    expect_seq(f, "Patient", "_sort=-family", "Patient/p2 Patient/p3 Patient/p1");
    expect_seq(f, "Patient", "_sort=-_id", "Patient/p3 Patient/p2 Patient/p1");
    /* missing values sort last */
    expect_seq(f, "Patient", "_sort=gender,_id", "Patient/p2 Patient/p1 Patient/p3");
    expect_seq(f, "Patient", "_sort=-gender,_id", "Patient/p1 Patient/p2 Patient/p3");
    expect_seq(f, "Observation", "_sort=-date",
               "Observation/o2 Observation/o4 Observation/o1 Observation/o3 Observation/o5");
    expect_seq(f, "Observation", "_sort=date",
               "Observation/o5 Observation/o3 Observation/o1 Observation/o4 Observation/o2");
    expect_seq(f, "Observation", "_sort=value-quantity",
               "Observation/o5 Observation/o4 Observation/o1 Observation/o2 Observation/o3");
    expect_seq(f, "Observation", "_sort=status,-date",
               "Observation/o4 Observation/o1 Observation/o3 Observation/o5 Observation/o2");
    expect_seq(f, "RiskAssessment", "_sort=-probability", "RiskAssessment/r1 RiskAssessment/r2");
    expect_page(f, "Patient", "_sort=-birthdate&_count=1&_offset=1", "Patient/p2", 1, -1);
    expect_seq(f, "Patient", "_sort=_lastUpdated", "Patient/p1 Patient/p2 Patient/p3");
    expect_seq(f, "Patient", "_sort=-_lastUpdated", "Patient/p3 Patient/p2 Patient/p1");
    finish(f);
}

static void test_search_include(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Observation", "_id=o3&_include=Observation:patient", "Observation/o3 +Patient/p2");
    expect_set(f, "Observation", "code=29463-7&_include=Observation:subject", "Observation/o2 +Patient/p1");
    expect_set(f, "Observation", "_id=o3&_include=Observation:performer",
               "Observation/o3 +Organization/org1");
    expect_set(f, "Observation", "_id=o1,o2&_include=Observation:patient",
               "Observation/o1 Observation/o2 +Patient/p1"); /* once */
    expect_set(f, "Observation", "status=final&_include=Observation:subject:Patient",
               "Observation/o1 Observation/o3 Observation/o4 Observation/o5 +Patient/p1 +Patient/p2");
    expect_set(
        f, "Observation", "status=final&_include=Observation:subject",
        "Observation/o1 Observation/o3 Observation/o4 Observation/o5 +Group/g1 +Patient/p1 +Patient/p2");
    expect_set(f, "Observation", "_id=o3&_include=Observation:patient&_include=Observation:performer",
               "Observation/o3 +Organization/org1 +Patient/p2");
    expect_set(f, "Patient", "_id=p1&_include=Patient:organization", "Patient/p1 +Organization/org1");
    expect_set(f, "Patient", "_id=p2&_include=Patient:organization", "Patient/p2");
    expect_set(f, "Observation", "_id=nope&_include=Observation:patient", "");
    /* the count is of matches only */
    expect_page(f, "Observation", "_id=o1,o2&_include=Observation:patient&_total=accurate",
                "Observation/o1 Observation/o2 +Patient/p1", 0, 2);
    /* a deleted target is not included */
    del_ok(f, "Organization", "org1");
    expect_set(f, "Patient", "_id=p1&_include=Patient:organization", "Patient/p1");
    finish(f);
}

static void test_search_revinclude(void **state) {
    fx *f = *state;
    seed(f);
    expect_set(f, "Patient", "_id=p1&_revinclude=Observation:patient",
               "Patient/p1 +Observation/o1 +Observation/o2");
    expect_set(f, "Patient", "_id=p1,p2&_revinclude=Observation:subject&_revinclude=RiskAssessment:subject",
               "Patient/p1 Patient/p2 +Observation/o1 +Observation/o2 +Observation/o3 +Observation/o5 "
               "+RiskAssessment/r1 +RiskAssessment/r2");
    expect_set(f, "Organization",
               "_id=org1&_revinclude=Patient:organization&_revinclude=Observation:performer",
               "Organization/org1 +Observation/o3 +Patient/p1");
    expect_set(f, "Group", "_id=g1&_revinclude=Observation:subject", "Group/g1 +Observation/o4");
    expect_set(f, "Patient", "_id=p3&_revinclude=Observation:patient", "Patient/p3");
    /* only for the page's matches */
    expect_page(f, "Patient", "_count=1&_revinclude=Observation:patient",
                "Patient/p1 +Observation/o1 +Observation/o2", 1, -1);
    del_ok(f, "Observation", "o1");
    expect_set(f, "Patient", "_id=p1&_revinclude=Observation:patient", "Patient/p1 +Observation/o2");
    finish(f);
}

static void test_search_paging_and_totals(void **state) {
    fx *f = *state;
    seed(f);
    expect_page(f, "Observation", "_count=2", "Observation/o1 Observation/o2", 1, -1);
    expect_page(f, "Observation", "_count=2&_offset=2", "Observation/o3 Observation/o4", 1, -1);
    expect_page(f, "Observation", "_count=2&_offset=4", "Observation/o5", 0, 5);
    expect_page(f, "Observation", "_count=2&_offset=10", "", 0, -1);
    expect_page(f, "Observation", "_count=5",
                "Observation/o1 Observation/o2 Observation/o3 Observation/o4 "
                "Observation/o5",
                0, 5);
    expect_page(f, "Observation", "_count=2&_total=accurate", "Observation/o1 Observation/o2", 1, 5);
    expect_page(f, "Observation", "_count=1&_offset=1&_total=accurate&code=8867-4", "Observation/o3", 1, 4);
    expect_page(f, "Observation", "code=8867-4&_summary=count", "", 0, 4);
    expect_page(f, "Observation", "code=nope&_summary=count", "", 0, 0);
    expect_page(f, "Observation", "_summary=count&_include=Observation:patient", "", 0, 5);
    expect_page(f, "Patient", "", "Patient/p1 Patient/p2 Patient/p3", 0, 3);
    expect_page(f, "Practitioner", "", "", 0, 0);
    /* deleted resources are not counted */
    del_ok(f, "Observation", "o5");
    expect_page(f, "Observation", "code=8867-4&_summary=count", "", 0, 3);
    expect_page(f, "Observation", "_count=2&_offset=2", "Observation/o3 Observation/o4", 0, 4);
    finish(f);
}

static void test_search_after_update_and_delete(void **state) {
    fx *f = *state;
    seed(f);
    put_ok(f, "o1",
           "{\"resourceType\":\"Observation\",\"status\":\"amended\","
           "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"29463-7\"}]},"
           "\"subject\":{\"reference\":\"Patient/p1\"}}");
    expect_set(f, "Observation", "code=8867-4", "Observation/o3 Observation/o4 Observation/o5");
    expect_set(f, "Observation", "code=29463-7", "Observation/o1 Observation/o2");
    expect_set(f, "Observation", "status=amended", "Observation/o1");
    expect_set(f, "Observation", "date=2024-03-05", "Observation/o4"); /* o1 lost its date */
    expect_set(f, "Observation", "value-quantity=72", "");
    del_ok(f, "Observation", "o5");
    expect_set(f, "Observation", "code=8867-4", "Observation/o3 Observation/o4");
    expect_set(f, "Observation", "_id=o5", "");
    expect_set(f, "Observation", "patient=p2", "Observation/o3");
    finish(f);
}

/* A resource can be in several patients' compartments (Group.member lists
 * patients; Patient.link points at another patient). A reference search
 * names the referenced patient, not the one whose key the resource was
 * filed under, and $everything of each member includes the Group
 * (CompartmentDefinition/patient: Group by member). */
static void test_search_multi_patient_references(void **state) {
    fx *f = *state;
    put_ok(f, "p1", "{\"resourceType\":\"Patient\",\"gender\":\"male\"}");
    put_ok(f, "p2", "{\"resourceType\":\"Patient\",\"gender\":\"female\"}");
    put_ok(f, "g2",
           "{\"resourceType\":\"Group\",\"type\":\"person\",\"actual\":true,\"member\":["
           "{\"entity\":{\"reference\":\"Patient/p1\"}},{\"entity\":{\"reference\":\"Patient/p2\"}}]}");
    put_ok(f, "p4",
           "{\"resourceType\":\"Patient\",\"link\":[{\"other\":{\"reference\":\"Patient/p1\"},"
           "\"type\":\"seealso\"}]}");
    expect_set(f, "Group", "member=Patient/p1", "Group/g2");
    expect_set(f, "Group", "member=Patient/p2", "Group/g2");
    expect_set(f, "Group", "member=p2", "Group/g2");
    expect_set(f, "Group", "member=Patient/p1&member=Patient/p2", "Group/g2");
    expect_set(f, "Patient", "link=Patient/p1", "Patient/p4");
    expect_set(f, "Patient", "link=p1", "Patient/p4");
    /* CompartmentDefinition/patient puts a Patient whose `link` names p1 in
     * p1's compartment (a linked record of the same person), so p4 is part
     * of p1's $everything */
    expect_everything(f, "p1", ST_OK, "Patient/p1 Group/g2 Patient/p4", __LINE__);
    expect_everything(f, "p2", ST_OK, "Patient/p2 Group/g2", __LINE__);
    finish(f);
}

/* Run one search in a child process with its own store handle, so that a
 * crash is reported as a failure of this check instead of ending the whole
 * test program. `want` as for expect_set; "400" accepts ST_INVALID too. */
static void expect_isolated_(fx *f, const char *type, const char *qs, const char *want, int accept_400,
                             int line) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork failed");
    if (pid == 0) {
        store *s = NULL;
        err e = {0};
        if (store_open(f->url, 0, &s, &e) != ST_OK) _exit(3);
        fx child = *f;
        child.s = s;
        child.tx = NULL;
        store_items it;
        status rc = run_search(&child, NULL, type, qs, &it);
        char got[1024] = "", exp[1024];
        if (rc == ST_OK) describe(&it, 0, got, sizeof got);
        store_items_free(&it);
        normalise(want, 0, exp, sizeof exp);
        int ok = (rc == ST_OK && strcmp(got, exp) == 0) || (accept_400 && rc == ST_INVALID);
        if (!ok)
            fprintf(stderr, "    got: %s {%s} %s\n", status_name(rc), got, rc == ST_OK ? "" : child.e.msg);
        store_close(s);
        fflush(NULL);
        _exit(ok ? 0 : 2);
    }
    int wst = 0;
    waitpid(pid, &wst, 0);
    if (WIFEXITED(wst) && WEXITSTATUS(wst) == 0) return;
    print_error("[%s] line %d: %s?%s\n    expected: {%s}%s\n    %s\n", backend(f), line, type, qs, want,
                accept_400 ? " or a 400" : "",
                WIFSIGNALED(wst)        ? "the search crashed the process (signal)"
                : WEXITSTATUS(wst) == 2 ? "wrong answer (above)"
                                        : "the search crashed the process (sanitizer report above)");
    f->mismatches++;
}
#define expect_isolated(f, type, qs, want, accept_400)                                                       \
    expect_isolated_(f, type, qs, want, accept_400, __LINE__)

/* _id is a token parameter, so "p1|" parses as system "p1" with no code
 * (found by fuzz/fuzz_search.c). An id has no system: the answer is a 400
 * or no match — never a crash or a database error. */
static void test_search_id_with_bar(void **state) {
    fx *f = *state;
    seed(f);
    expect_isolated(f, "Patient", "_id=p1|", "", 1);
    expect_isolated(f, "Patient", "_id=p1,p2|", "Patient/p1", 1);
    finish(f);
}

/* ========================================================= concurrency */

typedef struct writer {
    store *s;
    const char *id;
    int rounds, tag;
    int create_only, id_per_round;
    pthread_barrier_t *barrier;
    int ok, conflicts, other;
    char msg[400];
} writer;

static void *writer_main(void *arg) {
    writer *w = arg;
    for (int i = 0; i < w->rounds; i++) {
        char id[64];
        if (w->create_only || w->id_per_round)
            snprintf(id, sizeof id, "%s-%d", w->id, i);
        else
            snprintf(id, sizeof id, "%s", w->id);
        if (w->barrier) pthread_barrier_wait(w->barrier);
        err e = {0};
        store_txn *tx = NULL;
        store_meta m;
        int created;
        char given[32];
        snprintf(given, sizeof given, "w%d-%d", w->tag, i);
        json_t *res = json_pack("{s:s, s:[{s:s, s:[s]}]}", "resourceType", "Patient", "name", "family",
                                "Race", "given", given);
        status rc = store_begin(w->s, &tx, &e);
        if (rc == ST_OK) rc = store_put(tx, res, id, 0, w->create_only, &m, &created, NULL, &e);
        if (rc == ST_OK)
            rc = store_commit(tx, &e);
        else if (tx)
            store_rollback(tx);
        json_decref(res);
        if (rc == ST_OK)
            w->ok++;
        else if (rc == ST_CONFLICT) {
            if (!w->conflicts++ && !w->other) snprintf(w->msg, sizeof w->msg, "conflict: %s", e.msg);
        } else {
            w->other++;
            snprintf(w->msg, sizeof w->msg, "%s: %s", status_name(rc), e.msg);
        }
    }
    return NULL;
}

static void test_concurrent_updates_lose_nothing(void **state) {
    fx *f = *state;
    put_ok(f, "race", "{\"resourceType\":\"Patient\"}");
    writer w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        w[i] = (writer){.s = f->s, .id = "race", .rounds = 50, .tag = i};
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (w[i].ok != 50)
            fail_msg("[%s] writer %d: %d of 50 updates succeeded, %d conflicts, %d errors (%s)", backend(f),
                     i, w[i].ok, w[i].conflicts, w[i].other, w[i].msg);
    store_meta m;
    json_t *j = read_json(f, "Patient", "race", 0, &m);
    json_decref(j);
    assert_int_equal(m.version, 101);
    store_items it = {0};
    assert_status(store_history(f->s, "Patient", "race", 0, 1000, 0, &it, &f->e), ST_OK);
    assert_int_equal(it.n, 101);
    int from[2] = {0, 0};
    for (size_t i = 0; i < it.n; i++) {
        assert_int_equal(it.v[i].meta.version, 101 - (int64_t)i);
        if (i + 1 < it.n) assert_true(it.v[i].meta.updated_usec > it.v[i + 1].meta.updated_usec);
        char vid[40];
        snprintf(vid, sizeof vid, "\"versionId\":\"%lld\"", (long long)it.v[i].meta.version);
        if (!it.v[i].body || !strstr(it.v[i].body, vid)) fail_msg("version %zu's body lacks %s", i, vid);
        if (strstr(it.v[i].body, "\"w0-")) from[0]++;
        if (strstr(it.v[i].body, "\"w1-")) from[1]++;
    }
    store_items_free(&it);
    assert_int_equal(from[0], 50);
    assert_int_equal(from[1], 50);
}

static void test_concurrent_create_only_one_wins(void **state) {
    fx *f = *state;
    enum { ROUNDS = 20 };
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    writer w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        w[i] = (writer){
            .s = f->s, .id = "dup", .rounds = ROUNDS, .tag = i, .create_only = 1, .barrier = &barrier};
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    if (w[0].other || w[1].other) fail_msg("[%s] unexpected errors: %s / %s", backend(f), w[0].msg, w[1].msg);
    assert_int_equal(w[0].ok + w[1].ok, ROUNDS);
    assert_int_equal(w[0].conflicts + w[1].conflicts, ROUNDS);
    for (int i = 0; i < ROUNDS; i++) {
        char id[32];
        snprintf(id, sizeof id, "dup-%d", i);
        store_meta m;
        json_t *j = read_json(f, "Patient", id, 0, &m);
        json_decref(j);
        assert_int_equal(m.version, 1);
        assert_int_equal(history_count(f, "Patient", id), 1);
    }
    expect_page(f, "Patient", "family=race&_summary=count", "", 0, ROUNDS);
    finish(f);
}

/* Two clients PUT the same new id at once (update as create, no If-Match):
 * one creates version 1, the other updates it to version 2; neither is
 * refused. */
static void test_concurrent_create_on_update(void **state) {
    fx *f = *state;
    enum { ROUNDS = 20 };
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    writer w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        /* create_only = 0, but a fresh id per round ("put-<round>") */
        w[i] = (writer){.s = f->s,
                        .id = "put",
                        .rounds = ROUNDS,
                        .tag = i,
                        .create_only = 0,
                        .barrier = &barrier,
                        .id_per_round = 1};
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    if (w[0].ok + w[1].ok != 2 * ROUNDS)
        fail_msg("[%s] %d of %d PUTs succeeded: %d conflicts, %d errors (%s | %s)", backend(f),
                 w[0].ok + w[1].ok, 2 * ROUNDS, w[0].conflicts + w[1].conflicts, w[0].other + w[1].other,
                 w[0].msg, w[1].msg);
    for (int i = 0; i < ROUNDS; i++) {
        char id[32];
        snprintf(id, sizeof id, "put-%d", i);
        store_meta m;
        json_t *j = read_json(f, "Patient", id, 0, &m);
        json_decref(j);
        assert_int_equal(m.version, 2);
    }
}

/* Write hooks see every version inside the transaction, and a failing
 * hook fails (and so rolls back) the write. */
typedef struct hook_log {
    int calls, deletes;
    char last[80];
    int64_t last_version;
} hook_log;

static status test_hook(void *ctx, store_txn *tx, const store_write_event *ev, err *e) {
    hook_log *h = ctx;
    (void)tx;
    h->calls++;
    h->deletes += ev->deleted;
    snprintf(h->last, sizeof h->last, "%s/%s", ev->type, ev->id);
    h->last_version = ev->version;
    if (!ev->deleted && (!ev->body || !ev->res)) return err_set(e, ST_INVALID, "exception", NULL, "no body");
    if (strcmp(ev->id, "refused") == 0)
        return err_set(e, ST_INVALID, "business-rule", NULL, "refused by hook");
    return ST_OK;
}

static void test_write_hooks(void **state) {
    fx *f = *state;
    hook_log h = {0};
    assert_status(store_add_write_hook(f->s, "Patient", test_hook, &h, &f->e), ST_OK);
    put_ok(f, "hk1", "{\"resourceType\":\"Patient\"}");
    assert_int_equal(h.calls, 1);
    assert_string_equal(h.last, "Patient/hk1");
    put_ok(f, "hk1", "{\"resourceType\":\"Patient\",\"active\":true}");
    assert_int_equal(h.last_version, 2);
    put_ok(f, "ob1", "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"}}");
    assert_int_equal(h.calls, 2); /* other types are not the hook's */
    store_meta m;
    assert_status(store_begin(f->s, &f->tx, &f->e), ST_OK);
    assert_status(store_delete(f->tx, "Patient", "hk1", &m, &f->e), ST_OK);
    assert_status(store_commit(f->tx, &f->e), ST_OK);
    f->tx = NULL;
    assert_int_equal(h.deletes, 1);
    /* refused: nothing stored */
    assert_status(put_ex(f, "{\"resourceType\":\"Patient\"}", "refused", 0, 0, NULL, NULL), ST_INVALID);
    buf b = {0};
    assert_status(store_read(f->s, "Patient", "refused", 0, &b, &m, &f->e), ST_NOT_FOUND);
    buf_free(&b);
}

/* ------------------------------------------------- SQLite checkpoints */

/* The WAL-index header in the -shm file (sqlite.org/walformat.html): the
 * last valid frame (mxFrame, offset 16) and how many frames have been
 * copied back into the database file (nBackfill, offset 96), native order. */
static int shm_frames(const char *db, uint32_t *mx, uint32_t *backfill) {
    char p[600];
    snprintf(p, sizeof p, "%s-shm", db);
    FILE *fp = fopen(p, "rb");
    if (!fp) return -1;
    unsigned char h[100];
    size_t n = fread(h, 1, sizeof h, fp);
    fclose(fp);
    if (n < sizeof h) return -1;
    memcpy(mx, h + 16, 4);
    memcpy(backfill, h + 96, 4);
    return 0;
}

static long file_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

/* One transaction of `count` Patients of about 2 KiB, ids ck<first>...;
 * returns the next number. */
static int put_padded(fx *f, int first, int count) {
    static char pad[1800];
    memset(pad, 'x', sizeof pad - 1);
    assert_status(store_begin(f->s, &f->tx, &f->e), ST_OK);
    for (int n = first; n < first + count; n++) {
        char text[2048], id[32];
        snprintf(id, sizeof id, "ck%d", n);
        snprintf(text, sizeof text,
                 "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"F%d\",\"text\":\"%s\"}]}", n, pad);
        json_t *res = J(text);
        store_meta m;
        int created;
        assert_status(store_put(f->tx, res, id, 0, 0, &m, &created, NULL, &f->e), ST_OK);
        json_decref(res);
    }
    assert_status(store_commit(f->tx, &f->e), ST_OK);
    f->tx = NULL;
    return first + count;
}

/* The writer leaves checkpoints to a thread of its own (store_sqlite.c):
 * under a stream of commits the WAL stays bounded, once the writer is idle
 * every frame ends up in the database file, and nothing is lost. */
static void test_sqlite_wal_bounded_and_checkpointed(void **state) {
    fx *f = *state;
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", f->url);
    long wal_max = 0;
    int n = 0;
    for (int t = 0; t < 300; t++) {
        n = put_padded(f, n, 20);
        long w = file_size(wal);
        if (w > wal_max) wal_max = w;
    }
    /* 6,000 Patients of about 2 KiB: some 40 MiB went through the WAL,
     * which stays near 16 MiB (CKPT_RESTART_FRAMES) */
    if (wal_max > 24L << 20) fail_msg("the WAL grew to %ld bytes", wal_max);
    /* one more commit of over 1,000 pages, then idle: its frames are copied back
     * without another write */
    n = put_padded(f, n, 2500);
    uint32_t mx = 0, back = 0;
    for (int i = 0; i < 200; i++) { /* up to 10 s */
        assert_int_equal(shm_frames(f->url, &mx, &back), 0);
        if (mx > 0 && back == mx) break;
        usleep(50000);
    }
    if (!(mx > 0 && back == mx)) fail_msg("%u of %u WAL frames checkpointed after 10 s idle", back, mx);
    /* nothing lost: every Patient is there after closing and opening again */
    store_close(f->s);
    f->s = NULL;
    assert_status(store_open(f->url, 1, &f->s, &f->e), ST_OK);
    for (int i = 0; i < n; i += 997) {
        char id[32];
        snprintf(id, sizeof id, "ck%d", i);
        store_meta m;
        assert_status(store_read(f->s, "Patient", id, 0, NULL, &m, &f->e), ST_OK);
    }
    char last[32];
    snprintf(last, sizeof last, "ck%d", n - 1);
    store_meta m;
    assert_status(store_read(f->s, "Patient", last, 0, NULL, &m, &f->e), ST_OK);
}

/* The access epoch (migration 13): triggers move it on every change to
 * what access decisions read, whoever commits it, and only then; cached
 * decisions follow it, so writing clinical data keeps them. */
static int64_t epoch_of(fx *f) {
    db *d = store_db(f->s, &f->e);
    assert_non_null(d);
    db_stmt *st = NULL;
    assert_status(f->s->drv->prepare(d, "SELECT n FROM acc_epoch WHERE id = 1", 0, &st, &f->e), ST_OK);
    assert_int_equal(f->s->drv->step(st, &f->e), 1);
    int64_t n = f->s->drv->col_int(st, 0);
    f->s->drv->done(st);
    return n;
}

static void exec_txn(fx *f, const char *sql) {
    assert_status(store_begin(f->s, &f->tx, &f->e), ST_OK);
    assert_status(f->s->drv->exec(f->tx->d, sql, &f->e), ST_OK);
    assert_status(store_commit(f->tx, &f->e), ST_OK);
    f->tx = NULL;
}

static void test_sqlite_access_epoch_follows_access_data(void **state) {
    fx *f = *state;
    put_ok(f, "ep1", "{\"resourceType\":\"Patient\"}");
    int64_t pkey = 0;
    assert_status(store_patient_key_of(f->s, "ep1", &pkey, &f->e), ST_OK);
    assert_true(pkey > 0);
    static const char *const changes[] = {
        "INSERT INTO acc_rel (pkey, src_rkey, kind, org, who) VALUES (1, 1, 'registered', 'X1', '')",
        "UPDATE acc_rel SET org = 'X2' WHERE src_rkey = 1",
        "DELETE FROM acc_rel WHERE src_rkey = 1",
        "INSERT INTO acc_consent (pkey, src_rkey, org, since) VALUES (1, 2, 'X1', 0)",
        "DELETE FROM acc_consent WHERE src_rkey = 2",
        "INSERT INTO acc_org (org_id, ods, part_of) VALUES ('o1', 'X1', '')",
        "INSERT INTO reg_source (patient_id, person_key, decision, decided_by, decided_at, updated, nhs, "
        "family,"
        " given, birth_date, gender, postcode, address_line, local_ids, source)"
        " VALUES ('ep1', 1, 'new', 'registry', 0, 0, '', '', '', '', '', '', '', '', '')",
        "UPDATE reg_source SET person_key = 2 WHERE patient_id = 'ep1'",
        "DELETE FROM reg_source WHERE patient_id = 'ep1'",
    };
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        int64_t before = epoch_of(f);
        exec_txn(f, changes[i]);
        if (epoch_of(f) <= before) fail_msg("the access epoch stood still after: %s", changes[i]);
    }
    /* clinical data leaves it, and the cached decisions, alone */
    store_scope sc = {.restricted = 1, .patient_data = 1, .orgs = {"NOPE1"}, .norgs = 1, .user_key = 7};
    store_why why;
    assert_status(store_scope_check(f->s, &sc, pkey, "", 0, &why, NULL, &f->e), ST_OK);
    assert_int_equal(why, STORE_HIDDEN_NO_RELATIONSHIP);
    int64_t epoch = epoch_of(f);
    uint64_t gen = atomic_load(&f->s->access_gen);
    put_ok(f, NULL,
           "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
           "\"subject\":{\"reference\":\"Patient/ep1\"}}");
    {
        store_meta rm;
        assert_status(store_read(f->s, "Patient", "ep1", 0, NULL, &rm, &f->e), ST_OK);
    }
    assert_status(store_scope_check(f->s, &sc, pkey, "", 0, &why, NULL, &f->e), ST_OK);
    assert_int_equal(epoch_of(f), epoch);
    if (atomic_load(&f->s->access_gen) != gen)
        fail_msg("an Observation's commit dropped the cached decisions");
    /* a relationship for the user's organisation: seen at the next check */
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO acc_rel (pkey, src_rkey, kind, org, who) VALUES (%lld, 9, 'registered', "
             "'NOPE1', '')",
             (long long)pkey);
    exec_txn(f, sql);
    {
        store_meta rm;
        assert_status(store_read(f->s, "Patient", "ep1", 0, NULL, &rm, &f->e), ST_OK);
    }
    assert_status(store_scope_check(f->s, &sc, pkey, "", 0, &why, NULL, &f->e), ST_OK);
    assert_int_equal(why, STORE_VISIBLE);
}

/* SELECTs built at run time keep their prepared statements by text
 * (store_sqlite.c): the same text again is the same statement, reset and
 * unbound; asked for while in use (a nested query of the same shape) it is
 * another statement, and both give their own answers; more texts than
 * the cache holds evict the oldest not in use. */
static void test_sqlite_statements_cached_by_text(void **state) {
    fx *f = *state;
    const db_driver *drv = f->s->drv;
    db *d = store_db(f->s, &f->e);
    assert_non_null(d);
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT ? + 1");
    db_stmt *a = NULL, *b = NULL, *c = NULL;
    assert_status(drv->prepare(d, sql, 0, &a, &f->e), ST_OK);
    drv->bind_int(a, 1, 41);
    /* the same text while `a` is in use: a statement of its own */
    char again[64];
    snprintf(again, sizeof again, "%s", sql);
    assert_status(drv->prepare(d, again, 0, &b, &f->e), ST_OK);
    assert_ptr_not_equal(a, b);
    drv->bind_int(b, 1, 1);
    assert_int_equal(drv->step(a, &f->e), 1);
    assert_int_equal(drv->step(b, &f->e), 1);
    assert_int_equal(drv->col_int(a, 0), 42);
    assert_int_equal(drv->col_int(b, 0), 2);
    drv->done(b);
    drv->done(a);
    /* done: the next prepare of that text gets a cached one, unbound */
    assert_status(drv->prepare(d, again, 0, &c, &f->e), ST_OK);
    assert_true(c == a || c == b);
    assert_int_equal(drv->step(c, &f->e), 1);
    assert_int_equal(drv->col_int(c, 0), 0); /* NULL + 1 is NULL: read as 0 */
    assert_null(drv->col_text(c, 0, NULL));
    drv->done(c);
    /* forty other texts: the cache keeps working, answers stay right */
    for (int i = 0; i < 40; i++) {
        char t[64];
        snprintf(t, sizeof t, "SELECT ? + %d", i);
        db_stmt *x = NULL;
        assert_status(drv->prepare(d, t, 0, &x, &f->e), ST_OK);
        drv->bind_int(x, 1, 1000);
        assert_int_equal(drv->step(x, &f->e), 1);
        assert_int_equal(drv->col_int(x, 0), 1000 + i);
        drv->done(x);
    }
}

/* ================================================================ main */

#define STORE_TESTS(X)                                                                                       \
    X(test_migrations_idempotent)                                                                            \
    X(test_open_without_migrate_on_empty_database)                                                           \
    X(test_put_creates_version_1)                                                                            \
    X(test_put_id_length_limit)                                                                              \
    X(test_update_keeps_history)                                                                             \
    X(test_history_levels)                                                                                   \
    X(test_if_match)                                                                                         \
    X(test_create_only)                                                                                      \
    X(test_delete_and_recreate)                                                                              \
    X(test_rollback_leaves_nothing)                                                                          \
    X(test_write_hooks)                                                                                      \
    X(test_index_written_in_the_transaction)                                                                 \
    X(test_patient_key_fast_path)                                                                            \
    X(test_everything)                                                                                       \
    X(test_counts_and_size)                                                                                  \
    X(test_planner_statistics_follow_the_data)                                                               \
    X(test_search_token)                                                                                     \
    X(test_search_string)                                                                                    \
    X(test_search_date)                                                                                      \
    X(test_search_number)                                                                                    \
    X(test_search_quantity)                                                                                  \
    X(test_search_reference)                                                                                 \
    X(test_search_id_and_lastupdated)                                                                        \
    X(test_search_id_not)                                                                                    \
    X(test_search_missing)                                                                                   \
    X(test_search_missing_on_id_and_lastupdated)                                                             \
    X(test_search_chain)                                                                                     \
    X(test_search_sort)                                                                                      \
    X(test_search_include)                                                                                   \
    X(test_search_revinclude)                                                                                \
    X(test_search_paging_and_totals)                                                                         \
    X(test_search_after_update_and_delete)                                                                   \
    X(test_search_multi_patient_references)                                                                  \
    X(test_search_id_with_bar)                                                                               \
    X(test_concurrent_updates_lose_nothing)                                                                  \
    X(test_concurrent_create_only_one_wins)                                                                  \
    X(test_concurrent_create_on_update)

#define SQLITE_TEST(fn) {"sqlite: " #fn, fn, setup_sqlite, teardown, NULL},
#define PG_TEST(fn)     {"postgresql: " #fn, fn, setup_pg, teardown, NULL},

static void test_postgresql_skipped(void **state) {
    (void)state;
    print_message(
        "skipped: CONCORD_TEST_PG not set (run under tests/with-postgres.sh for the PostgreSQL backend)\n");
    skip();
}

int main(void) {
    static const struct CMUnitTest sqlite_tests[] = {STORE_TESTS(SQLITE_TEST) SQLITE_TEST(
        test_sqlite_wal_bounded_and_checkpointed) SQLITE_TEST(test_sqlite_access_epoch_follows_access_data)
                                                         SQLITE_TEST(test_sqlite_statements_cached_by_text)};
    static const struct CMUnitTest pg_tests[] = {STORE_TESTS(PG_TEST)};
    static const struct CMUnitTest pg_skipped[] = {
        cmocka_unit_test(test_postgresql_skipped),
    };
    int failed = cmocka_run_group_tests_name("store on SQLite", sqlite_tests, NULL, NULL);
    const char *pg = getenv("CONCORD_TEST_PG");
    if (pg && *pg)
        failed += cmocka_run_group_tests_name("store on PostgreSQL", pg_tests, NULL, NULL);
    else
        failed += cmocka_run_group_tests_name("store on PostgreSQL", pg_skipped, NULL, NULL);
    return failed ? 1 : 0;
}
