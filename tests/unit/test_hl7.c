/*
 * test_hl7.c — the HL7 v2 parser, ACK builder and the mapping's building
 * blocks (src/ingest/hl7*.c), one behaviour per test. The message-level
 * mapping is covered by the data-driven cases (test_hl7_cases.c).
 *
 * Messages here are written with "\r" or "\n" as the test needs; M() joins
 * lines with "\r".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/validate.h"
#include "ingest/hl7.h"
#include "ingest/hl7_map.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct fixture {
    arena a;
    hl7_msg *m;
    hl7_error e;
    status rc;
} fixture;

static void parse(fixture *f, const char *text) {
    memset(f, 0, sizeof *f);
    f->rc = hl7_parse(text, strlen(text), NULL, &f->a, &f->m, &f->e);
}

static void done(fixture *f) { arena_free(&f->a); }

#define assert_path(f, path, want)                                                                               \
    do {                                                                                                         \
        hl7_str v_;                                                                                              \
        status st_ = hl7_path((f)->m, (path), &v_);                                                              \
        if (st_ != ST_OK) fail_msg("%s: status %s", (path), status_name(st_));                                   \
        if (v_.n != strlen(want) || memcmp(v_.p, (want), v_.n) != 0)                                             \
            fail_msg("%s: expected \"%s\", got \"%.*s\"", (path), (want), (int)v_.n, v_.p);                     \
    } while (0)

static const char *const A01 =
    "MSH|^~\\&|PAS|RQM01|CONCORD|NWL|20240615103000||ADT^A01^ADT_A01|C1|P|2.5\r"
    "EVN|A01|20240615103000\r"
    "PID|1||H1^^^RQM01^MR~9908301667^^^NHS^NH||SMITH^JOHN^A~SMYTHE^JON||19450312|M|||1 HIGH ST&FLAT 2^^LONDON^^W2 1NY\r"
    "PV1|1|I|WARD7^BAY2^BED4^RQM01||||||||||||||||V1^^^RQM01^VN\r";

/* ---- parsing: delimiters, structure ------------------------------------- */

static void test_msh_field_numbering(void **state) {
    (void)state;
    fixture f;
    parse(&f, A01);
    assert_int_equal(f.rc, ST_OK);
    assert_path(&f, "MSH-1", "|");
    assert_path(&f, "MSH-2", "^~\\&");
    assert_path(&f, "MSH-3", "PAS");
    assert_path(&f, "MSH-4", "RQM01");
    assert_path(&f, "MSH-7", "20240615103000");
    assert_path(&f, "MSH-9.1", "ADT");
    assert_path(&f, "MSH-9.2", "A01");
    assert_path(&f, "MSH-9.3", "ADT_A01");
    assert_path(&f, "MSH-10", "C1");
    assert_path(&f, "MSH-12", "2.5");
    /* MSH-2 is never split at its own characters */
    assert_int_equal(hl7_comp_count(f.m, 0, 2, 1), 1);
    assert_int_equal(hl7_field_count(f.m, 0), 12);
    const hl7_header *h = hl7_msg_header(f.m);
    assert_true(hl7_str_eq(h->type, "ADT") && hl7_str_eq(h->trigger, "A01") && hl7_str_eq(h->control_id, "C1"));
    assert_true(hl7_str_eq(h->version, "2.5") && hl7_str_eq(h->processing_id, "P"));
    done(&f);
}

static void test_delimiters_are_read_not_assumed(void **state) {
    (void)state;
    fixture f;
    /* field $, component *, repetition %, escape !, subcomponent @ */
    parse(&f, "MSH$*%!@$PAS$RQM01$$$20240101$$ADT*A28$C2$P$2.4\r"
              "PID$1$$P1*x@y*z%P2$$A!F!B!S!C!T!D!R!E!E!\r");
    assert_int_equal(f.rc, ST_OK);
    const hl7_delims *d = hl7_delimiters(f.m);
    assert_int_equal(d->field, '$');
    assert_int_equal(d->component, '*');
    assert_int_equal(d->repetition, '%');
    assert_int_equal(d->escape, '!');
    assert_int_equal(d->subcomponent, '@');
    assert_path(&f, "MSH-9.2", "A28");
    assert_path(&f, "PID-3.2.2", "y");
    assert_path(&f, "PID-3[2]", "P2");
    assert_int_equal(hl7_rep_count(f.m, 1, 3), 2);
    assert_path(&f, "PID-5", "A$B*C@D%E!");
    /* '|', '^', '~', '\' and '&' are ordinary characters here */
    done(&f);
    parse(&f, "MSH|#~\\&|PAS|RQM01|||20240101||ADT#A01|C3|P|2.4\rPID|1||H5###RQM01#MR||GREEN#PETER^X\r");
    assert_int_equal(f.rc, ST_OK);
    assert_path(&f, "MSH-9.2", "A01");
    assert_path(&f, "PID-3.4", "RQM01");
    assert_path(&f, "PID-5.2", "PETER^X");
    done(&f);
}

static void test_short_encoding_characters(void **state) {
    (void)state;
    fixture f;
    /* only component and repetition declared: no escapes, no subcomponents */
    parse(&f, "MSH|^~|PAS|RQM01|||20240101||ADT^A28|C4|P|2.3\rPID|1||P1&X||A\\F\\B\r");
    assert_int_equal(f.rc, ST_OK);
    assert_int_equal(hl7_delimiters(f.m)->escape, 0);
    assert_int_equal(hl7_delimiters(f.m)->subcomponent, 0);
    assert_path(&f, "PID-5", "A\\F\\B");
    assert_path(&f, "PID-3.1.1", "P1&X");
    done(&f);
}

