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
 *  4. IPv4 and IPv6 (issue 27): the egress program of this build on an IPv4
 *     and an IPv6 segment, against the program before IPv6 (main at 91f1aa7,
 *     built by the Makefile) on the IPv4 one, in the same run, each on its own
 *     bpffs with 10,000 connections of its own layout per family.
 *  5. The top-talkers table (issue 30): this build against one without the table
 *     (-DDOZE_NO_TALKERS) and one that updates it on every packet
 *     (-DDOZE_TALKERS_EVERY_PACKET), in the same run, on an open connection's data segment
 *     (the common packet) and on a UDP datagram (always noted), with the table full of 7
 *     other clients so the sender's slot is the last one looked at.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { Agent } from '../agent/agent.js';
import {
  COUNTERS_SIZE, CONN_KEY_BYTES, CONN_VALUE_BYTES, encodeClientAddr, TALKER_BYTES, TALKER_LAYOUT, TALKERS_VALUE_BYTES,
} from '../agent/sources/bpf-records.js';
import { ipv4ToBytes } from '../agent/sources/ipv4.js';
import { ipv6ToBytes } from '../agent/sources/ipv6.js';
import { MapClient } from '../agent/sources/map-client.js';
// The variants' objects go on by tc, each on its own bpffs (bench only: the agent loads once, tc-programs.ts).
import { attachByTcCommand as attach, detach, listFilters } from '../agent/net/tc.js';
import { createBpffs } from '../test/helpers/bpffs.js';
import { createNetns } from '../test/helpers/netns.js';
import { startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { craftSegment, craftSegment6, ipv4Frame, udpDatagram } from '../test/helpers/crafted-packet.js';
import { createInstance, type TestInstance } from '../test/helpers/instance.js';
import { sh } from '../test/helpers/sh.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { tempDir } from '../test/helpers/temp-dir.js';
import { verdict } from './stats.js';

const COUNT_ONLY = fileURLToPath(new URL('./doze-count-only.bpf.o', import.meta.url));
const BEFORE_IPV6 = fileURLToPath(new URL('./doze-before-ipv6.bpf.o', import.meta.url));
const CURRENT = fileURLToPath(new URL('../agent/bpf/doze.bpf.o', import.meta.url));
const NO_TALKERS = fileURLToPath(new URL('./doze-no-talkers.bpf.o', import.meta.url));
const TALKERS_EVERY_PACKET = fileURLToPath(new URL('./doze-talkers-every-packet.bpf.o', import.meta.url));
const TRACKED = 10_000;
const progStats = z.looseObject({ run_time_ns: z.number().optional(), run_cnt: z.number().optional() });
const runResult = z.looseObject({ duration: z.number() });

/** A doze_conns key in this build's layout (either family) or the one before IPv6 (12 bytes, IPv4 only). */
function connKey(layout: 'current' | 'before-ipv6', client: string, instanceKey: string, clientPort: number, instancePort: number): Buffer {
  if (layout === 'before-ipv6') {
    const key = Buffer.alloc(12);
    ipv4ToBytes(client).copy(key, 0);
    ipv4ToBytes(instanceKey).copy(key, 4);
    key.writeUInt16BE(clientPort, 8);
    key.writeUInt16BE(instancePort, 10);
    return key;
  }
  const key = Buffer.alloc(CONN_KEY_BYTES);
  encodeClientAddr(client).copy(key, 0);
  ipv4ToBytes(instanceKey).copy(key, 16);
  key.writeUInt16BE(clientPort, 20);
  key.writeUInt16BE(instancePort, 22);
  return key;
}

async function fillConnections(agent: Agent, inst: TestInstance, maps: MapClient): Promise<void> {
  const path = agent.source.pin('doze_conns');
  const value = Buffer.alloc(CONN_VALUE_BYTES);
  for (let i = 0; i < TRACKED; i++) {
    await maps.update(path, connKey('current', inst.ns.hostIp, inst.ns.instanceIp, 20_000 + i, 8080), value);
  }
}

interface FamilyCost {
  ipv4Ns: number;
  /** Undefined for the program before IPv6, which does not see IPv6. */
  ipv6Ns: number | undefined;
}

/**
 * test_run of one object's egress program, attached with tc on its own bpffs (no agent: the program
 * before IPv6 has other maps), with an awake instance and 10,000 connections per family it reads.
 */
/**
 * One object's programs on a fresh namespace's veth and bpffs (attached with tc: the older
 * objects have other maps), with the namespace's instance tracked awake in its state slot.
 */
async function programWorld(cleanups: Cleanups, objectPath: string, countersBytes: number, ipv6 = false) {
  const bpffs = await createBpffs(cleanups);
  const ns = await createNetns(cleanups, { ipv6 });
  await attach(ns.hostIf, objectPath, bpffs);
  cleanups.teardown(() => detach(ns.hostIf));
  const maps = new MapClient();
  cleanups.teardown(() => maps.close());
  const pin = (name: string) => join(bpffs, 'tc', 'globals', name);
  const key = ipv4ToBytes(ns.instanceIp);
  // Every program measured keeps an instance's state in a slot (doze_slots: key -> index into doze_state).
  await maps.update(pin('doze_slots'), key, Buffer.alloc(4));
  await maps.update(pin('doze_state'), Buffer.alloc(4), Buffer.alloc(4));
  await maps.update(pin('doze_counters'), key, Buffer.alloc(countersBytes));
  return { ns, maps, pin, key };
}

async function measureFamilies(cleanups: Cleanups, objectPath: string, layout: 'current' | 'before-ipv6'): Promise<FamilyCost> {
  const { ns, maps, pin, key } = await programWorld(cleanups, objectPath, layout === 'current' ? COUNTERS_SIZE : 48, true);
  if (layout === 'current') await maps.update(pin('doze_addr6'), ipv6ToBytes(ns.instanceIp6!), key);
  const value = Buffer.alloc(CONN_VALUE_BYTES);
  for (let i = 0; i < TRACKED; i++) {
    await maps.update(pin('doze_conns'), connKey(layout, ns.hostIp, ns.instanceIp, 20_000 + i, 8080), value);
    if (layout === 'current') await maps.update(pin('doze_conns'), connKey(layout, ns.hostIp6!, ns.instanceIp, 20_000 + i, 8080), value);
  }
  const egress = (await listFilters(ns.hostIf)).find((f) => f.hook === 'egress')!.programId;
  const ipv4Ns = await testRun(cleanups, egress, craftSegment(ns.hostIp, ns.instanceIp, 20_000 + TRACKED / 2, 8080));
  const ipv6Ns = layout === 'current' ? await testRun(cleanups, egress, craftSegment6(ns.hostIp6!, ns.instanceIp6!, 20_000 + TRACKED / 2, 8080)) : undefined;
  await cleanups.run();
  return { ipv4Ns, ipv6Ns };
}

/** A doze_talkers value with `others` slots taken by other clients (seen at ns 1, so none is replaced first by the sender's). */
function talkersTable(others: number): Buffer {
  const value = Buffer.alloc(TALKERS_VALUE_BYTES);
  for (let n = 0; n < others; n++) {
    const slot = value.subarray(n * TALKER_BYTES);
    encodeClientAddr(`192.0.2.${n + 1}`).copy(slot, TALKER_LAYOUT.addr);
    slot.writeBigUInt64LE(1n, TALKER_LAYOUT.first_ns);
    slot.writeBigUInt64LE(1n, TALKER_LAYOUT.last_ns);
  }
  return value;
}

interface TalkersCost {
  dataNs: number;
  udpNs: number;
}

/** test_run of one build's egress program on an open connection's data segment and on a UDP datagram, the table full but for the sender. */
async function measureTalkers(cleanups: Cleanups, objectPath: string): Promise<TalkersCost> {
  const { ns, maps, pin, key } = await programWorld(cleanups, objectPath, COUNTERS_SIZE);
  await maps.update(pin('doze_talkers'), key, talkersTable(7));
  const value = Buffer.alloc(CONN_VALUE_BYTES);
  for (let i = 0; i < TRACKED; i++) await maps.update(pin('doze_conns'), connKey('current', ns.hostIp, ns.instanceIp, 20_000 + i, 8080), value);
  const egress = (await listFilters(ns.hostIf)).find((f) => f.hook === 'egress')!.programId;
  const dataNs = await testRun(cleanups, egress, craftSegment(ns.hostIp, ns.instanceIp, 20_000 + TRACKED / 2, 8080));
  const udpNs = await testRun(cleanups, egress, ipv4Frame(ns.hostIp, ns.instanceIp, 17, udpDatagram(5353, 53)));
  await cleanups.run();
  return { dataNs, udpNs };
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
    // Interleaved, best of each: the machine's load moves between runs.
    const haveBefore = await access(BEFORE_IPV6).then(() => true, () => false);
    const before: FamilyCost[] = [];
    const now: FamilyCost[] = [];
    for (let round = 0; round < 3; round++) {
      if (haveBefore) before.push(await measureFamilies(cleanups, BEFORE_IPV6, 'before-ipv6'));
      now.push(await measureFamilies(cleanups, CURRENT, 'current'));
    }
    const beforeV4 = haveBefore ? Math.min(...before.map((c) => c.ipv4Ns)) : NaN;
    const nowV4 = Math.min(...now.map((c) => c.ipv4Ns));
    const nowV6 = Math.min(...now.map((c) => c.ipv6Ns!));
    const ipv4Growth = nowV4 / beforeV4 - 1;
    const talkers = { without: [] as TalkersCost[], newConnections: [] as TalkersCost[], everyPacket: [] as TalkersCost[] };
    for (let round = 0; round < 3; round++) {
      talkers.without.push(await measureTalkers(cleanups, NO_TALKERS));
      talkers.newConnections.push(await measureTalkers(cleanups, CURRENT));
      talkers.everyPacket.push(await measureTalkers(cleanups, TALKERS_EVERY_PACKET));
    }
    const best = (list: TalkersCost[], field: keyof TalkersCost) => Math.min(...list.map((c) => c[field]));
    const talkerRow = (name: string, list: TalkersCost[]) => {
      const data = best(list, 'dataNs');
      const udp = best(list, 'udpNs');
      const plus = (ns: number, base: number) => `${ns.toFixed(0)} ns (${ns >= base ? '+' : ''}${(ns - base).toFixed(0)})`;
      return `  ${name.padEnd(40)}${plus(data, best(talkers.without, 'dataNs')).padEnd(26)}${plus(udp, best(talkers.without, 'udpNs'))}`;
    };
    const talkerGrowth = best(talkers.newConnections, 'dataNs') - best(talkers.without, 'dataNs');
    return [
      `tc program cost per packet, ${full.tracked} tracked connections`,
      `                              test_run (egress, best of 3×2M)   live traffic (bpf_stats, both hooks)`,
      `with connection tracking      ${`${full.testRunNs.toFixed(0)} ns`.padEnd(34)}${full.liveNs.toFixed(0)} ns`,
      `counting only                 ${`${countOnly.testRunNs.toFixed(0)} ns`.padEnd(34)}${countOnly.liveNs.toFixed(0)} ns`,
      `tracking / counting only      ${`×${(full.testRunNs / countOnly.testRunNs).toFixed(2)} (+${(full.testRunNs - countOnly.testRunNs).toFixed(0)} ns)`.padEnd(34)}×${(full.liveNs / countOnly.liveNs).toFixed(2)}`,
      verdict(full.testRunNs < 150 && full.tracked >= TRACKED, 'target < 150 ns per packet with 10,000 tracked connections (test_run)'),
      `host-port program on a node interface (test_run, best of 3×2M): the node's own traffic ${host.otherNs.toFixed(0)} ns, a packet for a host-port instance ${host.instanceNs.toFixed(0)} ns`,
      `egress program per packet, test_run (best of 3 rounds × 3×2M, ${TRACKED.toLocaleString('en')} tracked connections per family):`,
      haveBefore ? `  before IPv6 (91f1aa7), IPv4 segment   ${beforeV4.toFixed(0)} ns` : '  before IPv6: skipped (no git history to build it from)',
      `  this build, IPv4 segment              ${nowV4.toFixed(0)} ns${haveBefore ? ` (${ipv4Growth >= 0 ? '+' : ''}${(ipv4Growth * 100).toFixed(1)} %)` : ''}`,
      `  this build, IPv6 segment              ${nowV6.toFixed(0)} ns`,
      ...(haveBefore ? [verdict(ipv4Growth <= 0.1, 'target: IPv4 at most 10 % more than before IPv6')] : []),
      `top-talkers table, egress per packet, test_run (best of 3 rounds × 3×2M; the table full, the sender's slot last):`,
      `                                          open connection's data    UDP datagram`,
      talkerRow('without the table', talkers.without),
      talkerRow('this build (new connections, non-TCP)', talkers.newConnections),
      talkerRow('every packet', talkers.everyPacket),
      verdict(talkerGrowth <= 5, 'target: an open connection\'s packet costs at most 5 ns more with the table'),
    ];
  } finally {
    await cleanups.run();
    await writeFile('/proc/sys/kernel/bpf_stats_enabled', previous);
  }
}
