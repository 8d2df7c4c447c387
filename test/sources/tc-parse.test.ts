import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { listFilters } from '../../agent/net/tc.js';
import { createLogger } from '../../agent/shared/log.js';
import { EbpfSource } from '../../agent/sources/ebpf-source.js';
import { ipv4ToBytes } from '../../agent/sources/ipv4.js';
import { ipv6ToBytes } from '../../agent/sources/ipv6.js';
import { createBpffs } from '../helpers/bpffs.js';
import { createNetns, type TestNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';
import type { Teardown } from '../helpers/teardown.js';

/*
 * What the egress program makes of each kind of frame into an instance's own interface, run in the
 * kernel on crafted frames (BPF_PROG_TEST_RUN, with the interface's ifindex in the context).
 */

const CLIENT6 = 'fd7a:d02e:ffff::1';

function ethernet(ethertype: number, body: Buffer): Buffer {
  const header = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, ethertype >> 8, ethertype & 0xff]);
  return Buffer.concat([header, body]);
}

/** A TCP SYN from port 40000 to 8080, no options. */
function tcpSyn(): Buffer {
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(40000, 0);
  tcp.writeUInt16BE(8080, 2);
  tcp.writeUInt32BE(1000, 4);
  tcp.writeUInt8(5 << 4, 12);
  tcp.writeUInt8(0x02, 13);
  tcp.writeUInt16BE(65535, 14);
  return tcp;
}

function ipv6(src: string, dst: string, next: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(40);
  header.writeUInt32BE(0x60000000, 0);
  header.writeUInt16BE(payload.length, 4);
  header.writeUInt8(next, 6);
  header.writeUInt8(64, 7);
  ipv6ToBytes(src).copy(header, 8);
  ipv6ToBytes(dst).copy(header, 24);
  return ethernet(0x86dd, Buffer.concat([header, payload]));
}

/** IPv4 with protocol TCP; `fragmentOffset` in 8-byte units (a non-first fragment when > 0). */
function ipv4(src: string, dst: string, payload: Buffer, fragmentOffset = 0): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt8(0x45, 0);
  header.writeUInt16BE(20 + payload.length, 2);
  header.writeUInt16BE(fragmentOffset, 6);
  header.writeUInt8(64, 8);
  header.writeUInt8(6, 9);
  ipv4ToBytes(src).copy(header, 12);
  ipv4ToBytes(dst).copy(header, 16);
  return ethernet(0x0800, Buffer.concat([header, payload]));
}

const runResult = z.looseObject({ retval: z.number() });

interface Harness {
  ns: TestNetns;
  source: EbpfSource;
  /** Runs the egress program once on `frame`, as if it went out of the instance's host-side interface. */
  run(frame: Buffer): Promise<void>;
  packets(): Promise<bigint>;
}

