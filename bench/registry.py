"""registry.py — the patient registry's figures (issue 5's targets), run by
bench/run.sh after the server benchmarks; on its own:

    /usr/bin/python3 bench/registry.py build/concord

What it measures, in order (SQLite, a fresh temp directory):

 1. Batch linkage, in memory: `concord link eval DIR` on a synthetic
    population (`concord synth --patients P`): train (u from random pairs,
    EM per blocking rule), score every blocked pair, cluster; its precision,
    recall and confusion counts against the ground truth, and the review
    band. Target: 1,000,000 source records in < 60 s, precision >= 0.995 and
    recall >= 0.98 on the planted errors.
 2. Batch linkage through the store: every source record of the population
    written as a FHIR Patient (`concord import`, CONCORD_REGISTRY=off), then
    `concord link run --rebuild` (read the Patients, build the registry's
    tables, link, write every person's Person resource) — timed, and the
    persons it made scored against the ground truth the same way.
 3. One incoming record against that registry: new Patients PUT one at a
    time over HTTP to `concord serve`, latency of each (p50/p99), with the
    registry on, and with CONCORD_REGISTRY=off for the cost of linking.
    Target: p99 < 5 ms (the issue says against 1,000,000 records).
 4. Linking as records arrive: a smaller population imported with the
    registry on (every Patient linked by the write hook, in arrival order),
    scored; then `concord link train` and `concord link run` and scored again
    — with the review queue's size and how many of its pairs are true.
 5. The hook's cost on ingest: `concord import` of a synthetic GP directory
    (BENCH_REG_IMPORT_PEOPLE people) with and without the registry.

Environment (besides bench.py's BENCH_TMPDIR, BENCH_KEEP, BENCH_RESULTS_DIR):
  BENCH_QUICK=1               smoke run: 3,000 people, small samples
  BENCH_REG_PEOPLE=N          people for 1-3 (default 300,000: ~983,000 source records)
  BENCH_REG_RT_PEOPLE=N       people for 4 (default 20,000)
  BENCH_REG_IMPORT_PEOPLE=N   people for 5 (default 5,000)
  BENCH_REG_PUTS=N            PUTs per measurement in 3 (default 1,000)
  BENCH_REG_SKIP_STORE=1      leave out 2 and 3 (the slowest)

Results: bench/results/<stamp>-registry.json and latest-registry.json
(latest-registry-quick.json for BENCH_QUICK).
"""

import csv
import datetime
import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402

TARGETS = {"batch_records": 1_000_000, "batch_seconds": 60.0, "realtime_p99_ms": 5.0, "precision": 0.995,
           "recall": 0.98}
NHS = "https://fhir.nhs.uk/Id/nhs-number"


def log(msg=""):
    print(msg, flush=True)


def run(argv, env=None, timeout=7200, check=True):
    t0 = time.time()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    dt = time.time() - t0
    if check and r.returncode != 0:
        raise SystemExit("registry bench: %s failed (%d):\n%s\n%s" % (" ".join(argv), r.returncode, r.stdout[-3000:],
                                                                   r.stderr[-3000:]))
    return r, dt


def env_off():
    return dict(os.environ, CONCORD_REGISTRY="off")


# --------------------------------------------------------------------------
# the synthetic feeds as FHIR Patients (one per source patient record)

CSV_COLS = {  # as src/registry/linkeval.c reads them (docs/synth.md, CSV layouts)
    "local": ["patient_id", "ClientNo", "client_id", "person_ref", "ClientID", "LAS_ID", "client", "mh_id"],
    "nhs": ["nhs_number", "NHSNo", "client_nhs", "nhs_no", "NHSNumber", "nhs", "NHS_NUMBER"],
    "family": ["surname", "family_name", "last_name"],
    "given": ["forename", "given_name", "first_name", "forenames"],
    "fullname": ["PatientName", "Name", "FULL_NAME"],
    "dob": ["date_of_birth", "DOB", "birth_date", "dob", "DateOfBirth", "birth"],
    "sex": ["gender", "Sex", "sex", "GENDER"],
    "postcode": ["postcode", "PostCode", "post_code", "Postcode", "POSTCODE"],
    "address": ["address_line", "Address"],
}


