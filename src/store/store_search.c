/*
 * store_search.c — turns a parsed FHIR search (search.h) into one SQL query
 * over the resource table and the typed index tables, runs it, and adds
 * _include/_revinclude results.
 *
 * Shape of the query:
 *   SELECT ... FROM resource r
 *   WHERE r.rtype = ? AND r.deleted = 0 [AND r.pkey = ?]
 *     AND r.rkey IN (SELECT rkey FROM idx_<kind> WHERE param = ? AND ...)
 *     ...                                      -- one per clause, values ORed
 *   ORDER BY ... LIMIT count+1 OFFSET offset   -- +1 tells if there is more
 *
 * Patient fast path: when a clause names one patient through the type's
 * primary compartment parameter (Observation?patient=X, subject=Patient/X),
 * the patient's key is looked up first; that clause then lists the
 * patient's resources from idx_ref_patient (pkey leads), and every other
 * clause tests each listed row by primary key (rkey, param, ...) inside
 * that list — only that patient's index rows are read, only resources that
 * match everything are read from the resource table, and r.pkey = ? is the
 * predicate that routes a query to one shard when the schema is
 * distributed by patient. Without a patient, the narrowest of several
 * indexed clauses lists its matches the same way (driver_clause,
 * listed_where).
 *
 * Date semantics: the stored value and the search value are both ranges
 * [lo, hi]; eq = stored within search, ne = not eq, gt/lt/ge/le compare the
 * ends as the FHIR specification describes, sa/eb = strictly after/before,
 * ap = overlapping. Number and quantity: eq = the stored value lies in the
 * search value's precision range.
 *
 * All values travel as bound parameters; identifiers in the SQL text come
 * only from this file.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"
#include "../fhir/index.h"
#include "store_int.h"

typedef struct bindv {
    enum { B_INT, B_TEXT, B_REAL } kind;
    int64_t i;
    double d;
    const char *t;
} bindv;

typedef struct qb {
    buf sql;
    bindv *b;
    int n, cap;
    arena *a;
    store *s;
    int aliases;
    const store_scope *scope; /* applied to the searched rows and to every chained target */
} qb;

static void bind_push(qb *q, bindv v) {
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 32;
        bindv *nb = realloc(q->b, (size_t)q->cap * sizeof *nb);
        if (!nb) abort();
        q->b = nb;
    }
    q->b[q->n++] = v;
}
static void bi(qb *q, int64_t v) {
    bind_push(q, (bindv){.kind = B_INT, .i = v});
}
static void bt(qb *q, const char *t) {
    bind_push(q, (bindv){.kind = B_TEXT, .t = t});
}
static void bd(qb *q, double d) {
    bind_push(q, (bindv){.kind = B_REAL, .d = d});
}

/* " AND <the access scope's row condition on alias>" (store_scope.c) */
static void scope_cond(qb *q, const store_scope *sc, const char *alias) {
    if (!sc || !sc->restricted) return;
    store_binds b = {0};
    buf_puts(&q->sql, " AND ");
    store_scope_row_sql(sc, alias, &q->sql, &b);
    for (int i = 0; i < b.n; i++) {
        if (b.v[i].kind == 'i')
            bi(q, b.v[i].i);
        else
            bt(q, b.v[i].t);
    }
}
static void sql(qb *q, const char *s) {
    buf_puts(&q->sql, s);
}

static void apply_binds(const db_driver *drv, db_stmt *st, const qb *q) {
    for (int i = 0; i < q->n; i++) {
        switch (q->b[i].kind) {
        case B_INT: drv->bind_int(st, i + 1, q->b[i].i); break;
        case B_TEXT: drv->bind_text(st, i + 1, q->b[i].t, -1); break;
        case B_REAL: drv->bind_double(st, i + 1, q->b[i].d); break;
        }
    }
}

static const char *table_of(sp_type t) {
    switch (t) {
    case SP_TOKEN:
    case SP_URI: return "idx_token";
    case SP_STRING: return "idx_string";
    case SP_DATE: return "idx_date";
    case SP_REFERENCE: return "idx_ref";
    case SP_NUMBER: return "idx_number";
    case SP_QUANTITY: return "idx_quantity";
    default: return NULL;
    }
}

