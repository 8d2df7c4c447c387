import net from 'node:net';
import type { Agent } from '../../agent/agent.js';
import { listRules } from '../../agent/net/iptables.js';
import { listFilters } from '../../agent/net/tc.js';
import type { StatusReport } from '../../agent/status/status-report.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { get } from '../helpers/http.js';
import { createAllocationEnv, createNomadCgroupRoot, type TestAllocation } from '../helpers/nomad-alloc.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { until } from '../helpers/until.js';

/*
 * Nomad and Consul flapping: repeated outages and recoveries of the doubles, seen
 * through TCP relays that either refuse connections (nothing listens) or accept and
 * reset them at once (counting every attempt, so the reconnect rate is measured).
 * One outage also replaces Consul by a fresh one that lost its state.
 */

const FAST = { minBackoffMs: 20, maxBackoffMs: 200, pendingMinMs: 20, pendingMaxMs: 200, consulResyncMs: 200 };
const FLAPS = 6;
const OUTAGE_MS = 600;

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type RelayMode = 'up' | 'refuse' | 'reset';

/** A TCP relay on a fixed port in front of a double: up, refusing (no listener), or resetting every connection (counted). */
class Relay {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private mode: RelayMode = 'up';
  port = 0;
  /** Connections accepted and reset while in `reset` mode. */
  resets = 0;

