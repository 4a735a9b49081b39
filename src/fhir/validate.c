/*
 * validate.c — structural validation of FHIR R4 JSON resources against the
 * generated model tables (model.h / model_gen.c).
 *
 * The walk. A resource is a JSON object whose "resourceType" names a concrete
 * resource type; its properties are checked against that type's elements.
 * A property is one of
 *   name        an element of the current scope ("Patient.name");
 *   nameType    a choice element "name[x]" with Type one of its types, the
 *               first letter capitalised ("valueQuantity", "valueDateTime");
 *   _name       the id/extension sibling of a primitive element `name`: an
 *               object, or for a repeating primitive an array of objects and
 *               nulls parallel to the value array;
 *   resourceType  at a resource root only.
 * What is inside an element's value depends on its type: a complex datatype
 * is checked against that datatype's elements ("HumanName.family"); a
 * BackboneElement/Element against the element's own children
 * ("Observation.component.code"); a contentReference against the children of
 * the referenced element ("Questionnaire.item.item" -> "Questionnaire.item");
 * type Resource ("contained", "Bundle.entry.resource",
 * "Parameters.parameter.resource") as a resource of its own resourceType.
 * Extensions need no special case: Extension is a datatype whose url is
 * required and whose value[x] is a choice.
 *
 * Scopes. A scope is a prefix ("Observation.component", "HumanName") and the
 * range of fhir_elements holding its descendants. Because elements are sorted
 * by path and every path character sorts after '.', the descendants of the
 * element at index i are exactly i+1 .. subtree_end[i]; subtree_end and a
 * per-element type class are computed once (pthread_once) from the static
 * tables. Looking up a property is a binary search in the scope's range;
 * required-element checks step over direct children only. Nothing is
 * allocated per resource: the error path ("Patient.name[1].given[0]") is
 * kept in a fixed buffer on the stack and truncated if ever longer.
 *
 * Status rule:
 *   ST_INVALID        the JSON does not have FHIR's structure: not an object,
 *                     unknown or missing resourceType, an unknown property, a
 *                     value of the wrong JSON kind (string for a number,
 *                     object for a string, null where no null may be, ...),
 *                     a choice suffix that is not one of the element's types,
 *                     nesting deeper than VALIDATE_MAX_DEPTH.
 *   ST_UNPROCESSABLE  the structure is right but a rule fails: cardinality
 *                     (array where a single value belongs or the reverse,
 *                     empty array, empty object), a required element missing,
 *                     a primitive value badly formed (date, id, code, ...,
 *                     empty string, integer out of range).
 * Issue types: "structure" for unknown elements, wrong JSON kinds and
 * cardinality shape; "required" for missing elements; "value" for primitive
 * formats; "invalid" for resourceType problems and anything else.
 * The first fault found is reported; properties are visited in document order
 * and required elements are checked after an object's properties.
 */
#include "validate.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define VALIDATE_MAX_DEPTH 96
#define WHERE_CAP          512

/* How an element's value is checked. */
enum elem_class {
    EC_NONE = 0,   /* no type (should not happen for a non-root element) */
    EC_CHOICE,     /* name[x]: resolved per JSON key */
    EC_CONTENTREF, /* children of the referenced element */
    EC_BACKBONE,   /* BackboneElement / Element: children are its own subtree */
    EC_RESOURCE,   /* a nested resource */
    EC_COMPLEX,    /* a complex datatype */
    EC_PRIMITIVE,  /* a primitive type, see prim_kind */
};

enum prim_kind {
    PK_NONE = 0,
    PK_BOOLEAN,
    PK_INTEGER,
    PK_POSITIVEINT,
    PK_UNSIGNEDINT,
    PK_DECIMAL,
    PK_STRING,
    PK_MARKDOWN,
    PK_CODE,
    PK_ID,
    PK_URI,
    PK_URL,
    PK_CANONICAL,
    PK_OID,
    PK_UUID,
    PK_BASE64,
    PK_DATE,
    PK_DATETIME,
    PK_INSTANT,
    PK_TIME,
    PK_XHTML,
};

