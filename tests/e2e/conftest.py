"""End-to-end fixtures: the real `concord` binary, real HTTP, both backends.

Run:  /usr/bin/python3 -m pytest -q tests/e2e --concord=build/concord
With PostgreSQL too:  tests/with-postgres.sh /usr/bin/python3 -m pytest -q tests/e2e

Every test that takes `fhir` (or `server`) runs once per backend:
  sqlite      a fresh temporary database file per server;
  postgresql  a fresh, uniquely named database per server on the cluster
              that $CONCORD_TEST_PG (a postgresql:// URL) points at; skipped
              with a reason when the variable is unset.

One server per backend is shared by the session (tests use uuid-based
identifiers so they never see each other's data); tests about the process
itself (kill -9, SIGTERM, --max-body, the landing page's counts) start
their own servers with `server_factory`. When a test fails, the stderr of
every server it used is attached to the report.
"""

import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from concordlib import ConcordServer, Fhir

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite", "postgresql"]
PG_ENV = "CONCORD_TEST_PG"
PSQL = "/usr/bin/psql"


def pytest_addoption(parser):
    parser.addoption(
        "--concord",
        default=str(REPO / "build" / "concord"),
        help="path to the concord binary to test (default: build/concord in the repository)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts its own server processes")


@pytest.fixture(scope="session")
def concord_bin(request):
    path = Path(request.config.getoption("--concord"))
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else (REPO / path)
    if not path.exists() or not os.access(path, os.X_OK):
        pytest.exit(
            f"concord binary not found at {path}: build it first "
            f"(cmake -S {REPO} -B {REPO}/build && cmake --build {REPO}/build) or pass --concord=PATH",
            returncode=4,
        )
    return str(path)


# ---- databases -------------------------------------------------------------


def _pg_url_with_db(url, dbname):
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _psql(url, sql):
    r = subprocess.run(
        [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {r.stderr.strip()}")


class Databases:
    """Creates fresh databases for a backend; drops PostgreSQL ones at the end."""

    def __init__(self, tmp_root):
        self.tmp_root = Path(tmp_root)
        self.pg_created = []

    def new(self, backend):
        if backend == "sqlite":
            d = self.tmp_root / f"db-{uuid.uuid4().hex[:12]}"
            d.mkdir(parents=True)
            return str(d / "concord.db")
        url = os.environ.get(PG_ENV)
        if not url:
            pytest.skip(f"PostgreSQL backend: set {PG_ENV}=postgresql://... (tests/with-postgres.sh does it)")
        name = f"concord_e2e_{uuid.uuid4().hex[:16]}"
        _psql(url, f'CREATE DATABASE "{name}"')
        self.pg_created.append(name)
        return _pg_url_with_db(url, name)

    def drop_all(self):
        url = os.environ.get(PG_ENV)
        for name in self.pg_created:
            try:
                _psql(url, f'DROP DATABASE IF EXISTS "{name}"')
            except Exception:
                pass


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    dbs = Databases(tmp_path_factory.mktemp("concord-e2e"))
    yield dbs
    dbs.drop_all()


# ---- servers ---------------------------------------------------------------


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    if request.param == "postgresql" and not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL backend not tested: {PG_ENV} is not set (run under tests/with-postgres.sh)")
    return request.param


@pytest.fixture(scope="session")
def server(backend, concord_bin, databases, tmp_path_factory):
    """The shared server of one backend, stopped with SIGTERM at the end."""
    db = databases.new(backend)
    logdir = tmp_path_factory.mktemp(f"server-{backend}")
    s = ConcordServer(concord_bin, db, logdir, backend=backend)
    s.start()
    yield s
    rc = s.stop()
    assert rc == 0, f"concord exited with {rc} on SIGTERM\n--- stderr ---\n{s.log_tail()}"


@pytest.fixture
def fhir(server, request):
    request.node._concord_servers = [server]
    client = Fhir(server.base, server.token)
    yield client
    client.close()


class ServerFactory:
    """Starts extra servers for one test; stops (SIGKILL) leftovers afterwards."""

    def __init__(self, concord_bin, databases, backend, tmp_path):
        self.bin = concord_bin
        self.databases = databases
        self.backend = backend
        self.tmp_path = tmp_path
        self.servers = []

    def new_db(self):
        return self.databases.new(self.backend)

    def start(self, db=None, extra_args=()):
        db = db or self.new_db()
        logdir = self.tmp_path / f"server{len(self.servers)}"
        logdir.mkdir()
        s = ConcordServer(self.bin, db, logdir, backend=self.backend, extra_args=extra_args)
        self.servers.append(s)
        s.start()
        return s

    def cleanup(self):
        for s in self.servers:
            s.kill()


@pytest.fixture
def server_factory(backend, concord_bin, databases, tmp_path, request):
    f = ServerFactory(concord_bin, databases, backend, tmp_path)
    request.node._concord_servers = f.servers
    yield f
    f.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, s in enumerate(getattr(item, "_concord_servers", []) or []):
            rep.sections.append((f"concord server {i} ({s.backend}, {s.db}) stderr", s.log_tail()))
