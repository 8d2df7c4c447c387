import type { ExecutionContext } from 'ava';
import type { Teardown } from './teardown.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pageoutHelperPath } from '../../agent/runtimes/qemu/memory-reclaim.js';
import { removeCgroup } from './cgroup.js';
import { get } from './http.js';
import { firstMissing, missing, testIf, type Missing } from './needs.js';
import { noRoot } from './root.js';
import { uniqueSuffix } from './names.js';
import { until } from './until.js';
import { sh, shQuiet } from './sh.js';

/** Built by `make guest` (scripts/build-guest.sh): Debian's cloud kernel + a busybox initramfs. */
export const GUEST_DIR = fileURLToPath(new URL('../../build/guest/', import.meta.url));
export const GUEST_KERNEL = join(GUEST_DIR, 'vmlinuz');
export const GUEST_INITRD = join(GUEST_DIR, 'initramfs.cpio.gz');
export const GUEST_PORT = 8080;
const QEMU = 'qemu-system-x86_64';
const MEMORY_V1 = '/sys/fs/cgroup/memory';

/** What a live VM needs that is missing here, or undefined when it can run. */
export const noGuest: Missing | undefined = firstMissing(
  noRoot,
  missing('guest', () => (existsSync(GUEST_KERNEL) && existsSync(GUEST_INITRD) ? undefined : `the test guest is not built (${GUEST_DIR}): run make guest`)),
  missing('qemu', () => (spawnSync(QEMU, ['--version'], { stdio: 'ignore' }).status === 0 ? undefined : `${QEMU} is not installed (qemu-system-x86 in scripts/system-packages.txt)`)),
  missing('build', () => (existsSync(pageoutHelperPath()) ? undefined : `the qemu runtime's page-out helper is not built (${pageoutHelperPath()}): run make build`)),
);

/** `test`, or skips with the reason when no live VM can run here. */
export const guestTest = testIf(noGuest);

/**
 * @deprecated Gate the test when its file loads, with guestTest. Kept so tests written against
 * it still compile; when no VM can run it fails the test with that advice (it used to pass silently).
 */
export function requireGuest(t: ExecutionContext): boolean {
  if (noGuest) t.fail(`needs ${noGuest.need} (${noGuest.reason}): register this test with guestTest (test/helpers/qemu-guest.ts) so it is counted as skipped`);
  return !noGuest;
}

export interface GuestOptions {
  memMiB?: number;
  /** MiB the guest writes into its RAM at boot (resident memory for reclaim tests). */
  fillMiB?: number;
  /** Run QEMU in its own v1 memory cgroup (needed for reclaim). */
  memoryCgroup?: boolean;
  bootTimeoutMs?: number;
  /**
   * User-mode networking, as Nomad's qemu driver sets it up: no tap; QEMU itself listens on
   * `hostPort` (hostfwd, every address) inside network namespace `netns`, forwarding to the guest.
   */
  userNet?: { netns: string; hostAddress: string; hostPort: number };
}

export interface TestGuest {
  tap: string;
  hostIp: string;
  guestIp: string;
  mac: string;
  url: string;
  /** "IP:port" for the agent's instance config. */
  address: string;
  dir: string;
  qmp: string;
  ramFile: string;
  /** Relative to the v1 memory hierarchy, as doze's config takes it. */
  memoryCgroup?: string;
  memoryCgroupDir?: string;
  child: ChildProcess;
  console: string;
  /** ms from spawn to the first HTTP answer. */
  bootMs: number;
  /** SIGKILL QEMU and wait for it to go. */
  kill(): Promise<void>;
  /** Bytes charged to QEMU's memory cgroup. */
  cgroupBytes(): Promise<number>;
  /** Resident bytes of the guest RAM file (fincore). */
  ramResidentBytes(): Promise<number>;
  /** GET / → the guest's in-memory counter. */
  count(timeoutMs?: number): Promise<number>;
}

/**
 * Boots the test guest under TCG (KVM here is kvm-pvm: stock kernels hang, docs/design.md)
 * on a tap created outside QEMU, with guest RAM in a shared file on disk and a QMP
 * socket. The host side of the tap has 10.213.x.1/30 and a permanent neighbour entry
 * for the guest. Teardown (registered first) kills QEMU and removes the tap, the
 * cgroup and the state directory.
 */
