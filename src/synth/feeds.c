/*
 * feeds.c — `concord synth`: the files each care setting would send about
 * the synthetic population, with realistic mess and a ground truth.
 *
 * Layout of the output directory (docs/synth.md describes every format):
 *   manifest.json                      parameters, counts, files
 *   gp/<ODS>.ndjson                    one per practice: FHIR R4, one resource per line
 *   acute/<ODS>.hl7                    one per hospital: HL7 v2.4 ADT and ORU^R01, MLLP-framed
 *   community/<ODS>.csv                one per community provider, each its own layout
 *   social_care/<code>.csv             one per council, each its own layout
 *   mental_health/<ODS>.csv            the mental health trust
 *   ground_truth/people.csv            every person's true demographics
 *   ground_truth/records.csv           every source record -> its local patient record -> person
 *   ground_truth/errors.csv            every planted error
 *
 * Concurrency and determinism: people are generated in chunks of CHUNK
 * consecutive people by worker threads; each person draws from their own
 * random stream (person index and a salt per feed), and chunks are written
 * strictly in order by the calling thread, so the bytes do not depend on
 * the number of threads or their timing. At most WINDOW chunks are in
 * memory at once. Identifiers that a source system would assign (GP
 * patient ids, hospital numbers, message control ids, client ids, row ids)
 * are keyed hashes of the person and the source: opaque, stable for a
 * seed, and they reveal nothing that would let record linkage cheat.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "synth_int.h"

#define CHUNK 1000
#define WINDOW_PER_THREAD 3

/* ---- the files -------------------------------------------------------------- */
enum {
    F_GP = 0,
    F_ACUTE = F_GP + N_PRACTICES,
    F_COMMUNITY = F_ACUTE + N_ACUTE,
    F_SOCIAL = F_COMMUNITY + N_COMMUNITY,
    F_MENTAL = F_SOCIAL + N_COUNCILS,
    F_PEOPLE = F_MENTAL + N_MENTAL,
    F_RECORDS,
    F_ERRORS,
    N_FILES
};

/* Planted error kinds (errors.csv "error" column). */
enum error_kind {
    ERR_NHS_MISSING, ERR_NHS_MISTYPED, ERR_NAME_TYPO, ERR_NAME_VARIANT, ERR_DOB_TRANSPOSED, ERR_DOB_DAY_OFF,
    ERR_OLD_POSTCODE, ERR_DUPLICATE_RECORD, ERR_LATE, ERR_OUT_OF_ORDER, ERR_MALFORMED, N_ERROR_KINDS
};
static const char *const error_names[N_ERROR_KINDS] = {
    "nhs_missing", "nhs_mistyped", "name_typo", "name_variant", "dob_transposed", "dob_day_off",
    "old_postcode", "duplicate_record", "late_message", "out_of_order", "malformed"};

/* Rates of planted errors per source patient record (or per message/row
 * for the message-level kinds), before the --error-rate multiplier.
 * Modelling assumptions in the range reported for NHS feeds (docs). */
typedef struct error_rates {
    double nhs_missing, nhs_mistyped, name_typo, name_variant, dob, old_postcode, duplicate, late, out_of_order,
        malformed;
} error_rates;
static const error_rates rates_gp = {0.005, 0.003, 0.01, 0.01, 0.003, 0, 0.01, 0, 0, 0};
static const error_rates rates_acute = {0.02, 0.015, 0.02, 0.015, 0.01, 0.5, 0.015, 0.01, 0.003, 0.002};
static const error_rates rates_acute_ae = {0.08, 0.02, 0.03, 0.02, 0.015, 0.5, 0.02, 0.01, 0.003, 0.002};
static const error_rates rates_community = {0.03, 0.015, 0.02, 0.015, 0.01, 0.5, 0.01, 0, 0, 0.001};
static const error_rates rates_social = {0.15, 0.03, 0.03, 0.03, 0.015, 0.5, 0.02, 0, 0, 0.001};
static const error_rates rates_mental = {0.05, 0.02, 0.02, 0.02, 0.01, 0.5, 0.01, 0, 0, 0.001};

/* ---- a chunk of output ---------------------------------------------------------- */
typedef struct chunk_out {
    int64_t first, count;
    buf files[N_FILES];
    synth_summary s;
    int64_t errors[N_ERROR_KINDS];
    int state; /* 0 free, 1 claimed, 2 done */
} chunk_out;

typedef struct feeds_run {
    const synth_world *w;
    int64_t n_chunks, next_chunk, written;
    int window;
    chunk_out *ring;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
} feeds_run;

/* ---- opaque identifiers ------------------------------------------------------------ */
static uint64_t keyed(const synth_world *w, int64_t person, uint64_t salt, uint64_t n) {
    uint64_t x = w->p.seed ^ (uint64_t)person * 0x9E3779B97F4A7C15ULL ^ salt * 0xC2B2AE3D27D4EB4FULL ^
                 n * 0x165667B19E3779F9ULL;
    splitmix64(&x);
    return splitmix64(&x);
}
static void hex_id(char *out, size_t cap, const char *prefix, uint64_t h, int digits) {
    static const char hx[] = "0123456789abcdef";
    size_t n = strlen(prefix);
    if (n + (size_t)digits + 1 > cap) digits = (int)(cap - n - 1);
    memcpy(out, prefix, n);
    for (int i = 0; i < digits; i++) out[n + (size_t)i] = hx[(h >> (4 * (digits - 1 - i))) & 15];
    out[n + (size_t)digits] = 0;
}
static void digit_id(char *out, size_t cap, const char *prefix, uint64_t h, int digits) {
    size_t n = strlen(prefix);
    if (n + (size_t)digits + 1 > cap) digits = (int)(cap - n - 1);
    memcpy(out, prefix, n);
    for (int i = digits - 1; i >= 0; i--) {
        out[n + (size_t)i] = (char)('0' + h % 10);
        h /= 10;
    }
    out[n + (size_t)digits] = 0;
}

/* ---- planted demographic errors ------------------------------------------------------- */
typedef struct source_rec {
    char local_id[32];
    char nhs[12], given[32], family[40], postcode[12], street[48];
    int birth_day;
    unsigned errors; /* bit per error_kind */
} source_rec;

static void typo(rng *r, char *s, size_t cap) {
    size_t n = strlen(s);
    if (n < 3) return;
    size_t i = 1 + (size_t)rng_int(r, (int)n - 2);
    switch (rng_int(r, 4)) {
    case 0: { /* swap adjacent */
        char t = s[i];
        s[i] = s[i + 1 < n ? i + 1 : i - 1];
        s[i + 1 < n ? i + 1 : i - 1] = t;
        break;
    }
    case 1: memmove(s + i, s + i + 1, n - i); break; /* drop */
    case 2:                                         /* double */
        if (n + 1 < cap) {
            memmove(s + i + 1, s + i, n - i + 1);
        }
        break;
    default: { /* a neighbouring letter */
        char c = s[i];
        if (c >= 'a' && c <= 'y') s[i] = (char)(c + 1);
        else if (c == 'z') s[i] = 'y';
        break;
    }
    }
}

static void add_error(chunk_out *c, const char *feed, const char *record, const char *person, int kind,
                      const char *field, const char *truth, const char *given) {
    buf *b = &c->files[F_ERRORS];
    put_str(b, feed);
    put_c(b, ',');
    put_str(b, record);
    put_c(b, ',');
    put_str(b, person);
    put_c(b, ',');
    put_str(b, error_names[kind]);
    put_c(b, ',');
    put_str(b, field ? field : "");
    put_c(b, ',');
    /* values hold no commas or quotes except names like O'Brien: quote all */
    put_c(b, '"');
    put_str(b, truth ? truth : "");
    put_str(b, "\",\"");
    put_str(b, given ? given : "");
    put_str(b, "\"\n");
    c->errors[kind]++;
    c->s.planted_errors++;
}

/* Make the demographics a source system holds for a person, with errors
 * drawn at `rates`; every error is written to errors.csv against `local`. */
