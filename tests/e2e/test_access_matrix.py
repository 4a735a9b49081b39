"""The access matrix of issue 6: every role x relationship x resource kind x
action, run end to end through the HTTP API, each cell a named test case
(`test_cell[sqlite-gp-registered-clinical-read]`).

The expected answer of every cell comes from the tables below, written out
from the issue's rules and the documents (docs/access.md: roles, areas,
relationships, sensitivity, consent; docs/auth.md; the sensitive-code and
sensitive-role lists of data/access), never from the implementation: the
test does not ask the server what is allowed, it asks for the data.

The world: one user per role (an API token made with the CLI, as an
operator would), each care role at an organisation of its own and with a
Practitioner id; for each role and each relationship a patient whose
records were written by another organisation's feed (the tests' `system`
principal, organisation E2E01), plus two records written by the role's own
organisation (a feed account at that organisation). Every record carries a
tag of its own (`urn:e2e:mx|...`) so that a search can name it without
naming a person. Updates and deletes act on copies made for that cell alone,
so that cells never depend on each other.

What "hidden" means here: a read of a record the user may not see is refused
(403, naming break-glass when a relationship or consent is what is missing)
or, for a sensitive record, answered exactly as a record that does not exist
(404); a search never returns it and its Bundle.total and _summary=count do
not count it.
"""
import json
import subprocess
from dataclasses import dataclass

import pytest

from concordlib import Fhir, uid

CLI_TIMEOUT = 120

# ---- the rules --------------------------------------------------------------

# Roles with their organisation requirement (docs/auth.md: care roles act for
# an organisation; analyst, admin and privacy officer do not; the `system`
# feed writes as the organisation it is given).
CARE_ROLES = ["gp", "practice-nurse", "consultant", "ed-clinician", "community-nurse", "social-worker",
              "pharmacist", "mental-health", "mdg-coordinator"]
ROLES = CARE_ROLES + ["analyst", "admin", "privacy-officer", "system"]  # the patient role is apart
ORG_ROLES = set(CARE_ROLES) | {"system"}

# What each role may do with each area of the record, before relationships:
#   r read (read, search, history)   w write (create, update)   d delete
#   x export (Patient/$everything)   c count (_summary=count, aggregate)
# Clinicians read the whole record of the people they care for and write in
# their own field; deleting clinical entries is for the doctors who own the
# record (GP, consultant); exporting a whole record likewise. Community
# nurses, pharmacists and MDG coordinators read demographics but do not edit
# them; social workers do not see medicines; pharmacists do not see risk
# scores. The analyst / commissioner sees aggregate data only (the issue:
# "aggregate and pseudonymised data only"): counts, never a record. The
# administrator runs the system and the privacy officer the access log:
# neither reads patient data. Everyone signed in may read the directory
# (organisations, practitioners), which administrators maintain.
PERMS = {
    "gp":              dict(demographics="rwxc", clinical="rwdxc", medication="rwdc", coordination="rwdc", risk="rc", directory="r"),
    "practice-nurse":  dict(demographics="rwc",  clinical="rwc",   medication="rwc",  coordination="rwc",  risk="rc", directory="r"),
    "consultant":      dict(demographics="rwxc", clinical="rwdxc", medication="rwc",  coordination="rwc",  risk="rc", directory="r"),
    "ed-clinician":    dict(demographics="rwc",  clinical="rwc",   medication="rwc",  coordination="rwc",  risk="rc", directory="r"),
    "community-nurse": dict(demographics="rc",   clinical="rwc",   medication="rc",   coordination="rwc",  risk="rc", directory="r"),
    "social-worker":   dict(demographics="rwc",  clinical="rc",    medication="",     coordination="rwc",  risk="rc", directory="r"),
    "pharmacist":      dict(demographics="rc",   clinical="rc",    medication="rwc",  coordination="rc",   risk="",   directory="r"),
    "mental-health":   dict(demographics="rwc",  clinical="rwc",   medication="rwc",  coordination="rwc",  risk="rc", directory="r"),
    "mdg-coordinator": dict(demographics="rc",   clinical="rc",    medication="rc",   coordination="rwc",  risk="rc", directory="r"),
    "analyst":         dict(demographics="c",    clinical="c",     medication="c",    coordination="c",    risk="c",  directory="r"),
    "admin":           dict(demographics="",     clinical="",      medication="",     coordination="",     risk="",   directory="rwd"),
    "privacy-officer": dict(demographics="",     clinical="",      medication="",     coordination="",     risk="",   directory="r"),
    # a patient reads their own record (not the risk scores computed about
    # them) and writes only their own Goal, Communication and
    # QuestionnaireResponse ("what matters to me"), kept apart from clinical
    # entries; PATIENT_WRITES below
    "patient":         dict(demographics="r",    clinical="r",     medication="r",    coordination="r",    risk="",   directory="r"),
    # the population-scope integration account (docs/auth.md, tests/e2e/README.md:
    # reads every record, writes as its organisation)
    "system":          dict(demographics="rwdxc", clinical="rwdxc", medication="rwdc", coordination="rwdc", risk="rwc", directory="rwd"),
}
NO_PATIENT_DATA = {"analyst", "admin", "privacy-officer"}
PATIENT_WRITES = {"Goal", "Communication", "QuestionnaireResponse"}

