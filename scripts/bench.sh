#!/usr/bin/env bash
# Side-by-side push benchmark: hoist vs skopeo, same image, same local registry, same machine.
#
#   scripts/bench.sh [--runs N] [--random-mib 1024] [--text-mib 512] [--big-mib 0] [--out docs/PERFORMANCE.md]
#   scripts/bench.sh --split [--runs N] [--tree-mib 640] [--conn-mib 24] [--part-size 128MiB] [--out ...]
#
# Builds a deterministic image (a random-data layer plus a text-like layer; skopeo writes its
# docker-archive and its OCI layout with gzip layers from the uncompressed layout), starts Debian's
# docker-registry on a free loopback port with fresh storage for every run, and alternates
# hoist and skopeo runs for each case:
#   docker-archive -> gzip   docker-archive -> zstd   OCI layout with gzip layers (as is)
# hoist runs start a fresh hoistd (cleared state dir and spool) under /usr/bin/time, so the
# daemon's CPU seconds and peak RSS are measured with the CLI's. Also measured: re-pushing the
# same image to a new tag, and a push with hoistd killed (-9) at 50 % and restarted; with
# --big-mib N, hoistd's peak RSS on an N MiB image (4/5 random, 1/5 text, uncompressed OCI
# layers, so compressed) through scripts/push-rss.sh.
# Prints medians and ratios and writes the table to --out.
#
# --split runs only the layer-splitting case instead, through a proxy that caps every TCP
# connection on its own (examples/ecr_emulator --no-ecr --conn-mib-per-sec N, the tests' fault
# proxy), as per-flow shaping on a real path does: a single-layer image (a --tree-mib MiB tree of
# files, uncompressed in a docker-archive) pushed by hoist --split-layers SIZE, by hoist
# --split-layers off and by skopeo copy, then pulled back by skopeo copy into an OCI layout, split
# against unsplit. Its section of --out is replaced; the rest of the file is kept (and the main
# run keeps the split section).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh

RUNS=3
RANDOM_MIB=1024
TEXT_MIB=512
BIG_MIB=0
OUT=docs/PERFORMANCE.md
SPLIT=0
TREE_MIB=640
CONN_MIB=24
PART_SIZE=128MiB
while [ $# -gt 0 ]; do
  case "$1" in
    --split) SPLIT=1; shift ;;
    --tree-mib) TREE_MIB=$2; shift 2 ;;
    --conn-mib) CONN_MIB=$2; shift 2 ;;
    --part-size) PART_SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --random-mib) RANDOM_MIB=$2; shift 2 ;;
    --text-mib) TEXT_MIB=$2; shift 2 ;;
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

# HOIST_BIN_DIR: prebuilt hoist, hoistd, examples/sample_image and examples/ecr_emulator (the shared target dir may be
# rebuilt by another worktree while the benchmark runs: copy the binaries away and point here).
if [ -n "${HOIST_BIN_DIR:-}" ]; then
  BIN=$HOIST_BIN_DIR
