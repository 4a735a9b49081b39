/*
 * index.c — search-index extraction (see index.h): evaluate each search
 * parameter's path program (format in model.h) on a parsed resource and turn
 * what it matches into typed rows for the store's index tables.
 *
 * Path evaluation. A program is branches separated by '|'; each branch is
 * parsed on the fly into at most PATH_MAX_STEPS steps held on the stack (no
 * allocation, no global cache: parsing a branch costs less than walking it),
 * then walked depth-first over the jansson tree. Depth-first order equals
 * FHIRPath's collection order (each parent's children in document order,
 * parents in order), so "[N]" is a per-step counter that runs across parents
 * within one branch. Arrays are flattened one level at each step. Suffixes of
 * a step apply in the order written. Step grammar (names are [A-Za-z0-9_]+):
 *
 *   name | name[x] | name[x]:Type      element / any choice key / one key
 *   [N]  ?f=v  @Type                   index / where(f='v') / resolve() is Type
 *   '!' at the end of a branch         exists() and != false, as a boolean
 *
 * The value v of "?f=v" runs to the next '.', '|', '@', '[', '!', '?' or the end;
 * a value in single quotes ('v') runs to the closing quote and may hold any of
 * those except '|' (branches are split first) and the quote itself. A
 * branch that does not parse is skipped.
 * "@Type" keeps Reference objects whose "reference" names Type ("Type/id",
 * "Type/id/_history/v", or an absolute URL ending so); when the reference
 * string cannot be typed ("#local", "urn:uuid:...") Reference.type is used if
 * present, else the item is dropped (concord does not resolve contained
 * resources or bundle-local urns at index time).
 *
 * Extraction, by parameter type and JSON shape (the element's declared type
 * is not consulted — shapes are unambiguous for the types each parameter type
 * meets in R4):
 *   token     string/code/uri -> (NULL, s); boolean -> (NULL, "true"/"false");
 *             object with "coding" -> each Coding; with a string "value"
 *             (Identifier, ContactPoint) -> (system, value); with "code"
 *             (Coding) -> (system, code). A CodeableConcept with only text
 *             gives no row (":text" search is not supported).
 *   uri       string -> token row (NULL, uri).
 *   string    string/markdown -> one row; object -> one row per HumanName or
 *             Address part (family, given, prefix, suffix, text, line, city,
 *             district, state, postalCode, country).
 *   date      string -> fhir_date_range; Period -> [start.lo, end.hi] with an
 *             open side at FHIR_DATE_MIN/FHIR_DATE_MAX; Timing -> one row per
 *             event and one for repeat.boundsPeriod. Unparseable values are
 *             skipped (validation rejects them before storage).
 *   reference Reference.reference -> (type, id, url) as index.h says; when
 *             the string has no type ("#x", "urn:uuid:..") a Reference.type
 *             naming a resource type fills ref_type (ref_id stays NULL);
 *             canonical/uri strings -> url only; an inline resource
 *             (Bundle.entry[0].resource) -> (resourceType, id).
 *   number    JSON number -> value, [vlo, vhi]; Range -> [low, high].
 *   quantity  Quantity/Age/Duration/Count/Distance (value, unit, system,
 *             code), Money (value, currency as code, system ISO 4217), Range
 *             (value = low, else high; [vlo, vhi] = [low.lo, high.hi], an open
 *             side is -/+DBL_MAX). SampledData gives no row.
 *   composite, special: no rows.
 *
 * Number precision: [vlo, vhi] = value -/+ half a unit in the last digit as
 * written. jansson keeps only the double, so for reals the digits are
 * recovered by printing with "%.15g": trailing zeros written in the source are
 * lost ("185.0" indexes like "185", ±0.5 instead of ±0.05) and more than 15
 * significant digits are rounded. JSON integers are exact (±0.5).
 *
 * Parameters indexed: those of the resource type plus those of Resource and
 * DomainResource that have a path (_profile, _security, _source, _tag),
 * except _id and _lastUpdated, which the store answers from its own columns.
 *
 * Rows: appended to idx_rows, whose array lives in the arena (a zeroed
 * idx_rows is empty and valid; growing leaves the old array in the arena).
 * Every string in a row is copied into the arena, except the static
 * "true"/"false" of boolean tokens. Duplicate rows of one parameter are
 * dropped (a scan while a parameter has few rows, then a hash table).
 * fhir_index_patient_id returns a string borrowed from `res` (Patient) or
 * from `rows` (everything else). fhir_path_eval's callback gets a key that
 * is valid only during the call.
 *
 * Threads: no global mutable state; concurrent calls with different arenas
 * and idx_rows are safe (the model tables are read-only).
 */
#include "index.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhirdate.h"

#define PATH_MAX_STEPS 16
#define PATH_MAX_OPS   4
#define PATH_NAME_MAX  64

/* ---------------------------------------------------------------- paths */

typedef enum op_kind { OP_INDEX, OP_WHERE, OP_REFTYPE } op_kind;

