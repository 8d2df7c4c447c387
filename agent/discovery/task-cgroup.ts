import { access } from 'node:fs/promises';
import { join } from 'node:path';

/*
 * Where Nomad puts a task's processes (Nomad's client cgroupslib; see
 * docs/reference.md "Task cgroups"): for exec, raw_exec, java and the other
 * executor-based drivers,
 *   cgroup v1: <root>/freezer/nomad/<allocID>.<task>
 *   cgroup v2: <root>/nomad.slice/share.slice/<allocID>.<task>.scope
 *              (reserve.slice instead of share.slice for tasks with reserved cores)
 * Docker tasks live in Docker's own cgroup (docker/<id>, system.slice/docker-<id>.scope),
 * which the allocation does not name: agent/docker/ finds it through the engine. `root` is the cgroup filesystem root
 * (/sys/fs/cgroup); tests point it at a tree of their own.
 */

export interface TaskCgroupCandidate {
  version: 1 | 2;
  /** The cgroup directory. */
  path: string;
  /** The control file that must exist for the freezer runtime to use it. */
  controlFile: string;
}

export function nomadTaskCgroupCandidates(root: string, allocId: string, task: string): TaskCgroupCandidate[] {
  const v1 = join(root, 'freezer', 'nomad', `${allocId}.${task}`);
  const scope = `${allocId}.${task}.scope`;
  const v2 = ['share.slice', 'reserve.slice'].map((slice) => join(root, 'nomad.slice', slice, scope));
  return [
    { version: 1, path: v1, controlFile: join(v1, 'freezer.state') },
    ...v2.map((path) => ({ version: 2 as const, path, controlFile: join(path, 'cgroup.freeze') })),
  ];
}

/** The task's cgroup, if one of Nomad's layouts has it (with a freezer); undefined while the task has not started. */
export async function findNomadTaskCgroup(root: string, allocId: string, task: string): Promise<TaskCgroupCandidate | undefined> {
  for (const candidate of nomadTaskCgroupCandidates(root, allocId, task)) {
    try {
      await access(candidate.controlFile);
      return candidate;
    } catch {
      // next layout
    }
  }
  return undefined;
}

/** Drivers whose tasks are not in Nomad's task cgroups, nor found through an engine doze talks to (docker is: agent/docker/). */
export const OWN_CGROUP_DRIVERS = new Set(['podman', 'containerd-driver', 'nspawn']);
