/*
 * quarantine.c — `concord quarantine list|show|replay|discard`: what ingest
 * refused, kept with the reason, and what to do about it.
 *
 *   concord quarantine list [--all] [--limit N]   quarantined messages (or every message)
 *   concord quarantine show ID                    one message: reason, where, ACK sent, bytes
 *   concord quarantine replay ID                  process it again (after a fix)
 *   concord quarantine discard ID                 give up on it (kept, marked discarded)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../fhir/fhirdate.h"
#include "../ingest/import.h"
#include "../ingest/ingest.h"
#include "cli.h"

static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') fputs("\n", stdout);
        else if (c < 0x20 && c != '\n' && c != '\t') printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\n');
}

static int parse_key(const char *s, int64_t *key) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 1) return -1;
    *key = v;
    return 0;
}

int cmd_quarantine(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    const char *verb = NULL, *arg = NULL;
    int all = 0, limit = 50;
    for (int i = 1; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
        if (strcmp(argv[i], "--all") == 0) all = 1;
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) limit = atoi(argv[++i]);
        else if (!verb) verb = argv[i];
        else if (!arg) arg = argv[i];
        else {
            fprintf(stderr, "concord: quarantine: unexpected '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!verb || (strcmp(verb, "list") && strcmp(verb, "show") && strcmp(verb, "replay") && strcmp(verb, "discard"))) {
        fprintf(stderr, "usage: concord quarantine list [--all] [--limit N] | show ID | replay ID | discard ID\n");
        return 2;
    }
    int64_t key = 0;
    if (strcmp(verb, "list") != 0 && (!arg || parse_key(arg, &key) != 0)) {
        fprintf(stderr, "concord: quarantine %s: needs a message id (a number from `concord quarantine list`)\n", verb);
        return 2;
    }
    store *s = NULL;
    if (cli_open_store(&o, 1, &s)) return 1;
    err e;
    int rc = 0;
    store_message_list l = {0};
    if (strcmp(verb, "list") == 0) {
        if (store_message_list_by(s, all ? NULL : "quarantined", limit, 0, 0, &l, &e) != ST_OK) {
            fprintf(stderr, "concord: quarantine: %s\n", e.msg);
            rc = 1;
        } else {
            if (l.n == 0) printf("no %smessages\n", all ? "" : "quarantined ");
            for (size_t i = 0; i < l.n; i++) {
                store_message *m = &l.v[i];
                char when[32];
                fhir_instant_format(m->received_usec, when);
                printf("%-6lld %-11s %.19s  %-10s %-24s %s%s%s\n", (long long)m->key, m->status, when,
                       m->message_type && *m->message_type ? m->message_type : "-", m->source,
                       m->reason ? m->reason : "", m->location && *m->location ? " at " : "",
                       m->location ? m->location : "");
            }
        }
    } else if (strcmp(verb, "show") == 0) {
        if (store_message_get(s, key, &l, &e) != ST_OK) {
            fprintf(stderr, "concord: quarantine show: %s\n", e.msg);
            rc = 1;
        } else {
            store_message *m = &l.v[0];
            char when[32];
            fhir_instant_format(m->received_usec, when);
            printf("message:   %lld\nstatus:    %s\nreceived:  %s\nchannel:   %s from %s\nsender:    %s\n"
                   "control:   %s\ntype:      %s\n",
                   (long long)m->key, m->status, when, m->channel, m->source, m->sender, m->control_id,
                   m->message_type);
            if (m->reason) printf("reason:    %s\n", m->reason);
            if (m->location && *m->location) printf("where:     %s\n", m->location);
            if (m->ack) {
                printf("ack sent:\n");
                print_escaped(m->ack, strlen(m->ack));
            }
            printf("bytes (%zu):\n", m->body_len);
            print_escaped(m->body, m->body_len);
        }
    } else if (strcmp(verb, "replay") == 0 && store_message_get(s, key, &l, &e) == ST_OK && l.n == 1 &&
               strcmp(l.v[0].channel, "file") == 0) {
        /* a record from a file import: parsed, mapped and validated again */
        if (import_replay(s, key, &e) != ST_OK) {
            fprintf(stderr, "concord: quarantine replay: record %lld refused again: %s%s%s\n", (long long)key, e.msg,
                    e.where[0] ? " at " : "", e.where);
            rc = 1;
        } else {
            printf("record %lld replayed: accepted and stored\n", (long long)key);
        }
    } else if (strcmp(verb, "replay") == 0) {
        ingest *g = NULL;
        buf ack = {0};
        if (ingest_start(s, 0, &g, &e) != ST_OK || ingest_replay(g, key, &ack, &e) != ST_OK) {
            fprintf(stderr, "concord: quarantine replay: %s\n", e.msg);
            rc = 1;
        } else {
            int accepted = strstr(ack.p, "MSA|AA") != NULL;
            printf("message %lld replayed: %s\n", (long long)key,
                   accepted ? "accepted and stored" : "refused again (quarantined anew); the ACK was:");
            if (!accepted) print_escaped(ack.p, ack.len);
            rc = accepted ? 0 : 1;
        }
        ingest_stop(g);
        buf_free(&ack);
    } else {
        if (store_message_set_status(s, key, "quarantined", "discarded", &e) != ST_OK) {
            fprintf(stderr, "concord: quarantine discard: %s\n", e.msg);
            rc = 1;
        } else {
            printf("message %lld discarded (kept, marked discarded)\n", (long long)key);
        }
    }
    store_message_list_free(&l);
    store_close(s);
    return rc;
}
