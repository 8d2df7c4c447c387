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

/** The host of "10.0.0.2:8080" or "[fd00::2]:8080" (without brackets). */
export function hostOf(address: string): string {
  const bracketed = /^\[([^\]]*)\]:\d+$/.exec(address);
  if (bracketed) return bracketed[1]!;
  return address.split(':')[0]!;
}

export function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

/** "host:port" with an IPv6 host in brackets, as URLs and iptables' --to-destination write it. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The map key of a host-port instance (no interface of its own): its port written as an
 * address in 0.0.0.0/8, which no instance has; doze.bpf.c's port_key computes the same.
 */
export function portKey(port: number): string {
  return `0.0.${port >> 8}.${port & 0xff}`;
}
