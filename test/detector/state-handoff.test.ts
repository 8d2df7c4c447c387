import test from 'ava';
import { WAKE_EVENT_GRACE_MS, WATCHDOG_INTERVAL_MS } from '../../agent/detector/wake-signals.js';
import { BpfInstanceState } from '../../agent/sources/bpf-records.js';
import { detectorHarness, type Harness } from '../helpers/detector-harness.js';
import { steppedSource } from '../helpers/stepped-source.js';

/*
 * The state hand-off between the agent and the tc program, one test per interleaving of
 * docs/state-handoff.md, on the fake source's step-wise model of the program (count, stamp,
 * read, swap) and a fake clock. test/detector/state-handoff-bpf.test.ts runs the same moments
 * with the real program. A sleep's steps: A1 read counters and decide; A2 swap AWAKE->PAUSING;
 * A3 read counters again (abort if either moved); A4 pause the runtime; A5 swap PAUSING->SLEEPING.
 */

function harness(t: Parameters<typeof detectorHarness>[0], options: Parameters<typeof detectorHarness>[1] = {}): Harness & { steps: ReturnType<typeof steppedSource> } {
  let steps!: ReturnType<typeof steppedSource>;
  const h = detectorHarness(t, { ...options, wrapSource: (fake) => (steps = steppedSource(fake)).source });
  return Object.assign(h, { steps });
}

test.serial('I1: a packet between the decision (A1) and PAUSING (A2): no event (still awake), and the counters abort the sleep', async (t) => {
  const h = harness(t);
  const { instance, runtime } = await h.add('web');
  const events: bigint[] = [];
  h.source.onWake((e) => events.push(e.tsNs));
  h.steps.before('swapState', () => h.source.packet(instance.key));
  await h.clock.tickAsync(1000);
  t.is(h.steps.pending(), 0, 'the packet ran where the test put it');
  t.is(instance.state, 'running');
  t.is(runtime.sleeps, 0, 'never frozen');
  t.deepEqual(events, [], 'the program saw AWAKE: no event');
  t.deepEqual(h.reasons('web', 'running'), ['traffic arrived while deciding']);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake);
});

test.serial('I2: counted before PAUSING, state read after it: the event and the counters both stop the sleep', async (t) => {
  const h = harness(t);
  const { instance, runtime } = await h.add('web');
  const run = h.source.programRun(instance.key);
  h.steps.before('swapState', () => {
    run.count();
    run.stamp();
  });
  let swapped = false;
  h.steps.before('counter', () => {
    run.read();
    swapped = run.swap();
  });
  await h.clock.tickAsync(1000);
  t.true(swapped, 'the program found PAUSING and signalled');
  t.is(instance.state, 'running');
  t.is(runtime.sleeps, 0);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake, 'the aborted sleep says awake again');
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping', 'and it sleeps normally one idle timeout later');
});

test.serial('I3: the packet counter moved but last_seen_ns not yet (the program bumps packets first): the sleep aborts, nothing is frozen', async (t) => {
  const h = harness(t);
  const { instance, runtime } = await h.add('web');
  const run = h.source.programRun(instance.key);
  h.steps.before('counter', () => run.count()); // A3 reads packets+1 and the old last_seen_ns
  await h.clock.tickAsync(1000);
  run.stamp();
  run.read();
  t.false(run.swap(), 'by the time the program reads the state it is AWAKE again');
  t.is(runtime.sleeps, 0, 'never frozen (comparing last_seen_ns alone froze it with the request in it)');
  t.is(instance.state, 'running');
  t.deepEqual(h.reasons('web', 'running'), ['traffic arrived while deciding']);
});

test.serial('I4: a packet during the pause (A4) whose event is lost: PAUSING->SLEEPING finds SIGNALLED, leaves it, and wakes the instance', async (t) => {
  const h = harness(t, { dropWakeEvents: 1 });
  const { instance, runtime } = await h.add('web', {}, { pauseMs: 100 });
  await h.clock.tickAsync(1050);
  t.is(instance.state, 'pausing');
  h.source.packet(instance.key);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.signalled);
  await h.clock.tickAsync(50);
  t.is(runtime.sleeps, 1);
  t.is(instance.state, 'running', 'woken as soon as the pause completed, no watchdog');
  t.deepEqual(h.reasons('web', 'waking'), ['traffic arrived while pausing']);
  t.is(h.detector.wakeEvents.missed, 0);
});

test.serial('I5: the program read PAUSING, the agent swapped in SLEEPING (A5), the program\'s swap lost: it reads again and signals', async (t) => {
  const h = harness(t);
  const { instance } = await h.add('web', {}, { pauseMs: 100 });
  await h.clock.tickAsync(1050);
  const run = h.source.programRun(instance.key);
  run.count();
  run.stamp();
  run.read(); // PAUSING
  await h.clock.tickAsync(50); // A4 ends, A5 swaps PAUSING -> SLEEPING
  t.is(instance.state, 'sleeping');
  t.is(h.source.states_.get(instance.key), BpfInstanceState.sleeping, 'the agent\'s swap went in: the state was still PAUSING');
  t.true(run.swap(), 'the retry found SLEEPING and swapped');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'running');
  t.deepEqual(h.reasons('web', 'waking'), ['traffic']);
});

test.serial('I6: a packet after SLEEPING: the event wakes it', async (t) => {
  const h = harness(t);
  const { instance, runtime } = await h.add('web');
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
  h.source.packet(instance.key);
  await h.clock.tickAsync(1);
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1);
});

test.serial('I7: a packet during the wake: SIGNALLED is consumed by the AWAKE the agent writes once awake; the next sleep is normal', async (t) => {
  const h = harness(t);
  const { instance, runtime } = await h.add('web', {}, { resumeMs: 100 });
  await h.clock.tickAsync(1000);
  h.source.packet(instance.key);
  await h.clock.tickAsync(50);
  t.is(instance.state, 'waking');
  h.source.packet(instance.key); // SIGNALLED already: counted, no second event
  await h.clock.tickAsync(50);
  t.is(instance.state, 'running');
  t.is(runtime.wakes, 1, 'one wake');
  t.is(h.source.states_.get(instance.key), BpfInstanceState.awake);
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'sleeping');
});

test.serial('I8: adoption: a packet between the baseline read and the swap to SLEEPING raises no event, and the watchdog wakes it', async (t) => {
  const h = harness(t);
  const { instance, runtime } = h.instance('web');
  runtime.state = 'asleep';
  h.steps.before('swapState', () => h.source.packet(instance.key)); // the state is still AWAKE: no event
  await h.detector.add(instance);
  t.is(instance.state, 'sleeping');
  await h.clock.tickAsync(WATCHDOG_INTERVAL_MS + WAKE_EVENT_GRACE_MS);
  t.is(instance.state, 'running');
  t.deepEqual(h.reasons('web', 'waking'), ['traffic (wake event missed; found by the watchdog)']);
});

test.serial('I8b: adoption of a workload whose state an earlier agent left SIGNALLED: woken, never swapped over', async (t) => {
  const h = harness(t);
  const { instance, runtime } = h.instance('web');
  runtime.state = 'asleep';
  h.source.states_.set(instance.key, BpfInstanceState.signalled);
  await h.detector.add(instance);
  await h.clock.tickAsync(1);
  t.is(instance.state, 'running');
  t.deepEqual(h.reasons('web', 'waking'), ['traffic arrived while no agent was running']);
});
