import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ipv4ToBytes } from '../../agent/sources/ipv4.js';
import { listFilters } from '../../agent/net/tc.js';
import type { Teardown } from './teardown.js';
import { sh } from './sh.js';
import { tempDir } from './temp-dir.js';

/** Ethernet + IPv4 + TCP (ACK|PSH) + 10 bytes of payload, client → instance: a request's data segment. */
export function craftSegment(client: string, instance: string, clientPort: number, instancePort: number): Buffer {
  const payload = Buffer.from('GET / HTTP');
  const eth = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  const ip = Buffer.alloc(20);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(20 + 20 + payload.length, 2);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(6, 9);
  ipv4ToBytes(client).copy(ip, 12);
  ipv4ToBytes(instance).copy(ip, 16);
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(clientPort, 0);
  tcp.writeUInt16BE(instancePort, 2);
  tcp.writeUInt8(5 << 4, 12);
  tcp.writeUInt8(0x18, 13);
  tcp.writeUInt16BE(65535, 14);
  return Buffer.concat([eth, ip, tcp, payload]);
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
