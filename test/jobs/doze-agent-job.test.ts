import test from 'ava';
import { parseConfig, overridesFromEnv } from '../../agent/config/load.js';
import { loadJobspec } from '../../plugin/load-jobspec.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { startAgent } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { rootTest } from '../helpers/root.js';
import { until } from '../helpers/until.js';

/*
 * jobs/doze-agent.nomad.hcl as written: it validates, and the agent runs the
 * config its templates render, with the environment Nomad gives the task
 * (NOMAD_ADDR_status, the workload identity's NOMAD_TOKEN, and DOZE_TOKEN /
 * CONSUL_HTTP_TOKEN from the job's Nomad variable).
 */

const JOB = 'jobs/doze-agent.nomad.hcl';

type Task = { Name: string; Templates: { DestPath: string; EmbeddedTmpl: string; Envvars?: boolean }[]; Artifacts?: { GetterSource: string; GetterOptions?: Record<string, string> }[]; Resources: { MemoryMB: number }; Identity?: unknown };

async function agentTask(): Promise<{ task: Task; services: { Name: string; Checks: { Path: string }[] }[] }> {
  const { job } = await loadJobspec(JOB, undefined);
  const group = (job.TaskGroups as { Name: string; Tasks: Task[]; Services: { Name: string; Checks: { Path: string }[] }[] }[])[0]!;
  return { task: group.Tasks.find((task) => task.Name === 'agent')!, services: group.Services };
}

/** consul-template's `env` and `nomadVar` as Nomad renders them for this job (only what its templates use). */
function render(template: string, env: Record<string, string>, variable: Record<string, string>): string {
  return template
    .replace(/\{\{ env "([A-Z_a-z]+)" \}\}/g, (_, name: string) => env[name] ?? '')
    .replace(/\{\{ with nomadVar "nomad\/jobs\/doze-agent" \}\}([\s\S]*?)\{\{ end \}\}/g, (_, body: string) => body.replace(/\{\{ \.([a-z_]+) \}\}/g, (__, key: string) => variable[key] ?? ''));
}

test('doze job validate passes on the system job as written', async (t) => {
  const result = await runCli(['job', 'validate', JOB]);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /job "doze-agent" is valid/);
});

test('the job fetches the release with a checksum, sizes memory above the measured RSS, and registers the agent in Consul once', async (t) => {
  const { task, services } = await agentTask();
  const artifact = task.Artifacts?.[0];
  t.truthy(artifact, 'an artifact block');
  t.is(artifact!.GetterSource, '${var.release_url}');
  t.is(artifact!.GetterOptions?.checksum, 'sha256:${var.release_checksum}');
  // 269 MiB: the 10-minute soak's maximum (README "Benchmarks").
  t.true(task.Resources.MemoryMB >= 269 * 1.3, `memory ${task.Resources.MemoryMB} MiB`);
  t.deepEqual(services.map((s) => s.Name), ['doze-agent']);
  t.is(services[0]!.Checks[0]!.Path, '/healthz');
  const config = JSON.parse(render(task.Templates.find((tpl) => tpl.DestPath === 'local/doze.json')!.EmbeddedTmpl, { NOMAD_ADDR_status: '10.0.0.5:7070' }, {})) as { consul: { register: boolean } };
  t.false(config.consul.register, "the agent's own registration is off: the job's service block is the one");
});

rootTest.serial("the agent runs the job's rendered config: tokens from the task's environment, the status API guarded by DOZE_TOKEN", async (t) => {
  const { task } = await agentTask();
  const nomad = await startNomadDouble(t, { acl: { 'workload-identity': ['agent:read', 'node:read', 'read-job'] }, agentNodeId: 'node-1' });
  const consul = await AgentApiDouble.start({ acl: { 'consul-token': { agentRead: true, serviceRead: ['*'], serviceWrite: ['*'] } } });
  t.teardown(() => consul.close());
  const variable = { status_token: 'status-token-from-the-nomad-variable', consul_token: 'consul-token' };
  const tokensEnv = Object.fromEntries(
    render(task.Templates.find((tpl) => tpl.Envvars)!.EmbeddedTmpl, {}, variable)
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line.includes('='))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  const env = { ...tokensEnv, NOMAD_TOKEN: 'workload-identity' };
  // The node's address as Nomad gives it (a wildcard here, port 0: any free port), and the doubles in place of the local agents.
  const rendered = render(task.Templates.find((tpl) => tpl.DestPath === 'local/doze.json')!.EmbeddedTmpl, { NOMAD_ADDR_status: '0.0.0.0:0' }, {})
    .replace('http://127.0.0.1:4646', nomad.url)
    .replace('http://127.0.0.1:8500', consul.url)
    .replace('"fromUser": "consul"', '"fromUser": "nobody"');
  const raw = JSON.parse(rendered) as Record<string, unknown>;
  // What doze agent does with the environment: DOZE_TOKEN is an override, the upstream tokens a fallback.
  const token = parseConfig(raw, [overridesFromEnv(env)]).token;
  t.is(token, variable.status_token);
  const agent = await startAgent(t, { ...raw, token }, { env, nomadInstances: { minBackoffMs: 20, maxBackoffMs: 200 } });
  await until('discovery connected to Nomad and Consul with the tokens from the environment', () => {
    const c = agent.discovery?.report().connections;
    return c?.nomad?.connected && c.consul?.connected ? c : undefined;
  }, { timeoutMs: 10_000 });
  t.deepEqual(consul.listServices().map((s) => s.ID), [], 'no registration of its own: the job registers doze-agent');
  const port = agent.address.split(':').at(-1);
  t.is((await fetch(`http://127.0.0.1:${port}/api/instances/x/sleep`, { method: 'POST' })).status, 401);
  t.is((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200, "the job's check path answers");
});
