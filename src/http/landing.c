/*
 * landing.c — the page at `/`: what concord is, a sign-in form for people
 * who are not signed in, and for those who are, who they are and where to
 * go for their role (see landing.h).
 *
 * Nothing about any person is on this page: a patient's links point at the
 * FHIR API, which checks and logs every read. The only figures are the
 * store's per-type counts, shown to signed-in users other than patients
 * (aggregate, no person in them).
 *
 * The page's script talks to /auth/login and /auth/logout and, for
 * patients, POSTs a "what matters to me" Goal to /fhir/Goal; non-GET
 * requests carry the session's CSRF token, which the page holds in a data
 * attribute (HTML-escaped like every other value on the page).
 */
#include "landing.h"

#include <string.h>

static const char style[] =
    "<style>body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#1d2733}"
    "table{border-collapse:collapse}td,th{padding:.25rem .75rem;text-align:left;border-bottom:1px solid #d8dde3}"
    "td:last-child,th:last-child{text-align:right}code{background:#eef1f4;padding:.1rem .3rem}"
    "form.signin{display:grid;gap:.5rem;max-width:20rem}label{display:grid;gap:.2rem}"
    "input,textarea,button{font:inherit;padding:.35rem .5rem}button{cursor:pointer;width:max-content}"
    ".who{background:#eef5ee;border:1px solid #b9d3b9;padding:.5rem .75rem}"
    "[role=alert]{color:#a01818}</style>";

/* The script: sign in (form), sign out, and a patient's own goal. */
static const char script[] =
    "<script>\n"
    "const csrf = document.body.dataset.csrf || '';\n"
    "async function post(url, body, type) {\n"
    "  const h = {'Content-Type': type};\n"
    "  if (csrf) h['X-CSRF-Token'] = csrf;\n"
    "  return fetch(url, {method: 'POST', headers: h, body: body, credentials: 'same-origin'});\n"
    "}\n"
    "function say(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }\n"
    "async function problem(r) {\n"
    "  try { const j = await r.json(); return (j.issue && j.issue[0] && j.issue[0].diagnostics) || r.statusText; }\n"
    "  catch (e) { return r.statusText; }\n"
    "}\n"
    "const signin = document.getElementById('signin');\n"
    "if (signin) signin.addEventListener('submit', async (ev) => {\n"
    "  ev.preventDefault();\n"
    "  const f = new FormData(signin);\n"
    "  const r = await post('/auth/login', JSON.stringify({user: f.get('user'), password: f.get('password')}),\n"
    "                       'application/json');\n"
    "  if (r.ok) location.reload(); else say('signin-error', await problem(r));\n"
    "});\n"
    "const signout = document.getElementById('signout');\n"
    "if (signout) signout.addEventListener('click', async () => {\n"
    "  await post('/auth/logout', '', 'application/json');\n"
    "  location.reload();\n"
    "});\n"
    "const goal = document.getElementById('goal');\n"
    "if (goal) goal.addEventListener('submit', async (ev) => {\n"
    "  ev.preventDefault();\n"
    "  const text = new FormData(goal).get('text');\n"
    "  const g = {resourceType: 'Goal', lifecycleStatus: 'active', description: {text: text},\n"
    "             subject: {reference: 'Patient/' + goal.dataset.patient}};\n"
    "  const r = await post('/fhir/Goal', JSON.stringify(g), 'application/fhir+json');\n"
    "  if (r.ok) { goal.reset(); say('goal-status', 'Saved. It is marked as written by you.'); }\n"
    "  else say('goal-status', await problem(r));\n"
    "});\n"
    "</script>";

static void link(buf *b, const char *href_prefix, const char *id, const char *href_suffix, const char *text) {
    buf_puts(b, "<li><a href=\"");
    buf_html_escape(b, href_prefix);
    if (id) buf_html_escape(b, id);
    if (href_suffix) buf_html_escape(b, href_suffix);
    buf_puts(b, "\">");
    buf_html_escape(b, text);
    buf_puts(b, "</a></li>");
}

