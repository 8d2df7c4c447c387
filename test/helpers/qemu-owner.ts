import type { Teardown } from './teardown.js';
import type { ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processesMentioning } from '../../agent/process/die-with-parent.js';
import { spawnCli } from './cli.js';
import { removeCgroup } from './cgroup.js';
import { get } from './http.js';
import { uniqueSuffix } from './names.js';
import { GUEST_INITRD, GUEST_KERNEL, GUEST_PORT, residentBytes } from './qemu-guest.js';
import { sh, shQuiet } from './sh.js';
import { until } from './until.js';

const MEMORY_V1 = '/sys/fs/cgroup/memory';

export interface OwnedGuestOptions {
  memMiB?: number;
  fillMiB?: number;
  /** Extra `doze vm run` options (e.g. --prespawn). */
  ownerArgs?: string[];
  bootTimeoutMs?: number;
  /** Where the owner keeps its state (default /var/tmp/dz-vm-<id>); removed at teardown. */
  stateDir?: string;
  /** Let `doze vm run --tap-address` make the tap (and its neighbour entry) instead of the test. */
  ownerCreatesTap?: boolean;
}

export interface OwnerProcess {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything the owner wrote to stdout and stderr (its logs, QEMU's messages). */
  output(): string;
}

export interface OwnedGuest {
  tap: string;
  guestIp: string;
  mac: string;
  url: string;
  address: string;
  stateDir: string;
  control: string;
  ramFile: string;
  /** Relative to the v1 memory hierarchy. */
  memoryCgroup: string;
  memoryCgroupDir: string;
  owner: OwnerProcess;
  /** The `doze vm run` command line (to start another owner on the same state dir). */
  ownerArgv: string[];
  bootMs: number;
  /** What every owner of this VM wrote so far (for failure messages). */
  ownerOutput(): string;
  /** Starts a further owner with the same arguments; it is killed at teardown. */
  startOwner(): OwnerProcess;
  count(timeoutMs?: number): Promise<number>;
  cgroupBytes(): Promise<number>;
  ramResidentBytes(): Promise<number>;
  /** QEMU processes of this VM (command line names its state directory). */
  qemuPids(): Promise<number[]>;
}

/** QEMU processes whose command line contains `needle` (this test's VMs only: the state dir is unique). */
/** The QEMUs whose command line mentions `needle` (this VM's state directory). */
export const qemuProcessesMentioning = (needle: string): Promise<number[]> => processesMentioning(needle, { program: 'qemu-system' });

/**
 * Boots the test guest under a `doze vm run` owner (spawned from source through the
 * CLI), on a tap created outside QEMU with a permanent neighbour entry, with every
 * QEMU the owner starts placed in a fresh v1 memory cgroup. Teardown (registered
 * first) SIGKILLs the owners and any QEMU of this VM, and removes the tap, the cgroup
 * and the state directory.
 */
export async function startOwnedGuest(t: Teardown, options: OwnedGuestOptions = {}): Promise<OwnedGuest> {
  const memMiB = options.memMiB ?? 256;
  const id = uniqueSuffix();
  const block = randomInt(8192, 16384) * 4;
  const hostIp = `10.213.${block >> 8}.${(block & 0xff) + 1}`;
  const guestIp = `10.213.${block >> 8}.${(block & 0xff) + 2}`;
  const mac = `52:54:00:${id.slice(0, 2)}:${id.slice(2, 4)}:${id.slice(4, 6)}`;
  const tap = `dz${id}t`;
  // On disk (a RAM file on tmpfs frees nothing) and short (unix socket paths).
  const stateDir = options.stateDir ?? `/var/tmp/dz-vm-${id}`;
  const memoryCgroup = `doze-test/dz-${id}`;
  const memoryCgroupDir = join(MEMORY_V1, memoryCgroup);
  const owners: OwnerProcess[] = [];
  t.teardown(async () => {
    for (const owner of owners) {
      if (owner.child.exitCode === null && owner.child.signalCode === null) {
        owner.child.kill('SIGKILL');
        await owner.exited;
      }
    }
    for (const pid of await qemuProcessesMentioning(stateDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await shQuiet('ip', ['link', 'del', tap]);
    await removeCgroup(memoryCgroupDir);
    await rm(stateDir, { recursive: true, force: true });
    await rm(`${stateDir}.console`, { force: true });
  });

  if (!options.ownerCreatesTap) {
    await sh('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await sh('ip', ['addr', 'add', `${hostIp}/30`, 'dev', tap]);
    await sh('ip', ['link', 'set', tap, 'up']);
    // The tap outlives QEMU; without this entry the first SYN to a sleeping guest waits in the ARP queue.
    await sh('ip', ['neigh', 'replace', guestIp, 'lladdr', mac, 'dev', tap, 'nud', 'permanent']);
  }
  await mkdir(memoryCgroupDir, { recursive: true });

  const ownerArgv = [
    'vm', 'run', '--state-dir', stateDir, '--memory-cgroup', memoryCgroup, '--stop-timeout', '3s',
    ...(options.ownerCreatesTap ? ['--tap-address', `${hostIp}/30`] : []), ...(options.ownerArgs ?? []), '--',
    'qemu-system-x86_64', '-accel', 'tcg', '-smp', '1', '-m', `${memMiB}M`, '-machine', 'pc',
    '-display', 'none', '-no-reboot', '-nodefaults', '-no-user-config',
    '-serial', `file:${stateDir}.console`,
    '-kernel', GUEST_KERNEL, '-initrd', GUEST_INITRD,
    '-append', `console=ttyS0 quiet panic=-1 doze.ip=${guestIp}/30 doze.port=${GUEST_PORT} doze.fill=${options.fillMiB ?? 0}`,
    '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`,
    '-device', `virtio-net-pci,netdev=n0,mac=${mac}`,
  ];
  const startOwner = (): OwnerProcess => {
    const child = spawnCli(ownerArgv);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out = (out + chunk).slice(-20_000)));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out = (out + chunk).slice(-20_000)));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const owner = { child, exited, output: () => out };
    owners.push(owner);
    return owner;
  };

