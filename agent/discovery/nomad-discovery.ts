import { allocationInstance, isAllocationLive, type NomadInstance } from './allocation-instance.js';
import { nextBackoff, sleep } from './backoff.js';
import { NomadError, type NomadClient } from './nomad-client.js';
import { allocationEvents } from './nomad-event-stream.js';
import { watchNodeAllocations } from './node-allocations-watch.js';
import type { NomadAllocation } from './nomad-schemas.js';

/*
 * Keeps the set of doze instances on one Nomad client node in step with its
 * allocations: a first list (GET /v1/node/:id/allocations), then the event
 * stream from that list's index + 1. A stream Nomad refuses (4xx: event
 * broker off, token without access to every namespace) switches to blocking
 * queries on the node's allocations. While Nomad is unreachable nothing is
 * removed: known instances keep sleeping and waking, and the status says so.
 */

export interface DiscoveryStatus {
  connected: boolean;
  source: 'list' | 'stream' | 'blocking';
  /** The last error, while disconnected. */
  error?: string;
}

export interface NomadDiscoveryOptions {
  nodeId: string;
  /** Namespace of the event stream; "*" (all) needs a token that can read every namespace. */
  namespace?: string;
  signal?: AbortSignal;
  heartbeatTimeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** An allocation became (or changed) a managed instance. */
  onInstance: (instance: NomadInstance) => void;
  /** A managed allocation stopped or left the node: drop it with its rules and programs. */
  onRemove: (allocId: string, reason: string) => void;
  /** Annotated for doze but unusable (bad meta, no service): report, do not manage. */
  onInvalid?: (allocId: string, reason: string) => void;
  /** An allocation that was judged and not managed (ignored or invalid) stopped or left the node. */
  onForget?: (allocId: string) => void;
  onStatus?: (status: DiscoveryStatus) => void;
  onError?: (error: NomadError) => void;
}

export class NomadDiscovery {
  private readonly known = new Map<string, NomadInstance>();
  /** Allocations seen and not managed, with the ModifyIndex they were judged at. */
  private readonly judged = new Map<string, number>();
  private status: DiscoveryStatus = { connected: false, source: 'list' };

  constructor(
    private readonly client: NomadClient,
    private readonly options: NomadDiscoveryOptions,
  ) {}

  instances(): NomadInstance[] {
    return [...this.known.values()];
  }

  currentStatus(): DiscoveryStatus {
    return { ...this.status };
  }

  /** Runs until the signal aborts. */
  async run(): Promise<void> {
    const { signal } = this.options;
    const index = await this.initialList();
    if (index === undefined) return;
    try {
      for await (const frame of allocationEvents(this.client, {
        index: index + 1,
        namespace: this.options.namespace ?? '*',
        signal,
        heartbeatTimeoutMs: this.options.heartbeatTimeoutMs,
        minBackoffMs: this.options.minBackoffMs,
        maxBackoffMs: this.options.maxBackoffMs,
        onConnect: () => this.setStatus({ connected: true, source: 'stream' }),
        onError: (error) => this.failed(error, 'stream'),
      })) {
        for (const event of frame.events) await this.apply(event.allocation);
      }
      return;
    } catch (error) {
      if (!(error instanceof NomadError)) throw error;
      this.failed(error, 'stream');
    }
    await this.blockingFallback();
  }

  /** The node's allocations, retried until Nomad answers; undefined once aborted. */
  private async initialList(): Promise<number | undefined> {
    let backoffMs = 0;
    while (!this.options.signal?.aborted) {
      try {
        const { index, value } = await this.client.nodeAllocations(this.options.nodeId, { signal: this.options.signal });
        this.setStatus({ connected: true, source: 'list' });
        this.reconcile(value);
        return index;
      } catch (error) {
        if (!(error instanceof NomadError)) throw error;
        if (this.options.signal?.aborted) return undefined;
        this.failed(error, 'list');
        backoffMs = nextBackoff(backoffMs, this.options);
        await sleep(backoffMs, this.options.signal);
      }
    }
    return undefined;
  }

  private async blockingFallback(): Promise<void> {
    for await (const { value } of watchNodeAllocations(this.client, this.options.nodeId, {
      signal: this.options.signal,
      minBackoffMs: this.options.minBackoffMs,
      maxBackoffMs: this.options.maxBackoffMs,
      onError: (error) => this.failed(error, 'blocking'),
    })) {
      this.setStatus({ connected: true, source: 'blocking' });
      this.reconcile(value);
    }
  }

  /** A full list: map each allocation, and drop instances whose allocation is gone from the node. */
  private reconcile(allocations: NomadAllocation[]): void {
    const present = new Set<string>();
    for (const alloc of allocations) {
      present.add(alloc.ID);
      this.judge(alloc, alloc.Job);
    }
    for (const allocId of this.known.keys()) if (!present.has(allocId)) this.remove(allocId, 'allocation is no longer on this node');
    for (const allocId of [...this.judged.keys()]) if (!present.has(allocId)) this.forget(allocId);
  }

  /** One allocation from the stream (without its job). */
  private async apply(alloc: NomadAllocation): Promise<void> {
    if (alloc.NodeID !== this.options.nodeId) return;
    if (!isAllocationLive(alloc)) {
      if (this.judged.has(alloc.ID)) this.forget(alloc.ID);
      if (this.known.has(alloc.ID)) this.remove(alloc.ID, `allocation is ${alloc.DesiredStatus}/${alloc.ClientStatus}`);
      return;
    }
    // A managed allocation's instance does not change while it runs; anything else may have
    // become manageable (its network came up), so it is looked at again with its job.
    if (this.known.has(alloc.ID) || this.judged.get(alloc.ID) === alloc.ModifyIndex) return;
    try {
      const { value } = await this.client.allocation(alloc.ID, { signal: this.options.signal });
      if (isAllocationLive(value)) this.judge(value, value.Job);
    } catch (error) {
      if (error instanceof NomadError) this.options.onError?.(error);
      else throw error;
    }
  }

  private judge(alloc: NomadAllocation, job: NomadAllocation['Job']): void {
    const mapping = allocationInstance(alloc, job);
    if (mapping.kind === 'instance') {
      this.judged.delete(alloc.ID);
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

  private forget(allocId: string): void {
    this.judged.delete(allocId);
    this.options.onForget?.(allocId);
  }

  private remove(allocId: string, reason: string): void {
    this.known.delete(allocId);
    this.options.onRemove(allocId, reason);
  }

  private failed(error: NomadError, source: DiscoveryStatus['source']): void {
    this.options.onError?.(error);
    // Malformed frames are survivable noise; only lost contact changes the status.
    if (error.code !== 'E_NOMAD_RESPONSE') this.setStatus({ connected: false, source, error: error.message });
  }

  private setStatus(status: DiscoveryStatus): void {
    if (JSON.stringify(status) === JSON.stringify(this.status)) return;
    this.status = status;
    this.options.onStatus?.({ ...status });
  }
}
