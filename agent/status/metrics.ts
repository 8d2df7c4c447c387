import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Detector } from '../detector/detector.js';
import { INSTANCE_STATES } from '../detector/states.js';

/** The metrics contract from DESIGN.md; names follow Prometheus conventions. */
export class Metrics {
  readonly registry = new Registry();
  readonly sleeps = new Counter({ name: 'doze_sleeps_total', help: 'Instances put to sleep', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakes = new Counter({ name: 'doze_wakes_total', help: 'Instances woken', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakeFailures = new Counter({ name: 'doze_wake_failures_total', help: 'Wakes that failed (the instance is reported critical)', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakeEventsMissed = new Counter({ name: 'doze_wake_events_missed_total', help: 'Sleepers woken by the watchdog: traffic reached them but no wake event came', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly checksAnswered = new Counter({ name: 'doze_health_checks_answered_total', help: 'Health checks answered by the stub for sleeping instances', labelNames: ['instance', 'runtime'], registers: [this.registry] });
  readonly wakeSeconds = new Histogram({
    name: 'doze_wake_seconds',
    help: 'Wake event (first packet seen by the tc program) to instance serving',
    labelNames: ['instance', 'runtime'],
    // 1 ms to 2 s, roughly doubling.
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2],
    registers: [this.registry],
  });

  constructor(detector: Detector) {
    collectDefaultMetrics({ register: this.registry });
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
        for (const i of detector.instances()) if (i.wake === 'hold') this.set({ instance: i.id, runtime: i.runtime.kind }, i.held);
      },
    });
    const labels = (i: { id: string; runtime: { kind: string } }) => ({ instance: i.id, runtime: i.runtime.kind });
    detector.on('slept', (i) => this.sleeps.inc(labels(i)));
    detector.on('woke', (i, seconds) => {
      this.wakes.inc(labels(i));
      this.wakeSeconds.observe(labels(i), seconds);
    });
    detector.on('wakeFailed', (i) => this.wakeFailures.inc(labels(i)));
    detector.on('wakeEventMissed', (i) => this.wakeEventsMissed.inc(labels(i)));
  }
}
