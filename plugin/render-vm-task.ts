import { BUSY_CPU_DEFAULT } from '../agent/config/schema.js';
import { groupPlace, taskPlace } from '../agent/nomad/meta-keys.js';
import { tapOf } from '../agent/runtimes/qemu/vm-registration.js';
import type { JobCheck } from './check-job.js';
import { allowlistEntries, QMP_SOCKET, RAM_FILE, withQemuPauseArgs } from './qemu-pause-args.js';

export { tapOf };

/*
 * Snapshot sleep needs the VM run by `doze vm run` (docs/qemu.md): QEMU exits
 * while the VM sleeps, and Nomad would take a task whose process exits for a
 * dead one. So a managed qemu task with doze.mode = "snapshot" is rendered into
 * a raw_exec task that runs the owner, with the command line Nomad's qemu
 * driver would have built (drivers/qemu/driver.go: -machine type=pc,accel=…,
 * -name, -m <memory>M, -drive file=<image>, -nographic, the task's args, and
 * -enable-kvm -cpu host under kvm). What changes:
 *  - networking: the driver's user-mode networking (port_map → hostfwd) is
 *    dropped. doze counts traffic on the VM's own interface, and a hostfwd
 *    socket closes with QEMU, refusing the wake's SYN. The task's args must
 *    attach the VM to a tap (`-netdev tap,…,ifname=NAME,script=no,downscript=no`)
 *    that exists before the task starts; port_map still names the guest port.
 *  - graceful_shutdown: the owner's ACPI powerdown (--shutdown powerdown)
 *    replaces the driver's monitor socket; without it, --shutdown quit.
 *  - the owner registers the VM with the node's agent (--register), with the
 *    id Nomad discovery gives the allocation.
 *  - memory: the owner's Node.js process needs about 50 MiB beside the guest,
 *    so the task's memory grows by OWNER_MEMORY_MB while -m keeps the guest's.
 *  - kill_timeout: at least MIN_KILL_TIMEOUT, for the unregistration (which
 *    wakes a sleeping VM) and the owner's stop.
 */

export const OWNER_MEMORY_MB = 64;
const NS_PER_MS = 1_000_000;
export const MIN_KILL_TIMEOUT_MS = 10_000;
/** Nomad's qemu driver refuses less than 128 MB; its jobspec default is 300. */
const NOMAD_DEFAULT_MEMORY_MB = 300;

export interface VmRenderOptions {
  /** The node agent's status API, as the task reaches it. */
  agentUrl: string;
  /** The doze executable on the client node. */
  command: string;
}

export const DEFAULT_VM_RENDER: VmRenderOptions = { agentUrl: 'http://127.0.0.1:7070', command: 'doze' };

export interface VmRender {
  job: Record<string, unknown>;
  /** One line per rendered task, for `doze job validate`. */
  rendered: { group: string; task: string; tap: string; guestPort: number }[];
  /** One line per pause-mode qemu-driver task given a QMP socket (and file-backed RAM with reclaim). */
  qemuPause: QemuPauseRender[];
  problems: string[];
  warnings: string[];
}

export interface QemuPauseRender {
  group: string;
  task: string;
  /** Relative to the task directory. */
  qmp: string;
  /** The guest RAM file and its size, with doze.reclaim; undefined without. */
  ram: { file: string; memoryMb: number } | undefined;
}

type Json = Record<string, unknown>;

function memoryOf(task: Json): number {
  const resources = (task.Resources ?? {}) as Json;
  return typeof resources.MemoryMB === 'number' && resources.MemoryMB > 0 ? resources.MemoryMB : NOMAD_DEFAULT_MEMORY_MB;
}

/**
 * The job with every managed qemu-driver task prepared for its sleep mode:
 * snapshot-mode tasks turned into `doze vm run`, pause-mode tasks given a QMP
 * socket and (with doze.reclaim) file-backed guest RAM (plugin/qemu-pause-args.ts).
 * Other tasks are untouched.
 */
