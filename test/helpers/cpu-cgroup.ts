import type { Teardown } from './teardown.js';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { removeSharedParent, rmdirRetry } from './cgroup.js';

const ROOT = '/sys/fs/cgroup';

export interface AccountingCgroups {
  /** cpuacct (and blkio, when mounted) cgroups at `name`, the same relative path as the freezer one. */
  dirs: string[];
  /** Moves a process (every thread of it: v1 cgroup.procs) into them. */
  join(pid: number): Promise<void>;
}

/**
 * The v1 cpuacct and blkio cgroups an instance's CPU and block I/O are counted in,
 * at the freezer cgroup's relative path, as Nomad lays out its v1 task cgroups.
 * Teardown moves what is left back to the root and removes them.
 */
export async function createAccountingCgroups(t: Teardown, name: string): Promise<AccountingCgroups> {
  const dirs = ['cpuacct', 'blkio'].filter((c) => existsSync(join(ROOT, c, 'cgroup.procs'))).map((c) => join(ROOT, c, name));
  if (!dirs.some((d) => d.includes('/cpuacct/'))) throw new Error('these tests count CPU in the cgroup v1 cpuacct hierarchy at /sys/fs/cgroup/cpuacct');
  t.teardown(async () => {
    for (const dir of dirs) {
      // Back to the hierarchy's root: the freezer cgroup's teardown kills them, maybe after this one.
      const pids = (await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
      for (const pid of pids) await writeFile(join(ROOT, dir.slice(ROOT.length + 1).split('/')[0]!, 'cgroup.procs'), pid).catch(() => undefined);
      await rmdirRetry(dir);
      await removeSharedParent(dir);
    }
  });
  for (const dir of dirs) await mkdir(dir, { recursive: true });
  return {
    dirs,
    join: async (pid) => {
      for (const dir of dirs) await writeFile(join(dir, 'cgroup.procs'), String(pid));
    },
  };
}
