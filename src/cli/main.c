/*
 * main.c — the `concord` command: one binary, subcommands in a table.
 *
 *   concord serve   [--db DB] [--http ADDR:PORT] [--threads N]
 *                   [--tls-cert FILE --tls-key FILE] [--mllp-peers FILE]
 *   concord demo    [--db DB] [--http ADDR:PORT] [--patients N] [--seed S] [--no-serve]
 *   concord migrate [--db DB]
 *   concord --help | --version
 *
 * --db means the same everywhere: a file path for SQLite (default
 * var/concord.db) or a postgresql:// URL. Exit codes: 0 success, 1 runtime
 * failure, 2 usage error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../access/audit.h"
#include "../access/auth.h"
#include "../access/policy.h"
#include "../base/log.h"
#include "../base/netaddr.h"
#include "../base/tls.h"
#include "../http/server.h"
#include "../ingest/import_service.h"
#include "../ingest/ingest.h"
#include "../ingest/mllp.h"
#include "../ingest/peers.h"
#include "../registry/registry.h"
#include "../risk/risk.h"
#include "../store/store.h"
#include "cli.h"

#ifndef CONCORD_VERSION
#define CONCORD_VERSION "dev"
#endif

const char *concord_version = CONCORD_VERSION;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "concord: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'concord --help'.\n");
    return 2;
}

int cli_parse_common(cli_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char *val = NULL;
#define NEXT()                                                                                                         \
    do {                                                                                                               \
        if (*i + 1 >= argc) return usage_error("%s needs a value", a);                                                 \
        val = argv[++*i];                                                                                              \
    } while (0)
    if (strcmp(a, "--db") == 0) {
        NEXT();
        o->db = val;
    } else if (strcmp(a, "--http") == 0) {
        NEXT();
        const char *colon = strrchr(val, ':');
        if (!colon) return usage_error("--http takes ADDR:PORT, not '%s'", val);
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 0 || port > 65535) return usage_error("bad port in --http '%s'", val);
        size_t n = (size_t)(colon - val);
        if (n >= sizeof o->http_addr) return usage_error("bad address in --http '%s'", val);
        memcpy(o->http_addr, val, n);
        o->http_addr[n] = 0;
        if (strcmp(o->http_addr, "localhost") == 0) snprintf(o->http_addr, sizeof o->http_addr, "127.0.0.1");
        o->http_port = (int)port;
    } else if (strcmp(a, "--mllp") == 0) {
        NEXT();
        if (strcmp(val, "off") == 0) {
            o->mllp_addr[0] = 0;
            return 0;
        }
        const char *colon = strrchr(val, ':');
        if (!colon) return usage_error("--mllp takes ADDR:PORT or off, not '%s'", val);
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 0 || port > 65535) return usage_error("bad port in --mllp '%s'", val);
        size_t n = (size_t)(colon - val);
        if (n >= sizeof o->mllp_addr || n == 0) return usage_error("bad address in --mllp '%s'", val);
        memcpy(o->mllp_addr, val, n);
        o->mllp_addr[n] = 0;
        if (strcmp(o->mllp_addr, "localhost") == 0) snprintf(o->mllp_addr, sizeof o->mllp_addr, "127.0.0.1");
        o->mllp_port = (int)port;
    } else if (strcmp(a, "--tls-cert") == 0) {
        NEXT();
        o->tls_cert = val;
    } else if (strcmp(a, "--tls-key") == 0) {
        NEXT();
        o->tls_key = val;
    } else if (strcmp(a, "--mllp-peers") == 0) {
        NEXT();
        o->mllp_peers = val;
    } else if (strcmp(a, "--mappings") == 0) {
        NEXT();
        o->mappings_dir = val;
    } else if (strcmp(a, "--import-dir") == 0) {
        NEXT();
        o->import_dir = val;
    } else if (strcmp(a, "--threads") == 0) {
        NEXT();
        o->threads = atoi(val);
        if (o->threads < 1 || o->threads > 256) return usage_error("--threads must be 1..256, not '%s'", val);
    } else if (strcmp(a, "--log-level") == 0) {
        NEXT();
        int l = log_level_parse(val);
        if (l < 0) return usage_error("--log-level is debug, info, warn or error, not '%s'", val);
        log_set_level((log_level)l);
    } else if (strcmp(a, "--max-body") == 0) {
        NEXT();
        char *end;
        long long v = strtoll(val, &end, 10);
        if (*end || v < 1024) return usage_error("--max-body takes a byte count >= 1024, not '%s'", val);
        o->max_body = (size_t)v;
    } else {
        return -1; /* not a common option */
    }
    return 0;
