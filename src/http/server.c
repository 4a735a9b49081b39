/*
 * server.c — the HTTP front door, on libmicrohttpd with a pool of worker
 * threads (each keeps its own database connection through the store).
 *
 * Request life: MHD calls on_request repeatedly — first with the headers
 * (we allocate a per-connection request record), then with body chunks (we
 * append them, up to max_body; beyond it the request is marked too large and
 * the rest discarded), then once more with nothing left, when we dispatch:
 * /fhir/... to the FHIR REST layer (fhir/rest.c), / to the landing page.
 * Every response carries X-Request-Id; errors are OperationOutcomes.
 */
#include "server.h"
#include "landing.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "../access/auth.h"
#include "../access/guard.h"
#include "../base/buf.h"
#include "../base/log.h"
#include "../fhir/rest.h"
#include "../fhir/search.h"

struct http_server {
    struct MHD_Daemon *d;
    store *s;
    http_config cfg;
    rest_ctx rest;
    char base[256];
    int port;
    _Atomic unsigned long next_id;
    _Atomic long active; /* requests fully received and not yet completed */
    pthread_mutex_t counts_lock;
    char *counts_html;
    time_t counts_at;
};

typedef struct request {
    buf body;
    int too_large;
    int counted; /* included in http_server.active */
    char rid[20];
    struct timespec t0;
} request;

static void add_common_headers(struct MHD_Response *r, const char *rid) {
    MHD_add_response_header(r, "X-Request-Id", rid);
    MHD_add_response_header(r, "Server", "concord");
}

static enum MHD_Result send_buf_ex(struct MHD_Connection *c, int status, const char *ctype, buf *b, const char *rid,
                                   const rest_response *rs, const char *set_cookie) {
    size_t len = b->len;
    char *p = buf_take(b);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, p, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(p);
        return MHD_NO;
    }
    if (ctype && status != 204) MHD_add_response_header(r, "Content-Type", ctype);
    add_common_headers(r, rid);
    if (rs) {
        if (rs->etag[0]) MHD_add_response_header(r, "ETag", rs->etag);
        if (rs->location[0]) MHD_add_response_header(r, "Location", rs->location);
        if (rs->last_modified[0]) MHD_add_response_header(r, "Last-Modified", rs->last_modified);
        if (rs->content_location[0]) MHD_add_response_header(r, "Content-Location", rs->content_location);
        if (rs->progress[0]) MHD_add_response_header(r, "X-Progress", rs->progress);
        if (rs->access[0]) MHD_add_response_header(r, "X-Concord-Access", rs->access);
    }
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"concord\"");
    if (set_cookie) MHD_add_response_header(r, "Set-Cookie", set_cookie);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_buf(struct MHD_Connection *c, int status, const char *ctype, buf *b, const char *rid,
                                const rest_response *rs) {
    return send_buf_ex(c, status, ctype, b, rid, rs, NULL);
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe) {
    http_server *h = cls;
    request *rq = *con_cls;
    if (!rq) return;
    if (rq->counted) atomic_fetch_sub(&h->active, 1);
    buf_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

/* The page at `/` (landing.c): counts refreshed at most every 10 s. */
static void landing_page(http_server *h, buf *b, const acc_principal *who) {
    pthread_mutex_lock(&h->counts_lock);
    time_t now = time(NULL);
    int shows_counts = who && who->role != ROLE_PATIENT; /* landing.c shows them to no one else */
    if (shows_counts && (!h->counts_html || now - h->counts_at >= 10)) {
        buf t = {0};
        store_count *counts = NULL;
        size_t n = 0;
        err e;
        int64_t total = 0;
        if (store_counts(h->s, &counts, &n, &e) == ST_OK) {
            buf_puts(&t, "<table><tr><th>Resource type</th><th>Count</th></tr>");
            for (size_t i = 0; i < n; i++) {
                buf_puts(&t, "<tr><td><a href=\"/fhir/");
                buf_html_escape(&t, counts[i].type);
                buf_puts(&t, "?_count=20\">");
                buf_html_escape(&t, counts[i].type);
                buf_printf(&t, "</a></td><td>%lld</td></tr>", (long long)counts[i].count);
                total += counts[i].count;
            }
            buf_printf(&t, "<tr><th>Total</th><th>%lld</th></tr></table>", (long long)total);
            if (n == 0) {
                buf_reset(&t);
                buf_puts(&t, "<p>The store is empty.</p>");
            }
        } else {
            buf_puts(&t, "<p>Counts unavailable: ");
            buf_html_escape(&t, e.msg);
            buf_puts(&t, "</p>");
        }
        free(counts);
        free(h->counts_html);
        h->counts_html = buf_take(&t);
        h->counts_at = now;
    }
    http_landing_page(b, h->cfg.version, h->base, store_backend(h->s), who, h->counts_html);
    pthread_mutex_unlock(&h->counts_lock);
}

static int hexdig(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char *header(struct MHD_Connection *c, const char *name) {
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* Rebuild the raw query string from MHD's parsed arguments (MHD decodes
 * them; we re-encode so the FHIR layer sees one canonical form). */
typedef struct qs_ctx {
    buf *b;
} qs_ctx;

static enum MHD_Result qs_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    qs_ctx *q = cls;
    static const char hex[] = "0123456789ABCDEF";
    if (q->b->len) buf_putc(q->b, '&');
    for (int part = 0; part < 2; part++) {
        const char *s = part ? value : key;
        if (part) {
            if (!value) break;
            buf_putc(q->b, '=');
        }
        for (; *s; s++) {
            unsigned char ch = (unsigned char)*s;
            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                strchr("-._~:|/,$*", ch))
                buf_putc(q->b, (char)ch);
            else {
                buf_putc(q->b, '%');
                buf_putc(q->b, hex[ch >> 4]);
                buf_putc(q->b, hex[ch & 15]);
            }
        }
    }
    return MHD_YES;
}

