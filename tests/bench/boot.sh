#!/usr/bin/env bash
# `cairn up --detach` until the guest has applied the configuration, image already built
# (docker flavour), RUNS times; with a BASELINE commit, the same for a build of that commit,
# the two taking turns (A B A B ...) so that the machine's drift hits both. Prints medians,
# spreads and the median of the per-pair ratios (new / baseline; below 1 is faster).
#
#   bash tests/bench/boot.sh                 # this tree alone, RUNS=5
#   bash tests/bench/boot.sh b8f5896         # against the build of b8f5896
#   BASELINE_BIN=path bash tests/bench/boot.sh b8f5896   # ... built beforehand
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
baseline=${1:-}
homes=("$work/new")
bins=("$cairn")
if [ -n "$baseline" ]; then
  baseline_build "$baseline"
  bins+=("$baseline_cairn")
  homes+=("$work/old")
fi
trap 'cleanup_homes "${homes[@]}"' EXIT
for i in "${!bins[@]}"; do
  CAIRN_HOME=${homes[$i]} "${bins[$i]}" init >/dev/null
  CAIRN_HOME=${homes[$i]} "${bins[$i]}" guest build --flavour docker >/dev/null 2>&1
done
declare -a times_0 times_1 ratios
for run in $(seq "$runs"); do
  for i in "${!bins[@]}"; do
    t0=$(now)
    CAIRN_HOME=${homes[$i]} "${bins[$i]}" up --detach >/dev/null 2>&1
    t1=$(now)
    CAIRN_HOME=${homes[$i]} "${bins[$i]}" down >/dev/null 2>&1
    eval "times_$i+=(\"$(echo "$t1 - $t0" | bc)\")"
  done
  if [ -n "$baseline" ]; then
    ratios+=("$(echo "scale=3; ${times_0[-1]} / ${times_1[-1]}" | bc)")
  fi
done
printf 'up --detach -> applied, this tree: median %.2f s (%s) of %d\n' "$(median "${times_0[@]}")" "$(spread "${times_0[@]}")" "$runs"
if [ -n "$baseline" ]; then
  printf 'up --detach -> applied, %s:   median %.2f s (%s) of %d\n' "$baseline" "$(median "${times_1[@]}")" "$(spread "${times_1[@]}")" "$runs"
  printf 'ratio this tree / %s: median %s (%s)\n' "$baseline" "$(median "${ratios[@]}")" "$(spread "${ratios[@]}")"
fi