#undef NEXT
}

#ifndef CONCORD_SOURCE_DIR
#define CONCORD_SOURCE_DIR "."
#endif

const char *cli_mappings_dir(const cli_opts *o) {
    if (o->mappings_dir) return o->mappings_dir;
    struct stat st;
    if (stat("mappings", &st) == 0 && S_ISDIR(st.st_mode)) return "mappings";
    return CONCORD_SOURCE_DIR "/mappings"; /* a build run from elsewhere */
}

void cli_defaults(cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->db = getenv("CONCORD_DB");
    if (!o->db || !*o->db) o->db = STORE_DEFAULT_DB;
    snprintf(o->http_addr, sizeof o->http_addr, "127.0.0.1");
    o->http_port = 8080;
    snprintf(o->mllp_addr, sizeof o->mllp_addr, "127.0.0.1");
    o->mllp_port = MLLP_DEFAULT_PORT;
    o->import_dir = "var/import";
}

int cli_open_store(const cli_opts *o, int migrate, store **s) {
    err e;
    err_clear(&e);
    if (store_open(o->db, migrate, s, &e) != ST_OK) {
        fprintf(stderr, "concord: %s\n", e.msg);
        return 1;
    }
    /* every Patient written from here on is linked to a person (docs/registry.md) */
    if (migrate && registry_attach(*s, &e) != ST_OK) {
        fprintf(stderr, "concord: registry: %s\n", e.msg);
        store_close(*s);
        *s = NULL; /* callers may close what they got */
        return 1;
    }
    /* every write labelled (recording organisation, sensitive categories)
     * and the legitimate relationships, consent objections and the
     * organisation directory kept in step (docs/access.md) */
    const char *acc_dir = getenv("CONCORD_ACCESS_DATA");
    if (!acc_dir || !*acc_dir) {
        struct stat sb;
        acc_dir = stat("data/access/sensitive-codes.tsv", &sb) == 0 ? "data/access" : CONCORD_SOURCE_DIR "/data/access";
    }
    if (acc_policy_init(acc_dir, &e) != ST_OK || (migrate && acc_rel_attach(*s, &e) != ST_OK)) {
        fprintf(stderr, "concord: access: %s%s%s\n", e.where[0] ? e.where : "", e.where[0] ? ": " : "", e.msg);
        store_close(*s);
        *s = NULL; /* callers may close what they got */
        return 1;
    }
    /* every person's risk facts kept current as data arrives (docs/risk.md) */
    if (migrate && risk_install(*s, &e) != ST_OK) {
        fprintf(stderr, "concord: risk: %s\n", e.msg);
        store_close(*s);
        *s = NULL; /* callers may close what they got */
        return 1;
    }
    /* the command itself, in the access log, before it reads or writes */
    if (migrate && cli_audit_command(*s, o->db)) {
        store_close(*s);
        *s = NULL;
        return 1;
    }
    return 0;
}

