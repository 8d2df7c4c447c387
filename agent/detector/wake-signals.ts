import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { BpfInstanceState, type WakeEvent, type WakePacket } from '../sources/bpf-records.js';
import { monotonicNs } from '../shared/clock.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { ManagedInstance, ReadonlyInstance } from './managed-instance.js';

/*
 * How a sleeper learns of its traffic: the tc program's pushed wake events, a rescan of the
 * kernel's instance states when events may have been lost, and the watchdog that reads the
 * sleepers' counters for traffic no event announced. The detector owns the instances and the
 * wakes; this module only decides that a wake is due (or that a first response came).
 */

const MS = 1_000_000n;

/**
 * The wake watchdog: while anything sleeps, one timer for all sleepers reads their counters
 * this often. A packet counted for a sleeper that no wake event announced within
 * WAKE_EVENT_GRACE_MS (a lost or stolen perf event, a reader restart) wakes it all the same.
 * The event path answers in ~1 ms (packet to Node, p99), so the grace never races a live event.
 */
export const WATCHDOG_INTERVAL_MS = 100;
export const WAKE_EVENT_GRACE_MS = 50;
/**
 * A watchdog wake counts as a missed event only when no event for that traffic arrives within
 * this. Measured under load (bench/soak.ts, 2 cores at load ~15): events reached the agent up to
 * 320 ms after their packet, so the 50 ms grace woke some sleepers before their own event came;
 * those events were late, not lost, and counting them would raise a false alarm.
 */
export const LATE_EVENT_MS = 2000;

/** How the wake-event path has fared: what the status page and the log say about it. */
export interface WakeEventHealth {
  /** Times events may have been lost (kernel drops, the reader restarting) and states were rescanned. */
  gaps: number;
  lastGap: { reason: string; atMs: number } | undefined;
  /** Sleepers woken by the watchdog whose wake event never came (within LATE_EVENT_MS). */
  missed: number;
  /** Sleepers woken by the watchdog whose wake event came after all, later than the grace. */
  late: number;
}

/** One instance's wake timing, kept here (never on the instance): what the signals compare events with. */
interface WakeTiming {
  /** When its last sleep began (monotonic ns, before the map said pausing): a wake event stamped earlier is stale. */
  sleepStartNs: bigint;
  /** Its packet counter when its sleep was decided: traffic past it must wake it (the watchdog's baseline). */
  packetsAtSleep: bigint | undefined;
  /** A packet arrived while pausing: the sleep must be reversed as soon as it completes. */
  requested: boolean;
  /** When the pending wake's first packet was seen (bpf clock), for doze_wake_seconds. */
  eventNs: bigint | undefined;
  /** That first packet as its wake event described it (why it woke); set and cleared with eventNs. */
  packet: WakePacket | undefined;
  /** The signalling packet of the last traffic wake, until the tc program reports its first response. */
  signalNs: bigint | undefined;
  /** The wake-event reader thawed it at the pending wake's event (early-thaw.ts): when. */
  thawedAtNs: bigint | undefined;
  /**
   * Its first response came before the wake it answers had started (thawed at the event, the app
   * can answer before the agent has begun its part): reported once that wake ends.
   */
  earlyFirstResponseMs: number | undefined;
}

/** What the wake-signal path needs of the detector. */
export interface WakeSignalTarget {
  /** The managed instance with this traffic key, if any. */
  instance(key: string): ManagedInstance | undefined;
  /** The instances asleep now (not being removed). */
  sleepers(): ManagedInstance[];
  wake(instance: ManagedInstance, reason: string, eventNs?: bigint, packet?: WakePacket): void;
  /** The tc program stamped this wake's first payload to a client, `ms` after its signalling packet. */
  firstResponse(instance: ManagedInstance, ms: number): void;
  /** The watchdog woke it and its event never came. */
  missed(instance: ManagedInstance): void;
  /** The detector is not deciding (before start, after stop): the watchdog stays disarmed. */
  stopped(): boolean;
}

