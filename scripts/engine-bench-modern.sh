#!/usr/bin/env bash
# hoist push docker-daemon: against docker push and against docker save + hoist push, on a
# current Docker engine (Debian sid's docker.io 28 in the chroot of scripts/engine-chroot.sh),
# with the classic and the containerd image store, in one run. Run as root.
#
#   scripts/engine-bench-modern.sh [--runs 3] [--random-mib 1024] [--text-mib 512]
#                                  [--stores "classic containerd"] [--out docs/PERFORMANCE.md]
#                                  [--note TEXT]   # a line of the section (e.g. "smoke run")
#
# The image: examples/sample_image's random-data layer plus text-like layer (deterministic,
# seed fixed), gzip, `docker load`ed into each engine: on the containerd store as an OCI
# archive, whose gzip blobs the store keeps as they are (as it keeps pulled or built ones); on
# the classic store as a docker-archive (uncompressed layers; the store unpacks them anyway).
# Then for each store, N runs, the cases in an order rotated every run, each with a fresh
# registry (Debian's docker-registry, plain HTTP on 127.0.0.1, which the engine treats as
# insecure by default) and a fresh hoistd:
#   docker-push  docker push of the image, tagged for that registry (the engine pushes)
#   engine       hoist push docker-daemon:IMAGE
#   save+push    docker save -o FILE IMAGE, then hoist push docker-archive:FILE
# and on the containerd store, after docker-push and engine, a second push of the same image
# to the same registry, every blob present (docker-repush; engine-repush with a new hoistd
# with empty state, so nothing hoist remembers helps it).
# Each case gives its wall time and the CPU seconds of the clients (docker CLI, hoist), hoistd,
# the engine (dockerd, containerd and their descendants) and the registry, from
# /proc/PID/stat before and after. The medians go between the engine-bench-modern markers of
# --out.
#
# HOIST_BIN_DIR=DIR: use DIR/hoist, DIR/hoistd and DIR/examples/sample_image instead of a
# release build. ENGINE_BENCH_PUSH_ARGS: more `hoist push` flags for every hoist case.
# ENGINE_BENCH_RESULTS=FILE: keep every run's row there (tab-separated: store, case, wall s,
# CPU s of clients, hoistd, engine, registry, pushed bytes, manifest digest).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh

RUNS=3
RANDOM_MIB=1024
TEXT_MIB=512
STORES="classic containerd"
OUT=docs/PERFORMANCE.md
NOTE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --random-mib) RANDOM_MIB=$2; shift 2 ;;
    --text-mib) TEXT_MIB=$2; shift 2 ;;
    --stores) STORES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --note) NOTE=$2; shift 2 ;;
    *) echo "engine-bench-modern: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "engine-bench-modern: run as root (the engine runs in a chroot)" >&2; exit 2; }
for store in $STORES; do
  case "$store" in classic|containerd) ;; *)
    echo "engine-bench-modern: unknown store $store: classic or containerd" >&2; exit 2 ;;
  esac
done

hoist_bins "$ROOT" sample_image
scripts/engine-chroot.sh build >&2

