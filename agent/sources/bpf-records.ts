import { bytesToIpv4, ipv4ToBytes } from './ipv4.js';
import { bytesToIpv6, ipv6ToBytes, isIPv6 } from './ipv6.js';

/** Mirrors of the structs in agent/bpf/doze.bpf.c (little-endian x86_64/arm64 layout). */

export const BpfInstanceState = { awake: 0, sleeping: 1, signalled: 2, pausing: 3 } as const;
export type BpfInstanceState = (typeof BpfInstanceState)[keyof typeof BpfInstanceState];

/**
 * 8 was rst: a reset connection's entry is deleted now, as is one both sides closed.
 * probed: the instance's keepalive probe awaits the client's reply, which then is not traffic (the tc program's own).
 * clientWindowClosed: the client's last segment advertised a receive window of 0: it reads slower than the
 * instance answers, and the rest of a response waits on it (the instance may be blocked writing it).
 */
export const ConnFlag = { check: 1, finClient: 2, finServer: 4, probed: 16, clientWindowClosed: 32 } as const;

export interface InstanceCounters {
  packets: bigint;
  lastSeenNs: bigint;
  checks: bigint;
  outPackets: bigint;
}

/** struct doze_counters; the last two fields (wake_ns, reply_ns) are the tc program's own first-response stamps. */
export const COUNTERS_SIZE = 48;

export function decodeCounters(value: Buffer): InstanceCounters {
  return {
    packets: value.readBigUInt64LE(0),
    lastSeenNs: value.readBigUInt64LE(8),
    checks: value.readBigUInt64LE(16),
    outPackets: value.readBigUInt64LE(24),
  };
}

export interface Connection {
  /** The client's address, IPv4 or IPv6 text. */
  clientAddr: string;
  /** The instance's map key (TrafficKey), whichever of its addresses the client reached. */
  instanceAddr: string;
  clientPort: number;
  instancePort: number;
  lastNs: bigint;
  clientPayloadNs: bigint;
  serverPayloadNs: bigint;
  flags: number;
}

/**
 * struct doze_conn_key (24 bytes: the client's address as IPv6, an IPv4 one IPv4-mapped
 * (::ffff:a.b.c.d), which is how the key carries the family; the instance's key; the two ports)
 * and struct doze_conn (40 bytes). The agent reads the first 28 bytes of
 * the value; after flags come the tc program's own probe bookkeeping: client_next_seq (28),
 * server_next_seq (32), and the last window each side advertised, client_window (36) and
 * server_window (38), of which the agent needs only what ConnFlag.clientWindowClosed says. A pinned
 * map of another size is refused when the programs load (E_STALE_PINS, agent/sources/tc-programs.ts).
 */
/** Sizes of struct doze_conn_key and struct doze_conn, as the tc program declares them (benches write records). */
export const CONN_KEY_BYTES = 24;
export const CONN_VALUE_BYTES = 40;

/** ::ffff:0:0/96 at the start of `bytes`: an IPv4 address in its last 4 bytes. */
function isIpv4Mapped(bytes: Buffer): boolean {
  return bytes.readBigUInt64BE(0) === 0n && bytes.readUInt32BE(8) === 0xffff;
}

/** The 16 bytes of doze_conn_key's client_addr for an IPv4 or IPv6 address (IPv4 mapped). */
export function encodeClientAddr(address: string): Buffer {
  if (!address.includes(':')) return Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), ipv4ToBytes(address)]);
  return ipv6ToBytes(address);
}

export function decodeConnection(key: Buffer, value: Buffer): Connection {
  return {
    clientAddr: isIpv4Mapped(key) ? bytesToIpv4(key, 12) : bytesToIpv6(key, 0),
    instanceAddr: bytesToIpv4(key, 16),
    clientPort: key.readUInt16BE(20),
    instancePort: key.readUInt16BE(22),
    lastNs: value.readBigUInt64LE(0),
    clientPayloadNs: value.readBigUInt64LE(8),
    serverPayloadNs: value.readBigUInt64LE(16),
    flags: value.readUInt32LE(24),
  };
}

/** The packet that woke a sleeper, as its wake event names it (struct doze_wake_event's src_* fields). */
export interface WakePacket {
  /** The sender's address, IPv4 or IPv6 text. */
  sourceAddr: string;
  /** The sender's TCP or UDP port; undefined for a packet of another protocol. */
  sourcePort?: number;
  protocol: WakeProtocol;
  /** TCP flags of the packet, in header order (undefined when not TCP). */
  tcpFlags?: TcpFlagName[];
  /** A TCP packet that carried data (a request's bytes), not a bare handshake or ACK. */
  hasPayload: boolean;
}

