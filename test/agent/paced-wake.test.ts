import test from 'ava';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TransitionEvent } from '../../agent/detector/detector.js';
import { FAULT_BACK_QUIET_MS } from '../../agent/detector/fault-back.js';
import { startAgent } from '../helpers/agent.js';
import { rmdirRetry } from '../helpers/cgroup.js';
import { get } from '../helpers/http.js';
import { createMemoryInstance, type MemoryInstance } from '../helpers/memory-instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { createZramSwap, zramUnavailable } from '../helpers/zram.js';

/*
 * Paced mass wakes with real apps: 20 freezer instances whose memory was reclaimed to a zram swap
 * of the test's own, woken by an agent stop under a memory budget that fits 5 of them. Each app
 * reads every page it holds as soon as it finds it was stopped (demo/app.mjs
 * DOZE_APP_TOUCH_AFTER_PAUSE), so a wake faults all of it back, with no request. Their memory
 * cgroups share a parent whose limit, set once they sleep, holds about 7 of them awake: the node's
 * memory, oversubscribed by the 20.
 */

const MiB = 2 ** 20;
const APPS = 20;
const HOLD_MIB = 32;
const noZram = zramUnavailable();
const withSwap = noZram ? test.serial.skip : test.serial;
if (noZram) console.log(`# paced wake test skipped: ${noZram}`);

const statValue = async (dir: string, file: string, key: string) => {
  const line = (await readFile(join(dir, file), 'utf8')).split('\n').find((l) => l.startsWith(`${key} `));
  return Number(line?.split(' ')[1] ?? 0);
};

/**
 * Every 20 ms, each app's major faults (pages read back from swap or disk), until stopped: when
 * each one faulted its memory back, measured apart from the agent.
 */
function sampleFaults(apps: MemoryInstance[]) {
  const samples: { atMs: number; faults: number[] }[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const faults = await Promise.all(apps.map((a) => statValue(a.memoryDir, 'memory.stat', 'total_pgmajfault')));
      samples.push({ atMs: performance.now(), faults });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      // An app faults back from its first fault to its last one before a quiet spell of
      // FAULT_BACK_QUIET_MS: the wake's burst, as the agent's own measure takes it. Faults after
      // such a spell are another episode: under this test's tight parent limit, apps woken later
      // push earlier ones' pages out again (and an app stalled over a second by that sweeps its
      // memory again), which no pacing of wakes decides.
      return apps.map((_, i) => {
        const first = samples[0]!.faults[i]!;
        const total = samples.at(-1)!.faults[i]! - first;
        const startAt = samples.findIndex((s) => s.faults[i]! > first);
        if (startAt < 0) return { faults: total, start: undefined, end: undefined };
        let end = samples[startAt]!.atMs;
        for (let n = startAt + 1; n < samples.length; n++) {
          if (samples[n]!.faults[i]! === samples[n - 1]!.faults[i]!) continue;
          if (samples[n]!.atMs - end >= FAULT_BACK_QUIET_MS) break;
          end = samples[n]!.atMs;
        }
        return { faults: total, start: samples[startAt]!.atMs, end };
      });
    },
  };
}

