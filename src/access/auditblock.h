/*
 * auditblock.h — the access log's events as they are stored (docs/audit.md).
 *
 * The log is a table of blocks (audit_block), each holding the events
 * seq .. last in one text column: for every event, in seq order, the
 * netstrings (netstring.h) of its fifteen columns in the order of
 * audit_columns, then the 64 lower-case hex digits of its hash:
 *
 *   event_n = ns(at) ns(user) ns(role) ns(org) ns(action) ns(outcome)
 *             ns(status) ns(rtype) ns(rid) ns(pkey) ns(patient_id)
 *             ns(purpose) ns(reason) ns(source) ns(request)
 *   hash_n  = hex(BLAKE2b-256(key; hash_{n-1} || ns(seq_n) || event_n))
 *
 * with hash_0 = 64 '0's: the chain of the row-per-event log that came
 * before (migration 12 repacked its rows without changing a hash).
 *
 * A block is written whole, in the transaction that appends its events;
 * one row per block rather than per event is what makes logging every
 * read affordable (bench/access.py).
 */
#ifndef CONCORD_AUDITBLOCK_H
#define CONCORD_AUDITBLOCK_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"

#define AUDIT_HASH_HEX  64
#define AUDIT_SHORT_MAX 256  /* bytes kept of short fields */
#define AUDIT_LONG_MAX  2000 /* bytes kept of reason and request */
#define AUDIT_KEY_BYTES 32

/* The text fields of an event and its integer fields. */
enum {
    T_USER,
    T_ROLE,
    T_ORG,
    T_ACTION,
    T_OUTCOME,
    T_RTYPE,
    T_RID,
    T_PATIENT,
    T_PURPOSE,
    T_REASON,
    T_SOURCE,
    T_REQUEST,
    NT
};
enum { I_AT, I_STATUS, I_PKEY, NI };

typedef struct arow {
    int64_t seq;
    int64_t num[NI];
    const char *txt[NT]; /* NUL-terminated unless decoded with terminate = 0 */
    size_t len[NT];
} arow;

/* The columns in stored (and hashed) order. */
typedef struct acolumn {
    const char *name;
    int text; /* 1: txt[idx], 0: num[idx] */
    int idx;
    size_t max; /* text: bytes kept */
} acolumn;
extern const acolumn audit_columns[];
#define AUDIT_NCOLUMNS 15

/* Append event r's netstrings (without its hash). */
void ablock_put(buf *b, const arow *r);

/* n bytes as 2n lower-case hex digits and a NUL into out. */
void ablock_hex(const unsigned char *b, size_t n, char *out);

/* The key absorbed once; hashing an event starts from a copy. */
void ablock_keyed(crypto_generichash_state *st, const unsigned char key[AUDIT_KEY_BYTES]);
/* hash of the event whose netstrings are enc[0..n), numbered seq, after
 * prev (64 hex digits), as hex into out[65]. */
void ablock_hash(const crypto_generichash_state *keyed, const char *prev, int64_t seq, const char *enc,
                 size_t n, char out[AUDIT_HASH_HEX + 1]);

typedef struct ablock_ev {
    arow r;
    size_t off, len;  /* its netstrings within the block */
    const char *hash; /* its 64 hex digits within the block */
} ablock_ev;

/* Decode the block text p[0..n) whose first event is `first` into
 * (*evs)[0..count), growing *evs (*cap entries; free() it). terminate = 1
 * turns the ',' after each text field into a NUL (p is then no longer the
 * stored text: hash before, or decode a copy). Returns the number of
 * events decoded; when the text is not all events, why says what and
 * where (why[0] is 0 otherwise) and the count is of those before it. */
long ablock_decode(char *p, size_t n, int64_t first, int terminate, ablock_ev **evs, size_t *cap, char *why,
                   size_t nwhy);

#endif
