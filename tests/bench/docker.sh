#!/usr/bin/env bash
# Measures the Docker engine in the guest under this machine's accelerator (TCG here).
#
# 1. The boot, taking turns, same machine, every image already built:
#    - new:       the image as it is built now (the engine on a read-only erofs system disk);
#    - initramfs: the same packages with everything in the initramfs (CAIRN_IMAGE_LAYOUT=
#                 initramfs, the old layout);
#    - baseline:  with a commit as argument, that commit's cairn and its own image (e.g. the
#                 Debian 12 engine in a 160 MB initramfs before the system disk), own CAIRN_HOME.
#    For each: `cairn up --detach` until `docker info` answers through run/docker.sock; qemu's
#    resident memory then, with a 2 GiB guest; `cairn set memory` (a reboot the control plane
#    decides on) until `docker info` answers again. Prints medians, the spread (min..max) and
#    the ratios to `new`, pair by pair (above 1: slower or larger than `new`).
# 2. commit -> dockerd reconfigured on the new image, for a reloaded key (labels: SIGHUP, same
#    dockerd) and for a restart key (log-level: a new dockerd), each checked in `docker info`.
#
#   bash tests/bench/docker.sh [BASELINE_COMMIT]     # RUNS=5 by default; ONLY=reload: part 2
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
export DOCKER_CONFIG="$work/docker-config"
variants=(new initramfs)
declare -A bin home layout
bin[new]=$cairn home[new]=$CAIRN_HOME layout[new]=system-disk
bin[initramfs]=$cairn home[initramfs]=$CAIRN_HOME layout[initramfs]=initramfs
if [ -n "${1:-}" ]; then
  baseline_build "$1"
  variants+=(baseline)
  bin[baseline]=$baseline_cairn home[baseline]="$work/home-baseline" layout[baseline]=initramfs
  CAIRN_HOME=${home[baseline]} "$baseline_cairn" init >/dev/null
fi
trap 'cleanup_homes "${home[@]}"' EXIT
# Runs cairn as variant $1.
as() { local v=$1; shift; CAIRN_HOME=${home[$v]} CAIRN_IMAGE_LAYOUT=${layout[$v]} "${bin[$v]}" "$@"; }
for v in "${variants[@]}"; do   # the image builds are not timed
  as "$v" guest build --flavour docker >/dev/null 2>"$work/build.err" \
    || { echo "bench: the $v image does not build:" >&2; cat "$work/build.err" >&2; exit 1; }
  as "$v" set memory 2048 >/dev/null
done
answers() { # variant: until its engine answers
  local docker="${home[$1]}/guest-docker/docker"
  until [ -n "$(DOCKER_HOST="unix://${home[$1]}/run/docker.sock" "$docker" info --format '{{.Driver}}' 2>/dev/null)" ]; do
    sleep 0.05
  done
}
qemu_rss_mib() {
  local pid; pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "${home[$1]}/run/vm.json" | head -1)
  awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status"
}
declare -A up reboot rss
[ "${ONLY:-}" = reload ] && runs_boot=0 || runs_boot=$runs
for i in $(seq "$runs_boot"); do
  for v in "${variants[@]}"; do
    t0=$(now)
    as "$v" up --detach --flavour docker >/dev/null 2>&1
    answers "$v"
    t1=$(now)
    up[$v]+="$(echo "$t1 - $t0" | bc) "
    rss[$v]+="$(qemu_rss_mib "$v") "
    t0=$(now)
    as "$v" set memory 2304 --wait --timeout 600 >/dev/null 2>&1
    answers "$v"
    t1=$(now)
    reboot[$v]+="$(echo "$t1 - $t0" | bc) "
    as "$v" down >/dev/null 2>&1
    as "$v" set memory 2048 >/dev/null
  done
done
row() { # what, unit, values of the variant, values of new
  local these new; read -ra these <<<"$3"; read -ra new <<<"$4"
  local ratios=() k
  for k in "${!these[@]}"; do ratios+=("$(echo "scale=4; ${these[$k]} / ${new[$k]}" | bc)"); done
  printf '  %-42s %8.2f %s (%s)   x%.2f of new (%s)\n' "$1" "$(median "${these[@]}")" "$2" \
    "$(spread "${these[@]}")" "$(median "${ratios[@]}")" "$(spread "${ratios[@]}")"
}
[ "$runs_boot" -gt 0 ] && printf 'accel %s; %d runs of each, taking turns\n' \
  "$(as new status --json 2>/dev/null | sed -n 's/.*"accel": "\(.*\)".*/\1/p')" "$runs"
for v in "${variants[@]}"; do
  [ "$runs_boot" -gt 0 ] || break
  echo "$v"
  row 'up --detach until docker info answers' s "${up[$v]}" "${up[new]}"
  row 'set memory (reboot) until docker info' s "${reboot[$v]}" "${reboot[new]}"
  row 'qemu RSS, 2 GiB guest, engine answering' MiB "${rss[$v]}" "${rss[new]}"
done

# 2. Reload and restart, on the new image.
as new up --detach --flavour docker >/dev/null 2>&1
answers new
export DOCKER_HOST="unix://$CAIRN_HOME/run/docker.sock"
info() { "$CAIRN_HOME/guest-docker/docker" info --format "$1" 2>/dev/null || true; }
reload=() restart=()
levels=(warn info)
for i in $(seq "$runs"); do
  level=${levels[$((i % 2))]}
  t0=$(now)
  "$cairn" set daemon "{\"log-level\": \"$level\", \"labels\": [\"bench=$i\"]}" --wait --timeout 600 >/dev/null
  until [ "$(info '{{json .Labels}}')" = "[\"bench=$i\"]" ]; do sleep 0.05; done
  t1=$(now)
  restart+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now)
  "$cairn" set daemon "{\"log-level\": \"$level\", \"labels\": [\"bench=$i\", \"again=$i\"]}" --wait --timeout 600 >/dev/null
  until info '{{json .Labels}}' | grep -q "again=$i"; do sleep 0.05; done
  t1=$(now)
  reload+=("$(echo "$t1 - $t0" | bc)")
done
printf 'commit -> dockerd reloaded (labels, SIGHUP):   median %.3f s (%s) of %d\n' "$(median "${reload[@]}")" "$(spread "${reload[@]}")" "$runs"
printf 'commit -> dockerd restarted (log-level):       median %.3f s (%s) of %d\n' "$(median "${restart[@]}")" "$(spread "${restart[@]}")" "$runs"
