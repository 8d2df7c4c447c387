import test from 'ava';
import { createServer } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeadlineError } from '../../agent/shared/errors.js';
import { QmpClient, QmpError, type QmpEvent } from '../../agent/runtimes/qemu/qmp-client.js';
import { QmpSession } from '../../agent/runtimes/qemu/qmp-session.js';
import { QemuPauseRuntime, observedFromQemuStatus } from '../../agent/runtimes/qemu/qemu-pause.js';
import { QmpDouble } from '../doubles/qmp/qmp-double.js';

test('connects, negotiates capabilities first, and matches answers to commands by id', async (t) => {
  const qmp = await QmpDouble.start(t);
  const client = await QmpClient.connect(qmp.path, 1000);
  t.teardown(() => client.close());
  t.deepEqual(client.version, { major: 7, minor: 2, micro: 0 });
  const [a, b] = await Promise.all([client.execute('query-status', undefined, 1000), client.execute('stop', undefined, 1000)]);
  t.like(a, { status: 'running' });
  t.deepEqual(b, {});
  t.is(qmp.commands[0]!.execute, 'qmp_capabilities');
  t.deepEqual(qmp.commands.slice(1).map((c) => c.execute), ['query-status', 'stop']);
  const ids = qmp.commands.map((c) => c.id);
  t.is(new Set(ids).size, ids.length, 'every command has its own id');
});

test('a QEMU error becomes a QmpError with its class', async (t) => {
  const qmp = await QmpDouble.start(t);
  const client = await QmpClient.connect(qmp.path, 1000);
  t.teardown(() => client.close());
  const error = await t.throwsAsync(client.execute('no-such-command', undefined, 1000), { instanceOf: QmpError });
  t.is(error.code, 'E_QMP_COMMAND');
  t.is(error.errorClass, 'CommandNotFound');
  t.regex(error.message, /no-such-command/);
});

test('a command without an answer fails at its deadline; a late answer is dropped and the connection stays usable', async (t) => {
  const qmp = await QmpDouble.start(t);
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  qmp.handlers.set('slow', async () => {
    await released;
    return { return: 'late' };
  });
  const client = await QmpClient.connect(qmp.path, 1000);
  t.teardown(() => client.close());
  const started = performance.now();
  await t.throwsAsync(client.execute('slow', undefined, 100), { instanceOf: DeadlineError });
  t.true(performance.now() - started < 500);
  release();
  t.like(await client.execute('query-status', undefined, 1000), { status: 'running' });
});

test('events arrive as they come', async (t) => {
  const qmp = await QmpDouble.start(t);
  const client = await QmpClient.connect(qmp.path, 1000);
  t.teardown(() => client.close());
  const events: QmpEvent[] = [];
  client.on('event', (e) => events.push(e));
  await client.execute('stop', undefined, 1000);
  await client.execute('cont', undefined, 1000);
  t.deepEqual(events.map((e) => e.event), ['STOP', 'RESUME']);
  t.true(Math.abs(events[0]!.atMs - Date.now()) < 5000);
});

test('a hang-up rejects the command in flight; the session reconnects for the next one', async (t) => {
  const qmp = await QmpDouble.start(t);
  const session = new QmpSession(qmp.path);
  t.teardown(() => session.close());
  t.like(await session.execute('query-status', undefined, 1000), { status: 'running' });
  qmp.handlers.set('stop', () => 'hangup');
  const client = await session.connection(1000);
  const error = await t.throwsAsync(client.execute('stop', undefined, 1000), { instanceOf: QmpError });
  t.is(error.code, 'E_QMP_CLOSED');
  qmp.handlers.delete('stop');
  t.deepEqual(await session.execute('stop', undefined, 1000), {});
  t.is(qmp.connections.length, 2, 'one reconnect');
  // A connection that died unnoticed is reopened once, transparently.
  qmp.hangUp();
  t.deepEqual(await session.execute('cont', undefined, 1000), {});
  t.is(qmp.connections.length, 3);
});

test('a second client gets no greeting while another holds the monitor: connect fails at its deadline', async (t) => {
  const qmp = await QmpDouble.start(t);
  const first = await QmpClient.connect(qmp.path, 1000);
  t.teardown(() => first.close());
  const error = await t.throwsAsync(QmpClient.connect(qmp.path, 200), { instanceOf: DeadlineError });
  t.regex(error.message, /another client/);
});

