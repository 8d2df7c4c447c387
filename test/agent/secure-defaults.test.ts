import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkExposure, isLoopbackHost } from '../../agent/config/exposure.js';
import { parseConfig } from '../../agent/config/load.js';
import { startAgent } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';

/*
 * Secure by default (docs/security.md): an exposed status API needs a token,
 * registrations are off unless enabled, the stub's listener stays on loopback.
 */

const TOKEN = 'secure-defaults-token-with-entropy';

test('doze agent with a non-loopback listen and no token exits 2 before touching anything, saying how to set one', async (t) => {
  const dir = await tempDir(t, 'exposure');
  const file = join(dir, 'doze.json');
  // The README's config, bound to every address as the system job used to bind it.
  await writeFile(file, JSON.stringify({ listen: '0.0.0.0:7070', healthChecks: { mark: '0x1' } }));
  const result = await runCli(['agent', '--config', file]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /listen: 0\.0\.0\.0:7070 is reachable from other hosts/);
  t.regex(result.stderr, /set a token \("token" in the config file, DOZE_TOKEN or --token/);
  // The same from the flag and the variable.
  for (const result of [await runCli(['agent', '--config', file, '--listen', '10.1.2.3:7070']), await runCli(['agent', '--config', file], { DOZE_LISTEN: '192.0.2.1:7070' })]) {
    t.is(result.code, 2, result.stderr);
    t.regex(result.stderr, /is reachable from other hosts/);
  }
});

test('loopback is 127.0.0.0/8, ::1 and localhost; a non-loopback stub listener is refused', (t) => {
  for (const host of ['127.0.0.1', '127.3.2.1', 'localhost', '::1', '[::1]']) t.true(isLoopbackHost(host), host);
  for (const host of ['0.0.0.0', '10.0.0.1', '::', '[::]', 'node1.example']) t.false(isLoopbackHost(host), host);
  t.notThrows(() => checkExposure(parseConfig({ listen: '0.0.0.0:7070', token: TOKEN })));
  t.throws(() => checkExposure(parseConfig({ stub: { listen: '0.0.0.0:7071' } })), { message: /stub\.listen: 0\.0\.0\.0:7071 is not a loopback address/ });
});

rootTest('an agent on every address with a token: actions without it are 401, registrations 404 until enabled', async (t) => {
  const agent = await startAgent(t, { listen: '0.0.0.0:0', token: TOKEN });
  const port = agent.address.split(':').at(-1);
  const url = `http://127.0.0.1:${port}`;
  const sleep = await fetch(`${url}/api/instances/web/sleep`, { method: 'POST' });
  t.is(sleep.status, 401);
  const put = await fetch(`${url}/api/instances/vm`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ address: '10.213.9.2:80', runtime: { kind: 'freezer', cgroup: '/sys/fs/cgroup/freezer' } }),
  });
  t.is(put.status, 404, 'registrations are off by default');
  t.regex(((await put.json()) as { error: string }).error, /registrations/);
});

rootTest('with registrations enabled, the agent refuses one naming the freezer root (403) and one outside Nomad\'s task cgroups', async (t) => {
  const agent = await startAgent(t, { token: TOKEN, registrations: { enabled: true } });
  const put = (cgroup: string) =>
    fetch(`http://${agent.address}/api/instances/vm`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ address: '10.213.9.2:80', runtime: { kind: 'freezer', cgroup } }),
    });
  const root = await put('/sys/fs/cgroup/freezer');
  t.is(root.status, 403);
  t.regex(((await root.json()) as { error: string }).error, /is the root of a cgroup hierarchy/);
  const outside = await put('/sys/fs/cgroup/freezer/system.slice');
  t.is(outside.status, 403);
  t.regex(((await outside.json()) as { error: string }).error, /outside the cgroup roots/);
  t.is(agent.detector.instances().length, 0);
});

rootTest('a tenant app in its namespace cannot reach the status API on its default loopback address, nor through its gateway', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m' })] });
  const port = agent.address.split(':').at(-1)!;
  // The host is the tenant's gateway (its veth's host address): the agent listens on 127.0.0.1 only.
  for (const host of [inst.ns.hostIp, '127.0.0.1']) {
    const reached = await sh('ip', ['netns', 'exec', inst.ns.name, 'timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${host}/${port}`]).then(() => true, () => false);
    t.false(reached, `${host}:${port} from inside the tenant's namespace`);
  }
  t.is(agent.detector.get('web')!.state, 'running');
});
