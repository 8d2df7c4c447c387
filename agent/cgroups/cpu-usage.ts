import { readFileSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';
import { statFieldsAfterName } from '../process/proc-stat.js';
import { cgroupsOfProcess } from './process-cgroups.js';
import { ProcessTreeUsage } from './process-tree-usage.js';

/*
 * What a workload used so far: CPU time and block I/O, read from the kernel's own
 * counters. The busy guard (agent/detector/busy-guard.ts) compares two readings to
 * tell an instance still computing after it answered from one that is really idle.
 *
 * Where the counters are:
 *   cgroup v1: cpuacct.usage (ns) in the cpuacct hierarchy, blkio.throttle.io_service_bytes
 *              ("Total" line) in the blkio hierarchy, each at the same relative path as the
 *              instance's freezer cgroup. Nomad makes its v1 task cgroups in freezer, cpu and
 *              memory at one relative path (client/lib/cgroupslib/editor.go, lifeCG1.paths);
 *              where cpu and cpuacct are mounted together that path has cpuacct.usage too.
 *              Otherwise the cgroup its processes are in (/proc/PID/cgroup), if it holds exactly
 *              them: never a shared one, nor the hierarchy's root (that would be the whole node).
 *   cgroup v2: cpu.stat usage_usec and io.stat rbytes/wbytes, in the cgroup's own directory.
 *   neither (a v1 freezer cgroup made for the freezer alone, its processes in the node-wide root
 *              of cpuacct): the sum of /proc/PID/stat and /proc/PID/io over its cgroup.procs,
 *              kept so it never goes backwards as processes come and go (process-tree-usage.ts).
 *   a process (a VM's QEMU): utime + stime of /proc/PID/stat (all its threads, in clock ticks)
 *              and read_bytes + write_bytes of /proc/PID/io.
 * Every read is a synchronous read of one small kernel file (microseconds): it happens only
 * for an instance whose idle deadline is due, so a thread-pool hop would cost more than it saves.
 */

/** Where an instance's usage is counted. */
export type UsageSource =
  | { kind: 'cgroup'; version: 1 | 2; /** The freezer cgroup directory (v1) or the cgroup (v2). */ dir: string; root?: string }
  | { kind: 'process'; pid: number };

/**
 * What the busy guard reads for an instance (status page, GET /api/instances): a CPU cgroup
 * holding exactly its processes, /proc summed over its processes (or its VMM's process), or
 * nothing, and why.
 */
export type UsageUnavailableReason =
  /** busyCpu is 0. */
  | 'guard-off'
  /** The runtime's workload has no counters doze reads (Cloud Hypervisor, Firecracker, nomad-scale). */
  | 'runtime-has-no-counters'
  /** The cgroup was not found (not located yet, or gone with its allocation). */
  | 'cgroup-gone'
  /** The cgroup holds no process (its task has not started yet). */
  | 'no-processes'
  /** The VM's process is not known yet (QEMU pause without a cgroup: learnt by its first reclaim). */
  | 'no-process-yet'
  /** Nothing was read yet. */
  | 'not-read-yet';

export type UsageSourceView =
  | { kind: 'cpu-cgroup'; file: string }
  | { kind: 'procfs'; processes: number }
  | { kind: 'unavailable'; reason: UsageUnavailableReason };

const UNAVAILABLE_TEXT: Record<UsageUnavailableReason, string> = {
  'guard-off': 'busyCpu is 0: the busy guard is off',
  'runtime-has-no-counters': 'this runtime\'s workload has no CPU counters doze reads: it sleeps on traffic alone',
  'cgroup-gone': 'its cgroup was not found: it sleeps on traffic alone until it is',
  'no-processes': 'its cgroup holds no process yet',
  'no-process-yet': 'its VM process is not known yet (learnt by its first reclaim)',
  'not-read-yet': 'not read yet',
};

/** The reason as the status page and the log say it. */
export function describeUnavailable(reason: UsageUnavailableReason): string {
  return UNAVAILABLE_TEXT[reason];
}

export interface UsageReading {
  /** What was read; readings of different identities (a new QEMU process) do not compare. */
  identity: string;
  /** Cumulative CPU time, microseconds. */
  cpuUs: number;
  /** Cumulative bytes read and written on block devices; undefined when not counted here. */
  ioBytes: number | undefined;
}

const CGROUP_ROOT = '/sys/fs/cgroup';
/** USER_HZ: /proc/PID/stat counts CPU in these ticks on every Linux ABI doze runs on. */
const TICKS_PER_SECOND = 100;

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

interface CgroupFiles {
  cpu: { file: string; format: 'cpuacct' | 'cpu.stat' } | undefined;
  io: { file: string; format: 'blkio' | 'io.stat' } | undefined;
}

/** Resolved file locations per freezer cgroup, so a decision reads counters and nothing else. */
const resolved = new Map<string, CgroupFiles>();
/** Cgroups read through /proc (no CPU cgroup of their own), each with its running total. */
const procTrees = new Map<string, { tree: ProcessTreeUsage; series: number }>();
let procTreeSeries = 0;
/** What the last read of each cgroup used (status). */
const lastSource = new Map<string, UsageSourceView>();
/** Cgroups with no CPU accounting found, and when: looked for again only after RETRY_MS. */
const unresolved = new Map<string, number>();
const RETRY_MS = 5000;

const procsOf = (dir: string) => (readText(join(dir, 'cgroup.procs')) ?? '').split('\n').filter(Boolean).sort().join(' ');

/**
 * The cgroup (relative to its hierarchy) that the members of `dir` are in for a v1
 * `controller`, when it holds exactly them: a cgroup shared with other processes (the
 * Nomad client's own, the hierarchy's root) would count their CPU as the instance's.
 */
function memberCgroup(dir: string, root: string, controllers: string[], controller: string): string | undefined {
  const members = procsOf(dir);
  const pid = members.split(' ')[0];
  if (!pid) return undefined;
  for (const { controllers: names, path } of cgroupsOfProcess(pid) ?? []) {
    if (!names.includes(controller) || path === '/') continue;
    const rel = path.slice(1);
    if (controllers.some((c) => procsOf(join(root, c, rel)) === members)) return rel;
  }
  return undefined;
}

function firstExisting(files: string[]): string | undefined {
  return files.find((file) => readText(file) !== undefined);
}

function resolveV1(dir: string, root: string): CgroupFiles {
  const freezerBase = join(root, 'freezer');
  const rel = isAbsolute(dir) && dir.startsWith(`${freezerBase}/`) ? relative(freezerBase, dir) : undefined;
  const candidates = (controllers: string[], file: string, fallbackController: string) => {
    const files = rel === undefined ? [] : controllers.map((c) => join(root, c, rel, file));
    const member = memberCgroup(dir, root, controllers, fallbackController);
    if (member !== undefined) files.push(...controllers.map((c) => join(root, c, member, file)));
    return files;
  };
  const cpu = firstExisting(candidates(['cpuacct', 'cpu,cpuacct', 'cpu'], 'cpuacct.usage', 'cpuacct'));
  const io = firstExisting(candidates(['blkio'], 'blkio.throttle.io_service_bytes', 'blkio'));
  return { cpu: cpu ? { file: cpu, format: 'cpuacct' } : undefined, io: io ? { file: io, format: 'blkio' } : undefined };
}

function resolveV2(dir: string): CgroupFiles {
  const cpu = join(dir, 'cpu.stat');
  const io = join(dir, 'io.stat');
  return {
    cpu: readText(cpu) !== undefined ? { file: cpu, format: 'cpu.stat' } : undefined,
    io: readText(io) !== undefined ? { file: io, format: 'io.stat' } : undefined,
  };
}

/** Sum of the "Total" lines of blkio.throttle.io_service_bytes (one per device, and one overall). */
export function parseBlkio(text: string): number {
  const overall = /^Total (\d+)$/m.exec(text);
  if (overall) return Number(overall[1]);
  let sum = 0;
  for (const m of text.matchAll(/^\S+ Total (\d+)$/gm)) sum += Number(m[1]);
  return sum;
}

/** Sum of rbytes and wbytes over every device line of io.stat. */
export function parseIoStat(text: string): number {
  let sum = 0;
  for (const m of text.matchAll(/\b[rw]bytes=(\d+)/g)) sum += Number(m[1]);
  return sum;
}

/** usage_usec of cpu.stat. */
export function parseCpuStat(text: string): number | undefined {
  const m = /^usage_usec (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** utime + stime of /proc/PID/stat, in microseconds (fields after the command name, which may hold spaces). */
export function parseProcStat(text: string): number | undefined {
  const fields = statFieldsAfterName(text);
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? (ticks * 1_000_000) / TICKS_PER_SECOND : undefined;
}

/** read_bytes + write_bytes of /proc/PID/io. */
export function parseProcIo(text: string): number | undefined {
  const read = /^read_bytes: (\d+)$/m.exec(text);
  const write = /^write_bytes: (\d+)$/m.exec(text);
  return read && write ? Number(read[1]) + Number(write[1]) : undefined;
}

function readCgroup(source: Extract<UsageSource, { kind: 'cgroup' }>): UsageReading | undefined {
  const root = source.root ?? CGROUP_ROOT;
  const key = `${source.version}:${source.dir}`;
  let files = resolved.get(key);
  if (!files) {
    const failedAt = unresolved.get(key);
    if (failedAt === undefined || Date.now() - failedAt >= RETRY_MS) {
      files = source.version === 1 ? resolveV1(source.dir, root) : resolveV2(source.dir);
      if (files.cpu) {
        unresolved.delete(key);
        resolved.set(key, files);
        procTrees.delete(key);
      } else {
        unresolved.set(key, Date.now()); // one may appear (a task's first process): look again later
        files = undefined;
      }
    }
  }
  if (!files) return readProcTree(key, source.dir);
  const cpuText = readText(files.cpu!.file);
  if (cpuText === undefined) {
    resolved.delete(key); // the cgroup went (or moved) with its allocation
    lastSource.set(key, { kind: 'unavailable', reason: 'cgroup-gone' });
    return undefined;
  }
  const cpuUs = files.cpu!.format === 'cpuacct' ? Number(cpuText.trim()) / 1000 : parseCpuStat(cpuText);
  if (cpuUs === undefined || !Number.isFinite(cpuUs)) return undefined;
  const ioText = files.io ? readText(files.io.file) : undefined;
  const ioBytes = ioText === undefined ? undefined : files.io!.format === 'blkio' ? parseBlkio(ioText) : parseIoStat(ioText);
  lastSource.set(key, { kind: 'cpu-cgroup', file: files.cpu!.file });
  return { identity: files.cpu!.file, cpuUs, ioBytes };
}

/** No CPU cgroup holds exactly its processes: sum /proc over its cgroup.procs. */
function readProcTree(key: string, dir: string): UsageReading | undefined {
  let entry = procTrees.get(key);
  if (!entry) procTrees.set(key, (entry = { tree: new ProcessTreeUsage(dir), series: ++procTreeSeries }));
  const read = entry.tree.read();
  if (!read.ok) {
    if (read.reason === 'cgroup-gone') procTrees.delete(key); // a new cgroup at that path starts a new series
    lastSource.set(key, { kind: 'unavailable', reason: read.reason });
    return undefined;
  }
  lastSource.set(key, { kind: 'procfs', processes: read.processes });
  return { identity: `procfs ${dir} #${entry.series}`, cpuUs: read.cpuUs, ioBytes: read.ioBytes };
}

function readProcess(pid: number): UsageReading | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  const cpuUs = stat === undefined ? undefined : parseProcStat(stat);
  if (cpuUs === undefined) return undefined;
  const io = readText(`/proc/${pid}/io`);
  // The start time (field 22) tells a reused pid from the process read before.
  const start = statFieldsAfterName(stat!)[19];
  return { identity: `pid ${pid} start ${start}`, cpuUs, ioBytes: io === undefined ? undefined : parseProcIo(io) };
}

/** The workload's usage so far, or undefined when it cannot be read (gone, or not counted here). */
export function readUsage(source: UsageSource): UsageReading | undefined {
  return source.kind === 'cgroup' ? readCgroup(source) : readProcess(source.pid);
}

/** What the last readUsage of `source` read, or why it read nothing. */
export function usageSourceOf(source: UsageSource): UsageSourceView {
  if (source.kind === 'process') return { kind: 'procfs', processes: 1 };
  return lastSource.get(`${source.version}:${source.dir}`) ?? { kind: 'unavailable', reason: 'not-read-yet' };
}
