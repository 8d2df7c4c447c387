import { describeUnavailable, type UsageSourceView, type UsageUnavailableReason } from '../cgroups/cpu-usage.js';
import { idleForMs, type ReadonlyInstance } from '../detector/managed-instance.js';
import { monotonicNs } from '../shared/clock.js';
import { describeFailure, describeHold, type HoldReason } from '../detector/reasons.js';
import type { InstanceState } from '../detector/states.js';
import type { RehearsedRoom } from '../detector/rehearsal-record.js';
import type { InstanceMemoryView, MemoryTracker } from './memory-view.js';
import type { AwakeReason } from '../detector/why-awake.js';
import { describeAwake } from './awake-text.js';
import type { SavingsView } from './savings.js';

/** The status API's instance record (a contract other tools read: extend, never rename). */
export interface InstanceView {
  id: string;
  state: InstanceState;
  sleeps: number;
  wakes: number;
  lastWakeMs: number | null;
  /** The last traffic wake's first packet → first response byte to a client, timed by the tc program; null until answered. */
  lastFirstResponseMs: number | null;
  idleForMs: number;
  checksAnswered: number;
  address: string;
  /** Its own interface; null for a host-port instance (counted on the node's interfaces by port). */
  interface: string | null;
  runtime: string;
  /** The runtime's sleep mode where it has several (qemu, firecracker: pause or snapshot). */
  mode: string | null;
  idlePolicy: string;
  idleTimeoutMs: number;
  heldBy: string | null;
  /** Why it is held awake, as a type (`kind`: in-flight, open-connection, busy, measuring, never-sleeps); heldBy says it in words. */
  heldReason: HoldReason | null;
  failure: string | null;
  /** The last failed transition, e.g. a sleep undone because the snapshot could not be written; kept after recovery. */
  lastError: { message: string; at: string } | null;
  stateSince: string;
  /** Set while the wake waits for room in the node budget. */
  queuedSince: string | null;
  /** MiB it holds awake (config `memory`, Nomad: the task's memory). */
  memory: number;
  /** Whether its runtime gives that memory back while asleep (snapshot, scale); a frozen or paused process keeps it. */
  freesMemory: boolean;
  /** When the agent began managing it. */
  managedSince: string;
  /** Measured from its memory cgroup (resident, swapped, awake high-water mark, reclaim), null when it has none. */
  memoryUsage: InstanceMemoryView | null;
  /** Connections held while it wakes (wake mode hold). */
  held: number;
  wake: string;
  /** Nomad allocation, job, group and task, when discovered from Nomad. */
  origin: { allocId: string; jobId: string; group: string; task: string } | null;
  /** Who added it: `static` (config file), `nomad` (discovery) or `api` (PUT /api/instances/{id}, e.g. doze vm run --register). */
  source: 'static' | 'nomad' | 'api';
  /** Dry run: decided on as if managed, never frozen, redirected or reclaimed. */
  dryRun: boolean;
  /** Dry run: sleeps it would have taken, wakes it would have made, time it would have spent asleep. */
  wouldSleeps: number;
  wouldWakes: number;
  wouldAsleepMs: number;
  /** Dry run: since when it would be asleep now (null: it would be awake). */
  wouldSleepSince: string | null;
  /** Dry run: its measured resident memory × the time it would have slept (byte-seconds): what a memory-freeing runtime would have given back. */
  wouldFreeByteSeconds: number;
  /**
   * Dry run with a node budget: its would-be wakes by what the budget would have done (`fits`,
   * `evicts`: put the least recently used awake instances to sleep first, `waits` for room), and
   * the last one's answer with the instances it would have put to sleep; null until one was weighed
   * (always, without a budget).
   */
  wouldRoom: { fits: number; evicts: number; waits: number; last: RehearsedRoom | null } | null;
  /** Why it is awake right now, strongest first, each with its evidence (client address, port, age; CPU figure; minAwake left); null when asleep or not asked. */
  whyAwake: AwakeReason[] | null;
  /** The same in words. */
  whyAwakeText: string[] | null;
  /** What sleeping saved: asleep share of the last hour and day, measured memory freed (byte-seconds), the day's wakes and first-response p50/p99. */
  savings: SavingsView | null;
  /** Its first-response p99 over the day is above config `coldStartThreshold` (false without one). */
  slowWakes: boolean;
  /**
   * What the busy guard reads for it: a CPU cgroup holding exactly its processes (`file`), /proc
   * summed over its cgroup's processes (or its VM's process), or nothing, and why.
   */
  busyGuard: BusyGuardView;
}

