#!/usr/bin/env bash
# Run a command with CONCORD_TEST_PG pointing at a PostgreSQL server.
# If CONCORD_TEST_PG is already set, use it. Otherwise start a throwaway
# cluster (initdb in a temp dir, loopback only, a free port) for the
# duration of the command and remove it afterwards. PostgreSQL refuses to
# run as root, so as root the cluster runs as the `postgres` user.
set -euo pipefail
if [ -n "${CONCORD_TEST_PG:-}" ]; then exec "$@"; fi

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ]; then
  echo "with-postgres: PostgreSQL server binaries not found (make deps installs them)" >&2
  exit 1
fi
dir=$(mktemp -d /tmp/concord-pg.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${as_pg[@]}" "$PGBIN/initdb" -D "$dir/data" -U concord --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=200" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }
export CONCORD_TEST_PG="postgresql://concord@127.0.0.1:$port/postgres"
echo "with-postgres: throwaway PostgreSQL on 127.0.0.1:$port" >&2
"$@"
