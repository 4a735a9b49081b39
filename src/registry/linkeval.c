/*
 * linkeval.c — linkage of a synthetic population's feeds, scored against its
 * ground truth (see linkeval.h, docs/synth.md for the feed formats and
 * docs/registry.md for the method).
 *
 * A source patient record is one (feed, local patient id): a GP Patient
 * resource (its id), a hospital number (PID-3 with type MR; the first
 * message that carries it gives the demographics), a community, social care
 * or mental health client id (its first row). CSV layouts are recognised by
 * their header names (the table below), so a new layout needs a row there,
 * not code. The truth is ground_truth/records.csv: feed, record_id,
 * local_patient_id, person_id.
 *
 * Invariant: a record's demographics come only from its feed; the ground
 * truth is read only to count.
 */
#include "linkeval.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block.h"
#include "link.h"

/* ---- a string -> int map (feed|local id -> record or person) ------- */

typedef struct smap {
    char **key;
    int32_t *val;
    size_t cap, n;
} smap;

static uint64_t shash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int smap_grow(smap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 65536;
    char **nk = calloc(ncap, sizeof *nk);
    int32_t *nv = calloc(ncap, sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i]) continue;
        size_t j = shash(m->key[i], strlen(m->key[i])) & (ncap - 1);
        while (nk[j])
            j = (j + 1) & (ncap - 1);
        nk[j] = m->key[i];
        nv[j] = m->val[i];
    }
    free(m->key);
    free(m->val);
    m->key = nk;
    m->val = nv;
    m->cap = ncap;
    return 0;
}

/* Find `k`; with `insert`, add it with value `v` if absent. Returns a
 * pointer to the value, or NULL (absent, or out of memory). */
static int32_t *smap_get(smap *m, const char *k, int insert, int32_t v) {
    if (insert && (m->n + 1) * 2 > m->cap && smap_grow(m) != 0) return NULL;
    if (!m->cap) return NULL;
    size_t n = strlen(k);
    size_t j = shash(k, n) & (m->cap - 1);
    while (m->key[j]) {
        if (strcmp(m->key[j], k) == 0) return &m->val[j];
        j = (j + 1) & (m->cap - 1);
    }
    if (!insert) return NULL;
    m->key[j] = strdup(k);
    if (!m->key[j]) return NULL;
    m->val[j] = v;
    m->n++;
    return &m->val[j];
}

static void smap_free(smap *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->key[i]);
    free(m->key);
    free(m->val);
    memset(m, 0, sizeof *m);
}

/* ---- loading ---------------------------------------------------------- */

typedef struct loader {
    linkeval_data *d;
    size_t cap;
    smap records; /* feed|local -> record index */
    smap truth;   /* feed|local -> person index */
    int feed;     /* current feed index */
} loader;

static int32_t person_index(const char *pid) {
    /* "p0000123" -> 122 */
    if (pid[0] != 'p') return -1;
    char *end;
    long v = strtol(pid + 1, &end, 10);
    return (*end == 0 && v > 0 && v < INT32_MAX) ? (int32_t)(v - 1) : -1;
}

/* A new record for (current feed, local), or NULL if seen before. */
static reg_person *new_record(loader *L, const char *local, size_t ln, err *e, status *rc) {
    char key[160];
    snprintf(key, sizeof key, "%s|%.*s", L->d->feeds[L->feed], (int)ln, local);
    int32_t *have = smap_get(&L->records, key, 0, 0);
    if (have) return NULL;
    if (L->d->n == L->cap) {
        size_t ncap = L->cap ? L->cap * 2 : 65536;
        reg_person *nr = realloc(L->d->rec, ncap * sizeof *nr);
        if (nr) L->d->rec = nr;
        int32_t *nt = realloc(L->d->truth, ncap * sizeof *nt);
        if (nt) L->d->truth = nt;
        uint16_t *nf = realloc(L->d->feed, ncap * sizeof *nf);
        if (nf) L->d->feed = nf;
        if (!nr || !nt || !nf) {
            *rc = err_set(e, ST_NOMEM, "exception", "linkeval", "out of memory for records");
            return NULL;
        }
        L->cap = ncap;
    }
    size_t i = L->d->n;
    if (!smap_get(&L->records, key, 1, (int32_t)i)) {
        *rc = err_set(e, ST_NOMEM, "exception", "linkeval", "out of memory");
        return NULL;
    }
    int32_t *t = smap_get(&L->truth, key, 0, 0);
    L->d->truth[i] = t ? *t : -1;
    L->d->feed[i] = (uint16_t)L->feed;
    L->d->n++;
    reg_person *p = &L->d->rec[i];
    reg_person_init(p);
    reg_person_add_local_id(p, L->d->feeds[L->feed], strlen(L->d->feeds[L->feed]), local, ln);
    return p;
}