int cli_check_listeners(const cli_opts *o) {
    if (!o->tls_cert != !o->tls_key)
        return usage_error("%s: TLS needs both --tls-cert FILE and --tls-key FILE",
                           o->tls_cert ? "--tls-cert" : "--tls-key");
    /* without TLS, nothing leaves the machine: passwords, tokens, session
     * cookies and patients' records would cross the network in clear */
    if (!o->tls_cert && !netaddr_text_is_loopback(o->http_addr))
        return usage_error("--http %s: listening beyond this machine needs TLS: give --tls-cert FILE "
                           "--tls-key FILE, or listen on 127.0.0.1",
                           o->http_addr);
    if (o->mllp_addr[0] && !netaddr_text_is_loopback(o->mllp_addr)) {
        if (!o->tls_cert)
            return usage_error("--mllp %s: listening beyond this machine needs TLS: give --tls-cert FILE "
                               "--tls-key FILE, or listen on 127.0.0.1",
                               o->mllp_addr);
        if (!o->mllp_peers)
            return usage_error("--mllp %s: listening beyond this machine needs --mllp-peers FILE, which says "
                               "who may send and as which organisations (docs/tls.md)",
                               o->mllp_addr);
    }
    return 0;
}

int cli_serve_until_signal(store *s, const cli_opts *o, void (*banner)(const char *base, void *), void *arg) {
    int rc = cli_check_listeners(o);
    if (rc) return rc;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* workers inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    http_config cfg = {
        .addr = o->http_addr,
        .port = o->http_port,
        .threads = o->threads,
        .max_body = o->max_body,
        .version = concord_version,
    };
    http_server *h = NULL;
    ingest *g = NULL;
    mllp_server *ml = NULL;
    import_service *imp = NULL;
    risk_service *risk = NULL;
    tls_server *tls = NULL;
    peers *mllp_peers = NULL;
    auth *au = NULL;
    audit_log *al = NULL;
    err e;
    rc = 1;
    /* transport security (docs/tls.md): HTTPS and MLLP over TLS with the
     * certificate, and who may send HL7 as whom */
    if (o->tls_cert && tls_server_load(o->tls_cert, o->tls_key, &tls, &e) != ST_OK) {
        fprintf(stderr, "concord: %s\n", e.msg);
        goto out;
    }
    if (o->mllp_addr[0] && o->mllp_peers && peers_load(o->mllp_peers, &mllp_peers, &e) != ST_OK) {
        fprintf(stderr, "concord: --mllp-peers: %s%s%s\n", e.where[0] ? e.where : "", e.where[0] ? ": " : "",
                e.msg);
        goto out;
    }
    /* who may see what (docs/access.md): every API request authenticates,
     * is authorised, and is written to the access log */
    char key[1024];
    audit_default_key_path(o->db, key, sizeof key);
    audit_config acfg = {.key_path = key};
    auth_config aucfg = {.secure_cookies = tls != NULL}; /* Secure, __Host- cookies over HTTPS */
    if (auth_open(s, &aucfg, &au, &e) != ST_OK || audit_open(s, &acfg, &al, &e) != ST_OK) {
        fprintf(stderr, "concord: access: %s%s%s\n", e.where[0] ? e.where : "", e.where[0] ? ": " : "", e.msg);
        goto out;
    }
    cfg.auth = au;
    cfg.audit = al;
    if (tls) {
        cfg.tls_cert_pem = tls_server_cert_pem(tls);
        cfg.tls_key_pem = tls_server_key_pem(tls);
    }
    if (ingest_start(s, 0, &g, &e) != ST_OK) {
        fprintf(stderr, "concord: %s\n", e.msg);
        goto out;
    }
    mllp_config mcfg = {
        .addr = o->mllp_addr,
        .port = o->mllp_port,
        .tls = tls,
        .peers = mllp_peers,
        .audit = al,
    };
    if (o->mllp_addr[0] && mllp_start(g, &mcfg, &ml, &e) != ST_OK) {
        fprintf(stderr, "concord: %s (use --mllp ADDR:PORT, or --mllp off)\n", e.msg);
        goto out;
    }
    if (import_service_start(s, g, o->import_dir, cli_mappings_dir(o), &imp, &e) != ST_OK) {
        fprintf(stderr, "concord: %s (use --import-dir DIR)\n", e.msg);
        goto out;
    }
    cfg.ext[cfg.n_ext++] = (rest_ext){import_service_routes, import_service_nroutes, imp};
    if (registry_of(s)) cfg.ext[cfg.n_ext++] = (rest_ext){registry_routes, registry_nroutes, registry_of(s)};
    /* risk routes and rescoring as data arrives (docs/risk.md) */
    if (risk_service_start(s, cli_risk_data_dir(NULL), &risk, &e) == ST_OK)
        cfg.ext[cfg.n_ext++] = (rest_ext){risk_service_routes, risk_service_nroutes, risk};
    else
        log_warn("risk stratification is off: %s", e.msg);
    if (http_start(s, &cfg, &h, &e) != ST_OK) {
        fprintf(stderr, "concord: %s\n", e.msg);
        goto out;
    }
    char base[300];
    snprintf(base, sizeof base, "%s://%s:%d", tls ? "https" : "http", o->http_addr, http_port(h));
    if (banner) {
        banner(base, arg);
        if (ml) printf("  HL7 v2 over MLLP:    %s:%d%s\n", o->mllp_addr, mllp_port(ml), tls ? " (TLS)" : "");
        printf("\nStop with Ctrl-C.\n");
        fflush(stdout);
    }
    log_info("concord %s serving %s (%s); stop with Ctrl-C or SIGTERM", concord_version, base, store_backend(s));
    int sig = 0;
    sigwait(&set, &sig);
    log_info("received %s: finishing in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    rc = 0;
out:
    http_stop(h);
    import_service_stop(imp);
    mllp_stop(ml);
    ingest_stop(g);
    risk_service_stop(risk);
    audit_close(al); /* after the last request: everything it logged is durable */
    auth_close(au);
    peers_free(mllp_peers);
    tls_server_free(tls);
    if (rc == 0) log_info("stopped cleanly");
    return rc;
}

static int cmd_serve(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    for (int i = 1; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r < 0) return usage_error("serve: unknown option '%s'", argv[i]);
    }
    int rc = cli_check_listeners(&o); /* before the database is opened */
    if (rc) return rc;
    store *s = NULL;
    if (cli_open_store(&o, 1, &s)) return 1;
    rc = cli_serve_until_signal(s, &o, NULL, NULL);
    store_close(s);
    return rc;
}

