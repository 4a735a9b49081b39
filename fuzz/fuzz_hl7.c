/*
 * fuzz_hl7.c — libFuzzer harness for the HL7 v2 parser, the FHIR mapping
 * and the ACK builder (src/ingest/hl7*.c).
 *
 * Each input is one message (the bytes inside an MLLP frame). The harness
 * parses it with small limits (so the limit paths are reached), walks every
 * segment, field, repetition, component and subcomponent through the
 * decoder, tries a few paths, maps it, dumps every resource, and builds the
 * ACK whatever happened. Invariants checked: a failed parse or map always
 * carries a reason and an AE/AR; a successful map yields only resources
 * that fhir_validate accepts (hl7_map checks too; this is independent);
 * every decoded value is valid UTF-8 (it goes into JSON); the ACK begins
 * with MSH and holds an MSA.
 *
 * Seeds: fuzz/corpus/hl7/ (ADT and ORU in the shapes the cases use).
 *
 * Build and run (or `make fuzz`, which links the whole core library):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_hl7.c \
 *     src/ingest/hl7.c src/ingest/hl7_ack.c src/ingest/hl7_map.c src/base/arena.c src/base/buf.c \
 *     src/base/status.c src/base/log.c src/fhir/json.c \
 *     src/fhir/validate.c src/fhir/model.c src/fhir/model_gen.c src/fhir/fhirdate.c \
 *     -ljansson -lsodium -lpthread -lm -o fuzz_hl7
 *   ./fuzz_hl7 -max_total_time=60 -max_len=16384 work/ fuzz/corpus/hl7
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/json.h"
#include "fhir/validate.h"
#include "ingest/hl7.h"
#include "ingest/hl7_map.h"

static void check_utf8(hl7_str s) {
    json_t *j = json_stringn(s.p, s.n);
    if (!j) abort(); /* jansson rejects invalid UTF-8 */
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    arena a = {0};
    hl7_limits lim = {1 << 16, 64, 48, 4096};
    hl7_msg *m = NULL;
    hl7_error e;
    status rc = hl7_parse((const char *)data, size, &lim, &a, &m, &e);
    if (rc != ST_OK && (!e.text[0] || e.ack == HL7_AA)) abort();
    if (m) {
        size_t nseg = hl7_segment_count(m);
        for (size_t s = 0; s < nseg; s++) {
            int nf = hl7_field_count(m, (long)s);
            for (int f = 1; f <= nf + 1; f++) {
                int nr = hl7_rep_count(m, (long)s, f);
                for (int r = 0; r <= nr && r < 4; r++)
                    for (int c = 0; c <= 4; c++)
                        for (int sub = 0; sub <= 2; sub++)
                            if (rc == ST_OK) check_utf8(hl7_get(m, (long)s, f, r, c, sub));
                            else (void)hl7_get(m, (long)s, f, r, c, sub);
            }
        }
        static const char *paths[] = {"MSH-9.2", "PID-3[2].4.1", "OBX[2]-5", "PV1-19", "XXX-1", "PID-", "PID[0]-1"};
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            hl7_str v;
            (void)hl7_path(m, paths[i], &v);
        }
    }
    hl7_mapped out = {0};
    if (rc == ST_OK) {
        rc = hl7_map(m, NULL, &a, &out, &e);
        if (rc != ST_OK && (!e.text[0] || e.ack == HL7_AA || out.nres)) abort();
        for (size_t i = 0; i < out.nres; i++) {
            err ve;
            if (fhir_validate(out.res[i].json, out.res[i].type, &ve) != ST_OK) abort();
            buf b = {0};
            fhir_json_dump(out.res[i].json, &b);
            buf_free(&b);
        }
        json_t *j = hl7_mapped_json(&out);
        json_decref(j);
    }
    buf ack = {0};
    hl7_ack_build(m, rc == ST_OK ? HL7_AA : e.ack, &e, rc != ST_OK, NULL, &ack);
    if (ack.len < 8 || memcmp(ack.p, "MSH", 3) != 0 || !strstr(ack.p, "\rMSA")) abort();
    buf_free(&ack);
    hl7_mapped_release(&out);
    fhir_json_release();
    arena_free(&a);
    return 0;
}
