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

// Found in review: windows where the reader could thaw with room another wake was given, or an
// arm of an earlier sleep fire during the next one's pause.

test.serial('budget: while a wake makes room (its victim just fell asleep), no sleeper is thawed with that room', async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 1, maxQueued: 8 } });
  const a = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  const b = await h.add('b', { idleTimeout: '10m' }, freezerLike());
  await h.detector.sleepNow('b');
  await h.detector.earlyThaws.settled();
  // The moment a is armed (just put to sleep to make room for b), a packet reaches a.
  const arm = h.source.earlyThaw.arm.bind(h.source.earlyThaw);
  let packetSent = false;
  h.source.earlyThaw.arm = (key, thaw) => {
    const armed = arm(key, thaw);
    if (key === a.instance.key && !packetSent) {
      packetSent = true;
      queueMicrotask(() => h.source.packet(a.instance.key));
    }
    return armed;
  };
  h.source.packet(b.instance.key);
  for (let i = 0; i < 50; i++) await h.clock.tickAsync(10);
  t.true(packetSent, 'a was armed while b woke');
  t.false(h.source.earlyThaw.thawed.includes(a.instance.key), "a was not thawed with the room b's wake was given");
  t.is(h.detector.budgetOverruns, 0);
});

test.serial('budget: an instance taken on awake takes the room back before anything else can happen', async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 1, maxQueued: 8 } });
  const a = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  t.is(h.source.earlyThaw.room, 1, 'nothing awake: room for a');
  await h.add('c', { idleTimeout: '10m', minAwake: '1h' });
  t.is(h.source.earlyThaw.room, 0, 'c is awake now: no room left');
  h.source.packet(a.instance.key);
  t.deepEqual(h.source.earlyThaw.thawed, [], 'a must wait for room: not thawed at its event');
});

test.serial("an arm of an earlier sleep never fires during the next sleep's pause", async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 5, maxQueued: 8 } });
  const a = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  await h.add('b', { idleTimeout: '10m' });
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  t.true(h.source.earlyThaw.armed.has(a.instance.key));
  // Another instance's transition starts a refresh (it reads the budget); meanwhile a wakes another
  // way and starts its next sleep, whose pause takes a while.
  void h.detector.sleepNow('b');
  await h.detector.wake(a.instance, 'requested by operator');
  t.false(h.source.earlyThaw.armed.has(a.instance.key), 'disarmed as it left sleeping, not later');
  a.runtime.knobs.pauseMs = 50;
  const sleeping = h.detector.sleepNow('a');
  await h.clock.tickAsync(10);
  t.is(a.instance.state, 'pausing');
  h.source.packet(a.instance.key);
  t.deepEqual(h.source.earlyThaw.thawed, [], 'nothing thawed mid-pause');
  await h.clock.tickAsync(100);
  await sleeping;
  t.is(a.instance.state, 'running', 'the packet during the pause reversed the sleep, the agent thawing it');
});

test.serial('an instance that leaves management while asleep is disarmed at once', async (t) => {
  const h = detectorHarness(t);
  const a = await h.add('a', { idleTimeout: '10m' }, freezerLike());
  await h.detector.sleepNow('a');
  await h.detector.earlyThaws.settled();
  t.true(h.source.earlyThaw.armed.has(a.instance.key));
  const removing = h.detector.remove('a', { wake: false });
  t.false(h.source.earlyThaw.armed.has(a.instance.key), 'disarmed before its removal completes');
  await removing;
});
