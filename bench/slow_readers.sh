#!/usr/bin/env bash
# Memory of `cidmirror serve` under many slow readers, and a normal client's speed meanwhile.
#
#   bench/slow_readers.sh                       # 2,000 slow readers of a 64 MiB package
#   BENCH_SLOW=500 BENCH_ROUNDS=3 bench/slow_readers.sh
#   BENCH_COMPARE_BIN=/path/to/old/cidmirror bench/slow_readers.sh   # also measure that build
#
# 1. Generates one pacman repository with bench/gen_repo.py (one package of BENCH_MIB, default
#    64 MiB, plus a few small ones) and publishes it with `cidmirror mirror --once`.
# 2. For each binary (this tree's release build, and BENCH_COMPARE_BIN if set), BENCH_ROUNDS
#    (default 3) rounds of:
#    - `cidmirror serve` on 127.0.0.1, then `curl` downloads the big package alone (the
#      reference speed of this round);
#    - BENCH_SLOW (default 2000) clients each ask for the big package with a 4 KiB receive
#      buffer and then read 1 KiB a second (a slow reader, as on a bad link or a stalled
#      pacman); once all have their first bytes, the server's RSS (VmRSS) is sampled for
#      BENCH_HOLD seconds (default 10) while `curl` downloads the big package again;
#    - the server is stopped.
# 3. Prints per binary the medians over rounds: peak VmRSS with the slow readers (MB, and per
#    slow reader in KiB), RssFile and RssAnon at that peak, the normal client's MB/s alone and
#    with the slow readers, and their ratio.
set -euo pipefail

cd "$(dirname "$0")/.."
SLOW=${BENCH_SLOW:-2000}
ROUNDS=${BENCH_ROUNDS:-3}
MIB=${BENCH_MIB:-64}
HOLD=${BENCH_HOLD:-10}

command -v python3 >/dev/null && command -v curl >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 curl >/dev/null
}

BIN=$(cargo build --release --locked --bin cidmirror --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cidmirror" and m.get("executable"):
        exe = m["executable"]
print(exe or sys.exit("no cidmirror executable built"))')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cidmirror-bench-slow.XXXXXX")
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 bench/gen_repo.py init --upstream "$WORK/up" --state "$WORK/state.json" --repo extra \
  --mix "1x$((MIB * 1024)),4x100" --seed 7 >/dev/null
CIDMIRROR_DATA_DIR="$WORK/data" "$BIN" mirror --upstream "$WORK/up" --repo extra --once \
  --no-progress >/dev/null
BIG=$(ls -S "$WORK/up/extra/os/x86_64/" | grep -v '\.sig$' | head -1)
BIG_PATH="/extra/os/x86_64/$BIG"
BIG_BYTES=$(stat -c %s "$WORK/up/extra/os/x86_64/$BIG")

# The slow readers: one process, one socket each, reading 1 KiB a second.
cat >"$WORK/slow.py" <<'EOF'
import resource, selectors, socket, sys, time
host, port, path, n, hold_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    socks.append(s)
for s in socks:
    if not s.recv(1024).startswith(b"HTTP/1.1 200"):
        sys.exit("a slow reader got no 200")
    s.setblocking(False)
open(hold_file, "w").write("ready\n")
deadline = time.time() + 600
import os
while time.time() < deadline and not os.path.exists(hold_file + ".stop"):
    for s in socks:
        try:
            s.recv(1024)
        except BlockingIOError:
            pass
    time.sleep(1)
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# one_round BIN -> "peak_rss_kib rss_file_kib rss_anon_kib alone_mbps loaded_mbps"
one_round() {
  local bin=$1 port
  port=$(free_port)
  local extra=()
  # No scrub during the measurement (builds from before the scrub lack the flag).
  "$bin" serve --help | grep -q -- --scrub-rate && extra=(--scrub-rate 0)
  CIDMIRROR_DATA_DIR="$WORK/data" "$bin" serve --listen "127.0.0.1:$port" "${extra[@]}" \
    >/dev/null 2>"$WORK/serve.err" &
  SERVE_PID=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/api/v1/snapshot/current" 2>/dev/null && break
    sleep 0.1
  done
  local alone loaded
  alone=$(curl -fsS -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port$BIG_PATH")
  rm -f "$WORK/hold" "$WORK/hold.stop"
  python3 "$WORK/slow.py" 127.0.0.1 "$port" "$BIG_PATH" "$SLOW" "$WORK/hold" &
  local slow_pid=$!
  for _ in $(seq 600); do [ -f "$WORK/hold" ] && break; sleep 0.1; done
  [ -f "$WORK/hold" ] || { echo "slow readers did not start" >&2; exit 1; }
  local peak=0 file=0 anon=0 end=$((SECONDS + HOLD))
  (curl -fsS -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port$BIG_PATH" >"$WORK/loaded") &
  local curl_pid=$!
  while [ $SECONDS -lt $end ] || kill -0 $curl_pid 2>/dev/null; do
    read -r r f a < <(awk '/^VmRSS/{r=$2} /^RssFile/{f=$2} /^RssAnon/{a=$2} END{print r, f, a}' \
      "/proc/$SERVE_PID/status")
    if [ "$r" -gt "$peak" ]; then peak=$r; file=$f; anon=$a; fi
    sleep 0.2
  done
  wait $curl_pid
  loaded=$(cat "$WORK/loaded")
  touch "$WORK/hold.stop"
  kill $slow_pid 2>/dev/null || true
  wait $slow_pid 2>/dev/null || true
  kill "$SERVE_PID"
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=
  echo "$peak $file $anon $alone $loaded"
}

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

report() {
  local name=$1 bin=$2 rows=()
  for r in $(seq "$ROUNDS"); do
    rows+=("$(one_round "$bin")")
    echo "  $name round $r: ${rows[-1]}" >&2
  done
  local col
  col() { printf '%s\n' "${rows[@]}" | awk -v c="$1" '{print $c}' | median; }
  local peak file anon alone loaded
  peak=$(col 1); file=$(col 2); anon=$(col 3); alone=$(col 4); loaded=$(col 5)
  printf '%-8s peak RSS %7.1f MB (%5.1f KiB per slow reader; file %.1f MB, anon %.1f MB); normal client alone %7.1f MB/s, with %d slow readers %7.1f MB/s (ratio %.2f)\n' \
    "$name" "$(bc -l <<<"$peak/1024")" "$(bc -l <<<"$peak/$SLOW")" "$(bc -l <<<"$file/1024")" \
    "$(bc -l <<<"$anon/1024")" "$(bc -l <<<"$alone/1000000")" "$SLOW" \
    "$(bc -l <<<"$loaded/1000000")" "$(bc -l <<<"$loaded/$alone")"
}

echo "big package: $BIG_BYTES bytes; $SLOW slow readers; $ROUNDS rounds, medians" >&2
report serve "$BIN"
if [ -n "${BENCH_COMPARE_BIN:-}" ]; then
  report serve2 "$BENCH_COMPARE_BIN"
fi
