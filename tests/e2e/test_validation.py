"""Every error path of a write or a request: each answers 400/404/405/412/
413/415/422 with an OperationOutcome that says what and where, in JSON
(never HTML, never a crash), and a failed write stores nothing."""

import json

import pytest

from concordlib import outcome, uid

SYS = "urn:concord-e2e:validation"


def stored(fhir, type_, ident):
    b = fhir.search(type_, {"identifier": f"{SYS}|{ident}"})
    return len(b.get("entry", []))


def patient_with(ident, **fields):
    p = {"resourceType": "Patient", "identifier": [{"system": SYS, "value": ident}]}
    p.update(fields)
    return p


# (name, body builder(ident) -> str|dict, statuses, expected expression or None)
BAD_PATIENTS = [
    ("unknown element", lambda i: patient_with(i, favouriteColour="blue"), (400, 422), "Patient.favouriteColour"),
    ("boolean as string", lambda i: patient_with(i, active="yes"), (400, 422), "Patient.active"),
    ("array for a single element", lambda i: patient_with(i, gender=["male"]), (400, 422), "Patient.gender"),
    ("object for a repeating element", lambda i: patient_with(i, name={"family": "X"}), (400, 422), "Patient.name"),
    ("nested wrong kind", lambda i: patient_with(i, name=[{"family": "X", "given": "Y"}]), (400, 422),
     ("Patient.name[0].given", "Patient.name.given")),
    ("nested unknown element", lambda i: patient_with(i, name=[{"family": "X", "surname": "Y"}]), (400, 422),
     ("Patient.name[0].surname", "Patient.name.surname")),
    ("impossible date", lambda i: patient_with(i, birthDate="2013-02-30"), (400, 422), "Patient.birthDate"),
    ("not a date", lambda i: patient_with(i, birthDate="17/05/1980"), (400, 422), "Patient.birthDate"),
    ("dateTime without zone", lambda i: patient_with(i, deceasedDateTime="2020-01-01T10:00:00"), (400, 422),
     "Patient.deceasedDateTime"),
    ("bad code", lambda i: patient_with(i, gender="  male"), (400, 422), "Patient.gender"),
    ("number for a string", lambda i: patient_with(i, name=[{"family": 42}]), (400, 422),
     ("Patient.name[0].family", "Patient.name.family")),
    ("unknown choice type", lambda i: patient_with(i, deceasedString="yes"), (400, 422), "Patient.deceasedString"),
    ("extension without url", lambda i: patient_with(i, extension=[{"valueString": "x"}]), (400, 422),
     ("Patient.extension[0].url", "Patient.extension[0]", "Patient.extension.url", "Patient.extension")),
    ("empty string", lambda i: patient_with(i, gender=""), (400, 422), "Patient.gender"),
    ("null value", lambda i: patient_with(i, active=None), (400, 422), "Patient.active"),
]


@pytest.mark.parametrize("name,build,statuses,where", BAD_PATIENTS, ids=[c[0] for c in BAD_PATIENTS])
def test_invalid_patient_create_is_rejected_and_not_stored(fhir, name, build, statuses, where):
    ident = uid()
    r = fhir.post("Patient", build(ident))
    outcome(r, statuses, expression=where)
    assert stored(fhir, "Patient", ident) == 0


@pytest.mark.parametrize("name,build,statuses,where", BAD_PATIENTS, ids=[c[0] for c in BAD_PATIENTS])
def test_invalid_patient_update_is_rejected_and_not_stored(fhir, name, build, statuses, where):
    ident = uid()
    pid = "v-" + uid()
    body = build(ident)
    body.setdefault("id", pid)
    r = fhir.put(f"Patient/{pid}", body)
    outcome(r, statuses)
    assert fhir.get(f"Patient/{pid}").status_code == 404
    assert stored(fhir, "Patient", ident) == 0


def test_id_of_wrong_json_type_on_put(fhir):
    ident = uid()
    pid = "v-" + uid()
    outcome(fhir.put(f"Patient/{pid}", patient_with(ident, id=42)), (400, 422), expression="Patient.id")
    assert fhir.get(f"Patient/{pid}").status_code == 404
    assert stored(fhir, "Patient", ident) == 0


