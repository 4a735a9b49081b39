"""HL7 v2 over MLLP, end to end: the real server, python3-hl7's MLLP client.

What a hospital PAS relies on: an AA only once the message is durably
stored; the same ACK again (and nothing stored twice) for a duplicate
delivery; a precise AE/AR with an ERR segment for bad content, and the
message kept in quarantine; nothing ACKed lost across kill -9.
"""

import random
import socket
import threading
import time
import uuid

import hl7
import hl7.client
import hl7.exceptions
import pytest

from concordlib import Fhir

NHS = "https://fhir.nhs.uk/Id/nhs-number"


def uid():
    return uuid.uuid4().hex[:12]


def pv1(visit, klass="I", method="21", location="WARD1^BED2^^RYJ"):
    f = [""] * 46
    f[1], f[2], f[3], f[4] = "1", klass, location, method
    f[7] = "C12345^Jones^Alice^^^Dr"
    f[19] = f"{visit}^^^RYJ^VN"
    f[44] = "20260301101500"
    return "PV1|" + "|".join(f[1:])


def adt(control, visit, mrn, trigger="A01", dob="19500101", nhs="9990000018", family="Smith",
        location="WARD1^BED2^^RYJ"):
    return "\r".join([
        f"MSH|^~\\&|PAS|RYJ|CONCORD|NWL|20260301101500||ADT^{trigger}^ADT_A01|{control}|P|2.4",
        f"EVN|{trigger}|20260301101500",
        f"PID|1||{nhs}^^^NHS^NH~{mrn}^^^RYJ^MR||{family}^John^^^Mr||{dob}|M|||1 High Street^^London^^W2 1NY",
        pv1(visit, location=location),
        "DG1|1||E11.9^Type 2 diabetes mellitus without complications^I10",
    ]) + "\r"


def send(port, message):
    with hl7.client.MLLPClient("127.0.0.1", port) as c:
        raw = c.send_message(message)
    return hl7.parse(raw.decode() if isinstance(raw, bytes) else raw)


def msa(ack):
    seg = ack.segment("MSA")
    return str(seg[1]), str(seg[2])


def encounters(fhir, visit):
    b = fhir.search("Encounter", {"identifier": f"urn:concord:id:RYJ:VN|{visit}"})
    return [e["resource"] for e in b.get("entry", [])]


def test_admission_is_acknowledged_after_it_is_stored(server, fhir):
    control, visit, mrn = f"C{uid()}", f"V{uid()}", f"H{uid()}"
    ack = send(server.mllp_port, adt(control, visit, mrn))
    assert msa(ack) == ("AA", control)
    assert str(ack.segment("MSH")[9][0][0]) == "ACK"
    enc = encounters(fhir, visit)
    assert len(enc) == 1, enc
    assert enc[0]["class"]["code"] == "IMP"
    assert enc[0]["meta"]["source"].startswith("urn:concord:ingest-message:")
    subject = enc[0]["subject"]["reference"]
    patient = fhir.read("Patient", subject.split("/")[1])
    assert {"system": NHS, "value": "9990000018"} in [
        {"system": i.get("system"), "value": i.get("value")} for i in patient["identifier"]]
    conds = fhir.search("Condition", {"encounter": f"Encounter/{enc[0]['id']}"})
    codes = [c["resource"]["code"]["coding"][0]["code"] for c in conds.get("entry", [])]
    assert "E11.9" in codes


def test_duplicate_delivery_gets_the_same_ack_and_stores_nothing_twice(server, fhir):
    control, visit, mrn = f"C{uid()}", f"V{uid()}", f"H{uid()}"
    first = send(server.mllp_port, adt(control, visit, mrn))
    again = send(server.mllp_port, adt(control, visit, mrn))
    assert msa(first) == ("AA", control)
    assert str(again) == str(first)  # the very same acknowledgement
    enc = encounters(fhir, visit)
    assert len(enc) == 1 and enc[0]["meta"]["versionId"] == "1"


def test_a08_before_its_a01_is_stored_not_dropped(server, fhir):
    visit, mrn = f"V{uid()}", f"H{uid()}"
    assert msa(send(server.mllp_port, adt(f"C{uid()}", visit, mrn, trigger="A08")))[0] == "AA"
    assert len(encounters(fhir, visit)) == 1
    # the A01 puts the patient in another bed: the same Encounter, a new version
    a01 = adt(f"C{uid()}", visit, mrn, trigger="A01", location="WARD1^BED7^^RYJ")
    assert msa(send(server.mllp_port, a01))[0] == "AA"
    enc = encounters(fhir, visit)
    assert len(enc) == 1 and enc[0]["meta"]["versionId"] == "2"
    assert "BED7" in str(enc[0]["location"])


def test_a_repeat_with_nothing_new_stores_no_new_version(server, fhir, concord_bin):
    """Not a duplicate (a new MSH-10), but nothing in it changes what is
    stored: the message is kept, the resources keep their version and say
    which message made them."""
    visit, mrn = f"V{uid()}", f"H{uid()}"
    first, again = f"C{uid()}", f"C{uid()}"
    assert msa(send(server.mllp_port, adt(first, visit, mrn, trigger="A08")))[0] == "AA"
    source = encounters(fhir, visit)[0]["meta"]["source"]
    assert msa(send(server.mllp_port, adt(again, visit, mrn, trigger="A08")))[0] == "AA"
    enc = encounters(fhir, visit)
    assert len(enc) == 1 and enc[0]["meta"]["versionId"] == "1"
    assert enc[0]["meta"]["source"] == source
    # the repeat is kept as a message of its own (the one after the first)
    import subprocess
    key = int(source.rsplit(":", 1)[1]) + 1
    shown = subprocess.run([concord_bin, "quarantine", "show", str(key), "--db", server.db],
                           capture_output=True, text=True).stdout
    assert f"control:   {again}" in shown and "status:    stored" in shown, shown


