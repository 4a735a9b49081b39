"""Instance and type interactions: create, read, vread, update (including
create-on-update), conditional create, delete, history, and optimistic
concurrency with ETag / If-Match (FHIR R4 http.html)."""

import re
import time
from datetime import timedelta

from concordlib import (
    FHIR_JSON,
    assert_fhir_json,
    http_date,
    instant,
    now_utc,
    outcome,
    uid,
)

SYS = "urn:concord-e2e:crud"


def patient(ident=None, **fields):
    p = {"resourceType": "Patient", "identifier": [{"system": SYS, "value": ident or uid()}]}
    p.update(fields)
    return p


def strip_meta(res):
    return {k: v for k, v in res.items() if k != "meta"}


def count_by_identifier(fhir, type_, ident, system=SYS):
    b = fhir.search(type_, {"identifier": f"{system}|{ident}", "_total": "accurate"})
    return len(b.get("entry", []))


# ---- create -------------------------------------------------------------------


def test_create_returns_201_location_etag_last_modified_and_meta(fhir):
    ident = uid()
    sent = patient(ident, active=True, name=[{"family": "Create", "given": ["Ada"]}], birthDate="1980-05-17")
    before = now_utc() - timedelta(seconds=5)
    r = fhir.post("Patient", sent)
    assert r.status_code == 201, r.text
    assert_fhir_json(r)
    body = r.json()
    new_id = body["id"]
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", new_id), new_id
    # Location: [base]/Patient/[id]/_history/[vid]
    assert r.headers["Location"] == f"{fhir.base}/Patient/{new_id}/_history/1", r.headers.get("Location")
    assert r.headers["ETag"] == 'W/"1"'
    lm = http_date(r.headers["Last-Modified"])
    assert before <= lm <= now_utc() + timedelta(seconds=5), lm
    assert body["meta"]["versionId"] == "1"
    lu = instant(body["meta"]["lastUpdated"])
    assert abs((lu - lm).total_seconds()) < 1.0, (lu, lm)
    assert strip_meta(body) == dict(sent, id=new_id)


def test_create_ignores_client_id_and_meta_version(fhir):
    # http.html#create: "If an id is provided, the server SHALL ignore it."
    client_id = "client-chosen-" + uid()[:12]
    ident = uid()
    r = fhir.post("Patient", patient(ident, id=client_id, meta={"versionId": "7"}))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] != client_id
    assert body["meta"]["versionId"] == "1"
    assert fhir.get(f"Patient/{client_id}").status_code == 404
    assert count_by_identifier(fhir, "Patient", ident) == 1


def test_two_creates_get_distinct_ids(fhir):
    a = fhir.create(patient())
    b = fhir.create(patient())
    assert a["id"] != b["id"]


# ---- read / vread ---------------------------------------------------------------


def test_read_returns_resource_with_etag_and_last_modified(fhir):
    created = fhir.create(patient(gender="female"))
    r = fhir.get(f"Patient/{created['id']}")
    assert r.status_code == 200
    assert_fhir_json(r)
    assert r.headers["ETag"] == 'W/"1"'
    assert http_date(r.headers["Last-Modified"]) == http_date(r.headers["Last-Modified"])  # parseable
    assert abs((http_date(r.headers["Last-Modified"]) - instant(created["meta"]["lastUpdated"])).total_seconds()) < 1
    assert r.json() == created


def test_read_unknown_id_is_404_operation_outcome(fhir):
    outcome(fhir.get(f"Patient/{uid()}"), 404)


def test_read_unknown_type_is_404_operation_outcome(fhir):
    outcome(fhir.get(f"NoSuchType/{uid()}"), 404)


def test_vread_returns_each_version(fhir):
    v1 = fhir.create(patient(gender="male"))
    pid = v1["id"]
    r = fhir.put(f"Patient/{pid}", dict(strip_meta(v1), gender="female"))
    assert r.status_code == 200, r.text
    v2 = r.json()
    r1 = fhir.get(f"Patient/{pid}/_history/1")
    assert r1.status_code == 200
    assert r1.headers["ETag"] == 'W/"1"'
    assert r1.json()["gender"] == "male" and r1.json()["meta"]["versionId"] == "1"
    assert r1.json() == v1
    r2 = fhir.get(f"Patient/{pid}/_history/2")
    assert r2.status_code == 200
    assert r2.headers["ETag"] == 'W/"2"'
    assert r2.json() == v2 and v2["gender"] == "female"
    outcome(fhir.get(f"Patient/{pid}/_history/3"), 404)
    outcome(fhir.get(f"Patient/{uid()}/_history/1"), 404)


# ---- update -------------------------------------------------------------------


