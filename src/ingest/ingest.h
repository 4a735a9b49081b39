/*
 * ingest.h — the ingest pipeline's write side: HL7 v2 messages from any
 * number of connections are stored by ONE writer thread in group commits
 * (many messages, one durable commit), and each sender gets its ACK only
 * after the commit that stored its message (or the quarantine record of it)
 * returned.
 *
 * Ownership: ingest_hl7 borrows `bytes` for the duration of the call.
 */
#ifndef CONCORD_INGEST_INGEST_H
#define CONCORD_INGEST_INGEST_H

#include <stddef.h>

#include "../base/buf.h"
#include "../base/status.h"
#include "../store/store.h"

typedef struct ingest ingest;

typedef struct ingest_stats {
    unsigned long messages, stored, duplicates, quarantined, commits, failed_commits;
} ingest_stats;

/* Start the writer thread. max_batch: most messages per commit (0 = 256). */
status ingest_start(store *s, int max_batch, ingest **out, err *e);
/* Drain what is queued, stop the writer, free. */
void ingest_stop(ingest *g);
void ingest_get_stats(ingest *g, ingest_stats *out);

/* Store one HL7 message (blocking): appends the acknowledgement (without
 * MLLP framing) to `ack`. The ACK is AA only if the message and everything
 * it produced are durably committed; AE/AR if it was quarantined (also
 * durably); AR with "retry" text if the commit itself failed (nothing
 * stored: the sender must resend). `source` names the peer. */
void ingest_hl7(ingest *g, const char *bytes, size_t len, const char *source, buf *ack);

/* ingest_hl7 for a sender that may send only as certain organisations: a
 * message whose sending facility (MSH-4.1) is not one of the `nfacilities`
 * ODS codes in `facilities` (compared without regard to case; all
 * borrowed) is refused — AR with an ERR at MSH-4, quarantined, nothing it
 * carries stored, and not answered as a duplicate of a message that was.
 * facilities NULL: any sending facility (ingest_hl7). */
void ingest_hl7_as(ingest *g, const char *bytes, size_t len, const char *source,
                   const char *const *facilities, size_t nfacilities, buf *ack);

/* Quarantine bytes that never became a message (an unterminated or
 * oversized frame): kept, never dropped, with the reason. Blocking. */
void ingest_quarantine_raw(ingest *g, const char *bytes, size_t len, const char *source, const char *reason);

/* Process a quarantined message again (after the cause was fixed: a code
 * table extended, a mapping corrected). On success the quarantined record
 * becomes 'replayed' and the new outcome is stored as for a new delivery;
 * `ack` gets the new acknowledgement. */
status ingest_replay(ingest *g, int64_t key, buf *ack, err *e);

#endif
