/*
 * fhir_out.c — FHIR R4 JSON for the synthetic population, formatted
 * directly into buffers (no JSON library: this runs millions of times).
 *
 * Two uses:
 *   - the integrated record (fhir_person, fhir_orgs): every resource of a
 *     person once, each tagged with its care setting and source
 *     organisation (meta.tag), handed to a callback — `concord demo`;
 *   - the GP extract (fhir_patient, fhir_gp_clinical): what one practice's
 *     system would send, one resource per line (ndjson) — `concord synth`.
 *
 * Conventions (UK Core): NHS number https://fhir.nhs.uk/Id/nhs-number, ODS
 * codes https://fhir.nhs.uk/Id/ods-organization-code, SNOMED CT, ICD-10
 * http://hl7.org/fhir/sid/icd-10 (dotted codes, "J18.9"), OPCS-4
 * http://fhir.nhs.uk/Id/opcs-4, ethnic category as the UK Core extension.
 * Ids: Patient "p0000001"; everything of that person "p0000001-<kind><n>",
 * stable for a given seed; organisations "org-<ODS>", practitioners
 * "gp-<ODS>-<n>", MDGs "mdg-<n>".
 *
 * Invariant: every resource produced passes fhir_validate (tested).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_int.h"

#define ACTCODE "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#define ADMIT_METHOD_SYSTEM "https://www.datadictionary.nhs.uk/data_elements/admission_method"
#define TFC_SYSTEM "https://www.datadictionary.nhs.uk/data_elements/treatment_function_code"
#define LOCAL_SERVICE_SYSTEM "https://concord.example/CodeSystem/local-service"

/* ---- small formatting helpers ----------------------------------------------- */
void put_str(buf *b, const char *s) { buf_append(b, s, strlen(s)); }

