import { EventEmitter } from 'node:events';
import { DozeError, messageOf, withDeadline } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { BpfInstanceState, monotonicNs, type Connection, type InstanceCounters } from '../sources/bpf-records.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { RuntimeObservedState } from '../runtimes/runtime.js';
import { busyWindowMs, guardIdle, judgeBusy, keepSamples } from './busy-guard.js';
import { decideIdle, holdRecheckMs, isCheckInFlight, isOpen, isRequestInFlight, type IdleVerdict } from './idle-decision.js';
import { chooseVictims, type BudgetLimits, type BudgetMember } from '../scheduler/budget.js';
import { describeKey, type ManagedInstance } from './managed-instance.js';
import { canTransition, type InstanceState } from './states.js';
import { WakeSignals, type WakeEventHealth } from './wake-signals.js';

const MS = 1_000_000n;

/** Sleepers whose runtime frees memory count what they still hold, measured (a reclaimed one about 0). */
async function measuredAsleepMiB(instances: ManagedInstance[]): Promise<Map<string, number>> {
  const held = new Map<string, number>();
  await Promise.all(
    instances
      .filter((i) => i.state === 'sleeping' && i.runtime.capabilities.freesMemory && i.runtime.memory)
      .map(async (i) => {
        const usage = await i.runtime.memory!().catch(() => undefined);
        if (usage) held.set(i.id, Math.ceil(usage.residentBytes / 2 ** 20));
      }),
  );
  return held;
}

/** How often add() re-inspects a runtime found mid-transition after a restart. */
const SETTLE_POLL_MS = 20;

export interface TransitionEvent {
  instance: ManagedInstance;
  from: InstanceState;
  to: InstanceState;
  reason: string;
  at: number;
}

/**
 * What must happen around a sleep besides the runtime: the health-check
 * redirect goes up before the pause and comes down before `running`.
 */
export interface SleepHooks {
  beforeSleep(instance: ManagedInstance): Promise<void>;
  /** The instance is awake again (sleep aborted, or woken): undo beforeSleep. */
  awake(instance: ManagedInstance): Promise<void>;
  wakeFailed(instance: ManagedInstance, reason: string): Promise<void>;
  /** True when health-check connections must be drained before a pause. */
  guardChecks: boolean;
}

export interface DetectorOptions {
  hooks?: SleepHooks;
  budget?: BudgetLimits & { maxQueued: number };
  /** Test knob: drop this many wake events, as a lost perf record would (the watchdog must catch them). */
  dropWakeEvents?: number;
}

const NO_HOOKS: SleepHooks = { beforeSleep: async () => {}, awake: async () => {}, wakeFailed: async () => {}, guardChecks: false };

export interface DetectorEvents {
  transition: [TransitionEvent];
  woke: [ManagedInstance, number];
  /** A traffic wake's first packet → the instance's first payload byte to a client (seconds). */
  firstResponse: [ManagedInstance, number];
  wakeFailed: [ManagedInstance, string];
  slept: [ManagedInstance];
  /** The watchdog found traffic for a sleeper that no wake event announced. */
  wakeEventMissed: [ManagedInstance];
}

/**
 * Drives every instance's state machine: reads counters only when some
 * instance's idle deadline is due (one timer for all, so cost follows active
 * instances), sleeps idle ones, and wakes sleepers on pushed wake events.
 */
export class Detector extends EventEmitter<DetectorEvents> {
  private readonly byId = new Map<string, ManagedInstance>();
  private readonly byKey = new Map<string, ManagedInstance>();
  /** Ids and traffic keys add() is taking on right now (between its first await and its end). */
  private readonly addingIds = new Set<string>();
  private readonly addingKeys = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  /** Until start(): instances are taken on but no idle clock runs (an agent still starting freezes nothing). */
  private stopped = true;

  private readonly hooks: SleepHooks;
  private readonly budget: (BudgetLimits & { maxQueued: number }) | undefined;
  private readonly roomWaiters = new Set<() => void>();
  get budgetLimits(): (BudgetLimits & { maxQueued: number }) | undefined {
    return this.budget;
  }