export class WakeSignals {
  readonly health: WakeEventHealth = { gaps: 0, lastGap: undefined, missed: 0, late: 0 };
  private timer: NodeJS.Timeout | undefined;
  /** Sleepers the watchdog woke, each waiting for its wake event to come late (else counted as missed). */
  private readonly watchdogWakes = new Map<ReadonlyInstance, { timer: NodeJS.Timeout; atNs: bigint }>();
  private readonly timings = new WeakMap<ReadonlyInstance, WakeTiming>();
  /** Each sleeper's max_sleep timer: it wakes the instance when max_sleep runs out. */
  private readonly maxSleepTimers = new Map<ManagedInstance, NodeJS.Timeout>();

  constructor(
    private readonly source: TrafficSource,
    private readonly log: Logger,
    private readonly target: WakeSignalTarget,
    /** Test knob: drop this many wake events, as a lost perf record would. */
    private dropEvents = 0,
  ) {
    source.onWake((event) => this.onEvent(event));
    source.onGap((reason) => void this.rescan(reason));
  }

  private timing(instance: ReadonlyInstance): WakeTiming {
    let t = this.timings.get(instance);
    if (!t) this.timings.set(instance, (t = { sleepStartNs: 0n, packetsAtSleep: undefined, requested: false, eventNs: undefined, packet: undefined, signalNs: undefined, thawedAtNs: undefined, earlyFirstResponseMs: undefined }));
    return t;
  }

  /** Its sleep begins (taken before the map says pausing): any event of this sleep is stamped later, an older one is stale. */
  sleepStarts(instance: ManagedInstance): void {
    const t = this.timing(instance);
    t.requested = false;
    t.sleepStartNs = monotonicNs();
  }

  /** Any packet counted past `packets` must end in a wake: the watchdog's baseline. */
  asleepFrom(instance: ManagedInstance, packets: bigint | undefined): void {
    this.timing(instance).packetsAtSleep = packets;
  }

  /** It fell asleep: with max_sleep set, wake it when that runs out. */
  armMaxSleep(instance: ManagedInstance): void {
    const maxSleep = instance.config.maxSleep;
    if (maxSleep === undefined) return;
    this.disarmMaxSleep(instance);
    const timer = setTimeout(() => void this.target.wake(instance, `max_sleep: asleep for ${maxSleep} ms`), maxSleep);
    timer.unref();
    this.maxSleepTimers.set(instance, timer);
  }

  /** It wakes (or leaves management): its max_sleep timer stops. */
  disarmMaxSleep(instance: ManagedInstance): void {
    clearTimeout(this.maxSleepTimers.get(instance));
    this.maxSleepTimers.delete(instance);
  }

  /** Whether a packet came while it was pausing (the sleep must be reversed once it completes). */
  wakeRequested(instance: ReadonlyInstance): boolean {
    return this.timing(instance).requested;
  }

  /** A wake is asked for: the first packet's stamp, if a packet asked, times it. */
  noteWakeEvent(instance: ManagedInstance, eventNs: bigint | undefined, packet?: WakePacket): void {
    const t = this.timing(instance);
    if (eventNs !== undefined && t.eventNs === undefined) {
      t.eventNs = eventNs;
      t.packet = packet;
    }
  }

  /** The packet that started the pending wake, if its event named one (read as the wake starts). */
  wakePacket(instance: ManagedInstance): WakePacket | undefined {
    return this.timing(instance).packet;
  }

  /** When the reader thawed it for the pending wake, if it did (read as the wake ends). */
  thawedEarlyAtNs(instance: ReadonlyInstance): bigint | undefined {
    return this.timing(instance).thawedAtNs;
  }

  /** When its current sleep began (monotonic ns, before the map said pausing). */
  sleepStartedNs(instance: ReadonlyInstance): bigint {
    return this.timing(instance).sleepStartNs;
  }

  /** The wake starts: when it counts from (its first packet, else now). Only a wake a packet started has a first response to time. */
  wakeStarts(instance: ManagedInstance): bigint {
    const t = this.timing(instance);
    t.signalNs = t.eventNs;
    return t.eventNs ?? monotonicNs();
  }

