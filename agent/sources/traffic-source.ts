import type { Connection, InstanceCounters, BpfInstanceState, Talker, WakeEvent } from './bpf-records.js';
import type { EarlyThaw } from './wake-events.js';

/** What else names an instance besides its key (its aliases, detector/managed-instance.ts aliasesOf). */
export interface InstanceAliases {
  /** Its IPv6 addresses: their packets count as its (doze_addr6). */
  ipv6: string[];
  /** Its own interface: frames of another ethertype into it count as its (doze_ifaces). */
  device?: string;
}

/**
 * An instance's key in the eBPF maps, in the maps' text form: the IPv4 address behind its own
 * interface, or for a host-port instance its port folded into one (`0.0.hi.lo`, ipv4.ts portKey).
 * Branded so that an address is never passed where a key is meant: trafficKey() in
 * detector/managed-instance.ts makes one. An instance with IPv6 addresses only gets a key derived
 * from one (ipv6.ts ipv6Key); its IPv6 addresses reach its key through InstanceAliases.
 */
export type TrafficKey = string & { readonly __trafficKey: true };

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
  /** Begin counting an instance's key (and its aliases); keeps existing counters after a restart. */
  track(key: TrafficKey, aliases?: InstanceAliases): Promise<void>;
  untrack(key: TrafficKey): Promise<void>;
  /** Writes the state outright: only to say the instance is awake (docs/state-handoff.md). */
  setState(key: TrafficKey, state: BpfInstanceState): Promise<void>;
  /**
   * Compare-and-swap in place, atomic with the tc program's own: `next` goes in only if `expected`
   * is there. Returns the state found (the swap happened iff it is `expected`); undefined when the
   * instance is not tracked.
   */
  swapState(key: TrafficKey, expected: BpfInstanceState, next: BpfInstanceState): Promise<BpfInstanceState | undefined>;
  counter(key: TrafficKey): Promise<InstanceCounters | undefined>;
  /** Counters by key (the maps' text form, so a kernel-side key looks up as well). */
  countersOf(keys: TrafficKey[]): Promise<Map<string, InstanceCounters>>;
  state(key: TrafficKey): Promise<BpfInstanceState | undefined>;
  states(): Promise<Map<string, BpfInstanceState>>;
  connections(): Promise<Connection[]>;
  /**
   * Each instance's top talkers (doze_talkers: the last few clients that opened connections to it
   * or sent it packets outside TCP tracking, health checks never among them), most recent first;
   * by key in the maps' text form. An instance with no table is left out.
   */
  talkersOf(keys: TrafficKey[]): Promise<Map<string, Talker[]>>;
  onWake(listener: (event: WakeEvent) => void): void;
  onGap(listener: (reason: string) => void): void;
  /**
   * Thaw at the event: the wake-event reader thaws an armed sleeper itself when its wake event
   * arrives, and the event says so (WakeEvent.thaw). Sources without a reader omit it.
   */
  earlyThaw?: EarlyThawControl;
  /** Detach everything; `removePins` also removes the pinned maps (clean exit). */
  close(options: { removePins: boolean }): Promise<void>;
}

/** Arming early thaws in the wake-event reader (sources/wake-events.ts). */
export interface EarlyThawControl {
  /** Whether it was armed (a path the reader's line cannot carry is not). */
  arm(key: TrafficKey, thaw: EarlyThaw): boolean;
  disarm(key: TrafficKey): void;
  /** Early thaws allowed before the next call (-1: no limit): the node budget's room. */
  setRoom(room: number): void;
}
