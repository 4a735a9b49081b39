/*
 * import.c — file imports (see import.h).
 *
 * Flow per file: fingerprint (BLAKE2b of the size and the first MiB) →
 * look for an earlier import of the same content (resume after its last
 * checkpoint, or skip it when it completed) → a bulk pipeline (bulk.c)
 * with three hooks: `transform` stamps provenance on the worker threads,
 * `reject` quarantines a bad record in the writer's open transaction, and
 * `checkpoint` writes the file's progress in that same transaction just
 * before each commit. The reading thread (the caller's) only splits the
 * input into records: lines of ndjson, entries of a Bundle, rows of CSV
 * (mapped to resources by csvmap.c).
 *
 * Ids: a resource keeps its own id; one without gets an id derived from
 * the file's fingerprint and its line (or entry) number, so importing the
 * same file again updates instead of duplicating. Bundle entries with
 * urn:uuid fullUrls get derived ids and every reference to them is
 * rewritten, as a transaction would.
 */
#include "import.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../fhir/json.h"
#include "../fhir/validate.h"
#include "bulk.h"
#include "csv.h"
#include "csvmap.h"

static const char SETTING_SYSTEM[] = "https://concord.example/CodeSystem/care-setting";
static const char ODS_SYSTEM[] = "https://fhir.nhs.uk/Id/ods-organization-code";

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void import_result_free(import_result *r) {
    free(r->files);
    memset(r, 0, sizeof *r);
}

/* ---- files to import --------------------------------------------------- */

typedef struct path_list {
    char **v;
    int n, cap;
} path_list;

static void paths_push(path_list *l, const char *p) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->n++] = strdup(p);
}

static void paths_free(path_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcasecmp(s + n - m, suf) == 0;
}

static int wanted_in_dir(const char *name, const import_opts *o) {
    if (has_suffix(name, ".ndjson") || has_suffix(name, ".jsonl") || has_suffix(name, ".json")) return 1;
    return o->mapping && has_suffix(name, ".csv");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static status expand_path(const char *p, const import_opts *o, path_list *out, int depth, err *e) {
    struct stat st;
    if (stat(p, &st) != 0) return err_set(e, ST_NOT_FOUND, "not-found", p, "%s: %s", p, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        paths_push(out, p);
        return ST_OK;
    }
    if (depth > 16) return err_set(e, ST_INVALID, "too-costly", p, "%s: directories nested too deeply", p);
    DIR *d = opendir(p);
    if (!d) return err_set(e, ST_IO, "exception", p, "%s: %s", p, strerror(errno));
    path_list here = {0};
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", p, de->d_name);
        struct stat cs;
        if (stat(full, &cs) != 0) continue;
        if (S_ISDIR(cs.st_mode) || wanted_in_dir(de->d_name, o)) paths_push(&here, full);
    }
    closedir(d);
    qsort(here.v, (size_t)here.n, sizeof *here.v, cmp_str); /* a stable, predictable order */
    status rc = ST_OK;
    for (int i = 0; i < here.n && rc == ST_OK; i++) rc = expand_path(here.v[i], o, out, depth + 1, e);
    paths_free(&here);
    return rc;
}

/* ---- fingerprints and derived ids -------------------------------------- */

static void hex(const unsigned char *h, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[h[i] >> 4];
        out[2 * i + 1] = d[h[i] & 15];
    }
    out[2 * n] = 0;
}

static status fingerprint(FILE *f, int64_t size, char out[33], err *e, const char *path) {
    crypto_generichash_state st;
    unsigned char h[16];
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    char sz[32];
    int n = snprintf(sz, sizeof sz, "%lld:", (long long)size);
    crypto_generichash_update(&st, (const unsigned char *)sz, (size_t)n);
    static unsigned char blk[65536];
    static pthread_mutex_t blk_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&blk_lock);
    size_t total = 0, got;
    while (total < (1u << 20) && (got = fread(blk, 1, sizeof blk, f)) > 0) {
        crypto_generichash_update(&st, blk, got);
        total += got;
    }
    pthread_mutex_unlock(&blk_lock);
    if (ferror(f)) return err_set(e, ST_IO, "exception", path, "%s: %s", path, strerror(errno));
    rewind(f);
    crypto_generichash_final(&st, h, sizeof h);
    hex(h, sizeof h, out);
    return ST_OK;
}

/* Derived id for a record without one: hash of "<fingerprint>:<n>". */
static void derived_id(const char *control, char out[33]) {
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)control, strlen(control), NULL, 0);
    hex(h, sizeof h, out);
}

/* ---- one file's import state (shared with the bulk hooks) -------------- */

typedef struct file_run {
    const import_opts *o;
    int64_t job;
    int file_no;
    const char *path;
    const char *format; /* "ndjson" | "bundle" | "csv" */
    const char *mapping_path;
    char fingerprint[33];
    const char *org, *setting;
    int64_t base_stored, base_quarantined; /* from an earlier, interrupted run */
    int64_t received_usec;
    char csv_header[4096];  /* the header line, kept with quarantined CSV rows */
    /* decided before the import starts */
    int64_t size, start_byte, start_line;
    int skip;               /* already imported completely */
    int64_t resumed_job;    /* the earlier file row this run supersedes, if any */
    int resumed_file_no;
    /* written by the store's writer thread (checkpoint hook), read after bulk_finish */
    int64_t stored, quarantined;
} file_run;

