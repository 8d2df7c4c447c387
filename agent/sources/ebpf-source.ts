import { access, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DozeError } from '../shared/errors.js';
import { addressedLinks, isLocalAddress, listLinks } from '../net/ip.js';
import type { Logger } from '../shared/log.js';
import { defaultHelperPath, MapClient } from './map-client.js';
import {
  BpfInstanceState, BpfStat, COUNTERS_SIZE, decodeConnection, decodeCounters, decodeTalkers, encodeCheckSource, encodeSettings,
  TALKERS_VALUE_BYTES, type Connection, type InstanceCounters, type Talker, type WakeEvent,
} from './bpf-records.js';
import { bytesToIpv4, hostOf, ipv4ToBytes } from './ipv4.js';
import { ipv6ToBytes } from './ipv6.js';
import * as tc from '../net/tc.js';
import type { EarlyThawControl, InstanceAliases, TrafficSource } from './traffic-source.js';
import { WakeEventStream } from './wake-events.js';
import { freshRead } from './fresh-read.js';
import { StateSlots } from './state-slots.js';
import { TcPrograms } from './tc-programs.js';

export const MAP_NAMES = [
  'doze_slots', 'doze_state', 'doze_counters', 'doze_conns', 'doze_wake_events', 'doze_settings', 'doze_check_nets',
  'doze_check_nets6', 'doze_addr6', 'doze_ifaces', 'doze_stats', 'doze_talkers',
] as const;

/** The compiled object sits in agent/bpf/ both in the source tree and in dist/ (the Makefile copies it). */
export function defaultObjectPath(): string {
  return fileURLToPath(new URL('../bpf/doze.bpf.o', import.meta.url));
}

export interface EbpfSourceOptions {
  bpffs: string;
  checkMark: number;
  /** Sources (addresses, CIDRs, either family) of health checks: host-port programs see no mark on ingress, so they match these. */
  checkSources?: string[];
  /** Node interfaces host-port instances are counted on; default: every interface with an address, watched for new ones (hostInterfaces()). */
  hostInterfaces?: string[];
  /** How often the default set is looked at again for interfaces that came or went (docker0 after the agent, a hot-plugged NIC). */
  hostRescanMs?: number;
  objectPath?: string;
  log: Logger;
}

export class EbpfSource implements TrafficSource {
  private readonly maps = new MapClient();
  /** The tc programs, loaded once in the maps' helper and attached by fd (tc-programs.ts says why). */
  private readonly programs = new TcPrograms(this.maps);
  private loading: Promise<void> | undefined;
  private readonly events: WakeEventStream;
  private readonly devices = new Map<string, number>();
  /** Host-port instances using the node interfaces' programs, and the interfaces they are on. */
  private hostUsers = 0;
  private hostDevices: string[] = [];
  private hostRescan: NodeJS.Timeout | undefined;
  private readonly objectPath: string;
  private readonly globals: string;
  /** What track() wrote besides the key (IPv6 addresses, interface), so untrack() removes it. */
  private readonly aliases = new Map<string, InstanceAliases>();
  /** The instance keys on each own interface: doze_ifaces names the interface's instance only while it has one. */
  private readonly keysOnDevice = new Map<string, Set<string>>();
  /** Each tracked instance's state, in place (docs/state-handoff.md). */
  private readonly slots: StateSlots;

  constructor(private readonly options: EbpfSourceOptions) {
    this.objectPath = options.objectPath ?? defaultObjectPath();
    this.globals = join(options.bpffs, 'tc', 'globals');
    this.events = new WakeEventStream(this.pin('doze_wake_events'));
    this.slots = new StateSlots(this.maps, { slots: this.pin('doze_slots'), state: this.pin('doze_state') });
  }

  pin(name: (typeof MAP_NAMES)[number]): string {
    return join(this.globals, name);
  }

  async start(): Promise<void> {
    await this.loaded();
  }

  /**
   * Loads the programs once (the first of start() and attach()): that makes the pinned maps, or
   * adopts the ones a previous agent (this version or one that attached with tc) left, so they
   * exist before any device is attached and the events and settings can be set up at once.
   */
  private loaded(): Promise<void> {
    this.loading ??= this.load().catch((error: unknown) => {
      this.loading = undefined; // a later attach tries again (after "make build", say)
      throw error;
    });
    return this.loading;
  }