/* Split `line` (modified in place) into at most `max` fields on `delim`,
 * RFC 4180 quotes removed. Returns the number of fields. */
static int split_csv(char *line, char delim, char **f, int max) {
    int n = 0;
    char *r = line, *w = line;
    while (n < max) {
        f[n++] = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (*r == 0) break;
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
        }
        while (*r && *r != delim)
            *w++ = *r++;
        if (*r == delim) {
            r++;
            *w++ = 0;
            continue;
        }
        *w = 0;
        break;
    }
    return n;
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
}

/* Header names of the CSV layouts, by what they hold (docs/synth.md). */
enum { C_LOCAL, C_NHS, C_FAMILY, C_GIVEN, C_FULLNAME, C_DOB, C_SEX, C_POSTCODE, C_ADDRESS, C_N };
static const struct {
    int what;
    const char *names[9];
} csv_columns[] = {
    {C_LOCAL,
     {"patient_id", "ClientNo", "client_id", "person_ref", "ClientID", "LAS_ID", "client", "mh_id", NULL}},
    {C_NHS, {"nhs_number", "NHSNo", "client_nhs", "nhs_no", "NHSNumber", "nhs", "NHS_NUMBER", NULL}},
    {C_FAMILY, {"surname", "family_name", "last_name", NULL}},
    {C_GIVEN, {"forename", "given_name", "first_name", "forenames", NULL}},
    {C_FULLNAME, {"PatientName", "Name", "FULL_NAME", NULL}},
    {C_DOB, {"date_of_birth", "DOB", "birth_date", "dob", "DateOfBirth", "birth", NULL}},
    {C_SEX, {"gender", "Sex", "sex", "GENDER", NULL}},
    {C_POSTCODE, {"postcode", "PostCode", "post_code", "Postcode", "POSTCODE", NULL}},
    {C_ADDRESS, {"address_line", "Address", NULL}},
};

static status load_csv(loader *L, const char *path, err *e) {
    status rc = ST_OK;
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    if (!f) return err_set(e, ST_IO, "exception", path, "cannot open: %s", strerror(errno));
    if (getline(&line, &cap, f) < 0) goto out;
    chomp(line);
    char delim = strchr(line, '|') ? '|' : ',';
    char *h[64];
    int nh = split_csv(line, delim, h, 64);
    int col[C_N];
    for (int k = 0; k < C_N; k++)
        col[k] = -1;
    for (int i = 0; i < nh; i++)
        for (size_t k = 0; k < sizeof csv_columns / sizeof csv_columns[0]; k++)
            for (int j = 0; csv_columns[k].names[j]; j++)
                if (strcmp(h[i], csv_columns[k].names[j]) == 0 && col[csv_columns[k].what] < 0)
                    col[csv_columns[k].what] = i;
    if (col[C_LOCAL] < 0) {
        rc = err_set(e, ST_INVALID, "structure", path, "no client id column in the header");
        goto out;
    }
    while (getline(&line, &cap, f) >= 0) {
        chomp(line);
        if (!line[0]) continue;
        L->d->rows_read++;
        char *v[64];
        int nv = split_csv(line, delim, v, 64);
        if (col[C_LOCAL] >= nv || !v[col[C_LOCAL]][0]) {
            L->d->rows_skipped++;
            continue;
        }
#define COL(k) (col[k] >= 0 && col[k] < nv ? v[col[k]] : "")
        const char *local = COL(C_LOCAL);
        reg_person *p = new_record(L, local, strlen(local), e, &rc);
        if (rc != ST_OK) goto out;
        if (!p) continue;
        const char *s;
        s = COL(C_NHS), reg_person_set_nhs(p, s, strlen(s));
        if (col[C_FULLNAME] >= 0) {
            /* "SURNAME, Given" */
            s = COL(C_FULLNAME);
            const char *comma = strchr(s, ',');
            if (comma) {
                reg_person_set_family(p, s, (size_t)(comma - s));
                reg_person_set_given(p, comma + 1, strlen(comma + 1));
            } else {
                reg_person_set_family(p, s, strlen(s));
            }
        } else {
            s = COL(C_FAMILY), reg_person_set_family(p, s, strlen(s));
            s = COL(C_GIVEN), reg_person_set_given(p, s, strlen(s));
        }
        s = COL(C_DOB), reg_person_set_dob_text(p, s, strlen(s));
        s = COL(C_SEX), reg_person_set_sex_text(p, s, strlen(s));
        s = COL(C_POSTCODE), reg_person_set_postcode(p, s, strlen(s));
        s = COL(C_ADDRESS), reg_person_set_address(p, s, strlen(s));
#undef COL
    }
out:
    free(line);
    fclose(f);
    return rc;
}

