/*
 * landing.h — the HTML page served at `/` (landing.c).
 *
 * Ownership: every argument is borrowed for the call; the page is appended
 * to `b`. `who` is NULL when the visitor is not signed in (the page then
 * offers the sign-in form and shows no figures); `counts_html` is a
 * ready-made (escaped) table of per-type counts, or NULL.
 */
#ifndef CONCORD_HTTP_LANDING_H
#define CONCORD_HTTP_LANDING_H

#include "../access/access.h"
#include "../base/buf.h"

void http_landing_page(buf *b, const char *version, const char *base, const char *backend, const acc_principal *who,
                       const char *counts_html);

#endif
