import type { InstanceConfig, WakeMode } from '../config/schema.js';
import { hostOf, portKey, portOf } from '../sources/ipv4.js';
import { ipv6Key, isIPv4, isIPv6 } from '../sources/ipv6.js';
import type { Runtime } from '../runtimes/runtime.js';
import type { InstanceAliases, TrafficKey } from '../sources/traffic-source.js';
import type { FailureReason, HoldReason } from './reasons.js';
import type { InstanceState } from './states.js';
import { RehearsalRecord } from './rehearsal-record.js';
import { SerialQueue } from '../shared/serial-queue.js';

/** One instance under management: its config, runtime, state and counters for the status API. */
/** Covers the client's first two SYN retransmissions (1 s, then 3 s after the first attempt). */
export const RETRANSMIT_GRACE_MS = 3000;

type KeyedConfig = Pick<InstanceConfig, 'address' | 'interface'> & Partial<Pick<InstanceConfig, 'addresses'>>;

/**
 * An instance's key in the eBPF maps (see ManagedInstance.key): its port for a host-port instance,
 * else its first IPv4 address, else one derived from its IPv6 address (ipv6Key). Its IPv6
 * addresses reach the same key through doze_addr6 (aliasesOf).
 */
export function trafficKey(config: KeyedConfig): TrafficKey {
  if (config.interface === undefined) return portKey(portOf(config.address)) as TrafficKey;
  const hosts = [config.address, ...(config.addresses ?? [])].map(hostOf);
  return (hosts.find((host) => isIPv4(host)) ?? ipv6Key(hosts[0]!)) as TrafficKey;
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

/** Who added an instance: the config file, Nomad discovery, or a registration through the status API. */
export type InstanceSource = 'static' | 'nomad' | 'api';

/** Where an instance came from, when discovered from Nomad (shown on the status page). */
export interface InstanceOrigin {
  allocId: string;
  jobId: string;
  group: string;
  task: string;
}

/** What its admission says of an instance besides its config: fixed for as long as it is managed. */
export interface InstanceMeta {
  source?: InstanceSource;
  origin?: InstanceOrigin;
  /** Why it must never sleep (a check the stub cannot answer): shown as heldBy. */
  sleepBlockedBy?: string;
}

/**
 * The detector's bookkeeping of one instance: written by the detector alone (agent/detector/),
 * read everywhere else through ReadonlyInstance. test/architecture/one-writer.test.ts fails when
 * a module outside the detector names this class.
 */
export class ManagedInstance {
  state: InstanceState = 'running';
  sleeps = 0;
  wakes = 0;
  lastWakeMs: number | undefined;
  checksAnswered = 0;
  /** Why it is failed, until a wake succeeds. */
  failure: FailureReason | undefined;
  /** The last failed transition (a sleep undone, a failed wake), kept after the instance recovers. */
  lastError: { message: string; atMs: number } | undefined;
  /** Why the instance is held awake past its idle timeout, if it is. */
  heldBy: HoldReason | undefined;
  /** Set when it must never sleep (a check the stub cannot answer): shown as heldBy. */
  readonly sleepBlockedBy: string | undefined;
  /** No sleep until `untilMs`: its Nomad client is killing, restarting or signalling its task (Detector.holdAwake). */
  awakeHold: { reason: HoldReason; untilMs: number } | undefined;
  awakeSinceNs: bigint;
  lastSeenNs = 0n;
  /** Its packet counter at the same reading as lastSeenNs (a sleep decided on them aborts if either moved). */
  seenPackets = 0n;
  nextCheckNs: bigint;
  /** Wakes asked for and not yet started (queued behind a transition). */
  wakesPending = 0;
  /** First packet → first response byte of the last traffic wake (ms), as the tc program timed it. */
  lastFirstResponseMs: number | undefined;
  stateSinceMs = Date.now();
  /** When the agent began managing it (epoch ms): where its timeline starts. */
  readonly managedSinceMs = Date.now();
  /** When this instance's wake started waiting for room in the node budget (epoch ms). */
  queuedSinceMs: number | undefined;
  /** Connections held while it wakes (hold mode). */
  held = 0;
  /** Where it came from, when discovered from Nomad (shown on the status page). */
  readonly origin: InstanceOrigin | undefined;
  /** Who added it: the config file, Nomad discovery, or a registration through the status API. */
  readonly source: InstanceSource;
  /** Set when management ends: no new sleep may start. */
  removed = false;
  /** Dry run: the sleeps it would have taken, their time and memory (agent/detector/rehearsal.ts). */
  readonly rehearsal = new RehearsalRecord();
  private readonly transitions = new SerialQueue();

  constructor(readonly config: InstanceConfig, readonly runtime: Runtime, nowNs: bigint, meta: InstanceMeta = {}) {
    this.source = meta.source ?? 'static';
    this.origin = meta.origin;
    this.sleepBlockedBy = meta.sleepBlockedBy;
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
  get key(): TrafficKey {
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

  /** Why it may not sleep now, if anything forbids it (sleepBlockedBy, or a hold until it runs out). */
  get sleepHeldBy(): HoldReason | undefined {
    if (this.sleepBlockedBy) return { kind: 'never-sleeps', detail: this.sleepBlockedBy };
    return this.awakeHold && Date.now() < this.awakeHold.untilMs ? this.awakeHold.reason : undefined;
  }

  /** Transitions of one instance never overlap: each waits for the previous one. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.transitions.run(work);
  }
}

/** Its last inbound packet (`lastSeenNs`, or a fresher reading) or its wake, whichever is later (bpf clock). */
export function lastActivityNs(instance: Pick<ManagedInstance, 'lastSeenNs' | 'awakeSinceNs'>, lastSeenNs = instance.lastSeenNs): bigint {
  return lastSeenNs > instance.awakeSinceNs ? lastSeenNs : instance.awakeSinceNs;
}

/** How long it has been idle (no packet, no wake) by `nowNs` (bpf clock), in ms: the status API's idleForMs. */
export function idleForMs(instance: Pick<ManagedInstance, 'lastSeenNs' | 'awakeSinceNs'>, nowNs: bigint): number {
  return Math.max(0, Number(nowNs - lastActivityNs(instance)) / 1e6);
}

/** Until when it stays awake whatever its traffic: its wake plus min_awake (bpf clock). */
export function minAwakeUntilNs(instance: Pick<ManagedInstance, 'awakeSinceNs' | 'minAwakeMs'>): bigint {
  return instance.awakeSinceNs + BigInt(instance.minAwakeMs) * 1_000_000n;
}

/** Its first idle check after waking at `nowNs`: an idle timeout on, and never within min_awake. */
export function firstCheckNs(instance: Pick<ManagedInstance, 'config' | 'minAwakeMs'>, nowNs: bigint): bigint {
  return nowNs + BigInt(Math.max(instance.config.idleTimeout, instance.minAwakeMs)) * 1_000_000n;
}

/** What the detector's own parts use and nobody else reads: its queue, timers and wake bookkeeping. */
type DetectorOnly = 'exclusive' | 'wakesPending' | 'nextCheckNs' | 'awakeHold';

/**
 * A managed instance as everyone but the detector sees it: every field read-only, so only the
 * detector (which holds the ManagedInstance itself) can change its state, timing or counters.
 */
export type ReadonlyInstance = Readonly<Omit<ManagedInstance, DetectorOnly | 'rehearsal'>> & { readonly rehearsal: Readonly<RehearsalRecord> };

/** A new instance for the detector to take on (Detector.add): how admission makes one without the writable type. */
export function newInstance(config: InstanceConfig, runtime: Runtime, nowNs: bigint, meta: InstanceMeta = {}): ReadonlyInstance {
  return new ManagedInstance(config, runtime, nowNs, meta);
}
