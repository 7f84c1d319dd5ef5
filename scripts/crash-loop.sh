#!/usr/bin/env bash
# The crash loop: kill -9 of hoistd at seeded random moments of real pushes (through the ECR
# emulation), a restart after each kill, then checks: the tag never exists early, every push
# ends with the manifest of an uninterrupted push, the bytes sent again stay within one part
# per upload connection per kill, and SQLite's PRAGMA integrity_check passes.
# The loop itself is tests/crash_loop.rs (CI runs it with the defaults: 20 kills, about a
# minute); this script runs it with other seeds and counts.
#
# usage: scripts/crash-loop.sh [--seed N] [--kills N] [--long]
#   --seed N   seed of the kill moments (default 1; the same seed gives the same moments)
#   --kills N  kills before the last push may finish (default 20)
#   --long     many more kills (300, about 15 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
seed=1
kills=20
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --kills) kills="$2"; shift 2 ;;
    --long) kills=300; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "crash-loop: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
scripts/install-deps.sh
echo "== crash loop: seed $seed, $kills kills" >&2
HOIST_CRASH_SEED="$seed" HOIST_CRASH_KILLS="$kills" \
  cargo test --locked --test suite crash_loop:: -- --nocapture 2>&1 | grep -E '^(FIGURE|test |thread )|panicked|result:' 
exit "${PIPESTATUS[0]}"
