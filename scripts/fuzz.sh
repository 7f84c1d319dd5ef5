#!/usr/bin/env bash
# Coverage-guided fuzzing on stable Rust: libFuzzer (libfuzzer-sys) with SanitizerCoverage
# instrumentation enabled by plain `-C` flags, no sanitizer (sanitizers need nightly `-Z`).
#
#   scripts/fuzz.sh TARGET SECONDS [extra libFuzzer args...]
#   scripts/fuzz.sh parse_refs 60
#
# What it does is what `cargo fuzz run --sanitizer none` does (cargo-fuzz also works on stable
# in that mode, if installed): build fuzz/ for the host triple (so RUSTFLAGS reach only the
# fuzzed code, not build scripts or proc macros), then run the binary on the kept corpus
# fuzz/corpus/TARGET (new inputs are added to it) with crashes written to fuzz/artifacts/TARGET/.
# Reproduce a crash: the same binary with the crash file as its only argument.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 TARGET SECONDS [libFuzzer args...]" >&2; exit 2; }
target=$1 seconds=$2
shift 2
cd "$(dirname "$0")/../fuzz"
triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export RUSTFLAGS="--cfg fuzzing \
 -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks ${RUSTFLAGS:-}"
cargo build --release --locked --target "$triple" --bin "$target"
mkdir -p "corpus/$target" "artifacts/$target"
exec "$CARGO_TARGET_DIR/$triple/release/$target" \
  -max_total_time="$seconds" \
  -artifact_prefix="artifacts/$target/" \
  "$@" "corpus/$target"
