# Sourced by the bench scripts: builds the release binary, makes a fresh CAIRN_HOME that is
# removed (and its VM stopped) on exit, and gives the helpers they share.
#   root   the repository     cairn  the release binary     work  the scratch directory
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cargo build --release --bins --quiet --manifest-path "$root/Cargo.toml"
cairn="$root/target/x86_64-unknown-linux-gnu/release/cairn"
work=$(mktemp -d)
export CAIRN_HOME="$work/home" CAIRN_CACHE="${CAIRN_CACHE:-$root/target/test-cache/debs}" NO_COLOR=1
trap '"$cairn" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$cairn" init >/dev/null
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# The spread of a set of numbers: "min..max".
spread() { printf '%s\n' "$@" | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.2f..%.2f", lo, hi}'; }
# Waits until the guest applied master's head.
applied() {
  local head; head=$(git --git-dir "$CAIRN_HOME/db" rev-parse master)
  until "$cairn" status --json | grep -q "\"applied_commit\": \"$head\""; do sleep 0.02; done
}
# CPU seconds (user + system, all threads) that process $1 has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }
status_field() { "$cairn" status --json | sed -n "s/.*\"$1\": \\([0-9]*\\).*/\\1/p" | head -1; }
# The cairn of commit $1, for a side-by-side run: $BASELINE_BIN if set (built beforehand),
# else a release build of a worktree of that commit, removed on exit. Sets baseline_cairn.
baseline_build() {
  if [ -n "${BASELINE_BIN:-}" ]; then
    baseline_cairn=$BASELINE_BIN
    return
  fi
  git -C "$root" worktree add --detach "$work/baseline-src" "$1" >/dev/null 2>&1
  CARGO_TARGET_DIR="$work/baseline-target" cargo build --release --bins --quiet \
    --manifest-path "$work/baseline-src/Cargo.toml"
  baseline_cairn=$(find "$work/baseline-target" -path '*release/cairn' -type f | head -1)
}
# Stops the VMs of the homes given and removes the scratch directory (and a baseline worktree).
cleanup_homes() {
  for h in "$@"; do CAIRN_HOME=$h "$cairn" down >/dev/null 2>&1 || true; done
  git -C "$root" worktree remove --force "$work/baseline-src" >/dev/null 2>&1 || true
  rm -rf "$work"
}
