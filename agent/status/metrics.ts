import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Detector } from '../detector/detector.js';
import type { ReadonlyInstance } from '../detector/managed-instance.js';
import { INSTANCE_STATES } from '../detector/states.js';
import { RECLAIM_RESULTS } from '../runtimes/freezer-reclaim.js';
import type { Runtime } from '../runtimes/runtime.js';
import { MemoryTracker } from './memory-view.js';
import { SavingsLedger } from './savings.js';

type InstanceLabels = { instance: string; runtime: string };

const labelsOf = (i: Pick<ReadonlyInstance, 'id' | 'runtime'>): InstanceLabels => ({ instance: i.id, runtime: i.runtime.kind });

/** Wake phases: 1 ms to 2 s, roughly doubling (a freezer wakes in ~1 ms, a snapshot VM in ~0.5 s). */
const WAKE_BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2];

/**
 * The agent's Prometheus metrics (names follow Prometheus practice: doze_*, counters _total,
 * durations _seconds). Per-instance series exist from the moment an instance is managed, at 0,
 * and go when it is released, so a node with Nomad churn does not grow series without bound:
 * `sync()` reconciles them with the detector's instances before every scrape (`text()`).
 */
export class Metrics {
  readonly registry = new Registry();
  readonly sleeps = this.instanceCounter('doze_sleeps_total', 'Instances put to sleep');
  readonly wakes = this.instanceCounter('doze_wakes_total', 'Instances woken');
  readonly wakeFailures = this.instanceCounter('doze_wake_failures_total', 'Wakes that failed (the instance is reported critical)');
  readonly wakesThawedAtEvent = this.instanceCounter('doze_wakes_thawed_at_event_total', 'Wakes whose workload the wake-event reader thawed the moment the packet was seen (config earlyThaw), before the agent ran the rest of the wake');
  readonly wakeEventsMissed = this.instanceCounter('doze_wake_events_missed_total', 'Sleepers woken by the watchdog: traffic reached them but no wake event came');
  readonly checksAnswered = this.instanceCounter('doze_health_checks_answered_total', 'Health checks answered by the stub for sleeping instances');
  readonly wakeSeconds = this.instanceHistogram('doze_wake_seconds', 'Wake phase 1: first packet seen by the tc program (or the wake request) to the runtime resumed', WAKE_BUCKETS);
  readonly firstResponseSeconds = this.instanceHistogram(
    'doze_first_response_seconds',
    "Wake phase 2: first packet seen by the tc program (hold mode: first held connection) to the instance's first response byte to a client",
    WAKE_BUCKETS,
  );
  readonly budgetOverruns = new Counter({
    name: 'doze_budget_overruns_total',
    help: 'Wakes that went ahead over the node budget because nothing could sleep in time',
    registers: [this.registry],
  });

  readonly reclaims = new Counter({ name: 'doze_reclaims_total', help: "Reclaims of a sleeping instance's memory, by result (done, partial, cancelled by a wake, skipped, failed)", labelNames: ['instance', 'runtime', 'result'], registers: [this.registry] });
  readonly reclaimSeconds = this.instanceHistogram('doze_reclaim_seconds', "Time to push a sleeping instance's memory out (reclaims that ran to the end)", [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10]);
  /** Each instance's measured memory, shared with the status API. */
  readonly memory: MemoryTracker;
  /** What sleeping saved (time asleep, memory freed, wakes), shared with the status API. */
  readonly savings: SavingsLedger;

  /** Every metric labelled by instance: each gets a zero series per managed instance and loses it on release. */
  private readonly perInstanceCounters = [this.sleeps, this.wakes, this.wakesThawedAtEvent, this.wakeFailures, this.wakeEventsMissed, this.checksAnswered];
  private readonly perInstanceHistograms = [this.wakeSeconds, this.firstResponseSeconds, this.reclaimSeconds];
  /** Label sets that have their series, by "instance\0runtime". */
  private readonly synced = new Map<string, InstanceLabels>();

  private instanceCounter(name: string, help: string): Counter<'instance' | 'runtime'> {
    return new Counter({ name, help, labelNames: ['instance', 'runtime'], registers: [this.registry] });
  }

  private instanceHistogram(name: string, help: string, buckets: number[]): Histogram<'instance' | 'runtime'> {
    return new Histogram({ name, help, labelNames: ['instance', 'runtime'], buckets, registers: [this.registry] });
  }