def test_invalid_update_leaves_existing_version_alone(fhir):
    ident = uid()
    good = fhir.create(patient_with(ident, active=True))
    bad = dict(good, active="no")
    del bad["meta"]
    outcome(fhir.put(f"Patient/{good['id']}", bad), (400, 422), expression="Patient.active")
    cur = fhir.read("Patient", good["id"])
    assert cur == good


def test_malformed_json(fhir):
    ident = uid()
    body = '{"resourceType":"Patient","identifier":[{"system":"%s","value":"%s"}],' % (SYS, ident)
    oo = outcome(fhir.post("Patient", body), 400)
    assert "json" in json.dumps(oo).lower() or "line" in json.dumps(oo).lower()
    assert stored(fhir, "Patient", ident) == 0


def test_duplicate_json_keys(fhir):
    ident = uid()
    body = '{"resourceType":"Patient","gender":"male","gender":"female","identifier":[{"system":"%s","value":"%s"}]}' % (SYS, ident)
    outcome(fhir.post("Patient", body), (400, 422))
    assert stored(fhir, "Patient", ident) == 0


@pytest.mark.parametrize("body", ["[1, 2, 3]", '"Patient"', "42", "null", "true"])
def test_non_object_body(fhir, body):
    outcome(fhir.post("Patient", body), (400, 422))


def test_empty_body(fhir):
    outcome(fhir.post("Patient", b""), (400, 422))


def test_not_utf8(fhir):
    outcome(fhir.post("Patient", b'{"resourceType":"Patient","name":[{"family":"\xff\xfe"}]}'), (400, 422))


def test_unknown_resource_type_in_body(fhir):
    ident = uid()
    body = {"resourceType": "Spaceship", "identifier": [{"system": SYS, "value": ident}]}
    outcome(fhir.post("Patient", body), (400, 422), expression=("resourceType", "Spaceship", "Patient.resourceType"))
    assert stored(fhir, "Patient", ident) == 0


def test_unknown_resource_type_in_url_is_404(fhir):
    ident = uid()
    body = {"resourceType": "Spaceship", "identifier": [{"system": SYS, "value": ident}]}
    outcome(fhir.post("Spaceship", body), 404)


def test_missing_resource_type(fhir):
    ident = uid()
    outcome(fhir.post("Patient", {"identifier": [{"system": SYS, "value": ident}]}), (400, 422))
    assert stored(fhir, "Patient", ident) == 0


def test_resource_type_differs_from_url(fhir):
    ident = uid()
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "identifier": [{"system": SYS, "value": ident}]}
    outcome(fhir.post("Patient", obs), 400)
    assert stored(fhir, "Observation", ident) == 0
    oid = "v-" + uid()
    outcome(fhir.put(f"Patient/{oid}", dict(obs, id=oid)), 400)
    assert fhir.get(f"Observation/{oid}").status_code == 404
    assert fhir.get(f"Patient/{oid}").status_code == 404


@pytest.mark.parametrize("missing", ["status", "code"])
def test_missing_required_element(fhir, missing):
    ident = uid()
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "identifier": [{"system": SYS, "value": ident}]}
    del obs[missing]
    outcome(fhir.post("Observation", obs), (400, 422), expression=f"Observation.{missing}")
    assert stored(fhir, "Observation", ident) == 0


def test_missing_required_nested_element(fhir):
    ident = uid()
    # Observation.component.code is 1..1
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
           "identifier": [{"system": SYS, "value": ident}],
           "component": [{"valueQuantity": {"value": 120}}]}
    outcome(fhir.post("Observation", obs), (400, 422),
            expression=("Observation.component[0].code", "Observation.component.code"))
    assert stored(fhir, "Observation", ident) == 0


def test_bad_code_value_in_required_binding(fhir):
    ident = uid()
    obs = {"resourceType": "Observation", "status": "final ", "code": {"text": "x"},
           "identifier": [{"system": SYS, "value": ident}]}
    outcome(fhir.post("Observation", obs), (400, 422), expression="Observation.status")
    assert stored(fhir, "Observation", ident) == 0


