"""Attacks on the access controls of issue 6, tried as an attacker would,
over real sockets: SQL injection in every search parameter, session
fixation, CSRF, path traversal, oversized and malformed tokens, brute-force
sign-in, and a forged relationship. Each must be refused, logged in the
access log, and leak nothing.

Which refusals the access log holds, and as what (checked below):
  - a search refused as invalid (400) or forbidden (403): action `search`,
    outcome 4, the user;
  - a request with credentials that do not authenticate (a bad or unknown
    token, an unknown or ended session cookie): `login-failed`, outcome 4,
    user `anonymous`, the method and path in the request detail;
  - a cookie-authenticated change without the session's CSRF token:
    `login-failed`, outcome 4, with the session's user;
  - a password sign-in refused, or refused while locked (429):
    `login-failed`, outcome 4, with the user name tried.
  - what the router refuses by itself: an unknown route or resource type
    (404), a method a path does not support (405), an invalid id (400).
"""
import base64
import json
import os
import secrets
import socket
import subprocess
import time
from urllib.parse import quote

import pytest
import requests

from concordlib import Fhir, uid

CLI_TIMEOUT = 120
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"


# ---- helpers ---------------------------------------------------------------------


def cli(server_or_bin, db, *args, stdin=None, env=None):
    r = subprocess.run([server_or_bin, *args, "--db", db], input=stdin, capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, env=env)
    assert r.returncode == 0, f"concord {' '.join(args)}: {r.returncode} {r.stderr.strip()}"
    return r.stdout.strip()


def add_user(server, name, role, org=None, password=None, patient=None):
    args = ["user", "add", name, "--role", role]
    if org:
        args += ["--org", org]
    if patient:
        args += ["--patient", patient]
    env = dict(os.environ)
    if password:
        args.append("--password-stdin")
        env["CONCORD_PWHASH"] = "fast"  # docs/auth.md: tests only, a cheap hash to make
    else:
        args.append("--no-password")
    cli(server.binary, server.db, *args, stdin=(password + "\n") if password else None, env=env)
    if not password:
        return cli(server.binary, server.db, "token", "create", "--user", name)
    return None


def officer(server):
    return Fhir(server.base, add_user(server, "po-" + uid()[:10], "privacy-officer"))


def log_events(po, **params):
    """The access log (newest first), as a privacy officer reads it."""
    r = po.get("$access-log", params={"_count": 1000, **params})
    assert r.status_code == 200, r.text[:300]
    return [e["resource"] for e in r.json().get("entry", [])]


def request_of(ev):
    for en in ev.get("entity", []):
        for d in en.get("detail", []):
            if d.get("type") == "request":
                return d.get("valueString", "")
    return ""


def action_of(ev):
    for c in ev.get("subtype", []):
        if c.get("system") == "https://concord.example/CodeSystem/audit-action":
            return c.get("code")
    return None


def user_of(ev):
    return ev["agent"][0]["who"]["display"]


def wait_logged(po, pred, timeout=5.0, **params):
    """Reads and searches are logged within the writer's flush interval:
    poll until an event satisfying `pred` is there."""
    deadline = time.monotonic() + timeout
    while True:
        evs = [e for e in log_events(po, **params) if pred(e)]
        if evs or time.monotonic() > deadline:
            return evs
        time.sleep(0.05)


