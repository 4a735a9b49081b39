/*
 * audit.c — `concord audit`: the access log from the command line
 * (docs/audit.md).
 *
 *   concord audit verify [--db DB] [--audit-key FILE] [--expect SEQ:HASH]
 *       check the whole hash chain with the key; prints the events checked
 *       and the head (seq and hash). --expect checks that event SEQ still
 *       has HASH, a head printed by an earlier verify and kept elsewhere.
 *       Exit 0 when intact, 1 when broken (the first bad seq and what is
 *       wrong) or when the check could not run.
 *   concord audit list [--db DB] [--audit-key FILE] [--patient ID] [--user NAME]
 *                      [--action A] [--outcome 0|4|8] [--limit N] [--offset N] [--json]
 *       newest first: a table (when, who, role, org, action, outcome,
 *       patient, what, purpose, reason) or, with --json, one FHIR
 *       AuditEvent per line (ndjson). --patient takes in every record
 *       linked to the same person (as the patient's own view does).
 *
 * Reading the log straight from the database is the path of whoever holds
 * the database (the local administrator); it is itself logged first, as a
 * search by "cli:<operating-system user>" with role admin and source
 * "cli", so a patient sees that their access log was looked at. If that
 * entry cannot be written, nothing is listed.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../access/audit.h"
#include "../access/auth.h"
#include "../base/buf.h"
#include "cli.h"

static int usage(const char *msg, const char *arg) {
    fprintf(stderr, "concord audit: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\nusage: concord audit verify [--audit-key FILE] [--expect SEQ:HASH]\n"
                    "       concord audit list [--patient ID] [--user NAME] [--action A] [--outcome 0|4|8]\n"
                    "                          [--limit N] [--offset N] [--json]   (both take --db DB)\n");
    return 2;
}

typedef struct audit_args {
    cli_opts o;
    const char *verb, *key, *expect, *patient, *user, *action, *outcome;
    int limit, offset, json;
} audit_args;

static int parse_count(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 10000) return -1;
    *out = (int)v;
    return 0;
}

static int parse(audit_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    cli_defaults(&a->o);
    a->limit = 50;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int r = cli_parse_common(&a->o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
        const char **val = NULL;
        int *num = NULL;
        if (strcmp(s, "--audit-key") == 0)
            val = &a->key;
        else if (strcmp(s, "--expect") == 0)
            val = &a->expect;
        else if (strcmp(s, "--patient") == 0)
            val = &a->patient;
        else if (strcmp(s, "--user") == 0)
            val = &a->user;
        else if (strcmp(s, "--action") == 0)
            val = &a->action;
        else if (strcmp(s, "--outcome") == 0)
            val = &a->outcome;
        else if (strcmp(s, "--limit") == 0)
            num = &a->limit;
        else if (strcmp(s, "--offset") == 0)
            num = &a->offset;
        else if (strcmp(s, "--json") == 0)
            a->json = 1;
        else if (s[0] != '-' && !a->verb)
            a->verb = s;
        else
            return usage("unexpected '%s'", s);
        if (val || num) {
            if (i + 1 >= argc) return usage("%s needs a value", s);
            if (val)
                *val = argv[++i];
            else if (parse_count(argv[++i], num) != 0)
                return usage("%s takes a number 0..10000", s);
        }
    }
    if (!a->verb || (strcmp(a->verb, "verify") != 0 && strcmp(a->verb, "list") != 0))
        return usage("verify or list, not '%s'", a->verb ? a->verb : "nothing");
    if (a->outcome && strcmp(a->outcome, "0") != 0 && strcmp(a->outcome, "4") != 0 &&
        strcmp(a->outcome, "8") != 0)
        return usage("--outcome is 0 (success), 4 (refused) or 8 (failed), not '%s'", a->outcome);
    return 0;
}

/* ---- verify ---------------------------------------------------------- */