export type WakeProtocol = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | `ip-proto-${number}`;
export type TcpFlagName = 'FIN' | 'SYN' | 'RST' | 'ACK';

/** WAKE_TCP_* in doze.bpf.c: the bits of the TCP header's flags byte. */
const TCP_FLAG_BITS: ReadonlyArray<[TcpFlagName, number]> = [['FIN', 1], ['SYN', 2], ['RST', 4], ['ACK', 16]];

export interface WakeEvent {
  instanceAddr: string;
  ifindex: number;
  tsNs: bigint;
  /**
   * Set on a first-response record: the wake (its signalling packet's time) that this first payload
   * from the instance to a client answers; `tsNs` is then that payload's time.
   */
  answersWakeNs?: bigint;
  /** Set on a wake record from an IP packet: what woke it. */
  packet?: WakePacket;
  /**
   * The reader thawed the instance itself on this event (an armed early thaw, wake-events.ts):
   * when its write returned, on the same clock as `tsNs`. Or why it could not (an errno).
   */
  thaw?: { kind: 'thawed'; atNs: bigint } | { kind: 'failed'; errno: number };
}

/**
 * sizeof(struct doze_wake_event) and its fields' offsets, which the C source asserts with
 * _Static_assert (test/sources/wake-event-record.test.ts reads them there). src_addr is 16 bytes
 * IPv6, an IPv4 source IPv4-mapped; src_port is in network order; 2 bytes of padding end it.
 */
export const WAKE_EVENT_BYTES = 48;
export const WAKE_EVENT_LAYOUT = {
  instance_addr: 0, ifindex: 4, ts_ns: 8, wake_ns: 16, src_addr: 24, src_port: 40, src_family: 42, protocol: 43, tcp_flags: 44, has_payload: 45,
} as const;

/** A record of an older program (24 bytes, no packet) still decodes: its wake names no packet. */
export function decodeWakeEvent(data: Buffer): WakeEvent | undefined {
  if (data.length < 16) return undefined;
  const event: WakeEvent = { instanceAddr: bytesToIpv4(data, 0), ifindex: data.readUInt32LE(4), tsNs: data.readBigUInt64LE(8) };
  const answersWakeNs = data.length >= 24 ? data.readBigUInt64LE(16) : 0n;
  if (answersWakeNs !== 0n) event.answersWakeNs = answersWakeNs;
  else if (data.length >= WAKE_EVENT_BYTES) {
    const packet = decodeWakePacket(data);
    if (packet) event.packet = packet;
  }
  return event;
}

function decodeWakePacket(data: Buffer): WakePacket | undefined {
  const at = WAKE_EVENT_LAYOUT;
  const family = data.readUInt8(at.src_family);
  if (family !== 4 && family !== 6) return undefined;
  const address = data.subarray(at.src_addr, at.src_addr + 16);
  const protocol = protocolName(data.readUInt8(at.protocol));
  const packet: WakePacket = { sourceAddr: family === 4 ? bytesToIpv4(address, 12) : bytesToIpv6(address, 0), protocol, hasPayload: data.readUInt8(at.has_payload) !== 0 };
  if (protocol === 'tcp' || protocol === 'udp') packet.sourcePort = data.readUInt16BE(at.src_port);
  if (protocol === 'tcp') {
    const bits = data.readUInt8(at.tcp_flags);
    packet.tcpFlags = TCP_FLAG_BITS.filter(([, bit]) => bits & bit).map(([name]) => name);
  }
  return packet;
}

function protocolName(n: number): WakeProtocol {
  return n === 6 ? 'tcp' : n === 17 ? 'udp' : n === 1 ? 'icmp' : n === 58 ? 'icmpv6' : `ip-proto-${n}`;
}

/** One line for logs and the status page: "tcp from 10.1.2.3:40000 SYN", "tcp from [fd00::2]:40000 ACK with payload". */
export function describeWakePacket(p: WakePacket): string {
  const host = p.sourceAddr.includes(':') ? `[${p.sourceAddr}]` : p.sourceAddr;
  const from = p.sourcePort === undefined ? host : `${host}:${p.sourcePort}`;
  const flags = p.tcpFlags?.length ? ` ${p.tcpFlags.join(',')}` : '';
  return `${p.protocol} from ${from}${flags}${p.hasPayload ? ' with payload' : ''}`;
}

/**
 * One client in an instance's top-talkers table (struct doze_talker): a client that opened
 * connections to it, or sent it packets outside TCP connection tracking (UDP, ICMP), named even
 * after its connections closed.
 */
