/*
 * guard.c — the access decisions of the FHIR API (see guard.h): role
 * permission, record visibility through the store scope, what a write may
 * touch and as whom, and the access-log entry of each decision.
 */
#include "guard.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../base/log.h"
#include "../fhir/index.h"
#include "../store/store_int.h"

static const char *action_name(unsigned a) {
    if (a & ACC_DELETE) return "delete";
    if (a & ACC_WRITE) return "write";
    if (a & ACC_EXPORT) return "export";
    if (a & ACC_COUNT) return "count";
    return "read";
}

status guard_role(const acc_principal *who, const char *rtype, unsigned actions, err *e) {
    acc_area area = acc_area_of_type(rtype);
    if (acc_allow(who->role, area, actions)) return ST_OK;
    return err_set(e, ST_FORBIDDEN, "forbidden", NULL, "the role %s may not %s %s (%s records)",
                   acc_role_name(who->role), action_name(actions), rtype, acc_area_name(area));
}

status guard_record(store *s, const acc_principal *who, const store_meta *m, int *via_glass, err *e) {
    acc_scope sc;
    store_why why = STORE_VISIBLE;
    if (via_glass) *via_glass = 0;
    status rc = acc_scope_for(s, who, &sc, e);
    if (rc == ST_OK) rc = store_scope_check(s, &sc.sc, m->pkey, m->org, m->sens, &why, via_glass, e);
    if (rc != ST_OK) return rc;
    switch (why) {
    case STORE_VISIBLE: return ST_OK;
    case STORE_HIDDEN_SENSITIVE:
        return err_set(e, ST_NOT_FOUND, "not-found", NULL, "%s/%s is not known", m->type, m->id);
    case STORE_HIDDEN_CONSENT:
        return err_set(
            e, ST_FORBIDDEN, "forbidden", NULL,
            "the patient has objected to sharing their record outside the organisations that recorded "
            "it; in an emergency use Patient/{id}/$break-glass with a reason");
    case STORE_HIDDEN_NOT_SELF:
        return err_set(e, ST_FORBIDDEN, "forbidden", NULL, "a patient may read only their own record");
    case STORE_HIDDEN_NO_PATIENT_DATA:
        return err_set(e, ST_FORBIDDEN, "forbidden", NULL, "the role %s sees aggregate data only",
                       acc_role_name(who->role));
    case STORE_HIDDEN_NO_RELATIONSHIP:
    default:
        return err_set(
            e, ST_FORBIDDEN, "forbidden", NULL,
            "no legitimate relationship with this patient (registered at your organisation, care team, "
            "open encounter or episode, or MDG); in an emergency use Patient/{id}/$break-glass with a "
            "reason");
    }
}

/* The Patient whose record `res` will be stored in, into out (72 bytes;
 * "" if none): by the store's own rule (fhir_index_patient_id over the
 * type's Patient-compartment parameters: Observation.performer,
 * Appointment.participant.actor, ... as well as subject), so that the
 * access check is made on the record the write actually lands in. */
static void compartment_patient(json_t *res, const char *rtype, char *out) {
    out[0] = 0;
    arena a = {0};
    const char *pid = fhir_index_compartment_patient(rtype, res, &a);
    if (pid) snprintf(out, 72, "%s", pid);
    arena_free(&a);
}

static int is_clinicians_entry(store *s, const char *rtype, const char *id) {
    buf body = {0};
    store_meta m;
    err e;
    int theirs = 0;
    if (id && store_read(s, rtype, id, 0, &body, &m, &e) == ST_OK) {
        json_t *j = json_loadb(body.p ? body.p : "", body.len, 0, NULL);
        int patient_authored = 0;
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(json_object_get(j, "meta"), "tag"), i, t) {
            const char *sys = json_string_value(json_object_get(t, "system"));
            const char *code = json_string_value(json_object_get(t, "code"));
            if (sys && code && strcmp(sys, CONCORD_TAG_SYSTEM) == 0 && strcmp(code, "patient-authored") == 0)
                patient_authored = 1;
        }
        json_decref(j);
        theirs = !patient_authored;
    }
    buf_free(&body);
    return theirs;
}

/* Replace the ODS tag (or add one) in meta.tag; for patients, a
 * patient-authored tag instead. */
static void stamp(json_t *res, const acc_principal *who) {
    json_t *meta = json_object_get(res, "meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(res, "meta", meta);
    }
    json_t *tags = json_object_get(meta, "tag");
    if (!json_is_array(tags)) {
        tags = json_array();
        json_object_set_new(meta, "tag", tags);
    }
    for (size_t i = json_array_size(tags); i-- > 0;) {
        const char *sys = json_string_value(json_object_get(json_array_get(tags, i), "system"));
        if (sys && (strcmp(sys, STORE_ODS_SYSTEM) == 0 || strcmp(sys, CONCORD_TAG_SYSTEM) == 0))
            json_array_remove(tags, i);
    }
    if (who->role == ROLE_PATIENT)
        json_array_append_new(tags, json_pack("{s:s, s:s, s:s}", "system", CONCORD_TAG_SYSTEM, "code",
                                              "patient-authored", "display", "Written by the patient"));
    else if (who->org[0])
        json_array_append_new(tags, json_pack("{s:s, s:s}", "system", STORE_ODS_SYSTEM, "code", who->org));
}

