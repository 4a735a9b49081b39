/*
 * fuzz_auditblock.c — libFuzzer harness for the access log's block decoder
 * (src/access/auditblock.c), which verify and every access-log query run on
 * text read from the database (where whoever tampers with it chooses it).
 * Checks, for any input: the events decoded lie within the input, in order;
 * re-encoding them (ablock_put and their hashes) gives back exactly the bytes
 * they came from (one encoding per event: what the hash covers is what is
 * stored); decoding with terminate gives the same events with NUL-terminated
 * fields.
 *
 * Seeds: fuzz/corpus/auditblock/. Build: cmake -DCONCORD_FUZZ=ON with clang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "access/auditblock.h"
#include "base/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *p = malloc(size + 1), *q = malloc(size + 1);
    if (!p || !q) abort();
    memcpy(p, data, size);
    memcpy(q, data, size);
    p[size] = q[size] = 0;
    ablock_ev *evs = NULL, *tevs = NULL;
    size_t cap = 0, tcap = 0;
    char why[160], twhy[160];
    long n = ablock_decode(p, size, 1, 0, &evs, &cap, why, sizeof why);
    if (n < 0 || (why[0] == 0 && n == 0 && size != 0)) abort();
    buf b = {0};
    size_t end = 0;
    for (long i = 0; i < n; i++) {
        const ablock_ev *ev = &evs[i];
        if (ev->off != end || ev->off + ev->len + 64 > size || ev->hash != p + ev->off + ev->len) abort();
        if (ev->r.seq != 1 + i) abort();
        buf_reset(&b);
        ablock_put(&b, &ev->r);
        if (b.len != ev->len || memcmp(b.p, p + ev->off, b.len) != 0) abort();
        end = ev->off + ev->len + 64;
    }
    if (why[0] == 0 && end != size) abort();
    long tn = ablock_decode(q, size, 1, 1, &tevs, &tcap, twhy, sizeof twhy);
    if (tn != n || strcmp(why, twhy) != 0) abort();
    for (long i = 0; i < n; i++)
        for (int t = 0; t < NT; t++)
            if (tevs[i].r.len[t] != evs[i].r.len[t] || strlen(tevs[i].r.txt[t]) > tevs[i].r.len[t]) abort();
    buf_free(&b);
    free(evs);
    free(tevs);
    free(p);
    free(q);
    return 0;
}
