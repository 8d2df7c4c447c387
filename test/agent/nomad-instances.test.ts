import type { ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import type { Agent } from '../../agent/agent.js';
import { listRules } from '../../agent/net/iptables.js';
import { HOST_INTERFACE, isAttached, listFilters } from '../../agent/net/tc.js';
import type { StatusReport } from '../../agent/status/status-report.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { CheckRunner } from '../doubles/consul/check-runner.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { get } from '../helpers/http.js';
import { createAllocationEnv, createNomadCgroupRoot, createTaskCgroup, pickTestAddresses, type NomadCgroupRoot, type TestAllocation } from '../helpers/nomad-alloc.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sh, shQuiet } from '../helpers/sh.js';
import { rootTest } from '../helpers/root.js';
import { until } from '../helpers/until.js';
import { describeHold } from '../../agent/detector/reasons.js';

/*
 * Allocations in the Nomad double become instances of a real agent: real
 * namespaces named after the allocation, veths, task cgroups laid out like
 * Nomad's (under a private cgroup root), tc programs, freezer, iptables.
 */

const FAST = { minBackoffMs: 20, maxBackoffMs: 200, pendingMinMs: 20, pendingMaxMs: 200, consulResyncMs: 200 };

/** A bridge-mode service job whose task runs under the exec driver (Nomad's task cgroups). */
function execJob(meta: Record<string, string>, options: { id?: string; networkMode?: 'bridge' | 'host'; driver?: string } = {}): Record<string, unknown> {
  const job = webJob({ id: options.id ?? 'web', groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms', ...meta }, networkMode: options.networkMode });
  const group = (job.TaskGroups as Array<{ Tasks: Array<Record<string, unknown>> }>)[0]!;
  group.Tasks[0]!.Driver = options.driver ?? 'exec';
  group.Tasks[0]!.Config = { command: '/usr/bin/node', args: ['app.mjs'] };
  return job;
}

async function status(agent: Agent): Promise<StatusReport> {
  const r = await get(`http://${agent.address}/api/status`);
  return JSON.parse(r.body) as StatusReport;
}

async function nomadAgent(t: ExecutionContext, nomad: { url: string }, cgroups: NomadCgroupRoot, extra: Record<string, unknown> = {}): Promise<Agent> {
  return startAgent(t, {
    healthChecks: { mark: '0x1', fromUid: CHECKER_UID },
    nomad: { address: nomad.url, cgroupRoot: cgroups.root },
    ...extra,
  }, { nomadInstances: FAST });
}

function place(nomad: NomadDouble, env: TestAllocation, jobId = 'web'): Record<string, unknown> {
  return nomad.addAllocation({ id: env.allocId, jobId, group: 'web', nodeId: 'node-1', bridgeAddress: env.ns.instanceIp });
}

function instanceIdOf(alloc: Record<string, unknown>, jobId = 'web'): string {
  return `${jobId}.web.${String(alloc.ID).replace(/-/g, '').slice(0, 8)}`;
}

async function stubRules(agent: Agent): Promise<string[]> {
  return (await listRules('nat', `${agent.config.netfilter.chainPrefix}-STUB`)).filter((l) => l.startsWith('-A ') && l.includes('doze:'));
}

rootTest.serial('an allocation becomes an instance within a second, sleeps, wakes on traffic, and is dropped (woken, programs and rules gone) when it stops', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({}));
  const cgroups = await createNomadCgroupRoot(t);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await nomadAgent(t, nomad, cgroups);
  // No nomad.nodeId: the agent asks GET /v1/agent/self (the double says node-1).
  await until('the event stream', async () => (await status(agent)).connections.nomad?.detail?.source === 'stream');
  t.true(nomad.requests.some((r) => r.path === '/v1/agent/self'));

  const started = performance.now();
  const alloc = place(nomad, env);
  const id = instanceIdOf(alloc);
  const instance = await until('the instance', () => agent.detector.get(id), { timeoutMs: 1000, everyMs: 2 });
  const took = performance.now() - started;
  t.log(`allocation → managed instance in ${took.toFixed(1)} ms`);
  t.true(took < 1000, `took ${took.toFixed(1)} ms`);
  t.is(instance.config.address, `${env.ns.instanceIp}:8080`);
  t.is(instance.config.interface, env.ns.hostIf, 'the host side of the veth whose peer is eth0 in /var/run/netns/<allocID>');
  t.deepEqual(instance.config.runtime, { kind: 'freezer', cgroup: `${cgroups.root}/freezer/nomad/${env.allocId}.app`, reclaim: false, reclaimAfter: 10_000, reclaimKeep: 'working-set', prefetch: false });
  t.is(instance.config.idleTimeout, 300);
  t.true(await isAttached(env.ns.hostIf));
  const report = await status(agent);
  t.like(report.allocations.find((a) => a.allocId === env.allocId), { state: 'managed', instance: id, interface: env.ns.hostIf, task: 'app' });
  t.like(report.connections.nomad, { connected: true, address: nomad.url, detail: { nodeId: 'node-1', source: 'stream' } });

  // Sleeps when idle, wakes on a request.
  await nextState(agent, id, 'sleeping', 3000);
  t.is(await env.cgroup.freezerState(), 'FROZEN');
  const redirects = (await stubRules(agent)).filter((r) => r.includes(`doze:${id}`));
  t.true(redirects.some((r) => r.includes(`-d ${env.ns.instanceIp}/32`)), 'checks of the sleeper are redirected to the stub');
  t.is(redirects.length, 1 + instance.config.checkAddresses.length, 'and so are checks to its mapped host port');
  const running = nextState(agent, id, 'running', 3000);
  const r = await get(`${env.app.url}/`);
  await running;
  t.is(r.status, 200);
  t.true(r.ms < 500, `first request took ${r.ms.toFixed(1)} ms`);

  // Asleep again, then Nomad stops the allocation: woken first, then everything of it goes.
  await nextState(agent, id, 'sleeping', 3000);
  const transitions: string[] = [];
  agent.detector.on('transition', (e) => {
    if (e.instance.id === id) transitions.push(`${e.from}→${e.to} (${e.reason})`);
  });
  nomad.stopAllocation(env.allocId);
  await until('the instance to go', () => (agent.detector.get(id) ? undefined : true), { timeoutMs: 2000, everyMs: 2 });
  t.deepEqual(transitions, ['sleeping→waking (no longer managed)', 'waking→running (no longer managed)']);
  t.is(await env.cgroup.freezerState(), 'THAWED', 'woken before release, so Nomad\'s kill signal can land');
  await until('the rules and stub to go', async () => ((await stubRules(agent)).length === 0 && agent.stub.port(id) === undefined ? true : undefined), 2000);
  t.deepEqual(await listFilters(env.ns.hostIf), [], 'tc programs detached');
  t.false((await agent.source.states()).has(env.ns.instanceIp), 'map entries removed');
  t.is((await get(`${env.app.url}/`)).status, 200, 'the task itself is left running for Nomad to stop');
  t.is((await status(agent)).allocations.length, 0);
});

rootTest.serial('an allocation whose namespace and cgroup appear later is pending, then managed', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({}));
  const cgroups = await createNomadCgroupRoot(t);
  const agent = await nomadAgent(t, nomad, cgroups, { nomad: { address: nomad.url, cgroupRoot: cgroups.root, nodeId: 'node-1' } });
  const allocId = randomUUID();
  const addresses = pickTestAddresses();
  const alloc = nomad.addAllocation({ id: allocId, jobId: 'web', group: 'web', nodeId: 'node-1', bridgeAddress: addresses.instanceIp });
  const pending = await until('pending', async () => (await status(agent)).allocations.find((a) => a.allocId === allocId && a.state === 'pending' && a.reason));
  t.regex(pending.reason ?? '', /network namespace .*does not exist/);
  // Asked once at start, for Nomad's version (agent/upstream-versions.ts); never for the node id, which is given.
  t.is(nomad.requests.filter((r) => r.path === '/v1/agent/self').length, 1, 'nomad.nodeId given: no need to ask for it');
  // The namespace exists, the task has not started yet.
  const env = await createAllocationEnv(t, cgroups, { allocId, addresses });
  const id = instanceIdOf(alloc);
  const instance = await until('managed', () => agent.detector.get(id), 3000);
  t.is(instance.config.address, `${env.ns.instanceIp}:8080`);
  await nextState(agent, id, 'sleeping', 3000);
  t.is(await env.cgroup.freezerState(), 'FROZEN');
});

