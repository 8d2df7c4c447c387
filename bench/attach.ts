/**
 * Attaching (issue 29): 1,000 instances admitted, time to attach doze's tc programs to all their
 * interfaces, before and after.
 *  - before: what EbpfSource.attach did per interface until issue 29: `ip -j link show` (the
 *    Ethernet check), then `tc qdisc show`, `tc qdisc add … clsact` and a `tc filter replace …
 *    bpf da obj doze.bpf.o sec tc/…` per hook (each one a process and a verifier pass);
 *  - after: the programs loaded once into doze-maps (timed on its own), then per interface the
 *    sysfs Ethernet check and an attach by fd per hook (netlink, in the helper; no process).
 * Interfaces: veth pairs whose host sides sit in the agent's (this) namespace, as an instance's
 * do, and whose peers go into a namespace the bench makes; deleting it removes them all.
 * DOZE_BENCH_ATTACH (default 1000) interfaces the new way; DOZE_BENCH_ATTACH_OLD (default 1000)
 * the old way (lower it on a slow node: the report projects the old total to the same count).
 */
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { listLinks } from '../agent/net/ip.js';
import { attachByTcCommand, listFilters, requireEthernet } from '../agent/net/tc.js';
import { defaultObjectPath } from '../agent/sources/ebpf-source.js';
import { MapClient } from '../agent/sources/map-client.js';
import { TcPrograms } from '../agent/sources/tc-programs.js';
import { createBpffs } from '../test/helpers/bpffs.js';
import { sh, shQuiet } from '../test/helpers/sh.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { percentile } from './stats.js';

interface Timing {
  totalMs: number;
  perInterfaceMs: number[];
}

/** `ip -batch -` with these lines: thousands of links in one process, not one each. */
function ipBatch(lines: string[], { force = false } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', [...(force ? ['-force'] : []), '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`ip -batch failed (${code}): ${stderr.slice(0, 500)}`))));
    child.stdin.end(`${lines.join('\n')}\n`);
  });
}

/** `count` veth pairs: host sides named `<prefix><i>` here, peers in `netns`. */
async function makeInterfaces(prefix: string, count: number, netns: string): Promise<string[]> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  await ipBatch(names.map((name) => `link add ${name} type veth peer name ${name}p netns ${netns}`));
  return names;
}

async function timeEach(devices: string[], attachOne: (device: string) => Promise<void>): Promise<Timing> {
  const perInterfaceMs: number[] = [];
  const start = performance.now();
  for (const device of devices) {
    const t0 = performance.now();
    await attachOne(device);
    perInterfaceMs.push(performance.now() - t0);
  }
  return { totalMs: performance.now() - start, perInterfaceMs };
}

function line(label: string, count: number, timing: Timing): string {
  const f = (v: number) => `${v.toFixed(2)} ms`;
  return `${label.padEnd(34)} n=${String(count).padEnd(5)} total ${(timing.totalMs / 1000).toFixed(2).padStart(7)} s   per interface p50 ${f(percentile(timing.perInterfaceMs, 50)).padEnd(10)} p99 ${f(percentile(timing.perInterfaceMs, 99))}`;
}

export async function benchAttach(count = 1000, oldCount = 1000): Promise<string[]> {
  const cleanups = new Cleanups();
  const id = randomBytes(2).toString('hex');
  const netns = `dz-bench-attach-${id}`;
  try {
    const bpffs = await createBpffs(cleanups);
    await sh('ip', ['netns', 'add', netns]);
    // Deleting the namespace deletes the peers, and with them the host sides and their filters.
    cleanups.teardown(() => shQuiet('ip', ['netns', 'del', netns]));
    const oldDevices = await makeInterfaces(`dzo${id}`, oldCount, netns);
    const newDevices = await makeInterfaces(`dzn${id}`, count, netns);
    cleanups.teardown(() => ipBatch([...oldDevices, ...newDevices].map((name) => `link del ${name}`), { force: true }).catch(() => undefined));

    // Before: as EbpfSource.attach was (the agent's own pins dir, made by the first attach).
    const before = await timeEach(oldDevices, async (device) => {
      await listLinks({ device });
      await attachByTcCommand(device, defaultObjectPath(), bpffs);
    });

    // After: one load (on the same pins: the maps tc made are reused), then attach by fd.
    const maps = new MapClient();
    cleanups.teardown(() => maps.close());
    const programs = new TcPrograms(maps);
    const loadStart = performance.now();
    await programs.load(defaultObjectPath(), join(bpffs, 'tc', 'globals'));
    const loadMs = performance.now() - loadStart;
    const after = await timeEach(newDevices, async (device) => {
      await requireEthernet(device);
      await programs.attach(device);
    });

    // Both ways really attached: the last interface of each carries doze's two programs.
    for (const device of [oldDevices.at(-1)!, newDevices.at(-1)!]) {
      const names = (await listFilters(device)).map((f) => f.programName).sort();
      if (names.join() !== 'doze_egress,doze_ingress') throw new Error(`${device} carries ${names.join() || 'nothing'}, not doze's programs`);
    }

    const perOld = percentile(before.perInterfaceMs, 50);
    const perNew = percentile(after.perInterfaceMs, 50);
    const projectedOld = (before.totalMs / oldCount) * count;
    return [
      line('before: tc filter replace … obj', oldCount, before),
      line('after: load once, attach by fd', count, after),
      `${'after: the one load (4 programs)'.padEnd(34)} ${loadMs.toFixed(1)} ms`,
      `per interface p50: ${(perOld / perNew).toFixed(1)}x faster by fd` +
        `; ${count} interfaces: ${((after.totalMs + loadMs) / 1000).toFixed(2)} s with the load, against ${(projectedOld / 1000).toFixed(1)} s the old way` +
        (oldCount === count ? '' : ` (projected from ${oldCount}: the old way was measured on ${oldCount} interfaces only)`) +
        ` — ${(projectedOld / (after.totalMs + loadMs)).toFixed(1)}x`,
    ];
  } finally {
    await cleanups.run();
  }
}
