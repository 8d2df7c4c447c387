import { join } from 'node:path';
import { ConfigError } from '../../shared/errors.js';

/** Where a `doze vm run` owner keeps one VM's files (all inside its state directory, on disk). */
export interface VmLayout {
  stateDir: string;
  /** The owner's control socket (owner-protocol.ts). */
  control: string;
  /** QEMU's QMP socket, added by the owner (one client: the owner). */
  qmp: string;
  /** Guest RAM: `memory-backend-file,share=on`. */
  ramFile: string;
  /**
   * What a sleep wrote (the migration stream); exists only while asleep. Device state only
   * (x-ignore-shared: guest RAM stays in ramFile), or everything with `--snapshot full`.
   */
  deviceState: string;
  /** `--snapshot full`: the socket QEMU streams its migration to, written to disk by the owner. */
  migrateSocket: string;
  /** Device snapshots: the RAM file's page ranges that were in memory at the sleep (read back first on wake). */
  workingSet: string;
  /** The versioned JSON handle (vm-handle.ts VmHandle). */
  handle: string;
}

export const RAM_BACKEND_ID = 'doze-ram';
/** sun_path holds 108 bytes with its NUL. */
export const UNIX_SOCKET_PATH_MAX = 107;

export function vmLayout(stateDir: string): VmLayout {
  return {
    stateDir,
    control: join(stateDir, 'control.sock'),
    qmp: join(stateDir, 'qmp.sock'),
    ramFile: join(stateDir, 'ram'),
    deviceState: join(stateDir, 'device.state'),
    migrateSocket: join(stateDir, 'migrate.sock'),
    workingSet: join(stateDir, 'ram.resident'),
    handle: join(stateDir, 'vm.json'),
  };
}

/** Files the owner creates in the state directory (removed when the VM is discarded). */
export function ownedFiles(layout: VmLayout): string[] {
  return [layout.ramFile, layout.deviceState, `${layout.deviceState}.part`, layout.migrateSocket, layout.workingSet, layout.qmp, layout.control, layout.handle, `${layout.handle}.tmp`];
}

const SIZE_UNITS: Record<string, number> = { '': 2 ** 20, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** QEMU's `-m` value ("256", "256M", "1G", "size=256M,slots=2,maxmem=1G") → bytes of base RAM (no suffix = MiB). */
export function parseMemorySize(value: string): number {
  const first = value.split(',').find((part) => !part.includes('=') || part.startsWith('size=')) ?? '';
  const text = first.startsWith('size=') ? first.slice(5) : first;
  const m = /^(\d+(?:\.\d+)?)([bkmgt]?)$/i.exec(text.trim());
  if (!m) throw new ConfigError(`cannot read the memory size from -m ${JSON.stringify(value)} (expected e.g. 256M or size=1G)`);
  const bytes = Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 4096 !== 0) throw new ConfigError(`-m ${JSON.stringify(value)} is not a whole number of pages`);
  return bytes;
}

/** An option value for QEMU's parser: commas are doubled. */
function qemuOptValue(text: string): string {
  return text.replaceAll(',', ',,');
}

/** Quotes a path for the `/bin/sh -c` that QEMU's `exec:` migration URIs run. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

export interface ComposedCommandLine {
  /** The full command line, binary first: the user's arguments plus doze's. */
  argv: string[];
  ramBytes: number;
}

/**
 * What a sleep saves: `device` = device state only, guest RAM living in a shared
 * file in the state directory (small snapshot, lazy wake); `full` = a plain
 * migration of everything, RAM included (the portable format, for VMs whose RAM
 * cannot be file-backed: the user's own memory backend, hugepages).
 */
export type SnapshotKind = 'device' | 'full';

/**
 * Adds what snapshot sleep needs to the user's QEMU command line: a QMP socket
 * for the owner, and (device snapshots) guest RAM as a shared file in the state
 * directory (`-object memory-backend-file,…,share=on` + `-machine memory-backend=…`;
 * QEMU merges repeated `-machine` options, checked on 7.2). Refuses options that
 * conflict with the owner's job.
 */
export function composeCommandLine(userArgv: string[], layout: VmLayout, snapshot: SnapshotKind = 'device'): ComposedCommandLine {
  const [binary, ...args] = userArgv;
  if (!binary) throw new ConfigError('no QEMU command line after "--" (e.g. -- qemu-system-x86_64 -m 256M …)');
  if (/[\n\0]/.test(layout.stateDir)) throw new ConfigError('the state directory path contains a newline or NUL');
  for (const path of [layout.control, layout.qmp, layout.migrateSocket]) {
    if (Buffer.byteLength(path) > UNIX_SOCKET_PATH_MAX) throw new ConfigError(`${path} is longer than a unix socket path may be (${UNIX_SOCKET_PATH_MAX} bytes): use a shorter --state-dir`);
  }
  let memory: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const option = arg.replace(/^--/, '-');
    if (option === '-incoming' || option === '-daemonize' || option === '-loadvm') {
      throw new ConfigError(`${arg} cannot be used under doze vm: the owner starts and restores QEMU itself`);
    }
    // A full snapshot saves RAM wherever it lives: the user's own backend is fine then.
    if (snapshot === 'device' && (option === '-machine' || option === '-M') && /(^|,)memory-backend=/.test(args[i + 1] ?? '')) {
      throw new ConfigError(`${arg} ${args[i + 1]} sets a memory backend: doze vm puts guest RAM in its own shared file (${layout.ramFile}); drop memory-backend=, or use --snapshot full`);
    }
    if (snapshot === 'device' && (option === '-mem-path' || option === '-mem-prealloc')) {
      throw new ConfigError(`${arg} conflicts with doze vm's file-backed guest RAM; drop it, or use --snapshot full`);
    }
    if (option === '-m') memory = args[i + 1];
  }
  const ramBytes = memory === undefined ? 128 * 2 ** 20 : parseMemorySize(memory);
  const argv = [binary, ...args];
  if (snapshot === 'device') {
    if (memory === undefined) argv.push('-m', '128M'); // QEMU's default, made explicit: the backend must match it
    argv.push(
      '-object', `memory-backend-file,id=${RAM_BACKEND_ID},size=${ramBytes},mem-path=${qemuOptValue(layout.ramFile)},share=on`,
      '-machine', `memory-backend=${RAM_BACKEND_ID}`,
    );
  }
  argv.push('-qmp', `unix:${qemuOptValue(layout.qmp)},server=on,wait=off`);
  return { argv, ramBytes };
}

/**
 * Files QEMU reads through the page cache that belong to this VM: `-kernel`, `-initrd`,
 * disk images (`-drive file=`, `-hda`…). QEMU's reads charge their cache to the VM's
 * memory cgroup, so a sleep writes them back and drops them too.
 */
export function commandLineInputFiles(argv: string[]): string[] {
  const files = new Set<string>();
  for (let i = 1; i < argv.length - 1; i++) {
    const option = argv[i]!.replace(/^--/, '-');
    const value = argv[i + 1]!;
    if (['-kernel', '-initrd', '-hda', '-hdb', '-hdc', '-hdd'].includes(option)) files.add(value);
    if (option === '-drive') {
      // QEMU's option syntax: key=value pairs separated by ",", a literal comma written ",,".
      const file = /(?:^|,)file=((?:[^,]|,,)*)/.exec(value)?.[1];
      if (file && !file.includes(':')) files.add(file.replaceAll(',,', ','));
    }
  }
  return [...files];
}
