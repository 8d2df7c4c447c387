import test, { type ExecutionContext } from 'ava';
import { until } from '../helpers/until.js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NomadClient } from '../../agent/nomad/nomad-client.js';
import type { DozeError } from '../../agent/shared/errors.js';
import { NomadScaleRuntime, type NomadScaleOptions } from '../../agent/runtimes/nomad-scale.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDoubleOptions } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { runtimeContract } from './contract.js';

// Against test/doubles/nomad (no Nomad binary here), whose placeOnScale stands in for the scheduler.

async function setup(t: ExecutionContext, options: Partial<NomadScaleOptions> = {}, doubleOptions: NomadDoubleOptions = {}, count = 2) {
  const double = await startNomadDouble(t, { placeOnScale: { runningAfterMs: 20, healthyAfterMs: 20, deployment: true, checks: ['_nomad-check-abc'] }, ...doubleOptions });
  const job = webJob();
  (job.TaskGroups as Array<Record<string, unknown>>)[0]!.Count = count;
  double.registerJob(job);
  const first: string[] = [];
  for (let i = 0; i < count; i++) first.push(double.addAllocation({ jobId: 'web', group: 'web' }).ID as string);
  const dir = await mkdtemp(join(tmpdir(), 'dz-scale-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const nomad = new NomadClient({ address: double.url });
  const make = () => new NomadScaleRuntime({ nomad, jobId: 'web', group: 'web', port: 'http', handleFile: join(dir, 'handle.json'), ...options });
  const runtime = make();
  return { double, runtime, make, nomad, dir, first };
}

runtimeContract('nomad-scale', async (t) => {
  const { double, runtime, make } = await setup(t);
  return { runtime, slow: { slowDown: (ms) => (double.delayMs = ms), answeredAll: () => double.held === 0 }, another: make, mutations: () => double.scaleRequests.length };
});

test('sleep scales the group to 0 with a message and waits until no allocation holds anything', async (t) => {
  const { double, runtime, dir, first } = await setup(t);
  t.true((await runtime.probe()).ok);
  await runtime.sleep(5000);
  t.deepEqual(double.scaleRequests, [{ jobId: 'web', body: { Count: 0, Target: { Group: 'web' }, Message: 'doze: idle, scaled to 0 (was 2); doze scales it back on the next request' } }]);
  t.true(double.jobAllocationsOf('web').filter((a) => first.includes(a.ID as string)).every((a) => a.ClientStatus === 'complete'));
  t.is(await runtime.inspect(), 'asleep');
  t.like(JSON.parse(await readFile(join(dir, 'handle.json'), 'utf8')), { version: 1, kind: 'nomad-scale', previousCount: 2, asleep: true });
});

test('wake scales back to the remembered count and waits for a new, running, healthy allocation; its address is reported', async (t) => {
  const { double, runtime, first } = await setup(t);
  await runtime.sleep(5000);
  const started = performance.now();
  await runtime.wake(5000);
  const waited = performance.now() - started;
  t.like(double.scaleRequests[1], { body: { Count: 2, Target: { Group: 'web' }, Message: 'doze: woken by traffic, scaled back to 2' } });
  const allocId = runtime.allocationId()!;
  t.false(first.includes(allocId), 'a new allocation');
  const alloc = double.jobAllocationsOf('web').find((a) => a.ID === allocId)!;
  t.is(alloc.ClientStatus, 'running');
  t.like(alloc, { DeploymentStatus: { Healthy: true } });
  t.true(waited >= 35, `waited for running + healthy (${waited.toFixed(0)} ms)`);
  t.is(runtime.address(), `${(alloc.NetworkStatus as { Address: string }).Address}:8080`, 'the bridge address and the port inside');
  t.is(await runtime.inspect(), 'running');
  t.like(runtime.handle(), { asleep: false, allocId });
});

test('a failing Nomad check keeps the wake waiting until its deadline', async (t) => {
  const { double, runtime } = await setup(t, {}, { placeOnScale: { runningAfterMs: 10, checks: ['_nomad-check-x'], healthyAfterMs: 60_000 } });
  await runtime.sleep(5000);
  const error = await t.throwsAsync<DozeError>(runtime.wake(400));
  t.is(error?.code, 'E_DEADLINE');
  t.regex(error?.message ?? '', /scaling group "web" of job "web" back up did not finish within 400 ms/);
  // The check passes later: the next resume does not scale again, it waits for health.
  // Placed by the double a moment after the scale-up (later on a loaded machine).
  const alloc = await until('the scaled-up allocation', () => double.jobAllocationsOf('web').find((a) => a.DesiredStatus === 'run'), 3000);
  double.setChecks(alloc.ID as string, { '_nomad-check-x': 'success' });
  await runtime.wake(2000);
  t.is(double.scaleRequests.length, 2, 'no second scale-up');
  t.is(runtime.allocationId(), alloc.ID as string);
});

test('a restarted agent scales back to the count in its handle file', async (t) => {
  const { runtime, double } = await setup(t, {}, {}, 3);
  await runtime.sleep(5000);
  const restarted = new NomadScaleRuntime(runtime.options);
  t.is(await restarted.inspect(), 'asleep');
  await t.notThrowsAsync(restarted.sleep(2000), 'pausing a group at 0 is a no-op');
  t.is(double.scaleRequests.length, 1);
  await restarted.wake(5000);
  t.like(double.scaleRequests[1], { body: { Count: 3 } });
  t.is((double.getJob('web')!.TaskGroups as Array<{ Count: number }>)[0]!.Count, 3);
});

test('without a handle, a group found at 0 wakes to wakeCount', async (t) => {
  const { double, nomad } = await setup(t, {}, {}, 1);
  await nomad.scaleGroup('web', 'web', 0, 'someone else');
  const runtime = new NomadScaleRuntime({ nomad, jobId: 'web', group: 'web', wakeCount: 2 });
  t.is(await runtime.inspect(), 'asleep');
  await runtime.wake(5000);
  t.like(double.scaleRequests.at(-1), { body: { Count: 2 } });
});

test('a Nomad error is surfaced with its code; probe refuses a missing group or job', async (t) => {
  const { double, runtime, nomad } = await setup(t);
  double.injectOnce('POST', '/v1/job/web/scale', { status: 500, body: 'rpc error: no leader' });
  const error = await t.throwsAsync<DozeError>(runtime.sleep(2000));
  t.is(error?.code, 'E_NOMAD_HTTP');
  t.regex((await new NomadScaleRuntime({ nomad, jobId: 'web', group: 'nope' }).probe()).reason ?? '', /has no group "nope"/);
  t.regex((await new NomadScaleRuntime({ nomad, jobId: 'nope', group: 'web' }).probe()).reason ?? '', /HTTP 404/);
});

test('a handle file of another group is refused', async (t) => {
  const { runtime } = await setup(t);
  await runtime.sleep(5000);
  const other = new NomadScaleRuntime({ ...runtime.options, group: 'api' });
  t.regex((await other.probe()).reason ?? '', /belongs to group web of job web/);
});

test('an allocation without Nomad-provider checks (the checks endpoint answers null) wakes on deployment health', async (t) => {
  const { double, runtime } = await setup(t, {}, { placeOnScale: { runningAfterMs: 10, healthyAfterMs: 10, deployment: true } });
  await runtime.sleep(5000);
  await runtime.wake(5000);
  const checks = double.requests.filter((r) => r.path.endsWith('/checks'));
  t.true(checks.length > 0, 'the checks endpoint was asked');
  t.truthy(runtime.allocationId());
});

test('readiness checks (on_update = "ignore") do not gate a wake', async (t) => {
  const { runtime } = await setup(t, {}, { placeOnScale: { runningAfterMs: 10, healthyAfterMs: 10, deployment: true, checks: ['_nomad-check-live'], readinessChecks: ['_nomad-check-ready'] } });
  await runtime.sleep(5000);
  await t.notThrowsAsync(runtime.wake(3000));
});

test('Nomad < 1.4 (no checks route: 404 "resource not found") wakes on deployment health alone', async (t) => {
  const { runtime } = await setup(t, {}, { checksEndpoint: false, placeOnScale: { runningAfterMs: 10, healthyAfterMs: 10, deployment: true } });
  await runtime.sleep(5000);
  await t.notThrowsAsync(runtime.wake(3000));
});

test('any other 404 from the checks endpoint ("Unknown allocation") is not healthy', async (t) => {
  const { double, runtime } = await setup(t, {}, { placeOnScale: { runningAfterMs: 10, healthyAfterMs: 30, deployment: false, checks: ['_nomad-check-x'] } });
  await runtime.sleep(5000);
  // Every checks read of the new allocation answers 404 Unknown allocation.
  for (let i = 0; i < 50; i++) double.injectOnce('GET', '*checks', { status: 404, body: 'Unknown allocation "x"' });
  const error = await t.throwsAsync<DozeError>(runtime.wake(400));
  t.is(error?.code, 'E_DEADLINE');
});

test('a scale to 0 during an active deployment waits for it to end, then scales', async (t) => {
  const { double, runtime } = await setup(t);
  double.startDeployment('web');
  // The deployment ends once Nomad has refused the scale (a bounded poll, not a fixed delay).
  void (async () => {
    for (let i = 0; i < 500 && double.refusedScales === 0; i++) await new Promise((r) => setTimeout(r, 5));
    setTimeout(() => double.endDeployment('web'), 50);
  })();
  await runtime.sleep(5000);
  t.is(double.refusedScales, 1, 'refused once');
  t.like(double.scaleRequests[0], { body: { Count: 0 } });
  t.like(runtime.handle(), { asleep: true, previousCount: 2 });
});

test('a deployment that outlasts the pause deadline fails the pause with E_SCALE_BLOCKED and leaves the handle awake', async (t) => {
  const { double, runtime } = await setup(t);
  const deployment = double.startDeployment('web');
  const error = await t.throwsAsync<DozeError>(runtime.sleep(1000));
  t.is(error?.code, 'E_SCALE_BLOCKED');
  t.regex(error?.message ?? '', new RegExp(`deployment ${deployment.ID as string} of the job is still active`));
  t.is(double.scaleRequests.length, 0);
  t.like(runtime.handle(), { asleep: false });
  t.is(await runtime.inspect(), 'running');
});

test('a sleep soon after a wake waits out the deployment the scale-up created', async (t) => {
  // The deployment would run a minute (min_healthy_time); it is ended once Nomad has refused the scale.
  const { double, runtime } = await setup(t, {}, { placeOnScale: { runningAfterMs: 10, healthyAfterMs: 10, deployment: true, minHealthyTimeMs: 60_000, checks: ['_nomad-check-abc'] } });
  await runtime.sleep(5000);
  await runtime.wake(5000);
  void (async () => {
    for (let i = 0; i < 1000 && double.refusedScales === 0; i++) await new Promise((r) => setTimeout(r, 5));
    double.endDeployment('web');
  })();
  await runtime.sleep(8000);
  t.true(double.refusedScales >= 1, 'Nomad refused the first scale to 0');
  t.is(double.scaleRequests.length, 3);
  t.is(await runtime.inspect(), 'asleep');
});
