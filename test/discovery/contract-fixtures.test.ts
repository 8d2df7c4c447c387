import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { allocationInstance } from '../../agent/discovery/allocation-instance.js';
import { checksSchema } from '../../agent/discovery/consul-agent.js';
import { NomadClient } from '../../agent/nomad/nomad-client.js';
import { allocationEvents, type AllocationFrame } from '../../agent/discovery/nomad-event-stream.js';
import {
  agentSelfSchema,
  allocationChecksSchema,
  allocationSchema,
  allocationStubSchema,
  deploymentSchema,
  jobRegisterResponseSchema,
  jobSchema,
} from '../../agent/nomad/nomad-schemas.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { dockerJob, EXPOSE_PORT_LABEL, webJob } from '../doubles/nomad/fixtures.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';

/*
 * Contract tests on real payloads: Nomad's and Consul's own API samples
 * (test/fixtures/*: each says where it came from and what was completed from
 * the Go structs), through doze's schemas and discovery; then the Nomad
 * double's answers are held to the same shapes.
 */

interface Fixture {
  _source: string;
  _completed: string[];
  body: unknown;
}

function fixture(path: string): Fixture {
  return JSON.parse(readFileSync(new URL(`../fixtures/${path}`, import.meta.url), 'utf8')) as Fixture;
}

/** Serves fixed bodies the way Nomad does (X-Nomad-Index on reads). */
async function serve(t: ExecutionContext, routes: Record<string, string>): Promise<string> {
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const body = routes[path];
    if (body === undefined) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      return void res.end('resource not found');
    }
    // The event stream: a hijacked HTTP/1.1 answer without length (command/agent/event_endpoint.go).
    if (path === '/v1/event/stream') {
      req.socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n');
      return void req.socket.end(body);
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'X-Nomad-Index': '52', 'X-Nomad-KnownLeader': 'true' });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('every fixture names its source', (t) => {
  for (const name of ['agent-self', 'allocation', 'allocation-bridge', 'allocation-checks', 'allocation-checks-none', 'event-stream', 'job', 'job-allocations', 'job-deployment', 'node-allocations', 'scale-response']) {
    t.regex(fixture(`nomad/${name}.json`)._source, /hashicorp\/nomad v1\.11\.3/, name);
  }
  t.regex(fixture('consul/agent-checks.json')._source, /hashicorp\/consul/);
});

test('Nomad\'s payloads pass doze\'s schemas', (t) => {
  const ok = (schema: { safeParse(v: unknown): { success: boolean; error?: unknown } }, name: string) => {
    const result = schema.safeParse(fixture(`nomad/${name}.json`).body);
    t.true(result.success, `${name}: ${JSON.stringify(result.error)}`);
  };
  ok(allocationSchema.array(), 'node-allocations');
  ok(allocationSchema, 'allocation');
  ok(allocationSchema, 'allocation-bridge');
  ok(allocationChecksSchema, 'allocation-checks');
  ok(allocationChecksSchema, 'allocation-checks-none');
  ok(jobSchema, 'job');
  ok(allocationStubSchema.array(), 'job-allocations');
  ok(deploymentSchema, 'job-deployment');
  ok(jobRegisterResponseSchema, 'scale-response');
  ok(agentSelfSchema, 'agent-self');
  t.true(checksSchema.safeParse(fixture('consul/agent-checks.json').body).success);
});

test('discovery maps the real allocations: host mode by host address and port, bridge mode by NetworkStatus and To', (t) => {
  const [hostAlloc] = allocationSchema.array().parse(fixture('nomad/node-allocations.json').body);
  const host = allocationInstance(hostAlloc!);
  t.is(host.kind, 'instance', JSON.stringify(host));
  if (host.kind === 'instance') t.like(host.instance, { address: '10.138.0.5:25920', networkMode: 'host', task: 'webapp', service: 'webapp', jobId: 'webapp' });

  const bridge = allocationInstance(allocationSchema.parse(fixture('nomad/allocation-bridge.json').body));
  t.is(bridge.kind, 'instance', JSON.stringify(bridge));
  if (bridge.kind === 'instance') {
    t.like(bridge.instance, { address: '172.26.64.12:6379', networkMode: 'bridge', service: 'redis-cache' });
    t.deepEqual(bridge.instance.checkAddresses, ['127.0.0.1:23116']);
    t.deepEqual(bridge.instance.checks.map((c) => c.tls), ['none']);
  }
});

test('the client reads real answers: agent self\'s node id, checks (and their null), the latest deployment', async (t) => {
  const url = await serve(t, {
    '/v1/agent/self': JSON.stringify(fixture('nomad/agent-self.json').body),
    '/v1/allocation/with/checks': JSON.stringify(fixture('nomad/allocation-checks.json').body),
    '/v1/allocation/none/checks': JSON.stringify(fixture('nomad/allocation-checks-none.json').body),
    '/v1/job/my-job/deployment': JSON.stringify(fixture('nomad/job-deployment.json').body),
  });
  const client = new NomadClient({ address: url });
  t.is((await client.agentSelf()).nodeId, 'fb2170a8-257d-3c64-b14d-bc06cc94e34c');
  // The docs' sample writes config.Version as a string ("0.5.5"); Nomad itself writes a VersionInfo object (the double does): both are read.
  t.is(await client.agentVersion(), '0.5.5');
  t.like(await client.allocationChecks('with'), { a1ed96606694742bf201a640a607e306: { Status: 'success', Mode: 'healthiness' } });
  t.deepEqual(await client.allocationChecks('none'), {}, 'null means no Nomad-provider checks');
  t.like((await client.latestDeployment('my-job')).value, { Status: 'running' });
});

