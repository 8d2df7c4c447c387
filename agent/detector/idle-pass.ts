import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { Connection, InstanceCounters } from '../sources/bpf-records.js';
import { monotonicNs } from '../shared/clock.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { BusySampler } from './busy-sampler.js';
import { decideIdle, idleInputs, unreadableVerdict, type IdleVerdict } from './idle-decision.js';
import type { ManagedInstance } from './managed-instance.js';
import { describeIdle, type ConnectionsUnreadable } from './reasons.js';
import { watchRehearsal, type RehearsalPort } from './rehearsal.js';
import { baselineOf, type TrafficBaseline } from './state-handoff.js';

/*
 * One pass of the detector's idle clock over the instances that are due: the connection map it
 * reads once for all of them, and what each instance's verdict does.
 */

const MS = 1_000_000n;

/**
 * Decides each due instance from the one counters read: a would-be sleeper's rehearsal is watched
 * (agent/detector/rehearsal.ts), the rest get a verdict (the connection map read at most once, for
 * those whose policy needs it) that applyVerdict carries out through the detector's `sleep`.
 */
export async function passDue(
  due: readonly ManagedInstance[],
  counters: ReadonlyMap<string, InstanceCounters>,
  nowNs: bigint,
  port: RehearsalPort,
  sleep: (instance: ManagedInstance, decided: TrafficBaseline, reason: string, guardBusy: boolean) => Promise<boolean>,
): Promise<void> {
  let connections: Connection[] | ConnectionsUnreadable | undefined;
  for (const instance of due) {
    const c = counters.get(instance.key);
    if (instance.rehearsal.current) {
      watchRehearsal(instance, port, c, nowNs);
      continue;
    }
    let verdict = evaluate(instance, c, nowNs);
    if (verdict.kind === 'needs-connections') {
      connections ??= await readConnections(port.source, port.log);
      verdict = Array.isArray(connections)
        ? evaluate(instance, c, nowNs, connections.filter((conn) => conn.instanceAddr === instance.key))
        : unreadableVerdict(connections, nowNs, instance.config.idleTimeout);
    }
    applyVerdict(instance, port.busy.guard(instance, verdict, nowNs), c, port.busy, (decided, reason, guardBusy) => sleep(instance, decided, reason, guardBusy));
  }
}

/** Its idle verdict from its counters (kept on it for the status API), with its connections when its policy asks for them. */
function evaluate(instance: ManagedInstance, c: InstanceCounters | undefined, nowNs: bigint, connections?: Connection[]): IdleVerdict {
  instance.lastSeenNs = c?.lastSeenNs ?? 0n;
  instance.seenPackets = c?.packets ?? 0n;
  return decideIdle(idleInputs(instance, instance.lastSeenNs, nowNs), connections);
}

/** The connection map, or why it could not be read (never an empty list in its place). */
export async function readConnections(source: TrafficSource, log: Logger): Promise<Connection[] | ConnectionsUnreadable> {
  try {
    return await source.connections();
  } catch (error) {
    log.warn({ err: messageOf(error) }, 'reading connections failed; instances that need them stay awake for this decision');
    return { kind: 'connections-unreadable', message: messageOf(error) };
  }
}

/**
 * What a verdict does to its instance: its next check, what holds it awake, and for an idle one
 * the sleep (through the detector's own `sleep`, with the traffic baseline the abort check compares).
 */
export function applyVerdict(
  instance: ManagedInstance,
  verdict: IdleVerdict,
  c: InstanceCounters | undefined,
  busy: BusySampler,
  sleep: (decided: TrafficBaseline, reason: string, guardBusy: boolean) => Promise<boolean>,
): void {
  switch (verdict.kind) {
    case 'active':
      instance.heldBy = undefined;
      instance.nextCheckNs = verdict.recheckAtNs;
      return;
    case 'held':
      if (verdict.reason.kind === 'busy') busy.noteBusy(instance, verdict.reason);
      instance.heldBy = verdict.reason;
      instance.nextCheckNs = verdict.recheckAtNs;
      return;
    case 'idle': {
      instance.nextCheckNs = monotonicNs() + BigInt(instance.config.idleTimeout) * MS;
      const busyForMs = busy.busyForMs(instance);
      const reason = busyForMs === undefined || verdict.reason.kind !== 'quiet' ? verdict.reason : { ...verdict.reason, busyForMs };
      void sleep(baselineOf(c), describeIdle(reason), verdict.reason.kind !== 'max-awake');
      return;
    }
    case 'needs-connections':
      return;
  }
}
