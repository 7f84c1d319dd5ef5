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
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== tests"
# --lib --tests: the examples are not needed by any test (clippy above has compiled them), and
# linking them is build time CI does not have to spend.
cargo nextest run --locked --workspace --lib --tests --no-fail-fast