typedef struct path_op {
    op_kind kind;
    long index;    /* OP_INDEX */
    const char *a; /* OP_WHERE field, OP_REFTYPE type */
    size_t alen;
    const char *b; /* OP_WHERE value */
    size_t blen;
} path_op;

typedef struct path_step {
    char key[PATH_NAME_MAX]; /* JSON key, NUL-terminated ("valueQuantity" for value[x]:Quantity) */
    size_t keylen;
    bool any_choice; /* name[x] without a type: match key + Uppercase... */
    int nops;
    path_op ops[PATH_MAX_OPS];
} path_step;

typedef struct path_walk {
    path_step st[PATH_MAX_STEPS];
    long seen[PATH_MAX_STEPS][PATH_MAX_OPS]; /* items that reached each [N] */
    int nsteps;
    bool bang;   /* branch ends in '!' */
    bool exists; /* '!': something present and not false was found */
    fhir_path_fn fn;
    void *ctx;
} path_walk;

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static size_t name_len(const char *p, const char *end) {
    const char *q = p;
    while (q < end && is_name_char(*q))
        q++;
    return (size_t)(q - p);
}

/* Parse branch [p, end) into w->st. False if it is not a well-formed branch. */
static bool parse_branch(const char *p, const char *end, path_walk *w) {
    w->nsteps = 0;
    w->bang = false;
    if (p < end && end[-1] == '!') {
        w->bang = true;
        end--;
    }
    while (p < end) {
        if (w->nsteps == PATH_MAX_STEPS) return false;
        path_step *s = &w->st[w->nsteps++];
        size_t n = name_len(p, end);
        if (n == 0 || n >= PATH_NAME_MAX) return false;
        memcpy(s->key, p, n);
        s->key[n] = 0;
        s->keylen = n;
        s->any_choice = false;
        s->nops = 0;
        p += n;
        if (end - p >= 3 && memcmp(p, "[x]", 3) == 0) {
            p += 3;
            if (p < end && *p == ':') {
                p++;
                size_t t = name_len(p, end);
                if (t == 0 || n + t >= PATH_NAME_MAX) return false;
                memcpy(s->key + n, p, t);
                if (s->key[n] >= 'a' && s->key[n] <= 'z') s->key[n] = (char)(s->key[n] - 'a' + 'A');
                s->keylen = n + t;
                s->key[s->keylen] = 0;
                p += t;
            } else {
                s->any_choice = true;
            }
        }
        while (p < end && *p != '.') {
            if (s->nops == PATH_MAX_OPS) return false;
            path_op *o = &s->ops[s->nops];
            if (*p == '[') {
                long v = 0;
                const char *q = ++p;
                while (p < end && *p >= '0' && *p <= '9' && v < 1000000)
                    v = v * 10 + (*p++ - '0');
                if (p == q || p >= end || *p != ']') return false;
                p++;
                o->kind = OP_INDEX;
                o->index = v;
            } else if (*p == '?') {
                p++;
                size_t f = name_len(p, end);
                if (f == 0 || p + f >= end || p[f] != '=') return false;
                o->kind = OP_WHERE;
                o->a = p;
                o->alen = f;
                p += f + 1;
                if (p < end && *p == '\'') { /* quoted: up to the closing quote */
                    const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
                    if (!q) return false;
                    o->b = p + 1;
                    o->blen = (size_t)(q - p - 1);
                    p = q + 1;
                } else {
                    const char *v = p;
                    while (p < end && !strchr(".|@[!?", *p))
                        p++;
                    o->b = v;
                    o->blen = (size_t)(p - v);
                }
            } else if (*p == '@') {
                p++;
                size_t t = name_len(p, end);
                if (t == 0) return false;
                o->kind = OP_REFTYPE;
                o->a = p;
                o->alen = t;
                p += t;
            } else {
                return false;
            }
            s->nops++;
        }
        if (p < end) { /* at '.' */
            p++;
            if (p == end) return false; /* trailing '.' */
        }
    }
    return true;
}

/* A reference string split into its parts (slices into the string). */
typedef struct ref_parts {
    const char *type, *id;
    size_t tlen, ilen;
    bool absolute; /* absolute URL, urn:, or #local: keep the url */
} ref_parts;

static bool is_fhir_id(const char *s, size_t n) {
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(is_name_char(c) || c == '-' || c == '.') || c == '_') return false;
    }
    return true;
}

static bool is_resource_type(const char *s, size_t n) {
    const fhir_type *t = fhir_type_findn(s, n);
    return t && t->kind == FHIR_KIND_RESOURCE && !t->abstract_;
}

/* Split "Type/id", "Type/id/_history/v", "http(s)://base/Type/id[/_history/v]";
 * "#x" and "urn:..." have no type or id. */
