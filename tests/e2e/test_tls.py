"""Transport security end to end (issue 6, docs/tls.md): HTTPS and MLLP over
TLS with a certificate, loopback only without one, and MLLP senders that
may connect only from where the peers file says and send only as the
organisations it names.

What an operator and an interface engine rely on: with --tls-cert/--tls-key
the API answers over HTTPS only (a plain HTTP request on that port gets no
answer), the web app's session cookie is Secure; MLLP speaks TLS with the
framing unchanged, and a sender that does not speak TLS gets nothing; a
peer not in the peers file is disconnected before anything is read, and
that refusal is in the access log; a listed peer's message from another
sending facility (MSH-4) gets AR with an ERR at MSH-4 and is quarantined,
nothing of it stored; a listener off loopback without TLS (or an MLLP one
without a peers file) is refused at start, and so are bad certificate, key
and peers files, each with a message naming the file.

The certificate is made at test time with openssl (self-signed for
127.0.0.1); the clients trust exactly it.
"""

import json
import os
import socket
import ssl
import subprocess
import time
import uuid

import hl7
import pytest
import requests

from concordlib import START_TIMEOUT, ConcordServer, Fhir, ServerError, free_port, provision

OPENSSL = "/usr/bin/openssl"
VT, FS_CR = b"\x0b", b"\x1c\x0d"


def uid():
    return uuid.uuid4().hex[:10]


def make_cert(directory, name="server", cn="127.0.0.1"):
    """A self-signed certificate and its unencrypted key (PEM) for 127.0.0.1."""
    cert, key = os.path.join(directory, f"{name}-cert.pem"), os.path.join(directory, f"{name}-key.pem")
    r = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                        "-addext", f"subjectAltName=IP:{cn}", "-keyout", key, "-out", cert],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl req failed (make deps installs openssl): {r.stderr}"
    os.chmod(key, 0o600)
    return cert, key


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("tls")))


