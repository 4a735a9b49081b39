/*
 * link.c — batch training, scoring and clustering (see link.h).
 *
 * Training follows the practice of Splink (UK Ministry of Justice) for
 * blocked data: the pairs of one blocking rule agree by construction on
 * that rule's fields, so an EM run on them learns only the other fields'
 * m; running EM once per rule and averaging gives every field an estimate
 * from pairs that were not selected on it. u comes from random pairs
 * (fs_estimate_u), where matches are negligibly rare.
 *
 * Invariant: link_pair.i < link_pair.j, both < n.
 */
#include "link.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void link_train_opts_default(link_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->u_pairs = 1000000;
    o->seed = 1;
    o->max_block = 1000;
    o->max_pairs_per_rule = 2000000;
    fs_em_opts_default(&o->em);
}

typedef struct collect {
    const reg_person *p;
    fs_vector *v;
    size_t n, cap, max;
} collect;

static int collect_pair(void *arg, uint32_t i, uint32_t j, int rule) {
    (void)rule;
    collect *c = arg;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 65536;
        fs_vector *nv = realloc(c->v, ncap * sizeof *nv);
        if (!nv) return -1;
        c->v = nv;
        c->cap = ncap;
    }
    fs_compare(&c->p[i], &c->p[j], &c->v[c->n++]);
    return c->n >= c->max;
}

status link_train(fs_model *m, const reg_person *p, size_t n, const block_rule *rules, size_t nrules,
                  const link_train_opts *opts, link_train_report *rep, err *e) {
    status rc = ST_OK;
    link_train_opts o;
    if (opts)
        o = *opts;
    else
        link_train_opts_default(&o);
    link_train_report r;
    memset(&r, 0, sizeof r);
    r.nrules = nrules;
    collect c = {p, NULL, 0, 0, o.max_pairs_per_rule ? o.max_pairs_per_rule : (size_t)-1};
    link_pair *pairs = NULL;
    double *weights = NULL;
    double sum_m[FS_NFIELDS][FS_MAX_LEVELS] = {{0}}, sum_w[FS_NFIELDS] = {0};
    fs_model start = *m;
    if ((rc = fs_estimate_u(m, p, n, o.u_pairs, o.seed, e)) != ST_OK) goto out;
    memcpy(start.u, m->u, sizeof m->u);
    for (size_t k = 0; k < nrules; k++) {
        block_stats st;
        c.n = 0;
        if ((rc = block_pairs(p, n, &rules[k], 1, o.max_block, 0, collect_pair, &c, &st, e)) != ST_OK)
            goto out;
        r.rule_pairs[k] = c.n;
        if (c.n < 10) continue; /* nothing to learn from */
        fs_model mk = start;
        fs_em_opts eo = o.em;
        for (int f = 0; f < FS_NFIELDS; f++)
            eo.fixed[f] = rules[k].fields[f];
        if ((rc = fs_em(&mk, c.v, c.n, &eo, &r.em[k], e)) != ST_OK) goto out;
        double matches = r.em[k].lambda * (double)c.n;
        for (int f = 0; f < FS_NFIELDS; f++) {
            if (eo.fixed[f]) continue;
            for (int l = 0; l < fs_field_levels((fs_field)f); l++)
                sum_m[f][l] += matches * mk.m[f][l];
            sum_w[f] += matches;
        }
    }
    for (int f = 0; f < FS_NFIELDS; f++)
        if (sum_w[f] > 0)
            for (int l = 0; l < fs_field_levels((fs_field)f); l++)
                m->m[f][l] = sum_m[f][l] / sum_w[f];
    size_t np = 0;
    if ((rc = link_score(m, p, n, rules, nrules, o.max_block, NULL, &pairs, &np, NULL, e)) != ST_OK) goto out;
    weights = malloc((np ? np : 1) * sizeof *weights);
    if (!weights) {
        rc = err_set(e, ST_NOMEM, "exception", "link_train", "out of memory");
        goto out;
    }
    for (size_t k = 0; k < np; k++)
        weights[k] = pairs[k].weight;
    m->lambda = fs_estimate_lambda(weights, np, (double)n * (double)(n - 1) / 2.0);
    r.candidates = np;
out:
    if (rep) *rep = r;
    free(c.v);
    free(pairs);
    free(weights);
    return rc;
}

typedef struct scorer {
    const fs_model *m;
    const reg_person *p;
    const fs_tf *tf;
    link_pair *out;
    size_t n, cap;
} scorer;

static int score_pair(void *arg, uint32_t i, uint32_t j, int rule) {
    scorer *s = arg;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 65536;
        link_pair *no = realloc(s->out, ncap * sizeof *no);
        if (!no) return -1;
        s->out = no;
        s->cap = ncap;
    }
    fs_vector v;
    fs_compare(&s->p[i], &s->p[j], &v);
    double w = fs_weight(s->m, &v, &s->p[i], &s->p[j], s->tf, NULL);
    s->out[s->n++] = (link_pair){i, j, (float)w, (uint8_t)rule};
    return 0;
}

status link_score(const fs_model *m, const reg_person *p, size_t n, const block_rule *rules, size_t nrules,
                  size_t max_block, const fs_tf *tf, link_pair **out, size_t *npairs, block_stats *stats,
                  err *e) {
    scorer s = {m, p, tf, NULL, 0, 0};
    block_stats st;
    status rc = block_pairs(p, n, rules, nrules, max_block, 1, score_pair, &s, &st, e);
    if (rc == ST_OK && st.stopped)
        rc = err_set(e, ST_NOMEM, "exception", "link_score", "out of memory for pairs");
    if (stats) *stats = st;
    if (rc != ST_OK) {
        free(s.out);
        s.out = NULL;
        s.n = 0;
    }
    *out = s.out;
    *npairs = s.n;
    return rc;
}

static uint32_t find(uint32_t *parent, uint32_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

size_t link_cluster(size_t n, const link_pair *pairs, size_t npairs, double threshold, uint32_t *cluster) {
    for (size_t i = 0; i < n; i++)
        cluster[i] = (uint32_t)i;
    for (size_t k = 0; k < npairs; k++) {
        if (pairs[k].weight < threshold) continue;
        uint32_t a = find(cluster, pairs[k].i), b = find(cluster, pairs[k].j);
        if (a == b) continue;
        if (a < b)
            cluster[b] = a; /* the root is the smallest index */
        else
            cluster[a] = b;
    }
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        cluster[i] = find(cluster, (uint32_t)i);
        count += cluster[i] == i;
    }
    return count;
}
