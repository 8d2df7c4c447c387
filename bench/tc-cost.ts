/**
 * Per-packet cost of the tc programs (issue 9), connection tracking vs. the
 * counting-only build, in the same run:
 *  1. BPF_PROG_TEST_RUN (`bpftool prog run id N … repeat R`) of the attached
 *     egress program on a crafted client→instance TCP segment, with 10,000
 *     entries in the connection map: stable, traffic-free.
 *  2. Live traffic with kernel.bpf_stats_enabled=1 (run_time_ns / run_cnt over
 *     both hooks), which also prices the stats' own clock reads.
 *  3. The host-port program (doze_host_in), which runs on the node's own
 *     interfaces for every packet: on the node's own traffic (a port no
 *     instance has) and on a packet for a host-port instance.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { Agent } from '../agent/agent.js';
import { CONN_KEY_BYTES, CONN_VALUE_BYTES } from '../agent/sources/bpf-records.js';
import { ipv4ToBytes } from '../agent/sources/ipv4.js';
import { MapClient } from '../agent/sources/map-client.js';
import { listFilters } from '../agent/net/tc.js';
import { startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { craftSegment } from '../test/helpers/crafted-packet.js';
import { createInstance, type TestInstance } from '../test/helpers/instance.js';
import { sh } from '../test/helpers/sh.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { tempDir } from '../test/helpers/temp-dir.js';
import { verdict } from './stats.js';

const COUNT_ONLY = fileURLToPath(new URL('./doze-count-only.bpf.o', import.meta.url));
const TRACKED = 10_000;
const progStats = z.looseObject({ run_time_ns: z.number().optional(), run_cnt: z.number().optional() });
const runResult = z.looseObject({ duration: z.number() });

async function fillConnections(agent: Agent, inst: TestInstance, maps: MapClient): Promise<void> {
  const path = agent.source.pin('doze_conns');
  const value = Buffer.alloc(CONN_VALUE_BYTES);
  for (let i = 0; i < TRACKED; i++) {
    const key = Buffer.alloc(CONN_KEY_BYTES);
    ipv4ToBytes(inst.ns.hostIp).copy(key, 0);
    ipv4ToBytes(inst.ns.instanceIp).copy(key, 4);
    key.writeUInt16BE(20_000 + i, 8);
    key.writeUInt16BE(8080, 10);
    await maps.update(path, key, value);
  }
}

async function programIds(device: string): Promise<{ egress: number; all: number[] }> {
  const filters = await listFilters(device);
  return { egress: filters.find((f) => f.hook === 'egress')!.programId, all: filters.map((f) => f.programId) };
}

async function liveStats(ids: number[]): Promise<{ ns: number; count: number }> {
  let ns = 0;
  let count = 0;
  for (const id of ids) {
    const s = progStats.parse(JSON.parse(await sh('bpftool', ['-j', 'prog', 'show', 'id', String(id)])));
    ns += s.run_time_ns ?? 0;
    count += s.run_cnt ?? 0;
  }
  return { ns, count };
}

interface Cost {
  testRunNs: number;
  liveNs: number;
  tracked: number;
}

async function measure(cleanups: Cleanups, objectPath: string | undefined): Promise<Cost> {
  const inst = await createInstance(cleanups, 'cost');
  const agent = await startAgent(cleanups, { instances: [inst.config({ idleTimeout: '10m' })] }, { objectPath });
  const maps = new MapClient();
  cleanups.teardown(() => maps.close());
  await fillConnections(agent, inst, maps);
  const tracked = (await agent.source.connections()).length;
  const ids = await programIds(inst.ns.hostIf);

  const dir = await tempDir(cleanups, 'cost');
  const packet = join(dir, 'segment.bin');
  await writeFile(packet, craftSegment(inst.ns.hostIp, inst.ns.instanceIp, 20_000 + TRACKED / 2, 8080));
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const out = await sh('bpftool', ['-j', 'prog', 'run', 'id', String(ids.egress), 'data_in', packet, 'repeat', '2000000'], 60_000);
    runs.push(runResult.parse(JSON.parse(out)).duration);
  }

  // Stats only around the live part: they add two clock reads to every run, test_run included.
  await writeFile('/proc/sys/kernel/bpf_stats_enabled', '1');
  const before = await liveStats(ids.all);
  for (let i = 0; i < 2000; i++) await get(`${inst.app.url}/`, 5000);
  const after = await liveStats(ids.all);
  await writeFile('/proc/sys/kernel/bpf_stats_enabled', '0');
  await cleanups.run();
  return { testRunNs: Math.min(...runs), liveNs: (after.ns - before.ns) / Math.max(1, after.count - before.count), tracked };
}

/** Best of 3 test runs of program `id` on `frame`. */
async function testRun(cleanups: Cleanups, id: number, frame: Buffer): Promise<number> {
  const dir = await tempDir(cleanups, 'cost');
  const packet = join(dir, 'segment.bin');
  await writeFile(packet, frame);
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const out = await sh('bpftool', ['-j', 'prog', 'run', 'id', String(id), 'data_in', packet, 'repeat', '2000000'], 60_000);
    runs.push(runResult.parse(JSON.parse(out)).duration);
  }
  return Math.min(...runs);
}

