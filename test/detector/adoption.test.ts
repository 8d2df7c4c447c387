import test from 'ava';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import type { RuntimeObservedState } from '../../agent/runtimes/runtime.js';
import { BpfInstanceState } from '../../agent/sources/bpf-records.js';
import { detectorHarness } from '../helpers/detector-harness.js';

/*
 * Adoption after an agent crash: a workload left asleep, or (a VM owner still
 * saving or restoring) in between. The restarted agent adopts what it settles
 * to, within the instance's deadlines. Fake clock, no kernel, no root.
 */

/** A runtime found mid-transition that becomes `settlesTo` after `afterMs` (forever in between when undefined). */
function midTransition(settlesTo: RuntimeObservedState, afterMs: number | undefined): FakeRuntime {
  const runtime = new FakeRuntime();
  runtime.state = 'transitioning';
  if (afterMs !== undefined) setTimeout(() => (runtime.state = settlesTo), afterMs);
  return runtime;
}

const config = { idleTimeout: '1h' };

test.serial('a workload left paused is adopted as sleeping, its checks go to the stub, and the next packet wakes it', async (t) => {
  const h = detectorHarness(t);
  const paused = new FakeRuntime();
  paused.state = 'asleep';
  const { instance, runtime } = await h.add('vm', config, paused);
  t.is(instance.state, 'sleeping');
  t.deepEqual(h.reasons('vm'), ['adopted a paused workload after restart', 'adopted']);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.sleeping);
  t.true(h.redirected.has('vm'));
  h.source.packet(instance.key);
  await h.clock.tickAsync(0);
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1);
});

test.serial('a workload left paused that got traffic while no agent ran (signalled) is woken at once', async (t) => {
  const h = detectorHarness(t);
  const paused = new FakeRuntime();
  paused.state = 'asleep';
  const { instance, runtime } = h.instance('vm', config, paused);
  h.source.states_.set(instance.key, BpfInstanceState.signalled);
  await h.detector.add(instance);
  await h.clock.tickAsync(0);
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1);
  t.deepEqual(h.reasons('vm', 'waking'), ['traffic arrived while no agent was running']);
});

test.serial('a runtime still waking when the agent restarts is adopted as running, not as a sleeper', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = h.instance('vm', config, midTransition('running', 150));
  h.source.states_.set(instance.key, BpfInstanceState.signalled); // the crashed agent's wake left it signalled
  let added = false;
  const adding = h.detector.add(instance).then(() => (added = true));
  await h.clock.tickAsync(140);
  t.false(added, 'add waits for the transition to end');
  await h.clock.tickAsync(20);
  await adding;
  t.is(instance.state, 'running');
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake, 'the state map says awake: no wake events for a running VM');
  t.false(h.redirected.has('vm'), 'its checks reach the VM itself, not the stub');
  t.is(runtime.wakes, 0, 'nothing to resume');
});

test.serial('a runtime still pausing when the agent restarts is adopted as sleeping once asleep, and wakes on the next request', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = h.instance('vm', config, midTransition('asleep', 100));
  h.source.states_.set(instance.key, BpfInstanceState.pausing); // the crashed agent's sleep left it pausing
  const adding = h.detector.add(instance);
  await h.clock.tickAsync(120);
  await adding;
  t.is(instance.state, 'sleeping');
  t.is(h.source.states_.get(instance.key), BpfInstanceState.sleeping, 'no instance left in pausing');
  t.true(h.redirected.has('vm'), 'its checks are answered by the stub while it sleeps');
  await h.detector.wake(instance, 'traffic');
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1);
  t.false(h.redirected.has('vm'));
});

test.serial('a runtime stuck in between past the deadlines is adopted as asleep (bounded), and the next request resumes it', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = h.instance('vm', { ...config, pauseTimeout: '200ms', wakeTimeout: '300ms' }, midTransition('asleep', undefined));
  let added = false;
  const adding = h.detector.add(instance).then(() => (added = true));
  await h.clock.tickAsync(280);
  t.false(added, 'still waiting inside the larger deadline (300 ms)');
  await h.clock.tickAsync(40);
  await adding;
  t.is(instance.state, 'sleeping');
  await h.detector.wake(instance, 'traffic');
  t.is(instance.state, 'running');
  t.is(await runtime.inspect(), 'running');
});