test('the event stream as Nomad writes it (newline-framed, heartbeats, close-delimited) yields the allocation frame only', async (t) => {
  const frames = fixture('nomad/event-stream.json').body as unknown[];
  const url = await serve(t, { '/v1/event/stream': frames.map((f) => `${JSON.stringify(f)}\n`).join('') });
  const controller = new AbortController();
  const seen: AllocationFrame[] = [];
  for await (const frame of allocationEvents(new NomadClient({ address: url }), { signal: controller.signal, minBackoffMs: 10, maxBackoffMs: 20 })) {
    seen.push(frame);
    if (frame.events.length > 0) controller.abort();
  }
  // The Node frame is let through without events (topic filtered here); heartbeats yield nothing.
  t.deepEqual(seen.map((f) => [f.index, f.events.length]), [[7, 0], [52, 1]]);
  seen.shift();
  t.like(seen[0], { index: 52 });
  t.like(seen[0]!.events[0], { type: 'AllocationUpdated', allocation: { ID: 'a8198d79-cfdb-6593-a999-1e9adabcba2e', Job: null } });
});

/** The keys of an object at a path, sorted. */
function keysAt(value: unknown, ...path: (string | number)[]): string[] {
  let node = value as Record<string | number, unknown> | undefined;
  for (const key of path) node = node?.[key] as Record<string | number, unknown> | undefined;
  return Object.keys(node ?? {}).sort();
}

test('the Nomad double answers in the same shapes as the real payloads', async (t) => {
  const double: NomadDouble = await startNomadDouble(t);
  double.registerJob(webJob());
  const alloc = double.addAllocation({ jobId: 'web', group: 'web', nodeId: 'node-1' });
  const real = fixture('nomad/allocation-bridge.json').body;
  for (const path of [['AllocatedResources'], ['AllocatedResources', 'Shared'], ['AllocatedResources', 'Shared', 'Ports', 0], ['NetworkStatus']] as (string | number)[][]) {
    t.deepEqual(keysAt(alloc, ...path), keysAt(real, ...path), path.join('.'));
  }
  const client = new NomadClient({ address: double.url });
  t.deepEqual(await client.allocationChecks(alloc.ID as string), {});
  const raw = await fetch(`${double.url}/v1/allocation/${alloc.ID as string}/checks`);
  t.is(await raw.text(), 'null', 'null, not {}, without Nomad-provider checks');
  const stubs = (await client.jobAllocations('web')).value;
  const realStub = (fixture('nomad/job-allocations.json').body as Array<Record<string, unknown>>)[0]!;
  for (const key of ['Job', 'NetworkStatus', 'DeploymentID', 'AllocatedResources']) {
    t.false(key in realStub, `the real stub has no ${key}`);
    t.false(key in stubs[0]!, `the double's stub has no ${key}`);
  }
  t.is(double.getJob('web')!.Meta, null, 'an empty map is null, as Go encodes a nil map');
});

test('the Consul double lists checks in the shape of Consul\'s sample', async (t) => {
  const consul = await AgentApiDouble.start();
  t.teardown(() => consul.close());
  await fetch(`${consul.url}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ ID: 'redis', Name: 'redis', Tags: ['primary'], Check: { TTL: '30s' } }) });
  const listed = (await (await fetch(`${consul.url}/v1/agent/checks`)).json()) as Record<string, Record<string, unknown>>;
  const real = (fixture('consul/agent-checks.json').body as Record<string, Record<string, unknown>>)['service:redis']!;
  const ours = listed['service:redis']!;
  for (const key of Object.keys(real)) t.true(key in ours, `the double's check has ${key}`);
  t.like(ours, { CheckID: 'service:redis', ServiceID: 'redis', ServiceName: 'redis', ServiceTags: ['primary'] });
});

test('a docker allocation names no container: TaskStates carry no driver handle in the real payload or the double\'s, so doze asks Docker (agent/docker/)', async (t) => {
  const real = fixture('nomad/allocation-bridge.json').body as { TaskStates: Record<string, Record<string, unknown>>; Job: { TaskGroups: Array<{ Tasks: Array<{ Driver: string }> }> } };
  t.is(real.Job.TaskGroups[0]!.Tasks[0]!.Driver, 'docker');
  const double: NomadDouble = await startNomadDouble(t);
  double.registerJob(dockerJob({ connect: true }));
  const alloc = double.addAllocation({ jobId: 'web', group: 'web', nodeId: 'node-1' }) as { TaskStates: Record<string, Record<string, unknown>>; AllocatedResources: { Shared: { Ports: Array<{ Label: string; To: number }> } } };
  for (const states of [real.TaskStates, alloc.TaskStates]) {
    for (const state of Object.values(states)) {
      t.false(JSON.stringify(state).toLowerCase().includes('container'), 'no container id anywhere in a task state');
      t.false('DriverHandle' in state || 'TaskHandle' in state);
    }
  }
  t.deepEqual(Object.keys(alloc.TaskStates).sort(), ['app', 'connect-proxy-web'], 'the injected sidecar has a task state of its own');
  t.like(alloc.AllocatedResources.Shared.Ports.find((p) => p.Label === EXPOSE_PORT_LABEL), { To: -1 });
});