static void set_tag(json_t *meta, const char *system, const char *code) {
    json_t *tags = json_object_get(meta, "tag");
    if (!json_is_array(tags)) {
        tags = json_array();
        json_object_set_new(meta, "tag", tags);
    }
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        const char *sys = json_string_value(json_object_get(t, "system"));
        if (sys && strcmp(sys, system) == 0) {
            json_object_set_new(t, "code", json_string(code));
            return;
        }
    }
    json_array_append_new(tags, json_pack("{s:s, s:s}", "system", system, "code", code));
}

static status hook_transform(void *ctx, json_t *res, const bulk_mark *m, err *e) {
    file_run *fr = m->owner;
    (void)ctx;
    (void)e;
    json_t *meta = json_object_get(res, "meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(res, "meta", meta);
    }
    char src[128];
    snprintf(src, sizeof src, "urn:concord:import:%lld/%d#%lld", (long long)fr->job, fr->file_no, (long long)m->line);
    json_object_set_new(meta, "source", json_string(src));
    if (fr->setting) set_tag(meta, SETTING_SYSTEM, fr->setting);
    if (fr->org) set_tag(meta, ODS_SYSTEM, fr->org);
    return ST_OK;
}

static status hook_reject(void *ctx, store_txn *tx, const bulk_mark *m, const char *text, size_t len, const err *why,
                          err *e) {
    file_run *fr = m->owner;
    (void)ctx;
    char source[600], control[64], location[300];
    snprintf(source, sizeof source, "%s:%lld", fr->path, (long long)m->line);
    snprintf(control, sizeof control, "%s:%lld", fr->fingerprint, (long long)m->line);
    snprintf(location, sizeof location, "%s%s%s", strcmp(fr->format, "bundle") == 0 ? "entry " : "line ",
             "", why->where);
    char where_line[340];
    snprintf(where_line, sizeof where_line, "%s %lld%s%s", strcmp(fr->format, "bundle") == 0 ? "entry" : "line",
             (long long)m->line, why->where[0] ? ", " : "", why->where);
    buf body = {0};
    if (strcmp(fr->format, "csv") == 0) {
        buf_puts(&body, fr->csv_header);
        buf_putc(&body, '\n');
    }
    if (text) buf_append(&body, text, len);
    char type[300];
    if (strcmp(fr->format, "csv") == 0) snprintf(type, sizeof type, "csv %s", fr->mapping_path ? fr->mapping_path : "");
    else snprintf(type, sizeof type, "fhir+json");
    store_message msg = {
        .received_usec = fr->received_usec,
        .channel = "file",
        .source = source,
        .sender = fr->path,
        .control_id = control,
        .message_type = type,
        .status = "quarantined",
        .reason = why->msg[0] ? why->msg : "rejected",
        .location = where_line,
        .body = body.p ? body.p : "",
        .body_len = body.len,
    };
    (void)location;
    status rc = store_message_insert(tx, &msg, NULL, e);
    if (rc == ST_OK && fr->o->rejected) fr->o->rejected(fr->o->rejected_ctx, source, msg.reason, why->where);
    buf_free(&body);
    return rc;
}

static status hook_checkpoint(void *ctx, store_txn *tx, const bulk_mark *m, int64_t stored, int64_t rejected,
                              err *e) {
    file_run *fr = m->owner;
    (void)ctx;
    fr->stored = fr->base_stored + stored;
    fr->quarantined = fr->base_quarantined + rejected;
    return store_import_checkpoint(tx, fr->job, fr->file_no, m->bytes_done, m->lines_done, fr->stored,
                                   fr->quarantined, e);
}

/* ---- progress ---------------------------------------------------------- */

typedef struct progress_state {
    const import_opts *o;
    import_progress p;
    int64_t bytes_before; /* of earlier files */
    double start, last;
    int64_t stored_before, quarantined_before;
} progress_state;

static void progress_tick(progress_state *ps, bulk *b, int64_t file_pos, int force) {
    if (!ps->o->progress) return;
    double t = now_s();
    if (!force && t - ps->last < 0.2) return;
    ps->last = t;
    ps->p.bytes_done = ps->bytes_before + file_pos;
    ps->p.stored = ps->stored_before + (b ? bulk_stored(b) : 0);
    ps->p.seconds = t - ps->start;
    ps->o->progress(ps->o->progress_ctx, &ps->p);
}

/* ---- readers ----------------------------------------------------------- */

/* A line reader with bounded memory: lines longer than IMPORT_MAX_LINE are
 * reported (truncated to their first 4 KiB) instead of buffered. */
typedef struct line_reader {
    FILE *f;
    buf line;
    int64_t pos;      /* bytes consumed */
    int too_long;     /* the last line was over the limit */
    int64_t long_len; /* its real length */
} line_reader;

