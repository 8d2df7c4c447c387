import type { Detector, ThawedBy } from '../detector/detector.js';
import type { WakePacket } from '../sources/bpf-records.js';

/** One wake as the status page lists it: how long the runtime took, and the first response, once seen. */
export interface WakeRecord {
  seq: number;
  at: string;
  instance: string;
  reason: string;
  /** The packet that caused it (source, protocol, TCP flags, payload or not); null for a wake no packet's event named (operator, max_sleep, rescan). */
  packet: WakePacket | null;
  /** First packet (or request) → runtime resumed; null while waking or when it failed. */
  wakeMs: number | null;
  /** Who resumed it: the wake-event reader at the packet's event (thaw at the event), or the agent; null until woken. */
  thawedBy: ThawedBy | null;
  /** First packet → first response byte to a client, as the tc program saw it; null until then (or never, for wakes no packet started). */
  firstResponseMs: number | null;
  failed: string | null;
}

/** The latest wakes (`GET /api/wakes`), with both phases filled in as the detector reports them. */
export class WakeLog {
  private readonly records: WakeRecord[] = [];
  private seq = 0;

  constructor(detector: Detector, private readonly keep = 100) {
    detector.on('transition', (e) => {
      if (e.to !== 'waking') return;
      this.records.push({ seq: ++this.seq, at: new Date(e.at).toISOString(), instance: e.instance.id, reason: e.reason, packet: e.packet ?? null, wakeMs: null, thawedBy: null, firstResponseMs: null, failed: null });
      if (this.records.length > this.keep) this.records.shift();
    });
    detector.on('woke', (i, seconds, thawedBy) =>
      this.update(i.id, (r) => r.wakeMs === null && r.failed === null, (r) => {
        r.wakeMs = round(seconds * 1000);
        r.thawedBy = thawedBy;
      }));
    detector.on('wakeFailed', (i, why) => this.update(i.id, (r) => r.wakeMs === null && r.failed === null, (r) => (r.failed = why)));
    // The first response may come before the wake is declared done: it belongs to the latest wake either way.
    detector.on('firstResponse', (i, seconds) => this.update(i.id, (r) => r.firstResponseMs === null, (r) => (r.firstResponseMs = round(seconds * 1000))));
  }

  /** Changes the instance's latest wake, if it matches. Records change in place: a page polls with after=0. */
  private update(instance: string, matches: (r: WakeRecord) => boolean, change: (r: WakeRecord) => void): void {
    for (let n = this.records.length - 1; n >= 0; n--) {
      const r = this.records[n]!;
      if (r.instance !== instance) continue;
      if (matches(r)) change(r);
      return;
    }
  }

  list(): WakeRecord[] {
    return this.records.map((r) => ({ ...r, packet: r.packet && { ...r.packet, ...(r.packet.tcpFlags ? { tcpFlags: [...r.packet.tcpFlags] } : {}) } }));
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;
