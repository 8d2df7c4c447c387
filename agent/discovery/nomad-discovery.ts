import { allocationInstance, isAllocationLive, type AnnotatedAllocation } from './allocation-instance.js';
import { nextBackoff, delay } from './backoff.js';
import { NomadError, type NomadClient } from '../nomad/nomad-client.js';
import { allocationEvents } from './nomad-event-stream.js';
import { watchNodeAllocations } from './node-allocations-watch.js';
import type { NomadAllocation } from '../nomad/nomad-schemas.js';
import { newTaskActions, type TaskAction, type TaskEventMarks } from '../nomad/task-events.js';
import { SerialQueue } from '../shared/serial-queue.js';

/*
 * Keeps the set of doze instances on one Nomad client node in step with its
 * allocations: a first list (GET /v1/node/:id/allocations), then the event
 * stream from that list's index + 1. A stream Nomad refuses (4xx: event
 * broker off; or, since Nomad 1.11.2, a 200 that closes before its first
 * heartbeat: a token without access to every namespace) switches to
 * blocking queries on the node's allocations, with the reason in the status
 * (`fallback`), and the stream is tried again after a backoff (30 s, doubling
 * to 10 min). Events lost across a reconnect (Nomad's small event buffer, a
 * new broker after a leader change) are made good by re-listing the node's
 * allocations on every reconnect and reconciling. While Nomad is
 * unreachable nothing is removed: known instances keep sleeping and waking,
 * and the status says so.
 */

export interface DiscoveryStatus {
  connected: boolean;
  source: 'list' | 'stream' | 'blocking';
  /** The last error, while disconnected. */
  error?: string;
  /** Why blocking queries stand in for the event stream, while they do. */
  fallback?: string;
}

export interface NomadDiscoveryOptions {
  nodeId: string;
  /** Namespace of the event stream; "*" (all) needs a token that can read every namespace. */
  namespace?: string;
  signal?: AbortSignal;
  heartbeatTimeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * While the stream is up, the node's allocations are re-listed this often
   * (default 5 min): a `namespace=*` subscription only covers the namespaces
   * that existed when it connected (nomad/event_endpoint.go), and anything
   * else lost is made good too.
   */
  relistMs?: number;
  /** After a fallback to blocking queries, the stream is tried again after this (doubling up to streamRetryMaxMs). */
  streamRetryMs?: number;
  streamRetryMaxMs?: number;
  /** An allocation became (or changed) a managed instance. */
  onInstance: (instance: AnnotatedAllocation) => void;
  /** A managed allocation stopped or left the node: drop it with its rules and programs. */
  onRemove: (allocId: string, reason: string) => void;
  /** Annotated for doze but unusable (bad meta, no service): report, do not manage. */
  onInvalid?: (allocId: string, reason: string) => void;
  /** An allocation that was judged and not managed (ignored or invalid) stopped or left the node. */
  onForget?: (allocId: string) => void;
  onStatus?: (status: DiscoveryStatus) => void;
  /**
   * A task of a live allocation is about to be killed, restarted or signalled by its Nomad client
   * (agent/nomad/task-events.ts), said once per event: a sleeping instance must be thawed first.
   */
  onTaskAction?: (allocId: string, action: TaskAction) => void;
  onError?: (error: NomadError) => void;
}

export class NomadDiscovery {
  private readonly known = new Map<string, AnnotatedAllocation>();
  /** Allocations seen and not managed, with the ModifyIndex they were judged at. */
  private readonly judged = new Map<string, number>();
  /** What the last event for a managed allocation said about its network and tasks (see `changed`). */
  private readonly seen = new Map<string, Fingerprint>();
  /** The newest task event seen per task of each live allocation (see noteTaskEvents). */
  private readonly taskMarks = new Map<string, TaskEventMarks>();
  private status: DiscoveryStatus = { connected: false, source: 'list' };
  private fallback: string | undefined;
  /** Re-lists and stream events are applied one at a time, in order. */
  private readonly serial = new SerialQueue();

  constructor(
    private readonly client: NomadClient,
    private readonly options: NomadDiscoveryOptions,
  ) {}

  instances(): AnnotatedAllocation[] {
    return [...this.known.values()];
  }

  currentStatus(): DiscoveryStatus {
    return { ...this.status };
  }

  /** Runs until the signal aborts. */
  async run(): Promise<void> {
    let index = await this.initialList();
    let retryMs = 0;
    while (index !== undefined && !this.options.signal?.aborted) {
      const refused = await this.stream(index);
      if (!refused) return;
      this.fallback = refused.message;
      this.failed(refused, 'stream');
      retryMs = nextBackoff(retryMs, { minBackoffMs: this.options.streamRetryMs ?? 30_000, maxBackoffMs: this.options.streamRetryMaxMs ?? 600_000 });
      index = await this.blockingFallback(retryMs);
    }
  }