export async function startGuest(t: Teardown, options: GuestOptions = {}): Promise<TestGuest> {
  const memMiB = options.memMiB ?? 256;
  const id = uniqueSuffix();
  const block = randomInt(8192, 16384) * 4; // 10.213.128.0/17: apart from createNetns' usual picks
  const hostIp = `10.213.${block >> 8}.${(block & 0xff) + 1}`;
  const guestIp = `10.213.${block >> 8}.${(block & 0xff) + 2}`;
  const mac = `52:54:00:${id.slice(0, 2)}:${id.slice(2, 4)}:${id.slice(4, 6)}`;
  const tap = `dz${id}t`;
  // On disk: a RAM file on tmpfs frees nothing when reclaimed. Short, for the QMP socket.
  await mkdir('/var/tmp', { recursive: true });
  const dir = await mkdtemp('/var/tmp/dz-');
  const cgroupName = options.memoryCgroup ? `doze-test/dz-${id}` : undefined;
  const cgroupDir = cgroupName ? join(MEMORY_V1, cgroupName) : undefined;
  let child: ChildProcess | undefined;
  const kill = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child!.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  };
  t.teardown(async () => {
    await kill();
    await shQuiet('ip', ['link', 'del', tap]);
    if (cgroupDir) await removeCgroup(cgroupDir);
    await rm(dir, { recursive: true, force: true });
  });

  const userNet = options.userNet;
  if (!userNet) {
    await sh('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await sh('ip', ['addr', 'add', `${hostIp}/30`, 'dev', tap]);
    await sh('ip', ['link', 'set', tap, 'up']);
    // Without it the first SYN to a stopped guest waits in the ARP queue and tc sees only ARP.
    await sh('ip', ['neigh', 'replace', guestIp, 'lladdr', mac, 'dev', tap, 'nud', 'permanent']);
  }
  if (cgroupDir) await mkdir(cgroupDir, { recursive: true });

  const qmp = join(dir, 'qmp.sock');
  const ramFile = join(dir, 'ram');
  const consoleLog = join(dir, 'console.log');
  const fill = options.fillMiB ?? 0;
  const args = [
    '-accel', 'tcg', '-smp', '1', '-m', `${memMiB}M`,
    '-object', `memory-backend-file,id=ram0,size=${memMiB}M,mem-path=${ramFile},share=on`,
    '-machine', 'pc,memory-backend=ram0',
    '-display', 'none', '-no-reboot', '-nodefaults', '-no-user-config',
    '-serial', `file:${consoleLog}`,
    '-kernel', GUEST_KERNEL, '-initrd', GUEST_INITRD,
    // QEMU's user-mode network gives the guest 10.0.2.15/24 and gateway 10.0.2.2 (the guest has
    // no DHCP client: set them). hostfwd keeps a remote client's address, so replies need the route.
    '-append', `console=ttyS0 quiet panic=-1 ${userNet ? 'doze.ip=10.0.2.15/24 doze.gw=10.0.2.2' : `doze.ip=${guestIp}/30`} doze.port=${GUEST_PORT} doze.fill=${fill}`,
    '-netdev', userNet ? `user,id=n0,hostfwd=tcp::${userNet.hostPort}-:${GUEST_PORT}` : `tap,id=n0,ifname=${tap},script=no,downscript=no`,
    '-device', `virtio-net-pci,netdev=n0,mac=${mac}`,
    '-qmp', `unix:${qmp},server=on,wait=off`,
  ];
  const started = performance.now();
  // The shell joins the cgroup before exec, so every QEMU thread and page is charged there.
  const script = cgroupDir ? `echo $$ > ${cgroupDir}/cgroup.procs && exec "$@"` : 'exec "$@"';
  // nsenter switches only the network namespace: the cgroup and files stay as they are.
  const command = userNet ? ['nsenter', `--net=/run/netns/${userNet.netns}`, QEMU] : [QEMU];
  child = spawn('sh', ['-c', script, 'sh', ...command, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));

  const url = userNet ? `http://${userNet.hostAddress}:${userNet.hostPort}/` : `http://${guestIp}:${GUEST_PORT}/`;
  const count = async (timeoutMs = 5000) => {
    const r = await get(url, timeoutMs);
    const m = /^count (\d+)/.exec(r.body);
    if (r.status !== 200 || !m) throw new Error(`guest answered ${r.status} ${JSON.stringify(r.body)}`);
    return Number(m[1]);
  };
  let gone: Error | undefined; // QEMU (or its owner) died: no point in waiting longer
  await until('the guest to answer HTTP', async () => {
    if (child.exitCode !== null) throw (gone = new Error(`QEMU exited with ${child.exitCode}: ${stderr.trim()}`));
    return (await count(1000)) >= 0;
  }, {
    timeoutMs: options.bootTimeoutMs ?? 60_000,
    everyMs: 200,
    retryErrors: (error) => error !== gone,
    detail: async () => `console:\n${(await readFile(consoleLog, 'utf8').catch(() => '')).slice(-2000)}\nstderr: ${stderr}`,
  });
  const bootMs = performance.now() - started;

  return {
    tap, hostIp, guestIp, mac, url, address: userNet ? `${userNet.hostAddress}:${userNet.hostPort}` : `${guestIp}:${GUEST_PORT}`, dir, qmp, ramFile,
    memoryCgroup: cgroupName, memoryCgroupDir: cgroupDir, child, console: consoleLog, bootMs, kill, count,
    cgroupBytes: async () => {
      if (!cgroupDir) throw new Error('this guest has no memory cgroup');
      return Number((await readFile(join(cgroupDir, 'memory.usage_in_bytes'), 'utf8')).trim());
    },
    ramResidentBytes: () => residentBytes(ramFile),
  };
}

/** Resident page-cache bytes of a file (util-linux fincore). */
export async function residentBytes(file: string): Promise<number> {
  const out = await sh('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
  return Number(out.trim());
}