def raw_http(server, method, path, headers=(), body=b""):
    """One request over a plain socket, bytes exactly as given (no client-side
    normalisation of the path, no checks on header bytes). Returns
    (status, headers dict lower-cased, body bytes); status 0 if the server
    closed the connection without answering."""
    lines = [f"{method} ".encode() + (path if isinstance(path, bytes) else path.encode()) + b" HTTP/1.1",
             f"Host: 127.0.0.1:{server.port}".encode(), b"Connection: close"]
    for h in headers:
        lines.append(h if isinstance(h, bytes) else h.encode("utf-8"))
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
    resp = b"".join(chunks)
    if not resp:
        return 0, {}, b""
    head, _, rest = resp.partition(b"\r\n\r\n")
    hl = head.split(b"\r\n")
    status = int(hl[0].split()[1])
    hdrs = {}
    for h in hl[1:]:
        k, _, v = h.partition(b":")
        hdrs[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out, buf = b"", rest
        while buf:
            size_s, _, buf = buf.partition(b"\r\n")
            size = int(size_s.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2:]
        rest = out
    return status, hdrs, rest


def alive(server):
    r = Fhir(server.base).get("metadata")
    assert r.status_code == 200, "the server no longer answers"


# ---- a small world ---------------------------------------------------------------


class Place:
    """A practice with a GP, one registered patient (visible to the GP) and
    one patient registered elsewhere (not visible), each with an Observation,
    an Encounter and a Condition."""

    def __init__(self, server):
        self.server = server
        self.feed = Fhir(server.base, server.token)
        self.org = "AT" + uid()[:6].upper()
        self.visible_ids, self.hidden_ids = set(), set()
        # two people the registry must not take for one (it would join their records)
        self.visible_patient = self._patient(self.org, self.visible_ids, "Zed", "female", "1950-05-06")
        self.hidden_patient = self._patient("ELSE" + uid()[:4].upper(), self.hidden_ids, "Olu", "male", "1983-11-23")

    def _patient(self, gp_org, ids, given, gender, born):
        p = self.feed.create({"resourceType": "Patient", "name": [{"family": uid()[:10], "given": [given]}],
                              "gender": gender, "birthDate": born,
                              "generalPractitioner": [{"reference": f"Organization/org-{gp_org}"}]})["id"]
        ids.add(p)
        subj = {"reference": f"Patient/{p}"}
        for res in (
            {"resourceType": "Observation", "status": "final", "subject": subj,
             "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
             "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
             "effectiveDateTime": "2024-02-03T10:00:00Z"},
            {"resourceType": "Encounter", "status": "finished", "subject": subj,
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "period": {"start": "2024-02-03T09:00:00Z", "end": "2024-02-03T10:00:00Z"}},
            {"resourceType": "Condition", "subject": subj,
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
             "onsetDateTime": "2020-01-01"},
        ):
            ids.add(self.feed.create(res)["id"])
        return p

    def gp(self, tag=""):
        name = f"atk-gp{tag}-{uid()[:8]}"
        return name, Fhir(self.server.base, add_user(self.server, name, "gp", self.org))


@pytest.fixture(scope="module")
def place(server):
    return Place(server)


@pytest.fixture
def attach(server, request):
    request.node._concord_servers = [server]


@pytest.fixture(scope="module")
def capability(server):
    r = Fhir(server.base).get("metadata")
    assert r.status_code == 200
    return {res["type"]: res["searchParam"] for res in r.json()["rest"][0]["resource"]}


# ---- SQL injection in every search parameter --------------------------------------

PAYLOADS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "1' OR '1'='1' --",
    "x'); DROP TABLE resource; --",
    "x'; DELETE FROM acc_rel; --",
    '" OR ""="',
    "1 OR 1=1",
    "') OR ('a'='a",
    "' UNION SELECT rtype, id, body, 1, 1, 1 FROM resource --",
    "\\' OR 1=1 --",
    "'||(SELECT body FROM resource LIMIT 1)||'",
    "1); SELECT pg_sleep(10); --",
    "' AND 1=(SELECT 1 FROM pg_sleep(10)) --",
    "%",
    "_",
    "*",
    "%' OR 1=1 --",
    "\u00e9' OR '\u00e9'='\u00e9",
]
TYPES = ["Patient", "Observation", "Encounter", "Condition"]
# parameters every search takes besides the type's own (FHIR search, "Parameters for all resources"
# and "Search result parameters")
RESULT_PARAMS = ["_sort", "_count", "_offset", "_include", "_revinclude", "_summary", "_total", "_elements"]


def variants(name, ptype, payload):
    """(parameter name, value, exclusive): exclusive when the payload, taken
    literally, can match nothing in the world (so any match is an injection
    or a wildcard that escaped)."""
    # a comma separates values that are ORed (FHIR search 3.1.1.4.1): a
    # payload with one asks for its parts too, which may match
    exclusive = "," not in payload
    out = [(name, payload, exclusive)]
    if ptype == "string":
        out += [(f"{name}:contains", payload, exclusive), (f"{name}:exact", payload, exclusive)]
    elif ptype == "token":
        out += [(name, f"{payload}|{payload}", exclusive), (name, f"http://loinc.org|{payload}", exclusive),
                (f"{name}:not", payload, False)]
    elif ptype == "reference":
        out += [(name, f"Patient/{payload}", exclusive), (f"{name}:missing", payload, False)]
    elif ptype == "date":
        out += [(name, f"ge{payload}", exclusive)]
    elif ptype == "quantity":
        out += [(name, f"5|{payload}|mg", exclusive)]
    elif ptype == "uri":
        out += [(f"{name}:below", payload, exclusive)]
    return out


