/**
 * Density benchmark (issue 20), one run, three ways: N apps of 200 MiB under one parent memory
 * cgroup limited to a quarter of N × 200 MiB; traffic visits the apps one after another in
 * bursts while two of them stay busy all along.
 *  (a) no swap, no doze: what a default Nomad node has (how many apps fit at all);
 *  (b) the same swap (zram, lz4), no doze: the kernel swaps under pressure by its own LRU;
 *  (c) the same swap with doze as before issue 29: sleepers frozen and fully reclaimed, each reclaim
 *      at once and at normal priority;
 *  (c′) doze now: working-set reclaim, at SCHED_IDLE, a bounded number at once;
 *  (c″) full reclaim at SCHED_IDLE, bounded: the priority's effect alone.
 * Reports requests answered, OOM kills, first-request p50/p99 of the visited apps, request p99 of
 * the busy apps, and the memory in use at rest.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readNodeSwap } from '../agent/cgroups/node-swap.js';
import { startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { createMemoryInstance, type MemoryInstance } from '../test/helpers/memory-instance.js';
import { uniqueSuffix } from '../test/helpers/names.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { createZramSwap, zramUnavailable } from '../test/helpers/zram.js';
import { MAX_CONCURRENT_RECLAIMS, reclaimSlots } from '../agent/runtimes/reclaim-slots.js';
import { percentile, verdict } from './stats.js';

const MiB = 2 ** 20;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Outcome {
  way: string;
  started: number;
  answered: number;
  sent: number;
  oomKills: number;
  visitedFirst: number[];
  busy: number[];
  restBytes: number;
  /** RAM zram holds at rest (the node's cost of what was swapped). */
  restZramBytes: number;
}

/** OOM kills in the parent and its children (v1 memory.oom_control `oom_kill`). */
function oomKillsUnder(dir: string, children: string[]): number {
  const kills = (d: string) => {
    try {
      return Number(/^oom_kill (\d+)$/m.exec(readFileSync(join(d, 'memory.oom_control'), 'utf8'))?.[1] ?? 0);
    } catch {
      return 0;
    }
  };
  return kills(dir) + children.reduce((sum, c) => sum + kills(c), 0);
}

/** How long each way waited before its traffic (c: until its idle apps were reclaimed). */
const settleMs = new Map<string, number>();

type Way = 'a' | 'b' | 'c' | 'c2' | 'c3';

async function scenario(way: Way, apps: number, holdMiB: number, rounds: number): Promise<Outcome> {
  const cleanups = new Cleanups();
  try {
    const swap = way === 'a' ? undefined : await createZramSwap(cleanups, '4G', 'lz4');
    // (c) as before: every reclaim at once, normal priority; (c′) the defaults.
    reclaimSlots.limit = way === 'c' ? Infinity : MAX_CONCURRENT_RECLAIMS;
    reclaimSlots.idlePriority = way !== 'c';
    cleanups.teardown(() => {
      reclaimSlots.limit = MAX_CONCURRENT_RECLAIMS;
      reclaimSlots.idlePriority = true;
    });
    const parent = join('/sys/fs/cgroup/memory/doze-test', `dz-density-${uniqueSuffix()}`);
    await mkdir(parent, { recursive: true });
    cleanups.teardown(() => rmdir(parent).catch(() => undefined));
    const limit = Math.floor((apps * holdMiB * MiB) / 4);
    await writeFile(join(parent, 'memory.limit_in_bytes'), String(limit));
    const instances: MemoryInstance[] = [];
    for (let i = 0; i < apps; i++) {
      try {
        instances.push(await createMemoryInstance(cleanups, holdMiB, `app${i}`, {}, parent));
      } catch {
        // (a): the kernel OOM-killed it (or another) while it filled its memory
      }
    }
    const alive: MemoryInstance[] = [];
    for (const inst of instances) if ((await get(`${inst.app.url}/`, 2000).catch(() => undefined))?.status === 200) alive.push(inst);
    const settleStarted = Date.now();
    if (way === 'c' || way === 'c2' || way === 'c3') {
      const keep = way === 'c2' ? 'working-set' : 'nothing';
      const agent = await startAgent(cleanups, { instances: alive.map((inst) => inst.config({ idleTimeout: '500ms' }, { reclaim: true, reclaimAfter: '300ms', reclaimKeep: keep })) });
      // The idle apps' first reclaims (everything compressed) finish before the traffic starts: bounded wait.
      const until = Date.now() + 120_000;
      const idle = alive.slice(2).map((inst) => agent.detector.get(String(inst.config().id))!);
      while (Date.now() < until && !idle.every((i) => i.runtime.reclaimState?.()?.last)) await delay(100);
    }
    // (b) gets as long to settle as (c) took, or a fixed 2 s.
    settleMs.set(way, Date.now() - settleStarted);
    await delay(Math.max(0, (way === 'b' ? settleMs.get('c') ?? 0 : 0) - (Date.now() - settleStarted)));
    let sent = 0;
    let answered = 0;
    const request = async (url: string): Promise<number | undefined> => {
      sent++;
      const r = await get(url, 10_000).catch(() => undefined);
      if (r?.status !== 200) return undefined;
      answered++;
      return r.ms;
    };
    const [busyA, busyB, ...visited] = alive;
    const busy: number[] = [];
    let running = true;
    const busyLoop = async (inst: MemoryInstance | undefined) => {
      while (running && inst) {
        const ms = await request(`${inst.app.url}/data?at=3`);
        if (ms !== undefined) busy.push(ms);
        await delay(50);
      }
    };
    await delay(2000);
    const loops = [busyLoop(busyA), busyLoop(busyB)];
    const visitedFirst: number[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const inst of visited) {
        const first = await request(`${inst.app.url}/data`);
        if (first !== undefined) visitedFirst.push(first);
        for (let k = 0; k < 4; k++) {
          await delay(20);
          await request(`${inst.app.url}/data`);
        }
        // The next app's turn comes after this one has gone idle (and, with doze, to sleep and reclaimed).
        await delay(1200);
      }
    }
    running = false;
    await Promise.all(loops);
    await delay(1500);
    const restBytes = Number((await readFile(join(parent, 'memory.usage_in_bytes'), 'utf8')).trim());
    const restZramBytes = swap ? await swap.memUsedBytes() : 0;
    const oomKills = oomKillsUnder(parent, instances.map((i) => i.memoryDir));
    return { way, started: alive.length, answered, sent, oomKills, visitedFirst, busy, restBytes, restZramBytes };
  } finally {
    await cleanups.run();
  }
}

