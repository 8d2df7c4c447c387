import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector } from '../../agent/detector/detector.js';
import { LATE_EVENT_MS, WAKE_EVENT_GRACE_MS, WATCHDOG_INTERVAL_MS } from '../../agent/detector/wake-signals.js';
import { ManagedInstance, type ReadonlyInstance } from '../../agent/detector/managed-instance.js';
import type { InstanceState } from '../../agent/detector/states.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { type InstanceCounters } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';

/*
 * The wake watchdog against a wake event that is late rather than lost (no kernel: no root).
 * Under load (bench/soak.ts) events reached the agent up to ~320 ms after their packet: the
 * watchdog woke those sleepers first. Such a wake must not count as a missed event, and the late
 * event must not wake the instance again once it sleeps anew.
 */

/** A fake source whose counters the test moves, as packets would. */
class CountingSource extends FakeTrafficSource {
  override readonly counters = new Map<string, InstanceCounters>();
  // Rest parameters: the base class's versions take none.
  override async counter(...[address]: string[]): Promise<InstanceCounters | undefined> {
    return this.counters.get(address!);
  }
  override async countersOf(...[addresses]: string[][]): Promise<Map<string, InstanceCounters>> {
    return new Map((addresses ?? []).flatMap((a) => (this.counters.has(a) ? [[a, this.counters.get(a)!] as const] : [])));
  }
  /** `n` packets reach the instance now, announced by no event; returns their time. */
  packets(address: string, n: bigint): bigint {
    const c = this.counters.get(address) ?? { packets: 0n, lastSeenNs: 0n, checks: 0n, outPackets: 0n };
    const now = monotonicNs();
    this.counters.set(address, { ...c, packets: c.packets + n, lastSeenNs: now });
    return now;
  }
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const config = parseConfig({ instances: [{ id: 'web', address: '10.213.0.2:8080', interface: 'dzx0h', idleTimeout: '1h', runtime: { kind: 'fake' } }] });
  const source = new CountingSource();
  const detector = new Detector(source, createLogger('silent'));
  const instance = new ManagedInstance(config.instances[0]!, new FakeRuntime(), monotonicNs());
  source.packets(instance.key, 5n);
  await detector.add(instance);
  detector.start();
  t.teardown(() => detector.stop({ wakeAll: false }));
  const missedEvents: string[] = [];
  detector.on('wakeEventMissed', (i) => missedEvents.push(i.id));
  return { detector, source, instance, missedEvents };
}

function reach(detector: Detector, instance: ReadonlyInstance, state: InstanceState, timeoutMs = 2000): Promise<void> {
  if (instance.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${instance.id} is ${instance.state}, not ${state}, after ${timeoutMs} ms`)), timeoutMs);
    const listener = (e: { instance: ReadonlyInstance; to: InstanceState }) => {
      if (e.instance !== instance || e.to !== state) return;
      clearTimeout(timer);
      detector.off('transition', listener);
      resolve();
    };
    detector.on('transition', listener);
  });
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('a wake event that comes after the watchdog woke its sleeper is late, not missed, and wakes nothing when it sleeps again', async (t) => {
  const { detector, source, instance, missedEvents } = await setup(t);
  t.true(await detector.sleepNow('web'));
  const packetNs = source.packets(instance.key, 3n);
  // The watchdog's bound: one interval to notice, the grace, one more interval.
  await reach(detector, instance, 'running', WATCHDOG_INTERVAL_MS * 2 + WAKE_EVENT_GRACE_MS + 500);
  t.is(instance.wakes, 1, 'the watchdog woke it without its event');
  // The event turns up 300 ms after its packet (as measured under load).
  source.emitWake({ instanceAddr: instance.key, ifindex: 1, tsNs: packetNs });
  t.is(detector.wakeEvents.late, 1);
  // Asleep again before the late event's deadline would have passed: a stale event must not wake it.
  t.true(await detector.sleepNow('web'));
  source.emitWake({ instanceAddr: instance.key, ifindex: 1, tsNs: packetNs });
  await delay(LATE_EVENT_MS + 200);
  t.is(instance.state, 'sleeping', 'the stale event did not wake it');
  t.is(instance.wakes, 1);
  t.is(detector.wakeEvents.missed, 0, 'nothing was lost');
  t.deepEqual(missedEvents, []);
});

test('a wake event that never comes is counted as missed once its deadline passes, and the sleeper was woken at once', async (t) => {
  const { detector, source, instance, missedEvents } = await setup(t);
  t.true(await detector.sleepNow('web'));
  source.packets(instance.key, 3n);
  const started = performance.now();
  await reach(detector, instance, 'running', WATCHDOG_INTERVAL_MS * 2 + WAKE_EVENT_GRACE_MS + 500);
  t.log(`woken by the watchdog after ${(performance.now() - started).toFixed(0)} ms`);
  t.is(detector.wakeEvents.missed, 0, 'not yet: its event may still come');
  await delay(LATE_EVENT_MS + 200);
  t.is(detector.wakeEvents.missed, 1);
  t.is(detector.wakeEvents.late, 0);
  t.deepEqual(missedEvents, ['web']);
});

test('a wake event of the current sleep still wakes it after an earlier watchdog wake', async (t) => {
  const { detector, source, instance } = await setup(t);
  t.true(await detector.sleepNow('web'));
  source.packets(instance.key, 1n);
  await reach(detector, instance, 'running', WATCHDOG_INTERVAL_MS * 2 + WAKE_EVENT_GRACE_MS + 500);
  // Its event was lost; the next sleep's traffic comes with an event of its own.
  t.true(await detector.sleepNow('web'));
  const packetNs = source.packets(instance.key, 1n);
  source.emitWake({ instanceAddr: instance.key, ifindex: 1, tsNs: packetNs });
  await reach(detector, instance, 'running', 1000);
  t.is(instance.wakes, 2);
  t.is(detector.wakeEvents.late, 0, 'an event of this sleep is not the late one of the last');
});