static int cmd_migrate(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    for (int i = 1; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r < 0) return usage_error("migrate: unknown option '%s'", argv[i]);
    }
    store *s = NULL;
    if (cli_open_store(&o, 0, &s) == 0) {
        /* already current: open without migrating succeeded */
        printf("schema is at version %d: nothing to do\n", store_schema_version());
        store_close(s);
        return 0;
    }
    err e;
    /* open migrates */
    if (store_open(o.db, 1, &s, &e) != ST_OK) {
        fprintf(stderr, "concord: migrate: %s\n", e.msg);
        return 1;
    }
    printf("schema migrated to version %d\n", store_schema_version());
    store_close(s);
    return 0;
}

static int cmd_help(int argc, char **argv);

static const struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"serve", cmd_serve, "run the server: FHIR R4 API at /fhir, landing page at /"},
    {"demo", cmd_demo, "load a demonstration population (if the store is empty) and serve it"},
    {"synth", cmd_synth, "generate a synthetic population and every care setting's feeds about it"},
    {"import", cmd_import, "import FHIR ndjson, Bundles or CSV extracts (files or directories)"},
    {"quarantine", cmd_quarantine, "list, show, replay or discard messages ingest refused"},
    {"link", cmd_link, "the patient registry: train, run, review, merge, unmerge, history, eval"},
    {"risk", cmd_risk, "risk stratification: facts, train, run, rescore, worklists, indices"},
    {"user", cmd_user, "users who may sign in: add, list, disable, enable, reset (docs/auth.md)"},
    {"token", cmd_token, "API tokens: create (prints the token), list, revoke"},
    {"audit", cmd_audit, "the access log: verify the hash chain, list entries"},
    {"migrate", cmd_migrate, "apply pending schema migrations and exit"},
    {"help", cmd_help, "show this help"},
};

