import { EventEmitter } from 'node:events';
import { install } from '@sinonjs/fake-timers';
import test from 'ava';
import type { Detector } from '../../agent/detector/detector.js';
import type { ReadonlyInstance } from '../../agent/detector/managed-instance.js';
import { HOUR_MS, quantile, SavingsLedger } from '../../agent/status/savings.js';
import { Metrics } from '../../agent/status/metrics.js';
import { viewOf } from '../../agent/status/instance-view.js';
import { renderRows } from '../../agent/status/page.js';
import { parseConfig } from '../../agent/config/load.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// The savings ledger (agent/status/savings.ts) over a scripted day on a fake clock: the detector's events, scripted.

const MIN = 60_000;
const MiB = 2 ** 20;

test.serial('a scripted day: asleep 45 min of every hour, 100 MiB freed (measured) from its first minute asleep', (t) => {
  const clock = install({ toFake: ['Date'], now: Date.UTC(2026, 11, 7) });
  t.teardown(() => clock.uninstall());
  const events = new EventEmitter();
  const instance = { id: 'web', state: 'running', managedSinceMs: Date.now() } as { id: string; state: string; managedSinceMs: number };
  const detector = Object.assign(events, { instances: () => [instance] }) as unknown as Detector;
  const ledger = new SavingsLedger(detector, (i) => (i.state === 'sleeping' ? 100 * MiB : undefined));
  const view = instance as unknown as ReadonlyInstance;
  const go = (to: string, from: string) => {
    instance.state = to;
    events.emit('transition', { instance: view, from, to, reason: 'script', at: Date.now() });
  };
  for (let hour = 0; hour < 24; hour++) {
    if (hour > 0) {
      go('waking', 'sleeping');
      go('running', 'waking');
      events.emit('woke', view, 0.001);
      events.emit('firstResponse', view, hour / 1000); // hour h's wake answered in h ms
    }
    clock.tick(15 * MIN);
    go('pausing', 'running');
    go('sleeping', 'pausing');
    clock.tick(MIN);
    ledger.measure(); // a status request a minute into the sleep: the reclaim is done
    clock.tick(44 * MIN);
  }
  const s = ledger.view(view);
  t.is(s.lastDay.managedMs, 24 * HOUR_MS);
  t.is(s.lastDay.asleepMs, 24 * 45 * MIN);
  t.is(s.lastDay.asleepShare, 0.75);
  t.deepEqual(s.lastHour, { asleepMs: 45 * MIN, managedMs: HOUR_MS, asleepShare: 0.75 });
  t.is(s.asleepSecondsTotal, 24 * 45 * 60);
  t.is(s.memoryFreedByteSeconds, 24 * 44 * 60 * 100 * MiB, '44 min of 100 MiB per sleep: the first minute was not measured yet');
  t.is(s.memoryFreedBytesNow, 100 * MiB);
  t.deepEqual(s.wakes, { count: 23, firstResponseP50Ms: 12, firstResponseP99Ms: 23 });
  // The node: one instance, the same figures.
  t.deepEqual(ledger.node(), s);
  // An hour and a minute later, still asleep: the day window slides past the first hour.
  clock.tick(HOUR_MS + MIN);
  const later = ledger.view(view);
  t.is(later.lastDay.asleepMs, 22 * 45 * MIN + 106 * MIN, 'hours 1 to 22 asleep 45 min each, then asleep since 23:15');
  t.is(later.lastHour.asleepShare, 1);
  t.is(later.wakes.count, 22, 'the wake at 01:00 the day before has left the day');
});

test('quantile: nearest rank', (t) => {
  t.is(quantile([], 0.5), null);
  t.is(quantile([5], 0.99), 5);
  t.is(quantile([1, 2, 3, 4], 0.5), 2);
  t.is(quantile([...Array(100).keys()].map((n) => n + 1), 0.99), 99);
});

test.serial('doze_asleep_seconds_total and doze_memory_freed_byte_seconds_total count an instance\'s sleep', async (t) => {
  const h = detectorHarness(t);
  const metrics = new Metrics(h.detector);
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  await h.clock.tickAsync(5000);
  const text = await metrics.text();
  t.regex(text, /^doze_asleep_seconds_total\{instance="web",runtime="fake"\} 5$/m);
  // The fake runtime has no memory cgroup: nothing measured, nothing claimed.
  t.regex(text, /^doze_memory_freed_byte_seconds_total\{instance="web",runtime="fake"\} 0$/m);
});

test.serial('coldStartThreshold: an instance whose first-response p99 today is over it is marked slowWakes, and its row says so', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  const window = { asleepMs: 0, managedMs: 1, asleepShare: 0 };
  const savings = { lastHour: window, lastDay: window, asleepSecondsTotal: 0, memoryFreedByteSeconds: 0, memoryFreedBytesNow: 0, wakes: { count: 100, firstResponseP50Ms: 40, firstResponseP99Ms: 1200 } };
  t.true(viewOf(instance, undefined, { savings, coldStartThresholdMs: 1000 }).slowWakes);
  t.false(viewOf(instance, undefined, { savings, coldStartThresholdMs: 1500 }).slowWakes);
  t.false(viewOf(instance, undefined, { savings }).slowWakes, 'no threshold, no mark');
  t.regex(renderRows([viewOf(instance, undefined, { savings, coldStartThresholdMs: 1000 })]), /class="bad slow-wakes"[^>]*>slow wakes: p99 1200\.0 ms/);
  t.is(parseConfig({ coldStartThreshold: '1s', instances: [] }).coldStartThreshold, 1000);
});
