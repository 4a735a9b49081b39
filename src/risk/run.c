/*
 * run.c — scoring: the full run (`concord risk run`) over everyone, and
 * the incremental rescoring of people whose facts changed.
 *
 * A full run:
 *   1. reads risk_fact in patient-key order, a page at a time, with each
 *      person's previous result (risk_score) alongside;
 *   2. for each person decodes the facts, computes the indices, the
 *      model's features, probability and explanation (score_person);
 *   3. ranks the scored people and cuts the pyramid: each tier's threshold
 *      is the probability at its share's rank, and a person's tier is the
 *      first whose threshold they reach (so an incremental rescore,
 *      which reuses the thresholds, places people exactly as a full run);
 *   4. writes a RiskAssessment (one per person, id "ra-<patient id>", a new
 *      version when the result changed) through the store's bulk pipeline
 *      (src/ingest/bulk.h): worker threads parse and prepare, one writer
 *      stores, in large transactions;
 *   5. in one transaction: upserts every person's row of risk_score (what
 *      worklists read), records a risk_event for each change of tier,
 *      clears the rescoring marks set before the run started, and records
 *      the run (date rule, model, tiers with their thresholds).
 *   A crash between 4 and 5 leaves RiskAssessments newer than risk_score;
 *   the next run writes them again. Nothing is half-committed.
 *
 * "Changed" is a fingerprint of what a clinician would see: status,
 * probability to 0.01 percentage points, tier, index scores, the factors
 * and the model version — not the assessment date, so a nightly run with
 * an unchanged picture writes no new versions.
 *
 * Incremental rescoring (risk_rescore_dirty) is a queue drained after
 * commit, not work done inside the facts hook: the hook only marks the
 * person (risk_fact.dirty, same transaction as the data, so a mark is
 * never lost), and the rescoring reads the committed facts later, in its
 * own transaction. Why: a bulk load writes each person's resources one
 * after another (27 on average) and would otherwise rescore them 27 times;
 * writing a RiskAssessment from inside another resource's write would
 * re-enter the store; the tier thresholds come from the last full run,
 * which the hook has no business reading; and an HL7 ACK should not wait
 * for scoring. `concord serve` drains the queue on a thread woken by the
 * hook (service.c); `concord risk rescore` drains it from the command line.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../access/policy.h"
#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "../fhir/json.h"
#include "../ingest/bulk.h"
#include "../store/store_int.h"
#include "risk_int.h"

#define PAGE              5000
#define TIER_SYSTEM       "https://concord.example/CodeSystem/risk-tier"
#define MODEL_SYSTEM      "https://concord.example/CodeSystem/risk-model"
#define ASSESSMENT_SYSTEM "https://concord.example/CodeSystem/risk-assessment"
#define FACTOR_URL        "https://concord.example/StructureDefinition/risk-factor"
#define INDEX_URL         "https://concord.example/StructureDefinition/risk-index"
#define ODS_SYSTEM        "https://fhir.nhs.uk/Id/ods-organization-code"

/* ---- small maps -------------------------------------------------------------------- */

typedef struct org_entry {
    char *id, *ods, *mdg;
} org_entry;

typedef struct rk_scorer {
    const risk_codes *c;
    const risk_model *m;
    int32_t as_of;
    risk_tiers tiers;
    double thresholds[RISK_MAX_TIERS];
    int have_thresholds;
    int ltc_dm1, ltc_dm2;
    /* practices: sorted by id */
    org_entry *orgs;
    size_t norgs, orgcap;
    rk_depmap *dep; /* the whole lookup (full run), or NULL: looked up by SQL */
    arena a;
} rk_scorer;

static uint64_t fnv(const char *s, uint64_t h) {
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void scorer_init(rk_scorer *sc, const risk_codes *c, const risk_model *m) {
    memset(sc, 0, sizeof *sc);
    sc->c = c;
    sc->m = m;
    sc->ltc_dm1 = sc->ltc_dm2 = -1;
    for (int g = 0; g < c->nltc; g++) {
        if (!strcmp(c->ltc_id[g], "dm1")) sc->ltc_dm1 = g;
        if (!strcmp(c->ltc_id[g], "dm2")) sc->ltc_dm2 = g;
    }
}

static void scorer_free(rk_scorer *sc) {
    free(sc->orgs);
    rk_depmap_free(sc->dep);
    arena_free(&sc->a);
}

static int cmp_org(const void *a, const void *b) {
    return strcmp(((const org_entry *)a)->id, ((const org_entry *)b)->id);
}

static void org_add(rk_scorer *sc, const char *id, json_t *res) {
    const char *ods = "";
    size_t i;
    json_t *ident;
    json_array_foreach(json_object_get(res, "identifier"), i, ident) {
        const char *sys = json_string_value(json_object_get(ident, "system"));
        const char *v = json_string_value(json_object_get(ident, "value"));
        if (sys && v && !strcmp(sys, ODS_SYSTEM)) ods = v;
    }
    const char *mdg = "";
    const char *ref = json_string_value(json_object_get(json_object_get(res, "partOf"), "reference"));
    if (ref && !strncmp(ref, "Organization/", 13)) mdg = ref + 13;
    if (sc->norgs == sc->orgcap) {
        sc->orgcap = sc->orgcap ? sc->orgcap * 2 : 64;
        sc->orgs = realloc(sc->orgs, sc->orgcap * sizeof *sc->orgs);
        if (!sc->orgs) abort();
    }
    sc->orgs[sc->norgs++] = (org_entry){arena_strdup(&sc->a, id), arena_strdup(&sc->a, *ods ? ods : id),
                                        arena_strdup(&sc->a, mdg)};
}

/* Every Organization: practice id -> ODS code and MDG (partOf). */
static status load_orgs(store *s, db *d, rk_scorer *sc, err *e) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] = "SELECT id, body FROM resource WHERE rtype = 'Organization' AND deleted = 0";
    status rc = drv->prepare(d, sql, 0, &st, e);
    if (rc != ST_OK) return rc;
    int r;
    while ((r = drv->step(st, e)) == 1) {
        const char *id = drv->col_text(st, 0, NULL);
        size_t len = 0;
        const char *body = drv->col_text(st, 1, &len);
        json_t *res = body ? json_loadb(body, len, 0, NULL) : NULL;
        if (id && res) org_add(sc, id, res);
        json_decref(res);
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    if (sc->norgs) qsort(sc->orgs, sc->norgs, sizeof *sc->orgs, cmp_org);
    return ST_OK;
}

/* One practice, read on demand inside a transaction (incremental). */
static const org_entry *org_find(rk_scorer *sc, store_txn *tx, const char *id) {
    if (!id || !*id) return NULL;
    org_entry key = {(char *)id, NULL, NULL};
    org_entry *hit = sc->norgs ? bsearch(&key, sc->orgs, sc->norgs, sizeof *sc->orgs, cmp_org) : NULL;
    if (hit || !tx) return hit;
    buf body = {0};
    store_meta meta;
    err e;
    if (store_txn_read(tx, "Organization", id, &body, &meta, &e) == ST_OK && body.p) {
        json_t *res = json_loadb(body.p, body.len, 0, NULL);
        if (res) {
            org_add(sc, id, res);
            json_decref(res);
            qsort(sc->orgs, sc->norgs, sizeof *sc->orgs, cmp_org);
        }
    }
    buf_free(&body);
    return sc->norgs ? bsearch(&key, sc->orgs, sc->norgs, sizeof *sc->orgs, cmp_org) : NULL;
}

struct rk_depmap {
    struct {
        char *postcode;
        int decile;
    } * v;
    size_t nslots;
    arena a;
};

status rk_depmap_load(store *s, rk_depmap **out, err *e) {
    *out = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    int64_t n = 0;
    status rc = drv->prepare(d, "SELECT COUNT(*) FROM risk_deprivation", 0, &st, e);
    if (rc != ST_OK) return rc;
    if (drv->step(st, e) == 1) n = drv->col_int(st, 0);
    drv->done(st);
    rk_depmap *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->nslots = 1024;
    while (m->nslots < (size_t)n * 2)
        m->nslots *= 2;
    m->v = calloc(m->nslots, sizeof *m->v);
    if (!m->v) abort();
    rc = drv->prepare(d, "SELECT postcode, decile FROM risk_deprivation", 0, &st, e);
    if (rc != ST_OK) {
        rk_depmap_free(m);
        return rc;
    }
    int r;
    while ((r = drv->step(st, e)) == 1) {
        const char *pc = drv->col_text(st, 0, NULL);
        if (!pc) continue;
        size_t mask = m->nslots - 1;
        for (size_t i = fnv(pc, 1469598103934665603ULL) & mask;; i = (i + 1) & mask) {
            if (!m->v[i].postcode) {
                m->v[i].postcode = arena_strdup(&m->a, pc);
                m->v[i].decile = (int)drv->col_int(st, 1);
                break;
            }
            if (!strcmp(m->v[i].postcode, pc)) break;
        }
    }
    drv->done(st);
    if (r < 0) {
        rk_depmap_free(m);
        return ST_IO;
    }
    *out = m;
    return ST_OK;
}

