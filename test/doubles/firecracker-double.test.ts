import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unixRequest } from '../../agent/runtimes/vmm/unix-http.js';
import { FirecrackerDouble } from './firecracker/firecracker-double.js';
import { until } from '../helpers/until.js';

// The double must refuse what Firecracker refuses, or the runtime tests prove nothing.

async function dir(t: ExecutionContext): Promise<string> {
  const path = await mkdtemp(join(tmpdir(), 'dz-fcd-'));
  t.teardown(() => rm(path, { recursive: true, force: true }));
  return path;
}

async function booted(t: ExecutionContext, options: { trackDirtyPages?: boolean } = {}) {
  const d = await dir(t);
  const double = await FirecrackerDouble.booted(join(d, 'fc.sock'), options);
  t.teardown(() => double.exit());
  return { d, double, call: (method: string, path: string, body?: unknown) => unixRequest(double.socketPath, method, path, body, 2000) };
}

const fault = (text: string) => (JSON.parse(text) as { fault_message: string }).fault_message;

test('snapshot/create while running is refused (400, "save/restore unavailable while running")', async (t) => {
  const { d, call } = await booted(t);
  const answer = await call('PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: join(d, 's'), mem_file_path: join(d, 'm') });
  t.is(answer.status, 400);
  t.regex(fault(answer.text), /save\/restore unavailable while running/);
  t.false(existsSync(join(d, 's')));
});

test('a Diff without dirty page tracking is refused; PATCH /vm twice is accepted', async (t) => {
  const { d, call } = await booted(t);
  t.is((await call('PATCH', '/vm', { state: 'Paused' })).status, 204);
  t.is((await call('PATCH', '/vm', { state: 'Paused' })).status, 204, 'successive calls are ignored');
  const answer = await call('PUT', '/snapshot/create', { snapshot_type: 'Diff', snapshot_path: join(d, 's'), mem_file_path: join(d, 'm') });
  t.is(answer.status, 400);
  t.is(fault(answer.text), 'Diff snapshots are not allowed on uVMs with dirty page tracking disabled.');
});

test('snapshot/load into a process that already has a VM is refused; so is load after configuring boot resources', async (t) => {
  const { d, call } = await booted(t);
  const load = { snapshot_path: join(d, 's'), mem_backend: { backend_type: 'File', backend_path: join(d, 'm') } };
  const answer = await call('PUT', '/snapshot/load', load);
  t.is(answer.status, 400);
  t.is(fault(answer.text), 'The requested operation is not supported after starting the microVM.');

  const fresh = await FirecrackerDouble.start(join(d, 'fresh.sock'));
  t.teardown(() => fresh.exit());
  t.is((await unixRequest(fresh.socketPath, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128 }, 2000)).status, 204);
  const configured = await unixRequest(fresh.socketPath, 'PUT', '/snapshot/load', load, 2000);
  t.is(configured.status, 400);
  t.is(fault(configured.text), 'Loading a microVM snapshot not allowed after configuring boot-specific resources.');
});

test('PATCH /vm before boot is refused; load needs exactly one of mem_backend and mem_file_path', async (t) => {
  const d = await dir(t);
  const fresh = await FirecrackerDouble.start(join(d, 'fc.sock'));
  t.teardown(() => fresh.exit());
  const call = (method: string, path: string, body?: unknown) => unixRequest(fresh.socketPath, method, path, body, 2000);
  const patch = await call('PATCH', '/vm', { state: 'Paused' });
  t.is(patch.status, 400);
  t.is(fault(patch.text), 'The requested operation is not supported before starting the microVM.');
  t.is((await call('PUT', '/snapshot/load', { snapshot_path: '/x' })).status, 400);
  t.is((await call('PUT', '/snapshot/load', { snapshot_path: '/x', mem_file_path: '/m', mem_backend: { backend_type: 'File', backend_path: '/m' } })).status, 400);
  t.false(fresh.exited, 'a malformed request does not end the process');
});

test('loading an unmerged Diff layer fails and ends the process (the double is stricter than Firecracker here)', async (t) => {
  const { d, double, call } = await booted(t, { trackDirtyPages: true });
  await call('PATCH', '/vm', { state: 'Paused' });
  t.is((await call('PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: join(d, 'vmstate'), mem_file_path: join(d, 'mem') })).status, 204);
  await call('PATCH', '/vm', { state: 'Resumed' });
  double.guestTick();
  await call('PATCH', '/vm', { state: 'Paused' });
  t.is((await call('PUT', '/snapshot/create', { snapshot_type: 'Diff', snapshot_path: join(d, 'vmstate.diff'), mem_file_path: join(d, 'mem.diff') })).status, 204);

  const fresh = await FirecrackerDouble.start(join(d, 'fresh.sock'));
  t.teardown(() => fresh.exit());
  const answer = await unixRequest(fresh.socketPath, 'PUT', '/snapshot/load', { snapshot_path: join(d, 'vmstate.diff'), mem_backend: { backend_type: 'File', backend_path: join(d, 'mem.diff') } }, 2000);
  t.is(answer.status, 400);
  t.regex(fault(answer.text), /Diff layer/);
  // It exits right after answering (setImmediate), as Firecracker does after a failed load.
  t.true(await until('the double to exit', () => fresh.exited, 1000));

  const mismatched = await FirecrackerDouble.start(join(d, 'other.sock'));
  t.teardown(() => mismatched.exit());
  const stale = await unixRequest(mismatched.socketPath, 'PUT', '/snapshot/load', { snapshot_path: join(d, 'vmstate.diff'), mem_backend: { backend_type: 'File', backend_path: join(d, 'mem') } }, 2000);
  t.regex(fault(stale.text), /does not belong with memory/, 'the state file of one snapshot with the memory of another is refused');
});

test('a loaded VM stays Paused without resume_vm', async (t) => {
  const { d, call } = await booted(t);
  await call('PATCH', '/vm', { state: 'Paused' });
  await call('PUT', '/snapshot/create', { snapshot_path: join(d, 'vmstate'), mem_file_path: join(d, 'mem') });
  const fresh = await FirecrackerDouble.start(join(d, 'fresh.sock'));
  t.teardown(() => fresh.exit());
  t.is((await unixRequest(fresh.socketPath, 'PUT', '/snapshot/load', { snapshot_path: join(d, 'vmstate'), mem_file_path: join(d, 'mem') }, 2000)).status, 204, 'the deprecated mem_file_path still loads');
  t.is(fresh.state, 'Paused');
});
