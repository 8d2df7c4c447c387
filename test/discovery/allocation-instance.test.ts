import test from 'ava';
import { allocationInstance, isAllocationLive } from '../../agent/discovery/allocation-instance.js';
import { instanceId } from '../../agent/nomad/instance-id.js';
import { allocationSchema, type NomadAllocation } from '../../agent/nomad/nomad-schemas.js';
import { dockerJob, EXPOSE_PORT_LABEL, webJob, type WebJobOptions } from '../doubles/nomad/fixtures.js';
import { NomadDouble } from '../doubles/nomad/nomad-double.js';

const enabled = { 'doze.enabled': 'true' };

/** An allocation exactly as the double (Nomad's JSON shape) serves it, validated like the client does. */
async function allocationOf(jobOptions: WebJobOptions, spec: { bridgeAddress?: string; hostIp?: string; clientStatus?: string } = {}): Promise<NomadAllocation> {
  const nomad = await NomadDouble.start();
  try {
    nomad.registerJob(webJob(jobOptions));
    return allocationSchema.parse(nomad.addAllocation({ jobId: jobOptions.id ?? 'web', group: 'web', ...spec }));
  } finally {
    await nomad.close();
  }
}

test('a bridge-mode allocation is reached at its own IP on the port\'s "to"', async (t) => {
  const alloc = await allocationOf({ groupMeta: { ...enabled, 'doze.idle_timeout': '45s', 'doze.wake': 'hold' } }, { bridgeAddress: '172.26.64.9' });
  const mapping = allocationInstance(alloc);
  if (mapping.kind !== 'instance') return t.fail(mapping.reason);
  t.like(mapping.instance, {
    allocId: alloc.ID,
    jobId: 'web',
    group: 'web',
    task: 'app',
    driver: 'docker',
    address: '172.26.64.9:8080',
    networkMode: 'bridge',
    service: 'web',
    idleTimeoutMs: 45_000,
    idlePolicy: 'requests',
    wake: 'hold',
    mode: 'pause',
    minAwakeMs: 0,
    maxAwakeMs: undefined,
  });
  t.is(mapping.instance.interface, undefined, 'the host veth needs the kernel: findHostVeth');
  t.is(mapping.instance.id, `web.web.${alloc.ID.slice(0, 8)}`);
});

test('a host-mode allocation is reached at the host IP on the allocated port', async (t) => {
  const alloc = await allocationOf({ jobMeta: enabled, networkMode: 'host' }, { hostIp: '10.1.2.3' });
  const mapping = allocationInstance(alloc);
  if (mapping.kind !== 'instance') return t.fail(mapping.reason);
  const port = alloc.AllocatedResources!.Shared!.Ports![0]!.Value;
  t.true(port >= 20000);
  t.is(mapping.instance.address, `10.1.2.3:${port}`);
  t.is(mapping.instance.networkMode, 'host');
});

test('a dual-stack bridge allocation (NetworkStatus.AddressIPv6) is reached on both addresses; an IPv6-only one on its IPv6 address', async (t) => {
  const alloc = await allocationOf({ groupMeta: enabled }, { bridgeAddress: '172.26.64.9' });
  alloc.NetworkStatus = { ...alloc.NetworkStatus, AddressIPv6: 'fd00:a::9' };
  const dual = allocationInstance(alloc);
  if (dual.kind !== 'instance') return t.fail(dual.reason);
  t.is(dual.instance.address, '172.26.64.9:8080');
  t.deepEqual(dual.instance.addresses, ['[fd00:a::9]:8080']);
  alloc.NetworkStatus = { ...alloc.NetworkStatus, Address: '' };
  const only6 = allocationInstance(alloc);
  if (only6.kind !== 'instance') return t.fail(only6.reason);
  t.is(only6.instance.address, '[fd00:a::9]:8080');
  t.deepEqual(only6.instance.addresses, []);
});

test('a bridge port without "to" is reached on its allocated value', async (t) => {
  const alloc = await allocationOf({ groupMeta: enabled }, { bridgeAddress: '172.26.64.3' });
  alloc.AllocatedResources!.Shared!.Ports![0]!.To = -1;
  const mapping = allocationInstance(alloc);
  if (mapping.kind !== 'instance') return t.fail(mapping.reason);
  t.is(mapping.instance.address, `172.26.64.3:${alloc.AllocatedResources!.Shared!.Ports![0]!.Value}`);
});

