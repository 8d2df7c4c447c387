import type { Detector } from '../detector/detector.js';
import type { InstanceState } from '../detector/states.js';

export interface TransitionRecord {
  seq: number;
  at: string;
  instance: string;
  from: InstanceState;
  to: InstanceState;
  reason: string;
  /** Dry run: a sleep it would have taken (to `sleeping`) or the wake that would have ended it (to `running`); its real state stayed `running`. */
  rehearsed?: true;
}

export interface TransitionLogLimits {
  /** How far back the status page's timeline reaches. */
  windowMs: number;
  /** Per instance: one that flaps keeps its latest transitions and cannot crowd out the others. */
  perInstance: number;
  /** All instances together: bounds memory on a node with many instances. */
  total: number;
}

export const TIMELINE_WINDOW_MS = 60 * 60 * 1000;
const DEFAULT_LIMITS: TransitionLogLimits = { windowMs: TIMELINE_WINDOW_MS, perInstance: 600, total: 20_000 };

/**
 * The transitions of the last hour, for the status page's per-instance timeline and its list of
 * recent transitions (`GET /api/transitions?after=SEQ`). Bounded by age, per instance and in all.
 */
export class TransitionLog {
  private records: TransitionRecord[] = [];
  private readonly perInstance = new Map<string, number>();
  private seq = 0;
  private readonly limits: TransitionLogLimits;

  constructor(detector: Detector, limits: Partial<TransitionLogLimits> = {}, private readonly now = () => Date.now()) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    detector.on('transition', (e) => this.add({ at: new Date(e.at).toISOString(), instance: e.instance.id, from: e.from, to: e.to, reason: e.reason }));
    detector.on('rehearsed', (e) => {
      const [from, to]: [InstanceState, InstanceState] = e.kind === 'would-sleep' ? ['running', 'sleeping'] : ['sleeping', 'running'];
      this.add({ at: new Date(e.at).toISOString(), instance: e.instance.id, from, to, reason: `dry run: ${e.reason}`, rehearsed: true });
    });
  }

  add(record: Omit<TransitionRecord, 'seq'>): void {
    this.records.push({ seq: ++this.seq, ...record });
    const n = (this.perInstance.get(record.instance) ?? 0) + 1;
    this.perInstance.set(record.instance, n);
    if (n > this.limits.perInstance || this.records.length > this.limits.total || Date.parse(this.records[0]!.at) < this.now() - this.limits.windowMs) this.prune();
  }

  after(seq: number): TransitionRecord[] {
    this.prune();
    return this.records.filter((r) => r.seq > seq);
  }

  /** Drops records older than the window, then the oldest of any instance over its share, then the oldest overall. */
  private prune(): void {
    const oldest = this.now() - this.limits.windowMs;
    let kept = this.records.filter((r) => Date.parse(r.at) >= oldest);
    const counts = new Map<string, number>();
    for (const r of kept) counts.set(r.instance, (counts.get(r.instance) ?? 0) + 1);
    if ([...counts.values()].some((n) => n > this.limits.perInstance)) {
      const skip = new Map([...counts].map(([id, n]) => [id, Math.max(0, n - this.limits.perInstance)]));
      kept = kept.filter((r) => {
        const left = skip.get(r.instance)!;
        if (left === 0) return true;
        skip.set(r.instance, left - 1);
        return false;
      });
    }
    if (kept.length > this.limits.total) kept = kept.slice(kept.length - this.limits.total);
    this.records = kept;
    this.perInstance.clear();
    for (const r of kept) this.perInstance.set(r.instance, (this.perInstance.get(r.instance) ?? 0) + 1);
  }
}
