/*
 * linkeval.h — linkage against the synthetic population's ground truth: read
 * every source patient record of a `concord synth --out DIR` directory (GP
 * FHIR Patients, hospital HL7 PID segments, community/social care/mental
 * health CSV rows; one record per feed and local patient id), train or load
 * a model, score the candidate pairs, cluster, and count against
 * ground_truth/records.csv. Standalone: no store. Meant to become
 * `concord link eval DIR` (linkeval_main takes the arguments after it).
 *
 * Ownership: linkeval_load's arrays are malloc'd and owned by the caller
 * (linkeval_data_free). Inputs are borrowed.
 */
#ifndef CONCORD_REGISTRY_LINKEVAL_H
#define CONCORD_REGISTRY_LINKEVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../base/status.h"
#include "fs.h"

typedef struct linkeval_data {
    reg_person *rec; /* one per source patient record */
    int32_t *truth;  /* the true person of each (index from the person id), -1 if not in the ground truth */
    uint16_t *feed;  /* index into feeds[] */
    size_t n;
    char (*feeds)[32]; /* feed names, e.g. "acute/ZA1" */
    size_t nfeeds;
    size_t rows_read, rows_skipped; /* feed rows/messages read; rows without a usable local id */
} linkeval_data;

/* Read every feed under `dir` and the ground truth. */
status linkeval_load(const char *dir, linkeval_data *d, err *e);
void linkeval_data_free(linkeval_data *d);

typedef struct linkeval_opts {
    const char *model_in;              /* load this model instead of training (NULL: train) */
    const char *model_out;             /* save the trained model here (NULL: don't) */
    double link_weight, review_weight; /* NAN: the model's (or, when training, the defaults below) */
    int no_tf;                         /* 1: no term-frequency adjustment */
    int sweep;                         /* 1: print precision/recall at a range of thresholds */
    int show;  /* print up to this many false links and missed links, with their evidence */
    FILE *out; /* report (NULL: quiet) */
} linkeval_opts;

void linkeval_opts_default(linkeval_opts *o);

/* Pair counts against the truth. Pairs are unordered pairs of records. */
typedef struct linkeval_counts {
    uint64_t true_pairs;             /* pairs of records of the same person */
    uint64_t candidates;             /* pairs compared */
    uint64_t candidate_true;         /* ... of which true: blocking recall = candidate_true / true_pairs */
    uint64_t link_tp, link_fp;       /* pairs at or above the link threshold */
    uint64_t review_tp, review_fp;   /* pairs in the review band */
    uint64_t cluster_tp, cluster_fp; /* pairs put in the same cluster (after transitive closure) */
    size_t clusters, persons;
    double precision, recall; /* of the links (pairwise) */
    double cluster_precision, cluster_recall;
    double seconds_train, seconds_score, seconds_cluster;
} linkeval_counts;

/* Train (or load), score, cluster and count. */
status linkeval_run(const linkeval_data *d, const linkeval_opts *o, fs_model *model, linkeval_counts *c,
                    err *e);

/* Timings on `d` with `model` (trained): compare + weight per pair over the
 * candidate pairs and over random pairs (ns/pair), and fs_em on 1,000,000
 * comparison vectors (half candidates, half random pairs). Printed to out. */
status linkeval_bench(const linkeval_data *d, const fs_model *model, FILE *out, err *e);

/* `concord link eval DIR [--model FILE] [--save-model FILE] [--link W]
 * [--review W] [--no-tf] [--sweep] [--show N] [--bench]`: argv[0] is DIR's predecessor (the
 * subcommand name). Prints the report to stdout, errors to stderr; returns
 * the process exit code (0 ok, 1 failure, 2 usage). */
int linkeval_main(int argc, char **argv);

#endif
