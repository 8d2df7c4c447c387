/**
 * Scale (issue 7): one agent process (the CLI, as in production) managing
 * N instances keyed by address on one veth, fake runtimes (the runtime is
 * not what is measured here). Reports, for N = 10, 100, 1,000:
 *  - agent CPU (its process and its doze-maps helpers) while everything is
 *    asleep, and while 10 instances are kept busy: cost must follow active
 *    instances, not total;
 *  - RSS;
 *  - wake reaction (first packet seen by tc → resumed) p50/p99 with N tracked.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBpffs } from '../test/helpers/bpffs.js';
import { createFreezerCgroup } from '../test/helpers/cgroup.js';
import { createAccountingCgroups } from '../test/helpers/cpu-cgroup.js';
import { REPO } from '../test/helpers/cli.js';
import { createNetns } from '../test/helpers/netns.js';
import { sh } from '../test/helpers/sh.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { tempDir } from '../test/helpers/temp-dir.js';
import { rssMiB } from './proc.js';
import { percentile, verdict } from './stats.js';

const TICK = 100; // USER_HZ
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function cpuSeconds(pid: number): Promise<number> {
  const pids = [pid];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid) pids.push(Number(entry));
  }
  let ticks = 0;
  for (const p of pids) {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  }
  return ticks / TICK;
}

interface View {
  id: string;
  state: string;
  wakes: number;
  lastWakeMs: number | null;
}

async function instances(addr: string): Promise<View[]> {
  return (await (await fetch(`http://${addr}/api/instances`)).json()) as View[];
}

async function waitAll(addr: string, state: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if ((await instances(addr)).every((i) => i.state === state)) return;
    await delay(200);
  }
  throw new Error(`not every instance became ${state} within ${timeoutMs} ms`);
}

/** UDP to each busy instance every 50 ms (bounded by `ms`): keeps them awake. */
async function keepBusy(ips: string[], ms: number): Promise<void> {
  const socket = dgram.createSocket('udp4');
  const until = Date.now() + ms;
  while (Date.now() < until) {
    for (const ip of ips) socket.send('x', 9, ip);
    await delay(50);
  }
  socket.close();
}

