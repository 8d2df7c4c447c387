import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { RuntimeError } from '../shared/errors.js';
import { cgroupsOfProcess } from './process-cgroups.js';
import { compressedShare, readSwapMemory, type SwapMemory } from './swap-share.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** A memory cgroup: v1 (its own memory hierarchy) or cgroup2 (one directory for every controller). */
export interface MemoryCgroup {
  version: 1 | 2;
  dir: string;
}

/** What an instance holds, read from its memory cgroup. */
export interface MemoryUsage {
  /** Charged to the cgroup now: anonymous memory, page cache and kernel memory (v1 usage_in_bytes, v2 memory.current). */
  residentBytes: number;
  /** Its pages in swap (v1 memory.stat `swap`, v2 memory.swap.current). */
  swappedBytes: number;
  /** RAM the node spends on its swapped pages: its share of zram's memory (0 for swap on disk; swap-share.ts). */
  compressedBytes: number;
}

function usageFile(cg: MemoryCgroup): string {
  return join(cg.dir, cg.version === 1 ? 'memory.usage_in_bytes' : 'memory.current');
}

function candidates(cgroup: string, root: string): MemoryCgroup[] {
  if (isAbsolute(cgroup)) return [{ version: 1, dir: cgroup }, { version: 2, dir: cgroup }];
  return [{ version: 1, dir: join(root, 'memory', cgroup) }, ...[root, join(root, 'unified')].map((base) => ({ version: 2 as const, dir: join(base, cgroup) }))];
}

/** The memory cgroup named by a path relative to the v1 memory hierarchy or cgroup2, or absolute. */
export function locateMemoryCgroup(cgroup: string, root = CGROUP_ROOT): MemoryCgroup | undefined {
  return candidates(cgroup, root).find((c) => existsSync(usageFile(c)));
}

/**
 * The memory cgroup beside a freezer cgroup: v1 keeps the same path under the memory
 * hierarchy (Nomad's executor writes the task's limits there: OpenFromFreezerCG1 in
 * drivers/shared/executor/executor_universal_linux.go); cgroup2 uses the same directory.
 */
export function memoryCgroupBesideFreezer(freezerDir: string, root = CGROUP_ROOT): MemoryCgroup | undefined {
  const v1Freezer = join(root, 'freezer') + '/';
  if (freezerDir.startsWith(v1Freezer)) {
    const dir = join(root, 'memory', freezerDir.slice(v1Freezer.length));
    return existsSync(usageFile({ version: 1, dir })) ? { version: 1, dir } : undefined;
  }
  return existsSync(join(freezerDir, 'memory.current')) ? { version: 2, dir: freezerDir } : undefined;
}

/**
 * The memory cgroup a process is in, from /proc/PID/cgroup: the v1 `memory` line, else
 * the cgroup2 line `0::PATH` when that cgroup has the memory controller.
 */
export function memoryCgroupOfProcess(pid: number, root = CGROUP_ROOT): MemoryCgroup | undefined {
  const cgroups = cgroupsOfProcess(pid);
  if (!cgroups) return undefined;
  for (const { controllers, path } of cgroups) {
    if (controllers.includes('memory')) {
      const dir = join(root, 'memory', path);
      if (existsSync(usageFile({ version: 1, dir }))) return { version: 1, dir };
    }
  }
  const v2 = cgroups.find((c) => c.hierarchy === 0 && c.controllers.length === 0)?.path;
  if (v2 !== undefined) {
    for (const base of [root, join(root, 'unified')]) {
      const dir = join(base, v2);
      if (existsSync(usageFile({ version: 2, dir }))) return { version: 2, dir };
    }
  }
  return undefined;
}

