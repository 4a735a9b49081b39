/*
 * fuzz_validate.c — libFuzzer harness for the FHIR structural validator:
 * arbitrary bytes -> json_loadb -> fhir_validate, with and without an
 * expected resource type. Invariants checked: no crash or sanitizer report,
 * the status is OK, INVALID or UNPROCESSABLE, and a failure always carries
 * an issue type and a message.
 *
 * Build and run (see also CONCORD_FUZZ in CMakeLists.txt):
 *   clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *     fuzz/fuzz_validate.c src/fhir/validate.c src/fhir/model.c \
 *     src/fhir/model_gen.c src/base/status.c -ljansson -o fuzz_validate
 *   ./fuzz_validate -max_total_time=60 fuzz/corpus/validate
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "fhir/validate.h"

static void check(status rc, const err *e) {
    if (rc == ST_OK) return;
    if (rc != ST_INVALID && rc != ST_UNPROCESSABLE) abort();
    if (!e->issue || !e->msg[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t je;
    err e;
    json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &je);
    if (!j) return 0;
    check(fhir_validate(j, NULL, &e), &e);
    check(fhir_validate(j, "Patient", &e), &e);
    fhir_validate(j, NULL, NULL);
    json_decref(j);
    return 0;
}