static void make_source_rec(const synth_world *w, const synth_person *p, rng *r, const error_rates *rt,
                            int day_seen, int day_updated, chunk_out *c, const char *feed, source_rec *sr) {
    double m = w->p.error_rate;
    demog d;
    demog_true(p, day_updated, &d);
    snprintf(sr->nhs, sizeof sr->nhs, "%s", p->nhs);
    snprintf(sr->given, sizeof sr->given, "%s", p->given);
    snprintf(sr->family, sizeof sr->family, "%s", p->family);
    snprintf(sr->postcode, sizeof sr->postcode, "%s", d.postcode);
    snprintf(sr->street, sizeof sr->street, "%s", d.street);
    sr->birth_day = p->birth_day;
    sr->errors = 0;
    (void)day_seen;
    if (rng_chance(r, rt->nhs_missing * m)) {
        sr->nhs[0] = 0;
        sr->errors |= 1u << ERR_NHS_MISSING;
        add_error(c, feed, sr->local_id, p->id, ERR_NHS_MISSING, "nhs_number", p->nhs, "");
    } else if (rng_chance(r, rt->nhs_mistyped * m)) {
        int i = rng_int(r, 9);
        if (rng_chance(r, 0.5) && sr->nhs[i] != sr->nhs[i + 1]) {
            char t = sr->nhs[i];
            sr->nhs[i] = sr->nhs[i + 1];
            sr->nhs[i + 1] = t;
        } else {
            int k = rng_int(r, 10);
            sr->nhs[k] = (char)('0' + (sr->nhs[k] - '0' + 1 + rng_int(r, 9)) % 10);
        }
        sr->errors |= 1u << ERR_NHS_MISTYPED;
        add_error(c, feed, sr->local_id, p->id, ERR_NHS_MISTYPED, synth_nhs_valid(sr->nhs) ? "nhs_number(valid)"
                                                                                              : "nhs_number(invalid)",
                  p->nhs, sr->nhs);
    }
    if (rng_chance(r, rt->name_variant * m)) {
        for (int i = 0; i < n_nicknames; i++)
            if (strcmp(nicknames[i][0], sr->given) == 0) {
                snprintf(sr->given, sizeof sr->given, "%s", nicknames[i][1]);
                sr->errors |= 1u << ERR_NAME_VARIANT;
                add_error(c, feed, sr->local_id, p->id, ERR_NAME_VARIANT, "given", p->given, sr->given);
                break;
            }
    }
    if (rng_chance(r, rt->name_typo * m)) {
        int fam = rng_chance(r, 0.6);
        char *s = fam ? sr->family : sr->given;
        char before[40];
        snprintf(before, sizeof before, "%s", s);
        typo(r, s, fam ? sizeof sr->family : sizeof sr->given);
        if (strcmp(before, s) != 0) {
            sr->errors |= 1u << ERR_NAME_TYPO;
            add_error(c, feed, sr->local_id, p->id, ERR_NAME_TYPO, fam ? "family" : "given", before, s);
        }
    }
    if (rng_chance(r, rt->dob * m)) {
        int y, mo, dd;
        civil_from_day(p->birth_day, &y, &mo, &dd);
        char t[11], g[11];
        fmt_date(t, p->birth_day);
        if (dd <= 12 && dd != mo) {
            sr->birth_day = day_from_civil(y, dd, mo);
            fmt_date(g, sr->birth_day);
            sr->errors |= 1u << ERR_DOB_TRANSPOSED;
            add_error(c, feed, sr->local_id, p->id, ERR_DOB_TRANSPOSED, "birth_date", t, g);
        } else {
            sr->birth_day = p->birth_day + (rng_chance(r, 0.5) ? 1 : -1);
            fmt_date(g, sr->birth_day);
            sr->errors |= 1u << ERR_DOB_DAY_OFF;
            add_error(c, feed, sr->local_id, p->id, ERR_DOB_DAY_OFF, "birth_date", t, g);
        }
    }
    /* moved after the source last heard of the address: it keeps the old one */
    if (p->move_day && day_updated >= p->move_day && rt->old_postcode > 0 && rng_chance(r, rt->old_postcode)) {
        snprintf(sr->postcode, sizeof sr->postcode, "%s", p->old_postcode);
        snprintf(sr->street, sizeof sr->street, "%s", p->old_street);
        sr->errors |= 1u << ERR_OLD_POSTCODE;
        add_error(c, feed, sr->local_id, p->id, ERR_OLD_POSTCODE, "postcode", p->postcode, sr->postcode);
    }
}

static void add_record(chunk_out *c, const char *feed, const char *record, const char *local, const char *person) {
    buf *b = &c->files[F_RECORDS];
    put_str(b, feed);
    put_c(b, ',');
    put_str(b, record);
    put_c(b, ',');
    put_str(b, local);
    put_c(b, ',');
    put_str(b, person);
    put_c(b, '\n');
    c->s.ground_truth_records++;
}

/* ---- general practice: FHIR ndjson ----------------------------------------------------- */
static void gp_feed(const synth_world *w, const synth_person *p, chunk_out *c) {
    rng r;
    rng_seed(&r, w->p.seed ^ 0x67700001ULL, (uint64_t)p->index + 1);
    int practices[2] = {p->practice, p->practice2};
    for (int k = 0; k < 2; k++) {
        int pr = practices[k];
        if (pr < 0) continue;
        const synth_org *g = &w->practices[pr];
        char feed[32];
        snprintf(feed, sizeof feed, "gp/%s", g->code);
        int copies = 1 + (rng_chance(&r, rates_gp.duplicate * w->p.error_rate) ? 1 : 0);
        for (int dup = 0; dup < copies; dup++) {
            source_rec sr;
            hex_id(sr.local_id, sizeof sr.local_id, "", keyed(w, p->index, 0x6770 + (uint64_t)pr, (uint64_t)dup), 16);
            make_source_rec(w, p, &r, dup ? &(error_rates){0.05, 0.02, 0.1, 0.1, 0.05, 0, 0, 0, 0, 0} : &rates_gp,
                            w->end_day, k == 0 && p->practice2 >= 0 ? p->change_day - 1 : w->end_day, c, feed, &sr);
            if (dup) add_error(c, feed, sr.local_id, p->id, ERR_DUPLICATE_RECORD, "registration", "", "");
            buf *b = &c->files[F_GP + pr];
            put_str(b, "{\"resourceType\":\"Patient\",\"id\":\"");
            put_str(b, sr.local_id);
            put_c(b, '"');
            demog d = {sr.nhs, sr.given, sr.family, sr.postcode, sr.street, sr.birth_day};
            fhir_patient(b, w, p, sr.local_id, &d, pr, SET_PRIMARY, g->code);
            put_str(b, "}\n");
            c->s.gp_resources++;
            add_record(c, feed, sr.local_id, sr.local_id, p->id);
            /* a duplicate registration is a thin record: demographics only */
            if (!dup) c->s.gp_resources += fhir_gp_clinical(b, w, p, sr.local_id, pr);
        }
    }
}

/* ---- hospitals: HL7 v2.4 over MLLP ------------------------------------------------------- */
typedef struct seg {
    buf *b;
    int field;
} seg;

static void hl7_escaped(buf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '|': put_str(b, "\\F\\"); break;
        case '^': put_str(b, "\\S\\"); break;
        case '&': put_str(b, "\\T\\"); break;
        case '~': put_str(b, "\\R\\"); break;
        case '\\': put_str(b, "\\E\\"); break;
        default: put_c(b, *s);
        }
    }
}
static void seg_begin(seg *s, buf *b, const char *id) {
    s->b = b;
    s->field = 0;
    put_str(b, id);
}
/* move to field n (adding separators); the caller then appends its value */
static buf *fld(seg *s, int n) {
    while (s->field < n) {
        put_c(s->b, '|');
        s->field++;
    }
    return s->b;
}
static void seg_end(seg *s) { put_c(s->b, '\r'); }

static void put_ts(buf *b, int day, int minute) {
    char d[11];
    fmt_date(d, day);
    buf_append(b, d, 4);
    buf_append(b, d + 5, 2);
    buf_append(b, d + 8, 2);
    if (minute >= 0) {
        if (minute > 1439) minute = 1439;
        char t[5] = {(char)('0' + minute / 600), (char)('0' + minute / 60 % 10), (char)('0' + minute % 60 / 10),
                     (char)('0' + minute % 10), 0};
        buf_append(b, t, 4);
    }
}

typedef struct hl7_ctx {
    const synth_world *w;
    const synth_person *p;
    chunk_out *c;
    int hosp;
    const synth_org *h;
    char feed[32];
    source_rec sr;
    char mrn_now[32]; /* the hospital number in use (a duplicate record has its own) */
    rng *r;
    int n_msg;
    buf held; /* a late message waiting to be delivered after the next one */
    char held_id[40];
    int has_held;
} hl7_ctx;

static void msh(hl7_ctx *x, buf *b, const char *type, const char *trigger, const char *structure, int day, int minute,
                const char *ctrl, int omit_control) {
    seg s;
    seg_begin(&s, b, "MSH");
    put_str(b, "|^~\\&");
    s.field = 2;
    put_str(fld(&s, 3), "PAS");
    put_str(fld(&s, 4), x->h->code);
    put_str(fld(&s, 5), "CONCORD");
    put_str(fld(&s, 6), "NWLICS");
    put_ts(fld(&s, 7), day, minute);
    fld(&s, 9);
    put_str(b, type);
    put_c(b, '^');
    put_str(b, trigger);
    put_c(b, '^');
    put_str(b, structure);
    if (!omit_control) put_str(fld(&s, 10), ctrl);
    put_str(fld(&s, 11), "P");
    put_str(fld(&s, 12), "2.4");
    put_str(fld(&s, 15), "AL");
    put_str(fld(&s, 16), "NE");
    put_str(fld(&s, 17), "GBR");
    put_str(fld(&s, 18), "UNICODE UTF-8");
    seg_end(&s);
}

