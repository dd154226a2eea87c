#!/usr/bin/env bash
# Measures the control loop under this machine's accelerator (TCG here, KVM where qemu's KVM
# boots the guest): `cairn up --detach` until the guest reports, and commit -> applied in the
# guest for a live key (hostname) and for a reboot key (memory). Prints medians.
#
#   bash tests/bench/up.sh            # RUNS=5 per key by default
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-5}
cargo build --release --bins --quiet --manifest-path "$root/Cargo.toml"
cairn="$root/target/x86_64-unknown-linux-gnu/release/cairn"
work=$(mktemp -d)
export CAIRN_HOME="$work/home" CAIRN_CACHE="${CAIRN_CACHE:-$root/target/test-cache/debs}" NO_COLOR=1
trap '"$cairn" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$cairn" init >/dev/null
"$cairn" guest build --flavour base >/dev/null 2>&1   # the image build is not part of the boot time
now() { date +%s.%N; }
applied() {  # waits until the guest applied master's head
  local head; head=$(git --git-dir "$CAIRN_HOME/db" rev-parse master)
  until "$cairn" status --json | grep -q "\"applied_commit\": \"$head\""; do sleep 0.02; done
}
t0=$(now); "$cairn" up --detach --flavour base >/dev/null 2>&1; applied; t1=$(now)
boot=$(echo "$t1 - $t0" | bc)
accel=$("$cairn" status --json | sed -n 's/.*"accel": "\(.*\)".*/\1/p')
live=() reboot=()
for i in $(seq "$runs"); do
  t0=$(now); "$cairn" set hostname "bench-$i" >/dev/null; applied; t1=$(now)
  live+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); "$cairn" set memory $((512 + i * 64)) >/dev/null; applied; t1=$(now)
  reboot+=("$(echo "$t1 - $t0" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf 'accel %s\n' "$accel"
printf 'up --detach until the guest reports: %.2f s\n' "$boot"
printf 'commit -> applied, hostname (live):   median %.3f s of %d\n' "$(median "${live[@]}")" "$runs"
printf 'commit -> applied, memory (reboot):   median %.3f s of %d\n' "$(median "${reboot[@]}")" "$runs"
