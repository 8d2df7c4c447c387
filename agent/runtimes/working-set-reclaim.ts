import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LiftedSetting, MemoryCgroup } from '../cgroups/memory-cgroup.js';

/*
 * Working-set reclaim: push out only what the app did not touch since the last reclaim, so
 * the pages it needs on every request stay resident and its first request after a reclaimed
 * sleep costs what a plain freezer wake costs.
 *
 * How the pages it touched are found (measured on this 6.18 kernel: no /sys/kernel/mm/page_idle,
 * no multi-gen LRU; DAMON works by regions, too coarse for a 2 MiB working set in a 200 MiB
 * heap): after each reclaim the agent clears the referenced (young) bits of the app's page
 * tables (/proc/PID/clear_refs 1). At the next reclaim, /proc/PID/smaps_rollup says how much of
 * what is resident was referenced since and how much was not: per mapping of /proc/PID/smaps,
 * its anonymous pages less what was referenced (the runtime's mapped code and libraries are
 * charged to whoever read them first, often not this cgroup, so only anonymous memory counts).
 * The cgroup is then reclaimed by that cold amount only, in the kernel's LRU order: the
 * kernel's reclaim checks the same young bits (folio_referenced in mm/vmscan.c) and keeps a
 * referenced anonymous page (activates it), so the cold pages are the ones that go.
 *
 * cgroup v2: memory.reclaim with the cold amount. cgroup v1 has no partial reclaim file: the
 * writer lowers memory.limit_in_bytes to (resident − cold), the kernel reclaims until usage fits
 * (mem_cgroup_resize_max), and the limit goes back the moment the writer exits, or before the
 * thaw when a wake cuts it short, while the instance is still frozen.
 */

export const RECLAIM_KEEPS = ['nothing', 'working-set'] as const;
export type ReclaimKeep = (typeof RECLAIM_KEEPS)[number];

/** Below this the cold part is not worth a reclaim (the kernel reclaims in 32-page batches). */
const MIN_COLD_BYTES = 1 << 20;

/** Anonymous bytes the cgroup's processes have resident but did not reference since their bits were cleared. */
export function coldBytes(pids: number[]): number {
  let cold = 0;
  for (const pid of pids) {
    try {
      cold += parseColdBytes(readFileSync(`/proc/${pid}/smaps`, 'utf8'));
    } catch {
      // exited
    }
  }
  return cold;
}

/**
 * /proc/PID/smaps, mapping by mapping: its anonymous pages not referenced, at most
 * Anonymous − (Referenced − the file pages, which may be referenced too).
 */
export function parseColdBytes(text: string): number {
  let cold = 0;
  let rss = 0;
  let referenced = 0;
  let anonymous = 0;
  const flush = () => {
    // Referenced counts file pages too: at worst every file page was referenced.
    const referencedAnon = Math.max(0, referenced - (rss - anonymous));
    cold += Math.max(0, anonymous - referencedAnon);
    rss = referenced = anonymous = 0;
  };
  for (const line of text.split('\n')) {
    const m = /^(Rss|Referenced|Anonymous):\s+(\d+) kB/.exec(line);
    if (m) {
      const kb = Number(m[2]) * 1024;
      if (m[1] === 'Rss') {
        flush();
        rss = kb;
      } else if (m[1] === 'Referenced') referenced = kb;
      else anonymous = kb;
    }
  }
  flush();
  return cold;
}

/**
 * The write that reclaims `cold` bytes of the cgroup (and what to put back after it), or null
 * when too little is cold to bother.
 */
export function workingSetRequest(cg: MemoryCgroup, residentBytes: number, cold: number): { request: { file: string; value: string }; restore: LiftedSetting[] } | null {
  if (cold < MIN_COLD_BYTES) return null;
  if (cg.version === 2) return { request: { file: join(cg.dir, 'memory.reclaim'), value: String(cold) }, restore: [] };
  const file = join(cg.dir, 'memory.limit_in_bytes');
  const limit = readFileSync(file, 'utf8').trim();
  // Never below what the kernel keeps anyway (its own objects, unmapped cache): 1 MiB at least.
  const target = Math.max(MIN_COLD_BYTES, Math.ceil((residentBytes - cold) / 4096) * 4096);
  return { request: { file, value: String(target) }, restore: [{ file, value: limit }] };
}

/** Clears the referenced bits of every process (clear_refs 1); false when one could not be cleared. */
export function clearReferences(pids: number[]): boolean {
  let all = pids.length > 0;
  for (const pid of pids) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, '1');
    } catch {
      all = false;
    }
  }
  return all;
}
