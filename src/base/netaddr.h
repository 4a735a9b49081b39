/*
 * netaddr.h — IP addresses as values: parse the textual forms, take them
 * from a socket address, test for loopback, test membership of a network
 * (address and prefix length). What the listeners need to decide who may
 * connect (src/ingest/peers.h) and whether a listening address is local
 * (a listener without TLS must be).
 *
 * A netaddr is a plain value (copy it freely). IPv4 addresses are kept as
 * AF_INET; an IPv4-mapped IPv6 socket address (::ffff:a.b.c.d) becomes the
 * IPv4 address it maps, so one rule covers both.
 */
#ifndef CONCORD_NETADDR_H
#define CONCORD_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct netaddr {
    int family;          /* AF_INET or AF_INET6 */
    unsigned char b[16]; /* network byte order; 4 bytes used for AF_INET */
} netaddr;

#define NETADDR_TEXT_MAX 46 /* INET6_ADDRSTRLEN */

/* Parse an IPv4 dotted quad or an IPv6 address (no brackets, no port, no
 * zone) of `n` bytes (borrowed). 0 on success, -1 if it is neither. */
int netaddr_parse(const char *s, size_t n, netaddr *out);
/* From a connected socket's peer or local address. -1 for other families. */
int netaddr_from_sockaddr(const struct sockaddr *sa, netaddr *out);
/* 127.0.0.0/8 or ::1. */
int netaddr_is_loopback(const netaddr *a);
/* For a listening address as the user wrote it: "localhost", or an address
 * netaddr_is_loopback accepts. Anything else (0.0.0.0, a host name, a
 * routable address) is not loopback. */
int netaddr_text_is_loopback(const char *s);
/* Bits in an address of this family: 32 or 128. */
int netaddr_bits(const netaddr *a);
/* Is `a` inside the network net/prefix (same family, first `prefix` bits
 * equal)? */
int netaddr_in_network(const netaddr *a, const netaddr *net, int prefix);
/* Whether any bit of `a` after the first `prefix` is set (10.1.0.0/8). */
int netaddr_host_bits_set(const netaddr *a, int prefix);
/* `a` with every bit after the first `prefix` cleared. */
netaddr netaddr_masked(const netaddr *a, int prefix);
/* Text form into out[n] (n >= NETADDR_TEXT_MAX for any address). */
void netaddr_format(const netaddr *a, char *out, size_t n);

#endif
