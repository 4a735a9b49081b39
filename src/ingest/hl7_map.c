/*
 * hl7_map.c — HL7 v2 to FHIR R4 (see hl7_map.h for what maps to what and
 * how each resource is keyed).
 *
 * The mapping is data. Three kinds of table drive it:
 *
 *   events       message type + trigger -> what to produce (Patient,
 *                Encounter and with what status and apply mode, DG1/PR1,
 *                results, a merge request);
 *   field rules  per resource, one row per HL7 field: the segment, field
 *                and component it reads, the converter that turns HL7 data
 *                types (XPN, XAD, CX, CE, DTM, PL, XCN ...) into FHIR data
 *                types, the element path it writes ("name[]" appends,
 *                "period.start" nests), whether it is required;
 *   code tables  HL7 / NHS Data Dictionary codes -> FHIR codes and systems
 *                (patient class, sex, admission type and method, discharge
 *                destination, result and report status, abnormal flags,
 *                value types, coding-system names).
 *
 * A little code remains where the mapping is not a field copy: choosing the
 * key identifier, linking resources (subject, encounter, report results,
 * encounter diagnoses), event-driven status, and walking the ORU groups.
 *
 * Sources for the codes: HL7 v2.5 tables 0001, 0004, 0007, 0052, 0078,
 * 0085, 0123, 0125, 0200, 0201, 0202, 0203, 0396; HL7 terminology (THO)
 * v3-ActCode, v3-ActPriority, v3-ObservationInterpretation,
 * observation-category, condition-category, condition-ver-status; NHS Data
 * Dictionary ADMISSION METHOD and DISCHARGE DESTINATION (as the UK Core
 * code systems UKCore-AdmissionMethodEngland and
 * UKCore-DischargeDestinationEngland); NHS identifier naming systems
 * (nhs-number, ods-organization-code, gmc/gmp/nmc numbers, sds-user-id).
 *
 * Errors: a fault in the content (a required field missing, a date that is
 * not a date, a code not in its table) is located (segment, occurrence,
 * field, repetition, component) and answered AE; a message we do not
 * handle (type, event, version, processing id) is answered AR.
 */
#include "hl7_map.h"

#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fhir/json.h"
#include "../fhir/validate.h"

/* ---- systems ----------------------------------------------------------- */

#define SYS_NHS_NUMBER "https://fhir.nhs.uk/Id/nhs-number"
#define SYS_ODS        "https://fhir.nhs.uk/Id/ods-organization-code"
#define SYS_V2_0203    "http://terminology.hl7.org/CodeSystem/v2-0203"
#define SYS_ACTCODE    "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#define SYS_PRIORITY   "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
#define SYS_PARTTYPE   "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
#define SYS_INTERP     "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
#define SYS_NULLFLAVOR "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
#define SYS_OBSCAT     "http://terminology.hl7.org/CodeSystem/observation-category"
#define SYS_CONDCAT    "http://terminology.hl7.org/CodeSystem/condition-category"
#define SYS_CONDVER    "http://terminology.hl7.org/CodeSystem/condition-ver-status"
#define SYS_DIAGROLE   "http://terminology.hl7.org/CodeSystem/diagnosis-role"
#define SYS_ABSENT     "http://terminology.hl7.org/CodeSystem/data-absent-reason"
#define SYS_SNOMED     "http://snomed.info/sct"
#define SYS_ICD10      "http://hl7.org/fhir/sid/icd-10"
#define SYS_OPCS4      "https://fhir.nhs.uk/Id/opcs-4"
#define SYS_LOINC      "http://loinc.org"
#define SYS_UCUM       "http://unitsofmeasure.org"
#define SYS_ADM_METHOD "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdmissionMethodEngland"
#define EXT_ADM_METHOD "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AdmissionMethod"
#define SYS_DISCH_DEST "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestinationEngland"

/* ---- code tables ------------------------------------------------------- */

typedef struct code_row {
    const char *from;    /* the HL7 value */
    const char *code;    /* the FHIR code */
    const char *display; /* may be NULL */
    const char *system;  /* NULL: the table's system */
} code_row;

typedef enum unknown_code {
    UNKNOWN_REJECT, /* AE 103 table value not found */
    UNKNOWN_PASS,   /* keep the code as is, in the table's pass_system */
    UNKNOWN_DROP    /* leave the element out */
} unknown_code;

typedef struct code_table {
    const char *hl7_table; /* "0004": for error messages */
    const char *system;
    const code_row *rows;
    size_t n;
    unknown_code unknown;
    const char *pass_system;
} code_table;

#define ROWS(r) r, sizeof r / sizeof r[0]

/* HL7 0001 administrative sex, and the NHS person stated gender codes. */
static const code_row sex_rows[] = {
    {"M", "male", NULL, NULL},    {"F", "female", NULL, NULL},  {"O", "other", NULL, NULL},
    {"A", "other", NULL, NULL},   {"U", "unknown", NULL, NULL}, {"N", "unknown", NULL, NULL},
    {"1", "male", NULL, NULL},    {"2", "female", NULL, NULL},  {"9", "other", NULL, NULL},
    {"0", "unknown", NULL, NULL}, {"X", "unknown", NULL, NULL}, {"I", "other", NULL, NULL},
};
static const code_table sex_table = {"0001", NULL, ROWS(sex_rows), UNKNOWN_REJECT, NULL};

/* HL7 0004 patient class -> Encounter.class (v3 ActCode). */
static const code_row patient_class_rows[] = {
    {"E", "EMER", "emergency", NULL},
    {"I", "IMP", "inpatient encounter", NULL},
    {"O", "AMB", "ambulatory", NULL},
    {"P", "PRENC", "pre-admission", NULL},
    {"R", "AMB", "ambulatory", NULL}, /* recurring patient */
    {"B", "IMP", "inpatient encounter", NULL}, /* obstetrics */
    {"C", "AMB", "ambulatory", NULL}, /* commercial account */
    {"N", "UNK", "unknown", SYS_NULLFLAVOR},
    {"U", "UNK", "unknown", SYS_NULLFLAVOR},
};
static const code_table patient_class_table = {"0004", SYS_ACTCODE, ROWS(patient_class_rows), UNKNOWN_REJECT, NULL};

/* Encounter.type for classes that name a kind of attendance. */
static const code_row encounter_type_rows[] = {
    {"E", "4525004", "Emergency department patient visit", SYS_SNOMED},
};
static const code_table encounter_type_table = {"0004", SYS_SNOMED, ROWS(encounter_type_rows), UNKNOWN_DROP, NULL};

/* NHS Data Dictionary ADMISSION METHOD (PV1-4 when a UK PAS sends it), with
 * the priority it implies: elective (1x) or emergency (2x). Maternity (3x)
 * and other (8x) admissions are non-elective but carry no priority. */
static const code_row admission_method_rows[] = {
    {"11", "EL", "Waiting list", NULL},
    {"12", "EL", "Booked", NULL},
    {"13", "EL", "Planned", NULL},
    {"21", "EM", "Emergency Care Department or dental casualty department of the Health Care Provider", NULL},
    {"22", "EM", "General Practitioner: after a request for immediate admission", NULL},
    {"23", "EM", "Bed bureau", NULL},
    {"24", "EM", "Consultant Clinic, of this or another Health Care Provider", NULL},
    {"25", "EM", "Admission via Mental Health Crisis Resolution Team", NULL},
    {"2A", "EM", "Emergency Care Department of another provider where the patient had not been admitted", NULL},
    {"2B", "EM", "Transfer of an admitted patient from another Hospital Provider in an emergency", NULL},
    {"2C", "EM", "Baby born at home as intended", NULL},
    {"2D", "EM", "Other emergency admission", NULL},
    {"28", "EM", "Other means", NULL},
    {"31", NULL, "Admitted ante partum", NULL},
    {"32", NULL, "Admitted post partum", NULL},
    {"81", NULL, "Transfer of any admitted patient from other Hospital Provider other than in an emergency", NULL},
    {"82", NULL, "The birth of a baby in this Health Care Provider", NULL},
    {"83", NULL, "Baby born outside the Health Care Provider except when born at home as intended", NULL},
};
static const code_table admission_method_table = {"NHS admission method", SYS_ADM_METHOD,
                                                  ROWS(admission_method_rows), UNKNOWN_DROP, NULL};

/* HL7 0007 admission type -> Encounter.priority (v3 ActPriority). */
static const code_row admission_type_rows[] = {
    {"E", "EM", "emergency", NULL}, {"A", "EM", "emergency", NULL}, {"U", "UR", "urgent", NULL},
    {"R", "R", "routine", NULL},    {"C", "EL", "elective", NULL},
};
static const code_table admission_type_table = {"0007", SYS_PRIORITY, ROWS(admission_type_rows), UNKNOWN_DROP, NULL};

static const code_row priority_rows[] = {
    {"EL", "EL", "elective", NULL},
    {"EM", "EM", "emergency", NULL},
};
static const code_table priority_table = {"ActPriority", SYS_PRIORITY, ROWS(priority_rows), UNKNOWN_DROP, NULL};

/* NHS Data Dictionary DISCHARGE DESTINATION (PV1-36); other values are kept
 * as HL7 0112 discharge dispositions. */
static const code_row discharge_rows[] = {
    {"19", "19", "Usual place of residence", NULL},
    {"29", "29", "Temporary place of residence when usually resident elsewhere", NULL},
    {"30", "30", "Repatriation from high security psychiatric accommodation in an NHS Hospital Provider", NULL},
    {"37", "37", "Court", NULL},
    {"38", "38", "Penal establishment or police station", NULL},
    {"40", "40", "Penal establishment", NULL},
    {"42", "42", "Police Station / Police Custody Suite", NULL},
    {"48", "48", "High Security Psychiatric Hospital, Scotland", NULL},
    {"49", "49", "NHS other Hospital Provider - high security psychiatric accommodation", NULL},
    {"50", "50", "NHS other Hospital Provider - medium secure unit", NULL},
    {"51", "51", "NHS other Hospital Provider - ward for general patients or the younger physically disabled", NULL},
    {"52", "52", "NHS other Hospital Provider - ward for maternity patients or neonates", NULL},
    {"53", "53", "NHS other Hospital Provider - ward for patients who are mentally ill or have learning disabilities", NULL},
    {"54", "54", "NHS run Care Home", NULL},
    {"55", "55", "Care Home With Nursing", NULL},
    {"56", "56", "Care Home Without Nursing", NULL},
    {"65", "65", "Local Authority residential accommodation", NULL},
    {"66", "66", "Local Authority foster care", NULL},
    {"79", "79", "Patient died or still birth", NULL},
    {"84", "84", "Non-NHS run hospital - medium secure unit", NULL},
    {"85", "85", "Non-NHS (other than Local Authority) run Care Home", NULL},
    {"87", "87", "Non-NHS run hospital", NULL},
    {"88", "88", "Non-NHS (other than Local Authority) run Hospice", NULL},
    {"98", "98", "Not applicable - hospital provider spell not finished", NULL},
    {"99", "99", "Not known", NULL},
};
static const code_table discharge_table = {"NHS discharge destination", SYS_DISCH_DEST, ROWS(discharge_rows),
                                           UNKNOWN_PASS, "http://terminology.hl7.org/CodeSystem/v2-0112"};

/* HL7 0052 diagnosis type -> Condition.verificationStatus. */
static const code_row diagnosis_type_rows[] = {
    {"A", "provisional", "Provisional", NULL},
    {"W", "provisional", "Provisional", NULL},
    {"F", "confirmed", "Confirmed", NULL},
};
static const code_table diagnosis_type_table = {"0052", SYS_CONDVER, ROWS(diagnosis_type_rows), UNKNOWN_DROP, NULL};

/* HL7 0052 diagnosis type -> Encounter.diagnosis.use. */
static const code_row diagnosis_role_rows[] = {
    {"A", "AD", "Admission diagnosis", NULL},
    {"F", "DD", "Discharge diagnosis", NULL},
};
static const code_table diagnosis_role_table = {"0052", SYS_DIAGROLE, ROWS(diagnosis_role_rows), UNKNOWN_DROP, NULL};

/* HL7 0085 observation result status -> Observation.status. */
static const code_row obs_status_rows[] = {
    {"C", "corrected", NULL, NULL},        {"D", "entered-in-error", NULL, NULL}, {"F", "final", NULL, NULL},
    {"I", "registered", NULL, NULL},       {"N", "cancelled", NULL, NULL},        {"O", "registered", NULL, NULL},
    {"P", "preliminary", NULL, NULL},      {"R", "preliminary", NULL, NULL},      {"S", "preliminary", NULL, NULL},
    {"U", "final", NULL, NULL},            {"W", "entered-in-error", NULL, NULL}, {"X", "cancelled", NULL, NULL},
};
static const code_table obs_status_table = {"0085", NULL, ROWS(obs_status_rows), UNKNOWN_REJECT, NULL};