  private async load(): Promise<void> {
    for (const [what, path] of [['eBPF object', this.objectPath], ['map helper', defaultHelperPath()]] as const) {
      try {
        await access(path);
      } catch {
        throw new DozeError('E_NOT_BUILT', `${what} ${path} is missing: run "make build" (needs clang and libbpf-dev)`);
      }
    }
    await mkdir(this.globals, { recursive: true });
    await this.programs.load(this.objectPath, this.globals);
    await this.afterPinsExist();
  }

  async attach(device: string): Promise<void> {
    const users = this.devices.get(device) ?? 0;
    if (users === 0) {
      await tc.requireEthernet(device);
      await this.loaded();
      await this.programs.attach(device, tc.OWN_INTERFACE);
      // A rescan may have given it the host-port programs first (a VM's tap, addressed before its
      // instance was added): the instance's replace them, and detachHost must leave them alone.
      this.hostDevices = this.hostDevices.filter((host) => host !== device);
      this.options.log.info({ device }, 'eBPF programs attached');
    }
    this.devices.set(device, users + 1);
  }

  async detach(device: string): Promise<void> {
    const users = this.devices.get(device) ?? 0;
    if (users <= 1) {
      this.devices.delete(device);
      await this.programs.detach(device);
      this.options.log.info({ device }, 'eBPF programs detached');
    } else {
      this.devices.set(device, users - 1);
    }
  }

  async attachHost(address: string): Promise<void> {
    const ip = hostOf(address);
    if (ip !== '0.0.0.0' && !(await isLocalAddress(ip))) {
      // Most likely a bridge or tap instance whose interface was left out.
      throw new ConfigError(
        `${address} has no interface, so it would be counted as a host port, but ${ip} is not an address of this node: ` +
          'give the instance its own interface (the host side of its veth or tap), or a node address for a host-port instance',
      );
    }
    if (this.hostUsers === 0) {
      await this.loaded();
      await this.attachHostDevices(this.options.hostInterfaces ?? (await this.hostCandidates()));
      this.options.log.info({ devices: this.hostDevices }, 'host-port programs attached');
      if (this.options.hostInterfaces === undefined) {
        this.hostRescan = setInterval(() => void this.rescanHostDevices(), this.options.hostRescanMs ?? HOST_RESCAN_MS);
        this.hostRescan.unref();
      }
    }
    this.hostUsers += 1;
  }

  /** The interfaces host-port traffic is counted on now (the status page shows them). */
  watchedHostInterfaces(): string[] {
    return [...this.hostDevices];
  }

  private async attachHostDevices(candidates: string[]): Promise<void> {
    for (const device of candidates) {
      if (this.hostDevices.includes(device)) continue;
      // A default route through a wireguard or tun device: the programs parse Ethernet frames, so
      // they cannot count there. Said in the log, not hidden; the other interfaces still count.
      const refusal = await tc.requireEthernet(device).then(() => undefined, (error: Error) => error.message);
      if (refusal) {
        this.options.log.warn({ device, reason: refusal }, 'host-port traffic on this interface is not counted');
        continue;
      }
      await this.programs.attach(device, device === 'lo' ? tc.HOST_LOOPBACK : tc.HOST_INTERFACE);
      this.hostDevices.push(device);
    }
  }

  /** Every interface with an address, but an instance's own (its programs sit on the same hook): this agent's or another's. */
  private async hostCandidates(): Promise<string[]> {
    const found: string[] = [];
    for (const device of await hostInterfaces()) {
      if (this.devices.has(device)) continue;
      const filters = await tc.listFilters(device).catch(() => []);
      if (filters.some((f) => f.pref === tc.DOZE_TC_PREF && (f.programName === 'doze_egress' || f.programName === 'doze_ingress'))) continue;
      found.push(device);
    }
    return found;
  }