int rk_depmap_get(const rk_depmap *m, const char *postcode) {
    if (!m || !postcode || !*postcode) return 0;
    size_t mask = m->nslots - 1;
    for (size_t i = fnv(postcode, 1469598103934665603ULL) & mask;; i = (i + 1) & mask) {
        if (!m->v[i].postcode) return 0;
        if (!strcmp(m->v[i].postcode, postcode)) return m->v[i].decile;
    }
}

void rk_depmap_free(rk_depmap *m) {
    if (!m) return;
    free(m->v);
    arena_free(&m->a);
    free(m);
}

static int deprivation_of(rk_scorer *sc, store_txn *tx, const char *postcode) {
    if (!postcode || !*postcode) return 0;
    if (sc->dep) return rk_depmap_get(sc->dep, postcode);
    if (!tx) return 0;
    const db_driver *drv = tx->s->drv;
    db_stmt *st = NULL;
    err e;
    static const char sql[] = "SELECT decile FROM risk_deprivation WHERE postcode = ?";
    if (drv->prepare(tx->d, sql, 1, &st, &e) != ST_OK) return 0;
    drv->bind_text(st, 1, postcode, -1);
    int dec = drv->step(st, &e) == 1 ? (int)drv->col_int(st, 0) : 0;
    drv->done(st);
    return dec;
}

/* ---- one person ---------------------------------------------------------------------- */

typedef struct rk_xfactor {
    const char *code;  /* static, or the code lists' */
    const char *label; /* the run's strings */
    int milli;         /* contribution to the log-odds x 1000 */
} rk_xfactor;

typedef struct rk_result {
    int64_t pkey;
    const char *patient_id;
    int status;
    double prob;
    int tier;
    int age;
    char sex;
    double efi;
    int efi_deficits, efi_band;
    int hfrs_tenths, hfrs_band;
    int charlson, charlson2011;
    int lace, lace_band;
    int diabetes, care_plan;
    int32_t last_review;
    const char *practice, *mdg;
    rk_xfactor fx[RK_TOP_FACTORS]; /* the explanation */
    int nfx;
    const char *basis; /* encounter ids separated by spaces */
    int64_t fingerprint, prev_fingerprint;
    int64_t stored_fp; /* what risk_score.fingerprint records: the result its RiskAssessment shows */
    uint64_t prev_row; /* hash of the person's risk_score row before this run (0: none) */
    int has_prev;
    char prev_tier[16];
} rk_result;

static const char *result_status(int status) {
    switch (status) {
    case RK_OK: return "scored";
    case RK_SKIP_NO_PATIENT:
    case RK_SKIP_NO_BIRTH: return "insufficient-data";
    case RK_SKIP_DECEASED: return "deceased";
    default: return "not-registered";
    }
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h * 1099511628211ULL;
}

/* What a person's risk_score row says, apart from when it was written: a
 * row whose hash is unchanged is not written again. */
static uint64_t row_hash(int64_t fp, const char *status, const char *practice, const char *mdg, int age,
                         int sex, int diabetes, int care_plan, int32_t last_review) {
    uint64_t h = fnv(status, 1469598103934665603ULL);
    h = fnv(practice ? practice : "", mix(h, 1));
    h = fnv(mdg ? mdg : "", mix(h, 2));
    h = mix(h, (uint64_t)fp);
    h = mix(h, (uint64_t)(int64_t)age);
    h = mix(h, (uint64_t)sex);
    h = mix(h, (uint64_t)diabetes);
    h = mix(h, (uint64_t)care_plan);
    h = mix(h, (uint64_t)(int64_t)last_review);
    return h ? h : 1;
}

static uint64_t result_row_hash(const rk_result *r) {
    return row_hash(r->stored_fp, result_status(r->status), r->practice, r->mdg, r->age,
                    r->sex ? r->sex : 'u', r->diabetes, r->care_plan, r->last_review);
}

/* The explanation as stored and served: [{"code","label","contribution"}] */
static void factors_json(const rk_result *r, buf *b) {
    buf_putc(b, '[');
    for (int i = 0; i < r->nfx; i++) {
        if (i) buf_putc(b, ',');
        buf_puts(b, "{\"code\":\"");
        buf_puts(b, r->fx[i].code);
        buf_puts(b, "\",\"label\":\"");
        buf_json_escape(b, r->fx[i].label, strlen(r->fx[i].label));
        int m = r->fx[i].milli;
        buf_printf(b, "\",\"contribution\":%s%d.%03d}", m < 0 ? "-" : "", abs(m) / 1000, abs(m) % 1000);
    }
    buf_putc(b, ']');
}

static void rationale(const rk_result *r, buf *b) {
    if (!r->nfx) buf_puts(b, "No factor raises this person's risk above that of the average person.");
    for (int i = 0; i < r->nfx; i++) {
        buf_puts(b, i ? "; " : "Raised most by: ");
        buf_puts(b, r->fx[i].label);
    }
}

static void json_str(buf *b, const char *s) {
    buf_putc(b, '"');
    buf_json_escape(b, s, strlen(s));
    buf_putc(b, '"');
}

static void score_person(rk_scorer *sc, store_txn *tx, rk_person *p, rk_result *r, arena *a) {
    const risk_codes *c = sc->c;
    memset(r, 0, sizeof *r);
    r->pkey = p->pkey;
    r->patient_id = p->patient_id;
    r->tier = -1;
    r->prob = NAN;
    r->age = rk_age_on(p, sc->as_of);
    r->sex = p->sex;
    r->care_plan = p->care_plan_active;
    r->last_review = p->last_review;
    const org_entry *org = org_find(sc, tx, p->practice);
    r->practice = org ? org->ods : p->practice;
    r->mdg = org ? org->mdg : "";
    r->basis = "";
    r->efi_band = r->hfrs_band = r->lace_band = -1;
    r->hfrs_tenths = r->charlson = r->charlson2011 = r->lace = -1;
    r->status = rk_eligible(p, sc->as_of);
    if (r->status != RK_OK) return;
    rk_profile pr;
    rk_profile_of(c, p, sc->as_of, deprivation_of(sc, tx, p->postcode), &pr);
    r->efi = pr.ix.efi;
    r->efi_deficits = pr.ix.efi_deficits;
    r->efi_band = pr.ix.efi_band;
    r->hfrs_tenths = pr.ix.hfrs_tenths;
    r->hfrs_band = pr.ix.hfrs_band;
    r->charlson = pr.ix.charlson;
    r->charlson2011 = pr.ix.charlson2011;
    r->lace = pr.ix.lace;
    r->lace_band = pr.ix.lace_band;
    r->diabetes = (sc->ltc_dm1 >= 0 && (pr.ltc >> sc->ltc_dm1 & 1)) ||
                  (sc->ltc_dm2 >= 0 && (pr.ltc >> sc->ltc_dm2 & 1));
    double x[RK_MAX_FEATURES];
    rk_features_of(&sc->m->fs, &pr, x);
    r->prob = rk_logistic(rk_model_eta(sc->m, x));
    rk_factor f[RK_TOP_FACTORS];
    int nf = rk_explain(sc->m, x, f);
    for (int i = 0; i < nf; i++) {
        char label[160];
        rk_factor_label(c, &pr, &f[i], label, sizeof label);
        r->fx[i].code = rk_factor_code(&f[i], c);
        r->fx[i].label = arena_strdup(a, label);
        r->fx[i].milli = (int)lround(f[i].contribution * 1000);
    }
    r->nfx = nf;
    /* basis: the recent admissions and A&E attendances the score rests on */
    buf basis = {0};
    int nb = 0;
    for (int i = p->nenc - 1; i >= 0 && nb < 5; i--) {
        const rk_enc *x2 = &p->enc[i];
        if (!x2->id[0] || x2->start > sc->as_of || x2->start <= sc->as_of - 730) continue;
        if (nb++) buf_putc(&basis, ' ');
        buf_puts(&basis, x2->id);
    }
    r->basis = basis.p ? arena_strdup(a, basis.p) : "";
    buf_free(&basis);
}