static void ref_split(const char *s, ref_parts *r) {
    size_t n = strlen(s);
    r->type = r->id = NULL;
    r->tlen = r->ilen = 0;
    r->absolute = false;
    if (n == 0) return;
    if (s[0] == '#' || strncmp(s, "urn:", 4) == 0) {
        r->absolute = true;
        return;
    }
    const char *scheme = strstr(s, "://");
    if (scheme) r->absolute = true;
    if (memchr(s, '?', n)) return; /* conditional reference: no id */
    const char *start = scheme ? scheme + 3 : s;
    const char *end = s + n;
    const char *hist = strstr(start, "/_history/");
    if (hist) end = hist;
    const char *slash = NULL;
    for (const char *q = end; q > start; q--)
        if (q[-1] == '/') {
            slash = q - 1;
            break;
        }
    if (!slash) return;
    const char *tstart = start;
    for (const char *q = slash; q > start; q--)
        if (q[-1] == '/') {
            tstart = q;
            break;
        }
    if (scheme && tstart == start) return; /* "http://host/id": no type segment */
    size_t tlen = (size_t)(slash - tstart), ilen = (size_t)(end - slash - 1);
    if (!is_resource_type(tstart, tlen) || !is_fhir_id(slash + 1, ilen)) return;
    r->type = tstart;
    r->tlen = tlen;
    r->id = slash + 1;
    r->ilen = ilen;
}

/* The resource type a Reference object points to, or NULL/0 if unknown. */
static const char *reference_type(json_t *ref, size_t *len) {
    const char *s = json_string_value(json_object_get(ref, "reference"));
    if (s) {
        ref_parts r;
        ref_split(s, &r);
        if (r.type) {
            *len = r.tlen;
            return r.type;
        }
    }
    const char *t = json_string_value(json_object_get(ref, "type"));
    if (t) {
        *len = strlen(t);
        return t;
    }
    return NULL;
}

static bool keep_item(path_walk *w, int level, json_t *item) {
    path_step *s = &w->st[level];
    for (int i = 0; i < s->nops; i++) {
        path_op *o = &s->ops[i];
        switch (o->kind) {
        case OP_INDEX:
            if (w->seen[level][i]++ != o->index) return false;
            break;
        case OP_WHERE: {
            char f[PATH_NAME_MAX];
            if (o->alen >= sizeof f || !json_is_object(item)) return false;
            memcpy(f, o->a, o->alen);
            f[o->alen] = 0;
            json_t *v = json_object_get(item, f);
            if (!json_is_string(v) || json_string_length(v) != o->blen ||
                memcmp(json_string_value(v), o->b, o->blen) != 0)
                return false;
            break;
        }
        case OP_REFTYPE: {
            size_t tl = 0;
            const char *t = json_is_object(item) ? reference_type(item, &tl) : NULL;
            if (!t || tl != o->alen || memcmp(t, o->a, tl) != 0) return false;
            break;
        }
        }
    }
    return true;
}

static void walk_from(path_walk *w, int level, const char *key, json_t *node);

/* One matched value at `level`: flatten an array, filter, descend. */
static void visit(path_walk *w, int level, const char *key, json_t *v) {
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (keep_item(w, level, item)) walk_from(w, level + 1, key, item);
        }
    } else if (keep_item(w, level, v)) {
        walk_from(w, level + 1, key, v);
    }
}

static void walk_from(path_walk *w, int level, const char *key, json_t *node) {
    if (level == w->nsteps) {
        if (w->bang) {
            if (!json_is_false(node) && !json_is_null(node)) w->exists = true;
        } else {
            w->fn(w->ctx, key, node);
        }
        return;
    }
    if (!json_is_object(node)) return;
    path_step *s = &w->st[level];
    if (s->any_choice) {
        const char *k;
        json_t *v;
        json_object_foreach(node, k, v) {
            if (strncmp(k, s->key, s->keylen) == 0 && k[s->keylen] >= 'A' && k[s->keylen] <= 'Z')
                visit(w, level, k, v);
        }
    } else {
        json_t *v = json_object_get(node, s->key);
        if (v) visit(w, level, s->key, v);
    }
}

void fhir_path_eval(const char *path, json_t *res, fhir_path_fn fn, void *ctx) {
    path_walk w;
    if (!path || !res || !fn) return;
    w.fn = fn;
    w.ctx = ctx;
    const char *p = path;
    for (;;) {
        const char *bar = strchr(p, '|');
        const char *end = bar ? bar : p + strlen(p);
        if (parse_branch(p, end, &w)) {
            memset(w.seen, 0, sizeof w.seen[0] * (size_t)(w.nsteps ? w.nsteps : 1));
            w.exists = false;
            if (w.nsteps == 0 && !w.bang) {
                fn(ctx, NULL, res); /* empty branch: the resource itself */
            } else {
                walk_from(&w, 0, NULL, res);
                if (w.bang)
                    fn(ctx, w.nsteps ? w.st[w.nsteps - 1].key : NULL, w.exists ? json_true() : json_false());
            }
        }
        if (!bar) break;
        p = bar + 1;
    }
}

/* ------------------------------------------------------------ normalise */

/* Latin-1 Supplement and Latin Extended-A letters, U+00C0..U+017F, folded
 * to lower-case ASCII. NULL entries (×, ÷) are kept as they are. */