/* 1 = a line (without its newline) in lr->line, 0 = end, -1 = read error */
static int next_line(line_reader *lr) {
    buf_reset(&lr->line);
    lr->too_long = 0;
    lr->long_len = 0;
    int c, any = 0;
    char chunk[8192];
    size_t k = 0;
    while ((c = getc_unlocked(lr->f)) != EOF) {
        any = 1;
        lr->pos++;
        if (c == '\n') break;
        if (lr->too_long) {
            lr->long_len++;
            continue;
        }
        chunk[k++] = (char)c;
        if (k == sizeof chunk) {
            buf_append(&lr->line, chunk, k);
            k = 0;
            if (lr->line.len > IMPORT_MAX_LINE) {
                lr->too_long = 1;
                lr->long_len = (int64_t)lr->line.len;
                lr->line.len = 4096;
            }
        }
    }
    if (k && !lr->too_long) buf_append(&lr->line, chunk, k);
    if (ferror(lr->f)) return -1;
    if (!any) return 0;
    if (lr->line.len && lr->line.p[lr->line.len - 1] == '\r') lr->line.len--;
    return 1;
}

static int blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

static status add_rejected(bulk *b, const bulk_mark *m, const char *text, size_t len, const err *why, err *e) {
    bulk_item it = {.json = text, .len = len, .group_end = 1, .mark = *m, .rejected = why};
    return bulk_add_item(b, &it, e);
}

static status read_ndjson(file_run *fr, FILE *f, int64_t start_byte, int64_t start_line, bulk *b,
                          progress_state *ps, err *e) {
    line_reader lr = {.f = f, .pos = start_byte};
    if (start_byte && fseeko(f, start_byte, SEEK_SET) != 0)
        return err_set(e, ST_IO, "exception", fr->path, "%s: cannot seek: %s", fr->path, strerror(errno));
    int64_t line = start_line;
    status rc = ST_OK;
    int r;
    flockfile(f);
    while (rc == ST_OK && (r = next_line(&lr)) == 1) {
        line++;
        if (fr->o->cancel && *fr->o->cancel) break;
        bulk_mark m = {.owner = fr, .bytes_done = lr.pos, .lines_done = line, .line = line};
        if (lr.too_long) {
            err why;
            err_set(&why, ST_TOO_LARGE, "too-costly", NULL, "line is %lld bytes, over the %zu MiB limit",
                    (long long)lr.long_len, IMPORT_MAX_LINE >> 20);
            rc = add_rejected(b, &m, lr.line.p, lr.line.len, &why, e);
            continue;
        }
        if (blank(lr.line.p, lr.line.len)) continue;
        char control[64], fallback[33];
        snprintf(control, sizeof control, "%s:%lld", fr->fingerprint, (long long)line);
        derived_id(control, fallback);
        bulk_item it = {.fallback_id = fallback, .json = lr.line.p, .len = lr.line.len, .group_end = 1, .mark = m};
        rc = bulk_add_item(b, &it, e);
        if ((line & 1023) == 0) {
            funlockfile(f);
            progress_tick(ps, b, lr.pos, 0);
            flockfile(f);
        }
    }
    funlockfile(f);
    if (rc == ST_OK && r < 0) rc = err_set(e, ST_IO, "exception", fr->path, "%s: read error", fr->path);
    buf_free(&lr.line);
    return rc;
}

/* Replace references to urn:uuid fullUrls by Type/id, everywhere in j. */
static void rewrite_refs(json_t *j, json_t *map) {
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (strcmp(k, "reference") == 0 && json_is_string(v)) {
                json_t *to = json_object_get(map, json_string_value(v));
                if (to) json_object_set(j, k, to);
            } else {
                rewrite_refs(v, map);
            }
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) rewrite_refs(v, map);
    }
}

