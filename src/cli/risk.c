/*
 * risk.c — `concord risk ...`: risk stratification from the command line
 * (src/risk, docs/risk.md).
 *
 *   concord risk facts --rebuild              rebuild every person's facts from the stored resources
 *   concord risk facts --show PATIENT         one person's fact lines
 *   concord risk facts --synth N [--seed S]   facts of a synthetic population without its resources
 * (benchmarks) concord risk deprivation --load FILE.csv  postcode -> IMD decile lookup (NSPL, or synth's
 * people.csv) concord risk train [--index-date D] [--validate-date D] [--ridge X] [--out DIR] [--no-install]
 *   concord risk run [--as-of D] [--tiers 0.5,4.5,15] [--model FILE] [--no-resources] [--json]
 *   concord risk rescore [--patient ID]       drain the rescoring queue, or rescore one person
 *   concord risk rescore --bench N            time rescoring after a new emergency admission, N people
 *   concord risk worklist --practice ODS | --mdg ID | --cohort 75plus|diabetes | --tier T
 *                         [--no-care-plan] [--not-reviewed-months N] [--limit N] [--json]
 *   concord risk show PATIENT [--json]        one person's scores and explanation
 *   concord risk events [--after N]           tier changes
 *   concord risk hfrs|charlson CODE...        an index of ICD-10 codes (checks the code lists)
 *
 * Every subcommand takes --db and --risk-data DIR (the code lists; default
 * data/risk, else the source tree's). Exit codes: 0 done, 1 failed, 2 usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "../fhir/json.h"
#include "../risk/risk.h"
#include "../risk/risk_int.h"
#include "../store/store.h"
#include "../synth/synth.h"
#include "cli.h"

#ifndef CONCORD_SOURCE_DIR
#define CONCORD_SOURCE_DIR "."
#endif

const char *cli_risk_data_dir(const char *given) {
    if (given) return given;
    const char *env = getenv("CONCORD_RISK_DATA");
    if (env && *env) return env;
    struct stat st;
    if (stat("data/risk/hfrs.tsv", &st) == 0) return "data/risk";
    return CONCORD_SOURCE_DIR "/data/risk";
}

static int usage(void) {
    fprintf(
        stderr,
        "usage: concord risk facts --rebuild | facts --show PATIENT | facts --synth N [--seed S]\n"
        "       concord risk deprivation --load FILE.csv\n"
        "       concord risk train [--index-date YYYY-MM-DD] [--validate-date YYYY-MM-DD] [--ridge X]\n"
        "                          [--out DIR] [--no-install]\n"
        "       concord risk run [--as-of YYYY-MM-DD] [--tiers 0.5,4.5,15] [--model FILE] [--no-resources]"
        " [--json]\n"
        "       concord risk rescore [--patient ID] | rescore --bench N\n"
        "       concord risk worklist --practice ODS | --mdg ID | --cohort 75plus|diabetes | --tier T\n"
        "                             [--no-care-plan] [--not-reviewed-months N] [--limit N] [--json]\n"
        "       concord risk show PATIENT [--json]\n"
        "       concord risk events [--after N]\n"
        "       concord risk hfrs|charlson ICD10-CODE...\n"
        "common: --db DB, --risk-data DIR (code lists; default data/risk)\n");
    return 2;
}

static int fail(const char *what, const err *e) {
    fprintf(stderr, "concord: risk %s: %s\n", what, e->msg);
    return 1;
}

static int parse_date_opt(const char *opt, const char *v, int32_t *out) {
    int32_t d = risk_parse_day(v);
    if (d == RK_NODAY || strlen(v) != 10) {
        fprintf(stderr, "concord: risk: %s takes a date YYYY-MM-DD, not '%s'\n", opt, v);
        return 2;
    }
    *out = d;
    return 0;
}

static void progress(void *arg, int64_t people, int64_t resources) {
    (void)arg;
    if (isatty(2))
        fprintf(stderr, "\r  %lld people, %lld resources", (long long)people, (long long)resources);
}

static void print_json(json_t *j) {
    char *t = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    puts(t ? t : "{}");
    free(t);
}

/* ---- facts straight from the synthetic generator ------------------------------------------ */