static int tier_of(const rk_scorer *sc, double prob) {
    for (int k = 0; k < sc->tiers.n - 1; k++)
        if (prob >= sc->thresholds[k]) return k;
    return sc->tiers.n - 1;
}

static int64_t fingerprint_of(const rk_scorer *sc, const rk_result *r) {
    uint64_t h = fnv(sc->m->version, 1469598103934665603ULL);
    h = mix(h, (uint64_t)r->status);
    h = mix(h, (uint64_t)(r->status == RK_OK ? llround(r->prob * 10000) : 0));
    h = mix(h, (uint64_t)(int64_t)r->tier);
    h = mix(h, (uint64_t)(int64_t)r->efi_deficits);
    h = mix(h, (uint64_t)(int64_t)r->hfrs_tenths);
    h = mix(h, (uint64_t)(int64_t)r->charlson);
    h = mix(h, (uint64_t)(int64_t)r->charlson2011);
    h = mix(h, (uint64_t)(int64_t)r->lace);
    for (int i = 0; i < r->nfx; i++) {
        h = fnv(r->fx[i].label, h);
        h = mix(h, (uint64_t)(int64_t)r->fx[i].milli);
    }
    return (int64_t)(h & 0x7fffffffffffffffULL);
}

static const char *band_name(const rk_bands *b, int i) {
    return i >= 0 && i < b->n ? b->v[i].name : NULL;
}

static void ra_id(const rk_result *r, char *out, size_t n) {
    if (strlen(r->patient_id) <= 61)
        snprintf(out, n, "ra-%s", r->patient_id);
    else
        snprintf(out, n, "ra-k%lld", (long long)r->pkey);
}

static void ra_index(buf *b, int *first, const char *index, double score, int decimals, const char *band) {
    if (!*first) buf_putc(b, ',');
    *first = 0;
    buf_printf(b, "{\"url\":\"%s\",\"extension\":[{\"url\":\"index\",\"valueCode\":\"%s\"},", INDEX_URL,
               index);
    buf_printf(b, "{\"url\":\"score\",\"valueDecimal\":%.*f}", decimals, score);
    if (band) buf_printf(b, ",{\"url\":\"band\",\"valueCode\":\"%s\"}", band);
    buf_puts(b, "]}");
}

/* The RiskAssessment of one result, as JSON text. */
static void build_ra(const rk_scorer *sc, const rk_result *r, buf *b) {
    const risk_codes *c = sc->c;
    char id[80], day[11], next[11], end[11];
    ra_id(r, id, sizeof id);
    risk_format_day(sc->as_of, day);
    risk_format_day(sc->as_of + 1, next);
    risk_format_day(sc->as_of + 365, end);
    buf_puts(b, "{\"resourceType\":\"RiskAssessment\",\"id\":");
    json_str(b, id);
    /* factors that reveal a sensitive category (a depression) make the
     * assessment as sensitive as the records behind them (src/access) */
    unsigned sens = 0;
    for (int i = 0; r->status == RK_OK && i < r->nfx; i++)
        sens |= rk_factor_sensitivity(c, r->fx[i].code);
    if (sens) {
        buf_puts(b, ",\"meta\":{\"security\":[");
        for (unsigned bit = 1, n = 0; bit; bit <<= 1) {
            if (!(sens & bit)) continue;
            char name[64];
            acc_sens_names(bit, name, sizeof name);
            buf_printf(b, "%s{\"system\":\"" ACC_SENSITIVITY_SYSTEM "\",\"code\":\"%s\"}", n++ ? "," : "",
                       name);
        }
        buf_puts(b, "]}");
    }
    buf_puts(b,
             ",\"status\":\"final\",\"method\":{\"coding\":[{\"system\":\"" MODEL_SYSTEM "\",\"version\":");
    json_str(b, sc->m->version);
    buf_puts(b,
             ",\"code\":\"" RK_MODEL_NAME "\",\"display\":\"concord emergency-admission model\"}],\"text\":");
    char mt[128];
    snprintf(mt, sizeof mt, "concord emergency-admission model %s", sc->m->version);
    json_str(b, mt);
    buf_puts(
        b, "},\"code\":{\"coding\":[{\"system\":\"" ASSESSMENT_SYSTEM
           "\",\"code\":\"emergency-admission-12m\",\"display\":\"Risk of an emergency hospital admission in"
           " the next 12 months\"}]},\"subject\":{\"reference\":");
    char ref[96];
    snprintf(ref, sizeof ref, "Patient/%s", r->patient_id);
    json_str(b, ref);
    buf_printf(b, "},\"occurrenceDateTime\":\"%s\"", day);
    if (r->status != RK_OK) {
        buf_puts(b, ",\"note\":[{\"text\":");
        json_str(b, rk_skip_reason(r->status));
        buf_puts(b, "}]}");
        return;
    }
    if (r->basis[0]) {
        buf_puts(b, ",\"basis\":[");
        int n = 0;
        for (const char *p = r->basis; *p;) {
            size_t len = strcspn(p, " ");
            char br[96];
            snprintf(br, sizeof br, "Encounter/%.*s", (int)(len < 80 ? len : 80), p);
            if (n++) buf_putc(b, ',');
            buf_puts(b, "{\"reference\":");
            json_str(b, br);
            buf_putc(b, '}');
            p += len;
            while (*p == ' ')
                p++;
        }
        buf_putc(b, ']');
    }
    buf_puts(b,
             ",\"prediction\":[{\"outcome\":{\"text\":\"Emergency hospital admission within 12 months\"},");
    buf_printf(b,
               "\"probabilityDecimal\":%.4f,\"qualitativeRisk\":{\"coding\":[{\"system\":\"" TIER_SYSTEM
               "\",\"code\":\"%s\"}]},",
               r->prob, sc->tiers.name[r->tier]);
    buf_printf(b, "\"whenPeriod\":{\"start\":\"%s\",\"end\":\"%s\"},\"rationale\":", next, end);
    buf why = {0};
    rationale(r, &why);
    json_str(b, why.p);
    buf_free(&why);
    buf_puts(b, "}]");
    /* the factors, as computed, and the indices, as extensions (none: no element) */
    buf x = {0};
    int first = 1;
    for (int i = 0; i < r->nfx; i++) {
        if (!first) buf_putc(&x, ',');
        first = 0;
        buf_puts(&x, "{\"url\":\"" FACTOR_URL "\",\"extension\":[{\"url\":\"code\",\"valueCode\":\"");
        buf_puts(&x, r->fx[i].code);
        buf_puts(&x, "\"},{\"url\":\"label\",\"valueString\":");
        json_str(&x, r->fx[i].label);
        int m = r->fx[i].milli;
        buf_printf(&x, "},{\"url\":\"contribution\",\"valueDecimal\":%s%d.%03d}]}", m < 0 ? "-" : "",
                   abs(m) / 1000, abs(m) % 1000);
    }
    if (r->efi_band >= 0) ra_index(&x, &first, "efi", r->efi, 3, band_name(&c->bands_efi, r->efi_band));
    if (r->hfrs_band >= 0)
        ra_index(&x, &first, "hfrs", r->hfrs_tenths / 10.0, 1, band_name(&c->bands_hfrs, r->hfrs_band));
    if (r->charlson >= 0) {
        ra_index(&x, &first, "charlson", r->charlson, 0, NULL);
        ra_index(&x, &first, "charlson-2011", r->charlson2011, 0, NULL);
    }
    if (r->lace >= 0) ra_index(&x, &first, "lace", r->lace, 0, band_name(&c->bands_lace, r->lace_band));
    if (x.len) {
        buf_puts(b, ",\"extension\":[");
        buf_append(b, x.p, x.len);
        buf_putc(b, ']');
    }
    buf_free(&x);
    buf_putc(b, '}');
}

/* ---- writing results ----------------------------------------------------------------- */

#define SCORE_COLS 26
#define SCORE_ROWS 100
static const char SCORE_INSERT[] = "INSERT INTO risk_score (pkey, patient_id, practice, mdg, age, sex, "
                                   "status, reason, probability, tier, efi,"
                                   " efi_band, hfrs, hfrs_band, charlson, charlson2011, lace, lace_band, "
                                   "diabetes, care_plan, last_review, model,"
                                   " as_of, scored, fingerprint, factors) VALUES ";
