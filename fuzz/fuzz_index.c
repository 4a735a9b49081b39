/*
 * fuzz_index.c — libFuzzer harness for search-index extraction
 * (src/fhir/index.c). Input: a JSON resource; it is indexed as its own
 * resourceType when that is a known resource type, else as an Observation,
 * and the patient id is derived from the rows. An input starting with '@'
 * carries its own path program on the first line ("@name.given|gender\n{...}"),
 * evaluated on the JSON that follows, to fuzz the path parser. Every string
 * of the JSON is also run through fhir_string_normalize.
 *
 * Seeds: fuzz/corpus/index/. Build: cmake -DCONCORD_FUZZ=ON with clang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/index.h"

static void count_fn(void *ctx, const char *key, json_t *v) {
    (void)key;
    (void)v;
    (*(size_t *)ctx)++;
}

static void normalize_all(arena *a, json_t *j, int depth) {
    if (depth > 64) return;
    if (json_is_string(j)) {
        char *n = fhir_string_normalize(a, json_string_value(j));
        if (strlen(n) > json_string_length(j)) abort(); /* never longer than its input */
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) normalize_all(a, v, depth + 1);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) normalize_all(a, v, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256];
    const char *p = NULL;
    if (size > 0 && data[0] == '@') {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t n = nl ? (size_t)(nl - data) - 1 : size - 1;
        if (n >= sizeof path) return 0;
        memcpy(path, data + 1, n);
        path[n] = 0;
        if (strlen(path) != n) return 0; /* embedded NUL */
        p = path;
        size_t skip = nl ? (size_t)(nl - data) + 1 : size;
        data += skip;
        size -= skip;
    }
    json_t *res = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!res) return 0;
    arena a = {0};
    if (p) {
        size_t n = 0;
        fhir_path_eval(p, res, count_fn, &n);
    }
    const char *rt = json_string_value(json_object_get(res, "resourceType"));
    if (!rt || !fhir_resource_type(rt)) rt = "Observation";
    idx_rows rows = {0};
    if (fhir_index_resource(rt, res, &rows, &a) == 0) {
        for (size_t i = 0; i < rows.n; i++) {
            const idx_row *r = &rows.v[i];
            if (r->kind == IDX_DATE && r->lo > r->hi) abort();
            if (r->kind == IDX_TOKEN && !r->code) abort();
            if (r->kind == IDX_STRING && (!r->exact || !r->norm)) abort();
        }
        (void)fhir_index_patient_id(rt, res, &rows);
    } else if (json_is_object(res)) {
        abort(); /* a known type and an object must index */
    }
    normalize_all(&a, res, 0);
    arena_free(&a);
    json_decref(res);
    return 0;
}
