import type { MemoryUsage } from '../cgroups/memory-cgroup.js';
import { readNodeSwap } from '../cgroups/node-swap.js';
import type { Detector } from '../detector/detector.js';
import type { ReadonlyInstance } from '../detector/managed-instance.js';
import type { ReclaimState } from '../runtimes/runtime.js';

/** An instance's memory in the status API: measured now, the most it held awake, its reclaim. */
export interface InstanceMemoryView {
  residentBytes: number;
  swappedBytes: number;
  /** RAM its swapped pages take in zram (its share of zram's memory; 0 for swap on disk). */
  compressedBytes: number;
  /** What it costs the node: resident plus compressed. */
  nodeBytes: number;
  /**
   * The most it was seen costing the node awake (resident + compressed, read as it falls asleep
   * and at every status request): "awake vs asleep". The most, not the last: after a working-set
   * reclaim what it never touches stays in swap while it is awake too, and that is what doze freed.
   */
  awakeBytes: number | null;
  reclaim: ReclaimState | null;
}

export interface NodeMemoryView {
  swap: { available: boolean; totalBytes: number; usedBytes: number; reason: string | null };
  /** Measured resident memory of every instance that can be measured. */
  residentBytes: number;
  /** RAM zram spends on instances' swapped pages (the sum of their shares). */
  compressedBytes: number;
  /** What sleepers gave back: their awake memory minus what they cost the node now (resident + compressed). */
  freedBytes: number;
}

/** Reads each instance's memory cgroup when asked (status request, scrape): no timer of its own. */
export class MemoryTracker {
  private readonly usage = new WeakMap<ReadonlyInstance, MemoryUsage>();
  private readonly awake = new WeakMap<ReadonlyInstance, number>();

  constructor(private readonly detector: Detector) {
    // What it holds as it falls asleep is its awake memory (read before the freeze, long before a reclaim).
    detector.on('transition', ({ instance, to }) => {
      if (to !== 'pausing' || !instance.runtime.memory) return;
      void instance.runtime.memory().then((usage) => usage && this.awake.set(instance, Math.max(this.awake.get(instance) ?? 0, usage.residentBytes + usage.compressedBytes))).catch(() => undefined);
    });
  }

  async refresh(): Promise<void> {
    await Promise.all(
      this.detector.instances().map(async (i) => {
        if (!i.runtime.memory) return;
        const usage = await i.runtime.memory().catch(() => undefined);
        if (!usage) {
          this.usage.delete(i);
          return;
        }
        this.usage.set(i, usage);
        if (i.state === 'running') this.awake.set(i, Math.max(this.awake.get(i) ?? 0, usage.residentBytes + usage.compressedBytes));
      }),
    );
  }

  view(i: ReadonlyInstance): InstanceMemoryView | null {
    const usage = this.usage.get(i);
    if (!usage) return null;
    return { ...usage, nodeBytes: usage.residentBytes + usage.compressedBytes, awakeBytes: this.awake.get(i) ?? null, reclaim: i.runtime.reclaimState?.() ?? null };
  }

  /** What a sleeper gives back now, measured (its awake memory minus what it holds); undefined when not measured. */
  freedBytes(i: ReadonlyInstance): number | undefined {
    const usage = this.usage.get(i);
    const awake = this.awake.get(i);
    if (i.state !== 'sleeping' || !usage || awake === undefined) return undefined;
    return Math.max(0, awake - usage.residentBytes);
  }

  node(): NodeMemoryView {
    const swap = readNodeSwap();
    let residentBytes = 0;
    let compressedBytes = 0;
    let freedBytes = 0;
    for (const i of this.detector.instances()) {
      const usage = this.usage.get(i);
      if (!usage) continue;
      residentBytes += usage.residentBytes;
      compressedBytes += usage.compressedBytes;
      const awake = this.awake.get(i);
      if (i.state === 'sleeping' && awake !== undefined) freedBytes += Math.max(0, awake - usage.residentBytes - usage.compressedBytes);
    }
    return { swap: { available: swap.available, totalBytes: swap.totalBytes, usedBytes: swap.usedBytes, reason: swap.reason }, residentBytes, compressedBytes, freedBytes };
  }
}
