import type { InstanceCounters } from '../sources/bpf-records.js';
import type { Logger } from '../shared/log.js';
import { messageOf } from '../shared/errors.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { BusySampler } from './busy-sampler.js';
import { holdRecheckMs } from './idle-decision.js';
import { firstCheckNs, type ManagedInstance, type ReadonlyInstance } from './managed-instance.js';
import { describeHold } from './reasons.js';
import type { RehearsedRoom, WouldSleep } from './rehearsal-record.js';
import { trafficSince, type TrafficBaseline } from './state-handoff.js';
import { WATCHDOG_INTERVAL_MS } from './wake-signals.js';

/*
 * Dry run (config `dryRun`, meta `doze.dry_run`, agent-wide `dryRun`): the instance goes through
 * the detector's decisions (idle, the policy's in-flight and open connections, the busy guard,
 * max_awake, max_sleep) as if managed, but where a real one would pause, it is only noted as
 * asleep: no state-map change, no check redirect, no runtime call. It stays `running`. The tc
 * program raises no wake event for an instance the map says is awake, so a would-be sleeper's
 * counters are read every WATCHDOG_INTERVAL_MS (one batched read with the other due instances);
 * its would-be wake is stamped with its first packet's time, as a real wake counts from its event.
 * With a node budget, each would-be wake also asks what the budget would have done (fit, put
 * others to sleep first, or wait for room), weighing every rehearsed instance as managed.
 */

const MS = 1_000_000n;

/** What the rehearsal needs of the detector. */
export interface RehearsalPort {
  source: TrafficSource;
  log: Logger;
  busy: BusySampler;
  /** A would-sleep or would-wake, for the transition log's timeline. */
  noted(instance: ManagedInstance, kind: 'would-sleep' | 'would-wake', reason: string, atMs: number): void;
  /** With a node budget: what it would do for this would-be wake, every rehearsed instance weighed as managed. */
  rehearseRoom?(instance: ManagedInstance): Promise<RehearsedRoom>;
}

/**
 * In place of a sleep (inside the instance's transition queue): the same checks as a real sleep
 * (busy guard, traffic since the decision), then a would-sleep span instead of a pause. Sets the
 * instance's next check; whether it would have slept.
 */
export async function rehearseSleep(instance: ManagedInstance, port: RehearsalPort, decided: TrafficBaseline | undefined, reason: string, guardBusy: boolean, nowNs: bigint): Promise<boolean> {
  if (instance.rehearsal.current) return false;
  if (guardBusy) {
    const busy = port.busy.reason(instance, nowNs);
    if (busy) {
      instance.heldBy = busy;
      port.busy.noteBusy(instance, busy);
      instance.nextCheckNs = nowNs + BigInt(holdRecheckMs(instance.config.idleTimeout)) * MS;
      port.log.info({ instance: instance.id, reason: describeHold(busy) }, 'dry run: would not sleep yet');
      return false;
    }
  }
  const counters = await port.source.counter(instance.key);
  if (decided !== undefined && trafficSince(decided, counters)) {
    instance.nextCheckNs = nowNs + BigInt(instance.config.idleTimeout) * MS;
    return false;
  }
  const span: WouldSleep = { sinceNs: nowNs, sinceMs: Date.now(), packets: counters?.packets ?? 0n, reason, residentBytes: undefined };
  instance.rehearsal.current = span;
  instance.rehearsal.sleeps++;
  instance.heldBy = undefined;
  port.busy.quiet(instance);
  instance.nextCheckNs = nowNs + BigInt(WATCHDOG_INTERVAL_MS) * MS;
  // Measured as it would fall asleep: what a memory-freeing runtime would give back.
  void instance.runtime.memory?.().then((usage) => {
    if (usage && instance.rehearsal.current === span) span.residentBytes = usage.residentBytes;
  }).catch((error) => port.log.debug({ instance: instance.id, err: messageOf(error) }, 'dry run: memory not measurable'));
  port.log.info({ instance: instance.id, reason }, 'dry run: would sleep');
  port.noted(instance, 'would-sleep', reason, span.sinceMs);
  return true;
}

/**
 * A would-be sleeper's due check: traffic past its sleep's counters (or max_sleep running out)
 * ends the span with the wake it would have made, and its idle clock restarts from there.
 */
export function watchRehearsal(instance: ManagedInstance, port: RehearsalPort, c: InstanceCounters | undefined, nowNs: bigint): void {
  const span = instance.rehearsal.current!;
  let wakeNs: bigint | undefined;
  let why = 'traffic';
  if (c && c.packets > span.packets) wakeNs = c.lastSeenNs > span.sinceNs ? c.lastSeenNs : nowNs;
  else if (instance.config.maxSleep !== undefined && nowNs - span.sinceNs >= BigInt(instance.config.maxSleep) * MS) {
    wakeNs = span.sinceNs + BigInt(instance.config.maxSleep) * MS;
    why = `max_sleep: asleep for ${instance.config.maxSleep} ms`;
  }
  if (wakeNs === undefined) {
    instance.nextCheckNs = nowNs + BigInt(WATCHDOG_INTERVAL_MS) * MS;
    return;
  }
  endSpan(instance, wakeNs);
  instance.rehearsal.wakes++;
  if (c) instance.lastSeenNs = c.lastSeenNs;
  instance.awakeSinceNs = wakeNs;
  port.busy.restart(instance, nowNs);
  instance.nextCheckNs = firstCheckNs(instance, wakeNs);
  const atMs = Date.now() - Number(nowNs - wakeNs) / 1e6;
  port.log.info({ instance: instance.id, reason: why }, 'dry run: would wake');
  port.noted(instance, 'would-wake', why, atMs);
  // Its span is closed now, so it counts as awake among the members, as a waking one does.
  void port.rehearseRoom?.(instance).then((room) => {
    instance.rehearsal.noteRoom(room);
    port.log.info({ instance: instance.id, room: room.outcome, ...(room.outcome === 'evicts' ? { victims: room.victims } : {}) }, 'dry run: the node budget would have');
  }).catch((error) => port.log.debug({ instance: instance.id, err: messageOf(error) }, 'dry run: the budget could not be weighed'));
}

/** Closes the span under way at `endNs` (a would-be wake, or the dry run ending). */
export function endSpan(instance: ManagedInstance, endNs: bigint): void {
  const r = instance.rehearsal;
  if (!r.current) return;
  r.asleepMs = r.asleepMsAt(endNs);
  r.freedByteSeconds = r.freedByteSecondsAt(endNs);
  r.current = undefined;
}

/** Whether an instance is only rehearsed (never frozen): its own config, or the agent-wide dry run. */
export function isDryRun(instance: ReadonlyInstance, agentWide: boolean): boolean {
  return agentWide || instance.config.dryRun;
}