static void test_bad_delimiters(void **state) {
    (void)state;
    fixture f;
    static const struct {
        const char *msg;
        int field, code;
    } cases[] = {
        {"MSHA^~\\&APAS\r", 1, HL7_ERR_DATA_TYPE},            /* alphanumeric field separator */
        {"MSH ^~\\& PAS\r", 1, HL7_ERR_DATA_TYPE},            /* space */
        {"MSH|^^\\&|PAS|||20240101||ADT^A01|1|P|2.4\r", 2, HL7_ERR_DATA_TYPE}, /* repeated */
        {"MSH|^~|&|PAS|||20240101||ADT^A01|1|P|2.4\r", 0, 0}, /* fine: two encoding characters */
        {"MSH|^~\\|&|PAS\r", -1, 0},                          /* '|' ends MSH-2: "^~\" then fields */
        {"MSH||PAS|RQM01|||20240101||ADT^A01|1|P|2.4\r", 2, HL7_ERR_REQUIRED_FIELD},
        {"MSH|^~\\&A|PAS|||20240101||ADT^A01|1|P|2.4\r", 2, HL7_ERR_DATA_TYPE}, /* alphanumeric 5th */
        {"MSH|^~\\&#!|PAS\r", 2, HL7_ERR_DATA_TYPE},         /* six */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse(&f, cases[i].msg);
        if (cases[i].field > 0) {
            if (f.rc == ST_OK) fail_msg("case %zu accepted", i);
            assert_int_equal(f.e.ack, HL7_AR);
            assert_string_equal(f.e.segment, "MSH");
            assert_int_equal(f.e.field, cases[i].field);
            assert_int_equal(f.e.code, cases[i].code);
        } else if (cases[i].field == 0) {
            if (f.rc != ST_OK) fail_msg("case %zu: %s", i, f.e.text);
        } else {
            /* delimiters fine; whatever else is wrong is not MSH-1/MSH-2 */
            assert_true(f.rc == ST_OK || f.e.field > 2);
        }
        done(&f);
    }
}

static void test_segment_terminators(void **state) {
    (void)state;
    static const char *const eols[] = {"\r", "\n", "\r\n", "\n\n", "\r\r\n"};
    for (size_t i = 0; i < sizeof eols / sizeof eols[0]; i++) {
        char msg[1024];
        snprintf(msg, sizeof msg, "\xEF\xBB\xBF\r\nMSH|^~\\&|PAS|RQM01|||20240101||ADT^A01|C5|P|2.4%sEVN|A01%sPID|1||H1"
                 "%sPV1|1|I%s", eols[i], eols[i], eols[i], eols[i]);
        fixture f;
        parse(&f, msg);
        if (f.rc != ST_OK) fail_msg("eol %zu: %s", i, f.e.text);
        assert_int_equal(hl7_segment_count(f.m), 4);
        assert_string_equal(hl7_segment_id(f.m, 3), "PV1");
        assert_path(&f, "MSH-12", "2.4");
        assert_path(&f, "PID-3", "H1");
        assert_path(&f, "PV1-2", "I");
        done(&f);
    }
}

static void test_z_and_unknown_segments_kept(void **state) {
    (void)state;
    fixture f;
    parse(&f, "MSH|^~\\&|PAS|RQM01|||20240101||ADT^A01|C6|P|2.4\rZPI|LOCAL|a^b\rPID|1||H1\rAL1|1||PENICILLIN\rZPI|SECOND\r"
              "ZZ9\r");
    assert_int_equal(f.rc, ST_OK);
    assert_int_equal(hl7_segment_count(f.m), 6);
    assert_int_equal(hl7_segment_find(f.m, "ZPI", 0), 1);
    assert_int_equal(hl7_segment_find(f.m, "ZPI", 2), 4);
    assert_int_equal(hl7_segment_seq(f.m, 4), 2);
    assert_path(&f, "ZPI-2.2", "b");
    assert_path(&f, "ZPI[2]-1", "SECOND");
    assert_path(&f, "AL1-3", "PENICILLIN");
    assert_int_equal(hl7_field_count(f.m, 5), 0); /* a segment with no fields */
    hl7_str v;
    assert_int_equal(hl7_path(f.m, "ZPI[3]-1", &v), ST_NOT_FOUND);
    done(&f);
}

static void test_repetitions_components_subcomponents(void **state) {
    (void)state;
    fixture f;
    parse(&f, A01);
    assert_int_equal(f.rc, ST_OK);
    long pid = hl7_segment_find(f.m, "PID", 0);
    assert_int_equal(hl7_rep_count(f.m, pid, 3), 2);
    assert_int_equal(hl7_rep_count(f.m, pid, 4), 0);
    assert_int_equal(hl7_comp_count(f.m, pid, 3, 2), 5);
    assert_path(&f, "PID-3[2].1", "9908301667");
    assert_path(&f, "PID-3[2].5", "NH");
    assert_path(&f, "PID-5[2].1", "SMYTHE");
    assert_path(&f, "PID-11.1.2", "FLAT 2");
    assert_path(&f, "PID-11.1", "1 HIGH ST&FLAT 2"); /* whole component, undivided */
    assert_path(&f, "PID-3[3].1", "");               /* absent reads as empty */
    assert_path(&f, "PID-99", "");
    hl7_str whole = hl7_raw(f.m, pid, 3, 0, 0, 0);
    assert_int_equal(whole.n, strlen("H1^^^RQM01^MR~9908301667^^^NHS^NH"));
    /* a field without separators is its own first component */
    assert_path(&f, "PID-7.1", "19450312");
    assert_path(&f, "PID-7.2", "");
    done(&f);
}

