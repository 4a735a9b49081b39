"""Helpers for the end-to-end tests: a concord server process and a small
FHIR client over `requests`, plus assertions shared by the test modules.

Nothing here knows how concord works inside: it speaks HTTP and reads the
process's exit status and stderr, as an operator or a FHIR client would.

Authentication: every FHIR request except GET /fhir/metadata needs
`Authorization: Bearer <token>`. Before a server first starts on a database,
`provision()` adds a machine principal (E2E_USER, role `system`: reads every
record, writes as organisation E2E_ORG) with the CLI, the local
administrator's path, and creates an API token for it; the server keeps it as
`token` and `auth_headers`, and `Fhir(base, token)` sends it.
"""

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests

FHIR_JSON = "application/fhir+json"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 120.0

E2E_USER = "e2e-system"
E2E_ROLE = "system"
E2E_ORG = "E2E01"


def uid():
    """A fresh identifier value, unique per call."""
    return uuid.uuid4().hex


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(Exception):
    pass


def provision(binary, db, user=E2E_USER, role=E2E_ROLE, org=E2E_ORG):
    """Add the tests' machine principal to the database with the CLI (an
    existing one is kept) and return a new API token for it."""
    add = subprocess.run(
        [binary, "user", "add", user, "--role", role, "--org", org, "--no-password", "--db", db],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )
    if add.returncode != 0 and "already exists" not in add.stderr:
        raise ServerError(f"`concord user add {user}` exited with {add.returncode}: {add.stderr.strip()}")
    tok = subprocess.run(
        [binary, "token", "create", "--user", user, "--db", db],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )
    token = tok.stdout.strip()
    if tok.returncode != 0 or not token or len(token.split()) != 1:
        raise ServerError(f"`concord token create --user {user}` exited with {tok.returncode}: "
                          f"stdout {tok.stdout!r}, stderr {tok.stderr.strip()!r}")
    return token


