#!/usr/bin/env bash
# What a running cairn costs while nothing happens, and while a script changes a live key every
# second: CPU time of the control plane (`cairn up`) and of the VMM (qemu) over 60 s each, as a
# share of one core. Docker flavour, default configuration, image built first.
#
#   bash tests/bench/idle.sh           # SECONDS_EACH=60 by default
source "$(dirname "$0")/lib.sh"
secs=${SECONDS_EACH:-60}
"$cairn" guest build --flavour docker >/dev/null 2>&1
"$cairn" up --detach >/dev/null 2>&1
up=$(status_field pid) vm=$(status_field vm_pid)
sleep 10   # dockerd and the agent settle
share() { echo "scale=2; 100 * ($2 - $1) / $secs" | bc; }
u0=$(cpu_seconds "$up") v0=$(cpu_seconds "$vm")
sleep "$secs"
u1=$(cpu_seconds "$up") v1=$(cpu_seconds "$vm")
for i in $(seq "$secs"); do
  "$cairn" set hostname "idle-$i" >/dev/null
  sleep 1
done
u2=$(cpu_seconds "$up") v2=$(cpu_seconds "$vm")
printf 'accel %s\n' "$("$cairn" status --json | sed -n 's/.*"accel": "\(.*\)".*/\1/p')"
printf 'idle %ss:                control plane %5s%% of a core, qemu %5s%%\n' "$secs" "$(share "$u0" "$u1")" "$(share "$v0" "$v1")"
printf 'one live set a second:   control plane %5s%% of a core, qemu %5s%%\n' "$(share "$u1" "$u2")" "$(share "$v1" "$v2")"