static status read_bundle(file_run *fr, FILE *f, int64_t size, int64_t start_entry, bulk *b, progress_state *ps,
                          err *e) {
    if (size > IMPORT_MAX_BUNDLE)
        return err_set(e, ST_TOO_LARGE, "too-costly", fr->path,
                       "%s: a Bundle file over %lld MiB cannot be imported whole; convert it to ndjson", fr->path,
                       (long long)(IMPORT_MAX_BUNDLE >> 20));
    buf text = {0};
    buf_reserve(&text, (size_t)size + 1);
    size_t got = fread(text.p, 1, (size_t)size, f);
    text.len = got;
    json_error_t je;
    json_t *doc = fhir_json_load(text.p, text.len, &je);
    bulk_mark whole = {.owner = fr, .bytes_done = size, .lines_done = 1, .line = 1};
    status rc = ST_OK;
    if (!doc || !json_is_object(doc)) {
        err why;
        if (!doc) err_set(&why, ST_INVALID, "structure", NULL, "not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        else err_set(&why, ST_INVALID, "structure", NULL, "not a JSON object");
        if (start_entry == 0) rc = add_rejected(b, &whole, text.p, text.len, &why, e);
        goto out;
    }
    const char *rt = json_string_value(json_object_get(doc, "resourceType"));
    if (!rt || strcmp(rt, "Bundle") != 0) {
        /* a single resource */
        if (start_entry == 0) {
            char control[64], fallback[33];
            snprintf(control, sizeof control, "%s:1", fr->fingerprint);
            derived_id(control, fallback);
            bulk_item it = {.fallback_id = fallback, .json = text.p, .len = text.len, .group_end = 1, .mark = whole};
            rc = bulk_add_item(b, &it, e);
        }
        goto out;
    }
    const char *btype = json_string_value(json_object_get(doc, "type"));
    int transaction = btype && strcmp(btype, "transaction") == 0;
    json_t *entries = json_object_get(doc, "entry");
    size_t n = json_is_array(entries) ? json_array_size(entries) : 0;
    /* urn:uuid fullUrls → derived ids, and references rewritten */
    json_t *map = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *en = json_array_get(entries, i);
        const char *full = json_string_value(json_object_get(en, "fullUrl"));
        json_t *res = json_object_get(en, "resource");
        const char *ert = json_string_value(json_object_get(res, "resourceType"));
        if (full && ert && strncmp(full, "urn:uuid:", 9) == 0) {
            char control[128], id[33], ref[128];
            snprintf(control, sizeof control, "%s:%s", fr->fingerprint, full);
            derived_id(control, id);
            json_object_set_new(res, "id", json_string(id));
            snprintf(ref, sizeof ref, "%s/%s", ert, id);
            json_object_set_new(map, full, json_string(ref));
        }
    }
    if (json_object_size(map)) rewrite_refs(entries, map);
    json_decref(map);
    /* a transaction is all or nothing: validate every entry first */
    if (transaction && start_entry == 0) {
        for (size_t i = 0; i < n; i++) {
            json_t *res = json_object_get(json_array_get(entries, i), "resource");
            err why;
            err_clear(&why);
            const char *ert = json_string_value(json_object_get(res, "resourceType"));
            if (!res || fhir_validate(res, ert, &why) != ST_OK) {
                if (!res) err_set(&why, ST_INVALID, "required", NULL, "no resource");
                char w[sizeof why.where];
                snprintf(w, sizeof w, "Bundle.entry[%zu].resource%s%.110s", i, why.where[0] ? "." : "", why.where);
                snprintf(why.where, sizeof why.where, "%s", w);
                char msg[sizeof why.msg];
                snprintf(msg, sizeof msg, "transaction rejected whole: entry %zu: %.250s", i, why.msg);
                snprintf(why.msg, sizeof why.msg, "%s", msg);
                rc = add_rejected(b, &whole, text.p, text.len, &why, e);
                goto out_doc;
            }
        }
    }
    for (size_t i = (size_t)start_entry; i < n && rc == ST_OK; i++) {
        if (fr->o->cancel && *fr->o->cancel) break;
        json_t *en = json_array_get(entries, i);
        json_t *res = json_object_get(en, "resource");
        const char *method = json_string_value(json_object_get(json_object_get(en, "request"), "method"));
        bulk_mark m = {.owner = fr, .bytes_done = i + 1 == n ? size : 0, .lines_done = (int64_t)i + 1,
                       .line = (int64_t)i + 1};
        /* a transaction commits as one group: only its last entry ends it */
        int group_end = !transaction || i + 1 == n;
        char *etext = res ? json_dumps(res, JSON_COMPACT) : json_dumps(en, JSON_COMPACT);
        if (!etext) abort();
        if (!res || (method && strcmp(method, "DELETE") == 0)) {
            err why;
            if (!res) err_set(&why, ST_INVALID, "required", "resource", "entry %zu has no resource", i);
            else err_set(&why, ST_UNSUPPORTED, "not-supported", "request.method",
                         "entry %zu: DELETE is not imported from files; use the REST API", i);
            bulk_item it = {.json = etext, .len = strlen(etext), .group_end = group_end, .mark = m, .rejected = &why};
            rc = bulk_add_item(b, &it, e);
        } else {
            char control[64], fallback[33];
            snprintf(control, sizeof control, "%s:%zu", fr->fingerprint, i + 1);
            derived_id(control, fallback);
            bulk_item it = {.fallback_id = fallback, .json = etext, .len = strlen(etext), .group_end = group_end,
                            .mark = m};
            rc = bulk_add_item(b, &it, e);
        }
        free(etext);
        if ((i & 1023) == 0) progress_tick(ps, b, m.bytes_done, 0);
    }
out_doc:
    fhir_json_release();
out:
    if (doc) json_decref(doc);
    buf_free(&text);
    return rc;
}

/* CSV: each row mapped to resources (csvmap.c); a row is one group. */
typedef struct csv_emit_ctx {
    bulk *b;
    bulk_mark m;
    int n_emitted;
    /* resources of the row, held until the whole row is mapped */
    buf texts;
    struct {
        size_t off, len;
        char type[64], id[72];
    } items[32];
    int n;
} csv_emit_ctx;

static status csv_emit(void *ctx, const char *type, const char *id, const char *json, size_t len, err *e) {
    csv_emit_ctx *c = ctx;
    if (c->n == (int)(sizeof c->items / sizeof c->items[0]))
        return err_set(e, ST_INVALID, "too-costly", NULL, "a row maps to more than 32 resources");
    c->items[c->n].off = c->texts.len;
    c->items[c->n].len = len;
    snprintf(c->items[c->n].type, sizeof c->items[c->n].type, "%s", type);
    snprintf(c->items[c->n].id, sizeof c->items[c->n].id, "%s", id ? id : "");
    buf_append(&c->texts, json, len);
    c->n++;
    return ST_OK;
}

/* Resources a CSV file has already produced, by a 64-bit hash of their
 * text: every row re-emits its client's Patient, and an unchanged one is
 * not written again (a new version per contact would bury the history).
 * Bounded: cleared when full. */