/* HL7 0123 result status -> DiagnosticReport.status. */
static const code_row report_status_rows[] = {
    {"O", "registered", NULL, NULL}, {"I", "registered", NULL, NULL},  {"S", "partial", NULL, NULL},
    {"A", "partial", NULL, NULL},    {"P", "preliminary", NULL, NULL}, {"R", "preliminary", NULL, NULL},
    {"C", "corrected", NULL, NULL},  {"F", "final", NULL, NULL},       {"X", "cancelled", NULL, NULL},
    {"Y", "unknown", NULL, NULL},    {"Z", "unknown", NULL, NULL},
};
static const code_table report_status_table = {"0123", NULL, ROWS(report_status_rows), UNKNOWN_REJECT, NULL};

/* HL7 0078 abnormal flags -> Observation.interpretation. */
static const code_row abnormal_rows[] = {
    {"L", "L", "Low", NULL},           {"H", "H", "High", NULL},
    {"LL", "LL", "Critical low", NULL}, {"HH", "HH", "Critical high", NULL},
    {"N", "N", "Normal", NULL},        {"A", "A", "Abnormal", NULL},
    {"AA", "AA", "Critical abnormal", NULL}, {"<", "<", "Off scale low", NULL},
    {">", ">", "Off scale high", NULL}, {"S", "S", "Susceptible", NULL},
    {"R", "R", "Resistant", NULL},     {"I", "I", "Intermediate", NULL},
    {"U", "U", "Significant change up", NULL}, {"D", "D", "Significant change down", NULL},
    {"B", "B", "Better", NULL},        {"W", "W", "Worse", NULL},
    {"POS", "POS", "Positive", NULL},  {"NEG", "NEG", "Negative", NULL},
    {"IND", "IND", "Indeterminate", NULL}, {"DET", "DET", "Detected", NULL},
    {"ND", "ND", "Not detected", NULL},
};
static const code_table abnormal_table = {"0078", SYS_INTERP, ROWS(abnormal_rows), UNKNOWN_PASS,
                                          "http://terminology.hl7.org/CodeSystem/v2-0078"};

/* HL7 0074 diagnostic service section -> DiagnosticReport.category (kept
 * as is) and Observation.category (laboratory or imaging). */
static const code_table service_section_table = {"0074", NULL, NULL, 0, UNKNOWN_PASS,
                                                 "http://terminology.hl7.org/CodeSystem/v2-0074"};
static const code_row obs_category_rows[] = {
    {"RAD", "imaging", "Imaging", NULL}, {"RX", "imaging", "Imaging", NULL},  {"CT", "imaging", "Imaging", NULL},
    {"NMR", "imaging", "Imaging", NULL}, {"NMS", "imaging", "Imaging", NULL}, {"US", "imaging", "Imaging", NULL},
    {"XRC", "imaging", "Imaging", NULL}, {"RUS", "imaging", "Imaging", NULL}, {"VUS", "imaging", "Imaging", NULL},
    {"OUS", "imaging", "Imaging", NULL}, {"CUS", "imaging", "Imaging", NULL},
};
static const code_table obs_category_table = {"0074", SYS_OBSCAT, ROWS(obs_category_rows), UNKNOWN_DROP, NULL};

/* HL7 0200 name type -> HumanName.use. */
static const code_row name_use_rows[] = {
    {"L", "official", NULL, NULL}, {"D", "usual", NULL, NULL},    {"M", "maiden", NULL, NULL},
    {"N", "nickname", NULL, NULL}, {"A", "usual", NULL, NULL},    {"B", "old", NULL, NULL},
    {"T", "temp", NULL, NULL},     {"S", "anonymous", NULL, NULL},
};
static const code_table name_use_table = {"0200", NULL, ROWS(name_use_rows), UNKNOWN_DROP, NULL};

/* HL7 0190 address type -> Address.use. */
static const code_row address_use_rows[] = {
    {"H", "home", NULL, NULL}, {"B", "work", NULL, NULL}, {"O", "work", NULL, NULL},
    {"C", "temp", NULL, NULL}, {"BA", "billing", NULL, NULL}, {"OLD", "old", NULL, NULL},
};
static const code_table address_use_table = {"0190", NULL, ROWS(address_use_rows), UNKNOWN_DROP, NULL};

/* HL7 0201 telecommunication use code -> ContactPoint.use. */
static const code_row telecom_use_rows[] = {
    {"PRN", "home", NULL, NULL}, {"ORN", "home", NULL, NULL}, {"VHN", "home", NULL, NULL},
    {"WPN", "work", NULL, NULL}, {"PRS", "mobile", NULL, NULL},
};
static const code_table telecom_use_table = {"0201", NULL, ROWS(telecom_use_rows), UNKNOWN_DROP, NULL};

/* HL7 0202 telecommunication equipment type -> ContactPoint.system. */
static const code_row telecom_system_rows[] = {
    {"PH", "phone", NULL, NULL},   {"CP", "phone", NULL, NULL},    {"FX", "fax", NULL, NULL},
    {"BP", "pager", NULL, NULL},   {"Internet", "email", NULL, NULL}, {"X.400", "email", NULL, NULL},
    {"MD", "other", NULL, NULL},   {"TDD", "other", NULL, NULL},   {"TTY", "other", NULL, NULL},
};
static const code_table telecom_system_table = {"0202", NULL, ROWS(telecom_system_rows), UNKNOWN_DROP, NULL};

/* HL7 0396 coding system names -> FHIR code system URIs. */
static const code_row coding_system_rows[] = {
    {"I10", SYS_ICD10, NULL, NULL},     {"ICD10", SYS_ICD10, NULL, NULL},  {"ICD-10", SYS_ICD10, NULL, NULL},
    {"I10UK", SYS_ICD10, NULL, NULL},   {"ICD10UK", SYS_ICD10, NULL, NULL}, {"OPCS4", SYS_OPCS4, NULL, NULL},
    {"OPCS-4", SYS_OPCS4, NULL, NULL},  {"OPCS", SYS_OPCS4, NULL, NULL},   {"OPC", SYS_OPCS4, NULL, NULL},
    {"LN", SYS_LOINC, NULL, NULL},      {"LOINC", SYS_LOINC, NULL, NULL},  {"SCT", SYS_SNOMED, NULL, NULL},
    {"SNOMEDCT", SYS_SNOMED, NULL, NULL}, {"SNOMED CT", SYS_SNOMED, NULL, NULL}, {"SNM", SYS_SNOMED, NULL, NULL},
    {"UCUM", SYS_UCUM, NULL, NULL},     {"READ", "http://read.info/readv2", NULL, NULL},
    {"RD2", "http://read.info/readv2", NULL, NULL}, {"CTV3", "http://read.info/ctv3", NULL, NULL},
    {"DMD", "https://dmd.nhs.uk", NULL, NULL},
};
static const code_table coding_system_table = {"0396", NULL, ROWS(coding_system_rows), UNKNOWN_DROP, NULL};

/* Names under which an assigning authority or identifier type says "this is
 * the NHS number" in PID-3 (CX.4 or CX.5). */
static const char *const nhs_number_names[] = {"NHS", "NHSNBR", "NHSNMBR", "NH", "2.16.840.1.113883.2.1.4.1"};

/* Practitioner identifier systems by assigning authority / identifier type. */
static const code_row practitioner_system_rows[] = {
    {"GMC", "https://fhir.hl7.org.uk/Id/gmc-number", NULL, NULL},
    {"GMP", "https://fhir.hl7.org.uk/Id/gmp-number", NULL, NULL},
    {"GNC", "https://fhir.hl7.org.uk/Id/gmp-number", NULL, NULL},
    {"NMC", "https://fhir.hl7.org.uk/Id/nmc-number", NULL, NULL},
    {"HCPC", "https://fhir.hl7.org.uk/Id/hcpc-number", NULL, NULL},
    {"SDS", "https://fhir.nhs.uk/Id/sds-user-id", NULL, NULL},
};
static const code_table practitioner_system_table = {"practitioner", NULL, ROWS(practitioner_system_rows), UNKNOWN_DROP,
                                                     NULL};

static const code_row *code_lookup(const code_table *t, hl7_str v) {
    for (size_t i = 0; i < t->n; i++)
        if (hl7_str_eq(v, t->rows[i].from)) return &t->rows[i];
    for (size_t i = 0; i < t->n; i++) /* senders vary in case */
        if (hl7_str_ieq(v, t->rows[i].from)) return &t->rows[i];
    return NULL;
}

/* ---- the mapping context ----------------------------------------------- */

typedef struct mctx {
    hl7_msg *m;
    const hl7_map_config *cfg;
    arena *a;
    hl7_error *e;
    const char *facility; /* MSH-4.1: the default assigning authority */
    hl7_mapped *out;
    size_t cap_res, cap_merge;
} mctx;

static status content_error(mctx *c, int code, long seg, int field, int rep, int comp, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static status content_error(mctx *c, int code, long seg, int field, int rep, int comp, const char *fmt, ...) {
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    const char *id = hl7_segment_id(c->m, seg);
    return hl7_fail(c->e, ST_INVALID, HL7_AE, code, id ? id : "", hl7_segment_seq(c->m, seg), (int)seg, field, rep,
                    comp, 0, "%s", text);
}

/* A printable excerpt of a value for error messages. */
static const char *shown(mctx *c, hl7_str s) {
    size_t n = s.n > 40 ? 40 : s.n;
    char *o = arena_alloc(c->a, n + 4);
    for (size_t i = 0; i < n; i++) o[i] = (s.p[i] >= 0x20 && s.p[i] < 0x7f) ? s.p[i] : '?';
    strcpy(o + n, s.n > n ? "..." : "");
    return o;
}

/* Concatenate slices into a NUL-terminated arena string (the hot paths'
 * alternative to arena_printf). */
static char *cat(arena *a, const hl7_str *parts, size_t n) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += parts[i].n;
    char *o = arena_alloc(a, len + 1), *w = o;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].n) memcpy(w, parts[i].p, parts[i].n);
        w += parts[i].n;
    }
    *w = 0;
    return o;
}
#define CAT(a, ...) cat((a), (hl7_str[]){__VA_ARGS__}, sizeof((hl7_str[]){__VA_ARGS__}) / sizeof(hl7_str))
#define S(lit)      ((hl7_str){(lit), sizeof(lit) - 1})
static hl7_str Z(const char *s) { return (hl7_str){s ? s : "", s ? strlen(s) : 0}; }
/* `s` when `cond`, else nothing */
static hl7_str IF(int cond, hl7_str s) { return cond ? s : (hl7_str){"", 0}; }

static hl7_str get(mctx *c, long seg, int field, int rep, int comp, int sub) {
    return hl7_str_trim(hl7_get(c->m, seg, field, rep, comp, sub));
}

/* ---- json helpers ------------------------------------------------------ */

static json_t *jstr(hl7_str s) {
    s = hl7_str_trim(s);
    return s.n ? json_stringn(s.p, s.n) : NULL;
}

static void jset(json_t *o, const char *k, json_t *v) {
    if (v) json_object_set_new(o, k, v);
}

static void jpush(json_t *o, const char *k, json_t *v) {
    if (!v) return;
    json_t *arr = json_object_get(o, k);
    if (!json_is_array(arr)) {
        arr = json_array();
        json_object_set_new(o, k, arr);
    }
    json_array_append_new(arr, v);
}

static json_t *coding(const char *system, const char *code, const char *display) {
    json_t *c = json_object();
    if (system) jset(c, "system", json_string(system));
    if (code) jset(c, "code", json_string(code));
    if (display) jset(c, "display", json_string(display));
    return c;
}

/* A CodeableConcept holding one coding (taken). */
static json_t *concept_of(json_t *coding1) {
    json_t *cc = json_object(), *arr = json_array();
    json_array_append_new(arr, coding1);
    json_object_set_new(cc, "coding", arr);
    return cc;
}

static json_t *concept1(const char *system, const char *code, const char *display) {
    return concept_of(coding(system, code, display));
}

/* A one-element array (taken). */
static json_t *array1(json_t *v) {
    json_t *arr = json_array();
    json_array_append_new(arr, v);
    return arr;
}

/* Put `v` at a dotted path: "a.b" nests objects; a final "x[]" appends;
 * an empty path merges v's members into `o`. Takes `v`. */
static void put_path(json_t *o, const char *path, json_t *v) {
    if (!v) return;
    if (!path || !*path) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_object_set(o, k, x);
        json_decref(v);
        return;
    }
    char key[64];
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    if (n >= sizeof key) n = sizeof key - 1;
    memcpy(key, path, n);
    key[n] = 0;
    if (dot) {
        json_t *child = json_object_get(o, key);
        if (!json_is_object(child)) {
            child = json_object();
            json_object_set_new(o, key, child);
        }
        put_path(child, dot + 1, v);
        return;
    }
    if (n > 2 && strcmp(key + n - 2, "[]") == 0) {
        key[n - 2] = 0;
        jpush(o, key, v);
    } else {
        json_object_set_new(o, key, v);
    }
}

/* ---- identifiers, systems, ids ------------------------------------------ */