# Sensitive categories and the roles that see them (besides the organisation
# that recorded the entry, which always does): data/access/sensitive-roles.tsv
# as documented there. A patient sees their own sexual and mental health
# entries, not safeguarding ones (information about risk from others is
# withheld from subject access).
SENSITIVE_SEEN_BY = {
    "sexual-health": {"gp", "consultant", "patient"},
    "mental-health": {"gp", "mental-health", "patient"},
    "safeguarding": {"gp", "social-worker", "community-nurse"},
}
# ICD-10 codes in each category (data/access/sensitive-codes.tsv: A50-A64,
# F20-F69, T74): gonococcal infection, depressive episode, maltreatment.
SENSITIVE_CODE = {"sexual-health": "A54.9", "mental-health": "F32.9", "safeguarding": "T74.1"}

# Relationships (the issue: registered at the user's practice, member of the
# care team, an open encounter at the user's organisation, member of the MDG
# discussing the patient; docs/access.md adds the managing organisation,
# active episodes of care, and care teams an organisation manages, and makes
# an organisation's relationships those of the organisations that are part of
# it: "mdg" is a patient registered at a practice that is part of the user's
# organisation). An encounter that has ended is no longer one. An objection
# to sharing (an active Consent that denies) leaves the registered practice
# seeing only what it recorded.
RELS = ["none", "registered", "managing", "careteam", "careteam-org", "encounter", "ended-encounter", "episode",
        "mdg", "objected"]
RELATED = {"registered", "managing", "careteam", "careteam-org", "encounter", "episode", "mdg", "objected"}
PATIENT_RELS = ["self", "other"]  # the patient role: their own record, someone else's


@dataclass(frozen=True)
class Kind:
    rtype: str
    area: str
    sens: str = None  # a sensitive category
    own: bool = False  # recorded by the user's own organisation


KINDS = {
    "demographics": Kind("Patient", "demographics"),
    "clinical": Kind("Observation", "clinical"),
    "medication": Kind("MedicationRequest", "medication"),
    "coordination": Kind("Goal", "coordination"),
    "risk": Kind("RiskAssessment", "risk"),
    "sexual-health": Kind("Condition", "clinical", sens="sexual-health"),
    "mental-health": Kind("Condition", "clinical", sens="mental-health"),
    "safeguarding": Kind("Condition", "clinical", sens="safeguarding"),
    "clinical-own": Kind("Observation", "clinical", own=True),
    "mental-health-own": Kind("Condition", "clinical", sens="mental-health", own=True),
}
ACTIONS = ["read", "search", "count", "history", "create", "update", "delete", "everything"]


def can(role, area, verb):
    return verb in PERMS[role][area]


def visibility(role, rel, kind):
    """'visible'; 'hidden' (sensitive: answered as if it did not exist); or
    'forbidden' (no relationship, an objection, someone else's record, or a
    role that sees no patient data)."""
    k = KINDS[kind]
    if role == "system":
        return "visible"
    if role in NO_PATIENT_DATA:
        return "forbidden"
    if role == "patient":
        if rel != "self":
            return "forbidden"
        return "hidden" if k.sens and "patient" not in SENSITIVE_SEEN_BY[k.sens] else "visible"
    if rel not in RELATED:
        return "forbidden"
    own = k.own and role in ORG_ROLES
    if k.sens and role not in SENSITIVE_SEEN_BY[k.sens] and not own:
        return "hidden"
    if rel == "objected" and not own:
        return "forbidden"
    return "visible"


def may_write_into(role, rel):
    """Whether the user may add to this patient's record: the same
    relationship as reading it; an objection does not stop the registered
    practice writing its own entries."""
    if role == "system":
        return True
    if role in NO_PATIENT_DATA:
        return False
    if role == "patient":
        return rel == "self"
    return rel in RELATED


