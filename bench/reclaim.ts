/**
 * Reclaim benchmark (issues 20 and 29), one run, three 200 MiB reference apps side by side:
 *  - `full`: freezer sleep, all its memory pushed to swap after reclaimAfter;
 *  - `wset`: the same, keeping what it touched since the last reclaim (reclaimKeep working-set);
 *  - `plain`: freezer sleep, memory kept.
 * Over N cycles each: memory asleep (its cgroup) and what it costs the node (cgroup + its share
 * of zram), reclaim time, the first request after the sleep (GET /data: reads 2 MiB of the 200),
 * and the same request awake; then the same on other swap backends (zram compressors, a swap file).
 */
import type { Agent } from '../agent/agent.js';
import type { ReclaimOutcome } from '../agent/runtimes/freezer-reclaim.js';
import { nextState, startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { createMemoryInstance, type MemoryInstance } from '../test/helpers/memory-instance.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { createSwapFile, createZramSwap, zramAlgorithms, zramUnavailable } from '../test/helpers/zram.js';
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

type SwapKind = string; // a zram compressor, or 'file'

/** One run of three apps (full reclaim, working-set reclaim, plain freezer) with one request pattern and one swap. */
async function runPattern(cycles: number, holdMiB: number, path: string, pattern: string, swapKind: SwapKind): Promise<string[]> {
  const cleanups = new Cleanups();
  try {
    const swap = swapKind === 'file' ? await createSwapFile(cleanups, '2G') : await createZramSwap(cleanups, '2G', swapKind);
    const full = await createMemoryInstance(cleanups, holdMiB, 'full');
    const wset = await createMemoryInstance(cleanups, holdMiB, 'wset');
    const plain = await createMemoryInstance(cleanups, holdMiB, 'plain');
    const agent = await startAgent(cleanups, {
      instances: [
        full.config({ idleTimeout: '100ms' }, { reclaim: true, reclaimAfter: '100ms', reclaimKeep: 'nothing' }),
        wset.config({ idleTimeout: '100ms' }, { reclaim: true, reclaimAfter: '100ms', reclaimKeep: 'working-set' }),
        plain.config({ idleTimeout: '100ms' }),
      ],
    });
    const awakeBytes = await full.residentBytes();
    const asleep = { full: [] as number[], wset: [] as number[] };
    const node = { full: [] as number[], wset: [] as number[] };
    const zramBytes: number[] = [];
    const reclaimMs: number[] = [];
    const after = { full: [] as number[], wset: [] as number[], plain: [] as number[] };
    const awake: number[] = [];
    // Each app's last wake: its next reclaim comes after it (one may sleep while another is asked).
    const wokeAt = new Map<string, number>();
    const sleeping = (id: string) => (agent.detector.get(id)!.state === 'sleeping' ? Promise.resolve(0) : nextState(agent, id, 'sleeping', 10_000));
    const cost = async (id: 'full' | 'wset') => {
      const usage = (await agent.detector.get(id)!.runtime.memory!())!;
      asleep[id].push(usage.residentBytes);
      node[id].push(usage.residentBytes + usage.compressedBytes);
    };
    for (let i = 0; i < cycles; i++) {
      await Promise.all(['full', 'wset', 'plain'].map(sleeping));
      const [outcome, ws] = await Promise.all([nextReclaim(agent, 'full', wokeAt.get('full') ?? 0), nextReclaim(agent, 'wset', wokeAt.get('wset') ?? 0)]);
      for (const o of [outcome, ws]) if (o.result !== 'done' && o.result !== 'partial') throw new Error(`cycle ${i}: reclaim ${o.result}: ${o.reason}`);
      reclaimMs.push(outcome.ms);
      await cost('full');
      await cost('wset');
      zramBytes.push(await swap.memUsedBytes());
      // One at a time, so they never share the CPU: each first request is measured alone.
      after.full.push(await firstRequest(agent, 'full', full, path));
      wokeAt.set('full', Date.now());
      after.wset.push(await firstRequest(agent, 'wset', wset, path));
      wokeAt.set('wset', Date.now());
      after.plain.push(await firstRequest(agent, 'plain', plain, path));
      awake.push((await get(`${plain.app.url}${path}`)).ms);
    }
    const check = await get(`${wset.app.url}/data/check`, 30_000);
    // From cycle 2 on: the first sleep of a working-set instance is a full reclaim (no working set known yet).
    const later = (values: number[]) => (values.length > 1 ? values.slice(1) : values);
    const p50 = (values: number[]) => percentile(later(values), 50);
    const freedFull = awakeBytes - p50(asleep.full);
    const freedWset = awakeBytes - p50(asleep.wset);
    const pct = (part: number) => `${((part / awakeBytes) * 100).toFixed(1)} % of awake`;
    return [
      `-- ${pattern} (GET ${path}), swap ${swap.kind}, ${cycles} cycles (memory p50 over cycles 2..N)`,
      `memory awake ${mib(awakeBytes)}`,
      `full reclaim:        left in the cgroup ${mib(p50(asleep.full))}; node cost (cgroup + zram share) ${mib(p50(node.full))} (${pct(p50(node.full))})`,
      `working-set reclaim: left in the cgroup ${mib(p50(asleep.wset))}; node cost (cgroup + zram share) ${mib(p50(node.wset))} (${pct(p50(node.wset))})`,
      `working-set reclaim frees ${((freedWset / freedFull) * 100).toFixed(1)} % of what the full reclaim frees (resident)${swap.kind === 'file' ? '' : `; zram holds p50 ${mib(p50(zramBytes))} for the two`}`,
      `first full reclaim ${reclaimMs[0]!.toFixed(0)} ms (everything compressed or written)`,
      summary('full reclaim time, cycles 2..N', later(reclaimMs)),
      summary('first request after a full reclaim', after.full),
      summary('after a working-set reclaim, cycles 2..N', later(after.wset)),
      summary('after a plain freezer sleep', after.plain),
      summary('same request, awake', awake),
      `data after ${cycles} cycles: ${check.body.trim()}`,
      verdict(p50(after.wset) <= percentile(after.plain, 50) + 2, 'target working-set p50 ≤ plain freezer + 2 ms'),
      verdict(freedWset >= 0.9 * freedFull, 'target working-set frees ≥ 90 % of what the full reclaim frees'),
    ];
  } finally {
    await cleanups.run();
  }
}

export async function benchReclaim(cycles = 20, holdMiB = 200): Promise<string[]> {
  const unavailable = zramUnavailable();
  if (unavailable) return [`skipped: ${unavailable}`];
  const algorithms = await zramAlgorithms();
  const others = ['zstd', 'lzo-rle'].filter((a) => algorithms.includes(a));
  const short = Math.max(3, Math.round(cycles / 2));
  return [
    `reclaim (${holdMiB} MiB apps of text-like data, freezer): full reclaim vs working-set reclaim vs a plain freezer sleep`,
    ...(await runPattern(cycles, holdMiB, '/data?at=7', 'a working set that stays put: the same 1 % every request', 'lz4')),
    ...(await runPattern(cycles, holdMiB, '/data', 'a moving working set: the next 1 % every request', 'lz4')),
    `swap backends (zram compressors here: ${algorithms.join(', ')}${algorithms.includes('zstd') ? '' : '; no zstd in this kernel'}), ${short} cycles each`,
    ...(await Promise.resolve().then(async () => {
      const rows: string[] = [];
      for (const kind of [...others, 'file']) rows.push(...(await runPattern(short, holdMiB, '/data', 'a moving working set', kind)));
      return rows;
    })),
  ];
}
