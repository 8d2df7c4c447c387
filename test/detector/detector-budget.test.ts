import test from 'ava';
import { detectorHarness } from '../helpers/detector-harness.js';

// The node budget inside agent/detector/detector.ts (makeRoom), on a fake clock (no kernel, no root).
// A "busy" guard (an instance doing work with no request in flight) is being added elsewhere: its path belongs here too.

const budget = { maxActive: 2, maxQueued: 64 };

test.serial('maxActive: waking a third instance first puts the least recently used awake one to sleep', async (t) => {
  const h = detectorHarness(t, { budget });
  const a = await h.add('a', { idleTimeout: '10m' });
  const b = await h.add('b', { idleTimeout: '10m' });
  const c = await h.add('c', { idleTimeout: '10m' });
  t.true(await h.detector.sleepNow('c'));
  await h.clock.tickAsync(100);
  h.source.packet(a.instance.key);
  await h.clock.tickAsync(100);
  h.source.packet(b.instance.key);
  h.source.packet(c.instance.key);
  await h.clock.tickAsync(0);
  t.is(c.instance.state, 'running');
  t.is(a.instance.state, 'sleeping', 'a, used longest ago, made room');
  t.is(b.instance.state, 'running');
  t.deepEqual(h.reasons('a', 'sleeping'), ['budget: making room for c']);
  t.is(h.detector.budgetOverruns, 0);
});

test.serial('when nothing may sleep (min_awake), the wake waits in the queue and goes ahead as soon as room appears', async (t) => {
  const h = detectorHarness(t, { budget });
  const a = await h.add('a', { idleTimeout: '10m', minAwake: '1h' });
  await h.add('b', { idleTimeout: '10m', minAwake: '1h' });
  const c = await h.add('c', { idleTimeout: '10m', wakeTimeout: '30s' });
  await h.detector.sleepNow('c');
  h.source.packet(c.instance.key);
  await h.clock.tickAsync(1000);
  t.is(c.instance.state, 'sleeping', 'still asleep: waiting for room');
  t.truthy(c.instance.queuedSinceMs, 'queued, as the status shows');
  await h.detector.sleepNow('b'); // room: an operator puts b to sleep
  await h.clock.tickAsync(0);
  t.is(c.instance.state, 'running');
  t.is(c.instance.queuedSinceMs, undefined);
  t.is(a.instance.state, 'running');
  t.is(h.detector.budgetOverruns, 0);
});

test.serial('no room within the wake deadline: it wakes anyway, over budget, and the overrun is counted (never hurt a request)', async (t) => {
  const h = detectorHarness(t, { budget });
  await h.add('a', { idleTimeout: '10m', minAwake: '1h' });
  await h.add('b', { idleTimeout: '10m', minAwake: '1h' });
  const c = await h.add('c', { idleTimeout: '10m', wakeTimeout: '2s' });
  await h.detector.sleepNow('c');
  h.source.packet(c.instance.key);
  await h.clock.tickAsync(1999);
  t.is(c.instance.state, 'sleeping');
  await h.clock.tickAsync(300);
  t.is(c.instance.state, 'running');
  t.is(h.detector.budgetOverruns, 1);
});

test.serial('a request in flight keeps an instance from being chosen to make room', async (t) => {
  const h = detectorHarness(t, { budget });
  const a = await h.add('a', { idleTimeout: '10m', idlePolicy: 'requests' });
  const b = await h.add('b', { idleTimeout: '10m', idlePolicy: 'requests' });
  const c = await h.add('c', { idleTimeout: '10m' });
  await h.detector.sleepNow('c');
  h.source.packet(a.instance.key);
  h.source.connection(a.instance.key, 40_000, 'request'); // a is older, but serving
  await h.clock.tickAsync(100);
  h.source.packet(b.instance.key);
  h.source.packet(c.instance.key);
  await h.clock.tickAsync(0);
  t.is(c.instance.state, 'running');
  t.is(a.instance.state, 'running', 'a has a request in flight');
  t.is(b.instance.state, 'sleeping');
});

test.serial('an instance that may not sleep (Nomad stopping its task, a check the stub cannot answer) is not chosen to make room: the next one is', async (t) => {
  const h = detectorHarness(t, { budget });
  const a = await h.add('a', { idleTimeout: '10m' });
  const b = await h.add('b', { idleTimeout: '10m' });
  const c = await h.add('c', { idleTimeout: '10m' });
  await h.detector.sleepNow('c');
  h.detector.holdAwake(a.instance, { kind: 'nomad-task-event', event: 'Killing', message: undefined, stopping: true }, 20_000);
  h.source.packet(a.instance.key);
  await h.clock.tickAsync(100);
  h.source.packet(b.instance.key);
  h.source.packet(c.instance.key);
  await h.clock.tickAsync(0);
  t.is(c.instance.state, 'running');
  t.is(a.instance.state, 'running', 'a, used longest ago, is held awake');
  t.is(b.instance.state, 'sleeping');
  t.is(h.detector.budgetOverruns, 0);
});
