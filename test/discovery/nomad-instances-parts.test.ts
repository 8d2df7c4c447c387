import { install } from '@sinonjs/fake-timers';
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../agent/config/load.js';
import type { ConsulConfig } from '../../agent/config/schema.js';
import { ConsulAgentClient } from '../../agent/discovery/consul-agent.js';
import { ConsulLink } from '../../agent/discovery/consul-link.js';
import { NomadClient, NomadError } from '../../agent/nomad/nomad-client.js';
import { findNomadTaskCgroup, nomadTaskCgroupCandidates } from '../../agent/discovery/task-cgroup.js';
import { ConfigError } from '../../agent/shared/errors.js';
import { createLogger } from '../../agent/shared/log.js';
import { ConnectionTracker } from '../../agent/discovery/connection-tracker.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { until } from '../helpers/until.js';

const silent = createLogger('silent');
const ALLOC = '5f1e2d3c-0000-4000-8000-00000000abcd';

// --- config ---------------------------------------------------------------------------------------

test('nomad and consul sections: defaults filled, agent still valid without them', (t) => {
  const config = parseConfig({ nomad: { address: 'http://127.0.0.1:4646' }, consul: { address: 'https://consul.local:8501', token: 'x' } });
  t.deepEqual(config.nomad, { address: 'http://127.0.0.1:4646', cgroupRoot: '/sys/fs/cgroup' });
  t.like(config.consul, { address: 'https://consul.local:8501', token: 'x', register: true, checkInterval: 10_000 });
  const plain = parseConfig({});
  t.is(plain.nomad, undefined);
  t.is(plain.consul, undefined);
  const full = parseConfig({
    nomad: { address: 'https://nomad:4646', token: 't', namespace: 'apps', region: 'eu', nodeId: 'n1', tls: { caFile: '/ca.pem' }, cgroupRoot: '/x' },
    consul: { address: 'http://127.0.0.1:8500', register: false, checkInterval: '30s' },
  });
  t.like(full.nomad, { nodeId: 'n1', namespace: 'apps', region: 'eu', tls: { caFile: '/ca.pem' }, cgroupRoot: '/x' });
  t.like(full.consul, { register: false, checkInterval: 30_000 });
});

test('bad nomad/consul sections name the field and the value', (t) => {
  const bad = (raw: unknown) => t.throws(() => parseConfig(raw), { instanceOf: ConfigError }).message;
  t.regex(bad({ nomad: { address: 'localhost:4646' } }), /nomad\.address: expected an http\(s\) URL.*\(got "localhost:4646"\)/);
  t.regex(bad({ nomad: {} }), /nomad\.address/);
  t.regex(bad({ nomad: { address: 'http://x:4646', node: 'n1' } }), /nomad: unknown key "node" \(did you mean "nodeId"\?\)/);
  t.regex(bad({ nomad: { address: 'http://x:4646', cgroupRoot: 'sys/fs/cgroup' } }), /nomad\.cgroupRoot: an absolute path/);
  t.regex(bad({ consul: { address: 'ftp://x' } }), /consul\.address/);
  t.regex(bad({ consul: { address: 'http://x:8500', checkInterval: 'soon' } }), /consul\.checkInterval: "soon" is not a duration/);
});

// --- GET /v1/agent/self ---------------------------------------------------------------------------

test('agentSelf: the node id comes from stats.client.node_id', async (t) => {
  const nomad = await startNomadDouble(t, { agentNodeId: 'c0ffee00-0000-4000-8000-000000000001' });
  const self = await new NomadClient({ address: nomad.url, region: 'global' }).agentSelf();
  t.deepEqual(self, { nodeId: 'c0ffee00-0000-4000-8000-000000000001', name: 'double.global', region: 'global', datacenter: 'dc1' });
  t.is(nomad.requests.at(-1)!.path, '/v1/agent/self');
});

test('agentSelf: a server-only agent, a malformed body and an unreachable agent are NomadErrors', async (t) => {
  const server = await startNomadDouble(t, { agentNodeId: null });
  const error = await t.throwsAsync(new NomadClient({ address: server.url }).agentSelf(), { instanceOf: NomadError });
  t.is(error.code, 'E_NOMAD_RESPONSE');
  t.regex(error.message, /not a client .* set nomad\.nodeId/);

  const nomad = await startNomadDouble(t);
  nomad.injectOnce('GET', '/v1/agent/self', { body: '{"stats": "lots"}' });
  t.is((await t.throwsAsync(new NomadClient({ address: nomad.url }).agentSelf(), { instanceOf: NomadError })).code, 'E_NOMAD_RESPONSE');
  nomad.injectOnce('GET', '/v1/agent/self', { status: 403, body: 'Permission denied' });
  const denied = await t.throwsAsync(new NomadClient({ address: nomad.url }).agentSelf(), { instanceOf: NomadError });
  t.like(denied, { code: 'E_NOMAD_HTTP', status: 403 });

  const gone = await t.throwsAsync(new NomadClient({ address: 'http://127.0.0.1:1' }).agentSelf(), { instanceOf: NomadError });
  t.is(gone.code, 'E_NOMAD_UNREACHABLE');
});

// --- task cgroups ---------------------------------------------------------------------------------

