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

#include "../base/buf.h"
#include "../base/log.h"
#include "../fhir/rest.h"

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

static enum MHD_Result send_buf(struct MHD_Connection *c, int status, const char *ctype, buf *b, const char *rid,
                                const rest_response *rs) {
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
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
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

static void landing_page(http_server *h, buf *b) {
    pthread_mutex_lock(&h->counts_lock);
    time_t now = time(NULL);
    if (!h->counts_html || now - h->counts_at >= 10) {
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
    buf_puts(b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>concord</title>"
                "<style>body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;"
                "color:#1d2733}table{border-collapse:collapse}td,th{padding:.25rem .75rem;text-align:left;"
                "border-bottom:1px solid #d8dde3}td:last-child,th:last-child{text-align:right}"
                "code{background:#eef1f4;padding:.1rem .3rem}</style></head><body>");
    buf_printf(b, "<h1>concord</h1><p>Integrated care server, version %s. FHIR R4 at <code>", h->cfg.version);
    buf_html_escape(b, h->base);
    buf_puts(b, "</code>, storage: ");
    buf_html_escape(b, store_backend(h->s));
    buf_puts(b, ".</p><ul><li><a href=\"/fhir/metadata\">CapabilityStatement</a> (<code>/fhir/metadata</code>)</li>"
                "<li><a href=\"/fhir/Patient?_count=20\">Patients</a></li></ul><h2>Data held</h2>");
    buf_puts(b, h->counts_html);
    pthread_mutex_unlock(&h->counts_lock);
    buf_puts(b, "</body></html>");
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
    if (strcmp(url, "/fhir") == 0 || strncmp(url, "/fhir/", 6) == 0) {
        if (rq->too_large) {
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
            };
            rest_handle(&h->rest, &r, &rs);
            buf_free(&qs);
        }
        ret = send_buf(c, rs.status, rs.content_type, &rs.body, rq->rid, &rs);
    } else if (strcmp(url, "/") == 0 && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
        rs.status = 200;
        landing_page(h, &rs.body);
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
    pthread_mutex_init(&h->counts_lock, NULL);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->addr ? cfg->addr : "127.0.0.1", &sa.sin_addr) != 1) {
        free(h);
        return err_set(e, ST_INVALID, "invalid", "--http", "'%s' is not an IPv4 address", cfg->addr);
    }
    /* MHD_USE_ITC lets http_stop quiesce the listener. The connection memory
     * limit bounds a request's head (URL, headers): 128 KiB takes long
     * search URLs, which libmicrohttpd would otherwise refuse with an HTML
     * page of its own (its default is 32 KiB). Not more: libmicrohttpd
     * zeroes the whole pool for every request on a kept-alive connection,
     * and at 256 KiB that memset was a fifth of a read's CPU. */
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_USE_ITC, 0,
                            NULL, NULL,
                            on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
                            (unsigned)threads, MHD_OPTION_NOTIFY_COMPLETED, request_completed, h,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_UNESCAPE_CALLBACK,
                            unescape, h,
                            MHD_OPTION_EXTERNAL_LOGGER, log_mhd, h, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_END);
    if (!h->d) {
        pthread_mutex_destroy(&h->counts_lock);
        free(h);
        return err_set(e, ST_IO, "exception", "--http", "cannot listen on %s:%d (in use, or not permitted)",
                       cfg->addr ? cfg->addr : "127.0.0.1", cfg->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    if (cfg->public_base) snprintf(h->base, sizeof h->base, "%s", cfg->public_base);
    else snprintf(h->base, sizeof h->base, "http://%s:%d/fhir", cfg->addr ? cfg->addr : "127.0.0.1", h->port);
    h->rest.store = s;
    h->rest.version = h->cfg.version;
    h->rest.max_body = h->cfg.max_body;
    memcpy(h->rest.ext, cfg->ext, sizeof h->rest.ext);
    h->rest.n_ext = cfg->n_ext;
    log_info("http: listening on %s:%d with %d worker threads", cfg->addr ? cfg->addr : "127.0.0.1", h->port, threads);
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
