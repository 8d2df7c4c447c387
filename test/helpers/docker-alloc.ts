import { randomInt, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { uniqueSuffix } from './names.js';
import { sh, shQuiet } from './sh.js';
import type { StartedContainer, TestDockerd } from './dockerd.js';
import type { Teardown } from './teardown.js';
import { get } from './http.js';
import { until } from './until.js';

/*
 * A bridge-mode allocation with docker tasks, made the way Nomad's docker
 * driver and CNI bridge make it (drivers/docker/network.go, driver.go;
 * docs/docker.md): the pause container nomad_init_<alloc> (network mode
 * none, labelled com.hashicorp.nomad.alloc_id) owns the namespace; a veth
 * whose inside end is eth0 joins it to a bridge standing in for Nomad's
 * `nomad` bridge, with the gateway address on the bridge; each task's
 * container `<task>-<alloc>` joins the namespace (network mode
 * container:<pause id>) and carries only the alloc_id label (the task_name
 * label needs the client's extra_labels).
 */

export interface DockerAllocation {
  allocId: string;
  pause: StartedContainer;
  /** The host side of the veth, enslaved to the bridge. */
  hostIf: string;
  bridge: string;
  instanceIp: string;
  gatewayIp: string;
}

const ALLOC_LABEL = 'com.hashicorp.nomad.alloc_id';

/** Pause container, bridge and veth; teardown removes the bridge and veth (the containers go with the dockerd). */
export async function createDockerAllocation(t: Teardown, dockerd: TestDockerd, allocId = randomUUID()): Promise<DockerAllocation> {
  const id = uniqueSuffix();
  const block = randomInt(1, 255);
  const gatewayIp = `10.215.${block}.1`;
  const instanceIp = `10.215.${block}.2`;
  const bridge = `dzb${id}`;
  const hostIf = `dz${id}h`;
  const peer = `dz${id}p`;
  t.teardown(async () => {
    await shQuiet('ip', ['link', 'del', hostIf]);
    await shQuiet('ip', ['link', 'del', bridge]);
  });
  const pause = await dockerd.run({ name: `nomad_init_${allocId}`, cmd: ['/bin/busybox', 'sleep', '2147483647'], labels: { [ALLOC_LABEL]: allocId }, networkMode: 'none' });
  await sh('ip', ['link', 'add', bridge, 'type', 'bridge']);
  await sh('ip', ['addr', 'add', `${gatewayIp}/24`, 'dev', bridge]);
  await sh('ip', ['link', 'set', bridge, 'up']);
  await sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peer]);
  await sh('ip', ['link', 'set', hostIf, 'master', bridge, 'up']);
  await sh('ip', ['link', 'set', peer, 'netns', String(pause.pid)]);
  const inside = (args: string[]) => sh('nsenter', [`--net=${pause.sandboxKey}`, 'ip', ...args]);
  await inside(['link', 'set', peer, 'name', 'eth0']);
  await inside(['addr', 'add', `${instanceIp}/24`, 'dev', 'eth0']);
  await inside(['link', 'set', 'eth0', 'up']);
  await inside(['link', 'set', 'lo', 'up']);
  await inside(['route', 'add', 'default', 'via', gatewayIp]);
  return { allocId, pause, hostIf, bridge, instanceIp, gatewayIp };
}

/** A task's container in the allocation's namespace, named and labelled as Nomad's docker driver does. */
export async function startDockerTask(
  dockerd: TestDockerd,
  alloc: DockerAllocation,
  task: string,
  cmd: string[],
  options: { env?: Record<string, string>; memoryBytes?: number; readyUrl?: string } = {},
): Promise<StartedContainer & { freezerState: () => Promise<string>; cgroupDir: string }> {
  const started = await dockerd.run({
    name: `${task}-${alloc.allocId}`,
    cmd,
    labels: { [ALLOC_LABEL]: alloc.allocId },
    networkMode: `container:${alloc.pause.id}`,
    env: options.env,
    memoryBytes: options.memoryBytes,
  });
  if (options.readyUrl) await until(`${task} to answer`, async () => (await get(options.readyUrl!, 1000)).status === 200, { timeoutMs: 20_000, everyMs: 50, retryErrors: true });
  return { ...started, ...containerCgroup(started.id) };
}

/** The container's freezer cgroup (Docker's cgroupfs driver on cgroup v1: /docker/<id>). */
export function containerCgroup(id: string): { freezerState: () => Promise<string>; cgroupDir: string } {
  const cgroupDir = `/sys/fs/cgroup/freezer/docker/${id}`;
  return { cgroupDir, freezerState: async () => (await readFile(`${cgroupDir}/freezer.state`, 'utf8')).trim() };
}