static void test_path_syntax(void **state) {
    (void)state;
    fixture f;
    parse(&f, A01);
    static const char *const bad[] = {"PID", "PID-", "PID-0", "PID[0]-1", "PID-3[0]", "PID-3.", "PID-3.1.", "pid-3",
                                      "PID-3x", "PI-3", "PID-3[2", "PID-3.0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hl7_str v;
        if (hl7_path(f.m, bad[i], &v) != ST_INVALID) fail_msg("path \"%s\" accepted", bad[i]);
    }
    done(&f);
}

/* ---- decoding ----------------------------------------------------------- */

static void test_escape_sequences(void **state) {
    (void)state;
    static const struct {
        const char *raw, *decoded;
    } cases[] = {
        {"A\\F\\B", "A|B"},
        {"A\\S\\B", "A^B"},
        {"A\\T\\B", "A&B"},
        {"A\\R\\B", "A~B"},
        {"A\\E\\B", "A\\B"},
        {"\\E\\F\\", "\\F\\"}, /* an escaped escape is not the start of an escape */
        {"\\X41424344\\", "ABCD"},
        {"\\XC3A9\\t\\XE282AC\\", "\xC3\xA9t\xE2\x82\xAC"},
        {"\\XFF\\", "\xEF\xBF\xBD"}, /* not UTF-8: U+FFFD */
        {"a\\X0D0A\\b", "a\r\nb"},
        {"a\\X00\\b\\X07\\", "ab"}, /* control bytes dropped */
        {"\\X414\\", "\\X414\\"},   /* odd digits: literal */
        {"\\XZZ\\", "\\XZZ\\"},     /* not hex: literal */
        {"line1\\.br\\line2", "line1\nline2"},
        {"a\\.sp 2\\b", "a\nb"},
        {"\\H\\bold\\N\\", "bold"},
        {"x\\.in+4\\y\\.ce\\z", "xyz"},
        {"a\\Zlocal\\b", "ab"},
        {"a\\C2842\\b\\M2442\\", "ab"}, /* character set switches dropped */
        {"a\\Q\\b", "a\\Q\\b"},         /* unknown: literal */
        {"trailing\\F", "trailing\\F"}, /* unterminated: literal */
        {"\"\"", ""},                   /* the HL7 null */
        {"\"x\"", "\"x\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[512];
        snprintf(msg, sizeof msg, "MSH|^~\\&|A|B|||20240101||ADT^A28|C|P|2.5\rNTE|1||%s\r", cases[i].raw);
        fixture f;
        parse(&f, msg);
        if (f.rc != ST_OK) fail_msg("case %zu: %s", i, f.e.text);
        hl7_str v = hl7_get(f.m, 1, 3, 1, 0, 0);
        if (v.n != strlen(cases[i].decoded) || memcmp(v.p, cases[i].decoded, v.n) != 0)
            fail_msg("\"%s\": expected \"%s\", got \"%.*s\"", cases[i].raw, cases[i].decoded, (int)v.n, v.p);
        done(&f);
    }
}

static void test_escapes_decoded_only_on_access(void **state) {
    (void)state;
    fixture f;
    parse(&f, "MSH|^~\\&|A|B|||20240101||ADT^A28|C|P|2.5\rNTE|1||plain~a\\S\\b\r");
    long nte = 1;
    hl7_str plain = hl7_get(f.m, nte, 3, 1, 0, 0);
    hl7_str bytes = hl7_message_bytes(f.m);
    /* nothing to decode: a slice of the caller's bytes, not a copy */
    assert_true(plain.p >= bytes.p && plain.p + plain.n <= bytes.p + bytes.n);
    hl7_str esc = hl7_get(f.m, nte, 3, 2, 0, 0);
    assert_false(esc.p >= bytes.p && esc.p < bytes.p + bytes.n);
    assert_int_equal(esc.n, 3);
    /* the raw value keeps the escape */
    hl7_str raw = hl7_raw(f.m, nte, 3, 2, 0, 0);
    assert_int_equal(raw.n, 5);
    done(&f);
}

static void test_latin1_transcoded(void **state) {
    (void)state;
    fixture f;
    parse(&f, "MSH|^~\\&|A|B|||20240101||ADT^A28|C|P|2.4||||||8859/1\rPID|1||P1||CL\xC9MENT^\\XE9\\\r");
    assert_int_equal(f.rc, ST_OK);
    assert_path(&f, "PID-5.1", "CL\xC3\x89MENT");
    assert_path(&f, "PID-5.2", "\xC3\xA9");
    done(&f);
    /* the same byte without the declaration is not UTF-8 */
    parse(&f, "MSH|^~\\&|A|B|||20240101||ADT^A28|C|P|2.4\rPID|1||P1||CL\xC9MENT\r");
    assert_int_equal(f.rc, ST_INVALID);
    assert_string_equal(f.e.segment, "PID");
    assert_int_equal(f.e.field, 5);
    assert_int_equal(f.e.code, HL7_ERR_DATA_TYPE);
    assert_int_equal(f.e.ack, HL7_AE);
    done(&f);
    parse(&f, "MSH|^~\\&|A|B|||20240101||ADT^A28|C|P|2.4||||||ISO IR87\rPID|1\r");
    assert_int_equal(f.rc, ST_UNSUPPORTED);
    assert_int_equal(f.e.field, 18);
    assert_int_equal(f.e.ack, HL7_AR);
    done(&f);
}

/* ---- faults --------------------------------------------------------------- */

static void test_malformed_input_located(void **state) {
    (void)state;
    static const struct {
        const char *msg;
        size_t len; /* 0: strlen */
        status st;
        hl7_ack_code ack;
        int code;
        const char *segment;
        int field;
    } cases[] = {
        {"", 0, ST_INVALID, HL7_AR, HL7_ERR_SEGMENT_SEQUENCE, "", 0},
        {"PID|1||H1\r", 0, ST_INVALID, HL7_AR, HL7_ERR_SEGMENT_SEQUENCE, "MSH", 0},
        {"MSH|^~\\&|PAS", 0, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 9},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01||P|2.4\r", 0, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 10},
        {"MSH|^~\\&|A|B|||20240101||ADT|1|P|2.4\r", 0, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 9},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1||2.4\r", 0, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 11},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P\r", 0, ST_INVALID, HL7_AR, HL7_ERR_REQUIRED_FIELD, "MSH", 12},
        {"MSH|^~\\&|A\x01|B|||20240101||ADT^A01|1|P|2.4\r", 0, ST_INVALID, HL7_AR, HL7_ERR_DATA_TYPE, "MSH", 3},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rPID|1||H\x80\r", 0, ST_INVALID, HL7_AE, HL7_ERR_DATA_TYPE, "PID", 3},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rPID|1||H\xC3\r", 0, ST_INVALID, HL7_AE, HL7_ERR_DATA_TYPE, "PID", 3},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rPID|1||H\xED\xA0\x80\r", 0, ST_INVALID, HL7_AE, HL7_ERR_DATA_TYPE,
         "PID", 3}, /* a UTF-16 surrogate */
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rPID|1||H\0X\r", 52, ST_INVALID, HL7_AE, HL7_ERR_DATA_TYPE, "PID", 3},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rpid|1\r", 0, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "", 0},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rPIDX|1\r", 0, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "", 0},
        {"MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.4\rMSH|^~\\&|A\r", 0, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "MSH",
         0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        arena a = {0};
        hl7_msg *m;
        hl7_error e;
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].msg);
        status st = hl7_parse(cases[i].msg, len, NULL, &a, &m, &e);
        if (st != cases[i].st || e.ack != cases[i].ack || e.code != cases[i].code ||
            strcmp(e.segment, cases[i].segment) != 0 || e.field != cases[i].field)
            fail_msg("case %zu: got %s %s %d at %s-%d: %s", i, status_name(st), hl7_ack_code_name(e.ack), e.code, e.segment,
                     e.field, e.text);
        assert_true(e.text[0] != 0);
        arena_free(&a);
    }
}

