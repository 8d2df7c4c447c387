import test from 'ava';
import { ConsulAgentClient } from '../../agent/discovery/consul-agent.js';
import { ConsulLink } from '../../agent/discovery/consul-link.js';
import { NomadClient, type NomadError } from '../../agent/nomad/nomad-client.js';
import { consulProbes, missingRights, nomadProbes } from '../../agent/discovery/permissions.js';
import { createLogger } from '../../agent/shared/log.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { until } from '../helpers/until.js';

const silent = createLogger('silent');

test('Nomad: every right the token lacks is named, and a refused call says which capability it needs', async (t) => {
  const nomad = await startNomadDouble(t, { acl: { full: ['agent:read', 'node:read', 'read-job'], weak: ['read-job'] } });
  nomad.registerJob(webJob());
  t.deepEqual(await missingRights(nomadProbes(new NomadClient({ address: nomad.url, token: 'full' }), 'node-1')), []);
  const weak = new NomadClient({ address: nomad.url, token: 'weak' });
  t.deepEqual((await missingRights(nomadProbes(weak, 'node-1'))).map((m) => m.split(' ')[0]), ['agent:read', 'node:read']);
  const error = await t.throwsAsync<NomadError>(weak.nodeAllocations('node-1'));
  t.regex(error?.message ?? '', /HTTP 403: Permission denied \(the token needs node:read\)/);
  const scale = await t.throwsAsync<NomadError>(weak.scaleGroup('web', 'web', 0, 'x'));
  t.regex(scale?.message ?? '', /\(the token needs scale-job \(or submit-job\) in the job's namespace\)/);
});

test('Consul: agent:read is probed; services and checks the token cannot read are silently left out; a TTL update needs service:write', async (t) => {
  const consul = await AgentApiDouble.start({ acl: { reader: { serviceRead: ['web'] }, admin: { agentRead: true, serviceWrite: ['*'] } } });
  t.teardown(() => consul.close());
  const admin = new ConsulAgentClient({ address: consul.url, token: 'admin' });
  t.teardown(() => admin.destroy());
  await admin.register({ id: 'web-1', name: 'web', port: 1 });
  await admin.register({ id: 'db-1', name: 'db', port: 2 });
  await fetch(`${consul.url}/v1/agent/service/register`, { method: 'PUT', headers: { 'X-Consul-Token': 'admin' }, body: JSON.stringify({ ID: 'web-2', Name: 'web', Check: { CheckID: 'web-ttl', TTL: '30s' } }) });

  const reader = new ConsulAgentClient({ address: consul.url, token: 'reader' });
  t.teardown(() => reader.destroy());
  t.deepEqual(Object.keys(await reader.services()).sort(), ['web-1', 'web-2'], 'db is left out, without an error');
  t.deepEqual((await reader.checks()).map((c) => c.CheckID), ['web-ttl']);
  t.deepEqual((await missingRights(consulProbes(reader))).map((m) => m.split(' ')[0]), ['agent:read']);
  const ttl = await fetch(`${consul.url}/v1/agent/check/pass/web-ttl`, { method: 'PUT', headers: { 'X-Consul-Token': 'reader' } });
  t.is(ttl.status, 403);
  t.regex(await ttl.text(), /lacks permission 'service:write' on "web"/);
  t.deepEqual(await missingRights(consulProbes(admin)), []);
});

test('ConsulLink: a token that may not register doze-agent is reported with the right it needs', async (t) => {
  const consul = await AgentApiDouble.start({ acl: { reader: { agentRead: true, serviceRead: ['*'] } } });
  t.teardown(() => consul.close());
  const controller = new AbortController();
  const link = new ConsulLink({ config: { address: consul.url, token: 'reader', register: true, checkInterval: 10_000 }, log: silent, statusAddress: () => '127.0.0.1:7070', signal: controller.signal, minBackoffMs: 20, maxBackoffMs: 50 });
  t.teardown(async () => {
    controller.abort();
    await link.stop();
  });
  link.start();
  await until('the refusal to register', () => (link.tracker.status().error ?? '').includes('service:write'), 2000);
  t.regex(link.tracker.status().error ?? '', /HTTP 403.*\(the token needs service:write on doze-agent to register it/);
  t.false(link.serviceRegistered);
});
