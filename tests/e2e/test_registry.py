"""The patient registry, end to end: the real server, real clients.

What the people using the registry rely on: a record arriving by any channel
(FHIR REST, HL7 v2 over MLLP) lands on the right person before the write is
acknowledged, and that person is a FHIR Person linking every source Patient;
the uncertain go to a review queue whose decisions (over the API) survive a
batch re-run (`concord link run`); a merge then an unmerge gives back exactly
the link state there was; an HL7 A40 merges; Patient/$match grades its
candidates. Each test has a server of its own (server_factory), so the
registry holds only what the test wrote; both backends.
"""

import json
import subprocess
import uuid

import hl7
import hl7.client
import pytest

from concordlib import Fhir, provision

NHS = "https://fhir.nhs.uk/Id/nhs-number"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def uid():
    return uuid.uuid4().hex[:10]


@pytest.fixture
def reg(server_factory, request):
    """A fresh server of the backend, and a FHIR client for it."""
    s = server_factory.start()
    client = Fhir(s.base, s.token)
    yield s, client
    client.close()


def patient(pid, family, given, dob, gender="male", nhs=None, postcode=None, line=None, ident=None):
    p = {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": given.split()}],
         "birthDate": dob, "gender": gender}
    ids = []
    if nhs:
        ids.append({"system": NHS, "value": nhs})
    if ident:
        ids.append(ident)
    if ids:
        p["identifier"] = ids
    if postcode:
        p["address"] = [{"use": "home", "line": [line or "1 High Street"], "postalCode": postcode}]
    return p


def put(fhir, p):
    r = fhir.put(f"Patient/{p['id']}", p)
    assert r.status_code in (200, 201), r.text
    return r.json()


def person_of(fhir, patient_id):
    """The one Person linking Patient/<id> (through the FHIR search API)."""
    b = fhir.search("Person", {"link": f"Patient/{patient_id}"})
    found = [e["resource"] for e in b.get("entry", [])]
    assert len(found) == 1, (patient_id, found)
    return found[0]


def linked(person):
    return sorted(l["target"]["reference"].split("/", 1)[1] for l in person.get("link", []))