static void pid_segment(hl7_ctx *x, buf *b, int bad_date) {
    const synth_person *p = x->p;
    const source_rec *sr = &x->sr;
    seg s;
    seg_begin(&s, b, "PID");
    put_str(fld(&s, 1), "1");
    fld(&s, 3);
    if (sr->nhs[0]) {
        put_str(b, sr->nhs);
        put_str(b, "^^^NHS^NH~");
    }
    put_str(b, x->mrn_now);
    put_c(b, '^');
    put_str(b, "^^");
    put_str(b, x->h->code);
    put_str(b, "^MR");
    fld(&s, 5);
    char fam[40];
    snprintf(fam, sizeof fam, "%s", sr->family);
    for (char *q = fam; *q; q++)
        if (*q >= 'a' && *q <= 'z') *q = (char)(*q - 32); /* PAS systems shout surnames */
    hl7_escaped(b, fam);
    put_c(b, '^');
    hl7_escaped(b, sr->given);
    put_str(b, "^^^");
    put_str(b, p->title);
    if (bad_date) put_str(fld(&s, 7), "19XX0231");
    else put_ts(fld(&s, 7), sr->birth_day, -1);
    put_str(fld(&s, 8), p->female ? "F" : "M");
    fld(&s, 11);
    hl7_escaped(b, sr->street);
    put_str(b, "^^London^^");
    put_str(b, sr->postcode);
    put_str(b, "^GBR^H");
    fld(&s, 13);
    put_str(b, p->phone);
    put_str(b, "^PRN^CP");
    fld(&s, 22);
    put_str(b, ethnicities[p->ethnicity].code);
    put_str(b, "^");
    put_str(b, ethnicities[p->ethnicity].display);
    put_str(b, "^NHS Ethnic Category");
    if (p->death_day) {
        put_ts(fld(&s, 29), p->death_day, -1);
        put_str(fld(&s, 30), "Y");
    }
    seg_end(&s);
}

static void pd1_segment(hl7_ctx *x, buf *b, int day) {
    const synth_org *g = person_practice_org(x->w, x->p, day);
    seg s;
    seg_begin(&s, b, "PD1");
    fld(&s, 3);
    hl7_escaped(b, g->name);
    put_str(b, "^^");
    put_str(b, g->code);
    fld(&s, 4);
    put_str(b, "G9");
    put_str(b, g->code + 1);
    put_str(b, "1^");
    put_str(b, "PRACTICE^GP");
    seg_end(&s);
}

static void pv1_segment(hl7_ctx *x, buf *b, const synth_event *e, const char *cls, const char *method, int discharged) {
    seg s;
    seg_begin(&s, b, "PV1");
    put_str(fld(&s, 1), "1");
    put_str(fld(&s, 2), cls);
    fld(&s, 3);
    if (cls[0] == 'I') {
        static const char *const wards[] = {"AMU", "WARD1", "WARD2", "CARD", "RESP", "ELDERLY", "SURG"};
        put_str(b, wards[(e->seq + e->day) % 7]);
        put_c(b, '^');
        put_int(b, 1 + (e->day + e->minute) % 12);
        put_str(b, "^");
        put_int(b, 1 + (e->minute) % 28);
        put_c(b, '^');
        put_str(b, x->h->code);
    } else {
        put_str(b, cls[0] == 'E' ? "ED" : "OPD");
        put_str(b, "^^^");
        put_str(b, x->h->code);
    }
    if (method) put_str(fld(&s, 4), method);
    fld(&s, 7);
    put_str(b, "C");
    put_int(b, 1000000 + (long long)((x->hosp * 97 + e->code * 13) % 900) * 1000 + x->hosp);
    put_str(b, "^CONSULTANT^A^^^Dr");
    const char *tfc = "300";
    if (e->kind == EV_OUTPATIENT) tfc = specialties[e->code].code;
    else if (e->kind == EV_AE) tfc = "180";
    else if (e->kind == EV_ELECTIVE) tfc = specialties[electives[e->code].specialty].code;
    put_str(fld(&s, 10), tfc);
    fld(&s, 19);
    char visit[32];
    digit_id(visit, sizeof visit, "V", keyed(x->w, x->p->index, 0x7601 + (uint64_t)x->hosp, (uint64_t)(e - x->p->events)),
             10);
    put_str(b, visit);
    if (discharged) put_str(fld(&s, 36), (e->flags & EVF_DIED) ? "79" : "19");
    /* fields only move forward: PV1-44 (admit) before PV1-45 (discharge) */
    put_ts(fld(&s, 44), e->day, e->minute);
    if (discharged) put_ts(fld(&s, 45), e->end_day, e->end_minute);
    seg_end(&s);
}

static void dg1_segment(buf *b, int n, const char *code, const char *display, int day, const char *type) {
    seg s;
    seg_begin(&s, b, "DG1");
    put_int(fld(&s, 1), n);
    fld(&s, 3);
    put_str(b, code);
    put_c(b, '^');
    hl7_escaped(b, display);
    put_str(b, "^I10");
    put_ts(fld(&s, 5), day, -1);
    put_str(fld(&s, 6), type);
    seg_end(&s);
}

/* Deliver a finished message (in `m`) to the hospital's stream: MLLP frame,
 * ground truth, planted late delivery and malformation. */
static void deliver(hl7_ctx *x, buf *m, const char *ctrl) {
    chunk_out *c = x->c;
    buf *out = &c->files[F_ACUTE + x->hosp];
    add_record(c, x->feed, ctrl, x->mrn_now, x->p->id);
    c->s.hl7_messages++;
    if (x->has_held) { /* the previous message was late: it goes after this one */
        put_c(out, 0x0B);
        buf_append(out, m->p, m->len);
        put_c(out, 0x1C);
        put_c(out, 0x0D);
        put_c(out, 0x0B);
        buf_append(out, x->held.p, x->held.len);
        put_c(out, 0x1C);
        put_c(out, 0x0D);
        x->has_held = 0;
        buf_reset(&x->held);
        return;
    }
    if (rng_chance(x->r, rates_acute.late * x->w->p.error_rate)) {
        buf_reset(&x->held);
        buf_append(&x->held, m->p, m->len);
        snprintf(x->held_id, sizeof x->held_id, "%s", ctrl);
        x->has_held = 1;
        add_error(c, x->feed, ctrl, x->p->id, ERR_LATE, "MSH-7", "", "delivered after the next message");
        return;
    }
    put_c(out, 0x0B);
    buf_append(out, m->p, m->len);
    put_c(out, 0x1C);
    put_c(out, 0x0D);
}

static void flush_held(hl7_ctx *x) {
    if (!x->has_held) return;
    buf *out = &x->c->files[F_ACUTE + x->hosp];
    put_c(out, 0x0B);
    buf_append(out, x->held.p, x->held.len);
    put_c(out, 0x1C);
    put_c(out, 0x0D);
    x->has_held = 0;
    buf_reset(&x->held);
}

typedef struct msg_plan {
    const char *type, *trigger, *structure, *evn;
    const synth_event *e;
    int day, minute;
    int discharge; /* PV1-36/45 and discharge diagnoses */
    int update;    /* A08: adds a working diagnosis */
    const char *cls, *method;
} msg_plan;

static void build_adt(hl7_ctx *x, const msg_plan *mp, buf *m, char *ctrl, size_t ctrl_cap) {
    hex_id(ctrl, ctrl_cap, x->h->code, keyed(x->w, x->p->index, 0xADD0 + (uint64_t)x->hosp, (uint64_t)x->n_msg++), 16);
    double mal = rates_acute.malformed * x->w->p.error_rate;
    int malformed = rng_chance(x->r, mal) ? 1 + rng_int(x->r, 3) : 0; /* 1 no MSH-10, 2 bad date, 3 truncated */
    buf_reset(m);
    msh(x, m, "ADT", mp->trigger, mp->structure, mp->day, mp->minute, ctrl, malformed == 1);
    seg s;
    seg_begin(&s, m, "EVN");
    put_str(fld(&s, 1), mp->evn);
    put_ts(fld(&s, 2), mp->day, mp->minute);
    put_ts(fld(&s, 6), mp->day, mp->minute);
    seg_end(&s);
    pid_segment(x, m, malformed == 2);
    pd1_segment(x, m, mp->day);
    if (mp->e) {
        pv1_segment(x, m, mp->e, mp->cls, mp->method, mp->discharge);
        const synth_event *e = mp->e;
        if (e->kind == EV_NEL && (mp->discharge || mp->update)) {
            const admission_reason *a = &nel_reasons[e->code];
            dg1_segment(m, 1, a->icd10, a->display, e->day, mp->discharge ? "F" : "W");
            int n = 2;
            if (mp->discharge)
                for (int c = 0; c < N_CONDITIONS && n < 8; c++)
                    if (x->p->onset[c] && x->p->onset[c] <= e->day && strcmp(conditions[c].icd10, a->icd10) != 0)
                        dg1_segment(m, n++, conditions[c].icd10, conditions[c].icd10_display, e->day, "F");
        }
        if (e->kind == EV_ELECTIVE && mp->discharge) {
            const elective_def *el = &electives[e->code];
            dg1_segment(m, 1, el->icd10, el->icd10_display, e->day, "F");
            seg_begin(&s, m, "PR1");
            put_str(fld(&s, 1), "1");
            fld(&s, 3);
            put_str(m, el->opcs);
            put_c(m, '^');
            hl7_escaped(m, el->opcs_display);
            put_str(m, "^OPCS4");
            put_ts(fld(&s, 5), e->day, e->minute + 90);
            seg_end(&s);
        }
    }
    if (malformed == 3) { /* cut off mid-message, as a broken interface would */
        m->len = m->len * 2 / 3;
        m->p[m->len] = 0;
    }
    if (malformed)
        add_error(x->c, x->feed, ctrl, x->p->id, ERR_MALFORMED,
                  malformed == 1 ? "MSH-10" : malformed == 2 ? "PID-7" : "truncated", "",
                  malformed == 1 ? "missing control id" : malformed == 2 ? "19XX0231" : "message cut short");
}

