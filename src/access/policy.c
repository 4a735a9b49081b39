/*
 * policy.c — role permissions (a table: role x area -> actions), the
 * sensitive-code labeller, and the store scope of a principal.
 *
 * Permissions are data: the table below is the whole of what a role may
 * do before relationships are considered; docs/access.md prints it. A role
 * with no READ on an area never sees it, whatever its relationships; a role
 * with READ sees it only for patients it has a legitimate relationship
 * with (store_scope), except the patient role, which sees only its own.
 *
 * Sensitive codes (data/access/sensitive-codes.tsv): every coding at any
 * depth of a resource (code, category, valueCodeableConcept, meta.tag,
 * meta.security ...) is looked up; a match sets the category's bit in the
 * resource's `sens` label when it is stored. The roles allowed each
 * category are in data/access/sensitive-roles.tsv.
 */
#include "policy.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../base/log.h"
#include "../store/store_int.h"

#define R ACC_READ
#define W ACC_WRITE
#define D ACC_DELETE
#define E ACC_EXPORT
#define C ACC_COUNT

/* role x area. Columns: demographics, clinical, medication, coordination,
 * directory, audit, risk, ingest, registry, patient-authored. The registry's
 * review queue and person links show demographics of anyone, so they are
 * for registry administrators and feeds only. */
static const unsigned perms[ROLE_COUNT][AREA_COUNT] = {
    [ROLE_GP] = {R | W | E | C, R | W | D | E | C, R | W | D | C, R | W | D | C, R, 0, R | C, 0, 0, R},
    [ROLE_PRACTICE_NURSE] = {R | W | C, R | W | C, R | W | C, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_CONSULTANT] = {R | W | E | C, R | W | D | E | C, R | W | C, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_ED_CLINICIAN] = {R | W | C, R | W | C, R | W | C, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_COMMUNITY_NURSE] = {R | C, R | W | C, R | C, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_SOCIAL_WORKER] = {R | W | C, R | C, 0, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_PHARMACIST] = {R | C, R | C, R | W | C, R | C, R, 0, 0, 0, 0, 0},
    [ROLE_MENTAL_HEALTH] = {R | W | C, R | W | C, R | W | C, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_MDG_COORDINATOR] = {R | C, R | C, R | C, R | W | C, R, 0, R | C, 0, 0, R},
    [ROLE_ANALYST] = {C, C, C, C, R, 0, C, 0, 0, 0},
    [ROLE_ADMIN] = {0, 0, 0, 0, R | W | D, 0, 0, R | W | D, R | W, 0},
    [ROLE_PRIVACY_OFFICER] = {0, 0, 0, 0, R, R | W, 0, 0, 0, 0},
    [ROLE_PATIENT] = {R, R, R, R, R, R, 0, 0, 0, R | W},
    [ROLE_SYSTEM] = {R | W | D | E | C, R | W | D | E | C, R | W | D | C, R | W | D | C, R | W | D, R | W,
                     R | W | C, R | W, R | W, 0},
};

static const char *const area_names[AREA_COUNT] = {
    "demographics", "clinical", "medication", "coordination", "directory",
    "audit",        "risk",     "ingest",     "registry",     "patient-authored",
};

const char *acc_area_name(acc_area a) {
    return a < AREA_COUNT ? area_names[a] : "?";
}

int acc_allow(acc_role role, acc_area area, unsigned actions) {
    if (role <= ROLE_NONE || role >= ROLE_COUNT || area >= AREA_COUNT) return 0;
    return (perms[role][area] & actions) == actions;
}

static const struct {
    const char *type;
    acc_area area;
} type_areas[] = {
    {"Patient", AREA_DEMOGRAPHICS},
    {"Person", AREA_DEMOGRAPHICS},
    {"RelatedPerson", AREA_DEMOGRAPHICS},
    {"MedicationRequest", AREA_MEDICATION},
    {"MedicationStatement", AREA_MEDICATION},
    {"MedicationDispense", AREA_MEDICATION},
    {"MedicationAdministration", AREA_MEDICATION},
    {"AllergyIntolerance", AREA_MEDICATION},
    {"Immunization", AREA_MEDICATION},
    {"Encounter", AREA_COORDINATION},
    {"EpisodeOfCare", AREA_COORDINATION},
    {"CarePlan", AREA_COORDINATION},
    {"CareTeam", AREA_COORDINATION},
    {"Goal", AREA_COORDINATION},
    {"Appointment", AREA_COORDINATION},
    {"ServiceRequest", AREA_COORDINATION},
    {"Task", AREA_COORDINATION},
    {"Communication", AREA_COORDINATION},
    {"CommunicationRequest", AREA_COORDINATION},
    {"Flag", AREA_COORDINATION},
    {"Consent", AREA_COORDINATION},
    {"QuestionnaireResponse", AREA_COORDINATION},
    {"DocumentReference", AREA_COORDINATION},
    {"Composition", AREA_COORDINATION},
    {"AuditEvent", AREA_AUDIT},
    {"RiskAssessment", AREA_RISK},
};

