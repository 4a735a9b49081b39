/*
 * netstring.h — netstrings ("<decimal byte length>:<bytes>,"), the framing
 * of the access log's events (docs/audit.md): unambiguous whatever the
 * bytes hold, and still text (a field that is valid UTF-8 without NUL
 * gives a netstring that is too).
 *
 * Lengths are written in decimal without leading zeros; integers as
 * "%lld" would write them ("-" for negatives, no leading zeros, "0").
 * The readers accept exactly that and nothing looser, so that every
 * value has one encoding.
 */
#ifndef CONCORD_NETSTRING_H
#define CONCORD_NETSTRING_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Decimal digits of v into out (at least 21 bytes, not NUL-terminated), as
 * "%lld" would write them; returns the length. */
size_t ns_decimal(char *out, int64_t v);

/* Append the netstring of n bytes at p, or of v in decimal. */
void ns_put(buf *b, const char *p, size_t n);
void ns_put_int(buf *b, int64_t v);

/* Read the netstring at *p (before end): its bytes are *s, *n bytes long;
 * *p moves past it. Returns 0, or -1 when what is there is not one (no
 * digits, a leading zero, a length past end or over max, no ',' after). */
int ns_get(const char **p, const char *end, size_t max, const char **s, size_t *n);
/* The integer in s[0..n) written as ns_decimal writes it: 0, or -1. */
int ns_parse_int(const char *s, size_t n, int64_t *v);

#endif
