/*
 * buf.h — a growable, length-carrying byte buffer. Always NUL-terminated after
 * any append (so `b.p` can be passed where a C string is wanted), but the
 * length is authoritative: contents may hold NULs.
 *
 * Ownership: a `buf` owns `p`; buf_free releases it. A zeroed buf is empty
 * and valid. On allocation failure the process aborts: concord treats
 * out-of-memory on small buffers as fatal rather than threading it through
 * every caller.
 */
#ifndef CONCORD_BUF_H
#define CONCORD_BUF_H

#include <stddef.h>

typedef struct buf {
    char *p;
    size_t len;
    size_t cap;
} buf;

void buf_reserve(buf *b, size_t extra);
void buf_append(buf *b, const void *data, size_t n);
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append `s` escaped as the inside of a JSON string (no surrounding quotes). */
void buf_json_escape(buf *b, const char *s, size_t n);
/* Append `s` escaped for HTML text and attribute values. */
void buf_html_escape(buf *b, const char *s);
void buf_reset(buf *b);
void buf_free(buf *b);
/* Give the bytes away: returns p (caller frees with free()), leaves b empty. */
char *buf_take(buf *b);

#endif
