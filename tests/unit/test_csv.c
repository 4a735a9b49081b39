/*
 * test_csv.c — the CSV reader and the mapping engine (src/ingest/csv*.c).
 *
 *   - the reader, one behaviour per test: RFC 4180 quoting, line endings,
 *     BOM, blank lines, positions and resuming, every kind of malformed
 *     record and where the reader picks up again, limits, pipes, records
 *     across read boundaries;
 *   - the mapping engine: load, bind and row errors and where they point,
 *     ids, normalisation, time zones, threads;
 *   - the data-driven cases in tests/data/csv/ (see its README): an extract,
 *     its mapping, and every resource or error it must produce, byte for
 *     byte (CONCORD_CSV_UPDATE=1 rewrites the expected files: read them
 *     before committing);
 *   - the synthetic population: every row of every CSV feed of 2,000
 *     people maps with its mapping in mappings/, except exactly the rows
 *     the ground truth says are malformed, which fail on the date of birth.
 * Every resource produced anywhere here must pass fhir_validate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "fhir/json.h"
#include "fhir/validate.h"
#include "ingest/csv.h"
#include "ingest/csvmap.h"
#include "synth/synth.h"

#ifndef CONCORD_SOURCE_DIR
#define CONCORD_SOURCE_DIR "."
#endif
#define CASES_DIR    CONCORD_SOURCE_DIR "/tests/data/csv"
#define MAPPINGS_DIR CONCORD_SOURCE_DIR "/mappings"

/* ---- helpers -------------------------------------------------------------------- */

static FILE *file_of(const char *s, size_t n) {
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, n, f), n);
    rewind(f);
    return f;
}
#define FILE_OF(lit) file_of((lit), sizeof(lit) - 1)

static void assert_fields(const csv_record *r, int n, ...) {
    va_list ap;
    va_start(ap, n);
    if (r->nfields != n) fail_msg("line %lld: %d fields, expected %d", (long long)r->line, r->nfields, n);
    for (int i = 0; i < n; i++) {
        const char *want = va_arg(ap, const char *);
        if (strlen(want) != r->len[i] || memcmp(want, r->field[i], r->len[i]) != 0 ||
            r->field[i][r->len[i]] != 0)
            fail_msg("line %lld field %d: \"%s\", expected \"%s\"", (long long)r->line, i + 1, r->field[i],
                     want);
    }
    va_end(ap);
}

static int next(csv_reader *r, csv_record *rec, err *e) {
    err_clear(e);
    return csv_next(r, rec, e);
}

static int validate_json(const char *type, const char *json, size_t len, err *ve) {
    json_error_t je;
    json_t *j = fhir_json_load(json, len, &je);
    if (!j) {
        snprintf(ve->msg, sizeof ve->msg, "not JSON: %s", je.text);
        return -1;
    }
    status rc = fhir_validate(j, type, ve);
    json_decref(j);
    fhir_json_release();
    return rc == ST_OK ? 0 : -1;
}

/* ---- the reader --------------------------------------------------------------------- */

static void test_rfc4180_quoting(void **state) {
    (void)state;
    static const char in[] = "a,b,c\r\n"
                             "1,\"x,y\",\"he said \"\"hi\"\"\"\n"
                             "\"multi\nline\",,last";
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, ',', 0, 1);
    assert_non_null(r);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 3, "a", "b", "c");
    assert_int_equal(rec.line, 1);
    assert_int_equal(rec.offset, 0);
    assert_int_equal(rec.end_offset, 7);
    assert_int_equal(rec.raw_len, 7);
    assert_memory_equal(rec.raw, "a,b,c\r\n", 7);
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 3, "1", "x,y", "he said \"hi\"");
    assert_int_equal(rec.line, 2);
    assert_int_equal(rec.offset, 7);
    assert_int_equal(next(r, &rec, &e), 1); /* no final newline */
    assert_fields(&rec, 3, "multi\nline", "", "last");
    assert_int_equal(rec.line, 3);
    assert_int_equal(rec.end_offset, (int64_t)sizeof in - 1);
    assert_int_equal(next(r, &rec, &e), 0);
    assert_int_equal(next(r, &rec, &e), 0);
    assert_int_equal(csv_line(r), 4); /* the quoted line break counted */
    csv_close(r);
    fclose(f);
}

static void test_bom_blank_lines_and_empty_fields(void **state) {
    (void)state;
    static const char in[] = "\xEF\xBB\xBFh1,h2\n\n\r\n,\n\"\"\na,b,\n\n";
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "h1", "h2");
    assert_int_equal(rec.offset, 3);
    assert_int_equal(next(r, &rec, &e), 1); /* two blank lines skipped, still counted */
    assert_int_equal(rec.line, 4);
    assert_fields(&rec, 2, "", "");
    assert_int_equal(next(r, &rec, &e), 1); /* "" is one empty field, not a blank line */
    assert_fields(&rec, 1, "");
    assert_int_equal(next(r, &rec, &e), 1); /* a trailing delimiter: an empty last field */
    assert_fields(&rec, 3, "a", "b", "");
    assert_int_equal(rec.line, 6);
    assert_int_equal(next(r, &rec, &e), 0);
    csv_close(r);
    fclose(f);
}

static void test_other_delimiters(void **state) {
    (void)state;
    static const char in[] = "a|b,c|\"d|e\"\n";
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, '|', 0, 1);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 3, "a", "b,c", "d|e");
    csv_close(r);
    fclose(f);
}

static void test_quoted_delimiter_with_tab(void **state) {
    (void)state;
    static const char in[] = "x\t\"a\tb\"\t\n";
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, '\t', 0, 1);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 3, "x", "a\tb", "");
    csv_close(r);
    fclose(f);
    assert_null(csv_open(stdin, '"', 0, 1)); /* a quote cannot be the delimiter */
    assert_null(csv_open(stdin, '\n', 0, 1));
}

static void test_resume_from_offset(void **state) {
    (void)state;
    static const char in[] = "h,i\n1,\"two\nlines\"\n\n3,x\n4,y\r\n5,z";
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec, all[8];
    char texts[8][16];
    err e;
    int n = 0;
    while (next(r, &rec, &e) == 1) {
        all[n] = rec;
        snprintf(texts[n], sizeof texts[n], "%s", rec.field[0]);
        n++;
    }
    assert_int_equal(n, 5);
    assert_int_equal(all[2].line, 5);
    csv_close(r);
    /* resume after the second record, from where it ended */
    for (int k = 1; k <= 4; k++) {
        fseek(f, 0, SEEK_END); /* anywhere: csv_open seeks */
        r = csv_open(f, ',', all[k - 1].end_offset, all[k - 1].line + (k == 2 ? 2 : 1));
        assert_non_null(r);
        for (int j = k; j < n; j++) {
            assert_int_equal(next(r, &rec, &e), 1);
            assert_int_equal(rec.line, all[j].line);
            assert_int_equal(rec.offset, all[j].offset);
            assert_int_equal(rec.end_offset, all[j].end_offset);
            assert_string_equal(rec.field[0], texts[j]);
        }
        assert_int_equal(next(r, &rec, &e), 0);
        csv_close(r);
    }
    /* csv_line / csv_offset say where to resume */
    rewind(f);
    r = csv_open(f, ',', 0, 1);
    next(r, &rec, &e);
    next(r, &rec, &e);
    assert_int_equal(csv_offset(r), rec.end_offset);
    assert_int_equal(csv_line(r), 4);
    csv_close(r);
    fclose(f);
}