else
  scripts/install-deps.sh
  cargo build --release --locked --bins --example sample_image --example ecr_emulator >&2
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoist-bench.XXXXXX")
REG_PID=""
HOISTD_PID=""
ECR_PID=""
CAP_PID=""
cleanup() {
  [ -n "$ECR_PID" ] && kill "$ECR_PID" 2>/dev/null || true
  [ -n "$CAP_PID" ] && kill "$CAP_PID" 2>/dev/null || true
  [ -n "$HOISTD_PID" ] && kill -9 "$(daemon_pid)" "$HOISTD_PID" 2>/dev/null || true
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A fresh registry (empty storage) for every measured run, so no run profits from another.
fresh_registry() {
  stop_registry
  rm -rf "$WORK/registry"
  start_registry "$WORK/registry"
}
stop_registry() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; REG_PID=""; fi
}

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
# record CASE TOOL WALL_S CPU_S MAXRSS_KIB; adds the registry's CPU seconds for the run and the
# 1-minute load average at its end.
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" "$(registry_cpu)" "$(cut -d' ' -f1 /proc/loadavg)" >> "$RESULTS"
  # BENCH_KEEP_RESULTS: a copy that outlives the run (even a failed one).
  [ -z "${BENCH_KEEP_RESULTS:-}" ] || cp "$RESULTS" "$BENCH_KEEP_RESULTS"
}
# CPU seconds (user + system) the registry used since it started (it is fresh for every run).
registry_cpu() {
  python3 -c "import os; f=open('/proc/$REG_PID/stat').read().rsplit(')',1)[1].split(); print(round((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'),2))" 2>/dev/null || echo 0
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

now() { date +%s.%N; }
calc() { python3 -c "print(round($1, 3))"; }

run_skopeo() { # CASE SOURCE [extra args]
  local case=$1 src=$2; shift 2
  local t0 t1 tf="$WORK/time.skopeo"
  t0=$(now)
  /usr/bin/time -f '%U %S %M' -o "$tf" skopeo copy -q --insecure-policy --dest-tls-verify=false "$@" \
    "$src" "docker://$REG/bench/$case:skopeo" >/dev/null
  t1=$(now)
  read -r u s m < "$tf"
  record "$case" skopeo "$(calc "$t1 - $t0")" "$(calc "$u + $s")" "$m"
}

# hoistd refuses to run as root unless told to.
ALLOW_ROOT=()
[ "$(id -u)" -ne 0 ] || ALLOW_ROOT=(--allow-root)
start_hoistd() {
  local state=$WORK/hoist-state
  rm -rf "$state"; mkdir -p "$state"
  SOCK=$state/hoist.sock
  /usr/bin/time -f '%U %S %M' -o "$WORK/time.hoistd" \
    "$BIN/hoistd" --socket "$SOCK" --state-dir "$state" "${ALLOW_ROOT[@]}" >"$WORK/hoistd.log" 2>&1 &
  HOISTD_PID=$!
  for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
}
# hoistd runs under /usr/bin/time: signals go to hoistd itself, the child of that process.
daemon_pid() { pgrep -P "$HOISTD_PID" -x hoistd || echo "$HOISTD_PID"; }
# Sets DAEMON_CPU and DAEMON_RSS (the daemon's CPU seconds and peak RSS in KiB). Not to be run
# in a subshell: only this shell can wait for /usr/bin/time to write its figures.
stop_hoistd() {
  kill -TERM "$(daemon_pid)" 2>/dev/null || true
  wait "$HOISTD_PID" 2>/dev/null || true
  HOISTD_PID=""
  local u s m
  read -r u s m < "$WORK/time.hoistd"
  DAEMON_CPU=$(calc "$u + $s")
  DAEMON_RSS=$m
}

run_hoist() { # CASE SOURCE [extra args]
  run_hoist_to "$REG" "$@"
}
run_hoist_to() { # HOST CASE SOURCE [extra args]
  local host=$1 case=$2 src=$3; shift 3
  local t0 t1 tf="$WORK/time.hoist"
  start_hoistd
  t0=$(now)
  /usr/bin/time -f '%U %S %M' -o "$tf" "$BIN/hoist" --socket "$SOCK" push --no-autostart --json "$@" \
    "$src" "$host/bench/$case:hoist" >"$WORK/push.out"
  t1=$(now)
  read -r u s m < "$tf"
  stop_hoistd
  record "$case" hoist "$(calc "$t1 - $t0")" "$(calc "$u + $s + $DAEMON_CPU")" "$DAEMON_RSS"
}

if [ "$SPLIT" = 1 ]; then
  . scripts/bench_split.sh
  exit 0
fi

if [ -n "${BENCH_IMAGE_DIR:-}" ]; then
  # image.tar and oci-gzip/ from an earlier run with the same sizes (they are deterministic).
  echo "bench: using the image in $BENCH_IMAGE_DIR" >&2
  ln -s "$BENCH_IMAGE_DIR/image.tar" "$WORK/image.tar"
  ln -s "$BENCH_IMAGE_DIR/oci-gzip" "$WORK/oci-gzip"
else
  echo "bench: building the image (${RANDOM_MIB} MiB random + ${TEXT_MIB} MiB text) in $WORK" >&2
  "$BIN/examples/sample_image" "$WORK/oci-tar" --random-mib "$RANDOM_MIB" --text-mib "$TEXT_MIB" --small-files 0 >&2
  # The gzip layers of the OCI case are written by a real tool (skopeo: Go's compress/gzip at
  # its default level, which stores incompressible blocks), as an image built elsewhere has them.
  skopeo copy -q --insecure-policy "oci:$WORK/oci-tar" "oci:$WORK/oci-gzip"
  skopeo copy -q --insecure-policy "oci:$WORK/oci-tar" "docker-archive:$WORK/image.tar:bench:latest"
  rm -rf "$WORK/oci-tar"
fi

for run in $(seq 1 "$RUNS"); do
  echo "bench: run $run of $RUNS" >&2
  for tool in hoist skopeo; do
    fresh_registry
    if [ $tool = hoist ]; then run_hoist archive-gzip "docker-archive:$WORK/image.tar"
    else run_skopeo archive-gzip "docker-archive:$WORK/image.tar"; fi
    fresh_registry
    if [ $tool = hoist ]; then run_hoist archive-zstd "docker-archive:$WORK/image.tar" --compression zstd
    else run_skopeo archive-zstd "docker-archive:$WORK/image.tar" --dest-compress-format zstd; fi
    fresh_registry
    if [ $tool = hoist ]; then run_hoist oci-gzip "oci:$WORK/oci-gzip"
    else run_skopeo oci-gzip "oci:$WORK/oci-gzip"; fi
  done
  # The ELF census's cost: the same hoist pushes without it (--allow-arch-mismatch skips it).
  fresh_registry
  run_hoist archive-gzip-nocensus "docker-archive:$WORK/image.tar" --allow-arch-mismatch
  fresh_registry
  run_hoist oci-gzip-nocensus "oci:$WORK/oci-gzip" --allow-arch-mismatch
done

# Re-push of the same image to a new tag in the same repository: nothing recompressed or re-sent.
echo "bench: re-push to a new tag" >&2
fresh_registry
start_hoistd
"$BIN/hoist" --socket "$SOCK" push --no-autostart --json "docker-archive:$WORK/image.tar" "$REG/bench/again:one" >/dev/null
t0=$(now)
"$BIN/hoist" --socket "$SOCK" push --no-autostart --json "docker-archive:$WORK/image.tar" "$REG/bench/again:two" >/dev/null
t1=$(now)
stop_hoistd
record repush hoist "$(calc "$t1 - $t0")" 0 0

# kill -9 at 50 % of the uninterrupted push's bytes, restart, finish; total wall time.
# resume_push CASE HOST: records CASE with the total wall time of that push to HOST.
resume_push() {
  local case=$1 host=$2 t0 t1
  start_hoistd
  t0=$(now)
  JOB=$("$BIN/hoist" --socket "$SOCK" push --no-autostart --detach "docker-archive:$WORK/image.tar" "$host/bench/resume:latest" | tail -n 1)
  python3 scripts/wait_progress.py "$SOCK" "$JOB" 0.5 >/dev/null
  kill -9 "$(daemon_pid)"; wait "$HOISTD_PID" 2>/dev/null || true
  # The killed daemon leaves its socket file: wait for the new one, not the old.
  rm -f "$SOCK"
  /usr/bin/time -f '%U %S %M' -o "$WORK/time.hoistd" \
    "$BIN/hoistd" --socket "$SOCK" --state-dir "$WORK/hoist-state" "${ALLOW_ROOT[@]}" >>"$WORK/hoistd.log" 2>&1 &
  HOISTD_PID=$!
  for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
  "$BIN/hoist" --socket "$SOCK" watch "$JOB" >/dev/null
  t1=$(now)
  stop_hoistd
  record "$case" hoist "$(calc "$t1 - $t0")" 0 0
}
echo "bench: kill -9 at 50 % and resume" >&2
fresh_registry
resume_push resume "$REG"

# The same through the ECR emulation (atomic parts, as on ECR): Debian's registry cancels an
# upload whose PATCH was cut, so there the blobs in flight start again. Its baseline is an
# uninterrupted push through the emulation too.
start_ecr() {
  fresh_registry
  [ -z "$ECR_PID" ] || { kill "$ECR_PID" 2>/dev/null || true; wait "$ECR_PID" 2>/dev/null || true; }
  : > "$WORK/ecr.addr"
  "$BIN/examples/ecr_emulator" "$REG" > "$WORK/ecr.addr" &
  ECR_PID=$!
  for _ in $(seq 1 100); do [ -s "$WORK/ecr.addr" ] && break; sleep 0.05; done
  ECR=$(head -n 1 "$WORK/ecr.addr")
}
echo "bench: through the ECR emulation: uninterrupted, then kill -9 at 50 % and resume" >&2
for run in $(seq 1 "$RUNS"); do
  start_ecr
  run_hoist_to "$ECR" ecr-archive-gzip "docker-archive:$WORK/image.tar"
  start_ecr
  resume_push ecr-resume "$ECR"
done
kill "$ECR_PID" 2>/dev/null || true; wait "$ECR_PID" 2>/dev/null || true; ECR_PID=""
stop_registry

if [ "$BIG_MIB" -gt 0 ]; then
  echo "bench: peak RSS on a $BIG_MIB MiB image" >&2
  "$BIN/examples/sample_image" "$WORK/oci-big" --random-mib $((BIG_MIB * 4 / 5)) --text-mib $((BIG_MIB / 5)) --small-files 0 >&2
  out=$(HOIST_BIN_DIR=$BIN scripts/push-rss.sh "oci:$WORK/oci-big" | tail -n 1)
  echo "bench: $out" >&2
  rss=$(echo "$out" | sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p')
  secs=$(echo "$out" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
  REG_PID=""
  record "big-$BIG_MIB" hoist "$secs" 0 "$rss"
  rm -rf "$WORK/oci-big"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
OCI_GZIP_BYTES=$(du -sbL "$WORK/oci-gzip/blobs" | cut -f1)
export OCI_GZIP_BYTES
python3 scripts/bench_report.py "$RESULTS" "$RUNS" "$RANDOM_MIB" "$TEXT_MIB" "$LOAD_BEFORE" "$LOAD_AFTER" > "$WORK/report.md"
python3 scripts/bench_report.py --splice main "$OUT" "$WORK/report.md"