  /** Wakes that went ahead over budget because nothing could sleep in time (never hurt a request). */
  budgetOverruns = 0;
  /** Wake events, and the watchdog and rescans that stand in for the lost ones. */
  private readonly signals: WakeSignals;
  get wakeEvents(): WakeEventHealth {
    return this.signals.health;
  }

  constructor(private readonly source: TrafficSource, private readonly log: Logger, options: DetectorOptions = {}) {
    super();
    this.hooks = options.hooks ?? NO_HOOKS;
    const b = options.budget;
    this.budget = b && (b.maxActive !== undefined || b.maxActiveMemory !== undefined) ? b : undefined;
    this.signals = new WakeSignals(source, log, {
      instance: (key) => this.byKey.get(key),
      sleepers: () => this.instances().filter((i) => i.state === 'sleeping' && !i.removed),
      wake: (instance, reason, eventNs) => void this.wake(instance, reason, eventNs),
      firstResponse: (instance, wakeNs, replyNs) => this.onFirstResponse(instance, wakeNs, replyNs),
      missed: (instance) => this.emit('wakeEventMissed', instance),
      stopped: () => this.stopped,
    }, options.dropWakeEvents ?? 0);
  }

  instances(): ManagedInstance[] {
    return [...this.byId.values()];
  }

  get(id: string): ManagedInstance | undefined {
    return this.byId.get(id);
  }

  /**
   * Start managing an instance; adopts a workload left asleep by an earlier agent.
   * Refuses (throws) an id or traffic key it already holds or is taking on: the last line of
   * defence behind InstanceAdmission, which reserves both before it builds the runtime. A failed
   * add leaves nothing behind (no attached program, no tracked key, no map entry); the runtime
   * stays its caller's to close.
   */
  async add(instance: ManagedInstance): Promise<void> {
    const { id, key } = instance;
    if (this.byId.has(id) || this.addingIds.has(id)) throw new DozeError('E_INSTANCE_TAKEN', `instance id ${JSON.stringify(id)} is already managed`);
    if (this.byKey.has(key) || this.addingKeys.has(key)) {
      const holder = this.byKey.get(key);
      throw new DozeError('E_INSTANCE_TAKEN', `${describeKey(instance.config)} is already managed${holder ? ` as ${JSON.stringify(holder.id)}` : ''}`);
    }
    this.addingIds.add(id);
    this.addingKeys.add(key);
    const held = { attached: false, tracked: false };
    try {
      // Creates the pinned maps on first use.
      if (instance.config.interface === undefined) await this.source.attachHost(instance.config.address);
      else await this.source.attach(instance.config.interface);
      held.attached = true;
      await this.source.track(key, instance.aliases);
      held.tracked = true;
      this.byId.set(id, instance);
      this.byKey.set(key, instance);
      await this.takeOn(instance);
    } catch (error) {
      await this.takeOff(instance)
        .then(() => this.giveBack(instance, held))
        .catch((undo) => this.log.warn({ instance: id, err: messageOf(undo) }, 'undoing a failed add failed part way'));
      throw error;
    } finally {
      this.addingIds.delete(id);
      this.addingKeys.delete(key);
    }
  }

  /** A newly tracked instance's state: awake, or asleep as an earlier agent left it. */
  private async takeOn(instance: ManagedInstance): Promise<void> {
    const observed = await this.settledState(instance);
    const bpfState = await this.source.state(instance.key);
    if (observed === 'asleep' || observed === 'transitioning') {
      // Left asleep by a previous agent (crash): it is ours to wake.
      this.setState(instance, 'pausing', 'adopted a paused workload after restart');
      await this.hooks.beforeSleep(instance);
      instance.packetsAtSleep = (await this.source.counter(instance.key))?.packets;
      await this.source.setState(instance.key, BpfInstanceState.sleeping);
      this.setState(instance, 'sleeping', 'adopted');
      if (bpfState === BpfInstanceState.signalled) void this.wake(instance, 'traffic arrived while no agent was running');
      else this.signals.watch();
    } else {
      await this.source.setState(instance.key, BpfInstanceState.awake);
      this.sampleUsage(instance, monotonicNs());
    }
    this.schedule();
  }