/* The c-th component (0-based) of an HL7 field [s, end), split on '^'. */
static void hl7_comp(const char *s, const char *end, int c, const char **cs, size_t *cn) {
    for (int k = 0; k < c && s < end; k++) {
        const char *x = memchr(s, '^', (size_t)(end - s));
        s = x ? x + 1 : end;
    }
    const char *x = memchr(s, '^', (size_t)(end - s));
    *cs = s;
    *cn = (size_t)((x ? x : end) - s);
}

static void load_pid(loader *L, const char *seg, size_t n, err *e, status *rc) {
    const char *f[32];
    size_t fl[32];
    int nf = 0;
    const char *s = seg, *end = seg + n;
    while (nf < 32) {
        const char *x = memchr(s, '|', (size_t)(end - s));
        f[nf] = s;
        fl[nf] = (size_t)((x ? x : end) - s);
        nf++;
        if (!x) break;
        s = x + 1;
    }
    if (nf <= 3) return;
    /* PID-3: repetitions id^^^authority^type */
    const char *nhs = NULL, *mr = NULL;
    size_t nhsn = 0, mrn = 0;
    const char *r = f[3], *rend = f[3] + fl[3];
    while (r < rend) {
        const char *x = memchr(r, '~', (size_t)(rend - r));
        const char *re = x ? x : rend;
        const char *id, *type;
        size_t idn, typen;
        hl7_comp(r, re, 0, &id, &idn);
        hl7_comp(r, re, 4, &type, &typen);
        if (typen == 2 && memcmp(type, "NH", 2) == 0) nhs = id, nhsn = idn;
        if (typen == 2 && memcmp(type, "MR", 2) == 0) mr = id, mrn = idn;
        r = x ? x + 1 : rend;
    }
    L->d->rows_read++;
    if (!mr || !mrn) {
        L->d->rows_skipped++;
        return;
    }
    reg_person *p = new_record(L, mr, mrn, e, rc);
    if (!p) return;
    if (nhs) reg_person_set_nhs(p, nhs, nhsn);
    const char *c;
    size_t cn;
    if (nf > 5) {
        hl7_comp(f[5], f[5] + fl[5], 0, &c, &cn);
        reg_person_set_family(p, c, cn);
        hl7_comp(f[5], f[5] + fl[5], 1, &c, &cn);
        reg_person_set_given(p, c, cn);
    }
    if (nf > 7) reg_person_set_dob_text(p, f[7], fl[7]);
    if (nf > 8) reg_person_set_sex_text(p, f[8], fl[8]);
    if (nf > 11) {
        const char *a = f[11], *ae = memchr(a, '~', fl[11]);
        if (!ae) ae = a + fl[11];
        hl7_comp(a, ae, 0, &c, &cn);
        reg_person_set_address(p, c, cn);
        hl7_comp(a, ae, 4, &c, &cn);
        reg_person_set_postcode(p, c, cn);
    }
}

static status load_hl7(loader *L, const char *path, err *e) {
    status rc = ST_OK;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, ST_IO, "exception", path, "cannot open: %s", strerror(errno));
    buf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, got);
    fclose(f);
    /* segments end with \r; frames with 0x1C 0x0D; PID is all we read */
    const char *s = b.p ? b.p : "", *end = s + b.len;
    while (s < end && rc == ST_OK) {
        const char *x = s;
        while (x < end && *x != '\r' && *x != '\x1c')
            x++;
        const char *seg = s;
        if (seg < x && *seg == '\x0b') seg++;
        if (x - seg > 4 && memcmp(seg, "PID|", 4) == 0) load_pid(L, seg, (size_t)(x - seg), e, &rc);
        s = x < end ? x + 1 : end;
    }
    buf_free(&b);
    return rc;
}

