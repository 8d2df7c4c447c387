import test from 'ava';
import { compareVersions, NOMAD_MINIMUM_VERSION } from '../../agent/upstream-versions.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { startAgent } from '../helpers/agent.js';
import { closedPort } from '../helpers/http.js';
import { rootTest } from '../helpers/root.js';

/*
 * Know the Nomad it talks to (agent/upstream-versions.ts): the versions read
 * at start from /v1/agent/self, a Nomad below 1.7 refused (its task cgroup
 * layout differs), both shown in GET /api/status and on the status page.
 */

test('versions compare by major.minor.patch; the minimum is Nomad 1.7.0', (t) => {
  t.is(NOMAD_MINIMUM_VERSION, '1.7.0');
  t.true(compareVersions('1.6.5', '1.7.0') < 0);
  t.true(compareVersions('1.10.0', '1.7.0') > 0, 'not a string comparison');
  t.is(compareVersions('1.7.0-beta.1', '1.7.0'), 0);
  t.is(compareVersions('v1.9.3+ent', '1.9.3'), 0);
});

rootTest.serial('an agent pointed at Nomad 1.6 refuses to start, naming the minimum', async (t) => {
  const nomad = await startNomadDouble(t, { version: '1.6.5' });
  const error = await t.throwsAsync(startAgent(t, { nomad: { address: nomad.url } }));
  t.is((error as { code?: string }).code, 'E_CONFIG', 'exit 2');
  t.regex(error!.message, /Nomad agent at http:\/\/127\.0\.0\.1:\d+ is 1\.6\.5; doze needs Nomad 1\.7\.0 or newer/);
});

rootTest.serial('the versions read at start are in GET /api/status and on the status page; an unreachable upstream does not stop the start', async (t) => {
  const nomad = await startNomadDouble(t, { version: '1.9.3' });
  const consul = await AgentApiDouble.start({ version: '1.20.1' });
  t.teardown(() => consul.close());
  const agent = await startAgent(t, { nomad: { address: nomad.url }, consul: { address: consul.url, register: false } });
  const status = (await (await fetch(`http://${agent.address}/api/status`)).json()) as { versions: unknown };
  t.deepEqual(status.versions, { nomad: { version: '1.9.3', minimum: '1.7.0' }, consul: { version: '1.20.1', minimum: null } });
  const page = await (await fetch(`http://${agent.address}/`)).text();
  t.regex(page, /Nomad 1\.9\.3: /);
  t.regex(page, /Consul 1\.20\.1: /);

  const down = await closedPort();
  const later = await startAgent(t, { nomad: { address: `http://127.0.0.1:${down}`, nodeId: 'node-1' } }, { nomadInstances: { minBackoffMs: 20, maxBackoffMs: 200 } });
  t.like(later.versions.nomad, { version: null, minimum: '1.7.0' });
});