export interface Talker {
  /** The client's address, IPv4 or IPv6 text. */
  address: string;
  /** Its last source port (TCP or UDP); undefined for another protocol. */
  port?: number;
  /** Its last packet's protocol. */
  protocol: WakeProtocol;
  /** Connections it opened (client SYNs; a retransmission is not a new one). */
  connections: number;
  /** Packets it sent outside TCP connection tracking. */
  packets: number;
  /** When it took its slot and when it was last seen (CLOCK_MONOTONIC ns, as the counters'). */
  firstNs: bigint;
  lastNs: bigint;
}

/**
 * struct doze_talkers: TALKER_SLOTS slots of struct doze_talker, whose size and offsets the C
 * source asserts with _Static_assert (test/sources/talkers-record.test.ts reads them there). addr
 * is 16 bytes IPv6, an IPv4 client IPv4-mapped (all zero: an empty slot); port is in network order.
 */
export const TALKER_SLOTS = 8;
export const TALKER_BYTES = 48;
export const TALKER_LAYOUT = { addr: 0, first_ns: 16, last_ns: 24, connections: 32, packets: 36, port: 40, protocol: 42 } as const;
export const TALKERS_VALUE_BYTES = TALKER_SLOTS * TALKER_BYTES;

/** An instance's talkers (empty slots left out), most recent first. */
export function decodeTalkers(value: Buffer): Talker[] {
  const talkers: Talker[] = [];
  const at = TALKER_LAYOUT;
  for (let offset = 0; offset + TALKER_BYTES <= value.length; offset += TALKER_BYTES) {
    const slot = value.subarray(offset, offset + TALKER_BYTES);
    const lastNs = slot.readBigUInt64LE(at.last_ns);
    const address = slot.subarray(at.addr, at.addr + 16);
    if (lastNs === 0n || address.every((b) => b === 0)) continue;
    const protocol = protocolName(slot.readUInt8(at.protocol));
    const talker: Talker = {
      address: isIpv4Mapped(address) ? bytesToIpv4(address, 12) : bytesToIpv6(address, 0),
      protocol,
      connections: slot.readUInt32LE(at.connections),
      packets: slot.readUInt32LE(at.packets),
      firstNs: slot.readBigUInt64LE(at.first_ns),
      lastNs,
    };
    if (protocol === 'tcp' || protocol === 'udp') talker.port = slot.readUInt16BE(at.port);
    talkers.push(talker);
  }
  return talkers.sort((a, b) => (a.lastNs === b.lastNs ? 0 : a.lastNs > b.lastNs ? -1 : 1));
}

/** doze_stats indexes (DOZE_STAT_* in doze.bpf.c): program-wide counters. */
export const BpfStat = { eventsLost: 0 } as const;
export const STATS_ENTRIES = 4;

export function encodeState(state: BpfInstanceState): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(state);
  return buffer;
}

export function encodeSettings(checkMark: number): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeUInt32LE(checkMark >>> 0);
  return buffer;
}

/** A doze_check_nets or doze_check_nets6 key (its map named) for an address or CIDR of either family; undefined for anything else. */
export function encodeCheckSource(source: string): { map: 'doze_check_nets' | 'doze_check_nets6'; key: Buffer } | undefined {
  const v4 = encodeCheckNet(source);
  if (v4) return { map: 'doze_check_nets', key: v4 };
  const v6 = encodeCheckNet6(source);
  return v6 ? { map: 'doze_check_nets6', key: v6 } : undefined;
}

/** doze_check_nets6 key (struct check_net6_key: prefix length, then 16 address bytes) for an IPv6 address or CIDR. */
export function encodeCheckNet6(source: string): Buffer | undefined {
  const [address = '', prefixText] = source.trim().split('/');
  if (!isIPv6(address)) return undefined;
  const prefix = prefixText === undefined ? 128 : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= 128)) return undefined;
  const buffer = Buffer.alloc(20);
  buffer.writeUInt32LE(prefix, 0);
  ipv6ToBytes(address).copy(buffer, 4);
  return buffer;
}

/**
 * doze_check_nets key (struct check_net_key: prefix length, then the address in network order)
 * for an IPv4 address or CIDR; undefined for anything else.
 */
export function encodeCheckNet(source: string): Buffer | undefined {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(source.trim());
  if (!match) return undefined;
  const prefix = match[2] === undefined ? 32 : Number(match[2]);
  const octets = match[1]!.split('.').map(Number);
  if (prefix > 32 || octets.some((o) => o > 255)) return undefined;
  const buffer = Buffer.alloc(8);
  buffer.writeUInt32LE(prefix, 0);
  Buffer.from(octets).copy(buffer, 4);
  return buffer;
}