def test_update_creates_new_version(fhir):
    v1 = fhir.create(patient(active=True))
    pid = v1["id"]
    time.sleep(0.01)
    new = dict(strip_meta(v1), active=False, name=[{"family": "Updated"}])
    r = fhir.put(f"Patient/{pid}", new)
    assert r.status_code == 200, r.text
    assert_fhir_json(r)
    assert r.headers["ETag"] == 'W/"2"'
    assert "Last-Modified" in r.headers
    body = r.json()
    assert body["meta"]["versionId"] == "2"
    assert instant(body["meta"]["lastUpdated"]) > instant(v1["meta"]["lastUpdated"])
    assert strip_meta(body) == new
    read = fhir.read("Patient", pid)
    assert read == body


def test_update_as_create_with_client_id_then_update(fhir):
    pid = "e2e-" + uid()
    res = patient(id=pid, gender="other")
    r = fhir.put(f"Patient/{pid}", res)
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == 'W/"1"'
    assert r.json()["id"] == pid and r.json()["meta"]["versionId"] == "1"
    loc = r.headers.get("Location")
    assert loc == f"{fhir.base}/Patient/{pid}/_history/1", loc
    r = fhir.put(f"Patient/{pid}", dict(res, gender="unknown"))
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    assert r.json()["meta"]["versionId"] == "2"
    assert fhir.read("Patient", pid)["gender"] == "unknown"


def test_update_keeps_other_types_with_same_id_apart(fhir):
    shared = "same-" + uid()
    fhir.upsert(patient(id=shared))
    obs = {
        "resourceType": "Observation",
        "id": shared,
        "status": "final",
        "code": {"text": "x"},
    }
    r = fhir.put(f"Observation/{shared}", obs)
    assert r.status_code == 201, "a Patient with the same id must not make the Observation an update"
    assert fhir.read("Patient", shared)["resourceType"] == "Patient"
    assert fhir.read("Observation", shared)["status"] == "final"


# ---- conditional create -------------------------------------------------------


def test_conditional_create_no_match_creates(fhir):
    ident = uid()
    r = fhir.post("Patient", patient(ident), headers={"If-None-Exist": f"identifier={SYS}|{ident}"})
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == 'W/"1"'
    assert count_by_identifier(fhir, "Patient", ident) == 1


def test_conditional_create_one_match_returns_200_and_stores_nothing(fhir):
    ident = uid()
    first = fhir.create(patient(ident, gender="male"))
    r = fhir.post(
        "Patient",
        patient(ident, gender="female"),
        headers={"If-None-Exist": f"identifier={SYS}|{ident}"},
    )
    assert r.status_code == 200, r.text
    # the existing resource is the one reported
    if r.headers.get("Location"):
        assert f"/Patient/{first['id']}" in r.headers["Location"]
    if r.content:
        assert r.json().get("id") == first["id"]
    assert count_by_identifier(fhir, "Patient", ident) == 1
    still = fhir.read("Patient", first["id"])
    assert still["gender"] == "male" and still["meta"]["versionId"] == "1"


def test_conditional_create_several_matches_is_412(fhir):
    ident = uid()
    fhir.create(patient(ident))
    fhir.create(patient(ident))
    r = fhir.post("Patient", patient(ident, gender="other"), headers={"If-None-Exist": f"identifier={SYS}|{ident}"})
    outcome(r, 412)
    assert count_by_identifier(fhir, "Patient", ident) == 2


def test_conditional_create_with_bad_criteria_is_400(fhir):
    ident = uid()
    r = fhir.post("Patient", patient(ident), headers={"If-None-Exist": "no-such-param=1"})
    outcome(r, 400)
    assert count_by_identifier(fhir, "Patient", ident) == 0


# ---- delete ---------------------------------------------------------------------