/* Largest code point in UTF-8: every string that starts with `p` sorts
 * below p || U+10FFFF, so [p, p||max) is the prefix range. */
static const char utf8_max[] = "\xf4\x8f\xbf\xbf";

static char *like_escape(arena *a, const char *s) {
    size_t n = strlen(s);
    char *out = arena_alloc(a, 2 * n + 3);
    size_t j = 0;
    out[j++] = '%';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' || s[i] == '_' || s[i] == '\\') out[j++] = '\\';
        out[j++] = s[i];
    }
    out[j++] = '%';
    out[j] = 0;
    return out;
}

/* Range comparison of a stored [lo, hi] (columns) against a search value. */
static void range_cond(qb *q, search_prefix p, const char *lo, const char *hi, int is_int, int64_t ilo,
                       int64_t ihi, double dlo, double dhi) {
#define BLO() (is_int ? bi(q, ilo) : bd(q, dlo))
#define BHI() (is_int ? bi(q, ihi) : bd(q, dhi))
    switch (p) {
    case PFX_EQ:
        /* lo <= search hi follows from the other two (lo <= hi), but said
         * outright it bounds the (param, lo) index scan from above too */
        buf_printf(&q->sql, "%s >= ? AND %s <= ? AND %s <= ?", lo, lo, hi);
        BLO();
        BHI();
        BHI();
        break;
    case PFX_NE:
        buf_printf(&q->sql, "(%s < ? OR %s > ?)", lo, hi);
        BLO();
        BHI();
        break;
    case PFX_GT:
        buf_printf(&q->sql, "%s > ?", hi);
        BHI();
        break;
    case PFX_LT:
        buf_printf(&q->sql, "%s < ?", lo);
        BLO();
        break;
    case PFX_GE:
        buf_printf(&q->sql, "%s >= ?", hi);
        BLO();
        break;
    case PFX_LE:
        buf_printf(&q->sql, "%s <= ?", lo);
        BHI();
        break;
    case PFX_SA:
        buf_printf(&q->sql, "%s > ?", lo);
        BHI();
        break;
    case PFX_EB:
        buf_printf(&q->sql, "%s < ?", hi);
        BLO();
        break;
    case PFX_AP:
        buf_printf(&q->sql, "%s <= ? AND %s >= ?", lo, hi);
        BHI();
        BLO();
        break;
    }
#undef BLO
#undef BHI
}

/* Number/quantity: compare the stored value with the search value, the
 * search precision range giving equality. */
static void number_cond(qb *q, const search_value *v) {
    switch (v->prefix) {
    case PFX_EQ:
        sql(q, "value >= ? AND value < ?");
        bd(q, v->nlo);
        bd(q, v->nhi);
        break;
    case PFX_NE:
        sql(q, "(value < ? OR value >= ?)");
        bd(q, v->nlo);
        bd(q, v->nhi);
        break;
    case PFX_GT:
    case PFX_SA:
        sql(q, "value > ?");
        bd(q, v->num);
        break;
    case PFX_LT:
    case PFX_EB:
        sql(q, "value < ?");
        bd(q, v->num);
        break;
    case PFX_GE:
        sql(q, "value >= ?");
        bd(q, v->num);
        break;
    case PFX_LE:
        sql(q, "value <= ?");
        bd(q, v->num);
        break;
    case PFX_AP: {
        double d = fabs(v->num) * 0.1;
        sql(q, "value >= ? AND value <= ?");
        bd(q, v->num - d);
        bd(q, v->num + d);
        break;
    }
    }
}

static status clause_sql(qb *q, const char *alias, const search_clause *c, int64_t pkey, int probe, err *e);