/** `usageCgroup`: every fake runtime reports that cgroup's CPU, so the busy guard reads real counters at each decision. */
async function run(total: number, cleanups: Cleanups, usageCgroup?: string): Promise<string[]> {
  const ns = await createNetns(cleanups);
  const ips = Array.from({ length: total }, (_, i) => `10.214.${Math.floor(i / 250)}.${(i % 250) + 2}`);
  // The addresses live in the namespace; the host routes them over the veth.
  for (const ip of ips) await sh('ip', ['-n', ns.name, 'addr', 'add', `${ip}/32`, 'dev', ns.hostIf.replace(/h$/, 'i')]);
  await sh('ip', ['route', 'add', '10.214.0.0/16', 'dev', ns.hostIf]);
  cleanups.teardown(() => sh('ip', ['route', 'del', '10.214.0.0/16', 'dev', ns.hostIf]).catch(() => undefined));
  const bpffs = await createBpffs(cleanups);
  const dir = await tempDir(cleanups, 'scale');
  const config = join(dir, 'doze.json');
  await writeFile(config, JSON.stringify({
    listen: '127.0.0.1:0', logLevel: 'warn', bpffs,
    instances: ips.map((ip, i) => ({ id: `i${i}`, address: `${ip}:8080`, interface: ns.hostIf, idleTimeout: '300ms', runtime: { kind: 'fake', ...(usageCgroup ? { usageCgroup } : {}) } })),
  }));
  // Port 0 is not discoverable from outside: pick one.
  const port = 17000 + Math.floor(Math.random() * 20000);
  const agent: ChildProcess = spawn(process.execPath, ['dist/cli.js', 'agent', '--config', config, '--listen', `127.0.0.1:${port}`], { cwd: REPO, stdio: 'ignore' });
  cleanups.teardown(async () => {
    agent.kill('SIGTERM');
    await new Promise((resolve) => agent.once('exit', resolve));
  });
  const addr = `127.0.0.1:${port}`;
  const until = Date.now() + 120_000;
  for (;;) {
    try {
      if ((await instances(addr)).length === total) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error('agent did not start');
    await delay(200);
  }
  await waitAll(addr, 'sleeping', 60_000);
  const pid = agent.pid!;

  const idleStart = await cpuSeconds(pid);
  await delay(10_000);
  const idleCpu = ((await cpuSeconds(pid)) - idleStart) / 10;

  const busy = ips.slice(0, 10);
  const busyStart = await cpuSeconds(pid);
  await keepBusy(busy, 10_000);
  const busyCpu = ((await cpuSeconds(pid)) - busyStart) / 10;
  await waitAll(addr, 'sleeping', 10_000);

  const reactions: number[] = [];
  const socket = dgram.createSocket('udp4');
  for (let k = 0; k < 100; k++) {
    // Instances outside the busy set when there are any (all are asleep again by now).
    const i = total > 10 ? 10 + ((k * 7919) % (total - 10)) : k % total;
    socket.send('x', 9, ips[i]!);
    const id = `i${i}`;
    const deadline = Date.now() + 5000;
    let view: View | undefined;
    while (Date.now() < deadline) {
      view = (await (await fetch(`http://${addr}/api/instances/${id}`)).json()) as View;
      if (view.state === 'running') break;
      await delay(2);
    }
    if (view?.lastWakeMs != null) reactions.push(view.lastWakeMs);
  }
  socket.close();
  const rss = await rssMiB(pid);
  return [
    `${String(total).padStart(5)} instances${usageCgroup ? ', busy guard reading cpuacct' : ''}: idle CPU ${(idleCpu * 100).toFixed(2)}% of a core, 10 busy ${(busyCpu * 100).toFixed(2)}%, RSS ${rss.toFixed(0)} MiB, ` +
      `wake reaction p50 ${percentile(reactions, 50).toFixed(2)} ms p99 ${percentile(reactions, 99).toFixed(2)} ms (n=${reactions.length})`,
    JSON.stringify({ total, idleCpu, busyCpu, rss, p99: percentile(reactions, 99), guard: usageCgroup !== undefined }),
  ];
}

export async function benchScale(): Promise<string[]> {
  const lines = ['scale: one agent process, N fake-runtime instances keyed by address on one veth'];
  const results: Array<{ total: number; idleCpu: number; busyCpu: number; rss: number; p99: number; guard: boolean }> = [];
  // DOZE_BENCH_SCALE=1000 runs only that size (guard off, then on).
  const sizes = process.env.DOZE_BENCH_SCALE ? process.env.DOZE_BENCH_SCALE.split(',').map(Number) : [10, 100, 1000];
  for (const total of sizes) {
    for (const guard of total === 1000 ? [false, true] : [false]) {
      const cleanups = new Cleanups();
      try {
        // The guard's counters: a cgroup with cpuacct at the freezer's path, as Nomad lays them out.
        let usageCgroup: string | undefined;
        if (guard) {
          const freezer = await createFreezerCgroup(cleanups);
          await createAccountingCgroups(cleanups, freezer.name);
          usageCgroup = freezer.name;
        }
        const [line, json] = await run(total, cleanups, usageCgroup);
        lines.push(line!);
        results.push(JSON.parse(json!));
      } finally {
        await cleanups.run();
      }
    }
  }
  const guarded = results.find((r) => r.guard);
  const unguarded = results.find((r) => r.total === guarded?.total && !r.guard);
  if (guarded && unguarded) {
    lines.push(`busy guard at ${guarded.total}: idle CPU ${(unguarded.idleCpu * 100).toFixed(2)} → ${(guarded.idleCpu * 100).toFixed(2)} % of a core, 10 busy ${(unguarded.busyCpu * 100).toFixed(2)} → ${(guarded.busyCpu * 100).toFixed(2)} %, RSS ${unguarded.rss.toFixed(0)} → ${guarded.rss.toFixed(0)} MiB (off → on, same run)`);
  }
  const big = results.filter((r) => !r.guard).at(-1)!;
  const small = results[0]!;
  lines.push(`busy-10 CPU at 1,000 total / at 10 total: ×${(big.busyCpu / Math.max(small.busyCpu, 0.0001)).toFixed(2)} (flat means cost follows active instances)`);
  lines.push(verdict(big.idleCpu < 0.02 && big.rss < 150 && big.p99 <= 10, 'target at 1,000: idle CPU < 2 %, RSS < 150 MB, wake reaction p99 ≤ 10 ms'));
  return lines;
}
