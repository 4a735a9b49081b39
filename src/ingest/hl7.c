/*
 * hl7.c — the HL7 v2 ER7 parser (see hl7.h for the API and the decoding
 * rules).
 *
 * Wire format owned here: an ER7 message is segments separated by CR
 * (tolerated: LF, CRLF, blank lines). The first segment is MSH; its fourth
 * byte is the field separator (MSH-1) and the bytes up to the next field
 * separator are the encoding characters (MSH-2: component, repetition,
 * escape, subcomponent, and from v2.7 truncation). Every other segment is a
 * three-character id followed by fields separated by the field separator;
 * fields divide into repetitions, repetitions into components, components
 * into subcomponents. Nothing about the delimiters is assumed.
 *
 * Representation: one pass counts separators to size two arrays in the
 * arena — segments, and the spans (offset, length) of every field of every
 * segment — and a second pass fills them. A segment's fields are a run of
 * spans; for MSH the run starts with MSH-1 (the separator byte itself) and
 * MSH-2, so field numbers index the run directly for every segment.
 * Repetitions, components and subcomponents are found on access by scanning
 * the field's span (fields are short; this is cheaper than indexing them
 * all), and escape sequences are decoded on access into the arena.
 *
 * Invariants once hl7_parse returns ST_OK: every span lies inside the
 * message bytes; every segment id is [A-Z][A-Z0-9]{2}; no field is longer
 * than the limit; the bytes hold no control characters but the segment
 * terminators and TAB; they are valid UTF-8 unless MSH-18 names ISO-8859-1.
 * A third pass checks the bytes, so a fault found there is located by
 * looking the byte offset up in the spans.
 */
#include "hl7.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct span {
    uint32_t off, len;
} span;

typedef struct seg_rec {
    char id[4];
    uint32_t first;   /* index in m->f of field 1 */
    uint32_t nfields; /* fields 1..nfields */
    uint32_t seq;     /* occurrence of this id, from 1 */
    uint32_t start, end; /* the segment's bytes [start, end) */
} seg_rec;

struct hl7_msg {
    const char *buf;
    size_t len;
    hl7_delims d;
    arena *a;
    seg_rec *seg;
    size_t nseg;
    span *f;
    size_t nf;
    hl7_header h;
    int latin1; /* MSH-18 says ISO-8859-1: transcode values to UTF-8 */
};

/* ---- errors ------------------------------------------------------------ */

status hl7_fail(hl7_error *e, status st, hl7_ack_code ack, int code, const char *segment, int seg_seq,
                int seg_index, int field, int rep, int comp, int sub, const char *fmt, ...) {
    if (!e) return st;
    e->st = st;
    e->code = code;
    e->ack = ack;
    e->severity = 'E';
    snprintf(e->segment, sizeof e->segment, "%s", segment ? segment : "");
    e->seg_seq = seg_seq;
    e->seg_index = seg_index;
    e->field = field;
    e->rep = rep;
    e->comp = comp;
    e->sub = sub;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    return st;
}

void hl7_error_where(const hl7_error *e, char *out, size_t n) {
    size_t k = 0;
    if (!n) return;
    out[0] = 0;
    if (!e->segment[0]) return;
#define PUT(...)                                                                                                 \
    do {                                                                                                         \
        int w_ = snprintf(out + k, n - k, __VA_ARGS__);                                                          \
        if (w_ < 0 || (size_t)w_ >= n - k) return;                                                               \
        k += (size_t)w_;                                                                                         \
    } while (0)
    PUT("%s", e->segment);
    if (e->seg_seq > 0) PUT("[%d]", e->seg_seq);
    if (e->field > 0) {
        PUT("-%d", e->field);
        if (e->rep > 0) PUT("[%d]", e->rep);
        if (e->comp > 0) {
            PUT(".%d", e->comp);
            if (e->sub > 0) PUT(".%d", e->sub);
        }
    }
#undef PUT
}

