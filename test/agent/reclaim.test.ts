import test, { type ExecutionContext } from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from '../../agent/agent.js';
import { readNodeSwap } from '../../agent/cgroups/node-swap.js';
import type { ReclaimOutcome } from '../../agent/runtimes/freezer-reclaim.js';
import { MAX_CONCURRENT_RECLAIMS } from '../../agent/runtimes/reclaim-slots.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { createBpffs } from '../helpers/bpffs.js';
import { logShows, spawnCli } from '../helpers/cli.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { createMemoryInstance } from '../helpers/memory-instance.js';
import { createZramSwap, holdSwapLock, swapHeldByTests, zramUnavailable } from '../helpers/zram.js';

// Real cgroups, a real zram swap device of the test's own (docs/memory.md).
const MiB = 1 << 20;
const noZram = zramUnavailable();
const withSwap = noZram ? test.serial.skip : test.serial;
if (noZram) console.log(`# reclaim tests that need swap skipped: ${noZram}`);

/** The next reclaim outcome of `id` after `sinceMs` (bounded poll: the reclaim runs in the runtime, on its own timer). */
async function reclaimAfter(agent: Agent, id: string, sinceMs: number, timeoutMs = 15_000): Promise<ReclaimOutcome> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const last = agent.detector.get(id)!.runtime.reclaimState?.()?.last;
    if (last && last.atMs >= sinceMs) return last;
    if (Date.now() > until) throw new Error(`no reclaim of ${id} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function wakeWithRequest(t: ExecutionContext, agent: Agent, url: string): Promise<number> {
  const running = nextState(agent, 'web', 'running', 10_000);
  const r = await get(`${url}/data`, 10_000);
  await running;
  t.is(r.status, 200);
  return r.ms;
}

withSwap('a 200 MiB app with reclaim gives its memory back asleep and wakes fast with its data intact, three cycles', async (t) => {
  await createZramSwap(t);
  const inst = await createMemoryInstance(t, 200);
  const awake = await inst.residentBytes();
  t.true(awake > 200 * MiB, `awake it holds ${(awake / MiB).toFixed(0)} MiB`);
  const agent = await startAgent(t, { instances: [inst.config({}, { reclaim: true, reclaimAfter: '200ms' })] });
  const firsts: number[] = [];
  for (let cycle = 1; cycle <= 3; cycle++) {
    const since = Date.now();
    await inState(agent, 'web', 'sleeping', 5000);
    const outcome = await reclaimAfter(agent, 'web', since);
    t.is(outcome.result, 'done', `cycle ${cycle}: ${outcome.reason}`);
    const asleep = await inst.residentBytes();
    t.log(`cycle ${cycle}: awake ${(awake / MiB).toFixed(1)} MiB, asleep ${(asleep / MiB).toFixed(1)} MiB, reclaim ${outcome.ms} ms, ${(outcome.swappedBytes / MiB).toFixed(0)} MiB in swap`);
    t.true(asleep < awake * 0.1, `cycle ${cycle}: asleep it still holds ${(asleep / MiB).toFixed(1)} MiB of ${(awake / MiB).toFixed(1)}`);
    t.is(await inst.cgroup.freezerState(), 'FROZEN', 'frozen throughout the reclaim');
    if (cycle === 3) {
      // Seen where it lives: the API, the status page and the metrics.
      const [view] = JSON.parse((await get(`http://${agent.address}/api/instances`)).body);
      t.true(view.memoryUsage.residentBytes < awake * 0.1 && view.memoryUsage.swappedBytes > 150 * MiB, JSON.stringify(view.memoryUsage));
      // Awake it held what it had faulted back since the last reclaim (its working set), not all 200 MiB.
      t.true(view.memoryUsage.awakeBytes > view.memoryUsage.residentBytes, JSON.stringify(view.memoryUsage));
      t.like(view.memoryUsage.reclaim, { enabled: true, reclaimed: true, last: { result: 'done' } });
      const status = JSON.parse((await get(`http://${agent.address}/api/status`)).body);
      t.true(status.memory.swap.available && status.memory.freedBytes > 0, JSON.stringify(status.memory));
      t.regex((await get(`http://${agent.address}/`)).body, /MiB awake<br>[\d.]+ MiB asleep<br><span class="muted">\d+ MiB in swap/);
      const metrics = (await get(`http://${agent.address}/metrics`)).body;
      t.regex(metrics, /doze_instance_memory_bytes\{instance="web",state="swapped"\} \d{9}/);
      t.regex(metrics, /doze_reclaims_total\{instance="web",runtime="freezer",result="done"\} [23]/);
      t.regex(metrics, /doze_reclaim_seconds_count\{instance="web",runtime="freezer"\} [23]/);
    }
    const ms = await wakeWithRequest(t, agent, inst.app.url);
    t.log(`cycle ${cycle}: first request after the reclaimed sleep ${ms.toFixed(1)} ms`);
    firsts.push(ms);
    // The bound per request is loose: the machine is shared and the faults are CPU work (decompression).
    t.true(ms < 250, `cycle ${cycle}: the first request took ${ms.toFixed(1)} ms`);
  }
  const median = [...firsts].sort((a, b) => a - b)[1]!;
  t.true(median < 100, `first requests after reclaimed sleeps: ${firsts.map((v) => v.toFixed(1)).join(', ')} ms`);
  const check = await get(`${inst.app.url}/data/check`, 20_000);
  t.is(check.status, 200);
  t.regex(check.body, /^intact/);
});

