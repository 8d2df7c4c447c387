import type { ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from '../../agent/agent.js';
import type { StatusReport } from '../../agent/status/status-report.js';
import { CheckRunner } from '../doubles/consul/check-runner.js';
import { dockerJob, EXPOSE_PORT_LABEL } from '../doubles/nomad/fixtures.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { containerCgroup, createDockerAllocation, startDockerTask } from '../helpers/docker-alloc.js';
import { dockerTest, startDockerd } from '../helpers/dockerd.js';
import { get } from '../helpers/http.js';
import { until } from '../helpers/until.js';
import { createZramSwap, zramUnavailable } from '../helpers/zram.js';

/*
 * Docker tasks under a real Docker engine (test/helpers/dockerd.ts), laid
 * out as Nomad's docker driver lays them out (test/helpers/docker-alloc.ts),
 * discovered from the Nomad double, put to sleep through the container's
 * freezer cgroup (docs/docker.md says why not docker pause).
 */

const FAST = { minBackoffMs: 20, maxBackoffMs: 200, pendingMinMs: 20, pendingMaxMs: 200 };
const APP_PORT = 8080;

async function status(agent: Agent): Promise<StatusReport> {
  return JSON.parse((await get(`http://${agent.address}/api/status`)).body) as StatusReport;
}

function instanceIdOf(alloc: Record<string, unknown>, jobId = 'web'): string {
  return `${jobId}.web.${String(alloc.ID).replace(/-/g, '').slice(0, 8)}`;
}

async function dockerAgent(t: ExecutionContext, nomad: NomadDouble, dockerd: { socket: string }): Promise<Agent> {
  return startAgent(t, {
    healthChecks: { mark: '0x1', fromUid: CHECKER_UID },
    nomad: { address: nomad.url, nodeId: 'node-1' },
    docker: { socket: dockerd.socket },
  }, { nomadInstances: FAST });
}

/** A bridge-mode docker allocation running the fixture app as task "app", and the agent that should manage it. */
async function bridgeSetup(t: ExecutionContext, job = dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms' } })) {
  const dockerd = await startDockerd(t);
  const alloc = await createDockerAllocation(t, dockerd);
  const url = `http://${alloc.instanceIp}:${APP_PORT}`;
  const app = await startDockerTask(dockerd, alloc, 'app', dockerd.appCmd(alloc.instanceIp, APP_PORT, 'docker-app'), { readyUrl: `${url}/` });
  const nomad = await startNomadDouble(t);
  nomad.registerJob(job);
  const agent = await dockerAgent(t, nomad, dockerd);
  const placed = nomad.addAllocation({ id: alloc.allocId, jobId: String(job.ID), group: 'web', nodeId: 'node-1', bridgeAddress: alloc.instanceIp });
  const id = instanceIdOf(placed, String(job.ID));
  return { dockerd, alloc, app, url, nomad, agent, id, placed };
}

async function consulCheck(t: ExecutionContext, url: string): Promise<CheckRunner> {
  const runner = await CheckRunner.create({ uid: CHECKER_UID, stagger: false });
  t.teardown(() => runner.stop());
  runner.add({ id: 'web-http', kind: 'http', target: url, intervalMs: 100, timeoutMs: 1000 });
  await new Promise<void>((resolve) => {
    const off = runner.subscribe(() => {
      if (runner.status('web-http') === 'passing') {
        off();
        resolve();
      }
    });
  });
  return runner;
}

dockerTest.serial('a docker task in a bridge-mode group (pause container, container:<pause>, alloc_id label) is discovered, sleeps, wakes on a request, keeps its check passing across five cycles, and is released when the allocation stops', async (t) => {
  const { alloc, app, url, nomad, agent, id } = await bridgeSetup(t);
  const instance = await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000, everyMs: 5, detail: async () => JSON.stringify((await status(agent)).allocations) });
  t.is(instance.config.address, `${alloc.instanceIp}:${APP_PORT}`);
  t.is(instance.config.interface, alloc.hostIf, 'the veth whose peer is eth0 in the pause container\'s SandboxKey');
  t.like(instance.config.runtime, { kind: 'freezer', cgroup: app.cgroupDir });
  t.like((await status(agent)).allocations.find((a) => a.allocId === alloc.allocId), { state: 'managed', instance: id, interface: alloc.hostIf, cgroup: app.cgroupDir });

  const runner = await consulCheck(t, `${url}/health`);
  const startedAt = Date.now();
  for (let cycle = 0; cycle < 5; cycle++) {
    await inState(agent, id, 'sleeping', 5000);
    t.is(await app.freezerState(), 'FROZEN', `cycle ${cycle}: the container's freezer cgroup is frozen`);
    // Two check intervals against the sleeper, then a real request.
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.is(agent.detector.get(id)!.state, 'sleeping', `cycle ${cycle}: a check woke the instance`);
    const running = nextState(agent, id, 'running', 3000);
    const r = await get(`${url}/`, 3000);
    await running;
    t.is(r.status, 200);
    t.regex(r.body, /^hello from docker-app #\d+/, 'the app\'s own answer');
  }
  const checks = runner.history.filter((r) => r.at >= startedAt);
  t.true(checks.length >= 10, `${checks.length} checks ran`);
  t.deepEqual(checks.filter((r) => r.status !== 'passing').map((r) => `${r.status} ${r.output}`), [], 'every check passed');
  t.is(agent.detector.get(id)!.wakes, 5, 'only the requests woke it');

  await inState(agent, id, 'sleeping', 5000);
  nomad.stopAllocation(alloc.allocId);
  await until('the instance to go', () => (agent.detector.get(id) ? undefined : true), { timeoutMs: 3000, everyMs: 5 });
  t.is(await app.freezerState(), 'THAWED', 'woken before release, so Nomad\'s stop signal lands');
  t.is((await get(`${url}/`)).status, 200, 'the container is left running for Nomad to stop');
});