void hl7_error_to_err(const hl7_error *e, err *out) {
    static const struct {
        int code;
        const char *issue;
    } issue_of[] = {
        {HL7_ERR_SEGMENT_SEQUENCE, "structure"}, {HL7_ERR_REQUIRED_FIELD, "required"},
        {HL7_ERR_DATA_TYPE, "value"},           {HL7_ERR_TABLE_VALUE, "code-invalid"},
        {HL7_ERR_UNSUPPORTED_TYPE, "not-supported"}, {HL7_ERR_UNSUPPORTED_EVENT, "not-supported"},
        {HL7_ERR_UNSUPPORTED_PROCESSING_ID, "not-supported"}, {HL7_ERR_UNSUPPORTED_VERSION, "not-supported"},
        {HL7_ERR_UNKNOWN_KEY, "not-found"},     {HL7_ERR_DUPLICATE_KEY, "duplicate"},
        {HL7_ERR_RECORD_LOCKED, "lock-error"},  {HL7_ERR_INTERNAL, "exception"},
    };
    char where[64];
    const char *issue = "processing";
    if (!out) return;
    for (size_t i = 0; i < sizeof issue_of / sizeof issue_of[0]; i++)
        if (issue_of[i].code == e->code) issue = issue_of[i].issue;
    hl7_error_where(e, where, sizeof where);
    err_set(out, e->st ? e->st : ST_INVALID, issue, where, "HL7 %d: %s", e->code, e->text);
}

/* ---- small helpers ----------------------------------------------------- */

int hl7_str_eq(hl7_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

int hl7_str_ieq(hl7_str s, const char *lit) {
    size_t n = strlen(lit);
    if (s.n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)s.p[i]) != tolower((unsigned char)lit[i])) return 0;
    return 1;
}

char *hl7_str_dup(arena *a, hl7_str s) { return arena_strndup(a, s.p ? s.p : "", s.n); }

hl7_str hl7_str_trim(hl7_str s) {
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t')) s.n--;
    return s;
}

static const hl7_str empty_str = {"", 0};

/* The n-th (from 1) piece of `s` split at `sep`; sep 0 = undivided. */
static hl7_str piece(hl7_str s, char sep, int n) {
    if (n <= 0) return s;
    if (!sep) return n == 1 ? s : empty_str;
    const char *p = s.p, *end = s.p + s.n;
    for (int i = 1; i < n; i++) {
        const char *q = memchr(p, sep, (size_t)(end - p));
        if (!q) return empty_str;
        p = q + 1;
    }
    const char *q = memchr(p, sep, (size_t)(end - p));
    hl7_str r = {p, (size_t)((q ? q : end) - p)};
    return r;
}

static int piece_count(hl7_str s, char sep) {
    if (s.n == 0) return 0;
    if (!sep) return 1;
    int n = 1;
    for (size_t i = 0; i < s.n; i++) n += s.p[i] == sep;
    return n;
}

static int valid_delim(unsigned char c) { return c > 0x20 && c < 0x7f && !isalnum(c); }

static int valid_seg_id(const char *p, size_t n) {
    return n == 3 && p[0] >= 'A' && p[0] <= 'Z' && (isupper((unsigned char)p[1]) || isdigit((unsigned char)p[1])) &&
           (isupper((unsigned char)p[2]) || isdigit((unsigned char)p[2]));
}

/* ---- structure accessors ----------------------------------------------- */

const hl7_delims *hl7_delimiters(const hl7_msg *m) { return &m->d; }
const hl7_header *hl7_msg_header(const hl7_msg *m) { return &m->h; }

hl7_str hl7_message_bytes(const hl7_msg *m) {
    hl7_str s = {m->buf, m->len};
    return s;
}

size_t hl7_segment_count(const hl7_msg *m) { return m ? m->nseg : 0; }

const char *hl7_segment_id(const hl7_msg *m, long seg) {
    if (!m || seg < 0 || (size_t)seg >= m->nseg) return NULL;
    return m->seg[seg].id;
}

