#!/usr/bin/env bash
# Load benchmark of `cidmirror serve` against nginx and apt-cacher-ng, in one run.
#
#   bench/serve.sh                      # defaults below; numbers only, exit 0 unless a step fails
#   BENCH_ROUNDS=5 BENCH_REQUESTS=40 bench/serve.sh
#
# 1. Generates one pacman repository `extra` with bench/gen_repo.py: BENCH_SMALL (default
#    200) packages of 100 KiB and BENCH_BIG (default 20) of 20 MiB, random bytes, in a
#    seeded order; mirrors it with `cidmirror mirror --once` into a fresh data directory.
# 2. Starts, all on 127.0.0.1:
#    - `cidmirror serve` over that data directory (its tokio runtime: one worker per core);
#    - nginx serving the generated upstream directory (a private config: worker_processes =
#      NGINX_WORKERS, default the number of cores like serve's runtime, sendfile and
#      tcp_nopush on, access_log off as serve logs no requests by default, default
#      keepalive); a second nginx `server` on another port (same root, access log on) is
#      apt-cacher-ng's upstream, so the log shows what the cache fetched;
#    - apt-cacher-ng (private config: `Remap-arch: /arch ; http://127.0.0.1:UPSTREAM/`),
#      filled by one pass of downloads through it.
# 3. One warm pass of every file through each server (page cache, caches), then
#    BENCH_ROUNDS (default 5) rounds; each round runs the load generator
#    (resolver/benches/load.rs) once against each server, the order rotating every round,
#    with the same seeded request mix for every server (seed = BENCH_SEED + round):
#    BENCH_CLIENTS (default 64) clients on keep-alive connections, each downloading
#    BENCH_REQUESTS (default 40) packages, BENCH_BIG_FRACTION (default 0.1) of them big.
#    Every response is checked (status, length, first bytes); a failed request fails the run.
# 4. Prints per server the medians over the rounds of throughput (MB/s = 10^6 bytes of
#    package bodies / wall time of the run), time to first body byte (p50, p99 over all
#    requests of a run), total time of small and big downloads, CPU seconds of the server
#    and of the load generator per run, and how long the server's threads waited for a CPU;
#    the throughput ratios serve/nginx and serve/acng (ratio of the medians, and the median
#    of the per-round ratios), p99 TTFB of serve next to the others'; serve's peak RSS
#    (VmHWM, which also counts the page-cache pages of the files it maps) and its peak
#    anonymous memory (sampled). apt-cacher-ng's upstream requests during the measured
#    rounds are counted from the upstream's access log (0 = the cache was warm).
#
# BENCH_COMPARE_BIN=PATH adds a fourth server, `serve2`: another cidmirror binary (say, a
# build from before a change) serving the same upstream from a data directory it mirrored
# itself (an older build may not open a newer one's database), measured in every round
# like the others, with the ratio serve/serve2.
#
# The load generator runs on BENCH_LOAD_THREADS (default 1) threads and shares the machine
# with the server under test (2 cores on the reference machine). Everything is CPU-bound:
# a server that needs less CPU per byte leaves more to the client. With one thread the
# client is the limit for nginx (its CPU time is about the wall time); BENCH_LOAD_THREADS=2
# shows the other side, where serve's extra copy per byte (hyper cannot sendfile) counts.
#
# apt-cacher-ng 3.7 notes: its port must be below 32768 (kept in a signed 16-bit number,
# "Error resolving address for binding" otherwise), and its SocketPath is set into the temp
# dir, or it replaces the system's /run/apt-cacher-ng/socket.
#
# Needs about 3.5x the package bytes (~1.5 GiB) of free disk in TMPDIR (one more copy with
# BENCH_COMPARE_BIN).
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-5}
CLIENTS=${BENCH_CLIENTS:-64}
REQUESTS=${BENCH_REQUESTS:-40}
BIG_FRACTION=${BENCH_BIG_FRACTION:-0.1}
SMALL=${BENCH_SMALL:-200}
BIG=${BENCH_BIG:-20}
SMALL_KIB=100
BIG_KIB=20480
SEED=${BENCH_SEED:-1}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
LOAD_THREADS=${BENCH_LOAD_THREADS:-1}
REPO=extra
SCRIPT_START=$(date +%s.%N)

# ---------------------------------------------------------------------------------------
# What it needs, from Debian.
need=()
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v ps >/dev/null || need+=(procps)
command -v bc >/dev/null || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v apt-cacher-ng >/dev/null || [ -x /usr/sbin/apt-cacher-ng ] || need+=(apt-cacher-ng)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ACNG=$(command -v apt-cacher-ng || echo /usr/sbin/apt-cacher-ng)

