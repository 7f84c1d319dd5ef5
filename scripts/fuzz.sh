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
# fuzz/corpus/TARGET plus the hand-written fuzz/seeds/TARGET (new inputs are added, then the corpus is minimised with -merge=1) with
# crashes written to fuzz/artifacts/TARGET/ (the script then exits non-zero).
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
# FUZZ_BUILD_ONLY=1: stop after the build (scripts/fuzz-smoke.sh runs the binary itself).
[[ ${FUZZ_BUILD_ONLY:-} == 1 ]] && exit 0
bin=$CARGO_TARGET_DIR/$triple/release/$target
mkdir -p "corpus/$target" "artifacts/$target"
status=0
mkdir -p "seeds/$target"
# corpus/TARGET is written to; seeds/TARGET (hand-written, named inputs) is only read.
"$bin" -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" "$@" \
  "corpus/$target" "seeds/$target" || status=$?
if [[ $status -ne 0 ]]; then
  echo "fuzz: $target failed (exit $status); inputs are in fuzz/artifacts/$target/" >&2
  exit "$status"
fi
# Keep the committed corpus small: keep only inputs that add coverage beyond the seeds.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "seeds/$target"/* "$tmp"/ 2>/dev/null || true
"$bin" -merge=1 "$tmp" "corpus/$target" 2>/dev/null
for seed in "seeds/$target"/*; do rm -f "$tmp/$(basename "$seed")"; done
rm -f "corpus/$target"/*
cp "$tmp"/* "corpus/$target"/ 2>/dev/null || true
echo "fuzz: $target ran ${seconds}s, no failure; corpus minimised to $(ls "corpus/$target" | wc -l) inputs"
