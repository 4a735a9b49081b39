/*
 * facts.c — per-person facts for risk stratification, kept in step with the
 * record by a store write hook.
 *
 * Population-wide work (a full run scores everyone) must not re-parse each
 * person's FHIR resources: the hook turns each stored version of a
 * resource that matters to risk into a few short fact lines (format in
 * risk_int.h) and keeps one row per person in risk_fact, keyed by the
 * patient key, so a full run reads one small row per person in key order.
 *
 * Invariants:
 *  - risk_fact.facts holds exactly the lines of the current, non-deleted
 *    versions of the person's resources (lines carry their rkey; a new
 *    version replaces its resource's lines, a delete removes them). The
 *    hook runs in the write transaction, so a rolled-back write leaves the
 *    facts as they were.
 *  - risk_fact.dirty is the time (microseconds) the facts last changed, 0
 *    once the person has been rescored individually since. A person waits
 *    for rescoring while dirty is later than the watermark of the last full
 *    run (rk_watermark: its start, less a minute); a full run therefore
 *    rewrites no facts rows. A version whose lines are unchanged (an
 *    Observation, a re-sent resource, an edit of a field risk does not
 *    read) leaves the row untouched: no rescoring.
 *  - A resource moved to another patient by an update leaves its lines
 *    with the old patient until `concord risk facts --rebuild` (the write
 *    event carries only the new patient key): a known limitation.
 *
 * Also here: decoding the text into arrays (rk_person_decode), the rebuild
 * from stored resources, and the postcode -> deprivation lookup.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "../store/store_int.h"
#include "risk_int.h"

#define SETTING_SYSTEM "https://concord.example/CodeSystem/care-setting"
#define SNOMED         "http://snomed.info/sct"
#define ICD10          "http://hl7.org/fhir/sid/icd-10"

/* ---- dates ----------------------------------------------------------------- */

static int32_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int32_t risk_parse_day(const char *s) {
    if (!s) return RK_NODAY;
    int y = 0, m = 1, d = 1;
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)s[i])) return RK_NODAY;
        y = y * 10 + (s[i] - '0');
    }
    if (s[4] == '-') {
        if (!isdigit((unsigned char)s[5]) || !isdigit((unsigned char)s[6])) return RK_NODAY;
        m = (s[5] - '0') * 10 + (s[6] - '0');
        if (s[7] == '-') {
            if (!isdigit((unsigned char)s[8]) || !isdigit((unsigned char)s[9])) return RK_NODAY;
            d = (s[8] - '0') * 10 + (s[9] - '0');
        }
    }
    if (m < 1 || m > 12 || d < 1 || d > 31) return RK_NODAY;
    return days_from_civil(y, m, d);
}

void risk_format_day(int32_t day, char out[11]) {
    if (day == RK_NODAY) {
        snprintf(out, 11, "unknown");
        return;
    }
    int z = day + 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    int doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int y = yoe + era * 400;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    int d = doy - (153 * mp + 2) / 5 + 1;
    int m = mp + (mp < 10 ? 3 : -9);
    y += m <= 2;
    if (y < 0 || y > 9999) {
        snprintf(out, 11, "unknown");
        return;
    }
    char t[32];
    snprintf(t, sizeof t, "%04d-%02d-%02d", y, m, d);
    memcpy(out, t, 11);
    out[10] = 0;
}

int32_t risk_today(void) {
    return (int32_t)(time(NULL) / 86400);
}

double rk_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void rk_postcode_norm(const char *in, char *out, size_t n) {
    char t[16];
    size_t k = 0;
    for (const char *p = in ? in : ""; *p && k + 1 < sizeof t; p++)
        if (isalnum((unsigned char)*p)) t[k++] = (char)toupper((unsigned char)*p);
    t[k] = 0;
    if (k >= 5 && k <= 7)
        snprintf(out, n, "%.*s %s", (int)(k - 3), t, t + k - 3);
    else
        snprintf(out, n, "%s", t);
}

/* ---- extraction: resource -> fact lines ----------------------------------------- */