long hl7_segment_find(const hl7_msg *m, const char *id, long from) {
    if (!m || from < 0) return -1;
    for (size_t i = (size_t)from; i < m->nseg; i++)
        if (strcmp(m->seg[i].id, id) == 0) return (long)i;
    return -1;
}

int hl7_segment_seq(const hl7_msg *m, long seg) {
    if (!m || seg < 0 || (size_t)seg >= m->nseg) return 0;
    return (int)m->seg[seg].seq;
}

int hl7_field_count(const hl7_msg *m, long seg) {
    if (!m || seg < 0 || (size_t)seg >= m->nseg) return 0;
    return (int)m->seg[seg].nfields;
}

static hl7_str field_raw(const hl7_msg *m, long seg, int field) {
    if (!m || seg < 0 || (size_t)seg >= m->nseg || field < 1 || (uint32_t)field > m->seg[seg].nfields)
        return empty_str;
    span sp = m->f[m->seg[seg].first + (uint32_t)field - 1];
    hl7_str s = {m->buf + sp.off, sp.len};
    return s;
}

/* MSH-1 and MSH-2 hold delimiters: never divided, never decoded. */
static int is_delimiter_field(const hl7_msg *m, long seg, int field) {
    return field <= 2 && m && seg >= 0 && (size_t)seg < m->nseg && memcmp(m->seg[seg].id, "MSH", 4) == 0;
}

int hl7_rep_count(const hl7_msg *m, long seg, int field) {
    hl7_str f = field_raw(m, seg, field);
    if (is_delimiter_field(m, seg, field)) return f.n ? 1 : 0;
    return piece_count(f, m ? m->d.repetition : 0);
}

int hl7_comp_count(const hl7_msg *m, long seg, int field, int rep) {
    hl7_str f = field_raw(m, seg, field);
    if (is_delimiter_field(m, seg, field)) return f.n ? 1 : 0;
    return piece_count(piece(f, m->d.repetition, rep < 1 ? 1 : rep), m->d.component);
}

hl7_str hl7_raw(const hl7_msg *m, long seg, int field, int rep, int comp, int sub) {
    hl7_str s = field_raw(m, seg, field);
    if (is_delimiter_field(m, seg, field)) return (rep <= 1 && comp <= 1 && sub <= 1) ? s : empty_str;
    if (rep == 0) return (comp == 0 && sub == 0) ? s : empty_str;
    s = piece(s, m->d.repetition, rep);
    if (comp == 0) return s;
    s = piece(s, m->d.component, comp);
    if (sub == 0) return s;
    return piece(s, m->d.subcomponent, sub);
}

/* ---- decoding ---------------------------------------------------------- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0; /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;
        if (c == 0xF4 && p[1] > 0x8F) return 0;
        return 4;
    }
    return 0;
}

/* Append one byte of the message's character set as UTF-8. */
static size_t put_byte(hl7_msg *m, char *o, unsigned char c) {
    if (m->latin1 && c >= 0x80) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    o[0] = (char)c;
    return 1;
}

