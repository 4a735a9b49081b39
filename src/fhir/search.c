/*
 * search.c — parsing a FHIR search (query-string parameters) into a
 * search_query (search.h), checked against the model's search parameters.
 *
 * Supported: every indexed parameter of the type (token, string, date,
 * reference, number, quantity, uri), _id, _lastUpdated; modifiers :exact
 * :contains (string), :missing (all), :not (token), :[Type] (reference),
 * :below :above (uri); prefixes eq ne gt lt ge le sa eb ap (date, number,
 * quantity); comma = OR; repeated parameter = AND; chained parameters
 * (patient.identifier=..., subject:Patient.name=...); _count, _offset,
 * _sort, _include, _revinclude, _summary=count, _total, _format=json.
 * Escapes in values: \, \| \$ \\ as the specification defines.
 */
#include "search.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "fhirdate.h"
#include "validate.h"

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static char *url_decode(arena *a, const char *s, size_t n) {
    char *out = arena_alloc(a, n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') out[j++] = ' ';
        else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else out[j++] = s[i];
    }
    out[j] = 0;
    return out;
}

int search_split_query(arena *a, const char *qs, size_t len, search_param_kv **out) {
    int cap = 8, n = 0;
    search_param_kv *v = arena_alloc(a, (size_t)cap * sizeof *v);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && qs[j] != '&') j++;
        if (j > i) {
            size_t eq = i;
            while (eq < j && qs[eq] != '=') eq++;
            if (n == cap) {
                search_param_kv *nv = arena_alloc(a, (size_t)cap * 2 * sizeof *nv);
                memcpy(nv, v, (size_t)cap * sizeof *nv);
                v = nv;
                cap *= 2;
            }
            v[n].name = url_decode(a, qs + i, eq - i);
            v[n].value = eq < j ? url_decode(a, qs + eq + 1, j - eq - 1) : "";
            n++;
        }
        i = j + 1;
    }
    *out = v;
    return n;
}

/* Split `s` on unescaped `sep`, unescaping \, \| \$ \\ in the parts. */
static int split_escaped(arena *a, const char *s, char sep, char ***parts) {
    int cap = 4, n = 0;
    char **v = arena_alloc(a, (size_t)cap * sizeof *v);
    size_t len = strlen(s);
    char *cur = arena_alloc(a, len + 1);
    size_t j = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == sep) {
            cur[j] = 0;
            if (n == cap) {
                char **nv = arena_alloc(a, (size_t)cap * 2 * sizeof *nv);
                memcpy(nv, v, (size_t)cap * sizeof *nv);
                v = nv;
                cap *= 2;
            }
            v[n++] = cur;
            cur = arena_alloc(a, len + 1);
            j = 0;
            continue;
        }
        if (s[i] == '\\' && i + 1 < len && strchr(",|$\\", s[i + 1])) {
            cur[j++] = s[++i];
            continue;
        }
        cur[j++] = s[i];
    }
    *parts = v;
    return n;
}

/* Find the first unescaped `c` in s, or NULL. */
static const char *find_unescaped(const char *s, char c) {
    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            continue;
        }
        if (*s == c) return s;
    }
    return NULL;
}

static char *unescape(arena *a, const char *s, size_t n) {
    char *out = arena_alloc(a, n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) i++;
        out[j++] = s[i];
    }
    out[j] = 0;
    return out;
}

static const struct {
    const char *code;
    search_prefix p;
} prefixes[] = {{"eq", PFX_EQ}, {"ne", PFX_NE}, {"gt", PFX_GT}, {"lt", PFX_LT}, {"ge", PFX_GE},
                {"le", PFX_LE}, {"sa", PFX_SA}, {"eb", PFX_EB}, {"ap", PFX_AP}};

static const char *take_prefix(const char *v, search_prefix *p) {
    *p = PFX_EQ;
    if (islower((unsigned char)v[0]) && islower((unsigned char)v[1])) {
        for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
            if (v[0] == prefixes[i].code[0] && v[1] == prefixes[i].code[1]) {
                *p = prefixes[i].p;
                return v + 2;
            }
        }
    }
    return v;
}

