/**
 * Soak (issue 19): one agent, N freezer instances (each its own namespace, veth, cgroup and app),
 * real clients in random bursts with idle gaps both shorter and longer than the idle timeout, so
 * every instance sleeps and wakes many times, and a Consul-like HTTP check every second for each
 * instance, run as the checker uid the agent marks. Reports:
 *  - requests sent and failed (the bench's own GETs, fresh, pooled and slow, plus wrk's), target 0;
 *  - checks failed, target 0;
 *  - samples frozen with a request in flight: the sampler reads each busy instance's freezer.state
 *    every SAMPLE_MS; a sample counts when the cgroup is frozen while a request that went on the
 *    wire before the instance's last pause began is still unanswered (a request sent to an
 *    instance already asleep is how a wake starts, and is not one), target 0;
 *  - wake latency p50/p99/max (first packet seen by the tc program → resumed, every wake);
 *  - the agent's RSS and open fds at start and end (its own process and its doze-maps helper),
 *    target flat;
 *  - doze_wake_events_missed_total and the wake-event rescans, target 0;
 *  - sleeps started, undone by traffic while being prepared, and done, with the preparation time
 *    (pausing → asleep, and pausing → undone);
 *  - doze_conns' size and the time of one whole dump every 10 s (bench/soak-conn-map.ts), and the
 *    CPU the agent and its doze-maps helper used over the traffic.
 * Knobs: DOZE_SOAK_INSTANCES (default 50), DOZE_SOAK_SECONDS (default 180, at most 600),
 * DOZE_SOAK_IDLE_MS (idle timeout, default 250).
 * Traffic goes only to 10.215.0.0/16 addresses inside the namespaces made here.
 */