static void test_malformed_records_resynchronise(void **state) {
    (void)state;
    static const char in[] = "h1,h2\n"
                             "ab\"c,d\n"                 /* 2: quote in an unquoted field */
                             "good,1\n"                  /* 3 */
                             "x,\"ab\"c\n"               /* 4: text after the closing quote */
                             "good,2\n"                  /* 5 */
                             "\"multi\nline\",\"ok\"z\n" /* 6-7: the fault is on line 7 */
                             "good,3\n"                  /* 8 */
                             "q,\"open,never closed\n"   /* 9: the quote never closes */
                             "good,4\n";                 /* 10 */
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_int_equal(next(r, &rec, &e), -1);
    assert_int_equal(e.code, ST_INVALID);
    assert_string_equal(e.where, "line 2, column 1");
    assert_non_null(strstr(e.msg, "a quote inside an unquoted field"));
    assert_int_equal(rec.line, 2);
    assert_int_equal(rec.nfields, 0);
    assert_int_equal(rec.raw_len, 7);
    assert_memory_equal(rec.raw, "ab\"c,d\n", 7);
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "good", "1");
    assert_int_equal(next(r, &rec, &e), -1);
    assert_string_equal(e.where, "line 4, column 2");
    assert_non_null(strstr(e.msg, "after the closing quote"));
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "good", "2");
    assert_int_equal(next(r, &rec, &e), -1);
    assert_string_equal(e.where, "line 7, column 2");
    assert_int_equal(rec.line, 6);
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "good", "3");
    assert_int_equal(rec.line, 8);
    assert_int_equal(next(r, &rec, &e), -1);
    assert_string_equal(e.where, "line 9, column 2");
    assert_non_null(strstr(e.msg, "unterminated quoted field"));
    assert_memory_equal(rec.raw, "q,\"open,never closed\n", rec.raw_len);
    assert_int_equal(next(r, &rec, &e), 1); /* the line after the unclosed quote is read again */
    assert_fields(&rec, 2, "good", "4");
    assert_int_equal(rec.line, 10);
    assert_int_equal(next(r, &rec, &e), 0);
    csv_close(r);
    fclose(f);
}

static void test_invalid_utf8_and_nul(void **state) {
    (void)state;
    static const char in[] =
        "ok,caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\n" /* 2-, 3- and 4-byte sequences */
        "bad,\xC3\x28\n"                                 /* 2: broken sequence */
        "over,\xC0\xAF\n"                                /* 3: overlong encoding */
        "sur,\"\xED\xA0\x80\"\n"                         /* 4: a surrogate */
        "big,\xF4\x90\x80\x80\n"                         /* 5: above U+10FFFF */
        "cut,ab\xE2\x82\n"                               /* 6: truncated */
        "latin1,caf\xE9\n"                               /* 7: Latin-1 */
        "nul,a\0b\n"                                     /* 8 */
        "end,1\n";
    FILE *f = FILE_OF(in);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "ok", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
    static const char *const where[] = {"line 2, column 2", "line 3, column 2", "line 4, column 2",
                                        "line 5, column 2", "line 6, column 2", "line 7, column 2"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(next(r, &rec, &e), -1);
        assert_string_equal(e.where, where[i]);
        assert_non_null(strstr(e.msg, "invalid UTF-8"));
    }
    assert_int_equal(next(r, &rec, &e), -1);
    assert_string_equal(e.where, "line 8, column 2");
    assert_non_null(strstr(e.msg, "NUL"));
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "end", "1");
    csv_close(r);
    fclose(f);
}

static void test_limits(void **state) {
    (void)state;
    buf in = {0};
    buf_puts(&in, "short,1\n"); /* 1 */
    for (int i = 0; i < 100; i++)
        buf_putc(&in, 'x');                                                                /* 2: 101 bytes */
    buf_puts(&in, "\nafter,2\n");                                                          /* 3 */
    buf_puts(&in, "\"q aaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n"); /* 4-5 */
    buf_puts(&in, "after,3\n");                                                            /* 6 */
    buf_puts(&in, "0123456789012345678901234567890\n"); /* 7: exactly 32 bytes */
    buf_puts(&in, "a,b,c,d,e\n");                       /* 8: too many fields */
    buf_puts(&in, "a,b,c,d\n");                         /* 9 */
    FILE *f = file_of(in.p, in.len);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_set_limits(r, 32, 4);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), 1);
    assert_int_equal(next(r, &rec, &e), -1);
    assert_int_equal(e.code, ST_TOO_LARGE);
    assert_string_equal(e.where, "line 2");
    assert_int_equal(rec.raw_len, 32); /* the kept prefix */
    assert_int_equal(rec.offset, 8);
    assert_int_equal(rec.end_offset, 8 + 101);
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "after", "2");
    assert_int_equal(rec.line, 3);
    /* an unclosed quote running past the limit: the record is its first line */
    assert_int_equal(next(r, &rec, &e), -1);
    assert_int_equal(e.code, ST_TOO_LARGE);
    assert_string_equal(e.where, "line 4, column 1");
    assert_int_equal(rec.raw_len, 12);
    assert_int_equal(next(r, &rec, &e), -1); /* line 5 on its own is over the limit */
    assert_string_equal(e.where, "line 5");
    assert_int_equal(next(r, &rec, &e), 1);
    assert_fields(&rec, 2, "after", "3");
    assert_int_equal(rec.line, 6);
    assert_int_equal(next(r, &rec, &e), 1);
    assert_int_equal(rec.raw_len, 32);
    assert_int_equal(next(r, &rec, &e), -1);
    assert_string_equal(e.where, "line 8, column 5");
    assert_non_null(strstr(e.msg, "more fields than the limit"));
    assert_int_equal(next(r, &rec, &e), 1);
    assert_int_equal(rec.nfields, 4);
    assert_int_equal(next(r, &rec, &e), 0);
    csv_close(r);
    fclose(f);
    buf_free(&in);
}

/* A deterministic awkward field: quotes, delimiters, line breaks, UTF-8. */
static void make_field(char *out, size_t cap, int i, int j) {
    static const char *const parts[] = {"plain",      "with,comma",     "with \"quotes\"",
                                        "two\nlines", "crlf\r\ninside", "caf\xC3\xA9",
                                        "",           " spaced "};
    snprintf(out, cap, "%s-%d-%d%s", parts[(i * 7 + j) % 8], i, j, (i + j) % 13 == 0 ? "\"\"" : "");
}

static void write_field(buf *b, const char *s) {
    if (strpbrk(s, ",\"\r\n")) {
        buf_putc(b, '"');
        for (; *s; s++) {
            if (*s == '"') buf_putc(b, '"');
            buf_putc(b, *s);
        }
        buf_putc(b, '"');
    } else {
        buf_puts(b, s);
    }
}

static void test_records_across_reads_and_pipes(void **state) {
    (void)state;
    enum { ROWS = 6000, COLS = 5 };
    buf in = {0};
    char t[128];
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < COLS; j++) {
            if (j) buf_putc(&in, ',');
            make_field(t, sizeof t, i, j);
            write_field(&in, t);
        }
        buf_puts(&in, i % 3 ? "\n" : "\r\n");
    }
    assert_true(in.len > 4 * 65536);
    char path[] = "/tmp/concord-csv-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, in.p, in.len), (ssize_t)in.len);
    close(fd);
    for (int mode = 0; mode < 2; mode++) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "cat %s", path);
        FILE *f = mode == 0 ? fopen(path, "rb") : popen(cmd, "r");
        assert_non_null(f);
        csv_reader *r = csv_open(f, ',', 0, 1);
        assert_non_null(r);
        csv_record rec;
        err e;
        int64_t line = 1, off = 0;
        for (int i = 0; i < ROWS; i++) {
            assert_int_equal(next(r, &rec, &e), 1);
            assert_int_equal(rec.nfields, COLS);
            assert_int_equal(rec.line, line);
            assert_int_equal(rec.offset, off);
            for (int j = 0; j < COLS; j++) {
                make_field(t, sizeof t, i, j);
                if (strcmp(rec.field[j], t) != 0)
                    fail_msg("record %d field %d: \"%s\" != \"%s\"", i, j, rec.field[j], t);
            }
            for (size_t k = 0; k < rec.raw_len; k++)
                line += rec.raw[k] == '\n';
            off = rec.end_offset;
        }
        assert_int_equal(next(r, &rec, &e), 0);
        assert_int_equal(off, (int64_t)in.len);
        csv_close(r);
        if (mode == 0)
            fclose(f);
        else
            pclose(f);
    }
    unlink(path);
    buf_free(&in);
}