  /** The wake (or the undoing of a sleep) is over; a failed wake has no first response to wait for. */
  wakeEnded(instance: ManagedInstance, failed = false): void {
    const t = this.timing(instance);
    const early = t.earlyFirstResponseMs;
    t.earlyFirstResponseMs = undefined;
    if (early !== undefined && !failed && t.signalNs !== undefined) {
      t.signalNs = undefined;
      this.target.firstResponse(instance, early);
    }
    t.eventNs = undefined;
    t.packet = undefined;
    t.thawedAtNs = undefined;
    t.requested = false;
    if (failed) t.signalNs = undefined;
  }

  /** Traffic for an instance still pausing: its sleep must be reversed as soon as it completes. */
  wakeAfterPause(instance: ManagedInstance, eventNs?: bigint, packet?: WakePacket): void {
    const t = this.timing(instance);
    t.requested = true;
    if (eventNs !== undefined && t.eventNs === undefined) {
      t.eventNs = eventNs;
      t.packet = packet;
    }
  }

  /**
   * The tc program saw the instance's first payload to a client after the wake signalled at
   * `wakeNs`. It may come before the wake is declared done (a thawed process answers while the
   * agent still updates its maps). A stamp for another wake (one whose sleep was undone, or an
   * earlier one) is not this wake's answer.
   */
  private onFirstResponse(instance: ManagedInstance, wakeNs: bigint, replyNs: bigint): void {
    // The record names the packet that signalled its wake. That is this wake's when the wake came
    // by its event; a wake the watchdog or a rescan made (the event late or lost) knows no such
    // packet, so a record whose signal came during the current sleep is taken as this wake's.
    const t = this.timing(instance);
    if (replyNs < wakeNs) return;
    if (t.eventNs === wakeNs && t.signalNs !== wakeNs) {
      // The wake this packet asked for has not started yet: its answer waits for it.
      t.earlyFirstResponseMs = Number(replyNs - wakeNs) / 1e6;
      return;
    }
    const thisWake = t.signalNs === wakeNs || (wakeNs >= t.sleepStartNs && (instance.state === 'waking' || instance.state === 'running'));
    if (!thisWake) return;
    t.signalNs = undefined;
    this.target.firstResponse(instance, Number(replyNs - wakeNs) / 1e6);
  }

  /** Whether a watchdog wake of this instance still waits for its late event. */
  awaitsLateEvent(instance: ReadonlyInstance): boolean {
    return this.watchdogWakes.has(instance);
  }

  /** The instance leaves management: its max_sleep timer stops and its watchdog wake is no longer counted. */
  forget(instance: ManagedInstance): void {
    this.disarmMaxSleep(instance);
    this.forgetWatchdogWake(instance);
  }

  private forgetWatchdogWake(instance: ManagedInstance): void {
    clearTimeout(this.watchdogWakes.get(instance)?.timer);
    this.watchdogWakes.delete(instance);
  }

  /** Disarms the watchdog (the detector is stopping). */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onEvent(event: WakeEvent): void {
    if (this.dropEvents > 0) {
      this.dropEvents--;
      this.log.warn({ instance: event.instanceAddr }, 'test knob: dropping a wake event');
      return;
    }
    const instance = this.target.instance(event.instanceAddr);
    if (!instance) return;
    if (event.answersWakeNs !== undefined) return this.onFirstResponse(instance, event.answersWakeNs, event.tsNs);
    const watchdogWake = this.watchdogWakes.get(instance);
    if (watchdogWake && event.tsNs <= watchdogWake.atNs) {
      // The event for the traffic the watchdog already woke it for: late, not lost.
      this.forgetWatchdogWake(instance);
      this.health.late++;
      this.log.info({ instance: instance.id, lateMs: Number(monotonicNs() - event.tsNs) / 1e6 }, 'a wake event came after the watchdog had woken its instance (late, not lost)');
    }
    // The agent's own thaw follows a failed early one and reports whatever made the write fail.
    if (event.thaw?.kind === 'failed') this.log.warn({ instance: instance.id, errno: event.thaw.errno }, 'early thaw at the wake event failed; waking the usual way');
    // From an earlier sleep (late): this sleep's own traffic raises its own event.
    if (event.tsNs < this.timing(instance).sleepStartNs) return;
    // Only a sleeper is armed: a thaw of this sleep is this wake's resumption.
    if (event.thaw?.kind === 'thawed' && instance.state === 'sleeping') this.timing(instance).thawedAtNs ??= event.thaw.atNs;
    if (instance.state === 'pausing') {
      this.wakeAfterPause(instance, event.tsNs, event.packet);
    } else if (instance.state === 'sleeping') {
      this.target.wake(instance, 'traffic', event.tsNs, event.packet);
    }
  }

