import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/*
 * A container's cgroup, read from its init process (/proc/<pid>/cgroup), as
 * the kernel reports it whatever Docker's cgroup driver: cgroupfs puts it at
 * /docker/<id>, systemd at /system.slice/docker-<id>.scope (docs/docker.md).
 * On cgroup v1 the freezer hierarchy's line names the directory to freeze
 * (`<n>:freezer:/docker/<id>`); on cgroup v2 the `0::` line does (a v1 host
 * also has a `0::` line for its empty unified hierarchy, so v1's freezer wins).
 */

export interface ContainerCgroup {
  version: 1 | 2;
  /** The cgroup as /proc shows it, relative to its hierarchy's root: "/docker/<id>". */
  relative: string;
}

/** The freezer cgroup in a /proc/<pid>/cgroup text, or undefined when it names none. */
export function parseProcCgroup(text: string): ContainerCgroup | undefined {
  let unified: string | undefined;
  for (const line of text.split('\n')) {
    const [, , controllers, path] = /^(\d+):([^:]*):(.*)$/.exec(line.trim()) ?? [];
    if (controllers === undefined || path === undefined) continue;
    if (controllers.split(',').includes('freezer')) return { version: 1, relative: path };
    if (controllers === '') unified = path;
  }
  return unified === undefined ? undefined : { version: 2, relative: unified };
}

/** The cgroup directory to freeze, under `root` (/sys/fs/cgroup, or a test's tree), with its control file. */
export function cgroupDirectory(root: string, cgroup: ContainerCgroup): { version: 1 | 2; path: string; controlFile: string } {
  const path = cgroup.version === 1 ? join(root, 'freezer', cgroup.relative) : join(root, cgroup.relative);
  return { version: cgroup.version, path, controlFile: join(path, cgroup.version === 1 ? 'freezer.state' : 'cgroup.freeze') };
}

export async function readProcCgroup(pid: number): Promise<ContainerCgroup | undefined> {
  return parseProcCgroup(await readFile(`/proc/${pid}/cgroup`, 'utf8'));
}