@pytest.mark.parametrize("rtype", TYPES)
@pytest.mark.parametrize("pi", range(len(PAYLOADS)), ids=[f"payload{i}" for i in range(len(PAYLOADS))])
def test_sql_injection_in_every_search_parameter(server, attach, place, capability, rtype, pi):
    payload = PAYLOADS[pi]
    name, gp = place.gp("sqli")
    sleepy = "sleep" in payload
    tried, refused, problems = 0, 0, []
    params = [(p["name"], p["type"]) for p in capability[rtype]] + [(p, "special") for p in RESULT_PARAMS]
    assert len(params) > 20, params
    for pname, ptype in params:
        for qname, value, exclusive in variants(pname, ptype, payload):
            t0 = time.monotonic()
            r = gp.get(rtype, params={qname: value})
            took = time.monotonic() - t0
            tried += 1
            where = f"GET {rtype}?{qname}={value!r}"
            if r.status_code >= 500 or r.status_code not in (200, 400):
                problems.append(f"{where}: {r.status_code} {r.text[:200]}")
                continue
            if sleepy and took > 8:
                problems.append(f"{where}: took {took:.1f}s (an injected sleep ran?)")
            body = r.json()
            if r.status_code == 400:
                refused += 1
                if body.get("resourceType") != "OperationOutcome":
                    problems.append(f"{where}: 400 without an OperationOutcome")
                continue
            assert body.get("resourceType") == "Bundle", body
            got = {e["resource"]["id"] for e in body.get("entry", []) if "resource" in e
                   and e.get("search", {}).get("mode") != "outcome"}
            leaked = got - place.visible_ids
            if leaked:
                problems.append(f"{where}: returned records the user may not see: {sorted(leaked)[:5]}")
            elif got and exclusive:
                problems.append(f"{where}: the value matched {len(got)} record(s): taken as SQL or a wildcard")
    # the parameter name itself
    for qname in (f"name' OR '1'='1", "_id) OR (1=1", "code:contains' --", f"{payload}"):
        r = gp.get(rtype, params={qname: "x"})
        tried += 1
        if r.status_code != 400 or r.json().get("resourceType") != "OperationOutcome":
            problems.append(f"GET {rtype}?{qname!r}=x: {r.status_code} {r.text[:200]}")
        else:
            refused += 1
    assert not problems, "\n".join(problems[:40])
    # nothing was dropped or deleted: the world is still there, relationships too
    assert gp.get(f"Patient/{place.visible_patient}").status_code == 200
    assert gp.get(f"Patient/{place.hidden_patient}").status_code == 403
    # every refusal is in the access log, as this user's refused search
    po = officer(server)
    deadline = time.monotonic() + 5
    while True:
        r = po.get("$access-log", params={"user": name, "outcome": "4", "_count": 1})
        logged = r.json()["total"]
        if logged >= refused or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert logged >= refused, f"{refused} searches refused, {logged} refusals logged"


def test_injection_through_post_search_and_bundles(server, attach, place):
    """The same payloads through POST _search (a form body) and a batch Bundle's
    search entries: refused or empty, never another patient's data."""
    _, gp = place.gp("sqlipost")
    for payload in PAYLOADS:
        body = "name=" + quote(payload, safe="") + "&family:contains=" + quote(payload, safe="")
        r = gp.post("Patient/_search", body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code in (200, 400), (payload, r.status_code, r.text[:200])
        if r.status_code == 200:
            got = {e["resource"]["id"] for e in r.json().get("entry", [])}
            assert got <= place.visible_ids, (payload, r.text[:300])
            assert not got or "," in payload, (payload, "matched: taken as SQL or a wildcard")
        b = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Observation?code={quote(payload, safe='')}"}},
            {"request": {"method": "GET", "url": f"Patient?name:contains={quote(payload, safe='')}"}}]}
        r = gp.post("", b)
        assert r.status_code in (200, 400), (payload, r.status_code, r.text[:200])
        text = r.text
        for hid in place.hidden_ids:
            assert hid not in text, (payload, "a hidden record in a batch answer")
    alive(server)


# ---- sessions: fixation and CSRF --------------------------------------------------


def login(server, user, password, cookie=None):
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = f"concord_session={cookie}"
    return requests.post(f"{server.root}/auth/login", data=json.dumps({"user": user, "password": password}),
                         headers=headers, timeout=60)


