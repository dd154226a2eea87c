#!/usr/bin/env bash
# Benchmarks cairn's database commands against the git CLI, run side by side on the same
# repositories, and prints medians and ratios (cairn / git; below 1.0 means cairn is faster).
#
#   bash tests/bench/db.sh            # RUNS=30 by default
#
# - get:      `cairn get memory`          vs `git show master:memory`
# - set:      `cairn set memory N`        vs hash-object + ls-tree + mktree + commit-tree + update-ref
# - set-deep: `cairn set` at 10,000 commits vs at 10 commits (must stay flat)
# - log-key:  `cairn log memory` vs `git log --format=%H master -- memory`, 10,000 commits
#             (warm: cairn's history index exists; cold: the first run, which builds it)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-30}
command -v hyperfine >/dev/null || { echo "bench: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --bins --quiet --manifest-path "$root/Cargo.toml"
cairn="$root/target/x86_64-unknown-linux-gnu/release/cairn"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
export NO_COLOR=1

small="$work/small" big="$work/big"
"$cairn" --db "$small" init >/dev/null
for i in $(seq 1 9); do "$cairn" --db "$small" set memory $((1000 + i)) >/dev/null; done

# 10,000 commits through git fast-import: every commit changes one key, memory every tenth.
"$cairn" --db "$big" init >/dev/null
python3 - "$big" <<'PY' | git --git-dir="$big" fast-import --quiet
import sys
keys = ["etc/hostname", "net/mtu", "ncpu", "net/dns", "etc/sysctl.conf",
        "net/port-forwarding", "proxy/http", "proxy/exclude", "etc/docker/daemon.json", "memory"]
def value(key, i):
    return {"etc/hostname": f"host-{i}", "net/mtu": str(1000 + i % 5000), "ncpu": str(1 + i % 2),
            "net/dns": f"10.0.{i % 250}.{i % 200 + 1}", "etc/sysctl.conf": f"vm.swappiness = {i % 100}",
            "net/port-forwarding": f"127.0.0.1:{8000 + i % 1000}:80/tcp",
            "proxy/http": f"http://proxy-{i}.example:3128", "proxy/exclude": f"host-{i}.example",
            "etc/docker/daemon.json": '{\n  "debug": %s\n}' % ("true" if i % 2 else "false"),
            "memory": str(1024 + i % 20000)}[key] + "\n"
out = sys.stdout
out.write("reset refs/heads/master\nfrom refs/heads/master^0\n\n")
for i in range(1, 10000):
    key = keys[i % 10]
    data = value(key, i).encode()
    out.write(f"commit refs/heads/master\ncommitter bench <bench@example.com> {1700000000 + i} +0000\n")
    msg = f"set {key}".encode()
    out.write(f"data {len(msg)}\n{msg.decode()}\n")
    out.write(f"M 100644 inline {key}\ndata {len(data)}\n")
    out.flush(); out.buffer.write(data); out.write("\n")
PY
echo "history: $(git --git-dir="$small" rev-list --count master) and $(git --git-dir="$big" rev-list --count master) commits"

cat > "$work/git-set.sh" <<'SH'
#!/usr/bin/env bash
# The same commit as `cairn set memory N`, made with the git CLI.
set -euo pipefail
export GIT_DIR=$1
blob=$(printf '%s\n' "$2" | git hash-object -w --stdin)
tree=$(git ls-tree master | sed "s/^\(100644 blob \)[0-9a-f]*\(\tmemory\)$/\1$blob\2/" | git mktree)
commit=$(git commit-tree "$tree" -p master -m "set memory=$2")
git update-ref refs/heads/master "$commit"
SH

bench() { # name, number of runs, then hyperfine arguments
  local name=$1 n=$2; shift 2
  hyperfine --style none --warmup 3 --runs "$n" --export-json "$work/$name.json" "$@" >/dev/null
}
bench get "$runs" -N "$cairn --db $small get memory" "git --git-dir $small show master:memory"
bench set "$runs" --shell bash "$cairn --db $small set memory \$((1024 + RANDOM % 20000))" \
  "bash $work/git-set.sh $small \$((1024 + RANDOM % 20000))"
bench set-deep "$runs" --shell bash "$cairn --db $big set memory \$((1024 + RANDOM % 20000))" \
  "$cairn --db $small set memory \$((1024 + RANDOM % 20000))"
bench log-key "$runs" -N "$cairn --db $big log memory" "git --git-dir $big log --format=%H master -- memory"
# The first `log KEY` builds cairn's history index (see db/src/history_index.rs); shown for honesty.
bench log-key-cold 10 --prepare "rm -rf $big/cairn" "$cairn --db $big log memory" \
  "git --git-dir $big log --format=%H master -- memory"

python3 - "$work" "$runs" <<'PY'
import json, sys
work, runs = sys.argv[1], sys.argv[2]
rows = [("get", "cairn get memory", "git show master:memory", 1.0),
        ("set", "cairn set memory N", "git plumbing, same commit", 1.0),
        ("set-deep", "cairn set at 10,000 commits", "cairn set at 10 commits", 1.2),
        ("log-key", "cairn log memory (10,000 commits)", "git log -- memory", 1.5),
        ("log-key-cold", "same, first run (builds the index)", "git log -- memory", None)]
print(f"median of {runs} runs each (10 for the cold run), milliseconds; ratio = first / second")
print(f"| {'what':<36} | {'vs':<28} | {'ms':>7} | {'vs ms':>7} | {'ratio':>5} | {'target':>6} |")
print(f"|{'-'*38}|{'-'*30}|{'-'*9}|{'-'*9}|{'-'*7}|{'-'*8}|")
for name, a, b, target in rows:
    results = json.load(open(f"{work}/{name}.json"))["results"]
    ma, mb = results[0]["median"] * 1000, results[1]["median"] * 1000
    ratio = ma / mb
    goal = "-" if target is None else f"<={target} " + ("ok" if ratio <= target else "MISSED")
    print(f"| {a:<36} | {b:<28} | {ma:7.2f} | {mb:7.2f} | {ratio:5.2f} | {goal} |")
PY
