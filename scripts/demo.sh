#!/usr/bin/env bash
# The main job, end to end, on this machine: starts a local registry (Debian's docker-registry)
# behind an ECR emulation (examples/ecr_emulator: ECR's atomic layer parts, among the rest of
# docs/ECR.md) and hoistd, generates a sample image of a few hundred MB as a `docker save`-style
# archive, shows what would be pushed, pushes it with live progress, kills the daemon (-9)
# midway, restarts it, watches the push finish from where the registry left off (the big blob
# resumes at its last acknowledged part: the demo fails if it started again from 0), and checks
# the result with `hoist verify` and `skopeo inspect`. Through Debian's registry alone the big
# blob would start again: it cancels an upload whose PATCH was cut.
#
#   scripts/demo.sh [--random-mib N] [--text-mib N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh
RANDOM_MIB=192
TEXT_MIB=128
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --random-mib) RANDOM_MIB=$2; shift 2 ;;
    --text-mib) TEXT_MIB=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "demo: unknown argument $1 (use --random-mib N, --text-mib N, --keep)" >&2; exit 2 ;;
  esac
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what is missing (docker-registry, skopeo, ...) and building hoist (release)"
scripts/install-deps.sh
cargo build --release --locked --bins --example sample_image --example ecr_emulator
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
export PATH="$BIN:$PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoist-demo.XXXXXX")
REG_PID=""
ECR_PID=""
DAEMON_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null || true
  [ -n "$ECR_PID" ] && kill "$ECR_PID" 2>/dev/null || true
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "demo: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

say "starting a local registry behind an ECR emulation (atomic layer parts, as on ECR)"
start_registry "$WORK/registry"
"$BIN/examples/ecr_emulator" "$REG" > "$WORK/ecr.addr" &
ECR_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/ecr.addr" ] && break; sleep 0.05; done
ECR=$(head -n 1 "$WORK/ecr.addr")
[ -n "$ECR" ] || { echo "demo: the ECR emulation did not start" >&2; exit 1; }
echo "registry at $REG, the ECR emulation in front of it at $ECR"

say "generating a sample image: ${RANDOM_MIB} MiB random + ${TEXT_MIB} MiB text, as a docker save archive"
"$BIN/examples/sample_image" "$WORK/layout" --random-mib "$RANDOM_MIB" --text-mib "$TEXT_MIB"
skopeo copy -q --insecure-policy "oci:$WORK/layout" "docker-archive:$WORK/app.tar:demo/app:latest"
rm -rf "$WORK/layout"
ls -lh "$WORK/app.tar"

say "hoist inspect: what would be pushed (no network)"
hoist inspect "$WORK/app.tar"

STATE=$WORK/state
SOCK=$WORK/hoist.sock
# hoistd refuses to run as root unless told to (the demo may run as root in a container).
ALLOW_ROOT=()
[ "$(id -u)" -ne 0 ] || ALLOW_ROOT=(--allow-root)
start_daemon() {
  # A killed daemon leaves its socket file behind: wait for the new one, not the old.
  rm -f "$SOCK"
  hoistd --socket "$SOCK" --state-dir "$STATE" "${ALLOW_ROOT[@]}" >>"$WORK/hoistd.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
}
say "starting hoistd (socket $SOCK, state in $STATE)"
start_daemon

TARGET=$ECR/demo/app:v1
say "hoist push $WORK/app.tar $TARGET (detached, so we can pull the plug)"
JOB=$(hoist --socket "$SOCK" push --no-autostart --detach "$WORK/app.tar" "$TARGET" | tail -n 1)
echo "job $JOB"
hoist --socket "$SOCK" watch "$JOB" 2>/dev/null &
WATCH_PID=$!
REACHED=$(python3 scripts/wait_progress.py "$SOCK" "$JOB" 0.4 120)
say "kill -9 hoistd at $(python3 -c "print(round($REACHED * 100))") % uploaded"
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
DAEMON_PID=""
if hoist --socket "$SOCK" ls >/dev/null 2>&1; then echo "demo: the daemon still answers?" >&2; exit 1; fi
python3 -c "import urllib.request,sys
try:
    urllib.request.urlopen(urllib.request.Request('http://$REG/v2/demo/app/manifests/v1', method='HEAD'))
    print('the tag exists already: wrong'); sys.exit(1)
except Exception as e:
    print('the tag does not exist yet (as it must not, before every blob is verified)')"

say "restarting hoistd: the job continues by itself from what the registry holds"
start_daemon
hoist --socket "$SOCK" watch "$JOB"

say "where the interrupted blobs went on (the job's events: resumed or restarted)"
hoist --socket "$SOCK" watch --json "$JOB" | python3 scripts/demo_resumed.py

say "hoist verify $TARGET (resolved the way a linux/amd64 node resolves it)"
hoist verify "$TARGET"

say "skopeo inspect docker://$TARGET"
skopeo inspect --tls-verify=false "docker://$TARGET" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("digest", d["Digest"]); print("platform", d["Os"] + "/" + d["Architecture"]); print("layers", len(d["Layers"]))'

say "done: pushed, interrupted, resumed from the last acknowledged part and verified"
