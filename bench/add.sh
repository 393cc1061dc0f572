#!/usr/bin/env bash
# Benchmark of `cidmirror add` on a large file, against the fastest SHA-256 on the machine.
#
# Prints, for a file of BENCH_MIB MiB (default 1024) with a warm page cache, the median wall
# time of BENCH_RUNS (default 3) interleaved runs of:
#   openssl dgst -sha256 FILE          (reference: one SHA-256 pass)
#   cidmirror add --only-hash FILE     (two SHA-256 passes: whole file and chunks)
#   dd of=COPY conv=fsync              (reference: writing the bytes durably)
#   cidmirror add FILE                 (import into a fresh embedded store, fsynced)
# with peak memory (max RSS) of each, and the ratios. Exits 1 if `add --only-hash` is slower
# than 1.3x openssl or uses more than 64 MiB.
set -euo pipefail

cd "$(dirname "$0")/.."
MIB=${BENCH_MIB:-1024}
RUNS=${BENCH_RUNS:-3}

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v bc >/dev/null || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release --locked --quiet
BIN=$PWD/target/release/cidmirror

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FILE=$WORK/input.bin
# Incompressible, deterministic bytes: AES-CTR keystream.
# (`head` closes the pipe early: openssl's SIGPIPE is expected; the size is checked below.)
{ openssl enc -aes-256-ctr -pass pass:cidmirror-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } \
  | head -c $((MIB << 20)) >"$FILE"
[ "$(stat -c %s "$FILE")" = $((MIB << 20)) ] || { echo "could not generate the input" >&2; exit 1; }
cat "$FILE" >/dev/null

# run NAME CMD... -> appends "wall_seconds max_rss_kib" to $WORK/NAME
run() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >"$WORK/out" 2>"$WORK/err" || {
    echo "$name failed:" >&2
    cat "$WORK/err" >&2
    exit 1
  }
  cat "$WORK/t" >>"$WORK/$name"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$WORK/$1"; }

CID=""
for i in $(seq "$RUNS"); do
  run openssl openssl dgst -sha256 "$FILE"
  run hash "$BIN" add --only-hash -Q --no-progress "$FILE"
  got=$(cat "$WORK/out")
  [ -z "$CID" ] && CID=$got
  [ "$got" = "$CID" ] || { echo "CID changed between runs: $CID vs $got" >&2; exit 1; }
  rm -f "$WORK/copy"
  run dd dd if="$FILE" of="$WORK/copy" bs=1M conv=fsync status=none
  rm -f "$WORK/copy"
  rm -rf "$WORK/data"
  run store "$BIN" --data-dir "$WORK/data" add -Q --no-progress "$FILE"
  [ "$(cat "$WORK/out")" = "$CID" ] || { echo "stored CID differs" >&2; exit 1; }
  rm -rf "$WORK/data"
done

o=$(col openssl 1 | median)
h=$(col hash 1 | median)
d=$(col dd 1 | median)
s=$(col store 1 | median)
hm=$(col hash 2 | sort -n | tail -1)
sm=$(col store 2 | sort -n | tail -1)
echo "file: $MIB MiB, $RUNS runs, medians; CID $CID"
printf '%-34s %8.2f s\n' "openssl dgst -sha256" "$o"
printf '%-34s %8.2f s  peak %6.1f MiB  ratio %.2f (limit 1.30)\n' \
  "cidmirror add --only-hash" "$h" "$(echo "$hm/1024" | bc -l)" "$(echo "$h/$o" | bc -l)"
printf '%-34s %8.2f s\n' "dd conv=fsync (durable copy)" "$d"
printf '%-34s %8.2f s  peak %6.1f MiB  ratio %.2f vs dd\n' \
  "cidmirror add (embedded store)" "$s" "$(echo "$sm/1024" | bc -l)" "$(echo "$s/$d" | bc -l)"

fail=0
if [ "$(echo "$h > 1.3 * $o" | bc -l)" = 1 ]; then echo "FAIL: add --only-hash above 1.3x openssl"; fail=1; fi
if [ "$hm" -gt $((64 * 1024)) ]; then echo "FAIL: add --only-hash peak memory above 64 MiB"; fail=1; fi
[ $fail = 0 ] && echo "PASS"
exit $fail
