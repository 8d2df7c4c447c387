import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { statFieldsAfterName } from '../process/proc-stat.js';

/*
 * The CPU time and block I/O of the processes in one cgroup, summed from /proc, for a cgroup
 * with no CPU accounting of its own: a v1 freezer cgroup made for the freezer alone (the
 * README's example, `make demo`, one an operator makes by hand), whose processes sit in the
 * root of the cpuacct hierarchy, shared with the whole node.
 *
 * Per process, /proc/PID/stat utime + stime count all its threads, the exited ones included,
 * and cutime + cstime the children it has waited for; /proc/PID/io read_bytes + write_bytes
 * count the same (threads, dead threads and waited-for children). So one process's figure
 * (own + reaped) never goes down, and a child's whole figure moves into its parent's when the
 * parent waits for it (kernel/exit.c, wait_task_zombie).
 *
 * The sum over the cgroup's processes is kept as a running total of each process's growth
 * between two reads, so it never goes backwards when a process leaves:
 *   - a process first seen whose parent is one of the cgroup's (forked inside since the last
 *     read) counts from 0: all it used, it used here; one whose parent is outside (it was moved
 *     in: `nomad alloc exec`, a task's first process) counts from when it was first seen;
 *   - a process gone since the last read keeps what was counted for it. When its parent is
 *     still one of the cgroup's, the parent's figure will grow by the child's whole figure when
 *     it waits for it; what was counted already is owed against that growth (`owed`), so the
 *     child is never counted twice. Its CPU between the last read and its exit is counted then,
 *     through the parent. A zombie (exited, not yet waited for: no longer in cgroup.procs on v1)
 *     keeps being read from /proc until it is reaped;
 *   - a process whose parent is outside the cgroup (the Nomad executor, init after a reparent)
 *     takes its time since the last read with it: at most one window of a process that ended,
 *     which a busy decision no longer needs (the work is over).
 * A parent that never waits (SIGCHLD ignored: the kernel reaps without adding to cutime) loses
 * its children's last stretch the same way; what it owes then hides at most as much of its own
 * later reaped growth.
 *
 * The cost is one small read of cgroup.procs and two per process (stat, io), made only when
 * the instance's idle deadline is due, as for a cgroup's counters.
 */

/** USER_HZ: /proc/PID/stat counts CPU in these ticks on every Linux ABI doze runs on. */
const TICKS_PER_SECOND = 100;

interface ProcessFigures {
  /** Field 22: tells a reused pid from the process read before. */
  start: string;
  ppid: number;
  zombie: boolean;
  /** utime + stime + cutime + cstime, clock ticks. */
  cpuTicks: number;
  /** read_bytes + write_bytes of /proc/PID/io; undefined when unreadable. */
  ioBytes: number | undefined;
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** One process's figures from /proc, or undefined once it is gone. */
export function readProcessFigures(pid: number, procRoot = '/proc'): ProcessFigures | undefined {
  const stat = readText(join(procRoot, String(pid), 'stat'));
  if (stat === undefined) return undefined;
  const f = statFieldsAfterName(stat);
  const cpuTicks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  if (!Number.isFinite(cpuTicks)) return undefined;
  const io = readText(join(procRoot, String(pid), 'io'));
  const read = io && /^read_bytes: (\d+)$/m.exec(io);
  const write = io && /^write_bytes: (\d+)$/m.exec(io);
  return { start: f[19]!, ppid: Number(f[1]), zombie: f[0] === 'Z', cpuTicks, ioBytes: read && write ? Number(read[1]) + Number(write[1]) : undefined };
}

export type ProcessTreeRead =
  | { ok: true; cpuUs: number; ioBytes: number; processes: number }
  | { ok: false; reason: 'cgroup-gone' | 'no-processes' };

/** The running total for one cgroup's processes; one instance per cgroup, read by one caller. */
export class ProcessTreeUsage {
  private members = new Map<number, ProcessFigures>();
  /** Per parent: what was counted for its children that left, owed against its figure's growth. */
  private owedCpu = new Map<number, number>();
  private owedIo = new Map<number, number>();
  private cpuTicks = 0;
  private ioBytes = 0;
  private started = false;