static int cmd_help(int argc, char **argv) {
    printf("concord %s — integrated care server\n\n"
           "Usage: concord COMMAND [options]\n\nCommands:\n",
           concord_version);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        printf("  %-10s %s\n", commands[i].name, commands[i].summary);
    printf("\nCommon options:\n"
           "  --db DB            SQLite file path (default var/concord.db, or $CONCORD_DB)\n"
           "                     or a postgresql:// URL\n"
           "  --http ADDR:PORT   where to listen (default 127.0.0.1:8080)\n"
           "  --mllp ADDR:PORT   HL7 v2 over MLLP (default 127.0.0.1:2575; off to disable)\n"
           "  --tls-cert FILE    HTTPS and MLLP over TLS with this PEM certificate (chain)\n"
           "  --tls-key FILE     and its PEM private key; without them both listeners must\n"
           "                     be on loopback (docs/tls.md)\n"
           "  --mllp-peers FILE  who may send HL7 over MLLP, and as which organisations:\n"
           "                     lines 'ADDR[/PREFIXLEN] ODS[,ODS...]' (required off loopback)\n"
           "  --threads N        HTTP worker threads (default 2 x cores)\n"
           "  --import-dir DIR   files $import may read, and where uploads are kept\n"
           "                     (default var/import)\n"
           "  --mappings DIR     CSV mapping files, named in $import (default mappings/)\n"
           "  --max-body BYTES   largest request body accepted (default 64 MiB)\n"
           "  --log-level LEVEL  debug, info, warn, error (default info)\n"
           "\ndemo options:\n"
           "  --patients N       size of the demonstration population (default 2000)\n"
           "  --seed S           random seed (default 1)\n"
           "  --no-serve         load the data and exit\n"
           "\nimport options (concord import FILE|DIR...):\n"
           "  --format F         ndjson, bundle or csv (default: from the file name or content)\n"
           "  --mapping MAP      CSV mapping file (mappings/ has one per provider)\n"
           "  --org ODS          tag what is imported with its source organisation\n"
           "  --setting S        and care setting: primary-care, acute, community,\n"
           "                     social-care, mental-health\n"
           "  --force            import files again that were imported completely before\n"
           "  --quiet            no progress line and no summary\n"
           "\nrisk (concord risk train|run|rescore|worklist|show|events|facts|deprivation; docs/risk.md):\n"
           "  --risk-data DIR    code lists and weights (default data/risk, or $CONCORD_RISK_DATA)\n"
           "\nlink (the patient registry; CONCORD_REGISTRY=off stops linking on write):\n"
           "  concord link train                  re-estimate the model from the records\n"
           "  concord link run [--rebuild] [--dry-run] [--json]\n"
           "                                      re-link every record, report what changed\n"
           "  concord link review list|show ID|accept ID|reject ID [--note TEXT]\n"
           "  concord link merge KEEP RETIRE      persons as Person/ID or Patient/ID\n"
           "  concord link unmerge EVENT          undo a merge exactly\n"
           "  concord link history [PERSON] | show PERSON | model | dump\n"
           "  concord link eval DIR               linkage of a synth directory vs its ground truth\n"
           "  --user NAME                         who decided (default $USER)\n");
    return 0;
}

int main(int argc, char **argv) {
    cli_set_command_line(argc, argv);
    if (argc < 2) {
        cmd_help(0, NULL);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) return cmd_help(0, NULL);
    if (strcmp(argv[1], "--version") == 0) {
        printf("concord %s\n", concord_version);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    return usage_error("unknown command '%s'", argv[1]);
}