static void test_read_error(void **state) {
    (void)state;
    FILE *f = fopen("/dev/null", "w"); /* reading a write-only stream fails */
    assert_non_null(f);
    csv_reader *r = csv_open(f, ',', 0, 1);
    assert_non_null(r);
    csv_record rec;
    err e;
    assert_int_equal(next(r, &rec, &e), -1);
    assert_int_equal(e.code, ST_IO);
    assert_int_equal(rec.raw_len, 0);
    assert_int_equal(next(r, &rec, &e), 0);
    csv_close(r);
    fclose(f);
}

/* ---- the mapping engine ----------------------------------------------------------------- */

static const char ZC1_HEADER[] =
    "contact_id,patient_id,nhs_number,surname,forename,date_of_birth,gender,postcode,"
    "gp_practice_code,contact_date,contact_time,service,service_description,"
    "duration_minutes\n";

typedef struct collected {
    int n;
    char type[8][16];
    char id[8][33];
    buf json[8];
    int fail_at; /* emit returns an error for the resource with this index (-1: never) */
} collected;

static status collect(void *ctx, const char *type, const char *id, const char *json, size_t len, err *e) {
    collected *c = ctx;
    if (c->n == c->fail_at) return err_set(e, ST_IO, "exception", NULL, "store is full");
    assert_true(c->n < 8);
    err ve;
    if (validate_json(type, json, len, &ve))
        fail_msg("%s fails validation: %s at %s\n%.*s", type, ve.msg, ve.where, (int)len, json);
    assert_int_equal(strlen(json), len);
    snprintf(c->type[c->n], sizeof c->type[0], "%s", type);
    snprintf(c->id[c->n], sizeof c->id[0], "%s", id);
    buf_reset(&c->json[c->n]);
    buf_append(&c->json[c->n], json, len);
    c->n++;
    return ST_OK;
}

static void collected_free(collected *c) {
    for (int i = 0; i < 8; i++)
        buf_free(&c->json[i]);
}

static csvmap *load_mapping(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", MAPPINGS_DIR, name);
    csvmap *m = NULL;
    err e;
    if (csvmap_load(path, &m, &e) != ST_OK) fail_msg("%s: %s", e.where, e.msg);
    return m;
}

/* Read `text` (header and one row) and map the row with m (bound to the header). */
static status map_text(csvmap *m, const char *text, collected *c, err *e) {
    FILE *f = file_of(text, strlen(text));
    csv_reader *r = csv_open(f, csvmap_delimiter(m), 0, 1);
    csv_record rec;
    memset(c, 0, sizeof *c);
    c->fail_at = -1;
    status rc;
    assert_int_equal(csv_next(r, &rec, e), 1);
    if ((rc = csvmap_bind(m, &rec, e)) == ST_OK) {
        assert_int_equal(csv_next(r, &rec, e), 1);
        rc = csvmap_row(m, &rec, "urn:concord:test", collect, c, e);
    }
    csv_close(r);
    fclose(f);
    return rc;
}

static status map_line(csvmap *m, const char *header, const char *row, collected *c, err *e) {
    buf b = {0};
    buf_puts(&b, header);
    buf_puts(&b, row);
    status rc = map_text(m, b.p, c, e);
    buf_free(&b);
    return rc;
}

static void expect_load_error(const char *text, const char *where, const char *msg_part) {
    csvmap *m = NULL;
    err e;
    err_clear(&e);
    status rc = csvmap_parse(text, strlen(text), "t.map", &m, &e);
    if (rc == ST_OK) fail_msg("loaded, expected %s: %s", where, msg_part);
    assert_null(m);
    if (strcmp(e.where, where) != 0 || !strstr(e.msg, msg_part))
        fail_msg("got %s: %s\nexpected %s: ...%s...", e.where, e.msg, where, msg_part);
}

#define HEAD "organisation ZC9\nsetting community\n"

static void test_mapping_load_errors(void **state) {
    (void)state;
    expect_load_error("setting community\ncolumn a -> Patient.identifier[local]\n", "t.map",
                      "no organisation");
    expect_load_error("organisation zc9\n", "t.map:1", "ODS code");
    expect_load_error("organisation ZC9\nsetting hospice\n", "t.map:2", "setting takes one of");
    expect_load_error(HEAD "colum a -> Patient.birthDate\n", "t.map:3", "not a mapping directive");
    expect_load_error(HEAD "column a -> Patient.birthdate\n", "t.map:3",
                      "\"Patient.birthdate\" is not a target");
    expect_load_error(HEAD "column a Patient.birthDate\n", "t.map:3",
                      "expected -> (or + and a second column) after a");
    expect_load_error(HEAD "column a ->\n", "t.map:3", "column needs a target after ->");
    expect_load_error(HEAD "date-format DD/MM/YY\n", "t.map:3", "is not a date format");
    expect_load_error(HEAD "time-format HH\n", "t.map:3", "is not a time format");
    expect_load_error(HEAD "delimiter \"\\\"\"\n", "t.map:3", "cannot be the delimiter");
    expect_load_error(HEAD "column a -> Patient.identifier[local]\ncolumn b -> Patient.identifier[local]\n",
                      "t.map:4", "already mapped from column a (line 3)");
    expect_load_error(HEAD
                      "column a -> Patient.identifier[local]\ncolumn b -> Encounter.serviceType codes=svc\n"
                      "column c -> Encounter.identifier\ncolumn d -> Encounter.period.start\n"
                      "set Encounter.class HH\n",
                      "t.map:4", "no code table named svc");
    expect_load_error(HEAD "column a -> Patient.identifier[local]\ncolumn d -> Encounter.period.start\n"
                           "set Encounter.class HH\n",
                      "t.map", "Encounter has no key");
    expect_load_error(HEAD "column a -> Patient.identifier[local]\ncolumn c -> Encounter.identifier\n"
                           "column d -> Encounter.period.start\n",
                      "t.map", "an Encounter needs a class");
    expect_load_error(HEAD "column a -> Patient.identifier[local]\ncolumn c -> Encounter.identifier\n"
                           "column d -> Encounter.period.start\nset Encounter.class XX\n",
                      "t.map:6", "set Encounter.class: Encounter.class: \"XX\" is not an encounter class");
    expect_load_error(HEAD "column a -> Patient.birthDate\n", "t.map", "no column identifies the patient");
    expect_load_error(HEAD
                      "sex-codes M=man\ncolumn a -> Patient.identifier[local]\ncolumn g -> Patient.gender\n",
                      "t.map:3", "code table sex gives \"man\", which Patient.gender cannot take");
    expect_load_error(HEAD "codes s system=x\n  A \"One\"\n  A \"Two\"\n", "t.map:5",
                      "\"A\" is twice in code table s");
    expect_load_error(HEAD "codes s system=x\n  A One\n", "t.map:4", "quote a display text");
    expect_load_error(HEAD "column a -> Patient.name (Surname Given Middle)\n", "t.map:3",
                      "a name pattern is");
    expect_load_error(HEAD "column a -> Patient.birthDate (YYYY/DD)\ncolumn b -> Patient.identifier[local]\n",
                      "t.map:3", "is not a date format");
    expect_load_error(HEAD "column a + b -> Patient.birthDate\n", "t.map:3",
                      "Patient.birthDate takes one column");
    expect_load_error(HEAD "column \"a -> Patient.birthDate\n", "t.map:3", "quoted text is not closed");
    expect_load_error(HEAD "key Patient a\n", "t.map:3", "key takes Encounter or EpisodeOfCare");
    expect_load_error(HEAD "column a -> Patient.identifier[local] sometimes\n", "t.map:3",
                      "not an option of a column");
    expect_load_error(HEAD "set Encounter.class AMB codes=x\n", "t.map:3",
                      "\"codes=x\": not an option of set");
    expect_load_error(HEAD "column a -> Patient.identifier[local] system=\"urn:a b\"\n", "t.map:3",
                      "\"urn:a b\" is not a URI");
    expect_load_error(HEAD "codes t system=\n", "t.map:3", "system= needs a URI");
    expect_load_error(HEAD "codes t\n  \"a  b\"\n", "t.map:4", "is not a code (single spaces only");
    expect_load_error(HEAD "# caf\xE9\n", "t.map:3", "byte 0xE9 at column 6 is not UTF-8");
    /* a missing file */
    csvmap *m;
    err e;
    assert_int_equal(csvmap_load("/nonexistent/x.map", &m, &e), ST_NOT_FOUND);
    assert_string_equal(e.where, "/nonexistent/x.map");
}

