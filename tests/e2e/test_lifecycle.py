"""The server process: durability across kill -9, graceful shutdown on
SIGTERM (also with a request in flight), and the request-body limit. Each
test starts its own server(s) on a fresh database of the backend."""

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from concordlib import Fhir, outcome, uid

pytestmark = pytest.mark.slow


def _count(fhir, system):
    b = fhir.search("Patient", {"identifier": f"{system}|", "_summary": "count"})
    return b["total"]


# ---- kill -9 --------------------------------------------------------------------------


def test_kill9_right_after_201_loses_nothing(server_factory):
    s = server_factory.start()
    fhir = Fhir(s.base, s.token)
    created = fhir.create({"resourceType": "Patient", "name": [{"family": "Durable"}], "birthDate": "1950-01-01"})
    s.kill()  # kill -9, immediately after the 201
    fhir.close()
    s.restart()
    fhir = Fhir(s.base, s.token)
    assert fhir.read("Patient", created["id"]) == created
    fhir.close()


def test_kill9_keeps_updates_deletes_and_transactions(server_factory):
    s = server_factory.start()
    fhir = Fhir(s.base, s.token)
    sys_ = f"urn:concord-e2e:durable:{uid()}"
    p = fhir.create({"resourceType": "Patient", "gender": "male"})
    body = {k: v for k, v in p.items() if k != "meta"}
    r = fhir.put(f"Patient/{p['id']}", dict(body, gender="female"))
    assert r.status_code == 200
    gone = fhir.create({"resourceType": "Patient"})
    assert fhir.delete(f"Patient/{gone['id']}").status_code in (200, 204)
    b = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": sys_, "value": str(i)}]},
         "request": {"method": "POST", "url": "Patient"}} for i in range(50)]}
    r = fhir.post("", b)
    assert r.status_code == 200, r.text
    s.kill()
    fhir.close()
    s.restart()
    fhir = Fhir(s.base, s.token)
    cur = fhir.read("Patient", p["id"])
    assert cur["gender"] == "female" and cur["meta"]["versionId"] == "2"
    assert fhir.get(f"Patient/{gone['id']}").status_code == 410
    assert _count(fhir, sys_) == 50
    fhir.close()


def test_kill9_under_concurrent_writes_loses_no_acknowledged_write(server_factory):
    s = server_factory.start()
    sys_ = f"urn:concord-e2e:kill9:{uid()}"
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def writer(n):
        sess = requests.Session()
        i = 0
        while not stop.is_set():
            res = {"resourceType": "Patient", "identifier": [{"system": sys_, "value": f"{n}-{i}"}]}
            try:
                r = sess.post(f"{s.base}/Patient", data=json.dumps(res),
                              headers={"Content-Type": "application/fhir+json", **s.auth_headers}, timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 201:
                with lock:
                    acked.append(r.json())
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    s.kill()
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert len(acked) > 10, "the writers did not get going"
    s.restart()
    fhir = Fhir(s.base, s.token)
    missing = [a["id"] for a in acked if fhir.get(f"Patient/{a['id']}").status_code != 200]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged creates lost after kill -9"
    # and nothing half-written: every stored one reads back whole
    total = _count(fhir, sys_)
    assert total >= len(acked)
    fhir.close()


# ---- SIGTERM ---------------------------------------------------------------------------


def test_sigterm_when_idle_exits_0(server_factory):
    s = server_factory.start()
    requests.get(f"{s.base}/metadata", timeout=10)
    t0 = time.monotonic()
    rc = s.stop(timeout=10)
    assert rc == 0, f"exit status {rc} after SIGTERM"
    assert time.monotonic() - t0 < 5


def test_sigterm_with_idle_keep_alive_connection_exits_promptly(server_factory):
    s = server_factory.start()
    sess = requests.Session()
    assert sess.get(f"{s.base}/metadata", timeout=10).status_code == 200  # connection stays open
    t0 = time.monotonic()
    rc = s.stop(timeout=10)
    sess.close()
    assert rc == 0
    assert time.monotonic() - t0 < 5, "SIGTERM waited for an idle keep-alive connection"


def _big_transaction(system, n):
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": str(i)}],
                      "name": [{"family": "Inflight", "given": ["Sig", "Term"]}], "birthDate": "1960-02-29"},
         "request": {"method": "POST", "url": "Patient"}} for i in range(n)]}).encode()


def _check_after_restart(s, system, n, response):
    """The transaction either completed (200, all n stored) or was refused
    cleanly (nothing stored)."""
    s.restart()
    fhir = Fhir(s.base, s.token)
    try:
        stored = _count(fhir, system)
    finally:
        fhir.close()
    if response is not None and response[0] == 200:
        assert stored == n, f"transaction answered 200 but {stored} of {n} entries are stored"
    else:
        assert stored == 0, f"transaction not acknowledged ({response}) but {stored} of {n} entries are stored"
    return stored