static void send_adt(hl7_ctx *x, const msg_plan *mp, buf *m) {
    char ctrl[40];
    build_adt(x, mp, m, ctrl, sizeof ctrl);
    deliver(x, m, ctrl);
}

static void send_oru(hl7_ctx *x, const synth_event *e, buf *m, int day, int minute) {
    char ctrl[40];
    hex_id(ctrl, sizeof ctrl, x->h->code, keyed(x->w, x->p->index, 0xADD0 + (uint64_t)x->hosp, (uint64_t)x->n_msg++),
           16);
    buf_reset(m);
    msh(x, m, "ORU", "R01", "ORU_R01", day, minute + 90, ctrl, 0);
    pid_segment(x, m, 0);
    pv1_segment(x, m, e, "I", NULL, 0);
    static const struct {
        const char *code, *name;
        int first, n;
    } panels[] = {{"UE", "Urea and electrolytes", 0, 3}, {"FBC", "Full blood count", 3, 2}, {"CRP", "C reactive protein", 5, 1}};
    int obx = 1;
    for (int pnl = 0; pnl < 3; pnl++) {
        if (pnl == 2 && !rng_chance(x->r, 0.6)) continue;
        char placer[32];
        digit_id(placer, sizeof placer, "ORD", keyed(x->w, x->p->index, 0x0BE0 + (uint64_t)pnl, (uint64_t)x->n_msg), 9);
        seg s;
        seg_begin(&s, m, "ORC");
        put_str(fld(&s, 1), "RE");
        put_str(fld(&s, 2), placer);
        seg_end(&s);
        seg_begin(&s, m, "OBR");
        put_int(fld(&s, 1), pnl + 1);
        put_str(fld(&s, 2), placer);
        fld(&s, 4);
        put_str(m, panels[pnl].code);
        put_c(m, '^');
        put_str(m, panels[pnl].name);
        put_str(m, "^L");
        put_ts(fld(&s, 7), day, minute);
        put_str(fld(&s, 25), "F");
        seg_end(&s);
        for (int k = panels[pnl].first; k < panels[pnl].first + panels[pnl].n; k++) {
            const lab_def *l = &lab_tests[k];
            double v = l->mean + l->sd * rng_normal(x->r);
            if (v < l->mean * 0.15) v = l->mean * 0.15;
            seg_begin(&s, m, "OBX");
            put_int(fld(&s, 1), obx++);
            put_str(fld(&s, 2), "NM");
            fld(&s, 3);
            put_str(m, l->loinc);
            put_c(m, '^');
            hl7_escaped(m, l->display);
            put_str(m, "^LN");
            put_fixed(fld(&s, 5), v, l->decimals);
            put_str(fld(&s, 6), l->unit);
            fld(&s, 7);
            put_fixed(m, l->lo, l->decimals);
            put_c(m, '-');
            put_fixed(m, l->hi, l->decimals);
            put_str(fld(&s, 8), v < l->lo ? "L" : v > l->hi ? "H" : "N");
            put_str(fld(&s, 11), "F");
            put_ts(fld(&s, 14), day, minute);
            seg_end(&s);
        }
    }
    deliver(x, m, ctrl);
}

static void acute_feed(const synth_world *w, const synth_person *p, chunk_out *c, buf *m) {
    for (int hosp = 0; hosp < N_ACUTE; hosp++) {
        int first = -1;
        for (int k = 0; k < p->n_events; k++) {
            int kd = p->events[k].kind;
            if ((kd == EV_AE || kd == EV_NEL || kd == EV_ELECTIVE || kd == EV_OUTPATIENT) && p->events[k].org == hosp) {
                first = k;
                break;
            }
        }
        if (first < 0) continue;
        rng r;
        rng_seed(&r, w->p.seed ^ 0xAC0000ULL ^ (uint64_t)hosp, (uint64_t)p->index + 1);
        hl7_ctx x = {.w = w, .p = p, .c = c, .hosp = hosp, .h = &w->acutes[hosp], .r = &r};
        snprintf(x.feed, sizeof x.feed, "acute/%s", x.h->code);
        digit_id(x.sr.local_id, sizeof x.sr.local_id, x.h->code, keyed(w, p->index, 0x3300 + (uint64_t)hosp, 0), 8);
        const synth_event *fe = &p->events[first];
        int last_day = fe->day;
        for (int k = first; k < p->n_events; k++)
            if (p->events[k].org == hosp && p->events[k].kind >= EV_AE && p->events[k].kind <= EV_OUTPATIENT)
                last_day = p->events[k].day;
        make_source_rec(w, p, &r, fe->kind == EV_AE ? &rates_acute_ae : &rates_acute, fe->day, last_day, c, x.feed,
                        &x.sr);
        snprintf(x.mrn_now, sizeof x.mrn_now, "%s", x.sr.local_id);
        /* a duplicate hospital record: a second number from some contact on,
         * later merged (A40) or not */
        int dup_from = -1, merge = 0;
        char dup_mrn[32] = "";
        if (rng_chance(&r, rates_acute.duplicate * w->p.error_rate)) {
            dup_from = first + 1 + rng_int(&r, p->n_events - first);
            digit_id(dup_mrn, sizeof dup_mrn, x.h->code, keyed(w, p->index, 0x3300 + (uint64_t)hosp, 1), 8);
            merge = rng_chance(&r, 0.6);
            add_error(c, x.feed, dup_mrn, p->id, ERR_DUPLICATE_RECORD, "hospital_number", x.sr.local_id, dup_mrn);
        }
        int moved_told = 0;
        msg_plan a28 = {"ADT", "A28", "ADT_A05", "A28", NULL, fe->day, fe->minute > 5 ? fe->minute - 5 : 0, 0, 0, NULL,
                        NULL};
        send_adt(&x, &a28, m);
        for (int k = first; k < p->n_events; k++) {
            const synth_event *e = &p->events[k];
            if (e->org != hosp || e->kind < EV_AE || e->kind > EV_OUTPATIENT) continue;
            if (dup_from >= 0 && k >= dup_from && strcmp(x.mrn_now, dup_mrn) != 0) {
                snprintf(x.mrn_now, sizeof x.mrn_now, "%s", dup_mrn);
                msg_plan a = {"ADT", "A28", "ADT_A05", "A28", NULL, e->day, e->minute > 5 ? e->minute - 5 : 0, 0, 0,
                              NULL, NULL};
                send_adt(&x, &a, m);
            }
            /* tell the hospital about a change of address, sometimes */
            if (!moved_told && p->move_day && e->day > p->move_day && !(x.sr.errors & (1u << ERR_OLD_POSTCODE))) {
                moved_told = 1;
                msg_plan a = {"ADT", "A31", "ADT_A05", "A31", NULL, e->day, e->minute > 2 ? e->minute - 2 : 0, 0, 0,
                              NULL, NULL};
                send_adt(&x, &a, m);
            }
            switch (e->kind) {
            case EV_AE: {
                msg_plan a04 = {"ADT", "A04", "ADT_A01", "A04", e, e->day, e->minute, 0, 0, "E", NULL};
                send_adt(&x, &a04, m);
                if (!(e->flags & EVF_ADMITTED)) {
                    msg_plan a03 = {"ADT", "A03", "ADT_A03", "A03", e, e->end_day, e->end_minute, 1, 0, "E", NULL};
                    send_adt(&x, &a03, m);
                }
                c->s.ae++;
                break;
            }
            case EV_NEL:
            case EV_ELECTIVE: {
                int nel = e->kind == EV_NEL;
                const char *method = nel ? ((e->flags & EVF_VIA_AE) ? "21" : "22") : "11";
                msg_plan a01 = {"ADT", "A01", "ADT_A01", "A01", e, e->day, e->minute, 0, 0, "I", method};
                /* out of order: the discharge arrives before the admission */
                int swap = nel && rng_chance(&r, rates_acute.out_of_order * w->p.error_rate);
                msg_plan a03 = {"ADT", "A03", "ADT_A03", "A03", e, e->end_day, e->end_minute, 1, 0, "I", method};
                if (swap) {
                    char ctrl[40];
                    build_adt(&x, &a03, m, ctrl, sizeof ctrl);
                    add_error(c, x.feed, ctrl, p->id, ERR_OUT_OF_ORDER, "A03", "", "discharge sent before admission");
                    deliver(&x, m, ctrl);
                    send_adt(&x, &a01, m);
                    break;
                }
                send_adt(&x, &a01, m);
                if (rng_chance(&r, 0.01)) { /* admitted in error, cancelled, admitted again */
                    msg_plan a11 = {"ADT", "A11", "ADT_A09", "A11", e, e->day, e->minute + 10, 0, 0, "I", method};
                    send_adt(&x, &a11, m);
                    msg_plan again = a01;
                    again.minute = e->minute + 15;
                    send_adt(&x, &again, m);
                }
                if (nel && rng_chance(&r, 0.4)) {
                    msg_plan a08 = {"ADT", "A08", "ADT_A01", "A08", e, e->day, e->minute + 120, 0, 1, "I", method};
                    send_adt(&x, &a08, m);
                }
                if (nel) send_oru(&x, e, m, e->day, e->minute + 60);
                if (e->flags & EVF_TRANSFER) {
                    int tday = e->day + (e->end_day - e->day) / 2;
                    msg_plan a02 = {"ADT", "A02", "ADT_A02", "A02", e, tday, 700, 0, 0, "I", method};
                    send_adt(&x, &a02, m);
                }
                if (nel && e->end_day - e->day >= 3 && rng_chance(&r, 0.5)) send_oru(&x, e, m, e->day + 2, 480);
                send_adt(&x, &a03, m);
                if (rng_chance(&r, 0.005)) { /* discharge cancelled, then discharged again */
                    msg_plan a13 = {"ADT", "A13", "ADT_A01", "A13", e, e->end_day, e->end_minute + 5, 0, 0, "I", method};
                    send_adt(&x, &a13, m);
                    msg_plan again = a03;
                    again.minute = e->end_minute + 30;
                    send_adt(&x, &again, m);
                }
                if (nel) c->s.nel++;
                else c->s.elective++;
                if (e->flags & EVF_READMIT) c->s.readmissions++;
                break;
            }
            case EV_OUTPATIENT: {
                msg_plan a04 = {"ADT", "A04", "ADT_A01", "A04", e, e->day, e->minute, 0, 0, "O", NULL};
                send_adt(&x, &a04, m);
                c->s.outpatient++;
                break;
            }
            default: break;
            }
        }
        if (dup_from >= 0 && merge && strcmp(x.mrn_now, dup_mrn) == 0) {
            /* A40: merge the duplicate into the original number */
            char ctrl[40];
            msg_plan a40 = {"ADT", "A40", "ADT_A39", "A40", NULL, last_day + 1 <= w->end_day ? last_day + 1 : last_day,
                            600, 0, 0, NULL, NULL};
            snprintf(x.mrn_now, sizeof x.mrn_now, "%s", x.sr.local_id);
            build_adt(&x, &a40, m, ctrl, sizeof ctrl);
            seg s;
            seg_begin(&s, m, "MRG");
            fld(&s, 1);
            put_str(m, dup_mrn);
            put_str(m, "^^^");
            put_str(m, x.h->code);
            put_str(m, "^MR");
            seg_end(&s);
            deliver(&x, m, ctrl);
        }
        flush_held(&x);
        buf_free(&x.held);
    }
}

