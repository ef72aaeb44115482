# Shared by the bench scripts, which source it from the repository root with DENO set.

# Starts bench/prepare.ts in folder $1 (the fixture upstream, its package built with the real mpy-cross, and a
# config.yaml for mipserver on port $2), kept alive through fd 3 (closing it stops the fixture), and sets the variables
# it prints (FILE_PATH, FILE_BYTES, MANIFEST_PATH, WWW, ...).
start_fixture() {
  exec 3> >("$DENO" run -A --frozen bench/prepare.ts "$1" "$2" > "$1/prepare.out")
  for _ in $(seq 1 300); do grep -q READY=1 "$1/prepare.out" 2>/dev/null && break; sleep 0.1; done
  grep -q READY=1 "$1/prepare.out" 2>/dev/null ||
    { echo "bench: the fixture upstream did not start; its output: $1/prepare.out" >&2; exit 1; }
  # shellcheck disable=SC1090
  source <(grep = "$1/prepare.out")
}

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
