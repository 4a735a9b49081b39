/*
 * user.c — `concord user` and `concord token`: who may sign in, and the API
 * tokens systems use (src/access/auth.h; docs/auth.md).
 *
 *   concord user add NAME --role ROLE [--org ODS] [--practitioner ID] [--patient ID]
 *                    [--display TEXT] [--password-stdin | --password-file F | --no-password]
 *   concord user list [--json]
 *   concord user disable NAME | enable NAME
 *   concord user reset NAME [--password-stdin | --password-file F]
 *   concord token create --user NAME [--label L] [--days N]
 *   concord token list [--user NAME] [--json]
 *   concord token revoke TOKEN|KEY
 *
 * Passwords never travel on the command line (where `ps` shows them): they
 * come from the first line of stdin, the first line of a file, or a prompt
 * on the terminal with echo off, asked twice. A role system user (a machine
 * feed) gets no password unless one is given: it signs in with tokens.
 * `token create` writes only the token to stdout, so scripts can capture
 * it; what it is for goes to stderr.
 *
 * Exit codes as everywhere: 0 success, 1 failure, 2 usage (including values
 * the store refuses as invalid: a bad name, role or short password).
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "../access/auth.h"
#include "cli.h"

#define PW_BUF (AUTH_MAX_PASSWORD + 2)

typedef struct user_args {
    cli_opts o;
    const char *verb, *name, *role, *org, *practitioner, *patient, *display, *password_file, *user, *label;
    int password_stdin, no_password, json, days;
} user_args;

static int usage_user(const char *msg, const char *arg) {
    if (msg) {
        fprintf(stderr, "concord user: ");
        fprintf(stderr, msg, arg);
        fputc('\n', stderr);
    }
    fprintf(
        stderr,
        "usage: concord user add NAME --role ROLE [--org ODS] [--practitioner ID] [--patient ID]\n"
        "                        [--display TEXT] [--password-stdin | --password-file F | --no-password]\n"
        "       concord user list [--json]\n"
        "       concord user disable NAME | enable NAME\n"
        "       concord user reset NAME [--password-stdin | --password-file F]\n"
        "roles: gp, practice-nurse, consultant, ed-clinician, community-nurse, social-worker, pharmacist,\n"
        "       mental-health, mdg-coordinator, analyst, admin, privacy-officer, patient, system\n");
    return 2;
}

static int usage_token(const char *msg, const char *arg) {
    if (msg) {
        fprintf(stderr, "concord token: ");
        fprintf(stderr, msg, arg);
        fputc('\n', stderr);
    }
    fprintf(stderr, "usage: concord token create --user NAME [--label L] [--days N]\n"
                    "       concord token list [--user NAME] [--json]\n"
                    "       concord token revoke TOKEN|KEY\n");
    return 2;
}

/* Options of both commands; positional words go to verb, then name. */
static int parse(user_args *a, int argc, char **argv, int (*usage)(const char *, const char *)) {
    memset(a, 0, sizeof *a);
    cli_defaults(&a->o);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int r = cli_parse_common(&a->o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
#define VAL(field)                                                                                           \
    do {                                                                                                     \
        if (i + 1 >= argc) return usage("%s needs a value", s);                                              \
        a->field = argv[++i];                                                                                \
    } while (0)
        if (strcmp(s, "--role") == 0)
            VAL(role);
        else if (strcmp(s, "--org") == 0)
            VAL(org);
        else if (strcmp(s, "--practitioner") == 0)
            VAL(practitioner);
        else if (strcmp(s, "--patient") == 0)
            VAL(patient);
        else if (strcmp(s, "--display") == 0)
            VAL(display);
        else if (strcmp(s, "--password-file") == 0)
            VAL(password_file);
        else if (strcmp(s, "--user") == 0)
            VAL(user);
        else if (strcmp(s, "--label") == 0)
            VAL(label);
        else if (strcmp(s, "--password-stdin") == 0)
            a->password_stdin = 1;
        else if (strcmp(s, "--no-password") == 0)
            a->no_password = 1;
        else if (strcmp(s, "--json") == 0)
            a->json = 1;
        else if (strcmp(s, "--days") == 0) {
            if (i + 1 >= argc) return usage("%s needs a value", s);
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 36500)
                return usage("--days takes a number of days from 1 to 36500, not '%s'", argv[i]);
            a->days = (int)v;
        } else if (s[0] == '-' && s[1])
            return usage("unknown option '%s'", s);
        else if (!a->verb)
            a->verb = s;
        else if (!a->name)
            a->name = s;
        else
            return usage("unexpected '%s'", s);
#undef VAL
    }
    return 0;
}