test('Nomad task cgroup layouts: v1 freezer/nomad/<alloc>.<task>, v2 nomad.slice/{share,reserve}.slice/<alloc>.<task>.scope', (t) => {
  t.deepEqual(nomadTaskCgroupCandidates('/sys/fs/cgroup', ALLOC, 'app').map((c) => [c.version, c.path]), [
    [1, `/sys/fs/cgroup/freezer/nomad/${ALLOC}.app`],
    [2, `/sys/fs/cgroup/nomad.slice/share.slice/${ALLOC}.app.scope`],
    [2, `/sys/fs/cgroup/nomad.slice/reserve.slice/${ALLOC}.app.scope`],
  ]);
});

test('findNomadTaskCgroup picks the layout whose freeze control exists', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'dz-cg-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  t.is(await findNomadTaskCgroup(root, ALLOC, 'app'), undefined, 'task not started yet');
  const v2 = join(root, 'nomad.slice', 'reserve.slice', `${ALLOC}.app.scope`);
  await mkdir(v2, { recursive: true });
  t.is(await findNomadTaskCgroup(root, ALLOC, 'app'), undefined, 'a directory without cgroup.freeze is no freezer');
  await writeFile(join(v2, 'cgroup.freeze'), '0');
  t.like(await findNomadTaskCgroup(root, ALLOC, 'app'), { version: 2, path: v2 });
  const v1 = join(root, 'freezer', 'nomad', `${ALLOC}.app`);
  await mkdir(v1, { recursive: true });
  await writeFile(join(v1, 'freezer.state'), 'THAWED');
  t.like(await findNomadTaskCgroup(root, ALLOC, 'app'), { version: 1, path: v1 });
  t.is(await findNomadTaskCgroup(root, ALLOC, 'sidecar'), undefined);
});

// --- Consul ---------------------------------------------------------------------------------------

test('ConsulAgentClient: validated answers, Consul errors with codes', async (t) => {
  const consul = await AgentApiDouble.start();
  t.teardown(() => consul.close());
  const client = new ConsulAgentClient({ address: consul.url });
  t.teardown(() => client.destroy());
  await client.register({ id: 'svc', name: 'svc', port: 80, check: { name: 'h', http: 'http://127.0.0.1:1/', interval: '10s', timeout: '1s' } });
  t.like((await client.services())['svc'], { ID: 'svc', Service: 'svc', Port: 80 });
  t.like((await client.checks()).find((c) => c.CheckID === 'service:svc'), { ServiceID: 'svc', Type: 'http', Status: 'critical' });
  const missing = await t.throwsAsync(client.deregister('nope'));
  t.like(missing, { code: 'E_CONSUL_HTTP', status: 404 });
  await client.deregister('svc');
  t.deepEqual(await client.services(), {});
  const gone = new ConsulAgentClient({ address: 'http://127.0.0.1:1' });
  t.teardown(() => gone.destroy());
  t.like(await t.throwsAsync(gone.checks()), { code: 'E_CONSUL_UNREACHABLE' });
  t.throws(() => new ConsulAgentClient({ address: 'consul:8500' }), { message: /not an http\(s\) URL/ });
});

function linkConfig(address: string, overrides: Partial<ConsulConfig> = {}): ConsulConfig {
  return { address, register: false, checkInterval: 10_000, ...overrides };
}


test('ConsulLink: an unreachable Consul is reported, retried, and never throws', async (t) => {
  const controller = new AbortController();
  const link = new ConsulLink({
    config: linkConfig('http://127.0.0.1:1', { register: true }),
    log: silent,
    statusAddress: () => '0.0.0.0:7070',
    signal: controller.signal,
    minBackoffMs: 10,
    maxBackoffMs: 50,
  });
  t.teardown(async () => {
    controller.abort();
    await link.stop();
  });
  link.start();
  await until('a few retries', () => (link.tracker.status().error ?? '').includes('unreachable'));
  t.false(link.tracker.connected);
  t.false(link.serviceRegistered);
  // Rounds and retries keep failing quietly (an unhandled rejection would fail the test), still reported.
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.regex(link.tracker.status().error ?? '', /unreachable/);
  t.false(link.tracker.connected);
});

test('ConnectionTracker: `since` moves only when the connection flips', (t) => {
  // A fake clock a second apart per step: a `since` that moved on a repeated up() would show.
  // Synchronous, and uninstalled before the body ends: the other tests of this file never see it.
  const clock = install({ toFake: ['Date'], now: Date.parse('2026-12-01T08:00:00Z') });
  try {
    const seen: boolean[] = [];
    const tracker = new ConnectionTracker('http://x', (s) => seen.push(s.connected));
    const initial = tracker.status();
    t.like(initial, { connected: false, error: 'not contacted yet', since: '2026-12-01T08:00:00.000Z' });
    clock.tick(1000);
    tracker.up({ source: 'stream' });
    const up = tracker.status();
    t.like(up, { connected: true, detail: { source: 'stream' }, since: '2026-12-01T08:00:01.000Z' });
    t.is(up.error, undefined);
    clock.tick(1000);
    tracker.up({ source: 'stream' });
    t.is(tracker.status().since, up.since, 'still up: since is when it came up');
    clock.tick(1000);
    tracker.down('boom');
    t.like(tracker.status(), { connected: false, error: 'boom', detail: { source: 'stream' }, since: '2026-12-01T08:00:03.000Z' });
    t.deepEqual(seen, [true, false]);
  } finally {
    clock.uninstall();
  }
});
