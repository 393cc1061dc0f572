#!/usr/bin/env bash
# Publishing into an IPFS node: `cidmirror mirror --once --store kubo=...` against the same
# into the embedded store, and against the node's own `add` of the same files (what earlier
# IPFS mirrors did: `ipfs add -r` of the mirror directory), on a generated upstream.
#
#   bench/kubo.sh            # KUBO_PACKAGES=1000 packages of 1-400 KiB, BENCH_RUNS=3
#
# Each run starts a fresh Kubo node (built by scripts/install-go-peers.sh at the version in
# scripts/go-peers/versions, the one the tests use; `--offline`, loopback only) and fresh
# data directories, so nothing is deduplicated against an
# earlier run. Prints every run and the medians, and checks that both stores publish the
# same root CID. Numbers only, no pass/fail.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${KUBO_PACKAGES:-1000}
MAXKIB=${KUBO_MAX_KIB:-400}
RUNS=${BENCH_RUNS:-3}

command -v python3 >/dev/null && command -v curl >/dev/null || {
  apt-get install -y --no-install-recommends python3 curl >/dev/null
}
IPFS=$(./scripts/install-go-peers.sh)/ipfs
echo "$("$IPFS" version)"
cargo build --release --locked --quiet
BIN=$ROOT/target/release/cidmirror

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-kubo-bench.XXXXXX")
NODE_PID=
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 bench/gen_repo.py init --upstream "$WORK/up" --state "$WORK/state.json" --repo extra \
  --packages "$N" --min-kib 1 --max-kib "$MAXKIB" --seed kubo-bench >"$WORK/gen"
BYTES=$(awk '$1 == "package_bytes" {print $2}' "$WORK/gen")
echo "upstream: $N packages, $BYTES bytes of packages (plus .sig files and databases)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_node DIR -> sets API, NODE_PID
start_node() {
  local repo=$1 api gw swarm
  IPFS_PATH=$repo "$IPFS" init --empty-repo --profile test,unixfs-v1-2025 >/dev/null
  api=$(free_port); gw=$(free_port); swarm=$(free_port)
  IPFS_PATH=$repo "$IPFS" config Addresses.API "/ip4/127.0.0.1/tcp/$api"
  IPFS_PATH=$repo "$IPFS" config Addresses.Gateway "/ip4/127.0.0.1/tcp/$gw"
  IPFS_PATH=$repo "$IPFS" config --json Addresses.Swarm "[\"/ip4/127.0.0.1/tcp/$swarm\"]"
  IPFS_PATH=$repo "$IPFS" config Routing.Type none
  IPFS_PATH=$repo "$IPFS" daemon --offline >"$repo.log" 2>&1 &
  NODE_PID=$!
  for _ in $(seq 300); do
    grep -q "Daemon is ready" "$repo.log" && break
    sleep 0.2
  done
  grep -q "Daemon is ready" "$repo.log" || { echo "node did not start:" >&2; cat "$repo.log" >&2; exit 1; }
  API=http://127.0.0.1:$api
}

stop_node() { kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }

now() { date +%s.%N; }
root_of() { awk '/^published snapshot/ {sub(":", "", $4); print $4}' "$1"; }

: >"$WORK/emb"; : >"$WORK/kubo"; : >"$WORK/add"
for run in $(seq "$RUNS"); do
  t0=$(now)
  "$BIN" --data-dir "$WORK/e$run" mirror --upstream "$WORK/up" --repo extra --once --no-progress >"$WORK/e.out" 2>/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc >>"$WORK/emb"

  start_node "$WORK/node$run"
  t0=$(now)
  "$BIN" --data-dir "$WORK/k$run" --store "kubo=$API" mirror --upstream "$WORK/up" --repo extra --once --no-progress >"$WORK/k.out" 2>/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc >>"$WORK/kubo"
  [ "$(root_of "$WORK/e.out")" = "$(root_of "$WORK/k.out")" ] || {
    echo "roots differ: embedded $(root_of "$WORK/e.out"), kubo $(root_of "$WORK/k.out")" >&2; exit 1; }
  stop_node

  # The node's own add of the same directory (every file, recursively, pinned), with the
  # unixfs-v1-2025 profile like the publisher's, into a fresh node.
  start_node "$WORK/addnode$run"
  args=()
  while IFS= read -r f; do
    rel=${f#"$WORK/up/"}
    args+=(-F "file=@$f;filename=${rel//\//%2F}")
  done < <(find "$WORK/up/extra" -type f | sort)
  t0=$(now)
  curl -s -f -X POST "${args[@]}" \
    "$API/api/v0/add?recursive=true&wrap-with-directory=true&pin=true&quiet=true" >/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc >>"$WORK/add"
  stop_node
  printf 'run %d: embedded %.2f s, kubo %.2f s, node add %.2f s\n' "$run" \
    "$(tail -1 "$WORK/emb")" "$(tail -1 "$WORK/kubo")" "$(tail -1 "$WORK/add")"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
E=$(median <"$WORK/emb"); K=$(median <"$WORK/kubo"); A=$(median <"$WORK/add")
printf '\nmedians of %d runs, %d packages, same root CID in every run\n' "$RUNS" "$N"
printf '  mirror --once, embedded store          %.2f s\n' "$E"
printf '  mirror --once, --store kubo            %.2f s   (%.2fx embedded)\n' "$K" "$(echo "$K / $E" | bc -l)"
printf '  the node'"'"'s own add of the same files    %.2f s   (kubo store = %.2fx of it)\n' "$A" "$(echo "$K / $A" | bc -l)"