  /** Follows the event stream from `index`; the error that made Nomad refuse it, or undefined once aborted. */
  private async stream(index: number): Promise<NomadError | undefined> {
    const { signal } = this.options;
    const periodic = setInterval(() => void this.inOrder(() => this.relist()), this.options.relistMs ?? 300_000);
    periodic.unref();
    try {
      for await (const frame of allocationEvents(this.client, {
        index: index + 1,
        namespace: this.options.namespace ?? '*',
        signal,
        heartbeatTimeoutMs: this.options.heartbeatTimeoutMs,
        minBackoffMs: this.options.minBackoffMs,
        maxBackoffMs: this.options.maxBackoffMs,
        markConnections: true,
        onConnect: () => {
          this.fallback = undefined;
          this.setStatus({ connected: true, source: 'stream' });
        },
        onError: (error) => this.failed(error, 'stream'),
      })) {
        if (frame.reconnected) await this.inOrder(() => this.relist());
        for (const event of frame.events) await this.inOrder(() => this.apply(event.allocation));
      }
      return undefined;
    } catch (error) {
      if (!(error instanceof NomadError)) throw error;
      return error;
    } finally {
      clearInterval(periodic);
    }
  }

  private inOrder(work: () => Promise<void>): Promise<void> {
    return this.serial.run(work);
  }

  /** After a reconnect: the node's allocations now, reconciled (events in between may be lost). */
  private async relist(): Promise<void> {
    try {
      const { index, value } = await this.client.nodeAllocations(this.options.nodeId, { signal: this.options.signal });
      this.reconcile(value, index);
    } catch (error) {
      if (!(error instanceof NomadError)) throw error;
      // The stream is up again: a failed list is reported, and the next reconnect lists again.
      this.options.onError?.(error);
    }
  }

  /** The node's allocations, retried until Nomad answers; undefined once aborted. */
  private async initialList(): Promise<number | undefined> {
    let backoffMs = 0;
    while (!this.options.signal?.aborted) {
      try {
        const { index, value } = await this.client.nodeAllocations(this.options.nodeId, { signal: this.options.signal });
        this.setStatus({ connected: true, source: 'list' });
        this.reconcile(value, index);
        return index;
      } catch (error) {
        if (!(error instanceof NomadError)) throw error;
        if (this.options.signal?.aborted) return undefined;
        this.failed(error, 'list');
        backoffMs = nextBackoff(backoffMs, this.options);
        await delay(backoffMs, this.options.signal);
      }
    }
    return undefined;
  }

  /** Blocking queries for `forMs`; the last index seen (to resume the stream from), or undefined once aborted. */
  private async blockingFallback(forMs: number): Promise<number | undefined> {
    const period = new AbortController();
    const stop = () => period.abort();
    this.options.signal?.addEventListener('abort', stop, { once: true });
    const timer = setTimeout(stop, forMs);
    timer.unref();
    let index: number | undefined;
    try {
      for await (const result of watchNodeAllocations(this.client, this.options.nodeId, {
        signal: period.signal,
        minBackoffMs: this.options.minBackoffMs,
        maxBackoffMs: this.options.maxBackoffMs,
        onError: (error) => this.failed(error, 'blocking'),
      })) {
        index = result.index;
        this.setStatus({ connected: true, source: 'blocking', ...(this.fallback ? { fallback: this.fallback } : {}) });
        this.reconcile(result.value, result.index);
      }
    } finally {
      clearTimeout(timer);
      this.options.signal?.removeEventListener('abort', stop);
    }
    if (this.options.signal?.aborted || index === undefined) return this.options.signal?.aborted ? undefined : this.initialList();
    return index;
  }

  /** A full list: map each allocation, and drop instances whose allocation is gone from the node. */
  private reconcile(allocations: NomadAllocation[], index: number): void {
    const present = new Set<string>();
    for (const alloc of allocations) {
      present.add(alloc.ID);
      if (isAllocationLive(alloc)) this.noteTaskEvents(alloc);
      this.judge(alloc, alloc.Job);
    }
    for (const allocId of [...this.taskMarks.keys()]) if (!present.has(allocId)) this.taskMarks.delete(allocId);
    // Only what the list could have seen: an allocation learned from an event newer than the list stays.
    for (const allocId of [...this.known.keys()]) {
      if (!present.has(allocId) && (this.seen.get(allocId)?.modifyIndex ?? 0) <= index) this.remove(allocId, 'allocation is no longer on this node');
    }
    for (const [allocId, judgedAt] of [...this.judged]) if (!present.has(allocId) && judgedAt <= index) this.forget(allocId);
  }

