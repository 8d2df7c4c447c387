/**
 * Idle CPU of real workloads (issue 15): what an instance that is idle burns on its
 * own, so the busy guard's default (busyCpu, a share of one core) sits above it.
 * Each app runs in a freezer cgroup with cpuacct/blkio cgroups at the same path (as
 * Nomad lays out v1 task cgroups) and is read through agent/cgroups/cpu-usage.ts,
 * the code the guard uses; the QEMU guest is read both ways (its process, its cgroup).
 * Windows of 300 ms and 1 s, once every app has answered and settled.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readUsage, type UsageSource } from '../agent/cgroups/cpu-usage.js';
import { judgeBusy, keepSamples, type UsageSample } from '../agent/detector/busy-guard.js';
import { createFreezerCgroup } from '../test/helpers/cgroup.js';
import { createAccountingCgroups } from '../test/helpers/cpu-cgroup.js';
import { get } from '../test/helpers/http.js';
import { noGuest, startGuest } from '../test/helpers/qemu-guest.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { tempDir } from '../test/helpers/temp-dir.js';
import { percentile } from './stats.js';

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const NODE_TIMERS = `
// An idle app with a runtime's usual background: timers at 10 ms, 100 ms and 1 s that allocate (GC runs).
import http from 'node:http';
let keep = [];
setInterval(() => { keep.push(new Array(64).fill(Math.random())); if (keep.length > 100) keep = []; }, 10);
setInterval(() => { JSON.stringify({ at: Date.now(), list: keep.length }); }, 100);
setInterval(() => { keep = keep.slice(-10); }, 1000);
http.createServer((req, res) => res.end('ok\\n')).listen(Number(process.argv[2]), '127.0.0.1');
`;

const JAVA_SERVER = `
import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.util.concurrent.*;
public class Idle {
  public static void main(String[] args) throws Exception {
    HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 0);
    server.createContext("/", ex -> { byte[] b = "ok\\n".getBytes(); ex.sendResponseHeaders(200, b.length); ex.getResponseBody().write(b); ex.close(); });
    server.start();
    // A scheduled housekeeping task, as frameworks keep one.
    Executors.newSingleThreadScheduledExecutor().scheduleAtFixedRate(() -> { Object o = new byte[4096]; }, 100, 100, TimeUnit.MILLISECONDS);
  }
}
`;

interface Sampled {
  name: string;
  source: UsageSource;
}

async function startInCgroups(c: Cleanups, command: string[], port: number, name: string, settleMs: number): Promise<Sampled> {
  const freezer = await createFreezerCgroup(c);
  const accounting = await createAccountingCgroups(c, freezer.name);
  const child = spawn(command[0]!, command.slice(1), { stdio: 'ignore' });
  c.teardown(() => child.kill('SIGKILL'));
  await accounting.join(child.pid!);
  await writeFile(freezer.procsFile, String(child.pid));
  const until = Date.now() + 60_000;
  for (;;) {
    try {
      if ((await get(`http://127.0.0.1:${port}/`, 1000)).status === 200) break;
    } catch {
      if (Date.now() > until) throw new Error(`${name} did not answer within 60 s`);
      await delay(200);
    }
  }
  await delay(settleMs);
  return { name, source: { kind: 'cgroup', version: 1, dir: freezer.dir } };
}

/** What the guard costs per sleep decision: one reading (cgroup or /proc) plus keeping and judging the samples. */
function guardCostUs(source: UsageSource, rounds = 20_000): number {
  let samples: UsageSample[] = [];
  const started = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    const reading = readUsage(source);
    if (!reading) throw new Error('no reading');
    // Spaced as if a decision came every 60 ms (a held instance's recheck at a 300 ms timeout).
    samples = keepSamples(samples, { atNs: BigInt(i) * 60_000_000n, ...reading }, 300);
    judgeBusy(samples, 300, 0.1);
  }
  return Number(process.hrtime.bigint() - started) / 1000 / rounds;
}

async function windows(apps: Sampled[], windowMs: number, count: number): Promise<Map<string, number[]>> {
  const used = new Map(apps.map((a) => [a.name, [] as number[]]));
  for (let i = 0; i < count; i++) {
    const before = apps.map((a) => readUsage(a.source)?.cpuUs ?? Number.NaN);
    const started = performance.now();
    await delay(windowMs);
    const elapsed = performance.now() - started;
    apps.forEach((a, k) => used.get(a.name)!.push((((readUsage(a.source)?.cpuUs ?? Number.NaN) - before[k]!) / 1000) * (windowMs / elapsed)));
  }
  return used;
}

export async function benchIdleCpu(): Promise<string[]> {
  const c = new Cleanups();
  const lines: string[] = [];
  try {
    const dir = await tempDir(c, 'idle');
    await writeFile(join(dir, 'timers.mjs'), NODE_TIMERS);
    await writeFile(join(dir, 'Idle.java'), JAVA_SERVER);
    const apps: Sampled[] = [];
    apps.push(await startInCgroups(c, ['python3', '-m', 'http.server', '--bind', '127.0.0.1', '18431'], 18431, 'python http.server', 3000));
    apps.push(await startInCgroups(c, [process.execPath, join(dir, 'timers.mjs'), '18432'], 18432, 'node, timers 10/100/1000 ms + GC', 3000));
    apps.push(await startInCgroups(c, ['java', '-Xmx64m', join(dir, 'Idle.java'), '18433'], 18433, 'java 17 HttpServer + 100 ms task', 8000));
    const why = noGuest?.reason;
    if (why) lines.push(`QEMU guest skipped: ${why}`);
    else {
      const guest = await startGuest(c);
      const freezer = await createFreezerCgroup(c);
      const accounting = await createAccountingCgroups(c, freezer.name);
      await accounting.join(guest.child.pid!);
      await delay(3000);
      apps.push({ name: 'QEMU TCG guest (cgroup)', source: { kind: 'cgroup', version: 1, dir: freezer.dir } });
      // The shell exec'd QEMU: same pid.
      apps.push({ name: 'QEMU TCG guest (/proc/PID/stat)', source: { kind: 'process', pid: guest.child.pid! } });
    }
    for (const app of apps) lines.push(`busy guard cost per decision, ${app.name.padEnd(34)} ${guardCostUs(app.source).toFixed(1)} µs (20,000 rounds)`);
    for (const [windowMs, count] of [[300, 40], [1000, 15]] as const) {
      const used = await windows(apps, windowMs, count);
      for (const [name, values] of used) {
        const f = (v: number) => `${v.toFixed(1)} ms (${((v / windowMs) * 100).toFixed(1)} %)`;
        lines.push(`${name.padEnd(34)} ${String(windowMs).padStart(4)} ms windows n=${count}: p50 ${f(percentile(values, 50))}, p90 ${f(percentile(values, 90))}, max ${f(Math.max(...values))}`);
      }
    }
  } finally {
    await c.run();
  }
  return lines;
}