def iso_date(s):
    s = (s or "").strip()
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", s) or re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:\d*)", s)
    if m:
        y, mo, d = m.groups()
    else:
        m = re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", s)
        if not m:
            return None
        d, mo, y = m.groups()
    try:
        datetime.date(int(y), int(mo), int(d))
    except ValueError:
        return None
    return "%s-%s-%s" % (y, mo, d)


def gender(s):
    s = (s or "").strip().lower()
    return {"m": "male", "male": "male", "1": "male", "f": "female", "female": "female", "2": "female"}.get(s, "unknown")


def safe_id(s):
    return re.sub(r"[^A-Za-z0-9.-]", "-", s)[:64]


def fhir_patient(pid, ods, local, nhs, family, given, dob, sex, postcode, line):
    p = {"resourceType": "Patient", "id": pid}
    ids = []
    if nhs:
        ids.append({"system": NHS, "value": nhs})
    ids.append({"system": "urn:concord:id:%s:local" % ods, "value": local})
    p["identifier"] = ids
    name = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given.split()
    if name:
        p["name"] = [name]
    p["gender"] = gender(sex)
    d = iso_date(dob)
    if d:
        p["birthDate"] = d
    if postcode or line:
        a = {"use": "home"}
        if line:
            a["line"] = [line]
        if postcode:
            a["postalCode"] = postcode
        p["address"] = [a]
    return p


def export_patients(feeds, out_path):
    """Write every source patient record of a synth directory as a Patient
    (ndjson); return {patient id: (feed, local id)}."""
    ids = {}
    seen = set()
    with open(out_path, "w") as out:
        def emit(feed, local, p):
            if (feed, local) in seen:
                return
            seen.add((feed, local))
            ids[p["id"]] = (feed, local)
            out.write(json.dumps(p, separators=(",", ":")) + "\n")

        gp = os.path.join(feeds, "gp")
        for f in sorted(os.listdir(gp)):
            feed = "gp/" + f[:-7]
            with open(os.path.join(gp, f)) as fh:
                for line in fh:
                    if '"resourceType":"Patient"' not in line:
                        continue
                    p = json.loads(line)
                    emit(feed, p["id"], p)
        acute = os.path.join(feeds, "acute")
        for f in sorted(os.listdir(acute)):
            ods = f[:-4]
            feed = "acute/" + ods
            with open(os.path.join(acute, f), "rb") as fh:
                data = fh.read().decode("utf-8", "replace")
            for seg in re.split(r"[\r\x1c]", data):
                seg = seg.lstrip("\x0b")
                if not seg.startswith("PID|"):
                    continue
                fl = seg.split("|")
                if len(fl) <= 3:
                    continue
                nhs = mr = None
                for rep in fl[3].split("~"):
                    c = rep.split("^")
                    if len(c) > 4 and c[4] == "NH":
                        nhs = c[0]
                    if len(c) > 4 and c[4] == "MR":
                        mr = c[0]
                if not mr:
                    continue
                name = fl[5].split("^") if len(fl) > 5 else [""]
                addr = fl[11].split("~")[0].split("^") if len(fl) > 11 else []
                emit(feed, mr, fhir_patient(safe_id("acute-%s-%s" % (ods, mr)), ods, mr, nhs, name[0],
                                            name[1] if len(name) > 1 else "", fl[7] if len(fl) > 7 else "",
                                            fl[8] if len(fl) > 8 else "", addr[4] if len(addr) > 4 else "",
                                            addr[0] if addr else ""))
        for setting in ("community", "social_care", "mental_health"):
            d = os.path.join(feeds, setting)
            for f in sorted(os.listdir(d)):
                ods = f[:-4]
                feed = "%s/%s" % (setting, ods)
                with open(os.path.join(d, f), newline="") as fh:
                    head = fh.readline()
                    delim = "|" if "|" in head else ","
                    fh.seek(0)
                    rd = csv.reader(fh, delimiter=delim)
                    hdr = next(rd)
                    col = {}
                    for k, names in CSV_COLS.items():
                        for i, h in enumerate(hdr):
                            if h in names and k not in col:
                                col[k] = i

                    def get(row, k):
                        i = col.get(k)
                        return row[i] if i is not None and i < len(row) else ""

                    for row in rd:
                        local = get(row, "local")
                        if not local:
                            continue
                        if "fullname" in col:
                            fn = get(row, "fullname")
                            fam, _, giv = fn.partition(",")
                            fam, giv = fam.strip(), giv.strip()
                        else:
                            fam, giv = get(row, "family"), get(row, "given")
                        emit(feed, local, fhir_patient(safe_id("%s-%s-%s" % (setting.replace("_", ""), ods, local)),
                                                       ods, local, get(row, "nhs"), fam, giv, get(row, "dob"),
                                                       get(row, "sex"), get(row, "postcode"), get(row, "address")))
    return ids


