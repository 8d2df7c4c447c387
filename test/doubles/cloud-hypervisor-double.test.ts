import test from 'ava';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { unixRequest } from '../../agent/runtimes/vmm/unix-http.js';
import { CloudHypervisorDouble } from './cloud-hypervisor/cloud-hypervisor-double.js';

// The double must refuse what Cloud Hypervisor refuses, or the runtime tests prove nothing.

const call = (double: CloudHypervisorDouble, method: string, endpoint: string, body?: unknown) => unixRequest(double.socketPath, method, `/api/v1/${endpoint}`, body, 2000);

test('snapshot of a running VM is refused (500), as vm.rs refuses it', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  const dir = join(double.dir, 's');
  await mkdir(dir);
  const answer = await call(double, 'PUT', 'vm.snapshot', { destination_url: `file://${dir}` });
  t.is(answer.status, 500);
  t.regex(answer.text, /snapshot while VM is running/);
});

test('a second pause and a resume of a running VM are invalid transitions (500)', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  t.is((await call(double, 'PUT', 'vm.resume')).status, 500);
  t.is((await call(double, 'PUT', 'vm.pause')).status, 204);
  const again = await call(double, 'PUT', 'vm.pause');
  t.is(again.status, 500);
  t.true(Array.isArray(JSON.parse(again.text)), 'errors are a JSON array of messages');
});

test('vm.pause with a body is a bad request (its handler takes none)', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  t.is((await call(double, 'PUT', 'vm.pause', {})).status, 400);
  t.is(double.state, 'Running');
});

test('restore into a VMM that already has a VM is refused; with no VM, vm.info is 404', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  t.is((await call(double, 'PUT', 'vm.restore', { source_url: `file://${double.dir}`, prefault: false })).status, 500);
  await double.restartProcess();
  t.is((await call(double, 'GET', 'vm.info')).status, 404);
  t.is((await call(double, 'PUT', 'vm.pause')).status, 404);
  t.is((await call(double, 'PUT', 'vm.restore', { source_url: `file://${double.dir}/missing`, prefault: false })).status, 500);
});

test('snapshot into a directory that does not exist fails; unknown routes are 404', async (t) => {
  const double = await CloudHypervisorDouble.start(t);
  await call(double, 'PUT', 'vm.pause');
  t.is((await call(double, 'PUT', 'vm.snapshot', { destination_url: `file://${double.dir}/absent` })).status, 500);
  t.is((await call(double, 'GET', 'vm.nothing')).status, 404);
  t.is((await unixRequest(double.socketPath, 'GET', '/vm.info', undefined, 2000)).status, 404, 'routes live under /api/v1');
});
