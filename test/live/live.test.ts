import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { delimiter, join } from 'node:path';
import { tmpdir } from 'node:os';
import { NomadClient } from '../../agent/nomad/nomad-client.js';
import { findNomadTaskCgroup } from '../../agent/discovery/task-cgroup.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { APP_PATH } from '../helpers/app.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { get } from '../helpers/http.js';
import { firstMissing, missing, testIf } from '../helpers/needs.js';
import { noRoot } from '../helpers/root.js';
import { until, type UntilOptions } from '../helpers/until.js';

/*
 * `make test-live`: the Nomad scenario of test/agent/nomad-instances.test.ts
 * against a real `consul agent -dev` and `nomad agent -dev` (both must be on
 * PATH; neither can be installed on the machines the project was built on,
 * so elsewhere this file skips with one line). Consul runs as `nobody`
 * (uid CHECKER_UID) so its checks are marked by uid, as a packaged Consul's
 * would be by the consul user. Nomad runs a bridge-mode raw_exec job (CNI
 * plugins in /opt/cni/bin) whose service check has address_mode = "alloc".
 * Traffic goes only to 127.0.0.1 and to the allocation's own namespace.
 */

const CNI_DIR = process.env.CNI_PATH ?? '/opt/cni/bin';
const CNI_PLUGINS = ['bridge', 'firewall', 'portmap', 'host-local', 'loopback'];
const JOB = 'doze-live';

function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, name);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** What this machine lacks for the live suite, or undefined. */
const liveTest = testIf(firstMissing(
  missing('consul-nomad', () => {
    const absent = ['consul', 'nomad'].filter((name) => !which(name));
    return absent.length > 0 ? `the live suite needs both \`consul\` and \`nomad\` on PATH (missing: ${absent.join(', ')})` : undefined;
  }),
  noRoot,
  missing('cni', () => {
    const cni = CNI_PLUGINS.filter((p) => !existsSync(join(CNI_DIR, p)));
    return cni.length > 0 ? `Nomad's bridge mode needs the CNI plugins in ${CNI_DIR} (missing: ${cni.join(', ')}; set CNI_PATH)` : undefined;
  }),
));

/** The live daemons refuse connections until they are up: keep polling through errors. */
function live(timeoutMs: number, everyMs = 100): UntilOptions {
  return { timeoutMs, everyMs, retryErrors: true };
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A long-lived child with its output kept for the failure message; stopped (SIGINT, then SIGKILL) at teardown. */
function daemon(t: ExecutionContext, file: string, args: string[], options: { uid?: number; gid?: number } = {}): { child: ChildProcess; output: () => string } {
  let output = '';
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  child.stdout!.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
  child.stderr!.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
  t.teardown(async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  });
  return { child, output: () => output };
}

async function getJson(url: string): Promise<unknown> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return response.json() as Promise<unknown>;
}

