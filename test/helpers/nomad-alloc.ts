import { randomInt, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp, type TestApp } from './app.js';
import type { TestCgroup } from './cgroup.js';
import { uniqueSuffix } from './names.js';
import type { TestNetns } from './netns.js';
import { sh, shQuiet } from './sh.js';
import type { Teardown } from './teardown.js';
import { removeCgroup, removeSharedParent, rmdirRetry } from './cgroup.js';

/*
 * Kernel objects laid out the way a Nomad client lays out a bridge-mode
 * allocation of an exec-style task, so discovery finds them by the same
 * rules it uses on a real node:
 *  - the network namespace is /var/run/netns/<allocID> (`ip netns add`),
 *    with the allocation side of a veth named eth0;
 *  - the task's cgroup is <root>/freezer/nomad/<allocID>.<task> (v1) or
 *    <root>/nomad.slice/share.slice/<allocID>.<task>.scope (v2), where
 *    <root> is a private directory whose `freezer` (v1) or `nomad.slice`
 *    (v2) entry links into a real hierarchy under doze-test/ — so tests never
 *    touch a real Nomad's nomad/ tree.
 */

const V1 = '/sys/fs/cgroup/freezer';
const V2 = '/sys/fs/cgroup/unified';

export interface NomadCgroupRoot {
  /** What the agent's `nomad.cgroupRoot` is set to. */
  root: string;
  version: 1 | 2;
}

/** A private cgroup root; teardown removes what allocations left and the real directories behind it. */
export async function createNomadCgroupRoot(t: Teardown, version: 1 | 2 = 1): Promise<NomadCgroupRoot> {
  const hierarchy = version === 1 ? V1 : V2;
  if (!existsSync(join(hierarchy, 'cgroup.procs'))) {
    throw new Error(`these tests need the cgroup ${version === 1 ? 'v1 freezer' : 'v2'} hierarchy at ${hierarchy}`);
  }
  const real = join(hierarchy, 'doze-test', `dz-${uniqueSuffix()}`);
  const root = await mkdtemp(join(tmpdir(), 'dz-cgroot-'));
  t.teardown(async () => {
    const parents = version === 1 ? [join(real, 'nomad'), real] : [join(real, 'share.slice'), real];
    for (const dir of parents) await rmdirRetry(dir);
    await removeSharedParent(real);
    await rm(root, { recursive: true, force: true });
  });
  await mkdir(real, { recursive: true });
  if (version === 1) {
    await symlink(real, join(root, 'freezer'));
    await mkdir(join(root, 'freezer', 'nomad'));
  } else {
    await symlink(real, join(root, 'nomad.slice'));
    await mkdir(join(root, 'nomad.slice', 'share.slice'));
  }
  return { root, version };
}

export interface TestAllocation {
  allocId: string;
  task: string;
  ns: TestNetns;
  cgroup: TestCgroup;
  app: TestApp;
}

/** Namespace (named after the allocation), veth, task cgroup and the app in it: one allocation's kernel side. */
export async function createAllocationEnv(
  t: Teardown,
  cgroups: NomadCgroupRoot,
  options: { allocId?: string; task?: string; addresses?: TestAddresses } = {},
): Promise<TestAllocation> {
  const allocId = options.allocId ?? randomUUID();
  const task = options.task ?? 'app';
  const ns = await createAllocNetns(t, allocId, options.addresses);
  const cgroup = await createTaskCgroup(t, cgroups, allocId, task);
  const app = await startApp(t, ns, cgroup, allocId.slice(0, 8));
  return { allocId, task, ns, cgroup, app };
}

export interface TestAddresses {
  hostIp: string;
  instanceIp: string;
}

/** A /30 of 10.213.0.0/16 (test hosts only tests talk to): the host end and the allocation's address. */
export function pickTestAddresses(): TestAddresses {
  const block = randomInt(0, 16384) * 4;
  return { hostIp: `10.213.${block >> 8}.${(block & 0xff) + 1}`, instanceIp: `10.213.${block >> 8}.${(block & 0xff) + 2}` };
}

/** `ip netns add <allocID>` and a veth whose inside end is eth0, as Nomad's bridge CNI chain leaves it. */
export async function createAllocNetns(t: Teardown, allocId: string, addresses = pickTestAddresses()): Promise<TestNetns> {
  const id = uniqueSuffix();
  const { hostIp, instanceIp } = addresses;
  const ns: TestNetns = { name: allocId, hostIf: `dz${id}h`, instanceIf: 'eth0', hostIp, instanceIp };
  t.teardown(async () => {
    await shQuiet('ip', ['link', 'del', ns.hostIf]);
    await shQuiet('ip', ['netns', 'del', allocId]);
  });
  await sh('ip', ['netns', 'add', allocId]);
  await sh('ip', ['link', 'add', ns.hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', allocId]);
  await sh('ip', ['addr', 'add', `${hostIp}/30`, 'dev', ns.hostIf]);
  await sh('ip', ['link', 'set', ns.hostIf, 'up']);
  await sh('ip', ['-n', allocId, 'addr', 'add', `${instanceIp}/30`, 'dev', 'eth0']);
  await sh('ip', ['-n', allocId, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', allocId, 'link', 'set', 'lo', 'up']);
  return ns;
}

/** The task's cgroup where Nomad would put it; teardown thaws it, kills what is left and removes it. */
export async function createTaskCgroup(t: Teardown, cgroups: NomadCgroupRoot, allocId: string, task: string): Promise<TestCgroup> {
  const dir = cgroups.version === 1
    ? join(cgroups.root, 'freezer', 'nomad', `${allocId}.${task}`)
    : join(cgroups.root, 'nomad.slice', 'share.slice', `${allocId}.${task}.scope`);
  t.teardown(() => removeCgroup(dir));
  await mkdir(dir);
  return {
    name: dir,
    dir,
    procsFile: join(dir, 'cgroup.procs'),
    freezerState: async () => {
      if (cgroups.version === 1) return (await readFile(join(dir, 'freezer.state'), 'utf8')).trim();
      return /^frozen 1$/m.test(await readFile(join(dir, 'cgroup.events'), 'utf8')) ? 'FROZEN' : 'THAWED';
    },
  };
}