static const char *str_at(json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

/* A field value safe for the line format: no '|', no control characters,
 * at most 64 bytes. */
static void put_field(buf *b, const char *s) {
    buf_putc(b, '|');
    if (!s) return;
    for (int i = 0; s[i] && i < 64; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf_putc(b, (ch == '|' || ch < 0x20 || ch == 0x7f) ? '_' : (char)ch);
    }
}

static void put_day(buf *b, int32_t day) {
    buf_putc(b, '|');
    if (day != RK_NODAY) buf_printf(b, "%d", (int)day);
}

/* ICD-10 as stored in facts: upper case, no dots or spaces ("J18.9" -> "J189"). */
static void icd_norm(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (const char *p = in; *p && k + 1 < n; p++)
        if (isalnum((unsigned char)*p)) out[k++] = (char)toupper((unsigned char)*p);
    out[k] = 0;
}

static int32_t stored_day(json_t *res) {
    json_t *meta = json_object_get(res, "meta");
    return risk_parse_day(str_at(meta, "lastUpdated"));
}

/* The care-setting tag (meta.tag), or NULL. */
static const char *setting_of(json_t *res) {
    json_t *tags = json_object_get(json_object_get(res, "meta"), "tag");
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        const char *sys = str_at(t, "system");
        if (sys && strcmp(sys, SETTING_SYSTEM) == 0) return str_at(t, "code");
    }
    return NULL;
}

/* First coding of a CodeableConcept whose system contains `sys_part`
 * (NULL: any); its code. */
static const char *concept_code(json_t *cc, const char *sys_part) {
    json_t *codings = json_object_get(cc, "coding");
    size_t i;
    json_t *c;
    json_array_foreach(codings, i, c) {
        const char *sys = str_at(c, "system"), *code = str_at(c, "code");
        if (!code) continue;
        if (!sys_part || (sys && strstr(sys, sys_part))) return code;
    }
    return NULL;
}

static const char *ref_id(json_t *ref, const char *type) {
    const char *r = str_at(ref, "reference");
    size_t n = strlen(type);
    if (r && strncmp(r, type, n) == 0 && r[n] == '/') return r + n + 1;
    return NULL;
}

static void extract_patient(json_t *res, int64_t rkey, buf *out) {
    buf_printf(out, "P|%lld", (long long)rkey);
    put_day(out, risk_parse_day(str_at(res, "birthDate")));
    const char *g = str_at(res, "gender");
    char sex = 'u';
    if (g && strcmp(g, "male") == 0)
        sex = 'm';
    else if (g && strcmp(g, "female") == 0)
        sex = 'f';
    else if (g && strcmp(g, "other") == 0)
        sex = 'o';
    buf_printf(out, "|%c", sex);
    int32_t death = risk_parse_day(str_at(res, "deceasedDateTime"));
    if (death == RK_NODAY && json_is_true(json_object_get(res, "deceasedBoolean"))) death = stored_day(res);
    put_day(out, death);
    /* the current home address: use home (or unset), no end date */
    const char *pc = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(res, "address"), i, a) {
        const char *use = str_at(a, "use");
        if (use && strcmp(use, "home") != 0) continue;
        if (str_at(json_object_get(a, "period"), "end")) continue;
        if ((pc = str_at(a, "postalCode"))) break;
    }
    char norm[16] = "";
    if (pc) rk_postcode_norm(pc, norm, sizeof norm);
    put_field(out, norm);
    const char *practice = NULL;
    json_t *g2;
    json_array_foreach(json_object_get(res, "generalPractitioner"), i, g2) {
        if ((practice = ref_id(g2, "Organization"))) break;
    }
    put_field(out, practice);
    json_t *act = json_object_get(res, "active");
    buf_printf(out, "|%d\n", act && json_is_false(act) ? 0 : 1);
}

static void extract_condition(json_t *res, int64_t rkey, buf *out) {
    const char *ver = concept_code(json_object_get(res, "verificationStatus"), NULL);
    if (ver && (strcmp(ver, "refuted") == 0 || strcmp(ver, "entered-in-error") == 0)) return;
    char cat = '-';
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(res, "category"), i, c) {
        const char *code = concept_code(c, NULL);
        if (code && strcmp(code, "problem-list-item") == 0)
            cat = 'p';
        else if (code && strcmp(code, "encounter-diagnosis") == 0)
            cat = 'e';
    }
    int32_t day = risk_parse_day(str_at(res, "onsetDateTime"));
    if (day == RK_NODAY) day = risk_parse_day(str_at(json_object_get(res, "onsetPeriod"), "start"));
    if (day == RK_NODAY) day = risk_parse_day(str_at(res, "recordedDate"));
    int32_t stored = stored_day(res);
    const char *enc = ref_id(json_object_get(res, "encounter"), "Encounter");
    json_array_foreach(json_object_get(json_object_get(res, "code"), "coding"), i, c) {
        const char *sys = str_at(c, "system"), *code = str_at(c, "code");
        if (!sys || !code) continue;
        char s;
        char norm[24];
        if (strcmp(sys, SNOMED) == 0) {
            s = 's';
            snprintf(norm, sizeof norm, "%s", code);
        } else if (strcmp(sys, ICD10) == 0) {
            s = 'i';
            icd_norm(code, norm, sizeof norm);
        } else {
            continue;
        }
        buf_printf(out, "C|%lld|%c", (long long)rkey, s);
        put_field(out, norm);
        put_day(out, day);
        put_day(out, stored);
        put_field(out, enc);
        buf_printf(out, "|%c\n", cat);
    }
}

