import type { NodeBudgetLimits } from '../scheduler/node-budget.js';
import type { WakePacket } from '../sources/bpf-records.js';
import type { Detector } from './detector.js';
import type { ReadonlyInstance } from './managed-instance.js';
import type { InstanceState } from './states.js';

/*
 * The detector's contract with the rooms around it: the hooks it calls around a sleep
 * (agent/sleep-guards.ts), and the events it emits (status/, metrics).
 */

export interface TransitionEvent {
  instance: ReadonlyInstance;
  from: InstanceState;
  to: InstanceState;
  reason: string;
  at: number;
  /** A wake (to `waking`) a packet caused: that packet, as the tc program saw it. */
  packet?: WakePacket;
}

/**
 * What must happen around a sleep besides the runtime: the health-check
 * redirect goes up before the pause and comes down before `running`.
 */
export interface SleepHooks {
  beforeSleep(instance: ReadonlyInstance): Promise<void>;
  /** The instance is awake again (sleep aborted, or woken): undo beforeSleep. */
  awake(instance: ReadonlyInstance): Promise<void>;
  wakeFailed(instance: ReadonlyInstance, reason: string): Promise<void>;
  /** True when health-check connections must be drained before a pause. */
  guardChecks: boolean;
}

export const NO_HOOKS: SleepHooks = { beforeSleep: async () => {}, awake: async () => {}, wakeFailed: async () => {}, guardChecks: false };

/** Dry run: a sleep the instance would have taken, or the wake that would have ended it. */
export interface RehearsedEvent {
  instance: ReadonlyInstance;
  kind: 'would-sleep' | 'would-wake';
  reason: string;
  /** Epoch ms it would have happened (a would-wake: its first packet). */
  at: number;
}

export interface DetectorEvents {
  rehearsed: [RehearsedEvent];
  transition: [TransitionEvent];
  /** Woken: how long from its first packet (or the request) to resumed, and who thawed it. */
  woke: [ReadonlyInstance, number, ThawedBy];
  /** A traffic wake's first packet → the instance's first payload byte to a client (seconds). */
  firstResponse: [ReadonlyInstance, number];
  wakeFailed: [ReadonlyInstance, string];
  slept: [ReadonlyInstance];
  /** The watchdog found traffic for a sleeper that no wake event announced. */
  wakeEventMissed: [ReadonlyInstance];
  /** The stub answered a health check of a sleeping instance. */
  checkAnswered: [ReadonlyInstance];
}

/** Who resumed the workload: the wake-event reader at the event (early-thaw.ts), or the agent. */
export type ThawedBy = 'event-reader' | 'agent';

export interface DetectorOptions<Hooks extends SleepHooks = SleepHooks> {
  /** The hooks, or how to make them from the detector (the agent's guards read its instances). */
  hooks?: Hooks | ((detector: Detector<Hooks>) => Hooks);
  budget?: NodeBudgetLimits;
  /** Agent-wide dry run (config `dryRun`): every instance rehearsed, none frozen. */
  dryRun?: boolean;
  /** Thaw at the event (early-thaw.ts); default on where the source can (bench/ compares both paths). */
  earlyThaw?: boolean;
  /** Test knob: drop this many wake events, as a lost perf record would (the watchdog must catch them). */
  dropWakeEvents?: number;
}
