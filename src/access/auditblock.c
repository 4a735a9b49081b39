/*
 * auditblock.c — encoding, decoding and hashing of the access log's
 * events (auditblock.h).
 */
#include "auditblock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/netstring.h"

const acolumn audit_columns[] = {
    {"at", 0, I_AT, 0},
    {"user", 1, T_USER, AUDIT_SHORT_MAX},
    {"role", 1, T_ROLE, AUDIT_SHORT_MAX},
    {"org", 1, T_ORG, AUDIT_SHORT_MAX},
    {"action", 1, T_ACTION, AUDIT_SHORT_MAX},
    {"outcome", 1, T_OUTCOME, AUDIT_SHORT_MAX},
    {"status", 0, I_STATUS, 0},
    {"rtype", 1, T_RTYPE, AUDIT_SHORT_MAX},
    {"rid", 1, T_RID, AUDIT_SHORT_MAX},
    {"pkey", 0, I_PKEY, 0},
    {"patient_id", 1, T_PATIENT, AUDIT_SHORT_MAX},
    {"purpose", 1, T_PURPOSE, AUDIT_SHORT_MAX},
    {"reason", 1, T_REASON, AUDIT_LONG_MAX},
    {"source", 1, T_SOURCE, AUDIT_SHORT_MAX},
    {"request", 1, T_REQUEST, AUDIT_LONG_MAX},
};
_Static_assert(sizeof audit_columns / sizeof audit_columns[0] == AUDIT_NCOLUMNS, "fifteen columns");
_Static_assert(AUDIT_NCOLUMNS == NT + NI, "every field once");

void ablock_put(buf *b, const arow *r) {
    for (int i = 0; i < AUDIT_NCOLUMNS; i++) {
        const acolumn *c = &audit_columns[i];
        if (c->text)
            ns_put(b, r->txt[c->idx], r->len[c->idx]);
        else
            ns_put_int(b, r->num[c->idx]);
    }
}

void ablock_keyed(crypto_generichash_state *st, const unsigned char key[AUDIT_KEY_BYTES]) {
    crypto_generichash_init(st, key, AUDIT_KEY_BYTES, 32);
}

void ablock_hex(const unsigned char *b, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = 0;
}

void ablock_hash(const crypto_generichash_state *keyed, const char *prev, int64_t seq, const char *enc,
                 size_t n, char out[AUDIT_HASH_HEX + 1]) {
    crypto_generichash_state st = *keyed; /* the key block is compressed once, in ablock_keyed */
    unsigned char md[32];
    char head[AUDIT_HASH_HEX + 32];
    memcpy(head, prev, AUDIT_HASH_HEX);
    char num[24];
    size_t k = ns_decimal(num, seq), h = AUDIT_HASH_HEX;
    h += ns_decimal(head + h, (int64_t)k);
    head[h++] = ':';
    memcpy(head + h, num, k);
    h += k;
    head[h++] = ',';
    crypto_generichash_update(&st, (const unsigned char *)head, h);
    crypto_generichash_update(&st, (const unsigned char *)enc, n);
    crypto_generichash_final(&st, md, sizeof md);
    ablock_hex(md, sizeof md, out);
}

static int is_hex64(const char *p) {
    for (int i = 0; i < AUDIT_HASH_HEX; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

long ablock_decode(char *p, size_t n, int64_t first, int terminate, ablock_ev **evs, size_t *cap, char *why,
                   size_t nwhy) {
    const char *q = p, *end = p + n;
    long count = 0;
    why[0] = 0;
    while (q < end && !why[0]) {
        if ((size_t)count == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            ablock_ev *grown = realloc(*evs, ncap * sizeof *grown);
            if (!grown) {
                snprintf(why, nwhy, "out of memory decoding event %lld", (long long)(first + count));
                break;
            }
            *evs = grown;
            *cap = ncap;
        }
        ablock_ev *ev = &(*evs)[count];
        memset(ev, 0, sizeof *ev);
        ev->r.seq = first + count;
        ev->off = (size_t)(q - p);
        for (int i = 0; i < AUDIT_NCOLUMNS && !why[0]; i++) {
            const acolumn *c = &audit_columns[i];
            const char *s;
            size_t len;
            if (ns_get(&q, end, c->text ? c->max : 20, &s, &len) != 0) {
                snprintf(why, nwhy, "event %lld (byte %zu of its block): its %s is not a well-formed field",
                         (long long)ev->r.seq, (size_t)(q - p), c->name);
                break;
            }
            if (c->text) {
                ev->r.txt[c->idx] = s;
                ev->r.len[c->idx] = len;
            } else if (ns_parse_int(s, len, &ev->r.num[c->idx]) != 0) {
                snprintf(why, nwhy, "event %lld: its %s is not an integer", (long long)ev->r.seq, c->name);
            }
        }
        if (why[0]) break;
        ev->len = (size_t)(q - p) - ev->off;
        if ((size_t)(end - q) < AUDIT_HASH_HEX || !is_hex64(q)) {
            snprintf(why, nwhy, "event %lld: no hash after its fields", (long long)ev->r.seq);
            break;
        }
        ev->hash = q;
        q += AUDIT_HASH_HEX;
        count++;
    }
    if (terminate)
        for (long i = 0; i < count; i++)
            for (int t = 0; t < NT; t++) {
                arow *r = &(*evs)[i].r;
                ((char *)r->txt[t])[r->len[t]] = 0; /* the netstring's ',' */
            }
    return count;
}
