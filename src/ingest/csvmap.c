/*
 * csvmap.c — the CSV mapping engine (csvmap.h): loads a mapping file
 * (docs/csv-mapping.md), binds it to a file's header, and turns each row
 * into FHIR R4 JSON.
 *
 * Everything provider-specific is data: the mapping file names the columns,
 * formats and code tables. What is here is the vocabulary of targets the
 * engine knows how to fill (targets[], a table: a path, the resource it
 * belongs to, the kind of value and how many columns feed it), one
 * converter per kind of value, and one writer per resource type.
 *
 * A row is mapped in two steps so that a bad value emits nothing:
 *   1. convert: every mapped column's text is checked and normalised into
 *      a per-call scratch buffer (val[] holds offsets into it); the first
 *      fault returns ST_INVALID with e->where = the column's header name;
 *   2. write: Patient, then Encounter and/or EpisodeOfCare, each built as
 *      compact JSON text in a per-call buffer and handed to emit.
 * The mapping is only read while a row is mapped (thread-safe after bind).
 *
 * Ids: hex BLAKE2b-128 of "<type>|<system>|<value>" of the resource's
 * business identifier — as hl7_map does — where the Patient's is the
 * provider's client id (else the NHS number), an Encounter's or
 * EpisodeOfCare's the row's own id (else the `key` columns joined by "|").
 *
 * Memory: a csvmap owns its strings (an arena) and arrays (malloc);
 * csvmap_free releases both.
 */
#include "csvmap.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../base/arena.h"
#include "../base/buf.h"
#include "hl7_map.h"

/* ---- code systems and fixed vocabularies --------------------------------- */
#define SYS_SETTING      "https://concord.example/CodeSystem/care-setting"
#define SYS_ODS          "https://fhir.nhs.uk/Id/ods-organization-code"
#define SYS_NHS          "https://fhir.nhs.uk/Id/nhs-number"
#define SYS_ACTCODE      "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#define SYS_UCUM         "http://unitsofmeasure.org"
#define SYS_EPISODE_TYPE "https://concord.example/CodeSystem/episode-type"
#define SYS_ETHNIC       "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategory"
#define EXT_ETHNIC       "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"
#define EXT_HOURS        "https://concord.example/StructureDefinition/planned-hours-per-week"
#define EXT_COST         "https://concord.example/StructureDefinition/weekly-cost"
#define ID_BASE          "urn:concord:id"

typedef struct code_pair {
    const char *code, *display;
} code_pair;

/* the care-setting tag, as the synthetic feeds write it (docs/synth.md) */
static const code_pair settings[] = {
    {"primary-care", "Primary care"},
    {"acute", "Acute hospital"},
    {"community", "Community health services"},
    {"social-care", "Adult social care"},
    {"mental-health", "Mental health services"},
};

/* Encounter.class: v3 ActEncounterCode (the R4 binding) */
static const code_pair encounter_classes[] = {
    {"AMB", "ambulatory"},
    {"EMER", "emergency"},
    {"FLD", "field"},
    {"HH", "home health"},
    {"IMP", "inpatient encounter"},
    {"ACUTE", "inpatient acute"},
    {"NONAC", "inpatient non-acute"},
    {"OBSENC", "observation encounter"},
    {"PRENC", "pre-admission"},
    {"SS", "short stay"},
    {"VR", "virtual"},
};

/* NHS Data Dictionary ETHNIC CATEGORY (UK Core's code system) */
static const code_pair ethnic_categories[] = {
    {"A", "British"},
    {"B", "Irish"},
    {"C", "Any other White background"},
    {"D", "White and Black Caribbean"},
    {"E", "White and Black African"},
    {"F", "White and Asian"},
    {"G", "Any other mixed background"},
    {"H", "Indian"},
    {"J", "Pakistani"},
    {"K", "Bangladeshi"},
    {"L", "Any other Asian background"},
    {"M", "Caribbean"},
    {"N", "African"},
    {"P", "Any other Black background"},
    {"R", "Chinese"},
    {"S", "Any other ethnic group"},
    {"Z", "Not stated"},
    {"99", "Not known"},
};

static const char *const genders[] = {"male", "female", "other", "unknown"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the targets a column can fill ----------------------------------------- */
enum resource { R_PATIENT, R_ENCOUNTER, R_EPISODE, R_NONE, R_COUNT };
static const char *const resource_names[R_COUNT] = {"Patient", "Encounter", "EpisodeOfCare", ""};
/* the default identifier system suffix of each resource's business key */
static const char *const key_kinds[R_COUNT] = {"client", "contact", "episode", ""};

enum kind {
    K_TEXT,     /* trimmed text */
    K_NHS,      /* 10 digits once spaces and hyphens are gone */
    K_NAME,     /* a full name, split by the column's (pattern) */
    K_DATE,     /* FHIR date */
    K_DATETIME, /* FHIR dateTime: one column, or date + time */
    K_GENDER,   /* administrative-gender, through a code table */
    K_POSTCODE, /* UK postcode, upper case, one space */
    K_ODS,      /* ODS organisation code */
    K_ETHNIC,   /* ETHNIC CATEGORY code */
    K_MINUTES,  /* a whole number of minutes */
    K_DECIMAL,  /* a number >= 0 */
    K_CLASS,    /* Encounter.class (ActCode), through a code table or as is */
    K_CONCEPT,  /* a CodeableConcept, through a code table or with a system */
    K_FLAG,     /* yes/no */
    K_IGNORE
};

enum target {
    T_PAT_NHS,
    T_PAT_LOCAL,
    T_PAT_FAMILY,
    T_PAT_GIVEN,
    T_PAT_NAME,
    T_PAT_BIRTH,
    T_PAT_GENDER,
    T_PAT_POSTCODE,
    T_PAT_LINE,
    T_PAT_GP,
    T_PAT_ETHNIC,
    T_ENC_ID,
    T_ENC_START,
    T_ENC_END,
    T_ENC_LENGTH,
    T_ENC_CLASS,
    T_ENC_TYPE,
    T_ENC_TYPE_DISPLAY,
    T_ENC_SERVICE,
    T_ENC_SERVICE_DISPLAY,
    T_EOC_ID,
    T_EOC_TYPE,
    T_EOC_TYPE_DISPLAY,
    T_EOC_START,
    T_EOC_END,
    T_EOC_HOURS,
    T_EOC_COST,
    T_EOC_CARE_HOME,
    T_IGNORE,
    T_COUNT
};

/* option flags: what a column line may say for the target */
enum { O_TABLE = 1, O_FORMAT = 2, O_SYSTEM = 4, O_TWO = 8 };

typedef struct target_def {
    const char *path;
    int res, kind, opts;
    const char *what; /* for "a value is required (...)" */
} target_def;

static const target_def targets[T_COUNT] = {
    [T_PAT_NHS] = {"Patient.identifier[nhs]", R_PATIENT, K_NHS, 0, "the NHS number"},
    [T_PAT_LOCAL] = {"Patient.identifier[local]", R_PATIENT, K_TEXT, O_SYSTEM, "the client id"},
    [T_PAT_FAMILY] = {"Patient.name.family", R_PATIENT, K_TEXT, 0, "the family name"},
    [T_PAT_GIVEN] = {"Patient.name.given", R_PATIENT, K_TEXT, 0, "the given names"},
    [T_PAT_NAME] = {"Patient.name", R_PATIENT, K_NAME, O_FORMAT, "the name"},
    [T_PAT_BIRTH] = {"Patient.birthDate", R_PATIENT, K_DATE, O_FORMAT, "the date of birth"},
    [T_PAT_GENDER] = {"Patient.gender", R_PATIENT, K_GENDER, O_TABLE, "the sex"},
    [T_PAT_POSTCODE] = {"Patient.address.postalCode", R_PATIENT, K_POSTCODE, 0, "the postcode"},
    [T_PAT_LINE] = {"Patient.address.line", R_PATIENT, K_TEXT, 0, "the address"},
    [T_PAT_GP] = {"Patient.generalPractitioner", R_PATIENT, K_ODS, 0, "the GP practice"},
    [T_PAT_ETHNIC] = {"Patient.extension[ethnic-category]", R_PATIENT, K_ETHNIC, 0, "the ethnic category"},
    [T_ENC_ID] = {"Encounter.identifier", R_ENCOUNTER, K_TEXT, O_SYSTEM, "it identifies the Encounter"},
    [T_ENC_START] = {"Encounter.period.start", R_ENCOUNTER, K_DATETIME, O_FORMAT | O_TWO,
                     "the contact's date"},
    [T_ENC_END] = {"Encounter.period.end", R_ENCOUNTER, K_DATETIME, O_FORMAT | O_TWO, "the contact's end"},
    [T_ENC_LENGTH] = {"Encounter.length", R_ENCOUNTER, K_MINUTES, 0, "the contact's length"},
    [T_ENC_CLASS] = {"Encounter.class", R_ENCOUNTER, K_CLASS, O_TABLE, "the Encounter's class"},
    [T_ENC_TYPE] = {"Encounter.type", R_ENCOUNTER, K_CONCEPT, O_TABLE | O_SYSTEM, "the contact type"},
    [T_ENC_TYPE_DISPLAY] = {"Encounter.type.display", R_ENCOUNTER, K_TEXT, 0, "the contact type's name"},
    [T_ENC_SERVICE] = {"Encounter.serviceType", R_ENCOUNTER, K_CONCEPT, O_TABLE | O_SYSTEM, "the service"},
    [T_ENC_SERVICE_DISPLAY] = {"Encounter.serviceType.display", R_ENCOUNTER, K_TEXT, 0, "the service's name"},
    [T_EOC_ID] = {"EpisodeOfCare.identifier", R_EPISODE, K_TEXT, O_SYSTEM, "it identifies the EpisodeOfCare"},
    [T_EOC_TYPE] = {"EpisodeOfCare.type", R_EPISODE, K_CONCEPT, O_TABLE | O_SYSTEM, "the service"},
    [T_EOC_TYPE_DISPLAY] = {"EpisodeOfCare.type.display", R_EPISODE, K_TEXT, 0, "the service's name"},
    [T_EOC_START] = {"EpisodeOfCare.period.start", R_EPISODE, K_DATE, O_FORMAT, "the service's start date"},
    [T_EOC_END] = {"EpisodeOfCare.period.end", R_EPISODE, K_DATE, O_FORMAT, "the service's end date"},
    [T_EOC_HOURS] = {"EpisodeOfCare.extension[planned-hours]", R_EPISODE, K_DECIMAL, 0, "the hours a week"},
    [T_EOC_COST] = {"EpisodeOfCare.extension[weekly-cost]", R_EPISODE, K_DECIMAL, 0, "the weekly cost"},
    [T_EOC_CARE_HOME] = {"EpisodeOfCare.type[care-home]", R_EPISODE, K_FLAG, O_TABLE, "the care home flag"},
    [T_IGNORE] = {"ignore", R_NONE, K_IGNORE, 0, ""},
};

/* ---- date and time formats --------------------------------------------------- */
enum { F_LIT, F_YEAR, F_MONTH, F_DAY, F_HOUR, F_MINUTE, F_SECOND };

typedef struct datefmt {
    char text[48];
    unsigned char op[48];
    char lit[48];
    int n;
    int date_end; /* ops before this make the date part (a value may stop there) */
    int has_date, has_time;
} datefmt;

/* Compile "DD/MM/YYYY", "HH:MM", "YYYY-MM-DDTHH:MM:SS"...: YYYY year, MM
 * month (minutes once HH has been seen), DD day, HH hour, SS second; other
 * non-letters and T are literal. need_date/need_time: what it must hold. */
static int datefmt_compile(datefmt *f, const char *text, int need_date, int need_time) {
    memset(f, 0, sizeof *f);
    size_t tl = strlen(text);
    if (tl == 0 || tl >= sizeof f->text) return -1;
    memcpy(f->text, text, tl + 1);
    int seen[7] = {0};
    for (const char *p = text; *p;) {
        int op;
        size_t adv = 2;
        if (strncmp(p, "YYYY", 4) == 0)
            op = F_YEAR, adv = 4;
        else if (strncmp(p, "MM", 2) == 0)
            op = seen[F_HOUR] ? F_MINUTE : F_MONTH;
        else if (strncmp(p, "DD", 2) == 0)
            op = F_DAY;
        else if (strncmp(p, "HH", 2) == 0)
            op = F_HOUR;
        else if (strncmp(p, "SS", 2) == 0)
            op = F_SECOND;
        else if (isalpha((unsigned char)*p) && *p != 'T')
            return -1;
        else
            op = F_LIT, adv = 1;
        if (op != F_LIT && seen[op]++) return -1;
        f->op[f->n] = (unsigned char)op;
        f->lit[f->n] = *p;
        f->n++;
        if (op == F_YEAR || op == F_MONTH || op == F_DAY) f->date_end = f->n;
        p += adv;
    }
    f->has_date = seen[F_YEAR] && seen[F_MONTH] && seen[F_DAY];
    f->has_time = seen[F_HOUR] && seen[F_MINUTE];
    if (need_date && !f->has_date) return -1;
    if (!need_date && (seen[F_YEAR] || seen[F_MONTH] || seen[F_DAY])) return -1;
    if (need_time && !f->has_time) return -1;
    if (!need_time && (seen[F_HOUR] || seen[F_MINUTE] || seen[F_SECOND])) return -1;
    if (seen[F_SECOND] && !f->has_time) return -1;
    return 0;
}

typedef struct when {
    int y, mo, d, h, mi, s;
    int has_time;
} when;

/* Match s[0, n) against f into w (date fields, time fields, or both).
 * A value may stop after the date part of a date-and-time format. */
static int datefmt_match(const datefmt *f, const char *s, size_t n, when *w) {
    size_t i = 0;
    int k;
    for (k = 0; k < f->n; k++) {
        if (k == f->date_end && k > 0 && i == n && f->has_time && f->has_date) break;
        int op = f->op[k], width = op == F_YEAR ? 4 : 2, v = 0;
        if (op == F_LIT) {
            if (i >= n || s[i] != f->lit[k]) return -1;
            i++;
            continue;
        }
        for (int j = 0; j < width; j++, i++) {
            if (i >= n || !isdigit((unsigned char)s[i])) return -1;
            v = v * 10 + (s[i] - '0');
        }
        switch (op) {
        case F_YEAR: w->y = v; break;
        case F_MONTH: w->mo = v; break;
        case F_DAY: w->d = v; break;
        case F_HOUR: w->h = v, w->has_time = 1; break;
        case F_MINUTE: w->mi = v; break;
        default: w->s = v; break;
        }
    }
    return i == n ? 0 : -1;
}

static int leap(int y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}
static int month_days(int y, int m) {
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : d[m - 1];
}
static const char *const month_names[12] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};

