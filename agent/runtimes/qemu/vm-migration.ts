import { createWriteStream } from 'node:fs';
import { open, rename, rm, statfs } from 'node:fs/promises';
import { createServer } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { RuntimeError } from '../../shared/errors.js';
import { POLL_MS, QMP_MS, type QemuProcess } from './qemu-process.js';
import type { QmpClient } from './qmp-client.js';
import { shellQuote, type SnapshotKind, type VmLayout } from './vm-command-line.js';

/*
 * A snapshot saved and restored as a QEMU migration over QMP (QEMU 7.2 has no
 * `file:` URI): out through `exec:cat > file` (or, for full snapshots, a socket
 * of the owner's), back in through `-incoming defer` + `migrate-incoming exec:cat file`.
 */

/** Device state is a few hundred KiB: never let the default 32 MiB/s bandwidth limit pace it. */
const MIGRATE_BANDWIDTH = 100 * 2 ** 30;
/** Less room than this (or than the last device state) in the state directory is named in a failed sleep's reason. */
const MIN_STATE_ROOM = 2 ** 20;

const migrateInfoSchema = z.looseObject({ status: z.string().optional(), 'error-desc': z.string().optional() });
const statusSchema = z.looseObject({ status: z.string() });

/**
 * Writes the stopped VM's snapshot to `part`: device state only (`x-ignore-shared`: guest
 * RAM stays in its shared file) or, for a full snapshot, everything. Resolves once QEMU
 * reports the migration complete.
 */
export async function saveSnapshot(proc: QemuProcess, layout: VmLayout, snapshot: SnapshotKind, part: string): Promise<void> {
  const qmp = proc.qmp!;
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: snapshot === 'device' }] }, QMP_MS);
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': MIGRATE_BANDWIDTH }, QMP_MS);
  await rm(part, { force: true });
  if (snapshot === 'full') {
    await migrateThroughOwner(proc, layout.migrateSocket, part);
  } else {
    await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(part)}` }, QMP_MS);
    await migrationDone(proc);
  }
}

/** Undoes a save that failed half way: the migration is cancelled and the VM runs again (never left half asleep). */
export async function resumeAfterFailedSave(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate_cancel', undefined, QMP_MS).catch(() => undefined);
  await qmp.execute('cont', undefined, QMP_MS).catch(() => undefined);
}

/**
 * Why a device-state write failed, beyond QEMU's "Broken pipe": what the writer
 * (`cat`) said on stderr, e.g. "No space left on device", and the state
 * directory's free space when it is short. The partial file is removed.
 */
export async function saveFailureDetail(proc: QemuProcess, stderrMark: number, stateDir: string, part: string, lastStateBytes: number): Promise<string> {
  await delay(20); // the writer's message on QEMU's stderr may trail the QMP answer
  const details: string[] = [];
  const said = proc.stderrSince(stderrMark).split('\n').map((l) => l.trim()).filter(Boolean).slice(-3).join('; ');
  if (said) details.push(said.slice(-300));
  const fs = await statfs(stateDir).catch(() => undefined);
  if (fs) {
    const free = fs.bavail * fs.bsize;
    if (free < Math.max(lastStateBytes, MIN_STATE_ROOM)) details.push(`the state directory ${stateDir} has ${Math.floor(free / 1024)} KiB free`);
  }
  await rm(part, { force: true }).catch(() => undefined);
  return details.length > 0 ? ` (${details.join('; ')})` : '';
}

/** Makes a written snapshot durable and current (data synced, renamed, directory synced); returns its size in bytes. */
export async function commitSnapshot(part: string, layout: VmLayout): Promise<number> {
  const fh = await open(part, 'r');
  let bytes: number;
  try {
    await fh.datasync();
    bytes = (await fh.stat()).size;
  } finally {
    await fh.close();
  }
  await rename(part, layout.deviceState);
  const dir = await open(layout.stateDir, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return bytes;
}

/** Connects to a receiving QEMU (`-incoming defer`) and sets it up to load this VM's kind of snapshot. */
export async function prepareReceiver(proc: QemuProcess, qmpPath: string, snapshot: SnapshotKind, deadlineMs: number): Promise<void> {
  const qmp = await proc.connect(qmpPath, deadlineMs);
  if (snapshot === 'device') await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }, QMP_MS);
}

/** Starts loading the saved snapshot into a prepared receiver. */
export async function startIncoming(qmp: QmpClient, deviceState: string): Promise<void> {
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(deviceState)}` }, QMP_MS);
}

/** Waits until the receiving QEMU has loaded the device state; returns its run state. */
export async function incomingDone(proc: QemuProcess): Promise<string> {
  for (;;) {
    if (!proc.alive) throw new RuntimeError('E_QEMU_EXITED', proc.describeExit());
    const { status } = statusSchema.parse(await proc.qmp!.execute('query-status', undefined, QMP_MS));
    if (status !== 'inmigrate') {
      if (status === 'paused' || status === 'postmigrate' || status === 'running') return status;
      throw new RuntimeError('E_MIGRATE', `the restored VM is in state ${status}`);
    }
    await delay(POLL_MS);
  }
}

/**
 * A full snapshot: guest RAM is most of the stream, and a file QEMU (or a `cat` it
 * starts) writes has its page cache charged to the VM's cgroup. So QEMU streams to a
 * socket of the owner's, which writes the file from outside that cgroup.
 */
async function migrateThroughOwner(proc: QemuProcess, migrateSocket: string, part: string): Promise<void> {
  await rm(migrateSocket, { force: true });
  let written: Promise<void> | undefined;
  const server = createServer({ allowHalfOpen: false }, (socket) => {
    if (written) return void socket.destroy(); // one stream per sleep
    const file = createWriteStream(part, { mode: 0o600 });
    written = pipeline(socket, file);
    // Awaited below once the migration completes; a failure before then must not go unhandled.
    written.catch(() => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(migrateSocket, () => resolve());
  });
  try {
    await proc.qmp!.execute('migrate', { uri: `unix:${migrateSocket}` }, QMP_MS);
    await migrationDone(proc);
    if (!written) throw new RuntimeError('E_MIGRATE', 'QEMU reported the migration complete but never connected to the owner');
    await written;
  } finally {
    server.close();
    await rm(migrateSocket, { force: true });
  }
}

/** Waits for the outgoing migration to finish; rejects when it fails or QEMU dies. */
async function migrationDone(proc: QemuProcess): Promise<void> {
  for (;;) {
    if (!proc.alive) throw new RuntimeError('E_QEMU_EXITED', proc.describeExit());
    const info = migrateInfoSchema.parse(await proc.qmp!.execute('query-migrate', undefined, QMP_MS));
    if (info.status === 'completed') return;
    if (info.status === 'failed' || info.status === 'cancelled') throw new RuntimeError('E_MIGRATE', `migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
    await delay(POLL_MS);
  }
}
