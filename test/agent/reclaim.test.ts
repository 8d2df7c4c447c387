import test, { type ExecutionContext } from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Agent } from '../../agent/agent.js';
import { readNodeSwap } from '../../agent/cgroups/node-swap.js';
import type { ReclaimOutcome } from '../../agent/runtimes/freezer-reclaim.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { get } from '../helpers/http.js';
import { createMemoryInstance } from '../helpers/memory-instance.js';
import { createZramSwap, zramUnavailable } from '../helpers/zram.js';

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
  const running = nextState(agent, 'web', 'running', 5000);
  const r = await get(`${url}/data`);
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
  for (let cycle = 1; cycle <= 3; cycle++) {
    const since = Date.now();
    await nextState(agent, 'web', 'sleeping', 5000);
    const outcome = await reclaimAfter(agent, 'web', since);
    t.is(outcome.result, 'done', `cycle ${cycle}: ${outcome.reason}`);
    const asleep = await inst.residentBytes();
    t.log(`cycle ${cycle}: awake ${(awake / MiB).toFixed(1)} MiB, asleep ${(asleep / MiB).toFixed(1)} MiB, reclaim ${outcome.ms} ms, ${(outcome.swappedBytes / MiB).toFixed(0)} MiB in swap`);
    t.true(asleep < awake * 0.1, `cycle ${cycle}: asleep it still holds ${(asleep / MiB).toFixed(1)} MiB of ${(awake / MiB).toFixed(1)}`);
    t.is(await inst.cgroup.freezerState(), 'FROZEN', 'frozen throughout the reclaim');
    const ms = await wakeWithRequest(t, agent, inst.app.url);
    t.log(`cycle ${cycle}: first request after the reclaimed sleep ${ms.toFixed(1)} ms`);
    t.true(ms < 100, `cycle ${cycle}: the first request took ${ms.toFixed(1)} ms`);
  }
  const check = await get(`${inst.app.url}/data/check`, 20_000);
  t.is(check.status, 200);
  t.regex(check.body, /^intact/);
});