/* ---- authentication ---------------------------------------------------- */

static void client_addr(struct MHD_Connection *c, char *out, size_t n) {
    out[0] = 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, out, (socklen_t)n);
}

static int is_safe_method(const char *m) { return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0; }

/* Who is asking: a Bearer token, or the session cookie (then, on anything
 * but GET/HEAD, the X-CSRF-Token header must match the session's token).
 * *have = 0 with ST_OK when the request carries no credentials at all. */
static status authenticate(http_server *h, struct MHD_Connection *c, const char *method, const char *addr,
                           acc_principal *who, int *have, err *e) {
    *have = 0;
    memset(who, 0, sizeof *who); /* stays zeroed unless the credentials are good */
    const char *authz = header(c, "Authorization");
    if (authz) {
        status rc = auth_bearer(h->cfg.auth, authz, addr, who, e);
        if (rc == ST_OK) *have = 1;
        return rc;
    }
    char sid[128];
    if (!auth_cookie_value(header(c, "Cookie"), auth_cookie_name(h->cfg.auth), sid, sizeof sid)) return ST_OK;
    status rc = auth_session(h->cfg.auth, sid, addr, who, e);
    if (rc != ST_OK) return rc;
    if (!is_safe_method(method) && !auth_csrf_ok(who, header(c, "X-CSRF-Token")))
        return err_set(e, ST_FORBIDDEN, "forbidden", "X-CSRF-Token",
                       "a request signed in with a session cookie must carry the session's X-CSRF-Token");
    *have = 1;
    return ST_OK;
}

/* POST /auth/login (JSON {"user","password"} or a form), POST /auth/logout,
 * GET /auth/session: sign-in for the web app. Logged in the access log. */