def session_cookie(resp):
    sc = resp.headers.get("Set-Cookie", "")
    assert sc.startswith("concord_session="), sc
    return sc.split(";")[0].split("=", 1)[1], sc


def with_cookie(server, sid, method, path, csrf=None, body=None, path_is_fhir=True):
    h = {"Cookie": f"concord_session={sid}", "Accept": "application/fhir+json"}
    if csrf is not None:
        h["X-CSRF-Token"] = csrf
    data = None
    if body is not None:
        data = json.dumps(body)
        h["Content-Type"] = "application/fhir+json"
    url = f"{server.base}/{path}" if path_is_fhir else f"{server.root}{path}"
    return requests.request(method, url, headers=h, data=data, timeout=60)


@pytest.fixture(scope="module")
def password_gp(server, place):
    name = "atk-pw-" + uid()[:8]
    password = "correct horse " + uid()[:8]
    add_user(server, name, "gp", place.org, password=password)
    return name, password


def test_session_fixation(server, attach, place, password_gp):
    """A session id chosen by the attacker before sign-in never becomes valid:
    sign-in issues a new one, every time; sign-out ends it."""
    user, password = password_gp
    planted = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    assert len(planted) == 43
    r = login(server, user, password, cookie=planted)
    assert r.status_code == 200, r.text
    sid, header = session_cookie(r)
    assert sid != planted and len(sid) == 43
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in header, header
    csrf = r.json()["csrf"]
    # the planted id is not a session, before or after
    marker = uid()
    assert with_cookie(server, planted, "GET", f"Patient/{marker}").status_code == 401
    assert with_cookie(server, planted, "GET", "/auth/session", path_is_fhir=False).status_code == 401
    # the issued one is
    assert with_cookie(server, sid, "GET", f"Patient/{place.visible_patient}").status_code == 200
    who = with_cookie(server, sid, "GET", "/auth/session", path_is_fhir=False)
    assert who.status_code == 200 and who.json()["user"] == user
    # every sign-in a new id, even presenting a valid one
    r2 = login(server, user, password, cookie=sid)
    sid2, _ = session_cookie(r2)
    assert sid2 not in (sid, planted)
    # an attacker's own valid session planted in the victim's browser stays the attacker's
    att_name, att_pw = "atk-att-" + uid()[:8], "attacker pw " + uid()[:8]
    add_user(server, att_name, "practice-nurse", "ELSEWHERE1", password=att_pw)
    att_sid, _ = session_cookie(login(server, att_name, att_pw))
    r3 = login(server, user, password, cookie=att_sid)
    victim_sid, _ = session_cookie(r3)
    assert victim_sid != att_sid
    who = with_cookie(server, att_sid, "GET", "/auth/session", path_is_fhir=False)
    assert who.status_code == 200 and who.json()["user"] == att_name
    # sign-out ends the session: the cookie is worthless afterwards
    out = with_cookie(server, sid, "POST", "/auth/logout", csrf=csrf, path_is_fhir=False)
    assert out.status_code == 200, out.text
    assert "Max-Age=0" in out.headers.get("Set-Cookie", "")
    assert with_cookie(server, sid, "GET", f"Patient/{place.visible_patient}").status_code == 401
    # the refusal of the planted id is in the access log
    po = officer(server)
    evs = wait_logged(po, lambda e: request_of(e) == f"GET /fhir/Patient/{marker}", user="anonymous")
    assert evs and evs[0]["outcome"] == "4" and action_of(evs[0]) == "login-failed", evs
    assert "session" in evs[0].get("outcomeDesc", ""), evs[0]


