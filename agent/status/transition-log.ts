import type { Detector } from '../detector/detector.js';
import type { InstanceState } from '../detector/states.js';

export interface TransitionRecord {
  seq: number;
  at: string;
  instance: string;
  from: InstanceState;
  to: InstanceState;
  reason: string;
}

/** The recent transitions, for the status page's timeline (`GET /api/transitions?after=SEQ`). */
export class TransitionLog {
  private readonly records: TransitionRecord[] = [];
  private seq = 0;

  constructor(detector: Detector, private readonly keep = 200) {
    detector.on('transition', (e) => {
      this.records.push({ seq: ++this.seq, at: new Date(e.at).toISOString(), instance: e.instance.id, from: e.from, to: e.to, reason: e.reason });
      if (this.records.length > this.keep) this.records.shift();
    });
  }

  after(seq: number): TransitionRecord[] {
    return this.records.filter((r) => r.seq > seq);
  }
}