  constructor(private readonly target: () => number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async set(mode: RelayMode): Promise<void> {
    this.mode = mode;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (mode === 'refuse') {
      const server = this.server;
      this.server = undefined;
      if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    } else if (!this.server) {
      const server = net.createServer((client) => this.accept(client));
      await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
      this.port = (server.address() as net.AddressInfo).port;
      this.server = server;
    }
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.mode !== 'up') {
      this.resets++;
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.target(), '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  }
}

function execJob(): Record<string, unknown> {
  const job = webJob({ id: 'web', groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '1h' } });
  const group = (job.TaskGroups as Array<{ Tasks: Array<Record<string, unknown>> }>)[0]!;
  group.Tasks[0]!.Driver = 'exec';
  group.Tasks[0]!.Config = { command: '/usr/bin/node', args: ['app.mjs'] };
  return job;
}

function place(nomad: NomadDouble, env: TestAllocation): string {
  const alloc = nomad.addAllocation({ id: env.allocId, jobId: 'web', group: 'web', nodeId: 'node-1', bridgeAddress: env.ns.instanceIp });
  return `web.web.${String(alloc.ID).replace(/-/g, '').slice(0, 8)}`;
}

async function status(agent: Agent): Promise<StatusReport> {
  return JSON.parse((await get(`http://${agent.address}/api/status`)).body) as StatusReport;
}

/** Everything the agent put in the kernel: its iptables rules (all tables) and the tc filters on the instances' interfaces. */
async function kernelFootprint(agent: Agent, interfaces: string[]) {
  const prefix = agent.config.netfilter.chainPrefix;
  const mine = (rules: string[]) => rules.filter((r) => r.includes(prefix)).sort();
  return {
    mangle: mine(await listRules('mangle')),
    nat: mine(await listRules('nat')),
    filters: await Promise.all(interfaces.map(async (i) => (await listFilters(i)).map((f) => JSON.stringify(f)).sort())),
  };
}

rootTest.serial('Nomad and Consul flapping: no crash, reconnects with backoff, no duplicate instance, registration, rule or filter, and instances keep sleeping and waking', async (t) => {
  t.timeout(90_000);
  const nomad = await startNomadDouble(t);
  nomad.registerJob(execJob());
  const nomadRelay = new Relay(() => Number(new URL(nomad.url).port));
  await nomadRelay.set('up');
  let consul = await AgentApiDouble.start();
  const consulPort = consul.port;
  t.teardown(() => consul.close());
  const consulRelay = new Relay(() => consulPort);
  await consulRelay.set('up');
  t.teardown(async () => {
    await nomadRelay.set('refuse');
    await consulRelay.set('refuse');
  });
  const cgroups = await createNomadCgroupRoot(t);
  const a = await createAllocationEnv(t, cgroups);
  const b = await createAllocationEnv(t, cgroups);
  const agent = await startAgent(t, {
    healthChecks: { mark: '0x1', fromUid: CHECKER_UID },
    nomad: { address: nomadRelay.url, cgroupRoot: cgroups.root },
    consul: { address: consulRelay.url },
  }, { nomadInstances: FAST });

  const idA = place(nomad, a);
  const idB = place(nomad, b);
  await until('both instances', () => agent.detector.get(idA) && agent.detector.get(idB), 5000);
  const readers = async () => (await sh('sh', ['-c', `ps -eo args | grep -c "[d]oze-maps events ${agent.config.bpffs}/" || true`])).trim();
  t.is(await readers(), '1', 'one wake-event reader, though both allocations were attached at once');
  await until('the Consul registration', () => consul.listServices().find((s) => s.ID === 'doze-agent'));
  t.is((await fetch(`http://${agent.address}/api/instances/${idB}/sleep`, { method: 'POST' })).status, 200);
  t.is(agent.detector.get(idB)!.state, 'sleeping');
  const before = await kernelFootprint(agent, [a.ns.hostIf, b.ns.hostIf]);
  t.true(before.nat.some((r) => r.includes(`doze:${idB}`)), 'the sleeper\'s checks are redirected');
  t.true(before.mangle.length > 0 && before.filters.every((f) => f.length > 0), 'marking rules and tc filters are in place');

  const attempts: string[] = [];
  for (let flap = 0; flap < FLAPS; flap++) {
    const mode: RelayMode = flap % 2 === 0 ? 'reset' : 'refuse';
    await nomadRelay.set(mode);
    await consulRelay.set(mode);
    await until(`outage ${flap} to show`, async () => {
      const c = (await status(agent)).connections;
      return c.nomad?.connected === false && c.consul?.connected === false ? true : undefined;
    }, 3000);
    const resetsBefore = { nomad: nomadRelay.resets, consul: consulRelay.resets };
    if (flap === 2) {
      // Consul restarted and lost its state (a dev agent): the same port, nothing registered.
      await consul.close();
      consul = await AgentApiDouble.start({ port: consulPort });
    }
    await delay(OUTAGE_MS);
    if (mode === 'reset') {
      const n = nomadRelay.resets - resetsBefore.nomad;
      const c = consulRelay.resets - resetsBefore.consul;
      attempts.push(`flap ${flap}: nomad ${n}, consul ${c} in ${OUTAGE_MS} ms`);
      // Backoff 20 ms doubling to 200 ms: ~6 attempts per loop in 600 ms; a tight loop would make hundreds.
      t.true(n >= 1 && n <= 20, `Nomad: ${n} connection attempts in ${OUTAGE_MS} ms`);
      t.true(c >= 1 && c <= 20, `Consul: ${c} connection attempts in ${OUTAGE_MS} ms`);
    }
    t.is((await get(`http://${agent.address}/healthz`)).status, 200, 'the agent is alive during the outage');
    await nomadRelay.set('up');
    await consulRelay.set('up');
    await until(`recovery ${flap}`, async () => {
      const c = (await status(agent)).connections;
      return c.nomad?.connected === true && c.consul?.connected === true ? true : undefined;
    }, 5000);
    await delay(100 + flap * 50);
  }
  t.log(attempts.join('; '));

  // One instance per allocation, once each.
  const ids = agent.detector.instances().map((i) => i.id).sort();
  t.deepEqual(ids, [idA, idB].sort(), 'no duplicate instance');
  const report = await status(agent);
  t.deepEqual(report.allocations.map((x) => x.allocId).sort(), [a.allocId, b.allocId].sort(), 'each allocation listed once');
  t.true(report.allocations.every((x) => x.state === 'managed'));
  t.is(report.connections.nomad?.detail?.source, 'stream', 'back on the event stream');
  // Consul: the fresh one got exactly one registration.
  const registered = await until('re-registration in the fresh Consul', () => (consul.listServices().some((s) => s.ID === 'doze-agent') ? consul.listServices() : undefined));
  t.is(registered.filter((s) => s.ID === 'doze-agent').length, 1);
  // The kernel: exactly what there was before the flapping.
  t.deepEqual(await kernelFootprint(agent, [a.ns.hostIf, b.ns.hostIf]), before, 'no duplicate iptables rule or tc filter');
  t.is(agent.detector.get(idA)!.state, 'running');
  t.is(agent.detector.get(idB)!.state, 'sleeping');
  t.is(await readers(), '1');

  // Still doing its job: the sleeper wakes on a request.
  const running = nextState(agent, idB, 'running', 3000);
  t.is((await get(`${b.app.url}/`)).status, 200);
  await running;
  t.is((await get(`${a.app.url}/`)).status, 200);
});