def test_csrf(server, attach, place, password_gp):
    """Cookie-authenticated POST/PUT/DELETE without the session's
    X-CSRF-Token, or with a wrong one, are refused (403) and change nothing;
    with it they go through. The refusals are logged as the session's user."""
    user, password = password_gp
    r = login(server, user, password)
    sid, _ = session_cookie(r)
    csrf = r.json()["csrf"]
    other = login(server, user, password)
    other_csrf = other.json()["csrf"]
    feed = place.feed
    code = "csrf-" + uid()[:10]
    obs = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{place.visible_patient}"},
           "code": {"coding": [{"system": "urn:e2e:csrf", "code": code}]}}
    target = feed.create(dict(obs, code={"coding": [{"system": "urn:e2e:csrf", "code": code + "-t"}]}))
    tid = target["id"]

    def stored(c):
        return feed.get("Observation", params={"code": f"urn:e2e:csrf|{c}", "_summary": "count"}).json()["total"]

    since = time.time()
    for bad in (None, "", "x" * 32, other_csrf, csrf[:-1], csrf + "A", csrf.lower() if csrf.lower() != csrf else csrf.upper()):
        assert with_cookie(server, sid, "POST", "Observation", csrf=bad, body=obs).status_code == 403
        assert with_cookie(server, sid, "PUT", f"Observation/{tid}", csrf=bad,
                           body=dict(target, status="amended")).status_code == 403
        assert with_cookie(server, sid, "DELETE", f"Observation/{tid}", csrf=bad).status_code == 403
        assert with_cookie(server, sid, "POST", "", csrf=bad, body={
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": obs, "request": {"method": "POST", "url": "Observation"}}]}).status_code == 403
    assert stored(code) == 0
    after = feed.read("Observation", tid)
    assert after["meta"]["versionId"] == "1" and after["status"] == "final"
    # sign-out is a change too
    assert with_cookie(server, sid, "POST", "/auth/logout", path_is_fhir=False).status_code == 403
    assert with_cookie(server, sid, "GET", "/auth/session", path_is_fhir=False).status_code == 200
    # reading needs no token; writing with the right one works
    assert with_cookie(server, sid, "GET", f"Observation/{tid}").status_code == 200
    r = with_cookie(server, sid, "POST", "Observation", csrf=csrf, body=obs)
    assert r.status_code == 201, r.text
    assert stored(code) == 1
    # logged: refused, with the request and who it was
    po = officer(server)
    evs = wait_logged(po, lambda e: request_of(e) == f"DELETE /fhir/Observation/{tid}")
    assert len(evs) >= 7 and all(e["outcome"] == "4" for e in evs), evs[:2]
    assert all("CSRF" in e.get("outcomeDesc", "") for e in evs), evs[0]
    assert {user_of(e) for e in evs} == {user}, {user_of(e) for e in evs}


# ---- path traversal ---------------------------------------------------------------

TRAVERSALS = [
    "/fhir/../../etc/passwd",
    "/fhir/../../../../../../etc/passwd",
    "/fhir/%2e%2e/%2e%2e/etc/passwd",
    "/fhir/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/fhir/..%2f..%2f..%2fetc%2fpasswd",
    "/fhir/Patient/../../../../etc/passwd",
    "/fhir/Patient/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/fhir/Patient/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/fhir/Patient/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/fhir/Patient/..%5c..%5c..%5cetc%5cpasswd",
    "/fhir/Patient/....//....//....//etc/passwd",
    "/fhir/Patient/..;/..;/etc/passwd",
    "/fhir/Patient/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd",  # overlong UTF-8: answered as valid JSON
    "/fhir/Patient/%00/../../etc/passwd",
    "/fhir/Patient/x%00.json",
    "/fhir/Patient/%2e%2e",
    "/fhir/Patient/%2e%2e/_history",
    "/fhir/Patient/x/_history/..%2f..%2f..%2fetc%2fpasswd",
    "/fhir/..%2fPatient",
    "/fhir/%2e%2e",
    "/fhir/etc%2fpasswd",
    "/fhir/Patient%2f..%2f..%2fetc%2fpasswd",
    "/fhir/Patient%00",
    "/fhir/file:%2f%2f%2fetc%2fpasswd",
    "/fhir//etc/passwd",
    "/fhir/Patient/$everything/../../etc/passwd",
    "/fhir/$import/../../etc/passwd",
]
PASSWD = b"root:x:0:0"


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused(server, attach, place, path):
    """400 or 404 with an OperationOutcome; nothing from the file system."""
    status, hdrs, body = raw_http(server, "GET", path, [f"Authorization: Bearer {place.feed.token}"])
    assert status in (400, 404), (status, body[:300])
    assert PASSWD not in body and b"/bin/" not in body, body[:300]
    assert hdrs.get("content-type", "").startswith("application/fhir+json"), hdrs
    assert json.loads(body)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
                                  "/auth/../../etc/passwd", "/auth/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd"])
def test_path_traversal_outside_the_api(server, attach, path):
    status, _, body = raw_http(server, "GET", path)
    assert status in (400, 404), (status, body[:300])
    assert PASSWD not in body