static enum MHD_Result auth_route(http_server *h, struct MHD_Connection *c, const char *url, const char *method,
                                  request *rq, const char *addr) {
    rest_response rs = {0};
    err e;
    char cookie[512] = "";
    status rc = ST_OK;
    acc_principal who;
    memset(&who, 0, sizeof who);
    json_t *out = NULL;
    if (strcmp(url, "/auth/login") == 0 && strcmp(method, "POST") == 0) {
        char user[128] = "", password[512] = "";
        json_t *j = json_loadb(rq->body.p ? rq->body.p : "", rq->body.len, 0, NULL);
        if (j) {
            const char *u = json_string_value(json_object_get(j, "user")),
                       *p = json_string_value(json_object_get(j, "password"));
            if (u) snprintf(user, sizeof user, "%s", u);
            if (p) snprintf(password, sizeof password, "%s", p);
            json_decref(j);
        } else if (rq->body.len) {
            arena a = {0};
            search_param_kv *kv = NULL;
            int n = search_split_query(&a, rq->body.p, rq->body.len, &kv);
            for (int i = 0; i < n; i++) {
                if (strcmp(kv[i].name, "user") == 0) snprintf(user, sizeof user, "%s", kv[i].value);
                if (strcmp(kv[i].name, "password") == 0) snprintf(password, sizeof password, "%s", kv[i].value);
            }
            arena_free(&a);
        }
        char sid[72];
        rc = auth_login(h->cfg.auth, user, password, addr, &who, sid, &e);
        sodium_memzero(password, sizeof password);
        if (rc == ST_OK) {
            auth_set_cookie(h->cfg.auth, sid, cookie, sizeof cookie);
            out = json_pack("{s:s, s:s, s:s, s:s, s:s}", "user", who.user, "display", who.display, "role",
                            acc_role_name(who.role), "organization", who.org, "csrf", who.csrf);
        }
        acc_principal tried = who;
        if (rc != ST_OK) {
            snprintf(tried.user, sizeof tried.user, "%s", user);
            snprintf(tried.addr, sizeof tried.addr, "%s", addr);
        }
        guard_audit(h->cfg.audit, &tried, rc == ST_OK ? "login" : "login-failed", NULL, NULL, 0, NULL,
                    rc == ST_OK ? 200 : status_http(rc), "HSYSADMIN", rc == ST_OK ? NULL : e.msg, method, url, NULL,
                    1);
    } else if (strcmp(url, "/auth/logout") == 0 && strcmp(method, "POST") == 0) {
        int have = 0;
        rc = authenticate(h, c, method, addr, &who, &have, &e);
        if (rc == ST_OK && (!have || !who.session[0]))
            rc = err_set(&e, ST_UNAUTHENTICATED, "login", NULL, "not signed in with a session");
        char sid[128];
        if (rc == ST_OK && auth_cookie_value(header(c, "Cookie"), auth_cookie_name(h->cfg.auth), sid, sizeof sid))
            rc = auth_logout(h->cfg.auth, sid, &e);
        if (rc == ST_OK) {
            auth_set_cookie(h->cfg.auth, NULL, cookie, sizeof cookie);
            out = json_pack("{s:b}", "signed_out", 1);
            guard_audit(h->cfg.audit, &who, "logout", NULL, NULL, 0, NULL, 200, "HSYSADMIN", NULL, method, url,
                        NULL, 0);
        }
    } else if (strcmp(url, "/auth/session") == 0 && is_safe_method(method)) {
        int have = 0;
        rc = authenticate(h, c, method, addr, &who, &have, &e);
        if (rc == ST_OK && !have) rc = err_set(&e, ST_UNAUTHENTICATED, "login", NULL, "not signed in");
        if (rc == ST_OK)
            out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "user", who.user, "display", who.display, "role",
                            acc_role_name(who.role), "organization", who.org, "patient", who.patient, "csrf",
                            who.csrf);
    } else {
        rc = err_set(&e, ST_NOT_FOUND, "not-found", NULL, "nothing at %s %s", method, url);
    }
    if (rc != ST_OK) {
        rest_error(&rs, &e);
    } else {
        char *text = json_dumps(out, JSON_COMPACT);
        rs.status = 200;
        rs.content_type = "application/json";
        if (text) buf_puts(&rs.body, text);
        free(text);
    }
    json_decref(out);
    enum MHD_Result ret = send_buf_ex(c, rs.status, rs.content_type, &rs.body, rq->rid, &rs, cookie[0] ? cookie : NULL);
    buf_free(&rs.body);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls) {
    http_server *h = cls;
    request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        snprintf(rq->rid, sizeof rq->rid, "%lx", atomic_fetch_add(&h->next_id, 1) + 1);
        clock_gettime(CLOCK_MONOTONIC, &rq->t0);
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->too_large && rq->body.len + *upload_size <= h->cfg.max_body)
            buf_append(&rq->body, upload_data, *upload_size);
        else
            rq->too_large = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    /* the whole request has arrived: from here it runs to completion, and
     * shutdown waits for it (one still uploading is simply dropped) */
    rq->counted = 1;
    atomic_fetch_add(&h->active, 1);
    log_set_request_id(rq->rid);
    rest_response rs = {0};
    enum MHD_Result ret;
    char addr[48];
    client_addr(c, addr, sizeof addr);
    if (h->cfg.auth && strncmp(url, "/auth/", 6) == 0) {
        ret = auth_route(h, c, url, method, rq, addr);
    } else if (strcmp(url, "/fhir") == 0 || strncmp(url, "/fhir/", 6) == 0) {
        acc_principal who;
        int have = 0;
        err ae;
        status arc = ST_OK;
        if (h->cfg.auth) arc = authenticate(h, c, method, addr, &who, &have, &ae);
        if (arc != ST_OK) {
            rest_error(&rs, &ae);
            /* who is refused: the session's user when the session was good
             * but the CSRF token was not, else anonymous (authenticate
             * leaves `who` zeroed when the credentials fail) */
            acc_principal anon;
            memset(&anon, 0, sizeof anon);
            snprintf(anon.user, sizeof anon.user, "anonymous");
            snprintf(anon.addr, sizeof anon.addr, "%s", addr);
            guard_audit(h->cfg.audit, who.user[0] ? &who : &anon, "login-failed", NULL, NULL, 0, NULL, rs.status,
                        NULL, ae.msg, method, url, NULL, 0);
        } else if (rq->too_large) {
            err e;
            err_set(&e, ST_TOO_LARGE, "too-costly", NULL, "the request body is larger than the limit of %zu bytes",
                    h->cfg.max_body);
            rest_error(&rs, &e);
        } else {
            buf qs = {0};
            qs_ctx q = {&qs};
            MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, qs_iter, &q);
            rest_request r = {
                .method = method,
                .path = url + 5,
                .query = qs.len ? qs.p : NULL,
                .body = rq->body.p,
                .body_len = rq->body.len,
                .content_type = header(c, "Content-Type"),
                .if_match = header(c, "If-Match"),
                .if_none_exist = header(c, "If-None-Exist"),
                .prefer = header(c, "Prefer"),
                .base_url = h->base,
                .who = have ? &who : NULL,
            };
            rest_handle(&h->rest, &r, &rs);
            buf_free(&qs);
        }
        ret = send_buf(c, rs.status, rs.content_type, &rs.body, rq->rid, &rs);
    } else if (strcmp(url, "/") == 0 && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
        /* signed in (a session cookie) or not: the page differs, never errs */
        acc_principal who;
        int have = 0;
        err ae;
        if (h->cfg.auth && authenticate(h, c, method, addr, &who, &have, &ae) != ST_OK) have = 0;
        rs.status = 200;
        landing_page(h, &rs.body, have ? &who : NULL);
        ret = send_buf(c, 200, "text/html; charset=utf-8", &rs.body, rq->rid, NULL);
    } else {
        err e;
        err_set(&e, ST_NOT_FOUND, "not-found", NULL, "nothing at %s %s: the FHIR API is at /fhir", method, url);
        rest_error(&rs, &e);
        ret = send_buf(c, rs.status, rs.content_type, &rs.body, rq->rid, NULL);
    }
    if (log_enabled(LOG_DEBUG) || rs.status >= 500) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - rq->t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - rq->t0.tv_nsec) / 1e6;
        log_msg(rs.status >= 500 ? LOG_ERROR : LOG_DEBUG, "%s %s -> %d (%.2f ms)", method, url, rs.status, ms);
    }
    buf_free(&rs.body);
    log_set_request_id(NULL);
    return ret;
}

