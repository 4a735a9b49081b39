/*
 * hash.h — FNV-1a, 64-bit (Fowler, Noll, Vo), for in-memory cache keys:
 * fast on short inputs, not for anything an attacker chooses to collide.
 */
#ifndef CONCORD_BASE_HASH_H
#define CONCORD_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A_INIT 14695981039346656037ull

static inline uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

#endif
