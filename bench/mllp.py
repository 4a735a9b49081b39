"""mllp.py — HL7 v2 over MLLP: messages per second with the ACK after the
durable commit (DESIGN.md target: >= 5,000 messages/s over 8 connections,
SQLite). Run by bench/run.sh after the server benchmarks; on its own:

    /usr/bin/python3 bench/mllp.py build/concord

One run: `concord synth --error-rate 0` writes realistic hospital feeds
(acute/<ODS>.hl7: ADT A28/A04/A01/A08/A02/A03/A11/A13/A31/A40 and ORU^R01,
MLLP-framed); `concord serve` starts on a fresh SQLite database in a temp
directory; 8 connections (one selector loop, raw sockets) each send a
frame and wait for its ACK before the next — as a hospital interface engine
does — for a bounded time or until the messages run out. Every ACK must be
AA for the control id sent. Prints msg/s, p50/p90/p99 ACK latency and the
server's messages per commit (from its shutdown line), and writes them
with the machine description to bench/results/.

Each connection replays a contiguous share of the stream, so one person's
messages mostly travel in order on one connection, as from a real PAS;
the hospitals' files are interleaved into one stream first. (The synth
writes a discharge's PV1-44 and PV1-45 run together into PV1-45; the frames
are put right before sending — see repair_pv1_times.)

Environment (besides bench.py's BENCH_TMPDIR, BENCH_KEEP, BENCH_RESULTS_DIR):
  BENCH_QUICK=1            smoke run: 1,500 people, 3 s
  BENCH_MLLP_PATIENTS=N    synthetic people (default 8,000: ~100,000 messages)
  BENCH_MLLP_SECONDS=S     measured time bound (default 15; quick 3)
  BENCH_MLLP_CONNECTIONS=C sender connections (default 8)
  BENCH_MLLP_WARMUP=N      messages per connection before measuring (default 200)
  BENCH_PERF=1             also profile the server (perf record -g) while measuring

The database starts empty and grows during the run: the rate falls as its
indexes grow, so figures compare only at the same size and duration.
"""

import datetime
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402

TARGET_MSG_PER_S = 5000.0
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def log(msg=""):
    print(msg, flush=True)