/* Types outside every patient's compartment are directory data. */
static int in_patient_compartment(const char *rtype) {
    for (size_t i = 0; i < fhir_n_compartments; i++)
        if (strcmp(fhir_compartments[i].resource, rtype) == 0) return 1;
    return strcmp(rtype, "Patient") == 0;
}

acc_area acc_area_of_type(const char *rtype) {
    for (size_t i = 0; i < sizeof type_areas / sizeof type_areas[0]; i++)
        if (strcmp(type_areas[i].type, rtype) == 0) return type_areas[i].area;
    return in_patient_compartment(rtype) ? AREA_CLINICAL : AREA_DIRECTORY;
}

/* ---- sensitive categories ------------------------------------------- */

static const char *const sens_names[] = {"sexual-health", "mental-health", "safeguarding",
                                         "substance",     "genetic",       "other"};
#define N_SENS ((int)(sizeof sens_names / sizeof sens_names[0]))

unsigned acc_sens_parse(const char *name) {
    for (int i = 0; i < N_SENS; i++)
        if (strcmp(sens_names[i], name) == 0) return 1u << i;
    return 0;
}

void acc_sens_names(unsigned sens, char *out, size_t n) {
    size_t len = 0;
    if (n) out[0] = 0;
    for (int i = 0; i < N_SENS; i++) {
        if (!(sens & (1u << i))) continue;
        int w = snprintf(out + len, n > len ? n - len : 0, "%s%s", len ? "," : "", sens_names[i]);
        if (w > 0) len += (size_t)w;
    }
}

typedef struct sens_code {
    char *system;
    char *code; /* without dots for ICD-10 */
    size_t len;
    int prefix;
    unsigned cat;
} sens_code;

static struct {
    sens_code *codes;
    size_t n;
    unsigned denied[ROLE_COUNT]; /* categories each role may not see */
    int loaded;
} pol;

unsigned acc_sens_denied(acc_role role) {
    if (!pol.loaded) return 0;
    return role < ROLE_COUNT ? pol.denied[role] : ~0u;
}

static int is_icd10(const char *sys) {
    return strncmp(sys, "http://hl7.org/fhir/sid/icd-10", 30) == 0;
}

static void undot(const char *in, char *out, size_t n) {
    size_t j = 0;
    for (; *in && j + 1 < n; in++)
        if (*in != '.') out[j++] = *in;
    out[j] = 0;
}

static unsigned code_category(const char *sys, const char *code) {
    if (strcmp(sys, ACC_SENSITIVITY_SYSTEM) == 0) return acc_sens_parse(code);
    char nodot[64];
    int icd = is_icd10(sys);
    if (icd) {
        undot(code, nodot, sizeof nodot);
        code = nodot;
    }
    unsigned cat = 0;
    for (size_t i = 0; i < pol.n; i++) {
        const sens_code *c = &pol.codes[i];
        if (icd ? !is_icd10(c->system) : strcmp(c->system, sys) != 0) continue;
        if (c->prefix ? strncmp(code, c->code, c->len) == 0 : strcmp(code, c->code) == 0) cat |= c->cat;
    }
    return cat;
}

unsigned acc_code_sensitivity(const char *system, const char *code) {
    return system && code ? code_category(system, code) : 0;
}

static unsigned scan(json_t *j, int depth) {
    unsigned cat = 0;
    if (depth > 12) return 0;
    if (json_is_object(j)) {
        const char *sys = json_string_value(json_object_get(j, "system"));
        const char *code = json_string_value(json_object_get(j, "code"));
        if (sys && code) cat |= code_category(sys, code);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (json_is_object(v) || json_is_array(v)) cat |= scan(v, depth + 1);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            if (json_is_object(v) || json_is_array(v)) cat |= scan(v, depth + 1);
        }
    }
    return cat;
}

