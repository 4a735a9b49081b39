/*
 * csv.c — the streaming CSV reader (csv.h).
 *
 * Two passes over each record, both over bytes already in the window:
 *
 *   1. framing: find where the record ends — the first LF outside a quoted
 *      field — with a four-state machine (field start, unquoted, quoted,
 *      quote seen inside quotes). It is resumable across reads: the
 *      window is refilled and shifted while the scan position and state
 *      live on. A quote only opens a quoted field at the start of a field,
 *      so a stray quote in "ab"c" cannot swallow the following lines.
 *   2. fields: split [start, end) into unquoted texts (NUL-terminated, in
 *      r->out), noting the first fault (stray quote, junk after a closing
 *      quote, bad UTF-8, NUL, too many fields) with its line and column.
 *
 * Invariants: win[lo, hi) are the bytes not yet returned; win_off is the
 * input offset of win[0]; `line` is the line number of win[lo]. The window
 * never holds more than max_record + 1 bytes of one record plus one read
 * (CSV_CHUNK), so memory is bounded whatever the input.
 */
#include "csv.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define CSV_CHUNK              65536
#define CSV_DEFAULT_MAX_RECORD ((size_t)1 << 20)
#define CSV_DEFAULT_MAX_FIELDS 10000
#define NONE                   ((size_t)-1)

enum { S_START, S_UNQUOTED, S_QUOTED, S_QUOTE_IN_QUOTED };

struct csv_reader {
    FILE *f;
    char delim;
    size_t max_record;
    int max_fields;
    char *win;
    size_t cap, lo, hi;
    int64_t win_off;
    int64_t line;
    int eof, bom_pending;
    status failed; /* ST_OK, or why the input can be read no further */
    char *out;     /* unquoted field texts */
    size_t outcap;
    const char **field;
    size_t *len;
    int fcap;
    char *copy; /* the kept prefix of an over-long record */
    size_t copycap;
};

csv_reader *csv_open(FILE *f, char delim, int64_t offset, int64_t line) {
    if (!f || delim == '"' || delim == '\r' || delim == '\n' || offset < 0) return NULL;
    off_t at = ftello(f); /* -1 on a pipe: trust that it is at `offset` */
    if (at >= 0 && at != (off_t)offset && fseeko(f, (off_t)offset, SEEK_SET) != 0) return NULL;
    csv_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->f = f;
    r->delim = delim;
    r->max_record = CSV_DEFAULT_MAX_RECORD;
    r->max_fields = CSV_DEFAULT_MAX_FIELDS;
    r->win_off = offset;
    r->line = line > 0 ? line : 1;
    r->bom_pending = offset == 0;
    return r;
}

void csv_set_limits(csv_reader *r, size_t max_record, int max_fields) {
    r->max_record = max_record ? max_record : CSV_DEFAULT_MAX_RECORD;
    r->max_fields = max_fields > 0 ? max_fields : CSV_DEFAULT_MAX_FIELDS;
}

int64_t csv_line(const csv_reader *r) {
    return r->line;
}
int64_t csv_offset(const csv_reader *r) {
    return r->win_off + (int64_t)r->lo;
}

void csv_close(csv_reader *r) {
    if (!r) return;
    free(r->win);
    free(r->out);
    free(r->field);
    free(r->len);
    free(r->copy);
    free(r);
}

/* Shift win[lo, hi) to the front, make room, read once. *shift says how far
 * positions moved. Returns the bytes read: 0 at end of input (r->eof set)
 * or on failure (r->failed set). */