IMAGE=bench/img:1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoist-engine-modern.XXXXXX")
ENGINE=""
REG_PID=""
HOISTD_PID=""
cleanup() {
  hoistd_stop
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  [ -n "$ENGINE" ] && scripts/engine-chroot.sh stop "$ENGINE"
  # Never remove a tree an engine still has the chroot's /dev or /sys mounted in.
  if findmnt -rn -o TARGET | grep -qF "$WORK/"; then
    echo "engine-bench-modern: mounts left under $WORK; not removing it" >&2
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT

now() { date +%s.%N; }
docker_cli() { scripts/engine-chroot.sh docker "$ENGINE" "$@"; }
# The chroot's docker CLI without engine-chroot.sh's shell around it, for the timed commands.
docker_timed() { client chroot "$ENGINE/root" docker -H "$DOCKER_HOST" "$@"; }

# The image as two archives: OCI (gzip blobs) for the containerd store, docker-archive for
# the classic one.
make_archives() {
  echo "engine-bench-modern: building the image (${RANDOM_MIB} MiB random + ${TEXT_MIB} MiB text, gzip)" >&2
  "$BIN/examples/sample_image" "$WORK/oci" --random-mib "$RANDOM_MIB" --text-mib "$TEXT_MIB" \
    --small-files 0 --gzip >&2
  # The containerd store names an image by the archive's ref.name as it is: it must be the
  # full name the engine resolves `bench/img:1` to.
  skopeo copy -q --insecure-policy "oci:$WORK/oci" "oci-archive:$WORK/containerd.tar:docker.io/$IMAGE"
  skopeo copy -q --insecure-policy "oci:$WORK/oci" "docker-archive:$WORK/classic.tar:$IMAGE"
  rm -rf "$WORK/oci"
}

# engine_start STORE: a fresh engine with the image loaded; sets ENGINE, DOCKER_HOST (hoistd
# takes the engine from the caller's environment) and ENGINE_PIDS.
engine_start() {
  ENGINE=$WORK/engine-$1
  export DOCKER_HOST
  DOCKER_HOST=$(scripts/engine-chroot.sh start "$1" "$ENGINE")
  ENGINE_PIDS=$(cat "$ENGINE/run/dockerd.pid")
  # The classic store's containerd is dockerd's child; the containerd store's is started apart.
  [ ! -f "$ENGINE/run/containerd.pid" ] || ENGINE_PIDS="$ENGINE_PIDS $(cat "$ENGINE/run/containerd.pid")"
  docker_cli load -q < "$WORK/$1.tar" >&2
}

engine_stop() {
  scripts/engine-chroot.sh stop "$ENGINE"
  ENGINE=""
}

registry_start() {
  rm -rf "$WORK/registry"
  start_registry "$WORK/registry"
}

registry_stop() {
  kill "$REG_PID" 2>/dev/null || true
  wait "$REG_PID" 2>/dev/null || true
  REG_PID=""
}

# client CMD...: a client program a case runs (its output in push.log, its CPU counted).
client() { cpu_run "$WORK/client" "$@" >>"$WORK/push.log" 2>&1; }
# The cases' commands.
docker_push() { docker_timed push -q "$REG/bench/docker:1"; }
hoist_push() {
  # shellcheck disable=SC2086
  client "$BIN/hoist" --socket "$SOCK" push "$1" "$REG/bench/$2:1" --insecure ${ENGINE_BENCH_PUSH_ARGS:-}
}
engine_push() { hoist_push "docker-daemon:$IMAGE" engine; }
save_push() {
  docker_timed save -o "$ENGINE/run/save.tar" "$IMAGE" || return 1
  hoist_push "docker-archive:$ENGINE/run/save.tar" save
}

# pushed REPO: the bytes of the manifest REPO:1 names in the registry (config and layers) and
# its digest, to compare what each tool pushed.
pushed() {
  python3 - "http://$REG/v2/$1/manifests/1" <<'PY'
import json, sys, urllib.request
accept = ["application/vnd.oci.image.manifest.v1+json",
          "application/vnd.docker.distribution.manifest.v2+json"]
request = urllib.request.Request(sys.argv[1], headers={"Accept": ", ".join(accept)})
with urllib.request.urlopen(request, timeout=30) as response:
    digest = response.headers["Docker-Content-Digest"]
    manifest = json.load(response)
size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
print(f"{size}\t{digest}")
PY
}

# measure STORE CASE REPO FUNC: runs FUNC (one of the cases' commands, pushing to REPO:1),
# timed; appends to RESULTS its wall time, the CPU seconds of the clients, hoistd, the engine
# and the registry, and what it pushed.
measure() {
  local store=$1 case=$2 repo=$3
  shift 3
  : >"$WORK/client"
  : >"$WORK/push.log"
  local before after t0 t1
  before=$(cpu_seconds "$HOISTD_PID" "$ENGINE_PIDS" "$REG_PID")
  t0=$(now)
  if ! "$1"; then
    echo "engine-bench-modern: $store $case failed:" >&2
    cat "$WORK/push.log" >&2
    exit 1
  fi
  t1=$(now)
  after=$(cpu_seconds "$HOISTD_PID" "$ENGINE_PIDS" "$REG_PID")
  python3 - "$store" "$case" "$t0" "$t1" "$WORK/client" "$before" "$after" >>"$RESULTS" <<'PY'
import sys
store, case, t0, t1, client, before, after = sys.argv[1:]
cpu = [float(a) - float(b) for a, b in zip(after.split(), before.split())]
client_s = sum(float(line) for line in open(client))
print("\t".join([store, case, f"{float(t1) - float(t0):.2f}", f"{client_s:.2f}"]
                + [f"{c:.2f}" for c in cpu]), end="\t")
PY
  pushed "$repo" >>"$RESULTS"
  echo "engine-bench-modern: $store run $run $case: $(tail -1 "$RESULTS" | cut -f3) s" >&2
}

# run_case STORE CASE: one case with a fresh registry and a fresh hoistd.
run_case() {
  local store=$1 case=$2
  registry_start
  hoistd_start "$BIN" "$WORK/state"
  case "$case" in
    docker-push)
      docker_cli tag "$IMAGE" "$REG/bench/docker:1"
      measure "$store" docker-push bench/docker docker_push
      if [ "$store" = containerd ]; then measure "$store" docker-repush bench/docker docker_push; fi
      docker_cli image rm "$REG/bench/docker:1" >/dev/null
      ;;
    engine)
      measure "$store" engine bench/engine engine_push
      if [ "$store" = containerd ]; then
        hoistd_stop
        hoistd_start "$BIN" "$WORK/state"
        measure "$store" engine-repush bench/engine engine_push
      fi
      ;;
    save+push)
      measure "$store" save+push bench/save save_push
      rm -f "$ENGINE/run/save.tar"
      ;;
  esac
  hoistd_stop
  registry_stop
}

