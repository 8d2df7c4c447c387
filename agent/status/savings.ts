import type { Detector } from '../detector/detector.js';
import type { ReadonlyInstance } from '../detector/managed-instance.js';

/*
 * What sleeping has saved, per instance and for the node: the share of the last hour and the
 * last day spent asleep, the memory given back over time (byte-seconds, integrated from the
 * measured freed memory: awake resident minus resident now, agent/status/memory-view.ts), and
 * the wakes of the last day with their first-response p50 and p99. Kept from the detector's
 * events (no timer of its own); the memory integral advances whenever someone looks (a status
 * request, a scrape) and at each wake, holding the last measured level in between. Dry-run
 * instances save nothing: their would-be figures are their own (agent/detector/rehearsal.ts).
 */

export const HOUR_MS = 60 * 60 * 1000;
export const DAY_MS = 24 * HOUR_MS;
/** Per instance: a day of sleeps every ~10 s fits; past it the oldest spans go (the day's share then undercounts). */
const MAX_SPANS = 10_000;
/** Per instance: first responses kept for the day's percentiles. */
const MAX_RESPONSES = 10_000;

export interface SavingsWindow {
  /** Time asleep in the window (ms), and the time it was managed in it (ms). */
  asleepMs: number;
  managedMs: number;
  /** asleepMs / managedMs, 0 when it was not managed in the window. */
  asleepShare: number;
}

export interface WakeFigures {
  /** Wakes in the last day. */
  count: number;
  /** First packet → first response byte over the last day's traffic wakes (ms), null with none. */
  firstResponseP50Ms: number | null;
  firstResponseP99Ms: number | null;
}

export interface SavingsView {
  lastHour: SavingsWindow;
  lastDay: SavingsWindow;
  /** Time asleep since managed (s): doze_asleep_seconds_total. */
  asleepSecondsTotal: number;
  /** Measured memory freed × time since managed: doze_memory_freed_byte_seconds_total. */
  memoryFreedByteSeconds: number;
  /** Measured memory freed right now (bytes). */
  memoryFreedBytesNow: number;
  wakes: WakeFigures;
}

interface Ledger {
  managedSinceMs: number;
  /** Asleep spans, oldest first; the last may be open (end undefined). */
  spans: Array<{ start: number; end: number | undefined }>;
  asleepMsClosed: number;
  freedByteSeconds: number;
  /** The last measured freed level (bytes) and when the integral was last advanced. */
  freedBytes: number;
  settledAtMs: number;
  wakesAt: number[];
  responses: Array<{ at: number; ms: number }>;
}

