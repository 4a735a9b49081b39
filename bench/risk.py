"""bench/risk.py CONCORD_BINARY — risk stratification against issue 7's targets.

Two databases, because a 500,000-person integrated record (about 13.5 million
resources, ~33 GB in SQLite) does not fit the reference machine's disk beside
everything else:

  A. a real record: `concord demo --patients RISK_DEMO_PATIENTS --no-serve`
     stores every resource through the store, the facts hook keeping each
     person's risk facts as it goes. On it: the deprivation lookup from the
     synthetic ground truth, `concord risk train` (AUROC and calibration of
     the validation year), the first full run (everyone's RiskAssessment
     written), steady-state reruns (the same day; the next day), rescoring
     one person after a new admission (`concord risk rescore --bench`), and
     a backfill (`concord risk facts --rebuild`).
  B. facts at scale: `concord risk facts --synth RISK_FACTS_PATIENTS` runs the
     same extraction over the same synthetic people but stores only their
     facts (and the organisations); full runs on it measure stratification at
     the target's size. The model trained on A is used. Caveats printed with
     the figures: the facts table is contiguous (a real database interleaves
     it with the resources), there is no deprivation lookup (everyone
     'unknown'), and the RiskAssessments go into a store without 13.5 million
     other resources.

Figures are printed next to the targets (500,000 people < 10 s; one person
after a new admission < 5 ms) and written with the machine's description to
bench/results/<UTC time>-risk.json and latest-risk.json. Measured and
extrapolated figures are labelled as such.

  BENCH_QUICK=1              small: RISK_DEMO_PATIENTS 2,000, RISK_FACTS_PATIENTS 20,000
  RISK_DEMO_PATIENTS=N       database A (default 20,000)
  RISK_FACTS_PATIENTS=N      database B (default 500,000; 0 skips B)
  RISK_B_RESOURCES=0         database B's first run without RiskAssessments
  RISK_KEEP=1                keep the databases (printed)
"""

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
AS_OF = "2026-01-01"
NEXT_DAY = "2026-01-02"
TARGET_PEOPLE = 500_000
TARGET_SECONDS = 10.0
TARGET_RESCORE_MS = 5.0


def env_int(name, default):
    v = os.environ.get(name, "").replace("_", "").replace(",", "").strip()
    return int(v) if v else default


def log(msg=""):
    print(msg, flush=True)


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine():
    cpu = ""
    for line in read_file("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = read_file("/proc/meminfo").splitlines()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem[0].split(":", 1)[1].strip() if mem else "",
        "kernel": platform.release(),
        "loadavg": read_file("/proc/loadavg").split()[:3],
    }


def run(binary, *args, env=None, timeout=7200):
    t0 = time.monotonic()
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"bench: concord {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r.stdout, dt


def risk_run(binary, db, as_of, extra=()):
    out, dt = run(binary, "risk", "run", "--db", db, "--as-of", as_of, "--json", *extra)
    res = json.loads(out)
    res["wall_seconds"] = dt
    return res


def describe_run(label, r):
    s = r["seconds"]
    log(f"  {label}: {r['people']:,} people, {r['scored']:,} scored; RiskAssessments written {r['resources_written']:,},"
        f" score rows {r['rows_written']:,}, tier changes {r['tier_changes']:,}")
    log(f"      read {s['read']:.2f} s + score {s['score']:.2f} s + tiers {s['tiers']:.2f} s"
        f" + RiskAssessments {s['resources']:.2f} s + results {s['results']:.2f} s = {s['total']:.2f} s"
        f" (process {r['wall_seconds']:.2f} s)")


