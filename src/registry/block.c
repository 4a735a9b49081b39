/*
 * block.c — blocking rules and candidate-pair generation (see block.h).
 *
 * block_pairs hashes every record's key under every rule (64-bit FNV-1a of
 * the key string; 0 = no key), then for each rule sorts (hash, record) and
 * walks each run of equal hashes. A pair already produced by an earlier rule
 * is recognised by the two records' equal, non-zero hashes under that rule,
 * so no set of emitted pairs is kept. Records in a skipped (oversized) block
 * get hash 0 under that rule first, so later rules do not think the pair was
 * compared. A 64-bit hash collision can only add a pair (or, with odds of
 * 2^-64 per pair, skip one).
 *
 * Invariant: keys never contain the empty string; a rule whose fields are
 * missing yields no key, never a key shared by all such records.
 */
#include "block.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t put(char *out, size_t cap, const char *fmt, const char *a, const char *b, const char *c) {
    int k = snprintf(out, cap, fmt, a, b, c);
    if (k < 0) return 0;
    return (size_t)k < cap ? (size_t)k : cap - 1;
}

static int full_dob(const reg_person *p) {
    return p->dob.y && p->dob.m && p->dob.d;
}

static size_t key_nhs(const reg_person *p, char *out, size_t cap) {
    if (!p->nhs_valid || !p->nhs[0]) return 0;
    return put(out, cap, "%s%s%s", p->nhs, "", "");
}

static size_t key_dob_family(const reg_person *p, char *out, size_t cap) {
    if (!full_dob(p) || !p->family.soundex[0]) return 0;
    char d[24];
    snprintf(d, sizeof d, "%04d%02d%02d", p->dob.y, p->dob.m, p->dob.d);
    return put(out, cap, "%s|%s%s", d, p->family.soundex, "");
}

static size_t key_dob_given(const reg_person *p, char *out, size_t cap) {
    if (!full_dob(p) || !p->given.soundex[0]) return 0;
    char d[24];
    snprintf(d, sizeof d, "%04d%02d%02d", p->dob.y, p->dob.m, p->dob.d);
    return put(out, cap, "%s|%s%s", d, p->given.soundex, "");
}

/* Name codes with the year and month of birth: catches a wrong day. */
static size_t key_names_ym(const reg_person *p, char *out, size_t cap) {
    if (!full_dob(p) || !p->family.soundex[0] || !p->given.nysiis[0]) return 0;
    char y[24];
    snprintf(y, sizeof y, "%04d%02d", p->dob.y, p->dob.m);
    return put(out, cap, "%s|%s|%s", p->family.soundex, p->given.nysiis, y);
}

/* Name codes with the year and the day and month as an unordered pair:
 * catches day and month transposed. */
static size_t key_names_dm(const reg_person *p, char *out, size_t cap) {
    if (!full_dob(p) || !p->family.soundex[0] || !p->given.nysiis[0]) return 0;
    int lo = p->dob.d < p->dob.m ? p->dob.d : p->dob.m, hi = p->dob.d < p->dob.m ? p->dob.m : p->dob.d;
    char y[32];
    snprintf(y, sizeof y, "%04d{%02d,%02d}", p->dob.y, lo, hi);
    return put(out, cap, "%s|%s|%s", p->family.soundex, p->given.nysiis, y);
}

static size_t key_postcode_given(const reg_person *p, char *out, size_t cap) {
    if (p->postcode.kind != CMP_PC_FULL || !p->given.len) return 0;
    char g[2] = {p->given.s[0], 0};
    return put(out, cap, "%s|%s%s", p->postcode.pc, g, "");
}

