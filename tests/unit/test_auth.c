/*
 * test_auth.c — authentication (src/access/auth.h, roles.c) through its
 * public interface, on both backends: every test runs against SQLite (a
 * fresh database file) and, when CONCORD_TEST_PG holds a postgresql:// URL
 * of a server the tests may create databases on, against PostgreSQL (a
 * fresh database per test, dropped afterwards). Password hashing uses the
 * minimum argon2id limits (CONCORD_PWHASH=fast, set below): these tests
 * check behaviour, not cost.
 *
 * What is covered: the role table; adding, listing, disabling users and
 * refusing bad names, roles, organisations and short passwords; sign-in
 * (a new session id every time, wrong passwords, disabled users); the
 * throttle (five failures lock a user name even against the right
 * password, unknown names are locked the same, addresses are locked, locks
 * double, a password reset clears the lock); API tokens (format, bearer
 * sign-in, revocation refused at once in this process and within
 * cache_sec from another, expiry, disabled users, last_used); malformed
 * and oversized credentials refused without touching the database; the
 * token cache answering without SQL; sessions expiring idle and at the
 * absolute limit, sliding while used; logout; CSRF comparison; cookie
 * parsing and Set-Cookie attributes; many threads at once.
 */
#include <libpq-fe.h>
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

#include "access/auth.h"
#include "store/store.h"
#include "store/store_int.h"
#include "testpg.h"

/* ------------------------------------------------------------ fixture */

typedef struct fx {
    int pg;
    test_db db; /* dir (key files too), url */
    store *s;
    auth *a; /* default configuration */
    err e;
} fx;


static int setup_any(void **state, int pg) {
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    *state = f;
    f->pg = pg;
    if (test_db_create(&f->db, "auth", "auth.db", pg)) return -1;
    if (store_open(f->db.url, 1, &f->s, &f->e) != ST_OK) {
        print_error("store_open(%s): %s\n", f->db.url, f->e.msg);
        return -1;
    }
    if (auth_open(f->s, NULL, &f->a, &f->e) != ST_OK) {
        print_error("auth_open: %s\n", f->e.msg);
        return -1;
    }
    return 0;
}

static int setup_sqlite(void **state) {
    return setup_any(state, 0);
}
static int setup_pg(void **state) {
    return setup_any(state, 1);
}

static int teardown(void **state) {
    fx *f = *state;
    if (!f) return 0;
    auth_close(f->a);
    store_close(f->s);
    test_db_drop(&f->db);
    free(f);
    return 0;
}

/* ------------------------------------------------------------ helpers */

#define PASSWORD "correct horse battery"

static void add_user(fx *f, const char *name, const char *role, const char *org, const char *password) {
    auth_user_spec u = {.name = name, .role = role, .org = org, .password = password};
    if (strcmp(role, "patient") == 0) u.patient_id = "p0000001";
    status rc = auth_user_add(f->s, &u, &f->e);
    if (rc != ST_OK) print_error("add %s: %s\n", name, f->e.msg);
    assert_int_equal(rc, ST_OK);
}

static void bearer_of(const char *token, char out[128]) {
    snprintf(out, 128, "Bearer %s", token);
}

/* Run SQL on this thread's connection (what another process, or a broken
 * database, would do behind auth's back). */
static void sql_exec(fx *f, const char *sql) {
    db *d = store_db(f->s, &f->e);
    assert_non_null(d);
    status rc = f->s->drv->exec(d, sql, &f->e);
    if (rc != ST_OK) print_error("%s: %s\n", sql, f->e.msg);
    assert_int_equal(rc, ST_OK);
}

static size_t user_count(fx *f) {
    json_t *arr = json_array();
    assert_int_equal(auth_user_list(f->s, arr, &f->e), ST_OK);
    size_t n = json_array_size(arr);
    json_decref(arr);
    return n;
}

static status login(fx *f, auth *a, const char *user, const char *pw, const char *addr, acc_principal *p,
                    char sid[72]) {
    return auth_login(a ? a : f->a, user, pw, addr, p, sid, &f->e);
}

/* ------------------------------------------------------------ roles */

static void test_roles_table(void **state) {
    (void)state;
    static const char *names[] = {"gp",           "practice-nurse",  "consultant",
                                  "ed-clinician", "community-nurse", "social-worker",
                                  "pharmacist",   "mental-health",   "mdg-coordinator",
                                  "analyst",      "admin",           "privacy-officer",
                                  "patient",      "system"};
    assert_int_equal(sizeof names / sizeof names[0], ROLE_COUNT - 1);
    for (int r = ROLE_GP; r < ROLE_COUNT; r++) {
        assert_string_equal(acc_role_name((acc_role)r), names[r - 1]);
        assert_int_equal(acc_role_parse(names[r - 1]), r);
        assert_true(strlen(acc_role_label((acc_role)r)) > 1);
    }
    assert_int_equal(acc_role_parse("GP"), ROLE_NONE);
    assert_int_equal(acc_role_parse(""), ROLE_NONE);
    assert_int_equal(acc_role_parse(NULL), ROLE_NONE);
    assert_int_equal(acc_role_parse("root"), ROLE_NONE);
    assert_string_equal(acc_role_name(ROLE_NONE), "none");
    assert_string_equal(acc_role_name(ROLE_COUNT), "none");
    assert_string_equal(acc_role_label(ROLE_GP), "GP");
    assert_true(auth_role_needs_org(ROLE_GP));
    assert_true(auth_role_needs_org(ROLE_SOCIAL_WORKER));
    assert_false(auth_role_needs_org(ROLE_PATIENT));
    assert_false(auth_role_needs_org(ROLE_ANALYST));
    assert_false(auth_role_needs_org(ROLE_SYSTEM));
}