static const char SCORE_CONFLICT[] =
    " ON CONFLICT (pkey) DO UPDATE SET patient_id = excluded.patient_id, practice = excluded.practice,"
    " mdg = excluded.mdg, age = excluded.age, sex = excluded.sex, status = excluded.status,"
    " reason = excluded.reason, probability = excluded.probability, tier = excluded.tier, efi = excluded.efi,"
    " efi_band = excluded.efi_band, hfrs = excluded.hfrs, hfrs_band = excluded.hfrs_band,"
    " charlson = excluded.charlson, charlson2011 = excluded.charlson2011, lace = excluded.lace,"
    " lace_band = excluded.lace_band, diabetes = excluded.diabetes, care_plan = excluded.care_plan,"
    " last_review = excluded.last_review, model = excluded.model, as_of = excluded.as_of,"
    " scored = excluded.scored, fingerprint = excluded.fingerprint, factors = excluded.factors";

static char score_sql_one[2048], score_sql_many[SCORE_ROWS * (SCORE_COLS * 3 + 4) + 2048];
static pthread_once_t score_sql_once = PTHREAD_ONCE_INIT;

static void build_score_sql(void) {
    buf b = {0};
    for (int pass = 0; pass < 2; pass++) {
        buf_reset(&b);
        buf_puts(&b, SCORE_INSERT);
        int rows = pass ? SCORE_ROWS : 1;
        for (int r = 0; r < rows; r++) {
            buf_puts(&b, r ? ",(" : "(");
            for (int k = 0; k < SCORE_COLS; k++)
                buf_puts(&b, k ? ",?" : "?");
            buf_putc(&b, ')');
        }
        buf_puts(&b, SCORE_CONFLICT);
        if (pass)
            snprintf(score_sql_many, sizeof score_sql_many, "%s", b.p);
        else
            snprintf(score_sql_one, sizeof score_sql_one, "%s", b.p);
    }
    buf_free(&b);
}

static void bind_score(const db_driver *drv, db_stmt *st, int base, const rk_scorer *sc, const rk_result *r,
                       int64_t now) {
    const risk_codes *c = sc->c;
    int k = base;
    char sex[2] = {r->sex ? r->sex : 'u', 0};
    drv->bind_int(st, k++, r->pkey);
    drv->bind_text(st, k++, r->patient_id, -1);
    drv->bind_text(st, k++, r->practice ? r->practice : "", -1);
    drv->bind_text(st, k++, r->mdg ? r->mdg : "", -1);
    if (r->age >= 0)
        drv->bind_int(st, k++, r->age);
    else
        drv->bind_null(st, k++);
    drv->bind_text(st, k++, sex, -1);
    drv->bind_text(st, k++, result_status(r->status), -1);
    drv->bind_text(st, k++, rk_skip_reason(r->status), -1);
    int ok = r->status == RK_OK;
    if (ok)
        drv->bind_double(st, k++, r->prob);
    else
        drv->bind_null(st, k++);
    if (ok && r->tier >= 0)
        drv->bind_text(st, k++, sc->tiers.name[r->tier], -1);
    else
        drv->bind_null(st, k++);
    if (ok)
        drv->bind_double(st, k++, r->efi);
    else
        drv->bind_null(st, k++);
    const char *b1 = ok ? band_name(&c->bands_efi, r->efi_band) : NULL;
    if (b1)
        drv->bind_text(st, k++, b1, -1);
    else
        drv->bind_null(st, k++);
    if (ok && r->hfrs_tenths >= 0)
        drv->bind_double(st, k++, r->hfrs_tenths / 10.0);
    else
        drv->bind_null(st, k++);
    const char *b2 = ok ? band_name(&c->bands_hfrs, r->hfrs_band) : NULL;
    if (b2)
        drv->bind_text(st, k++, b2, -1);
    else
        drv->bind_null(st, k++);
    if (ok && r->charlson >= 0)
        drv->bind_int(st, k++, r->charlson);
    else
        drv->bind_null(st, k++);
    if (ok && r->charlson2011 >= 0)
        drv->bind_int(st, k++, r->charlson2011);
    else
        drv->bind_null(st, k++);
    if (ok && r->lace >= 0)
        drv->bind_int(st, k++, r->lace);
    else
        drv->bind_null(st, k++);
    const char *b3 = ok ? band_name(&c->bands_lace, r->lace_band) : NULL;
    if (b3)
        drv->bind_text(st, k++, b3, -1);
    else
        drv->bind_null(st, k++);
    drv->bind_int(st, k++, r->diabetes);
    drv->bind_int(st, k++, r->care_plan);
    if (r->last_review != RK_NODAY)
        drv->bind_int(st, k++, r->last_review);
    else
        drv->bind_null(st, k++);
    drv->bind_text(st, k++, sc->m->version, -1);
    drv->bind_int(st, k++, sc->as_of);
    drv->bind_int(st, k++, now);
    drv->bind_int(st, k++, r->stored_fp);
    buf fj = {0};
    factors_json(r, &fj);
    drv->bind_text(st, k++, fj.p, (int)fj.len);
    buf_free(&fj);
}

static status write_scores(store_txn *tx, const rk_scorer *sc, rk_result *const *v, size_t n, err *e) {
    const db_driver *drv = tx->s->drv;
    pthread_once(&score_sql_once, build_score_sql);
    int64_t now = fhir_now_usec();
    size_t i = 0;
    status rc = ST_OK;
    while (i < n && rc == ST_OK) {
        int rows = n - i >= SCORE_ROWS ? SCORE_ROWS : 1;
        db_stmt *st = NULL;
        rc = drv->prepare(tx->d, rows > 1 ? score_sql_many : score_sql_one, 1, &st, e);
        if (rc != ST_OK) break;
        for (int r = 0; r < rows; r++)
            bind_score(drv, st, 1 + r * SCORE_COLS, sc, v[i + r], now);
        if (drv->step(st, e) < 0) rc = ST_IO;
        drv->done(st);
        i += rows;
    }
    return rc;
}

static status write_event(store_txn *tx, const rk_scorer *sc, const rk_result *r, int64_t run, err *e) {
    const db_driver *drv = tx->s->drv;
    static const char sql[] =
        "INSERT INTO risk_event (pkey, at, kind, from_tier, to_tier, probability, model, run,"
        " detail) VALUES (?, ?, 'tier-change', ?, ?, ?, ?, ?, ?)";
    db_stmt *st = NULL;
    status rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, r->pkey);
    drv->bind_int(st, 2, fhir_now_usec());
    drv->bind_text(st, 3, r->prev_tier, -1);
    drv->bind_text(st, 4, sc->tiers.name[r->tier], -1);
    drv->bind_double(st, 5, r->prob);
    drv->bind_text(st, 6, sc->m->version, -1);
    if (run)
        drv->bind_int(st, 7, run);
    else
        drv->bind_null(st, 7);
    drv->bind_text(st, 8, r->patient_id, -1);
    if (drv->step(st, e) < 0) rc = ST_IO;
    drv->done(st);
    return rc;
}

static int tier_changed(const rk_scorer *sc, const rk_result *r) {
    return r->status == RK_OK && r->has_prev && r->prev_tier[0] && r->tier >= 0 &&
           strcmp(r->prev_tier, sc->tiers.name[r->tier]) != 0;
}

/* ---- the run's record ----------------------------------------------------------------- */

static json_t *tiers_json(const rk_scorer *sc) {
    json_t *a = json_array();
    for (int k = 0; k < sc->tiers.n; k++) {
        json_t *t = json_pack("{s:s}", "name", sc->tiers.name[k]);
        if (sc->tiers.percent[k] > 0) json_object_set_new(t, "percent", json_real(sc->tiers.percent[k]));
        if (k < sc->tiers.n - 1) json_object_set_new(t, "threshold", json_real(sc->thresholds[k]));
        json_array_append_new(a, t);
    }
    return a;
}

