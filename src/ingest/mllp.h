/*
 * mllp.h — the MLLP listener: HL7 v2 over TCP, framed as
 *   0x0B <message> 0x1C 0x0D
 * Every message goes through ingest (group commit) and its ACK is written
 * back in a frame of its own after the commit. Optionally over TLS, and
 * only from the peers a peers file lists (docs/tls.md).
 */
#ifndef CONCORD_INGEST_MLLP_H
#define CONCORD_INGEST_MLLP_H

#include <stddef.h>

#include "../access/audit.h"
#include "../base/status.h"
#include "../base/tls.h"
#include "ingest.h"
#include "peers.h"

typedef struct mllp_server mllp_server;

#define MLLP_DEFAULT_PORT 2575
#define MLLP_DEFAULT_MAX_FRAME (8u << 20)
#define MLLP_MAX_CONNECTIONS 512

typedef struct mllp_config {
    const char *addr; /* an IPv4 address, "127.0.0.1" */
    int port;         /* 0 = any free port */
    size_t max_frame; /* 0 = MLLP_DEFAULT_MAX_FRAME */
    /* TLS on every connection (handshake first, then the same framing in
     * TLS records), or NULL for plain TCP. Borrowed: outlives the server. */
    const tls_server *tls;
    /* Who may connect and as whom (peers.h): a connection from an address
     * not listed is closed at once; a message whose MSH-4.1 is not one of
     * its peer's ODS codes is refused (ingest_hl7_as). NULL: only loopback
     * peers, any sending facility (local development). Borrowed. */
    const peers *peers;
    /* Refused connections are written here ("login-failed"). May be NULL. */
    audit_log *audit;
} mllp_config;

/* Listen as `cfg` says (cfg and what it points to are borrowed). */
status mllp_start(ingest *g, const mllp_config *cfg, mllp_server **out, err *e);
int mllp_port(const mllp_server *m);
/* Stop accepting, let every message already received be stored and
 * answered, close the connections, free. */
void mllp_stop(mllp_server *m);

#endif