static const block_rule default_rules[] = {
    {"nhs", key_nhs, {[FS_NHS] = 1}},
    {"dob_family", key_dob_family, {[FS_DOB] = 1, [FS_FAMILY] = 1}},
    {"dob_given", key_dob_given, {[FS_DOB] = 1, [FS_GIVEN] = 1}},
    {"names_ym", key_names_ym, {[FS_FAMILY] = 1, [FS_GIVEN] = 1, [FS_DOB] = 1}},
    {"names_dm", key_names_dm, {[FS_FAMILY] = 1, [FS_GIVEN] = 1, [FS_DOB] = 1}},
    {"postcode_given", key_postcode_given, {[FS_POSTCODE] = 1, [FS_GIVEN] = 1}},
};

const block_rule *block_default_rules(size_t *nrules) {
    *nrules = sizeof default_rules / sizeof default_rules[0];
    return default_rules;
}

size_t block_key(const block_rule *r, const reg_person *p, char out[BLOCK_KEY_MAX]) {
    out[0] = 0;
    size_t k = r->key(p, out, BLOCK_KEY_MAX);
    if (k == 0) out[0] = 0;
    return k;
}

static uint64_t key_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

typedef struct hrec {
    uint64_t h;
    uint32_t i;
} hrec;

static int hrec_cmp(const void *x, const void *y) {
    const hrec *a = x, *b = y;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

status block_pairs(const reg_person *p, size_t n, const block_rule *rules, size_t nrules, size_t max_block,
                   int dedupe, block_pair_fn fn, void *arg, block_stats *stats, err *e) {
    status rc = ST_OK;
    uint64_t *keys = NULL;
    hrec *recs = NULL;
    block_stats st;
    memset(&st, 0, sizeof st);
    if (nrules == 0 || nrules > BLOCK_MAX_RULES) {
        rc = err_set(e, ST_INVALID, "value", "block_pairs", "%zu rules (1..%d allowed)", nrules,
                     BLOCK_MAX_RULES);
        goto out;
    }
    if (n >= UINT32_MAX) {
        rc = err_set(e, ST_INVALID, "too-costly", "block_pairs", "%zu records: at most 2^32 - 1", n);
        goto out;
    }
    if (max_block == 0) max_block = 1000;
    if (n < 2) goto out;
    keys = malloc(n * nrules * sizeof *keys);
    recs = malloc(n * sizeof *recs);
    if (!keys || !recs) {
        rc = err_set(e, ST_NOMEM, "exception", "block_pairs", "out of memory for %zu records", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t r = 0; r < nrules; r++) {
            char k[BLOCK_KEY_MAX];
            size_t kl = block_key(&rules[r], &p[i], k);
            keys[i * nrules + r] = kl ? key_hash(k, kl) : 0;
        }
    for (size_t r = 0; r < nrules; r++) {
        size_t nr = 0;
        for (size_t i = 0; i < n; i++)
            if (keys[i * nrules + r]) recs[nr++] = (hrec){keys[i * nrules + r], (uint32_t)i};
        st.keyed[r] = nr;
        qsort(recs, nr, sizeof *recs, hrec_cmp);
        for (size_t b = 0; b < nr;) {
            size_t end = b + 1;
            while (end < nr && recs[end].h == recs[b].h)
                end++;
            size_t size = end - b;
            if (size > max_block) {
                st.oversized_blocks++;
                st.oversized_records += size;
                for (size_t k = b; k < end; k++)
                    keys[(size_t)recs[k].i * nrules + r] = 0;
            } else {
                for (size_t x = b; x < end; x++)
                    for (size_t y = x + 1; y < end; y++) {
                        uint32_t i = recs[x].i, j = recs[y].i;
                        if (dedupe) {
                            int seen = 0;
                            for (size_t q = 0; q < r && !seen; q++) {
                                uint64_t ki = keys[(size_t)i * nrules + q];
                                seen = ki && ki == keys[(size_t)j * nrules + q];
                            }
                            if (seen) {
                                st.duplicates++;
                                continue;
                            }
                        }
                        st.pairs[r]++;
                        if (fn(arg, i, j, (int)r)) {
                            st.stopped = 1;
                            goto out;
                        }
                    }
            }
            b = end;
        }
    }
out:
    if (stats) *stats = st;
    free(keys);
    free(recs);
    return rc;
}
