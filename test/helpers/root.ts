import type { ExecutionContext } from 'ava';

export const isRoot = process.getuid?.() === 0;

/** Kernel tests need root (netns, tc, bpf, cgroups, iptables). */
export function requireRoot(t: ExecutionContext): boolean {
  if (!isRoot) {
    t.log('skipped: needs root for network namespaces, tc, bpf and cgroups');
    t.pass();
    return false;
  }
  return true;
}
