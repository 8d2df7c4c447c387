#!/usr/bin/env bash
# Installs what doze needs on a Debian machine (as root), then npm ci.
#   scripts/setup.sh demo   what `make build` and `make demo` need
#   scripts/setup.sh test   that, plus what the test suite needs (QEMU, a guest kernel, Chromium…)
#   scripts/setup.sh demo|test --list   print that profile's Debian packages, install nothing
# Used by `make setup`, by `make demo`/`make test` when something is missing, and by hand.
# Each step says what it is about to install before it does.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-test}
case $profile in demo | test) ;; *) echo "usage: scripts/setup.sh [demo|test]" >&2; exit 2 ;; esac

say() { echo "doze setup ($profile): $*" >&2; }
need_root() {
  [[ $(id -u) -eq 0 ]] && return 0
  say "run as root to $1 (for example: sudo make setup, or as root: make setup)"
  exit 2
}
apt_updated=
apt_install() {
  need_root "install: $*"
  say "installing with apt-get: $*"
  [[ -n $apt_updated ]] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# --- Debian packages: the demo part of the list, or all of it ---
if [[ $profile == demo ]]; then
  mapfile -t packages < <(sed '/^# --- test/,$d' scripts/system-packages.txt | grep -v '^#' | grep .)
else
  mapfile -t packages < <(grep -v '^#' scripts/system-packages.txt | grep .)
fi
if [[ ${2:-} == --list ]]; then printf '%s\n' "${packages[@]}"; exit 0; fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

# --- Node.js >= 20 and npm (package.json "engines") ---
node_ok() { command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; }
# shellcheck source=scripts/node-release.sh
source scripts/node-release.sh
if ! node_ok || ! command -v npm >/dev/null; then
  prefix=${DOZE_NODE_PREFIX:-/usr/local}
  candidate=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ { print $2 }')
  [[ -n $candidate && $candidate != "(none)" ]] || { need_root "look up Debian's nodejs"; apt-get update -qq; apt_updated=1; candidate=$(apt-cache policy nodejs | awk '/Candidate:/ { print $2 }'); }
  if [[ ${candidate%%.*} =~ ^[0-9]+$ ]] && ((${candidate%%.*} >= 20)); then
    # Debian 13: its own nodejs is new enough.
    want=()
    command -v node >/dev/null || want+=(nodejs)
    command -v npm >/dev/null || want+=(npm)
    if ((${#want[@]})); then apt_install "${want[@]}"; fi
  elif [[ $(uname -m) == x86_64 ]]; then
    # Debian 12 ships Node.js 18: the official Node.js 22 binary and npm straight from the npm
    # registry (two checked tarballs, ~33 MB), not Debian's nodejs and npm first (553 packages).
    [[ -w $prefix ]] || need_root "install Node.js $NODE_VERSION into $prefix"
    say "Debian's nodejs is $candidate (engines: >= 20): installing Node.js $NODE_VERSION and npm $NPM_VERSION from $NPM_REGISTRY into $prefix"
    bash scripts/install-node.sh "$prefix"
    export PATH="$prefix/bin:$PATH"
    hash -r
  else
    # Other architectures: Debian's nodejs and npm to bootstrap, then the registry's node@22.
    want=()
    command -v node >/dev/null || want+=(nodejs)
    command -v npm >/dev/null || want+=(npm)
    if ((${#want[@]})); then apt_install "${want[@]}"; fi
    if ! node_ok; then
      [[ -w $prefix ]] || need_root "install Node.js 22 from the npm registry into $prefix"
      say "Node.js $(node --version) is older than 20: installing the npm registry's node@22 into $prefix"
      npm install -g --prefix "$prefix" --no-audit --no-fund node@22
      export PATH="$prefix/bin:$PATH"
      hash -r
    fi
  fi
  if ! node_ok || ! command -v npm >/dev/null; then
    say "still no Node.js >= 20 with npm on PATH ($(command -v node || echo none)); install one and put it first on PATH"
    exit 1
  fi
  say "using Node.js $(node --version) at $(command -v node), npm $(npm --version)"
fi

# eBPF maps are pinned under bpffs.
if ! mountpoint -q /sys/fs/bpf; then
  need_root "mount bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
if [[ ! -d node_modules || package-lock.json -nt node_modules ]]; then
  say "installing the npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi
