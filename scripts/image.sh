#!/usr/bin/env bash
# make image: the OCI image of the release (Dockerfile), built with the local Docker engine
# (DOCKER_HOST is honoured). Its base is made here, not pulled: the system tools the agent runs
# (agent/process/exec.ts PACKAGE_OF) copied from this machine with every library ldd names, plus
# iptables' extensions, which it loads at run time. Writes build/doze-image-<version>.tar
# (docker save) and tags doze:<version>.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(node -p 'require("./package.json").version')
case "$(uname -m)" in x86_64) arch=x86_64 ;; aarch64) arch=arm64 ;; *) echo "make image: unsupported architecture" >&2; exit 2 ;; esac
tarball="doze-${version}-linux-${arch}.tar.gz"
[ -s "build/$tarball" ] || { echo "make image: build/$tarball is missing (make dist)" >&2; exit 1; }
context=build/image
rm -rf "$context"
mkdir -p "$context/base"/{etc,run,tmp,var/run,sys,proc,dev,usr/sbin,usr/bin}
chmod 1777 "$context/base/tmp"
cp "build/$tarball" "$context/"
cp Dockerfile "$context/"

base="$context/base"
copy() { # a file with its path, following links to the real file (kept as a file at the path asked)
  local path=$1
  mkdir -p "$base$(dirname "$path")"
  cp -L "$path" "$base$path"
}
libs() { # every library the dynamic loader resolves for $1, and the loader itself
  ldd "$1" 2>/dev/null | awk '/=> \// { print $3 } /^\s*\/lib/ { print $1 }'
}
tools=(/usr/bin/ip /usr/sbin/tc /usr/bin/nsenter /usr/bin/setpriv /usr/bin/getent)
for tool in "${tools[@]}"; do copy "$tool"; for lib in $(libs "$tool"); do copy "$lib"; done; done
# iptables-nft: one multi-call binary; the names the agent runs are links to it. Its extensions are
# dlopen'ed by name, so ldd cannot see them: the whole directory goes in.
multi=$(readlink -f "$(command -v iptables)")
copy "$multi"
for lib in $(libs "$multi"); do copy "$lib"; done
for name in iptables iptables-save iptables-restore; do ln -sf "$(basename "$multi")" "$base/usr/sbin/$name"; done
xt=/usr/lib/$(uname -m)-linux-gnu/xtables
mkdir -p "$base$xt"
cp -L "$xt"/*.so "$base$xt/"
for so in "$xt"/*.so; do for lib in $(libs "$so"); do copy "$lib"; done; done
# Node.js's own libraries (libstdc++, libgcc_s, libm).
tmp=$(mktemp -d); tar -xzf "build/$tarball" -C "$tmp" ./node
for lib in $(libs "$tmp/node"); do copy "$lib"; done
rm -rf "$tmp"
# /lib64 -> the loader, as Debian lays it out; root's passwd entry for getent and uid lookups.
[ -e "$base/lib64" ] || { mkdir -p "$base/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$base/lib64/" 2>/dev/null || true; }
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$base/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$base/etc/group"

docker build --quiet -t "doze:${version}" --build-arg "DOZE_TARBALL=$tarball" "$context" >/dev/null
docker save "doze:${version}" -o "build/doze-image-${version}.tar"
echo "doze:${version} ($(docker image inspect -f '{{.Size}}' "doze:${version}" | awk '{ printf "%.0f MB", $1 / 1e6 }')), saved to build/doze-image-${version}.tar"
