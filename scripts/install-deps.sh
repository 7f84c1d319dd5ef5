#!/usr/bin/env bash
# Installs what hoist's demo and tests need on a fresh Debian machine: the CNCF distribution
# registry, skopeo (the real client the tests check results with), htpasswd for the Basic-auth
# registry, openssl for the token-auth registry's signing certificate and the TLS registry's CA,
# squid as the HTTP proxy of the network tests, reference compressors for the benchmarks, umoci
# (unpacks images for the split-layer file-system comparison), containerd (applies them each
# layer into its own directory, as nodes do), systemd tools for unit checks (and
# a user manager booted in a namespace), groff to render the man pages, and python3 to parse the
# launchd agent's plist; debootstrap for the current Docker engine's chroot.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have docker-registry || need+=(docker-registry)
have skopeo || need+=(skopeo)
have htpasswd || need+=(apache2-utils)
have openssl || need+=(openssl)
have pigz || need+=(pigz)
have zstd || need+=(zstd)
have umoci || need+=(umoci)
have systemd-analyze || need+=(systemd)
have systemd-socket-activate || need+=(systemd)
have setpriv || need+=(util-linux)
have unshare || need+=(util-linux)
have groff || need+=(groff-base)
have pgrep || need+=(procps)
have python3 || need+=(python3)
have /usr/bin/time || need+=(time)
# The proxy the network tests push through (started by the tests with their own config).
have squid || [ -x /usr/sbin/squid ] || need+=(squid)
# The docker-daemon: source's tests run a private dockerd and load images with docker.
have dockerd || need+=(docker.io)
# The split tests apply images with containerd's overlayfs snapshotter (a private containerd).
have containerd || need+=(containerd)
have ctr || need+=(containerd)
have docker || need+=(docker.io)
# The current engine's tests (Docker 28, both image stores) run it in a Debian sid chroot that
# scripts/engine-chroot.sh builds with debootstrap (flock: its shared start).
have debootstrap || need+=(debootstrap)
have flock || need+=(util-linux)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have cargo; then
  echo "install-deps: cargo not found: install a Rust toolchain (1.95 or newer), e.g. Debian's rustup package" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: cargo-nextest not found: installing it from crates.io" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