static const char *sanitize(mctx *c, hl7_str s) {
    s = hl7_str_trim(s);
    if (!s.n) return "local";
    char *o = arena_alloc(c->a, s.n + 1);
    for (size_t i = 0; i < s.n; i++) {
        char ch = s.p[i];
        o[i] = (isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_') ? ch : '-';
    }
    o[s.n] = 0;
    return o;
}

/* The identifier system for (authority, kind). */
static const char *system_for(mctx *c, hl7_str authority, const char *kind) {
    authority = hl7_str_trim(authority);
    for (size_t i = 0; i < c->cfg->nsystems; i++) {
        const hl7_system_rule *r = &c->cfg->systems[i];
        if (r->authority && !hl7_str_ieq(authority, r->authority)) continue;
        if (r->kind && strcmp(r->kind, kind) != 0) continue;
        return r->system;
    }
    const char *base = c->cfg->id_base ? c->cfg->id_base : "urn:concord:id";
    return CAT(c->a, Z(base), S(":"), Z(authority.n ? sanitize(c, authority) : c->facility), S(":"), Z(kind));
}

/* 32 hex characters: BLAKE2b-128 of type|system|value. */
static const char *make_id(mctx *c, const char *type, const char *system, const char *value) {
    unsigned char h[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)type, strlen(type));
    crypto_generichash_update(&st, (const unsigned char *)"|", 1);
    crypto_generichash_update(&st, (const unsigned char *)system, strlen(system));
    crypto_generichash_update(&st, (const unsigned char *)"|", 1);
    crypto_generichash_update(&st, (const unsigned char *)value, strlen(value));
    crypto_generichash_final(&st, h, sizeof h);
    char *o = arena_alloc(c->a, 33);
    sodium_bin2hex(o, 33, h, sizeof h);
    return o;
}

static json_t *identifier(const char *system, const char *value) {
    json_t *i = json_object();
    jset(i, "system", json_string(system));
    jset(i, "value", json_string(value));
    return i;
}

