/*
 * cli.h — what the subcommands of `concord` share: option parsing for the
 * options every command understands, opening the store, serving until a
 * signal.
 */
#ifndef CONCORD_CLI_H
#define CONCORD_CLI_H

#include <stddef.h>

#include "../store/store.h"

typedef struct cli_opts {
    const char *db;
    char http_addr[64];
    int http_port;
    int threads;
    size_t max_body;
    char mllp_addr[64]; /* "" = no MLLP listener */
    int mllp_port;
    const char *import_dir; /* where $import reads files and spools uploads */
    const char *mappings_dir; /* CSV mappings by name, or NULL: cli_mappings_dir's default */
    const char *tls_cert;     /* PEM files: HTTPS and MLLP over TLS (docs/tls.md); NULL: none */
    const char *tls_key;
    const char *mllp_peers; /* who may send over MLLP as whom (src/ingest/peers.h); NULL: loopback only */
} cli_opts;

extern const char *concord_version;

void cli_defaults(cli_opts *o);
/* 0 = consumed argv[*i] (and maybe its value), -1 = not a common option,
 * 2 = usage error (message printed). */
int cli_parse_common(cli_opts *o, int argc, char **argv, int *i);
int cli_open_store(const cli_opts *o, int migrate, store **s);
const char *cli_mappings_dir(const cli_opts *o);
/* Are the listeners safe as configured? A listener off loopback needs TLS,
 * and MLLP off loopback a peers file too. 0, or 2 with the message printed
 * (a usage error). cli_serve_until_signal checks it first; a command that
 * does work before serving should check it before that work. */
int cli_check_listeners(const cli_opts *o);
/* Serve until SIGINT/SIGTERM. 0 after a clean stop; 2 for a usage error
 * (cli_check_listeners); 1 when something could not start (a bad
 * certificate, key or peers file, a port in use: message printed). */
int cli_serve_until_signal(store *s, const cli_opts *o, void (*banner)(const char *base, void *), void *arg);

int cmd_demo(int argc, char **argv);
int cmd_synth(int argc, char **argv); /* synth.c */
int cmd_quarantine(int argc, char **argv); /* quarantine.c */
int cmd_import(int argc, char **argv);     /* import.c */
int cmd_link(int argc, char **argv);       /* link.c */
int cmd_risk(int argc, char **argv);       /* risk.c */
int cmd_audit(int argc, char **argv);      /* audit.c: concord audit verify|list */
/* audit.c: every command that opens the store is written to the access log
 * first (cli_open_store calls it); main() saves the command line. */
void cli_set_command_line(int argc, char **argv);
int cli_audit_command(store *s, const char *db);
int cmd_user(int argc, char **argv);       /* user.c: concord user add|list|disable|enable|reset */
int cmd_token(int argc, char **argv);      /* user.c: concord token create|list|revoke */
const char *cli_risk_data_dir(const char *given); /* risk.c: --risk-data, $CONCORD_RISK_DATA, data/risk */
int cli_risk_demo(store *s, int end_year); /* risk.c: train and run after the demo loads */

#endif
