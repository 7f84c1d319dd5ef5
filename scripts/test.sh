#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, then format check, clippy with
# warnings as errors, and every test, over the whole workspace (hoist and testkit/), all with
# --locked.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# A clean checkout (CI) builds everything once: incremental compilation only writes caches
# nobody reads, which costs time on 2 cores. A developer's repeated runs keep it.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# The current Docker engine's chroot (docs/ENGINE.md), cached outside the repository: built
# only when absent, mostly download and unpacking, so in the background while cargo builds.
ENGINE_LOG=$(mktemp "${TMPDIR:-/tmp}/hoist-engine-build.XXXXXX")
scripts/engine-chroot.sh build >"$ENGINE_LOG" 2>&1 &
ENGINE_PID=$!
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== tests"
# The test binaries first (the chroot's build goes on meanwhile), then the chroot.
cargo nextest run --locked --workspace --lib --tests --no-run
if ! wait "$ENGINE_PID"; then
  cat "$ENGINE_LOG" >&2
  echo "== the engine chroot could not be built (above): its tests fail under CI" >&2
fi
rm -f "$ENGINE_LOG"
# --lib --tests: the examples are not needed by any test (clippy above has compiled them), and
# linking them is build time CI does not have to spend.
cargo nextest run --locked --workspace --lib --tests --no-fail-fast
