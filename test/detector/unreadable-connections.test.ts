import test from 'ava';
import { describeHold } from '../../agent/detector/reasons.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// A failed read of the connection map is never "nothing in flight" (fake source, fake clock).

test.serial('requests policy: connections that cannot be read keep the instance awake, with the reason; it sleeps once they are read again', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'requests' });
  h.source.connection(instance.key, 40_000, 'request');
  h.source.failConnections = 3;
  await h.clock.tickAsync(1000);
  t.is(instance.state, 'running', 'the first decision could not read the connections');
  t.like(instance.heldBy, { kind: 'connections-unreadable' });
  t.regex(instance.heldBy ? describeHold(instance.heldBy) : '', /^its connections could not be read \(doze-maps dump: dump doze_conns: Input\/output error\): kept awake/);
  // Re-read every idleTimeout / 5 (200 ms): two more failures, then a reading that shows the request.
  await h.clock.tickAsync(600);
  t.is(h.source.failConnections, 0);
  t.is(instance.state, 'running');
  t.deepEqual(instance.heldBy, { kind: 'in-flight', requests: 1 });
  t.is(runtime.sleeps, 0);
  h.source.connection(instance.key, 40_000, 'answer');
  await h.clock.tickAsync(200);
  t.is(instance.state, 'sleeping');
});

test.serial('node budget: with the connections unreadable, no requests instance is put to sleep to make room', async (t) => {
  const h = detectorHarness(t, { budget: { maxActive: 1, maxQueued: 4 } });
  const { instance: a } = await h.add('a', { idleTimeout: '10s', idlePolicy: 'requests' });
  const { instance: b } = await h.add('b', { idleTimeout: '1s', idlePolicy: 'traffic' });
  // b sleeps; a stays awake with a request in flight (its idle timeout is far off).
  await h.clock.tickAsync(1000);
  t.is(b.state, 'sleeping');
  h.source.connection(a.key, 40_000, 'request');
  h.source.failConnections = 100;
  h.source.packet(b.key);
  await h.clock.tickAsync(50);
  t.is(a.state, 'running', 'a was not taken for idle when its connections could not be read');
  t.is(a.sleeps, 0);
  // b's wake waits for room, then goes ahead over budget at its deadline rather than fail a request.
  await h.clock.tickAsync(b.config.wakeTimeout);
  t.is(b.state, 'running');
  t.is(h.detector.budgetOverruns, 1);
});