static const struct {
    const char *name;
    enum prim_kind kind;
} prim_names[] = {
    {"boolean", PK_BOOLEAN},
    {"integer", PK_INTEGER},
    {"positiveInt", PK_POSITIVEINT},
    {"unsignedInt", PK_UNSIGNEDINT},
    {"decimal", PK_DECIMAL},
    {"string", PK_STRING},
    {"markdown", PK_MARKDOWN},
    {"code", PK_CODE},
    {"id", PK_ID},
    {"uri", PK_URI},
    {"url", PK_URL},
    {"canonical", PK_CANONICAL},
    {"oid", PK_OID},
    {"uuid", PK_UUID},
    {"base64Binary", PK_BASE64},
    {"date", PK_DATE},
    {"dateTime", PK_DATETIME},
    {"instant", PK_INSTANT},
    {"time", PK_TIME},
    {"xhtml", PK_XHTML},
};

/* A resolved element type: class, primitive kind, datatype index. */
typedef struct vtype {
    unsigned char cls;
    unsigned char prim;
    int type_ix; /* index in fhir_types for EC_COMPLEX, else -1 */
} vtype;

/* Computed once from the static tables. */
static struct {
    int *subtree_end; /* per element: one past its last descendant */
    vtype *etype;     /* per element: its type when not a choice */
    int *ref_ix;      /* per element: index of the contentReference target */
    int element_ix;   /* fhir_types index of "Element" */
    int ok;
} idx;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static enum prim_kind prim_kind_of(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof prim_names / sizeof prim_names[0]; i++)
        if (strlen(prim_names[i].name) == n && memcmp(prim_names[i].name, name, n) == 0)
            return prim_names[i].kind;
    return PK_NONE;
}

/* Classify type code `name` (n bytes) of an element. */
static vtype classify_type(const char *name, size_t n) {
    vtype t = {EC_NONE, PK_NONE, -1};
    enum prim_kind pk;
    const fhir_type *ft;
    if ((n == 15 && memcmp(name, "BackboneElement", 15) == 0) ||
        (n == 7 && memcmp(name, "Element", 7) == 0)) {
        t.cls = EC_BACKBONE;
        return t;
    }
    if (n == 8 && memcmp(name, "Resource", 8) == 0) {
        t.cls = EC_RESOURCE;
        return t;
    }
    pk = prim_kind_of(name, n);
    if (pk != PK_NONE) {
        t.cls = EC_PRIMITIVE;
        t.prim = (unsigned char)pk;
        return t;
    }
    ft = fhir_type_findn(name, n);
    if (ft && ft->kind == FHIR_KIND_COMPLEX) {
        t.cls = EC_COMPLEX;
        t.type_ix = (int)(ft - fhir_types);
    }
    return t;
}

static int is_choice_path(const char *path) {
    size_t n = strlen(path);
    return n > 3 && memcmp(path + n - 3, "[x]", 3) == 0;
}

static void build_index(void) {
    size_t n = fhir_n_elements;
    const fhir_type *element_type;
    idx.subtree_end = malloc(n * sizeof *idx.subtree_end);
    idx.etype = malloc(n * sizeof *idx.etype);
    idx.ref_ix = malloc(n * sizeof *idx.ref_ix);
    if (!idx.subtree_end || !idx.etype || !idx.ref_ix) return;
    for (size_t i = 0; i < n; i++) {
        const fhir_element *e = &fhir_elements[i];
        size_t plen = strlen(e->path), j = i + 1;
        while (j < n && strncmp(fhir_elements[j].path, e->path, plen) == 0 &&
               fhir_elements[j].path[plen] == '.')
            j++;
        idx.subtree_end[i] = (int)j;
        idx.ref_ix[i] = -1;
        idx.etype[i] = (vtype){EC_NONE, PK_NONE, -1};
        if (e->content_ref) {
            const fhir_element *r = fhir_element_find(e->content_ref);
            idx.etype[i].cls = EC_CONTENTREF;
            idx.ref_ix[i] = r ? (int)(r - fhir_elements) : -1;
            if (!r) idx.etype[i].cls = EC_NONE;
        } else if (is_choice_path(e->path)) {
            idx.etype[i].cls = EC_CHOICE;
        } else if (e->types) {
            const char *bar = strchr(e->types, '|');
            idx.etype[i] = classify_type(e->types, bar ? (size_t)(bar - e->types) : strlen(e->types));
        }
    }
    element_type = fhir_type_find("Element");
    idx.element_ix = element_type ? (int)(element_type - fhir_types) : -1;
    idx.ok = idx.element_ix >= 0;
}