/* Admission method -> e (emergency, 2x), l (elective, 1x), n (other
 * non-elective: maternity 3x, other 8x), u (not recorded). */
static char admission_kind(json_t *res) {
    const char *method = NULL;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(res, "extension"), i, x) {
        const char *url = str_at(x, "url");
        if (url && strstr(url, "AdmissionMethod")) {
            method = concept_code(json_object_get(x, "valueCodeableConcept"), NULL);
            if (method) break;
        }
    }
    if (!method) {
        json_array_foreach(json_object_get(res, "type"), i, x) {
            if ((method = concept_code(x, "admission_method"))) break;
            if ((method = concept_code(x, "AdmissionMethod"))) break;
        }
    }
    if (method) {
        if (method[0] == '1') return 'l';
        if (method[0] == '2') return 'e';
        if (method[0] == '3' || method[0] == '8') return 'n';
    }
    const char *pri = concept_code(json_object_get(res, "priority"), NULL);
    if (pri) {
        if (!strcmp(pri, "EM") || !strcmp(pri, "UR") || !strcmp(pri, "S") || !strcmp(pri, "A")) return 'e';
        if (!strcmp(pri, "EL") || !strcmp(pri, "R")) return 'l';
    }
    return 'u';
}

static void extract_encounter(json_t *res, int64_t rkey, buf *out) {
    const char *st = str_at(res, "status");
    if (st && (!strcmp(st, "planned") || !strcmp(st, "cancelled") || !strcmp(st, "entered-in-error"))) return;
    json_t *period = json_object_get(res, "period");
    int32_t start = risk_parse_day(str_at(period, "start"));
    if (start == RK_NODAY) return; /* cannot be placed in time */
    int32_t end = risk_parse_day(str_at(period, "end"));
    const char *cls = str_at(json_object_get(res, "class"), "code");
    const char *setting = setting_of(res);
    char kind = 'x';
    if (cls && (!strcmp(cls, "IMP") || !strcmp(cls, "ACUTE") || !strcmp(cls, "NONAC") || !strcmp(cls, "SS")))
        kind = 'a';
    else if (cls && !strcmp(cls, "EMER"))
        kind = 'e';
    else if (cls && !strcmp(cls, "HH"))
        kind = 'c';
    else if (setting && !strcmp(setting, "mental-health"))
        kind = 'm';
    else if (setting && !strcmp(setting, "community"))
        kind = 'c';
    else if (setting && !strcmp(setting, "primary-care"))
        kind = 'g';
    else if (setting && !strcmp(setting, "acute"))
        kind = 'o';
    else {
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(res, "type"), i, t) {
            const char *code = concept_code(t, "snomed");
            if (code && !strcmp(code, "11429006")) kind = 'g';
        }
        if (kind == 'x' && concept_code(json_object_get(res, "serviceType"), "treatment_function"))
            kind = 'o';
    }
    char adm = kind == 'a' ? admission_kind(res) : '-';
    const char *disch =
        kind == 'a'
            ? concept_code(json_object_get(json_object_get(res, "hospitalization"), "dischargeDisposition"),
                           NULL)
            : NULL;
    char dx[24] = "";
    if (kind == 'a' || kind == 'e') {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(res, "reasonCode"), i, r) {
            const char *code = concept_code(r, "icd-10");
            if (code) {
                icd_norm(code, dx, sizeof dx);
                break;
            }
        }
    }
    buf_printf(out, "E|%lld|%c", (long long)rkey, kind);
    put_day(out, start);
    put_day(out, end);
    buf_printf(out, "|%c", adm);
    put_field(out, disch);
    put_field(out, dx);
    put_field(out, (kind == 'a' || kind == 'e') ? str_at(res, "id") : NULL);
    buf_putc(out, '\n');
}

