import type { Logger } from '../shared/log.js';
import { busyWindowMs, guardIdle, judgeBusy, keepSamples, type UsageSample } from './busy-guard.js';
import { holdRecheckMs, type IdleVerdict } from './idle-decision.js';
import { lastActivityNs, type ReadonlyInstance } from './managed-instance.js';
import { describeHold, type HoldReason } from './reasons.js';

/*
 * The busy guard's readings: each instance's recent CPU and block I/O, taken at idle checks and
 * wakes only (never on a timer of their own), and the verdicts judged from them. The detector
 * asks; this module keeps the samples (the instance itself never holds them) and decides,
 * through the pure functions of busy-guard.ts, whether the workload is still working.
 */

const MS = 1_000_000n;

interface Readings {
  /** Oldest first: the baseline a window back and every younger one (keepSamples). */
  samples: UsageSample[];
  /** Said once in the log: its CPU cannot be read, so the busy guard does not cover it. */
  unavailableLogged: boolean;
  /** Since when the guard has been postponing its sleep (epoch ms). */
  busySinceMs: number | undefined;
}

export class BusySampler {
  private readonly readings = new WeakMap<ReadonlyInstance, Readings>();

  constructor(private readonly log: Logger) {}

  private of(instance: ReadonlyInstance): Readings {
    let r = this.readings.get(instance);
    if (!r) this.readings.set(instance, (r = { samples: [], unavailableLogged: false, busySinceMs: undefined }));
    return r;
  }

  /**
   * Busy guard: an idle verdict waits while the workload still computes (CPU over the
   * last idle window above busyCpu) or does block I/O. Counters are read only here, for
   * an instance whose deadline is due; an active or held one gets at most one reading
   * per window, so the decision to come has a baseline about a window old.
   */
  guard(instance: ReadonlyInstance, verdict: IdleVerdict, nowNs: bigint): IdleVerdict {
    if (instance.config.busyCpu <= 0 || !instance.runtime.usage) return verdict;
    if (verdict.kind === 'active' || verdict.kind === 'held') {
      const newest = this.of(instance).samples.at(-1);
      if (!newest || nowNs - newest.atNs >= BigInt(busyWindowMs(instance.config.idleTimeout)) * MS) this.sample(instance, nowNs);
      if (verdict.kind === 'active') this.quiet(instance);
      return verdict;
    }
    if (verdict.kind !== 'idle' || verdict.reason.kind === 'max-awake' || !this.sample(instance, nowNs)) return verdict;
    return guardIdle(verdict, {
      nowNs,
      lastActivityNs: lastActivityNs(instance),
      maxAwakeMs: instance.config.maxAwake,
      recheckMs: holdRecheckMs(instance.config.idleTimeout),
      state: judgeBusy(this.of(instance).samples, busyWindowMs(instance.config.idleTimeout), instance.config.busyCpu),
    });
  }

  /** The busy reason right now (a fresh reading against the kept ones), or undefined when quiet or unknown. */
  reason(instance: ReadonlyInstance, nowNs: bigint): HoldReason | undefined {
    if (instance.config.busyCpu <= 0 || !this.sample(instance, nowNs)) return undefined;
    const state = judgeBusy(this.of(instance).samples, busyWindowMs(instance.config.idleTimeout), instance.config.busyCpu);
    return state.kind === 'busy' ? { kind: 'busy', detail: state.detail } : undefined;
  }

  /** Takes one reading of the instance's CPU and I/O; false when its runtime cannot give one. */
  sample(instance: ReadonlyInstance, nowNs: bigint): boolean {
    if (instance.config.busyCpu <= 0) return false;
    const r = this.of(instance);
    const reading = instance.runtime.usage?.();
    if (!reading) {
      if (instance.runtime.usage && !r.unavailableLogged) {
        r.unavailableLogged = true;
        const source = instance.runtime.usageSource?.();
        this.log.info({ instance: instance.id, runtime: instance.runtime.kind, reason: source?.kind === 'unavailable' ? source.reason : undefined }, 'busy guard: the CPU of this instance cannot be read now (status: busyGuard); it sleeps on traffic alone until it can');
      }
      return false;
    }
    r.samples = keepSamples(r.samples, { atNs: nowNs, ...reading }, busyWindowMs(instance.config.idleTimeout));
    return true;
  }

  /** It woke: readings from before the sleep say nothing of now, so measuring starts afresh. */
  restart(instance: ReadonlyInstance, nowNs: bigint): void {
    this.of(instance).samples = [];
    this.sample(instance, nowNs);
  }

  /** The guard postpones its sleep; said once per busy spell. */
  noteBusy(instance: ReadonlyInstance, reason: HoldReason): void {
    const r = this.of(instance);
    if (r.busySinceMs === undefined) {
      r.busySinceMs = Date.now();
      this.log.info({ instance: instance.id, reason: describeHold(reason) }, 'sleep postponed: the instance is still working');
    }
  }

  /** It is active (or asleep): no busy spell under way. */
  quiet(instance: ReadonlyInstance): void {
    this.of(instance).busySinceMs = undefined;
  }

  /** How long the guard has been postponing its sleep (ms), if it is. */
  busyForMs(instance: ReadonlyInstance): number | undefined {
    const since = this.readings.get(instance)?.busySinceMs;
    return since === undefined ? undefined : Date.now() - since;
  }
}