def expected(role, rel, kind, action):
    """The expected answer of a cell:
      read, history:   the HTTP status
      search, count:   403, or the Bundle.total (1 when the record is seen)
      create, update, delete: the set of acceptable statuses
      everything:      403, or True/False (is the record in the Bundle?)"""
    k = KINDS[kind]
    v = visibility(role, rel, kind)
    deny = {"hidden": 404, "forbidden": 403}
    if action in ("read", "history"):
        if not can(role, k.area, "r"):
            return 403
        return 200 if v == "visible" else deny[v]
    if action == "search":
        if not can(role, k.area, "r"):
            return 403
        return 1 if v == "visible" else 0
    if action == "count":
        if can(role, k.area, "r"):
            return 1 if v == "visible" else 0
        if can(role, k.area, "c"):
            return 1  # a population count: aggregate, over everyone
        return 403
    if action == "create":
        if role == "patient":
            return {201} if k.rtype in PATIENT_WRITES and rel == "self" else {403}
        if not can(role, k.area, "w"):
            return {403}
        if k.rtype == "Patient":
            return {201}  # a new person: no record yet to have a relationship with
        return {201} if may_write_into(role, rel) else {403}
    if action in ("update", "delete"):
        verb, ok = ("w", 200) if action == "update" else ("d", 204)
        if role == "patient":
            # the copy updated is a clinician's entry: a patient's own notes
            # are kept distinct from clinical entries, so it is not theirs to change
            return {403, 404} if v == "hidden" else {403}
        if not can(role, k.area, verb):
            # refused for the role; a hidden record may be answered as absent
            return {403, 404} if v == "hidden" else {403}
        return {ok} if v == "visible" else {deny[v]}
    if action == "everything":
        if role == "patient":
            allowed = rel == "self"
        else:
            allowed = can(role, "demographics", "r") and can(role, "demographics", "x") \
                and visibility(role, rel, "demographics") == "visible"
        if not allowed:
            return 403
        if k.rtype == "Patient":
            return True
        return v == "visible" and can(role, k.area, "r")
    raise AssertionError(action)


CELLS = [(role, rel, kind, action) for role in ROLES for rel in RELS for kind in KINDS for action in ACTIONS]
CELLS += [("patient", rel, kind, action) for rel in PATIENT_RELS for kind in KINDS for action in ACTIONS]

# Cells where the implementation is known to differ from the rules, with the
# cause: {(role, rel, kind, action): reason}; strict, so that each flips to a
# failure (to be removed) when fixed. None at present: the two the matrix
# found (a patient's $everything held their risk scores; a patient could
# overwrite a clinician's Goal) are fixed.
KNOWN_BUGS = {}


def _cell_param(c):
    marks = []
    reason = KNOWN_BUGS.get(c)
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(*c, id="-".join(c), marks=marks)


# ---- the world ----------------------------------------------------------------

TAG_SYSTEM = "urn:e2e:mx"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
CONCORD_TAG = "https://concord.example/CodeSystem/tag"


def cli(server, *args, stdin=None):
    r = subprocess.run([server.binary, *args, "--db", server.db], input=stdin, capture_output=True, text=True,
                       timeout=CLI_TIMEOUT)
    assert r.returncode == 0, f"concord {' '.join(args)}: {r.returncode} {r.stderr.strip()}"
    return r.stdout.strip()


def add_user(server, name, role, org=None, practitioner=None, patient=None):
    args = ["user", "add", name, "--role", role, "--no-password"]
    if org:
        args += ["--org", org]
    if practitioner:
        args += ["--practitioner", practitioner]
    if patient:
        args += ["--patient", patient]
    cli(server, *args)
    return cli(server, "token", "create", "--user", name)


def tag(code):
    return {"system": TAG_SYSTEM, "code": code}


def make_record(kind, patient_id, code):
    """A resource of `kind` about the patient, tagged `code`."""
    k = KINDS[kind]
    subj = {"reference": f"Patient/{patient_id}"}
    meta = {"tag": [tag(code)]}
    if k.rtype == "Observation":
        return {"resourceType": "Observation", "meta": meta, "status": "final",
                "code": {"coding": [{"system": "urn:e2e:mx-code", "code": code}]}, "subject": subj}
    if k.rtype == "MedicationRequest":
        return {"resourceType": "MedicationRequest", "meta": meta, "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "amoxicillin 500 mg capsules"}, "subject": subj}
    if k.rtype == "Goal":
        return {"resourceType": "Goal", "meta": meta, "lifecycleStatus": "active",
                "description": {"text": "to walk to the shops again"}, "subject": subj}
    if k.rtype == "RiskAssessment":
        return {"resourceType": "RiskAssessment", "meta": meta, "status": "final", "subject": subj}
    if k.rtype == "Condition":
        return {"resourceType": "Condition", "meta": meta,
                "code": {"coding": [{"system": ICD10, "code": SENSITIVE_CODE[k.sens]}]}, "subject": subj}
    raise AssertionError(kind)


def make_patient(code, gp_org, managing=None):
    p = {"resourceType": "Patient", "meta": {"tag": [tag(code)]},
         "name": [{"family": "Mx" + uid()[:12], "given": ["Q" + uid()[:10]]}],
         "generalPractitioner": [{"reference": f"Organization/org-{gp_org}"}]}
    if managing:
        p["managingOrganization"] = {"reference": f"Organization/org-{managing}"}
    return p


def relationship_records(rel, patient_ref, org, practitioner):
    """The records that establish `rel` between the patient and the user."""
    if rel == "careteam":
        return [{"resourceType": "CareTeam", "status": "active", "subject": {"reference": patient_ref},
                 "participant": [{"member": {"reference": f"Practitioner/{practitioner}"}}]}]
    if rel == "careteam-org":
        return [{"resourceType": "CareTeam", "status": "active", "subject": {"reference": patient_ref},
                 "name": "case conference", "managingOrganization": [{"reference": f"Organization/org-{org}"}]}]
    if rel in ("encounter", "ended-encounter"):
        enc = {"resourceType": "Encounter", "status": "in-progress",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
               "subject": {"reference": patient_ref}, "serviceProvider": {"reference": f"Organization/org-{org}"},
               "period": {"start": "2024-01-01T10:00:00Z"}}
        if rel == "ended-encounter":
            enc["status"] = "finished"
            enc["period"]["end"] = "2024-01-01T11:00:00Z"
        return [enc]
    if rel == "episode":
        return [{"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": patient_ref},
                 "managingOrganization": {"reference": f"Organization/org-{org}"}}]
    if rel == "objected":
        return [objection(patient_ref, org)]
    return []


