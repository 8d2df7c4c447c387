import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector, type SleepHooks, type TransitionEvent } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/shared/log.js';
import { ScriptedCpu } from '../helpers/scripted-cpu.js';
import { type InstanceCounters } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';
import { describeHold } from '../../agent/detector/reasons.js';

/*
 * The busy guard inside the detector, on a fake runtime whose CPU use is scripted
 * (a share of one core that the test sets): no kernel, no root.
 */

/** No packet ever (last seen 0): the instance is idle from its idle timeout on. */
class Silent extends FakeTrafficSource {
  override async counter(): Promise<InstanceCounters> {
    return { packets: 0n, lastSeenNs: 0n, checks: 0n, outPackets: 0n };
  }
}

function setup(runtime: ScriptedCpu, hooks: Partial<SleepHooks> = {}, overrides: Record<string, unknown> = {}) {
  const config = parseConfig({ instances: [{ id: 'web', address: '10.213.0.2:8080', interface: 'dzx0h', idleTimeout: '200ms', idlePolicy: 'traffic', runtime: { kind: 'fake' }, ...overrides }] });
  const detector = new Detector(new Silent(), createLogger('silent'), {
    hooks: { beforeSleep: async () => {}, awake: async () => {}, wakeFailed: async () => {}, guardChecks: false, ...hooks },
  });
  detector.start();
  const instance = new ManagedInstance(config.instances[0]!, runtime, monotonicNs());
  const transitions: TransitionEvent[] = [];
  detector.on('transition', (e) => transitions.push(e));
  return { detector, instance, transitions };
}

function stateWithin(detector: Detector, id: string, state: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id} not ${state} within ${ms} ms`)), ms);
    const listener = (e: TransitionEvent) => {
      if (e.instance.id === id && e.to === state) {
        clearTimeout(timer);
        detector.off('transition', listener);
        resolve();
      }
    };
    detector.on('transition', listener);
  });
}

test('a computing workload is held with its figures, then sleeps when it stops, saying how long it was busy', async (t) => {
  const runtime = new ScriptedCpu();
  runtime.share = 1;
  const { detector, instance, transitions } = setup(runtime);
  await detector.add(instance);
  detector.start();
  t.teardown(() => detector.stop({ wakeAll: false }));
  const started = performance.now();
  setTimeout(() => (runtime.share = 0), 600);
  const heldBy = new Set<string>();
  const sampler = setInterval(() => instance.heldBy && heldBy.add(describeHold(instance.heldBy)), 10);
  await stateWithin(detector, 'web', 'sleeping', 3000);
  clearInterval(sampler);
  t.true(performance.now() - started >= 600, 'not before the work ended');
  t.true([...heldBy].some((r) => /^busy: \d+ ms CPU in the last \d+ ms$/.test(r)), [...heldBy].join(' | '));
  t.regex(transitions.find((e) => e.to === 'pausing')!.reason, /^no traffic for \d+ ms, after \d+ ms busy$/);
  t.is(instance.heldBy, undefined, 'nothing holds it once asleep');
});

test('work that starts between the decision and the pause aborts the sleep (checked again after beforeSleep)', async (t) => {
  const runtime = new ScriptedCpu();
  let pauses = 0;
  const { detector, instance, transitions } = setup(runtime, {
    beforeSleep: async () => {
      // The first time: a job is picked up right as the sleep starts, and runs 300 ms.
      if (pauses++ === 0) {
        runtime.share = 1;
        await new Promise((resolve) => setTimeout(resolve, 250));
        setTimeout(() => (runtime.share = 0), 50);
      }
    },
  }, { idleTimeout: '200ms' });
  await detector.add(instance);
  detector.start();
  t.teardown(() => detector.stop({ wakeAll: false }));
  await stateWithin(detector, 'web', 'sleeping', 4000);
  const aborted = transitions.find((e) => e.from === 'pausing' && e.to === 'running');
  t.truthy(aborted, 'the first sleep was undone');
  t.regex(aborted!.reason, /^busy: \d+ ms CPU in the last \d+ ms$/);
  t.is(runtime.sleeps, 1, 'the runtime paused once: after the work, never during it');
});

test('busy forever: max_awake still puts it to sleep, and says why', async (t) => {
  const runtime = new ScriptedCpu();
  runtime.share = 0.5;
  const { detector, instance, transitions } = setup(runtime, {}, { maxAwake: '800ms' });
  await detector.add(instance);
  detector.start();
  t.teardown(() => detector.stop({ wakeAll: false }));
  const started = performance.now();
  await stateWithin(detector, 'web', 'sleeping', 3000);
  t.true(performance.now() - started >= 780);
  t.regex(transitions.find((e) => e.to === 'pausing')!.reason, /^max_awake: no packet for \d+ ms despite busy: \d+ ms CPU in the last \d+ ms$/);
});

test('a share below busyCpu is quiet: it sleeps at its idle timeout', async (t) => {
  const runtime = new ScriptedCpu();
  runtime.share = 0.05;
  const { detector, instance } = setup(runtime);
  await detector.add(instance);
  detector.start();
  t.teardown(() => detector.stop({ wakeAll: false }));
  const started = performance.now();
  await stateWithin(detector, 'web', 'sleeping', 2000);
  t.true(performance.now() - started < 200 + 150, `slept after ${(performance.now() - started).toFixed(0)} ms`);
});
