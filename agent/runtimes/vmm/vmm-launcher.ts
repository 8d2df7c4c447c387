import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir, readlink, rm } from 'node:fs/promises';
import { DeadlineError, RuntimeError, messageOf } from '../../shared/errors.js';
import { unixRequest } from './unix-http.js';
import { Deadline } from '../../shared/deadline.js';

/*
 * Starts and stops VMM processes for runtimes whose sleep ends the process
 * (Firecracker `snapshot` mode: a snapshot loads only into a fresh process).
 * This is the seam where `doze vm` (issue 11: the long-lived owner Nomad runs
 * as the task) plugs in; SpawnVmmLauncher is the stand-alone version: it runs
 * the binary as a detached child of the agent, which is right for tests and
 * hand-run VMs, and wrong for a Nomad task (the process would sit in the
 * agent's cgroup, not the task's).
 */
export interface VmmLauncher {
  /** Starts a fresh VMM serving its API on `socket`; resolves once the API answers. */
  start(socket: string, deadlineMs: number): Promise<void>;
  /** Stops the VMM serving `socket` (its VM state is already saved) and removes the stale socket. */
  stop(socket: string, deadlineMs: number): Promise<void>;
}

export interface CommandSpec {
  /** The executable (absolute path, or a name on PATH). */
  binary: string;
  /** Arguments before the ones doze adds. */
  args?: string[];
}

const POLL_MS = 10;

export class SpawnVmmLauncher implements VmmLauncher {
  private readonly children = new Map<string, ChildProcess>();

  /** `socketFlag`: how the VMM is told its API socket (Firecracker: `--api-sock PATH`). */
  constructor(readonly command: CommandSpec, private readonly socketFlag = '--api-sock') {}

  async start(socket: string, deadlineMs: number): Promise<void> {
    const deadline = new Deadline(`starting ${this.command.binary} on ${socket}`, deadlineMs);
    // A killed VMM leaves its socket file, and Firecracker refuses to bind over it.
    await rm(socket, { force: true });
    const child = spawn(this.command.binary, [...(this.command.args ?? []), this.socketFlag, socket], { detached: true, stdio: 'ignore' });
    const spawnError = new Promise<never>((_, reject) => child.once('error', (error) => reject(new RuntimeError('E_VMM_LAUNCH', `cannot start ${this.command.binary}: ${messageOf(error)}`, { cause: error }))));
    spawnError.catch(() => undefined);
    child.unref();
    this.children.set(socket, child);
    child.once('exit', () => {
      if (this.children.get(socket) === child) this.children.delete(socket);
    });
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new RuntimeError('E_VMM_LAUNCH', `${this.command.binary} exited (${child.exitCode ?? child.signalCode}) before its API socket ${socket} answered`);
      }
      const left = Math.floor(deadline.remainingMs());
      if (left <= 0) {
        child.kill('SIGKILL');
        throw new DeadlineError(`starting ${this.command.binary} on ${socket}`, deadlineMs);
      }
      const answered = await Promise.race([unixRequest(socket, 'GET', '/', undefined, Math.min(left, 500)).then(() => true, () => false), spawnError]);
      if (answered) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  async stop(socket: string, deadlineMs: number): Promise<void> {
    const deadline = new Deadline(`stopping the VMM on ${socket}`, deadlineMs);
    const pid = this.children.get(socket)?.pid ?? (await socketOwner(socket));
    if (pid !== undefined) {
      signal(pid, 'SIGTERM');
      // Half the deadline for a clean exit, then SIGKILL: the VM's state is already on disk.
      const soft = new Deadline('a clean exit', deadlineMs / 2);
      while (alive(pid) && !soft.expired) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (alive(pid)) signal(pid, 'SIGKILL');
      while (alive(pid)) {
        if (deadline.expired) throw new DeadlineError(`stopping the VMM on ${socket} (pid ${pid})`, deadlineMs);
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    }
    this.children.delete(socket);
    await rm(socket, { force: true });
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The pid of the process listening on a unix socket: its inode from
 * /proc/net/unix, then the process holding `socket:[inode]` among its fds.
 */
export async function socketOwner(socket: string): Promise<number | undefined> {
  let table: string;
  try {
    table = await readFile('/proc/net/unix', 'utf8');
  } catch {
    return undefined;
  }
  // Num RefCount Protocol Flags Type St Inode Path; a listener has flags 00010000 (__SO_ACCEPTCON).
  const inodes = new Set<string>();
  for (const line of table.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 8 && fields.slice(7).join(' ') === socket && fields[3] === '00010000') inodes.add(fields[6]!);
  }
  if (inodes.size === 0) return undefined;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = await readdir(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      const target = await readlink(`/proc/${entry}/fd/${fd}`).catch(() => '');
      const match = /^socket:\[(\d+)\]$/.exec(target);
      if (match && inodes.has(match[1]!)) return Number(entry);
    }
  }
  return undefined;
}

/** Runs a helper (snapshot-editor) to completion within a deadline; its stderr becomes the error. */
export async function runCommand(command: CommandSpec, args: string[], deadlineMs: number): Promise<void> {
  const what = [command.binary, ...(command.args ?? []), ...args].join(' ');
  await new Promise<void>((resolve, reject) => {
    const child = spawn(command.binary, [...(command.args ?? []), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new DeadlineError(what, deadlineMs));
    }, Math.max(deadlineMs, 1));
    timer.unref();
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new RuntimeError('E_RUNTIME_HELPER', `cannot run ${what}: ${messageOf(error)}`, { cause: error }));
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new RuntimeError('E_RUNTIME_HELPER', `${what} failed (${code ?? sig}): ${stderr.trim() || '(no output)'}`));
    });
  });
}