/* The last full run: its date rule, tiers and thresholds. */
static status load_last_run(store *s, db *d, rk_scorer *sc, int64_t *run, err *e) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] =
        "SELECT run_key, as_of, as_of_rule, tiers FROM risk_run WHERE finished IS NOT NULL"
        " ORDER BY run_key DESC LIMIT 1";
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    int r = drv->step(st, e);
    char *tiers = NULL, rule[16] = "";
    if (r == 1) {
        *run = drv->col_int(st, 0);
        sc->as_of = (int32_t)drv->col_int(st, 1);
        const char *ru = drv->col_text(st, 2, NULL);
        snprintf(rule, sizeof rule, "%s", ru ? ru : "");
        const char *t = drv->col_text(st, 3, NULL);
        tiers = strdup(t ? t : "[]");
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    if (r == 0)
        return err_set(
            e, ST_NOT_FOUND, "not-found", NULL,
            "no full risk run yet: run `concord risk run` first (incremental rescoring needs its tiers)");
    if (!strcmp(rule, "today")) sc->as_of = risk_today();
    json_t *j = json_loads(tiers, 0, NULL);
    free(tiers);
    memset(&sc->tiers, 0, sizeof sc->tiers);
    size_t i;
    json_t *t;
    json_array_foreach(j, i, t) {
        if (sc->tiers.n == RISK_MAX_TIERS) break;
        int k = sc->tiers.n++;
        snprintf(sc->tiers.name[k], sizeof sc->tiers.name[k], "%s",
                 json_string_value(json_object_get(t, "name")));
        sc->tiers.percent[k] = json_number_value(json_object_get(t, "percent"));
        sc->thresholds[k] = json_is_number(json_object_get(t, "threshold"))
                                ? json_number_value(json_object_get(t, "threshold"))
                                : -1;
    }
    json_decref(j);
    sc->have_thresholds = sc->tiers.n >= 1;
    if (!sc->have_thresholds)
        return err_set(e, ST_IO, "exception", NULL, "the last risk run recorded no tiers");
    return ST_OK;
}

/* People marked after this time wait for incremental rescoring: the start
 * of the last full run (run_barrier), 0 before any. */
int64_t rk_watermark(store *s, db *d) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    err e;
    int64_t w = 0;
    static const char sql[] = "SELECT MAX(started) FROM risk_run WHERE finished IS NOT NULL";
    if (drv->prepare(d, sql, 1, &st, &e) != ST_OK) return 0;
    if (drv->step(st, &e) == 1 && drv->col_text(st, 0, NULL)) w = drv->col_int(st, 0);
    drv->done(st);
    return w > 0 ? w : 0;
}

/* The moment a full run starts, taken after every write transaction that
 * may have marked someone has committed, so that a mark older than it is
 * visible to the run's reads: on SQLite the write transaction's BEGIN
 * IMMEDIATE waits for the writer in progress; on PostgreSQL a SHARE lock on
 * risk_fact waits for every transaction that has written it. A write that
 * begins after the barrier marks later than the run's start, and so is
 * rescored incrementally, whether or not the run saw it. */
static status run_barrier(store *s, int64_t *started, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) return rc;
    if (s->drv == &db_pg_driver) rc = s->drv->exec(tx->d, "LOCK TABLE risk_fact IN SHARE MODE", e);
    *started = fhir_now_usec();
    if (rc == ST_OK)
        rc = store_commit(tx, e);
    else
        store_rollback(tx);
    return rc;
}

/* ---- the full run ---------------------------------------------------------------------- */

typedef struct results {
    rk_result *v;
    size_t n, cap;
} results;

static rk_result *results_push(results *rs) {
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 4096;
        rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
        if (!rs->v) abort();
    }
    return &rs->v[rs->n++];
}

/* Scoring a page on several threads: each takes a slice, with its own
 * arenas (decoding scratch; strings that live for the run). The scorer, the
 * code lists and the model are only read. */
#define MAX_SCORERS 8
typedef struct score_slice {
    rk_scorer *sc;
    rk_result *v;
    char **texts;
    size_t *lens;
    int from, to;
    arena *scratch, *strings;
} score_slice;