static status load_ndjson(loader *L, const char *path, err *e) {
    status rc = ST_OK;
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    if (!f) return err_set(e, ST_IO, "exception", path, "cannot open: %s", strerror(errno));
    while ((len = getline(&line, &cap, f)) >= 0 && rc == ST_OK) {
        if (!strstr(line, "\"resourceType\":\"Patient\"")) continue;
        L->d->rows_read++;
        json_t *j = json_loadb(line, (size_t)len, 0, NULL);
        if (!j) {
            L->d->rows_skipped++;
            continue;
        }
        const char *id = json_string_value(json_object_get(j, "id"));
        reg_person *p = id ? new_record(L, id, strlen(id), e, &rc) : NULL;
        if (!id) L->d->rows_skipped++;
        if (p) {
            size_t k;
            json_t *x;
            json_array_foreach(json_object_get(j, "identifier"), k, x) {
                const char *sys = json_string_value(json_object_get(x, "system"));
                const char *val = json_string_value(json_object_get(x, "value"));
                if (sys && val && strcmp(sys, "https://fhir.nhs.uk/Id/nhs-number") == 0)
                    reg_person_set_nhs(p, val, strlen(val));
            }
            json_t *name = json_array_get(json_object_get(j, "name"), 0);
            const char *fam = json_string_value(json_object_get(name, "family"));
            if (fam) reg_person_set_family(p, fam, strlen(fam));
            char given[128];
            size_t gl = 0;
            json_array_foreach(json_object_get(name, "given"), k, x) {
                const char *g = json_string_value(x);
                if (g) gl += (size_t)snprintf(given + gl, sizeof given - gl, "%s%s", gl ? " " : "", g);
                if (gl >= sizeof given) gl = sizeof given - 1;
            }
            reg_person_set_given(p, given, gl);
            const char *bd = json_string_value(json_object_get(j, "birthDate"));
            if (bd) reg_person_set_dob_text(p, bd, strlen(bd));
            const char *g = json_string_value(json_object_get(j, "gender"));
            if (g) reg_person_set_sex_text(p, g, strlen(g));
            json_t *addr = json_array_get(json_object_get(j, "address"), 0);
            const char *pc = json_string_value(json_object_get(addr, "postalCode"));
            if (pc) reg_person_set_postcode(p, pc, strlen(pc));
            const char *l0 = json_string_value(json_array_get(json_object_get(addr, "line"), 0));
            if (l0) reg_person_set_address(p, l0, strlen(l0));
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return rc;
}

static status load_truth(loader *L, const char *dir, err *e) {
    status rc = ST_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/ground_truth/records.csv", dir);
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    if (!f) return err_set(e, ST_IO, "exception", path, "cannot open: %s", strerror(errno));
    if (getline(&line, &cap, f) < 0) goto out;
    while (getline(&line, &cap, f) >= 0) {
        chomp(line);
        char *v[8];
        if (split_csv(line, ',', v, 8) < 4) continue;
        char key[160];
        snprintf(key, sizeof key, "%s|%s", v[0], v[2]);
        int32_t pi = person_index(v[3]);
        if (!smap_get(&L->truth, key, 1, pi)) {
            rc = err_set(e, ST_NOMEM, "exception", path, "out of memory");
            goto out;
        }
    }
out:
    free(line);
    fclose(f);
    return rc;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file of `sub` with suffix `ext`, sorted; each loaded with `fn`. */
static status load_dir(loader *L, const char *dir, const char *sub, const char *ext,
                       status (*fn)(loader *, const char *, err *), err *e) {
    status rc = ST_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    DIR *d = opendir(path);
    if (!d) return ST_OK; /* a feed kind may be absent */
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), el = strlen(ext);
        if (l <= el || strcmp(de->d_name + l - el, ext) != 0) continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 128;
            char **nw = realloc(names, cap * sizeof *nw);
            if (!nw) {
                rc = err_set(e, ST_NOMEM, "exception", path, "out of memory");
                goto out;
            }
            names = nw;
        }
        names[nn++] = strndup(de->d_name, l - el);
    }
    qsort(names, nn, sizeof *names, name_cmp);
    for (size_t i = 0; i < nn && rc == ST_OK; i++) {
        linkeval_data *D = L->d;
        char(*nf)[32] = realloc(D->feeds, (D->nfeeds + 1) * sizeof *nf);
        if (!nf) {
            rc = err_set(e, ST_NOMEM, "exception", path, "out of memory");
            break;
        }
        D->feeds = nf;
        snprintf(D->feeds[D->nfeeds], sizeof D->feeds[0], "%s/%s", sub, names[i]);
        L->feed = (int)D->nfeeds++;
        char file[4200];
        snprintf(file, sizeof file, "%s/%s%s", path, names[i], ext);
        rc = fn(L, file, e);
    }
out:
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

status linkeval_load(const char *dir, linkeval_data *d, err *e) {
    status rc = ST_OK;
    memset(d, 0, sizeof *d);
    loader L = {d, 0, {0}, {0}, 0};
    if ((rc = load_truth(&L, dir, e)) != ST_OK) goto out;
    if ((rc = load_dir(&L, dir, "gp", ".ndjson", load_ndjson, e)) != ST_OK) goto out;
    if ((rc = load_dir(&L, dir, "acute", ".hl7", load_hl7, e)) != ST_OK) goto out;
    if ((rc = load_dir(&L, dir, "community", ".csv", load_csv, e)) != ST_OK) goto out;
    if ((rc = load_dir(&L, dir, "social_care", ".csv", load_csv, e)) != ST_OK) goto out;
    if ((rc = load_dir(&L, dir, "mental_health", ".csv", load_csv, e)) != ST_OK) goto out;
    if (d->n < 2) rc = err_set(e, ST_INVALID, "value", dir, "fewer than two source records found");
out:
    smap_free(&L.records);
    smap_free(&L.truth);
    if (rc != ST_OK) linkeval_data_free(d);
    return rc;
}

void linkeval_data_free(linkeval_data *d) {
    free(d->rec);
    free(d->truth);
    free(d->feed);
    free(d->feeds);
    memset(d, 0, sizeof *d);
}

/* ---- evaluation -------------------------------------------------------- */

void linkeval_opts_default(linkeval_opts *o) {
    memset(o, 0, sizeof *o);
    o->link_weight = NAN;
    o->review_weight = NAN;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct cp {
    uint32_t a, b;
} cp;

static int cp_cmp(const void *x, const void *y) {
    const cp *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return p->b < q->b ? -1 : p->b > q->b;
}

/* Pairs within the same (a, b) cell, summed: sum over cells of C(count, 2). */
static uint64_t pairs_in_cells(cp *v, size_t n) {
    qsort(v, n, sizeof *v, cp_cmp);
    uint64_t total = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && v[j].a == v[i].a && v[j].b == v[i].b)
            j++;
        uint64_t c = j - i;
        total += c * (c - 1) / 2;
        i = j;
    }
    return total;
}

