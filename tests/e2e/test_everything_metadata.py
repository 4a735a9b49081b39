"""Patient/$everything, the CapabilityStatement at /fhir/metadata (and that
what it claims is true), and the landing page at /."""

import re
import subprocess

import pytest
import requests

from concordlib import Fhir, assert_fhir_json, outcome, refs, uid

SYS = "urn:concord-e2e:everything"

REQUIRED_TYPES = [
    "Patient", "Organization", "Practitioner", "PractitionerRole", "Location", "Encounter", "EpisodeOfCare",
    "Condition", "Observation", "Procedure", "MedicationStatement", "MedicationRequest", "AllergyIntolerance",
    "ServiceRequest", "DocumentReference", "CarePlan", "CareTeam", "Goal", "Task", "Flag", "RiskAssessment",
    "Communication", "Consent", "AuditEvent", "Provenance", "Group", "Appointment", "Subscription",
]
INTERACTIONS = {"read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"}


# ---- $everything ---------------------------------------------------------------------


def _patient_record(fhir, family):
    p = fhir.create({"resourceType": "Patient", "identifier": [{"system": SYS, "value": uid()}],
                     "name": [{"family": family}]})
    ref = {"reference": f"Patient/{p['id']}"}
    enc = fhir.create({"resourceType": "Encounter", "status": "finished", "subject": ref,
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}})
    obs = fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
                       "subject": ref, "encounter": {"reference": f"Encounter/{enc['id']}"}})
    cond = fhir.create({"resourceType": "Condition", "subject": ref, "code": {"text": "type 1 diabetes"}})
    plan = fhir.create({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": ref})
    allergy = fhir.create({"resourceType": "AllergyIntolerance", "patient": ref})
    return p, [enc, obs, cond, plan, allergy]


def test_everything_returns_patient_and_compartment_only(fhir):
    a, a_res = _patient_record(fhir, "Everything-A")
    b, b_res = _patient_record(fhir, "Everything-B")
    r = fhir.get(f"Patient/{a['id']}/$everything")
    assert r.status_code == 200, r.text
    assert_fhir_json(r)
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    got = refs(bundle)
    assert len(got) == len(set(got)), f"duplicates in $everything: {got}"
    want = {f"Patient/{a['id']}"} | {f"{x['resourceType']}/{x['id']}" for x in a_res}
    assert want <= set(got), f"missing from $everything: {want - set(got)}"
    other = {f"Patient/{b['id']}"} | {f"{x['resourceType']}/{x['id']}" for x in b_res}
    assert not (other & set(got)), f"another patient's data in $everything: {other & set(got)}"
    for e in bundle["entry"]:
        assert e["fullUrl"] == f"{fhir.base}/{e['resource']['resourceType']}/{e['resource']['id']}"


def test_everything_unknown_patient_is_404(fhir):
    outcome(fhir.get(f"Patient/{uid()}/$everything"), 404)


def test_everything_deleted_patient_is_gone(fhir):
    p = fhir.create({"resourceType": "Patient"})
    assert fhir.delete(f"Patient/{p['id']}").status_code in (200, 204)
    r = fhir.get(f"Patient/{p['id']}/$everything")
    outcome(r, (404, 410))


# ---- CapabilityStatement -----------------------------------------------------------------


@pytest.fixture(scope="module")
def capability(server):
    r = requests.get(f"{server.base}/metadata", headers={"Accept": "application/fhir+json"}, timeout=30)
    assert r.status_code == 200
    assert_fhir_json(r)
    return r.json()


def _resource(cs, type_):
    for r in cs["rest"][0]["resource"]:
        if r["type"] == type_:
            return r
    raise AssertionError(f"{type_} not in the CapabilityStatement")


def test_capability_statement_basics(capability, server):
    cs = capability
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["status"] == "active"
    assert cs["kind"] == "instance"
    assert cs["software"]["name"] == "concord"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", cs["software"]["version"]), cs["software"]["version"]
    assert cs["implementation"]["url"] == server.base
    assert any("json" in f for f in cs["format"])
    rest = cs["rest"][0]
    assert rest["mode"] == "server"
    system = {i["code"] for i in rest.get("interaction", [])}
    assert {"transaction", "batch", "history-system"} <= system


def test_capability_lists_required_types_with_interactions(capability):
    for t in REQUIRED_TYPES:
        r = _resource(capability, t)
        codes = {i["code"] for i in r["interaction"]}
        assert INTERACTIONS <= codes, f"{t}: missing interactions {INTERACTIONS - codes}"
        names = {p["name"] for p in r.get("searchParam", [])}
        assert {"_id", "_lastUpdated"} <= names, f"{t}: {sorted(names)[:10]}..."


def test_capability_patient_details(capability):
    p = _resource(capability, "Patient")
    names = {sp["name"]: sp["type"] for sp in p["searchParam"]}
    for n, t in [("_id", "token"), ("identifier", "token"), ("name", "string"), ("family", "string"),
                 ("birthdate", "date"), ("gender", "token"), ("organization", "reference")]:
        assert names.get(n) == t, f"Patient search param {n}: {names.get(n)}"
    assert p.get("updateCreate") is True
    assert p.get("conditionalCreate") is True
    assert any(op["name"] == "everything" for op in p.get("operation", []))
    o = {sp["name"]: sp["type"] for sp in _resource(capability, "Observation")["searchParam"]}
    for n, t in [("code", "token"), ("date", "date"), ("patient", "reference"), ("subject", "reference"),
                 ("value-quantity", "quantity")]:
        assert o.get(n) == t, f"Observation search param {n}: {o.get(n)}"


SAMPLE_VALUE = {
    "token": "x",
    "string": "x",
    "date": "ge2013-01-01",
    "reference": "Patient/x",
    "number": "1",
    "quantity": "1",
    "uri": "http://example.org/x",
}


def _search_param_failures(fhir, capability, type_):
    failures = []
    for name, t in dict.fromkeys((sp["name"], sp["type"]) for sp in _resource(capability, type_)["searchParam"]):
        for params in ({name: SAMPLE_VALUE.get(t, "x"), "_count": "1"}, {f"{name}:missing": "true", "_count": "1"}):
            r = fhir.get(type_, params=params)
            if r.status_code != 200:
                failures.append(f"{type_}?{'&'.join(f'{k}={v}' for k, v in params.items())} -> {r.status_code} "
                                f"{r.text[:200]}")
    return failures


@pytest.mark.parametrize("type_", ["Patient", "Observation"])
def test_capability_search_params_work(fhir, capability, type_):
    """It tells the truth: every search parameter listed for the type is
    accepted, with a value and with :missing (search.html: :missing is
    available for all parameter types)."""
    failures = _search_param_failures(fhir, capability, type_)
    assert not failures, "\n".join(failures)


def test_capability_search_params_work_for_every_type(fhir, capability):
    failures = []
    for r in capability["rest"][0]["resource"]:
        if r["type"] not in ("Patient", "Observation"):
            failures += _search_param_failures(fhir, capability, r["type"])
    assert not failures, f"{len(failures)} failures, e.g.:\n" + "\n".join(failures[:10])


def test_capability_search_params_listed_once(capability):
    dups = {}
    for r in capability["rest"][0]["resource"]:
        names = [p["name"] for p in r.get("searchParam", [])]
        d = sorted({n for n in names if names.count(n) > 1})
        if d:
            dups[r["type"]] = d
    assert not dups, f"search parameters listed more than once in {len(dups)} types, e.g. {list(dups.items())[:3]}"


@pytest.mark.parametrize("type_", ["Patient", "Observation", "Encounter"])
def test_capability_search_includes_work(fhir, capability, type_):
    failures = []
    for inc in _resource(capability, type_).get("searchInclude", []):
        r = fhir.get(type_, params={"_include": inc, "_count": "1"})
        if r.status_code != 200:
            failures.append(f"{type_}?_include={inc} -> {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)


def test_capability_sample_of_types_can_be_read_and_searched(fhir, capability):
    types = [r["type"] for r in capability["rest"][0]["resource"]]
    assert len(types) >= len(REQUIRED_TYPES)
    for t in types:
        r = fhir.get(t, params={"_count": "1"})
        assert r.status_code == 200, f"{t}: {r.status_code} {r.text[:200]}"


def test_metadata_head_or_accept_json(server):
    r = requests.get(f"{server.base}/metadata", headers={"Accept": "application/json"}, timeout=30)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"


# ---- landing page --------------------------------------------------------------------------


def test_landing_page(server_factory, capability):
    """Signed out: what concord is and a sign-in form, no figures. Signed in
    (a session from /auth/login): who you are and the per-type counts."""
    s = server_factory.start()
    fhir = Fhir(s.base, s.token)
    try:
        for i in range(3):
            fhir.create({"resourceType": "Patient", "name": [{"family": f"Landing{i}"}]})
        for i in range(2):
            fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
        r = requests.get(f"{s.root}/", timeout=30)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/html")
        html = r.text
        assert "concord" in html.lower()
        assert capability["software"]["version"] in html
        assert 'href="/fhir/metadata"' not in html  # links come with signing in
        assert 'id="signin"' in html and 'type="password"' in html
        assert "Landing" not in html and "Observation" not in html, "signed out, the page shows no data"
        password = "landing-" + uid()
        add = subprocess.run([s.binary, "user", "add", "landing-admin", "--role", "admin", "--password-stdin",
                              "--db", s.db], input=password + "\n", capture_output=True, text=True, timeout=120)
        assert add.returncode == 0, add.stderr
        web = requests.Session()
        r = web.post(f"{s.root}/auth/login", json={"user": "landing-admin", "password": password}, timeout=30)
        assert r.status_code == 200, r.text
        html = web.get(f"{s.root}/", timeout=30).text
        assert 'href="/fhir/metadata"' in html
        text = re.sub(r"<[^>]+>", " ", html)
        text = re.sub(r"\s+", " ", text)
        assert "Signed in as landing-admin (Administrator)" in text, text
        assert re.search(r"Patient\s*3\b", text), f"no 'Patient 3' count in: {text}"
        assert re.search(r"Observation\s*2\b", text), f"no 'Observation 2' count in: {text}"
    finally:
        fhir.close()
