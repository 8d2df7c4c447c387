import { EventEmitter } from 'node:events';
import { DozeError, messageOf } from '../shared/errors.js';
import { withDeadline } from '../shared/deadline.js';
import type { Logger } from '../shared/log.js';
import { BpfInstanceState, describeWakePacket, type WakePacket } from '../sources/bpf-records.js';
import { monotonicNs } from '../shared/clock.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import { adoptAsleep, leftBehind } from './adoption.js';
import { BusySampler } from './busy-sampler.js';
import { holdRecheckMs } from './idle-decision.js';
import { preparationAbort, prepareSleep } from './sleep-preparation.js';
import { enterPacing } from './paced-wake.js';
import { finishAwake } from './finish-awake.js';
import { passDue } from './idle-pass.js';
import { IdleTimer } from './idle-timer.js';
import { describeHold, type HoldReason } from './reasons.js';
import { NodeBudget, type NodeBudgetLimits } from '../scheduler/node-budget.js';
import { budgetPort, refreshLastSeen, rehearsedBudgetMembers } from './budget-members.js';
import { InstanceTable } from './instance-table.js';
import { firstCheckNs, ManagedInstance, type ReadonlyInstance } from './managed-instance.js';
import { canTransition, type InstanceState } from './states.js';
import { NO_HOOKS, type DetectorEvents, type DetectorOptions, type SleepHooks } from './detector-contract.js';
import { WakeSignals, type WakeEventHealth } from './wake-signals.js';
import { markSleeping, trafficSince, type TrafficBaseline } from './state-handoff.js';
import { FaultBackGate, type PacedTicket, type PacingReport } from '../scheduler/fault-back-gate.js';
import { faultedBack } from './fault-back.js';
import { failWake } from './wake-failure.js';
import { whyAwake, type AwakeReason } from './why-awake.js';
import { isDryRun, rehearseSleep, type RehearsalPort } from './rehearsal.js';
import { EarlyThaws } from './early-thaw.js';

export type { DetectorEvents, DetectorOptions, RehearsedEvent, SleepHooks, ThawedBy, TransitionEvent } from './detector-contract.js';

const MS = 1_000_000n;

/**
 * Drives every instance's state machine: reads counters only when some
 * instance's idle deadline is due (one timer for all, so cost follows active
 * instances), sleeps idle ones, and wakes sleepers on pushed wake events.
 */
export class Detector<Hooks extends SleepHooks = SleepHooks> extends EventEmitter<DetectorEvents> {
  /** The managed instances by id and traffic key, and what each holds in the kernel. */
  private readonly table: InstanceTable;
  private readonly timer = new IdleTimer(() => void this.tick());
  private ticking = false;
  /** Until start(): instances are taken on but no idle clock runs (an agent still starting freezes nothing). */
  private stopped = true;

  readonly hooks: Hooks;
  /** The node budget's queue and eviction, when a budget is set. */
  private readonly budget: NodeBudget | undefined;
  readonly budgetLimits: NodeBudgetLimits | undefined;
  /** Mass wakes (agent stop, removals) fault back under the budget through this gate. */
  private readonly pacing: FaultBackGate | undefined;
  get pacedWakes(): PacingReport | undefined {
    return this.pacing?.report;
  }

  /** Wakes that went ahead over budget because nothing could sleep in time (never hurt a request). */
  budgetOverruns = 0;
  /** Wake events, and the watchdog and rescans that stand in for the lost ones. */
  private readonly signals: WakeSignals;
  /** What the wake signals say of an instance (a wake asked for while pausing, a watchdog wake awaiting its event). */
  readonly wakeSignals: Pick<WakeSignals, 'wakeRequested' | 'awaitsLateEvent'>;
  /** The busy guard's CPU and I/O readings of each instance. */
  private readonly busy: BusySampler;
  /** How the wake-event path has fared (the status page's card). */
  readonly wakeEvents: WakeEventHealth;
  /** Agent-wide dry run: every instance is rehearsed, none frozen (agent/detector/rehearsal.ts). */
  readonly dryRunAll: boolean;
  private readonly rehearsal: RehearsalPort;
  /** Sleepers the wake-event reader thaws itself at their event (early-thaw.ts). */
  readonly earlyThaws: EarlyThaws;
  /** Wakes started and not ended (queued behind a transition or waiting for room included). */
  private wakesUnderWay = 0;