/* ------------------------------------------------------------ users */

static void test_users_add_list_disable(void **state) {
    fx *f = *state;
    auth_user_spec gp = {.name = "dr.jones",
                         .display = "Dr Ann Jones",
                         .role = "gp",
                         .org = "Z90001",
                         .practitioner = "pr-001",
                         .password = PASSWORD};
    assert_int_equal(auth_user_add(f->s, &gp, &f->e), ST_OK);
    add_user(f, "mllp-rrk", "system", "RRK", NULL);
    add_user(f, "pat_1", "patient", NULL, PASSWORD);

    json_t *arr = json_array();
    assert_int_equal(auth_user_list(f->s, arr, &f->e), ST_OK);
    assert_int_equal(json_array_size(arr), 3);
    json_t *u = json_array_get(arr, 0); /* by name */
    assert_string_equal(json_string_value(json_object_get(u, "name")), "dr.jones");
    assert_string_equal(json_string_value(json_object_get(u, "display")), "Dr Ann Jones");
    assert_string_equal(json_string_value(json_object_get(u, "role")), "gp");
    assert_string_equal(json_string_value(json_object_get(u, "org")), "Z90001");
    assert_string_equal(json_string_value(json_object_get(u, "practitioner")), "pr-001");
    assert_true(json_is_false(json_object_get(u, "disabled")));
    assert_true(json_is_true(json_object_get(u, "password")));
    assert_non_null(json_string_value(json_object_get(u, "created")));
    u = json_array_get(arr, 1);
    assert_string_equal(json_string_value(json_object_get(u, "name")), "mllp-rrk");
    assert_true(json_is_false(json_object_get(u, "password")));
    assert_string_equal(json_string_value(json_object_get(u, "display")), "mllp-rrk");
    u = json_array_get(arr, 2);
    assert_string_equal(json_string_value(json_object_get(u, "patient")), "p0000001");
    json_decref(arr);

    acc_principal p;
    int disabled = -1;
    assert_int_equal(auth_user_get(f->s, "dr.jones", &p, &disabled, &f->e), ST_OK);
    assert_int_equal(disabled, 0);
    assert_true(p.user_key > 0);
    assert_string_equal(p.user, "dr.jones");
    assert_string_equal(p.display, "Dr Ann Jones");
    assert_int_equal(p.role, ROLE_GP);
    assert_string_equal(p.org, "Z90001");
    assert_string_equal(p.practitioner, "pr-001");
    assert_string_equal(p.patient, "");

    assert_int_equal(auth_user_add(f->s, &gp, &f->e), ST_CONFLICT);
    assert_non_null(strstr(f->e.msg, "already exists"));

    assert_int_equal(auth_user_set_disabled(f->s, "dr.jones", 1, &f->e), ST_OK);
    assert_int_equal(auth_user_get(f->s, "dr.jones", &p, &disabled, &f->e), ST_OK);
    assert_int_equal(disabled, 1);
    assert_int_equal(auth_user_set_disabled(f->s, "dr.jones", 0, &f->e), ST_OK);
    assert_int_equal(auth_user_get(f->s, "dr.jones", &p, &disabled, &f->e), ST_OK);
    assert_int_equal(disabled, 0);
    assert_int_equal(auth_user_set_disabled(f->s, "nobody", 1, &f->e), ST_NOT_FOUND);
    assert_int_equal(auth_user_get(f->s, "nobody", &p, NULL, &f->e), ST_NOT_FOUND);
}

