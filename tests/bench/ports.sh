#!/usr/bin/env bash
# Containers on the network, side by side in one run, one guest, under this machine's
# accelerator (TCG here): cairn (its NAT, network=nat, and its port proxy over the channel) against
# qemu's user network (network=hostnet: slirp, with hostfwd from the port-forwarding key to the
# port dockerd publishes in the guest, reached by dockerd's own DNAT rule). The guest boots in
# turn on each, RUNS times; a container with iperf3 (Debian's, with its libraries, from this
# host) restarts with every boot.
#   ingress   host -> container: iperf3 to the published port (cairn) or the hostfwd (slirp)
#   reverse   the same with -R (container -> host)
#   egress    container -> a host loopback iperf3 server at the gateway (10.0.2.2)
#   cps       connections per second from a container to a host loopback httpd (busybox nc)
# and, on cairn, the time from `docker run -d -p` returning to the host port accepting (median
# of 20; the port is published before dockerd answers, so the first connect is accepted).
# Prints medians, the spread (min..max) and the ratios cairn / slirp.
#
#   bash tests/bench/ports.sh          # RUNS=3 boots each, SECS=5 per iperf3, CONNS=100
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-3} secs=${SECS:-5} conns=${CONNS:-100}
command -v iperf3 >/dev/null || { echo "ports.sh: needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
export DOCKER_CONFIG="$work/docker-config"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; "$cairn" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

iperf_port=$((20000 + RANDOM % 5000)) http_port=$((25000 + RANDOM % 5000))
published=$((30000 + RANDOM % 5000)) hostfwd=$((35000 + RANDOM % 5000)) latency=$((40000 + RANDOM % 5000))
iperf3 -s -B 127.0.0.1 -p "$iperf_port" </dev/null >/dev/null 2>&1 & pids+=($!)
mkdir -p "$work/www" && echo ok >"$work/www/index.html"
busybox httpd -f -p "127.0.0.1:$http_port" -h "$work/www" </dev/null >/dev/null 2>&1 & pids+=($!)

# The container's image: busybox and iperf3 with its libraries.
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/usr/bin" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"  # iperf3 keeps a temporary file per stream
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh nc cut printf; do ln -s busybox "$rootfs/bin/$applet"; done
cp "$(command -v iperf3)" "$rootfs/usr/bin/iperf3"
for lib in $(ldd "$(command -v iperf3)" | grep -o '/[^ ]*'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
tar -C "$rootfs" -cf "$work/image.tar" .

"$cairn" set memory 2048 "port-forwarding=127.0.0.1:$hostfwd:$published" >/dev/null
"$cairn" up --detach --flavour docker >/dev/null 2>"$work/up.err" \
  || { echo "ports.sh: cairn up failed:" >&2; cat "$work/up.err" >&2; exit 1; }
docker="$CAIRN_HOME/guest-docker/docker"
d() { DOCKER_HOST="unix://$CAIRN_HOME/run/docker.sock" "$docker" "$@"; }
d import "$work/image.tar" bench/iperf3:1 >/dev/null
d run -d --restart always --name server -p "$published:5201" bench/iperf3:1 iperf3 -s >/dev/null

# iperf3 from the host to 127.0.0.1:$1 ($2: -R or nothing), retried while the server starts.
mbits() {
  local out i
  for i in $(seq 60); do
    if out=$(iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -f m $2 2>>"$work/iperf3.err"); then
      awk '/receiver/ { for (i = 1; i <= NF; i++) if ($(i) == "Mbits/sec") print $(i-1) }' <<<"$out"
      return
    fi
    sleep 1
  done
  echo 0
}
egress() {
  d run --rm bench/iperf3:1 iperf3 -c 10.0.2.2 -p "$iperf_port" -t "$secs" -f m 2>/dev/null \
    | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($(i) == "Mbits/sec") print $(i-1) }'
}
cps() {
  d run --rm bench/iperf3:1 sh -c "t0=\$(cut -d' ' -f1 /proc/uptime); i=0
    while [ \$i -lt $conns ]; do printf 'GET / HTTP/1.0\r\n\r\n' | nc 10.0.2.2 $http_port >/dev/null && i=\$((i+1)); done
    echo \$t0 \$(cut -d' ' -f1 /proc/uptime)" | awk -v n="$conns" '{ printf "%.1f\n", n / ($2 - $1) }'
}
# Seconds from `docker run -d -p` returning to the host's port accepting, and the first
# connect's outcome (1: accepted at once).
publish_latency() {
  local t0 t1 first=0
  d rm -f lat >/dev/null 2>&1 || true
  d run -d --name lat -p "127.0.0.1:$latency:5201" bench/iperf3:1 iperf3 -s >/dev/null
  t0=$(now)
  if (exec 3<>"/dev/tcp/127.0.0.1/$latency") 2>/dev/null; then first=1; fi
  until (exec 3<>"/dev/tcp/127.0.0.1/$latency") 2>/dev/null; do sleep 0.005; done
  t1=$(now)
  d rm -f lat >/dev/null
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }') $first"
}

declare -A results
measure() {  # $1: cairn or slirp
  local port=$published
  [ "$1" = slirp ] && port=$hostfwd
  results[$1_ingress]+="$(mbits "$port" "") "
  results[$1_reverse]+="$(mbits "$port" -R) "
  results[$1_egress]+="$(egress) "
  results[$1_cps]+="$(cps) "
}
for i in $(seq "$runs"); do
  "$cairn" set network nat --wait --timeout 600 >/dev/null 2>&1 || true
  measure cairn
  "$cairn" set network hostnet --wait --timeout 600 >/dev/null 2>&1
  measure slirp
done
"$cairn" set network nat --wait --timeout 600 >/dev/null 2>&1
lat=() accepted=0
for i in $(seq 20); do
  read -r seconds first < <(publish_latency)
  lat+=("$seconds") accepted=$((accepted + first))
done

med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v s="$1" -v c="$2" 'BEGIN { if (s > 0) printf "%.2fx", c / s; else print "-" }'; }
printf '%-40s %9s %14s %9s %14s %7s\n' "median of $runs boots each (TCG)" slirp spread cairn spread ratio
for what in ingress reverse egress cps; do
  s=$(med "${results[slirp_$what]}") c=$(med "${results[cairn_$what]}")
  case $what in
    ingress) label="host -> container iperf3 (Mbit/s)" ;;
    reverse) label="container -> host iperf3 -R (Mbit/s)" ;;
    egress) label="container -> host server (Mbit/s)" ;;
    cps) label="connections/s, container -> host" ;;
  esac
  printf '%-40s %9s %14s %9s %14s %7s\n' "$label" "$s" "$(spread ${results[slirp_$what]})" \
    "$c" "$(spread ${results[cairn_$what]})" "$(ratio "$s" "$c")"
done
printf 'docker run -d -p returned -> host port accepting: median %ss (%ss), first connect accepted %d/20\n' \
  "$(median "${lat[@]}")" "$(spread "${lat[@]}")" "$accepted"
