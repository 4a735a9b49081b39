#!/usr/bin/env bash
# bench/synth.sh CONCORD_BINARY — time `concord synth` (the synthetic
# population's feeds) against its target: 500,000 people with five years of
# history in under 60 s on 2 cores, memory bounded.
#
# Prints the wall time, CPU time, peak resident memory and output size, and
# writes them as JSON to bench/results/<UTC time>-synth.json and
# bench/results/latest-synth.json. The output directory is deleted after.
#
#   SYNTH_PATIENTS=N   population (default 500000)
#   SYNTH_SEED=S       seed (default 1)
#   SYNTH_THREADS=T    generator threads (default: the number of CPUs)
#   SYNTH_OUT=DIR      where to write (default: a fresh directory under $TMPDIR or /tmp)
#   SYNTH_KEEP=1       keep the output
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: bench/synth.sh CONCORD_BINARY (build first: make)" >&2
  exit 2
fi
bin=$1
patients=${SYNTH_PATIENTS:-500000}
seed=${SYNTH_SEED:-1}
out=${SYNTH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/concord-synth-bench.XXXXXX")}
timefile=$(mktemp)
cleanup() {
  rm -f "$timefile"
  if [ -z "${SYNTH_KEEP:-}" ]; then rm -rf "$out"; fi
}
trap cleanup EXIT
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

threads_arg=()
if [ -n "${SYNTH_THREADS:-}" ]; then threads_arg=(--threads "$SYNTH_THREADS"); fi
echo "bench: concord synth --patients $patients --seed $seed -> $out" >&2
/usr/bin/time -v -o "$timefile" "$bin" synth --patients "$patients" --seed "$seed" --out "$out" --quiet "${threads_arg[@]}"

wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$timefile")
secs=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
user=$(awk -F': ' '/User time/ {print $2}' "$timefile")
sys=$(awk -F': ' '/System time/ {print $2}' "$timefile")
rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$timefile")
bytes=$(du -sb "$out" | cut -f1)
cpus=$(nproc)
load=$(cut -d' ' -f1 /proc/loadavg)
verdict=$(awk -v s="$secs" -v n="$patients" 'BEGIN { t = 60 * n / 500000; print (s <= t) ? "meets" : "misses" }')

printf '\nconcord synth, %s people, 5 years of history (seed %s)\n' "$patients" "$seed"
printf '  wall time      %8.1f s   (target < 60 s for 500,000 on 2 cores: %s)\n' "$secs" "$verdict"
printf '  CPU time       %8.1f s   user + %.1f s system, %s CPUs, load average at the end %s\n' "$user" "$sys" "$cpus" "$load"
printf '  peak memory    %8.1f MB  (resident)\n' "$(awk -v k="$rss_kb" 'BEGIN { print k / 1024 }')"
printf '  output         %8.1f MB\n' "$(awk -v b="$bytes" 'BEGIN { print b / 1e6 }')"
printf '  rate           %8.0f people/s\n' "$(awk -v n="$patients" -v s="$secs" 'BEGIN { print n / s }')"

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=$(printf '{"benchmark": "synth", "time": "%s", "patients": %s, "seed": %s, "wall_s": %s, "user_s": %s, "system_s": %s, "peak_rss_kb": %s, "output_bytes": %s, "cpus": %s, "load_average": %s, "target_s": 60, "verdict": "%s", "binary": "%s"}' \
  "$stamp" "$patients" "$seed" "$secs" "$user" "$sys" "$rss_kb" "$bytes" "$cpus" "$load" "$verdict" "$bin")
echo "$json" > "$here/results/$stamp-synth.json"
echo "$json" > "$here/results/latest-synth.json"
echo "bench: figures in bench/results/$stamp-synth.json" >&2
