import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Detector } from '../detector/detector.js';
import { INSTANCE_STATES } from '../detector/states.js';
import type { Runtime } from '../runtimes/runtime.js';
import { MemoryTracker } from './memory-view.js';

/** The metrics contract from DESIGN.md; names follow Prometheus conventions. */
export class Metrics {
  readonly registry = new Registry();
  readonly sleeps = new Counter({ name: 'doze_sleeps_total', help: 'Instances put to sleep', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakes = new Counter({ name: 'doze_wakes_total', help: 'Instances woken', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakeFailures = new Counter({ name: 'doze_wake_failures_total', help: 'Wakes that failed (the instance is reported critical)', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly checksAnswered = new Counter({ name: 'doze_health_checks_answered_total', help: 'Health checks answered by the stub for sleeping instances', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakeSeconds = new Histogram({
    name: 'doze_wake_seconds',
    help: 'Wake event (first packet seen by the tc program) to instance serving',
    labelNames: ['instance', 'runtime'],
    // 1 ms to 2 s, roughly doubling.
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2],
    registers: [this.registry],
  });

  readonly reclaims = new Counter({ name: 'doze_reclaims_total', help: "Reclaims of a sleeping instance's memory, by result (done, partial, cancelled by a wake, skipped, failed)", labelNames: ['instance', 'runtime', 'result'], registers: [this.registry] });
  readonly reclaimSeconds = new Histogram({
    name: 'doze_reclaim_seconds',
    help: "Time to push a sleeping instance's memory out (reclaims that ran to the end)",
    labelNames: ['instance', 'runtime'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
    registers: [this.registry],
  });
  /** Each instance's measured memory, shared with the status API. */
  readonly memory: MemoryTracker;

  constructor(detector: Detector) {
    collectDefaultMetrics({ register: this.registry });
    const memory = (this.memory = new MemoryTracker(detector));
    new Gauge({
      name: 'doze_instance_memory_bytes',
      help: "Memory an instance holds, from its memory cgroup: resident (charged to it now) or swapped",
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
      name: 'doze_wakes_queued',
      help: 'Wakes waiting for room in the node budget',
      registers: [this.registry],
      collect() {
        this.set(detector.instances().filter((i) => i.queuedSinceMs !== undefined).length);
      },
    });
    new Gauge({
      name: 'doze_budget_overruns',
      help: 'Wakes that went ahead over the node budget because nothing could sleep in time (cumulative)',
      registers: [this.registry],
      collect() {
        this.set(detector.budgetOverruns);
      },
    });
    new Gauge({
      name: 'doze_held_connections',
      help: 'Connections held while their instance wakes (hold mode)',
      labelNames: ['instance', 'runtime'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const i of detector.instances()) if (i.config.wake === 'hold') this.set({ instance: i.id, runtime: i.runtime.kind }, i.held);
      },
    });
    const labels = (i: { id: string; runtime: { kind: string } }) => ({ instance: i.id, runtime: i.runtime.kind });
    const listening = new WeakSet<Runtime>();
    detector.on('slept', (i) => {
      this.sleeps.inc(labels(i));
      // A reclaim only follows a sleep: subscribing at the first one is always in time.
      if (i.runtime.onReclaim && !listening.has(i.runtime)) {
        listening.add(i.runtime);
        i.runtime.onReclaim((outcome) => {
          this.reclaims.inc({ ...labels(i), result: outcome.result });
          if (outcome.result === 'done' || outcome.result === 'partial') this.reclaimSeconds.observe(labels(i), outcome.ms / 1000);
        });
      }
    });
    detector.on('woke', (i, seconds) => {
      this.wakes.inc(labels(i));
      this.wakeSeconds.observe(labels(i), seconds);
    });
    detector.on('wakeFailed', (i) => this.wakeFailures.inc(labels(i)));
  }
}
