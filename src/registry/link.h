/*
 * link.h — batch record linkage over an in-memory set of records: train the
 * Fellegi-Sunter model (u from random pairs, m by EM on each blocking rule's
 * pairs with that rule's own fields held out, the prior from the scored
 * candidates), score every candidate pair, and cluster the linked pairs
 * into persons (union-find). The pieces `concord link train` and
 * `concord link run` are made of; storage-free.
 *
 * Ownership: arrays returned through `out` pointers are malloc'd and owned
 * by the caller (free()). Inputs are borrowed for the call.
 */
#ifndef CONCORD_REGISTRY_LINK_H
#define CONCORD_REGISTRY_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"
#include "block.h"
#include "fs.h"

typedef struct link_train_opts {
    size_t u_pairs;            /* random pairs for u (default 1,000,000) */
    uint64_t seed;             /* for the random pairs (default 1) */
    size_t max_block;          /* blocking (default 1000) */
    size_t max_pairs_per_rule; /* EM sample per rule (default 2,000,000: the first pairs in key order) */
    fs_em_opts em;             /* fixed[] is set per rule from the rule's fields */
} link_train_opts;

void link_train_opts_default(link_train_opts *o);

typedef struct link_train_report {
    size_t nrules;
    size_t rule_pairs[BLOCK_MAX_RULES];
    fs_em_result em[BLOCK_MAX_RULES]; /* em[r].lambda: match proportion among rule r's pairs */
    size_t candidates;                /* distinct candidate pairs scored for lambda */
} link_train_report;

/* Estimate u, m and lambda of `m` from `n` records. m for each field is the
 * average of the EM estimates from the rules that do not use the field,
 * weighted by each rule's expected number of matches; a field every rule
 * uses keeps its m. lambda is fs_estimate_lambda over the candidates.
 * Thresholds and tf flags are left as they are. `opts`, `rep` may be NULL. */
status link_train(fs_model *m, const reg_person *p, size_t n, const block_rule *rules, size_t nrules,
                  const link_train_opts *opts, link_train_report *rep, err *e);

/* A scored candidate pair. */
typedef struct link_pair {
    uint32_t i, j;
    float weight;
    uint8_t rule;
} link_pair;

/* Every distinct candidate pair (block_pairs with dedupe) with its weight
 * (term-frequency adjusted when `tf` is non-NULL). *out is malloc'd, caller
 * frees. `stats` may be NULL. */
status link_score(const fs_model *m, const reg_person *p, size_t n, const block_rule *rules, size_t nrules,
                  size_t max_block, const fs_tf *tf, link_pair **out, size_t *npairs, block_stats *stats,
                  err *e);

/* Persons from links: cluster[i] = the smallest record index of record i's
 * connected component over pairs with weight >= threshold. `cluster` has n
 * entries (caller's). Returns the number of clusters. */
size_t link_cluster(size_t n, const link_pair *pairs, size_t npairs, double threshold, uint32_t *cluster);

#endif