/* One line from f into pw (newline removed). 0, or -1 with a message. */
static int read_line(FILE *f, char pw[PW_BUF], const char *from) {
    int rc = 0;
    if (!fgets(pw, PW_BUF, f)) {
        fprintf(stderr, "concord user: no password in %s\n", from);
        rc = -1;
    } else {
        size_t n = strlen(pw);
        int complete = n > 0 && pw[n - 1] == '\n';
        while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
            pw[--n] = 0;
        if (!complete && !feof(f)) {
            fprintf(stderr, "concord user: the password in %s is longer than %d bytes\n", from,
                    AUTH_MAX_PASSWORD);
            rc = -1;
        }
    }
    return rc;
}

/* Prompt on the terminal with echo off. */
static int prompt(FILE *tty, const char *question, char pw[PW_BUF]) {
    struct termios old, quiet;
    int fd = fileno(tty), rc = 0;
    fputs(question, tty);
    fflush(tty);
    int have_termios = tcgetattr(fd, &old) == 0;
    if (have_termios) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    rc = read_line(tty, pw, "the terminal");
    if (have_termios) tcsetattr(fd, TCSAFLUSH, &old);
    return rc;
}

/* The password as the options say: 0 = pw filled, 1 = none (token-only), -1 = failed, -2 = no way to
 * ask (a usage error); messages printed. */