  constructor(private readonly source: TrafficSource, private readonly log: Logger, options: DetectorOptions<Hooks> = {}) {
    super();
    // Without hooks of its own, Hooks is SleepHooks (its default): NO_HOOKS is one.
    this.table = new InstanceTable(source);
    this.hooks = typeof options.hooks === 'function' ? options.hooks(this) : options.hooks ?? (NO_HOOKS as Hooks);
    const b = options.budget;
    this.budget = b && (b.maxActive !== undefined || b.maxActiveMemory !== undefined) ? new NodeBudget(b, budgetPort(this.table, this.source, (victim, why) => this.sleep(victim, { packets: victim.seenPackets, lastSeenNs: victim.lastSeenNs }, why), (i) => this.isDryRun(i)), log) : undefined;
    this.budgetLimits = this.budget?.limits;
    this.pacing = this.budget ? new FaultBackGate(this.budget.limits) : undefined;
    this.busy = new BusySampler(log);
    this.dryRunAll = options.dryRun ?? false;
    const budget = this.budget;
    this.rehearsal = {
      source,
      log,
      busy: this.busy,
      noted: (instance, kind, reason, at) => this.emit('rehearsed', { instance, kind, reason, at }),
      rehearseRoom: budget && (async (i) => budget.rehearse(await rehearsedBudgetMembers(this.table.all(), source), { id: i.id, memory: i.config.memory })),
    };
    this.signals = new WakeSignals(source, log, {
      instance: (key) => this.table.withKey(key),
      sleepers: () => this.table.all().filter((i) => i.state === 'sleeping' && !i.removed),
      wake: (instance, reason, eventNs, packet) => void this.wake(instance, reason, eventNs, { packet }),
      firstResponse: (instance, ms) => this.reportFirstResponse(instance, ms),
      missed: (instance) => this.emit('wakeEventMissed', instance),
      stopped: () => this.stopped,
    }, options.dropWakeEvents ?? 0);
    this.wakeEvents = this.signals.health;
    this.wakeSignals = this.signals;
    this.earlyThaws = new EarlyThaws(options.earlyThaw === false ? undefined : source.earlyThaw, {
      instances: () => this.table.all(),
      isDryRun: (i) => this.isDryRun(i),
      sleepStartedNs: (i) => this.signals.sleepStartedNs(i),
      whoFitsBudget: budget && (async (candidates) => {
        const fits = await budget.whoFitsNow(candidates.map((i) => ({ id: i.id, memory: i.config.memory })));
        return new Set(candidates.filter((i) => fits.has(i.id)));
      }),
      wakesUnderWay: () => this.wakesUnderWay,
      stopped: () => this.stopped,
    }, log);
  }

  /** Whether it is only rehearsed: decided on, never frozen (its config's `dryRun`, or the agent's). */
  isDryRun(instance: ReadonlyInstance): boolean {
    return isDryRun(instance, this.dryRunAll);
  }

  /** Every managed instance, read-only: the detector is the one writer of their state. */
  instances(): ReadonlyInstance[] {
    return this.table.all();
  }

  get(id: string): ReadonlyInstance | undefined {
    return this.table.get(id);
  }

  /** The detector's own record behind a read-only one (every instance is made by ManagedInstance's constructor). */
  private own(instance: ReadonlyInstance): ManagedInstance {
    if (!(instance instanceof ManagedInstance)) throw new DozeError('E_INSTANCE_UNKNOWN', `instance ${JSON.stringify(instance.id)} was not made as a managed instance`);
    return instance;
  }

