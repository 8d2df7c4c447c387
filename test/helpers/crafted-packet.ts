import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ipv4ToBytes } from '../../agent/sources/ipv4.js';
import { ipv6ToBytes } from '../../agent/sources/ipv6.js';
import { listFilters } from '../../agent/net/tc.js';
import type { Teardown } from './teardown.js';
import { sh } from './sh.js';
import { tempDir } from './temp-dir.js';

/** Ethernet + IPv4 (no options, TTL 64) around `l4`, the IP protocol `protocol`. */
export function ipv4Frame(src: string, dst: string, protocol: number, l4: Buffer): Buffer {
  const eth = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  const ip = Buffer.alloc(20);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(20 + l4.length, 2);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(protocol, 9);
  ipv4ToBytes(src).copy(ip, 12);
  ipv4ToBytes(dst).copy(ip, 16);
  return Buffer.concat([eth, ip, l4]);
}

/** Ethernet + IPv6 (hop limit 64) around `l4`, the next header `next`. */
export function ipv6Frame(src: string, dst: string, next: number, l4: Buffer): Buffer {
  const eth = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd]);
  const ip = Buffer.alloc(40);
  ip.writeUInt32BE(0x60000000, 0);
  ip.writeUInt16BE(l4.length, 4);
  ip.writeUInt8(next, 6);
  ip.writeUInt8(64, 7);
  ipv6ToBytes(src).copy(ip, 8);
  ipv6ToBytes(dst).copy(ip, 24);
  return Buffer.concat([eth, ip, l4]);
}

/** A TCP header (window 65535, no options) from `srcPort` to `dstPort`, then `payload`. */
export function tcpSegment(srcPort: number, dstPort: number, { seq = 0, flags, payload = Buffer.alloc(0) }: { seq?: number; flags: number; payload?: Buffer }): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt16BE(srcPort, 0);
  header.writeUInt16BE(dstPort, 2);
  header.writeUInt32BE(seq, 4);
  header.writeUInt8(5 << 4, 12);
  header.writeUInt8(flags, 13);
  header.writeUInt16BE(65535, 14);
  return Buffer.concat([header, payload]);
}

/** A UDP header from `srcPort` to `dstPort` and `payloadBytes` zero bytes. */
export function udpDatagram(srcPort: number, dstPort: number, payloadBytes = 4): Buffer {
  const datagram = Buffer.alloc(8 + payloadBytes);
  datagram.writeUInt16BE(srcPort, 0);
  datagram.writeUInt16BE(dstPort, 2);
  datagram.writeUInt16BE(datagram.length, 4);
  return datagram;
}

/** A request's data segment's TCP part: ACK|PSH and 10 bytes of payload. */
const requestData = (clientPort: number, instancePort: number) => tcpSegment(clientPort, instancePort, { flags: 0x18, payload: Buffer.from('GET / HTTP') });

/** Ethernet + IPv4 + TCP (ACK|PSH) + 10 bytes of payload, client → instance: a request's data segment. */
export function craftSegment(client: string, instance: string, clientPort: number, instancePort: number): Buffer {
  return ipv4Frame(client, instance, 6, requestData(clientPort, instancePort));
}

/** The same over IPv6. */
export function craftSegment6(client: string, instance: string, clientPort: number, instancePort: number): Buffer {
  return ipv6Frame(client, instance, 6, requestData(clientPort, instancePort));
}

/**
 * Runs the egress program attached to `device` once on `frame`, in the kernel (BPF_PROG_TEST_RUN
 * through `bpftool prog run`): one packet into the instance, with the real maps, at a moment the
 * test chooses.
 */
export async function packetRunner(t: Teardown, device: string, frame: Buffer): Promise<() => Promise<void>> {
  const egress = (await listFilters(device)).find((f) => f.hook === 'egress');
  if (!egress) throw new Error(`no egress program on ${device}`);
  const file = join(await tempDir(t, 'packet'), 'segment.bin');
  await writeFile(file, frame);
  return async () => {
    await sh('bpftool', ['prog', 'run', 'id', String(egress.programId), 'data_in', file, 'repeat', '1']);
  };
}
