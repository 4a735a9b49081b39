/*
 * mllp.c — MLLP over TCP (see mllp.h): an accept thread and one thread per
 * connection (senders wait for each ACK before the next message, so a
 * connection is sequential by nature; concurrency comes from connections).
 *
 * Framing, per the MLLP release 2 envelope: a frame starts with VT (0x0B)
 * and ends with FS CR (0x1C 0x0D). Bytes outside a frame other than
 * whitespace are kept (quarantined) as "outside a frame". A frame larger
 * than max_frame is read to its end and quarantined (its start), with an AR
 * whose MSA-2 echoes the control id when the MSH could be read. A frame cut
 * off by the connection closing is quarantined as unterminated (no ACK can
 * be sent; the sender still holds it). Nothing received is dropped.
 *
 * Who may send (docs/tls.md): the accept thread looks the peer's address
 * up in the peers file (peers.h) before anything is read; a peer not listed
 * (or, without a peers file, one that is not loopback) is closed at once,
 * logged and written to the access log. A listed peer's messages go to
 * ingest_hl7_as with its ODS codes, so it can write only as the
 * organisations it is. With TLS, the connection thread runs the handshake
 * (bounded by TLS_HANDSHAKE_TIMEOUT_MS) and then reads and writes TLS
 * records instead of the socket: the framing above does not change.
 */
#include "mllp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../base/netaddr.h"
#include "hl7.h"

#define VT              0x0B
#define FS              0x1C
#define CR              0x0D
#define IDLE_TIMEOUT_MS (10 * 60 * 1000)

typedef struct conn {
    mllp_server *srv;
    int fd;
    tls_conn *tls;          /* NULL: plain TCP */
    const peers_entry *who; /* its line in the peers file; NULL: no peers file */
    char peer[64];
    struct conn *next;
} conn;

/* Refused connections in the access log, per address: the first
 * REFUSALS_LOGGED of each minute one by one, the rest counted and written
 * as one event when the minute is over (at the address's next refusal, when
 * its slot is taken by another address, or at stop). Otherwise an address
 * that keeps connecting writes an event per attempt, and its flood fills
 * the log and slows the log's writer for every reader. The accept thread
 * alone touches the table. */
#define REFUSAL_SLOTS    256
#define REFUSALS_LOGGED  10
#define REFUSAL_WINDOW_S 60
typedef struct refusal {
    char ip[INET_ADDRSTRLEN]; /* "" = free */
    time_t start;             /* the minute's start (monotonic seconds) */
    int logged, unlogged;     /* this minute's refusals written and counted */
    const char *why;          /* the last reason (a static string) */
} refusal;

struct mllp_server {
    ingest *g;
    int lfd;
    int port;
    size_t max_frame;
    const tls_server *tls;
    const peers *peers;
    audit_log *audit;
    pthread_t acceptor;
    pthread_mutex_t lock;
    pthread_cond_t gone; /* a connection thread ended */
    conn *conns;
    int nconns;
    int stopping;
    refusal refused[REFUSAL_SLOTS];
};

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The connection's bytes in and out: TLS records, or the socket. */
static ssize_t conn_recv(conn *c, char *p, size_t n) {
    if (c->tls) return tls_recv(c->tls, p, n);
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        return r < 0 ? -1 : r;
    }
}

static int conn_send(conn *c, const char *p, size_t n) {
    return c->tls ? tls_send_all(c->tls, p, n) : write_all(c->fd, p, n);
}

static int send_frame(conn *c, const buf *ack) {
    buf f = {0};
    buf_putc(&f, VT);
    buf_append(&f, ack->p, ack->len);
    buf_putc(&f, FS);
    buf_putc(&f, CR);
    int r = conn_send(c, f.p, f.len);
    buf_free(&f);
    return r;
}