  /**
   * Start managing an instance; adopts a workload left asleep by an earlier agent.
   * Refuses (throws) an id or traffic key it already holds or is taking on: the last line of
   * defence behind InstanceAdmission, which reserves both before it builds the runtime. A failed
   * add leaves nothing behind (no attached program, no tracked key, no map entry); the runtime
   * stays its caller's to close.
   */
  async add(view: ReadonlyInstance): Promise<void> {
    const instance = this.own(view);
    const release = this.table.reserve(instance);
    const held = { attached: false, tracked: false };
    try {
      await this.table.attach(instance, held);
      this.table.list(instance);
      this.earlyThaws.hold(); // one more awake instance may leave no room
      await this.takeOn(instance);
    } catch (error) {
      await this.takeOff(instance)
        .then(() => this.table.detach(instance, held))
        .catch((undo) => this.log.warn({ instance: instance.id, err: messageOf(undo) }, 'undoing a failed add failed part way'));
      throw error;
    } finally {
      release();
    }
  }

  /** A newly tracked instance's state: awake, or asleep as an earlier agent left it. */
  private async takeOn(instance: ManagedInstance): Promise<void> {
    const left = await leftBehind(instance, this.source, this.log);
    if (left.asleep) {
      const handoff = await adoptAsleep(instance, this.source, {
        transition: (to, reason) => this.setState(instance, to, reason),
        beforeSleep: () => this.hooks.beforeSleep(instance),
        asleepFrom: (packets) => this.signals.asleepFrom(instance, packets),
      }, left.state);
      if (handoff.kind !== 'swapped') void this.wake(instance, 'traffic arrived while no agent was running');
      // Left asleep by an agent that managed it for real: a rehearsed instance must not stay frozen.
      else if (this.isDryRun(instance)) void this.wake(instance, 'dry run: an earlier agent left it asleep');
      else this.signals.watch();
    } else {
      await this.source.setState(instance.key, BpfInstanceState.awake);
      this.busy.sample(instance, monotonicNs());
    }
    this.schedule();
  }

  /** Stop managing an instance (woken first, if asked): off the maps, its key untracked, its program detached, its runtime closed. */
  async remove(id: string, options: { wake: boolean }): Promise<void> {
    const instance = this.table.get(id);
    if (!instance) return;
    this.stopDeciding(instance);
    try {
      if (options.wake) await this.wake(instance, 'no longer managed', undefined, { paced: true });
    } finally {
      // Even when the wake failed: an instance its caller lets go of must not stay managed.
      // A second removal under way finds it off the maps already, with nothing left to undo.
      if (await this.takeOff(instance)) {
        try {
          await this.table.detach(instance, { attached: true, tracked: true });
        } finally {
          await instance.runtime.close?.().catch((error) => this.log.warn({ instance: id, err: messageOf(error) }, 'closing the runtime failed'));
        }
      }
    }
  }

  /** No new sleep may start for it (a tick already under way included), and its timers stop. */
  private stopDeciding(instance: ManagedInstance): void {
    instance.removed = true;
    this.signals.forget(instance);
    this.earlyThaws.hold(instance);
  }

  /** Takes `instance` off the maps once a transition under way has finished; whether it was on them. */
  private async takeOff(instance: ManagedInstance): Promise<boolean> {
    this.stopDeciding(instance);
    await instance.exclusive(async () => {});
    if (!this.table.unlist(instance)) return false;
    this.budget?.signalRoom();
    this.earlyThaws.hold();
    return true;
  }

  start(): void {
    this.stopped = false;
    this.earlyThaws.refresh();
    // Idleness counts from when the agent is up: a slow start-up (discovery, rules) must not use up idle timeouts.
    const nowNs = monotonicNs();
    for (const instance of this.table.all()) {
      if (instance.state !== 'running') continue;
      if (instance.awakeSinceNs < nowNs) instance.awakeSinceNs = nowNs;
      instance.nextCheckNs = firstCheckNs(instance, nowNs);
    }
    this.schedule();
    this.signals.watch();
  }

