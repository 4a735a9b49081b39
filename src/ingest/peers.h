/*
 * peers.h — who may send HL7 v2 over MLLP, and as whom: the peers file
 * (`concord serve --mllp-peers FILE`, docs/tls.md).
 *
 * Format, one peer a line:
 *
 *     # comment (also after an entry)
 *     ADDR[/PREFIXLEN]  ODS[,ODS...]
 *
 *     10.20.1.15        RYJ            # the PAS at St Mary's
 *     10.20.8.0/24      RYJ01,RYJ02    # the lab systems' subnet
 *     fd00:1::/64       RQM
 *
 * ADDR is an IPv4 or IPv6 address; PREFIXLEN (0-32, 0-128) makes it a
 * network, whose host bits must be zero. The ODS codes (letters and digits,
 * at most PEERS_ODS_MAX characters, compared without regard to case) are the
 * organisations a connection from there may send as: the sending facility,
 * MSH-4.1, of each message must be one of them. When an address is inside
 * several networks the most specific (longest prefix) decides; the same
 * network twice is an error.
 *
 * Errors are reported as "NAME:LINE" (err.where) and what is wrong
 * (err.msg), so a CLI can print "peers.conf:3: ...".
 *
 * Ownership: a peers is immutable once parsed and may be shared by any
 * number of threads; entries and their strings belong to it and are
 * invalidated by peers_free.
 */
#ifndef CONCORD_INGEST_PEERS_H
#define CONCORD_INGEST_PEERS_H

#include <stddef.h>

#include "../base/netaddr.h"
#include "../base/status.h"

#define PEERS_ODS_MAX  15         /* an ODS code's characters (acc_principal.org holds 15) */
#define PEERS_FILE_MAX (4u << 20) /* bytes of a peers file */

typedef struct peers peers;

typedef struct peers_entry {
    netaddr net;            /* the network's address, host bits zero */
    int prefix;             /* its prefix length */
    const char *const *ods; /* the organisations it may send as */
    size_t nods;
    int line;      /* where it was written */
    char text[64]; /* the network as written, e.g. "10.20.8.0/24" */
} peers_entry;

/* Parse `len` bytes of peers-file text (borrowed; need not be
 * NUL-terminated). `name` (borrowed) names the source in errors. An empty
 * file (nothing but comments) parses to an empty list, which admits no
 * one. */
status peers_parse(const char *text, size_t len, const char *name, peers **out, err *e);
/* Read and parse the file at `path`. */
status peers_load(const char *path, peers **out, err *e);
void peers_free(peers *p);

size_t peers_count(const peers *p);
const peers_entry *peers_at(const peers *p, size_t i);
/* The entry that admits address `a` (longest prefix), or NULL. */
const peers_entry *peers_match(const peers *p, const netaddr *a);
/* Whether the entry lists ODS code `ods` (n bytes, borrowed). */
int peers_entry_allows(const peers_entry *en, const char *ods, size_t n);

#endif