def per_person(r, without_resources=False):
    s = r["seconds"]
    t = s["total"] - (s["resources"] if without_resources else 0)
    return t / max(r["people"], 1)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench/risk.py CONCORD_BINARY")
    binary = os.path.abspath(sys.argv[1])
    quick = bool(os.environ.get("BENCH_QUICK"))
    demo_n = env_int("RISK_DEMO_PATIENTS", 2000 if quick else 20000)
    facts_n = env_int("RISK_FACTS_PATIENTS", 20000 if quick else 500000)
    b_resources = os.environ.get("RISK_B_RESOURCES", "1") != "0"
    keep = bool(os.environ.get("RISK_KEEP"))
    work = tempfile.mkdtemp(prefix="concord-risk-bench.")
    env = {"CONCORD_RISK_DATA": os.path.join(REPO, "data", "risk")}
    result = {"machine": machine(), "quick": quick, "as_of": AS_OF, "targets": {
        "people": TARGET_PEOPLE, "seconds": TARGET_SECONDS, "rescore_ms": TARGET_RESCORE_MS}}
    log(f"== risk stratification (issue 7) — {result['machine']['cpus']} CPUs, loadavg"
        f" {' '.join(result['machine']['loadavg'])}, work in {work}")
    try:
        # ---- A: a real record -------------------------------------------------------------
        db = os.path.join(work, "a.db")
        log(f"\nA. {demo_n:,} people stored as FHIR resources (concord demo), facts kept by the write hook")
        out, dt = run(binary, "demo", "--patients", str(demo_n), "--no-serve", "--db", db, env=env)
        size = os.path.getsize(db)
        log(f"  load with the facts hook: {dt:.1f} s, database {size / 2**30:.2f} GiB")
        result["a"] = {"people": demo_n, "load_seconds": dt, "db_bytes": size}
        synth_dir = os.path.join(work, "synth")
        run(binary, "synth", "--out", synth_dir, "--patients", str(demo_n), "--quiet")
        people_csv = os.path.join(work, "people.csv")
        shutil.copy(os.path.join(synth_dir, "ground_truth", "people.csv"), people_csv)
        shutil.rmtree(synth_dir)
        run(binary, "risk", "deprivation", "--load", people_csv, "--db", db, env=env)
        report_dir = os.path.join(work, "model")
        out, dt = run(binary, "risk", "train", "--db", db, "--out", report_dir, env=env)
        model_path = os.path.join(report_dir, "model.json")
        with open(model_path) as f:
            model = json.load(f)
        v, t = model["validation"], model["training"]
        log(f"  train ({dt:.1f} s): features on {t['index_date']}, {t['people']:,} people, {t['events']:,} events;"
            f" validation year from {v['index_date']}: {v['people']:,} people, {v['events']:,} events")
        log(f"  validation year: AUROC {v['auroc']:.3f} (SE {v['auroc_se']:.3f}), calibration slope"
            f" {v['calibration_slope']:.3f}, calibration-in-the-large {v['calibration_intercept']:+.3f},"
            f" Brier {v['brier']:.4f}, mean predicted {v['mean_predicted']:.4f} vs observed {v['observed_rate']:.4f}")
        log("  calibration by tenth (predicted% / observed%): " + ", ".join(
            f"{d['mean_predicted'] * 100:.1f}/{d['observed'] * 100:.1f}" for d in v["deciles"]))
        for ix in v["published_indices"]:
            if "auroc" in ix:
                log(f"    {ix['index']} alone ({ix['population']}, n {ix['n']:,}): AUROC {ix['auroc']:.3f}")
        result["a"]["model"] = {"version": model["version"], "training": t, "validation": v, "train_seconds": dt}
        keep_dir = os.path.join(HERE, "results", "risk-model-quick" if quick else "risk-model")
        shutil.rmtree(keep_dir, ignore_errors=True)
        shutil.copytree(report_dir, keep_dir)
        log(f"  model, report and calibration plot: {os.path.relpath(keep_dir, REPO)}/")

        # `concord demo` has already trained and scored once: this run, with the
        # model just trained, changes every result (as a first run does)
        r1 = risk_run(binary, db, AS_OF)
        describe_run("run with a new model (every result changes)", r1)
        r2 = risk_run(binary, db, AS_OF)
        describe_run("rerun, same day", r2)
        r3 = risk_run(binary, db, NEXT_DAY)
        describe_run("rerun, next day", r3)
        result["a"]["runs"] = {"first": r1, "same_day": r2, "next_day": r3}
        out, _ = run(binary, "risk", "rescore", "--db", db, "--bench", "50" if quick else "300", env=env)
        rb = json.loads(out)
        log(f"  rescoring one person after a new emergency admission ({rb['people']} people):"
            f" p50 {rb['rescore_ms']['p50']:.2f} ms, p99 {rb['rescore_ms']['p99']:.2f} ms,"
            f" max {rb['rescore_ms']['max']:.2f} ms (read facts, score, write RiskAssessment and row, durable commit)")
        log(f"      of which before the commit's fsync: p50 {rb['rescore_before_commit_ms']['p50']:.2f} ms,"
            f" p99 {rb['rescore_before_commit_ms']['p99']:.2f} ms; with storing the admission too:"
            f" p50 {rb['admission_write_and_rescore_ms']['p50']:.2f} ms")
        result["a"]["rescore"] = rb
        out, dt = run(binary, "risk", "facts", "--rebuild", "--db", db, env=env)
        log(f"  backfill (risk facts --rebuild): {out.strip()}")
        result["a"]["rebuild_seconds"] = dt

        # ---- B: facts at scale ---------------------------------------------------------------
        if facts_n:
            dbb = os.path.join(work, "b.db")
            log(f"\nB. {facts_n:,} people as facts only (concord risk facts --synth; resources not stored)")
            out, dt = run(binary, "risk", "facts", "--synth", str(facts_n), "--db", dbb, env=env)
            log(f"  {out.strip()}")
            extra = ["--model", model_path]
            first = risk_run(binary, dbb, AS_OF, extra + ([] if b_resources else ["--no-resources"]))
            describe_run("first run" + ("" if b_resources else " (no RiskAssessments)"), first)
            same = risk_run(binary, dbb, AS_OF, extra)
            describe_run("rerun, same day", same)
            nxt = risk_run(binary, dbb, NEXT_DAY, extra)
            describe_run("rerun, next day", nxt)
            result["b"] = {"people": facts_n, "facts_seconds": dt, "db_bytes": os.path.getsize(dbb),
                           "runs": {"first": first, "same_day": same, "next_day": nxt}}

        # ---- against the targets -------------------------------------------------------------------
        log("\nTargets (2 cores): full stratification of 500,000 people < 10 s; one person after a new admission < 5 ms")
        basis = result.get("b", result["a"])
        n = basis["people"]
        steady = basis["runs"]["next_day"]
        first = basis["runs"]["first"]
        label = "measured" if n == TARGET_PEOPLE else f"extrapolated linearly from {n:,} measured"
        est_steady = per_person(steady) * TARGET_PEOPLE
        est_first_no_ra = per_person(first, without_resources=True) * TARGET_PEOPLE
        est_first = per_person(first) * TARGET_PEOPLE
        log(f"  500,000 people, nightly rerun (RiskAssessments for changed results only): {est_steady:.1f} s ({label})"
            f" {'MEETS' if est_steady < TARGET_SECONDS else 'MISSES'} the target")
        log(f"  500,000 people, first run, scores and tiers without RiskAssessments: {est_first_no_ra:.1f} s ({label})")
        log(f"  500,000 people, first run with everyone's RiskAssessment: {est_first:.1f} s ({label})"
            f" {'MEETS' if est_first < TARGET_SECONDS else 'MISSES'} the target")
        est23 = per_person(steady) * 2_300_000
        log(f"  2,300,000 people, nightly rerun: {est23:.1f} s (extrapolated from {n:,}; target < 60 s)")
        rs = result["a"]["rescore"]
        p50, p99 = rs["rescore_ms"]["p50"], rs["rescore_ms"]["p99"]
        log(f"  rescoring after a new admission (measured on {demo_n:,} people, durable commit included):"
            f" p50 {p50:.2f} ms {'MEETS' if p50 < TARGET_RESCORE_MS else 'MISSES'},"
            f" p99 {p99:.2f} ms {'MEETS' if p99 < TARGET_RESCORE_MS else 'MISSES'}"
            f" (before the commit: p99 {rs['rescore_before_commit_ms']['p99']:.2f} ms)")
        result["summary"] = {"basis_people": n, "basis": label, "steady_500k_s": est_steady,
                             "first_500k_without_resources_s": est_first_no_ra, "first_500k_s": est_first,
                             "steady_2_3m_s": est23, "rescore_p50_ms": p50, "rescore_p99_ms": p99}
        result["machine"]["loadavg_after"] = read_file("/proc/loadavg").split()[:3]
        stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
        results = os.path.join(HERE, "results")
        os.makedirs(results, exist_ok=True)
        name = "latest-risk-quick.json" if quick else "latest-risk.json"
        text = json.dumps(result, indent=2)
        if not quick:
            with open(os.path.join(results, f"{stamp}-risk.json"), "w") as f:
                f.write(text)
        with open(os.path.join(results, name), "w") as f:
            f.write(text)
        log(f"results: bench/results/{name}")
    finally:
        if keep:
            log(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
