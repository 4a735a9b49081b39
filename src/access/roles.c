/*
 * roles.c — the roles of concord: their names (what `concord user add
 * --role` takes, what acc_user.role and the audit log hold), their labels
 * (what people read), and whether a role needs an organisation.
 *
 * Invariants: the table has one row per acc_role from ROLE_GP to
 * ROLE_SYSTEM, in enum order (checked by the tests through
 * acc_role_parse(acc_role_name(r)) == r); names are lower case, stable
 * (they are stored), and never reused for another meaning.
 *
 * A role "needs an organisation" when what it may see depends on a
 * legitimate relationship held by the user's organisation (registered at
 * the practice, an open encounter there, its care team or MDG): every care
 * role. Analysts, administrators, privacy officers, patients and machine
 * feeds do not (a feed may still have one: it then writes as that
 * organisation).
 */
#include <string.h>

#include "auth.h"

static const struct role_def {
    acc_role role;
    const char *name;
    const char *label;
    int needs_org;
} roles[] = {
    {ROLE_GP, "gp", "GP", 1},
    {ROLE_PRACTICE_NURSE, "practice-nurse", "Practice nurse", 1},
    {ROLE_CONSULTANT, "consultant", "Hospital consultant", 1},
    {ROLE_ED_CLINICIAN, "ed-clinician", "ED clinician", 1},
    {ROLE_COMMUNITY_NURSE, "community-nurse", "Community nurse", 1},
    {ROLE_SOCIAL_WORKER, "social-worker", "Social worker", 1},
    {ROLE_PHARMACIST, "pharmacist", "Pharmacist", 1},
    {ROLE_MENTAL_HEALTH, "mental-health", "Mental health professional", 1},
    {ROLE_MDG_COORDINATOR, "mdg-coordinator", "MDG coordinator", 1},
    {ROLE_ANALYST, "analyst", "Analyst / commissioner", 0},
    {ROLE_ADMIN, "admin", "Administrator", 0},
    {ROLE_PRIVACY_OFFICER, "privacy-officer", "Privacy officer", 0},
    {ROLE_PATIENT, "patient", "Patient", 0},
    {ROLE_SYSTEM, "system", "System", 0},
};

#define N_ROLES (sizeof roles / sizeof roles[0])
_Static_assert(N_ROLES == ROLE_COUNT - 1, "one row per role");

static const struct role_def *def_of(acc_role r) {
    return r > ROLE_NONE && r < ROLE_COUNT && roles[r - 1].role == r ? &roles[r - 1] : NULL;
}

acc_role acc_role_parse(const char *name) {
    acc_role r = ROLE_NONE;
    for (size_t i = 0; name && i < N_ROLES && r == ROLE_NONE; i++)
        if (strcmp(name, roles[i].name) == 0) r = roles[i].role;
    return r;
}

const char *acc_role_name(acc_role r) {
    const struct role_def *d = def_of(r);
    return d ? d->name : "none";
}

const char *acc_role_label(acc_role r) {
    const struct role_def *d = def_of(r);
    return d ? d->label : "No role";
}

int auth_role_needs_org(acc_role r) {
    const struct role_def *d = def_of(r);
    return d ? d->needs_org : 0;
}