async function harness(t: Teardown): Promise<Harness> {
  const bpffs = await createBpffs(t);
  const ns = await createNetns(t, { ipv6: true });
  const source = new EbpfSource({ bpffs, checkMark: 1, log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  await source.start();
  await source.attach(ns.hostIf);
  await source.track(ns.instanceIp, { ipv6: [ns.instanceIp6!], device: ns.hostIf });
  const egress = (await listFilters(ns.hostIf)).find((f) => f.hook === 'egress')!.programId;
  const ifindex = Number(await sh('cat', [`/sys/class/net/${ns.hostIf}/ifindex`]));
  const dir = await tempDir(t, 'frames');
  // struct __sk_buff up to ifindex (offset 40): the kernel takes the device from it.
  const ctx = Buffer.alloc(44);
  ctx.writeUInt32LE(ifindex, 40);
  await writeFile(join(dir, 'ctx'), ctx);
  let runs = 0;
  return {
    ns,
    source,
    async run(frame) {
      const file = join(dir, `frame${runs++}`);
      await writeFile(file, frame);
      const out = runResult.parse(JSON.parse(await sh('bpftool', ['-j', 'prog', 'run', 'id', String(egress), 'data_in', file, 'ctx_in', join(dir, 'ctx')])));
      if (out.retval !== 0xffffffff && out.retval !== -1) throw new Error(`the program returned ${out.retval}, not TC_ACT_UNSPEC`);
    },
    async packets() {
      return (await source.counter(ns.instanceIp))!.packets;
    },
  };
}

rootTest('an IPv6 SYN to the instance\'s IPv6 address counts on its key and opens an IPv6 connection record', async (t) => {
  const h = await harness(t);
  await h.run(ipv6(CLIENT6, h.ns.instanceIp6!, 6, tcpSyn()));
  t.is(await h.packets(), 1n);
  const conns = await h.source.connections();
  t.is(conns.length, 1);
  t.like(conns[0], { clientAddr: CLIENT6, instanceAddr: h.ns.instanceIp, clientPort: 40000, instancePort: 8080 });
});

rootTest('ARP and IPv6 neighbour discovery into the instance are not counted: the kernels\' own bookkeeping', async (t) => {
  const h = await harness(t);
  await h.run(ethernet(0x0806, Buffer.alloc(28)));
  const solicitation = Buffer.alloc(24);
  solicitation.writeUInt8(135, 0);
  await h.run(ipv6(h.ns.hostIp6!, h.ns.instanceIp6!, 58, solicitation));
  t.is(await h.packets(), 0n);
  // An ICMPv6 echo request is a user's ping: it counts.
  const echo = Buffer.alloc(8);
  echo.writeUInt8(128, 0);
  await h.run(ipv6(h.ns.hostIp6!, h.ns.instanceIp6!, 58, echo));
  t.is(await h.packets(), 1n);
});

rootTest('a frame of another ethertype sent to the instance\'s own interface counts as its; a group frame and an IP packet to an address it does not have do not', async (t) => {
  const h = await harness(t);
  await h.run(ethernet(0x88b5, Buffer.alloc(46)));
  t.is(await h.packets(), 1n, 'counted through doze_ifaces');
  const broadcast = ethernet(0x88b5, Buffer.alloc(46));
  broadcast.fill(0xff, 0, 6);
  await h.run(broadcast);
  await h.run(ipv6(h.ns.hostIp6!, 'ff02::1', 17, Buffer.alloc(8)));
  t.is(await h.packets(), 1n, 'group frames and group addresses name no instance');
  // A bridge port carries frames flooded for another container (its MAC forgotten by the bridge): not this one's.
  await h.run(ipv4(h.ns.hostIp, '10.213.255.254', tcpSyn()));
  await h.run(ipv6(CLIENT6, 'fd7a:d02e:ffff::99', 6, tcpSyn()));
  t.is(await h.packets(), 1n, 'an IP packet is the instance\'s by its address only');
});

rootTest('IPv4 clients are recorded IPv4-mapped; an IPv6 packet from a mapped source counts but never shares their record', async (t) => {
  const h = await harness(t);
  await h.run(ipv4(h.ns.hostIp, h.ns.instanceIp, tcpSyn()));
  await h.run(ipv6(`::ffff:${h.ns.hostIp}`, h.ns.instanceIp6!, 6, tcpSyn()));
  t.is(await h.packets(), 2n);
  const conns = await h.source.connections();
  t.is(conns.length, 1, 'one record: the IPv4 SYN\'s');
  t.like(conns[0], { clientAddr: h.ns.hostIp, instanceAddr: h.ns.instanceIp, clientPort: 40000 });
});

rootTest('IPv4 and IPv6 fragments are counted and never read as TCP', async (t) => {
  const h = await harness(t);
  // A non-first fragment whose bytes look like a SYN where a TCP header would be.
  await h.run(ipv4(h.ns.hostIp, h.ns.instanceIp, tcpSyn(), 3));
  const fragmentHeader = Buffer.concat([Buffer.from([6, 0, 0, 24, 0, 0, 0, 1]), tcpSyn()]);
  await h.run(ipv6(CLIENT6, h.ns.instanceIp6!, 44, fragmentHeader));
  t.is(await h.packets(), 2n);
  t.deepEqual(await h.source.connections(), [], 'no connection opened by a fragment');
});

rootTest('a tun interface given as an instance\'s interface is refused with a clear error', async (t) => {
  const bpffs = await createBpffs(t);
  const source = new EbpfSource({ bpffs, checkMark: 1, log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  const name = `dzt${Math.random().toString(36).slice(2, 8)}`;
  await sh('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tun']);
  t.teardown(() => sh('ip', ['link', 'del', name]).catch(() => undefined));
  const error = await t.throwsAsync(source.attach(name));
  t.regex(error!.message, new RegExp(`interface ${name} carries no Ethernet header \\(link type none, as wireguard and tun devices are\\)`));
  t.regex(error!.message, /give the instance the Ethernet interface its traffic crosses/);
  t.deepEqual(await listFilters(name), [], 'nothing attached');
});

rootTest('events the tc program could not hand over are counted (doze_stats), read as doze_bpf_events_lost_total', async (t) => {
  const h = await harness(t);
  // Its reader gone, the perf buffer has no ring on any CPU (the kernel drops a closing reader's
  // entries), so a wake event cannot be output: what the counter is for.
  h.source['events'].stop();
  const deadline = Date.now() + 3000;
  let lost = 0n;
  while (lost === 0n && Date.now() < deadline) {
    await h.source.setState(h.ns.instanceIp, 1); // sleeping
    await h.run(ipv6(CLIENT6, h.ns.instanceIp6!, 6, tcpSyn()));
    t.is(await h.source.state(h.ns.instanceIp), 2, 'signalled: the wake was decided');
    lost = await h.source.eventsLost();
    if (lost === 0n) await new Promise((resolve) => setTimeout(resolve, 50)); // the reader is still exiting
  }
  t.is(lost, 1n, 'the event that could not be handed over is counted');
});