/* days since 1970-01-01 and back (proleptic Gregorian; Howard Hinnant's algorithm) */
static long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}
static void civil_from_days(long z, int *y, int *m, int *d) {
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long yy = yoe + era * 400;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yy + (*m <= 2));
}

/* ---- code tables ---------------------------------------------------------------- */
typedef struct code_entry {
    const char *in; /* the value the extract sends, if not the code itself */
    const char *code;
    const char *display; /* may be NULL */
    int care_home;
} code_entry;

typedef struct code_table {
    const char *name;
    const char *system; /* may be NULL (value maps: sex, class, flags) */
    int keep_unknown;
    code_entry *e;
    int n, cap;
    int line;
} code_table;

/* exact value or code, then ignoring case (also the display) */
static const code_entry *table_find(const code_table *t, const char *v, size_t n) {
    for (int i = 0; i < t->n; i++) {
        const code_entry *c = &t->e[i];
        const char *in = c->in ? c->in : c->code;
        if (strlen(in) == n && memcmp(in, v, n) == 0) return c;
    }
    for (int i = 0; i < t->n; i++) {
        const code_entry *c = &t->e[i];
        const char *in = c->in ? c->in : c->code;
        if (strlen(in) == n && strncasecmp(in, v, n) == 0) return c;
        if (strlen(c->code) == n && strncasecmp(c->code, v, n) == 0) return c;
        if (c->display && strlen(c->display) == n && strncasecmp(c->display, v, n) == 0) return c;
    }
    return NULL;
}

/* ---- the mapping -------------------------------------------------------------------- */
enum { NAME_FAMILY_COMMA_GIVEN, NAME_GIVEN_FAMILY };
#define MAX_KEY 8

typedef struct colspec {
    int target;
    int ncols;
    const char *col[2];
    int idx[2];
    int optional, not_blank;
    const char *format; /* as written in (...), or NULL */
    datefmt fmt;        /* date and date-time targets: the compiled format in use */
    int name_pattern;
    const char *table_name;
    int table; /* index into tables, or -1 */
    const char *system;
    const char *constant; /* `set`: used when the column is absent or blank */
    int line;
} colspec;

typedef struct keyspec {
    int n;
    const char *col[MAX_KEY];
    int idx[MAX_KEY];
    int via[MAX_KEY]; /* the target a key column also fills (its normalised value is used), or -1 */
    const char *system;
    int line;
} keyspec;

struct csvmap {
    arena a;
    const char *name;
    const char *org;
    int setting;
    char delim;
    datefmt date_fmt, time_fmt, datetime_fmt;
    int have_datetime_fmt;
    hl7_zone zone;
    colspec *cols;
    int ncols, capcols;
    int by_target[T_COUNT]; /* index into cols, or -1 */
    keyspec keys[R_COUNT];
    const char *id_system[R_COUNT]; /* business identifier system of each resource */
    int produces[R_COUNT];
    code_table *tables;
    int ntables;
    const char **nulls;
    int nnulls;
    int bound, nheader;
    int *order; /* cols in the order a row is checked: by header position, then mapping line */
};

char csvmap_delimiter(const csvmap *m) {
    return m->delim;
}
const char *csvmap_org(const csvmap *m) {
    return m->org;
}
const char *csvmap_setting(const csvmap *m) {
    return settings[m->setting].code;
}

void csvmap_free(csvmap *m) {
    if (!m) return;
    for (int i = 0; i < m->ntables; i++)
        free(m->tables[i].e);
    free(m->tables);
    free(m->cols);
    free(m->order);
    free(m->nulls);
    arena_free(&m->a);
    free(m);
}

/* ---- loading: tokens ------------------------------------------------------------------ */
#define MAX_TOKENS 64

typedef struct tok {
    const char *s; /* unescaped text */
    int quoted;    /* it had a quoted part */
    int paren;     /* it was a (...) group */
    long eq;       /* index in s of the first unquoted '=', or -1 */
} tok;

typedef struct lexer {
    csvmap *m;
    int line;
    int indented;
    tok t[MAX_TOKENS];
    int n;
    char *store; /* unescaped token texts, NUL-separated */
    err *e;
} lexer;

static status load_error(lexer *lx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static status load_error(lexer *lx, const char *fmt, ...) {
    char where[160], msg[320];
    if (lx->line > 0)
        snprintf(where, sizeof where, "%s:%d", lx->m->name, lx->line);
    else
        snprintf(where, sizeof where, "%s", lx->m->name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(lx->e, ST_INVALID, "invalid", where, "%s", msg);
}

/* Split one line into tokens: whitespace separates; "..." quotes (with \"
 * and \\); (...) is one token; # starts a comment outside quotes. */
static status tokenize(lexer *lx, const char *p, size_t n) {
    lx->n = 0;
    lx->indented = n > 0 && (p[0] == ' ' || p[0] == '\t');
    char *o = lx->store;
    size_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
            i++;
        if (i >= n || p[i] == '#') break;
        if (lx->n == MAX_TOKENS) return load_error(lx, "more than %d words on one line", MAX_TOKENS);
        tok *t = &lx->t[lx->n++];
        memset(t, 0, sizeof *t);
        t->s = o;
        t->eq = -1;
        char *start = o;
        if (p[i] == '(') {
            i++;
            while (i < n && p[i] != ')')
                *o++ = p[i++];
            if (i >= n) return load_error(lx, "a '(' without its ')'");
            i++;
            t->paren = 1;
        } else {
            while (i < n && p[i] != ' ' && p[i] != '\t' && p[i] != '\r') {
                if (p[i] == '"') {
                    t->quoted = 1;
                    i++;
                    while (i < n && p[i] != '"') {
                        if (p[i] == '\\' && i + 1 < n && (p[i + 1] == '"' || p[i + 1] == '\\')) i++;
                        *o++ = p[i++];
                    }
                    if (i >= n) return load_error(lx, "a quoted text is not closed");
                    i++;
                } else {
                    if (p[i] == '=' && t->eq < 0) t->eq = o - start;
                    *o++ = p[i++];
                }
            }
        }
        *o++ = 0;
    }
    return ST_OK;
}

static const char *dup(lexer *lx, const char *s) {
    return arena_strdup(&lx->m->a, s);
}

static int is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A URI as FHIR's uri type takes it: not empty, no whitespace. */
static status system_value(lexer *lx, const char *s, const char **out) {
    if (!*s) return load_error(lx, "system= needs a URI");
    for (const char *p = s; *p; p++)
        if (is_ws(*p)) return load_error(lx, "\"%s\" is not a URI (it has a space)", s);
    *out = dup(lx, s);
    return ST_OK;
}
static const char *dupn(lexer *lx, const char *s, size_t n) {
    return arena_strndup(&lx->m->a, s, n);
}

static int is_ods(const char *s) {
    size_t n = strlen(s);
    if (n < 3 || n > 10) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isupper((unsigned char)s[i]) && !isdigit((unsigned char)s[i])) return 0;
    return 1;
}

static code_table *table_named(csvmap *m, const char *name) {
    for (int i = 0; i < m->ntables; i++)
        if (strcmp(m->tables[i].name, name) == 0) return &m->tables[i];
    return NULL;
}