def load_truth(feeds):
    """(feed, local id) -> person. A local id the synthetic feeds gave two
    people (hospital numbers are hashes, and collide now and then) counts as
    its first person's, as in linkeval: the demographics come from its
    first message too."""
    truth = {}
    with open(os.path.join(feeds, "ground_truth", "records.csv"), newline="") as f:
        for row in csv.DictReader(f):
            truth.setdefault((row["feed"], row["local_patient_id"]), row["person_id"])
    return truth


def pairs(n):
    return n * (n - 1) // 2


def score_registry(db_path, ids, truth):
    """Pairwise precision/recall of the registry's persons against the truth."""
    con = sqlite3.connect(db_path)
    rows = con.execute("SELECT patient_id, person_key FROM reg_source WHERE person_key IS NOT NULL").fetchall()
    pred, true, cell = {}, {}, {}
    unknown = 0
    person_of_patient = {}
    for pid, pk in rows:
        key = ids.get(pid)
        t = truth.get(key) if key else None
        if t is None:
            unknown += 1
            continue
        person_of_patient[pid] = t
        pred[pk] = pred.get(pk, 0) + 1
        true[t] = true.get(t, 0) + 1
        cell[(pk, t)] = cell.get((pk, t), 0) + 1
    tp = sum(pairs(n) for n in cell.values())
    pp = sum(pairs(n) for n in pred.values())
    tpairs = sum(pairs(n) for n in true.values())
    rv = con.execute("SELECT a.patient_id, b.patient_id FROM reg_review r JOIN reg_source a ON a.src_key = r.src_key"
                     " JOIN reg_source b ON b.src_key = r.other_key WHERE r.status = 'open'").fetchall()
    rv_true = sum(1 for a, b in rv if person_of_patient.get(a) and person_of_patient.get(a) == person_of_patient.get(b))
    persons = con.execute("SELECT COUNT(*) FROM reg_person WHERE retired = 0").fetchone()[0]
    con.close()
    return {
        "records": len(rows) - unknown, "records_not_in_truth": unknown, "persons": persons,
        "true_persons": len(true), "true_pairs": tpairs, "linked_pairs": pp,
        "tp": tp, "fp": pp - tp, "fn": tpairs - tp,
        "precision": round(tp / pp, 6) if pp else None, "recall": round(tp / tpairs, 6) if tpairs else None,
        "review_open": len(rv), "review_true": rv_true, "review_false": len(rv) - rv_true,
    }


# --------------------------------------------------------------------------
# steps