def objection(patient_ref, org, status="active", provision="deny"):
    """An objection to sharing the record (FHIR Consent, provision deny)."""
    return {"resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": patient_ref},
            "organization": [{"reference": f"Organization/org-{org}"}],
            "provision": {"type": provision}}


def transaction(client, resources):
    """POST a transaction of creates (urn:uuid fullUrls, references among
    them resolved); returns the ids in order."""
    entries = []
    for r in resources:
        full = r.pop("_fullUrl", None) or f"urn:uuid:{uid()}"
        entries.append({"fullUrl": full, "resource": r,
                        "request": {"method": "POST", "url": r["resourceType"]}})
    resp = client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert resp.status_code == 200, resp.text[:1000]
    out = resp.json()["entry"]
    return [e["response"]["location"].split("/")[1] for e in out]


@dataclass
class Target:
    kind: str
    rtype: str
    id: str
    code: str  # its tag
    body: dict  # as sent (for updates)


class World:
    def __init__(self, server):
        self.server = server
        self.sfx = uid()[:5]
        self.feed = Fhir(server.base, server.token)  # organisation E2E01: "another organisation"
        self.elsewhere = f"X{self.sfx.upper()}EL"  # a practice no user belongs to
        self.clients, self.orgs, self.practitioners, self.users = {}, {}, {}, {}
        self.own_feeds = {}
        self.cells = {}  # (role, rel) -> {"patient": id, "read"/"update"/"delete": {kind: Target}}
        self.everything_cache = {}
        self.refusals = {}  # user -> refusals made by the cells that ran

    def org_of(self, role):
        if role == "patient":
            return f"M{self.sfx.upper()}PT"  # nobody's: the patient's practice is not a user of the world
        return f"M{self.sfx.upper()}{ROLES.index(role):02d}"

    def build(self):
        for role in ROLES:
            org = self.org_of(role)
            self.orgs[role] = org if role in ORG_ROLES else None
            self.practitioners[role] = f"mx-pr-{role}-{self.sfx}"
            name = f"mx-{role}-{self.sfx}"
            self.users[role] = name
            self.clients[role] = Fhir(self.server.base,
                                      add_user(self.server, name, role, self.orgs[role], self.practitioners[role]))
            if self.orgs[role]:
                self.own_feeds[role] = Fhir(self.server.base,
                                            add_user(self.server, f"mx-feed-{role}-{self.sfx}", "system", org))
        # the MDG relationship: a practice that is part of the user's organisation
        self.feed_transaction([{"resourceType": "Organization", "id": "x", "name": f"Practice in MDG {role}",
                                "identifier": [{"system": ODS, "value": self.org_of(role) + "P"}],
                                "partOf": {"reference": f"Organization/org-{self.org_of(role)}"}}
                               for role in ROLES])
        for role in ROLES:
            for rel in RELS:
                self.cells[(role, rel)] = self.build_cell(role, rel)
        for rel in PATIENT_RELS:
            self.cells[("patient", rel)] = self.build_cell("patient", "registered")
        pid = self.cells[("patient", "self")]["patient"]
        name = f"mx-patient-{self.sfx}"
        self.users["patient"] = name
        self.orgs["patient"] = None
        self.clients["patient"] = Fhir(self.server.base, add_user(self.server, name, "patient", patient=pid))
        return self

    def feed_transaction(self, resources):
        for r in resources:
            r.pop("id", None)
        return transaction(self.feed, resources)

    def build_cell(self, role, rel):
        org = self.org_of(role)
        gp_org = {"registered": org, "objected": org, "mdg": org + "P"}.get(rel, self.elsewhere)
        prac = self.practitioners.get(role, "nobody")
        own_feed = self.own_feeds.get(role)
        # three patients with the relationship: one whose records are read,
        # and one each to update and to delete as the demographics kind
        feed_res, feed_keys, own_res, own_keys = [], [], [], []
        patients = {}
        for use in ("read", "update", "delete"):
            code = f"{self.sfx}-{role}-{rel}-demographics-{use}-{uid()[:6]}"
            p = make_patient(code, gp_org, managing=org if rel == "managing" else None)
            full = f"urn:uuid:{uid()}"
            patients[use] = (full, code, dict(p))
            p["_fullUrl"] = full
            feed_res.append(p)
            feed_keys.append(("patient", use))
            for extra in relationship_records(rel, full, org, prac):
                feed_res.append(extra)
                feed_keys.append(None)
        main_ref = patients["read"][0]
        for kind, k in KINDS.items():
            if k.rtype == "Patient":
                continue
            for use in ("read", "update", "delete"):
                code = f"{self.sfx}-{role}-{rel}-{kind}-{use}-{uid()[:6]}"
                rec = make_record(kind, "PLACEHOLDER", code)
                if k.own and own_feed:
                    own_res.append((rec, code))
                    own_keys.append((kind, use))
                else:
                    rec["subject"] = {"reference": main_ref}
                    feed_res.append(rec)
                    feed_keys.append((kind, use, code))
        bodies = [json.loads(json.dumps({k: v for k, v in r.items() if k != "_fullUrl"})) for r in feed_res]
        ids = transaction(self.feed, feed_res)
        cell = {"read": {}, "update": {}, "delete": {}}
        pid_of = {}
        for key, rid, body in zip(feed_keys, ids, bodies):
            if key is None:
                continue
            if key[0] == "patient":
                use = key[1]
                pid_of[patients[use][0]] = rid
                cell[use]["demographics"] = Target("demographics", "Patient", rid, patients[use][1], body)
        cell["patient"] = pid_of[main_ref]
        for key, rid, body in zip(feed_keys, ids, bodies):
            if key is None or key[0] == "patient":
                continue
            kind, use, code = key
            body["subject"] = {"reference": f"Patient/{cell['patient']}"}
            cell[use][kind] = Target(kind, KINDS[kind].rtype, rid, code, body)
        if own_res:
            recs = []
            for rec, _ in own_res:
                rec["subject"] = {"reference": f"Patient/{cell['patient']}"}
                recs.append(rec)
            bodies = [json.loads(json.dumps(r)) for r in recs]
            ids = transaction(own_feed, recs)
            for (kind, use), (rec, code), rid, body in zip(own_keys, own_res, ids, bodies):
                cell[use][kind] = Target(kind, KINDS[kind].rtype, rid, code, body)
        return cell

    def everything(self, role, rel):
        key = (role, rel)
        if key not in self.everything_cache:
            r = self.clients[role].get(f"Patient/{self.cells[key]['patient']}/$everything")
            self.everything_cache[key] = r
        return self.everything_cache[key]

    def close(self):
        for c in list(self.clients.values()) + list(self.own_feeds.values()) + [self.feed]:
            c.close()


