#!/usr/bin/env bash
# Benchmark of a follower gateway's refresh (`cidmirror serve --follow`), all on 127.0.0.1.
#
#   bench/refresh.sh                        # defaults below; numbers only, exit 0 unless a step fails
#   BENCH_ROUNDS=5 BENCH_PUSH_ROUNDS=20 bench/refresh.sh
#
# 1. Refresh bytes. bench/gen_repo.py makes one pacman repository `extra` of BENCH_PACKAGES
#    (default 15000) packages of 1-40 KiB (a refresh moves no package bytes); a publisher
#    (`mirror --once`) publishes snapshot N and `serve`s it. Two followers follow it, each
#    through its own byte-counting TCP proxy (bench/byteproxy.py): F1 with `--refresh delta`,
#    F2 with `--refresh walk` (fetch every listing block it does not hold: the naive method).
#    Once both are at N, each of BENCH_ROUNDS (default 3) rounds: reset the counters, bump
#    BENCH_BUMP (default 1% = 150) packages, publish N+k, wait until both followers are at
#    N+k, wait 1 s more, read the counters. Per round and as medians it prints the bytes from
#    the publisher to each follower (the download side; the request side too) against
#      - the full db: `extra.db` downloaded once from the publisher with curl through a third
#        proxy (what `pacman -Sy` moves from a plain mirror, counted on the wire);
#      - the physical limit: the new desc entries of the packages named by the snapshot's
#        changes.jsonl ("op" add/change), fetched from the publisher's listing
#        (/ipfs/<root>/index/extra/x86_64/<name>), summed raw and as `gzip -6` of their
#        concatenation.
#    Counted bytes are TCP payload (HTTP headers and bodies) in each direction, for every
#    connection of the follower to the publisher, its feed subscription included.
# 2. Push latency. F2 is stopped. A Python SSE reader subscribes to the publisher's /feed and
#    to F1's /feed; BENCH_PUSH_ROUNDS (default 10) times: bump BENCH_PUSH_BUMP (default 15)
#    packages, publish, and take t(F1's feed event for seq X) - t(publisher's feed event for
#    seq X), both stamped with time.monotonic() in one process as the event's first line
#    arrives. The publisher's `serve` notices a snapshot that `mirror --once` committed by
#    polling its database (<= 500 ms); the interval starts at the publisher's feed event, so
#    that poll is excluded (printed apart: from the timestamp of mirror's `published` log
#    line, written at the commit, to the publisher's event; wall clock, same machine).
#
# Environment: BENCH_PACKAGES, BENCH_BUMP, BENCH_ROUNDS, BENCH_PUSH_ROUNDS, BENCH_PUSH_BUMP,
# BENCH_TIMEOUT (default 120 s: the longest wait for a follower's refresh or a server),
# BENCH_FIRST_TIMEOUT (default 600 s: the followers' first sync, a walk of the whole listing).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${BENCH_PACKAGES:-15000}
BUMP=${BENCH_BUMP:-$((N / 100 > 0 ? N / 100 : 1))}
ROUNDS=${BENCH_ROUNDS:-3}
PUSH_ROUNDS=${BENCH_PUSH_ROUNDS:-10}
PUSH_BUMP=${BENCH_PUSH_BUMP:-15}
TIMEOUT=${BENCH_TIMEOUT:-120}
FIRST_TIMEOUT=${BENCH_FIRST_TIMEOUT:-600}
REPO=extra
ARCH=x86_64
SCRIPT_START=$(date +%s.%N)

need=()
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
command -v gzip >/dev/null || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi

# Cargo.lock is being changed by work in progress, hence no --locked. The binary is copied
# so that a concurrent build cannot swap it during the run.
# BENCH_BIN: a cidmirror binary to measure instead (e.g. one built from an older commit, for a
# before/after comparison in the same conditions).
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p cidmirror --quiet
fi

# ---------------------------------------------------------------------------------------
# Processes and temp dir, cleaned up on any exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-bench-refresh.XXXXXX")
PIDS=()
declare -A PNAME=() # pid -> name of its log, $WORK/NAME.log
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BIN=$WORK/cidmirror
cp "${BENCH_BIN:-$ROOT/target/release/cidmirror}" "$BIN"
GEN=$ROOT/bench/gen_repo.py

