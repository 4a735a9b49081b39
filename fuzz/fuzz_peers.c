/*
 * fuzz_peers.c — libFuzzer harness for the MLLP peers file
 * (src/ingest/peers.c). Checks, for any input: a failure names a line of
 * the input ("fuzz:N", N within the input's lines); a success keeps the
 * invariants peers.h promises — networks with no host bits, no network
 * twice, every ODS code 1..PEERS_ODS_MAX letters and digits — and every
 * entry's own network address matches an entry at least as specific.
 *
 * Seeds: fuzz/corpus/peers/. Build: cmake -DCONCORD_FUZZ=ON with clang.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/peers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    peers *p = NULL;
    err e;
    status rc = peers_parse((const char *)data, size, "fuzz", &p, &e);
    if (rc != ST_OK) {
        if (p) abort();
        if (rc == ST_NOMEM) return 0;
        long lines = 1;
        for (size_t i = 0; i < size; i++)
            lines += data[i] == '\n';
        if (strncmp(e.where, "fuzz:", 5) != 0) abort();
        long line = strtol(e.where + 5, NULL, 10);
        if (line < 1 || line > lines || !e.msg[0]) abort();
        return 0;
    }
    size_t n = peers_count(p);
    for (size_t i = 0; i < n; i++) {
        const peers_entry *en = peers_at(p, i);
        if (en->prefix < 0 || en->prefix > netaddr_bits(&en->net)) abort();
        if (netaddr_host_bits_set(&en->net, en->prefix)) abort();
        if (en->nods == 0) abort();
        for (size_t k = 0; k < en->nods; k++) {
            size_t len = strlen(en->ods[k]);
            if (len == 0 || len > PEERS_ODS_MAX) abort();
            for (size_t c = 0; c < len; c++)
                if (!isalnum((unsigned char)en->ods[k][c])) abort();
            if (!peers_entry_allows(en, en->ods[k], len)) abort();
        }
        for (size_t j = 0; j < i; j++) {
            const peers_entry *o = peers_at(p, j);
            if (o->prefix == en->prefix && memcmp(&o->net, &en->net, sizeof o->net) == 0) abort();
        }
        const peers_entry *m = peers_match(p, &en->net);
        if (!m || m->prefix < en->prefix) abort();
    }
    peers_free(p);
    return 0;
}
