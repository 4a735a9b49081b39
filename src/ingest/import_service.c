/*
 * import_service.c — asynchronous imports and the quarantine over the API
 * (see import_service.h).
 *
 * One runner thread takes job ids from a queue and runs import_run for
 * each; the job's request (files, format, mapping, provenance) is kept in
 * import_job.request, so a job interrupted by a shutdown or a crash is
 * queued again when the server starts and resumes from its checkpoints.
 * The handlers run on HTTP worker threads and only read the store and the
 * service's small shared state (queue, current progress) under `lock`.
 */
#include "import_service.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "../access/policy.h"
#include "../base/log.h"
#include "../fhir/fhirdate.h"
#include "import.h"

#define QUEUE_MAX 256

struct import_service {
    store *s;
    ingest *g;
    char dir[PATH_MAX];      /* realpath of the import directory */
    char mappings[PATH_MAX]; /* mappings directory */
    pthread_t runner;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int64_t queue[QUEUE_MAX];
    int qhead, qn;
    int stopping;
    volatile int cancel;   /* of the running job */
    int64_t user_cancelled; /* job stopped by DELETE: cancelled, not resumed */
    int64_t running;       /* job id, 0 if none */
    import_progress prog;  /* of the running job */
    char prog_path[512];
};

static const char JSON_CT[] = "application/json; charset=utf-8";
static const char *const SETTINGS[] = {"primary-care", "acute", "community", "social-care", "mental-health"};

/* ---- the runner --------------------------------------------------------- */

