/*
 * hl7_ack.c — HL7 v2 original-mode acknowledgements (ACK with MSA and ERR),
 * for a parsed message or for bytes that could not be parsed (see
 * hl7_ack_build in hl7.h for the segments and fields written).
 *
 * Wire format owned here: the ACK message, segments ending "\r", in the
 * delimiters of the message it answers, so an echoed field (MSH-10 into
 * MSA-2, MSH-3..6 swapped) is copied byte for byte without re-escaping.
 * Text that we write (error messages) is escaped with \F\ \S\ \T\ \R\ \E\
 * for those delimiters; control characters become spaces and bytes that are
 * not UTF-8 become '?', so the ACK is always clean ER7.
 *
 * ERR layout by version (HL7 v2.5 chapter 2, ERR; ERL data type; tables
 * 0357 and 0516): v2.5 and later use ERR-2 (ERL: segment id ^ segment
 * sequence ^ field ^ field repetition ^ component ^ subcomponent), ERR-3
 * (CWE: code ^ text ^ HL70357), ERR-4 (severity E/W/I) and ERR-8 (user
 * message); ERR-1 is deprecated there and left empty. v2.2-v2.4 define only
 * ERR-1 (ELD: segment id ^ sequence ^ field position ^ code as a CE in
 * subcomponents), and MSA-3 (text message) for the human-readable reason.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hl7.h"
#include "../fhir/fhirdate.h"

const char *hl7_ack_code_name(hl7_ack_code c) {
    switch (c) {
    case HL7_AA: return "AA";
    case HL7_AE: return "AE";
    default: return "AR";
    }
}

/* Table 0357 texts. */
static const struct {
    int code;
    const char *text;
} err_text[] = {
    {HL7_ERR_ACCEPTED, "Message accepted"},
    {HL7_ERR_SEGMENT_SEQUENCE, "Segment sequence error"},
    {HL7_ERR_REQUIRED_FIELD, "Required field missing"},
    {HL7_ERR_DATA_TYPE, "Data type error"},
    {HL7_ERR_TABLE_VALUE, "Table value not found"},
    {HL7_ERR_UNSUPPORTED_TYPE, "Unsupported message type"},
    {HL7_ERR_UNSUPPORTED_EVENT, "Unsupported event code"},
    {HL7_ERR_UNSUPPORTED_PROCESSING_ID, "Unsupported processing id"},
    {HL7_ERR_UNSUPPORTED_VERSION, "Unsupported version id"},
    {HL7_ERR_UNKNOWN_KEY, "Unknown key identifier"},
    {HL7_ERR_DUPLICATE_KEY, "Duplicate key identifier"},
    {HL7_ERR_RECORD_LOCKED, "Application record locked"},
    {HL7_ERR_INTERNAL, "Application internal error"},
};

static const char *code_text(int code) {
    for (size_t i = 0; i < sizeof err_text / sizeof err_text[0]; i++)
        if (err_text[i].code == code) return err_text[i].text;
    return "Application internal error";
}

/* v2.5.1 -> 251; 0 when unreadable. */
static int version_number(const char *v, size_t n) {
    int parts[3] = {0, 0, 0}, k = 0;
    size_t i = 0;
    if (!n) return 0;
    while (i < n && k < 3) {
        if (v[i] < '0' || v[i] > '9') return 0;
        int x = 0;
        while (i < n && v[i] >= '0' && v[i] <= '9' && x < 100) x = x * 10 + (v[i++] - '0');
        parts[k++] = x;
        if (i < n && v[i] == '.') i++;
        else break;
    }
    return parts[0] * 100 + parts[1] * 10 + parts[2];
}

