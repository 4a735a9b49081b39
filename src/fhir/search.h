/*
 * search.h — a FHIR search request, parsed and checked against the model,
 * ready for the store to turn into SQL. Parsing (search.c) knows FHIR's
 * search syntax; the store knows nothing of query strings.
 *
 * Semantics: clauses are ANDed; the values within one clause are ORed
 * ("code=a,b"). Dates and numbers carry prefixes; every value is parsed into
 * the typed form of its parameter when the query is built, so a bad value is
 * a 400 before any SQL runs.
 *
 * Ownership: everything lives in the arena passed to search_parse.
 */
#ifndef CONCORD_FHIR_SEARCH_H
#define CONCORD_FHIR_SEARCH_H

#include <stdint.h>

#include "../base/arena.h"
#include "../base/status.h"
#include "model.h"

typedef enum search_prefix { PFX_EQ, PFX_NE, PFX_GT, PFX_LT, PFX_GE, PFX_LE, PFX_SA, PFX_EB, PFX_AP } search_prefix;

typedef enum search_modifier {
    MOD_NONE,
    MOD_EXACT,    /* string */
    MOD_CONTAINS, /* string */
    MOD_MISSING,  /* any: value "true"/"false" */
    MOD_NOT,      /* token */
    MOD_TYPE,     /* reference: param:Patient */
    MOD_TEXT,     /* token :text — not supported, rejected at parse */
    MOD_BELOW,    /* uri :below */
    MOD_ABOVE     /* uri :above */
} search_modifier;

/* Which column family a clause searches. */
typedef enum search_target {
    ST_PARAM,        /* an indexed search parameter */
    ST_ID,           /* _id: the resource's own id column */
    ST_LASTUPDATED   /* _lastUpdated: the resource's own timestamp */
} search_target;

typedef struct search_clause search_clause;

typedef struct search_value {
    search_prefix prefix;
    /* token: system (NULL = any; "" = explicitly no system), code (NULL = any) */
    const char *system, *code;
    /* string / uri / _id */
    const char *text;
    /* date / _lastUpdated: [lo, hi] seconds; [lo_us, hi_us] microseconds,
     * to the precision written (fractions of a second count for
     * _lastUpdated, which the store keeps in microseconds) */
    int64_t lo, hi;
    int64_t lo_us, hi_us;
    /* number / quantity: value and its implied range */
    double num, nlo, nhi;
    /* reference: type may be NULL; id; or an absolute url */
    const char *ref_type, *ref_id, *ref_url;
    /* chained search (param.sub=value): the clause on the target type */
    const search_clause *chain;
    const char *chain_type; /* target type of the chain */
} search_value;

struct search_clause {
    search_target target;
    const fhir_search_param *sp; /* for ST_PARAM */
    sp_type type;                /* parameter type (for _id: SP_TOKEN; _lastUpdated: SP_DATE) */
    search_modifier modifier;
    int missing;                 /* for MOD_MISSING: 1 = must be missing */
    const char *type_modifier;   /* for MOD_TYPE */
    search_value *values;
    int n_values;
};

typedef struct search_include {
    const fhir_search_param *sp; /* reference parameter */
    const char *source_type;     /* Observation in _include=Observation:patient */
    const char *target_type;     /* optional third part */
    int reverse;                 /* _revinclude */
} search_include;

typedef struct search_sort {
    search_target target;
    const fhir_search_param *sp;
    int descending;
} search_sort;

typedef enum search_summary { SUMMARY_NONE, SUMMARY_COUNT, SUMMARY_TRUE, SUMMARY_DATA, SUMMARY_TEXT } search_summary;

typedef struct search_query {
    const char *type; /* resource type searched */
    search_clause *clauses;
    int n_clauses;
    search_include *includes;
    int n_includes;
    search_sort *sorts;
    int n_sorts;
    int count;  /* page size */
    int offset; /* first result */
    int total_accurate;
    search_summary summary;
    /* Who is searching: the store adds this access scope to the query
     * (struct store_scope, store.h); NULL = unrestricted. */
    const struct store_scope *scope;
    /* The query as canonical text (for self/next links): params in order,
     * without _count/_offset. */
    const char *canonical;
    /* Parameters ignored under Prefer: handling=lenient (comma separated). */
    const char *ignored;
} search_query;

/* A query-string parameter, already split and percent-decoded. */
typedef struct search_param_kv {
    const char *name;  /* may include :modifier and chain, e.g. "patient.identifier" */
    const char *value;
} search_param_kv;

#define SEARCH_DEFAULT_COUNT 50
#define SEARCH_MAX_COUNT 1000

/* Parse and check a search on `rtype`. `lenient` = Prefer: handling=lenient
 * (unknown parameters are ignored and listed in q->ignored instead of being
 * an error). Errors: ST_INVALID with where = the parameter name. */
status search_parse(arena *a, const char *rtype, const search_param_kv *params, int n, int lenient,
                    search_query *q, err *e);

/* Parse an application/x-www-form-urlencoded string ("a=1&b=2") into kv
 * pairs (percent-decoded, '+' as space) in the arena. */
int search_split_query(arena *a, const char *qs, size_t len, search_param_kv **out);

#endif