# ---------------------------------------------------------------------------------------
# Build: the binary and the load generator, paths from cargo itself (CARGO_TARGET_DIR etc).
# exe_of TARGET_NAME < cargo's JSON messages -> the executable's path
exe_of() {
  python3 -c '
import json, sys
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        exe = m["executable"]
if not exe:
    sys.exit("cargo built no executable named " + sys.argv[1])
print(exe)' "$1"
}
BIN=$(cargo build --release --locked --bin cidmirror --message-format=json-render-diagnostics | exe_of cidmirror)
LOAD=$(cargo build --release --locked -p cidmirror-resolver --bench load --message-format=json-render-diagnostics | exe_of load)

# ---------------------------------------------------------------------------------------
# Processes and temp dir, cleaned up on any exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-bench-serve.XXXXXX")
PIDS=()
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

avail=$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')
pkg_bytes=$(( (SMALL * SMALL_KIB + BIG * BIG_KIB) * 1024 ))
need_bytes=$(( pkg_bytes * 7 / 2 + (256 << 20) ))
if [ "$avail" -lt "$need_bytes" ]; then
  printf 'not enough free disk in %s: %d MiB available, %d MiB needed (set TMPDIR)\n' \
    "$WORK" $((avail >> 20)) $((need_bytes >> 20)) >&2
  exit 1
fi

