import test from 'ava';
import { mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { startRegistryApp } from '../helpers/registry-app.js';
import { tempDir } from '../helpers/temp-dir.js';

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
  const app = await startRegistryApp(t, { registrations: true });
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
  const app = await startRegistryApp(t, { registrations: true });
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
  const app = await startRegistryApp(t, { registrations: true });
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
  const app = await startRegistryApp(t, { registrations: true });
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
  const app = await startRegistryApp(t, { registrations: true });
  const r = await call(`${app.url}/api/instances/vm1`, 'PUT', vm({ runtime: { kind: 'qemu', mode: 'snapshot', control: '/run/doze/dz-nonexistent/control.sock' } }));
  t.is(r.status, 422, JSON.stringify(r.json));
  t.regex(String(r.json.error), /^runtime: /);
  t.is(app.detector.get('vm1'), undefined);
});

test('DELETE wakes a sleeping instance, then releases it; only API registrations can be deleted', async (t) => {
  const app = await startRegistryApp(t, { registrations: true });
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
  const app = await startRegistryApp(t, { registrations: true, token: TOKEN });
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm())).status, 401);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm(), 'wrong')).status, 401);
  t.is(app.detector.instances().length, 0);
  t.is((await call(`${app.url}/api/instances/vm1`, 'PUT', vm(), TOKEN)).status, 201);
  t.is((await call(`${app.url}/api/instances/vm1`, 'DELETE')).status, 401);
  t.truthy(app.detector.get('vm1'));
  t.is((await call(`${app.url}/api/instances/vm1`, 'DELETE', undefined, TOKEN)).status, 200);
});

test('concurrent PUTs for one address: exactly one wins', async (t) => {
  const app = await startRegistryApp(t, { registrations: true });
  const results = await Promise.all(['a', 'b', 'c'].map((id) => call(`${app.url}/api/instances/${id}`, 'PUT', vm())));
  t.deepEqual(results.map((r) => r.status).sort(), [201, 409, 409]);
  t.is(app.detector.instances().length, 1);
});

// --- what a registration may name (agent/instances/registration-policy.ts; docs/security.md) ---

test('403 for a freezer registration naming the root of the freezer hierarchy, with the reason; nothing is admitted', async (t) => {
  const app = await startRegistryApp(t, { registrations: true });
  for (const cgroup of ['/sys/fs/cgroup/freezer', '/sys/fs/cgroup', '.']) {
    const refused = await call(`${app.url}/api/instances/evil`, 'PUT', vm({ runtime: { kind: 'freezer', cgroup } }));
    t.is(refused.status, 403, cgroup);
    t.regex(String(refused.json.error), /runtime\.cgroup: .* is the root of a cgroup hierarchy/, cgroup);
  }
  t.is(app.detector.instances().length, 0);
});

test('403 for a cgroup outside the allowed roots (the defaults: Nomad\'s task cgroups), naming them and the setting', async (t) => {
  const app = await startRegistryApp(t, { registrations: true });
  // The freezer cgroup of every process systemd starts, and a cgroup reached through "..".
  const outside = await call(`${app.url}/api/instances/evil`, 'PUT', vm({ runtime: { kind: 'freezer', cgroup: '/sys/fs/cgroup/freezer/system.slice' } }));
  t.is(outside.status, 403);
  t.regex(String(outside.json.error), /runtime\.cgroup: "\/sys\/fs\/cgroup\/freezer\/system\.slice" is outside the cgroup roots registrations may name \(.*\/sys\/fs\/cgroup\/freezer\/nomad.*\); add its parent to registrations\.cgroupRoots/);
  const climbing = await call(`${app.url}/api/instances/evil`, 'PUT', vm({ runtime: { kind: 'freezer', cgroup: 'nomad/../system.slice' } }));
  t.is(climbing.status, 403);
  t.regex(String(climbing.json.error), /contains "\.\."/);
  const memory = await call(`${app.url}/api/instances/evil`, 'PUT', vm({ runtime: { kind: 'qemu', qmp: '/run/doze/vm/qmp.sock', memoryCgroup: '/sys/fs/cgroup/memory' } }));
  t.is(memory.status, 403);
  t.regex(String(memory.json.error), /runtime\.memoryCgroup/);
  t.is(app.detector.instances().length, 0);
});

