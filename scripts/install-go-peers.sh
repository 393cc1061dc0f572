#!/usr/bin/env bash
# Builds the real IPFS programs the tests talk to (Kubo, IPFS Cluster) from the Go module
# proxy, at the versions in scripts/go-peers/versions, into target/go-peers/bin. Idempotent:
# programs already built from the same lines are not built again; Go's module and build
# caches stay in their default places, so a rebuild after `cargo clean` compiles little.
#   scripts/install-go-peers.sh            # prints the bin directory
#
# Not `go install MODULE/cmd/X@VERSION`: Kubo's go.mod has a replace directive, and
# `go install pkg@version` refuses any module with one. So each program is built from a
# small module of our own under target/go-peers/src/NAME that requires the module at its
# version and keeps its replace directives (those pointing at other modules), except where
# a `with` line of the versions file pins that module instead.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=$PWD/scripts/go-peers/versions
root=${CIDMIRROR_GO_PEERS:-$PWD/target/go-peers}
bin="$root/bin"
mkdir -p "$bin" "$root/src"
# Test binaries call this script at once: one builds, the others wait for it.
exec 9>"$root/.install.lock"
flock 9
command -v go >/dev/null || { echo "go not found: the tests build Kubo and IPFS Cluster with Go (>= 1.26.5)" >&2; exit 1; }
export GOTOOLCHAIN=local

names=$(awk '$1 == "build" { print $2 }' "$versions")
for name in $names; do
  lines=$(awk -v n="$name" '($1 == "build" || $1 == "with") && $2 == n' "$versions")
  stamp="$bin/.$name.built"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lines" ]; then
    continue
  fi
  read -r _ _ module version pkgs <<<"$(awk '$1 == "build"' <<<"$lines")"
  withs=$(awk '$1 == "with" { print $3 "@" $4 }' <<<"$lines")
  started=$(date +%s)
  echo "building $name ($module@$version) with $(go version | cut -d' ' -f3)" >&2
  src="$root/src/$name"
  rm -rf "$src" && mkdir -p "$src"
  gomod=$(go mod download -json "$module@$version" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [ -f "$gomod" ] || { echo "no go.mod for $module@$version from the module proxy" >&2; exit 1; }
  pinned=$(for w in $withs; do echo "${w%@*}"; done)
  {
    echo "module cidmirror.test/go-peers/$name"
    echo
    grep -m1 '^go ' "$gomod"
    echo
    echo "require $module $version"
    # Replace directives, single-line or in a block; not those to a local path (they mean
    # nothing outside that module's tree) nor those of a module a `with` line pins.
    awk '
      /^replace \(/ { block = 1; next }
      block && /^\)/ { block = 0; next }
      block { print "replace " $0; next }
      /^replace / { print }
    ' "$gomod" | { grep -v '=>\s*\.\{1,2\}/' || true; } | while read -r line; do
      target=$(awk '{ print $2 }' <<<"$line")
      grep -qxF "$target" <<<"$pinned" || echo "$line"
    done
  } > "$src/go.mod"
  paths=()
  for p in $pkgs; do paths+=("$module/$p@$version"); done
  # shellcheck disable=SC2086
  (cd "$src" && go get $withs "${paths[@]}" >&2 && go build -trimpath -o "$bin/" "${paths[@]%@*}" >&2)
  echo "$lines" > "$stamp"
  echo "built $name in $(( $(date +%s) - started )) s" >&2
done
echo "$bin"
