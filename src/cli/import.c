/*
 * import.c — `concord import FILE|DIR...`: FHIR ndjson, Bundles and CSV
 * extracts into the store (src/ingest/import.c does the work).
 *
 *   concord import [--db DB] [--format ndjson|bundle|csv] [--mapping MAP|NAME]
 *                  [--org ODS] [--setting SETTING] [--force] [--quiet] FILE|DIR...
 *
 * A progress line (rate, ETA) is drawn on stderr when it is a terminal.
 * Every quarantined record is reported as "path:line: reason" (the first
 * 20; then a count). Running the same command again after an interruption
 * resumes where the last commit left off.
 *
 * Exit codes: 0 everything stored; 3 finished, but some records were
 * quarantined (see `concord quarantine list`); 1 the import failed (what
 * was committed stays; run it again to resume); 2 usage error.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../ingest/import.h"
#include "cli.h"

#define SHOW_REJECTED 20

static const char *const SETTINGS[] = {"primary-care", "acute", "community", "social-care", "mental-health"};

typedef struct cli_import_ui {
    int tty, quiet;
    pthread_mutex_t lock;
    long rejected;
    int line_drawn;
} cli_import_ui;

static volatile int interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static void clear_line(cli_import_ui *ui) {
    if (ui->line_drawn) {
        fputs("\r\033[K", stderr);
        ui->line_drawn = 0;
    }
}

static void hms(double s, char *out, size_t n) {
    if (s > 359999) s = 359999;
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, n, "%d:%02d", t / 60, t % 60);
}

static void on_progress(void *ctx, const import_progress *p) {
    cli_import_ui *ui = ctx;
    if (!ui->tty || ui->quiet) return;
    double frac = p->bytes_total > 0 ? (double)p->bytes_done / (double)p->bytes_total : 0;
    if (frac > 1) frac = 1;
    char bar[21];
    int filled = (int)(frac * 20);
    for (int i = 0; i < 20; i++) bar[i] = i < filled ? '#' : '.';
    bar[20] = 0;
    double rate = p->seconds > 0 ? (double)p->stored / p->seconds : 0;
    char eta[16] = "--:--";
    if (frac > 0.01 && p->seconds > 1) hms(p->seconds * (1 - frac) / frac, eta, sizeof eta);
    const char *name = p->path ? strrchr(p->path, '/') : NULL;
    name = name ? name + 1 : p->path ? p->path : "";
    pthread_mutex_lock(&ui->lock);
    fprintf(stderr, "\r\033[K[%s] %3.0f%%  %lld stored  %lld quarantined  %.0f/s  ETA %s  %d/%d %s", bar,
            frac * 100, (long long)p->stored, (long long)p->quarantined, rate, eta, p->file_no, p->nfiles, name);
    ui->line_drawn = 1;
    pthread_mutex_unlock(&ui->lock);
}

static void on_rejected(void *ctx, const char *where, const char *reason, const char *element) {
    cli_import_ui *ui = ctx;
    pthread_mutex_lock(&ui->lock);
    if (++ui->rejected <= SHOW_REJECTED) {
        clear_line(ui);
        fprintf(stderr, "%s: %s%s%s\n", where, reason, element && *element ? " at " : "", element ? element : "");
    }
    pthread_mutex_unlock(&ui->lock);
}

static int usage(const char *msg, const char *arg) {
    if (msg) {
        fprintf(stderr, "concord: import: ");
        fprintf(stderr, msg, arg);
        fputc('\n', stderr);
    }
    fprintf(stderr, "usage: concord import [--db DB] [--format ndjson|bundle|csv] [--mapping MAP]\n"
                    "                      [--org ODS] [--setting SETTING] [--force] [--quiet] FILE|DIR...\n");
    return 2;
}

int cmd_import(int argc, char **argv) {
    cli_opts o;
    cli_defaults(&o);
    import_opts io = {.origin = "cli"};
    cli_import_ui ui = {.tty = isatty(2)};
    pthread_mutex_init(&ui.lock, NULL);
    const char *paths[argc > 0 ? argc : 1]; /* at most one per argument */
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_parse_common(&o, argc, argv, &i);
        if (r > 0) return r;
        if (r == 0) continue;
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(a, "--format") == 0 && has_val) {
            io.format = argv[++i];
            if (strcmp(io.format, "ndjson") && strcmp(io.format, "bundle") && strcmp(io.format, "csv"))
                return usage("--format is ndjson, bundle or csv, not '%s'", io.format);
        } else if (strcmp(a, "--mapping") == 0 && has_val) {
            io.mapping = argv[++i];
        } else if (strcmp(a, "--org") == 0 && has_val) {
            io.org = argv[++i];
        } else if (strcmp(a, "--setting") == 0 && has_val) {
            io.setting = argv[++i];
            int ok = 0;
            for (size_t k = 0; k < sizeof SETTINGS / sizeof SETTINGS[0]; k++) ok |= strcmp(io.setting, SETTINGS[k]) == 0;
            if (!ok)
                return usage("--setting is primary-care, acute, community, social-care or mental-health, not '%s'",
                             io.setting);
        } else if (strcmp(a, "--force") == 0) {
            io.force = 1;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            ui.quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage("unknown option '%s'", a);
        } else {
            paths[npaths++] = a;
        }
    }
    if (npaths == 0) return usage("no files given%s", "");
    static char mapbuf[4200];
    if (io.mapping && !strchr(io.mapping, '/') && access(io.mapping, R_OK) != 0) {
        /* a mapping by name: mappings/NAME.map */
        snprintf(mapbuf, sizeof mapbuf, "%.4000s/%.150s.map", cli_mappings_dir(&o), io.mapping);
        io.mapping = mapbuf;
    }
    if (io.format && strcmp(io.format, "csv") == 0 && !io.mapping)
        return usage("--format csv needs --mapping MAP (mappings/ has one per provider)%s", "");
    io.progress = on_progress;
    io.progress_ctx = &ui;
    io.rejected = on_rejected;
    io.rejected_ctx = &ui;
    io.cancel = &interrupted;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    store *s = NULL;
    if (cli_open_store(&o, 1, &s)) return 1;
    import_result res;
    err e;
    err_clear(&e);
    status rc = import_run(s, 0, paths, npaths, &io, &res, &e);
    clear_line(&ui);
    if (ui.rejected > SHOW_REJECTED)
        fprintf(stderr, "... and %ld more quarantined records\n", ui.rejected - SHOW_REJECTED);
    if (!ui.quiet) {
        for (int i = 0; i < res.nfiles; i++) {
            import_file_outcome *f = &res.files[i];
            if (strcmp(f->status, "skipped") == 0) {
                printf("%s: skipped: %s\n", f->path, f->message);
                continue;
            }
            printf("%s: %s, %lld stored, %lld quarantined", f->path, f->format, (long long)f->stored,
                   (long long)f->quarantined);
            if (f->resumed_from_line) printf(" (resumed after line %lld)", (long long)f->resumed_from_line);
            if (strcmp(f->status, "done") != 0) printf(" [%s]", f->status);
            putchar('\n');
        }
        printf("import job %lld: %lld stored, %lld quarantined in %.1f s (%.0f resources/s)\n", (long long)res.job,
               (long long)res.stored, (long long)res.quarantined, res.seconds,
               res.seconds > 0 ? (double)res.stored / res.seconds : 0.0);
    }
    int exit_code = 0;
    if (rc != ST_OK) {
        fprintf(stderr, "concord: import: %s%s%s\n", e.msg, e.where[0] ? " at " : "", e.where);
        fprintf(stderr, "concord: what was committed is kept; run the same command again to resume\n");
        exit_code = 1;
    } else if (interrupted) {
        fprintf(stderr, "concord: import interrupted; run the same command again to resume\n");
        exit_code = 1;
    } else if (res.quarantined > 0) {
        if (!ui.quiet) printf("quarantined records: concord quarantine list; fix and replay with concord quarantine replay ID\n");
        exit_code = 3;
    }
    import_result_free(&res);
    store_close(s);
    return exit_code;
}
