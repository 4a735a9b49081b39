"""File imports, end to end: `concord import` and the $import API.

What a data manager loading a GP extract relies on: good lines stored, bad
lines quarantined with file and line and the reason, every stored resource
saying where it came from (meta.source, care setting and organisation
tags, searchable), an interrupted import resumed without a record stored
twice, a file already imported not imported again by mistake, Bundles
imported with their internal references intact, and the same over HTTP
for systems that cannot run the command.
"""

import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest
import requests

from concordlib import Fhir, bearer, provision

SETTING = "https://concord.example/CodeSystem/care-setting"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"


def uid():
    return uuid.uuid4().hex[:12]


def run(concord_bin, *args, timeout=300):
    return subprocess.run([concord_bin, *args], capture_output=True, text=True, timeout=timeout)


def sql(db, query):
    """One row of a query on the server's database (SQLite file or PostgreSQL URL), as strings."""
    if db.startswith("postgres"):
        r = subprocess.run(["/usr/bin/psql", "-X", "-A", "-t", "-F", "|", db, "-c", query],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split("|")
    import sqlite3
    with sqlite3.connect(db) as c:
        return [str(v) for v in c.execute(query).fetchone()]


def patient(pid, family="Import", **extra):
    r = {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": ["Ann"]}],
         "gender": "female", "birthDate": "1950-02-03"}
    r.update(extra)
    return r


def write_ndjson(path, resources, extra_lines=()):
    with open(path, "w") as f:
        for r in resources:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return str(path)


# ---- the command ---------------------------------------------------------


def test_ndjson_good_lines_stored_bad_lines_quarantined_with_file_and_line(server, fhir, concord_bin, tmp_path):
    tag = uid()
    good = [patient(f"imp-{tag}-{i}", family=f"Fam{tag}") for i in range(25)]
    path = write_ndjson(tmp_path / "gp.ndjson", good[:10], [
        '{"resourceType":"Patient","id":"bad-date-%s","birthDate":"1950-13-45"}' % tag,
        "this is not json",
        "",
    ])
    with open(path, "a") as f:  # more good lines after the bad ones
        for r in good[10:]:
            f.write(json.dumps(r) + "\n")
    r = run(concord_bin, "import", "--db", server.db, "--org", "Z90001", "--setting", "primary-care", path)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)  # finished, with quarantined records
    assert f"{path}:11:" in r.stderr and "birthDate" in r.stderr, r.stderr
    assert f"{path}:12:" in r.stderr and "not JSON" in r.stderr, r.stderr
    assert "25 stored, 2 quarantined" in r.stdout, r.stdout
    b = fhir.search("Patient", {"family": f"Fam{tag}", "_summary": "count"})
    assert b["total"] == 25
    p = fhir.read("Patient", f"imp-{tag}-3")
    assert p["meta"]["source"].startswith("urn:concord:import:") and p["meta"]["source"].endswith("#4")
    tags = {(t["system"], t["code"]) for t in p["meta"]["tag"]}
    assert (SETTING, "primary-care") in tags and (ODS, "Z90001") in tags
    # provenance is searchable
    b = fhir.search("Patient", {"family": f"Fam{tag}", "_tag": f"{SETTING}|primary-care", "_summary": "count"})
    assert b["total"] == 25
    b = fhir.search("Patient", {"_source": p["meta"]["source"]})
    assert [e["resource"]["id"] for e in b.get("entry", [])] == [f"imp-{tag}-3"]
    # the quarantine names the file and line and keeps the bytes
    q = run(concord_bin, "quarantine", "list", "--db", server.db, "--limit", "1000")
    assert f"{path}:11" in q.stdout and f"{path}:12" in q.stdout, q.stdout


