/*
 * hl7.h — HL7 v2 (ER7, "pipe and hat") messages: parse, address, decode.
 *
 * What a caller does:
 *
 *     arena a = {0};
 *     hl7_msg *m;
 *     hl7_error e;
 *     if (hl7_parse(bytes, len, NULL, &a, &m, &e) != ST_OK) {
 *         // e says where and why (ready for an ERR segment: see hl7_ack.c);
 *         // m is still set when the MSH segment itself was readable, so an
 *         // ACK can echo its control id, applications and delimiters.
 *     }
 *     long pid = hl7_segment_find(m, "PID", 0);
 *     hl7_str family = hl7_get(m, pid, 5, 1, 1, 0);     // PID-5[1].1
 *     hl7_str x;  hl7_path(m, "PID-3[2].4.1", &x);      // the same by path
 *     arena_free(&a);
 *
 * Zero copy: the message keeps slices of the caller's bytes (which it
 * BORROWS: they must outlive the hl7_msg). Escape sequences are decoded only
 * when a value is asked for, into the arena; a value without escapes is a
 * slice of the input. Everything the parser allocates lives in the arena
 * given to hl7_parse and is invalidated by arena_reset/arena_free.
 *
 * Positions are numbered as HL7 numbers them, from 1: field 1 of MSH is the
 * field separator itself (MSH-1) and field 2 the encoding characters (MSH-2),
 * so "MSH-9" means what the standard says. Repetitions, components and
 * subcomponents count from 1; 0 as a component or subcomponent means "the
 * whole of the enclosing element" (undivided), 0 as a repetition means the
 * whole field with all its repetitions. An element that is absent reads as
 * the empty string, never as an error.
 *
 * Decoding (hl7_get): \F\ \S\ \T\ \R\ \E\ become the message's own field,
 * component, subcomponent, repetition and escape characters; \Xhh...\ the
 * bytes it spells in hex; \.br\ and \.sp\ (formatted text line breaks) a
 * "\n"; the other formatting escapes (\H\ \N\ \.in\ \.ti\ \.sk\ \.ce\ \.fi\
 * \.nf\), local escapes (\Z..\) and character-set switches (\C..\ \M..\) are
 * dropped. An escape with no closing escape character, or an \X\ with an
 * odd or non-hex digit string, is kept literally. The HL7 explicit null
 * (a value of exactly "") decodes to the empty string. Values of a message
 * declared ISO-8859-1 in MSH-18 are transcoded to UTF-8; bytes produced by
 * \X..\ that are not valid UTF-8 become U+FFFD. So every decoded value is
 * valid UTF-8 and can go straight into JSON; \X..\ never yields a control
 * character other than TAB, CR or LF (such bytes are dropped).
 *
 * Segment terminators: "\r" as the standard says; "\n" and "\r\n" are
 * accepted too, and blank lines are skipped. Every segment is kept in
 * order, including Z-segments and segments this code does not know.
 *
 * Thread safety: a parsed message is read-only except for the arena its
 * decoded values go into, so one hl7_msg belongs to one thread at a time.
 */
#ifndef CONCORD_INGEST_HL7_H
#define CONCORD_INGEST_HL7_H

#include <stddef.h>
#include <stdint.h>

#include "../base/arena.h"
#include "../base/buf.h"
#include "../base/status.h"

/* ---- limits ------------------------------------------------------------ */

/* Defaults for hl7_limits (hl7_parse with limits == NULL). */
#define HL7_DEFAULT_MAX_MESSAGE  (4u << 20) /* bytes in one message */
#define HL7_DEFAULT_MAX_SEGMENTS 4096       /* segments in one message */
#define HL7_DEFAULT_MAX_FIELDS   512        /* fields in one segment */
#define HL7_DEFAULT_MAX_FIELD    (1u << 20) /* bytes in one field (OBX-5 may carry a report) */

typedef struct hl7_limits {
    size_t max_message;
    size_t max_segments;
    size_t max_fields;
    size_t max_field;
} hl7_limits;

/* ---- errors: what an ERR segment needs --------------------------------- */

/* HL7 table 0008 acknowledgment codes (original mode). */
typedef enum hl7_ack_code {
    HL7_AA = 0, /* accepted */
    HL7_AE,     /* error: the content is wrong; the sender should fix and resend */
    HL7_AR      /* rejected: cannot be processed at all (bad MSH, unsupported type) */
} hl7_ack_code;

