import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DozeError } from '../../agent/shared/errors.js';
import { FirecrackerRuntime, type FirecrackerOptions } from '../../agent/runtimes/firecracker.js';
import { unixRequest } from '../../agent/runtimes/vmm/unix-http.js';
import { SpawnVmmLauncher, socketOwner, type CommandSpec } from '../../agent/runtimes/vmm/vmm-launcher.js';
import { DoubleLauncher } from '../doubles/firecracker/double-launcher.js';
import { FirecrackerDouble, type FirecrackerDoubleOptions } from '../doubles/firecracker/firecracker-double.js';
import { runtimeContract } from './contract.js';

// Against test/doubles/firecracker (no Firecracker binary here): these pin the
// exact request sequence and bodies; a live run is still to be done.

const editor: CommandSpec = { binary: process.execPath, args: ['--import', 'tsx', join(import.meta.dirname, '../doubles/firecracker/snapshot-editor-double.ts')] };

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-fc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function setup(t: ExecutionContext, mode: 'pause' | 'snapshot', options: Partial<FirecrackerOptions> = {}, double: FirecrackerDoubleOptions & { trackDirtyPages?: boolean } = {}) {
  const dir = await tempDir(t);
  const socket = join(dir, 'fc.sock');
  const first = await FirecrackerDouble.booted(socket, double);
  const launcher = new DoubleLauncher(first, double);
  t.teardown(() => launcher.closeAll());
  const make = () => new FirecrackerRuntime({
    socket,
    mode,
    ...(mode === 'snapshot' ? { snapshotDir: join(dir, 'snap'), launcher, snapshotEditor: editor, handleFile: join(dir, 'handle.json') } : {}),
    ...options,
  });
  const runtime = make();
  const bootCalls = first.calls.length;
  const calls = () => launcher.calls.slice(bootCalls);
  return { dir, socket, first, launcher, runtime, make, calls };
}

runtimeContract('firecracker (pause mode)', async (t) => {
  const { runtime, make, launcher, calls } = await setup(t, 'pause');
  return {
    runtime,
    slow: { slowDown: (ms) => (launcher.current!.delayMs = ms), answeredAll: () => launcher.processes.every((p) => p.held === 0) },
    another: make,
    mutations: () => calls().length,
  };
});

runtimeContract('firecracker (snapshot mode)', async (t) => {
  const { runtime, make, launcher, calls } = await setup(t, 'snapshot');
  return {
    runtime,
    slow: {
      slowDown: (ms) => {
        launcher.delayMs = ms;
        if (launcher.current) launcher.current.delayMs = ms;
      },
      answeredAll: () => launcher.processes.every((p) => p.held === 0),
    },
    another: make,
    mutations: () => calls().length,
  };
});

test('pause mode: PATCH /vm Paused and Resumed; the process is kept', async (t) => {
  const { runtime, first, calls } = await setup(t, 'pause');
  t.true((await runtime.probe()).ok);
  await runtime.sleep(2000);
  t.is(first.state, 'Paused');
  await runtime.wake(2000);
  t.deepEqual(calls(), [
    ['PATCH', '/vm', { state: 'Paused' }],
    ['PATCH', '/vm', { state: 'Resumed' }],
  ]);
  t.false(first.exited);
  t.deepEqual(runtime.capabilities, { keepsProcess: true, freesMemory: false });
});