def test_a_file_imported_completely_is_skipped_unless_forced(server, fhir, concord_bin, tmp_path):
    tag = uid()
    path = write_ndjson(tmp_path / "once.ndjson", [patient(f"once-{tag}-{i}", family=f"Once{tag}") for i in range(5)])
    first = run(concord_bin, "import", "--db", server.db, path)
    assert first.returncode == 0, first.stderr
    again = run(concord_bin, "import", "--db", server.db, path)
    assert again.returncode == 0 and "skipped: already imported by job" in again.stdout, again.stdout
    third = run(concord_bin, "import", "--db", server.db, path)  # still skipped after a skip
    assert third.returncode == 0 and "skipped: already imported by job" in third.stdout, third.stdout
    assert fhir.read("Patient", f"once-{tag}-0")["meta"]["versionId"] == "1"
    forced = run(concord_bin, "import", "--db", server.db, "--force", path)
    assert forced.returncode == 0 and "5 stored" in forced.stdout, forced.stdout
    # forced: the same resources updated (new versions), not duplicated
    assert fhir.search("Patient", {"family": f"Once{tag}", "_summary": "count"})["total"] == 5
    assert fhir.read("Patient", f"once-{tag}-0")["meta"]["versionId"] == "2"


def test_resources_without_ids_get_stable_ids_so_a_forced_reimport_does_not_duplicate(server, fhir, concord_bin,
                                                                                     tmp_path):
    tag = uid()
    rs = [{"resourceType": "Patient", "name": [{"family": f"NoId{tag}"}]} for _ in range(4)]
    path = write_ndjson(tmp_path / "noid.ndjson", rs)
    assert run(concord_bin, "import", "--db", server.db, path).returncode == 0
    assert run(concord_bin, "import", "--db", server.db, "--force", path).returncode == 0
    assert fhir.search("Patient", {"family": f"NoId{tag}", "_summary": "count"})["total"] == 4


def test_interrupted_import_resumes_without_storing_anything_twice(server_factory, concord_bin, tmp_path):
    s = server_factory.start()
    s.stop()
    tag = uid()
    n = 60000 if server_factory.backend == "sqlite" else 20000
    path = tmp_path / "big.ndjson"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps(patient(f"big-{tag}-{i}", family=f"Big{tag}")) + "\n")
    killed = 0
    done_before = 0
    for attempt in range(3):
        p = subprocess.Popen([concord_bin, "import", "--db", s.db, "--quiet", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "CONCORD_IMPORT_BATCH": "2000"})
        # kill -9 once some more of the file is committed (a checkpoint moved)
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            row = sql(s.db, "SELECT coalesce(max(lines_done), 0) FROM import_file")
            if int(row[0]) > done_before:
                done_before = int(row[0])
                break
            time.sleep(0.05)
        time.sleep(0.05 * attempt)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.communicate(timeout=60)
    r = run(concord_bin, "import", "--db", s.db, str(path))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert killed >= 1, "the import finished before it could be interrupted: make the file bigger"
    assert "resumed after line" in r.stdout, r.stdout
    s.start()
    fhir = Fhir(s.base, s.token)
    try:
        assert fhir.search("Patient", {"family": f"Big{tag}", "_summary": "count"})["total"] == n
        # exactly once: no resource was written a second time
        assert sql(s.db, f"SELECT count(*), max(version) FROM resource WHERE id LIKE 'big-{tag}-%'") == [str(n), "1"]
        assert sql(s.db, f"SELECT count(*) FROM resource_history WHERE id LIKE 'big-{tag}-%'") == ["0"]
    finally:
        fhir.close()