static void test_limits(void **state) {
    (void)state;
    arena a = {0};
    hl7_msg *m;
    hl7_error e;
    /* a field over the default limit (1 MiB) */
    size_t big = HL7_DEFAULT_MAX_FIELD + 10;
    const char *head = "MSH|^~\\&|A|B|||20240101||ADT^A28|1|P|2.5\rPID|1||P1||";
    char *msg = malloc(strlen(head) + big + 2);
    strcpy(msg, head);
    memset(msg + strlen(head), 'X', big);
    strcpy(msg + strlen(head) + big, "\r");
    assert_int_equal(hl7_parse(msg, strlen(msg), NULL, &a, &m, &e), ST_TOO_LARGE);
    assert_string_equal(e.segment, "PID");
    assert_int_equal(e.field, 5);
    assert_int_equal(e.ack, HL7_AE);
    assert_non_null(m); /* the header is still there for the ACK */
    assert_true(hl7_str_eq(hl7_msg_header(m)->control_id, "1"));
    arena_free(&a);
    /* the message limit */
    hl7_limits lim = {64, 100, 100, 1000};
    assert_int_equal(hl7_parse(msg, strlen(msg), &lim, &a, &m, &e), ST_TOO_LARGE);
    assert_int_equal(e.ack, HL7_AR);
    assert_null(m);
    arena_free(&a);
    free(msg);
    /* fields per segment, segments per message */
    lim = (hl7_limits){1 << 20, 3, 6, 1000};
    const char *many_fields = "MSH|^~\\&|A|B|||20240101||ADT^A28|1|P|2.5\rPID|1|2|3|4|5|6|7\r";
    lim.max_fields = 20;
    lim.max_segments = 100;
    assert_int_equal(hl7_parse(many_fields, strlen(many_fields), &lim, &a, &m, &e), ST_OK);
    arena_free(&a);
    lim.max_fields = 13;
    assert_int_equal(hl7_parse(many_fields, strlen(many_fields), &lim, &a, &m, &e), ST_OK);
    arena_free(&a);
    lim.max_fields = 6;
    assert_int_equal(hl7_parse(many_fields, strlen(many_fields), &lim, &a, &m, &e), ST_TOO_LARGE);
    assert_string_equal(e.segment, "MSH"); /* MSH itself has 12 */
    arena_free(&a);
    lim.max_fields = 12;
    assert_int_equal(hl7_parse(many_fields, strlen(many_fields), &lim, &a, &m, &e), ST_OK);
    arena_free(&a);
    lim.max_fields = 6;
    const char *short_msh = "MSH|^~\\&|A|B|||20240101\rPID|1|2|3|4|5|6|7\r";
    assert_int_not_equal(hl7_parse(short_msh, strlen(short_msh), &lim, &a, &m, &e), ST_OK);
    arena_free(&a);
    lim = (hl7_limits){1 << 20, 2, 100, 1000};
    const char *three = "MSH|^~\\&|A|B|||20240101||ADT^A28|1|P|2.5\rEVN|A28\rPID|1\r";
    assert_int_equal(hl7_parse(three, strlen(three), &lim, &a, &m, &e), ST_TOO_LARGE);
    assert_int_equal(e.code, HL7_ERR_SEGMENT_SEQUENCE);
    arena_free(&a);
}