withSwap("two reclaimed sleepers on zram: each is charged its share of zram's memory, at most what it swapped, and together no more than zram holds; the API, metrics and page show it", async (t) => {
  const swap = await createZramSwap(t);
  const a = await createMemoryInstance(t, 100, 'web');
  const b = await createMemoryInstance(t, 50, 'api');
  const agent = await startAgent(t, { instances: [a.config({}, { reclaim: true, reclaimAfter: '100ms' }), b.config({}, { reclaim: true, reclaimAfter: '100ms' })] });
  const since = Date.now();
  await Promise.all([inState(agent, 'web', 'sleeping', 5000), inState(agent, 'api', 'sleeping', 5000)]);
  const reclaims = [await reclaimAfter(agent, 'web', since), await reclaimAfter(agent, 'api', since)];
  t.deepEqual(reclaims.map((r) => r.result), ['done', 'done']);
  // One reclaim at a time on a 2-core node (reclaim-slots.ts): the two ran one after the other.
  if (MAX_CONCURRENT_RECLAIMS === 1) {
    const [first, second] = [...reclaims].sort((x, y) => x.atMs - y.atMs);
    t.true(second!.atMs - second!.ms >= first!.atMs - 5, `overlapping reclaims: ${JSON.stringify(reclaims)}`);
  }
  const views = JSON.parse((await get(`http://${agent.address}/api/instances`)).body) as Array<{ id: string; memoryUsage: { residentBytes: number; swappedBytes: number; compressedBytes: number; nodeBytes: number } }>;
  // Every zram device on the node (other tests may have their own): the shares are of all of them.
  const zramTotal = await swap.memUsedBytes();
  let sum = 0;
  for (const { id, memoryUsage: m } of views) {
    t.log(`${id}: resident ${(m.residentBytes / MiB).toFixed(1)} MiB, swapped ${(m.swappedBytes / MiB).toFixed(1)} MiB, compressed ${(m.compressedBytes / MiB).toFixed(1)} MiB (zram holds ${(zramTotal / MiB).toFixed(1)} MiB)`);
    t.true(m.compressedBytes > 0 && m.compressedBytes <= m.swappedBytes, `${id}: ${JSON.stringify(m)}`);
    t.is(m.nodeBytes, m.residentBytes + m.compressedBytes);
    sum += m.compressedBytes;
  }
  const allZram = readNodeSwap()
    .devices.filter((d) => /zram\d+$/.test(d.name))
    .reduce((total, d) => total + Number(readFileSync(`/sys/block/${d.name.split('/').pop()}/mm_stat`, 'utf8').trim().split(/\s+/)[2]), 0);
  t.true(sum <= allZram * 1.05, `the shares add up to ${(sum / MiB).toFixed(1)} MiB, zram holds ${(allZram / MiB).toFixed(1)} MiB`);
  // The app of 100 MiB costs the node more than its cgroup shows, and less than awake.
  const web = views.find((v) => v.id === 'web')!.memoryUsage;
  t.true(web.nodeBytes > web.residentBytes && web.nodeBytes < 100 * MiB, JSON.stringify(web));
  const metrics = (await get(`http://${agent.address}/metrics`)).body;
  t.regex(metrics, /doze_instance_memory_bytes\{instance="web",state="compressed"\} \d{7,}/);
  t.regex((await get(`http://${agent.address}/`)).body, /MiB in swap, [\d.]+ MiB compressed/);
  const status = JSON.parse((await get(`http://${agent.address}/api/status`)).body);
  t.true(status.memory.compressedBytes > 0, JSON.stringify(status.memory));
});

