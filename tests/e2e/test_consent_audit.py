"""Consent, break-glass over an objection, and the access log's tamper
evidence (issue 6), end to end. What tests/e2e/test_access.py already
covers (break-glass opening a record with a reason, the X-Concord-Access
flag, the privacy officer's review, ETREAT in the log, `concord audit
verify` passing) is not repeated here.

Consent: a person's objection to sharing is an active Consent whose
provision denies; it is given, withdrawn (status inactive, or deleted) and
honoured — other organisations see nothing of the record, in reads,
searches, counts and $everything, while the organisation that recorded an
entry still sees it; break-glass opens it in an emergency, flagged.
"""
import json
import sqlite3
import subprocess
import time

import pytest

from concordlib import Fhir, uid

CLI_TIMEOUT = 120
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def cli(server, *args, check=True):
    r = subprocess.run([server.binary, *args, "--db", server.db], capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"concord {' '.join(args)}: {r.returncode} {r.stderr.strip()}"
    return r


def user(server, role, org=None):
    name = f"ca-{role}-{uid()[:8]}"
    args = ["user", "add", name, "--role", role, "--no-password"]
    if org:
        args += ["--org", org]
    cli(server, *args)
    return name, Fhir(server.base, cli(server, "token", "create", "--user", name).stdout.strip())


def objection(pid, org, status="active", provision="deny"):
    return {"resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"},
            "organization": [{"reference": f"Organization/org-{org}"}],
            "provision": {"type": provision}}


def _nhs_number():
    """A random NHS number that passes the modulus 11 check."""
    import random
    while True:
        d = [random.randint(0, 9) for _ in range(9)]
        c = 11 - sum(x * (10 - i) for i, x in enumerate(d)) % 11
        c = 0 if c == 11 else c
        if c != 10:
            return "".join(map(str, d)) + str(c)


class Scene:
    """A patient registered at a practice (GP), in hospital (an open encounter
    with the hospital: ED clinician, consultant), with an Observation the
    hospital's feed recorded and one the practice recorded."""

    def __init__(self, server):
        self.server = server
        self.feed = Fhir(server.base, server.token)
        self.practice, self.hospital = "CP" + uid()[:5].upper(), "CH" + uid()[:5].upper()
        self.gp_name, self.gp = user(server, "gp", self.practice)
        self.ed_name, self.ed = user(server, "ed-clinician", self.hospital)
        self.cons_name, self.cons = user(server, "consultant", self.hospital)
        _, self.hospital_feed = user(server, "system", self.hospital)
        self.pid = self.feed.create({"resourceType": "Patient", "name": [{"family": "Cons" + uid()[:10]}],
                                     "generalPractitioner": [{"reference": f"Organization/org-{self.practice}"}]})["id"]
        self.hospital_feed.create({"resourceType": "Encounter", "status": "in-progress",
                                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                             "code": "IMP"},
                                   "subject": {"reference": f"Patient/{self.pid}"},
                                   "serviceProvider": {"reference": f"Organization/org-{self.hospital}"}})
        self.code = "cons-" + uid()[:10]
        self.hosp_obs = self.hospital_feed.create(self.obs("hospital"))["id"]
        self.gp_obs = self.gp.create(self.obs("practice"))["id"]

    def obs(self, who):
        return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{self.pid}"},
                "code": {"coding": [{"system": "urn:e2e:consent", "code": f"{self.code}-{who}"}]}}

    def seen(self, client):
        """What `client` can see of the patient: read statuses of the Patient
        and both Observations, the search result and its total, the count,
        and the $everything status."""
        r = client.get("Observation", params={"patient": self.pid, "_total": "accurate"})
        assert r.status_code == 200, r.text[:300]
        found = sorted(e["resource"]["id"] for e in r.json().get("entry", []))
        assert r.json()["total"] == len(found)
        count = client.get("Observation", params={"patient": self.pid, "_summary": "count"}).json()["total"]
        return {"patient": client.get(f"Patient/{self.pid}").status_code,
                "hospital_obs": client.get(f"Observation/{self.hosp_obs}").status_code,
                "gp_obs": client.get(f"Observation/{self.gp_obs}").status_code,
                "found": found, "count": count}


@pytest.fixture
def scene(server, request):
    request.node._concord_servers = [server]
    return Scene(server)