  /** Stop deciding; with `wakeAll`, resume every instance this agent put to sleep (nobody else would). */
  async stop(options: { wakeAll: boolean }): Promise<void> {
    this.stopped = true;
    this.timer.clear();
    this.signals.stop();
    if (options.wakeAll) {
      const startedMs = Date.now();
      const sleepers = this.table.all().filter((i) => i.state === 'sleeping' || i.state === 'failed').length;
      await Promise.all(this.table.all().map((i) => this.wake(i, 'agent stopping', undefined, { paced: true }).catch(() => undefined)));
      if (sleepers > 0) this.log.info({ sleepers, tookMs: Date.now() - startedMs, pacing: this.pacing?.report }, 'woke every sleeper before stopping');
    }
  }

  /** Put an instance to sleep now (operator action), skipping the idle check. */
  sleepNow(id: string): Promise<boolean> {
    const instance = this.table.get(id);
    if (!instance) return Promise.resolve(false);
    return this.sleep(instance, undefined, 'requested by operator');
  }

  /**
   * `paced`: one of many wakes at once that no request asked for (agent stop, removal): it
   * faults back under the node budget (scheduler/fault-back-gate.ts) and makes no room.
   */
  wake(view: ReadonlyInstance, reason: string, eventNs?: bigint, options: { paced?: boolean; packet?: WakePacket } = {}): Promise<void> {
    const instance = this.own(view);
    this.signals.noteWakeEvent(instance, eventNs, options.packet);
    // A request waits on a sleeper queued in a paced wake: it goes first.
    if (!options.paced) this.pacing?.promote(instance.id);
    instance.wakesPending++;
    // Until it ends, no sleeper is thawed with room this wake may need (early-thaw.ts).
    this.wakesUnderWay++;
    this.earlyThaws.hold();
    return instance.exclusive(async () => {
      instance.wakesPending--;
      if (instance.state !== 'sleeping' && instance.state !== 'failed') return;
      this.signals.disarmMaxSleep(instance);
      let ticket: PacedTicket | undefined;
      if (options.paced) {
        ticket = await enterPacing(instance, this.pacing, this.budgetLimits, this.log);
        if (ticket?.overBudget) this.budgetOverruns++;
      } else if (this.budget && !this.stopped) {
        const room = await this.budget.makeRoom({ id: instance.id, memory: instance.config.memory, wakeTimeoutMs: instance.config.wakeTimeout });
        if (room === 'over-budget') this.budgetOverruns++;
      }
      const packet = this.signals.wakePacket(instance);
      const startNs = this.signals.wakeStarts(instance);
      instance.lastFirstResponseMs = undefined;
      this.setState(instance, 'waking', reason, packet);
      try {
        await withDeadline(`resuming ${instance.id}`, instance.config.wakeTimeout, (signal) => instance.runtime.wake(instance.config.wakeTimeout, signal));
      } catch (error) {
        const { source, hooks, log, signals } = this;
        await failWake(instance, error, { source, hooks, log, signals, failed: (why) => this.setState(instance, 'failed', why), reported: (why) => this.emit('wakeFailed', instance, why) });
        ticket?.release();
        return;
      }
      // Its room in the paced wake is held until its memory is back (or it stops faulting).
      if (ticket) void faultedBack(instance).finally(() => ticket.release());
      // Serving from here (or since the reader thawed it at the event): the map update below is
      // bookkeeping, not part of the wake.
      const nowNs = monotonicNs();
      const thawedNs = this.signals.thawedEarlyAtNs(instance);
      const thawedAtEvent = thawedNs !== undefined && thawedNs >= startNs && thawedNs < nowNs;
      const tookMs = Number((thawedAtEvent ? thawedNs : nowNs) - startNs) / 1e6;
      // Checks reach the instance itself again before it is declared running. It is resumed and
      // serving whatever happens here: a failure is said, never left as a wake that never ends.
      await finishAwake(instance, this.source, this.hooks, this.log, 'finishing the wake');
      instance.failure = undefined;
      this.signals.wakeEnded(instance);
      instance.wakes++;
      instance.lastWakeMs = tookMs;
      instance.awakeSinceNs = nowNs;
      this.busy.restart(instance, nowNs);
      instance.nextCheckNs = firstCheckNs(instance, nowNs);
      this.setState(instance, 'running', reason);
      this.emit('woke', instance, tookMs / 1000, thawedAtEvent ? 'event-reader' : 'agent');
      this.schedule();
    }).finally(() => {
      this.wakesUnderWay--;
      this.earlyThaws.refresh();
    });
  }

