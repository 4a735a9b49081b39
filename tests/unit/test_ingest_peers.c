/*
 * test_ingest_peers.c — the MLLP peers file (src/ingest/peers.c) and the
 * address arithmetic under it (src/base/netaddr.c): what an operator writes
 * is read as meant (hosts, networks, IPv6, comments, several codes), a
 * mistake is reported with file:line and what is wrong, the most specific
 * network decides, and loopback is recognised in every spelling.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/netaddr.h"
#include "ingest/peers.h"

static netaddr addr(const char *s) {
    netaddr a;
    assert_int_equal(netaddr_parse(s, strlen(s), &a), 0);
    return a;
}

static peers *parse_ok(const char *text) {
    peers *p = NULL;
    err e;
    err_clear(&e);
    status rc = peers_parse(text, strlen(text), "peers.conf", &p, &e);
    if (rc != ST_OK) fail_msg("unexpected error: %s: %s", e.where, e.msg);
    return p;
}

/* Parse `text`, expect an error at `where` whose message contains `what`. */
static void parse_bad(const char *text, const char *where, const char *what) {
    peers *p = (peers *)1;
    err e;
    err_clear(&e);
    assert_int_equal(peers_parse(text, strlen(text), "peers.conf", &p, &e), ST_INVALID);
    assert_null(p);
    if (strcmp(e.where, where) != 0 || !strstr(e.msg, what))
        fail_msg("for %s: got %s: %s; wanted %s: ...%s...", text, e.where, e.msg, where, what);
}

static const char *matched_ods(const peers *p, const char *a, size_t i) {
    netaddr x = addr(a);
    const peers_entry *en = peers_match(p, &x);
    return en && i < en->nods ? en->ods[i] : NULL;
}

static void test_netaddr(void **state) {
    (void)state;
    netaddr a;
    assert_int_equal(netaddr_parse("10.1.2.3", 8, &a), 0);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(netaddr_parse("fd00::1", 7, &a), 0);
    assert_int_equal(a.family, AF_INET6);
    assert_int_equal(netaddr_parse("10.1.2", 6, &a), -1);
    assert_int_equal(netaddr_parse("10.1.2.3\0", 9, &a), -1); /* a NUL inside */
    assert_int_equal(netaddr_parse("", 0, &a), -1);
    assert_int_equal(netaddr_parse("host.example", 12, &a), -1);

    assert_true(netaddr_text_is_loopback("127.0.0.1"));
    assert_true(netaddr_text_is_loopback("127.255.3.4"));
    assert_true(netaddr_text_is_loopback("::1"));
    assert_true(netaddr_text_is_loopback("localhost"));
    assert_false(netaddr_text_is_loopback("0.0.0.0"));
    assert_false(netaddr_text_is_loopback("::"));
    assert_false(netaddr_text_is_loopback("128.0.0.1"));
    assert_false(netaddr_text_is_loopback("10.0.0.1"));
    assert_false(netaddr_text_is_loopback("localhost.example.org"));
    assert_false(netaddr_text_is_loopback(""));
    assert_false(netaddr_text_is_loopback(NULL));

    netaddr n = addr("10.20.0.0"), in = addr("10.20.255.1"), out = addr("10.21.0.1"), v6 = addr("::1");
    assert_true(netaddr_in_network(&in, &n, 16));
    assert_false(netaddr_in_network(&out, &n, 16));
    assert_true(netaddr_in_network(&out, &n, 8));
    assert_true(netaddr_in_network(&out, &n, 0));
    assert_false(netaddr_in_network(&v6, &n, 0)); /* families never mix */
    assert_true(netaddr_host_bits_set(&in, 16));
    assert_false(netaddr_host_bits_set(&n, 16));
    netaddr m = netaddr_masked(&in, 12);
    char text[NETADDR_TEXT_MAX];
    netaddr_format(&m, text, sizeof text);
    assert_string_equal(text, "10.16.0.0");

    /* an IPv4-mapped IPv6 peer is the IPv4 address it maps */
    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof s6);
    s6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &s6.sin6_addr);
    assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&s6, &a), 0);
    assert_int_equal(a.family, AF_INET);
    assert_true(netaddr_is_loopback(&a));
}

