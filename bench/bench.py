"""bench.py — concord's benchmark harness (run it through bench/run.sh).

One run: start `concord serve` on a fresh database, load a deterministic
population through the FHIR API (bench/population.py), drive the server with
wrk from a second process on 127.0.0.1 (bench/lua/*.lua), print a table of
figures next to their targets, and write everything — figures, workloads,
the machine, the concord build — to bench/results/<timestamp>-<backend>.json
and bench/results/latest-<backend>.json.

Order of a run (each wrk run bounded by its duration):
  1. load the population (BENCH_RESOURCES) with concurrent transaction Bundles
  2. database size per resource; server memory after the load
  3. read by id; server memory after reads
  4. searches: Observation?patient&code&date, Patient?identifier,
     Patient?family&birthdate — first checked against the expected answers
  5. create single Patients (POST), then transaction Bundles of 100
     resources — both into the loaded database
  6. SIGTERM; peak memory and shutdown time
With BENCH_PERF=1 the read, Observation-search, create and bundle workloads
are run a second time under `perf record` (so the figures themselves are
unperturbed) and the server's time by library and top functions are reported.

Environment: see bench/README.md.
"""

import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import population  # noqa: E402

TARGETS = {  # from docs: DESIGN.md "Targets" and issue 2 "Targets"
    "read_rps": 20000.0,
    "read_p99_ms": 10.0,
    "bundle_resources_per_s": 10000.0,
    "search_obs_rps": 2000.0,
    "search_obs_at_resources": 10_000_000,
    "memory_bytes": 1 << 30,
    "memory_at_people": 500_000,
}


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v.replace("_", "").replace(",", "")) if v.strip() else default


def log(msg=""):
    print(msg, flush=True)


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_bytes(b):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(b) < 1024 or unit == "TiB":
            return f"{b:,.0f} {unit}" if unit == "B" else f"{b:,.1f} {unit}"
        b /= 1024.0