  constructor(private readonly cgroupDir: string, private readonly procRoot = '/proc') {}

  read(): ProcessTreeRead {
    const procs = readText(join(this.cgroupDir, 'cgroup.procs'));
    if (procs === undefined) return { ok: false, reason: 'cgroup-gone' };
    const now = new Map<number, ProcessFigures>();
    for (const line of procs.split('\n')) {
      const pid = Number(line);
      if (!line || !Number.isInteger(pid)) continue;
      const figures = readProcessFigures(pid, this.procRoot);
      if (figures) now.set(pid, figures);
    }
    // Those that left: a zombie is still read; a reaped one's count is owed by its parent.
    const left = new Map<number, ProcessFigures>();
    for (const [pid, before] of this.members) {
      if (now.get(pid)?.start === before.start) continue;
      const still = now.has(pid) ? undefined : readProcessFigures(pid, this.procRoot);
      if (still?.start === before.start && still.zombie) now.set(pid, still);
      else left.set(pid, before);
    }
    // Children before their parents: a parent that left too (a `timeout` and the command it
    // waited for) hands what it owes on to its own parent.
    const depth = (pid: number): number => {
      let d = 0;
      for (let p = left.get(pid)?.ppid; p !== undefined && left.has(p) && d < left.size; p = left.get(p)?.ppid) d++;
      return d;
    };
    for (const pid of [...left.keys()].sort((a, b) => depth(b) - depth(a))) this.leave(pid, left.get(pid)!, now, left);
    const first = !this.started;
    this.started = true;
    for (const [pid, figures] of now) {
      const before = this.members.get(pid);
      if (before?.start === figures.start) {
        this.cpuTicks += this.settle(this.owedCpu, pid, figures.cpuTicks - before.cpuTicks);
        if (figures.ioBytes !== undefined && before.ioBytes !== undefined) this.ioBytes += this.settle(this.owedIo, pid, figures.ioBytes - before.ioBytes);
        else if (figures.ioBytes === undefined && before.ioBytes !== undefined) figures.ioBytes = before.ioBytes;
      } else if (!first && (this.members.has(figures.ppid) || now.has(figures.ppid))) {
        // Forked inside since the last read: all it used, it used here.
        this.cpuTicks += figures.cpuTicks;
        this.ioBytes += figures.ioBytes ?? 0;
      }
    }
    this.members = now;
    for (const owed of [this.owedCpu, this.owedIo]) for (const pid of owed.keys()) if (!now.has(pid)) owed.delete(pid);
    if (now.size === 0) return { ok: false, reason: 'no-processes' };
    return { ok: true, cpuUs: (this.cpuTicks * 1_000_000) / TICKS_PER_SECOND, ioBytes: this.ioBytes, processes: now.size };
  }

  /** A process left the cgroup (reaped, or moved out): its parent, if one of ours, will carry its figure. */
  private leave(pid: number, before: ProcessFigures, now: Map<number, ProcessFigures>, left: Map<number, ProcessFigures>): void {
    const parent = now.has(before.ppid) || left.has(before.ppid) ? before.ppid : undefined;
    if (parent !== undefined) {
      this.owedCpu.set(parent, (this.owedCpu.get(parent) ?? 0) + before.cpuTicks + (this.owedCpu.get(pid) ?? 0));
      this.owedIo.set(parent, (this.owedIo.get(parent) ?? 0) + (before.ioBytes ?? 0) + (this.owedIo.get(pid) ?? 0));
    }
    this.owedCpu.delete(pid);
    this.owedIo.delete(pid);
  }

  /** The part of a process's growth not owed for children already counted. */
  private settle(owed: Map<number, number>, pid: number, growth: number): number {
    if (growth <= 0) return 0;
    const debt = owed.get(pid) ?? 0;
    const paid = Math.min(debt, growth);
    if (debt - paid > 0) owed.set(pid, debt - paid);
    else owed.delete(pid);
    return growth - paid;
  }
}
