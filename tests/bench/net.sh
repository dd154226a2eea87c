#!/usr/bin/env bash
# The guest's network, side by side: (a) QEMU's user-mode network (libslirp) and (b) cairn's
# NAT over -netdev stream (examples/nat.rs), same kernel, same guest, same run. The guest is
# the built image's kernel and modules with iperf3 (Debian's, with its libraries) and a script
# as /init: iperf3 to a host loopback server in both directions, then connections per second
# (busybox nc, one process per connection, to a loopback httpd; the static busybox's wget
# crashes in glibc's resolver). Prints medians and ratios.
#
#   bash tests/bench/net.sh           # RUNS=3 boots per network, SECS=5 per iperf3 direction
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-3} secs=${SECS:-5} conns=${CONNS:-100}
command -v iperf3 >/dev/null || { echo "net.sh: needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
cargo build --release --bins --examples --quiet --manifest-path "$root/Cargo.toml"
target="$root/target/x86_64-unknown-linux-gnu/release"
work=$(mktemp -d)
export CAIRN_HOME="$work/home" CAIRN_CACHE="${CAIRN_CACHE:-$root/target/test-cache/debs}" NO_COLOR=1
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$target/cairn" init >/dev/null
"$target/cairn" guest build --flavour base >/dev/null 2>&1

iperf_port=$((20000 + RANDOM % 10000)) http_port=$((30000 + RANDOM % 10000))
iperf3 -s -B 127.0.0.1 -p "$iperf_port" </dev/null >/dev/null 2>&1 & pids+=($!)
mkdir -p "$work/www" && echo ok >"$work/www/index.html"
busybox httpd -f -p "127.0.0.1:$http_port" -h "$work/www" </dev/null >/dev/null 2>&1 & pids+=($!)

# The guest: iperf3 and its libraries from this Debian host, and the bench script as /init.
extra="$work/extra"
mkdir -p "$extra/usr/bin"
cp "$(command -v iperf3)" "$extra/usr/bin/iperf3"
for lib in $(ldd "$(command -v iperf3)" | grep -o '/[^ ]*'); do
  mkdir -p "$extra$(dirname "$lib")"
  cp -L "$lib" "$extra$lib"
done
cat >"$extra/init" <<EOF
#!/bin/busybox sh
B=/bin/busybox
\$B mount -t proc proc /proc; \$B mount -t sysfs sys /sys; \$B mount -t devtmpfs dev /dev
for m in failover net_failover virtio_ring virtio virtio_net virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci; do
  \$B insmod /lib/modules/\$m.ko 2>/dev/null
done
\$B ip link set lo up; \$B ip link set eth0 up
mtu=\$(\$B sed -n 's/.*bench.mtu=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "\$mtu" ] && \$B ip link set eth0 mtu "\$mtu"
\$B ip addr add 10.0.2.15/24 dev eth0; \$B ip route add default via 10.0.2.2
/usr/bin/iperf3 -c 10.0.2.2 -p $iperf_port -t $secs -f m 2>&1 | \$B grep receiver | \$B sed 's/^/UP /'
/usr/bin/iperf3 -c 10.0.2.2 -p $iperf_port -t $secs -f m -R 2>&1 | \$B grep receiver | \$B sed 's/^/DOWN /'
t0=\$(\$B cut -d' ' -f1 /proc/uptime)
i=0; while [ \$i -lt $conns ]; do printf "GET / HTTP/1.0\\r\\n\\r\\n" | \$B nc 10.0.2.2 $http_port >/dev/null && i=\$((i+1)); done
echo "CPS \$t0 \$(\$B cut -d' ' -f1 /proc/uptime)"
\$B poweroff -f
EOF
chmod 755 "$extra/init"
(cd "$extra" && find . | cpio -o -H newc --quiet) >"$work/extra.cpio"
cat "$CAIRN_HOME/guest/initrd.img" "$work/extra.cpio" >"$work/initrd.img"

boot() {  # $1: the -netdev argument, $2: more kernel arguments; prints the guest's console
  timeout 600 qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -nodefaults -no-reboot \
    -serial stdio -monitor none -kernel "$CAIRN_HOME/guest/vmlinuz" -initrd "$work/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init ${2:-}" \
    -netdev "$1" -device virtio-net-pci,netdev=n0,romfile= </dev/null 2>/dev/null | tr -d '\r'
}
# The console's first line starts with terminal escapes: the markers are looked for anywhere.
mbits() { sed -n "s/.*$1 \[/[/p" | awk '{ for (i = 1; i <= NF; i++) if ($(i) == "Mbits/sec") print $(i-1) }'; }
cps() { sed -n 's/.*CPS /CPS /p' | awk -v n="$conns" '{ printf "%.1f\n", n / ($3 - $2) }'; }
cairn() {  # $1: run, $2: MTU; boots on the NAT example
  local sock="$work/net-$1-$2.sock" nat
  "$target/examples/nat" "$sock" "$2" >/dev/null 2>&1 & nat=$!
  boot "stream,id=n0,server=on,addr.type=unix,addr.path=$sock" "bench.mtu=$2"
  kill "$nat"; wait "$nat" 2>/dev/null || true
}

declare -A results
record() {  # $1: the network's name; the console on stdin
  local out; out=$(cat)
  [ -n "${RAW:-}" ] && printf '%s\n' "$out" >&2
  results[$1_up]+="$(mbits UP <<<"$out") " results[$1_down]+="$(mbits DOWN <<<"$out") "
  results[$1_cps]+="$(cps <<<"$out") "
}
for i in $(seq "$runs"); do
  # (not a pipe: record must run in this shell to keep the results)
  record slirp < <(boot user,id=n0)
  record cairn < <(cairn "$i" 1500)
  record jumbo < <(cairn "$i" 65520)
done

median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v s="$1" -v c="$2" 'BEGIN { if (s > 0) printf "%.2fx", c / s; else print "-" }'; }
printf '%-34s %9s %9s %7s %12s %7s\n' "median of $runs boots (TCG)" slirp cairn ratio "cairn 65520" ratio
for what in up down cps; do
  s=$(median "${results[slirp_$what]}") c=$(median "${results[cairn_$what]}") j=$(median "${results[jumbo_$what]}")
  case $what in
    up) label="guest -> host iperf3 (Mbit/s)" ;;
    down) label="host -> guest iperf3 -R (Mbit/s)" ;;
    cps) label="connections per second (nc)" ;;
  esac
  printf '%-34s %9s %9s %7s %12s %7s\n' "$label" "$s" "$c" "$(ratio "$s" "$c")" "$j" "$(ratio "$s" "$j")"
done
