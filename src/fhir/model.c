/*
 * model.c — lookups over the generated FHIR R4 tables (model_gen.c).
 *
 * Invariants relied on (guaranteed by tools/gen_fhir_model.py, checked by
 * tests/unit/test_fhir_model.c): fhir_types is sorted by name, each type's
 * element range fhir_elements[first .. first+count) is sorted by path,
 * fhir_search_params by (resource, code), fhir_compartments by resource —
 * all in strcmp (byte) order. Every lookup is a binary search; nothing
 * allocates, and every returned pointer points into the static tables.
 */
#include "model.h"

#include <string.h>

/* Order a counted key (any bytes) against a NUL-terminated table string, as
 * strcmp would order the key if it were NUL-terminated. Never reads past
 * either string. */
static int cmp_n(const char *key, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)key[i], b = (unsigned char)s[i];
        if (b == 0) return 1;
        if (a != b) return a < b ? -1 : 1;
    }
    return s[n] == '\0' ? 0 : -1;
}

const fhir_type *fhir_type_findn(const char *name, size_t n) {
    size_t lo = 0, hi = fhir_n_types;
    if (!name) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_n(name, n, fhir_types[mid].name);
        if (c == 0) return &fhir_types[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const fhir_type *fhir_type_find(const char *name) {
    return name ? fhir_type_findn(name, strlen(name)) : NULL;
}

const fhir_type *fhir_resource_type(const char *name) {
    const fhir_type *t = fhir_type_find(name);
    if (!t || t->kind != FHIR_KIND_RESOURCE || t->abstract_) return NULL;
    return t;
}

const fhir_element *fhir_element_findn(const char *path, size_t n) {
    const char *dot;
    const fhir_type *t;
    size_t lo, hi;
    if (!path) return NULL;
    dot = memchr(path, '.', n);
    if (!dot) return NULL; /* type roots are not elements */
    t = fhir_type_findn(path, (size_t)(dot - path));
    if (!t) return NULL;
    lo = (size_t)t->first;
    hi = (size_t)t->first + (size_t)t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_n(path, n, fhir_elements[mid].path);
        if (c == 0) return &fhir_elements[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const fhir_element *fhir_element_find(const char *path) {
    return path ? fhir_element_findn(path, strlen(path)) : NULL;
}

/* Index of the first search parameter of `rtype` (or where it would be). */
static size_t sp_lower_bound(const char *rtype) {
    size_t lo = 0, hi = fhir_n_search_params;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(fhir_search_params[mid].resource, rtype) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const fhir_search_param *sp_find_exact(const char *rtype, const char *code) {
    size_t lo = 0, hi = fhir_n_search_params;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const fhir_search_param *p = &fhir_search_params[mid];
        int c = strcmp(rtype, p->resource);
        if (c == 0) c = strcmp(code, p->code);
        if (c == 0) return p;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const fhir_search_param *fhir_search_param_find(const char *rtype, const char *code) {
    const fhir_search_param *p = NULL;
    if (!code) return NULL;
    if (rtype) p = sp_find_exact(rtype, code);
    if (!p) p = sp_find_exact("DomainResource", code);
    if (!p) p = sp_find_exact("Resource", code);
    return p;
}

const fhir_search_param *fhir_search_params_of(const char *rtype, size_t *count) {
    size_t first, end;
    *count = 0;
    if (!rtype) return NULL;
    first = sp_lower_bound(rtype);
    end = first;
    while (end < fhir_n_search_params && strcmp(fhir_search_params[end].resource, rtype) == 0)
        end++;
    if (end == first) return NULL;
    *count = end - first;
    return &fhir_search_params[first];
}

const fhir_compartment *fhir_compartment_find(const char *rtype) {
    size_t lo = 0, hi = fhir_n_compartments;
    if (!rtype) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(rtype, fhir_compartments[mid].resource);
        if (c == 0) return &fhir_compartments[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *sp_type_name(sp_type t) {
    static const char *const names[] = {
        [SP_NUMBER] = "number",       [SP_DATE] = "date",
        [SP_STRING] = "string",       [SP_TOKEN] = "token",
        [SP_REFERENCE] = "reference", [SP_COMPOSITE] = "composite",
        [SP_QUANTITY] = "quantity",   [SP_URI] = "uri",
        [SP_SPECIAL] = "special",
    };
    if ((unsigned)t >= sizeof names / sizeof names[0] || !names[t]) return "unknown";
    return names[t];
}