void put_int(buf *b, long long v) {
    char t[24];
    int n = 0;
    unsigned long long u = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
    do {
        t[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) t[n++] = '-';
    buf_reserve(b, (size_t)n);
    for (int i = n - 1; i >= 0; i--) b->p[b->len++] = t[i];
    b->p[b->len] = 0;
}

void put_fixed(buf *b, double v, int decimals) {
    if (decimals <= 0) {
        put_int(b, (long long)floor(v + 0.5));
        return;
    }
    if (decimals > 6) decimals = 6;
    long long scale = 1;
    for (int i = 0; i < decimals; i++) scale *= 10;
    long long x = (long long)floor(fabs(v) * (double)scale + 0.5);
    if (v < 0 && x) put_c(b, '-');
    put_int(b, x / scale);
    put_c(b, '.');
    long long frac = x % scale;
    char t[8];
    for (int i = decimals - 1; i >= 0; i--) {
        t[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    buf_append(b, t, (size_t)decimals);
}

void put_json_str(buf *b, const char *s) {
    put_c(b, '"');
    buf_json_escape(b, s, strlen(s));
    put_c(b, '"');
}

static void put_date(buf *b, int day) {
    char d[11];
    fmt_date(d, day);
    buf_append(b, d, 10);
}

static void put_datetime(buf *b, int day, int minute) {
    char d[11];
    fmt_date(d, day);
    buf_append(b, d, 10);
    char t[24];
    if (minute < 0) minute = 0;
    if (minute > 1439) minute = 1439;
    snprintf(t, sizeof t, "T%02d:%02d:00Z", minute / 60, minute % 60);
    put_str(b, t);
}

/* "system":...,"code":...,"display":... inside an object already open */
static void put_coding(buf *b, const char *system, const char *code, const char *display) {
    put_str(b, "{\"system\":");
    put_json_str(b, system);
    put_str(b, ",\"code\":");
    put_json_str(b, code);
    if (display) {
        put_str(b, ",\"display\":");
        put_json_str(b, display);
    }
    put_c(b, '}');
}

static _Thread_local int extract_mode;

static void put_concept(buf *b, const char *system, const char *code, const char *display) {
    put_str(b, "{\"coding\":[");
    put_coding(b, system, code, display);
    put_str(b, "]");
    if (display && !extract_mode) {
        put_str(b, ",\"text\":");
        put_json_str(b, display);
    }
    put_c(b, '}');
}

/* The GP extract leaves out the tags (the file says where it came from:
 * ingest records provenance); the integrated record carries them. Set per
 * thread around extract formatting by fhir_gp_clinical / fhir_patient
 * callers through fhir_set_extract_mode. */
void fhir_set_extract_mode(int on) { extract_mode = on; }

static void put_meta(buf *b, int setting, const char *org) {
    put_str(b, ",\"meta\":{\"source\":\"urn:concord:synth:");
    put_str(b, org);
    if (extract_mode) {
        put_str(b, "\"}");
        return;
    }
    put_str(b, "\",\"tag\":[");
    put_coding(b, SYNTH_SETTING_SYSTEM, setting_code[setting], setting_display[setting]);
    put_c(b, ',');
    put_coding(b, SYNTH_ODS_SYSTEM, org, NULL);
    put_str(b, "]}");
}

static void put_ref(buf *b, const char *field, const char *type, const char *id) {
    put_str(b, ",\"");
    put_str(b, field);
    put_str(b, "\":{\"reference\":\"");
    put_str(b, type);
    put_c(b, '/');
    put_str(b, id);
    put_str(b, "\"}");
}

static void put_subject(buf *b, const char *pid) { put_ref(b, "subject", "Patient", pid); }

/* ---- resource emission: a callback per resource, or ndjson lines ------------- */
typedef struct fout {
    buf *b;
    size_t start;
    synth_resource_fn fn;
    void *arg;
    int rc, count;
    const char *type;
    char id[64];
} fout;

static void begin(fout *o, const char *type, const char *id) {
    o->start = o->b->len;
    o->type = type;
    snprintf(o->id, sizeof o->id, "%s", id);
    put_str(o->b, "{\"resourceType\":\"");
    put_str(o->b, type);
    put_str(o->b, "\",\"id\":\"");
    put_str(o->b, id);
    put_c(o->b, '"');
}

static void end(fout *o) {
    put_c(o->b, '}');
    o->count++;
    if (o->fn) {
        if (!o->rc) o->rc = o->fn(o->arg, o->type, o->id, o->b->p + o->start, o->b->len - o->start);
        o->b->len = o->start;
        o->b->p[o->b->len] = 0;
    } else {
        put_c(o->b, '\n');
    }
}

/* ---- organisations ------------------------------------------------------------- */
static void org_resource(fout *o, const synth_org *g, int setting, const char *type_code, const char *type_display,
                         int mdg) {
    char id[32];
    snprintf(id, sizeof id, "org-%s", g->code);
    begin(o, "Organization", id);
    buf *b = o->b;
    put_meta(b, setting, g->code);
    put_str(b, ",\"identifier\":[{\"system\":\"" SYNTH_ODS_SYSTEM "\",\"value\":");
    put_json_str(b, g->code);
    put_str(b, "}],\"active\":true,\"type\":[");
    put_concept(b, "http://terminology.hl7.org/CodeSystem/organization-type", type_code, type_display);
    if (g->kind == ORG_PRACTICE) {
        put_c(b, ',');
        put_concept(b, "https://fhir.nhs.uk/CodeSystem/organisation-role", "76", "GP PRACTICE");
    } else if (g->kind == ORG_ACUTE || g->kind == ORG_COMMUNITY || g->kind == ORG_MENTAL_HEALTH) {
        put_c(b, ',');
        put_concept(b, "https://fhir.nhs.uk/CodeSystem/organisation-role", "197", "NHS TRUST");
    }
    put_str(b, "],\"name\":");
    put_json_str(b, g->name);
    if (g->postcode[0]) {
        put_str(b, ",\"address\":[{\"line\":[");
        put_json_str(b, g->street[0] ? g->street : "Hospital Road");
        put_str(b, "],\"city\":\"London\",\"postalCode\":");
        put_json_str(b, g->postcode);
        put_str(b, ",\"country\":\"GB\"}]");
    }
    if (mdg >= 0) {
        char m[16];
        snprintf(m, sizeof m, "mdg-%d", mdg + 1);
        put_ref(b, "partOf", "Organization", m);
    }
    end(o);
}

static const char *const gp_family[] = {"Ahmed", "Clarke", "Okafor", "Patel", "Murphy", "Chen", "Singh", "Evans",
                                        "Rahman", "Kowalski", "Mensah", "Shah", "Taylor", "Hughes", "Begum"};
static const char *const gp_given[] = {"Sarah", "David", "Amara", "Ravi", "Helen", "James", "Priya", "Thomas",
                                       "Fatima", "Peter", "Grace", "Imran", "Claire", "Daniel", "Nadia"};

static int emit_orgs(const synth_world *w, fout *o) {
    for (int m = 0; m < N_MDG; m++) {
        char id[16], name[64];
        snprintf(id, sizeof id, "mdg-%d", m + 1);
        snprintf(name, sizeof name, "Multidisciplinary group %d", m + 1);
        begin(o, "Organization", id);
        put_meta(o->b, SET_PRIMARY, "ZZ001");
        put_str(o->b, ",\"active\":true,\"type\":[");
        put_concept(o->b, "http://terminology.hl7.org/CodeSystem/organization-type", "team",
                    "Organizational team");
        put_str(o->b, "],\"name\":");
        put_json_str(o->b, name);
        end(o);
    }
    for (int i = 0; i < N_PRACTICES; i++) {
        const synth_org *g = &w->practices[i];
        org_resource(o, g, SET_PRIMARY, "prov", "Healthcare Provider", g->mdg);
        for (int k = 0; k < 2; k++) {
            char id[32];
            snprintf(id, sizeof id, "gp-%s-%d", g->code, k + 1);
            begin(o, "Practitioner", id);
            put_meta(o->b, SET_PRIMARY, g->code);
            int f = (i * 7 + k * 3) % 15, gv = (i * 5 + k * 11) % 15;
            put_str(o->b, ",\"active\":true,\"name\":[{\"family\":");
            put_json_str(o->b, gp_family[f]);
            put_str(o->b, ",\"given\":[");
            put_json_str(o->b, gp_given[gv]);
            put_str(o->b, "],\"prefix\":[\"Dr\"]}]");
            end(o);
        }
    }
    for (int i = 0; i < N_ACUTE; i++) org_resource(o, &w->acutes[i], SET_ACUTE, "prov", "Healthcare Provider", -1);
    for (int i = 0; i < N_COMMUNITY; i++)
        org_resource(o, &w->communities[i], SET_COMMUNITY, "prov", "Healthcare Provider", -1);
    for (int i = 0; i < N_COUNCILS; i++) org_resource(o, &w->councils[i], SET_SOCIAL, "govt", "Government", -1);
    org_resource(o, &w->mental[0], SET_MENTAL, "prov", "Healthcare Provider", -1);
    return o->rc;
}

int fhir_orgs(const synth_world *w, buf *scratch, synth_resource_fn fn, void *arg) {
    fout o = {.b = scratch, .fn = fn, .arg = arg};
    return emit_orgs(w, &o);
}

int synth_world_foreach_org_resource(const synth_world *w, synth_resource_fn fn, void *arg) {
    buf b = {0};
    int rc = fhir_orgs(w, &b, fn, arg);
    buf_free(&b);
    return rc;
}

/* ---- the patient ---------------------------------------------------------------- */
void demog_true(const synth_person *p, int day, demog *d) {
    d->nhs = p->nhs;
    d->given = p->given;
    d->family = p->family;
    int moved = p->move_day && day >= p->move_day;
    d->postcode = (p->move_day && !moved) ? p->old_postcode : p->postcode;
    d->street = (p->move_day && !moved) ? p->old_street : p->street;
    d->birth_day = p->birth_day;
}

void fhir_patient(buf *b, const synth_world *w, const synth_person *p, const char *id, const demog *d,
                  int practice, int setting, const char *source_org) {
    put_meta(b, setting, source_org);
    put_str(b, ",\"extension\":[{\"url\":\"https://fhir.hl7.org.uk/StructureDefinition/"
               "Extension-UKCore-EthnicCategory\",\"valueCodeableConcept\":");
    put_concept(b, "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategory", ethnicities[p->ethnicity].code,
                ethnicities[p->ethnicity].display);
    put_str(b, "}]");
    if (d->nhs && d->nhs[0]) {
        put_str(b, ",\"identifier\":[{\"system\":\"" SYNTH_NHS_NUMBER_SYSTEM "\",\"value\":");
        put_json_str(b, d->nhs);
        put_str(b, "}]");
    }
    put_str(b, ",\"active\":");
    put_str(b, (p->end_day > w->end_day || p->death_day) ? "true" : "false");
    put_str(b, ",\"name\":[{\"use\":\"official\",\"family\":");
    put_json_str(b, d->family);
    put_str(b, ",\"given\":[");
    put_json_str(b, d->given);
    put_str(b, "],\"prefix\":[");
    put_json_str(b, p->title);
    put_str(b, "]}],\"telecom\":[{\"system\":\"phone\",\"value\":");
    put_json_str(b, p->phone);
    put_str(b, ",\"use\":\"mobile\"}],\"gender\":\"");
    put_str(b, p->female ? "female" : "male");
    put_str(b, "\",\"birthDate\":\"");
    put_date(b, d->birth_day);
    put_c(b, '"');
    if (p->death_day) {
        put_str(b, ",\"deceasedDateTime\":\"");
        put_date(b, p->death_day);
        put_c(b, '"');
    }
    put_str(b, ",\"address\":[{\"use\":\"home\",\"line\":[");
    put_json_str(b, d->street);
    put_str(b, "],\"city\":\"London\",\"postalCode\":");
    put_json_str(b, d->postcode);
    put_str(b, ",\"country\":\"GB\"}");
    if (p->move_day && d->postcode == p->postcode) {
        put_str(b, ",{\"use\":\"old\",\"line\":[");
        put_json_str(b, p->old_street);
        put_str(b, "],\"city\":\"London\",\"postalCode\":");
        put_json_str(b, p->old_postcode);
        put_str(b, ",\"country\":\"GB\",\"period\":{\"end\":\"");
        put_date(b, p->move_day);
        put_str(b, "\"}}");
    }
    put_str(b, "]");
    if (practice >= 0) {
        char ref[32];
        snprintf(ref, sizeof ref, "org-%s", w->practices[practice].code);
        put_str(b, ",\"generalPractitioner\":[{\"reference\":\"Organization/");
        put_str(b, ref);
        put_str(b, "\"}]");
        put_ref(b, "managingOrganization", "Organization", ref);
    }
}

/* ---- primary care content -------------------------------------------------------- */
static void condition_resource(fout *o, const char *pid, const char *id, const char *category, const char *system,
                               const char *code, const char *display, int onset, int setting, const char *org,
                               const char *encounter) {
    begin(o, "Condition", id);
    buf *b = o->b;
    put_meta(b, setting, org);
    put_str(b, ",\"clinicalStatus\":");
    put_concept(b, "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", NULL);
    put_str(b, ",\"verificationStatus\":");
    put_concept(b, "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", NULL);
    put_str(b, ",\"category\":[");
    put_concept(b, "http://terminology.hl7.org/CodeSystem/condition-category", category, NULL);
    put_str(b, "],\"code\":");
    put_concept(b, system, code, display);
    put_subject(b, pid);
    if (encounter) put_ref(b, "encounter", "Encounter", encounter);
    put_str(b, ",\"onsetDateTime\":\"");
    put_date(b, onset);
    put_str(b, "\",\"recordedDate\":\"");
    put_date(b, onset);
    put_str(b, "\"");
    end(o);
}

static void quantity(buf *b, double v, int decimals, const char *unit, const char *ucum) {
    put_str(b, "{\"value\":");
    put_fixed(b, v, decimals);
    put_str(b, ",\"unit\":");
    put_json_str(b, unit);
    put_str(b, ",\"system\":\"http://unitsofmeasure.org\",\"code\":");
    put_json_str(b, ucum);
    put_c(b, '}');
}

static void observation_resource(fout *o, const synth_person *p, const char *pid, int k, const synth_obs *ob,
                                 const char *org) {
    char id[48];
    snprintf(id, sizeof id, "%s-o%d", pid, k + 1);
    begin(o, "Observation", id);
    buf *b = o->b;
    const obs_def *d = &obs_defs[ob->kind];
    put_meta(b, SET_PRIMARY, org);
    put_str(b, ",\"status\":\"final\",\"category\":[");
    put_concept(b, "http://terminology.hl7.org/CodeSystem/observation-category", d->category, NULL);
    put_str(b, "],\"code\":");
    if (ob->kind == OBS_SMOKING) {
        int s = (int)ob->value;
        if (s < 0 || s > 2) s = 2;
        put_concept(b, SYNTH_SNOMED_SYSTEM, smoking_codes[s].code, smoking_codes[s].display);
    } else if (ob->kind == OBS_SYSTOLIC) {
        put_concept(b, SYNTH_SNOMED_SYSTEM, "75367002", "Blood pressure");
    } else {
        put_concept(b, SYNTH_SNOMED_SYSTEM, d->snomed, d->display);
    }
    put_subject(b, pid);
    put_str(b, ",\"effectiveDateTime\":\"");
    put_date(b, ob->day);
    put_c(b, '"');
    switch (ob->kind) {
    case OBS_SYSTOLIC:
        put_str(b, ",\"component\":[{\"code\":");
        put_concept(b, SYNTH_SNOMED_SYSTEM, obs_defs[OBS_SYSTOLIC].snomed, obs_defs[OBS_SYSTOLIC].display);
        put_str(b, ",\"valueQuantity\":");
        quantity(b, ob->value, 0, "mmHg", "mm[Hg]");
        put_str(b, "},{\"code\":");
        put_concept(b, SYNTH_SNOMED_SYSTEM, obs_defs[OBS_DIASTOLIC].snomed, obs_defs[OBS_DIASTOLIC].display);
        put_str(b, ",\"valueQuantity\":");
        quantity(b, ob->value2, 0, "mmHg", "mm[Hg]");
        put_str(b, "}]");
        break;
    case OBS_SMOKING:
    case OBS_FOOT: break;
    default: {
        int dec = (ob->kind == OBS_CHOLESTEROL || ob->kind == OBS_BMI || ob->kind == OBS_ACR) ? 1 : 0;
        put_str(b, ",\"valueQuantity\":");
        quantity(b, ob->value, dec, d->unit, d->ucum);
        break;
    }
    }
    (void)p;
    end(o);
}

static void medication_resource(fout *o, const synth_world *w, const synth_person *p, const char *pid, int k,
                                const char *org) {
    const synth_med *m = &p->meds[k];
    const drug_def *d = &drugs[m->drug];
    char id[48];
    snprintf(id, sizeof id, "%s-m%d", pid, k + 1);
    begin(o, "MedicationStatement", id);
    buf *b = o->b;
    put_meta(b, SET_PRIMARY, org);
    int stopped = p->death_day || p->end_day <= w->end_day;
    put_str(b, stopped ? ",\"status\":\"completed\"" : ",\"status\":\"active\"");
    put_str(b, ",\"medicationCodeableConcept\":");
    put_concept(b, SYNTH_SNOMED_SYSTEM, d->code, d->display);
    put_subject(b, pid);
    put_str(b, ",\"effectivePeriod\":{\"start\":\"");
    put_date(b, m->start);
    put_c(b, '"');
    if (stopped) {
        put_str(b, ",\"end\":\"");
        put_date(b, p->end_day > w->end_day ? w->end_day : p->end_day);
        put_c(b, '"');
    }
    put_str(b, "},\"dateAsserted\":\"");
    put_date(b, m->start < w->start_day ? w->start_day : m->start);
    put_str(b, "\",\"reasonCode\":[");
    put_concept(b, SYNTH_SNOMED_SYSTEM, conditions[d->condition].snomed, conditions[d->condition].snomed_display);
    put_str(b, "]");
    end(o);
}

static void encounter_open(fout *o, const char *id, int setting, const char *org, const char *cls,
                           const char *cls_display, const char *pid, int day, int minute, int end_day, int end_minute) {
    begin(o, "Encounter", id);
    buf *b = o->b;
    put_meta(b, setting, org);
    put_str(b, ",\"status\":\"finished\",\"class\":");
    put_coding(b, ACTCODE, cls, cls_display);
    put_subject(b, pid);
    put_str(b, ",\"period\":{\"start\":\"");
    put_datetime(b, day, minute);
    put_str(b, "\",\"end\":\"");
    put_datetime(b, end_day, end_day == day && end_minute < minute ? minute : end_minute);
    put_str(b, "\"}");
}

static void gp_encounter(fout *o, const synth_world *w, const char *pid, int k, const synth_event *e) {
    const synth_org *g = &w->practices[e->org];
    char id[48];
    snprintf(id, sizeof id, "%s-e%d", pid, k + 1);
    encounter_open(o, id, SET_PRIMARY, g->code, "AMB", "ambulatory", pid, e->day, e->minute, e->day,
                   e->minute + 12);
    put_str(o->b, ",\"type\":[");
    put_concept(o->b, SYNTH_SNOMED_SYSTEM, "11429006", "Consultation");
    put_str(o->b, "]");
    if (e->kind == EV_GP_REVIEW) put_str(o->b, ",\"reasonCode\":[{\"text\":\"Long-term condition review\"}]");
    char ref[32];
    snprintf(ref, sizeof ref, "org-%s", g->code);
    put_ref(o->b, "serviceProvider", "Organization", ref);
    end(o);
}

/* Which practice recorded a dated item: the one the person was registered
 * with on that day. */
static int recorded_by(const synth_person *p, int day) { return person_practice_at(p, day); }

static int emit_gp_content(fout *o, const synth_world *w, const synth_person *p, const char *pid, int only_practice,
                           int to_day) {
    for (int c = 0; c < N_CONDITIONS; c++) {
        int on = p->onset[c];
        if (!on || on > to_day || on >= p->end_day) continue;
        int rec = recorded_by(p, on < w->start_day ? w->start_day : on);
        if (only_practice >= 0 && rec != only_practice && only_practice != person_practice_at(p, to_day)) continue;
        char id[48];
        snprintf(id, sizeof id, "%s-c%d", pid, c + 1);
        condition_resource(o, pid, id, "problem-list-item", SYNTH_SNOMED_SYSTEM, conditions[c].snomed,
                           conditions[c].snomed_display, on, SET_PRIMARY, w->practices[rec].code, NULL);
    }
    for (int i = 0; i < n_deficits && i < 24; i++) {
        int on = p->deficit_onset[i];
        if (!on || on > to_day || on >= p->end_day) continue;
        int rec = recorded_by(p, on < w->start_day ? w->start_day : on);
        char id[48];
        snprintf(id, sizeof id, "%s-f%d", pid, i + 1);
        condition_resource(o, pid, id, "problem-list-item", SYNTH_SNOMED_SYSTEM, deficits[i].snomed,
                           deficits[i].display, on, SET_PRIMARY, w->practices[rec].code, NULL);
    }
    for (int k = 0; k < p->n_obs; k++) {
        if (p->obs[k].day > to_day) continue;
        int rec = recorded_by(p, p->obs[k].day);
        observation_resource(o, p, pid, k, &p->obs[k], w->practices[rec].code);
    }
    for (int k = 0; k < p->n_meds; k++) {
        if (p->meds[k].start > to_day || p->meds[k].start >= p->end_day) continue;
        int rec = recorded_by(p, p->meds[k].start < w->start_day ? w->start_day : p->meds[k].start);
        medication_resource(o, w, p, pid, k, w->practices[rec].code);
    }
    for (int k = 0; k < p->n_events; k++) {
        const synth_event *e = &p->events[k];
        if ((e->kind == EV_GP_CONSULT || e->kind == EV_GP_REVIEW) && e->day <= to_day) gp_encounter(o, w, pid, k, e);
    }
    return o->rc;
}

int fhir_gp_clinical(buf *b, const synth_world *w, const synth_person *p, const char *pid, int practice) {
    fout o = {.b = b};
    /* the old practice's extract stops at the change; the new one holds the
     * whole record (transferred GP2GP) */
    int to = (p->practice2 >= 0 && practice == p->practice) ? p->change_day - 1 : w->end_day;
    emit_gp_content(&o, w, p, pid, -1, to);
    return o.count;
}

/* ---- secondary, community, social care and mental health content ------------- */
static void hospital_events(fout *o, const synth_world *w, const synth_person *p, const char *pid) {
    for (int k = 0; k < p->n_events; k++) {
        const synth_event *e = &p->events[k];
        char id[48], ref[32];
        switch (e->kind) {
        case EV_AE: {
            const synth_org *h = &w->acutes[e->org];
            snprintf(id, sizeof id, "%s-e%d", pid, k + 1);
            encounter_open(o, id, SET_ACUTE, h->code, "EMER", "emergency", pid, e->day, e->minute, e->end_day,
                           e->end_minute);
            put_str(o->b, ",\"type\":[");
            put_concept(o->b, SYNTH_SNOMED_SYSTEM, "4525004", "Emergency department patient visit");
            put_str(o->b, "]");
            if (e->flags & EVF_ADMITTED) {
                put_str(o->b, ",\"hospitalization\":{\"dischargeDisposition\":");
                put_concept(o->b, "http://terminology.hl7.org/CodeSystem/discharge-disposition", "hosp",
                            "Hospital");
                put_str(o->b, "}");
            }
            snprintf(ref, sizeof ref, "org-%s", h->code);
            put_ref(o->b, "serviceProvider", "Organization", ref);
            end(o);
            break;
        }
        case EV_NEL:
        case EV_ELECTIVE: {
            const synth_org *h = &w->acutes[e->org];
            int nel = e->kind == EV_NEL;
            snprintf(id, sizeof id, "%s-e%d", pid, k + 1);
            encounter_open(o, id, SET_ACUTE, h->code, "IMP", "inpatient encounter", pid, e->day, e->minute,
                           e->end_day, e->end_minute);
            const char *method = nel ? ((e->flags & EVF_VIA_AE) ? "21" : "22") : "11";
            const char *method_display =
                nel ? ((e->flags & EVF_VIA_AE) ? "Emergency Admission: Emergency Care Department"
                                              : "Emergency Admission: General Practitioner")
                    : "Elective Admission: Waiting List";
            put_str(o->b, ",\"type\":[");
            put_concept(o->b, ADMIT_METHOD_SYSTEM, method, method_display);
            put_str(o->b, "],\"priority\":");
            put_concept(o->b, "http://terminology.hl7.org/CodeSystem/v3-ActPriority", nel ? "EM" : "EL",
                        nel ? "emergency" : "elective");
            const char *icd = nel ? nel_reasons[e->code].icd10 : electives[e->code].icd10;
            const char *icd_display = nel ? nel_reasons[e->code].display : electives[e->code].icd10_display;
            put_str(o->b, ",\"reasonCode\":[");
            put_concept(o->b, SYNTH_ICD10_SYSTEM, icd, icd_display);
            put_str(o->b, "],\"hospitalization\":{\"dischargeDisposition\":");
            if (e->flags & EVF_DIED)
                put_concept(o->b, "http://terminology.hl7.org/CodeSystem/discharge-disposition", "exp", "Expired");
            else
                put_concept(o->b, "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home", "Home");
            put_str(o->b, "}");
            snprintf(ref, sizeof ref, "org-%s", h->code);
            put_ref(o->b, "serviceProvider", "Organization", ref);
            end(o);
            char enc[48];
            snprintf(enc, sizeof enc, "%s", id);
            snprintf(id, sizeof id, "%s-x%d", pid, k + 1);
            condition_resource(o, pid, id, "encounter-diagnosis", SYNTH_ICD10_SYSTEM, icd, icd_display, e->day,
                               SET_ACUTE, h->code, enc);
            if (!nel) {
                snprintf(id, sizeof id, "%s-r%d", pid, k + 1);
                begin(o, "Procedure", id);
                put_meta(o->b, SET_ACUTE, h->code);
                put_str(o->b, ",\"status\":\"completed\",\"code\":");
                put_concept(o->b, SYNTH_OPCS4_SYSTEM, electives[e->code].opcs, electives[e->code].opcs_display);
                put_subject(o->b, pid);
                put_ref(o->b, "encounter", "Encounter", enc);
                put_str(o->b, ",\"performedDateTime\":\"");
                put_datetime(o->b, e->day, e->minute + 60);
                put_str(o->b, "\"");
                end(o);
            }
            break;
        }
        case EV_OUTPATIENT: {
            const synth_org *h = &w->acutes[e->org];
            snprintf(id, sizeof id, "%s-e%d", pid, k + 1);
            encounter_open(o, id, SET_ACUTE, h->code, "AMB", "ambulatory", pid, e->day, e->minute, e->day,
                           e->minute + 20);
            put_str(o->b, ",\"serviceType\":");
            put_concept(o->b, TFC_SYSTEM, specialties[e->code].code, specialties[e->code].display);
            snprintf(ref, sizeof ref, "org-%s", h->code);
            put_ref(o->b, "serviceProvider", "Organization", ref);
            end(o);
            break;
        }
        case EV_COMMUNITY:
        case EV_MH_CONTACT: {
            int community = e->kind == EV_COMMUNITY;
            const synth_org *g = community ? &w->communities[e->org] : &w->mental[0];
            const code_def *svc = community ? &community_services[e->code] : &mh_services[e->code];
            snprintf(id, sizeof id, "%s-e%d", pid, k + 1);
            encounter_open(o, id, community ? SET_COMMUNITY : SET_MENTAL, g->code, community ? "HH" : "AMB",
                           community ? "home health" : "ambulatory", pid, e->day, e->minute, e->day, e->minute + 30);
            put_str(o->b, ",\"serviceType\":");
            put_concept(o->b, LOCAL_SERVICE_SYSTEM, svc->code, svc->display);
            snprintf(ref, sizeof ref, "org-%s", g->code);
            put_ref(o->b, "serviceProvider", "Organization", ref);
            end(o);
            break;
        }
        case EV_SOCIAL_PACKAGE:
        case EV_CARE_HOME: {
            const synth_org *g = &w->councils[e->org];
            const code_def *svc = &social_services[e->code];
            snprintf(id, sizeof id, "%s-s%d", pid, k + 1);
            begin(o, "EpisodeOfCare", id);
            put_meta(o->b, SET_SOCIAL, g->code);
            int end_day = e->kind == EV_CARE_HOME ? p->end_day : e->end_day;
            int open = end_day > w->end_day;
            put_str(o->b, open ? ",\"status\":\"active\"" : ",\"status\":\"finished\"");
            put_str(o->b, ",\"type\":[");
            put_concept(o->b, LOCAL_SERVICE_SYSTEM, svc->code, svc->display);
            put_str(o->b, "]");
            put_ref(o->b, "patient", "Patient", pid);
            snprintf(ref, sizeof ref, "org-%s", g->code);
            put_ref(o->b, "managingOrganization", "Organization", ref);
            put_str(o->b, ",\"period\":{\"start\":\"");
            put_date(o->b, e->day);
            put_c(o->b, '"');
            if (!open) {
                put_str(o->b, ",\"end\":\"");
                put_date(o->b, end_day);
                put_c(o->b, '"');
            }
            put_str(o->b, "}");
            end(o);
            break;
        }
        default: break;
        }
        if (o->rc) return;
    }
}

int fhir_person(const synth_world *w, const synth_person *p, buf *scratch, synth_resource_fn fn, void *arg) {
    fout o = {.b = scratch, .fn = fn, .arg = arg};
    demog d;
    demog_true(p, w->end_day, &d);
    int practice = person_practice_at(p, p->end_day - 1);
    begin(&o, "Patient", p->id);
    fhir_patient(scratch, w, p, p->id, &d, practice, SET_PRIMARY, w->practices[practice].code);
    end(&o);
    if (o.rc) return o.rc;
    emit_gp_content(&o, w, p, p->id, -1, w->end_day);
    if (o.rc) return o.rc;
    hospital_events(&o, w, p, p->id);
    return o.rc;
}

int synth_world_foreach_resource(const synth_world *w, int64_t first, int64_t count, synth_resource_fn fn,
                                 void *arg) {
    buf b = {0};
    int rc = 0;
    synth_person *p = malloc(sizeof *p);
    if (!p) return -1;
    for (int64_t i = first; i < first + count && i < w->p.patients && !rc; i++) {
        person_generate(w, i, p);
        rc = fhir_person(w, p, &b, fn, arg);
    }
    free(p);
    buf_free(&b);
    return rc;
}