static status add_entry(lexer *lx, code_table *t, const char *in, const char *code, const char *display,
                        int care_home) {
    if (!*code) return load_error(lx, "an empty code in code table %s", t->name);
    size_t cl = strlen(code);
    int ws_ok = !is_ws(code[0]) && !is_ws(code[cl - 1]);
    for (size_t i = 1; i < cl && ws_ok; i++)
        ws_ok = !(is_ws(code[i]) && (is_ws(code[i - 1]) || code[i] != ' '));
    if (!ws_ok) return load_error(lx, "\"%s\" is not a code (single spaces only, none at either end)", code);
    for (int i = 0; i < t->n; i++) {
        const char *other = t->e[i].in ? t->e[i].in : t->e[i].code;
        if (strcmp(other, in ? in : code) == 0)
            return load_error(lx, "\"%s\" is twice in code table %s", in ? in : code, t->name);
    }
    if (t->n == t->cap) {
        int nc = t->cap ? t->cap * 2 : 8;
        code_entry *ne = realloc(t->e, (size_t)nc * sizeof *ne);
        if (!ne) return err_set(lx->e, ST_NOMEM, "exception", NULL, "out of memory");
        t->e = ne;
        t->cap = nc;
    }
    t->e[t->n++] =
        (code_entry){in ? dup(lx, in) : NULL, dup(lx, code), display ? dup(lx, display) : NULL, care_home};
    return ST_OK;
}

/* An IN=CODE token, or a bare CODE. */
static status entry_token(lexer *lx, code_table *t, const tok *k, const char *display, int care_home) {
    if (k->eq >= 0) {
        const char *in = dupn(lx, k->s, (size_t)k->eq);
        return add_entry(lx, t, in, k->s + k->eq + 1, display, care_home);
    }
    return add_entry(lx, t, NULL, k->s, display, care_home);
}

static status new_table(lexer *lx, const char *name, code_table **out) {
    csvmap *m = lx->m;
    if (table_named(m, name)) return load_error(lx, "code table %s is defined twice", name);
    code_table *nt = realloc(m->tables, (size_t)(m->ntables + 1) * sizeof *nt);
    if (!nt) return err_set(lx->e, ST_NOMEM, "exception", NULL, "out of memory");
    m->tables = nt;
    code_table *t = &m->tables[m->ntables++];
    memset(t, 0, sizeof *t);
    t->name = dup(lx, name);
    t->line = lx->line;
    *out = t;
    return ST_OK;
}

/* codes NAME [system=URI] [unknown=reject|keep] [IN=CODE ...] */
static status parse_codes(lexer *lx, int *open_table) {
    if (lx->n < 2) return load_error(lx, "codes needs a table name");
    code_table *t;
    status rc = new_table(lx, lx->t[1].s, &t);
    if (rc) return rc;
    *open_table = (int)(t - lx->m->tables);
    for (int i = 2; i < lx->n; i++) {
        const tok *k = &lx->t[i];
        if (k->eq == 6 && strncmp(k->s, "system", 6) == 0) {
            if ((rc = system_value(lx, k->s + 7, &t->system))) return rc;
        } else if (k->eq == 7 && strncmp(k->s, "unknown", 7) == 0) {
            if (strcmp(k->s + 8, "keep") == 0)
                t->keep_unknown = 1;
            else if (strcmp(k->s + 8, "reject") == 0)
                t->keep_unknown = 0;
            else
                return load_error(lx, "unknown= takes keep or reject, not \"%s\"", k->s + 8);
        } else if (k->eq > 0) {
            if ((rc = entry_token(lx, t, k, NULL, 0))) return rc;
        } else {
            return load_error(
                lx, "\"%s\": on the codes line, write entries as VALUE=CODE (or one per indented line)",
                k->s);
        }
    }
    return ST_OK;
}

/* an indented line under `codes`: CODE-or-VALUE=CODE ["display"] [care-home] */
static status parse_entry(lexer *lx, code_table *t) {
    const char *display = NULL;
    int care_home = 0;
    for (int i = 1; i < lx->n; i++) {
        const tok *k = &lx->t[i];
        if (k->quoted && k->eq < 0 && !display && i == 1)
            display = k->s;
        else if (!k->quoted && strcmp(k->s, "care-home") == 0)
            care_home = 1;
        else if (!k->quoted)
            return load_error(lx, "\"%s\" is not a flag (care-home); quote a display text: \"...\"", k->s);
        else
            return load_error(lx, "one display text per code");
    }
    return entry_token(lx, t, &lx->t[0], display, care_home);
}

static int find_target(const char *path) {
    for (int i = 0; i < T_COUNT; i++)
        if (strcmp(targets[i].path, path) == 0) return i;
    return -1;
}

static status target_error(lexer *lx, const char *path) {
    return load_error(lx,
                      "\"%s\" is not a target (see docs/csv-mapping.md: e.g. Patient.birthDate, "
                      "Encounter.period.start, EpisodeOfCare.type)",
                      path);
}

static status new_colspec(lexer *lx, int target, colspec **out) {
    csvmap *m = lx->m;
    if (target != T_IGNORE && m->by_target[target] >= 0) {
        colspec *c = &m->cols[m->by_target[target]];
        *out = c;
        return ST_OK;
    }
    if (m->ncols == m->capcols) {
        int nc = m->capcols ? m->capcols * 2 : 32;
        colspec *ncs = realloc(m->cols, (size_t)nc * sizeof *ncs);
        if (!ncs) return err_set(lx->e, ST_NOMEM, "exception", NULL, "out of memory");
        m->cols = ncs;
        m->capcols = nc;
    }
    colspec *c = &m->cols[m->ncols];
    memset(c, 0, sizeof *c);
    c->target = target;
    c->table = -1;
    c->idx[0] = c->idx[1] = -1;
    if (target != T_IGNORE) m->by_target[target] = m->ncols;
    m->ncols++;
    *out = c;
    return ST_OK;
}

/* column A [+ B] -> TARGET [(format)] [codes=T] [system=URI] [optional] [not-blank] */
static status parse_column(lexer *lx) {
    int i = 1, ncols = 0;
    const char *cols[2] = {NULL, NULL};
    while (i < lx->n && !(strcmp(lx->t[i].s, "->") == 0 && !lx->t[i].quoted)) {
        if (ncols > 0) {
            if (strcmp(lx->t[i].s, "+") != 0 || lx->t[i].quoted)
                return load_error(lx,
                                  "expected -> (or + and a second column) after %s; quote a column name that "
                                  "has spaces",
                                  cols[ncols - 1]);
            i++;
            if (i >= lx->n) break;
        }
        if (ncols == 2) return load_error(lx, "at most two columns feed one target (a date + a time)");
        cols[ncols++] = lx->t[i].s;
        i++;
    }
    if (ncols == 0) return load_error(lx, "column needs a column name");
    if (i >= lx->n) return load_error(lx, "column needs -> and a target");
    if (++i >= lx->n) return load_error(lx, "column needs a target after ->");
    int target = find_target(lx->t[i].s);
    if (target < 0) return target_error(lx, lx->t[i].s);
    const target_def *td = &targets[target];
    if (ncols == 2 && !(td->opts & O_TWO)) return load_error(lx, "%s takes one column", td->path);
    colspec *c;
    status rc = new_colspec(lx, target, &c);
    if (rc) return rc;
    if (c->ncols)
        return load_error(lx, "%s is already mapped from column %s (line %d)", td->path, c->col[0], c->line);
    c->ncols = ncols;
    for (int k = 0; k < ncols; k++)
        c->col[k] = dup(lx, cols[k]);
    c->line = lx->line;
    for (i++; i < lx->n; i++) {
        const tok *k = &lx->t[i];
        if (k->paren) {
            if (!(td->opts & O_FORMAT)) return load_error(lx, "%s takes no (format)", td->path);
            if (ncols == 2) return load_error(lx, "a date + time pair uses date-format and time-format");
            c->format = dup(lx, k->s);
        } else if (k->eq == 5 && strncmp(k->s, "codes", 5) == 0) {
            if (!(td->opts & O_TABLE)) return load_error(lx, "%s takes no code table", td->path);
            c->table_name = dup(lx, k->s + 6);
        } else if (k->eq == 6 && strncmp(k->s, "system", 6) == 0) {
            if (!(td->opts & O_SYSTEM)) return load_error(lx, "%s takes no system=", td->path);
            if ((rc = system_value(lx, k->s + 7, &c->system))) return rc;
        } else if (strcmp(k->s, "optional") == 0 && !k->quoted) {
            c->optional = 1;
        } else if (strcmp(k->s, "not-blank") == 0 && !k->quoted) {
            c->not_blank = 1;
        } else {
            return load_error(
                lx,
                "\"%s\": not an option of a column (format in (...), codes=, system=, optional, "
                "not-blank)",
                k->s);
        }
    }
    return ST_OK;
}

/* set TARGET VALUE [system=URI] */
static status parse_set(lexer *lx) {
    if (lx->n < 3) return load_error(lx, "set needs a target and a value");
    int target = find_target(lx->t[1].s);
    if (target < 0 || target == T_IGNORE) return target_error(lx, lx->t[1].s);
    const target_def *td = &targets[target];
    colspec *c;
    status rc = new_colspec(lx, target, &c);
    if (rc) return rc;
    if (c->constant) return load_error(lx, "%s is already set", td->path);
    c->constant = dup(lx, lx->t[2].s);
    if (!c->line) c->line = lx->line;
    for (int i = 3; i < lx->n; i++) {
        const tok *k = &lx->t[i];
        if (!(k->eq == 6 && strncmp(k->s, "system", 6) == 0 && (td->opts & O_SYSTEM)))
            return load_error(lx, "\"%s\": not an option of set %s", k->s, td->path);
        if ((rc = system_value(lx, k->s + 7, &c->system))) return rc;
    }
    return ST_OK;
}

static int find_resource(const char *s) {
    for (int r = 0; r < R_NONE; r++)
        if (strcmp(resource_names[r], s) == 0) return r;
    return -1;
}

/* key RESOURCE col [+ col ...] [system=URI] */
static status parse_key(lexer *lx) {
    if (lx->n < 3) return load_error(lx, "key needs a resource and its columns");
    int r = find_resource(lx->t[1].s);
    if (r < 0 || r == R_PATIENT)
        return load_error(lx,
                          "key takes Encounter or EpisodeOfCare (a Patient's key is its client id, else NHS "
                          "number), not \"%s\"",
                          lx->t[1].s);
    keyspec *k = &lx->m->keys[r];
    if (k->n) return load_error(lx, "the key of %s is already given (line %d)", resource_names[r], k->line);
    k->line = lx->line;
    for (int i = 2; i < lx->n; i++) {
        const tok *t = &lx->t[i];
        if (t->eq == 6 && strncmp(t->s, "system", 6) == 0) {
            status rc = system_value(lx, t->s + 7, &k->system);
            if (rc) return rc;
            continue;
        }
        if (strcmp(t->s, "+") == 0 && !t->quoted) continue;
        if (k->n == MAX_KEY) return load_error(lx, "at most %d key columns", MAX_KEY);
        k->col[k->n] = dup(lx, t->s);
        k->idx[k->n] = -1;
        k->n++;
    }
    if (!k->n) return load_error(lx, "key needs columns");
    return ST_OK;
}

