import test, { type ExecutionContext } from 'ava';
import { NomadClient, NomadError } from '../../agent/nomad/nomad-client.js';
import { allocationEvents, type AllocationEventOptions, type AllocationFrame } from '../../agent/discovery/nomad-event-stream.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { until } from '../helpers/until.js';
import { closedPort } from '../helpers/http.js';

/**
 * Consumes the stream in the background; `next(n)` waits (bounded) for n
 * more frames. The consumer stops in the test's teardown.
 */
function consume(t: ExecutionContext, client: NomadClient, options: AllocationEventOptions = {}) {
  const controller = new AbortController();
  const frames: AllocationFrame[] = [];
  const errors: NomadError[] = [];
  const connects: number[] = [];
  let failure: unknown;
  const done = (async () => {
    try {
      for await (const frame of allocationEvents(client, {
        minBackoffMs: 20,
        maxBackoffMs: 100,
        ...options,
        signal: controller.signal,
        onError: (e) => errors.push(e),
        onConnect: (i) => connects.push(i),
      })) {
        frames.push(frame);
      }
    } catch (error) {
      failure = error;
    }
  })();
  t.teardown(async () => {
    controller.abort();
    await done;
  });
  const waitFor = (predicate: () => boolean, what: string, timeoutMs = 3000) =>
    until(what, () => {
      if (predicate()) return true;
      if (failure) throw failure;
      return false;
    }, { timeoutMs, everyMs: 5 });
  return {
    frames,
    errors,
    connects,
    done,
    failure: () => failure,
    until: waitFor,
    next: (count: number) => {
      const target = frames.length + count;
      return waitFor(() => frames.length >= target, `${count} frame(s)`);
    },
    allocIds: () => frames.flatMap((f) => f.events.map((e) => e.allocation.ID)),
  };
}

async function doubleWithJob(t: ExecutionContext, options = {}): Promise<NomadDouble> {
  const nomad = await startNomadDouble(t, options);
  nomad.registerJob(webJob({ groupMeta: { 'doze.enabled': 'true' } }));
  return nomad;
}

test('streams allocation events in index order, with Nomad\'s job-less payloads', async (t) => {
  const nomad = await doubleWithJob(t);
  const stream = consume(t, new NomadClient({ address: nomad.url }));
  const a = nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.next(1);
  nomad.stopAllocation(a.ID as string);
  await stream.next(2);
  t.deepEqual(stream.frames.map((f) => f.events[0]!.type), ['PlanResult', 'AllocationUpdateDesiredStatus', 'AllocationUpdated']);
  t.deepEqual(stream.allocIds(), [a.ID, a.ID, a.ID]);
  t.is(stream.frames[0]!.events[0]!.allocation.Job, null);
  t.is(stream.frames.at(-1)!.events[0]!.allocation.ClientStatus, 'complete');
  const indexes = stream.frames.map((f) => f.index);
  t.deepEqual(indexes, [...indexes].sort((x, y) => x - y));
  const request = nomad.requests.find((r) => r.path === '/v1/event/stream')!;
  t.is(request.query.get('topic'), 'Allocation');
  t.is(request.query.get('index'), '0');
  t.deepEqual(stream.errors, []);
});

test('heartbeats keep the connection and yield nothing', async (t) => {
  const nomad = await doubleWithJob(t, { heartbeatMs: 20 });
  const stream = consume(t, new NomadClient({ address: nomad.url }), { heartbeatTimeoutMs: 500 });
  // Connected once its first heartbeat arrived; then ~15 more over 300 ms.
  await stream.until(() => stream.connects.length === 1, 'the first heartbeat');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(stream.frames.length, 0);
  t.deepEqual(stream.errors, []);
  t.is(stream.connects.length, 1, 'one connection: ~15 heartbeats neither yielded nor treated as trouble');
  nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.next(1);
  t.is(stream.frames.length, 1);
});

test('a dropped stream resumes from the last index and misses nothing', async (t) => {
  const nomad = await doubleWithJob(t);
  const stream = consume(t, new NomadClient({ address: nomad.url }));
  const first = nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.next(1);
  const seen = stream.frames[0]!.index;
  nomad.dropEventStreams();
  // Placed while the client is disconnected (or reconnecting).
  const second = nomad.addAllocation({ jobId: 'web', group: 'web' });
  const third = nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.next(2);
  t.deepEqual(stream.allocIds(), [first.ID, second.ID, third.ID]);
  t.deepEqual(stream.connects, [0, seen + 1]);
  const resumed = nomad.requests.filter((r) => r.path === '/v1/event/stream').at(-1)!;
  t.is(resumed.query.get('index'), String(seen + 1));
  t.true(stream.errors.some((e) => e.code === 'E_NOMAD_UNREACHABLE'), 'the drop is reported');
});

test('resuming past Nomad\'s newest frame does not repeat it', async (t) => {
  // Nomad answers an index beyond its buffer with its newest frame (StartAtClosest).
  const nomad = await doubleWithJob(t);
  const stream = consume(t, new NomadClient({ address: nomad.url }));
  const first = nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.next(1);
  nomad.dropEventStreams();
  await stream.until(() => stream.connects.length === 2 && nomad.openStreams === 1, 'the reconnection');
  const later = nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.next(1);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(stream.allocIds(), [first.ID, later.ID]);
});

test('starts at a given index: earlier buffered frames are not replayed', async (t) => {
  const nomad = await doubleWithJob(t);
  nomad.addAllocation({ jobId: 'web', group: 'web' });
  const from = nomad.lastIndex + 1;
  const wanted = nomad.addAllocation({ jobId: 'web', group: 'web' });
  const stream = consume(t, new NomadClient({ address: nomad.url }), { index: from });
  await stream.next(1);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(stream.allocIds(), [wanted.ID]);
});

