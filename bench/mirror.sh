#!/usr/bin/env bash
# Benchmark of `cidmirror mirror --once` against a generated local pacman upstream.
#
# 1. Scale: one repository `extra` of SCALE_PACKAGES (default 15000) packages made by
#    bench/gen_repo.py (realistic desc entries of ~1 KiB with %PGPSIG% and a matching .sig
#    file, package files of 1-40 KiB of random bytes, gzip .db and .files archives).
#    - first sync into a fresh data directory, BENCH_RUNS (default 3) times;
#    - then SCALE_CHANGED (default 1% = 150) packages get a new version (new file name, new
#      bytes, new desc, the old ones leave the db, lastupdate moves) and each of those data
#      directories resyncs once.
#    Prints medians of wall time and peak RSS, what was fetched, the bytes of new blocks
#    from the publish line, the data directory size, the time of each phase (from the
#    timestamped log lines), and how the resync's new blocks compare with (a) the changed
#    desc entries plus the new packages and (b) the whole compressed database.
# 2. Throughput: a first sync of THROUGHPUT_MIB (default 2048) MiB of 10 MiB incompressible
#    packages against `openssl dgst -sha256` of the same files, and a durable copy of them
#    (`dd conv=fsync` per file, as the store fsyncs every file), BENCH_RUNS interleaved runs
#    each, page cache warm.
#
# BENCH_BASE_BIN: a second cidmirror binary (e.g. built from an older commit) run in the
# same conditions, interleaved with this one (first syncs and throughput syncs); its medians
# and the ratio are printed beside this binary's.
#
# Numbers only, no pass/fail. Needs about 2.5 GiB + 3 x THROUGHPUT_MIB MiB of free disk in
# TMPDIR (checked first). Set SCALE_PACKAGES=0 or THROUGHPUT_MIB=0 to skip a part.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${SCALE_PACKAGES:-15000}
CHANGED=${SCALE_CHANGED:-$(( N / 100 > 0 ? N / 100 : 1 ))}
TMIB=${THROUGHPUT_MIB:-2048}
RUNS=${BENCH_RUNS:-3}
PKG_MIB=10 # size of each throughput package
SCRIPT_START=$(date +%s.%N)

