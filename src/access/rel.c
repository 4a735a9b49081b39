/*
 * rel.c — the write hook that keeps what access decisions read in step
 * with the records, inside the transaction that stores each version:
 *
 *   acc_rel      legitimate relationships: one row per (patient key, the
 *                resource that establishes it, organisation or practitioner):
 *                  registered  Patient.generalPractitioner (practice or GP)
 *                  managing    Patient.managingOrganization
 *                  encounter   an Encounter not finished (status planned,
 *                              arrived, triaged, in-progress, onleave, or no
 *                              period.end): serviceProvider, participants
 *                  episode     an active EpisodeOfCare (community, social care,
 *                              mental health caseloads): managingOrganization,
 *                              careManager
 *                  careteam    an active CareTeam (an MDG discussing the
 *                              patient is one): participant members and
 *                              managingOrganization
 *   acc_consent  an active Consent whose provision denies (an objection to
 *                sharing); withdrawn (status inactive/rejected, or permit,
 *                or deleted) removes it
 *   acc_org      Organization id -> ODS code (identifier) and the ODS code of
 *                the organisation it is part of (partOf)
 *
 * A relationship written by a signed-in person (store_txn_user_claim: the
 * REST API's writes by any role but system) is marked `claimed`: it is
 * that person's own assertion, and opens only the record it was written in
 * (its patient key), not the person's other records across the registry
 * (store_scope.c). Otherwise registering a copy of someone (same NHS
 * number) at one's own organisation would open their whole record. Feeds
 * (system accounts, MLLP, the CLI) establish relationships that span the
 * person; so does break-glass, which is reviewed.
 *
 * Each new version replaces the rows its resource established before
 * (matched by resource key), so updates, ends of encounters and deletes
 * withdraw relationships as they happen.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../store/store_int.h"
#include "policy.h"


/* Run one statement with binds: fmt chars 'i' (int64_t) and 't' (text). */
static status run(store_txn *tx, const char *sql, err *e, const char *fmt, ...) {
    store *s = store_txn_store(tx);
    db_stmt *st = NULL;
    status rc = s->drv->prepare(tx->d, sql, 1, &st, e);
    if (rc != ST_OK) return rc;
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 'i') s->drv->bind_int(st, i + 1, va_arg(ap, int64_t));
        else s->drv->bind_text(st, i + 1, va_arg(ap, const char *), -1);
    }
    va_end(ap);
    int r;
    while ((r = s->drv->step(st, e)) == 1) {}
    s->drv->done(st);
    return r < 0 ? ST_IO : ST_OK;
}

/* The ODS code for an "Organization/<id>" reference: acc_org's row, else
 * the id without the synthetic "org-" prefix, else the id. */
static void org_code(store_txn *tx, const char *ref, char *out, size_t n) {
    out[0] = 0;
    if (!ref || strncmp(ref, "Organization/", 13) != 0) return;
    const char *id = ref + 13;
    store *s = store_txn_store(tx);
    db_stmt *st = NULL;
    err e;
    static const char sql[] = "SELECT ods FROM acc_org WHERE org_id = ?";
    if (s->drv->prepare(tx->d, sql, 1, &st, &e) == ST_OK) {
        s->drv->bind_text(st, 1, id, -1);
        if (s->drv->step(st, &e) == 1) {
            const char *o = s->drv->col_text(st, 0, NULL);
            if (o) snprintf(out, n, "%s", o);
        }
        s->drv->done(st);
    }
    if (!out[0]) snprintf(out, n, "%s", strncmp(id, "org-", 4) == 0 ? id + 4 : id);
}

static const char *ref_of(json_t *o) { return json_string_value(json_object_get(o, "reference")); }

/* One relationship row from a reference to an Organization or a
 * Practitioner (others are ignored). */
static status add_ref(store_txn *tx, const store_write_event *ev, const char *kind, const char *ref, err *e) {
    static const char ins[] =
        "INSERT INTO acc_rel (pkey, src_rkey, kind, org, who, claimed) VALUES (?, ?, ?, ?, ?, ?)";
    if (!ref) return ST_OK;
    int64_t claimed = store_txn_user_claim(tx);
    if (strncmp(ref, "Organization/", 13) == 0) {
        char ods[64];
        org_code(tx, ref, ods, sizeof ods);
        return run(tx, ins, e, "iitssi", ev->pkey, ev->rkey, kind, ods, "", claimed);
    }
    if (strncmp(ref, "Practitioner/", 13) == 0)
        return run(tx, ins, e, "iitssi", ev->pkey, ev->rkey, kind, "", ref + 13, claimed);
    return ST_OK;
}

static int status_in(json_t *res, const char *const *list) {
    const char *st = json_string_value(json_object_get(res, "status"));
    if (!st) return 0;
    for (int i = 0; list[i]; i++)
        if (strcmp(st, list[i]) == 0) return 1;
    return 0;
}

static status patient_rels(store_txn *tx, const store_write_event *ev, err *e) {
    status rc = ST_OK;
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(ev->res, "generalPractitioner"), i, g) {
        rc = add_ref(tx, ev, "registered", ref_of(g), e);
        if (rc != ST_OK) return rc;
    }
    return add_ref(tx, ev, "managing", ref_of(json_object_get(ev->res, "managingOrganization")), e);
}

static status encounter_rels(store_txn *tx, const store_write_event *ev, err *e) {
    static const char *const open[] = {"planned", "arrived", "triaged", "in-progress", "onleave", NULL};
    json_t *period = json_object_get(ev->res, "period");
    int is_open = status_in(ev->res, open) && !json_object_get(period, "end");
    if (!is_open) return ST_OK;
    status rc = add_ref(tx, ev, "encounter", ref_of(json_object_get(ev->res, "serviceProvider")), e);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ev->res, "participant"), i, p) {
        if (rc != ST_OK) break;
        rc = add_ref(tx, ev, "encounter", ref_of(json_object_get(p, "individual")), e);
    }
    return rc;
}

