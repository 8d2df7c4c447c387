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
 * budget without making room. With a budget the reader may thaw one sleeper before the agent says
 * again, so two packets to two sleepers never both pass a budget that has room for one.
 */

export interface EarlyThawPort {
  /** Every managed instance (the armed ones are among the sleepers). */
  instances(): ReadonlyInstance[];
  isDryRun(instance: ReadonlyInstance): boolean;
  /** When its current sleep began (monotonic ns): the reader ignores older events for it. */
  sleepStartedNs(instance: ReadonlyInstance): bigint;
  /** With a node budget: whether it could wake now without putting anything to sleep. */
  fitsBudget?(instance: ReadonlyInstance): Promise<boolean>;
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
   * Looks again at every instance after a transition (or an instance left). Coalesced: a refresh
   * under way runs once more when it ends, so the last state is always the one armed.
   */
  refresh(): void {
    if (!this.control) return;
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
    // Everything that stopped sleeping (or left) first: a stale arm never meets its next sleep.
    for (const instance of [...this.armed.keys()]) {
      if (!wanted.has(instance) || this.armed.get(instance) !== this.port.sleepStartedNs(instance)) this.disarm(instance);
    }
    if (this.port.fitsBudget) {
      for (const instance of [...wanted.keys()]) {
        if (!(await this.port.fitsBudget(instance))) {
          wanted.delete(instance);
          this.disarm(instance);
        }
      }
      // States may have moved while the budget was read: the next refresh (queued by that
      // transition) looks again; until then the reader thaws at most one.
      control.setRoom(wanted.size > 0 ? 1 : 0);
    } else {
      control.setRoom(-1);
    }
    for (const [instance, thaw] of wanted) {
      if (this.armed.has(instance) || instance.state !== 'sleeping' || instance.removed) continue;
      const sinceNs = this.port.sleepStartedNs(instance);
      control.arm(instance.key, { ...thaw, sinceNs });
      this.armed.set(instance, sinceNs);
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

  /** The reader fired (or failed) its one-shot arm for it. */
  fired(instance: ReadonlyInstance): void {
    this.armed.delete(instance);
  }
}
