#!/usr/bin/env bash
# A current Docker engine (Debian sid's docker.io, with containerd and buildx) in a debootstrap
# chroot, for the docker-daemon: tests and benchmarks; the facts it relies on: docs/ENGINE.md.
#
#   scripts/engine-chroot.sh build              # into $HOIST_ENGINE_CACHE/sid, once
#   scripts/engine-chroot.sh start STORE DIR    # STORE: classic | containerd; socket DIR/run/docker.sock
#   scripts/engine-chroot.sh docker DIR ARGS... # the chroot's docker CLI (buildx) against that engine
#   scripts/engine-chroot.sh stop DIR
#   scripts/engine-chroot.sh ensure STORE DIR IDLE_S  # start unless running, build the test
#                                               # images, stop after IDLE_S without `touch DIR/lease`
#
# The cache lives outside the repository (default /var/cache/hoist/engines): a machine that
# has it never builds it again. `build` is idempotent: a marker file written last says the
# chroot is complete; an incomplete one is built again from scratch.
# `start` gives each engine a root of its own (a bind mount of the chroot at DIR/root, so the
# chroot's root is a mount point, which dockerd needs) and keeps everything it writes in
# DIR/run, mounted at the same path inside the root, so the socket's path is the same for
# clients outside. Run as root.
set -euo pipefail

CACHE=${HOIST_ENGINE_CACHE:-/var/cache/hoist/engines}
CH=$CACHE/sid
MARKER=$CH/.hoist-engine-complete
MIRROR=${HOIST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="docker.io docker-buildx docker-cli containerd ca-certificates"
START_WAIT_TENTHS=600

die() { echo "engine-chroot: $*" >&2; exit 1; }

build() {
  [ -f "$MARKER" ] && { echo "engine-chroot: $CH is complete"; return 0; }
  command -v debootstrap >/dev/null || die "debootstrap is not installed: run scripts/install-deps.sh"
  # Never remove a tree something is mounted in (an engine's /dev or /sys).
  if findmnt -rn -o TARGET | grep -qF "$CH"; then
    die "something is mounted under $CH: stop its engines (scripts/engine-chroot.sh stop DIR) first"
  fi
  rm -rf "$CH" "$CH.partial"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase sid "$CH.partial" "$MIRROR"
  # sid's Release file is often past its Valid-Until on machines with a fixed clock.
  chroot "$CH.partial" apt-get -o Acquire::Check-Valid-Until=false update
  chroot "$CH.partial" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends $PACKAGES
  chroot "$CH.partial" apt-get clean
  mv "$CH.partial" "$CH"
  date -u +%FT%TZ > "$MARKER"
  echo "engine-chroot: built $CH"
}

# mount_root DIR: DIR/root is the chroot, with proc, sys, dev and DIR/run inside.
mount_root() {
  local dir=$1 root=$1/root
  mkdir -p "$root" "$dir/run"
  mountpoint -q "$root" && return 0
  mount --bind "$CH" "$root"
  # Private: nothing mounted under it may propagate back to the host's tree.
  mount --make-private "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev"
  mkdir -p "$root$dir/run"
  mount --bind "$dir/run" "$root$dir/run"
}

start() {
  local store=$1 dir=$2
  [ -f "$MARKER" ] || die "no engine chroot at $CH: run scripts/engine-chroot.sh build"
  case "$store" in classic|containerd) ;; *) die "unknown store $store: classic or containerd" ;; esac
  dir=$(realpath -m "$dir")
  mount_root "$dir"
  local run=$dir/run root=$dir/root
  mkdir -p "$run/data" "$run/exec"
  local config=$run/daemon.json extra=()
  if [ "$store" = containerd ]; then
    start_containerd "$dir"
    extra=(--containerd "$run/containerd.sock")
    echo '{"features": {"containerd-snapshotter": true}, "storage-driver": "native"}' > "$config"
  else
    echo '{"storage-driver": "vfs"}' > "$config"
  fi
  setsid chroot "$root" dockerd --config-file "$config" --iptables=false --ip6tables=false \
    --bridge=none --host "unix://$run/docker.sock" --data-root "$run/data" \
    --exec-root "$run/exec" --pidfile "$run/dockerd.pid" "${extra[@]}" \
    </dev/null >"$run/dockerd.log" 2>&1 &
  echo $! > "$run/dockerd.chroot-pid"
  for _ in $(seq 1 $START_WAIT_TENTHS); do
    [ -S "$run/docker.sock" ] && chroot "$root" docker -H "unix://$run/docker.sock" version \
      >/dev/null 2>&1 && { echo "unix://$run/docker.sock"; return 0; }
    sleep 0.1
  done
  tail -20 "$run/dockerd.log" >&2
  die "dockerd did not answer on $run/docker.sock"
}