/* ---- validation context and the error path ------------------------------ */

typedef struct vctx {
    err *e;
    int depth;
    size_t wlen;
    char where[WHERE_CAP];
} vctx;

typedef struct scope {
    const char *prefix; /* path of the parent element or the type name */
    size_t plen;
    size_t begin, end; /* descendants in fhir_elements */
} scope;

/* Append to the error path; returns the length to restore. */
static size_t where_push(vctx *v, const char *s, size_t n, int dot) {
    size_t saved = v->wlen;
    size_t room = WHERE_CAP - 1 - v->wlen;
    if (dot && v->wlen > 0 && room > 0) {
        v->where[v->wlen++] = '.';
        room--;
    }
    if (n > room) n = room;
    memcpy(v->where + v->wlen, s, n);
    v->wlen += n;
    v->where[v->wlen] = '\0';
    return saved;
}

static size_t where_push_index(vctx *v, size_t i) {
    char b[24];
    int n = snprintf(b, sizeof b, "[%zu]", i);
    return where_push(v, b, (size_t)n, 0);
}

static void where_pop(vctx *v, size_t saved) {
    v->wlen = saved;
    v->where[saved] = '\0';
}

static status fail(vctx *v, status code, const char *issue, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static status fail(vctx *v, status code, const char *issue, const char *fmt, ...) {
    char msg[sizeof v->e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(v->e, code, issue, v->where, "%s", msg);
}

static const char *json_kind_name(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a decimal number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* ---- primitive formats --------------------------------------------------- */

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Read exactly `w` digits at s[*p] into *out. */
static int digits(const char *s, size_t n, size_t *p, int w, int *out) {
    int x = 0;
    if (*p + (size_t)w > n) return 0;
    for (int k = 0; k < w; k++) {
        char c = s[*p + (size_t)k];
        if (!is_digit(c)) return 0;
        x = x * 10 + (c - '0');
    }
    *p += (size_t)w;
    *out = x;
    return 1;
}

static int days_in_month(int y, int m) {
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return dm[m - 1];
}

/* YYYY[-MM[-DD]]; returns the number of parts read (1..3) or 0. */
static int parse_date_part(const char *s, size_t n, size_t *p) {
    int y, m, d;
    if (!digits(s, n, p, 4, &y) || y == 0) return 0;
    if (*p == n || s[*p] != '-') return 1;
    (*p)++;
    if (!digits(s, n, p, 2, &m) || m < 1 || m > 12) return 0;
    if (*p == n || s[*p] != '-') return 2;
    (*p)++;
    if (!digits(s, n, p, 2, &d) || d < 1 || d > days_in_month(y, m)) return 0;
    return 3;
}

/* hh:mm:ss(.f+)? */
static int parse_time_part(const char *s, size_t n, size_t *p) {
    int h, mi, se;
    if (!digits(s, n, p, 2, &h) || h > 23) return 0;
    if (*p == n || s[(*p)++] != ':' || !digits(s, n, p, 2, &mi) || mi > 59) return 0;
    if (*p == n || s[(*p)++] != ':' || !digits(s, n, p, 2, &se) || se > 60) return 0;
    if (*p < n && s[*p] == '.') {
        size_t start = ++(*p);
        while (*p < n && is_digit(s[*p]))
            (*p)++;
        if (*p == start) return 0;
    }
    return 1;
}

/* Z | (+|-)hh:mm with hh 00..13, or 14:00 */
static int parse_zone(const char *s, size_t n, size_t *p) {
    int h, m;
    if (*p < n && s[*p] == 'Z') {
        (*p)++;
        return 1;
    }
    if (*p == n || (s[*p] != '+' && s[*p] != '-')) return 0;
    (*p)++;
    if (!digits(s, n, p, 2, &h) || *p == n || s[(*p)++] != ':' || !digits(s, n, p, 2, &m)) return 0;
    return (h <= 13 && m <= 59) || (h == 14 && m == 0);
}

static int date_valid(const char *s, size_t n) {
    size_t p = 0;
    return parse_date_part(s, n, &p) > 0 && p == n;
}

static int datetime_valid(const char *s, size_t n, int instant) {
    size_t p = 0;
    int parts = parse_date_part(s, n, &p);
    if (parts == 0) return 0;
    if (p == n) return !instant;
    if (parts != 3 || s[p++] != 'T') return 0;
    return parse_time_part(s, n, &p) && parse_zone(s, n, &p) && p == n;
}

static int time_valid(const char *s, size_t n) {
    size_t p = 0;
    return parse_time_part(s, n, &p) && p == n;
}

/* [^\s]+(\s[^\s]+)* */
static int code_valid(const char *s, size_t n) {
    if (n == 0 || is_space(s[0]) || is_space(s[n - 1])) return 0;
    for (size_t i = 1; i < n; i++)
        if (is_space(s[i]) && is_space(s[i - 1])) return 0;
    return 1;
}

static int uri_valid(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (is_space(s[i]) || s[i] == '\0') return 0;
    return 1;
}

/* urn:oid:[0-2](\.(0|[1-9][0-9]*))+ */
static int oid_valid(const char *s, size_t n) {
    size_t p = 8;
    int arcs = 0;
    if (n < 8 || memcmp(s, "urn:oid:", 8) != 0) return 0;
    if (p >= n || s[p] < '0' || s[p] > '2') return 0;
    p++;
    while (p < n) {
        size_t start;
        if (s[p++] != '.') return 0;
        start = p;
        while (p < n && is_digit(s[p]))
            p++;
        if (p == start || (s[start] == '0' && p - start > 1)) return 0;
        arcs++;
    }
    return arcs > 0;
}

/* urn:uuid: followed by 8-4-4-4-12 lowercase hex digits */
static int uuid_valid(const char *s, size_t n) {
    if (n != 9 + 36 || memcmp(s, "urn:uuid:", 9) != 0) return 0;
    for (size_t i = 0; i < 36; i++) {
        char c = s[9 + i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!is_digit(c) && !(c >= 'a' && c <= 'f')) {
            return 0;
        }
    }
    return 1;
}

static int base64_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '+' || c == '/' ||
              c == '=' || is_space(c)))
            return 0;
    }
    return 1;
}

