#!/usr/bin/env bash
# Measures the Docker engine in the guest under this machine's accelerator (TCG here):
# `cairn up --detach` (docker flavour, image already built) until `docker info` answers through
# run/docker.sock, and commit -> dockerd reconfigured, for a reloaded key (labels: SIGHUP, same
# dockerd) and for a restart key (log-level: a new dockerd). Each change is checked in
# `docker info` before its time counts. Prints medians.
#
#   bash tests/bench/docker.sh        # RUNS=5 per key by default
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
"$cairn" guest build --flavour docker >/dev/null 2>&1   # the image build is not timed
docker="$CAIRN_HOME/guest-docker/docker"
export DOCKER_HOST="unix://$CAIRN_HOME/run/docker.sock" DOCKER_CONFIG="$work/docker-config"
info() { "$docker" info --format "$1" 2>/dev/null || true; }
t0=$(now)
"$cairn" up --detach --flavour docker >/dev/null 2>&1
until [ -n "$(info "{{.Driver}}")" ]; do sleep 0.05; done
t1=$(now)
up=$(echo "$t1 - $t0" | bc)
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
printf 'accel %s\n' "$("$cairn" status --json | sed -n 's/.*"accel": "\(.*\)".*/\1/p')"
printf 'up --detach until docker info answers:         %.2f s\n' "$up"
printf 'commit -> dockerd reloaded (labels, SIGHUP):   median %.3f s of %d\n' "$(median "${reload[@]}")" "$runs"
printf 'commit -> dockerd restarted (log-level):       median %.3f s of %d\n' "$(median "${restart[@]}")" "$runs"
