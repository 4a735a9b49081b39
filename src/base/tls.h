/*
 * tls.h — TLS for concord's listeners (GnuTLS): the server's certificate and
 * private key, loaded once from PEM files with an error that names the file
 * at fault, and TLS sessions over accepted sockets for listeners that do
 * their own I/O (MLLP). The HTTP listener hands the same PEM text to
 * libmicrohttpd, which runs its own GnuTLS sessions. docs/tls.md.
 *
 * Threads: a tls_server is read-only once loaded and shared by every
 * connection; a tls_conn belongs to one thread.
 *
 * Ownership: tls_server_load borrows the paths; the tls_server owns the PEM
 * texts it returns (valid until tls_server_free, which wipes the key). A
 * tls_conn borrows its socket (tls_close does not close it) and its
 * tls_server (which must outlive it).
 */
#ifndef CONCORD_TLS_H
#define CONCORD_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "status.h"

typedef struct tls_server tls_server;
typedef struct tls_conn tls_conn;

#define TLS_HANDSHAKE_TIMEOUT_MS 10000

/* Read and check a PEM certificate (chain: the server's first) and its PEM
 * private key (unencrypted: PKCS#8, PKCS#1 or SEC1). Fails with ST_IO or
 * ST_INVALID and err.where = the file at fault when a file cannot be read,
 * holds no certificate or no key, or the key is not the certificate's. An
 * expired or not yet valid certificate is loaded with a warning (clients
 * will refuse it; the operator sees why). */
status tls_server_load(const char *cert_file, const char *key_file, tls_server **out, err *e);
void tls_server_free(tls_server *t);
/* The files' text, NUL-terminated (for libmicrohttpd). */
const char *tls_server_cert_pem(const tls_server *t);
const char *tls_server_key_pem(const tls_server *t);

/* Run the server side of a handshake on connected socket `fd`, giving up
 * after timeout_ms. ST_IO with the reason when it fails (a client that
 * does not speak TLS, or one that gave up). */
status tls_accept(const tls_server *t, int fd, int timeout_ms, tls_conn **out, err *e);
/* Up to n bytes of application data: > 0 bytes read, 0 at the end of the
 * stream (the peer closed, with or without close_notify), -1 on error. */
ssize_t tls_recv(tls_conn *c, void *p, size_t n);
/* Decrypted bytes already buffered (readable without waiting for the
 * socket: poll(2) on the socket would not see them). */
size_t tls_pending(const tls_conn *c);
/* Send all n bytes. 0, or -1 on error. */
int tls_send_all(tls_conn *c, const void *p, size_t n);
/* Say goodbye (close_notify if the socket takes it at once, not waiting for
 * the peer's; the socket is left non-blocking, for closing) and free. NULL
 * is fine. */
void tls_close(tls_conn *c);
/* The negotiated parameters, as GnuTLS describes them:
 * "(TLS1.3)-(ECDHE-X25519)-(RSA-PSS-RSAE-SHA256)-(AES-256-GCM)". */
void tls_describe(const tls_conn *c, char *out, size_t n);

#endif
