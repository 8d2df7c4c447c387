import type { InstanceConfig } from '../config/schema.js';
import { hostOf } from '../sources/ipv4.js';
import type { Runtime } from '../runtimes/runtime.js';
import type { InstanceState } from './states.js';

/** One instance under management: its config, runtime, state and counters for the status API. */
export class ManagedInstance {
  state: InstanceState = 'running';
  sleeps = 0;
  wakes = 0;
  lastWakeMs: number | undefined;
  checksAnswered = 0;
  failure: string | undefined;
  /** Why the instance is held awake past its idle timeout, if it is. */
  heldBy: string | undefined;
  awakeSinceNs: bigint;
  lastSeenNs = 0n;
  nextCheckNs: bigint;
  /** A packet arrived while pausing: the sleep must be reversed as soon as it completes. */
  wakeRequested = false;
  /** When the pending wake's first packet was seen (bpf clock), for doze_wake_seconds. */
  wakeEventNs: bigint | undefined;
  stateSinceMs = Date.now();
  /** When this instance's wake started waiting for room in the node budget (epoch ms). */
  queuedSinceMs: number | undefined;
  /** Connections held while it wakes (hold mode). */
  held = 0;
  /** Where it came from, when discovered from Nomad (shown on the status page). */
  origin: { allocId: string; jobId: string; group: string; task: string } | undefined;
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

  get ip(): string {
    return hostOf(this.config.address);
  }

  /** Transitions of one instance never overlap: each waits for the previous one. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }
}