/* The condition on one index-table row for one value (no leading AND). */
static status value_cond(qb *q, const search_clause *c, const search_value *v, err *e) {
    switch (c->type) {
    case SP_TOKEN:
        if (v->code && v->system) {
            sql(q, "code = ? AND system = ?");
            bt(q, v->code);
            bt(q, v->system);
        } else if (v->code) {
            sql(q, "code = ?");
            bt(q, v->code);
        } else {
            sql(q, "system = ?");
            bt(q, v->system ? v->system : "");
        }
        return ST_OK;
    case SP_URI:
        if (c->modifier == MOD_BELOW) {
            sql(q, "code >= ? AND code < ?");
            bt(q, v->text);
            bt(q, arena_printf(q->a, "%s%s", v->text, utf8_max));
        } else if (c->modifier == MOD_ABOVE) {
            sql(q, "? LIKE (code || '%')");
            bt(q, v->text);
        } else {
            sql(q, "code = ?");
            bt(q, v->text);
        }
        return ST_OK;
    case SP_STRING:
        if (c->modifier == MOD_EXACT) {
            sql(q, "exact = ?");
            bt(q, v->text);
        } else if (c->modifier == MOD_CONTAINS) {
            sql(q, "norm LIKE ? ESCAPE '\\'");
            bt(q, like_escape(q->a, fhir_string_normalize(q->a, v->text)));
        } else {
            char *norm = fhir_string_normalize(q->a, v->text);
            sql(q, "norm >= ? AND norm < ?");
            bt(q, norm);
            bt(q, arena_printf(q->a, "%s%s", norm, utf8_max));
        }
        return ST_OK;
    case SP_DATE: range_cond(q, v->prefix, "lo", "hi", 1, v->lo, v->hi, 0, 0); return ST_OK;
    case SP_NUMBER: number_cond(q, v); return ST_OK;
    case SP_QUANTITY:
        number_cond(q, v);
        if (v->system) {
            sql(q, " AND system = ?");
            bt(q, v->system);
        }
        if (v->code) {
            sql(q, " AND code = ?");
            bt(q, v->code);
        }
        return ST_OK;
    case SP_REFERENCE:
        if (v->ref_url && v->ref_id) {
            sql(q, "(url = ? OR (target_type = ? AND target_id = ?))");
            bt(q, v->ref_url);
            bt(q, v->ref_type);
            bt(q, v->ref_id);
        } else if (v->ref_url) {
            sql(q, "url = ?");
            bt(q, v->ref_url);
        } else {
            sql(q, "target_id = ?");
            bt(q, v->ref_id);
            if (v->ref_type) {
                sql(q, " AND target_type = ?");
                bt(q, v->ref_type);
            }
        }
        return ST_OK;
    default:
        return err_set(e, ST_UNSUPPORTED, "not-supported", c->sp ? c->sp->code : NULL,
                       "search parameter type not supported");
    }
}

/* The clause's values, ORed, in parentheses (no leading AND). */
static status values_cond(qb *q, const search_clause *c, err *e) {
    sql(q, "(");
    for (int i = 0; i < c->n_values; i++) {
        if (i) sql(q, " OR ");
        sql(q, "(");
        status rc = value_cond(q, c, &c->values[i], e);
        if (rc != ST_OK) return rc;
        sql(q, ")");
    }
    sql(q, ")");
    return ST_OK;
}

/* `probe`: test each candidate row by primary key (rkey, param, ...)
 * rather than list the clause's matches (see driver_clause). */
