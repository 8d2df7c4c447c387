import { z } from 'zod';
import { run, runJson } from '../process/exec.js';

/*
 * The `ip` commands doze runs: links, addresses, routes, neighbours, in the agent's namespace or
 * another one. Everything read comes from `ip -j` through a schema; every command has the exec
 * helper's deadline.
 */

/** A network namespace: a name under /var/run/netns (`ip -n`), or any path (a Docker SandboxKey, via nsenter). */
export type Netns = { name: string } | { path: string };

export interface IpOptions {
  netns?: Netns;
  timeoutMs?: number;
}

/** `ip -n NAME` only takes names under /var/run/netns; nsenter takes any path. */
function ipArgv(args: string[], netns: Netns | undefined): [file: string, args: string[]] {
  if (netns === undefined) return ['ip', args];
  if ('name' in netns) return ['ip', ['-n', netns.name, ...args]];
  return ['nsenter', [`--net=${netns.path}`, 'ip', ...args]];
}

/** Runs `ip ARGS`; a non-zero exit rejects with ip's stderr. */
async function ip(args: string[], options: IpOptions = {}): Promise<void> {
  const [file, argv] = ipArgv(args, options.netns);
  await run(file, argv, { timeoutMs: options.timeoutMs });
}

/** `ip -j ARGS` read through `schema`; older iproute2 prints nothing for an empty list. */
function ipJson<S extends z.ZodType>(args: string[], schema: S, options: IpOptions = {}): Promise<z.output<S>> {
  const [file, argv] = ipArgv(['-j', ...args], options.netns);
  return runJson(file, argv, schema, { timeoutMs: options.timeoutMs, emptyOutput: [] });
}

const linkList = z.array(
  z.looseObject({
    ifindex: z.number().int(),
    ifname: z.string(),
    /** A veth's peer ifindex, in the namespace `link_netnsid` names. */
    link_index: z.number().int().optional(),
    /** `ether`, `loopback`, `none` (tun, wireguard), … */
    link_type: z.string().optional(),
  }),
);
export type Link = z.output<typeof linkList>[number];

/** Every link (`ip -j link show`), or the one named `device`. */
export function listLinks(options: IpOptions & { device?: string } = {}): Promise<Link[]> {
  return ipJson(['link', 'show', ...(options.device === undefined ? [] : ['dev', options.device])], linkList, options);
}

/** Whether the device exists (`ip link show dev` exits non-zero for one that does not). */
export async function linkExists(device: string): Promise<boolean> {
  return (await run('ip', ['link', 'show', 'dev', device], { allowFailure: true })).code === 0;
}

export function addTap(device: string): Promise<void> {
  return ip(['tuntap', 'add', 'dev', device, 'mode', 'tap']);
}

export function setLinkUp(device: string): Promise<void> {
  return ip(['link', 'set', device, 'up']);
}

/** Removes the device; one that is already gone is not an error. */
export async function deleteLink(device: string): Promise<void> {
  await run('ip', ['link', 'del', 'dev', device], { allowFailure: true });
}

const addressList = z.array(
  z.looseObject({
    addr_info: z.array(z.looseObject({ family: z.string().optional(), local: z.string().optional(), prefixlen: z.number().int().optional() })).optional(),
  }),
);

/** The device's IPv4 addresses as "10.213.7.1/30" (`ip -j -4 addr show dev`). */
export async function ipv4Addresses(device: string): Promise<string[]> {
  const links = await ipJson(['-4', 'addr', 'show', 'dev', device], addressList);
  return links.flatMap((link) => link.addr_info ?? []).flatMap((a) => (a.family === 'inet' && a.local !== undefined && a.prefixlen !== undefined ? [`${a.local}/${a.prefixlen}`] : []));
}

/** Sets `cidr` on the device, or leaves it if it is there already. */
export function replaceAddress(cidr: string, device: string): Promise<void> {
  return ip(['addr', 'replace', cidr, 'dev', device]);
}

/** A permanent neighbour entry: packets to `address` never wait in the ARP queue. */
export function replacePermanentNeighbour(address: string, mac: string, device: string): Promise<void> {
  return ip(['neigh', 'replace', address, 'lladdr', mac, 'dev', device, 'nud', 'permanent']);
}

const routeList = z.array(z.looseObject({ dev: z.string().optional(), prefsrc: z.string().optional(), type: z.string().optional() }));
export type Route = z.output<typeof routeList>[number];

/** The route the kernel picks for `address` (`ip -j route get`), or undefined when there is none. */
export async function routeTo(address: string): Promise<Route | undefined> {
  const routes = await runJson('ip', ['-j', 'route', 'get', address], routeList, { allowFailure: true, emptyOutput: [] });
  return routes?.[0];
}

/** Whether `address` is one of this node's own addresses (`ip route get` says local). */
export async function isLocalAddress(address: string): Promise<boolean> {
  return (await routeTo(address))?.type === 'local';
}

const linkAddressList = z.array(
  z.looseObject({
    // `ip -j addr show up` prints an empty object for each link the filter leaves out (iproute2 6.x).
    ifname: z.string().optional(),
    link_type: z.string().optional(),
    operstate: z.string().optional(),
    flags: z.array(z.string()).optional(),
    addr_info: z.array(z.looseObject({ scope: z.string().optional() })).optional(),
  }),
);

/**
 * Up devices that hold an address of global or host scope, with their link type (`ip -j addr
 * show up`): where a node's traffic can arrive addressed to it (NICs, the nomad bridge, docker0,
 * lo); a bridge port or a veth without an address is not among them.
 */
export async function addressedLinks(): Promise<Array<{ name: string; linkType: string | undefined }>> {
  const links = await ipJson(['addr', 'show', 'up'], linkAddressList);
  return links.flatMap((link) =>
    link.ifname !== undefined && (link.addr_info ?? []).some((a) => a.scope === 'global' || a.scope === 'host') ? [{ name: link.ifname, linkType: link.link_type }] : [],
  );
}

/** The devices IPv4 default routes leave by (`ip -j -4 route show default`). */
export async function defaultRouteDevices(): Promise<string[]> {
  const routes = await ipJson(['-4', 'route', 'show', 'default'], routeList);
  return [...new Set(routes.flatMap((route) => (route.dev === undefined ? [] : [route.dev])))];
}
