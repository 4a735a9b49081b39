/*
 * peers.c — the MLLP peers file: who may connect, and which organisations
 * (ODS codes) each may send as. The format is described in peers.h and
 * docs/tls.md; this file owns it.
 *
 * Invariants: every entry's network has its host bits clear and no two
 * entries name the same network; every ODS code is 1..PEERS_ODS_MAX ASCII
 * letters and digits. Everything but the entry array lives in the peers'
 * arena.
 */
#include "peers.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../base/arena.h"

#define FORMAT_HINT "a line is ADDR[/PREFIXLEN] ODS[,ODS...]"

struct peers {
    arena a;
    peers_entry *v;
    size_t n, cap;
};

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static void trim(const char **s, size_t *n) {
    while (*n && is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_space((*s)[*n - 1]))
        (*n)--;
}

/* `s` as it may be shown in a message: at most 40 bytes, anything not
 * printable ASCII as '?'. */
static const char *shown(const char *s, size_t n, char out[48]) {
    size_t k = 0;
    for (size_t i = 0; i < n && k < 40; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > 40) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = 0;
    return out;
}

static status line_error(err *e, const char *name, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static status line_error(err *e, const char *name, int line, const char *fmt, ...) {
    char where[160], msg[300];
    snprintf(where, sizeof where, "%s:%d", name, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(e, ST_INVALID, "invalid", where, "%s", msg);
}

static status parse_network(const char *s, size_t n, const char *name, int line, netaddr *net, int *prefix,
                            err *e) {
    char t1[48], t2[48];
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    if (netaddr_parse(s, alen, net) != 0)
        return line_error(e, name, line, "'%s' is not an IPv4 or IPv6 address (%s)", shown(s, alen, t1),
                          FORMAT_HINT);
    int bits = netaddr_bits(net);
    *prefix = bits;
    if (slash) {
        const char *p = slash + 1;
        size_t plen = n - alen - 1;
        int v = 0;
        if (plen == 0 || plen > 3) v = -1;
        for (size_t i = 0; v >= 0 && i < plen; i++)
            v = isdigit((unsigned char)p[i]) ? v * 10 + (p[i] - '0') : -1;
        if (v < 0 || v > bits)
            return line_error(e, name, line, "'%s' is not a prefix length (0-%d for this address)",
                              shown(p, plen, t1), bits);
        *prefix = v;
    }
    if (netaddr_host_bits_set(net, *prefix)) {
        netaddr m = netaddr_masked(net, *prefix);
        char text[NETADDR_TEXT_MAX], suggestion[64];
        netaddr_format(&m, text, sizeof text);
        snprintf(suggestion, sizeof suggestion, "%s/%d", text, *prefix);
        return line_error(e, name, line, "'%s' has bits set after the prefix: did you mean %s?",
                          shown(s, n, t2), suggestion);
    }
    return ST_OK;
}

static int valid_ods(const char *s, size_t n) {
    if (n == 0 || n > PEERS_ODS_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

static status parse_ods_list(peers *p, const char *s, size_t n, const char *name, int line, peers_entry *en,
                             err *e) {
    char t1[48];
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += s[i] == ',';
    const char **ods = arena_zalloc(&p->a, count * sizeof *ods);
    size_t k = 0;
    const char *item = s;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ',') continue;
        const char *t = item;
        size_t tn = (size_t)(s + i - item);
        trim(&t, &tn);
        if (tn == 0)
            return line_error(e, name, line, "an empty ODS code (two commas, or a comma at the end)");
        if (!valid_ods(t, tn))
            return line_error(
                e, name, line,
                "'%s' is not an ODS code (letters and digits, at most %d; codes are separated by commas)",
                shown(t, tn, t1), PEERS_ODS_MAX);
        ods[k++] = arena_strndup(&p->a, t, tn);
        item = s + i + 1;
    }
    en->ods = ods;
    en->nods = k;
    return ST_OK;
}

static status parse_line(peers *p, const char *s, size_t n, const char *name, int line, err *e) {
    const char *hash = memchr(s, '#', n);
    if (hash) n = (size_t)(hash - s);
    trim(&s, &n);
    if (n == 0) return ST_OK;
    size_t tok = 0;
    while (tok < n && !is_space(s[tok]))
        tok++;
    peers_entry en;
    memset(&en, 0, sizeof en);
    en.line = line;
    status rc = parse_network(s, tok, name, line, &en.net, &en.prefix, e);
    if (rc != ST_OK) return rc;
    char t1[48];
    const char *rest = s + tok;
    size_t rn = n - tok;
    trim(&rest, &rn);
    if (rn == 0) return line_error(e, name, line, "%s: no ODS code (%s)", shown(s, tok, t1), FORMAT_HINT);
    rc = parse_ods_list(p, rest, rn, name, line, &en, e);
    if (rc != ST_OK) return rc;
    snprintf(en.text, sizeof en.text, "%s", shown(s, tok, t1));
    for (size_t i = 0; i < p->n; i++) {
        const peers_entry *o = &p->v[i];
        if (o->prefix == en.prefix && o->net.family == en.net.family && memcmp(o->net.b, en.net.b, 16) == 0)
            return line_error(e, name, line, "%s is already listed at line %d", en.text, o->line);
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        peers_entry *v = realloc(p->v, cap * sizeof *v);
        if (!v) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = en;
    return ST_OK;
}

status peers_parse(const char *text, size_t len, const char *name, peers **out, err *e) {
    status rc = ST_OK;
    *out = NULL;
    peers *p = calloc(1, sizeof *p);
    if (!p) return err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
    if (!name) name = "peers";
    int line = 1;
    size_t start = 0;
    for (size_t i = 0; i <= len && rc == ST_OK; i++) {
        if (i < len && text[i] != '\n') continue;
        rc = parse_line(p, text + start, i - start, name, line, e);
        line++;
        start = i + 1;
    }
    if (rc != ST_OK) {
        peers_free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

status peers_load(const char *path, peers **out, err *e) {
    status rc = ST_OK;
    *out = NULL;
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        rc = err_set(e, ST_IO, "exception", path, "cannot read the peers file: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > PEERS_FILE_MAX) {
        rc = err_set(e, ST_INVALID, "invalid", path, "the peers file is %s",
                     S_ISREG(st.st_mode) ? "larger than 4 MiB" : "not a regular file");
        goto out;
    }
    size_t n = (size_t)st.st_size;
    text = malloc(n + 1);
    if (!text) {
        rc = err_set(e, ST_NOMEM, "exception", NULL, "out of memory");
        goto out;
    }
    if (n && fread(text, 1, n, f) != n) {
        rc = err_set(e, ST_IO, "exception", path, "cannot read the peers file: %s",
                     ferror(f) ? strerror(errno) : "it changed while being read");
        goto out;
    }
    rc = peers_parse(text, n, path, out, e);
out:
    if (f) fclose(f);
    free(text);
    return rc;
}

void peers_free(peers *p) {
    if (!p) return;
    arena_free(&p->a);
    free(p->v);
    free(p);
}

size_t peers_count(const peers *p) {
    return p ? p->n : 0;
}

const peers_entry *peers_at(const peers *p, size_t i) {
    return p && i < p->n ? &p->v[i] : NULL;
}

const peers_entry *peers_match(const peers *p, const netaddr *a) {
    const peers_entry *best = NULL;
    for (size_t i = 0; p && i < p->n; i++) {
        const peers_entry *en = &p->v[i];
        if ((!best || en->prefix > best->prefix) && netaddr_in_network(a, &en->net, en->prefix)) best = en;
    }
    return best;
}

int peers_entry_allows(const peers_entry *en, const char *ods, size_t n) {
    for (size_t i = 0; en && i < en->nods; i++)
        if (strlen(en->ods[i]) == n && strncasecmp(en->ods[i], ods, n) == 0) return 1;
    return 0;
}