static void labeller(void *ctx, const char *type, json_t *res, store_label *out) {
    store_label_default(type, res, out);
    out->sens = scan(res, 0); /* explicit labels count even with an empty list */
}

static int open_data(const char *dir, const char *name, FILE **f, char *path, size_t n) {
    snprintf(path, n, "%s/%s", dir, name);
    *f = fopen(path, "r");
    return *f != NULL;
}

static const char *default_dir(void) {
    const char *env = getenv("CONCORD_ACCESS_DATA");
    if (env && *env) return env;
    if (access("data/access/sensitive-codes.tsv", R_OK) == 0) return "data/access";
#ifdef CONCORD_SOURCE_DIR
    return CONCORD_SOURCE_DIR "/data/access";
#else
    return "data/access";
#endif
}

status acc_policy_init(const char *dir, err *e) {
    status rc = ST_OK;
    FILE *f = NULL;
    char path[1024], line[1024];
    if (!dir) dir = default_dir();
    if (pol.loaded) return ST_OK;
    if (!open_data(dir, "sensitive-codes.tsv", &f, path, sizeof path))
        return err_set(e, ST_IO, "exception", path, "cannot read the sensitive-codes list");
    int lineno = 0;
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *sys = strtok(line, "\t"), *code = strtok(NULL, "\t"), *cat = strtok(NULL, "\t");
        unsigned bit = cat ? acc_sens_parse(cat) : 0;
        if (!sys || !code || !bit) {
            rc = err_set(e, ST_INVALID, "invalid", NULL, "%s:%d: expected system, code and a known category",
                         path, lineno);
            goto out;
        }
        if (pol.n == cap) {
            cap = cap ? cap * 2 : 64;
            sens_code *nc = realloc(pol.codes, cap * sizeof *nc);
            if (!nc) {
                rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
                goto out;
            }
            pol.codes = nc;
        }
        sens_code *c = &pol.codes[pol.n++];
        size_t len = strlen(code);
        c->prefix = len > 0 && code[len - 1] == '*';
        if (c->prefix) code[len - 1] = 0;
        char nodot[64];
        undot(code, nodot, sizeof nodot);
        c->system = strdup(sys);
        c->code = strdup(is_icd10(sys) ? nodot : code);
        c->len = strlen(c->code);
        c->cat = bit;
    }
    fclose(f);
    f = NULL;
    /* every role is denied every category it is not listed for */
    for (int r = 0; r < ROLE_COUNT; r++)
        pol.denied[r] = (1u << N_SENS) - 1;
    if (!open_data(dir, "sensitive-roles.tsv", &f, path, sizeof path)) {
        rc = err_set(e, ST_IO, "exception", path, "cannot read the sensitive-roles list");
        goto out;
    }
    lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *cat = strtok(line, "\t"), *roles = strtok(NULL, "\t");
        unsigned bit = cat ? acc_sens_parse(cat) : 0;
        if (!bit || !roles) {
            rc = err_set(e, ST_INVALID, "invalid", NULL, "%s:%d: expected a known category and roles", path,
                         lineno);
            goto out;
        }
        for (char *r = strtok(roles, ","); r; r = strtok(NULL, ",")) {
            while (isspace((unsigned char)*r))
                r++;
            acc_role role = acc_role_parse(r);
            if (role == ROLE_NONE) {
                rc = err_set(e, ST_INVALID, "invalid", NULL, "%s:%d: unknown role '%s'", path, lineno, r);
                goto out;
            }
            pol.denied[role] &= ~bit;
        }
    }
    pol.loaded = 1;
    store_set_labeller(labeller, NULL);
    log_info("access: %zu sensitive codes loaded from %s", pol.n, dir);
out:
    if (f) fclose(f);
    return rc;
}

/* ---- scope --------------------------------------------------------- */

/* The organisations that are part of another (practices of an MDG):
 * cached for 30 s, the organisation directory changes rarely. */