static void test_error_where_and_err(void **state) {
    (void)state;
    hl7_error e;
    char where[64];
    hl7_fail(&e, ST_INVALID, HL7_AE, HL7_ERR_DATA_TYPE, "PID", 1, 2, 3, 2, 1, 0, "bad %s", "thing");
    hl7_error_where(&e, where, sizeof where);
    assert_string_equal(where, "PID[1]-3[2].1");
    err pe;
    hl7_error_to_err(&e, &pe);
    assert_int_equal(pe.code, ST_INVALID);
    assert_string_equal(pe.issue, "value");
    assert_string_equal(pe.where, "PID[1]-3[2].1");
    assert_non_null(strstr(pe.msg, "bad thing"));
    hl7_fail(&e, ST_UNSUPPORTED, HL7_AR, HL7_ERR_UNSUPPORTED_EVENT, "MSH", 1, 0, 9, 0, 2, 0, "x");
    hl7_error_to_err(&e, &pe);
    assert_string_equal(pe.issue, "not-supported");
    assert_int_equal(pe.code, ST_UNSUPPORTED);
    hl7_fail(&e, ST_INVALID, HL7_AR, HL7_ERR_SEGMENT_SEQUENCE, "", 0, -1, 0, 0, 0, 0, "empty");
    hl7_error_where(&e, where, sizeof where);
    assert_string_equal(where, "");
}

/* ---- ACK ---------------------------------------------------------------- */

static char *ack_of(const char *msg, hl7_ack_code code, const hl7_error *errs, size_t nerr) {
    arena a = {0};
    hl7_msg *m = NULL;
    hl7_error pe;
    if (msg) hl7_parse(msg, strlen(msg), NULL, &a, &m, &pe);
    buf out = {0};
    hl7_ack_opts o = {"CONCORD", "NWL", "ACK1", "20240101000000+0000"};
    hl7_ack_build(m, code, errs, nerr, &o, &out);
    for (size_t i = 0; i < out.len; i++)
        if (out.p[i] == '\r') out.p[i] = '\n';
    arena_free(&a);
    return buf_take(&out);
}

static void test_ack_by_version(void **state) {
    (void)state;
    char *ack = ack_of(A01, HL7_AA, NULL, 0);
    assert_string_equal(ack, "MSH|^~\\&|CONCORD|NWL|PAS|RQM01|20240101000000+0000||ACK^A01^ACK|ACK1|P|2.5\n"
                             "MSA|AA|C1\n");
    free(ack);
    ack = ack_of("MSH|^~\\&|PAS|RQM01|||20240101||ADT^A04|C9|T|2.3\rPID|1\r", HL7_AA, NULL, 0);
    assert_string_equal(ack, "MSH|^~\\&|CONCORD|NWL|PAS|RQM01|20240101000000+0000||ACK^A04|ACK1|T|2.3\nMSA|AA|C9\n");
    free(ack);
    ack = ack_of("MSH|^~\\&|PAS|RQM01|||20240101||ADT|C8|P|2.2\rEVN|A01\r", HL7_AA, NULL, 0);
    assert_string_equal(ack, "MSH|^~\\&|CONCORD|NWL|PAS|RQM01|20240101000000+0000||ACK|ACK1|P|2.2\nMSA|AA|C8\n");
    free(ack);
}

static void test_ack_errors(void **state) {
    (void)state;
    hl7_error errs[2];
    hl7_fail(&errs[0], ST_INVALID, HL7_AE, HL7_ERR_DATA_TYPE, "PID", 1, 2, 7, 0, 1, 0, "bad date | ^ ~ \\ & here");
    hl7_fail(&errs[1], ST_INVALID, HL7_AE, HL7_ERR_REQUIRED_FIELD, "PV1", 1, 3, 19, 0, 0, 0, "no visit");
    char *ack = ack_of(A01, HL7_AE, errs, 2);
    assert_string_equal(ack, "MSH|^~\\&|CONCORD|NWL|PAS|RQM01|20240101000000+0000||ACK^A01^ACK|ACK1|P|2.5\n"
                             "MSA|AE|C1\n"
                             "ERR||PID^1^7^1^1|102^Data type error^HL70357|E||||bad date \\F\\ \\S\\ \\R\\ \\E\\ \\T\\ here\n"
                             "ERR||PV1^1^19^1|101^Required field missing^HL70357|E||||no visit\n");
    free(ack);
    /* v2.4: ERR-1 (ELD) and MSA-3 */
    ack = ack_of("MSH|^~\\&|PAS|RQM01|||20240101||ADT^A01|C7|P|2.4\rPID|1\r", HL7_AE, errs, 1);
    assert_string_equal(ack, "MSH|^~\\&|CONCORD|NWL|PAS|RQM01|20240101000000+0000||ACK^A01^ACK|ACK1|P|2.4\n"
                             "MSA|AE|C7|bad date \\F\\ \\S\\ \\R\\ \\E\\ \\T\\ here\n"
                             "ERR|PID^1^7^102&Data type error&HL70357\n");
    free(ack);
    /* the message's own delimiters */
    ack = ack_of("MSH$*%!@$PAS$RQM01$$$20240101$$ADT*A01$C6$P$2.5\r", HL7_AR, errs, 1);
    assert_string_equal(ack, "MSH$*%!@$CONCORD$NWL$PAS$RQM01$20240101000000+0000$$ACK*A01*ACK$ACK1$P$2.5\n"
                             "MSA$AR$C6\n"
                             "ERR$$PID*1*7*1*1$102*Data type error*HL70357$E$$$$bad date | ^ ~ \\ & here\n");
    free(ack);
}