static void *score_slice_run(void *arg) {
    score_slice *j = arg;
    arena_reset(j->scratch);
    for (int k = j->from; k < j->to; k++) {
        rk_result *res = &j->v[k];
        rk_person p = {.pkey = res->pkey, .patient_id = res->patient_id};
        rk_person_decode(j->texts[k], j->lens[k], j->scratch, &p);
        rk_result prev = *res;
        score_person(j->sc, NULL, &p, res, j->strings);
        res->prev_fingerprint = prev.prev_fingerprint;
        res->has_prev = prev.has_prev;
        res->prev_row = prev.prev_row;
        memcpy(res->prev_tier, prev.prev_tier, sizeof res->prev_tier);
        /* the practice and MDG strings must outlive the page */
        if (res->practice == p.practice) res->practice = arena_strdup(j->strings, res->practice);
    }
    return NULL;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

status risk_run(store *s, const risk_codes *c, const risk_model *m, const risk_run_opts *o,
                risk_run_stats *stats, err *e) {
    status rc = ST_OK;
    rk_scorer sc;
    scorer_init(&sc, c, m);
    results rs = {0};
    arena strings = {0}; /* patient ids, factors, rationales: live for the run */
    arena tstrings[MAX_SCORERS] = {{0}}, scratch[MAX_SCORERS] = {{0}};
    int nthreads = o->workers > 0 ? o->workers + 1 : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_SCORERS) nthreads = MAX_SCORERS;
    double *probs = NULL;
    buf ra = {0};
    bulk *bk = NULL;
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    const db_driver *drv = s->drv;
    memset(stats, 0, sizeof *stats);
    double t0 = rk_now_seconds();
    int64_t started = fhir_now_usec();
    sc.as_of = o->as_of == RK_NODAY ? risk_today() : o->as_of;
    sc.tiers = o->tiers;
    if (sc.tiers.n < 2) risk_tiers_default(c, &sc.tiers);
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    rc = run_barrier(s, &started, e);
    if (rc == ST_OK) rc = load_orgs(s, d, &sc, e);
    if (rc == ST_OK) rc = rk_depmap_load(s, &sc.dep, e);
    if (rc != ST_OK) goto out;

    /* 1-2: read and score, a page at a time */
    double t_read = 0, t_score = 0;
    int64_t after = 0;
    arena page = {0};
    char **texts = malloc(sizeof(char *) * PAGE);
    size_t *lens = malloc(sizeof(size_t) * PAGE);
    if (!texts || !lens) abort();
    for (;;) {
        double ta = rk_now_seconds();
        static const char sql[] =
            "SELECT f.pkey, k.patient_id, f.facts, s.fingerprint, s.tier, s.status, s.practice, s.mdg, "
            "s.age, s.sex,"
            " s.diabetes, s.care_plan, s.last_review FROM risk_fact f"
            " JOIN patient_key k ON k.pkey = f.pkey LEFT JOIN risk_score s ON s.pkey = f.pkey"
            " WHERE f.pkey > ? ORDER BY f.pkey LIMIT ?";
        rc = drv->prepare(d, sql, 1, &st, e);
        if (rc != ST_OK) break;
        drv->bind_int(st, 1, after);
        drv->bind_int(st, 2, PAGE);
        int r, rows = 0;
        size_t first = rs.n;
        arena_reset(&page);
        while ((r = drv->step(st, e)) == 1 && rows < PAGE) {
            rk_result *res = results_push(&rs);
            memset(res, 0, sizeof *res);
            res->pkey = drv->col_int(st, 0);
            const char *pid = drv->col_text(st, 1, NULL);
            res->patient_id = arena_strdup(&strings, pid ? pid : "");
            size_t len = 0;
            const char *facts = drv->col_text(st, 2, &len);
            texts[rows] = arena_alloc(&page, len + 1);
            memcpy(texts[rows], facts ? facts : "", len);
            texts[rows][len] = 0;
            lens[rows] = len;
            const char *tier = drv->col_text(st, 4, NULL);
            res->has_prev = tier != NULL || drv->col_int(st, 3) != 0;
            res->prev_fingerprint = drv->col_int(st, 3);
            snprintf(res->prev_tier, sizeof res->prev_tier, "%s", tier ? tier : "");
            const char *pstatus = drv->col_text(st, 5, NULL);
            if (pstatus) {
                const char *psex = drv->col_text(st, 9, NULL);
                res->prev_row = row_hash(
                    res->prev_fingerprint, pstatus, drv->col_text(st, 6, NULL), drv->col_text(st, 7, NULL),
                    drv->col_text(st, 8, NULL) ? (int)drv->col_int(st, 8) : -1, psex && *psex ? psex[0] : 'u',
                    (int)drv->col_int(st, 10), (int)drv->col_int(st, 11),
                    drv->col_text(st, 12, NULL) ? (int32_t)drv->col_int(st, 12) : RK_NODAY);
            }
            after = res->pkey;
            rows++;
        }
        drv->done(st);
        st = NULL;
        if (r < 0) {
            rc = ST_IO;
            break;
        }
        double tb = rk_now_seconds();
        t_read += tb - ta;
        score_slice jobs[MAX_SCORERS];
        pthread_t th[MAX_SCORERS];
        int nt = rows >= 256 ? nthreads : 1, started_threads = 0;
        for (int t = 0; t < nt; t++)
            jobs[t] = (score_slice){&sc,           rs.v + first,        texts,       lens,
                                    rows * t / nt, rows * (t + 1) / nt, &scratch[t], &tstrings[t]};
        for (int t = 1; t < nt; t++)
            if (pthread_create(&th[t], NULL, score_slice_run, &jobs[t]) == 0)
                started_threads = t;
            else
                score_slice_run(&jobs[t]);
        score_slice_run(&jobs[0]);
        for (int t = 1; t <= started_threads; t++)
            pthread_join(th[t], NULL);
        t_score += rk_now_seconds() - tb;
        if (rows < PAGE) break;
    }
    free(texts);
    free(lens);
    arena_free(&page);
    if (rc != ST_OK) goto out;
    stats->t_read = t_read;
    stats->t_score = t_score;

    /* 3: the pyramid */
    double tt = rk_now_seconds();
    size_t nscored = 0;
    probs = malloc(sizeof(double) * (rs.n ? rs.n : 1));
    if (!probs) abort();
    for (size_t i = 0; i < rs.n; i++) {
        const rk_result *r = &rs.v[i];
        stats->people++;
        if (r->status == RK_OK)
            probs[nscored++] = r->prob;
        else if (r->status == RK_SKIP_DECEASED)
            stats->deceased++;
        else if (r->status == RK_SKIP_NOT_REGISTERED || r->status == RK_SKIP_NOT_BORN)
            stats->not_registered++;
        else
            stats->insufficient++;
    }
    stats->scored = (int64_t)nscored;
    qsort(probs, nscored, sizeof(double), cmp_desc);
    double cum = 0;
    for (int k = 0; k < sc.tiers.n - 1; k++) {
        cum += sc.tiers.percent[k];
        size_t rank = (size_t)ceil(cum / 100.0 * (double)nscored);
        if (rank < 1) rank = 1;
        sc.thresholds[k] = nscored ? probs[rank > nscored ? nscored - 1 : rank - 1] : 1.0;
        stats->thresholds[k] = sc.thresholds[k];
    }
    for (size_t i = 0; i < rs.n; i++) {
        rk_result *r = &rs.v[i];
        if (r->status == RK_OK) r->tier = tier_of(&sc, r->prob);
        r->fingerprint = fingerprint_of(&sc, r);
        /* without resources written, the RiskAssessment still shows the old result */
        r->stored_fp = o->write_resources ? r->fingerprint : r->prev_fingerprint;
        if (tier_changed(&sc, r)) stats->tier_changes++;
    }
    stats->t_tier = rk_now_seconds() - tt;

    /* 4: RiskAssessments of the changed results */
    double tr = rk_now_seconds();
    if (o->write_resources) {
        rc = bulk_start(s, o->workers, 5000, &bk, e);
        if (rc != ST_OK) goto out;
        for (size_t i = 0; i < rs.n && rc == ST_OK; i++) {
            const rk_result *r = &rs.v[i];
            if (r->status != RK_OK && r->status != RK_SKIP_NO_BIRTH && r->status != RK_SKIP_NO_PATIENT)
                continue;
            if (r->has_prev && r->prev_fingerprint == r->fingerprint) continue;
            buf_reset(&ra);
            build_ra(&sc, r, &ra);
            char id[80];
            ra_id(r, id, sizeof id);
            rc = bulk_add(bk, "RiskAssessment", id, ra.p, ra.len, 1, e);
        }
        bulk_stats bs;
        err fe;
        status frc = bulk_finish(bk, &bs, &fe);
        bk = NULL;
        if (rc == ST_OK && frc != ST_OK) {
            if (e) *e = fe;
            rc = frc;
        }
        stats->resources_written = bs.resources;
        if (rc != ST_OK) goto out;
    }
    stats->t_resources = rk_now_seconds() - tr;

    /* 5: scores, events, marks and the run, in one transaction */
    double tw = rk_now_seconds();
    rc = store_begin(s, &tx, e);
    if (rc != ST_OK) goto out;
    static const char ins_run[] = "INSERT INTO risk_run (started, as_of, as_of_rule, model, tiers) VALUES"
                                  " (?, ?, ?, ?, ?) RETURNING run_key";
    json_t *tj = tiers_json(&sc);
    char *tiers_text = json_dumps(tj, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(tj);
    rc = drv->prepare(tx->d, ins_run, 1, &st, e);
    int64_t run = 0;
    if (rc == ST_OK) {
        drv->bind_int(st, 1, started);
        drv->bind_int(st, 2, sc.as_of);
        drv->bind_text(st, 3, o->as_of == RK_NODAY ? "today" : "fixed", -1);
        drv->bind_text(st, 4, m->version, -1);
        drv->bind_text(st, 5, tiers_text, -1);
        int r = drv->step(st, e);
        if (r == 1) {
            run = drv->col_int(st, 0);
            while (drv->step(st, e) == 1) {
            }
        } else {
            rc = ST_IO;
        }
        drv->done(st);
        st = NULL;
    }
    free(tiers_text);
    /* only the rows whose content changed */
    rk_result **changed = malloc(sizeof *changed * (rs.n ? rs.n : 1));
    if (!changed) abort();
    size_t nchanged = 0;
    for (size_t i = 0; i < rs.n; i++)
        if (result_row_hash(&rs.v[i]) != rs.v[i].prev_row) changed[nchanged++] = &rs.v[i];
    stats->rows_written = (int64_t)nchanged;
    /* rewriting most rows (a first run, a new model): drop the worklist
     * indexes and build them again after, which sorts once instead of
     * inserting half a million entries at random places. The definitions
     * are migration 6's (schema.c). */
    int reindex = nchanged > 20000 && nchanged * 5 > rs.n;
    if (rc == ST_OK && reindex)
        rc = drv->exec(tx->d,
                       "DROP INDEX risk_score_practice; DROP INDEX risk_score_mdg;"
                       " DROP INDEX risk_score_probability",
                       e);
    if (rc == ST_OK) rc = write_scores(tx, &sc, changed, nchanged, e);
    if (rc == ST_OK && reindex)
        rc = drv->exec(tx->d,
                       "CREATE INDEX risk_score_practice ON risk_score (practice, probability);"
                       " CREATE INDEX risk_score_mdg ON risk_score (mdg, probability);"
                       " CREATE INDEX risk_score_probability ON risk_score (probability)",
                       e);
    free(changed);
    for (size_t i = 0; i < rs.n && rc == ST_OK; i++)
        if (tier_changed(&sc, &rs.v[i])) rc = write_event(tx, &sc, &rs.v[i], run, e);
    /* no marks to clear: the run's start is the new watermark (rk_watermark) */
    stats->t_total = rk_now_seconds() - t0;
    if (rc == ST_OK) {
        static const char fin[] = "UPDATE risk_run SET finished = ?, stats = ? WHERE run_key = ?";
        char js[512];
        snprintf(js, sizeof js,
                 "{\"people\":%lld,\"scored\":%lld,\"insufficient\":%lld,\"not_registered\":%lld,"
                 "\"deceased\":%lld,"
                 "\"resources_written\":%lld,\"tier_changes\":%lld}",
                 (long long)stats->people, (long long)stats->scored, (long long)stats->insufficient,
                 (long long)stats->not_registered, (long long)stats->deceased,
                 (long long)stats->resources_written, (long long)stats->tier_changes);
        rc = drv->prepare(tx->d, fin, 1, &st, e);
        if (rc == ST_OK) {
            drv->bind_int(st, 1, fhir_now_usec());
            drv->bind_text(st, 2, js, -1);
            drv->bind_int(st, 3, run);
            if (drv->step(st, e) < 0) rc = ST_IO;
            drv->done(st);
            st = NULL;
        }
    }
    if (rc == ST_OK)
        rc = store_commit(tx, e);
    else
        store_rollback(tx);
    tx = NULL;
    stats->t_results = rk_now_seconds() - tw;
    stats->t_total = rk_now_seconds() - t0;
out:
    if (st) drv->done(st);
    if (bk) {
        bulk_stats bs;
        err fe;
        bulk_finish(bk, &bs, &fe);
    }
    if (tx) store_rollback(tx);
    free(rs.v);
    free(probs);
    buf_free(&ra);
    arena_free(&strings);
    for (int t = 0; t < MAX_SCORERS; t++) {
        arena_free(&tstrings[t]);
        arena_free(&scratch[t]);
    }
    scorer_free(&sc);
    return rc;
}

/* ---- incremental rescoring -------------------------------------------------------------- */

/* Rescore one person inside `tx`; clears their mark if it is still `mark`
 * (0: clear whatever it is). */
static status rescore_in_txn(store_txn *tx, rk_scorer *sc, int64_t pkey, int64_t mark, err *e) {
    const db_driver *drv = tx->s->drv;
    db_stmt *st = NULL;
    status rc = ST_OK;
    arena a = {0};
    buf ra = {0};
    json_t *res = NULL;
    static const char sql[] = "SELECT k.patient_id, f.facts, s.fingerprint, s.tier FROM risk_fact f JOIN "
                              "patient_key k ON k.pkey = f.pkey"
                              " LEFT JOIN risk_score s ON s.pkey = f.pkey WHERE f.pkey = ?";
    rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_int(st, 1, pkey);
    int r = drv->step(st, e);
    rk_person p = {.pkey = pkey};
    rk_result res_ = {0}, *rr = &res_;
    char *text = NULL;
    size_t len = 0;
    int64_t prevfp = 0;
    int has_prev = 0;
    char prev_tier[16] = "";
    if (r == 1) {
        const char *pid = drv->col_text(st, 0, NULL);
        p.patient_id = arena_strdup(&a, pid ? pid : "");
        const char *facts = drv->col_text(st, 1, &len);
        text = arena_alloc(&a, len + 1);
        memcpy(text, facts ? facts : "", len);
        text[len] = 0;
        const char *tier = drv->col_text(st, 3, NULL);
        has_prev = tier != NULL || drv->col_int(st, 2) != 0;
        prevfp = drv->col_int(st, 2);
        snprintf(prev_tier, sizeof prev_tier, "%s", tier ? tier : "");
    }
    drv->done(st);
    st = NULL;
    if (r < 0) {
        rc = ST_IO;
        goto out;
    }
    if (r == 0) goto out; /* facts gone (all resources deleted) */
    rk_person_decode(text, len, &a, &p);
    score_person(sc, tx, &p, rr, &a);
    rr->has_prev = has_prev;
    rr->prev_fingerprint = prevfp;
    memcpy(rr->prev_tier, prev_tier, sizeof prev_tier);
    if (rr->status == RK_OK) rr->tier = tier_of(sc, rr->prob);
    rr->fingerprint = fingerprint_of(sc, rr);
    rr->stored_fp = rr->fingerprint;
    int writes_ra = rr->status == RK_OK || rr->status == RK_SKIP_NO_BIRTH || rr->status == RK_SKIP_NO_PATIENT;
    if (writes_ra && !(has_prev && prevfp == rr->fingerprint)) {
        build_ra(sc, rr, &ra);
        json_error_t je;
        res = fhir_json_load(ra.p, ra.len, &je);
        if (!res) {
            rc = err_set(e, ST_INTERNAL, "exception", NULL, "RiskAssessment JSON: %s", je.text);
            goto out;
        }
        char id[80];
        ra_id(rr, id, sizeof id);
        store_meta meta;
        rc = store_put(tx, res, id, 0, 0, &meta, NULL, NULL, e);
        if (rc != ST_OK) goto out;
    }
    /* the scores row always (care plan and review dates are on it too) */
    rc = write_scores(tx, sc, &rr, 1, e);
    if (rc == ST_OK && tier_changed(sc, rr)) rc = write_event(tx, sc, rr, 0, e);
    if (rc != ST_OK) goto out;
    static const char clear_mark[] = "UPDATE risk_fact SET dirty = 0 WHERE pkey = ? AND dirty = ?";
    static const char clear_any[] = "UPDATE risk_fact SET dirty = 0 WHERE pkey = ? AND dirty > 0";
    rc = drv->prepare(tx->d, mark ? clear_mark : clear_any, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, pkey);
    if (mark) drv->bind_int(st, 2, mark);
    if (drv->step(st, e) < 0) rc = ST_IO;
    drv->done(st);
    st = NULL;
out:
    if (st) drv->done(st);
    if (res) json_decref(res);
    fhir_json_release();
    buf_free(&ra);
    arena_free(&a);
    return rc;
}

static status rescore_dirty(store *s, const risk_codes *c, const risk_model *m, int max, int *done,
                            double *commit_seconds, err *e) {
    rk_scorer sc;
    scorer_init(&sc, c, m);
    store_txn *tx = NULL;
    db_stmt *st = NULL;
    int64_t run = 0;
    *done = 0;
    int64_t(*marks)[2] = NULL;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) goto out;
    const db_driver *drv = s->drv;
    rc = load_last_run(s, tx->d, &sc, &run, e);
    if (rc != ST_OK) goto out;
    static const char sql[] =
        "SELECT pkey, dirty FROM risk_fact WHERE dirty > 0 AND dirty > ? ORDER BY dirty LIMIT ?";
    rc = drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) goto out;
    drv->bind_int(st, 1, rk_watermark(s, tx->d));
    drv->bind_int(st, 2, max);
    marks = malloc(sizeof *marks * (size_t)(max > 0 ? max : 1));
    if (!marks) abort();
    int n = 0, r;
    while ((r = drv->step(st, e)) == 1 && n < max) {
        marks[n][0] = drv->col_int(st, 0);
        marks[n][1] = drv->col_int(st, 1);
        n++;
    }
    drv->done(st);
    st = NULL;
    if (r < 0) rc = ST_IO;
    for (int i = 0; i < n && rc == ST_OK; i++)
        rc = rescore_in_txn(tx, &sc, marks[i][0], marks[i][1], e);
    if (rc == ST_OK) {
        double t0 = rk_now_seconds();
        rc = store_commit(tx, e);
        tx = NULL;
        if (commit_seconds) *commit_seconds = rk_now_seconds() - t0;
        if (rc == ST_OK) *done = n;
    }
