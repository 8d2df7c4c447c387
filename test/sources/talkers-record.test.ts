import test from 'ava';
import { readFile } from 'node:fs/promises';
import { decodeTalkers, encodeClientAddr, TALKER_BYTES, TALKER_LAYOUT, TALKER_SLOTS, TALKERS_VALUE_BYTES } from '../../agent/sources/bpf-records.js';

/*
 * struct doze_talkers has one declared layout: the C source asserts its slot count, the slot's size
 * and every offset (clang refuses to build otherwise), and these tests hold the TS mirror to those
 * same numbers, then decode tables built at those offsets.
 */

const SOURCE = new URL('../../agent/bpf/doze.bpf.c', import.meta.url);

test('the TS layout of doze_talker is the one the C source asserts', async (t) => {
  const c = await readFile(SOURCE, 'utf8');
  const slots = /_Static_assert\(TALKER_SLOTS == (\d+)/.exec(c);
  t.truthy(slots, 'doze.bpf.c asserts TALKER_SLOTS');
  t.is(Number(slots![1]), TALKER_SLOTS);
  t.regex(c, new RegExp(`#define TALKER_SLOTS ${TALKER_SLOTS}\\n`));
  const size = /_Static_assert\(sizeof\(struct doze_talker\) == (\d+)/.exec(c);
  t.truthy(size, 'doze.bpf.c asserts sizeof(struct doze_talker)');
  t.is(Number(size![1]), TALKER_BYTES);
  const offsets = Object.fromEntries([...c.matchAll(/_Static_assert\(__builtin_offsetof\(struct doze_talker, (\w+)\) == (\d+)/g)].map((m) => [m[1], Number(m[2])]));
  t.deepEqual(offsets, { ...TALKER_LAYOUT });
  t.is(TALKERS_VALUE_BYTES, TALKER_SLOTS * TALKER_BYTES);
});

interface SlotFields {
  address: string;
  firstNs: bigint;
  lastNs: bigint;
  connections?: number;
  packets?: number;
  port?: number;
  protocol: number;
}

function table(slots: Array<SlotFields | undefined>): Buffer {
  const value = Buffer.alloc(TALKERS_VALUE_BYTES);
  const at = TALKER_LAYOUT;
  slots.forEach((s, n) => {
    if (!s) return;
    const slot = value.subarray(n * TALKER_BYTES, (n + 1) * TALKER_BYTES);
    encodeClientAddr(s.address).copy(slot, at.addr);
    slot.writeBigUInt64LE(s.firstNs, at.first_ns);
    slot.writeBigUInt64LE(s.lastNs, at.last_ns);
    slot.writeUInt32LE(s.connections ?? 0, at.connections);
    slot.writeUInt32LE(s.packets ?? 0, at.packets);
    slot.writeUInt16BE(s.port ?? 0, at.port);
    slot.writeUInt8(s.protocol, at.protocol);
  });
  return value;
}

test('a table decodes to its filled slots, most recent first: IPv4 (mapped) and IPv6 clients, TCP and UDP ports, ICMP without one', (t) => {
  const value = table([
    { address: '10.9.8.7', firstNs: 1_000n, lastNs: 5_000n, connections: 25, port: 41234, protocol: 6 },
    undefined,
    { address: 'fd00::53', firstNs: 2_000n, lastNs: 9_000n, packets: 7, port: 5353, protocol: 17 },
    { address: '10.1.1.1', firstNs: 3_000n, lastNs: 4_000n, packets: 2, port: 99, protocol: 1 },
  ]);
  t.deepEqual(decodeTalkers(value), [
    { address: 'fd00::53', port: 5353, protocol: 'udp', connections: 0, packets: 7, firstNs: 2_000n, lastNs: 9_000n },
    { address: '10.9.8.7', port: 41234, protocol: 'tcp', connections: 25, packets: 0, firstNs: 1_000n, lastNs: 5_000n },
    { address: '10.1.1.1', protocol: 'icmp', connections: 0, packets: 2, firstNs: 3_000n, lastNs: 4_000n },
  ]);
});

test('an empty table (as the agent makes it when it tracks an instance) has no talkers', (t) => {
  t.deepEqual(decodeTalkers(Buffer.alloc(TALKERS_VALUE_BYTES)), []);
  t.deepEqual(decodeTalkers(Buffer.alloc(0)), []);
});