avail=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
need_bytes=$((N * (21 * 1024 * 3 + 2 * 4096) + (512 << 20)))
if [ "$avail" -lt "$need_bytes" ]; then
  printf 'not enough free disk in %s: %d MiB available, %d MiB needed (set TMPDIR, or lower BENCH_PACKAGES)\n' \
    "$WORK" $((avail >> 20)) $((need_bytes >> 20)) >&2
  exit 1
fi

# Three free loopback ports for the servers (bound to port 0 together, then released).
read -r P_PUB P_F1 P_F2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
PUB=http://127.0.0.1:$P_PUB
F1=http://127.0.0.1:$P_F1
F2=http://127.0.0.1:$P_F2

# start NAME CMD... : runs CMD in the background, output to $WORK/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  PNAME[$!]=$name
  LAST_PID=$!
}
# stop PID: ends one process started here and waits for it.
stop() {
  unset "PNAME[$1]"
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
nocolor() { sed -E 's/\x1b\[[0-9;]*m//g' "$@"; }
# check_alive: fails with its log if a process started here has died.
check_alive() {
  local p
  for p in "${!PNAME[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "${PNAME[$p]} (pid $p) exited; the end of its log:" >&2
      nocolor "$WORK/${PNAME[$p]}.log" | tail -40 >&2
      exit 1
    fi
  done
}
# wait_for WHAT SECONDS CMD... : until CMD succeeds (every 0.1 s), or fail after SECONDS.
wait_for() {
  local what=$1 secs=$2 t0
  shift 2
  t0=$(date +%s)
  until "$@"; do
    check_alive
    if [ $(($(date +%s) - t0)) -ge "$secs" ]; then
      echo "timed out after $secs s waiting for $what" >&2
      for n in "${PNAME[@]}"; do
        echo "--- end of $n.log:" >&2
        nocolor "$WORK/$n.log" | tail -15 >&2
      done
      exit 1
    fi
    sleep 0.1
  done
}
seq_of() { curl -sf --max-time 2 "$1/api/v1/snapshot/current" 2>/dev/null | grep -oE '"seq":[0-9]+' | cut -d: -f2 || true; }
at_seq() { [ "$(seq_of "$1")" = "$2" ]; }
root_of() { curl -sf --max-time 5 "$1/api/v1/snapshot/current" | grep -oE '"root":"[^"]+"' | cut -d'"' -f4; }
# refreshes F1|F2 -> refreshes the follower has finished (by delta + by walk; 0 if unknown),
# from the status.json it rewrites at the end of each refresh (and every 2 s)
refreshes() {
  grep -hoE '"refreshes_(delta|walk)": *[0-9]+' "$WORK/${1,,}/follow/status.json" 2>/dev/null |
    awk -F: '{t += $2} END {print t + 0}'
}

# wait_refreshed SEQ NAME... : until each follower NAME (F1, F2) serves SEQ as current and
# has finished that refresh (its count of refreshes reached EXPECT[NAME]; a follower makes
# a snapshot current before it drops the pins of older ones, and counts the refresh after).
# Sets TCUR[NAME] and TDONE[NAME]: seconds from the publisher's commit (PUB_COMMIT) to each. Gives up
# after WT (default TIMEOUT) seconds.
declare -A EXPECT=() TCUR=() TDONE=()
wait_refreshed() {
  local s=$1 t0 el f u pending
  shift
  for f in "$@"; do TCUR[$f]= TDONE[$f]=; done
  t0=$(date +%s)
  while :; do
    pending=0
    for f in "$@"; do
      u=${!f}
      el=$(echo "$(date +%s.%N) - $PUB_COMMIT" | bc)
      if [ -z "${TCUR[$f]}" ]; then
        if at_seq "$u" "$s"; then TCUR[$f]=$el; else pending=1; fi
      fi
      if [ -z "${TDONE[$f]}" ]; then
        if [ "$(refreshes "$f")" -ge "${EXPECT[$f]}" ]; then TDONE[$f]=$el; else pending=1; fi
      fi
    done
    [ "$pending" = 0 ] && return 0
    check_alive
    if [ $(($(date +%s) - t0)) -ge "${WT:-$TIMEOUT}" ]; then
      for f in "$@"; do
        u=${!f}
        echo "$f after ${WT:-$TIMEOUT} s: current snapshot $(seq_of "$u") (waiting for $s; current after ${TCUR[$f]:-never} s), $(refreshes "$f") refreshes finished (waiting for ${EXPECT[$f]})" >&2
      done
      echo "timed out after ${WT:-$TIMEOUT} s waiting for snapshot $s's refresh to finish" >&2
      for n in "${PNAME[@]}"; do
        echo "--- end of $n.log:" >&2
        nocolor "$WORK/$n.log" | tail -8 >&2
      done
      exit 1
    fi
    sleep 0.1
  done
}

kv() { awk -v k="$2" '$1 == k {print $2}' "$1"; }
HZ=$(getconf CLK_TCK)
# cpu_s PID -> CPU seconds (user + system) of that process so far (utime and stime are the
# 12th and 13th fields after the command name)
cpu_s() { sed -E 's/^.*\) //' "/proc/$1/stat" | awk -v hz="$HZ" '{printf "%.2f", ($12 + $13) / hz}'; }
fsub() { echo "$1 $2" | awk '{printf "%.2f", $1 - $2}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# col FILE NAME -> that column of a results file whose first line names the columns
col() { awk -v k="$2" 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == k) c = i; next} {print $c}' "$1"; }
med() { col "$1" "$2" | median; }
allr() { col "$1" "$2" | awk -v f="$3" '{printf "%s" f, (NR > 1 ? " / " : ""), $1}'; }
# qratio FILE A B FORMAT -> "median of the per-round ratios A/B (each round)"
qratio() {
  paste -d' ' <(col "$1" "$2") <(col "$1" "$3") | awk '{print $1 / $2}' >"$WORK/q"
  printf "$4 (%s)" "$(median <"$WORK/q")" "$(awk -v f="$4" '{printf "%s" f, (NR > 1 ? " / " : ""), $1}' "$WORK/q")"
}
kb() { echo "$1" | awk '{printf "%.1f kB", $1 / 1e3}'; }

# publish -> PUB_SEQ, PUB_ROOT, PUB_WALL (seconds), PUB_COMMIT (Unix time of its
# `published` log line, written when the snapshot is committed; mirror then runs retention)
publish() {
  local rc=0 t0 line
  t0=$(date +%s.%N)
  "$BIN" --data-dir "$WORK/pub" mirror --upstream "$WORK/upstream" --repo "$REPO" --once --no-progress \
    >"$WORK/mirror.out" 2>"$WORK/mirror.err" || rc=$?
  PUB_END=$(date +%s.%N)
  PUB_WALL=$(echo "$PUB_END - $t0" | bc)
  if [ "$rc" != 0 ]; then
    echo "cidmirror mirror --once exited $rc (0 = published expected):" >&2
    cat "$WORK/mirror.out" "$WORK/mirror.err" >&2
    exit 1
  fi
  line=$(grep '^published snapshot ' "$WORK/mirror.out") || { echo "no publish line:" >&2; cat "$WORK/mirror.out" >&2; exit 1; }
  PUB_SEQ=$(echo "$line" | awk '{print $3}')
  PUB_ROOT=$(echo "$line" | awk '{print $4}' | tr -d :)
  line=$(nocolor "$WORK/mirror.err" | grep -E '^[0-9T:.-]+Z +INFO +[^ ]+: published$' | tail -1) ||
    { echo "no 'published' log line from mirror --once:" >&2; cat "$WORK/mirror.err" >&2; exit 1; }
  PUB_COMMIT=$(date -d "${line%% *}" +%s.%N)
}

# proxy NAME -> starts a byte-counting proxy to the publisher; sets NAME_PORT, NAME_CTL
proxy() {
  local name=$1 ports
  start "$name" python3 "$ROOT/bench/byteproxy.py" --target "127.0.0.1:$P_PUB" --ready "$WORK/$name.ports"
  wait_for "proxy $name" "$TIMEOUT" test -s "$WORK/$name.ports"
  read -r ports < "$WORK/$name.ports"
  printf -v "${name}_PORT" '%s' "${ports% *}"
  printf -v "${name}_CTL" '%s' "${ports#* }"
}
# counts NAME [reset] -> "UP DOWN CONNECTIONS" of that proxy (and zeroes them with reset)
counts() {
  local ctl=${1}_CTL
  curl -sf --max-time 5 "http://127.0.0.1:${!ctl}/${2:-}"
}

# refresh_line NAME SEQ -> "METHOD DURATION BYTES" from the follower's log line for SEQ
refresh_line() {
  local l i
  for i in $(seq 20); do
    l=$(nocolor "$WORK/$1.log" | sed -nE "s/.*snapshot $2 \([^)]*\) is current: ([a-z]+) in ([^,]+), ([0-9]+) bytes fetched.*/\1 \2 \3/p" | tail -1)
    [ -n "$l" ] && break
    sleep 0.1
  done
  echo "$l"
}

echo "cidmirror refresh benchmark: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' + uncommitted changes outside bench/'); $(python3 --version); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "all on 127.0.0.1; bytes are TCP payload (HTTP headers + bodies) counted by bench/byteproxy.py; kB = 10^3 bytes"

# ---------------------------------------------------------------------------------------
# The upstream, the publisher, the proxies and the followers.
mkdir -p "$WORK/upstream"
g0=$(date +%s.%N)
python3 "$GEN" init --upstream "$WORK/upstream" --state "$WORK/state.json" --repo "$REPO" --packages "$N" \
  --min-kib 1 --max-kib 40 >"$WORK/gen"
g1=$(date +%s.%N)
publish
FIRST_SEQ=$PUB_SEQ
KEY=$("$BIN" --data-dir "$WORK/pub" key show | grep -oE '^[0-9a-f]{64}$' | head -1)
[ ${#KEY} = 64 ] || { echo "no public key from cidmirror key show" >&2; exit 1; }

start publisher "$BIN" --data-dir "$WORK/pub" serve --listen "127.0.0.1:$P_PUB"
wait_for "the publisher at snapshot $FIRST_SEQ" "$TIMEOUT" at_seq "$PUB" "$FIRST_SEQ"
proxy PX1
proxy PX2
proxy PXREF
start f1 "$BIN" --data-dir "$WORK/f1" serve --listen "127.0.0.1:$P_F1" \
  --follow "http://127.0.0.1:$PX1_PORT/" --publisher-key "$KEY" --refresh delta
F1_PID=$LAST_PID
start f2 "$BIN" --data-dir "$WORK/f2" serve --listen "127.0.0.1:$P_F2" \
  --follow "http://127.0.0.1:$PX2_PORT/" --publisher-key "$KEY" --refresh walk
F2_PID=$LAST_PID
f0=$(date +%s.%N)
EXPECT[F1]=1 EXPECT[F2]=1
WT=$FIRST_TIMEOUT wait_refreshed "$FIRST_SEQ" F1 F2
f1=$(date +%s.%N)
sleep 1
read -r _ first1 _ < <(counts PX1 reset)
read -r _ first2 _ < <(counts PX2 reset)

echo
echo "== 1. Refresh bytes: one repository '$REPO' of $(kv "$WORK/gen" packages) packages (generated in $(echo "$g1 - $g0" | bc | xargs printf '%.0f') s), $BUMP bumped per round =="
printf '  %-46s %s B min / %s avg / %s max\n' "desc entries" "$(kv "$WORK/gen" desc_min)" "$(kv "$WORK/gen" desc_avg)" "$(kv "$WORK/gen" desc_max)"
printf '  %-46s %s\n' "extra.db.tar.gz in the upstream directory" "$(kb "$(kv "$WORK/gen" db_bytes)")"
printf '  %-46s %.1f s; F1 %s, F2 %s from the publisher\n' "first sync of both followers (a walk each)" \
  "$(echo "$f1 - $f0" | bc)" "$(kb "$first1")" "$(kb "$first2")"

COLS="round seq d_up d_down d_conns w_up w_down w_conns db_wire db_file desc_n desc_raw desc_gz f1_cur f1_done f2_cur f2_done f1_cpu f2_cpu f1_log f2_log f1_db"
echo "$COLS" >"$WORK/res"
PROBLEMS=()
for r in $(seq "$ROUNDS"); do
  EXPECT[F1]=$(($(refreshes F1) + 1))
  EXPECT[F2]=$(($(refreshes F2) + 1))
  counts PX1 reset >/dev/null
  counts PX2 reset >/dev/null
  c1=$(cpu_s "$F1_PID") c2=$(cpu_s "$F2_PID")
  python3 "$GEN" bump --upstream "$WORK/upstream" --state "$WORK/state.json" --count "$BUMP" >"$WORK/bump"
  publish
  s=$PUB_SEQ
  wait_refreshed "$s" F1 F2
  sleep 1
  c1=$(fsub "$(cpu_s "$F1_PID")" "$c1") c2=$(fsub "$(cpu_s "$F2_PID")" "$c2")
  read -r d_up d_down d_conns < <(counts PX1)
  read -r w_up w_down w_conns < <(counts PX2)
  [ "$(root_of "$PUB")" = "$PUB_ROOT" ] || { echo "the publisher's current root is not $PUB_ROOT" >&2; exit 1; }
  for f in F1 F2; do
    u=${!f}
    [ "$(root_of "$u")" = "$PUB_ROOT" ] || PROBLEMS+=("round $r: $f's current root $(root_of "$u") is not the published $PUB_ROOT")
  done

  # The reference: extra.db from the publisher, as pacman -Sy downloads it from a mirror.
  counts PXREF reset >/dev/null
  curl -sf --max-time 60 -o "$WORK/db" "http://127.0.0.1:$PXREF_PORT/$REPO/os/$ARCH/$REPO.db"
  read -r _ db_wire _ < <(counts PXREF)
  db_file=$(stat -c %s "$WORK/upstream/$REPO/os/$ARCH/$REPO.db.tar.gz")
  cmp -s "$WORK/db" "$WORK/upstream/$REPO/os/$ARCH/$REPO.db.tar.gz" ||
    PROBLEMS+=("round $r: the publisher's $REPO.db differs from the upstream's $REPO.db.tar.gz")
  # The database F1 rebuilt (what pacman -Sy gets from it, locally).
  curl -sf --max-time 60 -o "$WORK/f1db" "$F1/$REPO/os/$ARCH/$REPO.db"
  f1_db=$(stat -c %s "$WORK/f1db")

  # The physical limit: the new desc entries named by changes.jsonl.
  python3 - "$PUB" "$PUB_ROOT" "$REPO" "$ARCH" "$WORK/descs" >"$WORK/desc" <<'EOF'
import json, sys, urllib.parse, urllib.request
base, root, repo, arch, out = sys.argv[1:]
get = lambda path: urllib.request.urlopen(f"{base}/ipfs/{root}/{path}", timeout=30).read()
names = []
for line in get("changes.jsonl").decode().splitlines():
    c = json.loads(line)
    if c.get("op") in ("add", "change") and c.get("name") and c["name"] not in names:
        names.append(c["name"])
total = 0
with open(out, "wb") as f:
    for n in names:
        d = get(f"index/{repo}/{arch}/{urllib.parse.quote(n)}")
        total += len(d)
        f.write(d)
print(len(names), total)
EOF
  read -r desc_n desc_raw <"$WORK/desc"
  desc_gz=$(gzip -6 -c "$WORK/descs" | wc -c)
  [ "$desc_n" = "$(kv "$WORK/bump" changed)" ] ||
    PROBLEMS+=("round $r: changes.jsonl names $desc_n packages, $(kv "$WORK/bump" changed) were bumped")
  [ "$desc_raw" = "$(kv "$WORK/bump" changed_desc_bytes)" ] ||
    PROBLEMS+=("round $r: the listing's new desc entries are $desc_raw bytes, the generator wrote $(kv "$WORK/bump" changed_desc_bytes)")

  l1=$(refresh_line f1 "$s")
  l2=$(refresh_line f2 "$s")
  l1=${l1:-none} l2=${l2:-none}
  [ "${l1%% *}" = delta ] || PROBLEMS+=("round $r: F1 (--refresh delta) reached snapshot $s by '${l1%% *}'")
  [ "${l2%% *}" = walk ] || PROBLEMS+=("round $r: F2 (--refresh walk) reached snapshot $s by '${l2%% *}'")
  echo "$r $s $d_up $d_down $d_conns $w_up $w_down $w_conns $db_wire $db_file $desc_n $desc_raw $desc_gz ${TCUR[F1]} ${TDONE[F1]} ${TCUR[F2]} ${TDONE[F2]} $c1 $c2 ${l1// /_} ${l2// /_} $f1_db" >>"$WORK/res"
  printf '  round %d: snapshot %s (mirror --once %.1f s); extra.db %s on the wire; new desc %s (gzip -6 %s)\n' \
    "$r" "$s" "$PUB_WALL" "$(kb "$db_wire")" "$(kb "$desc_raw")" "$(kb "$desc_gz")"
  printf '    F1: %s down / %s up; current %.1f s, refresh finished %.1f s after the commit; %.1f CPU s; its log: %s\n' \
    "$(kb "$d_down")" "$(kb "$d_up")" "${TCUR[F1]}" "${TDONE[F1]}" "$c1" "$l1"
  printf '    F2: %s down / %s up; current %.1f s, refresh finished %.1f s after the commit; %.1f CPU s; its log: %s\n' \
    "$(kb "$w_down")" "$(kb "$w_up")" "${TCUR[F2]}" "${TDONE[F2]}" "$c2" "$l2"
done

R=$WORK/res
echo
echo "-- medians of $ROUNDS rounds (each round in parentheses) --"
printf '  %-46s %12s   (%s)   request side %s\n' "F1 --refresh delta: publisher -> follower" "$(kb "$(med "$R" d_down)")" "$(allr "$R" d_down %d)" "$(kb "$(med "$R" d_up)")"
printf '  %-46s %12s   (%s)   request side %s\n' "F2 --refresh walk:  publisher -> follower" "$(kb "$(med "$R" w_down)")" "$(allr "$R" w_down %d)" "$(kb "$(med "$R" w_up)")"
printf '  %-46s %12s   (%s; file %s)\n' "full db: curl of extra.db, on the wire" "$(kb "$(med "$R" db_wire)")" "$(allr "$R" db_wire %d)" "$(kb "$(med "$R" db_file)")"
printf '  %-46s %12s   (%s; / upstream file %s)\n' "F1's rebuilt extra.db" "$(kb "$(med "$R" f1_db)")" "$(allr "$R" f1_db %d)" "$(qratio "$R" f1_db db_file %.2f)"
printf '  %-46s %12s   (%s) for %s packages\n' "changed desc entries, raw" "$(kb "$(med "$R" desc_raw)")" "$(allr "$R" desc_raw %d)" "$(med "$R" desc_n)"
printf '  %-46s %12s   (%s)\n' "changed desc entries, gzip -6 of them together" "$(kb "$(med "$R" desc_gz)")" "$(allr "$R" desc_gz %d)"
printf '  %-46s %s / %s\n' "TCP connections opened per round (F1 / F2)" "$(med "$R" d_conns)" "$(med "$R" w_conns)"
printf '  %-46s F1 %.1f s / %.1f s, F2 %.1f s / %.1f s\n' "current / refresh finished, after the commit" \
  "$(med "$R" f1_cur)" "$(med "$R" f1_done)" "$(med "$R" f2_cur)" "$(med "$R" f2_done)"
printf '  %-46s F1 %.1f s, F2 %.1f s\n' "follower CPU time per round (user + system)" "$(med "$R" f1_cpu)" "$(med "$R" f2_cpu)"
echo "  ratios (median of the per-round ratios; each round in parentheses):"
printf '    %-44s %s\n' "delta / full db (goal < 0.05)" "$(qratio "$R" d_down db_wire %.4f)"
printf '    %-44s %s\n' "delta / changed desc raw" "$(qratio "$R" d_down desc_raw %.3f)"
printf '    %-44s %s\n' "delta / changed desc gzip -6" "$(qratio "$R" d_down desc_gz %.3f)"
printf '    %-44s %s\n' "walk / full db" "$(qratio "$R" w_down db_wire %.4f)"
printf '    %-44s %s\n' "walk / delta" "$(qratio "$R" w_down d_down %.2f)"
for f in f1 f2; do
  python3 - "$WORK/$f/follow/status.json" "$f" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  {sys.argv[2].upper()} status.json: current {s['current'][0]}, refreshes {s['refreshes_delta']} by delta, "
      f"{s['refreshes_walk']} by walk, {s['refreshes_failed']} failed; last refresh {s['last_refresh_bytes']} bytes; "
      f"{s['refused']} refused")
EOF
done

# ---------------------------------------------------------------------------------------
# 2. Push latency: the publisher's feed event to F1's.
stop "$F2_PID"
cat >"$WORK/sse.py" <<'EOF'
import http.client, json, sys, threading, time
from urllib.parse import urlsplit

out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()

def emit(*fields):
    with lock:
        out.write(" ".join(str(f) for f in fields) + "\n")

def read(name, url):
    u = urlsplit(url)
    try:
        c = http.client.HTTPConnection(u.hostname, u.port)
        c.request("GET", u.path, headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"})
        r = c.getresponse()
        if r.status != 200:
            emit(name, "error", r.status)
            return
        emit(name, "connected")
        event, data, t = "message", [], None
        while True:
            line = r.readline()
            if not line:
                break
            if t is None:  # the first line of a block: when it arrived
                t = (time.monotonic(), time.time())
            line = line.decode().rstrip("\r\n")
            if line == "":
                if event == "snapshot" and data:
                    seq = json.loads("\n".join(data))["seq"]
                    emit(name, "snapshot", seq, f"{t[0]:.6f}", f"{t[1]:.6f}")
                event, data, t = "message", [], None
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    except Exception as e:  # reported, the benchmark then times out with the reason
        emit(name, "error", repr(e).replace(" ", "_"))
    emit(name, "eof")

threads = [threading.Thread(target=read, args=a.split("=", 1), daemon=True) for a in sys.argv[2:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
EOF
start sse python3 "$WORK/sse.py" "$WORK/sse.out" "pub=$PUB/feed" "f1=$F1/feed"
sse_has() { grep -q "^$1 $2\$" "$WORK/sse.out" 2>/dev/null; }
sse_event() { grep -q "^$1 snapshot $2 " "$WORK/sse.out" 2>/dev/null; }
wait_for "the publisher's feed" "$TIMEOUT" sse_has pub connected
wait_for "F1's feed" "$TIMEOUT" sse_has f1 connected

echo
echo "== 2. Push latency: publisher's feed event -> F1's feed event, $PUSH_ROUNDS snapshots of $PUSH_BUMP bumped packages (F2 stopped) =="
echo "  (the interval starts at the publisher's feed event: it excludes the publisher serve's <= 500 ms"
echo "   poll of its database after mirror --once commits, shown apart as 'commit -> publisher event',"
echo "   from the timestamp of mirror's 'published' log line; 'refresh finished': F1's status.json counts it)"
echo "round ms poll_ms done cpu" >"$WORK/push"
for r in $(seq "$PUSH_ROUNDS"); do
  EXPECT[F1]=$(($(refreshes F1) + 1))
  c1=$(cpu_s "$F1_PID")
  python3 "$GEN" bump --upstream "$WORK/upstream" --state "$WORK/state.json" --count "$PUSH_BUMP" >"$WORK/bump"
  publish
  s=$PUB_SEQ
  wait_for "the publisher's feed event for snapshot $s" "$TIMEOUT" sse_event pub "$s"
  wait_for "F1's feed event for snapshot $s" "$TIMEOUT" sse_event f1 "$s"
  # The next round starts once this refresh has finished (steady state, one at a time).
  wait_refreshed "$s" F1
  c1=$(fsub "$(cpu_s "$F1_PID")" "$c1")
  tp=$(awk -v s="$s" '$1 == "pub" && $2 == "snapshot" && $3 == s {print $4, $5; exit}' "$WORK/sse.out")
  tf=$(awk -v s="$s" '$1 == "f1" && $2 == "snapshot" && $3 == s {print $4; exit}' "$WORK/sse.out")
  ms=$(echo "${tp% *} $tf" | awk '{printf "%.1f", ($2 - $1) * 1000}')
  poll=$(echo "$PUB_COMMIT ${tp#* }" | awk '{printf "%.1f", ($2 - $1) * 1000}')
  l1=$(refresh_line f1 "$s")
  l1=${l1:-none}
  [ "${l1%% *}" = delta ] || PROBLEMS+=("push round $r: F1 reached snapshot $s by '${l1%% *}'")
  echo "$r $ms $poll ${TDONE[F1]} $c1" >>"$WORK/push"
  printf '  round %2d: snapshot %s: %8.1f ms   (commit -> publisher event %s ms; F1 refresh finished %.1f s after the commit, %.1f CPU s; F1 log: %s)\n' \
    "$r" "$s" "$ms" "$poll" "${TDONE[F1]}" "$c1" "$l1"
done
P=$WORK/push
printf '  %-46s %.1f ms (min %.1f, max %.1f)\n' "publisher event -> F1 event, median" "$(med "$P" ms)" \
  "$(col "$P" ms | sort -g | head -1)" "$(col "$P" ms | sort -g | tail -1)"
printf '  %-46s %.1f ms (min %.1f, max %.1f)\n' "commit -> publisher event, median" "$(med "$P" poll_ms)" \
  "$(col "$P" poll_ms | sort -g | head -1)" "$(col "$P" poll_ms | sort -g | tail -1)"
printf '  %-46s %.1f s (min %.1f, max %.1f)\n' "commit -> F1 refresh finished, median" "$(med "$P" done)" \
  "$(col "$P" done | sort -g | head -1)" "$(col "$P" done | sort -g | tail -1)"
printf '  %-46s %.1f s (min %.1f, max %.1f)\n' "F1 CPU time per round (user + system), median" "$(med "$P" cpu)" \
  "$(col "$P" cpu | sort -g | head -1)" "$(col "$P" cpu | sort -g | tail -1)"
# Peak resident memory over F1's whole life: its first sync (a walk of the whole listing),
# every refresh and the serving in between.
printf '  %-46s %s\n' "F1 peak RSS (VmHWM), first sync included" \
  "$(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$F1_PID/status" 2>/dev/null || echo '?')"

# ---------------------------------------------------------------------------------------
echo
echo "-- checks --"
for n in f1 f2 publisher; do
  fails=$(nocolor "$WORK/$n.log" | grep -E 'delta to snapshot .* failed' || true)
  # A follower answers this script's polls before its first sync with a logged 503.
  early=$(nocolor "$WORK/$n.log" | grep -cE 'WARN .*503 Service Unavailable: no snapshot has been published yet' || true)
  warns=$(nocolor "$WORK/$n.log" | grep -E '\b(WARN|ERROR)\b' | grep -vE '503 Service Unavailable: no snapshot has been published yet' || true)
  printf '  %-10s log: %d "delta ... failed" lines, %d other WARN/ERROR lines (+ %d "503 ... no snapshot has been published yet": answers to this script'"'"'s polls before the first sync)\n' "$n" \
    "$(printf '%s' "$fails" | grep -c . || true)" "$(printf '%s' "$warns" | grep -c . || true)" "$early"
  { printf '%s\n' "$fails"; printf '%s\n' "$warns"; } | { grep . || true; } | sort -u | head -20 | sed 's/^/    /'
done
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  printf '  PROBLEM: %s\n' "${PROBLEMS[@]}"
else
  echo "  no problems: every F1 refresh by delta, every F2 refresh by walk, roots and desc sizes as expected"
fi
echo
echo "total benchmark time: $(echo "$(date +%s.%N) - $SCRIPT_START" | bc | xargs printf '%.0f') s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