/* HL7 table 0357 message error condition codes. */
enum {
    HL7_ERR_ACCEPTED = 0,
    HL7_ERR_SEGMENT_SEQUENCE = 100, /* segments out of order or a required segment missing */
    HL7_ERR_REQUIRED_FIELD = 101,   /* a required field is missing */
    HL7_ERR_DATA_TYPE = 102,        /* a field holds data of the wrong type or form */
    HL7_ERR_TABLE_VALUE = 103,      /* a coded field holds a value not in its table */
    HL7_ERR_UNSUPPORTED_TYPE = 200,
    HL7_ERR_UNSUPPORTED_EVENT = 201,
    HL7_ERR_UNSUPPORTED_PROCESSING_ID = 202,
    HL7_ERR_UNSUPPORTED_VERSION = 203,
    HL7_ERR_UNKNOWN_KEY = 204,
    HL7_ERR_DUPLICATE_KEY = 205,
    HL7_ERR_RECORD_LOCKED = 206,
    HL7_ERR_INTERNAL = 207
};

/* One fault, located the way HL7 v2.5 ERR-2 (data type ERL) locates it:
 * segment id, the occurrence of that segment id in the message (1 = the
 * first PID, whatever precedes it), field, repetition, component,
 * subcomponent (0 = not narrowed to that level). */
typedef struct hl7_error {
    status st;         /* the project status this fault returns as */
    int code;          /* table 0357 */
    hl7_ack_code ack;  /* HL7_AE or HL7_AR: what the ACK should say */
    char severity;     /* table 0516: 'E' error, 'W' warning, 'I' information */
    char segment[4];   /* "PID"; "" when the fault is not in a segment */
    int seg_seq;       /* ERL-2: occurrence of that segment id, from 1 */
    int seg_index;     /* position in the message, from 0; -1 when none */
    int field, rep, comp, sub;
    char text[256];    /* for ERR-8 (user message) and logs: plain, no delimiters needed */
} hl7_error;

/* Fill `e` (if non-NULL); returns `st` so callers can `return hl7_fail(...)`. */
status hl7_fail(hl7_error *e, status st, hl7_ack_code ack, int code, const char *segment, int seg_seq,
                int seg_index, int field, int rep, int comp, int sub, const char *fmt, ...)
    __attribute__((format(printf, 12, 13)));
/* "PID[1]-3[2].1" style location (only the levels that are set); "" if none. */
void hl7_error_where(const hl7_error *e, char *out, size_t n);
/* The same fault as a project `err` (for OperationOutcome, logs, CLI):
 * where = hl7_error_where, issue type from the 0357 code, status e->st. */
void hl7_error_to_err(const hl7_error *e, err *out);

/* ---- the parsed message ------------------------------------------------ */

/* A slice: `p` is not NUL-terminated. Borrowed from the message bytes or the
 * message's arena. */
typedef struct hl7_str {
    const char *p;
    size_t n;
} hl7_str;

/* The message's delimiters, from MSH-1 and MSH-2. A 0 means the message
 * declared no such delimiter (MSH-2 may be shorter than four characters). */
typedef struct hl7_delims {
    char field, component, repetition, escape, subcomponent;
} hl7_delims;

typedef struct hl7_msg hl7_msg; /* opaque; lives in the arena */

/* Parse `len` bytes (BORROWED for the message's lifetime). `limits` may be
 * NULL for the defaults. The message and everything decoded from it live in
 * `a`.
 *
 * Checks: the bytes begin with MSH (after an optional UTF-8 BOM and blank
 * lines); the delimiters are printable, distinct, not alphanumeric; every
 * segment id is three characters [A-Z][A-Z0-9]{2}; the limits hold; no
 * control characters other than the terminators and TAB; the bytes are
 * valid UTF-8 (unless MSH-18 declares ISO-8859-1 / ASCII); MSH-9 (type and
 * trigger), MSH-10, MSH-11 and MSH-12 are present; the character set in
 * MSH-18, if any, is one this code decodes. It does not judge whether the
 * message type or version is supported: that is hl7_map's business.
 *
 * On failure returns ST_INVALID / ST_TOO_LARGE / ST_UNSUPPORTED with `e`
 * filled, and sets *out to the message if its MSH segment could be read
 * (enough for an ACK: see hl7_ack_build), else to NULL. */
status hl7_parse(const char *bytes, size_t len, const hl7_limits *limits, arena *a, hl7_msg **out,
                 hl7_error *e);

const hl7_delims *hl7_delimiters(const hl7_msg *m);
/* The bytes the message was parsed from. */
hl7_str hl7_message_bytes(const hl7_msg *m);

/* Segments, in message order, from 0. */
size_t hl7_segment_count(const hl7_msg *m);
/* The segment id ("PID"), NUL-terminated, owned by the message. NULL if
 * `seg` is out of range. */
const char *hl7_segment_id(const hl7_msg *m, long seg);
/* The index of the first segment named `id` at or after `from`, or -1. */
long hl7_segment_find(const hl7_msg *m, const char *id, long from);
/* Occurrence of segment `seg`'s id up to and including it (1 = first). */
int hl7_segment_seq(const hl7_msg *m, long seg);
/* The number of fields segment `seg` has (the highest field number present;
 * for MSH that counts MSH-1). */
