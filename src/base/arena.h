/*
 * arena.h — region allocator for per-request and per-transaction memory.
 * Everything allocated from an arena is released at once by arena_free (or
 * arena_reset, which keeps the first block for reuse). Individual allocations
 * are never freed. Alignment is 16 bytes.
 *
 * Ownership: the arena owns every block it hands out; pointers into it are
 * invalidated by arena_reset/arena_free.
 */
#ifndef CONCORD_ARENA_H
#define CONCORD_ARENA_H

#include <stddef.h>

typedef struct arena_block arena_block;
typedef struct arena {
    arena_block *head;
} arena;

void *arena_alloc(arena *a, size_t n);           /* uninitialised */
void *arena_zalloc(arena *a, size_t n);          /* zeroed */
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_reset(arena *a);
void arena_free(arena *a);

#endif