def test_delete_then_read_is_410_history_kept_and_recreate_by_put(fhir):
    ident = uid()
    created = fhir.create(patient(ident, gender="female"))
    pid = created["id"]
    r = fhir.delete(f"Patient/{pid}")
    assert r.status_code in (200, 204), r.text
    if r.status_code == 200 and r.content:
        assert r.json()["resourceType"] == "OperationOutcome"
    # read of a deleted resource: 410 Gone (http.html#read)
    g = fhir.get(f"Patient/{pid}")
    assert g.status_code == 410, g.text
    if g.content:
        assert g.json()["resourceType"] == "OperationOutcome"
    # no longer found by search
    assert count_by_identifier(fhir, "Patient", ident) == 0
    assert fhir.search_ids("Patient", {"_id": pid}) == []
    # the old version is still readable; the deletion version is 410 on vread
    v1 = fhir.get(f"Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json() == created
    assert fhir.get(f"Patient/{pid}/_history/2").status_code == 410
    # instance history: the delete and the create, newest first
    h = fhir.get(f"Patient/{pid}/_history")
    assert h.status_code == 200
    hist = h.json()
    assert hist["type"] == "history"
    es = hist["entry"]
    assert len(es) == 2, es
    assert es[0]["request"]["method"] == "DELETE"
    assert "resource" not in es[0]
    assert es[1]["resource"]["meta"]["versionId"] == "1"
    # re-create by PUT with the same id
    r = fhir.put(f"Patient/{pid}", dict(strip_meta(created), gender="male"))
    assert r.status_code in (200, 201), r.text
    again = fhir.read("Patient", pid)
    assert again["gender"] == "male"
    assert again["meta"]["versionId"] == "3"
    assert count_by_identifier(fhir, "Patient", ident) == 1


def test_delete_unknown_is_not_an_error_or_404(fhir):
    r = fhir.delete(f"Patient/{uid()}")
    # http.html#delete: 200/204 (no effect) or 404 Not Found
    assert r.status_code in (200, 204, 404), r.text
    if r.status_code == 404:
        outcome(r, 404)


def test_delete_twice(fhir):
    created = fhir.create(patient())
    assert fhir.delete(f"Patient/{created['id']}").status_code in (200, 204)
    r = fhir.delete(f"Patient/{created['id']}")
    assert r.status_code in (200, 204, 404, 410), r.text
    assert fhir.get(f"Patient/{created['id']}").status_code == 410


# ---- history ------------------------------------------------------------------


def _history_versions(bundle):
    return [(e.get("resource", {}).get("meta", {}).get("versionId"), e["request"]["method"]) for e in bundle["entry"]]


def test_instance_history_lists_all_versions_newest_first(fhir):
    v1 = fhir.create(patient(gender="male"))
    pid = v1["id"]
    for g in ("female", "other"):
        assert fhir.put(f"Patient/{pid}", dict(strip_meta(v1), gender=g)).status_code == 200
    r = fhir.get(f"Patient/{pid}/_history")
    assert r.status_code == 200
    assert_fhir_json(r)
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in b["entry"]] == ["3", "2", "1"]
    assert [e["resource"]["gender"] for e in b["entry"]] == ["other", "female", "male"]
    assert b["entry"][2]["request"]["method"] == "POST"
    assert b["entry"][0]["request"]["method"] == "PUT"
    for e in b["entry"]:
        assert e["fullUrl"] == f"{fhir.base}/Patient/{pid}"
        assert e["response"]["status"].startswith(("200", "201"))
    # _count limits the page
    r = fhir.get(f"Patient/{pid}/_history", params={"_count": "1"})
    assert r.status_code == 200
    assert [e["resource"]["meta"]["versionId"] for e in r.json()["entry"]] == ["3"]