static void extract_medication(const char *type, json_t *res, int64_t rkey, buf *out) {
    const char *st = str_at(res, "status");
    if (st && (!strcmp(st, "entered-in-error") || !strcmp(st, "not-taken") || !strcmp(st, "intended") ||
               !strcmp(st, "draft") || !strcmp(st, "cancelled")))
        return;
    int32_t start, end;
    if (!strcmp(type, "MedicationStatement")) {
        json_t *p = json_object_get(res, "effectivePeriod");
        start = risk_parse_day(str_at(p, "start"));
        end = risk_parse_day(str_at(p, "end"));
        if (start == RK_NODAY) start = risk_parse_day(str_at(res, "effectiveDateTime"));
        if (start == RK_NODAY) start = risk_parse_day(str_at(res, "dateAsserted"));
    } else { /* MedicationRequest */
        json_t *p = json_object_get(json_object_get(res, "dispenseRequest"), "validityPeriod");
        start = risk_parse_day(str_at(res, "authoredOn"));
        if (start == RK_NODAY) start = risk_parse_day(str_at(p, "start"));
        end = risk_parse_day(str_at(p, "end"));
    }
    if (start == RK_NODAY) start = stored_day(res);
    if (end == RK_NODAY && st &&
        (!strcmp(st, "completed") || !strcmp(st, "stopped") || !strcmp(st, "on-hold")))
        end = stored_day(res);
    buf_printf(out, "M|%lld", (long long)rkey);
    put_day(out, start);
    put_day(out, end);
    buf_putc(out, '\n');
}

/* Social care services (docs/synth.md): home care, reablement, direct
 * payment, day care, equipment, meals, residential and nursing care. */
static const char *const SOCIAL_CARE_CODES[] = {"HC", "RB", "DP", "DC", "EQ", "MW", "RES", "NUR"};

static void extract_episode(json_t *res, int64_t rkey, buf *out) {
    const char *st = str_at(res, "status");
    if (st && (!strcmp(st, "planned") || !strcmp(st, "waitlist") || !strcmp(st, "cancelled") ||
               !strcmp(st, "entered-in-error")))
        return;
    const char *setting = setting_of(res);
    const char *code = NULL;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(res, "type"), i, t) {
        if ((code = concept_code(t, NULL))) break;
    }
    int known = 0;
    for (size_t k = 0; code && k < sizeof SOCIAL_CARE_CODES / sizeof SOCIAL_CARE_CODES[0]; k++)
        if (!strcmp(code, SOCIAL_CARE_CODES[k])) known = 1;
    if (!known && !(setting && !strcmp(setting, "social-care"))) return;
    int home = code && (!strcmp(code, "RES") || !strcmp(code, "NUR"));
    json_t *p = json_object_get(res, "period");
    int32_t start = risk_parse_day(str_at(p, "start"));
    if (start == RK_NODAY) start = stored_day(res);
    int32_t end = risk_parse_day(str_at(p, "end"));
    if (end == RK_NODAY && st && !strcmp(st, "finished")) end = stored_day(res);
    buf_printf(out, "S|%lld|%d", (long long)rkey, home);
    put_field(out, code);
    put_day(out, start);
    put_day(out, end);
    buf_putc(out, '\n');
}

static void extract_careplan(json_t *res, int64_t rkey, buf *out) {
    const char *st = str_at(res, "status");
    if (st && !strcmp(st, "entered-in-error")) return;
    int32_t day = stored_day(res);
    int32_t created = risk_parse_day(str_at(res, "created"));
    if (created != RK_NODAY && (day == RK_NODAY || created > day)) day = created;
    buf_printf(out, "K|%lld|%d", (long long)rkey, st && !strcmp(st, "active") ? 1 : 0);
    put_day(out, day);
    buf_putc(out, '\n');
}

static const char *const FACT_TYPES[] = {
    "Patient",           "Condition",     "Encounter", "MedicationStatement",
    "MedicationRequest", "EpisodeOfCare", "CarePlan"};

static int fact_type(const char *type) {
    for (size_t i = 0; i < sizeof FACT_TYPES / sizeof FACT_TYPES[0]; i++)
        if (!strcmp(type, FACT_TYPES[i])) return 1;
    return 0;
}

int rk_facts_extract(const char *type, json_t *res, int64_t rkey, buf *out) {
    size_t before = out->len;
    if (!res || !json_is_object(res)) return 0;
    if (!strcmp(type, "Patient"))
        extract_patient(res, rkey, out);
    else if (!strcmp(type, "Condition"))
        extract_condition(res, rkey, out);
    else if (!strcmp(type, "Encounter"))
        extract_encounter(res, rkey, out);
    else if (!strcmp(type, "MedicationStatement") || !strcmp(type, "MedicationRequest"))
        extract_medication(type, res, rkey, out);
    else if (!strcmp(type, "EpisodeOfCare"))
        extract_episode(res, rkey, out);
    else if (!strcmp(type, "CarePlan"))
        extract_careplan(res, rkey, out);
    return out->len > before;
}

