/*
 * demo.c — `concord demo`: if the store is empty, generate the synthetic
 * integrated care population in-process (src/synth, the same model as
 * `concord synth`) and load every person's integrated record — GP,
 * hospital, community, social care and mental health resources, each
 * tagged with its care setting and source organisation — then serve it.
 *
 *   concord demo [--patients N (50000)] [--seed S (1)] [--years Y (5)]
 *                [--db DB] [--http ADDR:PORT] [--no-serve]
 *
 * Loading goes through the bulk pipeline (src/ingest/bulk.h): worker
 * threads parse, validate and prepare each resource while one writer
 * stores them through the store API, in transactions of about DEMO_BATCH
 * resources that never split a person, so that a crash leaves whole people
 * or none. The same --seed gives the same
 * people with the same ids ("p0000001", "p0000001-o3", ...).
 *
 * Progress (people, resources/s, ETA) is drawn on stderr when it is a
 * terminal; otherwise one line at the end.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../base/log.h"
#include "../ingest/bulk.h"
#include "../store/store.h"
#include "../synth/synth.h"
#include "cli.h"

#define DEMO_BATCH 5000 /* resources per transaction, at least (whole people) */

typedef struct loader {
    bulk *b;
    int64_t resources, people_done, people_total;
    double t0, last_draw;
    int tty;
    err e;
} loader;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Each generated resource goes into the bulk pipeline (parsed, validated
 * and prepared by worker threads; stored by one writer). The last resource
 * of each person ends a group: transactions hold whole people. */
static int load_one(void *arg, const char *type, const char *id, const char *json, size_t len) {
    loader *l = arg;
    if (bulk_add(l->b, type, id, json, len, 0, &l->e) != ST_OK) return 1;
    return 0;
}

static int end_group(loader *l) {
    /* an empty marker is not a resource: close the group on the next add */
    return bulk_add(l->b, NULL, NULL, NULL, 0, 1, &l->e) != ST_OK;
}

static void draw_progress(loader *l, int final) {
    double t = now_seconds();
    if (!final && t - l->last_draw < 0.2) return;
    l->last_draw = t;
    double el = t - l->t0;
    double rate = el > 0 ? l->resources / el : 0;
    double frac = l->people_total ? (double)l->people_done / l->people_total : 1;
    double eta = frac > 0 ? el / frac - el : 0;
    if (l->tty) {
        int width = 30, filled = (int)(frac * width);
        char bar[40];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r  [%s] %lld/%lld people, %lld resources, %.0f/s, %s%.0fs ", bar,
                (long long)l->people_done, (long long)l->people_total, (long long)l->resources, rate,
                final ? "took " : "ETA ", final ? el : eta);
        if (final) fputc('\n', stderr);
        fflush(stderr);
    } else if (final) {
        fprintf(stderr, "concord: demo: loaded %lld people, %lld resources in %.1fs (%.0f resources/s)\n",
                (long long)l->people_done, (long long)l->resources, el, rate);
    }
}

/* Generate and load the population; 0 on success. */
static int demo_load(store *s, const synth_params *sp) {
    synth_world *w = NULL;
    err e;
    if (synth_world_build(sp, &w, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: %s\n", e.msg);
        return 1;
    }
    loader l = {.people_total = sp->patients, .tty = isatty(STDERR_FILENO)};
    if (bulk_start(s, 0, DEMO_BATCH, &l.b, &l.e) != ST_OK) {
        fprintf(stderr, "concord: demo: %s\n", l.e.msg);
        synth_world_free(w);
        return 1;
    }
    l.t0 = now_seconds();
    int rc = synth_world_foreach_org_resource(w, load_one, &l);
    if (!rc) rc = end_group(&l);
    for (int64_t i = 0; i < sp->patients && !rc; i++) {
        rc = synth_world_foreach_resource(w, i, 1, load_one, &l);
        if (!rc) rc = end_group(&l);
        l.people_done = i + 1;
        l.resources = bulk_stored(l.b);
        if (!rc) draw_progress(&l, 0);
    }
    bulk_stats st;
    err fe;
    if (bulk_finish(l.b, &st, &fe) != ST_OK) {
        fprintf(stderr, "\nconcord: demo: loading stopped at %s: %s\n", fe.where, fe.msg);
        rc = 1;
    }
    l.resources = st.resources;
    if (!rc) {
        draw_progress(&l, 1);
        log_info("demo: loaded %lld people, %lld resources in %.1fs (%lld transactions)", (long long)l.people_done,
                 (long long)l.resources, now_seconds() - l.t0, (long long)st.commits);
    }
    synth_world_free(w);
    return rc ? 1 : 0;
}

static void banner(const char *base, void *arg) {
    (void)arg;
    printf("\nconcord is running.\n\n"
           "  Landing page:        %s/\n"
           "  FHIR API base:       %s/fhir\n"
           "  CapabilityStatement: %s/fhir/metadata\n"
           "  Patients:            %s/fhir/Patient?_count=20\n"
           "  One person's record: %s/fhir/Patient/p0000001/$everything\n"
           "  By NHS number:       %s/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018\n"
           "  Their HbA1c results: %s/fhir/Observation?code=http://snomed.info/sct|999791000000106&_sort=-date\n"
           "  Admissions:          %s/fhir/Encounter?class=IMP&_count=20\n"
           "  A GP practice:       %s/fhir/Organization/org-Z90001\n"
           "  Its risk worklist:   %s/fhir/$risk-worklist?practice=Z90001\n",
           base, base, base, base, base, base, base, base, base, base);
    fflush(stdout);
}

int cmd_demo(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    synth_params sp;
    synth_params_default(&sp);
    int serve = 1;
    for (int i = 1; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
        if (strcmp(argv[i], "--patients") == 0 && i + 1 < argc) {
            char *end;
            long long n = strtoll(argv[++i], &end, 10);
            if (*end || n < 1 || n > 20000000) {
                fprintf(stderr, "concord: demo: --patients must be 1..20000000\n");
                return 2;
            }
            sp.patients = n;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            sp.seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--years") == 0 && i + 1 < argc) {
            sp.years = atoi(argv[++i]);
            if (sp.years < 1 || sp.years > 20) {
                fprintf(stderr, "concord: demo: --years must be 1..20\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--no-serve") == 0) {
            serve = 0;
        } else {
            fprintf(stderr, "concord: demo: unknown option '%s'\nTry 'concord --help'.\n", argv[i]);
            return 2;
        }
    }
    store *s = NULL;
    if (cli_open_store(&o, 1, &s)) return 1;
    store_count *counts = NULL;
    size_t n = 0;
    err e;
    int rc = 0;
    if (store_counts(s, &counts, &n, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: %s\n", e.msg);
        store_close(s);
        return 1;
    }
    free(counts);
    if (n == 0) {
        printf("Generating and loading a synthetic population of %lld people (seed %llu, %d years) into %s ...\n",
               (long long)sp.patients, (unsigned long long)sp.seed, sp.years, o.db);
        fflush(stdout);
        rc = demo_load(s, &sp);
        if (rc == 0) cli_risk_demo(s, sp.end_year); /* train, validate and score (docs/risk.md) */
    } else {
        printf("The store %s already holds data: not loading the demonstration population again.\n", o.db);
    }
    if (rc == 0 && serve) rc = cli_serve_until_signal(s, &o, banner, NULL);
    store_close(s);
    return rc;
}
