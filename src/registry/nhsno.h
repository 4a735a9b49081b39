/*
 * nhsno.h — NHS numbers: normalisation of the forms people and systems write
 * them in ("943 476 5919", "943-476-5919", " 9434765919 "), and validation:
 * ten digits whose tenth is the modulus 11 check digit of the first nine
 * (weights 10..2; check = 11 - (sum mod 11); 11 -> 0; 10 -> no valid number
 * has these nine digits). Numbers made of one repeated digit pass the check
 * arithmetic but are rejected as placeholders. See docs/registry.md.
 *
 * Pure functions: no allocation, no global state, thread-safe. Every input is
 * a byte range (pointer + length) and need not be NUL-terminated; outputs are
 * caller-owned fixed-size arrays.
 */
#ifndef CONCORD_REGISTRY_NHSNO_H
#define CONCORD_REGISTRY_NHSNO_H

#include <stddef.h>

#include "../base/status.h"

/* What nhsno_parse found. */
typedef enum nhsno_result {
    NHSNO_VALID = 0,  /* ten digits, check digit correct */
    NHSNO_EMPTY,      /* nothing but whitespace, spaces and hyphens */
    NHSNO_MALFORMED,  /* not ten digits after normalisation (letters, 9 or 11 digits...) */
    NHSNO_BAD_CHECK,  /* ten digits, but the check digit is wrong */
    NHSNO_IMPOSSIBLE, /* ten digits whose first nine give check value 10: never issued */
    NHSNO_REPEATED    /* one digit ten times ("0000000000", "4444444444"): every such number
                       * passes modulus 11 (d*54 = -d mod 11, so the check is d), but they are
                       * placeholders typed into mandatory fields, never issued numbers */
} nhsno_result;

/* The check digit of nine ASCII digits: 0..9, or 10 when no valid number
 * starts with them, or -1 if any byte is not a digit. Borrows `d`. */
int nhsno_check_digit(const char d[9]);

/* Normalise `s` (n bytes): drop surrounding whitespace, then internal
 * spaces and hyphens. If exactly ten ASCII digits remain they are written
 * to `out` (NUL-terminated) whatever the check digit says, so a caller can
 * still compare a mistyped number; otherwise `out` is set to "".
 * Returns what was found. Borrows `s`; `out` is the caller's and may be
 * the same array as `s`. */
nhsno_result nhsno_parse(const char *s, size_t n, char out[11]);

/* 1 if `s` (n bytes) normalises to a valid NHS number, else 0. */
int nhsno_is_valid(const char *s, size_t n);

/* The conventional 3-3-4 display form "943 476 5919" of ten digits. */
void nhsno_format(const char digits[10], char out[13]);

/* A short English reason for a result ("check digit is wrong", ...). Static. */
const char *nhsno_result_text(nhsno_result r);

/* nhsno_parse as a status: ST_OK for a valid number (normalised into `out`),
 * ST_INVALID with the reason in `e` (issue "value", where = `where`)
 * otherwise. For ingest paths that must reject or quarantine. */
status nhsno_validate(const char *s, size_t n, char out[11], const char *where, err *e);

#endif
