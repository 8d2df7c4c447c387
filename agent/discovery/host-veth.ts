import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { z } from 'zod';
import { DozeError, messageOf } from '../errors.js';
import { summarizeIssues } from '../shared/zod-issues.js';

/*
 * Finds the host-side veth of a bridge-mode allocation. Its name is random
 * (veth + 8 hex digits), so it is found by ifindex: inside the allocation's
 * network namespace, eth0's peer (`link_index`) is the host veth's ifindex.
 * Nomad bind-mounts the namespace of non-Docker tasks at
 * /var/run/netns/<allocID> (so `ip -n <allocID>` works); a Docker task's
 * namespace is its pause container's SandboxKey, a path: pass that instead.
 */

const linkList = z.array(
  z.looseObject({
    ifindex: z.number().int(),
    ifname: z.string(),
    /** Peer's ifindex, in the namespace `link_netnsid` names (here: the host's). */
    link_index: z.number().int().optional(),
  }),
);

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
  // `ip -n NAME` only takes names under /var/run/netns; nsenter takes any path.
  const innerCommand = isPath || options.netnsDir
    ? ['nsenter', [`--net=${nsPath}`, 'ip', '-j', 'link', 'show', 'dev', inner]] as const
    : ['ip', ['-n', namespace, '-j', 'link', 'show', 'dev', inner]] as const;
  const insideLinks = await ipJson(innerCommand[0], [...innerCommand[1]], options.timeoutMs);
  const peerIndex = insideLinks[0]?.link_index;
  if (peerIndex === undefined) {
    throw new DozeError('E_NETNS_LINK', `${inner} in ${nsPath} is not a veth (no peer link_index)`);
  }
  const hostLinks = await ipJson('ip', ['-j', 'link', 'show'], options.timeoutMs);
  const host = hostLinks.find((link) => link.ifindex === peerIndex);
  if (!host) throw new DozeError('E_NETNS_LINK', `no host interface has ifindex ${peerIndex} (peer of ${inner} in ${nsPath})`);
  return host.ifname;
}

function ipJson(file: string, args: string[], timeoutMs = 5000): Promise<z.infer<typeof linkList>> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
        reject(new DozeError(missing ? 'E_MISSING_TOOL' : 'E_COMMAND', missing ? `${file} is not installed (Debian package ${file === 'ip' ? 'iproute2' : 'util-linux'})` : `${file} ${args.join(' ')} failed: ${stderr.trim() || messageOf(error)}`, { cause: error }));
        return;
      }
      let raw: unknown;
      try {
        raw = JSON.parse(stdout);
      } catch (parseError) {
        reject(new DozeError('E_COMMAND', `${file} ${args.join(' ')} printed something that is not JSON`, { cause: parseError }));
        return;
      }
      const parsed = linkList.safeParse(raw);
      if (parsed.success) resolve(parsed.data);
      else reject(new DozeError('E_COMMAND', `${file} ${args.join(' ')} printed unexpected JSON: ${summarizeIssues(parsed.error)}`));
    });
  });
}
