import type { InstanceConfig, WakeMode } from '../config/schema.js';
import { hostOf, portKey, portOf } from '../sources/ipv4.js';
import { ipv6Key, isIPv4, isIPv6 } from '../sources/ipv6.js';
import type { InstanceAliases } from '../sources/traffic-source.js';
import type { Runtime } from '../runtimes/runtime.js';
import type { UsageSample } from './busy-guard.js';
import type { InstanceState } from './states.js';

/** One instance under management: its config, runtime, state and counters for the status API. */
/** Covers the client's first two SYN retransmissions (1 s, then 3 s after the first attempt). */
export const RETRANSMIT_GRACE_MS = 3000;

type KeyedConfig = Pick<InstanceConfig, 'address' | 'interface'> & Partial<Pick<InstanceConfig, 'addresses'>>;

/**
 * An instance's key in the eBPF maps (see ManagedInstance.key): its port for a host-port instance,
 * else its first IPv4 address, else one derived from its IPv6 address (ipv6Key). Its IPv6
 * addresses reach the same key through doze_addr6 (aliasesOf).
 */
export function trafficKey(config: KeyedConfig): string {
  if (config.interface === undefined) return portKey(portOf(config.address));
  const hosts = [config.address, ...(config.addresses ?? [])].map(hostOf);
  return hosts.find((host) => isIPv4(host)) ?? ipv6Key(hosts[0]!);
}

/** How a clash of keys reads: two instances on one address, or on one host port. */
export function describeKey(config: KeyedConfig): string {
  return config.interface === undefined ? `host port ${portOf(config.address)}` : `address ${hostOf(config.address)}`;
}

/** What else names an instance in the maps: its IPv6 addresses and its own interface. */
export function aliasesOf(config: KeyedConfig): InstanceAliases {
  const ipv6 = [...new Set([config.address, ...(config.addresses ?? [])].map(hostOf).filter((host) => isIPv6(host)))];
  // A host-port instance's IPv6 clients reach its port key directly: no address names it.
  if (config.interface === undefined) return { ipv6: [] };
  return { ipv6, device: config.interface };
}

export class ManagedInstance {
  state: InstanceState = 'running';
  sleeps = 0;
  wakes = 0;
  lastWakeMs: number | undefined;
  checksAnswered = 0;
  failure: string | undefined;
  /** The last failed transition (a sleep undone, a failed wake), kept after the instance recovers. */
  lastError: { message: string; atMs: number } | undefined;
  /** Why the instance is held awake past its idle timeout, if it is. */
  heldBy: string | undefined;
  /** Set when it must never sleep (a check the stub cannot answer): shown as heldBy. */
  sleepBlockedBy: string | undefined;
  awakeSinceNs: bigint;
  lastSeenNs = 0n;
  nextCheckNs: bigint;
  /** Its packet counter when its sleep was decided: traffic past it must wake it (the wake watchdog). */
  packetsAtSleep: bigint | undefined;
  /** When its last sleep began (monotonic ns, before the map said pausing): a wake event stamped earlier is stale. */
  sleepStartNs = 0n;
  /** The watchdog woke it for traffic no event had announced; counted as missed unless the event comes late. */
  watchdogWake: { timer: NodeJS.Timeout; atNs: bigint } | undefined;
  /** Wakes asked for and not yet started (queued behind a transition). */
  wakesPending = 0;
  /** A packet arrived while pausing: the sleep must be reversed as soon as it completes. */
  wakeRequested = false;
  /** When the pending wake's first packet was seen (bpf clock), for doze_wake_seconds. */
  wakeEventNs: bigint | undefined;
  /** The signalling packet of the last traffic wake, until the tc program reports its first response. */
  lastWakeSignalNs: bigint | undefined;
  /** First packet → first response byte of the last traffic wake (ms), as the tc program timed it. */
  lastFirstResponseMs: number | undefined;
  stateSinceMs = Date.now();
  /** When the agent began managing it (epoch ms): where its timeline starts. */
  readonly managedSinceMs = Date.now();
  /** When this instance's wake started waiting for room in the node budget (epoch ms). */
  queuedSinceMs: number | undefined;
  /** Wakes it when max_sleep runs out. */
  maxSleepTimer: NodeJS.Timeout | undefined;
  /** Connections held while it wakes (hold mode). */
  held = 0;
  /** Where it came from, when discovered from Nomad (shown on the status page). */
  origin: { allocId: string; jobId: string; group: string; task: string } | undefined;
  /** Who added it: the config file, Nomad discovery, or a registration through the status API. */
  source: 'static' | 'nomad' | 'api' = 'static';
  /** The busy guard's recent CPU/I/O readings, oldest first (taken at checks and wakes only). */
  usageSamples: UsageSample[] = [];
  /** Said once in the log: its CPU cannot be read, so the busy guard does not cover it. */
  usageUnavailableLogged = false;
  /** Since when the busy guard has been postponing its sleep (epoch ms). */
  busySinceMs: number | undefined;
  /** Set when management ends: no new sleep may start. */
  removed = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly config: InstanceConfig, readonly runtime: Runtime, nowNs: bigint) {
    this.awakeSinceNs = nowNs;
    this.nextCheckNs = nowNs + BigInt(config.idleTimeout) * 1_000_000n;
  }

  get id(): string {
    return this.config.id;
  }

  /**
   * How its first packets are taken while it sleeps: as configured, else `hold` where
   * the runtime drops the first SYN while asleep (a retry would cost the client's 1 s
   * retransmission), else `retry`.
   */
  get wake(): WakeMode {
    return this.config.wake ?? (this.runtime.capabilities.dropsFirstSyn ? 'hold' : 'retry');
  }

  /** Whether `wake` was chosen for it (not set in its config). */
  get wakeByDefault(): boolean {
    return this.config.wake === undefined;
  }

  /**
   * Minimum time awake after a wake. A runtime whose process is gone while
   * asleep (VM snapshot, scale) drops the first SYN when waking by `retry`;
   * the client retransmits after 1 s (then 3 s), so the instance stays awake
   * long enough to take that retransmission instead of sleeping before it lands.
   */
  get minAwakeMs(): number {
    const dropsFirstSyn = !this.runtime.capabilities.keepsProcess && this.wake === 'retry';
    return Math.max(this.config.minAwake, dropsFirstSyn ? RETRANSMIT_GRACE_MS : 0);
  }

  /**
   * Its key in the eBPF maps: the IPv4 address behind its own interface, or, for a
   * host-port instance (no interface: host network mode, Nomad's qemu driver), its port.
   */
  get key(): string {
    return trafficKey(this.config);
  }

  /** Its IPv6 addresses and own interface, which lead to its key in the maps. */
  get aliases(): InstanceAliases {
    return aliasesOf(this.config);
  }

  /** Traffic reaches it on the node's own interfaces, addressed to its host port. */
  get onHostPort(): boolean {
    return this.config.interface === undefined;
  }

  /** Transitions of one instance never overlap: each waits for the previous one. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }
}