#define SEEN_SLOTS (1u << 20)
typedef struct seen_set {
    uint64_t *slot;
    size_t n;
} seen_set;

static int seen_before(seen_set *ss, const char *text, size_t len) {
    if (!ss->slot) {
        ss->slot = calloc(SEEN_SLOTS, sizeof *ss->slot);
        if (!ss->slot) return 0;
    }
    uint64_t h;
    crypto_generichash((unsigned char *)&h, sizeof h, (const unsigned char *)text, len, NULL, 0);
    if (h == 0) h = 1;
    if (ss->n >= SEEN_SLOTS / 2) {
        memset(ss->slot, 0, SEEN_SLOTS * sizeof *ss->slot);
        ss->n = 0;
    }
    for (size_t i = (size_t)h & (SEEN_SLOTS - 1);; i = (i + 1) & (SEEN_SLOTS - 1)) {
        if (ss->slot[i] == h) return 1;
        if (!ss->slot[i]) {
            ss->slot[i] = h;
            ss->n++;
            return 0;
        }
    }
}

static status read_csv(file_run *fr, FILE *f, const csvmap *map_unbound, int64_t start_byte, int64_t start_line,
                       bulk *b, progress_state *ps, err *e) {
    csvmap *map = (csvmap *)map_unbound;
    csv_reader *r = csv_open(f, csvmap_delimiter(map), 0, 1);
    if (!r) return err_set(e, ST_NOMEM, "exception", fr->path, "out of memory");
    csv_record rec;
    err ce;
    err_clear(&ce);
    int k = csv_next(r, &rec, &ce);
    status rc = ST_OK;
    if (k != 1) {
        csv_close(r);
        if (k == 0) return err_set(e, ST_INVALID, "structure", fr->path, "%s: empty file, no header row", fr->path);
        return err_set(e, ST_INVALID, "structure", fr->path, "%s: header row: %s (%s)", fr->path, ce.msg, ce.where);
    }
    snprintf(fr->csv_header, sizeof fr->csv_header, "%.*s", (int)(rec.raw_len < 4000 ? rec.raw_len : 4000), rec.raw);
    size_t hl = strlen(fr->csv_header);
    while (hl && (fr->csv_header[hl - 1] == '\n' || fr->csv_header[hl - 1] == '\r')) fr->csv_header[--hl] = 0;
    if (csvmap_bind(map, &rec, e) != ST_OK) {
        csv_close(r);
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%.60s: header does not fit mapping %.60s: %.150s", fr->path, fr->mapping_path, e->msg);
        snprintf(e->msg, sizeof e->msg, "%s", msg);
        return e->code ? e->code : ST_INVALID;
    }
    if (start_byte > rec.end_offset) {
        csv_close(r);
        if (fseeko(f, start_byte, SEEK_SET) != 0)
            return err_set(e, ST_IO, "exception", fr->path, "%s: cannot seek: %s", fr->path, strerror(errno));
        r = csv_open(f, csvmap_delimiter(map), start_byte, start_line + 1);
        if (!r) return err_set(e, ST_NOMEM, "exception", fr->path, "out of memory");
    }
    csv_emit_ctx c = {.b = b};
    seen_set seen = {0};
    int64_t rows = 0;
    while (rc == ST_OK) {
        err_clear(&ce);
        k = csv_next(r, &rec, &ce);
        if (k == 0) break;
        if (fr->o->cancel && *fr->o->cancel) break;
        /* lines_done counts physical lines, a quoted field's line breaks included */
        bulk_mark m = {.owner = fr, .bytes_done = csv_offset(r), .lines_done = csv_line(r) - 1, .line = rec.line};
        if (k < 0 && ce.code == ST_IO) {
            rc = err_set(e, ST_IO, "exception", fr->path, "%s: read error", fr->path);
            break;
        }
        if (k < 0) {
            rc = add_rejected(b, &m, rec.raw, rec.raw_len, &ce, e);
            continue;
        }
        c.n = 0;
        buf_reset(&c.texts);
        err_clear(&ce);
        if (csvmap_row(map, &rec, NULL, csv_emit, &c, &ce) != ST_OK) {
            rc = add_rejected(b, &m, rec.raw, rec.raw_len, &ce, e);
            continue;
        }
        for (int i = 0; i < c.n && rc == ST_OK; i++) {
            /* an unchanged resource again (the client's Patient on each
             * of their rows): not stored again. The text carries no
             * meta.source (the transform hook stamps it), so equal
             * content is equal text. */
            const char *text = c.texts.p + c.items[i].off;
            int last = i + 1 == c.n;
            if (!last && seen_before(&seen, text, c.items[i].len)) continue;
            bulk_item it = {.type = c.items[i].type, .id = c.items[i].id, .json = text, .len = c.items[i].len,
                            .group_end = last, .mark = m};
            rc = bulk_add_item(b, &it, e);
        }
        if ((++rows & 1023) == 0) progress_tick(ps, b, rec.end_offset, 0);
    }
    buf_free(&c.texts);
    free(seen.slot);
    csv_close(r);
    return rc;
}

/* ---- one file ---------------------------------------------------------- */