test('403 for sockets and state outside the path roots (symlinks resolved), programs to run, and nomad-scale', async (t) => {
  const dir = await tempDir(t, 'roots');
  const allowed = join(dir, 'allowed');
  await mkdir(allowed);
  // A link inside the allowed root that points out of it is judged by where it points.
  await symlink('/var/run', join(allowed, 'escape'));
  const app = await startRegistryApp(t, { registrations: true, roots: { cgroups: ['/sys/fs/cgroup/freezer/nomad'], paths: [allowed] } });
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ kind: 'qemu', qmp: '/tmp/qmp.sock' }, /runtime\.qmp: "\/tmp\/qmp\.sock" is outside the path roots/],
    [{ kind: 'qemu', qmp: join(allowed, 'escape', 'qmp.sock') }, /runtime\.qmp: .* is outside the path roots/],
    [{ kind: 'cloud-hypervisor', socket: join(allowed, 'ch.sock'), handleFile: '/etc/doze.json' }, /runtime\.handleFile/],
    [{ kind: 'firecracker', socket: join(allowed, 'fc.sock'), mode: 'snapshot', snapshotDir: join(allowed, 's'), diffSnapshots: false, launcher: { binary: '/bin/sh' } }, /runtime\.launcher: a registration may not name a program/],
    [{ kind: 'nomad-scale', job: 'web', group: 'web' }, /runtime "nomad-scale" cannot be registered through the API/],
  ];
  for (const [runtime, reason] of cases) {
    const refused = await call(`${app.url}/api/instances/evil`, 'PUT', vm({ runtime }));
    t.is(refused.status, 403, JSON.stringify(runtime));
    t.regex(String(refused.json.error), reason);
  }
  const tls = await call(`${app.url}/api/instances/evil`, 'PUT', vm({ checkTls: { certFile: '/etc/shadow', keyFile: join(allowed, 'k.pem') } }));
  t.is(tls.status, 403);
  t.regex(String(tls.json.error), /checkTls\.certFile/);
  t.is(app.detector.instances().length, 0);
});

test('a registration naming only what lies below the roots is taken on', async (t) => {
  const dir = await tempDir(t, 'roots');
  const app = await startRegistryApp(t, { registrations: true, roots: { cgroups: ['/sys/fs/cgroup/freezer/nomad'], paths: [dir] }, createRuntime: () => new FakeRuntime({ pauseMs: 0, resumeMs: 0, failResume: false }) });
  const cgroup = await call(`${app.url}/api/instances/task`, 'PUT', vm({ runtime: { kind: 'freezer', cgroup: '/sys/fs/cgroup/freezer/nomad/share/5f1e2d3c.app' } }));
  t.is(cgroup.status, 201, JSON.stringify(cgroup.json));
  const socket = await call(`${app.url}/api/instances/vm`, 'PUT', vm({ address: '10.213.7.3:80', runtime: { kind: 'qemu', mode: 'snapshot', control: join(dir, 'vm', 'control.sock') } }));
  t.is(socket.status, 201, JSON.stringify(socket.json));
});

test('with registrations off (the default) PUT and DELETE answer 404 saying how to enable them', async (t) => {
  const app = await startRegistryApp(t, { token: TOKEN }); // registrations not enabled: the default
  const put = await call(`${app.url}/api/instances/vm1`, 'PUT', vm(), TOKEN);
  t.is(put.status, 404);
  t.regex(String(put.json.error), /"registrations": \{ "enabled": true \}/);
  t.is((await call(`${app.url}/api/instances/vm1`, 'DELETE', undefined, TOKEN)).status, 404);
  t.is(app.detector.instances().length, 0);
});
