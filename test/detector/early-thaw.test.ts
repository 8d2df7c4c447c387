import test from 'ava';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// Thaw at the event (agent/detector/early-thaw.ts) on the fake source, whose reader fires an
// armed thaw as doze-maps does: which sleepers are armed, when they are disarmed, the budget's
// room, and what the wake then reports. The real reader and cgroup: test/agent/thaw-at-event.test.ts.

/** A fake runtime whose wake is one write, as a plain freezer's is. */
function freezerLike(): FakeRuntime {
  return Object.assign(new FakeRuntime(), { earlyThaw: () => ({ file: '/sys/fs/cgroup/freezer/x/freezer.state', value: 'THAWED' }) });
}

test.serial('a plain freezer sleeper is armed with its sleep start, thawed at its event, and disarmed once awake', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  t.true(await h.detector.sleepNow('a'));
  await h.detector.earlyThaws.settled();
  const armed = h.source.earlyThaw.armed.get(instance.key);
  t.truthy(armed, 'armed once asleep');
  t.is(armed!.value, 'THAWED');
  t.is(h.source.earlyThaw.room, -1, 'no budget: no limit');
  await h.clock.tickAsync(5);
  h.source.packet(instance.key);
  t.deepEqual(h.source.earlyThaw.thawed, [instance.key], 'the reader thawed it at the event');
  await h.clock.tickAsync(0);
  await h.detector.earlyThaws.settled();
  t.is(instance.state, 'running');
  t.false(h.source.earlyThaw.armed.has(instance.key));
  t.false(h.detector.earlyThaws.isArmed(instance));
});

test.serial('a wake another way (operator) disarms it, and the next sleep arms it again with its own start', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  const first = h.source.earlyThaw.armed.get(instance.key)!.sinceNs;
  await h.detector.wake(instance, 'requested by operator');
  await h.detector.earlyThaws.settled();
  t.false(h.source.earlyThaw.armed.has(instance.key), 'awake: nothing armed');
  await h.clock.tickAsync(10);
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  const second = h.source.earlyThaw.armed.get(instance.key)!.sinceNs;
  t.true(second > first, 'an event of the first sleep cannot fire the second one');
  // A late event of the earlier sleep: not thawed, and (stale) no wake either.
  h.source.emitWake({ instanceAddr: instance.key, ifindex: 1, tsNs: first + 1n });
  t.deepEqual(h.source.earlyThaw.thawed, []);
  await h.clock.tickAsync(0);
  t.is(instance.state, 'sleeping');
});

test.serial('hold mode, dry run and a runtime whose wake is more than a write are never armed', async (t) => {
  const h = detectorHarness(t);
  const hold = await h.add('hold', { idleTimeout: '10m', wake: 'hold' }, freezerLike());
  const rehearsed = await h.add('dry', { idleTimeout: '1s', dryRun: true }, freezerLike());
  const plain = await h.add('vm', { idleTimeout: '10m' });
  await h.detector.sleepNow('hold');
  await h.detector.sleepNow('vm');
  await h.clock.tickAsync(3000); // the dry-run one would have slept by now
  await h.detector.earlyThaws.settled();
  t.is(rehearsed.instance.state, 'running', 'rehearsed: never frozen');
  t.deepEqual([...h.source.earlyThaw.armed.keys()], []);
  t.is(hold.instance.state, 'sleeping');
  t.is(plain.instance.state, 'sleeping');
});

test.serial('budget: only a sleeper that fits without making room is armed, and the reader may thaw one before the agent says again', async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 2, maxQueued: 8 } });
  const a = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  const b = await h.add('b', { idleTimeout: '10m' }, freezerLike());
  await h.add('c', { idleTimeout: '10m', minAwake: '1h' });
  await h.detector.sleepNow('a');
  await h.detector.sleepNow('b');
  await h.detector.earlyThaws.settled();
  t.is(h.source.earlyThaw.room, 1, 'one awake of two: room for one');
  t.deepEqual([...h.source.earlyThaw.armed.keys()].sort(), [a.instance.key, b.instance.key].sort());
  // Both get a packet at once: the first is thawed by the reader, the second waits for the agent.
  h.source.packet(a.instance.key);
  h.source.packet(b.instance.key);
  t.deepEqual(h.source.earlyThaw.thawed, [a.instance.key]);
  await h.clock.tickAsync(0);
  await h.detector.earlyThaws.settled();
  t.is(a.instance.state, 'running');
  t.deepEqual([...h.source.earlyThaw.armed.keys()], [], 'full: nothing armed');
  t.is(h.source.earlyThaw.room, 0);
});

test.serial('the wake reports the early thaw as its time, and a first response that beat the wake is kept', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  runtime.knobs.resumeMs = 40; // the agent's own part takes 40 ms; the reader thawed it at once
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  await h.clock.tickAsync(5);
  h.source.packet(instance.key);
  const signalNs = h.source.counters.get(instance.key)!.lastSeenNs;
  // Thawed at the event, the app answers before the agent's wake has even started.
  await h.clock.tickAsync(1);
  h.source.emitWake({ instanceAddr: instance.key, ifindex: 1, tsNs: signalNs + 1_000_000n, answersWakeNs: signalNs });
  await h.clock.tickAsync(100);
  t.is(instance.state, 'running');
  t.true(instance.lastWakeMs! < 1, `wake counted to the early thaw, not the agent's 40 ms: ${instance.lastWakeMs} ms`);
  t.is(instance.lastFirstResponseMs, 1, 'the first response came 1 ms after its packet');
});

test.serial('earlyThaw: false leaves every thaw to the agent', async (t) => {
  const h = detectorHarness(t, { earlyThaw: false });
  const { instance } = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  t.false(h.detector.earlyThaws.enabled);
  t.deepEqual([...h.source.earlyThaw.armed.keys()], []);
  h.source.packet(instance.key);
  await h.clock.tickAsync(0);
  t.deepEqual(h.source.earlyThaw.thawed, []);
  t.is(instance.state, 'running');
});
