#!/usr/bin/env bash
# Benchmark of the AUR source cache (`cidmirror mirror --aur-package`), all on 127.0.0.1.
#
#   bench/aur.sh                                   # defaults below
#   BENCH_AUR_BASES=200 BENCH_AUR_MAX_KIB=2048 BENCH_RUNS=5 bench/aur.sh
#
# bench/gen_aur.py makes BENCH_AUR_BASES (default 1000) package bases, each a local git
# repository whose .SRCINFO names one source of BENCH_AUR_MIN_KIB..BENCH_AUR_MAX_KIB KiB
# (default 10 KiB to 20 MiB, log-uniform) with its sha256sums and b2sums, a SKIP source and
# a git source (both skipped by the cache). Python's http.server serves the sources and
# logs each request. Then, BENCH_RUNS (default 3) times each:
#   - the reference: `curl` of every cached source's URL, 4 at once (`xargs -P4`), to
#     /dev/null: what downloading the same bytes costs without cidmirror;
#   - the first sync: `cidmirror mirror --once` of a 10-package pacman repository plus every
#     base, into a fresh data directory (embedded store, --concurrency 4; the publisher reads
#     4 bases at once), its wall time and peak RSS (/usr/bin/time), and the source requests
#     and bytes the server saw;
#   - a resync with nothing changed, and one with BENCH_AUR_CHANGED (default 1%) bases moved
#     to a new version (new source, new commit): wall time and source requests.
# It prints every run, the medians and the ratios (first sync / curl of the same sources).
#
# Environment: BENCH_AUR_BASES, BENCH_AUR_MIN_KIB, BENCH_AUR_MAX_KIB, BENCH_AUR_CHANGED,
# BENCH_RUNS, BENCH_BIN (a cidmirror binary to measure instead of building one).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${BENCH_AUR_BASES:-1000}
MINK=${BENCH_AUR_MIN_KIB:-10}
MAXK=${BENCH_AUR_MAX_KIB:-20480}
CHANGED=${BENCH_AUR_CHANGED:-$((N / 100 > 0 ? N / 100 : 1))}
RUNS=${BENCH_RUNS:-3}

need=()
for c in python3 curl git; do command -v "$c" >/dev/null || need+=("$c"); done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p cidmirror --quiet
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-bench-aur.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
BIN=$WORK/cidmirror
cp "${BENCH_BIN:-$ROOT/target/release/cidmirror}" "$BIN"

avail=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
# The sources, twice their bytes in the store at worst per run kept (one data dir at a time).
need_bytes=$((N * MAXK * 1024 / 3 + (1 << 30)))
if [ "$avail" -lt "$need_bytes" ]; then
  echo "not enough free disk in $WORK: $((avail >> 20)) MiB, ~$((need_bytes >> 20)) MiB needed" >&2
  exit 1
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kv() { awk -v k="$2" '$1 == k {print $2}' "$1"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

echo "cidmirror AUR benchmark: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)${BENCH_BIN:+ (binary $BENCH_BIN)}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(now)
python3 "$ROOT/bench/gen_aur.py" init --dir "$WORK/aur" --port "$PORT" --bases "$N" \
  --min-kib "$MINK" --max-kib "$MAXK" >"$WORK/gen"
SRC_BYTES=$(kv "$WORK/gen" source_bytes)
printf '%d package bases, %.1f MB of sources (%d-%d KiB each), generated in %.0f s\n' \
  "$N" "$(echo "$SRC_BYTES / 1000000" | bc -l)" "$MINK" "$MAXK" "$(since "$t0")"
python3 "$ROOT/bench/gen_repo.py" init --upstream "$WORK/upstream" --state "$WORK/repo.json" \
  --repo extra --packages 10 >/dev/null

(cd "$WORK/aur/sources" && exec python3 -m http.server "$PORT" --bind 127.0.0.1) 2>"$WORK/http.log" >/dev/null &
PIDS+=("$!")
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

# requests_since LINE -> "count bytes" of source GETs logged after line LINE of the log.
requests_since() {
  tail -n +"$(($1 + 1))" "$WORK/http.log" | grep -oE '"GET /[^ ]+' | sed 's|"GET /||' |
    while read -r f; do stat -c %s "$WORK/aur/sources/$f" 2>/dev/null || echo 0; done |
    awk '{n++; b+=$1} END {printf "%d %.0f\n", n, b}'
}
log_lines() { wc -l <"$WORK/http.log"; }

mirror() {
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" --data-dir "$1" mirror --once --no-progress \
    --upstream "$WORK/upstream" --repo extra --concurrency 4 \
    --aur-packages "$WORK/aur/bases" --aur-repos "$WORK/aur/repos" \
    --aur-allow-address 127.0.0.1 >"$WORK/mirror.out" 2>"$WORK/mirror.err" || {
    # 3: nothing new (the unchanged resync).
    local rc=$?
    if [ "$rc" -ne 3 ]; then
      echo "mirror failed ($rc):" >&2
      tail -n 20 "$WORK/mirror.err" "$WORK/mirror.out" >&2
      exit 1
    fi
  }
}

