/*
 * mllp.h — the MLLP listener: HL7 v2 over TCP, framed as
 *   0x0B <message> 0x1C 0x0D
 * Every message goes through ingest (group commit) and its ACK is written
 * back in a frame of its own after the commit.
 */
#ifndef CONCORD_INGEST_MLLP_H
#define CONCORD_INGEST_MLLP_H

#include <stddef.h>

#include "../base/status.h"
#include "ingest.h"

typedef struct mllp_server mllp_server;

#define MLLP_DEFAULT_PORT 2575
#define MLLP_DEFAULT_MAX_FRAME (8u << 20)
#define MLLP_MAX_CONNECTIONS 512

/* Listen on addr:port (port 0 = any free port). max_frame 0 = default. */
status mllp_start(ingest *g, const char *addr, int port, size_t max_frame, mllp_server **out, err *e);
int mllp_port(const mllp_server *m);
/* Stop accepting, let every message already received be stored and
 * answered, close the connections, free. */
void mllp_stop(mllp_server *m);

#endif
