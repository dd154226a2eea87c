#!/usr/bin/env bash
# The embedded VMM's boot timings and memory overhead with the tiny PVH guest, release build,
# under this host's KVM. Medians; these machines are shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-21}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for mode in 0 3; do
  as --64 --defsym MODE=$mode -o "$work/tiny$mode.o" vmm/tests/guests/tiny.S
  ld -m elf_x86_64 -Ttext=0x100000 -z noseparate-code -o "$work/tiny$mode.elf" "$work/tiny$mode.o"
done
cargo run -q --release -p cairn-vmm --example boot_bench -- "$work/tiny0.elf" "$work/tiny3.elf" "$runs"
# A 9P round trip over virtio-9p (the test guest, vmm/testguest) against the unix socket.
cargo run -q --release -p cairn-vmm --example virtio_bench -- "${2:-2000}" "${3:-9}"