static void test_users_bad_input_refused(void **state) {
    fx *f = *state;
    static const char *bad_names[] = {"a",
                                      "Alice",
                                      "with space",
                                      "semi;colon",
                                      "quote'",
                                      "",
                                      "x234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        auth_user_spec u = {.name = bad_names[i], .role = "admin", .password = PASSWORD};
        assert_int_equal(auth_user_add(f->s, &u, &f->e), ST_INVALID);
        assert_string_equal(f->e.where, "name");
    }
    auth_user_spec u = {.name = NULL, .role = "admin", .password = PASSWORD};
    assert_int_equal(auth_user_add(f->s, &u, &f->e), ST_INVALID);

    struct {
        auth_user_spec u;
        const char *where;
    } cases[] = {
        {{.name = "ann", .role = "root", .password = PASSWORD}, "role"},
        {{.name = "ann", .role = NULL, .password = PASSWORD}, "role"},
        {{.name = "ann", .role = "admin", .password = "short9char"}, NULL}, /* 10: accepted below */
        {{.name = "bob", .role = "admin", .password = "123456789"}, "password"},
        {{.name = "bob", .role = "gp", .password = PASSWORD}, "org"},
        {{.name = "bob", .role = "gp", .org = "Z9 0001", .password = PASSWORD}, "org"},
        {{.name = "bob", .role = "patient", .password = PASSWORD}, "patient"},
        {{.name = "bob", .role = "gp", .org = "Z90001", .patient_id = "p1", .password = PASSWORD}, "patient"},
        {{.name = "bob", .role = "gp", .org = "Z90001", .practitioner = "a/b", .password = PASSWORD},
         "practitioner"},
        {{.name = "bob", .role = "admin", .display = "line\nbreak", .password = PASSWORD}, "display"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        status rc = auth_user_add(f->s, &cases[i].u, &f->e);
        if (!cases[i].where) {
            assert_int_equal(rc, ST_OK);
            continue;
        }
        if (rc != ST_INVALID) print_error("case %zu: %s\n", i, f->e.msg);
        assert_int_equal(rc, ST_INVALID);
        assert_string_equal(f->e.where, cases[i].where);
    }
    assert_int_equal(user_count(f), 1); /* only ann */
    char long_pw[AUTH_MAX_PASSWORD + 2];
    memset(long_pw, 'x', sizeof long_pw - 1);
    long_pw[sizeof long_pw - 1] = 0;
    auth_user_spec lp = {.name = "carl", .role = "admin", .password = long_pw};
    assert_int_equal(auth_user_add(f->s, &lp, &f->e), ST_INVALID);
    assert_int_equal(auth_user_set_password(f->s, "ann", "too short", &f->e), ST_INVALID);
    assert_int_equal(auth_user_set_password(f->s, "nobody", PASSWORD, &f->e), ST_NOT_FOUND);
}

/* ------------------------------------------------------------ sign-in */

static void test_login_new_session_each_time(void **state) {
    fx *f = *state;
    auth_user_spec gp = {.name = "dr.jones",
                         .display = "Dr Ann Jones",
                         .role = "gp",
                         .org = "Z90001",
                         .practitioner = "pr-001",
                         .password = PASSWORD};
    assert_int_equal(auth_user_add(f->s, &gp, &f->e), ST_OK);
    acc_principal p1, p2, ps;
    char sid1[72], sid2[72];
    assert_int_equal(login(f, NULL, "dr.jones", PASSWORD, "10.0.0.1", &p1, sid1), ST_OK);
    assert_int_equal(login(f, NULL, "dr.jones", PASSWORD, "10.0.0.1", &p2, sid2), ST_OK);
    assert_int_equal(strlen(sid1), AUTH_SESSION_LEN);
    assert_string_not_equal(sid1, sid2);
    assert_string_not_equal(p1.session, p2.session);
    assert_string_not_equal(p1.csrf, p2.csrf);
    assert_int_equal(strlen(p1.session), 64); /* the hash, not the id */
    assert_null(strstr(p1.session, sid1));
    assert_true(strlen(p1.csrf) >= 32);
    assert_int_equal(p1.via, ACC_VIA_SESSION);
    assert_int_equal(p1.role, ROLE_GP);
    assert_string_equal(p1.user, "dr.jones");
    assert_string_equal(p1.display, "Dr Ann Jones");
    assert_string_equal(p1.org, "Z90001");
    assert_string_equal(p1.practitioner, "pr-001");
    assert_string_equal(p1.addr, "10.0.0.1");
    assert_true(p1.user_key > 0);

    /* both sessions work, each with its own CSRF token */
    assert_int_equal(auth_session(f->a, sid1, "10.0.0.9", &ps, &f->e), ST_OK);
    assert_string_equal(ps.user, "dr.jones");
    assert_string_equal(ps.session, p1.session);
    assert_string_equal(ps.csrf, p1.csrf);
    assert_string_equal(ps.addr, "10.0.0.9");
    assert_int_equal(ps.via, ACC_VIA_SESSION);
    assert_int_equal(auth_session(f->a, sid2, NULL, &ps, &f->e), ST_OK);
    assert_string_equal(ps.csrf, p2.csrf);

    /* a well-formed id nobody issued (a planted, fixated id) is not a session */
    assert_int_equal(auth_session(f->a, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, &ps, &f->e),
                     ST_UNAUTHENTICATED);
    assert_string_equal(ps.user, "");
}

static void test_login_wrong_password(void **state) {
    fx *f = *state;
    add_user(f, "ann", "admin", NULL, PASSWORD);
    add_user(f, "feed", "system", "RRK", NULL);
    acc_principal p;
    char sid[72];
    char known[320], unknown[320];
    assert_int_equal(login(f, NULL, "ann", "wrong password", "10.0.0.1", &p, sid), ST_UNAUTHENTICATED);
    snprintf(known, sizeof known, "%s", f->e.msg);
    assert_string_equal(sid, "");
    assert_string_equal(p.user, "");
    assert_int_equal(login(f, NULL, "zed", "wrong password", "10.0.0.1", &p, sid), ST_UNAUTHENTICATED);
    snprintf(unknown, sizeof unknown, "%s", f->e.msg);
    assert_string_equal(known, unknown); /* does not say which names exist */
    /* a token-only user has no password to match */
    assert_int_equal(login(f, NULL, "feed", "", "10.0.0.1", &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, "feed", "anything at all", "10.0.0.1", &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, NULL, PASSWORD, "10.0.0.1", &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, "ann", NULL, "10.0.0.1", &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, "ann", PASSWORD, "10.0.0.1", &p, sid), ST_OK);
}

static void test_throttle_user(void **state) {
    fx *f = *state;
    add_user(f, "ann", "admin", NULL, PASSWORD);
    add_user(f, "bob", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid[72];
    /* from different addresses, so only the user name's count can lock */
    for (int i = 0; i < 4; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.1.%d", i);
        assert_int_equal(login(f, NULL, "ann", "wrong password", addr, &p, sid), ST_UNAUTHENTICATED);
    }
    assert_int_equal(login(f, NULL, "ann", PASSWORD, "10.0.2.1", &p, sid), ST_OK); /* 4 < 5: clears */
    for (int i = 0; i < 5; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.3.%d", i);
        assert_int_equal(login(f, NULL, "ann", "wrong password", addr, &p, sid), ST_UNAUTHENTICATED);
    }
    assert_int_equal(login(f, NULL, "ann", PASSWORD, "10.0.4.1", &p, sid), ST_THROTTLED);
    assert_non_null(strstr(f->e.msg, "try again in"));
    assert_string_equal(sid, "");
    /* others are not locked out */
    assert_int_equal(login(f, NULL, "bob", PASSWORD, "10.0.3.1", &p, sid), ST_OK);
    /* an administrator's reset clears the lock */
    assert_int_equal(auth_user_set_password(f->s, "ann", "a brand new password", &f->e), ST_OK);
    assert_int_equal(login(f, NULL, "ann", PASSWORD, "10.0.4.1", &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, "ann", "a brand new password", "10.0.4.1", &p, sid), ST_OK);
}

static void test_throttle_unknown_user(void **state) {
    fx *f = *state;
    acc_principal p;
    char sid[72];
    for (int i = 0; i < 5; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.5.%d", i);
        assert_int_equal(login(f, NULL, "ghost", "guess number x", addr, &p, sid), ST_UNAUTHENTICATED);
    }
    assert_int_equal(login(f, NULL, "ghost", "guess number y", "10.0.6.1", &p, sid), ST_THROTTLED);
    /* and creating the user then does not unlock the name for the guesser */
    add_user(f, "ghost", "admin", NULL, PASSWORD);
    assert_int_equal(login(f, NULL, "ghost", PASSWORD, "10.0.6.1", &p, sid), ST_THROTTLED);
}

static void test_throttle_address(void **state) {
    fx *f = *state;
    auth *a = NULL;
    auth_config cfg = {.addr_max_failures = 3};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid[72];
    const char *names[] = {"u1", "u2", "u3"}; /* password spraying: one try per name */
    for (int i = 0; i < 3; i++)
        assert_int_equal(login(f, a, names[i], "Summer2024!!", "192.0.2.66", &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, a, "ann", PASSWORD, "192.0.2.66", &p, sid), ST_THROTTLED);
    assert_non_null(strstr(f->e.msg, "192.0.2.66"));
    assert_int_equal(login(f, a, "ann", PASSWORD, "192.0.2.67", &p, sid), ST_OK);
    auth_close(a);
}

static void test_throttle_lock_doubles(void **state) {
    fx *f = *state;
    auth *a = NULL;
    /* margins of seconds either side: sanitizer builds on a busy machine
     * take a while over each sign-in */
    auth_config cfg = {.max_failures = 2, .lock_sec = 3};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid[72];
    assert_int_equal(login(f, a, "ann", "wrong password", NULL, &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, a, "ann", "wrong password", NULL, &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_THROTTLED); /* locked 3 s */
    sleep(4);
    assert_int_equal(login(f, a, "ann", "wrong password", NULL, &p, sid), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_THROTTLED); /* locked 6 s */
    assert_non_null(strstr(f->e.msg, "in 6 s"));
    sleep(2);
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_THROTTLED); /* still */
    sleep(5);
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_OK);
    auth_close(a);
}

/* ------------------------------------------------------------ tokens */

static void test_token_bearer(void **state) {
    fx *f = *state;
    add_user(f, "feed", "system", "RRK", NULL);
    char tok[96], hdr[128];
    assert_int_equal(auth_token_create(f->s, "feed", "mllp", 0, tok, &f->e), ST_OK);
    assert_int_equal(strlen(tok), AUTH_TOKEN_LEN);
    assert_memory_equal(tok, "cct_", 4);
    assert_int_equal(strspn(tok + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    char tok2[96];
    assert_int_equal(auth_token_create(f->s, "feed", "second", 0, tok2, &f->e), ST_OK);
    assert_string_not_equal(tok, tok2);

    acc_principal p;
    bearer_of(tok, hdr);
    assert_int_equal(auth_bearer(f->a, hdr, "10.1.1.1", &p, &f->e), ST_OK);
    assert_int_equal(p.via, ACC_VIA_TOKEN);
    assert_int_equal(p.role, ROLE_SYSTEM);
    assert_string_equal(p.user, "feed");
    assert_string_equal(p.org, "RRK");
    assert_string_equal(p.addr, "10.1.1.1");
    assert_string_equal(p.session, "");
    assert_string_equal(p.csrf, "");
    /* cached, with this request's address */
    assert_int_equal(auth_bearer(f->a, hdr, "10.1.1.2", &p, &f->e), ST_OK);
    assert_string_equal(p.addr, "10.1.1.2");
    /* the scheme is case-insensitive (RFC 7235) */
    char lower[128];
    snprintf(lower, sizeof lower, "bearer %s", tok);
    assert_int_equal(auth_bearer(f->a, lower, NULL, &p, &f->e), ST_OK);

    json_t *arr = json_array();
    assert_int_equal(auth_token_list(f->s, "feed", arr, &f->e), ST_OK);
    assert_int_equal(json_array_size(arr), 2);
    json_t *t = json_array_get(arr, 1); /* newest first: the first token is second */
    assert_string_equal(json_string_value(json_object_get(t, "label")), "mllp");
    assert_string_equal(json_string_value(json_object_get(t, "state")), "active");
    assert_true(json_is_null(json_object_get(t, "expires")));
    assert_true(json_is_string(json_object_get(t, "last_used"))); /* it was used */
    assert_true(json_is_null(json_object_get(json_array_get(arr, 0), "last_used")));
    /* no token value or hash is listed */
    char *dump = json_dumps(arr, 0);
    assert_null(strstr(dump, tok + 4));
    free(dump);
    json_decref(arr);

    assert_int_equal(auth_token_create(f->s, "nobody", NULL, 0, tok2, &f->e), ST_NOT_FOUND);
    assert_int_equal(auth_token_create(f->s, "feed", NULL, -5, tok2, &f->e), ST_INVALID);
    assert_int_equal(auth_token_list(f->s, "nobody", arr = json_array(), &f->e), ST_NOT_FOUND);
    json_decref(arr);
}

static void test_token_revoked_at_once(void **state) {
    fx *f = *state;
    add_user(f, "feed", "system", "RRK", NULL);
    char t1[96], t2[96], h1[128], h2[128];
    acc_principal p;
    assert_int_equal(auth_token_create(f->s, "feed", "one", 0, t1, &f->e), ST_OK);
    assert_int_equal(auth_token_create(f->s, "feed", "two", 0, t2, &f->e), ST_OK);
    bearer_of(t1, h1);
    bearer_of(t2, h2);
    assert_int_equal(auth_bearer(f->a, h1, NULL, &p, &f->e), ST_OK); /* now cached */
    assert_int_equal(auth_bearer(f->a, h2, NULL, &p, &f->e), ST_OK);

    assert_int_equal(auth_token_revoke(f->s, t1, &f->e), ST_OK); /* by value */
    assert_int_equal(auth_bearer(f->a, h1, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "revoked"));
    assert_string_equal(p.user, "");
    assert_int_equal(auth_bearer(f->a, h2, NULL, &p, &f->e), ST_OK);

    json_t *arr = json_array();
    assert_int_equal(auth_token_list(f->s, NULL, arr, &f->e), ST_OK);
    json_int_t key2 = json_integer_value(json_object_get(json_array_get(arr, 0), "key"));
    json_decref(arr);
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)key2);
    assert_int_equal(auth_token_revoke(f->s, key, &f->e), ST_OK); /* by key */
    assert_int_equal(auth_bearer(f->a, h2, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_int_equal(auth_token_revoke(f->s, key, &f->e), ST_OK); /* again: no change */
    assert_int_equal(auth_token_revoke(f->s, "999999", &f->e), ST_NOT_FOUND);
    assert_int_equal(auth_token_revoke(f->s, "cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &f->e),
                     ST_NOT_FOUND);
    assert_int_equal(auth_token_revoke(f->s, "cct_short", &f->e), ST_INVALID);
    assert_int_equal(auth_token_revoke(f->s, "1 OR 1=1", &f->e), ST_INVALID);
}

/* Revoked by another process (a direct UPDATE: no cache invalidation here):
 * trusted from the cache for at most cache_sec, then refused. */
static void test_token_cache_other_process(void **state) {
    fx *f = *state;
    auth *a = NULL;
    auth_config cfg = {.cache_sec = 1};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    add_user(f, "feed", "system", "RRK", NULL);
    char t[96], h[128];
    acc_principal p;
    assert_int_equal(auth_token_create(f->s, "feed", NULL, 0, t, &f->e), ST_OK);
    bearer_of(t, h);
    assert_int_equal(auth_bearer(a, h, NULL, &p, &f->e), ST_OK);
    sql_exec(f, "UPDATE acc_token SET revoked = 1");
    assert_int_equal(auth_bearer(a, h, NULL, &p, &f->e), ST_OK); /* from the cache */
    usleep(1200 * 1000);
    assert_int_equal(auth_bearer(a, h, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "revoked"));
    auth_close(a);
}

/* A cached token costs no SQL: it keeps working while the table is gone. */
static void test_token_cache_no_sql(void **state) {
    fx *f = *state;
    add_user(f, "feed", "system", "RRK", NULL);
    char t[96], h[128];
    acc_principal p;
    assert_int_equal(auth_token_create(f->s, "feed", NULL, 0, t, &f->e), ST_OK);
    bearer_of(t, h);
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_OK);
    sql_exec(f, "ALTER TABLE acc_token RENAME TO acc_token_away");
    for (int i = 0; i < 100; i++)
        assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_OK);
    sql_exec(f, "ALTER TABLE acc_token_away RENAME TO acc_token");
}

static void test_token_expired(void **state) {
    fx *f = *state;
    add_user(f, "feed", "system", "RRK", NULL);
    char t[96], h[128];
    acc_principal p;
    assert_int_equal(auth_token_create(f->s, "feed", NULL, 1, t, &f->e), ST_OK);
    bearer_of(t, h);
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_OK); /* cached for 5 s */
    sleep(3);
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "expired"));
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_UNAUTHENTICATED); /* from the database */
    assert_non_null(strstr(f->e.msg, "expired"));
    json_t *arr = json_array();
    assert_int_equal(auth_token_list(f->s, "feed", arr, &f->e), ST_OK);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "state")), "expired");
    json_decref(arr);
}