def test_objection_given_withdrawn_and_honoured(scene):
    s = scene
    both = sorted([s.hosp_obs, s.gp_obs])
    everyone = {"patient": 200, "hospital_obs": 200, "gp_obs": 200, "found": both, "count": 2}
    assert s.seen(s.ed) == everyone and s.seen(s.gp) == everyone
    assert s.cons.get(f"Patient/{s.pid}/$everything").status_code == 200

    # given: the patient tells their practice they object to sharing
    r = s.gp.post("Consent", objection(s.pid, s.practice))
    assert r.status_code == 201, r.text[:300]
    consent = r.json()
    # honoured: the hospital sees only what it recorded itself
    ed = s.seen(s.ed)
    assert ed == {"patient": 403, "hospital_obs": 200, "gp_obs": 403, "found": [s.hosp_obs], "count": 1}, ed
    r = s.ed.get(f"Observation/{s.gp_obs}")
    assert "break-glass" in r.text and s.code + "-practice" not in r.text
    r = s.cons.get(f"Patient/{s.pid}/$everything")
    assert r.status_code == 403 and s.gp_obs not in r.text
    r = s.ed.get("Patient", params={"_id": s.pid, "_revinclude": "Observation:subject", "_total": "accurate"})
    got = [e["resource"]["id"] for e in r.json().get("entry", [])]
    assert s.gp_obs not in got and s.pid not in got, got
    # and the practice sees only what it recorded (the Patient came from a feed)
    gp = s.seen(s.gp)
    assert gp == {"patient": 403, "hospital_obs": 403, "gp_obs": 200, "found": [s.gp_obs], "count": 1}, gp

    # withdrawn: the Consent is made inactive; everything is shared again
    consent["status"] = "inactive"
    r = s.gp.put(f"Consent/{consent['id']}", consent)
    assert r.status_code == 200, r.text[:300]
    assert s.seen(s.ed) == everyone and s.seen(s.gp) == everyone
    assert s.cons.get(f"Patient/{s.pid}/$everything").status_code == 200

    # given again, then withdrawn by deleting the Consent
    consent["status"] = "active"
    assert s.gp.put(f"Consent/{consent['id']}", consent).status_code == 200
    assert s.seen(s.ed)["found"] == [s.hosp_obs]
    assert s.gp.delete(f"Consent/{consent['id']}").status_code == 204
    assert s.seen(s.ed) == everyone

    # a Consent that permits is not an objection
    assert s.gp.post("Consent", objection(s.pid, s.practice, provision="permit")).status_code == 201
    assert s.seen(s.ed) == everyone


def test_objection_is_logged(scene, server):
    s = scene
    r = s.gp.post("Consent", objection(s.pid, s.practice))
    cid = r.json()["id"]
    withdrawn = dict(r.json(), status="inactive")
    assert s.gp.put(f"Consent/{cid}", withdrawn).status_code == 200
    _, po = user(server, "privacy-officer")
    r = po.get("$access-log", params={"patient": s.pid, "user": s.gp_name, "_count": 100})
    events = [e["resource"] for e in r.json().get("entry", [])]
    consent_events = [e for e in events if any(en.get("what", {}).get("reference") == f"Consent/{cid}"
                                               for en in e.get("entity", []))]
    actions = sorted(e["action"] for e in consent_events)
    assert actions == ["C", "U"], [json.dumps(e)[:300] for e in events]


def test_objection_covers_every_record_of_the_person(scene, server):
    """The registry links a person's records across settings; an objection on
    one of them is honoured on all (the hospital's own copy included, for
    what it did not record itself)."""
    s = scene
    nhs = _nhs_number()
    demo = {"identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
            "name": [{"family": "Linked" + uid()[:8], "given": ["Bea"]}], "birthDate": "1940-02-03",
            "gender": "female"}
    gp_copy = s.feed.create({"resourceType": "Patient", **demo,
                             "generalPractitioner": [{"reference": f"Organization/org-{s.practice}"}]})["id"]
    hosp_copy = s.hospital_feed.create({"resourceType": "Patient", **demo})["id"]
    s.hospital_feed.create({"resourceType": "Encounter", "status": "in-progress",
                            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                            "subject": {"reference": f"Patient/{hosp_copy}"},
                            "serviceProvider": {"reference": f"Organization/org-{s.hospital}"}})
    gp_note = s.gp.create({"resourceType": "Observation", "status": "final", "code": {"text": "gp note"},
                           "subject": {"reference": f"Patient/{gp_copy}"}})["id"]
    deadline = time.monotonic() + 5
    while s.ed.get(f"Observation/{gp_note}").status_code != 200:
        assert time.monotonic() < deadline, "the registry did not link the two records of one person"
        time.sleep(0.1)
    assert s.gp.post("Consent", objection(gp_copy, s.practice)).status_code == 201
    assert s.ed.get(f"Observation/{gp_note}").status_code == 403
    r = s.ed.get("Observation", params={"patient": gp_copy, "_total": "accurate"})
    assert r.json()["total"] == 0


