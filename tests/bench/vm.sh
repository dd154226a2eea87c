#!/usr/bin/env bash
# Working in the VM (issue 21): a command's round trip through `cairn shell` against `docker
# exec` into a running container, in turn, in the same run; the guest clock's offset from the
# host's after `cairn vm pause` / `resume`; and the offset over 10 minutes of running (with the
# control plane's slews every minute, and what each minute's check found before slewing).
#   bash tests/bench/vm.sh [ROUNDS]      (default 20 round trips; PAUSES=5, PAUSE=30 s, DRIFT=600 s)
source "$(dirname "$0")/lib.sh"
calc() { awk "BEGIN {printf \"%.6f\", $*}"; }
rounds=${1:-20}
pauses=${PAUSES:-5}
pause=${PAUSE:-30}
drift=${DRIFT:-600}

"$cairn" up --detach >/dev/null 2>&1
docker=$("$cairn" status --json | sed -n 's/.*"cli": "\(.*\)".*/\1/p' | head -1)
export DOCKER_HOST="unix://$CAIRN_HOME/run/docker.sock" DOCKER_CONFIG="$work/docker-config"
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh true sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/bb.tar" .
"$docker" import "$work/bb.tar" bench/bb:1 >/dev/null
container=$("$docker" run -d bench/bb:1 sleep 1000000)

# The guest's clock minus the host's, in ms, and the round trip it was read over.
offset() {
  local a b out
  a=$(now); out=$("$cairn" shell -- adjtimex); b=$(now)
  awk -v a="$a" -v b="$b" '/tv_sec/{s=$2} /tv_usec/{u=$2} END {printf "%.1f %.1f\n", (s + u/1e6 - (a+b)/2)*1000, (b-a)*1000}' <<<"$out"
}

echo "== round trip: cairn shell -- true vs docker exec $container true ($rounds pairs, in turn)"
shell=(); exec_=(); ratios=()
for _ in $(seq "$rounds"); do
  t0=$(now); "$cairn" shell -- true; t1=$(now)
  "$docker" exec "$container" true; t2=$(now)
  s=$(calc "$t1 - $t0"); d=$(calc "$t2 - $t1")
  shell+=("$s"); exec_+=("$d"); ratios+=("$(calc "$s / $d")")
done
printf 'cairn shell -- true   %.3f s (%s)\n' "$(median "${shell[@]}")" "$(spread "${shell[@]}")"
printf 'docker exec C true    %.3f s (%s)\n' "$(median "${exec_[@]}")" "$(spread "${exec_[@]}")"
printf 'ratio, pair by pair   %.2f (%s)\n' "$(median "${ratios[@]}")" "$(spread "${ratios[@]}")"

echo "== the guest's clock after a pause of $pause s ($pauses pauses)"
first=(); later=()
for _ in $(seq "$pauses"); do
  "$cairn" vm pause >/dev/null 2>&1
  sleep "$pause"
  "$cairn" vm resume >/dev/null 2>&1
  read -r o0 t0 < <(offset)
  sleep 5
  read -r o5 t5 < <(offset)
  first+=("$o0"); later+=("$o5")
  echo "  right after resume: ${o0} ms (round trip ${t0} ms); 5 s later: ${o5} ms (round trip ${t5} ms)"
done
printf 'offset right after resume  %.1f ms (%s)\n' "$(median "${first[@]}")" "$(spread "${first[@]}")"
printf 'offset 5 s after resume    %.1f ms (%s)\n' "$(median "${later[@]}")" "$(spread "${later[@]}")"

echo "== the guest's clock over $drift s of running (a sample every 30 s)"
samples=(); checks=(); seen=""
end=$(( $(date +%s) + drift ))
while [ "$(date +%s)" -lt "$end" ]; do
  read -r o _ < <(offset)
  samples+=("${o#-}")
  at=$("$cairn" status --json | tr -d '\n ' | sed -n 's/.*"clock":{"offset_us":\(-\{0,1\}[0-9]*\),.*"reason":"periodic","at":\([0-9]*\).*/\1 \2/p')
  if [ -n "$at" ] && [ "${at#* }" != "$seen" ]; then
    seen=${at#* }; us=${at% *}; checks+=("$(calc "${us#-} / 1000")")
  fi
  sleep 30
done
printf '|offset| over %s s        median %.1f ms, max %.1f ms (%d samples)\n' "$drift" \
  "$(median "${samples[@]}")" "$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)" "${#samples[@]}"
if [ "${#checks[@]}" -gt 0 ]; then
  printf 'drift found by each minute'"'"'s check  median %.2f ms (%s), %d checks\n' \
    "$(median "${checks[@]}")" "$(spread "${checks[@]}")" "${#checks[@]}"
fi
