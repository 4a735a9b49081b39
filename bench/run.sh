#!/usr/bin/env bash
# bench/run.sh CONCORD_BINARY — concord's benchmarks (what `make bench` runs).
#
# Starts the server on a fresh database, loads a population through the FHIR
# API, drives it with wrk on 127.0.0.1, prints figures next to their targets
# and writes them with a description of the machine to bench/results/.
# The work is done by bench/bench.py; this wrapper checks the tools first.
#
#   BENCH_QUICK=1            smoke run: 20,000 resources, 3 s per workload
#   BENCH_RESOURCES=N        population size (default 1,000,000; the issue's
#                            search target is for 10,000,000)
#   BENCH_DB=postgresql://…  bench PostgreSQL: a scratch database is created
#                            on that server and dropped afterwards
#   BENCH_PERF=1             also profile the server with perf (extra runs)
#   BENCH_SKIP_ACCESS=1      leave out access.py (access control's cost,
#                            which builds the pre-access baseline once)
#   more in bench/README.md
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ $# -ne 1 ]; then
  echo "usage: bench/run.sh CONCORD_BINARY" >&2
  exit 2
fi
bin=$1
if [ ! -x "$bin" ]; then
  echo "bench: $bin is not an executable (build first: make)" >&2
  exit 1
fi
missing=
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
[ -x /usr/bin/python3 ] || missing="$missing python3"
if [ -n "$missing" ]; then
  echo "bench: missing:$missing (make deps installs them)" >&2
  exit 1
fi
case "${BENCH_DB:-}" in
  postgres*://*) command -v psql >/dev/null 2>&1 || { echo "bench: BENCH_DB is PostgreSQL but psql is missing (apt-get install postgresql-client)" >&2; exit 1; } ;;
esac
command -v sqlite3 >/dev/null 2>&1 || echo "bench: note: without the sqlite3 CLI the WAL is not checkpointed before sizing" >&2

# the server benchmarks, then the synthetic population generator (issue 3's
# target); BENCH_SKIP_SYNTH=1 leaves the latter out
/usr/bin/python3 -B "$here/bench.py" "$bin"
# what authorisation and access logging cost read by id, against the build
# before access control (issue 6's target); BENCH_SKIP_ACCESS=1 leaves it out
if [ -z "${BENCH_SKIP_ACCESS:-}" ]; then /usr/bin/python3 -B "$here/access.py" "$bin"; fi
/usr/bin/python3 -B "$here/mllp.py" "$bin"  # HL7 v2 over MLLP, ACK after commit (issue 4's target)
/usr/bin/python3 -B "$here/risk.py" "$bin"  # risk stratification: 500,000 people, rescoring (issue 7's targets)
/usr/bin/python3 -B "$here/registry.py" "$bin"  # the patient registry: batch, real time, accuracy (issue 5's targets)
/usr/bin/python3 -B "$here/import.py" "$bin"  # concord import: ndjson, CSV, memory (issue 4's targets)
if [ -z "${BENCH_SKIP_SYNTH:-}" ]; then
  if [ -n "${BENCH_QUICK:-}" ]; then SYNTH_PATIENTS=${SYNTH_PATIENTS:-20000} "$here/synth.sh" "$bin"
  else "$here/synth.sh" "$bin"; fi
fi
