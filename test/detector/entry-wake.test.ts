import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector, type TransitionEvent } from '../../agent/detector/detector.js';
import { EntryWake } from '../../agent/detector/entry-wake.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import type { InstanceCounters } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';

/*
 * EntryWake on a fake runtime whose cgroup entries the test makes: when the watch is armed,
 * what an entry does in each state, and that a burst of notifications is one wake. No kernel.
 */

class Entries extends FakeRuntime {
  armed = 0;
  private listener: (() => void) | undefined;
  watchEntries(onEntry: () => void): () => void {
    this.armed++;
    this.listener = onEntry;
    return () => {
      this.armed--;
      this.listener = undefined;
    };
  }
  /** A process is written into the cgroup: inotify reports the truncate and the write. */
  enter(): boolean {
    if (!this.listener) return false;
    this.listener();
    this.listener?.();
    return true;
  }
}

class Silent extends FakeTrafficSource {
  override async counter(): Promise<InstanceCounters> {
    return { packets: 0n, lastSeenNs: 0n, checks: 0n, outPackets: 0n };
  }
}

async function setup(t: { teardown(fn: () => void): void }, pauseMs = 0) {
  const config = parseConfig({ instances: [{ id: 'web', address: '10.213.0.2:8080', interface: 'dzx0h', idleTimeout: '100ms', idlePolicy: 'traffic', runtime: { kind: 'fake' } }] });
  const detector = new Detector(new Silent(), createLogger('silent'));
  const entryWake = new EntryWake(detector, createLogger('silent'));
  const runtime = new Entries({ pauseMs });
  const instance = new ManagedInstance(config.instances[0]!, runtime, monotonicNs());
  await detector.add(instance);
  detector.start();
  const transitions: TransitionEvent[] = [];
  detector.on('transition', (e) => transitions.push(e));
  t.teardown(() => {
    entryWake.stop();
    void detector.stop({ wakeAll: false });
  });
  return { detector, runtime, instance, transitions, entryWake };
}

const until = async (what: string, check: () => boolean, ms = 2000) => {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

test('armed from the moment a sleep begins until the instance is awake; not while it runs', async (t) => {
  const { runtime, instance } = await setup(t);
  t.is(runtime.armed, 0, 'awake: no watch');
  t.false(runtime.enter());
  await until('asleep', () => instance.state === 'sleeping');
  t.is(runtime.armed, 1);
  t.true(runtime.enter());
  await until('awake', () => instance.state === 'running');
  t.is(runtime.armed, 0, 'disarmed once waking');
});

test('an entry into a sleeper wakes it once, however many notifications the write raised', async (t) => {
  const { runtime, instance, transitions } = await setup(t);
  await until('asleep', () => instance.state === 'sleeping');
  runtime.enter();
  runtime.enter();
  await until('awake', () => instance.state === 'running');
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.is(transitions.filter((e) => e.to === 'waking').length, 1);
  t.regex(transitions.find((e) => e.to === 'waking')!.reason, /a process entered its cgroup/);
  t.is(instance.wakes, 1);
});

test('an entry during the pause wakes it as soon as the pause completes (the entering process froze with it)', async (t) => {
  const { runtime, instance, transitions } = await setup(t, 100);
  await until('pausing', () => instance.state === 'pausing');
  t.true(runtime.enter());
  await until('awake again', () => instance.wakes === 1 && instance.state === 'running');
  t.deepEqual(transitions.map((e) => e.to).slice(0, 4), ['pausing', 'sleeping', 'waking', 'running']);
});

test('stop() closes every watch', async (t) => {
  const { runtime, instance, entryWake } = await setup(t);
  await until('asleep', () => instance.state === 'sleeping');
  entryWake.stop();
  t.is(runtime.armed, 0);
});

test('a watch that cannot be set (inotify watches used up) leaves the instance sleeping and waking as before', async (t) => {
  const { runtime, instance, detector } = await setup(t);
  runtime.watchEntries = () => {
    throw new Error('ENOSPC');
  };
  await until('asleep', () => instance.state === 'sleeping');
  await detector.wake(instance, 'a request');
  t.is(instance.state, 'running');
});