  /** `eventsLost`: the tc program's count of wake and first-response events it could not hand over (doze_stats). */
  constructor(private readonly detector: Detector, eventsLost?: () => Promise<bigint>) {
    collectDefaultMetrics({ register: this.registry });
    if (eventsLost) {
      new Counter({
        name: 'doze_bpf_events_lost_total',
        help: 'Wake and first-response events the tc program could not hand to the agent (its perf buffer was full); the wake watchdog covers the wakes',
        registers: [this.registry],
        async collect() {
          const lost = await eventsLost().catch(() => undefined);
          if (lost === undefined) return;
          this.reset();
          this.inc(Number(lost));
        },
      });
    }
    const memory = (this.memory = new MemoryTracker(detector));
    const savings = (this.savings = new SavingsLedger(detector, (i) => memory.freedBytes(i)));
    new Counter({
      name: 'doze_asleep_seconds_total',
      help: 'Time an instance has spent asleep since the agent began managing it',
      labelNames: ['instance', 'runtime'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const i of detector.instances()) this.inc(labelsOf(i), savings.view(i).asleepSecondsTotal);
      },
    });
    new Counter({
      name: 'doze_memory_freed_byte_seconds_total',
      help: "Memory a sleeping instance gave back, measured from its memory cgroup (awake resident minus resident now), integrated over time",
      labelNames: ['instance', 'runtime'],
      registers: [this.registry],
      async collect() {
        await memory.refresh();
        savings.measure();
        this.reset();
        for (const i of detector.instances()) this.inc(labelsOf(i), savings.view(i).memoryFreedByteSeconds);
      },
    });
    new Gauge({
      name: 'doze_instance_memory_bytes',
      help: "Memory an instance holds, from its memory cgroup: resident (charged to it now), swapped (its pages in swap), compressed (RAM its swapped pages take in zram: its share of zram's memory)",
      labelNames: ['instance', 'state'],
      registers: [this.registry],
      async collect() {
        await memory.refresh();
        this.reset();
        for (const i of detector.instances()) {
          const view = memory.view(i);
          if (!view) continue;
          this.set({ instance: i.id, state: 'resident' }, view.residentBytes);
          this.set({ instance: i.id, state: 'swapped' }, view.swappedBytes);
          this.set({ instance: i.id, state: 'compressed' }, view.compressedBytes);
        }
      },
    });
    new Gauge({
      name: 'doze_instances',
      help: 'Managed instances by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const counts = new Map<string, number>(INSTANCE_STATES.map((s) => [s, 0]));
        for (const i of detector.instances()) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'doze_instance_asleep',
      help: "1 while an instance sleeps (pausing, sleeping or waking): its observers get the metrics it served before it slept",
      labelNames: ['instance'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const i of detector.instances()) this.set({ instance: i.id }, i.state === 'pausing' || i.state === 'sleeping' || i.state === 'waking' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'doze_wakes_queued',
      help: 'Wakes waiting for room in the node budget',
      registers: [this.registry],
      collect() {
        this.set(detector.instances().filter((i) => i.queuedSinceMs !== undefined).length);
      },
    });
    new Gauge({
      name: 'doze_held_connections',
      help: 'Connections held while their instance wakes (hold mode)',
      labelNames: ['instance', 'runtime'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const i of detector.instances()) if (i.wake === 'hold') this.set(labelsOf(i), i.held);
      },
    });
    const listening = new WeakSet<Runtime>();
    detector.on('slept', (i) => {
      if (!this.managed(i)) return;
      this.sleeps.inc(labelsOf(i));
      // A reclaim only follows a sleep: subscribing at the first one is always in time.
      if (i.runtime.onReclaim && !listening.has(i.runtime)) {
        listening.add(i.runtime);
        i.runtime.onReclaim((outcome) => {
          if (!this.managed(i)) return;
          this.reclaims.inc({ ...labelsOf(i), result: outcome.result });
          if (outcome.result === 'done' || outcome.result === 'partial') this.reclaimSeconds.observe(labelsOf(i), outcome.ms / 1000);
        });
      }
    });
    detector.on('woke', (i, seconds, thawedBy) => {
      if (!this.managed(i)) return;
      this.wakes.inc(labelsOf(i));
      if (thawedBy === 'event-reader') this.wakesThawedAtEvent.inc(labelsOf(i));
      this.wakeSeconds.observe(labelsOf(i), seconds);
    });
    detector.on('firstResponse', (i, seconds) => this.managed(i) && this.firstResponseSeconds.observe(labelsOf(i), seconds));
    detector.on('wakeFailed', (i) => this.managed(i) && this.wakeFailures.inc(labelsOf(i)));
    detector.on('wakeEventMissed', (i) => this.managed(i) && this.wakeEventsMissed.inc(labelsOf(i)));
    detector.on('checkAnswered', (i) => this.managed(i) && this.checksAnswered.inc(labelsOf(i)));
  }

  /**
   * Whether an event about `i` may be counted: not once it is released (that would bring its series
   * back). Gives it its zero series first, so no later sync() zeroes what the event counts.
   */
  managed(i: ReadonlyInstance): boolean {
    if (this.detector.get(i.id) !== i) return false;
    this.ensureSeries(labelsOf(i));
    return true;
  }

  private ensureSeries(labels: InstanceLabels): void {
    const key = `${labels.instance}\0${labels.runtime}`;
    if (this.synced.has(key)) return;
    for (const counter of this.perInstanceCounters) counter.inc(labels, 0);
    for (const histogram of this.perInstanceHistograms) histogram.zero(labels);
    this.synced.set(key, labels);
  }

  /** The detector's overruns counted so far (it keeps the total; the counter follows it). */
  private overrunsCounted = 0;

  /** Zero series for instances that have none yet; removes the series of released ones. */
  sync(): void {
    const overruns = this.detector.budgetOverruns;
    this.budgetOverruns.inc(Math.max(0, overruns - this.overrunsCounted));
    this.overrunsCounted = Math.max(overruns, this.overrunsCounted);
    const current = new Map<string, InstanceLabels>();
    for (const i of this.detector.instances()) {
      const labels = labelsOf(i);
      current.set(`${labels.instance}\0${labels.runtime}`, labels);
    }
    for (const [key, labels] of this.synced) {
      if (current.has(key)) continue;
      for (const metric of [...this.perInstanceCounters, ...this.perInstanceHistograms]) metric.remove(labels);
      for (const result of RECLAIM_RESULTS) this.reclaims.remove({ ...labels, result });
      this.synced.delete(key);
    }
    for (const labels of current.values()) this.ensureSeries(labels);
    this.savings.sync();
  }

  /** The exposition text for GET /metrics, series reconciled first. */
  async text(): Promise<string> {
    this.sync();
    return this.registry.metrics();
  }
}