int hl7_field_count(const hl7_msg *m, long seg);
int hl7_rep_count(const hl7_msg *m, long seg, int field);
int hl7_comp_count(const hl7_msg *m, long seg, int field, int rep);

/* The raw text of an element, escapes NOT decoded (a slice of the input). */
hl7_str hl7_raw(const hl7_msg *m, long seg, int field, int rep, int comp, int sub);
/* The decoded value of an element (see the header comment): a slice of the
 * input when it holds nothing to decode, else a copy in the arena. */
hl7_str hl7_get(hl7_msg *m, long seg, int field, int rep, int comp, int sub);
/* hl7_get as a NUL-terminated string in the arena. */
const char *hl7_get_cstr(hl7_msg *m, long seg, int field, int rep, int comp, int sub);

/* Address by path: SEG[occ]-FIELD[rep].COMP.SUB, e.g. "MSH-9.2", "PID-3[2].4.1",
 * "OBX[3]-5". Occurrence and repetition default to 1; a missing component
 * or subcomponent means the whole element. Returns ST_OK with the decoded
 * value (empty if absent), ST_NOT_FOUND if the segment occurrence does not
 * exist, ST_INVALID if the path is malformed. */
status hl7_path(hl7_msg *m, const char *path, hl7_str *out);

/* ---- header, read once at parse time ----------------------------------- */

typedef struct hl7_header {
    hl7_str sending_app, sending_facility;     /* MSH-3, MSH-4 (raw, whole HD) */
    hl7_str receiving_app, receiving_facility; /* MSH-5, MSH-6 */
    hl7_str timestamp;                         /* MSH-7.1, raw */
    hl7_str type, trigger, structure;          /* MSH-9.1, .2 (or EVN-1 in v2.2), .3 */
    hl7_str control_id;                        /* MSH-10, decoded */
    hl7_str processing_id;                     /* MSH-11.1 */
    hl7_str version;                           /* MSH-12.1 */
    hl7_str charset;                           /* MSH-18[1] */
} hl7_header;

/* The header fields. Valid whenever hl7_parse set *out (any of them may be
 * empty if parsing stopped at them). */
const hl7_header *hl7_msg_header(const hl7_msg *m);

/* ---- acknowledgements (hl7_ack.c) -------------------------------------- */

/* What the ACK needs beyond the message. Every member may be NULL/0. */
typedef struct hl7_ack_opts {
    const char *sending_app;      /* ACK MSH-3 when the message's MSH-5 is empty; default "CONCORD" */
    const char *sending_facility; /* ACK MSH-4 when the message's MSH-6 is empty */
    const char *control_id;       /* ACK MSH-10; NULL: generated (time and a counter) */
    const char *timestamp;        /* ACK MSH-7 as HL7 DTM; NULL: now, UTC */
} hl7_ack_opts;

/* Append to `out` the original-mode acknowledgement of message `m`:
 *
 *   MSH  same delimiters and version (MSH-12) and processing id (MSH-11)
 *        as the message; sending and receiving application/facility
 *        swapped; MSH-9 "ACK^<trigger>^ACK" (v2.3.1 on; "ACK^<trigger>" in
 *        v2.3, "ACK" in v2.2).
 *   MSA  MSA-1 = `code` (AA, AE, AR), MSA-2 = the message's MSH-10; before
 *        v2.5 MSA-3 carries the first error's text.
 *   ERR  one per error, for AE/AR: from v2.5, ERR-2 location (ERL),
 *        ERR-3 code (table 0357), ERR-4 severity (table 0516), ERR-8 text;
 *        before v2.5, ERR-1 (ELD: segment^sequence^field^code&text&HL70357),
 *        the only field those versions define.
 *
 * `m` may be NULL (the bytes had no readable MSH): the ACK then uses the
 * standard delimiters, v2.5, and an empty MSA-2. Segments end in "
"; no
 * MLLP framing. Text from errors is escaped for the message's delimiters.
 * `errs` (nerr entries) is borrowed. */
void hl7_ack_build(const hl7_msg *m, hl7_ack_code code, const hl7_error *errs, size_t nerr,
                   const hl7_ack_opts *opts, buf *out);
/* "AA", "AE", "AR". */
const char *hl7_ack_code_name(hl7_ack_code c);

/* ---- small helpers the mapping and tests share -------------------------- */

int hl7_str_eq(hl7_str s, const char *lit);   /* exact */
int hl7_str_ieq(hl7_str s, const char *lit);  /* ASCII case-insensitive */
char *hl7_str_dup(arena *a, hl7_str s);       /* NUL-terminated copy */
hl7_str hl7_str_trim(hl7_str s);              /* without surrounding spaces */

#endif