static void test_parse_hosts_networks_comments(void **state) {
    (void)state;
    peers *p = parse_ok("# MLLP senders of the North West London acute trusts\n"
                        "\n"
                        "10.20.1.15      RYJ            # the PAS at St Mary's\r\n"
                        "   10.20.8.0/24\tRYJ01, RYJ02  \n"
                        "fd00:1::/64 RQM\n"
                        "127.0.0.1 e2e01,X\n"
                        "10.0.0.0/8 ZZ1# a comment straight after\n"
                        "\t   # indented comment\n"
                        "0.0.0.0/0 ANY");
    assert_int_equal(peers_count(p), 6);
    const peers_entry *en = peers_at(p, 1);
    assert_string_equal(en->text, "10.20.8.0/24");
    assert_int_equal(en->prefix, 24);
    assert_int_equal(en->line, 4);
    assert_int_equal(en->nods, 2);
    assert_string_equal(en->ods[0], "RYJ01");
    assert_string_equal(en->ods[1], "RYJ02");
    assert_int_equal(peers_at(p, 0)->prefix, 32);
    assert_int_equal(peers_at(p, 2)->prefix, 64);
    assert_null(peers_at(p, 6));

    /* the most specific network decides */
    assert_string_equal(matched_ods(p, "10.20.1.15", 0), "RYJ");
    assert_string_equal(matched_ods(p, "10.20.8.77", 1), "RYJ02");
    assert_string_equal(matched_ods(p, "10.20.1.16", 0), "ZZ1");
    assert_string_equal(matched_ods(p, "192.0.2.1", 0), "ANY");
    assert_string_equal(matched_ods(p, "fd00:1::beef", 0), "RQM");
    netaddr x = addr("fd00:2::1");
    assert_null(peers_match(p, &x));

    x = addr("127.0.0.1");
    en = peers_match(p, &x);
    assert_non_null(en);
    assert_true(peers_entry_allows(en, "E2E01", 5));
    assert_true(peers_entry_allows(en, "x", 1));
    assert_false(peers_entry_allows(en, "E2E0", 4));
    assert_false(peers_entry_allows(en, "E2E011", 6));
    assert_false(peers_entry_allows(en, "", 0));
    assert_false(peers_entry_allows(NULL, "X", 1));
    peers_free(p);
}

static void test_empty_file_admits_no_one(void **state) {
    (void)state;
    peers *p = parse_ok("# nobody yet\n\n");
    assert_int_equal(peers_count(p), 0);
    netaddr x = addr("127.0.0.1");
    assert_null(peers_match(p, &x));
    peers_free(p);
    p = parse_ok("");
    assert_int_equal(peers_count(p), 0);
    peers_free(p);
}

static void test_errors_say_where_and_what(void **state) {
    (void)state;
    parse_bad("10.0.0.1 RYJ\nhello RYJ\n", "peers.conf:2", "'hello' is not an IPv4 or IPv6 address");
    parse_bad("10.0.0.1\n", "peers.conf:1", "10.0.0.1: no ODS code");
    parse_bad("10.0.0.1   # RYJ\n", "peers.conf:1", "no ODS code");
    parse_bad("\n\n10.0.0.0/33 RYJ\n", "peers.conf:3", "'33' is not a prefix length (0-32");
    parse_bad("fd00::/129 RYJ\n", "peers.conf:1", "(0-128");
    parse_bad("10.0.0.0/ RYJ\n", "peers.conf:1", "is not a prefix length");
    parse_bad("10.0.0.0/8x RYJ\n", "peers.conf:1", "'8x' is not a prefix length");
    parse_bad("10.0.0.0/0008 RYJ\n", "peers.conf:1", "is not a prefix length");
    parse_bad("10.1.2.3/8 RYJ\n", "peers.conf:1", "did you mean 10.0.0.0/8?");
    parse_bad("10.0.0.1 RYJ,,RQM\n", "peers.conf:1", "an empty ODS code");
    parse_bad("10.0.0.1 RYJ,\n", "peers.conf:1", "an empty ODS code");
    parse_bad("10.0.0.1 RYJ RQM\n", "peers.conf:1", "'RYJ RQM' is not an ODS code");
    parse_bad("10.0.0.1 R-YJ\n", "peers.conf:1", "'R-YJ' is not an ODS code");
    parse_bad("10.0.0.1 ABCDEFGHIJKLMNOP\n", "peers.conf:1",
              "is not an ODS code (letters and digits, at most 15");
    parse_bad("10.0.0.0/8 RYJ\n# x\n10.0.0.0/8 RQM\n", "peers.conf:3",
              "10.0.0.0/8 is already listed at line 1");
    parse_bad("10.0.0.1 RYJ\n10.0.0.1/32 RQM\n", "peers.conf:2", "already listed at line 1");
    /* what cannot be printed is shown as '?' */
    parse_bad("10.0.0.1 R\x01J\n", "peers.conf:1", "'R?J' is not an ODS code");
    static const char with_nul[] = "10.0.0.1 RYJ\n10.0.0.\0002 RQM\n";
    peers *p = NULL;
    err e;
    assert_int_equal(peers_parse(with_nul, sizeof with_nul - 1, "f", &p, &e), ST_INVALID);
    assert_string_equal(e.where, "f:2");
}

static void test_load_file(void **state) {
    (void)state;
    char path[] = "/tmp/concord-peers-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "127.0.0.1 RYJ\n10.0.0.0/8 RQM,RYJ\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    peers *p = NULL;
    err e;
    assert_int_equal(peers_load(path, &p, &e), ST_OK);
    assert_int_equal(peers_count(p), 2);
    peers_free(p);
    FILE *f = fopen(path, "a");
    fputs("bad line\n", f);
    fclose(f);
    assert_int_equal(peers_load(path, &p, &e), ST_INVALID);
    char want[64];
    snprintf(want, sizeof want, "%s:3", path);
    assert_string_equal(e.where, want);
    unlink(path);
    assert_int_equal(peers_load(path, &p, &e), ST_IO);
    assert_non_null(strstr(e.msg, "No such file"));
    assert_int_equal(peers_load("/tmp", &p, &e), ST_INVALID);
    assert_non_null(strstr(e.msg, "not a regular file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_netaddr),
        cmocka_unit_test(test_parse_hosts_networks_comments),
        cmocka_unit_test(test_empty_file_admits_no_one),
        cmocka_unit_test(test_errors_say_where_and_what),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