@pytest.fixture(scope="module")
def world(server):
    w = World(server).build()
    yield w
    w.close()


@pytest.fixture
def attach(server, request):
    request.node._concord_servers = [server]


# ---- the cells ------------------------------------------------------------------


def _ods_tags(res):
    return [t.get("code") for t in res.get("meta", {}).get("tag", []) if t.get("system") == ODS]


def _is_patient_authored(res):
    return any(t.get("system") == CONCORD_TAG and t.get("code") == "patient-authored"
               for t in res.get("meta", {}).get("tag", []))


def _assert_stamped(world, role, res):
    """A write is stamped as its writer: the organisation it acts for (and no
    other), or patient-authored."""
    if role == "patient":
        assert _is_patient_authored(res) and not _ods_tags(res), res.get("meta")
    else:
        assert _ods_tags(res) == ([world.orgs[role]] if world.orgs[role] else []), res.get("meta")


def _no_record_in(body, rid):
    assert rid not in body, f"the hidden record {rid} appears in the answer: {body[:500]}"


@pytest.mark.parametrize("role,rel,kind,action", [_cell_param(c) for c in CELLS])
def test_cell(world, attach, role, rel, kind, action):
    exp = expected(role, rel, kind, action)
    client = world.clients[role]
    cell = world.cells[(role, rel)]
    k = KINDS[kind]
    t = cell["read"][kind]
    refused = False

    if action in ("read", "history"):
        path = f"{k.rtype}/{t.id}" + ("/_history" if action == "history" else "")
        r = client.get(path)
        assert r.status_code == exp, f"GET {path}: expected {exp}, got {r.status_code} {r.text[:300]}"
        if exp != 200:
            refused = True
            _no_record_in(r.text, t.code)
            assert r.json()["resourceType"] == "OperationOutcome"
            if exp == 404:
                # as for a record that does not exist
                ghost = client.get(f"{k.rtype}/{uid()}" + ("/_history" if action == "history" else ""))
                assert ghost.status_code == 404
        elif action == "read":
            assert r.json()["id"] == t.id

    elif action == "search":
        r = client.get(k.rtype, params={"_id": t.id, "_total": "accurate"})
        if exp == 403:
            assert r.status_code == 403, r.text[:300]
            refused = True
            _no_record_in(r.text, t.code)
        else:
            assert r.status_code == 200, r.text[:300]
            b = r.json()
            ids = [e["resource"]["id"] for e in b.get("entry", []) if e.get("search", {}).get("mode") == "match"]
            assert b.get("total") == exp and len(ids) == exp, f"total {b.get('total')}, ids {ids}"
            if exp == 0:
                _no_record_in(r.text, t.code)

    elif action == "count":
        r = client.get(k.rtype, params={"_tag": f"{TAG_SYSTEM}|{t.code}", "_summary": "count"})
        if exp == 403:
            assert r.status_code == 403, r.text[:300]
            refused = True
        else:
            assert r.status_code == 200, r.text[:300]
            b = r.json()
            assert b.get("total") == exp and not b.get("entry"), b

    elif action == "create":
        code = f"{t.code}-new-{uid()[:6]}"
        body = (make_patient(code, world.elsewhere) if k.rtype == "Patient"
                else make_record(kind, cell["patient"], code))
        r = client.post(k.rtype, body)
        assert r.status_code in exp, f"POST {k.rtype}: expected {exp}, got {r.status_code} {r.text[:300]}"
        stored = world.feed.get(k.rtype, params={"_tag": f"{TAG_SYSTEM}|{code}", "_summary": "count"}).json()
        if r.status_code == 201:
            _assert_stamped(world, role, r.json())
            assert stored["total"] == 1
        else:
            refused = True
            assert stored["total"] == 0, "a refused create stored something"

    elif action in ("update", "delete"):
        u = cell[action][kind]
        if action == "update":
            r = client.put(f"{k.rtype}/{u.id}", {**u.body, "id": u.id})
        else:
            r = client.delete(f"{k.rtype}/{u.id}")
        assert r.status_code in exp, f"{action} {k.rtype}/{u.id}: expected {exp}, got {r.status_code} {r.text[:300]}"
        after = world.feed.get(f"{k.rtype}/{u.id}")
        if r.status_code == 200:
            _assert_stamped(world, role, r.json())
            assert after.status_code == 200 and after.json()["meta"]["versionId"] == "2"
        elif r.status_code == 204:
            assert after.status_code == 410
        else:
            refused = True
            _no_record_in(r.text, u.code)
            assert after.status_code == 200 and after.json()["meta"]["versionId"] == "1", \
                f"a refused {action} changed the record: {after.status_code} {after.text[:200]}"

    elif action == "everything":
        first = (role, rel) not in world.everything_cache
        r = world.everything(role, rel)
        if exp == 403:
            assert r.status_code == 403, r.text[:300]
            refused = first  # one request, one refusal, whichever cell made it
            _no_record_in(r.text, t.code)
        else:
            assert r.status_code == 200, r.text[:300]
            got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json().get("entry", [])}
            assert ((k.rtype, t.id) in got) == exp, \
                f"{k.rtype}/{t.id} {'missing from' if exp else 'included in'} $everything"
            b = r.json()
            assert b.get("total", len(got)) == len(b.get("entry", [])), "Bundle.total counts what is not shown"
    if refused:
        user = world.users[role]
        world.refusals[user] = world.refusals.get(user, 0) + 1


