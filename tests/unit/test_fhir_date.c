/*
 * test_fhir_date.c — FHIR date/dateTime/instant ranges (src/fhir/fhirdate.c):
 * the exact [lo, hi] of every precision, leap years, time zones, the values
 * that must be rejected, and the instant formatter (checked against gmtime_r
 * and by round trip through the parser).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "fhir/fhirdate.h"

static void range_ok(const char *s, int64_t lo, int64_t hi) {
    int64_t a = 0, b = 0;
    int rc = fhir_date_range(s, strlen(s), &a, &b);
    if (rc != 0) fail_msg("rejected valid date \"%s\"", s);
    if (a != lo || b != hi)
        fail_msg("\"%s\": got [%lld, %lld], want [%lld, %lld]", s, (long long)a, (long long)b, (long long)lo,
                 (long long)hi);
}

static void range_bad(const char *s) {
    int64_t a = 0, b = 0;
    if (fhir_date_range(s, strlen(s), &a, &b) == 0) fail_msg("accepted invalid date \"%s\"", s);
}

static void test_precisions(void **state) {
    (void)state;
    /* 2024-01-01T00:00:00Z = 1704067200, 2025-01-01 = 1735689600 */
    range_ok("2024", 1704067200, 1735689599);
    /* February of a leap year: 2024-02-01 = 1706745600, 2024-03-01 = 1709251200 */
    range_ok("2024-02", 1706745600, 1709251199);
    /* 2024-03-05 = 1709596800 */
    range_ok("2024-03-05", 1709596800, 1709596800 + 86399);
    range_ok("2024-03-05T10:15Z", 1709633700, 1709633700 + 59);
    range_ok("2024-03-05T10:15:30Z", 1709633730, 1709633730);
    range_ok("2024-03-05T10:15:30.123Z", 1709633730, 1709633730);
    range_ok("2024-03-05T10:15:30.123456789Z", 1709633730, 1709633730);
    range_ok("1970-01-01T00:00:00Z", 0, 0);
    range_ok("1969-12-31T23:59:59Z", -1, -1);
    range_ok("1969", -31536000, -1);
    range_ok("2024-12", 1733011200, 1735689599);
}

static void test_extremes(void **state) {
    (void)state;
    int64_t lo, hi;
    assert_int_equal(fhir_date_range("0001", 4, &lo, &hi), 0);
    assert_int_equal(lo, FHIR_DATE_MIN);
    assert_int_equal(fhir_date_range("9999", 4, &lo, &hi), 0);
    assert_int_equal(hi, FHIR_DATE_MAX);
    range_ok("9999-12-31T23:59:59Z", FHIR_DATE_MAX, FHIR_DATE_MAX);
    range_ok("0001-01-01T00:00:00Z", FHIR_DATE_MIN, FHIR_DATE_MIN);
}

static void test_leap_years(void **state) {
    (void)state;
    range_ok("2024-02-29", 1709164800, 1709164800 + 86399);
    range_ok("2000-02-29", 951782400, 951782400 + 86399); /* divisible by 400 */
    range_ok("2023-02", 1675209600, 1677628799);          /* 28 days */
    range_bad("2023-02-29");
    range_bad("1900-02-29"); /* divisible by 100, not 400 */
    range_bad("2100-02-29");
    range_bad("2024-02-30");
    /* 2024 has 366 days, 2023 has 365 */
    int64_t lo, hi;
    assert_int_equal(fhir_date_range("2024", 4, &lo, &hi), 0);
    assert_int_equal(hi - lo + 1, 366 * 86400);
    assert_int_equal(fhir_date_range("2023", 4, &lo, &hi), 0);
    assert_int_equal(hi - lo + 1, 365 * 86400);
}

static void test_time_zones(void **state) {
    (void)state;
    range_ok("2024-03-05T10:15:30.123+01:00", 1709630130, 1709630130);
    range_ok("2024-01-01T00:00:00-05:00", 1704067200 + 5 * 3600, 1704067200 + 5 * 3600);
    range_ok("2024-01-01T00:00:00+00:00", 1704067200, 1704067200);
    range_ok("2024-01-01T00:00:00-00:00", 1704067200, 1704067200);
    range_ok("2024-01-01T05:30+05:30", 1704067200, 1704067200 + 59);
    range_ok("2024-01-01T00:00:00+14:00", 1704067200 - 14 * 3600, 1704067200 - 14 * 3600);
    /* no zone: read as UTC (search values) */
    range_ok("2024-03-05T10:15:30", 1709633730, 1709633730);
    range_ok("2024-03-05T10:15", 1709633700, 1709633700 + 59);
    /* a zone can move the instant across a day boundary */
    range_ok("2024-03-05T23:30:00-01:00", 1709596800 + 86400 + 1800, 1709596800 + 86400 + 1800);
    range_bad("2024-01-01T00:00:00+14:30");
    range_bad("2024-01-01T00:00:00+15:00");
    range_bad("2024-01-01T00:00:00+01:60");
}

