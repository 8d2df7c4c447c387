import { readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { killAndWait, processesMentioning } from '../../process/die-with-parent.js';
import { OwnerClient, type OwnerState } from './owner-protocol.js';
import { ownedFiles, type SnapshotKind, type VmLayout } from './vm-command-line.js';

/** The versioned handle (`<state dir>/vm.json`) a restarted agent or owner reads to find (and wake) what was put to sleep. */
export interface VmHandle {
  version: 1;
  /** The owner process. */
  pid: number;
  stateDir: string;
  control: string;
  qmp: string;
  ramFile: string;
  deviceState: string;
  /** The full QEMU command line (without `-incoming`, which a wake adds). */
  commandLine: string[];
  state: string;
  qemuPid: number | null;
  updatedAt: string;
}

/** What a new owner needs of a handle it finds; the rest may come from an older or newer owner. */
const previousHandleSchema = z.looseObject({
  version: z.literal(1),
  pid: z.number(),
  state: z.string(),
  commandLine: z.array(z.string()),
});

/** Writes this owner's handle atomically (temporary file + rename): a crash leaves the old one or the new one. */
export async function writeVmHandle(layout: VmLayout, now: { commandLine: string[]; state: OwnerState; qemuPid: number | null }): Promise<void> {
  const handle: VmHandle = {
    version: 1,
    pid: process.pid,
    stateDir: layout.stateDir,
    control: layout.control,
    qmp: layout.qmp,
    ramFile: layout.ramFile,
    deviceState: layout.deviceState,
    commandLine: now.commandLine,
    state: now.state,
    qemuPid: now.qemuPid,
    updatedAt: new Date().toISOString(),
  };
  const tmp = `${layout.handle}.tmp`;
  await writeFile(tmp, `${JSON.stringify(handle, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, layout.handle);
}

/** Removes every file an owner creates in the state directory. */
export async function removeOwnedFiles(layout: VmLayout): Promise<void> {
  await Promise.all(ownedFiles(layout).map((file) => rm(file, { force: true })));
}

/** Removes the owner's files and then the state directory when that leaves it empty (a directory holding other files stays). */
export async function removeStateDir(layout: VmLayout): Promise<void> {
  await removeOwnedFiles(layout);
  await rmdir(layout.stateDir).catch(() => undefined);
}

export interface ThisVm {
  /** The full QEMU command line this owner runs. */
  argv: string[];
  snapshot: SnapshotKind;
  /** Bytes of guest RAM (the RAM file's size). */
  ramBytes: number;
  log: Logger;
}

/**
 * Reads the handle a previous owner left. Refuses to run beside a live owner of
 * the same directory; returns true when its snapshot can be restored (asleep,
 * same command line, files present); otherwise clears its leftovers.
 */
export async function adoptPreviousOwner(layout: VmLayout, vm: ThisVm): Promise<boolean> {
  let raw: string;
  try {
    raw = await readFile(layout.handle, 'utf8');
  } catch {
    await killLeftoverQemus(layout, vm.log);
    await removeOwnedFiles(layout);
    return false;
  }
  const handle = previousHandleSchema.safeParse((() => { try { return JSON.parse(raw) as unknown; } catch { return undefined; } })());
  if (handle.success && handle.data.pid !== process.pid && (await ownerAnswers(layout))) {
    throw new ConfigError(`another doze vm (pid ${handle.data.pid}) owns ${layout.stateDir}`);
  }
  // No owner is alive here: a QEMU still running on this directory is a leftover (it may be mid-save).
  await killLeftoverQemus(layout, vm.log);
  const sameVm = handle.success && handle.data.state === 'sleeping' && JSON.stringify(handle.data.commandLine) === JSON.stringify(vm.argv);
  if (sameVm) {
    try {
      const state = await stat(layout.deviceState);
      if (vm.snapshot === 'full') return state.size > 0;
      const ram = await stat(layout.ramFile);
      if (ram.size === vm.ramBytes) return true;
    } catch {
      // a file is missing: boot afresh
    }
  }
  vm.log.warn({ stateDir: layout.stateDir }, 'discarding what a previous owner left in the state directory');
  await removeOwnedFiles(layout);
  return false;
}

/**
 * A QEMU an earlier owner started on this state directory and that outlived it (an owner from
 * before QEMUs died with their owner, or one whose death signal was lost): it holds the RAM
 * file and would race the VM this owner starts. Found by its QMP socket path, which only a
 * QEMU of this directory is given.
 */
async function killLeftoverQemus(layout: VmLayout, log: Logger): Promise<void> {
  const leftovers = await processesMentioning(`unix:${layout.qmp}`);
  if (leftovers.length === 0) return;
  const killed = await killAndWait(leftovers);
  log.warn({ stateDir: layout.stateDir, pids: killed }, 'removed QEMU processes an earlier owner left running');
}

async function ownerAnswers(layout: VmLayout): Promise<boolean> {
  try {
    const client = await OwnerClient.connect(layout.control, 500);
    client.close();
    return true;
  } catch {
    return false;
  }
}
