import type { UsageReading, UsageSourceView } from '../cgroups/cpu-usage.js';

/** What a runtime can do, declared up front so callers never guess. */
export interface RuntimeCapabilities {
  /** The workload's process survives a sleep (freezer, QEMU stop/cont). */
  keepsProcess: boolean;
  /** A sleep frees the workload's memory. */
  freesMemory: boolean;
  /**
   * While asleep nothing reads the workload's interface (the VMM process is gone), so
   * the first SYN is dropped and a `retry` wake costs the client's 1 s retransmission:
   * such instances wake by `hold` unless `wake` is set.
   */
  dropsFirstSyn?: boolean;
}

import type { MemoryUsage } from '../cgroups/memory-cgroup.js';
import type { ReclaimOutcome } from './freezer-reclaim.js';

/** Memory reclaim while asleep (freezer `reclaim`): on or off and why, and the last one. */
export interface ReclaimState {
  enabled: boolean;
  /** Why it is off (no swap, no memory cgroup), or null. */
  reason: string | null;
  afterMs: number;
  /** The instance's memory is out now (a reclaim finished since it froze). */
  reclaimed: boolean;
  last: ReclaimOutcome | null;
}

/** What a runtime finds its workload doing: awake, put to sleep (by whatever means: frozen, stopped, saved, scaled to 0), between the two, or gone. */
export type RuntimeObservedState = 'running' | 'asleep' | 'transitioning' | 'gone';

/**
 * What a runtime persists to wake what it put to sleep after an agent restart
 * (see runtime-handle.ts): versioned, tagged with the runtime's kind.
 */
export interface RuntimeHandle {
  version: number;
  kind: string;
  [key: string]: unknown;
}

export interface ProbeResult {
  ok: boolean;
  reason?: string;
}

/**
 * Puts one instance to sleep and wakes it. Every call takes a deadline,
 * is idempotent (putting a sleeping instance to sleep succeeds) and is safe
 * after an agent restart, because it acts on the workload's real state.
 *
 * It speaks the detector's words, sleep and wake, whatever the runtime does
 * underneath. "Pause" is left to the QEMU and Firecracker pause modes and to
 * the VMMs' own commands (QMP stop/cont, Cloud Hypervisor's vm.pause), so
 * that QemuSnapshotRuntime.sleep() saving a snapshot reads as it is.
 */
export interface Runtime {
  readonly kind: string;
  readonly capabilities: RuntimeCapabilities;
  /** Can this runtime work here, for this instance? Checked at config load. */
  probe(): Promise<ProbeResult>;
  /**
   * `signal` is aborted when the caller gave up (its deadline passed, shared/deadline.ts
   * withDeadline): a sleep or wake of several steps stops before its next one.
   */
  sleep(deadlineMs: number, signal?: AbortSignal): Promise<void>;
  wake(deadlineMs: number, signal?: AbortSignal): Promise<void>;
  inspect(): Promise<RuntimeObservedState>;
  /**
   * The workload's CPU and block I/O so far (busy guard), read synchronously from
   * kernel counters; undefined when they cannot be read. Runtimes without it are not guarded.
   */
  usage?(): UsageReading | undefined;
  /**
   * Calls `onEntry` when a process is written into the workload's cgroup (`nomad alloc exec`, a
   * script check, anything that does `echo $$ > cgroup.procs`), until the returned function is
   * called: a sleeper must wake for it, since a process entering a frozen cgroup freezes at once.
   * Runtimes without a cgroup of their own omit it.
   */
  watchEntries?(onEntry: () => void): () => void;
  /** What `usage()` read last (a CPU cgroup, /proc, or nothing and why): status page and API. */
  usageSource?(): UsageSourceView;
  /** The runtime's current handle, for status and tests (runtimes that keep none omit this). */
  handle?(): RuntimeHandle | undefined;
  /** What the workload holds now, from its memory cgroup; undefined when none was found. */
  memory?(): Promise<MemoryUsage | undefined>;
  /** Major page faults of the workload so far (its memory cgroup): how a paced wake sees it fault back. */
  majorFaults?(): Promise<number | undefined>;
  /** Reclaim while asleep, for runtimes that have it. */
  reclaimState?(): ReclaimState | undefined;
  /** Called after each reclaim attempt (metrics). */
  onReclaim?(listener: (outcome: ReclaimOutcome) => void): void;
  /** Release what the runtime holds open (a QMP connection); the workload is left as it is. */
  close?(): Promise<void>;
  /**
   * The one write that wakes its workload, when one write is all a wake is (a plain freezer:
   * no reclaim to stop, nothing to restore): the wake-event reader does it the moment a packet
   * arrives (detector/early-thaw.ts). Undefined when a wake needs more.
   */
  earlyThaw?(): { file: string; value: string } | undefined;
}
