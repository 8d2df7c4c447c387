import { DozeError } from '../shared/errors.js';
/** IPv4 text <-> the 4 network-order bytes the BPF maps use as keys. */
export function ipv4ToBytes(address: string): Buffer {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new DozeError('E_ADDRESS', `not an IPv4 address: ${JSON.stringify(address)}`);
  }
  return Buffer.from(parts);
}

export function bytesToIpv4(bytes: Buffer, offset = 0): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

export function hostOf(address: string): string {
  return address.split(':')[0]!;
}

export function portOf(address: string): number {
  return Number(address.split(':')[1]);
}

/**
 * The map key of a host-port instance (no interface of its own): its port written as an
 * address in 0.0.0.0/8, which no instance has; doze.bpf.c's port_key computes the same.
 */
export function portKey(port: number): string {
  return `0.0.${port >> 8}.${port & 0xff}`;
}
