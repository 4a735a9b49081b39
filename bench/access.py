"""bench/access.py CONCORD_BINARY — what authorisation and access logging cost
read by id (issue 6's target: "Authorisation and access logging cost <= 15% of
read-by-id throughput compared with the same benchmark without them").

"Without them" is the same server before access control existed: commit
BASELINE_COMMIT (main just before issue 6; it has no authentication, no
relationships, no access log), extracted with `git archive` and built with
the same CMake build type as CONCORD_BINARY into a cache outside the tree
(BENCH_BASELINE_DIR/<commit>-<build type>/). Without git or that commit (a
tarball) the baseline is not built and no ratio is given — never a guess.
The product has no switch that turns access control off, and this script
does not want one.

One run:
  1. two fresh SQLite databases, one per build, each loaded through the FHIR
     API with the same population (bench/population.py, as bench.py loads
     it) plus one GP practice (Organization with an ODS code) at which every
     Patient is registered (Patient.generalPractitioner). The access build
     is loaded with bench.py's system token.
  2. on the access build's database, before its server starts: a `gp` user
     of that practice (`concord user add --role gp --org ODS`) and its API
     token; bench.py's `system` user and token as usual.
  3. checks: sampled Patient and Observation ids answer 200 with the right
     resource to every client (baseline without a token, GP, system) — the
     run stops if not.
  4. rounds, interleaved so that a machine shared with other work disturbs
     every variant alike: for Patient, then Observation, read by id by
     baseline / GP / system (the order reversed every other round), each a
     wrk run after a warm-up, with bench.py's read settings (2 threads, 32
     keep-alive connections, 20 s; quick 3 s). Every run must have no
     errors. The access log (events in audit_block) must grow by about the number of
     requests of each GP and system run.
  5. median requests/s and p99 per variant, overhead = 1 - GP / baseline
     (the GP reads evaluate the relationship query and write an access-log
     event each; the system role skips the relationship, shown for
     information), target <= 15% -> PASS / MISS.
  6. after the measurements: a Patient not registered at the practice must
     be refused to the GP (403): the GP runs were restricted reads.
Results go to bench/results/<UTC time>-access.json and latest-access.json
(quick: latest-access-quick.json) with the machine's description and load.

  BENCH_QUICK=1                 20,000 resources, 3 s runs, 2 rounds
  BENCH_ACCESS_RESOURCES=N      population (default 200,000; quick 20,000)
  BENCH_ACCESS_ROUNDS=N         rounds (default 3; quick 2)
  BENCH_DURATION=S              seconds per measured run (default 20; quick 3)
  BENCH_BASELINE_COMMIT=REV     the build without access control (default b102576)
  BENCH_BASELINE_DIR=DIR        where baseline builds are cached
                                (default $TMPDIR/concord-bench-baseline)
  BENCH_PERF=1                  after the rounds, profile GP and baseline reads
                                with perf (server time by function, inclusive)
  BENCH_PERF_CALLGRAPH=fp       perf's --call-graph (default dwarf,16384; fp for a
                                build with -fno-omit-frame-pointer)
  BENCH_THREADS, BENCH_TMPDIR, BENCH_KEEP, BENCH_RESULTS_DIR, BENCH_NICE,
  BENCH_WAIT_QUIET as for bench.py (bench/README.md).
"""

import datetime
import fcntl
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench  # noqa: E402
import population  # noqa: E402

TARGET_OVERHEAD = 0.15
# the access log's last seq: events are numbered 1, 2, 3 ... across blocks
LAST_SEQ = "SELECT coalesce(max(last), 0) FROM audit_block"
BASELINE_DEFAULT = "b102576"
PRACTICE = ("bench-practice", "Y90001")  # Organization id, ODS code: the GP's practice
GP_USER = "bench-gp"
TYPES = ("Patient", "Observation")

log = bench.log
fmt_int = bench.fmt_int
env_int = bench.env_int
GIT_ENV = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read-only: never touch the index


def loadavg():
    return [float(x) for x in bench.read_file("/proc/loadavg").split()[:3]] or None


# --------------------------------------------------------------------------
# the baseline build


def cmake_cache_of(binary):
    """CMakeCache.txt entries of the build directory holding `binary` (or a
    parent of it), as a dict; {} when there is none."""
    d = os.path.dirname(os.path.abspath(binary))
    for _ in range(3):
        p = os.path.join(d, "CMakeCache.txt")
        if os.path.exists(p):
            out = {"_path": p}
            for ln in bench.read_file(p).splitlines():
                m = re.match(r"^([A-Za-z_][\w-]*):\w+=(.*)$", ln)
                if m:
                    out[m.group(1)] = m.group(2)
            return out
        d = os.path.dirname(d)
    return {}


