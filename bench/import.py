#!/usr/bin/env python3
"""bench/import.py CONCORD_BINARY — `concord import` against issue 4's targets.

Generates a synthetic population (`concord synth`), then times, each into a
fresh SQLite database:
  ndjson   the GP practices' FHIR ndjson (gp/*.ndjson)       target >= 20,000 resources/s
  csv      every community, social care and mental health CSV with its mapping
and checks that memory stays bounded: the ndjson files are also imported
as one file 1x and 4x as long (ids rewritten), and the peak resident
memory of the two imports is compared (bounded = it does not grow with the
file).

Prints the figures next to the targets and writes them, with a description
of the machine, to bench/results/<UTC time>-import.json and latest-import.json.

  BENCH_QUICK=1          small population (5,000 people)
  IMPORT_PATIENTS=N      population (default 50,000)
  IMPORT_DIR=DIR         where to work (default a fresh directory under $TMPDIR or /tmp)
"""

import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import describe_machine  # noqa: E402

TARGET_NDJSON = 20000


class Cfg:
    def __init__(self, binary):
        self.binary = binary


def run_import(binary, db, args, label):
    """Run `concord import` in a child; returns (seconds, stored, quarantined, peak RSS kB, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    # a wrapper shell would confuse ru_maxrss: run the binary directly, via /usr/bin/time for its own peak
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, binary, "import", "--db", db, "--quiet"] + args,
                       capture_output=True, text=True)
    secs = time.monotonic() - t0
    with open(tf.name) as f:
        rss_kb = int((f.read().strip().splitlines() or ["0"])[-1])
    os.unlink(tf.name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode not in (0, 3):
        print("bench: import %s failed (%d): %s" % (label, p.returncode, p.stderr[-2000:]), file=sys.stderr)
        sys.exit(1)
    # --quiet prints nothing: count from the database
    return secs, cpu, rss_kb, p.returncode


def count(db, sql):
    out = subprocess.run(["sqlite3", db, sql], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    binary = os.path.abspath(sys.argv[1])
    quick = bool(os.environ.get("BENCH_QUICK"))
    patients = int(os.environ.get("IMPORT_PATIENTS", "5000" if quick else "50000"))
    work = os.environ.get("IMPORT_DIR") or tempfile.mkdtemp(prefix="concord-import-bench.")
    feeds = os.path.join(work, "feeds")
    res = {"benchmark": "import", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "patients": patients,
           "quick": quick}
    res.update(describe_machine(Cfg(binary), work))
    try:
        print("bench: concord synth --patients %d -> %s" % (patients, feeds), file=sys.stderr)
        subprocess.run([binary, "synth", "--patients", str(patients), "--out", feeds, "--quiet"], check=True)
        load0 = os.getloadavg()[0]

        # ndjson: the GP practices
        db = os.path.join(work, "ndjson.db")
        lines = sum(sum(1 for _ in open(f)) for f in glob.glob(os.path.join(feeds, "gp", "*.ndjson")))
        secs, cpu, rss, _ = run_import(binary, db, [os.path.join(feeds, "gp")], "ndjson")
        stored = count(db, "SELECT count(*) FROM resource")
        res["ndjson"] = {"lines": lines, "resources": stored, "seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
                         "resources_per_s": round(stored / secs), "peak_rss_kb": rss,
                         "load_average_before": load0, "target_per_s": TARGET_NDJSON,
                         "ratio": round(stored / secs / TARGET_NDJSON, 2)}

        # CSV extracts with their mappings
        db = os.path.join(work, "csv.db")
        csv_secs = csv_rows = 0
        for setting, prefix in (("community", "community"), ("social_care", "social-care"),
                                ("mental_health", "mental-health")):
            for f in sorted(glob.glob(os.path.join(feeds, setting, "*.csv"))):
                org = os.path.splitext(os.path.basename(f))[0]
                csv_rows += sum(1 for _ in open(f)) - 1
                s, _, _, _ = run_import(binary, db, ["--mapping", "%s-%s" % (prefix, org), f], f)
                csv_secs += s
        stored = count(db, "SELECT count(*) FROM resource")
        quarantined = count(db, "SELECT count(*) FROM ingest_message WHERE status = 'quarantined'")
        res["csv"] = {"rows": csv_rows, "resources": stored, "quarantined_rows": quarantined,
                      "seconds": round(csv_secs, 2), "rows_per_s": round(csv_rows / csv_secs) if csv_secs else None}

        # memory bounded: one file, then the same four times over (fresh ids)
        one = os.path.join(work, "one.ndjson")
        four = os.path.join(work, "four.ndjson")
        with open(one, "w") as o1, open(four, "w") as o4:
            for f in sorted(glob.glob(os.path.join(feeds, "gp", "*.ndjson"))):
                with open(f) as src:
                    for line in src:
                        o1.write(line)
                        for k in range(4):
                            o4.write(line.replace('"id":"', '"id":"x%d' % k, 1))
        _, _, rss1, _ = run_import(binary, os.path.join(work, "m1.db"), [one], "one")
        _, _, rss4, _ = run_import(binary, os.path.join(work, "m4.db"), [four], "four")
        res["memory"] = {"file_bytes_1x": os.path.getsize(one), "file_bytes_4x": os.path.getsize(four),
                         "peak_rss_kb_1x": rss1, "peak_rss_kb_4x": rss4,
                         "growth": round(rss4 / rss1, 2) if rss1 else None}
        res["load_average_end"] = os.getloadavg()[0]
    finally:
        if not os.environ.get("IMPORT_DIR"):
            shutil.rmtree(work, ignore_errors=True)

    n, c, m = res["ndjson"], res["csv"], res["memory"]
    print("\nconcord import, synthetic population of %d people (SQLite)" % patients)
    print("  ndjson  %9d resources in %6.1f s  %8d resources/s  (target >= 20,000/s: ratio %.2f)  peak RSS %d MB"
          % (n["resources"], n["seconds"], n["resources_per_s"], n["ratio"], n["peak_rss_kb"] // 1024))
    print("  csv     %9d rows in %6.1f s       %8s rows/s  -> %d resources, %d rows quarantined (planted errors)"
          % (c["rows"], c["seconds"], c["rows_per_s"], c["resources"], c["quarantined_rows"]))
    print("  memory  %d MB file: peak RSS %d MB; %d MB file: peak RSS %d MB (x%.2f for 4x the input)"
          % (m["file_bytes_1x"] >> 20, m["peak_rss_kb_1x"] >> 10, m["file_bytes_4x"] >> 20, m["peak_rss_kb_4x"] >> 10,
             m["growth"]))
    print("  load average before %.2f, at the end %.2f" % (n["load_average_before"], res["load_average_end"]))
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(res, indent=2) + "\n"
    name = "latest-import-quick.json" if quick else "latest-import.json"
    if not quick:
        with open(os.path.join(out_dir, "%s-import.json" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())), "w") as f:
            f.write(text)
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(text)
    print("results: bench/results/%s" % name)


if __name__ == "__main__":
    main()