static int do_verify(store *s, const audit_args *a, const char *key) {
    audit_verify_result r;
    err e;
    int64_t want_seq = 0;
    char want_hash[65] = "";
    if (a->expect) {
        char *end;
        long long v = strtoll(a->expect, &end, 10);
        if (v < 1 || *end != ':' || strlen(end + 1) != 64) {
            fprintf(stderr, "concord audit: --expect takes SEQ:HASH (a head printed by verify), not '%s'\n",
                    a->expect);
            return 2;
        }
        want_seq = v;
        snprintf(want_hash, sizeof want_hash, "%s", end + 1);
    }
    if (audit_verify(s, key, &r, &e) != ST_OK) {
        fprintf(stderr,
                "concord audit verify: %s\n(the key: --audit-key FILE, else $CONCORD_AUDIT_KEY, else "
                "DB.audit-key "
                "beside a SQLite database or var/audit.key for PostgreSQL)\n",
                e.msg);
        return 1;
    }
    printf("events checked: %lld\n", (long long)r.rows);
    if (!r.ok) {
        printf("head:           %s (the last event that verified)\n", r.head);
        printf("BROKEN at seq %lld: %s\n", (long long)r.first_bad_seq, r.problem);
        return 1;
    }
    printf("head:           %lld:%s\n", (long long)r.rows, r.head);
    if (want_seq) {
        char have[65];
        if (want_seq > r.rows || audit_row_hash(s, want_seq, have, &e) != ST_OK) {
            printf("BROKEN at seq %lld: the expected event is gone: the log was cut back to %lld events\n",
                   (long long)want_seq, (long long)r.rows);
            return 1;
        }
        if (strcmp(have, want_hash) != 0) {
            printf("BROKEN at seq %lld: its hash is not the one expected: the log was rewritten from there\n",
                   (long long)want_seq);
            return 1;
        }
        printf("expected event %lld is present with its hash\n", (long long)want_seq);
    }
    printf("OK\n");
    return 0;
}

/* ---- list ------------------------------------------------------------ */

/* The string at a path of object keys and array indexes ("a.0.b"), or "". */
static const char *jstr(json_t *j, const char *path) {
    char p[128];
    snprintf(p, sizeof p, "%s", path);
    for (char *save = NULL, *t = strtok_r(p, ".", &save); t && j; t = strtok_r(NULL, ".", &save))
        j = json_is_array(j) ? json_array_get(j, (size_t)atoi(t)) : json_object_get(j, t);
    const char *s = j ? json_string_value(j) : NULL;
    return s ? s : "";
}

/* The code of the first coding of `system` in the array `codings`. */
static const char *code_in(json_t *codings, const char *system) {
    size_t i;
    json_t *c;
    json_array_foreach(codings, i, c) {
        if (strcmp(jstr(c, "system"), system) == 0) return jstr(c, "code");
    }
    return "";
}

/* Text for a terminal: control characters (C0, DEL, C1) shown as \xNN so
 * that what a client put in a request cannot drive the terminal. */
static void cell(buf *b, const char *s, size_t width) {
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            buf_printf(b, "\\x%02x", *p);
        } else if (*p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            buf_printf(b, "\\u%04x", p[1]);
            p++;
        } else {
            buf_putc(b, (char)*p);
            if ((*p & 0xC0) == 0x80) continue; /* continuation byte: same character */
        }
        chars++;
    }
    while (width && chars < width) {
        buf_putc(b, ' ');
        chars++;
    }
    if (width) buf_putc(b, ' ');
}