/** The `q` quantile (0..1) of `values` by nearest rank; null when empty. */
export function quantile(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function overlap(span: { start: number; end: number | undefined }, from: number, to: number): number {
  return Math.max(0, Math.min(span.end ?? to, to) - Math.max(span.start, from));
}

export class SavingsLedger {
  private readonly ledgers = new Map<string, Ledger>();

  /**
   * `freedBytes`: an instance's measured memory given back now (awake minus resident), undefined
   * when it cannot be measured; `now`: the clock (Date.now; fake timers in the tests).
   */
  constructor(private readonly detector: Detector, private readonly freedBytes: (i: ReadonlyInstance) => number | undefined, private readonly now = () => Date.now()) {
    detector.on('transition', ({ instance, from, to, at }) => {
      const l = this.of(instance);
      if (to === 'sleeping') {
        this.settle(l, at);
        l.spans.push({ start: at, end: undefined });
        l.freedBytes = 0;
        if (l.spans.length > MAX_SPANS) l.spans.splice(0, l.spans.length - MAX_SPANS);
      } else if (from === 'sleeping') {
        const open = l.spans.at(-1);
        if (open && open.end === undefined) {
          this.settle(l, at);
          open.end = at;
          l.asleepMsClosed += at - open.start;
          l.freedBytes = 0;
        }
      }
    });
    detector.on('woke', (instance) => {
      const l = this.of(instance);
      l.wakesAt.push(this.now());
      this.prune(l);
    });
    detector.on('firstResponse', (instance, seconds) => {
      const l = this.of(instance);
      l.responses.push({ at: this.now(), ms: seconds * 1000 });
      if (l.responses.length > MAX_RESPONSES) l.responses.splice(0, l.responses.length - MAX_RESPONSES);
    });
  }

  private of(instance: ReadonlyInstance): Ledger {
    let l = this.ledgers.get(instance.id);
    if (!l || l.managedSinceMs !== instance.managedSinceMs) {
      // A new instance under an old id (re-added) starts its own ledger.
      l = { managedSinceMs: instance.managedSinceMs, spans: [], asleepMsClosed: 0, freedByteSeconds: 0, freedBytes: 0, settledAtMs: this.now(), wakesAt: [], responses: [] };
      this.ledgers.set(instance.id, l);
    }
    return l;
  }

  /** Advances the memory integral to `atMs` at the last measured level. */
  private settle(l: Ledger, atMs: number): void {
    if (atMs > l.settledAtMs) l.freedByteSeconds += (l.freedBytes * (atMs - l.settledAtMs)) / 1000;
    l.settledAtMs = Math.max(l.settledAtMs, atMs);
  }

  private prune(l: Ledger): void {
    const dayAgo = this.now() - DAY_MS;
    while (l.wakesAt.length > 0 && l.wakesAt[0]! < dayAgo) l.wakesAt.shift();
    while (l.responses.length > 0 && l.responses[0]!.at < dayAgo) l.responses.shift();
    while (l.spans.length > 1 && (l.spans[0]!.end ?? Infinity) < dayAgo) l.spans.shift();
  }

  /** Takes the sleepers' measured freed memory as the level from now on (call after MemoryTracker.refresh()). */
  measure(): void {
    const now = this.now();
    for (const i of this.detector.instances()) {
      const l = this.of(i);
      this.settle(l, now);
      l.freedBytes = i.state === 'sleeping' ? this.freedBytes(i) ?? 0 : 0;
    }
  }

  private window(l: Ledger, now: number, length: number): SavingsWindow {
    const from = now - length;
    const asleepMs = l.spans.reduce((sum, s) => sum + overlap(s, from, now), 0);
    const managedMs = Math.max(0, now - Math.max(from, l.managedSinceMs));
    return { asleepMs, managedMs, asleepShare: managedMs === 0 ? 0 : asleepMs / managedMs };
  }

  view(instance: ReadonlyInstance): SavingsView {
    const l = this.of(instance);
    const now = this.now();
    this.prune(l);
    this.settle(l, now);
    const open = l.spans.at(-1);
    const openMs = open && open.end === undefined ? now - open.start : 0;
    const day = l.responses.map((r) => r.ms);
    return {
      lastHour: this.window(l, now, HOUR_MS),
      lastDay: this.window(l, now, DAY_MS),
      asleepSecondsTotal: (l.asleepMsClosed + openMs) / 1000,
      memoryFreedByteSeconds: l.freedByteSeconds,
      memoryFreedBytesNow: l.freedBytes,
      wakes: { count: l.wakesAt.length, firstResponseP50Ms: quantile(day, 0.5), firstResponseP99Ms: quantile(day, 0.99) },
    };
  }

  /** The node: windows summed over instances (share of instance-time asleep), all first responses pooled. */
  node(): SavingsView {
    const views = this.detector.instances().map((i) => this.view(i));
    const sum = (pick: (v: SavingsView) => SavingsWindow): SavingsWindow => {
      const asleepMs = views.reduce((s, v) => s + pick(v).asleepMs, 0);
      const managedMs = views.reduce((s, v) => s + pick(v).managedMs, 0);
      return { asleepMs, managedMs, asleepShare: managedMs === 0 ? 0 : asleepMs / managedMs };
    };
    const responses = this.detector.instances().flatMap((i) => this.ledgers.get(i.id)?.responses.map((r) => r.ms) ?? []);
    return {
      lastHour: sum((v) => v.lastHour),
      lastDay: sum((v) => v.lastDay),
      asleepSecondsTotal: views.reduce((s, v) => s + v.asleepSecondsTotal, 0),
      memoryFreedByteSeconds: views.reduce((s, v) => s + v.memoryFreedByteSeconds, 0),
      memoryFreedBytesNow: views.reduce((s, v) => s + v.memoryFreedBytesNow, 0),
      wakes: { count: views.reduce((s, v) => s + v.wakes.count, 0), firstResponseP50Ms: quantile(responses, 0.5), firstResponseP99Ms: quantile(responses, 0.99) },
    };
  }

  /** Forgets instances no longer managed (called before a scrape, as the metrics' sync does). */
  sync(): void {
    const current = new Set(this.detector.instances().map((i) => i.id));
    for (const id of this.ledgers.keys()) if (!current.has(id)) this.ledgers.delete(id);
  }
}