static status clause_sql(qb *q, const char *alias, const search_clause *c, int64_t pkey, int probe, err *e) {
    status rc = ST_OK;
    if (c->modifier == MOD_MISSING && c->target != ST_PARAM) {
        /* every resource has an id and a lastUpdated */
        if (c->missing) sql(q, " AND 1 = 0");
        return ST_OK;
    }
    if (c->target == ST_ID) {
        buf_printf(&q->sql, " AND %s.id %s (", alias, c->modifier == MOD_NOT ? "NOT IN" : "IN");
        for (int i = 0; i < c->n_values; i++) {
            sql(q, i ? ", ?" : "?");
            bt(q, c->values[i].code);
        }
        sql(q, ")");
        return ST_OK;
    }
    if (c->target == ST_LASTUPDATED) {
        sql(q, " AND (");
        for (int i = 0; i < c->n_values; i++) {
            const search_value *v = &c->values[i];
            char col[48];
            snprintf(col, sizeof col, "%s.updated", alias);
            if (i) sql(q, " OR ");
            sql(q, "(");
            range_cond(q, v->prefix, col, col, 1, v->lo_us, v->hi_us, 0, 0);
            sql(q, ")");
        }
        sql(q, ")");
        return ST_OK;
    }
    const char *table = table_of(c->type);
    int64_t param = store_param_id(q->s, c->sp);
    if (!table || !param)
        return err_set(e, ST_INVALID, "not-supported", c->sp->code, "search parameter %s is not indexed",
                       c->sp->code);
    if (c->modifier == MOD_MISSING) {
        buf_printf(&q->sql, " AND %s.rkey %s (SELECT rkey FROM %s WHERE param = ?)", alias,
                   c->missing ? "NOT IN" : "IN", table);
        bi(q, param);
        return ST_OK;
    }
    if (c->n_values == 1 && c->values[0].chain) {
        const search_value *v = &c->values[0];
        int n = ++q->aliases;
        char t[16];
        snprintf(t, sizeof t, "t%d", n);
        buf_printf(
            &q->sql,
            " AND %s.rkey IN (SELECT x%d.rkey FROM idx_ref x%d JOIN resource %s ON %s.rtype = x%d.target_type"
            " AND %s.id = x%d.target_id WHERE x%d.param = ? AND x%d.target_type = ? AND %s.deleted = 0",
            alias, n, n, t, t, n, t, n, n, n, t);
        bi(q, param);
        bt(q, v->chain_type);
        scope_cond(q, q->scope, t); /* a chain must not test what the user may not see */
        rc = clause_sql(q, t, v->chain, 0, 0, e);
        sql(q, ")");
        return rc;
    }
    if ((pkey && c->type != SP_REFERENCE) || probe) {
        /* one patient's resources, or the driving clause's candidates: test
         * each by primary key (rkey, param) */
        buf_printf(&q->sql, " AND %sEXISTS (SELECT 1 FROM %s x WHERE x.rkey = %s.rkey AND ",
                   c->modifier == MOD_NOT ? "NOT " : "", table, alias);
    } else {
        buf_printf(&q->sql, " AND %s.rkey %s (SELECT rkey FROM %s WHERE ", alias,
                   c->modifier == MOD_NOT ? "NOT IN" : "IN", table);
        if (pkey && c->modifier != MOD_NOT) {
            sql(q, "pkey = ? AND ");
            bi(q, pkey);
        }
    }
    sql(q, "param = ? AND ");
    bi(q, param);
    rc = values_cond(q, c, e);
    sql(q, ")");
    return rc;
}

/* Does the clause become `r.rkey [NOT] IN (SELECT rkey FROM idx_...)`? */
static int listed_clause(const search_clause *c) {
    if (c->target != ST_PARAM || c->modifier == MOD_MISSING) return 0;
    return !(c->n_values == 1 && c->values[0].chain);
}

/* How narrow a clause's list of matches usually is (higher: narrower); -1:
 * it cannot drive (a NOT list). A guess from the kind of value, not from the
 * data: a reference to one resource, an exact code, an exact string or a
 * date's one day name few rows; a name prefix, a date range or a number
 * may name a large part of the type. */
static int clause_narrowness(const search_clause *c) {
    if (c->modifier == MOD_NOT) return -1;
    int best = 0;
    for (int i = 0; i < c->n_values; i++) {
        const search_value *v = &c->values[i];
        int n = 1;
        switch (c->type) {
        case SP_REFERENCE: n = v->ref_id || v->ref_url ? 5 : 1; break;
        case SP_TOKEN: n = v->code ? 4 : 1; break;
        case SP_URI: n = c->modifier == MOD_NONE ? 4 : 2; break;
        case SP_STRING: n = c->modifier == MOD_EXACT ? 4 : c->modifier == MOD_CONTAINS ? 1 : 3; break;
        case SP_DATE: n = v->prefix == PFX_EQ ? 4 : 1; break;
        default: n = 2; break;
        }
        /* values are ORed: the clause is as wide as its widest value */
        best = i == 0 || n < best ? n : best;
    }
    return best;
}