static const char *detect_format(const char *path, FILE *f, const import_opts *o) {
    if (o->format) return o->format;
    if (has_suffix(path, ".ndjson") || has_suffix(path, ".jsonl")) return "ndjson";
    if (has_suffix(path, ".csv")) return "csv";
    if (has_suffix(path, ".json")) return "bundle";
    /* sniff: a first line that is a whole JSON object means ndjson */
    line_reader lr = {.f = f};
    int r = next_line(&lr);
    const char *fmt = "bundle";
    if (r == 1 && lr.line.len && lr.line.p[0] == '{') {
        json_error_t je;
        json_t *j = json_loadb(lr.line.p, lr.line.len, 0, &je);
        if (j) fmt = "ndjson";
        json_decref(j);
    }
    buf_free(&lr.line);
    rewind(f);
    return fmt;
}

/* Resources per transaction: large enough that the commit's fsync and the
 * b-tree pages rewritten per commit are shared by many records. */
static int import_default_batch(void) {
    const char *v = getenv("CONCORD_IMPORT_BATCH");
    int n = v ? atoi(v) : 0;
    return n > 0 ? n : 10000;
}

static int64_t usec_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Phase 1, per file: fingerprint, format, and what an earlier import of
 * the same content means for this one (skip, resume, or start). */
static status plan_file(store *s, file_run *fr, const import_opts *o, csvmap *map, import_file_outcome *out, err *e) {
    snprintf(out->path, sizeof out->path, "%s", fr->path);
    FILE *f = fopen(fr->path, "rb");
    if (!f) return err_set(e, ST_NOT_FOUND, "not-found", fr->path, "%s: %s", fr->path, strerror(errno));
    struct stat st;
    fstat(fileno(f), &st);
    fr->size = st.st_size;
    status rc = fingerprint(f, st.st_size, fr->fingerprint, e, fr->path);
    if (rc == ST_OK) fr->format = detect_format(fr->path, f, o);
    fclose(f);
    if (rc != ST_OK) return rc;
    snprintf(out->format, sizeof out->format, "%s", fr->format);
    if (strcmp(fr->format, "csv") == 0) {
        if (!map) return err_set(e, ST_INVALID, "required", fr->path, "%s: a CSV file needs --mapping", fr->path);
        fr->org = csvmap_org(map);
        fr->setting = csvmap_setting(map);
    }
    store_import_list prev = {0};
    store_import_file pf;
    int found = 0;
    rc = store_import_file_find(s, fr->fingerprint, &prev, &pf, &found, e);
    if (rc == ST_OK && found && strcmp(pf.status, "done") == 0 && !o->force) {
        fr->skip = 1;
        snprintf(out->status, sizeof out->status, "skipped");
        snprintf(out->message, sizeof out->message,
                 "already imported by job %lld (%lld stored, %lld quarantined); --force imports it again",
                 (long long)pf.job, (long long)pf.stored, (long long)pf.quarantined);
    } else if (rc == ST_OK && found && strcmp(pf.status, "done") != 0 && (pf.bytes_done || pf.lines_done)) {
        fr->start_byte = pf.bytes_done;
        fr->start_line = pf.lines_done;
        fr->base_stored = fr->stored = pf.stored;
        fr->base_quarantined = fr->quarantined = pf.quarantined;
        fr->resumed_job = pf.job;
        fr->resumed_file_no = pf.file_no;
        out->resumed_from_line = fr->start_line;
    }
    store_import_list_free(&prev);
    return rc;
}

/* Phase 2: every file's row (and the rows it supersedes), one commit. */
static status record_files(store *s, file_run *runs, import_file_outcome *outs, int n, err *e) {
    store_txn *tx = NULL;
    status rc = store_begin(s, &tx, e);
    for (int i = 0; rc == ST_OK && i < n; i++) {
        file_run *fr = &runs[i];
        store_import_file rec = {.job = fr->job, .file_no = fr->file_no, .path = fr->path,
                                 .fingerprint = fr->fingerprint, .format = fr->format, .size = fr->size,
                                 .bytes_done = fr->start_byte, .lines_done = fr->start_line,
                                 .stored = fr->base_stored, .quarantined = fr->base_quarantined,
                                 .status = fr->skip ? "skipped" : "running",
                                 .message = fr->skip ? outs[i].message : NULL};
        rc = store_import_file_add_tx(tx, &rec, e);
        if (rc == ST_OK && fr->resumed_job)
            rc = store_import_file_set_tx(tx, fr->resumed_job, fr->resumed_file_no, "resumed", NULL, e);
    }
    if (!tx) return rc;
    if (rc == ST_OK) return store_commit(tx, e);
    store_rollback(tx);
    return rc;
}

/* Phase 3, per file: its records into the pipeline. */
static status read_file(file_run *fr, csvmap *map, bulk *b, progress_state *ps, err *e) {
    FILE *f = fopen(fr->path, "rb");
    if (!f) return err_set(e, ST_NOT_FOUND, "not-found", fr->path, "%s: %s", fr->path, strerror(errno));
    fr->received_usec = usec_now();
    status rc;
    if (strcmp(fr->format, "ndjson") == 0) rc = read_ndjson(fr, f, fr->start_byte, fr->start_line, b, ps, e);
    else if (strcmp(fr->format, "csv") == 0) rc = read_csv(fr, f, map, fr->start_byte, fr->start_line, b, ps, e);
    else if (strcmp(fr->format, "bundle") == 0) rc = read_bundle(fr, f, fr->size, fr->start_line, b, ps, e);
    else rc = err_set(e, ST_INVALID, "value", "format", "unknown format '%s' (ndjson, bundle or csv)", fr->format);
    fclose(f);
    return rc;
}