def link_eval(cfg, feeds):
    r, dt = run([cfg.binary, "link", "eval", feeds])
    out = r.stdout
    res = {"wall_seconds": round(dt, 2), "report": out.strip().splitlines()}

    def num(pat, cast=float):
        m = re.search(pat, out)
        return cast(m.group(1).replace(",", "")) if m else None

    res["records"] = num(r"records: (\d+) source records", int)
    res["candidate_pairs"] = num(r"blocking: (\d+) candidate pairs", int)
    res["blocking_recall"] = num(r"blocking recall ([\d.]+)")
    res["link_tp"] = num(r"links: TP (\d+)", int)
    res["link_fp"] = num(r"links: TP \d+ FP (\d+)", int)
    res["link_fn"] = num(r"links: TP \d+ FP \d+ FN (\d+)", int)
    res["link_precision"] = num(r"precision ([\d.]+) recall")
    res["link_recall"] = num(r"links: .*recall ([\d.]+)")
    m = re.search(r"review queue: (\d+) pairs \((\d+) true, (\d+) false\)", out)
    if m:
        res["review_pairs"], res["review_true"], res["review_false"] = map(int, m.groups())
    m = re.search(r"pairwise precision ([\d.]+) recall ([\d.]+) \(TP (\d+) FP (\d+)\)", out)
    if m:
        res["cluster_precision"], res["cluster_recall"] = float(m.group(1)), float(m.group(2))
        res["cluster_tp"], res["cluster_fp"] = int(m.group(3)), int(m.group(4))
    m = re.search(r"time: train ([\d.]+) s, score ([\d.]+) s .*cluster ([\d.]+) s", out)
    if m:
        res["seconds_train"], res["seconds_score"], res["seconds_cluster"] = map(float, m.groups())
        res["seconds_link"] = round(sum(map(float, m.groups())), 3)
    m = re.search(r"loaded \d+ records from \d+ rows/messages in ([\d.]+) s", out)
    if m:
        res["seconds_read_feeds"] = float(m.group(1))
    return res


def percentile(v, p):
    if not v:
        return None
    v = sorted(v)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def put_latencies(cfg, db, patients, registry_on):
    """PUT each Patient over one keep-alive connection; latencies in ms."""
    port = bench.free_port()
    env = None if registry_on else env_off()
    logf = open(os.path.join(os.path.dirname(db), "serve-%s.log" % ("on" if registry_on else "off")), "w")
    # the server requires sign-in: an integration account's token, made on the database with the CLI
    subprocess.run([cfg.binary, "user", "add", "bench", "--role", "system", "--org", "BENCH1", "--no-password",
                    "--db", db], capture_output=True, stdin=subprocess.DEVNULL, env=env)
    token = subprocess.run([cfg.binary, "token", "create", "--user", "bench", "--db", db], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, env=env).stdout.strip()
    proc = subprocess.Popen([cfg.binary, "serve", "--db", db, "--http", "127.0.0.1:%d" % port, "--mllp", "off",
                             "--log-level", "warn"], stdout=logf, stderr=subprocess.STDOUT, env=env)
    try:
        t0 = time.time()
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/fhir/metadata")
                c.getresponse().read()
                break
            except OSError:
                if time.time() - t0 > 60 or proc.poll() is not None:
                    raise SystemExit("registry bench: the server did not start")
                time.sleep(0.1)
        lat = []
        hdr = {"Content-Type": "application/fhir+json", "Authorization": "Bearer " + token}
        for p in patients:
            body = json.dumps(p)
            t = time.perf_counter()
            c.request("PUT", "/fhir/Patient/" + p["id"], body, hdr)
            r = c.getresponse()
            r.read()
            lat.append((time.perf_counter() - t) * 1000.0)
            if r.status not in (200, 201):
                raise SystemExit("registry bench: PUT answered %d" % r.status)
        hook = None
        if registry_on:  # the linking itself, timed inside the server (commit not included)
            c.request("GET", "/fhir/$link-stats")
            r = c.getresponse()
            hook = json.loads(r.read())["hook"]
        c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        logf.close()
    out = {"n": len(lat), "p50_ms": round(percentile(lat, 50), 3), "p90_ms": round(percentile(lat, 90), 3),
           "p99_ms": round(percentile(lat, 99), 3), "max_ms": round(max(lat), 3),
           "mean_ms": round(sum(lat) / len(lat), 3)}
    if hook:
        out["hook"] = hook
    return out