static void test_ack_without_readable_msh(void **state) {
    (void)state;
    hl7_error e;
    hl7_fail(&e, ST_INVALID, HL7_AR, HL7_ERR_SEGMENT_SEQUENCE, "", 0, -1, 0, 0, 0, 0, "message does not begin with MSH");
    char *ack = ack_of(NULL, HL7_AR, &e, 1);
    assert_string_equal(ack, "MSH|^~\\&|CONCORD|NWL|||20240101000000+0000||ACK|ACK1|P|2.5\n"
                             "MSA|AR|\n"
                             "ERR|||100^Segment sequence error^HL70357|E||||message does not begin with MSH\n");
    free(ack);
}

static void test_ack_is_clean_when_msh_is_not(void **state) {
    (void)state;
    /* control bytes and bad UTF-8 in MSH-10: rejected, and never echoed */
    const char msg[] = "MSH|^~\\&|PAS|RQM01|||20240101||ADT^A31|PER\0\x7f\xff|P|2.5\rPID|1\r";
    arena a = {0};
    hl7_msg *m;
    hl7_error e;
    assert_int_not_equal(hl7_parse(msg, sizeof msg - 1, NULL, &a, &m, &e), ST_OK);
    assert_non_null(m);
    buf out = {0};
    hl7_ack_build(m, e.ack, &e, 1, NULL, &out);
    assert_int_equal(strlen(out.p), out.len);
    assert_non_null(strstr(out.p, "\rMSA|AR|PER???\r"));
    for (size_t i = 0; i < out.len; i++) assert_true((unsigned char)out.p[i] >= 0x20 || out.p[i] == '\r');
    buf_free(&out);
    arena_free(&a);
}

/* ---- mapping building blocks ------------------------------------------- */

static void test_dtm_to_fhir(void **state) {
    (void)state;
    static const struct {
        const char *in;
        hl7_zone zone;
        int date_only;
        const char *out; /* NULL: invalid */
    } cases[] = {
        {"2024", HL7_ZONE_EUROPE_LONDON, 0, "2024"},
        {"202403", HL7_ZONE_EUROPE_LONDON, 0, "2024-03"},
        {"20240315", HL7_ZONE_EUROPE_LONDON, 0, "2024-03-15"},
        {"2024031510", HL7_ZONE_EUROPE_LONDON, 0, "2024-03-15T10:00:00+00:00"},
        {"202407011230", HL7_ZONE_EUROPE_LONDON, 0, "2024-07-01T12:30:00+01:00"},
        {"202407011230", HL7_ZONE_UTC, 0, "2024-07-01T12:30:00+00:00"},
        /* BST 2024: from 01:00 GMT on 31 March to 01:00 GMT on 27 October */
        {"20240331005959", HL7_ZONE_EUROPE_LONDON, 0, "2024-03-31T00:59:59+00:00"},
        {"20240331020000", HL7_ZONE_EUROPE_LONDON, 0, "2024-03-31T02:00:00+01:00"},
        {"20241027005959", HL7_ZONE_EUROPE_LONDON, 0, "2024-10-27T00:59:59+01:00"},
        {"20241027013000", HL7_ZONE_EUROPE_LONDON, 0, "2024-10-27T01:30:00+01:00"}, /* the repeated hour: BST */
        {"20241027020000", HL7_ZONE_EUROPE_LONDON, 0, "2024-10-27T02:00:00+00:00"},
        {"20241026230000", HL7_ZONE_EUROPE_LONDON, 0, "2024-10-26T23:00:00+01:00"},
        {"20250330013000", HL7_ZONE_EUROPE_LONDON, 0, "2025-03-30T01:30:00+01:00"},
        {"20240101120000-0500", HL7_ZONE_EUROPE_LONDON, 0, "2024-01-01T12:00:00-05:00"},
        {"20240701120000+0000", HL7_ZONE_EUROPE_LONDON, 0, "2024-07-01T12:00:00+00:00"},
        {"20240101120000.1234+0100", HL7_ZONE_EUROPE_LONDON, 0, "2024-01-01T12:00:00.1234+01:00"},
        {" 20240101 ", HL7_ZONE_EUROPE_LONDON, 0, "2024-01-01"},
        {"19450312103000", HL7_ZONE_EUROPE_LONDON, 1, "1945-03-12"},
        {"20240229", HL7_ZONE_EUROPE_LONDON, 0, "2024-02-29"},
        {"20230229", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"20240230", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"20241301", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"2024013", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"202401011260", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"2024010124", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"20240101.5", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"20240101120000.", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"20240101+01", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"2024-01-01", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"00000101", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"", HL7_ZONE_EUROPE_LONDON, 0, NULL},
        {"20240101120000+1500", HL7_ZONE_EUROPE_LONDON, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[40] = "";
        hl7_str in = {cases[i].in, strlen(cases[i].in)};
        int r = hl7_dtm_to_fhir(in, cases[i].zone, cases[i].date_only, out);
        if (!cases[i].out) {
            if (r == 0) fail_msg("\"%s\" accepted as %s", cases[i].in, out);
        } else if (r != 0 || strcmp(out, cases[i].out) != 0) {
            fail_msg("\"%s\": expected %s, got %s (%d)", cases[i].in, cases[i].out, out, r);
        }
    }
}

static void test_nhs_number(void **state) {
    (void)state;
    assert_true(hl7_nhs_number_valid("9908301667", 10));
    assert_true(hl7_nhs_number_valid("9000000009", 10));
    assert_false(hl7_nhs_number_valid("9908301668", 10)); /* wrong check digit */
    assert_false(hl7_nhs_number_valid("9000000050", 10)); /* check digit would be 10 */
    assert_false(hl7_nhs_number_valid("990830166", 9));
    assert_false(hl7_nhs_number_valid("99083O1667", 10));
}

/* Map a message; returns the mapping (caller releases). */
static status map_text(const char *text, const hl7_map_config *cfg, arena *a, hl7_mapped *out, hl7_error *e) {
    hl7_msg *m;
    status rc = hl7_parse(text, strlen(text), NULL, a, &m, e);
    if (rc == ST_OK) rc = hl7_map(m, cfg, a, out, e);
    return rc;
}

static const hl7_resource *find_res(const hl7_mapped *o, const char *type) {
    for (size_t i = 0; i < o->nres; i++)
        if (!strcmp(o->res[i].type, type)) return &o->res[i];
    return NULL;
}

static void test_same_ids_across_messages(void **state) {
    (void)state;
    /* an A08 before its A01, an A03 after: the same Patient and Encounter */
    static const char *const events[] = {"A08", "A01", "A03", "A11"};
    char patient[40] = "", encounter[40] = "";
    for (size_t i = 0; i < 4; i++) {
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "MSH|^~\\&|PAS|RQM01|||20240615103000||ADT^%s|C%zu|P|2.4\rEVN|%s|20240615103000\r"
                 "PID|1||H1^^^RQM01^MR~9908301667^^^NHS^NH||SMITH^JOHN\r"
                 "PV1|1|I|WARD7||||||||||||||||V1^^^RQM01^VN|||||||||||||||||||||||||2024061510%02zu\r",
                 events[i], i, events[i], i);
        arena a = {0};
        hl7_mapped out;
        hl7_error e;
        if (map_text(msg, NULL, &a, &out, &e) != ST_OK) fail_msg("%s: %s", events[i], e.text);
        const hl7_resource *p = find_res(&out, "Patient"), *enc = find_res(&out, "Encounter");
        assert_non_null(p);
        assert_non_null(enc);
        if (!patient[0]) {
            snprintf(patient, sizeof patient, "%s", p->id);
            snprintf(encounter, sizeof encounter, "%s", enc->id);
        }
        assert_string_equal(p->id, patient);
        assert_string_equal(enc->id, encounter);
        assert_string_equal(json_string_value(json_object_get(enc->json, "id")), encounter);
        assert_true(fhir_id_valid(p->id));
        /* the Encounter refers to that Patient */
        char ref[64];
        snprintf(ref, sizeof ref, "Patient/%s", patient);
        assert_string_equal(json_string_value(json_object_get(json_object_get(enc->json, "subject"), "reference")), ref);
        hl7_mapped_release(&out);
        arena_free(&a);
    }
}

