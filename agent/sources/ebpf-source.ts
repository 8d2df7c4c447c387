import { access, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DozeError } from '../shared/errors.js';
import { defaultRouteDevices, isLocalAddress } from '../net/ip.js';
import type { Logger } from '../shared/log.js';
import { defaultHelperPath, MapClient } from './map-client.js';
import {
  BpfInstanceState, COUNTERS_SIZE, decodeConnection, decodeCounters, encodeCheckNet, encodeSettings,
  type Connection, type InstanceCounters, type WakeEvent,
} from './bpf-records.js';
import { bytesToIpv4, hostOf, ipv4ToBytes } from './ipv4.js';
import * as tc from '../net/tc.js';
import type { TrafficSource } from './traffic-source.js';
import { WakeEventStream } from './wake-events.js';
import { freshRead } from './fresh-read.js';
import { StateSlots } from './state-slots.js';

export const MAP_NAMES = ['doze_slots', 'doze_state', 'doze_counters', 'doze_conns', 'doze_wake_events', 'doze_settings', 'doze_check_nets'] as const;

/** The compiled object sits in agent/bpf/ both in the source tree and in dist/ (the Makefile copies it). */
export function defaultObjectPath(): string {
  return fileURLToPath(new URL('../bpf/doze.bpf.o', import.meta.url));
}

export interface EbpfSourceOptions {
  bpffs: string;
  checkMark: number;
  /** IPv4 sources (CIDR) of health checks: host-port programs see no mark on ingress, so they match these. */
  checkSources?: string[];
  /** Node interfaces host-port instances are counted on; default: lo and the default routes' (hostInterfaces()). */
  hostInterfaces?: string[];
  objectPath?: string;
  log: Logger;
}

export class EbpfSource implements TrafficSource {
  private readonly maps = new MapClient();
  private readonly events: WakeEventStream;
  private readonly devices = new Map<string, number>();
  /** Host-port instances using the node interfaces' programs, and the interfaces they are on. */
  private hostUsers = 0;
  private hostDevices: string[] = [];
  private readonly objectPath: string;
  private readonly globals: string;
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
    for (const [what, path] of [['eBPF object', this.objectPath], ['map helper', defaultHelperPath()]] as const) {
      try {
        await access(path);
      } catch {
        throw new DozeError('E_NOT_BUILT', `${what} ${path} is missing: run "make build" (needs clang and libbpf-dev)`);
      }
    }
    if (!(await this.mapsPinned())) {
      // Loading the programs once (on no device) is the only way tc creates the pins;
      // the first attach does it. Until then there is nothing to read.
      return;
    }
    await this.afterPinsExist();
  }

  async attach(device: string): Promise<void> {
    const users = this.devices.get(device) ?? 0;
    if (users === 0) {
      const hadPins = await this.mapsPinned();
      await tc.attach(device, this.objectPath, this.options.bpffs);
      if (!hadPins) await this.afterPinsExist();
      this.options.log.info({ device }, 'eBPF programs attached');
    }
    this.devices.set(device, users + 1);
  }

  async detach(device: string): Promise<void> {
    const users = this.devices.get(device) ?? 0;
    if (users <= 1) {
      this.devices.delete(device);
      await tc.detach(device);
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
      const hadPins = await this.mapsPinned();
      const devices = this.options.hostInterfaces ?? (await hostInterfaces());
      for (const device of devices) await tc.attach(device, this.objectPath, this.options.bpffs, device === 'lo' ? tc.HOST_LOOPBACK : tc.HOST_INTERFACE);
      this.hostDevices = devices;
      if (!hadPins) await this.afterPinsExist();
      this.options.log.info({ devices }, 'host-port programs attached');
    }
    this.hostUsers += 1;
  }

  async detachHost(): Promise<void> {
    if (this.hostUsers === 0) return;
    this.hostUsers -= 1;
    if (this.hostUsers > 0) return;
    for (const device of this.hostDevices) await tc.detach(device);
    this.options.log.info({ devices: this.hostDevices }, 'host-port programs detached');
    this.hostDevices = [];
  }

  async track(address: string): Promise<void> {
    const key = ipv4ToBytes(address);
    // Keep what a previous agent left: counters and a signalled state are evidence.
    if (!(await this.maps.lookup(this.pin('doze_counters'), key))) await this.maps.update(this.pin('doze_counters'), key, Buffer.alloc(COUNTERS_SIZE));
    await this.slots.claim(address);
  }

  async untrack(address: string): Promise<void> {
    const key = ipv4ToBytes(address);
    await this.slots.release(address);
    await this.maps.delete(this.pin('doze_counters'), key);
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

  onGap(listener: (reason: string) => void): void {
    this.events.on('gap', listener);
  }

  /** `detach: false` (a hand-over): the programs stay attached, counting and signalling for the next agent. */
  async close({ removePins, detach = true }: { removePins: boolean; detach?: boolean }): Promise<void> {
    this.events.stop();
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
        await tc.detach(device);
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

  private async mapsPinned(): Promise<boolean> {
    try {
      await access(this.pin('doze_wake_events'));
      return true;
    } catch {
      return false;
    }
  }

  private async afterPinsExist(): Promise<void> {
    await this.maps.update(this.pin('doze_settings'), Buffer.alloc(4), encodeSettings(this.options.checkMark));
    for (const source of this.options.checkSources ?? []) {
      const key = encodeCheckNet(source);
      if (key) await this.maps.update(this.pin('doze_check_nets'), key, Buffer.from([1]));
    }
    this.events.start();
    await this.events.ready();
  }
}

/** lo and every interface a default route leaves by: where a host port's clients come in. */
export async function hostInterfaces(): Promise<string[]> {
  return ['lo', ...(await defaultRouteDevices()).filter((device) => device !== 'lo')];
}