/* Replace invalid UTF-8 in s (from \X..\ bytes) by U+FFFD. */
static hl7_str utf8_sanitize(arena *a, hl7_str s) {
    size_t i = 0;
    while (i < s.n) {
        size_t k = utf8_seq((const unsigned char *)s.p + i, s.n - i);
        if (!k) break;
        i += k;
    }
    if (i == s.n) return s;
    char *o = arena_alloc(a, s.n * 3 + 1);
    size_t w = 0;
    for (i = 0; i < s.n;) {
        size_t k = utf8_seq((const unsigned char *)s.p + i, s.n - i);
        if (k) {
            memcpy(o + w, s.p + i, k);
            w += k;
            i += k;
        } else {
            memcpy(o + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    o[w] = 0;
    hl7_str r = {o, w};
    return r;
}

static hl7_str decode(hl7_msg *m, hl7_str s) {
    char esc = m->d.escape;
    if (s.n == 2 && s.p[0] == '"' && s.p[1] == '"') return empty_str; /* HL7 explicit null */
    int need = esc && memchr(s.p, esc, s.n) != NULL;
    if (!need && m->latin1)
        for (size_t i = 0; i < s.n && !need; i++) need = (unsigned char)s.p[i] >= 0x80;
    if (!need) return s;

    char *o = arena_alloc(m->a, s.n * 2 + 1);
    size_t w = 0;
    int had_hex = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (!esc || c != (unsigned char)esc) {
            w += put_byte(m, o + w, c);
            continue;
        }
        const char *close = memchr(s.p + i + 1, esc, s.n - i - 1);
        if (!close) { /* unterminated: the rest is literal */
            w += put_byte(m, o + w, c);
            continue;
        }
        const char *body = s.p + i + 1;
        size_t blen = (size_t)(close - body);
        size_t next = (size_t)(close - s.p); /* index of the closing escape */
        char one = blen == 1 ? body[0] : 0;
        char d = 0;
        switch (one) {
        case 'F': d = m->d.field; break;
        case 'S': d = m->d.component; break;
        case 'T': d = m->d.subcomponent; break;
        case 'R': d = m->d.repetition; break;
        case 'E': d = m->d.escape; break;
        default: break;
        }
        if (d) {
            o[w++] = d;
            i = next;
            continue;
        }
        if (blen >= 3 && body[0] == 'X' && (blen - 1) % 2 == 0) {
            int ok = 1;
            for (size_t k = 1; k < blen && ok; k++) ok = hexval(body[k]) >= 0;
            if (ok) {
                for (size_t k = 1; k < blen; k += 2) {
                    unsigned char x = (unsigned char)(hexval(body[k]) * 16 + hexval(body[k + 1]));
                    if (x < 0x20 && x != '\t' && x != '\r' && x != '\n') continue; /* no control bytes in values */
                    w += put_byte(m, o + w, x);
                }
                had_hex = 1;
                i = next;
                continue;
            }
        }
        if ((blen == 3 && memcmp(body, ".br", 3) == 0) || (blen >= 3 && memcmp(body, ".sp", 3) == 0)) {
            o[w++] = '\n';
            i = next;
            continue;
        }
        if ((blen == 1 && (one == 'H' || one == 'N')) || (blen >= 1 && strchr(".ZCM", body[0]))) {
            i = next; /* formatting, local and character-set escapes: dropped */
            continue;
        }
        /* not an escape we know: literal, including both escape characters */
        for (size_t k = i; k <= next; k++) w += put_byte(m, o + w, (unsigned char)s.p[k]);
        i = next;
    }
    o[w] = 0;
    hl7_str r = {o, w};
    if (had_hex && !m->latin1) r = utf8_sanitize(m->a, r);
    return r;
}

hl7_str hl7_get(hl7_msg *m, long seg, int field, int rep, int comp, int sub) {
    if (!m) return empty_str;
    hl7_str s = hl7_raw(m, seg, field, rep, comp, sub);
    if (!s.n || is_delimiter_field(m, seg, field)) return s;
    return decode(m, s);
}

const char *hl7_get_cstr(hl7_msg *m, long seg, int field, int rep, int comp, int sub) {
    hl7_str s = hl7_get(m, seg, field, rep, comp, sub);
    return m ? hl7_str_dup(m->a, s) : "";
}

/* SEG[occ]-FIELD[rep].COMP.SUB */
static int path_num(const char **p, int *out) {
    if (!isdigit((unsigned char)**p)) return 0;
    long v = 0;
    while (isdigit((unsigned char)**p)) {
        v = v * 10 + (**p - '0');
        if (v > 100000) return 0;
        (*p)++;
    }
    *out = (int)v;
    return 1;
}

status hl7_path(hl7_msg *m, const char *path, hl7_str *out) {
    const char *p = path;
    char id[4];
    int occ = 1, field = 0, rep = 1, comp = 0, sub = 0;
    *out = empty_str;
    if (!m || !path || strlen(path) < 5 || !valid_seg_id(path, 3)) return ST_INVALID;
    memcpy(id, path, 3);
    id[3] = 0;
    p += 3;
    if (*p == '[') {
        p++;
        if (!path_num(&p, &occ) || *p++ != ']' || occ < 1) return ST_INVALID;
    }
    if (*p++ != '-' || !path_num(&p, &field) || field < 1) return ST_INVALID;
    if (*p == '[') {
        p++;
        if (!path_num(&p, &rep) || *p++ != ']' || rep < 1) return ST_INVALID;
    }
    if (*p == '.') {
        p++;
        if (!path_num(&p, &comp) || comp < 1) return ST_INVALID;
        if (*p == '.') {
            p++;
            if (!path_num(&p, &sub) || sub < 1) return ST_INVALID;
        }
    }
    if (*p) return ST_INVALID;
    long seg = -1;
    for (int k = 0; k < occ; k++) {
        seg = hl7_segment_find(m, id, seg + 1);
        if (seg < 0) return ST_NOT_FOUND;
    }
    *out = hl7_get(m, seg, field, rep, comp, sub);
    return ST_OK;
}

/* ---- parsing ----------------------------------------------------------- */

static const hl7_limits default_limits = {HL7_DEFAULT_MAX_MESSAGE, HL7_DEFAULT_MAX_SEGMENTS, HL7_DEFAULT_MAX_FIELDS,
                                          HL7_DEFAULT_MAX_FIELD};

/* Find the segment and field holding byte `off` (for locating byte faults). */
static void locate(const hl7_msg *m, size_t off, long *seg, int *field) {
    *seg = -1;
    *field = 0;
    for (size_t i = 0; i < m->nseg; i++) {
        const seg_rec *s = &m->seg[i];
        if (off < s->start || off >= s->end) continue;
        *seg = (long)i;
        for (uint32_t k = 0; k < s->nfields; k++) {
            span sp = m->f[s->first + k];
            if (off >= sp.off && off < (size_t)sp.off + sp.len) *field = (int)k + 1;
        }
        return;
    }
}

static status byte_fault(hl7_msg *m, size_t off, hl7_error *e, const char *what) {
    long seg;
    int field;
    locate(m, off, &seg, &field);
    const char *id = seg >= 0 ? m->seg[seg].id : "MSH";
    int is_msh = seg <= 0;
    return hl7_fail(e, ST_INVALID, is_msh ? HL7_AR : HL7_AE, HL7_ERR_DATA_TYPE, id, seg >= 0 ? (int)m->seg[seg].seq : 1,
                    seg >= 0 ? (int)seg : 0, field, 0, 0, 0, "%s at byte %zu of the message", what, off);
}

/* Eight bytes at a time: nonzero if any byte is < 0x20 or >= 0x80. */
static uint64_t word_needs_check(const unsigned char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    return (x | ((x - ones * 0x20) & ~x)) & highs;
}

/* Check every byte: control characters and (unless ISO-8859-1) UTF-8. */
static status check_bytes(hl7_msg *m, size_t start, hl7_error *e) {
    const unsigned char *p = (const unsigned char *)m->buf;
    size_t n = m->len;
    for (size_t i = start; i < n;) {
        if (i + 8 <= n && !word_needs_check(p + i)) {
            i += 8;
            continue;
        }
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80) {
            i++;
            continue;
        }
        if (c < 0x20) {
            if (c == '\r' || c == '\n' || c == '\t') {
                i++;
                continue;
            }
            char what[64];
            snprintf(what, sizeof what, "control character 0x%02X", c);
            return byte_fault(m, i, e, what);
        }
        if (m->latin1) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (!k) return byte_fault(m, i, e, "invalid UTF-8");
        i += k;
    }
    return ST_OK;
}

static int is_eol(char c) { return c == '\r' || c == '\n'; }

/* The first CR or LF at or after p, or len. */
static size_t line_end(const char *b, size_t p, size_t len) {
    const char *cr = memchr(b + p, '\r', len - p);
    size_t lim = cr ? (size_t)(cr - b) : len;
    const char *lf = memchr(b + p, '\n', lim - p);
    return lf ? (size_t)(lf - b) : lim;
}


/* Charsets this code decodes (MSH-18, HL7 table 0211). */
static int charset_kind(hl7_str cs) {
    static const char *utf8[] = {"UNICODE UTF-8", "UTF-8", "UTF8", "ASCII", "UNICODE"};
    static const char *latin1[] = {"8859/1", "ISO-8859-1", "ISO8859-1", "8859/15"};
    if (!cs.n) return 0;
    for (size_t i = 0; i < sizeof utf8 / sizeof utf8[0]; i++)
        if (hl7_str_ieq(cs, utf8[i])) return 0;
    for (size_t i = 0; i < sizeof latin1 / sizeof latin1[0]; i++)
        if (hl7_str_ieq(cs, latin1[i])) return 1;
    return -1;
}

/* Split one segment line [p, end) into m->seg[m->nseg] and its field spans.
 * `msh` is set for the MSH segment (first field is the separator itself). */
static status split_segment(hl7_msg *m, const hl7_limits *lim, size_t p, size_t end, int msh, size_t max_f,
                            hl7_error *e) {
    const char *b = m->buf;
    char fs = m->d.field;
    size_t idx = m->nseg;
    seg_rec *s = &m->seg[idx];
    size_t idend = p;
    while (idend < end && b[idend] != fs) idend++;
    if (!valid_seg_id(b + p, idend - p)) {
        char shown[8];
        size_t k = 0;
        for (size_t i = p; i < idend && k < 6; i++) shown[k++] = isprint((unsigned char)b[i]) ? b[i] : '?';
        shown[k] = 0;
        return hl7_fail(e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "", 0, (int)idx, 0, 0, 0, 0,
                        "segment %zu does not begin with a segment id (found \"%s\")", idx + 1, shown);
    }
    memcpy(s->id, b + p, 3);
    s->id[3] = 0;
    s->start = (uint32_t)p;
    s->end = (uint32_t)end;
    s->first = (uint32_t)m->nf;
    s->nfields = 0;
    s->seq = 1;
    for (size_t i = 0; i < idx; i++)
        if (memcmp(m->seg[i].id, s->id, 4) == 0) s->seq++;
    m->nseg++;
    if (idend >= end) return ST_OK; /* a segment with no fields */

    size_t q = idend + 1; /* first byte of field 1 (or, for MSH, MSH-2) */
    if (msh) {
        span f1 = {(uint32_t)idend, 1};
        m->f[m->nf++] = f1;
        s->nfields = 1;
    }
    for (;;) {
        size_t r = q;
        const char *hit = memchr(b + q, fs, end - q);
        r = hit ? (size_t)(hit - b) : end;
        if (s->nfields >= lim->max_fields || m->nf >= max_f)
            return hl7_fail(e, ST_TOO_LARGE, msh ? HL7_AR : HL7_AE, HL7_ERR_DATA_TYPE, s->id, (int)s->seq, (int)idx,
                            (int)s->nfields + 1, 0, 0, 0, "segment %s has more than %zu fields", s->id,
                            lim->max_fields);
        if (r - q > lim->max_field)
            return hl7_fail(e, ST_TOO_LARGE, msh ? HL7_AR : HL7_AE, HL7_ERR_DATA_TYPE, s->id, (int)s->seq, (int)idx,
                            (int)s->nfields + 1, 0, 0, 0, "field %s-%u is %zu bytes long; the limit is %zu", s->id,
                            s->nfields + 1, r - q, lim->max_field);
        span f = {(uint32_t)q, (uint32_t)(r - q)};
        m->f[m->nf++] = f;
        s->nfields++;
        if (r >= end) break;
        q = r + 1;
    }
    return ST_OK;
}

static void read_header(hl7_msg *m) {
    hl7_header *h = &m->h;
    h->sending_app = hl7_raw(m, 0, 3, 1, 0, 0);
    h->sending_facility = hl7_raw(m, 0, 4, 1, 0, 0);
    h->receiving_app = hl7_raw(m, 0, 5, 1, 0, 0);
    h->receiving_facility = hl7_raw(m, 0, 6, 1, 0, 0);
    h->timestamp = hl7_str_trim(hl7_get(m, 0, 7, 1, 1, 0));
    h->type = hl7_str_trim(hl7_get(m, 0, 9, 1, 1, 0));
    h->trigger = hl7_str_trim(hl7_get(m, 0, 9, 1, 2, 0));
    h->structure = hl7_str_trim(hl7_get(m, 0, 9, 1, 3, 0));
    h->control_id = hl7_str_trim(hl7_get(m, 0, 10, 1, 0, 0));
    h->processing_id = hl7_str_trim(hl7_get(m, 0, 11, 1, 1, 0));
    h->version = hl7_str_trim(hl7_get(m, 0, 12, 1, 1, 0));
    h->charset = hl7_str_trim(hl7_raw(m, 0, 18, 1, 0, 0));
    /* v2.1/v2.2 senders may carry the trigger event only in EVN-1 */
    if (!h->trigger.n) {
        long evn = hl7_segment_find(m, "EVN", 1);
        if (evn > 0) h->trigger = hl7_str_trim(hl7_get(m, evn, 1, 1, 1, 0));
    }
}

status hl7_parse(const char *bytes, size_t len, const hl7_limits *limits, arena *a, hl7_msg **out, hl7_error *e) {
    status rc = ST_OK;
    const hl7_limits *lim = limits ? limits : &default_limits;
    hl7_msg *m = NULL;
    size_t p = 0, nsep = 0, nlines = 1;
    *out = NULL;
    if (e) memset(e, 0, sizeof *e);

    if (!bytes || len == 0) {
        rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_SEGMENT_SEQUENCE, "", 0, -1, 0, 0, 0, 0, "empty message");
        goto out;
    }
    if (len > lim->max_message || len > UINT32_MAX) {
        rc = hl7_fail(e, ST_TOO_LARGE, HL7_AR, HL7_ERR_INTERNAL, "", 0, -1, 0, 0, 0, 0,
                      "message is %zu bytes; the limit is %zu", len, lim->max_message);
        goto out;
    }
    if (len >= 3 && memcmp(bytes, "\xEF\xBB\xBF", 3) == 0) p = 3;
    while (p < len && (is_eol(bytes[p]) || bytes[p] == ' ' || bytes[p] == '\t')) p++;
    if (len - p < 8 || memcmp(bytes + p, "MSH", 3) != 0) {
        rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_SEGMENT_SEQUENCE, "MSH", 1, 0, 0, 0, 0, 0,
                      "message does not begin with an MSH segment");
        goto out;
    }

    /* delimiters: MSH-1 and MSH-2 */
    hl7_delims d = {0};
    d.field = bytes[p + 3];
    if (!valid_delim((unsigned char)d.field)) {
        rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_DATA_TYPE, "MSH", 1, 0, 1, 0, 0, 0,
                      "MSH-1 field separator 0x%02X is not a printable non-alphanumeric character",
                      (unsigned char)d.field);
        goto out;
    }
    {
        size_t q = p + 4, n = 0;
        char enc[5];
        while (q < len && bytes[q] != d.field && !is_eol(bytes[q])) {
            if (n == 5) {
                rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_DATA_TYPE, "MSH", 1, 0, 2, 0, 0, 0,
                              "MSH-2 encoding characters are more than five characters long");
                goto out;
            }
            enc[n++] = bytes[q++];
        }
        if (n == 0) {
            rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 1, 0, 2, 0, 0, 0,
                          "MSH-2 encoding characters are missing");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            int bad = !valid_delim((unsigned char)enc[i]) || enc[i] == d.field;
            for (size_t j = 0; j < i; j++) bad |= enc[j] == enc[i];
            if (bad) {
                rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_DATA_TYPE, "MSH", 1, 0, 2, 0, 0, 0,
                              "MSH-2 encoding character %zu (0x%02X) is not a distinct printable "
                              "non-alphanumeric character",
                              i + 1, (unsigned char)enc[i]);
                goto out;
            }
        }
        d.component = enc[0];
        d.repetition = n > 1 ? enc[1] : 0;
        d.escape = n > 2 ? enc[2] : 0;
        d.subcomponent = n > 3 ? enc[3] : 0;
    }

    /* pass 1: count separators and lines to size the arrays */
    for (const char *q = bytes + p; (q = memchr(q, d.field, (size_t)(bytes + len - q))) != NULL; q++) nsep++;
    for (const char *q = bytes + p; (q = memchr(q, '\r', (size_t)(bytes + len - q))) != NULL; q++) nlines++;
    for (const char *q = bytes + p; (q = memchr(q, '\n', (size_t)(bytes + len - q))) != NULL; q++) nlines++;
    m = arena_zalloc(a, sizeof *m);
    m->buf = bytes;
    m->len = len;
    m->d = d;
    m->a = a;
    size_t max_seg = nlines < lim->max_segments ? nlines : lim->max_segments;
    size_t max_f = nsep + 2;
    m->seg = arena_alloc(a, max_seg * sizeof *m->seg);
    m->f = arena_alloc(a, max_f * sizeof *m->f);

    /* pass 2: segments and fields */
    while (p < len) {
        size_t end = p;
        end = line_end(bytes, p, len);
        if (end > p) {
            if (m->nseg == max_seg) {
                rc = hl7_fail(e, ST_TOO_LARGE, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "", 0, (int)m->nseg, 0, 0, 0, 0,
                              "message has more than %zu segments", lim->max_segments);
                goto out;
            }
            int msh = m->nseg == 0;
            if (!msh && end - p >= 3 && memcmp(bytes + p, "MSH", 3) == 0) {
                rc = hl7_fail(e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "MSH", 2, (int)m->nseg, 0, 0, 0, 0,
                              "a second MSH segment: batches must be split into messages before parsing");
                goto out;
            }
            rc = split_segment(m, lim, p, end, msh, max_f, e);
            if (rc != ST_OK) goto out;
            if (msh) read_header(m);
        }
        p = end;
        while (p < len && is_eol(bytes[p])) p++;
    }

    read_header(m); /* again, now that EVN (a v2.2 trigger) is split too */

    /* header fields every message must have */
    {
        static const struct {
            int field, comp;
            const char *what;
        } required[] = {
            {9, 1, "MSH-9 message type"},       {9, 2, "MSH-9.2 trigger event"},
            {10, 0, "MSH-10 message control id"}, {11, 1, "MSH-11 processing id"},
            {12, 1, "MSH-12 version id"},
        };
        for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
            hl7_str v = required[i].field == 9 && required[i].comp == 2 ? m->h.trigger
                        : hl7_str_trim(hl7_get(m, 0, required[i].field, 1, required[i].comp, 0));
            if (v.n) continue;
            if (required[i].field == 9 && required[i].comp == 2 && hl7_str_eq(m->h.type, "ACK")) continue;
            rc = hl7_fail(e, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 1, 0, required[i].field, 0,
                          required[i].comp, 0, "%s is missing", required[i].what);
            goto out;
        }
    }
    int cs = charset_kind(m->h.charset);
    if (cs < 0) {
        rc = hl7_fail(e, ST_UNSUPPORTED, HL7_AR, HL7_ERR_DATA_TYPE, "MSH", 1, 0, 18, 0, 0, 0,
                      "MSH-18 character set \"%.*s\" is not supported (UTF-8, ASCII or ISO-8859-1)",
                      (int)(m->h.charset.n > 40 ? 40 : m->h.charset.n), m->h.charset.p);
        goto out;
    }
    m->latin1 = cs == 1;
    if (m->latin1) read_header(m); /* again, now transcoding */

    /* pass 3: the bytes themselves */
    rc = check_bytes(m, 0, e);

out:
    /* the header is readable once MSH was split, even on failure */
    if (m && m->nseg > 0) *out = m;
    return rc;
}
