#!/usr/bin/env bash
# Shared directories, side by side in one run, one guest, under this machine's accelerator
# (TCG here): a host directory shared over virtiofs (virtiofsd), the same over qemu's 9P
# (`filesystem 9p`, a reboot), and a volume on the guest's own data disk. In a container, each
# row timed inside it (the guest's clock, not docker's start-up), RUNS times each:
#   untar    a tree of vendored crate sources (~10,000 files, from this host's cargo registry)
#   stat     find + stat of every file
#   cat      cat of every file
#   write    a sequential 256 MiB write (dd, fsync)
#   read     its sequential read, the guest's and the host's caches of it dropped
# Prints medians, the spread (min..max) and the ratios virtiofs against 9p (9p's time over
# virtiofs's: above 1 is faster) and against the disk (the disk's time over virtiofs's).
#
#   bash tests/bench/files.sh          # RUNS=5, FILES=10000
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5} files=${FILES:-10000}
export DOCKER_CONFIG="$work/docker-config"

# The tree: whole crates of the registry, in name order, until there are $files files.
registry=$(ls -d "$HOME"/.cargo/registry/src/*/ | head -1)
count=0 crates=()
for crate in $(ls "$registry"); do
  crates+=("$crate")
  count=$((count + $(find "$registry/$crate" -type f | wc -l)))
  [ "$count" -ge "$files" ] && break
done
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh tar find xargs stat cat dd cut rm echo sync mkdir; do ln -s busybox "$rootfs/bin/$applet"; done
tar -C "$registry" -cf "$rootfs/tree.tar" "${crates[@]}"
tar -C "$rootfs" -cf "$work/image.tar" .
echo "tree: $count files in ${#crates[@]} crates, $(du -m "$rootfs/tree.tar" | cut -f1) MiB" >&2

share="$work/share"
mkdir -p "$share"
"$cairn" set memory 2048 "file-sharing=$share" filesystem=virtiofs >/dev/null
"$cairn" up --detach --flavour docker >/dev/null 2>"$work/up.err" \
  || { echo "files.sh: cairn up failed:" >&2; cat "$work/up.err" >&2; exit 1; }
docker="$CAIRN_HOME/guest-docker/docker"
d() { DOCKER_HOST="unix://$CAIRN_HOME/run/docker.sock" "$docker" "$@"; }
d import "$work/image.tar" bench/files:1 >/dev/null

# Seconds `sh -c $2` takes in a container with $1 (a -v argument) at /w.
timed() {
  d run --rm --privileged -v "$1" bench/files:1 sh -c \
    "cd /w; a=\$(cut -d' ' -f1 /proc/uptime); $2; b=\$(cut -d' ' -f1 /proc/uptime); echo \"\$b - \$a\"" | bc
}
declare -A results
# One round of every row on $1 (virtiofs, 9p or disk), with $2 as the container's /w and $3
# the host's path of it (empty for the disk: data.img is what the host caches).
round() {
  local mode=$1 volume=$2 host=$3
  d run --rm -v "$volume" bench/files:1 sh -c 'rm -rf /w/* /w/.[!.]* 2>/dev/null; true'
  results[${mode}_untar]+=" $(timed "$volume" 'tar -xf /tree.tar')"
  results[${mode}_stat]+=" $(timed "$volume" 'find . -type f -print0 | xargs -0 stat -c %s >/dev/null')"
  results[${mode}_cat]+=" $(timed "$volume" 'find . -type f -print0 | xargs -0 cat >/dev/null')"
  results[${mode}_write]+=" $(timed "$volume" 'dd if=/dev/zero of=big bs=1M count=256 conv=fsync 2>/dev/null')"
  if [ -n "$host" ]; then
    dd if="$host/big" iflag=nocache count=0 2>/dev/null
  else
    dd if="$CAIRN_HOME/data.img" iflag=nocache count=0 2>/dev/null
  fi
  results[${mode}_read]+=" $(timed "$volume" 'sync; echo 3 > /proc/sys/vm/drop_caches; dd if=big of=/dev/null bs=1M 2>/dev/null')"
}
for i in $(seq "$runs"); do
  round virtiofs "$share:/w" "$share"
  round disk "bench-disk:/w" ""
done
"$cairn" set filesystem 9p --wait --timeout 600 >/dev/null
for i in $(seq "$runs"); do
  round 9p "$share:/w" "$share"
done

med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v slow="$1" -v fast="$2" 'BEGIN { if (fast > 0) printf "%.2fx", slow / fast; else print "-" }'; }
printf '%-34s %8s %13s %8s %13s %8s %13s %9s %9s\n' "seconds, median of $runs (TCG)" virtiofs spread 9p spread disk spread "vs 9p" "vs disk"
for row in untar stat cat write read; do
  case $row in
    untar) label="untar $count files" ;;
    stat) label="find + stat of all" ;;
    cat) label="cat of all" ;;
    write) label="write 256 MiB (fsync)" ;;
    read) label="read 256 MiB (cold)" ;;
  esac
  v=$(med "${results[virtiofs_$row]}") p=$(med "${results[9p_$row]}") k=$(med "${results[disk_$row]}")
  printf '%-34s %8s %13s %8s %13s %8s %13s %9s %9s\n' "$label" \
    "$v" "$(spread ${results[virtiofs_$row]})" "$p" "$(spread ${results[9p_$row]})" \
    "$k" "$(spread ${results[disk_$row]})" "$(ratio "$p" "$v")" "$(ratio "$k" "$v")"
done
