#!/usr/bin/env bash
# Builds doze's tiny test guest from installed Debian packages (scripts/system-packages.txt):
# the newest linux-image-cloud-amd64 kernel, its virtio-net modules, busybox-static and
# scripts/guest/{init,http-handler}, packed as a gzip'd newc initramfs.
# Usage: scripts/build-guest.sh OUTDIR  ->  OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/guest}
kernel=$(ls -v /boot/vmlinuz-*-cloud-amd64 2>/dev/null | tail -n 1 || true)
if [[ -z $kernel ]]; then echo "build-guest: no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)" >&2; exit 2; fi
version=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$version/kernel
busybox=/bin/busybox
if ! dpkg -s busybox-static >/dev/null 2>&1; then echo "build-guest: busybox-static is not installed" >&2; exit 2; fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,run,tmp,lib/modules}
cp "$busybox" "$stage/bin/busybox"
cp scripts/guest/init "$stage/init"
cp scripts/guest/http-handler "$stage/bin/http-handler"
chmod 755 "$stage/init" "$stage/bin/http-handler"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  path=$(find "$moddir" -name "$m.ko*" | head -n 1)
  if [[ -z $path ]]; then echo "build-guest: module $m not found under $moddir" >&2; exit 2; fi
  case "$path" in
    *.ko) cp "$path" "$stage/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$path" > "$stage/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$path" > "$stage/lib/modules/$m.ko" ;;
    *) echo "build-guest: cannot unpack $path" >&2; exit 2 ;;
  esac
done

mkdir -p "$out"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) | gzip -9 > "$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
cp "$kernel" "$out/vmlinuz"
echo "$version" > "$out/kernel-version"
echo "build-guest: $out/vmlinuz ($version) + $out/initramfs.cpio.gz ($(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