static const char *const latin_fold[0x180 - 0xC0] = {
    /* C0 */ "a",  "a", "a",  "a",  "a", "a", "ae", "c",  "e", "e", "e", "e", "i", "i", "i",  "i",
    /* D0 */ "d",  "n", "o",  "o",  "o", "o", "o",  NULL, "o", "u", "u", "u", "u", "y", "th", "ss",
    /* E0 */ "a",  "a", "a",  "a",  "a", "a", "ae", "c",  "e", "e", "e", "e", "i", "i", "i",  "i",
    /* F0 */ "d",  "n", "o",  "o",  "o", "o", "o",  NULL, "o", "u", "u", "u", "u", "y", "th", "y",
    /* 100 */ "a", "a", "a",  "a",  "a", "a", "c",  "c",  "c", "c", "c", "c", "c", "c", "d",  "d",
    /* 110 */ "d", "d", "e",  "e",  "e", "e", "e",  "e",  "e", "e", "e", "e", "g", "g", "g",  "g",
    /* 120 */ "g", "g", "g",  "g",  "h", "h", "h",  "h",  "i", "i", "i", "i", "i", "i", "i",  "i",
    /* 130 */ "i", "i", "ij", "ij", "j", "j", "k",  "k",  "k", "l", "l", "l", "l", "l", "l",  "l",
    /* 140 */ "l", "l", "l",  "n",  "n", "n", "n",  "n",  "n", "n", "n", "n", "o", "o", "o",  "o",
    /* 150 */ "o", "o", "oe", "oe", "r", "r", "r",  "r",  "r", "r", "s", "s", "s", "s", "s",  "s",
    /* 160 */ "s", "s", "t",  "t",  "t", "t", "t",  "t",  "u", "u", "u", "u", "u", "u", "u",  "u",
    /* 170 */ "u", "u", "u",  "u",  "w", "w", "y",  "y",  "y", "z", "z", "z", "z", "z", "z",  "s",
};

/* Decode one UTF-8 sequence at s (NUL-terminated). Returns its length and
 * sets *cp, or 0 for an invalid sequence (overlong, surrogate, > U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, unsigned *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    unsigned v, min;
    if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0; /* also stops at NUL */
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

static size_t utf8_encode(unsigned cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool is_space_cp(unsigned cp) {
    return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || cp == 0xA0 || (cp >= 0x2000 && cp <= 0x200B) ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Simple lower-casing outside Latin-1/Extended-A: Greek and Cyrillic capitals. */
static unsigned lower_cp(unsigned cp) {
    if (cp >= 'A' && cp <= 'Z') return cp + 32;
    if (cp >= 0x391 && cp <= 0x3A9 && cp != 0x3A2) return cp + 0x20;
    if (cp >= 0x410 && cp <= 0x42F) return cp + 0x20;
    if (cp >= 0x400 && cp <= 0x40F) return cp + 0x50;
    return cp;
}

/* Output is never longer than the input: every fold of a 2-byte letter is at
 * most 2 bytes, case mapping keeps the encoded length, spaces collapse and
 * invalid bytes are dropped. */
char *fhir_string_normalize(arena *a, const char *s) {
    size_t n = strlen(s);
    char *out = arena_alloc(a, n + 1), *o = out;
    const unsigned char *p = (const unsigned char *)s;
    bool pending_space = false;
    while (*p) {
        unsigned cp;
        size_t k = utf8_decode(p, &cp);
        if (k == 0) { /* invalid byte: drop it */
            p++;
            continue;
        }
        p += k;
        if (is_space_cp(cp)) {
            pending_space = o != out;
            continue;
        }
        if (cp >= 0x300 && cp <= 0x36F) continue; /* combining diacritical marks */
        if (pending_space) {
            *o++ = ' ';
            pending_space = false;
        }
        if (cp >= 0xC0 && cp < 0x180 && latin_fold[cp - 0xC0]) {
            for (const char *f = latin_fold[cp - 0xC0]; *f; f++)
                *o++ = *f;
            continue;
        }
        o += utf8_encode(lower_cp(cp), o);
    }
    *o = 0;
    return out;
}

/* ----------------------------------------------------------- extraction */

typedef struct extract {
    const fhir_search_param *sp;
    idx_rows *out;
    arena *a;
    size_t first; /* this parameter's first row in out */
    /* Duplicate detection: a linear scan while the parameter has fewer than
     * DEDUPE_LINEAR rows, then an open-addressing table of row index + 1
     * (0 = empty) in the arena, so a resource with thousands of values for
     * one parameter stays linear. */
    uint32_t *slot;
    size_t nslot, nused;
} extract;

#define DEDUPE_LINEAR 16

/* A row before it is stored: strings borrowed from the JSON (or static),
 * the reference type and id as slices of the reference string. */
typedef struct cand {
    idx_kind kind;
    const char *system, *code, *exact, *url;
    const char *rtype, *rid;
    size_t rtlen, ridlen;
    double value, vlo, vhi;
    int64_t lo, hi;
    bool code_static; /* code is a static string: no copy */
} cand;

static bool str_eq(const char *row, const char *c) {
    if (!row || !c) return row == c;
    return strcmp(row, c) == 0;
}

static bool slice_eq(const char *row, const char *s, size_t n) {
    if (!row || !s) return !row && !s;
    return strncmp(row, s, n) == 0 && row[n] == 0;
}

static bool cand_eq(const idx_row *r, const cand *c) {
    if (r->kind != c->kind) return false;
    switch (c->kind) {
    case IDX_TOKEN: return str_eq(r->system, c->system) && str_eq(r->code, c->code);
    case IDX_STRING: return str_eq(r->exact, c->exact);
    case IDX_DATE: return r->lo == c->lo && r->hi == c->hi;
    case IDX_REF:
        return slice_eq(r->ref_type, c->rtype, c->rtlen) && slice_eq(r->ref_id, c->rid, c->ridlen) &&
               str_eq(r->ref_url, c->url);
    case IDX_NUMBER: return r->value == c->value && r->vlo == c->vlo && r->vhi == c->vhi;
    case IDX_QUANTITY:
        return r->value == c->value && r->vlo == c->vlo && r->vhi == c->vhi && str_eq(r->system, c->system) &&
               str_eq(r->code, c->code);
    }
    return false;
}

static const char *dup(arena *a, const char *s) {
    return s ? arena_strdup(a, s) : NULL;
}

/* FNV-1a over the fields cand_eq compares; equal rows hash equal (a -0.0
 * and 0.0 pair may hash apart, which only costs a duplicate row). */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s, size_t n) {
    h = s ? fnv(h, s, n) : h;
    return (h ^ (s ? 0xff : 0xfe)) * 0x100000001b3ULL; /* separator; NULL != "" */
}

static uint64_t hash_fields(idx_kind k, const char *s1, size_t n1, const char *s2, size_t n2, const char *s3,
                            size_t n3, const double d[3], const int64_t t[2]) {
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, &k, sizeof k);
    h = fnv_str(h, s1, n1);
    h = fnv_str(h, s2, n2);
    h = fnv_str(h, s3, n3);
    h = fnv(h, d, 3 * sizeof *d);
    return fnv(h, t, 2 * sizeof *t);
}