static void print_row(json_t *ev) {
    char when[20];
    snprintf(when, sizeof when, "%s", jstr(ev, "recorded"));
    if (strlen(when) > 10) when[10] = ' ';
    const char *outcome = jstr(ev, "outcome");
    const char *outcome_text = strcmp(outcome, "0") == 0   ? "ok"
                               : strcmp(outcome, "4") == 0 ? "refused"
                               : strcmp(outcome, "8") == 0 ? "failed"
                                                           : outcome;
    const char *patient = "", *what = "", *reason = jstr(ev, "outcomeDesc");
    size_t i;
    json_t *ent;
    json_array_foreach(json_object_get(ev, "entity"), i, ent) {
        const char *ref = jstr(ent, "what.reference");
        if (strcmp(jstr(ent, "role.code"), "1") == 0 && strncmp(ref, "Patient/", 8) == 0) patient = ref + 8;
        if (!*what) what = *ref ? ref : jstr(ent, "type.code");
        if (!*reason) reason = jstr(ent, "description");
    }
    buf b = {0};
    cell(&b, when, 19);
    cell(&b, jstr(ev, "agent.0.who.display"), 16);
    cell(&b,
         code_in(
             json_object_get(
                 json_array_get(json_object_get(json_array_get(json_object_get(ev, "agent"), 0), "role"), 0),
                 "coding"),
             "https://concord.example/CodeSystem/role"),
         15);
    cell(&b, jstr(ev, "agent.1.who.identifier.value"), 8);
    cell(&b, code_in(json_object_get(ev, "subtype"), "https://concord.example/CodeSystem/audit-action"), 12);
    cell(&b, outcome_text, 7);
    cell(&b, patient, 12);
    cell(&b, what, 28);
    cell(&b, jstr(ev, "purposeOfEvent.0.coding.0.code"), 9);
    cell(&b, reason, 0);
    puts(b.p ? b.p : "");
    buf_free(&b);
}

static const char *os_user(char *out, size_t n) {
    struct passwd *pw = getpwuid(geteuid());
    const char *env = getenv("USER");
    if (pw && pw->pw_name)
        snprintf(out, n, "%s", pw->pw_name);
    else if (env && *env)
        snprintf(out, n, "%s", env);
    else
        snprintf(out, n, "uid%ld", (long)geteuid());
    return out;
}

/* ---- every command that opens the store, in the log ---------------------
 * The `concord` command on the server machine reads and writes the store
 * directly, as the operating-system user who runs it (the database file's
 * permissions decide who can). So that nothing it does is unaccounted for,
 * each such command is written to the access log with its command line
 * before it does anything; a command that cannot be logged does not run.
 * `serve` and `demo` log every request themselves, `audit list` logs its
 * listing with the patient it names (log_listing). */
static int saved_argc;
static char **saved_argv;

void cli_set_command_line(int argc, char **argv) {
    saved_argc = argc;
    saved_argv = argv;
}

int cli_audit_command(store *s, const char *db) {
    if (saved_argc < 2) return 0;
    const char *cmd = saved_argv[1];
    if (!strcmp(cmd, "serve") || !strcmp(cmd, "demo") || !strcmp(cmd, "audit")) return 0;
    char key[1024], osu[64], who[80];
    audit_default_key_path(db, key, sizeof key);
    snprintf(who, sizeof who, "cli:%s", os_user(osu, sizeof osu));
    buf req = {0};
    buf_puts(&req, "concord");
    for (int i = 1; i < saved_argc; i++) {
        buf_putc(&req, ' ');
        /* a password never comes on the command line (user.c); a token
         * to revoke may: keep its prefix only */
        if (strncmp(saved_argv[i], AUTH_TOKEN_PREFIX, strlen(AUTH_TOKEN_PREFIX)) == 0)
            buf_printf(&req, "%.8s...", saved_argv[i]);
        else
            buf_puts(&req, saved_argv[i]);
    }
    audit_config cfg = {.key_path = key};
    audit_log *al = NULL;
    err e;
    int rc = 0;
    audit_event ev = {.user = who,
                      .role = "admin",
                      .action = "admin",
                      .outcome = "0",
                      .purpose = "HSYSADMIN",
                      .source = "cli",
                      .request = req.p};
    if (audit_open(s, &cfg, &al, &e) != ST_OK || audit_append(al, &ev, 1, &e) != ST_OK) {
        fprintf(stderr, "concord: cannot record this command in the access log, so not running it: %s\n",
                e.msg);
        rc = 1;
    }
    audit_close(al);
    buf_free(&req);
    return rc;
}

