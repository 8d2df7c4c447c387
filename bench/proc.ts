/** A process's footprint from /proc, for benchmarks: resident memory, open file descriptors, children. */
import { readdir, readFile, readlink } from 'node:fs/promises';

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

export async function openFds(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

/** Direct children of `pid` whose command name (comm) is `comm`. */
export async function childrenNamed(pid: number, comm: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const open = stat.indexOf('(');
    const close = stat.lastIndexOf(')');
    if (open < 0 || close < 0 || stat.slice(open + 1, close) !== comm) continue;
    if (Number(stat.slice(close + 2).split(' ')[1]) === pid) found.push(Number(entry));
  }
  return found;
}

/** Open fds by kind (socket, pipe, anon_inode:[eventpoll], a path's directory…), for telling a leak from a transient. */
export async function fdKinds(pid: number): Promise<Map<string, number>> {
  const kinds = new Map<string, number>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => 'gone');
    const kind = target.startsWith('/') ? target.slice(0, target.lastIndexOf('/') + 1) : target.replace(/:\[\d+\]$/, '');
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return kinds;
}

/** `pid`'s direct children as `pid state elapsed-s command line`: what a stuck process is waiting on. */
export async function describeChildren(pid: number): Promise<string[]> {
  const ticks = 100; // USER_HZ
  const uptime = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) !== pid) continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ').trim();
    const age = uptime - Number(fields[19]) / ticks;
    found.push(`${entry} ${fields[0]} ${age.toFixed(0)}s ${cmdline.slice(0, 160)}`);
  }
  return found;
}

/** CPU time (user + system) `pid` has used so far, in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ ticks
}