/* Without the patient fast path, a search of several listed clauses used to
 * list every clause's matches and intersect the lists: Patient?family=smith
 * &birthdate=1950-03-04 listed every Smith (at 10,000,000 resources 17 ms a
 * search, bench.py). Now the narrowest clause lists its matches (the
 * driver) and the others test each of those rows by primary key. Returns
 * the driver's index, or -1 when there is nothing to choose (fewer than two
 * listed clauses, or a chain, which keeps every list). */
static int driver_clause(const search_query *sq) {
    int n = 0, best = -1, best_n = -1;
    for (int i = 0; i < sq->n_clauses; i++) {
        const search_clause *c = &sq->clauses[i];
        if (c->target == ST_PARAM && c->n_values == 1 && c->values[0].chain) return -1;
        if (!listed_clause(c)) continue;
        n++;
        int w = clause_narrowness(c);
        if (w > best_n) {
            best_n = w;
            best = i;
        }
    }
    return n >= 2 && best_n >= 0 ? best : -1;
}

/* Strip "@Patient" from a path program so "subject@Patient" compares equal
 * to "subject". */
static void strip_patient(const char *in, char *out, size_t n) {
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < n;) {
        if (strncmp(in + i, "@Patient", 8) == 0) {
            i += 8;
            continue;
        }
        out[j++] = in[i++];
    }
    out[j] = 0;
}

/* Does every branch of the path program reach at most one value? (Each
 * step an element of cardinality ..1; unknown steps count as many.) */
static int path_single_valued(const char *rtype, const char *path) {
    char el[256];
    for (const char *br = path; *br;) {
        size_t n = (size_t)snprintf(el, sizeof el, "%s", rtype);
        const char *p = br;
        while (*p && *p != '|') {
            const char *q = p;
            while (*q && strchr(".|[:@?!", *q) == NULL)
                q++;
            if (n + 1 + (size_t)(q - p) + 4 >= sizeof el) return 0;
            el[n++] = '.';
            memcpy(el + n, p, (size_t)(q - p));
            n += (size_t)(q - p);
            if (strncmp(q, "[x]", 3) == 0) {
                memcpy(el + n, "[x]", 3);
                n += 3;
            }
            el[n] = 0;
            const fhir_element *fe = fhir_element_find(el);
            if (!fe || fe->many) return 0;
            while (*q && *q != '.' && *q != '|')
                q++; /* skip suffixes */
            p = *q == '.' ? q + 1 : q;
        }
        br = *p == '|' ? p + 1 : p;
    }
    return 1;
}

/* Is `sp` the parameter through which the type's resources get their
 * patient key (the first of its compartment parameters), and does it name
 * exactly one patient per resource? Only then does "param = Patient/X"
 * imply pkey = key(X). (Group.member names many patients; a Patient's own
 * key is itself, not its links.) */
static int primary_patient_param(const char *rtype, const fhir_search_param *sp) {
    const fhir_compartment *comp = fhir_compartment_find(rtype);
    if (!comp || !sp->path || strcmp(rtype, "Patient") == 0) return 0;
    if (!path_single_valued(rtype, sp->path)) return 0;
    char first[64];
    size_t n = strcspn(comp->params, "|");
    if (n >= sizeof first) return 0;
    memcpy(first, comp->params, n);
    first[n] = 0;
    const fhir_search_param *cp = fhir_search_param_find(rtype, first);
    if (!cp || !cp->path) return 0;
    if (cp == sp) return 1;
    char a[256], b[256];
    strip_patient(sp->path, a, sizeof a);
    strip_patient(cp->path, b, sizeof b);
    return strcmp(a, b) == 0;
}