static size_t slen(const char *s) {
    return s ? strlen(s) : 0;
}

static uint64_t row_hash(const idx_row *r) {
    double d[3] = {0, 0, 0};
    int64_t t[2] = {0, 0};
    switch (r->kind) {
    case IDX_TOKEN:
        return hash_fields(r->kind, r->system, slen(r->system), r->code, slen(r->code), NULL, 0, d, t);
    case IDX_STRING: return hash_fields(r->kind, r->exact, slen(r->exact), NULL, 0, NULL, 0, d, t);
    case IDX_DATE: t[0] = r->lo, t[1] = r->hi; return hash_fields(r->kind, NULL, 0, NULL, 0, NULL, 0, d, t);
    case IDX_REF:
        return hash_fields(r->kind, r->ref_type, slen(r->ref_type), r->ref_id, slen(r->ref_id), r->ref_url,
                           slen(r->ref_url), d, t);
    case IDX_NUMBER:
    case IDX_QUANTITY:
        d[0] = r->value, d[1] = r->vlo, d[2] = r->vhi;
        return hash_fields(r->kind, r->system, slen(r->system), r->code, slen(r->code), NULL, 0, d, t);
    }
    return 0;
}

static uint64_t cand_hash(const cand *c) {
    double d[3] = {0, 0, 0};
    int64_t t[2] = {0, 0};
    switch (c->kind) {
    case IDX_TOKEN:
        return hash_fields(c->kind, c->system, slen(c->system), c->code, slen(c->code), NULL, 0, d, t);
    case IDX_STRING: return hash_fields(c->kind, c->exact, slen(c->exact), NULL, 0, NULL, 0, d, t);
    case IDX_DATE: t[0] = c->lo, t[1] = c->hi; return hash_fields(c->kind, NULL, 0, NULL, 0, NULL, 0, d, t);
    case IDX_REF:
        return hash_fields(c->kind, c->rtype, c->rtlen, c->rid, c->ridlen, c->url, slen(c->url), d, t);
    case IDX_NUMBER:
        d[0] = c->value, d[1] = c->vlo, d[2] = c->vhi;
        return hash_fields(c->kind, NULL, 0, NULL, 0, NULL, 0, d, t);
    case IDX_QUANTITY:
        d[0] = c->value, d[1] = c->vlo, d[2] = c->vhi;
        return hash_fields(c->kind, c->system, slen(c->system), c->code, slen(c->code), NULL, 0, d, t);
    }
    return 0;
}

/* Insert row index i (of this parameter) into the table. */
static void slot_put(extract *x, uint64_t h, size_t i) {
    size_t m = x->nslot - 1, k = (size_t)h & m;
    while (x->slot[k])
        k = (k + 1) & m;
    x->slot[k] = (uint32_t)(i + 1);
    x->nused++;
}

