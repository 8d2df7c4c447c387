import type { Connection, InstanceCounters, BpfInstanceState, WakeEvent } from './bpf-records.js';

/** What else names an instance besides its key (ManagedInstance.aliases). */
export interface InstanceAliases {
  /** Its IPv6 addresses: their packets count as its (doze_addr6). */
  ipv6: string[];
  /** Its own interface: every packet into it that no address names counts as its (doze_ifaces). */
  device?: string;
}

/**
 * Where the detector learns about traffic: per-instance counters, tracked
 * connections, and wake events pushed when a packet reaches a sleeper.
 * The eBPF source is the real one; tests of pure logic may use a fake.
 */
export interface TrafficSource {
  start(): Promise<void>;
  /** Attach the programs to a host-side interface (reference counted). */
  attach(device: string): Promise<void>;
  detach(device: string): Promise<void>;
  /**
   * Attach the host-port programs to the node's own interfaces (reference counted, one set for
   * all) for an instance at `address`, which must be one of the node's addresses.
   */
  attachHost(address: string): Promise<void>;
  detachHost(): Promise<void>;
  /** Begin counting an instance by its key (and its aliases); keeps existing counters after a restart. */
  track(address: string, aliases?: InstanceAliases): Promise<void>;
  untrack(address: string): Promise<void>;
  setState(address: string, state: BpfInstanceState): Promise<void>;
  counter(address: string): Promise<InstanceCounters | undefined>;
  countersOf(addresses: string[]): Promise<Map<string, InstanceCounters>>;
  state(address: string): Promise<BpfInstanceState | undefined>;
  states(): Promise<Map<string, BpfInstanceState>>;
  connections(): Promise<Connection[]>;
  onWake(listener: (event: WakeEvent) => void): void;
  onGap(listener: (reason: string) => void): void;
  /** Detach everything; `removePins` also removes the pinned maps (clean exit). */
  close(options: { removePins: boolean }): Promise<void>;
}
