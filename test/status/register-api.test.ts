import test from 'ava';
import { startRegistryApp } from '../helpers/registry-app.js';

/*
 * PUT/DELETE /api/instances/{id}: run-time registration (agent/instances/registry.ts),
 * what `doze vm run --register` uses. A real detector and registry over a fake
 * traffic source and fake runtimes: no kernel objects.
 */

const TOKEN = 'registration-token-with-enough-entropy';
const vm = (extra: Record<string, unknown> = {}) => ({ address: '10.213.7.2:80', interface: 'dzvm0t', idleTimeout: '30s', runtime: { kind: 'fake' }, ...extra });

async function call(url: string, method: string, body?: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

test('PUT registers an instance (201), marked source "api"; the same PUT again is 200 and changes nothing', async (t) => {
  const app = await startRegistryApp(t);
  const created = await call(`${app.url}/api/instances/vm1`, 'PUT', vm());
  t.is(created.status, 201, JSON.stringify(created.json));
  t.like(created.json, { id: 'vm1', state: 'running', address: '10.213.7.2:80', interface: 'dzvm0t', idleTimeoutMs: 30_000, source: 'api', runtime: 'fake', origin: null });
  const instance = app.detector.get('vm1')!;
  t.is(instance.source, 'api');
  t.true(app.source.attached.has('dzvm0t'), 'programs attached to its interface');
  t.true(app.source.tracked.has('10.213.7.2'));

  const again = await call(`${app.url}/api/instances/vm1`, 'PUT', vm());
  t.is(again.status, 200);
  t.is(app.detector.get('vm1'), instance, 'the same instance, not a new one');

  const list = (await (await fetch(`${app.url}/api/instances`)).json()) as { id: string; source: string }[];
  t.deepEqual(list.map((i) => [i.id, i.source]), [['vm1', 'api']]);
});

test('PUT with a changed body replaces the registration (200), waking the old one first', async (t) => {
  const app = await startRegistryApp(t);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm())).status, 201);
  const old = app.detector.get('vm1')!;
  t.true(await app.detector.sleepNow('vm1'));
  t.is(old.state, 'sleeping');
  const replaced = await call(`${app.url}/api/instances/vm1`, 'PUT', vm({ idleTimeout: '1m' }));
  t.is(replaced.status, 200);
  t.is(replaced.json.idleTimeoutMs, 60_000);
  t.not(app.detector.get('vm1'), old);
  t.is(old.state, 'running', 'the replaced instance was woken before it was let go');
  t.deepEqual(app.released, ['vm1']);
});

test('409 when the id or the address belongs to another instance', async (t) => {
  const app = await startRegistryApp(t);
  await app.addStatic({ id: 'web', address: '10.200.0.2:8080', interface: 'dz-web-h', runtime: { kind: 'fake' } });
  const sameId = await call(`${app.url}/api/instances/web`, 'PUT', vm());
  t.is(sameId.status, 409);
  t.regex(String(sameId.json.error), /instance id "web" is taken by a configured instance/);
  const sameAddress = await call(`${app.url}/api/instances/vm2`, 'PUT', vm({ address: '10.200.0.2:9090' }));
  t.is(sameAddress.status, 409);
  t.regex(String(sameAddress.json.error), /address 10\.200\.0\.2 is already managed as "web"/);
  t.is(app.detector.get('web')!.source, 'static', 'the configured instance is untouched');
  t.is(app.detector.get('vm2'), undefined);
});

test('400 names the bad fields; the body id must match the path', async (t) => {
  const app = await startRegistryApp(t);
  const bad = await call(`${app.url}/api/instances/vm1`, 'PUT', { address: '10.213.7.2', interface: 'a-name-far-too-long-for-linux', idleTimeout: 'soon', runtime: { kind: 'qemu', mode: 'snapshot' } });
  t.is(bad.status, 400);
  const fields = (bad.json.fields as { path: string }[]).map((f) => f.path).sort();
  t.deepEqual(fields, ['address', 'idleTimeout', 'interface', 'runtime.control']);
  t.regex(String(bad.json.error), /idleTimeout: "soon" is not a duration/);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm({ id: 'other' }))).status, 400);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', '[1, 2]')).status, 400);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', '{"broken": ')).status, 400);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm({ surprise: true }))).status, 400, 'unknown keys are refused, as in the config file');
  t.is(app.detector.instances().length, 0);
});

test('422 when the runtime does not answer its probe', async (t) => {
  const app = await startRegistryApp(t);
  const r = await call(`${app.url}/api/instances/vm1`, 'PUT', vm({ runtime: { kind: 'qemu', mode: 'snapshot', control: '/nonexistent/doze-vm/control.sock' } }));
  t.is(r.status, 422, JSON.stringify(r.json));
  t.regex(String(r.json.error), /^runtime: /);
  t.is(app.detector.get('vm1'), undefined);
});

test('DELETE wakes a sleeping instance, then releases it; only API registrations can be deleted', async (t) => {
  const app = await startRegistryApp(t);
  await app.addStatic({ id: 'web', address: '10.200.0.2:8080', interface: 'dz-web-h', runtime: { kind: 'fake' } });
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm())).status, 201);
  const instance = app.detector.get('vm1')!;
  t.true(await app.detector.sleepNow('vm1'));
  t.is(await instance.runtime.inspect(), 'asleep');

  const removed = await call(`${app.url}/api/instances/vm1`, 'DELETE');
  t.is(removed.status, 200);
  t.like(removed.json, { id: 'vm1', state: 'running', removed: true, source: 'api' });
  t.is(await instance.runtime.inspect(), 'running', 'woken before it was let go');
  t.is(app.detector.get('vm1'), undefined);
  t.false(app.source.tracked.has('10.213.7.2'));
  t.false(app.source.attached.has('dzvm0t'));
  t.deepEqual(app.released, ['vm1']);

  t.is((await call(`${app.url}/api/instances/vm1`, 'DELETE')).status, 404);
  const staticOne = await call(`${app.url}/api/instances/web`, 'DELETE');
  t.is(staticOne.status, 409);
  t.regex(String(staticOne.json.error), /configured, not registered through the API/);
  t.truthy(app.detector.get('web'));
});

test('with a token, PUT and DELETE need it', async (t) => {
  const app = await startRegistryApp(t, { token: TOKEN });
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm())).status, 401);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm(), 'wrong')).status, 401);
  t.is(app.detector.instances().length, 0);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm(), TOKEN)).status, 201);
  t.is((await call(`${app.url}/api/instances/vm1`, 'DELETE')).status, 401);
  t.truthy(app.detector.get('vm1'));
  t.is((await call(`${app.url}/api/instances/vm1`, 'DELETE', undefined, TOKEN)).status, 200);
});

test('concurrent PUTs for one address: exactly one wins', async (t) => {
  const app = await startRegistryApp(t);
  const results = await Promise.all(['a', 'b', 'c'].map((id) => call(`${app.url}/api/instances/${id}`, 'PUT', vm())));
  t.deepEqual(results.map((r) => r.status).sort(), [201, 409, 409]);
  t.is(app.detector.instances().length, 1);
});
