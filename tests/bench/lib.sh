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
spread() { printf '%s\n' "$@" | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s..%s", lo, hi}'; }
# Waits until the guest applied master's head.
applied() {
  local head; head=$(git --git-dir "$CAIRN_HOME/db" rev-parse master)
  until "$cairn" status --json | grep -q "\"applied_commit\": \"$head\""; do sleep 0.02; done
}
# CPU seconds (user + system, all threads) that process $1 has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }
status_field() { "$cairn" status --json | sed -n "s/.*\"$1\": \\([0-9]*\\).*/\\1/p" | head -1; }