int hl7_nhs_number_valid(const char *s, size_t n) {
    if (n != 10) return 0;
    int sum = 0;
    for (size_t i = 0; i < 10; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    for (size_t i = 0; i < 9; i++) sum += (s[i] - '0') * (int)(10 - i);
    int check = 11 - sum % 11;
    if (check == 11) check = 0;
    return check != 10 && check == s[9] - '0';
}

static int is_nhs_name(hl7_str s) {
    for (size_t i = 0; i < sizeof nhs_number_names / sizeof nhs_number_names[0]; i++)
        if (hl7_str_ieq(s, nhs_number_names[i])) return 1;
    return 0;
}

/* ---- dates ------------------------------------------------------------- */

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
static int mdays(int y, int m) {
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : d[m - 1];
}
/* Day of week, 0 = Sunday (Sakamoto). */
static int weekday(int y, int m, int d) {
    static const int t[] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
    if (m < 3) y -= 1;
    return (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;
}
static int last_sunday(int y, int m) {
    int d = mdays(y, m);
    return d - weekday(y, m, d);
}
/* British Summer Time for a local wall-clock time: from 01:00 GMT on the last
 * Sunday of March to 01:00 GMT (02:00 BST) on the last Sunday of October.
 * The hour repeated in October is read as BST. */
static int is_bst(int y, int mo, int d, int h) {
    if (mo < 3 || mo > 10) return 0;
    if (mo > 3 && mo < 10) return 1;
    if (mo == 3) {
        int ls = last_sunday(y, 3);
        return d > ls || (d == ls && h >= 1);
    }
    int ls = last_sunday(y, 10);
    return d < ls || (d == ls && h < 2);
}

static int digits(const char *p, size_t n, int *v) {
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        x = x * 10 + (p[i] - '0');
    }
    *v = x;
    return 1;
}

int hl7_dtm_to_fhir(hl7_str s, hl7_zone zone, int date_only, char out[40]) {
    s = hl7_str_trim(s);
    size_t nd = 0;
    while (nd < s.n && isdigit((unsigned char)s.p[nd])) nd++;
    if (nd != 4 && nd != 6 && nd != 8 && nd != 10 && nd != 12 && nd != 14) return -1;
    int y = 0, mo = 1, d = 1, h = 0, mi = 0, se = 0;
    digits(s.p, 4, &y);
    if (y < 1) return -1;
    if (nd >= 6 && (!digits(s.p + 4, 2, &mo) || mo < 1 || mo > 12)) return -1;
    if (nd >= 8 && (!digits(s.p + 6, 2, &d) || d < 1 || d > mdays(y, mo))) return -1;
    if (nd >= 10 && (!digits(s.p + 8, 2, &h) || h > 23)) return -1;
    if (nd >= 12 && (!digits(s.p + 10, 2, &mi) || mi > 59)) return -1;
    if (nd >= 14 && (!digits(s.p + 12, 2, &se) || se > 59)) return -1;
    size_t p = nd;
    const char *frac = NULL;
    size_t nfrac = 0;
    if (p < s.n && s.p[p] == '.') {
        if (nd != 14) return -1;
        frac = s.p + p + 1;
        while (p + 1 + nfrac < s.n && isdigit((unsigned char)frac[nfrac])) nfrac++;
        if (nfrac < 1 || nfrac > 4) return -1;
        p += 1 + nfrac;
    }
    int has_zone = 0, zsign = 1, zh = 0, zm = 0;
    if (p < s.n && (s.p[p] == '+' || s.p[p] == '-')) {
        if (s.n - p != 5 || !digits(s.p + p + 1, 2, &zh) || !digits(s.p + p + 3, 2, &zm) || zh > 14 || zm > 59)
            return -1;
        zsign = s.p[p] == '-' ? -1 : 1;
        has_zone = 1;
        p += 5;
    }
    if (p != s.n) return -1;
    if (nd <= 8 || date_only) {
        if (nd == 4) snprintf(out, 40, "%04d", y);
        else if (nd == 6) snprintf(out, 40, "%04d-%02d", y, mo);
        else snprintf(out, 40, "%04d-%02d-%02d", y, mo, d);
        return 0;
    }
    if (!has_zone) {
        zsign = 1;
        zm = 0;
        zh = zone == HL7_ZONE_EUROPE_LONDON && is_bst(y, mo, d, h) ? 1 : 0;
    }
    int n = snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d", y, mo, d, h, mi, se);
    if (frac) n += snprintf(out + n, 40 - (size_t)n, ".%.*s", (int)nfrac, frac);
    snprintf(out + n, 40 - (size_t)n, "%c%02d:%02d", zsign < 0 ? '-' : '+', zh, zm);
    return 0;
}

/* ---- converters: HL7 data types -> FHIR data types --------------------- */

/* Where a converter reads: segment, field, repetition, and (for
 * single-component rules) component. */
typedef struct at {
    long seg;
    int field, rep, comp;
} at;

typedef json_t *(*conv_fn)(mctx *c, at w, const void *arg, status *rc);

static json_t *conv_string(mctx *c, at w, const void *arg, status *rc) {
    return jstr(hl7_get(c->m, w.seg, w.field, w.rep, w.comp, 0));
}

static json_t *datetime_of(mctx *c, at w, int date_only, status *rc) {
    hl7_str v = get(c, w.seg, w.field, w.rep, w.comp ? w.comp : 1, 0);
    char out[40];
    if (!v.n) return NULL;
    if (hl7_dtm_to_fhir(v, c->cfg->zone, date_only, out) != 0) {
        *rc = content_error(c, HL7_ERR_DATA_TYPE, w.seg, w.field, w.rep, w.comp ? w.comp : 1,
                            "\"%s\" is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])", shown(c, v));
        return NULL;
    }
    return json_string(out);
}

static json_t *conv_date(mctx *c, at w, const void *arg, status *rc) { return datetime_of(c, w, 1, rc); }
static json_t *conv_datetime(mctx *c, at w, const void *arg, status *rc) { return datetime_of(c, w, 0, rc); }

/* FHIR instant: a dateTime with at least seconds and a zone. */
static json_t *conv_instant(mctx *c, at w, const void *arg, status *rc) {
    hl7_str v = get(c, w.seg, w.field, w.rep, w.comp ? w.comp : 1, 0);
    size_t nd = 0;
    while (nd < v.n && isdigit((unsigned char)v.p[nd])) nd++;
    if (v.n && nd < 12) return NULL; /* too coarse for an instant: leave it out */
    return datetime_of(c, w, 0, rc);
}

/* The value looked up in a code table: a code string. */
static const code_row *lookup_or_fail(mctx *c, at w, const code_table *t, hl7_str v, status *rc) {
    const code_row *r = code_lookup(t, v);
    if (!r && t->unknown == UNKNOWN_REJECT)
        *rc = content_error(c, HL7_ERR_TABLE_VALUE, w.seg, w.field, w.rep, w.comp ? w.comp : 1,
                            "\"%s\" is not a value of HL7 table %s", shown(c, v), t->hl7_table);
    return r;
}

static json_t *conv_code(mctx *c, at w, const void *arg, status *rc) {
    const code_table *t = arg;
    hl7_str v = get(c, w.seg, w.field, w.rep, w.comp ? w.comp : 1, 0);
    if (!v.n) return NULL;
    const code_row *r = lookup_or_fail(c, w, t, v, rc);
    if (r) return r->code ? json_string(r->code) : NULL;
    if (t->unknown == UNKNOWN_PASS) return jstr(v);
    return NULL;
}

static json_t *row_coding(const code_table *t, const code_row *r) {
    return coding(r->system ? r->system : t->system, r->code, r->display);
}

static json_t *conv_coding(mctx *c, at w, const void *arg, status *rc) {
    const code_table *t = arg;
    hl7_str v = get(c, w.seg, w.field, w.rep, w.comp ? w.comp : 1, 0);
    if (!v.n) return NULL;
    const code_row *r = lookup_or_fail(c, w, t, v, rc);
    if (r) return r->code ? row_coding(t, r) : NULL;
    if (t->unknown == UNKNOWN_PASS) {
        json_t *cd = coding(t->pass_system, NULL, NULL);
        jset(cd, "code", jstr(v));
        return cd;
    }
    return NULL;
}

static json_t *conv_concept(mctx *c, at w, const void *arg, status *rc) {
    json_t *cd = conv_coding(c, w, arg, rc);
    if (!cd) return NULL;
    json_t *cc = json_object();
    jpush(cc, "coding", cd);
    return cc;
}

/* The code system of a CE/CWE coding-system name (table 0396). */
static const char *coding_system(mctx *c, hl7_str name, const char *dflt) {
    name = hl7_str_trim(name);
    if (!name.n) return dflt ? dflt : system_for(c, Z(c->facility), "code");
    const code_row *r = code_lookup(&coding_system_table, name);
    if (r) return r->code;
    if (name.n > 5 && memcmp(name.p, "HL7", 3) == 0 && isdigit((unsigned char)name.p[3]))
        return CAT(c->a, S("http://terminology.hl7.org/CodeSystem/v2-"), ((hl7_str){name.p + 3, name.n - 3}));
    return CAT(c->a, Z(system_for(c, Z(c->facility), "code")), S(":"), Z(sanitize(c, name)));
}

/* CE / CWE / CNE: code ^ text ^ system ^ alt code ^ alt text ^ alt system. */
static json_t *conv_ce(mctx *c, at w, const void *arg, status *rc) {
    const char *dflt = arg;
    json_t *cc = json_object();
    for (int k = 0; k < 2; k++) {
        hl7_str code = get(c, w.seg, w.field, w.rep, 1 + 3 * k, 0);
        hl7_str text = get(c, w.seg, w.field, w.rep, 2 + 3 * k, 0);
        if (!code.n) continue;
        json_t *cd = coding(coding_system(c, get(c, w.seg, w.field, w.rep, 3 + 3 * k, 0), k ? NULL : dflt), NULL,
                            NULL);
        jset(cd, "code", jstr(code));
        jset(cd, "display", jstr(text));
        jpush(cc, "coding", cd);
    }
    hl7_str text = get(c, w.seg, w.field, w.rep, 2, 0);
    if (!text.n) text = get(c, w.seg, w.field, w.rep, 5, 0);
    jset(cc, "text", jstr(text));
    if (json_object_size(cc) == 0) {
        json_decref(cc);
        return NULL;
    }
    return cc;
}

/* A CodeableConcept with only text (or a coding without a system). */
static json_t *conv_text_concept(mctx *c, at w, const void *arg, status *rc) {
    json_t *t = jstr(get(c, w.seg, w.field, w.rep, w.comp ? w.comp : 1, 0));
    if (!t) return NULL;
    json_t *cc = json_object();
    jset(cc, "text", t);
    return cc;
}

static json_t *conv_yes(mctx *c, at w, const void *arg, status *rc) {
    hl7_str v = get(c, w.seg, w.field, w.rep, 1, 0);
    return hl7_str_ieq(v, "Y") ? json_true() : NULL;
}

/* XPN: family ^ given ^ middle ^ suffix ^ prefix ^ degree ^ name type. */
static json_t *conv_xpn(mctx *c, at w, const void *arg, status *rc) {
    json_t *n = json_object();
    const code_row *use = code_lookup(&name_use_table, get(c, w.seg, w.field, w.rep, 7, 0));
    if (use) jset(n, "use", json_string(use->code));
    jset(n, "family", jstr(get(c, w.seg, w.field, w.rep, 1, 1)));
    jpush(n, "given", jstr(get(c, w.seg, w.field, w.rep, 2, 0)));
    jpush(n, "given", jstr(get(c, w.seg, w.field, w.rep, 3, 0)));
    jpush(n, "prefix", jstr(get(c, w.seg, w.field, w.rep, 5, 0)));
    jpush(n, "suffix", jstr(get(c, w.seg, w.field, w.rep, 4, 0)));
    if (!json_object_get(n, "family") && !json_object_get(n, "given")) {
        json_decref(n);
        return NULL;
    }
    return n;
}

/* XAD: street ^ other designation ^ city ^ state/county ^ postcode ^
 * country ^ address type. */
static json_t *conv_xad(mctx *c, at w, const void *arg, status *rc) {
    json_t *ad = json_object();
    const code_row *use = code_lookup(&address_use_table, get(c, w.seg, w.field, w.rep, 7, 0));
    if (use) jset(ad, "use", json_string(use->code));
    if (hl7_str_ieq(get(c, w.seg, w.field, w.rep, 7, 0), "M")) jset(ad, "type", json_string("postal"));
    jpush(ad, "line", jstr(get(c, w.seg, w.field, w.rep, 1, 1)));
    jpush(ad, "line", jstr(get(c, w.seg, w.field, w.rep, 2, 0)));
    jset(ad, "city", jstr(get(c, w.seg, w.field, w.rep, 3, 0)));
    jset(ad, "district", jstr(get(c, w.seg, w.field, w.rep, 4, 0)));
    jset(ad, "postalCode", jstr(get(c, w.seg, w.field, w.rep, 5, 0)));
    jset(ad, "country", jstr(get(c, w.seg, w.field, w.rep, 6, 0)));
    if (!json_object_get(ad, "line") && !json_object_get(ad, "city") && !json_object_get(ad, "postalCode")) {
        json_decref(ad);
        return NULL;
    }
    return ad;
}

/* XTN: number ^ use (0201) ^ equipment (0202) ^ email ^ country ^ area ^
 * local number ^ extension ... ^ unformatted number (12). `arg` is the
 * default use ("home" for PID-13, "work" for PID-14). */
static json_t *conv_xtn(mctx *c, at w, const void *arg, status *rc) {
    hl7_str value = get(c, w.seg, w.field, w.rep, 1, 0);
    hl7_str use = get(c, w.seg, w.field, w.rep, 2, 0);
    hl7_str equip = get(c, w.seg, w.field, w.rep, 3, 0);
    hl7_str email = get(c, w.seg, w.field, w.rep, 4, 0);
    const char *system = "phone";
    const code_row *r = code_lookup(&telecom_system_table, equip);
    if (r) system = r->code;
    if (hl7_str_ieq(use, "NET") || (!value.n && email.n)) {
        system = "email";
        if (email.n) value = email;
    }
    if (!value.n) value = get(c, w.seg, w.field, w.rep, 12, 0);
    if (!value.n) {
        hl7_str area = get(c, w.seg, w.field, w.rep, 6, 0), local = get(c, w.seg, w.field, w.rep, 7, 0);
        if (local.n) {
            value = Z(CAT(c->a, area, IF(area.n > 0, S(" ")), local));
        }
    }
    if (!value.n) return NULL;
    json_t *t = json_object();
    jset(t, "system", json_string(system));
    jset(t, "value", jstr(value));
    const code_row *u = code_lookup(&telecom_use_table, use);
    const char *use_code = u ? u->code : arg;
    if (hl7_str_eq(equip, "CP")) use_code = "mobile";
    if (use_code) jset(t, "use", json_string(use_code));
    return t;
}

/* CX of PID-2/PID-3: id ^ check digit ^ scheme ^ authority (HD) ^ type ^
 * assigning facility. The NHS number (by authority or type) must pass its
 * modulus 11 check. */
static json_t *conv_cx_patient(mctx *c, at w, const void *arg, status *rc) {
    hl7_str id = get(c, w.seg, w.field, w.rep, 1, 0);
    if (!id.n) return NULL;
    hl7_str auth = get(c, w.seg, w.field, w.rep, 4, 1);
    if (!auth.n) auth = get(c, w.seg, w.field, w.rep, 4, 2);
    hl7_str type = get(c, w.seg, w.field, w.rep, 5, 0);
    if (is_nhs_name(auth) || is_nhs_name(type)) {
        char digits10[16];
        size_t k = 0;
        for (size_t i = 0; i < id.n; i++) {
            if (id.p[i] == ' ' || id.p[i] == '-') continue;
            if (k == 12) break;
            digits10[k++] = id.p[i];
        }
        digits10[k] = 0;
        if (!hl7_nhs_number_valid(digits10, k)) {
            *rc = content_error(c, HL7_ERR_DATA_TYPE, w.seg, w.field, w.rep, 1,
                                "NHS number \"%s\" is not 10 digits with a valid modulus 11 check digit",
                                shown(c, id));
            return NULL;
        }
        json_t *i = identifier(SYS_NHS_NUMBER, digits10);
        json_object_set_new(i, "use", json_string("official"));
        return i;
    }
    if (!auth.n) auth = get(c, w.seg, w.field, w.rep, 6, 1);
    char kind[16];
    snprintf(kind, sizeof kind, "%s", type.n ? sanitize(c, type) : "MR");
    json_t *i = json_object();
    if (hl7_str_eq(type, "MR") || !type.n) jset(i, "use", json_string("usual"));
    if (type.n) jset(i, "type", concept1(SYS_V2_0203, kind, NULL));
    jset(i, "system", json_string(system_for(c, auth, kind)));
    jset(i, "value", jstr(id)); /* the assigning authority is in the system */
    return i;
}

/* CX of PV1-19: the visit number, keyed per assigning authority. */
static json_t *conv_cx_visit(mctx *c, at w, const void *arg, status *rc) {
    hl7_str id = get(c, w.seg, w.field, w.rep, 1, 0);
    if (!id.n) return NULL;
    hl7_str auth = get(c, w.seg, w.field, w.rep, 4, 1);
    if (!auth.n) auth = get(c, w.seg, w.field, w.rep, 6, 1);
    json_t *i = json_object();
    jset(i, "use", json_string("official"));
    jset(i, "type", concept1(SYS_V2_0203, "VN", "Visit number"));
    jset(i, "system", json_string(system_for(c, auth, "VN")));
    jset(i, "value", jstr(id));
    return i;
}

/* XCN: id ^ family ^ given ^ middle ^ suffix ^ prefix ^ degree ^ source ^
 * authority (9) ^ ... ^ identifier type (13). A logical reference to a
 * Practitioner (concord keeps no Practitioner resources from HL7). */
static json_t *practitioner_ref(mctx *c, at w) {
    hl7_str id = get(c, w.seg, w.field, w.rep, 1, 0);
    hl7_str family = get(c, w.seg, w.field, w.rep, 2, 1), given = get(c, w.seg, w.field, w.rep, 3, 0);
    hl7_str prefix = get(c, w.seg, w.field, w.rep, 6, 0);
    if (!id.n && !family.n) return NULL;
    json_t *ref = json_object();
    jset(ref, "type", json_string("Practitioner"));
    if (id.n) {
        hl7_str auth = get(c, w.seg, w.field, w.rep, 9, 1), type = get(c, w.seg, w.field, w.rep, 13, 0);
        const code_row *r = code_lookup(&practitioner_system_table, auth);
        if (!r) r = code_lookup(&practitioner_system_table, type);
        const char *system = r ? r->code : system_for(c, auth, "practitioner");
        json_t *i = identifier(system, hl7_str_dup(c->a, id));
        jset(ref, "identifier", i);
    }
    if (family.n || given.n) {
        jset(ref, "display", jstr(Z(CAT(c->a, prefix, IF(prefix.n > 0, S(" ")), given, IF(given.n > 0, S(" ")), family))));
    }
    return ref;
}

static json_t *conv_xcn_ref(mctx *c, at w, const void *arg, status *rc) { return practitioner_ref(c, w); }

/* Encounter.participant: {type: [v3 ParticipationType `arg`], individual}. */
static json_t *conv_participant(mctx *c, at w, const void *arg, status *rc) {
    json_t *ref = practitioner_ref(c, w);
    if (!ref) return NULL;
    json_t *p = json_object();
    json_t *types = json_array();
    json_array_append_new(types, concept1(SYS_PARTTYPE, arg, NULL));
    jset(p, "type", types);
    jset(p, "individual", ref);
    return p;
}

/* Procedure.performer: {actor}. */
static json_t *conv_performer(mctx *c, at w, const void *arg, status *rc) {
    json_t *ref = practitioner_ref(c, w);
    if (!ref) return NULL;
    json_t *p = json_object();
    jset(p, "actor", ref);
    return p;
}

/* XON: name ^ type ^ id ^ ... ^ organization identifier (10). The ODS code
 * of an organisation (PD1-3: the registered GP practice). */
static json_t *conv_xon_ref(mctx *c, at w, const void *arg, status *rc) {
    hl7_str name = get(c, w.seg, w.field, w.rep, 1, 0);
    hl7_str code = get(c, w.seg, w.field, w.rep, 10, 0);
    if (!code.n) code = get(c, w.seg, w.field, w.rep, 3, 0);
    if (!code.n && !name.n) return NULL;
    json_t *ref = json_object();
    jset(ref, "type", json_string("Organization"));
    if (code.n) jset(ref, "identifier", identifier(SYS_ODS, hl7_str_dup(c->a, code)));
    jset(ref, "display", jstr(name));
    return ref;
}

/* PL: point of care ^ room ^ bed ^ facility ^ status ^ type ^ building ^
 * floor ^ description. `arg`: the Encounter.location status. */
static json_t *conv_pl(mctx *c, at w, const void *arg, status *rc) {
    hl7_str poc = get(c, w.seg, w.field, w.rep, 1, 0), room = get(c, w.seg, w.field, w.rep, 2, 0),
            bed = get(c, w.seg, w.field, w.rep, 3, 0), fac = get(c, w.seg, w.field, w.rep, 4, 1),
            desc = get(c, w.seg, w.field, w.rep, 9, 0);
    if (!poc.n && !room.n && !bed.n) return NULL;
    char *value = CAT(c->a, poc, IF(room.n > 0, S("/")), room, IF(bed.n > 0, S("/")), bed);
    char *display = desc.n ? hl7_str_dup(c->a, desc)
                           : CAT(c->a, poc, IF(room.n > 0, S(", room ")), room, IF(bed.n > 0, S(", bed ")), bed);
    json_t *ref = json_object();
    jset(ref, "identifier", identifier(system_for(c, fac, "location"), value));
    jset(ref, "display", json_string(display));
    json_t *l = json_object();
    jset(l, "location", ref);
    jset(l, "status", json_string(arg));
    return l;
}

/* PV1-4 as NHS admission method: the UK Core extension. */
static json_t *conv_admission_method(mctx *c, at w, const void *arg, status *rc) {
    hl7_str v = get(c, w.seg, w.field, w.rep, 1, 0);
    const code_row *r = code_lookup(&admission_method_table, v);
    if (!r) return NULL;
    json_t *ext = json_object();
    jset(ext, "url", json_string(EXT_ADM_METHOD));
    jset(ext, "valueCodeableConcept", concept1(SYS_ADM_METHOD, r->from, r->display));
    return ext;
}

/* PV1-4 -> Encounter.priority: from the NHS admission method (elective or
 * emergency) or from HL7 0007 admission type. */
static json_t *conv_admission_priority(mctx *c, at w, const void *arg, status *rc) {
    hl7_str v = get(c, w.seg, w.field, w.rep, 1, 0);
    const code_row *r = code_lookup(&admission_method_table, v);
    if (r) {
        if (!r->code) return NULL;
        const code_row *p = code_lookup(&priority_table, (hl7_str){r->code, strlen(r->code)});
        return p ? concept_of(row_coding(&priority_table, p)) : NULL;
    }
    r = code_lookup(&admission_type_table, v);
    return r ? concept_of(row_coding(&admission_type_table, r)) : NULL;
}

/* ---- numbers and quantities (OBX) -------------------------------------- */

/* An HL7 NM as FHIR decimal text: optional '-', digits without leading
 * zeros, optional fraction. Returns 0 or -1. */
static int nm_normalise(hl7_str v, char out[48]) {
    v = hl7_str_trim(v);
    size_t i = 0, k = 0;
    if (!v.n || v.n > 40) return -1;
    int neg = 0;
    if (v.p[i] == '+' || v.p[i] == '-') neg = v.p[i++] == '-';
    size_t is = i;
    while (i < v.n && isdigit((unsigned char)v.p[i])) i++;
    size_t ie = i, fs = i, fe = i;
    if (i < v.n && v.p[i] == '.') {
        fs = ++i;
        while (i < v.n && isdigit((unsigned char)v.p[i])) i++;
        fe = i;
    }
    if (i != v.n || (ie == is && fe == fs)) return -1;
    while (is < ie - 1 && v.p[is] == '0') is++;
    if (ie - is + (fe - fs) > 18) return -1; /* beyond what a double or int64 carries */
    if (neg) out[k++] = '-';
    if (ie == is) out[k++] = '0';
    else for (size_t j = is; j < ie; j++) out[k++] = v.p[j];
    if (fe > fs) {
        out[k++] = '.';
        for (size_t j = fs; j < fe; j++) out[k++] = v.p[j];
    }
    out[k] = 0;
    if (neg && strspn(out + 1, "0.") == k - 1) memmove(out, out + 1, k); /* no negative zero */
    return 0;
}

/* A JSON number that keeps its written text (see hl7_map.h). */
static json_t *decimal(const char *text) {
    char wrapped[64];
    json_error_t je;
    int n = snprintf(wrapped, sizeof wrapped, "[%s]", text);
    json_t *arr = fhir_json_load(wrapped, (size_t)n, &je);
    if (!arr) return NULL;
    json_t *v = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return v;
}

/* A Quantity of `num` (NM text) with the units of OBX-6. */
static json_t *quantity(mctx *c, long seg, const char *num) {
    json_t *q = json_object();
    jset(q, "value", decimal(num));
    hl7_str ucode = get(c, seg, 6, 1, 1, 0), utext = get(c, seg, 6, 1, 2, 0), usys = get(c, seg, 6, 1, 3, 0);
    jset(q, "unit", jstr(utext.n ? utext : ucode));
    if (ucode.n && usys.n) {
        jset(q, "system", json_string(coding_system(c, usys, NULL)));
        jset(q, "code", jstr(ucode));
    }
    return q;
}

static json_t *nm_quantity(mctx *c, at w, hl7_str v, status *rc) {
    char num[48];
    if (nm_normalise(v, num) != 0) {
        *rc = content_error(c, HL7_ERR_DATA_TYPE, w.seg, w.field, w.rep, w.comp,
                            "\"%s\" is not a number (HL7 NM)", shown(c, v));
        return NULL;
    }
    return quantity(c, w.seg, num);
}

/* SN: comparator ^ num1 ^ separator/suffix ^ num2. */
static json_t *sn_value(mctx *c, at w, status *rc) {
    hl7_str cmp = get(c, w.seg, 5, w.rep, 1, 0), n1 = get(c, w.seg, 5, w.rep, 2, 0),
            sep = get(c, w.seg, 5, w.rep, 3, 0), n2 = get(c, w.seg, 5, w.rep, 4, 0);
    char a[48], b[48];
    if (!n1.n) return NULL;
    if (nm_normalise(n1, a) != 0) {
        *rc = content_error(c, HL7_ERR_DATA_TYPE, w.seg, 5, w.rep, 2, "\"%s\" is not a number (HL7 SN)", shown(c, n1));
        return NULL;
    }
    if (n2.n && nm_normalise(n2, b) != 0) {
        *rc = content_error(c, HL7_ERR_DATA_TYPE, w.seg, 5, w.rep, 4, "\"%s\" is not a number (HL7 SN)", shown(c, n2));
        return NULL;
    }
    json_t *v = json_object();
    if (n2.n && (hl7_str_eq(sep, "-") || hl7_str_eq(sep, "^"))) {
        json_t *r = json_object();
        jset(r, "low", quantity(c, w.seg, a));
        jset(r, "high", quantity(c, w.seg, b));
        jset(v, "valueRange", r);
    } else if (n2.n && (hl7_str_eq(sep, ":") || hl7_str_eq(sep, "/"))) {
        json_t *r = json_object(), *num = json_object(), *den = json_object();
        jset(num, "value", decimal(a));
        jset(den, "value", decimal(b));
        jset(r, "numerator", num);
        jset(r, "denominator", den);
        jset(v, "valueRatio", r);
    } else if (!n2.n && !sep.n &&
               (!cmp.n || hl7_str_eq(cmp, "<") || hl7_str_eq(cmp, ">") || hl7_str_eq(cmp, "<=") ||
                hl7_str_eq(cmp, ">=") || hl7_str_eq(cmp, "="))) {
        json_t *q = quantity(c, w.seg, a);
        if (cmp.n && !hl7_str_eq(cmp, "=")) jset(q, "comparator", jstr(cmp));
        jset(v, "valueQuantity", q);
    } else {
        char *s = arena_printf(c->a, "%.*s%.*s%.*s%.*s", (int)cmp.n, cmp.p, (int)n1.n, n1.p, (int)sep.n, sep.p,
                               (int)n2.n, n2.p);
        jset(v, "valueString", json_string(s));
    }
    return v;
}

typedef enum value_kind { VK_QUANTITY, VK_STRING, VK_CONCEPT, VK_SN, VK_DATE, VK_DATETIME, VK_TIME, VK_ABSENT } value_kind;

/* HL7 0125 value type -> how OBX-5 becomes Observation.value[x]. */
static const struct {
    const char *type;
    value_kind kind;
} value_types[] = {
    {"NM", VK_QUANTITY}, {"ST", VK_STRING},   {"TX", VK_STRING}, {"FT", VK_STRING},    {"CE", VK_CONCEPT},
    {"CWE", VK_CONCEPT}, {"CNE", VK_CONCEPT}, {"CF", VK_CONCEPT}, {"SN", VK_SN},       {"DT", VK_DATE},
    {"TS", VK_DATETIME}, {"DTM", VK_DATETIME}, {"TM", VK_TIME},   {"ID", VK_STRING},    {"IS", VK_STRING},
};

/* OBX-5 by OBX-2: an object holding the one value[x] member. */
static json_t *conv_obx_value(mctx *c, at w, const void *arg, status *rc) {
    hl7_str type = get(c, w.seg, 2, 1, 1, 0);
    hl7_str first = hl7_raw(c->m, w.seg, 5, 0, 0, 0);
    if (!first.n) return NULL;
    if (!type.n) {
        *rc = content_error(c, HL7_ERR_REQUIRED_FIELD, w.seg, 2, 0, 0, "OBX-2 value type is missing but OBX-5 has a value");
        return NULL;
    }
    value_kind kind = VK_ABSENT;
    for (size_t i = 0; i < sizeof value_types / sizeof value_types[0]; i++)
        if (hl7_str_ieq(type, value_types[i].type)) kind = value_types[i].kind;
    json_t *v = json_object();
    at w1 = {w.seg, 5, 1, 1};
    switch (kind) {
    case VK_QUANTITY: {
        json_t *q = nm_quantity(c, w1, get(c, w.seg, 5, 1, 0, 0), rc);
        if (!q) break;
        jset(v, "valueQuantity", q);
        break;
    }
    case VK_STRING: {
        /* repetitions are lines of text */
        int nrep = hl7_rep_count(c->m, w.seg, 5);
        size_t total = 0;
        for (int r = 1; r <= nrep; r++) total += hl7_get(c->m, w.seg, 5, r, 0, 0).n + 1;
        char *s = arena_alloc(c->a, total + 1);
        size_t k = 0;
        for (int r = 1; r <= nrep; r++) {
            hl7_str line = hl7_get(c->m, w.seg, 5, r, 0, 0);
            if (r > 1) s[k++] = '\n';
            memcpy(s + k, line.p, line.n);
            k += line.n;
        }
        jset(v, "valueString", jstr((hl7_str){s, k}));
        break;
    }
    case VK_CONCEPT: jset(v, "valueCodeableConcept", conv_ce(c, w1, NULL, rc)); break;
    case VK_SN: {
        json_t *sn = sn_value(c, w1, rc);
        if (sn) {
            json_object_update(v, sn);
            json_decref(sn);
        }
        break;
    }
    case VK_DATE:
    case VK_DATETIME: jset(v, "valueDateTime", datetime_of(c, w1, kind == VK_DATE, rc)); break;
    case VK_TIME: {
        hl7_str t = get(c, w.seg, 5, 1, 1, 0);
        int h, mi = 0, s = 0;
        if (!(t.n >= 2 && digits(t.p, 2, &h) && h < 24 && (t.n < 4 || (digits(t.p + 2, 2, &mi) && mi < 60)) &&
              (t.n < 6 || (digits(t.p + 4, 2, &s) && s < 60)) && (t.n == 2 || t.n == 4 || t.n == 6))) {
            *rc = content_error(c, HL7_ERR_DATA_TYPE, w.seg, 5, 1, 1, "\"%s\" is not an HL7 time (HHMM[SS])", shown(c, t));
            break;
        }
        jset(v, "valueTime", json_string(arena_printf(c->a, "%02d:%02d:%02d", h, mi, s)));
        break;
    }
    case VK_ABSENT: {
        /* ED, RP and other types we do not store as values */
        jset(v, "dataAbsentReason", concept1(SYS_ABSENT, "unsupported", "Unsupported"));
        break;
    }
    }
    if (*rc != ST_OK || json_object_size(v) == 0) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* OBX-7 reference range: "3.5-5.0", "<5", ">=2", or text. */
static json_t *conv_range(mctx *c, at w, const void *arg, status *rc) {
    hl7_str v = get(c, w.seg, 7, 1, 1, 0);
    if (!v.n) return NULL;
    json_t *r = json_object();
    char a[48], b[48];
    const char *p = v.p, *end = v.p + v.n;
    if (*p == '<' || *p == '>') {
        int low = *p == '>';
        p++;
        if (p < end && *p == '=') p++;
        if (nm_normalise((hl7_str){p, (size_t)(end - p)}, a) == 0) {
            jset(r, low ? "low" : "high", quantity(c, w.seg, a));
        }
    } else {
        /* the '-' that separates: not a leading sign, not right after another '-' */
        for (const char *q = p + 1; q < end; q++) {
            if (*q != '-' || q[-1] == '-' || q[-1] == 'e' || q[-1] == 'E') continue;
            if (nm_normalise((hl7_str){p, (size_t)(q - p)}, a) == 0 &&
                nm_normalise((hl7_str){q + 1, (size_t)(end - q - 1)}, b) == 0) {
                jset(r, "low", quantity(c, w.seg, a));
                jset(r, "high", quantity(c, w.seg, b));
                break;
            }
        }
    }
    jset(r, "text", jstr(v));
    return r;
}

/* ---- field rules ------------------------------------------------------- */

enum { RULE_REQUIRED = 1, RULE_ALL_REPS = 2 };

typedef enum conv_kind {
    CV_STRING, CV_DATE, CV_DATETIME, CV_INSTANT, CV_CODE, CV_CODING, CV_CONCEPT, CV_CE, CV_TEXT_CONCEPT, CV_YES,
    CV_XPN, CV_XAD, CV_XTN, CV_CX_PATIENT, CV_CX_VISIT, CV_XCN_REF, CV_PARTICIPANT, CV_PERFORMER, CV_XON_REF, CV_PL,
    CV_ADMISSION_METHOD, CV_ADMISSION_PRIORITY, CV_OBX_VALUE, CV_RANGE
} conv_kind;

static const conv_fn converters[] = {
    [CV_STRING] = conv_string,
    [CV_DATE] = conv_date,
    [CV_DATETIME] = conv_datetime,
    [CV_INSTANT] = conv_instant,
    [CV_CODE] = conv_code,
    [CV_CODING] = conv_coding,
    [CV_CONCEPT] = conv_concept,
    [CV_CE] = conv_ce,
    [CV_TEXT_CONCEPT] = conv_text_concept,
    [CV_YES] = conv_yes,
    [CV_XPN] = conv_xpn,
    [CV_XAD] = conv_xad,
    [CV_XTN] = conv_xtn,
    [CV_CX_PATIENT] = conv_cx_patient,
    [CV_CX_VISIT] = conv_cx_visit,
    [CV_XCN_REF] = conv_xcn_ref,
    [CV_PARTICIPANT] = conv_participant,
    [CV_PERFORMER] = conv_performer,
    [CV_XON_REF] = conv_xon_ref,
    [CV_PL] = conv_pl,
    [CV_ADMISSION_METHOD] = conv_admission_method,
    [CV_ADMISSION_PRIORITY] = conv_admission_priority,
    [CV_OBX_VALUE] = conv_obx_value,
    [CV_RANGE] = conv_range,
};

typedef struct field_rule {
    const char *seg; /* NULL: the resource's own segment; else the first such segment of its group */
    unsigned char field, comp, flags;
    conv_kind conv;
    const char *path; /* FHIR element path; "" merges an object's members */
    const void *arg;
} field_rule;

#define NRULES(r) r, sizeof r / sizeof r[0]

static const field_rule patient_rules[] = {
    {NULL, 2, 0, RULE_ALL_REPS, CV_CX_PATIENT, "identifier[]", NULL},
    {NULL, 3, 0, RULE_ALL_REPS, CV_CX_PATIENT, "identifier[]", NULL},
    {NULL, 5, 0, RULE_ALL_REPS, CV_XPN, "name[]", NULL},
    {NULL, 7, 1, 0, CV_DATE, "birthDate", NULL},
    {NULL, 8, 1, 0, CV_CODE, "gender", &sex_table},
    {NULL, 11, 0, RULE_ALL_REPS, CV_XAD, "address[]", NULL},
    {NULL, 13, 0, RULE_ALL_REPS, CV_XTN, "telecom[]", "home"},
    {NULL, 14, 0, RULE_ALL_REPS, CV_XTN, "telecom[]", "work"},
    {NULL, 29, 1, 0, CV_DATETIME, "deceasedDateTime", NULL},
    {NULL, 30, 1, 0, CV_YES, "deceasedBoolean", NULL},
    {"PD1", 3, 0, RULE_ALL_REPS, CV_XON_REF, "generalPractitioner[]", NULL},
    {"PD1", 4, 0, RULE_ALL_REPS, CV_XCN_REF, "generalPractitioner[]", NULL},
};

static const field_rule encounter_rules[] = {
    {NULL, 19, 0, RULE_REQUIRED, CV_CX_VISIT, "identifier[]", NULL},
    {NULL, 2, 1, RULE_REQUIRED, CV_CODING, "class", &patient_class_table},
    {NULL, 2, 1, 0, CV_CONCEPT, "type[]", &encounter_type_table},
    {NULL, 4, 1, 0, CV_ADMISSION_METHOD, "extension[]", NULL},
    {NULL, 4, 1, 0, CV_ADMISSION_PRIORITY, "priority", NULL},
    {NULL, 10, 1, 0, CV_TEXT_CONCEPT, "serviceType", NULL},
    {NULL, 7, 0, RULE_ALL_REPS, CV_PARTICIPANT, "participant[]", "ATND"},
    {NULL, 17, 0, RULE_ALL_REPS, CV_PARTICIPANT, "participant[]", "ADM"},
    {NULL, 8, 0, RULE_ALL_REPS, CV_PARTICIPANT, "participant[]", "REF"},
    {NULL, 9, 0, RULE_ALL_REPS, CV_PARTICIPANT, "participant[]", "CON"},
    {NULL, 44, 1, 0, CV_DATETIME, "period.start", NULL},
    {NULL, 45, 1, 0, CV_DATETIME, "period.end", NULL},
    {NULL, 14, 1, 0, CV_CONCEPT, "hospitalization.admitSource", &(code_table){"0023", NULL, NULL, 0, UNKNOWN_PASS, "http://terminology.hl7.org/CodeSystem/v2-0023"}},
    {NULL, 36, 1, 0, CV_CONCEPT, "hospitalization.dischargeDisposition", &discharge_table},
    {NULL, 3, 0, 0, CV_PL, "location[]", "active"},
    {NULL, 6, 0, 0, CV_PL, "location[]", "completed"},
};

static const field_rule condition_rules[] = {
    {NULL, 3, 0, 0, CV_CE, "code", SYS_ICD10},
    {NULL, 6, 1, 0, CV_CONCEPT, "verificationStatus", &diagnosis_type_table},
    {NULL, 5, 1, 0, CV_DATETIME, "recordedDate", NULL},
    {NULL, 16, 0, 0, CV_XCN_REF, "asserter", NULL},
};

static const field_rule procedure_rules[] = {
    {NULL, 3, 0, RULE_REQUIRED, CV_CE, "code", SYS_OPCS4},
    {NULL, 5, 1, 0, CV_DATETIME, "performedDateTime", NULL},
    {NULL, 11, 0, RULE_ALL_REPS, CV_PERFORMER, "performer[]", NULL},
};

static const field_rule report_rules[] = {
    {NULL, 25, 1, 0, CV_CODE, "status", &report_status_table},
    {NULL, 24, 1, 0, CV_CONCEPT, "category[]", &service_section_table},
    {NULL, 4, 0, RULE_REQUIRED, CV_CE, "code", NULL},
    {NULL, 7, 1, 0, CV_DATETIME, "effectiveDateTime", NULL},
    {NULL, 22, 1, 0, CV_INSTANT, "issued", NULL},
};

static const field_rule observation_rules[] = {
    {NULL, 11, 1, RULE_REQUIRED, CV_CODE, "status", &obs_status_table},
    {NULL, 3, 0, RULE_REQUIRED, CV_CE, "code", NULL},
    {NULL, 14, 1, 0, CV_DATETIME, "effectiveDateTime", NULL},
    {NULL, 5, 0, 0, CV_OBX_VALUE, "", NULL},
    {NULL, 8, 1, RULE_ALL_REPS, CV_CONCEPT, "interpretation[]", &abnormal_table},
    {NULL, 7, 1, 0, CV_RANGE, "referenceRange[]", NULL},
};

/* The first segment named `id` in [from, to). */
static long find_in(mctx *c, const char *id, long from, long to) {
    long s = hl7_segment_find(c->m, id, from);
    return s >= 0 && s < to ? s : -1;
}

static const char *field_name(mctx *c, long seg, int field) {
    return arena_printf(c->a, "%s-%d", hl7_segment_id(c->m, seg), field);
}

/* Run `rules` for the resource made from segment `anchor`, whose group
 * (for rules that read another segment) is [gfrom, gto). */
static status apply_rules(mctx *c, json_t *res, const field_rule *rules, size_t n, long anchor, long gfrom, long gto) {
    status rc = ST_OK;
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        const field_rule *r = &rules[i];
        long seg = r->seg ? find_in(c, r->seg, gfrom, gto) : anchor;
        if (seg < 0) continue;
        int nrep = (r->flags & RULE_ALL_REPS) ? hl7_rep_count(c->m, seg, r->field) : 1;
        int produced = 0;
        for (int rep = 1; rep <= nrep && rc == ST_OK; rep++) {
            at w = {seg, r->field, rep, r->comp};
            json_t *v = converters[r->conv](c, w, r->arg, &rc);
            if (rc != ST_OK) {
                json_decref(v);
                break;
            }
            if (v) {
                produced++;
                put_path(res, r->path, v);
            }
        }
        if (rc == ST_OK && !produced && (r->flags & RULE_REQUIRED)) {
            rc = content_error(c, HL7_ERR_REQUIRED_FIELD, seg, r->field, 0, r->comp, "%s is required and missing",
                               field_name(c, seg, r->field));
        }
    }
    return rc;
}

/* ---- output ------------------------------------------------------------ */

static hl7_resource *add_resource(mctx *c, const char *type, json_t *json, const char *key_system,
                                  const char *key_value, hl7_apply apply, long seg) {
    hl7_mapped *o = c->out;
    if (o->nres == c->cap_res) {
        size_t cap = c->cap_res ? c->cap_res * 2 : 8;
        hl7_resource *v = arena_alloc(c->a, cap * sizeof *v);
        if (o->nres) memcpy(v, o->res, o->nres * sizeof *v);
        o->res = v;
        c->cap_res = cap;
    }
    hl7_resource *r = &o->res[o->nres++];
    memset(r, 0, sizeof *r);
    r->type = type;
    r->json = json;
    r->key_system = key_system;
    r->key_value = key_value;
    r->apply = apply;
    r->segment = seg;
    r->id = make_id(c, type, key_system, key_value);
    json_object_set_new(json, "id", json_string(r->id)); /* in the place new_resource kept for it */
    return r;
}

/* A resource object with resourceType and a place for its id first, so
 * that dumps read in the usual order. */
static json_t *new_resource(const char *type) {
    json_t *o = json_object();
    json_object_set_new(o, "resourceType", json_string(type));
    json_object_set_new(o, "id", json_null());
    return o;
}

/* What a reference needs of its target; copied by value (the resource
 * array may move as it grows). */
typedef struct target {
    const char *type, *id, *system, *value;
    long index; /* in out->res; -1 when there is none */
} target;

static const target no_target = {NULL, NULL, NULL, NULL, -1};

static target target_of(mctx *c, const hl7_resource *r) {
    target t = {r->type, r->id, r->key_system, r->key_value, (long)(r - c->out->res)};
    return t;
}

static json_t *ref_to(mctx *c, const target *t) {
    json_t *ref = json_object();
    jset(ref, "reference", json_string(CAT(c->a, Z(t->type), S("/"), Z(t->id))));
    return ref;
}

static const char *json_str_at(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* The identifier a Patient is keyed by: a local number of type MR, else PI,
 * else any local number, else the NHS number. */
static json_t *patient_key(json_t *identifiers) {
    static const char *const pref[] = {"MR", "PI", "*", "NHS"};
    for (size_t k = 0; k < sizeof pref / sizeof pref[0]; k++) {
        size_t i;
        json_t *id;
        json_array_foreach(identifiers, i, id) {
            const char *sys = json_str_at(id, "system");
            const char *type = json_string_value(
                json_object_get(json_array_get(json_object_get(json_object_get(id, "type"), "coding"), 0), "code"));
            int nhs = sys && strcmp(sys, SYS_NHS_NUMBER) == 0;
            if (!strcmp(pref[k], "NHS") ? nhs
                : !strcmp(pref[k], "*") ? !nhs
                                         : (!nhs && (type ? !strcmp(type, pref[k]) : !strcmp(pref[k], "MR"))))
                return id;
        }
    }
    return NULL;
}

/* Drop repeated identifiers (the same number in PID-2 and PID-3). */
static void dedupe_identifiers(json_t *identifiers) {
    for (size_t i = 0; i < json_array_size(identifiers); i++)
        for (size_t j = i + 1; j < json_array_size(identifiers);) {
            json_t *a = json_array_get(identifiers, i), *b = json_array_get(identifiers, j);
            const char *sa = json_str_at(a, "system"), *sb = json_str_at(b, "system");
            const char *va = json_str_at(a, "value"), *vb = json_str_at(b, "value");
            if (sa && sb && va && vb && !strcmp(sa, sb) && !strcmp(va, vb)) json_array_remove(identifiers, j);
            else j++;
        }
}

/* The end of the group a segment starts: the next segment named any of
 * `stops` (space-separated ids), or the end of the message. */
static long group_end(mctx *c, long from, const char *stops) {
    long n = (long)hl7_segment_count(c->m);
    for (long i = from + 1; i < n; i++)
        if (strstr(stops, hl7_segment_id(c->m, i))) return i;
    return n;
}

static status map_patient(mctx *c, long pid, long gto, hl7_apply apply, target *out) {
    status rc;
    json_t *p = new_resource("Patient");
    rc = apply_rules(c, p, NRULES(patient_rules), pid, pid, gto);
    if (rc != ST_OK) goto out;
    json_t *ids = json_object_get(p, "identifier");
    dedupe_identifiers(ids);
    json_t *key = patient_key(ids);
    if (!key) {
        rc = content_error(c, HL7_ERR_REQUIRED_FIELD, pid, 3, 0, 1,
                           "PID-3 patient identifier list has no identifier (hospital number or NHS number)");
        goto out;
    }
    if (json_object_get(p, "deceasedDateTime")) json_object_del(p, "deceasedBoolean");
    json_object_set_new(p, "active", json_true());
    hl7_resource *r = add_resource(c, "Patient", p, arena_strdup(c->a, json_str_at(key, "system")),
                                   arena_strdup(c->a, json_str_at(key, "value")), apply, pid);
    p = NULL;
    *out = target_of(c, r);
out:
    json_decref(p);
    return rc;
}

/* ---- events ------------------------------------------------------------ */

enum { P_PATIENT = 1, P_ENCOUNTER = 2, P_CLINICAL = 4, P_RESULTS = 8, P_MERGE = 16 };

typedef struct event_rule {
    const char *type, *trigger;
    unsigned produce;
    hl7_apply patient_apply, encounter_apply;
    const char *encounter_status; /* NULL: from PV1 (A08) */
} event_rule;

static const event_rule events[] = {
    {"ADT", "A01", P_PATIENT | P_ENCOUNTER | P_CLINICAL, HL7_APPLY_UPSERT, HL7_APPLY_UPSERT, "in-progress"}, /* admit */
    {"ADT", "A02", P_PATIENT | P_ENCOUNTER | P_CLINICAL, HL7_APPLY_UPSERT, HL7_APPLY_UPSERT, "in-progress"}, /* transfer */
    {"ADT", "A03", P_PATIENT | P_ENCOUNTER | P_CLINICAL, HL7_APPLY_UPSERT, HL7_APPLY_UPSERT, "finished"},    /* discharge */
    {"ADT", "A04", P_PATIENT | P_ENCOUNTER | P_CLINICAL, HL7_APPLY_UPSERT, HL7_APPLY_UPSERT, "arrived"},     /* register */
    {"ADT", "A05", P_PATIENT | P_ENCOUNTER | P_CLINICAL, HL7_APPLY_UPSERT, HL7_APPLY_UPSERT, "planned"},     /* pre-admit */
    {"ADT", "A08", P_PATIENT | P_ENCOUNTER | P_CLINICAL, HL7_APPLY_UPSERT, HL7_APPLY_UPSERT, NULL},          /* update */
    {"ADT", "A11", P_PATIENT | P_ENCOUNTER, HL7_APPLY_CREATE, HL7_APPLY_STATUS, "entered-in-error"}, /* cancel admit */
    {"ADT", "A13", P_PATIENT | P_ENCOUNTER, HL7_APPLY_CREATE, HL7_APPLY_STATUS, "in-progress"}, /* cancel discharge */
    {"ADT", "A28", P_PATIENT, HL7_APPLY_UPSERT, 0, NULL},                                     /* add person */
    {"ADT", "A31", P_PATIENT, HL7_APPLY_UPSERT, 0, NULL},                                     /* update person */
    {"ADT", "A40", P_MERGE, 0, 0, NULL},                                                      /* merge patient */
    {"ORU", "R01", P_RESULTS, HL7_APPLY_CREATE, HL7_APPLY_CREATE, NULL},                      /* results */
};

static const char *const supported_versions[] = {"2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1"};

/* ---- Encounter, Condition, Procedure ----------------------------------- */

static status map_encounter(mctx *c, long pv1, long gfrom, long gto, const event_rule *ev, const target *patient,
                            target *out) {
    status rc;
    json_t *e = new_resource("Encounter");
    json_object_set_new(e, "status", json_string("unknown")); /* early, for readability; set below */
    rc = apply_rules(c, e, NRULES(encounter_rules), pv1, gfrom, gto);
    if (rc != ST_OK) goto out;
    const char *status = ev->encounter_status;
    if (!status) {
        if (json_object_get(json_object_get(e, "period"), "end")) status = "finished";
        else if (hl7_str_ieq(get(c, pv1, 2, 1, 1, 0), "P")) status = "planned";
        else if (ev->produce & P_RESULTS) status = "unknown";
        else status = "in-progress";
    }
    json_object_set_new(e, "status", json_string(status));
    if (!strcmp(status, "finished") && !json_object_get(json_object_get(e, "period"), "end")) {
        /* a discharge without PV1-45: the event's time (EVN-6 occurred, else EVN-2 recorded) */
        long evn = find_in(c, "EVN", 1, (long)hl7_segment_count(c->m));
        for (int f = 6; evn > 0 && f >= 2; f -= 4) {
            at w = {evn, f, 1, 1};
            json_t *t = conv_datetime(c, w, NULL, &rc);
            if (rc != ST_OK) goto out;
            if (t) {
                put_path(e, "period.end", t);
                break;
            }
        }
    }
    if (patient->index >= 0) json_object_set_new(e, "subject", ref_to(c, patient));
    json_t *visit = json_array_get(json_object_get(e, "identifier"), 0);
    hl7_resource *r = add_resource(c, "Encounter", e, arena_strdup(c->a, json_str_at(visit, "system")),
                                   arena_strdup(c->a, json_str_at(visit, "value")), ev->encounter_apply, pv1);
    e = NULL;
    if (r->apply == HL7_APPLY_STATUS) r->status = status;
    *out = target_of(c, r);
out:
    json_decref(e);
    return rc;
}

static json_t *code_of(json_t *concept, const char **system) {
    json_t *cd = json_array_get(json_object_get(concept, "coding"), 0);
    if (system) *system = json_str_at(cd, "system");
    return json_object_get(cd, "code");
}

static status map_conditions(mctx *c, long gfrom, long gto, const target *patient, const target *enc) {
    status rc = ST_OK;
    for (long seg = find_in(c, "DG1", gfrom, gto); seg >= 0 && rc == ST_OK; seg = find_in(c, "DG1", seg + 1, gto)) {
        json_t *cond = new_resource("Condition");
        json_object_set_new(cond, "category",
                            array1(concept1(SYS_CONDCAT, "encounter-diagnosis", "Encounter Diagnosis")));
        rc = apply_rules(c, cond, NRULES(condition_rules), seg, gfrom, gto);
        const char *sys = NULL;
        json_t *code = rc == ST_OK ? code_of(json_object_get(cond, "code"), &sys) : NULL;
        if (rc == ST_OK && !code)
            rc = content_error(c, HL7_ERR_REQUIRED_FIELD, seg, 3, 0, 1, "DG1-3 diagnosis code is required and missing");
        if (rc != ST_OK) {
            json_decref(cond);
            break;
        }
        json_object_set_new(cond, "subject", ref_to(c, patient));
        if (enc->index >= 0) json_object_set_new(cond, "encounter", ref_to(c, enc));
        const char *value = CAT(c->a, Z(enc->index >= 0 ? enc->value : patient->value), S("/"),
                                Z(json_string_value(code)));
        hl7_resource *r = add_resource(c, "Condition", cond, system_for(c, (hl7_str){0}, "diagnosis"), value,
                                       HL7_APPLY_UPSERT, seg);
        target t = target_of(c, r);
        if (enc->index >= 0) {
            /* Encounter.diagnosis: the condition, its role, its rank */
            json_t *d = json_object();
            json_object_set_new(d, "condition", ref_to(c, &t));
            at w = {seg, 6, 1, 1};
            json_t *use = conv_concept(c, w, &diagnosis_role_table, &rc);
            jset(d, "use", use);
            hl7_str rank = get(c, seg, 15, 1, 1, 0);
            int rk;
            if (rank.n && rank.n < 6 && digits(rank.p, rank.n, &rk) && rk > 0) jset(d, "rank", json_integer(rk));
            jpush(c->out->res[enc->index].json, "diagnosis", d);
        }
    }
    return rc;
}

static status map_procedures(mctx *c, long gfrom, long gto, const target *patient, const target *enc) {
    status rc = ST_OK;
    for (long seg = find_in(c, "PR1", gfrom, gto); seg >= 0 && rc == ST_OK; seg = find_in(c, "PR1", seg + 1, gto)) {
        json_t *proc = new_resource("Procedure");
        json_object_set_new(proc, "status", json_string("completed"));
        rc = apply_rules(c, proc, NRULES(procedure_rules), seg, gfrom, gto);
        if (rc != ST_OK) {
            json_decref(proc);
            break;
        }
        json_object_set_new(proc, "subject", ref_to(c, patient));
        if (enc->index >= 0) json_object_set_new(proc, "encounter", ref_to(c, enc));
        const char *when = json_str_at(proc, "performedDateTime");
        const char *value = CAT(c->a, Z(enc->index >= 0 ? enc->value : patient->value), S("/"),
                                Z(json_string_value(code_of(json_object_get(proc, "code"), NULL))),
                                IF(when != NULL, S("/")), Z(when));
        add_resource(c, "Procedure", proc, system_for(c, (hl7_str){0}, "procedure"), value, HL7_APPLY_UPSERT, seg);
    }
    return rc;
}

/* ---- ADT --------------------------------------------------------------- */

static status map_adt(mctx *c, const event_rule *ev) {
    status rc = ST_OK;
    long n = (long)hl7_segment_count(c->m);
    long pid = find_in(c, "PID", 1, n);
    target patient = no_target, enc = no_target;
    if (pid < 0)
        return hl7_fail(c->e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "PID", 1, -1, 0, 0, 0, 0,
                        "ADT^%s has no PID segment", c->out->trigger);
    rc = map_patient(c, pid, n, ev->patient_apply, &patient);
    if (rc != ST_OK || !(ev->produce & P_ENCOUNTER)) return rc;
    long pv1 = find_in(c, "PV1", pid, n);
    if (pv1 < 0)
        return hl7_fail(c->e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "PV1", 1, -1, 0, 0, 0, 0,
                        "ADT^%s has no PV1 segment", c->out->trigger);
    rc = map_encounter(c, pv1, pid, n, ev, &patient, &enc);
    if (rc != ST_OK || !(ev->produce & P_CLINICAL)) return rc;
    rc = map_conditions(c, pid, n, &patient, &enc);
    if (rc == ST_OK) rc = map_procedures(c, pid, n, &patient, &enc);
    return rc;
}

/* A40: one merge per PID/MRG pair. */
static const field_rule merge_retired_rules[] = {
    {NULL, 1, 0, RULE_REQUIRED | RULE_ALL_REPS, CV_CX_PATIENT, "identifier[]", NULL},
};

static status map_merge(mctx *c) {
    status rc = ST_OK;
    long n = (long)hl7_segment_count(c->m);
    long pid = find_in(c, "PID", 1, n);
    if (pid < 0)
        return hl7_fail(c->e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "PID", 1, -1, 0, 0, 0, 0,
                        "ADT^A40 has no PID segment");
    for (; pid >= 0 && rc == ST_OK; pid = find_in(c, "PID", pid + 1, n)) {
        long end = group_end(c, pid, "PID");
        long mrg = find_in(c, "MRG", pid, end);
        if (mrg < 0)
            return hl7_fail(c->e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "MRG", hl7_segment_seq(c->m, pid), -1,
                            0, 0, 0, 0, "ADT^A40: the PID segment %d has no MRG segment after it",
                            hl7_segment_seq(c->m, pid));
        json_t *surv = json_object(), *ret = json_object();
        rc = apply_rules(c, surv, patient_rules, 2, pid, pid, end);
        if (rc == ST_OK) rc = apply_rules(c, ret, NRULES(merge_retired_rules), mrg, pid, end);
        json_t *sk = NULL, *rk = NULL;
        if (rc == ST_OK) {
            dedupe_identifiers(json_object_get(surv, "identifier"));
            sk = patient_key(json_object_get(surv, "identifier"));
            rk = patient_key(json_object_get(ret, "identifier"));
            if (!sk)
                rc = content_error(c, HL7_ERR_REQUIRED_FIELD, pid, 3, 0, 1, "PID-3 patient identifier list is empty");
        }
        if (rc != ST_OK) {
            json_decref(surv);
            json_decref(ret);
            break;
        }
        hl7_mapped *o = c->out;
        if (o->nmerges == c->cap_merge) {
            size_t cap = c->cap_merge ? c->cap_merge * 2 : 2;
            hl7_merge *v = arena_alloc(c->a, cap * sizeof *v);
            if (o->nmerges) memcpy(v, o->merges, o->nmerges * sizeof *v);
            o->merges = v;
            c->cap_merge = cap;
        }
        hl7_merge *mg = &o->merges[o->nmerges++];
        mg->surviving = json_incref(json_object_get(surv, "identifier"));
        mg->retired = json_incref(json_object_get(ret, "identifier"));
        mg->surviving_id = make_id(c, "Patient", json_str_at(sk, "system"), json_str_at(sk, "value"));
        mg->retired_id = make_id(c, "Patient", json_str_at(rk, "system"), json_str_at(rk, "value"));
        mg->segment = mrg;
        json_decref(surv);
        json_decref(ret);
    }
    return rc;
}

/* ---- ORU^R01 ----------------------------------------------------------- */

/* Observation.category from OBR-24: imaging sections, else laboratory. */
static json_t *observation_category(mctx *c, long obr) {
    hl7_str sect = get(c, obr, 24, 1, 1, 0);
    const code_row *r = code_lookup(&obs_category_table, sect);
    return array1(r ? concept1(SYS_OBSCAT, r->code, r->display) : concept1(SYS_OBSCAT, "laboratory", "Laboratory"));
}

/* An order number (EI: id ^ namespace ^ universal id ^ type) from OBR-n,
 * else ORC-m, as an Identifier of `kind`. */
static json_t *order_identifier(mctx *c, long obr, int obr_field, long orc, int orc_field, const char *kind,
                                const char *type_code) {
    long seg = obr;
    int field = obr_field;
    hl7_str id = get(c, obr, obr_field, 1, 1, 0);
    if (!id.n && orc >= 0) {
        seg = orc;
        field = orc_field;
        id = get(c, orc, orc_field, 1, 1, 0);
    }
    if (!id.n) return NULL;
    hl7_str ns = get(c, seg, field, 1, 2, 0);
    if (!ns.n) ns = get(c, seg, field, 1, 3, 0);
    json_t *i = json_object();
    jset(i, "type", concept1(SYS_V2_0203, type_code, NULL));
    jset(i, "system", json_string(system_for(c, ns, kind)));
    jset(i, "value", jstr(id));
    return i;
}

static status map_oru(mctx *c, const event_rule *ev) {
    status rc = ST_OK;
    long n = (long)hl7_segment_count(c->m);
    target patient = no_target, enc = no_target, report = no_target;
    long orc = -1, obr = -1, report_first_obs = 0;
    long obs_index = -1; /* the last Observation, for NTE */
    int obx_ordinal = 0;
    const char *filler_system = NULL, *filler_value = NULL;

    if (find_in(c, "PID", 1, n) < 0)
        return hl7_fail(c->e, ST_INVALID, HL7_AE, HL7_ERR_SEGMENT_SEQUENCE, "PID", 1, -1, 0, 0, 0, 0,
                        "ORU^R01 has no PID segment");
    for (long seg = 1; seg < n && rc == ST_OK; seg++) {
        const char *id = hl7_segment_id(c->m, seg);
        if (!strcmp(id, "PID")) {
            long end = group_end(c, seg, "PID");
            rc = map_patient(c, seg, end, ev->patient_apply, &patient);
            enc = no_target;
            report = no_target;
            obr = orc = -1;
            /* the visit, if the results name one (PV1 before the first order) */
            long first_order = group_end(c, seg, "PID ORC OBR");
            long pv1 = find_in(c, "PV1", seg, first_order);
            if (rc == ST_OK && pv1 >= 0 && get(c, pv1, 19, 1, 1, 0).n)
                rc = map_encounter(c, pv1, seg, first_order, ev, &patient, &enc);
        } else if (!strcmp(id, "ORC")) {
            orc = seg;
        } else if (!strcmp(id, "OBR")) {
            if (patient.index < 0)
                return content_error(c, HL7_ERR_SEGMENT_SEQUENCE, seg, 0, 0, 0, "OBR before any PID");
            if (orc >= 0 && orc < obr) orc = -1; /* an ORC belongs to the OBR after it */
            obr = seg;
            json_t *rep = new_resource("DiagnosticReport");
            json_object_set_new(rep, "status", json_string("unknown"));
            json_t *filler = order_identifier(c, obr, 3, orc, 3, "filler-order", "FILL");
            json_t *placer = order_identifier(c, obr, 2, orc, 2, "placer-order", "PLAC");
            if (!filler && !placer) {
                json_decref(rep);
                return content_error(c, HL7_ERR_REQUIRED_FIELD, obr, 3, 0, 1,
                                     "OBR-3 filler order number (or OBR-2 placer order number) is required");
            }
            json_t *key = filler ? filler : placer;
            filler_system = arena_strdup(c->a, json_str_at(key, "system"));
            filler_value = arena_strdup(c->a, json_str_at(key, "value"));
            jpush(rep, "identifier", filler);
            jpush(rep, "identifier", placer);
            rc = apply_rules(c, rep, NRULES(report_rules), obr, obr, group_end(c, obr, "OBR PID"));
            if (rc != ST_OK) {
                json_decref(rep);
                break;
            }
            json_object_set_new(rep, "subject", ref_to(c, &patient));
            if (enc.index >= 0) json_object_set_new(rep, "encounter", ref_to(c, &enc));
            hl7_resource *r = add_resource(c, "DiagnosticReport", rep, filler_system, filler_value, HL7_APPLY_UPSERT, obr);
            report = target_of(c, r);
            report_first_obs = (long)c->out->nres;
            obx_ordinal = 0;
            obs_index = -1;
        } else if (!strcmp(id, "OBX")) {
            if (report.index < 0)
                return content_error(c, HL7_ERR_SEGMENT_SEQUENCE, seg, 0, 0, 0, "OBX before any OBR");
            obx_ordinal++;
            json_t *obs = new_resource("Observation");
            json_object_set_new(obs, "status", json_string("unknown"));
            json_object_set_new(obs, "category", observation_category(c, obr));
            rc = apply_rules(c, obs, NRULES(observation_rules), seg, obr, seg + 1);
            if (rc != ST_OK) {
                json_decref(obs);
                break;
            }
            if (!json_object_get(obs, "effectiveDateTime")) {
                json_t *t = json_object_get(c->out->res[report.index].json, "effectiveDateTime");
                if (t) json_object_set_new(obs, "effectiveDateTime", json_string(json_string_value(t)));
            }
            json_object_set_new(obs, "subject", ref_to(c, &patient));
            if (enc.index >= 0) json_object_set_new(obs, "encounter", ref_to(c, &enc));
            hl7_str setid = get(c, seg, 1, 1, 1, 0), subid = get(c, seg, 4, 1, 1, 0);
            const char *value = CAT(c->a, Z(filler_value), S("-"), setid, IF(subid.n > 0, S("-")), subid);
            if (!setid.n) value = arena_printf(c->a, "%s#%d", value, obx_ordinal);
            const char *system = CAT(c->a, Z(filler_system), S(":observation"));
            json_object_set_new(obs, "identifier", array1(identifier(system, value)));
            for (long k = report_first_obs; k < (long)c->out->nres; k++)
                if (!strcmp(c->out->res[k].type, "Observation") && !strcmp(c->out->res[k].key_value, value)) {
                    json_decref(obs);
                    return content_error(c, HL7_ERR_DUPLICATE_KEY, seg, 1, 0, 0,
                                         "OBX-1 set id \"%s\" (with OBX-4 sub-id) repeats within this order",
                                         shown(c, setid));
                }
            hl7_resource *r = add_resource(c, "Observation", obs, system, value, HL7_APPLY_UPSERT, seg);
            target t = target_of(c, r);
            obs_index = t.index;
            jpush(c->out->res[report.index].json, "result", ref_to(c, &t));
        } else if (!strcmp(id, "NTE") && obs_index >= 0) {
            /* a comment on the observation before it: NTE-3, repetitions are lines */
            at w = {seg, 3, 1, 0};
            int nrep = hl7_rep_count(c->m, seg, 3);
            for (int r = 1; r <= nrep; r++) {
                w.rep = r;
                json_t *text = conv_string(c, w, NULL, &rc);
                if (!text) continue;
                json_t *note = json_object();
                json_object_set_new(note, "text", text);
                jpush(c->out->res[obs_index].json, "note", note);
            }
        }
        /* PD1, PV1, PV2 are read with their PID group; NTE after an OBR
         * (order comments), Z-segments and the rest are not mapped */
    }
    return rc;
}

/* ---- entry points ------------------------------------------------------ */

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static void sodium_start(void) {
    if (sodium_init() < 0) abort();
}

static const hl7_map_config default_config = {NULL, NULL, 0, HL7_ZONE_EUROPE_LONDON, NULL, 0, NULL};

/* Care settings, as the synthetic feeds code them (docs/synth.md). */
static const code_row care_setting_rows[] = {
    {"primary-care", "primary-care", "Primary care", NULL},
    {"acute", "acute", "Acute hospital", NULL},
    {"community", "community", "Community health services", NULL},
    {"social-care", "social-care", "Adult social care", NULL},
    {"mental-health", "mental-health", "Mental health services", NULL},
};

/* meta.tag on every resource: the care setting and the sending
 * organisation (MSH-4.1), so that what came from where can be searched
 * (_tag) and shown. */
static void tag_provenance(mctx *c) {
    const char *setting = c->cfg->care_setting ? c->cfg->care_setting : "acute";
    const char *display = NULL;
    for (size_t i = 0; i < sizeof care_setting_rows / sizeof care_setting_rows[0]; i++)
        if (strcmp(care_setting_rows[i].from, setting) == 0) display = care_setting_rows[i].display;
    hl7_str ods = hl7_str_trim(hl7_get(c->m, 0, 4, 1, 1, 0));
    for (size_t i = 0; i < c->out->nres; i++) {
        json_t *res = c->out->res[i].json;
        json_t *meta = json_object_get(res, "meta");
        if (!json_is_object(meta)) {
            meta = json_object();
            json_object_set_new(res, "meta", meta);
        }
        json_t *tags = json_array();
        json_t *t = json_pack("{s:s, s:s}", "system", HL7_CARE_SETTING_SYSTEM, "code", setting);
        if (display) json_object_set_new(t, "display", json_string(display));
        json_array_append_new(tags, t);
        if (ods.n)
            json_array_append_new(tags, json_pack("{s:s, s:s%}", "system", HL7_ODS_SYSTEM, "code", ods.p, ods.n));
        json_object_set_new(meta, "tag", tags);
    }
}

void hl7_mapped_release(hl7_mapped *out) {
    if (!out) return;
    for (size_t i = 0; i < out->nres; i++) json_decref(out->res[i].json);
    for (size_t i = 0; i < out->nmerges; i++) {
        json_decref(out->merges[i].surviving);
        json_decref(out->merges[i].retired);
    }
    memset(out, 0, sizeof *out);
}

status hl7_map(hl7_msg *m, const hl7_map_config *cfg, arena *a, hl7_mapped *out, hl7_error *e) {
    status rc = ST_OK;
    mctx c = {0};
    const hl7_header *h = hl7_msg_header(m);
    const event_rule *ev = NULL;
    pthread_once(&sodium_once, sodium_start);
    memset(out, 0, sizeof *out);
    if (e) memset(e, 0, sizeof *e);
    c.m = m;
    c.cfg = cfg ? cfg : &default_config;
    c.a = a;
    c.e = e;
    c.out = out;
    c.facility = sanitize(&c, hl7_str_trim(hl7_get(m, 0, 4, 1, 1, 0)));
    out->message_type = hl7_str_dup(a, h->type);
    out->trigger = hl7_str_dup(a, h->trigger);
    out->control_id = hl7_str_dup(a, h->control_id);

    /* what we accept: version, processing id, type and event */
    int version_ok = 0;
    for (size_t i = 0; i < sizeof supported_versions / sizeof supported_versions[0]; i++)
        version_ok |= hl7_str_eq(h->version, supported_versions[i]);
    if (!version_ok) {
        rc = hl7_fail(e, ST_UNSUPPORTED, HL7_AR, HL7_ERR_UNSUPPORTED_VERSION, "MSH", 1, 0, 12, 0, 1, 0,
                      "HL7 version \"%s\" is not supported (2.2 to 2.5.1)", shown(&c, h->version));
        goto out;
    }
    const char *pids = c.cfg->processing_ids ? c.cfg->processing_ids : "PT";
    if (h->processing_id.n != 1 || !strchr(pids, h->processing_id.p[0])) {
        rc = hl7_fail(e, ST_UNSUPPORTED, HL7_AR, HL7_ERR_UNSUPPORTED_PROCESSING_ID, "MSH", 1, 0, 11, 0, 1, 0,
                      "processing id \"%s\" is not accepted here (accepted: %s)", shown(&c, h->processing_id), pids);
        goto out;
    }
    int type_known = 0;
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        if (!hl7_str_eq(h->type, events[i].type)) continue;
        type_known = 1;
        if (hl7_str_eq(h->trigger, events[i].trigger)) ev = &events[i];
    }
    if (!type_known) {
        rc = hl7_fail(e, ST_UNSUPPORTED, HL7_AR, HL7_ERR_UNSUPPORTED_TYPE, "MSH", 1, 0, 9, 0, 1, 0,
                      "message type \"%s\" is not supported (ADT, ORU)", shown(&c, h->type));
        goto out;
    }
    if (!ev) {
        rc = hl7_fail(e, ST_UNSUPPORTED, HL7_AR, HL7_ERR_UNSUPPORTED_EVENT, "MSH", 1, 0, 9, 0, 2, 0,
                      "event \"%s^%s\" is not supported", shown(&c, h->type), shown(&c, h->trigger));
        goto out;
    }

    /* when it happened, for ordering updates: EVN-2, else MSH-7 */
    {
        long evn = find_in(&c, "EVN", 1, (long)hl7_segment_count(m));
        json_t *t = NULL;
        if (evn > 0) {
            at w = {evn, 2, 1, 1};
            t = conv_datetime(&c, w, NULL, &rc);
        }
        if (rc == ST_OK && !t) {
            at w = {0, 7, 1, 1};
            t = conv_datetime(&c, w, NULL, &rc);
        }
        if (rc != ST_OK) goto out;
        if (t) {
            out->event_time = arena_strdup(a, json_string_value(t));
            json_decref(t);
        }
    }

    if (ev->produce & P_MERGE) rc = map_merge(&c);
    else if (ev->produce & P_RESULTS) rc = map_oru(&c, ev);
    else rc = map_adt(&c, ev);
    if (rc != ST_OK) goto out;

    tag_provenance(&c);

    /* every resource must be valid FHIR: anything else is our bug */
    for (size_t i = 0; i < out->nres && !c.cfg->skip_validation; i++) {
        err ve;
        if (fhir_validate(out->res[i].json, out->res[i].type, &ve) != ST_OK) {
            long seg = out->res[i].segment;
            rc = hl7_fail(e, ST_INTERNAL, HL7_AE, HL7_ERR_INTERNAL, hl7_segment_id(m, seg),
                          hl7_segment_seq(m, seg), (int)seg, 0, 0, 0, 0, "the %s made from this segment is not valid FHIR at %s: %s",
                          out->res[i].type, ve.where, ve.msg);
            goto out;
        }
    }
out:
    if (rc != ST_OK) hl7_mapped_release(out);
    return rc;
}

static const char *apply_name(hl7_apply a) {
    switch (a) {
    case HL7_APPLY_CREATE: return "create";
    case HL7_APPLY_STATUS: return "status";
    default: return "upsert";
    }
}

json_t *hl7_mapped_json(const hl7_mapped *out) {
    json_t *res = json_array(), *merges = json_array();
    for (size_t i = 0; i < out->nres; i++) {
        const hl7_resource *r = &out->res[i];
        json_t *o = json_pack("{s:s, s:{s:s, s:s}}", "apply", apply_name(r->apply), "key", "system", r->key_system,
                              "value", r->key_value);
        if (r->status) json_object_set_new(o, "status", json_string(r->status));
        json_object_set(o, "resource", r->json);
        json_array_append_new(res, o);
    }
    for (size_t i = 0; i < out->nmerges; i++) {
        const hl7_merge *mg = &out->merges[i];
        json_array_append_new(merges, json_pack("{s:O, s:O, s:s, s:s}", "surviving", mg->surviving, "retired",
                                                mg->retired, "survivingId", mg->surviving_id, "retiredId",
                                                mg->retired_id));
    }
    json_t *j = json_pack("{s:o, s:o}", "resources", res, "merges", merges);
    if (out->event_time) json_object_set_new(j, "eventTime", json_string(out->event_time));
    return j;
}

status hl7_process(const char *bytes, size_t len, const hl7_limits *limits, const hl7_map_config *cfg, arena *a,
                   hl7_result *r) {
    status rc;
    memset(r, 0, sizeof *r);
    rc = hl7_parse(bytes, len, limits, a, &r->msg, &r->error);
    if (rc == ST_OK) rc = hl7_map(r->msg, cfg, a, &r->mapped, &r->error);
    r->ack = rc == ST_OK ? HL7_AA : r->error.ack;
    return rc;
}