static void test_shipped_mappings_load(void **state) {
    (void)state;
    static const struct {
        const char *file, *org, *setting;
        char delim;
    } maps[] = {
        {"community-ZC1.map", "ZC1", "community", ','},
        {"community-ZC2.map", "ZC2", "community", '|'},
        {"community-ZC3.map", "ZC3", "community", ','},
        {"social-care-ZL1.map", "ZL1", "social-care", ','},
        {"social-care-ZL2.map", "ZL2", "social-care", ','},
        {"social-care-ZL3.map", "ZL3", "social-care", '|'},
        {"social-care-ZL4.map", "ZL4", "social-care", ','},
        {"social-care-ZL5.map", "ZL5", "social-care", ','},
        {"mental-health-ZM1.map", "ZM1", "mental-health", ','},
    };
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        csvmap *m = load_mapping(maps[i].file);
        assert_string_equal(csvmap_org(m), maps[i].org);
        assert_string_equal(csvmap_setting(m), maps[i].setting);
        assert_int_equal(csvmap_delimiter(m), maps[i].delim);
        csvmap_free(m);
    }
}

static void test_bind_errors(void **state) {
    (void)state;
    csvmap *m = load_mapping("community-ZC2.map");
    collected c;
    err e;
    /* NHSNo missing */
    status rc =
        map_text(m,
                 "ContactRef|ClientNo|PatientName|DOB|Sex|PostCode|VisitDateTime|ServiceCode|Duration\n"
                 "X|C1|A, B|01/01/1950|1|W2 1NY|01/01/2024 10:00|DN|10\n",
                 &c, &e);
    assert_int_equal(rc, ST_INVALID);
    assert_string_equal(e.where, "NHSNo");
    assert_non_null(strstr(e.msg, "the header has no column NHSNo (" MAPPINGS_DIR "/community-ZC2.map:"));
    collected_free(&c);
    /* a column twice */
    rc = map_text(
        m,
        "ContactRef|ClientNo|NHSNo|NHSNo|PatientName|DOB|Sex|PostCode|VisitDateTime|ServiceCode|Duration\n"
        "X|C1|||A, B|01/01/1950|1|W2 1NY|01/01/2024 10:00|DN|10\n",
        &c, &e);
    assert_int_equal(rc, ST_INVALID);
    assert_string_equal(e.msg, "the header has column NHSNo twice");
    collected_free(&c);
    /* header names ignoring case and spaces, in any order */
    rc = map_text(
        m,
        " duration |servicecode|VISITDATETIME|postcode|sex|dob|patientname|nhsno|clientno|contactref\n"
        "10|DN|01/01/2024 10:00|W2 1NY|1|01/01/1950|SMITH, John|999 000 0018|C1|X1\n",
        &c, &e);
    assert_int_equal(rc, ST_OK);
    assert_int_equal(c.n, 2);
    assert_non_null(strstr(c.json[0].p, "\"family\":\"SMITH\",\"given\":[\"John\"]"));
    assert_non_null(strstr(c.json[0].p, "\"value\":\"9990000018\""));
    collected_free(&c);
    csvmap_free(m);
}

static void test_optional_columns_and_null_values(void **state) {
    (void)state;
    static const char map[] = HEAD "null-values NULL \"not known\"\n"
                                   "column id -> Patient.identifier[local]\n"
                                   "column nhs -> Patient.identifier[nhs] optional\n"
                                   "column dob -> Patient.birthDate not-blank\n";
    csvmap *m;
    err e;
    assert_int_equal(csvmap_parse(map, strlen(map), "t.map", &m, &e), ST_OK);
    collected c;
    assert_int_equal(map_text(m, "id,dob\nC1,1950-01-01\n", &c, &e), ST_OK);
    assert_int_equal(c.n, 1);
    assert_null(strstr(c.json[0].p, "nhs-number"));
    collected_free(&c);
    assert_int_equal(map_text(m, "id,dob,nhs\nC1,1950-01-01,NULL\n", &c, &e), ST_OK);
    assert_null(strstr(c.json[0].p, "nhs-number"));
    collected_free(&c);
    assert_int_equal(map_text(m, "id,dob,nhs\nC1,Not Known,9990000018\n", &c, &e), ST_INVALID);
    assert_string_equal(e.where, "dob");
    assert_string_equal(e.msg, "dob: a value is required (the date of birth)");
    assert_int_equal(c.n, 0);
    collected_free(&c);
    /* neither client id nor NHS number */
    assert_int_equal(map_text(m, "id,dob,nhs\n,1950-01-01,\n", &c, &e), ST_INVALID);
    assert_string_equal(e.where, "id");
    assert_non_null(strstr(e.msg, "the row names no client id and no NHS number"));
    collected_free(&c);
    /* no client id: the NHS number is the Patient's key */
    assert_int_equal(map_text(m, "id,dob,nhs\n,1950-01-01,9990000018\n", &c, &e), ST_OK);
    char want[33];
    unsigned char h[16];
    const char key[] = "Patient|https://fhir.nhs.uk/Id/nhs-number|9990000018";
    crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key), NULL, 0);
    sodium_bin2hex(want, sizeof want, h, sizeof h);
    assert_string_equal(c.id[0], want);
    collected_free(&c);
    csvmap_free(m);
}

static void test_set_is_the_default_in_target_terms(void **state) {
    (void)state;
    /* the value map (extract -> ActCode) does not apply to the set value */
    static const char map[] = HEAD "codes cls F2F=AMB Tel=VR\n"
                                   "codes svc system=urn:svc\n  DN \"District nursing\"\n"
                                   "set Encounter.class HH\n"
                                   "set Encounter.serviceType DN\n"
                                   "column id -> Patient.identifier[local]\n"
                                   "column c -> Encounter.identifier\n"
                                   "column d -> Encounter.period.start\n"
                                   "column how -> Encounter.class codes=cls\n"
                                   "column svc -> Encounter.serviceType codes=svc optional\n";
    csvmap *m;
    err e;
    if (csvmap_parse(map, strlen(map), "t.map", &m, &e) != ST_OK) fail_msg("%s: %s", e.where, e.msg);
    collected c;
    assert_int_equal(map_text(m, "id,c,d,how\nP1,E1,2024-01-01 10:00,\n", &c, &e), ST_OK);
    assert_non_null(strstr(c.json[1].p, "\"code\":\"HH\",\"display\":\"home health\""));
    assert_non_null(strstr(c.json[1].p,
                           "\"serviceType\":{\"coding\":[{\"system\":\"urn:svc\",\"code\":\"DN\","
                           "\"display\":\"District nursing\"}]}"));
    collected_free(&c);
    assert_int_equal(map_text(m, "id,c,d,how\nP1,E1,2024-01-01 10:00,Tel\n", &c, &e), ST_OK);
    assert_non_null(strstr(c.json[1].p, "\"code\":\"VR\""));
    collected_free(&c);
    assert_int_equal(map_text(m, "id,c,d,how\nP1,E1,2024-01-01 10:00,HH\n", &c, &e), ST_INVALID);
    assert_string_equal(e.msg, "how: \"HH\" is not in code table cls (F2F, Tel)");
    collected_free(&c);
    csvmap_free(m);
}

