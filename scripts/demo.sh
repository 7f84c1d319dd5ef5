#!/usr/bin/env bash
# The main job, end to end on one machine: builds hoist, writes a sample image as a
# `docker save`-style archive, starts a local registry and hoistd, pushes with `hoist push`
# (compressing the layers on the way), then checks the tag with `hoist verify` and skopeo.
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release --bins --example sample_image
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
cleanup() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
  [ -n "${registry:-}" ] && kill "$registry" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== a sample image: 64 MiB of text, 64 MiB of random bytes, small files"
"$bin/examples/sample_image" "$work/layout" --text-mib 64 --random-mib 64
skopeo copy --quiet --insecure-policy "oci:$work/layout" "docker-archive:$work/app.tar:demo/app:1"

echo "== a local registry (Debian's docker-registry)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
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
  secret: demo
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry=$!

echo "== hoistd"
allow_root=()
[ "$(id -u)" -ne 0 ] || allow_root=(--allow-root)
"$bin/hoistd" --socket "$work/hoist.sock" --state-dir "$work/state" "${allow_root[@]}" \
  >"$work/hoistd.log" 2>&1 &
daemon=$!
sleep 1

target="127.0.0.1:$port/demo/app:1"
echo "== hoist push docker-archive:app.tar $target"
"$bin/hoist" --socket "$work/hoist.sock" push --no-autostart --insecure \
  "docker-archive:$work/app.tar" "$target"

echo "== hoist verify $target"
"$bin/hoist" verify "$target"

echo "== skopeo copies it back (checking every blob's digest)"
skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$target" "oci:$work/pulled"
echo "demo: pushed, verified and pulled back $target"
