/*
 * block.h — blocking: which pairs of records are compared at all. Each rule
 * turns a record into a key string (or none, when the fields it needs are
 * missing); two records are compared when some rule gives them the same
 * key. Keys are strings so that a store can index them and find the
 * candidates of one incoming record with a few index probes; in batch,
 * block_pairs groups records by key in memory.
 *
 * Compared pairs stay near-linear because every key combines fields with
 * many distinct values (a full date of birth with a name code, an NHS
 * number, a full postcode with a name code), and a block larger than
 * `max_block` records is skipped (and counted) rather than compared
 * quadratically.
 *
 * Ownership: rules are static tables (block_default_rules) or the caller's;
 * every pointer argument is borrowed for the call.
 */
#ifndef CONCORD_REGISTRY_BLOCK_H
#define CONCORD_REGISTRY_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"
#include "fs.h"

#define BLOCK_MAX_RULES 16
#define BLOCK_KEY_MAX   64 /* longest key, with its NUL */

/* Write the key of `p` (at most cap - 1 bytes and a NUL) and return its
 * length; 0 when the record lacks what the rule needs (no key: the record
 * is in no block of this rule). */
typedef size_t (*block_key_fn)(const reg_person *p, char *out, size_t cap);

typedef struct block_rule {
    const char *name;
    block_key_fn key;
    /* The fields the key is made of. Among the pairs this rule produces they
     * agree (nearly) by construction, so EM on those pairs must not learn
     * their m (fs_em_opts.fixed). */
    uint8_t fields[FS_NFIELDS];
} block_rule;

/* The default rules, in order:
 *   nhs            the NHS number (valid numbers only)
 *   dob_family     full date of birth + Soundex of the family name
 *   dob_given      full date of birth + Soundex of the given name
 *   names_ym       Soundex of family + NYSIIS of given + year and month of birth (a wrong day)
 *   names_dm       Soundex of family + NYSIIS of given + year + {day, month} unordered
 *                  (day and month transposed)
 *   postcode_given full postcode + first letter of the given name
 * A true pair escapes them all only if it has no shared valid NHS number AND
 * a date of birth error (or a partial date) AND a name change or error AND a
 * different postcode. Every key holds a full date of birth, an NHS number or
 * a full postcode, so blocks grow with the population per birth date or
 * postcode, not with the population. */
const block_rule *block_default_rules(size_t *nrules);

/* The key of one record under one rule (see block_key_fn). */
size_t block_key(const block_rule *r, const reg_person *p, char out[BLOCK_KEY_MAX]);

/* Called for each candidate pair, i < j, with the index of the rule that
 * produced it. Return non-zero to stop (block_pairs returns ST_OK and sets
 * stats->stopped). */
typedef int (*block_pair_fn)(void *arg, uint32_t i, uint32_t j, int rule);

typedef struct block_stats {
    uint64_t pairs[BLOCK_MAX_RULES]; /* pairs emitted by each rule */
    uint64_t duplicates;             /* pairs skipped: an earlier rule had emitted them */
    uint64_t oversized_blocks;       /* blocks of more than max_block records, skipped */
    uint64_t oversized_records;      /* records in those blocks */
    uint64_t keyed[BLOCK_MAX_RULES]; /* records with a key under each rule */
    int stopped;
} block_stats;

/* Every candidate pair of `n` records (n < 2^32) under `nrules` rules. With
 * `dedupe`, a pair is emitted once, by the first rule that groups it;
 * without, once per rule that groups it (for training m per rule). Blocks
 * of more than `max_block` records (0: 1000) are skipped. Memory: 8 bytes
 * per record and rule, plus 16 per record. `stats` may be NULL.
 * ST_INVALID for too many rules or records, ST_NOMEM. */
status block_pairs(const reg_person *p, size_t n, const block_rule *rules, size_t nrules, size_t max_block,
                   int dedupe, block_pair_fn fn, void *arg, block_stats *stats, err *e);

#endif