DIRECTORY_ACTIONS = ["read", "search", "create", "update", "delete"]


@pytest.mark.parametrize("role,action", [pytest.param(r, a, id=f"{r}-directory-{a}")
                                         for r in ROLES + ["patient"] for a in DIRECTORY_ACTIONS])
def test_directory_cell(world, attach, role, action):
    """Organisations and practitioners: no patient's data, readable by every
    user; written by administrators and integrations."""
    client = world.clients[role]
    verb = {"read": "r", "search": "r", "create": "w", "update": "w", "delete": "d"}[action]
    allowed = can(role, "directory", verb)
    code = f"{world.sfx}-{role}-dir-{action}-{uid()[:6]}"
    body = {"resourceType": "Practitioner", "meta": {"tag": [tag(code)]}, "name": [{"family": "Dir" + uid()[:8]}]}
    pid = world.feed.create(body)["id"]
    if action == "read":
        r = client.get(f"Practitioner/{pid}")
        ok = 200
    elif action == "search":
        r = client.get("Practitioner", params={"_tag": f"{TAG_SYSTEM}|{code}"})
        ok = 200
        if r.status_code == 200:
            assert [e["resource"]["id"] for e in r.json().get("entry", [])] == [pid]
    elif action == "create":
        r = client.post("Practitioner", {**body, "meta": {"tag": [tag(code + "-new")]}})
        ok = 201
    elif action == "update":
        r = client.put(f"Practitioner/{pid}", {**body, "id": pid})
        ok = 200
    else:
        r = client.delete(f"Practitioner/{pid}")
        ok = 204
    assert r.status_code == (ok if allowed else 403), f"{action}: {r.status_code} {r.text[:300]}"
    if not allowed:
        user = world.users[role]
        world.refusals[user] = world.refusals.get(user, 0) + 1


