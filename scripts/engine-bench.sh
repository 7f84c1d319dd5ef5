#!/usr/bin/env bash
# docker-daemon: against `docker save` + a push of the archive: same image, same engine, same
# registry, same machine.
#
#   scripts/engine-bench.sh [--runs N] [--random-mib 1024] [--text-mib 512] [--out docs/PERFORMANCE.md]
#   scripts/engine-bench.sh --image NAME ...   # an image already in the engine DOCKER_HOST names
#
# Starts a private dockerd (vfs storage, no networking) and `docker load`s a deterministic image
# (a random-data layer plus a text-like layer, uncompressed). Then, alternating, with a fresh
# registry and a fresh hoistd for every run:
#   save+push: docker save -o FILE IMAGE, then hoist push docker-archive:FILE (wall time of both)
#   engine:    hoist push docker-daemon:IMAGE (hoistd's DOCKER_HOST names the engine)
# and the peak disk used beside the engine (the archive plus hoist's spool, or hoist's spool
# alone), sampled every 0.1 s. Writes the medians between the engine-bench markers of --out.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh

RUNS=3
RANDOM_MIB=1024
TEXT_MIB=512
OUT=docs/PERFORMANCE.md
IMAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --random-mib) RANDOM_MIB=$2; shift 2 ;;
    --text-mib) TEXT_MIB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    *) echo "engine-bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

hoist_bins "$ROOT" sample_image
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoist-engine.XXXXXX")
REG_PID=""
HOISTD_PID=""
DOCKERD_PID=""
cleanup() {
  [ -n "$HOISTD_PID" ] && kill -9 "$HOISTD_PID" 2>/dev/null || true
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  if [ -n "$DOCKERD_PID" ]; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
calc() { python3 -c "print(round($1, 2))"; }

if [ -z "$IMAGE" ]; then
IMAGE=bench/img:1
ENGINE=$WORK/engine
mkdir -p "$ENGINE"
dockerd --storage-driver=vfs --iptables=false --bridge=none -H "unix://$ENGINE/docker.sock" \
  --data-root "$ENGINE/data" --exec-root "$ENGINE/exec" --pidfile "$ENGINE/pid" >"$ENGINE/log" 2>&1 &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$ENGINE/docker.sock
for _ in $(seq 1 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version >/dev/null

echo "engine-bench: building and loading the image (${RANDOM_MIB} MiB random + ${TEXT_MIB} MiB text)" >&2
"$BIN/examples/sample_image" "$WORK/oci" --random-mib "$RANDOM_MIB" --text-mib "$TEXT_MIB" --small-files 0 >&2
skopeo copy -q --insecure-policy "oci:$WORK/oci" "docker-archive:$WORK/load.tar:$IMAGE"
rm -rf "$WORK/oci"
docker load -q -i "$WORK/load.tar" >/dev/null
rm -f "$WORK/load.tar"
DESCRIPTION="${RANDOM_MIB} MiB random + ${TEXT_MIB} MiB text, uncompressed layers, loaded in a private dockerd (Debian's docker.io, vfs storage)"
else
  SIZE=$(docker image inspect --format '{{.Size}}' "$IMAGE")
  DESCRIPTION="$IMAGE ($((SIZE >> 20)) MiB uncompressed) in the engine at $DOCKER_HOST ($(docker version --format '{{.Server.Version}}'))"
fi

# Samples the bytes under the state directory and the archive every 0.1 s into $WORK/disk.
watch_disk() {
  echo 0 > "$WORK/disk"
  ( peak=0
    while :; do
      used=$( (du -sb "$WORK/state" "$WORK/save.tar" 2>/dev/null || true) | awk '{s+=$1} END {print s+0}')
      [ "$used" -gt "$peak" ] && peak=$used && echo "$peak" > "$WORK/disk"
      sleep 0.1
    done ) &
  WATCH_PID=$!
}
stop_watch() { kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; }

RESULTS=$WORK/results.tsv
: > "$RESULTS"
# ENGINE_BENCH_PUSH_ARGS: more `hoist push` flags for both cases (e.g. --allow-arch-mismatch).
# ENGINE_BENCH_EVENTS=DIR: keep each push's job events (`--json`, one per line, with time_ms)
# in DIR/RUN-CASE.jsonl, to see where the time goes (export, uploads, census wait).
push() {
  local json=() events=/dev/null
  if [ -n "${ENGINE_BENCH_EVENTS:-}" ]; then
    mkdir -p "$ENGINE_BENCH_EVENTS"; json=(--json); events=$ENGINE_BENCH_EVENTS/$run-$2.jsonl
  fi
  "$BIN/hoist" --socket "$SOCK" push "$1" "$REG/bench/$2:1" --insecure "${json[@]}" ${ENGINE_BENCH_PUSH_ARGS:-} >"$events" 2>"$WORK/push.err" || { cat "$WORK/push.err" >&2; exit 1; }
}
for run in $(seq 1 "$RUNS"); do
  for case in save+push engine; do
    rm -rf "$WORK/registry"; start_registry "$WORK/registry"
    hoistd_start "$BIN" "$WORK/state"
    watch_disk
    t0=$(now)
    if [ "$case" = engine ]; then
      push "docker-daemon:$IMAGE" engine
    else
      docker save -o "$WORK/save.tar" "$IMAGE"
      push "docker-archive:$WORK/save.tar" save
    fi
    t1=$(now)
    stop_watch
    hoistd_stop
    kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=""
    rm -f "$WORK/save.tar"
    printf '%s\t%s\t%s\n' "$case" "$(calc "$t1 - $t0")" "$(cat "$WORK/disk")" >> "$RESULTS"
    echo "engine-bench: run $run $case: $(tail -1 "$RESULTS" | cut -f2) s" >&2
  done
done

SECTION=$(python3 - "$RESULTS" "$DESCRIPTION" "$BUILD" "$RUNS" <<'PY'
import statistics, sys, os, time
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
med = lambda case, i: statistics.median(float(r[i]) for r in rows if r[0] == case)
save, engine = med("save+push", 1), med("engine", 1)
print("<!-- engine-bench: written by scripts/engine-bench.sh -->")
print("## docker-daemon: against docker save + push\n")
print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
      f"load average at the end {open('/proc/loadavg').read().split()[0]}")
print(f"- image: {sys.argv[2]}; gzip; hoist push flags: {os.environ.get('ENGINE_BENCH_PUSH_ARGS') or 'none'}; hoist build: {sys.argv[3]}; fresh registry and hoistd per run; "
      f"{sys.argv[4]} runs per case, medians\n")
print("| case | wall s | peak extra disk MiB |")
print("|---|---|---|")
print(f"| docker save + hoist push docker-archive: | {save:.2f} | {med('save+push', 2) / 2**20:.0f} |")
print(f"| hoist push docker-daemon: | {engine:.2f} | {med('engine', 2) / 2**20:.0f} |")
print(f"\ndocker-daemon: takes {engine / save:.2f}x the wall time of docker save + push (goal: at most 1.1x).")
print("<!-- /engine-bench -->")
PY
)
echo "$SECTION"
splice_section "$OUT" engine-bench "$SECTION"