/* ---- CSV extracts: each provider its own layout (data) ------------------------------- */
enum csv_field {
    CF_ROW, CF_CLIENT, CF_NHS, CF_FAMILY, CF_GIVEN, CF_FULLNAME, CF_DOB, CF_SEX, CF_POSTCODE, CF_ADDRESS,
    CF_PRACTICE, CF_ETHNIC, CF_DATE, CF_TIME, CF_DATETIME, CF_END, CF_SERVICE, CF_SERVICE_NAME, CF_DURATION,
    CF_HOURS, CF_COST, CF_CARE_HOME, CF_CONTACT_TYPE
};
enum date_style { DS_ISO, DS_DMY, DS_COMPACT };
enum sex_style { SX_MF, SX_12, SX_WORD };

typedef struct csv_layout {
    const char *org;
    char delim;
    int date_style, sex_style;
    int n;
    struct {
        const char *header;
        int field;
    } cols[16];
} csv_layout;

static const csv_layout community_layouts[N_COMMUNITY] = {
    {"ZC1", ',', DS_ISO, SX_MF, 14,
     {{"contact_id", CF_ROW}, {"patient_id", CF_CLIENT}, {"nhs_number", CF_NHS}, {"surname", CF_FAMILY},
      {"forename", CF_GIVEN}, {"date_of_birth", CF_DOB}, {"gender", CF_SEX}, {"postcode", CF_POSTCODE},
      {"gp_practice_code", CF_PRACTICE}, {"contact_date", CF_DATE}, {"contact_time", CF_TIME},
      {"service", CF_SERVICE}, {"service_description", CF_SERVICE_NAME}, {"duration_minutes", CF_DURATION}}},
    {"ZC2", '|', DS_DMY, SX_12, 10,
     {{"ContactRef", CF_ROW}, {"ClientNo", CF_CLIENT}, {"NHSNo", CF_NHS}, {"PatientName", CF_FULLNAME},
      {"DOB", CF_DOB}, {"Sex", CF_SEX}, {"PostCode", CF_POSTCODE}, {"VisitDateTime", CF_DATETIME},
      {"ServiceCode", CF_SERVICE}, {"Duration", CF_DURATION}}},
    {"ZC3", ',', DS_COMPACT, SX_WORD, 12,
     {{"id", CF_ROW}, {"visit_date", CF_DATE}, {"client_nhs", CF_NHS}, {"client_id", CF_CLIENT},
      {"family_name", CF_FAMILY}, {"given_name", CF_GIVEN}, {"birth_date", CF_DOB}, {"gender", CF_SEX},
      {"post_code", CF_POSTCODE}, {"address_line", CF_ADDRESS}, {"activity", CF_SERVICE},
      {"activity_desc", CF_SERVICE_NAME}}},
};
static const csv_layout social_layouts[N_COUNCILS] = {
    {"ZL1", ',', DS_DMY, SX_MF, 12,
     {{"person_ref", CF_CLIENT}, {"nhs_no", CF_NHS}, {"surname", CF_FAMILY}, {"forename", CF_GIVEN},
      {"dob", CF_DOB}, {"gender", CF_SEX}, {"postcode", CF_POSTCODE}, {"service_type", CF_SERVICE},
      {"service_start", CF_DATE}, {"service_end", CF_END}, {"hours_per_week", CF_HOURS}, {"weekly_cost", CF_COST}}},
    {"ZL2", ',', DS_ISO, SX_12, 12,
     {{"RecordID", CF_ROW}, {"ClientID", CF_CLIENT}, {"NHSNumber", CF_NHS}, {"Name", CF_FULLNAME},
      {"DateOfBirth", CF_DOB}, {"Sex", CF_SEX}, {"Address", CF_ADDRESS}, {"Postcode", CF_POSTCODE},
      {"ServiceCode", CF_SERVICE}, {"Start", CF_DATE}, {"End", CF_END}, {"PlannedHours", CF_HOURS}}},
    {"ZL3", '|', DS_COMPACT, SX_WORD, 12,
     {{"case_id", CF_ROW}, {"client_id", CF_CLIENT}, {"nhs", CF_NHS}, {"last_name", CF_FAMILY},
      {"first_name", CF_GIVEN}, {"birth", CF_DOB}, {"sex", CF_SEX}, {"post_code", CF_POSTCODE},
      {"service", CF_SERVICE_NAME}, {"start", CF_DATE}, {"end", CF_END}, {"cost", CF_COST}}},
    {"ZL4", ',', DS_DMY, SX_MF, 11,
     {{"LAS_ID", CF_CLIENT}, {"EVENT_ID", CF_ROW}, {"NHS_NUMBER", CF_NHS}, {"FULL_NAME", CF_FULLNAME},
      {"DOB", CF_DOB}, {"GENDER", CF_SEX}, {"POSTCODE", CF_POSTCODE}, {"SERVICE", CF_SERVICE},
      {"START_DATE", CF_DATE}, {"END_DATE", CF_END}, {"CARE_HOME", CF_CARE_HOME}}},
    {"ZL5", ',', DS_ISO, SX_MF, 12,
     {{"record", CF_ROW}, {"client", CF_CLIENT}, {"nhs_number", CF_NHS}, {"surname", CF_FAMILY},
      {"forenames", CF_GIVEN}, {"dob", CF_DOB}, {"sex", CF_SEX}, {"postcode", CF_POSTCODE},
      {"package_type", CF_SERVICE}, {"package_start", CF_DATE}, {"package_end", CF_END}, {"hours", CF_HOURS}}},
};
static const csv_layout mental_layout = {
    "ZM1", ',', DS_ISO, SX_MF, 14,
    {{"contact_id", CF_ROW}, {"mh_id", CF_CLIENT}, {"nhs_number", CF_NHS}, {"surname", CF_FAMILY},
     {"forename", CF_GIVEN}, {"date_of_birth", CF_DOB}, {"gender", CF_SEX}, {"ethnicity", CF_ETHNIC},
     {"postcode", CF_POSTCODE}, {"team", CF_SERVICE}, {"team_name", CF_SERVICE_NAME}, {"contact_date", CF_DATE},
     {"contact_time", CF_TIME}, {"contact_type", CF_CONTACT_TYPE}}};

