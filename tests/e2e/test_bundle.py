"""batch and transaction Bundles POSTed to [base] (FHIR R4 http.html#transaction):
urn:uuid references resolved, all-or-nothing transactions, batch entries
that fail on their own."""

import uuid

from concordlib import outcome, uid

SYS = "urn:concord-e2e:bundle"


def ident(v):
    return [{"system": SYS, "value": v}]


def count(fhir, type_, v):
    return len(fhir.search(type_, {"identifier": f"{SYS}|{v}"}).get("entry", []))


def post_entry(resource, full_url=None, if_none_exist=None):
    e = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        e["fullUrl"] = full_url
    if if_none_exist:
        e["request"]["ifNoneExist"] = if_none_exist
    return e


def put_entry(resource, if_match=None):
    e = {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
    if if_match:
        e["request"]["ifMatch"] = if_match
    return e


def bundle(type_, entries):
    return {"resourceType": "Bundle", "type": type_, "entry": entries}


def obs(v, subject_ref, **kw):
    o = {"resourceType": "Observation", "identifier": ident(v), "status": "final",
         "code": {"text": "bundle test"}, "subject": {"reference": subject_ref}}
    o.update(kw)
    return o


# ---- transaction ----------------------------------------------------------------


def test_transaction_resolves_urn_uuid_references(fhir):
    pv, ov, ev = uid(), uid(), uid()
    purn = f"urn:uuid:{uuid.uuid4()}"
    eurn = f"urn:uuid:{uuid.uuid4()}"
    b = bundle("transaction", [
        post_entry(obs(ov, purn, encounter={"reference": eurn},
                       performer=[{"reference": purn, "display": "self-reported"}]),
                   full_url=f"urn:uuid:{uuid.uuid4()}"),
        post_entry({"resourceType": "Encounter", "identifier": ident(ev), "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": purn}}, full_url=eurn),
        post_entry({"resourceType": "Patient", "identifier": ident(pv), "name": [{"family": "Txn"}]}, full_url=purn),
    ])
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["resourceType"] == "Bundle" and resp["type"] == "transaction-response"
    es = resp["entry"]
    assert len(es) == 3
    for e in es:
        assert e["response"]["status"].startswith("201"), e
        assert e["response"]["etag"] == 'W/"1"'
    locs = [e["response"]["location"] for e in es]
    # response entries are in request order
    assert "Observation/" in locs[0] and "Encounter/" in locs[1] and "Patient/" in locs[2]
    pid = locs[2].split("Patient/")[1].split("/")[0]
    eid = locs[1].split("Encounter/")[1].split("/")[0]
    oid = locs[0].split("Observation/")[1].split("/")[0]
    assert locs[2].endswith(f"Patient/{pid}/_history/1")

    p = fhir.read("Patient", pid)
    assert p["identifier"] == ident(pv)
    o = fhir.read("Observation", oid)
    assert o["subject"]["reference"] == f"Patient/{pid}"
    assert o["performer"][0]["reference"] == f"Patient/{pid}"
    assert o["encounter"]["reference"] == f"Encounter/{eid}"
    e = fhir.read("Encounter", eid)
    assert e["subject"]["reference"] == f"Patient/{pid}"
    # and the reference is searchable
    assert [x["resource"]["id"] for x in fhir.search("Observation", {"patient": pid}).get("entry", [])] == [oid]
    assert [x["resource"]["id"] for x in
            fhir.search("Observation", {"patient.identifier": f"{SYS}|{pv}"}).get("entry", [])] == [oid]


def test_transaction_with_one_bad_entry_stores_nothing(fhir):
    pv, ov, qv, bad = uid(), uid(), uid(), uid()
    purn = f"urn:uuid:{uuid.uuid4()}"
    put_id = "bt-" + uid()
    b = bundle("transaction", [
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}, full_url=purn),
        post_entry(obs(ov, purn)),
        put_entry({"resourceType": "Patient", "id": put_id, "identifier": ident(qv)}),
        post_entry({"resourceType": "Patient", "identifier": ident(bad), "active": "yes"}),
    ])
    r = fhir.post("", b)
    oo = outcome(r, (400, 422))
    # the outcome names the failing entry
    text = str(oo)
    assert "entry[3]" in text, f"the OperationOutcome does not name Bundle.entry[3]: {oo}"
    for type_, v in [("Patient", pv), ("Observation", ov), ("Patient", qv), ("Patient", bad)]:
        assert count(fhir, type_, v) == 0, f"{type_} {v} was stored by a failed transaction"
    assert fhir.get(f"Patient/{put_id}").status_code == 404


