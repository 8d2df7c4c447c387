import type { BudgetLimits } from './budget.js';

/*
 * Paced mass wakes. An agent stop, a drain or a restart of Nomad's allocations wakes many
 * sleepers at once; a reclaimed sleeper's memory is in swap and faults back as it runs, so
 * waking them all at once asks the node for all of it at once (with memory oversubscribed,
 * that is an OOM kill). The gate lets them fault back under the node budget instead: at most
 * `maxActive` of them, and at most `maxActiveMemory` MiB of what they will fault back (their
 * memory before the reclaim), at once, most recently used first. A wake that waits past its
 * deadline goes ahead over budget (never leave an instance frozen for a budget) and is reported.
 * The decisions are pure (admit()); the class holds the queue and the timers.
 */

export interface PacedWake {
  id: string;
  /** MiB it will fault back (its memory before the reclaim). */
  faultBackMiB: number;
  /** Last inbound packet or wake (bpf clock): the most recent goes first. */
  lastActivityNs: bigint;
}

/** Which of the waiting (in order) may start now, beside the ones faulting back: a prefix of them, in order. */
export function admit(limits: BudgetLimits, faulting: PacedWake[], waiting: PacedWake[]): PacedWake[] {
  const started: PacedWake[] = [];
  let count = faulting.length;
  let memory = faulting.reduce((sum, w) => sum + w.faultBackMiB, 0);
  for (const next of waiting) {
    // One alone always fits: a sleeper larger than the budget must still wake.
    const alone = count === 0;
    if (!alone && limits.maxActive !== undefined && count + 1 > limits.maxActive) break;
    if (!alone && limits.maxActiveMemory !== undefined && memory + next.faultBackMiB > limits.maxActiveMemory) break;
    started.push(next);
    count++;
    memory += next.faultBackMiB;
  }
  return started;
}

/** Most recently used first; ties by id, so the order is stable. */
export function wakeOrder(a: PacedWake, b: PacedWake): number {
  if (a.lastActivityNs !== b.lastActivityNs) return a.lastActivityNs > b.lastActivityNs ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export interface PacedTicket {
  /** It waited past its deadline and went ahead over budget. */
  overBudget: boolean;
  waitedMs: number;
  /** It has faulted back (or given up on it): room for the next. Idempotent. */
  release(): void;
}

/** What the status API and the log say about paced wakes. */
export interface PacingReport {
  /** Paced wakes started (in budget or past their deadline). */
  started: number;
  waiting: number;
  faulting: number;
  /** The most that were faulting back at once, and their MiB. */
  peakFaulting: number;
  peakFaultingMiB: number;
  /** The latest wakes that could not start within budget by their deadline (woken over budget then). */
  overDeadline: { id: string; waitedMs: number; atMs: number }[];
}

interface Waiter {
  wake: PacedWake;
  /** Traffic reached it while it waited: it goes before every unpromoted one. */
  promoted: boolean;
  enteredMs: number;
  timer: NodeJS.Timeout;
  start: (overBudget: boolean) => void;
}

const KEEP_LATE = 20;

export class FaultBackGate {
  private readonly waiting: Waiter[] = [];
  private readonly faulting = new Map<string, PacedWake>();
  private pumpTimer: NodeJS.Timeout | undefined;
  readonly report: PacingReport = { started: 0, waiting: 0, faulting: 0, peakFaulting: 0, peakFaultingMiB: 0, overDeadline: [] };

  constructor(private readonly limits: BudgetLimits) {}

  /** Resolves when `wake` may start: in budget and in order, or at `deadlineMs` (epoch ms) over budget. */
  enter(wake: PacedWake, deadlineMs: number): Promise<PacedTicket> {
    return new Promise((resolve) => {
      const enteredMs = Date.now();
      const waiter: Waiter = {
        wake,
        promoted: false,
        enteredMs,
        timer: setTimeout(() => waiter.start(true), Math.max(0, deadlineMs - enteredMs)),
        start: (overBudget) => {
          clearTimeout(waiter.timer);
          const at = this.waiting.indexOf(waiter);
          if (at < 0) return; // started already
          this.waiting.splice(at, 1);
          const waitedMs = Date.now() - enteredMs;
          if (overBudget) {
            this.report.overDeadline = [...this.report.overDeadline, { id: wake.id, waitedMs, atMs: Date.now() }].slice(-KEEP_LATE);
          }
          resolve(this.begin(wake, overBudget, waitedMs));
        },
      };
      waiter.timer.unref();
      this.waiting.push(waiter);
      // Wakes asked for together (an agent stop asks for all of them in one turn) are ordered
      // together: the first to ask is not the first to go.
      if (!this.pumpTimer) this.pumpTimer = setTimeout(() => this.pump(), 0);
    });
  }

  /** Traffic reached a waiting sleeper: a request waits on it now, so it goes first. */
  promote(id: string): void {
    const waiter = this.waiting.find((w) => w.wake.id === id);
    if (!waiter || waiter.promoted) return;
    waiter.promoted = true;
    this.pump();
  }

  isWaiting(id: string): boolean {
    return this.waiting.some((w) => w.wake.id === id);
  }

  private begin(wake: PacedWake, overBudget: boolean, waitedMs: number): PacedTicket {
    this.faulting.set(wake.id, wake);
    this.report.started++;
    this.refresh();
    let released = false;
    return {
      overBudget,
      waitedMs,
      release: () => {
        if (released) return;
        released = true;
        if (this.faulting.get(wake.id) === wake) this.faulting.delete(wake.id);
        this.pump();
      },
    };
  }

  private pump(): void {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = undefined;
    this.waiting.sort((a, b) => (a.promoted !== b.promoted ? (a.promoted ? -1 : 1) : wakeOrder(a.wake, b.wake)));
    const admitted = admit(this.limits, [...this.faulting.values()], this.waiting.map((w) => w.wake));
    for (const wake of admitted) this.waiting.find((w) => w.wake === wake)?.start(false);
    this.refresh();
  }

  private refresh(): void {
    const faulting = [...this.faulting.values()];
    this.report.waiting = this.waiting.length;
    this.report.faulting = faulting.length;
    this.report.peakFaulting = Math.max(this.report.peakFaulting, faulting.length);
    this.report.peakFaultingMiB = Math.max(this.report.peakFaultingMiB, faulting.reduce((sum, w) => sum + w.faultBackMiB, 0));
  }
}