def test_path_traversal_refusals_are_logged(server, attach, place):
    name, gp = place.gp("trav")
    marker = uid()[:12]
    paths = [f"/fhir/..%2f{marker}%2f..%2fetc%2fpasswd", f"/fhir/Patient/..%2f{marker}%2fetc%2fpasswd",
             f"/fhir/Patient/{marker}/../../etc/passwd", f"/fhir/{marker}/../../etc/passwd"]
    for p in paths:
        status, _, _ = raw_http(server, "GET", p, [f"Authorization: Bearer {gp.token}"])
        assert status in (400, 404)
    po = officer(server)
    evs = wait_logged(po, lambda e: marker in request_of(e), user=name)
    assert len(evs) >= len(paths), [request_of(e) for e in evs]
    assert all(e["outcome"] == "4" for e in evs)


# ---- oversized and malformed Authorization headers --------------------------------


def _bad_headers(token):
    alt = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [
        ("oversized-10k", f"Authorization: Bearer {'A' * 10240}".encode()),
        ("oversized-token-600", f"Authorization: Bearer cct_{'A' * 600}".encode()),
        ("basic", b"Authorization: Basic dXNlcjpwYXNzd29yZA=="),
        ("no-scheme", f"Authorization: {token}".encode()),
        ("wrong-scheme", f"Authorization: Token {token}".encode()),
        ("scheme-glued", f"Authorization: Bearer{token}".encode()),
        ("scheme-only", b"Authorization: Bearer"),
        ("scheme-space", b"Authorization: Bearer "),
        ("empty", b"Authorization: "),
        ("truncated", f"Authorization: Bearer {token[:-1]}".encode()),
        ("truncated-half", f"Authorization: Bearer {token[:24]}".encode()),
        ("extended", f"Authorization: Bearer {token}A".encode()),
        ("two-tokens", f"Authorization: Bearer {token} {token}".encode()),
        ("wrong-prefix", f"Authorization: Bearer xyz_{token[4:]}".encode()),
        ("altered", f"Authorization: Bearer {alt}".encode()),
        ("base64-not-url", f"Authorization: Bearer cct_{'+/' * 21}A".encode()),
        ("padding", f"Authorization: Bearer cct_{'A' * 42}=".encode()),
        ("unicode", ("Authorization: Bearer cct_" + "\u00e9" * 43).encode("utf-8")),
        ("unicode-mixed", ("Authorization: Bearer " + token[:20] + "\u2603" + token[21:]).encode("utf-8")),
        ("latin1", b"Authorization: Bearer cct_" + b"\xe9" * 43),
        ("control-soh", f"Authorization: Bearer {token[:20]}\x01{token[21:]}".encode()),
        ("control-del", f"Authorization: Bearer {token[:20]}\x7f{token[21:]}".encode()),
        ("control-esc", f"Authorization: Bearer \x1b[31m{token[5:]}".encode()),
        ("nul-inside", f"Authorization: Bearer {token[:20]}".encode() + b"\x00" + token[21:].encode()),
        ("sql", b"Authorization: Bearer cct_' OR '1'='1' --AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ]


def test_malformed_and_oversized_tokens(server, attach, place):
    """Each refused with 401 (WWW-Authenticate: Bearer, an OperationOutcome),
    the server unharmed, and each refusal logged as a failed sign-in."""
    name, gp = place.gp("tok")
    cases = _bad_headers(gp.token)
    markers = {}
    for label, header in cases:
        marker = f"{label}-{uid()[:8]}"
        markers[label] = marker
        status, hdrs, body = raw_http(server, "GET", f"/fhir/Patient/{marker}", [header])
        # NUL and other bytes no HTTP field may hold (RFC 9110 5.5) may be
        # refused by the HTTP layer itself (400) before authentication
        ok = (401, 400) if label.startswith(("nul", "control")) else (401,)
        assert status in ok, (label, status, body[:300])
        if status == 401:
            assert hdrs.get("www-authenticate", "").startswith("Bearer"), (label, hdrs)
            oo = json.loads(body)
            assert oo["resourceType"] == "OperationOutcome", (label, body[:200])
            assert place.visible_patient.encode() not in body
        alive(server)
    # the same token, well formed, still works (nothing was locked or broken)
    assert gp.get(f"Patient/{place.visible_patient}").status_code == 200
    assert raw_http(server, "GET", f"/fhir/Patient/{place.visible_patient}",
                    [f"Authorization: bearer {gp.token}"])[0] == 200  # the scheme is case-insensitive
    po = officer(server)
    time.sleep(0.2)
    evs = log_events(po, user="anonymous")
    logged = {request_of(e).rsplit("/", 1)[-1]: e for e in evs if request_of(e).startswith("GET /fhir/Patient/")}
    missing = []
    for label, marker in markers.items():
        ev = logged.get(marker)
        if ev is None:
            if not label.startswith(("nul", "control")):
                missing.append(label)
            continue
        assert ev["outcome"] == "4" and action_of(ev) == "login-failed", (label, ev)
    assert not missing, f"refused without a trace in the access log: {missing}"


@pytest.mark.xfail(strict=True, reason=(
    "a valid token followed by a NUL byte and garbage authenticates: libmicrohttpd 0.9.75 stores a header "
    "value as a C string (the length it reports, MHD_lookup_connection_value_n, stops at the NUL too), so "
    "concord never sees the malformed rest; no privilege is gained (the token is needed), but the header is "
    "not refused as malformed"))
def test_token_followed_by_a_nul_byte_is_refused(server, attach, place):
    _, gp = place.gp("nul")
    status, _, body = raw_http(server, "GET", f"/fhir/Patient/{place.visible_patient}",
                               [f"Authorization: Bearer {gp.token}".encode() + b"\x00garbage"])
    assert status in (400, 401), (status, body[:200])


# ---- brute-force sign-in ----------------------------------------------------------


@pytest.mark.slow
def test_brute_force_sign_in_is_throttled(server_factory, attach):
    """docs/auth.md: five failures for a name within 15 minutes lock it (429),
    and while locked even the right password is refused; unknown names are
    locked alike; twenty failures from one address lock the address. Every
    attempt is in the access log."""
    s = server_factory.start()

    def attempt(u, p):
        return requests.post(f"{s.root}/auth/login", json={"user": u, "password": p}, timeout=60)

    user, pw = "bf-" + uid()[:8], "the right one " + uid()[:6]
    other, other_pw = "bf2-" + uid()[:8], "another right one " + uid()[:6]
    add_user(s, user, "gp", "BF001", password=pw)
    add_user(s, other, "gp", "BF001", password=other_pw)
    for i in range(5):
        r = attempt(user, f"guess number {i}")
        assert r.status_code == 401, (i, r.text)
        assert "wrong user name or password" in r.text
    r = attempt(user, "guess number 5")
    assert r.status_code == 429, r.text
    r = attempt(user, pw)
    assert r.status_code == 429 and "Set-Cookie" not in r.headers, r.text
    assert "try again" in r.text
    # someone else from the same address is not locked out by it
    assert attempt(other, other_pw).status_code == 200
    # an unknown name: the same answers, the same lock
    ghost = "bf-ghost-" + uid()[:6]
    for i in range(5):
        r = attempt(ghost, f"guess number {i}")
        assert r.status_code == 401 and "wrong user name or password" in r.text, r.text
    assert attempt(ghost, "guess number 5").status_code == 429
    # the address: 10 failures so far; 10 more under fresh names lock it
    for i in range(10):
        assert attempt(f"bf-spray-{i}-{uid()[:4]}", "Winter2024!!").status_code == 401
    r = attempt(other, other_pw)
    assert r.status_code == 429 and "address" in r.text, r.text
    # logged: every attempt on the locked name, refused
    po_tok = add_user(s, "bf-po-" + uid()[:6], "privacy-officer")
    evs = cli_audit(s, "--user", user)
    fails = [e for e in evs if action_of(e) == "login-failed"]
    assert len(fails) >= 7 and all(e["outcome"] == "4" for e in fails), [e.get("outcomeDesc") for e in fails]
    assert sum("too many failed sign-ins" in e.get("outcomeDesc", "") for e in fails) >= 2
    po = Fhir(s.base, po_tok)
    evs = log_events(po, user=ghost)
    assert len(evs) >= 6 and all(action_of(e) == "login-failed" for e in evs)


def cli_audit(s, *args):
    out = cli(s.binary, s.db, "audit", "list", "--json", "--limit", "1000", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# ---- a forged relationship ---------------------------------------------------------


def test_duplicate_registration_does_not_open_a_persons_record(server, attach):
    """Any role that may create a Patient can register a copy of a person
    (same NHS number and demographics) at its own organisation, and the
    registry links the copy to the person. The relationship that copy
    establishes is the user's own claim (acc_rel.claimed, src/access/rel.c):
    it opens the copy, not the person's other records; for those the user
    breaks the glass, which is flagged for review."""
    feed = Fhir(server.base, server.token)
    org = "FG" + uid()[:6].upper()
    ed = Fhir(server.base, add_user(server, "atk-ed-" + uid()[:8], "ed-clinician", org))
    nhs = _nhs_number()
    demo = {"identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
            "name": [{"family": "Forge" + uid()[:6], "given": ["Ada"]}], "birthDate": "1961-03-04",
            "gender": "female"}
    victim = feed.create({"resourceType": "Patient", **demo,
                          "generalPractitioner": [{"reference": "Organization/org-ELSEWHERE"}]})["id"]
    secret = feed.create({"resourceType": "Observation", "status": "final", "code": {"text": "private"},
                          "subject": {"reference": f"Patient/{victim}"}})["id"]
    assert ed.get(f"Observation/{secret}").status_code == 403
    r = ed.post("Patient", {"resourceType": "Patient", **demo,
                            "managingOrganization": {"reference": f"Organization/org-{org}"}})
    assert r.status_code == 201
    copy = r.json()["id"]
    time.sleep(0.3)
    assert ed.get(f"Observation/{secret}").status_code == 403
    assert ed.get(f"Patient/{victim}").status_code == 403
    assert secret not in ed.get("Observation", params={"patient": victim}).text
    # the copy itself is theirs to read, and what they write in it
    assert ed.get(f"Patient/{copy}").status_code == 200
    note = ed.post("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "seen"},
                                   "subject": {"reference": f"Patient/{copy}"}})
    assert note.status_code == 201, note.text
    assert ed.get(f"Observation/{note.json()['id']}").status_code == 200
    # a feed's relationship (the system account) still spans the person
    feed.create({"resourceType": "Encounter", "status": "in-progress",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
                 "subject": {"reference": f"Patient/{copy}"},
                 "serviceProvider": {"reference": f"Organization/org-{org}"},
                 "period": {"start": "2024-01-01T10:00:00Z"}})
    time.sleep(0.3)
    assert ed.get(f"Observation/{secret}").status_code == 200


def _nhs_number():
    import random
    while True:
        d = [random.randint(0, 9) for _ in range(9)]
        c = 11 - sum(x * (10 - i) for i, x in enumerate(d)) % 11
        c = 0 if c == 11 else c
        if c != 10:
            return "".join(map(str, d)) + str(c)


# ---- probing hidden records through writes -----------------------------------------


def test_conditional_create_does_not_reveal_hidden_records(server, attach, place):
    _, gp = place.gp("ine")
    hidden_obs = [i for i in place.hidden_ids if i != place.hidden_patient]
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "probe"},
            "subject": {"reference": f"Patient/{place.visible_patient}"}}
    for hid in hidden_obs:
        r = gp.post("Observation", body, headers={"If-None-Exist": f"_id={hid}"})
        assert hid not in r.text, f"If-None-Exist _id={hid}: {r.status_code} {r.text[:200]}"
    r = gp.post("Observation", body, headers={"If-None-Exist": "code=http://loinc.org|8867-4"})
    assert r.status_code in (200, 201), r.text[:200]
    assert place.hidden_patient not in r.text


