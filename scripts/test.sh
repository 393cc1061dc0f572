#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run`). Installs what the tests need first.
#
# The publisher's tests build real pacman repositories (makepkg, repo-add, gpg), so pacman's
# tools come from Debian first; the kubo store's tests run a real IPFS node (js-ipfs from
# npm, on Node.js), installed next.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pacman-package-manager makepkg libarchive-tools fakeroot gnupg openssl zstd curl)
# Node.js and npm from Debian unless a Node.js is already there.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
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

# js-ipfs 0.66.1 into target/js-ipfs (about 4 minutes cold; nothing when in place).
./scripts/install-js-ipfs.sh >/dev/null

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# --include-ignored: the tests marked expensive (1 GiB vectors, 1 GiB size table) run too.
cargo test --locked --workspace -- --include-ignored
