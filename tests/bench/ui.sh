#!/usr/bin/env bash
# The settings page (issue 22): the page's load (settings, and history) with 10,000 commits in
# the database, in Debian's chromium; the JSON routes behind them; and a `cairn set` until its
# value shows on an open page through the live events, next to `cairn get` in the same run.
#   bash tests/bench/ui.sh [ROUNDS]        (default 10; COMMITS=10000)
source "$(dirname "$0")/lib.sh"
rounds=${1:-10}
commits=${COMMITS:-10000}
[ -d "$root/tests/ui/node_modules/playwright-core" ] || npm ci --prefix "$root/tests/ui" --no-audit --no-fund --loglevel=error

echo "== $commits commits"
for n in $(seq "$commits"); do "$cairn" set mtu "$((1000 + n % 30000))" >/dev/null; done
"$cairn" log memory >/dev/null   # the history index, built once as the CLI would

"$cairn" ui > "$work/ui.out" 2>/dev/null &
ui_pid=$!
until [ -s "$work/ui.out" ]; do sleep 0.05; done
url=$(head -1 "$work/ui.out")
port=${url#http://127.0.0.1:}; port=${port%%/*}; token=${url#*token=}
trap 'kill "$ui_pid" 2>/dev/null; "$cairn" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "== the JSON routes (curl, median of 20)"
route() {
  local times=()
  for _ in $(seq 20); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' -H "Cookie: cairn_ui_$port=$token" "http://127.0.0.1:$port$1")")
  done
  printf '%-58s %.1f ms (%s)\n' "GET $1" "$(median "${times[@]}" | awk '{print $1*1000}')" \
    "$(printf '%s\n' "${times[@]}" | awk '{print $1*1000}' | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.1f..%.1f", lo, hi}')"
}
route /api/settings
route "/api/history?limit=50"
route "/api/history?key=mtu&limit=50"

echo "== in the browser ($rounds rounds)"
CAIRN_BIN=$cairn node "$root/tests/ui/bench.mjs" "$url" "$rounds"
