import { execFile } from 'node:child_process';
import { access, readFile, statfs } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RuntimeError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { spawnOwnedChild } from './qemu-process.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * A VM's memory cgroup, where what it really holds is measured (MemAvailable is no
 * evidence: docs/design.md): v1 `memory.usage_in_bytes` or cgroup2 `memory.current`.
 * (Reclaiming through the cgroup, v1 `memory.force_empty`, was measured and
 * dropped: it also evicts QEMU's own code and libraries; the wake overhead
 * (event -> `cont` returned) was p50 12.5 ms against 5-7 ms with doze-pageout.)
 */
export type MemoryCgroup = { version: 1; dir: string } | { version: 2; dir: string };

export async function locateMemoryCgroup(cgroup: string, root = CGROUP_ROOT): Promise<MemoryCgroup | undefined> {
  const candidates: MemoryCgroup[] = [];
  if (isAbsolute(cgroup)) {
    candidates.push({ version: 1, dir: cgroup }, { version: 2, dir: cgroup });
  } else {
    candidates.push({ version: 1, dir: join(root, 'memory', cgroup) });
    for (const base of [root, join(root, 'unified')]) candidates.push({ version: 2, dir: join(base, cgroup) });
  }
  for (const c of candidates) {
    try {
      await access(join(c.dir, c.version === 1 ? 'memory.usage_in_bytes' : 'memory.current'));
      return c;
    } catch {
      // next candidate
    }
  }
  return undefined;
}

/** Bytes the cgroup is charged for now (page cache included). */
export async function cgroupMemoryBytes(cg: MemoryCgroup): Promise<number> {
  const file = join(cg.dir, cg.version === 1 ? 'memory.usage_in_bytes' : 'memory.current');
  return Number((await readFile(file, 'utf8')).trim());
}

/** The page-out helper built beside this file (agent/runtimes/qemu/doze-pageout.c; copied to dist/ by make build). */
export function pageoutHelperPath(): string {
  return fileURLToPath(new URL('./doze-pageout', import.meta.url));
}

/** The working-set helper (doze-working-set.c): saves the RAM file's resident ranges, reads them back. */
export function workingSetHelperPath(): string {
  return fileURLToPath(new URL('./doze-working-set', import.meta.url));
}

/** Records which pages of `file` are in the page cache (run before it is dropped). */
export function saveWorkingSet(file: string, ranges: string, deadlineMs: number, helper = workingSetHelperPath()): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(helper, ['save', file, ranges], { timeout: deadlineMs, killSignal: 'SIGKILL' }, (error, _stdout, stderr) => {
      if (error) reject(new RuntimeError('E_WORKING_SET', `recording the working set of ${file}: ${stderr.trim() || error.message}`, { cause: error }));
      else resolve();
    });
  });
}

/**
 * Starts reading the pages `saveWorkingSet` recorded back into the page cache, in the background and
 * in the VM's memory cgroup (page cache is charged to whoever reads it in), while QEMU restores.
 * Never delays or fails the wake: without it the guest faults the same pages in from disk.
 */
export function loadWorkingSet(file: string, ranges: string, options: { cgroupProcs: string | undefined; helper?: string; log: Logger }): void {
  const child = spawnOwnedChild([options.helper ?? workingSetHelperPath(), 'load', file, ranges], options.cgroupProcs, ['ignore', 'ignore', 'pipe']);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.once('error', () => undefined);
  child.once('exit', (code) => {
    // No working set yet (the first wake of an adopted VM, or none recorded): nothing to read.
    if (code !== 0 && !/No such file/.test(stderr)) options.log.warn({ code, stderr: stderr.trim().slice(-300) }, 'reading the working set back failed');
  });
}

export interface PageoutResult {
  /** The processes that mapped the file, and how many bytes of theirs were advised. */
  processes: Array<{ pid: number; mappings: number; bytes: number }>;
}

/**
 * Writes the RAM file back, unmaps its pages from the process mapping it
 * (process_madvise MADV_PAGEOUT) and drops them from the page cache: the guest's
 * RAM leaves memory, QEMU's own code and heap stay. Runs in a child process, so
 * the write-back never blocks the agent's event loop.
 */
export function pageoutFile(file: string, pidHint: number | undefined, deadlineMs: number, helper = pageoutHelperPath()): Promise<PageoutResult> {
  return new Promise((resolve, reject) => {
    const args = pidHint === undefined ? [file] : [file, String(pidHint)];
    execFile(helper, args, { timeout: deadlineMs, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (error) {
        const code: unknown = (error as { code?: unknown }).code; // the exit code, or an errno string
        const why = code === 3 ? `no process maps ${file} (is QEMU running?)` : stderr.trim() || error.message;
        reject(new RuntimeError('E_RECLAIM', `reclaiming guest RAM ${file}: ${why}`, { cause: error }));
        return;
      }
      const processes = stdout
        .split('\n')
        .map((line) => line.trim().split(' ').map(Number))
        .filter((f) => f.length === 3 && f.every(Number.isFinite))
        .map(([pid, mappings, bytes]) => ({ pid: pid!, mappings: mappings!, bytes: bytes! }));
      resolve({ processes });
    });
  });
}

const IN_MEMORY_FILESYSTEMS = new Map<number, string>([
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
  [0x958458f6, 'hugetlbfs'],
]);

/** The name of the in-memory filesystem holding `path` (reclaim frees nothing there), or undefined. */
export async function inMemoryFilesystem(path: string): Promise<string | undefined> {
  const stats = await statfs(path);
  return IN_MEMORY_FILESYSTEMS.get(stats.type);
}
