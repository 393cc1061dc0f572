#!/usr/bin/env bash
# The publisher's memory on large and hostile databases (issue 12, defect 5).
#
# 1. plain: one repository of MEM_ENTRIES (default 200000) ordinary entries (bench/gen_db.py:
#    every entry the same 1 KiB package under its own name, so the sync does what a sync of
#    that many packages does to memory without that many downloads). A first sync into a
#    fresh data directory, BENCH_RUNS (default 3) times, then a resync after a new
#    lastupdate (every entry kept: the listing against a previous snapshot of that size).
# 2. hostile: 3,000 entries whose %DESC% is 250 KiB of one letter (each desc under the
#    per-entry bound, together 770 MB in 2 MB of gzip): must be refused, naming the file.
#
# Prints the median peak RSS (/usr/bin/time) and wall time of each, and the peak RSS against
# the reference measured in the same run: the bytes of the database's desc files
# (what the publisher must at least read), per entry and as a ratio.
# BENCH_BIN=path measures another build (default: a release build of this tree).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${MEM_ENTRIES:-200000}
RUNS=${BENCH_RUNS:-3}
[ -x /usr/bin/time ] || apt-get install -y --no-install-recommends time >/dev/null

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet
  BIN=$ROOT/target/release/cidmirror
else
  BIN=$BENCH_BIN
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-mem.XXXXXX")
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

python3 bench/gen_db.py plain --upstream "$WORK/plain" --entries "$N" >"$WORK/plain.txt"
python3 bench/gen_db.py hostile --upstream "$WORK/hostile" --entries 3000 --desc-kib 250 \
  >"$WORK/hostile.txt"
unpacked=$(awk '$1 == "unpacked_bytes" {print $2}' "$WORK/plain.txt")

# run NAME DATA UPSTREAM -> "rss_kib wall exit" appended to $WORK/NAME.runs
run() {
  local name=$1 data=$2 up=$3 code=0
  /usr/bin/time -o "$WORK/time" -f "%M %e" "$BIN" --data-dir "$data" mirror --upstream "$up" \
    --repo core --once --no-progress >"$WORK/$name.out" 2>"$WORK/$name.err" || code=$?
  echo "$(cat "$WORK/time" | tail -1) $code" >>"$WORK/$name.runs"
}

for i in $(seq "$RUNS"); do
  rm -rf "$WORK/data"
  run first "$WORK/data" "$WORK/plain"
  echo 1700003600 >"$WORK/plain/lastupdate"
  run resync "$WORK/data" "$WORK/plain"
  echo 1700000000 >"$WORK/plain/lastupdate"
  rm -rf "$WORK/data-h"
  run hostile "$WORK/data-h" "$WORK/hostile"
done

report() {
  local name=$1 what=$2
  local rss wall codes
  rss=$(awk '{print $1}' "$WORK/$name.runs" | median)
  wall=$(awk '{print $2}' "$WORK/$name.runs" | median)
  codes=$(awk '{printf "%s%s", (NR > 1 ? "," : ""), $3}' "$WORK/$name.runs")
  printf '%-8s %-44s peak RSS %7.1f MB (median of %d), wall %6.2f s, exit %s\n' \
    "$name" "$what" "$(echo "$rss" | awk '{print $1 * 1024 / 1e6}')" "$RUNS" "$wall" "$codes" >&2
  echo "$rss"
}

echo "binary: $BIN"
echo "plain database: $N entries, $(awk '$1 == "db_bytes" {print $2}' "$WORK/plain.txt") bytes gzip, $unpacked bytes of desc files"
r1=$(report first "first sync of $N entries")
r2=$(report resync "resync (same entries, new lastupdate)")
report hostile "hostile: 3000 x 250 KiB %DESC%" >/dev/null
echo "hostile: $(grep -m1 -o 'its desc files add up to[^:]*' "$WORK/hostile.err" || head -c 300 "$WORK/hostile.err")"
for pair in "first $r1" "resync $r2"; do
  set -- $pair
  awk -v n="$1" -v kib="$2" -v u="$unpacked" -v e="$N" 'BEGIN {
    printf "%-8s peak RSS / desc bytes = %.2f, %.0f bytes of peak RSS per entry\n", n, kib * 1024 / u, kib * 1024 / e }'
done
