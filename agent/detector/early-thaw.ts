import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { EarlyThawControl } from '../sources/traffic-source.js';
import type { ReadonlyInstance } from './managed-instance.js';

/*
 * Thaw at the event: the wake-event reader (doze-maps, in C) thaws a sleeper the moment its wake
 * event arrives, before the event reaches Node, for the sleepers armed here. The agent's own wake
 * still follows (checks back to the instance, state, metrics): the early thaw only moves the
 * app's resumption from the end of that trip to its start. Armed only where a thaw is all a wake
 * would be at that moment: a plain freezer sleeper (Runtime.earlyThaw), woken by retry (hold mode
 * hands its held connections over, which only the agent can), not rehearsed, and within the node
 * budget without making room.
 *
 * The budget's room is the reader's to spend and the agent's to grant. Every event that changes
 * who may be awake (a transition, a wake starting, an instance coming or going) first takes the
 * room back at once (`hold`), then a refresh grants it again from one fresh read of the budget,
 * and only when nothing moved meanwhile and no wake is under way: so a sleeper is never thawed
 * with room another wake was given. With a budget the reader may thaw one sleeper before the agent
 * grants again; the grant counts the reader's thaws the agent has already seen, so a thaw whose
 * line is still in the pipe is not granted twice (sources/wake-events.ts).
 */

export interface EarlyThawPort {
  /** Every managed instance (the armed ones are among the sleepers). */
  instances(): ReadonlyInstance[];
  isDryRun(instance: ReadonlyInstance): boolean;
  /** When its current sleep began (monotonic ns): the reader ignores older events for it. */
  sleepStartedNs(instance: ReadonlyInstance): bigint;
  /**
   * With a node budget: from one read of the budget's members, which sleepers could wake now
   * without putting anything to sleep.
   */
  whoFitsBudget?(candidates: readonly ReadonlyInstance[]): Promise<Set<ReadonlyInstance>>;
  /** Wakes started and not yet ended (a wake waiting for room included). */
  wakesUnderWay(): number;
  /** The detector is not deciding (before start, while stopping): nothing is armed, nothing read. */
  stopped(): boolean;
}

export class EarlyThaws {
  /** Armed in the reader: the sleep each was armed for (its start), to re-arm a new sleep. */
  private readonly armed = new Map<ReadonlyInstance, bigint>();
  private refreshing: Promise<void> | undefined;
  private again = false;

  constructor(private readonly control: EarlyThawControl | undefined, private readonly port: EarlyThawPort, private readonly log: Logger) {}

  get enabled(): boolean {
    return this.control !== undefined;
  }

  /** Whether the reader would thaw it at its next wake event (status, tests). */
  isArmed(instance: ReadonlyInstance): boolean {
    return this.armed.has(instance);
  }

  /**
   * Something changed who may be awake (called synchronously, before anything else happens): the
   * budget's room is taken back, and `leaving` (an instance no longer asleep, or no longer
   * managed) is disarmed, both before the reader can act on another event. A refresh follows.
   */
  hold(leaving?: ReadonlyInstance): void {
    if (!this.control) return;
    if (this.port.whoFitsBudget) this.control.setRoom(0);
    if (leaving) this.disarm(leaving);
    this.refresh();
  }

  /**
   * Looks again at every instance. Coalesced: a refresh under way runs once more when it ends, so
   * the last state is always the one armed.
   */
  refresh(): void {
    if (!this.control) return;
    if (this.port.stopped()) {
      // An agent stopping wakes every sleeper itself (paced): no thaw to arm, no budget to read
      // on each of those wakes. Before start, adopted sleepers are armed once start() refreshes.
      this.control.setRoom(0);
      for (const instance of [...this.armed.keys()]) this.disarm(instance);
      return;
    }
    if (this.refreshing) {
      this.again = true;
      return;
    }
    this.refreshing = this.refreshOnce()
      .catch((error) => this.log.warn({ err: messageOf(error) }, 'early thaw: could not refresh the armed sleepers'))
      .finally(() => {
        this.refreshing = undefined;
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      });
  }

  /** Resolves once no refresh is under way (tests). */
  async settled(): Promise<void> {
    while (this.refreshing) await this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    const control = this.control!;
    const wanted = new Map<ReadonlyInstance, { file: string; value: string }>();
    for (const instance of this.port.instances()) {
      const thaw = this.eligible(instance);
      if (thaw) wanted.set(instance, thaw);
    }
    for (const instance of [...this.armed.keys()]) {
      if (!wanted.has(instance) || this.armed.get(instance) !== this.port.sleepStartedNs(instance)) this.disarm(instance);
    }
    if (this.port.whoFitsBudget) {
      const fits = await this.port.whoFitsBudget([...wanted.keys()]);
      for (const instance of [...wanted.keys()]) {
        if (fits.has(instance)) continue;
        wanted.delete(instance);
        this.disarm(instance);
      }
    }
    for (const [instance, thaw] of wanted) {
      if (this.armed.has(instance) || !this.eligible(instance)) continue;
      const sinceNs = this.port.sleepStartedNs(instance);
      if (control.arm(instance.key, { ...thaw, sinceNs })) this.armed.set(instance, sinceNs);
    }
    if (!this.port.whoFitsBudget) {
      control.setRoom(-1);
    } else if (!this.again && this.port.wakesUnderWay() === 0 && this.armed.size > 0) {
      // Nothing moved while the budget was read, and no wake waits for room: room for one.
      control.setRoom(1);
    }
  }

  private eligible(instance: ReadonlyInstance): { file: string; value: string } | undefined {
    if (instance.state !== 'sleeping' || instance.removed || instance.wake === 'hold' || this.port.isDryRun(instance)) return undefined;
    return instance.runtime.earlyThaw?.();
  }

  private disarm(instance: ReadonlyInstance): void {
    if (!this.armed.delete(instance)) return;
    this.control!.disarm(instance.key);
  }
}
