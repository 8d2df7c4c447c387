import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { listFilters } from '../../agent/net/tc.js';
import { createLogger } from '../../agent/shared/log.js';
import { TALKER_SLOTS, type Talker } from '../../agent/sources/bpf-records.js';
import { EbpfSource } from '../../agent/sources/ebpf-source.js';
import { portKey } from '../../agent/sources/ipv4.js';
import type { TrafficKey } from '../../agent/sources/traffic-source.js';
import { ipv4Frame, ipv6Frame, tcpSegment, udpDatagram } from '../helpers/crafted-packet.js';
import { createBpffs } from '../helpers/bpffs.js';
import { createNetns, type TestNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';
import type { Teardown } from '../helpers/teardown.js';

/*
 * The top-talkers table (doze_talkers) as the egress program keeps it, run in the kernel on
 * crafted frames (BPF_PROG_TEST_RUN, with a mark in the context where a health check's would be).
 */

const CHECK_MARK = 0x400;

/** TCP from `port` to `to`: a client's SYN, or an ACK carrying a request's first bytes. */
function tcp(port: number, kind: 'syn' | 'data', to = 8080): Buffer {
  return kind === 'syn' ? tcpSegment(port, to, { seq: 1000, flags: 0x02 }) : tcpSegment(port, to, { seq: 1001, flags: 0x18, payload: Buffer.from('GET / HTTP') });
}

/** A DNS-sized datagram from `port` to 53. */
const udp = (port: number) => udpDatagram(port, 53);

const runResult = z.looseObject({ retval: z.number() });

interface Harness {
  ns: TestNetns;
  source: EbpfSource;
  key: TrafficKey;
  /** The instance's program once on `frame` (into the instance), with skb->mark `mark`. */
  run(frame: Buffer, mark?: number): Promise<void>;
  talkers(): Promise<Talker[] | undefined>;
}

/**
 * An instance behind its own veth (the egress program), or with `hostPort`, a host-port instance on
 * the host's address (doze_host_in on the veth's ingress, checks recognised by source too).
 */
async function harness(t: Teardown, hostPort?: { port: number; checkSources: string[] }): Promise<Harness> {
  const bpffs = await createBpffs(t);
  const ns = await createNetns(t, { ipv6: true });
  const source = new EbpfSource({ bpffs, checkMark: CHECK_MARK, checkSources: hostPort?.checkSources, hostInterfaces: [ns.hostIf], log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  await source.start();
  let key: TrafficKey;
  if (hostPort) {
    await source.attachHost(`${ns.hostIp}:${hostPort.port}`);
    key = portKey(hostPort.port) as TrafficKey;
    await source.track(key);
  } else {
    await source.attach(ns.hostIf);
    key = ns.instanceIp as TrafficKey;
    await source.track(key, { ipv6: [ns.instanceIp6!], device: ns.hostIf });
  }
  const program = hostPort ? 'doze_host_in' : 'doze_egress';
  const egress = (await listFilters(ns.hostIf)).find((f) => f.programName === program)!.programId;
  const ifindex = Number(await sh('cat', [`/sys/class/net/${ns.hostIf}/ifindex`]));
  const dir = await tempDir(t, 'talkers');
  let runs = 0;
  return {
    ns,
    source,
    key,
    async run(frame, mark = 0) {
      // struct __sk_buff up to ifindex (offset 40); mark at offset 8.
      const ctx = Buffer.alloc(44);
      ctx.writeUInt32LE(mark, 8);
      ctx.writeUInt32LE(ifindex, 40);
      const file = join(dir, `frame${runs}`);
      const ctxFile = join(dir, `ctx${runs++}`);
      await writeFile(file, frame);
      await writeFile(ctxFile, ctx);
      const out = runResult.parse(JSON.parse(await sh('bpftool', ['-j', 'prog', 'run', 'id', String(egress), 'data_in', file, 'ctx_in', ctxFile])));
      if (out.retval !== 0xffffffff && out.retval !== -1) throw new Error(`the program returned ${out.retval}, not TC_ACT_UNSPEC`);
    },
    async talkers() {
      return (await source.talkersOf([key])).get(key);
    },
  };
}

rootTest('a client\'s new connections and its datagrams (either family) are counted in its slot; a retransmitted SYN and an open connection\'s data are not', async (t) => {
  const h = await harness(t);
  t.deepEqual(await h.talkers(), [], 'tracking made an empty table');
  const client = '10.213.77.9';
  for (const port of [41000, 41001, 41002]) {
    await h.run(ipv4Frame(client, h.ns.instanceIp, 6, tcp(port, 'syn')));
    await h.run(ipv4Frame(client, h.ns.instanceIp, 6, tcp(port, 'data')));
  }
  await h.run(ipv4Frame(client, h.ns.instanceIp, 6, tcp(41002, 'syn')));
  let talkers = (await h.talkers())!;
  t.is(talkers.length, 1);
  t.like(talkers[0], { address: client, port: 41002, protocol: 'tcp', connections: 3, packets: 0 });
  t.true(talkers[0]!.lastNs >= talkers[0]!.firstNs && talkers[0]!.firstNs > 0n);
  await h.run(ipv4Frame(client, h.ns.instanceIp, 17, udp(5353)));
  await h.run(ipv4Frame('10.213.77.10', h.ns.instanceIp, 17, udp(5354)));
  talkers = (await h.talkers())!;
  t.like(talkers[0], { address: '10.213.77.10', port: 5354, protocol: 'udp', connections: 0, packets: 1 });
  t.like(talkers[1], { address: client, port: 5353, protocol: 'udp', connections: 3, packets: 1 });
  t.is((await h.source.counter(h.key))!.packets, 9n, 'every one of them counted as traffic all the same');
  // IPv6 clients by their IPv6 address, on the instance's key whichever of its addresses they reached.
  await h.run(ipv6Frame('fd7a:d02e:ffff::9', h.ns.instanceIp6!, 17, udp(5355)));
  await h.run(ipv6Frame('fd7a:d02e:ffff::10', h.ns.instanceIp6!, 6, tcp(41003, 'syn')));
  talkers = (await h.talkers())!;
  t.like(talkers[0], { address: 'fd7a:d02e:ffff::10', port: 41003, protocol: 'tcp', connections: 1, packets: 0 });
  t.like(talkers[1], { address: 'fd7a:d02e:ffff::9', port: 5355, protocol: 'udp', connections: 0, packets: 1 });
});

rootTest('health checks (marked) never enter the table, by SYN or by datagram', async (t) => {
  const h = await harness(t);
  const checker = '10.213.77.20';
  for (let n = 0; n < 5; n++) {
    await h.run(ipv4Frame(checker, h.ns.instanceIp, 6, tcp(42000 + n, 'syn')), CHECK_MARK);
    await h.run(ipv4Frame(checker, h.ns.instanceIp, 6, tcp(42000 + n, 'data')), CHECK_MARK);
    await h.run(ipv4Frame(checker, h.ns.instanceIp, 17, udp(42000 + n)), CHECK_MARK);
  }
  const counters = (await h.source.counter(h.key))!;
  t.is(counters.checks, 15n, 'the program saw them, as checks');
  t.is(counters.packets, 0n);
  t.deepEqual(await h.talkers(), []);
  // An unmarked client beside them is named, the checker still not.
  await h.run(ipv4Frame('10.213.77.21', h.ns.instanceIp, 6, tcp(43000, 'syn')));
  t.deepEqual((await h.talkers())!.map((x) => x.address), ['10.213.77.21']);
});

rootTest('a host-port instance\'s checks, recognised by source address, never enter its table either', async (t) => {
  const checker = '10.213.77.30';
  const h = await harness(t, { port: 28080, checkSources: [`${checker}/32`] });
  const syn = (from: string, port: number) => ipv4Frame(from, h.ns.hostIp, 6, tcp(port, 'syn', 28080));
  for (let n = 0; n < 3; n++) await h.run(syn(checker, 47000 + n));
  t.is((await h.source.counter(h.key))!.checks, 3n, 'seen, as checks');
  t.deepEqual(await h.talkers(), []);
  await h.run(syn('10.213.77.31', 47100));
  t.like((await h.talkers())![0], { address: '10.213.77.31', port: 47100, connections: 1 });
});

rootTest('more clients than slots: the table stays TALKER_SLOTS long, a steady client keeps its slot and its count; untracking removes it', async (t) => {
  const h = await harness(t);
  const steady = '10.213.78.1';
  const visitors = 3 * TALKER_SLOTS;
  for (let n = 0; n < visitors; n++) {
    await h.run(ipv4Frame(steady, h.ns.instanceIp, 6, tcp(44000 + n, 'syn')));
    await h.run(ipv4Frame(`10.213.79.${n + 1}`, h.ns.instanceIp, 6, tcp(45000, 'syn')));
  }
  const talkers = (await h.talkers())!;
  t.is(talkers.length, TALKER_SLOTS);
  t.like(talkers.find((x) => x.address === steady), { connections: visitors });
  // The others: the most recent visitors, once each.
  const others = talkers.filter((x) => x.address !== steady);
  t.deepEqual(others.map((x) => x.address).sort(), Array.from({ length: TALKER_SLOTS - 1 }, (_, i) => `10.213.79.${visitors - i}`).sort());
  t.true(others.every((x) => x.connections === 1));
  await h.source.untrack(h.key);
  t.deepEqual(await h.source.talkersOf([h.key]), new Map(), 'its entry is gone');
  await h.run(ipv4Frame(steady, h.ns.instanceIp, 6, tcp(46000, 'syn')));
  t.deepEqual(await h.source.talkersOf([h.key]), new Map(), 'and the program makes none');
});