static int get_password(const user_args *a, char pw[PW_BUF], int may_omit) {
    int rc = 0;
    char again[PW_BUF];
    pw[0] = again[0] = 0;
    if (a->password_stdin) {
        rc = read_line(stdin, pw, "stdin");
    } else if (a->password_file) {
        FILE *f = fopen(a->password_file, "r");
        struct stat st;
        if (!f) {
            fprintf(stderr, "concord user: cannot read %s: %m\n", a->password_file);
            rc = -1;
        } else {
            if (fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
                fprintf(stderr, "concord user: warning: %s can be read by other users (chmod 600 it)\n",
                        a->password_file);
            rc = read_line(f, pw, a->password_file);
            fclose(f);
        }
    } else if (a->no_password || may_omit) {
        rc = 1;
    } else {
        FILE *tty = isatty(STDIN_FILENO) ? fopen("/dev/tty", "r+") : NULL;
        if (!tty) {
            fprintf(stderr,
                    "concord user: no terminal to ask for a password: use --password-stdin or "
                    "--password-file F%s\n",
                    strcmp(a->verb, "add") == 0 ? " (or --no-password for a token-only user)" : "");
            rc = -2; /* a usage error: say where the password comes from */
        } else {
            rc = prompt(tty, "New password: ", pw);
            if (rc == 0 && strlen(pw) < AUTH_MIN_PASSWORD) {
                fprintf(stderr, "concord user: password too short: at least %d characters\n",
                        AUTH_MIN_PASSWORD);
                rc = -1;
            }
            if (rc == 0) rc = prompt(tty, "Again: ", again);
            if (rc == 0 && strcmp(pw, again) != 0) {
                fprintf(stderr, "concord user: the two passwords differ\n");
                rc = -1;
            }
            fclose(tty);
        }
    }
    sodium_memzero(again, sizeof again);
    return rc;
}

static int fail(const char *cmd, const err *e) {
    fprintf(stderr, "concord %s: %s\n", cmd, e->msg);
    return e->code == ST_INVALID ? 2 : 1;
}

static void print_json_array(json_t *arr) {
    char *t = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    puts(t ? t : "[]");
    free(t);
}

static const char *jstr(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s && *s ? s : "-";
}

static int user_list(store *s, int as_json) {
    err e;
    int rc = 0;
    json_t *arr = json_array();
    if (auth_user_list(s, arr, &e) != ST_OK) {
        rc = fail("user list", &e);
    } else if (as_json) {
        print_json_array(arr);
    } else if (json_array_size(arr) == 0) {
        printf("no users (add one with `concord user add NAME --role ROLE ...`)\n");
    } else {
        size_t i;
        json_t *u;
        printf("%-24s %-16s %-8s %-20s %-9s %-20s %s\n", "NAME", "ROLE", "ORG", "PRACTITIONER/PATIENT",
               "STATE", "CREATED", "DISPLAY");
        json_array_foreach(arr, i, u) {
            const char *who = strcmp(jstr(u, "patient"), "-") ? jstr(u, "patient") : jstr(u, "practitioner");
            const char *state = json_is_true(json_object_get(u, "disabled"))   ? "disabled"
                                : json_is_true(json_object_get(u, "password")) ? "active"
                                                                               : "tokens";
            printf("%-24s %-16s %-8s %-20s %-9s %-20s %s\n", jstr(u, "name"), jstr(u, "role"), jstr(u, "org"),
                   who, state, jstr(u, "created"), jstr(u, "display"));
        }
    }
    json_decref(arr);
    return rc;
}

int cmd_user(int argc, char **argv) {
    user_args a;
    char pw[PW_BUF];
    store *s = NULL;
    err e;
    int rc = parse(&a, argc, argv, usage_user);
    pw[0] = 0;
    err_clear(&e);
    if (rc) goto out;
    const char *v = a.verb ? a.verb : "";
    int is_add = strcmp(v, "add") == 0, is_reset = strcmp(v, "reset") == 0, is_list = strcmp(v, "list") == 0;
    int is_disable = strcmp(v, "disable") == 0, is_enable = strcmp(v, "enable") == 0;
    if (!is_add && !is_reset && !is_list && !is_disable && !is_enable) {
        rc = usage_user(a.verb ? "unknown subcommand '%s'" : NULL, v);
        goto out;
    }
    if (!is_list && !a.name) {
        rc = usage_user("%s needs a user name", v);
        goto out;
    }
    if (is_list && a.name) {
        rc = usage_user("list takes no user name (got '%s')", a.name);
        goto out;
    }
    int pw_opts = a.password_stdin + (a.password_file != NULL) + a.no_password;
    if (pw_opts > 1) {
        rc = usage_user("give at most one of --password-stdin, --password-file and --no-password%s", "");
        goto out;
    }
    if (!is_add && !is_reset && (pw_opts || a.role || a.org || a.practitioner || a.patient || a.display)) {
        rc = usage_user("%s takes no role, organisation or password options", v);
        goto out;
    }
    if (is_reset && a.no_password) {
        rc = usage_user("reset sets a new password: --no-password does not apply%s", "");
        goto out;
    }
    if (a.user || a.label || a.days) {
        rc = usage_user("--user, --label and --days belong to `concord token`%s", "");
        goto out;
    }
    acc_role role = ROLE_NONE;
    if (is_add) {
        if (!a.role) {
            rc = usage_user("add needs --role ROLE%s", "");
            goto out;
        }
        role = acc_role_parse(a.role);
        if (role == ROLE_NONE) {
            rc = usage_user("unknown role '%s'", a.role);
            goto out;
        }
        if (auth_role_needs_org(role) && !a.org) {
            fprintf(stderr, "concord user: role %s needs --org ODS (the user's organisation)\n", a.role);
            rc = 2;
            goto out;
        }
        if (role == ROLE_PATIENT && !a.patient) {
            fprintf(stderr, "concord user: role patient needs --patient ID (the user's own Patient id)\n");
            rc = 2;
            goto out;
        }
    }
    int have_pw = 0;
    if (is_add || is_reset) {
        int r = get_password(&a, pw, is_add && role == ROLE_SYSTEM);
        if (r < 0) {
            rc = r == -2 ? 2 : 1;
            goto out;
        }
        have_pw = r == 0;
    }
    if (cli_open_store(&a.o, 1, &s)) {
        rc = 1;
        goto out;
    }
    if (is_list) {
        rc = user_list(s, a.json);
    } else if (is_add) {
        auth_user_spec u = {.name = a.name,
                            .display = a.display,
                            .role = a.role,
                            .org = a.org,
                            .practitioner = a.practitioner,
                            .patient_id = a.patient,
                            .password = have_pw ? pw : NULL};
        if (auth_user_add(s, &u, &e) != ST_OK)
            rc = fail("user add", &e);
        else
            printf("user %s added (%s%s%s)%s\n", a.name, acc_role_label(role), a.org ? ", " : "",
                   a.org ? a.org : "",
                   have_pw ? "" : "; no password: token sign-in only (`concord token create --user NAME`)");
    } else if (is_reset) {
        if (auth_user_set_password(s, a.name, pw, &e) != ST_OK)
            rc = fail("user reset", &e);
        else
            printf("password of %s changed; their sessions are signed out\n", a.name);
    } else {
        if (auth_user_set_disabled(s, a.name, is_disable, &e) != ST_OK)
            rc = fail(is_disable ? "user disable" : "user enable", &e);
        else if (is_disable)
            printf("user %s disabled; their sessions and tokens are revoked\n", a.name);
        else
            printf("user %s enabled (tokens revoked when it was disabled stay revoked)\n", a.name);
    }
out:
    sodium_memzero(pw, sizeof pw);
    if (s) store_close(s);
    return rc;
}

static int token_list(store *s, const char *user, int as_json) {
    err e;
    int rc = 0;
    json_t *arr = json_array();
    if (auth_token_list(s, user, arr, &e) != ST_OK) {
        rc = fail("token list", &e);
    } else if (as_json) {
        print_json_array(arr);
    } else if (json_array_size(arr) == 0) {
        printf("no tokens%s%s\n", user ? " for " : "", user ? user : "");
    } else {
        size_t i;
        json_t *t;
        printf("%-6s %-24s %-8s %-20s %-20s %-20s %s\n", "KEY", "USER", "STATE", "CREATED", "EXPIRES",
               "LAST USED", "LABEL");
        json_array_foreach(arr, i, t) {
            const char *expires = json_is_null(json_object_get(t, "expires")) ? "never" : jstr(t, "expires");
            const char *used = json_is_null(json_object_get(t, "last_used")) ? "never" : jstr(t, "last_used");
            printf("%-6lld %-24s %-8s %-20s %-20s %-20s %s\n",
                   (long long)json_integer_value(json_object_get(t, "key")), jstr(t, "user"),
                   jstr(t, "state"), jstr(t, "created"), expires, used, jstr(t, "label"));
        }
    }
    json_decref(arr);
    return rc;
}

int cmd_token(int argc, char **argv) {
    user_args a;
    store *s = NULL;
    err e;
    char token[96];
    int rc = parse(&a, argc, argv, usage_token);
    token[0] = 0;
    err_clear(&e);
    if (rc) goto out;
    const char *v = a.verb ? a.verb : "";
    int is_create = strcmp(v, "create") == 0, is_list = strcmp(v, "list") == 0,
        is_revoke = strcmp(v, "revoke") == 0;
    if (!is_create && !is_list && !is_revoke) {
        rc = usage_token(a.verb ? "unknown subcommand '%s'" : NULL, v);
        goto out;
    }
    if (a.role || a.org || a.practitioner || a.patient || a.display || a.password_stdin || a.password_file ||
        a.no_password) {
        rc = usage_token("%s takes no user-account options (those belong to `concord user`)", v);
        goto out;
    }
    if (is_create && (!a.user || a.name)) {
        rc = usage_token(a.name ? "create takes --user NAME, not '%s'" : "create needs --user NAME%s",
                         a.name ? a.name : "");
        goto out;
    }
    if (is_revoke && (!a.name || a.user || a.label || a.days)) {
        rc = usage_token("revoke takes a token or a token key (from `concord token list`) and nothing else%s",
                         "");
        goto out;
    }
    if (is_list && (a.name || a.label || a.days)) {
        rc = usage_token("list takes only --user NAME and --json%s", "");
        goto out;
    }
    if (!is_list && a.json) {
        rc = usage_token("--json belongs to list%s", "");
        goto out;
    }
    if (cli_open_store(&a.o, 1, &s)) {
        rc = 1;
        goto out;
    }
    if (is_list) {
        rc = token_list(s, a.user, a.json);
    } else if (is_create) {
        if (auth_token_create(s, a.user, a.label, (int64_t)a.days * 86400, token, &e) != ST_OK) {
            rc = fail("token create", &e);
        } else {
            printf("%s\n", token);
            fflush(stdout);
            if (a.days)
                fprintf(stderr, "concord: token for %s, valid for %d days; it is shown only this once\n",
                        a.user, a.days);
            else
                fprintf(stderr, "concord: token for %s, valid until revoked; it is shown only this once\n",
                        a.user);
        }
    } else {
        if (auth_token_revoke(s, a.name, &e) != ST_OK)
            rc = fail("token revoke", &e);
        else
            printf("token revoked (servers using this database refuse it within %d s)\n",
                   AUTH_DEFAULT_CACHE_SEC);
    }
out:
    sodium_memzero(token, sizeof token);
    if (s) store_close(s);
    return rc;
}
