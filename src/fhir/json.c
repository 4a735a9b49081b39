/*
 * json.c — FHIR JSON load/dump that keeps decimals as written (see json.h).
 *
 * The side table: open addressing over json_t pointers, per thread, with
 * the decimal texts copied into a per-thread arena. It is cleared, not
 * freed, between requests, so a worker thread reuses its memory. Detaching
 * hands the arena itself over (the thread starts a new one); attaching
 * copies the texts into the attaching thread's arena.
 */
#include "json.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/arena.h"

typedef struct dec_entry {
    const json_t *key;
    const char *text;
} dec_entry;

static _Thread_local dec_entry *dec_tab;
static _Thread_local size_t dec_cap, dec_n;
static _Thread_local arena dec_arena;
static pthread_key_t dec_key;
static pthread_once_t dec_once = PTHREAD_ONCE_INIT;

/* Worker threads come and go (the HTTP pool is stopped at shutdown): free
 * this thread's table when it exits. */
static void dec_thread_exit(void *unused) {
    free(dec_tab);
    dec_tab = NULL;
    dec_cap = dec_n = 0;
    arena_free(&dec_arena);
}
static void dec_key_create(void) { pthread_key_create(&dec_key, dec_thread_exit); }

static size_t slot_of(const json_t *p, size_t cap) {
    uintptr_t k = (uintptr_t)p;
    k ^= k >> 17;
    k *= 0x9E3779B97F4A7C15ULL;
    return (size_t)(k >> 7) & (cap - 1);
}

static void dec_put(const json_t *key, const char *text) {
    if ((dec_n + 1) * 2 > dec_cap) {
        size_t cap = dec_cap ? dec_cap * 2 : 256;
        dec_entry *t = calloc(cap, sizeof *t);
        if (!t) abort();
        for (size_t i = 0; i < dec_cap; i++) {
            if (!dec_tab[i].key) continue;
            size_t j = slot_of(dec_tab[i].key, cap);
            while (t[j].key) j = (j + 1) & (cap - 1);
            t[j] = dec_tab[i];
        }
        free(dec_tab);
        dec_tab = t;
        dec_cap = cap;
    }
    size_t j = slot_of(key, dec_cap);
    while (dec_tab[j].key && dec_tab[j].key != key) j = (j + 1) & (dec_cap - 1);
    if (!dec_tab[j].key) dec_n++;
    dec_tab[j].key = key;
    dec_tab[j].text = text;
}

static const char *dec_get(const json_t *key) {
    if (!dec_n) return NULL;
    size_t j = slot_of(key, dec_cap);
    while (dec_tab[j].key) {
        if (dec_tab[j].key == key) return dec_tab[j].text;
        j = (j + 1) & (dec_cap - 1);
    }
    return NULL;
}

void fhir_json_release(void) {
    if (dec_n) memset(dec_tab, 0, dec_cap * sizeof *dec_tab);
    dec_n = 0;
    arena_reset(&dec_arena);
}

/* Arms the thread-exit destructor of this thread's table. */
static void dec_arm(void) {
    pthread_once(&dec_once, dec_key_create);
    pthread_setspecific(dec_key, &dec_cap); /* any non-NULL */
}

/* A detached table: the entries compacted, and the arena their texts are in
 * (taken from the thread, so detaching copies no text). */
struct fhir_json_decimals {
    dec_entry *v;
    size_t n;
    arena a;
};

static void collect_reals(json_t *j, json_t ***out, size_t *n, size_t *cap);

fhir_json_decimals *fhir_json_detach(json_t *const *roots, size_t n) {
    if (!dec_n) return NULL;
    fhir_json_decimals *d = calloc(1, sizeof *d);
    if (!d) abort();
    if (!roots) {
        d->v = malloc(dec_n * sizeof *d->v);
        if (!d->v) abort();
        for (size_t i = 0; i < dec_cap; i++)
            if (dec_tab[i].key) d->v[d->n++] = dec_tab[i];
    } else {
        json_t **reals = NULL;
        size_t nr = 0, cap = 0;
        for (size_t i = 0; i < n; i++)
            if (roots[i]) collect_reals(roots[i], &reals, &nr, &cap);
        if (nr) {
            d->v = malloc(nr * sizeof *d->v);
            if (!d->v) abort();
        }
        for (size_t i = 0; i < nr; i++) {
            const char *t = dec_get(reals[i]);
            if (t) d->v[d->n++] = (dec_entry){reals[i], t};
        }
        free(reals);
    }
    d->a = dec_arena; /* the texts stay where they are */
    dec_arena.head = NULL;
    memset(dec_tab, 0, dec_cap * sizeof *dec_tab);
    dec_n = 0;
    if (!d->n) {
        fhir_json_decimals_free(d);
        return NULL;
    }
    return d;
}