import type { ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { CheckRunner } from '../test/doubles/consul/check-runner.js';
import { startApp } from '../test/helpers/app.js';
import { createBpffs } from '../test/helpers/bpffs.js';
import { createFreezerCgroup, type TestCgroup } from '../test/helpers/cgroup.js';
import { CHECKER_UID } from '../test/helpers/checker.js';
import { uniqueSuffix } from '../test/helpers/names.js';
import { deleteNetns, type TestNetns } from '../test/helpers/netns.js';
import { sweepChainsAtTeardown } from '../test/helpers/netfilter.js';
import { sh } from '../test/helpers/sh.js';
import { Cleanups, type Teardown } from '../test/helpers/teardown.js';
import { childrenNamed, cpuSeconds, describeChildren, fdKinds, openFds, rssMiB } from './proc.js';
import { ConnMapSampler } from './soak-conn-map.js';
import { startSoakAgent, type SoakAgent } from './soak-agent-handle.js';
import type { SoakEvent } from './soak-events.js';
import { emptyTotals, REQUEST_TIMEOUT_MS, trackedGet, wrkBurst, type Target, type TrafficTotals } from './soak-traffic.js';
import { percentile, summary, verdict } from './stats.js';

export const MAX_SOAK_SECONDS = 600;
const SAMPLE_MS = 25;
const FOOTPRINT_EVERY_MS = 10_000;
const CHECK_INTERVAL_MS = 1000;
const CHECK_TIMEOUT_MS = 2000;
const SETUP_PARALLEL = 4;
const NET = '10.215';

export interface SoakOptions {
  instances: number;
  seconds: number;
  idleMs: number;
}

/** The env knobs, bounded: at most 10 minutes of traffic, at most 4,000 instances (the /16). */
export function soakOptions(env: NodeJS.ProcessEnv): SoakOptions {
  const int = (value: string | undefined, fallback: number, min: number, max: number) => {
    const n = Number(value ?? fallback);
    return Number.isFinite(n) ? Math.min(max, Math.max(min, Math.round(n))) : fallback;
  };
  return {
    instances: int(env.DOZE_SOAK_INSTANCES, 50, 1, 4000),
    seconds: int(env.DOZE_SOAK_SECONDS, 180, 10, MAX_SOAK_SECONDS),
    idleMs: int(env.DOZE_SOAK_IDLE_MS, 250, 50, 10_000),
  };
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const uniform = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

/** A namespace and veth with the index-th /30 of 10.215.0.0/16 (the soak's own: no clash between its instances). */
async function createSoakNetns(t: Teardown, index: number): Promise<TestNetns> {
  const id = uniqueSuffix();
  const block = index * 4;
  const prefix = `${NET}.${block >> 8}.`;
  const ns: TestNetns = { name: `dz-${id}`, hostIf: `dz${id}h`, instanceIf: `dz${id}i`, hostIp: `${prefix}${(block & 0xff) + 1}`, instanceIp: `${prefix}${(block & 0xff) + 2}` };
  t.teardown(() => deleteNetns(ns));
  await sh('ip', ['netns', 'add', ns.name]);
  await sh('ip', ['link', 'add', ns.hostIf, 'type', 'veth', 'peer', 'name', ns.instanceIf, 'netns', ns.name]);
  await sh('ip', ['addr', 'add', `${ns.hostIp}/30`, 'dev', ns.hostIf]);
  await sh('ip', ['link', 'set', ns.hostIf, 'up']);
  await sh('ip', ['-n', ns.name, 'addr', 'add', `${ns.instanceIp}/30`, 'dev', ns.instanceIf]);
  await sh('ip', ['-n', ns.name, 'link', 'set', ns.instanceIf, 'up']);
  await sh('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
  return ns;
}

interface SoakInstance extends Target {
  ns: TestNetns;
  cgroup: TestCgroup;
  /** When its last pause began (the agent's clock, epoch ms). */
  pausingAt: number;
  sleeps: number;
  wakes: number;
  /** Its last few transitions, for the story around a failure. */
  recent: string[];
}

const clock = (ms = Date.now()) => new Date(ms).toISOString().slice(11, 23);
const story = (inst: SoakInstance) => `[${inst.recent.join(' → ')}]`;

interface Footprint {
  atS: number;
  rss: number;
  fds: number;
  helperRss: number;
  helperFds: number;
  /** CPU seconds used so far by the agent and by its current doze-maps helper(s). */
  cpuS: number;
  helperCpuS: number;
}

async function footprint(agentPid: number, startedAt: number): Promise<Footprint> {
  const helpers = await childrenNamed(agentPid, 'doze-maps');
  let helperRss = 0;
  let helperFds = 0;
  let helperCpuS = 0;
  for (const pid of helpers) {
    helperRss += await rssMiB(pid).catch(() => 0);
    helperFds += await openFds(pid).catch(() => 0);
    helperCpuS += await cpuSeconds(pid).catch(() => 0);
  }
  return {
    atS: (Date.now() - startedAt) / 1000, rss: await rssMiB(agentPid), fds: await openFds(agentPid), helperRss, helperFds,
    cpuS: await cpuSeconds(agentPid), helperCpuS,
  };
}

/** Sum of a counter's samples over all label sets in a Prometheus text exposition. */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

const viewsSchema = z.array(z.looseObject({ id: z.string(), state: z.string(), stateSince: z.string().optional(), heldBy: z.string().nullable() }));
const statusSchema = z.looseObject({ wakeEvents: z.looseObject({ gaps: z.number(), missed: z.number(), late: z.number().optional() }) });

async function waitUntil(what: string, timeoutMs: number, check: () => boolean, describe: () => string = () => ''): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`${what} within ${timeoutMs} ms${describe()}`);
    await delay(50);
  }
}

/**
 * A keep-alive pool of one connection without TCP keepalive probes (as nginx, Envoy and HAProxy
 * pool upstreams by default). node's pool turns probes on (every second): each probe is a packet
 * to the instance, and a probe to a sleeper wakes it, so with them no instance would stay asleep.
 */
