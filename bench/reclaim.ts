/**
 * Reclaim benchmark (issue 20), one run, two 200 MiB reference apps side by side:
 *  - `reclaim`: freezer sleep, memory pushed to a zram swap after reclaimAfter;
 *  - `plain`: freezer sleep, memory kept.
 * Over N cycles each: memory awake and asleep (its memory cgroup) and zram's own memory,
 * reclaim time, the first request after the sleep (GET /data: reads 2 MiB of the 200),
 * and the same request awake.
 */
import type { Agent } from '../agent/agent.js';
import type { ReclaimOutcome } from '../agent/runtimes/freezer-reclaim.js';
import { nextState, startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { createMemoryInstance, type MemoryInstance } from '../test/helpers/memory-instance.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { createZramSwap, zramUnavailable } from '../test/helpers/zram.js';
import { percentile, summary, verdict } from './stats.js';

const MiB = 2 ** 20;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

async function nextReclaim(agent: Agent, id: string, sinceMs: number): Promise<ReclaimOutcome> {
  const until = Date.now() + 30_000;
  for (;;) {
    const last = agent.detector.get(id)!.runtime.reclaimState?.()?.last;
    if (last && last.atMs >= sinceMs) return last;
    if (Date.now() > until) throw new Error(`no reclaim of ${id} within 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function firstRequest(agent: Agent, id: string, inst: MemoryInstance, path: string): Promise<number> {
  const running = nextState(agent, id, 'running', 10_000);
  const r = await get(`${inst.app.url}${path}`, 10_000);
  await running;
  if (r.status !== 200) throw new Error(`${id}: status ${r.status}`);
  return r.ms;
}

/** One run of the three apps (reclaim, reclaim + prefetch, plain) with one request pattern. */
async function runPattern(cycles: number, holdMiB: number, path: string, pattern: string): Promise<string[]> {
  const cleanups = new Cleanups();
  try {
    const swap = await createZramSwap(cleanups, '2G', 'lz4');
    const reclaiming = await createMemoryInstance(cleanups, holdMiB, 'reclaim');
    const prefetching = await createMemoryInstance(cleanups, holdMiB, 'prefetch');
    const plain = await createMemoryInstance(cleanups, holdMiB, 'plain');
    const agent = await startAgent(cleanups, {
      instances: [
        reclaiming.config({ idleTimeout: '100ms' }, { reclaim: true, reclaimAfter: '100ms' }),
        prefetching.config({ idleTimeout: '100ms' }, { reclaim: true, reclaimAfter: '100ms', prefetch: true }),
        plain.config({ idleTimeout: '100ms' }),
      ],
    });
    const awakeBytes = await reclaiming.residentBytes();
    const asleepBytes: number[] = [];
    const zramBytes: number[] = [];
    const reclaimMs: number[] = [];
    const afterReclaim: number[] = [];
    const afterPrefetch: number[] = [];
    const afterPlain: number[] = [];
    const awake: number[] = [];
    // Each app's last wake: its next reclaim comes after it (one may sleep while another is asked).
    const wokeAt = new Map<string, number>();
    const asleep = (id: string) => (agent.detector.get(id)!.state === 'sleeping' ? Promise.resolve(0) : nextState(agent, id, 'sleeping', 10_000));
    for (let i = 0; i < cycles; i++) {
      await Promise.all(['reclaim', 'prefetch', 'plain'].map(asleep));
      const [outcome] = await Promise.all([nextReclaim(agent, 'reclaim', wokeAt.get('reclaim') ?? 0), nextReclaim(agent, 'prefetch', wokeAt.get('prefetch') ?? 0)]);
      if (outcome.result !== 'done' && outcome.result !== 'partial') throw new Error(`cycle ${i}: reclaim ${outcome.result}: ${outcome.reason}`);
      reclaimMs.push(outcome.ms);
      asleepBytes.push(await reclaiming.residentBytes());
      zramBytes.push(await swap.memUsedBytes());
      // One at a time, so they never share the CPU: each first request is measured alone.
      afterReclaim.push(await firstRequest(agent, 'reclaim', reclaiming, path));
      wokeAt.set('reclaim', Date.now());
      afterPrefetch.push(await firstRequest(agent, 'prefetch', prefetching, path));
      wokeAt.set('prefetch', Date.now());
      afterPlain.push(await firstRequest(agent, 'plain', plain, path));
      awake.push((await get(`${plain.app.url}${path}`)).ms);
    }
    const check = await get(`${reclaiming.app.url}/data/check`, 30_000);
    const asleepRatio = percentile(asleepBytes, 50) / awakeBytes;
    return [
      `-- ${pattern} (GET ${path}), ${cycles} cycles`,
      `memory awake ${mib(awakeBytes)}; asleep after reclaim p50 ${mib(percentile(asleepBytes, 50))} (${(asleepRatio * 100).toFixed(1)} % of awake); zram holds p50 ${mib(percentile(zramBytes, 50))} for the two reclaimed apps`,
      `first reclaim ${reclaimMs[0]!.toFixed(0)} ms (everything compressed); later cycles (pages still in the swap cache) below`,
      summary('reclaim time, cycles 2..N', reclaimMs.slice(1)),
      summary('first request after a reclaimed sleep', afterReclaim),
      summary('the same with working-set prefetch', afterPrefetch),
      summary('first request after a plain freezer sleep', afterPlain),
      summary('same request, awake', awake),
      `data after ${cycles} cycles: ${check.body.trim()}`,
      verdict(asleepRatio <= 0.05, 'target asleep ≤ 5 % of awake'),
      verdict(percentile(afterReclaim, 50) <= 15 && percentile(afterReclaim, 99) <= 50, 'target first request after reclaim p50 ≤ 15 ms, p99 ≤ 50 ms'),
      verdict(percentile(afterPrefetch, 50) <= percentile(awake, 50) + 3, 'target with prefetch p50 ≤ awake + 3 ms'),
    ];
  } finally {
    await cleanups.run();
  }
}

export async function benchReclaim(cycles = 20, holdMiB = 200): Promise<string[]> {
  const unavailable = zramUnavailable();
  if (unavailable) return [`skipped: ${unavailable}`];
  return [
    `reclaim (${holdMiB} MiB apps of text-like data, freezer; reclaim to a zram swap (lz4), with and without working-set prefetch, beside a plain freezer sleep)`,
    ...(await runPattern(cycles, holdMiB, '/data?at=7', 'a working set that stays put: the same 1 % every request')),
    ...(await runPattern(cycles, holdMiB, '/data', 'a moving working set: the next 1 % every request')),
  ];
}