static void links_for(buf *b, const acc_principal *who) {
    buf_puts(b, "<h2>Where to go</h2><ul>");
    switch (who->role) {
    case ROLE_PATIENT:
        link(b, "/fhir/Patient/", who->patient, "/$everything", "Your record");
        link(b, "/fhir/$access-log", NULL, NULL, "Who has looked at your record, and why");
        link(b, "/fhir/Goal?patient=", who->patient, NULL, "Your goals");
        break;
    case ROLE_PRIVACY_OFFICER:
        link(b, "/fhir/$access-log?_count=50", NULL, NULL, "The access log");
        link(b, "/fhir/$break-glass", NULL, NULL, "Break-glass accesses to review");
        break;
    case ROLE_ANALYST:
        link(b, "/fhir/Patient?_summary=count", NULL, NULL, "How many people are registered");
        break;
    default:
        link(b, "/fhir/Patient?_count=20", NULL, NULL, "Your patients");
        if (who->org[0]) link(b, "/fhir/$risk-worklist?practice=", who->org, NULL, "Risk worklist");
        link(b, "/fhir/Encounter?class=IMP&_count=20&_sort=-date", NULL, NULL, "Recent admissions");
        break;
    }
    link(b, "/fhir/metadata", NULL, NULL, "CapabilityStatement");
    buf_puts(b, "</ul>");
}

void http_landing_page(buf *b, const char *version, const char *base, const char *backend, const acc_principal *who,
                       const char *counts_html) {
    buf_puts(b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>concord</title>");
    buf_puts(b, style);
    buf_puts(b, "</head><body data-csrf=\"");
    if (who) buf_html_escape(b, who->csrf);
    buf_puts(b, "\"><h1>concord</h1><p>Integrated care server, version ");
    buf_html_escape(b, version);
    buf_puts(b, ". FHIR R4 at <code>");
    buf_html_escape(b, base);
    buf_puts(b, "</code>, storage: ");
    buf_html_escape(b, backend);
    buf_puts(b, ".</p>");
    if (!who) {
        buf_puts(b, "<h2>Sign in</h2>"
                    "<form id=\"signin\" class=\"signin\"><label>User name <input name=\"user\" "
                    "autocomplete=\"username\" required></label><label>Password <input name=\"password\" "
                    "type=\"password\" autocomplete=\"current-password\" required></label>"
                    "<button type=\"submit\">Sign in</button><p id=\"signin-error\" role=\"alert\"></p></form>"
                    "<p>Every look at a person's record is checked against your role and your relationship with "
                    "them, and written to an access log the person can read. Systems use API tokens "
                    "(<code>Authorization: Bearer</code>).</p>");
    } else {
        buf_puts(b, "<p class=\"who\">Signed in as <strong>");
        buf_html_escape(b, who->display[0] ? who->display : who->user);
        buf_puts(b, "</strong> (");
        buf_html_escape(b, acc_role_label(who->role));
        if (who->org[0]) {
            buf_puts(b, ", ");
            buf_html_escape(b, who->org);
        }
        buf_puts(b, ") <button id=\"signout\" type=\"button\">Sign out</button></p>");
        links_for(b, who);
        if (who->role == ROLE_PATIENT) {
            buf_puts(b, "<h2>What matters to me</h2><form id=\"goal\" data-patient=\"");
            buf_html_escape(b, who->patient);
            buf_puts(b, "\"><label>Something you want your care to help with <textarea name=\"text\" rows=\"3\" "
                        "cols=\"50\" required></textarea></label><button type=\"submit\">Save</button>"
                        "<p id=\"goal-status\" role=\"status\"></p></form>"
                        "<p>What you write here is kept as yours, apart from clinical entries, and your care "
                        "team can read it.</p>");
        } else if (counts_html) {
            buf_puts(b, "<h2>Data held (the whole store)</h2>");
            buf_puts(b, counts_html);
        }
    }
    buf_puts(b, script);
    buf_puts(b, "</body></html>");
}