def test_break_glass_over_an_objection_is_flagged_and_time_limited(scene, server):
    s = scene
    assert s.gp.post("Consent", objection(s.pid, s.practice)).status_code == 201
    assert s.ed.get(f"Observation/{s.gp_obs}").status_code == 403
    r = s.ed.post(f"Patient/{s.pid}/$break-glass",
                  {"reason": "anaphylaxis in resus, need allergy history", "minutes": 30})
    assert r.status_code == 200, r.text
    params = {p["name"]: p for p in r.json()["parameter"]}
    assert "valueInstant" in params["expires"] and r.headers.get("X-Concord-Access", "").startswith(
        "break-glass; until=")
    grant = params["grant"]["valueInteger"]
    r = s.ed.get(f"Observation/{s.gp_obs}")
    assert r.status_code == 200
    r = s.ed.get("Observation", params={"patient": s.pid, "_total": "accurate"})
    assert r.json()["total"] == 2
    # a grant is the user's alone
    _, other_ed = user(server, "ed-clinician", s.hospital + "X")
    assert other_ed.get(f"Observation/{s.gp_obs}").status_code == 403
    # a glass the role cannot break: no treating role, no patient's data
    for role in ("analyst", "admin", "privacy-officer"):
        _, c = user(server, role)
        assert c.post(f"Patient/{s.pid}/$break-glass", {"reason": "curious about this one"}).status_code == 403
    # flagged for review, with its reason; the reads under it are logged ETREAT
    _, po = user(server, "privacy-officer")
    grants = po.get("$break-glass", params={"reviewed": "false"}).json()
    mine = [g for g in grants if g["id"] == grant]
    assert mine and mine[0]["user"] == s.ed_name and "anaphylaxis" in mine[0]["reason"]
    assert 29 * 60 <= (mine[0]["expires_usec"] - mine[0]["granted_usec"]) / 1e6 <= 30 * 60
    # the grant is in the access log: who, which patient, why, ETREAT
    time.sleep(0.1)
    r = po.get("$access-log", params={"user": s.ed_name, "action": "break-glass", "_count": 100})
    evs = [e["resource"] for e in r.json().get("entry", [])]
    glass = [e for e in evs if any(en.get("what", {}).get("reference") == f"Patient/{s.pid}"
                                   for en in e.get("entity", []))]
    assert glass, [json.dumps(e)[:300] for e in evs]
    purposes = {c["code"] for p in glass[0].get("purposeOfEvent", []) for c in p.get("coding", [])}
    assert purposes == {"ETREAT"} and glass[0]["outcome"] == "0"
    assert "anaphylaxis" in json.dumps(glass[0])


def test_patient_sees_break_glass_on_their_record(scene, server):
    s = scene
    name = "ca-pt-" + uid()[:8]
    cli(server, "user", "add", name, "--role", "patient", "--patient", s.pid, "--no-password")
    me = Fhir(server.base, cli(server, "token", "create", "--user", name).stdout.strip())
    _, stranger = user(server, "ed-clinician", "CS" + uid()[:5].upper())
    assert stranger.post(f"Patient/{s.pid}/$break-glass",
                         {"reason": "collapsed in the street, no history"}).status_code == 200
    time.sleep(0.1)
    r = me.get("$access-log", params={"_count": 200})
    assert r.status_code == 200
    evs = [e["resource"] for e in r.json().get("entry", [])]
    assert any(any(c.get("code") == "break-glass" for c in e.get("subtype", [])) for e in evs), \
        [e.get("subtype") for e in evs]


# ---- the access log's tamper evidence -------------------------------------------------


def _sql(server, statements):
    """Run SQL on the access log's tables as someone with write access to the
    database (not through concord): sqlite3 on the log's own file (the
    database file's name + ".audit", docs/audit.md), psql on PostgreSQL."""
    if server.backend == "sqlite":
        con = sqlite3.connect(server.db + ".audit", timeout=30)
        try:
            for st in statements:
                con.execute(st)
            con.commit()
        finally:
            con.close()
    else:
        for st in statements:
            r = subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", server.db, "-c", st],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr


def _verify(server, *extra):
    return cli(server, "audit", "verify", *extra, check=False)


def _head(r):
    """The SEQ:HASH `concord audit verify` prints as the chain's head."""
    for line in r.stdout.splitlines():
        if line.startswith("head:"):
            return line.split()[-1]
    raise AssertionError(f"no head in {r.stdout!r} (exit {r.returncode}; stderr {r.stderr[-2000:]!r})")


