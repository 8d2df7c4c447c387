import test from 'ava';
import { readFile } from 'node:fs/promises';
import { decodeWakeEvent, describeWakePacket, WAKE_EVENT_BYTES, WAKE_EVENT_LAYOUT } from '../../agent/sources/bpf-records.js';
import { ipv4ToBytes } from '../../agent/sources/ipv4.js';
import { ipv6ToBytes } from '../../agent/sources/ipv6.js';

/*
 * struct doze_wake_event has one declared layout: the C source asserts its size and every offset
 * (clang refuses to build otherwise), and these tests hold the TS mirror to those same numbers,
 * then decode records built at those offsets.
 */

const SOURCE = new URL('../../agent/bpf/doze.bpf.c', import.meta.url);

test('the TS layout of doze_wake_event is the one the C source asserts', async (t) => {
  const c = await readFile(SOURCE, 'utf8');
  const size = /_Static_assert\(sizeof\(struct doze_wake_event\) == (\d+)/.exec(c);
  t.truthy(size, 'doze.bpf.c asserts sizeof(struct doze_wake_event)');
  t.is(Number(size![1]), WAKE_EVENT_BYTES);
  const offsets = Object.fromEntries([...c.matchAll(/_Static_assert\(__builtin_offsetof\(struct doze_wake_event, (\w+)\) == (\d+)/g)].map((m) => [m[1], Number(m[2])]));
  t.deepEqual(offsets, { ...WAKE_EVENT_LAYOUT });
});

interface RecordFields {
  instance: string;
  tsNs: bigint;
  wakeNs?: bigint;
  family?: 4 | 6;
  source?: string;
  port?: number;
  protocol?: number;
  flags?: number;
  payload?: boolean;
}

function record(f: RecordFields): Buffer {
  const at = WAKE_EVENT_LAYOUT;
  const b = Buffer.alloc(WAKE_EVENT_BYTES);
  ipv4ToBytes(f.instance).copy(b, at.instance_addr);
  b.writeUInt32LE(7, at.ifindex);
  b.writeBigUInt64LE(f.tsNs, at.ts_ns);
  b.writeBigUInt64LE(f.wakeNs ?? 0n, at.wake_ns);
  if (f.family === 4) {
    b.writeUInt16BE(0xffff, at.src_addr + 10);
    ipv4ToBytes(f.source!).copy(b, at.src_addr + 12);
  } else if (f.family === 6) {
    ipv6ToBytes(f.source!).copy(b, at.src_addr);
  }
  b.writeUInt16BE(f.port ?? 0, at.src_port);
  b.writeUInt8(f.family ?? 0, at.src_family);
  b.writeUInt8(f.protocol ?? 0, at.protocol);
  b.writeUInt8(f.flags ?? 0, at.tcp_flags);
  b.writeUInt8(f.payload ? 1 : 0, at.has_payload);
  return b;
}

test('a wake record from an IPv4 SYN names its source, port, TCP and SYN, no payload', (t) => {
  const event = decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 99n, family: 4, source: '10.9.8.7', port: 40001, protocol: 6, flags: 2 }));
  t.deepEqual(event, {
    instanceAddr: '10.1.2.3', ifindex: 7, tsNs: 99n,
    packet: { sourceAddr: '10.9.8.7', sourcePort: 40001, protocol: 'tcp', tcpFlags: ['SYN'], hasPayload: false },
  });
  t.is(describeWakePacket(event!.packet!), 'tcp from 10.9.8.7:40001 SYN');
});

test('a wake record from IPv6 data names the IPv6 source, ACK and the payload', (t) => {
  const event = decodeWakeEvent(record({ instance: '0.1.0.5', tsNs: 5n, family: 6, source: 'fd00::2', port: 443, protocol: 6, flags: 16 | 1, payload: true }));
  t.deepEqual(event?.packet, { sourceAddr: 'fd00::2', sourcePort: 443, protocol: 'tcp', tcpFlags: ['FIN', 'ACK'], hasPayload: true });
  t.is(describeWakePacket(event!.packet!), 'tcp from [fd00::2]:443 FIN,ACK with payload');
});

test('a wake by UDP names its source port but no flags; by ICMP, the protocol and source alone', (t) => {
  t.deepEqual(decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 1n, family: 4, source: '10.9.8.7', port: 5353, protocol: 17 }))?.packet, { sourceAddr: '10.9.8.7', sourcePort: 5353, protocol: 'udp', hasPayload: false });
  t.deepEqual(decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 1n, family: 6, source: 'fd00::9', protocol: 58 }))?.packet, { sourceAddr: 'fd00::9', protocol: 'icmpv6', hasPayload: false });
  t.is(decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 1n, family: 4, source: '10.9.8.7', protocol: 47 }))?.packet?.protocol, 'ip-proto-47');
});

test('a first-response record and a non-IP wake carry no packet; a 24-byte record of an older program still decodes', (t) => {
  t.deepEqual(decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 20n, wakeNs: 10n })), { instanceAddr: '10.1.2.3', ifindex: 7, tsNs: 20n, answersWakeNs: 10n });
  t.deepEqual(decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 20n })), { instanceAddr: '10.1.2.3', ifindex: 7, tsNs: 20n });
  t.deepEqual(decodeWakeEvent(record({ instance: '10.1.2.3', tsNs: 20n, family: 4, source: '10.9.8.7', protocol: 6 }).subarray(0, 24)), { instanceAddr: '10.1.2.3', ifindex: 7, tsNs: 20n });
  t.is(decodeWakeEvent(Buffer.alloc(8)), undefined);
});