/* For benchmarks at sizes whose resources would not fit the machine: the
 * synthetic population's resources go through the same extraction as the
 * facts hook, but only the facts (and the organisations) are stored. */
typedef struct synth_loader {
    store *s;
    store_txn *tx;
    buf facts;
    char pid[32];
    int64_t rkey, people, resources;
    err e;
    int failed;
} synth_loader;

static int synth_fact(void *arg, const char *type, const char *id, const char *json, size_t len) {
    synth_loader *l = arg;
    (void)id;
    if (!strcmp(type, "Observation") || !strcmp(type, "Procedure")) return 0; /* risk reads neither */
    json_t *res = json_loadb(json, len, 0, NULL);
    if (!res) return 0;
    if (!strcmp(type, "Patient"))
        snprintf(l->pid, sizeof l->pid, "%s", json_string_value(json_object_get(res, "id")));
    rk_facts_extract(type, res, ++l->rkey, &l->facts);
    json_decref(res);
    l->resources++;
    return 0;
}

static int synth_org(void *arg, const char *type, const char *id, const char *json, size_t len) {
    synth_loader *l = arg;
    json_t *res = json_loadb(json, len, 0, NULL);
    store_meta m;
    int bad = !res || store_put(l->tx, res, id, 0, 0, &m, NULL, NULL, &l->e) != ST_OK;
    (void)type;
    json_decref(res);
    return bad;
}

static int facts_from_synth(store *s, int64_t patients, uint64_t seed) {
    synth_params sp;
    synth_params_default(&sp);
    sp.patients = patients;
    sp.seed = seed;
    synth_world *w = NULL;
    synth_loader l = {.s = s};
    if (synth_world_build(&sp, &w, &l.e) != ST_OK) return fail("facts --synth", &l.e);
    double t0 = rk_now_seconds();
    int rc = 0;
    if (store_begin(s, &l.tx, &l.e) != ST_OK || synth_world_foreach_org_resource(w, synth_org, &l) ||
        store_commit(l.tx, &l.e) != ST_OK) {
        synth_world_free(w);
        return fail("facts --synth", &l.e);
    }
    l.tx = NULL;
    for (int64_t i = 0; i < patients && !rc; i++) {
        if (!l.tx && store_begin(s, &l.tx, &l.e) != ST_OK) {
            rc = fail("facts --synth", &l.e);
            break;
        }
        buf_reset(&l.facts);
        l.pid[0] = 0;
        synth_world_foreach_resource(w, i, 1, synth_fact, &l);
        if (l.pid[0] &&
            risk_facts_write(l.tx, l.pid, l.facts.p ? l.facts.p : "", l.facts.len, &l.e) != ST_OK) {
            rc = fail("facts --synth", &l.e);
            break;
        }
        l.people++;
        if (l.people % 5000 == 0 || i == patients - 1) {
            if (store_commit(l.tx, &l.e) != ST_OK) rc = fail("facts --synth", &l.e);
            l.tx = NULL;
            if (isatty(2))
                fprintf(stderr, "\r  %lld people, %lld resources read", (long long)l.people,
                        (long long)l.resources);
        }
    }
    if (l.tx) store_rollback(l.tx);
    if (isatty(2)) fputc('\n', stderr);
    if (!rc)
        printf("stored the facts of %lld synthetic people (%lld resources read, not stored) in %.1f s\n",
               (long long)l.people, (long long)l.resources, rk_now_seconds() - t0);
    buf_free(&l.facts);
    synth_world_free(w);
    return rc;
}

/* ---- after `concord demo` has loaded a population --------------------------------------- */

