/*
 * tls.c — TLS for the listeners, on GnuTLS (see tls.h).
 *
 * Loading checks each file on its own before handing the pair to GnuTLS,
 * so that an error names the file at fault: the certificate file must hold
 * at least one PEM certificate, the key file an unencrypted PEM private
 * key, and the key must be the first certificate's (GnuTLS checks that
 * when the pair is set on the credentials).
 *
 * Sessions: GnuTLS's default priorities (the system's policy: TLS 1.2 and
 * 1.3 with its approved suites), no client certificate asked for (peers are
 * told apart by address: src/ingest/peers.h), GNUTLS_NO_SIGNAL so a write
 * to a peer that left is an error, not a SIGPIPE. Renegotiation requests
 * (TLS 1.2) are declined with a warning alert and the session goes on.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

#define TLS_FILE_MAX (1u << 20) /* bytes of a certificate or key file */

struct tls_server {
    gnutls_certificate_credentials_t cred;
    char *cert_pem;
    size_t cert_len;
    char *key_pem;
    size_t key_len;
};

struct tls_conn {
    gnutls_session_t s;
};

/* The whole file, NUL-terminated, into *out (malloc'd). */
static status read_pem(const char *path, const char *what, char **out, size_t *len, err *e) {
    status rc = ST_OK;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        rc = err_set(e, ST_IO, "exception", path, "cannot read the TLS %s file %s: %s", what, path,
                     strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > TLS_FILE_MAX) {
        rc = err_set(e, ST_INVALID, "invalid", path, "the TLS %s file %s is %s", what, path,
                     S_ISREG(st.st_mode) ? "larger than 1 MiB" : "not a regular file");
        goto out;
    }
    size_t n = (size_t)st.st_size;
    char *p = malloc(n + 1);
    if (!p) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    if (n && fread(p, 1, n, f) != n) {
        free(p);
        rc = err_set(e, ST_IO, "exception", path, "cannot read the TLS %s file %s", what, path);
        goto out;
    }
    p[n] = 0;
    *out = p;
    *len = n;
    if (strcmp(what, "key") == 0 && (st.st_mode & 077))
        log_warn("tls: the key file %s can be read by other users (chmod 600 it)", path);
out:
    if (f) fclose(f);
    return rc;
}

static void wipe_free(char *p, size_t n) {
    if (!p) return;
    explicit_bzero(p, n);
    free(p);
}

static void format_time(time_t t, char *out, size_t n) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* The certificate file: at least one certificate; say what it is, and warn
 * when it is not valid now. */
static status check_cert(const char *path, const char *pem, size_t len, err *e) {
    gnutls_x509_crt_t *crts = NULL;
    unsigned int n = 0;
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)len};
    int r = gnutls_x509_crt_list_import2(&crts, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0 || n == 0)
        return err_set(e, ST_INVALID, "invalid", path,
                       "the TLS certificate file %s holds no PEM certificate (%s)", path,
                       r < 0 ? gnutls_strerror(r) : "none found");
    gnutls_datum_t dn = {NULL, 0};
    time_t from = gnutls_x509_crt_get_activation_time(crts[0]),
           until = gnutls_x509_crt_get_expiration_time(crts[0]);
    char f[40] = "?", u[40] = "?";
    if (from != (time_t)-1) format_time(from, f, sizeof f);
    if (until != (time_t)-1) format_time(until, u, sizeof u);
    gnutls_x509_crt_get_dn2(crts[0], &dn);
    const char *subject = dn.data ? (const char *)dn.data : "?";
    time_t now = time(NULL);
    if (until != (time_t)-1 && now > until)
        log_warn("tls: the certificate in %s (%s) expired on %s: clients will refuse it", path, subject, u);
    else if (from != (time_t)-1 && now < from)
        log_warn("tls: the certificate in %s (%s) is not valid until %s: clients will refuse it", path,
                 subject, f);
    else
        log_info("tls: certificate %s from %s (%u in the chain), valid until %s", subject, path, n, u);
    gnutls_free(dn.data);
    for (unsigned int i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    return ST_OK;
}

static status check_key(const char *path, const char *pem, size_t len, err *e) {
    if (strstr(pem, "ENCRYPTED"))
        return err_set(e, ST_INVALID, "invalid", path,
                       "the TLS key file %s holds an encrypted key: concord needs it unencrypted "
                       "(protect the file instead: chmod 600)",
                       path);
    gnutls_x509_privkey_t key;
    if (gnutls_x509_privkey_init(&key) < 0) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)len};
    int r = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_x509_privkey_deinit(key);
    if (r < 0)
        return err_set(e, ST_INVALID, "invalid", path, "the TLS key file %s holds no PEM private key (%s)",
                       path, gnutls_strerror(r));
    return ST_OK;
}