class Config:
    def __init__(self, binary):
        self.binary = os.path.abspath(binary)
        self.quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        self.db = os.environ.get("BENCH_DB", "")
        self.backend = "postgresql" if self.db.startswith(("postgresql://", "postgres://")) else "sqlite"
        self.resources = env_int("BENCH_RESOURCES", 20_000 if self.quick else 1_000_000)
        d = 3 if self.quick else None
        self.dur = {
            "create": env_int("BENCH_DURATION", d or 10),
            "bundle": env_int("BENCH_DURATION", d or 15),
            "read": env_int("BENCH_DURATION", d or 20),
            "search": env_int("BENCH_DURATION", d or 15),
        }
        self.warmup = 1 if self.quick else 3
        self.server_threads = env_int("BENCH_THREADS", 0)
        self.load_connections = env_int("BENCH_LOAD_CONNECTIONS", 4)
        self.load_timeout = env_int("BENCH_LOAD_TIMEOUT", max(900, self.resources // 1000))
        self.since = os.environ.get("BENCH_SINCE", "2022-01-01")
        self.perf = os.environ.get("BENCH_PERF", "") not in ("", "0")
        self.keep = os.environ.get("BENCH_KEEP", "") not in ("", "0")
        self.results_dir = os.environ.get("BENCH_RESULTS_DIR", os.path.join(HERE, "results"))
        self.tmp_parent = os.environ.get("BENCH_TMPDIR") or None
        self.wrk_threads = 2
        self.conns = {"create": 16, "bundle": 8, "read": 32, "search": 32}


# --------------------------------------------------------------------------
# the machine and the build


def read_file(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def run_text(argv, timeout=20, env=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        return (r.stdout or r.stderr).strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def dpkg_version(pkg):
    return run_text(["dpkg-query", "-W", "-f=${Version}", pkg])


def mount_of(path):
    """'ext4 /dev/vda on /' for the mount holding path (longest mount point prefix)."""
    best = None
    path = os.path.realpath(path)
    for ln in read_file("/proc/self/mountinfo").splitlines():
        left, _, right = ln.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 2:
            continue
        mp = f[4]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best[0])):
            best = (mp, r[0], r[1])
    return "%s %s on %s" % (best[1], best[2], best[0]) if best else ""


def describe_machine(cfg, db_dir):
    cpuinfo = read_file("/proc/cpuinfo")
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = read_file("/proc/meminfo")
    mt = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    osrel = re.search(r'^PRETTY_NAME="?([^"\n]+)', read_file("/etc/os-release"), re.M)
    lscpu = run_text(["lscpu"])
    hyp = re.search(r"^Hypervisor vendor:\s*(.+)$", lscpu, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)
    st = os.statvfs(db_dir) if db_dir else None
    fs = mount_of(db_dir) if db_dir else ""
    git_env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read-only: never touch the index
    commit = run_text(["git", "-C", REPO, "rev-parse", "HEAD"], env=git_env)
    dirty = run_text(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], env=git_env)
    return {
        "machine": {
            "hostname": platform.node(),
            "cpu_model": m.group(1).strip() if m else platform.processor(),
            "cpu_mhz": float(mhz.group(1)) if mhz else None,
            "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)),
            "hypervisor": hyp.group(1).strip() if hyp else None,
            "ram_bytes": int(mt.group(1)) * 1024 if mt else None,
            "kernel": platform.release(),
            "os": osrel.group(1) if osrel else platform.platform(),
            "db_dir": db_dir,
            "db_filesystem": fs or None,
            "disk_free_bytes": st.f_bavail * st.f_frsize if st else None,
            "disk_total_bytes": st.f_blocks * st.f_frsize if st else None,
        },
        "concord": {
            "binary": cfg.binary,
            "version": re.sub(r"^concord\s+", "", run_text([cfg.binary, "--version"])),
            "git_commit": commit or None,
            "git_dirty": bool(dirty) if commit else None,
        },
        "software": {
            "sqlite": dpkg_version("libsqlite3-0") or None,
            "libmicrohttpd": dpkg_version("libmicrohttpd12") or None,
            "jansson": dpkg_version("libjansson4") or None,
            "libpq": dpkg_version("libpq5") or None,
            "wrk": (run_text(["wrk", "--version"]).splitlines() or [""])[0] or dpkg_version("wrk") or None,
            "python": platform.python_version(),
        },
    }


# --------------------------------------------------------------------------
# the database


def pg_url_with_db(url, dbname):
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


def psql(url, sql, timeout=120):
    r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("psql: " + (r.stderr.strip() or r.stdout.strip()))
    return r.stdout.strip()


class Database:
    """A fresh database for one run: a temp SQLite file, or a scratch
    database created on the PostgreSQL server BENCH_DB names (and dropped
    afterwards unless BENCH_KEEP=1)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.workdir = tempfile.mkdtemp(prefix="concord-bench.", dir=cfg.tmp_parent)
        self.pg_admin = None
        if cfg.backend == "sqlite":
            if cfg.db:
                raise SystemExit("bench: BENCH_DB is for PostgreSQL URLs; the SQLite database is always a "
                                 "fresh temp file (BENCH_TMPDIR chooses where)")
            self.path = os.path.join(self.workdir, "concord.db")
            self.dir = self.workdir
            self.arg = self.path
        else:
            if not shutil.which("psql"):
                raise SystemExit("bench: psql (postgresql-client) is needed to create a scratch database")
            self.name = "concord_bench_%s_%d" % (time.strftime("%Y%m%d%H%M%S"), os.getpid())
            self.pg_admin = cfg.db
            psql(self.pg_admin, 'CREATE DATABASE "%s"' % self.name)
            self.arg = pg_url_with_db(cfg.db, self.name)
            self.dir = None

    def describe(self):
        if self.cfg.backend == "sqlite":
            return self.path
        u = urllib.parse.urlsplit(self.arg)
        return urllib.parse.urlunsplit((u.scheme, u.hostname + (":%d" % u.port if u.port else ""), u.path, "", ""))

    def size(self):
        """Bytes on disk; for SQLite checkpoints the WAL into the main file first."""
        out = {}
        if self.cfg.backend == "sqlite":
            wal = self.path + "-wal"
            out["file_bytes_before_checkpoint"] = os.path.getsize(self.path)
            out["wal_bytes_before_checkpoint"] = os.path.getsize(wal) if os.path.exists(wal) else 0
            if shutil.which("sqlite3"):
                r = subprocess.run(["sqlite3", "-cmd", ".timeout 10000", self.path, "PRAGMA wal_checkpoint(TRUNCATE);"],
                                   capture_output=True, text=True, timeout=600)
                out["checkpoint"] = (r.stdout.strip() or r.stderr.strip())
            out["file_bytes"] = os.path.getsize(self.path)
            out["wal_bytes"] = os.path.getsize(wal) if os.path.exists(wal) else 0
            out["bytes"] = out["file_bytes"] + out["wal_bytes"]
        else:
            out["bytes"] = int(psql(self.arg, "SELECT pg_database_size(current_database())"))
            try:
                rows = psql(self.arg, "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
                                      "JOIN pg_namespace n ON n.oid=c.relnamespace WHERE relkind='r' AND "
                                      "nspname NOT IN ('pg_catalog','information_schema') ORDER BY 2 DESC")
                out["tables"] = {r.split("|")[0]: int(r.split("|")[1]) for r in rows.splitlines() if "|" in r}
            except Exception as e:  # noqa: BLE001
                out["tables_error"] = str(e)
        return out

    def sqlite_tables(self):
        """Per-table bytes via the dbstat virtual table, when the CLI has it."""
        if self.cfg.backend != "sqlite" or not shutil.which("sqlite3"):
            return None
        r = subprocess.run(["sqlite3", "-separator", "|", self.path,
                            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC;"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return None
        return {ln.split("|")[0]: int(ln.split("|")[1]) for ln in r.stdout.splitlines() if "|" in ln}

    def cleanup(self):
        if self.pg_admin and not self.cfg.keep:
            try:
                psql(self.pg_admin, 'DROP DATABASE IF EXISTS "%s"' % self.name)
            except Exception as e:  # noqa: BLE001
                log("bench: could not drop scratch database %s: %s" % (self.name, e))
        if self.cfg.keep:
            log("bench: kept %s" % self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# the server


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, cfg, db):
        self.cfg = cfg
        self.port = env_int("BENCH_PORT", 0) or free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.fhir = self.base + "/fhir"
        self.log_path = os.path.join(db.workdir, "server.log")
        self.pg_dbname = getattr(db, "name", None)
        argv = [cfg.binary, "serve", "--db", db.arg, "--http", "127.0.0.1:%d" % self.port, "--log-level",
                os.environ.get("BENCH_LOG_LEVEL", "warn")]
        if cfg.server_threads:
            argv += ["--threads", str(cfg.server_threads)]
        # the MLLP listener (when this build has one) gets a free port of its
        # own, so a run never collides with another server on the default
        self.mllp_port = None
        if "--mllp" in run_text([cfg.binary, "--help"]):
            self.mllp_port = free_port()
            argv += ["--mllp", "127.0.0.1:%d" % self.mllp_port]
        self.argv = argv
        # the server requires sign-in: an integration (system) account and
        # its token, made with the CLI on the database before it starts;
        # wrk scripts and population.py read BENCH_TOKEN
        if "token" in run_text([cfg.binary, "--help"]):
            subprocess.run([cfg.binary, "user", "add", "bench", "--role", "system", "--org", "BENCH1",
                            "--no-password", "--db", db.arg], capture_output=True, stdin=subprocess.DEVNULL)
            tok = subprocess.run([cfg.binary, "token", "create", "--user", "bench", "--db", db.arg],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if tok.returncode != 0 or not tok.stdout.strip():
                raise SystemExit("bench: cannot create an API token: " + tok.stderr.strip())
            os.environ["BENCH_TOKEN"] = tok.stdout.strip()
        self.logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        t0 = time.time()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("bench: the server exited with %s before answering:\n%s"
                                 % (self.proc.returncode, self.log_tail()))
            try:
                with urllib.request.urlopen(self.fhir + "/metadata", timeout=2) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.time() - t0 > 60:
                self.stop()
                raise SystemExit("bench: the server did not answer /fhir/metadata within 60 s")
            time.sleep(0.1)
        self.startup_s = time.time() - t0

    def log_tail(self, n=30):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def status(self):
        """VmRSS, VmHWM (bytes), threads, and CPU seconds used so far."""
        out = {}
        for line in read_file("/proc/%d/status" % self.pid).splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
        # Pss counts a page once however many of the server's mappings hold
        # it (SQLite's mmap is per connection, which inflates RSS)
        for line in read_file("/proc/%d/smaps_rollup" % self.pid).splitlines():
            k, _, v = line.partition(":")
            if k in ("Pss", "Pss_Anon", "Pss_File"):
                out[k] = int(v.split()[0]) * 1024
        return out

    def cpu_seconds(self):
        f = read_file("/proc/%d/stat" % self.pid).rsplit(")", 1)[-1].split()
        if len(f) < 13:
            return 0.0
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def death(self):
        """Why the server is gone, in words."""
        rc = self.proc.returncode
        if rc is None:
            return "still running"
        if rc < 0:
            return "was killed by signal %d" % -rc
        if "received SIGTERM" in self.log_tail(5) and not getattr(self, "stopping", False):
            return ("received a SIGTERM the harness did not send and stopped (exit %d): something on this machine "
                    "is killing concord processes" % rc)
        return "exited with status %d" % rc

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.stopping = True
        if self.proc.poll() is None:
            t0 = time.time()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.shutdown_s = time.time() - t0
        self.logf.close()
        return self.proc.returncode


# --------------------------------------------------------------------------
# wrk


def pg_backend_cpu(dbname):
    """CPU seconds of the local PostgreSQL backend processes serving `dbname`
    (their titles read "postgres: USER DBNAME HOST(PORT) STATE"); 0 when the
    server is not on this machine."""
    if not dbname:
        return 0.0
    total = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        cmd = read_file("/proc/%s/cmdline" % pid)
        if not cmd.startswith("postgres: ") or (" %s " % dbname) not in cmd:
            continue
        f = read_file("/proc/%s/stat" % pid).rsplit(")", 1)[-1].split()
        if len(f) >= 13:
            total += (int(f[11]) + int(f[12])) / tck
    return total


def machine_cpu():
    """(busy, total, steal, irq+softirq) jiffies over all CPUs, from /proc/stat
    (user nice system idle iowait irq softirq steal; guest time is inside
    user). Interrupt time is kept apart: loopback TCP is processed in softirq
    and is not charged to the server or wrk, so it is ours, not "other"."""
    f = [int(x) for x in read_file("/proc/stat").splitlines()[0].split()[1:9]]
    f += [0] * (8 - len(f))
    idle = f[3] + f[4]
    return sum(f) - idle - f[7], sum(f), f[7], f[5] + f[6]


def machine_busy(seconds=2.0):
    """Percent of one core the machine is busy with (and steal) over `seconds`, before we start."""
    a = machine_cpu()
    time.sleep(seconds)
    b = machine_cpu()
    total = (b[1] - a[1]) or 1
    n = os.cpu_count() or 1
    return 100.0 * (b[0] - a[0]) / total * n, 100.0 * (b[2] - a[2]) / total * n


def run_wrk(cfg, server, script, conns, duration, extra_env=None, timeout_s=30, perf_out=None):
    env = dict(os.environ, BENCH_LUA_DIR=os.path.join(HERE, "lua"), BENCH_NONCE=str(int(time.time())))
    env.update(extra_env or {})
    argv = ["wrk", "-t", str(cfg.wrk_threads), "-c", str(conns), "-d", "%ds" % duration,
            "--timeout", "%ds" % timeout_s, "-s", os.path.join(HERE, "lua", script), server.base]
    perf = None
    if perf_out:
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(server.pid), "-o", perf_out,
                                 "--", "sleep", str(duration)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, pg0, m0, t0 = server.cpu_seconds(), pg_backend_cpu(server.pg_dbname), machine_cpu(), time.time()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 120)
    wall = time.time() - t0
    cpu1, pg1, m1 = server.cpu_seconds(), pg_backend_cpu(server.pg_dbname), machine_cpu()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if perf:
        try:
            perf.wait(timeout=60)
        except subprocess.TimeoutExpired:
            perf.kill()
    if not server.alive():
        raise RuntimeError("the server died during wrk %s: %s" % (script, server.death()))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if r.returncode != 0 or not line:
        raise RuntimeError("wrk %s failed (exit %d):\n%s\n%s" % (script, r.returncode, r.stdout, r.stderr))
    res = json.loads(line[len("BENCH_RESULT "):])
    secs = res["duration_us"] / 1e6
    errs = res["errors"]
    res["seconds"] = secs
    res["ok_requests"] = res["requests"] - errs["status"]
    res["rps"] = res["ok_requests"] / secs if secs else 0.0
    res["error_count"] = sum(errs.values())
    # CPU in percent of one core: the server, wrk, the whole machine, and
    # what is left — other processes, which make the figures unreliable.
    res["server_cpu_percent"] = 100.0 * (cpu1 - cpu0) / wall if wall else None
    res["wrk_cpu_percent"] = 100.0 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall
    busy = m1[0] - m0[0]
    total = m1[1] - m0[1]
    res["machine_cpu_percent"] = 100.0 * busy / total * (os.cpu_count() or 1) if total else None
    res["steal_cpu_percent"] = 100.0 * (m1[2] - m0[2]) / total * (os.cpu_count() or 1) if total else None
    res["irq_cpu_percent"] = 100.0 * (m1[3] - m0[3]) / total * (os.cpu_count() or 1) if total else None
    if server.pg_dbname:
        res["postgres_cpu_percent"] = 100.0 * (pg1 - pg0) / wall if wall else None
        res["postgres_cpu_us_per_request"] = (1e6 * (pg1 - pg0) / res["ok_requests"]) if res["ok_requests"] else None
    if res["machine_cpu_percent"] is not None:
        res["other_cpu_percent"] = max(0.0, res["machine_cpu_percent"] - res["server_cpu_percent"]
                                       - res["wrk_cpu_percent"] - (res.get("postgres_cpu_percent") or 0)
                                       - (res["irq_cpu_percent"] or 0))
    # server CPU per successful request: comparable across runs even when
    # the machine is shared
    res["server_cpu_us_per_request"] = (1e6 * (cpu1 - cpu0) / res["ok_requests"]) if res["ok_requests"] else None
    res["command"] = " ".join(argv)
    lat = res["latency_us"]
    res["latency_ms"] = {k: lat[k] / 1000.0 for k in ("p50", "p75", "p90", "p99", "p999", "mean", "max")}
    del res["latency_us"]
    return res


def perf_by_dso(path):
    r = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "-g", "none", "--sort", "dso",
                        "--percent-limit", "1"], capture_output=True, text=True, timeout=300)
    rows = []
    for ln in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s*$", ln)
        if m:
            rows.append({"percent": float(m.group(1)), "dso": m.group(2)})
    return rows


def perf_top(path, n=20):
    r = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "-g", "none",
                        "--sort", "dso,sym", "--percent-limit", "0.3"],
                       capture_output=True, text=True, timeout=300)
    rows = []
    for ln in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", ln)
        if m:
            rows.append({"percent": float(m.group(1)), "dso": m.group(2), "symbol": m.group(3)})
    return rows[:n]


# --------------------------------------------------------------------------
# correctness checks of the searches, against the population's own answers


def get_json(url, timeout=60):
    headers = {"Accept": "application/fhir+json"}
    if os.environ.get("BENCH_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["BENCH_TOKEN"]
    req = urllib.request.Request(url, headers=headers)
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.loads(r.read())
    return body, time.time() - t0


def expected_obs(n, code_index, since):
    since_d = datetime.date.fromisoformat(since)
    c = 0
    for j in range(population.obs_count(n)):
        if j % len(population.CODES) != code_index:
            continue
        x = population.h(n * 64 + j)
        day = population.OBS_EPOCH + datetime.timedelta(days=x % population.OBS_DAYS)
        c += day >= since_d
    return c


def check_searches(cfg, server, patients, samples=20):
    rnd = random.Random(7)
    by_birth = {}
    for m in range(1, patients + 1):
        by_birth.setdefault(population.birthdate(m), []).append(m)
    q = urllib.parse.quote
    out = {}
    for kind in ("obs", "ident", "family"):
        good, bad, secs = 0, [], []
        for _ in range(samples):
            n = rnd.randint(1, patients)
            if kind == "obs":
                ci = rnd.randrange(len(population.CODES))
                path = "/Observation?patient=bench-%d&code=%s&date=ge%s" % (
                    n, q(population.LOINC + "|" + population.CODES[ci][0], safe=""), cfg.since)
                want = expected_obs(n, ci, cfg.since)
            elif kind == "ident":
                while not population.nhs(n):
                    n = n % patients + 1
                path = "/Patient?identifier=" + q(population.NHS_SYSTEM + "|" + population.nhs(n), safe="")
                want = 1
            else:
                fam, bd = population.family(n), population.birthdate(n)
                path = "/Patient?family=%s&birthdate=%s" % (q(fam, safe=""), bd)
                want = sum(1 for m in by_birth.get(bd, []) if population.family(m).lower().startswith(fam.lower()))
            try:
                body, s = get_json(server.fhir + path)
                secs.append(s)
                got = body.get("total")
                if got is None:
                    got = len(body.get("entry", []))
            except Exception as e:  # noqa: BLE001
                got = "error: %s" % e
            if got == want:
                good += 1
            else:
                bad.append({"path": path, "expected": want, "got": got})
        out[kind] = {"checked": samples, "correct": good, "wrong": bad[:5],
                     "mean_ms_single": 1000.0 * sum(secs) / len(secs) if secs else None}
    return out


# --------------------------------------------------------------------------
# the run


def ratio_text(value, target, lower_is_better=False):
    if value is None or not target:
        return ""
    r = (target / value if value else float("inf")) if lower_is_better else value / target
    return "%.2fx %s" % (r, "ok" if r >= 1.0 else "MISS")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench/run.sh CONCORD_BINARY")
    cfg = Config(sys.argv[1])
    t_start = time.time()
    nice = env_int("BENCH_NICE", 0)
    if nice:
        # the server, wrk and the loader inherit it: on a shared machine,
        # a negative value keeps other work from stealing the benchmark's CPU
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            log("bench: cannot set nice %d (%s); running at normal priority" % (nice, e))
            nice = 0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    db = Database(cfg)
    result = {
        "schema": 1,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": cfg.backend,
        "quick": cfg.quick,
    }
    result.update(describe_machine(cfg, db.dir or db.workdir))
    result["config"] = {
        "db": db.describe(), "resources_requested": cfg.resources, "server_threads": cfg.server_threads or "default",
        "wrk_threads": cfg.wrk_threads, "connections": cfg.conns, "durations_s": cfg.dur, "warmup_s": cfg.warmup,
        "load_connections": cfg.load_connections, "obs_search_since": cfg.since, "perf": cfg.perf,
        "wait_quiet_s": env_int("BENCH_WAIT_QUIET", 0), "nice": nice,
    }
    figures = {}
    memory = {}
    server = None
    mach = result["machine"]
    log("concord bench — %s backend%s" % (cfg.backend, " (QUICK smoke run)" if cfg.quick else ""))
    log("machine: %s, %s cores, %s RAM, kernel %s, %s; %s free on %s (%s)" % (
        mach["cpu_model"], mach["cores"], fmt_bytes(mach["ram_bytes"] or 0), mach["kernel"],
        mach["hypervisor"] and "VM (%s)" % mach["hypervisor"] or "bare metal?",
        fmt_bytes(mach["disk_free_bytes"] or 0), mach["db_dir"], mach["db_filesystem"]))
    log("concord %s, commit %s%s" % (result["concord"]["version"], (result["concord"]["git_commit"] or "?")[:12],
                                      " (+ uncommitted changes)" if result["concord"]["git_dirty"] else ""))
    busy, steal = machine_busy()
    wait_quiet = env_int("BENCH_WAIT_QUIET", 0)
    if busy > 15 and wait_quiet > 0:
        log("bench: the machine is %.0f%% of a core busy; waiting up to %d s for it to be quiet ..." % (busy, wait_quiet))
        t_wait = time.time()
        while busy > 15 and time.time() - t_wait < wait_quiet:
            busy, steal = machine_busy(3.0)
        log("bench: %s after %.0f s (%.0f%% busy)" % ("quiet" if busy <= 15 else "still busy, starting anyway",
                                                     time.time() - t_wait, busy))
    result["machine"]["busy_before_run_percent"] = busy
    result["machine"]["steal_before_run_percent"] = steal
    result["machine"]["loadavg_before_run"] = read_file("/proc/loadavg").split()[:3]
    if busy > 15:
        log("WARNING: before starting, the machine was already %.0f%% of a core busy with other processes "
            "(loadavg %s); the figures will understate concord." % (busy, " ".join(result["machine"]["loadavg_before_run"])))
    try:
        server = Server(cfg, db)
        result["server"] = {"argv": server.argv, "startup_s": server.startup_s}
        log("server: pid %d at %s, db %s" % (server.pid, server.base, db.describe()))

        # 1. the population
        log("\n[1/6] loading ~%s resources as transaction Bundles over %d connections ..."
            % (fmt_int(cfg.resources), cfg.load_connections))
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, pg0, m0 = server.cpu_seconds(), pg_backend_cpu(server.pg_dbname), machine_cpu()
        load = population.load(server.fhir, cfg.resources, cfg.load_connections, cfg.load_timeout, progress=log)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1, pg1, m1 = server.cpu_seconds(), pg_backend_cpu(server.pg_dbname), machine_cpu()
        wall = load["seconds"] or 1.0
        load["server_cpu_percent"] = 100.0 * (cpu1 - cpu0) / wall
        load["loader_cpu_percent"] = 100.0 * (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / wall
        load["machine_cpu_percent"] = 100.0 * (m1[0] - m0[0]) / ((m1[1] - m0[1]) or 1) * (os.cpu_count() or 1)
        if server.pg_dbname:
            load["postgres_cpu_percent"] = 100.0 * (pg1 - pg0) / wall
            load["postgres_cpu_us_per_resource"] = 1e6 * (pg1 - pg0) / max(1, load["resources_loaded"])
        load["irq_cpu_percent"] = 100.0 * (m1[3] - m0[3]) / ((m1[1] - m0[1]) or 1) * (os.cpu_count() or 1)
        load["other_cpu_percent"] = max(0.0, load["machine_cpu_percent"] - load["server_cpu_percent"]
                                        - load["loader_cpu_percent"] - load.get("postgres_cpu_percent", 0)
                                        - load["irq_cpu_percent"])
        load["server_cpu_us_per_resource"] = 1e6 * (cpu1 - cpu0) / max(1, load["resources_loaded"])
        result["dataset"] = load
        if not load["ok"] or not server.alive():
            raise RuntimeError("loading failed (%s of %s resources)%s"
                               % (load["resources_loaded"], load["resources"],
                                  "" if server.alive() else ": the server " + server.death()))
        patients = load["patients"]
        log("  loaded %s resources (%s patients, %s Observations) in %.1f s: %s resources/s"
            % (fmt_int(load["resources"]), fmt_int(patients), fmt_int(load["observations"]), load["seconds"],
               fmt_int(load["resources_per_s"])))
        figures["load"] = {
            "workload": "population load: %s resources as %s transaction Bundles (whole patients: 1 Patient PUT "
                        "+ 20-50 Observations POST each, <= %d resources/bundle, mean %.0f) from %d concurrent "
                        "keep-alive connections (Python http.client), into an empty database"
                        % (fmt_int(load["resources"]), fmt_int(load["bundles"]), load["bundle_max_resources"],
                           load["resources"] / max(1, load["bundles"]), load["connections"]),
            "value": load["resources_per_s"], "unit": "resources/s", "seconds": load["seconds"],
            "server_cpu_percent": load["server_cpu_percent"], "loader_cpu_percent": load["loader_cpu_percent"],
            "machine_cpu_percent": load["machine_cpu_percent"], "other_cpu_percent": load["other_cpu_percent"],
            "server_cpu_us_per_resource": load["server_cpu_us_per_resource"],
            "postgres_cpu_percent": load.get("postgres_cpu_percent"),
        }
        wrk_env = {"BENCH_PATIENTS": str(patients), "BENCH_SINCE": cfg.since}

        # 2. size and memory after loading
        log("\n[2/6] database size and server memory ...")
        memory["after_load"] = server.status()
        size = db.size()
        tables = db.sqlite_tables()
        if tables:
            size["tables"] = tables
        result["database"] = size
        figures["db_size"] = {
            "workload": "database bytes on disk after the load (%s) / resources loaded" % (
                "SQLite file + WAL after PRAGMA wal_checkpoint(TRUNCATE)" if cfg.backend == "sqlite"
                else "pg_database_size"),
            "value": size["bytes"] / load["resources"], "unit": "bytes/resource", "bytes": size["bytes"],
        }
        log("  %s on disk: %s bytes/resource; server RSS %s" % (
            fmt_bytes(size["bytes"]), fmt_int(figures["db_size"]["value"]), fmt_bytes(memory["after_load"]["VmRSS"])))

        # 3. read by id
        log("\n[3/6] read by id ...")
        run_wrk(cfg, server, "read.lua", cfg.conns["read"], cfg.warmup, wrk_env)
        r = run_wrk(cfg, server, "read.lua", cfg.conns["read"], cfg.dur["read"], wrk_env)
        figures["read"] = dict(r, workload="GET /fhir/Patient/bench-<n>, n uniform over %s loaded patients; wrk %d "
                                           "threads, %d keep-alive connections, %d s (after a %d s warm-up)"
                                           % (fmt_int(patients), cfg.wrk_threads, cfg.conns["read"],
                                              cfg.dur["read"], cfg.warmup),
                               value=r["rps"], unit="requests/s")
        memory["after_read"] = server.status()
        log("  %s requests/s, p99 %.2f ms, errors %d" % (fmt_int(r["rps"]), r["latency_ms"]["p99"], r["error_count"]))

        # 4. searches
        log("\n[4/6] searches (checked against the expected answers first) ...")
        checks = check_searches(cfg, server, patients)
        result["search_checks"] = checks
        searches = [
            ("search_obs", "obs", "GET /fhir/Observation?patient=bench-<n>&code=http://loinc.org|<one of 8 codes>"
                                  "&date=ge" + cfg.since),
            ("search_ident", "ident", "GET /fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|<NHS number>"),
            ("search_family", "family", "GET /fhir/Patient?family=<family>&birthdate=<birthDate> (of patient n)"),
        ]
        for key, kind, what in searches:
            env = dict(wrk_env, BENCH_SEARCH=kind)
            run_wrk(cfg, server, "search.lua", cfg.conns["search"], cfg.warmup, env)
            r = run_wrk(cfg, server, "search.lua", cfg.conns["search"], cfg.dur["search"], env)
            c = checks[kind]
            figures[key] = dict(r, workload="%s, n uniform over %s patients, on %s resources; wrk %d threads, %d "
                                            "connections, %d s" % (what, fmt_int(patients),
                                                                   fmt_int(load["resources"]), cfg.wrk_threads,
                                                                   cfg.conns["search"], cfg.dur["search"]),
                                value=r["rps"], unit="requests/s",
                                checked="%d/%d correct" % (c["correct"], c["checked"]))
            log("  %-7s %s requests/s, p99 %.2f ms, errors %d; answers %d/%d correct"
                % (kind, fmt_int(r["rps"]), r["latency_ms"]["p99"], r["error_count"], c["correct"], c["checked"]))
            for w in c["wrong"]:
                log("    WRONG: %s expected %s got %s" % (w["path"], w["expected"], w["got"]))

        # 5. writes
        log("\n[5/6] creates: single Patients, then transaction Bundles of 100 ...")
        r = run_wrk(cfg, server, "create.lua", cfg.conns["create"], cfg.dur["create"], wrk_env)
        figures["create"] = dict(r, workload="POST /fhir/Patient, fresh content per request (server-assigned id), "
                                             "each a durable commit; wrk %d threads, %d connections, %d s, into the "
                                             "loaded database" % (cfg.wrk_threads, cfg.conns["create"],
                                                                  cfg.dur["create"]),
                                 value=r["rps"], unit="resources/s")
        log("  %s resources/s, p50 %.2f p99 %.2f ms, errors %d"
            % (fmt_int(r["rps"]), r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["error_count"]))
        r = run_wrk(cfg, server, "bundle.lua", cfg.conns["bundle"], cfg.dur["bundle"], wrk_env, timeout_s=60)
        figures["bundle"] = dict(r, workload="POST /fhir transaction Bundle: 1 Patient (fullUrl urn:uuid) + 99 "
                                             "Observations referencing it by urn:uuid, fresh per request; wrk %d "
                                             "threads, %d connections, %d s, into the loaded database"
                                             % (cfg.wrk_threads, cfg.conns["bundle"], cfg.dur["bundle"]),
                                 value=r["rps"] * 100, unit="resources/s", bundles_per_s=r["rps"])
        log("  %s bundles/s = %s resources/s, p50 %.1f p99 %.1f ms, errors %d"
            % ("%.1f" % r["rps"], fmt_int(r["rps"] * 100), r["latency_ms"]["p50"], r["latency_ms"]["p99"],
               r["error_count"]))

        # optional profiles, on repeat runs so the figures above are unperturbed
        if cfg.perf and shutil.which("perf"):
            log("\n[perf] profiling the server on repeat runs ...")
            result["perf"] = {}
            pd = max(5, min(10, cfg.dur["read"]))
            for name, script, conns, env in (
                    ("read", "read.lua", cfg.conns["read"], wrk_env),
                    ("search_obs", "search.lua", cfg.conns["search"], dict(wrk_env, BENCH_SEARCH="obs")),
                    ("search_ident", "search.lua", cfg.conns["search"], dict(wrk_env, BENCH_SEARCH="ident")),
                    ("create", "create.lua", cfg.conns["create"], wrk_env),
                    ("bundle", "bundle.lua", cfg.conns["bundle"], wrk_env)):
                out = os.path.join(db.workdir, "perf-%s.data" % name)
                run_wrk(cfg, server, script, conns, pd, env, timeout_s=60, perf_out=out)
                top = perf_top(out)
                dsos = perf_by_dso(out)
                result["perf"][name] = {"top_symbols": top, "by_dso": dsos}
                log("  %s — server time by library: %s" % (name, ", ".join(
                    "%s %.0f%%" % (d["dso"], d["percent"]) for d in dsos[:6])))
                log("  %s — top server functions (self time):" % name)
                for row in top[:15]:
                    log("    %5.1f%%  %-28s %s" % (row["percent"], row["dso"][:28], row["symbol"][:90]))

        # 6. stop
        log("\n[6/6] stopping the server (SIGTERM) ...")
        memory["final"] = server.status()
        rc = server.stop()
        result["server"]["exit_code"] = rc
        result["server"]["shutdown_s"] = getattr(server, "shutdown_s", None)
        result["memory"] = memory
        figures["memory"] = {
            "workload": "server VmRSS / VmHWM from /proc/PID/status (after load, after read, at the end)",
            "value": memory["final"].get("VmHWM"), "unit": "bytes (peak)",
            "after_load": memory["after_load"], "after_read": memory["after_read"], "final": memory["final"],
        }
    except BaseException:
        if server and server.alive():
            server.stop()
        if server:
            log("\nserver log (tail):\n" + server.log_tail())
        db.cleanup()
        raise
    db.cleanup()
    result["figures"] = figures
    result["wall_seconds"] = time.time() - t_start
    print_table(cfg, result)
    write_results(cfg, result, stamp)


def print_table(cfg, res):
    f = res["figures"]
    ds = res["dataset"]
    n_res = ds["resources"]
    mach = res["machine"]
    rows = []

    def lat(fig):
        l = fig.get("latency_ms")
        return "%.2f / %.2f / %.2f" % (l["p50"], l["p90"], l["p99"]) if l else ""

    def err(fig):
        return str(fig.get("error_count", "")) if "error_count" in fig else ""

    def cpu(fig, per=1):
        v = fig.get("server_cpu_us_per_request", fig.get("server_cpu_us_per_resource"))
        return "%.0f" % (v / per) if v else ""

    def rss(st):
        return "%s (anon %s, PSS %s)" % (fmt_bytes(st.get("VmRSS", 0)), fmt_bytes(st.get("RssAnon", 0)),
                                         fmt_bytes(st.get("Pss", 0)))

    rows.append(("load: population, transaction Bundles", "%s res/s" % fmt_int(f["load"]["value"]), "", "", "", "",
                 cpu(f["load"])))
    rows.append(("create: POST Patient, 1 per request", "%s res/s" % fmt_int(f["create"]["value"]), "", "",
                 lat(f["create"]), err(f["create"]), cpu(f["create"])))
    rows.append(("create: transaction Bundle of 100", "%s res/s" % fmt_int(f["bundle"]["value"]),
                 ">= 10,000 res/s", ratio_text(f["bundle"]["value"], TARGETS["bundle_resources_per_s"]),
                 lat(f["bundle"]), err(f["bundle"]), cpu(f["bundle"], 100)))
    rows.append(("read by id", "%s req/s" % fmt_int(f["read"]["value"]), ">= 20,000 req/s",
                 ratio_text(f["read"]["value"], TARGETS["read_rps"]), lat(f["read"]), err(f["read"]), cpu(f["read"])))
    rows.append(("read by id: p99 latency", "%.2f ms" % f["read"]["latency_ms"]["p99"], "< 10 ms",
                 ratio_text(f["read"]["latency_ms"]["p99"], TARGETS["read_p99_ms"], lower_is_better=True), "", "", ""))
    at = "" if n_res >= TARGETS["search_obs_at_resources"] else " (on 10M)"
    rows.append(("search Observation?patient&code&date", "%s req/s" % fmt_int(f["search_obs"]["value"]),
                 ">= 2,000 req/s" + at, ratio_text(f["search_obs"]["value"], TARGETS["search_obs_rps"]),
                 lat(f["search_obs"]), err(f["search_obs"]), cpu(f["search_obs"])))
    rows.append(("search Patient?identifier", "%s req/s" % fmt_int(f["search_ident"]["value"]), "", "",
                 lat(f["search_ident"]), err(f["search_ident"]), cpu(f["search_ident"])))
    rows.append(("search Patient?family&birthdate", "%s req/s" % fmt_int(f["search_family"]["value"]), "", "",
                 lat(f["search_family"]), err(f["search_family"]), cpu(f["search_family"])))
    rows.append(("database size", "%s B/resource" % fmt_int(f["db_size"]["value"]), "", "",
                 fmt_bytes(f["db_size"]["bytes"]), "", ""))
    m = f["memory"]
    peak_ratio = ""
    if ds["patients"] >= TARGETS["memory_at_people"]:
        peak_ratio = ratio_text(m["final"].get("VmHWM"), TARGETS["memory_bytes"], lower_is_better=True)
    rows.append(("server memory: RSS after load", rss(m["after_load"]), "< 1 GiB at 500k people", "", "", "", ""))
    rows.append(("server memory: RSS after read", rss(m["after_read"]), "", "", "", "", ""))
    rows.append(("server memory: RSS at the end", rss(m["final"]), "", "", "", "", ""))
    rows.append(("server memory: peak RSS (VmHWM)", fmt_bytes(m["final"].get("VmHWM", 0)), "< 1 GiB at 500k people",
                 peak_ratio, "", "", ""))
    head = ("figure", "result", "target", "ratio", "p50/p90/p99 ms", "errors", "srv CPU us/res")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    log("\n" + "=" * 120)
    log("concord %s (%s%s) on %s — %s%s" % (res["concord"]["version"], (res["concord"]["git_commit"] or "?")[:12],
                                           "+dirty" if res["concord"]["git_dirty"] else "", res["backend"],
                                           "QUICK smoke run, " if cfg.quick else "", res["timestamp"]))
    log("machine: %s x %s, %s RAM, kernel %s, db on %s" % (mach["cores"], mach["cpu_model"],
                                                          fmt_bytes(mach["ram_bytes"] or 0), mach["kernel"],
                                                          mach["db_filesystem"]))
    log("dataset: %s resources = %s patients + %s Observations" % (fmt_int(n_res), fmt_int(ds["patients"]),
                                                                  fmt_int(ds["observations"])))
    log("=" * 120)
    log("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    log("  ".join("-" * w[i] for i in range(len(head))))
    for r in rows:
        log("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())
    log("\nsrv CPU us/res: concord's CPU time (all threads) per request, or per resource for loads and bundles%s."
        % (" (PostgreSQL's backends are extra, shown below)" if res["backend"] == "postgresql" else ""))
    log("CPU columns below are percent of one core (the machine has %s): server / load generator / other processes"
        " (interrupt time, mostly our own loopback traffic, is left out)."
        % mach["cores"])
    log("\nworkloads:")
    noisy = []
    for key in ("load", "create", "bundle", "read", "search_obs", "search_ident", "search_family", "db_size"):
        fig = f[key]
        extra = ""
        if "server_cpu_percent" in fig:
            gen = fig.get("wrk_cpu_percent", fig.get("loader_cpu_percent")) or 0
            other = fig.get("other_cpu_percent") or 0
            if fig.get("postgres_cpu_percent") is not None:
                extra = " [CPU %.0f + postgres %.0f / %.0f / %.0f]" % (
                    fig["server_cpu_percent"] or 0, fig["postgres_cpu_percent"], gen, other)
            else:
                extra = " [CPU %.0f / %.0f / %.0f]" % (fig["server_cpu_percent"] or 0, gen, other)
            if other > 25:
                noisy.append("%s %.0f%%" % (key, other))
        if "checked" in fig:
            extra += " [answers %s]" % fig["checked"]
        log("  %-14s %s%s" % (key, fig["workload"], extra))
    if at:
        log("\nnote: the search target is for a 10-million-resource database; this run has %s "
            "(BENCH_RESOURCES=10000000 for the full size)." % fmt_int(n_res))
    if noisy or (mach.get("busy_before_run_percent") or 0) > 15:
        log("\nWARNING: other processes were using the CPU (before the run: %.0f%% of a core; during: %s). "
            "Figures that depend on CPU understate concord; srv CPU us/res is still comparable."
            % (mach.get("busy_before_run_percent") or 0, ", ".join(noisy) or "-"))
    log("wall time %.0f s" % res["wall_seconds"])


def write_results(cfg, res, stamp):
    os.makedirs(cfg.results_dir, exist_ok=True)
    text = json.dumps(res, indent=2, sort_keys=False) + "\n"
    if cfg.quick:
        # smoke runs overwrite one file and leave no timestamped history
        path = os.path.join(cfg.results_dir, "latest-%s-quick.json" % cfg.backend)
        with open(path, "w") as f:
            f.write(text)
        log("results: %s" % os.path.relpath(path))
        return
    path = os.path.join(cfg.results_dir, "%s-%s.json" % (stamp, cfg.backend))
    with open(path, "w") as f:
        f.write(text)
    latest = os.path.join(cfg.results_dir, "latest-%s.json" % cfg.backend)
    with open(latest, "w") as f:
        f.write(text)
    log("results: %s (and %s)" % (os.path.relpath(path), os.path.relpath(latest)))


if __name__ == "__main__":
    main()
