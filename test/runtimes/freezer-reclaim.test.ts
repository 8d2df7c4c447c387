import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FreezerRuntime } from '../../agent/runtimes/freezer.js';
import type { NodeSwap } from '../../agent/cgroups/node-swap.js';

// A cgroup tree of plain files (freezer.state reads back what was written): the runtime's
// decisions without a kernel. The real thing is test/agent/reclaim.test.ts.
async function fakeTree(t: { teardown(fn: () => unknown): void }): Promise<{ root: string; memory: string; freezer: string }> {
  const root = await mkdtemp(join(tmpdir(), 'dz-cgroot-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const freezer = join(root, 'freezer', 'nomad', 'alloc.app');
  const memory = join(root, 'memory', 'nomad', 'alloc.app');
  await mkdir(freezer, { recursive: true });
  await mkdir(memory, { recursive: true });
  await writeFile(join(freezer, 'freezer.state'), 'THAWED');
  await writeFile(join(freezer, 'cgroup.procs'), '');
  await writeFile(join(memory, 'memory.usage_in_bytes'), String(200 << 20));
  await writeFile(join(memory, 'memory.stat'), 'total_swap 0\n');
  await writeFile(join(memory, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 0\n');
  await writeFile(join(memory, 'memory.swappiness'), '0');
  return { root, memory, freezer };
}

const swap = (available: boolean) => (): NodeSwap => ({ available, devices: [], totalBytes: available ? 1 << 30 : 0, usedBytes: 0, reason: available ? null : 'no swap on this node (test)' });

test('an OOM kill while it slept makes the wake fail, reported: the kernel killed a process of the task', async (t) => {
  const { root, memory } = await fakeTree(t);
  const runtime = new FreezerRuntime('nomad/alloc.app', root, { reclaim: { afterMs: 60_000 }, swap: swap(true) });
  t.true((await runtime.probe()).ok);
  t.like(runtime.reclaimState(), { enabled: true, reason: null });
  await runtime.sleep(1000);
  await writeFile(join(memory, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 1\n');
  const error = await t.throwsAsync(runtime.wake(1000));
  t.is((error as { code?: string }).code, 'E_OOM_KILLED');
  t.regex(error!.message, /OOM-killed a process of nomad\/alloc\.app while it slept/);
  t.is(await runtime.inspect(), 'running', 'thawed all the same');
});

test('the memory cgroup beside a Nomad freezer cgroup is found and measured; without swap reclaim is off with the reason', async (t) => {
  const { root, memory } = await fakeTree(t);
  const runtime = new FreezerRuntime('nomad/alloc.app', root, { reclaim: { afterMs: 0 }, swap: swap(false) });
  t.true((await runtime.probe()).ok);
  t.deepEqual(await runtime.memory(), { residentBytes: 200 << 20, swappedBytes: 0, compressedBytes: 0 });
  t.like(runtime.reclaimState(), { enabled: false, reason: 'no swap on this node (test)', afterMs: 0, reclaimed: false });
  t.true(runtime.capabilities.freesMemory);
  // A plain freezer instance asleep and awake: nothing of its memory cgroup changed.
  await runtime.sleep(1000);
  await runtime.wake(1000);
  t.is(await readFile(join(memory, 'memory.swappiness'), 'utf8'), '0');
});

test('without reclaim the runtime declares it frees no memory and reports no reclaim state', async (t) => {
  const { root } = await fakeTree(t);
  const runtime = new FreezerRuntime('nomad/alloc.app', root);
  t.true((await runtime.probe()).ok);
  t.false(runtime.capabilities.freesMemory);
  t.is(runtime.reclaimState(), undefined);
  t.truthy(await runtime.memory(), 'memory is measured all the same');
});

test('a configured memory cgroup that does not exist is a probe failure naming it', async (t) => {
  const { root } = await fakeTree(t);
  const probe = await new FreezerRuntime('nomad/alloc.app', root, { memoryCgroup: 'nomad/elsewhere' }).probe();
  t.false(probe.ok);
  t.regex(probe.reason!, /memory cgroup "nomad\/elsewhere" not found/);
});
