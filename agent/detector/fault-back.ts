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

/** Measured on a woken 60 MiB app (test/agent/paced-wake.test.ts): its swap fell in steps up to ~100 ms apart on 2 busy cores. */
export const FAULT_BACK_POLL_MS = 50;
export const FAULT_BACK_QUIET_MS = 250;
/** Past this a wake no longer holds room, faulted back or not (an app may never touch all it had). */
export const FAULT_BACK_MAX_MS = 10_000;

/**
 * Resolves once the woken instance has faulted its memory back: its pages in swap stopped
 * falling for FAULT_BACK_QUIET_MS, or are under a tenth of what they were at the wake, or
 * FAULT_BACK_MAX_MS passed. Without a memory reading (no memory cgroup), at once.
 */
export async function faultedBack(instance: ManagedInstance, signal?: AbortSignal): Promise<void> {
  const read = instance.runtime.memory?.bind(instance.runtime);
  if (!read) return;
  const started = Date.now();
  const first = await read().catch(() => undefined);
  if (!first) return;
  let lowest = first.swappedBytes;
  let lastFallMs = started;
  while (!signal?.aborted && Date.now() - started < FAULT_BACK_MAX_MS) {
    if (lowest <= first.swappedBytes / 10) return;
    if (Date.now() - lastFallMs >= FAULT_BACK_QUIET_MS) return;
    await new Promise((resolve) => setTimeout(resolve, FAULT_BACK_POLL_MS));
    const now = await read().catch(() => undefined);
    if (!now) return;
    if (now.swappedBytes < lowest) {
      lowest = now.swappedBytes;
      lastFallMs = Date.now();
    }
  }
}
