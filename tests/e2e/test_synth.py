"""The synthetic population from the outside: `concord synth` writes the feeds
and the ground truth; `concord demo` generates, loads and serves the
integrated record, and the URLs its banner prints answer.

SQLite only: the generator is the subject here, not the store backends.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from concordlib import ConcordServer, bearer, free_port, provision


def run(concord_bin, *args, timeout=300):
    return subprocess.run([concord_bin, *args], capture_output=True, text=True, timeout=timeout)


def test_synth_writes_every_feed_and_the_ground_truth(concord_bin, tmp_path):
    out = tmp_path / "feeds"
    r = run(concord_bin, "synth", "--patients", "500", "--seed", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "500 people" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["patients"] == 500
    assert manifest["counts"]["people"] == 500
    for f in manifest["files"]:
        assert (out / f).is_file(), f
    assert len(list((out / "gp").glob("*.ndjson"))) == 93
    assert len(list((out / "acute").glob("*.hl7"))) == 4
    assert len(list((out / "community").glob("*.csv"))) == 3
    assert len(list((out / "social_care").glob("*.csv"))) == 5
    assert (out / "mental_health" / "ZM1.csv").is_file()
    # the ground truth: one row per person; every error row names a known person
    people = (out / "ground_truth" / "people.csv").read_text().splitlines()
    assert len(people) == 501
    ids = {line.split(",")[0] for line in people[1:]}
    errors = (out / "ground_truth" / "errors.csv").read_text().splitlines()[1:]
    assert len(errors) == manifest["counts"]["planted_errors"]
    assert all(e.split(",")[2] in ids for e in errors)
    # MLLP framing of the hospital streams
    data = (out / "acute" / "ZA1.hl7").read_bytes()
    assert data.startswith(b"\x0bMSH|^~\\&|") and data.endswith(b"\x1c\x0d")


def test_synth_same_seed_same_bytes(concord_bin, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(concord_bin, "synth", "--patients", "300", "--out", str(a), "--threads", "1", "--quiet").returncode == 0
    assert run(concord_bin, "synth", "--patients", "300", "--out", str(b), "--threads", "2", "--quiet").returncode == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


@pytest.mark.parametrize("args", [["--patients", "0", "--out", "x"], ["--out"], ["--bogus", "1", "--out", "x"], []])
def test_synth_usage_errors(concord_bin, args):
    r = run(concord_bin, "synth", *args)
    assert r.returncode == 2
    assert "concord: synth:" in r.stderr


def test_demo_loads_the_integrated_record(concord_bin, tmp_path):
    db = str(tmp_path / "demo.db")
    r = run(concord_bin, "demo", "--patients", "150", "--db", db, "--no-serve")
    assert r.returncode == 0, r.stderr
    assert "loaded 150 people" in r.stderr
    # a second run sees the data and does not load again
    r2 = run(concord_bin, "demo", "--patients", "150", "--db", db, "--no-serve")
    assert r2.returncode == 0 and "already holds data" in r2.stdout
    srv = ConcordServer(concord_bin, db, tmp_path)
    srv.start()
    try:
        base, auth = srv.base, srv.auth_headers
        p = requests.get(f"{base}/Patient/p0000001", headers=auth, timeout=10)
        assert p.status_code == 200
        patient = p.json()
        assert patient["identifier"][0] == {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}
        found = requests.get(f"{base}/Patient", params={"identifier": "https://fhir.nhs.uk/Id/nhs-number|9990000018"},
                             headers=auth, timeout=10).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == ["p0000001"]
        # across the population: every care setting is present, tagged
        settings = set()
        for rtype in ["Encounter", "EpisodeOfCare"]:
            bundle = requests.get(f"{base}/{rtype}", params={"_count": "500"}, headers=auth, timeout=30).json()
            for e in bundle.get("entry", []):
                for tag in e["resource"]["meta"]["tag"]:
                    if tag["system"] == "https://concord.example/CodeSystem/care-setting":
                        settings.add(tag["code"])
        assert {"primary-care", "acute"} <= settings
        admissions = requests.get(f"{base}/Encounter", params={"class": "IMP", "_count": "5"}, headers=auth,
                                  timeout=10).json()
        assert admissions.get("entry"), "no inpatient admissions in 150 people over 5 years"
        org = requests.get(f"{base}/Organization/org-Z90001", headers=auth, timeout=10)
        assert org.status_code == 200
    finally:
        srv.stop()


def test_demo_serves_and_its_banner_urls_answer(concord_bin, tmp_path):
    db = str(tmp_path / "demo.db")
    port = free_port()
    proc = subprocess.Popen([concord_bin, "demo", "--patients", "60", "--db", db, "--http", f"127.0.0.1:{port}",
                             "--mllp", f"127.0.0.1:{free_port()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = ""
        deadline = time.monotonic() + 120
        while "Stop with Ctrl-C" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner += line
        assert "Stop with Ctrl-C" in banner, banner
        urls = [u.rstrip("'") for u in re.findall(r"(http://\S+)", banner)]
        assert any("p0000001" in u for u in urls)
        # the demo's users: one per role, a password and the GP's API token printed, kept in a private file
        for role in ("gp", "practice-nurse", "consultant", "ed-clinician", "community-nurse", "social-worker",
                     "pharmacist", "mental-health", "mdg-coordinator", "analyst", "admin", "privacy-officer",
                     "patient"):
            assert re.search(rf"^  \S+\s+{role}\b", banner, re.M), (role, banner)
        password = re.search(r"Password for each: (\S+)", banner).group(1)
        token = re.search(r"Bearer (cct_\S+?)'", banner).group(1)
        creds = tmp_path / "demo.db.demo-users"
        assert oct(creds.stat().st_mode & 0o777) == "0o600"
        assert password in creds.read_text() and token in creds.read_text()
        gp = bearer(token)
        patient = requests.Session()
        r = patient.post(f"http://127.0.0.1:{port}/auth/login", json={"user": "p0000001", "password": password},
                         timeout=30)
        assert r.status_code == 200, r.text
        for u in urls:
            if u.endswith("/fhir"):
                continue  # the API base: a prefix, not a resource
            if "$access-log" in u:
                r = patient.get(u, timeout=10)  # the patient reads who has looked at their record
            else:
                r = requests.get(u, headers=gp if "/fhir/" in u else {}, timeout=10)
            assert r.status_code == 200, (u, r.status_code, r.text[:300])
        # a user without a relationship is refused p0000001's record
        consultant = requests.Session()
        assert consultant.post(f"http://127.0.0.1:{port}/auth/login",
                               json={"user": "consultant.za1", "password": password}, timeout=30).status_code == 200
        r = consultant.get(f"http://127.0.0.1:{port}/fhir/Patient/p0000001/$everything", timeout=10)
        assert r.status_code == 403, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