static void expect_row_error(csvmap *m, const char *header, const char *row, const char *where,
                             const char *msg) {
    collected c;
    err e;
    err_clear(&e);
    status rc = map_line(m, header, row, &c, &e);
    if (rc != ST_INVALID) fail_msg("%s: mapped (%d), expected %s", row, rc, msg);
    if (c.n != 0) fail_msg("%s: %d resources emitted before the error", row, c.n);
    if (strcmp(e.where, where) != 0 || strcmp(e.msg, msg) != 0)
        fail_msg("%s:\n got      %s | %s\n expected %s | %s", row, e.where, e.msg, where, msg);
    collected_free(&c);
}

static void test_row_errors_are_precise_and_emit_nothing(void **state) {
    (void)state;
    csvmap *m = load_mapping("community-ZC1.map");
    const char *H = ZC1_HEADER;
    /* the planted fault, and every kind of value: the last column is bad, so the
     * Patient's columns have all converted before the row is rejected */
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,31/02/19X5,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "date_of_birth", "date_of_birth: \"31/02/19X5\" is not a date in the form YYYY-MM-DD");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1923-02-29,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "date_of_birth", "date_of_birth: \"1923-02-29\" is not a date: February 1923 has 28 days");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1923-13-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "date_of_birth", "date_of_birth: \"1923-13-01\" is not a date: there is no month 13");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,0001-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "date_of_birth", "date_of_birth: \"0001-01-01\" has an implausible year (0001)");
    expect_row_error(
        m, H, "Z1,C1,999000001,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "nhs_number", "nhs_number: \"999000001\" is not an NHS number (10 digits)");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,X,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "gender", "gender: \"X\" is not one of the sex codes M, F");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2!1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "postcode", "postcode: \"W2!1NY\" is not a postcode");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z9-0001,2024-01-02,10:00,DN,District nursing,30\n",
        "gp_practice_code", "gp_practice_code: \"Z9-0001\" is not an ODS code");
    expect_row_error(m, H,
                     "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,,10:00,DN,District nursing,30\n",
                     "contact_date", "contact_date: \"\" is blank but contact_time has a time");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,24:10,DN,District nursing,30\n",
        "contact_time", "contact_time: \"24:10\" is not a time of day");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10.00,DN,District nursing,30\n",
        "contact_time", "contact_time: \"10.00\" is not a time in the form HH:MM");
    expect_row_error(m, H, "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,,,DN,District nursing,30\n",
                     "contact_date", "contact_date: a value is required (the contact's date)");
    expect_row_error(
        m, H, "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,XX,Something,30\n",
        "service", "service: \"XX\" is not in code table service (DN, CM, PT, POD, DSN, HFN, RESP, IC)");
    expect_row_error(
        m, H,
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,3O\n",
        "duration_minutes", "duration_minutes: \"3O\" is not a whole number of minutes");
    expect_row_error(
        m, H, ",C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n",
        "contact_id", "contact_id: a value is required (it identifies the Encounter)");
    expect_row_error(m, H, "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN\n",
                     "service_description",
                     "the row has 12 fields, the header 14: no value for service_description");
    expect_row_error(m, H,
                     "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,x,30,extra\n",
                     "", "the row has 15 fields, the header 14");
    csvmap_free(m);
    /* numbers, flags, ethnic category */
    m = load_mapping("social-care-ZL1.map");
    static const char ZL1H[] =
        "person_ref,nhs_no,surname,forename,dob,gender,postcode,service_type,service_start,"
        "service_end,hours_per_week,weekly_cost\n";
    expect_row_error(m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,HC,02/10/2023,,1O,245.00\n",
                     "hours_per_week", "hours_per_week: \"1O\" is not a number (e.g. 12.5)");
    expect_row_error(m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,HC,02/10/2023,,10,-245.00\n",
                     "weekly_cost", "weekly_cost: \"-245.00\" is not a number (e.g. 12.5)");
    expect_row_error(
        m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,HC,02/10/2023,,10,28888888888888888888888850\n",
        "weekly_cost",
        "weekly_cost: \"28888888888888888888888850\" is out of range (at most 9 digits before the point, 6 "
        "after)");
    expect_row_error(
        m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,HC,02/10/2023,,0.1234567,1\n", "hours_per_week",
        "hours_per_week: \"0.1234567\" is out of range (at most 9 digits before the point, 6 after)");
    expect_row_error(m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,HC,,,10,245.00\n", "service_start",
                     "service_start: a value is required (the service's start date)");
    csvmap_free(m);
    m = load_mapping("social-care-ZL4.map");
    expect_row_error(
        m, "LAS_ID,EVENT_ID,NHS_NUMBER,FULL_NAME,DOB,GENDER,POSTCODE,SERVICE,START_DATE,END_DATE,CARE_HOME\n",
        "SC1,ZL41,,\"BROWN, Zofia\",27/09/1936,F,NW6 9EB,RES,29/01/2025,,maybe\n", "CARE_HOME",
        "CARE_HOME: \"maybe\" is not yes or no (Y/N)");
    csvmap_free(m);
    m = load_mapping("mental-health-ZM1.map");
    static const char ZM1H[] =
        "contact_id,mh_id,nhs_number,surname,forename,date_of_birth,gender,ethnicity,postcode,"
        "team,team_name,contact_date,contact_time,contact_type\n";
    expect_row_error(m, ZM1H,
                     "ZM1,MH1,,Lewis,Sophie,1984-09-14,F,Q,W1 5SP,TT,x,2021-07-05,16:29,Face to face\n",
                     "ethnicity", "ethnicity: \"Q\" is not an NHS ethnic category code (A to S, Z, 99)");
    expect_row_error(
        m, ZM1H, "ZM1,MH1,,Lewis,Sophie,1984-09-14,F,A,W1 5SP,TT,x,2021-07-05,16:29,Video\n", "contact_type",
        "contact_type: \"Video\" is not in code table contact-mechanism (Face to face, Telephone)");
    csvmap_free(m);
}

static void test_values_normalised(void **state) {
    (void)state;
    csvmap *m = load_mapping("community-ZC1.map");
    collected c;
    err e;
    /* NHS number with spaces and a failing check digit: normalised and kept; postcode
     * without its space; summer time; the end is start + length across midnight */
    assert_int_equal(
        map_line(m, ZC1_HEADER,
                 "Z1,C1,999-000-0019,O'Brien,Mary Jane,1950-01-01,F,w21ny,z90001,2024-06-30,23:50,DN,"
                 "\"Nursing, district\",25\n",
                 &c, &e),
        ST_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.type[0], "Patient");
    assert_string_equal(c.type[1], "Encounter");
    const char *p = c.json[0].p, *enc = c.json[1].p;
    assert_non_null(strstr(p, "{\"system\":\"https://fhir.nhs.uk/Id/nhs-number\",\"value\":\"9990000019\"}"));
    assert_non_null(strstr(p, "{\"system\":\"urn:concord:id:ZC1:client\",\"value\":\"C1\"}"));
    assert_non_null(strstr(p, "\"family\":\"O'Brien\",\"given\":[\"Mary\",\"Jane\"]"));
    assert_non_null(strstr(p, "\"postalCode\":\"W2 1NY\""));
    assert_non_null(strstr(p,
                           "\"generalPractitioner\":[{\"type\":\"Organization\",\"identifier\":{\"system\":"
                           "\"https://fhir.nhs.uk/Id/ods-organization-code\",\"value\":\"Z90001\"}}]"));
    assert_non_null(
        strstr(p, "\"meta\":{\"source\":\"urn:concord:test\",\"tag\":[{\"system\":\"https://concord.example/"
                  "CodeSystem/care-setting\",\"code\":\"community\""));
    assert_non_null(strstr(
        enc, "\"period\":{\"start\":\"2024-06-30T23:50:00+01:00\",\"end\":\"2024-07-01T00:15:00+01:00\"}"));
    assert_non_null(strstr(enc, "\"length\":{\"value\":25,\"unit\":\"min\""));
    assert_non_null(strstr(enc, "\"display\":\"Nursing, district\"")); /* the sender's words */
    assert_non_null(strstr(enc, "\"subject\":{\"reference\":\"Patient/"));
    assert_non_null(strstr(enc, c.id[0]));
    collected_free(&c);
    /* lengths across the changes of clocks are real time */
    assert_int_equal(
        map_line(m, ZC1_HEADER, "Z1,C1,,Smith,Jo,1950-01-01,M,W2 1NY,,2025-03-30,00:59,POD,,60\n", &c, &e),
        ST_OK);
    assert_non_null(
        strstr(c.json[1].p,
               "\"period\":{\"start\":\"2025-03-30T00:59:00+00:00\",\"end\":\"2025-03-30T02:59:00+01:00\"}"));
    collected_free(&c);
    assert_int_equal(
        map_line(m, ZC1_HEADER, "Z1,C1,,Smith,Jo,1950-01-01,M,W2 1NY,,2024-10-27,00:30,POD,,120\n", &c, &e),
        ST_OK);
    assert_non_null(
        strstr(c.json[1].p,
               "\"period\":{\"start\":\"2024-10-27T00:30:00+01:00\",\"end\":\"2024-10-27T01:30:00+00:00\"}"));
    collected_free(&c);
    assert_int_equal(
        map_line(m, ZC1_HEADER, "Z1,C1,,Smith,Jo,1950-01-01,M,W2 1NY,,2024-10-27,00:30,POD,,45\n", &c, &e),
        ST_OK);
    assert_non_null(strstr(c.json[1].p, "\"end\":\"2024-10-27T01:15:00+01:00\"}"));
    collected_free(&c);
    /* winter: GMT */
    assert_int_equal(
        map_line(m, ZC1_HEADER, "Z1,C1,,Smith,Jo,1950-01-01,M,W2 1NY,,2024-01-15,09:05,POD,,\n", &c, &e),
        ST_OK);
    assert_non_null(strstr(c.json[1].p, "\"period\":{\"start\":\"2024-01-15T09:05:00+00:00\"}"));
    assert_non_null(strstr(c.json[1].p, "\"display\":\"Podiatry\"")); /* the table's words */
    assert_null(strstr(c.json[0].p, "generalPractitioner"));
    collected_free(&c);
    csvmap_free(m);
}

