#!/usr/bin/env bash
# Installs what doze needs on a Debian node or dev machine (as root), then npm ci.
# Used by `make setup`, `make demo`/`make test` when something is missing, and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t packages < <(grep -v '^#' scripts/system-packages.txt)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "doze setup: run as root to install: ${missing[*]}" >&2; exit 2; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# eBPF maps are pinned under bpffs.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
if [[ ! -d node_modules || package-lock.json -nt node_modules ]]; then npm ci --no-audit --no-fund; fi