def test_every_refusal_is_in_the_access_log(world, attach, server):
    """Every refusal the cells above met is in the access log, with outcome 4
    (refused) and the user who was refused."""
    if not world.refusals:
        pytest.skip("no refusing cell ran before this test (select test_cell too)")
    officer = Fhir(server.base, add_user(server, f"mx-po-log-{world.sfx}", "privacy-officer"))
    short = {}
    for user, n in world.refusals.items():
        r = officer.get("$access-log", params={"user": user, "outcome": "4", "_count": 1})
        assert r.status_code == 200, r.text[:300]
        total = r.json()["total"]
        if total < n:
            short[user] = (n, total)
    assert not short, f"refusals missing from the access log (made, logged): {short}"


def test_analyst_counts_only_populations(world, attach):
    """Aggregate only: the analyst counts, but never with a parameter that
    names a person, and never reads a record."""
    analyst = world.clients["analyst"]
    cell = world.cells[("analyst", "registered")]
    pid = cell["patient"]
    obs = cell["read"]["clinical"]
    for params in ({"_id": obs.id}, {"patient": pid}, {"subject": f"Patient/{pid}"},
                   {"patient.name": "x"}, {"identifier": "x|y"}):
        r = analyst.get("Observation", params={**params, "_summary": "count"})
        assert r.status_code == 403, (params, r.status_code, r.text[:200])
    for params in ({"name": "Mx"}, {"birthdate": "1950"}, {"_id": pid}):
        r = analyst.get("Patient", params={**params, "_summary": "count"})
        assert r.status_code == 403, (params, r.status_code, r.text[:200])
    r = analyst.get("Observation", params={"code": f"urn:e2e:mx-code|{obs.code}", "_summary": "count"})
    assert r.status_code == 200 and r.json()["total"] == 1
    assert analyst.get(f"Observation/{obs.id}").status_code == 403
    assert analyst.get("Observation", params={"code": f"urn:e2e:mx-code|{obs.code}"}).status_code == 403
    assert analyst.post(f"Patient/{pid}/$break-glass", {"reason": "I would like to see it please"}).status_code == 403


def test_patient_writes_only_their_own_notes(world, attach):
    """A patient records Goals, Communications and QuestionnaireResponses about
    themselves, marked as theirs; nothing else, and nothing about others."""
    me = world.clients["patient"]
    pid = world.cells[("patient", "self")]["patient"]
    other = world.cells[("patient", "other")]["patient"]
    mine = [
        {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "to garden"},
         "subject": {"reference": f"Patient/{pid}"}},
        {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{pid}"},
         "sender": {"reference": f"Patient/{pid}"}, "payload": [{"contentString": "my knee is better"}]},
        {"resourceType": "QuestionnaireResponse", "status": "completed",
         "subject": {"reference": f"Patient/{pid}"}, "source": {"reference": f"Patient/{pid}"}},
    ]
    for res in mine:
        r = me.post(res["resourceType"], res)
        assert r.status_code == 201, r.text[:300]
        assert _is_patient_authored(r.json()) and not _ods_tags(r.json())
        # and may change it again
        body = r.json()
        r2 = me.put(f"{res['resourceType']}/{body['id']}", body)
        assert r2.status_code == 200, r2.text[:300]
        assert _is_patient_authored(r2.json())
        theirs = json.loads(json.dumps(res).replace(pid, other))
        r = me.post(res["resourceType"], theirs)
        assert r.status_code == 403, r.text[:300]
    # a patient's note cannot pretend to be a clinician's
    forged = dict(mine[0], meta={"tag": [{"system": ODS, "code": world.orgs["gp"]}]})
    r = me.post("Goal", forged)
    assert r.status_code == 201 and _is_patient_authored(r.json()) and not _ods_tags(r.json())
    for rtype, res in (("Observation", make_record("clinical", pid, "pt-" + uid()[:8])),
                       ("Condition", make_record("mental-health", pid, "pt-" + uid()[:8])),
                       ("Patient", make_patient("pt-" + uid()[:8], world.elsewhere))):
        assert me.post(rtype, res).status_code == 403


def test_searches_do_not_reveal_hidden_records_through_includes_or_chains(world, attach):
    """A visible resource's _revinclude, _include and chained parameters
    never bring in, or count, what the user may not see."""
    ed = world.clients["ed-clinician"]
    cell = world.cells[("ed-clinician", "encounter")]
    pid = cell["patient"]
    hidden = [cell["read"][k].id for k in ("sexual-health", "mental-health", "safeguarding")]
    r = ed.get("Patient", params={"_id": pid, "_revinclude": "Condition:subject", "_total": "accurate"})
    assert r.status_code == 200, r.text[:300]
    got = [e["resource"]["id"] for e in r.json().get("entry", [])]
    assert pid in got and not set(hidden) & set(got), got
    # the patient's Conditions: those recorded by the user's own organisation
    # only, and a total that counts no more than are shown
    hidden_all = [cell[use][k].id for use in ("read", "update", "delete")
                  for k in ("sexual-health", "mental-health", "safeguarding")]
    r = ed.get("Condition", params={"patient": pid, "_total": "accurate", "_count": 500})
    assert r.status_code == 200, r.text[:300]
    got = [e["resource"]["id"] for e in r.json().get("entry", [])]
    assert not set(hidden_all) & set(got) and r.json()["total"] == len(got), r.text[:300]
    assert cell["read"]["mental-health-own"].id in got
    for cat, code in SENSITIVE_CODE.items():
        # by code: only the user's organisation's own entries (made by the
        # cells above), counted as shown
        params = {"code": f"{ICD10}|{code}", "patient": pid}
        r = ed.get("Condition", params={**params, "_count": 500})
        shown = [e["resource"]["id"] for e in r.json().get("entry", [])]
        assert r.status_code == 200 and not set(hidden_all) & set(shown), (cat, r.text[:300])
        r = ed.get("Condition", params={**params, "_summary": "count"})
        assert r.status_code == 200 and r.json()["total"] == len(shown), (cat, r.text[:300])
    # a chain through the patient finds nothing hidden either
    name = world.feed.read("Patient", pid)["name"][0]["family"]
    r = ed.get("Condition", params={"patient.family": name, "_total": "accurate", "_count": 500})
    assert r.status_code == 200, r.text[:300]
    got = [e["resource"]["id"] for e in r.json().get("entry", [])]
    assert not set(hidden_all) & set(got) and r.json()["total"] == len(got), r.text[:300]
    # _include from a hidden record's neighbour: the patient's Observation
    # (visible) includes its subject, the Condition is not dragged in
    r = ed.get("Observation", params={"_id": cell["read"]["clinical"].id, "_include": "Observation:subject"})
    assert r.status_code == 200
    got = [e["resource"]["id"] for e in r.json().get("entry", [])]
    assert not set(hidden) & set(got)
    # a patient the user has no relationship with: not even the total
    other = world.cells[("ed-clinician", "none")]
    r = ed.get("Observation", params={"patient": other["patient"], "_total": "accurate"})
    assert r.status_code == 200 and r.json()["total"] == 0 and not r.json().get("entry")
    r = ed.get("Patient", params={"_id": other["patient"], "_revinclude": "Observation:subject",
                                        "_total": "accurate"})
    assert r.status_code == 200 and r.json()["total"] == 0 and not r.json().get("entry")


def test_history_does_not_reveal_an_earlier_sensitive_version(world, attach):
    """A record that was sensitive and is no longer (a diagnosis corrected)
    keeps its sensitive version in its history: the history and a vread of
    that version are answered as for any hidden record, without it."""
    ed = world.clients["ed-clinician"]
    pid = world.cells[("ed-clinician", "encounter")]["patient"]
    cond = world.feed.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
                              "code": {"coding": [{"system": ICD10, "code": "F20.0"}]}})
    corrected = dict(cond, code={"coding": [{"system": ICD10, "code": "J18.9"}]})
    assert world.feed.put(f"Condition/{cond['id']}", corrected).status_code == 200
    assert ed.get(f"Condition/{cond['id']}").status_code == 200  # the current version is not sensitive
    r = ed.get(f"Condition/{cond['id']}/_history")
    assert r.status_code in (200, 404) and "F20" not in r.text, r.text[:400]
    r = ed.get(f"Condition/{cond['id']}/_history/1")
    assert r.status_code == 404 and "F20" not in r.text, (r.status_code, r.text[:300])