export function renderVmTasks(raw: Json, check: JobCheck, options: VmRenderOptions = DEFAULT_VM_RENDER): VmRender {
  const job = structuredClone(raw);
  const result: VmRender = { job, rendered: [], qemuPause: [], problems: [], warnings: [] };
  const groups = Array.isArray(job.TaskGroups) ? (job.TaskGroups as Json[]) : [];
  for (const { managed } of check.groups) {
    if (!managed || managed.driver !== 'qemu' || (managed.settings.mode !== 'snapshot' && managed.settings.mode !== 'pause')) continue;
    const group = groups.find((g) => g.Name === managed.group);
    const tasks = Array.isArray(group?.Tasks) ? (group.Tasks as Json[]) : [];
    const task = tasks.find((t) => t.Name === managed.task);
    if (!task) continue;
    const place = taskPlace(managed.group, managed.task);
    if (managed.settings.mode === 'pause') {
      renderQemuPause(task, managed.group, managed.task, managed.settings.reclaim, result);
      continue;
    }
    const config = (task.Config ?? {}) as Json;
    const problems: string[] = [];

    const image = typeof config.image_path === 'string' && config.image_path ? config.image_path : undefined;
    if (!image) problems.push(`${place}: config.image_path is required`);
    const accelerator = typeof config.accelerator === 'string' && config.accelerator ? config.accelerator : 'tcg';
    const args = Array.isArray(config.args) ? config.args.map(String) : [];
    const tap = tapOf(args);
    if (!tap) {
      problems.push(
        `${place}: doze.mode "snapshot" runs the VM under doze vm, which needs it on a tap (user-mode networking closes with QEMU, refusing the wake): ` +
          'add args "-netdev", "tap,id=net0,ifname=<tap>,script=no,downscript=no", "-device", "virtio-net-pci,netdev=net0" (docs/qemu.md)',
      );
    }
    const guestPort = guestPortOf(config.port_map, managed.service.portLabel);
    if (guestPort === undefined) {
      problems.push(`${place}: port_map has no guest port for service port ${JSON.stringify(managed.service.portLabel)} (the port doze wakes the VM on)`);
    }
    if (config.guest_agent === true) result.warnings.push(`${place}: guest_agent is not carried over to doze vm run (add its -chardev/-device args yourself)`);
    const known = new Set(['image_path', 'accelerator', 'args', 'port_map', 'graceful_shutdown', 'guest_agent', 'drive_interface']);
    for (const key of Object.keys(config)) if (!known.has(key)) result.warnings.push(`${place}: qemu option ${JSON.stringify(key)} is not carried over to doze vm run`);
    if (problems.length > 0 || !image || !tap || guestPort === undefined) {
      result.problems.push(...problems);
      continue;
    }

    const resources = (task.Resources ?? {}) as Json;
    const memoryMb = memoryOf(task);
    const driveInterface = typeof config.drive_interface === 'string' && config.drive_interface ? `,if=${config.drive_interface}` : '';
    const qemu = [
      'qemu-system-x86_64',
      '-machine', `type=pc,accel=${accelerator}`,
      '-name', image.slice(image.lastIndexOf('/') + 1),
      '-m', `${memoryMb}M`,
      '-drive', `file=${image}${driveInterface}`,
      '-nographic',
      ...args,
      ...(accelerator === 'kvm' ? ['-enable-kvm', '-cpu', 'host'] : []),
    ];
    const s = managed.settings;
    // Durations in milliseconds: exact, and what the agent's instance schema takes.
    const instance = {
      idleTimeout: s.idleTimeoutMs,
      idlePolicy: s.idlePolicy,
      ...(s.wake !== undefined ? { wake: s.wake } : {}),
      ...(s.busyCpu !== BUSY_CPU_DEFAULT ? { busyCpu: s.busyCpu } : {}),
      ...(s.minAwakeMs > 0 ? { minAwake: s.minAwakeMs } : {}),
      ...(s.maxAwakeMs !== undefined ? { maxAwake: s.maxAwakeMs } : {}),
      memory: memoryMb,
    };
    task.Driver = 'raw_exec';
    task.Config = {
      command: options.command,
      args: [
        'vm', 'run',
        '--state-dir', '${NOMAD_ALLOC_DIR}/doze-vm',
        '--shutdown', config.graceful_shutdown === true ? 'powerdown' : 'quit',
        '--register', options.agentUrl,
        '--interface', tap,
        ...(s.tapAddress !== undefined ? ['--tap-address', s.tapAddress] : []),
        '--guest-port', String(guestPort),
        '--instance-json', JSON.stringify(instance),
        '--',
        ...qemu,
      ],
    };
    task.Resources = { ...resources, MemoryMB: memoryMb + OWNER_MEMORY_MB };
    if (typeof task.KillTimeout !== 'number' || task.KillTimeout < MIN_KILL_TIMEOUT_MS * NS_PER_MS) task.KillTimeout = MIN_KILL_TIMEOUT_MS * NS_PER_MS;
    if (s.maxSleepMs !== undefined) result.warnings.push(`${groupPlace(managed.group)}: doze.max_sleep is not passed to doze vm yet`);
    result.rendered.push({ group: managed.group, task: managed.task, tap, guestPort });
  }
  return result;
}

/** A pause-mode task of Nomad's qemu driver: QEMU stays the task; its args gain the QMP socket and RAM file. */
function renderQemuPause(task: Json, group: string, name: string, reclaim: boolean, result: VmRender): void {
  const place = taskPlace(group, name);
  const config = (task.Config ?? {}) as Json;
  if (config.args !== undefined && config.args !== null && !Array.isArray(config.args)) {
    result.problems.push(`${place}: config.args must be a list of strings`);
    return;
  }
  const args = Array.isArray(config.args) ? config.args.map(String) : [];
  const memoryMb = memoryOf(task);
  const { args: rendered, problems } = withQemuPauseArgs(args, { place, memoryMb, reclaim });
  if (!rendered) {
    result.problems.push(...problems);
    return;
  }
  task.Config = { ...config, args: rendered };
  const allow = allowlistEntries(reclaim);
  result.warnings.push(
    `${place}: the qemu args gain ${allow.join(', ')} (doze.mode "pause": the agent's QMP socket${reclaim ? ' and file-backed guest RAM' : ''}); ` +
      `on clients whose qemu plugin sets args_allowlist, those flags must be in it, or the task fails to start: plugin "qemu" { config { args_allowlist = [${allow.map((a) => JSON.stringify(a)).join(', ')}, …] } }`,
  );
  result.qemuPause.push({ group, task: name, qmp: QMP_SOCKET, ram: reclaim ? { file: RAM_FILE, memoryMb } : undefined });
}

/** port_map as Nomad's API carries it: `[{ "http": 80 }]` (block syntax) or `{ "http": 80 }`; a numeric label is the port itself. */
function guestPortOf(portMap: unknown, label: string): number | undefined {
  const maps = Array.isArray(portMap) ? portMap : portMap && typeof portMap === 'object' ? [portMap] : [];
  for (const map of maps) {
    const value = (map as Json)?.[label];
    const port = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
    if (Number.isInteger(port) && port > 0 && port < 65536) return port;
  }
  if (/^\d+$/.test(label)) return Number(label);
  return undefined;
}