int cli_risk_demo(store *s, int end_year) {
    err e;
    err_clear(&e);
    risk_codes *c = NULL;
    risk_model *m = NULL;
    risk_train_result tr = {0};
    if (risk_codes_load(cli_risk_data_dir(NULL), &c, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: risk stratification skipped: %s\n", e.msg);
        return 0;
    }
    risk_train_opts to = {.index_day = RK_NODAY, .validate_day = RK_NODAY, .ridge = 1, .install = 1};
    char day[32];
    snprintf(day, sizeof day, "%04d-01-01", end_year + 1);
    risk_run_opts ro = {.as_of = risk_parse_day(day), .write_resources = 1};
    risk_tiers_default(c, &ro.tiers);
    risk_run_stats rs;
    if (risk_train(s, c, &to, &m, &tr, &e) != ST_OK || risk_run(s, c, m, &ro, &rs, &e) != ST_OK) {
        fprintf(stderr, "concord: demo: risk stratification skipped: %s\n", e.msg);
    } else {
        printf("Risk stratification as of %s: model %s (validation AUROC %.3f, calibration slope %.2f);"
               " %lld people scored in %.1f s.\n",
               day, tr.version, tr.auroc, tr.cal_slope, (long long)rs.scored, rs.t_total);
        fflush(stdout);
    }
    free(tr.report_text);
    risk_model_free(m);
    risk_codes_free(c);
    return 0;
}

/* ---- the command ---------------------------------------------------------------------------- */

int cmd_risk(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    if (argc < 2) return usage();
    const char *verb = argv[1];
    const char *data = NULL, *model_file = NULL, *out_dir = NULL, *show = NULL, *load = NULL, *patient = NULL;
    const char *tiers = NULL;
    int rebuild = 0, json_out = 0, no_resources = 0, no_install = 0, bench = 0;
    int64_t synth_n = 0;
    uint64_t seed = 1;
    int32_t as_of = RK_NODAY, index_day = RK_NODAY, validate_day = RK_NODAY;
    double ridge = 0;
    int64_t after = 0;
    risk_worklist_query q = {.limit = 50};
    const char *args[64];
    int nargs = 0;
    for (int i = 2; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL()                                                                                                \
    do {                                                                                                     \
        if (!v) {                                                                                            \
            fprintf(stderr, "concord: risk: %s needs a value\n", a);                                         \
            return 2;                                                                                        \
        }                                                                                                    \
        i++;                                                                                                 \
    } while (0)
        if (!strcmp(a, "--risk-data")) {
            VAL();
            data = v;
        } else if (!strcmp(a, "--rebuild"))
            rebuild = 1;
        else if (!strcmp(a, "--show")) {
            VAL();
            show = v;
        } else if (!strcmp(a, "--synth")) {
            VAL();
            synth_n = atoll(v);
            if (synth_n < 1) return usage();
        } else if (!strcmp(a, "--seed")) {
            VAL();
            seed = strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--load")) {
            VAL();
            load = v;
        } else if (!strcmp(a, "--model")) {
            VAL();
            model_file = v;
        } else if (!strcmp(a, "--out")) {
            VAL();
            out_dir = v;
        } else if (!strcmp(a, "--json"))
            json_out = 1;
        else if (!strcmp(a, "--no-resources"))
            no_resources = 1;
        else if (!strcmp(a, "--no-install"))
            no_install = 1;
        else if (!strcmp(a, "--tiers")) {
            VAL();
            tiers = v;
        } else if (!strcmp(a, "--ridge")) {
            VAL();
            ridge = atof(v);
        } else if (!strcmp(a, "--as-of")) {
            VAL();
            if (parse_date_opt(a, v, &as_of)) return 2;
        } else if (!strcmp(a, "--index-date")) {
            VAL();
            if (parse_date_opt(a, v, &index_day)) return 2;
        } else if (!strcmp(a, "--validate-date")) {
            VAL();
            if (parse_date_opt(a, v, &validate_day)) return 2;
        } else if (!strcmp(a, "--patient")) {
            VAL();
            patient = v;
        } else if (!strcmp(a, "--bench")) {
            VAL();
            bench = atoi(v);
            if (bench < 1 || bench > 100000) return usage();
        } else if (!strcmp(a, "--practice")) {
            VAL();
            q.practice = v;
        } else if (!strcmp(a, "--mdg")) {
            VAL();
            q.mdg = v;
        } else if (!strcmp(a, "--cohort")) {
            VAL();
            q.cohort = v;
        } else if (!strcmp(a, "--tier")) {
            VAL();
            q.tier = v;
        } else if (!strcmp(a, "--no-care-plan"))
            q.no_care_plan = 1;
        else if (!strcmp(a, "--not-reviewed-months")) {
            VAL();
            q.not_reviewed_months = atoi(v);
            if (q.not_reviewed_months < 1) return usage();
        } else if (!strcmp(a, "--limit")) {
            VAL();
            q.limit = atoi(v);
            if (q.limit < 1) return usage();
        } else if (!strcmp(a, "--offset")) {
            VAL();
            q.offset = atoi(v);
        } else if (!strcmp(a, "--after")) {
            VAL();
            after = atoll(v);
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "concord: risk %s: unknown option '%s'\n", verb, a);
            return 2;
        } else if (nargs < 64)
            args[nargs++] = a;
#undef VAL
    }
    data = cli_risk_data_dir(data);
    err e;
    err_clear(&e);
    risk_codes *c = NULL;
    int needs_codes = strcmp(verb, "facts") && strcmp(verb, "deprivation") && strcmp(verb, "worklist") &&
                      strcmp(verb, "show") && strcmp(verb, "events");
    if (needs_codes && risk_codes_load(data, &c, &e) != ST_OK) return fail(verb, &e);

    /* the index calculators need no database */
    if (!strcmp(verb, "hfrs") || !strcmp(verb, "charlson")) {
        if (!nargs) {
            risk_codes_free(c);
            return usage();
        }
        if (!strcmp(verb, "hfrs"))
            printf("%.1f\n", rk_hfrs_of_codes(c, args, nargs) / 10.0);
        else
            printf("%d (1987 weights), %d (2011 weights)\n", rk_charlson_of_codes(c, args, nargs, 0),
                   rk_charlson_of_codes(c, args, nargs, 1));
        risk_codes_free(c);
        return 0;
    }

    store *s = NULL;
    risk_model *m = NULL;
    int rc = 0;
    if (store_open(o.db, 1, &s, &e) != ST_OK) {
        risk_codes_free(c);
        return fail(verb, &e);
    }
    /* the facts hook, so that what this command writes (rescore --bench)
     * keeps facts current like every other writer */
    if (risk_install(s, &e) != ST_OK) {
        rc = fail(verb, &e);
        goto out;
    }
    if (!strcmp(verb, "facts")) {
        if (rebuild) {
            int64_t people = 0, resources = 0;
            double t0 = rk_now_seconds();
            if (risk_facts_rebuild(s, progress, NULL, &people, &resources, &e) != ST_OK)
                rc = fail(verb, &e);
            else {
                if (isatty(2)) fputc('\n', stderr);
                printf("rebuilt the facts of %lld people from %lld resources in %.1f s;"
                       " everyone is marked for rescoring: `concord risk run` scores them all at once\n",
                       (long long)people, (long long)resources, rk_now_seconds() - t0);
            }
        } else if (synth_n) {
            rc = facts_from_synth(s, synth_n, seed);
        } else if (show) {
            buf b = {0};
            if (risk_facts_show(s, show, &b, &e) != ST_OK)
                rc = fail(verb, &e);
            else
                fputs(b.p ? b.p : "", stdout);
            buf_free(&b);
        } else {
            rc = usage();
        }
    } else if (!strcmp(verb, "deprivation")) {
        int64_t rows = 0;
        if (!load)
            rc = usage();
        else if (risk_deprivation_load(s, load, &rows, &e) != ST_OK)
            rc = fail(verb, &e);
        else
            printf("loaded %lld postcodes with their IMD decile from %s\n", (long long)rows, load);
    } else if (!strcmp(verb, "train")) {
        risk_train_opts to = {.index_day = index_day,
                              .validate_day = validate_day,
                              .ridge = ridge,
                              .out_dir = out_dir,
                              .install = !no_install};
        risk_train_result tr;
        if (risk_train(s, c, &to, NULL, &tr, &e) != ST_OK)
            rc = fail(verb, &e);
        else {
            fputs(tr.report_text, stdout);
            if (out_dir)
                printf("\nWritten: %s/model.json, report.txt, report.json, calibration.svg\n", out_dir);
            if (!no_install) printf("Model %s is now the active model of this database.\n", tr.version);
            free(tr.report_text);
        }
    } else if (!strcmp(verb, "run")) {
        risk_run_opts ro = {.as_of = as_of, .write_resources = !no_resources};
        if (tiers) {
            if (risk_tiers_parse(tiers, &ro.tiers, &e) != ST_OK) {
                fprintf(stderr, "concord: risk run: %s\n", e.msg);
                rc = 2;
                goto out;
            }
        } else {
            risk_tiers_default(c, &ro.tiers);
        }
        status st =
            model_file ? risk_model_load_file(model_file, c, &m, &e) : risk_model_load_active(s, c, &m, &e);
        if (st == ST_OK && model_file) st = risk_model_install(s, m, &e);
        risk_run_stats rs;
        if (st != ST_OK || risk_run(s, c, m, &ro, &rs, &e) != ST_OK) {
            rc = fail(verb, &e);
            goto out;
        }
        char day[11];
        risk_format_day(ro.as_of == RK_NODAY ? risk_today() : ro.as_of, day);
        if (json_out) {
            printf("{\"as_of\": \"%s\", \"model\": \"%s\", \"people\": %lld, \"scored\": %lld, "
                   "\"insufficient\": %lld,"
                   " \"not_registered\": %lld, \"deceased\": %lld, \"resources_written\": %lld, "
                   "\"rows_written\": %lld, \"tier_changes\": %lld,"
                   " \"seconds\": {\"read\": %.3f, \"score\": %.3f, \"tiers\": %.3f, \"resources\": %.3f,"
                   " \"results\": %.3f, \"total\": %.3f}, \"thresholds\": [",
                   day, m->version, (long long)rs.people, (long long)rs.scored, (long long)rs.insufficient,
                   (long long)rs.not_registered, (long long)rs.deceased, (long long)rs.resources_written,
                   (long long)rs.rows_written, (long long)rs.tier_changes, rs.t_read, rs.t_score, rs.t_tier,
                   rs.t_resources, rs.t_results, rs.t_total);
            for (int k = 0; k < ro.tiers.n - 1; k++)
                printf("%s%.6f", k ? ", " : "", rs.thresholds[k]);
            printf("]}\n");
        } else {
            printf("risk run as of %s with model %s\n", day, m->version);
            printf(
                "  people %lld: scored %lld, too little data %lld, registration ended %lld, deceased %lld\n",
                (long long)rs.people, (long long)rs.scored, (long long)rs.insufficient,
                (long long)rs.not_registered, (long long)rs.deceased);
            for (int k = 0; k < ro.tiers.n; k++) {
                if (k < ro.tiers.n - 1)
                    printf("  tier %-10s top %5.2f%%  from p >= %.4f\n", ro.tiers.name[k],
                           ro.tiers.percent[k], rs.thresholds[k]);
                else
                    printf("  tier %-10s the rest\n", ro.tiers.name[k]);
            }
            printf("  RiskAssessments written %lld, score rows written %lld, tier changes %lld\n",
                   (long long)rs.resources_written, (long long)rs.rows_written, (long long)rs.tier_changes);
            printf("  time: read %.2f s, score %.2f s, tiers %.2f s, resources %.2f s, results %.2f s; total "
                   "%.2f s\n",
                   rs.t_read, rs.t_score, rs.t_tier, rs.t_resources, rs.t_results, rs.t_total);
        }
    } else if (!strcmp(verb, "rescore")) {
        if (risk_model_load_active(s, c, &m, &e) != ST_OK) {
            rc = fail(verb, &e);
            goto out;
        }
        if (bench) {
            json_t *r = NULL;
            if (risk_rescore_bench(s, c, m, bench, &r, &e) != ST_OK)
                rc = fail(verb, &e);
            else {
                print_json(r);
                json_decref(r);
            }
        } else if (patient) {
            if (risk_rescore_patient(s, c, m, patient, &e) != ST_OK)
                rc = fail(verb, &e);
            else
                printf("rescored %s\n", patient);
        } else {
            int64_t total = 0;
            int done;
            do {
                if (risk_rescore_dirty(s, c, m, 500, &done, &e) != ST_OK) {
                    rc = fail(verb, &e);
                    goto out;
                }
                total += done;
            } while (done == 500);
            printf("rescored %lld people whose facts had changed\n", (long long)total);
        }
    } else if (!strcmp(verb, "worklist")) {
        if (!q.practice && !q.mdg && !q.cohort && !q.tier) {
            rc = usage();
            goto out;
        }
        json_t *w = NULL;
        if (risk_worklist(s, &q, &w, &e) != ST_OK) {
            rc = fail(verb, &e);
            goto out;
        }
        if (json_out)
            print_json(w);
        else {
            json_t *rows = json_object_get(w, "rows");
            printf("%lld people (as of %s, model %s); showing %zu\n",
                   (long long)json_integer_value(json_object_get(w, "total")),
                   json_string_value(json_object_get(w, "as_of"))
                       ? json_string_value(json_object_get(w, "as_of"))
                       : "-",
                   json_string_value(json_object_get(w, "model"))
                       ? json_string_value(json_object_get(w, "model"))
                       : "-",
                   json_array_size(rows));
            printf("%5s  %-12s %-7s %3s %s  %7s  %-9s  %s\n", "rank", "patient", "practice", "age", "s",
                   "risk", "tier", "why");
            size_t i;
            json_t *r;
            json_array_foreach(rows, i, r) {
                printf("%5lld  %-12s %-7s %3lld %s  %6.2f%%  %-9s  %s\n",
                       (long long)json_integer_value(json_object_get(r, "rank")),
                       json_string_value(json_object_get(r, "patient")),
                       json_string_value(json_object_get(r, "practice")),
                       (long long)json_integer_value(json_object_get(r, "age")),
                       json_string_value(json_object_get(r, "sex")),
                       100 * json_real_value(json_object_get(r, "probability")),
                       json_string_value(json_object_get(r, "tier")),
                       json_string_value(json_object_get(r, "explanation")));
            }
        }
        json_decref(w);
    } else if (!strcmp(verb, "show")) {
        json_t *r = NULL;
        if (!nargs)
            rc = usage();
        else if (risk_patient_result(s, args[0], &r, &e) != ST_OK)
            rc = fail(verb, &e);
        else {
            print_json(r);
            json_decref(r);
        }
    } else if (!strcmp(verb, "events")) {
        json_t *r = NULL;
        if (risk_events(s, after, 1000, &r, &e) != ST_OK)
            rc = fail(verb, &e);
        else {
            print_json(r);
            json_decref(r);
        }
    } else {
        rc = usage();
    }
out:
    risk_model_free(m);
    store_close(s);
    risk_codes_free(c);
    return rc;
}