export async function benchDensity(apps = 8, holdMiB = 200, rounds = 2): Promise<string[]> {
  const unavailable = zramUnavailable();
  if (unavailable) return [`skipped: ${unavailable}`];
  if (readNodeSwap().available) return ['skipped: the node has swap already, so (a) "no swap" cannot be shown'];
  const limitMiB = (apps * holdMiB) / 4;
  const lines = [`density (${apps} apps of ${holdMiB} MiB under one memory cgroup limited to ${limitMiB} MiB; 2 busy all along, the others visited in turn, ${rounds} rounds of bursts of 5)`];
  const results: Outcome[] = [];
  // (c) runs before (b): (b) then waits as long before its traffic as (c) needed to reclaim.
  const byWay = new Map<string, Outcome>();
  const ways = (process.env.DOZE_BENCH_DENSITY_WAYS ?? 'a,c,c3,c2,b').split(',') as Way[];
  for (const way of ways) byWay.set(way, await scenario(way, apps, holdMiB, rounds));
  for (const way of ['a', 'b', 'c', 'c3', 'c2'] as const) {
    const o = byWay.get(way);
    if (!o) continue;
    results.push(o);
    const label = { a: '(a) no swap, no doze', b: '(b) zram swap, no doze', c: '(c) zram, doze before', c2: '(c′) zram, doze now', c3: '(c″) full, idle prio.' }[way];
    const f = (v: number[], p: number) => (v.length ? `${percentile(v, p).toFixed(1)} ms` : '–');
    lines.push(
      `${label.padEnd(24)} apps running ${o.started}/${apps}, answered ${o.answered}/${o.sent}, OOM kills ${o.oomKills}, ` +
        `visited first request p50 ${f(o.visitedFirst, 50)} p99 ${f(o.visitedFirst, 99)}, busy p99 ${f(o.busy, 99)} (n=${o.busy.length}), in use at rest ${(o.restBytes / MiB).toFixed(0)} of ${limitMiB} MiB + zram ${(o.restZramBytes / MiB).toFixed(0)} MiB`,
    );
  }
  const [a, b, c, c2] = (['a', 'b', 'c', 'c2'] as const).map((w) => byWay.get(w));
  if (a && c2) lines.push(verdict(c2.started >= 4 * Math.max(1, a.started) && c2.answered === c2.sent && c2.oomKills === 0, 'target (c′) hosts ≥ 4× the apps of (a), answers all, no OOM kill'));
  if (b && c2) {
    const beats = percentile(c2.visitedFirst, 50) < percentile(b.visitedFirst, 50) && percentile(c2.visitedFirst, 99) < percentile(b.visitedFirst, 99) && percentile(c2.busy, 99) < percentile(b.busy, 99) && c2.restBytes + c2.restZramBytes < b.restBytes + b.restZramBytes;
    lines.push(verdict(beats, "target (c′) beats (b) on every figure: visited p50 and p99, busy p99, memory at rest (cgroup + zram)"));
  }
  if (c && c2) lines.push(verdict(percentile(c2.busy, 99) < percentile(c.busy, 99), "target (c′) idle-priority reclaims: busy p99 below (c)'s"));
  return lines;
}
