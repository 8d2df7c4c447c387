import test from 'ava';
import type { MemoryUsage } from '../../agent/cgroups/memory-cgroup.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import type { ReclaimState } from '../../agent/runtimes/runtime.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// Paced mass wakes in the detector (fake clock, fake runtimes that reclaim and fault back).

const MiB = 2 ** 20;
const FAULT_MS = 300;

/** A sleeper whose 60 MiB went to swap and come back over FAULT_MS after its wake, as pages fault in. */
class ReclaimedRuntime extends FakeRuntime {
  override readonly capabilities = { keepsProcess: true, freesMemory: true };
  wokeAtMs: number | undefined;
  constructor(private readonly mib = 60) {
    super();
  }
  override async wake(deadlineMs?: number): Promise<void> {
    await super.wake(deadlineMs);
    this.wokeAtMs = Date.now();
  }
  reclaimState(): ReclaimState {
    const asleep = this.state === 'asleep';
    return {
      enabled: true,
      reason: null,
      afterMs: 0,
      reclaimed: asleep,
      last: { result: 'done', atMs: 0, ms: 1, beforeBytes: this.mib * MiB, afterBytes: 0, swappedBytes: this.mib * MiB, reason: null },
    };
  }
  async memory(): Promise<MemoryUsage> {
    const back = this.wokeAtMs === undefined ? 0 : Math.min(1, (Date.now() - this.wokeAtMs) / FAULT_MS);
    return { residentBytes: back * this.mib * MiB, swappedBytes: (1 - back) * this.mib * MiB, compressedBytes: 0 };
  }
}

test.serial('an agent stop wakes 20 reclaimed sleepers under a budget that fits 5: most recently used first, at most 5 faulting back at once', async (t) => {
  const h = detectorHarness(t, { budget: { maxActiveMemory: 5 * 60, maxQueued: 64 } });
  const all = [];
  for (let i = 0; i < 20; i++) all.push(await h.add(`s${i}`, { idleTimeout: '1s' }, new ReclaimedRuntime()));
  // Used in order s0 … s19, 10 ms apart: s19 most recently.
  for (const { instance } of all) {
    h.source.packet(instance.key);
    await h.clock.tickAsync(10);
  }
  await h.clock.tickAsync(1500);
  t.true(all.every(({ instance }) => instance.state === 'sleeping'));
  const stopping = h.detector.stop({ wakeAll: true });
  await h.clock.tickAsync(20_000);
  await stopping;
  t.true(all.every(({ instance }) => instance.state === 'running'), 'all woken');
  const woke = all.map(({ instance, runtime }) => ({ id: instance.id, at: (runtime as ReclaimedRuntime).wokeAtMs! })).sort((a, b) => a.at - b.at || (a.id < b.id ? 1 : -1));
  t.deepEqual(woke.map((w) => w.id), all.map(({ instance }) => instance.id).reverse(), 'most recently used first');
  // Each one faults back over FAULT_MS from its wake: never more than 5 of those windows overlap.
  const peak = Math.max(...woke.map((a) => woke.filter((b) => b.at <= a.at && a.at < b.at + FAULT_MS).length));
  t.is(peak, 5);
  t.is(h.detector.pacedWakes!.peakFaulting, 5);
  t.is(h.detector.pacedWakes!.peakFaultingMiB, 300);
  t.deepEqual(h.detector.pacedWakes!.overDeadline, []);
  t.is(h.detector.budgetOverruns, 0);
});

test.serial('a paced wake still waiting at its deadline wakes over budget and is reported; a request to a waiting sleeper goes first', async (t) => {
  const h = detectorHarness(t, { budget: { maxActiveMemory: 60, maxQueued: 64, pacedWakeTimeout: 500 } });
  const all = [];
  for (let i = 0; i < 4; i++) all.push(await h.add(`s${i}`, { idleTimeout: '1s' }, new ReclaimedRuntime()));
  for (const { instance } of all) {
    h.source.packet(instance.key);
    await h.clock.tickAsync(10);
  }
  await h.clock.tickAsync(1500);
  const stopping = h.detector.stop({ wakeAll: true });
  await h.clock.tickAsync(1);
  t.is(all[3]!.instance.state, 'running', 's3 (most recent) first');
  h.source.packet(all[0]!.instance.key); // a request for the least recently used one, which waits
  // s3 holds the budget while it faults back (FAULT_MS); then the requested s0 goes before s2.
  await h.clock.tickAsync(400);
  t.is(all[0]!.instance.state, 'running');
  t.is(all[2]!.instance.state, 'sleeping');
  await h.clock.tickAsync(2000);
  await stopping;
  t.true(all.every(({ instance }) => instance.state === 'running'));
  const late = h.detector.pacedWakes!.overDeadline.map((o) => o.id).sort();
  t.deepEqual(late, ['s1', 's2'], 'the two still waiting at 500 ms went over budget, reported');
  t.regex(all[2]!.instance.lastError?.message ?? '', /woken over the node budget: no room for its 60 MiB to fault back within 500 ms \(paced wake\)/);
  t.is(h.detector.budgetOverruns, 2);
});

test.serial('removals that wake (a drain) are paced too: at most the budget faulting back at once, and none puts another to sleep for room', async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 2, maxQueued: 64 } });
  const all = [];
  for (let i = 0; i < 6; i++) all.push(await h.add(`s${i}`, { idleTimeout: '1s' }, new ReclaimedRuntime()));
  const { instance: busy } = await h.add('busy', { idleTimeout: '1h' });
  await h.clock.tickAsync(1500);
  t.true(all.every(({ instance }) => instance.state === 'sleeping'));
  const removing = Promise.all(all.map(({ instance }) => h.detector.remove(instance.id, { wake: true })));
  await h.clock.tickAsync(10_000);
  await removing;
  const woke = all.map(({ runtime }) => (runtime as ReclaimedRuntime).wokeAtMs!).sort((a, b) => a - b);
  t.is(woke.length, 6);
  t.is(Math.max(...woke.map((a) => woke.filter((b) => b <= a && a < b + FAULT_MS).length)), 2);
  t.is(h.detector.pacedWakes!.peakFaulting, 2);
  t.is(busy.state, 'running', 'the awake instance was not put to sleep to make room for a leaving one');
  t.is(busy.sleeps, 0);
});