liveTest.serial('live: a Nomad allocation becomes an instance, sleeps with its Consul check passing, wakes on traffic, and is woken and dropped when the job stops', async (t) => {
  t.timeout(240_000);
  const work = await mkdtemp(join(tmpdir(), 'dz-live-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));

  // Consul, as nobody, on ports of its own.
  const consulPorts = { http: await freePort(), serfLan: await freePort(), serfWan: await freePort(), server: await freePort() };
  const consul = daemon(t, which('consul')!, [
    'agent', '-dev', '-bind=127.0.0.1', '-client=127.0.0.1', '-node=doze-live',
    `-http-port=${consulPorts.http}`, '-dns-port=-1', '-grpc-port=-1',
    `-serf-lan-port=${consulPorts.serfLan}`, `-serf-wan-port=${consulPorts.serfWan}`, `-server-port=${consulPorts.server}`,
  ], { uid: CHECKER_UID, gid: CHECKER_UID });
  const consulUrl = `http://127.0.0.1:${consulPorts.http}`;
  await until('a Consul leader', async () => ((await getJson(`${consulUrl}/v1/status/leader`)) ? true : undefined), live(30_000)).catch((error) => {
    throw new Error(`${String(error)}\n--- consul output ---\n${consul.output()}`);
  });

  // Nomad, dev mode, with raw_exec and Consul.
  const nomadPorts = { http: await freePort(), rpc: await freePort(), serf: await freePort() };
  const configFile = join(work, 'nomad.hcl');
  await writeFile(configFile, `
data_dir  = "${join(work, 'nomad')}"
bind_addr = "127.0.0.1"
ports {
  http = ${nomadPorts.http}
  rpc  = ${nomadPorts.rpc}
  serf = ${nomadPorts.serf}
}
client {
  enabled  = true
  cni_path = "${CNI_DIR}"
  meta { "doze.agent" = "true" }
}
plugin "raw_exec" {
  config { enabled = true }
}
consul {
  address = "127.0.0.1:${consulPorts.http}"
}
`);
  const nomad = daemon(t, which('nomad')!, ['agent', '-dev', `-config=${configFile}`]);
  const nomadUrl = `http://127.0.0.1:${nomadPorts.http}`;
  const client = new NomadClient({ address: nomadUrl });
  const nodeId = await until('the Nomad client', async () => (await client.agentSelf()).nodeId, live(60_000)).catch((error) => {
    throw new Error(`${String(error)}\n--- nomad output ---\n${nomad.output()}`);
  });
  await until('the node to be ready', async () => ((await getJson(`${nomadUrl}/v1/node/${nodeId}`)) as { Status?: string }).Status === 'ready' || undefined, live(60_000));

  // The agent, finding the node id itself.
  const agent = await startAgent(t, {
    healthChecks: { mark: '0x1', fromUid: CHECKER_UID },
    nomad: { address: nomadUrl },
    consul: { address: consulUrl },
  }, { nomadInstances: { minBackoffMs: 100, maxBackoffMs: 1000 } });

  const registered = Date.now();
  await client.registerJob({
    ID: JOB, Name: JOB, Type: 'service', Datacenters: ['*'],
    TaskGroups: [{
      Name: 'web', Count: 1,
      Meta: { 'doze.enabled': 'true', 'doze.idle_timeout': '1s' },
      Networks: [{ Mode: 'bridge', DynamicPorts: [{ Label: 'http', To: 8080 }] }],
      Services: [{
        Name: JOB, PortLabel: 'http', Provider: 'consul',
        Checks: [{ Name: 'alive', Type: 'http', Path: '/', AddressMode: 'alloc', Interval: 2e9, Timeout: 1e9 }],
      }],
      Tasks: [{
        Name: 'app', Driver: 'raw_exec',
        Config: { command: process.execPath, args: [APP_PATH, '0.0.0.0', '8080', 'live'] },
        Resources: { CPU: 100, MemoryMB: 128 },
        KillTimeout: 20e9,
      }],
    }],
  });
  t.teardown(() => fetch(`${nomadUrl}/v1/job/${JOB}?purge=true`, { method: 'DELETE' }).catch(() => undefined));

  const alloc = await until('a running allocation', async () => {
    const { value } = await client.nodeAllocations(nodeId);
    return value.find((a) => a.JobID === JOB && a.ClientStatus === 'running');
  }, live(120_000));
  const instance = await until('the managed instance', async () => agent.detector.instances().find((i) => i.id.startsWith(`${JOB}.web.`)), live(10_000, 10));
  t.log(`job registered → instance managed in ${Date.now() - registered} ms`);
  t.is(instance.config.address, `${alloc.NetworkStatus?.Address}:8080`);
  const cgroup = await findNomadTaskCgroup('/sys/fs/cgroup', alloc.ID, 'app');
  t.truthy(cgroup, 'the task cgroup is where Nomad puts it');

  // Asleep, its Consul check still passing (answered by the stub), then woken by a request.
  await inState(agent, instance.id, 'sleeping', 15_000);
  await new Promise((resolve) => setTimeout(resolve, 5000)); // two check intervals
  const checks = (await getJson(`${consulUrl}/v1/health/checks/${JOB}`)) as Array<{ Status: string; Output: string }>;
  t.true(checks.length > 0 && checks.every((c) => c.Status === 'passing'), JSON.stringify(checks));
  t.is(agent.detector.get(instance.id)?.state, 'sleeping', 'marked checks did not wake it');
  const running = nextState(agent, instance.id, 'running', 5000);
  const r = await get(`http://${alloc.NetworkStatus?.Address}:8080/`);
  await running;
  t.is(r.status, 200);

  // Asleep again, then the job stops: woken first (so the kill lands), then dropped.
  await nextState(agent, instance.id, 'sleeping', 15_000);
  const stopped = Date.now();
  await fetch(`${nomadUrl}/v1/job/${JOB}`, { method: 'DELETE' });
  await until('the instance to go', async () => (agent.detector.get(instance.id) ? undefined : true), live(10_000, 10));
  await until('the allocation to finish', async () => {
    const { value } = await client.allocation(alloc.ID);
    return value.ClientStatus === 'complete' || value.ClientStatus === 'failed' ? value : undefined;
  }, live(30_000));
  t.log(`job stop → allocation finished in ${Date.now() - stopped} ms (kill timeout 20 s: a frozen task would take that long)`);
  t.true(Date.now() - stopped < 15_000);
  t.is((await getJson(`http://${agent.address}/api/status`) as { allocations: unknown[] }).allocations.length, 0);
});