status guard_write(store *s, const acc_principal *who, json_t *res, const char *rtype, int64_t *pkey,
                   char *patient_id, err *e) {
    status rc = ST_OK;
    *pkey = 0;
    patient_id[0] = 0;
    char pid[72];
    compartment_patient(res, rtype, pid);
    if (who->role == ROLE_PATIENT) {
        static const char *const own[] = {"Goal", "Communication", "QuestionnaireResponse", NULL};
        int ok = 0;
        for (int i = 0; own[i]; i++)
            ok |= strcmp(own[i], rtype) == 0;
        if (!ok)
            return err_set(
                e, ST_FORBIDDEN, "forbidden", NULL,
                "a patient may write their own Goal, Communication and QuestionnaireResponse only");
        if (!pid[0] || strcmp(pid, who->patient) != 0)
            return err_set(e, ST_FORBIDDEN, "forbidden", NULL, "a patient may write only about themselves");
        /* their own notes are kept apart from clinical entries: a patient
         * does not write over (and so take over) a clinician's entry. A
         * body's id names the record an update replaces (a create ignores
         * it: one naming a clinician's entry is refused all the same) */
        if (is_clinicians_entry(s, rtype, json_string_value(json_object_get(res, "id"))))
            return err_set(
                e, ST_FORBIDDEN, "forbidden", NULL,
                "a patient may not change an entry written by a clinician: add a note of your own");
    } else {
        rc = guard_role(who, rtype, ACC_WRITE, e);
        if (rc != ST_OK) return rc;
    }
    if (pid[0]) {
        snprintf(patient_id, 72, "%s", pid);
        db *d = store_db(s, e);
        if (!d) return e ? e->code : ST_IO;
        rc = store_patient_key(s, d, pid, 0, pkey, e);
        if (rc != ST_OK) return rc;
    }
    if (*pkey && who->role != ROLE_PATIENT) {
        /* writing into an existing record needs the same relationship as
         * reading it */
        store_meta m = {0};
        snprintf(m.type, sizeof m.type, "Patient");
        snprintf(m.id, sizeof m.id, "%s", pid);
        m.pkey = *pkey;
        snprintf(m.org, sizeof m.org, "%s", who->org);
        rc = guard_record(s, who, &m, NULL, e);
        if (rc != ST_OK) return rc;
    }
    stamp(res, who);
    return ST_OK;
}

/* patient key -> patient id never changes once assigned, so the access
 * log's lookups are cached (direct-mapped, one lock per stripe). */
#define PID_CACHE 8192
static struct {
    pthread_mutex_t lock;
    const store *s; /* tests open several stores in one process */
    int64_t pkey;
    char id[72];
} pid_cache[PID_CACHE];
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static void pid_init(void) {
    for (int i = 0; i < PID_CACHE; i++)
        pthread_mutex_init(&pid_cache[i].lock, NULL);
}

void guard_patient_id(store *s, int64_t pkey, char *out, size_t n) {
    out[0] = 0;
    if (!pkey) return;
    pthread_once(&pid_once, pid_init);
    int slot = (int)((uint64_t)pkey % PID_CACHE);
    pthread_mutex_lock(&pid_cache[slot].lock);
    int hit = pid_cache[slot].pkey == pkey && pid_cache[slot].s == s;
    if (hit) snprintf(out, n, "%s", pid_cache[slot].id);
    pthread_mutex_unlock(&pid_cache[slot].lock);
    if (hit) return;
    err e;
    db *d = store_db(s, &e);
    if (!d) return;
    static const char sql[] = "SELECT patient_id FROM patient_key WHERE pkey = ?";
    db_stmt *st = NULL;
    if (s->drv->prepare(d, sql, 1, &st, &e) != ST_OK) return;
    s->drv->bind_int(st, 1, pkey);
    if (s->drv->step(st, &e) == 1) {
        const char *p = s->drv->col_text(st, 0, NULL);
        if (p) snprintf(out, n, "%s", p);
    }
    s->drv->done(st);
    if (out[0] && strlen(out) < sizeof pid_cache[slot].id) {
        pthread_mutex_lock(&pid_cache[slot].lock);
        pid_cache[slot].pkey = pkey;
        pid_cache[slot].s = s;
        snprintf(pid_cache[slot].id, sizeof pid_cache[slot].id, "%s", out);
        pthread_mutex_unlock(&pid_cache[slot].lock);
    }
}

status guard_audit(audit_log *log, const acc_principal *who, const char *action, const char *rtype,
                   const char *rid, int64_t pkey, const char *patient_id, int http_status,
                   const char *purpose, const char *reason, const char *method, const char *path,
                   const char *query, int wait) {
    if (!log) return ST_OK;
    char request[2048];
    snprintf(request, sizeof request, "%s %s%s%s", method ? method : "", path ? path : "",
             query && *query ? "?" : "", query ? query : "");
    audit_event ev = {
        .user = who ? who->user : "anonymous",
        .role = who ? acc_role_name(who->role) : "",
        .org = who ? who->org : "",
        .action = action,
        .outcome = http_status >= 500   ? "8"
                   : http_status >= 400 ? "4"
                                        : "0",
        .status = http_status,
        .rtype = rtype,
        .rid = rid,
        .pkey = pkey,
        .patient_id = patient_id,
        .purpose = purpose ? purpose : (who && who->role == ROLE_PATIENT ? "PATRQT" : "TREAT"),
        .reason = reason,
        .source = who ? who->addr : "",
        .request = request,
    };
    err e;
    status rc = audit_append(log, &ev, wait, &e);
    if (rc != ST_OK) log_error("access log: cannot append (%s): %s", action, e.msg);
    return rc;
}