/* ---- the job ----------------------------------------------------------- */

static char *request_json(const char *const *paths, int n, const import_opts *o) {
    json_t *j = json_object();
    json_t *files = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(files, json_string(paths[i]));
    json_object_set_new(j, "input", files);
    if (o->format) json_object_set_new(j, "format", json_string(o->format));
    if (o->mapping) json_object_set_new(j, "mapping", json_string(o->mapping));
    if (o->org) json_object_set_new(j, "organisation", json_string(o->org));
    if (o->setting) json_object_set_new(j, "setting", json_string(o->setting));
    if (o->force) json_object_set_new(j, "force", json_true());
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return t;
}

status import_run(store *s, int64_t job, const char *const *paths, int npaths, const import_opts *o,
                  import_result *r, err *e) {
    memset(r, 0, sizeof *r);
    double t0 = now_s();
    path_list files = {0};
    status rc = ST_OK;
    for (int i = 0; i < npaths && rc == ST_OK; i++) rc = expand_path(paths[i], o, &files, 0, e);
    if (rc == ST_OK && files.n == 0) rc = err_set(e, ST_INVALID, "required", NULL, "no files to import");
    csvmap *map = NULL;
    if (rc == ST_OK && o->mapping) rc = csvmap_load(o->mapping, &map, e);
    if (rc != ST_OK) {
        paths_free(&files);
        return rc;
    }
    if (!job) {
        char *req = request_json(paths, npaths, o);
        rc = store_import_job_create(s, o->origin ? o->origin : "cli", "running", req, &job, e);
        free(req);
    } else {
        rc = store_import_job_set(s, job, "running", NULL, e);
    }
    r->job = job;
    r->files = calloc((size_t)files.n, sizeof *r->files);
    file_run *runs = calloc((size_t)files.n, sizeof *runs);
    if (!r->files || !runs) abort();
    /* file numbers continue after the job's existing files (an API job resumed) */
    int first_no = 1;
    if (rc == ST_OK) {
        store_import_list cur = {0};
        if (store_import_job_get(s, job, &cur, NULL) == ST_OK && cur.n == 1)
            for (size_t k = 0; k < cur.v[0].nfiles; k++)
                if (cur.v[0].files[k].file_no >= first_no) first_no = cur.v[0].files[k].file_no + 1;
        store_import_list_free(&cur);
    }
    progress_state ps = {.o = o, .start = t0};
    ps.p.nfiles = files.n;
    for (int i = 0; i < files.n && rc == ST_OK; i++) {
        file_run *fr = &runs[i];
        fr->o = o;
        fr->job = job;
        fr->file_no = first_no + i;
        fr->path = files.v[i];
        fr->mapping_path = o->mapping;
        fr->org = o->org;
        fr->setting = o->setting;
        rc = plan_file(s, fr, o, map, &r->files[i], e);
        if (rc == ST_OK) ps.p.bytes_total += fr->skip ? 0 : fr->size - fr->start_byte;
    }
    r->nfiles = files.n;
    if (rc == ST_OK) rc = record_files(s, runs, r->files, files.n, e);
    /* one pipeline for every file: no thread start, no commit per file */
    bulk *b = NULL;
    bulk_hooks hooks = {.transform = hook_transform, .reject = hook_reject, .checkpoint = hook_checkpoint};
    if (rc == ST_OK) rc = bulk_start_hooked(s, o->workers, o->batch > 0 ? o->batch : import_default_batch(), &hooks, &b, e);
    int failed_at = -1;
    for (int i = 0; rc == ST_OK && i < files.n; i++) {
        if (o->cancel && *o->cancel) break;
        if (runs[i].skip) continue;
        ps.p.path = runs[i].path;
        ps.p.file_no = i + 1;
        rc = read_file(&runs[i], map, b, &ps, e);
        if (rc != ST_OK) failed_at = i;
        ps.bytes_before += runs[i].size - runs[i].start_byte;
        progress_tick(&ps, b, 0, 0);
    }
    if (b) {
        bulk_stats bs = {0};
        err fe;
        err_clear(&fe);
        status frc = bulk_finish(b, &bs, &fe);
        if (rc == ST_OK && frc != ST_OK) {
            rc = frc;
            *e = fe;
        }
    }
    int cancelled = o->cancel && *o->cancel;
    /* statuses, one commit */
    store_txn *tx = NULL;
    err se;
    int have_tx = store_begin(s, &tx, &se) == ST_OK;
    for (int i = 0; i < files.n; i++) {
        file_run *fr = &runs[i];
        import_file_outcome *out = &r->files[i];
        if (fr->skip) continue;
        out->stored = fr->stored;
        out->quarantined = fr->quarantined;
        const char *st = rc != ST_OK && (failed_at < 0 || failed_at == i) ? "failed"
                         : rc != ST_OK || cancelled                    ? "interrupted"
                                                                       : "done";
        snprintf(out->status, sizeof out->status, "%s",
                 strcmp(st, "interrupted") == 0 ? "cancelled" : st);
        if (strcmp(st, "failed") == 0) snprintf(out->message, sizeof out->message, "%.250s", e->msg);
        if (have_tx) store_import_file_set_tx(tx, job, fr->file_no, st, strcmp(st, "failed") == 0 ? e->msg : NULL, &se);
        r->stored += out->stored;
        r->quarantined += out->quarantined;
    }
    if (have_tx && store_commit(tx, &se) != ST_OK) log_warn("import: job %lld: file statuses not recorded: %s", (long long)job, se.msg);
    ps.p.stored = r->stored;
    ps.p.quarantined = r->quarantined;
    ps.bytes_before = ps.p.bytes_total;
    progress_tick(&ps, NULL, 0, 1);
    r->seconds = now_s() - t0;
    char msg[256];
    snprintf(msg, sizeof msg, "%lld stored, %lld quarantined in %d file(s)", (long long)r->stored,
             (long long)r->quarantined, r->nfiles);
    store_import_job_set(s, job, rc != ST_OK ? "failed" : cancelled ? "interrupted" : "done",
                         rc != ST_OK ? e->msg : msg, &se);
    free(runs);
    csvmap_free(map);
    paths_free(&files);
    return rc;
}

