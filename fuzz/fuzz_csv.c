/*
 * fuzz_csv.c — libFuzzer harness for the CSV reader and the mapping engine
 * (src/ingest/csv.c, src/ingest/csvmap.c).
 *
 * The first input byte chooses what the rest is:
 *   mode 0  CSV rows, read with ',' and mapped with a fixed mapping (below)
 *           bound to a fixed header; a row of the wrong width is also mapped
 *           padded or cut to the header's width, so the converters are reached;
 *   mode 1  CSV read with '|' and a 64-byte record limit (reader only);
 *   mode 2  as mode 0 with a 96-byte record limit and 12 fields at most;
 *   mode 3  a mapping file, loaded (and, if it loads, bound to the fixed
 *           header and given one fixed row).
 * Invariants checked: the reader terminates and advances on every call;
 * offsets and line numbers only grow, stay inside the input, and a record's
 * raw bytes are the input's bytes at its offset; fields are NUL-terminated
 * at their length and valid UTF-8 (they go into JSON); a malformed record or
 * a rejected row always says what and where; a rejected row emits nothing;
 * every resource csvmap_row emits is one JSON value that fhir_validate
 * accepts, with the id it was emitted with.
 *
 * Seeds: fuzz/corpus/csv/ (rows of the fixed layout, quoting faults,
 * mappings). Build: cmake -DCONCORD_FUZZ=ON with clang; run
 *   ./fuzz_csv -max_total_time=60 -max_len=4096 work/ fuzz/corpus/csv
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/validate.h"
#include "ingest/csv.h"
#include "ingest/csvmap.h"

static const char MAPPING[] =
    "organisation ZF1\n"
    "setting community\n"
    "date-format DD/MM/YYYY\n"
    "time-format HH:MM\n"
    "sex-codes M=male F=female 1=male 2=female\n"
    "null-values NULL\n"
    "codes svc system=https://concord.example/CodeSystem/local-service\n"
    "  HC  \"Home care\"\n"
    "  RES \"Residential care\" care-home\n"
    "codes medium system=https://www.datadictionary.nhs.uk/data_elements/consultation_mechanism\n"
    "  F2F=01 \"Face to face\"\n"
    "  Tel=02 \"Telephone\"\n"
    "codes cls F2F=AMB Tel=VR\n"
    "set Encounter.class HH\n"
    "column id -> Encounter.identifier\n"
    "column client -> Patient.identifier[local]\n"
    "column nhs -> Patient.identifier[nhs]\n"
    "column name -> Patient.name (FAMILY, Given)\n"
    "column dob -> Patient.birthDate\n"
    "column sex -> Patient.gender\n"
    "column postcode -> Patient.address.postalCode\n"
    "column gp -> Patient.generalPractitioner\n"
    "column eth -> Patient.extension[ethnic-category]\n"
    "column date + time -> Encounter.period.start\n"
    "column mins -> Encounter.length\n"
    "column medium -> Encounter.type codes=medium\n"
    "column medium -> Encounter.class codes=cls\n"
    "column svc -> Encounter.serviceType codes=svc\n"
    "column svc -> EpisodeOfCare.type codes=svc\n"
    "column start -> EpisodeOfCare.period.start (YYYY-MM-DD)\n"
    "column end -> EpisodeOfCare.period.end (YYYY-MM-DD)\n"
    "column hours -> EpisodeOfCare.extension[planned-hours]\n"
    "column cost -> EpisodeOfCare.extension[weekly-cost]\n"
    "column ch -> EpisodeOfCare.type[care-home]\n"
    "key EpisodeOfCare client + svc + start\n";

static const char *const HEADER[] = {"id",    "client", "nhs",   "name", "dob",  "sex",    "postcode",
                                     "gp",    "eth",    "date",  "time", "mins", "medium", "svc",
                                     "start", "end",    "hours", "cost", "ch"};
#define NHEADER ((int)(sizeof HEADER / sizeof HEADER[0]))

static const char *const ROW[] = {
    "E1",    "C1", "9990000018", "SMITH, John", "01/02/1950", "M", "W2 1NY", "Z90001", "A", "03/04/2024",
    "10:30", "30", "Tel",        "RES",         "2024-04-03", "",  "10",     "245.00", "N"};

static csv_record record_of(const char *const *fields, size_t *lens, int n) {
    for (int i = 0; i < n; i++)
        lens[i] = strlen(fields[i]);
    return (csv_record){.line = 1, .nfields = n, .field = (const char **)fields, .len = lens};
}

static csvmap *fixed_map(void) {
    static csvmap *m;
    if (!m) {
        err e;
        size_t lens[NHEADER];
        csv_record h = record_of(HEADER, lens, NHEADER);
        if (csvmap_parse(MAPPING, sizeof MAPPING - 1, "fuzz.map", &m, &e) != ST_OK ||
            csvmap_bind(m, &h, &e) != ST_OK) {
            fprintf(stderr, "the fixed mapping: %s: %s\n", e.where, e.msg);
            abort();
        }
    }
    return m;
}

typedef struct sink {
    int n;
} sink;

static status check_emit(void *ctx, const char *type, const char *id, const char *json, size_t len, err *e) {
    sink *s = ctx;
    json_error_t je;
    json_t *j = json_loadb(json, len, 0, &je);
    if (!j) abort();
    err ve;
    if (fhir_validate(j, type, &ve) != ST_OK) abort();
    const char *jid = json_string_value(json_object_get(j, "id"));
    if (!jid || strcmp(jid, id) != 0) abort();
    json_decref(j);
    s->n++;
    return ST_OK;
}

static void map_row(const csvmap *m, const csv_record *rec) {
    sink s = {0};
    err e;
    err_clear(&e);
    status rc = csvmap_row(m, rec, "urn:concord:fuzz", check_emit, &s, &e);
    if (rc != ST_OK) {
        if (!e.msg[0] || s.n) abort();
    } else if (s.n < 1) {
        abort();
    }
}

static void check_utf8(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (!j) abort(); /* jansson refuses invalid UTF-8 */
    json_decref(j);
}