static void order_by(qb *q, const search_query *sq) {
    sql(q, " ORDER BY ");
    for (int i = 0; i < sq->n_sorts; i++) {
        const search_sort *so = &sq->sorts[i];
        const char *dir = so->descending ? " DESC" : "";
        if (so->target == ST_ID) {
            buf_printf(&q->sql, "r.id%s, ", dir);
        } else if (so->target == ST_LASTUPDATED) {
            buf_printf(&q->sql, "r.updated%s, ", dir);
        } else {
            const char *col = "value";
            switch (so->sp->type) {
            case SP_DATE: col = so->descending ? "hi" : "lo"; break;
            case SP_STRING: col = "norm"; break;
            case SP_TOKEN:
            case SP_URI: col = "code"; break;
            default: col = "value";
            }
            char expr[200];
            snprintf(expr, sizeof expr,
                     "(SELECT %s(%s) FROM %s s%d WHERE s%d.rkey = r.rkey AND s%d.param = ?)",
                     so->descending ? "MAX" : "MIN", col, table_of(so->sp->type), i, i, i);
            /* missing values last in both directions, on both backends */
            buf_printf(&q->sql, "(%s IS NULL), %s%s, ", expr, expr, dir);
            bi(q, store_param_id(q->s, so->sp));
            bi(q, store_param_id(q->s, so->sp));
        }
    }
    sql(q, "r.rkey");
}

static status run_items(store *s, db *d, qb *q, store_items *out, int include, int64_t **rkeys, int *nr,
                        err *e) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    status rc = drv->prepare(d, q->sql.p, 0, &st, e);
    if (rc != ST_OK) return rc;
    apply_binds(drv, st, q);
    int r;
    while ((r = drv->step(st, e)) == 1) {
        store_meta m;
        store_row_meta(drv, st, &m);
        m.pkey = drv->col_int(st, 7);
        if (include) {
            /* skip what the result already holds */
            int dup = 0;
            for (size_t k = 0; k < out->n && !dup; k++)
                dup = strcmp(out->v[k].meta.type, m.type) == 0 && strcmp(out->v[k].meta.id, m.id) == 0;
            if (dup) continue;
        }
        size_t len;
        const char *b = drv->col_text(st, 5, &len);
        store_items_push(out, &m, b, len, include);
        if (rkeys) {
            int64_t *nk = realloc(*rkeys, (size_t)(*nr + 1) * sizeof **rkeys);
            if (!nk) abort();
            *rkeys = nk;
            (*rkeys)[(*nr)++] = drv->col_int(st, 6);
        }
    }
    drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

/* Open `AND r.rkey IN (SELECT p.rkey FROM idx_<kind> p WHERE [p.pkey = ? AND]
 * p.param = ? AND (values)` — the list of clause `c`'s matches, left open so
 * that other clauses can test its rows (alias p) before any is read from
 * the resource table; the caller closes it with ")". */
static status list_open(qb *q, const search_clause *c, int64_t pkey, err *e) {
    const char *table = table_of(c->type);
    int64_t param = store_param_id(q->s, c->sp);
    if (!table || !param)
        return err_set(e, ST_INVALID, "not-supported", c->sp->code, "search parameter %s is not indexed",
                       c->sp->code);
    buf_printf(&q->sql, " AND r.rkey IN (SELECT p.rkey FROM %s p WHERE ", table);
    if (pkey) {
        sql(q, "p.pkey = ? AND ");
        bi(q, pkey);
    }
    sql(q, "p.param = ? AND ");
    bi(q, param);
    return values_cond(q, c, e);
}

/* The WHERE of a search whose rows one clause lists: the patient fast
 * path's patient clause (`pkey` set), or the driver (driver_clause). Every
 * other indexed clause tests the listed rows inside the list, by rkey, so
 * that only resources matching everything are read from the resource
 * table:
 *
 *   FROM resource r WHERE r.rtype = ? AND r.deleted = 0 [AND r.pkey = ?]
 *     AND r.rkey IN (SELECT p.rkey FROM idx_ref p WHERE p.pkey = ?
 *                    AND p.param = ? AND (target_id = ?)
 *                    AND EXISTS (SELECT 1 FROM idx_token x WHERE x.rkey = p.rkey ...)
 *                    ...)
 *
 * Testing the clauses against r instead read every listed resource from
 * the table first: at 10,000,019 resources, where a search reads most of
 * its pages from disk, Observation?patient&code&date needed 18.3 SQLite
 * page reads a search, nested 9.4 (200 searches, sqlite3 .stats). _id,
 * _lastUpdated and :missing test r itself and stay outside. */
