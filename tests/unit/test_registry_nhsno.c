/*
 * test_registry_nhsno.c — NHS number normalisation and the modulus 11 check
 * (src/registry/nhsno.c): valid numbers in every written form, wrong check
 * digits, nine digits whose check value is 10, check value 11 -> 0, the
 * repeated-digit placeholders, malformed input, and the property that makes
 * the check worth having: every single-digit error and every adjacent
 * transposition of a valid number is caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "registry/nhsno.h"

static nhsno_result parse(const char *s, char out[11]) {
    return nhsno_parse(s, strlen(s), out);
}

static void test_valid_forms(void **state) {
    (void)state;
    char out[11];
    /* 943 476 5919: 9*10+4*9+3*8+4*7+7*6+6*5+5*4+9*3+1*2 = 299; 299 mod 11 = 2; 11 - 2 = 9 */
    const char *forms[] = {"9434765919",     "943 476 5919",     "943-476-5919",
                           "  9434765919\t", "943 - 476 - 5919", "\n943 4765 919 "};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        assert_int_equal(parse(forms[i], out), NHSNO_VALID);
        assert_string_equal(out, "9434765919");
    }
    /* the synthetic population's first number and the test range */
    assert_int_equal(parse("9990000018", out), NHSNO_VALID);
    assert_int_equal(parse("4010232137", out), NHSNO_VALID);
    assert_true(nhsno_is_valid("999 000 0018", 12));
    assert_int_equal(nhsno_check_digit("943476591"), 9);
    assert_int_equal(nhsno_check_digit("94347659x"), -1);
}

static void test_check_value_11_is_0(void **state) {
    (void)state;
    char out[11];
    /* 1*10 + 6*2 = 22 = 0 mod 11: 11 - 0 = 11 -> check digit 0 */
    assert_int_equal(nhsno_check_digit("100000006"), 0);
    assert_int_equal(parse("1000000060", out), NHSNO_VALID);
    assert_int_equal(parse("1000000061", out), NHSNO_BAD_CHECK);
}

static void test_check_value_10_is_invalid(void **state) {
    (void)state;
    char out[11];
    /* 1*10+2*9+3*8+4*7+5*6+6*5+7*4+8*3+9*2 = 210 = 1 mod 11: 11 - 1 = 10 */
    assert_int_equal(nhsno_check_digit("123456789"), 10);
    for (char d = '0'; d <= '9'; d++) {
        char s[11] = "123456789";
        s[9] = d;
        s[10] = 0;
        assert_int_equal(parse(s, out), NHSNO_IMPOSSIBLE);
        assert_string_equal(out, s); /* kept for comparison, flagged */
    }
}

static void test_wrong_check_digit(void **state) {
    (void)state;
    char out[11];
    assert_int_equal(parse("9434765918", out), NHSNO_BAD_CHECK);
    assert_string_equal(out, "9434765918");
    assert_false(nhsno_is_valid("9434765918", 10));
    assert_int_equal(parse("9990000017", out), NHSNO_BAD_CHECK);
}

static void test_repeated_digits(void **state) {
    (void)state;
    char out[11];
    for (char d = '0'; d <= '9'; d++) {
        char s[11];
        memset(s, d, 10);
        s[10] = 0;
        /* the arithmetic passes for every digit: 54 d = -d mod 11, so the check is d itself */
        assert_int_equal(nhsno_check_digit(s), d - '0');
        assert_int_equal(parse(s, out), NHSNO_REPEATED);
        assert_false(nhsno_is_valid(s, 10));
    }
    assert_int_equal(parse("444 444 4444", out), NHSNO_REPEATED);
}

static void test_malformed(void **state) {
    (void)state;
    char out[11];
    assert_int_equal(parse("", out), NHSNO_EMPTY);
    assert_string_equal(out, "");
    assert_int_equal(parse("   ", out), NHSNO_EMPTY);
    assert_int_equal(parse(" - ", out), NHSNO_EMPTY);
    assert_int_equal(nhsno_parse(NULL, 0, out), NHSNO_EMPTY);
    assert_int_equal(parse("943476591", out), NHSNO_MALFORMED);   /* nine digits */
    assert_int_equal(parse("94347659190", out), NHSNO_MALFORMED); /* eleven */
    assert_int_equal(parse("94347659A9", out), NHSNO_MALFORMED);
    assert_int_equal(parse("943.476.5919", out), NHSNO_MALFORMED);
    assert_int_equal(parse("943 476 5919 x", out), NHSNO_MALFORMED);
    assert_string_equal(out, "");
    /* a NUL inside the range is not a digit */
    assert_int_equal(nhsno_parse("94347\0"
                                 "65919",
                                 11, out),
                     NHSNO_MALFORMED);
    /* only the given length is read */
    assert_int_equal(nhsno_parse("9434765919999", 10, out), NHSNO_VALID);
}

static void test_single_errors_are_caught(void **state) {
    (void)state;
    const char *valid[] = {"9434765919", "9990000018", "4010232137", "1000000060"};
    for (size_t v = 0; v < sizeof valid / sizeof valid[0]; v++) {
        char s[11];
        for (int i = 0; i < 10; i++)
            for (char d = '0'; d <= '9'; d++) {
                if (d == valid[v][i]) continue;
                memcpy(s, valid[v], 11);
                s[i] = d;
                if (nhsno_is_valid(s, 10)) fail_msg("substitution %s -> %s passed the check", valid[v], s);
            }
        for (int i = 0; i < 9; i++) {
            if (valid[v][i] == valid[v][i + 1]) continue;
            memcpy(s, valid[v], 11);
            s[i] = valid[v][i + 1];
            s[i + 1] = valid[v][i];
            if (nhsno_is_valid(s, 10)) fail_msg("transposition %s -> %s passed the check", valid[v], s);
        }
    }
}

static void test_format_and_status(void **state) {
    (void)state;
    char f[13], out[11];
    nhsno_format("9434765919", f);
    assert_string_equal(f, "943 476 5919");
    err e;
    err_clear(&e);
    assert_int_equal(nhsno_validate("943 476 5919", 12, out, "PID-3", &e), ST_OK);
    assert_string_equal(out, "9434765919");
    assert_int_equal(nhsno_validate("9434765918", 10, out, "PID-3", &e), ST_INVALID);
    assert_string_equal(out, "");
    assert_string_equal(e.where, "PID-3");
    assert_string_equal(e.issue, "value");
    assert_non_null(strstr(e.msg, "check digit"));
    assert_int_equal(nhsno_validate("123", 3, out, NULL, NULL), ST_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_forms),
        cmocka_unit_test(test_check_value_11_is_0),
        cmocka_unit_test(test_check_value_10_is_invalid),
        cmocka_unit_test(test_wrong_check_digit),
        cmocka_unit_test(test_repeated_digits),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_single_errors_are_caught),
        cmocka_unit_test(test_format_and_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
