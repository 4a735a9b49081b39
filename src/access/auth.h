/*
 * auth.h — authentication: who is asking. Users and their passwords
 * (argon2id), API tokens for systems, session cookies for the web app,
 * and throttling of failed sign-ins. docs/auth.md describes the formats
 * and the rules; access.h the principal this fills.
 *
 * Two kinds of entry point:
 *  - management (auth_user_*, auth_token_*): take the store, run their own
 *    transactions; used by `concord user`/`concord token` and the demo.
 *  - request authentication (auth_bearer, auth_login, auth_session,
 *    auth_logout): take an `auth` handle, which holds the server's
 *    configuration, the token cache and the dummy hash that makes an
 *    unknown user cost as much as a known one.
 *
 * Threads: an `auth` is shared by every worker thread; all functions are
 * thread-safe. Password hashing (argon2id, 64 MiB each) runs at most
 * AUTH_MAX_HASHING at a time in the process; a caller waits up to 10 s
 * for a turn, then gets ST_THROTTLED.
 *
 * Ownership: every string argument is borrowed for the call; outputs are
 * written into the caller's fixed buffers (acc_principal, out[...]) or
 * appended to the caller's json array (new references, owned by it).
 *
 * Errors: ST_UNAUTHENTICATED (401) for missing or bad credentials, with a
 * message precise enough for the client to act on but not revealing
 * whether a user name exists; ST_THROTTLED (429) while a user name or
 * address is locked out, with when to retry; ST_INVALID for bad input to
 * management functions; ST_NOT_FOUND, ST_CONFLICT as usual; ST_IO for the
 * store.
 */
#ifndef CONCORD_AUTH_H
#define CONCORD_AUTH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"
#include "../store/store.h"
#include "access.h"

typedef struct auth auth;

/* Zero in any field means its default. */
typedef struct auth_config {
    int session_idle_sec;  /* a session ends after this long unused (default 1800) */
    int session_max_sec;   /* and this long after sign-in in any case (default 43200) */
    int max_failures;      /* failed sign-ins per user name within 15 minutes before a lock (5) */
    int lock_sec;          /* the first lock (300); doubles with each further failure, at most a day */
    int cache_sec;         /* how long a checked token is trusted without SQL (5) */
    int secure_cookies;    /* 1 when served over TLS: Secure and the __Host- cookie name */
    int addr_max_failures; /* failed sign-ins per remote address within 15 minutes (4 x max_failures:
                            * colleagues behind one NAT address should not lock each other out) */
} auth_config;

#define AUTH_DEFAULT_IDLE_SEC     1800
#define AUTH_DEFAULT_MAX_SEC      43200
#define AUTH_DEFAULT_MAX_FAILURES 5
#define AUTH_DEFAULT_LOCK_SEC     300
#define AUTH_DEFAULT_CACHE_SEC    5
#define AUTH_THROTTLE_WINDOW_SEC  900 /* failures count within 15 minutes */
#define AUTH_MAX_LOCK_SEC         86400
#define AUTH_MAX_HASHING          2 /* concurrent argon2id computations per process */

#define AUTH_TOKEN_PREFIX "cct_"
#define AUTH_TOKEN_LEN    47  /* "cct_" + 43 base64url characters (32 random bytes) */
#define AUTH_SESSION_LEN  43  /* session id: 32 random bytes, base64url, no padding */
#define AUTH_MAX_HEADER   512 /* longer Authorization headers are refused unread */
#define AUTH_MIN_PASSWORD 10
#define AUTH_MAX_PASSWORD 1024

/* `s` is borrowed and must outlive the auth. cfg NULL = defaults. Builds
 * the dummy hash (one argon2id computation). */
status auth_open(store *s, const auth_config *cfg, auth **out, err *e);
void auth_close(auth *a);
/* The configuration in force (defaults filled in). */
const auth_config *auth_config_of(const auth *a);

/* ---- users ------------------------------------------------------------ */

typedef struct auth_user_spec {
    const char *name;         /* [a-z0-9._-]{2,63} */
    const char *display;      /* NULL: the name */
    const char *role;         /* acc_role_name: "gp", "patient", ... */
    const char *org;          /* ODS code; required for care roles (auth_role_needs_org) */
    const char *practitioner; /* Practitioner id, or NULL */
    const char *patient_id;   /* role patient: their Patient id (required) */
    const char *password;     /* >= AUTH_MIN_PASSWORD bytes, or NULL: token-only (e.g. role system) */
} auth_user_spec;

