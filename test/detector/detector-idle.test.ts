import test from 'ava';
import { BpfInstanceState } from '../../agent/sources/bpf-records.js';
import { detectorHarness } from '../helpers/detector-harness.js';
import { describeHold } from '../../agent/detector/reasons.js';

// Idle decisions of agent/detector/detector.ts on a fake clock and scripted counters (no kernel, no root).

test.serial('no traffic: asleep at its idle timeout, not a millisecond before, with one counter read', async (t) => {
  const h = detectorHarness(t);
  const { instance, runtime } = await h.add('web', { idleTimeout: '1s' });
  await h.clock.tickAsync(999);
  t.is(instance.state, 'running');
  t.is(h.source.reads.counters, 0, 'nothing is read before a deadline is due (one timer, no polling)');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'sleeping');
  t.is(runtime.sleeps, 1);
  t.is(h.source.states_.get(instance.key), BpfInstanceState.sleeping, 'the state map says sleeping: the next packet raises a wake event');
  t.true(h.redirected.has('web'), 'its checks go to the stub');
  t.is(h.source.reads.counters, 2, 'one read to decide, one to confirm nothing came in between');
  t.deepEqual(h.reasons('web', 'sleeping'), ['no traffic for 1000 ms']);
});

test.serial('each packet moves the deadline: awake under steady traffic, asleep one idle timeout after the last packet', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  for (let i = 0; i < 6; i++) {
    await h.clock.tickAsync(500);
    h.source.packet(instance.key);
  }
  await h.clock.tickAsync(999);
  t.is(instance.state, 'running', '3 s of traffic and 999 ms of quiet');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'sleeping');
  t.true(h.source.reads.counters <= 8, `about one read per idle timeout, not per packet (${h.source.reads.counters})`);
});

test.serial('health checks are not activity: an instance checked every 100 ms still sleeps on time', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s' });
  for (let i = 0; i < 9; i++) {
    await h.clock.tickAsync(100);
    h.source.check(instance.key);
  }
  await h.clock.tickAsync(100);
  t.is(instance.state, 'sleeping');
});

test.serial('requests policy: a request in flight holds it past its idle timeout; it sleeps soon after the answer', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'requests' });
  h.source.connection(instance.key, 40_000, 'request');
  await h.clock.tickAsync(5000);
  t.is(instance.state, 'running');
  t.is(instance.heldBy && describeHold(instance.heldBy), '1 request(s) in flight');
  h.source.connection(instance.key, 40_000, 'answer');
  // Re-checked every idleTimeout / 5 (200 ms) while held.
  await h.clock.tickAsync(200);
  t.is(instance.state, 'sleeping');
  t.is(instance.heldBy, undefined);
  t.regex(h.reasons('web', 'sleeping')[0]!, /nothing in flight/);
});

test.serial('requests policy: an idle keep-alive connection does not hold it; connections policy: it does, until closed', async (t) => {
  const h = detectorHarness(t);
  const requests = await h.add('req', { idleTimeout: '1s', idlePolicy: 'requests' });
  const connections = await h.add('conn', { idleTimeout: '1s', idlePolicy: 'connections' });
  for (const { instance } of [requests, connections]) {
    h.source.connection(instance.key, 40_001, 'request');
    h.source.connection(instance.key, 40_001, 'answer');
  }
  await h.clock.tickAsync(1000);
  t.is(requests.instance.state, 'sleeping');
  t.is(connections.instance.state, 'running');
  t.is(connections.instance.heldBy && describeHold(connections.instance.heldBy), '1 open connection(s)');
  h.source.connection(connections.instance.key, 40_001, 'close');
  await h.clock.tickAsync(200);
  t.is(connections.instance.state, 'sleeping');
});

test.serial('max_awake: a connection held open with no packet for that long no longer holds it', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'connections', maxAwake: '3s' });
  h.source.packet(instance.key);
  h.source.connection(instance.key, 40_002, 'request');
  h.source.connection(instance.key, 40_002, 'answer');
  await h.clock.tickAsync(2900);
  t.is(instance.state, 'running');
  await h.clock.tickAsync(200);
  t.is(instance.state, 'sleeping');
  t.regex(h.reasons('web', 'sleeping')[0]!, /^max_awake: no packet for 3\d{3} ms/);
});

test.serial('min_awake: a woken instance stays up that long even when idle', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '500ms', minAwake: '3s' });
  await h.clock.tickAsync(2999);
  t.is(instance.state, 'running');
  await h.clock.tickAsync(1);
  t.is(instance.state, 'sleeping');
});