function statField(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** `swapMemory`: the node's swap and zram now (tests give a fixed one). */
export async function readMemoryUsage(cg: MemoryCgroup, swapMemory: () => SwapMemory = readSwapMemory): Promise<MemoryUsage> {
  const residentBytes = Number((await readFile(usageFile(cg), 'utf8')).trim());
  let swappedBytes = 0;
  if (cg.version === 1) {
    // total_swap covers child cgroups too; absent without swap accounting (swapaccount=0).
    const stat = await readFile(join(cg.dir, 'memory.stat'), 'utf8');
    swappedBytes = statField(stat, 'total_swap') || statField(stat, 'swap');
  } else {
    swappedBytes = Number((await readFile(join(cg.dir, 'memory.swap.current'), 'utf8').catch(() => '0')).trim()) || 0;
  }
  return { residentBytes, swappedBytes, compressedBytes: compressedShare(swappedBytes, swapMemory()) };
}

/**
 * Major page faults in the cgroup so far (memory.stat `total_pgmajfault` on v1, `pgmajfault` on
 * cgroup2): pages read back from swap or disk. A wake's fault-back is followed by these, not by
 * the swap figure, which lags it (a page read back keeps its slot in the swap cache for a while).
 */
export async function readMajorFaults(cg: MemoryCgroup): Promise<number> {
  const stat = await readFile(join(cg.dir, 'memory.stat'), 'utf8');
  return cg.version === 1 ? statField(stat, 'total_pgmajfault') || statField(stat, 'pgmajfault') : statField(stat, 'pgmajfault');
}

/**
 * OOM kills in the cgroup so far (v1 memory.oom_control `oom_kill`, v2 memory.events).
 * Synchronous: read on the wake path, where a thread-pool hop would cost more than the read.
 */
export function oomKills(cg: MemoryCgroup): number {
  try {
    return statField(readFileSync(join(cg.dir, cg.version === 1 ? 'memory.oom_control' : 'memory.events'), 'utf8'), 'oom_kill');
  } catch {
    return 0;
  }
}

/**
 * The file a reclaim writes and what it writes: v1 `memory.force_empty` (reclaims the
 * whole cgroup, tasks inside; the kernel's loop checks for a pending signal between
 * batches, so killing the writer stops it: mem_cgroup_force_empty in mm/memcontrol-v1.c),
 * v2 `memory.reclaim` with the bytes to reclaim (interruptible the same way).
 */
export function reclaimRequest(cg: MemoryCgroup, residentBytes: number): { file: string; value: string } {
  return cg.version === 1 ? { file: join(cg.dir, 'memory.force_empty'), value: '0' } : { file: join(cg.dir, 'memory.reclaim'), value: String(residentBytes) };
}

/** A control file the reclaim changes for its duration, with the value to put back. */
export interface LiftedSetting {
  file: string;
  value: string;
}

/**
 * The settings that would keep a reclaim from reaching swap, each with the value that opens
 * it. Nomad (client/lib/cgroupslib/memory.go MaybeDisableMemorySwappiness, used by
 * drivers/shared/executor and drivers/docker/driver.go) sets swappiness 0 on every task: on
 * v1 `memory.swappiness` 0 stops reclaim from touching anonymous memory at all (get_scan_count
 * in mm/vmscan.c then scans file pages only). Docker tasks also get MemorySwap = memory: on
 * v2 that is `memory.swap.max` 0, which refuses swap-out; on v1 it is
 * `memory.memsw.limit_in_bytes` = the memory limit, which does not stop a reclaim (a swapped
 * page stays charged to memsw; measured, docs/memory.md), so it is left alone.
 */
export function swapBlockers(cg: MemoryCgroup, swappiness = systemSwappiness()): Array<LiftedSetting & { open: string }> {
  const read = (file: string) => {
    try {
      return readFileSync(join(cg.dir, file), 'utf8').trim();
    } catch {
      return undefined; // not on this version
    }
  };
  if (cg.version === 1) {
    return read('memory.swappiness') === '0' ? [{ file: join(cg.dir, 'memory.swappiness'), value: '0', open: String(swappiness) }] : [];
  }
  const swapMax = read('memory.swap.max');
  return swapMax !== undefined && swapMax !== 'max' ? [{ file: join(cg.dir, 'memory.swap.max'), value: swapMax, open: 'max' }] : [];
}

/** Opens what swapBlockers found; refused writes are errors (the reclaim would free nothing). */
export function liftSettings(settings: Array<LiftedSetting & { open: string }>): void {
  for (const s of settings) {
    try {
      writeFileSync(s.file, s.open);
    } catch (error) {
      throw new RuntimeError('E_RECLAIM', `cannot lift ${s.file} (${s.value}) for the reclaim: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
    }
  }
}

/** Puts lifted settings back; the ones that cannot be written (the cgroup is gone) are skipped. */
export function restoreSettings(settings: LiftedSetting[]): void {
  for (const s of settings) {
    try {
      writeFileSync(s.file, s.value);
    } catch {
      // the cgroup went with its task
    }
  }
}

/** vm.swappiness, or the kernel's default 60 when the node sets 0 (a reclaim needs some). */
export function systemSwappiness(): number {
  try {
    const value = Number(readFileSync('/proc/sys/vm/swappiness', 'utf8').trim());
    return value > 0 ? value : 60;
  } catch {
    return 60;
  }
}
