/*
 * nhsno.c — NHS number normalisation and modulus 11 validation.
 *
 * The NHS number is nine digits and a check digit. The check digit is
 * computed (NHS Data Dictionary, "NHS Number"): multiply each of the first
 * nine digits by a weight, 10 for the first down to 2 for the ninth; sum;
 * take the remainder mod 11; subtract it from 11. A result of 11 gives check
 * digit 0; a result of 10 means the nine digits can never form a valid
 * number. The check catches every single-digit substitution and every
 * transposition of two adjacent digits (the weights 10..1, counting the check
 * digit's implicit 1, are distinct and non-zero mod the prime 11).
 *
 * One digit repeated ten times passes the arithmetic for every digit (the
 * weights sum to 54 = -1 mod 11, so the check digit comes out as the digit
 * itself); such values are placeholders and are rejected (as the UKHSA
 * epidm package's valid_nhs does).
 *
 * Invariants: outputs are always NUL-terminated; nothing here allocates.
 */
#include "nhsno.h"

#include <stdio.h>
#include <string.h>

int nhsno_check_digit(const char d[9]) {
    int sum = 0;
    for (int i = 0; i < 9; i++) {
        if (d[i] < '0' || d[i] > '9') return -1;
        sum += (d[i] - '0') * (10 - i);
    }
    int c = 11 - sum % 11;
    return c == 11 ? 0 : c;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

nhsno_result nhsno_parse(const char *s, size_t n, char out[11]) {
    /* `out` is written only at the end, so it may alias `s` */
    char d[11] = "";
    nhsno_result r = NHSNO_EMPTY;
    size_t b = 0, e = s ? n : 0;
    while (b < e && is_space((unsigned char)s[b]))
        b++;
    while (e > b && is_space((unsigned char)s[e - 1]))
        e--;
    size_t k = 0;
    int other = 0;
    for (size_t i = b; i < e; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '-') continue;
        if (c >= '0' && c <= '9') {
            if (k < 10) d[k] = (char)c;
            k++;
        } else {
            other = 1;
        }
    }
    if (!other && k == 0) goto out;
    r = NHSNO_MALFORMED;
    if (other || k != 10) goto out;
    d[10] = 0;
    int same = 1;
    for (int i = 1; i < 10; i++)
        same &= d[i] == d[0];
    int c = nhsno_check_digit(d);
    r = same ? NHSNO_REPEATED : c == 10 ? NHSNO_IMPOSSIBLE : c == d[9] - '0' ? NHSNO_VALID : NHSNO_BAD_CHECK;
out:
    if (r == NHSNO_EMPTY || r == NHSNO_MALFORMED) d[0] = 0;
    memcpy(out, d, 11);
    return r;
}

int nhsno_is_valid(const char *s, size_t n) {
    char out[11];
    return nhsno_parse(s, n, out) == NHSNO_VALID;
}

void nhsno_format(const char digits[10], char out[13]) {
    snprintf(out, 13, "%.3s %.3s %.4s", digits, digits + 3, digits + 6);
}

const char *nhsno_result_text(nhsno_result r) {
    switch (r) {
    case NHSNO_VALID: return "valid";
    case NHSNO_EMPTY: return "empty";
    case NHSNO_MALFORMED: return "not ten digits";
    case NHSNO_BAD_CHECK: return "check digit is wrong";
    case NHSNO_IMPOSSIBLE: return "first nine digits give check value 10: never a valid NHS number";
    case NHSNO_REPEATED: return "one digit repeated: a placeholder, not an NHS number";
    }
    return "unknown";
}

status nhsno_validate(const char *s, size_t n, char out[11], const char *where, err *e) {
    nhsno_result r = nhsno_parse(s, n, out);
    if (r == NHSNO_VALID) return ST_OK;
    out[0] = 0;
    return err_set(e, ST_INVALID, "value", where, "NHS number %s", nhsno_result_text(r));
}
