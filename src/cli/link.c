/*
 * link.c — `concord link`: the patient registry from the command line.
 *
 *   concord link train   [--db DB] [--user NAME]
 *   concord link run     [--db DB] [--rebuild] [--dry-run] [--user NAME] [--json]
 *   concord link review  list [--status open|accepted|rejected|superseded|all] [--limit N]
 *   concord link review  show ID
 *   concord link review  accept|reject ID [--user NAME] [--note TEXT]
 *   concord link merge   KEEP RETIRE [--user NAME] [--reason TEXT]
 *   concord link unmerge EVENT [--user NAME]
 *   concord link history [PERSON] [--limit N]
 *   concord link show    PERSON            (Person/ID, Patient/ID or an id)
 *   concord link model   (the model in use, as JSON)
 *   concord link dump    (the link state, canonical text: for comparing states)
 *   concord link eval    DIR [...]        (linkage of a synth directory against its ground truth)
 *
 * Who did it: --user, else $USER, else "cli". Exit codes as everywhere: 0
 * success, 1 failure, 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../registry/linkeval.h"
#include "../registry/registry.h"
#include "cli.h"

static int usage(const char *msg, const char *arg) {
    fprintf(stderr, "concord link: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\nusage: concord link train|run|review|merge|unmerge|history|show|model|dump|eval ... "
                    "(concord --help)\n");
    return 2;
}

/* Print JSON text indented, or as it is if it does not parse. */
static void print_json(const buf *b) {
    json_error_t je;
    json_t *j = json_loadb(b->p ? b->p : "", b->len, 0, &je);
    if (!j) {
        fwrite(b->p, 1, b->len, stdout);
        putchar('\n');
        return;
    }
    char *t = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    puts(t ? t : "");
    free(t);
    json_decref(j);
}

static int fail(const err *e) {
    fprintf(stderr, "concord link: %s%s%s\n", e->msg, e->where[0] ? " at " : "", e->where);
    return 1;
}

typedef struct link_args {
    cli_opts o;
    const char *user, *note, *reason, *status;
    int limit, rebuild, dry_run, json;
    const char *pos[4];
    int npos;
} link_args;

static int parse(link_args *a, int argc, char **argv, int first) {
    cli_defaults(&a->o);
    a->user = getenv("USER");
    if (!a->user || !*a->user) a->user = "cli";
    for (int i = first; i < argc; i++) {
        const char *s = argv[i];
        int r = cli_parse_common(&a->o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
#define VAL(field)                                                                                           \
    do {                                                                                                     \
        if (i + 1 >= argc) return usage("%s needs a value", s);                                              \
        a->field = argv[++i];                                                                                \
    } while (0)
        if (strcmp(s, "--user") == 0)
            VAL(user);
        else if (strcmp(s, "--note") == 0)
            VAL(note);
        else if (strcmp(s, "--reason") == 0)
            VAL(reason);
        else if (strcmp(s, "--status") == 0)
            VAL(status);
        else if (strcmp(s, "--limit") == 0) {
            if (i + 1 >= argc) return usage("%s needs a value", s);
            a->limit = atoi(argv[++i]);
        } else if (strcmp(s, "--rebuild") == 0)
            a->rebuild = 1;
        else if (strcmp(s, "--dry-run") == 0)
            a->dry_run = 1;
        else if (strcmp(s, "--json") == 0)
            a->json = 1;
        else if (s[0] == '-' && s[1])
            return usage("unknown option '%s'", s);
        else if (a->npos < 4)
            a->pos[a->npos++] = s;
        else
            return usage("too many arguments at '%s'", s);
#undef VAL
    }
    return 0;
}

static int parse_key(const char *s, int64_t *out) {
    char *end;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || v < 1) return 0;
    *out = v;
    return 1;
}

static void print_run(const registry_run_report *p, int dry) {
    printf("%s%zu source records, %zu candidate pairs scored\n", dry ? "dry run (nothing written): " : "",
           p->records, p->candidate_pairs);
    if (p->records_added || p->records_updated || p->records_removed)
        printf("rebuild: %zu records added, %zu updated, %zu removed (their Patient deleted)\n",
               p->records_added, p->records_updated, p->records_removed);
    printf("persons: %zu before, %zu after (%zu created, %zu retired, %zu Person resources rewritten)\n",
           p->persons_before, p->persons_after, p->persons_created, p->persons_retired, p->persons_rewritten);
    printf("changes: %zu records moved; %llu pairs of records linked, %llu links broken\n", p->moved,
           (unsigned long long)p->links_made, (unsigned long long)p->links_broken);
    printf("review: %zu opened, %zu closed (settled by the run), %zu open now\n", p->reviews_opened,
           p->reviews_closed, p->reviews_open);
    printf("decisions respected: %zu keep-together, %zu keep-apart (%zu links held back by them); %zu links "
           "held "
           "back because the two persons hold different NHS numbers\n",
           p->constraints_same, p->constraints_apart, p->blocked_by_apart, p->blocked_by_nhs);
    printf("time: load %.2f s, score %.2f s, cluster %.2f s, write %.2f s, total %.2f s\n", p->seconds_load,
           p->seconds_score, p->seconds_cluster, p->seconds_write, p->seconds_total);
}

