import test from 'ava';
import { NomadClient, NomadError } from '../../agent/nomad/nomad-client.js';
import type { DozeError } from '../../agent/shared/errors.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { closedPort } from '../helpers/http.js';

const enabled = { 'doze.enabled': 'true' };

test('reads a node\'s allocations with their job and the X-Nomad-Index', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const placed = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'other' });
  const client = new NomadClient({ address: nomad.url });
  const { index, value } = await client.nodeAllocations('n1');
  t.is(value.length, 1);
  t.is(value[0]!.ID, placed.ID as string);
  t.is(value[0]!.Job?.ID, 'web');
  t.is(index, placed.ModifyIndex as number);
  const one = await client.allocation(placed.ID as string);
  t.is(one.value.TaskGroup, 'web');
  t.is(one.value.NetworkStatus?.Address, (placed.NetworkStatus as { Address: string }).Address);
});

test('sends the token as X-Nomad-Token, and namespace and region as query parameters', async (t) => {
  const nomad = await startNomadDouble(t, { token: 's3cret' });
  const client = new NomadClient({ address: nomad.url, token: 's3cret', namespace: 'apps', region: 'eu' });
  await client.nodeAllocations('n1');
  const request = nomad.requests.at(-1)!;
  t.is(request.headers['x-nomad-token'], 's3cret');
  t.is(request.query.get('namespace'), 'apps');
  t.is(request.query.get('region'), 'eu');
});

test('a wrong token is an HTTP error carrying Nomad\'s status and message', async (t) => {
  const nomad = await startNomadDouble(t, { token: 's3cret' });
  const client = new NomadClient({ address: nomad.url, token: 'wrong' });
  const error = await t.throwsAsync(client.nodeAllocations('n1'), { instanceOf: NomadError });
  t.is(error.code, 'E_NOMAD_HTTP');
  t.is(error.status, 403);
  t.regex(error.message, /GET \/v1\/node\/n1\/allocations failed with HTTP 403: Permission denied/);
});

test('a missing allocation is a 404 with Nomad\'s text', async (t) => {
  const nomad = await startNomadDouble(t);
  const client = new NomadClient({ address: nomad.url });
  const error = await t.throwsAsync(client.allocation('nope'), { instanceOf: NomadError });
  t.is(error.status, 404);
  t.regex(error.message, /alloc not found/);
});

test('a blocking query returns as soon as the index moves', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const client = new NomadClient({ address: nomad.url });
  const first = await client.nodeAllocations('n1');
  const started = Date.now();
  const blocked = client.nodeAllocations('n1', { index: first.index, waitMs: 5000 });
  setTimeout(() => nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' }), 150);
  const second = await blocked;
  const took = Date.now() - started;
  t.true(took >= 100 && took < 2000, `returned after ${took} ms`);
  t.true(second.index > first.index);
  t.is(second.value.length, 1);
  const request = nomad.requests.at(-1)!;
  t.is(request.query.get('index'), String(first.index));
  t.is(request.query.get('wait'), '5000ms');
});

test('a blocking query that times out returns the same index', async (t) => {
  const nomad = await startNomadDouble(t);
  const client = new NomadClient({ address: nomad.url });
  const first = await client.nodeAllocations('n1');
  const started = Date.now();
  const second = await client.nodeAllocations('n1', { index: first.index, waitMs: 200 });
  t.true(Date.now() - started >= 180);
  t.is(second.index, first.index);
});

test('a body that is not JSON is a clear response error', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.injectOnce('GET', '/v1/node/n1/allocations', { body: '<html>proxy error</html>', headers: { 'X-Nomad-Index': '5' } });
  const client = new NomadClient({ address: nomad.url });
  const error = await t.throwsAsync(client.nodeAllocations('n1'), { instanceOf: NomadError });
  t.is(error.code, 'E_NOMAD_RESPONSE');
  t.regex(error.message, /GET \/v1\/node\/n1\/allocations answered with a body that is not JSON: "<html>proxy error<\/html>"/);
});