int fhir_id_valid(const char *id) {
    size_t n;
    if (!id) return 0;
    for (n = 0; id[n]; n++) {
        char c = id[n];
        if (n >= 64) return 0;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '.'))
            return 0;
    }
    return n >= 1;
}

static int id_validn(const char *s, size_t n) {
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static const char *prim_name(enum prim_kind k) {
    for (size_t i = 0; i < sizeof prim_names / sizeof prim_names[0]; i++)
        if (prim_names[i].kind == k) return prim_names[i].name;
    return "?";
}

static status check_primitive(vctx *v, const json_t *j, enum prim_kind k) {
    const char *s;
    size_t n;
    const char *expect = NULL;
    switch (k) {
    case PK_BOOLEAN:
        if (!json_is_boolean(j))
            return fail(v, ST_INVALID, "structure", "expected a JSON boolean (boolean), got %s",
                        json_kind_name(j));
        return ST_OK;
    case PK_INTEGER:
    case PK_POSITIVEINT:
    case PK_UNSIGNEDINT: {
        json_int_t x;
        if (json_is_real(j))
            return fail(v, ST_UNPROCESSABLE, "value", "expected a whole number (%s), got a decimal number",
                        prim_name(k));
        if (!json_is_integer(j))
            return fail(v, ST_INVALID, "structure", "expected a JSON number (%s), got %s", prim_name(k),
                        json_kind_name(j));
        x = json_integer_value(j);
        if (x < INT32_MIN || x > INT32_MAX)
            return fail(v, ST_UNPROCESSABLE, "value", "integer %lld is outside the 32-bit range of %s",
                        (long long)x, prim_name(k));
        if (k == PK_POSITIVEINT && x < 1)
            return fail(v, ST_UNPROCESSABLE, "value", "expected a positiveInt (>= 1), got %lld",
                        (long long)x);
        if (k == PK_UNSIGNEDINT && x < 0)
            return fail(v, ST_UNPROCESSABLE, "value", "expected an unsignedInt (>= 0), got %lld",
                        (long long)x);
        return ST_OK;
    }
    case PK_DECIMAL:
        if (!json_is_number(j))
            return fail(v, ST_INVALID, "structure", "expected a JSON number (decimal), got %s",
                        json_kind_name(j));
        return ST_OK;
    default: break;
    }
    if (!json_is_string(j))
        return fail(v, ST_INVALID, "structure", "expected a JSON string (%s), got %s", prim_name(k),
                    json_kind_name(j));
    s = json_string_value(j);
    n = json_string_length(j);
    if (n == 0)
        return fail(v, ST_UNPROCESSABLE, "value", "empty string: FHIR values must be non-empty (%s)",
                    prim_name(k));
    switch (k) {
    case PK_CODE:
        if (!code_valid(s, n)) expect = "a code (no leading, trailing or repeated whitespace)";
        break;
    case PK_ID:
        if (!id_validn(s, n)) expect = "an id (1-64 characters of A-Z a-z 0-9 - .)";
        break;
    case PK_URI:
    case PK_URL:
    case PK_CANONICAL:
        if (!uri_valid(s, n)) expect = "a URI without whitespace";
        break;
    case PK_OID:
        if (!oid_valid(s, n)) expect = "an oid (urn:oid:1.2.3...)";
        break;
    case PK_UUID:
        if (!uuid_valid(s, n)) expect = "a uuid (urn:uuid: and 36 lowercase hex characters)";
        break;
    case PK_BASE64:
        if (!base64_valid(s, n)) expect = "base64 data";
        break;
    case PK_DATE:
        if (!date_valid(s, n)) expect = "a date (YYYY, YYYY-MM or YYYY-MM-DD)";
        break;
    case PK_DATETIME:
        if (!datetime_valid(s, n, 0))
            expect = "a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.f] with zone)";
        break;
    case PK_INSTANT:
        if (!datetime_valid(s, n, 1)) expect = "an instant (YYYY-MM-DDThh:mm:ss[.f] and Z or +hh:mm)";
        break;
    case PK_TIME:
        if (!time_valid(s, n)) expect = "a time (hh:mm:ss[.f])";
        break;
    case PK_XHTML:
        if (n < 4 || memcmp(s, "<div", 4) != 0)
            return fail(v, ST_UNPROCESSABLE, "value", "narrative div must be XHTML starting with <div");
        break;
    default: break;
    }
    if (expect)
        return fail(v, ST_UNPROCESSABLE, "value", "invalid %s value \"%.40s%s\": expected %s", prim_name(k),
                    s, n > 40 ? "..." : "", expect);
    return ST_OK;
}

/* ---- scopes and element lookup ------------------------------------------- */

static scope scope_of_type(int type_ix) {
    const fhir_type *t = &fhir_types[type_ix];
    scope s = {t->name, strlen(t->name), (size_t)t->first, (size_t)t->first + (size_t)t->count};
    return s;
}

static scope scope_of_element(size_t i) {
    const char *p = fhir_elements[i].path;
    scope s = {p, strlen(p), i + 1, (size_t)idx.subtree_end[i]};
    return s;
}

/* Order the counted name (which may hold any bytes, even NUL) against the
 * NUL-terminated last part of a path in scope, as strcmp would. */
static int cmp_child(const char *name, size_t n, const char *child) {
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)name[i], b = (unsigned char)child[i];
        if (b == 0) return 1;
        if (a != b) return a < b ? -1 : 1;
    }
    return child[n] == '\0' ? 0 : -1;
}

