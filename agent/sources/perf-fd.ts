import { readdir, readlink } from 'node:fs/promises';

/** True once `pid` holds a perf event fd: a reader that has it cannot miss later events. */
export async function holdsPerfEvent(pid: number): Promise<boolean> {
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (target === 'anon_inode:[perf_event]') return true;
  }
  return false;
}