static void show_record(FILE *out, const linkeval_data *d, uint32_t i) {
    const reg_person *p = &d->rec[i];
    fprintf(out, "    %-18s person %-7d nhs %-10s%s %s, %s  %04d-%02d-%02d  sex %d  %s\n",
            d->feeds[d->feed[i]], d->truth[i] + 1, p->nhs[0] ? p->nhs : "-",
            p->nhs[0] && !p->nhs_valid ? "!" : " ", p->family.s, p->given.s, p->dob.y, p->dob.m, p->dob.d,
            p->sex, p->postcode.pc);
}

status linkeval_run(const linkeval_data *d, const linkeval_opts *o, fs_model *model, linkeval_counts *c,
                    err *e) {
    status rc = ST_OK;
    link_pair *pairs = NULL;
    size_t np = 0;
    uint32_t *cluster = NULL;
    cp *cells = NULL;
    fs_tf_table *tft = NULL;
    FILE *out = o->out;
    size_t nrules;
    const block_rule *rules = block_default_rules(&nrules);
    memset(c, 0, sizeof *c);
    double t0 = now();
    if (o->model_in) {
        if ((rc = fs_model_load(model, o->model_in, e)) != ST_OK) goto out;
    } else {
        fs_model_init(model);
        link_train_report rep;
        if ((rc = link_train(model, d->rec, d->n, rules, nrules, NULL, &rep, e)) != ST_OK) goto out;
        if (out) {
            fprintf(out, "training: u from 1,000,000 random pairs; EM per blocking rule:\n");
            for (size_t r = 0; r < nrules; r++)
                fprintf(out, "  %-15s %9zu pairs  %3d iterations  %zu patterns  match proportion %.4f\n",
                        rules[r].name, rep.rule_pairs[r], rep.em[r].iterations, rep.em[r].patterns,
                        rep.em[r].lambda);
            fprintf(out, "  prior P(two random records match) = %.3g\n", model->lambda);
        }
    }
    if (!isnan(o->link_weight)) model->link_weight = o->link_weight;
    if (!isnan(o->review_weight)) model->review_weight = o->review_weight;
    if (o->model_out && (rc = fs_model_save(model, o->model_out, e)) != ST_OK) goto out;
    c->seconds_train = now() - t0;

    t0 = now();
    tft = o->no_tf ? NULL : fs_tf_table_build(d->rec, d->n);
    fs_tf tf = {fs_tf_table_freq, tft};
    block_stats bs;
    if ((rc = link_score(model, d->rec, d->n, rules, nrules, 0, tft ? &tf : NULL, &pairs, &np, &bs, e)) !=
        ST_OK)
        goto out;
    c->seconds_score = now() - t0;
    c->candidates = np;

    cells = malloc(d->n * sizeof *cells);
    cluster = malloc(d->n * sizeof *cluster);
    if (!cells || !cluster) {
        rc = err_set(e, ST_NOMEM, "exception", "linkeval", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < d->n; i++)
        cells[i] = (cp){(uint32_t)d->truth[i], 0};
    c->true_pairs = pairs_in_cells(cells, d->n);
    {
        size_t persons = 0;
        for (size_t i = 0; i < d->n; i++)
            persons += i == 0 || cells[i].a != cells[i - 1].a;
        c->persons = persons;
    }
    for (size_t k = 0; k < np; k++) {
        int same = d->truth[pairs[k].i] >= 0 && d->truth[pairs[k].i] == d->truth[pairs[k].j];
        double w = pairs[k].weight;
        c->candidate_true += same;
        if (w >= model->link_weight) {
            if (same)
                c->link_tp++;
            else
                c->link_fp++;
        } else if (w >= model->review_weight) {
            if (same)
                c->review_tp++;
            else
                c->review_fp++;
        }
    }
    c->precision = c->link_tp + c->link_fp ? (double)c->link_tp / (double)(c->link_tp + c->link_fp) : 1.0;
    c->recall = c->true_pairs ? (double)c->link_tp / (double)c->true_pairs : 1.0;

    t0 = now();
    c->clusters = link_cluster(d->n, pairs, np, model->link_weight, cluster);
    c->seconds_cluster = now() - t0;
    for (size_t i = 0; i < d->n; i++)
        cells[i] = (cp){cluster[i], (uint32_t)d->truth[i]};
    c->cluster_tp = pairs_in_cells(cells, d->n);
    for (size_t i = 0; i < d->n; i++)
        cells[i] = (cp){cluster[i], 0};
    uint64_t predicted = pairs_in_cells(cells, d->n);
    c->cluster_fp = predicted - c->cluster_tp;
    c->cluster_precision = predicted ? (double)c->cluster_tp / (double)predicted : 1.0;
    c->cluster_recall = c->true_pairs ? (double)c->cluster_tp / (double)c->true_pairs : 1.0;

    if (out) {
        fprintf(out, "records: %zu source records of %zu persons (%zu feeds)\n", d->n, c->persons, d->nfeeds);
        fprintf(out, "blocking: %llu candidate pairs (", (unsigned long long)np);
        for (size_t r = 0; r < nrules; r++)
            fprintf(out, "%s%s %llu", r ? ", " : "", rules[r].name, (unsigned long long)bs.pairs[r]);
        fprintf(out,
                "; %llu oversized blocks); true pairs %llu, of which compared %llu (blocking recall %.4f)\n",
                (unsigned long long)bs.oversized_blocks, (unsigned long long)c->true_pairs,
                (unsigned long long)c->candidate_true,
                c->true_pairs ? (double)c->candidate_true / (double)c->true_pairs : 1.0);
        fprintf(out, "thresholds: link >= %.2f, review >= %.2f (bits); term frequencies %s\n",
                model->link_weight, model->review_weight, tft ? "on" : "off");
        fprintf(out, "links: TP %llu FP %llu FN %llu  precision %.5f recall %.5f\n",
                (unsigned long long)c->link_tp, (unsigned long long)c->link_fp,
                (unsigned long long)(c->true_pairs - c->link_tp), c->precision, c->recall);
        fprintf(out, "review queue: %llu pairs (%llu true, %llu false)\n",
                (unsigned long long)(c->review_tp + c->review_fp), (unsigned long long)c->review_tp,
                (unsigned long long)c->review_fp);
        fprintf(out, "clusters: %zu (persons %zu); pairwise precision %.5f recall %.5f (TP %llu FP %llu)\n",
                c->clusters, c->persons, c->cluster_precision, c->cluster_recall,
                (unsigned long long)c->cluster_tp, (unsigned long long)c->cluster_fp);
        fprintf(out, "time: train %.2f s, score %.2f s (%.0f ns/pair incl. blocking), cluster %.3f s\n",
                c->seconds_train, c->seconds_score, np ? c->seconds_score * 1e9 / (double)np : 0.0,
                c->seconds_cluster);
        if (o->sweep) {
            fprintf(out, "sweep: weight  precision  recall  (pairwise links)\n");
            for (double t = 0; t <= 40; t += 2) {
                uint64_t tp = 0, fp = 0;
                for (size_t k = 0; k < np; k++)
                    if (pairs[k].weight >= t) {
                        if (d->truth[pairs[k].i] >= 0 && d->truth[pairs[k].i] == d->truth[pairs[k].j])
                            tp++;
                        else
                            fp++;
                    }
                fprintf(out, "  %5.1f  %.5f  %.5f\n", t, tp + fp ? (double)tp / (double)(tp + fp) : 1.0,
                        c->true_pairs ? (double)tp / (double)c->true_pairs : 1.0);
            }
        }
        if (o->show > 0) {
            int fp = 0, fn = 0;
            for (size_t k = 0; k < np; k++) {
                int same = d->truth[pairs[k].i] >= 0 && d->truth[pairs[k].i] == d->truth[pairs[k].j];
                int linked = pairs[k].weight >= model->link_weight;
                if (same == linked) continue;
                if (linked ? fp++ >= o->show : fn++ >= o->show) continue;
                fprintf(out, "%s (rule %s):\n", linked ? "false link" : "missed link",
                        rules[pairs[k].rule].name);
                show_record(out, d, pairs[k].i);
                show_record(out, d, pairs[k].j);
                fs_vector v;
                double contrib[FS_NFIELDS];
                fs_compare(&d->rec[pairs[k].i], &d->rec[pairs[k].j], &v);
                fs_weight(model, &v, &d->rec[pairs[k].i], &d->rec[pairs[k].j], tft ? &tf : NULL, contrib);
                buf b = {0};
                fs_explain_json(model, &v, contrib, &b);
                fprintf(out, "    %s\n", b.p);
                buf_free(&b);
            }
        }
    }
out:
    free(pairs);
    free(cluster);
    free(cells);
    fs_tf_table_free(tft);
    return rc;
}

typedef struct ij {
    uint32_t *i, *j;
    size_t n, cap;
} ij;

static int collect_ij(void *arg, uint32_t i, uint32_t j, int rule) {
    (void)rule;
    ij *x = arg;
    if (x->n == x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 65536;
        uint32_t *ni = realloc(x->i, ncap * sizeof *ni), *nj = NULL;
        if (ni) x->i = ni;
        nj = realloc(x->j, ncap * sizeof *nj);
        if (nj) x->j = nj;
        if (!ni || !nj) return -1;
        x->cap = ncap;
    }
    x->i[x->n] = i;
    x->j[x->n] = j;
    x->n++;
    return 0;
}

/* ns per compare + weight over the n pairs, repeated to at least 0.5 s. */
static double time_pairs(const linkeval_data *d, const fs_model *m, const fs_tf *tf, const uint32_t *pi,
                         const uint32_t *pj, size_t n, double *sink) {
    size_t done = 0;
    double t0 = now(), t;
    do {
        for (size_t k = 0; k < n; k++) {
            fs_vector v;
            fs_compare(&d->rec[pi[k]], &d->rec[pj[k]], &v);
            *sink += fs_weight(m, &v, &d->rec[pi[k]], &d->rec[pj[k]], tf, NULL);
        }
        done += n;
        t = now() - t0;
    } while (t < 0.5);
    return t * 1e9 / (double)done;
}

status linkeval_bench(const linkeval_data *d, const fs_model *model, FILE *out, err *e) {
    status rc = ST_OK;
    ij cand = {0};
    uint32_t *ri = NULL, *rj = NULL;
    fs_vector *vec = NULL;
    fs_tf_table *tft = fs_tf_table_build(d->rec, d->n);
    fs_tf tf = {fs_tf_table_freq, tft};
    size_t nrules;
    const block_rule *rules = block_default_rules(&nrules);
    double sink = 0;
    enum { NRANDOM = 1000000, NEM = 1000000 };
    double t0 = now();
    if ((rc = block_pairs(d->rec, d->n, rules, nrules, 0, 1, collect_ij, &cand, NULL, e)) != ST_OK) goto out;
    double tblock = now() - t0;
    ri = malloc(NRANDOM * sizeof *ri);
    rj = malloc(NRANDOM * sizeof *rj);
    vec = malloc(NEM * sizeof *vec);
    if (!ri || !rj || !vec || !tft || !cand.n) {
        rc = err_set(e, ST_NOMEM, "exception", "linkeval_bench", "out of memory (or no candidate pairs)");
        goto out;
    }
    uint64_t s = 99;
    for (size_t k = 0; k < NRANDOM; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ri[k] = (uint32_t)((s >> 20) % d->n);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        rj[k] = (uint32_t)((s >> 20) % d->n);
    }
    double ns_cand = time_pairs(d, model, &tf, cand.i, cand.j, cand.n, &sink);
    double ns_rand = time_pairs(d, model, &tf, ri, rj, NRANDOM, &sink);
    double ns_cand_notf = time_pairs(d, model, NULL, cand.i, cand.j, cand.n, &sink);
    for (size_t k = 0; k < NEM; k++) {
        size_t c = k % cand.n;
        if (k % 2 == 0)
            fs_compare(&d->rec[cand.i[c]], &d->rec[cand.j[c]], &vec[k]);
        else
            fs_compare(&d->rec[ri[k]], &d->rec[rj[k]], &vec[k]);
    }
    fs_model m;
    fs_model_init(&m);
    memcpy(m.u, model->u, sizeof m.u);
    fs_em_result r;
    t0 = now();
    if ((rc = fs_em(&m, vec, NEM, NULL, &r, e)) != ST_OK) goto out;
    double tem = now() - t0;
    if (out) {
        fprintf(out, "bench: %zu records; blocking %.3f s for %zu candidate pairs (%.0f ns/record)\n", d->n,
                tblock, cand.n, tblock * 1e9 / (double)d->n);
        fprintf(out,
                "bench: compare + weight %.0f ns/pair over candidates (%.0f without tf), %.0f ns/pair over "
                "random pairs\n",
                ns_cand, ns_cand_notf, ns_rand);
        fprintf(out, "bench: EM on %d vectors: %.3f s (%d iterations, %zu patterns, converged %d)\n", NEM,
                tem, r.iterations, r.patterns, r.converged);
    }
out:
    free(cand.i);
    free(cand.j);
    free(ri);
    free(rj);
    free(vec);
    fs_tf_table_free(tft);
    return rc;
}

int linkeval_main(int argc, char **argv) {
    linkeval_opts o;
    linkeval_opts_default(&o);
    o.out = stdout;
    const char *dir = NULL;
    int bench = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--model") == 0 && i + 1 < argc)
            o.model_in = argv[++i];
        else if (strcmp(a, "--save-model") == 0 && i + 1 < argc)
            o.model_out = argv[++i];
        else if (strcmp(a, "--link") == 0 && i + 1 < argc)
            o.link_weight = atof(argv[++i]);
        else if (strcmp(a, "--review") == 0 && i + 1 < argc)
            o.review_weight = atof(argv[++i]);
        else if (strcmp(a, "--no-tf") == 0)
            o.no_tf = 1;
        else if (strcmp(a, "--sweep") == 0)
            o.sweep = 1;
        else if (strcmp(a, "--show") == 0 && i + 1 < argc)
            o.show = atoi(argv[++i]);
        else if (strcmp(a, "--bench") == 0)
            bench = 1;
        else if (a[0] != '-' && !dir)
            dir = a;
        else {
            dir = NULL;
            break;
        }
    }
    if (!dir) {
        fprintf(stderr,
                "usage: concord link eval DIR [--model FILE] [--save-model FILE] [--link W] [--review W]\n"
                "                         [--no-tf] [--sweep] [--show N] [--bench]\n");
        return 2;
    }
    err e;
    err_clear(&e);
    linkeval_data d;
    double t0 = now();
    if (linkeval_load(dir, &d, &e) != ST_OK) {
        fprintf(stderr, "concord: link eval: %s%s%s\n", e.where, e.where[0] ? ": " : "", e.msg);
        return 1;
    }
    printf("loaded %zu records from %zu rows/messages in %.2f s\n", d.n, d.rows_read, now() - t0);
    fs_model m;
    linkeval_counts c;
    int code = 0;
    if (linkeval_run(&d, &o, &m, &c, &e) != ST_OK) {
        fprintf(stderr, "concord: link eval: %s%s%s\n", e.where, e.where[0] ? ": " : "", e.msg);
        code = 1;
    }
    if (!code && bench && linkeval_bench(&d, &m, stdout, &e) != ST_OK) {
        fprintf(stderr, "concord: link eval: bench: %s\n", e.msg);
        code = 1;
    }
    linkeval_data_free(&d);
    return code;
}