static status parse_format(lexer *lx, datefmt *f, int need_date, int need_time, const char *what) {
    if (lx->n < 2) return load_error(lx, "%s needs a format", lx->t[0].s);
    /* formats may hold spaces: rejoin the words */
    char text[64] = "";
    size_t l = 0;
    for (int i = 1; i < lx->n; i++) {
        int w = snprintf(text + l, sizeof text - l, "%s%s", i > 1 ? " " : "", lx->t[i].s);
        if (w < 0 || (size_t)w >= sizeof text - l) return load_error(lx, "format too long");
        l += (size_t)w;
    }
    if (datefmt_compile(f, text, need_date, need_time))
        return load_error(lx, "\"%s\" is not a %s format (YYYY, MM, DD, HH, MM, SS and separators, e.g. %s)",
                          text, what,
                          need_date && need_time ? "DD/MM/YYYY HH:MM"
                          : need_date            ? "DD/MM/YYYY"
                                                 : "HH:MM");
    return ST_OK;
}

static status parse_line(lexer *lx, int *open_table) {
    csvmap *m = lx->m;
    if (lx->indented && *open_table >= 0) return parse_entry(lx, &m->tables[*open_table]);
    *open_table = -1;
    const char *kw = lx->t[0].s;
    if (!strcmp(kw, "organisation") || !strcmp(kw, "organization")) {
        if (lx->n != 2 || !is_ods(lx->t[1].s))
            return load_error(lx, "organisation takes one ODS code (3 to 10 capital letters and digits)");
        m->org = dup(lx, lx->t[1].s);
    } else if (!strcmp(kw, "setting")) {
        int s = -1;
        for (size_t i = 0; lx->n == 2 && i < NELEM(settings); i++)
            if (!strcmp(lx->t[1].s, settings[i].code)) s = (int)i;
        if (s < 0)
            return load_error(
                lx, "setting takes one of primary-care, acute, community, social-care, mental-health");
        m->setting = s;
    } else if (!strcmp(kw, "delimiter")) {
        if (lx->n != 2)
            return load_error(lx, "delimiter takes one character (or comma, pipe, tab, semicolon)");
        const char *d = lx->t[1].s;
        char c = !strcmp(d, "comma")       ? ','
                 : !strcmp(d, "pipe")      ? '|'
                 : !strcmp(d, "tab")       ? '\t'
                 : !strcmp(d, "semicolon") ? ';'
                 : strlen(d) == 1          ? d[0]
                                           : 0;
        if (!c || c == '"' || c == '#') return load_error(lx, "\"%s\" cannot be the delimiter", d);
        m->delim = c;
    } else if (!strcmp(kw, "date-format")) {
        return parse_format(lx, &m->date_fmt, 1, 0, "date");
    } else if (!strcmp(kw, "time-format")) {
        return parse_format(lx, &m->time_fmt, 0, 1, "time");
    } else if (!strcmp(kw, "datetime-format")) {
        m->have_datetime_fmt = 1;
        return parse_format(lx, &m->datetime_fmt, 1, 1, "date and time");
    } else if (!strcmp(kw, "timezone")) {
        if (lx->n == 2 && !strcmp(lx->t[1].s, "Europe/London"))
            m->zone = HL7_ZONE_EUROPE_LONDON;
        else if (lx->n == 2 && !strcmp(lx->t[1].s, "UTC"))
            m->zone = HL7_ZONE_UTC;
        else
            return load_error(lx, "timezone takes Europe/London or UTC");
    } else if (!strcmp(kw, "sex-codes")) {
        code_table *t;
        status rc = new_table(lx, "sex", &t);
        if (rc) return rc;
        for (int i = 1; i < lx->n; i++) {
            if (lx->t[i].eq <= 0) return load_error(lx, "sex-codes takes VALUE=GENDER pairs, e.g. M=male");
            if ((rc = entry_token(lx, t, &lx->t[i], NULL, 0))) return rc;
        }
    } else if (!strcmp(kw, "null-values")) {
        if (lx->n < 2) return load_error(lx, "null-values needs values");
        const char **nn = realloc(m->nulls, (size_t)(m->nnulls + lx->n) * sizeof *nn);
        if (!nn) return err_set(lx->e, ST_NOMEM, "exception", NULL, "out of memory");
        m->nulls = nn;
        for (int i = 1; i < lx->n; i++)
            m->nulls[m->nnulls++] = dup(lx, lx->t[i].s);
    } else if (!strcmp(kw, "codes")) {
        return parse_codes(lx, open_table);
    } else if (!strcmp(kw, "column")) {
        return parse_column(lx);
    } else if (!strcmp(kw, "set")) {
        return parse_set(lx);
    } else if (!strcmp(kw, "key")) {
        return parse_key(lx);
    } else {
        return load_error(
            lx,
            "\"%s\" is not a mapping directive (organisation, setting, delimiter, date-format, "
            "time-format, datetime-format, timezone, sex-codes, null-values, codes, column, set, key)",
            kw);
    }
    return ST_OK;
}

/* ---- values: reading and converting one column ---------------------------------------------- */
typedef struct val {
    int set;
    size_t off, n;        /* text in the row's scratch buffer */
    const code_entry *ce; /* code-table entry (concepts, classes) */
    const char *system;   /* concept system when there is no entry */
    when w;               /* dates */
} val;

typedef struct rowctx {
    const csvmap *m;
    const csv_record *row;
    buf s; /* normalised values */
    val v[T_COUNT];
    err *e;
} rowctx;

static const char *vtext(const rowctx *x, int t) {
    return x->s.p + x->v[t].off;
}

static void trim(const char **s, size_t *n) {
    while (*n && is_ws(**s))
        (*s)++, (*n)--;
    while (*n && is_ws((*s)[*n - 1]))
        (*n)--;
}

/* the field for a bound column, trimmed; blank for null values and absent columns */
static void field_text(const csvmap *m, const csv_record *row, int idx, const char **s, size_t *n) {
    *s = "";
    *n = 0;
    if (idx < 0 || idx >= row->nfields) return;
    const char *p = row->field[idx];
    size_t l = row->len[idx];
    trim(&p, &l);
    for (int i = 0; i < m->nnulls; i++)
        if (strlen(m->nulls[i]) == l && strncasecmp(m->nulls[i], p, l) == 0) return;
    *s = p;
    *n = l;
}