need=()
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
command -v bc >/dev/null || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Disk: the scale part keeps the upstream and RUNS data directories (each about 1.4x the
# package bytes of ~20 KiB average, plus a 4 KiB block for every small file); the
# throughput part keeps the upstream, one data directory and one copy.
avail=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
need_bytes=$(( N * (21 * 1024 * 3 / 2 + 2 * 4096) * (RUNS + 1) + 3 * TMIB * 1048576 + (512 << 20) ))
if [ "$avail" -lt "$need_bytes" ]; then
  printf 'not enough free disk in %s: %d MiB available, %d MiB needed (set TMPDIR, or lower SCALE_PACKAGES/THROUGHPUT_MIB)\n' \
    "$WORK" $((avail >> 20)) $((need_bytes >> 20)) >&2
  exit 1
fi

cargo build --release --locked --quiet
BIN=$ROOT/target/release/cidmirror
BASE_BIN=${BENCH_BASE_BIN:-}
if [ -n "$BASE_BIN" ] && [ ! -x "$BASE_BIN" ]; then
  echo "BENCH_BASE_BIN=$BASE_BIN is not an executable" >&2
  exit 1
fi
GEN=$ROOT/bench/gen_repo.py

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$WORK/$1"; }
med() { col "$1" "$2" | median; }
allruns() { col "$1" "$2" | awk '{printf "%s%.2f", (NR > 1 ? " / " : ""), $1}'; }
mb() { echo "$1" | awk '{printf "%.2f MB", $1 / 1e6}'; }
mib() { echo "$1" | awk '{printf "%.1f MiB", $1 / 1024}'; } # from KiB
ratio() { echo "$1 $2" | awk '{printf "%.3f", $1 / $2}'; }
kv() { awk -v k="$2" '$1 == k {print $2}' "$WORK/$1"; }

# mirror NAME DATA UPSTREAM REPO -> appends to $WORK/NAME:
#   wall_s rss_kib user_s sys_s packages fetched_files fetched_bytes changes new_block_bytes
# and to $WORK/NAME.phases the seconds of each phase (see phase_header), from the log.
mirror() {
  local name=$1 data=$2 up=$3 repo=$4 t0 t1 rc=0
  t0=$(date -u +%s.%N)
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/t" \
    "${MIRROR_BIN:-$BIN}" --data-dir "$data" mirror --upstream "$up" --repo "$repo" --once --no-progress \
    >"$WORK/out" 2>"$WORK/err" || rc=$?
  t1=$(date -u +%s.%N)
  if [ "$rc" != 0 ]; then
    echo "$name: cidmirror mirror exited $rc (0 = published expected):" >&2
    cat "$WORK/out" "$WORK/err" >&2
    exit 1
  fi
  local line
  line=$(grep '^published snapshot ' "$WORK/out") || { echo "$name: no publish line" >&2; cat "$WORK/out" >&2; exit 1; }
  # published snapshot N ROOT: P packages; fetched F files (B bytes); C changes; X bytes of new blocks
  local nums
  nums=$(echo "$line" | sed -E 's/^published snapshot [0-9]+ [^:]+: ([0-9]+) packages; fetched ([0-9]+) files \(([0-9]+) bytes\); ([0-9]+) changes; ([0-9]+) bytes of new blocks$/\1 \2 \3 \4 \5/')
  [ "$(echo "$nums" | wc -w)" = 5 ] || { echo "$name: cannot parse: $line" >&2; exit 1; }
  echo "$(cat "$WORK/t") $nums" >>"$WORK/$name"
  python3 - "$t0" "$t1" "$WORK/err" >>"$WORK/$name.phases" <<'EOF'
import re, sys
from datetime import datetime
t0, t1, log = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
marks = {}
for line in open(log, encoding="utf-8", errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r"(\S+Z)\s+INFO\s+\S+:\s+(.*)$", line.rstrip("\n"))
    if not m:
        continue
    t = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    msg = m.group(2)
    key = "plan" if re.fullmatch(r"\d+ files to fetch \(\d+ bytes\)", msg) else msg
    marks.setdefault(key, t)
order = ["reading upstream state", "plan", "fetching signatures and indexing",
         "building the snapshot", "published"]
pts = [t0] + [marks.get(k) for k in order] + [t1]
if None in pts:
    print(" ".join(["nan"] * 6))
else:
    print(" ".join(f"{b - a:.3f}" for a, b in zip(pts, pts[1:])))
EOF
}
PHASES=("open store+db+key" "fetch+parse dbs, plan" "fetch packages" "sigs + index descs" "build+store listing, commit" "retention, exit")

# dusizes DATA -> "total store/files index.sqlite* publisher.sqlite*" in bytes (du -sb)
dusizes() {
  local d=$1
  echo "$(du -sb "$d" | cut -f1) $(du -sb "$d/store/files" | cut -f1) $(du -cb "$d"/store/index.sqlite* | tail -1 | cut -f1) $(du -cb "$d"/publisher.sqlite* | tail -1 | cut -f1)"
}

print_phases() {
  local name=$1 i
  for i in 1 2 3 4 5 6; do
    printf '    %-30s %8.2f s   (%s)\n' "${PHASES[$((i - 1))]}" "$(med "$name.phases" "$i")" "$(allruns "$name.phases" "$i")"
  done
}

echo "cidmirror mirror benchmark: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs of each, medians (all runs in parentheses); page cache warm; upstream is a local directory"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' + uncommitted changes outside bench/'); MB = 10^6 bytes"

