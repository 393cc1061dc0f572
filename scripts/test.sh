#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run`). Installs what the tests need first.
#
# Today the tests need only the Rust toolchain; the end-to-end tests of later parts
# (pacman, apt, an IPFS node) install their packages here.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# --include-ignored: the tests marked expensive (1 GiB vectors, 1 GiB size table) run too.
cargo test --locked --workspace -- --include-ignored
