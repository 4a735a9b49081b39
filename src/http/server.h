/*
 * server.h — concord's HTTP server (libmicrohttpd): the FHIR API under
 * /fhir, the landing page at /, and the plumbing between them (request
 * bodies, limits, request ids, access log lines, graceful shutdown), over
 * HTTPS when given a certificate.
 */
#ifndef CONCORD_HTTP_SERVER_H
#define CONCORD_HTTP_SERVER_H

#include <stddef.h>

#include "../base/status.h"
#include "../fhir/rest.h"
#include "../store/store.h"

typedef struct http_server http_server;

typedef struct http_config {
    const char *addr;    /* "127.0.0.1" */
    int port;            /* 8080; 0 = any free port */
    int threads;         /* worker threads; 0 = 2 x cores */
    size_t max_body;     /* bytes; larger bodies get 413 */
    const char *version; /* concord version */
    const char *public_base; /* base URL to advertise, or NULL to derive */
    rest_ext ext[REST_MAX_EXT]; /* operations of other modules under /fhir */
    size_t n_ext;
    /* Access control (src/access). With `auth` set, every request under
     * /fhir but the CapabilityStatement must authenticate (Bearer token, or
     * the session cookie from POST /auth/login with X-CSRF-Token on
     * anything but GET), is authorised by the REST layer, and is written
     * to `audit`. NULL only for in-process tests of the HTTP plumbing. */
    struct auth *auth;
    struct audit_log *audit;
    /* HTTPS: the server's certificate (chain) and private key as PEM text
     * (src/base/tls.h loads and checks them), borrowed until http_stop.
     * Both NULL: plain HTTP. */
    const char *tls_cert_pem;
    const char *tls_key_pem;
} http_config;

status http_start(store *s, const http_config *cfg, http_server **out, err *e);
/* The port actually bound (useful when cfg->port was 0). */
int http_port(const http_server *h);
/* Stop accepting, let in-flight requests finish, free. */
void http_stop(http_server *h);

#endif
