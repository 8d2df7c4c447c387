import test from 'ava';
import { measuredAsleepMiB } from '../../agent/detector/budget-members.js';
import type { ReadonlyInstance } from '../../agent/detector/managed-instance.js';

const MiB = 2 ** 20;
const instance = (id: string, state: string, freesMemory: boolean, usage: { residentBytes: number; swappedBytes: number; compressedBytes: number }) =>
  ({ id, state, runtime: { capabilities: { keepsProcess: true, freesMemory }, memory: async () => usage } }) as unknown as ReadonlyInstance;

test("a reclaimed sleeper weighs what it costs the node in the budget: resident plus its zram share, not its cgroup alone", async (t) => {
  const held = await measuredAsleepMiB([
    // 225 MiB app reclaimed to zram: 2.5 MiB left in its cgroup, 90 MiB of zram for its pages.
    instance('zram', 'sleeping', true, { residentBytes: 2.5 * MiB, swappedBytes: 222 * MiB, compressedBytes: 90 * MiB }),
    // The same on a swap file: its pages cost no RAM.
    instance('disk', 'sleeping', true, { residentBytes: 2.5 * MiB, swappedBytes: 222 * MiB, compressedBytes: 0 }),
    // Awake instances count their declared memory elsewhere; a plain freezer sleeper frees nothing.
    instance('awake', 'running', true, { residentBytes: 225 * MiB, swappedBytes: 0, compressedBytes: 0 }),
    instance('plain', 'sleeping', false, { residentBytes: 225 * MiB, swappedBytes: 0, compressedBytes: 0 }),
  ]);
  t.deepEqual([...held.entries()].sort(), [['disk', 3], ['zram', 93]]);
});