rootTest.serial('cgroup v2 layout (nomad.slice/share.slice/<alloc>.<task>.scope) is found and frozen with cgroup.freeze', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({}));
  const cgroups = await createNomadCgroupRoot(t, 2);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await nomadAgent(t, nomad, cgroups);
  const id = instanceIdOf(place(nomad, env));
  const instance = await until('the instance', () => agent.detector.get(id), 3000);
  t.deepEqual(instance.config.runtime, { kind: 'freezer', cgroup: `${cgroups.root}/nomad.slice/share.slice/${env.allocId}.app.scope`, reclaim: false, reclaimAfter: 10_000, reclaimKeep: 'working-set', prefetch: false });
  await nextState(agent, id, 'sleeping', 3000);
  t.is(await env.cgroup.freezerState(), 'FROZEN');
  const running = nextState(agent, id, 'running', 3000);
  t.is((await get(`${env.app.url}/`)).status, 200);
  await running;
  nomad.stopAllocation(env.allocId);
  await until('the instance to go', () => (agent.detector.get(id) ? undefined : true), 2000);
  t.is(await env.cgroup.freezerState(), 'THAWED');
});

rootTest.serial('an HTTPS check that verifies its certificate keeps the instance awake (with the reason) unless the agent has a certificate for it', async (t) => {
  const nomad = await startNomadDouble(t);
  const job = execJob({});
  const service = (job.TaskGroups as Array<{ Services: Array<{ Checks: Array<Record<string, unknown>> }> }>)[0]!.Services[0]!;
  service.Checks[0] = { ...service.Checks[0], Protocol: 'https', TLSSkipVerify: false };
  nomad.registerJob(job);
  const cgroups = await createNomadCgroupRoot(t);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await nomadAgent(t, nomad, cgroups);
  const id = instanceIdOf(place(nomad, env));
  const instance = await until('the instance', () => agent.detector.get(id), 3000);
  // The busy guard may hold the app first, while it starts (it reads this task's CPU from /proc now).
  await until('held awake by its check', () => instance.heldBy?.kind === 'never-sleeps', { timeoutMs: 3000, detail: () => `held by: ${JSON.stringify(instance.heldBy)}` });
  t.regex(instance.heldBy ? describeHold(instance.heldBy) : '', /never sleeps: check "alive" \(HTTPS\) verifies the certificate/);
  t.is(instance.state, 'running');
  t.is(instance.sleeps, 0);
  t.is(await env.cgroup.freezerState(), 'THAWED');
});