/* Append text escaped for the delimiters `d`. */
static void put_text(buf *out, const hl7_delims *d, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e = 0;
        if (c == (unsigned char)d->field) e = 'F';
        else if (d->component && c == (unsigned char)d->component) e = 'S';
        else if (d->subcomponent && c == (unsigned char)d->subcomponent) e = 'T';
        else if (d->repetition && c == (unsigned char)d->repetition) e = 'R';
        else if (d->escape && c == (unsigned char)d->escape) e = 'E';
        if (e) {
            if (d->escape) {
                buf_putc(out, d->escape);
                buf_putc(out, e);
                buf_putc(out, d->escape);
            } else {
                buf_putc(out, ' ');
            }
            continue;
        }
        if (c < 0x20 || c == 0x7f) {
            buf_putc(out, ' ');
        } else if (c >= 0x80) {
            /* copy a valid UTF-8 sequence, else '?' */
            size_t k = 0;
            if (c >= 0xC2 && c <= 0xDF) k = 2;
            else if (c >= 0xE0 && c <= 0xEF) k = 3;
            else if (c >= 0xF0 && c <= 0xF4) k = 4;
            int ok = k && i + k <= n;
            for (size_t j = 1; ok && j < k; j++) ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
            if (ok) {
                buf_append(out, s + i, k);
                i += k - 1;
            } else {
                buf_putc(out, '?');
            }
        } else {
            buf_putc(out, (char)c);
        }
    }
}

/* Append a field echoed from the message as it is (it is already escaped
 * for these delimiters), but never a control character or a byte that is
 * not UTF-8: a message rejected for holding them must get a clean ACK. */
static void put_raw(buf *out, hl7_str s) {
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c >= 0x20 && c < 0x7f) {
            buf_putc(out, (char)c);
            continue;
        }
        size_t k = 0;
        if (c >= 0xC2 && c <= 0xDF) k = 2;
        else if (c >= 0xE0 && c <= 0xEF) k = 3;
        else if (c >= 0xF0 && c <= 0xF4) k = 4;
        int ok = k && i + k <= s.n;
        for (size_t j = 1; ok && j < k; j++) ok = ((unsigned char)s.p[i + j] & 0xC0) == 0x80;
        if (ok) {
            buf_append(out, s.p + i, k);
            i += k - 1;
        } else {
            buf_putc(out, '?');
        }
    }
}

static void put_cstr(buf *out, const hl7_delims *d, const char *s) { put_text(out, d, s, strlen(s)); }

static void default_timestamp(char out[32]) {
    int64_t now = fhir_now_usec() / 1000000;
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y%m%d%H%M%S+0000", &tm);
}

static void default_control_id(char out[32]) {
    static atomic_uint_fast64_t counter;
    uint64_t n = atomic_fetch_add(&counter, 1);
    /* time in ms and a process-wide counter: unique within one process run */
    snprintf(out, 32, "C%llX%04llX", (unsigned long long)(fhir_now_usec() / 1000),
             (unsigned long long)(n & 0xFFFF));
}

