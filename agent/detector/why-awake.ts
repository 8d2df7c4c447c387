import type { Connection, Talker, WakeProtocol } from '../sources/bpf-records.js';
import { isCheckInFlight, isOpen, isRequestInFlight } from './idle-decision.js';
import { lastActivityNs, minAwakeUntilNs, type ReadonlyInstance } from './managed-instance.js';
import type { BusyDetail } from './reasons.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import { monotonicNs } from '../shared/clock.js';

/*
 * "Why is it awake?": for an awake instance, every reason it is not asleep right now, each with
 * its evidence, as a discriminated union (the status page, the API and `doze status --why` say it
 * in words, never the detector). Built from what the agent already reads: the instance's counters
 * and its doze_conns records (client address and port, when the client last sent payload), the
 * busy guard's last finding and the instance's settings. It names clients by the connections the
 * tc program tracks, and, for traffic that left no open connection (a scraper connecting anew each
 * time, UDP), by the instance's top talkers (doze_talkers: the last few clients that opened a
 * connection or sent a packet outside TCP tracking, checks never among them).
 */

const MS = 1_000_000n;

/** A client connection as evidence: who, and how long since its last payload (a request's age). */
export interface ClientEvidence {
  address: string;
  port: number;
  /** Since the client's last payload (in flight: the request's age), ms. */
  ageMs: number;
}

/** A top talker as evidence: a client seen within the idle timeout, how much it sent and since when. */
export interface TalkerEvidence {
  address: string;
  /** Its last source port; null for a protocol without ports. */
  port: number | null;
  protocol: WakeProtocol;
  /** Connections it opened, and packets it sent outside TCP connection tracking, over `overMs`. */
  connections: number;
  packets: number;
  /** From its first to its last connection or packet in its slot, ms. */
  overMs: number;
  /** Since its last connection or packet, ms. */
  ageMs: number;
}

/** How many top talkers a recent-traffic reason names. */
export const TOP_TALKERS_NAMED = 3;

export type AwakeReason =
  /**
   * It had traffic within its idle timeout: the idle clock is still running. `lastClient`: the tracked
   * connection whose packet came last; `topTalkers`: the busiest clients seen within the idle timeout
   * (connections and packets), named even when their connections have closed.
   */
  | { kind: 'recent-traffic'; idleForMs: number; idleTimeoutMs: number; lastClient: ClientEvidence | null; topTalkers: TalkerEvidence[] }
  /** `minAwake` (or the 3 s kept for a client's SYN retransmission) since its last wake. */
  | { kind: 'min-awake'; leftMs: number; minAwakeMs: number }
  /** Requests whose answer is not out yet. */
  | { kind: 'in-flight'; clients: ClientEvidence[] }
  /** Policy `connections`: client connections still open. */
  | { kind: 'open-connection'; clients: ClientEvidence[] }
  /** A health check talking to the instance itself (a sleep waits for its answer). */
  | { kind: 'check-in-flight'; clients: ClientEvidence[] }
  /** The busy guard's last finding: still computing or doing block I/O. */
  | { kind: 'busy'; detail: BusyDetail }
  | { kind: 'measuring' }
  /** It must never sleep (a check the stub cannot answer). */
  | { kind: 'never-sleeps'; detail: string }
  /** Its Nomad client is stopping, restarting or signalling its task: awake until that is done. */
  | { kind: 'nomad-task-event'; event: string; message: string | undefined; stopping: boolean }
  /** Its connections could not be read: never taken for "nothing in flight". */
  | { kind: 'connections-unreadable'; message: string }
  /** Its wake waits for room in the node budget. */
  | { kind: 'budget-queued'; sinceMs: number }
  /** Dry run: it is awake only because it is rehearsed; it would be asleep since then. */
  | { kind: 'dry-run'; wouldSleepSinceMs: number };

/** What the explanation is read from: the instance's connections (doze_conns), its top talkers (doze_talkers) and its last packet now. */
export interface AwakeEvidence {
  nowNs: bigint;
  lastSeenNs: bigint;
  connections: readonly Connection[];
  /** This instance's talkers (none when its table could not be read). */
  talkers?: readonly Talker[];
}

const msSince = (nowNs: bigint, thenNs: bigint) => Math.max(0, Math.round(Number(nowNs - thenNs) / 1e6));

/** The talkers seen within the idle timeout, busiest first (then the most recent). */
function topTalkers(talkers: readonly Talker[], nowNs: bigint, idleTimeoutMs: number): TalkerEvidence[] {
  const since = nowNs - BigInt(idleTimeoutMs) * MS;
  return talkers
    .filter((t) => t.lastNs > since)
    .sort((a, b) => b.connections + b.packets - (a.connections + a.packets) || Number(b.lastNs - a.lastNs))
    .slice(0, TOP_TALKERS_NAMED)
    .map((t) => ({
      address: t.address, port: t.port ?? null, protocol: t.protocol, connections: t.connections, packets: t.packets,
      overMs: msSince(t.lastNs, t.firstNs), ageMs: msSince(nowNs, t.lastNs),
    }));
}

