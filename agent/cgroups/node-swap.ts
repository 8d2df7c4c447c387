import { readFileSync } from 'node:fs';

/** The node's swap, from /proc/swaps: a reclaimed sleeper's anonymous memory goes there. */
export interface NodeSwap {
  available: boolean;
  devices: Array<{ name: string; type: string; sizeBytes: number; usedBytes: number; priority: number }>;
  totalBytes: number;
  usedBytes: number;
  /** Why reclaim cannot free anonymous memory, when it cannot. */
  reason: string | null;
}

export const NO_SWAP_REASON = 'no swap on this node (/proc/swaps lists none): reclaim could only drop page cache, so instances with reclaim sleep as plain freezer instances, memory kept (docs/memory.md: giving a node swap)';

/** Parses /proc/swaps (header line, then "Filename Type Size Used Priority", sizes in KiB). */
export function parseSwaps(text: string): NodeSwap {
  const devices = text
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 5 && /^\d+$/.test(f[2]!))
    .map(([name, type, size, used, priority]) => ({ name: name!, type: type!, sizeBytes: Number(size) * 1024, usedBytes: Number(used) * 1024, priority: Number(priority) }));
  const totalBytes = devices.reduce((sum, d) => sum + d.sizeBytes, 0);
  const usedBytes = devices.reduce((sum, d) => sum + d.usedBytes, 0);
  return { available: totalBytes > 0, devices, totalBytes, usedBytes, reason: totalBytes > 0 ? null : NO_SWAP_REASON };
}

/** Read synchronously: a few hundred bytes, consulted once per reclaim and per status request. */
export function readNodeSwap(file = '/proc/swaps'): NodeSwap {
  try {
    return parseSwaps(readFileSync(file, 'utf8'));
  } catch {
    return { available: false, devices: [], totalBytes: 0, usedBytes: 0, reason: NO_SWAP_REASON };
  }
}