static void on_progress(void *ctx, const import_progress *p) {
    import_service *svc = ctx;
    pthread_mutex_lock(&svc->lock);
    svc->prog = *p;
    snprintf(svc->prog_path, sizeof svc->prog_path, "%s", p->path ? p->path : "");
    svc->prog.path = svc->prog_path;
    pthread_mutex_unlock(&svc->lock);
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void run_job(import_service *svc, int64_t job) {
    store_import_list l = {0};
    err e;
    err_clear(&e);
    if (store_import_job_get(svc->s, job, &l, &e) != ST_OK) {
        log_warn("import: job %lld: %s", (long long)job, e.msg);
        return;
    }
    json_error_t je;
    json_t *req = json_loads(l.v[0].request, 0, &je);
    store_import_list_free(&l);
    json_t *input = json_object_get(req, "input");
    size_t n = json_array_size(input);
    const char **paths = calloc(n ? n : 1, sizeof *paths);
    for (size_t i = 0; i < n; i++) paths[i] = json_string_value(json_array_get(input, i));
    import_opts o = {
        .format = jstr(req, "format"),
        .mapping = jstr(req, "mapping"),
        .org = jstr(req, "organisation"),
        .setting = jstr(req, "setting"),
        .force = json_is_true(json_object_get(req, "force")),
        .origin = "api",
        .progress = on_progress,
        .progress_ctx = svc,
        .cancel = &svc->cancel,
    };
    import_result r;
    log_info("import: job %lld started (%zu input(s))", (long long)job, n);
    status rc = n ? import_run(svc->s, job, paths, (int)n, &o, &r, &e)
                  : err_set(&e, ST_INVALID, "required", "input", "no input");
    if (rc != ST_OK) {
        log_warn("import: job %lld failed: %s", (long long)job, e.msg);
        if (!n) store_import_job_set(svc->s, job, "failed", e.msg, &e);
    } else {
        log_info("import: job %lld: %lld stored, %lld quarantined in %.1f s", (long long)job, (long long)r.stored,
                 (long long)r.quarantined, r.seconds);
    }
    if (rc == ST_OK || n) import_result_free(&r);
    free(paths);
    json_decref(req);
}

static void *runner_main(void *arg) {
    import_service *svc = arg;
    pthread_setname_np(pthread_self(), "import-runner");
    pthread_mutex_lock(&svc->lock);
    for (;;) {
        while (!svc->stopping && svc->qn == 0) pthread_cond_wait(&svc->wake, &svc->lock);
        if (svc->stopping) break;
        int64_t job = svc->queue[svc->qhead];
        svc->qhead = (svc->qhead + 1) % QUEUE_MAX;
        svc->qn--;
        if (job == 0) continue; /* cancelled while queued */
        svc->running = job;
        svc->cancel = 0;
        memset(&svc->prog, 0, sizeof svc->prog);
        pthread_mutex_unlock(&svc->lock);
        run_job(svc, job);
        pthread_mutex_lock(&svc->lock);
        svc->running = 0;
        if (svc->user_cancelled == job) {
            svc->user_cancelled = 0;
            pthread_mutex_unlock(&svc->lock);
            store_import_job_set(svc->s, job, "cancelled", "stopped by request; what was committed stays", NULL);
            pthread_mutex_lock(&svc->lock);
        }
    }
    pthread_mutex_unlock(&svc->lock);
    return NULL;
}

static int enqueue(import_service *svc, int64_t job) {
    pthread_mutex_lock(&svc->lock);
    int ok = svc->qn < QUEUE_MAX;
    if (ok) {
        svc->queue[(svc->qhead + svc->qn) % QUEUE_MAX] = job;
        svc->qn++;
        pthread_cond_signal(&svc->wake);
    }
    pthread_mutex_unlock(&svc->lock);
    return ok;
}

static int mkdirs(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

status import_service_start(store *s, ingest *g, const char *dir, const char *mappings_dir, import_service **out,
                            err *e) {
    if (mkdirs(dir) != 0) return err_set(e, ST_IO, "exception", dir, "cannot create import directory %s: %s", dir, strerror(errno));
    import_service *svc = calloc(1, sizeof *svc);
    if (!svc) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    if (!realpath(dir, svc->dir)) {
        free(svc);
        return err_set(e, ST_IO, "exception", dir, "%s: %s", dir, strerror(errno));
    }
    snprintf(svc->mappings, sizeof svc->mappings, "%s", mappings_dir ? mappings_dir : "mappings");
    svc->s = s;
    svc->g = g;
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->wake, NULL);
    /* jobs a previous run did not finish: resumed from their checkpoints */
    static const char *const unfinished[] = {"running", "queued", "interrupted"};
    for (size_t k = 0; k < 3; k++) {
        store_import_list l = {0};
        if (store_import_job_list(s, unfinished[k], 1000, &l, NULL) == ST_OK)
            for (size_t i = 0; i < l.n; i++)
                if (strcmp(l.v[i].origin, "api") == 0) {
                    log_info("import: job %lld was %s: resuming it", (long long)l.v[i].key, l.v[i].status);
                    enqueue(svc, l.v[i].key);
                }
        store_import_list_free(&l);
    }
    pthread_create(&svc->runner, NULL, runner_main, svc);
    *out = svc;
    return ST_OK;
}

void import_service_stop(import_service *svc) {
    if (!svc) return;
    pthread_mutex_lock(&svc->lock);
    svc->stopping = 1;
    svc->cancel = 1;
    pthread_cond_broadcast(&svc->wake);
    pthread_mutex_unlock(&svc->lock);
    pthread_join(svc->runner, NULL);
    pthread_mutex_destroy(&svc->lock);
    pthread_cond_destroy(&svc->wake);
    free(svc);
}

/* ---- helpers for the handlers ------------------------------------------ */

static void fail(rest_response *rs, status code, const char *issue, const char *where, const char *fmt, const char *arg) {
    err e;
    err_set(&e, code, issue, where, fmt, arg);
    rest_error(rs, &e);
}

static void send_json(rest_response *rs, int st, json_t *j) {
    char *t = json_dumps(j, JSON_INDENT(2));
    rs->status = st;
    buf_puts(&rs->body, t);
    free(t);
    rs->content_type = JSON_CT;
    json_decref(j);
}

static int valid_setting(const char *s) {
    for (size_t k = 0; k < sizeof SETTINGS / sizeof SETTINGS[0]; k++)
        if (strcmp(s, SETTINGS[k]) == 0) return 1;
    return 0;
}

/* A mapping given by name: letters, digits, '-', '_' only; resolved in the
 * mappings directory. */
static int mapping_path(const import_service *svc, const char *name, char *out, size_t n) {
    if (!*name || strlen(name) > 100) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return 0;
    if ((size_t)snprintf(out, n, "%.3000s/%.100s.map", svc->mappings, name) >= n) return 0;
    return access(out, R_OK) == 0;
}

static int64_t now_usec(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Write the request body to the import directory, durably. */
static status spool(import_service *svc, const rest_request *rq, const char *ext, char *path, size_t n, err *e) {
    unsigned r = (unsigned)now_usec() ^ (unsigned)(uintptr_t)rq;
    snprintf(path, n, "%s/upload-%lld-%08x.%s", svc->dir, (long long)now_usec(), r, ext);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
    if (fd < 0) return err_set(e, ST_IO, "exception", NULL, "cannot write the upload: %s", strerror(errno));
    size_t off = 0;
    while (off < rq->body_len) {
        ssize_t w = write(fd, rq->body + off, rq->body_len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            close(fd);
            unlink(path);
            return err_set(e, ST_IO, "exception", NULL, "cannot write the upload: %s", strerror(errno));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        close(fd);
        unlink(path);
        return err_set(e, ST_IO, "exception", NULL, "cannot write the upload: %s", strerror(errno));
    }
    close(fd);
    int dfd = open(svc->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd); /* the new name too */
        close(dfd);
    }
    return ST_OK;
}

static int ctype_is(const char *ct, const char *what) {
    return ct && strncasecmp(ct, what, strlen(what)) == 0;
}

/* ---- POST /$import ------------------------------------------------------ */

static void h_import(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    (void)id;
    json_t *req = json_object();
    json_t *inputs = json_array();
    json_object_set_new(req, "input", inputs);
    char val[256], mpath[PATH_MAX + 8];
    err e;
    err_clear(&e);
    /* provenance and mapping from the query (uploads) or Parameters */
    if (rest_query_param(rq->query, "mapping", val, sizeof val)) {
        if (!mapping_path(svc, val, mpath, sizeof mpath)) {
            fail(rs, ST_INVALID, "value", "mapping", "no mapping named '%s' (see mappings/)", val);
            goto out;
        }
        json_object_set_new(req, "mapping", json_string(mpath));
    }
    if (rest_query_param(rq->query, "organisation", val, sizeof val)) {
        if (rq->who && rq->who->org[0] && strcmp(val, rq->who->org) != 0) { /* refused before the upload is kept */
            fail(rs, ST_FORBIDDEN, "forbidden", "organisation",
                 "this account writes as organisation %s; it may not import as another", rq->who->org);
            goto out;
        }
        json_object_set_new(req, "organisation", json_string(val));
    }
    if (rest_query_param(rq->query, "setting", val, sizeof val)) {
        if (!valid_setting(val)) {
            fail(rs, ST_INVALID, "value", "setting", "'%s' is not a care setting (primary-care, acute, community, social-care, mental-health)", val);
            goto out;
        }
        json_object_set_new(req, "setting", json_string(val));
    }
    if (ctype_is(rq->content_type, "application/fhir+ndjson") || ctype_is(rq->content_type, "application/x-ndjson") ||
        ctype_is(rq->content_type, "application/ndjson") || ctype_is(rq->content_type, "text/csv")) {
        int csv = ctype_is(rq->content_type, "text/csv");
        if (csv && !json_object_get(req, "mapping")) {
            fail(rs, ST_INVALID, "required", "mapping", "a CSV upload needs ?mapping=NAME%s", "");
            goto out;
        }
        if (rq->body_len == 0) {
            fail(rs, ST_INVALID, "required", NULL, "the upload is empty%s", "");
            goto out;
        }
        char path[PATH_MAX + 64];
        if (spool(svc, rq, csv ? "csv" : "ndjson", path, sizeof path, &e) != ST_OK) {
            rest_error(rs, &e);
            goto out;
        }
        json_array_append_new(inputs, json_string(path));
        json_object_set_new(req, "format", json_string(csv ? "csv" : "ndjson"));
    } else {
        json_error_t je;
        json_t *p = rq->body_len ? json_loadb(rq->body, rq->body_len, 0, &je) : NULL;
        const char *rt = jstr(p, "resourceType");
        if (!p || !rt || strcmp(rt, "Parameters") != 0) {
            fail(rs, ST_INVALID, "structure", NULL,
                 "$import takes a Parameters resource naming input files, or the data itself as "
                 "application/fhir+ndjson or text/csv%s", "");
            json_decref(p);
            goto out;
        }
        size_t i;
        json_t *par;
        json_array_foreach(json_object_get(p, "parameter"), i, par) {
            const char *name = jstr(par, "name");
            if (!name) continue;
            const char *sv = jstr(par, "valueString") ? jstr(par, "valueString")
                             : jstr(par, "valueCode") ? jstr(par, "valueCode") : jstr(par, "valueUri");
            if (strcmp(name, "input") == 0) {
                const char *url = NULL;
                size_t k;
                json_t *part;
                json_array_foreach(json_object_get(par, "part"), k, part) {
                    if (jstr(part, "name") && strcmp(jstr(part, "name"), "url") == 0)
                        url = jstr(part, "valueUri") ? jstr(part, "valueUri") : jstr(part, "valueUrl");
                }
                if (!url) {
                    fail(rs, ST_INVALID, "required", "Parameters.parameter.part", "input %s has no url part", "");
                    json_decref(p);
                    goto out;
                }
                if (strncmp(url, "file://", 7) == 0) url += 7;
                char full[2 * PATH_MAX + 2], real[PATH_MAX];
                if (url[0] == '/') snprintf(full, sizeof full, "%.4000s", url);
                else snprintf(full, sizeof full, "%.4000s/%.3000s", svc->dir, url);
                size_t dl = strlen(svc->dir);
                if (!realpath(full, real) || strncmp(real, svc->dir, dl) != 0 || (real[dl] != '/' && real[dl])) {
                    fail(rs, ST_INVALID, "value", "Parameters.parameter.part",
                         "input '%s' is not a file in the server's import directory", url);
                    json_decref(p);
                    goto out;
                }
                json_array_append_new(inputs, json_string(real));
            } else if (strcmp(name, "inputFormat") == 0 && sv) {
                const char *fmt = strstr(sv, "csv") ? "csv" : strstr(sv, "ndjson") ? "ndjson" : strstr(sv, "json") ? "bundle" : NULL;
                if (!fmt) {
                    fail(rs, ST_INVALID, "value", "inputFormat", "inputFormat '%s' is not supported (application/fhir+ndjson, application/fhir+json, text/csv)", sv);
                    json_decref(p);
                    goto out;
                }
                json_object_set_new(req, "format", json_string(fmt));
            } else if (strcmp(name, "mapping") == 0 && sv) {
                if (!mapping_path(svc, sv, mpath, sizeof mpath)) {
                    fail(rs, ST_INVALID, "value", "mapping", "no mapping named '%s' (see mappings/)", sv);
                    json_decref(p);
                    goto out;
                }
                json_object_set_new(req, "mapping", json_string(mpath));
            } else if (strcmp(name, "organisation") == 0 && sv) {
                json_object_set_new(req, "organisation", json_string(sv));
            } else if (strcmp(name, "setting") == 0 && sv) {
                if (!valid_setting(sv)) {
                    fail(rs, ST_INVALID, "value", "setting", "'%s' is not a care setting", sv);
                    json_decref(p);
                    goto out;
                }
                json_object_set_new(req, "setting", json_string(sv));
            } else if (strcmp(name, "force") == 0) {
                json_object_set(req, "force", json_object_get(par, "valueBoolean"));
            }
        }
        json_decref(p);
        if (json_array_size(inputs) == 0) {
            fail(rs, ST_INVALID, "required", "Parameters.parameter", "no input: name files with input.url%s", "");
            goto out;
        }
    }
    /* a feed writes as the organisation it is (docs/access.md): an account
     * with an organisation imports as that organisation and no other */
    if (rq->who && rq->who->org[0]) {
        const char *asked = json_string_value(json_object_get(req, "organisation"));
        if (asked && strcmp(asked, rq->who->org) != 0) {
            fail(rs, ST_FORBIDDEN, "forbidden", "organisation",
                 "this account writes as organisation %s; it may not import as another", rq->who->org);
            goto out;
        }
        json_object_set_new(req, "organisation", json_string(rq->who->org));
    }
    if (rq->who) json_object_set_new(req, "requested_by", json_string(rq->who->user));
    char *text = json_dumps(req, JSON_COMPACT);
    int64_t job = 0;
    status rc = store_import_job_create(svc->s, "api", "queued", text, &job, &e);
    free(text);
    if (rc != ST_OK) {
        rest_error(rs, &e);
        goto out;
    }
    if (!enqueue(svc, job)) {
        store_import_job_set(svc->s, job, "failed", "too many queued imports", NULL);
        fail(rs, ST_CONFLICT, "throttled", NULL, "too many imports are queued; try again later%s", "");
        rs->status = 429;
        goto out;
    }
    rs->status = 202;
    snprintf(rs->content_location, sizeof rs->content_location, "%s/$import-poll-status/%lld", rq->base_url,
             (long long)job);
    buf_printf(&rs->body,
               "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"information\",\"code\":"
               "\"informational\",\"diagnostics\":\"import job %lld accepted; poll %s\"}]}",
               (long long)job, rs->content_location);
out:
    json_decref(req);
}

/* ---- GET/DELETE /$import-poll-status/ID -------------------------------- */

static int parse_id(const char *id, int64_t *out) {
    char *end;
    long long v = id ? strtoll(id, &end, 10) : 0;
    if (!id || !*id || *end || v < 1) return 0;
    *out = v;
    return 1;
}

static void h_import_status(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    int64_t job;
    if (!parse_id(id, &job)) {
        fail(rs, ST_NOT_FOUND, "not-found", NULL, "no import job '%s'", id ? id : "");
        return;
    }
    store_import_list l = {0};
    err e;
    if (store_import_job_get(svc->s, job, &l, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    store_import_job *j = &l.v[0];
    int active = strcmp(j->status, "queued") == 0 || strcmp(j->status, "running") == 0;
    if (active) {
        pthread_mutex_lock(&svc->lock);
        if (svc->running == job && svc->prog.bytes_total > 0)
            snprintf(rs->progress, sizeof rs->progress, "%.0f%%: file %d of %d, %lld stored, %lld quarantined",
                     100.0 * (double)svc->prog.bytes_done / (double)svc->prog.bytes_total, svc->prog.file_no,
                     svc->prog.nfiles, (long long)svc->prog.stored, (long long)svc->prog.quarantined);
        else
            snprintf(rs->progress, sizeof rs->progress, "%s", j->status);
        pthread_mutex_unlock(&svc->lock);
        rs->status = 202;
        rs->content_type = JSON_CT;
        buf_printf(&rs->body, "{\"job\":%lld,\"status\":\"%s\"}", (long long)job, j->status);
        store_import_list_free(&l);
        return;
    }
    json_t *o = json_object();
    char when[32];
    fhir_instant_format(j->updated_usec, when);
    json_object_set_new(o, "transactionTime", json_string(when));
    char reqs[600];
    snprintf(reqs, sizeof reqs, "%s/$import", rq->base_url);
    json_object_set_new(o, "request", json_string(reqs));
    json_object_set_new(o, "requiresAccessToken", json_false());
    json_object_set_new(o, "job", json_integer(job));
    json_object_set_new(o, "status", json_string(j->status));
    if (j->message) json_object_set_new(o, "message", json_string(j->message));
    json_t *output = json_array(), *errors = json_array();
    int64_t quarantined = 0;
    for (size_t i = 0; i < j->nfiles; i++) {
        store_import_file *f = &j->files[i];
        json_array_append_new(output, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s?}", "type", f->format, "url",
                                                f->path, "count", (json_int_t)f->stored, "quarantined",
                                                (json_int_t)f->quarantined, "lines", (json_int_t)f->lines_done,
                                                "status", f->status, "message", f->message));
        quarantined += f->quarantined;
    }
    if (quarantined) {
        char q[600];
        snprintf(q, sizeof q, "%s/$quarantine", rq->base_url);
        json_array_append_new(errors, json_pack("{s:s, s:s, s:I}", "type", "OperationOutcome", "url", q, "count",
                                                (json_int_t)quarantined));
    }
    json_object_set_new(o, "output", output);
    json_object_set_new(o, "error", errors);
    int http_status = strcmp(j->status, "failed") == 0 ? 500 : 200;
    store_import_list_free(&l);
    send_json(rs, http_status, o);
}

static void h_import_cancel(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    (void)rq;
    int64_t job;
    if (!parse_id(id, &job)) {
        fail(rs, ST_NOT_FOUND, "not-found", NULL, "no import job '%s'", id ? id : "");
        return;
    }
    store_import_list l = {0};
    err e;
    if (store_import_job_get(svc->s, job, &l, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    int was_queued = strcmp(l.v[0].status, "queued") == 0;
    store_import_list_free(&l);
    pthread_mutex_lock(&svc->lock);
    if (svc->running == job) {
        svc->cancel = 1;
        svc->user_cancelled = job;
    }
    for (int i = 0; i < svc->qn; i++) /* a queued job is taken out of the queue */
        if (svc->queue[(svc->qhead + i) % QUEUE_MAX] == job) svc->queue[(svc->qhead + i) % QUEUE_MAX] = 0;
    pthread_mutex_unlock(&svc->lock);
    if (was_queued) store_import_job_set(svc->s, job, "cancelled", "cancelled before it started", NULL);
    rs->status = 202;
    buf_printf(&rs->body,
               "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"information\",\"code\":"
               "\"informational\",\"diagnostics\":\"import job %lld is being stopped; what was committed stays\"}]}",
               (long long)job);
}

/* ---- the quarantine ----------------------------------------------------- */

static json_t *message_json(const store_message *m, int with_body) {
    char when[32];
    fhir_instant_format(m->received_usec, when);
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)m->key, "status", m->status,
                          "received", when, "channel", m->channel, "source", m->source, "sender", m->sender,
                          "control", m->control_id, "type", m->message_type);
    if (m->reason) json_object_set_new(o, "reason", json_string(m->reason));
    if (m->location && *m->location) json_object_set_new(o, "where", json_string(m->location));
    if (m->reason && strcmp(m->status, "stored") != 0) {
        /* the refusal as FHIR states it */
        json_t *issue = json_pack("{s:s, s:s, s:s}", "severity", "error", "code", "invalid", "diagnostics", m->reason);
        if (m->location && *m->location)
            json_object_set_new(issue, "expression", json_pack("[s]", m->location));
        json_object_set_new(o, "outcome", json_pack("{s:s, s:[o]}", "resourceType", "OperationOutcome", "issue", issue));
    }
    if (m->ack) json_object_set_new(o, "ack", json_string(m->ack));
    if (with_body && m->body) {
        json_t *b = json_stringn(m->body, m->body_len);
        /* bytes that are not UTF-8 are shown escaped, never dropped */
        if (!b) {
            buf x = {0};
            for (size_t i = 0; i < m->body_len; i++) {
                unsigned char c = (unsigned char)m->body[i];
                if (c < 0x80) buf_putc(&x, (char)c);
                else buf_printf(&x, "\\x%02x", c);
            }
            b = json_stringn(x.p ? x.p : "", x.len);
            buf_free(&x);
            json_object_set_new(o, "bodyEscaped", json_true());
        }
        json_object_set_new(o, "body", b);
    }
    return o;
}

static void h_quarantine_list(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    (void)id;
    char st[32] = "quarantined", cnt[16];
    rest_query_param(rq->query, "status", st, sizeof st);
    int limit = rest_query_param(rq->query, "_count", cnt, sizeof cnt) ? atoi(cnt) : 50;
    if (limit < 1 || limit > 1000) limit = 50;
    int all = strcmp(st, "all") == 0;
    store_message_list l = {0};
    err e;
    if (store_message_list_by(svc->s, all ? NULL : st, limit, 0, 0, &l, &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < l.n; i++) json_array_append_new(arr, message_json(&l.v[i], 0));
    store_message_list_free(&l);
    send_json(rs, 200, json_pack("{s:s, s:o}", "status", st, "records", arr));
}

/* The quarantine record named by the path's id, or an OperationOutcome in
 * rs (0). With l == NULL only the id is checked. */
static int record_get(import_service *svc, rest_response *rs, const char *id, int64_t *key, store_message_list *l) {
    if (!parse_id(id, key)) {
        fail(rs, ST_NOT_FOUND, "not-found", NULL, "no quarantine record '%s'", id ? id : "");
        return 0;
    }
    err e;
    err_clear(&e);
    if (l && store_message_get(svc->s, *key, l, &e) != ST_OK) {
        rest_error(rs, &e);
        return 0;
    }
    return 1;
}

static void h_quarantine_show(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    (void)rq;
    int64_t key;
    store_message_list l = {0};
    if (!record_get(svc, rs, id, &key, &l)) return;
    json_t *o = message_json(&l.v[0], 1);
    store_message_list_free(&l);
    send_json(rs, 200, o);
}

static void h_quarantine_replay(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    (void)rq;
    int64_t key;
    store_message_list l = {0};
    if (!record_get(svc, rs, id, &key, &l)) return;
    err e;
    err_clear(&e);
    int file = strcmp(l.v[0].channel, "file") == 0;
    store_message_list_free(&l);
    if (file) {
        if (import_replay(svc->s, key, &e) != ST_OK) {
            rest_error(rs, &e);
            return;
        }
        send_json(rs, 200, json_pack("{s:I, s:s}", "id", (json_int_t)key, "outcome", "stored"));
        return;
    }
    if (!svc->g) {
        fail(rs, ST_UNSUPPORTED, "not-supported", NULL, "HL7 replay needs the ingest pipeline%s", "");
        return;
    }
    buf ack = {0};
    if (ingest_replay(svc->g, key, &ack, &e) != ST_OK) {
        buf_free(&ack);
        rest_error(rs, &e);
        return;
    }
    int accepted = ack.p && strstr(ack.p, "MSA|AA") != NULL;
    json_t *o = json_pack("{s:I, s:s, s:s%}", "id", (json_int_t)key, "outcome", accepted ? "stored" : "refused again",
                          "ack", ack.p ? ack.p : "", ack.len);
    buf_free(&ack);
    send_json(rs, accepted ? 200 : 422, o);
}

static void h_quarantine_discard(void *user, const rest_request *rq, rest_response *rs, const char *id) {
    import_service *svc = user;
    (void)rq;
    int64_t key;
    if (!record_get(svc, rs, id, &key, NULL)) return;
    err e;
    if (store_message_set_status(svc->s, key, "quarantined", "discarded", &e) != ST_OK) {
        rest_error(rs, &e);
        return;
    }
    send_json(rs, 200, json_pack("{s:I, s:s}", "id", (json_int_t)key, "outcome", "discarded"));
}

const rest_ext_route import_service_routes[] = {
    {"POST", {"$import"}, h_import, AREA_INGEST, ACC_WRITE},
    {"GET", {"$import-poll-status", "{id}"}, h_import_status, AREA_INGEST, ACC_WRITE},
    {"DELETE", {"$import-poll-status", "{id}"}, h_import_cancel, AREA_INGEST, ACC_WRITE},
    {"GET", {"$quarantine"}, h_quarantine_list, AREA_INGEST, ACC_READ},
    {"GET", {"$quarantine", "{id}"}, h_quarantine_show, AREA_INGEST, ACC_READ},
    {"POST", {"$quarantine", "{id}", "$replay"}, h_quarantine_replay, AREA_INGEST, ACC_WRITE},
    {"POST", {"$quarantine", "{id}", "$discard"}, h_quarantine_discard, AREA_INGEST, ACC_WRITE},
};
const size_t import_service_nroutes = sizeof import_service_routes / sizeof import_service_routes[0];
