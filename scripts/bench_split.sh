# The --split case of scripts/bench.sh (sourced by it after its helpers are defined; not run on
# its own): a single-layer image through a proxy that caps every TCP connection on its own.
#
# Every run alternates the order of its pushes and of its pulls. Each push goes through a fresh
# proxy, which counts the bytes it forwarded (the bytes on the wire). The three pushes of a run
# go to one fresh registry, each to its own repository: they share no blob (hoist's parts, hoist's
# whole gzip layer and skopeo's gzip layer all differ), so none profits from another. The pulls
# (skopeo copy into an OCI layout, through a fresh proxy each) fetch hoist's split and unsplit
# images from that registry.

SPLIT_RESULTS=$WORK/split.tsv
: > "$SPLIT_RESULTS"

# hoist without --split-layers (before the flag exists) measures the unsplit push only.
if "$BIN/hoist" push --help | grep -q -- '--split-layers'; then
  HAS_SPLIT=1
else
  HAS_SPLIT=0
  echo "bench: this hoist has no --split-layers; measuring the unsplit push only" >&2
fi

echo "bench: building the image (a ${TREE_MIB} MiB tree of files in one layer) in $WORK" >&2
"$BIN/examples/sample_image" "$WORK/oci-tree" --tree-mib "$TREE_MIB" --random-mib 0 --text-mib 0 --small-files 0 >&2
skopeo copy -q --insecure-policy "oci:$WORK/oci-tree" "docker-archive:$WORK/tree.tar:bench:latest"
LAYER_BYTES=$(python3 -c "
import json, sys
d = '$WORK/oci-tree'
idx = json.load(open(d + '/index.json'))
m = json.load(open(d + '/blobs/' + idx['manifests'][0]['digest'].replace(':', '/')))
print(sum(l['size'] for l in m['layers']))")
TREE_FILES=$(tar -tf "$WORK/tree.tar" >/dev/null && python3 -c "
import json, tarfile
t = tarfile.open('$WORK/tree.tar')
m = json.load(t.extractfile('manifest.json'))
inner = tarfile.open(fileobj=t.extractfile(m[0]['Layers'][0]))
print(sum(1 for e in inner if e.isfile()))")
rm -rf "$WORK/oci-tree"

# The capped proxy in front of $REG; sets CAP (its host) and CAP_PID.
start_cap() {
  : > "$WORK/cap.out"
  "$BIN/examples/ecr_emulator" --no-ecr --conn-mib-per-sec "$CONN_MIB" "$REG" > "$WORK/cap.out" &
  CAP_PID=$!
  for _ in $(seq 1 100); do [ -s "$WORK/cap.out" ] && break; sleep 0.05; done
  CAP=$(head -n 1 "$WORK/cap.out")
}
# Stops the proxy; sets NET to the counts it printed (key=value, space-separated).
stop_cap() {
  kill -TERM "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  CAP_PID=""
  NET=$(sed -n 2p "$WORK/cap.out")
}
# record_split CASE TOOL WALL_S CLIENT_CPU_S: with the proxy's counts and the 1-minute load.
record_split() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" "$NET" "$(cut -d' ' -f1 /proc/loadavg)" >> "$SPLIT_RESULTS"
  [ -z "${BENCH_KEEP_RESULTS:-}" ] || cp "$SPLIT_RESULTS" "$BENCH_KEEP_RESULTS"
}

# capped_push CASE TOOL [extra args]: pushes the docker-archive to $CAP/bench/CASE:latest.
capped_push() {
  local case=$1 tool=$2 t0 t1 u s m
  shift 2
  start_cap
  if [ "$tool" = hoist ]; then
    start_hoistd
    t0=$(now)
    /usr/bin/time -f '%U %S %M' -o "$WORK/time.client" "$BIN/hoist" --socket "$SOCK" push --no-autostart --json "$@" \
      "docker-archive:$WORK/tree.tar" "$CAP/bench/$case:latest" >"$WORK/push.out"
    t1=$(now)
    stop_hoistd
  else
    t0=$(now)
    /usr/bin/time -f '%U %S %M' -o "$WORK/time.client" skopeo copy -q --insecure-policy --dest-tls-verify=false "$@" \
      "docker-archive:$WORK/tree.tar" "docker://$CAP/bench/$case:latest" >/dev/null
    t1=$(now)
    DAEMON_CPU=0
  fi
  stop_cap
  read -r u s m < "$WORK/time.client"
  record_split "$case" "$tool" "$(calc "$t1 - $t0")" "$(calc "$u + $s + $DAEMON_CPU")"
  # The layout the registry holds (straight from it, not through the proxy), for the report.
  skopeo inspect -n --raw --tls-verify=false "docker://$REG/bench/$case:latest" > "$WORK/manifest-$case.json"
}

# capped_pull CASE REPO: skopeo copy of $CAP/bench/REPO:latest into a fresh OCI layout (kept
# until the next pull of CASE; the report reads the split image's parts from it).
capped_pull() {
  local case=$1 repo=$2 t0 t1 u s m
  start_cap
  rm -rf "$WORK/pulled-$case"
  t0=$(now)
  /usr/bin/time -f '%U %S %M' -o "$WORK/time.client" skopeo copy -q --insecure-policy --src-tls-verify=false \
    "docker://$CAP/bench/$repo:latest" "oci:$WORK/pulled-$case:latest" >/dev/null
  t1=$(now)
  stop_cap
  read -r u s m < "$WORK/time.client"
  record_split "$case" skopeo "$(calc "$t1 - $t0")" "$(calc "$u + $s")"
}

PUSHES=(push-skopeo push-unsplit)
PULLS=(pull-unsplit)
if [ "$HAS_SPLIT" = 1 ]; then
  PUSHES+=(push-split)
  PULLS+=(pull-split)
fi
for run in $(seq 1 "$RUNS"); do
  echo "bench: split run $run of $RUNS" >&2
  fresh_registry
  order=("${PUSHES[@]}")
  # Even runs go in reverse order, so no case always runs first (or last) on a busy machine.
  if [ $((run % 2)) = 0 ]; then mapfile -t order < <(printf '%s\n' "${PUSHES[@]}" | tac); fi
  for case in "${order[@]}"; do
    case $case in
      push-skopeo) capped_push push-skopeo skopeo ;;
      push-unsplit)
        if [ "$HAS_SPLIT" = 1 ]; then capped_push push-unsplit hoist --split-layers off
        else capped_push push-unsplit hoist; fi ;;
      push-split) capped_push push-split hoist --split-layers "$PART_SIZE" ;;
    esac
  done
  order=("${PULLS[@]}")
  if [ $((run % 2)) = 0 ]; then mapfile -t order < <(printf '%s\n' "${PULLS[@]}" | tac); fi
  for case in "${order[@]}"; do
    capped_pull "$case" "${case/pull-/push-}"
  done
done
stop_registry

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# BENCH_BUILD_NOTE: how the binaries were built, when not by this script's release build.
BUILD_NOTE=${BENCH_BUILD_NOTE:-release build}
export BUILD_NOTE LAYER_BYTES TREE_FILES TREE_MIB CONN_MIB PART_SIZE LOAD_BEFORE LOAD_AFTER RUNS
python3 scripts/bench_report.py --split "$SPLIT_RESULTS" "$WORK" > "$WORK/split.md"
python3 scripts/bench_report.py --splice split "$OUT" "$WORK/split.md"
