#!/usr/bin/env bash
# Measures the control loop under this machine's accelerator (TCG here, KVM where qemu's KVM
# boots the guest): `cairn up --detach` until the guest reports, and commit -> applied in the
# guest for a live key (hostname) and for a reboot key (memory). Prints medians.
#
#   bash tests/bench/up.sh            # RUNS=5 per key by default
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
"$cairn" guest build --flavour base >/dev/null 2>&1   # the image build is not part of the boot time
t0=$(now); "$cairn" up --detach --flavour base >/dev/null 2>&1; applied; t1=$(now)
boot=$(echo "$t1 - $t0" | bc)
accel=$("$cairn" status --json | sed -n 's/.*"accel": "\(.*\)".*/\1/p')
live=() reboot=()
for i in $(seq "$runs"); do
  t0=$(now); "$cairn" set hostname "bench-$i" >/dev/null; applied; t1=$(now)
  live+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); "$cairn" set memory $((1024 + i * 64)) >/dev/null; applied; t1=$(now)
  reboot+=("$(echo "$t1 - $t0" | bc)")
done
printf 'accel %s\n' "$accel"
printf 'up --detach until the guest reports: %.2f s\n' "$boot"
printf 'commit -> applied, hostname (live):   median %.3f s of %d\n' "$(median "${live[@]}")" "$runs"
printf 'commit -> applied, memory (reboot):   median %.3f s of %d\n' "$(median "${reboot[@]}")" "$runs"
