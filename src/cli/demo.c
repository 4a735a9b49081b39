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
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../access/audit.h"
#include "../access/auth.h"
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

/* ---- demo users --------------------------------------------------------
 * One user per role, attached to the synthetic organisations, so that the
 * demonstration can be used as each kind of user would. They share one
 * password, generated for this database and written with a GP's API token
 * to a file only its owner may read (<db>.demo-users; var/demo-users for
 * PostgreSQL), so that later starts can print them again. Organisations
 * (src/synth/model.c): Z90001 is the first practice (p0000001 is
 * registered there), ZA1 the first acute trust, ZC1 a community provider,
 * ZL1 a council's adult social care, ZM1 the mental health trust. */
static const struct demo_user {
    const char *name, *role, *org, *display, *patient;
} demo_users[] = {
    {"gp.z90001", "gp", "Z90001", "Dr Amara Okafor", NULL},
    {"nurse.z90001", "practice-nurse", "Z90001", "Grace Lewis", NULL},
    {"pharmacist.z90001", "pharmacist", "Z90001", "Tomasz Nowak", NULL},
    {"mdg.z90001", "mdg-coordinator", "Z90001", "Priya Shah", NULL},
    {"consultant.za1", "consultant", "ZA1", "Dr James Whitfield", NULL},
    {"ed.za1", "ed-clinician", "ZA1", "Dr Sofia Rossi", NULL},
    {"nurse.zc1", "community-nurse", "ZC1", "Bernadette Kelly", NULL},
    {"social.zl1", "social-worker", "ZL1", "Daniel Mensah", NULL},
    {"mh.zm1", "mental-health", "ZM1", "Dr Hannah Cole", NULL},
    {"analyst", "analyst", NULL, "Ravi Patel", NULL},
    {"admin", "admin", NULL, "Sam Turner", NULL},
    {"privacy", "privacy-officer", NULL, "Eleanor Price", NULL},
    {"p0000001", "patient", NULL, "Patient p0000001", "p0000001"},
};
#define N_DEMO_USERS (sizeof demo_users / sizeof demo_users[0])

typedef struct demo_creds {
    char password[32];
    char token[96];
    int known; /* 1 when password and token are known (created now or read back) */
    int existed_without_file;
} demo_creds;

static void creds_path(const char *db, char *out, size_t n) {
    if (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0)
        snprintf(out, n, "var/demo-users");
    else
        snprintf(out, n, "%s.demo-users", strncmp(db, "sqlite:", 7) == 0 ? db + 7 : db);
}

static int read_creds(const char *path, demo_creds *c) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strncmp(line, "password ", 9) == 0) snprintf(c->password, sizeof c->password, "%.31s", line + 9);
        if (strncmp(line, "token ", 6) == 0) snprintf(c->token, sizeof c->token, "%.95s", line + 6);
    }
    fclose(f);
    c->known = c->password[0] && c->token[0];
    return c->known;
}

/* Create the demo users (if the first is missing) and their credentials
 * file; else read the file back. 0 on success. */
static int ensure_demo_users(store *s, const char *db, demo_creds *c) {
    memset(c, 0, sizeof *c);
    char path[1100];
    creds_path(db, path, sizeof path);
    err e;
    acc_principal p;
    if (auth_user_get(s, demo_users[0].name, &p, NULL, &e) == ST_OK) {
        if (!read_creds(path, c)) c->existed_without_file = 1;
        return 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "concord: demo: libsodium failed to initialise\n");
        return 1;
    }
    static const char alphabet[] = "abcdefghjkmnpqrstuvwxyz23456789"; /* no 0/o, 1/l/i */
    for (int i = 0; i < 19; i++) /* xxxx-xxxx-xxxx-xxxx: 16 of 31 letters, 79 bits */
        c->password[i] = i % 5 == 4 ? '-' : alphabet[randombytes_uniform(sizeof alphabet - 1)];
    c->password[19] = 0;
    for (size_t i = 0; i < N_DEMO_USERS; i++) {
        const struct demo_user *d = &demo_users[i];
        auth_user_spec u = {.name = d->name, .display = d->display, .role = d->role, .org = d->org,
                            .patient_id = d->patient, .password = c->password};
        if (auth_user_add(s, &u, &e) != ST_OK) {
            fprintf(stderr, "concord: demo: user %s: %s%s%s\n", d->name, e.where[0] ? e.where : "",
                    e.where[0] ? ": " : "", e.msg);
            return 1;
        }
    }
    if (auth_token_create(s, demo_users[0].name, "demo", 0, c->token, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: token: %s\n", e.msg);
        return 1;
    }
    c->known = 1;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "concord: demo: cannot write %s: %s (the password is printed below only)\n", path,
                strerror(errno));
        if (fd >= 0) close(fd);
        return 0;
    }
    fprintf(f,
            "# concord demonstration users for %s (written by `concord demo`; readable by you only)\n"
            "password %s\n"
            "token %s\n",
            db, c->password, c->token);
    for (size_t i = 0; i < N_DEMO_USERS; i++)
        fprintf(f, "user %s %s %s\n", demo_users[i].name, demo_users[i].role,
                demo_users[i].org ? demo_users[i].org : "-");
    fclose(f);
    return 0;
}

static void print_users(const demo_creds *c, const char *base);

static void banner(const char *base, void *arg) {
    const demo_creds *c = arg;
    printf("\nconcord is running.\n\n"
           "  Landing page:        %s/   (sign in there, then the links below open in the browser)\n"
           "  FHIR API base:       %s/fhir\n"
           "  CapabilityStatement: %s/fhir/metadata\n"
           "  Patients:            %s/fhir/Patient?_count=20\n"
           "  One person's record: %s/fhir/Patient/p0000001/$everything\n"
           "  By NHS number:       %s/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018\n"
           "  Their HbA1c results: %s/fhir/Observation?code=http://snomed.info/sct|999791000000106&_sort=-date\n"
           "  Admissions:          %s/fhir/Encounter?class=IMP&_count=20\n"
           "  A GP practice:       %s/fhir/Organization/org-Z90001\n"
           "  Its risk worklist:   %s/fhir/$risk-worklist?practice=Z90001\n"
           "  Access log:          %s/fhir/$access-log   (as privacy or p0000001)\n",
           base, base, base, base, base, base, base, base, base, base, base);
    print_users(c, base);
}

static void print_users(const demo_creds *c, const char *base) {
    printf("\nDemo users, one per role:\n");
    for (size_t i = 0; i < N_DEMO_USERS; i++)
        printf("  %-18s %-16s %s\n", demo_users[i].name, demo_users[i].role,
               demo_users[i].org ? demo_users[i].org : "");
    if (c && c->known) {
        printf("  Password for each: %s\n", c->password);
        printf("\nFrom the command line, as gp.z90001:\n"
               "  curl -H 'Authorization: Bearer %s' '%s/fhir/Patient/p0000001/$everything'\n",
               c->token, base);
    } else if (c && c->existed_without_file) {
        printf("  (their password file is missing: set one with `concord user reset NAME`,"
               " make a token with `concord token create --user NAME`)\n");
    }
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
    if (serve) { /* before minutes of loading: a listener off loopback needs TLS */
        int lc = cli_check_listeners(&o);
        if (lc) return lc;
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
    demo_creds creds;
    if (rc == 0) rc = ensure_demo_users(s, o.db, &creds);
    if (rc == 0 && serve) rc = cli_serve_until_signal(s, &o, banner, &creds);
    else if (rc == 0) print_users(&creds, "http://ADDR:PORT");
    store_close(s);
    return rc;
}