/* "value" for messages: at most 40 characters, control characters as '?' */
static void shown(char *out, size_t cap, const char *s, size_t n) {
    size_t o = 0, lim = n > 40 ? 40 : n;
    /* do not cut a UTF-8 sequence */
    while (lim < n && lim > 0 && ((unsigned char)s[lim] & 0xC0) == 0x80)
        lim--;
    for (size_t i = 0; i < lim && o + 4 < cap; i++)
        out[o++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    if (lim < n && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = 0;
}

static status bad(rowctx *x, const char *col, const char *s, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static status bad(rowctx *x, const char *col, const char *s, size_t n, const char *fmt, ...) {
    char v[64], what[240];
    shown(v, sizeof v, s, n);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return err_set(x->e, ST_INVALID, "value", col, "%s: \"%s\" %s", col, v, what);
}

static void put_val(rowctx *x, int t, const char *s, size_t n) {
    val *v = &x->v[t];
    v->set = 1;
    v->off = x->s.len;
    v->n = n;
    buf_append(&x->s, s, n);
    buf_putc(&x->s, 0);
}

/* a code as the sender wrote it, whitespace runs made one space (FHIR's code type) */
static void put_code(rowctx *x, int t, const char *s, size_t n) {
    val *v = &x->v[t];
    v->set = 1;
    v->off = x->s.len;
    for (size_t i = 0; i < n; i++) {
        if (!is_ws(s[i]))
            buf_putc(&x->s, s[i]);
        else if (i > 0 && !is_ws(s[i - 1]))
            buf_putc(&x->s, ' ');
    }
    v->n = x->s.len - v->off;
    buf_putc(&x->s, 0);
}

static void list_codes(char *out, size_t cap, const code_table *t) {
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < t->n && o + 8 < cap; i++) {
        const char *in = t->e[i].in ? t->e[i].in : t->e[i].code;
        int w = snprintf(out + o, cap - o, "%s%s", i ? ", " : "", in);
        if (w < 0 || (size_t)w >= cap - o) {
            snprintf(out + o, cap - o, ", ...");
            break;
        }
        o += (size_t)w;
    }
}

static status check_date(rowctx *x, const char *col, const char *s, size_t n, const when *w, int with_time) {
    if (w->mo < 1 || w->mo > 12) return bad(x, col, s, n, "is not a date: there is no month %d", w->mo);
    if (w->d < 1 || w->d > month_days(w->y, w->mo))
        return bad(x, col, s, n, "is not a date: %s %04d has %d days", month_names[w->mo - 1], w->y,
                   month_days(w->y, w->mo));
    if (w->y < 1850 || w->y > 2199) return bad(x, col, s, n, "has an implausible year (%04d)", w->y);
    if (with_time && (w->h > 23 || w->mi > 59 || w->s > 59)) return bad(x, col, s, n, "is not a time of day");
    return ST_OK;
}

/* FHIR dateTime text of w (date only without a time) */
static void when_text(const csvmap *m, const when *w, char out[40]) {
    if (!w->has_time) {
        snprintf(out, 40, "%04d-%02d-%02d", w->y, w->mo, w->d);
        return;
    }
    char dtm[16];
    snprintf(dtm, sizeof dtm, "%04d%02d%02d%02d%02d%02d", w->y, w->mo, w->d, w->h, w->mi, w->s);
    if (hl7_dtm_to_fhir((hl7_str){dtm, 14}, m->zone, 0, out) != 0)
        snprintf(out, 40, "%04d-%02d-%02d", w->y, w->mo, w->d);
}

/* minutes east of UTC that m's zone gives local time w */
static long zone_offset(const csvmap *m, const when *w) {
    char t[40];
    when_text(m, w, t);
    size_t n = strlen(t);
    if (n < 6 || (t[n - 6] != '+' && t[n - 6] != '-')) return 0;
    long off = ((t[n - 5] - '0') * 10 + (t[n - 4] - '0')) * 60 + (t[n - 2] - '0') * 10 + (t[n - 1] - '0');
    return t[n - 6] == '-' ? -off : off;
}

static when when_at(long local_minutes, int s) {
    when w = {.has_time = 1, .s = s};
    long day = local_minutes / 1440, min = local_minutes % 1440;
    if (min < 0) min += 1440, day--;
    civil_from_days(day, &w.y, &w.mo, &w.d);
    w.h = (int)(min / 60);
    w.mi = (int)(min % 60);
    return w;
}

/* FHIR dateTime `minutes` after local time `start`, counted in real time
 * (across a change of clocks the local time moves by more or less). */
static void end_after(const csvmap *m, const when *start, long minutes, char out[40]) {
    long utc = (days_from_civil(start->y, start->mo, start->d) * 1440 + start->h * 60 + start->mi) -
               zone_offset(m, start) + minutes;
    /* the local time whose offset agrees: summer time first; else GMT (which is also how
     * the hour repeated in October is told apart when it is the second one) */
    long off = 60;
    when w = when_at(utc + off, start->s);
    if (zone_offset(m, &w) != off) {
        off = 0;
        w = when_at(utc, start->s);
    }
    snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d+%02ld:00", w.y, w.mo, w.d, w.h, w.mi, w.s, off / 60);
}

static status conv_datetime(rowctx *x, const colspec *c, const char *s[2], size_t n[2]) {
    const csvmap *m = x->m;
    when w = {0};
    if (c->ncols == 2) {
        if (!n[0]) return bad(x, c->col[0], s[0], n[0], "is blank but %s has a time", c->col[1]);
        if (datefmt_match(&m->date_fmt, s[0], n[0], &w))
            return bad(x, c->col[0], s[0], n[0], "is not a date in the form %s", m->date_fmt.text);
        status rc = check_date(x, c->col[0], s[0], n[0], &w, 0);
        if (rc) return rc;
        if (n[1]) {
            when t = {0};
            if (datefmt_match(&m->time_fmt, s[1], n[1], &t))
                return bad(x, c->col[1], s[1], n[1], "is not a time in the form %s", m->time_fmt.text);
            if (t.h > 23 || t.mi > 59 || t.s > 59)
                return bad(x, c->col[1], s[1], n[1], "is not a time of day");
            w.h = t.h, w.mi = t.mi, w.s = t.s, w.has_time = 1;
        }
    } else {
        if (datefmt_match(&c->fmt, s[0], n[0], &w))
            return bad(x, c->col[0], s[0], n[0], "is not a date%s in the form %s",
                       c->fmt.has_time ? " and time" : "", c->fmt.text);
        status rc = check_date(x, c->col[0], s[0], n[0], &w, w.has_time);
        if (rc) return rc;
    }
    char t[40];
    when_text(m, &w, t);
    put_val(x, c->target, t, strlen(t));
    x->v[c->target].w = w;
    return ST_OK;
}

static status conv_name(rowctx *x, const colspec *c, const char *s, size_t n) {
    const char *fam = s, *giv = "";
    size_t fn = n, gn = 0;
    if (c->name_pattern == NAME_FAMILY_COMMA_GIVEN) {
        const char *comma = memchr(s, ',', n);
        if (comma) {
            fn = (size_t)(comma - s);
            giv = comma + 1;
            gn = n - fn - 1;
        }
    } else {
        size_t i = n;
        while (i > 0 && s[i - 1] != ' ')
            i--;
        if (i > 0) {
            fam = s + i;
            fn = n - i;
            giv = s;
            gn = i;
        }
    }
    trim(&fam, &fn);
    trim(&giv, &gn);
    if (!fn && !gn) return bad(x, c->col[0], s, n, "holds no name");
    if (fn) put_val(x, T_PAT_FAMILY, fam, fn);
    if (gn) put_val(x, T_PAT_GIVEN, giv, gn);
    return ST_OK;
}

/* Convert one column (or constant) into x->v[c->target]. s/n: the trimmed
 * texts of its columns, already known not all blank. */
static status convert(rowctx *x, const colspec *c, const char *s[2], size_t n[2], const char *col) {
    const csvmap *m = x->m;
    int t = c->target;
    const code_table *table = c->table >= 0 ? &m->tables[c->table] : NULL;
    char tmp[64];
    switch (targets[t].kind) {
    case K_TEXT: put_val(x, t, s[0], n[0]); return ST_OK;
    case K_NHS: {
        size_t k = 0;
        for (size_t i = 0; i < n[0]; i++) {
            char ch = s[0][i];
            if (ch == ' ' || ch == '-') continue;
            if (!isdigit((unsigned char)ch) || k == 10)
                return bad(x, col, s[0], n[0], "is not an NHS number (10 digits)");
            tmp[k++] = ch;
        }
        if (k != 10) return bad(x, col, s[0], n[0], "is not an NHS number (10 digits)");
        put_val(x, t, tmp, 10);
        return ST_OK;
    }
    case K_NAME: return conv_name(x, c, s[0], n[0]);
    case K_DATE: {
        when w = {0};
        if (datefmt_match(&c->fmt, s[0], n[0], &w) || w.has_time)
            return bad(x, col, s[0], n[0], "is not a date in the form %s", c->fmt.text);
        status rc = check_date(x, col, s[0], n[0], &w, 0);
        if (rc) return rc;
        int l = snprintf(tmp, sizeof tmp, "%04d-%02d-%02d", w.y, w.mo, w.d);
        put_val(x, t, tmp, (size_t)l);
        x->v[t].w = w;
        return ST_OK;
    }
    case K_DATETIME: return conv_datetime(x, c, s, n);
    case K_GENDER: {
        if (table) {
            const code_entry *ce = table_find(table, s[0], n[0]);
            if (!ce) {
                char list[160];
                list_codes(list, sizeof list, table);
                return bad(x, col, s[0], n[0], "is not one of the sex codes %s", list);
            }
            put_val(x, t, ce->code, strlen(ce->code));
            return ST_OK;
        }
        for (size_t i = 0; i < NELEM(genders); i++)
            if (strlen(genders[i]) == n[0] && strncasecmp(genders[i], s[0], n[0]) == 0) {
                put_val(x, t, genders[i], strlen(genders[i]));
                return ST_OK;
            }
        return bad(x, col, s[0], n[0], "is not male, female, other or unknown (give the mapping sex-codes)");
    }
    case K_POSTCODE: {
        size_t k = 0;
        for (size_t i = 0; i < n[0]; i++) {
            unsigned char ch = (unsigned char)s[0][i];
            if (ch == ' ') continue;
            if (!isalnum(ch) || k == 7) return bad(x, col, s[0], n[0], "is not a postcode");
            tmp[k++] = (char)toupper(ch);
        }
        if (k < 5) return bad(x, col, s[0], n[0], "is not a postcode");
        /* outward code, one space, inward code (digit letter letter) */
        if (!isdigit((unsigned char)tmp[k - 3]) || !isalpha((unsigned char)tmp[k - 2]) ||
            !isalpha((unsigned char)tmp[k - 1]) || !isalpha((unsigned char)tmp[0]))
            return bad(x, col, s[0], n[0], "is not a postcode");
        memmove(tmp + k - 2, tmp + k - 3, 3);
        tmp[k - 3] = ' ';
        put_val(x, t, tmp, k + 1);
        return ST_OK;
    }
    case K_ODS: {
        if (n[0] < 3 || n[0] > 10) return bad(x, col, s[0], n[0], "is not an ODS code");
        for (size_t i = 0; i < n[0]; i++) {
            unsigned char ch = (unsigned char)s[0][i];
            if (!isalnum(ch)) return bad(x, col, s[0], n[0], "is not an ODS code");
            tmp[i] = (char)toupper(ch);
        }
        put_val(x, t, tmp, n[0]);
        return ST_OK;
    }
    case K_ETHNIC:
        for (size_t i = 0; i < NELEM(ethnic_categories); i++)
            if (strlen(ethnic_categories[i].code) == n[0] &&
                strncasecmp(ethnic_categories[i].code, s[0], n[0]) == 0) {
                put_val(x, t, ethnic_categories[i].code, n[0]);
                return ST_OK;
            }
        return bad(x, col, s[0], n[0], "is not an NHS ethnic category code (A to S, Z, 99)");
    case K_MINUTES: {
        long v = 0;
        for (size_t i = 0; i < n[0]; i++) {
            if (!isdigit((unsigned char)s[0][i]) || v > 1000000)
                return bad(x, col, s[0], n[0], "is not a whole number of minutes");
            v = v * 10 + (s[0][i] - '0');
        }
        if (v > 100000) return bad(x, col, s[0], n[0], "is too long a time in minutes");
        int l = snprintf(tmp, sizeof tmp, "%ld", v);
        put_val(x, t, tmp, (size_t)l);
        return ST_OK;
    }
    case K_DECIMAL: {
        /* digits [. digits]: written as a JSON number without leading zeros */
        const char *p = s[0];
        size_t len = n[0], i = 0, ip = 0, fp = 0;
        int dot = 0;
        while (i < len && isdigit((unsigned char)p[i]))
            i++, ip++;
        size_t int_end = i;
        if (i < len && p[i] == '.') {
            dot = 1;
            i++;
            while (i < len && isdigit((unsigned char)p[i]))
                i++, fp++;
        }
        if (i != len || (!ip && !fp) || (dot && !fp))
            return bad(x, col, s[0], n[0], "is not a number (e.g. 12.5)");
        size_t z = 0;
        while (z + 1 < int_end && p[z] == '0')
            z++;
        /* what a double holds exactly, and JSON readers accept as a number */
        if (int_end - z > 9 || fp > 6)
            return bad(x, col, s[0], n[0], "is out of range (at most 9 digits before the point, 6 after)");
        buf_reserve(&x->s, len + 2);
        val *v = &x->v[t];
        v->set = 1;
        v->off = x->s.len;
        if (!ip) buf_putc(&x->s, '0');
        buf_append(&x->s, p + z, len - z);
        v->n = x->s.len - v->off;
        buf_putc(&x->s, 0);
        return ST_OK;
    }
    case K_CLASS: {
        const char *code = s[0];
        size_t cn = n[0];
        if (table) {
            const code_entry *ce = table_find(table, s[0], n[0]);
            if (!ce) {
                char list[160];
                list_codes(list, sizeof list, table);
                return bad(x, col, s[0], n[0], "is not in code table %s (%s)", table->name, list);
            }
            code = ce->code;
            cn = strlen(code);
        }
        for (size_t i = 0; i < NELEM(encounter_classes); i++)
            if (strlen(encounter_classes[i].code) == cn && memcmp(encounter_classes[i].code, code, cn) == 0) {
                put_val(x, t, code, cn);
                x->v[t].ce = NULL;
                return ST_OK;
            }
        return bad(x, col, s[0], n[0], "is not an encounter class (AMB, HH, VR, IMP, EMER, ...)");
    }
    case K_CONCEPT: {
        if (table) {
            const code_entry *ce = table_find(table, s[0], n[0]);
            if (!ce && !table->keep_unknown) {
                char list[160];
                list_codes(list, sizeof list, table);
                return bad(x, col, s[0], n[0], "is not in code table %s (%s)", table->name, list);
            }
            if (ce) {
                put_val(x, t, ce->code, strlen(ce->code));
                x->v[t].ce = ce;
                x->v[t].system = table->system;
                return ST_OK;
            }
            put_code(x, t, s[0], n[0]);
            x->v[t].system = table->system;
            return ST_OK;
        }
        put_code(x, t, s[0], n[0]);
        x->v[t].system = c->system;
        return ST_OK;
    }
    case K_FLAG: {
        const char *v = s[0];
        size_t vn = n[0];
        if (table) {
            const code_entry *ce = table_find(table, s[0], n[0]);
            if (!ce) {
                char list[160];
                list_codes(list, sizeof list, table);
                return bad(x, col, s[0], n[0], "is not in code table %s (%s)", table->name, list);
            }
            v = ce->code;
            vn = strlen(v);
        }
        static const char *const yes[] = {"Y", "YES", "TRUE", "1"}, *const no[] = {"N", "NO", "FALSE", "0"};
        for (size_t i = 0; i < NELEM(yes); i++) {
            if (strlen(yes[i]) == vn && strncasecmp(yes[i], v, vn) == 0) {
                put_val(x, t, "yes", 3);
                return ST_OK;
            }
            if (strlen(no[i]) == vn && strncasecmp(no[i], v, vn) == 0) {
                put_val(x, t, "no", 2);
                return ST_OK;
            }
        }
        return bad(x, col, s[0], n[0], "is not yes or no (Y/N)");
    }
    default: return ST_OK;
    }
}

/* How a `set` value is read: in the target's own terms (an ActCode, a FHIR
 * gender, yes/no) — a value-map table translates the extract's values, not
 * the mapping's — except that a code list (a concept's table) still gives
 * the code its system and display. */
static colspec constant_spec(const colspec *c) {
    colspec k = *c;
    k.ncols = 1;
    k.col[0] = targets[c->target].path;
    if (targets[c->target].kind != K_CONCEPT) k.table = -1;
    return k;
}

/* Read and convert the column(s) of c, or its constant. */
static status convert_column(rowctx *x, const colspec *c) {
    const char *s[2] = {"", ""};
    size_t n[2] = {0, 0};
    for (int k = 0; k < c->ncols; k++)
        field_text(x->m, x->row, c->idx[k], &s[k], &n[k]);
    const char *col = c->ncols ? c->col[0] : targets[c->target].path;
    if (n[0] || n[1]) return convert(x, c, s, n, col);
    if (c->constant) {
        s[0] = c->constant;
        n[0] = strlen(c->constant);
        s[1] = "";
        n[1] = 0;
        colspec k = constant_spec(c);
        return convert(x, &k, s, n, k.col[0]);
    }
    if (c->not_blank && c->ncols && (c->idx[0] >= 0 || !c->optional))
        return err_set(x->e, ST_INVALID, "required", col, "%s: a value is required (%s)", col,
                       targets[c->target].what);
    return ST_OK;
}

/* ---- loading: checks once every line is read ------------------------------------------------ */
static status resolve(lexer *lx) {
    csvmap *m = lx->m;
    lx->line = 0;
    if (!m->org) return load_error(lx, "no organisation (its ODS code, e.g. organisation ZC1)");
    if (m->setting < 0) return load_error(lx, "no setting (community, social-care, mental-health, ...)");
    if (!m->have_datetime_fmt) {
        char text[100];
        snprintf(text, sizeof text, "%s %s", m->date_fmt.text, m->time_fmt.text);
        if (datefmt_compile(&m->datetime_fmt, text, 1, 1))
            return load_error(lx, "date-format and time-format do not combine");
    }
    for (int r = 0; r < R_NONE; r++)
        m->produces[r] = r == R_PATIENT || m->keys[r].n > 0;
    for (int i = 0; i < m->ncols; i++) {
        colspec *c = &m->cols[i];
        const target_def *td = &targets[c->target];
        lx->line = c->line;
        if (td->res != R_NONE) m->produces[td->res] = 1;
        if (c->table_name) {
            for (int k = 0; k < m->ntables; k++)
                if (!strcmp(m->tables[k].name, c->table_name)) c->table = k;
            if (c->table < 0) return load_error(lx, "no code table named %s", c->table_name);
        } else if (c->target == T_PAT_GENDER) {
            for (int k = 0; k < m->ntables; k++)
                if (!strcmp(m->tables[k].name, "sex")) c->table = k;
        }
        const code_table *t = c->table >= 0 ? &m->tables[c->table] : NULL;
        if (td->kind == K_CONCEPT && !t && !c->system)
            return load_error(lx, "%s needs codes=TABLE or system=URI", td->path);
        if (t) {
            lx->line = t->line;
            for (int k = 0; k < t->n; k++) {
                const char *code = t->e[k].code;
                int ok = 1;
                if (td->kind == K_GENDER) {
                    ok = 0;
                    for (size_t g = 0; g < NELEM(genders); g++)
                        ok |= !strcmp(genders[g], code);
                } else if (td->kind == K_CLASS) {
                    ok = 0;
                    for (size_t g = 0; g < NELEM(encounter_classes); g++)
                        ok |= !strcmp(encounter_classes[g].code, code);
                } else if (td->kind == K_FLAG) {
                    ok = !strcasecmp(code, "yes") || !strcasecmp(code, "no") || !strcasecmp(code, "Y") ||
                         !strcasecmp(code, "N");
                }
                if (!ok)
                    return load_error(lx, "code table %s gives \"%s\", which %s cannot take", t->name, code,
                                      td->path);
            }
            lx->line = c->line;
        }
        if (td->kind == K_NAME) {
            const char *p = c->format ? c->format : "FAMILY, Given";
            if (strchr(p, ','))
                c->name_pattern = NAME_FAMILY_COMMA_GIVEN;
            else if (!strcasecmp(p, "Given Family"))
                c->name_pattern = NAME_GIVEN_FAMILY;
            else
                return load_error(lx, "(%s): a name pattern is (FAMILY, Given) or (Given Family)", p);
        } else if (td->kind == K_DATE) {
            if (c->format) {
                if (datefmt_compile(&c->fmt, c->format, 1, 0))
                    return load_error(lx, "(%s) is not a date format (YYYY, MM, DD and separators)",
                                      c->format);
            } else {
                c->fmt = m->date_fmt;
            }
        } else if (td->kind == K_DATETIME && c->ncols < 2) {
            if (c->format) {
                if (datefmt_compile(&c->fmt, c->format, 1, 1) && datefmt_compile(&c->fmt, c->format, 1, 0))
                    return load_error(lx, "(%s) is not a date or date and time format", c->format);
            } else {
                c->fmt = m->datetime_fmt;
            }
        }
        if (c->ncols == 0 && !c->constant)
            return load_error(lx, "%s has neither a column nor a value", td->path);
    }
    int fam = m->by_target[T_PAT_FAMILY] >= 0 || m->by_target[T_PAT_GIVEN] >= 0;
    if (fam && m->by_target[T_PAT_NAME] >= 0) {
        lx->line = m->cols[m->by_target[T_PAT_NAME]].line;
        return load_error(lx, "Patient.name cannot be mapped with Patient.name.family or .given");
    }
    lx->line = 0;
    if (m->by_target[T_PAT_LOCAL] < 0 && m->by_target[T_PAT_NHS] < 0)
        return load_error(lx,
                          "no column identifies the patient: map Patient.identifier[local] (the client id) "
                          "and/or Patient.identifier[nhs]");
    static const int id_target[R_COUNT] = {T_PAT_LOCAL, T_ENC_ID, T_EOC_ID, -1};
    for (int r = R_ENCOUNTER; r < R_NONE; r++) {
        if (!m->produces[r]) continue;
        int idt = id_target[r];
        if (m->keys[r].n == 0 && m->by_target[idt] < 0)
            return load_error(lx, "%s has no key: map its row id to %s or give key %s COLUMN + COLUMN ...",
                              resource_names[r], targets[idt].path, resource_names[r]);
        if (m->keys[r].n && m->by_target[idt] >= 0 && m->cols[m->by_target[idt]].ncols) {
            lx->line = m->keys[r].line;
            return load_error(lx, "%s has both a key and %s", resource_names[r], targets[idt].path);
        }
    }
    if (m->produces[R_ENCOUNTER]) {
        if (m->by_target[T_ENC_START] < 0) return load_error(lx, "an Encounter needs Encounter.period.start");
        if (m->by_target[T_ENC_CLASS] < 0)
            return load_error(lx, "an Encounter needs a class: e.g. set Encounter.class AMB (or HH, VR)");
    }
    if (m->produces[R_EPISODE] && m->by_target[T_EOC_START] < 0)
        return load_error(lx, "an EpisodeOfCare needs EpisodeOfCare.period.start");
    /* identifier systems */
    for (int r = 0; r < R_NONE; r++) {
        int idt = id_target[r];
        const char *sys = m->keys[r].system;
        if (!sys && idt >= 0 && m->by_target[idt] >= 0) sys = m->cols[m->by_target[idt]].system;
        if (!sys) sys = arena_printf(&m->a, ID_BASE ":%s:%s", m->org, key_kinds[r]);
        m->id_system[r] = sys;
    }
    /* constants must convert */
    err scratch_err;
    for (int i = 0; i < m->ncols; i++) {
        colspec *c = &m->cols[i];
        if (!c->constant) continue;
        rowctx x = {.m = m, .e = &scratch_err};
        const char *s[2] = {c->constant, ""};
        size_t n[2] = {strlen(c->constant), 0};
        colspec k = constant_spec(c);
        status rc = convert(&x, &k, s, n, k.col[0]);
        buf_free(&x.s);
        if (rc) {
            lx->line = c->line;
            return load_error(lx, "set %s: %s", targets[c->target].path, scratch_err.msg);
        }
    }
    return ST_OK;
}

status csvmap_parse(const char *text, size_t len, const char *name, csvmap **out, err *e) {
    status rc = ST_OK;
    *out = NULL;
    csvmap *m = calloc(1, sizeof *m);
    lexer lx = {.m = m, .e = e};
    if (!m) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    m->name = arena_strdup(&m->a, name ? name : "mapping");
    m->setting = -1;
    m->delim = ',';
    m->zone = HL7_ZONE_EUROPE_LONDON;
    datefmt_compile(&m->date_fmt, "YYYY-MM-DD", 1, 0);
    datefmt_compile(&m->time_fmt, "HH:MM", 0, 1);
    for (int t = 0; t < T_COUNT; t++)
        m->by_target[t] = -1;
    lx.store = malloc(len + MAX_TOKENS + 1);
    if (!lx.store) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    int open_table = -1;
    size_t i = 0;
    while (i < len) {
        const char *p = text + i;
        const char *nl = memchr(p, '\n', len - i);
        size_t n = nl ? (size_t)(nl - p) : len - i;
        i += n + (nl ? 1 : 0);
        lx.line++;
        size_t bad_at = csv_utf8_invalid_at(p, n);
        if (bad_at < n) {
            rc = load_error(&lx, "byte 0x%02X at column %zu is not UTF-8 (a mapping file is UTF-8 text)",
                            (unsigned char)p[bad_at], bad_at + 1);
            goto out;
        }
        if ((rc = tokenize(&lx, p, n))) goto out;
        if (!lx.n) continue;
        if ((rc = parse_line(&lx, &open_table))) goto out;
    }
    rc = resolve(&lx);
out:
    free(lx.store);
    if (rc)
        csvmap_free(m);
    else
        *out = m;
    return rc;
}

status csvmap_load(const char *path, csvmap **out, err *e) {
    status rc = ST_OK;
    buf b = {0};
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, ST_NOT_FOUND, "not-found", path, "cannot open the mapping file %s", path);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > (1u << 20)) {
            rc = err_set(e, ST_TOO_LARGE, "too-costly", path, "a mapping file over 1 MiB");
            goto out;
        }
        buf_append(&b, chunk, n);
    }
    if (ferror(f)) {
        rc = err_set(e, ST_IO, "exception", path, "read error on %s", path);
        goto out;
    }
    rc = csvmap_parse(b.p ? b.p : "", b.len, path, out, e);