  /** `guardBusy`: look at the workload's CPU again right before the pause (not for operator sleeps, nor at max_awake). */
  private sleep(instance: ManagedInstance, decided: TrafficBaseline | undefined, reason: string, guardBusy = decided !== undefined): Promise<boolean> {
    return instance.exclusive(async () => {
      if (instance.state !== 'running' || instance.removed) return false;
      const held = instance.sleepHeldBy;
      if (held) {
        // A sleep would make a check fail (one the stub cannot answer), or Nomad is stopping or signalling the task: stay awake and say why.
        instance.heldBy = held;
        return false;
      }
      if (this.isDryRun(instance)) {
        const would = await rehearseSleep(instance, this.rehearsal, decided, reason, guardBusy, monotonicNs());
        this.schedule();
        return would;
      }
      this.setState(instance, 'pausing', reason);
      this.signals.sleepStarts(instance);
      const prepared = await prepareSleep(instance, this.source, this.hooks);
      if (prepared.kind !== 'ready') {
        const abort = preparationAbort(instance, prepared, this.log);
        await this.abortSleep(instance, abort.why, abort.retryInMs);
        return false;
      }
      const now = prepared.counters;
      if (guardBusy) {
        // Work that started since the decision (a job picked up from a queue) is caught here.
        const busy = this.busy.reason(instance, monotonicNs());
        if (busy) {
          await this.abortSleep(instance, describeHold(busy), holdRecheckMs(instance.config.idleTimeout));
          instance.heldBy = busy;
          this.busy.noteBusy(instance, busy);
          return false;
        }
      }
      if (decided !== undefined) {
        if (trafficSince(decided, now) || this.signals.wakeRequested(instance)) {
          await this.abortSleep(instance, 'traffic arrived while deciding');
          return false;
        }
      }
      // Any packet counted after this point must end in a wake: the watchdog's baseline.
      this.signals.asleepFrom(instance, now?.packets);
      try {
        await withDeadline(`pausing ${instance.id}`, instance.config.pauseTimeout, (signal) => instance.runtime.sleep(instance.config.pauseTimeout, signal));
      } catch (error) {
        // Never leave it half asleep: undo, stay awake, say why.
        await instance.runtime.wake(instance.config.wakeTimeout).catch(() => undefined);
        const why = `pause failed: ${messageOf(error)}`;
        instance.lastError = { message: why, atMs: Date.now() };
        await this.abortSleep(instance, why);
        this.log.warn({ instance: instance.id, err: messageOf(error) }, 'pause failed; instance stays awake');
        return false;
      }
      // Never over a SIGNALLED: a packet that came during the pause (its event may be late or
      // lost) leaves the state signalled, and the instance wakes right after the pause below.
      const sleeping = await markSleeping(this.source, instance.key).catch((error): { kind: 'failed'; message: string } => ({ kind: 'failed', message: messageOf(error) }));
      if (sleeping.kind !== 'swapped') {
        this.log.info({ instance: instance.id, handoff: sleeping }, 'the state after the pause was not the pausing the agent left (traffic signalled it, or the map failed): waking it');
        this.signals.wakeAfterPause(instance);
      }
      instance.sleeps++;
      instance.heldBy = undefined;
      this.busy.quiet(instance);
      this.setState(instance, 'sleeping', reason);
      this.emit('slept', instance);
      this.signals.armMaxSleep(instance);
      if (this.signals.wakeRequested(instance)) {
        // A request raced the pause: answer it now (queued behind this transition).
        void this.wake(instance, 'traffic arrived while pausing');
      }
      this.signals.watch();
      return true;
    });
  }