def test_transaction_bundle_file_keeps_its_references_and_is_all_or_nothing(server, fhir, concord_bin, tmp_path):
    tag = uid()
    pfull = f"urn:uuid:{uuid.uuid4()}"
    good = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": pfull, "resource": {"resourceType": "Patient", "name": [{"family": f"Tx{tag}"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": pfull},
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                      "identifier": [{"system": "urn:test", "value": tag}]},
         "request": {"method": "POST", "url": "Condition"}},
    ]}
    path = tmp_path / "tx.json"
    path.write_text(json.dumps(good))
    r = run(concord_bin, "import", "--db", server.db, str(path))
    assert r.returncode == 0, (r.stdout, r.stderr)
    pats = fhir.search("Patient", {"family": f"Tx{tag}"})["entry"]
    assert len(pats) == 1
    cond = fhir.search("Condition", {"identifier": f"urn:test|{tag}"})["entry"][0]["resource"]
    assert cond["subject"]["reference"] == f"Patient/{pats[0]['resource']['id']}"
    # one bad entry: nothing of the transaction is stored
    bad = json.loads(json.dumps(good))
    bad["entry"][0]["resource"]["name"][0]["family"] = f"TxBad{tag}"
    bad["entry"][1]["resource"]["onsetDateTime"] = "yesterday"
    path2 = tmp_path / "txbad.json"
    path2.write_text(json.dumps(bad))
    r = run(concord_bin, "import", "--db", server.db, str(path2))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "transaction rejected whole" in r.stderr and "onsetDateTime" in r.stderr, r.stderr
    assert fhir.search("Patient", {"family": f"TxBad{tag}", "_summary": "count"})["total"] == 0


def test_collection_bundle_stores_good_entries_and_quarantines_bad_ones(server, fhir, concord_bin, tmp_path):
    tag = uid()
    coll = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient(f"c-{tag}-1", family=f"Coll{tag}")},
        {"resource": {"resourceType": "Patient", "id": f"c-{tag}-2", "birthDate": "02/03/1950"}},
        {"resource": patient(f"c-{tag}-3", family=f"Coll{tag}")},
    ]}
    path = tmp_path / "coll.json"
    path.write_text(json.dumps(coll))
    r = run(concord_bin, "import", "--db", server.db, str(path))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert re.search(r"coll\.json:2: .*birthDate", r.stderr), r.stderr
    assert fhir.search("Patient", {"family": f"Coll{tag}", "_summary": "count"})["total"] == 2


