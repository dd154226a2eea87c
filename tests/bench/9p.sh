#!/usr/bin/env bash
# Benchmarks `cairn serve` against diod serving a checkout of the same tree, side by side, read by
# the same clients: diod's own tools on the host, and the Linux kernel's v9fs in a guest under
# QEMU TCG that mounts both servers at once. Prints medians and speed ratios
# (diod time / cairn time: 1.0 or more means cairn is at least as fast).
#
#   bash tests/bench/9p.sh            # RUNS=10 host runs, ROUNDS=5 guest rounds by default
#
# The tree: 10,000 keys (100 directories of 100) and one 16 MiB value, on branch `bench`.
# - ls:      host: diodls of the 100 directories;   guest: ls -R of the whole tree
# - cat1000: host: diodcat of 1,000 keys, one connection;  guest: cat of the same 1,000 files
# - big16:   a read of the 16 MiB value at msize 512 KiB (host diodcat -m; guest mount option)
# - commit:  guest only (diod has no transactions): a one-key transaction on master through 9P,
#            mkdir + write + `echo commit > ctl`, per commit
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-10}
rounds=${ROUNDS:-5}
for tool in hyperfine diod diodcat qemu-system-x86_64; do
  command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install hyperfine diod qemu-system-x86)" >&2; exit 1; }
done
cargo build --release --bins --quiet --manifest-path "$root/Cargo.toml"
cairn="$root/target/x86_64-unknown-linux-gnu/release/cairn"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
export NO_COLOR=1 CAIRN_HOME="$work/home"

db="$work/db"
"$cairn" --db "$db" init >/dev/null
python3 - <<'PY' | git --git-dir="$db" fast-import --quiet
import os, sys
out = sys.stdout.buffer
out.write(b"commit refs/heads/bench\ncommitter bench <bench@example.com> 1700000000 +0000\n")
out.write(b"data 12\nbench tree\n\n")
for d in range(100):
    for k in range(100):
        data = b"value-%02d-%02d\n" % (d, k)
        out.write(b"M 100644 inline d%02d/k%02d\ndata %d\n%s\n" % (d, k, len(data), data))
big = os.urandom(16 << 20)
out.write(b"M 100644 inline big\ndata %d\n" % len(big) + big + b"\n")
PY
export_dir="$work/export"
mkdir "$export_dir"
git --git-dir="$db" archive bench | tar -x -C "$export_dir"
chmod -R a+rX "$export_dir"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$cairn" --db "$db" serve --tcp 127.0.0.1:0 >"$work/serve.out" 2>/dev/null &
pids+=($!)
dport=$(free_port)
diod -f -n -l "127.0.0.1:$dport" -e "$export_dir" -L "$work/diod.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q '^tcp ' "$work/serve.out" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$dport") 2>/dev/null && break
  sleep 0.1
done
cport=$(awk '/^tcp /{n=split($2,a,":"); print a[n]}' "$work/serve.out")
echo "cairn serve on 127.0.0.1:$cport, diod on 127.0.0.1:$dport; runs=$runs rounds=$rounds"

