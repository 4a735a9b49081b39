/*
 * access.h — information governance: who is asking (a principal), what
 * their role lets them do, and which patients' records they may see.
 *
 * The parts (docs/access.md):
 *   auth.h    users, passwords (argon2id), API tokens, sessions, throttling
 *   audit.h   the access log: a keyed hash chain of AuditEvents
 *   policy.c  role permissions, sensitive categories, the visibility scope
 *             that the store turns into SQL (store_scope in store.h)
 *   rel.c     the write hooks that keep legitimate relationships, consent
 *             objections and organisation lookups in step with the records
 *   glass.c   break-glass grants and their review
 *
 * Every request through the HTTP API carries an acc_principal; the REST
 * layer asks acc_allow() whether the role may do the action at all, builds
 * the principal's store_scope for the store's queries (searches never see
 * what the user may not), and writes an audit_event for every read, search,
 * write, export and refusal of patient data.
 */
#ifndef CONCORD_ACCESS_H
#define CONCORD_ACCESS_H

#include <stdint.h>

#include "../base/status.h"

/* Roles (docs/access.md has the permission table). The names are what
 * `concord user add --role` takes and what the audit log records. */
typedef enum acc_role {
    ROLE_NONE = 0,
    ROLE_GP,
    ROLE_PRACTICE_NURSE,
    ROLE_CONSULTANT,
    ROLE_ED_CLINICIAN,
    ROLE_COMMUNITY_NURSE,
    ROLE_SOCIAL_WORKER,
    ROLE_PHARMACIST,
    ROLE_MENTAL_HEALTH,
    ROLE_MDG_COORDINATOR,
    ROLE_ANALYST,
    ROLE_ADMIN,
    ROLE_PRIVACY_OFFICER,
    ROLE_PATIENT,
    ROLE_SYSTEM, /* a machine feed (MLLP sender, import job) */
    ROLE_COUNT
} acc_role;

/* "gp", "practice-nurse", ... ; ROLE_NONE for an unknown name. */
acc_role acc_role_parse(const char *name);
const char *acc_role_name(acc_role r);
/* Human label: "GP", "Practice nurse", ... */
const char *acc_role_label(acc_role r);

/* How the principal proved who they are. */
typedef enum acc_via { ACC_VIA_NONE = 0, ACC_VIA_TOKEN, ACC_VIA_SESSION, ACC_VIA_CLI, ACC_VIA_FEED } acc_via;

/* Who is asking. Filled by auth (token or session) or by the CLI/feeds;
 * fixed-size, copied freely. */
typedef struct acc_principal {
    int64_t user_key;     /* acc_user.user_key; 0 for the CLI's operating-system user */
    char user[64];        /* user name */
    char display[96];     /* display name */
    acc_role role;
    char org[16];         /* ODS code of the user's organisation, "" if none */
    char practitioner[72];/* the user's Practitioner id, "" if none */
    char patient[72];     /* role patient: their own Patient id */
    acc_via via;
    char session[72];     /* session: its id hash (hex), for logout; else "" */
    char csrf[48];        /* session: the CSRF token the web app must echo */
    char addr[48];        /* remote address */
} acc_principal;

/* Sensitive categories (bits of resource.sens). Which roles may see each is
 * data (data/access/sensitive.tsv); the organisation that recorded a
 * sensitive record always sees it. */
enum {
    SENS_SEXUAL_HEALTH = 1u << 0,
    SENS_MENTAL_HEALTH = 1u << 1,
    SENS_SAFEGUARDING = 1u << 2,
    SENS_SUBSTANCE = 1u << 3,
    SENS_GENETIC = 1u << 4,
    SENS_OTHER = 1u << 5, /* on the configurable list without a category of its own */
};

#endif
