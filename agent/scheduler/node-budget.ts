import type { Logger } from '../shared/log.js';
import { chooseVictims, type BudgetLimits, type BudgetMember } from './budget.js';
import { Deadline } from '../shared/deadline.js';

/*
 * The node budget's queue and eviction: before a wake, the least recently used awake instances
 * are put to sleep until the waking one fits; when none can sleep, the wake waits for room in a
 * bounded queue. The decisions are budget.ts's pure functions; the detector owns the instances
 * and does the sleeping, through the narrow BudgetPort (as it does for the wake signals).
 */

/** `pacedWakeTimeout` (ms) bounds how long a paced mass wake waits for room (fault-back-gate.ts). */
export type NodeBudgetLimits = BudgetLimits & { maxQueued: number; pacedWakeTimeout?: number };

/** What the node budget needs of the detector. */
export interface BudgetPort {
  /** Every managed instance as the budget weighs it, read now. */
  members(): Promise<BudgetMember[]>;
  /** Puts an awake instance to sleep to make room for `forId`; whether it slept. */
  evict(id: string, forId: string): Promise<boolean>;
  /** How many wakes wait for room now. */
  queued(): number;
  /** The wake of `id` starts (since when, epoch ms) or stops (undefined) waiting for room. */
  setQueued(id: string, sinceMs: number | undefined): void;
}

/** How a wake's wait for room ended: it fits, or it goes ahead over budget (never hurt a request). */
export type RoomOutcome = 'fits' | 'over-budget';

export class NodeBudget {
  private readonly roomWaiters = new Set<() => void>();

  constructor(readonly limits: NodeBudgetLimits, private readonly port: BudgetPort, private readonly log: Logger) {}

  /**
   * Before `incoming` wakes, put the least recently used awake instances to sleep until it fits
   * (never one within min_awake or serving a request). When none can sleep, wait for room in a
   * bounded queue, up to the wake deadline; then the wake goes ahead over budget.
   */
  async makeRoom(incoming: { id: string; memory: number; wakeTimeoutMs: number }): Promise<RoomOutcome> {
    const { limits, port } = this;
    const deadline = new Deadline(`making room for ${incoming.id}`, incoming.wakeTimeoutMs);
    let queued = false;
    try {
      while (!deadline.expired) {
        const members = await port.members();
        const victims = chooseVictims(limits, members, { id: incoming.id, memory: incoming.memory });
        if (victims?.length === 0) return 'fits';
        if (victims) {
          const results = await Promise.all(victims.map((v) => port.evict(v.id, incoming.id)));
          if (results.every(Boolean)) continue;
        }
        if (!queued) {
          if (port.queued() >= limits.maxQueued) break;
          queued = true;
          port.setQueued(incoming.id, Date.now());
          this.log.info({ instance: incoming.id }, 'wake waits for room in the node budget');
        }
        await this.waitForRoom(Math.min(deadline.remainingMs(), 250));
      }
      this.log.warn({ instance: incoming.id }, 'node budget: nothing could sleep in time; waking over budget');
      return 'over-budget';
    } finally {
      port.setQueued(incoming.id, undefined);
    }
  }

  /** What the budget would do for `incoming` among `members` (a dry run's would-be wake): nothing moves. */
  rehearse(members: BudgetMember[], incoming: { id: string; memory: number }): { outcome: 'fits' } | { outcome: 'evicts'; victims: string[] } | { outcome: 'waits' } {
    const victims = chooseVictims(this.limits, members, incoming);
    if (victims === undefined) return { outcome: 'waits' };
    return victims.length === 0 ? { outcome: 'fits' } : { outcome: 'evicts', victims: victims.map((v) => v.id) };
  }

  /** Which of `candidates` could each wake now without putting anything to sleep, from one read (early-thaw.ts). */
  async whoFitsNow(candidates: ReadonlyArray<{ id: string; memory: number }>): Promise<Set<string>> {
    if (candidates.length === 0) return new Set();
    const members = await this.port.members();
    return new Set(candidates.filter((c) => chooseVictims(this.limits, members, c)?.length === 0).map((c) => c.id));
  }

  /** Something slept, failed or left: a queued wake looks again at once. */
  signalRoom(): void {
    for (const waiter of [...this.roomWaiters]) waiter();
  }

  private waitForRoom(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.roomWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(ms, 1));
      this.roomWaiters.add(done);
    });
  }
}