/* Percent-decoding for URLs and query arguments, in place. "%00" is left
 * as written: a decoded NUL would silently cut the path short (so that
 * /fhir/Patient/%00x became a search of all patients); left alone it is an
 * invalid id or value and gets a precise error. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        int hi, lo;
        if (*r == '%' && (hi = hexdig(r[1])) >= 0 && (lo = hexdig(r[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

static void log_mhd(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    log_warn("http: %s", msg);
}

status http_start(store *s, const http_config *cfg, http_server **out, err *e) {
    http_server *h = calloc(1, sizeof *h);
    if (!h) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    h->s = s;
    h->cfg = *cfg;
    if (!h->cfg.max_body) h->cfg.max_body = 64u << 20;
    int threads = cfg->threads;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n * 2 : 4;
    }
    int tls = cfg->tls_cert_pem && cfg->tls_key_pem;
    if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        free(h);
        return err_set(e, ST_UNSUPPORTED, "not-supported", "--tls-cert",
                       "this libmicrohttpd was built without TLS support: HTTPS is not available");
    }
    /* HTTPS: libmicrohttpd runs GnuTLS with the PEM texts (MHD_OPTION_ARRAY
     * so that plain HTTP passes no TLS options at all) */
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    if (!tls) tls_opts[0].option = MHD_OPTION_END;
    pthread_mutex_init(&h->counts_lock, NULL);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->addr ? cfg->addr : "127.0.0.1", &sa.sin_addr) != 1) {
        pthread_mutex_destroy(&h->counts_lock);
        free(h);
        return err_set(e, ST_INVALID, "invalid", "--http", "'%s' is not an IPv4 address", cfg->addr);
    }
    /* MHD_USE_ITC lets http_stop quiesce the listener. The connection memory
     * limit bounds a request's head (URL, headers): 128 KiB takes long
     * search URLs, which libmicrohttpd would otherwise refuse with an HTML
     * page of its own (its default is 32 KiB). Not more: libmicrohttpd
     * zeroes the whole pool for every request on a kept-alive connection,
     * and at 256 KiB that memset was a fifth of a read's CPU. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (tls) flags |= MHD_USE_TLS;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, /* the logger first, or MHD warns */
                            MHD_OPTION_EXTERNAL_LOGGER, log_mhd, h, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                            MHD_OPTION_NOTIFY_COMPLETED, request_completed, h, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_UNESCAPE_CALLBACK,
                            unescape, h, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_ARRAY,
                            tls_opts, MHD_OPTION_END);
    if (!h->d) {
        pthread_mutex_destroy(&h->counts_lock);
        free(h);
        return err_set(e, ST_IO, "exception", "--http", "cannot listen on %s:%d (in use, or not permitted)",
                       cfg->addr ? cfg->addr : "127.0.0.1", cfg->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    if (cfg->public_base) snprintf(h->base, sizeof h->base, "%s", cfg->public_base);
    else
        snprintf(h->base, sizeof h->base, "%s://%s:%d/fhir", tls ? "https" : "http",
                 cfg->addr ? cfg->addr : "127.0.0.1", h->port);
    h->rest.store = s;
    h->rest.version = h->cfg.version;
    h->rest.max_body = h->cfg.max_body;
    memcpy(h->rest.ext, cfg->ext, sizeof h->rest.ext);
    h->rest.n_ext = cfg->n_ext;
    h->rest.guarded = cfg->auth != NULL;
    h->rest.audit = cfg->audit;
    log_info("http: listening on %s:%d (%s) with %d worker threads", cfg->addr ? cfg->addr : "127.0.0.1",
             h->port, tls ? "HTTPS" : "HTTP", threads);
    *out = h;
    return ST_OK;
}

int http_port(const http_server *h) { return h->port; }

void http_stop(http_server *h) {
    if (!h) return;
    /* stop accepting; let every request already begun run to completion and
     * its response be sent (a client must never lose the acknowledgement of
     * a write that was committed), for up to a minute; then close */
    MHD_socket ls = MHD_quiesce_daemon(h->d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    for (int i = 0; i < 6000 && atomic_load(&h->active) > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&h->active) > 0) log_warn("http: %ld requests still running at shutdown", atomic_load(&h->active));
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->counts_lock);
    free(h->counts_html);
    free(h);
}