/* Element of `sc` whose name is name[0..n), or -1. */
static long scope_find(const scope *sc, const char *name, size_t n) {
    size_t lo = sc->begin, hi = sc->end;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_child(name, n, fhir_elements[mid].path + sc->plen + 1);
        if (c == 0) return (long)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

/* Is `suffix` (n bytes) the capitalised form of one of `types`? Sets t/tn. */
static int choice_type_match(const char *types, const char *suffix, size_t n, const char **t, size_t *tn) {
    const char *p = types;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        char first = p[0] >= 'a' && p[0] <= 'z' ? (char)(p[0] - 'a' + 'A') : p[0];
        if (len == n && suffix[0] == first && memcmp(p + 1, suffix + 1, n - 1) == 0) {
            *t = p;
            *tn = len;
            return 1;
        }
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

/* Result of resolving a JSON key in a scope. */
typedef struct resolved {
    long ix;         /* element index, -1 if none */
    vtype type;      /* the value's type (resolved for a choice) */
    long bad_choice; /* a choice element whose name matched but type did not */
} resolved;

static resolved resolve_key(const scope *sc, const char *key, size_t n) {
    resolved r = {-1, {EC_NONE, PK_NONE, -1}, -1};
    char stem[96];
    r.ix = scope_find(sc, key, n);
    if (r.ix >= 0) {
        if (idx.etype[r.ix].cls == EC_CHOICE) {
            /* "value[x]" written literally is not a JSON name */
            r.ix = -1;
            return r;
        }
        r.type = idx.etype[r.ix];
        return r;
    }
    for (size_t i = 1; i < n && i + 3 < sizeof stem; i++) {
        long ix;
        const char *t;
        size_t tn;
        if (key[i] < 'A' || key[i] > 'Z') continue;
        memcpy(stem, key, i);
        memcpy(stem + i, "[x]", 3);
        ix = scope_find(sc, stem, i + 3);
        if (ix < 0) continue;
        if (idx.etype[ix].cls == EC_CHOICE && fhir_elements[ix].types &&
            choice_type_match(fhir_elements[ix].types, key + i, n - i, &t, &tn)) {
            r.ix = ix;
            r.type = classify_type(t, tn);
            return r;
        }
        r.bad_choice = ix;
    }
    return r;
}

/* ---- the walk ------------------------------------------------------------ */

static status validate_resource(vctx *v, json_t *res, const char *expected_type);
static status validate_object(vctx *v, json_t *obj, const scope *sc, int resource_root);

static status validate_item(vctx *v, json_t *j, long ix, vtype t) {
    scope sc;
    const char *tname;
    switch (t.cls) {
    case EC_PRIMITIVE: return check_primitive(v, j, (enum prim_kind)t.prim);
    case EC_RESOURCE: return validate_resource(v, j, NULL);
    case EC_COMPLEX:
        sc = scope_of_type(t.type_ix);
        tname = fhir_types[t.type_ix].name;
        break;
    case EC_BACKBONE:
        sc = scope_of_element((size_t)ix);
        tname = "BackboneElement";
        break;
    case EC_CONTENTREF:
        sc = scope_of_element((size_t)idx.ref_ix[ix]);
        tname = "BackboneElement";
        break;
    default:
        return fail(v, ST_INTERNAL, "exception", "element %s has no usable type", fhir_elements[ix].path);
    }
    if (!json_is_object(j))
        return fail(v, ST_INVALID, "structure", "expected a JSON object (%s), got %s", tname,
                    json_kind_name(j));
    return validate_object(v, j, &sc, 0);
}

/* The value of property `key` of `parent`, for element ix of type t. */
static status validate_value(vctx *v, json_t *parent, const char *key, size_t klen, json_t *val, long ix,
                             vtype t) {
    const fhir_element *el = &fhir_elements[ix];
    status rc = ST_OK;
    if (!el->many) {
        if (json_is_array(val))
            return fail(v, ST_UNPROCESSABLE, "structure", "%s takes a single value (max 1), got an array",
                        el->path);
        if (json_is_null(val)) return fail(v, ST_INVALID, "structure", "null is not a FHIR value");
        return validate_item(v, val, ix, t);
    }
    if (!json_is_array(val))
        return fail(v, ST_UNPROCESSABLE, "structure", "%s repeats (max *): expected an array, got %s",
                    el->path, json_kind_name(val));
    if (json_array_size(val) == 0)
        return fail(v, ST_UNPROCESSABLE, "structure", "empty array: omit %s instead", el->path);
    {
        json_t *ext = NULL;
        size_t i;
        json_t *item;
        json_array_foreach(val, i, item) {
            size_t saved = where_push_index(v, i);
            if (json_is_null(item)) {
                json_t *x;
                if (t.cls == EC_PRIMITIVE && !ext && klen + 2 < 128) {
                    char ek[128];
                    ek[0] = '_';
                    memcpy(ek + 1, key, klen);
                    ext = json_object_getn(parent, ek, klen + 1);
                }
                x = json_is_array(ext) ? json_array_get(ext, i) : NULL;
                if (t.cls != EC_PRIMITIVE || !json_is_object(x))
                    rc = fail(v, ST_INVALID, "structure",
                              "null is allowed in a repeating primitive only when _%.*s has an "
                              "entry at the same position",
                              (int)klen, key);
            } else {
                rc = validate_item(v, item, ix, t);
            }
            where_pop(v, saved);
            if (rc != ST_OK) return rc;
        }
    }
    return rc;
}

/* "_name": the id/extension part of primitive element ix. */
static status validate_primitive_ext(vctx *v, json_t *parent, const char *name, size_t nlen, json_t *val,
                                     long ix) {
    const fhir_element *el = &fhir_elements[ix];
    scope esc = scope_of_type(idx.element_ix);
    status rc = ST_OK;
    if (!el->many) {
        if (!json_is_object(val))
            return fail(v, json_is_array(val) ? ST_UNPROCESSABLE : ST_INVALID, "structure",
                        "expected a JSON object (Element: id, extension) for the primitive "
                        "extension of %s, got %s",
                        el->path, json_kind_name(val));
        return validate_object(v, val, &esc, 0);
    }
    if (!json_is_array(val))
        return fail(v, ST_UNPROCESSABLE, "structure",
                    "%s repeats: expected an array of objects and nulls, got %s", el->path,
                    json_kind_name(val));
    if (json_array_size(val) == 0)
        return fail(v, ST_UNPROCESSABLE, "structure", "empty array: omit it instead");
    {
        json_t *values = json_object_getn(parent, name, nlen);
        size_t i;
        json_t *item;
        if (json_is_array(values) && json_array_size(values) != json_array_size(val))
            return fail(v, ST_UNPROCESSABLE, "structure",
                        "has %zu entries but %.*s has %zu: the arrays must be parallel", json_array_size(val),
                        (int)nlen, name, json_array_size(values));
        json_array_foreach(val, i, item) {
            size_t saved = where_push_index(v, i);
            if (json_is_null(item)) {
                json_t *x = json_is_array(values) ? json_array_get(values, i) : NULL;
                if (!x || json_is_null(x))
                    rc = fail(v, ST_INVALID, "structure",
                              "null here needs a value at the same position of %.*s", (int)nlen, name);
            } else if (!json_is_object(item)) {
                rc = fail(v, ST_INVALID, "structure", "expected a JSON object (Element) or null, got %s",
                          json_kind_name(item));
            } else {
                rc = validate_object(v, item, &esc, 0);
            }
            where_pop(v, saved);
            if (rc != ST_OK) return rc;
        }
    }
    return rc;
}

/* Is the required element ix (a direct child of sc) present in obj? */
static int required_present(json_t *obj, const scope *sc, size_t ix) {
    const fhir_element *el = &fhir_elements[ix];
    const char *name = el->path + sc->plen + 1;
    size_t n = strlen(name);
    char key[128];
    if (n + 2 > sizeof key) return 1;
    if (idx.etype[ix].cls != EC_CHOICE) {
        if (json_object_getn(obj, name, n)) return 1;
        key[0] = '_';
        memcpy(key + 1, name, n);
        return json_object_getn(obj, key, n + 1) != NULL;
    }
    /* choice: any name+Type (or _name+Type) present */
    {
        const char *p = el->types;
        size_t stem = n - 3;
        memcpy(key + 1, name, stem);
        key[0] = '_';
        while (p && *p) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (stem + len + 2 <= sizeof key) {
                memcpy(key + 1 + stem, p, len);
                if (key[1 + stem] >= 'a' && key[1 + stem] <= 'z')
                    key[1 + stem] = (char)(key[1 + stem] - 'a' + 'A');
                if (json_object_getn(obj, key + 1, stem + len) || json_object_getn(obj, key, stem + len + 1))
                    return 1;
            }
            p = bar ? bar + 1 : NULL;
        }
    }
    return 0;
}

static status validate_object(vctx *v, json_t *obj, const scope *sc, int resource_root) {
    const char *key;
    size_t klen;
    json_t *val;
    status rc = ST_OK;

    if (json_object_size(obj) == 0)
        return fail(v, ST_UNPROCESSABLE, "structure", "empty object: FHIR objects must have content");
    if (++v->depth > VALIDATE_MAX_DEPTH) {
        rc = fail(v, ST_INVALID, "invalid", "nested deeper than %d levels", VALIDATE_MAX_DEPTH);
        goto out;
    }

    json_object_keylen_foreach(obj, key, klen, val) {
        size_t saved;
        resolved r;
        if (resource_root && klen == 12 && memcmp(key, "resourceType", 12) == 0) continue;
        saved = where_push(v, key, klen, 1);
        if (klen > 1 && key[0] == '_') {
            r = resolve_key(sc, key + 1, klen - 1);
            if (r.ix < 0 || r.type.cls != EC_PRIMITIVE)
                rc = fail(v, ST_INVALID, "structure",
                          "unknown element: %.*s is not a primitive element of %.*s", (int)klen - 1, key + 1,
                          (int)sc->plen, sc->prefix);
            else
                rc = validate_primitive_ext(v, obj, key + 1, klen - 1, val, r.ix);
        } else {
            r = resolve_key(sc, key, klen);
            if (r.ix >= 0)
                rc = validate_value(v, obj, key, klen, val, r.ix, r.type);
            else if (r.bad_choice >= 0)
                rc =
                    fail(v, ST_INVALID, "structure", "%.*s does not name a type allowed for %s (allowed: %s)",
                         (int)klen, key, fhir_elements[r.bad_choice].path, fhir_elements[r.bad_choice].types);
            else
                rc = fail(v, ST_INVALID, "structure", "unknown element %.*s in %.*s", (int)klen, key,
                          (int)sc->plen, sc->prefix);
        }
        if (rc != ST_OK) goto out;
        where_pop(v, saved);
    }

    /* required direct children */
    for (size_t i = sc->begin; i < sc->end; i = (size_t)idx.subtree_end[i]) {
        const fhir_element *el = &fhir_elements[i];
        if (el->min == 0 || required_present(obj, sc, i)) continue;
        /* on failure the error path is left pointing at the missing element */
        where_push(v, el->path + sc->plen + 1, strlen(el->path + sc->plen + 1), 1);
        rc = fail(v, ST_UNPROCESSABLE, "required", "missing required element %s (min %u)", el->path, el->min);
        goto out;
    }
out:
    v->depth--;
    return rc;
}

static status validate_resource(vctx *v, json_t *res, const char *expected_type) {
    json_t *rt;
    const char *tname;
    const fhir_type *t;
    scope sc;
    size_t saved = v->wlen;
    status rc;

    if (!json_is_object(res))
        return fail(v, ST_INVALID, "structure", "expected a resource (JSON object), got %s",
                    json_kind_name(res));
    rt = json_object_get(res, "resourceType");
    if (!rt || !json_is_string(rt)) {
        where_push(v, "resourceType", 12, 1);
        return fail(v, ST_INVALID, "invalid",
                    "missing resourceType (a JSON string naming the resource type)");
    }
    tname = json_string_value(rt);
    t = fhir_resource_type(tname);
    if (!t || strlen(tname) != json_string_length(rt)) {
        where_push(v, "resourceType", 12, 1);
        return fail(v, ST_INVALID, "invalid", "unknown resourceType \"%.64s\": not an R4 resource type",
                    tname);
    }
    if (expected_type && strcmp(expected_type, tname) != 0) {
        where_push(v, "resourceType", 12, 1);
        return fail(v, ST_INVALID, "invalid", "resourceType is %s, expected %.64s", tname, expected_type);
    }
    if (v->wlen == 0) where_push(v, t->name, strlen(t->name), 0);
    sc = scope_of_type((int)(t - fhir_types));
    rc = validate_object(v, res, &sc, 1);
    if (rc == ST_OK) where_pop(v, saved);
    return rc;
}

status fhir_validate(json_t *res, const char *expected_type, err *e) {
    vctx v;
    err local;
    status rc;
    pthread_once(&idx_once, build_index);
    v.e = e ? e : &local;
    v.depth = 0;
    v.wlen = 0;
    v.where[0] = '\0';
    if (!idx.ok) return err_set(e, ST_NOMEM, "exception", NULL, "validator tables could not be built");
    rc = validate_resource(&v, res, expected_type);
    if (rc == ST_OK && e) err_clear(e);
    return rc;
}