# ---- ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["has_underscore", "a" * 65, "sp%20ace", "bang!"])
def test_invalid_id_in_url(fhir, bad_id):
    ident = uid()
    outcome(fhir.get(f"Patient/{bad_id}"), 400)
    body = patient_with(ident, id=bad_id.replace("%20", " "))
    outcome(fhir.put(f"Patient/{bad_id}", body), 400)
    assert stored(fhir, "Patient", ident) == 0


def test_invalid_id_in_body(fhir):
    ident = uid()
    pid = "v-" + uid()
    r = fhir.put(f"Patient/{pid}", patient_with(ident, id=pid + "!"))
    outcome(r, (400, 422), expression="Patient.id")
    assert fhir.get(f"Patient/{pid}").status_code == 404
    assert stored(fhir, "Patient", ident) == 0


def test_body_id_differs_from_url_id_on_put(fhir):
    # http.html#update: id disagrees with the URL -> 400
    ident = uid()
    a, b = "v-" + uid(), "v-" + uid()
    outcome(fhir.put(f"Patient/{a}", patient_with(ident, id=b)), 400, expression="Patient.id")
    assert fhir.get(f"Patient/{a}").status_code == 404
    assert fhir.get(f"Patient/{b}").status_code == 404
    assert stored(fhir, "Patient", ident) == 0


def test_put_without_id_in_body(fhir):
    # http.html#update: "If no id element is provided ... the server SHALL respond with an HTTP 400"
    ident = uid()
    a = "v-" + uid()
    outcome(fhir.put(f"Patient/{a}", patient_with(ident)), 400, expression="Patient.id")
    assert fhir.get(f"Patient/{a}").status_code == 404
    assert stored(fhir, "Patient", ident) == 0


def test_bad_version_id_in_vread(fhir):
    created = fhir.create(patient_with(uid()))
    r = fhir.get(f"Patient/{created['id']}/_history/notanumber")
    outcome(r, (400, 404))


# ---- content types -------------------------------------------------------------------


def test_unsupported_content_type_is_415(fhir):
    ident = uid()
    r = fhir.post("Patient", json.dumps(patient_with(ident)), headers={"Content-Type": "application/xml"})
    outcome(r, 415)
    assert stored(fhir, "Patient", ident) == 0


def test_plain_json_content_type_accepted(fhir):
    ident = uid()
    r = fhir.post("Patient", json.dumps(patient_with(ident)), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert stored(fhir, "Patient", ident) == 1


# ---- search errors ------------------------------------------------------------------------


def test_unknown_search_parameter_is_400_unless_lenient(fhir):
    ident = uid()
    p = fhir.create(patient_with(ident))
    params = {"identifier": f"{SYS}|{ident}", "shoe-size": "42"}
    outcome(fhir.get("Patient", params=params), 400, text="shoe-size")
    r = fhir.get("Patient", params=params, headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert [e["resource"]["id"] for e in b.get("entry", []) if e.get("search", {}).get("mode") == "match"] == [p["id"]]
    # strict handling is the default and explicit strict behaves the same
    outcome(fhir.get("Patient", params=params, headers={"Prefer": "handling=strict"}), 400)


@pytest.mark.parametrize("params", [
    {"birthdate": "not-a-date"},
    {"birthdate": "xx2013"},
    {"_count": "-1"},
    {"_count": "many"},
    {"gender:fuzzy": "male"},
    {"family:not": "x"},
    {"_sort": "shoe-size"},
    {"_include": "Patient:shoe-size"},
    {"general-practitioner:Observation": "x"},
    {"_summary": "sometimes"},
])
def test_bad_search_values_are_400(fhir, params):
    outcome(fhir.get("Patient", params=params), 400)


def test_post_search_with_wrong_content_type(fhir):
    r = fhir.post("Patient/_search", '{"gender":"male"}', headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 415), r.text
    outcome(r, (400, 415))


# ---- routes and methods ------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "fhir/Patient/x/_history/1/extra",
    "fhir/NoSuchType",
    "fhir/Patient/x/$no-such-operation",
    "fhir/$no-such-operation",
    "nothing-here",
    "fhir/../etc/passwd",
    "index.html",
])
def test_unknown_route_is_404_operation_outcome_json(server, path):
    import requests
    r = requests.get(f"{server.root}/{path}", headers=server.auth_headers, timeout=10)
    outcome(r, 404)
    assert "<html" not in r.text.lower()