static void test_ids_are_deterministic(void **state) {
    (void)state;
    csvmap *m = load_mapping("community-ZC1.map");
    collected a, b, c;
    err e;
    const char *row1 =
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n";
    const char *row2 =
        "Z2,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-03-02,11:00,CM,Community matron,20\n";
    assert_int_equal(map_line(m, ZC1_HEADER, row1, &a, &e), ST_OK);
    assert_int_equal(map_line(m, ZC1_HEADER, row1, &b, &e), ST_OK);
    assert_int_equal(map_line(m, ZC1_HEADER, row2, &c, &e), ST_OK);
    assert_string_equal(a.id[0], b.id[0]);
    assert_string_equal(a.id[1], b.id[1]);
    assert_string_equal(a.json[1].p, b.json[1].p);
    assert_string_equal(a.id[0], c.id[0]);     /* the same client: the same Patient */
    assert_string_not_equal(a.id[1], c.id[1]); /* another contact */
    /* the derivation hl7_map uses: BLAKE2b-128 of type|system|value */
    const char *keys[2] = {"Patient|urn:concord:id:ZC1:client|C1", "Encounter|urn:concord:id:ZC1:contact|Z1"};
    for (int i = 0; i < 2; i++) {
        unsigned char h[16];
        char want[33];
        crypto_generichash(h, sizeof h, (const unsigned char *)keys[i], strlen(keys[i]), NULL, 0);
        sodium_bin2hex(want, sizeof want, h, sizeof h);
        assert_string_equal(a.id[i], want);
    }
    collected_free(&a);
    collected_free(&b);
    collected_free(&c);
    csvmap_free(m);
    /* a composite key uses normalised values: the same episode whatever the date format */
    static const char ZL1H[] =
        "person_ref,nhs_no,surname,forename,dob,gender,postcode,service_type,service_start,"
        "service_end,hours_per_week,weekly_cost\n";
    m = load_mapping("social-care-ZL1.map");
    assert_int_equal(
        map_line(m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,HC,02/10/2023,,10,245.00\n", &a, &e), ST_OK);
    assert_int_equal(
        map_line(m, ZL1H, "SC1,,Abdi,Ngozi,25/04/1937,F,NW8 5ZL,hc,02/10/2023,05/01/2024,10,245\n", &b, &e),
        ST_OK);
    assert_string_equal(a.id[1], b.id[1]); /* an end date later: the same episode, updated */
    assert_non_null(strstr(a.json[1].p, "\"value\":\"SC1|HC|2023-10-02\""));
    assert_non_null(strstr(a.json[1].p, "\"status\":\"active\""));
    assert_non_null(strstr(b.json[1].p, "\"status\":\"finished\""));
    assert_non_null(strstr(b.json[1].p, "\"period\":{\"start\":\"2023-10-02\",\"end\":\"2024-01-05\"}"));
    collected_free(&a);
    collected_free(&b);
    csvmap_free(m);
}

static void test_pass_through_codes_and_source(void **state) {
    (void)state;
    static const char map[] = HEAD "codes svc system=urn:svc unknown=keep\n  DN \"District nursing\"\n"
                                   "set Encounter.class AMB\n"
                                   "column id -> Patient.identifier[local]\n"
                                   "column c -> Encounter.identifier\n"
                                   "column d -> Encounter.period.start\n"
                                   "column svc -> Encounter.serviceType codes=svc\n";
    csvmap *m;
    err e;
    if (csvmap_parse(map, strlen(map), "t.map", &m, &e) != ST_OK) fail_msg("%s: %s", e.where, e.msg);
    collected c;
    /* an unknown code is kept (unknown=keep), made a valid FHIR code */
    assert_int_equal(map_text(m, "id,c,d,svc\nP1,E1,2024-01-01,\"\n  Wound\t\tcare \r\n\"\n", &c, &e), ST_OK);
    assert_non_null(strstr(c.json[1].p, "{\"system\":\"urn:svc\",\"code\":\"Wound care\"}"));
    collected_free(&c);
    /* meta.source must be a URI; an empty one is none */
    FILE *f = file_of("id,c,d,svc\nP1,E1,2024-01-01,DN\n", 31);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec;
    assert_int_equal(csv_next(r, &rec, &e), 1);
    assert_int_equal(csvmap_bind(m, &rec, &e), ST_OK);
    assert_int_equal(csv_next(r, &rec, &e), 1);
    memset(&c, 0, sizeof c);
    c.fail_at = -1;
    assert_int_equal(csvmap_row(m, &rec, "file name.csv", collect, &c, &e), ST_INVALID);
    assert_string_equal(e.where, "source");
    assert_int_equal(c.n, 0);
    assert_int_equal(csvmap_row(m, &rec, "", collect, &c, &e), ST_OK);
    assert_null(strstr(c.json[0].p, "\"source\""));
    collected_free(&c);
    csv_close(r);
    fclose(f);
    csvmap_free(m);
}

static void test_emit_error_and_no_source(void **state) {
    (void)state;
    csvmap *m = load_mapping("community-ZC1.map");
    FILE *f = file_of(ZC1_HEADER, strlen(ZC1_HEADER));
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec;
    err e;
    assert_int_equal(csv_next(r, &rec, &e), 1);
    assert_int_equal(csvmap_bind(m, &rec, &e), ST_OK);
    csv_close(r);
    fclose(f);
    const char *row =
        "Z1,C1,9990000018,Smith,Jo,1950-01-01,F,W2 1NY,Z90001,2024-01-02,10:00,DN,District nursing,30\n";
    f = file_of(row, strlen(row));
    r = csv_open(f, ',', 0, 1);
    assert_int_equal(csv_next(r, &rec, &e), 1);
    collected c = {.fail_at = 1};
    assert_int_equal(csvmap_row(m, &rec, NULL, collect, &c, &e), ST_IO); /* the store's error, as it is */
    assert_string_equal(e.msg, "store is full");
    assert_int_equal(c.n, 1);
    assert_null(strstr(c.json[0].p, "\"source\""));
    collected_free(&c);
    csv_close(r);
    fclose(f);
    csvmap_free(m);
}

/* ---- threads: concurrent csvmap_row on one bound mapping ------------------------------- */
enum { THREAD_ROWS = 400 };
typedef struct thread_job {
    const csvmap *m;
    csv_record *rows;
    unsigned char digest[32];
    int failures;
} thread_job;

static status digest_emit(void *ctx, const char *type, const char *id, const char *json, size_t len, err *e) {
    crypto_generichash_update(ctx, (const unsigned char *)json, len);
    return ST_OK;
}

static void *thread_main(void *arg) {
    thread_job *j = arg;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof j->digest);
    for (int i = 0; i < THREAD_ROWS; i++) {
        err e;
        if (csvmap_row(j->m, &j->rows[i], "urn:concord:test", digest_emit, &st, &e) != ST_OK) j->failures++;
    }
    crypto_generichash_final(&st, j->digest, sizeof j->digest);
    return NULL;
}

static void test_concurrent_rows(void **state) {
    (void)state;
    csvmap *m = load_mapping("mental-health-ZM1.map");
    static const char ZM1H[] =
        "contact_id,mh_id,nhs_number,surname,forename,date_of_birth,gender,ethnicity,postcode,"
        "team,team_name,contact_date,contact_time,contact_type\n";
    buf in = {0};
    buf_puts(&in, ZM1H);
    for (int i = 0; i < THREAD_ROWS; i++)
        buf_printf(&in,
                   "ZM%d,MH%d,99900%05d,Lewis,Sophie,1984-09-14,F,%c,W1 5SP,TT,,2021-07-%02d,16:%02d,%s\n", i,
                   i / 3, i, "ABCHJKMN"[i % 8], 1 + i % 28, i % 60, i % 4 ? "Face to face" : "Telephone");
    FILE *f = file_of(in.p, in.len);
    csv_reader *r = csv_open(f, ',', 0, 1);
    csv_record rec, rows[THREAD_ROWS];
    err e;
    assert_int_equal(csv_next(r, &rec, &e), 1);
    assert_int_equal(csvmap_bind(m, &rec, &e), ST_OK);
    /* keep private copies: record storage is the reader's */
    for (int i = 0; i < THREAD_ROWS; i++) {
        assert_int_equal(csv_next(r, &rec, &e), 1);
        rows[i].nfields = rec.nfields;
        const char **fl = malloc((size_t)rec.nfields * sizeof *fl);
        size_t *ln = malloc((size_t)rec.nfields * sizeof *ln);
        for (int k = 0; k < rec.nfields; k++) {
            fl[k] = strdup(rec.field[k]);
            ln[k] = rec.len[k];
        }
        rows[i].field = fl;
        rows[i].len = ln;
    }
    csv_close(r);
    fclose(f);
    thread_job seq = {m, rows, {0}, 0};
    thread_main(&seq);
    assert_int_equal(seq.failures, 0);
    pthread_t th[4];
    thread_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (thread_job){m, rows, {0}, 0};
        assert_int_equal(pthread_create(&th[t], NULL, thread_main, &jobs[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(jobs[t].failures, 0);
        assert_memory_equal(jobs[t].digest, seq.digest, sizeof seq.digest);
    }
    for (int i = 0; i < THREAD_ROWS; i++) {
        for (int k = 0; k < rows[i].nfields; k++)
            free((char *)rows[i].field[k]);
        free((void *)rows[i].field);
        free((void *)rows[i].len);
    }
    buf_free(&in);
    csvmap_free(m);
}

/* ---- data-driven cases (tests/data/csv/) ---------------------------------------------- */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    buf b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    if (!b.p) buf_append(&b, "", 0);
    *len = b.len;
    return buf_take(&b);
}

typedef struct case_out {
    buf *out;
    int64_t line;
} case_out;

static status case_emit(void *ctx, const char *type, const char *id, const char *json, size_t len, err *e) {
    case_out *c = ctx;
    err ve;
    if (validate_json(type, json, len, &ve))
        fail_msg("line %lld: %s fails validation: %s at %s", (long long)c->line, type, ve.msg, ve.where);
    buf_printf(c->out, "line %lld: %s %.*s\n", (long long)c->line, type, (int)len, json);
    return ST_OK;
}

/* What a case produces, as the text expected.txt holds. */
static void run_case(const char *dir, const char *name, buf *out) {
    char path[1100];
    size_t n;
    char *mtext = NULL, *mname = NULL;
    snprintf(path, sizeof path, "%.1000s/mapping.map", dir);
    if ((mtext = slurp(path, &n))) {
        mname = strdup("mapping.map");
    } else {
        /* "mapping": the name of a mapping in mappings/ */
        snprintf(path, sizeof path, "%.1000s/mapping", dir);
        char *which = slurp(path, &n);
        if (!which) fail_msg("%s: no mapping.map or mapping", name);
        which[strcspn(which, "\r\n")] = 0;
        snprintf(path, sizeof path, "%s/%s", MAPPINGS_DIR, which);
        mtext = slurp(path, &n);
        if (!mtext) fail_msg("%s: no mapping %s", name, path);
        size_t l = strlen(which) + 10;
        mname = malloc(l);
        snprintf(mname, l, "mappings/%s", which);
        free(which);
    }
    csvmap *m = NULL;
    err e;
    if (csvmap_parse(mtext, n, mname, &m, &e) != ST_OK) {
        buf_printf(out, "load-error %s: %s\n", e.where, e.msg);
        goto done;
    }
    snprintf(path, sizeof path, "%.1000s/input.csv", dir);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: no input.csv", name);
    csv_reader *r = csv_open(f, csvmap_delimiter(m), 0, 1);
    csv_record rec;
    int rc = csv_next(r, &rec, &e);
    if (rc != 1) {
        buf_printf(out, "header: %s\n", rc < 0 ? e.msg : "none");
    } else if (csvmap_bind(m, &rec, &e) != ST_OK) {
        buf_printf(out, "bind-error %s: %s\n", e.where, e.msg);
    } else {
        while ((rc = csv_next(r, &rec, &e)) != 0) {
            if (rc < 0) {
                buf_printf(out, "line %lld: malformed %s: %s\n", (long long)rec.line, e.where, e.msg);
                continue;
            }
            case_out c = {out, rec.line};
            size_t mark = out->len;
            if (csvmap_row(m, &rec, "urn:concord:test", case_emit, &c, &e) != ST_OK) {
                if (out->len != mark)
                    fail_msg("%s line %lld: resources emitted before an error", name, (long long)rec.line);
                buf_printf(out, "line %lld: error %s: %s\n", (long long)rec.line, e.where, e.msg);
            }
        }
    }
    csv_close(r);
    fclose(f);
done:
    csvmap_free(m);
    free(mtext);
    free(mname);
}

static void test_cases(void **state) {
    (void)state;
    DIR *d = opendir(CASES_DIR);
    assert_non_null(d);
    const char *update = getenv("CONCORD_CSV_UPDATE");
    int ncases = 0, failed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char dir[1024], path[1100];
        snprintf(dir, sizeof dir, "%s/%s", CASES_DIR, de->d_name);
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        ncases++;
        buf out = {0};
        run_case(dir, de->d_name, &out);
        snprintf(path, sizeof path, "%s/expected.txt", dir);
        if (update && *update == '1') {
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            fwrite(out.p ? out.p : "", 1, out.len, f);
            fclose(f);
        } else {
            size_t n;
            char *want = slurp(path, &n);
            if (!want)
                fail_msg("%s: no expected.txt (run with CONCORD_CSV_UPDATE=1, then read it)", de->d_name);
            if (n != out.len || memcmp(want, out.p, n) != 0) {
                /* the first differing line */
                const char *a = want, *b = out.p ? out.p : "";
                int line = 1;
                while (*a && *a == *b) {
                    if (*a == '\n') line++;
                    a++, b++;
                }
                const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
                print_error("case %s, expected.txt line %d:\n expected: %.*s\n actual:   %.*s\n", de->d_name,
                            line, (int)(ea ? ea - a : (long)strlen(a)), a,
                            (int)(eb ? eb - b : (long)strlen(b)), b);
                failed++;
            }
            free(want);
        }
        buf_free(&out);
    }
    closedir(d);
    assert_true(ncases >= 10);
    assert_int_equal(failed, 0);
}

/* ---- the synthetic population, end to end --------------------------------------------- */
static char synth_dir[64];

static int setup_synth(void **state) {
    (void)state;
    synth_params p;
    synth_params_default(&p);
    p.patients = 2000;
    p.threads = 2;
    snprintf(synth_dir, sizeof synth_dir, "/tmp/concord-csv-synth-XXXXXX");
    if (!mkdtemp(synth_dir)) return -1;
    err e;
    synth_summary s;
    if (synth_feeds(&p, synth_dir, NULL, NULL, &s, &e) != ST_OK) {
        fprintf(stderr, "synth: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown_synth(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", synth_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", synth_dir);
    return 0;
}

typedef struct synth_count {
    long resources, patients, encounters, episodes, care_homes;
    int64_t line;
    const char *feed;
} synth_count;

static status synth_emit(void *ctx, const char *type, const char *id, const char *json, size_t len, err *e) {
    synth_count *c = ctx;
    err ve;
    if (validate_json(type, json, len, &ve))
        fail_msg("%s line %lld: %s fails validation: %s at %s", c->feed, (long long)c->line, type, ve.msg,
                 ve.where);
    c->resources++;
    if (!strcmp(type, "Patient"))
        c->patients++;
    else if (!strcmp(type, "Encounter"))
        c->encounters++;
    else if (!strcmp(type, "EpisodeOfCare")) {
        c->episodes++;
        if (strstr(json, "\"code\":\"care-home\"")) c->care_homes++;
    }
    return ST_OK;
}

/* the planted malformed rows of a feed: their record ids, one string "|id|id|..|" */
static int malformed_ids(const char *feed, buf *ids) {
    char path[256];
    snprintf(path, sizeof path, "%s/ground_truth/errors.csv", synth_dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    size_t fl = strlen(feed);
    buf_puts(ids, "|");
    while (fgets(line, sizeof line, f)) {
        /* feed,record_id,person_id,error,... */
        if (strncmp(line, feed, fl) != 0 || line[fl] != ',') continue;
        char *rid = line + fl + 1, *c2 = strchr(rid, ','), *c3 = c2 ? strchr(c2 + 1, ',') : NULL;
        if (!c3 || strncmp(c3 + 1, "malformed,", 10) != 0) continue;
        buf_append(ids, rid, (size_t)(c2 - rid));
        buf_puts(ids, "|");
        n++;
    }
    fclose(f);
    return n;
}

static void test_synthetic_feeds_map(void **state) {
    (void)state;
    static const struct {
        const char *feed, *map, *dob;
        int id_col; /* the row id's column, or -1 (ZL1 has none) */
    } feeds[] = {
        {"community/ZC1", "community-ZC1.map", "date_of_birth", 0},
        {"community/ZC2", "community-ZC2.map", "DOB", 0},
        {"community/ZC3", "community-ZC3.map", "birth_date", 0},
        {"social_care/ZL1", "social-care-ZL1.map", "dob", -1},
        {"social_care/ZL2", "social-care-ZL2.map", "DateOfBirth", 0},
        {"social_care/ZL3", "social-care-ZL3.map", "birth", 0},
        {"social_care/ZL4", "social-care-ZL4.map", "DOB", 1},
        {"social_care/ZL5", "social-care-ZL5.map", "dob", 0},
        {"mental_health/ZM1", "mental-health-ZM1.map", "date_of_birth", 0},
    };
    long total_rows = 0, total_malformed = 0, total_care_homes = 0, total_episodes = 0;
    for (size_t i = 0; i < sizeof feeds / sizeof feeds[0]; i++) {
        csvmap *m = load_mapping(feeds[i].map);
        char path[256];
        snprintf(path, sizeof path, "%s/%s.csv", synth_dir, feeds[i].feed);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        csv_reader *r = csv_open(f, csvmap_delimiter(m), 0, 1);
        csv_record rec;
        err e;
        assert_int_equal(csv_next(r, &rec, &e), 1);
        if (csvmap_bind(m, &rec, &e) != ST_OK) fail_msg("%s: %s", feeds[i].feed, e.msg);
        buf planted = {0};
        int nplanted = malformed_ids(feeds[i].feed, &planted);
        synth_count c = {.feed = feeds[i].feed};
        long rows = 0, failed = 0;
        int rc;
        while ((rc = csv_next(r, &rec, &e)) != 0) {
            if (rc < 0) fail_msg("%s line %lld: %s: %s", feeds[i].feed, (long long)rec.line, e.where, e.msg);
            rows++;
            c.line = rec.line;
            long before = c.resources;
            if (csvmap_row(m, &rec, "urn:concord:test", synth_emit, &c, &e) == ST_OK) {
                assert_int_equal(c.resources - before, 2);
                if (feeds[i].id_col >= 0) {
                    char key[64];
                    snprintf(key, sizeof key, "|%s|", rec.field[feeds[i].id_col]);
                    if (strstr(planted.p, key))
                        fail_msg("%s line %lld: planted malformed row mapped", feeds[i].feed,
                                 (long long)rec.line);
                }
                continue;
            }
            failed++;
            assert_int_equal(c.resources, before);
            /* it is a planted one, and the message says what and where */
            if (feeds[i].id_col >= 0) {
                char key[64];
                snprintf(key, sizeof key, "|%s|", rec.field[feeds[i].id_col]);
                if (!strstr(planted.p, key))
                    fail_msg("%s line %lld: %s: %s (not a planted error)", feeds[i].feed, (long long)rec.line,
                             e.where, e.msg);
            }
            assert_string_equal(e.where, feeds[i].dob);
            char want[160];
            snprintf(want, sizeof want, "%s: \"31/02/19X5\" is not a date in the form ", feeds[i].dob);
            if (strncmp(e.msg, want, strlen(want)) != 0) fail_msg("%s: %s", feeds[i].feed, e.msg);
        }
        assert_int_equal(failed, nplanted);
        assert_int_equal(c.patients, rows - failed);
        total_rows += rows;
        total_malformed += failed;
        total_care_homes += c.care_homes;
        total_episodes += c.episodes;
        buf_free(&planted);
        csv_close(r);
        fclose(f);
        csvmap_free(m);
    }
    /* the population is big enough to have exercised the mappings */
    assert_true(total_rows > 5000);
    assert_true(total_malformed > 0);
    assert_true(total_episodes > 20);
    assert_true(total_care_homes > 0);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4180_quoting),
        cmocka_unit_test(test_bom_blank_lines_and_empty_fields),
        cmocka_unit_test(test_other_delimiters),
        cmocka_unit_test(test_quoted_delimiter_with_tab),
        cmocka_unit_test(test_resume_from_offset),
        cmocka_unit_test(test_malformed_records_resynchronise),
        cmocka_unit_test(test_invalid_utf8_and_nul),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_records_across_reads_and_pipes),
        cmocka_unit_test(test_read_error),
        cmocka_unit_test(test_mapping_load_errors),
        cmocka_unit_test(test_shipped_mappings_load),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_optional_columns_and_null_values),
        cmocka_unit_test(test_set_is_the_default_in_target_terms),
        cmocka_unit_test(test_row_errors_are_precise_and_emit_nothing),
        cmocka_unit_test(test_values_normalised),
        cmocka_unit_test(test_ids_are_deterministic),
        cmocka_unit_test(test_pass_through_codes_and_source),
        cmocka_unit_test(test_emit_error_and_no_source),
        cmocka_unit_test(test_concurrent_rows),
        cmocka_unit_test(test_cases),
        cmocka_unit_test_setup_teardown(test_synthetic_feeds_map, setup_synth, teardown_synth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
