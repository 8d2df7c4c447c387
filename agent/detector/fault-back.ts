import type { ManagedInstance } from './managed-instance.js';

/*
 * How much a sleeper will fault back when it wakes, and when it has: the measure a paced mass
 * wake (agent/scheduler/fault-back-gate.ts) keeps under the node budget.
 */

const MiB = 2 ** 20;

/**
 * MiB a wake will bring back into memory: a reclaimed sleeper's memory before its reclaim
 * (measured by the reclaim itself); a sleeper whose runtime frees memory and cannot say how much,
 * its declared `memory`; anything else, 0 (its memory never left).
 */
export function faultBackMiB(instance: ManagedInstance): number {
  if (!instance.runtime.capabilities.freesMemory) return 0;
  const reclaim = instance.runtime.reclaimState?.();
  if (reclaim) return reclaim.reclaimed && reclaim.last ? Math.ceil(reclaim.last.beforeBytes / MiB) : 0;
  return instance.config.memory;
}

/**
 * A woken 32 MiB app (test/agent/paced-wake.test.ts) read its pages back from zram in bursts of
 * major faults well under 100 ms apart; quiet this long, it has what it needed.
 */
export const FAULT_BACK_POLL_MS = 50;
export const FAULT_BACK_QUIET_MS = 250;
/** Past this a wake no longer holds room, faulted back or not (an app may never touch all it had). */
export const FAULT_BACK_MAX_MS = 10_000;

/**
 * Resolves once the woken instance has faulted its memory back: no major fault (a page read back
 * from swap or disk) for FAULT_BACK_QUIET_MS, or FAULT_BACK_MAX_MS passed. A runtime that counts
 * no faults is followed by its pages in swap instead (stopped falling for as long, or under a
 * tenth of what they were). Without either reading, at once.
 */
export async function faultedBack(instance: ManagedInstance, signal?: AbortSignal): Promise<void> {
  const runtime = instance.runtime;
  const faults = runtime.majorFaults ? () => runtime.majorFaults!().catch(() => undefined) : undefined;
  const swapped = runtime.memory ? async () => (await runtime.memory!().catch(() => undefined))?.swappedBytes : undefined;
  // A fault count rises while it faults back; pages in swap fall.
  const first = faults ? await faults() : undefined;
  const [read, rising] = first !== undefined ? [faults!, true] : [swapped, false];
  if (!read) return;
  const start = first ?? (await read());
  if (start === undefined) return;
  const started = Date.now();
  let last = start;
  let lastMoveMs = started;
  while (!signal?.aborted && Date.now() - started < FAULT_BACK_MAX_MS) {
    if (!rising && last <= start / 10) return;
    if (Date.now() - lastMoveMs >= FAULT_BACK_QUIET_MS) return;
    await new Promise((resolve) => setTimeout(resolve, FAULT_BACK_POLL_MS));
    const now = await read();
    if (now === undefined) return;
    if (rising ? now > last : now < last) {
      last = now;
      lastMoveMs = Date.now();
    }
  }
}
