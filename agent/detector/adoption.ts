import type { Logger } from '../shared/log.js';
import { BpfInstanceState } from '../sources/bpf-records.js';
import { markAdoptedAsleep, type HandoffResult } from './state-handoff.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { RuntimeObservedState } from '../runtimes/runtime.js';
import type { ReadonlyInstance } from './managed-instance.js';
import { Deadline } from '../shared/deadline.js';

/*
 * Adoption after a restart: what an earlier agent (one that crashed, or was killed) left of an
 * instance the detector takes on. This module only finds out; the detector adopts a sleeper as
 * its own (pausing, then sleeping, woken at once if traffic came meanwhile).
 */

/** What adopting a sleeper asks of the detector: its transitions, its sleep hooks, the watchdog's baseline. */
export interface AdoptionSteps {
  transition(to: 'pausing' | 'sleeping', reason: string): void;
  beforeSleep(): Promise<void>;
  asleepFrom(packets: bigint | undefined): void;
}

/**
 * Left asleep by a previous agent (crash): it is ours to wake. Adopted as sleeping, its checks on
 * the stub. The state goes from what `left` read to SLEEPING by compare-and-swap: found SIGNALLED
 * (then or since), traffic came while no agent ran and the caller wakes it (docs/state-handoff.md, I8).
 */
export async function adoptAsleep(instance: ReadonlyInstance, source: TrafficSource, steps: AdoptionSteps, left: BpfInstanceState | undefined): Promise<HandoffResult> {
  steps.transition('pausing', 'adopted a paused workload after restart');
  await steps.beforeSleep();
  steps.asleepFrom((await source.counter(instance.key))?.packets);
  const handoff = await markAdoptedAsleep(source, instance.key, left);
  steps.transition('sleeping', 'adopted');
  return handoff;
}

/** How often the runtime is inspected again while it is found mid-transition. */
const SETTLE_POLL_MS = 20;

/** Awake, or asleep; a sleeper whose traffic arrived while no agent ran is `signalled`. */
export type LeftBehind = { asleep: false } | { asleep: true; signalled: boolean; state: BpfInstanceState | undefined };

/** What an earlier agent left of this instance: its runtime's settled state and the kernel's mark of traffic. */
export async function leftBehind(instance: ReadonlyInstance, source: TrafficSource, log: Logger): Promise<LeftBehind> {
  const observed = await settledState(instance, log);
  const bpfState = await source.state(instance.key);
  if (observed !== 'asleep' && observed !== 'transitioning') return { asleep: false };
  return { asleep: true, signalled: bpfState === BpfInstanceState.signalled, state: bpfState };
}

/**
 * The runtime's state, once a transition an earlier agent started (and died in)
 * has finished: a VM owner still saving or restoring settles on sleeping or
 * running, and is adopted as what it became, not as asleep half way. Bounded by
 * the instance's deadlines; still transitioning past them, it is adopted as
 * asleep (the next request resumes it).
 */
async function settledState(instance: ReadonlyInstance, log: Logger): Promise<RuntimeObservedState> {
  const deadline = new Deadline(`settling ${instance.id}`, Math.max(instance.config.pauseTimeout, instance.config.wakeTimeout));
  let observed = await instance.runtime.inspect();
  while (observed === 'transitioning' && !deadline.expired) {
    await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
    observed = await instance.runtime.inspect();
  }
  if (observed === 'transitioning') log.warn({ instance: instance.id }, 'the runtime is still transitioning; adopting it as asleep');
  return observed;
}
