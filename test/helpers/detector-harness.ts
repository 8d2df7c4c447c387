import { install } from '@sinonjs/fake-timers';
import type { ExecutionContext } from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector, type DetectorOptions, type SleepHooks, type TransitionEvent } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime, type FakeRuntimeKnobs } from '../../agent/runtimes/fake.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import type { TrafficSource } from '../../agent/sources/traffic-source.js';
import { FakeTrafficSource } from './fake-traffic-source.js';

/*
 * The detector over a scripted traffic source and fake runtimes, on a fake
 * clock (@sinonjs/fake-timers: setTimeout, Date, performance and process.hrtime,
 * which monotonicNs() reads), so idle, sleep, wake and budget paths run in
 * milliseconds without a kernel. The clock is global: tests that use it are serial.
 */

export interface Harness {
  clock: ReturnType<typeof install>;
  source: FakeTrafficSource;
  detector: Detector;
  transitions: TransitionEvent[];
  /** Instances whose checks the stub answers (between beforeSleep and awake). */
  redirected: Set<string>;
  /** An instance on a fake runtime, not added yet (defaults: traffic policy, 1 s idle timeout). */
  instance(id: string, config?: Record<string, unknown>, runtime?: FakeRuntime | FakeRuntimeKnobs): { instance: ManagedInstance; runtime: FakeRuntime };
  /** instance(), then managed by the detector. */
  add(id: string, config?: Record<string, unknown>, runtime?: FakeRuntime | FakeRuntimeKnobs): Promise<{ instance: ManagedInstance; runtime: FakeRuntime }>;
  /** The reasons of `id`'s transitions to `to`, in order. */
  reasons(id: string, to?: string): string[];
}

export interface HarnessOptions extends Omit<DetectorOptions, 'hooks'> {
  hooks?: Partial<SleepHooks>;
  /** Start the detector before the test adds instances (default true). */
  start?: boolean;
  /** What the detector reads through (default the fake itself; e.g. steppedSource(fake).source). */
  wrapSource?: (fake: FakeTrafficSource) => TrafficSource;
}

/** Installs the fake clock (uninstalled at teardown) and builds a detector on it. */
export function detectorHarness(t: ExecutionContext, options: HarnessOptions = {}): Harness {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance', 'hrtime'], now: 1_000_000 });
  // The fake process.hrtime starts at 0, which the kernel's records use for "never": start later.
  clock.tick(1000);
  const source = new FakeTrafficSource();
  const redirected = new Set<string>();
  const hooks: SleepHooks = {
    beforeSleep: async (i) => void redirected.add(i.id),
    awake: async (i) => void redirected.delete(i.id),
    wakeFailed: async () => {},
    guardChecks: false,
    ...options.hooks,
  };
  const detector = new Detector(options.wrapSource?.(source) ?? source, createLogger('silent'), { ...options, hooks });
  const transitions: TransitionEvent[] = [];
  detector.on('transition', (event) => transitions.push(event));
  let next = 2;
  t.teardown(async () => {
    await detector.stop({ wakeAll: false });
    clock.uninstall();
  });
  if (options.start ?? true) detector.start();
  return {
    clock,
    source,
    detector,
    transitions,
    redirected,
    instance(id, config = {}, runtime = {}) {
      const n = next++;
      const parsed = parseConfig({ instances: [{ id, address: `10.213.0.${n}:8080`, interface: `dzx${n}h`, idleTimeout: '1s', idlePolicy: 'traffic', runtime: { kind: 'fake' }, ...config }] });
      const fake = runtime instanceof FakeRuntime ? runtime : new FakeRuntime(runtime);
      return { instance: new ManagedInstance(parsed.instances[0]!, fake, monotonicNs()), runtime: fake };
    },
    async add(id, config = {}, runtime = {}) {
      const made = this.instance(id, config, runtime);
      await detector.add(made.instance);
      return made;
    },
    reasons(id, to) {
      return transitions.filter((e) => e.instance.id === id && (to === undefined || e.to === to)).map((e) => e.reason);
    },
  };
}