def bearer(token):
    """The request headers that authenticate with `token` ({} for None)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class ConcordServer:
    """One `concord serve` process on a database, stderr captured to a file."""

    def __init__(self, binary, db, logdir, backend="sqlite", extra_args=()):
        self.binary = binary
        self.db = db
        self.logdir = logdir
        self.backend = backend
        self.extra_args = list(extra_args)
        self.proc = None
        self.token = None  # the API token of E2E_USER, made before the first start
        self.port = None
        self.mllp_port = None
        self.starts = 0
        self.log_path = os.path.join(str(logdir), "stderr.log")
        self.import_dir = os.path.join(str(logdir), "import")  # what $import may read

    @property
    def root(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self):
        return f"{self.root}/fhir"

    @property
    def auth_headers(self):
        return bearer(self.token)

    def log_tail(self, lines=200):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                text = f.read().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def start(self):
        """Start on a free port and wait until GET /fhir/metadata answers 200
        (the one FHIR request that needs no token). Before the first start,
        provisions the tests' principal and its token (`self.token`)."""
        if self.token is None:
            self.token = provision(self.binary, self.db)
        last = None
        for _attempt in range(3):
            self.port = free_port()
            self.mllp_port = free_port()
            self.starts += 1
            with open(self.log_path, "a") as log:
                log.write(f"==== start #{self.starts}: port {self.port} ====\n")
                log.flush()
                self.proc = subprocess.Popen(
                    [self.binary, "serve", "--db", self.db, "--http", f"127.0.0.1:{self.port}",
                     "--mllp", f"127.0.0.1:{self.mllp_port}", "--import-dir", self.import_dir, *self.extra_args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"concord exited with {self.proc.returncode} during start-up"
                    break
                try:
                    r = requests.get(f"{self.base}/metadata", timeout=2)
                    if r.status_code == 200:
                        return self
                    last = f"/fhir/metadata answered {r.status_code}"
                except requests.RequestException as e:
                    last = str(e)
                time.sleep(0.05)
            else:
                self.kill()
                raise ServerError(f"concord did not answer within {START_TIMEOUT}s: {last}\n{self.log_tail()}")
            # exited: maybe the port was taken between free_port() and bind; retry
        raise ServerError(f"concord would not start: {last}\n{self.log_tail()}")

    def terminate(self):
        """Send SIGTERM (does not wait)."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout=STOP_TIMEOUT):
        """Wait for exit; returns the exit status or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit status (None if it hung, then killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.terminate()
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
        return rc

    def kill(self):
        """SIGKILL (kill -9) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def restart(self):
        self.start()
        return self


class Fhir:
    """A minimal FHIR REST client bound to one base URL ([base] = .../fhir)."""

    def __init__(self, base, token=None):
        self.base = base.rstrip("/")
        self.token = token
        self.s = requests.Session()
        self.s.headers["Accept"] = FHIR_JSON
        if token:
            self.s.headers["Authorization"] = f"Bearer {token}"

    @property
    def auth_headers(self):
        """The headers this client authenticates with ({} without a token)."""
        return bearer(self.token)

    def close(self):
        self.s.close()

    def url(self, path):
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return f"{self.base}/{path.lstrip('/')}" if path else self.base

    def request(self, method, path, body=None, headers=None, **kw):
        h = dict(headers or {})
        data = kw.pop("data", None)
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", FHIR_JSON)
        return self.s.request(method, self.url(path), data=data, headers=h, timeout=60, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- conveniences that assert success --

    def create(self, resource, **kw):
        r = self.post(resource["resourceType"], resource, **kw)
        assert r.status_code == 201, f"create {resource['resourceType']}: {r.status_code} {r.text[:500]}"
        return r.json()

    def upsert(self, resource):
        r = self.put(f"{resource['resourceType']}/{resource['id']}", resource)
        assert r.status_code in (200, 201), f"PUT {resource['resourceType']}/{resource['id']}: {r.status_code} {r.text[:500]}"
        return r.json()

    def read(self, type_, id_):
        r = self.get(f"{type_}/{id_}")
        assert r.status_code == 200, f"read {type_}/{id_}: {r.status_code} {r.text[:500]}"
        return r.json()

    def search(self, type_, params=None, headers=None):
        """GET search; asserts 200 and a searchset Bundle; returns the Bundle."""
        r = self.get(type_, params=params, headers=headers)
        assert r.status_code == 200, f"GET {r.url}: {r.status_code} {r.text[:800]}"
        b = r.json()
        assert_searchset(b, self.base)
        return b

    def search_ids(self, type_, params=None, headers=None):
        """The ids of the match entries (a list, in the server's order)."""
        return match_ids(self.search(type_, params, headers))

    def search_all(self, type_, params, max_pages=100):
        """Follow `next` links; returns the list of pages (Bundles)."""
        pages = [self.search(type_, params)]
        while True:
            nxt = link(pages[-1], "next")
            if not nxt:
                return pages
            assert len(pages) < max_pages, "next links do not end"
            r = self.get(nxt)
            assert r.status_code == 200, f"GET next {nxt}: {r.status_code} {r.text[:500]}"
            pages.append(r.json())
            assert_searchset(pages[-1], self.base)


# ---- bundle helpers ---------------------------------------------------------


def link(bundle, relation):
    for l in bundle.get("link", []):
        if l.get("relation") == relation:
            return l.get("url")
    return None


def entries(bundle, mode=None):
    out = []
    for e in bundle.get("entry", []):
        if mode is None or e.get("search", {}).get("mode") == mode:
            out.append(e)
    return out


def match_ids(bundle):
    return [e["resource"]["id"] for e in entries(bundle, "match")]


def refs(bundle, mode=None):
    """'Type/id' of the entries' resources (optionally only one search mode)."""
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries(bundle, mode)]


def assert_searchset(b, base):
    assert b.get("resourceType") == "Bundle", b
    assert b.get("type") == "searchset", b.get("type")
    for e in b.get("entry", []):
        mode = e.get("search", {}).get("mode")
        assert mode in ("match", "include", "outcome"), f"entry without search.mode: {e}"
        if mode != "outcome":
            res = e["resource"]
            assert e.get("fullUrl") == f"{base}/{res['resourceType']}/{res['id']}", e.get("fullUrl")


# ---- response assertions ----------------------------------------------------


def assert_fhir_json(r):
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith(FHIR_JSON), f"Content-Type is {ct!r}, expected {FHIR_JSON}; body: {r.text[:300]}"


def outcome(r, statuses, expression=None, text=None):
    """Assert `r` is an error in `statuses` carrying an OperationOutcome.

    expression: a string (or tuple of alternatives) that must equal one of
    the issues' expression/location entries.  text: substring that must
    appear in some issue's diagnostics, details.text, expression or location
    (case-insensitive).  Returns the OperationOutcome.
    """
    if isinstance(statuses, int):
        statuses = (statuses,)
    assert r.status_code in statuses, f"expected {statuses}, got {r.status_code}: {r.text[:800]}"
    assert_fhir_json(r)
    oo = r.json()
    assert oo.get("resourceType") == "OperationOutcome", oo
    issues = oo.get("issue") or []
    assert issues, "OperationOutcome without issues"
    assert any(i.get("severity") in ("error", "fatal") for i in issues), issues
    for i in issues:
        assert i.get("code"), f"issue without code: {i}"
    if expression is not None:
        alts = (expression,) if isinstance(expression, str) else tuple(expression)
        places = [p for i in issues for p in (i.get("expression") or []) + (i.get("location") or [])]
        assert any(p in alts for p in places), f"no issue at {alts}; issues: {issues}"
    if text is not None:
        hay = json.dumps(issues).lower()
        assert text.lower() in hay, f"{text!r} not mentioned in {issues}"
    return oo


def http_date(value):
    """Parse an HTTP-date header into an aware datetime."""
    d = parsedate_to_datetime(value)
    assert d is not None, value
    return d


def instant(value):
    """Parse a FHIR instant (YYYY-MM-DDThh:mm:ss[.f+](Z|+hh:mm)) into an aware datetime."""
    v = value.replace("Z", "+00:00")
    if "." in v:
        head, rest = v.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, tz = rest[:i], rest[i:]
        v = f"{head}.{(frac + '000000')[:6]}{tz}"
    d = datetime.fromisoformat(v)
    assert d.tzinfo is not None, f"instant without a zone: {value}"
    return d


def now_utc():
    return datetime.now(timezone.utc)
