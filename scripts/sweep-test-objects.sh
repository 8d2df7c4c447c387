#!/usr/bin/env bash
# Removes what a crashed test or benchmark run may have left: dz-* namespaces and
# links, DZ* iptables chains (test agents' prefixes), private bpffs mounts, and
# test cgroups (thawed and emptied first). Never touches the production DOZE-* chains.
set -uo pipefail
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^dz-/ {print $1}'); do ip netns del "$ns"; done
for link in $(ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^dz/ {split($2, a, "@"); print a[1]}'); do ip link del "$link" 2>/dev/null; done
for table in mangle nat; do
  iptables -w 5 -t "$table" -S 2>/dev/null | grep -E '^-A (OUTPUT|PREROUTING) .* -j DZ[0-9A-F]+-' | sed 's/^-A/-D/' |
    while read -r rule; do eval "iptables -w 5 -t $table $rule"; done
  for chain in $(iptables -w 5 -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DZ[0-9A-F]+-/ {print $2}'); do
    iptables -w 5 -t "$table" -F "$chain" && iptables -w 5 -t "$table" -X "$chain"
  done
done
for m in $(awk '$2 ~ /\/dz-bpffs-/ {print $2}' /proc/mounts); do umount "$m" && rmdir "$m"; done
for root in /sys/fs/cgroup/freezer/doze-test /sys/fs/cgroup/freezer/doze-demo; do
  [[ -d $root ]] || continue
  for cg in "$root"/dz-*; do
    [[ -d $cg ]] || continue
    echo THAWED > "$cg/freezer.state" 2>/dev/null
    xargs -r kill -9 < "$cg/cgroup.procs" 2>/dev/null
    sleep 0.1
    rmdir "$cg" 2>/dev/null
  done
  rmdir "$root" 2>/dev/null
done
for root in /sys/fs/cgroup/memory/doze-test /sys/fs/cgroup/unified/doze-test; do rmdir "$root"/dz-* "$root" 2>/dev/null; done
exit 0
