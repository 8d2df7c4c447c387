import test, { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { configSchema, instanceSchema } from '../../agent/config/schema.js';
import { registrationRoots } from '../../agent/instances/registration-policy.js';
import { instanceId } from '../../agent/nomad/instance-id.js';
import { Discovery } from '../../agent/discovery/discovery.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import type { AllocationStatus } from '../../agent/discovery/discovery-report.js';
import { checkJob } from '../../plugin/check-job.js';
import { loadJobspec } from '../../plugin/load-jobspec.js';
import { renderVmTasks } from '../../plugin/render-vm-task.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { startRegistryApp } from '../helpers/registry-app.js';
import { until } from '../helpers/until.js';

/*
 * Nomad discovery and `doze vm run --register` (item: who owns the VM). An
 * allocation whose snapshot-mode task was rendered into doze vm run is
 * `registered`: the owner registers the VM itself (it alone knows the tap, the
 * guest and the control socket), discovery leaves it alone, and when the
 * allocation stops it removes a registration the owner left behind (an owner
 * that was killed). The Nomad double serves the allocations; the agent side is
 * a real detector and registry over a fake traffic source.
 */

const silent = createLogger('silent');
const FAST = { minBackoffMs: 20, maxBackoffMs: 200, pendingMinMs: 20, pendingMaxMs: 200 };

async function renderedExample(): Promise<Record<string, unknown>> {
  const { job } = await loadJobspec('jobs/vm-snapshot.nomad.hcl', undefined);
  return renderVmTasks(job, checkJob(job)).job;
}

async function setup(t: ExecutionContext) {
  const nomad = await startNomadDouble(t);
  // The agent's default roots with Nomad configured: doze vm run keeps its sockets in the task's local/ in the alloc dir.
  const roots = registrationRoots(configSchema.parse({ nomad: { address: nomad.url } }));
  const app = await startRegistryApp(t, { registrations: true, roots, createRuntime: () => new FakeRuntime({ pauseMs: 0, resumeMs: 0, failResume: false }) });
  const discovery = Discovery.start({
    ...FAST,
    config: { nomad: { address: nomad.url, nodeId: 'node-1', cgroupRoot: '/nonexistent' } },
    detector: app.detector,
    admission: app.admission,
    log: silent,
    statusAddress: () => '127.0.0.1:0',
    unregister: async (id) => void (await app.registry.unregister(id, 'its Nomad allocation stopped')),
  });
  t.teardown(() => discovery.stop());
  const allocation = (allocId: string) => () => discovery.report().allocations.find((a) => a.allocId === allocId);
  return { nomad, app, discovery, allocation };
}

test('a rendered doze vm allocation is "registered": discovery leaves it to its owner, and removes what a dead owner left', async (t) => {
  const { nomad, app, allocation } = await setup(t);
  nomad.registerJob(await renderedExample());
  const allocId = randomUUID();
  nomad.addAllocation({ id: allocId, jobId: 'vm', group: 'vm', nodeId: 'node-1' });
  const id = instanceId('vm', 'vm', allocId);

  const status = await until('the allocation', () => allocation(allocId)() as AllocationStatus | undefined);
  t.like(status, { allocId, instance: id, job: 'vm', group: 'vm', task: 'guest', state: 'registered' });
  t.regex(status.reason!, /doze vm run registers the VM itself/);
  t.is(app.detector.instances().length, 0, 'discovery does not manage it itself');

  // The owner registers (as doze vm run --register does, with the same id), then is killed unheard.
  const put = await app.registry.register(instanceSchema.parse({
    id, address: '10.213.7.2:80', interface: 'dzvm0t', runtime: { kind: 'qemu', mode: 'snapshot', control: `/opt/nomad/data/alloc/${allocId}/guest/local/doze-vm/control.sock` },
  }));
  t.is(put.status, 201);
  const instance = app.detector.get(id)!;
  t.true(await app.detector.sleepNow(id));

  nomad.stopAllocation(allocId);
  await until('the registration to go', () => !app.detector.get(id));
  t.is(await instance.runtime.inspect(), 'running', 'woken before it was let go');
  t.deepEqual(app.released, [id]);
  await until('the allocation to leave the report', () => !allocation(allocId)());
});

test('a stopped doze vm allocation leaves other instances alone', async (t) => {
  const { nomad, app, allocation } = await setup(t);
  nomad.registerJob(await renderedExample());
  const allocId = randomUUID();
  nomad.addAllocation({ id: allocId, jobId: 'vm', group: 'vm', nodeId: 'node-1' });
  await until('registered', () => allocation(allocId)()?.state === 'registered');
  // Another instance of the same id from the config file is not the allocation's to remove.
  await app.addStatic({ id: instanceId('vm', 'vm', allocId), address: '10.0.9.2:80', interface: 'st0', runtime: { kind: 'fake' } });
  nomad.stopAllocation(allocId);
  await until('the allocation to leave the report', () => !allocation(allocId)());
  t.truthy(app.detector.get(instanceId('vm', 'vm', allocId)));
  t.deepEqual(app.released, []);
});

test('an unrendered snapshot qemu task is invalid and says how to run it', async (t) => {
  const { nomad, app, allocation } = await setup(t);
  const { job } = await loadJobspec('jobs/vm-snapshot.nomad.hcl', undefined);
  nomad.registerJob(job);
  const allocId = randomUUID();
  nomad.addAllocation({ id: allocId, jobId: 'vm', group: 'vm', nodeId: 'node-1' });
  const status = await until('the allocation', () => allocation(allocId)());
  t.is(status.state, 'invalid');
  t.regex(status.reason!, /doze\.mode "snapshot" is not supported by this agent yet for a task not run by "doze vm run --register" \(task "guest" uses the qemu driver\).*"doze job run"/);
  t.is(app.detector.instances().length, 0);
});
