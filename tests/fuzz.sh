#!/usr/bin/env bash
# Fuzzes the 9P decoder with libFuzzer (cargo fuzz) for SECONDS (default 60). The machine's
# toolchain is stable; cargo fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 allows.
# No single allocation may exceed 16 MiB (frames are at most 4 KiB here). A crash leaves its
# input under ninep-server/fuzz/artifacts/decode/.
# usage: bash tests/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../ninep-server"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time="$seconds" -max_len=4096 -malloc_limit_mb=16 \
  -print_final_stats=1 >"$log" 2>&1 || status=$?
if [ "$status" = 0 ]; then
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || true
else
  tail -n 60 "$log"
  echo "fuzz: the decoder failed (exit $status)" >&2
fi
exit "$status"
