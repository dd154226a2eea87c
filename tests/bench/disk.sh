#!/usr/bin/env bash
# The engine on its data disk (overlay2 on ext4 on a sparse raw file) against the engine of a
# baseline commit (default b8f5896: vfs, /var/lib/docker in the initramfs, in RAM), the two
# taking turns, a 2 GiB guest each, ROUNDS rounds:
#   - `docker run --rm IMAGE true`, median of 10 per round;
#   - `docker import` of a 256 MiB tar (incompressible);
#   - the VM's RSS on the host (qemu's VmRSS) after boot and after that import;
# and, in the guest of this tree only, a sequential 256 MiB write + fsync and a read (guest page
# cache dropped, the host's cache of data.img dropped) on a volume on the disk, against the same
# dd on the host's own file system (the directory data.img is in). Prints medians, spreads and
# ratios (this tree / baseline, guest / host; below 1 is faster or smaller).
#
#   bash tests/bench/disk.sh                        # ROUNDS=3, against b8f5896
#   BASELINE_BIN=path bash tests/bench/disk.sh      # ... built beforehand
source "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-3}
baseline=${1:-b8f5896}
baseline_build "$baseline"
homes=("$work/new" "$work/old")
bins=("$cairn" "$baseline_cairn")
trap 'cleanup_homes "${homes[@]}"' EXIT

# Two images from the host's static busybox: a small one, and one with a 256 MiB payload.
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh true dd cat cut sync echo sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
tar -C "$work/rootfs" -cf "$work/small.tar" .
head -c 256M /dev/urandom > "$work/rootfs/payload"
tar -C "$work/rootfs" -cf "$work/big.tar" .

for i in 0 1; do
  CAIRN_HOME=${homes[$i]} "${bins[$i]}" init >/dev/null
  CAIRN_HOME=${homes[$i]} "${bins[$i]}" set memory 2048 >/dev/null
  CAIRN_HOME=${homes[$i]} "${bins[$i]}" guest build --flavour docker >/dev/null 2>&1
done
rss_mib() { awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$1/status"; }
declare -a run_0 run_1 import_0 import_1 boot_rss_0 boot_rss_1 rss_0 rss_1 gw gr hw hr
for round in $(seq "$rounds"); do
  for i in 0 1; do
    export CAIRN_HOME=${homes[$i]}
    bin=${bins[$i]}
    docker=("$CAIRN_HOME/guest-docker/docker" -H "unix://$CAIRN_HOME/run/docker.sock")
    "$bin" up --detach --flavour docker >/dev/null 2>&1
    until "${docker[@]}" info --format '{{.Driver}}' >/dev/null 2>&1; do sleep 0.2; done
    vm=$("$bin" status --json | sed -n 's/.*"vm_pid": \([0-9]*\).*/\1/p' | head -1)
    [ "$i" = 0 ] && accel=$("$bin" status --json | sed -n 's/.*"accel": "\(.*\)".*/\1/p')
    eval "boot_rss_$i+=($(rss_mib "$vm"))"
    "${docker[@]}" import "$work/small.tar" bench/small >/dev/null
    times=()
    for _ in $(seq 10); do
      t0=$(now); "${docker[@]}" run --rm bench/small true; t1=$(now)
      times+=("$(echo "$t1 - $t0" | bc)")
    done
    eval "run_$i+=($(median "${times[@]}"))"
    t0=$(now); "${docker[@]}" import "$work/big.tar" bench/big >/dev/null; t1=$(now)
    eval "import_$i+=($(echo "$t1 - $t0" | bc))"
    eval "rss_$i+=($(rss_mib "$vm"))"
    if [ "$i" = 0 ]; then
      # Guest: from a tmpfs to a volume on the disk, fsync'd; then read back cold.
      w=$("${docker[@]}" run --rm --privileged --tmpfs /t:size=300m -v bench:/v bench/big sh -c \
        'dd if=/payload of=/t/p bs=1M 2>/dev/null; a=$(cut -d" " -f1 /proc/uptime);
         dd if=/t/p of=/v/f bs=1M conv=fsync 2>/dev/null; b=$(cut -d" " -f1 /proc/uptime);
         echo "$b - $a"')
      dd if="$CAIRN_HOME/data.img" iflag=nocache count=0 2>/dev/null
      r=$("${docker[@]}" run --rm --privileged -v bench:/v bench/small sh -c \
        'sync; echo 3 > /proc/sys/vm/drop_caches; a=$(cut -d" " -f1 /proc/uptime);
         dd if=/v/f of=/dev/null bs=1M 2>/dev/null; b=$(cut -d" " -f1 /proc/uptime);
         echo "$b - $a"')
      gw+=("$(echo "$w" | bc)") gr+=("$(echo "$r" | bc)")
      # Host: the same from its tmpfs to the file system that holds data.img.
      cp "$work/rootfs/payload" /dev/shm/cairn-bench-payload
      t0=$(now); dd if=/dev/shm/cairn-bench-payload of="$work/f" bs=1M conv=fsync 2>/dev/null; t1=$(now)
      rm -f /dev/shm/cairn-bench-payload
      dd if="$work/f" iflag=nocache count=0 2>/dev/null
      t2=$(now); dd if="$work/f" of=/dev/null bs=1M 2>/dev/null; t3=$(now)
      rm -f "$work/f"
      hw+=("$(echo "$t1 - $t0" | bc)") hr+=("$(echo "$t3 - $t2" | bc)")
      "${docker[@]}" volume rm bench >/dev/null
    fi
    "$bin" down >/dev/null 2>&1
  done
done
ratio() { printf '%.2f' "$(echo "scale=3; $(median "${@:1:$(($# / 2))}") / $(median "${@:$(($# / 2 + 1))}")" | bc)"; }
row() { printf '%-44s %8.2f %s   %8.2f %s   ratio %s\n' "$1" "$(median "${!2}")" "($(spread "${!2}"))" "$(median "${!3}")" "($(spread "${!3}"))" "$(ratio "${!2}" "${!3}")"; }
printf 'accel %s, %d rounds; columns: this tree (overlay2 on the disk), %s (vfs in RAM)\n' \
  "$accel" "$rounds" "$baseline"
row 'docker run --rm true, s (median of 10)' 'run_0[@]' 'run_1[@]'
row 'docker import 256 MiB, s' 'import_0[@]' 'import_1[@]'
row 'VM RSS after boot, MiB' 'boot_rss_0[@]' 'boot_rss_1[@]'
row 'VM RSS after the 256 MiB import, MiB' 'rss_0[@]' 'rss_1[@]'
printf '%-44s %8s %s\n' '' 'guest' '         host'
row '256 MiB write + fsync, s' 'gw[@]' 'hw[@]'
row '256 MiB read, cold, s' 'gr[@]' 'hr[@]'