def frames_of(path):
    """The MLLP frames of a synth acute/<ODS>.hl7 file, as bytes (framing included)."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    i = 0
    while True:
        s = data.find(VT, i)
        if s < 0:
            break
        e = data.find(FS + CR, s)
        if e < 0:
            break
        out.append(repair_pv1_times(data[s:e + 2]))
        i = e + 2
    return out


def repair_pv1_times(frame):
    """concord synth (src/synth/feeds.c pv1_segment) writes PV1-45 before
    PV1-44, so a discharge's two times end up run together in PV1-45
    ("<discharge><admit>", 24 digits) — an AE for a real server. Put them
    back in their fields; a no-op for frames without that fault."""
    if b"PV1" not in frame:
        return frame
    segs = frame.split(b"\r")
    for i, seg in enumerate(segs):
        if seg.startswith(b"PV1"):
            f = seg.split(seg[3:4])
            if len(f) == 46 and len(f[45]) == 24 and f[45].isdigit() and not f[44]:
                f[44], f[45] = f[45][12:], f[45][:12]
                segs[i] = seg[3:4].join(f)
    return b"\r".join(segs)


def control_id(frame):
    """MSH-10 of a framed message."""
    msh = frame[1:frame.find(b"\r")]
    sep = msh[3:4]
    f = msh.split(sep)
    return f[9] if len(f) > 9 else b""


def ack_code(frame):
    """(MSA-1, MSA-2) of an ACK frame."""
    for seg in frame.strip(VT + FS + CR).split(b"\r"):
        if seg.startswith(b"MSA"):
            f = seg.split(seg[3:4])
            return (f[1] if len(f) > 1 else b""), (f[2] if len(f) > 2 else b"")
    return b"", b""


def percentile(sorted_v, p):
    if not sorted_v:
        return None
    k = min(len(sorted_v) - 1, max(0, int(round(p / 100.0 * (len(sorted_v) - 1)))))
    return sorted_v[k]


class Sender:
    def __init__(self, port, frames):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.frames = frames
        self.next = 0
        self.inbuf = b""
        self.sent_at = 0
        self.control = b""
        self.busy = False


def drive(port, shares, warmup, seconds):
    """Send every share on its own connection, sequentially (frame, wait for
    its ACK, next), until `seconds` have passed after the warm-up (the first
    `warmup` x connections ACKs, not measured) or the shares run out. Returns
    counts, ACK latencies (ns) and ACKs per second of the run."""
    sel = selectors.DefaultSelector()
    senders = [Sender(port, fr) for fr in shares]
    lat = []
    bad = []
    timeline = []  # ACKs per second of the run
    acked = 0
    measured = 0
    t_measure = None
    deadline = None
    total_warm = sum(min(warmup, len(s.frames)) for s in senders)

    def send_next(s):
        if s.next >= len(s.frames) or (deadline and time.perf_counter() >= deadline):
            s.busy = False
            return False
        fr = s.frames[s.next]
        s.next += 1
        s.control = control_id(fr)
        s.sent_at = time.perf_counter_ns()
        s.sock.sendall(fr)  # small frames: the socket buffer takes them whole
        s.busy = True
        return True

    for s in senders:
        sel.register(s.sock, selectors.EVENT_READ, s)
        send_next(s)
    t0 = time.perf_counter()
    while any(s.busy for s in senders):
        for key, _ in sel.select(timeout=30):
            s = key.data
            chunk = s.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            s.inbuf += chunk
            while True:
                e = s.inbuf.find(FS + CR)
                if e < 0:
                    break
                frame, s.inbuf = s.inbuf[:e + 2], s.inbuf[e + 2:]
                now = time.perf_counter_ns()
                code, ctl = ack_code(frame)
                acked += 1
                if code != b"AA" or ctl != s.control:
                    bad.append((s.control.decode(errors="replace"), code.decode(errors="replace"),
                                ctl.decode(errors="replace"), frame[:300].decode(errors="replace")))
                sec = int(time.perf_counter() - t0)
                while len(timeline) <= sec:
                    timeline.append(0)
                timeline[sec] += 1
                if t_measure is not None:
                    lat.append(now - s.sent_at)
                    measured += 1
                elif acked >= total_warm:
                    t_measure = time.perf_counter()
                    deadline = t_measure + seconds
                send_next(s)
        if time.perf_counter() - t0 > seconds + 600:
            raise RuntimeError("no progress")
    t_end = time.perf_counter()
    for s in senders:
        sel.unregister(s.sock)
        s.sock.close()
    return {
        "acked": acked,
        "measured": measured,
        "seconds": (t_end - t_measure) if t_measure else 0.0,
        "latencies_ns": lat,
        "not_aa": bad,
        "timeline": timeline,
    }


def proc_io(pid):
    """/proc/PID/io: bytes the server wrote (write/pwrite calls: WAL, checkpoints, sockets)."""
    out = {}
    for line in bench.read_file("/proc/%d/io" % pid).splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = int(v)
    return out


def server_ingest_stats(log_text):
    """The writer's shutdown line: 'ingest: N messages (S stored, D duplicates, Q quarantined) in C commits'."""
    m = None
    for m in re.finditer(r"ingest: (\d+) messages \((\d+) stored, (\d+) duplicates, (\d+) quarantined\) in (\d+) commits",
                         log_text):
        pass
    if not m:
        return None
    n, st, du, qu, co = (int(x) for x in m.groups())
    return {"messages": n, "stored": st, "duplicates": du, "quarantined": qu, "commits": co,
            "messages_per_commit": n / co if co else None}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 bench/mllp.py CONCORD_BINARY")
    os.environ.setdefault("BENCH_LOG_LEVEL", "info")  # the ingest writer's totals come at info
    cfg = bench.Config(sys.argv[1])
    cfg.backend = "sqlite"
    cfg.db = ""
    quick = cfg.quick
    patients = bench.env_int("BENCH_MLLP_PATIENTS", 1500 if quick else 8000)
    seconds = bench.env_int("BENCH_MLLP_SECONDS", 3 if quick else 15)
    nconn = bench.env_int("BENCH_MLLP_CONNECTIONS", 8)
    warmup = bench.env_int("BENCH_MLLP_WARMUP", 50 if quick else 200)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    db = bench.Database(cfg)
    server = None
    result = {
        "schema": 1,
        "benchmark": "mllp",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": "sqlite",
        "quick": quick,
    }
    result.update(bench.describe_machine(cfg, db.dir))
    try:
        feeds = os.path.join(db.workdir, "synth")
        log("mllp bench: concord synth --patients %d --error-rate 0 ..." % patients)
        subprocess.run([cfg.binary, "synth", "--patients", str(patients), "--seed", "1", "--error-rate", "0",
                        "--out", feeds, "--quiet"], check=True, timeout=600)
        acute = os.path.join(feeds, "acute")
        files = sorted(os.listdir(acute))
        per_file = [frames_of(os.path.join(acute, f)) for f in files]
        # interleave the hospitals, then cut the stream in contiguous shares
        stream = []
        longest = max(len(x) for x in per_file)
        step = 64
        for i in range(0, longest, step):
            for fr in per_file:
                stream.extend(fr[i:i + step])
        share = (len(stream) + nconn - 1) // nconn
        shares = [stream[i * share:(i + 1) * share] for i in range(nconn)]
        types = {}
        for fr in stream:
            msh = fr[1:fr.find(b"\r")]
            t = msh.split(msh[3:4])[8].split(b"^")
            k = (t[0] + b"^" + t[1]).decode() if len(t) > 1 else t[0].decode()
            types[k] = types.get(k, 0) + 1
        log("  %d messages from %d hospitals (%s)" % (len(stream), len(files), ", ".join(
            "%s %d" % kv for kv in sorted(types.items(), key=lambda kv: -kv[1]))))

        log("mllp bench: starting concord serve on %s ..." % db.describe())
        server = bench.Server(cfg, db)
        if not server.mllp_port:
            raise SystemExit("mllp bench: this concord has no --mllp")
        load_before = os.getloadavg()
        busy_before, _ = bench.machine_busy(1.0)
        cpu0, m0, io0 = server.cpu_seconds(), bench.machine_cpu(), proc_io(server.pid)
        perf = None
        perf_out = os.path.join(db.workdir, "perf-mllp.data")
        if cfg.perf:
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(server.pid), "-o", perf_out,
                                     "--", "sleep", str(seconds + 1)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall0 = time.time()
        r = drive(server.mllp_port, shares, warmup, seconds)
        wall = time.time() - wall0
        if perf:
            perf.wait(timeout=120)
            result["perf"] = {"top_symbols": bench.perf_top(perf_out, 40), "by_dso": bench.perf_by_dso(perf_out)}
            if cfg.keep:
                log("perf data: %s" % perf_out)
        cpu1, m1, io1 = server.cpu_seconds(), bench.machine_cpu(), proc_io(server.pid)
        load_after = os.getloadavg()
        if not server.alive():
            raise RuntimeError("the server died: %s" % server.death())
        server.stop()
        stats = server_ingest_stats(open(server.log_path).read())
        lat = sorted(r["latencies_ns"])
        msg_s = r["measured"] / r["seconds"] if r["seconds"] else 0.0
        ms = lambda ns: ns / 1e6 if ns is not None else None  # noqa: E731
        ncpu = os.cpu_count() or 1
        total = (m1[1] - m0[1]) or 1
        fig = {
            "workload": "HL7 v2 ADT/ORU from concord synth over MLLP, %d connections, each sends a message and waits "
                        "for its ACK; ACK after the durable commit (SQLite WAL, synchronous=FULL)" % nconn,
            "value": msg_s,
            "unit": "messages/s",
            "target": TARGET_MSG_PER_S,
            "connections": nconn,
            "messages_measured": r["measured"],
            "messages_sent": r["acked"],
            "seconds": r["seconds"],
            "latency_ms": {"p50": ms(percentile(lat, 50)), "p90": ms(percentile(lat, 90)),
                           "p99": ms(percentile(lat, 99)), "max": ms(lat[-1] if lat else None),
                           "mean": ms(sum(lat) / len(lat)) if lat else None},
            "acks_per_second": r["timeline"],  # the whole run, warm-up included: the rate as the db grows
            "not_aa": len(r["not_aa"]),
            "not_aa_examples": r["not_aa"][:5],
            "server_ingest": stats,
            "messages_per_commit": stats["messages_per_commit"] if stats else None,
            "server_cpu_percent": 100.0 * (cpu1 - cpu0) / wall if wall else None,
            "server_cpu_us_per_message": 1e6 * (cpu1 - cpu0) / r["acked"] if r["acked"] else None,
            "server_bytes_written_per_message": ((io1.get("wchar", 0) - io0.get("wchar", 0)) / r["acked"]
                                                 if r["acked"] else None),
            "server_write_calls_per_message": ((io1.get("syscw", 0) - io0.get("syscw", 0)) / r["acked"]
                                               if r["acked"] else None),
            "machine_cpu_percent": 100.0 * (m1[0] - m0[0]) / total * ncpu,
            "busy_before_run_percent": busy_before,
            "load_average_before": load_before,
            "load_average_after": load_after,
        }
        result["config"] = {"patients": patients, "messages": len(stream), "message_types": types,
                            "seconds": seconds, "warmup_per_connection": warmup, "connections": nconn,
                            "db": db.describe()}
        result["figures"] = {"mllp": fig}
    except BaseException:
        if server and server.alive():
            server.stop()
        if server:
            log("\nserver log (tail):\n" + server.log_tail())
        db.cleanup()
        raise
    db.cleanup()
    f = result["figures"]["mllp"]
    l = f["latency_ms"]
    log("")
    log("HL7 v2 over MLLP (SQLite, ACK after durable commit), %d connections%s" % (
        nconn, ", QUICK smoke run" if quick else ""))
    log("  throughput     %8.0f msg/s   (target >= 5,000: %s)" % (
        f["value"], bench.ratio_text(f["value"], TARGET_MSG_PER_S)))
    log("  ACK latency    p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.1f ms" % (
        l["p50"] or 0, l["p90"] or 0, l["p99"] or 0, l["max"] or 0))
    if f["messages_per_commit"]:
        log("  group commit   %.2f messages per commit (%d messages in %d commits, whole run)" % (
            f["messages_per_commit"], f["server_ingest"]["messages"], f["server_ingest"]["commits"]))
    log("  server CPU     %.0f%% of a core, %.0f us per message; machine %.0f%% (of %d cores x 100)" % (
        f["server_cpu_percent"] or 0, f["server_cpu_us_per_message"] or 0, f["machine_cpu_percent"], os.cpu_count()))
    log("  server writes  %.0f bytes in %.1f write calls per message (WAL, checkpoints, ACKs)" % (
        f["server_bytes_written_per_message"] or 0, f["server_write_calls_per_message"] or 0))
    log("  load average   %.2f before, %.2f after; %d messages measured over %.1f s" % (
        f["load_average_before"][0], f["load_average_after"][0], f["messages_measured"], f["seconds"]))
    if "perf" in result:
        log("  server time by library: %s" % ", ".join(
            "%s %.0f%%" % (d["dso"], d["percent"]) for d in result["perf"]["by_dso"][:6]))
        for row in result["perf"]["top_symbols"][:25]:
            log("    %5.1f%%  %-28s %s" % (row["percent"], row["dso"][:28], row["symbol"][:90]))
    if f["not_aa"]:
        log("  NOT AA: %d acknowledgements, e.g. %s" % (f["not_aa"], f["not_aa_examples"][:2]))
    write_results(cfg, result, stamp)
    if f["not_aa"]:
        sys.exit(1)


def write_results(cfg, res, stamp):
    os.makedirs(cfg.results_dir, exist_ok=True)
    text = json.dumps(res, indent=2) + "\n"
    if cfg.quick:
        path = os.path.join(cfg.results_dir, "latest-mllp-sqlite-quick.json")
        with open(path, "w") as f:
            f.write(text)
        log("results: %s" % os.path.relpath(path))
        return
    path = os.path.join(cfg.results_dir, "%s-mllp-sqlite.json" % stamp)
    with open(path, "w") as f:
        f.write(text)
    latest = os.path.join(cfg.results_dir, "latest-mllp-sqlite.json")
    with open(latest, "w") as f:
        f.write(text)
    log("results: %s (and %s)" % (os.path.relpath(path), os.path.relpath(latest)))


if __name__ == "__main__":
    main()