static void read_all(const uint8_t *data, size_t size, char delim, size_t max_record, int max_fields,
                     const csvmap *m) {
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return;
    csv_reader *r = csv_open(f, delim, 0, 1);
    if (!r) abort();
    if (max_record) csv_set_limits(r, max_record, max_fields);
    csv_record rec;
    err e;
    int64_t last_end = 0, last_line = 0;
    size_t calls = 0;
    int rc;
    while ((rc = csv_next(r, &rec, &e)) != 0) {
        if (++calls > size + 2) abort(); /* every call consumes at least one byte */
        if (rec.offset < last_end || rec.end_offset <= rec.offset || rec.end_offset > (int64_t)size) abort();
        if (rec.line <= last_line) abort();
        if (rec.raw_len > (size_t)(rec.end_offset - rec.offset)) abort();
        if (rec.raw_len && memcmp(rec.raw, data + rec.offset, rec.raw_len) != 0) abort();
        last_end = rec.end_offset;
        last_line = rec.line;
        if (rc < 0) {
            if (!e.msg[0] || !e.where[0] || rec.nfields) abort();
            continue;
        }
        if (rec.nfields < 1) abort();
        for (int i = 0; i < rec.nfields; i++) {
            if (rec.field[i][rec.len[i]] != 0) abort();
            check_utf8(rec.field[i], rec.len[i]);
        }
        if (!m) continue;
        map_row(m, &rec);
        if (rec.nfields != NHEADER) {
            /* pad or cut to the header's width */
            const char *fl[NHEADER];
            size_t ln[NHEADER];
            for (int i = 0; i < NHEADER; i++) {
                fl[i] = i < rec.nfields ? rec.field[i] : "";
                ln[i] = i < rec.nfields ? rec.len[i] : 0;
            }
            csv_record fixed = rec;
            fixed.nfields = NHEADER;
            fixed.field = fl;
            fixed.len = ln;
            map_row(m, &fixed);
        }
    }
    if (csv_next(r, &rec, &e) != 0) abort(); /* end stays the end */
    csv_close(r);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] & 3;
    data++, size--;
    if (size == 0) return 0; /* fmemopen wants a non-empty buffer */
    switch (mode) {
    case 0: read_all(data, size, ',', 0, 0, fixed_map()); break;
    case 1: read_all(data, size, '|', 64, 0, NULL); break;
    case 2: read_all(data, size, ',', 96, 12, fixed_map()); break;
    default: {
        csvmap *m = NULL;
        err e;
        err_clear(&e);
        if (csvmap_parse((const char *)data, size, "fuzz.map", &m, &e) != ST_OK) {
            if (m || strncmp(e.where, "fuzz.map", 8) != 0 || !e.msg[0]) {
                if (e.code != ST_NOMEM) abort();
            }
            break;
        }
        size_t lens[NHEADER];
        csv_record h = record_of(HEADER, lens, NHEADER);
        if (csvmap_bind(m, &h, &e) == ST_OK) {
            size_t rl[NHEADER];
            csv_record row = record_of(ROW, rl, NHEADER);
            map_row(m, &row);
        }
        csvmap_free(m);
    }
    }
    return 0;
}
