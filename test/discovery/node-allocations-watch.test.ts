import test from 'ava';
import { NomadClient, type NomadError } from '../../agent/nomad/nomad-client.js';
import { watchNodeAllocations } from '../../agent/discovery/node-allocations-watch.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';

test('yields the node\'s allocations, then again only when they change', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob());
  const controller = new AbortController();
  t.teardown(() => controller.abort());
  const watch = watchNodeAllocations(new NomadClient({ address: nomad.url }), 'n1', { waitMs: 150, signal: controller.signal });

  const first = await watch.next();
  t.deepEqual(first.value?.value, []);
  const placedAt = Date.now();
  setTimeout(() => nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' }), 400);
  // Two 150 ms waits time out with the same index before the change: nothing is yielded for them.
  const second = await watch.next();
  t.true(Date.now() - placedAt >= 380);
  t.is(second.value?.value.length, 1);
  t.true(second.value!.index > first.value!.index);
  const blockingRequests = nomad.requests.filter((r) => r.query.get('index') === String(first.value!.index));
  t.true(blockingRequests.length >= 2, `${blockingRequests.length} blocking requests`);
  await watch.return(undefined);
});

test('errors are reported and the watch carries on once Nomad answers', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.injectOnce('GET', '/v1/node/n1/allocations', { status: 500, body: 'rpc error: No cluster leader' });
  const errors: NomadError[] = [];
  const controller = new AbortController();
  t.teardown(() => controller.abort());
  const watch = watchNodeAllocations(new NomadClient({ address: nomad.url }), 'n1', { signal: controller.signal, minBackoffMs: 10, onError: (e) => errors.push(e) });
  const first = await watch.next();
  t.deepEqual(first.value?.value, []);
  t.is(errors.length, 1);
  t.regex(errors[0]!.message, /HTTP 500: rpc error: No cluster leader/);
  await watch.return(undefined);
});