class TlsServer(ConcordServer):
    """`concord serve` with --tls-cert/--tls-key: the API at https://, the
    readiness probe trusting only the test certificate."""

    def __init__(self, binary, db, logdir, cert, backend="sqlite", extra_args=()):
        self.cert_file, self.key_file = cert
        super().__init__(binary, db, logdir, backend=backend,
                         extra_args=["--tls-cert", self.cert_file, "--tls-key", self.key_file, *extra_args])

    @property
    def root(self):
        return f"https://127.0.0.1:{self.port}"

    def start(self):
        if self.token is None:
            self.token = provision(self.binary, self.db)
        last = None
        for _attempt in range(3):
            self.port, self.mllp_port = free_port(), free_port()
            self.starts += 1
            with open(self.log_path, "a") as log:
                log.write(f"==== start #{self.starts}: port {self.port} (TLS) ====\n")
                log.flush()
                self.proc = subprocess.Popen(
                    [self.binary, "serve", "--db", self.db, "--http", f"127.0.0.1:{self.port}",
                     "--mllp", f"127.0.0.1:{self.mllp_port}", "--import-dir", self.import_dir, *self.extra_args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"concord exited with {self.proc.returncode} during start-up"
                    break
                try:
                    r = requests.get(f"{self.base}/metadata", timeout=2, verify=self.cert_file)
                    if r.status_code == 200:
                        return self
                    last = f"/fhir/metadata answered {r.status_code}"
                except requests.RequestException as e:
                    last = str(e)
                time.sleep(0.05)
            else:
                self.kill()
                raise ServerError(f"concord did not answer within {START_TIMEOUT}s: {last}\n{self.log_tail()}")
        raise ServerError(f"concord would not start: {last}\n{self.log_tail()}")

    def client(self, token=None):
        return TlsFhir(self.base, token or self.token, self.cert_file)


class TlsFhir(Fhir):
    """A FHIR client trusting only the test certificate. Per request:
    requests lets $REQUESTS_CA_BUNDLE override a Session's `verify`."""

    def __init__(self, base, token, cafile):
        super().__init__(base, token)
        self.cafile = cafile

    def request(self, method, path, body=None, headers=None, **kw):
        kw.setdefault("verify", self.cafile)
        return super().request(method, path, body, headers, **kw)


class TlsServers:
    def __init__(self, concord_bin, databases, backend, tmp_path, cert):
        self.args = (concord_bin, databases, backend, tmp_path, cert)
        self.servers = []

    def start(self, extra_args=()):
        concord_bin, databases, backend, tmp_path, cert = self.args
        logdir = tmp_path / f"tls-server{len(self.servers)}"
        logdir.mkdir()
        s = TlsServer(concord_bin, databases.new(backend), logdir, cert, backend=backend, extra_args=extra_args)
        self.servers.append(s)
        return s.start()

    def stop_all(self):
        for s in self.servers:
            rc = s.stop()
            assert rc == 0, f"concord exited with {rc} on SIGTERM\n{s.log_tail()}"


@pytest.fixture(scope="module")
def _tls_server(backend, concord_bin, databases, tmp_path_factory, cert):
    """One TLS server per backend for this module, without a peers file."""
    f = TlsServers(concord_bin, databases, backend, tmp_path_factory.mktemp(f"tls-{backend}"), cert)
    s = f.start()
    yield s
    f.stop_all()


@pytest.fixture
def tls_server(_tls_server, request):
    request.node._concord_servers = [_tls_server]
    return _tls_server


@pytest.fixture
def tls_servers(backend, concord_bin, databases, tmp_path, cert, request):
    f = TlsServers(concord_bin, databases, backend, tmp_path, cert)
    request.node._concord_servers = f.servers
    yield f
    f.stop_all()  # a clean stop (under the sanitizers: no leak, no error)


# ---- MLLP helpers ------------------------------------------------------------


def adt_a01(control, facility="RYJ"):
    visit, mrn = f"V{uid()}", f"H{uid()}"
    return visit, "\r".join([
        f"MSH|^~\\&|PAS|{facility}|CONCORD|NWL|20260301101500||ADT^A01^ADT_A01|{control}|P|2.4",
        "EVN|A01|20260301101500",
        f"PID|1||9990000018^^^NHS^NH~{mrn}^^^{facility}^MR||Smith^John^^^Mr||19500101|M",
        "PV1|1|I|WARD1^BED2^^RYJ|21||||C12345^Jones^Alice^^^Dr|||||||||||" + f"{visit}^^^{facility}^VN",
    ]) + "\r"


def read_frame(sock):
    data = b""
    while not data.endswith(FS_CR):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def mllp_tls(port, cafile, message):
    """Send one framed message over TLS; returns the parsed ACK."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(VT + message.encode() + FS_CR)
            data = read_frame(s)
    assert data.startswith(VT) and data.endswith(FS_CR), f"not an MLLP frame: {data!r}"
    return hl7.parse(data[1:-2].decode())


def msa(ack):
    seg = ack.segment("MSA")
    return str(seg[1]), str(seg[2])


def nothing_comes_back(port, payload):
    """Plain TCP: send `payload`, return what comes back before the server
    closes (b"" when it closes without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        try:
            s.sendall(payload)
            return s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def encounters(fhir, visit, facility="RYJ"):
    b = fhir.search("Encounter", {"identifier": f"urn:concord:id:{facility}:VN|{visit}"})
    return [e["resource"] for e in b.get("entry", [])]


def quarantined(server):
    return subprocess.run([server.binary, "quarantine", "list", "--db", server.db, "--limit", "1000"],
                          capture_output=True, text=True, timeout=60).stdout


# ---- HTTPS -------------------------------------------------------------------


def test_the_api_is_served_over_https_only(tls_server):
    fhir = tls_server.client()
    r = fhir.get("metadata")
    assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"
    b = fhir.search("Patient", {"_count": "1"})
    # the base the server advertises (links, fullUrls) is https too
    assert b["link"][0]["url"].startswith(f"https://127.0.0.1:{tls_server.port}/fhir/"), b["link"]
    pid = fhir.create({"resourceType": "Patient", "name": [{"family": "Tls" + uid()}]})["id"]
    assert fhir.read("Patient", pid)["id"] == pid
    # the same port does not speak plain HTTP
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{tls_server.port}/fhir/metadata", timeout=10)
    # and a client that does not trust the certificate is refused by its own TLS
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_server.base}/metadata", timeout=10)


def test_the_session_cookie_is_secure(tls_server):
    user, password = "tls-gp-" + uid()[:8], "correct horse " + uid()
    add = subprocess.run([tls_server.binary, "user", "add", user, "--role", "gp", "--org", "E2E01",
                          "--password-stdin", "--db", tls_server.db],
                         input=password + "\n", capture_output=True, text=True, timeout=120)
    assert add.returncode == 0, add.stderr
    web = requests.Session()
    r = web.post(f"{tls_server.root}/auth/login", json={"user": user, "password": password}, timeout=60,
                 verify=tls_server.cert_file)
    assert r.status_code == 200, r.text
    cookie = r.headers["Set-Cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert attrs[0].startswith("__Host-concord_session="), cookie
    assert "Secure" in attrs and "HttpOnly" in attrs and "Path=/" in attrs, cookie
    # and it works: the session is who signed in
    r = web.get(f"{tls_server.root}/auth/session", timeout=30, verify=tls_server.cert_file)
    assert r.status_code == 200 and r.json()["user"] == user, r.text


# ---- MLLP over TLS -----------------------------------------------------------


def test_mllp_over_tls_is_acknowledged_after_it_is_stored(tls_server):
    control = f"C{uid()}"
    visit, message = adt_a01(control)
    ack = mllp_tls(tls_server.mllp_port, tls_server.cert_file, message)
    assert msa(ack) == ("AA", control), str(ack)
    enc = encounters(tls_server.client(), visit)
    assert len(enc) == 1 and enc[0]["meta"]["source"].startswith("urn:concord:ingest-message:")


def test_mllp_without_tls_gets_no_answer_on_a_tls_listener(tls_server):
    control = f"C{uid()}"
    _visit, message = adt_a01(control)
    assert nothing_comes_back(tls_server.mllp_port, VT + message.encode() + FS_CR) == b""
    # nothing of it was taken for a message: the bytes were never decrypted
    assert control not in subprocess.run(
        [tls_server.binary, "quarantine", "list", "--all", "--db", tls_server.db, "--limit", "1000"],
        capture_output=True, text=True, timeout=60).stdout


# ---- MLLP peers --------------------------------------------------------------


def peers_file(tmp_path, text):
    p = tmp_path / f"peers-{uid()}.conf"
    p.write_text(text)
    return str(p)


def test_a_peer_sends_only_as_its_organisations(tls_servers, tmp_path):
    ours, other = "X" + uid()[:6].upper(), "Y" + uid()[:6].upper()
    s = tls_servers.start(["--mllp-peers", peers_file(tmp_path, f"# the test sender\n127.0.0.1 {ours}, ZZZ1\n")])
    fhir = s.client()

    control = f"C{uid()}"
    visit, message = adt_a01(control, facility=ours)
    ack = mllp_tls(s.mllp_port, s.cert_file, message)
    assert msa(ack) == ("AA", control), str(ack)
    assert len(encounters(fhir, visit, ours)) == 1

    control = f"C{uid()}"
    visit, message = adt_a01(control, facility=other)
    ack = mllp_tls(s.mllp_port, s.cert_file, message)
    code, echoed = msa(ack)
    assert code in ("AR", "AE") and echoed == control, str(ack)
    err = str(ack.segment("ERR"))
    assert err.startswith("ERR|MSH^1^4"), err  # HL7 v2.4 ERR-1: segment MSH, sequence 1, field 4
    assert f"sending facility {other} is not allowed from this connection" in str(ack), str(ack)
    # kept in quarantine with the reason, nothing of it stored
    q = quarantined(s)
    assert f"sending facility {other} is not allowed" in q, q
    assert encounters(fhir, visit, other) == []
    assert fhir.search("Patient", {"identifier": f"urn:concord:id:{other}:MR|"}).get("entry", []) == []


def test_a_connection_from_an_address_not_listed_is_closed_and_logged(tls_servers, tmp_path):
    s = tls_servers.start(["--mllp-peers", peers_file(tmp_path, "10.0.0.0/8 RYJ\n")])
    control = f"C{uid()}"
    _visit, message = adt_a01(control)
    # closed before the handshake: TLS cannot even start
    with pytest.raises(OSError):
        mllp_tls(s.mllp_port, s.cert_file, message)
    # and a client that just writes gets no ACK
    assert nothing_comes_back(s.mllp_port, VT + message.encode() + FS_CR) == b""
    assert control not in quarantined(s)
    # the refusal is in the access log, from the peer's address
    events = []
    for _ in range(100):
        out = subprocess.run([s.binary, "audit", "list", "--action", "login-failed", "--json", "--db", s.db],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        events = [line for line in out.stdout.splitlines() if "peers file" in line]  # one AuditEvent a line
        if events:
            break
        time.sleep(0.1)
    assert events, out.stdout
    text = events[0]
    assert json.loads(text)["resourceType"] == "AuditEvent"
    assert "127.0.0.1" in text and f"MLLP connection to port {s.mllp_port}" in text, text
    assert s.proc.poll() is None  # still serving


def test_refusals_from_one_address_are_logged_ten_a_minute_and_the_rest_counted(tls_servers, tmp_path):
    """An address that keeps connecting does not write an access-log event
    per attempt: ten a minute one by one, then one event with the count
    (written when the minute is over, or at stop)."""
    s = tls_servers.start(["--mllp-peers", peers_file(tmp_path, "10.0.0.0/8 RYJ\n")])
    for _ in range(25):
        with socket.create_connection(("127.0.0.1", s.mllp_port), timeout=15) as c:
            try:
                assert c.recv(1) == b""  # closed by the server: this one was refused
            except ConnectionResetError:
                pass
    assert s.stop() == 0
    out = subprocess.run([s.binary, "audit", "list", "--action", "login-failed", "--json", "--limit", "1000",
                          "--db", s.db], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mine = [line for line in out.stdout.splitlines() if f"MLLP connection to port {s.mllp_port}" in line]
    counted = [line for line in mine if "more connections refused" in line]
    assert len(mine) - len(counted) == 10, mine
    assert len(counted) == 1 and "15 more connections refused" in counted[0], counted


# ---- refused at start ----------------------------------------------------------


def serve(concord_bin, tmp_path, *args):
    db = str(tmp_path / "concord.db")
    return subprocess.run([concord_bin, "serve", "--db", db, "--http", f"127.0.0.1:{free_port()}",
                           "--mllp", f"127.0.0.1:{free_port()}", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_listening_off_loopback_needs_tls(concord_bin, tmp_path, cert):
    r = serve(concord_bin, tmp_path, "--http", f"0.0.0.0:{free_port()}")
    assert r.returncode == 2, r.stderr
    assert "--http 0.0.0.0" in r.stderr and "needs TLS" in r.stderr and "--tls-cert" in r.stderr, r.stderr
    r = serve(concord_bin, tmp_path, "--mllp", f"0.0.0.0:{free_port()}")
    assert r.returncode == 2 and "--mllp 0.0.0.0" in r.stderr and "needs TLS" in r.stderr, r.stderr
    # MLLP off loopback also needs to know who may send
    r = serve(concord_bin, tmp_path, "--mllp", f"0.0.0.0:{free_port()}", "--tls-cert", cert[0], "--tls-key", cert[1])
    assert r.returncode == 2 and "--mllp-peers" in r.stderr, r.stderr
    r = serve(concord_bin, tmp_path, "--tls-cert", cert[0])
    assert r.returncode == 2 and "--tls-key" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "concord.db")  # refused before the database was touched


def test_bad_certificate_key_and_peers_files_are_named(concord_bin, tmp_path, cert):
    other_cert, other_key = make_cert(str(tmp_path), name="other")
    missing = str(tmp_path / "missing.pem")
    cases = [
        (["--tls-cert", missing, "--tls-key", cert[1]], [missing, "No such file"]),
        (["--tls-cert", cert[1], "--tls-key", cert[1]], [cert[1], "no PEM certificate"]),
        (["--tls-cert", cert[0], "--tls-key", cert[0]], [cert[0], "no PEM private key"]),
        (["--tls-cert", cert[0], "--tls-key", other_key], [other_key, "is not the key of the certificate", cert[0]]),
    ]
    for args, words in cases:
        r = serve(concord_bin, tmp_path, *args)
        assert r.returncode == 1, (args, r.stderr)
        for w in words:
            assert w in r.stderr, (args, w, r.stderr)
    bad = peers_file(tmp_path, "127.0.0.1 RYJ\n10.1.2.3/8 RQM\n")
    r = serve(concord_bin, tmp_path, "--mllp-peers", bad)
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr and "did you mean 10.0.0.0/8?" in r.stderr, r.stderr
