import type { Teardown } from './teardown.js';
import { randomInt } from 'node:crypto';
import { uniqueSuffix } from './names.js';
import { sh, shQuiet } from './sh.js';

export interface TestNetns {
  name: string;
  /** Host-side veth: its egress is traffic into the instance. */
  hostIf: string;
  /** The veth's end inside the namespace. */
  instanceIf: string;
  hostIp: string;
  instanceIp: string;
  /** Dual-stack namespaces (createNetns(t, { ipv6: true })): a /64 of fd7a:d02e::/32 beside the IPv4 /30. */
  hostIp6?: string;
  instanceIp6?: string;
}

/**
 * A network namespace joined to the host by a veth pair with a /30 of
 * 10.213.0.0/16 (test hosts only this test talks to). Teardown registered
 * in the same call.
 */
export async function createNetns(t: Teardown, options: { ipv6?: boolean } = {}): Promise<TestNetns> {
  const id = uniqueSuffix();
  const block = randomInt(0, 16384) * 4;
  const hostIp = `10.213.${block >> 8}.${(block & 0xff) + 1}`;
  const instanceIp = `10.213.${block >> 8}.${(block & 0xff) + 2}`;
  const ns: TestNetns = { name: `dz-${id}`, hostIf: `dz${id}h`, instanceIf: `dz${id}i`, hostIp, instanceIp };
  t.teardown(() => deleteNetns(ns));
  await sh('ip', ['netns', 'add', ns.name]);
  await sh('ip', ['link', 'add', ns.hostIf, 'type', 'veth', 'peer', 'name', `dz${id}i`, 'netns', ns.name]);
  await sh('ip', ['addr', 'add', `${hostIp}/30`, 'dev', ns.hostIf]);
  await sh('ip', ['link', 'set', ns.hostIf, 'up']);
  await sh('ip', ['-n', ns.name, 'addr', 'add', `${instanceIp}/30`, 'dev', `dz${id}i`]);
  await sh('ip', ['-n', ns.name, 'link', 'set', `dz${id}i`, 'up']);
  await sh('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
  if (options.ipv6) {
    const net = `fd7a:d02e:${block.toString(16)}:${randomInt(0, 0x10000).toString(16)}`;
    ns.hostIp6 = `${net}::1`;
    ns.instanceIp6 = `${net}::2`;
    // nodad: usable at once, not after duplicate address detection's second.
    await sh('ip', ['-6', 'addr', 'add', `${ns.hostIp6}/64`, 'dev', ns.hostIf, 'nodad']);
    await sh('ip', ['-n', ns.name, '-6', 'addr', 'add', `${ns.instanceIp6}/64`, 'dev', ns.instanceIf, 'nodad']);
  }
  return ns;
}

export async function deleteNetns(ns: TestNetns): Promise<void> {
  await shQuiet('ip', ['link', 'del', ns.hostIf]);
  await shQuiet('ip', ['netns', 'del', ns.name]);
}