static size_t refill(csv_reader *r, size_t *shift) {
    *shift = r->lo;
    if (r->lo) {
        memmove(r->win, r->win + r->lo, r->hi - r->lo);
        r->win_off += (int64_t)r->lo;
        r->hi -= r->lo;
        r->lo = 0;
    }
    if (r->eof) return 0;
    if (r->cap - r->hi < CSV_CHUNK) {
        size_t ncap = r->cap ? r->cap * 2 : CSV_CHUNK;
        if (ncap < r->hi + CSV_CHUNK) ncap = r->hi + CSV_CHUNK;
        char *w = realloc(r->win, ncap);
        if (!w) {
            r->failed = ST_NOMEM;
            r->eof = 1;
            return 0;
        }
        r->win = w;
        r->cap = ncap;
    }
    size_t n = fread(r->win + r->hi, 1, r->cap - r->hi, r->f);
    if (n == 0) {
        if (ferror(r->f)) r->failed = ST_IO;
        r->eof = 1;
    }
    r->hi += n;
    return n;
}

static int64_t count_lf(const char *p, size_t n) {
    int64_t k = 0;
    const char *end = p + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p)))) {
        k++;
        p++;
    }
    return k;
}

/* Index of the first byte of s[0, n) that is not part of well-formed UTF-8
 * (or is NUL), or n. */
static size_t utf8_bad(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            k = 1;
        else if (c == 0xE0)
            k = 2, lo = 0xA0;
        else if (c >= 0xE1 && c <= 0xEC)
            k = 2;
        else if (c == 0xED)
            k = 2, hi = 0x9F; /* no surrogates */
        else if (c >= 0xEE && c <= 0xEF)
            k = 2;
        else if (c == 0xF0)
            k = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            k = 3;
        else if (c == 0xF4)
            k = 3, hi = 0x8F; /* not above U+10FFFF */
        else
            return i;             /* NUL, continuation, C0, C1, F5.. */
        if (i + k >= n) return i; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF) return i;
        i += k + 1;
    }
    return n;
}

size_t csv_utf8_invalid_at(const char *s, size_t n) {
    return utf8_bad((const unsigned char *)s, n);
}

static int grow_fields(csv_reader *r, int need) {
    if (need <= r->fcap) return 0;
    int n = r->fcap ? r->fcap * 2 : 32;
    while (n < need)
        n *= 2;
    const char **f = realloc(r->field, (size_t)n * sizeof *f);
    if (!f) return -1;
    r->field = f;
    size_t *l = realloc(r->len, (size_t)n * sizeof *l);
    if (!l) return -1;
    r->len = l;
    r->fcap = n;
    return 0;
}

/* The first fault found while splitting a record. */
typedef struct fault {
    status code;
    size_t at; /* window index, for the line */
    int column;
    char msg[200];
} fault;

static void note(fault *ft, size_t at, int column, const char *msg, unsigned byte) {
    if (ft->code) return;
    ft->code = ST_INVALID;
    ft->at = at;
    ft->column = column;
    snprintf(ft->msg, sizeof ft->msg, msg, byte);
}