/* (Re)build the table with `n` slots from the parameter's rows. */
static void slot_build(extract *x, size_t n) {
    x->slot = arena_zalloc(x->a, n * sizeof *x->slot);
    x->nslot = n;
    x->nused = 0;
    for (size_t i = x->first; i < x->out->n; i++)
        slot_put(x, row_hash(&x->out->v[i]), i);
}

/* Append `c` unless this parameter already has the same row; strings are
 * copied into the arena. */
static void add_row(extract *x, const cand *c) {
    idx_rows *out = x->out;
    uint64_t h = 0;
    if (x->slot) {
        h = cand_hash(c);
        size_t m = x->nslot - 1;
        for (size_t k = (size_t)h & m; x->slot[k]; k = (k + 1) & m)
            if (cand_eq(&out->v[x->slot[k] - 1], c)) return;
    } else {
        for (size_t i = x->first; i < out->n; i++)
            if (cand_eq(&out->v[i], c)) return;
    }
    if (out->n >= UINT32_MAX - 1) return; /* row indices are 32-bit in the table */
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 32;
        idx_row *v = arena_alloc(x->a, cap * sizeof *v);
        if (out->n) memcpy(v, out->v, out->n * sizeof *v);
        out->v = v;
        out->cap = cap;
    }
    idx_row *r = &out->v[out->n++];
    memset(r, 0, sizeof *r);
    r->sp = x->sp;
    r->kind = c->kind;
    switch (c->kind) {
    case IDX_TOKEN:
        r->system = dup(x->a, c->system);
        r->code = c->code_static ? c->code : dup(x->a, c->code);
        break;
    case IDX_STRING:
        r->exact = dup(x->a, c->exact);
        r->norm = fhir_string_normalize(x->a, c->exact);
        break;
    case IDX_DATE:
        r->lo = c->lo;
        r->hi = c->hi;
        break;
    case IDX_REF:
        r->ref_type = c->rtype ? arena_strndup(x->a, c->rtype, c->rtlen) : NULL;
        r->ref_id = c->rid ? arena_strndup(x->a, c->rid, c->ridlen) : NULL;
        r->ref_url = dup(x->a, c->url);
        break;
    case IDX_QUANTITY:
        r->system = dup(x->a, c->system);
        r->code = dup(x->a, c->code);
        /* fall through */
    case IDX_NUMBER:
        r->value = c->value;
        r->vlo = c->vlo;
        r->vhi = c->vhi;
        break;
    }
    if (x->slot) {
        slot_put(x, h, out->n - 1);
        if (x->nused * 2 > x->nslot) slot_build(x, x->nslot * 2);
    } else if (out->n - x->first == DEDUPE_LINEAR) {
        slot_build(x, 4 * DEDUPE_LINEAR);
    }
}

static const char *nonempty(json_t *v) {
    const char *s = json_string_value(v);
    return s && *s ? s : NULL;
}

/* --- token, uri */

static void token_row(extract *x, const char *system, const char *code) {
    if (!code) return;
    cand c = {.kind = IDX_TOKEN, .system = system, .code = code};
    add_row(x, &c);
}

static void extract_token(extract *x, json_t *v) {
    if (json_is_string(v)) {
        token_row(x, NULL, nonempty(v));
    } else if (json_is_boolean(v)) {
        cand c = {.kind = IDX_TOKEN, .code = json_is_true(v) ? "true" : "false", .code_static = true};
        add_row(x, &c);
    } else if (json_is_object(v)) {
        json_t *coding = json_object_get(v, "coding");
        if (json_is_array(coding)) { /* CodeableConcept */
            size_t i;
            json_t *cd;
            json_array_foreach(coding, i, cd) {
                token_row(x, nonempty(json_object_get(cd, "system")), nonempty(json_object_get(cd, "code")));
            }
        } else if (json_is_string(json_object_get(v, "value"))) { /* Identifier, ContactPoint */
            token_row(x, nonempty(json_object_get(v, "system")), nonempty(json_object_get(v, "value")));
        } else { /* Coding */
            token_row(x, nonempty(json_object_get(v, "system")), nonempty(json_object_get(v, "code")));
        }
    }
}

/* --- string */

static void string_row(extract *x, json_t *v) {
    const char *s = nonempty(v);
    if (!s) return;
    cand c = {.kind = IDX_STRING, .exact = s};
    add_row(x, &c);
}

static void extract_string(extract *x, json_t *v) {
    static const char *const parts[] = {"family", "given",    "prefix", "suffix",     "text",   "line",
                                        "city",   "district", "state",  "postalCode", "country"};
    if (json_is_string(v)) {
        string_row(x, v);
    } else if (json_is_object(v)) { /* HumanName, Address */
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) {
            json_t *p = json_object_get(v, parts[k]);
            if (json_is_array(p)) {
                size_t i;
                json_t *item;
                json_array_foreach(p, i, item) string_row(x, item);
            } else {
                string_row(x, p);
            }
        }
    }
}

/* --- date */

static void date_row(extract *x, json_t *v) {
    int64_t lo, hi;
    if (json_is_string(v) && fhir_date_range(json_string_value(v), json_string_length(v), &lo, &hi) == 0) {
        cand c = {.kind = IDX_DATE, .lo = lo, .hi = hi};
        add_row(x, &c);
    }
}