int cmd_link(int argc, char **argv) {
    if (argc < 2) return usage("a subcommand is needed%s", "");
    const char *sub = argv[1];
    if (strcmp(sub, "eval") == 0) return linkeval_main(argc - 1, argv + 1);
    link_args a;
    memset(&a, 0, sizeof a);
    int first = 2;
    const char *action = NULL;
    if (strcmp(sub, "review") == 0) {
        if (argc < 3) return usage("review needs list, show, accept or reject%s", "");
        action = argv[2];
        first = 3;
    }
    int r = parse(&a, argc, argv, first);
    if (r) return r;
    store *s = NULL;
    if (cli_open_store(&a.o, 1, &s)) return 1;
    registry *reg = registry_of(s), *own = NULL;
    err e;
    err_clear(&e);
    int rc = 0;
    if (!reg) { /* CONCORD_REGISTRY=off still allows the registry's own commands */
        if (registry_open(s, &own, &e) != ST_OK) {
            rc = fail(&e);
            goto out;
        }
        reg = own;
    }
    buf b = {0};
    int64_t key = 0, ev = 0;
    if (strcmp(sub, "train") == 0) {
        registry_train_report rep;
        if (registry_train(reg, a.user, &rep, &e) != ST_OK) {
            rc = fail(&e);
        } else {
            printf("model version %lld trained on %zu source records in %.2f s (load %.2f s); prior P(match) "
                   "= %.3g\n",
                   (long long)rep.version, rep.records, rep.seconds_train, rep.seconds_load, rep.lambda);
        }
    } else if (strcmp(sub, "run") == 0) {
        registry_run_opts ro = {a.rebuild, a.dry_run, a.user};
        registry_run_report rep;
        if (registry_run(reg, &ro, &rep, &e) != ST_OK) {
            rc = fail(&e);
        } else if (a.json) {
            registry_run_report_json(&rep, &b);
            puts(b.p);
        } else {
            print_run(&rep, a.dry_run);
        }
    } else if (strcmp(sub, "review") == 0) {
        if (strcmp(action, "list") == 0) {
            if (registry_review_list(reg, a.status ? a.status : "open", a.limit, &b, &e) != ST_OK)
                rc = fail(&e);
            else
                print_json(&b);
        } else if (strcmp(action, "show") == 0 || strcmp(action, "accept") == 0 ||
                   strcmp(action, "reject") == 0) {
            if (a.npos != 1 || !parse_key(a.pos[0], &key)) {
                rc = usage("review %s needs a review item id", action);
            } else if (strcmp(action, "show") == 0) {
                if (registry_review_show(reg, key, &b, &e) != ST_OK)
                    rc = fail(&e);
                else
                    print_json(&b);
            } else if (registry_review_decide(reg, key, strcmp(action, "accept") == 0, a.user, a.note, &b,
                                              &e) != ST_OK) {
                rc = fail(&e);
            } else {
                print_json(&b);
            }
        } else {
            rc = usage("review: unknown action '%s'", action);
        }
    } else if (strcmp(sub, "merge") == 0) {
        if (a.npos != 2)
            rc = usage("merge needs two persons: KEEP RETIRE (Person/ID or Patient/ID)%s", "");
        else if (registry_merge(reg, a.pos[0], a.pos[1], a.user, a.reason, &ev, &e) != ST_OK)
            rc = fail(&e);
        else
            printf("merged %s into %s: history event %lld (undo with: concord link unmerge %lld)\n", a.pos[1],
                   a.pos[0], (long long)ev, (long long)ev);
    } else if (strcmp(sub, "unmerge") == 0) {
        if (a.npos != 1 || !parse_key(a.pos[0], &key))
            rc = usage("unmerge needs the merge's history event id%s", "");
        else if (registry_unmerge(reg, key, a.user, &ev, &e) != ST_OK)
            rc = fail(&e);
        else
            printf("merge %lld undone: history event %lld\n", (long long)key, (long long)ev);
    } else if (strcmp(sub, "history") == 0) {
        if (registry_history(reg, a.npos ? a.pos[0] : NULL, a.limit, &b, &e) != ST_OK)
            rc = fail(&e);
        else
            print_json(&b);
    } else if (strcmp(sub, "show") == 0) {
        if (a.npos != 1)
            rc = usage("show needs a person (Person/ID, Patient/ID or an id)%s", "");
        else if (registry_person_show(reg, a.pos[0], &b, &e) != ST_OK)
            rc = fail(&e);
        else
            print_json(&b);
    } else if (strcmp(sub, "model") == 0) {
        fs_model m;
        int64_t ver = 0;
        if (registry_model(reg, &m, &ver, &e) != ST_OK) {
            rc = fail(&e);
        } else {
            fprintf(stderr, "model version %lld%s\n", (long long)ver,
                    ver ? "" : " (the default: not trained yet)");
            fs_model_to_json(&m, &b);
            fwrite(b.p, 1, b.len, stdout);
        }
    } else if (strcmp(sub, "dump") == 0) {
        if (registry_dump(reg, &b, &e) != ST_OK)
            rc = fail(&e);
        else
            fwrite(b.p ? b.p : "", 1, b.len, stdout);
    } else {
        rc = usage("unknown subcommand '%s'", sub);
    }
    buf_free(&b);
out:
    registry_close(own);
    store_close(s);
    return rc;
}
