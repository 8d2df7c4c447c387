import { access } from 'node:fs/promises';
import { DozeError } from '../shared/errors.js';
import { listLinks, type Netns } from '../net/ip.js';

/*
 * Finds the host-side veth of a bridge-mode allocation. Its name is random
 * (veth + 8 hex digits), so it is found by ifindex: inside the allocation's
 * network namespace, eth0's peer (`link_index`) is the host veth's ifindex.
 * Nomad bind-mounts the namespace of non-Docker tasks at
 * /var/run/netns/<allocID> (so `ip -n <allocID>` works); a Docker task's
 * namespace is its pause container's SandboxKey, a path: pass that instead.
 */

export interface HostVethOptions {
  /** Where named namespaces live (iproute2's default). */
  netnsDir?: string;
  /** The allocation-side interface; Nomad's bridge CNI config names it eth0. */
  innerInterface?: string;
  timeoutMs?: number;
}

/** `namespace` is an allocation id (a name under netnsDir) or an absolute namespace path. */
export async function findHostVeth(namespace: string, options: HostVethOptions = {}): Promise<string> {
  const inner = options.innerInterface ?? 'eth0';
  const isPath = namespace.startsWith('/');
  const nsPath = isPath ? namespace : `${options.netnsDir ?? '/var/run/netns'}/${namespace}`;
  try {
    await access(nsPath);
  } catch (error) {
    throw new DozeError('E_NETNS_MISSING', `network namespace ${nsPath} does not exist (not a bridge-mode allocation, or not set up yet)`, { cause: error });
  }
  // A name works with `ip -n` only under /var/run/netns; elsewhere the namespace goes by its path.
  const netns: Netns = isPath || options.netnsDir ? { path: nsPath } : { name: namespace };
  const timeoutMs = options.timeoutMs ?? 5000;
  const insideLinks = await listLinks({ netns, device: inner, timeoutMs });
  const peerIndex = insideLinks[0]?.link_index;
  if (peerIndex === undefined) {
    throw new DozeError('E_NETNS_LINK', `${inner} in ${nsPath} is not a veth (no peer link_index)`);
  }
  const hostLinks = await listLinks({ timeoutMs });
  const host = hostLinks.find((link) => link.ifindex === peerIndex);
  if (!host) throw new DozeError('E_NETNS_LINK', `no host interface has ifindex ${peerIndex} (peer of ${inner} in ${nsPath})`);
  return host.ifname;
}