def test_type_and_system_history_since(fhir):
    marker = fhir.create(patient())
    since = marker["meta"]["lastUpdated"]
    p1 = fhir.create(patient(gender="male"))
    fhir.put(f"Patient/{p1['id']}", dict(strip_meta(p1), gender="female"))
    p2 = fhir.create(patient())
    obs = fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "history"}})

    r = fhir.get("Patient/_history", params={"_since": since, "_count": "1000"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["type"] == "history"
    got = [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in b["entry"] if "resource" in e]
    for want in [(marker["id"], "1"), (p1["id"], "1"), (p1["id"], "2"), (p2["id"], "1")]:
        assert want in got, f"{want} missing from Patient/_history?_since={since}"
    assert all(e["resource"]["resourceType"] == "Patient" for e in b["entry"] if "resource" in e)
    assert obs["id"] not in [i for i, _ in got]
    # nothing older than _since (to the second: _since is an instant)
    floor = instant(since).replace(microsecond=0)
    for e in b["entry"]:
        if "resource" in e:
            assert instant(e["resource"]["meta"]["lastUpdated"]) >= floor

    r = fhir.get("_history", params={"_since": since, "_count": "1000"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["type"] == "history"
    got = {(e["resource"]["resourceType"], e["resource"]["id"], e["resource"]["meta"]["versionId"])
           for e in b["entry"] if "resource" in e}
    for want in [("Patient", p1["id"], "1"), ("Patient", p1["id"], "2"), ("Patient", p2["id"], "1"),
                 ("Observation", obs["id"], "1")]:
        assert want in got, f"{want} missing from _history?_since={since}"


def test_history_of_unknown_resource_is_404(fhir):
    outcome(fhir.get(f"Patient/{uid()}/_history"), 404)


# ---- optimistic concurrency -------------------------------------------------------


def test_if_match_current_version_updates_stale_is_412(fhir):
    created = fhir.create(patient(gender="male"))
    pid = created["id"]
    r = fhir.get(f"Patient/{pid}")
    etag = r.headers["ETag"]
    assert etag == 'W/"1"'
    first = dict(strip_meta(created), gender="female")
    r = fhir.put(f"Patient/{pid}", first, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    # a second writer still holding W/"1"
    r = fhir.put(f"Patient/{pid}", dict(strip_meta(created), gender="other"), headers={"If-Match": etag})
    outcome(r, 412)
    cur = fhir.get(f"Patient/{pid}")
    assert cur.headers["ETag"] == 'W/"2"'
    assert cur.json()["gender"] == "female"
    h = fhir.get(f"Patient/{pid}/_history").json()
    assert len(h["entry"]) == 2


def test_if_match_on_missing_resource_is_not_a_create(fhir):
    pid = "e2e-" + uid()
    r = fhir.put(f"Patient/{pid}", patient(id=pid), headers={"If-Match": 'W/"3"'})
    assert r.status_code in (404, 409, 412), r.text
    outcome(r, (404, 409, 412))
    assert fhir.get(f"Patient/{pid}").status_code == 404


def test_malformed_if_match_is_400(fhir):
    created = fhir.create(patient())
    r = fhir.put(f"Patient/{created['id']}", strip_meta(created), headers={"If-Match": "garbage"})
    outcome(r, 400)
    assert fhir.read("Patient", created["id"])["meta"]["versionId"] == "1"


def test_prefer_return_minimal(fhir):
    r = fhir.post("Patient", patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.headers["ETag"] == 'W/"1"'
    assert "/Patient/" in r.headers["Location"]
    assert not r.content or r.content.strip() == b""


def test_content_type_is_fhir_json_on_success_and_error(fhir):
    created = fhir.create(patient())
    for r in (fhir.get(f"Patient/{created['id']}"), fhir.get("Patient", params={"_id": created["id"]}),
              fhir.get(f"Patient/{uid()}")):
        assert r.headers["Content-Type"].startswith(FHIR_JSON), r.headers["Content-Type"]


# ---- concurrent writers -------------------------------------------------------------


def _parallel(n, fn):
    import threading
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_if_match_updates_exactly_one_wins(server):
    from concordlib import Fhir
    setup = Fhir(server.base, server.token)
    created = setup.create(patient(gender="unknown"))
    pid = created["id"]
    body = strip_meta(created)

    def attempt(i):
        c = Fhir(server.base, server.token)
        try:
            r = c.put(f"Patient/{pid}", dict(body, name=[{"family": f"Writer{i}"}]), headers={"If-Match": 'W/"1"'})
            return r.status_code, r.json()
        finally:
            c.close()

    results = _parallel(8, attempt)
    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 1 and codes.count(412) == 7, codes
    winner = next(b for code, b in results if code == 200)
    cur = setup.read("Patient", pid)
    assert cur["meta"]["versionId"] == "2"
    assert cur["name"] == winner["name"]
    assert len(setup.get(f"Patient/{pid}/_history").json()["entry"]) == 2
    setup.close()


def test_concurrent_updates_get_distinct_versions(server):
    """Eight blind PUTs of a new id at once: one creates it, the others update
    it (last writer wins); a server may refuse a racer with 409 Conflict
    (http.html#concurrency) but never lose or duplicate a version."""
    from concordlib import Fhir
    pid = "race-" + uid()

    def attempt(i):
        c = Fhir(server.base, server.token)
        try:
            r = c.put(f"Patient/{pid}", patient(id=pid, name=[{"family": f"Racer{i}"}]))
            return r.status_code, r.headers.get("ETag"), r.text
        finally:
            c.close()

    results = _parallel(8, attempt)
    codes = sorted(code for code, _, _ in results)
    assert set(codes) <= {200, 201, 409}, [r for r in results if r[0] not in (200, 201, 409)]
    assert codes.count(201) == 1, f"exactly one PUT creates the resource: {codes}"
    for code, _, text in results:
        if code == 409:
            assert '"OperationOutcome"' in text, text
    ok = [e for code, e, _ in results if code in (200, 201)]
    k = len(ok)
    assert sorted(ok) == sorted(f'W/"{v}"' for v in range(1, k + 1)), ok
    c = Fhir(server.base, server.token)
    h = c.get(f"Patient/{pid}/_history").json()
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in h["entry"]) == list(range(1, k + 1))
    assert c.read("Patient", pid)["meta"]["versionId"] == str(k)
    c.close()