void fhir_json_attach(const fhir_json_decimals *d) {
    if (!d) return;
    dec_arm();
    for (size_t i = 0; i < d->n; i++) dec_put(d->v[i].key, arena_strdup(&dec_arena, d->v[i].text));
}

void fhir_json_decimals_free(fhir_json_decimals *d) {
    if (!d) return;
    free(d->v);
    arena_free(&d->a);
    free(d);
}

/* The texts of the number tokens that jansson reads as reals (those with a
 * fraction or an exponent), in document order. */
typedef struct tokens {
    const char **v;
    size_t *len;
    size_t n, cap;
} tokens;

static void scan_reals(const char *s, size_t n, tokens *t) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = i;
            int real = 0;
            while (i < n && (strchr("+-.eE", s[i]) || (s[i] >= '0' && s[i] <= '9'))) {
                if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') real = 1;
                i++;
            }
            if (real) {
                if (t->n == t->cap) {
                    t->cap = t->cap ? t->cap * 2 : 16;
                    t->v = realloc(t->v, t->cap * sizeof *t->v);
                    t->len = realloc(t->len, t->cap * sizeof *t->len);
                    if (!t->v || !t->len) abort();
                }
                t->v[t->n] = s + start;
                t->len[t->n++] = i - start;
            }
            i--;
        }
    }
}

/* Walk in document order, pairing reals with tokens. Returns 0 if the
 * counts disagree (then nothing is remembered). */
static void collect_reals(json_t *j, json_t ***out, size_t *n, size_t *cap) {
    if (json_is_real(j)) {
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            *out = realloc(*out, *cap * sizeof **out);
            if (!*out) abort();
        }
        (*out)[(*n)++] = j;
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) collect_reals(v, out, n, cap);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) collect_reals(v, out, n, cap);
    }
}

json_t *fhir_json_load(const char *text, size_t n, json_error_t *je) {
    json_t *j = json_loadb(text, n, JSON_REJECT_DUPLICATES, je);
    if (!j) return NULL;
    tokens t = {0};
    scan_reals(text, n, &t);
    if (t.n) {
        json_t **reals = NULL;
        size_t nr = 0, cap = 0;
        collect_reals(j, &reals, &nr, &cap);
        if (nr == t.n) {
            dec_arm();
            for (size_t i = 0; i < nr; i++) dec_put(reals[i], arena_strndup(&dec_arena, t.v[i], t.len[i]));
        }
        free(reals);
    }
    free(t.v);
    free(t.len);
    return j;
}

static void dump_real(double d, buf *out) {
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    /* JSON needs a digit after a bare sign and no "inf"/"nan" (never stored) */
    buf_puts(out, tmp);
    if (!strpbrk(tmp, ".eEn")) buf_puts(out, ".0");
}

void fhir_json_dump(const json_t *j, buf *out) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        buf_putc(out, '{');
        int first = 1;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            if (!first) buf_putc(out, ',');
            first = 0;
            buf_putc(out, '"');
            buf_json_escape(out, k, strlen(k));
            buf_puts(out, "\":");
            fhir_json_dump(v, out);
        }
        buf_putc(out, '}');
        break;
    }
    case JSON_ARRAY: {
        buf_putc(out, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i) buf_putc(out, ',');
            fhir_json_dump(json_array_get(j, i), out);
        }
        buf_putc(out, ']');
        break;
    }
    case JSON_STRING:
        buf_putc(out, '"');
        buf_json_escape(out, json_string_value(j), json_string_length(j));
        buf_putc(out, '"');
        break;
    case JSON_INTEGER: buf_printf(out, "%lld", (long long)json_integer_value(j)); break;
    case JSON_REAL: {
        const char *t = dec_get(j);
        if (t) buf_puts(out, t);
        else dump_real(json_real_value(j), out);
        break;
    }
    case JSON_TRUE: buf_puts(out, "true"); break;
    case JSON_FALSE: buf_puts(out, "false"); break;
    case JSON_NULL: buf_puts(out, "null"); break;
    }
}
