/*
 * test_buf.c — growable buffers (src/base/buf.c): JSON string escaping,
 * which every error message and OperationOutcome goes through. The output
 * must be valid JSON text whatever the input bytes: control characters
 * escaped, well-formed UTF-8 kept, anything else replaced by U+FFFD.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/buf.h"

static void escapes_to(const char *in, size_t n, const char *want) {
    buf b = {0};
    buf_json_escape(&b, in, n);
    buf_putc(&b, 0);
    if (strcmp(b.p, want) != 0) fail_msg("escaped to \"%s\", want \"%s\"", b.p, want);
    buf_free(&b);
}

static void test_ascii_and_controls(void **state) {
    (void)state;
    escapes_to("plain", 5, "plain");
    escapes_to("a\"b\\c", 5, "a\\\"b\\\\c");
    escapes_to("\n\r\t\x01", 4, "\\n\\r\\t\\u0001");
    escapes_to("nul\0x", 5, "nul\\u0000x");
}

static void test_valid_utf8_is_kept(void **state) {
    (void)state;
    escapes_to("Zo\xc3\xab", 4, "Zo\xc3\xab");                 /* ë */
    escapes_to("\xe2\x82\xac", 3, "\xe2\x82\xac");             /* € */
    escapes_to("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80");     /* U+1F600 */
    escapes_to("\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf");     /* U+10FFFF */
}

static void test_invalid_utf8_is_replaced(void **state) {
    (void)state;
    escapes_to("\xc0\xae\xc0\xae", 4, "\\ufffd\\ufffd\\ufffd\\ufffd"); /* overlong '.' (a traversal trick) */
    escapes_to("\xff", 1, "\\ufffd");
    escapes_to("a\x80z", 3, "a\\ufffdz");                               /* lone continuation */
    escapes_to("\xe2\x82", 2, "\\ufffd\\ufffd");                         /* cut short */
    escapes_to("\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd");              /* a surrogate */
    escapes_to("\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd");   /* above U+10FFFF */
    escapes_to("\xe0\x80\xaf", 3, "\\ufffd\\ufffd\\ufffd");              /* overlong 3-byte */
}

/* Whatever the bytes, "\"" + escaped + "\"" parses as JSON. */
static void test_any_bytes_give_valid_json(void **state) {
    (void)state;
    unsigned char in[512];
    uint32_t x = 12345;
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(round % 64) + 1;
        for (size_t i = 0; i < n; i++) {
            x = x * 1664525u + 1013904223u;
            in[i] = (unsigned char)(x >> 24);
        }
        buf b = {0};
        buf_putc(&b, '"');
        buf_json_escape(&b, (const char *)in, n);
        buf_putc(&b, '"');
        json_error_t je;
        json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!j) fail_msg("round %d: not valid JSON: %s", round, je.text);
        json_decref(j);
        buf_free(&b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_and_controls),
        cmocka_unit_test(test_valid_utf8_is_kept),
        cmocka_unit_test(test_invalid_utf8_is_replaced),
        cmocka_unit_test(test_any_bytes_give_valid_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