  /** Interfaces that appeared since (docker0 after the agent, a new bridge or NIC) get the programs; gone ones are forgotten. */
  private async rescanHostDevices(): Promise<void> {
    if (this.hostUsers === 0) return;
    try {
      const candidates = await this.hostCandidates();
      const present = new Set((await addressedLinks()).map((link) => link.name));
      this.hostDevices = this.hostDevices.filter((device) => present.has(device));
      const before = this.hostDevices.length;
      await this.attachHostDevices(candidates);
      if (this.hostDevices.length > before) this.options.log.info({ devices: this.hostDevices }, 'host-port programs attached to new interfaces');
    } catch (error) {
      this.options.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'looking for new host interfaces failed; trying again later');
    }
  }

  async detachHost(): Promise<void> {
    if (this.hostUsers === 0) return;
    this.hostUsers -= 1;
    if (this.hostUsers > 0) return;
    clearInterval(this.hostRescan);
    this.hostRescan = undefined;
    for (const device of this.hostDevices) await this.programs.detach(device);
    this.options.log.info({ devices: this.hostDevices }, 'host-port programs detached');
    this.hostDevices = [];
  }

  async track(address: string, aliases: InstanceAliases = { ipv6: [] }): Promise<void> {
    const key = ipv4ToBytes(address);
    // Keep what a previous agent left: counters and a signalled state are evidence.
    if (!(await this.maps.lookup(this.pin('doze_counters'), key))) await this.maps.update(this.pin('doze_counters'), key, Buffer.alloc(COUNTERS_SIZE));
    // Its top-talkers table: the program writes only into an entry that is there.
    if (!(await this.maps.lookup(this.pin('doze_talkers'), key))) await this.maps.update(this.pin('doze_talkers'), key, Buffer.alloc(TALKERS_VALUE_BYTES));
    await this.slots.claim(address);
    this.aliases.set(address, aliases);
    for (const ip of aliases.ipv6) await this.maps.update(this.pin('doze_addr6'), ipv6ToBytes(ip), key);
    if (aliases.device !== undefined) {
      const keys = this.keysOnDevice.get(aliases.device) ?? new Set<string>();
      keys.add(address);
      this.keysOnDevice.set(aliases.device, keys);
      await this.nameDeviceInstance(aliases.device);
    }
  }

  async untrack(address: string): Promise<void> {
    const key = ipv4ToBytes(address);
    const aliases = this.aliases.get(address);
    this.aliases.delete(address);
    for (const ip of aliases?.ipv6 ?? []) await this.maps.delete(this.pin('doze_addr6'), ipv6ToBytes(ip));
    if (aliases?.device !== undefined) {
      const keys = this.keysOnDevice.get(aliases.device);
      keys?.delete(address);
      if (keys?.size === 0) this.keysOnDevice.delete(aliases.device);
      await this.nameDeviceInstance(aliases.device);
    }
    await this.slots.release(address);
    await this.maps.delete(this.pin('doze_counters'), key);
    await this.maps.delete(this.pin('doze_talkers'), key);
  }

  /**
   * doze_ifaces: the interface's one instance, whose every packet (another ethertype, an address not
   * declared) is counted as its; none when it has several or none (the interface may be gone).
   */
  private async nameDeviceInstance(device: string): Promise<void> {
    const index = await ifindexOf(device);
    if (index === undefined) return;
    const keys = [...(this.keysOnDevice.get(device) ?? [])];
    const entry = Buffer.alloc(4);
    entry.writeUInt32LE(index);
    if (keys.length === 1) await this.maps.update(this.pin('doze_ifaces'), entry, ipv4ToBytes(keys[0]!));
    else await this.maps.delete(this.pin('doze_ifaces'), entry);
  }

  /** How many wake and first-response events the tc program could not hand over (its perf buffer was full). */
  async eventsLost(): Promise<bigint> {
    const index = Buffer.alloc(4);
    index.writeUInt32LE(BpfStat.eventsLost);
    const value = await this.maps.lookup(this.pin('doze_stats'), index).catch(() => undefined);
    return value ? value.readBigUInt64LE(0) : 0n;
  }

  setState(address: string, state: BpfInstanceState): Promise<void> {
    return this.slots.set(address, state);
  }

  swapState(address: string, expected: BpfInstanceState, next: BpfInstanceState): Promise<BpfInstanceState | undefined> {
    return this.slots.swap(address, expected, next);
  }

  /** Counters of just these instances: the cost follows the instances asked about, not the map. */
  async countersOf(addresses: string[]): Promise<Map<string, InstanceCounters>> {
    const entries = await this.maps.lookupMany(this.pin('doze_counters'), addresses.map(ipv4ToBytes));
    return new Map(entries.map((e) => [bytesToIpv4(e.key), decodeCounters(e.value)]));
  }

  /** Top talkers of just these instances, in one round trip (lookupn). */
  async talkersOf(addresses: string[]): Promise<Map<string, Talker[]>> {
    const entries = await this.maps.lookupMany(this.pin('doze_talkers'), addresses.map(ipv4ToBytes));
    return new Map(entries.map((e) => [bytesToIpv4(e.key), decodeTalkers(e.value)]));
  }

  async counter(address: string): Promise<InstanceCounters | undefined> {
    const value = await this.maps.lookup(this.pin('doze_counters'), ipv4ToBytes(address));
    return value ? decodeCounters(value) : undefined;
  }

  state(address: string): Promise<BpfInstanceState | undefined> {
    return this.slots.get(address);
  }

  states(): Promise<Map<string, BpfInstanceState>> {
    return this.slots.all();
  }

  /** The whole connection map; concurrent callers share one dump that began after they asked (fresh-read.ts). */
  readonly connections: () => Promise<Connection[]> = freshRead(async () => {
    const entries = await this.maps.dump(this.pin('doze_conns'));
    return entries.map((e) => decodeConnection(e.key, e.value));
  });

  onWake(listener: (event: WakeEvent) => void): void {
    this.events.on('wake', listener);
  }

  get earlyThaw(): EarlyThawControl {
    return this.events;
  }

  onGap(listener: (reason: string) => void): void {
    this.events.on('gap', listener);
  }

  /** `detach: false` (a hand-over): the programs stay attached, counting and signalling for the next agent. */
  async close({ removePins, detach = true }: { removePins: boolean; detach?: boolean }): Promise<void> {
    this.events.stop();
    clearInterval(this.hostRescan);
    this.hostRescan = undefined;
    const devices = new Set(detach ? [...this.devices.keys(), ...this.hostDevices] : []);
    // Leaving the node (clean exit): host-port programs a crashed agent left on the node's
    // interfaces go too, not only the ones this agent attached (the node's lo outlives agents).
    if (removePins) {
      const candidates = this.options.hostInterfaces ?? (await hostInterfaces().catch(() => []));
      for (const device of candidates) {
        const leftover = (await tc.listFilters(device).catch(() => [])).some((f) => f.pref === tc.DOZE_TC_PREF && f.programName?.startsWith('doze_host'));
        if (leftover) devices.add(device);
      }
    }
    for (const device of devices) {
      try {
        await this.programs.detach(device);
      } catch (error) {
        this.options.log.warn({ device, err: error }, 'detach failed');
      }
    }
    this.devices.clear();
    this.hostDevices = [];
    this.hostUsers = 0;
    this.maps.close();
    if (removePins) {
      for (const name of MAP_NAMES) await rm(this.pin(name), { force: true });
    }
  }

  private async afterPinsExist(): Promise<void> {
    await this.maps.update(this.pin('doze_settings'), Buffer.alloc(4), encodeSettings(this.options.checkMark));
    for (const source of this.options.checkSources ?? []) {
      const entry = encodeCheckSource(source);
      if (entry) await this.maps.update(this.pin(entry.map), entry.key, Buffer.from([1]));
    }
    this.events.start();
    await this.events.ready();
  }
}

/** An interface's index in the agent's network namespace, or undefined when it is gone. */
async function ifindexOf(device: string): Promise<number | undefined> {
  return (await listLinks({ device }).catch(() => []))[0]?.ifindex;
}

/** Looked at again this often for interfaces that came or went (a rescan costs one `ip addr` and a `tc filter show` per interface). */
const HOST_RESCAN_MS = 30_000;

/**
 * Where a host port's clients come in: lo and every up interface that holds an address of the
 * node (NICs, the nomad bridge, docker0), not only those a default route leaves by: a request
 * from a container on the nomad bridge, or on a second NIC, arrives there.
 */
export async function hostInterfaces(): Promise<string[]> {
  const links = await addressedLinks();
  return ['lo', ...links.map((link) => link.name).filter((device) => device !== 'lo')];
}
