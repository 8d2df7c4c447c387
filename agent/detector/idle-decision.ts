import type { IdlePolicy } from '../config/schema.js';
import { ConnFlag, type Connection } from '../sources/bpf-records.js';
import { lastActivityNs, minAwakeUntilNs, type ReadonlyInstance } from './managed-instance.js';
import type { ConnectionsUnreadable, HoldReason, IdleReason } from './reasons.js';

const MS = 1_000_000n;

export interface IdleInputs {
  nowNs: bigint;
  /** Last unmarked inbound packet, or when the instance last woke, whichever is later. */
  lastActivityNs: bigint;
  idleTimeoutMs: number;
  minAwakeUntilNs: bigint;
  maxAwakeMs: number | undefined;
  policy: IdlePolicy;
}

export type IdleVerdict =
  | { kind: 'active'; recheckAtNs: bigint }
  | { kind: 'needs-connections' }
  | { kind: 'held'; reason: HoldReason; recheckAtNs: bigint }
  /** A `max-awake` reason: the bound was reached, nothing may postpone the sleep further. */
  | { kind: 'idle'; reason: IdleReason };

/**
 * No verdict without the connections: an instance whose requests in flight cannot be read is
 * held awake for this decision (a failed read is never taken for "nothing in flight").
 */
export function unreadableVerdict(failure: ConnectionsUnreadable, nowNs: bigint, idleTimeoutMs: number): IdleVerdict {
  return { kind: 'held', reason: failure, recheckAtNs: nowNs + BigInt(holdRecheckMs(idleTimeoutMs)) * MS };
}

/**
 * A connection whose last payload came from the client and is not answered yet, or whose answer is
 * still on its way to a client that reads it slowly (its window closed): the instance is blocked writing
 * the rest, using no CPU, and freezing it would stall the response. A server FIN ends either: the
 * instance has handed over everything, and its kernel delivers the rest frozen or not.
 */
export function isRequestInFlight(c: Connection): boolean {
  if (c.flags & (ConnFlag.check | ConnFlag.finServer)) return false;
  return c.clientPayloadNs > c.serverPayloadNs || (c.flags & ConnFlag.clientWindowClosed) !== 0;
}

/** A health-check connection still waiting for its answer: pausing now would make it hang. */
export function isCheckInFlight(c: Connection): boolean {
  if (!(c.flags & ConnFlag.check) || c.flags & ConnFlag.finServer) return false;
  return c.clientPayloadNs > c.serverPayloadNs;
}

/** Established and not closed by both sides (a reset one has left the map). */
export function isOpen(c: Connection): boolean {
  if (c.flags & ConnFlag.check) return false;
  return (c.flags & (ConnFlag.finClient | ConnFlag.finServer)) !== (ConnFlag.finClient | ConnFlag.finServer);
}

/** An instance's inputs to decideIdle at `nowNs`, its last packet as the counters say now. */
export function idleInputs(instance: ReadonlyInstance, lastSeenNs: bigint, nowNs: bigint): IdleInputs {
  return {
    nowNs,
    lastActivityNs: lastActivityNs(instance, lastSeenNs),
    idleTimeoutMs: instance.config.idleTimeout,
    minAwakeUntilNs: minAwakeUntilNs(instance),
    maxAwakeMs: instance.config.maxAwake,
    policy: instance.config.idlePolicy,
  };
}

/** How often a held instance is looked at again: often enough to sleep soon after the last answer. */
export function holdRecheckMs(idleTimeoutMs: number): number {
  return Math.min(Math.max(Math.floor(idleTimeoutMs / 5), 20), 1000);
}

/**
 * Pure idle decision. Phase one needs only counters; phase two (policies
 * `requests` and `connections`) also needs the instance's tracked connections.
 */
export function decideIdle(inputs: IdleInputs, connections?: Connection[]): IdleVerdict {
  const idleAt = inputs.lastActivityNs + BigInt(inputs.idleTimeoutMs) * MS;
  const earliest = idleAt > inputs.minAwakeUntilNs ? idleAt : inputs.minAwakeUntilNs;
  if (inputs.nowNs < earliest) return { kind: 'active', recheckAtNs: earliest };
  const quietMs = Number((inputs.nowNs - inputs.lastActivityNs) / MS);
  if (inputs.policy === 'traffic') return { kind: 'idle', reason: { kind: 'quiet', quietMs, nothingInFlight: false } };
  if (!connections) return { kind: 'needs-connections' };
  const inFlight = connections.filter(isRequestInFlight).length;
  const open = inputs.policy === 'connections' ? connections.filter(isOpen).length : 0;
  const holder: HoldReason | undefined = inFlight > 0 ? { kind: 'in-flight', requests: inFlight } : open > 0 ? { kind: 'open-connection', connections: open } : undefined;
  if (holder === undefined) return { kind: 'idle', reason: { kind: 'quiet', quietMs, nothingInFlight: true } };
  if (inputs.maxAwakeMs !== undefined && quietMs >= inputs.maxAwakeMs) {
    return { kind: 'idle', reason: { kind: 'max-awake', quietMs, despite: holder } };
  }
  return { kind: 'held', reason: holder, recheckAtNs: inputs.nowNs + BigInt(holdRecheckMs(inputs.idleTimeoutMs)) * MS };
}