out:
    fclose(f);
    buf_free(&b);
    return rc;
}

/* ---- binding ------------------------------------------------------------------------------ */
static int header_index(const csv_record *h, const char *name, int *dups) {
    int found = -1;
    *dups = 0;
    size_t nl = strlen(name);
    for (int pass = 0; pass < 2 && found < 0; pass++) {
        for (int i = 0; i < h->nfields; i++) {
            const char *s = h->field[i];
            size_t n = h->len[i];
            int match;
            if (pass == 0)
                match = n == nl && memcmp(s, name, n) == 0;
            else {
                trim(&s, &n);
                match = n == nl && strncasecmp(s, name, n) == 0;
            }
            if (!match) continue;
            if (found >= 0)
                *dups = 1;
            else
                found = i;
        }
    }
    return found;
}

static status bind_one(csvmap *m, const csv_record *h, const char *name, int optional, int line, int *idx,
                       err *e) {
    int dups;
    *idx = header_index(h, name, &dups);
    if (dups) return err_set(e, ST_INVALID, "structure", name, "the header has column %s twice", name);
    if (*idx < 0 && !optional)
        return err_set(e, ST_INVALID, "required", name, "the header has no column %s (%s:%d maps it)", name,
                       m->name, line);
    return ST_OK;
}

static int col_before(const colspec *a, const colspec *b) {
    long pa = a->idx[0] >= 0 ? a->idx[0] : 1L << 30, pb = b->idx[0] >= 0 ? b->idx[0] : 1L << 30;
    return pa != pb ? pa < pb : a->line < b->line;
}