/* A decimal as written, with the range its precision implies: "100" is
 * [99.5, 100.5], "100.0" is [99.95, 100.05], "1e2" is [50, 150]. */
/* FHIR decimal syntax: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int decimal_syntax(const char *s) {
    if (*s == '-') s++;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9') while (isdigit((unsigned char)*s)) s++;
    else return 0;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s)) return 0;
        while (isdigit((unsigned char)*s)) s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!isdigit((unsigned char)*s)) return 0;
        while (isdigit((unsigned char)*s)) s++;
    }
    return *s == 0;
}

static int parse_number(const char *s, double *v, double *lo, double *hi) {
    char *end;
    if (!decimal_syntax(s)) return -1;
    *v = strtod(s, &end);
    if (*end || !isfinite(*v)) return -1;
    int decimals = 0;
    const char *dot = strchr(s, '.');
    const char *exp = strpbrk(s, "eE");
    if (dot && (!exp || dot < exp)) decimals = (int)((exp ? exp : s + strlen(s)) - dot - 1);
    int e10 = exp ? atoi(exp + 1) : 0;
    double half = 0.5 * pow(10.0, (double)(e10 - decimals));
    *lo = *v - half;
    *hi = *v + half;
    return 0;
}

static status parse_value(arena *a, const search_clause *c, const char *raw, search_value *out, const char *where,
                          err *e) {
    memset(out, 0, sizeof *out);
    if (c->modifier == MOD_MISSING) return ST_OK;
    if (c->target == ST_ID) {
        out->text = out->code = unescape(a, raw, strlen(raw));
        if (!fhir_id_valid(out->code)) return err_set(e, ST_INVALID, "value", where, "'%s' is not a valid id", raw);
        return ST_OK;
    }
    switch (c->type) {
    case SP_TOKEN: {
        const char *bar = find_unescaped(raw, '|');
        if (bar) {
            out->system = unescape(a, raw, (size_t)(bar - raw));
            out->code = *(bar + 1) ? unescape(a, bar + 1, strlen(bar + 1)) : NULL;
        } else {
            out->system = NULL;
            out->code = unescape(a, raw, strlen(raw));
        }
        if ((!out->code || !*out->code) && !bar)
            return err_set(e, ST_INVALID, "invalid", where, "empty token value");
        if (c->target == ST_ID) out->text = out->code;
        return ST_OK;
    }
    case SP_STRING:
    case SP_URI:
        out->text = unescape(a, raw, strlen(raw));
        if (!*out->text) return err_set(e, ST_INVALID, "invalid", where, "empty value");
        return ST_OK;
    case SP_DATE: {
        const char *v = take_prefix(raw, &out->prefix);
        if (fhir_date_range(v, strlen(v), &out->lo, &out->hi) != 0)
            return err_set(e, ST_INVALID, "value", where,
                           "'%s' is not a date: expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]", raw);
        out->lo_us = out->lo * 1000000;
        out->hi_us = out->hi * 1000000 + 999999;
        /* a fraction of a second narrows the range to its own precision:
         * "...:30.25" is [30.250000, 30.259999] */
        const char *dot = strchr(v, '.');
        if (dot && strchr(v, 'T')) {
            int64_t frac = 0, unit = 1000000;
            int digits = 0;
            for (const char *p = dot + 1; *p >= '0' && *p <= '9'; p++) {
                if (digits < 6) {
                    unit /= 10;
                    frac += (*p - '0') * unit;
                }
                digits++;
            }
            if (digits > 0) {
                out->lo_us = out->lo * 1000000 + frac;
                out->hi_us = out->lo_us + (digits >= 6 ? 1 : unit) - 1;
            }
        }
        return ST_OK;
    }
    case SP_NUMBER: {
        const char *v = take_prefix(raw, &out->prefix);
        if (parse_number(v, &out->num, &out->nlo, &out->nhi) != 0)
            return err_set(e, ST_INVALID, "value", where, "'%s' is not a number", raw);
        return ST_OK;
    }
    case SP_QUANTITY: {
        const char *v = take_prefix(raw, &out->prefix);
        char **parts;
        int n = split_escaped(a, v, '|', &parts);
        if (n != 1 && n != 3)
            return err_set(e, ST_INVALID, "value", where, "'%s' is not a quantity: expected number[|system|code]", raw);
        if (parse_number(parts[0], &out->num, &out->nlo, &out->nhi) != 0)
            return err_set(e, ST_INVALID, "value", where, "'%s' is not a quantity: bad number", raw);
        if (n == 3) {
            out->system = *parts[1] ? parts[1] : NULL;
            out->code = *parts[2] ? parts[2] : NULL;
        }
        return ST_OK;
    }
    case SP_REFERENCE: {
        const char *v = unescape(a, raw, strlen(raw));
        if (!*v) return err_set(e, ST_INVALID, "invalid", where, "empty reference");
        if (strstr(v, "://") || strncmp(v, "urn:", 4) == 0) {
            out->ref_url = v;
            /* an absolute URL ending in Type/id also matches local references */
            const char *last = strrchr(v, '/');
            if (last && last > v) {
                const char *p = last - 1;
                while (p > v && *p != '/') p--;
                if (*p == '/') {
                    char *t = arena_strndup(a, p + 1, (size_t)(last - p - 1));
                    if (fhir_resource_type(t)) {
                        out->ref_type = t;
                        out->ref_id = last + 1;
                    }
                }
            }
            return ST_OK;
        }
        const char *slash = strchr(v, '/');
        if (slash) {
            out->ref_type = arena_strndup(a, v, (size_t)(slash - v));
            out->ref_id = slash + 1;
            if (!fhir_resource_type(out->ref_type))
                return err_set(e, ST_INVALID, "value", where, "'%s' is not a resource type", out->ref_type);
            const char *hist = strstr(out->ref_id, "/_history/");
            if (hist) out->ref_id = arena_strndup(a, out->ref_id, (size_t)(hist - out->ref_id));
        } else {
            out->ref_id = v;
        }
        if (c->type_modifier) {
            if (out->ref_type && strcmp(out->ref_type, c->type_modifier) != 0)
                return err_set(e, ST_INVALID, "value", where, "reference type %s contradicts the modifier :%s",
                               out->ref_type, c->type_modifier);
            out->ref_type = c->type_modifier;
        }
        return ST_OK;
    }
    default: return err_set(e, ST_UNSUPPORTED, "not-supported", where, "search parameter type not supported");
    }
}

