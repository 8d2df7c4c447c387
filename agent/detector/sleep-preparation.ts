import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { BpfInstanceState, InstanceCounters } from '../sources/bpf-records.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { SleepHooks } from './detector-contract.js';
import { holdRecheckMs, isCheckInFlight } from './idle-decision.js';
import { markPausing } from './state-handoff.js';
import type { ManagedInstance, ReadonlyInstance } from './managed-instance.js';

/**
 * What comes before a pause, once the detector has set an instance pausing: the map says
 * pausing, checks go to the stub, and the counters the abort check compares are read. It can
 * fail (doze-maps timing out under load, iptables): the detector then undoes the sleep, never
 * leaving it in pausing (the soak found 27 of 50 instances stranded so).
 */
export type SleepPreparation =
  | { kind: 'ready'; counters: InstanceCounters | undefined }
  /** Health checks already talking to the instance would hang on the frozen process. */
  | { kind: 'checks-in-flight'; count: number }
  /** The state was not AWAKE: SIGNALLED (a packet got there first; never swapped over), or something else. */
  | { kind: 'not-awake'; found: BpfInstanceState | undefined; signalled: boolean }
  | { kind: 'failed'; step: string; error: unknown };

export async function prepareSleep(instance: ReadonlyInstance, source: TrafficSource, hooks: SleepHooks): Promise<SleepPreparation> {
  let step = 'marking it pausing in the state map';
  try {
    // From here on any packet raises a wake event. A packet that came between the decision and
    // this point shows up in the counters read below (packets or last_seen): the detector aborts.
    const pausing = await markPausing(source, instance.key);
    if (pausing.kind !== 'swapped') return { kind: 'not-awake', found: pausing.kind === 'unexpected' ? pausing.found : undefined, signalled: pausing.kind === 'signalled' };
    // New checks go to the stub from here; one already talking to the
    // instance would hang on the frozen process, so wait for it instead.
    step = 'redirecting its checks';
    await hooks.beforeSleep(instance);
    step = 'reading its connections and counters';
    if (hooks.guardChecks) {
      const pending = (await source.connections()).filter((c) => c.instanceAddr === instance.key && isCheckInFlight(c));
      if (pending.length > 0) return { kind: 'checks-in-flight', count: pending.length };
    }
    return { kind: 'ready', counters: await source.counter(instance.key) };
  } catch (error) {
    return { kind: 'failed', step, error };
  }
}

/**
 * Why the detector undoes a sleep whose preparation did not come out ready, and when it looks
 * again (undefined: after a full idle timeout); a failed step is kept as the last error and logged.
 */
export function preparationAbort(instance: ManagedInstance, prepared: Exclude<SleepPreparation, { kind: 'ready' }>, log: Logger): { why: string; retryInMs?: number } {
  if (prepared.kind === 'checks-in-flight') {
    return { why: `${prepared.count} health check(s) in flight`, retryInMs: holdRecheckMs(instance.config.idleTimeout) };
  }
  if (prepared.kind === 'not-awake') {
    // SIGNALLED already (a packet for its slot's previous user, or one not yet consumed): never swapped over.
    return { why: prepared.signalled ? 'traffic arrived while deciding' : `the state map held ${String(prepared.found)}, not awake` };
  }
  const why = `${prepared.step} failed: ${messageOf(prepared.error)}`;
  instance.lastError = { message: why, atMs: Date.now() };
  log.warn({ instance: instance.id, err: messageOf(prepared.error) }, 'could not prepare the sleep; instance stays awake');
  return { why };
}