/* ---- the write hook ------------------------------------------------------------- */

/* The rkey field of a line ("K|<rkey>|..."). */
static int64_t line_rkey(const char *line) {
    if (!line[0] || line[1] != '|') return -1;
    return strtoll(line + 2, NULL, 10);
}

/* Split `old` into the lines of other resources (kept) and the lines of
 * `rkey` (mine). */
static void splice(const char *old, size_t len, int64_t rkey, buf *kept, buf *mine) {
    const char *p = old, *end = old + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl + 1 : end;
        buf_append(line_rkey(p) == rkey ? mine : kept, p, (size_t)(stop - p));
        p = stop;
    }
}

static status write_facts(store_txn *tx, int64_t pkey, const char *facts, size_t len, int64_t dirty, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sql[] =
        "INSERT INTO risk_fact (pkey, facts, dirty, updated) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (pkey) DO UPDATE SET facts = excluded.facts, dirty = excluded.dirty,"
        " updated = excluded.updated";
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, pkey);
    drv->bind_text(st, 2, facts, (int)len);
    drv->bind_int(st, 3, dirty);
    drv->bind_int(st, 4, fhir_now_usec());
    if (drv->step(st, e) < 0) rc = ST_IO;
    drv->done(st);
    return rc;
}

static status fact_hook(void *ctx, store_txn *tx, const store_write_event *ev, err *e) {
    (void)ctx;
    if (ev->pkey <= 0 || !fact_type(ev->type)) return ST_OK;
    const db_driver *drv = tx->s->drv;
    status rc = ST_OK;
    buf fresh = {0}, kept = {0}, mine = {0};
    json_t *parsed = NULL;
    db_stmt *st = NULL;
    if (!ev->deleted) {
        json_t *res = ev->res;
        if (!res && ev->body) res = parsed = json_loads(ev->body, 0, NULL);
        rk_facts_extract(ev->type, res, ev->rkey, &fresh);
    }
    static const char sel[] = "SELECT facts FROM risk_fact WHERE pkey = ?";
    rc = drv->prepare(tx->d, sel, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, ev->pkey);
    int r = drv->step(st, e);
    if (r < 0) rc = ST_IO;
    if (r == 1) {
        size_t len = 0;
        const char *old = drv->col_text(st, 0, &len);
        if (old) splice(old, len, ev->rkey, &kept, &mine);
    }
    drv->done(st);
    if (rc != ST_OK) goto out;
    if (r == 1 && mine.len == fresh.len && (fresh.len == 0 || memcmp(mine.p, fresh.p, fresh.len) == 0))
        goto out; /* nothing risk reads has changed */
    if (r == 0 && fresh.len == 0) goto out;
    if (fresh.len) buf_append(&kept, fresh.p, fresh.len);
    rc = write_facts(tx, ev->pkey, kept.p ? kept.p : "", kept.len, fhir_now_usec(), e);
    if (rc == ST_OK) risk_service_kick();
out:
    if (parsed) json_decref(parsed);
    buf_free(&fresh);
    buf_free(&kept);
    buf_free(&mine);
    return rc;
}

status risk_install(store *s, err *e) {
    return store_add_write_hook(s, NULL, fact_hook, NULL, e);
}

