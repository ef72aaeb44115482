#!/bin/sh
# The one recipe for mipserver binaries: `make compile`, the Dockerfile and the release workflow all run this script,
# so they cannot drift apart; tests/deploy/compile_test.ts runs it too.
#
#   deploy/compile.sh OUT_DIR TARGET...     writes OUT_DIR/mipserver-TARGET for each deno compile target
#
# Environment:
#   DENO             the deno that compiles (default: deno on PATH)
#   DENORT_BIN       base runtime for a single TARGET (deno compile's own variable)
#   DENORT_X86_64    base runtime for x86_64-unknown-linux-gnu   } when several targets are built at once
#   DENORT_AARCH64   base runtime for aarch64-unknown-linux-gnu  }
# Without a base runtime, deno compile downloads the slim runtime (denort) for the target from Deno's servers: that
# is the release build. Offline, a base runtime must be given; the full `deno` of the same version lets the build
# complete (a build check: such a binary starts as plain deno, it does not run mipserver).
#
# What is embedded: the module graph of src/main.ts, the edge worker module (loaded by URL, so deno compile cannot
# see it), config.yaml, and the npm packages in deno.lock minus what is never loaded (see EXCLUDE below).
set -eu

if [ "$#" -lt 2 ]; then
  echo "usage: deploy/compile.sh OUT_DIR TARGET..." >&2
  exit 2
fi
# Paths given relative to where this was started stay so after the cd to the project folder.
absolute() { case "$1" in /* | "") echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
out=$(absolute "$1")
shift
deno=${DENO:-deno}
case "$deno" in */*) deno=$(absolute "$deno") ;; esac
DENORT_BIN=$(absolute "${DENORT_BIN:-}")
DENORT_X86_64=$(absolute "${DENORT_X86_64:-}")
DENORT_AARCH64=$(absolute "${DENORT_AARCH64:-}")
cd "$(dirname "$0")/.."

if [ -n "$DENORT_BIN" ] && [ "$#" != 1 ]; then
  echo "DENORT_BIN is one architecture's runtime: give one target, or set DENORT_X86_64 and DENORT_AARCH64" >&2
  exit 2
fi

# Never loaded, so never embedded: test folders that npm packages ship (deno compile reads every file it embeds, and
# test data can be anything: bintrees' test/perf/100k once overflowed its parser's stack), and zod's TypeScript
# sources in src/ (they hold its tests; they are only resolved under zod's own "@zod/source" export condition).
npm_cache=$("$deno" info --json | sed -n 's/^ *"npmCache": *"\(.*\)",*$/\1/p')
exclude=""
if [ -d "$npm_cache/registry.npmjs.org" ]; then
  for dir in $(find "$npm_cache/registry.npmjs.org" -mindepth 3 -type d \
    \( -name test -o -name tests -o -name __tests__ -o -path '*/zod/*/src' \) -prune -print); do
    exclude="$exclude --exclude $dir"
  done
fi

mkdir -p "$out"
for target in "$@"; do
  case "$target" in
    x86_64-*) base=${DENORT_BIN:-$DENORT_X86_64} ;;
    aarch64-*) base=${DENORT_BIN:-$DENORT_AARCH64} ;;
    *) base=$DENORT_BIN ;;
  esac
  echo "compile: $out/mipserver-$target${base:+ (base runtime $base)}"
  # shellcheck disable=SC2046,SC2086 # one flag per line in deploy/permissions; exclusions are plain paths
  env ${base:+"DENORT_BIN=$base"} "$deno" compile --frozen $(grep -v '^#' deploy/permissions) \
    --include config.yaml --include src/edge/edge_worker.ts $exclude \
    --target "$target" --output "$out/mipserver-$target" src/main.ts
done
