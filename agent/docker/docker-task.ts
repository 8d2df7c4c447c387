import { access } from 'node:fs/promises';
import { messageOf } from '../shared/errors.js';
import { cgroupDirectory, readProcCgroup } from './container-cgroup.js';
import { DockerError, type DockerEngine } from './engine-client.js';
import { describeTaskContainerProblem, findTaskContainer } from './task-container.js';

/*
 * What a node holds for a Nomad docker task, found through the Engine API
 * and /proc (docs/docker.md): the container's cgroup (to freeze) and, for a
 * bridge-mode group, the network namespace its veth is in. The namespace is
 * the pause container's SandboxKey (Nomad's docker driver owns the group's
 * namespace, so there is no /var/run/netns/<alloc>), else the task's own
 * /proc/<pid>/ns/net. Anything missing is a reason, never a throw: the
 * allocation stays pending and awake.
 */

export interface DockerTaskFacts {
  containerId: string;
  pid: number;
  cgroup: { version: 1 | 2; path: string };
  /** The network namespace path (bridge mode), where eth0's host peer is found. */
  netns: string;
  /**
   * The container's own address on a Docker network (a task with `network_mode = "bridge"`),
   * with its published ports: host port → container port.
   */
  dockerNetwork?: { ip: string; published: Map<number, number> };
}

export type DockerTaskLookup = { kind: 'found'; facts: DockerTaskFacts } | { kind: 'missing'; reason: string };

export async function lookUpDockerTask(engine: DockerEngine, allocId: string, task: string, cgroupRoot: string, signal?: AbortSignal): Promise<DockerTaskLookup> {
  let found;
  try {
    found = await findTaskContainer(engine, allocId, task, signal);
  } catch (error) {
    if (error instanceof DockerError) return { kind: 'missing', reason: error.message };
    throw error;
  }
  if (found.kind === 'problem') return { kind: 'missing', reason: describeTaskContainerProblem(found.problem) };
  const { container, pause } = found;
  const { Pid: pid } = container.State;
  let relative;
  try {
    relative = await readProcCgroup(pid);
  } catch (error) {
    return { kind: 'missing', reason: `container ${container.Id.slice(0, 12)}: /proc/${pid}/cgroup: ${messageOf(error)} (it exited?)` };
  }
  if (!relative) return { kind: 'missing', reason: `container ${container.Id.slice(0, 12)}: /proc/${pid}/cgroup names no freezer or cgroup2 cgroup` };
  // Read from inside a cgroup namespace of its own (an agent container without cgroupns = "host"), the path is relative to it.
  if (relative.relative.split('/').includes('..')) {
    return { kind: 'missing', reason: `container ${container.Id.slice(0, 12)}: /proc/${pid}/cgroup reads ${relative.relative}: the agent runs in a cgroup namespace of its own; run it in the host's (Docker: cgroupns = "host")` };
  }
  const cgroup = cgroupDirectory(cgroupRoot, relative);
  try {
    await access(cgroup.controlFile);
  } catch {
    return { kind: 'missing', reason: `container ${container.Id.slice(0, 12)}: its cgroup ${cgroup.path} has no ${cgroup.controlFile.split('/').pop()} (cgroup root ${cgroupRoot})` };
  }
  const sandbox = pause?.NetworkSettings.SandboxKey || container.NetworkSettings.SandboxKey;
  const netns = sandbox || `/proc/${pid}/ns/net`;
  const ip = Object.values(container.NetworkSettings.Networks ?? {}).find((n) => n.IPAddress)?.IPAddress;
  const published = new Map<number, number>();
  for (const [port, bindings] of Object.entries(container.NetworkSettings.Ports ?? {})) {
    const [number, protocol] = port.split('/');
    if (protocol === 'tcp') for (const b of bindings ?? []) published.set(Number(b.HostPort), Number(number));
  }
  const dockerNetwork = ip && !pause ? { ip, published } : undefined;
  return { kind: 'found', facts: { containerId: container.Id, pid, cgroup: { version: cgroup.version, path: cgroup.path }, netns, ...(dockerNetwork ? { dockerNetwork } : {}) } };
}