def test_directory_import_and_usage_errors(server, fhir, concord_bin, tmp_path):
    tag = uid()
    d = tmp_path / "feed"
    (d / "sub").mkdir(parents=True)
    write_ndjson(d / "a.ndjson", [patient(f"d-{tag}-1", family=f"Dir{tag}")])
    write_ndjson(d / "sub" / "b.ndjson", [patient(f"d-{tag}-2", family=f"Dir{tag}")])
    (d / "notes.txt").write_text("ignored")
    r = run(concord_bin, "import", "--db", server.db, str(d))
    assert r.returncode == 0, r.stderr
    assert fhir.search("Patient", {"family": f"Dir{tag}", "_summary": "count"})["total"] == 2
    for args in (["import"], ["import", "--format", "xml", "x"], ["import", "--setting", "space", "x"],
                 ["import", "--format", "csv", "x.csv"]):
        u = run(concord_bin, *args, "--db", server.db)
        assert u.returncode == 2 and u.stderr.strip(), (args, u.stderr)
    missing = run(concord_bin, "import", "--db", server.db, str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 1 and "nope.ndjson" in missing.stderr


def test_quarantined_line_replayed_after_the_fix(server, fhir, concord_bin, tmp_path):
    tag = uid()
    path = write_ndjson(tmp_path / "r.ndjson", [], ['{"resourceType":"Patient","id":"rp-%s","birthDate":"1950-13-45"}' % tag])
    r = run(concord_bin, "import", "--db", server.db, path)
    assert r.returncode == 3
    lst = run(concord_bin, "quarantine", "list", "--db", server.db, "--limit", "1000").stdout
    key = next(line.split()[0] for line in lst.splitlines() if f"{path}:1" in line)
    # the cause cannot be fixed in the data here, so the replay is refused again, precisely
    again = run(concord_bin, "quarantine", "replay", key, "--db", server.db)
    assert again.returncode == 1 and "birthDate" in again.stderr, again.stderr
    d = run(concord_bin, "quarantine", "discard", key, "--db", server.db)
    assert d.returncode == 0


# ---- the API -------------------------------------------------------------


def poll(fhir, url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(url, headers=fhir.auth_headers, timeout=10)
        if r.status_code != 202:
            return r
        assert r.headers.get("X-Progress"), r.headers
        time.sleep(0.1)
    raise AssertionError(f"import did not finish in {timeout}s")


def test_import_api_upload_poll_and_quarantine(server, fhir):
    tag = uid()
    body = "\n".join(json.dumps(patient(f"api-{tag}-{i}", family=f"Api{tag}")) for i in range(30))
    body += "\n{\"resourceType\": \"Patient\", \"id\": \"api-bad-%s\", \"birthDate\": \"31/02/1950\"}\n" % tag
    # a feed writes as the organisation it is: the tests' account (E2E01) may not import as Z90002 ...
    r = requests.post(f"{server.base}/$import?organisation=Z90002&setting=primary-care", data=body.encode(),
                      headers={"Content-Type": "application/fhir+ndjson", "Prefer": "respond-async",
                               **server.auth_headers}, timeout=30)
    assert r.status_code == 403 and "E2E01" in r.text, r.text
    # ... Z90002's own feed account may
    feed = bearer(provision(server.binary, server.db, user="feed-z90002", role="system", org="Z90002"))
    r = requests.post(f"{server.base}/$import?organisation=Z90002&setting=primary-care", data=body.encode(),
                      headers={"Content-Type": "application/fhir+ndjson", "Prefer": "respond-async", **feed},
                      timeout=30)
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    assert "/$import-poll-status/" in status_url
    done = poll(fhir, status_url)
    assert done.status_code == 200, done.text
    out = done.json()
    assert out["status"] == "done"
    assert out["output"][0]["count"] == 30 and out["output"][0]["quarantined"] == 1
    assert out["error"][0]["count"] == 1
    assert fhir.search("Patient", {"family": f"Api{tag}", "_tag": f"{ODS}|Z90002", "_summary": "count"})["total"] == 30
    # the quarantined line, over the API
    auth = server.auth_headers
    q = requests.get(f"{server.base}/$quarantine", params={"_count": "1000"}, headers=auth, timeout=10).json()
    rec = next(x for x in q["records"] if f"api-bad-{tag}" in requests.get(
        f"{server.base}/$quarantine/{x['id']}", headers=auth, timeout=10).json().get("body", ""))
    one = requests.get(f"{server.base}/$quarantine/{rec['id']}", headers=auth, timeout=10).json()
    assert one["channel"] == "file" and "birthDate" in one["where"] and one["source"].endswith(":31")
    rp = requests.post(f"{server.base}/$quarantine/{rec['id']}/$replay", headers=auth, timeout=10)
    assert rp.status_code == 422 and "birthDate" in rp.text, rp.text
    dc = requests.post(f"{server.base}/$quarantine/{rec['id']}/$discard", headers=auth, timeout=10)
    assert dc.status_code == 200 and dc.json()["outcome"] == "discarded"
    again = requests.post(f"{server.base}/$quarantine/{rec['id']}/$discard", headers=auth, timeout=10)
    assert again.status_code == 409


def test_import_api_parameters_name_files_in_the_import_directory_only(server, fhir, tmp_path):
    tag = uid()
    os.makedirs(server.import_dir, exist_ok=True)
    inside = os.path.join(server.import_dir, f"p-{tag}.ndjson")
    write_ndjson(inside, [patient(f"par-{tag}", family=f"Par{tag}")])
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
        {"name": "input", "part": [{"name": "type", "valueCode": "Patient"},
                                   {"name": "url", "valueUri": f"file://{inside}"}]}]}
    auth = server.auth_headers
    r = requests.post(f"{server.base}/$import", json=params, headers=auth, timeout=30)
    assert r.status_code == 202, r.text
    assert poll(fhir, r.headers["Content-Location"]).json()["output"][0]["count"] == 1
    assert fhir.read("Patient", f"par-{tag}")["id"] == f"par-{tag}"
    outside = write_ndjson(tmp_path / "outside.ndjson", [patient(f"out-{tag}")])
    for url in (outside, f"file://{outside}", "../../../../etc/passwd", f"{server.import_dir}/../outside.ndjson"):
        params["parameter"][1]["part"][1]["valueUri"] = url
        bad = requests.post(f"{server.base}/$import", json=params, headers=auth, timeout=30)
        assert bad.status_code == 400 and "import directory" in bad.text, (url, bad.status_code, bad.text)
    assert requests.post(f"{server.base}/$import", data=b"nonsense", headers=auth, timeout=10).status_code == 400
    assert requests.get(f"{server.base}/$import-poll-status/999999", headers=auth, timeout=10).status_code == 404
    assert requests.get(f"{server.base}/$import-poll-status/abc", headers=auth, timeout=10).status_code == 404