versions() {
  local root=$ENGINE/root
  printf 'Docker %s (Engine API %s), containerd %s, %s, %s, hoist %s (%s, commit %s), kernel %s' \
    "$(docker_cli version --format '{{.Server.Version}}')" \
    "$(docker_cli version --format '{{.Server.APIVersion}}')" \
    "$(chroot "$root" containerd --version | awk '{print $3}')" \
    "$(docker-registry --version | awk '{print $1 " " $3}')" \
    "$(skopeo --version)" "$("$BIN/hoist" --version | awk '{print $2}')" "$BUILD" \
    "$(git describe --always --dirty 2>/dev/null || echo unknown)" "$(uname -r)"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
make_archives
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
VERSIONS=""
CASES=(docker-push engine save+push)
for store in $STORES; do
  engine_start "$store"
  [ -n "$VERSIONS" ] || VERSIONS=$(versions)
  for run in $(seq 1 "$RUNS"); do
    for i in 0 1 2; do run_case "$store" "${CASES[$(((i + run - 1) % 3))]}"; done
  done
  engine_stop
done
cat "$RESULTS" >&2
[ -z "${ENGINE_BENCH_RESULTS:-}" ] || cp "$RESULTS" "$ENGINE_BENCH_RESULTS"

SECTION=$(LOAD_START=$LOAD_START VERSIONS=$VERSIONS RUNS=$RUNS NOTE=$NOTE \
  IMAGE_DESC="${RANDOM_MIB} MiB random + ${TEXT_MIB} MiB text (examples/sample_image, gzip)" \
  python3 scripts/engine_bench_report.py "$RESULTS")
echo "$SECTION"
splice_section "$OUT" engine-bench-modern "$SECTION"
