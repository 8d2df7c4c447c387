import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DozeError } from '../../agent/shared/errors.js';
import { CloudHypervisorRuntime } from '../../agent/runtimes/cloud-hypervisor.js';
import { CloudHypervisorDouble } from '../doubles/cloud-hypervisor/cloud-hypervisor-double.js';
import { runtimeContract, type SlowControl } from './contract.js';

// Against test/doubles/cloud-hypervisor (no Cloud Hypervisor binary here): these
// pin the exact API sequence and bodies; a live run is still to be done.

const mutations = (double: CloudHypervisorDouble) => double.requests.filter((r) => r.method !== 'GET').length;
const slowControl = (double: CloudHypervisorDouble): SlowControl => ({ slowDown: (ms) => (double.delayMs = ms), answeredAll: () => double.held === 0 });

runtimeContract('cloud-hypervisor (pause only)', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const make = () => new CloudHypervisorRuntime({ socket: double.socketPath });
  return { runtime: make(), slow: slowControl(double), another: make, mutations: () => mutations(double) };
});

runtimeContract('cloud-hypervisor (pause + snapshot)', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const make = () => new CloudHypervisorRuntime({ socket: double.socketPath, snapshotDir: join(double.dir, 'snap'), handleFile: join(double.dir, 'handle.json') });
  return { runtime: make(), slow: slowControl(double), another: make, mutations: () => mutations(double) };
});

test('pause without a snapshot directory: vm.info, then vm.pause with no body', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const runtime = new CloudHypervisorRuntime({ socket: double.socketPath });
  await runtime.sleep(2000);
  t.deepEqual(
    double.requests.map((r) => [r.method, r.path, r.body, r.status]),
    [
      ['GET', '/api/v1/vm.info', undefined, 200],
      ['PUT', '/api/v1/vm.pause', undefined, 204],
    ],
  );
  t.is(double.state, 'Paused');
  t.false(runtime.capabilities.freesMemory, 'the VMM keeps guest memory');
});

test('pause with a snapshot directory: vm.pause, then vm.snapshot of the paused VM into pending, swapped to current', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const snap = join(double.dir, 'snap');
  const runtime = new CloudHypervisorRuntime({ socket: double.socketPath, snapshotDir: snap, handleFile: join(double.dir, 'handle.json') });
  t.true((await runtime.probe()).ok);
  double.guestTick();
  await runtime.sleep(2000);
  t.deepEqual(double.calls, ['PUT /api/v1/vm.pause', 'PUT /api/v1/vm.snapshot']);
  t.deepEqual(double.requests.find((r) => r.path === '/api/v1/vm.snapshot')?.body, { destination_url: `file://${snap}/pending` });
  for (const file of ['config.json', 'state.json', 'memory-ranges']) t.true(existsSync(join(snap, 'current', file)), file);
  t.false(existsSync(join(snap, 'pending')));
  t.deepEqual(JSON.parse(await readFile(join(double.dir, 'handle.json'), 'utf8')), { version: 1, kind: 'cloud-hypervisor', asleep: true, snapshot: true });
  await runtime.wake(2000);
  t.deepEqual(double.calls, ['PUT /api/v1/vm.pause', 'PUT /api/v1/vm.snapshot', 'PUT /api/v1/vm.resume']);
  t.like(runtime.handle(), { asleep: false, snapshot: true });
});

test('a VMM that restarted while the VM slept: vm.restore with prefault false, then vm.resume; guest memory continues', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const snap = join(double.dir, 'snap');
  const runtime = new CloudHypervisorRuntime({ socket: double.socketPath, snapshotDir: snap, handleFile: join(double.dir, 'handle.json') });
  double.guestTick();
  double.guestTick();
  await runtime.sleep(2000);
  await double.restartProcess();
  t.is(double.state, undefined, 'the fresh VMM has no VM');
  t.is(await runtime.inspect(), 'asleep', 'still asleep, in its snapshot');
  await t.notThrowsAsync(runtime.sleep(2000), 'pausing it again is a no-op');
  double.requests.length = 0;
  await runtime.wake(2000);
  t.deepEqual(
    double.requests.map((r) => [r.method, r.path, r.body, r.status]),
    [
      ['GET', '/api/v1/vm.info', undefined, 404],
      ['PUT', '/api/v1/vm.restore', { source_url: `file://${snap}/current`, prefault: false }, 204],
      ['PUT', '/api/v1/vm.resume', undefined, 204],
    ],
  );
  t.is(double.state, 'Running');
  t.is(double.guestTick(), 3, 'the counter kept in guest memory continues');
});

