import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { readNodeSwap, type NodeSwap } from './node-swap.js';

/*
 * What a sleeper's swapped pages cost the node. A page in a swap file on disk costs no RAM;
 * a page in zram costs its compressed size, in RAM. The kernel does not say whose pages a
 * zram device holds, so each instance is charged zram's memory (mm_stat mem_used_total:
 * compressed data plus the allocator's overhead) in proportion to its swapped bytes among
 * all swapped bytes on the node. The shares of all instances then never add up to more
 * than zram holds. Measured: a reclaimed 225 MiB app of text-like data left 2.5 MiB in its
 * cgroup and ~90 MiB of zram (lz4): counting only the cgroup showed 1 % where the node got
 * back 59 % (docs/memory.md).
 */

export interface SwapMemory {
  /** Bytes in use on every swap device (/proc/swaps Used). */
  swappedBytes: number;
  /** RAM the zram swap devices among them take (sum of mm_stat mem_used_total). */
  zramMemoryBytes: number;
}

/** mm_stat: orig_data_size compr_data_size mem_used_total … (Documentation/admin-guide/blockdev/zram.rst). */
export function parseMmStat(text: string): { origBytes: number; comprBytes: number; memUsedBytes: number } {
  const [orig, compr, used] = text.trim().split(/\s+/).map(Number);
  return { origBytes: orig || 0, comprBytes: compr || 0, memUsedBytes: used || 0 };
}

/** The zram device behind a /proc/swaps entry (`/dev/zram3` → zram3), or undefined for a file or disk. */
export function zramDeviceOf(name: string): string | undefined {
  const device = basename(name);
  return /^zram\d+$/.test(device) ? device : undefined;
}

export function swapMemoryOf(swap: NodeSwap, mmStat: (device: string) => string | undefined): SwapMemory {
  let zramMemoryBytes = 0;
  for (const d of swap.devices) {
    const device = zramDeviceOf(d.name);
    const text = device && mmStat(device);
    if (text) zramMemoryBytes += parseMmStat(text).memUsedBytes;
  }
  return { swappedBytes: swap.usedBytes, zramMemoryBytes };
}

function readMmStat(device: string): string | undefined {
  try {
    return readFileSync(`/sys/block/${device}/mm_stat`, 'utf8');
  } catch {
    return undefined;
  }
}

let cached: { atMs: number; value: SwapMemory } | undefined;
/** How long one reading serves: a status request or scrape measures every instance at once (1,000 reads → 1). */
const CACHE_MS = 200;

/** The node's swap and zram memory now (synchronous: two small files per swap device). */
export function readSwapMemory(now = Date.now()): SwapMemory {
  if (cached && now - cached.atMs < CACHE_MS) return cached.value;
  const value = swapMemoryOf(readNodeSwap(), readMmStat);
  cached = { atMs: now, value };
  return value;
}

/**
 * RAM the node spends on `swappedBytes` of one instance: its share of zram's memory, at most
 * what it swapped (an incompressible page is stored as is, plus metadata).
 */
export function compressedShare(swappedBytes: number, node: SwapMemory): number {
  if (swappedBytes <= 0 || node.swappedBytes <= 0 || node.zramMemoryBytes <= 0) return 0;
  return Math.min(swappedBytes, Math.floor((swappedBytes * node.zramMemoryBytes) / node.swappedBytes));
}