dockerTest.serial('Connect: a sidecar container (a TCP proxy in the group\'s namespace) is never frozen, a request through it wakes the app, and an expose-style check on its generated port passes while the app sleeps', async (t) => {
  const job = dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms' }, connect: true });
  const { dockerd, alloc, app, agent, id, placed } = await bridgeSetup(t, job);
  // Nomad's CNI maps a To = -1 port to the same port inside the namespace.
  const ports = (placed.AllocatedResources as { Shared: { Ports: Array<{ Label: string; Value: number }> } }).Shared.Ports;
  const sidecarPort = ports.find((p) => p.Label === 'connect-proxy-web')!.Value;
  const exposePort = ports.find((p) => p.Label === EXPOSE_PORT_LABEL)!.Value;
  const sidecar = await startDockerTask(
    dockerd,
    alloc,
    'connect-proxy-web',
    ['/usr/bin/node', '/dz/tcp-proxy.mjs', alloc.instanceIp, String(sidecarPort), alloc.instanceIp, String(APP_PORT), String(exposePort)],
    { readyUrl: `http://${alloc.instanceIp}:${sidecarPort}/` },
  );
  const instance = await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000, everyMs: 5, detail: async () => JSON.stringify((await status(agent)).allocations) });
  t.like(instance.config.runtime, { kind: 'freezer', cgroup: app.cgroupDir });
  t.true(instance.config.checkAddresses.includes(`${alloc.instanceIp}:${exposePort}`), `the expose check's port is redirected too: ${instance.config.checkAddresses.join(', ')}`);

  const runner = await consulCheck(t, `http://${alloc.instanceIp}:${exposePort}/health`);
  const startedAt = Date.now();
  for (let cycle = 0; cycle < 3; cycle++) {
    await inState(agent, id, 'sleeping', 5000);
    t.is(await app.freezerState(), 'FROZEN');
    t.is(await sidecar.freezerState(), 'THAWED', 'the sidecar is never frozen');
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.is(agent.detector.get(id)!.state, 'sleeping', `cycle ${cycle}: the expose check woke the app`);
    const running = nextState(agent, id, 'running', 3000);
    const r = await get(`http://${alloc.instanceIp}:${sidecarPort}/`, 3000);
    await running;
    t.is(r.status, 200);
    t.regex(r.body, /^hello from docker-app #\d+/, 'through the sidecar, the app\'s own answer');
  }
  const checks = runner.history.filter((r) => r.at >= startedAt);
  t.deepEqual(checks.filter((r) => r.status !== 'passing').map((r) => `${r.status} ${r.output}`), [], 'the expose check passed throughout');
});

