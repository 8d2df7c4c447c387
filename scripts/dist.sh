#!/usr/bin/env bash
# make dist: build/doze-<version>-linux-<arch>.tar.gz and its .sha256, everything the agent needs at
# run time, unpacked flat into any directory:
#   doze            launcher (/bin/sh): runs lib/dist/cli.js with the node beside it
#   node            Node.js, the official binary (the npm registry's node-linux-<arch> package)
#   lib/            package.json, the compiled JS (dist/: BPF object, doze-maps and the qemu helpers
#                   statically linked) and the production node_modules
#   jobs/doze-agent.nomad.hcl, docs/, README.md
# The node needs from its system only what every Nomad client has: iproute2 (ip, tc), iptables,
# util-linux (nsenter, setpriv) and libc (getent); no Node.js, no compiler, no libbpf/libelf.
set -euo pipefail
cd "$(dirname "$0")/.."

# Node's release the agent is tested on (engines: >= 20), pinned with its checksum in scripts/node-release.sh.
# shellcheck source=scripts/node-release.sh
source scripts/node-release.sh
version=$(node -p 'require("./package.json").version')
case "$(uname -m)" in
  x86_64) arch=x86_64 node_arch=x64 ;;
  aarch64) arch=arm64 node_arch=arm64 ;;
  *) echo "make dist: unsupported architecture $(uname -m)" >&2; exit 2 ;;
esac
name="doze-${version}-linux-${arch}"
out=build
stage="$out/stage/$name"
cache="$out/cache"
rm -rf "$stage"
mkdir -p "$stage/lib" "$stage/jobs" "$cache"

# Node.js from the registry, cached by version.
node_pkg="$cache/node-linux-${node_arch}-${NODE_VERSION}.tgz"
if [ ! -s "$node_pkg" ]; then
  (cd "$cache" && npm pack --silent "node-linux-${node_arch}@${NODE_VERSION}" >/dev/null)
fi
pinned=NODE_SHA256_${node_arch}
if [ -n "${!pinned:-}" ]; then
  echo "${!pinned}  $node_pkg" | sha256sum -c --quiet - || { echo "make dist: $node_pkg does not match its pinned sha256" >&2; rm -f "$node_pkg"; exit 1; }
fi
tar -xzf "$node_pkg" -C "$stage" --strip-components=2 package/bin/node
chmod 755 "$stage/node"

# The compiled tree (make build ran): JS, doze.bpf.o (ignored by git as *.o, so never taken from a
# git listing or npm pack), the static helpers.
cp -a dist "$stage/lib/dist"
rm -f "$stage/lib/dist/.built"
for f in lib/dist/agent/bpf/doze.bpf.o lib/dist/agent/bpf/doze-maps lib/dist/agent/runtimes/qemu/doze-pageout lib/dist/agent/runtimes/qemu/doze-working-set; do
  [ -s "$stage/$f" ] || { echo "make dist: $f is missing from the build" >&2; exit 1; }
done
cp package.json package-lock.json "$stage/lib/"
(cd "$stage/lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null)
rm -f "$stage/lib/package-lock.json"

cp jobs/doze-agent.nomad.hcl "$stage/jobs/"
cp -r docs README.md "$stage/"
cat > "$stage/doze" <<'SH'
#!/bin/sh
# doze release launcher: the Node.js beside it runs the compiled agent. Needs no other program
# (an agent started with env -i and an empty PATH finds its node); links are followed when readlink exists.
self=$0
if command -v readlink >/dev/null 2>&1; then self=$(readlink -f "$0"); fi
case $self in */*) here=${self%/*} ;; *) here=. ;; esac
exec "$here/node" "$here/lib/dist/cli.js" "$@"
SH
chmod 755 "$stage/doze"

# Reproducible archive: sorted names, root-owned, one timestamp (the last commit's).
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tarball="$out/$name.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C "$stage" -cf - . | gzip -n -6 > "$tarball"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$tarball ($(du -h "$tarball" | cut -f1)), sha256 $(cut -d' ' -f1 "$tarball.sha256")"