rootTest.serial('with nomad.checkTls for its service, an instance whose HTTPS check verifies sleeps as usual', async (t) => {
  const nomad = await startNomadDouble(t);
  const job = execJob({});
  const service = (job.TaskGroups as Array<{ Services: Array<{ Checks: Array<Record<string, unknown>> }> }>)[0]!.Services[0]!;
  service.Checks[0] = { ...service.Checks[0], Protocol: 'https' };
  nomad.registerJob(job);
  const cgroups = await createNomadCgroupRoot(t);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await nomadAgent(t, nomad, cgroups, { nomad: { address: nomad.url, cgroupRoot: cgroups.root, checkTls: { web: { certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem' } } } });
  const id = instanceIdOf(place(nomad, env));
  await until('the instance', () => agent.detector.get(id), 3000);
  await nextState(agent, id, 'sleeping', 3000);
  t.like(agent.detector.get(id)!.config.checkTls, { certFile: '/nonexistent/cert.pem' });
});

rootTest.serial('modes and setups not supported yet are reported invalid with a reason, and nothing crashes', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({ 'doze.mode': 'snapshot' }, { id: 'vm' }));
  nomad.registerJob(execJob({ 'doze.mode': 'scale' }, { id: 'batch' }));
  nomad.registerJob(execJob({}, { id: 'dock', driver: 'podman' }));
  nomad.registerJob(execJob({ 'doze.idle_timeout': '5 parsecs' }, { id: 'typo' }));
  const cgroups = await createNomadCgroupRoot(t);
  const agent = await nomadAgent(t, nomad, cgroups);
  const allocs = Object.fromEntries(['vm', 'batch', 'dock', 'typo'].map((jobId) => [jobId, String(nomad.addAllocation({ jobId, group: 'web', nodeId: 'node-1' }).ID)]));
  const report = await until('four verdicts', async () => {
    const s = await status(agent);
    return s.allocations.filter((a) => a.state === 'invalid').length === 4 ? s : undefined;
  });
  const reason = (jobId: string) => report.allocations.find((a) => a.allocId === allocs[jobId])?.reason ?? '';
  t.regex(reason('vm'), /doze\.mode "snapshot" is not supported by this agent yet/);
  t.regex(reason('batch'), /doze\.mode "scale" is not supported by this agent yet/);
  t.regex(reason('dock'), /podman driver/);
  t.regex(reason('typo'), /doze\.idle_timeout: "5 parsecs" is not a duration/);
  t.is(agent.detector.instances().length, 0);
  // Stopping them is quiet (an invalid annotation is forgotten too); the agent is still fine.
  nomad.stopAllocation(allocs.vm!);
  nomad.stopAllocation(allocs.typo!);
  await until('the verdicts to go', async () => ((await status(agent)).allocations.some((a) => a.allocId === allocs.vm || a.allocId === allocs.typo) ? undefined : true));
  t.is((await status(agent)).allocations.length, 2);
  t.is((await get(`http://${agent.address}/healthz`)).status, 200);
});

rootTest.serial('a host-network allocation is counted by port on the node\'s interfaces; a qemu-driver task is paused through the QMP socket in its task directory', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({}, { id: 'hostnet', networkMode: 'host' }));
  nomad.registerJob(execJob({}, { id: 'vm', networkMode: 'host', driver: 'qemu' }));
  const cgroups = await createNomadCgroupRoot(t);
  // The node's interfaces, as far as this agent knows: one the test owns (not the machine's lo or eth0).
  const dummy = `dz${uniqueSuffix()}n`;
  t.teardown(() => shQuiet('ip', ['link', 'del', dummy]));
  await sh('ip', ['link', 'add', dummy, 'type', 'veth', 'peer', 'name', `${dummy}p`]); // (no dummy module here)
  await sh('ip', ['link', 'set', dummy, 'up']);
  const { hostIp } = pickTestAddresses();
  await sh('ip', ['addr', 'add', `${hostIp}/32`, 'dev', dummy]); // host ports are on the node's own addresses
  const allocDir = await mkdtemp(join(tmpdir(), 'dz-alloc-'));
  t.teardown(() => rm(allocDir, { recursive: true, force: true }));
  const agent = await nomadAgent(t, nomad, cgroups, { hostPorts: { interfaces: [dummy] }, nomad: { address: nomad.url, cgroupRoot: cgroups.root, allocDir } });

  const hostAlloc = randomUUID();
  const vmAlloc = randomUUID();
  const cgroup = await createTaskCgroup(t, cgroups, hostAlloc, 'app');
  await createTaskCgroup(t, cgroups, vmAlloc, 'app');
  const placed = nomad.addAllocation({ id: hostAlloc, jobId: 'hostnet', group: 'web', nodeId: 'node-1', hostIp });
  nomad.addAllocation({ id: vmAlloc, jobId: 'vm', group: 'web', nodeId: 'node-1', hostIp });
  const port = (placed.AllocatedResources as { Shared: { Ports: Array<{ Value: number }> } }).Shared.Ports[0]!.Value;

  const id = instanceIdOf(placed, 'hostnet');
  const instance = await until('the host-network instance', () => agent.detector.get(id), 3000);
  t.is(instance.config.address, `${hostIp}:${port}`);
  t.is(instance.config.interface, undefined, 'no interface of its own');
  t.is<string, string>(instance.key, `0.0.${port >> 8}.${port & 0xff}`, 'keyed by its host port');
  t.deepEqual(instance.config.runtime, { kind: 'freezer', cgroup: cgroup.dir, reclaim: false, reclaimAfter: 10_000, reclaimKeep: 'working-set', prefetch: false });
  t.true(await isAttached(dummy, HOST_INTERFACE), 'the host-port programs are on the node interface');

  // No QEMU runs here: the qemu task waits for its QMP socket, at the path render gave it.
  const qmp = join(allocDir, vmAlloc, 'app', 'local', 'doze-qmp.sock');
  const pending = await until('the qemu task\'s verdict', async () => (await status(agent)).allocations.find((a) => a.allocId === vmAlloc && a.state === 'pending' && a.reason?.includes(qmp)));
  t.regex(pending.reason!, /QMP socket .* does not answer/);

  nomad.stopAllocation(hostAlloc);
  await until('the instance to go', () => (agent.detector.get(id) ? undefined : true), 2000);
  // (Removal detaches after the instance leaves the detector's list.)
  t.true(await until('the programs to go with the last host-port instance', async () => (await listFilters(dummy)).length === 0, 2000));
});

/** A TCP relay in front of the Nomad double that can be cut and restored on the same port. */
class Relay {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: number) {}

  async up(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

rootTest.serial('Nomad unreachable: known instances keep sleeping and waking, the status says so, and discovery resumes on reconnect', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({}));
  const relay = new Relay(Number(new URL(nomad.url).port));
  await relay.up();
  t.teardown(() => relay.down());
  const cgroups = await createNomadCgroupRoot(t);
  const first = await createAllocationEnv(t, cgroups);
  const second = await createAllocationEnv(t, cgroups);
  const agent = await nomadAgent(t, { url: `http://127.0.0.1:${relay.port}` }, cgroups);
  const id1 = instanceIdOf(place(nomad, first));
  await until('the first instance', () => agent.detector.get(id1), 3000);

  await relay.down();
  const down = await until('the outage to show', async () => {
    const nomadStatus = (await status(agent)).connections.nomad;
    return nomadStatus && !nomadStatus.connected ? nomadStatus : undefined;
  }, 3000);
  // A hijacked (close-delimited) stream that is cut reads as closed by the server, as with Nomad ≥ 1.11.2.
  t.regex(down.error ?? '', /unreachable|ECONNREFUSED|socket hang up|ECONNRESET|aborted|closed by the server/i);
  // While Nomad is away: the known instance still sleeps and wakes.
  for (let cycle = 0; cycle < 2; cycle++) {
    await nextState(agent, id1, 'sleeping', 3000);
    t.is(await first.cgroup.freezerState(), 'FROZEN');
    const running = nextState(agent, id1, 'running', 3000);
    t.is((await get(`${first.app.url}/`)).status, 200);
    await running;
  }
  // A placement made during the outage arrives once the stream resumes from its index.
  const id2 = instanceIdOf(place(nomad, second));
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(agent.detector.get(id2), undefined);
  t.truthy(agent.detector.get(id1), 'nothing is dropped while Nomad is unreachable');
  await relay.up();
  await until('the second instance', () => agent.detector.get(id2), 5000);
  const back = (await status(agent)).connections.nomad!;
  t.true(back.connected);
  t.is(back.detail?.source, 'stream');
  const resumed = nomad.requests.filter((r) => r.path === '/v1/event/stream').map((r) => Number(r.query.get('index')));
  t.true(resumed.length >= 2, `stream (re)connections from indexes ${resumed.join(', ')}`);
});

