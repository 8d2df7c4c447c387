import type { Teardown } from './teardown.js';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { sh, shQuiet } from './sh.js';

const HOT_ADD = '/sys/class/zram-control/hot_add';

export interface TestSwap {
  device: string;
  /** What holds its pages: a zram compressor, or `file` (a swap file on local disk). */
  kind: string;
  /** Bytes of RAM zram holds for what was swapped to it (mm_stat mem_used_total). */
  memUsedBytes(): Promise<number>;
}

/** Why a zram swap cannot be set up here, or undefined when it can (for a skip decided at registration). */
export function zramUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to add a zram swap device';
  if (!existsSync(HOT_ADD)) return 'this kernel has no zram-control (CONFIG_ZRAM with hot_add): no swap device can be added';
  return undefined;
}

/**
 * Swap is node-wide, and test files run side by side: a file that adds a swap holds this lock
 * shared from before its swapon until after its swapoff, and the case that shows a node without
 * swap holds it exclusively. flock(1) keeps it in a child whose stdin we hold, so it goes with us
 * if we die.
 */
const SWAP_LOCK = '/run/doze-test-swap.lock';

/** Waits (bounded) for the swap lock and keeps it until the test's teardown. */
export async function holdSwapLock(t: Teardown, mode: 'shared' | 'exclusive', timeoutMs = 120_000): Promise<void> {
  const child = spawn('flock', [mode === 'shared' ? '-s' : '-x', '-w', String(Math.ceil(timeoutMs / 1000)), SWAP_LOCK, 'sh', '-c', 'echo locked; exec cat'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(async () => {
    child.stdin!.end();
    await exited;
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the ${mode} swap lock ${SWAP_LOCK} was not had within ${timeoutMs} ms (flock exit ${code})`)));
  });
}

/** Whether a test file holds a swap right now (someone holds the swap lock): its swap is not the node's own. */
export function swapHeldByTests(): boolean {
  return spawnSync('flock', ['-n', '-x', SWAP_LOCK, 'true']).status !== 0;
}

/**
 * A swap device of its own: a hot-added zram device (never an existing one, which
 * someone else may use), `size` bytes of compressed swap, lz4. Teardown swaps it off,
 * resets and removes it.
 */
export async function createZramSwap(t: Teardown, size = '1G', algorithm = 'lz4'): Promise<TestSwap> {
  await holdSwapLock(t, 'shared');
  const id = (await readFile(HOT_ADD, 'utf8')).trim();
  const block = `/sys/block/zram${id}`;
  const device = `/dev/zram${id}`;
  t.teardown(async () => {
    await shQuiet('swapoff', [device]);
    await writeFile(`${block}/reset`, '1').catch(() => undefined);
    await writeFile('/sys/class/zram-control/hot_remove', id).catch(() => undefined);
  });
  await writeFile(`${block}/comp_algorithm`, algorithm).catch(() => undefined); // keep the default when unknown
  await writeFile(`${block}/disksize`, size);
  await sh('mkswap', [device]);
  await sh('swapon', ['-p', '100', device]);
  return {
    device,
    kind: (/\[(\S+)\]/.exec(await readFile(`${block}/comp_algorithm`, 'utf8'))?.[1]) ?? algorithm,
    memUsedBytes: async () => Number((await readFile(`${block}/mm_stat`, 'utf8')).trim().split(/\s+/)[2]),
  };
}

/** The compressors this kernel's zram offers (comp_algorithm of a device: "[lzo-rle] lzo lz4"). */
export async function zramAlgorithms(): Promise<string[]> {
  const id = (await readFile(HOT_ADD, 'utf8')).trim();
  try {
    return (await readFile(`/sys/block/zram${id}/comp_algorithm`, 'utf8')).replace(/[[\]]/g, '').trim().split(/\s+/);
  } finally {
    await writeFile('/sys/class/zram-control/hot_remove', id).catch(() => undefined);
  }
}

/** A swap file of `size` on local disk (/var/tmp), for comparison with zram: its pages cost no RAM. */
export async function createSwapFile(t: Teardown, size = '1G'): Promise<TestSwap> {
  await holdSwapLock(t, 'shared');
  const file = `/var/tmp/dz-swap-${process.pid}-${Date.now().toString(36)}`;
  t.teardown(async () => {
    await shQuiet('swapoff', [file]);
    await sh('rm', ['-f', file]).catch(() => undefined);
  });
  await sh('fallocate', ['-l', size, file]);
  await sh('chmod', ['600', file]);
  await sh('mkswap', [file]);
  await sh('swapon', ['-p', '100', file]);
  return { device: file, kind: 'file', memUsedBytes: async () => 0 };
}