static status listed_where(qb *q, const search_query *sq, int lead, int64_t pkey, err *e) {
    status rc = ST_OK;
    for (int i = 0; i < sq->n_clauses && rc == ST_OK; i++)
        if (!listed_clause(&sq->clauses[i])) rc = clause_sql(q, "r", &sq->clauses[i], pkey, 0, e);
    if (rc == ST_OK) rc = list_open(q, &sq->clauses[lead], pkey, e);
    for (int i = 0; i < sq->n_clauses && rc == ST_OK; i++)
        if (i != lead && listed_clause(&sq->clauses[i])) rc = clause_sql(q, "p", &sq->clauses[i], pkey, 1, e);
    sql(q, ")");
    return rc;
}

/* Will some clause become `r.rkey IN (SELECT ...)`, a list of candidates?
 * (clause_sql without the patient fast path: a positive clause, a chain,
 * or :missing=false.) */
static int lists_rows(const search_query *sq) {
    for (int i = 0; i < sq->n_clauses; i++) {
        const search_clause *c = &sq->clauses[i];
        if (c->target != ST_PARAM) continue;
        if (c->modifier == MOD_MISSING ? !c->missing
                                       : (c->n_values == 1 && c->values[0].chain) || c->modifier != MOD_NOT)
            return 1;
    }
    return 0;
}

static void qb_reset(qb *q) {
    buf_reset(&q->sql);
    q->n = 0;
    q->aliases = 0;
}