/* An oversized frame: quarantine what we kept of it, answer AR. */
static void oversized(conn *c, const buf *frame, size_t total) {
    char reason[128];
    snprintf(reason, sizeof reason, "frame of %zu bytes exceeds the limit of %zu bytes (first %zu kept)",
             total, c->srv->max_frame, frame->len);
    ingest_quarantine_raw(c->srv->g, frame->p, frame->len, c->peer, reason);
    arena a = {0};
    hl7_msg *m = NULL;
    hl7_error pe, he;
    hl7_parse(frame->p, frame->len, NULL, &a, &m, &pe);
    hl7_fail(&he, ST_TOO_LARGE, HL7_AR, HL7_ERR_INTERNAL, "", 0, -1, 0, 0, 0, 0, "%s", reason);
    buf ack = {0};
    hl7_ack_build(m, HL7_AR, &he, 1, NULL, &ack);
    send_frame(c, &ack);
    buf_free(&ack);
    arena_free(&a);
}

/* A whole frame arrived: store it (or quarantine it if oversized) and
 * answer. Returns -1 if the answer could not be sent. */
static int frame_complete(conn *c, const buf *frame, size_t total, buf *ack) {
    if (total > c->srv->max_frame) {
        oversized(c, frame, total);
        return 0;
    }
    buf_reset(ack);
    ingest_hl7_as(c->srv->g, frame->p ? frame->p : "", frame->len, c->peer, c->who ? c->who->ods : NULL,
                  c->who ? c->who->nods : 0, ack);
    return send_frame(c, ack);
}

static void *conn_main(void *arg) {
    conn *c = arg;
    mllp_server *srv = c->srv;
    buf frame = {0}, junk = {0}, ack = {0};
    int in_frame = 0, saw_fs = 0;
    size_t total = 0; /* bytes of the current frame, including any not kept */
    char rbuf[65536];
    if (srv->tls) {
        err e;
        if (tls_accept(srv->tls, c->fd, TLS_HANDSHAKE_TIMEOUT_MS, &c->tls, &e) != ST_OK) {
            log_warn("mllp: %s: %s", c->peer, e.msg);
            goto out;
        }
        if (log_enabled(LOG_DEBUG)) {
            char desc[128];
            tls_describe(c->tls, desc, sizeof desc);
            log_debug("mllp: %s: TLS %s", c->peer, desc);
        }
    }
    for (;;) {
        /* bytes GnuTLS has already decrypted are not on the socket */
        if (!c->tls || tls_pending(c->tls) == 0) {
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            int pr = poll(&p, 1, IDLE_TIMEOUT_MS);
            if (pr == 0) {
                log_info("mllp: %s idle, closing", c->peer);
                break;
            }
            if (pr < 0) {
                if (errno == EINTR) continue;
                break;
            }
        }
        ssize_t n = conn_recv(c, rbuf, sizeof rbuf);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)rbuf[i];
            if (!in_frame) {
                if (ch == VT) {
                    if (junk.len) {
                        ingest_quarantine_raw(srv->g, junk.p, junk.len, c->peer,
                                              "bytes outside an MLLP frame");
                        buf_reset(&junk);
                    }
                    in_frame = 1;
                    saw_fs = 0;
                    total = 0;
                    buf_reset(&frame);
                } else if (ch != '\r' && ch != '\n' && ch != ' ' && ch != '\t') {
                    if (junk.len < srv->max_frame) buf_putc(&junk, (char)ch);
                }
                continue;
            }
            if (saw_fs) {
                /* FS CR ends the frame; FS followed by anything else also
                 * ends it (lenient), the byte is then looked at again */
                in_frame = 0;
                saw_fs = 0;
                if (frame_complete(c, &frame, total, &ack) != 0) goto out;
                if (ch != CR) i--;
                continue;
            }
            if (ch == FS) {
                saw_fs = 1;
                continue;
            }
            if (ch == VT && total == 0) continue; /* doubled start byte */
            total++;
            if (frame.len < srv->max_frame) buf_putc(&frame, (char)ch);
        }
        if (saw_fs) { /* FS was the last byte read: the frame is complete */
            in_frame = 0;
            saw_fs = 0;
            if (frame_complete(c, &frame, total, &ack) != 0) goto out;
        }
    }