  /** After lost events: any sleeper the kernel marked as signalled gets woken. */
  private async rescan(reason: string): Promise<void> {
    this.health.gaps++;
    this.health.lastGap = { reason, atMs: Date.now() };
    this.log.warn({ reason }, 'wake events may have been lost; rescanning instance states');
    const states = await this.source.states().catch(() => new Map<string, BpfInstanceState>());
    for (const [ip, state] of states) {
      const instance = this.target.instance(ip);
      if (instance && state === BpfInstanceState.signalled) {
        if (instance.state === 'pausing') this.wakeAfterPause(instance);
        else this.target.wake(instance, 'traffic (found by rescan)');
      }
    }
  }

  /** Arms the watchdog's one timer while anything sleeps (a no-op when it is armed already). */
  watch(): void {
    if (this.target.stopped() || this.timer) return;
    this.timer = setTimeout(() => void this.watchdog(), WATCHDOG_INTERVAL_MS);
    this.timer.unref();
  }

  /**
   * A sleeper whose counters moved past the sleep's baseline has had traffic; if no wake is
   * under way for it WAKE_EVENT_GRACE_MS after the last packet, its wake event was lost: wake
   * it now and count it. One batched read per interval for all sleepers, none when none sleep.
   */
  private async watchdog(): Promise<void> {
    this.timer = undefined;
    // Disarmed when nothing sleeps; the next sleep arms it again.
    const sleepers = this.target.sleepers();
    if (sleepers.length === 0 || this.target.stopped()) return;
    try {
      const counters = await this.source.countersOf(sleepers.map((i) => i.key));
      const nowNs = monotonicNs();
      for (const instance of sleepers) {
        const c = counters.get(instance.key);
        const { packetsAtSleep } = this.timing(instance);
        if (!c || packetsAtSleep === undefined || c.packets <= packetsAtSleep) continue;
        if (instance.state !== 'sleeping' || instance.wakesPending > 0) continue;
        if (nowNs - c.lastSeenNs < BigInt(WAKE_EVENT_GRACE_MS) * MS) continue; // its event may still be on the way
        this.log.info({ instance: instance.id, packets: String(c.packets - packetsAtSleep) }, 'traffic reached a sleeper and no wake event came yet: waking it (watchdog)');
        this.awaitLateEvent(instance, nowNs);
        this.target.wake(instance, 'traffic (wake event missed; found by the watchdog)', c.lastSeenNs);
      }
    } catch (error) {
      this.log.warn({ err: messageOf(error) }, 'the wake watchdog could not read counters; retrying');
    } finally {
      this.watch();
    }
  }

  /** Counts the watchdog's wake as a missed event unless the event turns up within LATE_EVENT_MS. */
  private awaitLateEvent(instance: ManagedInstance, atNs: bigint): void {
    this.forgetWatchdogWake(instance);
    const timer = setTimeout(() => {
      this.watchdogWakes.delete(instance);
      this.health.missed++;
      this.log.warn({ instance: instance.id }, 'traffic reached a sleeper but no wake event came: the watchdog woke it');
      this.target.missed(instance);
    }, LATE_EVENT_MS);
    timer.unref();
    this.watchdogWakes.set(instance, { timer, atNs });
  }
}
