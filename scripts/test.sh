#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run`). Installs what the tests need first.
#
# The publisher's tests build real pacman repositories (makepkg, repo-add, gpg), so pacman's
# tools come from Debian first; the kubo and cluster stores' tests run real Kubo and IPFS
# Cluster, built next with Go from the Go module proxy (scripts/go-peers/versions).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pacman-package-manager makepkg libarchive-tools fakeroot gnupg openssl zstd curl git coreutils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# Kubo and IPFS Cluster into target/go-peers/bin (minutes cold on 2 cores; nothing when in
# place). Needs Go >= the version their go.mod names (1.26.5): Debian's golang-go is older.
started=$(date +%s)
./scripts/install-go-peers.sh >/dev/null
echo "Go-built peers ready in $(( $(date +%s) - started )) s"

# A fresh resolve of the dependency tree must work (`cargo install` without --locked does
# one): no yanked crate may be required. Checked on a copy, so Cargo.lock stays as it is.
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
tar --exclude=./target --exclude=./.git --exclude=./fuzz -cf - . | tar -C "$fresh" -xf -
(cd "$fresh" && rm -f Cargo.lock && cargo generate-lockfile --quiet) \
  || { echo "cargo generate-lockfile fails on a fresh checkout (a yanked or missing crate?)" >&2; exit 1; }

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# --include-ignored: the tests marked expensive (1 GiB vectors, 1 GiB size table) run too.
cargo test --locked --workspace -- --include-ignored
