#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, one after the other, at the lowest CPU
# priority. Not in CI: the instrumented build of fuzz/ alone takes about 8 minutes on 2 cores
# from cold. CI replays the kept inputs instead (`cargo nextest run --test suite fuzz_corpus::`).
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   # default 15
#
# Unlike scripts/fuzz.sh it changes nothing in git: new inputs go to a scratch directory
# (libFuzzer writes to the first corpus directory only; fuzz/corpus and fuzz/seeds are read).
# A crash is left in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
seconds=${1:-15}
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=${CARGO_TARGET_DIR:-$PWD/fuzz/target}/$triple/release
targets=(parse_refs compress_chunk index_tar plan_archive parse_image parse_registry)
declare -A max_len=([index_tar]=16384 [plan_archive]=16384 [parse_image]=8192 [parse_registry]=4096)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  FUZZ_BUILD_ONLY=1 nice -n 19 scripts/fuzz.sh "$t" 0
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t" "fuzz/seeds/$t"
  echo "== $t: $seconds s"
  status=0
  nice -n 19 "$bin_dir/$t" -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
    "$scratch/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" > "$scratch/$t.log" 2>&1 || status=$?
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' "$scratch/$t.log" || true
  if [[ $status -ne 0 ]]; then
    grep -E 'panicked|==[0-9]+==|SUMMARY' "$scratch/$t.log" >&2 || true
    echo "$t: failed (exit $status), see fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