static void csv_header(buf *b, const csv_layout *l) {
    for (int i = 0; i < l->n; i++) {
        if (i) put_c(b, l->delim);
        put_str(b, l->cols[i].header);
    }
    put_c(b, '\n');
}

static void csv_date(buf *b, int style, int day) {
    char d[11];
    fmt_date(d, day);
    switch (style) {
    case DS_DMY:
        buf_append(b, d + 8, 2);
        put_c(b, '/');
        buf_append(b, d + 5, 2);
        put_c(b, '/');
        buf_append(b, d, 4);
        break;
    case DS_COMPACT:
        buf_append(b, d, 4);
        buf_append(b, d + 5, 2);
        buf_append(b, d + 8, 2);
        break;
    default: buf_append(b, d, 10);
    }
}

static void csv_text(buf *b, char delim, const char *s) {
    if (strchr(s, delim) || strchr(s, '"')) {
        put_c(b, '"');
        for (; *s; s++) {
            if (*s == '"') put_c(b, '"');
            put_c(b, *s);
        }
        put_c(b, '"');
    } else {
        put_str(b, s);
    }
}

typedef struct csv_row {
    const char *row_id;
    const source_rec *sr;
    const synth_person *p;
    const synth_org *practice;
    const synth_event *e;
    const code_def *svc;
    int malformed;
    int history_end;
} csv_row;

static void csv_write(buf *b, const csv_layout *l, const csv_row *r) {
    const synth_event *e = r->e;
    for (int i = 0; i < l->n; i++) {
        if (i) put_c(b, l->delim);
        char t[96];
        switch (l->cols[i].field) {
        case CF_ROW: put_str(b, r->row_id); break;
        case CF_CLIENT: put_str(b, r->sr->local_id); break;
        case CF_NHS: put_str(b, r->sr->nhs); break;
        case CF_FAMILY: csv_text(b, l->delim, r->sr->family); break;
        case CF_GIVEN: csv_text(b, l->delim, r->sr->given); break;
        case CF_FULLNAME: {
            snprintf(t, sizeof t, "%s, %s", r->sr->family, r->sr->given);
            for (char *q = t; *q && *q != ','; q++)
                if (*q >= 'a' && *q <= 'z') *q = (char)(*q - 32);
            csv_text(b, l->delim, t);
            break;
        }
        case CF_DOB:
            if (r->malformed) put_str(b, "31/02/19X5");
            else csv_date(b, l->date_style, r->sr->birth_day);
            break;
        case CF_SEX:
            put_str(b, l->sex_style == SX_12 ? (r->p->female ? "2" : "1")
                       : l->sex_style == SX_WORD ? (r->p->female ? "Female" : "Male")
                                                  : (r->p->female ? "F" : "M"));
            break;
        case CF_POSTCODE: put_str(b, r->sr->postcode); break;
        case CF_ADDRESS: csv_text(b, l->delim, r->sr->street); break;
        case CF_PRACTICE: put_str(b, r->practice->code); break;
        case CF_ETHNIC: put_str(b, ethnicities[r->p->ethnicity].code); break;
        case CF_DATE: csv_date(b, l->date_style, e->day); break;
        case CF_TIME:
            snprintf(t, sizeof t, "%02d:%02d", e->minute / 60 % 24, e->minute % 60);
            put_str(b, t);
            break;
        case CF_DATETIME:
            csv_date(b, l->date_style, e->day);
            snprintf(t, sizeof t, " %02d:%02d", e->minute / 60 % 24, e->minute % 60);
            put_str(b, t);
            break;
        case CF_END: {
            /* blank while the service continues at the end of the history */
            int end = e->kind == EV_CARE_HOME ? r->p->end_day : e->end_day;
            if (end > r->p->end_day) end = r->p->end_day;
            if (end <= r->history_end) csv_date(b, l->date_style, end);
            break;
        }
        case CF_SERVICE: put_str(b, r->svc->code); break;
        case CF_SERVICE_NAME: csv_text(b, l->delim, r->svc->display); break;
        case CF_DURATION: put_int(b, 15 + (e->minute * 7 + e->day) % 46); break;
        case CF_HOURS: put_int(b, e->extra); break;
        case CF_COST: put_fixed(b, e->kind == EV_CARE_HOME ? (e->code == 7 ? 1350 : 1050) : e->extra * 24.5, 2); break;
        case CF_CARE_HOME: put_str(b, e->kind == EV_CARE_HOME ? "Y" : "N"); break;
        case CF_CONTACT_TYPE: put_str(b, (e->day + e->minute) % 4 == 0 ? "Telephone" : "Face to face"); break;
        }
    }
    put_c(b, '\n');
}

static void csv_feeds(const synth_world *w, const synth_person *p, chunk_out *c) {
    /* community providers, councils, the mental health trust */
    static const struct {
        int kind_a, kind_b, file0, n_orgs;
        const char *dir;
        const error_rates *rates;
        uint64_t salt;
    } feeds[] = {
        {EV_COMMUNITY, -1, F_COMMUNITY, N_COMMUNITY, "community", &rates_community, 0xC0},
        {EV_SOCIAL_PACKAGE, EV_CARE_HOME, F_SOCIAL, N_COUNCILS, "social_care", &rates_social, 0x50},
        {EV_MH_CONTACT, -1, F_MENTAL, N_MENTAL, "mental_health", &rates_mental, 0x30},
    };
    for (size_t f = 0; f < sizeof feeds / sizeof feeds[0]; f++) {
        for (int org = 0; org < feeds[f].n_orgs; org++) {
            int first = -1, last_day = 0;
            for (int k = 0; k < p->n_events; k++) {
                const synth_event *e = &p->events[k];
                if ((e->kind == feeds[f].kind_a || e->kind == feeds[f].kind_b) && e->org == org) {
                    if (first < 0) first = k;
                    last_day = e->day;
                }
            }
            if (first < 0) continue;
            const csv_layout *l = f == 0 ? &community_layouts[org] : f == 1 ? &social_layouts[org] : &mental_layout;
            const synth_org *g = f == 0 ? &w->communities[org] : f == 1 ? &w->councils[org] : &w->mental[0];
            rng r;
            rng_seed(&r, w->p.seed ^ (feeds[f].salt << 16) ^ (uint64_t)org, (uint64_t)p->index + 1);
            char feed[40];
            snprintf(feed, sizeof feed, "%s/%s", feeds[f].dir, g->code);
            source_rec sr;
            digit_id(sr.local_id, sizeof sr.local_id, f == 0 ? "C" : f == 1 ? "SC" : "MH",
                     keyed(w, p->index, feeds[f].salt * 16 + (uint64_t)org, 0), 9);
            make_source_rec(w, p, &r, feeds[f].rates, p->events[first].day, last_day, c, feed, &sr);
            /* a duplicate client record, used for the later contacts */
            source_rec dup;
            int dup_from = -1;
            if (rng_chance(&r, feeds[f].rates->duplicate * w->p.error_rate)) {
                dup = sr;
                digit_id(dup.local_id, sizeof dup.local_id, f == 0 ? "C" : f == 1 ? "SC" : "MH",
                         keyed(w, p->index, feeds[f].salt * 16 + (uint64_t)org, 1), 9);
                dup_from = first + rng_int(&r, p->n_events - first);
                add_error(c, feed, dup.local_id, p->id, ERR_DUPLICATE_RECORD, "client_id", sr.local_id, dup.local_id);
            }
            buf *b = &c->files[feeds[f].file0 + org];
            for (int k = first; k < p->n_events; k++) {
                const synth_event *e = &p->events[k];
                if (!((e->kind == feeds[f].kind_a || e->kind == feeds[f].kind_b) && e->org == org)) continue;
                char row_id[40];
                digit_id(row_id, sizeof row_id, l->org, keyed(w, p->index, feeds[f].salt * 16 + (uint64_t)org + 0x100, (uint64_t)k), 10);
                const code_def *svc = f == 0 ? &community_services[e->code]
                                      : f == 1 ? &social_services[e->code]
                                               : &mh_services[e->code];
                const source_rec *use = (dup_from >= 0 && k >= dup_from) ? &dup : &sr;
                csv_row row = {row_id, use, p, person_practice_org(w, p, e->day), e, svc, 0, w->end_day};
                if (rng_chance(&r, feeds[f].rates->malformed * w->p.error_rate)) {
                    row.malformed = 1;
                    add_error(c, feed, row_id, p->id, ERR_MALFORMED, "date_of_birth", "", "31/02/19X5");
                }
                csv_write(b, l, &row);
                add_record(c, feed, row_id, use->local_id, p->id);
                c->s.csv_rows[f]++;
                if (f == 0) c->s.community_contacts++;
                else if (f == 2) c->s.mh_contacts++;
                else if (e->kind == EV_CARE_HOME) c->s.care_home++;
                else c->s.social_packages++;
            }
        }
    }
}