rootTest.serial('Consul: the agent registers as doze-agent, and leaves a sleeping allocation\'s TTL (script) checks to Nomad', async (t) => {
  const runner = await CheckRunner.create({ stagger: false });
  t.teardown(() => runner.stop());
  const consul = await AgentApiDouble.start({ runner });
  t.teardown(() => consul.close());
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob({ 'doze.idle_timeout': '1h' }));
  const cgroups = await createNomadCgroupRoot(t);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await nomadAgent(t, nomad, cgroups, { consul: { address: consul.url, checkInterval: '200ms' } });

  // doze-agent, with an HTTP check on /healthz that Consul's runner finds passing.
  const port = Number(agent.address.slice(agent.address.lastIndexOf(':') + 1));
  const registered = await until('the registration with the node id', () => consul.listServices().find((s) => s.ID === 'doze-agent' && s.Meta['nomad_node_id']));
  t.like(registered, { Service: 'doze-agent', Port: port, Tags: ['doze'], Meta: { nomad_node_id: 'node-1' } });
  await until('the agent check to pass', () => consul.listChecks().find((c) => c.ServiceID === 'doze-agent' && c.Status === 'passing'));
  t.is(consul.check('service:doze-agent')?.Definition.HTTP, `http://127.0.0.1:${port}/healthz`);

  // What Nomad registers for the allocation: a script check of a task doze does not freeze (a
  // TTL check in Consul). Nomad heartbeats it; doze never writes it, so without Nomad it lapses.
  const register = (serviceId: string, checks: unknown[]) => fetch(`${consul.url}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ ID: serviceId, Name: 'web', Port: 20000, Checks: checks }) });
  await register(`_nomad-task-${env.allocId}-group-web-web-http`, [{ CheckID: '_nomad-check-script', Name: 'script', TTL: '1500ms', Status: 'passing' }]);

  const id = instanceIdOf(place(nomad, env));
  await until('the instance', () => agent.detector.get(id), 3000);
  const r = await fetch(`http://${agent.address}/api/instances/${id}/sleep`, { method: 'POST' });
  t.is(r.status, 200);
  t.is(agent.detector.get(id)!.state, 'sleeping');
  await until('the TTL to lapse', () => (consul.check('_nomad-check-script')?.Status === 'critical' ? true : undefined), 4000);
  t.like(consul.check('_nomad-check-script'), { Output: 'TTL expired' }, 'doze did not pass it in Nomad\'s place');
  t.like((await status(agent)).connections.consul, { connected: true, address: consul.url });
  const running = nextState(agent, id, 'running', 3000);
  t.is((await get(`${env.app.url}/`)).status, 200);
  await running;

  // Consul down: the status says so; the instance keeps sleeping and waking.
  await consul.close();
  await until('the Consul outage to show', async () => ((await status(agent)).connections.consul?.connected === false ? true : undefined), 3000);
  await fetch(`http://${agent.address}/api/instances/${id}/sleep`, { method: 'POST' });
  t.is(agent.detector.get(id)!.state, 'sleeping');
  const again = nextState(agent, id, 'running', 3000);
  t.is((await get(`${env.app.url}/`)).status, 200);
  await again;
});

rootTest.serial('a clean stop deregisters doze-agent from Consul', async (t) => {
  const consul = await AgentApiDouble.start();
  t.teardown(() => consul.close());
  const agent = await startAgent(t, { consul: { address: consul.url } }, { nomadInstances: FAST });
  await until('the registration', () => consul.listServices().find((s) => s.ID === 'doze-agent'));
  t.like((await status(agent)).connections, { consul: { connected: true } });
  t.is((await status(agent)).connections.nomad, undefined, 'no nomad section: no Nomad connection');
  await agent.discovery!.stop();
  t.deepEqual(consul.listServices(), []);
});
