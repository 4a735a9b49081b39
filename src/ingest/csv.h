/*
 * csv.h — a streaming RFC 4180 reader for the CSV extracts community
 * providers, councils and the mental health trust send (docs/csv-mapping.md).
 *
 * What it accepts: fields separated by a configurable delimiter; quoted
 * fields ("...") with doubled quotes inside, which may hold the delimiter
 * and line breaks; records ended by CRLF or LF (the last one may lack its
 * terminator); a UTF-8 byte order mark at the start of the file is skipped;
 * blank lines are skipped (they still count as lines).
 *
 * What it rejects, as one malformed record that the caller can quarantine
 * before going on: a quote inside an unquoted field, anything but the
 * delimiter or the end of the record after a closing quote, a quoted field
 * never closed, invalid UTF-8 or a NUL byte in a field, more fields than
 * the limit, a record longer than the limit. After a malformed record the
 * reader has resynchronised: at the record's own end where its structure
 * was readable, else at the end of the line where the unclosed quote
 * opened (so a stray quote costs one line, not the rest of the file), else
 * (over-long) at the next line break.
 *
 * Memory is bounded whatever the input: a window of at most max_record +
 * 64 KiB bytes, the unquoted fields (at most twice the record), and for an
 * over-long record a copy of its first max_record bytes.
 *
 * Positions: `line` is the physical line (1-based) where a record starts,
 * counting every LF including those inside quoted fields; `offset` and
 * `end_offset` are byte offsets in the input, so a caller can record
 * end_offset and line + (LFs in raw) and resume there later with csv_open.
 * Error locations name the line and the column (the field's 1-based
 * position in the record): "line 17, column 3".
 *
 * Ownership: the reader borrows `f` (the caller closes it). Everything a
 * csv_record points at belongs to the reader and is valid until the next
 * csv_next or csv_close. Not thread-safe: one reader per thread.
 */
#ifndef CONCORD_INGEST_CSV_H
#define CONCORD_INGEST_CSV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../base/status.h"

typedef struct csv_record {
    int64_t line;       /* physical line number (1-based) where the record starts */
    int64_t offset;     /* byte offset of its first byte in the input */
    int64_t end_offset; /* byte offset just past its terminating newline */
    int nfields;
    const char **field; /* NUL-terminated, unquoted field texts; valid until the next csv_next */
    const size_t *len;
    /* the record's raw bytes, terminator included (for quarantine), valid until the next csv_next;
     * for an over-long record only its first max_record bytes */
    const char *raw;
    size_t raw_len;
} csv_record;

typedef struct csv_reader csv_reader;

/* Streams from f (not owned) starting at byte `offset`, which is line
 * `line` (0, 1 for a fresh file), with bounded memory: a record larger than
 * max_record bytes (0 = 1 MiB; see csv_set_limits) is an error. f is read
 * from its current position if that is `offset`, or if f cannot tell (a
 * pipe); otherwise it is seeked there. A byte order mark is looked for only at
 * offset 0. Returns NULL if the seek fails, `delim` is a quote, CR or LF,
 * or memory runs out. */
csv_reader *csv_open(FILE *f, char delim, int64_t offset, int64_t line);

/* Limits for the records still to be read: max_record bytes per record
 * (0 = 1 MiB), max_fields fields per record (0 = 10,000). */
void csv_set_limits(csv_reader *r, size_t max_record, int max_fields);

/* 1 = a record, 0 = end of input, -1 = a malformed record (unterminated
 * quote, over-long, bad UTF-8 ...): e says what and where (e->where like
 * "line 17, column 3", e->code ST_INVALID, or ST_TOO_LARGE for an
 * over-long record); rec still describes the raw bytes (nfields is 0) and
 * the reader has resynchronised at the next line so the caller can
 * quarantine it and go on. A read error also returns -1, with e->code
 * ST_IO and rec->raw_len 0; after it every call returns 0. */
int csv_next(csv_reader *r, csv_record *rec, err *e);

/* The line number the next record would start on at or after the current
 * position, and the byte offset of that position: what to pass to csv_open
 * to resume after the last record returned. */
int64_t csv_line(const csv_reader *r);
int64_t csv_offset(const csv_reader *r);

void csv_close(csv_reader *r);

/* Index of the first byte of s[0, n) that is not part of well-formed UTF-8
 * (or is NUL), or n if there is none: the test csv_next applies to fields. */
size_t csv_utf8_invalid_at(const char *s, size_t n);

#endif