test('snapshot mode: Full first into a stopped process, load into a fresh one with the File backend, then Diff layers merged onto the base', async (t) => {
  const { dir, runtime, launcher, first, calls } = await setup(t, 'snapshot', {}, { trackDirtyPages: true });
  const snap = join(dir, 'snap');
  t.true((await runtime.probe()).ok);
  t.deepEqual(runtime.capabilities, { keepsProcess: false, freesMemory: true, dropsFirstSyn: true });
  first.guestTick();

  await runtime.sleep(5000);
  t.deepEqual(calls(), [
    ['PATCH', '/vm', { state: 'Paused' }],
    ['PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: join(snap, 'vmstate.next'), mem_file_path: join(snap, 'mem.next') }],
  ]);
  t.true(first.exited, 'the process is gone: its memory is free');
  t.true(existsSync(join(snap, 'vmstate')) && existsSync(join(snap, 'mem')));
  t.is(await runtime.inspect(), 'asleep');
  t.like(runtime.handle(), { asleep: true, base: true, pending: null, snapshots: 1 });

  await runtime.wake(5000);
  const load = ['PUT', '/snapshot/load', { snapshot_path: join(snap, 'vmstate'), mem_backend: { backend_type: 'File', backend_path: join(snap, 'mem') }, track_dirty_pages: true, resume_vm: true }];
  t.deepEqual(calls().slice(2), [load]);
  t.is(launcher.processes.length, 2, 'loaded into a fresh process');
  const second = launcher.current!;
  t.is(second.state, 'Running');
  t.is(second.guestTick(), 2, 'guest memory came back');

  await runtime.sleep(5000);
  t.deepEqual(calls().slice(3), [
    ['PATCH', '/vm', { state: 'Paused' }],
    ['PUT', '/snapshot/create', { snapshot_type: 'Diff', snapshot_path: join(snap, 'vmstate.next'), mem_file_path: join(snap, 'mem.diff') }],
  ]);
  t.false(existsSync(join(snap, 'mem.diff')), 'the layer was merged and removed');
  t.deepEqual(launcher.events, ['stop', 'start', 'stop']);

  await runtime.wake(5000);
  t.deepEqual(calls().slice(5), [load]);
  t.is(launcher.current!.guestTick(), 3, 'the page dirtied after the load came back through the merged Diff layer');
  await runtime.sleep(5000);
  await runtime.wake(5000);
  t.is(launcher.current!.guestTick(), 4);
  t.like(runtime.handle(), { asleep: false, snapshots: 3 });
});

test('snapshot mode: a VM booted without dirty page tracking gets a Full snapshot when a Diff is refused', async (t) => {
  const { dir, runtime, calls } = await setup(t, 'snapshot', {}, { trackDirtyPages: false });
  // A handle from an earlier sleep: a base exists, so the runtime tries a Diff first.
  await writeFile(join(dir, 'handle.json'), JSON.stringify({ version: 1, kind: 'firecracker', asleep: false, base: true, pending: null, taken: false, snapshots: 1 }));
  await runtime.sleep(5000);
  const creates = calls().filter(([, path]) => path === '/snapshot/create').map(([, , body]) => (body as { snapshot_type: string }).snapshot_type);
  t.deepEqual(creates, ['Diff', 'Full']);
  t.like(runtime.handle(), { asleep: true, base: true, pending: null });
});

test('snapshot mode with diffSnapshots false: Full every time, no dirty page tracking asked at load', async (t) => {
  const { dir, runtime, calls } = await setup(t, 'snapshot', { diffSnapshots: false, snapshotEditor: undefined });
  t.true((await runtime.probe()).ok, 'no snapshot-editor needed');
  for (let i = 0; i < 2; i++) {
    await runtime.sleep(5000);
    await runtime.wake(5000);
  }
  const creates = calls().filter(([, path]) => path === '/snapshot/create').map(([, , body]) => (body as { snapshot_type: string }).snapshot_type);
  t.deepEqual(creates, ['Full', 'Full']);
  const load = calls().find(([, path]) => path === '/snapshot/load')![2] as Record<string, unknown>;
  t.false('track_dirty_pages' in load);
  t.deepEqual(load.mem_backend, { backend_type: 'File', backend_path: join(dir, 'snap', 'mem') });
});

test('network_overrides point a restored interface at another tap; without it a missing tap fails the load, which ends the process', async (t) => {
  const taps = new Set(['tap0']);
  const { runtime, launcher } = await setup(t, 'snapshot', {}, { taps, trackDirtyPages: true });
  await runtime.sleep(5000);
  taps.delete('tap0');
  const error = await t.throwsAsync<DozeError>(runtime.wake(5000));
  t.is(error?.code, 'E_VMM_HTTP');
  t.regex(error?.message ?? '', /Open tap device failed: tap0/);
  t.true(launcher.current!.exited, 'a failed load ends the Firecracker process');
  t.is(await runtime.inspect(), 'asleep', 'still asleep in its snapshot');

  taps.add('tap9');
  const overridden = new FirecrackerRuntime({ ...runtime.options, networkOverrides: [{ iface_id: 'eth0', host_dev_name: 'tap9' }] });
  await overridden.wake(5000);
  const load = launcher.current!.calls.at(-1)!;
  t.like(load[2] as object, { network_overrides: [{ iface_id: 'eth0', host_dev_name: 'tap9' }] });
  t.deepEqual(launcher.current!.interfaces, [{ iface_id: 'eth0', host_dev_name: 'tap9' }]);
  t.is(launcher.processes.length, 3, 'each load attempt had its own fresh process');
});

test('a merge that failed is finished by the next call, even from a restarted agent', async (t) => {
  const { runtime, launcher } = await setup(t, 'snapshot', { snapshotEditor: { binary: '/nonexistent/snapshot-editor' } }, { trackDirtyPages: true });
  launcher.current!.guestTick();
  await runtime.sleep(5000);
  await runtime.wake(5000);
  launcher.current!.guestTick();
  const error = await t.throwsAsync<DozeError>(runtime.sleep(5000));
  t.is(error?.code, 'E_RUNTIME_HELPER');
  t.like(runtime.handle(), { pending: 'diff', taken: true });
  t.is(await runtime.inspect(), 'asleep', 'the layer is on disk and the process is gone');

  const restarted = new FirecrackerRuntime({ ...runtime.options, snapshotEditor: editor });
  await restarted.wake(5000);
  t.is(launcher.current!.guestTick(), 3, 'the Diff layer was merged before the load');
});

test('a restarted agent wakes a VM asleep in its snapshot', async (t) => {
  const { runtime, launcher } = await setup(t, 'snapshot', {}, { trackDirtyPages: true });
  launcher.current!.guestTick();
  await runtime.sleep(5000);
  const restarted = new FirecrackerRuntime(runtime.options);
  t.true((await restarted.probe()).ok, 'no process, but a snapshot to wake');
  t.is(await restarted.inspect(), 'asleep');
  await t.notThrowsAsync(restarted.sleep(2000), 'pausing it again is a no-op');
  await restarted.wake(5000);
  t.is(launcher.current!.guestTick(), 2);
});

test('probe names what snapshot mode is missing', async (t) => {
  const { runtime } = await setup(t, 'snapshot');
  t.regex((await new FirecrackerRuntime({ ...runtime.options, launcher: undefined }).probe()).reason ?? '', /needs a launcher/);
  t.regex((await new FirecrackerRuntime({ ...runtime.options, snapshotEditor: undefined }).probe()).reason ?? '', /snapshot-editor/);
  t.regex((await new FirecrackerRuntime({ ...runtime.options, snapshotEditor: { binary: '/nonexistent/x' } }).probe()).reason ?? '', /not an executable/);
});

test('a process with no started microVM is refused at probe and at pause', async (t) => {
  const dir = await tempDir(t);
  const fresh = await FirecrackerDouble.start(join(dir, 'fc.sock'));
  t.teardown(() => fresh.exit());
  const runtime = new FirecrackerRuntime({ socket: fresh.socketPath, mode: 'pause' });
  t.regex((await runtime.probe()).reason ?? '', /has not started a microVM/);
  t.is((await t.throwsAsync<DozeError>(runtime.sleep(1000)))?.code, 'E_VMM_STATE');
  t.deepEqual(fresh.calls, [], 'nothing was sent that Firecracker would refuse');
});

test('SpawnVmmLauncher: a real child process per start, stopped by pid; a full sleep and wake through it', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const socket = join(dir, 'fc.sock');
  const launcher = new SpawnVmmLauncher({ binary: process.execPath, args: ['--import', 'tsx', join(import.meta.dirname, '../doubles/firecracker/firecracker-double-main.ts')] });
  t.teardown(() => launcher.stop(socket, 5000).catch(() => undefined));
  await writeFile(socket, ''); // a stale socket file from a killed process must not block the start
  await launcher.start(socket, 20_000);
  const pid = await socketOwner(socket);
  t.truthy(pid, 'the listener is found through /proc/net/unix');
  t.not(pid, process.pid);
  // Boot it the way a user's launcher would.
  for (const [method, path, body] of [
    ['PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128, track_dirty_pages: true }],
    ['PUT', '/boot-source', { kernel_image_path: '/images/vmlinux' }],
    ['PUT', '/actions', { action_type: 'InstanceStart' }],
  ] as const) {
    t.is((await unixRequest(socket, method, path, body, 5000)).status, 204, path);
  }
  const runtime = new FirecrackerRuntime({ socket, mode: 'snapshot', snapshotDir: join(dir, 'snap'), launcher, diffSnapshots: false, handleFile: join(dir, 'handle.json') });
  t.true((await runtime.probe()).ok);
  await runtime.sleep(10_000);
  t.false(existsSync(socket), 'the old process is gone with its socket');
  t.throws(() => process.kill(pid!, 0), undefined, 'the old process exited');
  await runtime.wake(20_000);
  const info = JSON.parse((await unixRequest(socket, 'GET', '/', undefined, 2000)).text) as { state: string };
  t.is(info.state, 'Running');
  const newPid = await socketOwner(socket);
  t.truthy(newPid);
  t.not(newPid, pid, 'woken in a fresh process');
  t.like(JSON.parse(await readFile(join(dir, 'handle.json'), 'utf8')), { asleep: false, base: true });
});