export type BusyGuardView =
  | { source: 'cpu-cgroup'; file: string }
  | { source: 'procfs'; processes: number }
  | { source: 'unavailable'; reason: UsageUnavailableReason; message: string };

export function busyGuardOf(i: ReadonlyInstance): BusyGuardView {
  const view = (s: UsageSourceView): BusyGuardView =>
    s.kind === 'cpu-cgroup' ? { source: 'cpu-cgroup', file: s.file }
      : s.kind === 'procfs' ? { source: 'procfs', processes: s.processes }
      : { source: 'unavailable', reason: s.reason, message: describeUnavailable(s.reason) };
  if (i.config.busyCpu <= 0) return view({ kind: 'unavailable', reason: 'guard-off' });
  if (!i.runtime.usage) return view({ kind: 'unavailable', reason: 'runtime-has-no-counters' });
  return view(i.runtime.usageSource?.() ?? { kind: 'unavailable', reason: 'not-read-yet' });
}

/** What the status server adds to an instance's own record. */
export interface ViewExtras {
  /** The agent-wide dry run (Detector.dryRunAll). */
  dryRunAll?: boolean;
  why?: AwakeReason[];
  savings?: SavingsView;
  /** Config `coldStartThreshold` (ms): a first-response p99 over it marks the instance's wakes as slow. */
  coldStartThresholdMs?: number;
}

export function viewOf(i: ReadonlyInstance, memory?: MemoryTracker, { dryRunAll = false, why, savings, coldStartThresholdMs }: ViewExtras = {}): InstanceView {
  const p99 = savings?.wakes.firstResponseP99Ms ?? null;
  const nowNs = monotonicNs();
  const r = i.rehearsal;
  return {
    id: i.id,
    state: i.state,
    sleeps: i.sleeps,
    wakes: i.wakes,
    lastWakeMs: i.lastWakeMs === undefined ? null : Math.round(i.lastWakeMs * 1000) / 1000,
    lastFirstResponseMs: i.lastFirstResponseMs === undefined ? null : Math.round(i.lastFirstResponseMs * 1000) / 1000,
    idleForMs: Math.round(idleForMs(i, nowNs)),
    checksAnswered: i.checksAnswered,
    address: i.config.address,
    interface: i.config.interface ?? null,
    runtime: i.runtime.kind,
    mode: 'mode' in i.config.runtime && typeof i.config.runtime.mode === 'string' ? i.config.runtime.mode : null,
    idlePolicy: i.config.idlePolicy,
    idleTimeoutMs: i.config.idleTimeout,
    heldBy: i.heldBy ? describeHold(i.heldBy) : null,
    heldReason: i.heldBy ?? null,
    failure: i.failure ? describeFailure(i.failure) : null,
    lastError: i.lastError ? { message: i.lastError.message, at: new Date(i.lastError.atMs).toISOString() } : null,
    stateSince: new Date(i.stateSinceMs).toISOString(),
    queuedSince: i.queuedSinceMs === undefined ? null : new Date(i.queuedSinceMs).toISOString(),
    memory: i.config.memory,
    freesMemory: i.runtime.capabilities.freesMemory,
    managedSince: new Date(i.managedSinceMs).toISOString(),
    memoryUsage: memory?.view(i) ?? null,
    held: i.held,
    wake: i.wake,
    origin: i.origin ?? null,
    source: i.source,
    dryRun: dryRunAll || i.config.dryRun,
    wouldSleeps: r.sleeps,
    wouldWakes: r.wakes,
    wouldAsleepMs: Math.round(r.asleepMsAt(nowNs)),
    wouldSleepSince: r.current ? new Date(r.current.sinceMs).toISOString() : null,
    wouldFreeByteSeconds: Math.round(r.freedByteSecondsAt(nowNs)),
    wouldRoom: r.room.fits + r.room.evicts + r.room.waits === 0 ? null : { fits: r.room.fits, evicts: r.room.evicts, waits: r.room.waits, last: r.room.last ?? null },
    whyAwake: why ?? null,
    whyAwakeText: why ? why.map(describeAwake) : null,
    savings: savings ?? null,
    slowWakes: coldStartThresholdMs !== undefined && p99 !== null && p99 > coldStartThresholdMs,
    busyGuard: busyGuardOf(i),
  };
}