/* ---- replay ------------------------------------------------------------ */

status import_replay(store *s, int64_t msg_key, err *e) {
    store_message_list l = {0};
    status rc = store_message_get(s, msg_key, &l, e);
    if (rc != ST_OK) return rc;
    store_message *m = &l.v[0];
    if (strcmp(m->channel, "file") != 0 || strcmp(m->status, "quarantined") != 0) {
        rc = err_set(e, ST_CONFLICT, "conflict", NULL, "record %lld is not a quarantined file record", (long long)msg_key);
        goto out;
    }
    store_txn *tx = NULL;
    char fallback[33];
    derived_id(m->control_id, fallback);
    if (strncmp(m->message_type, "csv ", 4) == 0) {
        /* body = header line + "\n" + the row */
        csvmap *map = NULL;
        rc = csvmap_load(m->message_type + 4, &map, e);
        if (rc != ST_OK) goto out;
        FILE *f = fmemopen((void *)m->body, m->body_len, "rb");
        csv_reader *r = f ? csv_open(f, csvmap_delimiter(map), 0, 1) : NULL;
        csv_record rec;
        csv_emit_ctx c = {0};
        if (!r) rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        if (rc == ST_OK && csv_next(r, &rec, e) != 1) rc = err_set(e, ST_INVALID, "structure", NULL, "no header row");
        if (rc == ST_OK) rc = csvmap_bind(map, &rec, e);
        if (rc == ST_OK && csv_next(r, &rec, e) != 1) rc = e->code ? e->code : ST_INVALID;
        char source[128];
        snprintf(source, sizeof source, "urn:concord:quarantine:%lld", (long long)msg_key);
        if (rc == ST_OK) rc = csvmap_row(map, &rec, source, csv_emit, &c, e);
        if (rc == ST_OK) rc = store_begin(s, &tx, e);
        for (int i = 0; rc == ST_OK && i < c.n; i++) {
            json_error_t je;
            json_t *res = fhir_json_load(c.texts.p + c.items[i].off, c.items[i].len, &je);
            if (!res) rc = err_set(e, ST_INVALID, "structure", NULL, "mapping produced bad JSON: %s", je.text);
            if (rc == ST_OK) rc = fhir_validate(res, c.items[i].type, e);
            if (rc == ST_OK) rc = store_put(tx, res, c.items[i].id, 0, 0, NULL, NULL, NULL, e);
            if (res) json_decref(res);
        }
        fhir_json_release();
        buf_free(&c.texts);
        if (r) csv_close(r);
        if (f) fclose(f);
        csvmap_free(map);
    } else {
        json_error_t je;
        json_t *res = fhir_json_load(m->body, m->body_len, &je);
        if (!res) rc = err_set(e, ST_INVALID, "structure", NULL, "not JSON: %s (column %d)", je.text, je.column);
        const char *rt = res ? json_string_value(json_object_get(res, "resourceType")) : NULL;
        if (rc == ST_OK && !rt) rc = err_set(e, ST_INVALID, "required", "resourceType", "no resourceType");
        if (rc == ST_OK) rc = fhir_validate(res, rt, e);
        if (rc == ST_OK) {
            json_t *meta = json_object_get(res, "meta");
            if (!json_is_object(meta)) {
                meta = json_object();
                json_object_set_new(res, "meta", meta);
            }
            char src[96];
            snprintf(src, sizeof src, "urn:concord:quarantine:%lld", (long long)msg_key);
            json_object_set_new(meta, "source", json_string(src));
            const char *own = json_string_value(json_object_get(res, "id"));
            char id[72];
            snprintf(id, sizeof id, "%s", own ? own : fallback);
            rc = store_begin(s, &tx, e);
            if (rc == ST_OK) rc = store_put(tx, res, id, 0, 0, NULL, NULL, NULL, e);
        }
        if (res) json_decref(res);
        fhir_json_release();
    }
    if (tx) {
        if (rc == ST_OK) rc = store_commit(tx, e);
        else store_rollback(tx);
    }
    if (rc == ST_OK) rc = store_message_set_status(s, msg_key, "quarantined", "replayed", e);
out:
    store_message_list_free(&l);
    return rc;
}