withSwap('an agent stop wakes 20 reclaimed sleepers under a memory budget that fits 5: no OOM kill, all woken, most recently used first, at most 5 faulting back at once', async (t) => {
  t.timeout(240_000);
  await createZramSwap(t, '2G');
  const parent = join('/sys/fs/cgroup/memory', `dz-${uniqueSuffix()}`);
  await mkdir(parent);
  t.teardown(() => rmdirRetry(parent));
  const apps: MemoryInstance[] = [];
  for (let i = 0; i < APPS; i++) apps.push(await createMemoryInstance(t, HOLD_MIB, `s${i}`, {}, parent, { DOZE_APP_TOUCH_AFTER_PAUSE: '1' }));
  // The budget fits 5 awake: in MiB, 5.5 typical apps; and 5 by count, as the apps' sizes differ by
  // up to a quarter (pages they share, the node binary's, are charged to one cgroup at a time and move
  // with reclaims: 73–91 MiB before reclaim with 64 MiB of data each), so MiB alone would let 4 to 6 through.
  const resident = (await Promise.all(apps.map((a) => a.residentBytes()))).map((b) => b / MiB).sort((a, b) => a - b);
  const residentMiB = resident[APPS >> 1]!;
  const budgetMiB = Math.floor(5.5 * residentMiB);
  t.log(`the apps hold ${resident[0]!.toFixed(1)}–${resident.at(-1)!.toFixed(1)} MiB awake (median ${residentMiB.toFixed(1)}); budget: 5 awake, ${budgetMiB} MiB`);
  const agent = await startAgent(t, {
    budget: { maxActive: 5, maxActiveMemory: budgetMiB },
    // 2 s: none falls asleep (and is woken half faulted back) while the loop below uses them all.
    instances: apps.map((a) => a.config({ idleTimeout: '2s', idlePolicy: 'traffic' }, { reclaim: true, reclaimAfter: '200ms' })),
  });
  // Used in order, s0 first and s19 last: the wake order must be s19 … s0.
  for (const app of apps) t.is((await get(`${app.app.url}/`, 10_000)).status, 200);
  t.true(agent.detector.instances().every((i) => i.sleeps === 0), 'none slept while they were used');
  const reclaimedBy = Date.now() + 60_000;
  const reclaimed = () => apps.every((_, i) => agent.detector.get(`s${i}`)!.state === 'sleeping' && agent.detector.get(`s${i}`)!.runtime.reclaimState?.()?.reclaimed);
  while (!reclaimed()) {
    if (Date.now() > reclaimedBy) return t.fail(`not all 20 asleep and reclaimed within 60 s: ${agent.detector.instances().map((i) => `${i.id} ${i.state} ${i.runtime.reclaimState?.()?.reclaimed}`).join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const faultBack = apps.map((_, i) => (agent.detector.get(`s${i}`)!.runtime.reclaimState?.()?.last?.beforeBytes ?? 0) / MiB);
  t.log(`memory before reclaim: ${Math.min(...faultBack).toFixed(1)}–${Math.max(...faultBack).toFixed(1)} MiB; asleep the 20 hold ${(Number(await readFile(join(parent, 'memory.usage_in_bytes'), 'utf8')) / MiB).toFixed(0)} MiB`);
  // The node: room for about 7 of them awake.
  await writeFile(join(parent, 'memory.limit_in_bytes'), String(Math.floor((budgetMiB + 2 * residentMiB) * MiB)));

  const waking: string[] = [];
  let lastRunningMs = 0;
  agent.detector.on('transition', (e: TransitionEvent) => {
    if (e.to === 'waking') waking.push(e.instance.id);
    if (e.to === 'running') lastRunningMs = performance.now();
  });
  const sampler = sampleFaults(apps);
  const startedMs = performance.now();
  const stopping = agent.stop();
  // The report, read while the instances are still managed (the stop releases them after the wakes).
  const pacing = await (async () => {
    while (waking.length < APPS && performance.now() - startedMs < 60_000) await new Promise((resolve) => setTimeout(resolve, 20));
    return { ...agent.detector.pacedWakes! };
  })();
  await stopping;
  const stoppedMs = performance.now() - startedMs;
  const faults = await sampler.stop();

  t.deepEqual(waking, apps.map((_, i) => `s${i}`).reverse(), 'woken most recently used first');
  const allWokeMs = lastRunningMs - startedMs;
  const windows = faults.filter((f) => f.start !== undefined && f.end !== undefined) as { start: number; end: number; faults: number }[];
  const peak = Math.max(...windows.map((a) => windows.filter((b) => b.start <= a.start && a.start <= b.end).length));
  t.log(`all 20 woken in ${allWokeMs.toFixed(0)} ms (agent stop ${stoppedMs.toFixed(0)} ms); ${Math.min(...windows.map((w) => w.faults))}–${Math.max(...windows.map((w) => w.faults))} major faults each`);
  t.log(`peak faulting back at once: ${peak} measured from the apps' major faults, ${pacing.peakFaulting} (${pacing.peakFaultingMiB} MiB) by the agent; over the deadline: ${pacing.overDeadline.length}`);
  t.log(`fault-back windows (ms from the stop): ${faults.map((f, i) => `s${i} ${((f.start ?? NaN) - startedMs).toFixed(0)}–${((f.end ?? NaN) - startedMs).toFixed(0)}`).join(', ')}`);
  t.is(windows.length, APPS, 'every app faulted its memory back');
  t.true(pacing.peakFaulting >= 4 && pacing.peakFaulting <= 5, `the agent let ${pacing.peakFaulting} fault back at once`);
  t.true(pacing.peakFaultingMiB <= budgetMiB, `${pacing.peakFaultingMiB} MiB faulting back at once`);
  t.true(peak <= 5, `${peak} apps faulted back at once`);
  t.deepEqual(pacing.overDeadline, []);
  // All alive and serving, none killed.
  for (const app of apps) {
    t.is(await app.cgroup.freezerState(), 'THAWED');
    t.is((await get(`${app.app.url}/`, 10_000)).status, 200);
  }
  const kills = await Promise.all([parent, ...apps.map((a) => a.memoryDir)].map((dir) => statValue(dir, 'memory.oom_control', 'oom_kill')));
  t.deepEqual(kills.filter((k) => k > 0), [], 'no OOM kill');
});
