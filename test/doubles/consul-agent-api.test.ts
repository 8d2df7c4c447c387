import test from 'ava';
import type { ExecutionContext } from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Consul from 'consul';
import { AgentApiDouble, parseGoDuration } from './consul/agent-api.js';
import type { AgentApiDoubleOptions, HealthCheck } from './consul/agent-api.js';
import { CheckRunner } from './consul/check-runner.js';
import { until } from '../helpers/until.js';

async function double(t: ExecutionContext, options: AgentApiDoubleOptions = {}) {
  const api = await AgentApiDouble.start(options);
  t.teardown(() => api.close());
  const consul = new Consul({ host: '127.0.0.1', port: api.port });
  return { api, consul };
}

async function call(api: AgentApiDouble, method: string, path: string, body?: unknown) {
  const res = await fetch(`${api.url}${path}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  return { status: res.status, index: res.headers.get('x-consul-index'), text, json: () => JSON.parse(text) as unknown };
}

test('register through the npm consul client; agent endpoints return Consul shapes', async (t) => {
  const { api, consul } = await double(t);
  await register(consul, {
    name: 'web', port: 8080, address: '10.0.0.2', tags: ['v1'], meta: { team: 'doze' },
    checks: [{ ttl: '30s', notes: 'script check heartbeat' }, { tcp: '127.0.0.1:1', interval: '10s', timeout: '1s' }],
  });
  const services = await consul.agent.service.list() as Record<string, unknown>;
  t.deepEqual(services, {
    web: {
      ID: 'web', Service: 'web', Tags: ['v1'], Meta: { team: 'doze' }, Port: 8080, Address: '10.0.0.2',
      Weights: { Passing: 1, Warning: 1 }, EnableTagOverride: false, Datacenter: 'dc1',
    },
  });
  const checks = await consul.agent.check.list() as Record<string, HealthCheck>;
  t.deepEqual(Object.keys(checks).sort(), ['service:web:1', 'service:web:2']);
  const ttl = checks['service:web:1']!;
  t.like(ttl, {
    Node: 'doze-test-node', CheckID: 'service:web:1', Name: "Service 'web' check", Status: 'critical',
    Notes: 'script check heartbeat', Output: '', ServiceID: 'web', ServiceName: 'web', ServiceTags: ['v1'], Type: 'ttl',
  });
  t.like(checks['service:web:2']!, { Type: 'tcp', Interval: '10s', Timeout: '1s', Status: 'critical' });
  t.is(api.listServices().length, 1);
});

test('a single check gets the id service:<id>; an explicit ID and initial Status are kept', async (t) => {
  const { api } = await double(t);
  t.is((await call(api, 'PUT', '/v1/agent/service/register', { Name: 'a', Check: { TTL: '1m' } })).status, 200);
  t.is((await call(api, 'PUT', '/v1/agent/service/register', {
    ID: 'b-1', Name: 'b', Check: { CheckID: '_nomad-check-abc', Name: 'alive', TTL: '1m', Status: 'passing' },
  })).status, 200);
  t.is(api.check('service:a')?.Status, 'critical');
  t.like(api.check('_nomad-check-abc'), { Name: 'alive', Status: 'passing', ServiceID: 'b-1', ServiceName: 'b' });
});

test('snake_case and lower-case keys are accepted, as Consul decodes them', async (t) => {
  const { api } = await double(t);
  const r = await call(api, 'PUT', '/v1/agent/service/register', {
    name: 'snake', id: 'snake-1', check: { check_id: 'c1', ttl: '1m', status: 'warning' },
  });
  t.is(r.status, 200, r.text);
  t.like(api.check('c1'), { Status: 'warning', ServiceID: 'snake-1' });
});

test('bad requests are refused with Consul-like errors', async (t) => {
  const { api } = await double(t);
  t.deepEqual(await pick(call(api, 'PUT', '/v1/agent/service/register', { Port: 1 })), [400, 'Missing service name']);
  t.is((await call(api, 'PUT', '/v1/agent/service/register', { Name: 'x', Check: { HTTP: 'http://127.0.0.1:1/' } })).status, 400);
  t.is((await call(api, 'PUT', '/v1/agent/service/register', { Name: 'x', Check: { Args: ['/bin/true'], Interval: '10s' } })).status, 400);
  t.is((await call(api, 'PUT', '/v1/agent/service/register', '{not json')).status, 400);
  t.is((await call(api, 'GET', '/v1/agent/service/register')).status, 405);
  t.is((await call(api, 'PUT', '/v1/agent/service/deregister/nope')).status, 404);
  t.is((await call(api, 'PUT', '/v1/agent/check/pass/nope')).status, 404);
  t.is((await call(api, 'GET', '/v1/kv/anything')).status, 404);
  t.deepEqual(api.listServices(), [], 'a rejected registration changes nothing');
});

test('TTL checks: pass sets passing with the note; a missed TTL turns critical', async (t) => {
  const { api, consul } = await double(t);
  await register(consul, { name: 'job', check: { ttl: '300ms' } });
  await consul.agent.check.pass({ id: 'service:job', note: 'doze: job is asleep' });
  t.like(api.check('service:job'), { Status: 'passing', Output: 'doze: job is asleep' });
  // Renewed in time: still passing.
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 150));
    await consul.agent.check.pass('service:job');
  }
  t.is(api.check('service:job')?.Status, 'passing');
  await new Promise((r) => setTimeout(r, 450));
  t.like(api.check('service:job'), { Status: 'critical', Output: 'TTL expired' });
  // warn / fail / update work on TTL checks too.
  await consul.agent.check.warn({ id: 'service:job', note: 'meh' });
  t.is(api.check('service:job')?.Status, 'warning');
  t.is((await call(api, 'PUT', '/v1/agent/check/update/service:job', { Status: 'passing', Output: 'up' })).status, 200);
  t.like(api.check('service:job'), { Status: 'passing', Output: 'up' });
});

test('pass on a non-TTL check is refused', async (t) => {
  const { api } = await double(t);
  await call(api, 'PUT', '/v1/agent/service/register', { Name: 'w', Check: { TCP: '127.0.0.1:1', Interval: '10s' } });
  const r = await call(api, 'PUT', '/v1/agent/check/pass/service:w');
  t.is(r.status, 500);
  t.regex(r.text, /does not have associated TTL/);
});

test('health endpoints: checks and service entries with the node, and ?passing', async (t) => {
  const { consul } = await double(t);
  await register(consul, { id: 'web-1', name: 'web', port: 1, check: { ttl: '1m', status: 'passing' } });
  await register(consul, { id: 'web-2', name: 'web', port: 2, check: { ttl: '1m' } });
  await register(consul, { id: 'db-1', name: 'db', check: { ttl: '1m' } });
  const checks = await consul.health.checks('web') as unknown as HealthCheck[];
  t.deepEqual(checks.map((c) => c.ServiceID).sort(), ['web-1', 'web-2']);
  const entries = await consul.health.service('web') as Array<{ Node: { Node: string }; Service: { ID: string; Port: number }; Checks: HealthCheck[] }>;
  t.is(entries.length, 2);
  const first = entries.find((e) => e.Service.ID === 'web-1')!;
  t.is(first.Node.Node, 'doze-test-node');
  t.is(first.Service.Port, 1);
  t.deepEqual(first.Checks.map((c) => c.CheckID), ['serfHealth', 'service:web-1']);
  const passing = await consul.health.service({ service: 'web', passing: true }) as Array<{ Service: { ID: string } }>;
  t.deepEqual(passing.map((e) => e.Service.ID), ['web-1']);
  t.deepEqual(await consul.health.service('nothing'), []);
});

test('blocking query: returns at once for index 0, waits for a change, carries X-Consul-Index', async (t) => {
  const { api, consul } = await double(t);
  await register(consul, { name: 'web', check: { ttl: '1m' } });
  const first = await call(api, 'GET', '/v1/health/checks/web');
  const index = Number(first.index);
  t.true(index >= 1);

  const started = Date.now();
  const blocked = call(api, 'GET', `/v1/health/checks/web?index=${index}&wait=5s`);
  await new Promise((r) => setTimeout(r, 200));
  await consul.agent.check.pass({ id: 'service:web', note: 'now passing' });
  const woke = await blocked;
  const took = Date.now() - started;
  t.true(took >= 180 && took < 2000, `returned after ${took} ms`);
  t.true(Number(woke.index) > index);
  t.is((woke.json() as HealthCheck[])[0]?.Status, 'passing');
});

test('blocking query: returns after wait with the same index when nothing changes', async (t) => {
  const { api, consul } = await double(t);
  await register(consul, { name: 'web', check: { ttl: '1m' } });
  const index = api.index;
  const started = Date.now();
  const r = await call(api, 'GET', `/v1/health/service/web?index=${index}&wait=300ms`);
  const took = Date.now() - started;
  t.is(Number(r.index), index);
  // wait + up to wait/16 jitter
  t.true(took >= 290 && took < 1500, `returned after ${took} ms`);
});

test('the npm client watch sees a status change through blocking queries', async (t) => {
  const { consul } = await double(t);
  await register(consul, { name: 'web', check: { ttl: '1m' } });
  const watch = consul.watch({ method: consul.health.service, options: { service: 'web', wait: '2s' } });
  t.teardown(() => watch.end());
  const statuses: string[] = [];
  const changed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no passing status seen')), 5000);
    watch.on('change', (entries: Array<{ Checks: HealthCheck[] }>) => {
      const status = entries[0]?.Checks.find((c) => c.CheckID === 'service:web')?.Status ?? 'none';
      statuses.push(status);
      if (status === 'passing') {
        clearTimeout(timer);
        resolve();
      }
    });
    watch.on('error', (error: Error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  await new Promise((r) => setTimeout(r, 100));
  await consul.agent.check.pass('service:web');
  await changed;
  t.deepEqual(statuses, ['critical', 'passing']);
});

test('deregister removes the service and its checks', async (t) => {
  const { api, consul } = await double(t);
  await register(consul, { id: 'web-1', name: 'web', check: { ttl: '1m' } });
  await consul.agent.service.deregister('web-1');
  t.deepEqual(await consul.agent.service.list(), {});
  t.deepEqual(await consul.agent.check.list(), {});
  t.deepEqual(api.listChecks(), []);
});

test('re-registering keeps checks missing from the request unless replace-existing-checks', async (t) => {
  const { api } = await double(t);
  await call(api, 'PUT', '/v1/agent/service/register', { Name: 'w', Checks: [{ CheckID: 'a', TTL: '1m' }, { CheckID: 'b', TTL: '1m' }] });
  await call(api, 'PUT', '/v1/agent/service/register', { Name: 'w', Checks: [{ CheckID: 'a', TTL: '1m' }] });
  t.deepEqual(api.listChecks().map((c) => c.CheckID).sort(), ['a', 'b']);
  await call(api, 'PUT', '/v1/agent/service/register?replace-existing-checks=true', { Name: 'w', Checks: [{ CheckID: 'a', TTL: '1m' }] });
  t.deepEqual(api.listChecks().map((c) => c.CheckID), ['a']);
});

test('HTTP checks registered here are run by the check runner and reach the health endpoints', async (t) => {
  let code = 200;
  const app = http.createServer((_req, res) => {
    res.statusCode = code;
    res.end(`code ${code}`);
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => app.close(() => resolve())));
  const target = `http://127.0.0.1:${(app.address() as AddressInfo).port}/health`;
  const runner = await CheckRunner.create({ stagger: false });
  t.teardown(() => runner.stop());
  const { api, consul } = await double(t, { runner });
  await register(consul, { name: 'web', check: { http: target, interval: '50ms', timeout: '1s' } });
  const waitFor = (status: string) => until(`the check to be ${status}`, () => (api.check('service:web')?.Status === status ? api.check('service:web') : undefined), 2000);
  t.like(await waitFor('passing'), { Status: 'passing', Output: `HTTP GET ${target}: 200 OK Output: code 200` });
  code = 500;
  t.like(await waitFor('critical'), { Status: 'critical' });
  await consul.agent.service.deregister('web');
  t.is(runner.status('service:web'), undefined, 'deregistering stops the check loop');
});

test('parseGoDuration reads Go durations', (t) => {
  t.is(parseGoDuration('10s'), 10_000);
  t.is(parseGoDuration('1m30s'), 90_000);
  t.is(parseGoDuration('250ms'), 250);
  t.is(parseGoDuration('1.5h'), 5_400_000);
  t.is(parseGoDuration('0'), 0);
  t.is(parseGoDuration(1_000_000_000), 1000);
  t.is(parseGoDuration('10'), undefined);
  t.is(parseGoDuration('soon'), undefined);
  t.is(parseGoDuration('10s junk'), undefined);
});

/** The client's .d.ts demands `name` and `timeout` on every check; Consul does not, so neither do these tests. */
function register(consul: Consul, options: Record<string, unknown>): Promise<unknown> {
  return consul.agent.service.register(options as never);
}

async function pick(response: Promise<{ status: number; text: string }>): Promise<[number, string]> {
  const r = await response;
  return [r.status, r.text];
}