static void test_invalid(void **state) {
    (void)state;
    const char *bad[] = {
        "",
        "0000",
        "24",
        "202",
        "20240",
        "2024-13",
        "2024-00",
        "2024-1",
        "2024-01-32",
        "2024-04-31",
        "2024-01-00",
        "2024-3-5",
        "2024/03/05",
        "2024-03-05T24:00",
        "2024-03-05T24:00:00Z",
        "2024-03-05T23:60",
        "2024-03-05T23:59:60Z",
        "2024-03-05T10",
        "2024-03-05T",
        "2024-03-05T10:15+01",
        "2024-03-05T10:15:30+0100",
        "2024-03-05T10:15:30+1:00",
        "2024-03-05T10:15:30.",
        "2024-03-05T10:15:30.Z",
        "2024-03-05T10:15:30Zjunk",
        "2024-03-05T10:15:30z",
        "2024-03-05t10:15:30Z",
        "2024-03-05 10:15:30Z",
        "2024-03-05Z",
        "2024Z",
        " 2024",
        "2024 ",
        "-2024",
        "+2024",
        "2024-03-05T1a:15Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        range_bad(bad[i]);
    int64_t lo, hi;
    assert_int_equal(fhir_date_range(NULL, 0, &lo, &hi), -1);
}

static void test_length_is_authoritative(void **state) {
    (void)state;
    int64_t lo, hi;
    const char *s = "2024-03-05T10:15:30Zgarbage";
    assert_int_equal(fhir_date_range(s, 10, &lo, &hi), 0);
    assert_int_equal(lo, 1709596800);
    assert_int_equal(hi, 1709596800 + 86399);
    assert_int_equal(fhir_date_range(s, 20, &lo, &hi), 0);
    assert_int_equal(lo, 1709633730);
    assert_int_equal(fhir_date_range(s, 21, &lo, &hi), -1);
    /* a NUL inside the counted length is not a valid character */
    assert_int_equal(fhir_date_range("2024\0", 5, &lo, &hi), -1);
}

static void test_instant_format(void **state) {
    (void)state;
    char out[32];
    fhir_instant_format(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");
    fhir_instant_format(INT64_C(1709630130123456), out);
    assert_string_equal(out, "2024-03-05T09:15:30.123456Z");
    fhir_instant_format(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999999Z");
    fhir_instant_format(INT64_C(951782400) * 1000000, out);
    assert_string_equal(out, "2000-02-29T00:00:00.000000Z");
    fhir_instant_format(FHIR_DATE_MAX * 1000000 + 999999, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999999Z");
    fhir_instant_format(FHIR_DATE_MIN * 1000000, out);
    assert_string_equal(out, "0001-01-01T00:00:00.000000Z");
    /* out of range: clamped */
    fhir_instant_format(INT64_MAX, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999999Z");
    fhir_instant_format(INT64_MIN, out);
    assert_string_equal(out, "0001-01-01T00:00:00.000000Z");
    assert_int_equal(strlen(out), 27);
}

/* Every day from 0001 to 9999 (step of 13 days to keep it quick, plus
 * every day around leap days): format, parse back, compare; and agree with
 * gmtime_r where time_t covers it. */
static void test_format_roundtrip(void **state) {
    (void)state;
    char out[32];
    for (int64_t s = FHIR_DATE_MIN; s <= FHIR_DATE_MAX; s += 13 * 86400 + 3607) {
        int64_t lo, hi;
        fhir_instant_format(s * 1000000, out);
        if (fhir_date_range(out, strlen(out), &lo, &hi) != 0) fail_msg("cannot parse back %s", out);
        if (lo != s || hi != s) fail_msg("%s: %lld != %lld", out, (long long)lo, (long long)s);
        time_t t = (time_t)s;
        struct tm tm;
        if (gmtime_r(&t, &tm)) {
            char ref[40];
            snprintf(ref, sizeof ref, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
            if (strncmp(out, ref, 19) != 0) fail_msg("%s != gmtime %s", out, ref);
        }
    }
}

static void test_now(void **state) {
    (void)state;
    int64_t a = fhir_now_usec();
    time_t t = time(NULL);
    assert_true(a / 1000000 >= (int64_t)t - 2 && a / 1000000 <= (int64_t)t + 2);
    assert_true(fhir_now_usec() >= a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precisions),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_leap_years),
        cmocka_unit_test(test_time_zones),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_length_is_authoritative),
        cmocka_unit_test(test_instant_format),
        cmocka_unit_test(test_format_roundtrip),
        cmocka_unit_test(test_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
