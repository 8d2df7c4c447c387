import { readdir, readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { readStatFields } from './proc-stat.js';
import { Deadline } from '../shared/deadline.js';

/**
 * An argv prefix that makes a child die with the process that started it: util-linux's
 * setpriv sets PR_SET_PDEATHSIG in the child and execs the real program, which keeps it
 * (it is cleared only for set-uid programs). Node cannot set it itself. Without it, a
 * `doze vm` owner killed with SIGKILL mid-wake left its restoring QEMU (`-incoming defer`)
 * spinning at 97 % of a core with nobody to stop it.
 */
export const DIE_WITH_PARENT = ['setpriv', '--pdeathsig', 'KILL', '--'] as const;

/** `binary args…` run so that it dies with us. */
export function diesWithParent(argv: readonly string[]): string[] {
  return [...DIE_WITH_PARENT, ...argv];
}

/**
 * Processes whose command line contains `needle` as one argument or inside one (a socket path a
 * VMM was given): what an earlier owner that died before its death signal existed may have left.
 * With `program`, only those whose executable's name starts with it (`qemu-system`).
 */
export async function processesMentioning(needle: string, options: { program?: string } = {}): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      // A zombie has an empty command line: it holds nothing and is gone once reaped.
      const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
      if (options.program && !basename(args[0] ?? '').startsWith(options.program)) continue;
      if (args.some((arg) => arg.includes(needle))) pids.push(pid);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

/** SIGKILLs each pid and waits (bounded) until it is gone; returns the ones that were killed. */
export async function killAndWait(pids: number[], deadlineMs = 3000): Promise<number[]> {
  const killed = pids.filter((pid) => {
    try {
      process.kill(pid, 'SIGKILL');
      return true;
    } catch {
      return false;
    }
  });
  const deadline = new Deadline('waiting for the killed to exit', deadlineMs);
  for (const pid of killed) {
    while (!deadline.expired && (await isAlive(pid))) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return killed;
}

async function isAlive(pid: number): Promise<boolean> {
  // A killed child of another (dead) owner is a zombie until init reaps it: not alive.
  const fields = await readStatFields(pid);
  return fields !== undefined && fields[0] !== 'Z';
}