out:
    if (in_frame && (frame.len || total)) {
        char reason[96];
        snprintf(reason, sizeof reason, "unterminated frame (%zu bytes) when the connection closed", total);
        ingest_quarantine_raw(srv->g, frame.p ? frame.p : "", frame.len, c->peer, reason);
    }
    if (junk.len) ingest_quarantine_raw(srv->g, junk.p, junk.len, c->peer, "bytes outside an MLLP frame");
    buf_free(&frame);
    buf_free(&junk);
    buf_free(&ack);
    tls_close(c->tls);
    close(c->fd);
    pthread_mutex_lock(&srv->lock);
    for (conn **pp = &srv->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    srv->nconns--;
    pthread_cond_broadcast(&srv->gone);
    pthread_mutex_unlock(&srv->lock);
    free(c);
    return NULL;
}

static void refusal_event(mllp_server *srv, const char *ip, const char *reason) {
    if (!srv->audit) return;
    char request[64];
    snprintf(request, sizeof request, "MLLP connection to port %d", srv->port);
    audit_event ev = {
        .user = "anonymous",
        .action = "login-failed",
        .outcome = "4",
        .purpose = "HSYSADMIN",
        .reason = reason,
        .source = ip,
        .request = request,
    };
    err e;
    if (audit_append(srv->audit, &ev, 0, &e) != ST_OK)
        log_error("access log: cannot append (login-failed): %s", e.msg);
}

/* The count of a slot's minute, as one event, and the slot emptied. */
static void refusal_flush(mllp_server *srv, refusal *r) {
    if (r->ip[0] && r->unlogged) {
        char reason[256];
        snprintf(
            reason, sizeof reason,
            "%d more connections refused within a minute of the first (only %d a minute are logged one by "
            "one): %s",
            r->unlogged, REFUSALS_LOGGED, r->why ? r->why : "");
        log_warn("mllp: refused %d more connections from %s", r->unlogged, r->ip);
        refusal_event(srv, r->ip, reason);
    }
    memset(r, 0, sizeof *r);
}

static time_t mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec;
}

/* A peer that may not connect: logged, and written to the access log as a
 * failed sign-in (outcome 4, minor failure) from its address, within the
 * per-address limit above. */
static void refuse(mllp_server *srv, const char *ip, int port, const char *why) {
    uint32_t h = 2166136261u; /* FNV-1a of the address */
    for (const char *p = ip; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    refusal *r = &srv->refused[h % REFUSAL_SLOTS];
    time_t now = mono_s();
    if (r->ip[0] && (strcmp(r->ip, ip) != 0 || now - r->start >= REFUSAL_WINDOW_S)) refusal_flush(srv, r);
    if (!r->ip[0]) {
        snprintf(r->ip, sizeof r->ip, "%s", ip);
        r->start = now;
    }
    r->why = why;
    if (r->logged >= REFUSALS_LOGGED) {
        r->unlogged++;
        return;
    }
    r->logged++;
    log_warn("mllp: refused a connection from %s:%d: %s", ip, port, why);
    refusal_event(srv, ip, why);
}

/* Who the peer at `sa` is: its entry in the peers file, or NULL with
 * *why set when it may not connect (NULL and *why NULL: no peers file, a
 * loopback peer). */
static const peers_entry *admit(const mllp_server *srv, const struct sockaddr_in *sa, const char **why) {
    netaddr a;
    *why = NULL;
    if (netaddr_from_sockaddr((const struct sockaddr *)sa, &a) != 0) {
        *why = "not an IP address";
        return NULL;
    }
    if (srv->peers) {
        const peers_entry *en = peers_match(srv->peers, &a);
        if (!en) *why = "its address is not in the peers file (--mllp-peers)";
        return en;
    }
    if (!netaddr_is_loopback(&a)) *why = "not a loopback address, and there is no peers file (--mllp-peers)";
    return NULL;
}

static void *accept_main(void *arg) {
    mllp_server *srv = arg;
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        int fd = accept(srv->lfd, (struct sockaddr *)&sa, &sl);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            break; /* listener shut down */
        }
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
        const char *why;
        const peers_entry *who = admit(srv, &sa, &why);
        if (why) {
            close(fd);
            refuse(srv, ip, ntohs(sa.sin_port), why);
            continue;
        }
        pthread_mutex_lock(&srv->lock);
        if (srv->stopping || srv->nconns >= MLLP_MAX_CONNECTIONS) {
            pthread_mutex_unlock(&srv->lock);
            close(fd);
            continue;
        }
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            pthread_mutex_unlock(&srv->lock);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->srv = srv;
        c->fd = fd;
        c->who = who;
        snprintf(c->peer, sizeof c->peer, "mllp://%s:%d", ip, ntohs(sa.sin_port));
        if (who) log_debug("mllp: %s is %s (peers line %d)", c->peer, who->text, who->line);
        c->next = srv->conns;
        srv->conns = c;
        srv->nconns++;
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, conn_main, c) != 0) {
            srv->conns = c->next;
            srv->nconns--;
            close(fd);
            free(c);
        }
        pthread_attr_destroy(&at);
        pthread_mutex_unlock(&srv->lock);
    }
    return NULL;
}