static void period_row(extract *x, json_t *period) {
    json_t *start = json_object_get(period, "start"), *end = json_object_get(period, "end");
    int64_t lo = FHIR_DATE_MIN, hi = FHIR_DATE_MAX, l2, h2;
    if (!start && !end) return;
    if (start) {
        if (!json_is_string(start) ||
            fhir_date_range(json_string_value(start), json_string_length(start), &lo, &h2) != 0)
            return;
    }
    if (end) {
        if (!json_is_string(end) ||
            fhir_date_range(json_string_value(end), json_string_length(end), &l2, &hi) != 0)
            return;
    }
    if (lo > hi) return; /* an inverted period is invalid data */
    cand c = {.kind = IDX_DATE, .lo = lo, .hi = hi};
    add_row(x, &c);
}

static void extract_date(extract *x, json_t *v) {
    if (json_is_string(v)) {
        date_row(x, v);
    } else if (json_is_object(v)) {
        if (json_object_get(v, "start") || json_object_get(v, "end")) period_row(x, v); /* Period */
        json_t *event = json_object_get(v, "event");                                    /* Timing */
        if (json_is_array(event)) {
            size_t i;
            json_t *e;
            json_array_foreach(event, i, e) date_row(x, e);
        }
        json_t *bounds = json_object_get(json_object_get(v, "repeat"), "boundsPeriod");
        if (json_is_object(bounds)) period_row(x, bounds);
    }
}

/* --- reference */

static void extract_reference(extract *x, json_t *v) {
    cand c = {.kind = IDX_REF};
    if (json_is_string(v)) { /* canonical, uri */
        c.url = nonempty(v);
        if (c.url) add_row(x, &c);
        return;
    }
    if (!json_is_object(v)) return;
    const char *s = nonempty(json_object_get(v, "reference"));
    if (s) {
        ref_parts r;
        ref_split(s, &r);
        if (r.type) {
            c.rtype = r.type;
            c.rtlen = r.tlen;
            c.rid = r.id;
            c.ridlen = r.ilen;
            c.url = r.absolute ? s : NULL;
        } else {
            c.url = s;
            const char *t = nonempty(json_object_get(v, "type"));
            if (t && is_resource_type(t, strlen(t))) {
                c.rtype = t;
                c.rtlen = strlen(t);
            }
        }
        add_row(x, &c);
        return;
    }
    /* an inline resource (Bundle.entry[0].resource) */
    const char *rt = nonempty(json_object_get(v, "resourceType"));
    const char *id = nonempty(json_object_get(v, "id"));
    if (rt && id && is_resource_type(rt, strlen(rt)) && is_fhir_id(id, strlen(id))) {
        c.rtype = rt;
        c.rtlen = strlen(rt);
        c.rid = id;
        c.ridlen = strlen(id);
        add_row(x, &c);
    }
}

/* --- number, quantity */

/* Half a unit in the last written digit of v (see the header comment for
 * the %.15g approximation of the written text). */
static double half_unit(json_t *v) {
    if (json_is_integer(v)) return 0.5;
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", json_real_value(v));
    int decimals = 0;
    const char *p = buf, *dot = strchr(buf, '.'), *e = strchr(buf, 'e');
    if (dot) {
        for (p = dot + 1; *p >= '0' && *p <= '9'; p++)
            decimals++;
    }
    if (e) decimals -= atoi(e + 1);
    return 0.5 * pow(10.0, -decimals);
}

static bool number_of(json_t *v, double *val, double *lo, double *hi) {
    if (!json_is_number(v)) return false;
    double d = json_number_value(v), h = half_unit(v);
    *val = d;
    *lo = d - h;
    *hi = d + h;
    return true;
}

/* A Range: value = low (else high); [low.lo, high.hi], open sides ∓DBL_MAX. */
static bool range_of(json_t *range, cand *c) {
    json_t *low = json_object_get(range, "low"), *high = json_object_get(range, "high");
    double lv, llo, lhi, hv, hlo, hhi;
    bool has_low = number_of(json_object_get(low, "value"), &lv, &llo, &lhi);
    bool has_high = number_of(json_object_get(high, "value"), &hv, &hlo, &hhi);
    if (!has_low && !has_high) return false;
    json_t *q = has_low ? low : high;
    c->value = has_low ? lv : hv;
    c->vlo = has_low ? llo : -DBL_MAX;
    c->vhi = has_high ? hhi : DBL_MAX;
    c->system = nonempty(json_object_get(q, "system"));
    c->code = nonempty(json_object_get(q, "code"));
    if (!c->code) c->code = nonempty(json_object_get(q, "unit"));
    return true;
}

static void extract_number(extract *x, json_t *v) {
    cand c = {.kind = IDX_NUMBER};
    if (number_of(v, &c.value, &c.vlo, &c.vhi) ||
        (json_is_object(v) && (json_object_get(v, "low") || json_object_get(v, "high")) && range_of(v, &c)))
        add_row(x, &c);
}