status csvmap_bind(csvmap *m, const csv_record *header, err *e) {
    status rc = ST_OK;
    m->bound = 0;
    for (int i = 0; i < m->ncols; i++) {
        colspec *c = &m->cols[i];
        for (int k = 0; k < c->ncols; k++)
            if ((rc = bind_one(m, header, c->col[k], c->optional || c->target == T_IGNORE, c->line,
                               &c->idx[k], e)))
                return rc;
    }
    for (int r = 0; r < R_NONE; r++) {
        keyspec *k = &m->keys[r];
        for (int j = 0; j < k->n; j++) {
            if ((rc = bind_one(m, header, k->col[j], 0, k->line, &k->idx[j], e))) return rc;
            k->via[j] = -1;
            for (int i = 0; i < m->ncols; i++) {
                const colspec *c = &m->cols[i];
                if (c->ncols == 1 && c->idx[0] == k->idx[j] && c->target != T_IGNORE &&
                    targets[c->target].kind != K_NAME)
                    k->via[j] = c->target;
            }
        }
    }
    /* check a row left to right, so the first bad field is the one reported */
    int *order = realloc(m->order, (size_t)(m->ncols ? m->ncols : 1) * sizeof *order);
    if (!order) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    m->order = order;
    for (int i = 0; i < m->ncols; i++) {
        int j = i;
        while (j > 0 && col_before(&m->cols[i], &m->cols[order[j - 1]])) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    m->nheader = header->nfields;
    m->bound = 1;
    return rc;
}

/* ---- writing resources ---------------------------------------------------------------------- */
static void put(buf *b, const char *s) {
    buf_puts(b, s);
}
static void put_q(buf *b, const char *s, size_t n) {
    buf_putc(b, '"');
    buf_json_escape(b, s, n);
    buf_putc(b, '"');
}
static void put_qs(buf *b, const char *s) {
    put_q(b, s, strlen(s));
}

static void put_coding(buf *b, const char *system, const char *code, size_t cn, const char *display,
                       size_t dn) {
    put(b, "{");
    if (system) {
        put(b, "\"system\":");
        put_qs(b, system);
        put(b, ",");
    }
    put(b, "\"code\":");
    put_q(b, code, cn);
    if (display && dn) {
        put(b, ",\"display\":");
        put_q(b, display, dn);
    }
    put(b, "}");
}

static void make_id(char out[33], const char *type, const char *system, const char *value, size_t vn) {
    unsigned char h[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)type, strlen(type));
    crypto_generichash_update(&st, (const unsigned char *)"|", 1);
    crypto_generichash_update(&st, (const unsigned char *)system, strlen(system));
    crypto_generichash_update(&st, (const unsigned char *)"|", 1);
    crypto_generichash_update(&st, (const unsigned char *)value, vn);
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(out, 33, h, sizeof h);
}

static void begin(buf *b, const csvmap *m, const char *type, const char *id, const char *source) {
    buf_reset(b);
    put(b, "{\"resourceType\":\"");
    put(b, type);
    put(b, "\",\"id\":\"");
    put(b, id);
    put(b, "\",\"meta\":{");
    if (source) {
        put(b, "\"source\":");
        put_qs(b, source);
        put(b, ",");
    }
    put(b, "\"tag\":[");
    put_coding(b, SYS_SETTING, settings[m->setting].code, strlen(settings[m->setting].code),
               settings[m->setting].display, strlen(settings[m->setting].display));
    put(b, ",");
    put_coding(b, SYS_ODS, m->org, strlen(m->org), NULL, 0);
    put(b, "]}");
}

static void put_org_ref(buf *b, const char *field, const char *ods, size_t n) {
    put(b, ",\"");
    put(b, field);
    put(b, "\":{\"type\":\"Organization\",\"identifier\":{\"system\":\"" SYS_ODS "\",\"value\":");
    put_q(b, ods, n);
    put(b, "}}");
}

static void put_identifier(buf *b, const char *system, const char *value, size_t n) {
    put(b, ",\"identifier\":[{\"system\":");
    put_qs(b, system);
    put(b, ",\"value\":");
    put_q(b, value, n);
    put(b, "}]");
}

/* a concept from a converted code value and an optional display column */
static void put_concept(buf *b, const rowctx *x, int t, int tdisplay) {
    const val *v = &x->v[t];
    const char *display = NULL;
    size_t dn = 0;
    if (tdisplay >= 0 && x->v[tdisplay].set) {
        display = vtext(x, tdisplay);
        dn = x->v[tdisplay].n;
    } else if (v->ce && v->ce->display) {
        display = v->ce->display;
        dn = strlen(display);
    }
    put(b, "{\"coding\":[");
    put_coding(b, v->system, vtext(x, t), v->n, display, dn);
    put(b, "]}");
}

static void write_patient(buf *b, const rowctx *x, const char *pid, const char *source) {
    const csvmap *m = x->m;
    const val *v = x->v;
    begin(b, m, "Patient", pid, source);
    if (v[T_PAT_ETHNIC].set) {
        const char *code = vtext(x, T_PAT_ETHNIC), *display = NULL;
        for (size_t i = 0; i < NELEM(ethnic_categories); i++)
            if (!strcmp(ethnic_categories[i].code, code)) display = ethnic_categories[i].display;
        put(b, ",\"extension\":[{\"url\":\"" EXT_ETHNIC "\",\"valueCodeableConcept\":{\"coding\":[");
        put_coding(b, SYS_ETHNIC, code, v[T_PAT_ETHNIC].n, display, display ? strlen(display) : 0);
        put(b, "]}}]");
    }
    put(b, ",\"identifier\":[");
    int first = 1;
    if (v[T_PAT_NHS].set) {
        put(b, "{\"system\":\"" SYS_NHS "\",\"value\":");
        put_q(b, vtext(x, T_PAT_NHS), v[T_PAT_NHS].n);
        put(b, "}");
        first = 0;
    }
    if (v[T_PAT_LOCAL].set) {
        if (!first) put(b, ",");
        put(b, "{\"system\":");
        put_qs(b, m->id_system[R_PATIENT]);
        put(b, ",\"value\":");
        put_q(b, vtext(x, T_PAT_LOCAL), v[T_PAT_LOCAL].n);
        put(b, "}");
    }
    put(b, "]");
    if (v[T_PAT_FAMILY].set || v[T_PAT_GIVEN].set) {
        put(b, ",\"name\":[{\"use\":\"official\"");
        if (v[T_PAT_FAMILY].set) {
            put(b, ",\"family\":");
            put_q(b, vtext(x, T_PAT_FAMILY), v[T_PAT_FAMILY].n);
        }
        if (v[T_PAT_GIVEN].set) {
            /* given names: one per word */
            put(b, ",\"given\":[");
            const char *g = vtext(x, T_PAT_GIVEN), *end = g + v[T_PAT_GIVEN].n;
            int k = 0;
            while (g < end) {
                while (g < end && (*g == ' ' || *g == '\t'))
                    g++;
                const char *w = g;
                while (g < end && *g != ' ' && *g != '\t')
                    g++;
                if (g > w) {
                    if (k++) put(b, ",");
                    put_q(b, w, (size_t)(g - w));
                }
            }
            put(b, "]");
        }
        put(b, "}]");
    }
    if (v[T_PAT_GENDER].set) {
        put(b, ",\"gender\":");
        put_q(b, vtext(x, T_PAT_GENDER), v[T_PAT_GENDER].n);
    }
    if (v[T_PAT_BIRTH].set) {
        put(b, ",\"birthDate\":");
        put_q(b, vtext(x, T_PAT_BIRTH), v[T_PAT_BIRTH].n);
    }
    if (v[T_PAT_LINE].set || v[T_PAT_POSTCODE].set) {
        put(b, ",\"address\":[{\"use\":\"home\"");
        if (v[T_PAT_LINE].set) {
            put(b, ",\"line\":[");
            put_q(b, vtext(x, T_PAT_LINE), v[T_PAT_LINE].n);
            put(b, "]");
        }
        if (v[T_PAT_POSTCODE].set) {
            put(b, ",\"postalCode\":");
            put_q(b, vtext(x, T_PAT_POSTCODE), v[T_PAT_POSTCODE].n);
        }
        put(b, "}]");
    }
    if (v[T_PAT_GP].set) {
        put(b, ",\"generalPractitioner\":[{\"type\":\"Organization\",\"identifier\":{\"system\":\"" SYS_ODS
               "\",\"value\":");
        put_q(b, vtext(x, T_PAT_GP), v[T_PAT_GP].n);
        put(b, "}}]");
    }
    put(b, "}");
}

static void put_subject(buf *b, const char *field, const char *pid) {
    put(b, ",\"");
    put(b, field);
    put(b, "\":{\"reference\":\"Patient/");
    put(b, pid);
    put(b, "\"}");
}