static void test_disabled_user_refused(void **state) {
    fx *f = *state;
    add_user(f, "ann", "admin", NULL, PASSWORD);
    char t[96], h[128], sid[72];
    acc_principal p;
    assert_int_equal(auth_token_create(f->s, "ann", NULL, 0, t, &f->e), ST_OK);
    bearer_of(t, h);
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_OK);
    assert_int_equal(login(f, NULL, "ann", PASSWORD, NULL, &p, sid), ST_OK);
    assert_int_equal(auth_session(f->a, sid, NULL, &p, &f->e), ST_OK);

    assert_int_equal(auth_user_set_disabled(f->s, "ann", 1, &f->e), ST_OK);
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_int_equal(auth_session(f->a, sid, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, "ann", PASSWORD, NULL, &p, sid), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "disabled"));
    assert_int_equal(auth_token_create(f->s, "ann", NULL, 0, t, &f->e), ST_CONFLICT);

    /* enabling lets them sign in again, but the old token and session stay revoked */
    assert_int_equal(auth_user_set_disabled(f->s, "ann", 0, &f->e), ST_OK);
    assert_int_equal(auth_bearer(f->a, h, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_int_equal(login(f, NULL, "ann", PASSWORD, NULL, &p, sid), ST_OK);

    /* disabled behind this process's back (another process): a fresh
     * lookup refuses the user with the precise reason */
    char t2[96], h2[128];
    assert_int_equal(auth_token_create(f->s, "ann", NULL, 0, t2, &f->e), ST_OK);
    sql_exec(f, "UPDATE acc_user SET disabled = 1");
    bearer_of(t2, h2);
    assert_int_equal(auth_bearer(f->a, h2, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "disabled"));
}

/* Malformed and oversized credentials are refused before any SQL: with
 * the tables renamed away, they still get ST_UNAUTHENTICATED, while a
 * well-formed credential reaches the database and fails there. */
static void test_malformed_refused_without_db(void **state) {
    fx *f = *state;
    acc_principal p;
    sql_exec(f, "ALTER TABLE acc_token RENAME TO acc_token_away");
    sql_exec(f, "ALTER TABLE acc_session RENAME TO acc_session_away");
    char big[2048];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = 0;
    memcpy(big, "Bearer cct_", 11);
    char exact_but_long[AUTH_MAX_HEADER + 2];
    memset(exact_but_long, ' ', sizeof exact_but_long - 1);
    exact_but_long[sizeof exact_but_long - 1] = 0;
    memcpy(exact_but_long, "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 54);
    const char *bad[] = {
        NULL,
        "",
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "Bearer",
        "Bearer ",
        "Bearercct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   /* 42 */
        "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 44 */
        "Bearer xyz_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'A",
        "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=AA",
        "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA x",
        "Bearer ' OR 1=1 --",
        big,
        exact_but_long, /* a valid token padded past 512 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        status rc = auth_bearer(f->a, bad[i], NULL, &p, &f->e);
        if (rc != ST_UNAUTHENTICATED) print_error("header %zu: %s %s\n", i, status_name(rc), f->e.msg);
        assert_int_equal(rc, ST_UNAUTHENTICATED);
        assert_string_equal(p.user, "");
    }
    assert_non_null(strstr(f->e.msg, "longer than 512"));
    /* well-formed: the database is asked (and, here, fails) */
    assert_int_equal(
        auth_bearer(f->a, "Bearer cct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, &p, &f->e), ST_IO);

    const char *bad_sessions[] = {NULL,
                                  "",
                                  "short",
                                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA;",
                                  big};
    for (size_t i = 0; i < sizeof bad_sessions / sizeof bad_sessions[0]; i++)
        assert_int_equal(auth_session(f->a, bad_sessions[i], NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_int_equal(auth_logout(f->a, "short", &f->e), ST_OK); /* nothing to end */
    assert_int_equal(auth_session(f->a, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, &p, &f->e),
                     ST_IO);
    sql_exec(f, "ALTER TABLE acc_token_away RENAME TO acc_token");
    sql_exec(f, "ALTER TABLE acc_session_away RENAME TO acc_session");
}

/* ------------------------------------------------------------ sessions */

static void test_session_idle_expiry(void **state) {
    fx *f = *state;
    auth *a = NULL;
    auth_config cfg = {.session_idle_sec = 1, .session_max_sec = 60};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid[72];
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_OK);
    assert_int_equal(auth_session(a, sid, NULL, &p, &f->e), ST_OK);
    sleep(2);
    assert_int_equal(auth_session(a, sid, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "idle"));
    assert_string_equal(p.user, "");
    auth_close(a);
}

/* Use keeps a session alive past its first idle expiry. */
static void test_session_idle_slides(void **state) {
    fx *f = *state;
    auth *a = NULL;
    auth_config cfg = {.session_idle_sec = 3, .session_max_sec = 60};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid[72];
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_OK); /* idle until t0 + 3 */
    sleep(2);
    assert_int_equal(auth_session(a, sid, NULL, &p, &f->e), ST_OK); /* slides to t0 + 5 */
    sleep(2);
    assert_int_equal(auth_session(a, sid, NULL, &p, &f->e), ST_OK); /* t0 + 4: alive only because it slid */
    auth_close(a);
}

static void test_session_absolute_limit(void **state) {
    fx *f = *state;
    auth *a = NULL;
    auth_config cfg = {.session_idle_sec = 60, .session_max_sec = 1};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid[72];
    assert_int_equal(login(f, a, "ann", PASSWORD, NULL, &p, sid), ST_OK);
    assert_int_equal(auth_session(a, sid, NULL, &p, &f->e), ST_OK);
    sleep(2);
    assert_int_equal(auth_session(a, sid, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "expired"));
    auth_close(a);
}

static void test_logout(void **state) {
    fx *f = *state;
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p;
    char sid1[72], sid2[72];
    assert_int_equal(login(f, NULL, "ann", PASSWORD, NULL, &p, sid1), ST_OK);
    assert_int_equal(login(f, NULL, "ann", PASSWORD, NULL, &p, sid2), ST_OK);
    assert_int_equal(auth_logout(f->a, sid1, &f->e), ST_OK);
    assert_int_equal(auth_session(f->a, sid1, NULL, &p, &f->e), ST_UNAUTHENTICATED);
    assert_non_null(strstr(f->e.msg, "ended"));
    assert_int_equal(auth_logout(f->a, sid1, &f->e), ST_OK);            /* idempotent */
    assert_int_equal(auth_session(f->a, sid2, NULL, &p, &f->e), ST_OK); /* the other session lives */
    /* a password reset signs every session out */
    assert_int_equal(auth_user_set_password(f->s, "ann", "a brand new password", &f->e), ST_OK);
    assert_int_equal(auth_session(f->a, sid2, NULL, &p, &f->e), ST_UNAUTHENTICATED);
}

static void test_csrf(void **state) {
    fx *f = *state;
    add_user(f, "ann", "admin", NULL, PASSWORD);
    acc_principal p, ps;
    char sid[72], csrf[48];
    assert_int_equal(login(f, NULL, "ann", PASSWORD, NULL, &p, sid), ST_OK);
    assert_int_equal(auth_session(f->a, sid, NULL, &ps, &f->e), ST_OK);
    snprintf(csrf, sizeof csrf, "%s", ps.csrf);
    assert_true(auth_csrf_ok(&ps, csrf));
    assert_true(auth_csrf_ok(&p, csrf));
    assert_false(auth_csrf_ok(&ps, NULL));
    assert_false(auth_csrf_ok(&ps, ""));
    char wrong[64];
    snprintf(wrong, sizeof wrong, "%s", csrf);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    assert_false(auth_csrf_ok(&ps, wrong));
    snprintf(wrong, sizeof wrong, "%.*s", (int)strlen(csrf) - 1, csrf); /* a prefix */
    assert_false(auth_csrf_ok(&ps, wrong));
    snprintf(wrong, sizeof wrong, "%sA", csrf); /* longer */
    assert_false(auth_csrf_ok(&ps, wrong));
    assert_false(auth_csrf_ok(NULL, csrf));
    /* a principal that is not a session has no CSRF token to match */
    acc_principal tokenp = ps;
    tokenp.via = ACC_VIA_TOKEN;
    assert_false(auth_csrf_ok(&tokenp, csrf));
    acc_principal empty;
    memset(&empty, 0, sizeof empty);
    empty.via = ACC_VIA_SESSION;
    assert_false(auth_csrf_ok(&empty, ""));
}

static void test_cookies(void **state) {
    fx *f = *state;
    char v[64];
    assert_int_equal(auth_cookie_value("concord_session=abc", "concord_session", v, sizeof v), 1);
    assert_string_equal(v, "abc");
    assert_int_equal(
        auth_cookie_value("theme=dark; concord_session=xyz; lang=en", "concord_session", v, sizeof v), 1);
    assert_string_equal(v, "xyz");
    assert_int_equal(
        auth_cookie_value("theme=dark;concord_session = \"q1\" ;x=y", "concord_session", v, sizeof v), 1);
    assert_string_equal(v, "q1");
    assert_int_equal(
        auth_cookie_value("xconcord_session=no; concord_sessionx=no", "concord_session", v, sizeof v), 0);
    assert_string_equal(v, "");
    assert_int_equal(
        auth_cookie_value("concord_session=first; concord_session=second", "concord_session", v, sizeof v),
        1);
    assert_string_equal(v, "first");
    assert_int_equal(auth_cookie_value("flag; concord_session=ok", "concord_session", v, sizeof v), 1);
    assert_string_equal(v, "ok");
    assert_int_equal(auth_cookie_value("concord_session=", "concord_session", v, sizeof v), 1);
    assert_string_equal(v, "");
    assert_int_equal(auth_cookie_value(NULL, "concord_session", v, sizeof v), 0);
    assert_int_equal(auth_cookie_value("", "concord_session", v, sizeof v), 0);
    char small[4];
    assert_int_equal(auth_cookie_value("concord_session=toolong", "concord_session", small, sizeof small), 0);
    assert_string_equal(small, "");

    char sc[256];
    assert_int_equal(auth_set_cookie(f->a, "SID", sc, sizeof sc), 0);
    assert_string_equal(auth_cookie_name(f->a), "concord_session");
    assert_non_null(strstr(sc, "concord_session=SID;"));
    assert_non_null(strstr(sc, "HttpOnly"));
    assert_non_null(strstr(sc, "SameSite=Strict"));
    assert_non_null(strstr(sc, "Path=/"));
    assert_non_null(strstr(sc, "Max-Age=43200"));
    assert_null(strstr(sc, "Secure"));
    assert_int_equal(auth_set_cookie(f->a, NULL, sc, sizeof sc), 0);
    assert_non_null(strstr(sc, "Max-Age=0"));
    assert_int_equal(auth_set_cookie(f->a, "SID", sc, 10), -1);

    auth *a = NULL;
    auth_config cfg = {.secure_cookies = 1};
    assert_int_equal(auth_open(f->s, &cfg, &a, &f->e), ST_OK);
    assert_int_equal(auth_set_cookie(a, "SID", sc, sizeof sc), 0);
    assert_non_null(strstr(sc, "__Host-concord_session=SID;"));
    assert_non_null(strstr(sc, "; Secure"));
    auth_close(a);
}

/* ------------------------------------------------------------ threads */

typedef struct worker {
    fx *f;
    const char *hdr[2];
    int ok, logins;
    char sid[72];
} worker;

static void *bearer_worker(void *arg) {
    worker *w = arg;
    err e;
    for (int i = 0; i < 300; i++) {
        acc_principal p;
        if (auth_bearer(w->f->a, w->hdr[i % 2], "10.9.9.9", &p, &e) == ST_OK && p.role == ROLE_SYSTEM)
            w->ok++;
    }
    acc_principal p;
    if (auth_login(w->f->a, "ann", PASSWORD, "10.9.9.9", &p, w->sid, &e) == ST_OK) w->logins++;
    return NULL;
}

static void test_threads(void **state) {
    fx *f = *state;
    add_user(f, "feed", "system", "RRK", NULL);
    add_user(f, "ann", "admin", NULL, PASSWORD);
    char t1[96], t2[96], h1[128], h2[128];
    assert_int_equal(auth_token_create(f->s, "feed", NULL, 0, t1, &f->e), ST_OK);
    assert_int_equal(auth_token_create(f->s, "feed", NULL, 0, t2, &f->e), ST_OK);
    bearer_of(t1, h1);
    bearer_of(t2, h2);
    enum { N = 6 };
    worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].f = f;
        w[i].hdr[0] = h1;
        w[i].hdr[1] = h2;
        assert_int_equal(pthread_create(&th[i], NULL, bearer_worker, &w[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(w[i].ok, 300);
        assert_int_equal(w[i].logins, 1);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(w[i].sid, w[j].sid);
    }
}

/* ------------------------------------------------------------ main */

#define AUTH_TESTS(X)                                                                                        \
    X(test_users_add_list_disable)                                                                           \
    X(test_users_bad_input_refused)                                                                          \
    X(test_login_new_session_each_time)                                                                      \
    X(test_login_wrong_password)                                                                             \
    X(test_throttle_user)                                                                                    \
    X(test_throttle_unknown_user)                                                                            \
    X(test_throttle_address)                                                                                 \
    X(test_throttle_lock_doubles)                                                                            \
    X(test_token_bearer)                                                                                     \
    X(test_token_revoked_at_once)                                                                            \
    X(test_token_cache_other_process)                                                                        \
    X(test_token_cache_no_sql)                                                                               \
    X(test_token_expired)                                                                                    \
    X(test_disabled_user_refused)                                                                            \
    X(test_malformed_refused_without_db)                                                                     \
    X(test_session_idle_expiry)                                                                              \
    X(test_session_idle_slides)                                                                              \
    X(test_session_absolute_limit)                                                                           \
    X(test_logout)                                                                                           \
    X(test_csrf)                                                                                             \
    X(test_cookies)                                                                                          \
    X(test_threads)

#define SQLITE_TEST(fn) {"sqlite: " #fn, fn, setup_sqlite, teardown, NULL},
#define PG_TEST(fn)     {"postgresql: " #fn, fn, setup_pg, teardown, NULL},

static void test_postgresql_skipped(void **state) {
    (void)state;
    print_message(
        "skipped: CONCORD_TEST_PG not set (run under tests/with-postgres.sh for the PostgreSQL backend)\n");
    skip();
}

int main(void) {
    setenv("CONCORD_PWHASH", "fast", 1); /* minimum argon2id limits: behaviour, not cost */
    static const struct CMUnitTest plain[] = {cmocka_unit_test(test_roles_table)};
    static const struct CMUnitTest sqlite_tests[] = {AUTH_TESTS(SQLITE_TEST)};
    static const struct CMUnitTest pg_tests[] = {AUTH_TESTS(PG_TEST)};
    static const struct CMUnitTest pg_skipped[] = {cmocka_unit_test(test_postgresql_skipped)};
    int failed = cmocka_run_group_tests_name("roles", plain, NULL, NULL);
    failed += cmocka_run_group_tests_name("auth on SQLite", sqlite_tests, NULL, NULL);
    const char *pg = getenv("CONCORD_TEST_PG");
    if (pg && *pg)
        failed += cmocka_run_group_tests_name("auth on PostgreSQL", pg_tests, NULL, NULL);
    else
        failed += cmocka_run_group_tests_name("auth on PostgreSQL", pg_skipped, NULL, NULL);
    return failed ? 1 : 0;
}