@pytest.mark.slow
def test_audit_chain_detects_an_altered_row(server_factory, request):
    s = server_factory.start()
    request.node._concord_servers = [s]
    feed = Fhir(s.base, s.token)
    pid = feed.create({"resourceType": "Patient", "name": [{"family": "Audit" + uid()[:8]}]})["id"]
    for _ in range(5):
        assert feed.get(f"Patient/{pid}").status_code == 200
    assert Fhir(s.base, "cct_" + "B" * 43).get(f"Patient/{pid}").status_code == 401
    time.sleep(0.2)
    r = _verify(s)
    assert r.returncode == 0, r.stdout + r.stderr
    head = _head(r)
    seq = int(head.split(":")[0])
    assert seq >= 7, r.stdout
    # someone with write access to the database rewrites which record was
    # read (the events are stored in blocks, each the netstrings of its
    # fields: docs/audit.md; the patient's id is "<length>:<id>,")
    field = f"{len(pid)}:{pid},"
    _sql(s, [f"UPDATE audit_block SET events = replace(events, '{field}', '{len(pid)}:{'x' * len(pid)},')"
             f" WHERE seq = (SELECT min(seq) FROM audit_block WHERE events LIKE '%{field}%')"])
    r = _verify(s)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "has been altered" in (r.stdout + r.stderr), r.stdout + r.stderr


@pytest.mark.slow
def test_audit_chain_detects_a_deleted_row_and_a_cut_end(server_factory, request):
    s = server_factory.start()
    request.node._concord_servers = [s]
    feed = Fhir(s.base, s.token)
    pid = feed.create({"resourceType": "Patient", "name": [{"family": "Audit" + uid()[:8]}]})["id"]
    for _ in range(6):
        feed.get(f"Patient/{pid}")
    assert s.stop() == 0  # the writer is not running: nothing re-anchors the chain
    r = _verify(s)
    assert r.returncode == 0, r.stdout + r.stderr
    head = _head(r)
    seq = int(head.split(":")[0])
    # a witness of the head, kept elsewhere, still matches
    assert _verify(s, "--expect", head).returncode == 0
    # a block of events removed from the middle
    _sql(s, [f"DELETE FROM audit_block WHERE seq = (SELECT max(seq) FROM audit_block WHERE last < {seq})"])
    r = _verify(s)
    assert r.returncode == 1 and " missing (deleted)" in r.stdout + r.stderr, r.stdout + r.stderr
    # ... or the last rows, with the anchor rewritten to match: the witness tells
    s2 = server_factory.start()
    feed2 = Fhir(s2.base, s2.token)
    for _ in range(4):
        feed2.get("metadata")
        feed2.get(f"Patient/{uid()[:8]}")
    assert s2.stop() == 0
    r = _verify(s2)
    head = _head(r)
    seq = int(head.split(":")[0])
    _sql(s2, ["DELETE FROM audit_block WHERE seq = (SELECT max(seq) FROM audit_block)"])
    r = _verify(s2)
    assert r.returncode == 1 and "removed from the end" in r.stdout + r.stderr, r.stdout + r.stderr
    q = "SELECT last || ':' || hash FROM audit_block ORDER BY seq DESC LIMIT 1"
    if s2.backend == "sqlite":
        con = sqlite3.connect(s2.db + ".audit")
        new_end = con.execute(q).fetchone()[0]
        con.close()
    else:
        out = subprocess.run(["/usr/bin/psql", "-X", "-At", s2.db, "-c", q],
                             capture_output=True, text=True, timeout=60)
        new_end = out.stdout.strip()
    end_seq, end_hash = new_end.split(":")
    _sql(s2, [f"UPDATE audit_anchor SET seq = {end_seq}, hash = '{end_hash}' WHERE id = 1"])
    assert _verify(s2).returncode == 0  # undetectable from the database alone (docs/audit.md)
    r = _verify(s2, "--expect", head)
    assert r.returncode == 1, r.stdout + r.stderr


def test_read_under_break_glass_over_an_objection_is_flagged(scene, server):
    s = scene
    assert s.gp.post("Consent", objection(s.pid, s.practice)).status_code == 201
    assert s.ed.post(f"Patient/{s.pid}/$break-glass",
                     {"reason": "anaphylaxis in resus, need allergy history"}).status_code == 200
    r = s.ed.get(f"Observation/{s.gp_obs}")
    assert r.status_code == 200 and r.headers.get("X-Concord-Access") == "break-glass", dict(r.headers)
    _, po = user(server, "privacy-officer")
    time.sleep(0.1)
    r = po.get("$access-log", params={"user": s.ed_name, "action": "read", "_count": 10})
    reads = [e["resource"] for e in r.json()["entry"]
             if any(en.get("what", {}).get("reference") == f"Observation/{s.gp_obs}" for en in e["resource"]["entity"])]
    assert reads and all(c["code"] == "ETREAT" for e in reads for p in e["purposeOfEvent"] for c in p["coding"])