test('a restarted agent restores from its handle file', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const options = { socket: double.socketPath, snapshotDir: join(double.dir, 'snap'), handleFile: join(double.dir, 'handle.json') };
  double.guestTick();
  await new CloudHypervisorRuntime(options).sleep(2000);
  await double.restartProcess();
  const fresh = new CloudHypervisorRuntime(options);
  t.true((await fresh.probe()).ok, 'a VMM with no VM but a snapshot to restore is manageable');
  t.is(await fresh.inspect(), 'asleep');
  await fresh.wake(2000);
  t.is(double.guestTick(), 2);
});

test('a VMM that restarted while the VM ran is not rolled back to an old snapshot', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const runtime = new CloudHypervisorRuntime({ socket: double.socketPath, snapshotDir: join(double.dir, 'snap'), handleFile: join(double.dir, 'handle.json') });
  await runtime.sleep(2000);
  await runtime.wake(2000);
  await double.restartProcess();
  t.is(await runtime.inspect(), 'gone');
  const error = await t.throwsAsync<DozeError>(runtime.wake(2000));
  t.is(error?.code, 'E_VMM_STATE');
  t.false(double.calls.includes('PUT /api/v1/vm.restore'));
});

test('a failed snapshot surfaces Cloud Hypervisor\'s messages and leaves the VM paused; a retry snapshots it', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const runtime = new CloudHypervisorRuntime({ socket: double.socketPath, snapshotDir: join(double.dir, 'snap') });
  double.snapshotError = 'No space left on device (os error 28)';
  const error = await t.throwsAsync<DozeError>(runtime.sleep(2000));
  t.is(error?.code, 'E_VMM_HTTP');
  t.regex(error?.message ?? '', /HTTP 500: Error from API: The VM could not be snapshotted: No space left on device/);
  t.is(double.state, 'Paused');
  t.false(runtime.handle().asleep === true, 'not asleep until the snapshot exists');
  double.snapshotError = undefined;
  await runtime.sleep(2000);
  t.deepEqual(double.calls, ['PUT /api/v1/vm.pause', 'PUT /api/v1/vm.snapshot', 'PUT /api/v1/vm.snapshot'], 'the retry snapshots without pausing again');
  t.true(existsSync(join(double.dir, 'snap', 'current', 'memory-ranges')));
});

test('a snapshot directory that cannot be made is an E_RUNTIME_IO naming it', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const runtime = new CloudHypervisorRuntime({ socket: double.socketPath, snapshotDir: join(double.dir, 'ch.sock') });
  const error = await t.throwsAsync<DozeError>(runtime.sleep(2000));
  t.is(error?.code, 'E_RUNTIME_IO');
  t.regex(error?.message ?? '', /ch\.sock\/pending: ENOTDIR/);
});

test('probe explains a missing socket; inspect calls it gone', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const runtime = new CloudHypervisorRuntime({ socket: join(double.dir, 'nothing.sock') });
  const probe = await runtime.probe();
  t.false(probe.ok);
  t.regex(probe.reason ?? '', /does not answer: .*ENOENT/);
  t.is(await runtime.inspect(), 'gone');
  const error = await t.throwsAsync<DozeError>(runtime.sleep(500));
  t.is(error?.code, 'E_VMM_UNREACHABLE');
});

test('probe refuses a VMM without a VM and without a snapshot', async (t) => {
  const double = await CloudHypervisorDouble.start(t, { vm: null });
  const probe = await new CloudHypervisorRuntime({ socket: double.socketPath }).probe();
  t.false(probe.ok);
  t.regex(probe.reason ?? '', /has no VM/);
});