def test_writes_cannot_reach_into_a_hidden_record(server, attach, place):
    """A write lands in the record of the patient its compartment names
    (Observation.performer, Appointment.participant.actor, ...), and must
    need the same relationship as writing through `subject`."""
    _, gp = place.gp("reach")
    hid = place.hidden_patient
    feed = place.feed
    attempts = [
        {"resourceType": "Observation", "status": "final", "code": {"text": "reach"},
         "performer": [{"reference": f"Patient/{hid}"}]},
        {"resourceType": "Appointment", "status": "booked",
         "participant": [{"actor": {"reference": f"Patient/{hid}"}, "status": "accepted"}]},
        {"resourceType": "Condition", "code": {"text": "reach"}, "subject": {"reference": f"Group/{uid()[:8]}"},
         "asserter": {"reference": f"Patient/{hid}"}},
    ]
    for res in attempts:
        before = feed.get(f"Patient/{hid}/$everything").json().get("total")
        r = gp.post(res["resourceType"], res)
        assert r.status_code == 403, (res["resourceType"], r.status_code, r.text[:200])
        assert feed.get(f"Patient/{hid}/$everything").json().get("total") == before
    # the visible patient, by the same elements: allowed
    vis = place.visible_patient
    r = gp.post("Appointment", {"resourceType": "Appointment", "status": "booked",
                                "participant": [{"actor": {"reference": f"Patient/{vis}"}, "status": "accepted"}]})
    assert r.status_code == 201, r.text[:200]