# ---------------------------------------------------------------------------------------
# 1. Scale: 15,000 packages, then 1% of them change
if [ "$N" -gt 0 ]; then
  UP=$WORK/scale/upstream
  mkdir -p "$UP"
  g0=$(date +%s.%N)
  python3 "$GEN" init --upstream "$UP" --state "$WORK/scale/state.json" --repo extra --packages "$N" \
    --min-kib 1 --max-kib 40 >"$WORK/gen"
  g1=$(date +%s.%N)
  find "$UP" -type f -exec cat {} + >/dev/null
  sync
  echo
  echo "== 1. Scale: one repository 'extra' of $(kv gen packages) packages (generated in $(echo "$g1 - $g0" | bc | xargs printf '%.0f') s) =="
  printf '  %-44s %s\n' "package files (1-40 KiB random bytes)" "$(mb "$(kv gen package_bytes)") + $(kv gen packages) .sig files of 310 B"
  printf '  %-44s %s B min / %s avg / %s max (%s total)\n' "desc entries" "$(kv gen desc_min)" "$(kv gen desc_avg)" "$(kv gen desc_max)" "$(mb "$(kv gen desc_bytes)")"
  printf '  %-44s %s\n' "extra.db.tar.gz / extra.files.tar.gz" "$(mb "$(kv gen db_bytes)") / $(mb "$(kv gen files_db_bytes)")"

  for i in $(seq "$RUNS"); do
    if [ -n "$BASE_BIN" ]; then
      MIRROR_BIN=$BASE_BIN mirror base.first "$WORK/scale/base$i" "$UP" extra
    fi
    mirror first "$WORK/scale/data$i" "$UP" extra
    dusizes "$WORK/scale/data$i" >>"$WORK/first.du"
  done
  # Deleted only now: on ext4 without a journal, creating files soon after deleting many
  # is slow (each new inode skips the recently freed ones), which would burden later runs.
  rm -rf "$WORK"/scale/base*
  p=$(med first 5)
  [ "$p" = "$(kv gen packages)" ] || { echo "first sync published $p packages, expected $(kv gen packages)" >&2; exit 1; }

  echo
  echo "-- first sync into a fresh data directory --"
  printf '  %-44s %8.2f s    (%s)\n' "wall time" "$(med first 1)" "$(allruns first 1)"
  printf '  %-44s %12s  (max %s)\n' "peak RSS" "$(mib "$(med first 2)")" "$(mib "$(col first 2 | sort -n | tail -1)")"
  printf '  %-44s %8.2f s    (user %.2f + sys %.2f)\n' "CPU time" "$(echo "$(med first 3) + $(med first 4)" | bc)" "$(med first 3)" "$(med first 4)"
  if [ -n "$BASE_BIN" ]; then
    printf '  %-44s %8.2f s    (%s)   user %.2f + sys %.2f, peak RSS %s\n' "wall time of BENCH_BASE_BIN" "$(med base.first 1)" \
      "$(allruns base.first 1)" "$(med base.first 3)" "$(med base.first 4)" "$(mib "$(med base.first 2)")"
    printf '  %-44s %s\n' "wall time, this binary / BENCH_BASE_BIN" "$(ratio "$(med first 1)" "$(med base.first 1)")"
  fi
  printf '  %-44s %s\n' "packages published" "$p"
  printf '  %-44s %s files, %s   (%s MB/s of packages)\n' "fetched" "$(med first 6)" "$(mb "$(med first 7)")" \
    "$(echo "$(med first 7) $(med first 1)" | awk '{printf "%.1f", $1 / $2 / 1e6}')"
  printf '  %-44s %s\n' "new blocks (publish line)" "$(mb "$(med first 9)")"
  printf '  %-44s %s   = %s store/files + %s index.sqlite + %s publisher.sqlite\n' "data directory afterwards (du -sb)" \
    "$(mb "$(med first.du 1)")" "$(mb "$(med first.du 2)")" "$(mb "$(med first.du 3)")" "$(mb "$(med first.du 4)")"
  echo "  phases (from the log's timestamps):"
  print_phases first
  FULL_BLOCKS=$(med first 9)

  python3 "$GEN" bump --upstream "$UP" --state "$WORK/scale/state.json" --count "$CHANGED" >"$WORK/bump"
  find "$UP" -type f -exec cat {} + >/dev/null
  for i in $(seq "$RUNS"); do
    before=($(dusizes "$WORK/scale/data$i"))
    mirror resync "$WORK/scale/data$i" "$UP" extra
    after=($(dusizes "$WORK/scale/data$i"))
    echo $((after[0] - before[0])) $((after[1] - before[1])) $((after[2] - before[2])) $((after[3] - before[3])) >>"$WORK/resync.du"
  done
  f=$(med resync 6)
  [ "$f" = "$(kv bump changed)" ] || echo "  NOTE: the resync fetched $f files, $(kv bump changed) packages changed" >&2

  nb=$(med resync 9)
  a=$(( $(kv bump changed_desc_bytes) + $(kv bump new_package_bytes) ))
  b=$(kv bump db_bytes)
  echo
  echo "-- resync after $(kv bump changed) packages ($(echo "$(kv bump changed) $N" | awk '{printf "%.1f", 100 * $1 / $2}')%) got a new version --"
  printf '  %-44s %8.2f s    (%s)\n' "wall time" "$(med resync 1)" "$(allruns resync 1)"
  printf '  %-44s %12s  (max %s)\n' "peak RSS" "$(mib "$(med resync 2)")" "$(mib "$(col resync 2 | sort -n | tail -1)")"
  printf '  %-44s %8.2f s    (user %.2f + sys %.2f)\n' "CPU time" "$(echo "$(med resync 3) + $(med resync 4)" | bc)" "$(med resync 3)" "$(med resync 4)"
  printf '  %-44s %s files, %s; %s changes listed\n' "fetched" "$f" "$(mb "$(med resync 7)")" "$(med resync 8)"
  printf '  %-44s %s   (%s)\n' "new blocks written (publish line)" "$(mb "$nb")" "$(col resync 9 | paste -sd/ | sed 's|/| / |g')"
  printf '  %-44s %s   = %s store/files + %s index.sqlite + %s publisher.sqlite\n' "data directory growth (du -sb)" \
    "$(mb "$(med resync.du 1)")" "$(mb "$(med resync.du 2)")" "$(mb "$(med resync.du 3)")" "$(mb "$(med resync.du 4)")"
  echo "    (the publish line's new blocks: listing, desc entries and signatures, kept in index.sqlite;"
  echo "     package files and the db/files archives are whole files under store/files)"
  printf '  %-44s %s  = %s desc + %s packages (+ %s of .sig)\n' "(a) changed desc entries + new packages" "$(mb "$a")" \
    "$(mb "$(kv bump changed_desc_bytes)")" "$(mb "$(kv bump new_package_bytes)")" "$(mb "$(kv bump new_sig_bytes)")"
  printf '  %-44s %s  (extra.files.tar.gz: %s)\n' "(b) whole compressed db (extra.db.tar.gz)" "$(mb "$b")" "$(mb "$(kv bump files_db_bytes)")"
  printf '  %-44s %s\n' "new blocks / (a)" "$(ratio "$nb" "$a")"
  printf '  %-44s %s\n' "new blocks / changed desc bytes only" "$(ratio "$nb" "$(kv bump changed_desc_bytes)")"
  printf '  %-44s %s\n' "new blocks / (b)" "$(ratio "$nb" "$b")"
  printf '  %-44s %s\n' "new blocks / first sync's (full listing)" "$(ratio "$nb" "$FULL_BLOCKS")"
  echo "  phases (from the log's timestamps):"
  print_phases resync
  rm -rf "$WORK/scale"