function pooledWithoutProbes(): http.Agent {
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const keep = pool.keepSocketAlive.bind(pool);
  pool.keepSocketAlive = (socket) => {
    const kept = keep(socket);
    (socket as net.Socket).setKeepAlive(false);
    return kept;
  };
  return pool;
}

class Semaphore {
  private used = 0;
  constructor(private readonly size: number) {}
  tryTake(): boolean {
    if (this.used >= this.size) return false;
    this.used++;
    return true;
  }
  give(): void {
    this.used--;
  }
}

/**
 * One instance's client: an idle gap (half the time shorter than the idle timeout, half longer),
 * then a burst, until `until()` passes. Bursts: paced wrk (when a slot is free), 1–4 parallel GETs
 * on fresh connections, 1–3 GETs on the pooled keep-alive connection, or one slow request that
 * outlasts the idle timeout (the agent must hold the instance awake for it).
 */
async function drive(inst: SoakInstance, idleMs: number, until: () => number, totals: TrafficTotals, wrkSlots: Semaphore, live: Set<ChildProcess>): Promise<void> {
  const hello = new RegExp(`^hello from ${inst.id} #\\d+`);
  while (Date.now() < until()) {
    const gap = Math.random() < 0.5 ? uniform(0.1, 0.8) * idleMs : uniform(1.5, 4) * idleMs;
    await delay(Math.min(gap, Math.max(0, until() - Date.now())));
    if (Date.now() >= until()) return;
    const roll = randomInt(0, 9);
    if (roll < 2 && wrkSlots.tryTake()) {
      try {
        await wrkBurst(inst, totals, live);
      } finally {
        wrkSlots.give();
      }
    } else if (roll < 6) {
      await Promise.all(Array.from({ length: randomInt(1, 5) }, () => trackedGet(inst, '/', 'fresh', totals, hello, false)));
    } else if (roll < 8) {
      for (let k = randomInt(1, 4); k > 0; k--) await trackedGet(inst, '/', 'pooled', totals, hello, true);
    } else {
      const ms = Math.round(uniform(1.5, 3) * idleMs);
      await trackedGet(inst, `/slow?ms=${ms}`, 'slow', totals, /^slow answer after/, false);
    }
  }
}