static int target_allowed(const fhir_search_param *sp, const char *type) {
    if (!sp->targets) return 1;
    size_t n = strlen(type);
    for (const char *p = sp->targets; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, type, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

/* Parse one "name[:modifier][.chain]" = value on `rtype` into a clause. */
static status parse_clause(arena *a, const char *rtype, const char *name, const char *value, search_clause *c,
                           int depth, err *e) {
    memset(c, 0, sizeof *c);
    const char *dot = strchr(name, '.');
    size_t head_len = dot ? (size_t)(dot - name) : strlen(name);
    char *head = arena_strndup(a, name, head_len);
    char *colon = strchr(head, ':');
    char *mod = NULL;
    if (colon) {
        *colon = 0;
        mod = colon + 1;
    }
    if (strcmp(head, "_id") == 0) {
        c->target = ST_ID;
        c->type = SP_TOKEN;
    } else if (strcmp(head, "_lastUpdated") == 0) {
        c->target = ST_LASTUPDATED;
        c->type = SP_DATE;
    } else {
        c->sp = fhir_search_param_find(rtype, head);
        if (!c->sp || !c->sp->path || c->sp->type == SP_COMPOSITE || c->sp->type == SP_SPECIAL) {
            if (c->sp)
                return err_set(e, ST_INVALID, "not-supported", name,
                               "search parameter %s of %s is not supported (composite/special)", head, rtype);
            return err_set(e, ST_INVALID, "not-found", name, "unknown search parameter '%s' for %s", head, rtype);
        }
        c->type = c->sp->type;
    }
    if (mod) {
        if (strcmp(mod, "missing") == 0) {
            c->modifier = MOD_MISSING;
            if (strcmp(value, "true") == 0) c->missing = 1;
            else if (strcmp(value, "false") == 0) c->missing = 0;
            else return err_set(e, ST_INVALID, "value", name, ":missing takes true or false, not '%s'", value);
        } else if (strcmp(mod, "exact") == 0 && c->type == SP_STRING) {
            c->modifier = MOD_EXACT;
        } else if (strcmp(mod, "contains") == 0 && c->type == SP_STRING) {
            c->modifier = MOD_CONTAINS;
        } else if (strcmp(mod, "not") == 0 && c->type == SP_TOKEN) {
            c->modifier = MOD_NOT;
        } else if ((strcmp(mod, "below") == 0 || strcmp(mod, "above") == 0) && c->type == SP_URI) {
            c->modifier = mod[0] == 'b' ? MOD_BELOW : MOD_ABOVE;
        } else if (c->type == SP_REFERENCE && fhir_resource_type(mod)) {
            if (!target_allowed(c->sp, mod))
                return err_set(e, ST_INVALID, "value", name, "%s cannot refer to %s", head, mod);
            c->modifier = MOD_TYPE;
            c->type_modifier = arena_strdup(a, mod);
        } else {
            return err_set(e, ST_INVALID, "not-supported", name, "modifier :%s is not supported on %s (%s)", mod, head,
                           sp_type_name(c->type));
        }
    }
    if (dot) {
        if (c->type != SP_REFERENCE)
            return err_set(e, ST_INVALID, "invalid", name, "only reference parameters can be chained");
        if (depth >= 3) return err_set(e, ST_INVALID, "too-costly", name, "chains deeper than 3 are not supported");
        /* the chained parameter's target type: explicit :Type, else the
         * parameter's only target, else the one target type that has it */
        const char *ttype = c->type_modifier;
        const char *sub = dot + 1;
        char *subhead = arena_strdup(a, sub);
        subhead[strcspn(subhead, ":.")] = 0;
        if (!ttype && c->sp->targets) {
            int found = 0;
            for (const char *p = c->sp->targets; *p;) {
                const char *bar = strchr(p, '|');
                size_t len = bar ? (size_t)(bar - p) : strlen(p);
                char *t = arena_strndup(a, p, len);
                if (fhir_resource_type(t) && fhir_search_param_find(t, subhead)) {
                    if (found++ == 0) ttype = t;
                }
                if (!bar) break;
                p = bar + 1;
            }
            if (found > 1)
                return err_set(e, ST_INVALID, "invalid", name,
                               "chain is ambiguous: %s may refer to several types with '%s'; add :Type", head, subhead);
        }
        if (!ttype) return err_set(e, ST_INVALID, "invalid", name, "no target type of %s has '%s'", head, subhead);
        search_clause *chained = arena_alloc(a, sizeof *chained);
        status rc = parse_clause(a, ttype, sub, value, chained, depth + 1, e);
        if (rc != ST_OK) {
            /* name the parameter as the client wrote it */
            if (depth == 0) snprintf(e->where, sizeof e->where, "%s", name);
            return rc;
        }
        c->values = arena_zalloc(a, sizeof *c->values);
        c->n_values = 1;
        c->values[0].chain = chained;
        c->values[0].chain_type = ttype;
        c->modifier = MOD_NONE;
        return ST_OK;
    }
    if (c->modifier == MOD_MISSING) {
        c->n_values = 0;
        return ST_OK;
    }
    /* one value per unescaped comma; each is parsed from the raw text, which
     * keeps the other escapes (\| for tokens) for parse_value */
    int cap = 1;
    for (const char *p = find_unescaped(value, ','); p; p = find_unescaped(p + 1, ',')) cap++;
    c->values = arena_zalloc(a, (size_t)cap * sizeof *c->values);
    const char *p = value;
    int k = 0;
    for (;;) {
        const char *comma = find_unescaped(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *raw = arena_strndup(a, p, len);
        if (k < cap) {
            status rc = parse_value(a, c, raw, &c->values[k], name, e);
            if (rc != ST_OK) return rc;
            k++;
        }
        if (!comma) break;
        p = comma + 1;
    }
    c->n_values = k;
    if (k == 0) return err_set(e, ST_INVALID, "invalid", name, "no value");
    return ST_OK;
}

static int parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1000000000) return -1;
    *out = (int)v;
    return 0;
}

static void canon_add(buf *b, const char *name, const char *value) {
    static const char hex[] = "0123456789ABCDEF";
    if (b->len) buf_putc(b, '&');
    for (int part = 0; part < 2; part++) {
        const char *s = part ? value : name;
        if (part) buf_putc(b, '=');
        for (; *s; s++) {
            unsigned char ch = (unsigned char)*s;
            if (isalnum(ch) || strchr("-._~:|/,", ch)) buf_putc(b, (char)ch);
            else {
                buf_putc(b, '%');
                buf_putc(b, hex[ch >> 4]);
                buf_putc(b, hex[ch & 15]);
            }
        }
    }
}

status search_parse(arena *a, const char *rtype, const search_param_kv *params, int n, int lenient, search_query *q,
                    err *e) {
    status rc = ST_OK;
    memset(q, 0, sizeof *q);
    q->type = rtype;
    q->count = SEARCH_DEFAULT_COUNT;
    q->clauses = arena_zalloc(a, (size_t)(n + 1) * sizeof *q->clauses);
    q->includes = arena_zalloc(a, (size_t)(n + 1) * sizeof *q->includes);
    buf canon = {0}, ignored = {0};
    for (int i = 0; i < n; i++) {
        const char *name = params[i].name, *value = params[i].value;
        if (strcmp(name, "_count") == 0) {
            if (parse_int(value, &q->count) != 0) {
                rc = err_set(e, ST_INVALID, "value", name, "_count must be a non-negative integer");
                goto out;
            }
            if (q->count > SEARCH_MAX_COUNT) q->count = SEARCH_MAX_COUNT;
            continue;
        }
        if (strcmp(name, "_offset") == 0) {
            if (parse_int(value, &q->offset) != 0) {
                rc = err_set(e, ST_INVALID, "value", name, "_offset must be a non-negative integer");
                goto out;
            }
            continue;
        }
        if (strcmp(name, "_format") == 0 || strcmp(name, "_pretty") == 0) {
            if (strcmp(name, "_format") == 0 && !strstr(value, "json")) {
                rc = err_set(e, ST_UNSUPPORTED, "not-supported", name, "only JSON is supported");
                goto out;
            }
            continue;
        }
        if (strcmp(name, "_total") == 0) {
            if (strcmp(value, "accurate") == 0) q->total_accurate = 1;
            else if (strcmp(value, "none") && strcmp(value, "estimate")) {
                rc = err_set(e, ST_INVALID, "value", name, "_total must be none, estimate or accurate");
                goto out;
            }
            canon_add(&canon, name, value);
            continue;
        }
        if (strcmp(name, "_summary") == 0) {
            if (strcmp(value, "count") == 0) q->summary = SUMMARY_COUNT;
            else if (strcmp(value, "false") == 0) q->summary = SUMMARY_NONE;
            else if (lenient) {
                if (ignored.len) buf_putc(&ignored, ',');
                buf_printf(&ignored, "_summary=%s", value);
                continue;
            } else {
                rc = err_set(e, ST_INVALID, "not-supported", name, "_summary=%s is not supported (count, false are)",
                             value);
                goto out;
            }
            canon_add(&canon, name, value);
            continue;
        }
        if (strcmp(name, "_sort") == 0) {
            char **parts;
            int np = split_escaped(a, value, ',', &parts);
            q->sorts = arena_zalloc(a, (size_t)np * sizeof *q->sorts);
            q->n_sorts = 0;
            for (int j = 0; j < np; j++) {
                const char *s = parts[j];
                search_sort *so = &q->sorts[q->n_sorts];
                if (*s == '-') {
                    so->descending = 1;
                    s++;
                }
                if (strcmp(s, "_id") == 0) so->target = ST_ID;
                else if (strcmp(s, "_lastUpdated") == 0) so->target = ST_LASTUPDATED;
                else {
                    so->target = ST_PARAM;
                    so->sp = fhir_search_param_find(rtype, s);
                    if (!so->sp || !so->sp->path || so->sp->type == SP_COMPOSITE || so->sp->type == SP_SPECIAL ||
                        so->sp->type == SP_REFERENCE) {
                        rc = err_set(e, ST_INVALID, "not-supported", name, "cannot sort %s by '%s'", rtype, s);
                        goto out;
                    }
                }
                q->n_sorts++;
            }
            canon_add(&canon, name, value);
            continue;
        }
        if (strcmp(name, "_include") == 0 || strcmp(name, "_revinclude") == 0) {
            int rev = name[1] == 'r';
            char **parts;
            int np = split_escaped(a, value, ':', &parts);
            if (np < 2 || np > 3) {
                rc = err_set(e, ST_INVALID, "value", name, "expected SourceType:param[:TargetType], got '%s'", value);
                goto out;
            }
            search_include *inc = &q->includes[q->n_includes];
            inc->reverse = rev;
            inc->source_type = parts[0];
            inc->target_type = np == 3 ? parts[2] : NULL;
            if (!fhir_resource_type(parts[0]) || (!rev && strcmp(parts[0], rtype) != 0)) {
                rc = err_set(e, ST_INVALID, "value", name, "%s source type must be %s", name,
                             rev ? "a resource type" : rtype);
                goto out;
            }
            inc->sp = fhir_search_param_find(parts[0], parts[1]);
            if (!inc->sp || inc->sp->type != SP_REFERENCE || !inc->sp->path) {
                rc = err_set(e, ST_INVALID, "value", name, "%s has no reference parameter '%s'", parts[0], parts[1]);
                goto out;
            }
            if (inc->target_type && (!fhir_resource_type(inc->target_type) ||
                                     !target_allowed(inc->sp, inc->target_type) ||
                                     (rev && strcmp(inc->target_type, rtype) != 0))) {
                rc = err_set(e, ST_INVALID, "value", name, "%s:%s cannot refer to '%s'", parts[0], parts[1],
                             inc->target_type);
                goto out;
            }
            if (rev && !target_allowed(inc->sp, rtype)) {
                rc = err_set(e, ST_INVALID, "value", name, "%s:%s cannot refer to %s", parts[0], parts[1], rtype);
                goto out;
            }
            q->n_includes++;
            canon_add(&canon, name, value);
            continue;
        }
        search_clause c;
        rc = parse_clause(a, rtype, name, value, &c, 0, e);
        if (rc != ST_OK) {
            if (lenient && (strcmp(e->issue, "not-found") == 0 || strcmp(e->issue, "not-supported") == 0)) {
                if (ignored.len) buf_putc(&ignored, ',');
                buf_puts(&ignored, name);
                rc = ST_OK;
                err_clear(e);
                continue;
            }
            goto out;
        }
        q->clauses[q->n_clauses++] = c;
        canon_add(&canon, name, value);
    }
    q->canonical = arena_strdup(a, canon.p ? canon.p : "");
    q->ignored = ignored.len ? arena_strdup(a, ignored.p) : NULL;
out:
    buf_free(&canon);
    buf_free(&ignored);
    return rc;
}