#define ORG_CACHE 64
static struct {
    pthread_mutex_t lock;
    struct {
        char org[16];
        char kids[STORE_SCOPE_MAX_ORGS - 1][16];
        int nkids;
        time_t at;
    } v[ORG_CACHE];
    int n, next;
} org_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static status org_children(store *s, const char *org, char kids[][16], int max, int *n, err *e) {
    time_t now = time(NULL);
    *n = 0;
    pthread_mutex_lock(&org_cache.lock);
    for (int i = 0; i < org_cache.n; i++) {
        if (strcmp(org_cache.v[i].org, org) == 0 && now - org_cache.v[i].at < 30) {
            *n = org_cache.v[i].nkids < max ? org_cache.v[i].nkids : max;
            memcpy(kids, org_cache.v[i].kids, (size_t)*n * 16);
            pthread_mutex_unlock(&org_cache.lock);
            return ST_OK;
        }
    }
    pthread_mutex_unlock(&org_cache.lock);
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    static const char sql[] = "SELECT ods FROM acc_org WHERE part_of = ? ORDER BY ods";
    db_stmt *st = NULL;
    status rc = s->drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    s->drv->bind_text(st, 1, org, -1);
    int r;
    while ((r = s->drv->step(st, e)) == 1) {
        const char *k = s->drv->col_text(st, 0, NULL);
        if (k && *n < max && strlen(k) < 16) snprintf(kids[(*n)++], 16, "%s", k);
    }
    s->drv->done(st);
    if (r < 0) return ST_IO;
    pthread_mutex_lock(&org_cache.lock);
    int slot = -1;
    for (int i = 0; i < org_cache.n; i++)
        if (strcmp(org_cache.v[i].org, org) == 0) slot = i;
    if (slot < 0) {
        if (org_cache.n < ORG_CACHE)
            slot = org_cache.n++;
        else
            slot = org_cache.next++ % ORG_CACHE;
    }
    snprintf(org_cache.v[slot].org, 16, "%s", org);
    int keep = *n < STORE_SCOPE_MAX_ORGS - 1 ? *n : STORE_SCOPE_MAX_ORGS - 1;
    memcpy(org_cache.v[slot].kids, kids, (size_t)keep * 16);
    org_cache.v[slot].nkids = keep;
    org_cache.v[slot].at = now;
    pthread_mutex_unlock(&org_cache.lock);
    return ST_OK;
}

void acc_scope_fix(acc_scope *a) {
    for (int i = 0; i < a->sc.norgs; i++)
        a->sc.orgs[i] = a->orgs[i];
    a->sc.self_pkeys = a->self;
}

status acc_scope_for(store *s, const acc_principal *p, acc_scope *out, err *e) {
    status rc = ST_OK;
    memset(out, 0, sizeof *out);
    /* unrestricted: the local CLI (no principal), and the population-scope
     * integration role (machine accounts an administrator creates; their
     * writes carry their organisation, every access is logged) */
    if (!p || p->role == ROLE_SYSTEM) return ST_OK;
    store_scope *sc = &out->sc;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    sc->restricted = 1;
    sc->now_usec = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    sc->user_key = p->user_key;
    sc->sens_denied = acc_sens_denied(p->role);
    sc->practitioner = p->practitioner[0] ? p->practitioner : NULL;
    /* roles with no read of any patient area see no patient data */
    sc->patient_data =
        acc_allow(p->role, AREA_DEMOGRAPHICS, ACC_READ) || acc_allow(p->role, AREA_CLINICAL, ACC_READ) ||
        acc_allow(p->role, AREA_MEDICATION, ACC_READ) || acc_allow(p->role, AREA_COORDINATION, ACC_READ);
    if (p->org[0]) {
        snprintf(out->orgs[out->sc.norgs++], 16, "%s", p->org);
        int nk = 0;
        rc = org_children(s, p->org, &out->orgs[1], STORE_SCOPE_MAX_ORGS - 1, &nk, e);
        if (rc != ST_OK) return rc;
        sc->norgs += nk;
    }
    if (p->role == ROLE_PATIENT) {
        sc->self_only = 1;
        db *d = store_db(s, e);
        if (!d) return e ? e->code : ST_IO;
        int64_t pkey = 0;
        if (p->patient[0]) rc = store_patient_key(s, d, p->patient, 0, &pkey, e);
        if (rc != ST_OK) return rc;
        if (pkey) rc = store_person_pkeys(s, pkey, out->self, 32, &sc->nself, e);
        if (rc != ST_OK) return rc;
    }
    acc_scope_fix(out);
    return ST_OK;
}
