#!/bin/sh
# Measures hoistd's peak RSS (VmHWM) and the wall time of one push to a local registry.
#   scripts/push-rss.sh SOURCE [CHUNK] [COMPRESSION] [EXTRA_PUSH_FLAGS]
# Needs docker-registry, and hoist/hoistd in $HOIST_BIN_DIR (default target/debug).
# Prints: peak RSS in KiB, seconds, bytes pushed, MB/s.
set -eu
src=$1
chunk=${2:-16MiB}
compression=${3:-gzip}
extra=${4:-}
bin=${HOIST_BIN_DIR:-target/debug}
work=$(mktemp -d)
trap 'kill $reg $daemon 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/reg.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/storage
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$port
  secret: s
YML
docker-registry serve "$work/reg.yml" >"$work/reg.log" 2>&1 &
reg=$!
"$bin/hoistd" --socket "$work/hoist.sock" --state-dir "$work/state" --allow-root >"$work/d.log" 2>&1 &
daemon=$!
sleep 1
start=$(date +%s.%N)
"$bin/hoist" --socket "$work/hoist.sock" push --no-autostart --insecure --chunk-size "$chunk" \
    --compression "$compression" $extra --detach "$src" "127.0.0.1:$port/rss/img:1" >"$work/id"
id=$(cat "$work/id")
hwm=0
while :; do
    h=$(awk '/VmHWM/ {print $2}' /proc/$daemon/status)
    hwm=$h
    state=$("$bin/hoist" --socket "$work/hoist.sock" ls --json 2>/dev/null | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j[0]["state"] if isinstance(j,list) else j["jobs"][0]["state"])')
    case $state in done|failed|cancelled) break ;; esac
    sleep 0.5
done
end=$(date +%s.%N)
"$bin/hoist" --socket "$work/hoist.sock" ls --json > "$work/final.json"
bytes=$(python3 -c "import json; j=json.load(open('$work/final.json')); j=j if isinstance(j,list) else j['jobs']; print(sum(b.get('pushed_size_bytes', b['size_bytes']) for b in j[0]['blobs']))")
secs=$(python3 -c "print(round($end-$start,1))")
echo "state=$state peak_rss_kib=$hwm seconds=$secs bytes=$bytes MBps=$(python3 -c "print(round($bytes/1e6/($end-$start),1))")"
