#!/usr/bin/env bash
# How fast a new volunteer fills its share: `cidmirror pin --follow` with a budget that holds
# the whole repository (replication 1, alone), from first start to every file pinned, with
# --fetches 1 and with the default 4, against curl downloading the same package and
# signature files from the same publisher over one keep-alive connection (the reference:
# the bytes moved, without verifying or pinning anything).
#
#   bench/volunteer.sh       # VOL_PACKAGES=200 packages of 100-2000 KiB, BENCH_RUNS=3
#
# The publisher is `cidmirror serve` over a `mirror --once` of a generated upstream
# (bench/gen_repo.py), on 127.0.0.1. Each volunteer starts on a fresh data directory; its
# time is taken from `pin status --json` (polled every 0.1 s): every package and signature
# file pinned for the volunteer's share. Prints every run and the medians; numbers only.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${VOL_PACKAGES:-200}
RUNS=${BENCH_RUNS:-3}

command -v python3 >/dev/null && command -v curl >/dev/null && command -v jq >/dev/null || {
  apt-get install -y --no-install-recommends python3 curl jq >/dev/null
}
cargo build --release --locked --quiet
BIN=$ROOT/target/release/cidmirror

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-volunteer-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 bench/gen_repo.py init --upstream "$WORK/up" --state "$WORK/state.json" --repo extra \
  --packages "$N" --min-kib 100 --max-kib 2000 --seed volunteer-bench >"$WORK/gen"
"$BIN" --data-dir "$WORK/pub" mirror --upstream "$WORK/up" --repo extra --once --no-progress \
  >/dev/null 2>&1
FILES=$(find "$WORK/up/extra/os/x86_64" -name '*.pkg.tar.zst*' | sort)
BYTES=$(echo "$FILES" | xargs stat -c %s | awk '{s += $1} END {print s}')
COUNT=$(echo "$FILES" | wc -l)
echo "upstream: $N packages, $COUNT package and signature files, $BYTES bytes"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
# A short TTL: each fill starts once the publisher has forgotten the volunteer before it
# (a listed one would take half of the assignment).
printf '[serve]\nvolunteer_ttl = "2s"\nvolunteer_announces_per_minute = 0\nvolunteer_lists_per_minute = 0\n' \
  >"$WORK/pub.toml"
"$BIN" --data-dir "$WORK/pub" serve --config "$WORK/pub.toml" --listen "127.0.0.1:$PORT" \
  >"$WORK/pub.log" 2>&1 &
PIDS+=($!)
PUB=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -s -f -o /dev/null "$PUB/api/v1/volunteers" && break; sleep 0.1; done
KEY=$("$BIN" --data-dir "$WORK/pub" key show)

now() { date +%s.%N; }

# fill FETCHES RUN -> prints seconds until the share is held
fill() {
  local f=$1 run=$2 d=$WORK/vol-$1-$2 pid t0 st
  for _ in $(seq 100); do
    [ "$(curl -s -f "$PUB/api/v1/volunteers" | jq '.volunteers | length')" = 0 ] && break
    sleep 0.1
  done
  t0=$(now)
  "$BIN" --data-dir "$d" pin --follow "$PUB/" --publisher-key "$KEY" --budget 100G \
    --replication 1 --fetches "$f" --id "bench-$f-$run" --listen 127.0.0.1:0 \
    --heartbeat 1s --replan-every 1s >"$d.log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 6000); do
    st=$("$BIN" --data-dir "$d" pin status --json 2>/dev/null || true)
    if [ -n "$st" ] && echo "$st" | jq -e --argjson n "$COUNT" \
      '(.pinned.volunteer // 0) >= $n' >/dev/null; then
      echo "$(now) - $t0" | bc
      kill "$pid"; wait "$pid" 2>/dev/null || true
      rm -rf "$d"
      return
    fi
    sleep 0.1
  done
  echo "volunteer --fetches $f did not fill its share in 600 s; log:" >&2
  tail -20 "$d.log" >&2
  exit 1
}

URLS=()
while IFS= read -r f; do URLS+=("$PUB/extra/os/x86_64/$(basename "$f")"); done <<<"$FILES"
curl_all() {
  local t0 args=()
  for u in "${URLS[@]}"; do args+=(-o /dev/null "$u"); done
  t0=$(now)
  curl -s -f "${args[@]}"
  echo "$(now) - $t0" | bc
}

: >"$WORK/c"; : >"$WORK/f1"; : >"$WORK/f4"
curl_all >/dev/null # warm the page cache
for run in $(seq "$RUNS"); do
  curl_all >>"$WORK/c"
  fill 1 "$run" >>"$WORK/f1"
  fill 4 "$run" >>"$WORK/f4"
  printf 'run %d: curl %.2f s, volunteer --fetches 1 %.2f s, --fetches 4 %.2f s\n' "$run" \
    "$(tail -1 "$WORK/c")" "$(tail -1 "$WORK/f1")" "$(tail -1 "$WORK/f4")"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
C=$(median <"$WORK/c"); F1=$(median <"$WORK/f1"); F4=$(median <"$WORK/f4")
printf '\nmedians of %d runs, %d files, %d bytes\n' "$RUNS" "$COUNT" "$BYTES"
printf '  curl, one connection                 %6.2f s\n' "$C"
printf '  volunteer fill, --fetches 1          %6.2f s   (%.2fx curl)\n' "$F1" "$(echo "$F1 / $C" | bc -l)"
printf '  volunteer fill, --fetches 4          %6.2f s   (%.2fx curl, %.2fx faster than 1)\n' \
  "$F4" "$(echo "$F4 / $C" | bc -l)" "$(echo "$F1 / $F4" | bc -l)"