function client(c: Connection, nowNs: bigint): ClientEvidence {
  const since = c.clientPayloadNs > 0n ? c.clientPayloadNs : c.lastNs;
  return { address: c.clientAddr, port: c.clientPort, ageMs: Math.max(0, Math.round(Number(nowNs - since) / 1e6)) };
}

/** Oldest first: the longest-waiting request is the one to look at. */
function oldestFirst(list: ClientEvidence[]): ClientEvidence[] {
  return list.sort((a, b) => b.ageMs - a.ageMs);
}

/** Every reason `instance` is awake now, the strongest first; empty when nothing holds it (it sleeps at its next check). */
export function explainAwake(instance: ReadonlyInstance, evidence: AwakeEvidence): AwakeReason[] {
  const { nowNs, connections } = evidence;
  const reasons: AwakeReason[] = [];
  if (instance.state === 'waking' && instance.queuedSinceMs !== undefined) return [{ kind: 'budget-queued', sinceMs: instance.queuedSinceMs }];
  if (instance.state !== 'running') return [];
  if (instance.rehearsal.current) return [{ kind: 'dry-run', wouldSleepSinceMs: instance.rehearsal.current.sinceMs }];
  // What forbids a sleep outright (a check the stub cannot answer, a Nomad task event), else the last check's hold.
  const forbidden = instance.sleepHeldBy;
  if (forbidden?.kind === 'never-sleeps' || forbidden?.kind === 'nomad-task-event') reasons.push(forbidden);
  const mine = connections.filter((c) => c.instanceAddr === instance.key);
  const policy = instance.config.idlePolicy;
  if (policy !== 'traffic') {
    const inFlight = mine.filter(isRequestInFlight).map((c) => client(c, nowNs));
    if (inFlight.length > 0) reasons.push({ kind: 'in-flight', clients: oldestFirst(inFlight) });
  }
  if (policy === 'connections') {
    const open = mine.filter((c) => isOpen(c) && !isRequestInFlight(c)).map((c) => client(c, nowNs));
    if (open.length > 0) reasons.push({ kind: 'open-connection', clients: oldestFirst(open) });
  }
  const held = instance.heldBy;
  if (held?.kind === 'busy') reasons.push({ kind: 'busy', detail: held.detail });
  else if (held?.kind === 'measuring') reasons.push({ kind: 'measuring' });
  else if (held?.kind === 'nomad-task-event' && forbidden?.kind !== 'nomad-task-event') reasons.push(held);
  else if (held?.kind === 'connections-unreadable') reasons.push({ kind: 'connections-unreadable', message: held.message });
  const minUntil = minAwakeUntilNs(instance);
  if (nowNs < minUntil) reasons.push({ kind: 'min-awake', leftMs: Math.round(Number(minUntil - nowNs) / 1e6), minAwakeMs: instance.minAwakeMs });
  const last = lastActivityNs(instance, evidence.lastSeenNs);
  const idleForMs = Math.max(0, Math.round(Number(nowNs - last) / 1e6));
  if (nowNs < last + BigInt(instance.config.idleTimeout) * MS) {
    // The last talker: the client connection whose packet came last (checks are not traffic).
    const talker = mine.filter((c) => !isCheckInFlight(c) && c.lastNs > 0n).sort((a, b) => Number(b.lastNs - a.lastNs))[0];
    reasons.push({
      kind: 'recent-traffic', idleForMs, idleTimeoutMs: instance.config.idleTimeout,
      lastClient: talker ? { address: talker.clientAddr, port: talker.clientPort, ageMs: Math.round(Number(nowNs - talker.lastNs) / 1e6) } : null,
      topTalkers: topTalkers(evidence.talkers ?? [], nowNs, instance.config.idleTimeout),
    });
  }
  const checks = mine.filter(isCheckInFlight).map((c) => client(c, nowNs));
  if (checks.length > 0) reasons.push({ kind: 'check-in-flight', clients: oldestFirst(checks) });
  return reasons;
}

/**
 * Why each awake (or queued) instance is awake, from one connections read and one talkers read (of
 * the awake instances' keys); last-seen times as the detector last refreshed them. Talkers are
 * evidence for a reason, not one: a failed read of them names none, and the reasons stand.
 */
export async function whyAwake(instances: readonly ReadonlyInstance[], source: TrafficSource): Promise<Map<string, AwakeReason[]>> {
  const awake = instances.filter((i) => i.state === 'running' || i.state === 'waking');
  if (awake.length === 0) return new Map();
  const [connections, talkers] = await Promise.all([
    source.connections(),
    source.talkersOf(awake.map((i) => i.key)).catch(() => new Map<string, Talker[]>()),
  ]);
  const nowNs = monotonicNs();
  return new Map(awake.map((i) => [i.id, explainAwake(i, { nowNs, lastSeenNs: i.lastSeenNs, connections, talkers: talkers.get(i.key) ?? [] })]));
}