def import_cost(cfg, workdir, people):
    feeds = os.path.join(workdir, "synth-import")
    run([cfg.binary, "synth", "--patients", str(people), "--out", feeds, "--quiet"])
    gp = os.path.join(feeds, "gp")
    resources = patients = 0
    for f in os.listdir(gp):
        with open(os.path.join(gp, f)) as fh:
            for line in fh:
                resources += 1
                patients += '"resourceType":"Patient"' in line
    times = {"off": [], "on": []}
    hooks = []
    for rep in range(3):
        for mode in ("off", "on"):
            db = os.path.join(workdir, "import-%s-%d.db" % (mode, rep))
            env = env_off() if mode == "off" else dict(os.environ, CONCORD_REGISTRY_STATS="1")
            r, dt = run([cfg.binary, "import", gp, "--db", db, "--quiet"], env=env)
            times[mode].append(dt)
            m = re.search(r"registry stats: (\{.*\})", r.stderr)
            if m:
                hooks.append(json.loads(m.group(1))["hook"])
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
    off, on = sorted(times["off"])[1], sorted(times["on"])[1]
    return {"people": people, "resources": resources, "patients": patients,
            "seconds_off": [round(x, 3) for x in times["off"]], "seconds_on": [round(x, 3) for x in times["on"]],
            "median_off_s": round(off, 3), "median_on_s": round(on, 3),
            "resources_per_s_off": round(resources / off), "resources_per_s_on": round(resources / on),
            "overhead_percent": round(100.0 * (on - off) / off, 1),
            "overhead_per_patient_us": round(1e6 * (on - off) / patients, 1), "hook": hooks}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 bench/registry.py CONCORD_BINARY")
    cfg = bench.Config(sys.argv[1])
    quick = cfg.quick
    people = bench.env_int("BENCH_REG_PEOPLE", 3000 if quick else 300_000)
    rt_people = bench.env_int("BENCH_REG_RT_PEOPLE", 2000 if quick else 20_000)
    imp_people = bench.env_int("BENCH_REG_IMPORT_PEOPLE", 1000 if quick else 5000)
    nputs = bench.env_int("BENCH_REG_PUTS", 200 if quick else 1000)
    skip_store = os.environ.get("BENCH_REG_SKIP_STORE", "") not in ("", "0")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    import tempfile
    workdir = tempfile.mkdtemp(prefix="concord-bench-registry.", dir=cfg.tmp_parent)
    result = {"schema": 1, "benchmark": "registry", "backend": "sqlite", "quick": quick,
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "targets": TARGETS}
    result.update(bench.describe_machine(cfg, workdir))
    busy, steal = bench.machine_busy(1.0)
    result["machine_busy_before_percent_of_a_core"] = round(busy, 1)
    result["load_before"] = os.getloadavg()
    try:
        # 1. batch, in memory
        feeds = os.path.join(workdir, "synth")
        log("registry bench: concord synth --patients %d ..." % people)
        _, dt = run([cfg.binary, "synth", "--patients", str(people), "--out", feeds, "--quiet"])
        result["synth_seconds"] = round(dt, 1)
        log("registry bench: concord link eval (train + score + cluster, in memory) ...")
        ev = link_eval(cfg, feeds)
        result["batch_in_memory"] = ev
        log("  %s source records, %s candidate pairs: train %.1f s + score %.1f s + cluster %.2f s = %.1f s "
            "(reading the feeds %.1f s more)" % (bench.fmt_int(ev["records"] or 0), bench.fmt_int(ev["candidate_pairs"] or 0),
                                                 ev.get("seconds_train", 0), ev.get("seconds_score", 0),
                                                 ev.get("seconds_cluster", 0), ev.get("seconds_link", 0),
                                                 ev.get("seconds_read_feeds", 0)))
        log("  links: precision %s recall %s (TP %s FP %s FN %s); review band %s pairs (%s true); clusters: "
            "precision %s recall %s" % (ev.get("link_precision"), ev.get("link_recall"), ev.get("link_tp"),
                                        ev.get("link_fp"), ev.get("link_fn"), ev.get("review_pairs"),
                                        ev.get("review_true"), ev.get("cluster_precision"), ev.get("cluster_recall")))
        truth = load_truth(feeds)

        # 2. batch through the store
        if not skip_store:
            log("registry bench: the feeds as FHIR Patients ...")
            nd = os.path.join(workdir, "patients.ndjson")
            ids = export_patients(feeds, nd)
            lines = open(nd).read().splitlines()
            hold = min(2 * nputs, len(lines) // 10)
            held = [json.loads(x) for x in lines[-hold:]] if hold else []
            with open(nd, "w") as f:
                f.write("\n".join(lines[:len(lines) - hold]) + "\n")
            del lines
            db = os.path.join(workdir, "registry.db")
            log("registry bench: concord import of %d Patients (registry off) ..." % (len(ids) - hold))
            _, dt = run([cfg.binary, "import", nd, "--db", db, "--quiet"], env=env_off())
            store = {"patients": len(ids) - hold, "import_seconds_registry_off": round(dt, 1)}
            log("registry bench: concord link run --rebuild ...")
            r, dt = run([cfg.binary, "link", "run", "--rebuild", "--json", "--db", db, "--user", "bench"])
            store["link_run_rebuild"] = json.loads(r.stdout)
            store["link_run_rebuild_wall_seconds"] = round(dt, 1)
            sec = store["link_run_rebuild"]["seconds"]
            log("  %s records -> %s persons: load+rebuild %.1f s, score %.1f s, cluster %.1f s, write %.1f s; "
                "total %.1f s (wall %.1f s)" % (bench.fmt_int(store["link_run_rebuild"]["records"]),
                                               bench.fmt_int(store["link_run_rebuild"]["persons_after"]),
                                               sec["load"], sec["score"], sec["cluster"], sec["write"], sec["total"], dt))
            sc = score_registry(db, ids, truth)
            store["accuracy"] = sc
            log("  persons vs truth: precision %s recall %s (TP %s FP %s FN %s); review open %d (%d true)"
                % (sc["precision"], sc["recall"], sc["tp"], sc["fp"], sc["fn"], sc["review_open"], sc["review_true"]))
            r, dt = run([cfg.binary, "link", "run", "--json", "--db", db, "--user", "bench"])
            store["link_run_again"] = json.loads(r.stdout)
            store["link_run_again_wall_seconds"] = round(dt, 1)
            log("  a second run (nothing changed): %.1f s wall, %d moved" % (dt, store["link_run_again"]["moved"]))
            r, dt = run([cfg.binary, "link", "train", "--db", db, "--user", "bench"])
            store["train_wall_seconds"] = round(dt, 1)
            store["train"] = r.stdout.strip()
            r, dt = run([cfg.binary, "link", "run", "--json", "--db", db, "--user", "bench"])
            store["link_run_after_train"] = json.loads(r.stdout)
            store["link_run_after_train_wall_seconds"] = round(dt, 1)
            sc = score_registry(db, ids, truth)
            store["accuracy_after_train"] = sc
            log("  link train %.1f s; link run %.1f s (%d moved); persons vs truth: precision %s recall %s "
                "(TP %s FP %s FN %s); review open %d (%d true)"
                % (store["train_wall_seconds"], dt, store["link_run_after_train"]["moved"], sc["precision"],
                   sc["recall"], sc["tp"], sc["fp"], sc["fn"], sc["review_open"], sc["review_true"]))
            result["batch_store"] = store

            # 3. one incoming record
            if held:
                half = len(held) // 2
                log("registry bench: PUT Patient one at a time (%d with the registry off, %d on) ..." % (half,
                                                                                                       len(held) - half))
                off = put_latencies(cfg, db, held[:half], False)
                on = put_latencies(cfg, db, held[half:], True)
                result["realtime"] = {"registry_records": store["link_run_rebuild"]["records"], "registry_off": off,
                                      "registry_on": on}
                log("  PUT registry off: p50 %.2f ms p99 %.2f ms; on: p50 %.2f ms p99 %.2f ms" % (
                    off["p50_ms"], off["p99_ms"], on["p50_ms"], on["p99_ms"]))
                h = on.get("hook") or {}
                log("  the linking (hook, in the transaction): p50 %s us p90 %s us p99 %s us max %s us "
                    "(target p99 < %.0f ms)" % (h.get("p50_us"), h.get("p90_us"), h.get("p99_us"), h.get("max_us"),
                                                TARGETS["realtime_p99_ms"]))
            if not cfg.keep:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(db + suffix):
                        os.remove(db + suffix)

        # 4. linking as records arrive
        log("registry bench: %d people imported with the registry on ..." % rt_people)
        feeds2 = os.path.join(workdir, "synth-rt")
        run([cfg.binary, "synth", "--patients", str(rt_people), "--out", feeds2, "--quiet"])
        nd2 = os.path.join(workdir, "patients-rt.ndjson")
        ids2 = export_patients(feeds2, nd2)
        truth2 = load_truth(feeds2)
        db2 = os.path.join(workdir, "registry-rt.db")
        _, dt = run([cfg.binary, "import", nd2, "--db", db2, "--quiet"])
        rt = {"people": rt_people, "patients": len(ids2), "import_seconds": round(dt, 1),
              "arriving": score_registry(db2, ids2, truth2)}
        a = rt["arriving"]
        log("  as they arrived (default model): precision %s recall %s (FP %s FN %s), review open %d (%d true)"
            % (a["precision"], a["recall"], a["fp"], a["fn"], a["review_open"], a["review_true"]))
        r, dt = run([cfg.binary, "link", "train", "--db", db2, "--user", "bench"])
        rt["train_seconds"] = round(dt, 1)
        r, dt = run([cfg.binary, "link", "run", "--json", "--db", db2, "--user", "bench"])
        rt["run_after_train"] = json.loads(r.stdout)
        rt["after_train_and_run"] = score_registry(db2, ids2, truth2)
        a = rt["after_train_and_run"]
        log("  after link train + link run: precision %s recall %s (FP %s FN %s), review open %d (%d true); "
            "the run moved %d records" % (a["precision"], a["recall"], a["fp"], a["fn"], a["review_open"],
                                          a["review_true"], rt["run_after_train"]["moved"]))
        result["realtime_accuracy"] = rt

        # 5. the hook's cost on ingest
        log("registry bench: concord import of a %d-person GP directory, registry off/on, 3 times each ..." % imp_people)
        ic = import_cost(cfg, workdir, imp_people)
        result["import_cost"] = ic
        log("  %d resources (%d Patients): %.2f s off, %.2f s on (medians): %d vs %d resources/s, +%.1f%%, "
            "%.0f us per Patient" % (ic["resources"], ic["patients"], ic["median_off_s"], ic["median_on_s"],
                                     ic["resources_per_s_off"], ic["resources_per_s_on"], ic["overhead_percent"],
                                     ic["overhead_per_patient_us"]))
        for h in ic["hook"]:
            log("  the hook in that import: mean %s us, p50 %s us, p99 %s us" % (h["mean_us"], h["p50_us"], h["p99_us"]))
        result["load_after"] = os.getloadavg()
    finally:
        if not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("kept: %s" % workdir)
    write_results(cfg, result, stamp)


def write_results(cfg, res, stamp):
    os.makedirs(cfg.results_dir, exist_ok=True)
    text = json.dumps(res, indent=2) + "\n"
    if cfg.quick:
        path = os.path.join(cfg.results_dir, "latest-registry-quick.json")
        with open(path, "w") as f:
            f.write(text)
        log("results: %s" % os.path.relpath(path))
        return
    path = os.path.join(cfg.results_dir, "%s-registry.json" % stamp)
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(cfg.results_dir, "latest-registry.json"), "w") as f:
        f.write(text)
    log("results: %s (and latest-registry.json)" % os.path.relpath(path))


if __name__ == "__main__":
    main()