@pytest.mark.parametrize("method,path", [
    ("PATCH", "Patient/x"),
    ("DELETE", "metadata"),
    ("PUT", "metadata"),
    ("POST", "metadata"),
    ("DELETE", "_history"),
    ("PUT", "Patient/x/_history/1"),
])
def test_wrong_method_is_405_operation_outcome(fhir, method, path):
    body = json.dumps({"resourceType": "Patient", "id": "x"}) if method in ("PUT", "POST", "PATCH") else None
    r = fhir.request(method, path, body=body)
    outcome(r, 405)
    assert "<html" not in r.text.lower()


def test_wrong_method_on_landing_page_is_not_html_error(server):
    import requests
    r = requests.post(f"{server.root}/", data="x", timeout=10)
    assert r.status_code in (404, 405), r.text
    assert "<html" not in r.text.lower()
    outcome(r, (404, 405))


# ---- robustness: odd but possible input -------------------------------------------------


@pytest.mark.parametrize("name,body,where", [
    ("deep nesting", '{"resourceType":"Patient","extension":[' + '{"url":"http://x","extension":[' * 300
     + ']}' * 300 + ']}', None),
    ("NUL in a string", '{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}', None),
    ("lone surrogate", '{"resourceType":"Patient","name":[{"family":"\\ud800"}]}', None),
    ("integer out of range", '{"resourceType":"Patient","multipleBirthInteger":99999999999}',
     "Patient.multipleBirthInteger"),
    ("decimal for an integer", '{"resourceType":"Patient","multipleBirthInteger":1.5}', "Patient.multipleBirthInteger"),
    ("contained of unknown type", '{"resourceType":"Patient","contained":[{"resourceType":"Spaceship","id":"a"}]}',
     ("Patient.contained[0].resourceType", "Patient.contained[0]")),
    ("narrative that is not xhtml", '{"resourceType":"Patient","text":{"status":"generated","div":"plain"}}',
     "Patient.text.div"),
])
def test_odd_bodies_are_rejected_cleanly(fhir, name, body, where):
    outcome(fhir.post("Patient", body), (400, 422), expression=where)
    assert fhir.get("metadata").status_code == 200


def test_nul_in_url_is_not_a_search(fhir):
    r = fhir.get("Patient/%00abc")
    outcome(r, (400, 404))


def test_long_search_url_is_served(fhir):
    ident = uid()
    p = fhir.create(patient_with(ident))
    ids = [uid() for _ in range(400)] + [p["id"]]  # a 13 kB query string
    r = fhir.get("Patient", params={"_id": ",".join(ids)})
    assert r.status_code == 200, r.text[:300]
    assert [e["resource"]["id"] for e in r.json().get("entry", [])] == [p["id"]]


@pytest.mark.parametrize("where", ["url", "header"])
def test_oversized_request_head_gets_operation_outcome_not_html(server, where):
    import requests
    if where == "url":
        r = requests.get(f"{server.base}/Patient?_id=" + ",".join(uid() for _ in range(3000)),
                         headers=server.auth_headers, timeout=30)
        assert r.status_code in (200, 414), r.status_code
        if r.status_code == 200:
            return
    else:
        r = requests.get(f"{server.base}/metadata", headers={"X-Padding": "p" * 100_000}, timeout=30)
        assert r.status_code in (200, 431), r.status_code
        if r.status_code == 200:
            return
    assert "<html" not in r.text.lower(), f"{r.status_code} answered with an HTML page: {r.text[:200]}"
    outcome(r, (414, 431))