def concord(server, *args):
    r = subprocess.run([server.binary, "link", *args, "--db", server.db], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def mllp(port, message):
    with hl7.client.MLLPClient("127.0.0.1", port) as c:
        raw = c.send_message(message)
    ack = hl7.parse(raw.decode() if isinstance(raw, bytes) else raw)
    return str(ack.segment("MSA")[1])


def adt(trigger, mrn, family, given, dob, sex, nhs=None, postcode="W2 1NY", line="1 High Street", extra=()):
    control = "C" + uid()
    ids = (f"{nhs}^^^NHS^NH~" if nhs else "") + f"{mrn}^^^RYJ^MR"
    return "\r".join([
        f"MSH|^~\\&|PAS|RYJ|CONCORD|NWL|20260301101500||ADT^{trigger}^ADT_A05|{control}|P|2.4",
        f"EVN|{trigger}|20260301101500",
        f"PID|1||{ids}||{family}^{given}^^^||{dob}|{sex}|||{line}^^London^^{postcode}",
        *extra,
    ]) + "\r"


def hl7_patient(fhir, mrn):
    b = fhir.search("Patient", {"identifier": f"{mrn}"})
    found = [e["resource"] for e in b.get("entry", [])]
    assert len(found) == 1, (mrn, found)
    return found[0]


def test_records_from_rest_and_mllp_land_on_the_right_person(reg):
    server, fhir = reg
    # the GP's record, over REST, with an NHS number
    gp = put(fhir, patient("gp-" + uid(), "Smith", "John", "1970-01-02", nhs="9434765919", postcode="W2 1NY"))
    # the hospital's, over MLLP: the same NHS number, the surname in capitals
    mrn1 = "H" + uid()
    assert mllp(server.mllp_port, adt("A28", mrn1, "SMITH", "John", "19700102", "M", nhs="9434765919")) == "AA"
    # an A&E record with no NHS number: the same person by name, birth date, sex and postcode
    mrn2 = "H" + uid()
    assert mllp(server.mllp_port, adt("A28", mrn2, "SMITH", "Jon", "19700102", "M")) == "AA"
    # a social care record over REST, no NHS number, day and month of birth swapped, new postcode
    sc = put(fhir, patient("sc-" + uid(), "Smith", "John", "1970-02-01", postcode="NW6 2AB"))
    # someone else entirely
    other = put(fhir, patient("o-" + uid(), "Okafor", "Ngozi", "1985-11-30", gender="female", postcode="HA0 1AA"))
    h1 = hl7_patient(fhir, mrn1)
    h2 = hl7_patient(fhir, mrn2)
    p = person_of(fhir, gp["id"])
    assert linked(p) == sorted([gp["id"], h1["id"], h2["id"], sc["id"]])
    assert person_of(fhir, h2["id"])["id"] == p["id"]
    # the golden record: the NHS number, the name held by most records, the date of birth most agree on
    assert {"system": NHS, "value": "9434765919"} in p["identifier"]
    assert p["birthDate"] == "1970-01-02"
    assert p["name"][0]["given"] == ["John"]
    assert person_of(fhir, other["id"])["id"] != p["id"]
    # readable by id with its versions, like any resource
    assert fhir.read("Person", p["id"])["id"] == p["id"]
    # and the evidence for each decision
    r = fhir.get(f"$link-person/{h2['id']}")
    assert r.status_code == 200, r.text
    recs = {x["patient"]: x for x in r.json()["records"]}
    assert recs[f"Patient/{h2['id']}"]["decision"] == "link"
    fields = {f["field"]: f for f in recs[f"Patient/{h2['id']}"]["evidence"]["explain"]["fields"]}
    assert fields["birth_date"]["level"] == "exact" and fields["birth_date"]["weight"] > 0
    assert recs[f"Patient/{h1['id']}"]["decision"] == "nhs"


def test_records_from_a_file_import_are_linked_too(reg, tmp_path):
    server, fhir = reg
    gp = put(fhir, patient("gp-" + uid(), "Begum", "Amina", "1948-12-24", "female", nhs="9990000026",
                           postcode="W9 9WP"))
    # a community provider's extract (layout ZC1, docs/synth.md), imported with `concord import`:
    # one client with the NHS number, one without
    f = tmp_path / "ZC1.csv"
    f.write_text(
        "contact_id,patient_id,nhs_number,surname,forename,date_of_birth,gender,postcode,gp_practice_code,"
        "contact_date,contact_time,service,service_description,duration_minutes\n"
        f"K{uid()},C{uid()},9990000026,BEGUM,Amina,1948-12-24,F,W9 9WP,Z90001,2025-01-02,10:00,DN,District nursing,30\n"
        f"K{uid()},C{uid()},,Begum,Amina,1948-12-24,F,W9 9WP,Z90001,2025-01-03,11:00,DN,District nursing,30\n")
    r = subprocess.run([server.binary, "import", "--db", server.db, "--mapping", "community-ZC1", "--quiet", str(f)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    p = person_of(fhir, gp["id"])
    assert len(linked(p)) == 3, p
    decisions = sorted(x["decision"] for x in fhir.get(f"$link-person/{gp['id']}").json()["records"])
    assert decisions == ["link", "new", "nhs"], decisions


def test_a40_merge_over_mllp_merges_the_persons(reg):
    server, fhir = reg
    mrn_keep, mrn_old = "H" + uid(), "H" + uid()
    assert mllp(server.mllp_port, adt("A28", mrn_keep, "NOWAK", "Jan", "19710304", "M", postcode="W9 9WP")) == "AA"
    assert mllp(server.mllp_port, adt("A28", mrn_old, "NOWACK", "Janusz", "19710403", "M", postcode="SW6 1AA",
                                  line="22 Acacia Avenue")) == "AA"
    keep, old = hl7_patient(fhir, mrn_keep), hl7_patient(fhir, mrn_old)
    assert person_of(fhir, keep["id"])["id"] != person_of(fhir, old["id"])["id"]
    msg = "\r".join([
        f"MSH|^~\\&|PAS|RYJ|CONCORD|NWL|20260301101500||ADT^A40^ADT_A39|C{uid()}|P|2.4",
        "EVN|A40|20260301101500",
        f"PID|1||{mrn_keep}^^^RYJ^MR||NOWAK^Jan||19710304|M",
        f"MRG|{mrn_old}^^^RYJ^MR",
    ]) + "\r"
    assert mllp(server.mllp_port, msg) == "AA"
    p = person_of(fhir, keep["id"])
    assert linked(p) == sorted([keep["id"], old["id"]])
    h = fhir.get("$link-history").json()["events"]
    assert any(e["action"] == "a40-merge" for e in h), h


def test_review_accept_and_reject_survive_link_run(reg):
    server, fhir = reg
    # two women with one name and birth date, different NHS numbers: uncertain
    a1 = put(fhir, patient("a1-" + uid(), "Jones", "Mary", "1980-05-16", "female", nhs="9434765870"))
    a2 = put(fhir, patient("a2-" + uid(), "Jones", "Mary", "1980-05-16", "female", nhs="4010232137"))
    b1 = put(fhir, patient("b1-" + uid(), "Khan", "Imran", "1962-02-03", nhs="9990000018"))
    b2 = put(fhir, patient("b2-" + uid(), "Khan", "Imran", "1962-02-03", nhs="9990000026"))
    r = fhir.get("$link-review")
    assert r.status_code == 200, r.text
    items = {i["record"]["patient"]: i for i in r.json()["items"]}
    assert set(items) == {f"Patient/{a2['id']}", f"Patient/{b2['id']}"}, items
    ia, ib = items[f"Patient/{a2['id']}"], items[f"Patient/{b2['id']}"]
    assert ia["candidate"]["patient"] == f"Patient/{a1['id']}"
    show = fhir.get(f"$link-review/{ia['id']}").json()
    f = {x["field"]: x for x in show["fields"]}
    assert f["nhs_number"]["level"] == "disagree" and f["nhs_number"]["weight"] < 0
    assert f["family"]["record"] == "Jones" and f["family"]["candidate"] == "Jones"
    alice, bob = _as(server, "dr.alice"), _as(server, "dr.bob")
    r = alice.post(f"$link-review/{ia['id']}/$accept", {"user": "somebody.else", "note": "same woman"})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    r = bob.post(f"$link-review/{ib['id']}/$reject", {})
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    assert bob.post(f"$link-review/{ib['id']}/$accept", {}).status_code == 409
    assert person_of(fhir, a1["id"])["id"] == person_of(fhir, a2["id"])["id"]
    assert person_of(fhir, b1["id"])["id"] != person_of(fhir, b2["id"])["id"]
    before = concord(server, "dump")
    out = concord(server, "run")
    assert "0 records moved" in out, out
    out = concord(server, "run", "--rebuild")
    assert "0 records moved" in out, out
    assert concord(server, "dump") == before
    assert person_of(fhir, a1["id"])["id"] == person_of(fhir, a2["id"])["id"]
    assert person_of(fhir, b1["id"])["id"] != person_of(fhir, b2["id"])["id"]
    assert fhir.get("$link-review").json()["open"] == 0
    # who decided is in the history
    h = fhir.get("$link-history").json()["events"]
    assert {("accept", "dr.alice"), ("reject", "dr.bob")} <= {(e["action"], e["who"]) for e in h}


def _as(server, user):
    """A registry administrator signed in as `user`: the history names who
    decided from the sign-in, never from a field in the request."""
    return Fhir(server.base, provision(server.binary, server.db, user=user, role="admin", org="E2E01"))


def test_merge_then_unmerge_returns_identical_state(reg):
    server, fhir = reg
    a = put(fhir, patient("a-" + uid(), "Smith", "John", "1970-01-02", nhs="9434765919", postcode="W2 1NY"))
    a2 = put(fhir, patient("a2-" + uid(), "Smith", "John", "1970-01-02", postcode="W2 1NY"))
    b = put(fhir, patient("b-" + uid(), "Okafor", "Ngozi", "1985-11-30", "female", postcode="NW6 2AB"))
    pa, pb = person_of(fhir, a["id"]), person_of(fhir, b["id"])
    state0 = concord(server, "dump")

    def bodies():
        out = {}
        for pid in (pa["id"], pb["id"]):
            r = fhir.read("Person", pid)
            r.pop("meta")
            out[pid] = json.dumps(r, sort_keys=True)
        return out

    bodies0 = bodies()
    carol, dave = _as(server, "dr.carol"), _as(server, "dr.dave")
    r = carol.post("$link-merge", {"keep": f"Person/{pb['id']}", "retire": f"Patient/{a['id']}",
                                   "reason": "same person, confirmed by phone"})
    assert r.status_code == 200, r.text
    event = r.json()["event"]
    assert linked(fhir.read("Person", pb["id"])) == sorted([a["id"], a2["id"], b["id"]])
    retired = fhir.read("Person", pa["id"])
    assert retired["active"] is False
    assert retired["link"][0]["target"]["reference"] == f"Person/{pb['id']}"
    assert concord(server, "dump") != state0
    r = dave.post(f"$link-unmerge/{event}", {})
    assert r.status_code == 200, r.text
    assert concord(server, "dump") == state0
    assert bodies() == bodies0
    assert dave.post(f"$link-unmerge/{event}", {}).status_code == 409
    # the history says who did what
    h = fhir.get("$link-history", params={"person": f"Person/{pb['id']}"}).json()["events"]
    acts = [(e["action"], e["who"]) for e in h]
    assert ("merge", "dr.carol") in acts and ("unmerge", "dr.dave") in acts
    # and a batch run keeps them apart
    concord(server, "run")
    assert person_of(fhir, a["id"])["id"] == pa["id"]


def test_match_returns_graded_candidates(reg):
    server, fhir = reg
    a = put(fhir, patient("a-" + uid(), "Smith", "John", "1970-01-02", nhs="9434765919", postcode="W2 1NY"))
    put(fhir, patient("b-" + uid(), "Okafor", "Ngozi", "1985-11-30", "female", postcode="NW6 2AB"))

    def match(p, **kw):
        params = [{"name": "resource", "resource": p}]
        if "only_certain" in kw:
            params.append({"name": "onlyCertainMatches", "valueBoolean": kw["only_certain"]})
        params.append({"name": "count", "valueInteger": 5})
        r = fhir.post("Patient/$match", {"resourceType": "Parameters", "parameter": params})
        assert r.status_code == 200, r.text
        b = r.json()
        assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
        return b

    b = match({"resourceType": "Patient", "identifier": [{"system": NHS, "value": "943 476 5919"}],
               "name": [{"family": "Smith", "given": ["John"]}], "birthDate": "1970-01-02"})
    assert b["total"] == 1
    e = b["entry"][0]
    assert e["resource"]["id"] == a["id"] and e["search"]["mode"] == "match"
    grade = {x["url"]: x.get("valueCode") for x in e["search"]["extension"]}[MATCH_GRADE]
    assert grade == "certain" and e["search"]["score"] >= 0.999
    weaker = {"resourceType": "Patient", "name": [{"family": "Smith", "given": ["Jon"]}],
              "birthDate": "1970-01-02", "gender": "male"}
    b = match(weaker)
    grades = [{x["url"]: x.get("valueCode") for x in e["search"]["extension"]}[MATCH_GRADE] for e in b["entry"]]
    assert grades and grades[0] in ("probable", "possible"), b
    assert match(weaker, only_certain=True)["total"] == 0
    # a number shared with a different person: shown, and certainly not them
    b = match({"resourceType": "Patient", "identifier": [{"system": NHS, "value": "9434765919"}],
               "name": [{"family": "Brown", "given": ["Alice"]}], "birthDate": "1990-03-04", "gender": "female"})
    grades = [{x["url"]: x.get("valueCode") for x in e["search"]["extension"]}[MATCH_GRADE] for e in b["entry"]]
    assert grades == ["certainly-not"], b
    r = fhir.post("Patient/$match", {"resourceType": "Parameters", "parameter": []})
    assert r.status_code == 400