out:
    if (st) s->drv->done(st);
    if (tx) store_rollback(tx);
    free(marks);
    scorer_free(&sc);
    return rc;
}

status risk_rescore_dirty(store *s, const risk_codes *c, const risk_model *m, int max, int *done, err *e) {
    return rescore_dirty(s, c, m, max, done, NULL, e);
}

status risk_rescore_patient(store *s, const risk_codes *c, const risk_model *m, const char *patient_id,
                            err *e) {
    rk_scorer sc;
    scorer_init(&sc, c, m);
    store_txn *tx = NULL;
    int64_t run = 0, pkey = 0;
    status rc = store_begin(s, &tx, e);
    if (rc != ST_OK) goto out;
    rc = load_last_run(s, tx->d, &sc, &run, e);
    if (rc == ST_OK) rc = store_patient_key(s, tx->d, patient_id, 0, &pkey, e);
    if (rc != ST_OK) goto out;
    if (!pkey) {
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "no patient '%s'", patient_id);
        goto out;
    }
    rc = rescore_in_txn(tx, &sc, pkey, 0, e);
    if (rc == ST_OK) {
        rc = store_commit(tx, e);
        tx = NULL;
    }
out:
    if (tx) store_rollback(tx);
    scorer_free(&sc);
    return rc;
}

/* ---- rescoring benchmark ------------------------------------------------------------------ */

static int cmp_asc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