  /**
   * The runtime's state, once a transition an earlier agent started (and died in)
   * has finished: a VM owner still saving or restoring settles on sleeping or
   * running, and is adopted as what it became, not as asleep half way. Bounded by
   * the instance's deadlines; still transitioning past them, it is adopted as
   * asleep (the next request resumes it).
   */
  private async settledState(instance: ManagedInstance): Promise<RuntimeObservedState> {
    const until = Date.now() + Math.max(instance.config.pauseTimeout, instance.config.wakeTimeout);
    let observed = await instance.runtime.inspect();
    while (observed === 'transitioning' && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
      observed = await instance.runtime.inspect();
    }
    if (observed === 'transitioning') this.log.warn({ instance: instance.id }, 'the runtime is still transitioning; adopting it as asleep');
    return observed;
  }

  /** Stop managing an instance (woken first, if asked): off the maps, its key untracked, its program detached, its runtime closed. */
  async remove(id: string, options: { wake: boolean }): Promise<void> {
    const instance = this.byId.get(id);
    if (!instance) return;
    this.stopDeciding(instance);
    try {
      if (options.wake) await this.wake(instance, 'no longer managed');
    } finally {
      // Even when the wake failed: an instance its caller lets go of must not stay managed.
      // A second removal under way finds it off the maps already, with nothing left to undo.
      if (await this.takeOff(instance)) {
        try {
          await this.giveBack(instance, { attached: true, tracked: true });
        } finally {
          await instance.runtime.close?.().catch((error) => this.log.warn({ instance: id, err: messageOf(error) }, 'closing the runtime failed'));
        }
      }
    }
  }

  /** No new sleep may start for it (a tick already under way included), and its timers stop. */
  private stopDeciding(instance: ManagedInstance): void {
    instance.removed = true;
    clearTimeout(instance.maxSleepTimer);
    clearTimeout(instance.watchdogWake?.timer);
    instance.watchdogWake = undefined;
  }

  /** Takes `instance` off the maps once a transition under way has finished; whether it was on them. */
  private async takeOff(instance: ManagedInstance): Promise<boolean> {
    this.stopDeciding(instance);
    await instance.exclusive(async () => {});
    if (this.byId.get(instance.id) !== instance) return false;
    this.byId.delete(instance.id);
    this.byKey.delete(instance.key);
    this.signalRoom();
    return true;
  }

  /** Gives back what add() took for an instance: its tracked key, its attached program. */
  private async giveBack(instance: ManagedInstance, held: { attached: boolean; tracked: boolean }): Promise<void> {
    try {
      if (held.tracked) await this.source.untrack(instance.key);
    } finally {
      if (held.attached && instance.config.interface === undefined) await this.source.detachHost();
      else if (held.attached) await this.source.detach(instance.config.interface!);
    }
  }

  start(): void {
    this.stopped = false;
    // Idleness counts from when the agent is up: a slow start-up (discovery, rules) must not use up idle timeouts.
    const nowNs = monotonicNs();
    for (const instance of this.byId.values()) {
      if (instance.state !== 'running') continue;
      if (instance.awakeSinceNs < nowNs) instance.awakeSinceNs = nowNs;
      instance.nextCheckNs = nowNs + BigInt(Math.max(instance.config.idleTimeout, instance.minAwakeMs)) * MS;
    }
    this.schedule();
    this.signals.watch();
  }