def test_transaction_with_failing_precondition_stores_nothing(fhir):
    existing = fhir.create({"resourceType": "Patient", "identifier": ident(uid()), "gender": "male"})
    pv = uid()
    changed = {k: v for k, v in existing.items() if k != "meta"}
    changed["gender"] = "female"
    b = bundle("transaction", [
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}),
        put_entry(changed, if_match='W/"7"'),
    ])
    r = fhir.post("", b)
    oo = outcome(r, (409, 412))
    assert "entry[1]" in str(oo), oo
    assert count(fhir, "Patient", pv) == 0
    cur = fhir.read("Patient", existing["id"])
    assert cur["gender"] == "male" and cur["meta"]["versionId"] == "1"


def test_transaction_with_unresolvable_entry_url_stores_nothing(fhir):
    pv = uid()
    b = bundle("transaction", [
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}),
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Spaceship"}},
    ])
    oo = outcome(fhir.post("", b), (400, 404, 422))
    assert "entry[1]" in str(oo), oo
    assert count(fhir, "Patient", pv) == 0


def test_transaction_update_delete_and_read(fhir):
    keep = fhir.create({"resourceType": "Patient", "identifier": ident(uid()), "gender": "male"})
    gone = fhir.create({"resourceType": "Patient", "identifier": ident(uid())})
    new_id = "bt-" + uid()
    upd = {k: v for k, v in keep.items() if k != "meta"}
    upd["gender"] = "female"
    b = bundle("transaction", [
        put_entry(upd, if_match='W/"1"'),
        {"request": {"method": "DELETE", "url": f"Patient/{gone['id']}"}},
        put_entry({"resourceType": "Patient", "id": new_id, "identifier": ident(uid())}),
        {"request": {"method": "GET", "url": f"Patient/{keep['id']}"}},
    ])
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    assert es[0]["response"]["status"].startswith("200")
    assert es[0]["response"]["etag"] == 'W/"2"'
    assert es[1]["response"]["status"].startswith(("200", "204"))
    assert es[2]["response"]["status"].startswith("201")
    assert es[3]["response"]["status"].startswith("200")
    # the GET is processed after the writes (http.html#trules)
    assert es[3]["resource"]["gender"] == "female"
    assert fhir.read("Patient", keep["id"])["meta"]["versionId"] == "2"
    assert fhir.get(f"Patient/{gone['id']}").status_code == 410
    assert fhir.read("Patient", new_id)["id"] == new_id


def test_transaction_search_entry_sees_the_transaction_writes(fhir):
    pv = uid()
    b = bundle("transaction", [
        {"request": {"method": "GET", "url": f"Patient?identifier={SYS}|{pv}"}},
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}),
    ])
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    found = es[0]["resource"]
    assert found["resourceType"] == "Bundle" and found["type"] == "searchset"
    assert len(found.get("entry", [])) == 1
    assert es[1]["response"]["status"].startswith("201")


def test_transaction_conditional_create(fhir):
    pv = uid()
    first = fhir.create({"resourceType": "Patient", "identifier": ident(pv)})
    purn = f"urn:uuid:{uuid.uuid4()}"
    ov = uid()
    b = bundle("transaction", [
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}, full_url=purn,
                   if_none_exist=f"identifier={SYS}|{pv}"),
        post_entry(obs(ov, purn)),
    ])
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    assert es[0]["response"]["status"].startswith("200"), es[0]
    assert f"Patient/{first['id']}" in es[0]["response"].get("location", f"Patient/{first['id']}")
    assert count(fhir, "Patient", pv) == 1
    # the urn:uuid resolves to the existing patient
    o = fhir.search("Observation", {"identifier": f"{SYS}|{ov}"})["entry"][0]["resource"]
    assert o["subject"]["reference"] == f"Patient/{first['id']}", (
        "the urn:uuid of a conditional create that matched must resolve to the matched Patient "
        f"Patient/{first['id']}; the Observation points to {o['subject']['reference']}, "
        f"which reads as {fhir.get(o['subject']['reference']).status_code}")


def test_transaction_duplicate_full_urls_is_rejected(fhir):
    pv = uid()
    u = f"urn:uuid:{uuid.uuid4()}"
    b = bundle("transaction", [
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}, full_url=u),
        post_entry({"resourceType": "Patient", "identifier": ident(pv)}, full_url=u),
    ])
    outcome(fhir.post("", b), (400, 422))
    assert count(fhir, "Patient", pv) == 0