def test_sigterm_during_large_transaction_completes_it(server_factory):
    s = server_factory.start()
    system = f"urn:concord-e2e:inflight:{uid()}"
    n = 20000 if server_factory.backend == "sqlite" else 4000  # about a second of work either way
    body = _big_transaction(system, n)
    result = {}

    def client():
        u = urlsplit(s.base)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        try:
            conn.request("POST", u.path, body=body,
                         headers={"Content-Type": "application/fhir+json", **s.auth_headers})
            result["sent"] = time.monotonic()
            resp = conn.getresponse()
            data = resp.read()
            result["response"] = (resp.status, data)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = repr(e)
        finally:
            conn.close()

    t = threading.Thread(target=client)
    t.start()
    while "sent" not in result and t.is_alive():
        time.sleep(0.005)
    time.sleep(0.2)  # the server is now working through 20,000 entries
    s.terminate()
    t.join(timeout=120)
    rc = s.wait(timeout=60)
    assert rc == 0, f"exit status {rc} after SIGTERM with a transaction in flight"
    s.restart()
    fhir = Fhir(s.base, s.token)
    try:
        stored = _count(fhir, system)
    finally:
        fhir.close()
    assert "error" not in result, (
        f"the in-flight transaction got no response ({result.get('error')}); "
        f"after restart {stored} of its {n} entries are stored")
    status, data = result["response"]
    assert status == 200, f"in-flight transaction answered {status}: {data[:300]!r}"
    resp = json.loads(data)
    assert resp["type"] == "transaction-response" and len(resp["entry"]) == n
    assert stored == n, f"transaction answered 200 but {stored} of {n} entries are stored"


def test_sigterm_during_slow_upload(server_factory):
    """SIGTERM while a client is half-way through uploading a transaction:
    the server may finish it (200, all stored) or drop/refuse it (nothing
    stored: the client got no acknowledgement), and must exit 0."""
    s = server_factory.start()
    system = f"urn:concord-e2e:upload:{uid()}"
    n = 2000
    body = _big_transaction(system, n)
    u = urlsplit(s.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("POST", u.path)
    conn.putheader("Content-Type", "application/fhir+json")
    for name, value in s.auth_headers.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    half = len(body) // 2
    conn.send(body[:half])
    time.sleep(0.2)
    s.terminate()
    time.sleep(0.3)
    response = None
    try:
        conn.send(body[half:])
        resp = conn.getresponse()
        response = (resp.status, resp.read())
    except (OSError, http.client.HTTPException):
        pass  # dropped: acceptable, as long as nothing was stored
    finally:
        conn.close()
    rc = s.wait(timeout=30)
    assert rc == 0, f"exit status {rc} after SIGTERM during an upload"
    if response is not None:
        status, data = response
        # completed, or refused with an OperationOutcome
        if status != 200:
            assert status in (503,), f"refused with {status}: {data[:300]!r}"
            assert json.loads(data)["resourceType"] == "OperationOutcome"
    _check_after_restart(s, system, n, response)


# ---- request body limit ------------------------------------------------------------------------


def _patient_of_size(system, value, size):
    base = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], "name": [{"text": ""}]}
    pad = size - len(json.dumps(base).encode())
    assert pad >= 0
    base["name"][0]["text"] = "x" * pad
    out = json.dumps(base).encode()
    assert len(out) == size
    return out


def test_oversized_body_is_413(server_factory):
    s = server_factory.start(extra_args=["--max-body", "4096"])
    fhir = Fhir(s.base, s.token)
    system = f"urn:concord-e2e:max:{uid()}"
    try:
        r = fhir.post("Patient", _patient_of_size(system, "big", 5000))
        outcome(r, 413)
        r = fhir.post("Patient", _patient_of_size(system, "huge", 2_000_000))
        outcome(r, 413)
        r = fhir.put("Patient/big-put", json.dumps({"resourceType": "Patient", "id": "big-put",
                                                    "identifier": [{"system": system, "value": "bp"}],
                                                    "name": [{"text": "y" * 5000}]}))
        outcome(r, 413)
        bundle = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": f"b{i}"}]},
             "request": {"method": "POST", "url": "Patient"}} for i in range(100)]})
        assert len(bundle) > 4096
        outcome(fhir.post("", bundle), 413)
        assert _count(fhir, system) == 0
        assert fhir.get("Patient/big-put").status_code == 404
        # at the limit is accepted, and the server is still serving
        r = fhir.post("Patient", _patient_of_size(system, "fits", 4096))
        assert r.status_code == 201, r.text
        r = fhir.post("Patient", _patient_of_size(system, "small", 300))
        assert r.status_code == 201, r.text
        assert _count(fhir, system) == 2
    finally:
        fhir.close()
