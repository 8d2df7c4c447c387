import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector, type SleepHooks } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';

/*
 * What surrounds a pause or a resume (the check redirect, the state map) can fail: iptables,
 * doze-maps. The soak found a wake whose redirect removal failed left the instance in `waking`
 * for good, silently (the transition queue swallowed the error). No kernel: no root.
 */

function setup(hooks: Partial<SleepHooks>) {
  const config = parseConfig({ instances: [{ id: 'web', address: '10.213.0.2:8080', interface: 'dzx0h', idleTimeout: '1h', runtime: { kind: 'fake' } }] });
  const runtime = new FakeRuntime();
  const detector = new Detector(new FakeTrafficSource(), createLogger('silent'), {
    hooks: { beforeSleep: async () => {}, awake: async () => {}, wakeFailed: async () => {}, guardChecks: false, ...hooks },
  });
  const instance = new ManagedInstance(config.instances[0]!, runtime, monotonicNs());
  return { detector, runtime, instance };
}

test('a wake whose redirect removal fails still ends in running, with the failure kept as its last error', async (t) => {
  let fail = true;
  const { detector, runtime, instance } = setup({
    awake: async () => {
      if (fail) throw new Error('iptables -D failed on purpose');
    },
  });
  await detector.add(instance);
  t.true(await detector.sleepNow('web'));
  await detector.wake(instance, 'test');
  t.is(instance.state, 'running', 'not stuck in waking');
  t.is(runtime.state, 'running');
  t.regex(instance.lastError?.message ?? '', /finishing the wake: the check redirect: iptables -D failed on purpose/);
  // And it is managed as before: it sleeps and wakes again.
  fail = false;
  t.true(await detector.sleepNow('web'));
  await detector.wake(instance, 'test');
  t.is(instance.state, 'running');
  t.is(instance.wakes, 2);
  await detector.stop({ wakeAll: false });
});

test('a sleep whose redirect cannot be installed is undone: the instance stays running and says why', async (t) => {
  const { detector, runtime, instance } = setup({
    beforeSleep: async () => {
      throw new Error('iptables -A failed on purpose');
    },
  });
  await detector.add(instance);
  t.false(await detector.sleepNow('web'));
  t.is(instance.state, 'running', 'not stuck in pausing');
  t.is(runtime.sleeps, 0, 'never paused');
  t.regex(instance.lastError?.message ?? '', /redirecting its checks failed: iptables -A failed on purpose/);
  await detector.stop({ wakeAll: false });
});

test('a sleep whose map reads fail (doze-maps timing out) is undone, not left in pausing', async (t) => {
  const config = parseConfig({ instances: [{ id: 'web', address: '10.213.0.2:8080', interface: 'dzx0h', idleTimeout: '1h', runtime: { kind: 'fake' } }] });
  let fail = true;
  const source = new (class extends FakeTrafficSource {
    override async connections() {
      if (fail) throw new Error('doze-maps did not answer "dump" within 5000 ms');
      return [];
    }
  })();
  const runtime = new FakeRuntime();
  const detector = new Detector(source, createLogger('silent'), { hooks: { beforeSleep: async () => {}, awake: async () => {}, wakeFailed: async () => {}, guardChecks: true } });
  const instance = new ManagedInstance(config.instances[0]!, runtime, monotonicNs());
  await detector.add(instance);
  t.false(await detector.sleepNow('web'));
  t.is(instance.state, 'running', 'not stuck in pausing');
  t.is(runtime.sleeps, 0);
  t.regex(instance.lastError?.message ?? '', /reading its connections and counters failed: doze-maps did not answer/);
  fail = false;
  t.true(await detector.sleepNow('web'), 'the next sleep goes through');
  await detector.stop({ wakeAll: false });
});