/* Pass 2: split win[b, e) (the record without its terminator) into fields. */
static int split(csv_reader *r, size_t b, size_t e, fault *ft) {
    size_t need = 2 * (e - b) + 2;
    if (need > r->outcap) {
        char *o = realloc(r->out, need);
        if (!o) return -1;
        r->out = o;
        r->outcap = need;
    }
    const char *w = r->win;
    char *out = r->out;
    size_t p = b;
    int nf = 0;
    for (;;) {
        if (nf >= r->max_fields) {
            note(ft, p, nf + 1, "more fields than the limit", 0);
            break;
        }
        if (grow_fields(r, nf + 1)) return -1;
        char *start = out;
        size_t raw_start = p;
        int column = nf + 1;
        if (p < e && w[p] == '"') {
            p++;
            for (;;) {
                if (p >= e) break; /* framing guarantees a closing quote; defensive */
                if (w[p] == '"') {
                    if (p + 1 < e && w[p + 1] == '"') {
                        *out++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *out++ = w[p++];
            }
            if (p < e && w[p] != r->delim) {
                note(ft, p, column, "unexpected character after the closing quote of a quoted field", 0);
                while (p < e && w[p] != r->delim)
                    *out++ = w[p++];
            }
        } else {
            while (p < e && w[p] != r->delim) {
                if (w[p] == '"')
                    note(ft, p, column, "a quote inside an unquoted field (quote the whole field)", 0);
                *out++ = w[p++];
            }
        }
        size_t bad = utf8_bad((const unsigned char *)w + raw_start, p - raw_start);
        if (bad < p - raw_start) {
            unsigned char c = (unsigned char)w[raw_start + bad];
            note(ft, raw_start + bad, column,
                 c ? "invalid UTF-8 (byte 0x%02X); the extract must be UTF-8"
                   : "a NUL byte (0x%02X) in a field",
                 c);
        }
        *out++ = 0;
        r->field[nf] = start;
        r->len[nf] = (size_t)(out - 1 - start);
        nf++;
        if (p < e) {
            p++; /* the delimiter; a trailing one leaves an empty last field */
            continue;
        }
        break;
    }
    return nf;
}

static int io_failure(csv_reader *r, csv_record *rec, err *e) {
    status s = r->failed;
    r->lo = r->hi;
    rec->line = r->line;
    rec->offset = rec->end_offset = csv_offset(r);
    err_set(e, s, "exception", NULL,
            s == ST_NOMEM ? "out of memory reading the CSV input" : "read error on the CSV input");
    return -1;
}

static void where_at(char *out, size_t n, int64_t line, int column) {
    if (column > 0)
        snprintf(out, n, "line %lld, column %d", (long long)line, column);
    else
        snprintf(out, n, "line %lld", (long long)line);
}

/* Fill rec for win[lo, end) and advance past it. */
static void take(csv_reader *r, csv_record *rec, size_t end) {
    rec->line = r->line;
    rec->offset = r->win_off + (int64_t)r->lo;
    rec->end_offset = r->win_off + (int64_t)end;
    rec->raw = r->win + r->lo;
    rec->raw_len = end - r->lo;
    r->line += count_lf(r->win + r->lo, end - r->lo);
    r->lo = end;
}

int csv_next(csv_reader *r, csv_record *rec, err *e) {
    memset(rec, 0, sizeof *rec);
    if (r->failed) return 0;
    size_t shift;
    if (r->bom_pending) {
        while (r->hi - r->lo < 3 && !r->eof)
            refill(r, &shift);
        if (r->failed) return io_failure(r, rec, e);
        if (r->hi - r->lo >= 3 && memcmp(r->win + r->lo, "\xEF\xBB\xBF", 3) == 0) r->lo += 3;
        r->bom_pending = 0;
    }
    for (;;) {
        size_t s = r->lo, qopen = NONE;
        int st = S_START, nf = 0, qcol = 0, ended = 0;
        /* pass 1: framing */
        for (;;) {
            if (s == r->hi) {
                if (r->eof) break;
                refill(r, &shift);
                if (r->failed) return io_failure(r, rec, e);
                s -= shift;
                if (qopen != NONE) qopen -= shift;
                continue;
            }
            if (s - r->lo >= r->max_record) goto overlong;
            char c = r->win[s];
            switch (st) {
            case S_START:
                if (c == '"') {
                    st = S_QUOTED;
                    qopen = s;
                    qcol = nf + 1;
                } else if (c == r->delim)
                    nf++;
                else if (c == '\n')
                    ended = 1;
                else
                    st = S_UNQUOTED;
                break;
            case S_UNQUOTED:
                if (c == r->delim) {
                    nf++;
                    st = S_START;
                } else if (c == '\n')
                    ended = 1;
                break;
            case S_QUOTED: {
                /* fast path: jump to the next quote */
                size_t lim = r->hi, cap = r->lo + r->max_record;
                if (lim > cap) lim = cap;
                const char *q = memchr(r->win + s, '"', lim - s);
                if (!q) {
                    s = lim;
                    continue;
                }
                s = (size_t)(q - r->win);
                st = S_QUOTE_IN_QUOTED;
                break;
            }
            default: /* S_QUOTE_IN_QUOTED */
                if (c == '"')
                    st = S_QUOTED;
                else if (c == r->delim) {
                    nf++;
                    st = S_START;
                } else if (c == '\n')
                    ended = 1;
                else
                    st = S_UNQUOTED; /* junk after the closing quote: pass 2 reports it */
                break;
            }
            s++;
            if (ended) break;
        }
        size_t end = s;
        if (!ended) {
            if (end == r->lo) return 0; /* end of input */
            if (st == S_QUOTED) {
                /* never closed: the record is the line where the quote opened */
                const char *nl = memchr(r->win + qopen, '\n', r->hi - qopen);
                end = nl ? (size_t)(nl - r->win) + 1 : r->hi;
                char where[64];
                int64_t qline = r->line + count_lf(r->win + r->lo, qopen - r->lo);
                where_at(where, sizeof where, qline, qcol);
                err_set(e, ST_INVALID, "structure", where,
                        "unterminated quoted field: the quote opened at %s is never closed", where);
                take(r, rec, end);
                return -1;
            }
        }
        size_t body = end;
        if (ended) body--;
        if (body > r->lo && r->win[body - 1] == '\r') body--;
        if (body == r->lo) { /* a blank line */
            r->line += ended;
            r->lo = end;
            continue;
        }
        fault ft = {0};
        int n = split(r, r->lo, body, &ft);
        if (n < 0) {
            r->failed = ST_NOMEM;
            return io_failure(r, rec, e);
        }
        if (ft.code) {
            char where[64];
            where_at(where, sizeof where, r->line + count_lf(r->win + r->lo, ft.at - r->lo), ft.column);
            err_set(e, ft.code, "structure", where, "%s", ft.msg);
            take(r, rec, end);
            return -1;
        }
        take(r, rec, end);
        rec->nfields = n;
        rec->field = r->field;
        rec->len = r->len;
        return 1;

    overlong : {
        int64_t line0 = r->line;
        char where[64];
        if (st == S_QUOTED) {
            const char *nl = qopen != NONE ? memchr(r->win + qopen, '\n', s - qopen) : NULL;
            if (nl) {
                int64_t qline = r->line + count_lf(r->win + r->lo, qopen - r->lo);
                where_at(where, sizeof where, qline, qcol);
                err_set(
                    e, ST_TOO_LARGE, "too-costly", where,
                    "record longer than %zu bytes: the quoted field opened at %s is probably never closed",
                    r->max_record, where);
                take(r, rec, (size_t)(nl - r->win) + 1);
                return -1;
            }
        }
        /* keep the first max_record bytes, skip to the next line break */
        if (r->copycap < r->max_record) {
            char *c = realloc(r->copy, r->max_record);
            if (!c) {
                r->failed = ST_NOMEM;
                return io_failure(r, rec, e);
            }
            r->copy = c;
            r->copycap = r->max_record;
        }
        memcpy(r->copy, r->win + r->lo, r->max_record);
        int64_t start_off = r->win_off + (int64_t)r->lo;
        int64_t lines = count_lf(r->win + r->lo, s - r->lo);
        int found = 0;
        for (;;) {
            const char *nl = memchr(r->win + s, '\n', r->hi - s);
            if (nl) {
                s = (size_t)(nl - r->win) + 1;
                found = 1;
                break;
            }
            r->lo = r->hi;
            if (r->eof) {
                s = r->hi;
                break;
            }
            refill(r, &shift);
            if (r->failed) return io_failure(r, rec, e);
            s = r->lo;
        }
        rec->line = line0;
        rec->offset = start_off;
        rec->end_offset = r->win_off + (int64_t)s;
        rec->raw = r->copy;
        rec->raw_len = r->max_record;
        r->lo = s;
        r->line = line0 + lines + found;
        where_at(where, sizeof where, line0, 0);
        err_set(e, ST_TOO_LARGE, "too-costly", where,
                "record longer than %zu bytes (the limit); skipped to the next line", r->max_record);
        return -1;
    }
    }
}