/* ST_INVALID with the field at fault in e->where; ST_CONFLICT if the name exists. */
status auth_user_add(store *s, const auth_user_spec *u, err *e);
/* Disabling also revokes the user's sessions and tokens (enabling does not
 * bring them back). ST_NOT_FOUND for an unknown user. */
status auth_user_set_disabled(store *s, const char *name, int disabled, err *e);
/* A new password: revokes the user's sessions and clears their sign-in throttle. */
status auth_user_set_password(store *s, const char *name, const char *password, err *e);
/* Appends one object per user, by name: name, display, role, org,
 * practitioner, patient, disabled (bool), password (bool: has one),
 * created (instant text). */
status auth_user_list(store *s, json_t *out_array, err *e);
/* The user as a principal (via ACC_VIA_NONE, no session); *disabled may be NULL. */
status auth_user_get(store *s, const char *name, acc_principal *out, int *disabled, err *e);
/* Whether a role's access depends on an organisation (roles.c). */
int auth_role_needs_org(acc_role r);

/* ---- API tokens ------------------------------------------------------- */
/* A token is "cct_" + base64url(32 random bytes) (47 characters); only
 * hex(BLAKE2b-256(token)) is stored. ttl_sec 0 = never expires. The token
 * is written to out (NUL-terminated) and cannot be recovered later. */
status auth_token_create(store *s, const char *user, const char *label, int64_t ttl_sec, char out[96],
                         err *e);
/* By the token itself, or by its key (the number auth_token_list shows).
 * Revoking a revoked token succeeds and changes nothing. Clears this
 * process's token caches at once. */
status auth_token_revoke(store *s, const char *token_or_key, err *e);
/* Appends one object per token (user NULL = every user's), newest first:
 * key, user, label, created, expires (null = never), revoked (null or
 * instant), last_used (null or instant), state ("active", "revoked",
 * "expired"). */
status auth_token_list(store *s, const char *user, json_t *out_array, err *e);

/* ---- request authentication ------------------------------------------- */
/* "Authorization: Bearer <token>" -> principal (via ACC_VIA_TOKEN). `addr`
 * (may be NULL) is copied into out->addr. Headers over AUTH_MAX_HEADER
 * bytes and tokens not of the exact format are refused before any hashing
 * or SQL. A token checked within cache_sec is trusted from memory. */
status auth_bearer(auth *a, const char *authorization_header, const char *addr, acc_principal *out, err *e);
/* Sign in with a password: on success a NEW session (the id in
 * session_id, for the cookie; never one the client presented), out filled
 * with via ACC_VIA_SESSION, out->session = the id's hash (hex) and
 * out->csrf = the session's CSRF token. */
status auth_login(auth *a, const char *user, const char *password, const char *addr, acc_principal *out,
                  char session_id[72], err *e);
/* A session cookie's value -> principal (out->csrf filled for auth_csrf_ok). */
status auth_session(auth *a, const char *session_id, const char *addr, acc_principal *out, err *e);
/* Ends the session (idempotent: an unknown or ended session is ST_OK). */
status auth_logout(auth *a, const char *session_id, err *e);
/* 1 when `header` (X-CSRF-Token) equals the session's CSRF token
 * (constant time); 0 for anything else, including no session. */
int auth_csrf_ok(const acc_principal *p, const char *header);

/* ---- cookies ---------------------------------------------------------- */
/* The session cookie's name: "__Host-concord_session" with secure_cookies,
 * else "concord_session". */
const char *auth_cookie_name(const auth *a);
/* Set-Cookie header value for a new session (HttpOnly, SameSite=Strict,
 * Path=/, Max-Age = session_max_sec, Secure with secure_cookies), or, with
 * session_id NULL, the value that clears it. Returns 0, or -1 if n is too small. */
int auth_set_cookie(const auth *a, const char *session_id, char *out, size_t n);
/* Finds cookie `name` in a Cookie header ("a=b; c=d") and copies its value
 * (quotes removed) into out. Returns 1 when found and it fits in n, else 0
 * (out = ""). The first of several same-named cookies wins. */
int auth_cookie_value(const char *cookie_header, const char *name, char *out, size_t n);

#endif