test('JSON of the wrong shape names the field', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.injectOnce('GET', '/v1/node/n1/allocations', { body: JSON.stringify([{ ID: 'a1', NodeID: 'n1', JobID: 'web', TaskGroup: 'web', DesiredStatus: 'run', CreateIndex: 1, ModifyIndex: 1 }]), headers: { 'X-Nomad-Index': '5' } });
  const client = new NomadClient({ address: nomad.url });
  const error = await t.throwsAsync(client.nodeAllocations('n1'), { instanceOf: NomadError });
  t.is(error.code, 'E_NOMAD_RESPONSE');
  t.regex(error.message, /unexpected body: \[0\]\.ClientStatus: Invalid input: expected string, received undefined/);
});

test('a read without X-Nomad-Index is rejected: blocking queries depend on it', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.injectOnce('GET', '/v1/node/n1/allocations', { body: '[]' });
  const client = new NomadClient({ address: nomad.url });
  const error = await t.throwsAsync(client.nodeAllocations('n1'), { instanceOf: NomadError });
  t.is(error.code, 'E_NOMAD_RESPONSE');
  t.regex(error.message, /without a valid X-Nomad-Index header/);
});

test('an unreachable Nomad is E_NOMAD_UNREACHABLE', async (t) => {
  const port = await closedPort();
  const client = new NomadClient({ address: `http://127.0.0.1:${port}`, timeoutMs: 2000 });
  const error = await t.throwsAsync(client.job('web'), { instanceOf: NomadError });
  t.is(error.code, 'E_NOMAD_UNREACHABLE');
  t.regex(error.message, new RegExp(`Nomad at http://127.0.0.1:${port} is unreachable \\(GET /v1/job/web\\)`));
});

test('an address that is not an http(s) URL is a config error', (t) => {
  for (const address of ['localhost:4646', '127.0.0.1:4646', 'ftp://nomad']) {
    const error = t.throws(() => new NomadClient({ address }));
    t.is((error as DozeError).code, 'E_CONFIG');
    t.regex(error!.message, /is not an http\(s\) URL/);
  }
});

test('registers, reads and parses jobs', async (t) => {
  const nomad = await startNomadDouble(t);
  const client = new NomadClient({ address: nomad.url });
  const registered = await client.registerJob(webJob({ id: 'api' }));
  t.regex(registered.EvalID, /^[0-9a-f-]{36}$/);
  t.deepEqual(JSON.parse(nomad.requests.at(-1)!.body).Job.ID, 'api');
  const read = await client.job('api');
  t.is(read.value.ID, 'api');
  t.is(read.value.ModifyIndex, read.index);
  const parsed = await client.parseJob('job "x" {\n  group "g" {\n    task "t" {\n      driver = "exec"\n    }\n  }\n}\n');
  t.is(parsed.ID, 'x');
  t.deepEqual(JSON.parse(nomad.requests.at(-1)!.body), { JobHCL: 'job "x" {\n  group "g" {\n    task "t" {\n      driver = "exec"\n    }\n  }\n}\n', Canonicalize: true });
});

test('scales a group with Count, Target.Group and Message', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ scalingMin: 0 }));
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web' });
  const client = new NomadClient({ address: nomad.url });
  const result = await client.scaleGroup('web', 'web', 0, 'doze: idle for 5m');
  t.truthy(result.EvalID);
  t.deepEqual(nomad.scaleRequests[0]!.body, { Count: 0, Target: { Group: 'web' }, Message: 'doze: idle for 5m' });
  t.is((nomad.getJob('web')!.TaskGroups as { Count: number }[])[0]!.Count, 0);
  const after = await client.allocation(alloc.ID as string);
  t.is(after.value.DesiredStatus, 'stop');
});

test('a scale Nomad refuses keeps its reason', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ scalingMin: 1 }));
  const client = new NomadClient({ address: nomad.url });
  const error = await t.throwsAsync(client.scaleGroup('web', 'web', 0, 'doze'), { instanceOf: NomadError });
  t.is(error.status, 400);
  t.regex(error.message, /less than scaling policy minimum: 0 < 1/);
});