  const url = `http://${guestIp}:${GUEST_PORT}/`;
  const count = async (timeoutMs = 5000) => {
    const r = await get(url, timeoutMs);
    const m = /^count (\d+)/.exec(r.body);
    if (r.status !== 200 || !m) throw new Error(`guest answered ${r.status} ${JSON.stringify(r.body)}`);
    return Number(m[1]);
  };

  const started = performance.now();
  const owner = startOwner();
  let gone: Error | undefined; // QEMU (or its owner) died: no point in waiting longer
  await until('the guest to answer HTTP', async () => {
    if (owner.child.exitCode !== null || owner.child.signalCode !== null) throw (gone = new Error(`doze vm run exited early:\n${owner.output().slice(-3000)}`));
    return (await count(1000)) >= 0;
  }, {
    timeoutMs: options.bootTimeoutMs ?? 60_000,
    everyMs: 200,
    retryErrors: (error) => error !== gone,
    detail: async () => `console:\n${(await readFile(`${stateDir}.console`, 'utf8').catch(() => '')).slice(-2000)}\nowner:\n${owner.output().slice(-2000)}`,
  });
  const bootMs = performance.now() - started;

  return {
    tap, guestIp, mac, url, address: `${guestIp}:${GUEST_PORT}`, stateDir,
    control: join(stateDir, 'control.sock'), ramFile: join(stateDir, 'ram'),
    memoryCgroup, memoryCgroupDir, owner, ownerArgv, bootMs, startOwner, count,
    ownerOutput: () => owners.map((o, i) => `--- owner ${i}\n${o.output()}`).join('\n'),
    cgroupBytes: async () => Number((await readFile(join(memoryCgroupDir, 'memory.usage_in_bytes'), 'utf8')).trim()),
    ramResidentBytes: () => residentBytes(join(stateDir, 'ram')),
    qemuPids: () => qemuProcessesMentioning(stateDir),
  };
}