static void write_encounter(buf *b, const rowctx *x, const char *id, const char *key, size_t kn,
                            const char *pid, const char *source) {
    const csvmap *m = x->m;
    const val *v = x->v;
    begin(b, m, "Encounter", id, source);
    put_identifier(b, m->id_system[R_ENCOUNTER], key, kn);
    put(b, ",\"status\":\"finished\",\"class\":");
    const char *cls = vtext(x, T_ENC_CLASS), *cls_display = NULL;
    for (size_t i = 0; i < NELEM(encounter_classes); i++)
        if (!strcmp(encounter_classes[i].code, cls)) cls_display = encounter_classes[i].display;
    put_coding(b, SYS_ACTCODE, cls, v[T_ENC_CLASS].n, cls_display, cls_display ? strlen(cls_display) : 0);
    if (v[T_ENC_TYPE].set) {
        put(b, ",\"type\":[");
        put_concept(b, x, T_ENC_TYPE, T_ENC_TYPE_DISPLAY);
        put(b, "]");
    }
    if (v[T_ENC_SERVICE].set) {
        put(b, ",\"serviceType\":");
        put_concept(b, x, T_ENC_SERVICE, T_ENC_SERVICE_DISPLAY);
    }
    put_subject(b, "subject", pid);
    put(b, ",\"period\":{\"start\":");
    put_q(b, vtext(x, T_ENC_START), v[T_ENC_START].n);
    if (v[T_ENC_END].set) {
        put(b, ",\"end\":");
        put_q(b, vtext(x, T_ENC_END), v[T_ENC_END].n);
    } else if (v[T_ENC_LENGTH].set && v[T_ENC_START].w.has_time) {
        char t[40];
        end_after(m, &v[T_ENC_START].w, atol(vtext(x, T_ENC_LENGTH)), t);
        put(b, ",\"end\":");
        put_qs(b, t);
    }
    put(b, "}");
    if (v[T_ENC_LENGTH].set) {
        put(b, ",\"length\":{\"value\":");
        put(b, vtext(x, T_ENC_LENGTH));
        put(b, ",\"unit\":\"min\",\"system\":\"" SYS_UCUM "\",\"code\":\"min\"}");
    }
    put_org_ref(b, "serviceProvider", m->org, strlen(m->org));
    put(b, "}");
}

static void write_episode(buf *b, const rowctx *x, const char *id, const char *key, size_t kn,
                          const char *pid, const char *source) {
    const csvmap *m = x->m;
    const val *v = x->v;
    begin(b, m, "EpisodeOfCare", id, source);
    if (v[T_EOC_HOURS].set || v[T_EOC_COST].set) {
        put(b, ",\"extension\":[");
        if (v[T_EOC_HOURS].set) {
            put(b, "{\"url\":\"" EXT_HOURS "\",\"valueQuantity\":{\"value\":");
            put(b, vtext(x, T_EOC_HOURS));
            put(b, ",\"unit\":\"hours per week\",\"system\":\"" SYS_UCUM "\",\"code\":\"h/wk\"}}");
        }
        if (v[T_EOC_COST].set) {
            if (v[T_EOC_HOURS].set) put(b, ",");
            put(b, "{\"url\":\"" EXT_COST "\",\"valueMoney\":{\"value\":");
            put(b, vtext(x, T_EOC_COST));
            put(b, ",\"currency\":\"GBP\"}}");
        }
        put(b, "]");
    }
    put_identifier(b, m->id_system[R_EPISODE], key, kn);
    put(b, v[T_EOC_END].set ? ",\"status\":\"finished\"" : ",\"status\":\"active\"");
    int care_home = (v[T_EOC_TYPE].ce && v[T_EOC_TYPE].ce->care_home) ||
                    (v[T_EOC_CARE_HOME].set && !strcmp(vtext(x, T_EOC_CARE_HOME), "yes"));
    if (v[T_EOC_TYPE].set || care_home) {
        put(b, ",\"type\":[");
        if (v[T_EOC_TYPE].set) put_concept(b, x, T_EOC_TYPE, T_EOC_TYPE_DISPLAY);
        if (care_home) {
            if (v[T_EOC_TYPE].set) put(b, ",");
            put(b, "{\"coding\":[{\"system\":\"" SYS_EPISODE_TYPE
                   "\",\"code\":\"care-home\",\"display\":\"Care home placement\"}]}");
        }
        put(b, "]");
    }
    put_subject(b, "patient", pid);
    put_org_ref(b, "managingOrganization", m->org, strlen(m->org));
    put(b, ",\"period\":{\"start\":");
    put_q(b, vtext(x, T_EOC_START), v[T_EOC_START].n);
    if (v[T_EOC_END].set) {
        put(b, ",\"end\":");
        put_q(b, vtext(x, T_EOC_END), v[T_EOC_END].n);
    }
    put(b, "}}");
}

/* The business key of resource r: its id column, else its key columns
 * joined by "|" (into x->s) — each as its target normalised it where the
 * column is mapped (a date as YYYY-MM-DD, a service name as its code), so
 * the key survives a change of date format or of spelling. */
static status row_key(rowctx *x, int r, int idt, size_t *off, size_t *n) {
    const csvmap *m = x->m;
    if (m->keys[r].n == 0) {
        const colspec *c = &m->cols[m->by_target[idt]];
        if (!x->v[idt].set) {
            const char *col = c->ncols ? c->col[0] : targets[idt].path;
            return err_set(x->e, ST_INVALID, "required", col, "%s: a value is required (%s)", col,
                           targets[idt].what);
        }
        *off = x->v[idt].off;
        *n = x->v[idt].n;
        return ST_OK;
    }
    const keyspec *k = &m->keys[r];
    size_t start = x->s.len;
    for (int j = 0; j < k->n; j++) {
        const char *s;
        size_t l;
        field_text(m, x->row, k->idx[j], &s, &l);
        if (!l)
            return err_set(x->e, ST_INVALID, "required", k->col[j],
                           "%s: a value is required (it is part of the %s's key)", k->col[j],
                           resource_names[r]);
        int via = k->via[j] >= 0 && x->v[k->via[j]].set ? k->via[j] : -1;
        if (via >= 0) l = x->v[via].n;
        buf_reserve(&x->s, l + 2); /* the normalised value lives in x->s: no move while it is copied */
        if (via >= 0) s = vtext(x, via);
        if (j) buf_putc(&x->s, '|');
        buf_append(&x->s, s, l);
    }
    *off = start;
    *n = x->s.len - start;
    buf_putc(&x->s, 0);
    return ST_OK;
}

status csvmap_row(const csvmap *m, const csv_record *row, const char *source, csvmap_emit emit, void *ctx,
                  err *e) {
    status rc = ST_OK;
    rowctx x = {.m = m, .row = row, .e = e};
    buf out = {0};
    if (!m->bound) return err_set(e, ST_INTERNAL, "exception", NULL, "csvmap_row before csvmap_bind");
    if (source && !*source) source = NULL;
    for (const char *p = source; p && *p; p++)
        if (is_ws(*p) || (unsigned char)*p < 0x20)
            return err_set(e, ST_INVALID, "value", "source", "meta.source \"%.60s\" is not a URI (no spaces)",
                           source);
    if (row->nfields != m->nheader) {
        if (row->nfields < m->nheader) {
            /* name the first mapped column the row lacks */
            const char *missing = NULL;
            for (int i = 0; i < m->ncols && !missing; i++)
                for (int k = 0; k < m->cols[i].ncols; k++)
                    if (m->cols[i].idx[k] >= row->nfields) missing = m->cols[i].col[k];
            return err_set(e, ST_INVALID, "structure", missing, "the row has %d fields, the header %d%s%s",
                           row->nfields, m->nheader, missing ? ": no value for " : "",
                           missing ? missing : "");
        }
        return err_set(e, ST_INVALID, "structure", NULL, "the row has %d fields, the header %d", row->nfields,
                       m->nheader);
    }
    buf_reserve(&x.s, 512);
    /* 1. every value, before anything is emitted */
    for (int i = 0; i < m->ncols; i++) {
        const colspec *c = &m->cols[m->order[i]];
        if (c->target == T_IGNORE) continue;
        if ((rc = convert_column(&x, c))) goto out;
    }
    static const int required[] = {T_ENC_START, T_ENC_CLASS, T_EOC_START};
    for (size_t k = 0; k < NELEM(required); k++) {
        int rt = required[k];
        if (!m->produces[targets[rt].res] || x.v[rt].set) continue;
        const colspec *c = &m->cols[m->by_target[rt]];
        const char *col = c->ncols ? c->col[0] : targets[rt].path;
        rc = err_set(e, ST_INVALID, "required", col, "%s: a value is required (%s)", col, targets[rt].what);
        goto out;
    }
    const char *psys;
    size_t pkoff, pkn;
    if (x.v[T_PAT_LOCAL].set) {
        psys = m->id_system[R_PATIENT];
        pkoff = x.v[T_PAT_LOCAL].off;
        pkn = x.v[T_PAT_LOCAL].n;
    } else if (x.v[T_PAT_NHS].set) {
        psys = SYS_NHS;
        pkoff = x.v[T_PAT_NHS].off;
        pkn = x.v[T_PAT_NHS].n;
    } else {
        int t = m->by_target[T_PAT_LOCAL] >= 0 ? T_PAT_LOCAL : T_PAT_NHS;
        const colspec *c = &m->cols[m->by_target[t]];
        const char *col = c->ncols ? c->col[0] : targets[t].path;
        rc = err_set(e, ST_INVALID, "required", col,
                     "%s: a value is required: the row names no client id and no NHS number", col);
        goto out;
    }
    size_t key_off[R_COUNT] = {0}, key_n[R_COUNT] = {0};
    if (m->produces[R_ENCOUNTER] &&
        (rc = row_key(&x, R_ENCOUNTER, T_ENC_ID, &key_off[R_ENCOUNTER], &key_n[R_ENCOUNTER])))
        goto out;
    if (m->produces[R_EPISODE] &&
        (rc = row_key(&x, R_EPISODE, T_EOC_ID, &key_off[R_EPISODE], &key_n[R_EPISODE])))
        goto out;

    /* 2. write and emit */
    char pid[33], id[33];
    make_id(pid, "Patient", psys, x.s.p + pkoff, pkn);
    buf_reserve(&out, 2048);
    write_patient(&out, &x, pid, source);
    if ((rc = emit(ctx, "Patient", pid, out.p, out.len, e))) goto out;
    if (m->produces[R_ENCOUNTER]) {
        const char *key = x.s.p + key_off[R_ENCOUNTER];
        make_id(id, "Encounter", m->id_system[R_ENCOUNTER], key, key_n[R_ENCOUNTER]);
        write_encounter(&out, &x, id, key, key_n[R_ENCOUNTER], pid, source);
        if ((rc = emit(ctx, "Encounter", id, out.p, out.len, e))) goto out;
    }
    if (m->produces[R_EPISODE]) {
        const char *key = x.s.p + key_off[R_EPISODE];
        make_id(id, "EpisodeOfCare", m->id_system[R_EPISODE], key, key_n[R_EPISODE]);
        write_episode(&out, &x, id, key, key_n[R_EPISODE], pid, source);
        if ((rc = emit(ctx, "EpisodeOfCare", id, out.p, out.len, e))) goto out;
    }
out:
    buf_free(&x.s);
    buf_free(&out);
    return rc;
}
