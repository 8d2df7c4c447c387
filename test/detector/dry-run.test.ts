import test from 'ava';
import type { MemoryUsage } from '../../agent/cgroups/memory-cgroup.js';
import type { RehearsedEvent } from '../../agent/detector/detector.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { BpfInstanceState } from '../../agent/sources/bpf-records.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// Dry run (agent/detector/rehearsal.ts) on a fake clock and scripted counters: no kernel, no root.

/** A fake workload holding 64 MiB resident, as its memory cgroup would say. */
class Holds64MiB extends FakeRuntime {
  async memory(): Promise<MemoryUsage> {
    return { residentBytes: 64 * 2 ** 20, swappedBytes: 0, compressedBytes: 0 };
  }
}

test.serial('a dry-run instance under the same traffic as a real one: the same sleeps and wakes at the same times, never frozen', async (t) => {
  const h = detectorHarness(t);
  const real = await h.add('real', { idleTimeout: '1s', maxSleep: '20s' });
  const dry = await h.add('dry', { idleTimeout: '1s', maxSleep: '20s', dryRun: true }, new Holds64MiB());
  const rehearsed: RehearsedEvent[] = [];
  h.detector.on('rehearsed', (e) => rehearsed.push(e));
  // A day in small: bursts, quiet spells of several lengths, a lone request, max_sleep running out.
  const script: Array<[number, 'packet' | 'wait']> = [
    [300, 'packet'], [700, 'packet'], [5000, 'wait'], [37, 'packet'], [400, 'packet'], [3000, 'wait'], [1234, 'packet'], [25_000, 'wait'], [10, 'packet'], [4000, 'wait'],
  ];
  for (const [ms, what] of script) {
    await h.clock.tickAsync(ms);
    if (what === 'packet') {
      h.source.packet(real.instance.key);
      h.source.packet(dry.instance.key);
    }
  }
  const sleepsAt = h.transitions.filter((e) => e.instance.id === 'real' && e.to === 'pausing').map((e) => e.at);
  const wakesAt = h.transitions.filter((e) => e.instance.id === 'real' && e.to === 'waking').map((e) => e.at);
  t.true(sleepsAt.length >= 4, `the script makes the real one sleep several times (${sleepsAt.length})`);
  t.deepEqual(rehearsed.filter((e) => e.kind === 'would-sleep').map((e) => e.at), sleepsAt, 'would-sleeps at the real sleeps\' times');
  t.deepEqual(rehearsed.filter((e) => e.kind === 'would-wake').map((e) => e.at), wakesAt, 'would-be wakes at the real wakes\' times');
  t.true(h.reasons('real', 'waking').some((r) => r.startsWith('max_sleep')) && rehearsed.some((e) => e.kind === 'would-wake' && e.reason.startsWith('max_sleep')), 'max_sleep rehearsed too');

  t.is(dry.runtime.sleeps, 0, 'never paused');
  t.false(h.redirected.has('dry'), 'its checks never went to the stub');
  t.is(h.transitions.filter((e) => e.instance.id === 'dry').length, 0, 'its state never left running');
  t.not(h.source.states_.get(dry.instance.key), BpfInstanceState.sleeping);
  t.is(dry.instance.state, 'running');

  // Its would-sleep count and time are the real one's sleeps and time asleep.
  t.is(dry.instance.rehearsal.sleeps, real.instance.sleeps);
  t.is(dry.instance.rehearsal.wakes, real.instance.wakes);
  let realAsleepMs = 0;
  for (let i = 0; i < sleepsAt.length; i++) realAsleepMs += (wakesAt[i] ?? Date.now()) - sleepsAt[i]!;
  const nowNs = process.hrtime.bigint();
  t.is(Math.round(dry.instance.rehearsal.asleepMsAt(nowNs)), realAsleepMs);
  t.is(Math.round(dry.instance.rehearsal.freedByteSecondsAt(nowNs)), Math.round((64 * 2 ** 20 * realAsleepMs) / 1000), 'its measured 64 MiB over the time it would have slept');
});

test.serial('a dry-run instance is held as a real one is (a request in flight)', async (t) => {
  const h = detectorHarness(t);
  const dry = await h.add('dry', { idleTimeout: '1s', idlePolicy: 'requests', dryRun: true });
  h.source.connection(dry.instance.key, 40_000, 'request');
  await h.clock.tickAsync(3000);
  t.is(dry.instance.heldBy?.kind, 'in-flight');
  t.is(dry.instance.rehearsal.sleeps, 0);
  h.source.connection(dry.instance.key, 40_000, 'answer');
  await h.clock.tickAsync(200);
  t.is(dry.instance.rehearsal.sleeps, 1, 'would sleep once the answer is out');
  t.is(dry.runtime.sleeps, 0);
});

test.serial('the agent-wide dry run rehearses an instance whose config says nothing', async (t) => {
  const h = detectorHarness(t, { dryRun: true });
  const web = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(1000);
  t.is(web.instance.rehearsal.sleeps, 1);
  t.is(web.runtime.sleeps, 0);
  t.is(web.instance.state, 'running');
  t.true(h.detector.isDryRun(web.instance));
});

test.serial('with a node budget, each would-be wake says what the budget would have done: fit, put the least recently used to sleep first, or wait', async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 2, maxQueued: 8 } });
  const dry = await h.add('dry', { idleTimeout: '1s', dryRun: true });
  // While it would sleep, a and b are awake: two of two. Its would-be wake must make room.
  await h.clock.tickAsync(1500);
  t.truthy(dry.instance.rehearsal.current, 'it would be asleep');
  const a = await h.add('a', { idleTimeout: '10m' });
  await h.clock.tickAsync(50);
  const b = await h.add('b', { idleTimeout: '10m', minAwake: '1h' });
  h.source.packet(b.instance.key);
  h.source.packet(dry.instance.key);
  await h.clock.tickAsync(200);
  t.deepEqual(dry.instance.rehearsal.room.last, { outcome: 'evicts', victims: ['a'] }, 'a, used longest ago and not within min_awake, would have made room');
  t.is(a.instance.state, 'running', 'a rehearsal: nothing was put to sleep');
  // It would sleep again; a goes under min_awake too: nothing could make room, so it would wait.
  await h.detector.remove('a', { wake: false });
  await h.add('c', { idleTimeout: '10m', minAwake: '1h' });
  await h.clock.tickAsync(1500);
  t.truthy(dry.instance.rehearsal.current);
  h.source.packet(dry.instance.key);
  await h.clock.tickAsync(200);
  t.deepEqual(dry.instance.rehearsal.room.last, { outcome: 'waits' });
  // Room appears (c leaves): the next would-be wake fits as it is.
  await h.detector.remove('c', { wake: false });
  await h.clock.tickAsync(1500);
  h.source.packet(dry.instance.key);
  await h.clock.tickAsync(200);
  t.deepEqual(dry.instance.rehearsal.room.last, { outcome: 'fits' });
  t.like(dry.instance.rehearsal.room, { fits: 1, evicts: 1, waits: 1 });
});
