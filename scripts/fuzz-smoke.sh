#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, one after the other, at the lowest CPU
# priority. Not in CI: the instrumented build of fuzz/ alone takes about 8 minutes on 2 cores
# from cold. CI replays the kept corpora instead (`cargo nextest run --test fuzz_corpus`).
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   # default 15
#
# New inputs go to a scratch directory, so the kept (minimised) corpus is untouched;
# a crash is left in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
seconds=${1:-15}
cd "$(dirname "$0")/.."
targets=(parse_refs index_tar plan_archive parse_image parse_registry compress_chunk)
declare -A max_len=([index_tar]=16384 [plan_archive]=16384 [parse_image]=8192 [parse_registry]=4096)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  # The scratch directory goes first: libFuzzer writes new inputs to the first corpus
  # directory only, and still reads fuzz/corpus/TARGET (which fuzz.sh adds last).
  echo "== $t: $seconds s"
  nice -n 19 scripts/fuzz.sh "$t" "$seconds" -max_len="${max_len[$t]:-4096}" \
    -print_final_stats=1 "$scratch/$t" 2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==|SUMMARY)|panicked' || true
  if compgen -G "fuzz/artifacts/$t/crash-*" > /dev/null; then
    echo "$t: crash found, see fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