/* The list command itself, in the log, before anything is shown. */
static int log_listing(store *s, const char *key, const audit_args *a, int64_t pkey, int argc, char **argv) {
    char osu[64], who[80];
    snprintf(who, sizeof who, "cli:%s", os_user(osu, sizeof osu));
    buf req = {0};
    buf_puts(&req, "concord");
    for (int i = 0; i < argc; i++) {
        buf_putc(&req, ' ');
        buf_puts(&req, argv[i]);
    }
    audit_config cfg = {.key_path = key};
    audit_log *al = NULL;
    err e;
    int rc = 0;
    audit_event ev = {.user = who,
                      .role = "admin",
                      .action = "search",
                      .outcome = "0",
                      .rtype = "AuditEvent",
                      .pkey = pkey,
                      .patient_id = a->patient,
                      .purpose = "HSYSADMIN",
                      .source = "cli",
                      .request = req.p};
    if (audit_open(s, &cfg, &al, &e) != ST_OK || audit_append(al, &ev, 1, &e) != ST_OK) {
        fprintf(stderr,
                "concord audit list: cannot record this listing in the access log, so not listing: %s\n",
                e.msg);
        rc = 1;
    }
    audit_close(al);
    buf_free(&req);
    return rc;
}

static int do_list(store *s, const audit_args *a, const char *key, int argc, char **argv) {
    err e;
    int64_t pkey = 0, total = 0, pkeys[64];
    int rc = 0, npk = 0;
    json_t *arr = json_array();
    audit_filter f = {
        .user = a->user, .action = a->action, .outcome = a->outcome, .limit = a->limit, .offset = a->offset};
    if (a->patient) {
        /* the person's whole record: every source record linked to them,
         * as the patient sees it through the API */
        if (store_patient_key_of(s, a->patient, &pkey, &e) != ST_OK ||
            (pkey && store_person_pkeys(s, pkey, pkeys, 64, &npk, &e) != ST_OK)) {
            fprintf(stderr, "concord audit list: %s\n", e.msg);
            rc = 1;
            goto out;
        }
        f.pkeys = pkeys;
        f.npkeys = npk; /* 0 for a patient id never stored: no accesses to it */
    }
    if (a->limit == 0) f.limit = 10000;
    rc = log_listing(s, key, a, pkey, argc, argv);
    if (rc) goto out;
    if (audit_query(s, &f, arr, &total, &e) != ST_OK) {
        fprintf(stderr, "concord audit list: %s\n", e.msg);
        rc = 1;
        goto out;
    }
    size_t i;
    json_t *ev;
    if (a->json) {
        json_array_foreach(arr, i, ev) {
            char *t = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
            puts(t ? t : "{}");
            free(t);
        }
        goto out;
    }
    printf("%-19s %-16s %-15s %-8s %-12s %-7s %-12s %-28s %-9s %s\n", "when (UTC)", "who", "role", "org",
           "action", "outcome", "patient", "what", "purpose", "reason");
    json_array_foreach(arr, i, ev) print_row(ev);
    printf("(%zu of %lld entries%s)\n", json_array_size(arr), (long long)total,
           (int64_t)json_array_size(arr) + a->offset < total ? "; --limit and --offset for more" : "");
out:
    json_decref(arr);
    return rc;
}

int cmd_audit(int argc, char **argv) {
    audit_args a;
    int rc = parse(&a, argc, argv);
    if (rc) return rc;
    char key[1024];
    if (a.key)
        snprintf(key, sizeof key, "%s", a.key);
    else
        audit_default_key_path(a.o.db, key, sizeof key);
    store *s = NULL;
    if (cli_open_store(&a.o, 1, &s)) return 1;
    if (strcmp(a.verb, "verify") == 0)
        rc = do_verify(s, &a, key);
    else
        rc = do_list(s, &a, key, argc, argv);
    store_close(s);
    return rc;
}
