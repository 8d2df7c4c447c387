import { isIPv4, isIPv6 } from 'node:net';
import { createHash } from 'node:crypto';

/** IPv6 text <-> the 16 network-order bytes doze_addr6 and doze_conns use. */
export function ipv6ToBytes(address: string): Buffer {
  if (!isIPv6(address)) throw new Error(`not an IPv6 address: ${JSON.stringify(address)}`);
  // The URL parser writes any IPv6 form (an embedded IPv4 tail included) in hex groups, `::` at most once.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const [head = '', tail] = canonical.split('::');
  const groups = (text: string) => (text === '' ? [] : text.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const all = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  all.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

/** The canonical (RFC 5952) text of 16 network-order bytes. */
export function bytesToIpv6(bytes: Buffer, offset = 0): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(bytes.readUInt16BE(offset + i * 2).toString(16));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

/**
 * The map key of an instance with no IPv4 address, from its IPv6 address: an address in
 * 0.1.0.0-0.255.255.255, which no instance has (0.0.0.0/16 holds host-port keys). doze.bpf.c finds
 * it through doze_addr6. Derived, not allocated, so a restarted agent finds the counters and state
 * an earlier one left; two addresses meeting on one key are refused as a clash when admitted.
 */
export function ipv6Key(address: string): string {
  const digest = createHash('sha256').update(ipv6ToBytes(address)).digest();
  return `0.${1 + (digest[0]! % 255)}.${digest[1]}.${digest[2]}`;
}

export { isIPv4, isIPv6 };
