/*
 * fuzz_registry.c — libFuzzer harness for the registry's normalisers,
 * comparators, record comparison, blocking keys and the model-file parser
 * (src/registry/nhsno.c, compare.c, fs.c, block.c).
 *
 * The input is split at its first newline into two values a and b (all of
 * it is a when there is none). Each normaliser and parser reads a and b as
 * every kind of field; two records built from them are compared both ways;
 * the whole input is also parsed as a model file. Invariants checked:
 * similarities in [0, 1], symmetric, 1 on equal strings, Jaro-Winkler >=
 * Jaro; normalised names only A-Z and single inner spaces; Soundex is a
 * letter and three digits or empty; NYSIIS only letters; a VALID NHS number
 * is ten digits whose check digit holds; a parsed postcode re-parses to
 * itself; a parsed date is a real date; every comparison level is in range
 * (or missing) and the same both ways; blocking keys fit; a model that
 * parses writes back and parses to the same model.
 *
 * Seeds: fuzz/corpus/registry/ (names, dates, postcodes, NHS numbers,
 * a model file).
 *
 * Build and run (the core library, instrumented, as for the other harnesses):
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCONCORD_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_registry
 *   ./build-fuzz/fuzz_registry -max_total_time=60 -max_len=4096 work/ fuzz/corpus/registry
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/block.h"
#include "registry/compare.h"
#include "registry/fs.h"
#include "registry/nhsno.h"

#define CHECK(x)                                                                                             \
    do {                                                                                                     \
        if (!(x)) abort();                                                                                   \
    } while (0)

static void check_sim(const char *a, size_t an, const char *b, size_t bn) {
    double j = cmp_jaro(a, an, b, bn), j2 = cmp_jaro(b, bn, a, an);
    double w = cmp_jaro_winkler(a, an, b, bn), w2 = cmp_jaro_winkler(b, bn, a, an);
    CHECK(j >= 0.0 && j <= 1.0 && w >= j - 1e-12 && w <= 1.0 + 1e-12);
    CHECK(j == j2 && w == w2);
    CHECK(cmp_jaro(a, an, a, an) == 1.0);
}

static void check_name(const char *s, size_t n) {
    char out[64];
    size_t len = cmp_name_normalise(s, n, out, sizeof out);
    CHECK(len < sizeof out && strlen(out) == len);
    for (size_t i = 0; i < len; i++) {
        CHECK((out[i] >= 'A' && out[i] <= 'Z') || out[i] == ' ');
        if (out[i] == ' ') CHECK(i > 0 && i + 1 < len && out[i - 1] != ' ');
    }
    char sx[5];
    size_t k = cmp_soundex(s, n, sx);
    CHECK(k == strlen(sx) && (k == 0 || k == 4));
    if (k)
        CHECK(sx[0] >= 'A' && sx[0] <= 'Z' && sx[1] >= '0' && sx[1] <= '6' && sx[3] >= '0' && sx[3] <= '6');
    char ny[16];
    k = cmp_nysiis(s, n, ny, sizeof ny);
    CHECK(k == strlen(ny) && k < sizeof ny);
    for (size_t i = 0; i < k; i++)
        CHECK(ny[i] >= 'A' && ny[i] <= 'Z');
    cmp_name nm;
    cmp_name_prepare(&nm, s, n);
    CHECK(nm.len < CMP_NAME_MAX && strlen(nm.s) == nm.len);
}

static void check_scalar(const char *s, size_t n) {
    char nhs[11];
    nhsno_result r = nhsno_parse(s, n, nhs);
    if (r == NHSNO_VALID) {
        CHECK(strlen(nhs) == 10 && nhsno_check_digit(nhs) == nhs[9] - '0');
        CHECK(nhsno_parse(nhs, 10, nhs) == NHSNO_VALID);
    } else if (r == NHSNO_EMPTY || r == NHSNO_MALFORMED) {
        CHECK(nhs[0] == 0);
    }
    cmp_date d;
    if (cmp_date_parse(s, n, &d) == 0) {
        CHECK(d.y >= 1800 && d.y <= 2200 && d.m >= 0 && d.m <= 12 && d.d >= 0 && d.d <= 31);
        CHECK(cmp_dob_level(d, d) == (d.m && d.d ? CMP_DOB_EXACT : CMP_DOB_PARTIAL));
    } else {
        CHECK(d.y == 0 && d.m == 0 && d.d == 0);
    }
    cmp_postcode p, q;
    cmp_postcode_kind k = cmp_postcode_parse(s, n, &p);
    if (k == CMP_PC_FULL || k == CMP_PC_OUTWARD) {
        CHECK(cmp_postcode_parse(p.pc, strlen(p.pc), &q) == k && strcmp(p.pc, q.pc) == 0);
        CHECK(cmp_postcode_level(&p, &q) == (k == CMP_PC_FULL ? CMP_PC_LEVEL_FULL : CMP_PC_LEVEL_DISTRICT));
    } else {
        CHECK(p.pc[0] == 0 && cmp_postcode_level(&p, &p) == CMP_MISSING);
    }
    CHECK(cmp_sex_parse(s, n) <= CMP_SEX_OTHER);
    cmp_address a;
    cmp_address_prepare(&a, s, n);
    CHECK(a.ntok <= CMP_ADDR_TOKENS && a.nnum <= a.ntok);
    if (a.ntok) CHECK(cmp_address_level(&a, &a) == CMP_ADDR_EXACT && cmp_address_similarity(&a, &a) == 1.0);
}

static void record(reg_person *p, const char *s, size_t n) {
    reg_person_init(p);
    reg_person_set_nhs(p, s, n);
    reg_person_set_family(p, s, n);
    reg_person_set_given(p, s, n);
    reg_person_set_dob_text(p, s, n);
    reg_person_set_sex_text(p, s, n);
    reg_person_set_postcode(p, s, n);
    reg_person_set_address(p, s, n);
    reg_person_add_local_id(p, "X", 1, s, n);
}

static void check_records(const char *a, size_t an, const char *b, size_t bn) {
    reg_person x, y;
    record(&x, a, an);
    record(&y, b, bn);
    fs_vector v, w;
    fs_compare(&x, &y, &v);
    fs_compare(&y, &x, &w);
    for (int f = 0; f < FS_NFIELDS; f++) {
        CHECK(v.level[f] == FS_MISSING || v.level[f] < fs_field_levels((fs_field)f));
        CHECK(v.level[f] == w.level[f]);
    }
    fs_model m;
    fs_model_init(&m);
    double c[FS_NFIELDS];
    double wt = fs_weight(&m, &v, &x, &y, NULL, c);
    CHECK(wt == wt); /* not NaN */
    size_t nr;
    const block_rule *rules = block_default_rules(&nr);
    for (size_t r = 0; r < nr; r++) {
        char k[BLOCK_KEY_MAX];
        size_t kl = block_key(&rules[r], &x, k);
        CHECK(kl < BLOCK_KEY_MAX && strlen(k) == kl);
    }
}

static void check_model(const char *s, size_t n) {
    fs_model m, m2;
    err e;
    if (fs_model_from_json(s, n, &m, &e) != ST_OK) {
        CHECK(e.msg[0]);
        return;
    }
    buf b = {0};
    fs_model_to_json(&m, &b);
    CHECK(fs_model_from_json(b.p, b.len, &m2, &e) == ST_OK);
    CHECK(memcmp(&m, &m2, sizeof m) == 0);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t an = nl ? (size_t)(nl - s) : size;
    const char *b = nl ? nl + 1 : s + size;
    size_t bn = nl ? size - an - 1 : 0;
    check_sim(s, an, b, bn);
    check_name(s, an);
    check_name(b, bn);
    check_scalar(s, an);
    check_scalar(b, bn);
    check_records(s, an, b, bn);
    check_model(s, size);
    return 0;
}