  /** Stop deciding; with `wakeAll`, resume every instance this agent put to sleep (nobody else would). */
  async stop(options: { wakeAll: boolean }): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.signals.stop();
    if (options.wakeAll) {
      await Promise.all(this.instances().map((i) => this.wake(i, 'agent stopping').catch(() => undefined)));
    }
  }

  /** Put an instance to sleep now (operator action), skipping the idle check. */
  sleepNow(id: string): Promise<boolean> {
    const instance = this.byId.get(id);
    if (!instance) return Promise.resolve(false);
    return this.sleep(instance, undefined, 'requested by operator');
  }

  wake(instance: ManagedInstance, reason: string, eventNs?: bigint): Promise<void> {
    if (eventNs !== undefined && instance.wakeEventNs === undefined) instance.wakeEventNs = eventNs;
    instance.wakesPending++;
    return instance.exclusive(async () => {
      instance.wakesPending--;
      if (instance.state !== 'sleeping' && instance.state !== 'failed') return;
      clearTimeout(instance.maxSleepTimer);
      if (this.budget && !this.stopped) await this.makeRoom(instance);
      const startNs = instance.wakeEventNs ?? monotonicNs();
      // Only a wake a packet started has a first response to time (onFirstResponse).
      instance.lastWakeSignalNs = instance.wakeEventNs;
      instance.lastFirstResponseMs = undefined;
      this.setState(instance, 'waking', reason);
      try {
        await withDeadline(`resuming ${instance.id}`, instance.config.wakeTimeout, instance.runtime.wake(instance.config.wakeTimeout));
      } catch (error) {
        const why = `wake failed: ${messageOf(error)}`;
        instance.failure = why;
        instance.lastError = { message: why, atMs: Date.now() };
        instance.wakeEventNs = undefined;
        instance.lastWakeSignalNs = undefined;
        // No more wake events for an instance that cannot come back; the stub reports it critical.
        await this.source.setState(instance.key, BpfInstanceState.awake).catch(() => undefined);
        this.setState(instance, 'failed', why);
        await this.hooks.wakeFailed(instance, why).catch((e) => this.log.error({ instance: instance.id, err: messageOf(e) }, 'reporting the failure failed'));
        this.log.error({ instance: instance.id, err: messageOf(error) }, 'wake failed');
        this.emit('wakeFailed', instance, why);
        return;
      }
      // Serving from here: the map update below is bookkeeping, not part of the wake.
      const nowNs = monotonicNs();
      const tookMs = Number(nowNs - startNs) / 1e6;
      // Checks reach the instance itself again before it is declared running. It is resumed and
      // serving whatever happens here: a failure is said, never left as a wake that never ends.
      await this.finishAwake(instance, 'finishing the wake');
      instance.failure = undefined;
      instance.wakeEventNs = undefined;
      instance.wakeRequested = false;
      instance.wakes++;
      instance.lastWakeMs = tookMs;
      instance.awakeSinceNs = nowNs;
      instance.usageSamples = [];
      this.sampleUsage(instance, nowNs);
      instance.nextCheckNs = nowNs + BigInt(Math.max(instance.config.idleTimeout, instance.minAwakeMs)) * MS;
      this.setState(instance, 'running', reason);
      this.emit('woke', instance, tookMs / 1000);
      this.schedule();
    });
  }

  /** `guardBusy`: look at the workload's CPU again right before the pause (not for operator sleeps, nor at max_awake). */
  private sleep(instance: ManagedInstance, decidedLastSeenNs: bigint | undefined, reason: string, guardBusy = decidedLastSeenNs !== undefined): Promise<boolean> {
    return instance.exclusive(async () => {
      if (instance.state !== 'running' || instance.removed) return false;
      if (instance.sleepBlockedBy) {
        // A sleep would make a check fail (one the stub cannot answer): stay awake and say why.
        instance.heldBy = instance.sleepBlockedBy;
        return false;
      }
      instance.wakeRequested = false;
      this.setState(instance, 'pausing', reason);
      // Taken before the map says pausing: any event of this sleep is stamped later, an older one is stale.
      instance.sleepStartNs = monotonicNs();
      // What comes before the pause can fail (doze-maps timing out under load, iptables): the
      // sleep is then undone, never left in pausing (the soak found 27 of 50 instances stranded so).
      let now: InstanceCounters | undefined;
      let step = 'marking it pausing in the state map';
      try {
        // From here on any packet raises a wake event. A packet that came between
        // the decision and this point shows up as a newer last_seen: abort.
        await this.source.setState(instance.key, BpfInstanceState.pausing);
        // New checks go to the stub from here; one already talking to the
        // instance would hang on the frozen process, so wait for it instead.
        step = 'redirecting its checks';
        await this.hooks.beforeSleep(instance);
        step = 'reading its connections and counters';
        if (this.hooks.guardChecks) {
          const pending = (await this.source.connections()).filter((c) => c.instanceAddr === instance.key && isCheckInFlight(c));
          if (pending.length > 0) {
            await this.abortSleep(instance, `${pending.length} health check(s) in flight`, holdRecheckMs(instance.config.idleTimeout));
            return false;
          }
        }
        now = await this.source.counter(instance.key);
      } catch (error) {
        const why = `${step} failed: ${messageOf(error)}`;
        instance.lastError = { message: why, atMs: Date.now() };
        this.log.warn({ instance: instance.id, err: messageOf(error) }, 'could not prepare the sleep; instance stays awake');
        await this.abortSleep(instance, why);
        return false;
      }
      if (guardBusy) {
        // Work that started since the decision (a job picked up from a queue) is caught here.
        const busy = this.busyReason(instance, monotonicNs());
        if (busy) {
          await this.abortSleep(instance, busy, holdRecheckMs(instance.config.idleTimeout));
          instance.heldBy = busy;
          this.noteBusy(instance, busy);
          return false;
        }
      }
      if (decidedLastSeenNs !== undefined) {
        if (!now || now.lastSeenNs !== decidedLastSeenNs || instance.wakeRequested) {
          await this.abortSleep(instance, 'traffic arrived while deciding');
          return false;
        }
      }
      // Any packet counted after this point must end in a wake: the watchdog's baseline.
      instance.packetsAtSleep = now?.packets;
      try {
        await withDeadline(`pausing ${instance.id}`, instance.config.pauseTimeout, instance.runtime.sleep(instance.config.pauseTimeout));
      } catch (error) {
        // Never leave it half asleep: undo, stay awake, say why.
        await instance.runtime.wake(instance.config.wakeTimeout).catch(() => undefined);
        const why = `pause failed: ${messageOf(error)}`;
        instance.lastError = { message: why, atMs: Date.now() };
        await this.abortSleep(instance, why);
        this.log.warn({ instance: instance.id, err: messageOf(error) }, 'pause failed; instance stays awake');
        return false;
      }
      await this.source.setState(instance.key, BpfInstanceState.sleeping);
      instance.sleeps++;
      instance.heldBy = undefined;
      instance.busySinceMs = undefined;
      this.setState(instance, 'sleeping', reason);
      this.emit('slept', instance);
      if (instance.config.maxSleep !== undefined) {
        clearTimeout(instance.maxSleepTimer);
        instance.maxSleepTimer = setTimeout(() => void this.wake(instance, `max_sleep: asleep for ${instance.config.maxSleep} ms`), instance.config.maxSleep);
        instance.maxSleepTimer.unref();
      }
      if (instance.wakeRequested) {
        // A request raced the pause: answer it now (queued behind this transition).
        void this.wake(instance, 'traffic arrived while pausing');
      }
      this.signals.watch();
      return true;
    });
  }

  /**
   * Node budget: before `instance` wakes, put the least recently used awake
   * instances to sleep until it fits (never one within min_awake or serving a
   * request). When none can sleep, wait for room in a bounded queue, up to the
   * wake deadline; then wake anyway and count an overrun.
   */
  private async makeRoom(instance: ManagedInstance): Promise<void> {
    const budget = this.budget!;
    const queued = () => this.instances().filter((i) => i.queuedSinceMs !== undefined).length;
    const until = Date.now() + instance.config.wakeTimeout;
    try {
      while (Date.now() < until) {
        const members = await this.budgetMembers();
        const victims = chooseVictims(budget, members, { id: instance.id, memory: instance.config.memory });
        if (victims?.length === 0) return;
        if (victims) {
          const results = await Promise.all(
            victims.map((v) => this.sleep(this.byId.get(v.id)!, this.byId.get(v.id)!.lastSeenNs, `budget: making room for ${instance.id}`)),
          );
          if (results.every(Boolean)) continue;
        }
        if (instance.queuedSinceMs === undefined) {
          if (queued() >= budget.maxQueued) break;
          instance.queuedSinceMs = Date.now();
          this.log.info({ instance: instance.id }, 'wake waits for room in the node budget');
        }
        await this.waitForRoom(Math.min(until - Date.now(), 250));
      }
      this.budgetOverruns++;
      this.log.warn({ instance: instance.id }, 'node budget: nothing could sleep in time; waking over budget');
    } finally {
      instance.queuedSinceMs = undefined;
    }
  }

  private async budgetMembers(): Promise<BudgetMember[]> {
    const all = this.instances();
    const running = all.filter((i) => i.state === 'running' && !i.removed);
    const counters = await this.source.countersOf(running.map((i) => i.key));
    const needConnections = running.some((i) => i.config.idlePolicy !== 'traffic');
    const connections = needConnections ? await this.source.connections() : [];
    const nowNs = monotonicNs();
    const asleepMiB = await measuredAsleepMiB(all);
    return all.map((i) => {
      const c = counters.get(i.key);
      if (c) i.lastSeenNs = c.lastSeenNs;
      const lastActivityNs = i.lastSeenNs > i.awakeSinceNs ? i.lastSeenNs : i.awakeSinceNs;
      const mine = connections.filter((conn) => conn.instanceAddr === i.key);
      // Still computing (the busy guard's last finding): a sleep now would be undone at once.
      const working = i.heldBy?.startsWith('busy:') ?? false;
      const busy = working || (i.config.idlePolicy === 'traffic' ? false
        : mine.some(isRequestInFlight) || (i.config.idlePolicy === 'connections' && mine.some(isOpen)));
      return {
        id: i.id,
        active: i.state === 'running' || i.state === 'waking' || i.state === 'pausing',
        memory: i.state === 'running' || i.state === 'waking' || i.state === 'pausing' ? i.config.memory : asleepMiB.get(i.id) ?? 0,
        lastActivityNs,
        evictable: i.state === 'running' && !i.removed && !busy && nowNs >= i.awakeSinceNs + BigInt(i.minAwakeMs) * MS,
      };
    });
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

  private signalRoom(): void {
    for (const waiter of [...this.roomWaiters]) waiter();
  }

  /**
   * The map says awake and checks reach the instance again. A failure here (doze-maps, iptables)
   * is logged and kept as the instance's last error, and the caller goes on to `running`: the
   * workload is not paused, so an instance must never stay in waking or pausing for it.
   */
  private async finishAwake(instance: ManagedInstance, what: string): Promise<void> {
    const errors: string[] = [];
    await this.source.setState(instance.key, BpfInstanceState.awake).catch((e) => errors.push(`the state map: ${messageOf(e)}`));
    await this.hooks.awake(instance).catch((e) => errors.push(`the check redirect: ${messageOf(e)}`));
    if (errors.length === 0) return;
    instance.lastError = { message: `${what}: ${errors.join('; ')}`, atMs: Date.now() };
    this.log.error({ instance: instance.id, err: errors.join('; ') }, `${what} failed; the instance is awake`);
  }

  private async abortSleep(instance: ManagedInstance, why: string, retryInMs = instance.config.idleTimeout): Promise<void> {
    await this.finishAwake(instance, 'undoing the sleep');
    instance.wakeRequested = false;
    instance.wakeEventNs = undefined;
    this.setState(instance, 'running', why);
    instance.nextCheckNs = monotonicNs() + BigInt(retryInMs) * MS;
    this.schedule();
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
    const thisWake = instance.lastWakeSignalNs === wakeNs || (wakeNs >= instance.sleepStartNs && (instance.state === 'waking' || instance.state === 'running'));
    if (!thisWake || replyNs < wakeNs) return;
    instance.lastWakeSignalNs = undefined;
    this.reportFirstResponse(instance, Number(replyNs - wakeNs) / 1e6);
  }

  /**
   * The current wake's first response, from the tc program's stamp or, in hold mode, from the hold
   * listener (agent/hold/hold-server.ts). Once per wake: whichever comes first.
   */
  reportFirstResponse(instance: ManagedInstance, ms: number): void {
    if (instance.lastFirstResponseMs !== undefined || this.byId.get(instance.id) !== instance) return;
    instance.lastFirstResponseMs = ms;
    this.emit('firstResponse', instance, ms / 1000);
  }

  private setState(instance: ManagedInstance, to: InstanceState, reason: string): void {
    const from = instance.state;
    if (from === to) return;
    if (!canTransition(from, to)) {
      this.log.error({ instance: instance.id, from, to }, 'refused an invalid transition');
      return;
    }
    instance.state = to;
    instance.stateSinceMs = Date.now();
    if (to === 'sleeping' || to === 'failed') this.signalRoom();
    this.log.info({ instance: instance.id, from, to, reason }, 'transition');
    this.emit('transition', { instance, from, to, reason, at: Date.now() });
  }

  /** One timer, set for the earliest idle deadline among running instances. */
  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    let earliest: bigint | undefined;
    for (const instance of this.byId.values()) {
      if (instance.state !== 'running') continue;
      if (earliest === undefined || instance.nextCheckNs < earliest) earliest = instance.nextCheckNs;
    }
    if (earliest === undefined) return;
    const delayMs = Math.max(0, Number(earliest - monotonicNs()) / 1e6);
    this.timer = setTimeout(() => void this.tick(), Math.ceil(delayMs));
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      const nowNs = monotonicNs();
      const due = this.instances().filter((i) => i.state === 'running' && i.nextCheckNs <= nowNs);
      if (due.length === 0) return;
      const counters = await this.source.countersOf(due.map((i) => i.key));
      let connections: Connection[] | undefined;
      for (const instance of due) {
        const c = counters.get(instance.key);
        let verdict = this.evaluate(instance, c, nowNs);
        if (verdict.kind === 'needs-connections') {
          connections ??= await this.source.connections();
          verdict = this.evaluate(instance, c, nowNs, connections.filter((conn) => conn.instanceAddr === instance.key));
        }
        this.apply(instance, this.guardBusy(instance, verdict, nowNs), c);
      }
    } catch (error) {
      this.log.error({ err: messageOf(error) }, 'reading counters failed; retrying');
      for (const i of this.instances()) if (i.state === 'running') i.nextCheckNs = monotonicNs() + 100n * MS;
    } finally {
      this.ticking = false;
      this.schedule();
    }
  }

  private evaluate(instance: ManagedInstance, c: InstanceCounters | undefined, nowNs: bigint, connections?: Connection[]): IdleVerdict {
    const lastSeen = c?.lastSeenNs ?? 0n;
    instance.lastSeenNs = lastSeen;
    return decideIdle(
      {
        nowNs,
        lastActivityNs: lastSeen > instance.awakeSinceNs ? lastSeen : instance.awakeSinceNs,
        idleTimeoutMs: instance.config.idleTimeout,
        minAwakeUntilNs: instance.awakeSinceNs + BigInt(instance.minAwakeMs) * MS,
        maxAwakeMs: instance.config.maxAwake,
        policy: instance.config.idlePolicy,
      },
      connections,
    );
  }

  private apply(instance: ManagedInstance, verdict: IdleVerdict, c: InstanceCounters | undefined): void {
    switch (verdict.kind) {
      case 'active':
        instance.heldBy = undefined;
        instance.nextCheckNs = verdict.recheckAtNs;
        return;
      case 'held':
        if (verdict.reason.startsWith('busy:')) this.noteBusy(instance, verdict.reason);
        instance.heldBy = verdict.reason;
        instance.nextCheckNs = verdict.recheckAtNs;
        return;
      case 'idle': {
        instance.nextCheckNs = monotonicNs() + BigInt(instance.config.idleTimeout) * MS;
        const busyFor = instance.busySinceMs === undefined ? undefined : Date.now() - instance.busySinceMs;
        const reason = busyFor === undefined || verdict.maxAwake ? verdict.reason : `${verdict.reason}, after ${busyFor} ms busy`;
        void this.sleep(instance, c?.lastSeenNs ?? 0n, reason, !verdict.maxAwake);
        return;
      }
      case 'needs-connections':
        return;
    }
  }

  /**
   * Busy guard: an idle verdict waits while the workload still computes (CPU over the
   * last idle window above busyCpu) or does block I/O. Counters are read only here, for
   * an instance whose deadline is due; an active or held one gets at most one reading
   * per window, so the decision to come has a baseline about a window old.
   */
  private guardBusy(instance: ManagedInstance, verdict: IdleVerdict, nowNs: bigint): IdleVerdict {
    if (instance.config.busyCpu <= 0 || !instance.runtime.usage) return verdict;
    if (verdict.kind === 'active' || verdict.kind === 'held') {
      const newest = instance.usageSamples.at(-1);
      if (!newest || nowNs - newest.atNs >= BigInt(busyWindowMs(instance.config.idleTimeout)) * MS) this.sampleUsage(instance, nowNs);
      if (verdict.kind === 'active') instance.busySinceMs = undefined;
      return verdict;
    }
    if (verdict.kind !== 'idle' || verdict.maxAwake || !this.sampleUsage(instance, nowNs)) return verdict;
    const lastSeen = instance.lastSeenNs;
    return guardIdle(verdict, {
      nowNs,
      lastActivityNs: lastSeen > instance.awakeSinceNs ? lastSeen : instance.awakeSinceNs,
      maxAwakeMs: instance.config.maxAwake,
      recheckMs: holdRecheckMs(instance.config.idleTimeout),
      state: judgeBusy(instance.usageSamples, busyWindowMs(instance.config.idleTimeout), instance.config.busyCpu),
    });
  }

  /** The busy reason right now (a fresh reading against the kept ones), or undefined when quiet or unknown. */
  private busyReason(instance: ManagedInstance, nowNs: bigint): string | undefined {
    if (instance.config.busyCpu <= 0 || !this.sampleUsage(instance, nowNs)) return undefined;
    const state = judgeBusy(instance.usageSamples, busyWindowMs(instance.config.idleTimeout), instance.config.busyCpu);
    return state.kind === 'busy' ? state.reason : undefined;
  }

  /** Takes one reading of the instance's CPU and I/O; false when its runtime cannot give one. */
  private sampleUsage(instance: ManagedInstance, nowNs: bigint): boolean {
    if (instance.config.busyCpu <= 0) return false;
    const reading = instance.runtime.usage?.();
    if (!reading) {
      if (instance.runtime.usage && !instance.usageUnavailableLogged) {
        instance.usageUnavailableLogged = true;
        this.log.info({ instance: instance.id, runtime: instance.runtime.kind }, 'busy guard: the CPU of this instance cannot be read here (no cpuacct/cpu.stat for its cgroup, or no process yet); it sleeps on traffic alone');
      }
      return false;
    }
    instance.usageSamples = keepSamples(instance.usageSamples, { atNs: nowNs, ...reading }, busyWindowMs(instance.config.idleTimeout));
    return true;
  }

  private noteBusy(instance: ManagedInstance, reason: string): void {
    if (instance.busySinceMs === undefined) {
      instance.busySinceMs = Date.now();
      this.log.info({ instance: instance.id, reason }, 'sleep postponed: the instance is still working');
    }
  }

  idleForMs(instance: ManagedInstance): number {
    const since = instance.lastSeenNs > instance.awakeSinceNs ? instance.lastSeenNs : instance.awakeSinceNs;
    return Math.max(0, Number(monotonicNs() - since) / 1e6);
  }
}
