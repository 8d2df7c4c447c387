import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector, type SleepHooks } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import type { RuntimeObservedState } from '../../agent/runtimes/runtime.js';
import { BpfInstanceState, monotonicNs } from '../../agent/sources/bpf-records.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';

/*
 * Adoption after an agent crash that landed mid-transition: the runtime (a VM
 * owner still saving or restoring) is in between. The restarted agent adopts
 * what it settles to, within the instance's deadlines (no kernel: no root).
 */

/** A runtime found mid-transition that becomes `settlesTo` after `afterMs` (forever in between when undefined). */
function midTransition(settlesTo: RuntimeObservedState, afterMs: number | undefined): FakeRuntime {
  const runtime = new FakeRuntime();
  runtime.state = 'transitioning';
  if (afterMs !== undefined) setTimeout(() => (runtime.state = settlesTo), afterMs);
  return runtime;
}

function setup(runtime: FakeRuntime, timeouts: { pauseTimeout?: string; wakeTimeout?: string } = {}) {
  const config = parseConfig({ instances: [{ id: 'vm', address: '10.213.0.2:8080', interface: 'dzx0h', idleTimeout: '1h', runtime: { kind: 'fake' }, ...timeouts }] });
  const source = new FakeTrafficSource();
  const redirected = new Set<string>();
  const hooks: SleepHooks = {
    beforePause: async (i) => void redirected.add(i.id),
    awake: async (i) => void redirected.delete(i.id),
    wakeFailed: async () => {},
    guardChecks: false,
  };
  const detector = new Detector(source, createLogger('silent'), { hooks });
  const instance = new ManagedInstance(config.instances[0]!, runtime, monotonicNs());
  return { detector, source, redirected, instance };
}

test('a runtime still waking when the agent restarts is adopted as running, not as a sleeper', async (t) => {
  const runtime = midTransition('running', 150);
  const { detector, source, redirected, instance } = setup(runtime);
  source.states_.set(instance.key, BpfInstanceState.signalled); // the crashed agent's wake left it signalled
  const started = performance.now();
  await detector.add(instance);
  t.true(performance.now() - started >= 140, 'add waited for the transition to end');
  t.is(instance.state, 'running');
  t.is(source.states_.get(instance.key), BpfInstanceState.awake, 'the state map says awake: no wake events for a running VM');
  t.false(redirected.has('vm'), 'its checks reach the VM itself, not the stub');
  t.is(runtime.resumes, 0, 'nothing to resume');
  await detector.stop({ wakeAll: false });
});

test('a runtime still pausing when the agent restarts is adopted as sleeping once asleep, and wakes on the next request', async (t) => {
  const runtime = midTransition('paused', 100);
  const { detector, source, redirected, instance } = setup(runtime);
  source.states_.set(instance.key, BpfInstanceState.pausing); // the crashed agent's sleep left it pausing
  await detector.add(instance);
  t.is(instance.state, 'sleeping');
  t.is(source.states_.get(instance.key), BpfInstanceState.sleeping, 'no instance left in pausing');
  t.true(redirected.has('vm'), 'its checks are answered by the stub while it sleeps');
  await detector.wake(instance, 'traffic');
  t.is(instance.state, 'running');
  t.is(runtime.resumes, 1);
  t.false(redirected.has('vm'));
  await detector.stop({ wakeAll: false });
});

test('a runtime stuck in between past the deadlines is adopted as asleep (bounded), and the next request resumes it', async (t) => {
  const runtime = midTransition('paused', undefined);
  const { detector, instance } = setup(runtime, { pauseTimeout: '200ms', wakeTimeout: '300ms' });
  const started = performance.now();
  await detector.add(instance);
  const took = performance.now() - started;
  t.true(took >= 290 && took < 1000, `add gave up after ${took.toFixed(0)} ms (max of the deadlines: 300 ms)`);
  t.is(instance.state, 'sleeping');
  await detector.wake(instance, 'traffic');
  t.is(instance.state, 'running');
  t.is(await runtime.inspect(), 'running');
  await detector.stop({ wakeAll: false });
});