/** Major faults of the memory cgroup so far (v1 memory.stat total_pgmajfault): pages read back from swap. */
async function majorFaults(memoryDir: string): Promise<number> {
  return Number(/^total_pgmajfault (\d+)$/m.exec(await readFile(join(memoryDir, 'memory.stat'), 'utf8'))?.[1] ?? NaN);
}

withSwap('working-set reclaim keeps what the app touched since the last reclaim: the next wake reads almost nothing back from swap, the rest of its memory still goes, and the limit is put back', async (t) => {
  await createZramSwap(t);
  const inst = await createMemoryInstance(t, 100);
  const limitFile = join(inst.memoryDir, 'memory.limit_in_bytes');
  const limit = (await readFile(limitFile, 'utf8')).trim();
  const agent = await startAgent(t, { instances: [inst.config({}, { reclaim: true, reclaimAfter: '100ms', reclaimKeep: 'working-set' })] });
  const awake = await inst.residentBytes();
  const request = async () => {
    const running = nextState(agent, 'web', 'running', 10_000);
    const faults = await majorFaults(inst.memoryDir);
    const r = await get(`${inst.app.url}/data?at=7`, 10_000);
    await running;
    t.is(r.status, 200);
    return { ms: r.ms, faults: (await majorFaults(inst.memoryDir)) - faults };
  };
  const cycle = async () => {
    const since = Date.now();
    await inState(agent, 'web', 'sleeping', 5000);
    const outcome = await reclaimAfter(agent, 'web', since);
    t.is(outcome.result, 'done', outcome.reason ?? '');
    const asleep = await inst.residentBytes();
    t.is((await readFile(limitFile, 'utf8')).trim(), limit, 'the limit is back while it still sleeps');
    return { asleep, ...(await request()) };
  };
  // The first sleep knows no working set yet: everything goes, and the first request faults its pages back.
  const first = await cycle();
  // From the second on, what it touched since stays: the same request reads (almost) nothing from swap.
  const second = await cycle();
  const third = await cycle();
  for (const [n, c] of [first, second, third].entries()) t.log(`cycle ${n + 1}: asleep ${(c.asleep / MiB).toFixed(1)} of ${(awake / MiB).toFixed(1)} MiB, first request ${c.ms.toFixed(1)} ms, ${c.faults} major faults`);
  t.true(first.faults > 100, `the full reclaim's wake faulted only ${first.faults} pages back`);
  t.true(third.faults < first.faults / 4, `working-set wake faulted ${third.faults} pages against ${first.faults} after the full reclaim`);
  t.true(third.asleep < awake * 0.35, `asleep it still holds ${(third.asleep / MiB).toFixed(1)} of ${(awake / MiB).toFixed(1)} MiB`);
  t.true(third.asleep > first.asleep, 'and more than the full reclaim left: its working set');
  t.regex((await get(`${inst.app.url}/data/check`, 20_000)).body, /^intact/);
});

// A swap another test file holds is gone by the time this case has the swap lock; only the node's own counts here.
const noSwapNow = readNodeSwap().available && !swapHeldByTests() ? 'the node has swap of its own right now (not a test\'s): the no-swap case cannot be shown' : undefined;
(noSwapNow || process.getuid?.() !== 0 ? test.serial.skip : test.serial)('without swap an instance with reclaim sleeps as a plain freezer instance, and the reason is shown', async (t) => {
  t.timeout(180_000);
  await holdSwapLock(t, 'exclusive', 150_000);
  t.false(readNodeSwap().available, 'no swap on the node while no test holds one');
  const inst = await createMemoryInstance(t, 20);
  const agent = await startAgent(t, { instances: [inst.config({}, { reclaim: true, reclaimAfter: '100ms' })] });
  const since = Date.now();
  await inState(agent, 'web', 'sleeping', 5000);
  const outcome = await reclaimAfter(agent, 'web', since);
  t.is(outcome.result, 'skipped');
  t.regex(outcome.reason ?? '', /no swap on this node/);
  const status = (await get(`http://${agent.address}/api/status`)).body;
  t.like(JSON.parse(status).memory.swap, { available: false });
  const [view] = JSON.parse((await get(`http://${agent.address}/api/instances`)).body);
  t.like(view.memoryUsage.reclaim, { enabled: false });
  t.regex(view.memoryUsage.reclaim.reason, /no swap/);
  t.regex((await get(`http://${agent.address}/`)).body, /no swap on this node/);
  // Nothing failed: it wakes as any freezer instance.
  const ms = await wakeWithRequest(t, agent, inst.app.url);
  t.true(ms < 100, `first request ${ms.toFixed(1)} ms`);
  t.is(agent.detector.get('web')!.failure, undefined);
});

