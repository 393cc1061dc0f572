#!/usr/bin/env bash
# Publishing into an IPFS node: `cidmirror mirror --once --store kubo=...` against the same
# into the embedded store, and against the node's own `add` of the same files (what earlier
# IPFS mirrors did: `ipfs add -r` of the mirror directory), on a generated upstream. Then
# the same through IPFS Cluster: `mirror --once --store cluster=...` against
# `ipfs-cluster-ctl add -r` of the same files, each into a fresh one-peer cluster (one
# `ipfs-cluster-service`, CRDT, on its own online Kubo; replication 1, so both wait for
# the same single node).
#
#   bench/kubo.sh            # KUBO_PACKAGES=1000 packages of 1-400 KiB, BENCH_RUNS=3
#   BENCH_CLUSTER=0 bench/kubo.sh    # Kubo only
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
GO_BIN=$(./scripts/install-go-peers.sh)
IPFS=$GO_BIN/ipfs
CLUSTER=${BENCH_CLUSTER:-1}
echo "$("$IPFS" version); $("$GO_BIN/ipfs-cluster-service" --version 2>&1 | head -1)"
cargo build --release --locked --quiet
BIN=$ROOT/target/release/cidmirror

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-kubo-bench.XXXXXX")
NODE_PID=
CLUSTER_PID=
cleanup() {
  [ -n "$CLUSTER_PID" ] && kill "$CLUSTER_PID" 2>/dev/null || true
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 bench/gen_repo.py init --upstream "$WORK/up" --state "$WORK/state.json" --repo extra \
  --packages "$N" --min-kib 1 --max-kib "$MAXKIB" --seed kubo-bench >"$WORK/gen"
BYTES=$(awk '$1 == "package_bytes" {print $2}' "$WORK/gen")
echo "upstream: $N packages, $BYTES bytes of packages (plus .sig files and databases)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_node DIR [online] -> sets API, API_PORT, NODE_PID
start_node() {
  local repo=$1 mode=${2:-offline} api gw swarm
  IPFS_PATH=$repo "$IPFS" init --empty-repo --profile test,unixfs-v1-2025 >/dev/null
  api=$(free_port); gw=$(free_port); swarm=$(free_port)
  IPFS_PATH=$repo "$IPFS" config Addresses.API "/ip4/127.0.0.1/tcp/$api"
  IPFS_PATH=$repo "$IPFS" config Addresses.Gateway "/ip4/127.0.0.1/tcp/$gw"
  IPFS_PATH=$repo "$IPFS" config --json Addresses.Swarm "[\"/ip4/127.0.0.1/tcp/$swarm\"]"
  IPFS_PATH=$repo "$IPFS" config Routing.Type none
  IPFS_PATH=$repo "$IPFS" config --json Provide.Enabled false
  local flags=(--offline)
  [ "$mode" = online ] && flags=()
  IPFS_PATH=$repo "$IPFS" daemon "${flags[@]}" >"$repo.log" 2>&1 &
  NODE_PID=$!
  for _ in $(seq 300); do
    grep -qs "Daemon is ready" "$repo.log" && break
    sleep 0.2
  done
  grep -q "Daemon is ready" "$repo.log" || { echo "node did not start:" >&2; cat "$repo.log" >&2; exit 1; }
  API=http://127.0.0.1:$api
  API_PORT=$api
}

# start_cluster DIR (after start_node DIR.ipfs online) -> sets REST, PROXY, CTL_HOST, CLUSTER_PID
start_cluster() {
  local dir=$1 rest proxy
  "$GO_BIN/ipfs-cluster-service" --config "$dir" init --consensus crdt >/dev/null 2>&1
  rest=$(free_port); proxy=$(free_port)
  python3 - "$dir/service.json" "$API_PORT" "$rest" "$proxy" "$(free_port)" "$(free_port)" "$(free_port)" <<'PY'
import json, sys
path, node, rest, proxy, swarm, pinsvc, prom = sys.argv[1:]
c = json.load(open(path))
t = lambda p: f"/ip4/127.0.0.1/tcp/{p}"
c["cluster"]["listen_multiaddress"] = [t(swarm)]
c["cluster"]["mdns_interval"] = "0s"
c["api"]["restapi"]["http_listen_multiaddress"] = t(rest)
c["api"]["ipfsproxy"]["listen_multiaddress"] = t(proxy)
c["api"]["ipfsproxy"]["node_multiaddress"] = t(node)
c["api"]["pinsvcapi"]["http_listen_multiaddress"] = t(pinsvc)
c["ipfs_connector"]["ipfshttp"]["node_multiaddress"] = t(node)
c["observations"]["metrics"]["prometheus_endpoint"] = t(prom)
json.dump(c, open(path, "w"), indent=1)
PY
  "$GO_BIN/ipfs-cluster-service" --config "$dir" daemon >"$dir.log" 2>&1 &
  CLUSTER_PID=$!
  for _ in $(seq 600); do
    grep -qs "IPFS Cluster is READY" "$dir.log" && break
    sleep 0.2
  done
  grep -q "IPFS Cluster is READY" "$dir.log" || { echo "cluster did not start:" >&2; cat "$dir.log" >&2; exit 1; }
  # A pin is refused until the peer's own free-space metric is in.
  for _ in $(seq 300); do
    [ "$(curl -s "http://127.0.0.1:$rest/monitor/metrics/freespace" | python3 -c 'import json,sys; print(len(json.load(sys.stdin) or []))' 2>/dev/null)" -ge 1 ] 2>/dev/null && break
    sleep 0.2
  done
  REST=http://127.0.0.1:$rest
  PROXY=http://127.0.0.1:$proxy
  CTL_HOST=/ip4/127.0.0.1/tcp/$rest
}

stop_cluster() { kill "$CLUSTER_PID" 2>/dev/null || true; wait "$CLUSTER_PID" 2>/dev/null || true; CLUSTER_PID=; }

stop_node() { kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }

now() { date +%s.%N; }
root_of() { awk '/^published snapshot/ {sub(":", "", $4); print $4}' "$1"; }

: >"$WORK/emb"; : >"$WORK/kubo"; : >"$WORK/add"; : >"$WORK/cl"; : >"$WORK/cladd"
: >"$WORK/kratio"; : >"$WORK/cratio"
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
  printf 'run %d: embedded %.2f s, kubo %.2f s, node add %.2f s' "$run" \
    "$(tail -1 "$WORK/emb")" "$(tail -1 "$WORK/kubo")" "$(tail -1 "$WORK/add")"
  # The ratio within the run too: on a noisy machine the two times of one run are
  # measured under the same load, the medians of each column are not.
  echo "$(tail -1 "$WORK/kubo") / $(tail -1 "$WORK/add")" | bc -l >>"$WORK/kratio"

  if [ "$CLUSTER" != 0 ]; then
    start_node "$WORK/cn$run.ipfs" online
    start_cluster "$WORK/cn$run"
    t0=$(now)
    "$BIN" --data-dir "$WORK/c$run" --store "cluster=$REST,proxy=$PROXY,replication-min=1,replication-max=1" \
      mirror --upstream "$WORK/up" --repo extra --once --no-progress >"$WORK/c.out" 2>"$WORK/c.err" \
      || { echo "mirror --store cluster failed:" >&2; cat "$WORK/c.err" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$WORK/cl"
    [ "$(root_of "$WORK/e.out")" = "$(root_of "$WORK/c.out")" ] || {
      echo "roots differ: embedded $(root_of "$WORK/e.out"), cluster $(root_of "$WORK/c.out")" >&2; exit 1; }
    stop_cluster; stop_node

    # The cluster's own add of the same directory (cid v1, raw leaves, 1 MiB chunks, as the
    # publisher's profile; ctl has no flag for the profile's directory settings, which
    # only change the few directory nodes), pinned with replication 1.
    start_node "$WORK/cadd$run.ipfs" online
    start_cluster "$WORK/cadd$run"
    t0=$(now)
    "$GO_BIN/ipfs-cluster-ctl" --host "$CTL_HOST" add -r -Q --cid-version 1 --raw-leaves \
      --chunker size-1048576 --replication-min 1 --replication-max 1 "$WORK/up/extra" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$WORK/cladd"
    stop_cluster; stop_node
    printf ', cluster %.2f s, ipfs-cluster-ctl add %.2f s' "$(tail -1 "$WORK/cl")" "$(tail -1 "$WORK/cladd")"
    echo "$(tail -1 "$WORK/cl") / $(tail -1 "$WORK/cladd")" | bc -l >>"$WORK/cratio"
  fi
  echo
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
E=$(median <"$WORK/emb"); K=$(median <"$WORK/kubo"); A=$(median <"$WORK/add")
printf '\nmedians of %d runs, %d packages, same root CID in every run\n' "$RUNS" "$N"
printf '  mirror --once, embedded store          %.2f s\n' "$E"
printf '  mirror --once, --store kubo            %.2f s   (%.2fx embedded)\n' "$K" "$(echo "$K / $E" | bc -l)"
printf '  the node'"'"'s own add of the same files    %.2f s   (kubo store = %.2fx of it; median of the runs'"'"' own ratios %.2fx)\n' "$A" "$(echo "$K / $A" | bc -l)" "$(median <"$WORK/kratio")"
if [ "$CLUSTER" != 0 ]; then
  C=$(median <"$WORK/cl"); CA=$(median <"$WORK/cladd")
  printf '  mirror --once, --store cluster         %.2f s   (%.2fx embedded)\n' "$C" "$(echo "$C / $E" | bc -l)"
  printf '  ipfs-cluster-ctl add -r of the same    %.2f s   (cluster store = %.2fx of it; median of the runs'"'"' own ratios %.2fx)\n' "$CA" "$(echo "$C / $CA" | bc -l)" "$(median <"$WORK/cratio")"
fi