void hl7_ack_build(const hl7_msg *m, hl7_ack_code code, const hl7_error *errs, size_t nerr,
                   const hl7_ack_opts *opts, buf *out) {
    static const hl7_delims std = {'|', '^', '~', '\\', '&'};
    static const hl7_ack_opts no_opts;
    const hl7_ack_opts *o = opts ? opts : &no_opts;
    const hl7_delims *d = m ? hl7_delimiters(m) : &std;
    const hl7_header *h = m ? hl7_msg_header(m) : NULL;
    char fs = d->field;
    char ts[32], cid[32];
    hl7_str enc = m ? hl7_raw(m, 0, 2, 1, 0, 0) : (hl7_str){"^~\\&", 4};
    hl7_str version = m ? hl7_raw(m, 0, 12, 0, 0, 0) : (hl7_str){"", 0};
    hl7_str vfirst = m ? h->version : (hl7_str){"", 0};
    int vnum = version_number(vfirst.p, vfirst.n);
    if (!version.n || !vnum) {
        version = (hl7_str){"2.5", 3};
        vnum = 250;
    }

    /* MSH */
    buf_puts(out, "MSH");
    buf_putc(out, fs);
    put_raw(out, enc);
    buf_putc(out, fs);
    if (h && h->receiving_app.n) put_raw(out, h->receiving_app);
    else put_cstr(out, d, o->sending_app ? o->sending_app : "CONCORD");
    buf_putc(out, fs);
    if (h && h->receiving_facility.n) put_raw(out, h->receiving_facility);
    else if (o->sending_facility) put_cstr(out, d, o->sending_facility);
    buf_putc(out, fs);
    if (h) put_raw(out, h->sending_app);
    buf_putc(out, fs);
    if (h) put_raw(out, h->sending_facility);
    buf_putc(out, fs);
    if (o->timestamp) {
        put_cstr(out, d, o->timestamp);
    } else {
        default_timestamp(ts);
        buf_puts(out, ts);
    }
    buf_putc(out, fs);
    buf_putc(out, fs); /* MSH-8 security */
    buf_puts(out, "ACK");
    if (vnum >= 230 && h && h->trigger.n) {
        if (d->component) buf_putc(out, d->component);
        put_text(out, d, h->trigger.p, h->trigger.n);
        if (vnum >= 231 && d->component) {
            buf_putc(out, d->component);
            buf_puts(out, "ACK");
        }
    }
    buf_putc(out, fs);
    if (o->control_id) {
        put_cstr(out, d, o->control_id);
    } else {
        default_control_id(cid);
        buf_puts(out, cid);
    }
    buf_putc(out, fs);
    hl7_str pid = m ? hl7_raw(m, 0, 11, 0, 0, 0) : (hl7_str){"", 0};
    if (pid.n) put_raw(out, pid);
    else buf_putc(out, 'P');
    buf_putc(out, fs);
    put_raw(out, version);
    buf_putc(out, '\r');

    /* MSA */
    buf_puts(out, "MSA");
    buf_putc(out, fs);
    buf_puts(out, hl7_ack_code_name(code));
    buf_putc(out, fs);
    hl7_str ctl = m ? hl7_raw(m, 0, 10, 0, 0, 0) : (hl7_str){"", 0};
    put_raw(out, ctl);
    if (vnum < 250 && nerr > 0 && code != HL7_AA) {
        buf_putc(out, fs);
        put_cstr(out, d, errs[0].text);
    }
    buf_putc(out, '\r');

    /* ERR */
    for (size_t i = 0; i < nerr && code != HL7_AA; i++) {
        const hl7_error *e = &errs[i];
        char cd = d->component ? d->component : ' ';
        char sd = d->subcomponent ? d->subcomponent : cd;
        buf_puts(out, "ERR");
        buf_putc(out, fs);
        if (vnum < 250) {
            /* ERR-1 ELD: segment ^ sequence ^ field ^ code&text&HL70357 */
            if (e->segment[0]) {
                buf_puts(out, e->segment);
                buf_putc(out, cd);
                if (e->seg_seq > 0) buf_printf(out, "%d", e->seg_seq);
                buf_putc(out, cd);
                if (e->field > 0) buf_printf(out, "%d", e->field);
                buf_putc(out, cd);
            } else {
                buf_putc(out, cd);
                buf_putc(out, cd);
                buf_putc(out, cd);
            }
            buf_printf(out, "%d", e->code);
            buf_putc(out, sd);
            put_cstr(out, d, code_text(e->code));
            buf_putc(out, sd);
            buf_puts(out, "HL70357");
        } else {
            buf_putc(out, fs); /* ERR-1 deprecated */
            if (e->segment[0]) {
                /* ERR-2 ERL */
                int levels[5] = {e->seg_seq > 0 ? e->seg_seq : 1, e->field, e->field > 0 ? (e->rep > 0 ? e->rep : 1) : 0,
                                 e->comp, e->sub};
                int last = 0;
                for (int k = 0; k < 5; k++)
                    if (levels[k] > 0) last = k;
                if (e->field <= 0) last = 0;
                buf_puts(out, e->segment);
                for (int k = 0; k <= last; k++) {
                    buf_putc(out, cd);
                    if (levels[k] > 0) buf_printf(out, "%d", levels[k]);
                }
            }
            buf_putc(out, fs);
            buf_printf(out, "%d", e->code); /* ERR-3 CWE */
            buf_putc(out, cd);
            put_cstr(out, d, code_text(e->code));
            buf_putc(out, cd);
            buf_puts(out, "HL70357");
            buf_putc(out, fs);
            buf_putc(out, e->severity ? e->severity : 'E'); /* ERR-4 */
            buf_putc(out, fs);                              /* ERR-5 */
            buf_putc(out, fs);                              /* ERR-6 */
            buf_putc(out, fs);                              /* ERR-7 */
            buf_putc(out, fs);
            put_cstr(out, d, e->text); /* ERR-8 user message */
        }
        buf_putc(out, '\r');
    }
}
