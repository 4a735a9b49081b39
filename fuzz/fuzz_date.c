/*
 * fuzz_date.c — libFuzzer harness for FHIR date ranges (src/fhir/fhirdate.c).
 * Checks, for any input the parser accepts: lo <= hi, the interval is at most
 * a (leap) year long, and an instant inside 0001..9999 formats and parses
 * back to itself. Also formats the first 8 input bytes as an instant.
 *
 * Seeds: fuzz/corpus/date/. Build: cmake -DCONCORD_FUZZ=ON with clang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/fhirdate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t lo, hi;
    if (fhir_date_range((const char *)data, size, &lo, &hi) == 0) {
        if (lo > hi || hi - lo >= 366 * 86400) abort();
        if (lo >= FHIR_DATE_MIN && lo <= FHIR_DATE_MAX) {
            char out[32];
            int64_t l2, h2;
            fhir_instant_format(lo * 1000000, out);
            if (strlen(out) != 27) abort();
            if (fhir_date_range(out, 27, &l2, &h2) != 0 || l2 != lo || h2 != lo) abort();
        }
    }
    if (size >= 8) {
        int64_t us;
        char out[32];
        memcpy(&us, data, 8);
        fhir_instant_format(us, out);
        if (strlen(out) != 27) abort();
    }
    return 0;
}