/* ---- ground truth: the true person ------------------------------------------------------ */
static void people_row(const synth_world *w, const synth_person *p, chunk_out *c) {
    buf *b = &c->files[F_PEOPLE];
    char d[11];
    put_str(b, p->id);
    put_c(b, ',');
    put_str(b, p->nhs);
    put_c(b, ',');
    csv_text(b, ',', p->given);
    put_c(b, ',');
    csv_text(b, ',', p->family);
    put_str(b, p->female ? ",F," : ",M,");
    fmt_date(d, p->birth_day);
    put_str(b, d);
    put_c(b, ',');
    put_str(b, p->postcode);
    put_c(b, ',');
    put_str(b, p->move_day ? p->old_postcode : "");
    put_c(b, ',');
    if (p->move_day) {
        fmt_date(d, p->move_day);
        put_str(b, d);
    }
    put_c(b, ',');
    put_str(b, w->practices[p->practice].code);
    put_c(b, ',');
    if (p->practice2 >= 0) put_str(b, w->practices[p->practice2].code);
    put_c(b, ',');
    if (p->practice2 >= 0) {
        fmt_date(d, p->change_day);
        put_str(b, d);
    }
    put_c(b, ',');
    put_int(b, p->deprivation);
    put_c(b, ',');
    put_str(b, ethnicities[p->ethnicity].code);
    put_c(b, ',');
    if (p->death_day) {
        fmt_date(d, p->death_day);
        put_str(b, d);
    }
    put_c(b, ',');
    if (p->left_area) {
        fmt_date(d, p->end_day);
        put_str(b, d);
    }
    put_c(b, ',');
    put_str(b, w->practices[p->practice].integrated ? "1" : "0");
    put_c(b, ',');
    for (int k = 0, first = 1; k < N_CONDITIONS; k++)
        if (p->onset[k]) {
            if (!first) put_c(b, ';');
            first = 0;
            put_str(b, conditions[k].icd10);
        }
    put_c(b, '\n');
}

/* ---- workers -------------------------------------------------------------------------------- */
static void generate_chunk(const synth_world *w, chunk_out *c, synth_person *p, buf *scratch) {
    for (int i = 0; i < N_FILES; i++) buf_reset(&c->files[i]);
    memset(&c->s, 0, sizeof c->s);
    memset(c->errors, 0, sizeof c->errors);
    for (int64_t i = c->first; i < c->first + c->count; i++) {
        person_generate(w, i, p);
        c->s.people++;
        c->s.person_years += (p->end_day - p->start_day) / 365.2425;
        if (p->death_day) c->s.deaths++;
        if (p->move_day) c->s.moves++;
        if (p->practice2 >= 0) c->s.practice_changes++;
        for (int k = 0; k < p->n_events; k++)
            if (p->events[k].kind == EV_GP_CONSULT) c->s.gp_consultations++;
        people_row(w, p, c);
        gp_feed(w, p, c);
        acute_feed(w, p, c, scratch);
        csv_feeds(w, p, c);
    }
}

static void *worker(void *arg) {
    feeds_run *run = arg;
    fhir_set_extract_mode(1);
    synth_person *p = malloc(sizeof *p);
    buf scratch = {0};
    pthread_mutex_lock(&run->mu);
    for (;;) {
        while (!run->stop && run->next_chunk < run->n_chunks && run->next_chunk >= run->written + run->window)
            pthread_cond_wait(&run->cv, &run->mu);
        if (run->stop || run->next_chunk >= run->n_chunks) break;
        int64_t ci = run->next_chunk++;
        chunk_out *c = &run->ring[ci % run->window];
        c->state = 1;
        c->first = ci * CHUNK;
        c->count = run->w->p.patients - c->first < CHUNK ? run->w->p.patients - c->first : CHUNK;
        pthread_mutex_unlock(&run->mu);
        generate_chunk(run->w, c, p, &scratch);
        pthread_mutex_lock(&run->mu);
        c->state = 2;
        pthread_cond_broadcast(&run->cv);
    }
    pthread_mutex_unlock(&run->mu);
    free(p);
    buf_free(&scratch);
    return NULL;
}

/* ---- the run ----------------------------------------------------------------------------------- */
static status make_dir(const char *path, err *e) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return ST_OK;
    return err_set(e, ST_IO, "exception", path, "cannot create directory %s: %s", path, strerror(errno));
}

static void add_summary(synth_summary *a, const synth_summary *b) {
    a->people += b->people;
    a->deaths += b->deaths;
    a->moves += b->moves;
    a->practice_changes += b->practice_changes;
    a->gp_resources += b->gp_resources;
    a->hl7_messages += b->hl7_messages;
    for (int i = 0; i < 3; i++) a->csv_rows[i] += b->csv_rows[i];
    a->ae += b->ae;
    a->nel += b->nel;
    a->elective += b->elective;
    a->outpatient += b->outpatient;
    a->readmissions += b->readmissions;
    a->community_contacts += b->community_contacts;
    a->social_packages += b->social_packages;
    a->care_home += b->care_home;
    a->mh_contacts += b->mh_contacts;
    a->gp_consultations += b->gp_consultations;
    a->planted_errors += b->planted_errors;
    a->ground_truth_records += b->ground_truth_records;
    a->person_years += b->person_years;
}

static void write_manifest(const synth_world *w, const synth_summary *s, const int64_t *errors, const char *dir,
                           char paths[N_FILES][160]) {
    buf b = {0};
    const synth_params *p = &w->p;
    buf_printf(&b,
               "{\n  \"generator\": \"concord synth\",\n  \"parameters\": {\"seed\": %llu, \"patients\": %lld, "
               "\"years\": %d, \"end_year\": %d, \"history\": [\"%04d-01-01\", \"%04d-12-31\"], \"error_rate\": %g, "
               "\"programme_effect\": %g, \"programme_months\": %d},\n",
               (unsigned long long)p->seed, (long long)p->patients, p->years, p->end_year,
               p->end_year - p->years + 1, p->end_year, p->error_rate, p->programme_effect, p->programme_months);
    char d[11];
    fmt_date(d, w->programme_start_day);
    buf_printf(&b, "  \"programme\": {\"evaluation_start\": \"%s\", \"integrated_practices\": [", d);
    for (int i = 0, first = 1; i < N_PRACTICES; i++)
        if (w->practices[i].integrated) {
            buf_printf(&b, "%s\"%s\"", first ? "" : ", ", w->practices[i].code);
            first = 0;
        }
    buf_printf(&b, "]},\n  \"counts\": {\"people\": %lld, \"person_years\": %.1f, \"deaths\": %lld, \"moves\": %lld, "
                   "\"practice_changes\": %lld, \"gp_resources\": %lld, \"hl7_messages\": %lld, "
                   "\"community_rows\": %lld, \"social_care_rows\": %lld, \"mental_health_rows\": %lld, "
                   "\"ae_attendances\": %lld, \"non_elective_admissions\": %lld, \"elective_admissions\": %lld, "
                   "\"readmissions_30d\": %lld, \"outpatient_attendances\": %lld, \"community_contacts\": %lld, "
                   "\"social_care_packages\": %lld, \"care_home_admissions\": %lld, \"mental_health_contacts\": %lld, "
                   "\"gp_consultations\": %lld, \"ground_truth_records\": %lld, \"planted_errors\": %lld},\n",
               (long long)s->people, s->person_years, (long long)s->deaths, (long long)s->moves,
               (long long)s->practice_changes, (long long)s->gp_resources, (long long)s->hl7_messages,
               (long long)s->csv_rows[0], (long long)s->csv_rows[1], (long long)s->csv_rows[2], (long long)s->ae,
               (long long)s->nel, (long long)s->elective, (long long)s->readmissions, (long long)s->outpatient,
               (long long)s->community_contacts, (long long)s->social_packages, (long long)s->care_home,
               (long long)s->mh_contacts, (long long)s->gp_consultations, (long long)s->ground_truth_records,
               (long long)s->planted_errors);
    buf_puts(&b, "  \"planted_errors\": {");
    for (int k = 0; k < N_ERROR_KINDS; k++)
        buf_printf(&b, "%s\"%s\": %lld", k ? ", " : "", error_names[k], (long long)errors[k]);
    buf_puts(&b, "},\n  \"organisations\": [");
    const synth_org *groups[] = {w->practices, w->acutes, w->communities, w->councils, w->mental};
    const int ns[] = {N_PRACTICES, N_ACUTE, N_COMMUNITY, N_COUNCILS, N_MENTAL};
    static const char *const kinds[] = {"gp-practice", "acute-trust", "community-provider", "council-social-care",
                                        "mental-health-trust"};
    int first = 1;
    for (int g = 0; g < 5; g++)
        for (int i = 0; i < ns[g]; i++) {
            const synth_org *o = &groups[g][i];
            buf_printf(&b, "%s\n    {\"ods\": \"%s\", \"kind\": \"%s\", \"name\": ", first ? "" : ",", o->code,
                       kinds[g]);
            put_json_str(&b, o->name);
            if (g == 0)
                buf_printf(&b, ", \"mdg\": %d, \"list_size\": %lld, \"integrated_care\": %s, \"quality\": %.2f",
                           o->mdg + 1, (long long)o->list_size, o->integrated ? "true" : "false", o->quality);
            buf_puts(&b, "}");
            first = 0;
        }
    buf_puts(&b, "\n  ],\n  \"files\": [");
    for (int i = 0; i < N_FILES; i++) buf_printf(&b, "%s\"%s\"", i ? ", " : "", paths[i]);
    buf_puts(&b, "]\n}\n");
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(b.p, 1, b.len, f);
        fclose(f);
    }
    buf_free(&b);
}

