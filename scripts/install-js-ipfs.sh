#!/usr/bin/env bash
# Installs js-ipfs 0.66.1 (a real IPFS node speaking Kubo's HTTP RPC API) from the npm
# registry into target/js-ipfs, for the tests of the kubo store. Idempotent: does nothing
# when the installed copy matches scripts/js-ipfs/package-lock.json.
#   scripts/install-js-ipfs.sh            # prints the directory it installed into
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${CIDMIRROR_JS_IPFS:-$PWD/target/js-ipfs}
mkdir -p "$dest"
# Test binaries call this script at once: one installs, the others wait for it.
exec 9>"$dest/.install.lock"
flock 9
if [ -f "$dest/node_modules/ipfs/src/cli.js" ] && cmp -s scripts/js-ipfs/package-lock.json "$dest/package-lock.json.installed"; then
  echo "$dest"
  exit 0
fi
command -v npm >/dev/null || { echo "npm not found: apt-get install nodejs npm" >&2; exit 1; }
cp scripts/js-ipfs/package.json scripts/js-ipfs/package-lock.json "$dest/"
(cd "$dest" && npm install --no-audit --no-fund --loglevel=error >&2)
cp scripts/js-ipfs/package-lock.json "$dest/package-lock.json.installed"
echo "$dest"
