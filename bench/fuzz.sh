#!/usr/bin/env bash
# Runs cidmirror's fuzz targets (fuzz/, cargo-fuzz and libFuzzer) one after another.
#
#   bench/fuzz.sh                     # every target, 1200 s or 10 million executions each
#   bench/fuzz.sh 180 car hamt        # these targets, 180 s (or 10 million executions) each
#
# The targets are built once (`cargo +nightly fuzz build`: optimised, AddressSanitizer, debug
# assertions and overflow checks), then each runs for SECONDS from its seed corpus
# (fuzz/corpus/<target>, only read) with its dictionary (fuzz/dict/<target>.dict, if there is
# one). What it adds to the corpus and the crashing inputs it finds go to
# target/fuzz/<target>/{corpus,artifacts}/, never into fuzz/corpus; a rerun goes on from the
# grown corpus (delete target/fuzz/ to start from the seeds). A target stops at its first
# crash. Per target it prints: executions and exec/s (libFuzzer's final stats), the corpus
# it ended with (inputs and bytes, as libFuzzer counts it), and the crashes found (new files
# in artifacts/: crash-, leak-, oom-, timeout-; reproduce one with
# `fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>`). Exit status 1 if any
# target found a crash.
#
# Environment: FUZZ_TOOLCHAIN (default nightly; another toolchain, e.g. stable, is used with
# RUSTC_BOOTSTRAP=1), FUZZ_FLAGS (more libFuzzer flags, e.g. -rss_limit_mb=4096), FUZZ_TIMEOUT
# (default 10: seconds one input may take before it counts as a hang), FUZZ_RUNS (default
# 10000000: a target stops after this many executions even if its time is not up; 0 for no
# limit but the time).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-1200}
shift || true
if ! [[ $SECONDS_EACH =~ ^[0-9]+$ ]]; then
  echo "usage: bench/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RUNS=${FUZZ_RUNS:-10000000}
if ! [[ $RUNS =~ ^[0-9]+$ ]]; then
  echo "FUZZ_RUNS must be a number of executions, not '$RUNS'" >&2
  exit 2
fi
TRIPLE=x86_64-unknown-linux-gnu
FUZZ_TARGET_DIR=$ROOT/fuzz/target
WORK=$ROOT/target/fuzz

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo_fuzz() {
  # The main workspace's CARGO_TARGET_DIR must not take the sanitizer builds.
  if [ "$TOOLCHAIN" = nightly ]; then
    env -u CARGO_TARGET_DIR cargo +nightly fuzz "$@"
  else
    env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 cargo "+$TOOLCHAIN" fuzz "$@"
  fi
}

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo_fuzz list --fuzz-dir "$ROOT/fuzz")
fi
for t in "${TARGETS[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "no fuzz target $t (fuzz/fuzz_targets/)" >&2; exit 2; }
done

echo "building ${#TARGETS[@]} target(s)" >&2
if [ $# -gt 0 ]; then
  for t in "${TARGETS[@]}"; do
    cargo_fuzz build --fuzz-dir "$ROOT/fuzz" --target-dir "$FUZZ_TARGET_DIR" "$t" >&2
  done
else
  cargo_fuzz build --fuzz-dir "$ROOT/fuzz" --target-dir "$FUZZ_TARGET_DIR" >&2
fi

results=()
failed=0
for t in "${TARGETS[@]}"; do
  dir=$WORK/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  # Temporary files of the run (the gateway target's store) stay in the work directory.
  rm -rf "$dir/tmp" && mkdir -p "$dir/tmp"
  before=$(find "$dir/artifacts" -type f | wc -l)
  args=(-max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout="$TIMEOUT"
        -artifact_prefix="$dir/artifacts/")
  [ "$RUNS" -gt 0 ] && args+=(-runs="$RUNS")
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  seeds=()
  [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
  echo "fuzzing $t for ${SECONDS_EACH}s or $RUNS executions (log: $dir/log)" >&2
  # The grown corpus comes first: libFuzzer writes new inputs into its first directory.
  set +e
  started=$(date +%s)
  # ODR reports are off as cargo fuzz has them: the bundled SQLite trips them harmlessly.
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0 TMPDIR=$dir/tmp \
    "$FUZZ_TARGET_DIR/$TRIPLE/release/$t" "${args[@]}" ${FUZZ_FLAGS:-} \
    "$dir/corpus" "${seeds[@]}" >"$dir/log" 2>&1
  status=$?
  took=$(( $(date +%s) - started ))
  set -e
  final_stat() { grep -a "^stat::$1:" "$dir/log" | tail -1 | awk '{print $2}'; }
  execs=$(final_stat number_of_executed_units)
  rate=$(final_stat average_exec_per_sec)
  corp=$(grep -ao 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$dir/log" | tail -1 | sed 's/corp: //')
  crashes=$(( $(find "$dir/artifacts" -type f | wc -l) - before ))
  if [ "$crashes" -gt 0 ] || { [ "$status" -ne 0 ] && [ -z "$execs" ]; }; then
    failed=1
  fi
  results+=("$(printf '%-16s %12s %8s %16s %8s %8s%s' "$t" "${execs:-?}" "${rate:-?}" "${corp:-?}" "$crashes" "$took" \
    "$([ "$status" -ne 0 ] && echo "  (exit $status, see $dir/log)")")")
  echo "${results[-1]}" >&2
done

printf '%-16s %12s %8s %16s %8s %8s\n' target executions exec/s "corpus (n/size)" crashes seconds
printf '%s\n' "${results[@]}"
exit "$failed"