status risk_rescore_bench(store *s, const risk_codes *c, const risk_model *m, int n, json_t **out, err *e) {
    *out = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    status rc = ST_OK;
    char(*ids)[72] = calloc((size_t)n, sizeof *ids);
    double *t_rescore = calloc((size_t)n, sizeof(double)), *t_total = calloc((size_t)n, sizeof(double));
    double *t_work = calloc((size_t)n, sizeof(double));
    if (!ids || !t_rescore || !t_total || !t_work) abort();
    int got = 0, changed = 0;
    int64_t total = 0, as_of = 0;
    rc = drv->prepare(d, "SELECT COUNT(*) FROM risk_score WHERE status = 'scored'", 0, &st, e);
    if (rc != ST_OK) goto out;
    if (drv->step(st, e) == 1) total = drv->col_int(st, 0);
    drv->done(st);
    /* every k-th scored person, spread over the population */
    int64_t stride = total / n > 0 ? total / n : 1, i = 0;
    rc = drv->prepare(d, "SELECT patient_id, as_of FROM risk_score WHERE status = 'scored' ORDER BY pkey", 0,
                      &st, e);
    if (rc != ST_OK) goto out;
    while (got < n && drv->step(st, e) == 1) {
        if (i++ % stride) continue;
        snprintf(ids[got++], sizeof ids[0], "%s", drv->col_text(st, 0, NULL));
        as_of = drv->col_int(st, 1);
    }
    drv->done(st);
    if (!got) {
        rc = err_set(e, ST_NOT_FOUND, "not-found", NULL, "nobody scored yet: run `concord risk run` first");
        goto out;
    }
    char day[11], day2[11];
    risk_format_day((int32_t)as_of - 3, day);
    risk_format_day((int32_t)as_of - 1, day2);
    for (int k = 0; k < got; k++) {
        /* a new emergency admission, through the store (the hook marks the person) */
        char json[1024];
        snprintf(
            json, sizeof json,
            "{\"resourceType\":\"Encounter\",\"status\":\"finished\",\"class\":{\"system\":"
            "\"http://terminology.hl7.org/CodeSystem/v3-ActCode\",\"code\":\"IMP\"},\"type\":[{\"coding\":[{"
            "\"system\":\"https://www.datadictionary.nhs.uk/data_elements/"
            "admission_method\",\"code\":\"21\"}]}],"
            "\"priority\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-ActPriority\","
            "\"code\":\"EM\"}]},\"subject\":{\"reference\":\"Patient/%s\"},\"period\":{\"start\":\"%s\","
            "\"end\":\"%s\"},\"reasonCode\":[{\"coding\":[{\"system\":\"http://hl7.org/fhir/sid/icd-10\","
            "\"code\":\"J18.9\"}]}]}",
            ids[k], day, day2);
        double t0 = rk_now_seconds();
        json_error_t je;
        json_t *res = fhir_json_load(json, strlen(json), &je);
        store_txn *tx = NULL;
        store_meta meta;
        if (!res) {
            rc = err_set(e, ST_INTERNAL, "exception", NULL, "bench encounter: %s", je.text);
            goto out;
        }
        rc = store_begin(s, &tx, e);
        if (rc == ST_OK) rc = store_put(tx, res, NULL, 0, 1, &meta, NULL, NULL, e);
        if (rc == ST_OK)
            rc = store_commit(tx, e);
        else if (tx)
            store_rollback(tx);
        json_decref(res);
        fhir_json_release();
        if (rc != ST_OK) goto out;
        double t1 = rk_now_seconds();
        int done = 0;
        double commit = 0;
        rc = rescore_dirty(s, c, m, 10, &done, &commit, e);
        if (rc != ST_OK) goto out;
        double t2 = rk_now_seconds();
        changed += done;
        t_rescore[k] = (t2 - t1) * 1000;
        t_work[k] = (t2 - t1 - commit) * 1000;
        t_total[k] = (t2 - t0) * 1000;
    }
    qsort(t_rescore, (size_t)got, sizeof(double), cmp_asc);
    qsort(t_total, (size_t)got, sizeof(double), cmp_asc);
    qsort(t_work, (size_t)got, sizeof(double), cmp_asc);
#define PCT(v, p) v[(size_t)((p) * (got - 1) + 0.5)]
    *out = json_pack("{s:i, s:i, s:{s:f, s:f, s:f, s:f}, s:{s:f, s:f, s:f, s:f}, s:{s:f, s:f, s:f, s:f}}",
                     "people", got, "rescored", changed, "rescore_ms", "p50", PCT(t_rescore, 0.5), "p95",
                     PCT(t_rescore, 0.95), "p99", PCT(t_rescore, 0.99), "max", t_rescore[got - 1],
                     "rescore_before_commit_ms", "p50", PCT(t_work, 0.5), "p95", PCT(t_work, 0.95), "p99",
                     PCT(t_work, 0.99), "max", t_work[got - 1], "admission_write_and_rescore_ms", "p50",
                     PCT(t_total, 0.5), "p95", PCT(t_total, 0.95), "p99", PCT(t_total, 0.99), "max",
                     t_total[got - 1]);
#undef PCT
out:
    free(ids);
    free(t_rescore);
    free(t_total);
    free(t_work);
    return rc;
}

/* ---- one person's result ----------------------------------------------------------------- */

status risk_patient_result(store *s, const char *patient_id, json_t **out, err *e) {
    *out = NULL;
    db *d = store_db(s, e);
    if (!d) return e ? e->code : ST_IO;
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    static const char sql[] =
        "SELECT s.patient_id, s.practice, s.mdg, s.age, s.sex, s.status, s.reason, s.probability, s.tier, "
        "s.efi,"
        " s.efi_band, s.hfrs, s.hfrs_band, s.charlson, s.charlson2011, s.lace, s.lace_band, s.diabetes, "
        "s.care_plan,"
        " s.last_review, s.model, s.as_of, s.scored, s.factors, f.dirty FROM risk_score s"
        " JOIN patient_key k ON k.pkey = s.pkey LEFT JOIN risk_fact f ON f.pkey = s.pkey WHERE k.patient_id "
        "= ?";
    status rc = drv->prepare(d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    drv->bind_text(st, 1, patient_id, -1);
    int r = drv->step(st, e);
    if (r == 1) {
        json_t *o = json_object();
        char day[11], when[32];
#define TXT(k, col)                                                                                          \
    do {                                                                                                     \
        const char *v_ = drv->col_text(st, col, NULL);                                                       \
        if (v_) json_object_set_new(o, k, json_string(v_));                                                  \
    } while (0)
#define NUM(k, col)                                                                                          \
    do {                                                                                                     \
        if (drv->col_text(st, col, NULL)) json_object_set_new(o, k, json_real(drv->col_double(st, col)));    \
    } while (0)
#define INT(k, col)                                                                                          \
    do {                                                                                                     \
        if (drv->col_text(st, col, NULL)) json_object_set_new(o, k, json_integer(drv->col_int(st, col)));    \
    } while (0)
        TXT("patient", 0);
        TXT("practice", 1);
        TXT("mdg", 2);
        INT("age", 3);
        TXT("sex", 4);
        TXT("status", 5);
        TXT("reason", 6);
        NUM("probability", 7);
        TXT("tier", 8);
        NUM("efi", 9);
        TXT("efi_band", 10);
        NUM("hfrs", 11);
        TXT("hfrs_band", 12);
        INT("charlson", 13);
        INT("charlson_2011", 14);
        INT("lace", 15);
        TXT("lace_band", 16);
        json_object_set_new(o, "diabetes", json_boolean(drv->col_int(st, 17)));
        json_object_set_new(o, "care_plan", json_boolean(drv->col_int(st, 18)));
        if (drv->col_text(st, 19, NULL)) {
            risk_format_day((int32_t)drv->col_int(st, 19), day);
            json_object_set_new(o, "last_review", json_string(day));
        }
        TXT("model", 20);
        risk_format_day((int32_t)drv->col_int(st, 21), day);
        json_object_set_new(o, "assessed", json_string(day)); /* when this result was reached */
        fhir_instant_format(drv->col_int(st, 22), when);
        json_object_set_new(o, "scored", json_string(when));
        const char *fj = drv->col_text(st, 23, NULL);
        json_t *factors = fj ? json_loads(fj, 0, NULL) : NULL;
        json_object_set_new(o, "factors", factors ? factors : json_array());
        json_object_set_new(o, "pending_rescore", json_boolean(drv->col_int(st, 24) > rk_watermark(s, d)));
        char ra[80];
        if (strlen(patient_id) <= 61) {
            snprintf(ra, sizeof ra, "RiskAssessment/ra-%s", patient_id);
            json_object_set_new(o, "assessment", json_string(ra));
        }
#undef TXT
#undef NUM
#undef INT
        *out = o;
    }
    drv->done(st);
    if (r < 0) return ST_IO;
    if (r == 0)
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "no risk result for patient '%s'", patient_id);
    return ST_OK;
}