start_containerd() {
  local run=$1/run root=$1/root
  cat > "$run/containerd.toml" <<TOML
version = 3
root = "$run/containerd-root"
state = "$run/containerd-state"
disabled_plugins = ["io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
TOML
  setsid chroot "$root" containerd --config "$run/containerd.toml" \
    </dev/null >"$run/containerd.log" 2>&1 &
  echo $! > "$run/containerd.pid"
  for _ in $(seq 1 $START_WAIT_TENTHS); do
    [ -S "$run/containerd.sock" ] && return 0
    sleep 0.1
  done
  tail -20 "$run/containerd.log" >&2
  die "containerd did not start"
}

# stop_pid FILE DIR: SIGTERM to the PID in FILE, SIGKILL after 20 s; only a process whose
# command line names DIR (a PID file left by an engine long gone may name another process).
stop_pid() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  rm -f "$1"
  { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$2" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  local dir
  dir=$(realpath -m "$1")
  stop_pid "$dir/run/dockerd.pid" "$dir"
  stop_pid "$dir/run/dockerd.chroot-pid" "$dir"
  stop_pid "$dir/run/containerd.pid" "$dir"
  # Whatever the engine mounted under its data root, then the root and all inside it.
  { findmnt -rn -o TARGET | grep -F "$dir/" || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  if mountpoint -q "$dir/root"; then umount -R "$dir/root" || umount -l "$dir/root"; fi
  rmdir "$CH$dir/run" "$CH$dir" 2>/dev/null || true
}

# The tests' images, built once per engine with buildx: an imported base (a shell, rm and
# libc from the chroot), COPY layers and a RUN that removes a file (a whiteout): app:1; on the
# containerd store also multi:1 (linux/amd64 and linux/arm64, attestations with
# --provenance=mode=max; this machine cannot run arm64 code, so the arm64 base is a root
# without executables imported with that label, and there is no RUN), zst:1 (app:1's
# layers as zstd) and armbins:1 (the amd64 base imported as linux/arm64: mislabelled).
images() {
  local store=$1 dir
  dir=$(realpath -m "$2")
  local ctx=$dir/run/ctx want="app:1"
  [ "$store" = containerd ] && want="app:1 multi:1 zst:1 armbins:1"
  # shellcheck disable=SC2086
  docker_cli "$dir" image inspect $want >/dev/null 2>&1 && return 0
  rm -rf "$ctx" && mkdir -p "$ctx"
  base_rootfs "$ctx/rootfs"
  tar -C "$ctx/rootfs" -cf "$ctx/base.tar" .
  docker_cli "$dir" import "$ctx/base.tar" base-amd64:1 >/dev/null
  head -c 6000000 /dev/urandom > "$ctx/a"
  head -c 4000000 /dev/urandom > "$ctx/b"
  echo amd64 > "$ctx/amd64.txt"
  echo arm64 > "$ctx/arm64.txt"
  printf '%s\n' 'FROM base-amd64:1' 'COPY a /data/a' 'COPY b /data/b' \
    'RUN --network=none rm /data/a' > "$ctx/Dockerfile"
  printf '%s\n' 'ARG TARGETARCH' 'FROM base-${TARGETARCH}:1' 'ARG TARGETARCH' \
    'COPY ${TARGETARCH}.txt /arch' 'COPY b /data/b' > "$ctx/Dockerfile.multi"
  docker_cli "$dir" buildx build -q -t app:1 --load "$ctx" >/dev/null
  [ "$store" = containerd ] || return 0
  mkdir -p "$ctx/armroot/etc"
  echo arm64 > "$ctx/armroot/etc/hostname"
  tar -C "$ctx/armroot" -cf "$ctx/base-arm64.tar" .
  docker_cli "$dir" import --platform linux/arm64 "$ctx/base-arm64.tar" base-arm64:1 >/dev/null
  docker_cli "$dir" import --platform linux/arm64 "$ctx/base.tar" armbins:1 >/dev/null
  docker_cli "$dir" buildx build -q --platform linux/amd64,linux/arm64 --provenance=mode=max \
    -f "$ctx/Dockerfile.multi" -t multi:1 --load "$ctx" >/dev/null
  docker_cli "$dir" buildx build -q \
    --output type=image,name=zst:1,compression=zstd,force-compression=true "$ctx" >/dev/null
}

# base_rootfs DIR: a merged-/usr root with dash as /bin/sh, rm, and the libc they need.
base_rootfs() {
  local r=$1 lib=usr/lib/x86_64-linux-gnu
  mkdir -p "$r/usr/bin" "$r/$lib" "$r/usr/lib64" "$r/tmp"
  cp "$CH/usr/bin/dash" "$r/usr/bin/sh"
  cp "$CH/usr/bin/rm" "$r/usr/bin/rm"
  cp "$CH/$lib/libc.so.6" "$CH/$lib/ld-linux-x86-64.so.2" "$r/$lib/"
  ln -s "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$r/usr/lib64/"
  ln -s usr/bin "$r/bin"
  ln -s usr/lib "$r/lib"
  ln -s usr/lib64 "$r/lib64"
}

# ensure STORE DIR IDLE_S: one engine shared by every test process (a lock serialises the
# start), stopped by a watcher once DIR/lease is IDLE_S old.
ensure() {
  local store=$1 dir idle=$3
  dir=$(realpath -m "$2")
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  touch "$dir/lease"
  if ! docker_cli "$dir" version >/dev/null 2>&1; then
    stop "$dir"
    start "$store" "$dir" >/dev/null 9>&-
    setsid "$0" watch "$dir" "$idle" </dev/null >/dev/null 2>&1 9>&- &
  fi
  images "$store" "$dir"
  echo "unix://$dir/run/docker.sock"
}

watch() {
  local dir=$1 idle=$2
  while sleep 5; do
    local age=$(( $(date +%s) - $(stat -c %Y "$dir/lease" 2>/dev/null || echo 0) ))
    [ "$age" -lt "$idle" ] && continue
    exec 9>"$dir/lock"
    flock 9
    age=$(( $(date +%s) - $(stat -c %Y "$dir/lease" 2>/dev/null || echo 0) ))
    [ "$age" -lt "$idle" ] && { flock -u 9; continue; }
    stop "$dir"
    return 0
  done
}

docker_cli() {
  local dir
  dir=$(realpath -m "$1")
  shift
  chroot "$dir/root" docker -H "unix://$dir/run/docker.sock" "$@"
}

case "${1:-}" in
  build) build ;;
  start) [ $# -eq 3 ] || die "usage: start classic|containerd DIR"; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: stop DIR"; stop "$2" ;;
  ensure) [ $# -eq 4 ] || die "usage: ensure classic|containerd DIR IDLE_S"; ensure "$2" "$3" "$4" ;;
  watch) watch "$2" "$3" ;;
  docker) [ $# -ge 2 ] || die "usage: docker DIR ARGS..."; d=$2; shift 2; docker_cli "$d" "$@" ;;
  *) die "usage: build | start classic|containerd DIR | docker DIR ARGS... | stop DIR" ;;
esac