fi

# ---------------------------------------------------------------------------------------
# 2. Throughput: ~2 GiB of 10 MiB packages, against openssl and a durable copy
if [ "$TMIB" -gt 0 ]; then
  count=$(( TMIB / PKG_MIB > 0 ? TMIB / PKG_MIB : 1 ))
  UP=$WORK/tp/upstream
  mkdir -p "$UP"
  python3 "$GEN" init --upstream "$UP" --state "$WORK/tp/state.json" --repo big --packages "$count" \
    --size-kib $((PKG_MIB * 1024)) --seed cidmirror-throughput >"$WORK/tgen"
  mapfile -t FILES < <(find "$UP/big/os/x86_64" -name '*.pkg.tar.zst' | sort)
  BYTES=$(kv tgen package_bytes)
  cat "${FILES[@]}" >/dev/null
  sync # the generator's dirty pages would otherwise be written back during the first run

  copy_all() {
    local dst=$1 f
    mkdir -p "$dst"
    for f in "${FILES[@]}"; do
      dd if="$f" of="$dst/${f##*/}" bs=1M conv=fsync status=none
    done
  }
  for i in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/t" openssl dgst -sha256 "${FILES[@]}" >/dev/null
    cat "$WORK/t" >>"$WORK/openssl"
    mirror tput "$WORK/tp/data" "$UP" big
    rm -rf "$WORK/tp/data"
    if [ -n "$BASE_BIN" ]; then
      MIRROR_BIN=$BASE_BIN mirror base.tput "$WORK/tp/data" "$UP" big
      rm -rf "$WORK/tp/data"
    fi
    /usr/bin/time -f "%e %M" -o "$WORK/t" bash -c "$(declare -p FILES); $(declare -f copy_all); copy_all '$WORK/tp/copy'"
    cat "$WORK/t" >>"$WORK/dd"
    rm -rf "$WORK/tp/copy"
  done
  p=$(med tput 5)
  [ "$p" = "$count" ] || { echo "throughput sync published $p packages, expected $count" >&2; exit 1; }
  o=$(med openssl 1)
  c=$(med tput 1)
  d=$(med dd 1)
  rate() { echo "$BYTES $1" | awk '{printf "%7.1f MB/s", $1 / $2 / 1e6}'; }
  echo
  echo "== 2. Throughput: first sync of $count packages of $PKG_MIB MiB incompressible bytes ($(mb "$BYTES")) =="
  printf '  %-44s %8.2f s  %s   (%s)\n' "openssl dgst -sha256 (all files)" "$o" "$(rate "$o")" "$(allruns openssl 1)"
  printf '  %-44s %8.2f s  %s   (%s)\n' "cidmirror mirror --once (fresh data dir)" "$c" "$(rate "$c")" "$(allruns tput 1)"
  printf '  %-44s user %.2f + sys %.2f s, peak RSS %s\n' "  its CPU time and memory" "$(med tput 3)" "$(med tput 4)" "$(mib "$(col tput 2 | sort -n | tail -1)")"
  printf '  %-44s %8.2f s  %s   (%s)\n' "dd conv=fsync per file (durable copy)" "$d" "$(rate "$d")" "$(allruns dd 1)"
  printf '  %-44s %s\n' "throughput cidmirror / openssl" "$(ratio "$o" "$c")"
  if [ -n "$BASE_BIN" ]; then
    printf '  %-44s %8.2f s  %s   (%s)\n' "BENCH_BASE_BIN mirror --once" "$(med base.tput 1)" "$(rate "$(med base.tput 1)")" "$(allruns base.tput 1)"
    printf '  %-44s %s\n' "throughput BENCH_BASE_BIN / openssl" "$(ratio "$o" "$(med base.tput 1)")"
  fi
  printf '  %-44s %s\n' "throughput cidmirror / durable copy" "$(ratio "$d" "$c")"
  echo "  phases (from the log's timestamps):"
  print_phases tput
  rm -rf "$WORK/tp"
fi

echo
echo "total benchmark time: $(echo "$(date +%s.%N) - $SCRIPT_START" | bc | xargs printf '%.0f') s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
