import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { Connection, InstanceCounters } from '../sources/bpf-records.js';
import { monotonicNs } from '../shared/clock.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { BusySampler } from './busy-sampler.js';
import type { IdleVerdict } from './idle-decision.js';
import type { ManagedInstance } from './managed-instance.js';
import { describeIdle, type ConnectionsUnreadable } from './reasons.js';
import { baselineOf, type TrafficBaseline } from './state-handoff.js';

/*
 * One pass of the detector's idle clock over the instances that are due: the connection map it
 * reads once for all of them, and what each instance's verdict does.
 */

const MS = 1_000_000n;

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
