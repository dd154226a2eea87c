#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine and runs every test of the
# workspace (cargo builds the binary the end-to-end tests drive), those that need KVM where
# this machine's KVM can run them.
#   git                      the database is read back with the git CLI
#   diod                     diod's client tools (diodls, diodcat) talk to `cairn serve`
#   qemu-system-x86          boots the Linux guests under TCG
#   busybox-static, cpio     the guests' initramfs
#   acpica-tools             iasl reads back the native VMM's ACPI tables
#   erofs-utils              mkfs.erofs makes the guest image's read-only system disk
#   debian-archive-keyring   verifies Debian 13's archive (the image builder's own apt state)
#   apt lists                the 9P tests' tiny guest takes the host's own kernel package
#   virtiofsd                shares host directories with the guest (crates.io, pinned: Debian 12
#                            has none; it links libseccomp and libcap-ng, hence their -dev)
#   x86_64-unknown-none      the native VMM's test guest is built without SSE for bare metal
#                            (rustup; without it the test builds it for the host target instead)
#   chromium, playwright-core  the web page's test in a real browser (Debian's chromium, driven
#                            by playwright-core from npm with the machine's Node.js; no browser
#                            is downloaded)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v git >/dev/null || need+=(git)
command -v diodls >/dev/null || need+=(diod)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86 seabios ipxe-qemu)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && ldd /bin/busybox 2>&1 | grep -q "not a dynamic" \
  || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v iasl >/dev/null || need+=(acpica-tools)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
if ! command -v virtiofsd >/dev/null; then
  [ -f /usr/include/seccomp.h ] || need+=(libseccomp-dev)
  [ -f /usr/include/cap-ng.h ] || need+=(libcap-ng-dev)
fi
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
lists=$(apt-cache policy linux-image-amd64 2>/dev/null | awk '/Candidate:/{print $2}')
if [ ${#need[@]} -gt 0 ] || [ -z "$lists" ] || [ "$lists" = "(none)" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    if [ ${#need[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
  else
    echo "tests/run.sh: as root, run: apt-get update && apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
command -v virtiofsd >/dev/null || cargo install --quiet --locked virtiofsd --version 1.14.0
[ -d tests/ui/node_modules/playwright-core ] \
  || npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none \
  || rustup target add x86_64-unknown-none \
  || echo "tests/run.sh: no x86_64-unknown-none; the VMM test guest is built for the host" >&2
cargo test --workspace
# The tests that need KVM are #[ignore]d, so that a machine without it counts them as ignored
# rather than passed; they run here wherever they can.
set +e
cargo run --quiet -p cairn-vmm --example kvm_probe
kvm=$?
set -e
if [ "$kvm" -ne 4 ]; then
  cargo test -p cairn-vmm --test machine --test lifecycle -- --ignored
  cargo test -p cairn-cli --test tests -- --ignored native::up_runs_the_vm_on_the_embedded_vmm
fi
if [ "$kvm" -eq 0 ]; then
  cargo test -p cairn-vmm --test linux_boot -- --ignored
elif [ "$kvm" -eq 3 ]; then
  cargo test -p cairn-cli --test tests -- --ignored native::a_native_boot_that_fails
fi