status tls_server_load(const char *cert_file, const char *key_file, tls_server **out, err *e) {
    status rc = ST_OK;
    *out = NULL;
    tls_server *t = calloc(1, sizeof *t);
    if (!t) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    rc = read_pem(cert_file, "certificate", &t->cert_pem, &t->cert_len, e);
    if (rc == ST_OK) rc = read_pem(key_file, "key", &t->key_pem, &t->key_len, e);
    if (rc == ST_OK) rc = check_cert(cert_file, t->cert_pem, t->cert_len, e);
    if (rc == ST_OK) rc = check_key(key_file, t->key_pem, t->key_len, e);
    if (rc != ST_OK) goto out;
    if (gnutls_certificate_allocate_credentials(&t->cred) < 0) {
        t->cred = NULL;
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    gnutls_datum_t c = {(unsigned char *)t->cert_pem, (unsigned int)t->cert_len},
                   k = {(unsigned char *)t->key_pem, (unsigned int)t->key_len};
    int r = gnutls_certificate_set_x509_key_mem(t->cred, &c, &k, GNUTLS_X509_FMT_PEM);
    if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
        rc = err_set(e, ST_INVALID, "invalid", key_file,
                     "the TLS key in %s is not the key of the certificate in %s", key_file, cert_file);
    else if (r < 0)
        rc = err_set(e, ST_INVALID, "invalid", cert_file,
                     "the TLS certificate %s and key %s cannot be used: %s", cert_file, key_file,
                     gnutls_strerror(r));
out:
    if (rc != ST_OK)
        tls_server_free(t);
    else
        *out = t;
    return rc;
}

void tls_server_free(tls_server *t) {
    if (!t) return;
    if (t->cred) gnutls_certificate_free_credentials(t->cred);
    free(t->cert_pem);
    wipe_free(t->key_pem, t->key_len);
    free(t);
}

const char *tls_server_cert_pem(const tls_server *t) {
    return t->cert_pem;
}
const char *tls_server_key_pem(const tls_server *t) {
    return t->key_pem;
}

status tls_accept(const tls_server *t, int fd, int timeout_ms, tls_conn **out, err *e) {
    status rc = ST_OK;
    *out = NULL;
    tls_conn *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    int r = gnutls_init(&c->s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);
    if (r < 0) {
        c->s = NULL;
        rc = err_set(e, ST_NOMEM, "exception", NULL, "TLS: %s", gnutls_strerror(r));
        goto out;
    }
    if ((r = gnutls_set_default_priority(c->s)) < 0 ||
        (r = gnutls_credentials_set(c->s, GNUTLS_CRD_CERTIFICATE, t->cred)) < 0) {
        rc = err_set(e, ST_INTERNAL, "exception", NULL, "TLS: %s", gnutls_strerror(r));
        goto out;
    }
    gnutls_certificate_server_set_request(c->s, GNUTLS_CERT_IGNORE);
    gnutls_transport_set_int(c->s, fd);
    gnutls_handshake_set_timeout(c->s,
                                 timeout_ms > 0 ? (unsigned)timeout_ms : GNUTLS_DEFAULT_HANDSHAKE_TIMEOUT);
    do {
        r = gnutls_handshake(c->s);
    } while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_TIMEDOUT);
    if (r < 0) {
        const char *why = gnutls_strerror(r);
        if (r == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || r == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
            r == GNUTLS_E_UNEXPECTED_PACKET)
            why = "the client does not speak TLS";
        else if (r == GNUTLS_E_TIMEDOUT)
            why = "timed out";
        rc = err_set(e, ST_IO, "exception", NULL, "TLS handshake failed: %s", why);
        goto out;
    }
out:
    if (rc != ST_OK) {
        if (c->s) gnutls_deinit(c->s);
        free(c);
    } else {
        *out = c;
    }
    return rc;
}

ssize_t tls_recv(tls_conn *c, void *p, size_t n) {
    for (;;) {
        ssize_t r = gnutls_record_recv(c->s, p, n);
        if (r >= 0) return r;
        if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN) continue;
        if (r == GNUTLS_E_REHANDSHAKE) {
            gnutls_alert_send(c->s, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
            continue;
        }
        if (r == GNUTLS_E_PREMATURE_TERMINATION) return 0; /* closed without close_notify */
        log_debug("tls: %s", gnutls_strerror((int)r));
        return -1;
    }
}

size_t tls_pending(const tls_conn *c) {
    return gnutls_record_check_pending(c->s);
}

int tls_send_all(tls_conn *c, const void *p, size_t n) {
    const char *q = p;
    while (n) {
        ssize_t w = gnutls_record_send(c->s, q, n);
        if (w == GNUTLS_E_INTERRUPTED || w == GNUTLS_E_AGAIN) {
            /* GnuTLS keeps the record: the retry passes no data */
            do {
                w = gnutls_record_send(c->s, NULL, 0);
            } while (w == GNUTLS_E_INTERRUPTED || w == GNUTLS_E_AGAIN);
        }
        if (w < 0) return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

void tls_close(tls_conn *c) {
    if (!c) return;
    /* the close_notify goes out if the socket takes it now; a peer that
     * stopped reading must not hold the connection's thread (and so a
     * shutdown) on a full send buffer */
    int fd = gnutls_transport_get_int(c->s);
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    gnutls_bye(c->s, GNUTLS_SHUT_WR);
    gnutls_deinit(c->s);
    free(c);
}

void tls_describe(const tls_conn *c, char *out, size_t n) {
    char *d = gnutls_session_get_desc(c->s);
    snprintf(out, n, "%s", d ? d : "?");
    gnutls_free(d);
}