export async function benchSoak(options: SoakOptions = soakOptions(process.env)): Promise<string[]> {
  const cleanups = new Cleanups();
  const live = new Set<ChildProcess>();
  let interrupted = false;
  let trafficUntil = Number.POSITIVE_INFINITY;
  const onSignal = () => {
    interrupted = true;
    trafficUntil = Date.now();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const existing = await sh('ip', ['-o', '-4', 'addr', 'show', 'to', `${NET}.0.0/16`]);
    if (existing.trim()) throw new Error(`addresses in ${NET}.0.0/16 exist already (a crashed soak? remove them): ${existing.trim().split('\n')[0]}`);
    const dir = await mkdtemp(join(tmpdir(), 'dz-soak-'));
    cleanups.teardown(() => rm(dir, { recursive: true, force: true }));
    const bpffs = await createBpffs(cleanups);
    const connMap = new ConnMapSampler(bpffs);
    cleanups.teardown(() => connMap.close());
    const chainPrefix = `DZ${uniqueSuffix().toUpperCase()}`;
    sweepChainsAtTeardown(cleanups, chainPrefix);

    const setupStarted = Date.now();
    const insts: SoakInstance[] = [];
    for (let first = 0; first < options.instances; first += SETUP_PARALLEL) {
      const batch = Array.from({ length: Math.min(SETUP_PARALLEL, options.instances - first) }, (_, k) => first + k);
      insts.push(...(await Promise.all(batch.map(async (index) => {
        const id = `s${index}`;
        const ns = await createSoakNetns(cleanups, index);
        const cgroup = await createFreezerCgroup(cleanups);
        const app = await startApp(cleanups, ns, cgroup, id);
        const keepAlive = pooledWithoutProbes();
        cleanups.teardown(() => keepAlive.destroy());
        return { id, url: app.url, inflight: new Set(), keepAlive, state: 'running', ns, cgroup, pausingAt: 0, sleeps: 0, wakes: 0, recent: [] } satisfies SoakInstance;
      }))));
    }
    const byId = new Map(insts.map((i) => [i.id, i]));

    let recording = false;
    const wakeMs: number[] = [];
    const wakeFailures: string[] = [];
    const reasons = new Map<string, number>();
    const eventLagMs: number[] = [];
    /** Sleeps begun (pausing), by how they ended: the time from pausing to asleep, or to undone by traffic. */
    const sleepsTried = { started: 0, doneMs: [] as number[], undoneMs: [] as number[] };
    const onEvent = (e: SoakEvent) => {
      if (e.type === 'transition') {
        const inst = byId.get(e.id);
        if (!inst) return;
        inst.state = e.to;
        inst.recent.push(`${clock(e.at)} ${e.to}${e.to === 'running' || e.to === 'waking' ? ` (${e.reason})` : ''}`);
        if (inst.recent.length > 5) inst.recent.shift();
        if (!recording) {
          if (e.to === 'pausing') inst.pausingAt = e.at;
          return;
        }
        if (e.to === 'pausing') sleepsTried.started++;
        if (e.from === 'pausing') (e.to === 'sleeping' ? sleepsTried.doneMs : sleepsTried.undoneMs).push(e.at - inst.pausingAt);
        if (e.to === 'pausing') inst.pausingAt = e.at;
        if (e.to === 'sleeping') inst.sleeps++;
        if (e.to === 'running' && e.from === 'waking') {
          inst.wakes++;
          reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
        }
      } else if (e.type === 'wakeEvent') {
        if (recording) eventLagMs.push(e.lagMs);
      } else if (e.type === 'woke' && recording) {
        wakeMs.push(e.ms);
      } else if (e.type === 'wakeFailed') {
        wakeFailures.push(`${e.id}: ${e.reason}`);
      }
    };

    const agent: SoakAgent = await startSoakAgent(cleanups, dir, {
      listen: '127.0.0.1:0',
      logLevel: 'info',
      bpffs,
      netfilter: { chainPrefix },
      healthChecks: { fromUid: CHECKER_UID },
      instances: insts.map((i) => ({
        id: i.id, address: `${i.ns.instanceIp}:8080`, interface: i.ns.hostIf, idleTimeout: `${options.idleMs}ms`,
        runtime: { kind: 'freezer', cgroup: i.cgroup.name },
      })),
    }, onEvent);
    const setupS = (Date.now() - setupStarted) / 1000;
    // A Consul-like check per instance, every second, from the checker uid (so the agent marks it).
    const checker = await CheckRunner.create({ uid: CHECKER_UID, historyLimit: 1 });
    cleanups.teardown(() => checker.stop());
    const checks = { run: 0, failed: 0, failures: [] as string[] };
    checker.subscribe((u) => {
      if (!recording) return;
      checks.run++;
      if (u.status !== 'passing') {
        checks.failed++;
        const inst = byId.get(u.checkId);
        if (checks.failures.length < 20) checks.failures.push(`${clock()} ${u.checkId} ${u.status}: ${u.output.slice(0, 120)} ${inst ? story(inst) : ''}`);
      }
    });
    for (const i of insts) checker.add({ id: i.id, kind: 'http', target: `${i.url}/health`, intervalMs: CHECK_INTERVAL_MS, timeoutMs: CHECK_TIMEOUT_MS, initialStatus: 'passing' });

    // Asked of the agent, not taken from its events: transitions start before the events are hooked up.
    // Returns the instances still awake at the deadline, each with its story and its cgroup's freezer state.
    const allAsleep = async (timeoutMs: number): Promise<string[]> => {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const views = viewsSchema.parse(await (await fetch(`http://${agent.address}/api/instances`)).json());
        for (const v of views) {
          const inst = byId.get(v.id);
          if (inst) inst.state = v.state;
        }
        const awake = views.filter((v) => v.state !== 'sleeping');
        if (awake.length === 0) return [];
        if (Date.now() > until) {
          return Promise.all(awake.map(async (v) => {
            const inst = byId.get(v.id)!;
            const freezer = (await readFile(join(inst.cgroup.dir, 'freezer.state'), 'utf8').catch(() => '?')).trim();
            return `${v.id} ${v.state} since ${String(v.stateSince ?? '?').slice(11, 23)}, cgroup ${freezer}, held by ${v.heldBy ?? 'nothing'} ${story(inst)}`;
          }));
        }
        await delay(250);
      }
    };
    const notAsleepAtStart = await allAsleep(120_000);
    if (notAsleepAtStart.length > 0) throw new Error(`not every instance fell asleep within 120 s: ${notAsleepAtStart.join('; ')}; agent log: ${agent.logFile}`);
    const startedAt = Date.now();
    const footprints: Footprint[] = [await footprint(agent.pid, startedAt)];
    await connMap.sample(startedAt);
    const startKinds = await fdKinds(agent.pid);
    recording = true;
    trafficUntil = Math.min(trafficUntil, startedAt + options.seconds * 1000);

    // The sampler: frozen with a request in flight that was on the wire before the pause began.
    const samples = { busy: 0, frozen: 0, violations: 0, wrkViolations: 0, details: [] as string[] };
    let sampling = false;
    const sampler = setInterval(() => {
      if (sampling) return;
      sampling = true;
      void (async () => {
        for (const inst of insts) {
          if (inst.inflight.size === 0) continue;
          const state = (await readFile(join(inst.cgroup.dir, 'freezer.state'), 'utf8').catch(() => '')).trim();
          samples.busy++;
          if (state !== 'FROZEN' && state !== 'FREEZING') continue;
          samples.frozen++;
          const stuck = [...inst.inflight].filter((f) => f.sentAt < inst.pausingAt);
          if (stuck.length === 0) continue;
          const plain = stuck.filter((f) => f.kind !== 'wrk');
          if (plain.length > 0) samples.violations++;
          else samples.wrkViolations++;
          if (samples.details.length < 20) {
            samples.details.push(`${clock()} ${inst.id} ${state}, paused at ${clock(inst.pausingAt)}: ${stuck.map((f) => `${f.kind} sent ${inst.pausingAt - f.sentAt} ms before`).join(', ')} ${story(inst)}`);
          }
        }
      })().finally(() => (sampling = false));
    }, SAMPLE_MS);
    cleanups.teardown(() => clearInterval(sampler));
    const footprintTimer = setInterval(() => {
      void footprint(agent.pid, startedAt).then((f) => footprints.push(f), () => undefined);
      void connMap.sample(startedAt);
    }, FOOTPRINT_EVERY_MS);
    cleanups.teardown(() => clearInterval(footprintTimer));
    cleanups.teardown(() => {
      for (const child of live) child.kill('SIGKILL');
    });

    const totals = emptyTotals();
    const wrkSlots = new Semaphore(Math.max(1, Math.min(4, Math.ceil(options.instances / 12))));
    const traffic = Promise.all(insts.map((i) => drive(i, options.idleMs, () => trafficUntil, totals, wrkSlots, live)));
    const outcome = await Promise.race([traffic.then(() => 'done' as const), agent.exited.then((code) => code)]);
    if (outcome !== 'done') throw new Error(`the agent exited (${outcome}) during the soak; its last warnings: ${[...agent.warnings.values()].map((w) => w.last).slice(-3).join(' | ')}`);
    const trafficS = (Date.now() - startedAt) / 1000;
    clearInterval(sampler);
    clearInterval(footprintTimer);
    const atTrafficEnd = await footprint(agent.pid, startedAt);
    footprints.push(atTrafficEnd);
    await connMap.sample(startedAt);
    await waitUntil('requests still in flight', REQUEST_TIMEOUT_MS + 5000, () => insts.every((i) => i.inflight.size === 0),
      () => `: ${insts.filter((i) => i.inflight.size > 0).map((i) => `${i.id} ${[...i.inflight].map((f) => f.kind).join(',')} ${story(i)}`).join('; ')}`);
    // Checks keep running while everything falls asleep again; then the end figures.
    const notAsleep = await allAsleep(60_000);
    recording = false;
    footprints.push(await footprint(agent.pid, startedAt));
    const endKinds = await fdKinds(agent.pid);
    // More fds than at the start may be a connection closing: look again for a few seconds.
    let settledFds = footprints.at(-1)!.fds;
    for (let k = 0; k < 10 && settledFds > footprints[0]!.fds; k++) {
      await delay(1000);
      settledFds = await openFds(agent.pid);
    }
    const metrics = await (await fetch(`http://${agent.address}/metrics`)).text();
    const status = statusSchema.parse(await (await fetch(`http://${agent.address}/api/status`)).json());

    const start = footprints[0]!;
    const end = footprints.at(-1)!;
    const warm = footprints.find((f) => f.atS >= 60) ?? footprints[1] ?? end;
    const sleeps = insts.map((i) => i.sleeps);
    const wakes = insts.map((i) => i.wakes);
    const missed = metricSum(metrics, 'doze_wake_events_missed_total');
    const failedWakes = metricSum(metrics, 'doze_wake_failures_total');
    const answered = metricSum(metrics, 'doze_health_checks_answered_total');
    const coreShare = (used: number) => `${((100 * used) / (atTrafficEnd.atS - start.atS)).toFixed(0)} %`;
    const entries = connMap.samples.map((c) => c.entries);
    const lines = [
      `soak: ${options.instances} freezer instances, ${trafficS.toFixed(0)} s of traffic${interrupted ? ' (interrupted)' : ''}, idle timeout ${options.idleMs} ms, ` +
        `one agent process, checks every ${CHECK_INTERVAL_MS / 1000} s per instance (setup ${setupS.toFixed(0)} s)`,
      `sleeps per instance: min ${Math.min(...sleeps)} p50 ${percentile(sleeps, 50)} max ${Math.max(...sleeps)} (total ${sleeps.reduce((a, b) => a + b, 0)}); ` +
        `wakes: min ${Math.min(...wakes)} p50 ${percentile(wakes, 50)} (total ${wakes.reduce((a, b) => a + b, 0)})`,
      `requests sent ${totals.sent} (wrk ${totals.wrkRequests} in ${totals.wrkRuns} bursts, the bench's own ${totals.sent - totals.wrkRequests}), failed ${totals.failed}`,
      summary('request to a sleeping instance (bench client)', totals.coldMs),
      summary('request to an awake instance (bench client)', totals.warmMs),
      `checks run ${checks.run}, failed ${checks.failed}; answered by the stub ${answered}`,
      `in-flight samples every ${SAMPLE_MS} ms: ${samples.busy} with a request in flight, ${samples.frozen} of them frozen (requests sent to a sleeper), ` +
        `frozen with a request sent before the pause: ${samples.violations} (during a wrk burst: ${samples.wrkViolations})`,
      summary('wake (tc sees packet → resumed)', wakeMs),
      summary('wake event delivery (tc → agent)', eventLagMs),
      `sleeps started ${sleepsTried.started}, undone while being prepared ${sleepsTried.undoneMs.length}, done ${sleepsTried.doneMs.length}`,
      summary('sleep preparation, done (pausing → asleep)', sleepsTried.doneMs),
      summary('sleep preparation, undone (pausing → running)', sleepsTried.undoneMs),
      `doze_conns entries every ${FOOTPRINT_EVERY_MS / 1000} s: at the start ${entries[0] ?? '?'}, max ${Math.max(...entries)}, at the end of the traffic ${entries.at(-1) ?? '?'}`,
      summary('one whole doze_conns dump (doze-maps)', connMap.samples.map((c) => c.dumpMs)),
      `CPU over the traffic: agent ${coreShare(atTrafficEnd.cpuS - start.cpuS)} of a core, doze-maps ${coreShare(atTrafficEnd.helperCpuS - start.helperCpuS)}`,
      `wakes by reason: ${[...reasons].map(([r, n]) => `${r} ${n}`).join(', ')}`,
      `failed wakes ${failedWakes}${wakeFailures.length ? ` (${wakeFailures.slice(0, 3).join('; ')})` : ''}; doze_wake_events_missed_total ${missed}; ` +
        `watchdog wakes whose event came late ${status.wakeEvents.late ?? '?'}; rescans ${status.wakeEvents.gaps}`,
      `agent RSS ${start.rss.toFixed(1)} → ${warm.rss.toFixed(1)} (${warm.atS.toFixed(0)} s) → ${end.rss.toFixed(1)} MiB (max ${Math.max(...footprints.map((f) => f.rss)).toFixed(1)}), ` +
        `open fds ${start.fds} → ${end.fds}${settledFds !== end.fds ? ` (${settledFds} a few seconds later)` : ''}; doze-maps RSS ${start.helperRss.toFixed(1)} → ${end.helperRss.toFixed(1)} MiB, fds ${start.helperFds} → ${end.helperFds}`,
      verdict(totals.failed === 0 && checks.failed === 0 && samples.violations + samples.wrkViolations === 0, 'target 0 failed requests, 0 failed checks, 0 frozen with a request in flight'),
      `instances not asleep 60 s after the traffic stopped: ${notAsleep.length}`,
      verdict(failedWakes === 0 && missed === 0 && status.wakeEvents.gaps === 0 && notAsleep.length === 0, 'target 0 failed wakes, 0 missed wake events, 0 rescans, every instance asleep again'),
      verdict(settledFds <= start.fds && end.helperFds <= start.helperFds && end.rss <= warm.rss * 1.1, 'target flat: fds end ≤ start, RSS end within 10 % of the warmed-up figure'),
    ];
    const perMinute = footprints.filter((f, k) => k === 0 || Math.floor(f.atS / 60) > Math.floor(footprints[k - 1]!.atS / 60));
    lines.push(`  agent RSS by minute: ${perMinute.map((f) => `${(f.atS / 60).toFixed(0)} min ${f.rss.toFixed(0)} MiB`).join(', ')}; at the end ${end.rss.toFixed(0)} MiB`);
    for (const f of totals.failures) lines.push(`  failed request: ${f}`);
    for (const f of checks.failures) lines.push(`  failed check: ${f}`);
    for (const d of samples.details) lines.push(`  frozen in flight: ${d}`);
    for (const n of notAsleep) lines.push(`  not asleep after the traffic: ${n}`);
    if (notAsleep.length > 0) {
      lines.push(`  the agent's log: ${agent.logFile}`);
      for (const child of await describeChildren(agent.pid)) lines.push(`  the agent's child: ${child}`);
    }
    if (settledFds !== start.fds) {
      const kinds = new Set([...startKinds.keys(), ...endKinds.keys()]);
      const diff = [...kinds].map((k) => [k, (endKinds.get(k) ?? 0) - (startKinds.get(k) ?? 0)] as const).filter(([, d]) => d !== 0);
      lines.push(`  agent fds end − start by kind: ${diff.map(([k, d]) => `${k} ${d > 0 ? '+' : ''}${d}`).join(', ')}`);
    }
    for (const [msg, w] of agent.warnings) lines.push(`  agent warned ${w.count}×: ${msg}  (last: ${w.last.slice(0, 200)})`);
    return lines;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    trafficUntil = 0;
    await cleanups.run();
  }
}