def test_every_resource_says_where_it_came_from(server, fhir):
    """meta.source names the message; meta.tag the care setting (acute, a
    hospital feed) and the sending organisation (MSH-4); both searchable."""
    control, visit, mrn = f"C{uid()}", f"V{uid()}", f"H{uid()}"
    assert msa(send(server.mllp_port, adt(control, visit, mrn)))[0] == "AA"
    enc = encounters(fhir, visit)[0]
    patient = fhir.read("Patient", enc["subject"]["reference"].split("/")[1])
    conds = fhir.search("Condition", {"encounter": f"Encounter/{enc['id']}"})["entry"]
    for res in [enc, patient] + [c["resource"] for c in conds]:
        tags = {(t["system"], t["code"]) for t in res["meta"]["tag"]}
        assert tags == {("https://concord.example/CodeSystem/care-setting", "acute"),
                        ("https://fhir.nhs.uk/Id/ods-organization-code", "RYJ")}, res["meta"]
        assert res["meta"]["source"] == enc["meta"]["source"]
    found = fhir.search("Encounter", {"_source": enc["meta"]["source"]})
    assert [e["resource"]["id"] for e in found["entry"]] == [enc["id"]]
    found = fhir.search("Encounter", {"identifier": f"urn:concord:id:RYJ:VN|{visit}",
                                      "_tag": "https://fhir.nhs.uk/Id/ods-organization-code|RYJ"})
    assert len(found.get("entry", [])) == 1


def test_bad_date_gets_ae_with_err_and_is_quarantined(server, fhir):
    control = f"C{uid()}"
    ack = send(server.mllp_port, adt(control, f"V{uid()}", f"H{uid()}", dob="1950XX01"))
    assert msa(ack) == ("AE", control)
    err = ack.segment("ERR")
    text = str(err)
    assert "PID" in text and "102" in text  # PID-7, HL7 table 0357 code 102: data type error


def test_not_hl7_gets_ar(server):
    ack = send(server.mllp_port, "this is not an HL7 message\r")
    code, _ = msa(ack)
    assert code == "AR"


def test_unsupported_message_type_gets_ar(server):
    control = f"C{uid()}"
    m = adt(control, f"V{uid()}", f"H{uid()}").replace("ADT^A01^ADT_A01", "ZZZ^Z99")
    ack = send(server.mllp_port, m)
    assert msa(ack) == ("AR", control)


def test_unterminated_frame_is_quarantined_not_lost(server, concord_bin):
    control = f"C{uid()}"
    s = socket.create_connection(("127.0.0.1", server.mllp_port))
    s.sendall(b"\x0b" + adt(control, f"V{uid()}", f"H{uid()}").encode())  # no FS CR
    s.close()
    out = ""
    for _ in range(50):
        import subprocess
        out = subprocess.run([concord_bin, "quarantine", "list", "--db", server.db, "--limit", "1000"],
                             capture_output=True, text=True).stdout
        if "unterminated frame" in out:
            break
        time.sleep(0.1)
    assert "unterminated frame" in out, out


def test_messages_stored_under_many_connections(server, fhir):
    visits = [f"V{uid()}" for _ in range(40)]
    results = {}

    def sender(chunk):
        with hl7.client.MLLPClient("127.0.0.1", server.mllp_port) as c:
            for v in chunk:
                control = f"C{uid()}"
                raw = c.send_message(adt(control, v, f"H{uid()}"))
                results[v] = msa(hl7.parse(raw.decode()))

    threads = [threading.Thread(target=sender, args=(visits[i::8],)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(r[0] == "AA" for r in results.values()) and len(results) == 40
    for v in visits:
        assert len(encounters(fhir, v)) == 1


def test_kill9_while_streaming_loses_no_acknowledged_message(server_factory):
    s = server_factory.start()
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n):
        while not stop.is_set():
            try:
                with hl7.client.MLLPClient("127.0.0.1", s.mllp_port) as c:
                    while not stop.is_set():
                        visit, control = f"V{uid()}", f"C{uid()}"
                        raw = c.send_message(adt(control, visit, f"H{uid()}"))
                        if not raw:  # the server died before answering: not acknowledged
                            break
                        if msa(hl7.parse(raw.decode()))[0] == "AA":
                            with lock:
                                acked.append((control, visit))
            except (OSError, ConnectionError, hl7.exceptions.ParseException):
                time.sleep(0.05)

    for round_ in range(3):
        threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
        [t.start() for t in threads]
        time.sleep(random.uniform(0.3, 1.0))
        s.kill()  # kill -9 while messages are in flight
        stop.set()
        [t.join() for t in threads]
        stop.clear()
        s.restart()
    fhir = Fhir(s.base, s.token)
    try:
        assert len(acked) > 20, "the senders should have had messages acknowledged"
        for control, visit in acked:
            enc = encounters(fhir, visit)
            assert len(enc) == 1, f"ACKed message {control} (visit {visit}) is not stored exactly once: {enc}"
            assert enc[0]["meta"]["versionId"] == "1"
    finally:
        fhir.close()