withSwap('a request during a reclaim stops it and is answered without waiting for it', async (t) => {
  await createZramSwap(t);
  const inst = await createMemoryInstance(t, 200);
  const agent = await startAgent(t, { instances: [inst.config({}, { reclaim: true, reclaimAfter: 0 })] });
  const since = Date.now();
  await inState(agent, 'web', 'sleeping', 5000);
  const runtime = agent.detector.get('web')!.runtime;
  // Bounded wait for the writer to be under way (the reclaim of 200 MiB takes hundreds of ms here).
  const until = Date.now() + 5000;
  const handle = () => readFile(join('/run/doze/freezer', `${inst.cgroup.name.replace(/[^A-Za-z0-9._-]/g, '_')}.json`), 'utf8').catch(() => '');
  while (!/writerPid/.test(await handle()) && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 5));
  const during = await inst.residentBytes();
  // The writer compresses at SCHED_IDLE (policy 5, /proc/PID/stat field 41): never ahead of an awake app.
  const writerPid = Number(/"writerPid": (\d+)/.exec(await handle())?.[1]);
  const stat = readFileSyncSafe(`/proc/${writerPid}/stat`);
  const policy = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3];
  const ms = await wakeWithRequest(t, agent, inst.app.url);
  const wakeMs = agent.detector.get('web')!.lastWakeMs!;
  const outcome = await reclaimAfter(agent, 'web', since);
  t.log(`request during the reclaim: ${ms.toFixed(1)} ms (wake ${wakeMs.toFixed(2)} ms), reclaim ${outcome.result} after ${outcome.ms} ms, ${(during / MiB).toFixed(0)} MiB resident when it came`);
  t.is(outcome.result, 'cancelled');
  t.is(policy, '5', `the writer's scheduling policy (${stat.slice(0, 60)})`);
  t.true(wakeMs < 20, `the thaw waited: ${wakeMs} ms`);
  t.true(ms < 200, `the request took ${ms.toFixed(1)} ms`);
  t.false(runtime.reclaimState!()!.reclaimed);
  t.regex((await get(`${inst.app.url}/data/check`, 20_000)).body, /^intact/);
});

withSwap("Nomad's swap settings (swappiness 0; docker's memsw = limit) are lifted for the reclaim and put back", async (t) => {
  await createZramSwap(t);
  const limit = String(400 * MiB);
  const inst = await createMemoryInstance(t, 100, 'web', { 'memory.limit_in_bytes': limit, 'memory.memsw.limit_in_bytes': limit, 'memory.swappiness': '0' });
  const swappiness = async () => (await readFile(join(inst.memoryDir, 'memory.swappiness'), 'utf8')).trim();
  const agent = await startAgent(t, { instances: [inst.config({}, { reclaim: true, reclaimAfter: '100ms' })] });
  const awake = await inst.residentBytes();
  const since = Date.now();
  await inState(agent, 'web', 'sleeping', 5000);
  const outcome = await reclaimAfter(agent, 'web', since);
  t.is(outcome.result, 'done', outcome.reason ?? '');
  t.true(outcome.swappedBytes > 90 * MiB, `only ${(outcome.swappedBytes / MiB).toFixed(0)} MiB reached swap under swappiness 0`);
  t.true((await inst.residentBytes()) < awake * 0.1);
  t.is(await swappiness(), '0', 'put back while still asleep');
  t.is((await readFile(join(inst.memoryDir, 'memory.memsw.limit_in_bytes'), 'utf8')).trim(), limit, 'memsw left as Nomad set it');
  await wakeWithRequest(t, agent, inst.app.url);
  t.is(await swappiness(), '0');
});