test('a missing socket and a socket that does not speak QMP are named', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dz-qmp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const missing = await t.throwsAsync(QmpClient.connect(join(dir, 'nope.sock'), 500), { instanceOf: QmpError });
  t.is(missing.code, 'E_QMP_CONNECT');
  t.regex(missing.message, /ENOENT/);
  // The human monitor (what Nomad's qemu driver opens) greets in text.
  const hmp = createServer((s) => s.end('QEMU 7.2.0 monitor - type \'help\' for more information\r\n(qemu) '));
  const path = join(dir, 'hmp.sock');
  await new Promise<void>((resolve) => hmp.listen(path, resolve));
  t.teardown(() => new Promise<void>((resolve) => hmp.close(() => resolve())));
  const wrong = await t.throwsAsync(QmpClient.connect(path, 500), { instanceOf: QmpError });
  t.is(wrong.code, 'E_QMP_PROTOCOL');
});

test('QEMU run states map onto what doze observes', (t) => {
  t.is(observedFromQemuStatus('running'), 'running');
  for (const s of ['paused', 'suspended', 'prelaunch', 'postmigrate', 'inmigrate']) t.is(observedFromQemuStatus(s), 'asleep', s);
  for (const s of ['finish-migrate', 'save-vm', 'restore-vm']) t.is(observedFromQemuStatus(s), 'transitioning', s);
  for (const s of ['shutdown', 'internal-error', 'io-error', 'guest-panicked']) t.is(observedFromQemuStatus(s), 'gone', s);
});

test('pause mode: stop and cont are idempotent, inspect follows QEMU, one connection throughout', async (t) => {
  const qmp = await QmpDouble.start(t);
  const runtime = new QemuPauseRuntime({ qmp: qmp.path, reclaim: false });
  t.teardown(() => runtime.close());
  t.deepEqual(await runtime.probe(), { ok: true });
  t.deepEqual(runtime.capabilities, { keepsProcess: true, freesMemory: false });
  await runtime.sleep(1000);
  await runtime.sleep(1000);
  t.is(await runtime.inspect(), 'asleep');
  await runtime.wake(1000);
  await runtime.wake(1000);
  t.is(await runtime.inspect(), 'running');
  t.is(qmp.connections.length, 1);
  qmp.status = 'shutdown';
  t.is(await runtime.inspect(), 'gone');
  t.false((await runtime.probe()).ok);
});

test('reclaim is refused at probe without a shared RAM file on disk or the page-out helper, each with the fix', async (t) => {
  const qmp = await QmpDouble.start(t);
  const dir = await mkdtemp(join(tmpdir(), 'dz-cg-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'memory.usage_in_bytes'), '0\n'); // what a v1 memory cgroup directory offers
  const helper = join(dir, 'doze-pageout');
  await writeFile(helper, '#!/bin/sh\n', { mode: 0o755 });
  const probe = async (options: { memoryCgroup?: string; pageoutHelper?: string } = {}) => {
    const runtime = new QemuPauseRuntime({ qmp: qmp.path, reclaim: true, pageoutHelper: helper, ...options });
    try {
      return await runtime.probe();
    } finally {
      await runtime.close();
    }
  };
  t.regex((await probe({ memoryCgroup: join(dir, 'missing') })).reason ?? '', /memory cgroup .* not found/);
  t.regex((await probe({ pageoutHelper: join(dir, 'none') })).reason ?? '', /doze-pageout helper .* \(built by make build\)/);
  qmp.handlers.set('query-memdev', () => ({ return: [] }));
  t.regex((await probe()).reason ?? '', /not a shared file-backed memory backend: start QEMU with -object memory-backend-file/);
  const memdev = { id: 'ram0', size: 1 << 28, merge: true, dump: true, prealloc: false, policy: 'default', 'host-nodes': [] };
  qmp.handlers.set('query-memdev', () => ({ return: [{ ...memdev, share: false }] }));
  t.regex((await probe()).reason ?? '', /not a shared file-backed/);
  qmp.handlers.set('query-memdev', () => ({ return: [{ ...memdev, share: true }] }));
  qmp.handlers.set('qom-get', () => ({ return: '/dev/shm' }));
  t.regex((await probe()).reason ?? '', /on tmpfs: reclaim would free nothing/);
  const ramFile = join(dir, 'ram');
  await writeFile(ramFile, '');
  qmp.handlers.set('qom-get', (c) => (c.arguments?.path === '/objects/ram0' && c.arguments.property === 'mem-path' ? { return: ramFile } : { error: { class: 'GenericError', desc: 'no' } }));
  t.deepEqual(await probe({ memoryCgroup: dir }), { ok: true });
});
