#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, builds the binaries the
# end-to-end tests drive, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "tests/run.sh: please install: ${need[*]}" >&2
    exit 1
  fi
fi
cargo build --workspace --bins
cargo test --workspace