test('frames written back to back without newlines are split correctly', async (t) => {
  const nomad = await doubleWithJob(t, { framing: 'concatenated', heartbeatMs: 10 });
  const stream = consume(t, new NomadClient({ address: nomad.url }));
  const ids = [0, 1, 2].map(() => nomad.addAllocation({ jobId: 'web', group: 'web' }).ID);
  await stream.next(3);
  t.deepEqual(stream.allocIds(), ids);
  t.deepEqual(stream.errors, []);
});

test('malformed frames are reported and skipped; the stream goes on', async (t) => {
  const nomad = await doubleWithJob(t);
  const stream = consume(t, new NomadClient({ address: nomad.url }));
  await stream.until(() => nomad.openStreams === 1, 'the connection');
  nomad.writeToStreams('{"Index": 7, "Events": []x}\n');
  nomad.writeToStreams('not json at all\n');
  nomad.writeToStreams(`${JSON.stringify({ Index: nomad.lastIndex, Events: [{ Topic: 'Allocation', Type: 'AllocationUpdated', Key: 'a', Index: 1, Payload: { Allocation: { ID: 'a' } } }] })}\n`);
  const good = nomad.addAllocation({ jobId: 'web', group: 'web' });
  await stream.until(() => stream.allocIds().includes(good.ID as string), 'the good allocation');
  t.deepEqual(stream.allocIds(), [good.ID]);
  const messages = stream.errors.map((e) => e.message);
  t.true(stream.errors.every((e) => e.code === 'E_NOMAD_RESPONSE'), messages.join('\n'));
  t.true(messages.some((m) => /malformed frame/.test(m) && /x}/.test(m)), messages.join('\n'));
  t.true(messages.some((m) => /malformed frame \(text outside a JSON object\): "not json at all"/.test(m)), messages.join('\n'));
  t.true(messages.some((m) => /AllocationUpdated for allocation a at index \d+ has an unexpected payload: NodeID/.test(m)), messages.join('\n'));
  t.is(stream.connects.length, 1, 'bad frames do not cost the connection');
});

test('a connection that goes silent is replaced', async (t) => {
  // Heartbeats every 60 s: after the one on connect the double says nothing.
  const nomad = await doubleWithJob(t, { heartbeatMs: 60_000 });
  const stream = consume(t, new NomadClient({ address: nomad.url }), { heartbeatTimeoutMs: 150 });
  await stream.until(() => stream.connects.length >= 2, 'a reconnection', 3000);
  t.regex(stream.errors[0]!.message, /sent nothing \(not even a heartbeat\) for 150 ms/);
  const a = nomad.addAllocation({ jobId: 'web', group: 'web' });
  t.true(await stream.until(() => stream.allocIds().includes(a.ID as string), 'the allocation after reconnecting'));
});

test('a refused token ends the stream with the HTTP error (fall back or report; no retry loop)', async (t) => {
  const nomad = await doubleWithJob(t, { token: 'right' });
  const stream = consume(t, new NomadClient({ address: nomad.url, token: 'wrong' }));
  await stream.until(() => stream.failure() !== undefined, 'the failure');
  const failure = stream.failure() as NomadError;
  t.true(failure instanceof NomadError);
  t.is(failure.status, 403);
  t.deepEqual(stream.connects, [], 'never counted as connected');
  t.is(nomad.requests.filter((r) => r.path === '/v1/event/stream').length, 1, 'not retried');
});

test('an unreachable Nomad is reported and retried with backoff', async (t) => {
  const port = await closedPort();
  const stream = consume(t, new NomadClient({ address: `http://127.0.0.1:${port}` }), { minBackoffMs: 20, maxBackoffMs: 40 });
  await stream.until(() => stream.errors.length >= 3, 'three failed attempts');
  t.true(stream.errors.every((e) => e.code === 'E_NOMAD_UNREACHABLE'));
  t.deepEqual(stream.frames, []);
});

test('a stream that answers 200 and closes before its first heartbeat, three times, is thrown as refused (Nomad ≥ 1.11.2 ACLs)', async (t) => {
  const nomad = await startNomadDouble(t, { acl: { weak: ['node:read'] } });
  const client = new NomadClient({ address: nomad.url, token: 'weak' });
  const errors: NomadError[] = [];
  const run = async () => {
    for await (const _frame of allocationEvents(client, { minBackoffMs: 5, maxBackoffMs: 10, onError: (e) => errors.push(e) })) t.fail('no frame expected');
  };
  const error = await t.throwsAsync<NomadError>(run());
  t.is(error?.code, 'E_NOMAD_STREAM_REFUSED');
  t.is(nomad.requests.filter((r) => r.path === '/v1/event/stream').length, 3);
  t.is(errors.length, 2, 'the first two silent ends are reported as drops');
});

test('with markConnections every accepted connection starts with a reconnected marker', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob());
  const c = consume(t, new NomadClient({ address: nomad.url }), { markConnections: true });
  await c.next(1);
  t.true(c.frames[0]!.reconnected);
  nomad.dropEventStreams();
  await c.next(1);
  t.true(c.frames[1]!.reconnected);
  t.deepEqual(c.frames[1]!.events, []);
});

test('a chunked stream (Nomad before 1.11.2) is read as well as a hijacked one', async (t) => {
  const nomad = await doubleWithJob(t, { streamFraming: 'chunked' });
  const stream = consume(t, new NomadClient({ address: nomad.url }));
  const ids = [0, 1].map(() => nomad.addAllocation({ jobId: 'web', group: 'web' }).ID);
  await stream.next(2);
  t.deepEqual(stream.allocIds(), ids);
});