# Five free loopback ports (bound and released at once; nothing else is expected to race).
# Below 32768: apt-cacher-ng 3.7 keeps its port in a signed 16-bit number.
read -r P_SERVE P_NGINX P_UPSTREAM P_ACNG P_SERVE2 < <(python3 -c '
import random, socket
ports = []
while len(ports) < 5:
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    if p not in ports:
        ports.append(p)
print(*ports)')

# wait_http URL NAME PID: until URL answers 200, or fail if PID died or 30 s passed.
wait_http() {
  local url=$1 name=$2 pid=$3 i
  for i in $(seq 300); do
    if curl -sf -o /dev/null --max-time 2 "$url"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "$name exited; its log:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not answer $url within 30 s; its log:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
# The upstream and the mirror.
UP=$WORK/upstream
PKGDIR=$UP/$REPO/os/x86_64
mkdir -p "$UP"
python3 bench/gen_repo.py init --upstream "$UP" --state "$WORK/state.json" --repo "$REPO" \
  --mix "${SMALL}x${SMALL_KIB},${BIG}x${BIG_KIB}" --seed cidmirror-serve-bench >"$WORK/gen"
kv() { awk -v k="$2" '$1 == k {print $2}' "$1"; }
[ "$(kv "$WORK/gen" package_bytes)" = "$pkg_bytes" ] || { echo "generated $(kv "$WORK/gen" package_bytes) bytes, expected $pkg_bytes" >&2; exit 1; }
DATA=$WORK/data
rc=0
"$BIN" --data-dir "$DATA" mirror --upstream "$UP" --repo "$REPO" --once --no-progress \
  >"$WORK/mirror.out" 2>"$WORK/mirror.err" || rc=$?
if [ "$rc" != 0 ]; then
  echo "cidmirror mirror --once exited $rc (0 = published expected):" >&2
  cat "$WORK/mirror.out" "$WORK/mirror.err" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------
# The three servers.
"$BIN" --data-dir "$DATA" serve --listen "127.0.0.1:$P_SERVE" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
SERVERS=(serve nginx acng)
if [ -n "${BENCH_COMPARE_BIN:-}" ]; then
  DATA2=$WORK/data2
  "$BENCH_COMPARE_BIN" --data-dir "$DATA2" mirror --upstream "$UP" --repo "$REPO" --once \
    --no-progress >"$WORK/mirror2.out" 2>"$WORK/mirror2.err" || {
    echo "$BENCH_COMPARE_BIN mirror --once failed:" >&2
    cat "$WORK/mirror2.out" "$WORK/mirror2.err" >&2
    exit 1
  }
  "$BENCH_COMPARE_BIN" --data-dir "$DATA2" serve --listen "127.0.0.1:$P_SERVE2" >"$WORK/serve2.log" 2>&1 &
  SERVE2_PID=$!
  PIDS+=("$SERVE2_PID")
  SERVERS+=(serve2)
fi

mkdir -p "$WORK/nginx"
{
  [ "$(id -u)" = 0 ] && echo "user root;" # the workers read the 0700 temp dir
  cat <<EOF
worker_processes $NGINX_WORKERS;
daemon off;
master_process on;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    # The reference: a plain directory.
    server {
        listen 127.0.0.1:$P_NGINX;
        root $UP;
        access_log off;
    }
    # apt-cacher-ng's upstream: the same directory, every request logged.
    server {
        listen 127.0.0.1:$P_UPSTREAM;
        root $UP;
        access_log $WORK/nginx/upstream.log;
    }
}
EOF
} >"$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

mkdir -p "$WORK/acng/conf" "$WORK/acng/cache" "$WORK/acng/log"
cat >"$WORK/acng/conf/acng.conf" <<EOF
CacheDir: $WORK/acng/cache
LogDir: $WORK/acng/log
SupportDir: /usr/lib/apt-cacher-ng
BindAddress: 127.0.0.1
Port: $P_ACNG
ForeGround: 1
SocketPath: $WORK/acng/socket
Remap-arch: /arch ; http://127.0.0.1:$P_UPSTREAM/
VfilePatternEx: \.(db|files)(\.tar(\.(gz|xz|zst|bz2))?)?\.sig$
EOF
"$ACNG" -c "$WORK/acng/conf" >"$WORK/acng.log" 2>&1 &
ACNG_PID=$!
PIDS+=("$ACNG_PID")

FIRST=$(find "$PKGDIR" -name '*.pkg.tar.zst' -printf '%f\n' | sort | sed -n 1p)
declare -A BASE=(
  [serve]="http://127.0.0.1:$P_SERVE/$REPO/os/x86_64/"
  [nginx]="http://127.0.0.1:$P_NGINX/$REPO/os/x86_64/"
  [acng]="http://127.0.0.1:$P_ACNG/arch/$REPO/os/x86_64/"
  [serve2]="http://127.0.0.1:$P_SERVE2/$REPO/os/x86_64/"
)
declare -A PID=([serve]=$SERVE_PID [nginx]=$NGINX_PID [acng]=$ACNG_PID [serve2]=${SERVE2_PID:-})
for s in "${SERVERS[@]}"; do
  wait_http "${BASE[$s]}$FIRST" "$s" "${PID[$s]}"
  curl -sf -o "$WORK/check" "${BASE[$s]}$FIRST"
  cmp -s "$WORK/check" "$PKGDIR/$FIRST" || { echo "$s served different bytes for $FIRST" >&2; exit 1; }
done
rm -f "$WORK/check"

# ---------------------------------------------------------------------------------------
# Measuring.

# cpu_ticks NAME -> clock ticks (user + system) of the server's processes so far: the
# process itself and its children (nginx's workers).
cpu_ticks() {
  local pid=${PID[$1]} kids
  kids=$(ps -o pid= --ppid "$pid" || true)
  # utime and stime are the 12th and 13th fields after the command name (which may hold
  # spaces); a process that is gone counts 0.
  for p in "$pid" $kids; do cat /proc/"$p"/stat 2>/dev/null || true; done |
    sed -E 's/^.*\) //' | awk '{t += $12 + $13} END {print t + 0}'
}
HZ=$(getconf CLK_TCK)

# runq_ns NAME -> nanoseconds the server's threads (those alive now) have spent runnable
# but waiting for a CPU (/proc/*/task/*/schedstat, second field).
runq_ns() {
  local pid=${PID[$1]} p
  for p in "$pid" $(ps -o pid= --ppid "$pid" || true); do
    cat /proc/"$p"/task/*/schedstat 2>/dev/null || true
  done | awk '{t += $2} END {printf "%.0f", t + 0}'
}

KEYS=(mb_s ttfb_p50_ms ttfb_p99_ms small_total_p50_ms big_total_p50_ms req_s requests bytes)
# load NAME SEED [ARGS...] -> appends to $WORK/res.NAME: the KEYS, then server CPU s, load
# generator CPU s and the seconds the server's threads waited for a CPU, during the run.
load() {
  local name=$1 seed=$2 c0 c1 w0 w1 rc=0 k line=""
  shift 2
  c0=$(cpu_ticks "$name")
  w0=$(runq_ns "$name")
  /usr/bin/time -f "%U %S" -o "$WORK/time" \
    "$LOAD" --base "${BASE[$name]}" --dir "$PKGDIR" --clients "$CLIENTS" --requests "$REQUESTS" \
    --big-fraction "$BIG_FRACTION" --big-min $(((SMALL_KIB + BIG_KIB) * 512)) --seed "$seed" --threads "$LOAD_THREADS" "$@" \
    >"$WORK/load.out" 2>"$WORK/load.err" || rc=$?
  c1=$(cpu_ticks "$name")
  w1=$(runq_ns "$name")
  if [ "$rc" != 0 ]; then
    echo "load generator against $name exited $rc:" >&2
    cat "$WORK/load.err" >&2
    exit 1
  fi
  kill -0 "${PID[$name]}" 2>/dev/null || { echo "$name died:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  for k in "${KEYS[@]}"; do
    line+="$(kv "$WORK/load.out" "$k") "
  done
  line+="$(echo "$c0 $c1 $HZ" | awk '{printf "%.2f", ($2 - $1) / $3}') "
  line+="$(awk '{printf "%.2f", $1 + $2}' "$WORK/time") "
  line+="$(echo "$w0 $w1" | awk '{d = ($2 - $1) / 1e9; printf "%.2f", (d > 0 ? d : 0)}') "
  line+="$(kv "$WORK/load.out" retries) $(kv "$WORK/load.out" reconnects)"
  echo "$line" >>"$WORK/res.$name"
  printf '  %-6s %s\n' "$name" "$(sed -n 1p "$WORK/load.err")"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# med NAME COLUMN -> median over the rounds
med() { awk -v c="$2" '{print $c}' "$WORK/res.$1" | median; }
# all NAME COLUMN FORMAT -> every round's value
all() { awk -v c="$2" -v f="$3" '{printf "%s" f, (NR > 1 ? " " : ""), $c}' "$WORK/res.$1"; }
# pratio A B COLUMN -> median of the per-round ratios A/B
pratio() { paste -d' ' <(awk -v c="$3" '{print $c}' "$WORK/res.$1") <(awk -v c="$3" '{print $c}' "$WORK/res.$2") | awk '{print $1 / $2}' | median; }
ratio() { echo "$1 $2" | awk '{printf "%.3f", $1 / $2}'; }

echo "cidmirror serve load benchmark: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' + uncommitted changes outside bench/'); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), apt-cacher-ng $(dpkg-query -W -f '${Version}' apt-cacher-ng 2>/dev/null || echo '?')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "files: $SMALL x $SMALL_KIB KiB + $BIG x $BIG_KIB KiB = $(echo "$pkg_bytes" | awk '{printf "%.1f MB", $1 / 1e6}'); $CLIENTS clients x $REQUESTS requests per run, $BIG_FRACTION of them big; nginx worker_processes $NGINX_WORKERS; load generator threads $LOAD_THREADS"

echo
echo "-- filling apt-cacher-ng's cache (one pass of every file through it) --"
load acng 0 --warm
rm -f "$WORK/res.acng"
sleep 1 # acng finishes writing its cache entries
acng_cached=$(du -sb "$WORK/acng/cache" | cut -f1)
echo "  apt-cacher-ng cache: $(echo "$acng_cached" | awk '{printf "%.1f MB", $1 / 1e6}') (packages: $(echo "$pkg_bytes" | awk '{printf "%.1f MB", $1 / 1e6}')); upstream requests so far: $(wc -l <"$WORK/nginx/upstream.log")"

# serve's peak anonymous memory, sampled every 0.2 s from here on (VmHWM also counts the
# page-cache pages of the files it has mapped, which are shared and reclaimable).
(
  peak=0
  while a=$(awk '$1 == "RssAnon:" {print $2}' /proc/"$SERVE_PID"/status 2>/dev/null) && [ -n "$a" ]; do
    if [ "$a" -gt "$peak" ]; then peak=$a; echo "$peak" >"$WORK/anon.peak"; fi
    sleep 0.2
  done
) &
PIDS+=("$!")

echo
echo "-- one warm pass of every file through each server --"
for s in "${SERVERS[@]}"; do
  load "$s" 0 --warm
  rm -f "$WORK/res.$s"
done
up_before=$(wc -l <"$WORK/nginx/upstream.log")

for r in $(seq "$ROUNDS"); do
  echo
  echo "-- round $r of $ROUNDS (seed $((SEED + r))) --"
  for i in "${!SERVERS[@]}"; do
    s=${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}
    load "$s" $((SEED + r))
  done
done
up_after=$(wc -l <"$WORK/nginx/upstream.log")
hwm=$(awk '$1 == "VmHWM:" {print $2}' /proc/"$SERVE_PID"/status)
anon=$(cat "$WORK/anon.peak")
rssfile=$(awk '$1 == "RssFile:" {print $2}' /proc/"$SERVE_PID"/status)

# ---------------------------------------------------------------------------------------
# Results.
echo
echo "== medians of $ROUNDS rounds (every round in parentheses); MB = 10^6 bytes =="
printf '  %-6s %8s %10s %10s %10s %9s %8s %8s %8s  %s\n' server "MB/s" "TTFB p50" "TTFB p99" "small p50" "big p50" \
  "srv CPU" "gen CPU" "srv wait" "MB/s per round"
for s in "${SERVERS[@]}"; do
  printf '  %-6s %8.1f %8.2fms %8.2fms %8.2fms %7.0fms %7.2fs %7.2fs %7.2fs  (%s)\n' "$s" \
    "$(med "$s" 1)" "$(med "$s" 2)" "$(med "$s" 3)" "$(med "$s" 4)" "$(med "$s" 5)" \
    "$(med "$s" 9)" "$(med "$s" 10)" "$(med "$s" 11)" "$(all "$s" 1 '%.0f')"
done
echo "  (TTFB: request sent to first body byte, per run over all its requests; small/big: whole"
echo "   download; srv CPU / gen CPU: CPU seconds of the server / the load generator during a run;"
echo "   srv wait: seconds the server's threads were runnable but waiting for a CPU)"
for s in "${SERVERS[@]}"; do
  printf '  %-6s TTFB p99 per round: %s ms; %s requests of %s MB per run; retried %s, reconnects %s (all rounds)\n' \
    "$s" "$(all "$s" 3 '%.2f')" "$(med "$s" 7)" "$(echo "$(med "$s" 8)" | awk '{printf "%.1f", $1 / 1e6}')" \
    "$(awk '{t += $12} END {print t + 0}' "$WORK/res.$s")" "$(awk '{t += $13} END {print t + 0}' "$WORK/res.$s")"
done
echo
printf '  %-48s %s   (median of per-round ratios %.3f)\n' "throughput serve / nginx (goal >= 0.9)" \
  "$(ratio "$(med serve 1)" "$(med nginx 1)")" "$(pratio serve nginx 1)"
printf '  %-48s %s   (median of per-round ratios %.3f)\n' "throughput serve / apt-cacher-ng" \
  "$(ratio "$(med serve 1)" "$(med acng 1)")" "$(pratio serve acng 1)"
printf '  %-48s %.2f ms vs %.2f ms (ratio %s)\n' "p99 TTFB serve vs nginx" "$(med serve 3)" "$(med nginx 3)" \
  "$(ratio "$(med serve 3)" "$(med nginx 3)")"
printf '  %-48s %.2f ms vs %.2f ms (ratio %s)\n' "p99 TTFB serve vs apt-cacher-ng" "$(med serve 3)" "$(med acng 3)" \
  "$(ratio "$(med serve 3)" "$(med acng 3)")"
if [ -n "${BENCH_COMPARE_BIN:-}" ]; then
  printf '  %-48s %s   (median of per-round ratios %.3f)\n' "throughput serve / serve2" \
    "$(ratio "$(med serve 1)" "$(med serve2 1)")" "$(pratio serve serve2 1)"
  printf '  %-48s %.2f ms vs %.2f ms (ratio %s)\n' "p99 TTFB serve vs serve2" "$(med serve 3)" "$(med serve2 3)" \
    "$(ratio "$(med serve 3)" "$(med serve2 3)")"
fi
cpu_per_gb() { awk '{print $9 / ($8 / 1e9)}' "$WORK/res.$1" | median | xargs printf '%.2f\n'; }
printf '  %-48s %s\n' "server CPU s per GB served ($(IFS=/; echo "${SERVERS[*]}"))" \
  "$(for s in "${SERVERS[@]}"; do cpu_per_gb "$s"; done | paste -sd/ | sed 's|/| / |g')"
# On loopback the kernel's receive work for a connection is charged to whichever side runs
# it (the sender while it pushes, else the reader), so server CPU alone depends on how the
# server writes: this one counts the load generator too.
all_cpu_per_gb() { awk '{print ($9 + $10) / ($8 / 1e9)}' "$WORK/res.$1" | median | xargs printf '%.2f\n'; }
printf '  %-48s %s\n' "server + load generator CPU s per GB" \
  "$(for s in "${SERVERS[@]}"; do all_cpu_per_gb "$s"; done | paste -sd/ | sed 's|/| / |g')"
printf '  %-48s %.1f MiB (peak RssAnon %.1f MiB; RssFile %.1f MiB at the end)\n' "serve peak RSS (VmHWM)" \
  "$(echo "$hwm / 1024" | bc -l)" "$(echo "$anon / 1024" | bc -l)" "$(echo "$rssfile / 1024" | bc -l)"
printf '  %-48s %d\n' "apt-cacher-ng upstream requests while measured" $((up_after - up_before))
echo
echo "total benchmark time: $(echo "$(date +%s.%N) - $SCRIPT_START" | bc | xargs printf '%.0f') s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