static void test_decimals_keep_their_precision(void **state) {
    (void)state;
    const char *msg = "MSH|^~\\&|LAB|RQM01|||20240615103000||ORU^R01|L1|P|2.5\rPID|1||H1^^^RQM01^MR\r"
                      "OBR|1||F1^LAB|UE^U and E^L|||20240615090000||||||||||||||||||F\r"
                      "OBX|1|NM|A^a^L||7.10|mmol/L|||||F\r"
                      "OBX|2|NM|B^b^L||+02.50|mmol/L|||||F\r"
                      "OBX|3|NM|C^c^L||.5||||||F\r"
                      "OBX|4|NM|D^d^L||-0.0||||||F\r"
                      "OBX|5|NM|E^e^L||12||||||F\r";
    static const char *const want[] = {"\"value\":7.10", "\"value\":2.50", "\"value\":0.5", "\"value\":0.0",
                                       "\"value\":12"};
    arena a = {0};
    hl7_mapped out;
    hl7_error e;
    if (map_text(msg, NULL, &a, &out, &e) != ST_OK) fail_msg("%s", e.text);
    size_t k = 0;
    for (size_t i = 0; i < out.nres; i++) {
        if (strcmp(out.res[i].type, "Observation") != 0) continue;
        buf b = {0};
        fhir_json_dump(out.res[i].json, &b);
        if (!strstr(b.p, want[k])) fail_msg("Observation %zu: no %s in %s", k, want[k], b.p);
        buf_free(&b);
        k++;
    }
    assert_int_equal(k, 5);
    hl7_mapped_release(&out);
    fhir_json_release();
    arena_free(&a);
}

static void test_map_configuration(void **state) {
    (void)state;
    const char *msg = "MSH|^~\\&|PAS|RQM01|||20240615103000||ADT^A28|C1|T|2.5\rPID|1||H1^^^RQM01^MR||SMITH^JOHN\r";
    arena a = {0};
    hl7_mapped out;
    hl7_error e;
    hl7_system_rule rules[] = {{"RQM01", "MR", "https://fhir.example.nhs.uk/Id/rqm-mrn"}};
    hl7_map_config cfg = {0};
    cfg.systems = rules;
    cfg.nsystems = 1;
    assert_int_equal(map_text(msg, &cfg, &a, &out, &e), ST_OK);
    assert_string_equal(out.res[0].key_system, "https://fhir.example.nhs.uk/Id/rqm-mrn");
    hl7_mapped_release(&out);
    arena_free(&a);
    /* default: urn:concord:id:<authority>:<type> */
    assert_int_equal(map_text(msg, NULL, &a, &out, &e), ST_OK);
    assert_string_equal(out.res[0].key_system, "urn:concord:id:RQM01:MR");
    hl7_mapped_release(&out);
    arena_free(&a);
    /* training messages refused where only production is accepted */
    cfg.processing_ids = "P";
    assert_int_equal(map_text(msg, &cfg, &a, &out, &e), ST_UNSUPPORTED);
    assert_int_equal(e.code, HL7_ERR_UNSUPPORTED_PROCESSING_ID);
    assert_int_equal(e.ack, HL7_AR);
    assert_int_equal(out.nres, 0);
    arena_free(&a);
}

