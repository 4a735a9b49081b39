/*
 * netaddr.c — IP addresses as values (see netaddr.h).
 *
 * Invariant: a netaddr's bytes past its family's length are zero, so two
 * equal addresses compare equal with memcmp.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int netaddr_parse(const char *s, size_t n, netaddr *out) {
    char text[NETADDR_TEXT_MAX + 1];
    if (n == 0 || n > NETADDR_TEXT_MAX) return -1;
    memcpy(text, s, n);
    text[n] = 0;
    if (strlen(text) != n) return -1; /* a NUL inside */
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, text, out->b) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, out->b) == 1) {
        out->family = AF_INET6;
        return 0;
    }
    memset(out, 0, sizeof *out);
    return -1;
}

int netaddr_from_sockaddr(const struct sockaddr *sa, netaddr *out) {
    memset(out, 0, sizeof *out);
    if (!sa) return -1;
    if (sa->sa_family == AF_INET) {
        out->family = AF_INET;
        memcpy(out->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(b, v4_mapped_prefix, sizeof v4_mapped_prefix) == 0) {
            out->family = AF_INET;
            memcpy(out->b, b + 12, 4);
        } else {
            out->family = AF_INET6;
            memcpy(out->b, b, 16);
        }
        return 0;
    }
    return -1;
}

int netaddr_is_loopback(const netaddr *a) {
    static const unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (a->family == AF_INET) return a->b[0] == 127;
    if (a->family == AF_INET6) return memcmp(a->b, v6_loopback, 16) == 0;
    return 0;
}

int netaddr_text_is_loopback(const char *s) {
    if (!s) return 0;
    if (strcmp(s, "localhost") == 0) return 1;
    netaddr a;
    return netaddr_parse(s, strlen(s), &a) == 0 && netaddr_is_loopback(&a);
}

int netaddr_bits(const netaddr *a) {
    return a->family == AF_INET6 ? 128 : 32;
}

netaddr netaddr_masked(const netaddr *a, int prefix) {
    netaddr m = *a;
    int bits = netaddr_bits(a);
    if (prefix < 0) prefix = 0;
    for (int i = prefix; i < bits; i++)
        m.b[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
    return m;
}

int netaddr_host_bits_set(const netaddr *a, int prefix) {
    netaddr m = netaddr_masked(a, prefix);
    return memcmp(m.b, a->b, sizeof m.b) != 0;
}

int netaddr_in_network(const netaddr *a, const netaddr *net, int prefix) {
    if (a->family != net->family || prefix < 0 || prefix > netaddr_bits(a)) return 0;
    netaddr x = netaddr_masked(a, prefix), y = netaddr_masked(net, prefix);
    return memcmp(x.b, y.b, sizeof x.b) == 0;
}

void netaddr_format(const netaddr *a, char *out, size_t n) {
    if (!n) return;
    out[0] = 0;
    char text[NETADDR_TEXT_MAX];
    if (a->family == AF_INET || a->family == AF_INET6) {
        if (inet_ntop(a->family, a->b, text, sizeof text)) snprintf(out, n, "%s", text);
    }
}
