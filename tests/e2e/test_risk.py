"""Risk stratification end to end (issue 7, docs/risk.md), on both backends.

A small synthetic population is loaded with `concord demo --no-serve` (the
facts hook keeps every person's risk facts as the resources are stored; the
demo trains a model and scores everyone itself), the emergency-admission
model is trained again and validated with `concord risk train`, everyone is
rescored with `concord risk run`, and then a real server is driven
over HTTP: worklists, one person's result, the RiskAssessment resources, new
data arriving through the FHIR API and the person being rescored (and only
when the data matters), tier-change events.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from concordlib import Fhir, outcome, provision, uid

PEOPLE = 400
AS_OF = "2026-01-01"


def run(concord_bin, *args, timeout=600):
    r = subprocess.run([concord_bin, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"concord {' '.join(args)} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


@pytest.fixture
def stratified(server_factory, concord_bin, tmp_path):
    """A database with a synthetic population, a trained model and a full
    run; a server on it; the training report's directory."""
    db = server_factory.new_db()
    run(concord_bin, "demo", "--patients", str(PEOPLE), "--no-serve", "--db", db)
    report = tmp_path / "model"
    run(concord_bin, "risk", "train", "--db", db, "--out", str(report))
    demo_model = json.loads(run(concord_bin, "risk", "show", "--db", db, "p0000001"))["model"]
    out = json.loads(run(concord_bin, "risk", "run", "--db", db, "--as-of", AS_OF, "--json"))
    out["demo_model"] = demo_model
    server = server_factory.start(db=db)
    fhir = Fhir(server.base, server.token)
    yield {"db": db, "server": server, "fhir": fhir, "report": report, "run": out}
    fhir.close()


def wait_for(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def admission(pid, start, end):
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "type": [{"coding": [{"system": "https://www.datadictionary.nhs.uk/data_elements/admission_method",
                              "code": "21"}]}],
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, "end": end},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J18.9"}]}],
    }


