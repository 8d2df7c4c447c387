import test from 'ava';
import { BpfInstanceState } from '../../agent/sources/bpf-records.js';
import type { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { detectorHarness } from '../helpers/detector-harness.js';
import { describeFailure } from '../../agent/detector/reasons.js';

// Sleep and wake paths of agent/detector/detector.ts on a fake clock and scripted traffic (no kernel, no root).

test.serial('a packet to a sleeper raises one wake event and one wake; it then stays awake an idle timeout', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' }, { resumeMs: 30 });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  for (let i = 0; i < 50; i++) h.source.packet(instance.key); // a flood: the first packet signals, the rest count
  t.is(h.source.states_.get(instance.key), BpfInstanceState.signalled);
  await h.clock.tickAsync(0);
  t.is(instance.state, 'waking');
  await h.clock.tickAsync(30);
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1, 'one wake for the flood');
  t.is(instance.lastWakeMs, 30, 'timed from the first packet');
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake);
  t.false(h.redirected.has('web'), 'checks reach the instance again');
  await h.clock.tickAsync(999);
  t.is(instance.state, 'running');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'sleeping');
});

test.serial('cancelled sleep: a packet between the idle decision and the pause aborts it; nothing is paused', async (t) => {
  let target: ManagedInstance | undefined;
  const h = detectorHarness(t, { hooks: { beforeSleep: async (i) => void (i === target && h.source.packet(i.key)) } });
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' });
  target = instance;
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'running');
  t.is(runtime.sleeps, 0, 'the runtime was never asked to pause');
  t.deepEqual(h.reasons('web', 'running'), ['traffic arrived while deciding']);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake, 'the state map is awake again');
  // The packet counts as activity: the next try is an idle timeout after it.
  target = undefined;
  await h.clock.tickAsync(999);
  t.is(instance.state, 'running');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'sleeping');
});

test.serial('a packet while the runtime is pausing: the pause completes, then the instance is woken at once', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' }, { pauseMs: 100 });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'pausing');
  await h.clock.tickAsync(50);
  h.source.packet(instance.key);
  t.true(h.detector.wakeSignals.wakeRequested(instance));
  await h.clock.tickAsync(50);
  t.is(instance.state, 'running');
  t.is(runtime.sleeps, 1);
  t.is(runtime.wakes, 1);
  t.deepEqual(h.reasons('web', 'running'), ['traffic arrived while pausing']);
});

test.serial('a pause that fails is undone: awake, serving, the reason kept, and retried an idle timeout later', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' }, { failPause: true });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'running');
  t.regex(instance.lastError?.message ?? '', /pause failed: fake runtime: pause failed on purpose/);
  t.false(h.redirected.has('web'));
  runtime.knobs.failPause = false;
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
});

test.serial('a pause past pauseTimeout: the runtime is told its caller gave up, and the instance is woken and awake', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s', pauseTimeout: '200ms' }, { pauseMs: 5000 });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'pausing');
  t.false(runtime.sleepSignal?.aborted, 'the sleep is under way, its caller still waiting');
  await h.clock.tickAsync(200);
  t.true(runtime.sleepSignal?.aborted, 'the abandoned sleep can stop before its next step');
  t.is(instance.state, 'running');
  t.regex(instance.lastError?.message ?? '', /pause failed: pausing web did not finish within 200 ms/);
});

test.serial('a resume past wakeTimeout is a failed wake with the reason, and the state map stops raising wake events', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', wakeTimeout: '2s' }, { resumeMs: 10_000 });
  await h.clock.tickAsync(1000);
  h.source.packet(instance.key);
  await h.clock.tickAsync(2000);
  t.is(instance.state, 'failed');
  t.regex(instance.failure ? describeFailure(instance.failure) : '', /^wake failed: .*did not finish within 2000 ms/);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake);
});

test.serial('max_sleep: a sleeper wakes by itself after its longest sleep', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', maxSleep: '1m' });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  await h.clock.tickAsync(59_999);
  t.is(instance.state, 'sleeping');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'running');
  t.deepEqual(h.reasons('web', 'running'), ['max_sleep: asleep for 60000 ms']);
});

test.serial('lost wake events: the rescan wakes a sleeper the kernel marked signalled', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(1000);
  h.source.states_.set(instance.key, BpfInstanceState.signalled); // its event was lost
  h.source.emitGap('perf buffer overrun');
  await h.clock.tickAsync(0);
  t.is(instance.state, 'running');
  t.deepEqual(h.reasons('web', 'running'), ['traffic (found by rescan)']);
});

test.serial('with guarded checks, a health check in flight postpones the sleep instead of freezing under it', async (t) => {
  const h = detectorHarness(t, { hooks: { guardChecks: true } });
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' });
  h.source.connection(instance.key, 41_000, 'check');
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'running');
  t.is(runtime.sleeps, 0);
  t.deepEqual(h.reasons('web', 'running'), ['1 health check(s) in flight']);
  h.source.connection(instance.key, 41_000, 'answer');
  await h.clock.tickAsync(200); // re-checked at idleTimeout / 5
  t.is(instance.state, 'sleeping');
});