/** doze_host_in on a test veth standing in for the node's interface; a host-port instance on port 28080. */
async function measureHostProgram(cleanups: Cleanups): Promise<{ otherNs: number; instanceNs: number }> {
  const inst = await createInstance(cleanups, 'cost');
  await startAgent(cleanups, {
    hostPorts: { interfaces: [inst.ns.hostIf] },
    instances: [{ id: 'hostport', address: `${inst.ns.hostIp}:28080`, idleTimeout: '10m', runtime: { kind: 'fake' } }],
  });
  const id = (await listFilters(inst.ns.hostIf)).find((f) => f.hook === 'ingress' && f.programName === 'doze_host_in')!.programId;
  const otherNs = await testRun(cleanups, id, craftSegment(inst.ns.instanceIp, inst.ns.hostIp, 40_000, 22));
  const instanceNs = await testRun(cleanups, id, craftSegment(inst.ns.instanceIp, inst.ns.hostIp, 40_000, 28080));
  await cleanups.run();
  return { otherNs, instanceNs };
}

export async function benchTcCost(): Promise<string[]> {
  const previous = (await readFile('/proc/sys/kernel/bpf_stats_enabled', 'utf8')).trim();
  await writeFile('/proc/sys/kernel/bpf_stats_enabled', '0');
  const cleanups = new Cleanups();
  try {
    const full = await measure(cleanups, undefined);
    const countOnly = await measure(cleanups, COUNT_ONLY);
    const host = await measureHostProgram(cleanups);
    return [
      `tc program cost per packet, ${full.tracked} tracked connections`,
      `                              test_run (egress, best of 3×2M)   live traffic (bpf_stats, both hooks)`,
      `with connection tracking      ${`${full.testRunNs.toFixed(0)} ns`.padEnd(34)}${full.liveNs.toFixed(0)} ns`,
      `counting only                 ${`${countOnly.testRunNs.toFixed(0)} ns`.padEnd(34)}${countOnly.liveNs.toFixed(0)} ns`,
      `tracking / counting only      ${`×${(full.testRunNs / countOnly.testRunNs).toFixed(2)} (+${(full.testRunNs - countOnly.testRunNs).toFixed(0)} ns)`.padEnd(34)}×${(full.liveNs / countOnly.liveNs).toFixed(2)}`,
      verdict(full.testRunNs < 150 && full.tracked >= TRACKED, 'target < 150 ns per packet with 10,000 tracked connections (test_run)'),
      `host-port program on a node interface (test_run, best of 3×2M): the node's own traffic ${host.otherNs.toFixed(0)} ns, a packet for a host-port instance ${host.instanceNs.toFixed(0)} ns`,
    ];
  } finally {
    await cleanups.run();
    await writeFile('/proc/sys/kernel/bpf_stats_enabled', previous);
  }
}