# ---- CSV extracts ----------------------------------------------------------

MAPPINGS = {"community": "community-{}", "social_care": "social-care-{}", "mental_health": "mental-health-{}"}


@pytest.fixture(scope="module")
def synth_feeds(concord_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "feeds"
    r = run(concord_bin, "synth", "--patients", "1500", "--seed", "7", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def csv_rows(path):
    import csv
    with open(path, newline="") as f:
        return sum(1 for _ in f) - 1  # the synthetic extracts have no line breaks inside fields


def test_every_synthetic_csv_extract_imports_with_its_mapping(server, fhir, concord_bin, synth_feeds):
    import csv
    malformed = {}
    with open(synth_feeds / "ground_truth" / "errors.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["error"] == "malformed":
                malformed[row["feed"]] = malformed.get(row["feed"], 0) + 1
    seen = 0
    for setting_dir, pattern in MAPPINGS.items():
        for path in sorted((synth_feeds / setting_dir).glob("*.csv")):
            feed = f"{setting_dir}/{path.stem}"
            r = run(concord_bin, "import", "--db", server.db, "--mapping", pattern.format(path.stem), str(path))
            bad = malformed.get(feed, 0)
            assert r.returncode == (3 if bad else 0), (feed, r.stdout, r.stderr)
            m = re.search(r"csv, (\d+) stored, (\d+) quarantined", r.stdout)
            assert m, r.stdout
            assert int(m.group(2)) == bad, (feed, r.stdout, r.stderr)
            assert int(m.group(1)) >= csv_rows(path) - bad, (feed, r.stdout)  # at least one resource per row
            if bad:
                assert re.search(r"\.csv:\d+: .*31/02/19X5", r.stderr), r.stderr
            seen += 1
    assert seen == 9
    # what the rows became, and where they came from
    enc = fhir.search("Encounter", {"_tag": f"{SETTING}|community", "_count": "1"})
    assert enc["entry"], "community contacts are Encounters tagged with their setting"
    e = enc["entry"][0]["resource"]
    assert e["meta"]["source"].startswith("urn:concord:import:")
    assert e["subject"]["reference"].startswith("Patient/")
    fhir.read("Patient", e["subject"]["reference"].split("/")[1])
    assert fhir.search("EpisodeOfCare", {"_tag": f"{SETTING}|social-care", "_summary": "count"})["total"] > 0
    assert fhir.search("Encounter", {"_tag": f"{SETTING}|mental-health", "_summary": "count"})["total"] > 0


def test_csv_upload_over_the_api_needs_a_known_mapping(server, fhir, synth_feeds):
    path = sorted((synth_feeds / "community").glob("ZC2.csv"))[0]
    # (not byte for byte the file the test above imported, which would be skipped as done)
    r = requests.post(f"{server.base}/$import?mapping=community-ZC2", data=path.read_bytes() + b"\n",
                      headers={"Content-Type": "text/csv", **server.auth_headers}, timeout=30)
    assert r.status_code == 202, r.text
    out = poll(fhir, r.headers["Content-Location"]).json()
    assert out["status"] == "done" and out["output"][0]["type"] == "csv" and out["output"][0]["count"] > 0
    for q in ("mapping=../../etc/passwd", "mapping=no-such-provider", ""):
        bad = requests.post(f"{server.base}/$import?{q}", data=b"a,b\n1,2\n",
                            headers={"Content-Type": "text/csv", **server.auth_headers}, timeout=30)
        assert bad.status_code == 400, (q, bad.text)
