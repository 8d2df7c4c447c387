import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { DeadlineError, RuntimeError } from '../../shared/errors.js';
import { diesWithParent } from '../../process/die-with-parent.js';
import { QmpClient } from './qmp-client.js';
import { Deadline } from '../../shared/deadline.js';

/** Deadline for one QMP command of the owner's. */
export const QMP_MS = 3000;
/** How long a starting QEMU may take to answer QMP (process start and machine set-up included). */
export const BOOT_QMP_MS = 10_000;
/** How long QMP `quit` may take before the process is killed. */
export const QUIT_MS = 2000;
/** Between two looks at something QEMU is doing (a socket appearing, a migration's status). */
export const POLL_MS = 2;

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Spawns a child of the owner that dies with it (a SIGKILLed owner must not leave a VM
 * running on its own) and, given a memory cgroup's `cgroup.procs`, joins that cgroup
 * before exec (a shell writes its pid there first), so every thread and page it uses is
 * charged to the VM.
 */
export function spawnOwnedChild(argv: readonly string[], cgroupProcs: string | undefined, stdio: StdioOptions): ChildProcess {
  const [binary, ...args] = diesWithParent(argv);
  return cgroupProcs
    ? spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', cgroupProcs, binary!, ...args], { stdio })
    : spawn(binary!, args, { stdio });
}

/** One QEMU process the owner started, with its QMP connection once negotiated. */
export class QemuProcess {
  readonly pid: number;
  readonly exited: Promise<QemuExit>;
  exit: QemuExit | undefined;
  qmp: QmpClient | undefined;
  /** Set before doze itself quits or kills it: its exit is not news. */
  expectedExit = false;
  private stderrTail = '';
  /** Characters of stderr seen so far (a mark for stderrSince). */
  stderrSeen = 0;

  constructor(private readonly child: ChildProcess) {
    if (child.pid === undefined) throw new RuntimeError('E_QEMU_SPAWN', 'QEMU could not be started');
    this.pid = child.pid;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        this.qmp?.close();
        resolve({ code, signal });
      });
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      process.stderr.write(chunk);
      this.stderrTail = (this.stderrTail + chunk).slice(-2000);
      this.stderrSeen += chunk.length;
    });
  }

  /** What QEMU (and the commands it runs, e.g. a migration's `cat`) wrote to stderr since `mark` (at most its tail). */
  stderrSince(mark: number): string {
    const n = Math.min(this.stderrSeen - mark, this.stderrTail.length);
    return n > 0 ? this.stderrTail.slice(-n).trim() : '';
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  get stderr(): string {
    return this.stderrTail.trim();
  }

  describeExit(): string {
    const how = this.exit ? (this.exit.signal ? `signal ${this.exit.signal}` : `code ${this.exit.code}`) : 'still running';
    return `QEMU (pid ${this.pid}) exited with ${how}${this.stderr ? `: ${this.stderr.slice(-500)}` : ''}`;
  }

  /** Connects to QMP, retrying while QEMU starts up and creates the socket. */
  async connect(path: string, deadlineMs: number): Promise<QmpClient> {
    const deadline = new Deadline(`QEMU (pid ${this.pid}) QMP socket ${path}`, deadlineMs);
    for (;;) {
      if (!this.alive) throw new RuntimeError('E_QEMU_EXITED', this.describeExit());
      const left = Math.round(deadline.remainingMs());
      if (left <= 0) throw new DeadlineError(`QEMU (pid ${this.pid}) QMP socket ${path}`, deadlineMs);
      try {
        this.qmp = await QmpClient.connect(path, left);
        return this.qmp;
      } catch {
        await delay(POLL_MS);
      }
    }
  }

  async kill(): Promise<void> {
    this.expectedExit = true;
    if (!this.alive) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** QMP quit (or SIGKILL when it does not answer), and waits for the process to go. */
  async quit(deadlineMs: number): Promise<void> {
    this.expectedExit = true;
    if (!this.alive) return;
    await this.qmp?.execute('quit', undefined, Math.min(deadlineMs, QUIT_MS)).catch(() => undefined);
    const gone = await Promise.race([this.exited.then(() => true), delay(deadlineMs).then(() => false)]);
    if (!gone) await this.kill();
  }
}

/**
 * Starts the QEMU processes of one VM, all with the same command line (a receiver adds
 * `-incoming defer`), in its memory cgroup, and knows which of them are alive.
 */
export class QemuLauncher {
  private readonly live = new Set<QemuProcess>();
  /** The VM's memory cgroup's `cgroup.procs` (set once it is found), or undefined to start QEMU where the owner runs. */
  cgroupProcs: string | undefined;

  constructor(private readonly argv: readonly string[], private readonly qmpPath: string) {}

  /** A QEMU that boots the VM. */
  async boot(): Promise<QemuProcess> {
    await rm(this.qmpPath, { force: true });
    return this.spawn(this.argv);
  }

  /** A QEMU waiting for a device state (`-incoming defer`), in the same cgroup and with the same command line. */
  receiver(): QemuProcess {
    void rm(this.qmpPath, { force: true });
    return this.spawn([...this.argv, '-incoming', 'defer']);
  }

  /** No more grace: SIGKILLs every QEMU still alive and waits for them to go. */
  async killAll(): Promise<void> {
    await Promise.all([...this.live].map((p) => p.kill()));
    this.live.clear();
  }

  private spawn(argv: readonly string[]): QemuProcess {
    const child = spawnOwnedChild(argv, this.cgroupProcs, ['ignore', 'inherit', 'pipe']);
    const proc = new QemuProcess(child);
    this.live.add(proc);
    void proc.exited.then(() => this.live.delete(proc));
    child.once('error', () => undefined); // surfaces as an exit
    return proc;
  }
}