echo
echo "== runs =="
: >"$WORK/res"
for r in $(seq "$RUNS"); do
  t=$(now)
  xargs -P4 -n1 curl -s -o /dev/null <"$WORK/aur/urls"
  curl_s=$(since "$t")
  rm -rf "$WORK/data"
  l=$(log_lines)
  mirror "$WORK/data"
  read -r first_s first_kib < <(tail -n 1 "$WORK/time")
  read -r first_n first_b < <(requests_since "$l")
  grep -q '^published snapshot ' "$WORK/mirror.out" || { echo "run $r: nothing published" >&2; exit 1; }
  l=$(log_lines)
  mirror "$WORK/data"
  read -r same_s _ < <(tail -n 1 "$WORK/time")
  read -r same_n _ < <(requests_since "$l")
  python3 "$ROOT/bench/gen_aur.py" bump --dir "$WORK/aur" --port "$PORT" --count "$CHANGED" >"$WORK/bump"
  l=$(log_lines)
  mirror "$WORK/data"
  read -r bump_s bump_kib < <(tail -n 1 "$WORK/time")
  read -r bump_n bump_b < <(requests_since "$l")
  echo "$r $curl_s $first_s $first_kib $first_n $first_b $same_s $same_n $bump_s $bump_kib $bump_n $bump_b" >>"$WORK/res"
  printf '  run %d: curl %.1f s; first sync %.1f s, %d MiB peak RSS, %d source requests (%.1f MB); unchanged resync %.2f s, %d requests; %d bases changed: %.2f s, %d requests (%.1f MB), %d MiB\n' \
    "$r" "$curl_s" "$first_s" $((first_kib / 1024)) "$first_n" "$(echo "$first_b / 1000000" | bc -l)" \
    "$same_s" "$same_n" "$CHANGED" "$bump_s" "$bump_n" "$(echo "$bump_b / 1000000" | bc -l)" $((bump_kib / 1024))
done
col() { awk -v c="$1" '{print $c}' "$WORK/res"; }
med() { col "$1" | median; }
echo
echo "== medians of $RUNS runs =="
printf '  %-52s %8.1f s\n' "curl of the $N cached sources (4 at once)" "$(med 2)"
printf '  %-52s %8.1f s   peak RSS %d MiB; %s requests, %.1f MB (sources %.1f MB)\n' \
  "first sync (mirror --once, 4 bases at once)" "$(med 3)" $(($(med 4 | cut -d. -f1) / 1024)) \
  "$(med 5)" "$(echo "$(med 6) / 1000000" | bc -l)" "$(echo "$SRC_BYTES / 1000000" | bc -l)"
printf '  %-52s %8.2f s   %s source requests\n' "resync, nothing changed" "$(med 7)" "$(med 8)"
printf '  %-52s %8.2f s   %s source requests (%d expected), peak RSS %d MiB\n' \
  "resync, $CHANGED bases changed" "$(med 9)" "$(med 11)" "$CHANGED" $(($(med 10 | cut -d. -f1) / 1024))
awk '{print $3 / $2}' "$WORK/res" >"$WORK/q"
printf '  %-52s %.2f (%s)\n' "first sync / curl (median of per-run ratios)" "$(median <"$WORK/q")" \
  "$(awk '{printf "%s%.2f", (NR > 1 ? " / " : ""), $1}' "$WORK/q")"
echo
echo "total benchmark time: $(printf '%.0f' "$(since "$t0")") s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