dockerTest.serial('bad input: a Docker socket that is missing or answers errors, and labels that point at no container, leave the allocation pending and awake with the reason; the agent keeps running', async (t) => {
  const job = dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms' } });
  const dir = await mkdtemp(join(tmpdir(), 'dz-dockbad-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // An engine that answers every call with 500 (a daemon that is up but failing).
  const failing = http.createServer((_req, res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"daemon is shutting down"}'));
  await new Promise<void>((resolve) => failing.listen(join(dir, 'failing.sock'), resolve));
  t.teardown(() => new Promise<void>((resolve) => failing.close(() => resolve())));
  const dockerd = await startDockerd(t);
  const cases = [
    { socket: join(dir, 'missing.sock'), reason: /Docker engine at .*missing\.sock: .*ENOENT/ },
    { socket: join(dir, 'failing.sock'), reason: /Docker engine: GET \/containers\/json answered 500: daemon is shutting down/ },
    // The allocation's pause container is there, its task's container is not.
    { socket: dockerd.socket, reason: /no container of allocation \S+ is named app-\S+ or labelled com\.hashicorp\.nomad\.task_name=app \(found: \/nomad_init_/ },
  ];
  for (const { socket, reason } of cases) {
    const nomad = await startNomadDouble(t);
    nomad.registerJob(job);
    const agent = await dockerAgent(t, nomad, { socket });
    const alloc = await createDockerAllocation(t, dockerd);
    const placed = nomad.addAllocation({ id: alloc.allocId, jobId: 'web', group: 'web', nodeId: 'node-1', bridgeAddress: alloc.instanceIp });
    const entry = await until('the reason', async () => (await status(agent)).allocations.find((a) => a.allocId === alloc.allocId && a.reason && reason.test(a.reason)), {
      timeoutMs: 5000,
      detail: async () => JSON.stringify((await status(agent)).allocations),
    });
    t.is(entry.state, 'pending', `${socket}: retried, not given up`);
    t.is(agent.detector.get(instanceIdOf(placed)), undefined, 'not managed: it runs awake');
    t.is((await get(`http://${agent.address}/healthz`)).status, 200, 'the agent keeps running');
  }
});

dockerTest.serial('bad input: a container that vanishes while asleep fails its wake honestly (reason on the status page, checks critical), the agent keeps running, and the task Nomad restarts is managed afresh', async (t) => {
  const { dockerd, alloc, app, url, nomad, agent, id } = await bridgeSetup(t);
  await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000, everyMs: 5 });
  await inState(agent, id, 'sleeping', 5000);
  // Someone removes the container under the sleeping task (docker rm -f kills even a frozen one).
  t.is((await dockerd.api('DELETE', `/containers/${app.id}?force=1`)).status, 204);
  const failed = nextState(agent, id, 'failed', 5000);
  await get(`${url}/`, 1000).catch(() => undefined);
  await failed;
  const views = JSON.parse((await get(`http://${agent.address}/api/instances`)).body) as Array<{ id: string; state: string; failure: string | null }>;
  const view = views.find((i) => i.id === id);
  t.like(view, { state: 'failed' });
  t.log(view?.failure);
  t.regex(view?.failure ?? '', new RegExp(app.id.slice(0, 12)), 'the reason names the container\'s cgroup');
  t.is((await get(`http://${agent.address}/healthz`)).status, 200);

  // Nomad restarts the task (a new container, Restarts + 1, as client/allocrunner/taskrunner reports it): managed afresh.
  const again = await startDockerTask(dockerd, alloc, 'app', dockerd.appCmd(alloc.instanceIp, APP_PORT, 'docker-app'), { readyUrl: `${url}/` });
  const now = new Date().toISOString();
  nomad.updateAllocation(alloc.allocId, { TaskStates: { app: { State: 'running', Failed: false, Restarts: 1, LastRestart: now, StartedAt: now, FinishedAt: null, Events: [{ Type: 'Restarting', Time: Date.now() * 1e6, DisplayMessage: 'Task restarting in 15s' }, { Type: 'Started', Time: Date.now() * 1e6, DisplayMessage: 'Task started by client' }] } } });
  await until('managed again on the new container', () => agent.detector.get(id)?.config.runtime.kind === 'freezer' && (agent.detector.get(id)!.config.runtime as { cgroup: string }).cgroup === again.cgroupDir, { timeoutMs: 10_000, everyMs: 10, detail: async () => JSON.stringify((await status(agent)).allocations) });
  await inState(agent, id, 'sleeping', 5000);
  const running = nextState(agent, id, 'running', 3000);
  t.is((await get(`${url}/`, 3000)).status, 200);
  await running;
});

dockerTest.serial('a docker task on Docker\'s own bridge (network_mode = "bridge") with a port published through Docker\'s DNAT: counted on its container\'s veth, a request to the host port wakes it, and a check to the host port passes while it sleeps', async (t) => {
  // Docker's own iptables rules: its DNAT keeps a check's connection (and its mark) whole on the way
  // to the container. (docker-proxy, Docker's userland path for 127.0.0.1, opens a connection of its
  // own that no mark follows: a check through it would count as a request.)
  const dockerd = await startDockerd(t, { bridge: true, iptables: true });
  const nodeIp = dockerd.bridge!.ip;
  const hostPort = 20000 + Math.floor(Math.random() * 20000);
  const allocId = randomUUID();
  const app = await dockerd.run({
    name: `app-${allocId}`,
    cmd: dockerd.appCmd('0.0.0.0', APP_PORT, 'published'),
    labels: { 'com.hashicorp.nomad.alloc_id': allocId },
    networkMode: 'bridge',
    publish: { [`${APP_PORT}/tcp`]: String(hostPort) },
    publishIp: nodeIp,
  });
  const url = `http://${nodeIp}:${hostPort}`;
  await until('the app behind Docker\'s DNAT', async () => (await get(`${url}/`, 1000)).status === 200, { timeoutMs: 20_000, everyMs: 50, retryErrors: true });

  // Host network mode for the group, network_mode = "bridge" on the task: Nomad maps the host port to `to`.
  const job = dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms' }, networkMode: 'host' });
  const group = (job.TaskGroups as Array<Record<string, any>>)[0]!;
  group.Networks[0].DynamicPorts = null;
  group.Networks[0].ReservedPorts = [{ Label: 'http', Value: hostPort, To: APP_PORT, HostNetwork: 'default' }];
  group.Tasks[0].Config = { image: 'dz-app:1', network_mode: 'bridge', ports: ['http'] };
  const nomad = await startNomadDouble(t);
  nomad.registerJob(job);
  const agent = await dockerAgent(t, nomad, dockerd);
  const id = instanceIdOf(nomad.addAllocation({ id: allocId, jobId: 'web', group: 'web', nodeId: 'node-1', hostIp: nodeIp }));
  const instance = await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000, everyMs: 5, detail: async () => JSON.stringify((await status(agent)).allocations) });
  t.is(instance.config.address, `${app.bridgeIp}:${APP_PORT}`, 'its address on Docker\'s bridge, where docker-proxy sends the packets');
  t.regex(instance.config.interface ?? '', /^veth/, 'the host side of its veth on Docker\'s bridge');
  t.deepEqual(instance.config.checkAddresses, [`${nodeIp}:${hostPort}`]);

  const runner = await consulCheck(t, `${url}/health`);
  const startedAt = Date.now();
  for (let cycle = 0; cycle < 3; cycle++) {
    await inState(agent, id, 'sleeping', 5000);
    t.is(await containerCgroup(app.id).freezerState(), 'FROZEN');
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.is(agent.detector.get(id)!.state, 'sleeping', `cycle ${cycle}: a check to the host port woke it`);
    const running = nextState(agent, id, 'running', 3000);
    const r = await get(`${url}/`, 3000);
    await running;
    t.is(r.status, 200);
    t.regex(r.body, /^hello from published #\d+/);
  }
  const checks = runner.history.filter((r) => r.at >= startedAt);
  t.deepEqual(checks.filter((r) => r.status !== 'passing').map((r) => `${r.status} ${r.output}`), [], 'the host-port check passed throughout');
});

const noZram = zramUnavailable();
dockerTest.serial('doze.reclaim on a docker task (Docker\'s MemorySwap = memory, swappiness 0, as Nomad sets them): asleep, its memory cgroup holds under 10 % of awake; a request wakes it with its data intact', async (t) => {
  if (noZram) return t.fail(`needs swap: ${noZram}`);
  await createZramSwap(t);
  const MiB = 1 << 20;
  const dockerd = await startDockerd(t);
  const alloc = await createDockerAllocation(t, dockerd);
  const url = `http://${alloc.instanceIp}:${APP_PORT}`;
  const app = await startDockerTask(dockerd, alloc, 'app', dockerd.appCmd(alloc.instanceIp, APP_PORT, 'docker-app'), {
    readyUrl: `${url}/`,
    env: { DOZE_APP_HOLD_MIB: '120' },
    memoryBytes: 400 * MiB,
  });
  const memoryDir = `/sys/fs/cgroup/memory/docker/${app.id}`;
  t.is((await readFile(`${memoryDir}/memory.swappiness`, 'utf8')).trim(), '0', 'Docker wrote swappiness 0');
  t.is((await readFile(`${memoryDir}/memory.memsw.limit_in_bytes`, 'utf8')).trim(), String(400 * MiB), 'and memory + swap = the memory limit');
  const usage = async () => Number((await readFile(`${memoryDir}/memory.usage_in_bytes`, 'utf8')).trim());
  const awake = await usage();
  t.true(awake > 120 * MiB, `awake it holds ${(awake / MiB).toFixed(0)} MiB`);

  const job = dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms', 'doze.reclaim': 'true', 'doze.reclaim_after': '200ms', 'doze.reclaim_keep': 'nothing' } });
  const nomad = await startNomadDouble(t);
  nomad.registerJob(job);
  const agent = await dockerAgent(t, nomad, dockerd);
  const id = instanceIdOf(nomad.addAllocation({ id: alloc.allocId, jobId: 'web', group: 'web', nodeId: 'node-1', bridgeAddress: alloc.instanceIp }));
  const instance = await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000, everyMs: 5, detail: async () => JSON.stringify((await status(agent)).allocations) });
  t.like(instance.config.runtime, { kind: 'freezer', cgroup: app.cgroupDir, reclaim: true });
  for (let cycle = 1; cycle <= 2; cycle++) {
    const since = Date.now();
    await inState(agent, id, 'sleeping', 5000);
    const outcome = await until('the reclaim', () => {
      const last = agent.detector.get(id)!.runtime.reclaimState?.()?.last;
      return last && last.atMs >= since ? last : undefined;
    }, { timeoutMs: 15_000, everyMs: 20 });
    t.is(outcome.result, 'done', outcome.reason ?? undefined);
    const asleep = await usage();
    t.log(`cycle ${cycle}: awake ${(awake / MiB).toFixed(1)} MiB, asleep ${(asleep / MiB).toFixed(1)} MiB, reclaim ${outcome.ms} ms`);
    t.true(asleep < awake * 0.1, `asleep it still holds ${(asleep / MiB).toFixed(1)} MiB of ${(awake / MiB).toFixed(1)}`);
    t.is((await readFile(`${memoryDir}/memory.swappiness`, 'utf8')).trim(), '0', 'swappiness put back while it still sleeps');
    const running = nextState(agent, id, 'running', 10_000);
    const check = await get(`${url}/data/check`, 10_000);
    await running;
    t.is(check.status, 200);
    t.regex(check.body, /intact/);
  }
});

dockerTest.serial('jobs/web-pause.nomad.hcl\'s settings (doze.wake = "hold") on a docker task: the first request is held while the container thaws and answered by the app', async (t) => {
  const job = dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms', 'doze.wake': 'hold' } });
  const { url, agent, id } = await bridgeSetup(t, job);
  const instance = await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000, everyMs: 5 });
  t.is(instance.wake, 'hold');
  for (let cycle = 0; cycle < 3; cycle++) {
    await inState(agent, id, 'sleeping', 5000);
    const running = nextState(agent, id, 'running', 3000);
    const r = await get(`${url}/`, 3000);
    await running;
    t.is(r.status, 200);
    t.regex(r.body, /^hello from docker-app #\d+/);
  }
});
