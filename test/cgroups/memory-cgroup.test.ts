import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { liftSettings, readMemoryUsage, reclaimRequest, restoreSettings, swapBlockers } from '../../agent/cgroups/memory-cgroup.js';
import { parseSwaps } from '../../agent/cgroups/node-swap.js';

// Control files as plain files in a directory of the test's own: the decisions, without a kernel.
async function fakeCgroup(t: { teardown(fn: () => unknown): void }, files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-memcg-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [name, value] of Object.entries(files)) await writeFile(join(dir, name), value);
  return dir;
}

test('/proc/swaps: devices and totals; none is no swap, with the reason', (t) => {
  const none = parseSwaps('Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n');
  t.false(none.available);
  t.regex(none.reason!, /no swap on this node/);
  const one = parseSwaps('Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram1                              partition\t1048572\t\t2048\t\t100\n');
  t.true(one.available);
  t.is(one.reason, null);
  t.deepEqual(one.devices, [{ name: '/dev/zram1', type: 'partition', sizeBytes: 1048572 * 1024, usedBytes: 2048 * 1024, priority: 100 }]);
});

test("v1: Nomad's swappiness 0 is lifted for the reclaim and put back; a non-zero one is left alone", async (t) => {
  const dir = await fakeCgroup(t, { 'memory.swappiness': '0\n' });
  const blockers = swapBlockers({ version: 1, dir }, 60);
  t.deepEqual(blockers, [{ file: join(dir, 'memory.swappiness'), value: '0', open: '60' }]);
  liftSettings(blockers);
  t.is(await readFile(join(dir, 'memory.swappiness'), 'utf8'), '60');
  restoreSettings(blockers);
  t.is(await readFile(join(dir, 'memory.swappiness'), 'utf8'), '0');
  t.deepEqual(swapBlockers({ version: 1, dir: await fakeCgroup(t, { 'memory.swappiness': '30\n' }) }), []);
});

test("v2: docker's memory.swap.max 0 is opened to max for the reclaim; max is left alone", async (t) => {
  const dir = await fakeCgroup(t, { 'memory.swap.max': '0\n' });
  t.deepEqual(swapBlockers({ version: 2, dir }), [{ file: join(dir, 'memory.swap.max'), value: '0', open: 'max' }]);
  t.deepEqual(swapBlockers({ version: 2, dir: await fakeCgroup(t, { 'memory.swap.max': 'max\n' }) }), []);
});

test('usage and swap are read per version; the reclaim request is force_empty on v1, memory.reclaim of the usage on v2', async (t) => {
  const v1 = await fakeCgroup(t, { 'memory.usage_in_bytes': '2621440\n', 'memory.stat': 'cache 0\nrss 1\nswap 100\ntotal_swap 235929600\n' });
  // The node: 300 MiB swapped, zram holding 120 MiB for it: this cgroup's 225 MiB are charged 90 MiB.
  const node = () => ({ swappedBytes: 300 * 2 ** 20, zramMemoryBytes: 120 * 2 ** 20 });
  t.deepEqual(await readMemoryUsage({ version: 1, dir: v1 }, node), { residentBytes: 2621440, swappedBytes: 235929600, compressedBytes: 90 * 2 ** 20 });
  const v2 = await fakeCgroup(t, { 'memory.current': '4096\n', 'memory.swap.current': '8192\n' });
  t.deepEqual(await readMemoryUsage({ version: 2, dir: v2 }, node), { residentBytes: 4096, swappedBytes: 8192, compressedBytes: 3276 });
  t.deepEqual(reclaimRequest({ version: 1, dir: v1 }, 123), { file: join(v1, 'memory.force_empty'), value: '0' });
  t.deepEqual(reclaimRequest({ version: 2, dir: v2 }, 4096), { file: join(v2, 'memory.reclaim'), value: '4096' });
});