  private async abortSleep(instance: ManagedInstance, why: string, retryInMs = instance.config.idleTimeout): Promise<void> {
    await finishAwake(instance, this.source, this.hooks, this.log, 'undoing the sleep');
    this.signals.wakeEnded(instance);
    this.setState(instance, 'running', why);
    instance.nextCheckNs = monotonicNs() + BigInt(retryInMs) * MS;
    this.schedule();
  }

  /**
   * The current wake's first response, from the tc program's stamp or, in hold mode, from the hold
   * listener (agent/hold/hold-server.ts). Once per wake: whichever comes first.
   */
  reportFirstResponse(view: ReadonlyInstance, ms: number): void {
    const instance = this.own(view);
    if (instance.lastFirstResponseMs !== undefined || !this.table.lists(instance)) return;
    instance.lastFirstResponseMs = ms;
    this.emit('firstResponse', instance, ms / 1000);
  }

  /** The stub answered one of its checks while it slept (agent/sleep-guards.ts). */
  countCheckAnswered(view: ReadonlyInstance): void {
    const instance = this.own(view);
    instance.checksAnswered++;
    if (this.table.lists(instance)) this.emit('checkAnswered', instance);
  }

  /**
   * Keeps an instance from sleeping for `ms` (the longest hold asked for wins): its Nomad client is
   * about to stop or signal its task (agent/discovery/nomad-instances.ts thawFirst).
   */
  holdAwake(view: ReadonlyInstance, reason: HoldReason, ms: number): void {
    const instance = this.table.get(view.id);
    if (instance !== view) return;
    const untilMs = Date.now() + ms;
    if (!instance.awakeHold || instance.awakeHold.untilMs < untilMs) instance.awakeHold = { reason, untilMs };
  }

  /** How many of its connections the hold listener holds while it wakes (agent/hold/). */
  noteHeld(view: ReadonlyInstance, held: number): void {
    this.own(view).held = held;
  }

  /** Refreshes every instance's last-seen time (one counters read), then says why each awake one is awake (why-awake.ts). */
  async whyAwake(): Promise<Map<string, AwakeReason[]>> {
    await refreshLastSeen(this.table.all(), this.source);
    return whyAwake(this.table.all(), this.source);
  }

  /** `packet`: on a wake to `waking`, the packet that caused it (its wake event named it). */
  private setState(instance: ManagedInstance, to: InstanceState, reason: string, packet?: WakePacket): void {
    const from = instance.state;
    if (from === to) return;
    if (!canTransition(from, to)) {
      this.log.error({ instance: instance.id, from, to }, 'refused an invalid transition');
      return;
    }
    instance.state = to;
    instance.stateSinceMs = Date.now();
    if (to === 'sleeping' || to === 'failed') this.budget?.signalRoom();
    this.log.info({ instance: instance.id, from, to, reason, packet: packet && describeWakePacket(packet) }, 'transition');
    // Before anything else runs: an arm of this sleep must not outlive it, and the budget's room is re-granted.
    this.earlyThaws.hold(from === 'sleeping' ? instance : undefined);
    this.emit('transition', { instance, from, to, reason, at: Date.now(), ...(packet ? { packet } : {}) });
  }

  /** One timer, set for the earliest idle deadline among running instances. */
  private schedule(): void {
    if (!this.stopped) this.timer.set(this.table.all());
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      const nowNs = monotonicNs();
      const due = this.table.all().filter((i) => i.state === 'running' && i.nextCheckNs <= nowNs);
      if (due.length === 0) return;
      const counters = await this.source.countersOf(due.map((i) => i.key));
      await passDue(due, counters, nowNs, this.rehearsal, (instance, decided, reason, guardBusy) => this.sleep(instance, decided, reason, guardBusy));
    } catch (error) {
      this.log.error({ err: messageOf(error) }, 'reading counters failed; retrying');
      for (const i of this.table.all()) if (i.state === 'running') i.nextCheckNs = monotonicNs() + 100n * MS;
    } finally {
      this.ticking = false;
      this.schedule();
    }
  }
}
