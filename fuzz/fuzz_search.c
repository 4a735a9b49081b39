/*
 * fuzz_search.c — libFuzzer harness for FHIR search parsing
 * (src/fhir/search.c). Input: "Type?query" — the bytes before the first '?'
 * name the resource type (an unknown or missing type searches Observation),
 * the rest is a query string. It is split (search_split_query) and parsed
 * (search_parse) strictly and leniently, in an arena freed after each input.
 *
 * Checks, beyond the sanitizers:
 *  - the splitter never yields NULL names/values, nor more pairs than '&'s + 1;
 *  - a parsed query is well formed: 0 <= count <= SEARCH_MAX_COUNT,
 *    offset >= 0, a canonical string, every clause of an indexed parameter
 *    has values (or is :missing), date ranges have lo <= hi, numbers lie in
 *    their precision range, chains name their target type;
 *  - whatever parses strictly parses leniently to the same clauses, with
 *    nothing ignored;
 *  - the canonical form (used for paging links) parses again to the same
 *    number of clauses, includes and sorts.
 *
 * Seeds: fuzz/corpus/search/. Build: cmake -DCONCORD_FUZZ=ON with clang, or
 * by hand with only the sources it needs: clang -fsanitize=fuzzer,address,
 * undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_search.c, src/base/ *.c and
 * src/fhir/{search,model,model_gen,fhirdate}.c, -ljansson -lm.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/search.h"

static void check_clause(const search_clause *c, int depth) {
    if (depth > 8) abort();
    if (c->target == ST_PARAM && !c->sp) abort();
    if (c->modifier == MOD_MISSING) {
        if (c->n_values != 0 || (c->missing != 0 && c->missing != 1)) abort();
        return;
    }
    if (c->n_values < 1 || !c->values) abort();
    for (int i = 0; i < c->n_values; i++) {
        const search_value *v = &c->values[i];
        if (v->chain) {
            if (!v->chain_type || c->type != SP_REFERENCE) abort();
            check_clause(v->chain, depth + 1);
            continue;
        }
        switch (c->type) {
        case SP_DATE:
            if (v->lo > v->hi) abort();
            break;
        case SP_NUMBER:
        case SP_QUANTITY:
            if (!(v->nlo <= v->num && v->num <= v->nhi)) abort();
            break;
        case SP_STRING:
        case SP_URI:
            if (!v->text) abort();
            break;
        case SP_TOKEN:
            if (!v->code && !v->system) abort();
            if (c->target == ST_ID && !v->text) abort();
            break;
        case SP_REFERENCE:
            if (!v->ref_id && !v->ref_url) abort();
            break;
        default: abort();
        }
    }
}

static void check_query(const search_query *q) {
    if (q->count < 0 || q->count > SEARCH_MAX_COUNT || q->offset < 0) abort();
    if (!q->canonical || !q->type) abort();
    if (q->n_clauses < 0 || q->n_includes < 0 || q->n_sorts < 0) abort();
    for (int i = 0; i < q->n_clauses; i++)
        check_clause(&q->clauses[i], 0);
    for (int i = 0; i < q->n_includes; i++)
        if (!q->includes[i].sp || !q->includes[i].source_type) abort();
    for (int i = 0; i < q->n_sorts; i++)
        if (q->sorts[i].target == ST_PARAM && !q->sorts[i].sp) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    const char *qmark = memchr(s, '?', size);
    char type[64] = "Observation";
    const char *qs = s;
    size_t qlen = size;
    if (qmark) {
        size_t tlen = (size_t)(qmark - s);
        if (tlen < sizeof type) {
            char t[64];
            memcpy(t, s, tlen);
            t[tlen] = 0;
            if (fhir_resource_type(t)) memcpy(type, t, tlen + 1);
        }
        qs = qmark + 1;
        qlen = size - tlen - 1;
    }

    arena a = {0};
    search_param_kv *kv = NULL;
    int n = search_split_query(&a, qs, qlen, &kv);
    size_t amps = 0;
    for (size_t i = 0; i < qlen; i++)
        amps += qs[i] == '&';
    if (n < 0 || (size_t)n > amps + 1) abort();
    for (int i = 0; i < n; i++)
        if (!kv[i].name || !kv[i].value) abort();

    search_query strict, lenient;
    err e1 = {0}, e2 = {0};
    status r1 = search_parse(&a, type, kv, n, 0, &strict, &e1);
    status r2 = search_parse(&a, type, kv, n, 1, &lenient, &e2);
    if (r1 != ST_OK && !e1.msg[0]) abort(); /* every error says something */
    if (r2 == ST_OK) check_query(&lenient);
    if (r1 == ST_OK) {
        check_query(&strict);
        if (r2 != ST_OK || lenient.n_clauses != strict.n_clauses || lenient.ignored) abort();
        /* the canonical form parses back to the same search */
        search_param_kv *kv2 = NULL;
        int n2 = search_split_query(&a, strict.canonical, strlen(strict.canonical), &kv2);
        search_query again;
        err e3 = {0};
        if (search_parse(&a, type, kv2, n2, 0, &again, &e3) != ST_OK) abort();
        if (again.n_clauses != strict.n_clauses || again.n_includes != strict.n_includes ||
            again.n_sorts != strict.n_sorts || strcmp(again.canonical, strict.canonical) != 0)
            abort();
    }
    arena_free(&a);
    return 0;
}
