/*
 * netstring.c — see netstring.h.
 */
#include "netstring.h"

#include <string.h>

size_t ns_decimal(char *out, int64_t v) {
    char t[24];
    size_t n = 0, k = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        t[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0) out[k++] = '-';
    while (n)
        out[k++] = t[--n];
    return k;
}

void ns_put(buf *b, const char *p, size_t n) {
    /* written in place: the access log's writer frames every field of
     * every event with this */
    buf_reserve(b, 24 + n + 1);
    char *o = b->p + b->len;
    if (n < 10) {
        *o++ = (char)('0' + n);
    } else if (n < 100) {
        *o++ = (char)('0' + n / 10);
        *o++ = (char)('0' + n % 10);
    } else {
        o += ns_decimal(o, (int64_t)n);
    }
    *o++ = ':';
    if (n) memcpy(o, p, n);
    o += n;
    *o++ = ',';
    *o = 0;
    b->len = (size_t)(o - b->p);
}

void ns_put_int(buf *b, int64_t v) {
    char t[24];
    ns_put(b, t, ns_decimal(t, v));
}

int ns_get(const char **p, const char *end, size_t max, const char **s, size_t *n) {
    const char *q = *p;
    size_t len = 0, digits = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        if (digits && len == 0) return -1; /* a leading zero */
        size_t d = (size_t)(*q - '0');
        if (len > max / 10 || d > max - len * 10) return -1;
        len = len * 10 + d;
        q++;
        digits++;
    }
    if (!digits || q >= end || *q != ':') return -1;
    q++;
    if ((size_t)(end - q) < len + 1 || q[len] != ',') return -1;
    *s = q;
    *n = len;
    *p = q + len + 1;
    return 0;
}

int ns_parse_int(const char *s, size_t n, int64_t *v) {
    size_t i = 0;
    int neg = 0;
    uint64_t u = 0;
    if (n && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 19) return -1;
    if (s[i] == '0' && (n - i > 1 || neg)) return -1; /* leading zero, "-0" */
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        u = u * 10 + (uint64_t)(s[i] - '0');
    }
    if (u > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) return -1;
    *v = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 0;
}
