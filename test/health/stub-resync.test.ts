import test from 'ava';
import { StubServer } from '../../agent/health/stub-server.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { CheckRunner } from '../doubles/consul/check-runner.js';

/*
 * Nomad re-syncs its Consul registrations (every 30 s, and after a Consul
 * agent restart) and re-registers a missing check with its initial status,
 * usually critical (command/agent/consul/service_client.go sync). While the
 * instance sleeps, the check must be passing again at Consul's next run of
 * it: within one interval (Consul's first run of a new check is staggered
 * within its interval).
 */
test('an HTTP check Nomad re-registers as critical is passing again within one interval while its instance sleeps', async (t) => {
  const stub = new StubServer({ status: () => 'sleeping' });
  t.teardown(() => stub.stop());
  const port = await stub.open('web');
  const runner = await CheckRunner.create({ stagger: true });
  t.teardown(() => runner.stop());
  const consul = await AgentApiDouble.start({ runner });
  t.teardown(() => consul.close());
  const register = (status: string) =>
    fetch(`${consul.url}/v1/agent/service/register?replace-existing-checks=true`, {
      method: 'PUT',
      body: JSON.stringify({ ID: '_nomad-task-a-web-web-http', Name: 'web', Port: port, Check: { CheckID: '_nomad-check-web', HTTP: `http://127.0.0.1:${port}/health`, Interval: '300ms', Timeout: '1s', Status: status } }),
    });
  const until = async (what: string, probe: () => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!probe()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await register('critical');
  await until('passing', () => consul.check('_nomad-check-web')?.Status === 'passing', 3000);
  // The re-sync: deregistered by a Consul restart, registered again with the initial status.
  await fetch(`${consul.url}/v1/agent/service/deregister/_nomad-task-a-web-web-http`, { method: 'PUT' });
  await register('critical');
  t.is(consul.check('_nomad-check-web')?.Status, 'critical');
  const started = Date.now();
  await until('passing again', () => consul.check('_nomad-check-web')?.Status === 'passing', 3000);
  const took = Date.now() - started;
  t.log(`passing again after ${took} ms (interval 300 ms)`);
  t.true(took < 300 + 700, `within one interval plus the probe (${took} ms)`);
});
