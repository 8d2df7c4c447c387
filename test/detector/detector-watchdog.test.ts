import test from 'ava';
import { LATE_EVENT_MS, WAKE_EVENT_GRACE_MS, WATCHDOG_INTERVAL_MS } from '../../agent/detector/wake-signals.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// The wake watchdog of agent/detector/detector.ts on a fake clock and scripted traffic (no kernel, no root).

test.serial('a lost wake event: the watchdog wakes the sleeper within one interval and the grace, and counts it', async (t) => {
  const h = detectorHarness(t, { dropWakeEvents: 1 });
  const missed: string[] = [];
  h.detector.on('wakeEventMissed', (i) => missed.push(i.id));
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  h.source.packet(instance.key); // its event is dropped by the knob
  await h.clock.tickAsync(0);
  t.is(instance.state, 'sleeping', 'no event reached the detector');
  await h.clock.tickAsync(WATCHDOG_INTERVAL_MS + WAKE_EVENT_GRACE_MS);
  t.is(instance.state, 'running', 'woken at once');
  t.is(runtime.wakes, 1);
  t.deepEqual(missed, [], 'not counted yet: its event may only be late');
  await h.clock.tickAsync(LATE_EVENT_MS);
  t.deepEqual(missed, ['web'], 'no event came within LATE_EVENT_MS: missed');
  t.is(h.detector.wakeEvents.missed, 1);
  t.deepEqual(h.reasons('web', 'running'), ['traffic (wake event missed; found by the watchdog)']);
});

test.serial('a packet whose event arrives: the watchdog leaves it to the event and counts nothing', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' }, { resumeMs: 200 });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  h.source.packet(instance.key);
  // A slow wake: still waking when the watchdog looks, several times over.
  await h.clock.tickAsync(3 * WATCHDOG_INTERVAL_MS);
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1, 'one wake, by the event');
  t.is(h.detector.wakeEvents.missed, 0);
});

test.serial('a packet that raced the pause and lost its event: the state it left wakes the instance right after the pause, before any watchdog', async (t) => {
  const h = detectorHarness(t, { dropWakeEvents: 1 });
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' }, { pauseMs: 100 });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'pausing');
  await h.clock.tickAsync(50);
  h.source.packet(instance.key); // signals the pausing instance; the event is lost
  t.false(h.detector.wakeSignals.wakeRequested(instance));
  await h.clock.tickAsync(50);
  // The agent's PAUSING -> SLEEPING swap found SIGNALLED: it left it, and woke the instance.
  t.is(instance.state, 'running', 'woken as the pause completed (it used to be overwritten with sleeping and left to the watchdog)');
  t.is(runtime.wakes, 1);
  t.deepEqual(h.reasons('web', 'waking'), ['traffic arrived while pausing']);
  await h.clock.tickAsync(LATE_EVENT_MS);
  t.is(h.detector.wakeEvents.missed, 0, 'not the watchdog\'s doing');
});

test.serial('no sleepers, no reads: the watchdog is disarmed while everything is awake', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  h.source.packet(instance.key);
  await h.clock.tickAsync(10);
  t.is(instance.state, 'running');
  await h.clock.tickAsync(WATCHDOG_INTERVAL_MS * 2); // let an armed timer run once and disarm
  const reads = h.source.reads.counters;
  await h.clock.tickAsync(WATCHDOG_INTERVAL_MS * 5);
  t.is(h.source.reads.counters, reads, 'no counter reads while nothing sleeps (the idle check is not due yet)');
});

test.serial('a wake the watchdog made still gets its first response from the tc program\'s record', async (t) => {
  const h = detectorHarness(t, { dropWakeEvents: 1 });
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  h.source.packet(instance.key); // it signals; its event is dropped: the watchdog wakes it
  const signalNs = h.source.counters.get(instance.key)!.lastSeenNs;
  await h.clock.tickAsync(20);
  h.source.packet(instance.key); // a retransmission: the watchdog sees this one as the last packet
  await h.clock.tickAsync(WATCHDOG_INTERVAL_MS + WAKE_EVENT_GRACE_MS);
  t.is(instance.state, 'running');
  await h.clock.tickAsync(5);
  // The record names the packet that signalled the wake, which the watchdog never saw as an event.
  h.source.emitWake({ instanceAddr: instance.key, ifindex: 1, tsNs: signalNs + 7_000_000n, answersWakeNs: signalNs });
  t.is(instance.lastFirstResponseMs, 7);
});