@pytest.mark.slow
def test_train_run_worklists_and_rescoring(stratified, concord_bin):
    fhir, report, stats = stratified["fhir"], stratified["report"], stratified["run"]

    # training wrote the versioned model and its validation report
    model = json.loads((report / "model.json").read_text())
    assert model["model"] == "concord-emergency-admission"
    assert model["version"].startswith("fs1-")
    v = model["validation"]
    assert 0 <= v["auroc"] <= 1 and v["people"] > 0 and "calibration_slope" in v and len(v["deciles"]) == 10
    assert (report / "calibration.svg").read_text().startswith("<svg")
    assert "AUROC" in (report / "report.txt").read_text()

    # the run scored most people and said why it did not score the rest
    assert stats["people"] >= PEOPLE - 5
    assert stats["scored"] + stats["insufficient"] + stats["not_registered"] + stats["deceased"] == stats["people"]
    assert stats["scored"] > PEOPLE * 0.8
    # a new model changes every result: everyone's RiskAssessment gets a new version
    assert stats["demo_model"] != model["version"]
    assert stats["resources_written"] == stats["scored"] + stats["insufficient"]

    # a practice's worklist: ranked, explained
    r = fhir.get("$risk-worklist", params={"practice": "Z90001", "_count": "500"})
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["as_of"] == AS_OF and w["model"] == model["version"]
    rows = w["rows"]
    assert rows and w["total"] == len(rows)
    probs = [row["probability"] for row in rows]
    assert probs == sorted(probs, reverse=True)
    assert all(row["practice"] == "Z90001" for row in rows)
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    top = rows[0]
    assert top["tier"] in ("very-high", "high", "moderate", "low")
    assert top["factors"] and top["explanation"] == "; ".join(f["label"] for f in top["factors"])
    contributions = [f["contribution"] for f in top["factors"]]
    assert contributions == sorted(contributions, reverse=True) and contributions[0] > 0

    # cohorts and filters
    old = fhir.get("$risk-worklist", params={"cohort": "75plus", "_count": "1000"}).json()
    assert old["rows"] and all(row["age"] >= 75 for row in old["rows"])
    dm = fhir.get("$risk-worklist", params={"cohort": "diabetes", "no-care-plan": "true"}).json()
    assert all(row["diabetes"] and not row["care_plan"] for row in dm["rows"])
    mdg = fhir.get("$risk-worklist", params={"mdg": top["mdg"], "_count": "1000"}).json()
    assert top["patient"] in [row["patient"] for row in mdg["rows"]]
    # a worklist needs a filter; a bad cohort is refused with an OperationOutcome
    outcome(fhir.get("$risk-worklist"), (400,))
    outcome(fhir.get("$risk-worklist", params={"cohort": "over90"}), (400,))
    outcome(fhir.get("$risk-worklist", params={"practice": "Z90001", "_count": "x"}), (400,))

    # the same list from the command line
    cli = run(concord_bin, "risk", "worklist", "--db", stratified["db"], "--practice", "Z90001", "--json")
    assert [row["patient"] for row in json.loads(cli)["rows"]] == [row["patient"] for row in rows[:50]]

    # one person at the bottom of the practice's list
    low = rows[-1]
    pid = low["patient"]
    me = fhir.get(f"Patient/{pid}/$risk").json()
    assert me["status"] == "scored" and abs(me["probability"] - low["probability"]) < 1e-9
    ra = fhir.read("RiskAssessment", f"ra-{pid}")
    assert ra["subject"]["reference"] == f"Patient/{pid}"
    version = ra["meta"]["versionId"]
    assert ra["method"]["coding"][0]["version"] == model["version"]
    assert abs(ra["prediction"][0]["probabilityDecimal"] - me["probability"]) < 1e-4
    assert ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == me["tier"]
    assert ra["occurrenceDateTime"] == AS_OF
    found = fhir.search("RiskAssessment", {"subject": f"Patient/{pid}"})
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [f"ra-{pid}"]

    # data that does not matter to risk: no rescoring, no new version
    r = fhir.post("Observation", {"resourceType": "Observation", "status": "final",
                                  "code": {"text": "pulse"}, "subject": {"reference": f"Patient/{pid}"},
                                  "valueQuantity": {"value": 72, "unit": "/min"}})
    assert r.status_code == 201, r.text
    assert wait_for(lambda: fhir.get("$risk-status").json().get("waiting") == 0)
    assert fhir.read("RiskAssessment", f"ra-{pid}")["meta"]["versionId"] == version

    # three emergency admissions in the last months: rescored within seconds
    for start, end in (("2025-09-01", "2025-09-04"), ("2025-11-02", "2025-11-03"), ("2025-12-10", "2025-12-15")):
        r = fhir.post("Encounter", admission(pid, start, end))
        assert r.status_code == 201, r.text
    label = "3 emergency admissions in the last 12 months"
    after = wait_for(lambda: (lambda x: x if label in [f["label"] for f in x.get("factors", [])] else None)(
        fhir.get(f"Patient/{pid}/$risk").json()))
    assert after, f"not rescored: {fhir.get(f'Patient/{pid}/$risk').text}"
    assert after["probability"] > me["probability"]
    assert "emergency_admissions_12m" in [f["code"] for f in after["factors"]]
    ra2 = fhir.read("RiskAssessment", f"ra-{pid}")
    assert int(ra2["meta"]["versionId"]) > int(version) and abs(ra2["prediction"][0]["probabilityDecimal"] - after["probability"]) < 1e-4
    assert len(ra2["basis"]) >= 3 and all(b["reference"].startswith("Encounter/") for b in ra2["basis"])

    # moving up the pyramid is an event other parts can act on
    if after["tier"] != me["tier"]:
        ev = fhir.get("$risk-events").json()["events"]
        mine = [e for e in ev if e["patient"] == pid]
        assert mine and mine[-1]["from"] == me["tier"] and mine[-1]["to"] == after["tier"]

    # status: model, last run, nothing waiting
    st = fhir.get("$risk-status").json()
    assert st["model"] == model["version"] and st["last_run"]["as_of"] == AS_OF and st["waiting"] == 0

    # rescoring on demand; an unknown patient is a 404 OperationOutcome
    r = fhir.post(f"Patient/{pid}/$risk-rescore")
    assert r.status_code == 200 and r.json()["probability"] == after["probability"]
    outcome(fhir.get(f"Patient/{uid()}/$risk"), (404,))