status risk_facts_write(store_txn *tx, const char *patient_id, const char *facts, size_t len, err *e) {
    int64_t pkey = 0;
    status rc = store_txn_patient_key(tx, patient_id, &pkey, e);
    if (rc == ST_OK) rc = write_facts(tx, pkey, facts, len, fhir_now_usec(), e);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------- */

static int32_t field_day(const char *f) {
    if (!f || !*f) return RK_NODAY;
    int neg = *f == '-';
    if (neg) f++;
    int64_t v = 0;
    for (; *f; f++) {
        if (*f < '0' || *f > '9' || v > 100000000) return RK_NODAY;
        v = v * 10 + (*f - '0');
    }
    return (int32_t)(neg ? -v : v);
}

#define MAX_FIELDS 10

int rk_person_decode(char *text, size_t len, arena *a, rk_person *p) {
    int64_t pkey = p->pkey;
    const char *pid = p->patient_id;
    memset(p, 0, sizeof *p);
    p->pkey = pkey;
    p->patient_id = pid;
    p->birth = p->death = p->last_review = p->last_event = RK_NODAY;
    p->sex = 'u';
    p->postcode = p->practice = "";
    int n[128] = {0};
    for (size_t i = 0; i < len; i++)
        if (i == 0 || text[i - 1] == '\n') n[(unsigned char)text[i] & 127]++;
    p->cond = arena_alloc(a, sizeof(rk_cond) * (size_t)(n['C'] + 1));
    p->enc = arena_alloc(a, sizeof(rk_enc) * (size_t)(n['E'] + 1));
    p->med = arena_alloc(a, sizeof(rk_span) * (size_t)(n['M'] + 1));
    p->soc = arena_alloc(a, sizeof(rk_span) * (size_t)(n['S'] + 1));
    int bad = 0;
    char *s = text, *end = text + len;
    while (s < end) {
        /* one line: cut its fields in place, in one pass */
        char *f[MAX_FIELDS] = {0};
        int nf = 0;
        f[nf++] = s;
        char *q = s;
        while (q < end && *q != '\n') {
            if (*q == '|') {
                *q = 0;
                if (nf < MAX_FIELDS) f[nf++] = q + 1;
            }
            q++;
        }
        char *stop = q;
        *stop = 0;
        char kind = s[0];
        int32_t last = RK_NODAY;
        if (kind == 'P' && nf >= 8) {
            p->has_patient = 1;
            p->birth = field_day(f[2]);
            p->sex = f[3][0] ? f[3][0] : 'u';
            p->death = field_day(f[4]);
            p->postcode = f[5];
            p->practice = f[6];
            p->active = f[7][0] == '1';
        } else if (kind == 'C' && nf >= 8) {
            rk_cond *c = &p->cond[p->ncond++];
            c->sys = f[2][0];
            c->code = f[3];
            c->day = field_day(f[4]);
            c->stored = field_day(f[5]);
            c->enc = f[6];
            c->cat = f[7][0];
            last = c->day != RK_NODAY ? c->day : c->stored;
        } else if (kind == 'E' && nf >= 9) {
            rk_enc *x = &p->enc[p->nenc++];
            x->kind = f[2][0];
            x->start = field_day(f[3]);
            x->end = field_day(f[4]);
            x->adm = f[5][0];
            x->disch = f[6];
            x->dx = f[7];
            x->id = f[8];
            last = x->end != RK_NODAY ? x->end : x->start;
        } else if (kind == 'M' && nf >= 4) {
            rk_span *m = &p->med[p->nmed++];
            m->start = field_day(f[2]);
            m->end = field_day(f[3]);
            m->home = 0;
            m->type = "";
            last = m->start;
        } else if (kind == 'S' && nf >= 6) {
            rk_span *m = &p->soc[p->nsoc++];
            m->home = f[2][0] == '1';
            m->type = f[3];
            m->start = field_day(f[4]);
            m->end = field_day(f[5]);
            last = m->start;
        } else if (kind == 'K' && nf >= 4) {
            if (f[2][0] == '1') p->care_plan_active = 1;
            int32_t d = field_day(f[3]);
            if (d != RK_NODAY && (p->last_review == RK_NODAY || d > p->last_review)) p->last_review = d;
        } else if (s[0]) {
            bad = 1;
        }
        if (last != RK_NODAY && (p->last_event == RK_NODAY || last > p->last_event)) p->last_event = last;
        s = stop + 1;
    }
    /* encounters by start: insertion sort, as they mostly arrive in order */
    for (int i = 1; i < p->nenc; i++) {
        rk_enc x = p->enc[i];
        int k = i - 1;
        while (k >= 0 && p->enc[k].start > x.start) {
            p->enc[k + 1] = p->enc[k];
            k--;
        }
        p->enc[k + 1] = x;
    }
    /* conditions dated by their encounter; else when they were stored */
    for (int i = 0; i < p->ncond; i++) {
        rk_cond *c = &p->cond[i];
        if (c->day != RK_NODAY) continue;
        c->day = c->stored;
        for (int k = 0; c->enc[0] && k < p->nenc; k++)
            if (p->enc[k].id[0] && !strcmp(p->enc[k].id, c->enc)) {
                c->day = p->enc[k].start;
                break;
            }
    }
    return bad ? -1 : 0;
}

/* ---- rebuild ---------------------------------------------------------------------- */

#define REBUILD_SPAN 2000 /* patient keys per transaction */

status risk_facts_rebuild(store *s, risk_progress_fn progress, void *arg, int64_t *people, int64_t *resources,
                          err *e) {
    const db_driver *drv = s->drv;
    status rc = ST_OK;
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    buf facts = {0};
    int64_t maxkey = 0, np = 0, nr = 0;
    *people = *resources = 0;
    rc = store_begin(s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = drv->exec(tx->d, "DELETE FROM risk_fact", e);
    if (rc != ST_OK) goto out;
    rc = drv->prepare(tx->d, "SELECT COALESCE(MAX(pkey), 0) FROM patient_key", 0, &st, e);
    if (rc != ST_OK) goto out;
    if (drv->step(st, e) == 1) maxkey = drv->col_int(st, 0);
    drv->done(st);
    st = NULL;
    rc = store_commit(tx, e);
    tx = NULL;
    if (rc != ST_OK) goto out;
    int64_t now = fhir_now_usec();
    for (int64_t lo = 0; lo < maxkey; lo += REBUILD_SPAN) {
        rc = store_begin(s, &tx, e);
        if (rc != ST_OK) goto out;
        static const char sel[] =
            "SELECT pkey, rkey, rtype, body FROM resource WHERE pkey > ? AND pkey <= ? AND deleted = 0"
            " AND rtype IN ('Patient', 'Condition', 'Encounter', 'MedicationStatement', 'MedicationRequest',"
            " 'EpisodeOfCare', 'CarePlan') ORDER BY pkey, rkey";
        rc = drv->prepare(tx->d, sel, 0, &st, e);
        if (rc != ST_OK) goto out;
        drv->bind_int(st, 1, lo);
        drv->bind_int(st, 2, lo + REBUILD_SPAN);
        int64_t cur = 0;
        int r;
        /* rows arrive grouped by person; write each person's row when the
         * next person starts (the statement is read to its end first on
         * PostgreSQL, and SQLite allows writes to another table meanwhile) */
        typedef struct pending {
            int64_t pkey;
            char *facts;
            size_t len;
        } pending;
        pending *pv = NULL;
        size_t npv = 0, cap = 0;
        while ((r = drv->step(st, e)) == 1) {
            int64_t pkey = drv->col_int(st, 0), rkey = drv->col_int(st, 1);
            const char *type = drv->col_text(st, 2, NULL);
            size_t blen = 0;
            const char *body = drv->col_text(st, 3, &blen);
            if (pkey != cur) {
                if (cur && facts.len) {
                    if (npv == cap) {
                        cap = cap ? cap * 2 : 256;
                        pv = realloc(pv, cap * sizeof *pv);
                        if (!pv) abort();
                    }
                    pv[npv].pkey = cur;
                    pv[npv].len = facts.len;
                    pv[npv++].facts = buf_take(&facts);
                }
                buf_reset(&facts);
                cur = pkey;
            }
            json_t *res = body ? json_loadb(body, blen, 0, NULL) : NULL;
            if (res) {
                rk_facts_extract(type, res, rkey, &facts);
                json_decref(res);
            }
            nr++;
        }
        if (cur && facts.len) {
            if (npv == cap) {
                cap = cap ? cap * 2 : 256;
                pv = realloc(pv, cap * sizeof *pv);
                if (!pv) abort();
            }
            pv[npv].pkey = cur;
            pv[npv].len = facts.len;
            pv[npv++].facts = buf_take(&facts);
        }
        buf_reset(&facts);
        drv->done(st);
        st = NULL;
        if (r < 0) rc = ST_IO;
        for (size_t i = 0; i < npv; i++) {
            if (rc == ST_OK) rc = write_facts(tx, pv[i].pkey, pv[i].facts, pv[i].len, now, e);
            free(pv[i].facts);
        }
        np += (int64_t)npv;
        free(pv);
        if (rc != ST_OK) goto out;
        rc = store_commit(tx, e);
        tx = NULL;
        if (rc != ST_OK) goto out;
        if (progress) progress(arg, np, nr);
    }
    *people = np;
    *resources = nr;
out:
    if (st) drv->done(st);
    if (tx) store_rollback(tx);
    buf_free(&facts);
    return rc;
}

status risk_facts_show(store *s, const char *patient_id, buf *out, err *e) {
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] = "SELECT f.facts, f.dirty FROM risk_fact f JOIN patient_key k ON k.pkey = f.pkey"
                              " WHERE k.patient_id = ?";
    status rc = drv->prepare(d, sql, 0, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_text(st, 1, patient_id, -1);
    int r = drv->step(st, e);
    int64_t dirty = 0;
    if (r == 1) {
        size_t len;
        const char *t = drv->col_text(st, 0, &len);
        if (t) buf_append(out, t, len);
        dirty = drv->col_int(st, 1);
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    if (r == 0)
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "no risk facts for patient '%s'", patient_id);
    if (dirty > 0 && dirty > rk_watermark(s, d)) buf_puts(out, "(marked for rescoring)\n");
    return ST_OK;
}

/* ---- deprivation lookup --------------------------------------------------------------- */

/* Split one CSV line (RFC 4180 quotes) in place; returns the field count. */
static int csv_split(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    while (n < max) {
        if (*p == '"') {
            char *w = ++p;
            f[n++] = w;
            while (*p) {
                if (*p == '"' && p[1] == '"') {
                    *w++ = '"';
                    p += 2;
                } else if (*p == '"') {
                    p++;
                    break;
                } else {
                    *w++ = *p++;
                }
            }
            *w = 0;
            while (*p && *p != ',')
                p++;
        } else {
            f[n++] = p;
            while (*p && *p != ',')
                p++;
        }
        if (*p != ',') {
            if (*p) *p = 0;
            break;
        }
        *p++ = 0;
    }
    return n;
}

static int header_is(const char *h, const char *const *names) {
    for (; *names; names++)
        if (!strcasecmp(h, *names)) return 1;
    return 0;
}

status risk_deprivation_load(store *s, const char *csv_path, int64_t *rows, err *e) {
    status rc = ST_OK;
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    char *line = NULL;
    size_t cap = 0;
    *rows = 0;
    FILE *f = fopen(csv_path, "r");
    if (!f) return err_set(e, ST_NOT_FOUND, "not-found", csv_path, "cannot open %s", csv_path);
    static const char *const PC[] = {"postcode", "pcds", "pcd", "pcd7", "pcd8", "post_code", NULL};
    static const char *const OLD[] = {"old_postcode", NULL};
    static const char *const DEC[] = {"imd_decile", "decile", "imd", "imd_decile_2019", NULL};
    int cpc = -1, cold = -1, cdec = -1;
    ssize_t got = getline(&line, &cap, f);
    if (got <= 0) {
        rc = err_set(e, ST_INVALID, "invalid", csv_path, "%s is empty", csv_path);
        goto out;
    }
    char *fields[64];
    line[strcspn(line, "\r\n")] = 0;
    int nf = csv_split(line, fields, 64);
    for (int i = 0; i < nf; i++) {
        if (cpc < 0 && header_is(fields[i], PC))
            cpc = i;
        else if (cold < 0 && header_is(fields[i], OLD))
            cold = i;
        else if (cdec < 0 && header_is(fields[i], DEC))
            cdec = i;
    }
    if (cpc < 0 || cdec < 0) {
        rc = err_set(
            e, ST_INVALID, "invalid", csv_path,
            "%s: the header needs a postcode column (postcode, pcds) and a decile column (imd_decile, "
            "decile)",
            csv_path);
        goto out;
    }
    const db_driver *drv = s->drv;
    rc = store_begin(s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = drv->exec(tx->d, "DELETE FROM risk_deprivation", e);
    if (rc != ST_OK) goto out;
    int64_t lineno = 1;
    while ((got = getline(&line, &cap, f)) > 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        nf = csv_split(line, fields, 64);
        if (nf <= cpc || nf <= cdec) continue;
        int dec = atoi(fields[cdec]);
        if (dec < 1 || dec > 10) continue;
        for (int which = 0; which < 2; which++) {
            int col = which ? cold : cpc;
            if (col < 0 || col >= nf || !*fields[col]) continue;
            char pc[16];
            rk_postcode_norm(fields[col], pc, sizeof pc);
            static const char ins[] = "INSERT INTO risk_deprivation (postcode, decile) VALUES (?, ?)"
                                      " ON CONFLICT (postcode) DO UPDATE SET decile = excluded.decile";
            rc = drv->prepare(tx->d, ins, 1, &st, e);
            if (rc != ST_OK) goto out;
            drv->bind_text(st, 1, pc, -1);
            drv->bind_int(st, 2, dec);
            if (drv->step(st, e) < 0) rc = ST_IO;
            drv->done(st);
            st = NULL;
            if (rc != ST_OK) goto out;
            if (!which) (*rows)++;
        }
    }
    rc = store_commit(tx, e);
    tx = NULL;
out:
    if (tx) store_rollback(tx);
    free(line);
    fclose(f);
    return rc;
}