status synth_feeds(const synth_params *params, const char *dir, synth_progress_fn progress, void *arg,
                   synth_summary *out, err *e) {
    status rc = ST_OK;
    synth_world *w = NULL;
    FILE *files[N_FILES] = {0};
    char paths[N_FILES][160];
    feeds_run run;
    memset(&run, 0, sizeof run);
    pthread_t threads[16];
    int n_threads = 0;
    int64_t errors[N_ERROR_KINDS] = {0};
    synth_summary total;
    memset(&total, 0, sizeof total);
    char full[4200];

    if ((rc = synth_world_build(params, &w, e)) != ST_OK) goto out;
    static const char *const subdirs[] = {"", "/gp", "/acute", "/community", "/social_care", "/mental_health",
                                          "/ground_truth"};
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        if (snprintf(full, sizeof full, "%s%s", dir, subdirs[i]) >= (int)sizeof full) {
            rc = err_set(e, ST_INVALID, "value", "out", "output directory name too long");
            goto out;
        }
        if ((rc = make_dir(full, e)) != ST_OK) goto out;
    }
    for (int i = 0; i < N_FILES; i++) {
        if (i < F_ACUTE) snprintf(paths[i], sizeof paths[i], "gp/%s.ndjson", w->practices[i - F_GP].code);
        else if (i < F_COMMUNITY) snprintf(paths[i], sizeof paths[i], "acute/%s.hl7", w->acutes[i - F_ACUTE].code);
        else if (i < F_SOCIAL)
            snprintf(paths[i], sizeof paths[i], "community/%s.csv", w->communities[i - F_COMMUNITY].code);
        else if (i < F_MENTAL) snprintf(paths[i], sizeof paths[i], "social_care/%s.csv", w->councils[i - F_SOCIAL].code);
        else if (i == F_MENTAL) snprintf(paths[i], sizeof paths[i], "mental_health/%s.csv", w->mental[0].code);
        else if (i == F_PEOPLE) snprintf(paths[i], sizeof paths[i], "ground_truth/people.csv");
        else if (i == F_RECORDS) snprintf(paths[i], sizeof paths[i], "ground_truth/records.csv");
        else snprintf(paths[i], sizeof paths[i], "ground_truth/errors.csv");
        if (snprintf(full, sizeof full, "%s/%s", dir, paths[i]) >= (int)sizeof full) {
            rc = err_set(e, ST_INVALID, "value", "out", "output directory name too long");
            goto out;
        }
        files[i] = fopen(full, "wb");
        if (!files[i]) {
            rc = err_set(e, ST_IO, "exception", full, "cannot write %s: %s", full, strerror(errno));
            goto out;
        }
        setvbuf(files[i], NULL, _IOFBF, 1 << 16);
    }
    /* headers */
    {
        buf h = {0};
        for (int i = 0; i < N_PRACTICES; i++) { /* each practice file starts with the practice and its GPs */
            buf_reset(&h);
            buf all = {0};
            fhir_orgs(w, &all, NULL, NULL);
            /* keep the lines of this practice: its Organization, its GPs, its MDG */
            char key1[48], key2[48], key3[48];
            snprintf(key1, sizeof key1, "\"id\":\"org-%s\"", w->practices[i].code);
            snprintf(key2, sizeof key2, "\"id\":\"gp-%s-", w->practices[i].code);
            snprintf(key3, sizeof key3, "\"id\":\"mdg-%d\"", w->practices[i].mdg + 1);
            for (char *line = all.p; line && *line;) {
                char *nl = strchr(line, '\n');
                size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
                char save = line[n - 1];
                line[n - 1] = 0;
                int keep = strstr(line, key1) || strstr(line, key2) || strstr(line, key3);
                line[n - 1] = save;
                if (keep) buf_append(&h, line, n);
                line = nl ? nl + 1 : NULL;
            }
            buf_free(&all);
            fwrite(h.p, 1, h.len, files[F_GP + i]);
        }
        buf_free(&h);
        for (int i = 0; i < N_COMMUNITY; i++) {
            buf_reset(&h);
            csv_header(&h, &community_layouts[i]);
            fwrite(h.p, 1, h.len, files[F_COMMUNITY + i]);
        }
        for (int i = 0; i < N_COUNCILS; i++) {
            buf_reset(&h);
            csv_header(&h, &social_layouts[i]);
            fwrite(h.p, 1, h.len, files[F_SOCIAL + i]);
        }
        buf_reset(&h);
        csv_header(&h, &mental_layout);
        fwrite(h.p, 1, h.len, files[F_MENTAL]);
        fputs("person_id,nhs_number,given,family,sex,birth_date,postcode,old_postcode,move_date,practice,"
              "new_practice,practice_change_date,imd_decile,ethnic_category,death_date,left_area_date,"
              "integrated_care,conditions_icd10\n",
              files[F_PEOPLE]);
        fputs("feed,record_id,local_patient_id,person_id\n", files[F_RECORDS]);
        fputs("feed,record_id,person_id,error,field,true_value,recorded_value\n", files[F_ERRORS]);
        buf_free(&h);
    }

    int nt = params->threads > 0 ? params->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nt < 1) nt = 1;
    if (nt > 16) nt = 16;
    run.w = w;
    run.n_chunks = (w->p.patients + CHUNK - 1) / CHUNK;
    run.window = nt * WINDOW_PER_THREAD;
    run.ring = calloc((size_t)run.window, sizeof *run.ring);
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    for (int i = 0; i < nt; i++)
        if (pthread_create(&threads[n_threads], NULL, worker, &run) == 0) n_threads++;
    if (n_threads == 0) {
        rc = err_set(e, ST_IO, "exception", NULL, "cannot start generator threads");
        goto out;
    }
    for (int64_t ci = 0; ci < run.n_chunks; ci++) {
        chunk_out *c = &run.ring[ci % run.window];
        pthread_mutex_lock(&run.mu);
        while (!(c->state == 2 && c->first == ci * CHUNK)) pthread_cond_wait(&run.cv, &run.mu);
        pthread_mutex_unlock(&run.mu);
        for (int i = 0; i < N_FILES && rc == ST_OK; i++)
            if (c->files[i].len && fwrite(c->files[i].p, 1, c->files[i].len, files[i]) != c->files[i].len)
                rc = err_set(e, ST_IO, "exception", paths[i], "write failed: %s", strerror(errno));
        for (int i = 0; i < N_FILES; i++) total.bytes += (int64_t)c->files[i].len;
        /* a slot's buffers for files this chunk hardly used are released, so
         * memory stays bounded by the window, not by the number of files */
        for (int i = 0; i < N_FILES; i++)
            if (c->files[i].cap > 2 * c->files[i].len + (1u << 16)) buf_free(&c->files[i]);
        add_summary(&total, &c->s);
        for (int k = 0; k < N_ERROR_KINDS; k++) errors[k] += c->errors[k];
        pthread_mutex_lock(&run.mu);
        c->state = 0;
        run.written = ci + 1;
        if (rc != ST_OK) run.stop = 1;
        pthread_cond_broadcast(&run.cv);
        pthread_mutex_unlock(&run.mu);
        if (progress) progress(arg, total.people, w->p.patients);
        if (rc != ST_OK) break;
    }
    for (int i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);
    n_threads = 0;
    for (int i = 0; i < N_FILES; i++) {
        if (files[i] && fclose(files[i]) != 0 && rc == ST_OK)
            rc = err_set(e, ST_IO, "exception", paths[i], "write failed: %s", strerror(errno));
        files[i] = NULL;
    }
    if (rc == ST_OK) write_manifest(w, &total, errors, dir, paths);
    if (out) *out = total;
out:
    if (n_threads) {
        pthread_mutex_lock(&run.mu);
        run.stop = 1;
        pthread_cond_broadcast(&run.cv);
        pthread_mutex_unlock(&run.mu);
        for (int i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);
    }
    if (run.ring) {
        for (int k = 0; k < run.window; k++)
            for (int i = 0; i < N_FILES; i++) buf_free(&run.ring[k].files[i]);
        free(run.ring);
        pthread_mutex_destroy(&run.mu);
        pthread_cond_destroy(&run.cv);
    }
    for (int i = 0; i < N_FILES; i++)
        if (files[i]) fclose(files[i]);
    synth_world_free(w);
    return rc;
}