def test_index_calculators_cli(concord_bin):
    # Gilbert et al. 2018: F00 7.1 + W19 3.2 = 10.3
    assert run(concord_bin, "risk", "hfrs", "F00", "W19").strip() == "10.3"
    assert run(concord_bin, "risk", "hfrs", "F00.1", "F00.9").strip() == "7.1"
    assert run(concord_bin, "risk", "charlson", "I21.9", "I50.0").strip() == "2 (1987 weights), 2 (2011 weights)"
    r = subprocess.run([concord_bin, "risk", "worklist"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_worklists_are_scoped_and_every_listed_person_is_in_their_access_log(stratified, concord_bin):
    """A GP's worklist holds only people they have a relationship with,
    whatever the filter; each person listed gets an access-log entry."""
    server, fhir = stratified["server"], stratified["fhir"]
    practice = fhir.get("$risk-worklist", params={"practice": "Z90001", "_count": "1000"}).json()
    assert practice["rows"], practice
    mdg = practice["rows"][0]["mdg"]
    everyone = fhir.get("$risk-worklist", params={"mdg": mdg, "_count": "1000"}).json()
    gp_user = "gp-" + uid()[:8]
    gp = Fhir(server.base, provision(concord_bin, stratified["db"], user=gp_user, role="gp", org="Z90001"))
    mine = gp.get("$risk-worklist", params={"mdg": mdg, "_count": "1000"}).json()
    ids = [row["patient"] for row in mine["rows"]]
    assert ids and mine["total"] == len(ids), mine
    assert {row["practice"] for row in mine["rows"]} == {"Z90001"}
    assert len(everyone["rows"]) > len(ids), "the MDG covers other practices, which the GP does not see"
    # A row's factors may reveal mental health (data/access/sensitive-roles.tsv):
    # a practice nurse of the same practice sees the same people and scores,
    # but not those factors. The demo's model rarely ranks them first, so one
    # row's stored explanation is set to what a model weighing them would write.
    pid = ids[0]
    factors = [{"code": "depression", "label": "depression", "contribution": 0.9},
               {"code": "mental_health_contact_12m",
                "label": "in contact with mental health services in the last 12 months", "contribution": 0.5},
               {"code": "copd", "label": "COPD", "contribution": 0.3}]
    sql = "UPDATE risk_score SET factors = '%s' WHERE patient_id = '%s'" % (json.dumps(factors), pid)
    if server.backend == "sqlite":
        import sqlite3
        con = sqlite3.connect(server.db, timeout=30)
        con.execute(sql)
        con.commit()
        con.close()
    else:
        subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", server.db, "-c", sql],
                       check=True, capture_output=True, timeout=60)

    def row_of(client):
        rows = client.get("$risk-worklist", params={"mdg": mdg, "_count": "1000"}).json()["rows"]
        return {r["patient"]: r for r in rows}

    nurse = Fhir(server.base, provision(concord_bin, stratified["db"], user="pn-" + uid()[:8],
                                        role="practice-nurse", org="Z90001"))
    as_gp, as_nurse = row_of(gp)[pid], row_of(nurse)
    assert set(as_nurse) == set(ids)
    assert [f["code"] for f in as_gp["factors"]] == ["depression", "mental_health_contact_12m", "copd"]
    assert "depression" in as_gp["explanation"]
    assert [f["code"] for f in as_nurse[pid]["factors"]] == ["copd"], as_nurse[pid]
    assert as_nurse[pid]["explanation"] == "COPD"
    assert as_nurse[pid]["probability"] == as_gp["probability"]
    one = nurse.get(f"Patient/{pid}/$risk")
    assert one.status_code == 200, one.text
    assert [f["code"] for f in one.json()["factors"]] == ["copd"]
    assert [f["code"] for f in gp.get(f"Patient/{pid}/$risk").json()["factors"]][0] == "depression"
    officer = Fhir(server.base, provision(concord_bin, stratified["db"], user="po-" + uid()[:8],
                                          role="privacy-officer", org="E2E01"))
    for pid in ids[:3]:
        log = officer.get("$access-log", params={"patient": pid, "_count": "500"}).json()
        seen = [json.dumps(e["resource"]) for e in log.get("entry", [])]
        assert any(gp_user in x and "risk-worklist" in x for x in seen), (pid, seen[:3])