def baseline_build(access_binary):
    """Build (or find cached) the baseline. Returns a dict with `binary`, or
    with `error` saying why there is none."""
    spec = os.environ.get("BENCH_BASELINE_COMMIT", BASELINE_DEFAULT)
    info = {"commit_requested": spec}
    if not shutil.which("git"):
        info["error"] = "git is not installed"
        return info
    full = bench.run_text(["git", "-C", REPO, "rev-parse", "--verify", "--quiet", spec + "^{commit}"], env=GIT_ENV)
    if not re.fullmatch(r"[0-9a-f]{40}", full or ""):
        info["error"] = "commit %s is not in %s (not a git checkout, or a shallow/partial one)" % (spec, REPO)
        return info
    info["commit"] = full
    info["subject"] = bench.run_text(["git", "-C", REPO, "log", "-1", "--format=%s", full], env=GIT_ENV)
    cache = cmake_cache_of(access_binary)
    build_type = cache.get("CMAKE_BUILD_TYPE") or "RelWithDebInfo"
    sanitize = cache.get("CONCORD_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
    info["build_type"] = build_type
    info["build_type_from"] = cache.get("_path") or "default (no CMakeCache.txt beside the binary)"
    info["sanitize"] = sanitize
    root = os.environ.get("BENCH_BASELINE_DIR") or os.path.join(tempfile.gettempdir(), "concord-bench-baseline")
    os.makedirs(root, exist_ok=True)
    top = os.path.join(root, "%s-%s%s" % (full, build_type, "-sanitize" if sanitize else ""))
    binary = os.path.join(top, "build", "concord")
    info["dir"] = top
    info["binary"] = binary
    with open(top + ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # two runs at once build it once
        if os.path.exists(os.path.join(top, "built")) and os.access(binary, os.X_OK):
            info["cached"] = True
            info["version"] = bench.run_text([binary, "--version"])
            return info
        log("baseline: building %s (%s) with CMAKE_BUILD_TYPE=%s in %s ..." % (full[:12], info["subject"],
                                                                             build_type, top))
        t0 = time.time()
        shutil.rmtree(top, ignore_errors=True)
        src = os.path.join(top, "src")
        os.makedirs(src)
        blog = open(os.path.join(top, "build.log"), "w")
        try:
            arch = subprocess.Popen(["git", "-C", REPO, "archive", "--format=tar", full], stdout=subprocess.PIPE,
                                    stderr=blog, env=GIT_ENV)
            tar = subprocess.run(["tar", "-x", "-C", src], stdin=arch.stdout, stderr=blog)
            arch.stdout.close()
            if arch.wait() != 0 or tar.returncode != 0:
                raise RuntimeError("git archive %s | tar -x failed" % full)
            cfg = ["cmake", "-S", src, "-B", os.path.join(top, "build"), "-DCMAKE_BUILD_TYPE=" + build_type]
            if sanitize:
                cfg.append("-DCONCORD_SANITIZE=ON")
            if cache.get("CMAKE_C_COMPILER"):
                cfg.append("-DCMAKE_C_COMPILER=" + cache["CMAKE_C_COMPILER"])
            for argv in (cfg, ["cmake", "--build", os.path.join(top, "build"), "-j", str(os.cpu_count() or 2),
                               "--target", "concord"]):
                blog.write("$ %s\n" % " ".join(argv))
                blog.flush()
                if subprocess.run(argv, stdout=blog, stderr=subprocess.STDOUT).returncode != 0:
                    raise RuntimeError("%s failed" % " ".join(argv[:3]))
        except (OSError, RuntimeError) as e:
            blog.close()
            info["error"] = "building the baseline failed (%s); see %s" % (e, os.path.join(top, "build.log"))
            return info
        blog.close()
        open(os.path.join(top, "built"), "w").close()
        info["cached"] = False
        info["build_seconds"] = time.time() - t0
        info["version"] = bench.run_text([binary, "--version"])
        log("baseline: built in %.0f s" % info["build_seconds"])
        return info


# --------------------------------------------------------------------------
# one build with its database and server


class Side:
    """One build under test: its binary, a fresh database, its server, the
    Observation ids it assigned, and its clients' tokens."""

    def __init__(self, name, binary, cfg_proto):
        self.name = name
        self.cfg = bench.Config(binary)
        for k in ("resources", "dur", "warmup", "server_threads", "load_connections", "load_timeout", "keep",
                  "tmp_parent", "conns", "wrk_threads"):
            setattr(self.cfg, k, getattr(cfg_proto, k))
        self.cfg.db, self.cfg.backend = "", "sqlite"
        self.db = bench.Database(self.cfg)
        self.server = None
        self.tokens = {}
        self.ids_file = os.path.join(self.db.workdir, "observation-ids.txt")
        self.obs_ids = []

    def cli(self, *args):
        r = subprocess.run([self.cfg.binary] + list(args) + ["--db", self.db.arg], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s %s: %s" % (os.path.basename(self.cfg.binary), " ".join(args),
                                              (r.stderr or r.stdout).strip()))
        return r.stdout.strip()

    def start(self):
        guarded = "token" in bench.run_text([self.cfg.binary, "--help"])
        os.environ.pop("BENCH_TOKEN", None)
        if guarded:
            # the GP of the practice every patient is registered at, made
            # on the database before its server starts
            self.cli("user", "add", GP_USER, "--role", "gp", "--org", PRACTICE[1], "--display", "Dr Bench GP",
                     "--no-password")
            self.tokens["gp"] = self.cli("token", "create", "--user", GP_USER, "--label", "bench access.py")
        self.server = bench.Server(self.cfg, self.db)  # provisions bench.py's system user and token
        if guarded:
            self.tokens["system"] = os.environ.pop("BENCH_TOKEN")
        self.guarded = guarded

    def load(self):
        if self.guarded:
            os.environ["BENCH_TOKEN"] = self.tokens["system"]
        try:
            out = population.load(self.server.fhir, self.cfg.resources, self.cfg.load_connections,
                                  self.cfg.load_timeout, progress=log, practice=PRACTICE)
        finally:
            os.environ.pop("BENCH_TOKEN", None)
        if not out["ok"] or not self.server.alive():
            raise RuntimeError("%s: loading failed (%s of %s resources)%s" % (
                self.name, out["resources_loaded"], out["resources"],
                "" if self.server.alive() else ": the server " + self.server.death()))
        with self.ro() as c:
            self.obs_ids = [r[0] for r in c.execute(
                "SELECT id FROM resource WHERE rtype = 'Observation' AND deleted = 0 ORDER BY rkey")]
        if len(self.obs_ids) != out["observations"]:
            raise RuntimeError("%s: %d Observations in the database, %d loaded"
                               % (self.name, len(self.obs_ids), out["observations"]))
        with open(self.ids_file, "w") as f:
            f.write("\n".join(self.obs_ids) + "\n")
        return out

    def ro(self, audit=False):
        """Read-only connection to the database, or (audit) to the access
        log's own file beside it (docs/audit.md)."""
        path = self.db.path + (".audit" if audit else "")
        c = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
        c.execute("PRAGMA busy_timeout = 30000")
        return c

    def audit_rows(self, at_least=0, limit=120):
        """Rows in the access log. The server commits wait=0 events (reads)
        from a queue within flush_ms, or later when its writer is behind:
        wait until there are at least `at_least` rows and the number has
        stopped moving for a second (at most `limit` s). The chain's seq runs
        1, 2, 3 ... without gaps (docs/audit.md), so the last block's last
        seq is the count; audit_count() checks that at the end."""
        last, since = -1, time.time()
        t0 = time.time()
        while True:
            with self.ro(audit=True) as c:
                n = c.execute(LAST_SEQ).fetchone()[0]
            now = time.time()
            if n != last:
                last, since = n, now
            elif n >= at_least and now - since >= 1.0:
                return n
            if now - t0 > limit:
                return n
            time.sleep(0.1)

    def audit_now(self):
        with self.ro(audit=True) as c:
            return c.execute(LAST_SEQ).fetchone()[0]

    def audit_count(self):
        with self.ro(audit=True) as c:
            return c.execute("SELECT coalesce(sum(last - seq + 1), 0), coalesce(max(last), 0)"
                             " FROM audit_block").fetchone()

    def stop(self):
        if self.server and self.server.alive():
            self.server.stop()


# --------------------------------------------------------------------------
# checks


def get(url, token, timeout=30):
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_reads(side, client, token, patients, n=40):
    """GET n sampled Patients and n sampled Observations; every answer must
    be 200 with the resource asked for."""
    rnd = random.Random(11)
    bad = []
    paths = [("Patient", "bench-%d" % rnd.randint(1, patients)) for _ in range(n)]
    paths += [("Observation", rnd.choice(side.obs_ids)) for _ in range(n)]
    for rtype, rid in paths:
        st, body = get("%s/%s/%s" % (side.server.fhir, rtype, rid), token)
        ok = st == 200
        if ok:
            try:
                j = json.loads(body)
                ok = j.get("resourceType") == rtype and j.get("id") == rid
                if rtype == "Patient" and ok:
                    ok = (j.get("generalPractitioner") or [{}])[0].get("reference") == "Organization/" + PRACTICE[0]
            except ValueError:
                ok = False
        if not ok:
            bad.append("%s/%s -> HTTP %d %s" % (rtype, rid, st, body[:300].decode("utf-8", "replace")))
    if bad:
        raise SystemExit("access bench: %s reads as %s are not all 200 with the resource asked for (%d of %d):\n  %s"
                         % (side.name, client, len(bad), len(paths), "\n  ".join(bad[:5])))
    return {"client": client, "checked": len(paths), "ok": len(paths)}


# --------------------------------------------------------------------------
# the runs


def cpu_of(side):
    return side.server.cpu_seconds() if side and side.server and side.server.alive() else 0.0


def writer_cpu_of(side):
    """CPU seconds of the access log's writer thread (named "audit-writer"
    by src/access/audit.c), 0 if there is none."""
    if not (side and side.server and side.server.alive()):
        return 0.0
    base = "/proc/%d/task" % side.server.pid
    try:
        tids = os.listdir(base)
    except OSError:
        return 0.0
    for tid in tids:
        if bench.read_file("%s/%s/comm" % (base, tid)).strip() == "audit-writer":
            f = bench.read_file("%s/%s/stat" % (base, tid)).rsplit(")", 1)[-1].split()
            if len(f) >= 13:
                return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def settle(sides, limit=300):
    """Wait until every server is idle (after a load a server may still be
    working in the background): under 3% of a core over 2 s."""
    t0 = time.time()
    while time.time() - t0 < limit:
        c0 = [cpu_of(s) for s in sides]
        time.sleep(2.0)
        busy = [100.0 * (cpu_of(s) - c) / 2.0 for s, c in zip(sides, c0)]
        if max(busy) < 3.0:
            return time.time() - t0
    log("  note: the servers were still busy after %d s (%s); measuring anyway"
        % (limit, ", ".join("%.0f%%" % b for b in busy)))
    return time.time() - t0


def one_run(cfg, side, client, rtype, patients, all_sides):
    token = side.tokens.get(client, "") if client != "baseline" else ""
    env = {"BENCH_PATIENTS": str(patients), "BENCH_READ_TYPE": rtype, "BENCH_IDS_FILE": side.ids_file,
           "BENCH_TOKEN": token}
    bench.run_wrk(cfg, side.server, "access_read.lua", cfg.conns["read"], cfg.warmup, env)
    audit0 = side.audit_rows() if side.guarded else None
    others = [s for s in all_sides if s is not side]
    oc0 = [cpu_of(s) for s in others]
    la0 = loadavg()
    t0 = time.time()
    cpu0 = cpu_of(side)
    wcpu0 = writer_cpu_of(side)
    r = bench.run_wrk(cfg, side.server, "access_read.lua", cfg.conns["read"], cfg.dur["read"], env)
    wall = time.time() - t0
    r["idle_servers_cpu_percent"] = sum(100.0 * (cpu_of(s) - c) / wall for s, c in zip(others, oc0))
    r["loadavg_before"] = la0
    r["loadavg_after"] = loadavg()
    if r["error_count"]:
        raise SystemExit("access bench: %s %s reads as %s had errors %s (every read must succeed)"
                         % (side.name, rtype, client, r["errors"]))
    r["server_cpu_us_per_request_with_log"] = r["server_cpu_us_per_request"]
    if side.guarded:
        # events of this run not yet committed when wrk stopped: the writer
        # finishes them after the run, on CPU the run did not pay for; wait
        # for them (so the next run does not pay either) and count that CPU
        t_end = time.time()
        backlog = audit0 + r["requests"] - side.audit_now()
        grown = side.audit_rows(at_least=audit0 + r["requests"]) - audit0
        r["log_backlog_at_end"] = max(0, backlog)
        r["log_drain_s"] = time.time() - t_end
        r["server_cpu_us_per_request_with_log"] = 1e6 * (cpu_of(side) - cpu0) / r["ok_requests"]
        r["audit_rows_added"] = grown
        r["writer_cpu_us_per_event"] = 1e6 * (writer_cpu_of(side) - wcpu0) / grown if grown else None
        # wrk counts the responses it read; requests still in flight when it
        # stopped (at most one per connection) are answered and logged too
        r["audit_rows_per_request"] = grown / r["requests"] if r["requests"] else None
        if not (r["requests"] <= grown <= r["requests"] + 2 * cfg.conns["read"]):
            raise SystemExit("access bench: %s %s reads as %s: the access log grew by %d rows for %d requests"
                             % (side.name, rtype, client, grown, r["requests"]))
    r.update(side=side.name, client=client, type=rtype)
    return r


def summarise(runs, rtype, client):
    rs = [r for r in runs if r["type"] == rtype and r["client"] == client]
    if not rs:
        return None
    return {
        "runs": len(rs),
        "rps": [r["rps"] for r in rs],
        "rps_median": statistics.median(r["rps"] for r in rs),
        "p50_ms_median": statistics.median(r["latency_ms"]["p50"] for r in rs),
        "p99_ms": [r["latency_ms"]["p99"] for r in rs],
        "p99_ms_median": statistics.median(r["latency_ms"]["p99"] for r in rs),
        "server_cpu_us_per_request_median": statistics.median(r["server_cpu_us_per_request_with_log"] or 0
                                                              for r in rs),
        "log_backlog_at_end_max": max(r.get("log_backlog_at_end", 0) for r in rs),
        "other_cpu_percent_max": max((r.get("other_cpu_percent") or 0) for r in rs),
    }


def paired_overheads(runs, rtype, client):
    """1 - client/baseline of each round (runs of one round are adjacent)."""
    out = []
    for rnd in sorted({r["round"] for r in runs}):
        b = [r for r in runs if r["round"] == rnd and r["type"] == rtype and r["client"] == "baseline"]
        a = [r for r in runs if r["round"] == rnd and r["type"] == rtype and r["client"] == client]
        if a and b and b[0]["rps"]:
            out.append(1.0 - a[0]["rps"] / b[0]["rps"])
    return out


# --------------------------------------------------------------------------
# profiles (BENCH_PERF=1)

# Where a sample of the server's time goes, decided by the functions on its
# stack (perf --call-graph dwarf: the build has no frame pointers). First
# match wins; the order puts the access-control parts before what they call.
PROFILE_BUCKETS = [
    ("relationship check: preparing its SQL", ("store_scope_check",), ("sq_prepare", "sqlite3_prepare")),
    ("relationship check: running its SQL", ("store_scope_check",), ("sq_step", "sqlite3_step")),
    ("relationship check: building the SQL, finalize", ("store_scope_check",), ()),
    ("scope of the principal (acc_scope_for)", ("acc_scope_for",), ()),
    ("access-log writer thread: WAL checkpoint", ("writer_main",), ("Checkpoint", "checkpoint")),
    ("access-log writer thread: commit (WAL write, fsync)", ("writer_main",), ("sq_commit",)),
    ("access-log writer thread: event hash (BLAKE2b)", ("writer_main",), ("ablock_hash",)),
    ("access-log writer thread: encoding the events", ("writer_main",), ("ablock_put",)),
    ("access-log writer thread: index rows (patients, users)", ("writer_main",), ("put_patients", "cmp_")),
    ("access-log writer thread: INSERT blocks", ("writer_main",), ()),
    ("access log: patient id of the event (guard_patient_id SQL)", ("guard_patient_id",), ()),
    ("access log: queueing the event (guard_audit, audit_append)", ("guard_audit", "audit_append"), ()),
    ("authentication (token check and cache)", ("auth_",), ()),
    ("role permission (guard_role)", ("guard_role",), ()),
    ("store_read (the resource itself)", ("store_read",), ()),
    ("sending the response (kernel TCP)", ("__libc_sendmsg", "__send", "sendmsg"), ()),
    ("receiving requests", ("recv", "__libc_recv"), ()),
    ("REST handler, rendering (rest of on_request)", ("on_request",), ()),
    ("libmicrohttpd and the kernel outside a request (epoll, memset of the connection pool, ...)", ("",), ()),
]


def classify(stack):
    for name, anyof, sub in PROFILE_BUCKETS:
        if any(f.startswith(a) for f in stack for a in anyof):
            if not sub:
                return name
            if any(x in f for f in stack for x in sub):
                return name
    return PROFILE_BUCKETS[-1][0]


def perf_buckets(path):
    """Share of the server's samples in each PROFILE_BUCKETS entry."""
    r = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True, text=True,
                       timeout=900)
    counts, n, stack = {}, 0, []
    for ln in r.stdout.splitlines() + [""]:
        if ln.strip():
            parts = ln.split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else parts[0])
            continue
        if stack:
            b = classify(stack)
            counts[b] = counts.get(b, 0) + 1
            n += 1
            stack = []
    return n, {k: 100.0 * v / n for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if n else {}


def profile(cfg, variants, patients, workdir, measured):
    """Repeat each read under perf; report the share of the server's time in
    each PROFILE_BUCKETS entry, and that share of the server CPU per request
    measured without perf (`measured`, by (client, type)): perf's own
    overhead inflates the CPU of the profiled run, not the shares."""
    if not shutil.which("perf"):
        log("  perf is not installed (apt-get install linux-perf); no profile")
        return None
    out = {}
    pd = max(5, min(10, cfg.dur["read"]))
    for side, client in variants:
        for rtype in TYPES:
            name = "%s-%s" % (client, rtype)
            path = os.path.join(workdir, "perf-%s.data" % name)
            token = side.tokens.get(client, "") if client != "baseline" else ""
            env = {"BENCH_PATIENTS": str(patients), "BENCH_READ_TYPE": rtype, "BENCH_IDS_FILE": side.ids_file,
                   "BENCH_TOKEN": token}
            bench.run_wrk(cfg, side.server, "access_read.lua", cfg.conns["read"], 1, env)
            perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph",
                                     os.environ.get("BENCH_PERF_CALLGRAPH", "dwarf,16384"), "-p",
                                     str(side.server.pid), "-o", path, "--", "sleep", str(pd)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = bench.run_wrk(cfg, side.server, "access_read.lua", cfg.conns["read"], pd, env)
            perf.wait(timeout=120)
            n, buckets = perf_buckets(path)
            us = measured.get((client, rtype)) or r["server_cpu_us_per_request"] or 0
            out[name] = {"rps_under_perf": r["rps"], "server_cpu_us_per_request_under_perf":
                         r["server_cpu_us_per_request"], "server_cpu_us_per_request_measured": us, "samples": n,
                         "percent_of_server_time": buckets,
                         "us_per_request": {k: v * us / 100.0 for k, v in buckets.items()}}
            log("\n  %s: %d samples; server %.1f us CPU/request (measured runs' median), of which:"
                % (name, n, us))
            for k, v in buckets.items():
                if v >= 0.5:
                    log("    %5.1f%%  %5.1f us  %s" % (v, v * us / 100.0, k))
            if not cfg.keep:
                os.unlink(path)
    return out


# --------------------------------------------------------------------------
# the run


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    if len(sys.argv) != 2:
        sys.exit("usage: bench/access.py CONCORD_BINARY")
    binary = os.path.abspath(sys.argv[1])
    proto = bench.Config(binary)
    proto.resources = env_int("BENCH_ACCESS_RESOURCES", 20_000 if proto.quick else 200_000)
    rounds = env_int("BENCH_ACCESS_ROUNDS", 2 if proto.quick else 3)
    t_start = time.time()
    nice = env_int("BENCH_NICE", 0)
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            log("access bench: cannot set nice %d (%s)" % (nice, e))
            nice = 0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log("\nconcord access bench — authorisation and access logging vs the build without them%s"
        % (" (QUICK smoke run)" if proto.quick else ""))
    if "token" not in bench.run_text([binary, "--help"]):
        sys.exit("access bench: %s has no access control (no `concord token`); nothing to measure" % binary)

    base_info = baseline_build(binary)
    if base_info.get("error"):
        log("baseline: CANNOT BE BUILT — %s. The GP and system reads are measured; no overhead is given." %
            base_info["error"])

    result = {"schema": 1,
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "benchmark": "access", "backend": "sqlite", "quick": proto.quick}
    sides = []
    try:
        access = Side("access", binary, proto)
        sides.append(access)
        baseline = None
        if base_info.get("binary"):
            baseline = Side("baseline", base_info["binary"], proto)
            sides.append(baseline)
        result.update(bench.describe_machine(access.cfg, access.db.dir))
        cache = cmake_cache_of(binary)
        result["concord"]["build_type"] = cache.get("CMAKE_BUILD_TYPE")
        result["concord"]["build_source_dir"] = cache.get("CMAKE_HOME_DIRECTORY")
        result["baseline"] = base_info
        busy, steal = bench.machine_busy()
        wait_quiet = env_int("BENCH_WAIT_QUIET", 0)
        t_wait = time.time()
        while busy > 15 and time.time() - t_wait < wait_quiet:
            busy, steal = bench.machine_busy(3.0)
        result["machine"]["busy_before_run_percent"] = busy
        result["machine"]["loadavg_before_run"] = loadavg()
        result["config"] = {
            "resources_requested": proto.resources, "rounds": rounds, "duration_s": proto.dur["read"],
            "warmup_s": proto.warmup, "wrk_threads": proto.wrk_threads, "connections": proto.conns["read"],
            "server_threads": proto.server_threads or "default", "load_connections": proto.load_connections,
            "practice": {"organization": PRACTICE[0], "ods": PRACTICE[1]}, "gp_user": GP_USER, "nice": nice,
        }
        log("machine: %s, %s cores; loadavg %s, %.0f%% of a core busy before starting"
            % (result["machine"]["cpu_model"], result["machine"]["cores"],
               " ".join("%.2f" % x for x in result["machine"]["loadavg_before_run"]), busy))
        log("access build:   %s (commit %s%s)" % (binary, (result["concord"]["git_commit"] or "?")[:12],
                                                 "+dirty" if result["concord"]["git_dirty"] else ""))
        if baseline:
            log("baseline build: %s (commit %s, %s%s)" % (base_info["binary"], base_info["commit"][:12],
                                                         base_info["build_type"],
                                                         ", cached" if base_info.get("cached") else ""))

        # 1-2. databases, users, servers, the population
        datasets = {}
        for s in sides:
            log("\n[%s] starting the server and loading ~%s resources (+ the practice) ..."
                % (s.name, fmt_int(proto.resources)))
            s.start()
            datasets[s.name] = s.load()
            d = datasets[s.name]
            log("  %s resources (%s patients, %s Observations) in %.1f s: %s resources/s"
                % (fmt_int(d["resources"]), fmt_int(d["patients"]), fmt_int(d["observations"]), d["seconds"],
                   fmt_int(d["resources_per_s"])))
        result["dataset"] = datasets
        patients = datasets["access"]["patients"]
        if baseline and (datasets["baseline"]["resources"], datasets["baseline"]["patients"]) != \
                (datasets["access"]["resources"], patients):
            raise SystemExit("access bench: the two databases differ: %s vs %s" % (datasets["baseline"],
                                                                                    datasets["access"]))
        log("\nwaiting for the servers to be idle ...")
        result["settle_s"] = settle(sides)

        # 3. checks before measuring
        checks = [check_reads(access, "gp", access.tokens["gp"], patients),
                  check_reads(access, "system", access.tokens["system"], patients)]
        if baseline:
            checks.append(check_reads(baseline, "baseline (no token)", "", patients))
        result["checks"] = {"reads": checks}
        log("checks: sampled Patient and Observation reads answer 200 with the resource asked for: %s"
            % ", ".join("%s %d/%d" % (c["client"], c["ok"], c["checked"]) for c in checks))

        # 4. interleaved rounds
        variants = ([(baseline, "baseline")] if baseline else []) + [(access, "gp"), (access, "system")]
        runs = []
        log("\n%d rounds x %s x %s, %d s each after a %d s warm-up, wrk %d threads %d connections ..."
            % (rounds, "/".join(TYPES), "/".join(c for _, c in variants), proto.dur["read"], proto.warmup,
               proto.wrk_threads, proto.conns["read"]))
        for rnd in range(1, rounds + 1):
            for rtype in TYPES:
                order = variants if rnd % 2 else list(reversed(variants))
                for side, client in order:
                    r = one_run(access.cfg if side is access else side.cfg, side, client, rtype, patients, sides)
                    r["round"] = rnd
                    runs.append(r)
                    log("  round %d %-11s %-8s %8s req/s  p50 %5.2f  p99 %6.2f ms  srv %4.0f us/req  "
                        "other CPU %3.0f%%  load %.2f%s"
                        % (rnd, rtype, client, fmt_int(r["rps"]), r["latency_ms"]["p50"], r["latency_ms"]["p99"],
                           r["server_cpu_us_per_request_with_log"] or 0, r.get("other_cpu_percent") or 0,
                           r["loadavg_after"][0],
                           "  log +%s (%s behind at the end; writer %.1f us/event)"
                           % (fmt_int(r["audit_rows_added"]), fmt_int(r["log_backlog_at_end"]),
                              r.get("writer_cpu_us_per_event") or 0)
                           if "audit_rows_added" in r else ""))
        result["runs"] = runs

        # 6. the GP's reads were restricted: a patient registered elsewhere is refused
        body = json.dumps({"resourceType": "Patient", "id": "bench-elsewhere", "active": True,
                           "name": [{"family": "Elsewhere"}]}).encode()
        req = urllib.request.Request(access.server.fhir + "/Patient/bench-elsewhere", data=body, method="PUT",
                                     headers={"Content-Type": "application/fhir+json",
                                              "Authorization": "Bearer " + access.tokens["system"]})
        with urllib.request.urlopen(req, timeout=30) as r:
            put_status = r.status
        st, body = get(access.server.fhir + "/Patient/bench-elsewhere", access.tokens["gp"])
        result["checks"]["unregistered_patient_for_gp"] = {"put": put_status, "gp_read": st}
        if st != 403:
            raise SystemExit("access bench: the GP read a patient not registered at the practice (HTTP %d): the GP "
                             "runs did not measure restricted reads" % st)
        log("check: a patient registered elsewhere is refused to the GP (HTTP %d), as it should be" % st)

        if os.environ.get("BENCH_PERF", "") not in ("", "0"):
            log("\n[perf] profiling the servers on repeat runs ...")
            measured = {(c, t): statistics.median(r["server_cpu_us_per_request_with_log"] or 0 for r in runs
                                                  if r["client"] == c and r["type"] == t)
                        for _, c in variants for t in TYPES}
            result["perf"] = profile(access.cfg, variants, patients, access.db.workdir, measured)
        access.audit_rows()
        n, top = access.audit_count()
        result["checks"]["audit_log_at_end"] = {"rows": n, "max_seq": top}
        if n != top:
            raise SystemExit("access bench: the access log has %d rows but its last seq is %d" % (n, top))
    finally:
        for s in sides:
            s.stop()
        for s in sides:
            s.db.cleanup()

    # 5. figures
    summary = {}
    for rtype in TYPES:
        summary[rtype] = {c: summarise(runs, rtype, c) for _, c in variants}
        for c in ("gp", "system"):
            b, a = summary[rtype].get("baseline"), summary[rtype][c]
            if b:
                a["overhead"] = 1.0 - a["rps_median"] / b["rps_median"]
                a["overhead_paired"] = paired_overheads(runs, rtype, c)
                a["cpu_per_request_increase"] = (a["server_cpu_us_per_request_median"]
                                                 / b["server_cpu_us_per_request_median"] - 1.0)
    result["summary"] = summary
    if baseline:
        worst = max(summary[t]["gp"]["overhead"] for t in TYPES)
        result["target"] = {"overhead_max": TARGET_OVERHEAD, "measured_worst_gp": worst,
                            "verdict": "PASS" if worst <= TARGET_OVERHEAD else "MISS"}
    else:
        result["target"] = {"overhead_max": TARGET_OVERHEAD, "verdict": "NOT MEASURED",
                            "why": base_info.get("error")}
    result["machine"]["loadavg_after_run"] = loadavg()
    result["wall_seconds"] = time.time() - t_start
    print_table(result, variants)
    write_results(proto, result, stamp)


def print_table(res, variants):
    s = res["summary"]
    b = res.get("baseline") or {}
    log("\n" + "=" * 118)
    log("authorisation + access logging vs none — read by id, %s resources, %d rounds%s — %s"
        % (fmt_int(res["dataset"]["access"]["resources"]), res["config"]["rounds"],
           " (QUICK smoke run)" if res["quick"] else "", res["timestamp"]))
    log("access build %s%s; baseline %s" % ((res["concord"]["git_commit"] or "?")[:12],
                                            "+dirty" if res["concord"]["git_dirty"] else "",
                                            "%s %s (%s)" % (b["commit"][:12], b.get("build_type"), b.get("subject"))
                                            if b.get("commit") and not b.get("error") else "NONE: " + b.get("error", "")))
    log("machine: %s x %s; loadavg before %s, after %s" % (
        res["machine"]["cores"], res["machine"]["cpu_model"],
        " ".join("%.2f" % x for x in res["machine"]["loadavg_before_run"]),
        " ".join("%.2f" % x for x in res["machine"]["loadavg_after_run"])))
    log("=" * 118)
    head = ("read by id", "client", "req/s (median)", "per run", "p50 ms", "p99 ms (median)", "srv us/req",
            "overhead", "paired", "target")
    rows = []
    for rtype in s:
        for _, c in variants:
            f = s[rtype][c]
            ov = f.get("overhead")
            tgt = ""
            if c == "gp" and ov is not None:
                tgt = "<= 15%% %s" % ("PASS" if ov <= TARGET_OVERHEAD else "MISS")
            elif c == "system" and ov is not None:
                tgt = "(info)"
            rows.append((rtype, {"baseline": "none (baseline)", "gp": "GP + relationship",
                                 "system": "system token"}[c],
                         fmt_int(f["rps_median"]), " ".join(fmt_int(x) for x in f["rps"]),
                         "%.2f" % f["p50_ms_median"],
                         "%.2f (%s)" % (f["p99_ms_median"], " ".join("%.1f" % x for x in f["p99_ms"])),
                         "%.0f" % f["server_cpu_us_per_request_median"],
                         "%.1f%%" % (100 * ov) if ov is not None else "",
                         " ".join("%.0f%%" % (100 * x) for x in f.get("overhead_paired", [])), tgt))
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    log("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    log("  ".join("-" * w[i] for i in range(len(head))))
    for r in rows:
        log("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())
    t = res["target"]
    log("\noverhead = 1 - median req/s / baseline median req/s; paired = the same per round (adjacent runs).")
    log("srv us/req: the server's CPU (all threads) per request, including the access-log writer's work on the "
        "run's events after wrk stopped (its backlog).")
    if t["verdict"] == "NOT MEASURED":
        log("target (<= 15%%): NOT MEASURED — no baseline: %s" % t.get("why"))
    else:
        log("target: authorisation and access logging cost <= 15%% of read-by-id throughput: worst GP overhead "
            "%.1f%% -> %s" % (100 * t["measured_worst_gp"], t["verdict"]))
    others = [r.get("other_cpu_percent") or 0 for r in res["runs"]]
    log("other processes during the runs: %.0f%%..%.0f%% of a core; loadavg %.2f..%.2f" % (
        min(others), max(others), min(r["loadavg_before"][0] for r in res["runs"]),
        max(r["loadavg_after"][0] for r in res["runs"])))
    if max(others) > 25:
        log("WARNING: other work used the CPU during some runs; the interleaving spreads it over every variant, "
            "and srv us/req stays comparable.")
    log("wall time %.0f s" % res["wall_seconds"])


def write_results(cfg, res, stamp):
    os.makedirs(cfg.results_dir, exist_ok=True)
    text = json.dumps(res, indent=2) + "\n"
    if cfg.quick:
        path = os.path.join(cfg.results_dir, "latest-access-quick.json")
        with open(path, "w") as f:
            f.write(text)
        log("results: %s" % os.path.relpath(path))
        return
    path = os.path.join(cfg.results_dir, "%s-access.json" % stamp)
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(cfg.results_dir, "latest-access.json"), "w") as f:
        f.write(text)
    log("results: %s (and latest-access.json)" % os.path.relpath(path))


if __name__ == "__main__":
    main()