status store_search_on(store *s, db *d, const search_query *sq, store_items *out, err *e) {
    const db_driver *drv = s->drv;
    status rc = ST_OK;
    arena a = {0};
    qb q = {.a = &a, .s = s, .scope = sq->scope};
    int64_t *rkeys = NULL;
    int nr = 0;
    int64_t pkey = 0;
    out->total = -1;
    out->more = 0;

    /* patient fast path */
    int pclause = -1;
    for (int i = 0; i < sq->n_clauses; i++) {
        const search_clause *c = &sq->clauses[i];
        if (c->target != ST_PARAM || c->type != SP_REFERENCE || c->n_values != 1 || c->values[0].chain ||
            (c->modifier != MOD_NONE && c->modifier != MOD_TYPE))
            continue;
        const search_value *v = &c->values[0];
        if (!v->ref_id || v->ref_url) continue;
        int is_patient = v->ref_type ? strcmp(v->ref_type, "Patient") == 0
                                     : (c->sp->targets && strcmp(c->sp->targets, "Patient") == 0);
        if (!is_patient || !primary_patient_param(sq->type, c->sp)) continue;
        rc = store_patient_key(s, d, v->ref_id, 0, &pkey, e);
        if (rc != ST_OK) goto out;
        if (!pkey) { /* no such patient has ever had data: nothing can match */
            out->total = 0;
            goto out;
        }
        pclause = i;
        break;
    }

    /* WHERE clause, shared by the page and the count */
    qb_reset(&q);
    int lead = pkey ? pclause : driver_clause(sq);
    /* Where a clause lists the candidates (`r.rkey IN (SELECT ...)`), left
     * to itself the planner may prefer the (rtype, updated) index and test
     * every resource of the type against the list (Patient?family&birthdate
     * at 1,000,000 resources: 1.3 ms a search, bench.py), or go through
     * resource_patient for r.pkey, a page more than the rowid. The unary +
     * keeps r.rtype and r.pkey filters, not index choices. SQLite only: the
     * unary + on text is its idiom; PostgreSQL's planner has no need. */
    int plus = drv == &db_sqlite_driver && (lead >= 0 || lists_rows(sq));
    sql(&q, plus ? " FROM resource r WHERE +r.rtype = ? AND r.deleted = 0"
                 : " FROM resource r WHERE r.rtype = ? AND r.deleted = 0");
    bt(&q, sq->type);
    if (pkey) {
        sql(&q, plus ? " AND +r.pkey = ?" : " AND r.pkey = ?");
        bi(&q, pkey);
    }
    scope_cond(&q, sq->scope, "r");
    if (lead >= 0) {
        rc = listed_where(&q, sq, lead, pkey, e);
    } else {
        for (int i = 0; i < sq->n_clauses && rc == ST_OK; i++)
            rc = clause_sql(&q, "r", &sq->clauses[i], 0, 0, e);
    }
    if (rc != ST_OK) goto out;
    buf where = {0};
    buf_append(&where, q.sql.p, q.sql.len);
    int where_binds = q.n;

    if (sq->summary == SUMMARY_COUNT || sq->total_accurate) {
        buf tmp = {0};
        buf_puts(&tmp, "SELECT COUNT(*)");
        buf_append(&tmp, where.p, where.len);
        buf_free(&q.sql);
        q.sql = tmp;
        db_stmt *st = NULL;
        rc = drv->prepare(d, q.sql.p, 0, &st, e);
        if (rc == ST_OK) {
            apply_binds(drv, st, &q);
            int r = drv->step(st, e);
            if (r == 1)
                out->total = drv->col_int(st, 0);
            else
                rc = ST_IO;
            drv->done(st);
        }
        if (rc != ST_OK || sq->summary == SUMMARY_COUNT) {
            buf_free(&where);
            goto out;
        }
    }

    /* the page */
    q.n = where_binds;
    buf_reset(&q.sql);
    sql(&q, "SELECT r.rtype, r.id, r.version, r.updated, r.deleted, r.body, r.rkey, r.pkey");
    buf_append(&q.sql, where.p, where.len);
    buf_free(&where);
    order_by(&q, sq);
    sql(&q, " LIMIT ? OFFSET ?");
    bi(&q, sq->count + 1);
    bi(&q, sq->offset);
    rc = run_items(s, d, &q, out, 0, &rkeys, &nr, e);
    if (rc != ST_OK) goto out;
    if ((int)out->n > sq->count) {
        out->more = 1;
        free(out->v[out->n - 1].body);
        out->n--;
        nr--;
    } else if (out->total < 0 && (out->n > 0 || sq->offset == 0)) {
        out->total = sq->offset + (int64_t)out->n;
    }

    /* _include / _revinclude */
    size_t matches = out->n;
    for (int i = 0; i < sq->n_includes && matches > 0; i++) {
        const search_include *inc = &sq->includes[i];
        qb_reset(&q);
        if (!inc->reverse) {
            sql(&q, "SELECT DISTINCT t.rtype, t.id, t.version, t.updated, t.deleted, t.body, t.rkey, t.pkey "
                    "FROM idx_ref x"
                    " JOIN resource t ON t.rtype = x.target_type AND t.id = x.target_id"
                    " WHERE x.param = ? AND t.deleted = 0 AND x.rkey IN (");
            bi(&q, store_param_id(s, inc->sp));
            for (int k = 0; k < nr; k++) {
                sql(&q, k ? ", ?" : "?");
                bi(&q, rkeys[k]);
            }
            sql(&q, ")");
            if (inc->target_type) {
                sql(&q, " AND t.rtype = ?");
                bt(&q, inc->target_type);
            }
            scope_cond(&q, sq->scope, "t");
        } else {
            sql(&q, "SELECT DISTINCT t.rtype, t.id, t.version, t.updated, t.deleted, t.body, t.rkey, t.pkey "
                    "FROM idx_ref x"
                    " JOIN resource t ON t.rkey = x.rkey"
                    " WHERE x.param = ? AND x.target_type = ? AND t.deleted = 0 AND x.target_id IN (");
            bi(&q, store_param_id(s, inc->sp));
            bt(&q, sq->type);
            for (size_t k = 0; k < matches; k++) {
                sql(&q, k ? ", ?" : "?");
                bt(&q, out->v[k].meta.id);
            }
            sql(&q, ")");
            scope_cond(&q, sq->scope, "t");
        }
        sql(&q, " ORDER BY t.rkey LIMIT 5000");
        rc = run_items(s, d, &q, out, 1, NULL, NULL, e);
        if (rc != ST_OK) goto out;
    }
out:
    free(rkeys);
    free(q.b);
    buf_free(&q.sql);
    arena_free(&a);
    return rc;
}