static void extract_quantity(extract *x, json_t *v) {
    cand c = {.kind = IDX_QUANTITY};
    if (number_of(v, &c.value, &c.vlo, &c.vhi)) {
        add_row(x, &c);
        return;
    }
    if (!json_is_object(v)) return;
    if (json_object_get(v, "low") || json_object_get(v, "high")) { /* Range */
        if (range_of(v, &c)) add_row(x, &c);
        return;
    }
    if (!number_of(json_object_get(v, "value"), &c.value, &c.vlo, &c.vhi)) return; /* SampledData too */
    const char *currency = nonempty(json_object_get(v, "currency"));
    if (currency) { /* Money */
        c.system = "urn:iso:std:iso:4217";
        c.code = currency;
    } else { /* Quantity, Age, Duration, Count, Distance */
        c.system = nonempty(json_object_get(v, "system"));
        c.code = nonempty(json_object_get(v, "code"));
        if (!c.code) c.code = nonempty(json_object_get(v, "unit"));
    }
    add_row(x, &c);
}

static void on_value(void *ctx, const char *key, json_t *v) {
    extract *x = ctx;
    (void)key;
    switch (x->sp->type) {
    case SP_TOKEN: extract_token(x, v); break;
    case SP_URI:
        if (json_is_string(v)) token_row(x, NULL, nonempty(v));
        break;
    case SP_STRING: extract_string(x, v); break;
    case SP_DATE: extract_date(x, v); break;
    case SP_REFERENCE: extract_reference(x, v); break;
    case SP_NUMBER: extract_number(x, v); break;
    case SP_QUANTITY: extract_quantity(x, v); break;
    case SP_COMPOSITE:
    case SP_SPECIAL: break;
    }
}

static void index_params(const char *group, json_t *res, idx_rows *out, arena *a) {
    size_t n = 0;
    const fhir_search_param *sp = fhir_search_params_of(group, &n);
    for (size_t i = 0; i < n; i++) {
        const fhir_search_param *p = &sp[i];
        if (!p->path || p->type == SP_COMPOSITE || p->type == SP_SPECIAL) continue;
        if (p->code[0] == '_' && (strcmp(p->code, "_id") == 0 || strcmp(p->code, "_lastUpdated") == 0))
            continue; /* the store's own columns */
        extract x = {.sp = p, .out = out, .a = a, .first = out->n};
        fhir_path_eval(p->path, res, on_value, &x);
    }
}

int fhir_index_resource(const char *rtype, json_t *res, idx_rows *out, arena *a) {
    const fhir_type *t = rtype ? fhir_resource_type(rtype) : NULL;
    if (!t || !json_is_object(res)) return -1;
    index_params(t->name, res, out, a);
    if (t->base && strcmp(t->base, "DomainResource") == 0) index_params("DomainResource", res, out, a);
    index_params("Resource", res, out, a);
    return 0;
}

const char *fhir_index_patient_id(const char *rtype, json_t *res, const idx_rows *rows) {
    if (!rtype) return NULL;
    if (strcmp(rtype, "Patient") == 0) return json_string_value(json_object_get(res, "id"));
    const fhir_compartment *comp = fhir_compartment_find(rtype);
    if (!comp || !comp->params || !rows) return NULL;
    const char *p = comp->params;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        for (size_t i = 0; i < rows->n; i++) {
            const idx_row *r = &rows->v[i];
            if (r->kind == IDX_REF && r->ref_id && r->ref_type && strcmp(r->ref_type, "Patient") == 0 &&
                strncmp(r->sp->code, p, n) == 0 && r->sp->code[n] == 0)
                return r->ref_id;
        }
        p += n;
        if (*p == '|') p++;
    }
    return NULL;
}

/* Is `code` one of the '|'-separated names in `list`? */
static int in_list(const char *list, const char *code) {
    size_t n = strlen(code);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t)(bar - p) : strlen(p);
        if (k == n && strncmp(p, code, n) == 0) return 1;
        p += k;
        if (*p == '|') p++;
    }
    return 0;
}

const char *fhir_index_compartment_patient(const char *rtype, json_t *res, arena *a) {
    if (!rtype || !json_is_object(res)) return NULL;
    if (strcmp(rtype, "Patient") == 0) return json_string_value(json_object_get(res, "id"));
    const fhir_compartment *comp = fhir_compartment_find(rtype);
    const fhir_type *t = fhir_resource_type(rtype);
    if (!comp || !comp->params || !t) return NULL;
    idx_rows rows = {0};
    size_t n = 0;
    const fhir_search_param *sp = fhir_search_params_of(t->name, &n);
    for (size_t i = 0; i < n; i++) {
        const fhir_search_param *p = &sp[i];
        if (!p->path || p->type != SP_REFERENCE || !in_list(comp->params, p->code)) continue;
        extract x = {.sp = p, .out = &rows, .a = a, .first = rows.n};
        fhir_path_eval(p->path, res, on_value, &x);
    }
    return fhir_index_patient_id(rtype, res, &rows);
}