status mllp_start(ingest *g, const mllp_config *cfg, mllp_server **out, err *e) {
    const char *addr = cfg->addr ? cfg->addr : "127.0.0.1";
    int port = cfg->port;
    mllp_server *srv = calloc(1, sizeof *srv);
    if (!srv) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    srv->g = g;
    srv->max_frame = cfg->max_frame ? cfg->max_frame : MLLP_DEFAULT_MAX_FRAME;
    srv->tls = cfg->tls;
    srv->peers = cfg->peers;
    srv->audit = cfg->audit;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->gone, NULL);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        free(srv);
        return err_set(e, ST_INVALID, "invalid", "--mllp", "'%s' is not an IPv4 address", addr);
    }
    srv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (srv->lfd < 0 || bind(srv->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(srv->lfd, 128) != 0) {
        status st = err_set(e, ST_IO, "exception", "--mllp", "cannot listen on %s:%d: %s", addr, port,
                            strerror(errno));
        if (srv->lfd >= 0) close(srv->lfd);
        free(srv);
        return st;
    }
    socklen_t sl = sizeof sa;
    getsockname(srv->lfd, (struct sockaddr *)&sa, &sl);
    srv->port = ntohs(sa.sin_port);
    if (pthread_create(&srv->acceptor, NULL, accept_main, srv) != 0) {
        close(srv->lfd);
        free(srv);
        return err_set(e, ST_IO, "exception", NULL, "cannot start the MLLP accept thread");
    }
    if (srv->peers)
        log_info("mllp: listening on %s:%d%s for the %zu peers of the peers file", addr, srv->port,
                 srv->tls ? " (TLS)" : "", peers_count(srv->peers));
    else
        log_info("mllp: listening on %s:%d%s for loopback peers", addr, srv->port, srv->tls ? " (TLS)" : "");
    *out = srv;
    return ST_OK;
}

int mllp_port(const mllp_server *m) {
    return m->port;
}

void mllp_stop(mllp_server *srv) {
    if (!srv) return;
    pthread_mutex_lock(&srv->lock);
    srv->stopping = 1;
    pthread_mutex_unlock(&srv->lock);
    shutdown(srv->lfd, SHUT_RDWR);
    close(srv->lfd);
    pthread_join(srv->acceptor, NULL);
    for (int i = 0; i < REFUSAL_SLOTS; i++)
        refusal_flush(srv, &srv->refused[i]);
    /* wake the readers: a connection in the middle of a message finishes
     * it (ingest answers after the commit) and then sees end of input */
    pthread_mutex_lock(&srv->lock);
    for (conn *c = srv->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RD);
    while (srv->nconns > 0)
        pthread_cond_wait(&srv->gone, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->gone);
    free(srv);
}