/* meta.tag on every resource: the care setting (acute unless configured)
 * and the sending organisation, MSH-4's first component (escapes decoded,
 * the rest of the HD left out); no organisation tag when MSH-4 is empty. */
static const char *tag_code(const hl7_resource *r, const char *system) {
    json_t *tags = json_object_get(json_object_get(r->json, "meta"), "tag");
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        if (strcmp(json_string_value(json_object_get(t, "system")), system) == 0)
            return json_string_value(json_object_get(t, "code"));
    }
    return NULL;
}

static void test_provenance_tags(void **state) {
    (void)state;
    arena a = {0};
    hl7_mapped out;
    hl7_error e;
    const char *oru = "MSH|^~\\&|LAB|RQM\\T\\01^2.16.840.1.113883.2.1.3.2.4.18.48^ISO|||20240615103000||ORU^R01|L1|P|2.5\r"
                      "PID|1||H1^^^RQM01^MR\r"
                      "OBR|1||F1^LAB|UE^U and E^L|||20240615090000||||||||||||||||||F\r"
                      "OBX|1|NM|A^a^L||7.10|mmol/L|||||F\r";
    assert_int_equal(map_text(oru, NULL, &a, &out, &e), ST_OK);
    assert_int_equal(out.nres, 3); /* Patient stub, DiagnosticReport, Observation */
    for (size_t i = 0; i < out.nres; i++) {
        assert_string_equal(tag_code(&out.res[i], HL7_CARE_SETTING_SYSTEM), "acute");
        assert_string_equal(tag_code(&out.res[i], HL7_ODS_SYSTEM), "RQM&01");
        json_t *tags = json_object_get(json_object_get(out.res[i].json, "meta"), "tag");
        assert_int_equal(json_array_size(tags), 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(tags, 0), "display")), "Acute hospital");
        assert_null(json_object_get(json_object_get(out.res[i].json, "meta"), "source")); /* the storer's */
    }
    hl7_mapped_release(&out);
    fhir_json_release();
    arena_free(&a);

    const char *a28 = "MSH|^~\\&|PAS||||20240615103000||ADT^A28|C1|P|2.5\rPID|1||H1^^^RQM01^MR||SMITH^JOHN\r";
    hl7_map_config cfg = {0};
    cfg.care_setting = "mental-health";
    assert_int_equal(map_text(a28, &cfg, &a, &out, &e), ST_OK);
    assert_int_equal(out.nres, 1);
    json_t *tags = json_object_get(json_object_get(out.res[0].json, "meta"), "tag");
    assert_int_equal(json_array_size(tags), 1);
    assert_string_equal(tag_code(&out.res[0], HL7_CARE_SETTING_SYSTEM), "mental-health");
    assert_string_equal(json_string_value(json_object_get(json_array_get(tags, 0), "display")),
                        "Mental health services");
    assert_null(tag_code(&out.res[0], HL7_ODS_SYSTEM));
    hl7_mapped_release(&out);
    arena_free(&a);
}

static void test_process_one_call(void **state) {
    (void)state;
    arena a = {0};
    hl7_result r;
    const char *bad = "MSH|^~\\&|PAS|RQM01|||20240615103000||ADT^A01|C1|P|2.4\rPID|1||H1^^^RQM01^MR||SMITH||19451332\r";
    assert_int_equal(hl7_process(bad, strlen(bad), NULL, NULL, &a, &r), ST_INVALID);
    assert_int_equal(r.ack, HL7_AE);
    assert_string_equal(r.error.segment, "PID");
    assert_int_equal(r.error.field, 7);
    assert_int_equal(r.error.code, HL7_ERR_DATA_TYPE);
    assert_non_null(r.msg);
    assert_int_equal(r.mapped.nres, 0);
    arena_free(&a);
    assert_int_equal(hl7_process(A01, strlen(A01), NULL, NULL, &a, &r), ST_OK);
    assert_int_equal(r.ack, HL7_AA);
    assert_int_equal(r.mapped.nres, 2);
    assert_string_equal(r.mapped.control_id, "C1");
    assert_string_equal(r.mapped.event_time, "2024-06-15T10:30:00+01:00");
    hl7_mapped_release(&r.mapped);
    arena_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msh_field_numbering),
        cmocka_unit_test(test_delimiters_are_read_not_assumed),
        cmocka_unit_test(test_short_encoding_characters),
        cmocka_unit_test(test_bad_delimiters),
        cmocka_unit_test(test_segment_terminators),
        cmocka_unit_test(test_z_and_unknown_segments_kept),
        cmocka_unit_test(test_repetitions_components_subcomponents),
        cmocka_unit_test(test_path_syntax),
        cmocka_unit_test(test_escape_sequences),
        cmocka_unit_test(test_escapes_decoded_only_on_access),
        cmocka_unit_test(test_latin1_transcoded),
        cmocka_unit_test(test_malformed_input_located),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_error_where_and_err),
        cmocka_unit_test(test_ack_by_version),
        cmocka_unit_test(test_ack_errors),
        cmocka_unit_test(test_ack_without_readable_msh),
        cmocka_unit_test(test_ack_is_clean_when_msh_is_not),
        cmocka_unit_test(test_dtm_to_fhir),
        cmocka_unit_test(test_nhs_number),
        cmocka_unit_test(test_same_ids_across_messages),
        cmocka_unit_test(test_decimals_keep_their_precision),
        cmocka_unit_test(test_map_configuration),
        cmocka_unit_test(test_provenance_tags),
        cmocka_unit_test(test_process_one_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