withSwap('SIGKILL the agent during a reclaim: a restarted agent adopts the instance asleep, stops the orphaned writer, reclaims again, puts the swap setting back, and the next request wakes it', async (t) => {
  t.timeout(90_000);
  await createZramSwap(t);
  const inst = await createMemoryInstance(t, 200, 'web', { 'memory.swappiness': '0' });
  const bpffs = await createBpffs(t);
  const chainPrefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, chainPrefix);
  const instanceConfig = inst.config({}, { reclaim: true, reclaimAfter: 0 });
  const file = join(tmpdir(), `dz-reclaim-${uniqueSuffix()}.json`);
  t.teardown(() => rm(file, { force: true }));
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', bpffs, netfilter: { chainPrefix }, instances: [instanceConfig] }));
  const crashed = spawnCli(['agent', '--config', file]);
  t.teardown(() => crashed.kill('SIGKILL'));
  await logShows(crashed, /"to":"sleeping"/, 30_000);
  const handleFile = join('/run/doze/freezer', `${inst.cgroup.name.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
  const until = Date.now() + 10_000;
  let handle = '';
  while (!/writerPid/.test(handle) && Date.now() < until) {
    handle = await readFile(handleFile, 'utf8').catch(() => '');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  t.regex(handle, /writerPid/, 'the reclaim was under way');
  crashed.kill('SIGKILL');
  await new Promise((resolve) => crashed.once('exit', resolve));
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'left asleep by the crash');
  const agent = await startAgent(t, { bpffs, instances: [instanceConfig] });
  t.is(agent.detector.get('web')!.state, 'sleeping', 'adopted asleep');
  const writerPid = Number(/"writerPid": (\d+)/.exec(handle)![1]);
  t.false(existsSync(`/proc/${writerPid}`) && readFileSyncSafe(`/proc/${writerPid}/cmdline`).includes('doze-reclaim'), 'the orphaned writer is gone');
  // Its reclaim runs again (reclaimAfter 0) and is done before the request.
  const outcome = await reclaimAfter(agent, 'web', 0);
  t.is(outcome.result, 'done', outcome.reason ?? '');
  t.true((await inst.residentBytes()) < 20 * MiB);
  t.is((await readFile(join(inst.memoryDir, 'memory.swappiness'), 'utf8')).trim(), '0', 'the lifted swappiness was put back');
  const ms = await wakeWithRequest(t, agent, inst.app.url);
  t.log(`first request after the crash: ${ms.toFixed(1)} ms`);
  t.regex((await get(`${inst.app.url}/data/check`, 20_000)).body, /^intact/);
});

function readFileSyncSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

withSwap('working-set prefetch records what the app used since a reclaimed wake and reads it back on the next wake', async (t) => {
  await createZramSwap(t);
  const inst = await createMemoryInstance(t, 100);
  const handleFile = join(tmpdir(), `dz-reclaim-${uniqueSuffix()}.json`);
  t.teardown(() => rm(handleFile, { force: true }));
  t.teardown(() => rm(`${handleFile}.working-set`, { force: true }));
  const agent = await startAgent(t, { instances: [inst.config({}, { reclaim: true, reclaimAfter: '100ms', prefetch: true, handleFile })] });
  const cycle = async () => {
    const since = Date.now();
    await inState(agent, 'web', 'sleeping', 5000);
    t.is((await reclaimAfter(agent, 'web', since)).result, 'done');
    return wakeWithRequest(t, agent, `${inst.app.url}`);
  };
  await cycle();
  t.false(existsSync(`${handleFile}.working-set`), 'nothing recorded before a reclaimed wake: the first sleep holds everything the app ever touched');
  await cycle();
  const recorded = (await readFile(`${handleFile}.working-set`, 'utf8')).trim().split('\n');
  const bytes = recorded.reduce((sum, line) => sum + Number(line.split(' ')[2]), 0);
  t.log(`working set recorded: ${recorded.length} ranges, ${(bytes / MiB).toFixed(1)} MiB`);
  t.true(bytes > 0 && bytes < 40 * MiB, `${bytes} bytes`);
  const ms = await cycle();
  t.log(`first request with prefetch: ${ms.toFixed(1)} ms`);
  t.regex((await get(`${inst.app.url}/data/check`, 20_000)).body, /^intact/);
});

(process.getuid?.() !== 0 ? test.serial.skip : test.serial)('an instance without a memory cgroup of its own never has a shared one reclaimed: reclaim is off and says why', async (t) => {
  // Its app is in a freezer cgroup only: its memory cgroup is the one the test runner is in.
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ runtime: { kind: 'freezer', cgroup: inst.cgroup.name, reclaim: true, reclaimAfter: 0 } })] });
  const [view] = JSON.parse((await get(`http://${agent.address}/api/instances`)).body);
  t.is(view.memoryUsage, null, 'no memory is reported for it');
  const state = agent.detector.get('web')!.runtime.reclaimState!()!;
  t.false(state.enabled);
  t.regex(state.reason ?? '', /no memory cgroup of its own/);
  await inState(agent, 'web', 'sleeping', 5000);
  t.is(agent.detector.get('web')!.runtime.reclaimState!()!.last, null, 'nothing was reclaimed');
});
