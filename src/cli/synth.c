/*
 * synth.c — `concord synth`: write the synthetic population's feeds (GP
 * FHIR ndjson, hospital HL7 v2.4 over MLLP, community / social care /
 * mental health CSV), the ground truth and manifest.json into a directory.
 *
 *   concord synth --out DIR [--patients N (50000)] [--seed S (1)] [--years Y (5)]
 *                 [--end-year YYYY (2025)] [--error-rate X (1.0)]
 *                 [--programme-effect F (0.10)] [--programme-months M (12)]
 *                 [--threads T (CPUs)] [--quiet]
 *
 * A progress bar on stderr when it is a terminal (and not --quiet); a
 * one-line summary on stdout at the end. Exit 0 on success, 1 on failure,
 * 2 on a usage error. See docs/synth.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../synth/synth.h"
#include "cli.h"

typedef struct bar {
    double t0, last;
} bar;

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress(void *arg, int64_t done, int64_t total) {
    bar *b = arg;
    double t = seconds();
    if (done < total && t - b->last < 0.2) return;
    b->last = t;
    double frac = total ? (double)done / total : 1, el = t - b->t0;
    int width = 30, filled = (int)(frac * width);
    char cells[40];
    for (int i = 0; i < width; i++) cells[i] = i < filled ? '#' : '.';
    cells[width] = 0;
    fprintf(stderr, "\r  [%s] %lld/%lld people  %.0f/s  %s%.0fs ", cells, (long long)done, (long long)total,
            el > 0 ? done / el : 0, done < total ? "ETA " : "", done < total && frac > 0 ? el / frac - el : el);
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
}

static int usage(const char *msg, const char *arg) {
    fprintf(stderr, "concord: synth: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\nusage: concord synth --out DIR [--patients N] [--seed S] [--years Y] [--end-year YYYY]\n"
                    "                     [--error-rate X] [--programme-effect F] [--programme-months M]\n"
                    "                     [--threads T] [--quiet]\n");
    return 2;
}

int cmd_synth(int argc, char **argv) {
    synth_params p;
    synth_params_default(&p);
    const char *out = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
            continue;
        }
        if (i + 1 >= argc) return usage("'%s' needs a value (or is unknown)", a);
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--patients") == 0) {
            p.patients = strtoll(v, &end, 10);
            if (*end || p.patients < 1 || p.patients > 20000000) return usage("--patients must be 1..20000000, not '%s'", v);
        } else if (strcmp(a, "--seed") == 0) {
            p.seed = strtoull(v, &end, 10);
            if (*end) return usage("--seed takes a number, not '%s'", v);
        } else if (strcmp(a, "--years") == 0) {
            p.years = (int)strtol(v, &end, 10);
            if (*end || p.years < 1 || p.years > 20) return usage("--years must be 1..20, not '%s'", v);
        } else if (strcmp(a, "--end-year") == 0) {
            p.end_year = (int)strtol(v, &end, 10);
            if (*end || p.end_year < 1990 || p.end_year > 2100) return usage("--end-year must be 1990..2100, not '%s'", v);
        } else if (strcmp(a, "--error-rate") == 0) {
            p.error_rate = strtod(v, &end);
            if (*end || p.error_rate < 0 || p.error_rate > 20) return usage("--error-rate must be 0..20, not '%s'", v);
        } else if (strcmp(a, "--programme-effect") == 0) {
            p.programme_effect = strtod(v, &end);
            if (*end || p.programme_effect < 0 || p.programme_effect >= 1)
                return usage("--programme-effect must be in [0, 1), not '%s'", v);
        } else if (strcmp(a, "--programme-months") == 0) {
            p.programme_months = (int)strtol(v, &end, 10);
            if (*end || p.programme_months < 0 || p.programme_months > 240)
                return usage("--programme-months must be 0..240, not '%s'", v);
        } else if (strcmp(a, "--threads") == 0) {
            p.threads = (int)strtol(v, &end, 10);
            if (*end || p.threads < 1 || p.threads > 16) return usage("--threads must be 1..16, not '%s'", v);
        } else return usage("unknown option '%s'", a);
    }
    if (!out) return usage("%s", "--out DIR is required");
    bar b = {seconds(), 0};
    int show = !quiet && isatty(STDERR_FILENO);
    synth_summary s;
    err e;
    if (synth_feeds(&p, out, show ? progress : NULL, &b, &s, &e) != ST_OK) {
        fprintf(stderr, "concord: synth: %s%s%s\n", e.where[0] ? e.where : "", e.where[0] ? ": " : "", e.msg);
        return 1;
    }
    double el = seconds() - b.t0;
    if (!quiet)
        printf("concord synth: %lld people, %lld GP resources, %lld HL7 messages, %lld CSV rows, %lld planted errors, "
               "%.1f MB in %.1fs -> %s\n",
               (long long)s.people, (long long)s.gp_resources, (long long)s.hl7_messages,
               (long long)(s.csv_rows[0] + s.csv_rows[1] + s.csv_rows[2]), (long long)s.planted_errors,
               s.bytes / 1e6, el, out);
    return 0;
}