# Host: the same diod tools against both servers.
C=(-s "127.0.0.1:$cport" -a /) D=(-s "127.0.0.1:$dport" -a "$export_dir")
dirs=$(printf 'd%02d ' $(seq 0 99))
keys=$(for d in $(seq 0 9); do for k in $(seq 0 99); do printf 'd%02d/k%02d ' "$d" "$k"; done; done)
prefixed() { for p in $2; do printf '%s%s ' "$1" "$p"; done; }
host() {
  local name=$1 cairn_cmd=$2 diod_cmd=$3
  hyperfine -N --runs "$runs" --warmup 2 --style none --export-json "$work/$name.json" \
    -n cairn "$cairn_cmd" -n diod "$diod_cmd" >/dev/null
  python3 - "$work/$name.json" "$name" <<'PY'
import json, sys
r = {x["command"]: sorted(x["times"]) for x in json.load(open(sys.argv[1]))["results"]}
med = {k: v[len(v) // 2] * 1000 for k, v in r.items()}
print(f"host  {sys.argv[2]:8} cairn {med['cairn']:8.2f} ms   diod {med['diod']:8.2f} ms   ratio {med['diod'] / med['cairn']:.2f}")
PY
}
host ls "diodls ${C[*]} $(prefixed branch/bench/ro/ "$dirs")" "diodls ${D[*]} $dirs"
host cat1000 "diodcat ${C[*]} $(prefixed branch/bench/ro/ "$keys")" "diodcat ${D[*]} $keys"
host big16 "diodcat -m 524288 ${C[*]} branch/bench/ro/big" "diodcat -m 524288 ${D[*]} big"

# Guest: the kernel's v9fs mounts both and times each operation, alternating servers.
cat >"$work/init" <<EOF
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in netfs fscache 9pnet 9p 9pnet_fd virtio_ring virtio failover net_failover virtio_net virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci; do
  [ -f /lib/modules/\$m.ko ] && insmod /lib/modules/\$m.ko 2>/dev/null
done
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
mkdir /c /d
o=trans=tcp,version=9p2000.L,msize=524288,cache=none
mount -t 9p -o \$o,port=$cport 10.0.2.2 /c && mount -t 9p -o \$o,port=$dport,aname=$export_dir 10.0.2.2 /d || echo MOUNT-FAILED
grep 9p /proc/mounts
roots="c:/c/branch/bench/ro d:/d"
# Paths relative to each tree's root, so that both servers walk the same number of names.
for k in $keys; do echo "\$k"; done > /tmp/keys.list
t() { time -p sh -c "\$3" >/dev/null 2>/tmp/t; echo "RESULT \$1 \$2 \$(awk '/^real/{print \$2}' /tmp/t)"; }
for round in \$(seq $rounds); do
  for r in \$roots; do
    s=\${r%%:*} p=\${r#*:}
    t ls \$s "ls -R \$p"
    t cat1000 \$s "cd \$p && xargs cat < /tmp/keys.list"
    t big16 \$s "cat \$p/big"
  done
  t commit c "T=/c/branch/master/transactions; for i in 1 2 3 4 5 6 7 8 9 10; do mkdir \\\$T/b\$round\\\$i && echo \\\$((1000 + \$round * 10 + \\\$i)) > \\\$T/b\$round\\\$i/rw/memory && echo commit > \\\$T/b\$round\\\$i/ctl; done"
done
echo BENCH-DONE
poweroff -f
EOF
kernel=$(sh "$root/tests/fixtures/linux-guest.sh" "$root/target/test-cache/linux" "$work/init" "$work/initrd.img")
timeout 1800 qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot -monitor none \
  -kernel "$kernel" -initrd "$work/initrd.img" -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null >"$work/console.log" 2>&1 || true
grep -q BENCH-DONE "$work/console.log" || { cat "$work/console.log" >&2; echo "bench: the guest did not finish" >&2; exit 1; }
grep -a -o '10\.0\.2\.2 /[cd] 9p .*' "$work/console.log" | sed 's/^/guest mount: /'
python3 - "$work/console.log" <<'PY'
import collections, statistics, sys
times = collections.defaultdict(list)
for line in open(sys.argv[1], errors="replace"):
    parts = line.split()
    if len(parts) == 4 and parts[0] == "RESULT":
        times[(parts[1], parts[2])].append(float(parts[3]))
for op in ["ls", "cat1000", "big16"]:
    c, d = statistics.median(times[(op, "c")]), statistics.median(times[(op, "d")])
    print(f"guest {op:8} cairn {c * 1000:8.0f} ms   diod {d * 1000:8.0f} ms   ratio {d / c:.2f}")
commit = statistics.median(times[("commit", "c")]) / 10
print(f"guest commit   cairn {commit * 1000:8.1f} ms per one-key transaction (TCG guest, fsync'd)")
PY