test('the job passed in (event payloads have none) is the one used', async (t) => {
  const alloc = await allocationOf({ groupMeta: enabled });
  const job = alloc.Job!;
  const withoutJob = { ...alloc, Job: null };
  t.is(allocationInstance(withoutJob).kind, 'invalid');
  t.regex((allocationInstance(withoutJob) as { reason: string }).reason, /carries no job: read it with GET \/v1\/allocation\//);
  t.is(allocationInstance(withoutJob, job).kind, 'instance');
});

test('allocations doze should not manage are ignored, with a reason', async (t) => {
  const plain = await allocationOf({});
  t.deepEqual(allocationInstance(plain), { kind: 'ignored', reason: 'doze.enabled is not true for any main task' });
  const optedOut = await allocationOf({ jobMeta: enabled, taskMeta: { 'doze.enabled': 'false' } });
  t.is(allocationInstance(optedOut).kind, 'ignored');
  const stopping = await allocationOf({ groupMeta: enabled });
  stopping.DesiredStatus = 'stop';
  t.deepEqual(allocationInstance(stopping), { kind: 'ignored', reason: 'allocation is stop/running' });
  const done = await allocationOf({ groupMeta: enabled }, { clientStatus: 'complete' });
  t.false(isAllocationLive(done));
  t.is(allocationInstance(done).kind, 'ignored');
});

test('a bridge allocation whose network is not up yet is ignored until it is', async (t) => {
  const alloc = await allocationOf({ groupMeta: enabled }, { clientStatus: 'pending' });
  alloc.NetworkStatus = null;
  t.deepEqual(allocationInstance(alloc), { kind: 'ignored', reason: `allocation ${alloc.ID} has no bridge address yet` });
});

test('bad annotations make the allocation invalid, with the place and value', async (t) => {
  const alloc = await allocationOf({ groupMeta: { ...enabled, 'doze.idle_timeout': '5 parsecs' } });
  t.deepEqual(allocationInstance(alloc), {
    kind: 'invalid',
    reason: 'group "web": doze.idle_timeout: "5 parsecs" is not a duration (use e.g. "500ms", "30s", "5m", "1h")',
  });
  const noCheck = await allocationOf({ groupMeta: enabled, check: false });
  t.deepEqual(allocationInstance(noCheck), { kind: 'invalid', reason: 'group "web": doze needs a service with a check and a port: service "web" has no check' });
});

test('instance ids are safe and bounded', (t) => {
  t.is(instanceId('web', 'api', '5f2c1e0a-aaaa-bbbb-cccc-000000000000'), 'web.api.5f2c1e0a');
  const long = instanceId('a'.repeat(80), 'g/h i', '0123456789abcdef');
  t.true(long.length <= 64);
  t.regex(long, /^[A-Za-z0-9_.-]{1,64}$/);
  t.true(long.endsWith('.01234567'));
});

test('a Connect allocation: the injected sidecar is not the managed task, and the expose check\'s generated port is a check address (host side and inside the namespace)', async (t) => {
  const nomad = await NomadDouble.start();
  let alloc: NomadAllocation;
  try {
    nomad.registerJob(dockerJob({ groupMeta: enabled, connect: true }));
    alloc = allocationSchema.parse(nomad.addAllocation({ jobId: 'web', group: 'web', bridgeAddress: '172.26.64.9', hostIp: '10.0.0.5' }));
  } finally {
    await nomad.close();
  }
  const mapping = allocationInstance(alloc);
  if (mapping.kind !== 'instance') return t.fail(mapping.reason);
  const ports = alloc.AllocatedResources!.Shared!.Ports!;
  const http = ports.find((p) => p.Label === 'http')!;
  const expose = ports.find((p) => p.Label === EXPOSE_PORT_LABEL)!;
  t.is(mapping.instance.task, 'app', 'the connect-proxy prestart sidecar is never the managed task');
  t.is(mapping.instance.address, '172.26.64.9:8080');
  // To = -1: the same port inside the namespace as on the host.
  t.deepEqual(mapping.instance.checkAddresses, [`10.0.0.5:${http.Value}`, `172.26.64.9:${expose.Value}`, `10.0.0.5:${expose.Value}`]);
});