static status episode_rels(store_txn *tx, const store_write_event *ev, err *e) {
    static const char *const active[] = {"active", "waitlist", "onhold", "planned", NULL};
    if (!status_in(ev->res, active)) return ST_OK;
    status rc = add_ref(tx, ev, "episode", ref_of(json_object_get(ev->res, "managingOrganization")), e);
    if (rc == ST_OK) rc = add_ref(tx, ev, "episode", ref_of(json_object_get(ev->res, "careManager")), e);
    return rc;
}

static status careteam_rels(store_txn *tx, const store_write_event *ev, err *e) {
    static const char *const active[] = {"active", "proposed", "suspended", NULL};
    if (json_object_get(ev->res, "status") && !status_in(ev->res, active)) return ST_OK;
    status rc = ST_OK;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ev->res, "participant"), i, p) {
        rc = add_ref(tx, ev, "careteam", ref_of(json_object_get(p, "member")), e);
        if (rc == ST_OK) rc = add_ref(tx, ev, "careteam", ref_of(json_object_get(p, "onBehalfOf")), e);
        if (rc != ST_OK) return rc;
    }
    json_array_foreach(json_object_get(ev->res, "managingOrganization"), i, p) {
        rc = add_ref(tx, ev, "careteam", ref_of(p), e);
        if (rc != ST_OK) return rc;
    }
    return rc;
}

/* An objection: an active Consent whose base provision is deny. */
static status consent_rows(store_txn *tx, const store_write_event *ev, err *e) {
    const char *st = json_string_value(json_object_get(ev->res, "status"));
    const char *type = json_string_value(json_object_get(json_object_get(ev->res, "provision"), "type"));
    if (!st || strcmp(st, "active") != 0 || !type || strcmp(type, "deny") != 0) return ST_OK;
    char ods[64] = "";
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(ev->res, "organization"), i, o) {
        org_code(tx, ref_of(o), ods, sizeof ods);
        if (ods[0]) break;
    }
    static const char ins[] = "INSERT INTO acc_consent (pkey, src_rkey, org, since) VALUES (?, ?, ?, ?)";
    return run(tx, ins, e, "iiti", ev->pkey, ev->rkey, ods, tx->now_usec);
}

static status organization_row(store_txn *tx, const store_write_event *ev, err *e) {
    char ods[64] = "", parent[64] = "";
    size_t i;
    json_t *id;
    json_array_foreach(json_object_get(ev->res, "identifier"), i, id) {
        const char *sys = json_string_value(json_object_get(id, "system"));
        const char *v = json_string_value(json_object_get(id, "value"));
        if (sys && v && strcmp(sys, STORE_ODS_SYSTEM) == 0) {
            snprintf(ods, sizeof ods, "%s", v);
            break;
        }
    }
    if (!ods[0]) snprintf(ods, sizeof ods, "%s", ev->id);
    org_code(tx, ref_of(json_object_get(ev->res, "partOf")), parent, sizeof parent);
    static const char ins[] = "INSERT INTO acc_org (org_id, ods, part_of) VALUES (?, ?, ?)";
    return run(tx, ins, e, "ttt", ev->id, ods, parent);
}

static status on_write(void *ctx, store_txn *tx, const store_write_event *ev, err *e) {
    enum { T_PATIENT, T_ENCOUNTER, T_EPISODE, T_CARETEAM, T_CONSENT, T_ORG, T_OTHER } t = T_OTHER;
    const char *ty = ev->type;
    if (ty[0] == 'P' && strcmp(ty, "Patient") == 0) t = T_PATIENT;
    else if (ty[0] == 'E' && strcmp(ty, "Encounter") == 0) t = T_ENCOUNTER;
    else if (ty[0] == 'E' && strcmp(ty, "EpisodeOfCare") == 0) t = T_EPISODE;
    else if (ty[0] == 'C' && strcmp(ty, "CareTeam") == 0) t = T_CARETEAM;
    else if (ty[0] == 'C' && strcmp(ty, "Consent") == 0) t = T_CONSENT;
    else if (ty[0] == 'O' && strcmp(ty, "Organization") == 0) t = T_ORG;
    if (t == T_OTHER) return ST_OK;
    status rc = ST_OK;
    int fresh = ev->version == 1 && !ev->deleted; /* nothing established before */
    if (t == T_ORG) {
        if (!fresh) rc = run(tx, "DELETE FROM acc_org WHERE org_id = ?", e, "t", ev->id);
        if (rc == ST_OK && !ev->deleted && ev->res) rc = organization_row(tx, ev, e);
        return rc;
    }
    if (t == T_CONSENT) {
        if (!fresh) rc = run(tx, "DELETE FROM acc_consent WHERE src_rkey = ?", e, "i", ev->rkey);
        if (rc == ST_OK && !ev->deleted && ev->res && ev->pkey) rc = consent_rows(tx, ev, e);
        return rc;
    }
    if (!fresh) rc = run(tx, "DELETE FROM acc_rel WHERE src_rkey = ?", e, "i", ev->rkey);
    if (rc != ST_OK || ev->deleted || !ev->res || !ev->pkey) return rc;
    switch (t) {
    case T_PATIENT: return patient_rels(tx, ev, e);
    case T_ENCOUNTER: return encounter_rels(tx, ev, e);
    case T_EPISODE: return episode_rels(tx, ev, e);
    case T_CARETEAM: return careteam_rels(tx, ev, e);
    default: return ST_OK;
    }
}

status acc_rel_attach(store *s, err *e) { return store_add_write_hook(s, NULL, on_write, NULL, e); }