def test_transaction_return_representation(fhir):
    pv = uid()
    b = bundle("transaction", [post_entry({"resourceType": "Patient", "identifier": ident(pv)})])
    r = fhir.post("", b, headers={"Prefer": "return=representation"})
    assert r.status_code == 200
    e = r.json()["entry"][0]
    assert e["resource"]["identifier"] == ident(pv)
    assert e["resource"]["meta"]["versionId"] == "1"
    assert e["fullUrl"].endswith(f"/Patient/{e['resource']['id']}")


# ---- batch ---------------------------------------------------------------------------


def test_batch_with_one_bad_entry(fhir):
    a, bad, c = uid(), uid(), uid()
    put_id = "bb-" + uid()
    b = bundle("batch", [
        post_entry({"resourceType": "Patient", "identifier": ident(a)}),
        post_entry({"resourceType": "Patient", "identifier": ident(bad), "birthDate": "yesterday"}),
        put_entry({"resourceType": "Patient", "id": put_id, "identifier": ident(c)}),
        {"request": {"method": "GET", "url": f"Patient/{uid()}"}},
    ])
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "batch-response"
    es = resp["entry"]
    assert len(es) == 4
    assert es[0]["response"]["status"].startswith("201")
    st = es[1]["response"]["status"]
    assert st.split()[0] in ("400", "422"), st
    oo = es[1]["response"]["outcome"]
    assert oo["resourceType"] == "OperationOutcome"
    assert any("birthDate" in x for i in oo["issue"] for x in i.get("expression", []) + i.get("location", [])), oo
    assert es[2]["response"]["status"].startswith("201")
    assert es[3]["response"]["status"].startswith("404")
    assert count(fhir, "Patient", a) == 1
    assert count(fhir, "Patient", bad) == 0
    assert count(fhir, "Patient", c) == 1
    assert fhir.read("Patient", put_id)["identifier"] == ident(c)


def test_batch_entries_are_independent_precondition(fhir):
    existing = fhir.create({"resourceType": "Patient", "identifier": ident(uid()), "gender": "male"})
    upd = {k: v for k, v in existing.items() if k != "meta"}
    upd["gender"] = "female"
    a = uid()
    b = bundle("batch", [put_entry(upd, if_match='W/"9"'), post_entry({"resourceType": "Patient", "identifier": ident(a)})])
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    assert es[0]["response"]["status"].startswith("412"), es[0]
    assert es[1]["response"]["status"].startswith("201")
    assert count(fhir, "Patient", a) == 1
    assert fhir.read("Patient", existing["id"])["gender"] == "male"


def test_batch_search_entry(fhir):
    pv = uid()
    fhir.create({"resourceType": "Patient", "identifier": ident(pv)})
    b = bundle("batch", [{"request": {"method": "GET", "url": f"Patient?identifier={SYS}|{pv}"}}])
    r = fhir.post("", b)
    assert r.status_code == 200
    found = r.json()["entry"][0]["resource"]
    assert found["type"] == "searchset" and len(found["entry"]) == 1


# ---- bundles that cannot be processed ---------------------------------------------------


def test_bundle_of_other_type_is_rejected(fhir):
    pv = uid()
    b = bundle("collection", [{"resource": {"resourceType": "Patient", "identifier": ident(pv)}}])
    outcome(fhir.post("", b), (400, 422))
    assert count(fhir, "Patient", pv) == 0


def test_bundle_entry_without_request(fhir):
    pv = uid()
    b = bundle("transaction", [{"resource": {"resourceType": "Patient", "identifier": ident(pv)}}])
    oo = outcome(fhir.post("", b), (400, 422))
    assert "entry[0]" in str(oo)
    assert count(fhir, "Patient", pv) == 0


def test_not_a_bundle_posted_to_base(fhir):
    pv = uid()
    outcome(fhir.post("", {"resourceType": "Patient", "identifier": ident(pv)}), (400, 422))
    assert count(fhir, "Patient", pv) == 0


def test_malformed_bundle_json(fhir):
    outcome(fhir.post("", '{"resourceType":"Bundle","type":"batch","entry":[{'), 400)


def test_empty_transaction(fhir):
    r = fhir.post("", {"resourceType": "Bundle", "type": "transaction"})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "transaction-response"