  /** One allocation from the stream (without its job). */
  private async apply(alloc: NomadAllocation): Promise<void> {
    if (alloc.NodeID !== this.options.nodeId) return;
    if (!isAllocationLive(alloc)) {
      this.taskMarks.delete(alloc.ID);
      if (this.judged.has(alloc.ID)) this.forget(alloc.ID);
      if (this.known.has(alloc.ID)) this.remove(alloc.ID, `allocation is ${alloc.DesiredStatus}/${alloc.ClientStatus}`);
      return;
    }
    // Before anything that waits: a kill or signal on its way must find the instance thawed.
    this.noteTaskEvents(alloc);
    if (this.known.has(alloc.ID)) {
      // A managed allocation is looked at again only when what it is managed by changed:
      // its address or ports (a network re-set up), its job (an in-place update bumps
      // AllocModifyIndex), or a task restarted in place (see judge). Events older than
      // the state last judged (a read can be ahead of the stream) say nothing new.
      const before = this.seen.get(alloc.ID);
      const now = fingerprint(alloc);
      if (before && (alloc.ModifyIndex <= before.modifyIndex || sameFingerprint(before, now))) return;
    } else if (this.judged.get(alloc.ID) === alloc.ModifyIndex) {
      // Judged at this very index already; anything else not managed may have
      // become manageable (its network came up), so it is looked at again with its job.
      return;
    }
    try {
      const { value } = await this.client.allocation(alloc.ID, { signal: this.options.signal });
      if (isAllocationLive(value)) this.judge(value, value.Job);
      else if (this.known.has(value.ID)) this.remove(value.ID, `allocation is ${value.DesiredStatus}/${value.ClientStatus}`);
    } catch (error) {
      if (error instanceof NomadError) this.options.onError?.(error);
      else throw error;
    }
  }

  private judge(alloc: NomadAllocation, job: NomadAllocation['Job']): void {
    const mapping = allocationInstance(alloc, job);
    if (mapping.kind === 'instance') {
      this.judged.delete(alloc.ID);
      const before = this.seen.get(alloc.ID);
      const now = fingerprint(alloc);
      if (before && now.modifyIndex < before.modifyIndex) return;
      // A restarted task is a new process: released and managed afresh, so nothing stays frozen or half-tracked.
      if (before && this.known.has(alloc.ID) && restarted(before, now)) this.remove(alloc.ID, 'a task of the allocation restarted in place');
      this.seen.set(alloc.ID, now);
      const previous = this.known.get(alloc.ID);
      if (previous && JSON.stringify(previous) === JSON.stringify(mapping.instance)) return;
      this.known.set(alloc.ID, mapping.instance);
      this.options.onInstance(mapping.instance);
      return;
    }
    this.judged.set(alloc.ID, alloc.ModifyIndex);
    if (this.known.has(alloc.ID)) this.remove(alloc.ID, mapping.reason);
    if (mapping.kind === 'invalid') this.options.onInvalid?.(alloc.ID, mapping.reason);
  }

  /**
   * Says each new thaw-first task event of a live allocation once. The first sight of an
   * allocation (the first list, an agent restart) only marks the events it already has: those
   * were acted on before, or are history.
   */
  private noteTaskEvents(alloc: NomadAllocation): void {
    const before = this.taskMarks.get(alloc.ID);
    const { actions, marks } = newTaskActions(alloc, before);
    this.taskMarks.set(alloc.ID, marks);
    if (before === undefined) return;
    for (const action of actions) this.options.onTaskAction?.(alloc.ID, action);
  }

  private forget(allocId: string): void {
    this.judged.delete(allocId);
    this.options.onForget?.(allocId);
  }

  private remove(allocId: string, reason: string): void {
    this.known.delete(allocId);
    this.seen.delete(allocId);
    this.options.onRemove(allocId, reason);
  }

  private failed(error: NomadError, source: DiscoveryStatus['source']): void {
    this.options.onError?.(error);
    // Malformed frames are survivable noise; only lost contact changes the status.
    if (error.code !== 'E_NOMAD_RESPONSE') this.setStatus({ connected: false, source, error: error.message, ...(this.fallback ? { fallback: this.fallback } : {}) });
  }

  private setStatus(status: DiscoveryStatus): void {
    if (JSON.stringify(status) === JSON.stringify(this.status)) return;
    this.status = status;
    this.options.onStatus?.({ ...status });
  }
}

/** The facts of an allocation that an instance is built from, or that mean its process is new. */
interface Fingerprint {
  modifyIndex: number;
  address: string | undefined;
  ports: string;
  allocModifyIndex: unknown;
  restarts: Record<string, number>;
}

function fingerprint(alloc: NomadAllocation): Fingerprint {
  const restarts: Record<string, number> = {};
  for (const [task, state] of Object.entries(alloc.TaskStates ?? {})) {
    const count = (state as { Restarts?: unknown } | null)?.Restarts;
    if (typeof count === 'number') restarts[task] = count;
  }
  return {
    modifyIndex: alloc.ModifyIndex,
    address: alloc.NetworkStatus?.Address,
    ports: JSON.stringify(alloc.AllocatedResources?.Shared?.Ports ?? null),
    allocModifyIndex: alloc['AllocModifyIndex'],
    restarts,
  };
}

function sameFingerprint(a: Fingerprint, b: Fingerprint): boolean {
  return JSON.stringify({ ...a, modifyIndex: 0 }) === JSON.stringify({ ...b, modifyIndex: 0 });
}

function restarted(before: Fingerprint, now: Fingerprint): boolean {
  return Object.entries(now.restarts).some(([task, count]) => count > (before.restarts[task] ?? 0));
}
